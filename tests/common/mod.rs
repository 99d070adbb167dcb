//! Shared fixture for integration tests: an agent started from the real binary in a temp
//! dir on an ephemeral loopback port, a real HTTP client, and a code generator using
//! the secret the test wrote. Dropping the `Agent` kills it and removes the dir.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sudo_agent::totp::{self, Params};

/// The agent binary. Start it with [`agent_command`], not `Command::new(BIN)`, so the
/// suite also runs when it is built for another architecture.
pub const BIN: &str = env!("CARGO_BIN_EXE_sudo-agent");

/// A `Command` that runs the agent binary. `cargo test --target
/// aarch64-unknown-linux-musl` runs the test binaries under the target's runner
/// (`.cargo/config.toml`), but the agent they start is exec'd by the kernel, which
/// refuses a foreign binary (ENOEXEC) unless binfmt_misc is set up. Then it is started
/// through `$SUDO_AGENT_RUNNER`, else `qemu-<arch>-static`; qemu-user runs it in the
/// same process, so its pid is the agent's pid.
pub fn agent_command() -> Command {
    match runner() {
        Some(runner) => {
            let mut cmd = Command::new(runner);
            cmd.arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    }
}

/// The emulator `agent_command` puts in front of the binary, if it needs one.
fn runner() -> &'static Option<String> {
    static RUNNER: OnceLock<Option<String>> = OnceLock::new();
    RUNNER.get_or_init(|| {
        const ENOEXEC: i32 = 8;
        match Command::new(BIN).arg("--version").output() {
            Err(err) if err.raw_os_error() == Some(ENOEXEC) => Some(
                std::env::var("SUDO_AGENT_RUNNER")
                    .unwrap_or_else(|_| format!("qemu-{}-static", std::env::consts::ARCH)),
            ),
            _ => None,
        }
    })
}

/// [`agent_command`] as words for a shell line (`qemu-aarch64-static /path/sudo-agent`).
pub fn agent_shell_command() -> String {
    match runner() {
        Some(runner) => format!("{runner} {BIN}"),
        None => BIN.to_string(),
    }
}

/// True when the agent runs under an emulator (see [`agent_command`]).
pub fn emulated() -> bool {
    runner().is_some()
}

/// `Command`'s `spawn`, `output` and `status`, past a fork that hangs under qemu-user
/// (see [`spawn_past_stuck_forks`]). Every spawn of the tests goes through these;
/// natively they are the plain ones.
pub trait Retrying {
    fn spawn_retrying(&mut self) -> io::Result<Child>;
    fn output_retrying(&mut self) -> io::Result<Output>;
    fn status_retrying(&mut self) -> io::Result<ExitStatus>;
}

impl Retrying for Command {
    fn spawn_retrying(&mut self) -> io::Result<Child> {
        spawn_past_stuck_forks(self)
    }

    fn output_retrying(&mut self) -> io::Result<Output> {
        if !emulated() {
            return self.output();
        }
        // What `output` gives a command that chose nothing else.
        self.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        spawn_past_stuck_forks(self)?.wait_with_output()
    }

    fn status_retrying(&mut self) -> io::Result<ExitStatus> {
        if !emulated() {
            return self.status();
        }
        spawn_past_stuck_forks(self)?.wait()
    }
}

/// `cmd.spawn()`. Under qemu-user the child of a fork sometimes deadlocks before its
/// exec, on a lock of qemu's own that no thread will release (seen in CI: a suite that
/// never ended, its last test waiting in `spawn` for 10 minutes). There, a child still
/// running this test program 20 s into the spawn, and 2 s later, is killed, which lets
/// `spawn` return, and the spawn is tried again.
fn spawn_past_stuck_forks(cmd: &mut Command) -> io::Result<Child> {
    if !emulated() {
        return cmd.spawn();
    }
    for _ in 0..3 {
        let (tx, rx) = std::sync::mpsc::channel();
        let (spawned, killed) = std::thread::scope(|scope| {
            scope.spawn(|| tx.send(cmd.spawn()));
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(spawned) => (spawned, Vec::new()),
                Err(_) => {
                    let killed = kill_unexeced_children();
                    (rx.recv().unwrap(), killed)
                }
            }
        });
        let mut child = spawned?;
        if !killed.contains(&child.id()) {
            return Ok(child);
        }
        eprintln!("a forked child hung before its exec (qemu-user); killed, spawning again");
        let _ = child.wait();
    }
    panic!("three spawns hung before their exec under qemu-user");
}

