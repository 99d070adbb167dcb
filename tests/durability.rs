//! What a crash or a slow disk can and cannot take: a used code stays used across
//! SIGKILL, every acknowledged id reads back after a restart, a job lost in a crash
//! leaves no half record, and the loop answers others while a code is being synced.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    Agent, Retrying, Seen, group_members, strace_delaying, unsafe_kill, wait_until,
};
use serde_json::{Value, json};
use sudo_agent::totp;

/// One request on a fresh connection, without a client library that might panic when
/// the agent is killed under it: `(status, body)`, or `None` if the connection failed.
fn raw_post(addr: SocketAddr, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The record `GET /job/<id>` serves; a missing one fails the test, naming `context`.
fn served(agent: &Agent, id: &str, context: &str) -> Value {
    let r = agent.get(&format!("/job/{id}"));
    assert_eq!(r.status, 200, "{context}: {id} not served: {}", r.body);
    r.json()
}

/// [`served`], ended as a crash leaves a job: `interrupted`, or `succeeded` if it ran
/// to the end first.
fn served_after_crash(agent: &Agent, id: &str, context: &str) {
    let job = served(agent, id, context);
    let status = job["status"].as_str().unwrap_or_default();
    assert!(
        ["interrupted", "succeeded"].contains(&status),
        "{context}: {id} reads {status}"
    );
}

fn no_pin_rules() -> Value {
    json!([
        {"name": "sleep", "argv": ["/bin/sleep", "*"], "no_pin": true},
        {"name": "sh", "argv": ["/bin/sh", "-c", "*"]}
    ])
}

#[test]
fn a_code_acknowledged_just_before_sigkill_is_never_accepted_again() {
    // Every write(2) of the agent takes 100 ms: an answer that left before the code's
    // journal line was written would find it lost to the kill.
    let Some(wrapper) = strace_delaying(&["write"], 100) else {
        return;
    };
    // Steps of 5 s, skew 1: a code stays inside the window for 10 s or more, so the
    // replay after the restart is refused because it was used, not because it expired.
    let mut agent = Agent::prepare_in("d-replay", json!({"totp": {"step_s": 5}}));
    agent.spawn_wrapped(&wrapper, &[]);
    let marker = agent.dir.path().join("marker");
    for round in 0..3 {
        let code = agent.fresh_code();
        let command = format!("echo {round} >> {}", marker.display());
        let body = json!({"pin": code, "argv": ["/bin/sh", "-c", command], "wait": 0});
        let r = agent.post_json("/run", &body);
        assert_eq!(r.status, 202, "{}", r.body);
        // At once: the answer left only after the code was synced with its job.
        kill_traced(&mut agent);
        agent.spawn_wrapped(&wrapper, &[]);
        let now = crate::common::now();
        assert!(
            totp::verify(&agent.key, &code, now, &agent.params).is_some(),
            "the restart took so long that the code expired; the test proves nothing"
        );
        let again = agent.post_json("/run", &body);
        assert_eq!(again.status, 401, "round {round}: {}", again.body);
        let id = r.json()["id"].as_str().unwrap().to_string();
        served_after_crash(&agent, &id, &format!("round {round}"));
    }
    assert!(
        agent.log().contains("REUSED PIN attempt"),
        "{}",
        agent.log()
    );
    kill_traced(&mut agent);
    // Each round's command ran at most once (once, unless the kill came first).
    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    for round in 0..3 {
        let times = ran.lines().filter(|l| *l == round.to_string()).count();
        assert!(times <= 1, "round {round} ran {times} times:\n{ran}");
    }
}

#[test]
fn every_id_acknowledged_to_three_clients_reads_back_after_sigkill() {
    // Every write(2) takes 10 ms: an id answered before its line is written is lost.
    let Some(wrapper) = strace_delaying(&["write"], 10) else {
        return;
    };
    // Slots for 2, queue for 64: most jobs wait in the queue, whose submissions are
    // written by the journal thread; the others by their job threads.
    let mut agent = Agent::prepare_in(
        "d-acked",
        json!({"rules": no_pin_rules(), "jobs": {"max_concurrent": 2, "max_queue": 64}}),
    );
    agent.spawn_wrapped(&wrapper, &[]);
    for round in 0..3 {
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let (acked, stop, addr) = (Arc::clone(&acked), Arc::clone(&stop), agent.addr);
                std::thread::spawn(move || {
                    let body = r#"{"argv": ["/bin/sleep", "0.2"], "wait": 0}"#;
                    while !stop.load(Ordering::SeqCst) {
                        match raw_post(addr, "/run", body) {
                            Some((202, body)) => {
                                let job: Value = serde_json::from_str(&body).unwrap();
                                let id = job["id"].as_str().unwrap().to_string();
                                acked.lock().unwrap().push(id);
                            }
                            Some((503, _)) => std::thread::sleep(Duration::from_millis(5)),
                            Some((status, body)) => panic!("{status}: {body}"),
                            None => return,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(800 + 300 * round));
        kill_traced(&mut agent);
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.join().unwrap();
        }
        agent.spawn_wrapped(&wrapper, &[]);
        let acked = acked.lock().unwrap().clone();
        assert!(
            acked.len() >= 5,
            "round {round}: only {} acknowledged",
            acked.len()
        );
        for id in &acked {
            served_after_crash(&agent, id, &format!("round {round}, acknowledged"));
        }
        println!(
            "round {round}: {} acknowledged ids all read back",
            acked.len()
        );
    }
    kill_traced(&mut agent);
}

#[test]
fn a_no_pin_job_lost_in_a_crash_leaves_no_half_record() {
    let mut agent = Agent::start("d-lost", json!({"rules": no_pin_rules()}));
    // A duration no other test uses, so strays can be found by their command line.
    let nap = "31.25";
    for round in 0..12u64 {
        // The request goes out and the agent dies a little later, answered or not.
        let mut s = TcpStream::connect(agent.addr).unwrap();
        let body = format!(r#"{{"argv": ["/bin/sleep", "{nap}"], "wait": 0}}"#);
        let req = format!(
            "POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_micros(300 * round));
        agent.kill9();
        agent.spawn(&[]);
    }
    // Every line whole, every job it names a whole record that reads back, final.
    let text = agent.journal_text();
    let mut ids = HashSet::new();
    for line in text.lines() {
        let line: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a half line in the journal ({e}): {line}\n{text}"));
        if let Some(id) = line["job"]["id"].as_str().or(line["id"].as_str()) {
            ids.insert(id.to_string());
        }
    }
    for id in &ids {
        let job = served(&agent, id, "in the journal");
        assert_eq!(job["argv"], json!(["/bin/sleep", nap]), "{job}");
        assert_eq!(job["rule"], "sleep", "{job}");
        assert!(job["submitted_at"].is_string(), "{job}");
        assert_eq!(job["status"], "interrupted", "{job}");
    }
    // Groups the journal knew of were ended by the restarts.
    let groups: Vec<u32> = agent
        .journal()
        .iter()
        .filter(|l| l["ev"] == "start")
        .filter_map(|l| l["pgid"].as_u64())
        .map(|p| p as u32)
        .collect();
    for pgid in groups {
        assert!(
            wait_until(Duration::from_secs(10), || group_members(pgid).is_empty()),
            "group {pgid} of an interrupted job is still alive"
        );
    }
    // Result files only for jobs that have a record.
    for entry in std::fs::read_dir(agent.dir.path().join("results")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let id = name.trim_start_matches("agent-").trim_end_matches(".txt");
        assert!(ids.contains(id), "result file {name} has no record");
    }
    // A process killed with the agent in its first 5 ms, before its group was journaled,
    // is not known to the next start (the known limit in SECURITY.md): clean up.
    for pid in sleepers(nap) {
        unsafe_kill(pid, 9);
    }
}

/// Pids of `/bin/sleep DURATION` processes.
fn sleepers(duration: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c == format!("/bin/sleep\0{duration}\0").as_bytes())
        })
        .collect()
}

/// SIGKILL to the agent strace runs and to strace (their process group), and waits
/// until the agent is gone.
fn kill_traced(agent: &mut Agent) {
    let strace = agent.pid();
    let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .unwrap_or_default();
    let children: Vec<Seen> = children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .map(Seen::now)
        .collect();
    agent.kill9();
    for child in children {
        assert!(wait_until(Duration::from_secs(10), || !child.alive()));
    }
}

/// On a disk whose every sync takes 2 s, back-to-back `no_pin` jobs (which need no
/// sync) never wait for one, not even when the journal thread lags behind in its group
/// commits and the file is far past its compaction: that rewrite's sync is done aside.
#[test]
fn no_pin_jobs_never_wait_for_a_sync_on_a_slow_disk() {
    let Some(wrapper) = strace_delaying(&["fsync", "fdatasync"], 2000) else {
        return;
    };
    let rules = json!([{"name": "true", "argv": ["/bin/true"], "no_pin": true}]);
    // A history of 10: compaction is due every few jobs, and the job threads find the
    // file well past it while the journal thread sits in a 2 s sync.
    let mut agent = Agent::prepare_in(
        "d-nopin-slow",
        json!({"rules": rules, "jobs": {"history": 10}}),
    );
    agent.spawn_wrapped(&wrapper, &[]);
    let mut longest = Duration::ZERO;
    let mut run = |n: usize| {
        for _ in 0..n {
            let started = Instant::now();
            let r = agent.post_json("/run", &json!({"command": "/bin/true"}));
            longest = longest.max(started.elapsed());
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["status"], "succeeded", "{}", r.body);
        }
    };
    // One job, whose end the journal thread syncs 0.2 s later, for 2 s; meanwhile the
    // file passes the compaction trigger by far (2 lines a job).
    run(1);
    std::thread::sleep(Duration::from_millis(600));
    run(60);
    // Compacted all the same, within a few syncs: 61 jobs are 122 lines.
    let lines = || {
        std::fs::read_to_string(agent.journal_path())
            .unwrap_or_default()
            .lines()
            .count()
    };
    let compacted = wait_until(Duration::from_secs(20), || lines() < 60);
    let left = lines();
    kill_traced(&mut agent);
    println!("no_pin on a 2 s-sync disk: longest of 61 {longest:?}; journal {left} lines");
    assert!(
        longest < Duration::from_millis(1800),
        "a no_pin job took {longest:?}: it waited for a 2 s sync"
    );
    assert!(compacted, "{left} journal lines for a history of 10");
}

#[test]
fn a_second_request_with_the_same_code_while_the_first_is_synced_is_refused() {
    // Every fsync takes 2 s: the first code is being made durable for at least that.
    let Some(wrapper) = strace_delaying(&["fsync", "fdatasync"], 2000) else {
        return;
    };
    let rules = json!([{"name": "echo", "argv": ["/bin/echo", "**"]}]);
    let mut agent = Agent::prepare_in("d-slow", json!({"totp": {"step_s": 30}, "rules": rules}));
    agent.spawn_wrapped(&wrapper, &[]);
    // Stay clear of a step boundary, so both requests carry the current code.
    while crate::common::now() % 30 > 15 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let code = agent.code();
    let addr = agent.addr;
    let first = {
        let code = code.clone();
        std::thread::spawn(move || {
            let body = json!({"pin": code, "command": "echo first"}).to_string();
            let started = Instant::now();
            let r = raw_post(addr, "/run", &body);
            (r, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // The loop is free while the code is being synced: others are answered at once
    // (an agent that synced on its loop would answer after 2 s).
    let asked = Instant::now();
    assert!(raw_get_health(addr), "/health not answered");
    let health_took = asked.elapsed();
    let second = raw_post(
        addr,
        "/run",
        &json!({"pin": code, "command": "echo second"}).to_string(),
    )
    .unwrap();
    let (first, took) = first.join().unwrap();
    kill_traced(&mut agent);
    assert!(
        health_took < Duration::from_millis(1000),
        "/health took {health_took:?}"
    );
    let (status, body) = first.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        took >= Duration::from_millis(1900),
        "{took:?}: not synced first?"
    );
    assert_eq!(
        second.0, 401,
        "the same code was accepted twice: {}",
        second.1
    );
    let log = agent.log();
    assert_eq!(log.matches("EXECUTING").count(), 1, "{log}");
    assert!(
        log.contains("REUSED PIN attempt for command: echo second"),
        "{log}"
    );
}

/// `GET /health` on a fresh connection: answered 200 within 5 s.
fn raw_get_health(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// A small disk at `point`, in a mount namespace of its own that a `sleep` holds (so no
/// other test's agent or mount check sees it): agents started with [`Self::wrapper`]
/// share it, across restarts. Unmounted with the namespace, and its loop device
/// detached, when dropped.
struct SmallDisk {
    holder: std::process::Child,
    point: std::path::PathBuf,
    /// The ext4 disk's loop device (`/dev/loopN`).
    device: Option<String>,
}

impl SmallDisk {
    /// A 256 KiB tmpfs: filled in a moment, and remounted read-only or read-write at will
    /// (when nothing has a file on it open for writing).
    fn tmpfs(point: &std::path::Path) -> SmallDisk {
        SmallDisk::held(
            point,
            "mount -t tmpfs -o size=256k,mode=0755 sa-small",
            None,
        )
    }

    /// ext4 on a loop device, mounted `errors=remount-ro` as a Pi's root is: the kernel
    /// makes it read-only after a disk error ([`Self::fail`]), and only `fsck` and a new
    /// mount make it writable again ([`Self::repair`]). `None` (a loud skip; a failure
    /// under CI=true) without mkfs.ext4, a loop device or ext4's error trigger.
    fn ext4(point: &std::path::Path, image: &std::path::Path) -> Option<SmallDisk> {
        let device = crate::common::loop_ext4(image, 8 << 20)?;
        let mount = format!("mount -o errors=remount-ro {device}");
        let disk = SmallDisk::held(point, &mount, Some(device));
        if !disk.trigger().exists() {
            crate::common::skip_or_fail(&format!(
                "{} is missing: this kernel cannot be told to fail an ext4 disk",
                disk.trigger().display()
            ));
            return None;
        }
        Some(disk)
    }

    /// `mount SOURCE POINT` in a new namespace, held by a `sleep`.
    fn held(point: &std::path::Path, mount: &str, device: Option<String>) -> SmallDisk {
        std::fs::create_dir(point).unwrap();
        let script = format!("{mount} {} && exec sleep 600", point.display());
        let holder = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .spawn_retrying()
            .unwrap();
        let disk = SmallDisk {
            holder,
            point: point.to_path_buf(),
            device,
        };
        let mountinfo = format!("/proc/{}/mountinfo", disk.holder.id());
        let shown = format!(" {} ", point.display());
        let mounted = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&mountinfo).is_ok_and(|m| m.contains(&shown))
        });
        assert!(mounted, "nothing was mounted at {}", point.display());
        disk
    }

    /// The journal of an agent whose state dir is on this disk, as this process sees it.
    fn journal(&self) -> std::path::PathBuf {
        let path = self.point.join("state/jobs.jsonl");
        format!("/proc/{}/root{}", self.holder.id(), path.display()).into()
    }

    /// Runs the agent in the disk's namespace.
    fn wrapper(&self) -> Vec<String> {
        let pid = self.holder.id().to_string();
        ["nsenter", "-t", &pid, "-m"].map(String::from).to_vec()
    }

    /// `sh -c script` in the disk's namespace: whether it exited 0.
    fn sh(&self, script: &str) -> bool {
        self.run(&["sh", "-c", script])
    }

    /// `argv` in the disk's namespace: whether it exited 0.
    fn run(&self, argv: &[&str]) -> bool {
        let holder = self.holder.id().to_string();
        std::process::Command::new("nsenter")
            .args(["-t", &holder, "-m"])
            .args(argv)
            .stderr(std::process::Stdio::null())
            .status_retrying()
            .unwrap()
            .success()
    }

    /// Writes zeros until the disk has no room left.
    fn fill(&self) {
        self.sh(&format!("cat /dev/zero > {}/filler", self.point.display()));
    }

    fn free(&self) {
        self.sh(&format!("rm -f {}/filler", self.point.display()));
    }

    /// The tmpfs remounted `ro` or `rw`. Read-only waits (`EBUSY`) until the files of an
    /// agent just killed are let go.
    fn remount(&self, how: &str) {
        let remount = format!("mount -o remount,{how} {}", self.point.display());
        let done = wait_until(Duration::from_secs(10), || self.sh(&remount));
        assert!(done, "{remount}");
    }

    /// ext4's own test hook: the error a failing SD card gives, which makes the kernel
    /// remount the disk read-only.
    fn trigger(&self) -> std::path::PathBuf {
        let device = self.device.as_deref().unwrap_or_default();
        let name = device.rsplit('/').next().unwrap_or_default();
        std::path::Path::new("/sys/fs/ext4")
            .join(name)
            .join("trigger_fs_error")
    }

    fn fail(&self) {
        std::fs::write(self.trigger(), "1").unwrap();
    }

    /// A power cut: the file system stops at once, and what was not synced is lost
    /// (ext4's `FS_IOC_SHUTDOWN` with `NOLOGFLUSH`, as xfstests' `godown` does).
    fn cut_power(&self) {
        const SHUTDOWN: &str = "import fcntl, os, struct, sys\n\
            fd = os.open(sys.argv[1], os.O_RDONLY)\n\
            fcntl.ioctl(fd, 0x8004587D, struct.pack('I', 2))";
        let point = self.point.to_str().unwrap();
        assert!(
            self.run(&["python3", "-c", SHUTDOWN, point]),
            "FS_IOC_SHUTDOWN"
        );
    }

    /// What the owner does once the agent is stopped (or the box is powered again):
    /// unmount, `fsck`, mount again.
    fn repair(&self) {
        let device = self.device.as_deref().unwrap_or_default();
        let point = self.point.display();
        // Once the kernel has let go of a killed agent's files.
        let unmount = format!("umount {point}");
        assert!(
            wait_until(Duration::from_secs(10), || self.sh(&unmount)),
            "{unmount}"
        );
        // 1: errors were corrected, as after any error the kernel recorded.
        self.sh(&format!("e2fsck -fy {device} >/dev/null; [ $? -le 1 ]"));
        assert!(
            self.sh(&format!("mount -o errors=remount-ro {device} {point}")),
            "mount {device} after fsck"
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if let Some(device) = &self.device {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(device)
                .status_retrying();
        }
    }
}

#[test]
fn a_full_state_disk_refuses_codes_it_cannot_record_and_never_stops_the_agent() {
    // An SD card full of logs holds the state dir, the results and the log: a used code
    // that cannot be recorded is never acted on, wrong codes still lock out, no_pin rules
    // still run, the agent starts on the full disk, and all is well once there is room.
    let (disk, mut agent) = agent_on_tmpfs("d-full");
    let r = mark(&agent, 0);
    assert_eq!(r.status, 200, "{}", r.body);
    // The journal keeps zeros written ahead of its lines (so that a code's sync is one
    // flush): written by the group commit after that job.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let bytes = std::fs::read(disk.journal()).unwrap_or_default();
            let lines = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            bytes.len() >= lines + 32 * 1024
        }),
        "no zeros ahead of the journal's lines"
    );

    disk.fill();
    let job = agent
        .post_json("/run", &json!({"command": "uptime"}))
        .json();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(
        job["result_error"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left"),
        "{job}"
    );
    // Those zeros take the lines of jobs (and codes) on the full disk, until they are
    // used up and a line cannot be written.
    let mut jobs = 0;
    while !agent
        .get("/health")
        .body
        .contains("jobs.jsonl: cannot write")
    {
        let job = agent.post_json("/run", &json!({"command": "uptime"}));
        assert_eq!(job.status, 200, "{}", job.body);
        jobs += 1;
        assert!(jobs < 400, "{jobs} jobs journaled on a full disk");
    }
    assert!(jobs > 10, "only {jobs} jobs journaled over the zeros");
    // The journal's last page may take a line or two more; then a code is refused.
    let mut refused = None;
    for n in 1..=12 {
        let r = mark(&agent, n);
        match r.status {
            200 => assert!(marked(&agent, n), "job {n} answered 200 but did not run"),
            503 => {
                refused = Some((n, r.json()));
                break;
            }
            other => panic!("job {n}: {other} {}", r.body),
        }
    }
    let (n, err) = refused.expect("every code was accepted on a full disk");
    assert_eq!(err["error"], "unavailable", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("state_dir"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !marked(&agent, n),
        "the code that could not be recorded ran"
    );
    // Wrong codes: counted in memory though the count cannot be saved, and said so.
    assert_eq!(
        wrong_codes(&agent),
        [401, 401, 401, 429],
        "lockout on a full disk"
    );
    // The agent answers, and says what is wrong: a monitor sees it before a code fails.
    degraded(&agent, "No space left");

    // Restarted on the full disk: it starts, says why codes are refused, runs no_pin.
    agent.terminate();
    agent.spawn_wrapped(&disk.wrapper(), &[]);
    std::thread::sleep(Duration::from_secs(2));
    refuses_codes_runs_no_pin(&agent, 50, "No space left");

    degraded(&agent, "No space left");

    // Room again: codes run, and after a restart the jobs that ran are there.
    disk.free();
    let r = mark(&agent, 51);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(agent.health_ok(), "{}", agent.get("/health").body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    agent.terminate();
    agent.spawn_wrapped(&disk.wrapper(), &[]);
    assert_eq!(
        served(&agent, &id, "after the disk had room again")["status"],
        "succeeded"
    );
    let r = mark(&agent, 52);
    assert_eq!(r.status, 200, "{}", r.body);
    said_all(
        &agent,
        &[
            "free space on its disk",
            "wrong codes and lockouts are counted in memory only",
            "the journal was read but not compacted",
        ],
    );
    assert!(!marked(&agent, 99) && marked(&agent, 52));
}

/// `/health` answers 200 with status `degraded`, and names the state disk's problem
/// (`why`) and the fix; `/metrics` says it too.
fn degraded(agent: &Agent, why: &str) {
    let health = agent.get("/health");
    assert_eq!(health.status, 200, "{}", health.body);
    let health = health.json();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["state_disk"]["writable"], false, "{health}");
    let problem = health["state_disk"]["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains(why) && problem.contains("state_dir"),
        "{health}"
    );
    let metrics = agent.get("/metrics").body;
    assert!(
        metrics.contains("sudo_agent_state_disk_writable 0"),
        "{metrics}"
    );
}

/// Four wrong codes in a row: their statuses.
fn wrong_codes(agent: &Agent) -> Vec<u16> {
    let body = json!({"pin": "000000", "argv": touch(agent.dir.path(), 99)});
    (0..4)
        .map(|_| agent.post_json("/run", &body).status)
        .collect()
}

/// Every one of `lines` is in the agent's stderr (its log, wherever the log file is).
fn said_all(agent: &Agent, lines: &[&str]) {
    let stderr = agent.stderr();
    for said in lines {
        assert!(stderr.contains(said), "{said:?} not in:\n{stderr}");
    }
}

/// The rules and limits of the disk tests: a `no_pin` rule, and one that leaves a mark.
fn disk_config(dir: &std::path::Path, disk: &SmallDisk) -> Value {
    crate::common::base_config(
        dir,
        json!({
            "state_dir": disk.point.join("state"),
            "results": {"dir": disk.point.join("results")},
            "log_file": disk.point.join("audit.log"),
            "totp": {"step_s": 1},
            "throttle": {"max_failures": 3, "lockout_s": 2},
            "rules": [
                {"name": "uptime", "argv": ["/usr/bin/uptime"], "no_pin": true},
                {"name": "sleep", "argv": ["/bin/sleep", "*"], "no_pin": true},
                {"name": "mark", "argv": ["/usr/bin/touch", {"re": format!("{}/ran-[0-9]+", dir.display())}]}
            ]
        }),
    )
}

/// The argv of the `mark` rule that creates `ran-N` in `dir`.
fn touch(dir: &std::path::Path, n: usize) -> Value {
    json!(["/usr/bin/touch", dir.join(format!("ran-{n}"))])
}

/// A code-bearing job that creates `ran-N` in the test's dir.
fn mark(agent: &Agent, n: usize) -> crate::common::Reply {
    let body = json!({"pin": agent.fresh_code(), "argv": touch(agent.dir.path(), n)});
    agent.post_json("/run", &body)
}

fn marked(agent: &Agent, n: usize) -> bool {
    agent.dir.path().join(format!("ran-{n}")).exists()
}

/// What a disk that refuses writes must give: a no_pin job runs (its result file not
/// written, and said), a code is refused with 503 and runs nothing.
fn refuses_codes_runs_no_pin(agent: &Agent, n: usize, why: &str) {
    let job = agent
        .post_json("/run", &json!({"command": "uptime"}))
        .json();
    assert_eq!(job["status"], "succeeded", "{job}");
    let error = job["result_error"].as_str().unwrap_or_default();
    assert!(error.contains(why), "{job}");
    let r = mark(agent, n);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "unavailable", "{}", r.body);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marked(agent, n), "the code that could not be recorded ran");
}

