//! The job journal, `<state_dir>/jobs.jsonl`: one JSON line per event (a code accepted,
//! a job submitted, its process group started, the job ended), so history survives a
//! restart, a job cut off by a crash reads `interrupted` and its processes can be found
//! and ended, and a used code stays used.
//!
//! Two kinds of writer share the file, one line per `write(2)` under a lock:
//! - job threads append their own job's lines (a used code, submit, start, end)
//!   directly, so a job's path from request to answer never waits for another thread;
//! - the `journal` thread appends what the event loop asks for (a code-bearing or
//!   queued submission, a used code, an end decided on the loop), since the loop itself
//!   never touches a disk, and reports back through a channel and the loop's waker
//!   once the lines are written, or synced when the caller needs that.
//!
//! Durability. A line is *written* when it is in the kernel: it survives a crash of
//! the agent (SIGKILL, OOM kill, panic). It is *synced* after an `fdatasync`: it
//! survives a power cut. A code-bearing submission is synced (its used code in the same
//! write, so one sync) before the job may start, by its job thread (or by the journal
//! thread when the job has to queue); everything else is written before any answer
//! depends on it and synced by the journal thread within [`COMMIT_DELAY`] (group
//! commit: one `fdatasync` for all lines since the last). Lines go over zeros kept
//! written and synced after the last one ([`TAIL`]), so such a sync commits no new
//! size and is one flush of the disk. The file is rewritten
//! atomically with only what the newest `history` jobs need (and no more of them than
//! [`HISTORY_BYTES`] of lines) plus the highest used time step when it holds about twice
//! that many lines or bytes (by the journal thread, or by a job thread's append when the
//! journal thread lags a quarter past that), and at every start-up, which also drops a
//! torn last line.
//! Compaction streams the file twice (an index of ids, then a copy of the lines kept),
//! so it never holds more of it in memory than one line, and appenders do not wait for
//! it: only its start and its switch to the new file take their lock.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mio::Waker;

use super::contain::remove_unused;
pub use super::journal_file::Orphan;
use super::journal_file::{
    FILE_NAME, Line, TAIL, WHAT, data_end, end_cut_off, keep, load, next_compaction, rewrite,
    write_at, write_zeros,
};
use super::record::{HISTORY_BYTES, JobRecord};
use super::state_disk::{DiskHealth, StateDisk};
use crate::sys;
use crate::sys::files::{self, FileError, Trust};

/// A batch stops growing past this many bytes, so one write(2) stays reasonable.
const BATCH_BYTES: usize = 1 << 20;
/// Lines nobody waits on are synced this long after they are written, in one
/// `fdatasync` with whatever else was written meanwhile: a power cut loses at most
/// about this much (plus one sync) of such lines, and a stream of jobs costs the disk
/// a few syncs a second instead of one per job.
const COMMIT_DELAY: Duration = Duration::from_millis(200);
/// Lines appended past the compaction trigger while a compaction runs (or half the
/// history, if more) before appenders wait for it: a flood of 1 000 jobs a second
/// has half a second, past one sync of an SD card and the rewrite.
const HELD_PAST: usize = 1000;
/// Lines past the compaction trigger (or a quarter of the history, if more) before an
/// appender starts a compaction aside: the journal thread, told at the trigger, is
/// lagging by then, not merely a moment late.
const ASIDE_PAST: usize = 32;
/// Syncs tried before giving up when every one found the file compacted meanwhile
/// (compactions are at least `history` appends apart, so one retry is the most seen).
const SYNC_TRIES: usize = 4;

/// What start-up found in the journal.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest `history` jobs, oldest first, all final (`interrupted` for those that
    /// were queued or running when the agent died) but requests still held for a human
    /// (`expired` if their time ran out meanwhile).
    pub records: Vec<JobRecord>,
    /// Groups of interrupted jobs that still exist under this boot: to be ended.
    pub orphans: Vec<Orphan>,
    /// The highest TOTP time step the journal saw used (0: none).
    pub last_step: u64,
}

/// Names a request to the journal thread in its report.
pub type Ticket = u64;

/// How far the lines of a ticket must get before it is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// In the kernel: survives a crash of the agent.
    Written,
    /// On disk: survives a power cut.
    Synced,
}

/// The journal thread's report on a ticket.
#[derive(Debug)]
pub struct Done {
    pub ticket: Ticket,
    /// Why the lines did not get as far as needed (or the work failed).
    pub result: Result<(), String>,
}

/// Work for the journal thread; boxed so the journal need not know what it is (the
/// auth state's save).
pub type Work = Box<dyn FnOnce() -> Result<(), String> + Send>;

enum Op {
    Append {
        bytes: Vec<u8>,
        lines: usize,
        done: Option<(Ticket, Need)>,
    },
    Run(Work, Ticket),
    /// Work nobody waits for: run at the next group commit.
    Later(Work),
    /// A job thread appended: sync soon (and compact if due).
    Dirty,
    /// Sync now and answer.
    Sync(SyncSender<()>),
}

/// The file and its counters, shared by every appender.
pub(super) struct Open {
    pub(super) file: Arc<File>,
    /// Opened for writing (not: only for reading, as the disk refused writes when the
    /// agent started; the next append opens it again).
    pub(super) writable: bool,
    /// Where the next line is written: the end of the lines, which [`TAIL`] zeros or
    /// fewer follow.
    pub(super) end: u64,
    /// End lines of jobs start-up found cut off, which the disk did not take then:
    /// written before the next line it takes (at most `history` records).
    owed: Vec<u8>,
    /// Appends so far, and how many of them are known synced.
    pub(super) appended: u64,
    pub(super) synced: u64,
    /// Lines and bytes in the file now, and the counts that trigger a compaction.
    pub(super) lines: usize,
    pub(super) compact_at: usize,
    pub(super) bytes: usize,
    pub(super) compact_bytes: usize,
    /// A write failed and may have left half a line behind.
    pub(super) torn: bool,
    /// The journal thread was told there is something to sync, or to compact.
    told: bool,
    pub(super) told_compact: bool,
    /// A compaction is under way (one at a time).
    pub(super) compacting: bool,
    /// How many compactions put a new file in place: a sync of the file before one
    /// proves nothing about the file after it.
    pub(super) generation: u64,
    /// A compaction renamed a file in place that the directory has not been synced for.
    pub(super) dir_unsynced: bool,
}