/// Children of this process still running this test program (forked, never exec'd)
/// now and 2 s later: killed with SIGKILL, their pids returned.
fn kill_unexeced_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let program = std::env::current_exe().unwrap_or_default();
    let program = program.to_string_lossy().into_owned();
    let unexeced = || -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                status
                    .lines()
                    .any(|l| l.split_whitespace().eq(["PPid:", me.as_str()]))
                    && cmdline
                        .split(|&b| b == 0)
                        .any(|arg| arg == program.as_bytes())
            })
            .collect()
    };
    let first = unexeced();
    std::thread::sleep(Duration::from_secs(2));
    let stuck: Vec<u32> = unexeced()
        .into_iter()
        .filter(|p| first.contains(p))
        .collect();
    for pid in &stuck {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    stuck
}

/// What qemu-user itself (translated-code cache, its own heap) adds to the resident
/// size of an agent it runs: about 21 MiB idle here, more once much code has run.
/// Memory budgets in tests are for the agent, so they allow this under emulation.
pub const EMULATOR_RSS_KIB: u64 = 32 * 1024;

/// [`EMULATOR_RSS_KIB`] when the agent runs emulated, else nothing: add it to any
/// bound on the agent's resident size.
pub fn rss_allowance_kib() -> u64 {
    if emulated() { EMULATOR_RSS_KIB } else { 0 }
}

/// What qemu-user's translated-code cache grows by while the agent runs code it had not
/// run yet (a flood's parse and error paths: 1.4 MiB seen), else nothing: add it to any
/// bound on how much the agent's resident size grows.
pub fn rss_growth_allowance_kib() -> u64 {
    if emulated() { 4 * 1024 } else { 0 }
}

/// The agent command as systemd starts a socket-activated service: `listener` as fd 3,
/// `LISTEN_FDS=1` and `LISTEN_PID` set to the agent's own pid. That pid is known only
/// after fork, so a shell moves the socket from stdin to fd 3, exports its own pid
/// (`$$`) and execs the agent, which keeps that pid (qemu-user too). Arguments added to
/// the returned command go to the agent.
pub fn activated_command(listener: TcpListener) -> Command {
    let agent = agent_command();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"exec 3<&0 </dev/null; LISTEN_PID=$$; export LISTEN_PID; exec "$@""#)
        .arg("sh")
        .arg(agent.get_program())
        .args(agent.get_args())
        .env("LISTEN_FDS", "1")
        .stdin(Stdio::from(OwnedFd::from(listener)));
    cmd
}

/// A fixed test secret (base32 of "12345678901234567890", the RFC test key).
pub const SECRET_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Where test dirs go: a root-owned 0755 directory in /run whose whole chain is trusted,
/// so that programs the tests write there pass the agent's trust-chain check (anything
/// under the world-writable /tmp is refused, as it must be). Not root: the cargo target
/// dir's `tmp`, trusted when the checkout is in a home of one's own, not under /tmp.
pub fn fixture_base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let base = PathBuf::from("/run/sudo-agent-tests");
        let made = fs::create_dir_all(&base)
            .and_then(|()| fs::set_permissions(&base, fs::Permissions::from_mode(0o755)));
        match made {
            Ok(()) => base,
            Err(_) => PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        }
    })
}

/// A private temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = fixture_base().join(format!("sa-test-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The base config a test starts from; `overrides` is merged into it key by key
/// (objects merge, other values replace).
pub fn base_config(dir: &Path, overrides: Value) -> Value {
    let mut cfg = json!({
        "listen": "127.0.0.1:0",
        "secret_file": dir.join("secret"),
        "log_file": dir.join("audit.log"),
        "state_dir": dir.join("state"),
        "results": {"dir": dir.join("results")},
        "totp": {"step_s": 30},
        "rules": [
            {"name": "uptime", "argv": ["/usr/bin/uptime"], "no_pin": true},
            {"name": "env", "argv": ["/usr/bin/env"], "no_pin": true},
            {"name": "echo", "argv": ["/bin/echo", "**"]},
            {"name": "sh", "argv": ["/bin/sh", "-c", "*"], "timeout_s": 2},
            {"name": "sleep", "argv": ["/bin/sleep", "*"]},
            {"name": "true", "argv": ["/bin/true"]}
        ]
    });
    merge(&mut cfg, overrides);
    cfg
}

