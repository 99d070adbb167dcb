//! A job's process between `clone` and `exec` (see `spawn`): it enters the job's
//! cgroup and a process group of its own, leaves the agent's terminal, signals,
//! descriptors, umask and working directory behind, sets up its sandbox, then drops
//! to the rule's user.
//!
//! Every step in a safe order, signals first, privileges last but one, and the
//! directory last (so it is entered with the rule's user's rights): a child dropped
//! before its signals and descriptors were cleaned would still carry the agent's
//! SIGTERM handler (and its inherited descriptors) while any process of the new uid may
//! already signal it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::cerr::cerr;
use super::mntns::LentNamespace;
use super::sandbox::{SandboxSetup, Step};

/// The account a child drops to. Always both ids: a group without a user would leave
/// the child root with every capability, so it cannot be expressed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

/// How one child starts, decided before `clone`: after it nothing may allocate or lock,
/// since the child shares the agent's memory with the agent's other threads.
#[derive(Debug)]
pub struct ChildSetup {
    /// The job's cgroup directory; the caller keeps it open until the spawn returns.
    cgroup: Option<RawFd>,
    sandbox: Option<SandboxSetup>,
    drop_to: Option<Credentials>,
    umask: libc::mode_t,
    cwd: CString,
}

impl ChildSetup {
    /// `cwd` must be a path without NUL bytes (config validation refuses others).
    pub fn new(drop_to: Option<Credentials>, umask: u32, cwd: &Path) -> io::Result<ChildSetup> {
        let cwd = CString::new(cwd.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(ChildSetup {
            cgroup: None,
            sandbox: None,
            drop_to,
            umask: umask & 0o777,
            cwd,
        })
    }

    /// The child starts in the cgroup whose directory is `dir` (or moves itself there
    /// before it does anything else), so that whatever it becomes, and every process it
    /// starts, ends with the job. `dir` must stay open until the spawn returns.
    pub fn join(mut self, dir: BorrowedFd<'_>) -> ChildSetup {
        self.cgroup = Some(dir.as_raw_fd());
        self
    }

    pub(super) fn cgroup_dir(&self) -> Option<RawFd> {
        self.cgroup
    }

    pub fn sandbox(mut self, sandbox: SandboxSetup) -> ChildSetup {
        self.sandbox = Some(sandbox);
        self
    }

    /// After the spawn: the read-only namespace the child runs in, if it was lent one.
    /// Kept until the job has ended, so that no other job is lent it meanwhile.
    pub fn into_lent(self) -> Option<LentNamespace> {
        self.sandbox.and_then(SandboxSetup::into_lent)
    }

    /// In the child, right before its `exec`; an error (its errno) comes back from
    /// `spawn`, and nothing runs. Only system calls on data prepared before the clone
    /// (no allocation, no locks); the only error built, `io::Error::last_os_error`, is
    /// an errno, not a heap value. The steps, in this order (a failed containment step is named in the spawn
    /// error, see `sandbox::failed_step`):
    /// 0. into the job's cgroup, unless `spawn` started it there (`in_cgroup`): writing
    ///    `0` to its `cgroup.procs` moves the writer;
    /// 1. `signals` to their default action, then an empty mask: the agent's handler
    ///    must never run in a child, and exec keeps ignored signals and the mask (all
    ///    of them after a plain `clone`; after `clone3`, which reset the handled ones,
    ///    the ignored ones, see [`ALL_SIGNALS`]);
    /// 2. a process group of its own (`setpgid`), and no controlling terminal
    ///    ([`drop_terminal`]), so a job cannot read from or push keystrokes (`TIOCSTI`)
    ///    into the agent's terminal;
    /// 3. the umask;
    /// 4. every descriptor above 2 close-on-exec (not closed: a failed exec is reported
    ///    through one of them);
    /// 5. the sandbox (namespaces and mounts need root, so before the drop);
    /// 6. the rule's user: supplementary groups dropped, then group, then user;
    /// 7. the working directory, entered with that user's rights (and in the sandbox's
    ///    mounts).
    pub(super) fn apply(&self, in_cgroup: bool, signals: u64) -> io::Result<()> {
        if let Some(dir) = self.cgroup
            && !in_cgroup
        {
            enter_cgroup(dir).map_err(|e| Step::Cgroup.tag(e))?;
        }
        default_signals(signals)?;
        // SAFETY: setpgid takes plain integers; 0, 0 makes the caller the leader of a
        // new group in its session, which a fresh child may always do.
        cerr(unsafe { libc::setpgid(0, 0) })?;
        drop_terminal()?;
        // SAFETY: umask takes a plain mode and cannot fail.
        unsafe { libc::umask(self.umask) };
        cloexec_above_stderr()?;
        if let Some(sandbox) = &self.sandbox {
            sandbox.apply()?;
        }
        if let Some(who) = self.drop_to {
            // The raw system calls: the C library's make every thread of the process
            // change ids, and this child would tell the agent's threads to do so.
            // SAFETY: setgroups with a count of 0 reads no memory; setgid/setuid take ids
            // (32-bit ones on every 64-bit architecture).
            cerr(unsafe {
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
            })?;
            // SAFETY: as above.
            cerr(unsafe { libc::syscall(libc::SYS_setgid, who.gid) })?;
            // SAFETY: as above. As root, setuid sets the real, effective and saved ids.
            cerr(unsafe { libc::syscall(libc::SYS_setuid, who.uid) })?;
        }
        // SAFETY: `cwd` is a NUL-terminated string owned by `self`, alive for the call.
        cerr(unsafe { libc::chdir(self.cwd.as_ptr()) })?;
        Ok(())
    }
}

/// Gives up the agent's controlling terminal, if it has one (`serve` by hand, `demo`):
/// `TIOCNOTTY` on `/dev/tty` detaches this process only, as it leads no session, and a
/// process that leads none can never acquire a terminal again. Without a terminal
/// `/dev/tty` does not open (`ENXIO`), and there is nothing to give up; where it does
/// not open for another reason (no such node in a container), the job has no name to
/// reach a terminal by either, and runs on.
///
/// Not `setsid`, which also detaches: each new session gets a scheduler autogroup of its
/// own, and where jobs share one CPU a preempted job's group could wait a second for it
/// (BENCHMARKS.md, session 28).
fn drop_terminal() -> io::Result<()> {
    // SAFETY: a NUL-terminated literal path and plain flags.
    let tty = unsafe {
        libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if tty < 0 {
        return Ok(());
    }
    // SAFETY: TIOCNOTTY takes no argument; `tty` is the descriptor just opened.
    let detached = cerr(unsafe { libc::ioctl(tty, libc::TIOCNOTTY) });
    // SAFETY: closes the descriptor opened above, which nothing else holds.
    unsafe { libc::close(tty) };
    detached.map(drop)
}

/// Moves the calling process into the cgroup whose directory is `dir`.
fn enter_cgroup(dir: RawFd) -> io::Result<()> {
    // SAFETY: a NUL-terminated literal name under a directory the caller keeps open.
    let procs = cerr(unsafe {
        libc::openat(
            dir,
            c"cgroup.procs".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: writes one byte from a literal to the descriptor just opened.
    let written = cerr(unsafe { libc::write(procs, b"0".as_ptr().cast(), 1) });
    // SAFETY: `procs` was opened above and is closed once.
    unsafe { libc::close(procs) };
    written.map(drop)
}

/// Highest signal number on Linux (`_NSIG - 1`).
const LAST_SIGNAL: libc::c_int = 64;
/// Bytes of a kernel signal set (`_NSIG / 8`).
const SIGSET_BYTES: usize = 8;

/// Signal `n` as bit `n - 1` of a mask.
const fn bit(signal: libc::c_int) -> u64 {
    1 << (signal - 1)
}

/// Every signal whose action can be set: all but SIGKILL and SIGSTOP. What a child set
/// up by plain `clone` resets; after `clone3`, which reset the handled ones
/// (`CLONE_CLEAR_SIGHAND`), only the [`ignored_signals`] are left.
pub(super) const ALL_SIGNALS: u64 = !(bit(libc::SIGKILL) | bit(libc::SIGSTOP));

/// [`ignored_signals`] before it is known (no real mask: SIGKILL cannot be ignored).
const UNKNOWN: u64 = u64::MAX;
static IGNORED: AtomicU64 = AtomicU64::new(UNKNOWN);

/// The signals this process ignores (`SIG_IGN`), asked of the kernel at the first
/// spawn (62 calls) and kept: what the agent's parent ignored and std's SIGPIPE are
/// set before `main`, and the agent ignores nothing later (a test that does reports it
/// with `dispositions_changed`). A signal the kernel will not tell about counts as
/// ignored: it is reset.
pub(super) fn ignored_signals() -> u64 {
    let known = IGNORED.load(Ordering::Relaxed);
    if known != UNKNOWN {
        return known;
    }
    let mut ignored = 0;
    for signal in (1..=LAST_SIGNAL).filter(|&s| ALL_SIGNALS & bit(s) != 0) {
        // The kernel's `struct sigaction`: the handler first.
        let mut old = [0u64; 8];
        // SAFETY: rt_sigaction reads no new action (null) and writes the old one into
        // `old`, larger than the kernel's struct on every architecture.
        let asked = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                std::ptr::null::<u64>(),
                old.as_mut_ptr(),
                SIGSET_BYTES,
            )
        };
        if asked != 0 || old[0] == libc::SIG_IGN as u64 {
            ignored |= bit(signal);
        }
    }
    IGNORED.store(ignored, Ordering::Relaxed);
    ignored
}

/// Says that a signal's action changed, so [`ignored_signals`] asks again.
#[cfg(test)]
fn dispositions_changed() {
    IGNORED.store(UNKNOWN, Ordering::Relaxed);
}

/// Default action for each of `signals`, then nothing blocked.
///
/// The raw system calls, not libc's `sigaction`/`sigprocmask`: the C library refuses the
/// numbers it keeps for itself (32–34), and one of those, ignored by whoever started the
/// agent, would otherwise stay ignored across exec.
fn default_signals(signals: u64) -> io::Result<()> {
    // The kernel's `struct sigaction` all zero: SIG_DFL, no flags, no restorer, empty
    // mask. Eight words are more than it has on any architecture.
    let default = [0u64; 8];
    for signal in (1..=LAST_SIGNAL).filter(|&s| signals & ALL_SIGNALS & bit(s) != 0) {
        // SAFETY: rt_sigaction reads one kernel sigaction from `default` (larger than
        // one) and writes nothing (no old action asked for).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                SIGSET_BYTES,
            )
        };
    }
    let none = 0u64;
    // SAFETY: rt_sigprocmask reads one signal set from `none` and writes nothing.
    cerr(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none as *const u64,
            std::ptr::null_mut::<u64>(),
            SIGSET_BYTES,
        )
    })?;
    Ok(())
}

