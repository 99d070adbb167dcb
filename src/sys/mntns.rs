//! A read-only mount namespace made once and entered (`setns`) by each job whose
//! sandbox asks for no more than `read_only` and `writable` paths, instead of one
//! copied from the agent's, remounted and torn down for every job. That per-job copy
//! was most of the sandbox's cost: the mount table read before each spawn (for kernels
//! without `mount_setattr`), `unshare` cloning every mount, and at the job's exit a
//! namespace teardown that waits for an expedited RCU grace period (BENCHMARKS.md,
//! issue 13).
//!
//! A namespace is a snapshot of the agent's mount table, so it is checked before each
//! use and made again when it no longer matches:
//! - the agent's `/proc/self/mountinfo`, opened when the namespace was made, polls
//!   `POLLPRI` once anything was mounted or unmounted since (proc(5));
//! - its own mountinfo polls `POLLPRI` once a job mounted or remounted something in it
//!   (a program that remounts read-write as it works must not leave that to the next);
//! - each writable path must still be the directory that was bound (device and inode),
//!   so one removed or replaced is refused as it would be in a fresh namespace.
//!
//! Namespaces are kept between jobs and lent to one job at a time ([`LentNamespace`],
//! held until the job has ended, or only until its spawn when the child makes its own
//! copy for a private `/tmp`): two jobs at once never run in the same one, so what one
//! does in it cannot reach the other while it runs. A kept namespace holds every file
//! system that was mounted when it was made, so a thread of its own (`mounts`) waits
//! for the agent's mount table to change and then lets go of all of them at once: a
//! file system the owner unmounts is not kept busy by an idle agent, however long jobs
//! stay away.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::cerr::cerr;

/// Namespaces kept (one per distinct `writable` list, more when jobs ran at once); the
/// oldest goes when a further one is returned.
const KEPT: usize = 8;

struct Kept {
    made: Vec<Made>,
    /// Counts the changes of the mount table the watcher saw: a namespace lent before
    /// the last one is not kept when it comes back.
    generation: u64,
    /// Whether the watcher runs: without it nothing is kept (each job makes its own).
    watched: Option<bool>,
}

static KEPT_NS: Mutex<Kept> = Mutex::new(Kept {
    made: Vec::new(),
    generation: 0,
    watched: None,
});

fn kept() -> MutexGuard<'static, Kept> {
    KEPT_NS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Device and inode of each writable path, as `sandbox` found them.
pub type Identities = Vec<(u64, u64)>;

#[derive(Debug)]
struct Made {
    writable: Vec<PathBuf>,
    /// The writable paths when the namespace was made.
    bound: Identities,
    ns: OwnedFd,
    /// The agent's mountinfo, open since just before `ns` was made.
    watch: OwnedFd,
    /// The namespace's own mountinfo, open since it was made.
    inside: OwnedFd,
}

impl Made {
    fn current(&self, bound: &Identities) -> bool {
        self.bound == *bound && !mounts_changed(&self.watch) && !mounts_changed(&self.inside)
    }
}

/// A read-only namespace lent to one job: its descriptor for the child's `setns`. Kept
/// by the job while its child runs in it (until the job has ended, or only until the
/// spawn for a child that makes its own copy); dropped, it goes back to be lent again
/// (unless the mount table changed meanwhile).
#[derive(Debug)]
pub struct LentNamespace {
    /// Taken only by `drop`.
    made: Option<Made>,
    generation: u64,
}

impl LentNamespace {
    fn new(made: Made, generation: u64) -> LentNamespace {
        LentNamespace {
            made: Some(made),
            generation,
        }
    }

    /// The namespace, open as long as this lives.
    pub fn fd(&self) -> RawFd {
        self.made.as_ref().map_or(-1, |m| m.ns.as_raw_fd())
    }
}

impl Drop for LentNamespace {
    fn drop(&mut self) {
        let Some(made) = self.made.take() else {
            return;
        };
        let mut kept = kept();
        let gone = if kept.watched == Some(true) && kept.generation == self.generation {
            kept.made.push(made);
            (kept.made.len() > KEPT).then(|| kept.made.remove(0))
        } else {
            Some(made)
        };
        // A namespace's teardown waits for the kernel; nobody waits on the lock meanwhile.
        drop(kept);
        drop(gone);
    }
}

