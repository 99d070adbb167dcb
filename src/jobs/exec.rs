//! One job's process, start to finish, on the job's own thread: build the environment
//! from nothing, spawn into a cgroup and a process group of its own (`sys::child`: no
//! terminal, no inherited descriptors or signal handlers, umask, the sandbox, cwd, the
//! rule's user), capture capped output, enforce the timeout and cancellation, and make
//! sure no process of the job (its cgroup, else its process group) outlives it.
//!
//! One thread per job and no reader threads: a single `poll(2)` watches stdout, stderr
//! and a pidfd of the child, so output and exit are seen together without blocking.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::contain::{self, Emptied, Spare};
use crate::sys::{self, ChildSetup, Credentials, JobCgroup, LentNamespace, Limits, Sandbox, clock};

/// Longest single wait, so a cancel request is noticed within this time.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// How long a child runs before `on_start` reports its group (see [`run`]).
const FIRST_LOOK: Duration = Duration::from_millis(5);
/// Wait between `waitpid` probes when the kernel has no pidfd (before Linux 5.3).
const NO_PIDFD_SLICE: Duration = Duration::from_millis(10);
/// Wait between checks for leftover group members after the main child ended.
const GROUP_SLICE: Duration = Duration::from_millis(20);
/// After SIGKILL, how long to wait for the kernel to finish the processes off. Only a
/// process stuck in uninterruptible sleep (a hung NFS mount) takes longer; we then give
/// up rather than hang the job thread forever, and say so in the log.
const AFTER_KILL_LIMIT: Duration = Duration::from_secs(2);
/// Bytes per read(2).
const CHUNK: usize = 16 * 1024;
/// Reads per stream per wake-up: a child writing without pause cannot keep the loop
/// from checking its deadline and the cancel flag.
const READS_PER_WAKE: usize = 64;
/// Reads per stream when draining after exit: more than a pipe can hold (1 MiB max by
/// default), yet bounded if an escaped grandchild keeps writing.
const READS_PER_DRAIN: usize = 128;

/// What to run and under which limits; built by the caller from the matched rule.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// `argv[0]` is an absolute program path: never a PATH lookup, never a shell (unless
    /// the policy chose `["/bin/sh", "-c", ..]`).
    pub argv: Vec<String>,
    /// The rule's extra environment, added on top of [`base_env`]; a key given here
    /// replaces the base value (the owner wrote it in the rule).
    pub env: Vec<(String, String)>,
    /// HOME for the child.
    pub home: PathBuf,
    pub uid: Option<u32>,
    /// Group to run as. With `uid` set and `gid` unset, the account's primary group is
    /// used, so a dropped user never keeps group root.
    pub gid: Option<u32>,
    /// Working directory; `/` when unset, never the agent's own.
    pub cwd: Option<PathBuf>,
    /// File mode creation mask; [`DEFAULT_UMASK`] when unset, never the agent's own.
    pub umask: Option<u32>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    /// Cap for each of stdout and stderr; the rest is read and dropped.
    pub max_output_bytes: usize,
    /// Written to the job's cgroup; a limit the kernel cannot enforce refuses the job.
    pub limits: Limits,
    /// Set up by the child before it execs; a part the kernel refuses refuses the job.
    pub sandbox: Sandbox,
}

/// The umask of a child whose rule sets none: files it creates are not writable by
/// group or others, whatever umask the agent was started with.
pub const DEFAULT_UMASK: u32 = 0o022;

/// How the job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Cancelled,
    SpawnFailed(String),
    /// Nothing was started: the program or working directory is no longer trusted
    /// (see `untrusted`); why, with the fix.
    Refused(String),
}

/// Everything a job record needs from the process.
#[derive(Debug)]
pub struct Outcome {
    pub ending: Ending,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Lossy UTF-8 of the kept bytes.
    pub stdout: String,
    pub stderr: String,
    /// True when either stream went over `max_output_bytes`.
    pub truncated: bool,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// `memory_limit` when the OOM killer ended the job in its cgroup.
    pub killed_by: Option<&'static str>,
    /// The job's cgroup, empty, removed when this is dropped: the caller holds on to it
    /// until the result is handed over.
    pub cgroup: Option<Emptied>,
}

impl Outcome {
    fn without_process(ending: Ending, started_ms: u64) -> Outcome {
        Outcome {
            ending,
            exit_code: None,
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            started_ms,
            finished_ms: clock::now_unix_ms(),
            killed_by: None,
            cgroup: None,
        }
    }
}

/// The environment every child starts from (SPEC, Policy), before the rule's `env`.
pub fn base_env(home: &str) -> Vec<(&str, &str)> {
    vec![
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        ("LANG", "C.UTF-8"),
        ("HOME", home),
        ("SYSTEMD_PAGER", "cat"),
        ("SYSTEMD_PAGERSECURE", "1"),
        ("PAGER", "cat"),
        ("LESSSECURE", "1"),
        ("SYSTEMD_COLORS", "0"),
        ("TERM", "dumb"),
    ]
}

/// The child's whole environment: [`base_env`], then the rule's `env`, a key given twice
/// taking its later value. Built from nothing, never filtered from the agent's own.
fn environment<'a>(spec: &'a ExecSpec, home: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut all = base_env(home);
    for (key, value) in &spec.env {
        match all.iter_mut().find(|(k, _)| k == key) {
            Some(known) => known.1 = value,
            None => all.push((key, value)),
        }
    }
    all
}

