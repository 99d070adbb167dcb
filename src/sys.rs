//! Every libc call the agent makes lives here, each `unsafe` block with its reason.
//! The rest of the crate sees plain Rust functions returning `io::Result`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

/// A local account, as `getpwnam(3)` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Looks up a user by name; `Ok(None)` when no such user exists.
pub fn lookup_user(name: &str) -> io::Result<Option<UserInfo>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    passwd_entry(&move |pwd, buf, len, out| {
        // SAFETY: all pointers come from `passwd_entry` and are valid for the call;
        // `buf` is `len` bytes long.
        unsafe { libc::getpwnam_r(cname.as_ptr(), pwd, buf, len, out) }
    })
}

/// Looks up a user by uid; `Ok(None)` when the uid has no passwd entry.
pub fn lookup_uid(uid: u32) -> io::Result<Option<UserInfo>> {
    passwd_entry(&move |pwd, buf, len, out| {
        // SAFETY: as in `lookup_user`.
        unsafe { libc::getpwuid_r(uid, pwd, buf, len, out) }
    })
}

type PasswdCall =
    dyn Fn(*mut libc::passwd, *mut libc::c_char, libc::size_t, *mut *mut libc::passwd) -> i32;

fn passwd_entry(call: &PasswdCall) -> io::Result<Option<UserInfo>> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: passwd is a plain C struct of integers and pointers; all-zero is valid.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut out);
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if out.is_null() {
            return Ok(None);
        }
        // SAFETY: on success pw_name and pw_dir point to NUL-terminated strings inside `buf`,
        // which outlives this block.
        let (name, home) = unsafe {
            (
                CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
                CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned(),
            )
        };
        return Ok(Some(UserInfo {
            name,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: PathBuf::from(home),
        }));
    }
}