/// An agent (config [`disk_config`] with `overrides`) whose state, results and log are
/// on a new ext4 disk ([`SmallDisk::ext4`]), started; `None` where there is none.
fn agent_on_ext4(tag: &str, overrides: Value) -> Option<(SmallDisk, Agent)> {
    let ext4 = |dir: &std::path::Path| SmallDisk::ext4(&dir.join("disk"), &dir.join("disk.img"));
    agent_on(tag, ext4, overrides)
}

/// [`agent_on_ext4`] on a [`SmallDisk::tmpfs`].
fn agent_on_tmpfs(tag: &str) -> (SmallDisk, Agent) {
    let tmpfs = |dir: &std::path::Path| Some(SmallDisk::tmpfs(&dir.join("disk")));
    agent_on(tag, tmpfs, json!({})).unwrap()
}

fn agent_on(
    tag: &str,
    disk: impl FnOnce(&std::path::Path) -> Option<SmallDisk>,
    overrides: Value,
) -> Option<(SmallDisk, Agent)> {
    let dir = crate::common::TempDir::new(tag);
    let disk = disk(dir.path())?;
    let mut cfg = disk_config(dir.path(), &disk);
    crate::common::merge(&mut cfg, overrides);
    let mut agent = Agent::prepare(dir, &cfg);
    agent.spawn_wrapped(&disk.wrapper(), &[]);
    Some((disk, agent))
}