/// HOME for children that run as the agent's own user.
pub fn own_home() -> PathBuf {
    sys::lookup_uid(sys::euid())
        .ok()
        .flatten()
        .map_or_else(|| PathBuf::from("/root"), |u| u.home)
}

/// Ends the processes of a job that is not our child (left behind by an agent that
/// died): SIGTERM, SIGKILL after `grace`. With its `cgroup` (still there), everything in
/// it and nothing else: the group number may be a stranger's by now. Else process group
/// `pgid`. Returns false if live processes remain [`AFTER_KILL_LIMIT`] after SIGKILL.
pub fn end_group(pgid: u32, cgroup: Option<&Path>, grace: Duration) -> bool {
    let target = match cgroup.and_then(JobCgroup::open) {
        Some(group) => Target::Cgroup(group),
        None => Target::Group(pgid),
    };
    if !target.running() {
        return target.done();
    }
    target.signal(libc::SIGTERM);
    let kill_at = later(Instant::now(), grace);
    let mut give_up: Option<Instant> = None;
    loop {
        std::thread::sleep(GROUP_SLICE);
        if !target.running() {
            return target.done();
        }
        let now = Instant::now();
        match give_up {
            None if now >= kill_at => {
                target.signal(libc::SIGKILL);
                give_up = Some(later(now, AFTER_KILL_LIMIT));
            }
            Some(limit) if now >= limit => return false,
            _ => {}
        }
    }
}

/// What [`run`] tells its caller about the child; the pid is also the process group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The process exists (right after the spawn).
    Spawned(u32),
    /// It has run for [`FIRST_LOOK`] and is still there, or has left processes in its
    /// group: a group worth recording for after a crash.
    /// A job over before that has none, and skips the cost of recording it.
    Lasting(u32),
}

#[cfg(test)]
impl Started {
    pub fn pid(self) -> u32 {
        match self {
            Started::Spawned(pid) | Started::Lasting(pid) => pid,
        }
    }
}

/// What [`end_group`] signals.
enum Target {
    Group(u32),
    Cgroup(JobCgroup),
}

impl Target {
    fn running(&self) -> bool {
        match self {
            Target::Group(pgid) => sys::group_running(*pgid),
            Target::Cgroup(group) => group.populated(),
        }
    }

    fn signal(&self, signal: i32) {
        match self {
            Target::Group(pgid) => {
                let _ = sys::kill_group(*pgid, signal);
            }
            Target::Cgroup(group) => group.signal(signal),
        }
    }

    /// Empty now: an emptied cgroup is removed.
    fn done(&self) -> bool {
        if let Target::Cgroup(group) = self {
            let _ = group.remove();
        }
        true
    }
}

/// Runs one job to the end; `job` is its id, which names its cgroup where the agent
/// has a cgroup tree (`contain`), and that cgroup if it was made ahead. `on_start` is
/// told when the child was spawned and when it proved [`Started::Lasting`]. When this
/// returns, no process of the job's cgroup (without one: its process group) is alive;
/// the empty cgroup goes when the outcome's `cgroup` is dropped.
///
/// Ending rules:
/// - The job ends when the main child exits. Whatever is left of it (a `sleep 100 &`
///   the command put in the background, and with a cgroup also a process that left the
///   group with `setsid` or a double fork) then gets SIGTERM, and SIGKILL after
///   `kill_grace`: no background process outlives its job, and a pipe held open by such
///   a grandchild cannot keep the job waiting for EOF.
/// - At the deadline, or when `cancel` turns true, the job gets SIGTERM, then SIGKILL
///   after `kill_grace` if the child has not exited; the ending is `TimedOut` or
///   `Cancelled` whatever status the child then reports.
/// - Without a cgroup, a grandchild that calls `setsid` (or `setpgid`) leaves the group
///   and cannot be reached by it: `run` returns once the main child is reaped, the
///   pipes are drained of what is ready and the group is empty, without waiting for the
///   escapee to close its copy of the pipes.
pub fn run(
    spec: &ExecSpec,
    job: Option<(&str, Option<Spare>)>,
    cancel: &AtomicBool,
    on_start: impl FnMut(Started),
) -> Outcome {
    run_with(spec, job, cancel, on_start, true)
}

