//! One allowlist rule as the agent reads it: what it runs and with which settings. The
//! config file is only one way to write it down (`config::validate` builds these);
//! tests and fuzz targets build them with [`Rule::argv`].

use std::path::PathBuf;

use super::caller::Who;
use super::patterns::ArgPattern;
use crate::sys::{Limits, Sandbox, UserInfo};

/// One allowlist rule; first match wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub no_pin: bool,
    pub timeout_s: Option<u64>,
    pub max_output_bytes: Option<usize>,
    /// Account to drop to (uid, gid, HOME come from it).
    pub user: Option<UserInfo>,
    /// Group id to drop to (overrides the user's primary group).
    pub group: Option<u32>,
    /// Added to the child's cleared environment, sorted by key.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// File mode creation mask for the child (`"umask": "027"`); 022 when unset.
    pub umask: Option<u32>,
    /// Who may ask for it (`callers`); `None`: anyone who reaches the agent.
    pub callers: Option<Who>,
    /// The rule's own `limits`; `jobs.limits` fills in the rest (see `ExecSpec::for_rule`).
    pub limits: Limits,
    /// With `no_pin`'s default (`read_only`) already applied.
    pub sandbox: Sandbox,
}

impl Rule {
    /// A plain rule: `program` with `args`, needing a code, no other settings (what
    /// policy tests and fuzz targets match against).
    pub fn argv(name: &str, program: &str, args: Vec<ArgPattern>) -> Rule {
        Rule {
            name: name.into(),
            action: Action::Argv {
                program: PathBuf::from(program),
                args,
            },
            no_pin: false,
            timeout_s: None,
            max_output_bytes: None,
            user: None,
            group: None,
            env: Vec::new(),
            cwd: None,
            umask: None,
            callers: None,
            limits: Limits::default(),
            sandbox: Sandbox::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run `program` directly; `args` match the request's words after the program.
    Argv {
        program: PathBuf,
        args: Vec<ArgPattern>,
    },
    /// `"shell": true`: hand the whole command string to `/bin/sh -c`.
    Shell,
}
