//! The policy as its owner meets it: pattern kinds over HTTP and in `GET /rules`,
//! `check` on escape-prone programs and on examples, and `explain` (golden text).

use std::path::Path;

use crate::common::{Agent, CliRun, TempDir, base_config, run_bin, script, write_files};
use serde_json::{Value, json};

fn check(dir: &Path, cfg: &Value) -> CliRun {
    let config = write_files(dir, cfg);
    run_bin(
        &["check", "--config", &config.display().to_string()],
        "",
        &[],
    )
}

#[test]
fn every_pattern_kind_matches_and_refuses_over_http() {
    let agent = Agent::start(
        "kinds",
        json!({
            "expose_rules": true,
            "rules": [
                {"name": "unit", "argv": ["/bin/echo", "unit", {"re": "[a-z0-9@._-]{1,64}"}], "no_pin": true},
                {"name": "log", "argv": ["/bin/echo", "log", {"path_under": "/var/log"}], "no_pin": true},
                {"name": "lines", "argv": ["/bin/echo", "lines", {"int": [1, 10000]}], "no_pin": true},
                {"name": "opt", "argv": ["/bin/echo", "opt", {"any": true}], "no_pin": true},
                {"name": "word", "argv": ["/bin/echo", "word", "*"], "no_pin": true},
                {"name": "operand", "argv": ["/bin/echo", "operand", "--", "*"], "no_pin": true}
            ]
        }),
    );
    let cases: &[(&[&str], Option<&str>)] = &[
        (&["echo", "unit", "getty@tty1.service"], Some("unit")),
        (&["echo", "unit", "nginx;reboot"], None),
        (&["echo", "unit", "Nginx"], None),
        (&["echo", "unit", "nginx\n"], None),
        (&["echo", "log", "/var/log/syslog"], Some("log")),
        (&["echo", "log", "/var/log/../../etc/shadow"], None),
        (&["echo", "log", "/var/log"], None),
        (&["echo", "log", "/var/log//x"], None),
        (&["echo", "log", "/var/logs/x"], None),
        (&["echo", "lines", "10000"], Some("lines")),
        (&["echo", "lines", "10001"], None),
        (&["echo", "lines", "0"], None),
        (&["echo", "lines", "050"], None),
        (&["echo", "lines", "+5"], None),
        (&["echo", "opt", "--help"], Some("opt")),
        (&["echo", "word", "x"], Some("word")),
        (&["echo", "word", "--help"], None),
        (&["echo", "word", "-H"], None),
        (&["echo", "word", "--host=x"], None),
        (&["echo", "operand", "--", "-n"], Some("operand")),
    ];
    for (argv, rule) in cases {
        let r = agent.post_json("/run", &json!({"argv": argv}));
        match rule {
            Some(rule) => {
                assert_eq!(r.status, 200, "{argv:?}: {}", r.body);
                assert_eq!(r.json()["rule"], *rule, "{argv:?}");
            }
            // A no-code request that matches nothing looks like one that needs a code.
            None => assert_eq!(r.status, 401, "{argv:?}: {}", r.body),
        }
    }
    // GET /rules writes each kind as the config does.
    let rules = agent.get("/rules").json();
    let argv = |i: usize| rules["rules"][i]["argv"][2].clone();
    assert_eq!(argv(0), json!({"re": "[a-z0-9@._-]{1,64}"}));
    assert_eq!(argv(1), json!({"path_under": "/var/log"}));
    assert_eq!(argv(2), json!({"int": [1, 10000]}));
    assert_eq!(argv(3), json!({"any": true}));
    assert_eq!(argv(4), json!("*"));
    assert_eq!(
        rules["rules"][5]["argv"],
        json!(["/bin/echo", "operand", "--", "*"])
    );
}

#[test]
fn check_refuses_no_code_interpreters_and_warns_on_wildcard_escapes() {
    let dir = TempDir::new("escapes");
    let no_pin_python = base_config(
        dir.path(),
        json!({"rules": [{"name": "py", "argv": ["/usr/bin/python3", "**"], "no_pin": true}]}),
    );
    let run = check(dir.path(), &no_pin_python);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(
            "rules[0].argv[1]: rule `py` lets the caller pick argument 1 (\"**\") of python, \
             which reaches its escape: an interpreter runs any code"
        ),
        "{}",
        run.stderr
    );
    let find_with_code = base_config(
        dir.path(),
        json!({"rules": [{"name": "files", "argv": ["/usr/bin/find", "/srv", "**"]}]}),
    );
    let run = check(dir.path(), &find_with_code);
    assert_eq!(run.code, 0, "{run:?}");
    let warning = run
        .stderr
        .lines()
        .find(|l| l.starts_with("warning: rule `files`"))
        .unwrap_or_else(|| panic!("no warning for find:\n{}", run.stderr));
    assert!(warning.contains("-exec"), "{warning}");
    // "*" cannot be -exec, and literal-only rules are the owner's own commands.
    let safe = base_config(
        dir.path(),
        json!({"rules": [
            {"name": "names", "argv": ["/usr/bin/find", "/srv", "-name", "*"], "no_pin": true},
            {"name": "report", "argv": ["/usr/bin/python3", "/usr/local/lib/report.py"], "no_pin": true}
        ]}),
    );
    let run = check(dir.path(), &safe);
    assert_eq!(run.code, 0, "{run:?}");
    // The one warning that is the box's, not the policy's (a test machine's clock may
    // not be synchronized): any other is about these rules.
    let about_rules = (run.stderr.lines())
        .filter(|l| l.starts_with("warning") && !l.contains("system clock is not synchronized"))
        .count();
    assert_eq!(about_rules, 0, "{}", run.stderr);
}

