//! The job table: queue, running set and bounded history, owned by the event-loop
//! thread. Each running job has its own thread (`exec::run`), which writes the result
//! file and reports back through a channel plus the loop's `mio::Waker`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use mio::Waker;
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::clock;
use crate::config::JobsConfig;
use crate::exec::{self, Ending, ExecSpec, Outcome};
use crate::results::ResultsDir;

/// Stack for a job thread: it only polls pipes; output buffers live on the heap.
const JOB_STACK: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Interrupted,
}

impl Status {
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
        }
    }
}

/// A job as `GET /job/<id>` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub command: String,
    pub argv: Vec<String>,
    pub rule: String,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub result_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_error: Option<String>,
}

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

enum Event {
    Started { id: String, pgid: u32 },
    Ended(Box<JobRecord>),
}

struct Entry {
    record: JobRecord,
    /// Held while queued; moved into the job thread when it starts.
    pending: Option<ExecSpec>,
    cancel: Arc<AtomicBool>,
    pgid: Option<u32>,
}

pub struct Jobs {
    cfg: JobsConfig,
    entries: HashMap<String, Entry>,
    queue: VecDeque<String>,
    /// Finished ids, oldest first: the history bound evicts from the front.
    finished: VecDeque<String>,
    running: usize,
    shutting_down: bool,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    waker: Arc<Waker>,
    results: Arc<ResultsDir>,
}

/// A fresh 128-bit job id, 32 lowercase hex characters.
pub fn new_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

