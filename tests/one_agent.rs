//! One agent per state directory, and recovery that never signals a process group it
//! cannot prove is the interrupted job's (a group number is a pid, and pids are reused).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::common::{
    Agent, Retrying, Seen, TempDir, alive, base_config, serve_refused, wait_until,
};
use serde_json::{Value, json};

#[test]
fn a_second_serve_on_the_same_state_dir_exits_1_naming_the_first() {
    let mut agent = Agent::start(
        "one-lock",
        json!({"rules": [{"name": "sleep", "argv": ["/bin/sleep", "*"], "no_pin": true}]}),
    );
    let r = agent.post_json("/run", &json!({"argv": ["sleep", "30"], "wait": 0}));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || agent
        .job_pgid(&id)
        .is_some()));
    let journal_before = agent.journal_text();

    let (code, stderr) = serve_refused(&agent.config_path);
    assert_eq!(code, 1, "{stderr}");
    let pid = agent.pid();
    assert!(
        stderr.contains(&format!("is in use by another sudo-agent (pid {pid})"))
            && stderr.contains(&format!("kill {pid}")),
        "{stderr}"
    );
    // The second agent touched nothing: the first's job still runs, its journal is as
    // it was (a second agent would have marked the job interrupted and ended it).
    assert!(agent.health_ok());
    assert_eq!(agent.get(&format!("/job/{id}")).json()["status"], "running");
    assert_eq!(agent.journal_text(), journal_before);
    let lock = agent.dir.path().join("state/lock");
    assert_eq!(
        std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Once the first stops, the state dir is free again.
    assert!(agent.terminate().success());
    agent.spawn(&[]);
    assert!(agent.health_ok());
    assert_eq!(
        agent.get(&format!("/job/{id}")).json()["status"],
        "interrupted"
    );
}

/// This boot's id, as the journal records it.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

/// A process group whose leader is gone and whose one member, a `sleep 60`, lives on:
/// what a daemon's first child leaves behind, and also what a job leaves when its shell
/// exits after `sleep 60 &`. The leader makes a session of its own (as an older agent's
/// jobs did) when `own_session`, else only a group in ours (as jobs do now).
/// (group id, member pid, session id)
fn leaderless_group(own_session: bool) -> (u32, u32, u32) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys, subprocess as s\n\
             os.setsid() if sys.argv[1] == 'own' else os.setpgid(0, 0)\n\
             p = s.Popen(['sleep', '60'], stdin=s.DEVNULL, stdout=s.DEVNULL, stderr=s.DEVNULL)\n\
             print(os.getpid(), p.pid, os.getsid(0))",
            if own_session { "own" } else { "ours" },
        ])
        .output_retrying()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<u32> = text
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let [pgid, member, session] = ids[..] else {
        panic!("{text}")
    };
    assert_eq!(session == pgid, own_session, "{text}");
    assert!(alive(member) && !alive(pgid), "{text}");
    (pgid, member, session)
}

/// Journal lines of a job that was running in group `pgid` when the agent died, and
/// whose leader started at `leader_start`.
fn running_job(n: u8, pgid: u32, leader_start: u64) -> Vec<Value> {
    let id = format!("{n:032x}");
    let job = json!({
        "id": id, "command": "sh -c 'sleep 60 &'", "argv": ["/bin/sh", "-c", "sleep 60 &"],
        "rule": "sh", "status": "queued", "exit_code": null, "signal": null,
        "stdout": "", "stderr": "", "truncated": false,
        "submitted_at": "2026-01-01T00:00:00.000Z", "started_at": null, "finished_at": null,
        "duration_ms": null, "result_file": null
    });
    vec![
        json!({"ev": "submit", "job": job}),
        json!({"ev": "start", "id": id, "pgid": pgid, "started_at": "2026-01-01T00:00:00.010Z",
               "boot": boot_id(), "leader_start": leader_start}),
    ]
}

/// Starts an agent (kill grace 1 s) on a state dir whose journal holds `lines`.
fn agent_after_crash(tag: &str, lines: &[Value]) -> Agent {
    let dir = TempDir::new(tag);
    let cfg = base_config(dir.path(), json!({"jobs": {"kill_grace_s": 1}}));
    let mut agent = Agent::prepare(dir, &cfg);
    let state = agent.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(agent.journal_path(), text).unwrap();
    std::fs::set_permissions(agent.journal_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    agent.spawn(&[]);
    agent
}

/// Kills a `leaderless_group` (group id, member) when dropped, so a failing test leaves
/// nothing running; only while its member lives, since then the number is still ours.
struct KillGroupOnDrop(u32, Seen);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if self.1.alive() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0)])
                .status_retrying();
        }
    }
}

