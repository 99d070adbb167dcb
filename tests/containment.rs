//! Containment on this machine's real kernel: every job in a cgroup of its own (an
//! escapee from its process group still ends with it, on exit, timeout, cancel, shutdown
//! and after a crash), the per-rule sandbox (read-only mounts with writable exceptions,
//! no network, no new privileges), limits where the kernel has their controllers, and
//! refusals where it cannot give what a rule asks for.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{
    Agent, Retrying, Seen, TempDir, agent_command, base_config, free_port, job_cgroup, run_bin,
    strace_injecting, wait_until,
};

/// `/health`'s `containment`.
fn containment(agent: &Agent) -> Value {
    agent.get("/health").json()["containment"].clone()
}

/// The directory job cgroups go in, or `None` (a loud skip) where jobs get none. This
/// machine and CI have a writable cgroup v2; a box without one runs jobs as before.
fn cgroup_base(agent: &Agent, test: &str) -> Option<PathBuf> {
    let base = containment(agent)["cgroup"].as_str().map(PathBuf::from);
    if base.is_none() {
        eprintln!(
            "SKIPPED: {test}: the agent has no cgroup v2 here ({})",
            agent.log()
        );
    }
    base
}

/// Whether the agent's job cgroups have `controller`; a loud skip when not (here:
/// memory, pids and cpu are all on cgroup v1, none on the v2 mount).
fn has_controller(agent: &Agent, controller: &str, test: &str) -> bool {
    let has = containment(agent)[controller] == true;
    if !has {
        eprintln!(
            "SKIPPED: {test}: the {controller} controller is not available to the agent's \
             cgroups on this machine (containment: {})",
            containment(agent)
        );
    }
    has
}

fn assert_stderr(job: &Value, text: &str) {
    let stderr = job["stderr"].as_str().unwrap_or_default();
    assert!(stderr.contains(text), "no {text:?} in {job}");
}

/// Reads the pid and start time a job wrote into `file`, waiting for them: the process
/// may be gone by then and its pid another's (pids wrap).
fn seen_in(file: &Path) -> Seen {
    assert!(
        wait_until(Duration::from_secs(10), || fs::read_to_string(file)
            .is_ok_and(|t| t.ends_with('\n'))),
        "{} was not written",
        file.display()
    );
    let text = fs::read_to_string(file).unwrap();
    let (pid, start) = text.trim().split_once(' ').unwrap();
    Seen {
        pid: pid.parse().unwrap(),
        start: start.parse().unwrap(),
    }
}

/// A shell rule whose job leaves its process group and session with `setsid`, writes
/// the escapee's pid and start time to `DIR/escapee` once it is in a session of its own,
/// then runs `then`.
fn escaping(dir: &Path, then: &str) -> String {
    format!(
        "setsid sleep 60 & p=$!; until [ \"$(cut -d' ' -f6 /proc/$p/stat)\" = \"$p\" ]; \
         do sleep 0.01; done; echo $p $(cut -d' ' -f22 /proc/$p/stat) > {}/escapee; {then}",
        dir.display()
    )
}

/// Submits a job that escapes (see [`escaping`]) then sleeps, without waiting for it:
/// its id and the escapee's pid.
fn start_escaping(agent: &Agent, code: String) -> (String, Seen) {
    let dir = agent.dir.path();
    let _ = fs::remove_file(dir.join("escapee"));
    let r = agent.post_json(
        "/run",
        &json!({"pin": code, "command": escaping(dir, "sleep 60"), "wait": 0}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    (id, seen_in(&dir.join("escapee")))
}

/// `sh -c SCRIPT` as argv times out after 2 s; a command string runs as a shell rule
/// with the default timeout.
fn shell_agent(tag: &str) -> Agent {
    Agent::start(
        tag,
        json!({
            "totp": {"step_s": 1},
            "jobs": {"kill_grace_s": 1},
            "rules": [
                {"name": "short", "argv": ["/bin/sh", "-c", "*"], "timeout_s": 2},
                {"name": "shell", "shell": true}
            ]
        }),
    )
}

#[test]
fn an_escapee_ends_with_its_job_on_timeout_cancel_and_shutdown() {
    let mut agent = shell_agent("c-escape");
    let Some(base) = cgroup_base(&agent, "escapee on timeout/cancel/shutdown") else {
        return;
    };
    let dir = agent.dir.path().to_path_buf();

    // Timeout: the `short` rule's 2 s.
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "argv": ["sh", "-c", escaping(&dir, "sleep 60")], "wait": 30}),
    );
    let job = r.json();
    assert_eq!(job["status"], "timed_out", "{job}");
    let escapee = seen_in(&dir.join("escapee"));
    assert!(!escapee.alive(), "the escapee outlived its timed-out job");
    // A cgroup its job had to signal is not kept for the next job: it goes.
    let cgroup = base.join(job_cgroup(job["id"].as_str().unwrap()));
    assert!(wait_until(Duration::from_secs(5), || !cgroup.exists()));

    // Cancel.
    let (id, escapee) = start_escaping(&agent, agent.fresh_code());
    let r = agent.post_json(
        &format!("/job/{id}/cancel"),
        &json!({"pin": agent.fresh_code()}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(wait_until(Duration::from_secs(10), || agent
        .get(&format!("/job/{id}"))
        .json()["status"]
        == "cancelled"));
    assert!(!escapee.alive(), "the escapee outlived its cancelled job");

    // Shutdown.
    let (id, escapee) = start_escaping(&agent, agent.fresh_code());
    assert!(agent.terminate().success());
    assert!(
        !escapee.alive(),
        "the escapee outlived the agent's shutdown"
    );
    assert!(!base.join(job_cgroup(&id)).exists());
}

#[test]
fn recovery_after_a_crash_ends_what_is_in_the_jobs_cgroup() {
    // The job's leader sleeps on after the agent is SIGKILLed, and its escapee is in
    // another session: only the cgroup proves it is the job's.
    // It runs in a cgroup an earlier job ran in and left empty (the second job's, kept
    // for the next; the first's thread made one ahead, which the second took). Alone in
    // a cgroup of its own: where other tests' agents turned the memory controller on in
    // a shared one, no cgroup is kept (its OOM kills would count for the next job).
    let config = json!({
        "totp": {"step_s": 1},
        "jobs": {"kill_grace_s": 1},
        "rules": [{"name": "shell", "shell": true}]
    });
    let Some((own, mut agent)) = start_alone("c-recover", config) else {
        return;
    };
    let base = own.to_path_buf();
    let mut earlier = Vec::new();
    for code in [agent.code(), agent.fresh_code()] {
        let body = json!({"pin": code, "command": "true", "wait": 30});
        let job = agent.post_json("/run", &body).json();
        assert_eq!(job["status"], "succeeded", "{job}");
        earlier.push(job["id"].as_str().unwrap().to_owned());
        // Its thread keeps its cgroup and makes the next one ahead after the answer.
        std::thread::sleep(Duration::from_millis(300));
    }
    let (id, escapee) = start_escaping(&agent, agent.fresh_code());
    assert_eq!(job_cgroup(&id), job_cgroup(&earlier[1]), "{earlier:?} {id}");
    let cgroup = base.join(job_cgroup(&id));
    assert!(cgroup.exists());
    // The start line is not synced: wait until the writer thread has written it.
    assert!(wait_until(Duration::from_secs(10), || agent
        .job_pgid(&id)
        .is_some()));
    let leader = Seen::now(agent.job_pgid(&id).unwrap());
    agent.kill9();
    assert!(escapee.alive() && leader.alive());
    launch_alone(&mut agent, &own);
    let gone = wait_until(Duration::from_secs(10), || {
        !escapee.alive() && !leader.alive() && !cgroup.exists()
    });
    escapee.kill(9);
    leader.kill(9);
    assert!(
        gone,
        "left behind: escapee {}, leader {}, {cgroup:?}",
        escapee.pid, leader.pid
    );
    assert_eq!(
        agent.get(&format!("/job/{id}")).json()["status"],
        "interrupted"
    );
}

#[test]
fn an_ended_jobs_cgroup_left_by_a_crash_is_removed_at_start_and_no_one_elses() {
    // A job's thread keeps its empty cgroup for the next job (or removes it) just after
    // the answer; an agent killed then leaves it. The restarted agent removes it, as its
    // journal saw the job end (and one an older agent named by the whole id), and leaves
    // alone a cgroup its journal does not know (another agent's job).
    let mut agent = shell_agent("c-left");
    let Some(base) = cgroup_base(&agent, "an ended job's cgroup after a crash") else {
        return;
    };
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "command": "true", "wait": 30}),
    );
    assert_eq!(r.json()["status"], "succeeded", "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    agent.kill9();
    let left = [base.join(job_cgroup(&id)), base.join(format!("job-{id}"))];
    let foreign = base.join(format!("job-{}", "f".repeat(16)));
    for dir in left.iter().chain([&foreign]) {
        fs::create_dir_all(dir).unwrap();
    }
    agent.spawn(&[]);
    let left_gone = left.iter().all(|dir| !dir.exists());
    let foreign_kept = foreign.exists();
    for dir in left.iter().chain([&foreign]) {
        let _ = fs::remove_dir(dir);
    }
    assert!(left_gone, "the ended job's cgroup {left:?} was left");
    assert!(
        foreign_kept,
        "a cgroup the journal does not know was removed"
    );
}

