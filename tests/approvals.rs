//! Requests held for a human: `/request` holds, `approvals.notify` tells, `/approve`
//! runs exactly that job with a fresh code, `/deny` and expiry end it, and a restart
//! keeps it (or expires it, if its time ran out while the agent was down).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Agent, TempDir, base_config, emulated, now, wait_until, write_files};

/// The test's own caller over TCP: root, as the kernel's socket table says; under
/// qemu-user, which passes no `NETLINK_SOCK_DIAG`, not known. (JSON, `CALLER`, audit.)
fn tcp_root() -> (Value, &'static str, &'static str) {
    if emulated() {
        eprintln!("NOTE: under qemu-user the TCP caller is unknown (no NETLINK_SOCK_DIAG)");
        let json = json!({"via": "tcp", "uid": null, "user": null});
        return (json, "unknown", "tcp:unknown");
    }
    let json = json!({"via": "tcp", "uid": 0, "user": "root"});
    (json, "root", "tcp:root(0)")
}

/// An agent whose held requests run `approvals.notify` (a script writing its
/// environment to `notified/<JOB_ID>`), with `approvals` merged over that.
fn agent_with_notify(tag: &str, approvals: Value) -> Agent {
    let dir = TempDir::new(tag);
    let out = dir.path().join("notified");
    std::fs::create_dir(&out).unwrap();
    let script = dir.path().join("notify.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv | sort > '{0}/'\"$JOB_ID\".tmp && mv '{0}/'\"$JOB_ID\".tmp '{0}/'\"$JOB_ID\"\n",
            out.display()
        ),
    )
    .unwrap();
    let mut approvals = approvals;
    approvals["notify"] = json!(["/bin/sh", script]);
    let cfg = base_config(dir.path(), json!({"approvals": approvals}));
    Agent::start_in(dir, &cfg, &[])
}

/// Holds `command` (with `reason`); the 202's body.
fn hold(agent: &Agent, command: &str, reason: Option<&str>) -> Value {
    let reply = agent.post_json("/request", &json!({"command": command, "reason": reason}));
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.json()
}

fn status_of_job(agent: &Agent, id: &str) -> Value {
    agent.get(&format!("/job/{id}")).json()["status"].clone()
}

/// The notify environment for job `id`, once written.
fn notified(agent: &Agent, id: &str) -> Vec<(String, String)> {
    let path = agent.dir.path().join("notified").join(id);
    assert!(
        wait_until(Duration::from_secs(10), || path.exists()),
        "approvals.notify did not run: {}",
        agent.log()
    );
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn held_then_notified_then_approved_runs_once() {
    let agent = agent_with_notify("held-approve", json!({"ttl_s": 120}));
    let before = now();
    let held = hold(&agent, "echo hello there", Some("clean up the disk"));
    let (id, code) = (
        held["id"].as_str().unwrap(),
        held["approval"].as_str().unwrap(),
    );
    assert_eq!(held["status"], "awaiting_approval");
    assert_eq!(held["poll"], format!("/job/{id}"));
    assert_eq!(
        agent.get(&format!("/job/{id}")).json()["status"],
        "awaiting_approval"
    );
    assert_eq!(code.len(), 4);
    assert!(
        code.bytes()
            .all(|b| b"ACDEFGHJKMNPQRTUVWXY3479".contains(&b)),
        "{code}"
    );
    let expires = held["expires_at"].as_u64().unwrap();
    assert!((before + 119..=now() + 121).contains(&expires), "{expires}");

    let env = notified(&agent, id);
    let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(var("APPROVAL"), Some(code));
    assert_eq!(var("JOB_ID"), Some(id));
    assert_eq!(var("COMMAND"), Some("echo hello there"));
    assert_eq!(var("RULE"), Some("echo"));
    let (root, root_name, root_audit) = tcp_root();
    assert_eq!(var("CALLER"), Some(root_name));
    assert_eq!(var("REASON"), Some("clean up the disk"));
    assert_eq!(var("EXPIRES_AT"), Some(expires.to_string().as_str()));

    // Held: visible as a job and in /pending, with who asked; nothing ran.
    let job = agent.get(&format!("/job/{id}")).json();
    assert_eq!(job["status"], "awaiting_approval");
    assert_eq!(job["caller"], root);
    assert_eq!(job["approval"], code);
    let pending = agent.get("/pending").json();
    let entry = &pending["pending"][0];
    assert_eq!(entry["id"], id);
    assert_eq!(entry["argv"], json!(["/bin/echo", "hello", "there"]));
    assert_eq!(entry["reason"], "clean up the disk");
    assert_eq!(entry["rule"], "echo");
    assert!(entry["submitted_at"].as_u64().unwrap() >= before);
    assert!(!agent.log().contains(&format!("EXECUTING [{id}]")));

    // Typed back in lower case, with a fresh code: runs, answered as /run is.
    let pin = agent.fresh_code();
    let done = agent.post_json(
        "/approve",
        &json!({"approval": code.to_lowercase(), "pin": pin}),
    );
    assert_eq!(done.status, 200, "{}", done.body);
    let done = done.json();
    assert_eq!(done["id"], id);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["stdout"], "hello there\n");

    // Once: the code is gone, the job ran once.
    let again = agent.post_json(
        "/approve",
        &json!({"approval": code, "pin": agent.fresh_code()}),
    );
    assert_eq!(again.status, 404, "{}", again.body);
    assert_eq!(agent.get("/pending").json()["pending"], json!([]));
    let log = agent.log();
    assert_eq!(
        log.matches(&format!("EXECUTING [{id}]")).count(),
        1,
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "REQUESTED [{id}] approval={code} rule=echo caller={root_audit}"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "APPROVED [{id}] approval={code} caller={root_audit}"
        )),
        "{log}"
    );
    assert!(!log.contains(&pin), "a TOTP code reached the log");
}

