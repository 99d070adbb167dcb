//! Who is asking, from the kernel: a client that drops to `nobody` reads uid 65534 over
//! TCP (the owner of its socket in the kernel's table) and over the Unix socket
//! (`SO_PEERCRED`); `callers` limits who may ask for a rule on every route, and
//! `approvals.approvers` who may approve, deny or list, whatever the request says.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{Agent, TempDir, base_config, emulated, fixture_base, status_of};

/// Where root's own requests go: TCP, unless under qemu-user, which passes no
/// `NETLINK_SOCK_DIAG` (there a TCP caller is unknown, so root goes by the Unix socket).
fn root_target(tcp: &str, unix: &str) -> String {
    if emulated() {
        eprintln!("NOTE: under qemu-user the TCP caller is unknown (no NETLINK_SOCK_DIAG)");
        return unix.to_string();
    }
    tcp.to_string()
}

/// `nobody` as the agent should see it over `via`.
fn nobody_via(via: &str) -> Value {
    match via {
        "tcp" if emulated() => json!({"via": "tcp", "uid": null, "user": null}),
        _ => json!({"via": via, "uid": 65534, "user": "nobody"}),
    }
}

/// Sends one HTTP request over TCP (`host:port`) or a Unix socket (a path), as `nobody`
/// (setgroups, setgid, setuid 65534 before the socket is made) or as root; prints the
/// raw answer.
const CLIENT: &str = r#"
import os, socket, sys, encodings.idna
target, method, path, body, who = sys.argv[1:6]
# Everything it needs is loaded before it drops: nobody cannot read root's Python.
if who == "nobody":
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
if target.startswith("/"):
    s = socket.socket(socket.AF_UNIX); s.connect(target)
else:
    host, port = target.rsplit(":", 1); s = socket.socket(); s.connect((host, int(port)))
data = body.encode()
s.sendall(("%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           "Content-Length: %d\r\nConnection: close\r\n\r\n" % (method, path, len(data))).encode() + data)
out = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    out += chunk
sys.stdout.write(out.decode("utf-8", "replace"))
"#;

/// (status, JSON body) of one request sent by [`CLIENT`].
fn ask(target: &str, method: &str, path: &str, body: &Value, who: &str) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let out = Command::new("python3")
        .args(["-c", CLIENT, target, method, path, &body, who])
        .output()
        .expect("python3 runs");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = raw
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status_of(&raw), json)
}

/// A directory anyone may enter (the test dir itself is private), removed on drop.
struct OpenDir(PathBuf);

