//! Stage 1: the config file as plain data, straight from JSON with the SPEC's defaults
//! filled in. No I/O; unknown keys and wrong types are errors naming their key path.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::types::DEFAULT_LISTEN;
use crate::auth::totp;

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
    /// Names (with or without `:port`) besides loopback addresses and `localhost` that
    /// a request's `Host` may carry.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Web origins (`https://ha.example:8123`) whose pages may call the agent.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Bytes of answers held for clients that have not read them yet, all connections
    /// together.
    #[serde(default = "default_send_queue_bytes")]
    pub send_queue_bytes: u64,
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
    /// A second listener, on a Unix socket (absent: none).
    #[serde(default)]
    pub unix_socket: Option<RawUnixSocket>,
    #[serde(default)]
    pub approvals: RawApprovals,
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnixSocket {
    pub path: PathBuf,
    /// Octal text, as chmod(1) takes it.
    #[serde(default = "default_socket_mode")]
    pub mode: String,
    #[serde(default)]
    pub group: Option<String>,
}

fn default_socket_mode() -> String {
    "0660".into()
}

/// Requests held for a human (`POST /request`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawApprovals {
    pub max_pending: u64,
    pub ttl_s: u64,
    pub approvers: Option<RawWho>,
    pub notify: Option<Vec<String>>,
}

impl Default for RawApprovals {
    fn default() -> Self {
        RawApprovals {
            max_pending: 8,
            ttl_s: 300,
            approvers: None,
            notify: None,
        }
    }
}

/// User and group names (a rule's `callers`, `approvals.approvers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWho {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl RawConfig {
    /// Moves the absolute paths of the agent's own files under `root` (a no-op for "/");
    /// relative ones are left for `validate` to refuse.
    pub(super) fn rebase(&mut self, root: &Path) {
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

fn default_send_queue_bytes() -> u64 {
    16 << 20
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
pub(crate) fn default_secret_file() -> PathBuf {
    "/etc/sudo-agent/secret".into()
}
pub(crate) fn default_log_file() -> PathBuf {
    "/var/log/sudo-agent.log".into()
}
pub(crate) fn default_state_dir() -> PathBuf {
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
    /// Limits for every job; a rule's own `limits` replace them key by key.
    #[serde(skip_serializing_if = "RawLimits::is_empty")]
    pub limits: RawLimits,
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
            limits: RawLimits::default(),
        }
    }
}

/// `limits` of a rule or of `jobs`: integers, each optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_max_percent: Option<u64>,
}

impl RawLimits {
    fn is_empty(&self) -> bool {
        *self == RawLimits::default()
    }
}

/// A rule's `sandbox`. `read_only` is absent unless written, so `validate` can apply
/// `no_pin`'s default and refuse a `no_pin` rule that turns it off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSandbox {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub writable: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<bool>,
    #[serde(skip_serializing_if = "is_false")]
    pub private_tmp: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub no_new_privileges: bool,
}

impl RawSandbox {
    fn is_empty(&self) -> bool {
        *self == RawSandbox::default()
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
    /// Octal, as `umask(1)` prints it: `"027"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<String>,
    #[serde(default, skip_serializing_if = "RawLimits::is_empty")]
    pub limits: RawLimits,
    #[serde(default, skip_serializing_if = "RawSandbox::is_empty")]
    pub sandbox: RawSandbox,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub examples: Option<RawExamples>,
    /// Who may ask for it; absent: anyone who reaches the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callers: Option<RawWho>,
}

/// Commands a rule must allow, and commands the policy must refuse: each a command
/// string or an argv list (an object there is reported by `validate`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawExamples {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<RawArg>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<RawArg>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One element of a rule's `argv`: a string, a list of strings or a one-key object
/// (`{"any": true}`, `{"re": …}`, `{"path_under": …}`, `{"int": [min, max]}`). What a
/// string means (`"*"`, `"**"`, a literal) is decided in `validate`, where the position
/// is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RawArg {
    Text(String),
    List(Vec<String>),
    Kind(RawKind),
}

/// The object form of an argv element; `validate` wants exactly one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKind {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_under: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int: Option<(i64, i64)>,
}

impl<'de> Deserialize<'de> for RawArg {
    // Hand-written rather than `#[serde(untagged)]`, whose error ("data did not match any
    // variant") would not say what is expected.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgVisitor;
        impl<'de> Visitor<'de> for ArgVisitor {
            type Value = RawArg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string, a list of strings, or an object such as {\"any\": true}, \
                     {\"re\": \"...\"}, {\"path_under\": \"/dir\"}, {\"int\": [1, 10]}",
                )
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
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawArg, A::Error> {
                RawKind::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawArg::Kind)
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