#[test]
fn jobs_run_in_their_own_cgroup_which_is_removed_and_health_says_so() {
    let agent = shell_agent("c-own");
    let Some(base) = cgroup_base(&agent, "a cgroup per job") else {
        return;
    };
    assert!(base.is_dir(), "{base:?}");
    assert!(
        agent.log().contains(&format!(
            "CONTAINMENT: {{\"cgroup\":\"{}\",",
            base.display()
        )),
        "{}",
        agent.log()
    );
    let health = containment(&agent);
    assert_eq!(health["mount_namespace"], true, "{health}");
    assert_eq!(health["network_namespace"], true, "{health}");
    let metrics = agent.get("/metrics").body;
    assert!(
        metrics.contains("sudo_agent_containment{layer=\"cgroup\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sudo_agent_containment{layer=\"mount_namespace\"} 1"));

    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "command": "grep '^0::' /proc/self/cgroup", "wait": 30}),
    );
    let job = r.json();
    let id = job["id"].as_str().unwrap();
    let seen = job["stdout"].as_str().unwrap().trim().to_string();
    assert!(seen.ends_with(&format!("/{}", job_cgroup(id))), "{seen}");
    // Empty once answered (kept for a next job), and gone once the agent stops.
    let cgroup = base.join(job_cgroup(id));
    let events = fs::read_to_string(cgroup.join("cgroup.events")).unwrap_or_default();
    let mut agent = agent;
    assert!(agent.terminate().success());
    assert!(!events.contains("populated 1"), "{events}");
    assert!(!cgroup.exists(), "empty job cgroup left behind");
}

/// An agent alone in a cgroup of its own made under the v2 mount (what `Delegate=yes`
/// gives the service), with `config` over the base config, and that cgroup; `None` (a
/// loud skip) where jobs get no cgroup. Its cgroup's controllers are its own to hand
/// out, unlike those of a `sudo-agent` shared with the other tests' agents.
fn start_alone(tag: &str, config: Value) -> Option<(OwnCgroup, Agent)> {
    let probe = Agent::start(&format!("{tag}-probe"), json!({}));
    let base = cgroup_base(&probe, tag)?;
    drop(probe);
    let own = base
        .parent()
        .unwrap()
        .join(format!("sa-test-{tag}-{}", std::process::id()));
    fs::create_dir(&own).unwrap();
    let dir = TempDir::new(tag);
    let cfg = base_config(dir.path(), config);
    let mut agent = Agent::prepare(dir, &cfg);
    launch_alone(&mut agent, &own);
    Some((OwnCgroup(own), agent))
}

/// The cgroup of an agent of [`start_alone`], removed with whatever is left in it when
/// dropped, after the agent (declared first), so a failed test leaves nothing either.
struct OwnCgroup(PathBuf);

impl std::ops::Deref for OwnCgroup {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        for child in fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if child.path().is_dir() {
                let _ = fs::remove_dir(child.path());
            }
        }
        let _ = fs::remove_dir(&self.0);
    }
}

/// (Re)starts `agent` in the cgroup `own`.
fn launch_alone(agent: &mut Agent, own: &Path) {
    let inner = agent_command();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
        .arg(own)
        .arg(inner.get_program())
        .args(inner.get_args());
    agent.launch(cmd, &[]);
}

/// Stops an agent of [`start_alone`] (SIGTERM: it removes what it made, job cgroups
/// made ahead too) and removes its cgroup, `agent` leaf first: an error when anything
/// of it was left there.
fn stop_alone(mut agent: Agent, own: &Path) -> std::io::Result<()> {
    agent.terminate();
    let _ = fs::remove_dir(own.join("agent"));
    fs::remove_dir(own)
}

/// The `job-<key>` cgroups in `dir`, by key, sorted.
fn job_cgroups(dir: &Path) -> Vec<String> {
    let names = fs::read_dir(dir).unwrap().flatten();
    let keys = names.filter_map(|e| Some(e.file_name().to_str()?.strip_prefix("job-")?.to_owned()));
    let mut keys: Vec<String> = keys.collect();
    keys.sort();
    keys
}

#[test]
fn a_jobs_cgroup_is_kept_for_the_next_jobs_and_one_a_crash_leaves_goes_at_a_later_start() {
    // After a job is answered its thread keeps its empty cgroup; the jobs after it run
    // there, each with an id starting with the cgroup's key, and no other cgroup is
    // made. An agent killed meanwhile leaves it empty: the next start removes one its
    // journal names as ended at once, an empty one it does not name (made ahead for a
    // next job) once it is old, and leaves a young one no journal names alone (it may be
    // another agent's, about to be used).
    let argv = ["/bin/cat", "/proc/self/cgroup"];
    let rule = json!({"name": "where", "argv": argv, "no_pin": true});
    let Some((own, mut agent)) = start_alone("c-ahead", json!({"rules": [rule]})) else {
        return;
    };
    let run = |agent: &Agent| {
        let body = json!({"command": "/bin/cat /proc/self/cgroup", "wait": 30});
        let job = agent.post_json("/run", &body).json();
        assert_eq!(job["status"], "succeeded", "{job}");
        let stdout = job["stdout"].as_str().unwrap();
        let v2 = stdout
            .lines()
            .find(|l| l.starts_with("0::"))
            .unwrap_or(stdout);
        let id = job["id"].as_str().unwrap().to_owned();
        assert!(v2.ends_with(&format!("/{}", job_cgroup(&id))), "{v2}");
        id
    };
    // The job's own, kept once its thread is done with it.
    let kept = |agent: &Agent, id: &str| {
        let key = id[16..].to_owned();
        let mut seen = Vec::new();
        let found = wait_until(Duration::from_secs(5), || {
            seen = job_cgroups(&own);
            seen == [key.clone()]
        });
        assert!(
            found,
            "job {id}'s cgroup was not kept alone: {seen:?}; the agent's stderr:\n{}",
            agent.stderr()
        );
    };
    let first = run(&agent);
    kept(&agent, &first);

    agent.kill9();
    let foreign = own.join(format!("job-{}", "f".repeat(16)));
    let unnamed = own.join(format!("job-{}", "e".repeat(16)));
    fs::create_dir(&foreign).unwrap();
    fs::create_dir(&unnamed).unwrap();
    let _ = fs::remove_dir(own.join("agent"));
    let left_after_crash = job_cgroups(&own).contains(&first[16..].to_owned());
    let aged = Command::new("touch")
        .args(["-d", "1 minute ago"])
        .arg(&unnamed)
        .status_retrying();
    launch_alone(&mut agent, &own);
    let after_start = job_cgroups(&own);
    let foreign_kept = foreign.exists();
    let _ = fs::remove_dir(&foreign);

    // Jobs one after another: all in the cgroup the first of them made.
    let mut keys = Vec::new();
    for _ in 0..4 {
        let id = run(&agent);
        kept(&agent, &id);
        keys.push(id[16..].to_owned());
    }
    let stopped = stop_alone(agent, &own);
    assert!(
        left_after_crash,
        "a killed agent's kept cgroup was gone at once"
    );
    assert!(aged.unwrap().success());
    assert_eq!(
        after_start,
        ["f".repeat(16)],
        "at start-up: the ended job's and the old unnamed cgroup go, the young one stays"
    );
    assert!(foreign_kept);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    stopped.unwrap();
}

