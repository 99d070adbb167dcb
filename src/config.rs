//! Configuration in two stages, as ripgrep does flags: `parse` turns JSON into plain data
//! (no I/O; unknown keys and wrong types are errors naming their key path), then
//! `Config::validate` checks ranges, paths, programs, users and groups and reports every
//! problem at once (what `sudo-agent check` prints).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::files::{self, FileError, Trust};
use crate::sys::{self, UserInfo};
use crate::totp;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/sudo-agent/config.json";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub allow_remote: bool,
    /// Serve the rules (names and patterns, no secrets) on `GET /rules`, for MCP clients.
    pub expose_rules: bool,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgPattern {
    /// Exactly this string.
    Literal(String),
    /// Any one of these strings. A one-element list `["*"]` (or `["**"]`) is how a config
    /// writes a literal `*` argument, since the bare strings mean Any and Rest.
    OneOf(Vec<String>),
    /// `"*"`: any one argument.
    Any,
    /// `"**"`, last only: any number of further arguments, zero included.
    Rest,
}

// ---------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------
// Stage 1: plain data straight from JSON, SPEC defaults filled in, nothing checked yet.

/// The config file as written, with defaults for every absent key but `rules`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub allow_remote: bool,
    #[serde(default)]
    pub expose_rules: bool,
    #[serde(default = "default_secret_file")]
    pub secret_file: PathBuf,
    #[serde(default = "default_log_file")]
    pub log_file: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub results: RawResults,
    #[serde(default)]
    pub totp: RawTotp,
    #[serde(default)]
    pub throttle: RawThrottle,
    #[serde(default)]
    pub jobs: RawJobs,
    /// Absent and `null` both mean no notify command.
    #[serde(default)]
    pub notify: Option<Vec<String>>,
    /// Absent and `null` both mean: never exit when idle.
    #[serde(default)]
    pub idle_exit_s: Option<u64>,
    pub rules: Vec<RawRule>,
}

