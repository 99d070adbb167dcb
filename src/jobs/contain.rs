//! What contains a job beyond its process group, decided once per agent: the cgroup
//! tree `serve` sets up (`sys::cgroup`) and what the kernel gives a sandbox (probed by
//! running `/bin/true` in one). Each job asks here for its cgroup; `check`, the start-up
//! log, `/health` and `/metrics` report what is in force.

use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::record::new_key;
use crate::config::JobsConfig;
use crate::policy::Rule;
use crate::sys::{self, CgroupTree, Controller, JobCgroup, Limits, Sandbox};

/// `/health`'s `containment`: the directory job cgroups go in (null: process groups
/// only) and whether each other layer is in force.
#[derive(Debug, Clone, Serialize)]
pub struct Layers {
    pub cgroup: Option<String>,
    pub memory: bool,
    pub pids: bool,
    pub cpu: bool,
    pub mount_namespace: bool,
    pub network_namespace: bool,
}

impl Layers {
    /// Each layer, 1 when in force: `/metrics`' `sudo_agent_containment{layer}`.
    pub fn gauges(&self) -> [(&'static str, bool); 6] {
        [
            ("cgroup", self.cgroup.is_some()),
            ("memory", self.memory),
            ("pids", self.pids),
            ("cpu", self.cpu),
            ("mount_namespace", self.mount_namespace),
            ("network_namespace", self.network_namespace),
        ]
    }
}

/// The containment jobs get here.
pub struct Containment {
    /// Set up by `serve` only.
    tree: Option<CgroupTree>,
    /// Where job cgroups go (for `check`: the v2 mount, the most they could get) and
    /// the controllers they have; else why jobs get no cgroup.
    cgroups: Result<(PathBuf, Vec<Controller>), String>,
    /// Whether the kernel gives a mount namespace (`read_only`, `private_tmp`) and a
    /// network namespace; else why not.
    mount_ns: Result<(), String>,
    net_ns: Result<(), String>,
}

static AGENT: OnceLock<Containment> = OnceLock::new();

/// The advice for a controller jobs do not have.
const CONTROLLER_HINT: &str = "give the agent a cgroup v2 with it: Delegate=yes under systemd, \
    and where cgroup v1 holds it, boot with systemd.unified_cgroup_hierarchy=1";

/// `serve`, before any job (a job before it would fix [`agent`]'s default for good):
/// sets up the agent's cgroup tree and probes the sandbox. Job cgroups get only the
/// controllers the limits of `rules` and `jobs` use: a memory cgroup made and torn down
/// for every job that sets no limit would cost each job its set-up for nothing.
pub fn init(rules: &[Rule], jobs: &JobsConfig) -> &'static Containment {
    AGENT.get_or_init(|| {
        let mut wanted = jobs.limits.needs();
        wanted.extend(rules.iter().flat_map(|r| r.limits.needs()));
        let wanted: Vec<Controller> = wanted.into_iter().map(|(_, c)| c).collect();
        let tree = CgroupTree::setup(&wanted);
        let cgroups = match &tree {
            Ok(t) => Ok((t.base().to_path_buf(), t.controllers().to_vec())),
            Err(why) => Err(why.clone()),
        };
        Containment {
            tree: tree.ok(),
            cgroups,
            ..probed()
        }
    })
}

/// What jobs run in now: [`init`]'s, else (a unit test, a command other than `serve`)
/// no cgroups, and a sandbox left to the child to set up or refuse.
pub fn agent() -> &'static Containment {
    AGENT.get_or_init(|| Containment {
        tree: None,
        cgroups: Err("the agent set up no cgroup tree".into()),
        mount_ns: Ok(()),
        net_ns: Ok(()),
    })
}

/// For `check`, which runs elsewhere than the agent will: what the v2 hierarchy offers
/// at most, and what this kernel gives a sandbox. Changes nothing.
pub fn preview() -> Containment {
    Containment {
        cgroups: sys::cgroup_preview(),
        ..probed()
    }
}