#[test]
fn a_kept_cgroup_someone_moved_a_process_into_is_not_used_and_the_next_job_still_runs() {
    // A root job (or anyone root) can move a process into the empty cgroup kept for the
    // next job. That job must not run beside it, nor be refused: it gets a cgroup of its
    // own, named by its whole id since its key's is taken.
    let argv = ["/bin/cat", "/proc/self/cgroup"];
    let rule = json!({"name": "where", "argv": argv, "no_pin": true});
    let Some((own, agent)) = start_alone("c-taken", json!({"rules": [rule]})) else {
        return;
    };
    let run = |agent: &Agent| {
        let body = json!({"command": "/bin/cat /proc/self/cgroup", "wait": 30});
        agent.post_json("/run", &body).json()
    };
    let first = run(&agent);
    assert_eq!(first["status"], "succeeded", "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    let kept = own.join(job_cgroup(&first_id));
    assert!(
        wait_until(Duration::from_secs(5), || job_cgroups(&own)
            == [&first_id[16..]]),
        "not kept: {:?}",
        job_cgroups(&own)
    );
    let mut stranger = Command::new("/bin/sleep")
        .arg("60")
        .spawn_retrying()
        .unwrap();
    fs::write(kept.join("cgroup.procs"), stranger.id().to_string()).unwrap();

    let second = run(&agent);
    let id = second["id"].as_str().unwrap_or_default().to_owned();
    // Removed once done with, not kept: a whole id is no key for a next one.
    let whole_gone = wait_until(Duration::from_secs(5), || !job_cgroups(&own).contains(&id));
    let third = run(&agent);
    let _ = stranger.kill();
    let _ = stranger.wait();
    let _ = stop_alone(agent, &own);
    assert_eq!(second["status"], "succeeded", "{second}");
    assert!(whole_gone, "job-{id} was left");
    assert_eq!(third["status"], "succeeded", "{third}");
    assert_eq!(
        id[16..],
        first_id[16..],
        "it was given the kept cgroup's key"
    );
    let stdout = second["stdout"].as_str().unwrap();
    let v2 = stdout
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap_or(stdout);
    assert!(v2.ends_with(&format!("/job-{id}")), "{v2}");
}

#[test]
fn after_a_crash_a_job_in_a_cgroup_named_by_its_id_is_ended_and_the_stranger_in_its_keys_is_not() {
    // As above, a process was moved into the kept cgroup, so the next job ran in
    // `job-<id>`. The agent is killed while that job runs: recovery ends what is in the
    // job's own cgroup, and leaves alone the process in `job-<key>`, which was never the
    // job's though its name says that key.
    let rules = json!({"rules": [
        {"name": "true", "argv": ["/bin/true"], "no_pin": true},
        {"name": "sleep", "argv": ["/bin/sleep", "57"], "no_pin": true}
    ]});
    let Some((own, mut agent)) = start_alone("c-taken-crash", rules) else {
        return;
    };
    let first = agent
        .post_json("/run", &json!({"argv": ["/bin/true"]}))
        .json();
    assert_eq!(first["status"], "succeeded", "{first}");
    let key = first["id"].as_str().unwrap()[16..].to_owned();
    assert!(
        wait_until(Duration::from_secs(5), || job_cgroups(&own)
            == [key.clone()]),
        "not kept: {:?}",
        job_cgroups(&own)
    );
    let mut stranger = Command::new("/bin/sleep")
        .arg("60")
        .spawn_retrying()
        .unwrap();
    let stranger_seen = Seen::now(stranger.id());
    fs::write(
        own.join(format!("job-{key}")).join("cgroup.procs"),
        stranger.id().to_string(),
    )
    .unwrap();

    let r = agent.post_json("/run", &json!({"argv": ["/bin/sleep", "57"], "wait": 0}));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let cgroup = own.join(format!("job-{id}"));
    // The start line is not synced: wait until the writer thread has written it.
    assert!(wait_until(Duration::from_secs(10), || agent
        .job_pgid(&id)
        .is_some()));
    let leader = Seen::now(agent.job_pgid(&id).unwrap());
    let ran_in_its_own = cgroup.exists();
    agent.kill9();
    launch_alone(&mut agent, &own);
    let ended = wait_until(Duration::from_secs(10), || {
        !leader.alive() && !cgroup.exists()
    });
    let stranger_alive = stranger_seen.alive();
    let status = agent.get(&format!("/job/{id}")).json()["status"].clone();
    leader.kill(9);
    let _ = stranger.kill();
    let _ = stranger.wait();
    let _ = stop_alone(agent, &own);
    assert!(ran_in_its_own, "the job did not run in {cgroup:?}");
    assert!(ended, "left behind: leader {}, {cgroup:?}", leader.pid);
    assert!(stranger_alive, "recovery ended the process in job-{key}");
    assert_eq!(status, "interrupted");
}

#[test]
fn an_agent_alone_in_its_cgroup_takes_it_over_as_under_systemd_delegation() {
    // The agent moves into the leaf `agent` and makes the job's cgroup beside it.
    let rules = json!({"rules": [{"name": "sh", "shell": true}]});
    let Some((own, agent)) = start_alone("c-deleg", rules) else {
        return;
    };
    let agent_cgroup = fs::read_to_string(format!("/proc/{}/cgroup", agent.pid())).unwrap();
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "command": "grep '^0::' /proc/self/cgroup", "wait": 30}),
    );
    let job = r.json();
    let health = containment(&agent);
    let id = job["id"].as_str().unwrap();
    // Kept for a next job, and removed when the agent stops (before its own cgroup).
    let removed = stop_alone(agent, &own);
    let name = own.file_name().unwrap().to_str().unwrap();
    // Its own cgroup is beside the tests' `sudo-agent`, wherever that is (the v2 root
    // here; below the unit that runs the tests on a systemd box).
    assert!(
        agent_cgroup
            .lines()
            .any(|l| l.starts_with("0::/") && l.ends_with(&format!("/{name}/agent"))),
        "{agent_cgroup}"
    );
    assert_eq!(health["cgroup"], own.to_str().unwrap(), "{health}");
    assert!(
        job["stdout"]
            .as_str()
            .unwrap()
            .trim()
            .ends_with(&format!("/{name}/{}", job_cgroup(id))),
        "{job}"
    );
    removed.unwrap();
}

