//! Configuration in two stages, as ripgrep does flags: `parse` turns JSON into plain data
//! (unknown keys are errors naming their path), `Config::validate` checks everything and
//! reports every problem at once (what `sudo-agent check` prints).
//! (Skeleton: parse/validate/load are filled in by the config work item.)

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::sys::UserInfo;
use crate::totp;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/sudo-agent/config.json";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub allow_remote: bool,
    pub secret_file: PathBuf,
    pub log_file: PathBuf,
    pub state_dir: PathBuf,
    pub results: ResultsConfig,
    pub totp: totp::Params,
    pub throttle: ThrottleConfig,
    pub jobs: JobsConfig,
    /// argv of the notify command (no shell), if any.
    pub notify: Option<Vec<String>>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsConfig {
    pub dir: PathBuf,
    pub max_files: usize,
    pub max_bytes: u64,
    pub max_age_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    pub max_failures: u32,
    pub window_s: u64,
    pub lockout_s: u64,
    pub lockout_max_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobsConfig {
    pub max_concurrent: usize,
    pub max_queue: usize,
    pub timeout_s: u64,
    pub kill_grace_s: u64,
    pub max_output_bytes: usize,
    pub history: usize,
    pub wait_s: u64,
    pub wait_max_s: u64,
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgPattern {
    /// Exactly this string.
    Literal(String),
    /// Any one of these strings.
    OneOf(Vec<String>),
    /// `"*"`: any one argument.
    Any,
    /// `"**"`, last only: any number of further arguments, zero included.
    Rest,
}