fn probed() -> Containment {
    let mounts = Sandbox {
        read_only: true,
        private_tmp: true,
        ..Sandbox::default()
    };
    // The namespace made ahead and lent to jobs (`setns`), as `no_pin` jobs get it; kept,
    // so the first such job enters it.
    let entered = Sandbox {
        read_only: true,
        ..Sandbox::default()
    };
    let network = Sandbox {
        private_network: true,
        ..Sandbox::default()
    };
    Containment {
        tree: None,
        cgroups: Err(String::new()),
        mount_ns: sys::probe_sandbox(&mounts).and_then(|()| sys::probe_sandbox(&entered)),
        net_ns: sys::probe_sandbox(&network),
    }
}

/// The cgroup for job `id` with its limits, or `Ok(None)` where jobs get none (a
/// notify command, or no cgroup tree and no limits asked for: the process group only).
/// `ahead` is the one kept for it (made ahead, or left empty by an earlier job) under
/// its id's second half, if any. If that one cannot be used (removed, or a process was
/// moved into it), one is made now under the whole id, since the key's may still be
/// there; `left_by` and `remove_unused` know both names. A limit no controller here
/// can enforce refuses the job.
pub fn job_cgroup(
    id: Option<&str>,
    ahead: Option<Spare>,
    limits: &Limits,
) -> Result<Option<JobCgroup>, String> {
    let agent = agent();
    let made = match agent.limits_refusal(limits) {
        Some(why) => Err(why),
        None => match (&agent.tree, id) {
            (Some(tree), Some(id)) => {
                match ahead.filter(|s| key(&s.id) == key(id)).map(Spare::take) {
                    Some(Some(group)) => tree.limit(&group, limits).map(|()| Some(group)),
                    Some(None) => tree.job(&format!("job-{id}"), limits).map(Some),
                    None => tree.job(&name(id), limits).map(Some),
                }
            }
            _ => return Ok(None),
        },
    };
    made.map_err(|why| format!("refused: {why}; nothing ran"))
}

/// How many empty job cgroups are kept for the next jobs: one serves jobs that come
/// one after another, the second two callers at once.
const SPARES: usize = 2;

/// The next job's id, made ahead by a job thread after its own job was answered, with
/// an empty job cgroup kept for it where jobs get one: made then too, or the one a job
/// just left, kept rather than removed (see [`Emptied`]). The cgroup is named
/// `job-<key>`, and the id of every job that runs in it ends with that key ([`next_id`];
/// the first half is new for each id, so ids still differ at a glance): the `mkdir`,
/// the `rmdir` and the opening of its directory and `cgroup.events` are then off the
/// jobs' path, and the journal's ids still name the cgroup each job ran in. The whole
/// id is known ahead so that its result file can be named ahead too
/// (`ResultsDir::prepare`). The cgroup is removed, off the loop thread, when dropped
/// unused.
#[derive(Debug)]
pub struct Spare {
    /// The whole id; its second half is the cgroup's key.
    id: String,
    group: Option<JobCgroup>,
}

static MADE_AHEAD: Mutex<Vec<Spare>> = Mutex::new(Vec::new());

fn made_ahead() -> MutexGuard<'static, Vec<Spare>> {
    MADE_AHEAD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Cgroups made ahead whose job never took them (cancelled while queued, refused):
/// dropped on the loop thread, they wait here for a job thread's [`Spare::tend`], so
/// the loop never makes a cgroup call. At most [`SPARES`]: only `tend` makes spares,
/// and it empties this list first.
static DROPPED: Mutex<Vec<JobCgroup>> = Mutex::new(Vec::new());

fn dropped() -> MutexGuard<'static, Vec<JobCgroup>> {
    DROPPED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes the cgroups dropped unused; taken out of the list first, so its lock is not
/// held through the `rmdir`s.
fn remove_dropped() {
    let unused = std::mem::take(&mut *dropped());
    for group in unused {
        remove_cgroup(&group);
    }
}

