//! Enrolment, shared by `init`, `install` and `demo`: the starter config, a new TOTP
//! secret (0600), and the otpauth:// URI as a QR code for the owner's phone.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use super::starter::{StarterPaths, starter_config};
use crate::auth::{new_secret, totp};
use crate::config::Config;
use crate::sys::clock;
use crate::sys::files;

/// Writes the starter config at `config` if it is absent (its paths as `paths` say),
/// then a new secret unless one exists and not `force`, and shows it to scan. `root` is
/// where the config's own paths live on disk: "/", or the tree `install --root` fills.
pub fn init(
    config: &Path,
    root: &Path,
    paths: &StarterPaths,
    account: &str,
    issuer: &str,
    force: bool,
) -> Result<(), String> {
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
    let cfg = Config::load_in_root(config, root).map_err(|e| e.to_string())?;
    if cfg.secret_file.exists() && !force {
        println!(
            "kept the existing secret {} (use --force to make a new one; the old phone entry then stops working)",
            cfg.secret_file.display()
        );
        return Ok(());
    }
    let key = new_secret(&cfg.secret_file)?;
    print_enrolment(&key, account, issuer, &cfg);
    Ok(())
}

/// Writes a config file, mode 0600 (it names the secret and the policy).
pub fn write_config(path: &Path, text: &str) -> Result<(), String> {
    files::write_atomic("config file", path, text.as_bytes(), 0o600).map_err(|e| e.to_string())
}

/// Shows the QR code, URI, secret and current code to set up the phone with.
pub fn print_enrolment(key: &[u8], account: &str, issuer: &str, cfg: &Config) {
    let uri = totp::otpauth_uri(key, account, issuer, &cfg.totp);
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