/// [`run`], with the pidfd optional so tests can take the pre-5.3-kernel path.
fn run_with(
    spec: &ExecSpec,
    job: Option<(&str, Option<Spare>)>,
    cancel: &AtomicBool,
    mut on_start: impl FnMut(Started),
    use_pidfd: bool,
) -> Outcome {
    let started_ms = clock::now_unix_ms();
    if cancel.load(Ordering::SeqCst) {
        // Cancelled while queued: nothing was started.
        return Outcome::without_process(Ending::Cancelled, started_ms);
    }
    if let Some(why) = untrusted(spec) {
        return Outcome::without_process(Ending::Refused(why), started_ms);
    }
    let (id, ahead) = job.unzip();
    let cgroup = match contain::job_cgroup(id, ahead.flatten(), &spec.limits) {
        Ok(cgroup) => cgroup,
        Err(why) => return Outcome::without_process(Ending::Refused(why), started_ms),
    };
    let mut job = match Job::spawn(spec, cgroup, use_pidfd) {
        Ok(job) => job,
        Err(ending) => return Outcome::without_process(ending, started_ms),
    };
    on_start(Started::Spawned(job.pid));
    let mut lasting_told = false;
    // Not the first wake-up: a short job's pipes close before it is reaped, and that
    // wake must not cost it a `/proc` read and a journal line.
    let lasting_at = later(Instant::now(), FIRST_LOOK);

    let deadline = Instant::now().checked_add(spec.timeout);
    // Set once we sent SIGTERM for a timeout or cancel: why, and when SIGKILL is due.
    let mut stopping: Option<(Ending, Instant)> = None;
    let mut killed_at: Option<Instant> = None;
    while !job.exited {
        let now = Instant::now();
        if stopping.is_none() {
            let reason = if cancel.load(Ordering::SeqCst) {
                Some(Ending::Cancelled)
            } else if deadline.is_some_and(|d| now >= d) {
                Some(Ending::TimedOut)
            } else {
                None
            };
            if let Some(reason) = reason {
                job.signal_group(libc::SIGTERM);
                stopping = Some((reason, later(now, spec.kill_grace)));
            }
        }
        let mut next = match &stopping {
            None => deadline,
            Some((_, kill_at)) => Some(*kill_at),
        };
        if let Some((_, kill_at)) = &stopping
            && killed_at.is_none()
            && now >= *kill_at
        {
            job.kill_hard();
            killed_at = Some(now);
        }
        if let Some(at) = killed_at {
            let give_up = later(at, AFTER_KILL_LIMIT);
            if now >= give_up {
                log::error!(
                    "job process {} did not die {} s after SIGKILL; leaving it",
                    job.pid,
                    AFTER_KILL_LIMIT.as_secs()
                );
                break;
            }
            next = Some(give_up);
        }
        let wait = next.map_or(POLL_SLICE, |t| t.saturating_duration_since(now));
        let slice = if lasting_told {
            POLL_SLICE
        } else {
            lasting_at.saturating_duration_since(now)
        };
        job.step(wait.min(slice));
        if !job.exited && !lasting_told && Instant::now() >= lasting_at {
            lasting_told = true;
            on_start(Started::Lasting(job.pid));
        }
    }

    job.drain();
    // The main process is gone but others of its group may be left: those must be
    // findable after a crash while they are ended.
    if job.running() {
        if !lasting_told {
            on_start(Started::Lasting(job.pid));
        }
        let kill_at = stopping.as_ref().map(|(_, at)| *at);
        job.clear_group(kill_at, killed_at.is_some(), spec.kill_grace);
        job.drain();
    }

    let (exit_code, signal) = match job.status {
        Some(status) => (status.code(), status.signal()),
        None => (None, None),
    };
    let oom = || job.cgroup.as_ref().is_some_and(|g| g.oom_kills() > 0);
    let killed_by = (signal == Some(libc::SIGKILL) && oom()).then_some("memory_limit");
    let ending = match stopping {
        Some((reason, _)) => reason,
        None => match (exit_code, signal) {
            (Some(code), _) => Ending::Exited(code),
            (None, Some(sig)) => Ending::Signaled(sig),
            // Reaped by someone else (SIGCHLD ignored): the status is lost.
            (None, None) => Ending::Exited(-1),
        },
    };
    Outcome {
        ending,
        exit_code,
        signal,
        truncated: job.out.truncated || job.err.truncated,
        stdout: String::from_utf8_lossy(&job.out.kept).into_owned(),
        stderr: String::from_utf8_lossy(&job.err.kept).into_owned(),
        started_ms,
        finished_ms: clock::now_unix_ms(),
        killed_by,
        cgroup: job.cgroup.take().map(Emptied::new),
    }
}

/// Why `spec` must not run now, if so: its program, working directory or a root job's
/// writable path has lost its trust chain since the config was loaded (a directory made
/// writable, a file given away). Checked on the job's thread right before the spawn,
/// since it reads the disk. A path that does not exist is left for the spawn to report.
fn untrusted(spec: &ExecSpec) -> Option<String> {
    let program = spec.argv.first().map(Path::new).filter(|p| p.is_absolute());
    let paths = program
        .map(|p| ("program", p))
        .into_iter()
        .chain(spec.cwd.as_deref().map(|d| ("working directory", d)));
    for (what, path) in paths {
        match sys::check_chain(path) {
            Ok(_) | Err(sys::ChainError::Missing(_)) => {}
            Err(err) => return Some(format!("refused to run: {what} {err}")),
        }
    }
    // A root job's writable paths as at load (see `sys::check_writable`); a gone one is
    // refused by the sandbox.
    let as_root = spec.uid.is_none_or(|uid| uid == 0);
    for path in spec.sandbox.writable.iter().filter(|_| as_root) {
        match sys::check_writable(path) {
            Ok(()) | Err(sys::ChainError::Missing(_)) => {}
            Err(err) => return Some(format!("refused to run: writable path {err}")),
        }
    }
    None
}

fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

