//! The human's side of held requests from the command line and SIP, against a real
//! agent: `run --request` prints the approval code and waits, `pending` shows the exact
//! command, `approve` (code on stdin) runs it once, `deny` ends it; over TCP and over
//! the agent's Unix socket.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};

use crate::common::{Agent, CliRun, Retrying, agent_command, run_bin};
use serde_json::json;

/// A `run --request` in the background, stopped at its "held" line.
struct Waiting {
    child: Child,
    stderr: BufReader<std::process::ChildStderr>,
    approval: String,
}

impl Waiting {
    fn start(agent: &[&str], command: &[&str]) -> Waiting {
        let mut child = agent_command()
            .args(["run", "--request", "--reason", "disk check"])
            .args(agent)
            .arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_retrying()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let approval = line
            .split_once("held for approval as ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no approval code in {line:?}"))
            .to_string();
        Waiting {
            child,
            stderr,
            approval,
        }
    }

    /// Exit code, stdout and the rest of stderr.
    fn finish(mut self) -> CliRun {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let mut stderr = String::new();
        self.stderr.read_to_string(&mut stderr).unwrap();
        CliRun {
            code: self.child.wait().unwrap().code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

fn agent_with_socket(tag: &str) -> (Agent, String) {
    let mut agent = Agent::prepare_in(tag, json!({}));
    let socket = agent.dir.path().join("agent.sock");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&agent.config_path).unwrap()).unwrap();
    cfg["unix_socket"] = json!({"path": socket, "mode": "0600"});
    crate::common::write_files(agent.dir.path(), &cfg);
    agent.spawn(&[]);
    (agent, socket.display().to_string())
}

#[test]
fn run_request_waits_while_pending_shows_it_and_approve_runs_it_once_over_the_socket() {
    let (agent, socket) = agent_with_socket("cli-approve");
    let at = ["--socket", socket.as_str()];
    let marker = agent.dir.path().join("ran");
    let script = format!("echo ran >> {}; echo approved; exit 3", marker.display());
    let waiting = Waiting::start(&at, &["sh", "-c", &script]);
    let a = waiting.approval.clone();

    let pending = run_bin(&[&["pending"], &at[..]].concat(), "", &[]);
    assert_eq!(pending.code, 0, "{pending:?}");
    let row = pending.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with(&a) && row.contains("root") && row.contains("sh"),
        "{pending:?}"
    );
    let argv = format!("/bin/sh -c '{script}'");
    assert!(row.ends_with(&argv), "the exact argv: {pending:?}");
    assert!(pending.stdout.contains("reason: disk check"), "{pending:?}");

    // A wrong code: refused (125), still held.
    let wrong = if agent.code() == "000000" {
        "111111"
    } else {
        "000000"
    };
    let r = run_bin(
        &[&["approve", &a, "--pin-stdin"], &at[..]].concat(),
        wrong,
        &[],
    );
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("invalid_code"), "{r:?}");

    // The right one: the command's own output and exit code, here and in the waiting run.
    let code = agent.code();
    let r = run_bin(
        &[&["approve", &a, "--pin-stdin"], &at[..]].concat(),
        &code,
        &[],
    );
    assert_eq!((r.code, r.stdout.as_str()), (3, "approved\n"), "{r:?}");
    let run = waiting.finish();
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (3, "approved\n"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&format!("sudo-agent approve {a}")),
        "{run:?}"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");

    // Decided: neither approve nor deny finds it again.
    let r = run_bin(&[&["deny", &a], &at[..]].concat(), "", &[]);
    assert_eq!(r.code, 125, "{r:?}");
    let pending = run_bin(&["pending", "--socket", &socket, "--json"], "", &[]);
    assert_eq!(pending.stdout.trim(), r#"{"pending":[]}"#);
}

#[test]
fn deny_ends_the_wait_with_125_and_nothing_runs() {
    let agent = Agent::start("cli-deny", json!({}));
    let url = agent.url("");
    let at = ["--url", url.as_str()];
    let marker = agent.dir.path().join("ran");
    let waiting = Waiting::start(&at, &["sh", "-c", &format!("echo > {}", marker.display())]);
    let r = run_bin(
        &[&["deny", &waiting.approval.to_lowercase()], &at[..]].concat(),
        "",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("denied: sh -c"), "{r:?}");
    let run = waiting.finish();
    assert_eq!(run.code, 125, "{run:?}");
    assert!(run.stderr.contains("denied"), "{run:?}");
    assert!(!marker.exists());
    // --detach returns at once: the id on stdout (the approval code on stderr), or with
    // --json the agent's answer; the request stays held.
    let r = agent.run_client(&["--request", "--detach", "--", "echo", "x"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.trim().len() == 32 && r.stderr.contains("held for approval as"),
        "{r:?}"
    );
    let r = agent.run_client(&["--request", "--detach", "--json", "--", "echo", "y"], "");
    let held: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        agent.get("/pending").json()["pending"][1]["approval"],
        held["approval"]
    );
    // Approving needs a code: without a terminal or --pin-stdin nothing is sent.
    let r = run_bin(&["approve", "XXXX", "--url", &url], "", &[]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("--pin-stdin"), "{r:?}");
}