pub(super) struct Shared {
    open: Mutex<Open>,
    /// Signalled when a compaction ends, to the appenders it held (see [`Shared::append`]).
    pub(super) compacted: Condvar,
    pub(super) path: PathBuf,
    pub(super) history: usize,
    boot: Option<String>,
    tickets: AtomicU64,
    /// A job thread's append must be told to the journal thread; it is, by
    /// [`Journal::poke`], once the job is answered or lasting, so that thread's wake-up
    /// is not between a request and its answer.
    poke: AtomicBool,
    /// Whether the disk took the last write and sync (`/health`).
    disk: StateDisk,
    /// Tests: the next compaction started aside waits for this before its switch.
    #[cfg(test)]
    pub(super) hold: Mutex<Option<Receiver<()>>>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `bytes` (`lines` whole lines) in one write; returns whether the journal
    /// thread must be told (first unsynced append since its last sync, or the file is
    /// due for a compaction).
    fn append(self: &Arc<Self>, bytes: &[u8], lines: usize) -> io::Result<bool> {
        let mut open = self.lock();
        // A compaction does not stop appenders, but it does once the file it is to
        // replace is [`HELD_PAST`] lines (or a quarter of the bytes) past the trigger,
        // so a flood cannot outgrow the bound.
        while open.compacting && self.past(&open, HELD_PAST.max(self.history / 2)) {
            open = self
                .compacted
                .wait(open)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !open.writable {
            let (file, end) = self.reopen()?;
            (open.file, open.end) = (Arc::new(file), end);
            open.writable = true;
        }
        // After a failed write, end the fragment so the next line stands alone.
        let fix: &[u8] = if open.torn { b"\n" } else { b"" };
        let written = if fix.is_empty() && open.owed.is_empty() {
            write_at(&open.file, bytes, open.end)
        } else {
            write_at(&open.file, &[fix, &open.owed, bytes].concat(), open.end)
        };
        open.end += match &written {
            Ok(n) | Err((n, _)) => *n,
        };
        if let Err((_, err)) = written {
            open.torn = true;
            return Err(err);
        }
        let owed = std::mem::take(&mut open.owed);
        open.torn = false;
        open.appended += 1;
        open.lines += lines + owed.iter().filter(|&&b| b == b'\n').count();
        open.bytes += bytes.len() + owed.len();
        let sync = !std::mem::replace(&mut open.told, true);
        // The journal thread compacts, but while it sits in a slow sync job threads go
        // on appending: well past the trigger, a thread of its own compacts, so the
        // file's size has a bound however slow the disk, and the appender (a job's
        // thread, between a request and its answer) never waits for that sync.
        if self.past(&open, (self.history / 4).max(ASIDE_PAST))
            && let Some(snapshot) = open.claim()
        {
            drop(open);
            self.compact_aside(snapshot);
            return Ok(sync);
        }
        let due = open.lines >= open.compact_at || open.bytes >= open.compact_bytes;
        let compact = due && !std::mem::replace(&mut open.told_compact, true);
        Ok(sync || compact)
    }

    /// The file opened for writing, once the disk that refused it at start-up takes
    /// writes again, with where lines go in it.
    fn reopen(&self) -> io::Result<(File, u64)> {
        let file = files::open_read_write(WHAT, &self.path, 0o600).map_err(|err| match err {
            FileError::Io { err, .. } => err,
            other => io::Error::other(other.to_string()),
        })?;
        let end = write_position(&file, &self.path)?;
        log::warn!("{} can be written again", self.path.display());
        Ok((file, end))
    }

    /// Writes [`TAIL`] more zeros past the file's end once fewer than half that many are
    /// left after its last line. The group commit's sync that follows puts them on
    /// disk, so the lines later written over them, a code's among them, sync in one
    /// flush. Nothing is lost if it fails: the lines then grow the file as appends.
    fn extend_tail(&self) {
        let open = self.lock();
        if let Ok(meta) = open.file.metadata()
            && open.writable
            && meta.len().saturating_sub(open.end) < TAIL / 2
        {
            // Under the lock: an appender past the end must not meet zeros written after it.
            let _ = write_zeros(&open.file, meta.len().max(open.end));
        }
    }

    /// `lines` past the compaction trigger, or a quarter of the history's bytes.
    fn past(&self, open: &Open, lines: usize) -> bool {
        open.lines >= open.compact_at.saturating_add(lines)
            || open.bytes >= open.compact_bytes.saturating_add(HISTORY_BYTES / 4)
    }

    /// One sync for everything appended so far, by anyone; the lock is not held
    /// meanwhile, so appenders never wait for the disk. After a compaction, the
    /// directory is synced too, first time; a compaction that replaced the file
    /// meanwhile makes it sync the new one (a few times at most).
    ///
    /// A code's sync (`for_code`) is an `fdatasync`: over the zeros, one flush. A group
    /// commit is an `fsync`, which on ext4 also commits what the file system did
    /// meanwhile, the result files' renames among them: a job's end line is then never
    /// on disk without its result file's name, as when each sync grew the file.
    fn sync(&self, for_code: bool) -> io::Result<()> {
        let failed = |err: io::Error| {
            log::error!(
                "journal {}: cannot sync to disk: {err}; what depends on it is refused",
                self.path.display()
            );
            self.disk
                .failed(format!("{}: cannot sync: {err}", self.path.display()));
            err
        };
        for _ in 0..SYNC_TRIES {
            let (file, upto, generation, dir) = {
                let mut open = self.lock();
                open.told = false;
                let file = Arc::clone(&open.file);
                (file, open.appended, open.generation, open.dir_unsynced)
            };
            if for_code {
                file.sync_data()
            } else {
                file.sync_all()
            }
            .map_err(failed)?;
            if dir {
                files::sync_dir(&self.path).map_err(failed)?;
            }
            let mut open = self.lock();
            if open.generation == generation {
                open.synced = open.synced.max(upto);
                open.dir_unsynced &= !dir;
                drop(open);
                self.disk.synced();
                return Ok(());
            }
        }
        Err(failed(io::Error::other(
            "the file was compacted during every try",
        )))
    }

    fn complain(&self, err: &io::Error) {
        log::error!(
            "journal {}: cannot record job history: {err}; jobs still run, but may be \
             missing after a restart",
            self.path.display()
        );
        self.disk
            .failed(format!("{}: cannot write: {err}", self.path.display()));
    }
}

/// Handle to the journal; cheap to clone into job threads.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
    tx: Sender<Op>,
}