/// `over` merged into `base` key by key (objects merge, other values replace).
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The address in the first whole `LISTENING on ADDR` line of `text`.
fn listening_on(text: &str) -> Option<SocketAddr> {
    let whole = &text[..text.rfind('\n')? + 1];
    let line = whole.lines().find(|l| l.contains("LISTENING on "))?;
    line.split("LISTENING on ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub struct Agent {
    pub child: Option<Child>,
    pub dir: TempDir,
    pub addr: SocketAddr,
    pub key: Vec<u8>,
    pub params: Params,
    pub config_path: PathBuf,
    http: ureq::Agent,
    /// Started by `spawn_wrapped`, in a process group of its own: killed as a group.
    wrapped: bool,
}

/// A response as a user sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Agent {
    /// Starts an agent with `base_config` plus `overrides`.
    pub fn start(tag: &str, overrides: Value) -> Agent {
        let dir = TempDir::new(tag);
        let cfg = base_config(dir.path(), overrides);
        Agent::start_in(dir, &cfg, &[])
    }

    /// Writes `cfg` and the test secret into `dir` and starts `serve` with extra env vars.
    pub fn start_in(dir: TempDir, cfg: &Value, env: &[(&str, &str)]) -> Agent {
        let mut agent = Agent::prepare(dir, cfg);
        agent.spawn(env);
        agent
    }

    /// `start_in`, socket-activated as systemd does it: `listener` as fd 3, with
    /// `LISTEN_FDS=1` and `LISTEN_PID` set to the agent's own pid.
    pub fn start_activated(
        dir: TempDir,
        cfg: &Value,
        listener: TcpListener,
        env: &[(&str, &str)],
    ) -> Agent {
        let mut agent = Agent::prepare(dir, cfg);
        agent.spawn_activated(listener, env);
        agent
    }

    /// `start` without starting: `base_config` plus `overrides` written in a new dir.
    pub fn prepare_in(tag: &str, overrides: Value) -> Agent {
        let dir = TempDir::new(tag);
        let cfg = base_config(dir.path(), overrides);
        Agent::prepare(dir, &cfg)
    }

    /// Writes `cfg` and the test secret into `dir`; starts nothing.
    pub fn prepare(dir: TempDir, cfg: &Value) -> Agent {
        let config_path = write_files(dir.path(), cfg);
        let params = Params {
            digits: cfg["totp"]["digits"].as_u64().unwrap_or(6) as u32,
            step_s: cfg["totp"]["step_s"].as_u64().unwrap_or(30),
            skew: cfg["totp"]["skew"].as_u64().unwrap_or(1),
        };
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Agent {
            child: None,
            dir,
            addr: "127.0.0.1:0".parse().unwrap(),
            key: totp::base32_decode(SECRET_B32).unwrap(),
            params,
            config_path,
            http,
            wrapped: false,
        }
    }

    /// (Re)starts the process and waits for its LISTENING line.
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        let mut cmd = agent_command();
        cmd.stdin(Stdio::null());
        self.launch(cmd, env);
    }

    /// (Re)starts the process as the last argument of `wrapper` (e.g. strace injecting
    /// a fault), in a process group of its own: `kill9` kills the whole group (the
    /// wrapper, the agent it runs and anything of theirs still in it, such as a child
    /// qemu-user forked for a spawn), so nothing outlives the test.
    pub fn spawn_wrapped(&mut self, wrapper: &[String], env: &[(&str, &str)]) {
        use std::os::unix::process::CommandExt;
        let agent = agent_command();
        let mut cmd = Command::new(&wrapper[0]);
        cmd.args(&wrapper[1..])
            .arg(agent.get_program())
            .args(agent.get_args())
            .stdin(Stdio::null())
            .process_group(0);
        self.launch(cmd, env);
        self.wrapped = true;
    }

    /// (Re)starts the process as systemd's socket activation would (see
    /// [`activated_command`]).
    pub fn spawn_activated(&mut self, listener: TcpListener, env: &[(&str, &str)]) {
        self.launch(activated_command(listener), env);
    }

    /// (Re)starts the process with `cmd` (the agent, or a wrapper that ends up running
    /// it), adding `serve --config PATH`, and waits for its LISTENING line.
    pub fn launch(&mut self, mut cmd: Command, env: &[(&str, &str)]) {
        // Its stderr gets every line the log file does, and is read when the log file is
        // not where this process can read it (on another mount namespace's disk); the
        // log file when stderr is not ours (a terminal).
        let log = self.dir.path().join("audit.log");
        let read_log = || fs::read_to_string(&log).unwrap_or_default();
        let before = [self.stderr().len(), read_log().len()];
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.txt"))
            .unwrap();
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn_retrying().unwrap());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let listening = [self.stderr(), read_log()]
                .iter()
                .zip(before)
                .find_map(|(text, before)| listening_on(text.get(before..)?));
            if let Some(addr) = listening {
                self.addr = addr;
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "agent exited with {status} before listening; stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "agent did not start; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, as a power cut or OOM kill would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::mem::take(&mut self.wrapped) {
                let _ = Command::new("kill")
                    .args(["-9", "--", &format!("-{}", child.id())])
                    .status_retrying();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe_kill(child.id(), 15);
        child.wait().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The audit log, once it stopped growing: the agent writes it from a thread of its
    /// own, a few milliseconds after the events (never in the way of an answer).
    pub fn log(&self) -> String {
        let read = || fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut text = read();
        loop {
            std::thread::sleep(Duration::from_millis(30));
            let again = read();
            if again.len() == text.len() || Instant::now() > deadline {
                return again;
            }
            text = again;
        }
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default()
    }

    /// The code for the current step.
    pub fn code(&self) -> String {
        totp::code_at(&self.key, now(), &self.params)
    }

    /// Waits for the next time step to begin, then returns its code (replay protection
    /// refuses a second use of a step, so each authenticated request needs a new one).
    pub fn fresh_code(&self) -> String {
        let step = self.params.step_s;
        let now_ms = now_ms();
        let next = (now_ms / 1000 / step + 1) * step * 1000;
        std::thread::sleep(Duration::from_millis(next - now_ms + 20));
        self.code()
    }

    pub fn get(&self, path: &str) -> Reply {
        let resp = self.http.get(&self.url(path)).call().unwrap();
        to_reply(resp)
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        let resp = self
            .http
            .post(&self.url(path))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        to_reply(resp)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post(path, &body.to_string())
    }

    /// Sends raw bytes on a fresh connection and reads until the agent closes it or
    /// `timeout` passes.
    pub fn raw(&self, bytes: &[u8], timeout: Duration) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The job journal's lines, parsed (a line that does not parse is skipped).
    pub fn journal(&self) -> Vec<Value> {
        self.journal_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The job journal's text: its lines, without the zeros the agent keeps written
    /// after them (its next lines go over those, so their sync is one flush).
    pub fn journal_text(&self) -> String {
        String::from_utf8_lossy(&self.journal_lines()).into_owned()
    }

    /// The journal's bytes up to its first NUL.
    fn journal_lines(&self) -> Vec<u8> {
        let mut bytes = fs::read(self.journal_path()).unwrap_or_default();
        bytes.truncate(bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()));
        bytes
    }

    /// Writes `bytes` where the agent writes its next journal line (after the last,
    /// over the zeros that follow), as a crash in the middle of a write leaves them.
    pub fn write_journal_end(&self, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let end = self.journal_lines().len();
        let file = fs::OpenOptions::new()
            .write(true)
            .open(self.journal_path())
            .unwrap();
        file.write_all_at(bytes, end as u64).unwrap();
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("state/jobs.jsonl")
    }

    pub fn auth_state_path(&self) -> PathBuf {
        self.dir.path().join("state/auth.json")
    }

    /// The code gate's saved state, parsed (`Null` while there is no whole file).
    pub fn auth_state(&self) -> Value {
        fs::read_to_string(self.auth_state_path())
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    }

    /// The process group the journal recorded for job `id`, once its start line is there.
    pub fn job_pgid(&self, id: &str) -> Option<u32> {
        self.journal()
            .iter()
            .find(|l| l["ev"] == "start" && l["id"] == id)
            .and_then(|l| l["pgid"].as_u64())
            .map(|p| p as u32)
    }

    pub fn health_ok(&self) -> bool {
        let r = self.get("/health");
        r.status == 200 && r.json()["status"] == "ok"
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        self.end_job_cgroups();
    }
}

impl Agent {
    /// After the agent is gone: ends what is left in the cgroups of its jobs (those in
    /// the journal; its log names the tree) and removes them, as a restarted agent's
    /// recovery would.
    fn end_job_cgroups(&self) {
        let log = self.log();
        let bases: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split("CONTAINMENT: {\"cgroup\":\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        for line in self.journal() {
            let id = line["id"].as_str().or(line["job"]["id"].as_str());
            let Some(id) = id else { continue };
            for base in &bases {
                let dir = Path::new(base).join(job_cgroup(id));
                if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                    let empty = || {
                        fs::read_to_string(dir.join("cgroup.events"))
                            .map_or(true, |e| e.contains("populated 0"))
                    };
                    wait_until(Duration::from_secs(5), empty);
                    let _ = fs::remove_dir(&dir);
                }
            }
        }
    }
}

