//! The TOTP secret on disk: read through the trusted-file checks, created fresh from
//! `getrandom` with mode 0600.

use std::fmt;
use std::path::{Path, PathBuf};

use super::totp::{self, Base32Error};
use crate::sys::files::{self, FileError, Trust};

/// Why the secret could not be read.
#[derive(Debug)]
pub enum SecretError {
    File(FileError),
    Format { path: PathBuf, err: Base32Error },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(err) => write!(f, "{err}"),
            Self::Format { path, err } => write!(
                f,
                "secret file {} does not hold a base32 secret: {err}; run: sudo-agent init --force",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// Reads and decodes the TOTP secret: a regular file of ours, mode 0600 or stricter.
pub fn load_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    let text =
        files::read_trusted("secret file", path, Trust::Private).map_err(SecretError::File)?;
    totp::base32_decode(text.trim()).map_err(|err| SecretError::Format {
        path: path.into(),
        err,
    })
}

/// A new random secret, written base32 to `path` with mode 0600.
pub fn new_secret(path: &Path) -> Result<Vec<u8>, String> {
    let key = totp::generate_secret().map_err(|e| format!("no randomness for a secret: {e}"))?;
    let text = format!("{}\n", totp::base32_encode(&key));
    files::write_atomic("secret file", path, text.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    Ok(key)
}