/// A root-owned 0755 test dir (so a dropped user can reach programs in it).
fn open_dir(agent_dir: &Path) -> PathBuf {
    fs::set_permissions(agent_dir, fs::Permissions::from_mode(0o755)).unwrap();
    agent_dir.to_path_buf()
}

#[test]
fn read_only_is_a_kernel_fact_and_writable_paths_are_the_exceptions() {
    let dir = TempDir::new("c-ro");
    let d = &dir.path().to_path_buf();
    for sub in ["ro", "w"] {
        fs::create_dir(d.join(sub)).unwrap();
    }
    let touch = |sub: &str| d.join(sub).join("marker").display().to_string();
    let cfg = base_config(
        d,
        json!({"rules": [
            {"name": "ro", "argv": ["/usr/bin/touch", touch("ro")], "no_pin": true},
            {"name": "w", "argv": ["/usr/bin/touch", touch("w")], "no_pin": true,
             "sandbox": {"writable": [d.join("w")]}},
            {"name": "coded", "argv": ["/usr/bin/touch", "-c", "*"],
             "sandbox": {"read_only": true}},
            {"name": "mounts", "argv": ["/bin/cat", "/proc/self/mountinfo"], "no_pin": true},
            {"name": "escape", "argv": ["/bin/sh", "-c", LEAVE_CGROUP], "no_pin": true}
        ]}),
    );
    let mounts_before = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let agent = Agent::start_in(dir, &cfg, &[]);
    let r = agent.post_json("/run", &json!({"argv": ["touch", touch("ro")]}));
    let job = r.json();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["exit_code"], 1);
    assert_stderr(&job, "Read-only file system");
    assert!(
        !Path::new(&touch("ro")).exists(),
        "a no_pin rule wrote to disk"
    );

    let r = agent.post_json("/run", &json!({"argv": ["touch", touch("w")]}));
    assert_eq!(r.json()["status"], "succeeded", "{}", r.body);
    assert!(Path::new(&touch("w")).exists());

    // Any rule can ask for it; an existing file's times stay as they were.
    let old = fs::metadata(agent.config_path.clone())
        .unwrap()
        .modified()
        .unwrap();
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "argv": ["touch", "-c", agent.config_path]}),
    );
    assert_eq!(r.json()["status"], "failed", "{}", r.body);
    assert_eq!(
        fs::metadata(&agent.config_path)
            .unwrap()
            .modified()
            .unwrap(),
        old
    );

    // Every mount the job can reach is read-only; nothing outside the job changed: this
    // process's mounts are what they were. (A mount with another mounted over the same
    // point later cannot be reached. Without mount_setattr, under qemu-user, the
    // fallback remounts by path and leaves such a hidden one as it was.)
    let r = agent.post_json("/run", &json!({"argv": ["cat", "/proc/self/mountinfo"]}));
    let seen = r.json()["stdout"].as_str().unwrap().to_string();
    let lines: Vec<Vec<&str>> = seen.lines().map(|l| l.split(' ').collect()).collect();
    for (i, fields) in lines.iter().enumerate() {
        let hidden = lines[i + 1..].iter().any(|later| later[4] == fields[4]);
        assert!(
            hidden || fields[5].split(',').any(|o| o == "ro"),
            "writable in the job: {fields:?}"
        );
    }
    assert_eq!(
        fs::read_to_string("/proc/self/mountinfo").unwrap(),
        mounts_before
    );

    // Device nodes still work; the job cannot move itself out of its cgroup.
    let r = agent.post_json("/run", &json!({"argv": ["sh", "-c", LEAVE_CGROUP]}));
    let job = r.json();
    assert_eq!(job["stdout"], "null ok\nstayed\n", "{job}");
    assert_stderr(&job, "Read-only file system");
}

/// A tmpfs mounted for a test, unmounted on the way out whatever the asserts said: in
/// the agents' mount namespace, or in the one process `ns` is in.
struct Mounted {
    point: PathBuf,
    ns: Option<u32>,
}

impl Mounted {
    fn tmpfs(point: &Path) -> Mounted {
        Mounted::tmpfs_in(point, None)
    }

