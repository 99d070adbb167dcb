//! Enrolment, shared by `init`, `install` and `demo`: the starter config, a new TOTP
//! secret (0600), and the otpauth:// URI as a QR code for the owner's phone, or (for a
//! fleet) written to a 0600 file that `qr` shows on the controller.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::starter::{StarterPaths, starter_config};
use crate::auth::{load_secret, new_secret, totp};
use crate::config::Config;
use crate::sys::clock;
use crate::sys::files::{self, Trust};

/// What `init` does about the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolment {
    /// Make one unless present (or forced) and show it to scan: QR code, URI, secret and
    /// the current code.
    Show,
    /// Make one unless present (or forced) and print nothing of it; write its otpauth://
    /// URI (an existing secret's too) to this file, mode 0600, for Ansible to fetch.
    UriFile(PathBuf),
    /// Make none: the starter config only (the Debian package's postinst; no prompt and
    /// no secret during `apt`).
    ConfigOnly,
}

/// Writes the starter config at `config` if it is absent (its paths as `paths` say),
/// then a new secret unless one exists and not `force`, and shows it as `enrolment`
/// says. `root` is where the config's own paths live on disk: "/", or the tree
/// `install --root` fills. Returns whether it made a new secret.
pub fn init(
    config: &Path,
    root: &Path,
    paths: &StarterPaths,
    label: &Label,
    force: bool,
    enrolment: &Enrolment,
) -> Result<bool, String> {
    let dir = files::parent_or_dot(config);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !config.exists() {
        write_config(config, &starter_config(paths, false))?;
        println!(
            "wrote starter config {} (read-only rules; edit to allow more)",
            config.display()
        );
    }
    let loaded = Config::load_in_root(config, root).map_err(|e| e.to_string());
    if *enrolment == Enrolment::ConfigOnly {
        // A config the owner broke must not fail a package upgrade: say so, and go on.
        match loaded {
            Ok(cfg) if !cfg.secret_file.exists() => println!(
                "no secret yet ({}): run `sudo sudo-agent init` to make one and show its QR code",
                cfg.secret_file.display()
            ),
            Ok(_) => {}
            Err(err) => println!("warning: {err}\n(run: sudo-agent check)"),
        }
        return Ok(false);
    }
    let cfg = loaded?;
    let secret = &cfg.secret_file;
    let keep = secret.exists() && !force;
    match enrolment {
        Enrolment::UriFile(path) => {
            let key = if keep {
                println!("kept the existing secret {}", secret.display());
                load_secret(secret).map_err(|e| e.to_string())?
            } else {
                let key = new_secret(secret)?;
                println!("made a new secret {} (not shown)", secret.display());
                key
            };
            write_uri_file(path, &label.uri(&key, &cfg))?;
            Ok(!keep)
        }
        // Show (ConfigOnly returned above).
        _ if keep => {
            println!(
                "kept the existing secret {} (use --force to make a new one; the old phone entry then stops working)",
                secret.display()
            );
            Ok(false)
        }
        _ => {
            let key = new_secret(secret)?;
            print_enrolment(&key, label, &cfg);
            Ok(true)
        }
    }
}

/// The authenticator entry's name: `issuer:account`, e.g. `sudo-agent:jetson`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub account: String,
    pub issuer: String,
}

impl Label {
    fn uri(&self, key: &[u8], cfg: &Config) -> String {
        totp::otpauth_uri(key, &self.account, &self.issuer, &cfg.totp)
    }
}

/// Writes the URI (the secret, in effect) to `path` with mode 0600 unless it already
/// holds exactly that in a private file of ours.
fn write_uri_file(path: &Path, uri: &str) -> Result<(), String> {
    let text = format!("{uri}\n");
    if files::read_trusted(URI_FILE, path, Trust::Private).is_ok_and(|old| old == text) {
        println!("unchanged {}", path.display());
        return Ok(());
    }
    files::write_atomic(URI_FILE, path, text.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    println!(
        "wrote {} (0600): its otpauth:// URI; `sudo-agent qr FILE` shows it as a QR code",
        path.display()
    );
    Ok(())
}

const URI_FILE: &str = "URI file";
const URI_PREFIX: &str = "otpauth://totp/";

/// `sudo-agent qr FILE`: the QR code of a URI file that `init --uri-file` wrote (and
/// Ansible fetched), to scan on the controller. Like the secret, the file must be ours
/// and 0600 or stricter.
pub fn show_uri_file(path: &Path) -> Result<(), String> {
    let text = files::read_trusted(URI_FILE, path, Trust::Private).map_err(|e| e.to_string())?;
    let uri = text.trim();
    let label = uri
        .strip_prefix(URI_PREFIX)
        .filter(|_| !uri.contains(char::is_whitespace))
        .and_then(|rest| rest.split('?').next())
        .ok_or_else(|| {
            format!(
                "{} does not hold one otpauth://totp/ URI; fetch it again (sudo-agent init --uri-file on the box writes it)",
                path.display()
            )
        })?;
    let qr = qr_text(uri)
        .ok_or_else(|| format!("the URI in {} is too long for a QR code", path.display()))?;
    println!("{}: scan this for {label}\n\n{qr}", path.display());
    Ok(())
}

/// Writes a config file, mode 0600 (it names the secret and the policy).
pub fn write_config(path: &Path, text: &str) -> Result<(), String> {
    files::write_atomic("config file", path, text.as_bytes(), 0o600).map_err(|e| e.to_string())
}

/// Shows the QR code, URI, secret and current code to set up the phone with.
pub fn print_enrolment(key: &[u8], label: &Label, cfg: &Config) {
    let uri = label.uri(key, cfg);
    match qr_text(&uri) {
        Some(qr) => println!("Scan this with your authenticator app:\n\n{qr}"),
        None => println!("(the URI is too long for a QR code; type the secret in by hand)"),
    }
    println!("URI: {uri}");
    println!("secret (base32): {}", totp::base32_encode(key));
    println!(
        "current code: {}",
        totp::code_at(key, clock::now_unix(), &cfg.totp)
    );
}

/// The URI as a QR code of half-block characters, light on dark as terminals need.
fn qr_text(uri: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}
