//! Attack: a local user swaps the program a rule runs (or a directory on its way) and
//! waits for the agent to run the replacement as root. Every program, `notify` program
//! and `cwd` must have a trusted chain up to `/`: at `check`, at start-up, and again on
//! the job's thread right before each exec.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{
    Agent, Retrying, TempDir, base_config, run_bin, script, serve_refused, write_files,
};
use serde_json::{Value, json};

const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) -> PathBuf {
    fs::create_dir(path).unwrap();
    chmod(path, mode);
    path.to_path_buf()
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn check_and_serve_refuse_programs_others_can_swap() {
    let dir = TempDir::new("trust-load");
    let d = dir.path();
    // A 0777 directory, a directory owned by nobody, a program owned by nobody, a link
    // from a trusted place into the 0777 directory, and notify in the 0777 directory.
    let open = mkdir(&d.join("open"), 0o777);
    let theirs = mkdir(&d.join("theirs"), 0o755);
    chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let in_open = script(&open, "tool", "echo hi");
    let in_theirs = script(&theirs, "tool", "echo hi");
    let owned = script(d, "owned", "echo hi");
    chown(&owned, Some(NOBODY), Some(NOBODY)).unwrap();
    let link = d.join("link");
    symlink(&in_open, &link).unwrap();
    let notify = script(&open, "notify", "true");
    let good = script(d, "good", "echo hi");
    let cfg = base_config(
        d,
        json!({
            "notify": [notify],
            "rules": [
                {"name": "open", "argv": [in_open, "*"], "no_pin": true},
                {"name": "theirs", "argv": [in_theirs]},
                {"name": "owned", "argv": [owned]},
                {"name": "link", "argv": [link]},
                {"name": "good", "argv": [good], "no_pin": true}
            ]
        }),
    );
    let config = write_files(d, &cfg);
    let check = run_bin(&["check", "--config", &text(&config)], "", &[]);
    assert_eq!(check.code, 1, "{check:?}");
    let want = [
        (
            "notify[0]".to_string(),
            format!(
                "is not trusted (another user could change it): directory {} is mode 0777 (writable by group or others); run: chmod go-w {}",
                text(&open),
                text(&open)
            ),
        ),
        (
            "rules[0].argv[0]".into(),
            format!("run: chmod go-w {}", text(&open)),
        ),
        (
            "rules[1].argv[0]".into(),
            format!(
                "directory {} is owned by nobody (uid {NOBODY}); run: chown root {}",
                text(&theirs),
                text(&theirs)
            ),
        ),
        (
            "rules[2].argv[0]".into(),
            format!(
                "file {} is owned by nobody (uid {NOBODY}); run: chown root {}",
                text(&owned),
                text(&owned)
            ),
        ),
        (
            "rules[3].argv[0]".into(),
            format!(
                "{} is not trusted (another user could change it): directory {} is mode 0777",
                text(&link),
                text(&open)
            ),
        ),
    ];
    for (key, needle) in &want {
        assert!(
            check
                .stderr
                .lines()
                .any(|l| l.contains(&format!("{key}: ")) && l.contains(needle.as_str())),
            "no {key} line with {needle:?} in:\n{}",
            check.stderr
        );
    }
    assert!(
        check.stderr.contains("5 problem(s) found"),
        "{}",
        check.stderr
    );
    assert!(!check.stderr.contains("rules[4]"), "{}", check.stderr);

    let (code, err) = serve_refused(&config);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("chmod go-w {}", text(&open))),
        "{err}"
    );
    assert!(
        err.contains(&format!("chown root {}", text(&owned))),
        "{err}"
    );
}