/// The id for a new job, made ahead when one was (with the cgroup kept for it, if
/// any), else now.
pub fn next_id() -> Result<(String, Option<Spare>), getrandom::Error> {
    let spare = made_ahead().pop();
    match spare {
        Some(spare) => Ok((spare.id.clone(), Some(spare))),
        None => Ok((super::new_id()?, None)),
    }
}

/// The ids made ahead and not yet given out, for their result files.
pub fn ids_ahead() -> Vec<String> {
    made_ahead().iter().map(|spare| spare.id.clone()).collect()
}

impl Spare {
    /// Its cgroup, unless someone removed it meanwhile (an agent sharing the tree at its
    /// start-up, see [`remove_unused`]) or moved a process into it (a root job can):
    /// the job then gets a new one, and this one goes (if it can) at the next `tend`.
    fn take(mut self) -> Option<JobCgroup> {
        match self.group.take() {
            Some(group) if group.unused() => Some(group),
            stale => {
                self.group = stale;
                None
            }
        }
    }

    /// On a job thread once its job was answered: removes those dropped unused, then
    /// makes the next job's id (and cgroup, where jobs get one) if fewer are kept than
    /// it wants: [`SPARES`] where jobs get cgroups that are not kept, else one (where
    /// emptied cgroups are kept, each job leaves one: making a second ahead would only
    /// have a job that ends while two wait remove its own). Quiet on failure: that job
    /// makes its own and reports.
    ///
    /// `left_one`: this thread's job left its cgroup kept ([`Emptied::keep_for_next`]). Then
    /// none is made, even if the kept list is empty now: the answer is out, so the next
    /// job may already have taken that one, and will leave it again.
    pub fn tend(left_one: bool) {
        remove_dropped();
        let tree = agent().tree.as_ref();
        let wanted = match tree {
            Some(tree) if !keeping(tree) => SPARES,
            _ => 1,
        };
        if left_one || made_ahead().len() >= wanted {
            return;
        }
        let Ok(id) = super::new_id() else {
            return;
        };
        let group = match tree.map(|tree| tree.make(&name(&id))) {
            Some(Ok(group)) => Some(group),
            Some(Err(_)) => return,
            None => None,
        };
        let spare = Spare { id, group };
        let mut kept = made_ahead();
        if kept.len() < SPARES {
            kept.push(spare);
        } else {
            // Another thread made one meanwhile: this one goes, after the lock.
            drop(kept);
            drop(spare);
        }
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            dropped().push(group);
        }
    }
}

/// The cgroup job `id` had in the tree the agent uses now, if it is still there (a job
/// the previous agent did not see end; see `journal`'s recovery). One named by the
/// whole id is looked for first: a job gets one when its key's was taken (see
/// [`job_cgroup`]), and so did every job of an agent from before cgroups were kept.
pub fn left_by(id: &str) -> Option<JobCgroup> {
    let tree = agent().tree.as_ref()?;
    [format!("job-{id}"), name(id)]
        .iter()
        .find_map(|name| JobCgroup::open(&tree.base().join(name)))
}

/// An empty job cgroup no journal names is removed at start-up only this long after it
/// was made: a younger one may be another agent's (sharing the tree), about to be used.
const UNNAMED_AGE: Duration = Duration::from_secs(10);

/// At start-up: removes the empty job cgroups a killed agent left behind: those of jobs
/// the journal saw end (kept for a next job, or killed between a job's answer and its
/// thread's `rmdir`, see [`Emptied`]), and those it does not name once [`UNNAMED_AGE`] old (made ahead, see
/// [`Spare`], or a `no_pin` job's whose submission was not yet written). `ended` says,
/// of a cgroup's key (the second half of the ids of the jobs that ran in it; a whole id
/// for an older agent's), whether the journal saw every job it names end (`None`: it
/// names none). A cgroup with a process in it cannot be removed and stays.
pub fn remove_unused(ended: impl Fn(&str) -> Option<bool>) {
    let Some(tree) = agent().tree.as_ref() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(tree.base()) else {
        return;
    };
    let old = |entry: &std::fs::DirEntry| {
        let made = entry.metadata().and_then(|m| m.modified());
        made.is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= UNNAMED_AGE))
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(key) = name.to_str().and_then(|n| n.strip_prefix("job-")) else {
            continue;
        };
        let unused = match ended(key) {
            Some(ended) => ended,
            None => old(&entry),
        };
        if unused && let Some(group) = JobCgroup::open(&entry.path()) {
            // Busy (a process in it) is not a failure here.
            let _ = group.remove();
        }
    }
}