/// One captured stream: the pipe until EOF, and the bytes kept under the cap.
struct Capture {
    pipe: Option<File>,
    kept: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capture {
    fn new(pipe: Option<OwnedFd>, cap: usize) -> Capture {
        let pipe = pipe.map(File::from).filter(|f| {
            // A blocking pipe could stall the loop on a read; without O_NONBLOCK we
            // cannot capture safely, so the stream is dropped (the child gets SIGPIPE).
            sys::set_nonblocking_pipe(f.as_fd())
                .map_err(|e| log::warn!("cannot make job output non-blocking: {e}"))
                .is_ok()
        });
        Capture {
            pipe,
            kept: Vec::new(),
            cap,
            truncated: false,
        }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.pipe.as_ref().map(|f| f.as_fd())
    }

    /// Reads what is ready, up to `max_reads` reads; keeps bytes up to the cap and drops
    /// the rest. Closes the pipe on EOF or error.
    fn pump(&mut self, buf: &mut [u8], max_reads: usize) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        for _ in 0..max_reads {
            match pipe.read(buf) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    let room = self.cap.saturating_sub(self.kept.len());
                    let take = n.min(room);
                    self.kept.extend_from_slice(&buf[..take]);
                    if take < n {
                        self.truncated = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("reading job output: {e}");
                    self.pipe = None;
                    return;
                }
            }
        }
    }
}

/// A spawned child and everything watched while it runs.
struct Job {
    /// Our child until reaped; also its process group id.
    pid: u32,
    /// None when the kernel has no pidfd; exit is then found by `waitpid` every 10 ms.
    pidfd: Option<OwnedFd>,
    /// The job's cgroup: signals and the end reach everything in it.
    cgroup: Option<JobCgroup>,
    /// The read-only namespace the job entered: lent to no other job until this one
    /// has ended.
    _namespace: Option<LentNamespace>,
    out: Capture,
    err: Capture,
    /// The pipes' writing ends (see [`sys::Spawned::writers`]), until the child is
    /// reaped.
    writers: Option<[OwnedFd; 2]>,
    /// Set once the child is reaped (or found already reaped).
    exited: bool,
    status: Option<ExitStatus>,
    /// On the job thread's stack: a heap buffer this size is an mmap and munmap (and
    /// their page faults) per job.
    buf: [u8; CHUNK],
}

impl Job {
    /// A failure removes `cgroup`; nothing ran then.
    fn spawn(
        spec: &ExecSpec,
        mut cgroup: Option<JobCgroup>,
        use_pidfd: bool,
    ) -> Result<Job, Ending> {
        match Job::start(spec, cgroup.as_mut(), use_pidfd) {
            Ok((child, pidfd, namespace)) => {
                let out = Capture::new(Some(child.stdout), spec.max_output_bytes);
                let err = Capture::new(Some(child.stderr), spec.max_output_bytes);
                Ok(Job {
                    pid: child.pid,
                    pidfd,
                    cgroup,
                    _namespace: namespace,
                    out,
                    err,
                    writers: Some(child.writers),
                    exited: false,
                    status: None,
                    buf: [0; CHUNK],
                })
            }
            Err(ending) => {
                if let Some(group) = &cgroup {
                    contain::remove_cgroup(group);
                }
                Err(ending)
            }
        }
    }

    fn start(
        spec: &ExecSpec,
        cgroup: Option<&mut JobCgroup>,
        use_pidfd: bool,
    ) -> Result<(sys::Spawned, Option<OwnedFd>, Option<LentNamespace>), Ending> {
        let failed = Ending::SpawnFailed;
        let Some(program) = spec.argv.first() else {
            return Err(failed("empty argv: no program to run".into()));
        };
        if !program.starts_with('/') {
            return Err(failed(format!(
                "{program}: not an absolute path (the agent never searches PATH)"
            )));
        }
        let drop_to = match (spec.uid, spec.gid) {
            (None, None) => None,
            (Some(uid), Some(gid)) => Some(Credentials { uid, gid }),
            (Some(uid), None) => match sys::lookup_uid(uid) {
                Ok(Some(user)) => Some(Credentials { uid, gid: user.gid }),
                Ok(None) => {
                    return Err(failed(format!(
                        "{program}: uid {uid} has no passwd entry, so no group to run as; name a group in the rule"
                    )));
                }
                Err(e) => return Err(failed(format!("{program}: looking up uid {uid}: {e}"))),
            },
            // Config validation refuses this; kept as a refusal here too, never a
            // child that runs as root while its rule looks like it dropped privileges.
            (None, Some(gid)) => {
                return Err(failed(format!(
                    "{program}: group {gid} without a user would still run as root; name a user in the rule"
                )));
            }
        };
        let cwd = spec.cwd.as_deref().unwrap_or(Path::new("/"));
        let cannot = |e: io::Error| match sys::failed_step(&e) {
            Some(step) => Ending::Refused(format!("refused: {step}; nothing ran")),
            None => match &spec.cwd {
                Some(cwd) => failed(format!("cannot start {program} in {}: {e}", cwd.display())),
                None => failed(format!("cannot start {program}: {e}")),
            },
        };
        let mut setup =
            ChildSetup::new(drop_to, spec.umask.unwrap_or(DEFAULT_UMASK), cwd).map_err(&cannot)?;
        if !spec.sandbox.is_empty() {
            setup = setup.sandbox(spec.sandbox.prepare().map_err(&cannot)?);
        }
        let entry = cgroup.map(JobCgroup::entry).transpose().map_err(|e| {
            Ending::Refused(format!(
                "refused: cannot open the job's cgroup: {e}; nothing ran"
            ))
        })?;
        if let Some(entry) = entry {
            setup = setup.join(entry);
        }
        let home = spec.home.to_string_lossy();
        let env = environment(spec, &home);
        let mut child = sys::spawn(&spec.argv, &env, &setup).map_err(&cannot)?;
        let pid = child.pid;
        let made = child.pidfd.take();
        let pidfd = match use_pidfd.then(|| made.map_or_else(|| sys::pidfd_open(pid), Ok)) {
            None => None,
            Some(Ok(fd)) => Some(fd),
            Some(Err(e)) => {
                if e.raw_os_error() != Some(libc::ENOSYS) {
                    log::warn!("pidfd_open({pid}): {e}; watching the job by waitpid");
                }
                None
            }
        };
        Ok((child, pidfd, setup.into_lent()))
    }

