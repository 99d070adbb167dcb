//! The job lifecycle through the real binary: 202 and long-polls, the queue, cancel,
//! the journal across kill -9 and SIGTERM, bounded history and results, notify.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::common::{
    Agent, Retrying, TempDir, base_config, group_members, job_cgroup, rss_kib, threads, wait_until,
};
use serde_json::{Value, json};

/// Tests that measure latency or push thousands of jobs run one at a time, so they do
/// not disturb each other's figures on a small machine.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// No-code rules, so tests need not wait for fresh codes except where codes matter. The
/// shell takes only the scripts listed: a no-code `sh -c "*"` would be a root shell for
/// any local process, and `check` refuses it.
fn rules() -> Value {
    json!([
        {"name": "sleep", "argv": ["/bin/sleep", "*"], "no_pin": true},
        {"name": "true", "argv": ["/bin/true"], "no_pin": true},
        {"name": "echo", "argv": ["/bin/echo", "**"], "no_pin": true},
        {"name": "sh", "argv": ["/bin/sh", "-c", [
            "sleep 30 & sleep 30",
            "sleep 0.5; exit 3",
            "trap '' TERM; sleep 30 & sleep 30"
        ]], "no_pin": true}
    ])
}

fn id_of(reply: &crate::common::Reply) -> String {
    reply.json()["id"].as_str().unwrap().to_string()
}

/// Submits `argv` without waiting (202) and returns the id once its group is journaled.
fn start_background(agent: &Agent, argv: &[&str]) -> (String, u32) {
    let r = agent.post_json("/run", &json!({"argv": argv, "wait": 0}));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = id_of(&r);
    assert!(
        wait_until(Duration::from_secs(5), || agent.job_pgid(&id).is_some()),
        "no start line for {id} in the journal: {:?}",
        agent.journal()
    );
    let pgid = agent.job_pgid(&id).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || group_members(pgid).len() >= 2),
        "job group {pgid} never had its two processes"
    );
    (id, pgid)
}

