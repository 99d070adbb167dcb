//! Starting a job's process without copying the agent: `clone(CLONE_VM | CLONE_VFORK)`,
//! as musl's `posix_spawn` does, then [`ChildSetup`]'s steps and `execve`.
//!
//! std's `Command` forks as soon as a `pre_exec` closure is set, and a fork copies the
//! page tables of the whole agent, tears them down again at exec and makes every
//! thread of the agent take copy-on-write faults meanwhile (BENCHMARKS.md: 0.3–0.45 ms).
//! Here the child borrows the agent's memory until it execs (the calling thread waits
//! that long), so it may only read what was prepared before the clone (argument and
//! environment arrays, descriptors, the setup) and write its own stack: no allocation,
//! no lock, no panic, and no C-library call that thinks it speaks for the agent's other
//! threads (`setuid` and friends: see `ChildSetup::apply`).
//!
//! A shared address space also limits the steps: `unshare(CLONE_NEWUSER)` (and any
//! other that needs a process alone with its memory) fails with `EINVAL` here.
//!
//! A step that fails leaves its errno in the parent's memory, where the parent finds it
//! once it resumes: with a real vfork that is when the child has exited or its exec is
//! past returning, so the report is there by then or never comes. qemu-user turns the
//! vfork into a plain fork whose memory the agent never sees; there the errno comes
//! through a close-on-exec pipe, as std's spawn did, and the parent waits for the exec
//! to close it. The pipe is made only until a child is seen to run on the agent's
//! memory: waiting on it costs the job thread a sleep and a wake-up per job.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use super::cerr::cerr;
use super::child::{ALL_SIGNALS, ChildSetup, ignored_signals};
use super::sandbox::{Sandbox, failed_step};

/// The child's own stack, above a guard page. Its steps need a few KiB (a 2 KiB
/// directory buffer the largest); debug builds need more.
const STACK_BYTES: usize = 64 * 1024;

/// A started child: its pid (also its process group id) and the reading
/// ends of its stdout and stderr.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    /// A pidfd made with the child (`clone3`'s `CLONE_PIDFD`), sparing a `pidfd_open`;
    /// `None` where the child came from plain `clone`.
    pub pidfd: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The two writing ends, the agent's (the child writes to its own copies, 1 and 2).
    /// Held until the child is reaped, they keep its exit from waking the reader once
    /// per pipe (a hang-up each) before the exit itself; dropped, a pipe ends when the
    /// job's last writer goes.
    pub writers: [OwnedFd; 2],
}

