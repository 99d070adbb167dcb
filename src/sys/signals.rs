//! SIGTERM and SIGINT, routed into a socket the event loop polls.
//!
//! A forked child inherits the handler until it execs (and `sys::child` resets it
//! first thing); the handler still checks that it runs in the agent's own process, so no
//! signal to a child can ever tell the agent to stop.

use std::io;

use super::cerr::cerr;

/// Write end of the stop-signal pipe, for the async-signal-safe handler.
static STOP_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
/// The agent's pid, saved when the handler is installed.
static AGENT_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    // SAFETY: getpid(2) is async-signal-safe and cannot fail.
    let me = unsafe { libc::getpid() };
    if me != AGENT_PID.load(std::sync::atomic::Ordering::Relaxed) {
        // A child between fork and exec: the write below would reach the agent's loop.
        return;
    }
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
    // SAFETY: getpid(2) cannot fail.
    AGENT_PID.store(
        unsafe { libc::getpid() },
        std::sync::atomic::Ordering::SeqCst,
    );
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
        cerr(rc)?;
    }
    Ok(reader)
}
