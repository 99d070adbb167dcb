//! Stage 2: check every value, program, user, group and directory, touching the file
//! system and the user database, and report every problem at once (what
//! `sudo-agent check` prints).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::problems::{Problems, program_problem};
use super::raw::{
    Problem, RawApprovals, RawArg, RawConfig, RawExamples, RawKind, RawLimits, RawRule, RawSandbox,
    RawUnixSocket,
};
use super::types::{
    ApprovalsConfig, Config, DEFAULT_LISTEN, JobsConfig, ResultsConfig, ThrottleConfig,
    UnixSocketConfig,
};
use crate::auth::totp;
use crate::policy::{
    self, Action, ArgPattern, Invocation, Rule, WordRe, escape_for, path_under_dir,
};
use crate::sys::{self, Limits, Sandbox, check_chain, is_loopback};

const UMASK: &str = "umask; write it as umask(1) prints it, e.g. \"027\"";
const MODE: &str = "mode; write it as chmod(1) takes it, e.g. \"0660\"";

// Bounds. Every duration is capped far below where `Instant + Duration` could overflow,
// and every count or size so that a typo cannot make the agent hoard memory or disk.

const MAX_DURATION_S: u64 = 30 * 86_400;
const MAX_RESULT_AGE_S: u64 = 3650 * 86_400;
const MAX_RESULT_FILES: u64 = 1_000_000;
const MAX_RESULT_BYTES: u64 = 1 << 40;
const MAX_FAILURES: u64 = 1_000;
const MAX_CONCURRENT: u64 = 256;
const MAX_QUEUE: u64 = 10_000;
const MAX_OUTPUT_BYTES: u64 = 64 << 20;
const MAX_HISTORY: u64 = 1_000_000;
const MAX_WAIT_S: u64 = 3_600;
/// Requests held for approval at once, and how long one may wait.
const MAX_PENDING: u64 = 64;
const MAX_TTL_S: u64 = 86_400;
const MIN_MEMORY: u64 = 1 << 20;
const MAX_MEMORY: u64 = 1 << 50;
const MAX_TASKS: u64 = 4_194_304;
/// Percent of one CPU: 1000 CPUs.
const MAX_CPU_PERCENT: u64 = 100_000;
const MIN_SEND_QUEUE_BYTES: u64 = 64 << 10;
const MAX_SEND_QUEUE_BYTES: u64 = 1 << 30;

/// Variables the agent sets itself to keep children predictable and pagers from running
/// commands; a rule's `env` may not override them.
const RESERVED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "PAGER",
    "SYSTEMD_PAGER",
    "SYSTEMD_PAGERSECURE",
    "LESSSECURE",
];

// The range checks above keep values far inside these types; saturating is only a
// fallback for 32-bit targets and never a panic.
fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}
fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Why `name` may not be set in a rule's `env`, or `None` when it may.
fn env_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let valid = matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
    if !valid {
        Some(format!(
            "{name:?} is not a valid variable name; use letters, digits and _, not starting \
             with a digit"
        ))
    } else if name.starts_with("LD_") {
        Some(format!(
            "{name} changes how every program is loaded and is never passed to a root \
             command; remove it"
        ))
    } else if RESERVED_ENV.contains(&name) {
        Some(format!(
            "{name} is set by the agent itself (PATH, HOME and the pager safety variables \
             cannot be overridden); remove it"
        ))
    } else {
        None
    }
}