/// How many characters of a job id name its cgroup: the key of [`Spare`].
const KEY_LEN: usize = 16;

/// The second half of a job id: its cgroup's key.
fn key(id: &str) -> &str {
    id.get(id.len().saturating_sub(KEY_LEN)..).unwrap_or(id)
}

/// The cgroup of job `id`, or of the jobs of a key.
fn name(id: &str) -> String {
    format!("job-{}", key(id))
}

/// A job's cgroup once nothing is left in it, kept for the next job or removed when
/// dropped. A job thread drops it after handing the result over, so the `rmdir` (and
/// the kernel's release work it starts) is not between the job's end and its answer.
/// Until then it is listed, so that an agent exiting first still removes it
/// ([`RemoveTree`]).
///
/// It is kept (as a [`Spare`], if fewer are kept) only where job cgroups get no
/// controller: with none, nothing is charged to it or counted in it that could outlive
/// its job (memory, an OOM kill). And only as `JobCgroup::again` allows: empty, not
/// frozen, never signalled by its job. Any other is removed, and a new one made.
#[derive(Debug)]
pub struct Emptied {
    group: JobCgroup,
    /// Kept for the next job ([`Emptied::keep_for_next`]): its drop removes nothing.
    kept: bool,
}

/// Directories of the [`Emptied`] cgroups not yet removed (one per job thread at most).
static EMPTIED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn emptied() -> MutexGuard<'static, Vec<PathBuf>> {
    EMPTIED.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Emptied {
    pub fn new(group: JobCgroup) -> Emptied {
        emptied().push(group.dir().to_path_buf());
        Emptied { group, kept: false }
    }

    /// Kept for the next job where it may be (`Ok`; or one another thread kept
    /// meanwhile is, and this one goes at the next [`Spare::tend`]), else handed back
    /// to be removed when dropped. A job thread asks before the loop has the result, so
    /// that a caller who sends its next job on the answer finds the cgroup kept; the
    /// `rmdir` of one not kept waits until the answer is out.
    pub fn keep_for_next(mut self) -> Result<(), Emptied> {
        if self.keep().is_none() {
            return Err(self);
        }
        self.kept = true;
        emptied().retain(|dir| dir != self.group.dir());
        Ok(())
    }

    /// It again, for the next job, if it may be kept and fewer than [`SPARES`] are.
    fn keep(&mut self) -> Option<()> {
        let tree = agent().tree.as_ref()?;
        if !keeping(tree) || made_ahead().len() >= SPARES {
            return None;
        }
        let key = self
            .group
            .dir()
            .file_name()?
            .to_str()?
            .strip_prefix("job-")?;
        // One named by a whole id (see `job_cgroup`) has no key to give a next id.
        if key.len() != KEY_LEN {
            return None;
        }
        let spare = Spare {
            id: format!("{}{key}", new_key().ok()?),
            group: Some(self.group.again()?),
        };
        let mut spares = made_ahead();
        if spares.len() < SPARES {
            spares.push(spare);
            return Some(());
        }
        // Another thread kept one meanwhile: this one goes (as one dropped unused, see
        // `remove_dropped`), after the lock.
        drop(spares);
        drop(spare);
        Some(())
    }
}

/// Whether emptied job cgroups are kept for the next jobs: where they get no controller.
fn keeping(tree: &CgroupTree) -> bool {
    tree.controllers().is_empty()
}

impl Drop for Emptied {
    fn drop(&mut self) {
        if !self.kept {
            remove_cgroup(&self.group);
            emptied().retain(|dir| dir != self.group.dir());
        }
    }
}