#[test]
fn one_code_approves_one_request_and_a_wrong_one_keeps_it_held() {
    let agent = Agent::start(
        "held-one-code",
        json!({"throttle": {"max_failures": 3, "window_s": 600, "lockout_s": 600, "lockout_max_s": 600}}),
    );
    let a = hold(&agent, "echo a", None);
    let b = hold(&agent, "echo b", None);
    assert_ne!(
        a["approval"], b["approval"],
        "codes are unique among held requests"
    );
    let pin = agent.fresh_code();
    let ok = agent.post_json("/approve", &json!({"approval": a["approval"], "pin": pin}));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let reused = agent.post_json("/approve", &json!({"approval": b["approval"], "pin": pin}));
    assert_eq!(reused.status, 401, "{}", reused.body);
    assert_eq!(reused.json()["error"], "invalid_code");
    let b_id = b["id"].as_str().unwrap();
    assert_eq!(status_of_job(&agent, b_id), "awaiting_approval");

    // Wrong codes: held still, and they count toward the lockout like any other.
    let wrong = agent.post_json(
        "/approve",
        &json!({"approval": b["approval"], "pin": "000000"}),
    );
    assert_eq!(wrong.status, 401);
    let wrong = agent.post_json(
        "/approve",
        &json!({"approval": b["approval"], "pin": "000001"}),
    );
    assert!([401, 429].contains(&wrong.status), "{}", wrong.body);
    let locked = agent.post_json(
        "/approve",
        &json!({"approval": b["approval"], "pin": agent.fresh_code()}),
    );
    assert_eq!(locked.status, 429, "{}", locked.body);
    let run = agent.post_json("/run", &json!({"command": "echo x", "pin": agent.code()}));
    assert_eq!(
        run.status, 429,
        "the lockout is the agent's, not the route's"
    );
    assert_eq!(status_of_job(&agent, b_id), "awaiting_approval");
    assert!(!agent.log().contains(&format!("EXECUTING [{b_id}]")));
}

