//! Jobs through the real binary: timeouts, output caps, environment, waiting.

use std::time::{Duration, Instant};

use crate::common::{Agent, Seen};
use serde_json::json;

#[test]
fn timeout_leaves_no_process_of_the_job() {
    let agent = Agent::start(
        "timeout",
        json!({"totp": {"step_s": 1}, "jobs": {"kill_grace_s": 1}}),
    );
    let started = Instant::now();
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "argv": ["sh", "-c", "sleep 300 & echo $! $(cut -d' ' -f22 /proc/$!/stat); sleep 300"], "wait": 20}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let job = r.json();
    assert_eq!(job["status"], "timed_out");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Pid and start time: the pid alone may name another process by now (pids wrap).
    let (pid, start) = job["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .split_once(' ')
        .unwrap();
    let grandchild = Seen {
        pid: pid.parse().unwrap(),
        start: start.parse().unwrap(),
    };
    assert!(
        !grandchild.alive(),
        "grandchild {} survived the timeout",
        grandchild.pid
    );
    assert!(
        agent
            .log()
            .contains(&format!("TIMEOUT [{}]", job["id"].as_str().unwrap())),
        "{}",
        agent.log()
    );
}

#[test]
fn output_over_the_cap_is_dropped_and_flagged() {
    let agent = Agent::start(
        "outcap",
        json!({"rules": [{"name": "yes", "argv": ["/usr/bin/head", "-c", "*", "/dev/zero"], "no_pin": true,
                          "max_output_bytes": 1000}]}),
    );
    let r = agent.post_json("/run", &json!({"command": "head -c 5000000 /dev/zero"}));
    assert_eq!(r.status, 200, "{}", &r.body[..200.min(r.body.len())]);
    let job = r.json();
    assert_eq!(job["truncated"], true);
    assert_eq!(job["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(job["status"], "succeeded");
}

#[test]
fn child_environment_holds_none_of_the_agents_variables() {
    let dir = crate::common::TempDir::new("env");
    let cfg = crate::common::base_config(dir.path(), json!({}));
    let agent = Agent::start_in(
        dir,
        &cfg,
        &[
            ("AGENT_MARKER", "leak"),
            ("LD_LIBRARY_PATH", "/nonexistent"),
            ("BASH_ENV", "/tmp/x"),
            ("NOTIFY_SOCKET", "/run/x"),
            ("LISTEN_FDS", "1"),
        ],
    );
    let r = agent.post_json("/run", &json!({"command": "env"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut lines: Vec<String> = r.json()["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut expected = vec![
        format!("HOME={home}"),
        "LANG=C.UTF-8".to_string(),
        "LESSSECURE=1".to_string(),
        "PAGER=cat".to_string(),
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "SYSTEMD_COLORS=0".to_string(),
        "SYSTEMD_PAGER=cat".to_string(),
        "SYSTEMD_PAGERSECURE=1".to_string(),
        "TERM=dumb".to_string(),
    ];
    expected.sort();
    assert_eq!(lines, expected);
}

#[test]
fn submit_without_wait_answers_202_then_poll_finds_the_result() {
    let agent = Agent::start("async", json!({"totp": {"step_s": 1}}));
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "command": "sleep 1", "wait": 0}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let body = r.json();
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["status"], "running");
    assert_eq!(body["poll"], format!("/job/{id}"));
    let r = agent.get(&format!("/job/{id}?wait=10"));
    assert_eq!(r.status, 200);
    let job = r.json();
    assert_eq!(job["status"], "succeeded");
    let file = job["result_file"].as_str().unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(&format!("id: {id}")), "{text}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(file).unwrap().mode() & 0o777, 0o600);
    let log = agent.log();
    for line in [
        format!("QUEUED [{id}]: sleep 1"),
        format!("EXECUTING [{id}]: sleep 1"),
        format!("RESULT [{id}] (rc=0)"),
    ] {
        assert!(log.contains(&line), "missing {line:?} in {log}");
    }
}

#[test]
fn output_held_for_history_stays_within_its_budget() {
    let dir = crate::common::TempDir::new("outbudget");
    let big = dir.path().join("big.txt");
    std::fs::write(&big, "a".repeat(1 << 20)).unwrap();
    let cfg = crate::common::base_config(
        dir.path(),
        json!({"rules": [{"name": "cat", "argv": ["/bin/cat", big.to_str().unwrap()], "no_pin": true}]}),
    );
    let agent = Agent::start_in(dir, &cfg, &[]);
    let mut ids = Vec::new();
    for _ in 0..20 {
        let r = agent.post_json(
            "/run",
            &json!({"command": format!("cat {}", big.display())}),
        );
        assert_eq!(r.status, 200);
        let job = r.json();
        assert_eq!(
            job["stdout"].as_str().unwrap().len(),
            1 << 20,
            "a fresh result is whole"
        );
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // 20 MiB of output against a 16 MiB budget: the oldest records gave theirs up...
    let oldest = agent.get(&format!("/job/{}", ids[0])).json();
    assert_eq!(oldest["stdout"], "");
    assert_eq!(oldest["truncated"], true);
    let file = std::fs::read_to_string(oldest["result_file"].as_str().unwrap()).unwrap();
    assert!(file.len() > 1 << 20, "the result file still holds it all");
    // ...and the newest keep theirs.
    let newest = agent.get(&format!("/job/{}", ids[19])).json();
    assert_eq!(newest["stdout"].as_str().unwrap().len(), 1 << 20);
    let rss = crate::common::rss_kib(agent.pid());
    let emulator = crate::common::rss_allowance_kib();
    assert!(
        rss < 40 * 1024 + emulator,
        "RSS {rss} KiB after 20 MiB of output"
    );
}