impl Jobs {
    pub fn new(cfg: JobsConfig, results: Arc<ResultsDir>, waker: Arc<Waker>) -> Jobs {
        let (tx, rx) = channel();
        Jobs {
            cfg,
            entries: HashMap::new(),
            queue: VecDeque::new(),
            finished: VecDeque::new(),
            running: 0,
            shutting_down: false,
            tx,
            rx,
            waker,
            results,
        }
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

    /// Queues a job (the caller checked `has_room`) and starts it if a slot is free.
    pub fn submit(&mut self, id: String, job: NewJob) -> &JobRecord {
        let record = JobRecord {
            id: id.clone(),
            command: job.command,
            argv: job.spec.argv.clone(),
            rule: job.rule,
            status: Status::Queued,
            exit_code: None,
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            submitted_at: clock::rfc3339(clock::now_unix_ms()),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            result_file: None,
            result_error: None,
        };
        audit::queued(&id, &record.command);
        self.entries.insert(
            id.clone(),
            Entry {
                record,
                pending: Some(job.spec),
                cancel: Arc::new(AtomicBool::new(false)),
                pgid: None,
            },
        );
        self.queue.push_back(id.clone());
        self.start_queued();
        &self.entries[&id].record
    }

    /// Drains job events; returns the ids of jobs that ended.
    pub fn collect(&mut self) -> Vec<String> {
        let mut ended = Vec::new();
        while let Ok(event) = self.rx.try_recv() {
            match event {
                Event::Started { id, pgid } => {
                    if let Some(entry) = self.entries.get_mut(&id) {
                        entry.pgid = Some(pgid);
                    }
                }
                Event::Ended(mut record) => {
                    self.running = self.running.saturating_sub(1);
                    if self.shutting_down && record.status == Status::Cancelled {
                        record.status = Status::Interrupted;
                        audit::interrupted(&record.id, &record.command);
                    }
                    ended.push(record.id.clone());
                    self.finish(*record);
                }
            }
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
                self.finish(record);
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
    /// `interrupted`; waits at most `limit` for their threads to report.
    pub fn shutdown(&mut self, limit: std::time::Duration) {
        self.shutting_down = true;
        for id in std::mem::take(&mut self.queue) {
            if let Some(entry) = self.entries.get(&id) {
                let mut record = entry.record.clone();
                record.status = Status::Interrupted;
                audit::interrupted(&id, &record.command);
                self.finish(record);
            }
        }
        for entry in self.entries.values() {
            entry.cancel.store(true, Ordering::SeqCst);
        }
        let deadline = std::time::Instant::now() + limit;
        while self.running > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            self.collect();
        }
    }

    fn finish(&mut self, record: JobRecord) {
        let id = record.id.clone();
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.record = record;
            entry.pending = None;
        }
        self.finished.push_back(id);
        while self.finished.len() > self.cfg.history {
            if let Some(old) = self.finished.pop_front() {
                self.entries.remove(&old);
            }
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
            let record = entry.record.clone();
            let cancel = Arc::clone(&entry.cancel);
            let (tx, waker, results) = (
                self.tx.clone(),
                Arc::clone(&self.waker),
                Arc::clone(&self.results),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("job-{}", &id[..8.min(id.len())]))
                .stack_size(JOB_STACK)
                .spawn(move || job_thread(record, spec, &cancel, &tx, &waker, &results));
            match spawned {
                Ok(_) => self.running += 1,
                Err(err) => {
                    let mut record = entry.record.clone();
                    record.status = Status::Failed;
                    record.stderr = format!("sudo-agent could not start a job thread: {err}");
                    record.finished_at = record.started_at.clone();
                    log::error!("cannot start job {id}: {err}");
                    self.finish(record);
                }
            }
        }
    }
}

/// Runs one job on its own thread, from EXECUTING to the result file.
fn job_thread(
    mut record: JobRecord,
    spec: ExecSpec,
    cancel: &AtomicBool,
    tx: &Sender<Event>,
    waker: &Waker,
    results: &ResultsDir,
) {
    audit::executing(&record.id, &record.command);
    let outcome = exec::run(&spec, cancel, |pgid| {
        let _ = tx.send(Event::Started {
            id: record.id.clone(),
            pgid,
        });
        let _ = waker.wake();
    });
    apply_outcome(&mut record, outcome, spec.timeout.as_secs());
    let mut unsynced = None;
    match results.write_unsynced(&record.id, &render(&record)) {
        Ok((path, file)) => {
            record.result_file = Some(path.display().to_string());
            unsynced = Some((path, file));
        }
        Err(err) => {
            log::error!(
                "cannot write result file for job {} in {}: {err}",
                record.id,
                results.dir().display()
            );
            record.result_error = Some(format!("result file not written: {err}"));
        }
    }
    // Answer first: the fsync and the cleanup scan cost milliseconds (bench/) and the
    // record the caller waits for is complete.
    let _ = tx.send(Event::Ended(Box::new(record)));
    let _ = waker.wake();
    if let Some((path, file)) = unsynced {
        if let Err(err) = file.sync_all() {
            log::error!("cannot sync result file {}: {err}", path.display());
        }
    }
    let cleanup = results.cleanup(clock::now_unix());
    for error in &cleanup.errors {
        log::warn!("results cleanup: {error}");
    }
}

fn apply_outcome(record: &mut JobRecord, outcome: Outcome, timeout_s: u64) {
    record.status = match &outcome.ending {
        Ending::Exited(0) => Status::Succeeded,
        Ending::Exited(_) | Ending::Signaled(_) | Ending::SpawnFailed(_) => Status::Failed,
        Ending::TimedOut => Status::TimedOut,
        Ending::Cancelled => Status::Cancelled,
    };
    record.exit_code = outcome.exit_code;
    record.signal = outcome.signal;
    record.stdout = outcome.stdout;
    record.stderr = outcome.stderr;
    if let Ending::SpawnFailed(why) = &outcome.ending {
        record.stderr = why.clone();
    }
    record.truncated = outcome.truncated;
    record.started_at = Some(clock::rfc3339(outcome.started_ms));
    record.finished_at = Some(clock::rfc3339(outcome.finished_ms));
    record.duration_ms = Some(outcome.finished_ms.saturating_sub(outcome.started_ms));
    let rc = match &outcome.ending {
        Ending::TimedOut => {
            audit::timeout(&record.id, timeout_s, &record.command);
            "timeout".to_string()
        }
        Ending::Cancelled => "cancelled".to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bit_hex() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn status_names_match_serde() {
        for s in [Status::Queued, Status::TimedOut, Status::Interrupted] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
