//! Enrolling many boxes: `init --uri-file` (what the Ansible role runs on each host),
//! `init --config-only` (the Debian package's postinst) and `qr` (on the controller).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::{CliRun, TempDir, now, run_bin};
use sudo_agent::totp::{self, Params};

fn run(args: &[&str]) -> CliRun {
    run_bin(args, "", &[])
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn init_uri_file_prints_no_secret_and_writes_a_0600_uri_naming_the_host() {
    let dir = TempDir::new("uri-file");
    let config = dir.path().join("etc/config.json");
    let uri_file = dir.path().join("etc/otpauth.uri");
    let init = |extra: &[&str]| {
        let args = [
            &[
                "init",
                "--config",
                path(&config),
                "--uri-file",
                path(&uri_file),
            ],
            extra,
        ]
        .concat();
        let out = run(&args);
        assert_eq!(out.code, 0, "{out:?}");
        out
    };
    let first = init(&[]);
    let secret = fs::read_to_string(dir.path().join("etc/secret")).unwrap();
    let secret = secret.trim();
    let uri = fs::read_to_string(&uri_file).unwrap();
    // Nothing of the secret on the terminal (Ansible would log it): no URI, no QR, no code.
    for out in [&first.stdout, &first.stderr] {
        assert!(!out.contains(secret), "{first:?}");
        assert!(!out.contains("otpauth://totp/sudo-agent"), "{first:?}");
        assert!(!out.contains('█') && !out.contains('▀'), "{first:?}");
    }
    assert!(first.stdout.contains("made a new secret"), "{first:?}");
    assert_eq!(mode(&uri_file), 0o600);
    // The label names this host by default: one phone, many boxes.
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let prefix = format!("otpauth://totp/sudo-agent:{}?secret={secret}&", host.trim());
    assert!(uri.starts_with(&prefix), "{uri}");
    assert!(uri.ends_with("&issuer=sudo-agent&algorithm=SHA1&digits=6&period=30\n"));
    // The URI's secret is the box's: a code made from it is valid there now.
    let key = totp::base32_decode(secret).unwrap();
    let code = totp::code_at(&key, now(), &Params::default());
    let verify = run(&["verify", &code, "--config", path(&config)]);
    assert_eq!(verify.code, 0, "{verify:?}");

    // Again: the secret is kept and the file left as it is (Ansible: changed=0).
    let again = init(&[]);
    assert!(
        again.stdout.contains("kept the existing secret"),
        "{again:?}"
    );
    assert!(again.stdout.contains("unchanged"), "{again:?}");
    assert!(!again.stdout.contains("wrote") && !again.stdout.contains("made"));
    assert_eq!(fs::read_to_string(&uri_file).unwrap(), uri);

    // An existing secret (made by hand, or an open copy of the URI) is written out again,
    // 0600, under the label asked for; the secret itself never changes without --force.
    fs::set_permissions(&uri_file, fs::Permissions::from_mode(0o644)).unwrap();
    let relabel = init(&["--account", "jetson"]);
    assert!(relabel.stdout.contains("wrote"), "{relabel:?}");
    assert!(!relabel.stdout.contains(secret), "{relabel:?}");
    assert_eq!(mode(&uri_file), 0o600);
    let uri = fs::read_to_string(&uri_file).unwrap();
    assert!(
        uri.starts_with(&format!(
            "otpauth://totp/sudo-agent:jetson?secret={secret}&"
        )),
        "{uri}"
    );

    // A link planted where the URI goes is replaced, never written through.
    let target = dir.path().join("elsewhere");
    fs::write(&target, "untouched").unwrap();
    fs::remove_file(&uri_file).unwrap();
    std::os::unix::fs::symlink(&target, &uri_file).unwrap();
    init(&["--account", "jetson"]);
    assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
    assert!(!fs::symlink_metadata(&uri_file).unwrap().is_symlink());
    assert_eq!(fs::read_to_string(&uri_file).unwrap(), uri);

    // --force: a new secret, and the file follows it.
    init(&["--force", "--account", "jetson"]);
    let new_secret = fs::read_to_string(dir.path().join("etc/secret")).unwrap();
    assert_ne!(new_secret.trim(), secret);
    assert!(
        fs::read_to_string(&uri_file)
            .unwrap()
            .contains(&format!("secret={}&", new_secret.trim()))
    );
}

#[test]
fn init_config_only_writes_the_starter_and_never_a_secret() {
    let dir = TempDir::new("config-only");
    let config = dir.path().join("etc/config.json");
    let out = run(&["init", "--config-only", "--config", path(&config)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("wrote starter config"), "{out:?}");
    assert!(out.stdout.contains("run `sudo sudo-agent init`"), "{out:?}");
    assert!(!dir.path().join("etc/secret").exists());
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(config.parent().unwrap()), 0o700);

    // The owner's edits are never replaced: only written if absent.
    let edited = fs::read_to_string(&config)
        .unwrap()
        .replace("\"totp\"", "\"idle_exit_s\": 600, \"totp\"");
    fs::write(&config, &edited).unwrap();
    let out = run(&["init", "--config-only", "--config", path(&config)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(fs::read_to_string(&config).unwrap(), edited);

    // A config the owner broke must not fail a package upgrade: a warning, exit 0.
    fs::write(&config, "{\"rules\": [}").unwrap();
    let out = run(&["init", "--config-only", "--config", path(&config)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("warning:"), "{out:?}");
    assert_eq!(fs::read_to_string(&config).unwrap(), "{\"rules\": [}");
    assert!(!dir.path().join("etc/secret").exists());

    for bad in [
        &["init", "--config-only", "--force"][..],
        &["init", "--config-only", "--uri-file", "/tmp/x"][..],
    ] {
        assert_eq!(run(bad).code, 2, "{bad:?}");
    }
}

#[test]
fn qr_shows_a_saved_uri_and_refuses_open_or_bogus_files() {
    let dir = TempDir::new("qr");
    let file = dir.path().join("jetson.uri");
    let uri = "otpauth://totp/sudo-agent:jetson?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
               &issuer=sudo-agent&algorithm=SHA1&digits=6&period=30";
    fs::write(&file, format!("{uri}\n")).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&["qr", path(&file)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("scan this for sudo-agent:jetson"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains('█') || out.stdout.contains('▀'),
        "{out:?}"
    );

    // Readable by others: the secret is already exposed; say how to close it.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    let out = run(&["qr", path(&file)]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("run: chmod 600"), "{out:?}");

    for bogus in [
        "https://example.com/\n",
        "",
        "otpauth://totp/a b?secret=X\n",
    ] {
        fs::write(&file, bogus).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let out = run(&["qr", path(&file)]);
        assert_eq!(out.code, 1, "{bogus:?}: {out:?}");
        assert!(out.stderr.contains("does not hold one otpauth"), "{out:?}");
    }
    let out = run(&["qr", path(&dir.path().join("missing.uri"))]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(run(&["qr"]).code, 2);
}

#[test]
fn install_into_an_image_names_the_phone_entry_after_the_image_host() {
    let dir = TempDir::new("image-host");
    let root = dir.path().join("sd");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), "pi4\n").unwrap();
    let out = run(&["install", "--root", path(&root)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("otpauth://totp/sudo-agent:pi4?secret="),
        "{out:?}"
    );
}