/// The power goes: the disk stops ([`SmallDisk::cut_power`]), then [`power_back`].
fn power_cut(disk: &SmallDisk, agent: &mut Agent) {
    disk.cut_power();
    power_back(disk, agent);
}

/// After a cut: the agent dies with the box; once it is up again the disk is checked
/// and the agent started.
fn power_back(disk: &SmallDisk, agent: &mut Agent) {
    agent.kill9();
    disk.repair();
    agent.spawn_wrapped(&disk.wrapper(), &[]);
}

/// Jobs whose end a crash may have taken: each is gone whole (404) or served whole.
fn gone_or_whole(agent: &Agent, ids: &[String], context: &str) {
    for id in ids {
        let r = agent.get(&format!("/job/{id}"));
        match r.status {
            404 => {}
            200 => served_after_crash(agent, id, context),
            other => panic!("{context}: {id}: {other} {}", r.body),
        }
    }
}

#[test]
fn a_state_disk_the_kernel_made_read_only_refuses_codes_and_the_agent_still_starts_on_it() {
    // A failing SD card: ext4 meets an error and the kernel remounts the disk holding the
    // state, the results and the audit log read-only under the running agent. A code
    // whose use cannot be recorded never runs, wrong codes still lock out, no_pin rules
    // run, a restart on the read-only disk serves, and after fsck all is as before.
    let Some((disk, mut agent)) = agent_on_ext4("d-ro", json!({})) else {
        return;
    };
    let r = mark(&agent, 0);
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();

    disk.fail();
    refuses_codes_runs_no_pin(&agent, 1, "Read-only file system");
    assert_eq!(
        wrong_codes(&agent),
        [401, 401, 401, 429],
        "lockout on a read-only disk"
    );

    // Restarted on the read-only disk (systemd's Restart=, the watchdog): it serves.
    agent.terminate();
    agent.spawn_wrapped(&disk.wrapper(), &[]);
    served_after_crash(&agent, &id, "on the read-only disk");
    // Known from start-up on, before any code: the journal could not be opened to append.
    degraded(&agent, "Read-only file system");
    std::thread::sleep(Duration::from_secs(2));
    refuses_codes_runs_no_pin(&agent, 2, "Read-only file system");
    said_all(
        &agent,
        &[
            "its file system is mounted read-only (see: findmnt -T",
            "AUDIT cannot write the log file: log file",
            "opened for reading only, until the disk takes writes again",
        ],
    );

    // Stopped, checked, mounted again: as before, with the job that ran before.
    agent.terminate();
    disk.repair();
    agent.spawn_wrapped(&disk.wrapper(), &[]);
    served_after_crash(&agent, &id, "after fsck");
    let r = mark(&agent, 3);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(marked(&agent, 0) && marked(&agent, 3));
    assert!(!marked(&agent, 99));
}

