//! cgroup v2 for jobs: the agent's subtree, one cgroup per job, its limits, and ending
//! everything in it at once, so a process that left the job's process group (`setsid`,
//! a double fork) still ends with the job.
//!
//! Where the subtree goes (README, "Containment"): the v2 hierarchy is found in
//! `/proc/self/mountinfo` (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid
//! hosts) and the agent's own cgroup in `/proc/self/cgroup`. When the agent is alone in
//! a cgroup of its own (a systemd service with `Delegate=yes`), it takes that cgroup
//! over: it moves itself into the leaf `agent` (v2 lets only a cgroup without
//! processes hand controllers to its children) and makes the `job-<key>` cgroups beside
//! it (see `jobs::contain`). Anywhere else (the root, a login session) it makes a
//! `sudo-agent` child of its cgroup for the jobs, stays where it is, and removes that
//! child when it exits.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cerr::cerr;
use super::mounts;

/// The controllers a rule's `limits` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// A job's resource limits (`limits` in a rule, defaults in `jobs`); `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory, swap included.
    pub memory_max: Option<u64>,
    pub tasks_max: Option<u64>,
    /// Percent of one CPU (200 is two CPUs), as systemd's `CPUQuota=`.
    pub cpu_max_percent: Option<u64>,
}

/// The period `cpu.max` divides: 100 ms, as systemd uses.
const CPU_PERIOD_US: u64 = 100_000;

impl Limits {
    /// The limits set here, else those of `defaults`, key by key.
    pub fn or(self, defaults: Limits) -> Limits {
        Limits {
            memory_max: self.memory_max.or(defaults.memory_max),
            tasks_max: self.tasks_max.or(defaults.tasks_max),
            cpu_max_percent: self.cpu_max_percent.or(defaults.cpu_max_percent),
        }
    }

    /// Each limit set, as (config key, controller it needs).
    pub fn needs(&self) -> Vec<(&'static str, Controller)> {
        self.files()
            .into_iter()
            .map(|(k, c, _, _)| (k, c))
            .collect()
    }

    /// (config key, controller, file, value) for each limit set. `memory.swap.max` is 0
    /// so that a job at its limit is killed instead of pushed into swap; with
    /// `memory.oom.group` the whole job is killed together, not one of its processes.
    fn files(&self) -> Vec<(&'static str, Controller, &'static str, String)> {
        let mut files = Vec::new();
        if let Some(bytes) = self.memory_max {
            let m = ("memory_max", Controller::Memory);
            files.push((m.0, m.1, "memory.max", bytes.to_string()));
            files.push((m.0, m.1, "memory.swap.max", "0".into()));
            files.push((m.0, m.1, "memory.oom.group", "1".into()));
        }
        if let Some(n) = self.tasks_max {
            files.push(("tasks_max", Controller::Pids, "pids.max", n.to_string()));
        }
        if let Some(p) = self.cpu_max_percent {
            let quota = p.saturating_mul(CPU_PERIOD_US / 100);
            let value = format!("{quota} {CPU_PERIOD_US}");
            files.push(("cpu_max_percent", Controller::Cpu, "cpu.max", value));
        }
        files
    }
}

/// Where the agent's jobs get their cgroups.
#[derive(Debug)]
pub struct CgroupTree {
    base: PathBuf,
    /// Controllers the job cgroups have (`base/cgroup.subtree_control` at start-up; in
    /// a `sudo-agent` shared with other agents, theirs too).
    controllers: Vec<Controller>,
    /// Those the config's limits use: all a `sudo-agent` made again is given.
    wanted: Vec<Controller>,
    /// `base` is the `sudo-agent` child the agent made, so it removes it at exit.
    made: bool,
}

