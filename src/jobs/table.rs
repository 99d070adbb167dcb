//! The job table: queue, running set and bounded history, owned by the event-loop
//! thread. Jobs run on a small pool of job threads (`pool`); each (`task`) journals its
//! job, writes the result file and reports back through a channel plus the loop's
//! `mio::Waker`. Nothing here touches a disk: lines the loop decides go to the journal
//! thread, whose reports arrive through the same waker.
//!
//! A job's submission is in the journal before anyone is told its id and before it
//! starts. A job that may start at once (a free slot) has its job thread write it (and
//! sync it, with the code's `Used` line, when a code authorised it), so its path never
//! waits for another thread; a queued job is held until the journal thread reports its
//! lines written (or, for a code, synced).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::contain::{self, Emptied, Spare};
use super::exec::{self, ExecSpec};
use super::journal::{Done, Journal, Need, Recovered, Ticket};
use super::mark::{Mark, PENDING, WRITTEN};
use super::notify::NotifyCommand;
use super::pool::{self, Pool};
use super::record::{HISTORY_BYTES, JobRecord, Status};
use super::results::ResultsDir;
use super::state_disk::DiskHealth;
use super::task::{Event, Finished, JobTask, Shared, not_run};
use crate::audit;
use crate::config::JobsConfig;
use crate::policy::Caller;
use crate::sys::clock;
use mio::Waker;

/// What the API hands over once a request is authenticated and matched.
#[derive(Debug)]
pub struct NewJob {
    /// The request as the caller wrote it (for the record and the audit log).
    pub command: String,
    pub rule: String,
    pub spec: ExecSpec,
    pub caller: Caller,
}

/// What makes a job a request held for a human.
#[derive(Debug)]
pub struct HeldBy {
    pub approval: String,
    pub reason: Option<String>,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelError {
    NotFound,
    AlreadyFinished(Status),
}

/// Whether a job's id may be given out yet (its submission is in the journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Journaled {
    Yes,
    /// Not yet; its id will be among those `collect` returns once it is.
    NotYet,
    /// It never will be: the code that authorised it could not be recorded.
    Refused(String),
}

struct Entry {
    record: JobRecord,
    /// The record as JSON while a connection is still sending it (see
    /// [`Jobs::answer_slot`]); reset whenever the record changes.
    answer: Weak<Vec<u8>>,
    /// Held while queued, with the cgroup kept for it under its id's key if one was
    /// (removed if it never runs); moved into the job thread when it starts.
    pending: Option<(ExecSpec, Option<Spare>)>,
    cancel: Arc<AtomicBool>,
    /// The submitter was answered 202: the notify command runs when the job ends.
    detached: bool,
    mark: Arc<Mark>,
    /// The submission went to the journal thread: the job waits for this ticket.
    ticket: Option<Ticket>,
    /// The time step of the code that authorised it: it runs only once that is synced.
    step: Option<u64>,
    /// The journal thread wrote the submission; the job thread must not write it again.
    sent: bool,
    /// Why it will never run, when its code could not be recorded.
    refused: Option<String>,
    /// When it was submitted and how long the submitter waits for its end (`None` for
    /// history from the journal).
    submitted: Option<(Instant, Duration)>,
}

impl Entry {
    /// `sent`: its submission is (being) written by someone other than its job thread.
    fn new(
        record: JobRecord,
        pending: Option<(ExecSpec, Option<Spare>)>,
        sent: bool,
    ) -> Box<Entry> {
        Box::new(Entry {
            record,
            answer: Weak::new(),
            pending,
            cancel: Arc::new(AtomicBool::new(false)),
            detached: false,
            mark: Mark::new(if sent { WRITTEN } else { PENDING }),
            ticket: None,
            step: None,
            sent,
            refused: None,
            submitted: None,
        })
    }
}

/// The record a new job (submitted or held) starts with.
fn new_record(id: &str, job: &NewJob) -> JobRecord {
    JobRecord {
        caller: job.caller.clone(),
        ..JobRecord::queued(
            id.to_string(),
            job.command.clone(),
            job.spec.argv.clone(),
            job.rule.clone(),
            clock::rfc3339(clock::now_unix_ms()),
        )
    }
}