fn to_reply(mut resp: ureq::http::Response<ureq::Body>) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn now() -> u64 {
    now_ms() / 1000
}

/// `strace` set to delay each of the agent's `calls` (system calls) by `ms` before it
/// runs: a slow SD card for fsync, a stalled disk for write. `None` (a loud skip, a
/// failure under CI) when strace is missing.
pub fn strace_delaying(calls: &[&str], ms: u64) -> Option<Vec<String>> {
    strace_injecting(calls, &format!("delay_enter={}", ms * 1000))
}

/// `strace` set to `inject` (strace(1)'s `-e inject=`, e.g. `error=ENOSYS`: an older
/// kernel) into each of the agent's `calls`. `None` as [`strace_delaying`].
pub fn strace_injecting(calls: &[&str], inject: &str) -> Option<Vec<String>> {
    if !tool_runs(&["strace", "-V"], "apt-get install strace") {
        return None;
    }
    let calls = calls.join(",");
    let args = [
        "strace".to_string(),
        "-f".into(),
        "-qq".into(),
        "--seccomp-bpf".into(),
        "-o".into(),
        "/dev/null".into(),
        "-e".into(),
        format!("trace={calls}"),
        "-e".into(),
        format!("inject={calls}:{inject}"),
    ];
    Some(args.to_vec())
}