impl RawConfig {
    /// Moves the absolute paths of the agent's own files under `root` (a no-op for "/");
    /// relative ones are left for `validate` to refuse.
    fn rebase(&mut self, root: &Path) {
        for path in [
            &mut self.secret_file,
            &mut self.log_file,
            &mut self.state_dir,
            &mut self.results.dir,
        ] {
            if let Ok(rest) = path.strip_prefix("/") {
                *path = root.join(rest);
            }
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9999".into()
}
fn default_secret_file() -> PathBuf {
    "/etc/sudo-agent/secret".into()
}
fn default_log_file() -> PathBuf {
    "/var/log/sudo-agent.log".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/sudo-agent".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawResults {
    pub dir: PathBuf,
    pub max_files: u64,
    pub max_bytes: u64,
    pub max_age_s: u64,
}

impl Default for RawResults {
    fn default() -> Self {
        RawResults {
            dir: "/tmp/sudo-agent".into(),
            max_files: 200,
            max_bytes: 64 << 20,
            max_age_s: 86_400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTotp {
    pub digits: u64,
    pub step_s: u64,
    pub skew: u64,
}

impl Default for RawTotp {
    fn default() -> Self {
        let p = totp::Params::default();
        RawTotp {
            digits: u64::from(p.digits),
            step_s: p.step_s,
            skew: p.skew,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawThrottle {
    pub max_failures: u64,
    pub window_s: u64,
    pub lockout_s: u64,
    pub lockout_max_s: u64,
}

impl Default for RawThrottle {
    fn default() -> Self {
        RawThrottle {
            max_failures: 5,
            window_s: 60,
            lockout_s: 30,
            lockout_max_s: 3_600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawJobs {
    pub max_concurrent: u64,
    pub max_queue: u64,
    pub timeout_s: u64,
    pub kill_grace_s: u64,
    pub max_output_bytes: u64,
    pub history: u64,
    pub wait_s: u64,
    pub wait_max_s: u64,
}

impl Default for RawJobs {
    fn default() -> Self {
        RawJobs {
            max_concurrent: 4,
            max_queue: 32,
            timeout_s: 600,
            kill_grace_s: 5,
            max_output_bytes: 1 << 20,
            history: 1_000,
            wait_s: 10,
            wait_max_s: 120,
        }
    }
}

/// One rule as written. `name` is required; exactly one of `argv` and `"shell": true` is
/// checked later, so both mistakes are reported with the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<RawArg>>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub shell: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_pin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "RawEnv::is_empty")]
    pub env: RawEnv,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One element of a rule's `argv`: a string or a list of strings. What a string means
/// (`"*"`, `"**"`, a literal) is decided in `validate`, where the position is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RawArg {
    Text(String),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for RawArg {
    // Hand-written rather than `#[serde(untagged)]`, whose error ("data did not match any
    // variant") would not say what is expected.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgVisitor;
        impl<'de> Visitor<'de> for ArgVisitor {
            type Value = RawArg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawArg, E> {
                Ok(RawArg::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RawArg, E> {
                Ok(RawArg::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawArg, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(RawArg::List(items))
            }
        }
        deserializer.deserialize_any(ArgVisitor)
    }
}

/// A rule's `env` object in file order. Hand-written so that a key given twice is an
/// error instead of the last one silently winning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEnv(pub Vec<(String, String)>);

impl RawEnv {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for RawEnv {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvVisitor;
        impl<'de> Visitor<'de> for EnvVisitor {
            type Value = RawEnv;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEnv, A::Error> {
                let mut vars: Vec<(String, String)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    if vars.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("variable `{key}` given twice")));
                    }
                    vars.push((key, value));
                }
                Ok(RawEnv(vars))
            }
        }
        deserializer.deserialize_map(EnvVisitor)
    }
}

impl Serialize for RawEnv {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// One thing wrong with a config, at a key path such as `rules[1].argv[0]` ("" when the
/// problem is with the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Stage 1: JSON text to `RawConfig`. No I/O. The first syntax or type error stops it
/// (serde cannot go on past one), named by its key path.
pub fn parse(text: &str) -> Result<RawConfig, Problem> {
    let mut de = serde_json::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        // serde_path_to_error writes the root as ".".
        let path = if path == "." { String::new() } else { path };
        Problem::new(path, err.into_inner().to_string())
    })?;
    // Anything after the closing brace is a mistake too (a pasted second object).
    de.end().map_err(|err| Problem::new("", err.to_string()))?;
    Ok(raw)
}

// ---------------------------------------------------------------------------------------
// Stage 2: check everything, touch the file system and the user database, collect every
// problem.

/// Collects problems; each check pushes and carries on.
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    /// `value` if within `min..=max`, else a problem (the value is still returned: the
    /// config is refused anyway, and later checks can go on).
    fn range(&mut self, path: &str, value: u64, min: u64, max: u64) -> u64 {
        if value < min || value > max {
            self.push(
                path,
                format!("{value} is out of range; use a value from {min} to {max}"),
            );
        }
        value
    }

    fn absolute(&mut self, path: &str, value: PathBuf, example: &str) -> PathBuf {
        if !value.is_absolute() {
            self.push(
                path,
                format!(
                    "{:?} is not an absolute path; write the full path, e.g. {example}",
                    value.display().to_string()
                ),
            );
        } else if value.as_os_str().as_encoded_bytes().contains(&0) {
            self.push(path, "contains a NUL byte");
        }
        value
    }

    fn no_nul(&mut self, path: &str, value: &str) {
        if value.contains('\0') {
            self.push(
                path,
                "contains a NUL byte, which no command argument can hold",
            );
        }
    }
}

// The range checks above keep values far inside these types; saturating is only a
// fallback for 32-bit targets and never a panic.
fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}
fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn is_loopback(addr: &SocketAddr) -> bool {
    // to_canonical: `::ffff:127.0.0.1` is loopback too.
    addr.ip().to_canonical().is_loopback()
}

/// Why `path` cannot be a program the agent runs as root, or `None` when it can: it must
/// be an existing regular file (symlinks followed) with an execute bit, and not writable
/// by group or others (whoever can write it could run anything as root).
fn program_problem(path: &Path) -> Option<String> {
    let shown = path.display();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| shown.to_string());
    let hint = format!("use the program's absolute path (see: command -v {name})");
    if !path.is_absolute() {
        return Some(format!(
            "{:?} is not an absolute path; {hint}",
            shown.to_string()
        ));
    }
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Some(format!("{shown} does not exist; {hint}"));
        }
        Err(e) => return Some(format!("cannot inspect {shown}: {e}; {hint}")),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_file() {
        Some(format!("{shown} is not a regular file; {hint}"))
    } else if mode & 0o111 == 0 {
        Some(format!(
            "{shown} is not executable (mode {mode:04o}); name an executable program"
        ))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "{shown} is writable by group or others (mode {mode:04o}), so they could run \
             anything as root; run: chmod go-w {shown}"
        ))
    } else {
        None
    }
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
        Some(RawArg::List(_)) => {
            p.push(
                format!("{key}[0]"),
                "must be the program's absolute path as a string, not a list",
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
            RawArg::Text(s) if s == "*" => ArgPattern::Any,
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
        };
        args.push(pattern);
    }
    Action::Argv { program, args }
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
    if action == Action::Shell && raw.no_pin {
        p.push(
            format!("{at}.no_pin"),
            "a shell rule runs any command, so it must always need a code; remove \"no_pin\"",
        );
    }
    let timeout_s = raw
        .timeout_s
        .map(|v| p.range(&format!("{at}.timeout_s"), v, 1, MAX_DURATION_S));
    let max_output_bytes = raw
        .max_output_bytes
        .map(|v| to_usize(p.range(&format!("{at}.max_output_bytes"), v, 1, MAX_OUTPUT_BYTES)));
    let user = match raw.user {
        None => None,
        Some(name) => match sys::lookup_user(&name) {
            Ok(Some(user)) => Some(user),
            Ok(None) => {
                p.push(
                    format!("{at}.user"),
                    format!(
                        "no user {name:?} on this system; name an existing account or \
                         create it (useradd --system {name})"
                    ),
                );
                None
            }
            Err(e) => {
                p.push(
                    format!("{at}.user"),
                    format!("cannot look up user {name:?}: {e}"),
                );
                None
            }
        },
    };
    let group = match raw.group {
        None => None,
        Some(name) => match sys::lookup_group(&name) {
            Ok(Some(gid)) => Some(gid),
            Ok(None) => {
                p.push(
                    format!("{at}.group"),
                    format!(
                        "no group {name:?} on this system; name an existing group or \
                         create it (groupadd --system {name})"
                    ),
                );
                None
            }
            Err(e) => {
                p.push(
                    format!("{at}.group"),
                    format!("cannot look up group {name:?}: {e}"),
                );
                None
            }
        },
    };
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
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => p.push(key, format!("{shown} is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => p.push(
                    key,
                    format!("{shown} does not exist; create it or name an existing directory"),
                ),
                Err(e) => p.push(key, format!("cannot inspect {shown}: {e}")),
            }
        }
    }
    Rule {
        name: raw.name,
        action,
        no_pin: raw.no_pin,
        timeout_s,
        max_output_bytes,
        user,
        group,
        env,
        cwd,
    }
}

