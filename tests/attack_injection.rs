//! Attack: reach something the policy does not name by text alone — chaining, command
//! substitution, redirections, globs, option smuggling, path tricks, look-alike letters,
//! overlong input, forged audit lines. Each payload runs (or is refused) for real and a
//! marker file that a successful injection would create is checked to be absent.

use std::fs;
use std::os::unix::fs::symlink;

use crate::common::{Agent, TempDir, base_config, script};
use serde_json::{Value, json};

/// An agent whose `echo` needs no code (so payloads can be sent without waiting for
/// codes), with stand-ins for systemctl and journalctl that print their arguments.
fn agent(tag: &str) -> Agent {
    let dir = TempDir::new(tag);
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let systemctl = script(&bin, "systemctl", r#"printf '%s\n' "$@""#);
    let journalctl = script(&bin, "journalctl", r#"printf '%s\n' "$@""#);
    let cfg = base_config(
        dir.path(),
        json!({
            "totp": {"step_s": 1},
            "throttle": {"max_failures": 100},
            "rules": [
                {"name": "echo", "argv": ["/bin/echo", "**"], "no_pin": true},
                {"name": "status-any", "argv": [systemctl, "status", "*"], "no_pin": true},
                {"name": "show-any", "argv": [systemctl, "show", {"any": true}], "no_pin": true},
                {"name": "restart-listed", "argv": [systemctl, "restart", ["nginx", "docker"]], "no_pin": true},
                {"name": "logs", "argv": [journalctl, "--no-pager", "-n", "*"], "no_pin": true},
                {"name": "true", "argv": ["/bin/true"]}
            ]
        }),
    );
    Agent::start_in(dir, &cfg, &[])
}

fn run(agent: &Agent, body: Value) -> (u16, Value) {
    let r = agent.post_json("/run", &body);
    let json = r.json();
    (r.status, json)
}

#[test]
fn shell_operators_stay_words_for_echo() {
    let agent = agent("inj-ops");
    let marker = agent.dir.path().join("PWNED");
    let m = marker.display().to_string();
    // (command, what /bin/echo must print: the words, literally)
    let cases = [
        (format!("echo a; touch {m}"), format!("a; touch {m}")),
        (format!("echo a && touch {m}"), format!("a && touch {m}")),
        (format!("echo a || touch {m}"), format!("a || touch {m}")),
        (format!("echo a | touch {m}"), format!("a | touch {m}")),
        (format!("echo `touch {m}`"), format!("`touch {m}`")),
        (format!("echo $(touch {m})"), format!("$(touch {m})")),
        (format!("echo a\ntouch {m}"), format!("a touch {m}")),
        (format!("echo a > {m}"), format!("a > {m}")),
        (format!("echo a >> {m}"), format!("a >> {m}")),
        ("echo a < /etc/shadow".into(), "a < /etc/shadow".into()),
        ("echo /etc/*".into(), "/etc/*".into()),
        (
            "echo ~root $HOME ${IFS}".into(),
            "~root $HOME ${IFS}".into(),
        ),
        (format!("echo a & touch {m}"), format!("a & touch {m}")),
        (format!("echo \"$(touch {m})\""), format!("$(touch {m})")),
    ];
    for (command, printed) in &cases {
        let (status, job) = run(&agent, json!({"command": command}));
        assert_eq!(status, 200, "{command}: {job}");
        assert_eq!(job["argv"][0], "/bin/echo", "{command}");
        assert_eq!(job["stdout"], format!("{printed}\n"), "{command}");
    }
    assert!(!marker.exists(), "an injection ran");
}

#[test]
fn chained_commands_are_refused_and_logged() {
    let agent = agent("inj-chain");
    let marker = agent.dir.path().join("PWNED");
    let m = marker.display().to_string();
    let attempts = [
        format!("touch {m}; echo hi"),
        format!("/bin/sh -c 'touch {m}'"),
        format!("sh -c 'touch {m}'"),
        format!("true; touch {m}"),
        format!("true && touch {m}"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("true\ntouch {m}"),
        format!("true `touch {m}`"),
    ];
    // Without a code: 401, the same as "needs a code", so the policy stays private.
    for command in &attempts {
        let (status, err) = run(&agent, json!({"command": command}));
        assert_eq!(status, 401, "{command}: {err}");
        assert_eq!(err["error"], "invalid_code", "{command}");
    }
    // With a valid code: 403 not_allowed, one DENIED line each.
    for command in attempts.iter().take(3) {
        let (status, err) = run(
            &agent,
            json!({"pin": agent.fresh_code(), "command": command}),
        );
        assert_eq!(status, 403, "{command}: {err}");
        assert_eq!(err["error"], "not_allowed");
    }
    assert!(!marker.exists(), "an injection ran");
    let log = agent.log();
    assert_eq!(log.matches("DENIED by policy").count(), 3, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("DENIED by policy [127.0.0.1:")
                && l.ends_with(&format!("]: touch {m}; echo hi"))),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "INVALID PIN attempt for command: true\\ntouch {m}"
        )),
        "{log}"
    );
    assert!(!log.contains("EXECUTING"), "nothing may have run: {log}");
    assert_eq!(
        fs::read_dir(agent.dir.path().join("results"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn option_smuggling_through_star_is_refused() {
    let agent = agent("inj-opts");
    // "*" is one word that is not an option: `systemctl status *` takes a unit name...
    let (status, job) = run(&agent, json!({"argv": ["systemctl", "status", "nginx"]}));
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["stdout"], "status\nnginx\n");
    // ... and nothing option-shaped (--help, -H host, --root=, a bare - or --).
    for word in ["--help", "-H", "--host=x", "--root=/tmp", "--", "-"] {
        let (status, err) = run(&agent, json!({"argv": ["systemctl", "status", word]}));
        assert_eq!(status, 401, "{word}: {err}");
    }
    // journalctl -n "*": the count slot takes no option either (`--file=`, `-o export`).
    let (status, err) = run(
        &agent,
        json!({"command": "journalctl --no-pager -n --file=/etc/shadow"}),
    );
    assert_eq!(status, 401, "{err}");
    let (status, job) = run(&agent, json!({"command": "journalctl --no-pager -n 20"}));
    assert_eq!(status, 200, "{job}");
    // Options only where the owner wrote {"any": true}.
    let (status, job) = run(&agent, json!({"argv": ["systemctl", "show", "--help"]}));
    assert_eq!((status, &job["rule"]), (200, &json!("show-any")), "{job}");
    // A list of allowed values matches nothing else.
    let (status, _) = run(&agent, json!({"argv": ["systemctl", "restart", "nginx"]}));
    assert_eq!(status, 200);
    for word in [
        "--help",
        "-H",
        "nginx;reboot",
        "nginx ",
        "NGINX",
        "docker.service",
    ] {
        let (status, err) = run(&agent, json!({"argv": ["systemctl", "restart", word]}));
        assert_eq!(status, 401, "{word}: {err}");
    }
    // One argument per "*": two words where one is allowed match nothing.
    let (status, _) = run(&agent, json!({"argv": ["systemctl", "status", "a", "b"]}));
    assert_eq!(status, 401);
    // Nothing refused was run.
    let log = agent.log();
    let ran: Vec<&str> = log.lines().filter(|l| l.contains("EXECUTING [")).collect();
    assert!(
        ran.iter().all(|l| !l.contains("status --")
            && !l.contains("status -H")
            && !l.contains("--file=")),
        "{ran:#?}"
    );
}

#[test]
fn path_tricks_and_planted_links_never_run() {
    let agent = agent("inj-path");
    let marker = agent.dir.path().join("PWNED");
    let m = marker.display().to_string();
    // A writable directory with a link named like an allowed program, pointing at a shell.
    let evil = agent.dir.path().join("evil");
    fs::create_dir(&evil).unwrap();
    symlink("/bin/sh", evil.join("echo")).unwrap();
    let planted = evil.join("echo").display().to_string();
    for argv0 in [
        "/tmp/x/../../bin/echo",
        "/bin//echo",
        "/bin/./echo",
        "./echo",
        "../bin/echo",
        planted.as_str(),
        "/usr/bin/echo", // the same program, but not the path the rule names
    ] {
        let (status, err) = run(&agent, json!({"argv": [argv0, "-c", format!("touch {m}")]}));
        assert_eq!(status, 401, "{argv0}: {err}");
    }
    // The bare name matches by file name and runs the rule's own path: never a PATH
    // lookup, so the planted link is not reached even with it first on PATH.
    let (status, job) = run(
        &agent,
        json!({"argv": ["echo", "-c", format!("touch {m}")]}),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["argv"][0], "/bin/echo");
    assert_eq!(job["stdout"], format!("-c touch {m}\n"));
    assert!(!marker.exists(), "an injection ran");
}

#[test]
fn look_alike_letters_and_overlong_input_are_refused() {
    let agent = agent("inj-unicode");
    for argv0 in [
        "\u{ff45}cho",  // fullwidth e
        "\u{0435}cho",  // Cyrillic ie
        "ech\u{03bf}",  // Greek omicron
        "echo\u{200b}", // zero-width space
        "\u{202e}ohce", // right-to-left override
        "ECHO",
        "echo ",
        " echo",
    ] {
        let (status, err) = run(&agent, json!({"argv": [argv0, "x"]}));
        assert_eq!(status, 401, "{argv0:?}: {err}");
    }
    let (status, err) = run(
        &agent,
        json!({"command": format!("echo {}", "a".repeat(4096))}),
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("bad_request")),
        "{err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("longer than 4096")
    );
    let (status, _) = run(&agent, json!({"argv": ["echo", "a".repeat(4097)]}));
    assert_eq!(status, 400);
    let many: Vec<String> = std::iter::once("echo".to_string())
        .chain((0..256).map(|i| i.to_string()))
        .collect();
    let (status, err) = run(&agent, json!({"argv": many}));
    assert_eq!(status, 400, "{err}");
    // Just inside the limits still works.
    let (status, job) = run(&agent, json!({"argv": ["echo", "a".repeat(4096)]}));
    assert_eq!(status, 200);
    assert_eq!(job["stdout"].as_str().unwrap().len(), 4097);
    let log = agent.log();
    assert!(
        log.lines()
            .any(|l| l.contains("BAD REQUEST from 127.0.0.1:")
                && l.ends_with(": command is longer than 4096 bytes")),
        "{log}"
    );
}

#[test]
fn control_characters_cannot_forge_audit_lines() {
    let agent = agent("inj-log");
    let forged = "RESULT [00000000000000000000000000000000] (rc=0): forged";
    let (status, _) = run(
        &agent,
        json!({"argv": ["echo", format!("x\n{forged}\r\n")]}),
    );
    assert_eq!(status, 200);
    let (status, _) = run(&agent, json!({"command": format!("cat x\n{forged}")}));
    assert_eq!(status, 401);
    let log = agent.log();
    assert!(
        log.lines()
            .all(|l| !l.starts_with("RESULT [0000") && !l.contains("] RESULT [0000")),
        "{log}"
    );
    assert!(
        log.lines().all(|l| !l.trim_start().starts_with(forged)),
        "{log}"
    );
}
