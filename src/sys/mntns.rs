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
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::cerr::cerr;
use super::sandbox::{SandboxSetup, Step};

/// Namespaces one thread keeps (one per distinct `writable` list it has served); the
/// oldest goes when a further one is made.
const KEPT: usize = 8;

thread_local! {
    static MADE: RefCell<Vec<Made>> = const { RefCell::new(Vec::new()) };
}

struct Made {
    writable: Vec<PathBuf>,
    /// Device and inode of each writable path when it was bound.
    bound: Vec<(u64, u64)>,
    ns: OwnedFd,
    /// The agent's mountinfo, open since just before `ns` was made.
    watch: OwnedFd,
}

impl Made {
    fn current(&self) -> bool {
        !mounts_changed(&self.watch) && identities(&self.writable).is_ok_and(|b| b == self.bound)
    }
}

/// A descriptor of a mount namespace in which every mount is read-only but the
/// `writable` paths, as the agent's mount table is now. Made on this thread by
/// `setup` (its mount steps, applied by a short-lived thread of its own) when there is
/// none yet or the one kept is out of date; a step the kernel refuses comes back as
/// `setup.apply` returns it, so the job is refused as a per-job sandbox would be.
pub fn read_only(
    writable: &[PathBuf],
    setup: impl FnOnce() -> io::Result<SandboxSetup>,
) -> io::Result<OwnedFd> {
    MADE.with_borrow_mut(|made| {
        if let Some(at) = made.iter().position(|m| m.writable == writable) {
            if made[at].current() {
                return made[at].ns.try_clone();
            }
            made.remove(at);
        }
        let watch = open_cloexec(c"/proc/self/mountinfo")?;
        // Gone now: refused as the bind mount in a fresh namespace would be.
        let bound = identities(writable).map_err(|e| Step::Writable.tag(e))?;
        let ns = make(&setup()?)?;
        let copy = ns.try_clone()?;
        if made.len() >= KEPT {
            made.remove(0);
        }
        made.push(Made {
            writable: writable.to_vec(),
            bound,
            ns,
            watch,
        });
        Ok(copy)
    })
}

/// `setup`'s mount steps in a thread of their own, which then names its namespace: a
/// thread may leave the agent's mount namespace (`unshare` gives it its own file system
/// context too), and the namespace outlives it through the descriptor.
fn make(setup: &SandboxSetup) -> io::Result<OwnedFd> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("sandbox".into())
            .spawn_scoped(scope, || {
                setup.apply()?;
                open_cloexec(c"/proc/thread-self/ns/mnt")
            })?;
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread making the sandbox panicked")))
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

fn identities(paths: &[PathBuf]) -> io::Result<Vec<(u64, u64)>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| (m.dev(), m.ino())))
        .collect()
}

fn open_cloexec(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
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
