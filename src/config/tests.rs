//! Tests of the two stages and of loading.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::raw::Problem;
use super::*;
use crate::auth::totp;
use crate::policy::{Action, ArgPattern};
use crate::sys::files::{FileError, test_dir};

pub(super) fn tempdir(tag: &str) -> PathBuf {
    test_dir(&format!("config-{tag}"))
}

/// A program path that exists here, so tests do not depend on what is installed.
pub(super) fn prog(name: &str) -> String {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| format!("{dir}/{name}"))
        .find(|path| program_problem(Path::new(path)).is_none())
        .unwrap_or_else(|| "/bin/sh".into())
}

pub(super) fn validate(text: &str) -> Result<Config, Vec<Problem>> {
    Config::validate(parse(text).unwrap())
}

pub(super) fn problems(text: &str) -> Vec<String> {
    validate(text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

pub(super) fn parse_err(text: &str) -> Problem {
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
            wait_max_s: 120,
            limits: crate::sys::Limits::default()
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
    assert!(
        p.message
            .contains("a string, a list of strings, or an object"),
        "{p}"
    );

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
        all[0].starts_with("rules[0].argv[1]: \"**\" (any further arguments) may only be the last"),
        "{all:?}"
    );
    // A literal "*" or "**" is written as a one-element list.
    let c =
        validate(r#"{"rules": [{"name": "a", "argv": ["/bin/sh", ["*"], ["**"], "*", "**"]}]}"#)
            .unwrap();
    let Action::Argv { args, .. } = &c.rules[0].action else {
        panic!()
    };
    assert_eq!(
        args,
        &[
            ArgPattern::OneOf(vec!["*".into()]),
            ArgPattern::OneOf(vec!["**".into()]),
            ArgPattern::Word,
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
    assert!(problems(r#"{"rules": []}"#)[0].starts_with("rules: is empty; add at least one rule"));
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
        format!(
            "rules[3].argv[0]: {writable} is not trusted (another user could change it): file \
             {writable} is mode 0777 (writable by group or others); run: chmod go-w {writable}"
        ),
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
        {"name": "b", "argv": ["/bin/sh"], "user": "root", "group": "sudo-agent-no-such-group"},
        {"name": "c", "argv": ["/bin/sh"], "user": "root", "group": "root"}
    ]}"#;
    let all = problems(text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all[0].starts_with("rules[0].user: no user \"sudo-agent-no-such-user\" on this system"),
        "{all:?}"
    );
    assert!(
        all[1].starts_with("rules[1].group: no group \"sudo-agent-no-such-group\" on this system"),
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
        validate(r#"{"rules": [{"name": "echo", "argv": ["/bin/echo", "**"], "no_pin": true}]}"#)
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

#[test]
fn browser_allowlists_and_send_queue() {
    let c = validate(&minimal()).unwrap();
    assert!(c.allowed_hosts.is_empty() && c.allowed_origins.is_empty());
    assert_eq!(c.send_queue_bytes, 16 << 20);
    let with = |extra: &str| minimal().replacen('{', &format!("{{{extra}, "), 1);
    let c = validate(&with(
        r#""allowed_hosts": ["NAS.lan", "pi.lan:9999", "[fd00::5]"],
           "allowed_origins": ["HTTPS://HA.example:443/", "http://ha.lan:8123", "http://x.lan:80"],
           "send_queue_bytes": 65536"#,
    ))
    .unwrap();
    assert_eq!(c.allowed_hosts, ["nas.lan", "pi.lan:9999", "[fd00::5]"]);
    assert_eq!(
        c.allowed_origins,
        ["https://ha.example", "http://ha.lan:8123", "http://x.lan"]
    );
    assert_eq!(c.send_queue_bytes, 65536);
    let all = problems(&with(
        r#""allowed_hosts": ["*", "a b", "user@nas"],
           "allowed_origins": ["null", "*", "ha.example", "https://ha.example/path", "ftp://x"],
           "send_queue_bytes": 1024"#,
    ));
    let starts = [
        "allowed_hosts[0]: \"*\" would let any web page",
        "allowed_hosts[1]: \"a b\" is not a host name",
        "allowed_hosts[2]: \"user@nas\" is not a host name",
        "allowed_origins[0]: \"null\" is the origin of sandboxed frames",
        "allowed_origins[1]: \"*\" would let every web page",
        "allowed_origins[2]: \"ha.example\" is not an origin",
        "allowed_origins[3]: \"https://ha.example/path\" is not an origin",
        "allowed_origins[4]: \"ftp://x\" is not an origin",
        "send_queue_bytes: 1024 is out of range",
    ];
    assert_eq!(all.len(), starts.len(), "{all:#?}");
    for (problem, start) in all.iter().zip(starts) {
        assert!(problem.starts_with(start), "{problem}");
    }
    // Reached over the network, the names clients use must be listed.
    let remote = r#""listen": "0.0.0.0:9999", "allow_remote": true"#;
    let warnings = validate(&with(remote)).unwrap().warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("allowed_hosts is empty")),
        "{warnings:?}"
    );
    let listed = format!(r#"{remote}, "allowed_hosts": ["nas.lan"]"#);
    let warnings = validate(&with(&listed)).unwrap().warnings();
    assert!(
        !warnings.iter().any(|w| w.contains("allowed_hosts")),
        "{warnings:?}"
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

#[test]
fn a_group_without_a_user_is_refused_because_it_stays_root() {
    let text = r#"{"rules": [{"name": "g", "argv": ["/bin/sh"], "group": "root"}]}"#;
    let all = problems(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(
        all[0].starts_with("rules[0].group: without \"user\" the command still runs as root"),
        "{all:?}"
    );
}

#[test]
fn umask_is_octal_text() {
    for (given, want) in [
        ("022", 0o022),
        ("0027", 0o027),
        ("7", 0o007),
        ("777", 0o777),
    ] {
        let text =
            format!(r#"{{"rules": [{{"name": "u", "argv": ["/bin/sh"], "umask": "{given}"}}]}}"#);
        assert_eq!(
            validate(&text).unwrap().rules[0].umask,
            Some(want),
            "{given}"
        );
    }
    for bad in ["", "8", "0o22", "1777", "00022", "-22", " 22"] {
        let text =
            format!(r#"{{"rules": [{{"name": "u", "argv": ["/bin/sh"], "umask": "{bad}"}}]}}"#);
        let all = problems(&text);
        assert!(
            all.len() == 1 && all[0].starts_with("rules[0].umask: is not an octal umask"),
            "{bad:?}: {all:?}"
        );
    }
    let text = r#"{"rules": [{"name": "u", "argv": ["/bin/sh"], "umask": 18}]}"#;
    assert_eq!(
        parse_err(text).path,
        "rules[0].umask",
        "a number is refused"
    );
}

#[test]
fn pattern_kinds_parse_and_validate() {
    let text = r#"{"rules": [{"name": "a", "argv": ["/bin/echo",
        {"any": true}, {"re": "^[a-z]+$"}, {"path_under": "/var/log/"}, {"int": [1, 10]}]}]}"#;
    let c = validate(text).unwrap();
    let Action::Argv { args, .. } = &c.rules[0].action else {
        panic!()
    };
    assert_eq!(args[0], ArgPattern::Any);
    assert!(matches!(&args[1], ArgPattern::Re(re) if re.source() == "^[a-z]+$"));
    assert_eq!(args[2], ArgPattern::PathUnder("/var/log".into()));
    assert_eq!(args[3], ArgPattern::Int { min: 1, max: 10 });

    let all = problems(
        r#"{"rules": [{"name": "a", "argv": ["/bin/echo",
        {"any": false}, {"re": "("}, {"path_under": "var/log"}, {"int": [10, 1]},
        {"any": true, "re": "x"}, {}, {"path_under": "/a/../b"}]}]}"#,
    );
    let expect = [
        "rules[0].argv[1]: {\"any\": false} means nothing",
        "rules[0].argv[2]: regex \"(\" ",
        "rules[0].argv[3]: path_under \"var/log\" is not an absolute path",
        "rules[0].argv[4]: int [10, 1] is an empty range",
        "rules[0].argv[5]: needs exactly one key",
        "rules[0].argv[6]: needs exactly one key",
        "rules[0].argv[7]: path_under \"/a/../b\" has an empty",
    ];
    for (got, want) in all.iter().zip(expect) {
        assert!(
            got.starts_with(want),
            "{got:?} does not start with {want:?}"
        );
    }
    assert_eq!(all.len(), expect.len(), "{all:#?}");
    let p = parse_err(r#"{"rules": [{"name": "a", "argv": ["/bin/echo", {"rex": "x"}]}]}"#);
    assert_eq!(p.path, "rules[0].argv[1].rex");
    assert!(p.message.contains("unknown field `rex`"), "{p}");
    let all = problems(r#"{"rules": [{"name": "a", "argv": [{"any": true}]}]}"#);
    assert!(all[0].starts_with("rules[0].argv[0]: must be the program's absolute path"));
}

#[test]
fn examples_are_run_through_the_matcher() {
    let text = format!(
        r#"{{"rules": [
        {{"name": "status", "argv": ["{sc}", "status", "*"],
          "examples": {{"allow": ["systemctl status nginx", ["systemctl", "status", "a b"]],
                        "deny": ["systemctl status --help", "systemctl stop nginx"]}}}},
        {{"name": "stop", "argv": ["{sc}", "stop", ["nginx"]],
          "examples": {{"allow": ["systemctl status x", "systemctl stop nginx"],
                        "deny": ["systemctl stop nginx", {{"any": true}}]}}}}
    ]}}"#,
        sc = prog("systemctl"),
    );
    let all = problems(&text);
    let expect = [
        "rules[0].examples.deny[1]: \"systemctl stop nginx\" is allowed by rule `stop`",
        "rules[1].examples.allow[0]: \"systemctl status x\" is matched first by rule `status`",
        "rules[1].examples.deny[0]: \"systemctl stop nginx\" is allowed by rule `stop`",
        "rules[1].examples.deny[1]: is an object",
    ];
    for (got, want) in all.iter().zip(expect) {
        assert!(
            got.starts_with(want),
            "{got:?} does not start with {want:?}"
        );
    }
    assert_eq!(all.len(), expect.len(), "{all:#?}");
    let all = problems(&format!(
        r#"{{"rules": [{{"name": "s", "argv": ["{}", "status", "*"],
            "examples": {{"allow": ["systemctl status -H host"]}}}}]}}"#,
        prog("systemctl")
    ));
    assert!(
        all[0].starts_with(
            "rules[0].examples.allow[0]: \"systemctl status -H host\" is refused by this rule: \
             word 2 \"-H\" does not fit \"*\""
        ),
        "{all:#?}"
    );
    // Not checked against a rule that is itself broken: its problem comes alone.
    let all = problems(
        r#"{"rules": [{"name": "s", "argv": ["/usr/bin/nosuch", "*"],
            "examples": {"allow": ["x y"]}}]}"#,
    );
    assert_eq!(all.len(), 1, "{all:#?}");
}