    /// Waits up to `wait` for output or exit, reads what is ready, reaps the child if it
    /// has exited.
    fn step(&mut self, wait: Duration) {
        let mut wait = wait;
        if !self.exited && self.pidfd.is_none() {
            wait = wait.min(NO_PIDFD_SLICE);
        }
        let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(3);
        fds.extend(self.out.fd());
        fds.extend(self.err.fd());
        if !self.exited {
            fds.extend(self.pidfd.as_ref().map(|f| f.as_fd()));
        }
        let mut ready = [false; 3];
        if let Err(e) = sys::poll_readable(&fds, &mut ready, wait) {
            // Should not happen with valid fds; sleep so a repeat cannot spin.
            log::warn!("poll on job {}: {e}", self.pid);
            std::thread::sleep(wait.min(NO_PIDFD_SLICE));
            ready = [true; 3];
        }
        drop(fds);
        let (out_ready, err_ready) = match (self.out.pipe.is_some(), self.err.pipe.is_some()) {
            (true, true) => (ready[0], ready[1]),
            (true, false) => (ready[0], false),
            (false, true) => (false, ready[0]),
            (false, false) => (false, false),
        };
        if out_ready {
            self.out.pump(&mut self.buf, READS_PER_WAKE);
        }
        if err_ready {
            self.err.pump(&mut self.buf, READS_PER_WAKE);
        }
        if !self.exited {
            // Cheap (one waitpid WNOHANG), and also right when there is no pidfd.
            match sys::wait(self.pid, false) {
                Ok(Some(status)) => self.status = Some(status),
                Ok(None) => return,
                // ECHILD: someone else reaped it (SIGCHLD ignored); it is gone.
                Err(e) => log::warn!("waitpid({}): {e}", self.pid),
            }
            self.exited = true;
            self.writers = None;
        }
    }

    /// Reads whatever is ready now, without waiting for EOF.
    fn drain(&mut self) {
        self.out.pump(&mut self.buf, READS_PER_DRAIN);
        self.err.pump(&mut self.buf, READS_PER_DRAIN);
    }

    /// `signal` to the job's group, and to everything in its cgroup.
    fn signal_group(&self, signal: i32) {
        if let Err(e) = sys::kill_group(self.pid, signal)
            && e.raw_os_error() != Some(libc::ESRCH)
        {
            log::warn!("signal {signal} to job group {}: {e}", self.pid);
        }
        if let Some(group) = &self.cgroup {
            group.signal(signal);
        }
    }

    /// True while a process of the job's group or cgroup lives.
    fn running(&self) -> bool {
        sys::group_running(self.pid) || self.cgroup.as_ref().is_some_and(JobCgroup::populated)
    }

    /// SIGKILL to the group and the whole cgroup, and to the child itself in case it
    /// moved to another group.
    fn kill_hard(&mut self) {
        self.signal_group(libc::SIGKILL);
        if !self.exited {
            // Not reaped yet, so the pid is still ours: no risk of hitting a stranger.
            let _ = sys::signal_child(self.pid, libc::SIGKILL);
        }
    }

    /// After the main child is reaped: ends every process left in its group. The group
    /// id cannot be reused while any member (even a zombie) exists, so signalling it
    /// after the reap only ever reaches this job's processes.
    /// `kill_at` is when SIGKILL is due if SIGTERM was already sent. Called once
    /// [`Job::running`] said something is left.
    fn clear_group(&mut self, kill_at: Option<Instant>, killed: bool, grace: Duration) {
        let kill_at = kill_at.unwrap_or_else(|| {
            self.signal_group(libc::SIGTERM);
            later(Instant::now(), grace)
        });
        let mut give_up = killed.then(|| later(Instant::now(), AFTER_KILL_LIMIT));
        loop {
            // Keep reading meanwhile: a grandchild may flush output as it exits.
            self.step(GROUP_SLICE);
            if !self.running() {
                return;
            }
            let now = Instant::now();
            match give_up {
                None if now >= kill_at => {
                    self.signal_group(libc::SIGKILL);
                    give_up = Some(later(now, AFTER_KILL_LIMIT));
                }
                Some(limit) if now >= limit => {
                    log::error!(
                        "job group {} still has live processes {} s after SIGKILL; leaving them",
                        self.pid,
                        AFTER_KILL_LIMIT.as_secs()
                    );
                    return;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::sync::Arc;

    fn spec(argv: &[&str]) -> ExecSpec {
        ExecSpec {
            timeout: Duration::from_secs(10),
            kill_grace: Duration::from_secs(1),
            max_output_bytes: 1 << 20,
            ..ExecSpec::plain(
                argv.iter().map(|s| s.to_string()).collect(),
                PathBuf::from("/root"),
            )
        }
    }

    fn sh(script: &str) -> ExecSpec {
        spec(&["/bin/sh", "-c", script])
    }

    fn go(spec: &ExecSpec) -> Outcome {
        run(spec, None, &AtomicBool::new(false), |_| {})
    }

    /// Not running: no /proc entry, or a zombie waiting for an init that may never reap
    /// it (this test machine's PID 1 does not).
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => {
                let rest = &stat[stat.rfind(')').unwrap() + 1..];
                matches!(rest.split_whitespace().next(), Some("Z" | "X"))
            }
        }
    }

    fn first_pid(out: &Outcome) -> u32 {
        out.stdout.lines().next().unwrap().trim().parse().unwrap()
    }

    /// Times the calling thread has slept so far (`voluntary_ctxt_switches`).
    #[cfg(target_arch = "x86_64")]
    fn sleeps() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap();
        line.trim().parse().unwrap()
    }

    /// On one CPU, the job thread sleeps while the child is between `clone` and `exec`,
    /// then until its exit (a third time if it outlives the first look): not for the
    /// exec to close the report pipe, nor once per output pipe the exit closes. Under
    /// qemu-user (the aarch64 suite) the clone is a fork and the counts are the host's.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_short_job_wakes_its_thread_only_for_its_exec_and_its_exit() {
        sys::stay_on_this_cpu().unwrap();
        let mut fewest = u64::MAX;
        for _ in 0..5 {
            let before = sleeps();
            let out = go(&spec(&["/bin/true"]));
            assert_eq!(out.ending, Ending::Exited(0));
            fewest = fewest.min(sleeps() - before);
        }
        assert!(
            fewest <= 2,
            "the job thread slept {fewest} times for one /bin/true"
        );
    }

