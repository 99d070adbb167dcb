//! Attack: exhaust the box through an allowed job — a flood of output, a fork bomb, a
//! job that closes its output and lingers, a job that leaves its process group. The job
//! record must always end, and no process of the job may be left (the `setsid` escapee
//! too: its cgroup ends it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Agent, Seen, group_members, rss_kib, wait_until};
use serde_json::json;

fn agent(tag: &str) -> Agent {
    Agent::start(
        tag,
        json!({
            "jobs": {"kill_grace_s": 1},
            "rules": [
                {"name": "gig", "argv": ["/usr/bin/head", "-c", "1073741824", "/dev/zero"],
                 "no_pin": true, "max_output_bytes": 65536, "timeout_s": 600},
                {"name": "shell", "shell": true, "timeout_s": 3}
            ]
        }),
    )
}

#[test]
fn a_gibibyte_of_output_is_capped_and_memory_stays_flat() {
    let agent = agent("r-gig");
    let pid = agent.pid();
    let before = rss_kib(pid);
    let peak = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let r = agent.post_json(
            "/run",
            &json!({"command": "head -c 1073741824 /dev/zero", "wait": 60}),
        );
        // A slow box (qemu-user; an emulated VM took over 60 s, so tests/vm skips this)
        // takes longer than a wait to pipe a gibibyte: the job goes on (its rule allows
        // 600 s), and is polled to its end.
        let mut job = r.json();
        for _ in 0..10 {
            if r.status != 202 || job["status"] != "running" {
                break;
            }
            job = agent
                .get(&format!("/job/{}?wait=60", job["id"].as_str().unwrap()))
                .json();
        }
        done.store(true, Ordering::SeqCst);
        (r.status, job)
    });
    let (status, job) = r;
    assert!([200, 202].contains(&status), "{status}: {job}");
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["truncated"], true);
    assert_eq!(job["stdout"].as_str().unwrap().len(), 65536);
    let peak = peak.into_inner();
    println!(
        "1 GiB job: {:?}, RSS {before} KiB before, {peak} KiB peak",
        started.elapsed()
    );
    assert!(
        peak < before + 4096 + crate::common::rss_allowance_kib(),
        "RSS grew from {before} to {peak} KiB"
    );
}

#[test]
fn a_bounded_fork_bomb_is_ended_by_the_timeout() {
    // 2^7 - 1 = 127 shells, each forking two more until depth 0, all sleeping: bounded
    // so the test box survives. In production TasksMax= in the unit is the real cap.
    let agent = agent("r-bomb");
    let bomb =
        "echo $$; f() { if [ $1 -gt 0 ]; then f $(($1-1)) & f $(($1-1)) & fi; sleep 60; }; f 6";
    let started = Instant::now();
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "command": bomb, "wait": 30}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let job = r.json();
    assert_eq!(job["status"], "timed_out");
    let leader: u32 = job["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        group_members(leader),
        Vec::<u32>::new(),
        "bomb processes survived"
    );
    assert!(
        agent
            .log()
            .contains(&format!("TIMEOUT [{}]", job["id"].as_str().unwrap()))
    );
}

#[test]
fn a_job_that_closes_its_output_and_lingers_still_times_out() {
    let agent = agent("r-closed");
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "command": "echo $$; exec >&- 2>&-; sleep 60", "wait": 30}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let job = r.json();
    assert_eq!(job["status"], "timed_out");
    assert_eq!(job["signal"], 15);
    let leader: u32 = job["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(group_members(leader).is_empty());
}

#[test]
fn a_job_that_escapes_with_setsid_still_ends_with_its_cgroup() {
    // setsid puts the grandchild in a new session and group: the job's group signals no
    // longer reach it, but it is still in the job's cgroup, so it ends with the job. The
    // record ends when the main process does; the escapee then gets TERM (KILL after the
    // grace) with whatever else is left in the cgroup.
    let agent = agent("r-setsid");
    let in_cgroup = agent.get("/health").json()["containment"]["cgroup"].is_string();
    let started = Instant::now();
    let r = agent.post_json(
        "/run",
        // The job waits until the escapee is in its own session (field 6 of its stat is
        // the session id), so the test does not race the group clean-up on a busy box.
        &json!({"pin": agent.code(), "command": "setsid sleep 60 & p=$!; \
            until [ \"$(cut -d' ' -f6 /proc/$p/stat)\" = \"$p\" ]; do sleep 0.01; done; \
            echo $p $(cut -d' ' -f22 /proc/$p/stat); echo $$", "wait": 30}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let job = r.json();
    assert_eq!(job["status"], "succeeded");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The escapee's pid and start time: once it is gone its pid may name a stranger (pids
    // wrap), so it is looked at and killed only while the start time still matches.
    let numbers: Vec<u64> = job["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let escapee = Seen {
        pid: numbers[0] as u32,
        start: numbers[1],
    };
    let leader = numbers[2] as u32;
    assert!(group_members(leader).is_empty());
    let escaped = escapee.alive();
    escapee.kill(9);
    assert!(wait_until(Duration::from_secs(5), || !escapee.alive()));
    if in_cgroup {
        assert!(!escaped, "the setsid escapee outlived its job's cgroup");
    } else {
        // No writable cgroup v2 (the agent logs why): the documented gap of process
        // groups, see SECURITY.md.
        eprintln!("SKIPPED: no job cgroups here; the escapee survived as documented");
        assert!(escaped, "setsid did not escape here; update SECURITY.md");
    }
    // A later job is not disturbed (given time: under an emulator it takes seconds).
    let r = agent.post_json(
        "/run",
        &json!({"command": "head -c 1073741824 /dev/zero", "wait": 120}),
    );
    assert_eq!(r.json()["status"], "succeeded");
}
