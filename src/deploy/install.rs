//! `sudo-agent install` and `uninstall`. Install puts the running binary in
//! /usr/local/bin, the systemd units in /etc/systemd/system, a starter config and a new
//! secret in /etc/sudo-agent (never replacing either), creates the state directory and
//! the log file, and checks it all like `sudo-agent check` *before* the binary, the
//! units or systemd are touched: a bad config never reaches the service. Then it
//! enables the socket, so systemd starts the agent on the first connection.
//!
//! Every step is printed; `--dry-run` prints and changes nothing. `--root DIR` does it
//! all under DIR (an SD-card image, or a test) and leaves systemctl out. Running it
//! twice changes nothing the second time.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::check;
use super::enrol::{self, Enrolment, Label};
use super::starter::StarterPaths;
use crate::audit::LOG_MODE;
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::sys;
use crate::sys::files;

const BINARY: &str = "/usr/local/bin/sudo-agent";
const UNIT_DIR: &str = "/etc/systemd/system";
const CONFIG: &str = DEFAULT_CONFIG_PATH;
const SOCKET_UNIT: &str = "sudo-agent.socket";
const UNIX_UNIT: &str = "sudo-agent-unix.socket";
const SERVICE_UNIT: &str = "sudo-agent.service";
/// The units, built into the binary so that one file is all a box needs.
const UNITS: [(&str, &str); 3] = [
    (
        SERVICE_UNIT,
        include_str!("../../systemd/sudo-agent.service"),
    ),
    (SOCKET_UNIT, include_str!("../../systemd/sudo-agent.socket")),
    (
        UNIX_UNIT,
        include_str!("../../systemd/sudo-agent-unix.socket"),
    ),
];

/// What `install` and `uninstall` were asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// "/" for the live system; anything else is an offline tree.
    pub root: PathBuf,
    pub dry_run: bool,
}

impl Options {
    fn live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `path` (absolute, as on the installed system) under the root.
    fn under(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn say(&self, what: &str) {
        if self.dry_run {
            println!("would {what}");
        } else {
            println!("{what}");
        }
    }

    fn needs_root(&self) -> Result<(), String> {
        if self.live() && !self.dry_run && sys::euid() != 0 {
            return Err("this needs root: run it with sudo (or try --dry-run)".into());
        }
        Ok(())
    }

    /// Runs `systemctl ARGS` on the live system; printed only, under --root or --dry-run.
    fn systemctl(&self, args: &[&str]) -> Result<(), String> {
        let line = format!("systemctl {}", args.join(" "));
        if !self.live() {
            println!("skip (--root): {line}");
            return Ok(());
        }
        self.say(&format!("run: {line}"));
        if self.dry_run {
            return Ok(());
        }
        match Command::new("systemctl").args(args).status() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("`{line}` failed ({status})")),
            Err(err) => Err(format!(
                "cannot run `{line}`: {err}; is this a systemd system?"
            )),
        }
    }
}

/// Installs (or updates) the agent. Returns the number of problems `check` found: 0
/// means installed; otherwise nothing past the config was touched.
pub fn install(opts: &Options, label: &Label) -> Result<usize, String> {
    opts.needs_root()?;
    let config = opts.under(CONFIG);

    // 1. Config and secret: created when absent, never replaced.
    private_dir(opts, &opts.under("/etc/sudo-agent"))?;
    let mut new_secret = false;
    if opts.dry_run {
        match config.exists() {
            true => println!("keep config {}", config.display()),
            false => opts.say(&format!(
                "write starter config {} (0600) and a new secret (0600), and show its QR code",
                config.display()
            )),
        }
    } else if !config.exists() || Config::load_in_root(&config, &opts.root).is_ok() {
        // (A config that does not load is left for the check below to report in full.)
        new_secret = enrol::init(
            &config,
            &opts.root,
            &StarterPaths::system(),
            label,
            false,
            &Enrolment::Show,
        )?;
    }

    // 2. Where the config says state and log live (the defaults until it exists).
    let (state_dir, log_file) = match Config::load_in_root(&config, &opts.root) {
        Ok(cfg) => (cfg.state_dir, cfg.log_file),
        Err(_) => {
            let paths = StarterPaths::system();
            (
                opts.under(&paths.state_dir.to_string_lossy()),
                opts.under(&paths.log_file.to_string_lossy()),
            )
        }
    };
    private_dir(opts, &state_dir)?;
    log_file_0640(opts, &log_file)?;

    // 3. Like visudo -c: nothing below happens with a config the agent would refuse.
    // A dry run on a fresh box has no config to check yet.
    if !opts.dry_run || config.exists() {
        let report = check::check(&config, &opts.root);
        for warning in &report.warnings {
            println!("warning: {warning}");
        }
        if !report.problems.is_empty() {
            for problem in &report.problems {
                eprintln!("error: {problem}");
            }
            eprintln!(
                "{} problem(s) found; the binary, the units and the service were not touched. \
                 Fix them (sudo-agent check --config {CONFIG}) and run install again.",
                report.problems.len()
            );
            return Ok(report.problems.len());
        }
        println!("check {}: ok", config.display());
    }

    // 4. Binary and units; the service restarts only when one of them changed.
    let exe = std::env::current_exe()
        .and_then(fs::read)
        .map_err(|e| format!("cannot read this program to copy it: {e}"))?;
    // A running agent holds its secret in memory: a new one needs a restart too.
    let mut changed = put_file(opts, &opts.under(BINARY), &exe, 0o755)? | new_secret;
    for (name, text) in UNITS {
        let path = opts.under(&format!("{UNIT_DIR}/{name}"));
        changed |= put_file(opts, &path, text.as_bytes(), 0o644)?;
    }

    // 5. systemd: the socket is enabled; the agent starts on the first connection.
    opts.systemctl(&["daemon-reload"])?;
    opts.systemctl(&["enable", "--now", SOCKET_UNIT, UNIX_UNIT])?;
    if changed {
        // A running agent picks up the new binary or units; a stopped one is left alone.
        opts.systemctl(&["try-restart", SERVICE_UNIT])?;
    }
    if opts.dry_run {
        println!("dry run: nothing was changed");
    } else {
        println!(
            "done: {SOCKET_UNIT} serves http://127.0.0.1:9999; after editing the config, run \
             sudo-agent check --config {CONFIG} and systemctl restart {SERVICE_UNIT}"
        );
    }
    Ok(0)
}

