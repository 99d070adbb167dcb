//! Jobs start clean: a session of their own with no controlling terminal even when the
//! agent has one, none of the agent's descriptors, `/` and umask 022 unless the rule
//! says otherwise, and no way for a process of the rule's user to stop the agent by
//! signalling a job's processes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    Agent, Retrying, Seen, TempDir, agent_command, alive, base_config, python_has, serve_refused,
    wait_until,
};
use serde_json::{Value, json};

/// Reports what a job can see of its session, terminal and descriptors. `read` and `[`
/// are builtins, so /proc/self and /proc/$$ are the shell itself, which opens nothing
/// while it looks (no command substitution, no glob); the subshell probing /dev/tty is
/// in the same session.
const REPORT: &str = r#"read -r pid comm state ppid pgrp sid tty rest < /proc/self/stat
echo "pid=$pid pgrp=$pgrp sid=$sid tty=$tty"
( : </dev/tty ) 2>/dev/null && echo "devtty=open" || echo "devtty=none"
printf 'fds='; n=0; while [ $n -lt 1024 ]; do [ -e /proc/$$/fd/$n ] && printf '%s ' $n; n=$((n+1)); done; echo
echo "cwd=$(pwd) umask=$(umask) uid=$(id -u)"
cat <&7 >/dev/null 2>&1 && echo "fd7=read" || echo "fd7=closed""#;

/// SIGKILL when dropped, so a failing test leaves nothing running: to the process
/// seen, never to a later one given its pid.
struct KillOnDrop(Seen);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill(9);
    }
}

/// Rules running REPORT as root and as nobody (distinct patterns: first match wins).
fn rules() -> Value {
    json!([
        {"name": "as-root", "argv": ["/bin/sh", "-c", "*"]},
        {"name": "as-nobody", "argv": ["/bin/sh", "-e", "-c", "*"], "user": "nobody"},
        {"name": "in-usr", "argv": ["/bin/sh", "-u", "-c", "*"], "cwd": "/usr", "umask": "077"}
    ])
}

/// The REPORT line starting `key=` from a job's output.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in {out}"))
}

/// Runs REPORT through each of `rules()`' patterns; returns (rule, stdout) pairs.
fn reports(agent: &Agent) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (rule, flags) in [
        ("as-root", vec!["-c"]),
        ("as-nobody", vec!["-e", "-c"]),
        ("in-usr", vec!["-u", "-c"]),
    ] {
        let mut argv = vec!["sh"];
        argv.extend(flags);
        argv.push(REPORT);
        let r = agent.post_json(
            "/run",
            &json!({"pin": agent.fresh_code(), "argv": argv, "wait": 20}),
        );
        assert_eq!(r.status, 200, "{rule}: {}", r.body);
        let job = r.json();
        assert_eq!(job["rule"], rule, "{job}");
        assert_eq!(job["status"], "succeeded", "{job}");
        out.push((rule, job["stdout"].as_str().unwrap().to_string()));
    }
    out
}

/// Field `n` (1-based, as proc(5) counts) of `/proc/<pid>/stat`.
fn stat_field(pid: u32, n: usize) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(n - 3).unwrap().to_string()
}

/// A shell line that starts the agent with `exec "$@"` after `setup`.
fn wrapped(setup: &str) -> Command {
    let agent = agent_command();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("{setup}; exec \"$@\""))
        .arg("sh")
        .arg(agent.get_program())
        .args(agent.get_args())
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_job_has_its_own_group_and_no_terminal_even_when_the_agent_has_one() {
    if !python_has("pty", "python3 is needed to give the agent a terminal") {
        return;
    }
    let dir = TempDir::new("clean-pty");
    let pid_file = dir.path().join("agent.pid");
    let cfg = base_config(dir.path(), json!({"totp": {"step_s": 1}, "rules": rules()}));
    let mut agent = Agent::prepare(dir, &cfg);
    // pty.fork(): the child is a session leader whose controlling terminal is the new
    // pseudo-terminal (stdin, stdout and stderr too), as `sudo sudo-agent serve` typed
    // in a terminal would be. The parent drains the terminal until the agent exits.
    let script = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(pid))
while True:
    try:
        if not os.read(fd, 65536):
            break
    except OSError:
        break
os.waitpid(pid, 0)
"#;
    let inner = agent_command();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .arg(&pid_file)
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(Stdio::null());
    agent.launch(cmd, &[]);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| !s.is_empty())
    }));
    let agent_pid: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    // The agent is python's child: killing python would only hang its terminal up.
    let _agent_guard = KillOnDrop(Seen::now(agent_pid));
    // The test means something only if the agent really has a terminal.
    assert_ne!(
        stat_field(agent_pid, 7),
        "0",
        "the agent has no controlling terminal"
    );
    assert_eq!(stat_field(agent_pid, 6), agent_pid.to_string());

    for (rule, out) in reports(&agent) {
        let pid = field(&out, "pid").split(' ').next().unwrap();
        // In the agent's session (a session of its own would be a scheduler autogroup
        // of its own), but its own group and without the agent's terminal.
        assert_eq!(
            field(&out, "pid"),
            format!("{pid} pgrp={pid} sid={agent_pid} tty=0"),
            "{rule}: own group, no controlling terminal"
        );
        assert_eq!(field(&out, "devtty"), "none", "{rule}: {out}");
    }
    assert!(agent.health_ok());
}

