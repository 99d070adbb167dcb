//! One agent per state directory: an exclusive `flock` on `<state_dir>/lock`, held for
//! the agent's life. Two agents on one state would each keep their own last used step
//! (one code accepted by both) and each rewrite the other's journal.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cerr::cerr;
use super::files::{FileError, Trust, checked_regular, ensure_private_dir};

const FILE_NAME: &str = "lock";
/// How long a start waits for a held lock. A job's process forked by an agent that was
/// just killed holds a copy of the lock's descriptor until it execs (after its sandbox
/// is set up, which can take a while on a busy box): a restart right then must not fail
/// for that. A second agent that really runs is still refused, this much later.
const PATIENCE: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(50);

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

/// Takes the lock on `dir` (made 0700 if missing, else checked to be private), waiting
/// at most [`PATIENCE`] for a holder to let go, and writes this process's pid into the
/// lock file for the next one that tries.
pub fn lock_state_dir(dir: &Path) -> Result<StateLock, LockError> {
    lock_within(dir, PATIENCE)
}

fn lock_within(dir: &Path, patience: Duration) -> Result<StateLock, LockError> {
    const WHAT: &str = "state lock file";
    ensure_private_dir("state dir", dir).map_err(LockError::File)?;
    let path = dir.join(FILE_NAME);
    let open = |write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
    };
    // On a read-only disk an existing lock file is opened for reading: a lock on it
    // still keeps a second agent out; only the pid is not written.
    let (opened, writable) = match open(true) {
        Err(err) if err.raw_os_error() == Some(libc::EROFS) => {
            (open(false).map_err(|_| err), false)
        }
        opened => (opened, true),
    };
    let (mut file, _) =
        checked_regular(WHAT, &path, opened, Trust::Private).map_err(LockError::File)?;
    let io_err = |err: io::Error| {
        LockError::File(FileError::Io {
            what: WHAT.into(),
            path: path.clone(),
            err,
        })
    };
    let give_up = Instant::now() + patience;
    let locked = loop {
        // SAFETY: flock takes a descriptor that `file` keeps open, and a flag word.
        let tried = cerr(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) });
        match tried {
            Err(ref err) if err.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                if Instant::now() >= give_up {
                    break tried;
                }
                std::thread::sleep(RETRY);
            }
            _ => break tried,
        }
    };
    match locked {
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
    if writable {
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io_err)?;
    }
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
        match lock_within(&dir, Duration::ZERO) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        let text = lock_within(&dir, Duration::ZERO).unwrap_err().to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains("state_dir"),
            "{text}"
        );
        drop(first);
        lock_state_dir(&dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_start_waits_for_a_holder_that_lets_go_soon() {
        let dir = super::super::files::test_dir("lock-wait");
        // As a killed agent's job process does until it execs: a copy of the descriptor.
        let held = lock_state_dir(&dir).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let took = Instant::now();
        lock_state_dir(&dir).unwrap();
        assert!(took.elapsed() >= Duration::from_millis(250));
        letting_go.join().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