/// What one wake-up of the loop brought.
#[derive(Debug, Default)]
pub struct Collected {
    /// Jobs whose state changed (ended, journaled, refused): parked requests to look at.
    pub changed: Vec<String>,
    /// Of those, the jobs that ended.
    pub ended: Vec<String>,
    /// Journal reports that are not about a job's submission, for the caller.
    pub reports: Vec<Done>,
}

pub struct Jobs {
    cfg: JobsConfig,
    /// Boxed: a map of entries held in place (about 850 bytes each) keeps that much in
    /// every empty slot too, and once it has grown for the default history, three in four
    /// of its 4 096 slots are empty (3.4 MiB in all, where boxed entries take 1 MiB).
    entries: HashMap<String, Box<Entry>>,
    queue: VecDeque<String>,
    /// Finished ids, oldest first: the history bound evicts from the front.
    finished: VecDeque<String>,
    /// What finished records hold ([`JobRecord::weight`]).
    kept_bytes: usize,
    running: usize,
    rx: Receiver<Event>,
    done: Receiver<Done>,
    /// Journal tickets of held jobs (submissions) and of ends decided here.
    tickets: HashMap<Ticket, String>,
    /// Records of jobs ended on the loop, shown once their end line is written.
    ending: HashMap<String, JobRecord>,
    shared: Arc<Shared>,
    pool: Pool<JobTask, Finished>,
    notify: Option<NotifyCommand>,
    /// Held requests by approval code: at most `approvals.max_pending` (the routes
    /// refuse more), plus whatever a restart brought back.
    approvals: HashMap<String, String>,
}