    fn tmpfs_in(point: &Path, ns: Option<u32>) -> Mounted {
        let status = in_mount_namespace(ns, "mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "sa-test"])
            .arg(point)
            .status_retrying()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs on {}", point.display());
        Mounted {
            point: point.to_path_buf(),
            ns,
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let umount = in_mount_namespace(self.ns, "umount")
            .arg("-l")
            .arg(&self.point)
            .status_retrying();
        drop(umount);
    }
}

/// Mounts coming and going at one point, from one shell loop in the mount namespace of
/// process `ns`: not a fork of this test per mount, since under qemu-user a fork of this
/// many-threaded process can hang before its exec (ci35 hung so for half an hour). Only
/// mounts that happened are counted; the loop is stopped when dropped, so a failed test
/// leaves nothing churning.
struct Churn {
    shell: std::process::Child,
    stop: PathBuf,
}

impl Churn {
    fn start(point: &Path, ns: u32) -> Churn {
        let stop = point.with_file_name("stop-churn");
        let script = format!(
            "n=0; while [ ! -e '{stop}' ]; do if mount -t tmpfs -o size=1m sa-test '{point}'; \
             then umount -l '{point}'; n=$((n+1)); fi; done; echo $n",
            stop = stop.display(),
            point = point.display()
        );
        let shell = in_mount_namespace(Some(ns), "sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn_retrying()
            .unwrap();
        Churn { shell, stop }
    }

    /// Stops the loop: how many mounts came and went.
    fn stop(mut self) -> u32 {
        let _ = fs::write(&self.stop, "");
        let mut out = String::new();
        if let Some(mut stdout) = self.shell.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        }
        out.trim().parse().unwrap_or(0)
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        let _ = fs::write(&self.stop, "");
        let _ = self.shell.wait();
    }
}

/// `program`, run in the mount namespace of process `ns` (`nsenter`), or in this one.
fn in_mount_namespace(ns: Option<u32>, program: &str) -> Command {
    match ns {
        Some(pid) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg("-t").arg(pid.to_string()).arg("-m").arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

#[test]
fn a_mount_made_after_a_job_reaches_the_next_job_read_only_and_an_unmount_too() {
    // Jobs enter a read-only namespace their thread made earlier: it must follow the
    // agent's mount table, and anything mounted since must be read-only there too.
    let dir = TempDir::new("c-remount");
    let point = dir.path().join("point");
    fs::create_dir(&point).unwrap();
    let probe = format!(
        "grep -q ' {} ' /proc/self/mountinfo && echo mounted || echo absent; \
         touch {}/f 2>/dev/null && echo wrote || echo refused",
        point.display(),
        point.display()
    );
    let cfg = base_config(
        dir.path(),
        json!({"rules": [{"name": "probe", "argv": ["/bin/sh", "-c", &probe], "no_pin": true}]}),
    );
    let agent = Agent::start_in(dir, &cfg, &[]);
    // A generous wait: under qemu-user, beside the whole suite, a namespace is slow to
    // make; a job still running would have no output to compare.
    let run = || {
        let body = json!({"argv": ["/bin/sh", "-c", &probe], "wait": 60});
        let job = agent.post_json("/run", &body).json();
        match job["stdout"].as_str() {
            Some(out) => out.to_string(),
            None => panic!("the probe has no output: {job}"),
        }
    };
    assert_eq!(run(), "absent\nrefused\n");
    let mounted = Mounted::tmpfs(&point);
    // Whichever job thread takes them, jobs see the new mount, and only read-only.
    let seen: Vec<String> = (0..3).map(|_| run()).collect();
    assert!(seen.iter().all(|s| s == "mounted\nrefused\n"), "{seen:?}");
    assert!(!point.join("f").exists());
    drop(mounted);
    assert_eq!(run(), "absent\nrefused\n");
}

#[test]
fn a_mount_made_while_the_read_only_namespace_is_made_is_read_only_too_without_mount_setattr() {
    // Kernels before 5.12 (a Jetson's 5.10) have no mount_setattr, so each mount is
    // remounted read-only from a list; strace makes this kernel one of them. A mount
    // made in the agent's namespace while a job's namespace is being made must not
    // slip in unlisted, and writable. Mounts churn at one point while jobs try it.
    let Some(strace) = strace_injecting(&["mount_setattr"], "error=ENOSYS") else {
        return;
    };
    let dir = TempDir::new("c-churn");
    let point = dir.path().join("point");
    fs::create_dir(&point).unwrap();
    let probe = format!(
        "touch {}/f 2>/dev/null && echo wrote || echo refused",
        point.display()
    );
    let cfg = base_config(
        dir.path(),
        json!({"rules": [{"name": "probe", "argv": ["/bin/sh", "-c", &probe], "no_pin": true}]}),
    );
    // In a mount namespace of its own, so that the churn does not reach other tests'
    // agents (or their checks that the box's mounts are unchanged).
    let private = ["unshare", "-m", "--propagation", "private"].map(String::from);
    let mut agent = Agent::prepare(dir, &cfg);
    agent.spawn_wrapped(&[&private[..], &strace[..]].concat(), &[]);
    let churn = Churn::start(&point, agent.pid());
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let body = json!({"argv": ["/bin/sh", "-c", &probe], "wait": 60});
        let job = agent.post_json("/run", &body).json();
        let out = job["stdout"]
            .as_str()
            .filter(|out| !out.is_empty())
            .map_or_else(|| job.to_string(), str::to_string);
        *seen.entry(out).or_insert(0) += 1;
    }
    let mounts = churn.stop();
    assert!(
        mounts > 20,
        "only {mounts} mounts came and went while the jobs ran"
    );
    // What must never happen is a write; a job the loaded machine failed otherwise (once,
    // among 200 under qemu beside the whole suite, with output "") proves nothing either
    // way, so it is shown but not counted against the fix.
    assert!(!seen.contains_key("wrote\n"), "{seen:?}");
    let refused = seen.get("refused\n").copied().unwrap_or(0);
    assert!(refused >= 190, "{seen:?}");
}

#[test]
fn a_job_that_remounts_read_write_leaves_the_next_job_read_only() {
    // Jobs of a thread share the namespace it made: a job that remounts a mount
    // read-write in it (as some programs do while they work) must not hand that on.
    let dir = TempDir::new("c-rw");
    let target = dir.path().join("f");
    let remount = format!(
        "mount -o remount,bind,rw \"$(stat -c %m {})\" && echo remounted",
        dir.path().display()
    );
    let cfg = base_config(
        dir.path(),
        json!({"rules": [
            {"name": "remount", "argv": ["/bin/sh", "-c", &remount], "no_pin": true},
            {"name": "touch", "argv": ["/usr/bin/touch", &target], "no_pin": true}
        ]}),
    );
    let agent = Agent::start_in(dir, &cfg, &[]);
    for _ in 0..3 {
        let job = agent
            .post_json("/run", &json!({"argv": ["/bin/sh", "-c", &remount]}))
            .json();
        assert_eq!(job["stdout"], "remounted\n", "{job}");
        let job = agent
            .post_json("/run", &json!({"argv": ["/usr/bin/touch", &target]}))
            .json();
        assert_eq!(job["status"], "failed", "{job}");
        assert_stderr(&job, "Read-only file system");
        assert!(!target.exists());
    }
}

#[test]
fn two_jobs_at_once_never_share_a_read_only_namespace() {
    // Namespaces are kept between jobs and lent to one at a time: a job that remounts
    // read-write in its own must not open the mounts of another job running meanwhile
    // (the next job is safe anyway: a namespace a job remounted in is made again).
    let dir = TempDir::new("c-rw-at-once");
    let target = dir.path().join("f");
    let marker = dir.path().join("remounted");
    let remount = format!(
        "mount -o remount,bind,rw \"$(stat -c %m {dir})\" && touch {marker}",
        dir = dir.path().display(),
        marker = marker.display()
    );
    let write_later = format!(
        "i=0; while [ ! -e {marker} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
         touch {target}",
        marker = marker.display(),
        target = target.display()
    );
    let cfg = base_config(
        dir.path(),
        json!({"rules": [
            {"name": "true", "argv": ["/bin/true"], "no_pin": true},
            {"name": "remount", "argv": ["/bin/sh", "-c", &remount], "no_pin": true},
            {"name": "write", "argv": ["/bin/sh", "-c", &write_later], "no_pin": true}
        ]}),
    );
    let agent = Agent::start_in(dir, &cfg, &[]);
    // One job lent a namespace and done, so the next two could be lent the same one.
    let job = agent
        .post_json("/run", &json!({"argv": ["/bin/true"]}))
        .json();
    assert_eq!(job["status"], "succeeded", "{job}");
    let r = agent.post_json(
        "/run",
        &json!({"argv": ["/bin/sh", "-c", &write_later], "wait": 0}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    // In its namespace (it runs) before the second job is lent one.
    assert!(
        wait_until(Duration::from_secs(10), || running(&write_later)),
        "the first job never started: {}",
        agent.log()
    );
    let job = agent
        .post_json("/run", &json!({"argv": ["/bin/sh", "-c", &remount]}))
        .json();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(marker.exists());
    let job = agent.get(&format!("/job/{id}?wait=30")).json();
    assert_eq!(job["status"], "failed", "{job}");
    assert_stderr(&job, "Read-only file system");
    assert!(!target.exists());
}

#[test]
fn a_private_tmp_job_gives_the_read_only_namespace_back_once_it_runs_in_its_own_copy() {
    // A private /tmp is the child's own copy of the read-only namespace it entered, so
    // the one it entered is free again once it runs: the next job is lent that, rather
    // than one made for it while the private_tmp job runs on.
    let dir = TempDir::new("c-ns-back");
    let long = "readlink /proc/self/ns/mnt; sleep 2; echo ns-back-done";
    let cfg = base_config(
        dir.path(),
        json!({"rules": [
            {"name": "ns", "argv": ["/bin/readlink", "/proc/self/ns/mnt"], "no_pin": true},
            {"name": "tmp", "argv": ["/bin/sh", "-c", long], "no_pin": true,
             "sandbox": {"private_tmp": true}}
        ]}),
    );
    // In a mount namespace of its own: other tests' mounts would make it remake the
    // namespace between jobs.
    let mut agent = Agent::prepare(dir, &cfg);
    let private = ["unshare", "-m", "--propagation", "private"].map(String::from);
    agent.spawn_wrapped(&private, &[]);
    let ns = |agent: &Agent| {
        let job = agent
            .post_json(
                "/run",
                &json!({"argv": ["/bin/readlink", "/proc/self/ns/mnt"]}),
            )
            .json();
        assert_eq!(job["status"], "succeeded", "{job}");
        job["stdout"].as_str().unwrap().trim().to_owned()
    };
    let first = ns(&agent);
    let r = agent.post_json("/run", &json!({"argv": ["/bin/sh", "-c", long], "wait": 0}));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    // EXECUTING is logged once the spawn has returned, and so once the namespace went
    // back. (The process shows in /proc a moment earlier: waiting for that failed under
    // load.)
    let executing = format!("EXECUTING [{id}]");
    assert!(
        wait_until(Duration::from_secs(10), || agent.log().contains(&executing)),
        "the private_tmp job never started: {}",
        agent.log()
    );
    let meanwhile = ns(&agent);
    let job = agent.get(&format!("/job/{id}?wait=30")).json();
    assert_eq!(job["status"], "succeeded", "{job}");
    let own = job["stdout"].as_str().unwrap().lines().next().unwrap_or("");
    assert_ne!(
        own, first,
        "the private_tmp job ran in the lent namespace itself"
    );
    assert_eq!(
        meanwhile, first,
        "a job beside the private_tmp one was not lent the namespace it gave back"
    );
}

/// A loop device with an ext4 file system on it, mounted and unmounted at `point` in the
/// mount namespace of the agent (the box's, as far as the agent can tell): other tests'
/// agents and jobs, running meanwhile, never see it. Detached when dropped.
struct LoopDisk {
    device: String,
    point: PathBuf,
}

impl LoopDisk {
    /// `None` (a loud skip; a failure under CI=true) without mkfs.ext4 or a loop device.
    fn new(dir: &Path) -> Option<LoopDisk> {
        let device = crate::common::loop_ext4(&dir.join("disk.img"), 16 << 20)?;
        let point = dir.join("point");
        fs::create_dir(&point).unwrap();
        Some(LoopDisk { device, point })
    }

    /// `mount` or `umount` run in `agent`'s mount namespace.
    fn in_namespace_of(&self, agent: &Agent, command: &[&str]) {
        let status = Command::new("nsenter")
            .args(["-t", &agent.pid().to_string(), "-m"])
            .args(command)
            .status_retrying()
            .unwrap();
        assert!(status.success(), "{command:?}");
    }

    fn mount(&self, agent: &Agent) {
        let point = self.point.to_str().unwrap();
        self.in_namespace_of(agent, &["mount", &self.device, point]);
    }

    /// From the agent's mount table; it may live on in other namespaces.
    fn unmount(&self, agent: &Agent) {
        self.in_namespace_of(agent, &["umount", self.point.to_str().unwrap()]);
    }

    /// Whether the file system is gone for good: no namespace holds it any more, so the
    /// device can be opened exclusively (as mkfs, fsck or a disk's eject need).
    fn released(&self) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        const O_EXCL: i32 = 0o200;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_EXCL)
            .open(&self.device)
            .is_ok()
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        // Once the agent is gone, so is its namespace and whatever was mounted in it.
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.device)
            .status_retrying();
    }
}

/// Whether a process whose command line contains `text` runs on the box.
fn running(text: &str) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|entry| {
        fs::read(entry.path().join("cmdline"))
            .is_ok_and(|line| line.windows(text.len()).any(|w| w == text.as_bytes()))
    })
}