impl Config {
    /// Stage 2: checks every value, program, user, group and directory, and returns every
    /// problem found, in file order.
    pub fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
        let mut p = Problems(Vec::new());

        let listen = match raw.listen.parse::<SocketAddr>() {
            Ok(addr) => {
                if !is_loopback(&addr) && !raw.allow_remote {
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
                SocketAddr::from(([127, 0, 0, 1], 9999))
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
            match argv.first() {
                None => p.push(
                    "notify",
                    "is empty; remove it, or give the command as [\"/absolute/program\", \
                     \"arg\", ...]",
                ),
                Some(program) => {
                    if let Some(why) = program_problem(Path::new(program)) {
                        p.push("notify[0]", why);
                    }
                }
            }
            for (i, arg) in argv.iter().enumerate() {
                p.no_nul(&format!("notify[{i}]"), arg);
            }
        }

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
        for (i, raw_rule) in raw.rules.into_iter().enumerate() {
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

        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(Config {
            listen,
            allow_remote: raw.allow_remote,
            expose_rules: raw.expose_rules,
            secret_file,
            log_file,
            state_dir,
            results,
            totp,
            throttle,
            jobs,
            notify,
            idle_exit_s,
            rules,
        })
    }

    /// Reads the config file through the trusted-file checks (owner, mode, no links),
    /// parses and validates it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_in_root(path, Path::new("/"))
    }

    /// `load`, with the files the config names (secret, log, state, results) taken as
    /// relative to `root`: how `install --root DIR` checks a tree that is not yet the
    /// live system. The returned paths are the ones under `root`.
    pub fn load_in_root(path: &Path, root: &Path) -> Result<Config, ConfigError> {
        let text = files::read_trusted("config file", path, Trust::NotWritableByOthers)
            .map_err(ConfigError::File)?;
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        };
        let mut raw = parse(&text).map_err(|problem| invalid(vec![problem]))?;
        raw.rebase(root);
        Config::validate(raw).map_err(invalid)
    }

    /// Legal but risky choices, for `check` and start-up to print.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !is_loopback(&self.listen) {
            warnings.push(format!(
                "listen {} is not a loopback address: anyone who can reach it can ask for \
                 root commands",
                self.listen
            ));
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
        }
        warnings
    }
}

