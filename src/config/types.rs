//! The validated configuration the rest of the agent reads. Only
//! [`Config::validate`] builds one from a file; the rules are `policy`'s.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use crate::auth::totp;
use crate::policy::{Action, ArgPattern, Rule, Who, escape_for};
use crate::sys::{Limits, is_loopback};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/sudo-agent/config.json";

/// Where the agent listens unless the config says otherwise (the Python agent's port).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9999));

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub allow_remote: bool,
    /// Serve the rules (names and patterns, no secrets) on `GET /rules`, for MCP clients.
    pub expose_rules: bool,
    /// `Host` values (lowercase `name` or `name:port`) accepted besides loopback
    /// addresses and `localhost`: anything else may be a web page using DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Web origins (lowercase `scheme://host[:port]`, as browsers send them) whose
    /// pages may call the agent; requests from any other page are refused.
    pub allowed_origins: Vec<String>,
    /// Most bytes of answers held for clients that have not read them yet, all
    /// connections together.
    pub send_queue_bytes: usize,
    pub secret_file: PathBuf,
    pub log_file: PathBuf,
    pub state_dir: PathBuf,
    pub results: ResultsConfig,
    pub totp: totp::Params,
    pub throttle: ThrottleConfig,
    pub jobs: JobsConfig,
    /// argv of the notify command (no shell), if any.
    pub notify: Option<Vec<String>>,
    /// With socket activation: exit after this many seconds with no job and no
    /// connection (systemd starts the agent again on the next connection).
    pub idle_exit_s: Option<u64>,
    pub unix_socket: Option<UnixSocketConfig>,
    pub approvals: ApprovalsConfig,
    pub rules: Vec<Rule>,
}

/// The Unix socket listener: its path, mode and group (owner root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketConfig {
    pub path: PathBuf,
    pub mode: u32,
    pub group: Option<u32>,
}

/// Requests held for a human to approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalsConfig {
    pub max_pending: usize,
    pub ttl_s: u64,
    /// Who may approve or deny; `None`: any caller (with a code, to approve).
    pub approvers: Option<Who>,
    /// argv run when a request is held (no shell).
    pub notify: Option<Vec<String>>,
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
    /// Every job's limits unless its rule sets its own (none by default).
    pub limits: Limits,
}

impl Config {
    /// Legal but risky choices, for `check` and start-up to print.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !is_loopback(self.listen.ip()) {
            warnings.push(format!(
                "listen {} is not a loopback address: anyone who can reach it can ask for \
                 root commands",
                self.listen
            ));
            if self.allowed_hosts.is_empty() {
                warnings.push(format!(
                    "allowed_hosts is empty: clients that reach {} by a name or a network \
                     address are refused (403, Host); list what they use",
                    self.listen
                ));
            }
        }
        for rule in &self.rules {
            match &rule.action {
                Action::Shell => {
                    let who = rule.user.as_ref().map_or("root", |u| u.name.as_str());
                    warnings.push(format!(
                        "rule `{}` hands commands to /bin/sh -c: any command runs as {who} \
                         with a code",
                        rule.name
                    ));
                }
                Action::Argv { args, .. } if rule.no_pin && args.contains(&ArgPattern::Rest) => {
                    warnings.push(format!(
                        "rule `{}` needs no code and accepts any further arguments (\"**\"): \
                         any local process can run it with arguments of its choice",
                        rule.name
                    ));
                }
                Action::Argv { .. } => {}
            }
            // With no_pin this is a problem, found by `validate`.
            if !rule.no_pin
                && let Some(found) = escape_for(rule)
            {
                warnings.push(format!(
                    "{}; anyone with a code can use it, so list the allowed values instead",
                    found.describe(&rule.name)
                ));
            }
        }
        warnings
    }
}