/// Runs `argv[0]` (an absolute path: nothing is searched) with `argv` and exactly
/// `env`, stdin `/dev/null` and stdout/stderr pipes, after `setup` in the child. An
/// error of a step in the child, or of `execve`, comes back as its errno, and the
/// child is reaped: nothing ran.
///
/// Relies on std's start-up guarantee that descriptors 0–2 are open, so every
/// descriptor made here is above them and the `dup2`s cannot overwrite one another.
pub fn spawn(argv: &[String], env: &[(&str, &str)], setup: &ChildSetup) -> io::Result<Spawned> {
    let args = argv.iter().map(|a| [a.as_bytes()]).collect::<Vec<_>>();
    let args = CStrings::new(&args)?;
    let vars = env
        .iter()
        .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()])
        .collect::<Vec<_>>();
    let vars = CStrings::new(&vars)?;
    let program = *args
        .pointers
        .first()
        .filter(|p| !p.is_null())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let stdin = dev_null()?;
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let report = if VFORK_SHARES.load(Ordering::Relaxed) {
        None
    } else {
        Some(pipe()?)
    };
    let stack = match KEPT_STACK.take() {
        Some(stack) => stack,
        None => Stack::new()?,
    };
    let mut child = Child {
        program,
        argv: args.pointers.as_ptr(),
        envp: vars.pointers.as_ptr(),
        stdio: [stdin, out_write.as_raw_fd(), err_write.as_raw_fd()],
        report: report.as_ref().map_or(-1, |(_, write)| write.as_raw_fd()),
        setup,
        in_cgroup: setup.cgroup_dir().is_some(),
        signals: if NO_CLONE3.load(Ordering::Relaxed) {
            ALL_SIGNALS
        } else {
            ignored_signals()
        },
        errno: AtomicI32::new(0),
    };
    let all = !0u64;
    let mut before = 0u64;
    // SAFETY: rt_sigprocmask reads one signal set from `all` and writes the old one to
    // `before`, both alive for the call. Every signal is blocked while the child runs
    // on our memory: a handler of the agent's must never run there. The child sets
    // every handler to its default before it unblocks them.
    cerr(unsafe { sigprocmask(&all, &mut before) })?;
    let mut pidfd = None;
    let mut pid = clone_into(setup.cgroup_dir(), &stack, &child).map(|(pid, fd)| {
        pidfd = fd;
        pid
    });
    if pid.is_err() {
        // No child: the kernel (or qemu-user) has no `clone3`, or cannot start one in
        // the cgroup, so the child moves itself there first thing, and sets every
        // signal's action itself.
        child.in_cgroup = false;
        child.signals = ALL_SIGNALS;
        // SAFETY: the child runs `child_main` on `stack` (mapped, writable, above a
        // guard page) with a pointer to `child`, which, like everything it points to,
        // stays alive and unchanged: this thread is suspended until the child has
        // exec'd or exited (CLONE_VFORK), and no other thread knows these values. The
        // child writes nothing of ours but its stack and `errno` (see `child_main`).
        pid = cerr(unsafe {
            libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw const child).cast_mut().cast::<c_void>(),
                // ptid, tls, ctid: C libraries read all three; unused without their flags.
                std::ptr::null_mut::<libc::pid_t>(),
                std::ptr::null_mut::<c_void>(),
                std::ptr::null_mut::<libc::pid_t>(),
            )
        });
    }
    // SAFETY: restores the mask saved above; writes nothing.
    unsafe { sigprocmask(&before, std::ptr::null_mut()) };
    let pid = pid?;
    // The child is done with its stack (it exec'd or exited): the next spawn of this
    // thread takes it, sparing a mapping and its guard page per job.
    KEPT_STACK.set(Some(stack));
    let errno = child.errno.load(Ordering::Acquire);
    if errno != 0 {
        VFORK_SHARES.store(true, Ordering::Relaxed);
    }
    let failed = match (errno, report) {
        // Without a pipe an untouched errno means a real vfork whose child was killed
        // before its first step: its status tells, as after a pipe that closed unwritten.
        (RAN_HERE, _) | (0, None) => None,
        // Untouched: a plain fork (qemu-user), which may not have got to its exec yet.
        (0, Some((read, write))) => {
            drop(write);
            read_report(&read)
        }
        (errno, _) => Some(errno),
    };
    match failed {
        None => Ok(Spawned {
            pid: pid.unsigned_abs(),
            pidfd,
            stdout: out_read,
            stderr: err_read,
            writers: [out_write, err_write],
        }),
        Some(errno) => {
            // The child exits right after its report; reap it so no zombie stays.
            let _ = wait(pid.unsigned_abs(), true);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// Runs `/bin/true` in `sandbox`, set up exactly as a job's: what the kernel refuses
/// here it refuses a job. For `check`, the start-up log and `/health`.
pub fn probe(sandbox: &Sandbox) -> Result<(), String> {
    let setup = ChildSetup::new(None, 0o022, Path::new("/"))
        .and_then(|setup| Ok(setup.sandbox(sandbox.prepare()?)))
        .map_err(named)?;
    run_true(&setup, "in the sandbox")
}

/// Runs `/bin/true` started in the cgroup whose directory is `dir`, as a job would be.
/// If that fails, `clone3` is not used again by this agent: the child moves itself into
/// its cgroup instead. At start-up, since the `clone3` trampoline is the one piece of
/// assembly the agent runs, and this is where a kernel or CPU it was never run on shows.
pub(super) fn check_clone3(dir: BorrowedFd<'_>) -> Result<(), String> {
    let ran = ChildSetup::new(None, 0o022, Path::new("/"))
        .map_err(named)
        .and_then(|setup| run_true(&setup.join(dir), "started in a cgroup"));
    if ran.is_err() {
        NO_CLONE3.store(true, Ordering::Relaxed);
    }
    ran
}

/// `/bin/true` spawned with `setup` and waited for: the probes' one way to run a child.
fn run_true(setup: &ChildSetup, how: &str) -> Result<(), String> {
    match spawn(&["/bin/true".to_owned()], &[], setup).and_then(|child| wait(child.pid, true)) {
        Ok(Some(status)) if status.success() => Ok(()),
        Ok(Some(status)) => Err(format!("/bin/true {how} ended with {status}")),
        Ok(None) => Err(format!("/bin/true {how}: no exit status")),
        Err(e) => Err(named(e)),
    }
}

/// A probe's error: the child step that failed by name, else the error itself.
fn named(e: io::Error) -> String {
    failed_step(&e).unwrap_or_else(|| format!("/bin/true: {e}"))
}

/// `waitpid` on our child `pid`: its status once it has ended, `None` while it runs
/// (`block` false). `ECHILD` when someone else reaped it.
pub fn wait(pid: u32, block: bool) -> io::Result<Option<ExitStatus>> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = if block { 0 } else { libc::WNOHANG };
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes one int to `status`, alive for the call.
        match cerr(unsafe { libc::waitpid(pid, &mut status, flags) }) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(ExitStatus::from_raw(status))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sends `signal` to process `pid`; the caller knows the pid is still its unreaped
/// child, so it names no stranger.
pub fn signal_child(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes plain integers.
    cerr(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// What `child_main` reads, all prepared by [`spawn`].
struct Child<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Become the child's descriptors 0, 1 and 2.
    stdio: [RawFd; 3],
    /// Where a failed step's errno goes too, if not -1 (close-on-exec: an exec closes it
    /// unwritten).
    report: RawFd,
    setup: &'a ChildSetup,
    /// Started in the job's cgroup (`clone_into`): nothing to move.
    in_cgroup: bool,
    /// The signals whose action the child sets back to the default (see
    /// `ChildSetup::apply`).
    signals: u64,
    /// 0 until the child runs on the parent's memory, then [`RAN_HERE`], then the errno
    /// of a step that failed.
    errno: AtomicI32,
}

/// [`Child::errno`] of a child that ran on its parent's memory and has reported no error.
const RAN_HERE: i32 = -1;

/// Set once a child was seen to run on the agent's memory: clones are real vforks on
/// this kernel, and no report pipe is made after.
static VFORK_SHARES: AtomicBool = AtomicBool::new(false);

/// The child: stdio, the setup's steps, `execve`; on an error its errno to the parent
/// and `_exit(127)`. Returns only through `_exit` or exec, so `clone` never runs its own
/// exit path on our stack.
extern "C" fn child_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Child` that `spawn` passed, alive while the parent waits and
    // unchanged but for `errno`, an atomic the child sets.
    let child = unsafe { &*arg.cast::<Child<'_>>() };
    child.errno.store(RAN_HERE, Ordering::Relaxed);
    let errno = match child.run() {
        Ok(()) => libc::EINVAL,
        Err(e) => e.raw_os_error().filter(|&n| n > 0).unwrap_or(libc::EINVAL),
    };
    child.errno.store(errno, Ordering::Release);
    if child.report < 0 {
        // SAFETY: ends the child at once, running no exit handler of the agent's.
        unsafe { libc::_exit(127) }
    }
    let bytes = errno.to_ne_bytes();
    // Four bytes into an empty pipe are written at once or not at all.
    let report = || {
        // SAFETY: writes four bytes from a local array to a descriptor the parent keeps
        // open.
        cerr(unsafe { libc::write(child.report, bytes.as_ptr().cast(), bytes.len()) })
    };
    while matches!(report(), Err(e) if e.kind() == io::ErrorKind::Interrupted) {}
    // SAFETY: ends the child at once, running no exit handler of the agent's.
    unsafe { libc::_exit(127) }
}

impl Child<'_> {
    /// Returns only on an error.
    fn run(&self) -> io::Result<()> {
        for (target, fd) in (0..).zip(self.stdio) {
            // SAFETY: dup2 takes two descriptors; the copy is not close-on-exec.
            cerr(unsafe { libc::dup2(fd, target) })?;
        }
        self.setup.apply(self.in_cgroup, self.signals)?;
        // SAFETY: program, argv and envp are NUL-terminated strings and null-terminated
        // arrays of them, built by `spawn` and alive until it returns.
        cerr(unsafe { libc::execve(self.program, self.argv, self.envp) })?;
        Ok(())
    }
}

/// The kernel's `struct clone_args` (linux/sched.h), up to `cgroup` (Linux 5.7).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// Whether `clone3` was found missing (ENOSYS: before Linux 5.3, qemu-user, a seccomp
/// filter) or without a flag `clone_into` asks for (EINVAL), so it is not asked again.
static NO_CLONE3: AtomicBool = AtomicBool::new(false);

/// For tests: whether children are started with `clone3`.
#[cfg(test)]
pub(super) fn uses_clone3() -> bool {
    !NO_CLONE3.load(Ordering::Relaxed)
}

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP)`: the child starts in the job's
/// cgroup `dir` (Linux 5.7+), so it need not move itself there. A move takes the
/// kernel's cgroup migration lock for writing, which after a quiet spell waits for an
/// RCU grace period: 10–14 ms per job on a test box (BENCHMARKS.md); a fork into the
/// cgroup takes it for reading only. Without a `dir`, the child starts where the agent
/// is. The kernel also does two steps a plain `clone` leaves to the child or to
/// another call: it sets every signal the agent handles back to its default action
/// (`CLONE_CLEAR_SIGHAND`, Linux 5.5+), and it makes a pidfd with the pid
/// (`CLONE_PIDFD`; always close-on-exec, made after the child's copy of the
/// descriptor table). An error means no child was made.
fn clone_into(
    dir: Option<RawFd>,
    stack: &Stack,
    child: &Child<'_>,
) -> io::Result<(libc::pid_t, Option<OwnedFd>)> {
    if NO_CLONE3.load(Ordering::Relaxed) {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    let into = if dir.is_some() { CLONE_INTO_CGROUP } else { 0 };
    let flags =
        (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_CLEAR_SIGHAND | CLONE_PIDFD | into;
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags,
        pidfd: (&raw mut pidfd) as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.base as u64,
        stack_size: stack.len as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: u64::try_from(dir.unwrap_or(0))
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
    };
    let arg = (&raw const *child).cast_mut().cast::<c_void>();
    // SAFETY: as for `clone` in `spawn`: the child runs `child_main` with `arg` on
    // `stack` (the kernel starts it at `stack + stack_size`, the top), and this thread
    // is suspended until it has exec'd or exited. `args` is alive for the call.
    let rc = unsafe { clone3(&mut args, child_main, arg) };
    // A raw system call returns the error negated, not through errno.
    let result = match libc::pid_t::try_from(rc) {
        // SAFETY: with a child made, the kernel stored a new descriptor in `pidfd`,
        // owned by no one else.
        Ok(pid) if pid > 0 => Ok((
            pid,
            (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) }),
        )),
        _ => Err(io::Error::from_raw_os_error(
            i32::try_from(-rc).unwrap_or(libc::EINVAL),
        )),
    };
    // Missing, or without a flag asked for (before Linux 5.7): not asked again.
    if matches!(&result, Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL))) {
        NO_CLONE3.store(true, Ordering::Relaxed);
    }
    result
}