fn validate_argv(at: &str, argv: Vec<RawArg>, p: &mut Problems) -> Action {
    let key = format!("{at}.argv");
    let last = argv.len().saturating_sub(1);
    let mut items = argv.into_iter();
    let program = match items.next() {
        None => {
            p.push(
                key,
                "is empty; its first element is the program's absolute path, e.g. \
                 [\"/usr/bin/df\", \"-h\"]",
            );
            return Action::Argv {
                program: PathBuf::new(),
                args: Vec::new(),
            };
        }
        Some(RawArg::List(_) | RawArg::Kind(_)) => {
            p.push(
                format!("{key}[0]"),
                "must be the program's absolute path as a string, not a list or an object",
            );
            PathBuf::new()
        }
        Some(RawArg::Text(program)) => {
            let program = PathBuf::from(program);
            if let Some(why) = program_problem(&program) {
                p.push(format!("{key}[0]"), why);
            }
            program
        }
    };
    let mut args = Vec::new();
    for (i, item) in items.enumerate() {
        let i = i + 1;
        let path = format!("{key}[{i}]");
        let pattern = match item {
            RawArg::Text(s) if s == "*" => ArgPattern::Word,
            RawArg::Text(s) if s == "**" => {
                if i != last {
                    p.push(
                        path,
                        "\"**\" (any further arguments) may only be the last element; use \
                         \"*\" for exactly one argument here",
                    );
                }
                ArgPattern::Rest
            }
            RawArg::Text(s) => {
                p.no_nul(&path, &s);
                ArgPattern::Literal(s)
            }
            // A list is the way to write a literal "*" or "**": `["*"]`.
            RawArg::List(list) => {
                if list.is_empty() {
                    p.push(
                        &path,
                        "an empty list matches nothing; list the allowed values, e.g. \
                         [\"status\", \"restart\"]",
                    );
                }
                for (j, s) in list.iter().enumerate() {
                    p.no_nul(&format!("{path}[{j}]"), s);
                }
                ArgPattern::OneOf(list)
            }
            RawArg::Kind(kind) => validate_kind(&path, kind, p),
        };
        args.push(pattern);
    }
    Action::Argv { program, args }
}

/// An object in a rule's argv. A broken one becomes a pattern that matches nothing, so
/// that nothing can ever run through a mistake (the config is refused anyway).
fn validate_kind(path: &str, kind: RawKind, p: &mut Problems) -> ArgPattern {
    let nothing = ArgPattern::OneOf(Vec::new());
    match (kind.any, kind.re, kind.path_under, kind.int) {
        (Some(true), None, None, None) => ArgPattern::Any,
        (Some(false), None, None, None) => {
            p.push(
                path,
                "{\"any\": false} means nothing; write {\"any\": true} or remove it",
            );
            nothing
        }
        (None, Some(source), None, None) => match WordRe::new(&source) {
            Ok(re) => ArgPattern::Re(re),
            Err(e) => {
                p.push(path, format!("regex {source:?} {e}"));
                nothing
            }
        },
        (None, None, Some(dir), None) => match path_under_dir(&dir) {
            Ok(dir) => ArgPattern::PathUnder(dir),
            Err(why) => {
                p.push(path, format!("path_under {dir:?} {why}"));
                nothing
            }
        },
        (None, None, None, Some((min, max))) => {
            if min > max {
                p.push(
                    path,
                    format!("int [{min}, {max}] is an empty range; write [smallest, largest]"),
                );
            }
            ArgPattern::Int { min, max }
        }
        _ => {
            p.push(
                path,
                "needs exactly one key: {\"any\": true}, {\"re\": \"...\"}, \
                 {\"path_under\": \"/dir\"} or {\"int\": [min, max]}",
            );
            nothing
        }
    }
}

/// Why `path` cannot be made writable for a root job (see `sys::check_writable`). A
/// job run as a `user` can write only what that user may anyway, so this is asked of
/// root's alone.
fn writable_problem(path: &Path) -> Option<String> {
    match sys::check_writable(path) {
        Ok(()) => None,
        Err(e @ sys::ChainError::Untrusted { .. }) => Some(format!(
            "{e} (whoever can change a directory on the way could make another directory \
             writable in its place); or run the rule as a \"user\""
        )),
        Err(e) => Some(e.to_string()),
    }
}

/// `limits` of a rule or of `jobs` (`at` is its key path).
fn validate_limits(at: &str, raw: RawLimits, p: &mut Problems) -> Limits {
    let mut range = |key: &str, v: Option<u64>, min: u64, max: u64| {
        v.map(|v| p.range(&format!("{at}.{key}"), v, min, max))
    };
    Limits {
        memory_max: range("memory_max", raw.memory_max, MIN_MEMORY, MAX_MEMORY),
        tasks_max: range("tasks_max", raw.tasks_max, 1, MAX_TASKS),
        cpu_max_percent: range("cpu_max_percent", raw.cpu_max_percent, 1, MAX_CPU_PERCENT),
    }
}

