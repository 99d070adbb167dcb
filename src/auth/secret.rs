//! The TOTP secret on disk: read through the trusted-file checks, created fresh from
//! `getrandom` with mode 0600, and held as a [`SecretKey`] that is wiped when dropped.

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

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

/// The TOTP key. Its bytes are overwritten when it is dropped (so a core dump or a
/// later heap read after an agent, `code` or `verify` run finds no key), and `{:?}`
/// never shows them.
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    pub fn new(bytes: Vec<u8>) -> SecretKey {
        SecretKey(bytes)
    }
}

impl Deref for SecretKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Reads and decodes the TOTP secret: a regular file of ours, mode 0600 or stricter.
/// The base32 text is wiped once decoded.
pub fn load_secret(path: &Path) -> Result<SecretKey, SecretError> {
    let mut text =
        files::read_trusted("secret file", path, Trust::Private).map_err(SecretError::File)?;
    let key = totp::base32_decode(text.trim()).map(SecretKey::new);
    text.zeroize();
    key.map_err(|err| SecretError::Format {
        path: path.into(),
        err,
    })
}

/// A new random secret, written base32 to `path` with mode 0600.
pub fn new_secret(path: &Path) -> Result<SecretKey, String> {
    let key = SecretKey::new(
        totp::generate_secret().map_err(|e| format!("no randomness for a secret: {e}"))?,
    );
    let mut text = format!("{}\n", totp::base32_encode(&key));
    let written = files::write_atomic("secret file", path, text.as_bytes(), 0o600);
    text.zeroize();
    written.map_err(|e| e.to_string())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_secret_is_refused_without_quoting_it() {
        let dir = files::test_dir("secret-quote");
        let path = dir.join("secret");
        // A typo (`0` for `O`, `1` for `I`) and a cut last character: the message
        // names positions and the fix, never a character of the secret.
        for text in [
            "GEZDGNBVGY3TQOJ0GEZDGNBVGY3TQOJQ",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOB",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQÄ",
        ] {
            files::write_atomic("secret file", &path, text.as_bytes(), 0o600).unwrap();
            let err = load_secret(&path).unwrap_err().to_string();
            assert!(err.contains("init --force"), "{err}");
            for secret_char in ['0', 'B', 'Ä', 'Q'] {
                assert!(!err.contains(&format!("'{secret_char}'")), "{err}");
            }
            assert!(!err.contains(text), "{err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_key_is_not_printed() {
        let key = SecretKey::new(b"12345678901234567890".to_vec());
        assert_eq!(format!("{key:?}"), "SecretKey(<redacted>)");
        assert_eq!(&key[..2], b"12");
    }
}