#[test]
fn recovery_leaves_a_stranger_in_a_reused_group_number_alive() {
    // The job started, its processes all ended, and its group number was then taken by
    // a stranger (here: a group made after the job's recorded start, whose leader is
    // gone). Before the fix, a gone leader meant "still the job's" and the stranger got
    // SIGTERM, then SIGKILL.
    let (pgid, stranger, _) = leaderless_group(true);
    let _guard = KillGroupOnDrop(pgid, Seen::now(stranger));
    let job_start = Seen::now(stranger).start.saturating_sub(50);
    let agent = agent_after_crash("one-stranger", &running_job(1, pgid, job_start));
    assert_left_alone(&agent, 1, pgid, stranger);
}

#[test]
fn recovery_ends_a_leaderless_group_seen_while_the_job_ran() {
    // The job's shell exited after the crash, leaving `sleep 60` in its group; a later
    // job's start line shows the agent was alive, and the job running, after that
    // process started. Proven the job's, so it is ended. (A line of an agent whose jobs
    // made sessions of their own: no session recorded, the group's number is it.)
    let (pgid, member, _) = leaderless_group(true);
    let _guard = KillGroupOnDrop(pgid, Seen::now(member));
    let agent = agent_after_crash("one-proven", &proven_running(pgid, member, None));
    assert_ended(&agent, 2, pgid, member);
}

#[test]
fn recovery_ends_a_leaderless_group_in_the_agents_session_seen_while_the_job_ran() {
    // The same for a job of this agent, which stays in the agent's session: the start
    // line records that session, and the member is found in it.
    let (pgid, member, session) = leaderless_group(false);
    let _guard = KillGroupOnDrop(pgid, Seen::now(member));
    let lines = proven_running(pgid, member, Some(session));
    let agent = agent_after_crash("one-proven-session", &lines);
    if session == 0 {
        // Our session's leader is outside our pid namespace (as in CI): every such
        // session reads 0, so the member cannot be shown to be the job's.
        assert_left_alone(&agent, 2, pgid, member);
        assert!(agent.log().contains("outside this pid namespace"));
    } else {
        assert_ended(&agent, 2, pgid, member);
    }
}

/// A journal with job 2 running in `pgid` (its start line naming `session`, if any) and
/// a later job's start after `member` started: what proves `member` the job's.
fn proven_running(pgid: u32, member: u32, session: Option<u32>) -> Vec<Value> {
    let member_start = Seen::now(member).start;
    let mut lines = running_job(2, pgid, member_start.saturating_sub(1));
    if let Some(session) = session {
        lines[1]["session"] = json!(session);
    }
    let later = running_job(3, 4_194_303, member_start + 10);
    lines.extend(later);
    let mut done = lines[2]["job"].clone();
    done["status"] = json!("succeeded");
    lines.push(json!({"ev": "end", "job": done}));
    lines
}

/// The agent restarted after the crash ends job `n`'s group `pgid`, `member` with it.
fn assert_ended(agent: &Agent, n: u8, pgid: u32, member: u32) {
    let id = format!("{n:032x}");
    assert!(
        wait_until(Duration::from_secs(10), || !alive(member)),
        "{}",
        agent.log()
    );
    assert!(
        agent.log().contains(&format!(
            "ending process group {pgid} left by interrupted job {id}"
        )),
        "{}",
        agent.log()
    );
}

/// The agent restarted after the crash leaves job `n`'s group `pgid` alone and names it,
/// `member` among its processes, with the command that would end it.
fn assert_left_alone(agent: &Agent, n: u8, pgid: u32, member: u32) {
    let id = format!("{n:032x}");
    assert!(
        wait_until(Duration::from_secs(10), || agent.log().contains(&format!(
            "left process group {pgid} of interrupted job {id} alone"
        ))),
        "{}",
        agent.log()
    );
    // Well past the 1 s grace and a SIGKILL: the process is untouched.
    std::thread::sleep(Duration::from_secs(3));
    assert!(alive(member), "{member} was killed");
    let log = agent.log();
    assert!(log.contains(&format!("kill -TERM -{pgid}")), "{log}");
    assert!(log.contains(&format!("[{member}]")), "{log}");
    assert!(!log.contains("ending process group"), "{log}");
    assert_eq!(
        agent.get(&format!("/job/{id}")).json()["status"],
        "interrupted"
    );
}