/// Removes an empty job cgroup; one that cannot be is logged (processes that survived
/// SIGKILL keep it, see `exec::run`).
pub fn remove_cgroup(group: &JobCgroup) {
    match group.remove() {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            log::warn!("cannot remove cgroup {}: {e}", group.dir().display());
        }
        _ => {}
    }
}

/// Removes the agent's own part of the cgroup tree, if empty, when dropped: `serve`
/// holds one from [`init`] on, so that every way out of it cleans up. Job cgroups made
/// ahead or that a job thread has not removed yet go first.
pub struct RemoveTree;

impl Drop for RemoveTree {
    fn drop(&mut self) {
        // Dropped, they join the list that `remove_dropped` empties.
        let made = std::mem::take(&mut *made_ahead());
        drop(made);
        remove_dropped();
        for dir in std::mem::take(&mut *emptied()) {
            if let Some(group) = JobCgroup::open(&dir) {
                remove_cgroup(&group);
            }
        }
        if let Some(tree) = AGENT.get().and_then(|c| c.tree.as_ref()) {
            tree.remove();
        }
    }
}

impl Containment {
    fn has(&self, controller: Controller) -> bool {
        self.cgroups
            .as_ref()
            .is_ok_and(|(_, have)| have.contains(&controller))
    }

    /// Why `limits` cannot be enforced here, if so.
    fn limits_refusal(&self, limits: &Limits) -> Option<String> {
        let (key, controller) = limits.needs().into_iter().find(|(_, c)| !self.has(*c))?;
        let place = match &self.cgroups {
            Ok((dir, _)) => format!("the cgroups under {} do not have it", dir.display()),
            Err(why) => format!("jobs get no cgroup here ({why})"),
        };
        Some(format!(
            "limits.{key} needs the {} controller, but {place}; {CONTROLLER_HINT}",
            controller.name()
        ))
    }

    /// Why `sandbox` cannot be given here, if so.
    fn sandbox_refusal(&self, sandbox: &Sandbox) -> Option<String> {
        let needs = [
            (sandbox.mounts(), "a mount namespace", &self.mount_ns),
            (sandbox.private_network, "a network namespace", &self.net_ns),
        ];
        needs.into_iter().find_map(|(needed, what, got)| match got {
            Err(why) if needed => Some(format!(
                "its sandbox needs {what}, which this kernel refuses ({why})"
            )),
            _ => None,
        })
    }

