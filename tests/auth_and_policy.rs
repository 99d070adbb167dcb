//! Codes, replay, throttling and policy through the real binary.

use crate::common::{Agent, Retrying, now};
use serde_json::json;
use sudo_agent::totp;

fn fast() -> serde_json::Value {
    // One-second steps so each test can get several fresh codes quickly.
    json!({"totp": {"step_s": 1}})
}

#[test]
fn good_code_runs_and_is_never_accepted_twice() {
    let agent = Agent::start("goodcode", fast());
    let code = agent.fresh_code();
    // The second the code belongs to, taken now: under qemu the requests below can take
    // more than a step, and `now() - 1` would then be a newer, valid step.
    let used_at = now();
    let r = agent.post_json("/run", &json!({"pin": code, "command": "echo hello"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let job = r.json();
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["stdout"], "hello\n");
    assert_eq!(job["exit_code"], 0);
    assert_eq!(job["rule"], "echo");
    assert_eq!(job["argv"], json!(["/bin/echo", "hello"]));
    assert_eq!(job["id"].as_str().unwrap().len(), 32);

    let again = agent.post_json("/run", &json!({"pin": code, "command": "echo hello"}));
    assert_eq!(again.status, 401, "{}", again.body);
    assert_eq!(again.json()["error"], "invalid_code");

    // A code of an earlier step, still inside the skew window, after a newer one: refused.
    let older = totp::code_at(&agent.key, used_at - 1, &agent.params);
    let r = agent.post_json("/run", &json!({"pin": older, "command": "echo x"}));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        agent
            .log()
            .contains("REUSED PIN attempt for command: echo hello"),
        "{}",
        agent.log()
    );
}

#[test]
fn wrong_code_is_401_and_the_log_never_holds_the_code() {
    let agent = Agent::start("wrongcode", fast());
    let good = agent.code();
    let wrong = if good == "000000" { "111111" } else { "000000" };
    let r = agent.post_json("/run", &json!({"pin": wrong, "command": "echo secret-run"}));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_code");
    let log = agent.log();
    assert!(
        log.contains("INVALID PIN attempt for command: echo secret-run"),
        "{log}"
    );
    assert!(
        !log.contains(wrong),
        "the audit log must never hold the code: {log}"
    );
    // And no job ran: nothing in the results dir.
    assert_eq!(
        std::fs::read_dir(agent.dir.path().join("results"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn policy_is_checked_after_the_code() {
    let agent = Agent::start("policy", fast());
    // Without a code, a command no rule allows looks exactly like one that needs a code.
    let unknown = agent.post_json("/run", &json!({"command": "cat /etc/shadow"}));
    let needs_code = agent.post_json("/run", &json!({"command": "echo hi"}));
    assert_eq!(unknown.status, 401);
    assert_eq!(needs_code.status, 401);
    assert_eq!(unknown.json()["error"], needs_code.json()["error"]);

    // With a good code: no rule matches → 403 not_allowed, and the code is consumed.
    let code = agent.fresh_code();
    let r = agent.post_json("/run", &json!({"pin": code, "command": "cat /etc/shadow"}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "not_allowed");
    assert!(agent.log().contains("DENIED by policy"), "{}", agent.log());
    let r = agent.post_json("/run", &json!({"pin": code, "command": "echo hi"}));
    assert_eq!(
        r.status, 401,
        "a code spent on a refused command stays spent"
    );
}

#[test]
fn no_pin_rule_runs_without_a_code() {
    let agent = Agent::start("nopin", fast());
    let r = agent.post_json("/", &json!({"command": "uptime"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "succeeded");
    assert!(
        r.json()["stdout"]
            .as_str()
            .unwrap()
            .contains("load average")
    );
    // Extra arguments make it a different command: no rule, so 401 without a code.
    let r = agent.post_json("/", &json!({"command": "uptime --help"}));
    assert_eq!(r.status, 401);
}

#[test]
fn words_are_split_like_a_shell_but_never_given_to_one() {
    // Not a test of codes: a wide window, so a slow box (qemu under load) cannot turn a
    // code stale between the step it was made for and the agent's check.
    let agent = Agent::start("words", json!({"totp": {"step_s": 1, "skew": 4}}));
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "command": "echo hi | tail"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["argv"], json!(["/bin/echo", "hi", "|", "tail"]));
    assert_eq!(r.json()["stdout"], "hi | tail\n");

    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "command": r#"echo "a  b" 'c "d"' e\ f $(id) `id` ; x"#}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["stdout"], "a  b c \"d\" e f $(id) `id` ; x\n");

    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "argv": ["echo", "one arg", "'q'"]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["argv"], json!(["/bin/echo", "one arg", "'q'"]));
    assert_eq!(r.json()["stdout"], "one arg 'q'\n");
}

#[test]
fn lockout_is_429_with_retry_after_and_survives_restart() {
    let mut agent = Agent::start(
        "lockout",
        json!({"totp": {"step_s": 1}, "throttle": {"max_failures": 3, "window_s": 60, "lockout_s": 30}}),
    );
    for _ in 0..3 {
        let r = agent.post_json("/run", &json!({"pin": "000000", "command": "echo x"}));
        // 000000 might be the current code once in a million runs; either way not 429 yet.
        assert_ne!(r.status, 429);
    }
    let r = agent.post_json("/run", &json!({"pin": agent.code(), "command": "echo x"}));
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "locked_out");
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((25..=30).contains(&retry), "Retry-After {retry}");
    assert!(
        agent
            .log()
            .contains("LOCKED OUT for 30s after 3 failed codes"),
        "{}",
        agent.log()
    );
    let health = agent.get("/health").json();
    assert!(health["locked_for_s"].as_u64().unwrap() > 20, "{health}");
    // no_pin rules stay usable during a lockout: they involve no code.
    assert_eq!(
        agent
            .post_json("/run", &json!({"command": "uptime"}))
            .status,
        200
    );

    agent.kill9();
    agent.spawn(&[]);
    let r = agent.post_json("/run", &json!({"pin": agent.code(), "command": "echo x"}));
    assert_eq!(
        r.status, 429,
        "the lockout must survive a restart: {}",
        r.body
    );
}

#[test]
fn replay_is_refused_after_restart() {
    let mut agent = Agent::start("replay", json!({"totp": {"step_s": 2}}));
    let code = agent.fresh_code();
    let step = now() / 2;
    let r = agent.post_json("/run", &json!({"pin": code, "command": "echo once"}));
    assert_eq!(r.status, 200, "{}", r.body);
    stays_spent_after_sigkill(&mut agent, &code);
    let state = agent.auth_state();
    // The step of the code used (or a later one), not one measured now: a slow restart
    // must not fail this.
    assert!(state["last_step"].as_u64().unwrap() >= step, "{state}");
}

#[test]
fn code_and_verify_commands_agree_with_the_agent() {
    let agent = Agent::start("cli-code", json!({}));
    let out = crate::common::agent_command()
        .args(["code", "--config"])
        .arg(&agent.config_path)
        .output_retrying()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let expected: Vec<String> = [now() - 1, now(), now() + 1]
        .iter()
        .map(|t| totp::code_at(&agent.key, *t, &agent.params))
        .collect();
    assert!(expected.contains(&printed), "{printed} not in {expected:?}");

    let verify = |code: &str| {
        crate::common::agent_command()
            .args(["verify", code, "--config"])
            .arg(&agent.config_path)
            .status_retrying()
            .unwrap()
            .code()
    };
    assert_eq!(verify(&printed), Some(0));
    assert_eq!(verify(&printed), Some(0), "verify consumes nothing");
    assert_eq!(verify("12345"), Some(1));
}

/// A good code is synced once, with its job, in the journal: `auth.json` is not
/// rewritten for it (two more syncs an SD card would make the code wait for), unless the
/// code reset a failure count; a wrong code's failure is saved before its 401.
#[test]
fn a_good_code_leaves_auth_json_alone_unless_it_resets_failures() {
    use std::os::unix::fs::MetadataExt;
    let agent = Agent::start("auth-saves", fast());
    let path = agent.auth_state_path();
    // (inode, mtime in ns): a save is a new file renamed into place.
    let seen = || {
        std::fs::metadata(&path)
            .ok()
            .map(|m| (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
    };
    let before = seen();
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "command": "echo a"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Past the group commit (0.2 s) a save would have joined.
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(seen(), before, "auth.json was rewritten for a good code");

    let r = agent.post_json("/run", &json!({"pin": "000000", "command": "echo b"}));
    assert_eq!(r.status, 401, "{}", r.body);
    let failed = seen();
    assert!(
        failed.is_some() && failed != before,
        "a failure is saved before its 401"
    );
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "command": "echo c"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let reset = || {
        agent.auth_state()["failures"]
            .as_array()
            .is_some_and(Vec::is_empty)
    };
    assert!(
        crate::common::wait_until(std::time::Duration::from_secs(5), reset),
        "the reset failure count was not saved: {}",
        agent.auth_state()
    );
}

/// A good code spent on a command the policy refuses is in no journal line: the state
/// file keeps it, so a SIGKILL and restart do not make it valid again.
#[test]
fn a_code_spent_on_a_refused_command_stays_spent_after_sigkill() {
    let mut agent = Agent::start("spent-refused", json!({"totp": {"step_s": 2}}));
    let code = agent.fresh_code();
    let step = now() / 2;
    let r = agent.post_json(
        "/run",
        &json!({"pin": code, "command": "/bin/rm -rf /nothing"}),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let saved = || agent.auth_state()["last_step"].as_u64() >= Some(step);
    assert!(
        crate::common::wait_until(std::time::Duration::from_secs(5), saved),
        "the spent code's step was not saved"
    );
    stays_spent_after_sigkill(&mut agent, &code);
}

/// SIGKILL, restart, and `code` again for an allowed command: refused as reused.
fn stays_spent_after_sigkill(agent: &mut Agent, code: &str) {
    agent.kill9();
    agent.spawn(&[]);
    let r = agent.post_json("/run", &json!({"pin": code, "command": "echo again"}));
    assert_eq!(
        r.status, 401,
        "a used code must stay used across restarts: {}",
        r.body
    );
}

/// Sets (`Some(true)`: synchronized, so `STA_UNSYNC` cleared; `Some(false)`: set it) or
/// puts back (`None`, with `was`) the kernel's clock status, through `adjtimex`
/// (`ADJ_STATUS`, from python3: the clock itself is never touched). Synchronized also
/// sets the estimated maximum error to 0 (`ADJ_MAXERROR`): the kernel adds 500 µs to it
/// every second and sets `STA_UNSYNC` itself once it passes 16 s, as it had on this
/// machine, so the status cleared alone came back within a second (seen failing in a
/// slow full run); it is left to grow back. The status before, or `None` where this
/// cannot be done (not root, no python3).
fn clock_status(synchronized: Option<bool>, was: i32) -> Option<i32> {
    let script = r#"
import ctypes, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
STA_UNSYNC, ADJ_STATUS, ADJ_MAXERROR = 0x40, 0x10, 0x4
# struct timex (LP64): modes at 0, maxerror at 24, status at 40
tx = ctypes.create_string_buffer(512)
if libc.adjtimex(tx) < 0: sys.exit(1)
old = struct.unpack_from("i", tx, 40)[0]
want = {"sync": old & ~STA_UNSYNC, "unsync": old | STA_UNSYNC}.get(sys.argv[1])
new = int(sys.argv[2]) if want is None else want
modes = ADJ_STATUS | (ADJ_MAXERROR if sys.argv[1] == "sync" else 0)
struct.pack_into("I", tx, 0, modes)
struct.pack_into("q", tx, 24, 0)
struct.pack_into("i", tx, 40, new)
if libc.adjtimex(tx) < 0: sys.exit(1)
print(old)
"#;
    let how = match synchronized {
        Some(true) => "sync",
        Some(false) => "unsync",
        None => "restore",
    };
    let out = std::process::Command::new("python3")
        .args(["-c", script, how, &was.to_string()])
        .output_retrying()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| text.trim().parse().ok())?
}

/// Puts the kernel's clock status back when dropped, whatever a test asserted.
struct ClockStatusBack(i32);

impl Drop for ClockStatusBack {
    fn drop(&mut self) {
        clock_status(None, self.0);
    }
}

#[test]
fn a_refused_code_names_an_unsynchronized_clock_and_health_says_whether_it_is() {
    // A Pi without a real-time clock boots hours behind until NTP syncs: the owner's
    // correct codes are refused meanwhile. The 401 stays the same (a caller without
    // the code learns nothing), but the log line the owner reads says why, and so does
    // /health. Tried both ways by flipping the kernel's STA_UNSYNC, put back after.
    let Some(was) = clock_status(Some(false), 0) else {
        crate::common::skip_or_fail(
            "cannot set the clock's status (adjtimex needs root and python3)",
        );
        return;
    };
    let _back = ClockStatusBack(was);
    let agent = Agent::start("clocksync", fast());
    let wrong = |what: &str| {
        let body = json!({"pin": "000000", "command": format!("echo {what}")});
        let r = agent.post_json("/run", &body);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["error"], "invalid_code");
        assert!(!r.body.contains("clock"), "{}", r.body);
        let line = format!("INVALID PIN attempt for command: echo {what}");
        let log = agent.log();
        let said = log.lines().find(|l| l.contains(&line)).unwrap_or_default();
        (
            said.contains("the system clock is not synchronized"),
            said.to_owned(),
        )
    };
    let health = || agent.get("/health").json()["clock_synchronized"].clone();

    let (named, line) = wrong("unsynced");
    assert!(named, "{line}");
    assert!(line.contains("check: timedatectl"), "{line}");
    assert_eq!(health(), false);

    clock_status(Some(true), 0).expect("the status was just set");
    let (named, line) = wrong("synced");
    assert!(!named, "{line}");
    assert_eq!(health(), true);
}