#[test]
fn a_file_system_the_owner_unmounts_is_let_go_at_once_after_and_between_jobs() {
    // The read-only namespace kept between jobs holds every file system mounted when it
    // was made; one unmounted on the box must not stay busy in it (a disk that cannot
    // be checked or ejected), however long the agent stays idle.
    let dir = TempDir::new("c-let-go");
    let Some(disk) = LoopDisk::new(dir.path()) else {
        return;
    };
    // Unique on the box: the test finds the running job by its command line.
    let long = "sleep 2; echo let-go-done";
    let cfg = base_config(
        dir.path(),
        json!({"rules": [
            {"name": "true", "argv": ["/bin/true"], "no_pin": true},
            {"name": "long", "argv": ["/bin/sh", "-c", long], "no_pin": true}
        ]}),
    );
    let mut agent = Agent::prepare(dir, &cfg);
    let private = ["unshare", "-m", "--propagation", "private"].map(String::from);
    agent.spawn_wrapped(&private, &[]);
    disk.mount(&agent);
    assert!(!disk.released(), "mounted, the device is busy");

    // Kept after a job: let go as soon as it is unmounted, not when the agent next
    // runs a job or its job thread leaves.
    let job = agent
        .post_json("/run", &json!({"argv": ["/bin/true"]}))
        .json();
    assert_eq!(job["status"], "succeeded", "{job}");
    disk.unmount(&agent);
    assert!(
        wait_until(Duration::from_secs(2), || disk.released()),
        "the unmounted file system is still held by the agent"
    );

    // Lent to a running job: held while it runs (the job is in it), let go when it ends.
    disk.mount(&agent);
    std::thread::scope(|scope| {
        let job = scope.spawn(|| {
            agent
                .post_json("/run", &json!({"argv": ["/bin/sh", "-c", long]}))
                .json()
        });
        assert!(
            wait_until(Duration::from_secs(10), || running(long)),
            "the job never started: {}",
            agent.log()
        );
        disk.unmount(&agent);
        assert!(!disk.released(), "the running job's namespace holds it");
        let job = job.join().unwrap();
        assert_eq!(job["stdout"], "let-go-done\n", "{job}");
    });
    assert!(
        wait_until(Duration::from_secs(2), || disk.released()),
        "still held after the job that was lent the namespace ended"
    );
    // And the next job gets a namespace without it.
    let job = agent
        .post_json("/run", &json!({"argv": ["/bin/true"]}))
        .json();
    assert_eq!(job["status"], "succeeded", "{job}");
}

/// Writes to /dev/null, then tries to move itself into the root of the cgroup v2 tree.
const LEAVE_CGROUP: &str = "echo x >/dev/null && echo null ok; \
    m=$(awk '{for (i = 7; i < NF; i++) if ($i == \"-\") { \
    if ($(i+1) == \"cgroup2\") print $5; break }}' /proc/self/mountinfo); \
    echo $$ > \"$m/cgroup.procs\" && echo left || echo stayed";

#[test]
fn a_private_tmp_is_empty_and_leaves_the_real_one_alone() {
    // Made over a copy of the read-only namespace: /tmp is the job's to write, the rest
    // stays read-only.
    let script = "ls -A /tmp | wc -l; touch /tmp/sa-private-tmp-test && echo wrote; \
                  touch /etc/sa-private-tmp-test 2>/dev/null && echo escaped || echo read-only";
    let agent = Agent::start(
        "c-tmp",
        json!({"totp": {"step_s": 1},
            "rules": [{"name": "tmp", "argv": ["/bin/sh", "-c", script],
            "sandbox": {"private_tmp": true, "read_only": true}}]}),
    );
    // Twice: the second job's read-only namespace is the one the first left.
    for _ in 0..2 {
        let pin = agent.fresh_code();
        let r = agent.post_json("/run", &json!({"pin": pin, "argv": ["sh", "-c", script]}));
        let job = r.json();
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["stdout"], "0\nwrote\nread-only\n");
    }
    assert!(!Path::new("/tmp/sa-private-tmp-test").exists());
    assert!(!Path::new("/etc/sa-private-tmp-test").exists());
}

