//! Start-up refusals, `check`, `init` and `demo` through the real binary.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Retrying, SECRET_B32, TempDir, base_config};
use serde_json::json;

/// Writes config + secret and runs `sudo-agent ARGS --config`, returning (exit code, stderr).
fn run_with(dir: &TempDir, cfg: &serde_json::Value, args: &[&str]) -> (i32, String) {
    let config = dir.path().join("config.json");
    fs::write(&config, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let secret = dir.path().join("secret");
    if !secret.exists() {
        fs::write(&secret, SECRET_B32).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = crate::common::agent_command()
        .args(args)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output_retrying()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn group_readable_secret_is_refused_with_the_fix() {
    let dir = TempDir::new("secret0644");
    let secret = dir.path().join("secret");
    fs::write(&secret, SECRET_B32).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = base_config(dir.path(), json!({}));
    let (code, err) = run_with(&dir, &cfg, &["serve"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "secret file {} is mode 0644; run: chmod 600 {}",
            secret.display(),
            secret.display()
        )),
        "{err}"
    );
}

#[test]
fn wildcard_listen_is_refused_unless_allow_remote() {
    let dir = TempDir::new("wildcard");
    let cfg = base_config(dir.path(), json!({"listen": "0.0.0.0:9999"}));
    let (code, err) = run_with(&dir, &cfg, &["serve"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("0.0.0.0:9999") && err.contains("allow_remote"),
        "{err}"
    );
}

#[test]
fn unknown_config_key_is_named_by_its_path() {
    let dir = TempDir::new("unknownkey");
    let cfg = base_config(dir.path(), json!({"jobs": {"timeout_z": 5}}));
    let (code, err) = run_with(&dir, &cfg, &["serve"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("jobs.timeout_z"), "{err}");
}

#[test]
fn check_lists_every_problem_and_passes_a_good_config() {
    let dir = TempDir::new("check");
    let good = base_config(dir.path(), json!({}));
    let (code, err) = run_with(&dir, &good, &["check"]);
    assert_eq!(code, 0, "{err}");
    let bad = base_config(
        dir.path(),
        json!({"totp": {"digits": 9}, "rules": [{"name": "x", "argv": ["/no/such/prog"]},
                                                 {"name": "y", "argv": ["/bin/echo", "**", "a"]}]}),
    );
    let (code, err) = run_with(&dir, &bad, &["check"]);
    assert_eq!(code, 1, "{err}");
    for needle in ["totp.digits", "/no/such/prog", "**"] {
        assert!(err.contains(needle), "missing {needle} in {err}");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["frobnicate"][..], &["serve", "--bogus"], &[]] {
        let out = crate::common::agent_command()
            .args(args)
            .output_retrying()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    let out = crate::common::agent_command()
        .arg("--version")
        .output_retrying()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sudo-agent "));
}

#[test]
fn init_writes_private_secret_and_never_overwrites_without_force() {
    let dir = TempDir::new("init");
    let config = dir.path().join("etc/config.json");
    let init = |force: bool| {
        let mut cmd = crate::common::agent_command();
        cmd.args([
            "init",
            "--account",
            "pi",
            "--issuer",
            "Home Lab",
            "--config",
        ])
        .arg(&config);
        if force {
            cmd.arg("--force");
        }
        cmd.output_retrying().unwrap()
    };
    let out = init(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("otpauth://totp/Home%20Lab:pi?secret="),
        "{stdout}"
    );
    assert!(stdout.contains("issuer=Home%20Lab"), "{stdout}");
    assert!(
        stdout.contains('█') || stdout.contains('▀'),
        "a QR code is drawn"
    );
    let secret = dir.path().join("etc/secret");
    assert_eq!(fs::metadata(&secret).unwrap().mode() & 0o777, 0o600);
    let first = fs::read_to_string(&secret).unwrap();
    let out = init(false);
    assert!(out.status.success());
    assert_eq!(
        fs::read_to_string(&secret).unwrap(),
        first,
        "init without --force must keep the secret"
    );
    assert!(init(true).status.success());
    assert_ne!(
        fs::read_to_string(&secret).unwrap(),
        first,
        "--force makes a new secret"
    );
    // The starter config it wrote is valid.
    let check = crate::common::agent_command()
        .args(["check", "--config"])
        .arg(&config)
        .output_retrying()
        .unwrap();
    // State and log paths are system paths that may not exist here; only the config must parse.
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(!err.contains("config file"), "{err}");
}

#[test]
fn demo_serves_and_cleans_up_on_ctrl_c() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = crate::common::agent_command()
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn_retrying()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut dir = None;
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line.strip_prefix("Demo agent in ") {
            dir = Some(std::path::PathBuf::from(rest.split(" (").next().unwrap()));
        }
        if line.contains("/health") {
            break;
        }
    }
    let dir = dir.expect("demo prints its temp dir");
    assert!(dir.exists());
    // Wait for it to listen, then ask it something.
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}/run");
    let mut status = 0;
    for _ in 0..100 {
        if let Ok(r) = http.post(&url).send(r#"{"command":"uptime"}"#) {
            status = r.status().as_u16();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status, 200);
    crate::common::unsafe_kill(child.id(), 2);
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit}");
    assert!(!dir.exists(), "Ctrl-C removes the demo dir");
}