impl OpenDir {
    fn new(tag: &str) -> OpenDir {
        let dir = fixture_base().join(format!("sock-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        OpenDir(dir)
    }
}

impl Drop for OpenDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn skip_without_root() -> bool {
    if is_root() {
        return false;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "callers tests need root"
    );
    eprintln!("SKIPPED: dropping to nobody needs root");
    true
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn agent(tag: &str, sock: &Path, overrides: Value) -> Agent {
    let dir = TempDir::new(tag);
    let mut over = json!({
        "unix_socket": {"path": sock, "mode": "0666"},
        "approvals": {"approvers": {"users": ["root"]}}
    });
    crate::common::merge(&mut over, overrides);
    let cfg = base_config(dir.path(), over);
    Agent::start_in(dir, &cfg, &[])
}

#[test]
fn nobody_can_ask_but_never_approve_over_tcp_or_the_unix_socket() {
    if skip_without_root() {
        return;
    }
    let open = OpenDir::new("approvers");
    let sock = open.0.join("agent.sock");
    let agent = agent("callers-approvers", &sock, json!({}));
    let meta = fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);
    let tcp = agent.addr.to_string();
    let unix = sock.to_str().unwrap().to_string();
    let root = root_target(&tcp, &unix);

    let mut held = Vec::new();
    for (target, via) in [(&tcp, "tcp"), (&unix, "unix")] {
        let (status, body) = ask(
            target,
            "POST",
            "/request",
            &json!({"command": "echo hi"}),
            "nobody",
        );
        assert_eq!(status, 202, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        let job = agent.get(&format!("/job/{id}")).json();
        assert_eq!(job["caller"], nobody_via(via), "{via}");
        held.push((id, body["approval"].as_str().unwrap().to_string()));
    }
    assert!(agent.log().contains("caller=unix:nobody(65534)"));

    // The assistant (here: nobody) holds a good code it read somewhere: still refused,
    // on both listeners, for approve, deny and the list.
    for (target, then) in [(&tcp, 200), (&unix, 404)] {
        let pin = agent.fresh_code();
        let body = json!({"approval": held[0].1, "pin": pin});
        let (status, answer) = ask(target, "POST", "/approve", &body, "nobody");
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["error"], "forbidden");
        let (status, _) = ask(
            target,
            "POST",
            "/deny",
            &json!({"approval": held[0].1}),
            "nobody",
        );
        assert_eq!(status, 403);
        let (status, _) = ask(target, "GET", "/pending", &Value::Null, "nobody");
        assert_eq!(status, 403);
        // ... and that code was never spent: root uses it (the TOTP code is checked
        // first, so a 404 for the request approved in the first round says so too).
        let body = json!({"approval": held[0].1, "pin": pin});
        let (status, answer) = ask(&root, "POST", "/approve", &body, "root");
        assert_eq!(status, then, "{answer}");
    }
    assert_eq!(
        agent.get(&format!("/job/{}", held[0].0)).json()["status"],
        "succeeded"
    );

    // Root over the Unix socket is an approver too.
    let body = json!({"approval": held[1].1, "pin": agent.fresh_code()});
    let (status, answer) = ask(&unix, "POST", "/approve", &body, "root");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeeded");
    assert_eq!(answer["stdout"], "hi\n");
    let (status, pending) = ask(&unix, "GET", "/pending", &Value::Null, "root");
    assert_eq!((status, &pending["pending"]), (200, &json!([])));
}

#[test]
fn callers_limit_who_may_ask_on_run_and_request() {
    if skip_without_root() {
        return;
    }
    let open = OpenDir::new("callers");
    let sock = open.0.join("agent.sock");
    let rules = json!([
        {"name": "uptime", "argv": ["/usr/bin/uptime"], "no_pin": true, "callers": {"users": ["root"]}},
        {"name": "echo", "argv": ["/bin/echo", "**"], "callers": {"users": ["root"]}},
        {"name": "true", "argv": ["/bin/true"], "callers": {"groups": ["nogroup"]}}
    ]);
    let agent = agent("callers-rules", &sock, json!({"rules": rules}));
    let tcp = agent.addr.to_string();
    let unix = sock.to_str().unwrap().to_string();
    let root = root_target(&tcp, &unix);
    for target in [&tcp, &unix] {
        // As if no rule matched: without a code 401, with one 403; held: 403.
        let (status, _) = ask(
            target,
            "POST",
            "/run",
            &json!({"command": "uptime"}),
            "nobody",
        );
        assert_eq!(status, 401);
        let body = json!({"command": "echo hi", "pin": agent.fresh_code()});
        let (status, answer) = ask(target, "POST", "/run", &body, "nobody");
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["error"], "not_allowed");
        let (status, _) = ask(
            target,
            "POST",
            "/request",
            &json!({"command": "echo hi"}),
            "nobody",
        );
        assert_eq!(status, 403);
        // nobody's primary group is nogroup: admitted to that rule (if the kernel
        // could say who it is: not over TCP under qemu-user).
        let (status, answer) = ask(
            target,
            "POST",
            "/request",
            &json!({"command": "true"}),
            "nobody",
        );
        let admitted = if *target == tcp && emulated() {
            403
        } else {
            202
        };
        assert_eq!(status, admitted, "{answer}");
    }
    // Root is in the lists.
    let (status, _) = ask(&root, "POST", "/run", &json!({"command": "uptime"}), "root");
    assert_eq!(status, 200);
    let body = json!({"command": "echo hi"});
    assert_eq!(ask(&root, "POST", "/request", &body, "root").0, 202);
    let (status, _) = ask(
        &unix,
        "POST",
        "/request",
        &json!({"command": "echo hi"}),
        "root",
    );
    assert_eq!(status, 202);
    let log = agent.log();
    assert_eq!(
        log.matches("EXECUTING").count(),
        1,
        "only root's uptime ran: {log}"
    );
    assert!(log.contains("DENIED by policy [unix socket]"), "{log}");
}

#[test]
fn both_sockets_from_systemd_are_served_and_the_unix_one_names_its_caller() {
    use std::os::unix::net::UnixListener;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let open = OpenDir::new("activated");
    let sock = open.0.join("agent.sock");
    let dir = TempDir::new("callers-activated");
    // No unix_socket in the config: sudo-agent-unix.socket decides, as systemd would.
    let cfg = base_config(dir.path(), json!({}));
    let mut agent = Agent::prepare(dir, &cfg);
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let unix = UnixListener::bind(&sock).unwrap();
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    // The Unix socket first: systemd does not promise an order.
    let inner = crate::common::agent_command();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"exec 4<&0 3<&1 </dev/null >/dev/null; LISTEN_PID=$$; export LISTEN_PID; exec "$@""#)
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args())
        .args(["serve", "--config"])
        .arg(&agent.config_path)
        .env("LISTEN_FDS", "2")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(unix)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(tcp)))
        .stderr(Stdio::null());
    agent.child = Some(cmd.spawn().unwrap());
    agent.addr = addr;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !agent.log().contains("LISTENING on") {
        assert!(Instant::now() < deadline, "not started: {}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent.health_ok());
    let unix = sock.to_str().unwrap();
    let (status, body) = ask(
        unix,
        "POST",
        "/request",
        &json!({"command": "echo hi"}),
        "nobody",
    );
    assert_eq!(status, 202, "{body}");
    let job = agent
        .get(&format!("/job/{}", body["id"].as_str().unwrap()))
        .json();
    assert_eq!(
        job["caller"],
        json!({"via": "unix", "uid": 65534, "user": "nobody"})
    );
}

#[test]
fn a_unix_socket_where_others_could_swap_it_is_refused_at_start() {
    let dir = TempDir::new("callers-tmp-socket");
    let open = std::path::PathBuf::from(format!("/tmp/sudo-agent-sock-{}", std::process::id()));
    let cfg = base_config(
        dir.path(),
        json!({"unix_socket": {"path": open.join("agent.sock")}}),
    );
    let config = crate::common::write_files(dir.path(), &cfg);
    let (code, err) = crate::common::serve_refused(&config);
    let _ = fs::remove_dir_all(&open);
    assert_ne!(code, 0);
    assert!(err.contains("cannot listen on the Unix socket"), "{err}");
    assert!(err.contains("/tmp"), "names the weak directory: {err}");
}