#[test]
fn without_network_a_job_cannot_reach_the_agents_own_port() {
    let port = free_port();
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
    let agent = Agent::start(
        "c-net",
        json!({
            "listen": format!("127.0.0.1:{port}"),
            "totp": {"step_s": 1},
            "rules": [
                {"name": "offline", "argv": ["/bin/bash", "-c", connect],
                 "sandbox": {"network": false}},
                {"name": "links", "argv": ["/bin/cat", "/proc/net/dev"],
                 "sandbox": {"network": false}},
                {"name": "online", "argv": ["/bin/bash", "-c", connect, "online"]}
            ]
        }),
    );
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "argv": ["bash", "-c", connect]}),
    );
    let job = r.json();
    assert_eq!(job["status"], "failed", "{job}");
    assert_stderr(&job, "Network is unreachable");
    // The same command outside the sandbox connects: the test can fail.
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "argv": ["bash", "-c", connect, "online"]}),
    );
    assert_eq!(r.json()["stdout"], "connected\n", "{}", r.body);
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "argv": ["cat", "/proc/net/dev"]}),
    );
    let links: Vec<String> = r.json()["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim().to_string())
        .collect();
    assert_eq!(links, ["lo"], "{}", r.body);
}

/// Whether the file system holding `path` ignores the setuid bit: systemd mounts /run
/// (where the tests' files are) `nosuid`. The last of the longest mount points that
/// hold it is the one on top.
fn on_nosuid_mount(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            Some((*fields.get(4)?, *fields.get(5)?))
        })
        .filter(|(point, _)| path.starts_with(point))
        .max_by_key(|(point, _)| point.len())
        .is_some_and(|(_, options)| options.split(',').any(|o| o == "nosuid"))
}

/// A root-owned 0755 directory removed on drop.
struct SharedDir(PathBuf);

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn no_new_privileges_stops_a_setuid_helper() {
    let dir = TempDir::new("c-nnp");
    let d = open_dir(dir.path());
    // Where the setuid bit counts: the test dir, else one in /var/lib.
    let setuid_dir = if on_nosuid_mount(&d) {
        let other = PathBuf::from(format!(
            "/var/lib/sudo-agent-tests-nnp-{}",
            std::process::id()
        ));
        fs::create_dir_all(&other).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            !on_nosuid_mount(&other),
            "no file system here honours setuid"
        );
        Some(SharedDir(other))
    } else {
        None
    };
    let programs = setuid_dir.as_ref().map_or(&d, |s| &s.0);
    // Two setuid-root copies of `id`: one rule each, so the same words reach both.
    let helpers: Vec<String> = ["id-plain", "id-nnp"]
        .iter()
        .map(|name| {
            let helper = programs.join(name);
            fs::copy("/usr/bin/id", &helper).unwrap();
            fs::set_permissions(&helper, fs::Permissions::from_mode(0o4755)).unwrap();
            helper.display().to_string()
        })
        .collect();
    let cfg = base_config(
        &d,
        json!({"totp": {"step_s": 1}, "rules": [
            {"name": "plain", "argv": [helpers[0], "-u"], "user": "nobody"},
            {"name": "nnp", "argv": [helpers[1], "-u"], "user": "nobody",
             "sandbox": {"no_new_privileges": true}}
        ]}),
    );
    let agent = Agent::start_in(dir, &cfg, &[]);
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "argv": [helpers[0], "-u"]}),
    );
    assert_eq!(
        r.json()["stdout"],
        "0\n",
        "the setuid bit works here: {}",
        r.body
    );
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "argv": [helpers[1], "-u"]}),
    );
    assert_eq!(r.json()["stdout"], "65534\n", "{}", r.body);
}

/// `sudo-agent ARGS` as root without CAP_SYS_ADMIN (`setpriv --bounding-set
/// -sys_admin`), as in a locked-down container: no namespaces, no mounts.
fn without_sys_admin() -> Command {
    let agent = agent_command();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set", "-sys_admin"])
        .arg(agent.get_program())
        .args(agent.get_args());
    cmd
}

#[test]
fn a_sandbox_the_kernel_refuses_refuses_the_job_and_check_says_so_first() {
    if Command::new("setpriv")
        .arg("--help")
        .output_retrying()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "setpriv missing under CI=true: apt-get install util-linux"
        );
        eprintln!("SKIPPED: setpriv is missing (util-linux)");
        return;
    }
    let dir = TempDir::new("c-nocap");
    let d = &dir.path().to_path_buf();
    let (ro, plain) = (d.join("ro-ran"), d.join("plain-ran"));
    let cfg = base_config(
        d,
        json!({"rules": [
            {"name": "ro", "argv": ["/usr/bin/touch", ro], "no_pin": true},
            {"name": "plain", "argv": ["/usr/bin/touch", plain]}
        ]}),
    );
    let config = crate::common::write_files(d, &cfg);
    let check = without_sys_admin()
        .args(["check", "--config"])
        .arg(&config)
        .output_retrying()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "warning: rule `ro` (no_pin, so read-only): its jobs will be refused: its sandbox \
             needs a mount namespace, which this kernel refuses"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("Operation not permitted"), "{stderr}");

    let mut agent = Agent::prepare(dir, &cfg);
    agent.launch(without_sys_admin(), &[]);
    assert_eq!(containment(&agent)["mount_namespace"], false);
    let r = agent.post_json("/run", &json!({"argv": ["touch", ro]}));
    let job = r.json();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(
        job["stderr"],
        "refused: creating the sandbox's namespaces (unshare): Operation not permitted \
         (os error 1); nothing ran"
    );
    assert!(!ro.exists(), "ran unsandboxed");
    let id = job["id"].as_str().unwrap();
    let log = agent.log();
    assert!(log.contains(&format!("REFUSED [{id}]")), "{log}");
    assert!(!log.contains(&format!("EXECUTING [{id}]")), "{log}");
    // A rule that asks for no sandbox runs as ever.
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.code(), "argv": ["touch", plain]}),
    );
    assert_eq!(r.json()["status"], "succeeded", "{}", r.body);
    assert!(plain.exists());
}

#[test]
fn a_writable_path_gone_at_run_time_refuses_the_job() {
    let dir = TempDir::new("c-gone");
    let gone = dir.path().join("gone");
    fs::create_dir(&gone).unwrap();
    let cfg = base_config(
        dir.path(),
        json!({"rules": [{"name": "up", "argv": ["/usr/bin/uptime"], "no_pin": true,
                          "sandbox": {"writable": [gone]}}]}),
    );
    let agent = Agent::start_in(dir, &cfg, &[]);
    // Once with the path there: the job thread keeps the namespace it made for the rule,
    // which must not outlive the path it binds.
    let job = agent
        .post_json("/run", &json!({"command": "uptime"}))
        .json();
    assert_eq!(job["status"], "succeeded", "{job}");
    fs::remove_dir(&gone).unwrap();
    let job = agent
        .post_json("/run", &json!({"command": "uptime"}))
        .json();
    assert_eq!(job["status"], "failed", "{job}");
    let stderr = job["stderr"].as_str().unwrap();
    assert!(
        stderr.starts_with("refused: making a writable path writable: No such file or directory"),
        "{stderr}"
    );
}

/// Whether the root of the cgroup v2 hierarchy offers `controller` (false without one).
fn v2_root_has(controller: &str) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = info.lines().find_map(|l| {
        let (mount, fs) = l.split_once(" - ")?;
        fs.starts_with("cgroup2 ")
            .then(|| mount.split(' ').nth(4).map(PathBuf::from))?
    });
    root.and_then(|r| fs::read_to_string(r.join("cgroup.controllers")).ok())
        .is_some_and(|c| c.split_whitespace().any(|c| c == controller))
}