/// Looks up a group id by name; `Ok(None)` when no such group exists.
pub fn lookup_group(name: &str) -> io::Result<Option<u32>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: group is a plain C struct of integers and pointers; all-zero is valid.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf` is `buf.len()` bytes.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok((!out.is_null()).then_some(grp.gr_gid));
    }
}

/// Sends `signal` to every process in process group `pgid`.
pub fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    let pgid =
        libc::pid_t::try_from(pgid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pgid <= 1 {
        // killpg(0 or 1) would hit our own group or init: never what a job id means.
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: killpg takes plain integers; a stale group yields ESRCH, not UB.
    if unsafe { libc::killpg(pgid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True while any process of group `pgid` is alive (signal 0 probes without sending).
pub fn group_alive(pgid: u32) -> bool {
    kill_group(pgid, 0).is_ok()
}

/// Sets `O_NONBLOCK` on `fd`, so a read returns `WouldBlock` instead of waiting.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: `raw` is open for the lifetime of the borrow; F_GETFL takes no pointer.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFL takes an integer flag word.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for `pid` (Linux 5.3+): becomes readable when the process exits, so one
/// `poll` can wait for output and exit together. `ENOSYS` on older kernels (and under
/// some seccomp filters); the caller then polls `waitpid` instead.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open takes two integers and returns a new fd (always O_CLOEXEC) or -1.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned `fd` as a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `name` as a C string for the *at calls: one path component, no NUL, no `/`.
fn component(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Creates `name` inside the open directory `dir` with `O_CREAT|O_EXCL|O_NOFOLLOW`:
/// relative to the descriptor, so swapping the directory's path for a link afterwards
/// changes nothing, and a file or link already at `name` is an error.
pub fn create_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<std::fs::File> {
    let name = component(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is open for the borrow, `name` is a NUL-terminated string that lives
    // across the call, and openat returns a new fd or -1.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned `fd` as a fresh descriptor that nothing else owns.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// An `O_PATH|O_NOFOLLOW` handle on `name` inside `dir`, only for `fstat`: a link yields
/// the link itself and a FIFO or device is not opened, so looking has no side effect.
pub fn lookup_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<std::fs::File> {
    let name = component(name)?;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as in `create_at`; O_PATH takes no mode.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned `fd` as a fresh descriptor that nothing else owns.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Removes the entry `name` (never a directory) inside `dir`; a link is removed itself.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let name = component(name)?;
    // SAFETY: `dir` is open for the borrow and `name` lives across the call.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Most descriptors one [`poll_readable`] call watches (a job uses three).
pub const POLL_MAX_FDS: usize = 8;

/// Waits up to `timeout` until one of `fds` is readable, hung up or in error, and sets
/// `ready[i]` for each such fd. Returns how many are ready; 0 on timeout or on a signal
/// (EINTR), so callers simply loop. With no fds it just sleeps for `timeout`.
pub fn poll_readable(
    fds: &[BorrowedFd<'_>],
    ready: &mut [bool],
    timeout: Duration,
) -> io::Result<usize> {
    if fds.len() > POLL_MAX_FDS || ready.len() < fds.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut set = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; POLL_MAX_FDS];
    for (slot, fd) in set.iter_mut().zip(fds) {
        slot.fd = fd.as_raw_fd();
        slot.events = libc::POLLIN;
    }
    // Round up so a 0.4 ms remainder does not turn into a busy loop of 0 ms polls.
    let ms = timeout.as_micros().div_ceil(1000);
    let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
    // SAFETY: `set` holds `fds.len()` initialised pollfd entries whose fds stay open for
    // the borrow; poll writes only their `revents`.
    let n = unsafe { libc::poll(set.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(err)
        };
    }
    let mut count = 0;
    for (flag, slot) in ready.iter_mut().zip(&set[..fds.len()]) {
        *flag = slot.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
        count += usize::from(*flag);
    }
    Ok(count)
}

/// True while process group `pgid` has a member that is not a zombie.
///
/// `group_alive` (killpg with signal 0) also counts zombies, and an orphaned grandchild
/// that we killed stays a zombie until PID 1 reaps it — which some container inits never
/// do. So when the cheap probe says "alive", `/proc` is scanned for a live member. If
/// `/proc` cannot be read, the answer is the conservative `true`.
pub fn group_running(pgid: u32) -> bool {
    if !group_alive(pgid) {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A process can vanish between listing and reading: that is "not running".
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat) {
            if pgrp == pgid && state != 'Z' && state != 'X' {
                return true;
            }
        }
    }
    false
}

/// This boot's random id (`/proc/sys/kernel/random/boot_id`). A process group id written
/// down under another boot means nothing now: after a reboot it may name a stranger.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat` field 22);
/// `None` if there is no such process. Together with the boot id it tells a process
/// from a later one that got the same pid.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name start at field 3 (state); starttime is field 22.
    stat[stat.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// (state, process group) from a `/proc/<pid>/stat` line. The command name in
/// parentheses may itself hold spaces and ')', so fields are counted after the last ')'.
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Write end of the stop-signal pipe, for the async-signal-safe handler.
static STOP_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    let fd = STOP_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is a static byte. A full pipe
        // just drops the byte, which is fine: one byte already means "stop".
        unsafe {
            libc::write(fd, b"s".as_ptr().cast(), 1);
        }
    }
}