#[test]
fn a_job_holds_only_fds_0_1_2_even_when_the_agent_was_started_with_more() {
    let dir = TempDir::new("clean-fds");
    let cfg = base_config(dir.path(), json!({"totp": {"step_s": 1}, "rules": rules()}));
    let mut agent = Agent::prepare(dir, &cfg);
    // A root-only file on fd 7 and a copy of stderr on fd 9, inherited (not
    // close-on-exec) as from a careless parent shell.
    agent.launch(wrapped("exec 7</etc/shadow 9>&2"), &[]);
    let target = std::fs::read_link(format!("/proc/{}/fd/7", agent.pid())).unwrap();
    assert_eq!(target, std::path::Path::new("/etc/shadow"), "precondition");

    for (rule, out) in reports(&agent) {
        assert_eq!(field(&out, "fds"), "0 1 2 ", "{rule}: {out}");
        assert_eq!(field(&out, "fd7"), "closed", "{rule}: {out}");
    }
}

#[test]
fn cwd_is_root_and_umask_022_whatever_the_agent_had_unless_the_rule_says() {
    let dir = TempDir::new("clean-cwd");
    let cfg = base_config(dir.path(), json!({"totp": {"step_s": 1}, "rules": rules()}));
    let mut agent = Agent::prepare(dir, &cfg);
    let home = agent.dir.path().to_path_buf();
    agent.launch(wrapped(&format!("cd '{}'; umask 000", home.display())), &[]);
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/cwd", agent.pid())).unwrap(),
        home,
        "precondition"
    );
    let nobody = "65534";
    for (rule, out) in reports(&agent) {
        let want = match rule {
            "as-root" => "cwd=/ umask=0022 uid=0".to_string(),
            "as-nobody" => format!("cwd=/ umask=0022 uid={nobody}"),
            _ => "cwd=/usr umask=0077 uid=0".to_string(),
        };
        assert_eq!(format!("cwd={}", field(&out, "cwd")), want, "{rule}: {out}");
    }
}

/// A shell looping `kill -TERM -1` as `user`: every process of that uid, except itself,
/// gets SIGTERM as fast as it can send it.
fn signaller(user: &str) -> Child {
    Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--clear-groups",
            "/bin/sh",
            "-c",
            "while :; do kill -TERM -1 2>/dev/null; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_retrying()
        .unwrap()
}

#[test]
fn a_process_of_the_rules_user_signalling_jobs_in_a_loop_never_stops_the_agent() {
    if Command::new("setpriv")
        .arg("--version")
        .output_retrying()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "setpriv missing under CI=true; apt-get install util-linux"
        );
        eprintln!("SKIPPED: setpriv is missing; apt-get install util-linux");
        return;
    }
    // `games` (uid 5): an account nothing else on a test box runs as, so the loop's
    // `kill -1` reaches the jobs and nothing else.
    let agent = Agent::start(
        "clean-signals",
        json!({"rules": [
            {"name": "true-games", "argv": ["/bin/true"], "user": "games", "no_pin": true},
            {"name": "sleep-games", "argv": ["/bin/sleep", "*"], "user": "games", "no_pin": true}
        ]}),
    );
    let mut killer = signaller("games");
    let _killer_guard = KillOnDrop(Seen::now(killer.id()));
    let started = Instant::now();
    let mut statuses = Vec::new();
    // Before the fix the agent stopped within a few jobs: the child had called setuid
    // (std does that before pre_exec closures) while still holding the agent's handler.
    for n in 0..60 {
        let argv = if n % 4 == 0 {
            json!(["sleep", "0.05"])
        } else {
            json!(["true"])
        };
        let r = agent.post_json("/run", &json!({"argv": argv, "wait": 10}));
        assert_eq!(r.status, 200, "job {n}: {}", r.body);
        statuses.push(r.json()["status"].as_str().unwrap().to_string());
        assert!(
            agent.child.as_ref().is_some_and(|c| alive(c.id())),
            "the agent died at job {n}"
        );
    }
    let _ = killer.kill();
    let _ = killer.wait();
    assert!(agent.health_ok());
    // A job killed by the loop fails; none is interrupted by an agent shutting down.
    assert!(
        statuses.iter().all(|s| s == "succeeded" || s == "failed"),
        "{statuses:?}"
    );
    let log = agent.log();
    assert!(
        !log.contains("STOPPED") && !log.contains("INTERRUPTED"),
        "{log}"
    );
    eprintln!(
        "60 jobs under a kill loop in {:?}: {} failed (signalled)",
        started.elapsed(),
        statuses.iter().filter(|s| *s == "failed").count()
    );
}

#[test]
fn a_group_without_a_user_is_refused_at_start_and_by_check() {
    let dir = TempDir::new("clean-group");
    let cfg = base_config(
        dir.path(),
        json!({"rules": [{"name": "g", "argv": ["/bin/true"], "group": "nogroup"}]}),
    );
    let agent = Agent::prepare(dir, &cfg);
    let (code, stderr) = serve_refused(&agent.config_path);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("rules[0].group: without \"user\" the command still runs as root"),
        "{stderr}"
    );
    let check = crate::common::run_bin(
        &["check", "--config", agent.config_path.to_str().unwrap()],
        "",
        &[],
    );
    assert_eq!(check.code, 1, "{check:?}");
    assert!(check.stderr.contains("rules[0].group"), "{check:?}");
}