#[test]
fn an_agent_started_on_a_read_only_state_disk_runs_codes_once_it_is_writable_again() {
    // The disk was read-only when the agent started (a mount the owner made so, or one
    // the kernel did), after a crash cut a job off: history is served, the job reads
    // interrupted, codes are refused, and once it is remounted read-write the journal
    // and the audit log are opened again, without a restart, and the job's end is
    // journaled then, so the next start-up does not judge it again.
    let (disk, mut agent) = agent_on_tmpfs("d-ro-start");
    let r = mark(&agent, 0);
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = agent.post_json("/run", &json!({"command": "sleep 60", "wait": 0}));
    assert_eq!(r.status, 202, "{}", r.body);
    let cut = r.json()["id"].as_str().unwrap().to_owned();
    let running = || served(&agent, &cut, "queued")["status"] == "running";
    assert!(wait_until(Duration::from_secs(5), running));
    agent.kill9();

    disk.remount("ro");
    agent.spawn_wrapped(&disk.wrapper(), &[]);
    assert_eq!(
        served(&agent, &id, "on the read-only disk")["status"],
        "succeeded"
    );
    assert_eq!(served(&agent, &cut, "cut off")["status"], "interrupted");
    refuses_codes_runs_no_pin(&agent, 1, "Read-only file system");
    degraded(&agent, "Read-only file system");

    disk.remount("rw");
    let r = mark(&agent, 2);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(marked(&agent, 2));
    assert!(agent.health_ok(), "{}", agent.get("/health").body);
    let later = r.json()["id"].as_str().unwrap().to_owned();
    let log = disk.point.join("audit.log");
    let logged = format!("grep -q 'EXECUTING \\[{later}\\]' {}", log.display());
    assert!(
        wait_until(Duration::from_secs(5), || disk.sh(&logged)),
        "the audit log was not written once the disk took writes"
    );
    said_all(
        &agent,
        &[
            "jobs.jsonl can be written again",
            "the state disk takes writes again, after",
        ],
    );
    agent.terminate();
    agent.spawn_wrapped(&disk.wrapper(), &[]);
    assert_eq!(
        served(&agent, &later, "after the restart")["status"],
        "succeeded"
    );
    assert_eq!(served(&agent, &cut, "restarted")["status"], "interrupted");
    let judged = format!("INTERRUPTED [{cut}]");
    assert_eq!(
        agent.stderr().matches(&judged).count(),
        1,
        "the job cut off was judged again: its end was not journaled"
    );
    assert!(!marked(&agent, 1));
}

