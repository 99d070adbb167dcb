//! One agent per state directory: an exclusive `flock` on `<state_dir>/lock`, held for
//! the agent's life. Two agents on one state would each keep their own last used step
//! (one code accepted by both) and each rewrite the other's journal.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::cerr::cerr;
use super::files::{FileError, Trust, checked_regular, ensure_private_dir};

const FILE_NAME: &str = "lock";

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Why the state directory could not be locked.
#[derive(Debug)]
pub enum LockError {
    File(FileError),
    /// Another process holds it; its pid, as it wrote it, if it did.
    Held {
        dir: PathBuf,
        pid: Option<u32>,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(err) => write!(f, "{err}"),
            Self::Held { dir, pid } => {
                let who = pid.map_or_else(|| "another agent".to_string(), |p| format!("pid {p}"));
                write!(
                    f,
                    "state dir {} is in use by another sudo-agent ({who}); stop that one first \
                     (sudo systemctl stop sudo-agent{}), or give this one its own \"state_dir\"",
                    dir.display(),
                    pid.map_or_else(String::new, |p| format!(", or kill {p}"))
                )
            }
        }
    }
}

impl std::error::Error for LockError {}

/// Takes the lock on `dir` (made 0700 if missing, else checked to be private) without
/// waiting, and writes this process's pid into the lock file for the next one that tries.
pub fn lock_state_dir(dir: &Path) -> Result<StateLock, LockError> {
    const WHAT: &str = "state lock file";
    ensure_private_dir("state dir", dir).map_err(LockError::File)?;
    let path = dir.join(FILE_NAME);
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path);
    let (mut file, _) =
        checked_regular(WHAT, &path, opened, Trust::Private).map_err(LockError::File)?;
    let io_err = |err: io::Error| {
        LockError::File(FileError::Io {
            what: WHAT.into(),
            path: path.clone(),
            err,
        })
    };
    // SAFETY: flock takes a descriptor that `file` keeps open, and a flag word.
    match cerr(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => {}
        Err(err) if err.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            let mut text = String::new();
            let _ = Read::by_ref(&mut file).take(32).read_to_string(&mut text);
            return Err(LockError::Held {
                dir: dir.into(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(err) => return Err(io_err(err)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io_err)?;
    Ok(StateLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder_and_is_free_after_drop() {
        let dir = super::super::files::test_dir("lock");
        let first = lock_state_dir(&dir).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts
        // just as another process would.
        match lock_state_dir(&dir) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        let text = lock_state_dir(&dir).unwrap_err().to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains("state_dir"),
            "{text}"
        );
        drop(first);
        lock_state_dir(&dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
