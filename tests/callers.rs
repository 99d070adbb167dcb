//! Who is asking, from the kernel: a client that drops to `nobody` reads uid 65534 over
//! TCP (the owner of its socket in the kernel's table) and over the Unix socket
//! (`SO_PEERCRED`); `callers` limits who may ask for a rule on every route, and
//! `approvals.approvers` who may approve, deny or list, whatever the request says.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{
    Agent, Retrying, TempDir, base_config, emulated, fixture_base, status_of, tool_runs,
    unsafe_kill, wait_until,
};

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
/// (setgroups, setgid, setuid 65534 before the socket is made), as a numeric uid (in
/// group 65534) or as root; prints the raw answer.
const CLIENT: &str = r#"
import os, socket, sys, encodings.idna
target, method, path, body, who = sys.argv[1:6]
# Everything it needs is loaded before it drops: nobody cannot read root's Python.
# A number is a uid of its own, in the group nogroup.
if who != "root":
    os.setgroups([]); os.setgid(65534); os.setuid(65534 if who == "nobody" else int(who))
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
        .output_retrying()
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
    use std::time::Instant;
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
    agent.child = Some(cmd.spawn_retrying().unwrap());
    agent.addr = addr;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !agent.log().contains("LISTENING on") {
        assert!(Instant::now() < deadline, "not started: {}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent.health_ok());
    let unix = sock.to_str().unwrap();
    assert_eq!(
        held_caller(&agent, unix, "nobody"),
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

/// Holds `echo hi` as `who` over `target`; the caller its record shows.
fn held_caller(agent: &Agent, target: &str, who: &str) -> Value {
    let body = json!({"command": "echo hi"});
    let (status, answer) = ask(target, "POST", "/request", &body, who);
    assert_eq!(status, 202, "{answer}");
    let job = agent.get(&format!("/job/{}", answer["id"].as_str().unwrap()));
    job.json()["caller"].clone()
}

/// A uid no account in /etc/passwd has.
fn unused_uid() -> u32 {
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let taken = |uid: u32| {
        passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(uid.to_string().as_str()))
    };
    (54321..).find(|&uid| !taken(uid)).unwrap()
}

/// `strace` attached to one thread only (no `-f`), writing the file system calls and
/// `accept4` it sees to a file; detached and reaped when dropped.
struct Traced {
    /// Taken when reaped: its pid is free from then on, and may be another process's.
    strace: Option<Child>,
    out: PathBuf,
}

impl Traced {
    fn attach(pid: u32, tid: u32, out: PathBuf) -> Traced {
        let strace = Command::new("strace")
            .args([
                "-qq",
                "-p",
                &tid.to_string(),
                "-e",
                "trace=%file,accept4",
                "-o",
            ])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn_retrying()
            .unwrap();
        let tracer = format!("TracerPid:\t{}\n", strace.id());
        let status = format!("/proc/{pid}/task/{tid}/status");
        let attached = wait_until(Duration::from_secs(10), || {
            fs::read_to_string(&status).is_ok_and(|s| s.contains(&tracer))
        });
        let traced = Traced {
            strace: Some(strace),
            out,
        };
        assert!(attached, "strace did not attach to thread {tid}");
        traced
    }

    /// Detaches (strace ends on SIGTERM, leaving the thread running) and returns the trace.
    fn finish(mut self) -> String {
        self.stop();
        fs::read_to_string(&self.out).unwrap()
    }

    fn stop(&mut self) {
        if let Some(mut strace) = self.strace.take() {
            unsafe_kill(strace.id(), 15);
            let _ = strace.wait();
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn the_loop_never_opens_the_user_database_for_a_new_caller() {
    if skip_without_root() || !tool_runs(&["strace", "-V"], "apt-get install strace") {
        return;
    }
    let open = OpenDir::new("loop-users");
    let sock = open.0.join("agent.sock");
    let rules = json!([
        {"name": "echo", "argv": ["/bin/echo", "**"]},
        {"name": "true", "argv": ["/bin/true"], "callers": {"groups": ["nogroup"]}}
    ]);
    let agent = agent("callers-loop-users", &sock, json!({"rules": rules}));
    let tcp = agent.addr.to_string();
    let unix = sock.to_str().unwrap().to_string();
    // The event loop is the agent's main thread, whose tid is its pid (qemu-user runs
    // the guest's main thread there too); every other thread is left untraced.
    let pid = agent.pid();
    let trace = Traced::attach(pid, pid, agent.dir.path().join("loop.strace"));

    for (target, via) in [(&unix, "unix"), (&tcp, "tcp")] {
        assert_eq!(
            held_caller(&agent, target, "nobody"),
            nobody_via(via),
            "{via}"
        );
        // Its primary group (nogroup) still admits it, where the kernel names it.
        let body = json!({"command": "true"});
        let (status, answer) = ask(target, "POST", "/request", &body, "nobody");
        let admitted = if via == "tcp" && emulated() { 403 } else { 202 };
        assert_eq!(status, admitted, "{via}: {answer}");
    }
    // A uid without an account: shown by number, and in no group, though the process
    // runs with gid nogroup (groups admit by the account's primary group).
    let stranger = unused_uid().to_string();
    assert_eq!(
        held_caller(&agent, &unix, &stranger),
        json!({"via": "unix", "uid": stranger.parse::<u32>().unwrap(), "user": null})
    );
    let body = json!({"command": "true"});
    let (status, answer) = ask(&unix, "POST", "/request", &body, &stranger);
    assert_eq!(status, 403, "{answer}");

    let trace = trace.finish();
    // The trace saw the loop take each of the eight connections...
    assert!(
        trace.matches("accept4(").count() >= 8,
        "not the loop's trace: {trace}"
    );
    // ... and never open the user or group database while serving them.
    for file in ["/etc/passwd", "/etc/group"] {
        assert!(!trace.contains(file), "the loop touched {file}: {trace}");
    }
    let log = agent.log();
    assert!(log.contains("caller=unix:nobody(65534)"), "{log}");
    assert!(
        emulated() || log.contains("caller=tcp:nobody(65534)"),
        "{log}"
    );
    assert!(
        log.contains(&format!("caller=unix:uid {stranger}:")),
        "{log}"
    );
}

#[test]
fn a_user_added_while_the_agent_runs_is_named_within_seconds_and_unknown_until_then() {
    if skip_without_root() || !tool_runs(&["unshare", "--version"], "apt-get install util-linux") {
        return;
    }
    let open = OpenDir::new("new-user");
    let sock = open.0.join("agent.sock");
    let dir = TempDir::new("callers-new-user");
    // The agent's /etc/passwd is a copy of this machine's, bound over it in a mount
    // namespace of the agent's own: the test adds an account and the machine keeps its.
    let passwd = dir.path().join("passwd");
    fs::copy("/etc/passwd", &passwd).unwrap();
    let rules = json!([
        {"name": "echo", "argv": ["/bin/echo", "**"]},
        {"name": "true", "argv": ["/bin/true"], "callers": {"groups": ["nogroup"]}}
    ]);
    let over = json!({"unix_socket": {"path": sock, "mode": "0666"}, "rules": rules});
    let cfg = base_config(dir.path(), over);
    let mut agent = Agent::prepare(dir, &cfg);
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        r#"mount --bind "$0" /etc/passwd && exec "$@""#,
        passwd.to_str().unwrap(),
    ];
    agent.spawn_wrapped(&wrapper.map(String::from), &[]);
    let unix = sock.to_str().unwrap().to_string();
    let stranger = unused_uid();
    let who = stranger.to_string();
    let may_run_true = || {
        let body = json!({"command": "true"});
        ask(&unix, "POST", "/request", &body, &who).0 == 202
    };

    // No account yet: known by uid only, and the group its account will have admits
    // nothing.
    assert_eq!(
        held_caller(&agent, &unix, &who),
        json!({"via": "unix", "uid": stranger, "user": null})
    );
    assert!(!may_run_true());

    // useradd appends a line: the file changes in place.
    let name = format!("sa-new-{stranger}");
    let mut file = fs::OpenOptions::new().append(true).open(&passwd).unwrap();
    std::io::Write::write_all(
        &mut file,
        format!("{name}:x:{stranger}:65534::/nonexistent:/usr/sbin/nologin\n").as_bytes(),
    )
    .unwrap();
    drop(file);
    // Checked every 5 s; a generous bound for a busy machine.
    let noticed = wait_until(Duration::from_secs(60), || {
        agent.log().contains("USERS: /etc/passwd changed")
    });
    assert!(noticed, "{}", agent.log());
    assert_eq!(
        held_caller(&agent, &unix, &who),
        json!({"via": "unix", "uid": stranger, "user": name})
    );
    assert!(may_run_true(), "its primary group admits it now");
    assert!(
        agent
            .log()
            .contains(&format!("caller=unix:{name}({stranger}):")),
        "{}",
        agent.log()
    );
}