/// Why the config could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    File(FileError),
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(err) => err.fmt(f),
            Self::Invalid { path, problems } => {
                write!(f, "config file {} is invalid:", path.display())?;
                for problem in problems {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::File(err) => Some(err),
            Self::Invalid { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The starter config `sudo-agent init` and `demo` write.

/// Where the starter config points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StarterPaths {
    pub listen: SocketAddr,
    pub secret_file: PathBuf,
    pub log_file: PathBuf,
    pub state_dir: PathBuf,
    pub results_dir: PathBuf,
}

impl StarterPaths {
    /// The standard places on an installed system: the config's defaults.
    pub fn system() -> StarterPaths {
        StarterPaths {
            listen: default_listen()
                .parse()
                .unwrap_or_else(|_| ([127, 0, 0, 1], 9999).into()),
            secret_file: default_secret_file(),
            log_file: default_log_file(),
            state_dir: default_state_dir(),
            results_dir: RawResults::default().dir,
        }
    }
}

/// Where a program is looked for when writing the starter policy.
const PROGRAM_DIRS: &[&str] = &["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

fn find_program(name: &str) -> Option<String> {
    PROGRAM_DIRS
        .iter()
        .map(|dir| format!("{dir}/{name}"))
        .find(|path| program_problem(Path::new(path)).is_none())
}

/// JSON on one line with a space after `:` and `,`, as people write it by hand.
struct OneLine;

impl serde_json::ser::Formatter for OneLine {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

fn one_line<T: Serialize + ?Sized>(value: &T) -> String {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, OneLine);
    // Our values have string keys only, so this cannot fail; "null" would make the file
    // fail validation loudly rather than panic here.
    match value.serialize(&mut ser) {
        Ok(()) => String::from_utf8(buf).unwrap_or_else(|_| "null".into()),
        Err(_) => "null".into(),
    }
}

/// A starter rule for `program`, or `None` when this machine does not have it.
fn starter_rule(name: &str, program: &str, args: Vec<RawArg>, no_pin: bool) -> Option<RawRule> {
    let program = find_program(program)?;
    Some(RawRule {
        name: name.into(),
        argv: Some(std::iter::once(RawArg::Text(program)).chain(args).collect()),
        no_pin,
        ..RawRule::default()
    })
}

/// The safe, read-only starter policy: only rules whose program exists on this machine.
/// `demo` adds rules to try things out: `id` (no code), `echo **` (needs a code) and
/// `sleep *` with a 5 s timeout. Every knob is written out with its default so the owner
/// sees what can be tuned. Laid out one section and one rule per line, like the SPEC.
pub fn starter_config(paths: &StarterPaths, demo: bool) -> String {
    fn text(s: &str) -> RawArg {
        RawArg::Text(s.into())
    }
    let mut wanted = vec![
        starter_rule("uptime", "uptime", vec![], true),
        starter_rule("memory", "free", vec![text("-h")], true),
        starter_rule("disk", "df", vec![text("-h"), text("**")], false),
        starter_rule(
            "service-status",
            "systemctl",
            vec![
                RawArg::List(vec!["status".into(), "is-active".into()]),
                text("*"),
            ],
            false,
        ),
        starter_rule(
            "logs",
            "journalctl",
            vec![
                text("--no-pager"),
                text("-n"),
                text("*"),
                text("-u"),
                text("*"),
            ],
            false,
        ),
        starter_rule("addresses", "ip", vec![text("addr")], true),
    ];
    if demo {
        wanted.push(starter_rule("id", "id", vec![], true));
        wanted.push(starter_rule("echo", "echo", vec![text("**")], false));
        // A short timeout so `sleep 10` shows what a timed-out job looks like.
        wanted.push(
            starter_rule("sleep", "sleep", vec![text("*")], false).map(|rule| RawRule {
                timeout_s: Some(5),
                ..rule
            }),
        );
    }
    let rules: Vec<String> = wanted
        .into_iter()
        .flatten()
        .map(|rule| format!("    {}", one_line(&rule)))
        .collect();

    let results = RawResults {
        dir: paths.results_dir.clone(),
        ..RawResults::default()
    };
    let path = |p: &Path| one_line(&p.to_string_lossy());
    let fields = [
        ("listen", one_line(&paths.listen.to_string())),
        ("allow_remote", "false".to_string()),
        ("secret_file", path(&paths.secret_file)),
        ("log_file", path(&paths.log_file)),
        ("state_dir", path(&paths.state_dir)),
        ("results", one_line(&results)),
        ("totp", one_line(&RawTotp::default())),
        ("throttle", one_line(&RawThrottle::default())),
        ("jobs", one_line(&RawJobs::default())),
    ];
    let mut out = String::from("{\n");
    for (key, value) in fields {
        out.push_str(&format!("  \"{key}\": {value},\n"));
    }
    if rules.is_empty() {
        out.push_str("  \"rules\": []\n}\n");
    } else {
        out.push_str(&format!("  \"rules\": [\n{}\n  ]\n}}\n", rules.join(",\n")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tempdir(tag: &str) -> PathBuf {
        crate::files::test_dir(&format!("config-{tag}"))
    }

    /// A program path that exists here, so tests do not depend on what is installed.
    fn prog(name: &str) -> String {
        find_program(name).unwrap_or_else(|| "/bin/sh".into())
    }

    fn validate(text: &str) -> Result<Config, Vec<Problem>> {
        Config::validate(parse(text).unwrap())
    }

    fn problems(text: &str) -> Vec<String> {
        validate(text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn parse_err(text: &str) -> Problem {
        parse(text).unwrap_err()
    }

    fn minimal() -> String {
        format!(
            r#"{{"rules": [{{"name": "uptime", "argv": ["{}"]}}]}}"#,
            prog("uptime")
        )
    }

    const SPEC_EXAMPLE: &str = r#"{
      "listen": "127.0.0.1:9999",
      "allow_remote": false,
      "secret_file": "/etc/sudo-agent/secret",
      "log_file": "/var/log/sudo-agent.log",
      "state_dir": "/var/lib/sudo-agent",
      "results":  {"dir": "/tmp/sudo-agent", "max_files": 200, "max_bytes": 67108864, "max_age_s": 86400},
      "totp":     {"digits": 6, "step_s": 30, "skew": 1},
      "throttle": {"max_failures": 5, "window_s": 60, "lockout_s": 30, "lockout_max_s": 3600},
      "jobs":     {"max_concurrent": 4, "max_queue": 32, "timeout_s": 600, "kill_grace_s": 5,
                   "max_output_bytes": 1048576, "history": 1000, "wait_s": 10, "wait_max_s": 120},
      "notify":   ["/usr/bin/curl", "-fsS", "..."],
      "rules": [
        {"name": "uptime",  "argv": ["/usr/bin/uptime"], "no_pin": true},
        {"name": "disk",    "argv": ["/usr/bin/df", "-h", "**"]},
        {"name": "service", "argv": ["/usr/bin/systemctl", ["restart", "status"], ["nginx", "docker"]],
                            "timeout_s": 60},
        {"name": "logs",    "argv": ["/usr/bin/journalctl", "--no-pager", "-n", "*", "-u", "*"],
                            "user": "nobody", "max_output_bytes": 65536}
      ]
    }"#;

    #[test]
    fn spec_example_validates() {
        let mut text = SPEC_EXAMPLE.to_string();
        for name in ["uptime", "df", "systemctl", "journalctl", "curl"] {
            text = text.replace(
                &format!("\"/usr/bin/{name}\""),
                &format!("{:?}", prog(name)),
            );
        }
        let config = validate(&text).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(config.rules.len(), 4);
        assert!(config.rules[0].no_pin);
        assert_eq!(
            config.rules[1].action,
            Action::Argv {
                program: prog("df").into(),
                args: vec![ArgPattern::Literal("-h".into()), ArgPattern::Rest]
            }
        );
        let Action::Argv { args, .. } = &config.rules[2].action else {
            panic!("not argv")
        };
        assert_eq!(
            args[0],
            ArgPattern::OneOf(vec!["restart".into(), "status".into()])
        );
        assert_eq!(config.rules[2].timeout_s, Some(60));
        let logs = &config.rules[3];
        assert_eq!(logs.user.as_ref().unwrap().name, "nobody");
        assert_eq!(logs.max_output_bytes, Some(65536));
        assert_eq!(config.notify.as_ref().unwrap()[1], "-fsS");
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    }

    #[test]
    fn defaults_applied() {
        let c = validate(&minimal()).unwrap();
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 9999)));
        assert!(!c.allow_remote);
        assert_eq!(c.secret_file, Path::new("/etc/sudo-agent/secret"));
        assert_eq!(c.log_file, Path::new("/var/log/sudo-agent.log"));
        assert_eq!(c.state_dir, Path::new("/var/lib/sudo-agent"));
        assert_eq!(
            c.results,
            ResultsConfig {
                dir: "/tmp/sudo-agent".into(),
                max_files: 200,
                max_bytes: 67_108_864,
                max_age_s: 86_400
            }
        );
        assert_eq!(
            c.totp,
            totp::Params {
                digits: 6,
                step_s: 30,
                skew: 1
            }
        );
        assert_eq!(
            c.throttle,
            ThrottleConfig {
                max_failures: 5,
                window_s: 60,
                lockout_s: 30,
                lockout_max_s: 3600
            }
        );
        assert_eq!(
            c.jobs,
            JobsConfig {
                max_concurrent: 4,
                max_queue: 32,
                timeout_s: 600,
                kill_grace_s: 5,
                max_output_bytes: 1_048_576,
                history: 1000,
                wait_s: 10,
                wait_max_s: 120
            }
        );
        assert_eq!(c.notify, None);
        let r = &c.rules[0];
        assert!(!r.no_pin && r.timeout_s.is_none() && r.user.is_none() && r.env.is_empty());

        // A section given in part keeps the defaults of the rest; null notify is none.
        let text = minimal().replacen('{', r#"{"jobs": {"timeout_s": 60}, "notify": null, "#, 1);
        let c = validate(&text).unwrap();
        assert_eq!(c.jobs.timeout_s, 60);
        assert_eq!(c.jobs.max_queue, 32);
        assert_eq!(c.notify, None);
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let p = parse_err(r#"{"jobs": {"timeout_z": 5}, "rules": []}"#);
        assert_eq!(p.path, "jobs.timeout_z");
        assert!(p.message.contains("unknown field `timeout_z`"), "{p}");
        assert!(
            p.to_string().starts_with("jobs.timeout_z: unknown field"),
            "{p}"
        );

        let p = parse_err(r#"{"rules": [{"name": "x", "argv": ["/bin/true"], "nopin": true}]}"#);
        assert_eq!(p.path, "rules[0].nopin");
        assert!(p.message.contains("unknown field `nopin`"), "{p}");

        let p = parse_err(r#"{"rule": []}"#);
        assert_eq!(p.path, "rule");

        let p = parse_err(r#"{"listen": "127.0.0.1:1"}"#);
        assert_eq!(p.path, "");
        assert!(p.message.contains("missing field `rules`"), "{p}");
        assert!(!p.to_string().starts_with(':'), "{p}");
    }

    #[test]
    fn wrong_types_name_their_path() {
        let text = r#"{"rules": [
            {"name": "a", "argv": ["/bin/true"]},
            {"name": "b", "argv": ["/bin/true"]},
            {"name": "c", "argv": ["/bin/true"], "no_pin": "yes"}]}"#;
        let p = parse_err(text);
        assert_eq!(p.path, "rules[2].no_pin");
        assert!(p.message.starts_with("invalid type"), "{p}");

        let p = parse_err(r#"{"rules": [{"name": "a", "argv": ["/bin/true", 5]}]}"#);
        assert_eq!(p.path, "rules[0].argv[1]");
        assert!(p.message.contains("a string or a list of strings"), "{p}");

        let p = parse_err(r#"{"rules": [{"name": "a", "argv": ["/bin/true", ["a", 1]]}]}"#);
        assert_eq!(p.path, "rules[0].argv[1][1]");

        let p = parse_err(r#"{"jobs": {"timeout_s": -1}, "rules": []}"#);
        assert_eq!(p.path, "jobs.timeout_s");

        let p = parse_err(r#"{"rules": [{"argv": ["/bin/true"]}]}"#);
        assert_eq!(p.path, "rules[0]");
        assert!(p.message.contains("missing field `name`"), "{p}");

        let p = parse_err(
            r#"{"rules": [{"name": "a", "argv": ["/bin/true"], "env": {"A": "1", "A": "2"}}]}"#,
        );
        assert_eq!(p.path, "rules[0].env");
        assert!(p.message.contains("given twice"), "{p}");

        let p = parse_err(r#"{"listen": "127.0.0.1:1", "listen": "0.0.0.0:1", "rules": []}"#);
        assert!(p.message.contains("duplicate field"), "{p}");

        assert!(parse(r#"{"rules": []} {"rules": []}"#).is_err());
        assert!(parse(r#"{"rules": [],}"#).is_err());
    }

    #[test]
    fn every_problem_reported_together() {
        let text = r#"{
            "listen": "0.0.0.0:9999",
            "secret_file": "secret",
            "log_file": "log",
            "state_dir": "state",
            "results": {"dir": "results", "max_files": 0},
            "totp": {"digits": 9, "step_s": 0, "skew": 11},
            "throttle": {"max_failures": 0, "lockout_s": 7200, "lockout_max_s": 3600},
            "jobs": {"max_concurrent": 0, "max_queue": 20000, "timeout_s": 0, "history": 0,
                     "max_output_bytes": 0, "wait_s": 200, "wait_max_s": 100},
            "notify": ["curl"],
            "rules": [
                {"name": "a", "argv": ["/usr/bin/nosuch"]},
                {"name": "a", "argv": ["/bin/true"]}
            ]
        }"#;
        let all = problems(text);
        let expect = [
            "listen: 0.0.0.0:9999 is not a loopback address; set \"allow_remote\": true to expose root commands to the network",
            "secret_file: \"secret\" is not an absolute path",
            "log_file: ",
            "state_dir: ",
            "results.dir: ",
            "results.max_files: 0 is out of range; use a value from 1 to",
            "totp.digits: 9 is out of range; use a value from 6 to 8",
            "totp.step_s: 0 is out of range; use a value from 1 to 300",
            "totp.skew: 11 is out of range; use a value from 0 to 10",
            "throttle.max_failures: 0",
            "throttle.lockout_s: 7200 is longer than throttle.lockout_max_s (3600)",
            "jobs.max_concurrent: 0",
            "jobs.max_queue: 20000",
            "jobs.timeout_s: 0",
            "jobs.max_output_bytes: 0",
            "jobs.history: 0",
            "jobs.wait_s: 200 is longer than jobs.wait_max_s (100)",
            "notify[0]: \"curl\" is not an absolute path; use the program's absolute path (see: command -v curl)",
            "rules[0].argv[0]: /usr/bin/nosuch does not exist; use the program's absolute path (see: command -v nosuch)",
            "rules[1].name: \"a\" is already the name of rules[0]; rule names must be unique",
        ];
        for want in expect {
            assert!(
                all.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {all:#?}"
            );
        }
        assert_eq!(all.len(), expect.len(), "{all:#?}");
    }

    #[test]
    fn listen_checks() {
        let with = |extra: &str| minimal().replacen('{', &format!("{{{extra}, "), 1);
        let c = validate(&with(r#""listen": "[::1]:9999""#)).unwrap();
        assert!(c.listen.ip().is_loopback());
        validate(&with(r#""listen": "127.0.0.2:0""#)).unwrap();
        let all = problems(&with(r#""listen": "localhost:9999""#));
        assert!(
            all[0].starts_with("listen: \"localhost:9999\" is not an IP address and port"),
            "{all:?}"
        );
        let all = problems(&with(r#""listen": "[::]:9999""#));
        assert!(all[0].contains("is not a loopback address"), "{all:?}");

        let c = validate(&with(r#""listen": "0.0.0.0:9999", "allow_remote": true"#)).unwrap();
        assert!(c.allow_remote);
        assert!(c.warnings()[0].contains("0.0.0.0:9999 is not a loopback address"));
    }

    #[test]
    fn rest_only_last() {
        let text = r#"{"rules": [{"name": "a", "argv": ["/bin/sh", "**", "x"]}]}"#;
        let all = problems(text);
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(
            all[0].starts_with(
                "rules[0].argv[1]: \"**\" (any further arguments) may only be the last"
            ),
            "{all:?}"
        );
        // A literal "*" or "**" is written as a one-element list.
        let c = validate(
            r#"{"rules": [{"name": "a", "argv": ["/bin/sh", ["*"], ["**"], "*", "**"]}]}"#,
        )
        .unwrap();
        let Action::Argv { args, .. } = &c.rules[0].action else {
            panic!()
        };
        assert_eq!(
            args,
            &[
                ArgPattern::OneOf(vec!["*".into()]),
                ArgPattern::OneOf(vec!["**".into()]),
                ArgPattern::Any,
                ArgPattern::Rest
            ]
        );
    }

    #[test]
    fn argv_shapes() {
        let all = problems(
            r#"{"rules": [
            {"name": "a", "argv": []},
            {"name": "b", "argv": [["/bin/sh"]]},
            {"name": "c", "argv": ["/bin/sh", []]},
            {"name": "d"},
            {"name": "e", "argv": ["/bin/sh"], "shell": true},
            {"name": "", "argv": ["/bin/sh", "a\u0000b"]}
        ]}"#,
        );
        let expect = [
            "rules[0].argv: is empty",
            "rules[1].argv[0]: must be the program's absolute path as a string",
            "rules[2].argv[1]: an empty list matches nothing",
            "rules[3]: has neither \"argv\" nor \"shell\": true",
            "rules[4]: has both \"argv\" and \"shell\": true",
            "rules[5].name: is empty",
            "rules[5].argv[1]: contains a NUL byte",
        ];
        for want in expect {
            assert!(
                all.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {all:#?}"
            );
        }
        assert_eq!(all.len(), expect.len(), "{all:#?}");
        assert!(
            problems(r#"{"rules": []}"#)[0].starts_with("rules: is empty; add at least one rule")
        );
    }

    #[test]
    fn program_checks() {
        let dir = tempdir("programs");
        let write = |name: &str, mode: u32| {
            let path = dir.join(name);
            fs::write(&path, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            path.display().to_string()
        };
        let good = write("good", 0o755);
        let noexec = write("noexec", 0o644);
        let writable = write("writable", 0o777);
        let link = dir.join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let text = format!(
            r#"{{"rules": [
                {{"name": "a", "argv": [{good:?}]}},
                {{"name": "b", "argv": [{:?}]}},
                {{"name": "c", "argv": [{noexec:?}]}},
                {{"name": "d", "argv": [{writable:?}]}},
                {{"name": "e", "argv": [{:?}]}},
                {{"name": "f", "argv": ["df"]}}
            ]}}"#,
            link.display().to_string(),
            dir.display().to_string(),
        );
        let all = problems(&text);
        let expect = [
            format!("rules[2].argv[0]: {noexec} is not executable (mode 0644)"),
            format!("rules[3].argv[0]: {writable} is writable by group or others (mode 0777)"),
            format!("rules[4].argv[0]: {} is not a regular file", dir.display()),
            "rules[5].argv[0]: \"df\" is not an absolute path; use the program's absolute path (see: command -v df)".to_string(),
        ];
        for want in &expect {
            assert!(
                all.iter().any(|p| p.starts_with(want.as_str())),
                "missing {want:?} in {all:#?}"
            );
        }
        assert_eq!(all.len(), expect.len(), "{all:#?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn users_and_groups() {
        let text = r#"{"rules": [
            {"name": "a", "argv": ["/bin/sh"], "user": "sudo-agent-no-such-user"},
            {"name": "b", "argv": ["/bin/sh"], "group": "sudo-agent-no-such-group"},
            {"name": "c", "argv": ["/bin/sh"], "user": "root", "group": "root"}
        ]}"#;
        let all = problems(text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert!(
            all[0].starts_with("rules[0].user: no user \"sudo-agent-no-such-user\" on this system"),
            "{all:?}"
        );
        assert!(
            all[1].starts_with(
                "rules[1].group: no group \"sudo-agent-no-such-group\" on this system"
            ),
            "{all:?}"
        );

        let text =
            r#"{"rules": [{"name": "c", "argv": ["/bin/sh"], "user": "root", "group": "root"}]}"#;
        let c = validate(text).unwrap();
        let user = c.rules[0].user.as_ref().unwrap();
        assert_eq!((user.name.as_str(), user.uid), ("root", 0));
        assert_eq!(c.rules[0].group, Some(0));
    }

    #[test]
    fn env_checks() {
        let text = r#"{"rules": [{"name": "a", "argv": ["/bin/sh"], "env": {
            "Z_OK": "1", "A_OK": "x=y", "PATH": "/tmp", "HOME": "/", "LD_PRELOAD": "/x.so",
            "LD_LIBRARY_PATH": "/x", "1BAD": "", "BAD-NAME": "", "": "", "NUL": "a\u0000",
            "LESSSECURE": "0"
        }}]}"#;
        let all = problems(text);
        for key in [
            "PATH",
            "HOME",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "1BAD",
            "BAD-NAME",
            "NUL",
            "LESSSECURE",
        ] {
            let want = format!("rules[0].env.{key}: ");
            assert!(
                all.iter().any(|p| p.starts_with(&want)),
                "missing {want:?} in {all:#?}"
            );
        }
        assert!(
            all.iter().any(|p| p.starts_with("rules[0].env.: ")),
            "{all:#?}"
        );
        assert_eq!(all.len(), 9, "{all:#?}");

        let text = r#"{"rules": [{"name": "a", "argv": ["/bin/sh"], "env": {"Z": "1", "A": "2", "LANG": "C"}}]}"#;
        let c = validate(text).unwrap();
        let env: Vec<(&str, &str)> = c.rules[0]
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, [("A", "2"), ("LANG", "C"), ("Z", "1")]);
    }

    #[test]
    fn cwd_checks() {
        let all = problems(
            r#"{"rules": [
            {"name": "a", "argv": ["/bin/sh"], "cwd": "tmp"},
            {"name": "b", "argv": ["/bin/sh"], "cwd": "/sudo-agent-no-such-dir"},
            {"name": "c", "argv": ["/bin/sh"], "cwd": "/bin/sh"},
            {"name": "d", "argv": ["/bin/sh"], "cwd": "/"}
        ]}"#,
        );
        assert_eq!(all.len(), 3, "{all:#?}");
        assert!(all[0].starts_with("rules[0].cwd: \"tmp\" is not an absolute path"));
        assert!(all[1].starts_with("rules[1].cwd: /sudo-agent-no-such-dir does not exist"));
        assert!(all[2].starts_with("rules[2].cwd: /bin/sh is not a directory"));
    }

    #[test]
    fn rule_limits() {
        let all = problems(
            r#"{"rules": [
            {"name": "a", "argv": ["/bin/sh"], "timeout_s": 0, "max_output_bytes": 0},
            {"name": "b", "argv": ["/bin/sh"], "timeout_s": 99999999999, "max_output_bytes": 999999999999}
        ]}"#,
        );
        assert_eq!(all.len(), 4, "{all:#?}");
        assert!(all[0].starts_with("rules[0].timeout_s: 0 is out of range"));
        assert!(all[3].starts_with("rules[1].max_output_bytes: 999999999999 is out of range"));
    }

    #[test]
    fn shell_rules() {
        let c = validate(r#"{"rules": [{"name": "sh", "shell": true}]}"#).unwrap();
        assert_eq!(c.rules[0].action, Action::Shell);
        assert_eq!(
            c.warnings(),
            ["rule `sh` hands commands to /bin/sh -c: any command runs as root with a code"]
        );
        let all = problems(r#"{"rules": [{"name": "sh", "shell": true, "no_pin": true}]}"#);
        assert_eq!(all.len(), 1);
        assert!(
            all[0].starts_with("rules[0].no_pin: a shell rule runs any command"),
            "{all:?}"
        );
    }

    #[test]
    fn no_pin_rest_warns() {
        let c =
            validate(r#"{"rules": [{"name": "echo", "argv": ["/bin/sh", "**"], "no_pin": true}]}"#)
                .unwrap();
        assert_eq!(c.warnings().len(), 1);
        assert!(c.warnings()[0].starts_with("rule `echo` needs no code"));
    }

    #[test]
    fn notify_checks() {
        let with = |notify: &str| minimal().replacen('{', &format!(r#"{{"notify": {notify}, "#), 1);
        assert!(problems(&with("[]"))[0].starts_with("notify: is empty"));
        assert!(
            problems(&with(r#"["/sudo-agent/nosuch"]"#))[0]
                .starts_with("notify[0]: /sudo-agent/nosuch does not exist")
        );
        let c = validate(&with(r#"["/bin/sh", "-c", "true"]"#)).unwrap();
        assert_eq!(c.notify.unwrap(), ["/bin/sh", "-c", "true"]);
    }

    #[test]
    fn problem_display() {
        assert_eq!(Problem::new("a.b", "bad").to_string(), "a.b: bad");
        assert_eq!(Problem::new("", "bad").to_string(), "bad");
    }

    #[test]
    fn load_checks_file_and_lists_problems() {
        let dir = tempdir("load");
        let path = dir.join("config.json");
        fs::write(&path, minimal()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(Config::load(&path).unwrap().rules.len(), 1);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(
            matches!(err, ConfigError::File(FileError::Mode { .. })),
            "{err}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

        fs::write(&path, r#"{"totp": {"digits": 9}, "rules": []}"#).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "config file {} is invalid:\n  - totp.digits: 9 is out of range; use a value \
                 from 6 to 8\n  - rules: is empty; add at least one rule (an empty allowlist \
                 refuses every command)",
                path.display()
            )
        );

        fs::write(&path, r#"{"jobs": {"timeout_z": 1}, "rules": []}"#).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("is invalid:\n  - jobs.timeout_z: unknown field"),
            "{err}"
        );

        let err = Config::load(&dir.join("missing.json")).unwrap_err();
        assert!(
            matches!(err, ConfigError::File(FileError::Missing { .. })),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    fn starter_paths() -> StarterPaths {
        StarterPaths {
            listen: "127.0.0.1:9999".parse().unwrap(),
            secret_file: "/etc/sudo-agent/secret".into(),
            log_file: "/var/log/sudo-agent.log".into(),
            state_dir: "/var/lib/sudo-agent".into(),
            results_dir: "/tmp/sudo-agent-starter".into(),
        }
    }

    #[test]
    fn starter_config_validates() {
        let text = starter_config(&starter_paths(), false);
        let c = validate(&text).unwrap_or_else(|p| panic!("{p:#?}\n{text}"));
        assert_eq!(c.results.dir, Path::new("/tmp/sudo-agent-starter"));
        assert_eq!(c.jobs, validate(&minimal()).unwrap().jobs);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        let names: Vec<&str> = c.rules.iter().map(|r| r.name.as_str()).collect();
        assert!(
            !names.contains(&"echo") && !names.contains(&"sleep"),
            "{names:?}"
        );
        if find_program("uptime").is_some() {
            assert!(c.rules.iter().any(|r| r.name == "uptime" && r.no_pin));
        }
        // Nothing in the safe starter both needs no code and takes free arguments.
        for rule in c.rules.iter().filter(|r| r.no_pin) {
            let Action::Argv { args, .. } = &rule.action else {
                panic!()
            };
            assert!(
                args.iter().all(|a| matches!(a, ArgPattern::Literal(_))),
                "{rule:?}"
            );
        }
    }

    #[test]
    fn starter_config_demo_validates() {
        let text = starter_config(&starter_paths(), true);
        let c = validate(&text).unwrap_or_else(|p| panic!("{p:#?}\n{text}"));
        if find_program("sleep").is_some() {
            let sleep = c.rules.iter().find(|r| r.name == "sleep").unwrap();
            assert_eq!(sleep.timeout_s, Some(5));
            assert!(!sleep.no_pin);
        }
        if find_program("echo").is_some() {
            assert!(c.rules.iter().any(|r| r.name == "echo" && !r.no_pin));
        }
        if find_program("id").is_some() {
            assert!(c.rules.iter().any(|r| r.name == "id" && r.no_pin));
        }
        // Laid out one section and one rule per line.
        assert!(
            text.contains("\n  \"totp\": {\"digits\": 6, \"step_s\": 30, \"skew\": 1},\n"),
            "{text}"
        );
    }

    #[test]
    fn idle_exit_is_optional_and_bounded() {
        assert_eq!(validate(&minimal()).unwrap().idle_exit_s, None);
        let with = |v: &str| minimal().replacen('{', &format!(r#"{{"idle_exit_s": {v}, "#), 1);
        assert_eq!(validate(&with("300")).unwrap().idle_exit_s, Some(300));
        assert_eq!(validate(&with("null")).unwrap().idle_exit_s, None);
        let p = problems(&with("0"));
        assert!(p[0].starts_with("idle_exit_s: 0 is out of range"), "{p:?}");
        assert!(parse(&with("-1")).is_err());
    }

    #[test]
    fn load_in_root_moves_the_agents_own_files() {
        let dir = tempdir("root");
        let path = dir.join("config.json");
        let text = minimal().replacen('{', r#"{"state_dir": "/var/lib/x", "#, 1);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::load_in_root(&path, Path::new("/img")).unwrap();
        assert_eq!(c.state_dir, Path::new("/img/var/lib/x"));
        assert_eq!(c.secret_file, Path::new("/img/etc/sudo-agent/secret"));
        assert_eq!(c.results.dir, Path::new("/img/tmp/sudo-agent"));
        let c = Config::load(&path).unwrap();
        assert_eq!(c.state_dir, Path::new("/var/lib/x"));
        fs::remove_dir_all(dir).unwrap();
    }
}
