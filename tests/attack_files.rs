//! Attack: the files the agent trusts or writes — a results dir that is a link, open to
//! all or someone else's; a secret or config that is a link or group-writable; a state
//! file swapped for a link; links planted in the results dir. Each is refused with a
//! message that names the fix, or handled without following the link.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use crate::common::{Agent, TempDir, base_config, serve_refused, wait_until, write_files};
use serde_json::{Value, json};

fn cfg(dir: &TempDir) -> Value {
    base_config(dir.path(), json!({"totp": {"step_s": 1}}))
}

fn mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Starts `serve` on the prepared `dir` and expects exit 1 with `needle` in stderr.
fn refused(dir: &TempDir, config: &Path, needle: &str) {
    let (code, err) = serve_refused(config);
    assert_eq!(code, 1, "expected a refusal with {needle:?}, got: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
    assert!(!err.contains("LISTENING"), "{err}");
    let _ = dir;
}

#[test]
fn results_dir_that_is_a_link_open_or_foreign_is_refused() {
    let dir = TempDir::new("f-results");
    let config = write_files(dir.path(), &cfg(&dir));
    let results = dir.path().join("results");
    let real = dir.path().join("real");
    fs::create_dir(&real).unwrap();
    mode(&real, 0o700);

    symlink(&real, &results).unwrap();
    refused(
        &dir,
        &config,
        &format!("results dir {} is a symbolic link", results.display()),
    );
    fs::remove_file(&results).unwrap();

    fs::create_dir(&results).unwrap();
    mode(&results, 0o777);
    refused(
        &dir,
        &config,
        &format!(
            "results dir {} is mode 0777; run: chmod 700",
            results.display()
        ),
    );

    mode(&results, 0o700);
    std::os::unix::fs::chown(&results, Some(65534), Some(65534)).unwrap();
    refused(
        &dir,
        &config,
        &format!("results dir {} is owned by uid 65534", results.display()),
    );
    // Refused, never "fixed": the agent did not chmod or chown what it did not create.
    let meta = fs::symlink_metadata(&results).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o700));
}

#[test]
fn secret_or_config_that_is_a_link_or_group_writable_is_refused() {
    let dir = TempDir::new("f-trusted");
    let config = write_files(dir.path(), &cfg(&dir));
    let secret = dir.path().join("secret");

    mode(&secret, 0o620);
    refused(
        &dir,
        &config,
        &format!(
            "secret file {} is mode 0620; run: chmod 600",
            secret.display()
        ),
    );
    mode(&secret, 0o600);

    let real_secret = dir.path().join("real-secret");
    fs::rename(&secret, &real_secret).unwrap();
    symlink(&real_secret, &secret).unwrap();
    refused(
        &dir,
        &config,
        &format!("secret file {} is a symbolic link", secret.display()),
    );
    fs::remove_file(&secret).unwrap();
    fs::rename(&real_secret, &secret).unwrap();

    mode(&config, 0o664);
    refused(
        &dir,
        &config,
        &format!(
            "config file {} is mode 0664; run: chmod 644",
            config.display()
        ),
    );
    mode(&config, 0o646);
    refused(&dir, &config, "run: chmod 644");
    mode(&config, 0o600);

    let link = dir.path().join("link.json");
    symlink(&config, &link).unwrap();
    refused(
        &dir,
        &link,
        &format!("config file {} is a symbolic link", link.display()),
    );
}

#[test]
fn a_log_owned_by_someone_else_is_refused_naming_the_chown() {
    // A log that `nobody` owns is a log `nobody` can rewrite: every line the agent
    // appends would be theirs to forge or erase.
    let dir = TempDir::new("f-log-owner");
    let config = write_files(dir.path(), &cfg(&dir));
    let log = dir.path().join("audit.log");
    fs::write(&log, "old line\n").unwrap();
    mode(&log, 0o640);
    std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
    refused(
        &dir,
        &config,
        &format!(
            "log file {} is owned by uid 65534, not root; run: chown root {}",
            log.display(),
            log.display()
        ),
    );
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "old line\n",
        "nothing appended"
    );
}