impl CgroupTree {
    /// Finds or makes the agent's subtree (see the module notes), handing its children
    /// those of `wanted` the kernel has. An error says why jobs get no cgroups here;
    /// they then run in process groups only.
    pub fn setup(wanted: &[Controller]) -> Result<CgroupTree, String> {
        let (own, own_dir) = locate()?;
        let me = std::process::id();
        let (base, made) = if own != "/" && pids(&own_dir).is_ok_and(|p| p == [me]) {
            let leaf = own_dir.join("agent");
            make_dir(&leaf)?;
            write_file(&leaf.join("cgroup.procs"), "0")
                .map_err(|e| format!("cannot move the agent into {}: {e}", leaf.display()))?;
            (own_dir, false)
        } else {
            let base = own_dir.join("sudo-agent");
            make_dir(&base)?;
            (base, true)
        };
        let tree = CgroupTree {
            controllers: enable(&base, wanted),
            wanted: wanted.to_vec(),
            base,
            made,
        };
        // A `sudo-agent` made earlier may be there on a file system that is read-only
        // now: only a cgroup made and removed shows that jobs can have theirs. A child
        // started in it shows how jobs can be started in theirs.
        let mut probe = tree.make(&format!("probe-{me}"))?;
        let started = probe.entry().map_err(|e| e.to_string());
        if let Err(why) = started.and_then(|dir| super::spawn::check_clone3(dir.as_fd())) {
            log::warn!("jobs will move themselves into their cgroups: {why}");
        }
        probe
            .remove()
            .map_err(|e| format!("cannot remove a cgroup in {}: {e}", tree.base.display()))?;
        Ok(tree)
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn controllers(&self) -> &[Controller] {
        &self.controllers
    }

    /// Makes `base/name` with `limits` written. The caller has checked that their
    /// controllers are here; a failure removes the half-made cgroup.
    pub fn job(&self, name: &str, limits: &Limits) -> Result<JobCgroup, String> {
        let group = self.make(name)?;
        self.limit(&group, limits)?;
        Ok(group)
    }

    /// Makes `base/name`, without limits, its directory and `cgroup.events` open: a job
    /// thread makes the next job's this way ahead of it, and [`CgroupTree::limit`]s it
    /// once that job's rule is known.
    pub fn make(&self, name: &str) -> Result<JobCgroup, String> {
        let dir = self.base.join(name);
        let mut made = fs::create_dir(&dir);
        if self.made
            && made
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        {
            // Another agent that shared `sudo-agent` (tests start many) removed it when
            // it exited, empty: make it again.
            make_dir(&self.base)?;
            enable(&self.base, &self.wanted);
            made = fs::create_dir(&dir);
        }
        made.map_err(|e| format!("cannot create the job's cgroup {}: {e}", dir.display()))?;
        let mut group = JobCgroup::at(dir);
        let opened = open_dir(&group.dir).and_then(|entry| {
            group.entry = Some(entry);
            File::open(group.dir.join("cgroup.events"))
        });
        match opened {
            Ok(events) => {
                group.events = Some(events);
                Ok(group)
            }
            Err(e) => {
                let _ = group.remove();
                Err(format!(
                    "cannot open the job's cgroup {}: {e}",
                    group.dir.display()
                ))
            }
        }
    }

    /// Writes `limits` into `group`; a failure removes it.
    pub fn limit(&self, group: &JobCgroup, limits: &Limits) -> Result<(), String> {
        for (_, _, file, value) in limits.files() {
            if let Err(e) = write_file(&group.dir.join(file), &value) {
                let _ = group.remove();
                return Err(format!(
                    "cannot set {file} to {value} in {}: {e}",
                    group.dir.display()
                ));
            }
        }
        Ok(())
    }

    /// At exit: the `sudo-agent` child goes if it is empty (another agent's jobs may
    /// still use it; a cgroup with children or processes cannot be removed).
    pub fn remove(&self) {
        if self.made {
            let _ = fs::remove_dir(&self.base);
        }
    }
}

/// What a cgroup tree could offer jobs at most, without changing anything (for
/// `check`, which does not run where the agent will): the v2 mount and the controllers
/// its root offers. A controller missing there is missing everywhere.
pub fn preview() -> Result<(PathBuf, Vec<Controller>), String> {
    let mount = mounts::mounts()
        .into_iter()
        .find(|m| m.fstype == "cgroup2" && m.root == "/")
        .ok_or("no cgroup2 file system is mounted (see /proc/self/mountinfo)")?;
    if mount.options.split(',').any(|o| o == "ro") {
        return Err(format!(
            "the cgroup2 mount at {} is read-only",
            mount.point.display()
        ));
    }
    let offered = available(&mount.point);
    Ok((mount.point, offered))
}

/// The agent's own cgroup path and its directory, from `/proc/self/cgroup` (the `0::`
/// line) and the cgroup2 mount in `/proc/self/mountinfo` that holds it.
fn locate() -> Result<(String, PathBuf), String> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let own = own_cgroup(&text)
        .ok_or("the agent is in no cgroup v2 hierarchy (/proc/self/cgroup has no 0:: line)")?;
    let dir = mounts::mounts()
        .into_iter()
        .filter(|m| m.fstype == "cgroup2")
        .find_map(|m| inside(&m.root, own).map(|rest| m.point.join(rest)))
        .ok_or("no cgroup2 file system is mounted (see /proc/self/mountinfo)")?;
    Ok((own.to_owned(), dir))
}