/// A rule's `sandbox`, with `no_pin`'s default: read-only, so that "needs no code
/// because it changes nothing" is a fact the kernel keeps, not a name. `as_root`: the
/// rule runs as root (no `user`).
fn validate_sandbox(
    at: &str,
    raw: RawSandbox,
    no_pin: bool,
    as_root: bool,
    p: &mut Problems,
) -> Sandbox {
    let at = format!("{at}.sandbox");
    if no_pin && raw.read_only == Some(false) {
        p.push(
            format!("{at}.read_only"),
            "a rule that needs no code runs read-only (anyone on the box can run it, so it              must not change anything); list the paths it must write in              \"sandbox\": {\"writable\": [...]}, or remove \"no_pin\" so that it needs a code",
        );
    }
    let read_only = raw.read_only.unwrap_or(no_pin);
    if !read_only && !raw.writable.is_empty() {
        p.push(
            format!("{at}.writable"),
            "only makes exceptions to \"read_only\": true; set it, or remove \"writable\"",
        );
    }
    let writable: Vec<PathBuf> = raw.writable.into_iter().map(PathBuf::from).collect();
    for (i, path) in writable.iter().enumerate() {
        let key = format!("{at}.writable[{i}]");
        let shown = path.display();
        if !path.is_absolute() || path.as_os_str().as_encoded_bytes().contains(&0) {
            p.push(
                key,
                format!("{:?} is not an absolute path", shown.to_string()),
            );
        } else if path.parent().is_none() {
            p.push(
                key,
                "\"/\" would make everything writable; name the paths the command writes",
            );
        } else if !path.exists() {
            p.push(
                key,
                format!(
                    "{shown} does not exist (only an existing path can be made writable); create it"
                ),
            );
        } else if as_root && let Some(why) = writable_problem(path) {
            p.push(key, why);
        }
    }
    Sandbox {
        read_only,
        writable,
        private_network: raw.network == Some(false),
        private_tmp: raw.private_tmp,
        no_new_privileges: raw.no_new_privileges,
    }
}

fn validate_rule(at: &str, raw: RawRule, p: &mut Problems) -> Rule {
    if raw.name.trim().is_empty() {
        p.push(
            format!("{at}.name"),
            "is empty; give the rule a short name such as \"disk\"",
        );
    } else if raw.name.chars().any(char::is_control) {
        p.push(
            format!("{at}.name"),
            "contains control characters; use a short plain name such as \"disk\"",
        );
    }
    let action = match (raw.argv, raw.shell) {
        (Some(argv), false) => validate_argv(at, argv, p),
        (None, true) => Action::Shell,
        (Some(_), true) => {
            p.push(
                at,
                "has both \"argv\" and \"shell\": true; a rule is one or the other, so \
                 remove one of them",
            );
            Action::Shell
        }
        (None, false) => {
            p.push(
                at,
                "has neither \"argv\" nor \"shell\": true; add \"argv\": \
                 [\"/absolute/program\", ...]",
            );
            Action::Shell
        }
    };
    if action == Action::Shell {
        if raw.no_pin {
            p.push(
                format!("{at}.no_pin"),
                "a shell rule runs any command, so it must always need a code; remove \"no_pin\"",
            );
        }
        if let Some(why) = program_problem(Path::new(policy::SHELL)) {
            p.push(at, why);
        }
    }
    let timeout_s = raw
        .timeout_s
        .map(|v| p.range(&format!("{at}.timeout_s"), v, 1, MAX_DURATION_S));
    let max_output_bytes = raw
        .max_output_bytes
        .map(|v| to_usize(p.range(&format!("{at}.max_output_bytes"), v, 1, MAX_OUTPUT_BYTES)));
    if raw.group.is_some() && raw.user.is_none() {
        // setgid alone leaves uid 0 and every capability: it looks like a privilege drop
        // and is none, so the rule must say which it means.
        p.push(
            format!("{at}.group"),
            "without \"user\" the command still runs as root (uid 0, every capability); \
             add \"user\": \"NAME\" to drop privileges, or remove \"group\" to run as root",
        );
    }
    let user = raw
        .user
        .and_then(|name| p.account(&format!("{at}.user"), "user", &name, sys::lookup_user));
    let group = raw
        .group
        .and_then(|name| p.account(&format!("{at}.group"), "group", &name, sys::lookup_group));
    let umask = raw
        .umask
        .and_then(|text| p.octal(&format!("{at}.umask"), &text, UMASK));
    let mut env = raw.env.0;
    for (name, value) in &env {
        let key = format!("{at}.env.{name}");
        if let Some(why) = env_name_problem(name) {
            p.push(&key, why);
        }
        p.no_nul(&key, value);
    }
    env.sort();
    let cwd = raw.cwd;
    if let Some(dir) = &cwd {
        let key = format!("{at}.cwd");
        let shown = dir.display().to_string();
        if !dir.is_absolute() {
            p.push(
                key,
                format!("{shown:?} is not an absolute path; name an existing directory"),
            );
        } else {
            match fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => {
                    // Another user who can change it could plant what the command reads.
                    if let Err(e) = check_chain(dir) {
                        p.push(key, e.to_string());
                    }
                }
                Ok(_) => p.push(key, format!("{shown} is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => p.push(
                    key,
                    format!("{shown} does not exist; create it or name an existing directory"),
                ),
                Err(e) => p.push(key, format!("cannot inspect {shown}: {e}")),
            }
        }
    }
    let limits = validate_limits(&format!("{at}.limits"), raw.limits, p);
    let as_root = user.as_ref().is_none_or(|u| u.uid == 0);
    let sandbox = validate_sandbox(at, raw.sandbox, raw.no_pin, as_root, p);
    let rule = Rule {
        name: raw.name,
        action,
        no_pin: raw.no_pin,
        timeout_s,
        max_output_bytes,
        user,
        group,
        env,
        cwd,
        umask,
        callers: raw.callers.map(|who| p.who(&format!("{at}.callers"), who)),
        limits,
        sandbox,
    };
    if rule.no_pin
        && let Some(found) = escape_for(&rule)
    {
        p.push(
            format!("{at}.argv[{}]", found.position),
            format!(
                "{}; a rule that needs no code lets any local process use it, so list the \
                 allowed values or remove \"no_pin\"",
                found.describe(&rule.name)
            ),
        );
    }
    rule
}