#[test]
fn a_mistyped_secret_is_refused_without_quoting_any_of_it() {
    let dir = TempDir::new("f-secret-typo");
    let config = write_files(dir.path(), &cfg(&dir));
    let secret = dir.path().join("secret");
    // One character wrong (a `0` for an `O`), then a cut last character.
    for (text, needle) in [
        (
            "GEZDGNBVGY3TQOJ0GEZDGNBVGY3TQOJQ\n",
            "the character at position 16",
        ),
        (
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOB\n",
            "the last character, at position 31",
        ),
    ] {
        fs::write(&secret, text).unwrap();
        mode(&secret, 0o600);
        let (code, err) = serve_refused(&config);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(needle) && err.contains("init --force"),
            "{err}"
        );
        assert!(!err.contains("'0'") && !err.contains("'B'"), "{err}");
        assert!(!err.contains("GEZDGNBV"), "{err}");
    }
}

#[test]
fn state_file_swapped_for_a_link_is_refused_or_replaced_never_followed() {
    let mut agent = Agent::start("f-state", json!({"totp": {"step_s": 1}}));
    let state = agent.auth_state_path();
    let victim = agent.dir.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();

    // While running: the next save replaces the link itself (rename), the target stays.
    // A wrong code's failure is saved before its 401 (a good code's step goes to the
    // journal only).
    let wrong = || agent.post_json("/run", &json!({"pin": "000000", "command": "true"}));
    assert_eq!(wrong().status, 401);
    let saved = || fs::symlink_metadata(&state).is_ok_and(|m| m.is_file());
    assert!(saved());
    fs::remove_file(&state).unwrap();
    symlink(&victim, &state).unwrap();
    let r = wrong();
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(saved());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");

    // At start: a link there stops the agent with the path and the fix.
    agent.kill9();
    fs::remove_file(&state).unwrap();
    symlink(&victim, &state).unwrap();
    refused(
        &agent.dir,
        &agent.config_path,
        &format!("state file {} is a symbolic link", state.display()),
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn links_planted_in_the_results_dir_are_never_followed_by_cleanup() {
    // max_files 1: cleanup after each job removes every older regular result file.
    let agent = Agent::start("f-plant", json!({"results": {"max_files": 1}}));
    let results = agent.dir.path().join("results");
    let outside = agent.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let mut planted = Vec::new();
    for i in 0..50u64 {
        let target = outside.join(format!("agent-{i:032x}.txt"));
        fs::write(&target, "keep me").unwrap();
        let link = results.join(format!("agent-{:032x}.txt", 0xdead_0000 + i));
        symlink(&target, &link).unwrap();
        planted.push((link, target));
    }
    // A link to a directory with a matching name inside, and a dangling one.
    symlink(
        &outside,
        results.join("agent-ffffffffffffffffffffffffffffffff.txt"),
    )
    .unwrap();
    symlink(
        outside.join("missing"),
        results.join("agent-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.txt"),
    )
    .unwrap();

    let first = agent.post_json("/run", &json!({"command": "uptime"}));
    assert_eq!(first.status, 200, "{}", first.body);
    let own = first.json()["result_file"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        agent
            .post_json("/run", &json!({"command": "uptime"}))
            .status,
        200
    );
    // The first job's file is cleaned (max_files 1); every planted link and target stays.
    assert!(wait_until(Duration::from_secs(5), || {
        !Path::new(&own).exists()
    }));
    assert!(
        !agent.stderr().contains("results cleanup:"),
        "{}",
        agent.stderr()
    );
    for (link, target) in &planted {
        assert!(fs::symlink_metadata(link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(target).unwrap(), "keep me");
    }
    assert!(!outside.join("missing").exists());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 50);
}

#[test]
fn results_dir_swapped_for_a_link_while_running_gets_no_file() {
    // The /tmp race: the directory vanishes (tmpfiles aging) and a link to a directory
    // of the attacker's choice appears where it was. Before the fix the result file,
    // holding the command and its output, was written as root through the link.
    let agent = Agent::start("f-swap", json!({}));
    let results = agent.dir.path().join("results");
    let elsewhere = agent.dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::remove_dir(&results).unwrap();
    symlink(&elsewhere, &results).unwrap();

    let r = agent.post_json("/run", &json!({"command": "uptime"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let job = r.json();
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["result_file"], Value::Null);
    let why = job["result_error"].as_str().unwrap();
    assert!(why.contains("is a symbolic link"), "{why}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    let log = agent.log();
    assert!(
        log.contains(&format!(
            "cannot write result file for job {}",
            job["id"].as_str().unwrap()
        )),
        "{log}"
    );
}
