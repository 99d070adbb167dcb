//! `install` and `uninstall` through the real binary, into a `--root` tree.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::{Retrying, SECRET_B32, TempDir, agent_command};

/// Runs the binary with `args`; (exit code, stdout, stderr).
fn run(args: &[&str], root: &Path) -> (i32, String, String) {
    let out = agent_command()
        .args(args)
        .arg("--root")
        .arg(root)
        .output_retrying()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (mode, owner uid) of `path` under `root`.
fn mode_owner(root: &Path, path: &str) -> (u32, u32) {
    let meta = fs::symlink_metadata(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    (meta.mode() & 0o7777, meta.uid())
}

const INSTALLED: [(&str, u32); 9] = [
    ("usr/local/bin/sudo-agent", 0o755),
    ("etc/systemd/system/sudo-agent.service", 0o644),
    ("etc/systemd/system/sudo-agent.socket", 0o644),
    ("etc/systemd/system/sudo-agent-unix.socket", 0o644),
    ("etc/sudo-agent", 0o700),
    ("etc/sudo-agent/config.json", 0o600),
    ("etc/sudo-agent/secret", 0o600),
    ("var/lib/sudo-agent", 0o700),
    ("var/log/sudo-agent.log", 0o640),
];

#[test]
fn install_into_a_root_writes_every_file_with_its_owner_and_mode_and_reruns_cleanly() {
    let dir = TempDir::new("install");
    // Whoever runs the test owns what it installs: root in CI and on a real box.
    let me = fs::metadata(dir.path()).unwrap().uid();
    let root = dir.path().join("root");
    let (code, out, err) = run(&["install"], &root);
    assert_eq!(code, 0, "{out}\n{err}");
    for (path, mode) in INSTALLED {
        assert_eq!(mode_owner(&root, path), (mode, me), "{path}");
    }
    assert!(
        out.contains("otpauth://totp/sudo-agent:root?secret="),
        "{out}"
    );
    assert!(out.contains("check ") && out.contains(": ok"), "{out}");
    assert!(
        out.contains(
            "skip (--root): systemctl enable --now sudo-agent.socket sudo-agent-unix.socket"
        ),
        "{out}"
    );
    let unit = fs::read_to_string(root.join("etc/systemd/system/sudo-agent.service")).unwrap();
    assert!(
        unit.contains("Type=notify") && unit.contains("WatchdogSec="),
        "{unit}"
    );
    let config = fs::read_to_string(root.join("etc/sudo-agent/config.json")).unwrap();
    assert!(
        config.contains("\"secret_file\": \"/etc/sudo-agent/secret\""),
        "the config names the installed paths, not the --root ones: {config}"
    );
    let secret = fs::read_to_string(root.join("etc/sudo-agent/secret")).unwrap();

    // Again: nothing changes, the secret (the phone's entry) least of all.
    let (code, out, err) = run(&["install"], &root);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        fs::read_to_string(root.join("etc/sudo-agent/secret")).unwrap(),
        secret
    );
    for path in INSTALLED.iter().take(3).map(|(p, _)| root.join(p)) {
        assert!(
            out.contains(&format!("unchanged {}", path.display())),
            "{out}"
        );
    }
    assert!(!out.contains("otpauth://"), "no new secret: {out}");
    assert!(!out.contains("try-restart"), "nothing changed: {out}");
}

#[test]
fn dry_run_prints_every_step_and_touches_nothing() {
    let dir = TempDir::new("dryrun");
    let root = dir.path().join("root");
    let (code, out, err) = run(&["install", "--dry-run"], &root);
    assert_eq!(code, 0, "{out}\n{err}");
    for (path, mode) in INSTALLED {
        if path.ends_with("secret") {
            assert!(out.contains("a new secret (0600)"), "{out}");
            continue;
        }
        let line = out
            .lines()
            .find(|l| l.contains(&root.join(path).display().to_string()))
            .unwrap_or_else(|| panic!("no step for {path}:\n{out}"));
        assert!(line.starts_with("would "), "{line}");
        assert!(line.contains(&format!("{mode:04o}")), "{line}");
    }
    assert!(out.contains("systemctl daemon-reload"), "{out}");
    assert!(!root.exists(), "a dry run created {}", root.display());
}

#[test]
fn a_broken_config_stops_install_before_binary_units_and_systemctl() {
    let dir = TempDir::new("badinstall");
    let root = dir.path().join("root");
    let etc = root.join("etc/sudo-agent");
    fs::create_dir_all(&etc).unwrap();
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o700)).unwrap();
    let config = etc.join("config.json");
    fs::write(
        &config,
        r#"{"rules": [{"name": "x", "argv": ["/no/such/program"]}], "jobs": {"timeout_s": 0}}"#,
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let secret = etc.join("secret");
    fs::write(&secret, SECRET_B32).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();

    let (code, out, err) = run(&["install"], &root);
    assert_eq!(code, 1, "{out}\n{err}");
    for needle in ["/no/such/program", "jobs.timeout_s", "were not touched"] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }
    assert!(!out.contains("systemctl"), "{out}");
    for path in [
        "usr/local/bin/sudo-agent",
        "etc/systemd/system/sudo-agent.service",
        "etc/systemd/system/sudo-agent.socket",
    ] {
        assert!(!root.join(path).exists(), "{path} was written");
    }
}

#[test]
fn uninstall_keeps_config_and_secret_unless_purge() {
    let dir = TempDir::new("uninstall");
    let root = dir.path().join("root");
    assert_eq!(run(&["install"], &root).0, 0);
    let (code, out, err) = run(&["uninstall"], &root);
    assert_eq!(code, 0, "{out}\n{err}");
    for path in [
        "usr/local/bin/sudo-agent",
        "etc/systemd/system/sudo-agent.service",
        "etc/systemd/system/sudo-agent.socket",
        "etc/systemd/system/sudo-agent-unix.socket",
    ] {
        assert!(!root.join(path).exists(), "{path} left behind");
    }
    for path in [
        "etc/sudo-agent/secret",
        "etc/sudo-agent/config.json",
        "var/lib/sudo-agent",
    ] {
        assert!(root.join(path).exists(), "{path} removed without --purge");
    }
    assert!(out.contains("--purge removes them"), "{out}");
    // Reinstalling keeps the old secret; purge then removes everything.
    assert_eq!(run(&["install"], &root).0, 0);
    let (code, out, err) = run(&["uninstall", "--purge"], &root);
    assert_eq!(code, 0, "{out}\n{err}");
    for path in [
        "etc/sudo-agent",
        "var/lib/sudo-agent",
        "var/log/sudo-agent.log",
    ] {
        assert!(!root.join(path).exists(), "{path} survived --purge");
    }
    // And once more, with nothing there: still fine.
    assert_eq!(run(&["uninstall", "--purge"], &root).0, 0);
}