/// The raw `clone3` system call; in the child, on its new stack, `func(arg)`, whose
/// result (never reached: `child_main` ends in `_exit` or exec) would be its exit code.
/// C libraries have no `clone3` wrapper: only assembly can switch the child to its
/// stack before any compiled code touches the one the parent is still using.
///
/// # Safety
/// `args` must be a valid `clone_args` naming a mapped stack; `func(arg)` must be safe to
/// run there, sharing this process's memory, and must not return.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3(
    args: *mut CloneArgs,
    func: extern "C" fn(*mut c_void) -> libc::c_int,
    arg: *mut c_void,
) -> libc::c_long {
    let rc: libc::c_long;
    // SAFETY: the caller's promise. r12 and r13 keep `func` and `arg` across the system
    // call, and the child inherits them; the stack top is 16-byte aligned, as a call
    // expects. The child never comes back to this code.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60", // exit
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => rc,
            in("rdi") args,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") func,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    rc
}

/// See the x86-64 `clone3`.
///
/// # Safety
/// As there.
#[cfg(target_arch = "aarch64")]
unsafe fn clone3(
    args: *mut CloneArgs,
    func: extern "C" fn(*mut c_void) -> libc::c_int,
    arg: *mut c_void,
) -> libc::c_long {
    let rc: libc::c_long;
    // SAFETY: the caller's promise. x20 and x21 keep `func` and `arg` across the system
    // call, and the child inherits them; the stack top is 16-byte aligned. The child
    // never comes back to this code.
    unsafe {
        std::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x0, x21",
            "blr x20",
            "mov x8, #93", // exit
            "svc 0",
            "brk #0",
            "2:",
            inlateout("x0") args => rc,
            in("x1") std::mem::size_of::<CloneArgs>(),
            in("x8") libc::SYS_clone3,
            in("x20") func,
            in("x21") arg,
            options(nostack),
        );
    }
    rc
}