fn unix_socket(raw: RawUnixSocket, p: &mut Problems) -> UnixSocketConfig {
    let path = p.absolute("unix_socket.path", raw.path, "/run/sudo-agent/agent.sock");
    // sun_path holds 108 bytes with its NUL.
    if path.as_os_str().len() > 107 {
        p.push(
            "unix_socket.path",
            "is longer than a Unix socket path may be (107 bytes); choose a shorter one",
        );
    }
    let mode = p
        .octal("unix_socket.mode", &raw.mode, MODE)
        .unwrap_or(0o600);
    let group = raw
        .group
        .and_then(|name| p.account("unix_socket.group", "group", &name, sys::lookup_group));
    UnixSocketConfig { path, mode, group }
}

fn approvals(raw: RawApprovals, p: &mut Problems) -> ApprovalsConfig {
    if let Some(argv) = &raw.notify {
        p.command("approvals.notify", argv);
    }
    ApprovalsConfig {
        max_pending: to_usize(p.range("approvals.max_pending", raw.max_pending, 1, MAX_PENDING)),
        ttl_s: p.range("approvals.ttl_s", raw.ttl_s, 1, MAX_TTL_S),
        approvers: raw.approvers.map(|who| p.who("approvals.approvers", who)),
        notify: raw.notify,
    }
}

/// Each example through the matcher, against the whole policy (see
/// [`policy::wrong_allow`] and [`policy::wrong_deny`]).
fn validate_examples(rules: &[Rule], examples: &[(usize, RawExamples)], p: &mut Problems) {
    for (i, examples) in examples {
        for (list, allow) in [(&examples.allow, true), (&examples.deny, false)] {
            let kind = if allow { "allow" } else { "deny" };
            for (j, example) in list.iter().enumerate() {
                let key = format!("rules[{i}].examples.{kind}[{j}]");
                let request = match example {
                    RawArg::Text(command) => Invocation::Command(command),
                    RawArg::List(argv) => Invocation::Argv(argv),
                    RawArg::Kind(_) => {
                        p.push(
                            key,
                            "is an object; write a command string or a list of words",
                        );
                        continue;
                    }
                };
                let wrong = if allow {
                    policy::wrong_allow(rules, *i, &request)
                } else {
                    policy::wrong_deny(rules, &request)
                };
                if let Some(why) = wrong {
                    let shown = serde_json::to_string(example).unwrap_or_default();
                    p.push(key, format!("{shown} {why}"));
                }
            }
        }
    }
}

