//! Persisted replay and throttle state (`<state_dir>/auth.json`).
//!
//! Losing this file would reopen every code already used and lift every lockout, so a
//! file that cannot be read or parsed is an error the owner must look at, never a silent
//! reset to defaults. Writes are atomic (temp file, fsync, rename, directory fsync).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys::files::{self, FileError, Trust};

/// File name of the state inside `state_dir`.
const FILE_NAME: &str = "auth.json";

/// What `auth` needs to survive a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthState {
    /// Highest TOTP time step ever accepted; only greater steps are accepted next.
    pub last_step: u64,
    /// Unix seconds of recent failed codes, oldest first; never longer than
    /// `max_failures` because reaching it locks and clears the list.
    pub failures: Vec<u64>,
    /// Unix second the current lockout ends (0 or in the past: not locked).
    pub locked_until: u64,
    /// Lockouts since the last accepted code; each one doubles the next lockout.
    pub lockouts: u32,
}

/// Where the state lives; hands out the loaded state once, at `open`.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
}

/// Why the state could not be loaded or saved, worded for the owner who must fix it.
#[derive(Debug)]
pub enum StateError {
    /// The state directory is missing and cannot be made, or is not private.
    Dir(FileError),
    /// The state file exists but cannot be read (link, mode, owner, I/O).
    Read(FileError),
    /// The state file was read but is not a valid state.
    Corrupt { path: PathBuf, detail: String },
    /// The new state could not be written.
    Write(FileError),
    /// The state could not be encoded (cannot happen for this plain struct, but no panics).
    Encode { path: PathBuf, detail: String },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(err) | Self::Read(err) => write!(f, "{err}"),
            Self::Corrupt { path, detail } => write!(
                f,
                "state file {} is corrupt ({detail}); inspect it, then remove it to reset \
                 replay protection and lockouts",
                path.display()
            ),
            Self::Write(err) => write!(f, "cannot save {err}"),
            Self::Encode { path, detail } => {
                write!(f, "cannot encode state for {}: {detail}", path.display())
            }
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Dir(err) | Self::Read(err) | Self::Write(err) => Some(err),
            Self::Corrupt { .. } | Self::Encode { .. } => None,
        }
    }
}

impl StateStore {
    /// Makes sure `state_dir` is a private directory and loads `auth.json` from it.
    /// A missing file is a fresh start; anything else that is not a valid state is an
    /// error (never a silent reset, which would reopen used codes).
    pub fn open(state_dir: &Path) -> Result<(StateStore, AuthState), StateError> {
        files::ensure_private_dir("state dir", state_dir).map_err(StateError::Dir)?;
        let store = StateStore {
            path: state_dir.join(FILE_NAME),
        };
        let state = match files::read_trusted("state file", &store.path, Trust::Private) {
            Ok(text) => serde_json::from_str(&text).map_err(|err| StateError::Corrupt {
                path: store.path.clone(),
                detail: err.to_string(),
            })?,
            Err(FileError::Missing { .. }) => AuthState::default(),
            Err(err) => return Err(StateError::Read(err)),
        };
        Ok((store, state))
    }

    /// Replaces the state file atomically, mode 0600; returns only once it is durable.
    pub fn save(&self, state: &AuthState) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec(state).map_err(|err| StateError::Encode {
            path: self.path.clone(),
            detail: err.to_string(),
        })?;
        bytes.push(b'\n');
        files::write_atomic("state file", &self.path, &bytes, 0o600).map_err(StateError::Write)
    }

    /// Path of the state file, for tests.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn tempdir(tag: &str) -> PathBuf {
        crate::sys::files::test_dir(&format!("state-{tag}"))
    }

    fn sample() -> AuthState {
        AuthState {
            last_step: 58_000_000_123,
            failures: vec![1_700_000_000, 1_700_000_010],
            locked_until: 1_700_000_100,
            lockouts: 3,
        }
    }

    #[test]
    fn missing_file_is_default_and_dir_is_private() {
        let dir = tempdir("missing");
        let (store, state) = StateStore::open(&dir).unwrap();
        assert_eq!(state, AuthState::default());
        assert_eq!(store.path(), dir.join("auth.json"));
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn round_trip_with_mode_0600() {
        let dir = tempdir("roundtrip");
        let (store, _) = StateStore::open(&dir).unwrap();
        store.save(&sample()).unwrap();
        assert_eq!(fs::metadata(store.path()).unwrap().mode() & 0o777, 0o600);
        let (_, loaded) = StateStore::open(&dir).unwrap();
        assert_eq!(loaded, sample());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_naming_path_and_fix() {
        let dir = tempdir("corrupt");
        let (store, _) = StateStore::open(&dir).unwrap();
        files::write_atomic("test", store.path(), b"{\"last_step\": nope}", 0o600).unwrap();
        let err = StateStore::open(&dir).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&store.path().display().to_string()), "{text}");
        assert!(text.contains("is corrupt ("), "{text}");
        assert!(
            text.contains("remove it to reset replay protection"),
            "{text}"
        );

        // Unknown keys and wrong types are corrupt too: never guess what was meant.
        files::write_atomic("test", store.path(), b"{\"last_stepp\": 5}", 0o600).unwrap();
        assert!(matches!(
            StateStore::open(&dir),
            Err(StateError::Corrupt { .. })
        ));
        files::write_atomic("test", store.path(), b"", 0o600).unwrap();
        assert!(matches!(
            StateStore::open(&dir),
            Err(StateError::Corrupt { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn torn_json_is_refused() {
        let dir = tempdir("torn");
        let (store, _) = StateStore::open(&dir).unwrap();
        store.save(&sample()).unwrap();
        let full = fs::read(store.path()).unwrap();
        for cut in [1, full.len() / 2, full.len() - 3] {
            files::write_atomic("test", store.path(), &full[..cut], 0o600).unwrap();
            let err = StateStore::open(&dir).unwrap_err();
            assert!(
                matches!(err, StateError::Corrupt { .. }),
                "cut {cut}: {err}"
            );
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn symlinked_state_file_is_refused() {
        let dir = tempdir("symlink");
        let (store, _) = StateStore::open(&dir).unwrap();
        let real = dir.join("elsewhere.json");
        files::write_atomic("test", &real, b"{}", 0o600).unwrap();
        symlink(&real, store.path()).unwrap();
        let err = StateStore::open(&dir).unwrap_err();
        assert!(
            matches!(err, StateError::Read(FileError::Symlink { .. })),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn loose_mode_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir("mode");
        let (store, _) = StateStore::open(&dir).unwrap();
        store.save(&sample()).unwrap();
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = StateStore::open(&dir).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