    /// Rules (and `jobs.limits`) whose jobs would be refused here, one line each, for
    /// `check` and the start-up log.
    pub fn warnings(&self, rules: &[Rule], jobs: &JobsConfig) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = self.limits_refusal(&jobs.limits) {
            out.push(format!("jobs.limits: every job will be refused: {why}"));
        }
        for rule in rules {
            let why = self
                .limits_refusal(&rule.limits)
                .or_else(|| self.sandbox_refusal(&rule.sandbox));
            if let Some(why) = why {
                let no_pin = if rule.no_pin && rule.sandbox.read_only {
                    " (no_pin, so read-only)"
                } else {
                    ""
                };
                out.push(format!(
                    "rule `{}`{no_pin}: its jobs will be refused: {why}",
                    rule.name
                ));
            }
        }
        out
    }

    /// What is in force, for `/health` and `/metrics`.
    pub fn layers(&self) -> Layers {
        Layers {
            cgroup: self
                .cgroups
                .as_ref()
                .ok()
                .map(|(d, _)| d.display().to_string()),
            memory: self.has(Controller::Memory),
            pids: self.has(Controller::Pids),
            cpu: self.has(Controller::Cpu),
            mount_namespace: self.mount_ns.is_ok(),
            network_namespace: self.net_ns.is_ok(),
        }
    }

    /// One line for the start-up log and `check`: [`Containment::layers`], and why
    /// jobs get no cgroup if they do not.
    pub fn describe(&self) -> String {
        let layers = serde_json::to_string(&self.layers()).unwrap_or_default();
        match &self.cgroups {
            Ok(_) => layers,
            Err(why) => format!("{layers}; jobs run in process groups only: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// [`RemoveTree`] takes every listed cgroup: one test at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn listed(dir: &Path) -> bool {
        emptied().iter().any(|d| d == dir)
    }

    /// A test cgroup as a job thread holds it once its job ended (with the lock that
    /// keeps the other test out meanwhile), or `None` (a loud skip).
    fn emptied_cgroup(tag: &str) -> Option<(MutexGuard<'static, ()>, PathBuf, Emptied)> {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let group = sys::test_cgroup(tag)?;
        let dir = group.dir().to_path_buf();
        let emptied = Emptied::new(group);
        assert!(dir.exists() && listed(&dir));
        Some((serial, dir, emptied))
    }

    #[test]
    fn an_emptied_cgroup_goes_when_dropped_and_leaves_the_list() {
        let Some((_serial, dir, emptied)) = emptied_cgroup("emptied") else {
            return;
        };
        drop(emptied);
        assert!(!dir.exists(), "the job's cgroup was left behind");
        assert!(!listed(&dir));
    }

    #[test]
    fn an_emptied_cgroup_where_none_are_kept_says_so_and_goes_once_dropped() {
        // No cgroup tree here (a unit test), so nothing is kept: the job thread is told,
        // and makes the next job's ahead (`Spare::tend`).
        let Some((_serial, dir, emptied)) = emptied_cgroup("released") else {
            return;
        };
        let not_kept = emptied.keep_for_next();
        assert!(not_kept.is_err(), "said kept where nothing is kept");
        assert!(dir.exists(), "removed before the answer was out");
        drop(not_kept);
        assert!(!dir.exists(), "the job's cgroup was left behind");
        assert!(!listed(&dir));
    }

    #[test]
    fn an_agent_exiting_before_a_job_thread_removed_its_cgroup_removes_it() {
        let Some((_serial, dir, emptied)) = emptied_cgroup("exiting") else {
            return;
        };
        // The job thread never got to drop it: the process was on its way out.
        std::mem::forget(emptied);
        drop(RemoveTree);
        assert!(!dir.exists(), "the job's cgroup outlived the agent");
        assert!(!listed(&dir));
    }

    #[test]
    fn a_cgroup_made_ahead_and_dropped_unused_goes_at_the_next_tend_not_on_the_dropping_thread() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(group) = sys::test_cgroup("ahead-dropped") else {
            return;
        };
        let dir = group.dir().to_path_buf();
        // The loop thread drops it with a job cancelled while queued: no cgroup call.
        drop(Spare {
            id: "0".repeat(32),
            group: Some(group),
        });
        let kept = dir.exists();
        Spare::tend(false);
        assert!(kept, "removed on the thread that dropped it");
        assert!(!dir.exists(), "left by the job thread's tend");
        assert!(dropped().is_empty());
    }

    #[test]
    fn a_cgroup_made_ahead_is_not_used_once_removed_or_once_something_moved_in() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let spare = |group| Spare {
            id: "0".repeat(32),
            group: Some(group),
        };
        let Some(fresh) = sys::test_cgroup("ahead-fresh") else {
            return;
        };
        let dir = fresh.dir().to_path_buf();
        let taken = spare(fresh)
            .take()
            .expect("an empty cgroup made ahead is used");
        remove_cgroup(&taken);
        assert!(!dir.exists());

        let gone = sys::test_cgroup("ahead-gone").unwrap();
        std::fs::remove_dir(gone.dir()).unwrap();
        assert!(spare(gone).take().is_none(), "a removed cgroup was used");

        // A process moved in meanwhile (a root job can): not this job's to run beside.
        let busy = sys::test_cgroup("ahead-busy").unwrap();
        let dir = busy.dir().to_path_buf();
        let mut sleeper = std::process::Command::new("/bin/sleep")
            .arg("60")
            .spawn()
            .unwrap();
        std::fs::write(dir.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
        let used = spare(busy).take().is_some();
        let kept = dir.exists();
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::remove_dir(&dir).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Spare::tend(false);
        assert!(!used, "a cgroup with a stranger in it was used");
        assert!(
            kept,
            "a cgroup with a process in it cannot have been removed"
        );
        assert!(!dir.exists());
    }
}