#[test]
fn after_a_power_cut_an_answered_code_stays_used_and_a_lockout_stays() {
    // What SIGKILL cannot show (the page cache outlives the agent): the power goes just
    // after a code-bearing job (and ten no_pin ones) is answered, and just after the
    // third wrong code. What was promised on disk before those answers must be there
    // after fsck and a restart, and nothing half.
    // A code stays valid across the cut and the restart; so does the lockout.
    let overrides = json!({"totp": {"step_s": 10}, "throttle": {"lockout_s": 600}});
    let Some((disk, mut agent)) = agent_on_ext4("d-power", overrides) else {
        return;
    };
    let code = agent.code();
    let base = agent.dir.path().to_path_buf();
    let r = agent.post_json("/run", &json!({"pin": code, "argv": touch(&base, 0)}));
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    // no_pin jobs answered just before the cut: not synced first, so they may be lost
    // whole (README), but never half.
    let unsynced: Vec<String> = (0..10)
        .map(|_| {
            let r = agent.post_json("/run", &json!({"command": "uptime"}));
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    power_cut(&disk, &mut agent);
    served_after_crash(&agent, &id, "after the power cut");
    gone_or_whole(&agent, &unsynced, "a no_pin job");
    let r = agent.post_json("/run", &json!({"pin": code, "argv": touch(&base, 1)}));
    assert_eq!(r.status, 401, "the code was accepted again: {}", r.body);
    assert!(marked(&agent, 0) && !marked(&agent, 1));

    // The reused code was the first of the three failures.
    assert_eq!(wrong_codes(&agent), [401, 401, 429, 429]);
    power_cut(&disk, &mut agent);
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "argv": touch(&base, 2)}),
    );
    assert_eq!(r.status, 429, "the lockout was lost: {}", r.body);
    assert!(!marked(&agent, 2) && !marked(&agent, 99));
}