impl Journal {
    /// Loads the journal from `state_dir` (missing is a fresh start), compacted to the
    /// newest `history` jobs, marks jobs that never ended `interrupted` (held requests
    /// whose time ran out `expired`; those still in time stay held) and journals that,
    /// and starts the journal thread, whose reports arrive on the returned
    /// receiver with a `wake()` of `waker`. The file must be a regular file of ours, mode
    /// 0600 or stricter, and is never opened through a link.
    pub fn open(
        state_dir: &Path,
        history: usize,
        waker: Arc<Waker>,
    ) -> Result<(Journal, Recovered, Receiver<Done>), FileError> {
        files::ensure_private_dir("state dir", state_dir)?;
        let path = state_dir.join(FILE_NAME);
        let boot = sys::boot_id();
        let (mut jobs, size) = load(&path, history, boot.as_deref())?;
        let (seen_until, last_step) = (size.seen_until, size.last_step);
        let (mut lines, mut bytes) = (size.lines, size.bytes);
        // Before `end_cut_off` ends any: the jobs that had ended before the agent went.
        remove_unused(|key| {
            let mut named = jobs.iter().filter(|job| job.record.id.ends_with(key));
            let first = named.next()?;
            Some(first.record.status.is_final() && named.all(|job| job.record.status.is_final()))
        });
        let (ended_now, orphans) = end_cut_off(&mut jobs, boot.as_deref(), seen_until);
        let jobs = keep(jobs, history);
        let mut owed = Vec::new();
        if !ended_now.is_empty() {
            // Their end is known now: journal it, so the next start-up agrees. A disk
            // that takes no writes gets it with the first line it takes.
            match rewrite(&path, &jobs, last_step) {
                Ok(written) => (lines, bytes) = written,
                Err(err) if err.disk_refuses_writes() => {
                    log::error!(
                        "{err}: the end of {} job(s) cut off is journaled once the disk \
                         takes writes",
                        ended_now.len()
                    );
                    let ends: Vec<_> = (jobs.iter())
                        .filter(|kept| ended_now.contains(&kept.record.id))
                        .map(|kept| Line::End { job: &kept.record })
                        .collect();
                    owed = encode(&ends).unwrap_or_default();
                }
                Err(err) => return Err(err),
            }
        }
        let (file, read_only) = match files::open_read_write(WHAT, &path, 0o600) {
            Ok(file) => (file, None),
            // Read-only (the file is there: a full disk opens it): looked at, and opened
            // for appending by the first append once the disk takes writes again.
            Err(err) if err.disk_refuses_writes() => {
                let Ok((file, _)) = files::open_trusted(WHAT, &path, Trust::Private) else {
                    return Err(err);
                };
                // The load above said why, and what it means for codes.
                log::warn!(
                    "journal {}: opened for reading only, until the disk takes writes again",
                    path.display()
                );
                (file, Some(err.to_string()))
            }
            Err(err) => return Err(err),
        };
        let end = match read_only {
            None => write_position(&file, &path),
            // Nothing is written through it: the next append opens it again.
            Some(_) => data_end(&file).map(|(end, _)| end),
        };
        let end = end.map_err(|err| FileError::Io {
            what: WHAT.into(),
            path: path.clone(),
            err,
        })?;
        let (tx, rx) = channel();
        let (done_tx, done_rx) = channel();
        let shared = Arc::new(Shared {
            open: Mutex::new(Open {
                file: Arc::new(file),
                writable: read_only.is_none(),
                end,
                owed,
                appended: 0,
                synced: 0,
                lines,
                compact_at: next_compaction(lines, history),
                bytes,
                compact_bytes: next_compaction(bytes, HISTORY_BYTES),
                torn: false,
                told: false,
                told_compact: false,
                compacting: false,
                generation: 0,
                dir_unsynced: false,
            }),
            compacted: Condvar::new(),
            path: path.clone(),
            history,
            boot,
            tickets: AtomicU64::new(0),
            poke: AtomicBool::new(false),
            disk: StateDisk::default(),
            #[cfg(test)]
            hold: Mutex::new(None),
        });
        if let Some(why) = read_only {
            shared.disk.failed(why);
        }
        let writer = Writer {
            shared: Arc::clone(&shared),
            done: done_tx,
            waker,
        };
        std::thread::Builder::new()
            .name("journal".into())
            .stack_size(256 * 1024)
            .spawn(move || writer.run(&rx))
            .map_err(|err| FileError::Io {
                what: "journal writer thread for".into(),
                path,
                err,
            })?;
        let records = jobs.into_iter().map(|k| k.record).collect();
        let recovered = Recovered {
            records,
            orphans,
            last_step,
        };
        Ok((Journal { shared, tx }, recovered, done_rx))
    }

    /// From a job thread: the job's submission, written before this returns, and with
    /// `step` (the code that authorised it) also that step, in the same write, synced.
    /// `Err` says why the code could not be made durable: the job must not run.
    pub fn submitted_now(&self, record: &JobRecord, step: Option<u64>) -> Result<(), String> {
        let used = step.map(|step| Line::<&JobRecord>::Used { step });
        let lines: Vec<_> = used
            .into_iter()
            .chain([Line::Submit { job: record }])
            .collect();
        let Some(bytes) = encode(&lines) else {
            return Err("a journal line could not be encoded".into());
        };
        let failed = |err: &io::Error| format!("{}: {err}", self.shared.path.display());
        match self.shared.append(&bytes, lines.len()) {
            Ok(tell) => self.poke_later(tell),
            Err(err) => {
                self.shared.complain(&err);
                return Err(failed(&err));
            }
        }
        if step.is_some() {
            self.shared.sync(true).map_err(|err| failed(&err))?;
        }
        Ok(())
    }

    /// From the loop: the submission of a job that cannot start at once (queued, or
    /// waiting for its code to be synced), preceded by the `Used` line of the code that
    /// authorised it, in one write. Reported when it got as far as `need`.
    pub fn submit(&self, record: &JobRecord, step: Option<u64>, need: Need) -> Ticket {
        let mut lines = step
            .map(|step| Line::<&JobRecord>::Used { step })
            .into_iter()
            .collect::<Vec<_>>();
        lines.push(Line::Submit { job: record });
        self.send_lines(&lines, need)
    }

    /// From the loop: a code of time step `step` was accepted for something other than
    /// a job (a cancel); reported once synced.
    pub fn used(&self, step: u64) -> Ticket {
        self.send_lines(&[Line::<&JobRecord>::Used { step }], Need::Synced)
    }

    /// The job's process group `pgid` exists. Written now, from the job thread: it only
    /// matters while this boot lasts, and the page cache outlives a crash of the agent.
    pub fn started(&self, id: &str, pgid: u32, started_at: &str) {
        let (leader_start, session) = sys::start_and_session(pgid).unzip();
        self.append_now(&Line::<&JobRecord>::Start {
            id: id.to_owned(),
            pgid,
            started_at: started_at.to_owned(),
            boot: self.shared.boot.clone(),
            leader_start,
            session,
        });
    }

    /// From a job thread (or start-up, amending a record): the job ended with `record`,
    /// written before this returns.
    pub fn ended_now(&self, record: &JobRecord) {
        self.append_now(&Line::End {
            job: &record.for_journal(),
        });
    }

    /// From the loop: a job ended without running (cancelled while queued, or the
    /// agent is stopping); reported once written.
    pub fn ended(&self, record: &JobRecord) -> Ticket {
        self.send_lines(
            &[Line::End {
                job: &record.for_journal(),
            }],
            Need::Written,
        )
    }