impl Jobs {
    /// The table starts with the journal's history; process groups of jobs the previous
    /// agent left running are ended on a thread of their own (TERM, grace, KILL).
    /// `done` is the journal thread's report channel.
    pub fn new(
        cfg: JobsConfig,
        results: Arc<ResultsDir>,
        waker: Arc<Waker>,
        (journal, recovered, done): (Journal, Recovered, Receiver<Done>),
        notify: Option<NotifyCommand>,
    ) -> Jobs {
        let (tx, rx) = channel();
        let shared = Arc::new(Shared {
            tx,
            waker,
            results,
            journal,
            stopping: AtomicBool::new(false),
        });
        let finished = Arc::clone(&shared);
        let pool = Pool::new(cfg.max_concurrent, JobTask::run, move |done| match done {
            Finished::Ran(record, cgroup) => {
                // Kept before the loop has the result, so that a next job sent on the
                // answer finds it; one not kept is removed after (on this job thread).
                let not_kept = cgroup.map(Emptied::keep_for_next);
                let left_one = matches!(not_kept, Some(Ok(())));
                finished.tell(Event::Ended(Box::new(record)));
                drop(not_kept);
                finished.wake_writers();
                // Not while stopping: the agent removes those made ahead on its way out.
                if !finished.stopping.load(Ordering::SeqCst) {
                    Spare::tend(left_one);
                    let ids = contain::ids_ahead();
                    finished.results.prepare(&ids, clock::now_unix());
                }
            }
            Finished::Refused(record, why) => {
                finished.tell(Event::Refused(Box::new(record), why));
                finished.wake_writers();
            }
        });
        let mut jobs = Jobs {
            cfg,
            entries: HashMap::new(),
            queue: VecDeque::new(),
            finished: VecDeque::new(),
            kept_bytes: 0,
            running: 0,
            rx,
            done,
            tickets: HashMap::new(),
            ending: HashMap::new(),
            shared,
            pool,
            notify,
            approvals: HashMap::new(),
        };
        for record in recovered.records {
            if record.status == Status::AwaitingApproval {
                // Its spec is the routes' to rebuild from the policy, if approved.
                if let Some(code) = record.approval.clone() {
                    jobs.approvals.insert(code, record.id.clone());
                }
                let id = record.id.clone();
                jobs.entries.insert(id, Entry::new(record, None, true));
            } else {
                jobs.finish(record);
            }
        }
        if !recovered.orphans.is_empty() {
            let grace = Duration::from_secs(cfg.kill_grace_s);
            let orphans = recovered.orphans;
            let spawned = std::thread::Builder::new()
                .name("orphans".into())
                .stack_size(pool::STACK)
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

    /// The journal, for lines that are not a job's (a used code, the auth state).
    pub fn journal(&self) -> &Journal {
        &self.shared.journal
    }

    /// Whether one more job can start or wait in the queue.
    pub fn has_room(&self) -> bool {
        self.running < self.cfg.max_concurrent || self.queue.len() < self.cfg.max_queue
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Whether the state disk took the journal's last write and sync.
    pub fn disk_health(&self) -> DiskHealth {
        self.shared.journal.disk_health()
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

    /// Queues a job (the caller checked `has_room`) and starts it if it may. `step`:
    /// the time step of the code that authorised it, synced with its submission before
    /// it runs; `wait`: how long its submitter waits for its end.
    /// `ahead`: what was made ahead for `id` (`contain::next_id`), if it was.
    pub fn submit(
        &mut self,
        id: String,
        ahead: Option<Spare>,
        job: NewJob,
        step: Option<u64>,
        wait: Duration,
    ) {
        let record = new_record(&id, &job);
        audit::queued(&id, &record.command);
        self.entries.insert(
            id.clone(),
            Entry::new(record, Some((job.spec, ahead)), false),
        );
        self.enqueue(id, step, wait, true);
    }

    /// Holds a job for a human (`awaiting_approval`): journaled (written) before its id
    /// is given out, so it outlives a restart until it expires.
    pub fn hold(&mut self, id: String, job: NewJob, held: HeldBy) {
        let mut record = new_record(&id, &job);
        record.status = Status::AwaitingApproval;
        record.reason = held.reason;
        record.expires_at = Some(held.expires_at);
        record.approval = Some(held.approval.clone());
        let ticket = self.shared.journal.submit(&record, None, Need::Written);
        self.tickets.insert(ticket, id.clone());
        let mut entry = Entry::new(record, Some((job.spec, None)), true);
        entry.ticket = Some(ticket);
        entry.submitted = Some((Instant::now(), Duration::ZERO));
        self.approvals.insert(held.approval, id.clone());
        self.entries.insert(id, entry);
    }

    /// The held job an approval code names.
    pub fn approval(&self, code: &str) -> Option<&JobRecord> {
        let id = self.approvals.get(code)?;
        self.get(id)
            .filter(|r| r.status == Status::AwaitingApproval && !self.ending.contains_key(id))
    }

    /// Held jobs, oldest first.
    pub fn pending(&self) -> Vec<&JobRecord> {
        let mut held: Vec<&JobRecord> = self
            .approvals
            .keys()
            .filter_map(|code| self.approval(code))
            .collect();
        held.sort_by(|a, b| a.submitted_at.cmp(&b.submitted_at));
        held
    }

    pub fn held_count(&self) -> usize {
        self.approvals.len()
    }

    /// Whether a held job lost its spec in a restart (the routes rebuild it).
    pub fn needs_spec(&self, id: &str) -> bool {
        self.entries.get(id).is_some_and(|e| e.pending.is_none())
    }

    /// An approved held job becomes a submission like any other (as `submit`); false if
    /// it is no longer held.
    pub fn approve(&mut self, id: &str, step: u64, wait: Duration, spec: Option<ExecSpec>) -> bool {
        if self.approval_of(id).is_none() {
            return false;
        }
        let Some(entry) = self.entries.get_mut(id) else {
            return false;
        };
        if let Some(code) = &entry.record.approval {
            self.approvals.remove(code);
        }
        // Its hold not yet written: the journal thread writes this after it, in order.
        let fresh = entry
            .ticket
            .take()
            .is_none_or(|t| self.tickets.remove(&t).is_none());
        entry.record.status = Status::Queued;
        entry.answer = Weak::new();
        entry.mark = Mark::new(PENDING);
        if let Some(spec) = spec {
            entry.pending = Some((spec, None));
        }
        audit::queued(id, &entry.record.command);
        self.enqueue(id.to_string(), Some(step), wait, fresh);
        true
    }

    /// Ends a held job `denied`; false if it is no longer held.
    pub fn deny(&mut self, id: &str) -> bool {
        let held = self.approval_of(id).is_some();
        if held {
            self.end_unstarted(id, Status::Denied);
        }
        held
    }

    /// Ends held jobs whose time is up (`expires_at` ≤ `now`, unix seconds).
    pub fn expire(&mut self, now: u64) {
        let due: Vec<(String, String)> = self
            .approvals
            .iter()
            .filter(|(_, id)| {
                self.get(id)
                    .and_then(|r| r.expires_at)
                    .is_some_and(|at| at <= now)
            })
            .map(|(code, id)| (code.clone(), id.clone()))
            .collect();
        for (code, id) in due {
            audit::expired(&id, &code);
            self.end_unstarted(&id, Status::Expired);
        }
    }

    /// The approval code of `id`, while it is held.
    fn approval_of(&self, id: &str) -> Option<&str> {
        let code = self.get(id)?.approval.as_deref()?;
        self.approval(code).filter(|r| r.id == id).map(|_| code)
    }

    /// Puts `id` (in `entries`) in the queue and starts it if it may; `may_start`: its
    /// job thread may write its submission (nothing of it is on the way to the journal).
    fn enqueue(&mut self, id: String, step: Option<u64>, wait: Duration, may_start: bool) {
        // Jobs held for the journal do not block one that may start.
        let at_once = may_start
            && self.running < self.cfg.max_concurrent
            && self.queue.iter().all(|q| self.held(q));
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let ticket = (!at_once).then(|| {
            let need = if step.is_some() {
                Need::Synced
            } else {
                Need::Written
            };
            let ticket = self.shared.journal.submit(&entry.record, step, need);
            self.tickets.insert(ticket, id.clone());
            ticket
        });
        entry.ticket = ticket;
        entry.step = step;
        entry.sent = ticket.is_some();
        entry.submitted = Some((Instant::now(), wait));
        self.queue.push_back(id);
        self.start_queued();
    }

    /// Queued but waiting for the journal thread's report on its submission.
    fn held(&self, id: &str) -> bool {
        self.entries.get(id).is_some_and(|e| e.ticket.is_some())
    }

    /// Whether `id` may be given out: its submission is in the journal. `NotYet` asks
    /// for its id to come back from `collect` once it is.
    pub fn journaled(&self, id: &str) -> Journaled {
        let Some(entry) = self.entries.get(id) else {
            return Journaled::Yes;
        };
        if let Some(why) = &entry.refused {
            return Journaled::Refused(why.clone());
        }
        if entry.ticket.is_some() || self.ending.contains_key(id) {
            return Journaled::NotYet;
        }
        if entry.record.status.is_final() || entry.sent || entry.mark.written_or_want() {
            Journaled::Yes
        } else {
            Journaled::NotYet
        }
    }

    /// When `id` was submitted to this agent, and how long its submitter waits.
    pub fn submitted(&self, id: &str) -> Option<(Instant, Duration)> {
        self.entries.get(id).and_then(|e| e.submitted)
    }

    /// (files, bytes) in the results directory, from its index: no disk access.
    pub fn results_usage(&self) -> (u64, u64) {
        self.shared.results.usage()
    }

    /// The submitter gave up waiting for the journal to take a job: it will never run,
    /// whatever the journal or its job thread does later. False if it was journaled
    /// first (then it runs as usual).
    pub fn abandon(&mut self, id: &str, why: &str) -> bool {
        let Some(entry) = self.entries.get_mut(id) else {
            return false;
        };
        if let Some(ticket) = entry.ticket.take() {
            self.tickets.remove(&ticket);
            self.refuse(id, why.to_string());
            return true;
        }
        // Its job thread writes it: the thread learns of this when it is done writing,
        // and reports the job refused.
        if !entry.sent && entry.mark.abandon() {
            entry.refused = Some(why.to_string());
            return true;
        }
        false
    }

    /// Takes what job threads and the journal thread reported.
    pub fn collect(&mut self) -> Collected {
        let mut out = Collected::default();
        while let Ok(event) = self.rx.try_recv() {
            match event {
                Event::Ended(record) => {
                    self.running = self.running.saturating_sub(1);
                    out.ended.push(record.id.clone());
                    out.changed.push(record.id.clone());
                    self.finish(*record);
                }
                Event::Refused(record, why) => {
                    self.running = self.running.saturating_sub(1);
                    let id = record.id.clone();
                    if let Some(entry) = self.entries.get_mut(&id) {
                        entry.refused = Some(why);
                    }
                    out.ended.push(id.clone());
                    out.changed.push(id);
                    self.finish(*record);
                }
                Event::Journaled(id) => out.changed.push(id),
            }
        }
        while let Ok(done) = self.done.try_recv() {
            let Some(id) = self.tickets.remove(&done.ticket) else {
                out.reports.push(done);
                continue;
            };
            if let Some(record) = self.ending.remove(&id) {
                // An end decided here: shown once its line is written (or failed to be).
                out.ended.push(id.clone());
                out.changed.push(id);
                self.finish(record);
                continue;
            }
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.ticket = None;
            out.changed.push(id.clone());
            // A job without a code runs even when the journal fails (logged there): the
            // read-only commands that help find a full disk must keep working.
            if let (Err(why), Some(_)) = (done.result, entry.step) {
                self.refuse(&id, format!("the code could not be recorded: {why}"));
                out.ended.push(id);
            }
        }
        self.start_queued();
        out
    }

    /// Cancels a queued job (its end is shown once journaled); a running one is told to
    /// stop (TERM, grace, KILL) and reports `cancelled` when its thread is done. `Ok`
    /// with a status that is not final: wait for the job to end.
    pub fn cancel(&mut self, id: &str) -> Result<Status, CancelError> {
        let entry = self.entries.get_mut(id).ok_or(CancelError::NotFound)?;
        match entry.record.status {
            Status::Queued | Status::AwaitingApproval if self.ending.contains_key(id) => {
                Ok(Status::Queued)
            }
            Status::Queued | Status::AwaitingApproval => {
                audit::cancelled(id, &entry.record.command);
                self.end_unstarted(id, Status::Cancelled);
                Ok(Status::Queued)
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
        let deadline = Instant::now() + limit;
        while self.running > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            self.collect();
        }
        self.shared.results.drop_ahead();
        self.shared.journal.sync();
    }

    /// Ends a job that never started (queued or held) with `status`; shown once its end
    /// is written.
    fn end_unstarted(&mut self, id: &str, status: Status) {
        self.queue.retain(|q| q != id);
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        // Its submission's report no longer matters; its end's does.
        if let Some(ticket) = entry.ticket.take() {
            self.tickets.remove(&ticket);
        }
        if let Some(code) = &entry.record.approval
            && self.approvals.get(code).is_some_and(|held| held == id)
        {
            self.approvals.remove(code);
        }
        entry.pending = None;
        let mut record = entry.record.clone();
        record.status = status;
        record.finished_at = Some(clock::rfc3339(clock::now_unix_ms()));
        let ticket = self.shared.journal.ended(&record);
        self.tickets.insert(ticket, id.to_string());
        self.ending.insert(id.to_string(), record);
    }

    /// A job that will never run: `failed`, saying why, journaled (best effort).
    fn refuse(&mut self, id: &str, why: String) {
        self.queue.retain(|q| q != id);
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.refused = Some(why.clone());
        if let Some(code) = &entry.record.approval {
            self.approvals.remove(code);
        }
        let record = not_run(entry.record.clone(), &why);
        self.end_here(record);
    }

    /// A job that ends on the loop thread without anyone waiting for its line (it never
    /// started): journal it, then finish.
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
                self.entries
                    .insert(id.clone(), Entry::new(record, None, true));
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

    /// Starts queued jobs in order while slots are free, skipping those still held for
    /// the journal.
    fn start_queued(&mut self) {
        let mut i = 0;
        while self.running < self.cfg.max_concurrent && i < self.queue.len() {
            if self.held(&self.queue[i]) {
                i += 1;
                continue;
            }
            let Some(id) = self.queue.remove(i) else {
                return;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            let Some((spec, ahead)) = entry.pending.take() else {
                continue;
            };
            entry.record.status = Status::Running;
            entry.record.started_at = Some(clock::rfc3339(clock::now_unix_ms()));
            entry.answer = Weak::new();
            let task = JobTask {
                record: entry.record.clone(),
                spec,
                ahead,
                cancel: Arc::clone(&entry.cancel),
                mark: (!entry.sent).then(|| (Arc::clone(&entry.mark), entry.step)),
                shared: Arc::clone(&self.shared),
            };
            match self.pool.run(task) {
                Ok(()) => self.running += 1,
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
