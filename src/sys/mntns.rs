//! A read-only mount namespace made once per job thread and entered (`setns`) by each
//! job whose sandbox asks for no more than `read_only` and `writable` paths, instead of
//! one copied from the agent's, remounted and torn down for every job. That per-job
//! copy was most of the sandbox's cost: the mount table read before each spawn (for
//! kernels without `mount_setattr`), `unshare` cloning every mount, and at the job's
//! exit a namespace teardown that waits for an expedited RCU grace period
//! (BENCHMARKS.md, issue 13).
//!
//! A namespace is a snapshot of the agent's mount table, so it is checked before each
//! use and made again when it no longer matches:
//! - the agent's `/proc/self/mountinfo`, opened when the namespace was made, polls
//!   `POLLPRI` once anything was mounted or unmounted since (proc(5));
//! - each writable path must still be the directory that was bound (device and inode),
//!   so one removed or replaced is refused as it would be in a fresh namespace.
//!
//! The namespaces belong to the job thread that made them (a thread-local), so they go
//! when it does, after the pool's idle time: a file system unmounted by the owner is
//! not kept busy by an idle agent.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use super::cerr::cerr;

/// Namespaces one thread keeps (one per distinct `writable` list it has served); the
/// oldest goes when a further one is made.
const KEPT: usize = 8;

thread_local! {
    static MADE: RefCell<Vec<Made>> = const { RefCell::new(Vec::new()) };
}

/// Device and inode of each writable path, as `sandbox` found them.
pub type Identities = Vec<(u64, u64)>;

struct Made {
    writable: Vec<PathBuf>,
    /// The writable paths when the namespace was made.
    bound: Identities,
    ns: OwnedFd,
    /// The agent's mountinfo, open since just before `ns` was made.
    watch: OwnedFd,
    /// The namespace's own mountinfo, open since it was made: a job that mounted or
    /// remounted something in it (a program that remounts read-write as it works) must
    /// not leave that to the jobs after it.
    inside: OwnedFd,
}

/// A descriptor of a mount namespace in which every mount is read-only but the
/// `writable` paths (now `bound`), as the agent's mount table is now: the one this
/// thread keeps, or, when there is none or it is out of date, a new one from `make`
/// (whose error comes back as it is, so the job is refused as a per-job sandbox
/// would be). `make` gives the namespace and its own mountinfo, opened when it was
/// ready.
pub fn read_only(
    writable: &[PathBuf],
    bound: &Identities,
    make: impl FnOnce() -> io::Result<(OwnedFd, OwnedFd)>,
) -> io::Result<OwnedFd> {
    MADE.with_borrow_mut(|made| {
        if let Some(at) = made.iter().position(|m| m.writable == writable) {
            let m = &made[at];
            if m.bound == *bound && !mounts_changed(&m.watch) && !mounts_changed(&m.inside) {
                return m.ns.try_clone();
            }
            made.remove(at);
        }
        let watch = open_cloexec(c"/proc/self/mountinfo")?;
        let (ns, inside) = make()?;
        let copy = ns.try_clone()?;
        if made.len() >= KEPT {
            made.remove(0);
        }
        made.push(Made {
            writable: writable.to_vec(),
            bound: bound.clone(),
            ns,
            watch,
            inside,
        });
        Ok(copy)
    })
}

/// Whether the mount table `watch` (a mountinfo) belongs to has changed since it was
/// opened; an error counts as a change.
fn mounts_changed(watch: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: watch.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one initialised pollfd, alive for the call; a zero timeout never waits.
    match cerr(unsafe { libc::poll(&mut poll, 1, 0) }) {
        Ok(_) => poll.revents & (libc::POLLPRI | libc::POLLERR | libc::POLLNVAL) != 0,
        Err(_) => true,
    }
}

pub(super) fn open_cloexec(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path; open returns a new descriptor or -1.
    let fd = cerr(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Drops this thread's namespaces: for a thread that spawns once and lives on (the
/// start-up probe), so that it keeps no file system busy.
pub fn forget() {
    MADE.with_borrow_mut(Vec::clear);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn kept_while_current_made_again_when_a_writable_path_changed() {
        let made = Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            Ok((
                open_cloexec(c"/dev/null")?,
                open_cloexec(c"/proc/self/mountinfo")?,
            ))
        };
        let paths = vec![PathBuf::from("/w")];
        let (first, second) = (vec![(1, 2)], vec![(1, 3)]);
        read_only(&paths, &first, make).unwrap();
        read_only(&paths, &first, make).unwrap();
        assert_eq!(made.get(), 1, "a current namespace is kept");
        read_only(&paths, &second, make).unwrap();
        assert_eq!(made.get(), 2, "a writable path replaced since");
        read_only(&[], &Vec::new(), make).unwrap();
        assert_eq!(made.get(), 3, "one per writable list");
        read_only(&paths, &second, make).unwrap();
        assert_eq!(made.get(), 3);
        // A failure keeps nothing, and the next use tries again.
        let refused = || Err(io::Error::from_raw_os_error(libc::EPERM));
        forget();
        assert!(read_only(&paths, &second, refused).is_err());
        read_only(&paths, &second, make).unwrap();
        assert_eq!(made.get(), 4);
        forget();
    }
}
