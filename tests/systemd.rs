//! Life under systemd through the real binary: a socket passed as fd 3, READY=1 and
//! WATCHDOG=1 on a notification socket the test binds, and exit when idle.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::{Agent, Retrying, TempDir, alive, base_config};
use serde_json::json;

fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// Waits up to `limit` for the agent to exit; its exit code, or None if still running.
fn exit_within(agent: &mut Agent, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
            agent.child = None;
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn serves_the_socket_systemd_passes_as_fd_3_and_jobs_do_not_inherit_it() {
    let dir = TempDir::new("activated");
    // The config's own listen address is not used: the socket unit decides.
    let cfg = base_config(
        dir.path(),
        json!({"rules": [{"name": "fds", "argv": ["/usr/bin/find", "/proc/self/fd/", "-lname", "*"], "no_pin": true},
                         {"name": "env", "argv": ["/usr/bin/env"], "no_pin": true}]}),
    );
    let listener = loopback_listener();
    let addr = listener.local_addr().unwrap();
    // What /proc shows for a descriptor of this very socket, "socket:[inode]", as a
    // find -lname pattern ('[' would start a character class; '?' matches it).
    let socket_link = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd()))
        .unwrap()
        .to_string_lossy()
        .replace(['[', ']'], "?");
    let notify = dir.path().join("notify");
    let _systemd = UnixDatagram::bind(&notify).unwrap();
    let agent = Agent::start_activated(
        dir,
        &cfg,
        listener,
        &[
            ("NOTIFY_SOCKET", notify.to_str().unwrap()),
            ("WATCHDOG_USEC", "30000000"),
            ("LISTEN_FDNAMES", "sudo-agent.socket"),
        ],
    );
    assert_eq!(agent.addr, addr, "serves the passed socket");
    assert!(
        agent.log().contains("socket from systemd"),
        "{}",
        agent.log()
    );
    assert!(agent.health_ok());

    // fd 3 is close-on-exec: no descriptor of a job is the listening socket.
    let r = agent.post_json(
        "/run",
        &json!({"argv": ["find", "/proc/self/fd/", "-lname", socket_link]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "succeeded", "{}", r.body);
    assert_eq!(
        r.json()["stdout"],
        "",
        "a job inherited the socket: {}",
        r.body
    );

    // Children never see systemd's variables.
    let r = agent.post_json("/run", &json!({"command": "env"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let env = r.json()["stdout"].as_str().unwrap().to_string();
    for name in ["LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_"] {
        assert!(!env.contains(name), "{name} leaked into a job:\n{env}");
    }
    assert!(env.contains("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), "{env}");
}

#[test]
fn a_passed_socket_meant_for_another_pid_is_ignored() {
    let dir = TempDir::new("notourpid");
    let cfg = base_config(dir.path(), json!({}));
    // LISTEN_PID names another process (as when a child inherits it): bind "listen".
    let agent = Agent::start_in(dir, &cfg, &[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")]);
    assert!(
        !agent.log().contains("socket from systemd"),
        "{}",
        agent.log()
    );
    assert!(agent.health_ok());
}

#[test]
fn a_non_loopback_socket_from_systemd_is_refused() {
    // 0.0.0.0 is what a socket unit with a bare `ListenStream=9999` gives.
    let dir = TempDir::new("remotesock");
    let cfg = base_config(dir.path(), json!({}));
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let agent = Agent::prepare(dir, &cfg);
    let mut child = crate::common::activated_command(listener)
        .args(["serve", "--config"])
        .arg(&agent.config_path)
        .stderr(std::process::Stdio::piped())
        .spawn_retrying()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("not a loopback address") && err.contains("ListenStream=127.0.0.1:9999"),
        "{err}"
    );
    assert!(!agent.log().contains("LISTENING"), "{}", agent.log());
}

/// Every datagram that arrives within `limit`, until `enough` says stop.
fn collect(
    socket: &UnixDatagram,
    limit: Duration,
    enough: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !enough(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    got
}

#[test]
fn tells_systemd_ready_then_pings_the_watchdog_then_stopping() {
    let dir = TempDir::new("notify");
    let cfg = base_config(dir.path(), json!({}));
    let path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&path).unwrap();
    // WatchdogSec=2: a ping at least every second.
    let mut agent = Agent::start_in(
        dir,
        &cfg,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let watchdogs = |got: &[String]| got.iter().filter(|m| *m == "WATCHDOG=1").count();
    let got = collect(&systemd, Duration::from_secs(6), |got| watchdogs(got) >= 3);
    assert_eq!(
        got.first().map(String::as_str),
        Some(format!("READY=1\nSTATUS=listening on {}", agent.addr).as_str()),
        "{got:?}"
    );
    assert!(watchdogs(&got) >= 3, "{got:?}");
    assert!(agent.health_ok());
    assert!(agent.terminate().success());
    let got = collect(&systemd, Duration::from_secs(3), |got| {
        got.iter().any(|m| m == "STOPPING=1")
    });
    assert!(got.iter().any(|m| m == "STOPPING=1"), "{got:?}");
}

#[test]
fn no_watchdog_pings_when_watchdog_pid_is_another_process() {
    let dir = TempDir::new("notifyother");
    let cfg = base_config(dir.path(), json!({}));
    let path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&path).unwrap();
    let _agent = Agent::start_in(
        dir,
        &cfg,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    let got = collect(&systemd, Duration::from_millis(2500), |_| false);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("READY=1\n"), "{got:?}");
}

#[test]
fn exits_when_idle_with_socket_activation_and_the_next_start_answers() {
    let dir = TempDir::new("idle");
    let cfg = base_config(dir.path(), json!({"idle_exit_s": 1, "totp": {"step_s": 1}}));
    let listener = loopback_listener();
    // systemd keeps its copy of the socket while the service is stopped.
    let kept = listener.try_clone().unwrap();
    let mut agent = Agent::start_activated(dir, &cfg, listener, &[]);
    let pid = agent.pid();

    // A running job keeps it alive past idle_exit_s. (Connection: close, because an
    // open keep-alive connection also counts as not idle.) Connected before waiting for
    // a fresh code, which takes up to a step: an agent left idle that long would exit.
    let mut stream = TcpStream::connect(agent.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = json!({"pin": agent.fresh_code(), "argv": ["sleep", "2"], "wait": 0}).to_string();
    let request = format!(
        "POST /run HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alive(pid), "exited while a job was running");

    let code = exit_within(&mut agent, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", agent.stderr());
    let log = agent.log();
    assert!(log.contains("IDLE for 1 s"), "{log}");
    assert!(log.contains("RESULT ["), "the job finished first: {log}");

    // A request that arrives while it is stopped waits in the socket's queue and is
    // answered by the next start, as systemd would start it.
    let addr = kept.local_addr().unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    agent.spawn_activated(kept, &[]);
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[test]
fn idle_exit_needs_socket_activation() {
    let dir = TempDir::new("idlebound");
    let cfg = base_config(dir.path(), json!({"idle_exit_s": 1}));
    let mut agent = Agent::start_in(dir, &cfg, &[]);
    assert_eq!(exit_within(&mut agent, Duration::from_secs(3)), None);
    assert!(agent.health_ok());
    assert!(
        agent
            .stderr()
            .contains("idle_exit_s is ignored without socket activation"),
        "{}",
        agent.stderr()
    );
}