#[test]
fn sip_messages_hold_approve_and_deny() {
    // 30 s steps, one code used: a busy machine cannot make it stale.
    let agent = Agent::start("sip-approve", json!({}));
    let sip = |text: &str| agent.run_client(&["--reply-format", "sip", "--message", text], "");
    // No code: held, and the reply says what to send.
    let r = sip("Agent: echo from the phone");
    assert_eq!(r.code, 0, "{r:?}");
    let a = r
        .stdout
        .split_once("held as ")
        .and_then(|(_, rest)| rest.split(':').next())
        .unwrap_or_else(|| panic!("{r:?}"))
        .to_string();
    assert!(
        r.stdout.contains(&format!("Agent: CODE approve {a}"))
            && r.stdout.contains(&format!("Agent: deny {a}")),
        "{r:?}"
    );
    let r = sip(&format!("Agent: {} approve {a}", agent.code()));
    assert!(r.stdout.starts_with("succeeded (rc=0): "), "{r:?}");
    assert!(r.stdout.ends_with("from the phone\n"), "{r:?}");

    let marker = agent.dir.path().join("ran");
    let r = sip(&format!("Agent: sh -c 'echo > {}'", marker.display()));
    let b = r.stdout.split_once("held as ").unwrap().1;
    let b = b.split(':').next().unwrap().to_string();
    let r = sip(&format!("Agent: deny {b}"));
    assert!(r.stdout.starts_with("denied: sh -c"), "{r:?}");
    assert!(!marker.exists());
    // no_pin rules still run at once without a code.
    let r = sip("Agent: uptime");
    assert!(r.stdout.starts_with("succeeded"), "{r:?}");
}

#[test]
fn check_warns_when_an_assistant_could_approve_its_own_requests() {
    let dir = crate::common::TempDir::new("check-approvers");
    let check = |overrides: serde_json::Value| {
        let mut cfg = crate::common::base_config(dir.path(), json!({}));
        cfg["rules"][2]["callers"] = json!({"users": ["nobody"]});
        if !overrides.is_null() {
            cfg["approvals"] = overrides;
        }
        let config = crate::common::write_files(dir.path(), &cfg);
        let r = run_bin(&["check", "--config", config.to_str().unwrap()], "", &[]);
        assert_eq!(r.code, 0, "{r:?}");
        r.stderr
    };
    let err = check(serde_json::Value::Null);
    assert!(
        err.contains("rule `echo` limits its callers but approvals.approvers is not set"),
        "{err}"
    );
    let err = check(json!({"approvers": {"users": ["nobody"]}}));
    assert!(err.contains("can approve its own requests"), "{err}");
    // The assistant asks as `nobody`, root approves: nothing to warn about.
    let err = check(json!({"approvers": {"users": ["root"]}}));
    assert!(!err.contains("approv"), "{err}");
}

#[test]
fn approve_on_a_terminal_shows_the_argv_and_reads_the_code_without_echo() {
    if !crate::common::python_has("pty", "python3 is needed to give approve a terminal") {
        return;
    }
    let agent = Agent::start("cli-approve-tty", json!({}));
    let held = agent.post_json("/request", &json!({"argv": ["echo", "approved", "a b"]}));
    let approval = held.json()["approval"].as_str().unwrap().to_string();
    let code = agent.code();
    // The parent answers the prompt at once (as a paste would) and prints the whole
    // transcript. Echo went off after the prompt before: that flushed the answer away.
    let script = r#"
import os, pty, signal, sys
signal.alarm(60)  # a prompt that never reads fails the test rather than hang it
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:-1])
seen = b""
def read():
    global seen
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        return False
    seen += chunk
    return bool(chunk)
while b"): " not in seen and read():
    pass
os.write(fd, sys.argv[-1].encode() + b"\n")
while read():
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let url = agent.url("");
    let mut args: Vec<String> = crate::common::agent_shell_command()
        .split_whitespace()
        .map(String::from)
        .collect();
    args.extend(["approve", &approval, "--url", &url].map(String::from));
    args.push(code.clone());
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&args)
        .output_retrying()
        .unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{seen}");
    assert!(
        seen.contains("code for `/bin/echo approved 'a b'`"),
        "the prompt shows the argv: {seen}"
    );
    assert!(!seen.contains(&code), "the code was echoed: {seen}");
    assert!(seen.contains("approved a b"), "{seen}");
}
