//! The job table: queue, running set and bounded history, owned by the event-loop
//! thread. Each running job has its own thread (`exec::run`), which journals it, writes
//! the result file and reports back through a channel plus the loop's `mio::Waker`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::exec::{self, Ending, ExecSpec, Outcome};
use super::journal::{Journal, Recovered};
use super::notify::NotifyCommand;
use super::record::{HISTORY_BYTES, JobRecord, Status};
use super::results::ResultsDir;
use crate::audit;
use crate::config::JobsConfig;
use crate::sys::clock;
use mio::Waker;

/// Stack for a job thread: it only polls pipes; output buffers live on the heap.
const JOB_STACK: usize = 256 * 1024;

/// What the API hands over once a request is authenticated and matched.
#[derive(Debug)]
pub struct NewJob {
    /// The request as the caller wrote it (for the record and the audit log).
    pub command: String,
    pub rule: String,
    pub spec: ExecSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelError {
    NotFound,
    AlreadyFinished(Status),
}

struct Entry {
    record: JobRecord,
    /// The record as JSON while a connection is still sending it (see
    /// [`Jobs::answer_slot`]); reset whenever the record changes.
    answer: Weak<Vec<u8>>,
    /// Held while queued; moved into the job thread when it starts.
    pending: Option<ExecSpec>,
    cancel: Arc<AtomicBool>,
    /// The submitter was answered 202: the notify command runs when the job ends.
    detached: bool,
}

/// What every job thread needs from the table.
struct Shared {
    tx: Sender<JobRecord>,
    waker: Arc<Waker>,
    results: Arc<ResultsDir>,
    journal: Journal,
    /// The agent is stopping: a job stopped now ends `interrupted`, not `cancelled`.
    stopping: AtomicBool,
}

pub struct Jobs {
    cfg: JobsConfig,
    entries: HashMap<String, Entry>,
    queue: VecDeque<String>,
    /// Finished ids, oldest first: the history bound evicts from the front.
    finished: VecDeque<String>,
    /// What finished records hold ([`JobRecord::weight`]).
    kept_bytes: usize,
    running: usize,
    rx: Receiver<JobRecord>,
    shared: Arc<Shared>,
    notify: Option<NotifyCommand>,
}

impl Jobs {
    /// The table starts with the journal's history; process groups of jobs the previous
    /// agent left running are ended on a thread of their own (TERM, grace, KILL).
    pub fn new(
        cfg: JobsConfig,
        results: Arc<ResultsDir>,
        waker: Arc<Waker>,
        journal: Journal,
        recovered: Recovered,
        notify: Option<NotifyCommand>,
    ) -> Jobs {
        let (tx, rx) = channel();
        let mut jobs = Jobs {
            cfg,
            entries: HashMap::new(),
            queue: VecDeque::new(),
            finished: VecDeque::new(),
            kept_bytes: 0,
            running: 0,
            rx,
            shared: Arc::new(Shared {
                tx,
                waker,
                results,
                journal,
                stopping: AtomicBool::new(false),
            }),
            notify,
        };
        for record in recovered.records {
            jobs.finish(record);
        }
        if !recovered.orphans.is_empty() {
            let grace = Duration::from_secs(cfg.kill_grace_s);
            let orphans = recovered.orphans;
            let spawned = std::thread::Builder::new()
                .name("orphans".into())
                .stack_size(JOB_STACK)
                .spawn(move || {
                    for orphan in orphans {
                        log::warn!("ending {orphan} left by interrupted job {}", orphan.id);
                        if !exec::end_group(orphan.pgid, orphan.cgroup.as_deref(), grace) {
                            log::error!("{orphan} of job {} survived SIGKILL", orphan.id);
                        }
                    }
                });
            if let Err(err) = spawned {
                log::error!("cannot start a thread to end leftover job processes: {err}");
            }
        }
        jobs
    }

    /// Whether one more job can start or wait in the queue.
    pub fn has_room(&self) -> bool {
        self.running < self.cfg.max_concurrent || self.queue.len() < self.cfg.max_queue
    }