#[test]
fn a_power_cut_among_compactions_leaves_a_journal_that_reads_and_keeps_the_used_code() {
    // A history of 10 jobs compacts every ten or so; two clients stream no_pin jobs and
    // the power goes after 15, 40 and 90 answers. Each time the agent must start on what
    // is left, serve only whole records, and still know the code used before.
    let overrides =
        json!({"totp": {"step_s": 10}, "throttle": {"max_failures": 10}, "jobs": {"history": 10}});
    let Some((disk, mut agent)) = agent_on_ext4("d-power-compact", overrides) else {
        return;
    };
    let code = agent.code();
    let base = agent.dir.path().to_path_buf();
    let r = agent.post_json("/run", &json!({"pin": code, "argv": touch(&base, 0)}));
    assert_eq!(r.status, 200, "{}", r.body);
    for (round, cut_after) in [15, 40, 90].into_iter().enumerate() {
        let stop = AtomicBool::new(false);
        let answered = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let body = r#"{"command": "uptime"}"#;
                        let Some((200, body)) = raw_post(agent.addr, "/run", body) else {
                            break;
                        };
                        let job: Value = serde_json::from_str(&body).unwrap();
                        answered
                            .lock()
                            .unwrap()
                            .push(job["id"].as_str().unwrap().to_owned());
                    }
                });
            }
            let enough = || answered.lock().unwrap().len() >= cut_after;
            assert!(
                wait_until(Duration::from_secs(60), enough),
                "round {round}: too slow"
            );
            disk.cut_power();
            stop.store(true, Ordering::Relaxed);
        });
        power_back(&disk, &mut agent);
        let answered = answered.into_inner().unwrap();
        gone_or_whole(&agent, &answered, &format!("round {round}"));
        let r = agent.post_json(
            "/run",
            &json!({"pin": code, "argv": touch(&base, round + 1)}),
        );
        assert_eq!(
            r.status, 401,
            "round {round}: the code was accepted again: {}",
            r.body
        );
    }
    assert!((1..=3).all(|n| !marked(&agent, n)));
}