#[test]
fn limits_the_kernel_cannot_enforce_refuse_the_job_and_check_says_so_first() {
    let dir = TempDir::new("c-nolimit");
    let marker = dir.path().join("ran");
    let cfg = base_config(
        dir.path(),
        json!({"rules": [{"name": "capped", "argv": ["/usr/bin/touch", marker],
                          "limits": {"memory_max": 67108864, "tasks_max": 10}}]}),
    );
    let config = crate::common::write_files(dir.path(), &cfg);
    let check = run_bin(&["check", "--config", config.to_str().unwrap()], "", &[]);
    let agent = Agent::start_in(dir, &cfg, &[]);
    if containment(&agent)["memory"] == true {
        eprintln!(
            "SKIPPED: limits_the_kernel_cannot_enforce…: the memory controller is there \
             (a_job_over_its_memory_limit_is_killed_and_says_so runs instead)"
        );
        return;
    }
    assert_eq!(check.code, 0, "{}", check.stderr);
    // `check` runs elsewhere than the agent will, so it tells what the box offers at
    // most: the v2 root's controllers. Where the root has memory but this agent's cgroup
    // does not (started in a unit or a login session without delegation), it cannot
    // know; the start-up log below does.
    let warned = check.stderr.contains(
        "warning: rule `capped`: its jobs will be refused: limits.memory_max needs the \
         memory controller",
    );
    assert_eq!(warned, !v2_root_has("memory"), "{}", check.stderr);
    let job = agent
        .post_json(
            "/run",
            &json!({"pin": agent.code(), "argv": ["touch", marker]}),
        )
        .json();
    assert_eq!(job["status"], "failed", "{job}");
    let stderr = job["stderr"].as_str().unwrap();
    assert!(
        stderr.starts_with("refused: limits.memory_max needs the memory controller, but "),
        "{stderr}"
    );
    assert!(stderr.ends_with("; nothing ran"), "{stderr}");
    assert!(!marker.exists(), "ran without its limits");
    assert!(
        agent.log().contains("its jobs will be refused"),
        "no start-up warning"
    );
}

#[test]
fn a_job_over_its_memory_limit_is_killed_and_says_so() {
    let agent = Agent::start(
        "c-oom",
        json!({"rules": [{"name": "hog", "argv": ["/bin/sh", "-c",
            "head -c 268435456 /dev/zero | tail -n 1 >/dev/null"],
            "limits": {"memory_max": 33554432}}]}),
    );
    if !has_controller(&agent, "memory", "memory_max") {
        return;
    }
    let job = agent
        .post_json(
            "/run",
            &json!({"pin": agent.code(), "argv": ["sh", "-c",
                "head -c 268435456 /dev/zero | tail -n 1 >/dev/null"], "wait": 60}),
        )
        .json();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["signal"], 9, "{job}");
    assert_eq!(job["killed_by"], "memory_limit", "{job}");
}

#[test]
fn limits_are_written_to_the_jobs_own_cgroup() {
    // The job reads its own cgroup's files: what the kernel enforces, not what we meant.
    let script = "m=$(awk '{for (i = 7; i < NF; i++) if ($i == \"-\") { \
        if ($(i+1) == \"cgroup2\") print $5; break }}' /proc/self/mountinfo); \
        d=$(grep '^0::' /proc/self/cgroup | cut -d: -f3); \
        cd \"$m$d\" && cat pids.max cpu.max memory.max";
    let agent = Agent::start(
        "c-limits",
        json!({"jobs": {"limits": {"tasks_max": 64}},
               "rules": [{"name": "read", "argv": ["/bin/sh", "-c", script],
                          "limits": {"memory_max": 67108864, "cpu_max_percent": 50}}]}),
    );
    let test = "limits in the job's cgroup";
    if !["memory", "pids", "cpu"]
        .iter()
        .all(|c| has_controller(&agent, c, test))
    {
        return;
    }
    let job = agent
        .post_json(
            "/run",
            &json!({"pin": agent.code(), "argv": ["sh", "-c", script], "wait": 30}),
        )
        .json();
    assert_eq!(job["stdout"], "64\n50000 100000\n67108864\n", "{job}");
}

#[test]
fn job_cgroups_get_only_the_controllers_the_limits_use() {
    // The job reads its own cgroup's controllers. Where pids is on cgroup v2 (Raspberry
    // Pi OS, Jetson), a config without limits gives jobs none and one with tasks_max
    // gives them pids and nothing else. Each agent alone in its cgroup: a `sudo-agent`
    // shared with other agents holds what any of them turned on.
    let script = "m=$(awk '{for (i = 7; i < NF; i++) if ($i == \"-\") { \
        if ($(i+1) == \"cgroup2\") print $5; break }}' /proc/self/mountinfo); \
        d=$(grep '^0::' /proc/self/cgroup | cut -d: -f3); cat \"$m$d/cgroup.controllers\"";
    let rule = json!({"name": "read", "argv": ["/bin/sh", "-c", script]});
    let test = "controllers only where limits use them";
    let capped = json!({"jobs": {"limits": {"tasks_max": 64}}, "rules": [rule]});
    let Some((capped_own, capped)) = start_alone("c-ctl-pids", capped) else {
        return;
    };
    if !has_controller(&capped, "pids", test) {
        stop_alone(capped, &capped_own).unwrap();
        return;
    }
    let (plain_own, plain) = start_alone("c-ctl-none", json!({"rules": [rule]})).unwrap();
    let read = |agent: &Agent| {
        let body = json!({"pin": agent.code(), "argv": ["sh", "-c", script], "wait": 30});
        let job = agent.post_json("/run", &body).json();
        assert_eq!(job["status"], "succeeded", "{job}");
        let words = job["stdout"].as_str().unwrap().split_whitespace();
        let ours = ["memory", "pids", "cpu"];
        words
            .filter(|c| ours.contains(c))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (plain_got, capped_got) = (read(&plain), read(&capped));
    let (plain_health, capped_health) = (containment(&plain), containment(&capped));
    let stopped = [
        stop_alone(plain, &plain_own),
        stop_alone(capped, &capped_own),
    ];
    assert_eq!(plain_got, Vec::<String>::new());
    assert_eq!(capped_got, ["pids"]);
    for controller in ["memory", "pids", "cpu"] {
        assert_eq!(plain_health[controller], false, "{plain_health}");
        assert_eq!(
            capped_health[controller],
            controller == "pids",
            "{capped_health}"
        );
    }
    for stop in stopped {
        stop.unwrap();
    }
}

#[test]
fn without_a_writable_cgroup_v2_jobs_run_in_process_groups_and_health_says_so() {
    // The agent in a mount namespace of its own whose cgroup2 mount is read-only, as on
    // a box (or container) without a writable cgroup v2.
    let dir = TempDir::new("c-nocg");
    let cfg = base_config(dir.path(), json!({}));
    let mut agent = Agent::prepare(dir, &cfg);
    let inner = agent_command();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "grep -w cgroup2 /proc/self/mounts | while read -r _ m _; do \
             mount -o remount,bind,ro \"$m\"; done; exec \"$@\"",
        )
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args());
    agent.launch(cmd, &[]);
    let health = containment(&agent);
    assert_eq!(health["cgroup"], Value::Null, "{health}");
    let log = agent.log();
    assert!(
        log.contains("jobs run in process groups only: cannot create the job's cgroup")
            && log.contains("Read-only file system"),
        "{log}"
    );
    assert!(
        agent
            .get("/metrics")
            .body
            .contains("sudo_agent_containment{layer=\"cgroup\"} 0")
    );
    let r = agent.post_json("/run", &json!({"command": "uptime"}));
    assert_eq!(r.json()["status"], "succeeded", "{}", r.body);
}