#[test]
fn examples_that_match_wrongly_fail_check_and_serve() {
    let dir = TempDir::new("examples");
    let cfg = base_config(
        dir.path(),
        json!({"rules": [
            {"name": "echo-one", "argv": ["/bin/echo", "*"],
             "examples": {"allow": ["echo hi", ["echo", "two words"], "echo --help"],
                          "deny": ["echo a b"]}},
            {"name": "echo-two", "argv": ["/bin/echo", "*", "*"],
             "examples": {"deny": ["echo a -n"]}}
        ]}),
    );
    let run = check(dir.path(), &cfg);
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[0].ends_with(
            "rules[0].examples.allow[2]: \"echo --help\" is refused by this rule: word 1 \
             \"--help\" does not fit \"*\": it starts with \"-\" and \"*\" takes no options; \
             list the allowed values, or write {\"any\": true} if options are meant"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with("rules[0].examples.deny[0]: \"echo a b\" is allowed by rule `echo-two`"),
        "{}",
        lines[1]
    );
    let (code, err) = crate::common::serve_refused(&dir.path().join("config.json"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("examples.deny[0]"), "{err}");
}

/// `explain` with the given words; (exit code, stdout).
fn explain(config: &Path, args: &[&str]) -> CliRun {
    let config = config.display().to_string();
    run_bin(&[&["explain", "--config", &config], args].concat(), "", &[])
}

#[test]
fn explain_tells_the_story_and_runs_nothing() {
    let dir = TempDir::new("explain");
    let marker = dir.path().join("ran");
    let mark = script(dir.path(), "mark", &format!("touch {}", marker.display()));
    let cfg = base_config(
        dir.path(),
        json!({"jobs": {"kill_grace_s": 5}, "rules": [
            {"name": "disk", "argv": ["/usr/bin/df", "-h", {"path_under": "/"}], "no_pin": true},
            {"name": "usage", "argv": ["/usr/bin/du", "-sh", "--", "*"], "user": "nobody",
             "timeout_s": 30, "max_output_bytes": 4096, "env": {"LC_ALL": "C"},
             "limits": {"tasks_max": 8}, "sandbox": {"network": false, "private_tmp": true}},
            {"name": "mark", "argv": [mark], "no_pin": true}
        ]}),
    );
    let config = write_files(dir.path(), &cfg);

    let allowed = explain(&config, &["--", "du", "-sh", "--", "-odd name"]);
    assert_eq!(allowed.code, 0, "{allowed:?}");
    assert_eq!(
        allowed.stdout,
        "words: \"du\" \"-sh\" \"--\" \"-odd name\"\n\
         rule \"disk\": no, word 0 \"du\" is neither /usr/bin/df nor its file name df\n\
         rule \"usage\": matches\n\
         allowed by rule \"usage\"; needs a code: yes\n\
         may ask: anyone who reaches the agent\n\
         would run:\n  \
           argv: \"/usr/bin/du\" \"-sh\" \"--\" \"-odd name\"\n  \
           user: nobody (uid 65534, gid 65534, no supplementary groups)\n  \
           home: /nonexistent\n  \
           working directory: /\n  \
           environment: the base environment plus LC_ALL=\"C\"\n  \
           timeout: 30 s, then SIGTERM to its process group and SIGKILL 5 s later\n  \
           output kept: 4096 bytes of stdout and 4096 of stderr\n  \
           limits: 8 tasks in its own cgroup (the job is refused where the kernel cannot \
           enforce one)\n  \
           sandbox: no network (a loopback that is down); a private /tmp\n\
         nothing was run\n"
    );

    let refused = explain(&config, &["--command", "df -h --output=source"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(
        refused.stdout,
        format!(
            "words: \"df\" \"-h\" \"--output=source\"\n\
             rule \"disk\": no, word 2 \"--output=source\" does not fit {{\"path_under\":\"/\"}}: \
             it is not an absolute path\n\
             rule \"usage\": no, word 0 \"df\" is neither /usr/bin/du nor its file name du\n\
             rule \"mark\": no, word 0 \"df\" is neither {m} nor its file name mark\n\
             refused: no rule matches (the agent answers 403 not_allowed to a valid code, 401 \
             without one)\n\
             nothing was run\n",
            m = mark.display()
        )
    );

    let json_run = explain(&config, &["--json", "mark"]);
    assert_eq!(json_run.code, 0, "{json_run:?}");
    let out: Value = serde_json::from_str(&json_run.stdout).unwrap();
    assert_eq!(out["allowed"], true);
    assert_eq!(out["rule"], "mark");
    assert_eq!(out["needs_code"], false);
    assert_eq!(out["tried"][0]["matched"], false);
    assert_eq!(out["tried"][0]["position"], 0);
    assert_eq!(out["tried"][2], json!({"rule": "mark", "matched": true}));
    assert_eq!(out["run"]["argv"], json!([mark]));
    assert_eq!(out["run"]["uid"], 0);
    assert_eq!(out["run"]["timeout_s"], 600);
    // A no_pin rule is read-only, and says how to write.
    assert_eq!(out["run"]["sandbox"]["read_only"], true);
    assert_eq!(out["run"]["sandbox"]["writable"], json!([]));
    assert_eq!(out["run"]["limits"]["memory_max"], Value::Null);
    let text = explain(&config, &["mark"]).stdout;
    assert!(
        text.contains(
            "  sandbox: every mount read-only (to write, list the paths in sandbox.writable)\n"
        ),
        "{text}"
    );
    assert!(!marker.exists(), "explain ran the command");
    let refused = explain(&config, &["--json", "--command", "reboot"]);
    assert_eq!(refused.code, 1);
    let out: Value = serde_json::from_str(&refused.stdout).unwrap();
    assert_eq!(
        (out["allowed"].clone(), out["run"].clone()),
        (json!(false), Value::Null)
    );
}