#[test]
fn wait_zero_answers_202_and_parked_long_polls_cost_no_threads() {
    let _serial = serial();
    let agent = Agent::start("longpoll", json!({"rules": rules()}));
    let r = agent.post_json("/run", &json!({"command": "sleep 2", "wait": 0}));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = id_of(&r);
    assert_eq!(
        r.json(),
        json!({"id": id, "status": "running", "poll": format!("/job/{id}")})
    );

    let parked_at = Instant::now();
    let mut polls: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(agent.addr).unwrap();
            let req = format!(
                "GET /job/{id}?wait=10 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A loop that walked the parked polls per request would take seconds; qemu-user
    // translating the agent (first run of a path) takes a bound of its own.
    let bound = Duration::from_millis(if crate::common::emulated() { 500 } else { 100 });
    for _ in 0..5 {
        let t = Instant::now();
        assert!(agent.health_ok());
        let took = t.elapsed();
        assert!(took < bound, "/health took {took:?} with 100 parked polls");
    }
    let health = agent.get("/health").json();
    assert_eq!(health["running"], 1);
    // The loop thread, the journal, audit, users and mounts threads, and one thread per
    // running job (qemu-user adds one of its own).
    let n = threads(agent.pid());
    assert!(
        n <= 5 + 1 + usize::from(crate::common::emulated()),
        "{n} threads with 1 running job and 100 parked long-polls"
    );

    for s in &mut polls {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(r#""status":"succeeded""#), "{text}");
        assert!(text.contains(&id), "{text}");
    }
    assert!(
        parked_at.elapsed() > Duration::from_millis(1500),
        "the polls answered before the job ended"
    );
    let r = agent.get(&format!("/job/{id}?wait=10"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "succeeded");
    assert_eq!(r.json()["exit_code"], 0);
}

#[test]
fn queue_runs_in_order_and_refuses_beyond_max_queue_without_using_the_code() {
    let agent = Agent::start(
        "queue",
        json!({"jobs": {"max_concurrent": 1, "max_queue": 2}, "rules": rules()}),
    );
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let r = agent.post_json("/run", &json!({"command": "sleep 1", "wait": 0}));
            assert_eq!(r.status, 202, "{}", r.body);
            let want = if i == 0 { "running" } else { "queued" };
            assert_eq!(r.json()["status"], want, "submission {i}");
            id_of(&r)
        })
        .collect();
    let health = agent.get("/health").json();
    assert_eq!(
        (health["running"].as_u64(), health["queued"].as_u64()),
        (Some(1), Some(2))
    );

    let code = agent.code();
    let r = agent.post_json(
        "/run",
        &json!({"pin": code, "command": "echo over", "wait": 0}),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "busy");

    let records: Vec<Value> = ids
        .iter()
        .map(|id| {
            let r = agent.get(&format!("/job/{id}?wait=10"));
            assert_eq!(r.status, 200);
            r.json()
        })
        .collect();
    for pair in records.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(b["status"], "succeeded");
        // RFC 3339 UTC with fixed width: string order is time order.
        let (a_end, b_start) = (
            a["finished_at"].as_str().unwrap(),
            b["started_at"].as_str().unwrap(),
        );
        assert!(
            a_end <= b_start,
            "job {} started at {b_start}, before {} ended at {a_end}",
            b["id"],
            a["id"]
        );
    }
    let log = agent.log();
    let pos = |line: String| {
        log.find(&line)
            .unwrap_or_else(|| panic!("no {line:?} in {log}"))
    };
    for id in &ids {
        pos(format!("QUEUED [{id}]: sleep 1"));
    }
    let order: Vec<usize> = ids
        .iter()
        .map(|id| pos(format!("EXECUTING [{id}]")))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "EXECUTING out of order: {order:?}"
    );

    // The 503 did not use the code up.
    let r = agent.post_json("/run", &json!({"pin": code, "command": "echo later"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["stdout"], "later\n");
}

#[test]
fn cancel_drops_a_queued_job_and_stops_a_running_group() {
    let agent = Agent::start(
        "cancel",
        json!({"totp": {"step_s": 1}, "jobs": {"max_concurrent": 1, "kill_grace_s": 1}, "rules": rules()}),
    );
    let (running, pgid) = start_background(&agent, &["sh", "-c", "sleep 30 & sleep 30"]);
    let r = agent.post_json("/run", &json!({"command": "echo never", "wait": 0}));
    assert_eq!(r.json()["status"], "queued");
    let queued = id_of(&r);

    let r = agent.post_json(&format!("/job/{queued}/cancel"), &json!({"pin": "000000"}));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = agent.post_json(
        &format!("/job/{queued}/cancel"),
        &json!({"pin": agent.fresh_code()}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(r.json()["started_at"], Value::Null);

    let code = agent.fresh_code();
    let t = Instant::now();
    let r = agent.post_json(&format!("/job/{running}/cancel"), &json!({"pin": code}));
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "cancelled");
    assert!(
        took < Duration::from_secs(2),
        "cancel took {took:?} (grace 1 s)"
    );
    assert_eq!(
        group_members(pgid),
        Vec::<u32>::new(),
        "processes of the cancelled job survived"
    );
    assert_eq!(
        agent.get(&format!("/job/{running}")).json()["status"],
        "cancelled"
    );

    let log = agent.log();
    for id in [&queued, &running] {
        assert!(log.contains(&format!("CANCELLED [{id}]")), "{log}");
    }
    assert!(!log.contains(&format!("EXECUTING [{queued}]")), "{log}");
}

#[test]
fn kill_9_then_restart_serves_history_and_ends_the_orphaned_job() {
    let mut agent = Agent::start(
        "crash",
        json!({"jobs": {"kill_grace_s": 1}, "rules": rules()}),
    );
    let r = agent.post_json("/run", &json!({"command": "echo hello"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let done = r.json();
    assert_eq!(done["status"], "succeeded");
    let (running, pgid) = start_background(&agent, &["sh", "-c", "sleep 30 & sleep 30"]);

    agent.kill9();
    assert!(
        !group_members(pgid).is_empty(),
        "the job died with the agent; nothing to recover"
    );
    // A power cut in the middle of a line.
    agent.write_journal_end(br#"{"ev":"end","job":{"id":"0123456789abcdef"#);

    agent.spawn(&[]);
    let r = agent.get(&format!("/job/{}", done["id"].as_str().unwrap()));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        done,
        "the finished job is served whole after the restart"
    );
    let r = agent.get(&format!("/job/{running}"));
    assert_eq!(r.status, 200);
    let job = r.json();
    assert_eq!(job["status"], "interrupted");
    assert!(job["started_at"].is_string(), "{job}");
    assert!(
        wait_until(Duration::from_secs(5), || group_members(pgid).is_empty()),
        "processes {:?} of the interrupted job are still alive",
        group_members(pgid)
    );
    let log = agent.log();
    for want in [
        format!("INTERRUPTED [{running}]"),
        format!("left by interrupted job {running}"),
        "skipped (torn".to_string(),
    ] {
        assert!(log.contains(&want), "no {want:?} in\n{log}");
    }
    // Through its cgroup where jobs have one (containment), else its process group.
    let ending = log
        .lines()
        .find(|l| l.contains("left by interrupted job"))
        .unwrap();
    assert!(
        ending.contains("ending cgroup /")
            && ending.contains(&format!("/{} left by", job_cgroup(&running)))
            || ending.contains(&format!("ending process group {pgid} left by")),
        "{ending}"
    );
    assert_eq!(
        std::fs::metadata(agent.journal_path()).unwrap().mode() & 0o777,
        0o600
    );

    // Recorded as ended: a second restart neither reports nor signals it again.
    agent.kill9();
    let before = agent.log().matches("INTERRUPTED").count();
    agent.spawn(&[]);
    assert_eq!(
        agent.get(&format!("/job/{running}")).json()["status"],
        "interrupted"
    );
    assert_eq!(agent.log().matches("INTERRUPTED").count(), before);
}

#[test]
fn a_symlinked_journal_is_refused() {
    let dir = crate::common::TempDir::new("jlink");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(dir.path().join("elsewhere"), "").unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), state.join("jobs.jsonl")).unwrap();
    let cfg = crate::common::base_config(dir.path(), json!({}));
    let config = dir.path().join("config.json");
    std::fs::write(&config, cfg.to_string()).unwrap();
    std::fs::write(dir.path().join("secret"), crate::common::SECRET_B32).unwrap();
    std::fs::set_permissions(
        dir.path().join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = crate::common::agent_command()
        .args(["serve", "--config"])
        .arg(&config)
        .output_retrying()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("journal file") && stderr.contains("symbolic link"),
        "{stderr}"
    );
}

#[test]
fn ten_thousand_jobs_keep_journal_rss_and_results_bounded() {
    if crate::common::emulated() {
        // A soak of the native build: under qemu-user (debug build, 2 cores) it took
        // 16 min and jobs outlived the 10 s wait. The bounds it checks are the same
        // code on both architectures; every other test runs under qemu.
        eprintln!("SKIPPED under an emulator: 10 000-job soak (run it natively)");
        return;
    }
    let _serial = serial();
    const TOTAL: usize = 10_000;
    const CLIENTS: usize = 8;
    const HISTORY: usize = 100;
    const MAX_FILES: usize = 50;
    const MAX_BYTES: u64 = 16 * 1024;
    let dir = TempDir::new("tenk");
    let cfg = base_config(
        dir.path(),
        json!({
            "jobs": {"max_concurrent": 8, "max_queue": 16, "history": HISTORY},
            "results": {"max_files": MAX_FILES, "max_bytes": MAX_BYTES},
            "rules": rules()
        }),
    );
    // One heap, as musl's allocator (the shipped build) has: glibc's arena per thread
    // makes the host build's RSS depend on which job thread freed what, and grew it
    // 200–276 KiB in the second half of runs with no leak (96–124 KiB with one arena;
    // the release build stays flat over 40 000 jobs: BENCHMARKS.md, session 26).
    let agent = Agent::start_in(dir, &cfg, &[("MALLOC_ARENA_MAX", "1")]);
    let pid = agent.pid();
    let results_dir = agent.dir.path().join("results");
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    // RSS once warm (1000 jobs in) and half-way: a leak shows in the second half too,
    // the pool's and allocator's warm-up (timing-dependent on a busy machine) does not.
    let rss_at_1000 = Arc::new(AtomicU64::new(0));
    let rss_half_way = Arc::new(AtomicU64::new(0));
    let monitor = {
        let (done, finished) = (done.clone(), finished.clone());
        let (rss_at_1000, rss_half_way) = (rss_at_1000.clone(), rss_half_way.clone());
        std::thread::spawn(move || {
            let (mut max_files, mut max_bytes, mut max_rss) = (0usize, 0u64, 0u64);
            while !finished.load(Ordering::SeqCst) {
                let (files, bytes) = dir_usage(&results_dir);
                max_files = max_files.max(files);
                max_bytes = max_bytes.max(bytes);
                let rss = rss_kib(pid);
                max_rss = max_rss.max(rss);
                let jobs = done.load(Ordering::SeqCst);
                for (at, sample) in [(1000, &rss_at_1000), (TOTAL / 2, &rss_half_way)] {
                    if jobs >= at && sample.load(Ordering::SeqCst) == 0 {
                        sample.store(rss, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (max_files, max_bytes, max_rss)
        })
    };
    let started = Instant::now();
    let url = agent.url("/run");
    let first_ids: Vec<String> = (0..CLIENTS)
        .map(|_| {
            let (url, done) = (url.clone(), done.clone());
            std::thread::spawn(move || {
                // One keep-alive connection per client.
                let http: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut first = String::new();
                for _ in 0..TOTAL / CLIENTS {
                    loop {
                        let mut resp = http.post(&url).send(r#"{"argv":["/bin/true"]}"#).unwrap();
                        let body = resp.body_mut().read_to_string().unwrap();
                        if resp.status() == 503 {
                            std::thread::sleep(Duration::from_millis(2));
                            continue;
                        }
                        assert_eq!(resp.status(), 200, "{body}");
                        let job: Value = serde_json::from_str(&body).unwrap();
                        assert_eq!(job["status"], "succeeded", "{body}");
                        if first.is_empty() {
                            first = job["id"].as_str().unwrap().to_string();
                        }
                        break;
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                first
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let took = started.elapsed();
    finished.store(true, Ordering::SeqCst);
    let (max_files, max_bytes, max_rss) = monitor.join().unwrap();
    let rss_end = rss_kib(pid);
    let rss_1000 = rss_at_1000.load(Ordering::SeqCst);
    let rss_half = rss_half_way.load(Ordering::SeqCst);
    let journal_text = agent.journal_text();
    let journal_lines = journal_text.lines().count();
    let figures = format!(
        "{TOTAL} jobs in {took:.1?}; RSS {rss_1000} KiB after 1000 jobs, {rss_half} half-way, \
         {rss_end} KiB at the end \
         (max {max_rss}); journal {journal_lines} lines, {} bytes (history {HISTORY}); results dir \
         at most {max_files} files / {max_bytes} bytes (bounds {MAX_FILES} / {MAX_BYTES})",
        journal_text.len()
    );
    eprintln!("{figures}");
    assert_eq!(done.load(Ordering::SeqCst), TOTAL);
    // Lines: up to 2 × history before a compaction, plus the jobs still in flight.
    assert!(journal_lines <= 2 * HISTORY + 3 * 8, "{figures}");
    assert!(
        journal_text.len() <= (2 * HISTORY + 3 * 8) * 1024,
        "{figures}"
    );
    // A leak of about 100 bytes a job fails the second bound (5 000 jobs, 512 KiB).
    assert!(
        rss_1000 > 0 && rss_end <= rss_1000 + 1536 && rss_end <= rss_half + 512,
        "RSS grew: {figures}"
    );
    // The bounds keep the results; besides them, at most 4 files made ahead for the
    // next jobs, and a job's record between its write and its thread's cleanup right
    // after its answer (a record here is about 330 bytes; 1 KiB allowed each).
    assert!(
        max_files <= MAX_FILES + 5 && max_bytes <= MAX_BYTES + 5 * 1024,
        "{figures}"
    );
    assert!(took < Duration::from_secs(120), "{figures}");
    // History holds the newest jobs only.
    let newest = id_of(&agent.post_json("/run", &json!({"argv": ["/bin/true"]})));
    assert_eq!(agent.get(&format!("/job/{newest}")).status, 200);
    let first_id = &first_ids[0];
    assert_eq!(
        agent.get(&format!("/job/{first_id}")).status,
        404,
        "evicted from history"
    );
}

/// Regular `agent-*.txt` files in `dir` and their total size.
fn dir_usage(dir: &Path) -> (usize, u64) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    // By inode: a listing taken while the agent recycles a file (renames the oldest to
    // the new job's name) may see it under both names.
    let files: std::collections::BTreeMap<u64, u64> = listing
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("agent-"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| (m.ino(), m.len()))
        .collect();
    (files.len(), files.values().sum())
}

/// Makes the results dir unwritable even for root (immutable, or replaced by a file
/// where `chattr` is not supported) and undoes it on drop.
struct Unwritable<'a> {
    dir: &'a Path,
    immutable: bool,
}

impl<'a> Unwritable<'a> {
    fn new(dir: &'a Path) -> Unwritable<'a> {
        let immutable = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status_retrying()
            .is_ok_and(|s| s.success());
        if !immutable {
            std::fs::remove_dir_all(dir).unwrap();
            std::fs::write(dir, "not a directory").unwrap();
        }
        Unwritable { dir, immutable }
    }
}

impl Drop for Unwritable<'_> {
    fn drop(&mut self) {
        if self.immutable {
            let _ = Command::new("chattr")
                .arg("-i")
                .arg(self.dir)
                .status_retrying();
        } else {
            let _ = std::fs::remove_file(self.dir);
        }
    }
}

#[test]
fn unwritable_results_dir_still_finishes_and_journals_jobs() {
    let agent = Agent::start("rofs", json!({"rules": rules()}));
    let r = agent.post_json("/run", &json!({"command": "echo before"}));
    assert!(r.json()["result_file"].is_string(), "{}", r.body);
    let results = agent.dir.path().join("results");
    let guard = Unwritable::new(&results);
    let r = agent.post_json("/run", &json!({"command": "echo during"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let job = r.json();
    drop(guard);
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["stdout"], "during\n");
    assert_eq!(job["result_file"], Value::Null);
    let why = job["result_error"].as_str().unwrap_or_default();
    assert!(why.starts_with("result file not written"), "{job}");
    let journaled = agent
        .journal()
        .into_iter()
        .find(|l| l["ev"] == "end" && l["job"]["id"] == job["id"])
        .unwrap_or_else(|| panic!("job not journaled: {:?}", agent.journal()));
    assert_eq!(journaled["job"], job);
    assert!(
        agent.log().contains("cannot write result file for job"),
        "{}",
        agent.log()
    );
    // Writable again: the next job gets its file.
    let r = agent.post_json("/run", &json!({"command": "echo after"}));
    assert!(r.json()["result_file"].is_string(), "{}", r.body);
}

#[test]
fn notify_runs_once_per_job_that_outlived_its_wait() {
    let dir = crate::common::TempDir::new("notify");
    let out = dir.path().join("notified");
    std::fs::create_dir(&out).unwrap();
    let script = dir.path().join("notify.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv | sort > '{0}/'\"$JOB_ID\"\necho \"$JOB_ID\" >> '{0}/all'\n",
            out.display()
        ),
    )
    .unwrap();
    let cfg = crate::common::base_config(
        dir.path(),
        json!({"notify": ["/bin/sh", script], "rules": rules()}),
    );
    let agent = Agent::start_in(dir, &cfg, &[]);

    let fast = agent.post_json("/run", &json!({"command": "echo fast"}));
    assert_eq!(fast.status, 200, "{}", fast.body);
    let detached = agent.post_json(
        "/run",
        &json!({"argv": ["sh", "-c", "sleep 0.5; exit 3"], "wait": 0}),
    );
    assert_eq!(detached.status, 202);
    let outwaited = agent.post_json("/run", &json!({"command": "sleep 1", "wait": 0.2}));
    assert_eq!(outwaited.status, 202, "{}", outwaited.body);
    let polled = agent
        .get(&format!("/job/{}?wait=10", id_of(&outwaited)))
        .json();
    assert_eq!(polled["status"], "succeeded");

    let all = out.join("all");
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&all)
                .unwrap_or_default()
                .lines()
                .count()
                >= 2
        }),
        "notify did not run: {}",
        agent.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut ran: Vec<String> = std::fs::read_to_string(&all)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    ran.sort();
    let mut want = vec![id_of(&detached), id_of(&outwaited)];
    want.sort();
    assert_eq!(
        ran,
        want,
        "notify must run once for each 202'd job and never for {}",
        id_of(&fast)
    );

    let env = |id: &str| std::fs::read_to_string(out.join(id)).unwrap();
    let d = env(&id_of(&detached));
    let record = agent.get(&format!("/job/{}", id_of(&detached))).json();
    for line in [
        format!("JOB_ID={}", id_of(&detached)),
        "STATUS=failed".to_string(),
        "EXIT_CODE=3".to_string(),
        format!("RESULT_FILE={}", record["result_file"].as_str().unwrap()),
        "COMMAND=sh -c 'sleep 0.5; exit 3'".to_string(),
    ] {
        assert!(d.lines().any(|l| l == line), "no {line:?} in\n{d}");
    }
    assert!(env(&id_of(&outwaited)).contains("STATUS=succeeded\n"));
    assert!(
        !d.contains("AGENT_") && d.contains("PATH=/usr/sbin:/usr/bin:/sbin:/bin"),
        "{d}"
    );
    assert!(
        agent
            .log()
            .contains(&format!("NOTIFY [{}] (rc=0)", id_of(&detached))),
        "{}",
        agent.log()
    );
}

#[test]
fn sigterm_interrupts_running_jobs_and_exits_within_the_grace() {
    let mut agent = Agent::start(
        "sigterm",
        json!({"jobs": {"kill_grace_s": 1}, "rules": rules()}),
    );
    // Ignores SIGTERM, so only the SIGKILL after the grace ends it.
    let (id, pgid) = start_background(&agent, &["sh", "-c", "trap '' TERM; sleep 30 & sleep 30"]);
    let t = Instant::now();
    let status = agent.terminate();
    let took = t.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?}; kill_grace_s is 1"
    );
    assert_eq!(
        group_members(pgid),
        Vec::<u32>::new(),
        "the job's processes outlived the agent"
    );
    let log = agent.log();
    assert!(log.contains(&format!("INTERRUPTED [{id}]")), "{log}");

    agent.spawn(&[]);
    let job = agent.get(&format!("/job/{id}")).json();
    assert_eq!(job["status"], "interrupted");
    assert!(job["finished_at"].is_string(), "{job}");
    assert_eq!(
        agent.log().matches(&format!("INTERRUPTED [{id}]")).count(),
        1
    );
}

/// Bytes the agent's threads had the disk read for them (`/proc/PID/io`).
fn read_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let line = io.lines().find(|l| l.starts_with("read_bytes:")).unwrap();
    line["read_bytes:".len()..].trim().parse().unwrap()
}

#[test]
fn a_recycled_result_file_is_written_without_reading_the_old_one_back_from_disk() {
    // At `max_files` the oldest result file becomes the new job's and is written over.
    // Written in part, a page no longer cached (an old file's seldom is) is first read
    // back from the disk: an SD card's random read before every answer. Whole pages,
    // then cut to length, need no read. Four cold files recycled: four pages read
    // back the old way; a stray page of the agent's own (qemu-user faulting in a page
    // of the binary, seen once in CI) is not what this is about.
    let results = json!({"max_files": 4});
    let agent = Agent::start(
        "recycle-cold",
        json!({"rules": rules(), "results": results}),
    );
    let run = |n: usize| {
        let r = agent.post_json("/run", &json!({"command": format!("echo {n}")}));
        assert_eq!(r.json()["status"], "succeeded", "{}", r.body);
        r.json()
    };
    for n in 0..5 {
        run(n);
    }
    let dir = agent.dir.path().join("results");
    let fs_type = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&dir)
        .output_retrying();
    if fs_type.is_ok_and(|o| o.stdout.starts_with(b"tmpfs")) {
        // Nothing there is ever read back from a disk.
        eprintln!("SKIPPED: results on tmpfs: a cold page cannot be shown");
        return;
    }
    let files = || {
        let entries = std::fs::read_dir(&dir).unwrap().flatten();
        entries.map(|e| e.path()).collect::<Vec<_>>()
    };
    // On the disk, then out of the page cache (dd's nocache is posix_fadvise DONTNEED).
    for file in files() {
        assert!(
            Command::new("sync")
                .arg(&file)
                .status_retrying()
                .unwrap()
                .success()
        );
        let dropped = Command::new("dd")
            .arg(format!("if={}", file.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status_retrying();
        assert!(dropped.unwrap().success());
    }
    let before = read_bytes(agent.pid());
    let jobs: Vec<Value> = (5..9).map(run).collect();
    let after = read_bytes(agent.pid());
    assert!(
        after - before <= 4096,
        "the agent read {} bytes from the disk recycling 4 cold result files",
        after - before
    );
    // Each file holds its record exactly: no padding left, nothing of the old one.
    for job in jobs {
        let path = job["result_file"].as_str().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let id = job["id"].as_str().unwrap();
        assert!(text.starts_with(&format!("id: {id}\n")), "{text:?}");
        // The last section, stderr, is empty: its heading, then the blank line.
        assert!(text.ends_with("\n--- stderr ---\n\n"), "{text:?}");
    }
}