/// The entries of the list at `key` that `check` accepts, as it returns them.
fn entries(
    key: &str,
    list: &[String],
    p: &mut Problems,
    check: fn(&str, &str, &mut Problems) -> Option<String>,
) -> Vec<String> {
    list.iter()
        .enumerate()
        .filter_map(|(i, entry)| check(&format!("{key}[{i}]"), entry, p))
        .collect()
}

/// An `allowed_hosts` entry, lowercased: `name` or `name:port` (`[v6]` for IPv6).
fn allowed_host(at: &str, host: &str, p: &mut Problems) -> Option<String> {
    if host == "*" {
        p.push(
            at,
            "\"*\" would let any web page reach the agent through DNS rebinding; list the \
             names clients really use",
        );
        return None;
    }
    if sys::split_authority(host).is_none() {
        p.push(
            at,
            format!("{host:?} is not a host name or host:port; write e.g. \"nas.lan\" or \"nas.lan:9999\""),
        );
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// An `allowed_origins` entry as browsers write the `Origin` header: lowercase
/// `http(s)://host[:port]`, the scheme's default port left out.
fn allowed_origin(at: &str, origin: &str, p: &mut Problems) -> Option<String> {
    let lower = origin.to_ascii_lowercase();
    let lower = lower.strip_suffix('/').unwrap_or(&lower);
    let parsed = ["http", "https"].into_iter().find_map(|scheme| {
        let authority = lower.strip_prefix(scheme)?.strip_prefix("://")?;
        let (host, port) = sys::split_authority(authority)?;
        let default = if scheme == "http" { "80" } else { "443" };
        Some(match port {
            Some(port) if port != default => format!("{scheme}://{host}:{port}"),
            _ => format!("{scheme}://{host}"),
        })
    });
    if parsed.is_none() {
        let why = match lower {
            "null" => "\"null\" is the origin of sandboxed frames and local files, which any \
                       page can make; it cannot be allowed"
                .to_string(),
            "*" => "\"*\" would let every web page run commands; list the origins of your own \
                    dashboards"
                .to_string(),
            _ => format!(
                "{origin:?} is not an origin; write scheme, host and port only, e.g. \
                 \"https://ha.example:8123\""
            ),
        };
        p.push(at, why);
    }
    parsed
}

impl Config {
    /// Stage 2: checks every value, program, user, group and directory, and returns every
    /// problem found, in file order.
    pub fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
        let mut p = Problems(Vec::new());

        let listen = match raw.listen.parse::<SocketAddr>() {
            Ok(addr) => {
                if !is_loopback(addr.ip()) && !raw.allow_remote {
                    p.push(
                        "listen",
                        format!(
                            "{addr} is not a loopback address; set \"allow_remote\": true to \
                             expose root commands to the network"
                        ),
                    );
                }
                addr
            }
            Err(_) => {
                p.push(
                    "listen",
                    format!(
                        "{:?} is not an IP address and port; write e.g. \"127.0.0.1:9999\"",
                        raw.listen
                    ),
                );
                DEFAULT_LISTEN
            }
        };

        let secret_file = p.absolute("secret_file", raw.secret_file, "/etc/sudo-agent/secret");
        let log_file = p.absolute("log_file", raw.log_file, "/var/log/sudo-agent.log");
        let state_dir = p.absolute("state_dir", raw.state_dir, "/var/lib/sudo-agent");

        let r = raw.results;
        let results = ResultsConfig {
            dir: p.absolute("results.dir", r.dir, "/tmp/sudo-agent"),
            max_files: to_usize(p.range("results.max_files", r.max_files, 1, MAX_RESULT_FILES)),
            max_bytes: p.range("results.max_bytes", r.max_bytes, 1, MAX_RESULT_BYTES),
            max_age_s: p.range("results.max_age_s", r.max_age_s, 1, MAX_RESULT_AGE_S),
        };

        let t = raw.totp;
        let totp = totp::Params {
            digits: to_u32(p.range("totp.digits", t.digits, 6, 8)),
            step_s: p.range("totp.step_s", t.step_s, 1, 300),
            skew: p.range("totp.skew", t.skew, 0, 10),
        };

        let t = raw.throttle;
        let throttle = ThrottleConfig {
            max_failures: to_u32(p.range("throttle.max_failures", t.max_failures, 1, MAX_FAILURES)),
            window_s: p.range("throttle.window_s", t.window_s, 1, MAX_DURATION_S),
            lockout_s: p.range("throttle.lockout_s", t.lockout_s, 1, MAX_DURATION_S),
            lockout_max_s: p.range("throttle.lockout_max_s", t.lockout_max_s, 1, MAX_DURATION_S),
        };
        if throttle.lockout_s > throttle.lockout_max_s {
            p.push(
                "throttle.lockout_s",
                format!(
                    "{} is longer than throttle.lockout_max_s ({}); the first lockout cannot \
                     exceed the cap, so lower one or raise the other",
                    throttle.lockout_s, throttle.lockout_max_s
                ),
            );
        }

        let j = raw.jobs;
        let jobs = JobsConfig {
            max_concurrent: to_usize(p.range(
                "jobs.max_concurrent",
                j.max_concurrent,
                1,
                MAX_CONCURRENT,
            )),
            max_queue: to_usize(p.range("jobs.max_queue", j.max_queue, 0, MAX_QUEUE)),
            timeout_s: p.range("jobs.timeout_s", j.timeout_s, 1, MAX_DURATION_S),
            kill_grace_s: p.range("jobs.kill_grace_s", j.kill_grace_s, 0, MAX_WAIT_S),
            max_output_bytes: to_usize(p.range(
                "jobs.max_output_bytes",
                j.max_output_bytes,
                1,
                MAX_OUTPUT_BYTES,
            )),
            history: to_usize(p.range("jobs.history", j.history, 1, MAX_HISTORY)),
            wait_s: p.range("jobs.wait_s", j.wait_s, 0, MAX_WAIT_S),
            wait_max_s: p.range("jobs.wait_max_s", j.wait_max_s, 0, MAX_WAIT_S),
            limits: validate_limits("jobs.limits", j.limits, &mut p),
        };
        if jobs.wait_s > jobs.wait_max_s {
            p.push(
                "jobs.wait_s",
                format!(
                    "{} is longer than jobs.wait_max_s ({}); the default wait cannot exceed \
                     the cap, so lower one or raise the other",
                    jobs.wait_s, jobs.wait_max_s
                ),
            );
        }

        let notify = raw.notify;
        if let Some(argv) = &notify {
            p.command("notify", argv);
        }
        let unix_socket = raw.unix_socket.map(|u| unix_socket(u, &mut p));
        let approvals = approvals(raw.approvals, &mut p);

        let allowed_hosts = entries("allowed_hosts", &raw.allowed_hosts, &mut p, allowed_host);
        let allowed_origins = entries(
            "allowed_origins",
            &raw.allowed_origins,
            &mut p,
            allowed_origin,
        );
        let send_queue_bytes = to_usize(p.range(
            "send_queue_bytes",
            raw.send_queue_bytes,
            MIN_SEND_QUEUE_BYTES,
            MAX_SEND_QUEUE_BYTES,
        ));

        let idle_exit_s = raw
            .idle_exit_s
            .map(|v| p.range("idle_exit_s", v, 1, MAX_DURATION_S));

        if raw.rules.is_empty() {
            p.push(
                "rules",
                "is empty; add at least one rule (an empty allowlist refuses every command)",
            );
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut examples = Vec::new();
        let problems_before_rules = p.0.len();
        for (i, mut raw_rule) in raw.rules.into_iter().enumerate() {
            if let Some(given) = raw_rule.examples.take() {
                examples.push((i, given));
            }
            let at = format!("rules[{i}]");
            if let Some(first) = names.get(&raw_rule.name) {
                p.push(
                    format!("{at}.name"),
                    format!(
                        "{:?} is already the name of rules[{first}]; rule names must be unique",
                        raw_rule.name
                    ),
                );
            } else {
                names.insert(raw_rule.name.clone(), i);
            }
            rules.push(validate_rule(&at, raw_rule, &mut p));
        }
        // Only once the rules themselves are sound: against a broken one every example
        // would fail too and bury the real problem.
        if p.0.len() == problems_before_rules {
            validate_examples(&rules, &examples, &mut p);
        }

        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(Config {
            listen,
            allow_remote: raw.allow_remote,
            expose_rules: raw.expose_rules,
            allowed_hosts,
            allowed_origins,
            send_queue_bytes,
            secret_file,
            log_file,
            state_dir,
            results,
            totp,
            throttle,
            jobs,
            notify,
            idle_exit_s,
            unix_socket,
            approvals,
            rules,
        })
    }
}