/// Elsewhere: no `clone3`, so the child moves itself into its cgroup.
///
/// # Safety
/// Always safe: it does nothing.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn clone3(
    _: *mut CloneArgs,
    _: extern "C" fn(*mut c_void) -> libc::c_int,
    _: *mut c_void,
) -> libc::c_long {
    -libc::ENOSYS as libc::c_long
}

/// The errno a failed child sent, or `None` once the pipe closed empty (it exec'd).
fn read_report(pipe: &OwnedFd) -> Option<i32> {
    let mut bytes = [0u8; 4];
    loop {
        // SAFETY: read writes at most four bytes into `bytes`.
        let n = unsafe { libc::read(pipe.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
        match cerr(n) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // As musl: anything but a whole report means the exec happened.
            Ok(4) => return Some(i32::from_ne_bytes(bytes)),
            _ => return None,
        }
    }
}

/// `/dev/null` for every job's stdin, opened once (close-on-exec; the child's `dup2`
/// gives it a copy without the flag).
fn dev_null() -> io::Result<RawFd> {
    static DEV_NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = DEV_NULL.get() {
        return Ok(fd.as_raw_fd());
    }
    let fd = super::mntns::open_cloexec(c"/dev/null")?;
    // Two threads may both open it; the second copy is closed here.
    Ok(DEV_NULL.get_or_init(|| fd).as_raw_fd())
}

/// C strings in one buffer, and the null-terminated array of pointers to them that
/// `execve` takes: three allocations for a whole environment, not two per variable.
struct CStrings {
    /// Where `pointers` point: a heap buffer, so it stays put when this moves.
    _bytes: Vec<u8>,
    pointers: Vec<*const libc::c_char>,
}

impl CStrings {
    /// Each of `strings` is its parts joined, then a NUL; a NUL inside one is an error.
    fn new<const N: usize>(strings: &[[&[u8]; N]]) -> io::Result<CStrings> {
        let joined = |parts: &[&[u8]; N]| parts.iter().map(|p| p.len()).sum::<usize>();
        let mut bytes = Vec::with_capacity(strings.iter().map(|s| joined(s) + 1).sum());
        for parts in strings {
            for part in parts {
                if part.contains(&0) {
                    // std's message for a NUL in an argument, as before.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "nul byte found in provided data",
                    ));
                }
                bytes.extend_from_slice(part);
            }
            bytes.push(0);
        }
        let mut pointers = Vec::with_capacity(strings.len() + 1);
        let mut at = 0;
        for parts in strings {
            pointers.push(bytes[at..].as_ptr().cast());
            at += joined(parts) + 1;
        }
        pointers.push(std::ptr::null());
        Ok(CStrings {
            _bytes: bytes,
            pointers,
        })
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    cerr(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The raw `rt_sigprocmask(SIG_SETMASK)`: libc's refuses to block the signals it keeps
/// for itself, and none may reach a child that runs on our memory.
///
/// # Safety
/// `set` must point to 8 readable bytes; `old` must be null or point to 8 writable ones.
unsafe fn sigprocmask(set: *const u64, old: *mut u64) -> libc::c_long {
    // SAFETY: the caller's promise; the kernel reads and writes 8 bytes each.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, set, old, 8) }
}

thread_local! {
    /// This thread's child stack, between its spawns.
    static KEPT_STACK: std::cell::Cell<Option<Stack>> = const { std::cell::Cell::new(None) };
}

/// An anonymous mapping for the child's stack, its lowest page inaccessible so an
/// overflow faults instead of writing into memory of the agent's.
struct Stack {
    base: *mut c_void,
    len: usize,
}

/// The memory page size (4 KiB on x86-64; 4, 16 or 64 KiB on arm64 kernels).
pub fn page_size() -> usize {
    // SAFETY: sysconf takes an integer.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or(4096)
}

impl Stack {
    fn new() -> io::Result<Stack> {
        let page = page_size();
        let len = STACK_BYTES.next_multiple_of(page) + page;
        // SAFETY: a new private anonymous mapping, at an address of the kernel's choice.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the first page of the mapping just made, which nothing uses yet.
        cerr(unsafe { libc::mprotect(base, page, libc::PROT_NONE) })?;
        Ok(stack)
    }

    /// The highest address: stacks grow down on every architecture the agent runs on.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which clone expects.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`, once; the child no longer runs on it
        // (it exec'd or exited before `clone` returned).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    fn plain() -> ChildSetup {
        ChildSetup::new(None, 0o022, Path::new("/")).unwrap()
    }

    /// Spawns, reads stdout to the end, reaps: (status, stdout).
    fn output(args: &[&str], env: &[(&str, &str)], setup: &ChildSetup) -> (ExitStatus, String) {
        let child = spawn(&argv(args), env, setup).unwrap();
        drop(child.writers); // else no EOF
        let mut out = String::new();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .unwrap();
        (wait(child.pid, true).unwrap().unwrap(), out)
    }

    #[test]
    fn runs_with_exactly_the_arguments_and_environment_given() {
        let env = [("A", "b c"), ("EMPTY", "")];
        let (status, out) = output(&["/usr/bin/env"], &env, &plain());
        assert!(status.success());
        assert_eq!(out, "A=b c\nEMPTY=\n");
        let script = "printf '%s|' \"$0\" \"$@\"";
        let (_, out) = output(&["/bin/sh", "-c", script, "x", "y z", ""], &[], &plain());
        assert_eq!(out, "x|y z||");
    }

    #[test]
    fn a_missing_program_is_enoent_and_a_nul_byte_refused_as_std_did() {
        let err = spawn(&argv(&["/nonexistent/prog"]), &[], &plain()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(err.to_string(), "No such file or directory (os error 2)");
        let err = spawn(&argv(&["/bin/true", "a\0b"]), &[], &plain()).unwrap_err();
        assert_eq!(err.to_string(), "nul byte found in provided data");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(spawn(&[], &[], &plain()).is_err());
    }

    /// Once a child ran on our memory, failures come back through it and no report
    /// pipe is made; before that (and under qemu-user, where no child does), through
    /// the pipe too. Both give the same error.
    #[test]
    fn a_failed_exec_reads_the_same_with_and_without_the_report_pipe() {
        let ran = spawn(&argv(&["/bin/true"]), &[], &plain()).unwrap();
        assert!(wait(ran.pid, true).unwrap().unwrap().success());
        let shares = VFORK_SHARES.load(Ordering::Relaxed);
        for pipe in [true, false].into_iter().filter(|&pipe| pipe || shares) {
            VFORK_SHARES.store(!pipe, Ordering::Relaxed);
            let err = spawn(&argv(&["/nonexistent/prog"]), &[], &plain()).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "pipe: {pipe}");
        }
        VFORK_SHARES.store(shares, Ordering::Relaxed);
    }

    #[test]
    fn a_failed_step_comes_back_named_and_nothing_runs() {
        // A file in place of the cgroup's directory: no child starts in it, and the
        // child's first step, opening `cgroup.procs` under it, fails with ENOTDIR.
        let marker = crate::sys::files::test_dir("spawn-failed-step").join("ran");
        let not_a_cgroup = std::fs::File::open("/dev/null").unwrap();
        let setup = plain().join(std::os::fd::AsFd::as_fd(&not_a_cgroup));
        let touch = format!("touch {}", marker.display());
        let err = spawn(&argv(&["/bin/sh", "-c", &touch]), &[], &setup).unwrap_err();
        assert_eq!(
            failed_step(&err).as_deref(),
            Some("entering the job's cgroup: Not a directory (os error 20)")
        );
        // An unnamed step (here chdir) comes back as its plain errno.
        let closed = ChildSetup::new(None, 0o022, Path::new("/nonexistent-dir")).unwrap();
        let err = spawn(&argv(&["/bin/sh", "-c", &touch]), &[], &closed).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(failed_step(&err), None);
        assert!(!marker.exists());
        let _ = std::fs::remove_dir_all(marker.parent().unwrap());
    }

    #[test]
    fn the_callers_signal_mask_is_given_back() {
        let mask = || {
            let mut now = 0u64;
            // SAFETY: with a null set, rt_sigprocmask only writes the current mask.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigprocmask,
                    libc::SIG_BLOCK,
                    std::ptr::null::<u64>(),
                    &mut now as *mut u64,
                    8,
                )
            };
            now
        };
        let before = mask();
        let (status, _) = output(&["/bin/true"], &[], &plain());
        assert!(status.success());
        assert_eq!(mask(), before);
    }

    #[test]
    fn stdin_is_dev_null_and_stderr_a_pipe_of_its_own() {
        let child = spawn(
            &argv(&["/bin/sh", "-c", "cat; echo err >&2"]),
            &[],
            &plain(),
        )
        .unwrap();
        drop(child.writers); // else no EOF
        let (mut out, mut err) = (String::new(), String::new());
        std::fs::File::from(child.stderr)
            .read_to_string(&mut err)
            .unwrap();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .unwrap();
        assert!(wait(child.pid, true).unwrap().unwrap().success());
        assert_eq!((out.as_str(), err.as_str()), ("", "err\n"));
    }
}