/// The v2 path in `/proc/self/cgroup` text.
fn own_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// `path` relative to a mount whose root is `root`, if the mount holds it.
fn inside<'a>(root: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(root.trim_end_matches('/'))?;
    (rest.is_empty() || rest.starts_with('/')).then(|| rest.trim_start_matches('/'))
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(format!("cannot create cgroup {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Controllers `dir/cgroup.controllers` lists, of those limits use.
fn available(dir: &Path) -> Vec<Controller> {
    listed(dir, "cgroup.controllers")
}

fn listed(dir: &Path, file: &str) -> Vec<Controller> {
    let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
    let words: Vec<&str> = text.split_whitespace().collect();
    Controller::ALL
        .into_iter()
        .filter(|c| words.contains(&c.name()))
        .collect()
}

/// Hands each of `wanted` that `dir` has to its children, one at a time (one refused,
/// say `cpu` beside a realtime task, must not stop the others); returns those the
/// children have now, which in a `sudo-agent` shared with other agents may be more.
fn enable(dir: &Path, wanted: &[Controller]) -> Vec<Controller> {
    let control = dir.join("cgroup.subtree_control");
    for c in available(dir).into_iter().filter(|c| wanted.contains(c)) {
        if let Err(e) = write_file(&control, &format!("+{}", c.name())) {
            log::warn!(
                "cannot enable the {} controller in {}: {e}",
                c.name(),
                dir.display()
            );
        }
    }
    listed(dir, "cgroup.subtree_control")
}

/// One write to a cgroup file (they take a whole value per write).
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// `dir`, open, for `CLONE_INTO_CGROUP` (or the child's own move into it).
fn open_dir(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
}

/// Processes in the cgroup at `dir`.
fn pids(dir: &Path) -> io::Result<Vec<u32>> {
    let text = fs::read_to_string(dir.join("cgroup.procs"))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// A job's cgroup.
#[derive(Debug)]
pub struct JobCgroup {
    dir: PathBuf,
    /// Its `cgroup.events`, open since it was made (not for one a journal named): read
    /// again with one `pread`, not an open, a read and a close each time.
    events: Option<File>,
    /// The directory, open since it was made (or since [`JobCgroup::entry`] opened it),
    /// until [`JobCgroup::again`] hands it on.
    entry: Option<File>,
    /// Set once anything in it was signalled (a freeze and thaw, `cgroup.kill`): it is
    /// not handed to another job then ([`JobCgroup::again`]).
    signalled: Cell<bool>,
}

/// How long the freezer may take to stop every process before signals go out anyway.
const FREEZE_LIMIT: Duration = Duration::from_secs(1);

impl JobCgroup {
    /// The cgroup at `dir`, nothing of it open yet.
    fn at(dir: PathBuf) -> JobCgroup {
        JobCgroup {
            dir,
            events: None,
            entry: None,
            signalled: Cell::new(false),
        }
    }

    /// An existing cgroup (one a journal recorded), if it is still there.
    pub fn open(dir: &Path) -> Option<JobCgroup> {
        dir.join("cgroup.procs")
            .exists()
            .then(|| JobCgroup::at(dir.to_path_buf()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The same cgroup for another job, its directory open again: only one this agent
    /// made (its `cgroup.events` open), empty, not frozen, never signalled, and without
    /// the memory controller (pages charged to it and its OOM kills would count for the
    /// next job; another agent sharing the tree may have turned it on).
    pub fn again(&mut self) -> Option<JobCgroup> {
        // Not one a journal named: its `events` would be read by path, and never kept.
        self.events.as_ref()?;
        let idle = self.events().is_ok_and(|text| {
            let has = |line| text.lines().any(|l| l == line);
            has("populated 0") && has("frozen 0")
        });
        if !idle || self.signalled.get() {
            return None;
        }
        let entry = match self.entry.take() {
            Some(entry) => entry,
            None => open_dir(&self.dir).ok()?,
        };
        // Looked up in the open directory: one name, not the whole path walked again.
        if super::fd::stat_at(entry.as_fd(), "memory.events").is_ok() {
            return None;
        }
        let events = self.events.take()?;
        Some(JobCgroup {
            events: Some(events),
            entry: Some(entry),
            ..JobCgroup::at(self.dir.clone())
        })
    }

    /// The directory, open: the child is started in it, or moves itself in (see
    /// `ChildSetup::join`). Kept open for [`JobCgroup::again`].
    pub fn entry(&mut self) -> io::Result<BorrowedFd<'_>> {
        let entry = match self.entry.take() {
            Some(entry) => entry,
            None => open_dir(&self.dir)?,
        };
        let entry: &File = self.entry.insert(entry);
        Ok(entry.as_fd())
    }

    /// True while a process is in it (zombies are not: they left at exit). A cgroup that
    /// cannot be read (removed) holds nothing.
    pub fn populated(&self) -> bool {
        self.event("populated 1")
    }

    /// Still there and without a process: false once removed (by anyone; its files
    /// answer `ENODEV` then) or once something was moved into it.
    pub fn unused(&self) -> bool {
        self.event("populated 0")
    }

    /// Sends `signal` to every process in it, frozen meanwhile so that none can exit
    /// (and its pid be reused) or fork between the listing and the signal. SIGKILL goes
    /// through [`JobCgroup::kill`].
    pub fn signal(&self, signal: i32) {
        self.signalled.set(true);
        if signal == libc::SIGKILL {
            return self.kill();
        }
        let frozen = self.freeze(true).is_ok();
        for pid in pids(&self.dir).unwrap_or_default() {
            let _ = kill_pid(pid, signal);
        }
        if frozen {
            let _ = self.freeze(false);
        }
    }

    /// SIGKILL to everything in it at once: `cgroup.kill` (Linux 5.14+), else
    /// [`JobCgroup::kill_frozen`].
    pub fn kill(&self) {
        self.signalled.set(true);
        if write_file(&self.dir.join("cgroup.kill"), "1").is_err() {
            self.kill_frozen();
        }
    }

    /// Before `cgroup.kill`: freeze, wait until nothing can fork any more, SIGKILL each
    /// process listed, thaw (the kill lands on thawing).
    fn kill_frozen(&self) {
        let frozen = self.freeze(true).is_ok();
        let limit = Instant::now() + FREEZE_LIMIT;
        while frozen && !self.event("frozen 1") && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
        for pid in pids(&self.dir).unwrap_or_default() {
            let _ = kill_pid(pid, libc::SIGKILL);
        }
        if frozen {
            let _ = self.freeze(false);
        }
    }

    /// How many times the kernel's OOM killer killed a process in it (`memory.events`).
    pub fn oom_kills(&self) -> u64 {
        let text = fs::read_to_string(self.dir.join("memory.events")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Removes the (empty) cgroup.
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_dir(&self.dir)
    }

    fn freeze(&self, on: bool) -> io::Result<()> {
        write_file(&self.dir.join("cgroup.freeze"), if on { "1" } else { "0" })
    }

    fn event(&self, line: &str) -> bool {
        self.events().is_ok_and(|t| t.lines().any(|l| l == line))
    }

    /// `cgroup.events` now: read again from the start, the kernel writes it anew.
    fn events(&self) -> io::Result<String> {
        let Some(file) = &self.events else {
            return fs::read_to_string(self.dir.join("cgroup.events"));
        };
        // "populated 0\nfrozen 0\n": far below this.
        let mut buf = [0u8; 256];
        let n = file.read_at(&mut buf, 0)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// `kill(pid, signal)`, never to pid 0, 1 or a negative (group) number.
fn kill_pid(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 1)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes plain integers; a pid that is gone yields ESRCH.
    cerr(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// For unit tests: an empty cgroup directly under the v2 mount, or `None` (a loud skip)
/// where there is no writable one.
#[cfg(test)]
pub fn test_cgroup(tag: &str) -> Option<JobCgroup> {
    let made = preview().ok().and_then(|(mount, _)| {
        let dir = mount.join(format!("sudo-agent-unit-{tag}-{}", std::process::id()));
        fs::create_dir(&dir).ok().map(|()| JobCgroup::at(dir))
    });
    if made.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no writable cgroup v2 under CI=true"
        );
        eprintln!("SKIPPED: {tag}: no writable cgroup v2 here");
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_line_and_the_mount_that_holds_it() {
        let text = "9:name=systemd:/\n4:memory:/x\n0::/system.slice/sudo-agent.service\n";
        assert_eq!(own_cgroup(text), Some("/system.slice/sudo-agent.service"));
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
        assert_eq!(inside("/", "/a/b"), Some("a/b"));
        assert_eq!(inside("/", "/"), Some(""));
        assert_eq!(inside("/machine.slice", "/machine.slice/x"), Some("x"));
        assert_eq!(inside("/machine.slice", "/machine.slicer"), None);
        assert_eq!(inside("/a", "/b"), None);
    }

    #[test]
    fn limits_become_cgroup_files() {
        let limits = Limits {
            memory_max: Some(64 << 20),
            tasks_max: Some(20),
            cpu_max_percent: Some(150),
        };
        let files: Vec<(&str, String)> = limits
            .files()
            .into_iter()
            .map(|(_, _, f, v)| (f, v))
            .collect();
        assert_eq!(
            files,
            [
                ("memory.max", "67108864".to_string()),
                ("memory.swap.max", "0".into()),
                ("memory.oom.group", "1".into()),
                ("pids.max", "20".into()),
                ("cpu.max", "150000 100000".into()),
            ]
        );
        let rule = Limits {
            tasks_max: Some(5),
            ..Limits::default()
        };
        let merged = rule.or(limits);
        assert_eq!(merged.tasks_max, Some(5));
        assert_eq!(merged.memory_max, Some(64 << 20));
        assert_eq!(
            rule.needs(),
            [("tasks_max", Controller::Pids)],
            "only what is set"
        );
    }

    fn sleeper_in(group: &JobCgroup) -> std::process::Child {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let procs = OpenOptions::new()
            .write(true)
            .open(group.dir.join("cgroup.procs"))
            .unwrap();
        let fd = procs.as_raw_fd();
        let mut cmd = std::process::Command::new("/bin/sh");
        // The shell's own child escapes the process group; both stay in the cgroup.
        cmd.args(["-c", "setsid sleep 60 & exec sleep 60"]);
        // SAFETY: only write(2) on a descriptor that stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                cerr(libc::write(fd, b"0".as_ptr().cast(), 1))?;
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids(&group.dir).unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "sleepers did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    #[test]
    fn a_child_starts_in_its_cgroup_and_the_start_up_check_passes() {
        use std::io::Read;
        let Some(mut group) = test_cgroup("start") else {
            return;
        };
        let dir = group.entry().unwrap();
        super::super::spawn::check_clone3(dir.as_fd()).unwrap();
        let setup = crate::sys::ChildSetup::new(None, 0o022, Path::new("/"))
            .unwrap()
            .join(dir.as_fd());
        let argv = ["/bin/cat".to_owned(), "/proc/self/cgroup".to_owned()];
        let child = crate::sys::spawn(&argv, &[], &setup).unwrap();
        drop(child.writers); // else no EOF
        let mut seen = String::new();
        File::from(child.stdout).read_to_string(&mut seen).unwrap();
        use std::os::fd::AsRawFd;
        // The pidfd made with it (`CLONE_PIDFD`) is the child's: readable once it exits.
        // None only where there is no clone3 (qemu-user: the child moved itself in).
        match &child.pidfd {
            Some(pidfd) => {
                let mut poll = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd, alive for the call.
                assert_eq!(unsafe { libc::poll(&mut poll, 1, 5000) }, 1, "the exit");
            }
            None => assert!(!super::super::spawn::uses_clone3(), "clone3 gave no pidfd"),
        }
        assert!(
            crate::sys::wait(child.pid, true)
                .unwrap()
                .unwrap()
                .success()
        );
        let name = group.dir.file_name().unwrap().to_str().unwrap();
        assert!(
            seen.lines()
                .any(|l| l.starts_with("0::") && l.ends_with(name)),
            "{seen}"
        );
        group.remove().unwrap();
    }

    #[test]
    fn a_cgroup_serves_another_job_only_if_empty_thawed_and_never_signalled() {
        let made = |tag: &str| {
            let mut group = test_cgroup(tag)?;
            group.events = Some(File::open(group.dir.join("cgroup.events")).unwrap());
            Some(group)
        };
        let Some(mut fresh) = made("again") else {
            return;
        };
        let mut again = fresh.again().expect("an empty, thawed cgroup serves again");
        assert!(again.entry.is_some() && again.events.is_some());
        assert!(fresh.again().is_none(), "handed on twice");
        // A job that had to signal what was left in it.
        again.signal(libc::SIGTERM);
        assert!(again.again().is_none(), "a signalled cgroup served again");
        again.remove().unwrap();

        // A root job can freeze its own cgroup and leave it so.
        let mut frozen = made("again-frozen").unwrap();
        frozen.freeze(true).unwrap();
        assert!(frozen.again().is_none(), "a frozen cgroup served again");
        frozen.remove().unwrap();

        // Busy: a process moved in.
        let mut busy = made("again-busy").unwrap();
        let mut child = sleeper_in(&busy);
        let used = busy.again().is_some();
        busy.kill();
        child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while busy.remove().is_err() {
            assert!(Instant::now() < deadline, "the sleeper's cgroup stays busy");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!used, "a cgroup with a process in it served again");
    }

    #[test]
    fn a_cgroup_is_ended_whole_by_cgroup_kill_and_by_freezing() {
        let Some(group) = test_cgroup("kill") else {
            return;
        };
        for by_freezing in [false, true] {
            let mut child = sleeper_in(&group);
            assert!(group.populated());
            if by_freezing {
                group.kill_frozen();
            } else {
                group.kill();
            }
            child.wait().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while group.populated() {
                assert!(Instant::now() < deadline, "still populated ({by_freezing})");
                std::thread::sleep(Duration::from_millis(10));
            }
            // Not left frozen: a new process runs there.
            assert!(group.event("frozen 0"));
        }
        let mut child = sleeper_in(&group);
        group.signal(libc::SIGTERM);
        child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while group.populated() {
            assert!(Instant::now() < deadline, "TERM did not reach the escapee");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(group.oom_kills(), 0);
        group.remove().unwrap();
        assert!(JobCgroup::open(&group.dir).is_none());
    }
}
