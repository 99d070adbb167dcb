//! Every libc call the agent makes lives here, each `unsafe` block with its reason.
//! The rest of the crate sees plain Rust functions returning `io::Result`.

use std::ffi::{CStr, CString};
use std::io;
use std::path::PathBuf;

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
            action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
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