#[test]
fn after_a_power_cut_a_result_file_never_shows_another_jobs_output() {
    // Five result files written back to disk, then recycled for five new jobs; the
    // power goes once the journal has synced their ends (and with them the renames),
    // before the new bytes are written back: on disk, each new name holds an old job's
    // record. Start-up must not leave those for anyone to read.
    let overrides = json!({
        "results": {"max_files": 5},
        "rules": [{"name": "seq", "argv": ["/usr/bin/seq", "-f", "*", "1", "2000"], "no_pin": true}]
    });
    let Some((disk, mut agent)) = agent_on_ext4("d-power-results", overrides) else {
        return;
    };
    let seq = |agent: &Agent, word: &str| {
        let r = agent.post_json(
            "/run",
            &json!({"command": format!("seq -f {word}%g 1 2000")}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["id"].as_str().unwrap().to_owned()
    };
    for n in 0..5 {
        seq(&agent, &format!("old{n}-"));
    }
    assert!(disk.sh("sync"));
    let new: Vec<String> = (0..5).map(|n| seq(&agent, &format!("new{n}-"))).collect();
    std::thread::sleep(Duration::from_millis(500));
    power_cut(&disk, &mut agent);
    let mut removed = 0;
    for (n, id) in new.iter().enumerate() {
        let job = served(&agent, id, "synced before the cut");
        let Some(file) = job["result_file"].as_str() else {
            let why = job["result_error"].as_str().unwrap_or_default();
            assert!(why.contains("a power cut left it"), "{job}");
            removed += 1;
            continue;
        };
        let text = std::fs::read_to_string(format!("/proc/{}/root{file}", disk.holder.id()))
            .unwrap_or_else(|e| panic!("{id}'s record names {file}, which cannot be read: {e}"));
        assert!(
            text.starts_with(&format!("id: {id}\n")) && text.contains(&format!("new{n}-2000")),
            "{id}'s result file holds another job's record: {}",
            &text[..text.len().min(200)]
        );
    }
    if removed > 0 {
        let said = "that did not hold their own job's record";
        assert!(agent.stderr().contains(said), "{}", agent.stderr());
    }
    // Restarted again: the records still say their file went, and why.
    agent.terminate();
    agent.spawn_wrapped(&disk.wrapper(), &[]);
    for id in &new {
        let job = served(&agent, id, "after a second restart");
        if let Some(file) = job["result_file"].as_str() {
            let on_disk = format!("/proc/{}/root{file}", disk.holder.id());
            assert!(
                std::path::Path::new(&on_disk).exists(),
                "{id} names a file that is gone: {job}"
            );
        }
    }
}

/// Result files in `dir` that do not begin with their own id line (a file made ahead
/// for a next job holds an older job's record, or nothing, until that job writes it).
fn not_their_own(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("agent-")
            .and_then(|n| n.strip_suffix(".txt"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if !text.starts_with(&format!("id: {id}\n")) {
            found.push(name);
        }
    }
    found
}

#[test]
fn a_result_file_made_ahead_is_gone_after_a_stop_and_after_a_crash() {
    // At the bound each answered job's thread makes the next job's file ahead of it (the
    // oldest result renamed, the first time a new one): until that job writes it, it
    // holds an older job's record, or nothing.
    let mut agent = Agent::start("d-ahead", json!({"results": {"max_files": 3}}));
    let results = agent.dir.path().join("results");
    let run = |agent: &Agent| {
        let r = agent.post_json("/run", &json!({"argv": ["/usr/bin/uptime"]}));
        assert_eq!(r.status, 200, "{}", r.body);
        let job = r.json();
        let file = job["result_file"].as_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let id = job["id"].as_str().unwrap();
        assert!(text.starts_with(&format!("id: {id}\n")), "{file}: {text}");
    };
    let one_ahead = |results: &std::path::Path| {
        wait_until(Duration::from_secs(5), || not_their_own(results).len() == 1)
    };
    for _ in 0..5 {
        run(&agent);
    }
    assert!(
        one_ahead(&results),
        "none made ahead: {:?}",
        not_their_own(&results)
    );
    assert!(agent.terminate().success());
    assert_eq!(
        not_their_own(&results),
        Vec::<String>::new(),
        "left at the stop"
    );
    assert!(std::fs::read_dir(&results).unwrap().count() <= 3);

    agent.spawn(&[]);
    for _ in 0..3 {
        run(&agent);
    }
    assert!(
        one_ahead(&results),
        "none made ahead: {:?}",
        not_their_own(&results)
    );
    agent.kill9();
    assert_eq!(not_their_own(&results).len(), 1);
    agent.spawn(&[]);
    assert!(agent.health_ok());
    assert_eq!(
        not_their_own(&results),
        Vec::<String>::new(),
        "left after the crash"
    );
    run(&agent);
}