pub fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status_retrying();
}

/// A process seen alive: its pid and start time, so that a later look or signal never
/// takes another process for it. Pids wrap (at 32 768 on some test machines) and the
/// suite starts tens of thousands of processes, so a pid that exited may soon name a
/// stranger, another test's agent among them.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub pid: u32,
    /// Clock ticks after boot, field 22 of `/proc/PID/stat`.
    pub start: u64,
}

impl Seen {
    /// `pid` as it is now; panics if no such process runs (the caller knows it does).
    pub fn now(pid: u32) -> Seen {
        let (_, start) = stat_of(pid).unwrap_or_else(|| panic!("process {pid} is not running"));
        Seen { pid, start }
    }

    /// Still the same process, and not a zombie.
    pub fn alive(&self) -> bool {
        stat_of(self.pid).is_some_and(|(state, start)| start == self.start && state != 'Z')
    }

    /// `sig` to it if it is still the same process (else to nobody).
    pub fn kill(&self, sig: i32) {
        if stat_of(self.pid).is_some_and(|(_, start)| start == self.start) {
            unsafe_kill(self.pid, sig);
        }
    }
}

/// A process's state letter and start time (clock ticks after boot): fields 3 and 22
/// of `/proc/PID/stat`, read once.
fn stat_of(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit(')').next()?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_of(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Threads of a process, from /proc.
pub fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Writes `cfg` as `dir/config.json` (0600) and the test secret (0600) unless one is
/// there; returns the config path.
pub fn write_files(dir: &Path, cfg: &Value) -> PathBuf {
    let config_path = dir.join("config.json");
    fs::write(&config_path, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    fs::set_permissions(&config_path, fs::Permissions::from_mode(0o600)).unwrap();
    let secret = dir.join("secret");
    if fs::symlink_metadata(&secret).is_err() {
        fs::write(&secret, format!("{SECRET_B32}\n")).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    }
    config_path
}

/// Runs `serve --config PATH` expecting a refusal: (exit code, stderr). An agent that
/// starts serving instead is killed and reported as exit code -1.
pub fn serve_refused(config: &Path) -> (i32, String) {
    let mut child = agent_command()
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_retrying()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (code, err)
}

/// An executable shell script `dir/name` (0755), e.g. a stand-in for a system program.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Live (non-zombie) members of process group `pgid`, from /proc.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && !matches!(fields[0], "Z" | "X") && fields[2] == pgid.to_string()
        })
        .collect()
}