#[test]
fn programs_in_tmp_are_refused_whatever_their_own_mode() {
    // /tmp is 1777: the sticky bit keeps others from renaming a file they do not own,
    // but a name there that is ever removed (tmp cleaning) is anyone's to take.
    let tmp = Path::new("/tmp").join(format!("sa-trust-tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    mkdir(&tmp, 0o755);
    let prog = script(&tmp, "tool", "echo hi");
    let dir = TempDir::new("trust-tmp");
    let cfg = base_config(
        dir.path(),
        json!({"rules": [{"name": "tmp", "argv": [prog]}]}),
    );
    let config = write_files(dir.path(), &cfg);
    let check = run_bin(&["check", "--config", &text(&config)], "", &[]);
    let _ = fs::remove_dir_all(&tmp);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check.stderr.contains("directory /tmp is mode 1777"),
        "{}",
        check.stderr
    );
    assert!(check.stderr.contains("/usr/local/bin"), "{}", check.stderr);
}

/// An agent whose no-code rule `tool` runs `bin/tool` (which writes a marker, so its
/// sandbox lists the test dir as writable) and whose rule `in-work` runs `/bin/pwd` in
/// `work/`.
fn agent_with_tool(tag: &str) -> (Agent, PathBuf, PathBuf, PathBuf) {
    let dir = TempDir::new(tag);
    // Open to traversal, so that `nobody` can reach bin/ once it is loosened.
    chmod(dir.path(), 0o755);
    let bin = mkdir(&dir.path().join("bin"), 0o755);
    let work = mkdir(&dir.path().join("work"), 0o755);
    let marker = dir.path().join("ran");
    let tool = script(&bin, "tool", &format!("id -u > {}", marker.display()));
    let cfg = base_config(
        dir.path(),
        json!({"rules": [
            {"name": "tool", "argv": [tool], "no_pin": true,
             "sandbox": {"writable": [dir.path()]}},
            {"name": "in-work", "argv": ["/bin/pwd"], "cwd": work, "no_pin": true}
        ]}),
    );
    (Agent::start_in(dir, &cfg, &[]), bin, work, marker)
}

fn run(agent: &Agent, argv: Value) -> Value {
    let r = agent.post_json("/run", &json!({"argv": argv}));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn assert_refused(agent: &Agent, job: &Value, weak: &Path) {
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["exit_code"], Value::Null, "{job}");
    let stderr = job["stderr"].as_str().unwrap();
    assert!(stderr.starts_with("refused to run: "), "{stderr}");
    assert!(
        stderr.contains(&format!("run: chmod go-w {}", weak.display())),
        "{stderr}"
    );
    let id = job["id"].as_str().unwrap();
    let log = agent.log();
    let refused = log
        .lines()
        .find(|l| l.contains(&format!("REFUSED [{id}]")))
        .unwrap_or_else(|| panic!("no REFUSED line for {id}:\n{log}"));
    assert!(
        refused.contains(&format!("chmod go-w {}", weak.display())),
        "{refused}"
    );
    assert!(!log.contains(&format!("EXECUTING [{id}]")), "{log}");
    assert!(
        log.contains(&format!("RESULT [{id}] (rc=refused)")),
        "{log}"
    );
}

#[test]
fn a_directory_loosened_after_start_up_refuses_the_job_and_runs_nothing() {
    let (agent, bin, work, marker) = agent_with_tool("trust-late");
    let job = run(&agent, json!(["tool"]));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(marker.exists());
    fs::remove_file(&marker).unwrap();

    // The owner (or a careless installer) makes the directory writable for everyone,
    // and `nobody` replaces the program in it: the agent must not run the swap.
    chmod(&bin, 0o777);
    let tool = bin.join("tool");
    let swapped = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "printf '#!/bin/sh\\nid -u > {m}\\n' > {t}.new && chmod 755 {t}.new && mv -f {t}.new {t}",
            m = marker.display(),
            t = tool.display()
        ))
        .uid(NOBODY)
        .gid(NOBODY)
        .status_retrying()
        .unwrap();
    assert!(swapped.success());
    let job = run(&agent, json!(["tool"]));
    assert_refused(&agent, &job, &bin);
    assert!(!marker.exists(), "the swapped program ran");

    // A working directory loosened the same way.
    chmod(&work, 0o777);
    let job = run(&agent, json!(["pwd"]));
    assert_refused(&agent, &job, &work);
    chmod(&work, 0o755);
    let job = run(&agent, json!(["pwd"]));
    assert_eq!(job["stdout"], format!("{}\n", work.display()), "{job}");
}

#[test]
fn a_root_jobs_writable_path_that_another_user_could_swap_is_refused() {
    // Found in session 17: `nobody` renamed a root job's writable directory (in a 0777
    // directory) away and put a link to a protected directory in its place; the next
    // read-only namespace bound the link's target writable, and the `no_pin` job wrote
    // there. Now the path's chain is judged at start-up and before each job.
    let dir = TempDir::new("trust-writable");
    chmod(dir.path(), 0o755);
    let shared = mkdir(&dir.path().join("shared"), 0o777);
    let w = mkdir(&shared.join("w"), 0o755);
    let protected = mkdir(&dir.path().join("protected"), 0o755);
    let save = format!("touch {}/saved && echo saved", text(&w));
    let cfg = base_config(
        dir.path(),
        json!({"rules": [{"name": "save", "argv": ["/bin/sh", "-c", &save], "no_pin": true,
                          "sandbox": {"writable": [w]}}]}),
    );
    let config = write_files(dir.path(), &cfg);
    let (code, err) = serve_refused(&config);
    assert_eq!(code, 1, "{err}");
    let want = format!(
        "rules[0].sandbox.writable[0]: {s} is not trusted (another user could change it): \
         directory {s} is mode 0777 (writable by group or others); run: chmod go-w {s}",
        s = text(&shared)
    );
    assert!(err.contains(&want), "{err}");

    // As the message says; the agent starts, and the job writes where it may.
    chmod(&shared, 0o755);
    let agent = Agent::start_in(dir, &cfg, &[]);
    let job = run(&agent, json!(["/bin/sh", "-c", save]));
    assert_eq!(job["stdout"], "saved\n", "{job}");
    // Loosened after start-up: refused before anyone swaps anything.
    chmod(&shared, 0o777);
    let job = run(&agent, json!(["/bin/sh", "-c", save]));
    assert_refused(&agent, &job, &shared);
    // Swapped meanwhile, then tightened again: the link is refused too; nothing ran.
    let swapped = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "mv {w} {w}.old && ln -s {p} {w}",
            w = text(&w),
            p = text(&protected)
        ))
        .uid(NOBODY)
        .gid(NOBODY)
        .status_retrying()
        .unwrap();
    assert!(swapped.success());
    chmod(&shared, 0o755);
    let job = run(&agent, json!(["/bin/sh", "-c", save]));
    assert_eq!(job["status"], "failed", "{job}");
    let want = format!(
        "refused to run: writable path {} is a symbolic link; name what it points to ({})",
        text(&w),
        text(&protected)
    );
    assert_eq!(job["stderr"], want, "{job}");
    assert!(
        !protected.join("saved").exists(),
        "the job wrote through the link"
    );
}