    pub fn running(&self) -> usize {
        self.running
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn get(&self, id: &str) -> Option<&JobRecord> {
        self.entries.get(id).map(|e| &e.record)
    }

    /// A job's record, and where its JSON is kept while connections are sending it, so
    /// that it is encoded once per state of the job however many ask.
    pub fn answer_slot(&mut self, id: &str) -> Option<(&JobRecord, &mut Weak<Vec<u8>>)> {
        self.entries.get_mut(id).map(|e| (&e.record, &mut e.answer))
    }

    /// The submitter was told 202: notify when the job ends.
    pub fn detach(&mut self, id: &str) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.detached = true;
        }
    }

    /// Queues a job (the caller checked `has_room`) and starts it if a slot is free.
    pub fn submit(&mut self, id: String, job: NewJob) -> &JobRecord {
        let record = JobRecord::queued(
            id.clone(),
            job.command,
            job.spec.argv.clone(),
            job.rule,
            clock::rfc3339(clock::now_unix_ms()),
        );
        audit::queued(&id, &record.command);
        // Written here, made durable by the job thread before the command runs.
        self.shared.journal.submitted(&record);
        self.entries.insert(
            id.clone(),
            Entry {
                record,
                answer: Weak::new(),
                pending: Some(job.spec),
                cancel: Arc::new(AtomicBool::new(false)),
                detached: false,
            },
        );
        self.queue.push_back(id.clone());
        self.start_queued();
        &self.entries[&id].record
    }

    /// Takes the records of jobs that ended; returns their ids.
    pub fn collect(&mut self) -> Vec<String> {
        let mut ended = Vec::new();
        while let Ok(record) = self.rx.try_recv() {
            self.running = self.running.saturating_sub(1);
            ended.push(record.id.clone());
            self.finish(record);
        }
        self.start_queued();
        ended
    }

    /// Cancels a queued job at once; a running one is told to stop (TERM, grace, KILL) and
    /// reports `cancelled` when its thread is done.
    pub fn cancel(&mut self, id: &str) -> Result<Status, CancelError> {
        let entry = self.entries.get_mut(id).ok_or(CancelError::NotFound)?;
        match entry.record.status {
            Status::Queued => {
                self.queue.retain(|q| q != id);
                let mut record = entry.record.clone();
                record.status = Status::Cancelled;
                record.finished_at = Some(clock::rfc3339(clock::now_unix_ms()));
                audit::cancelled(id, &record.command);
                self.end_here(record);
                Ok(Status::Cancelled)
            }
            Status::Running => {
                entry.cancel.store(true, Ordering::SeqCst);
                audit::cancelled(id, &entry.record.command);
                Ok(Status::Running)
            }
            done => Err(CancelError::AlreadyFinished(done)),
        }
    }