#[test]
fn held_requests_expire_and_long_polls_wake() {
    let agent = Agent::start("held-expire", json!({"approvals": {"ttl_s": 1}}));
    let held = hold(&agent, "echo late", None);
    let id = held["id"].as_str().unwrap();
    let started = Instant::now();
    let polled = agent.get(&format!("/job/{id}?wait=30")).json();
    assert_eq!(polled["status"], "expired", "{polled}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let code = held["approval"].as_str().unwrap();
    assert!(
        agent
            .log()
            .contains(&format!("EXPIRED [{id}] approval={code}"))
    );
    let late = agent.post_json(
        "/approve",
        &json!({"approval": code, "pin": agent.fresh_code()}),
    );
    assert_eq!(late.status, 404, "{}", late.body);
    assert!(!agent.log().contains(&format!("EXECUTING [{id}]")));
}

#[test]
fn deny_ends_it_and_max_pending_bounds_what_is_held() {
    let agent = Agent::start("held-deny", json!({"approvals": {"max_pending": 2}}));
    let a = hold(&agent, "echo a", None);
    hold(&agent, "echo b", None);
    let full = agent.post_json("/request", &json!({"command": "echo c"}));
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.json()["error"], "busy");

    let denied = agent.post_json("/deny", &json!({"approval": a["approval"]}));
    assert_eq!(denied.status, 200, "{}", denied.body);
    let id = a["id"].as_str().unwrap();
    assert_eq!(denied.json()["status"], "denied");
    assert_eq!(status_of_job(&agent, id), "denied");
    let code = a["approval"].as_str().unwrap();
    assert!(
        agent
            .log()
            .contains(&format!("DENIED [{id}] approval={code}"))
    );
    let twice = agent.post_json("/deny", &json!({"approval": code}));
    assert_eq!(twice.status, 404);
    let late = agent.post_json(
        "/approve",
        &json!({"approval": code, "pin": agent.fresh_code()}),
    );
    assert_eq!(late.status, 404);
    // Room again.
    hold(&agent, "echo c", None);
    assert_eq!(
        agent.get("/pending").json()["pending"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn no_rule_holds_nothing_and_no_pin_runs_at_once() {
    let agent = Agent::start("held-policy", json!({}));
    let refused = agent.post_json("/request", &json!({"command": "rm -rf /"}));
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["error"], "not_allowed");
    let now = agent.post_json("/request", &json!({"argv": ["uptime"]}));
    assert_eq!(now.status, 200, "{}", now.body);
    assert_eq!(now.json()["status"], "succeeded");
    let long = "x".repeat(257);
    let too_long = agent.post_json("/request", &json!({"command": "echo a", "reason": long}));
    assert_eq!(too_long.status, 400);
    // A code sent along with a request is refused and spent: it went astray.
    let pin = agent.fresh_code();
    let astray = agent.post_json("/request", &json!({"command": "echo a", "pin": pin}));
    assert_eq!(astray.status, 400, "{}", astray.body);
    let spent = agent.post_json("/run", &json!({"command": "echo a", "pin": pin}));
    assert_eq!(spent.status, 401, "{}", spent.body);
    assert_eq!(agent.get("/pending").json()["pending"], json!([]));
}

#[test]
fn a_restart_keeps_held_requests_until_they_expire() {
    let mut agent = Agent::start("held-restart", json!({"approvals": {"ttl_s": 600}}));
    let kept = hold(&agent, "echo survived", Some("after a crash"));
    let id = kept["id"].as_str().unwrap().to_string();
    agent.kill9();
    agent.spawn(&[]);
    assert_eq!(status_of_job(&agent, &id), "awaiting_approval");
    let pending = agent.get("/pending").json();
    assert_eq!(pending["pending"][0]["id"], id.as_str());
    assert_eq!(pending["pending"][0]["reason"], "after a crash");
    let ok = agent.post_json(
        "/approve",
        &json!({"approval": kept["approval"], "pin": agent.fresh_code()}),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["stdout"], "survived\n");

    // Held with 1 s to live; the agent is down when it runs out.
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&agent.config_path).unwrap()).unwrap();
    cfg["approvals"]["ttl_s"] = json!(1);
    write_files(agent.dir.path(), &cfg);
    agent.terminate();
    agent.spawn(&[]);
    let lost = hold(&agent, "echo lost", None);
    let lost_id = lost["id"].as_str().unwrap().to_string();
    agent.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    agent.spawn(&[]);
    assert_eq!(status_of_job(&agent, &lost_id), "expired");
    assert!(agent.log().contains(&format!("EXPIRED [{lost_id}]")));
    assert_eq!(agent.get("/pending").json()["pending"], json!([]));
}