/// A namespace in which every mount is read-only but the `writable` paths (now
/// `bound`), as the agent's mount table is now: a kept one, or, when none is free and
/// current, a new one from `make` (whose error comes back as it is, so the job is
/// refused as a per-job sandbox would be). `make` gives the namespace and its own
/// mountinfo, opened when it was ready.
pub fn read_only(
    writable: &[PathBuf],
    bound: &Identities,
    make: impl FnOnce() -> io::Result<(OwnedFd, OwnedFd)>,
) -> io::Result<LentNamespace> {
    let mut stale = Vec::new();
    let generation = {
        let mut kept = kept();
        if kept.watched.is_none() {
            let watching = watch();
            if let Err(e) = &watching {
                log::warn!(
                    "cannot watch the mount table ({e}); each job's read-only namespace is made for it alone"
                );
            }
            kept.watched = Some(watching.is_ok());
        }
        while let Some(at) = kept.made.iter().position(|m| m.writable == writable) {
            let made = kept.made.remove(at);
            if made.current(bound) {
                return Ok(LentNamespace::new(made, kept.generation));
            }
            stale.push(made);
        }
        kept.generation
    };
    drop(stale);
    let watch = open_cloexec(c"/proc/self/mountinfo")?;
    let (ns, inside) = make()?;
    let made = Made {
        writable: writable.to_vec(),
        bound: bound.clone(),
        ns,
        watch,
        inside,
    };
    Ok(LentNamespace::new(made, generation))
}

/// Starts the thread that lets go of every kept namespace once the agent's mount table
/// changes. Its mountinfo is opened here, before any namespace is kept.
fn watch() -> io::Result<()> {
    let table = open_cloexec(c"/proc/self/mountinfo")?;
    std::thread::Builder::new()
        .name("mounts".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let failed = loop {
                if let Err(e) = wait_for_change(&table) {
                    break e;
                }
                let gone = let_go(true);
                drop(gone);
            };
            log::warn!(
                "cannot watch the mount table any more ({failed}); read-only namespaces are no longer kept between jobs"
            );
            drop(let_go(false));
        })?;
    Ok(())
}

/// Every kept namespace, to drop after the lock; those lent now are not taken back.
/// `still_watched`: false once the watcher stops, and nothing is kept from then on.
fn let_go(still_watched: bool) -> Vec<Made> {
    let mut kept = kept();
    kept.generation += 1;
    kept.watched = Some(still_watched);
    std::mem::take(&mut kept.made)
}

/// Waits until the mount table `table` (a mountinfo) belongs to changes.
fn wait_for_change(table: &OwnedFd) -> io::Result<()> {
    loop {
        match changed(table, -1) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
            Ok(true) => return Ok(()),
            Ok(false) => {}
        }
    }
}

/// Whether the mount table `table` (a mountinfo) belongs to has changed since it was
/// opened or last polled, waiting up to `timeout_ms` (-1: without limit) for a change.
fn changed(table: &OwnedFd, timeout_ms: libc::c_int) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd: table.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one initialised pollfd, alive for the call.
    cerr(unsafe { libc::poll(&mut poll, 1, timeout_ms) })?;
    if poll.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(poll.revents & (libc::POLLPRI | libc::POLLERR) != 0)
}

/// [`changed`] without waiting; an error counts as a change.
fn mounts_changed(watch: &OwnedFd) -> bool {
    changed(watch, 0).unwrap_or(true)
}

pub(super) fn open_cloexec(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path; open returns a new descriptor or -1.
    let fd = cerr(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn lent_to_one_job_at_a_time_kept_while_current_made_again_when_a_path_changed() {
        let made = Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            Ok((
                open_cloexec(c"/dev/null")?,
                open_cloexec(c"/proc/self/mountinfo")?,
            ))
        };
        // Paths of this test alone: the kept namespaces are the whole process's.
        let paths = vec![PathBuf::from("/mntns-test-w")];
        let others = vec![PathBuf::from("/mntns-test-other")];
        let (first, second) = (vec![(1, 2)], vec![(1, 3)]);
        drop(read_only(&paths, &first, make).unwrap());
        let lent = read_only(&paths, &first, make).unwrap();
        assert_eq!(made.get(), 1, "a current namespace is kept");
        // While it is lent, a second job at once gets one of its own.
        let beside = read_only(&paths, &first, make).unwrap();
        assert_eq!(made.get(), 2, "never lent twice at once");
        assert_ne!(lent.fd(), beside.fd());
        drop((lent, beside));
        drop(read_only(&paths, &second, make).unwrap());
        assert_eq!(made.get(), 3, "a writable path replaced since");
        drop(read_only(&others, &Vec::new(), make).unwrap());
        assert_eq!(made.get(), 4, "one per writable list");
        drop(read_only(&paths, &second, make).unwrap());
        assert_eq!(made.get(), 4);
        // Lent when the mount table changed: not kept when it comes back.
        let lent = read_only(&paths, &second, make).unwrap();
        drop(let_go(true));
        drop(lent);
        drop(read_only(&paths, &second, make).unwrap());
        assert_eq!(made.get(), 5, "kept across a change of the mount table");
        // A failure keeps nothing, and the next use tries again.
        let refused = || Err(io::Error::from_raw_os_error(libc::EPERM));
        assert!(read_only(&[PathBuf::from("/mntns-test-x")], &first, refused).is_err());
    }
}
