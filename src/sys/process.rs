//! Processes and process groups: signals, pidfds, and what /proc says about them.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::cerr::cerr;

/// Sends `signal` to every process in process group `pgid`.
pub fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    let pgid =
        libc::pid_t::try_from(pgid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pgid <= 1 {
        // killpg(0 or 1) would hit our own group or init: never what a job id means.
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: killpg takes plain integers; a stale group yields ESRCH, not UB.
    cerr(unsafe { libc::killpg(pgid, signal) })?;
    Ok(())
}

/// True while any process of group `pgid` is alive (signal 0 probes without sending).
pub fn group_alive(pgid: u32) -> bool {
    kill_group(pgid, 0).is_ok()
}

/// Tests: keeps the calling thread (and the children it starts) on the CPU it is on
/// now, so that a child runs only while its parent sleeps, as on a one-core box.
/// x86-64 only: the aarch64 suite runs under qemu-user, where no test can count on it.
#[cfg(all(test, target_arch = "x86_64"))]
pub fn stay_on_this_cpu() -> io::Result<()> {
    // SAFETY: sched_getcpu takes nothing.
    let cpu = cerr(unsafe { libc::sched_getcpu() })?;
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sets one bit of `set`; CPU_SET checks the index against its size.
    unsafe { libc::CPU_SET(usize::try_from(cpu).unwrap_or(0), &mut set) };
    // SAFETY: reads one cpu_set_t of the size given, alive for the call.
    cerr(unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) })?;
    Ok(())
}

/// A pidfd for `pid` (Linux 5.3+): becomes readable when the process exits, so one
/// `poll` can wait for output and exit together. `ENOSYS` on older kernels (and under
/// some seccomp filters); the caller then polls `waitpid` instead.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open takes two integers and returns a new fd (always O_CLOEXEC) or -1.
    let rc = cerr(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    let fd = RawFd::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned `fd` as a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// True while process group `pgid` has a member that is not a zombie.
///
/// `group_alive` (killpg with signal 0) also counts zombies, and an orphaned grandchild
/// that we killed stays a zombie until PID 1 reaps it — which some container inits never
/// do. So when the cheap probe says "alive", `/proc` is scanned for a live member. If
/// `/proc` cannot be read, the answer is the conservative `true`.
pub fn group_running(pgid: u32) -> bool {
    group_alive(pgid) && scan_group(pgid, |_| true).is_none_or(|found| found)
}

/// A live (not zombie) process, as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub pid: u32,
    /// Its session id: a job's processes are in the agent's (an older agent's jobs each
    /// made one, numbered as their group), unless one of them left it.
    pub session: u32,
    /// When it started, in clock ticks since boot (as [`start_ticks`]).
    pub start: u64,
}

/// The live members of process group `pgid`, from `/proc`; `None` if `/proc` cannot be
/// read. A process that vanishes while it is read is simply not listed.
pub fn group_members(pgid: u32) -> Option<Vec<Member>> {
    let mut members = Vec::new();
    scan_group(pgid, |member| {
        members.push(member);
        false
    })?;
    Some(members)
}

/// Calls `stop` with each live member of `pgid` until it returns true; `Some(true)` if
/// it did, `Some(false)` after the last one, `None` if `/proc` cannot be read.
fn scan_group(pgid: u32, mut stop: impl FnMut(Member) -> bool) -> Option<bool> {
    let dir = std::fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process can vanish between listing and reading: that is "not running".
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(stat) = parse_stat(&stat)
            && stat.pgrp == pgid
            && stat.state != 'Z'
            && stat.state != 'X'
            && stop(Member {
                pid,
                session: stat.session,
                start: stat.start,
            })
        {
            return Some(true);
        }
    }
    Some(false)
}

/// This boot's random id (`/proc/sys/kernel/random/boot_id`). A process group id written
/// down under another boot means nothing now: after a reboot it may name a stranger.
pub fn boot_id() -> Option<String> {
    kernel_value("random/boot_id")
}

/// This machine's host name (`/proc/sys/kernel/hostname`, what `hostname` prints).
pub fn host_name() -> Option<String> {
    kernel_value("hostname")
}

/// A one-line value under /proc/sys/kernel, trimmed; `None` if unreadable or empty.
fn kernel_value(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat` field 22);
/// `None` if there is no such process. Together with the boot id it tells a process
/// from a later one that got the same pid.
pub fn start_ticks(pid: u32) -> Option<u64> {
    start_and_session(pid).map(|(start, _)| start)
}

/// [`start_ticks`] and the session id of process `pid`, from one read of its `stat`.
pub fn start_and_session(pid: u32) -> Option<(u64, u32)> {
    // One read of a buffer the line fits in (`read_to_string` grows its buffer from 32
    // bytes: six reads, and this runs for jobs that outlive their first look).
    let mut buf = [0u8; 1024];
    let n = std::io::Read::read(
        &mut std::fs::File::open(format!("/proc/{pid}/stat")).ok()?,
        &mut buf,
    )
    .ok()?;
    let stat = std::str::from_utf8(&buf[..n]).ok()?;
    parse_stat(stat).map(|s| (s.start, s.session))
}

/// The fields of a `/proc/<pid>/stat` line the agent reads.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    state: char,
    pgrp: u32,
    session: u32,
    start: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name in parentheses may itself hold
/// spaces and ')', so fields are counted after the last ')', where field 3 (state)
/// starts; process group is field 5, session 6, start time 22.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    let start = fields.nth(22 - 7)?.parse().ok()?;
    Some(Stat {
        state,
        pgrp,
        session,
        start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "1234 (a b) c)) S 1 4321 4320 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                pgrp: 4321,
                session: 4320,
                start: 98765
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2 3 0"), None);
    }

    #[test]
    fn boot_id_and_start_ticks() {
        assert_eq!(boot_id().map(|b| b.len()), Some(36));
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(host_name().as_deref(), Some(name.trim()));
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
            .map(|s| s.pgrp)
            .unwrap();
        if pgid > 1 {
            assert!(group_running(pgid));
            let members = group_members(pgid).unwrap();
            let me = members
                .iter()
                .find(|m| m.pid == std::process::id())
                .unwrap();
            assert_eq!(Some(me.start), start_ticks(me.pid));
        }
    }
}
