//! A job on its pool thread: its submission line when that is its thread's to write
//! (synced with the code's step when a code authorised it), the process (`exec`), the
//! result file, and its end line, written before the loop hears of the result. What a
//! job thread tells the loop (`Event`) and hands back (`Finished`) is defined here; the
//! table (`table`) owns everything else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::contain::{Emptied, Spare};
use super::exec::{self, Ending, ExecSpec, Outcome, Started};
use super::journal::Journal;
use super::mark::Mark;
use super::record::{JobRecord, Status};
use super::results::ResultsDir;
use crate::audit;
use crate::sys::clock;
use mio::Waker;

/// What job threads tell the loop.
pub(super) enum Event {
    Ended(Box<JobRecord>),
    /// The code that authorised the job could not be synced: it did not run (why).
    Refused(Box<JobRecord>, String),
    /// A submission the loop waits for is written.
    Journaled(String),
}

/// What a job thread hands back.
pub(super) enum Finished {
    /// With the job's empty cgroup, to remove after the result is handed over.
    Ran(JobRecord, Option<Emptied>),
    Refused(JobRecord, String),
}

/// What every job thread needs from the table.
pub(super) struct Shared {
    pub(super) tx: Sender<Event>,
    pub(super) waker: Arc<Waker>,
    pub(super) results: Arc<ResultsDir>,
    pub(super) journal: Journal,
    /// The agent is stopping: a job stopped now ends `interrupted`, not `cancelled`.
    pub(super) stopping: AtomicBool,
}

impl Shared {
    pub(super) fn tell(&self, event: Event) {
        let _ = self.tx.send(event);
        let _ = self.waker.wake();
    }

    /// From a job thread once its job is answered (or has proved lasting): the journal
    /// and audit threads are woken for what it left them, not while a client waits.
    pub(super) fn wake_writers(&self) {
        self.journal.poke();
        audit::wake_deferred(Duration::ZERO);
    }
}

/// `record` ended `failed` without running, saying why; logged.
pub(super) fn not_run(mut record: JobRecord, why: &str) -> JobRecord {
    log::error!("job {} not run: {why}", record.id);
    record.status = Status::Failed;
    record.stderr = format!("not run: {why}");
    record.finished_at = Some(clock::rfc3339(clock::now_unix_ms()));
    record
}

/// One job, as handed to a pool thread.
pub(super) struct JobTask {
    pub(super) record: JobRecord,
    pub(super) spec: ExecSpec,
    /// The cgroup kept for it under its id's key (`None`: made when it starts).
    pub(super) ahead: Option<Spare>,
    pub(super) cancel: Arc<AtomicBool>,
    /// When this thread writes the submission (nobody else did): set once it has, and
    /// the step of the code that authorised it, synced with it.
    pub(super) mark: Option<(Arc<Mark>, Option<u64>)>,
    pub(super) shared: Arc<Shared>,
}

impl JobTask {
    /// From the submission (when it is this thread's to write) to the journal's end
    /// line; the record goes back to the loop through the pool.
    pub(super) fn run(self) -> Finished {
        let JobTask {
            mut record,
            spec,
            ahead,
            cancel,
            mark,
            shared,
        } = self;
        // Its lines wait for `wake_writers`, as the journal's do.
        audit::defer_wakes();
        if let Some((mark, step)) = mark {
            let refused = match shared.journal.submitted_now(&record, step) {
                // Never marked written: the loop must not give its id out.
                Err(why) if step.is_some() => {
                    Some(format!("the code could not be recorded: {why}"))
                }
                // A job without a code runs even when the journal fails (logged there).
                _ => match mark.set_written() {
                    None => Some("the state disk took too long; the client was told".into()),
                    Some(wanted) => {
                        if wanted {
                            shared.tell(Event::Journaled(record.id.clone()));
                        }
                        None
                    }
                },
            };
            if let Some(why) = refused {
                let record = not_run(record, &why);
                shared.journal.ended_now(&record);
                return Finished::Refused(record, why);
            }
        }
        let started_at = record.started_at.clone().unwrap_or_default();
        let job = Some((record.id.as_str(), ahead));
        let mut outcome = exec::run(&spec, job, &cancel, |started| match started {
            // Once a process exists: a job refused before its spawn never reads EXECUTING.
            Started::Spawned(_) => audit::executing(&record.id, &record.command),
            Started::Lasting(pgid) => {
                shared.journal.started(&record.id, pgid, &started_at);
                shared.wake_writers();
            }
        });
        let stopping = shared.stopping.load(Ordering::SeqCst);
        let cgroup = outcome.cgroup.take();
        apply_outcome(&mut record, outcome, spec.timeout.as_secs(), stopping);
        let results = &shared.results;
        let (written, cleanup) = results.store(&record.id, &record.render(), clock::now_unix());
        for error in &cleanup.errors {
            log::warn!("results cleanup: {error}");
        }
        match written {
            Ok(path) => record.result_file = Some(path.display().to_string()),
            Err(err) => {
                log::error!(
                    "cannot write result file for job {} in {}: {err}",
                    record.id,
                    results.dir().display()
                );
                record.result_error = Some(format!("result file not written: {err}"));
            }
        }
        // Written before anyone hears of the result, so a crash of the agent can never
        // turn a job a client saw finish into `interrupted`.
        shared.journal.ended_now(&record);
        Finished::Ran(record, cgroup)
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
