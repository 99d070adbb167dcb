//! `sudo-agent run` against a real agent: output as it was, every exit code, `--detach`,
//! `--wait`, `--json`, `--pin-stdin` and the SIP message flow end to end.

use std::time::{Duration, Instant};

use crate::common::{Agent, free_port, read_message};
use serde_json::{Value, json};

fn fast(tag: &str) -> Agent {
    // One-second steps so each run gets a fresh code quickly; a short kill grace keeps
    // the timeout case short.
    Agent::start(
        tag,
        json!({"totp": {"step_s": 1}, "jobs": {"kill_grace_s": 1}}),
    )
}

#[test]
fn remote_output_and_exit_code_pass_through() {
    let agent = fast("run-rc");
    let r = agent.run_client(
        &[
            "--pin",
            &agent.fresh_code(),
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        "",
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");

    // A no_pin rule needs no code; stdin is not a terminal, so nothing is asked.
    let r = agent.run_client(&["uptime"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("load average"), "{r:?}");
}

#[test]
fn each_refusal_has_its_own_exit_code() {
    let agent = fast("run-refusals");
    let good = agent.code();
    let wrong = if good == "000000" { "111111" } else { "000000" };
    let r = agent.run_client(&["--pin", wrong, "--", "echo", "hi"], "");
    assert_eq!(r.code, 125, "wrong code: {r:?}");
    assert!(r.stderr.contains("invalid_code"), "{r:?}");

    let r = agent.run_client(
        &["--pin", &agent.fresh_code(), "--", "cat", "/etc/shadow"],
        "",
    );
    assert_eq!(r.code, 126, "not allowed: {r:?}");
    assert!(r.stderr.contains("not_allowed"), "{r:?}");

    let started = Instant::now();
    let r = agent.run_client(
        &["--pin", &agent.fresh_code(), "--", "sh", "-c", "sleep 30"],
        "",
    );
    assert_eq!(r.code, 124, "timed out on the agent: {r:?}");
    assert!(r.stderr.contains("timed_out"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let r = crate::common::run_bin(&["run", "--url", &nowhere, "--", "true"], "", &[]);
    assert_eq!(r.code, 127, "unreachable: {r:?}");
    assert!(r.stderr.contains("cannot reach the agent"), "{r:?}");

    let r = crate::common::run_bin(&["run", "--wait", "soon", "--", "true"], "", &[]);
    assert_eq!(r.code, 2, "usage: {r:?}");
}

#[test]
fn detach_returns_the_id_at_once_and_wait_gives_up_with_124() {
    let agent = fast("run-detach");
    // Timed from after the wait for a fresh code (up to a whole 1 s step), which is not
    // the client's; under qemu-user the two together came near the bound.
    let code = agent.fresh_code();
    let started = Instant::now();
    let r = agent.run_client(&["--detach", "--pin", &code, "--", "sleep", "2"], "");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    let id = r.stdout.trim().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{r:?}"
    );
    let job = agent.get(&format!("/job/{id}?wait=10")).json();
    assert_eq!(job["status"], "succeeded");

    let r = agent.run_client(
        &[
            "--wait",
            "1",
            "--pin",
            &agent.fresh_code(),
            "--",
            "sleep",
            "3",
        ],
        "",
    );
    assert_eq!(r.code, 124, "{r:?}");
    assert!(r.stderr.contains("still running"), "{r:?}");
}

#[test]
fn json_output_pin_from_stdin_and_the_two_command_forms() {
    let agent = fast("run-forms");
    // One word holding spaces is a command line the agent splits (quotes and all)...
    let code = format!("{}\n", agent.fresh_code());
    let r = agent.run_client(&["--pin-stdin", "--json", "--", "echo 'a  b'   c"], &code);
    assert_eq!(r.code, 0, "{r:?}");
    let job: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(job["stdout"], "a  b c\n");
    assert_eq!(job["argv"], json!(["/bin/echo", "a  b", "c"]));
    // ...several words are argv, never split again.
    let r = agent.run_client(&["--pin", &agent.fresh_code(), "--", "echo", "x  'y'"], "");
    assert_eq!(r.stdout, "x  'y'\n", "{r:?}");
    // A refusal in --json is the agent's error body plus its status.
    let r = agent.run_client(&["--json", "--", "echo", "no code"], "");
    assert_eq!(r.code, 125);
    let body: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (body["status"].as_u64(), body["error"].as_str()),
        (Some(401), Some("invalid_code"))
    );
}

#[test]
fn sip_message_gets_one_short_reply_naming_the_result_file() {
    let agent = fast("run-sip");
    let message = format!("agent:   {}   sh -c 'seq 1 2000'", agent.fresh_code());
    let r = agent.run_client(&["--message", &message, "--reply-format", "sip"], "");
    assert_eq!(r.code, 0, "{r:?}");
    let reply = r.stdout.trim_end();
    assert!(
        reply.len() <= sudo_agent::testing::SIP_MAX_REPLY,
        "{} bytes",
        reply.len()
    );
    assert!(
        reply.starts_with("succeeded (rc=0): sh -c 'seq 1 2000'\n1\n2\n3\n"),
        "{reply}"
    );
    let file = reply
        .rsplit_once("… full result in ")
        .map(|(_, f)| f)
        .unwrap_or_else(|| panic!("no result file named: {reply}"));
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains("\n2000\n"), "{text}");

    // Refusals and unparsable messages are replies too, so the phone sees why.
    let wrong = if agent.code() == "000000" {
        "111111"
    } else {
        "000000"
    };
    let message = format!("Agent: {wrong} echo hi");
    let r = agent.run_client(&["--message", &message, "--reply-format", "sip"], "");
    assert_eq!(r.code, 125);
    assert!(r.stdout.starts_with("refused (invalid_code)"), "{r:?}");
    let r = agent.run_client(&["--message", "hello there", "--reply-format", "sip"], "");
    assert_eq!(r.code, 125);
    assert!(r.stdout.contains("Agent: CODE COMMAND"), "{r:?}");
}

/// The agent answers a `wait: 0` submission with 200 and the whole record when the job
/// had ended by the time its submission was on disk (a busy box). `--detach` still
/// prints only the id: scripts capture it with `$(...)`. The answer is the real agent's,
/// served again by a one-shot stand-in, since the race cannot be won on demand.
#[test]
fn detach_prints_the_id_when_the_job_had_already_ended() {
    use std::io::Write;
    let agent = fast("run-detach-ended");
    let r = agent.post_json("/run", &json!({"argv": ["uptime"]}));
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let body = r.body.clone();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (head, sent) = read_message(&mut conn, false).expect("no whole request came");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(answer.as_bytes()).unwrap();
        conn.write_all(body.as_bytes()).unwrap();
        format!("{head}{}", String::from_utf8_lossy(&sent))
    });
    let r = crate::common::run_bin(&["run", "--url", &url, "--detach", "--", "uptime"], "", &[]);
    let request = server.join().unwrap();
    assert!(request.contains("\"wait\":0"), "{request}");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), id, "{r:?}");
}