/// After `init` made a new secret on the live system: a running agent still holds the
/// old one, and requests that came before there was any secret may have made systemd
/// give up on the socket (five failed starts). So when the socket is enabled, clear
/// that, restart a running agent and start the socket. Failures are warnings: the
/// secret is made, and the owner can run the same commands.
pub fn restart_for_new_secret() {
    let live = Options {
        root: PathBuf::from("/"),
        dry_run: false,
    };
    if !Path::new("/run/systemd/system").is_dir() {
        return;
    }
    // (Quiet: on a box without the units systemctl complains that they do not exist.)
    let enabled = Command::new("systemctl")
        .args(["is-enabled", "--quiet", SOCKET_UNIT])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !enabled {
        return;
    }
    for args in [
        &["reset-failed", SOCKET_UNIT, SERVICE_UNIT][..],
        &["try-restart", SERVICE_UNIT],
        &["start", SOCKET_UNIT],
    ] {
        if let Err(err) = live.systemctl(args) {
            println!("warning: {err}");
        }
    }
}

/// Removes the binary and the units. The config, the secret (so the phone's entry keeps
/// working after a reinstall), the state and the log stay unless `purge`.
pub fn uninstall(opts: &Options, purge: bool) -> Result<(), String> {
    opts.needs_root()?;
    let config = opts.under(CONFIG);
    let units: Vec<PathBuf> = UNITS
        .iter()
        .map(|(name, _)| opts.under(&format!("{UNIT_DIR}/{name}")))
        .collect();
    if units.iter().any(|u| u.exists()) {
        opts.systemctl(&["disable", "--now", SOCKET_UNIT, UNIX_UNIT, SERVICE_UNIT])?;
    }
    for path in units.iter().chain([&opts.under(BINARY)]) {
        remove(opts, path)?;
    }
    opts.systemctl(&["daemon-reload"])?;
    // What the config names, read before it is removed.
    let own = Config::load_in_root(&config, &opts.root).ok().map(|cfg| {
        let mut paths = vec![cfg.state_dir, cfg.log_file, cfg.results.dir];
        if cfg.secret_file.parent() != config.parent() {
            paths.push(cfg.secret_file);
        }
        paths
    });
    let mut kept: Vec<PathBuf> = Vec::new();
    for path in config
        .parent()
        .into_iter()
        .map(Path::to_path_buf)
        .chain(own.into_iter().flatten())
    {
        match purge {
            true => remove(opts, &path)?,
            false if path.exists() => kept.push(path),
            false => {}
        }
    }
    if !kept.is_empty() {
        println!(
            "kept {} (config, secret, state, log); --purge removes them",
            kept.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Creates a 0700 directory owned by us, or checks an existing one.
fn private_dir(opts: &Options, path: &Path) -> Result<(), String> {
    if path.exists() {
        println!("keep directory {}", path.display());
    } else {
        opts.say(&format!("create directory {} (root, 0700)", path.display()));
    }
    if opts.dry_run {
        return Ok(());
    }
    files::ensure_private_dir("directory", path).map_err(|e| e.to_string())
}

/// Creates the audit log empty with mode 0640 if it does not exist (the agent keeps an
/// existing one, tightening its mode).
fn log_file_0640(opts: &Options, path: &Path) -> Result<(), String> {
    if path.exists() {
        println!("keep log {}", path.display());
        return Ok(());
    }
    opts.say(&format!("create log {} (root, 0640)", path.display()));
    if opts.dry_run {
        return Ok(());
    }
    make_parent(path)?;
    files::open_append("log file", path, LOG_MODE)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Creates `path`'s parent directories (0755) if missing.
fn make_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(dir) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display())),
        None => Ok(()),
    }
}

/// Writes `bytes` to `path` with `mode` unless it already holds exactly that; returns
/// whether it changed anything.
fn put_file(opts: &Options, path: &Path, bytes: &[u8], mode: u32) -> Result<bool, String> {
    let same = fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_file() && m.mode() & 0o7777 == mode && m.uid() == sys::euid())
        && fs::read(path).is_ok_and(|old| old == bytes);
    if same {
        println!("unchanged {}", path.display());
        return Ok(false);
    }
    opts.say(&format!("write {} (root, {mode:04o})", path.display()));
    if opts.dry_run {
        return Ok(true);
    }
    make_parent(path)?;
    // Temp file and rename: a running agent keeps its old binary until it restarts.
    files::write_atomic("file", path, bytes, mode).map_err(|e| e.to_string())?;
    // The temp file's mode went through the umask; the installed one must be exact.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(true)
}

fn remove(opts: &Options, path: &Path) -> Result<(), String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    };
    opts.say(&format!("remove {}", path.display()));
    if opts.dry_run {
        return Ok(());
    }
    let result = match meta.is_dir() {
        true => fs::remove_dir_all(path),
        false => fs::remove_file(path),
    };
    result.map_err(|e| format!("cannot remove {}: {e}", path.display()))
}