    /// Agent shutdown: queued jobs and running ones (TERM, grace, KILL) end as
    /// `interrupted`; waits at most `limit` for their threads to report, then for the
    /// journal to be on disk.
    pub fn shutdown(&mut self, limit: Duration) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let now = Some(clock::rfc3339(clock::now_unix_ms()));
        for id in std::mem::take(&mut self.queue) {
            if let Some(entry) = self.entries.get(&id) {
                let mut record = entry.record.clone();
                record.status = Status::Interrupted;
                record.finished_at.clone_from(&now);
                audit::interrupted(&id, &record.command);
                self.end_here(record);
            }
        }
        for entry in self.entries.values() {
            entry.cancel.store(true, Ordering::SeqCst);
        }
        let deadline = std::time::Instant::now() + limit;
        while self.running > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            self.collect();
        }
        self.shared.journal.sync();
    }

    /// A job that ends on the loop thread (never started): journal it, then finish.
    fn end_here(&mut self, record: JobRecord) {
        self.shared.journal.ended(&record);
        self.finish(record);
    }

    fn finish(&mut self, record: JobRecord) {
        let id = record.id.clone();
        let detached = match self.entries.get_mut(&id) {
            Some(entry) => {
                entry.record = record;
                entry.answer = Weak::new();
                entry.pending = None;
                entry.detached
            }
            None => {
                let entry = Entry {
                    record,
                    answer: Weak::new(),
                    pending: None,
                    cancel: Arc::new(AtomicBool::new(false)),
                    detached: false,
                };
                self.entries.insert(id.clone(), entry);
                false
            }
        };
        if detached
            && !self.shared.stopping.load(Ordering::SeqCst)
            && let (Some(notify), Some(entry)) = (&self.notify, self.entries.get(&id))
        {
            notify.job_ended(&entry.record);
        }
        if let Some(entry) = self.entries.get(&id) {
            self.kept_bytes += entry.record.weight();
        }
        self.finished.push_back(id);
        while self.finished.len() > self.cfg.history {
            self.forget_oldest();
        }
        self.keep_to_budget();
    }

    /// Keeps finished records under [`HISTORY_BYTES`], everything they hold counted: the
    /// oldest give up their output first (`truncated: true`; the result file keeps it
    /// whole), then, if commands and argv alone are too much, the oldest are forgotten
    /// (the journal and the result files still have them).
    fn keep_to_budget(&mut self) {
        for id in &self.finished {
            if self.kept_bytes <= HISTORY_BYTES {
                return;
            }
            if let Some(entry) = self.entries.get_mut(id)
                && !(entry.record.stdout.is_empty() && entry.record.stderr.is_empty())
            {
                let before = entry.record.weight();
                entry.record.stdout = String::new();
                entry.record.stderr = String::new();
                entry.record.truncated = true;
                entry.answer = Weak::new();
                self.kept_bytes = self
                    .kept_bytes
                    .saturating_sub(before - entry.record.weight());
            }
        }
        while self.kept_bytes > HISTORY_BYTES && self.finished.len() > 1 {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(old) = self.finished.pop_front()
            && let Some(entry) = self.entries.remove(&old)
        {
            self.kept_bytes = self.kept_bytes.saturating_sub(entry.record.weight());
        }
    }

    fn start_queued(&mut self) {
        while self.running < self.cfg.max_concurrent {
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            let Some(spec) = entry.pending.take() else {
                continue;
            };
            entry.record.status = Status::Running;
            entry.record.started_at = Some(clock::rfc3339(clock::now_unix_ms()));
            entry.answer = Weak::new();
            let record = entry.record.clone();
            let cancel = Arc::clone(&entry.cancel);
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name(format!("job-{}", &id[..8.min(id.len())]))
                .stack_size(JOB_STACK)
                .spawn(move || job_thread(record, spec, &cancel, &shared));
            match spawned {
                Ok(_) => self.running += 1,
                Err(err) => {
                    let mut record = entry.record.clone();
                    record.status = Status::Failed;
                    record.stderr = format!("sudo-agent could not start a job thread: {err}");
                    record.finished_at = record.started_at.clone();
                    log::error!("cannot start job {id}: {err}");
                    self.end_here(record);
                }
            }
        }
    }
}