/// The cgroup job `id` runs in: `job-` and the second half of its id, which the jobs
/// that run in it one after another share.
pub fn job_cgroup(id: &str) -> String {
    format!("job-{}", &id[16..])
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How a command-line run of the binary ended and what it printed.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args`, `stdin` piped in, and waits for it.
pub fn run_bin(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> CliRun {
    let mut child = agent_command()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_retrying()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    CliRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Agent {
    /// `sudo-agent run --url <this agent> ARGS...` with `stdin` piped in (not a tty, so
    /// it never prompts).
    pub fn run_client(&self, args: &[&str], stdin: &str) -> CliRun {
        let url = self.url("");
        run_bin(
            &[&["run", "--url", url.as_str()], args].concat(),
            stdin,
            &[],
        )
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Python module for an interop check: present, a loud skip, or (with `CI=true`) a
/// failure, since CI must not pass without having checked anything.
pub fn python_has(module: &str, install: &str) -> bool {
    tool_runs(&["python3", "-c", &format!("import {module}")], install)
}

/// An external tool (`probe`: a command line that succeeds where it is, such as the
/// program and its version flag): present, a loud skip, or (with `CI=true`) a failure.
pub fn tool_runs(probe: &[&str], install: &str) -> bool {
    let ok = Command::new(probe[0])
        .args(&probe[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status_retrying()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_or_fail(&format!("`{}` failed; {install}", probe.join(" ")));
    }
    ok
}

/// A new ext4 file system of `bytes` in `image`, on a loop device: its path
/// (`/dev/loopN`), or `None` (a loud skip; a failure under CI=true) without mkfs.ext4 or
/// a loop device. The caller detaches it (`losetup -d`).
pub fn loop_ext4(image: &Path, bytes: u64) -> Option<String> {
    fs::File::create(image).unwrap().set_len(bytes).unwrap();
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(image)
        .status_retrying();
    let device = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(image)
        .output_retrying();
    match (made, device) {
        (Ok(made), Ok(out)) if made.success() && out.status.success() => {
            Some(String::from_utf8(out.stdout).unwrap().trim().to_string())
        }
        other => {
            skip_or_fail(&format!(
                "no ext4 on a loop device here ({other:?}); apt-get install e2fsprogs mount"
            ));
            None
        }
    }
}

/// What a test needs is missing here: a loud skip, or (with `CI=true`) a failure.
pub fn skip_or_fail(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "under CI=true: {why}"
    );
    eprintln!("SKIPPED: {why}");
}

/// The status code of a raw HTTP answer (0 when there is none).
pub fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process, from /proc.
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// One HTTP answer read from `s`: its head, then `Content-Length` bytes of body (none
/// for an answer to HEAD). `None` when the connection ends or `s`'s read timeout passes
/// first.
pub fn read_answer(s: &mut TcpStream, head_only: bool) -> Option<(u16, String, Vec<u8>)> {
    let (head, body) = read_message(s, head_only)?;
    Some((status_of(&head), head, body))
}

/// One HTTP message (a request, or an answer) read from `s`: its head, then
/// `Content-Length` bytes of body unless `head_only`. `None` when the connection ends
/// or `s`'s read timeout passes first.
pub fn read_message(s: &mut impl Read, head_only: bool) -> Option<(String, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => bytes.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&bytes).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; if head_only { 0 } else { length }];
    s.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// `GET path` on a connection of its own (a pooled one could hide a full table), read
/// to its end: (status, body, how long it took).
pub fn fresh_get(addr: SocketAddr, path: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let answer = s
        .write_all(request.as_bytes())
        .ok()
        .and_then(|()| read_answer(&mut s, false));
    let (status, body) = answer.map_or((0, String::new()), |(status, _, body)| {
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    (status, body, started.elapsed())
}

/// Runs `during` while another thread samples `pid`'s resident size every 10 ms;
/// returns what `during` returned and the peak in KiB.
pub fn peak_rss_during<T>(pid: u32, during: impl FnOnce() -> T) -> (T, u64) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = rss_kib(pid);
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak.max(rss_kib(pid))
        });
        // Stop the sampler however `during` ends, a failed assertion included.
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = Stop(&stop);
        let value = during();
        drop(guard);
        (value, sampler.join().unwrap())
    })
}

/// URL decoding as forms and `encodeURIComponent` write it: `+` is a space, `%XX` a
/// byte.
pub fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
