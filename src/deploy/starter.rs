//! The starter config that `init`, `install` and `demo` write: read-only rules for the
//! programs this machine has, every knob written out with its default.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{
    DEFAULT_LISTEN, RawArg, RawExamples, RawJobs, RawKind, RawResults, RawRule, RawThrottle,
    RawTotp, default_log_file, default_secret_file, default_state_dir, program_problem,
};

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
            listen: DEFAULT_LISTEN,
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

/// A starter rule for `program`, or `None` when this machine does not have it. Its
/// examples (commands it allows, commands the policy refuses) are checked by `check`,
/// and show the owner what the patterns mean.
fn starter_rule(
    name: &str,
    program: &str,
    args: Vec<RawArg>,
    no_pin: bool,
    (allow, deny): (&[&str], &[&str]),
) -> Option<RawRule> {
    let program = find_program(program)?;
    let texts = |list: &[&str]| list.iter().map(|s| RawArg::Text((*s).into())).collect();
    Some(RawRule {
        name: name.into(),
        argv: Some(std::iter::once(RawArg::Text(program)).chain(args).collect()),
        no_pin,
        examples: Some(RawExamples {
            allow: texts(allow),
            deny: texts(deny),
        }),
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
    let kind = |kind: RawKind| RawArg::Kind(kind);
    let mut wanted = vec![
        starter_rule(
            "uptime",
            "uptime",
            vec![],
            true,
            (&["uptime"], &["uptime --since"]),
        ),
        starter_rule(
            "memory",
            "free",
            vec![text("-h")],
            true,
            (&["free -h"], &["free -h -s 1"]),
        ),
        starter_rule(
            "disk",
            "df",
            vec![text("-h"), text("**")],
            false,
            (&["df -h", "df -h / /boot"], &["df /"]),
        ),
        starter_rule(
            "service-status",
            "systemctl",
            vec![
                RawArg::List(vec!["status".into(), "is-active".into()]),
                text("*"),
            ],
            false,
            (
                &["systemctl status nginx", "systemctl is-active docker"],
                &[
                    "systemctl status --host=root@elsewhere",
                    "systemctl edit nginx",
                    "systemctl restart nginx",
                ],
            ),
        ),
        starter_rule(
            "logs",
            "journalctl",
            vec![
                text("--no-pager"),
                text("-n"),
                kind(RawKind {
                    int: Some((1, 10_000)),
                    ..RawKind::default()
                }),
                text("-u"),
                kind(RawKind {
                    re: Some("[A-Za-z0-9@._:-]{1,128}".into()),
                    ..RawKind::default()
                }),
            ],
            false,
            (
                &["journalctl --no-pager -n 50 -u nginx.service"],
                &[
                    "journalctl --no-pager -n 50 -u nginx --file=/etc/shadow",
                    "journalctl --no-pager -n --file=/etc/shadow -u nginx",
                    "journalctl -n 50 -u nginx",
                ],
            ),
        ),
        starter_rule(
            "addresses",
            "ip",
            vec![text("addr")],
            true,
            (&["ip addr"], &["ip netns exec x sh"]),
        ),
    ];
    if demo {
        wanted.push(starter_rule(
            "id",
            "id",
            vec![],
            true,
            (&["id"], &["id -u root"]),
        ));
        wanted.push(starter_rule(
            "echo",
            "echo",
            vec![text("**")],
            false,
            (&["echo hello world", "echo -n 'a  b'"], &[]),
        ));
        // A short timeout so `sleep 10` shows what a timed-out job looks like.
        wanted.push(
            starter_rule(
                "sleep",
                "sleep",
                vec![text("*")],
                false,
                (&["sleep 10"], &["sleep --help"]),
            )
            .map(|rule| RawRule {
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
    use crate::config::{Config, parse};
    use crate::policy::{Action, ArgPattern};

    fn validate(text: &str) -> Config {
        Config::validate(parse(text).unwrap()).unwrap_or_else(|p| panic!("{p:#?}\n{text}"))
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
        let c = validate(&text);
        assert_eq!(c.results.dir, Path::new("/tmp/sudo-agent-starter"));
        let minimal = validate(r#"{"rules": [{"name": "sh", "argv": ["/bin/sh"]}]}"#);
        assert_eq!(c.jobs, minimal.jobs);
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
        let c = validate(&text);
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
}