/// Routes SIGTERM and SIGINT into a socket the event loop polls (the self-pipe trick),
/// so shutdown happens on the loop thread, not inside a signal handler.
pub fn stop_signal_pipe() -> io::Result<std::os::unix::net::UnixStream> {
    use std::os::fd::IntoRawFd;
    let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    writer.set_nonblocking(true)?;
    let old = STOP_FD.swap(writer.into_raw_fd(), std::sync::atomic::Ordering::SeqCst);
    if old >= 0 {
        // SAFETY: `old` came from into_raw_fd above in an earlier call and is owned here.
        unsafe { libc::close(old) };
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: sigaction with a zeroed struct, a valid handler address and an empty mask;
        // the handler only calls write(2).
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction =
                on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(reader)
}

/// The first descriptor systemd passes with socket activation (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Set once fd 3 has been taken, so two owners of it can never exist.
static LISTEN_FD_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn socket_option(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds value's size; a bad
    // fd or option yields an error code, not UB.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes the socket systemd passed as fd 3, once it is known to be a listening TCP
/// socket, and marks it close-on-exec: systemd hands it over inheritable, and no job
/// may inherit the agent's listening socket.
pub fn take_listen_fd() -> io::Result<OwnedFd> {
    let fd = LISTEN_FDS_START;
    if LISTEN_FD_TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "fd 3 was already taken",
        ));
    }
    let not_tcp = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "fd 3 is not a listening TCP socket; the socket unit needs ListenStream=127.0.0.1:9999",
        )
    };
    // SOCK_STREAM + listening + an IP family is exactly "a TCP listener"; a closed fd 3
    // fails the first call with EBADF.
    if socket_option(fd, libc::SO_TYPE)? != libc::SOCK_STREAM
        || socket_option(fd, libc::SO_ACCEPTCONN)? != 1
        || ![libc::AF_INET, libc::AF_INET6].contains(&socket_option(fd, libc::SO_DOMAIN)?)
    {
        return Err(not_tcp());
    }
    // SAFETY: fcntl(F_SETFD) takes an integer flag; fd 3 is open (getsockopt succeeded).
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd 3 is open, was passed to this process by systemd (the caller checked
    // LISTEN_PID and LISTEN_FDS), nothing else in the process refers to it, and the flag
    // above makes this the only time it is wrapped.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes `names` from this process's environment, as `sd_notify(3)` and
/// `sd_listen_fds(3)` do with `unset_environment`, so nothing started later sees them.
///
/// For start-up only: `serve` calls it (through `systemd::Systemd::from_env`) before
/// the agent starts any thread.
pub(crate) fn remove_env_at_startup(names: &[&str]) {
    for name in names {
        // SAFETY: libc's getenv/setenv are not thread-safe, hence the unsafe; this runs
        // at the start of `serve`, before any job, audit or loop thread exists, so
        // nothing reads the environment at the same time.
        unsafe { std::env::remove_var(name) };
    }
}

/// Terminal echo switched off on stdin until dropped (for typing a code unseen).
pub struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    /// Turns echo off on stdin; fails when stdin is not a terminal.
    pub fn stdin() -> io::Result<EchoOff> {
        // SAFETY: termios is a plain C struct; all-zero is a valid value to overwrite.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is only read; `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut quiet = saved;
        // ECHONL keeps the newline visible, so the prompt line still ends.
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: `quiet` is a fully initialised termios copied from the terminal's own.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &quiet) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings tcgetattr returned; nothing to do if it fails.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "1234 (a b) c)) S 1 4321 4321 0 -1 4194560 100 0 0 0";
        assert_eq!(parse_stat(line), Some(('S', 4321)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn poll_sees_readable_pipe_and_times_out() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let (reader, mut writer) = std::os::unix::net::UnixStream::pair().unwrap();
        set_nonblocking(reader.as_fd()).unwrap();
        let mut ready = [false; 1];
        let n = poll_readable(&[reader.as_fd()], &mut ready, Duration::from_millis(10)).unwrap();
        assert_eq!((n, ready), (0, [false]));
        writer.write_all(b"x").unwrap();
        let n = poll_readable(&[reader.as_fd()], &mut ready, Duration::from_secs(1)).unwrap();
        assert_eq!((n, ready), (1, [true]));
    }

    #[test]
    fn boot_id_and_start_ticks() {
        assert_eq!(boot_id().map(|b| b.len()), Some(36));
        let me = start_ticks(std::process::id()).unwrap();
        assert!(me > 0);
        assert_eq!(start_ticks(std::process::id()), Some(me));
        assert_eq!(start_ticks(u32::MAX), None);
    }

    #[test]
    fn our_own_group_is_running() {
        let me = std::process::id();
        let pgid = std::fs::read_to_string(format!("/proc/{me}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
            .map(|(_, g)| g)
            .unwrap();
        if pgid > 1 {
            assert!(group_running(pgid));
        }
    }
}
