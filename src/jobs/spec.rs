//! The [`ExecSpec`] for a matched rule: who runs it, where, for how long, with which
//! environment, limits and sandbox. The agent builds every job's spec here, and `explain` prints the same
//! one, so what it shows is what would run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::exec::ExecSpec;
use crate::config::JobsConfig;
use crate::policy::Rule;
use crate::sys::{Limits, Sandbox};

impl ExecSpec {
    /// `argv` as the policy planned it (the rule's own program first); the rule's
    /// settings, else the `jobs` defaults. Without a `user` the job runs as the agent,
    /// with `own_home` as HOME.
    pub fn for_rule(
        rule: &Rule,
        argv: Vec<String>,
        jobs: &JobsConfig,
        own_home: &Path,
    ) -> ExecSpec {
        let (uid, gid, home) = match &rule.user {
            Some(user) => (
                Some(user.uid),
                Some(rule.group.unwrap_or(user.gid)),
                user.home.clone(),
            ),
            None => (None, rule.group, own_home.to_path_buf()),
        };
        ExecSpec {
            argv,
            env: rule.env.clone(),
            home,
            uid,
            gid,
            cwd: rule.cwd.clone(),
            umask: rule.umask,
            timeout: Duration::from_secs(rule.timeout_s.unwrap_or(jobs.timeout_s)),
            kill_grace: Duration::from_secs(jobs.kill_grace_s),
            max_output_bytes: rule.max_output_bytes.unwrap_or(jobs.max_output_bytes),
            limits: rule.limits.or(jobs.limits),
            sandbox: rule.sandbox.clone(),
        }
    }

    /// `argv` as the agent's own user, in `/`, with nothing added: no rule, no limits,
    /// no sandbox, 30 s, 4 KiB of output (the notify command and probes start here).
    pub fn plain(argv: Vec<String>, home: PathBuf) -> ExecSpec {
        ExecSpec {
            argv,
            env: Vec::new(),
            home,
            uid: None,
            gid: None,
            cwd: None,
            umask: None,
            timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(2),
            max_output_bytes: 4096,
            limits: Limits::default(),
            sandbox: Sandbox::default(),
        }
    }
}