    #[test]
    fn echo_exits_zero_with_output() {
        let out = go(&spec(&["/bin/echo", "hi"]));
        assert_eq!(out.ending, Ending::Exited(0));
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.signal, None);
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "");
        assert!(!out.truncated);
        assert!(out.finished_ms >= out.started_ms);
    }

    #[test]
    fn a_job_that_closes_its_output_early_is_not_lasting_before_the_first_look() {
        let mut seen = Vec::new();
        let out = run(
            &spec(&["/bin/sh", "-c", "exec >&- 2>&-; sleep 0.02"]),
            None,
            &AtomicBool::new(false),
            |s| seen.push((s, Instant::now())),
        );
        assert_eq!(out.ending, Ending::Exited(0));
        let (Started::Spawned(_), spawned) = seen[0] else {
            panic!("first report: {:?}", seen[0]);
        };
        // The pipes' end woke the job thread at once; the group is told only later.
        assert_eq!(seen.len(), 2, "{seen:?}");
        let lasting = seen[1].1.duration_since(spawned);
        assert!(lasting >= FIRST_LOOK, "lasting after {lasting:?}");
    }

    #[test]
    fn a_job_still_running_after_the_first_look_reports_its_group() {
        let mut seen = Vec::new();
        let out = run(
            &spec(&["/bin/sleep", "0.3"]),
            None,
            &AtomicBool::new(false),
            |s| seen.push(s),
        );
        assert_eq!(out.ending, Ending::Exited(0));
        let pid = seen[0].pid();
        assert!(pid > 1);
        assert_eq!(seen, [Started::Spawned(pid), Started::Lasting(pid)]);
    }

    #[test]
    fn exit_code_and_stderr() {
        let out = go(&sh("echo oops >&2; exit 3"));
        assert_eq!(out.ending, Ending::Exited(3));
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.stderr, "oops\n");
    }

    #[test]
    fn killed_by_signal() {
        let out = go(&sh("kill -USR1 $$"));
        assert_eq!(out.ending, Ending::Signaled(libc::SIGUSR1));
        assert_eq!(out.signal, Some(libc::SIGUSR1));
        assert_eq!(out.exit_code, None);
    }

    #[test]
    fn environment_is_exactly_base_plus_rule() {
        // SAFETY: set_var races only with environment reads that bypass std's env lock
        // (C getenv); no test in this crate calls into C code that reads the environment.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SUDO_AGENT_TEST_MARKER", "leak")
        };
        let mut s = spec(&["/usr/bin/env"]);
        s.home = PathBuf::from("/home/test");
        s.env = vec![("RULE_VAR".into(), "x y".into())];
        let out = go(&s);
        assert_eq!(out.ending, Ending::Exited(0));
        let mut got: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
        let mut want: Vec<String> = base_env("/home/test")
            .into_iter()
            .chain(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert!(!out.stdout.contains("SUDO_AGENT_TEST_MARKER"));
    }

    #[test]
    fn a_rule_variable_replaces_the_base_value_once() {
        let mut s = spec(&["/usr/bin/env"]);
        s.env = vec![("PATH".into(), "/opt/bin".into()), ("X".into(), "1".into())];
        let out = go(&s).stdout;
        let paths: Vec<&str> = out.lines().filter(|l| l.starts_with("PATH=")).collect();
        assert_eq!(paths, ["PATH=/opt/bin"]);
        assert_eq!(out.lines().count(), base_env("/root").len() + 1, "{out}");
    }

    #[test]
    fn base_env_matches_spec() {
        let env = base_env("/root");
        let keys: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "PATH",
                "LANG",
                "HOME",
                "SYSTEMD_PAGER",
                "SYSTEMD_PAGERSECURE",
                "PAGER",
                "LESSSECURE",
                "SYSTEMD_COLORS",
                "TERM"
            ]
        );
        assert!(env.contains(&("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")));
        assert!(env.contains(&("HOME", "/root")));
    }

    #[test]
    fn stdin_is_dev_null() {
        let t = Instant::now();
        let out = go(&spec(&["/bin/cat"]));
        assert_eq!(out.ending, Ending::Exited(0));
        assert_eq!(out.stdout, "");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn output_is_capped_and_rest_dropped() {
        let mut s = sh("head -c 5000000 /dev/zero; echo done >&2");
        s.max_output_bytes = 1000;
        let t = Instant::now();
        let out = go(&s);
        assert_eq!(out.ending, Ending::Exited(0));
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.truncated);
        // stderr has its own cap and is not truncated.
        assert_eq!(out.stderr, "done\n");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[test]
    fn endless_output_still_times_out() {
        let mut s = spec(&["/usr/bin/yes"]);
        s.max_output_bytes = 1000;
        s.timeout = Duration::from_millis(500);
        let t = Instant::now();
        let out = go(&s);
        assert_eq!(out.ending, Ending::TimedOut);
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.truncated);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn timeout_kills_grandchild() {
        let mut s = sh("sleep 100 & echo $!; sleep 100");
        s.timeout = Duration::from_secs(1);
        let t = Instant::now();
        let out = go(&s);
        assert_eq!(out.ending, Ending::TimedOut);
        assert_eq!(out.signal, Some(libc::SIGTERM));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(gone(first_pid(&out)));
    }

    #[test]
    fn background_grandchild_killed_after_normal_exit() {
        let mut pgid = 0;
        let out = run(
            &sh("sleep 100 & echo $!"),
            None,
            &AtomicBool::new(false),
            |s| pgid = s.pid(),
        );
        assert_eq!(out.ending, Ending::Exited(0));
        assert!(gone(first_pid(&out)));
        assert!(!sys::group_running(pgid));
    }

    #[test]
    fn cancel_stops_job() {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let t = Instant::now();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::SeqCst);
        });
        let out = run(&sh("sleep 100"), None, &cancel, |_| {});
        setter.join().unwrap();
        assert_eq!(out.ending, Ending::Cancelled);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn cancelled_before_start_spawns_nothing() {
        let mut started = false;
        let out = run(&spec(&["/bin/true"]), None, &AtomicBool::new(true), |_| {
            started = true
        });
        assert_eq!(out.ending, Ending::Cancelled);
        assert!(!started);
    }

    #[test]
    fn term_ignoring_child_is_killed_after_grace() {
        let mut s = sh("trap '' TERM; sleep 100 & echo $!; sleep 100; echo not reached");
        s.timeout = Duration::from_millis(500);
        s.kill_grace = Duration::from_millis(1000);
        let t = Instant::now();
        let out = go(&s);
        let took = t.elapsed();
        assert_eq!(out.ending, Ending::TimedOut);
        assert_eq!(out.signal, Some(libc::SIGKILL));
        assert!(took >= Duration::from_millis(1400), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert!(gone(first_pid(&out)));
    }

    #[test]
    fn closed_output_still_times_out() {
        let mut s = sh("exec >&- 2>&-; sleep 100");
        s.timeout = Duration::from_millis(500);
        let t = Instant::now();
        let out = go(&s);
        assert_eq!(out.ending, Ending::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[test]
    fn setsid_escapee_does_not_hang_run() {
        // The escapee keeps our stdout open in a new session; run must still return.
        let s = sh("setsid sleep 3 & sleep 0.2; echo $!");
        let t = Instant::now();
        let out = go(&s);
        assert_eq!(out.ending, Ending::Exited(0));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn spawn_failure_is_reported() {
        let out = go(&spec(&["/nonexistent/prog", "x"]));
        match &out.ending {
            Ending::SpawnFailed(msg) => assert!(msg.contains("/nonexistent/prog"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(out.exit_code, None);

        let out = go(&spec(&["true"]));
        assert!(matches!(out.ending, Ending::SpawnFailed(_)), "{out:?}");
        let out = go(&spec(&[]));
        assert!(matches!(out.ending, Ending::SpawnFailed(_)), "{out:?}");
        let mut s = spec(&["/bin/true"]);
        s.cwd = Some(PathBuf::from("/nonexistent-dir"));
        let out = go(&s);
        match &out.ending {
            Ending::SpawnFailed(msg) => assert!(msg.contains("/nonexistent-dir"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spawn_errors_read_word_for_word_as_before() {
        let ending = |s: &ExecSpec| go(s).ending;
        assert_eq!(
            ending(&spec(&["/nonexistent/prog", "x"])),
            Ending::SpawnFailed(
                "cannot start /nonexistent/prog: No such file or directory (os error 2)".into()
            )
        );
        let mut s = spec(&["/bin/true"]);
        s.cwd = Some(PathBuf::from("/nonexistent-dir"));
        assert_eq!(
            ending(&s),
            Ending::SpawnFailed(
                "cannot start /bin/true in /nonexistent-dir: No such file or directory (os error 2)"
                    .into()
            )
        );
        if sys::euid() != 0 {
            return;
        }
        // A step of the sandbox the kernel refuses (a writable path that is not there)
        // is named, from inside the child.
        let mut s = spec(&["/bin/true"]);
        s.sandbox.read_only = true;
        s.sandbox.writable = vec![PathBuf::from("/nonexistent-writable")];
        assert_eq!(
            ending(&s),
            Ending::Refused(
                "refused: making a writable path writable: No such file or directory (os error 2); nothing ran"
                    .into()
            )
        );
    }

    #[test]
    fn works_without_pidfd() {
        let quiet = AtomicBool::new(false);
        let out = run_with(&sh("echo hi; exit 4"), None, &quiet, |_| {}, false);
        assert_eq!(out.ending, Ending::Exited(4));
        assert_eq!(out.stdout, "hi\n");

        let mut s = sh("exec >&- 2>&-; sleep 100");
        s.timeout = Duration::from_millis(300);
        let t = Instant::now();
        let out = run_with(&s, None, &quiet, |_| {}, false);
        assert_eq!(out.ending, Ending::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn end_group_terms_then_kills_a_foreign_group() {
        let mut leader = std::process::Command::new("/bin/sh")
            .args(["-c", "trap '' TERM; sleep 100 & sleep 100"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        assert!(end_group(pgid, None, Duration::from_millis(500)));
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        assert!(!sys::group_running(pgid));
        leader.wait().unwrap();
        assert!(end_group(pgid, None, Duration::from_millis(500)));
    }

    #[test]
    fn untrusted_program_or_cwd_is_refused_before_spawning() {
        use std::os::unix::fs::PermissionsExt;
        let Some(dir) = crate::sys::files::trusted_test_dir("exec-untrusted") else {
            return;
        };
        let open = dir.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let marker = dir.join("ran");
        let prog = open.join("prog");
        std::fs::write(&prog, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut started = false;
        let out = run(
            &spec(&[prog.to_str().unwrap()]),
            None,
            &AtomicBool::new(false),
            |_| started = true,
        );
        match &out.ending {
            Ending::Refused(why) => {
                assert!(
                    why.contains(&format!("chmod go-w {}", open.display())),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(!started && !marker.exists());
        let mut s = spec(&["/bin/true"]);
        s.cwd = Some(open.clone());
        assert!(matches!(go(&s).ending, Ending::Refused(_)), "cwd");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cwd_is_set() {
        let mut s = spec(&["/bin/pwd"]);
        s.cwd = Some(PathBuf::from("/usr"));
        assert_eq!(go(&s).stdout, "/usr\n");
    }

    #[test]
    fn drops_to_nobody() {
        if sys::euid() != 0 {
            return;
        }
        let nobody = sys::lookup_user("nobody").unwrap().unwrap();
        let mut s = sh("id -u; id -g; id -G");
        s.uid = Some(nobody.uid);
        let out = go(&s);
        assert_eq!(out.ending, Ending::Exited(0), "{out:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], nobody.uid.to_string());
        assert_ne!(lines[0], "0");
        // Primary group of the account, not root's, and no supplementary root groups.
        assert_eq!(lines[1], nobody.gid.to_string());
        assert_eq!(lines[2], nobody.gid.to_string());
        // The child shared our memory until its exec: its drop reached none of our threads.
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let status = std::fs::read_to_string(task.unwrap().path().join("status"));
            let Ok(status) = status else { continue };
            let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            assert_eq!(uid.split_whitespace().nth(2), Some("0"), "{uid}");
        }
    }

    #[test]
    fn own_group_in_the_agents_session_without_a_terminal() {
        let mut pid = 0;
        let out = run(
            // The pause keeps it running past the first look, when its group is reported.
            // Our session as the child reads it: qemu-user fakes an emulated process's
            // own /proc/self/stat, not what another process reads of it.
            &sh(
                "echo $$; cut -d' ' -f5,6,7 /proc/$$/stat; cut -d' ' -f6 /proc/$PPID/stat; sleep 0.1",
            ),
            None,
            &AtomicBool::new(false),
            |s| pid = s.pid(),
        );
        let lines: Vec<&str> = out.stdout.lines().collect();
        // Reads 0 where our session's leader is outside our pid namespace (as in a
        // container): a session of the job's own would still read as its pid.
        let session = lines.get(2).copied().unwrap_or_default();
        assert!(!session.is_empty(), "{lines:?}");
        // No session of its own: that would give it a scheduler autogroup of its own.
        assert_eq!(
            lines,
            [
                pid.to_string(),
                format!("{pid} {session} 0"),
                session.to_owned()
            ]
        );
    }

    #[test]
    fn cwd_and_umask_default_to_root_dir_and_022_and_follow_the_rule() {
        let out = go(&sh("pwd; umask"));
        assert_eq!(out.stdout, "/\n0022\n", "{out:?}");
        let mut s = sh("pwd; umask");
        // A trusted directory: /tmp (sticky, world-writable) is refused as a cwd.
        s.cwd = Some(PathBuf::from("/usr"));
        s.umask = Some(0o077);
        assert_eq!(go(&s).stdout, "/usr\n0077\n");
    }

    #[test]
    fn a_group_without_a_user_is_refused_and_a_closed_cwd_too() {
        let mut s = spec(&["/bin/true"]);
        s.gid = Some(65534);
        match go(&s).ending {
            Ending::SpawnFailed(msg) => assert!(msg.contains("still run as root"), "{msg}"),
            other => panic!("{other:?}"),
        }
        if sys::euid() != 0 {
            return;
        }
        // The directory is entered after the drop: a place the user cannot enter is an
        // error, not a working directory handed over by root.
        let dir = crate::sys::files::test_dir("exec-closed-cwd");
        let nobody = sys::lookup_user("nobody").unwrap().unwrap();
        let mut s = spec(&["/bin/true"]);
        s.uid = Some(nobody.uid);
        s.cwd = Some(dir.clone());
        match go(&s).ending {
            Ending::SpawnFailed(msg) => {
                assert!(msg.contains("Permission denied"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