    /// Runs `work` on the journal thread, after the lines sent with it are written and,
    /// where needed, synced; reports its result.
    pub fn run(&self, work: Work) -> Ticket {
        let ticket = self.ticket();
        // A send fails only if the thread is gone; then nothing will ever be reported,
        // and the caller's wait runs out (it treats that as a failure).
        let _ = self.tx.send(Op::Run(work, ticket));
        ticket
    }

    /// Runs `work` on the journal thread at its next group commit, when nobody waits
    /// for it: its disk writes then never share a sync with a code's. A failure is
    /// logged.
    pub fn run_later(&self, work: Work) {
        let _ = self.tx.send(Op::Later(work));
    }

    /// Returns once every line appended before is written and fdatasynced (or the
    /// journal failed and logged why). Blocks: for shutdown and tests, never the loop.
    pub fn sync(&self) {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Op::Sync(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Whether the state disk took the last write and sync.
    pub fn disk_health(&self) -> DiskHealth {
        self.shared.disk.health()
    }

    fn ticket(&self) -> Ticket {
        self.shared.tickets.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn append_now(&self, line: &Line<&JobRecord>) {
        let Some(bytes) = encode(std::slice::from_ref(line)) else {
            return;
        };
        match self.shared.append(&bytes, 1) {
            Ok(tell) => self.poke_later(tell),
            Err(err) => self.shared.complain(&err),
        }
    }

    fn poke_later(&self, tell: bool) {
        if tell {
            self.shared.poke.store(true, Ordering::Release);
        }
    }

    /// From a job thread, once its job is answered (or has proved lasting): tells the
    /// journal thread what this thread's appends left to sync or compact. Group commit
    /// starts its delay a moment later than the append, and no request waits for it.
    pub fn poke(&self) {
        if self.shared.poke.swap(false, Ordering::Acquire) {
            let _ = self.tx.send(Op::Dirty);
        }
    }

    fn send_lines(&self, lines: &[Line<&JobRecord>], need: Need) -> Ticket {
        let ticket = self.ticket();
        let op = match encode(lines) {
            Some(bytes) => Op::Append {
                bytes,
                lines: lines.len(),
                done: Some((ticket, need)),
            },
            // Reported as a failure by the journal thread, like any other.
            None => Op::Run(
                Box::new(|| Err("a journal line could not be encoded".into())),
                ticket,
            ),
        };
        let _ = self.tx.send(op);
        ticket
    }
}

/// Where lines go in the journal `file`, just opened for writing: after its last line,
/// over the zeros that follow. Bytes after those lines that are not zeros (what a
/// crash kept of lines never synced, past an older end) are cut off first, so that
/// lines written up to them never run into them.
fn write_position(file: &File, path: &Path) -> io::Result<u64> {
    let (end, clean) = data_end(file)?;
    if !clean {
        log::warn!("journal {}: cut after its last line", path.display());
        file.set_len(end)?;
    }
    Ok(end)
}

/// JSON lines, each ending in `\n`; `None` (logged) if one cannot be encoded.
fn encode(lines: &[Line<&JobRecord>]) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(512);
    for line in lines {
        if let Err(err) = serde_json::to_writer(&mut bytes, line) {
            log::error!("cannot encode a journal line: {err}");
            return None;
        }
        bytes.push(b'\n');
    }
    Some(bytes)
}

/// Lines the journal thread gathered from the loop, for one write.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: usize,
    waits: Vec<(Ticket, Need)>,
}

/// The journal thread: loop-side appends, syncs, compaction, and the reports.
struct Writer {
    shared: Arc<Shared>,
    done: Sender<Done>,
    waker: Arc<Waker>,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Op>) {
        // Tickets whose lines are written and wait for the next sync.
        let mut to_sync: Vec<Ticket> = Vec::new();
        let mut syncs: Vec<SyncSender<()>> = Vec::new();
        let mut later: Vec<Work> = Vec::new();
        // When unsynced lines (or work) nobody waits for were first seen.
        let mut dirty_since: Option<Instant> = None;
        loop {
            let first = match dirty_since {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(since) => rx
                    .recv_timeout((since + COMMIT_DELAY).saturating_duration_since(Instant::now())),
            };
            let mut next = match first {
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut reports = Vec::new();
            let mut batch = Batch::default();
            let mut works = Vec::new();
            while let Some(op) = next.take() {
                match op {
                    Op::Append { bytes, lines, done } => {
                        batch.bytes.extend_from_slice(&bytes);
                        batch.lines += lines;
                        batch.waits.extend(done);
                    }
                    // After this batch's sync and its reports (below).
                    Op::Run(work, ticket) => works.push((work, ticket)),
                    Op::Later(work) => later.push(work),
                    Op::Dirty => {}
                    Op::Sync(waiter) => syncs.push(waiter),
                }
                if batch.bytes.len() < BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            self.write(batch, &mut to_sync, &mut reports);
            let unsynced = {
                let mut open = self.shared.lock();
                // Nothing left to sync: the next append must tell this thread again. A
                // compaction's rename is synced like a line.
                let unsynced = open.appended > open.synced || open.dir_unsynced;
                open.told &= unsynced;
                unsynced
            };
            // The group commit is due, or a stop wants everything on disk.
            let due = dirty_since.is_some_and(|since| since.elapsed() >= COMMIT_DELAY)
                || !syncs.is_empty();
            let synced = !to_sync.is_empty() || (unsynced && due);
            if synced {
                // Not when a code waits: its sync must not also commit a new size.
                let for_code = !to_sync.is_empty();
                if !for_code {
                    self.shared.extend_tail();
                }
                let result = (self.shared.sync(for_code))
                    .map_err(|err| format!("{}: {err}", self.shared.path.display()));
                for ticket in to_sync.drain(..) {
                    reports.push(Done {
                        ticket,
                        result: result.clone(),
                    });
                }
            }
            // Reported before the work runs: a code waiting for its sync must not wait
            // for the auth state's own write, rename and syncs too.
            self.report(&mut reports);
            for (work, ticket) in works {
                let result = work();
                if let Err(err) = &result {
                    self.shared.disk.failed(err.clone());
                }
                reports.push(Done { ticket, result });
            }
            if due {
                for work in later.drain(..) {
                    if let Err(err) = work() {
                        log::error!("{err}");
                        self.shared.disk.failed(err);
                    }
                }
            }
            if synced || due {
                dirty_since = None;
            }
            if dirty_since.is_none() && ((unsynced && !synced) || !later.is_empty()) {
                dirty_since = Some(Instant::now());
            }
            // Compact before answering, so a finished `sync` sees the file settled.
            let due = {
                let open = self.shared.lock();
                open.lines >= open.compact_at || open.bytes >= open.compact_bytes
            };
            if due {
                self.shared.compact();
            }
            for waiter in syncs.drain(..) {
                let _ = waiter.send(());
            }
            self.report(&mut reports);
        }
    }

    /// Sends the reports and wakes the loop once for all of them.
    fn report(&self, reports: &mut Vec<Done>) {
        if reports.is_empty() {
            return;
        }
        for report in reports.drain(..) {
            let _ = self.done.send(report);
        }
        let _ = self.waker.wake();
    }

    /// Writes the batch; tickets that needed it written are reported, those that need
    /// a sync wait for it.
    fn write(&mut self, batch: Batch, to_sync: &mut Vec<Ticket>, reports: &mut Vec<Done>) {
        if batch.bytes.is_empty() {
            return;
        }
        let written = self.shared.append(&batch.bytes, batch.lines).map(|_| ());
        if let Err(err) = &written {
            self.shared.complain(err);
        }
        for (ticket, need) in batch.waits {
            match (&written, need) {
                (Ok(()), Need::Synced) => to_sync.push(ticket),
                (Ok(()), Need::Written) => reports.push(Done {
                    ticket,
                    result: Ok(()),
                }),
                (Err(err), _) => reports.push(Done {
                    ticket,
                    result: Err(format!("{}: {err}", self.shared.path.display())),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::journal_file::{Group, Kept, Verdict, compact, judge, judge_with};
    use super::super::record::{JOURNAL_OUTPUT_MAX, Status};
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::os::unix::process::CommandExt;

    fn tempdir(tag: &str) -> PathBuf {
        crate::sys::files::test_dir(&format!("journal-{tag}"))
    }

    /// The journal's lines: its text up to the zeros kept after them.
    fn lines_of(path: impl AsRef<Path>) -> String {
        let bytes = std::fs::read(path).unwrap();
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8(bytes[..end].to_vec()).unwrap()
    }

    /// A waker nobody polls: the tests read the reports from the receiver.
    fn waker() -> Arc<Waker> {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        // The registry must outlive the waker; a test process can afford the leak.
        std::mem::forget(poll);
        waker
    }

    fn open(dir: &Path, history: usize) -> (Journal, Recovered, Receiver<Done>) {
        Journal::open(dir, history, waker()).unwrap()
    }

    /// A restart with `history` serves exactly jobs `ns`, oldest first.
    fn assert_recovers(dir: &Path, history: usize, ns: std::ops::Range<usize>) {
        let (_journal, recovered, _done) = open(dir, history);
        let ids: Vec<String> = recovered.records.into_iter().map(|r| r.id).collect();
        let want: Vec<String> = ns.map(|n| record(n, Status::Queued).id).collect();
        assert_eq!(ids, want);
    }

    /// A restart with `history` finds `last_step` used and `jobs` records.
    fn assert_reopens(dir: &Path, history: usize, last_step: u64, jobs: usize) {
        let (_journal, recovered, _done) = open(dir, history);
        assert_eq!(recovered.last_step, last_step);
        assert_eq!(recovered.records.len(), jobs);
    }

    /// Waits until no compaction is under way (one an appender started aside).
    fn settle(journal: &Journal) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while journal.shared.lock().compacting {
            assert!(Instant::now() < deadline, "a compaction never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Jobs `ns`, submitted and succeeded, as job threads write them.
    fn run_jobs(journal: &Journal, ns: std::ops::Range<usize>) {
        for n in ns {
            journal
                .submitted_now(&record(n, Status::Queued), None)
                .unwrap();
            journal.ended_now(&record(n, Status::Succeeded));
        }
    }

    fn record(n: usize, status: Status) -> JobRecord {
        JobRecord {
            status,
            exit_code: status.is_final().then_some(0),
            stdout: format!("{n}\n"),
            ..JobRecord::queued(
                format!("{n:032x}"),
                format!("echo {n}"),
                vec!["/bin/echo".into(), n.to_string()],
                "echo".into(),
                "2026-01-01T00:00:00.000Z".into(),
            )
        }
    }

    #[test]
    fn survives_a_restart_and_marks_unfinished_jobs_interrupted() {
        let dir = tempdir("restart");
        let (journal, recovered, _done) = open(&dir, 10);
        assert!(recovered.records.is_empty());
        let done = record(1, Status::Succeeded);
        journal
            .submitted_now(&record(1, Status::Queued), None)
            .unwrap();
        journal.ended_now(&done);
        journal
            .submitted_now(&record(2, Status::Queued), None)
            .unwrap();
        journal
            .submitted_now(&record(3, Status::Queued), None)
            .unwrap();
        let mut leader = std::process::Command::new("/bin/sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        journal.started(
            &record(3, Status::Running).id,
            leader.id(),
            "2026-01-01T00:00:01.000Z",
        );
        journal.sync();
        drop(journal);

        let path = dir.join(FILE_NAME);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let (_journal, recovered, _done) = open(&dir, 10);
        let statuses: Vec<Status> = recovered.records.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [Status::Succeeded, Status::Interrupted, Status::Interrupted]
        );
        assert_eq!(recovered.records[0], done);
        assert_eq!(
            recovered.records[2].started_at.as_deref(),
            Some("2026-01-01T00:00:01.000Z")
        );
        assert_eq!(
            recovered.orphans,
            [Orphan {
                id: record(3, Status::Queued).id,
                pgid: leader.id(),
                cgroup: None
            }]
        );
        leader.kill().unwrap();
        leader.wait().unwrap();
        // Compacted at start-up: one End line per job, interrupted ones included.
        let text = lines_of(&path);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.lines().all(|l| l.starts_with(r#"{"ev":"end""#)),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_code_and_its_job_go_out_in_one_write_and_are_reported_once_synced() {
        let dir = tempdir("tickets");
        let (journal, _, done) = open(&dir, 10);
        let job = record(1, Status::Queued);
        let ticket = journal.submit(&job, Some(57_000_000), Need::Synced);
        let report = done.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(report.ticket, ticket);
        assert_eq!(report.result, Ok(()));
        let text = lines_of(dir.join(FILE_NAME));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], r#"{"ev":"used","step":57000000}"#);
        assert!(lines[1].starts_with(r#"{"ev":"submit""#), "{text}");
        // Without a code, a queued job's submission is reported once written.
        let ticket = journal.submit(&record(2, Status::Queued), None, Need::Written);
        let report = done.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((report.ticket, report.result), (ticket, Ok(())));
        // Work runs after the lines sent with it, and is reported too.
        let ticket = journal.run(Box::new(|| Err("no".into())));
        let report = done.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((report.ticket, report.result), (ticket, Err("no".into())));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_code_is_written_over_synced_zeros_so_its_sync_commits_no_new_size() {
        let dir = tempdir("zeros");
        let path = dir.join(FILE_NAME);
        let (journal, _, _done) = open(&dir, 100);
        run_jobs(&journal, 0..3);
        // The group commit writes the zeros ahead and syncs them with the lines.
        journal.sync();
        let len = std::fs::metadata(&path).unwrap().len();
        let end = lines_of(&path).len() as u64;
        assert!(len >= end + TAIL / 2, "{len} bytes for {end} of lines");
        journal
            .submitted_now(&record(3, Status::Queued), Some(61_000_000))
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        let text = lines_of(&path);
        assert!(text.contains(r#"{"ev":"used","step":61000000}"#), "{text}");
        drop(journal);
        assert_reopens(&dir, 100, 61_000_000, 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lines_a_crash_left_past_the_zeros_are_never_read_back() {
        let dir = tempdir("past-zeros");
        let path = dir.join(FILE_NAME);
        let line = |l: &Line<&JobRecord>| serde_json::to_string(l).unwrap();
        let kept = line(&Line::End {
            job: &record(1, Status::Succeeded),
        });
        // Lines never synced, of which the crash kept a later block but not the one
        // after the last line: zeros, then whole lines.
        let stale = format!(
            "{}\n{}\n",
            line(&Line::<&JobRecord>::Used { step: 99_000_000 }),
            line(&Line::End {
                job: &record(2, Status::Succeeded)
            })
        );
        let mut text = format!("{kept}\n").into_bytes();
        text.extend(vec![0u8; 5000]);
        text.extend(stale.as_bytes());
        text.extend(vec![0u8; 300]);
        files::write_atomic(WHAT, &path, &text, 0o600).unwrap();
        let (journal, recovered, _done) = open(&dir, 10);
        assert_eq!(recovered.last_step, 0);
        let ids: Vec<_> = recovered.records.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, [record(1, Status::Succeeded).id]);
        // Start-up's compaction left the lines and fresh zeros, nothing stale.
        let bytes = std::fs::read(&path).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("99000000"));
        run_jobs(&journal, 3..4);
        drop(journal);
        assert_reopens(&dir, 10, 0, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_opened_with_stale_bytes_past_its_lines_is_cut_there() {
        let dir = tempdir("cut");
        let path = dir.join(FILE_NAME);
        // Past the first 64 KiB read, so the end and the stale bytes are in other reads.
        let mut text = vec![b'x'; 70_000];
        text.push(b'\n');
        text.extend(vec![0u8; 70_000]);
        text.extend(b"{\"ev\":\"used\",\"step\":5}\n");
        files::write_atomic(WHAT, &path, &text, 0o600).unwrap();
        let file = files::open_read_write(WHAT, &path, 0o600).unwrap();
        assert_eq!(data_end(&file).unwrap(), (70_001, false));
        assert_eq!(write_position(&file, &path).unwrap(), 70_001);
        assert_eq!(file.metadata().unwrap().len(), 70_001);
        assert_eq!(std::fs::read(&path).unwrap(), text[..70_001]);
        // Zeros after the lines, or none: where the lines end, and nothing to cut.
        file.write_all_at(&[0u8; 100], 70_001).unwrap();
        assert_eq!(write_position(&file, &path).unwrap(), 70_001);
        assert_eq!(file.metadata().unwrap().len(), 70_101);
        file.set_len(70_001).unwrap();
        assert_eq!(data_end(&file).unwrap(), (70_001, true));
        file.set_len(0).unwrap();
        assert_eq!(data_end(&file).unwrap(), (0, true));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_highest_used_step_survives_compaction_and_restart() {
        let dir = tempdir("steps");
        let (journal, _, done) = open(&dir, 3);
        journal.used(41);
        journal.used(43);
        journal.used(42);
        for _ in 0..3 {
            assert_eq!(
                done.recv_timeout(Duration::from_secs(10)).unwrap().result,
                Ok(())
            );
        }
        run_jobs(&journal, 0..30);
        // Appenders start compactions aside and go on: one more, with nothing appended
        // meanwhile, leaves only what compaction keeps.
        settle(&journal);
        journal.shared.compact();
        let text = lines_of(dir.join(FILE_NAME));
        assert!(text.lines().count() < 20, "not compacted:\n{text}");
        assert!(text.starts_with(r#"{"ev":"used","step":43}"#), "{text}");
        drop(journal);
        assert_reopens(&dir, 3, 43, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_submission_never_takes_back_an_end_already_read() {
        let dir = tempdir("order");
        let path = dir.join(FILE_NAME);
        let line = |l: &Line<&JobRecord>| serde_json::to_string(l).unwrap();
        let done = record(1, Status::Succeeded);
        let text = format!(
            "{}\n{}\n",
            line(&Line::End { job: &done }),
            line(&Line::Submit {
                job: &record(1, Status::Running)
            })
        );
        files::write_atomic(WHAT, &path, text.as_bytes(), 0o600).unwrap();
        let (_journal, recovered, _done) = open(&dir, 10);
        assert_eq!(recovered.records, [done]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn torn_and_garbage_lines_are_skipped() {
        let dir = tempdir("torn");
        let path = dir.join(FILE_NAME);
        let good = serde_json::to_string(&Line::End {
            job: &record(1, Status::Failed),
        })
        .unwrap();
        let text = format!("{good}\nnot json\n\n{}", &good[..good.len() / 2]);
        files::write_atomic(WHAT, &path, text.as_bytes(), 0o600).unwrap();
        let (_journal, recovered, _done) = open(&dir, 10);
        assert_eq!(recovered.records.len(), 1);
        assert_eq!(recovered.records[0].status, Status::Failed);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keeps_unfinished_jobs_and_the_newest_history() {
        let jobs: Vec<Kept> = [
            Status::Succeeded,
            Status::Running,
            Status::Failed,
            Status::Succeeded,
            Status::Cancelled,
        ]
        .into_iter()
        .enumerate()
        .map(|(n, s)| Kept {
            record: record(n, s),
            group: None,
        })
        .collect();
        let kept: Vec<String> = keep(jobs, 2).into_iter().map(|k| k.record.id).collect();
        assert_eq!(
            kept,
            [
                record(1, Status::Running).id,
                record(3, Status::Queued).id,
                record(4, Status::Queued).id
            ]
        );
    }

    #[test]
    fn long_output_is_cut_in_the_journal_only() {
        let dir = tempdir("cut");
        let (journal, _, _done) = open(&dir, 5);
        let mut long = record(1, Status::Succeeded);
        long.stdout = "é".repeat(JOURNAL_OUTPUT_MAX);
        journal.submitted_now(&long, None).unwrap();
        journal.ended_now(&long);
        journal.sync();
        drop(journal);
        let (_journal, recovered, _done) = open(&dir, 5);
        let back = &recovered.records[0];
        assert!(back.truncated);
        assert!(
            back.stdout.len() <= JOURNAL_OUTPUT_MAX && back.stdout.len() > JOURNAL_OUTPUT_MAX - 2
        );
        assert_eq!(
            long.stdout.len(),
            2 * JOURNAL_OUTPUT_MAX,
            "the live record is untouched"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn compaction_bounds_the_file() {
        let dir = tempdir("compact");
        let (journal, _, _done) = open(&dir, 5);
        for n in 0..100 {
            run_jobs(&journal, n..n + 1);
            journal.sync();
        }
        drop(journal);
        let lines = lines_of(dir.join(FILE_NAME)).lines().count();
        assert!(lines <= 10, "{lines} lines for history 5");
        assert_recovers(&dir, 5, 95..100);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn appenders_never_wait_for_a_compaction_and_what_they_append_meanwhile_is_kept() {
        let dir = tempdir("meanwhile");
        let (journal, _, _done) = open(&dir, 20);
        // 40 lines: a compaction is due, but nobody poked the journal thread.
        run_jobs(&journal, 0..20);
        let shared = &journal.shared;
        let old_appends = shared.lock().appended;
        let resynced = shared.compact_with(|| {
            // The new file is written and synced; the lock is free all the while.
            assert!(shared.open.try_lock().is_ok(), "appenders wait");
            // Appenders go on, and one code is reported on disk. Its append takes the
            // file past the point where an appender compacts: it does not start a
            // second compaction.
            run_jobs(&journal, 20..22);
            let code = journal.submitted_now(&record(22, Status::Queued), Some(99));
            assert_eq!(code, Ok(()));
        });
        // The code was reported on disk while the old file was the journal: the lines
        // appended meanwhile were synced again in the new one before it took its place.
        assert!(
            resynced,
            "a line reported synced was not synced in the new file"
        );
        let text = lines_of(dir.join(FILE_NAME));
        // The 20 jobs before, one line each now; then everything appended meanwhile,
        // as written.
        assert_eq!(text.lines().count(), 20 + 4 + 2, "{text}");
        for n in 20..23 {
            let id = record(n, Status::Queued).id;
            assert!(text.contains(&id), "{n} lost: {text}");
        }
        {
            let open = shared.lock();
            assert!(!open.compacting && open.generation == 1);
            // The code's line stays counted synced; the rename is left to the next sync.
            assert!(open.synced > old_appends && open.synced == open.appended);
            assert!(open.dir_unsynced);
        }
        journal.sync();
        assert!(!shared.lock().dir_unsynced);
        // Nothing reported synced meanwhile: no second sync under the lock.
        let resynced = shared.compact_with(|| run_jobs(&journal, 23..24));
        assert!(
            !resynced,
            "synced again under the lock with nothing reported synced"
        );
        let text = lines_of(dir.join(FILE_NAME));
        assert!(text.contains(&record(23, Status::Queued).id), "{text}");
        drop(journal);
        let (_journal, recovered, _done) = open(&dir, 20);
        assert_eq!(recovered.last_step, 99);
        let ids: Vec<String> = recovered.records.into_iter().map(|r| r.id).collect();
        // 22 is interrupted now, so ended too: the newest 20.
        let want: Vec<String> = (4..24).map(|n| record(n, Status::Queued).id).collect();
        assert_eq!(ids, want);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_thread_aside_compacts_while_the_journal_thread_is_stuck_and_no_appender_waits() {
        let dir = tempdir("stuck");
        let (journal, _, _done) = open(&dir, 10);
        // The journal thread sits in a slow piece of work, as in a slow sync.
        let (release, stuck) = channel::<()>();
        journal.run(Box::new(move || {
            let _ = stuck.recv();
            Ok(())
        }));
        // The compaction started aside waits before its switch, as in a slow sync.
        let (let_go, hold) = channel::<()>();
        *journal.shared.hold.lock().unwrap() = Some(hold);
        let lines = || {
            let text = lines_of(dir.join(FILE_NAME));
            text.lines().count()
        };
        let mut n = 0;
        // Had the appender compacted itself, it would be done (and not compacting)
        // by the time it returned.
        while !journal.shared.lock().compacting {
            assert!(n < 200, "no compaction started aside ({} lines)", lines());
            run_jobs(&journal, n..n + 1);
            n += 1;
        }
        // Compaction is due at 20 lines; it starts aside [`ASIDE_PAST`] lines past
        // that, plus the line that crossed it.
        let at = lines();
        assert!(
            at <= 20 + ASIDE_PAST + 1,
            "compaction started at {at} lines for history 10"
        );
        std::thread::scope(|scope| {
            let (appended, done) = channel();
            let journal = &journal;
            scope.spawn(move || {
                run_jobs(journal, n..n + 10);
                let _ = appended.send(());
            });
            let waited = done.recv_timeout(Duration::from_secs(10));
            let_go.send(()).unwrap();
            assert!(waited.is_ok(), "appenders waited for the compaction aside");
        });
        settle(&journal);
        // The newest 10 jobs when it began, and the 10 jobs (and the rest of the job
        // that crossed the trigger) appended meanwhile.
        assert!(lines() <= 41, "{} lines after the compaction", lines());
        // Compacted again here, the journal thread finds nothing due once released and
        // cannot be compacting while the file is opened again below.
        journal.shared.compact();
        release.send(()).unwrap();
        journal.sync();
        drop(journal);
        assert_recovers(&dir, 10, n..n + 10);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_job_threads_lines_are_synced_after_its_poke_not_before() {
        let dir = tempdir("poke");
        let (journal, _, _done) = open(&dir, 10);
        let settled = || {
            let open = journal.shared.lock();
            open.appended > 0 && open.synced == open.appended
        };
        run_jobs(&journal, 0..1);
        std::thread::sleep(COMMIT_DELAY * 2);
        assert!(!settled(), "the journal thread was woken before the poke");
        journal.poke();
        let deadline = Instant::now() + COMMIT_DELAY * 10;
        while !settled() {
            assert!(Instant::now() < deadline, "not synced after the poke");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn compaction_keeps_the_newest_jobs_that_fit_the_byte_budget() {
        let dir = tempdir("bytes");
        let path = dir.join(FILE_NAME);
        let mut text = Vec::new();
        let line = |line: &Line<&JobRecord>| serde_json::to_vec(line).unwrap();
        let mut end_len = 0;
        for n in 0..20 {
            let mut big = record(n, Status::Succeeded);
            big.argv.push("a".repeat(10_000));
            text.extend(line(&Line::Submit {
                job: &record(n, Status::Queued),
            }));
            text.push(b'\n');
            // Each started in this boot, the last one newest: what recovery needs.
            text.extend(line(&Line::<&JobRecord>::Start {
                id: big.id.clone(),
                pgid: 4_000_000,
                started_at: String::new(),
                boot: Some("this-boot".into()),
                leader_start: Some(1000 + n as u64),
                session: None,
            }));
            text.push(b'\n');
            let end = line(&Line::End { job: &big });
            end_len = end.len() + 1;
            text.extend(end);
            text.push(b'\n');
        }
        // A job still running, and a torn last line.
        let running = record(99, Status::Queued);
        text.extend(line(&Line::Submit { job: &running }));
        text.extend(b"\n{\"ev\":\"end\",\"job\":{\"id\":");
        files::write_atomic(WHAT, &path, &text, 0o600).unwrap();
        let size = compact(&path, 10, 5 * end_len + 10, Some("this-boot")).unwrap();
        let kept = lines_of(&path).into_bytes();
        assert_eq!(
            (size.lines, size.bytes),
            (6, kept.len()),
            "no start line kept"
        );
        assert_eq!(size.seen_until, Some(1019));
        let other = dir.join("other.jsonl");
        files::write_atomic(WHAT, &other, &text, 0o600).unwrap();
        let size = compact(&other, 10, 1 << 20, Some("other-boot")).unwrap();
        assert_eq!(
            size.seen_until, None,
            "starts of another boot prove nothing"
        );
        let (_journal, recovered, _done) = open(&dir, 10);
        let ids: Vec<String> = recovered.records.iter().map(|r| r.id.clone()).collect();
        let mut want: Vec<String> = (15..20).map(|n| record(n, Status::Queued).id).collect();
        want.push(running.id);
        assert_eq!(ids, want);
        assert_eq!(
            recovered.records[0].argv[2].len(),
            10_000,
            "lines copied whole"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn compaction_keeps_records_whose_text_has_escapes_and_drops_unknown_events() {
        // The survey borrows ids and skips the rest: output full of quotes, newlines
        // and non-ASCII must still be kept whole, and a line of an event it does not
        // know (nor `Line`) goes, as a line that does not parse did.
        let dir = tempdir("escapes");
        let path = dir.join(FILE_NAME);
        let mut odd = record(1, Status::Succeeded);
        odd.stdout = "a \"quoted\" line\n\ttab, ünïcode, \u{1} and \\".into();
        odd.command = "echo \"$HOME\"".into();
        let mut text = Vec::new();
        for job in [&record(0, Status::Succeeded), &odd] {
            text.extend(serde_json::to_vec(&Line::End { job }).unwrap());
            text.push(b'\n');
        }
        text.extend(b"{\"ev\":\"rename\",\"job\":{\"id\":\"x\",\"status\":\"queued\"}}\n");
        text.extend(b"{\"ev\":\"used\"}\n");
        files::write_atomic(WHAT, &path, &text, 0o600).unwrap();
        let size = compact(&path, 10, 1 << 20, None).unwrap();
        assert_eq!(size.lines, 2, "{}", lines_of(&path));
        let (_journal, recovered, _done) = open(&dir, 10);
        let odd_back = recovered.records.iter().find(|r| r.id == odd.id);
        assert_eq!(
            odd_back.map(|r| (&r.stdout, &r.command)),
            Some((&odd.stdout, &odd.command))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_a_symlinked_journal() {
        let dir = tempdir("link");
        std::fs::write(dir.join("elsewhere"), "").unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join(FILE_NAME)).unwrap();
        let err = Journal::open(&dir, 5, waker()).err().unwrap().to_string();
        assert!(
            err.contains("journal file") && err.contains("symbolic link"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn groups_from_another_boot_or_a_reused_number_are_not_ours() {
        let me = std::process::id();
        let boot = sys::boot_id();
        let mine = Group {
            pgid: me,
            boot: boot.clone(),
            leader_start: sys::start_ticks(me),
            session: None,
        };
        assert_eq!(
            judge(&mine, None, boot.as_deref(), None),
            Verdict::Ours(None)
        );
        let reused = Group {
            leader_start: mine.leader_start.map(|t| t - 1),
            ..mine.clone()
        };
        assert!(matches!(
            judge(&reused, None, boot.as_deref(), None),
            Verdict::LeftAlone { .. }
        ));
        assert_eq!(
            judge(&mine, None, Some("another-boot"), None),
            Verdict::Gone
        );
    }

    #[test]
    fn without_its_leader_a_group_is_ours_only_with_a_member_seen_while_the_job_ran() {
        let boot = Some("b");
        // As an older agent's line has it: the job made its own session, numbered as
        // its group.
        let group = Group {
            pgid: 500,
            boot: Some("b".into()),
            leader_start: Some(1000),
            session: None,
        };
        let member = |pid, session, start| sys::Member {
            pid,
            session,
            start,
        };
        let judged = |seen, members: Vec<sys::Member>| {
            judge_with(&group, boot, seen, None, move || Some(members))
        };
        // Forked by the job, in its session, before the agent last wrote a start line.
        assert_eq!(
            judged(Some(1200), vec![member(501, 500, 1100)]),
            Verdict::Ours(None)
        );
        // A stranger that got the number later (a daemon's setsid'd first child that
        // exited): its processes started after the last moment the job was seen.
        let left = judged(Some(1200), vec![member(501, 500, 1300)]);
        assert!(
            matches!(&left, Verdict::LeftAlone { pids, .. } if pids == &[501]),
            "{left:?}"
        );
        // Another session, an earlier start, nothing seen after the job's own start.
        for (seen, m) in [
            (Some(1200), member(501, 77, 1100)),
            (Some(1200), member(501, 500, 999)),
            (Some(1000), member(501, 500, 1001)),
            (None, member(501, 500, 1000)),
        ] {
            assert!(
                matches!(judged(seen, vec![m]), Verdict::LeftAlone { .. }),
                "{seen:?} {m:?}"
            );
        }
        assert_eq!(judged(Some(1200), Vec::new()), Verdict::Gone);
        assert!(matches!(
            judge_with(&group, boot, Some(1200), None, || None),
            Verdict::LeftAlone { .. }
        ));
        // A job of this agent stays in the agent's session (77), which its line records:
        // a member there is the job's, one in the group's own number's session is not.
        let in_agents = Group {
            session: Some(77),
            ..group.clone()
        };
        let judged = |m| judge_with(&in_agents, boot, Some(1200), None, move || Some(vec![m]));
        assert_eq!(judged(member(501, 77, 1100)), Verdict::Ours(None));
        assert!(matches!(
            judged(member(501, 500, 1100)),
            Verdict::LeftAlone { .. }
        ));
        // An agent whose session's leader is outside its pid namespace records 0, as
        // every such session reads: a member there proves nothing.
        let outside = Group {
            session: Some(0),
            ..group.clone()
        };
        assert!(matches!(
            judge_with(&outside, boot, Some(1200), None, || Some(vec![member(501, 0, 1100)])),
            Verdict::LeftAlone { why, .. } if why.contains("outside this pid namespace")
        ));
    }
}