/// Marks every descriptor from 3 up close-on-exec: `close_range` (Linux 5.11+ for the
/// flag), else a listing of `/proc/self/fd` read with `getdents64` into a stack buffer.
fn cloexec_above_stderr() -> io::Result<()> {
    // SAFETY: close_range takes three integers; with CLOSE_RANGE_CLOEXEC it only sets
    // descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    match cerr(rc) {
        Ok(_) => Ok(()),
        // ENOSYS before 5.9; EINVAL for the flag on 5.9 and 5.10.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => cloexec_listed(),
        Err(e) => Err(e),
    }
}

/// The fallback of [`cloexec_above_stderr`]: no allocation, so safe in the child. Without
/// `/proc` it fails, and the job is not started: better no job than one holding a
/// descriptor it must not have.
fn cloexec_listed() -> io::Result<()> {
    // SAFETY: a NUL-terminated literal path; open returns a new descriptor or -1.
    let dir = cerr(unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    let mut buf = [0u8; 2048];
    let result = loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        let n = match cerr(n) {
            Ok(0) => break Ok(()),
            Ok(n) => usize::try_from(n).unwrap_or(0).min(buf.len()),
            Err(e) => break Err(e),
        };
        for fd in listed_fds(&buf[..n]) {
            if fd > 2 && fd != dir {
                // SAFETY: F_SETFD takes an integer flag word; FD_CLOEXEC is the only
                // descriptor flag, so nothing else is lost.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    };
    // SAFETY: `dir` was opened above and is closed once.
    unsafe { libc::close(dir) };
    result
}

/// The descriptor numbers named in a `getdents64` buffer (`linux_dirent64` records:
/// inode u64, offset i64, record length u16, type u8, then the NUL-terminated name).
fn listed_fds(buf: &[u8]) -> impl Iterator<Item = libc::c_int> + '_ {
    const NAME_AT: usize = 19;
    let mut at = 0;
    std::iter::from_fn(move || {
        loop {
            let len_bytes = buf.get(at + 16..at + 18)?;
            let len = usize::from(u16::from_ne_bytes([len_bytes[0], len_bytes[1]]));
            if len == 0 {
                return None;
            }
            let name = buf.get(at + NAME_AT..at + len.max(NAME_AT))?;
            at += len;
            let mut fd: libc::c_int = 0;
            let mut digits = 0;
            for &b in name.iter().take_while(|&&b| b != 0) {
                if !b.is_ascii_digit() {
                    digits = 0;
                    break;
                }
                fd = fd
                    .saturating_mul(10)
                    .saturating_add(libc::c_int::from(b - b'0'));
                digits += 1;
            }
            if digits > 0 {
                return Some(fd);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::spawn::{spawn, wait};
    use super::*;
    use std::io::Read;
    use std::process::Command;

    fn record(name: &str) -> Vec<u8> {
        let len = (19 + name.len() + 1).next_multiple_of(8);
        let mut r = vec![0u8; len];
        r[16..18].copy_from_slice(&u16::try_from(len).unwrap().to_ne_bytes());
        r[19..19 + name.len()].copy_from_slice(name.as_bytes());
        r
    }

    #[test]
    fn dirent_records_are_read_by_number() {
        let buf: Vec<u8> = [".", "..", "0", "17", "x3", "1024"]
            .iter()
            .flat_map(|n| record(n))
            .collect();
        assert_eq!(listed_fds(&buf).collect::<Vec<_>>(), [0, 17, 1024]);
        // A cut record or a zero length ends the walk instead of looping or reading past.
        assert_eq!(listed_fds(&buf[..buf.len() - 3]).count(), 2);
        assert_eq!(listed_fds(&[0u8; 24]).count(), 0);
    }

    #[test]
    fn the_proc_listing_marks_inherited_descriptors_close_on_exec() {
        // F_DUPFD, unlike std's opens, leaves the copy inheritable, as a descriptor the
        // agent's parent passed down would be.
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: duplicates an open descriptor to the lowest free number ≥ 200.
        let copy = cerr(unsafe { libc::fcntl(fd, libc::F_DUPFD, 200) }).unwrap();
        // SAFETY: F_GETFD reads the flags of an open descriptor.
        let flags = || unsafe { libc::fcntl(copy, libc::F_GETFD) };
        assert_eq!(flags() & libc::FD_CLOEXEC, 0);
        cloexec_listed().unwrap();
        assert_eq!(flags() & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        // SAFETY: `copy` is ours and closed once.
        unsafe { libc::close(copy) };
    }

    /// (SigBlk, SigIgn) masks of a `/bin/cat /proc/self/status` child, with or without
    /// the setup.
    fn blocked_and_ignored(setup: bool) -> (u64, u64) {
        let out = if setup {
            let argv = ["/bin/cat".to_owned(), "/proc/self/status".to_owned()];
            let child = spawn(
                &argv,
                &[],
                &ChildSetup::new(None, 0o022, Path::new("/")).unwrap(),
            )
            .unwrap();
            drop(child.writers); // else no EOF
            let mut out = String::new();
            std::fs::File::from(child.stdout)
                .read_to_string(&mut out)
                .unwrap();
            assert!(wait(child.pid, true).unwrap().unwrap().success());
            out
        } else {
            let cat = Command::new("/bin/cat").arg("/proc/self/status").output();
            String::from_utf8(cat.unwrap().stdout).unwrap()
        };
        let mask = |name: &str| {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        (mask("SigBlk:"), mask("SigIgn:"))
    }

    /// Whether this test runs under qemu-user: a native child sees the real executable
    /// of its parent.
    fn emulated() -> bool {
        let exe = Command::new("/bin/readlink")
            .arg(format!("/proc/{}/exe", std::process::id()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&exe.stdout).contains("qemu")
    }

    #[test]
    fn ignored_and_blocked_signals_do_not_reach_the_child() {
        // Exec resets caught signals itself; ignored ones and the mask it keeps.
        // SAFETY: SIGURG's default action is to be ignored, so ignoring it changes
        // nothing for other tests; the mask is this thread's, the one that forks.
        let mut usr2: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the set is initialised before it is read.
        unsafe {
            libc::signal(libc::SIGURG, libc::SIG_IGN);
            libc::sigemptyset(&mut usr2);
            libc::sigaddset(&mut usr2, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &usr2, std::ptr::null_mut());
        }
        dispositions_changed();
        let without = blocked_and_ignored(false);
        let with = blocked_and_ignored(true);
        // SAFETY: undoes the two changes above.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &usr2, std::ptr::null_mut());
            libc::signal(libc::SIGURG, libc::SIG_DFL);
        }
        dispositions_changed();
        let bit = |signal: libc::c_int| 1u64 << (signal - 1);
        assert_eq!(
            (
                without.0 & bit(libc::SIGUSR2),
                without.1 & bit(libc::SIGURG)
            ),
            (bit(libc::SIGUSR2), bit(libc::SIGURG)),
            "{without:x?}"
        );
        if emulated() {
            // qemu-user keeps the host's signals 32–34 to itself, so whatever the test
            // harness left on them reaches the child; the signals set here do not.
            assert_eq!(with.0 & bit(libc::SIGUSR2), 0, "{with:x?}");
            assert_eq!(with.1 & bit(libc::SIGURG), 0, "{with:x?}");
        } else {
            // Nothing at all, even the C library's own numbers when a parent (this test
            // harness, here) ignored them.
            assert_eq!(with, (0, 0), "{with:x?}");
        }
    }
}
