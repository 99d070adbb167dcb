//! Descriptors: non-blocking pipes, poll(2), and the *at calls that work relative to
//! a checked directory descriptor.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::cerr::cerr;

/// Makes the read end of a pipe `pipe2` made (no status flag set) non-blocking, so a
/// read returns `WouldBlock` instead of waiting. One `fcntl` per job's pipe: the flags
/// are known, so they are not read first; any other status flag would be cleared.
pub fn set_nonblocking_pipe(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is open for the lifetime of the borrow; F_SETFL takes a flag word.
    cerr(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) })?;
    Ok(())
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
    let fd =
        cerr(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: the kernel just returned `fd` as a fresh descriptor that nothing else owns.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What [`stat_at`] found.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// A regular file (not a link, directory, FIFO or device).
    pub file: bool,
    pub len: u64,
    /// Seconds and nanoseconds.
    pub mtime: (i64, i64),
}

/// What `name` inside `dir` is, by `fstatat(AT_SYMLINK_NOFOLLOW)`: a link is seen as a
/// link, and nothing is opened, so looking has no side effect. One system call where an
/// `O_PATH` open, its `fstat` and its `close` take three.
pub fn stat_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Stat> {
    let name = component(name)?;
    // SAFETY: an all-zero `stat` is a valid value for the kernel to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open for the borrow, `name` is a NUL-terminated string that lives
    // across the call, and fstatat writes one `stat` into `st`.
    cerr(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(Stat {
        file: st.st_mode & libc::S_IFMT == libc::S_IFREG,
        len: u64::try_from(st.st_size).unwrap_or(0),
        mtime: (st.st_mtime, st.st_mtime_nsec),
    })
}

/// Opens the existing entry `name` inside `dir` for writing, never through a link
/// (`O_NOFOLLOW`) and without waiting on a FIFO (`O_NONBLOCK`); the caller checks with
/// `fstat` what it got before writing.
pub fn open_write_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<std::fs::File> {
    open_existing_at(dir, name, libc::O_WRONLY)
}

/// [`open_write_at`], for reading.
pub fn open_read_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<std::fs::File> {
    open_existing_at(dir, name, libc::O_RDONLY)
}

fn open_existing_at(dir: BorrowedFd<'_>, name: &str, access: i32) -> io::Result<std::fs::File> {
    let name = component(name)?;
    let flags = access | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: as in `create_at`; without O_CREAT no mode is read.
    let fd = cerr(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    // SAFETY: the kernel just returned `fd` as a fresh descriptor that nothing else owns.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Renames `from` to `to`, both inside `dir`; `EEXIST` if `to` exists
/// (`RENAME_NOREPLACE`), so nothing already there is ever replaced.
pub fn rename_at(dir: BorrowedFd<'_>, from: &str, to: &str) -> io::Result<()> {
    let (from, to) = (component(from)?, component(to)?);
    let raw = dir.as_raw_fd();
    // SAFETY: `dir` is open for the borrow, both names are NUL-terminated strings that
    // live across the call, and renameat2 takes no other pointer.
    cerr(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            raw,
            from.as_ptr(),
            raw,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })?;
    Ok(())
}

/// Removes the entry `name` (never a directory) inside `dir`; a link is removed itself.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let name = component(name)?;
    // SAFETY: `dir` is open for the borrow and `name` lives across the call.
    cerr(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })?;
    Ok(())
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
    match cerr(unsafe { libc::poll(set.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }) {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(0),
        Err(err) => return Err(err),
    }
    let mut count = 0;
    for (flag, slot) in ready.iter_mut().zip(&set[..fds.len()]) {
        *flag = slot.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
        count += usize::from(*flag);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_made_non_blocking_reads_at_once_and_poll_sees_it_readable() {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        set_nonblocking_pipe(reader.as_fd()).unwrap();
        // SAFETY: F_GETFL on a descriptor open for the test; no pointer.
        let flags = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0, "flags {flags:#x}");
        // An empty pipe answers at once instead of waiting.
        let err = reader.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let mut ready = [false; 1];
        let n = poll_readable(&[reader.as_fd()], &mut ready, Duration::from_millis(10)).unwrap();
        assert_eq!((n, ready), (0, [false]));
        writer.write_all(b"x").unwrap();
        let n = poll_readable(&[reader.as_fd()], &mut ready, Duration::from_secs(1)).unwrap();
        assert_eq!((n, ready), (1, [true]));
    }
}