#[test]
fn escape_prone_programs_need_a_code_and_warn() {
    // The issue's two cases: python3 ** without a code is refused; find ** warns.
    let all = problems(&format!(
        r#"{{"rules": [{{"name": "py", "argv": ["{}", "**"], "no_pin": true}}]}}"#,
        prog("python3")
    ));
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(
        all[0].starts_with(
            "rules[0].argv[1]: rule `py` lets the caller pick argument 1 (\"**\") of python"
        ),
        "{all:#?}"
    );
    assert!(all[0].contains("remove \"no_pin\""), "{all:#?}");
    let c = validate(&format!(
        r#"{{"rules": [{{"name": "files", "argv": ["{}", "/srv", "**"]}}]}}"#,
        prog("find")
    ))
    .unwrap();
    let warnings = c.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("-exec"), "{warnings:#?}");
    // Literal-only is the owner's own command, code or not; "*" cannot be -exec.
    let c = validate(&format!(
        r#"{{"rules": [
        {{"name": "a", "argv": ["{py}", "/usr/local/lib/report.py"], "no_pin": true}},
        {{"name": "b", "argv": ["{find}", "/srv", "-name", "*"], "no_pin": true}}]}}"#,
        py = prog("python3"),
        find = prog("find")
    ))
    .unwrap();
    assert!(c.warnings().is_empty(), "{:#?}", c.warnings());
}

#[test]
fn cwd_and_notify_need_a_trusted_chain() {
    let Some(dir) = crate::sys::files::trusted_test_dir("config-chain") else {
        return;
    };
    let open = dir.join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let notify = open.join("notify");
    fs::write(&notify, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&notify, fs::Permissions::from_mode(0o755)).unwrap();
    let all = problems(&format!(
        r#"{{"notify": [{notify:?}], "rules": [{{"name": "a", "argv": ["/bin/true"], "cwd": {open:?}}}]}}"#,
        notify = notify.display().to_string(),
        open = open.display().to_string(),
    ));
    let fix = format!("run: chmod go-w {}", open.display());
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all[0].starts_with("notify[0]: ") && all[0].ends_with(&fix),
        "{all:#?}"
    );
    assert!(
        all[1].starts_with("rules[0].cwd: ") && all[1].ends_with(&fix),
        "{all:#?}"
    );
    fs::remove_dir_all(dir).unwrap();
}