/// Runs one job on its own thread, from EXECUTING to the journal's end line.
fn job_thread(mut record: JobRecord, spec: ExecSpec, cancel: &AtomicBool, shared: &Shared) {
    // The submission must be on disk before the command can change anything.
    shared.journal.sync();
    let started_at = record.started_at.clone().unwrap_or_default();
    let outcome = exec::run(&spec, Some(&record.id), cancel, |pgid| {
        // Once a process exists: a job refused before its spawn never reads EXECUTING.
        audit::executing(&record.id, &record.command);
        shared.journal.started(&record.id, pgid, &started_at);
    });
    let stopping = shared.stopping.load(Ordering::SeqCst);
    apply_outcome(&mut record, outcome, spec.timeout.as_secs(), stopping);
    let results = &shared.results;
    let (written, cleanup) = results.store(&record.id, &render(&record), clock::now_unix());
    for error in &cleanup.errors {
        log::warn!("results cleanup: {error}");
    }
    let stored = match written {
        Ok(stored) => {
            record.result_file = Some(stored.path.display().to_string());
            Some(stored)
        }
        Err(err) => {
            log::error!(
                "cannot write result file for job {} in {}: {err}",
                record.id,
                results.dir().display()
            );
            record.result_error = Some(format!("result file not written: {err}"));
            None
        }
    };
    // The journal's end line is durable before anyone hears of the result, so a crash
    // can never turn a job a client saw finish into `interrupted`.
    shared.journal.ended(&record);
    shared.journal.sync();
    let _ = shared.tx.send(record);
    let _ = shared.waker.wake();
    // The result file's fsync comes after the answer: it costs milliseconds on a
    // disk-backed /tmp (bench/) and the journal already holds the record.
    if let Some(stored) = stored {
        let path = stored.path.clone();
        if let Err(err) = stored.sync() {
            log::error!("cannot sync result file {}: {err}", path.display());
        }
    }
}

/// `stopping`: the agent is shutting down, so a stop it asked for is `interrupted`.
fn apply_outcome(record: &mut JobRecord, outcome: Outcome, timeout_s: u64, stopping: bool) {
    record.status = match &outcome.ending {
        Ending::Exited(0) => Status::Succeeded,
        Ending::Exited(_) | Ending::Signaled(_) | Ending::SpawnFailed(_) | Ending::Refused(_) => {
            Status::Failed
        }
        Ending::TimedOut => Status::TimedOut,
        Ending::Cancelled if stopping => Status::Interrupted,
        Ending::Cancelled => Status::Cancelled,
    };
    record.exit_code = outcome.exit_code;
    record.signal = outcome.signal;
    record.stdout = outcome.stdout;
    record.stderr = outcome.stderr;
    if let Ending::SpawnFailed(why) | Ending::Refused(why) = &outcome.ending {
        record.stderr = why.clone();
    }
    record.truncated = outcome.truncated;
    record.killed_by = outcome.killed_by.map(str::to_owned);
    record.started_at = Some(clock::rfc3339(outcome.started_ms));
    record.finished_at = Some(clock::rfc3339(outcome.finished_ms));
    record.duration_ms = Some(outcome.finished_ms.saturating_sub(outcome.started_ms));
    let rc = match &outcome.ending {
        Ending::TimedOut => {
            audit::timeout(&record.id, timeout_s, &record.command);
            "timeout".to_string()
        }
        Ending::Cancelled if stopping => {
            audit::interrupted(&record.id, &record.command);
            "interrupted".to_string()
        }
        Ending::Cancelled => "cancelled".to_string(),
        Ending::Refused(why) => {
            audit::refused(&record.id, why);
            "refused".to_string()
        }
        _ => audit::rc_text(record.exit_code, record.signal),
    };
    audit::result(&record.id, &rc, &record.stdout, &record.stderr);
}

/// The result file: a header a person can read, then the output as it was.
fn render(r: &JobRecord) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let num = |v: Option<i32>| v.map_or_else(|| "-".into(), |n| n.to_string());
    format!(
        "id: {}\ncommand: {}\nargv: {}\nrule: {}\nstatus: {}\nexit_code: {}\nsignal: {}\n\
         submitted_at: {}\nstarted_at: {}\nfinished_at: {}\nduration_ms: {}\ntruncated: {}\n\
         --- stdout ---\n{}\n--- stderr ---\n{}\n",
        r.id,
        r.command,
        serde_json::to_string(&r.argv).unwrap_or_default(),
        r.rule,
        r.status.as_str(),
        num(r.exit_code),
        num(r.signal),
        r.submitted_at,
        opt(&r.started_at),
        opt(&r.finished_at),
        r.duration_ms.map_or_else(|| "-".into(), |d| d.to_string()),
        r.truncated,
        r.stdout,
        r.stderr,
    )
}
