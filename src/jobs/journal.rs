//! The job journal, `<state_dir>/jobs.jsonl`: one JSON line per event (a job submitted,
//! its process group started, the job ended), so history survives a restart, and a job
//! cut off by a crash reads `interrupted` and its processes can be found and ended.
//!
//! One writer thread owns the file. Lines arrive over a channel and are written in
//! batches; [`Journal::sync`] returns once everything sent before it is on disk, with one
//! fdatasync for all the jobs that asked meanwhile (group commit). The file is rewritten
//! atomically with only what the newest `history` jobs need (and no more of them than
//! [`HISTORY_BYTES`] of lines) when it holds about twice that many lines or bytes, and
//! at every start-up, which also drops a torn last line. Compaction streams the file
//! twice (an index of ids, then a copy of the lines kept), so it never holds more of it
//! in memory than one line.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use serde::{Deserialize, Serialize};

use super::contain::left_by;
use super::record::{HISTORY_BYTES, JobRecord, Status};
use crate::audit;
use crate::sys::files::{self, FileError, Trust};
use crate::sys::{self, JobCgroup};
use crate::text::utf8_prefix;

const FILE_NAME: &str = "jobs.jsonl";
/// Output kept per stream in a journaled record; the result file has all of it.
const JOURNAL_OUTPUT_MAX: usize = 64 * 1024;

const WHAT: &str = "journal file";
/// A batch stops growing past this many bytes, so one write(2) stays reasonable.
const BATCH_BYTES: usize = 1 << 20;

/// One journal line. `J` is `&JobRecord` when writing, `JobRecord` when reading.
#[derive(Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
enum Line<J> {
    /// Accepted (queued); on disk before the job may start.
    Submit { job: J },
    /// The job's process group exists: what a later start-up needs to end it.
    Start {
        id: String,
        pgid: u32,
        started_at: String,
        /// Boot id and leader start time: a pgid from another boot, or one reused by a
        /// later process, must never be signalled.
        boot: Option<String>,
        leader_start: Option<u64>,
    },
    /// The final record.
    End { job: J },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Group {
    pgid: u32,
    boot: Option<String>,
    leader_start: Option<u64>,
}

/// A job as the journal last recorded it.
#[derive(Debug)]
struct Kept {
    record: JobRecord,
    group: Option<Group>,
}

/// A process group left behind by a job the previous agent did not see end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub id: String,
    /// 0 when the journal has no start line for it (the agent died right after the
    /// spawn) and its cgroup is what was found.
    pub pgid: u32,
    /// Proven the job's by its cgroup: end what is in it, not the group number.
    pub cgroup: Option<PathBuf>,
}

impl std::fmt::Display for Orphan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cgroup {
            Some(dir) => write!(f, "cgroup {}", dir.display()),
            None => write!(f, "process group {}", self.pgid),
        }
    }
}

/// What start-up found in the journal.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest `history` jobs, oldest first, all final (`interrupted` for those that
    /// were queued or running when the agent died).
    pub records: Vec<JobRecord>,
    /// Groups of interrupted jobs that still exist under this boot: to be ended.
    pub orphans: Vec<Orphan>,
}

enum Op {
    Append(Vec<u8>),
    Sync(SyncSender<()>),
}

/// Handle to the journal writer; cheap to clone into job threads.
#[derive(Clone)]
pub struct Journal {
    tx: Sender<Op>,
    boot: Option<String>,
}

impl Journal {
    /// Loads the journal from `state_dir` (missing is a fresh start), compacted to the
    /// newest `history` jobs, marks jobs that never ended `interrupted` (and journals
    /// that), and starts the writer thread. The file must be a regular
    /// file of ours, mode 0600 or stricter, and is never opened through a link.
    pub fn open(state_dir: &Path, history: usize) -> Result<(Journal, Recovered), FileError> {
        files::ensure_private_dir("state dir", state_dir)?;
        let path = state_dir.join(FILE_NAME);
        let boot = sys::boot_id();
        // Cut to the newest history first, so what is parsed whole fits the budget.
        let mut size = Compacted::default();
        let mut jobs = match compact(&path, history, HISTORY_BYTES, boot.as_deref()) {
            Ok(compacted) => {
                size = compacted;
                let (file, _) = files::open_trusted(WHAT, &path, Trust::Private)?;
                read(BufReader::new(file), &path).map_err(|err| io_error(&path, err))?
            }
            Err(FileError::Missing { .. }) => Vec::new(),
            Err(err) => return Err(err),
        };
        let seen_until = size.seen_until;
        let (mut lines, mut bytes) = (size.lines, size.bytes);
        let mut orphans = Vec::new();
        let mut ended_now = false;
        for job in &mut jobs {
            if job.record.status.is_final() {
                continue;
            }
            // When it died is unknown, so `finished_at` stays empty.
            job.record.status = Status::Interrupted;
            ended_now = true;
            audit::interrupted(&job.record.id, &job.record.command);
            let id = &job.record.id;
            // The cgroup is there even when the start line is not (not synced yet).
            let (group, cgroup) = match (job.group.take(), left_by(id)) {
                (None, None) => continue,
                (Some(group), cgroup) => (group, cgroup),
                (None, Some(cgroup)) => (Group::default(), Some(cgroup)),
            };
            match judge(&group, cgroup, boot.as_deref(), seen_until) {
                Verdict::Ours(cgroup) => orphans.push(Orphan {
                    id: id.clone(),
                    pgid: group.pgid,
                    cgroup,
                }),
                Verdict::Gone => {}
                Verdict::LeftAlone { why, pids } => log::warn!(
                    "left process group {} of interrupted job {id} alone: {why}; its processes \
                     {pids:?}. If they are the job's, end them with: kill -TERM -{}",
                    group.pgid,
                    group.pgid
                ),
            }
        }
        let jobs = keep(jobs, history);
        if ended_now {
            // Their end is known now: journal it, so the next start-up agrees.
            (lines, bytes) = rewrite(&path, &jobs)?;
        }
        let file = files::open_append(WHAT, &path, 0o600)?;
        let (tx, rx) = channel();
        let writer = Writer {
            compact_at: next_compaction(lines, history),
            compact_bytes: next_compaction(bytes, HISTORY_BYTES),
            path: path.clone(),
            file,
            history,
            lines,
            bytes,
            torn: false,
        };
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer.run(&rx))
            .map_err(|err| FileError::Io {
                what: "journal writer thread for".into(),
                path,
                err,
            })?;
        let records = jobs.into_iter().map(|k| k.record).collect();
        Ok((Journal { tx, boot }, Recovered { records, orphans }))
    }

    /// A job was accepted. Not yet durable: see [`Journal::sync`].
    pub fn submitted(&self, record: &JobRecord) {
        self.send(&Line::Submit { job: record });
    }

    /// The job's process group `pgid` exists. Not synced: it only matters while this
    /// boot lasts, and the page cache outlives a crash of the agent itself.
    pub fn started(&self, id: &str, pgid: u32, started_at: &str) {
        self.send(&Line::<&JobRecord>::Start {
            id: id.to_owned(),
            pgid,
            started_at: started_at.to_owned(),
            boot: self.boot.clone(),
            leader_start: sys::start_ticks(pgid),
        });
    }

    /// The job ended with `record`. Not yet durable: see [`Journal::sync`].
    /// Output beyond [`JOURNAL_OUTPUT_MAX`] per stream is left to the result file, so one
    /// line stays small beside the journal's byte budget ([`HISTORY_BYTES`]).
    pub fn ended(&self, record: &JobRecord) {
        if record.stdout.len() <= JOURNAL_OUTPUT_MAX && record.stderr.len() <= JOURNAL_OUTPUT_MAX {
            return self.send(&Line::End { job: record });
        }
        let mut cut = record.clone();
        cut.stdout = utf8_prefix(&record.stdout, JOURNAL_OUTPUT_MAX).to_owned();
        cut.stderr = utf8_prefix(&record.stderr, JOURNAL_OUTPUT_MAX).to_owned();
        cut.truncated = true;
        self.send(&Line::End { job: &cut });
    }

    /// Returns once every line sent before is written and fdatasynced (or the writer
    /// failed and logged why).
    pub fn sync(&self) {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Op::Sync(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    fn send(&self, line: &Line<&JobRecord>) {
        match serde_json::to_vec(line) {
            Ok(mut bytes) => {
                bytes.push(b'\n');
                let _ = self.tx.send(Op::Append(bytes));
            }
            Err(err) => log::error!("cannot encode a journal line: {err}"),
        }
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    history: usize,
    /// Lines and bytes in the file now, and the counts that trigger a compaction.
    lines: usize,
    compact_at: usize,
    bytes: usize,
    compact_bytes: usize,
    /// A write failed and may have left half a line behind.
    torn: bool,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut batch = Vec::new();
            let mut waiters = Vec::new();
            let mut next = Some(first);
            while let Some(op) = next.take() {
                match op {
                    Op::Append(line) => {
                        batch.extend_from_slice(&line);
                        self.lines += 1;
                    }
                    Op::Sync(waiter) => waiters.push(waiter),
                }
                if batch.len() < BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            self.write(&batch, !waiters.is_empty());
            self.bytes += batch.len();
            // Compact before answering, so a finished `sync` sees the file settled.
            if self.lines >= self.compact_at || self.bytes >= self.compact_bytes {
                self.compact();
            }
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
    }

    fn write(&mut self, batch: &[u8], sync: bool) {
        // After a failed write, end the fragment so the next line stands alone.
        let fix: &[u8] = if self.torn { b"\n" } else { b"" };
        let written = self
            .file
            .write_all(fix)
            .and_then(|()| self.file.write_all(batch))
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => self.torn = false,
            Err(err) => {
                self.torn = true;
                log::error!(
                    "journal {}: cannot record job history: {err}; jobs still run, but may be \
                     missing after a restart",
                    self.path.display()
                );
            }
        }
    }

    fn compact(&mut self) {
        let compacted = compact(&self.path, self.history, HISTORY_BYTES, None)
            .and_then(|size| Ok((size, files::open_append(WHAT, &self.path, 0o600)?)));
        match compacted {
            Ok((size, file)) => {
                self.file = file;
                self.lines = size.lines;
                self.bytes = size.bytes;
                self.torn = false;
            }
            Err(err) => log::error!("cannot compact the journal: {err}"),
        }
        self.compact_at = next_compaction(self.lines, self.history);
        self.compact_bytes = next_compaction(self.bytes, HISTORY_BYTES);
    }
}

/// At least `keep` new lines (or bytes) between compactions, and never before
/// `2 × keep`: the file stays under about twice what it keeps.
fn next_compaction(now: usize, keep: usize) -> usize {
    now.saturating_add(keep).max(keep.saturating_mul(2))
}

fn io_error(path: &Path, err: io::Error) -> FileError {
    FileError::Io {
        what: WHAT.into(),
        path: path.into(),
        err,
    }
}

/// Where a job's lines are in the file, for [`compact`].
struct Lines {
    /// Its newest Submit or End line: number and length.
    record: (usize, usize),
    /// Its newest Start line while it is not final.
    start: Option<(usize, usize)>,
    is_final: bool,
}

/// What [`compact`] left.
#[derive(Debug, Default)]
struct Compacted {
    lines: usize,
    bytes: usize,
    /// The newest process start any job's start line recorded under the boot given:
    /// what [`judge`] needs to prove a leaderless group is a job's, and what the start
    /// lines of ended jobs, not kept, carried.
    seen_until: Option<u64>,
}

/// Rewrites the journal with what the newest `history` jobs need, as long as their lines
/// fit `budget` bytes, plus every job not yet ended. Two passes over the file, each
/// holding one line at a time: first which job's lines are where, then a copy of the
/// lines kept, byte for byte.
fn compact(
    path: &Path,
    history: usize,
    budget: usize,
    boot: Option<&str>,
) -> Result<Compacted, FileError> {
    let (file, _) = files::open_trusted(WHAT, path, Trust::Private)?;
    let mut seen_until = None;
    let mut order: Vec<String> = Vec::new();
    let mut jobs: HashMap<String, Lines> = HashMap::new();
    each_line(file, |number, line| {
        let text = line.trim_ascii();
        if text.is_empty() {
            return;
        }
        // Parsed whole, one line at a time: a second, lighter parser would cost binary
        // size to save a moment once per compaction.
        match serde_json::from_slice::<Line<JobRecord>>(text) {
            Ok(Line::Submit { job } | Line::End { job }) => {
                let is_final = job.status.is_final();
                let record = (number, line.len());
                match jobs.get_mut(&job.id) {
                    Some(kept) => {
                        kept.record = record;
                        kept.is_final = is_final;
                    }
                    None => {
                        order.push(job.id.clone());
                        let start = None;
                        jobs.insert(
                            job.id,
                            Lines {
                                record,
                                start,
                                is_final,
                            },
                        );
                    }
                }
            }
            Ok(Line::Start {
                id,
                boot: started_in,
                leader_start,
                ..
            }) => {
                if let Some(kept) = jobs.get_mut(&id)
                    && !kept.is_final
                {
                    kept.start = Some((number, line.len()));
                    if boot.is_some() && started_in.as_deref() == boot {
                        seen_until = seen_until.max(leader_start);
                    }
                }
            }
            Err(err) => skipped(path, number + 1, line, &err),
        }
    })
    .map_err(|err| io_error(path, err))?;
    let (mut ended, mut ended_bytes) = (0usize, 0usize);
    // Per line of the file: copy it?
    let mut wanted: Vec<bool> = Vec::new();
    for id in order.iter().rev() {
        let Some(lines) = jobs.get(id) else { continue };
        if lines.is_final {
            ended_bytes += lines.record.1;
            ended += 1;
            if ended > history || ended_bytes > budget {
                continue;
            }
        }
        let start = lines.start.filter(|_| !lines.is_final);
        for (number, _) in std::iter::once(lines.record).chain(start) {
            if wanted.len() <= number {
                wanted.resize(number + 1, false);
            }
            wanted[number] = true;
        }
    }
    drop(jobs);
    let (source, _) = files::open_trusted(WHAT, path, Trust::Private)?;
    let (mut lines, mut bytes) = (0, 0);
    files::write_atomic_with(WHAT, path, 0o600, |file| {
        let mut out = BufWriter::new(file);
        let mut copied = Ok(());
        each_line(source, |number, line| {
            if copied.is_ok() && wanted.get(number) == Some(&true) {
                lines += 1;
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                bytes += line.len() + 1;
                copied = out.write_all(line).and_then(|()| out.write_all(b"\n"));
            }
        })?;
        copied?;
        out.flush()
    })?;
    Ok(Compacted {
        lines,
        bytes,
        seen_until,
    })
}

/// Warns of a line that does not parse (a torn last line after a power cut).
fn skipped(path: &Path, number: usize, line: &[u8], err: &serde_json::Error) {
    let torn = if line.ends_with(b"\n") {
        ""
    } else {
        " (torn: the agent stopped in the middle of writing it)"
    };
    log::warn!(
        "journal {}: line {number} skipped{torn}: {err}",
        path.display()
    );
}

/// Calls `each` with the number (from 0) and bytes (newline included) of every line.
fn each_line(file: File, mut each: impl FnMut(usize, &[u8])) -> io::Result<()> {
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    for number in 0.. {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        each(number, &buf);
    }
    Ok(())
}

/// Each job's newest state, oldest job first. A line that does not parse (a torn last
/// line after a power cut) is skipped with a warning.
fn read(mut reader: impl BufRead, path: &Path) -> io::Result<Vec<Kept>> {
    let mut order: Vec<String> = Vec::new();
    let mut jobs: HashMap<String, Kept> = HashMap::new();
    let mut buf = Vec::new();
    let mut number = 0usize;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        number += 1;
        let text = buf.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Line<JobRecord>>(text) {
            Ok(Line::Submit { job } | Line::End { job }) => match jobs.get_mut(&job.id) {
                Some(kept) => kept.record = job,
                None => {
                    order.push(job.id.clone());
                    jobs.insert(
                        job.id.clone(),
                        Kept {
                            record: job,
                            group: None,
                        },
                    );
                }
            },
            Ok(Line::Start {
                id,
                pgid,
                started_at,
                boot,
                leader_start,
            }) => {
                if let Some(kept) = jobs.get_mut(&id)
                    && !kept.record.status.is_final()
                {
                    kept.record.status = Status::Running;
                    kept.record.started_at = Some(started_at);
                    kept.group = Some(Group {
                        pgid,
                        boot,
                        leader_start,
                    });
                }
            }
            Err(err) => skipped(path, number, &buf, &err),
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| jobs.remove(&id))
        .collect())
}

/// Every job not yet ended (its processes may still need ending) and the newest
/// `history` ended ones, in their order.
fn keep(jobs: Vec<Kept>, history: usize) -> Vec<Kept> {
    let ended = jobs.iter().filter(|k| k.record.status.is_final()).count();
    let mut drop = ended.saturating_sub(history);
    jobs.into_iter()
        .filter(|k| {
            let old = drop > 0 && k.record.status.is_final();
            drop -= usize::from(old);
            !old
        })
        .collect()
}

/// Replaces the journal with `jobs` (temp file, fsync, rename); returns its lines and
/// bytes.
fn rewrite(path: &Path, jobs: &[Kept]) -> Result<(usize, usize), FileError> {
    let mut lines: Vec<Line<&JobRecord>> = Vec::with_capacity(jobs.len());
    for kept in jobs {
        if kept.record.status.is_final() {
            lines.push(Line::End { job: &kept.record });
            continue;
        }
        lines.push(Line::Submit { job: &kept.record });
        if let Some(g) = &kept.group {
            lines.push(Line::Start {
                id: kept.record.id.clone(),
                pgid: g.pgid,
                started_at: kept.record.started_at.clone().unwrap_or_default(),
                boot: g.boot.clone(),
                leader_start: g.leader_start,
            });
        }
    }
    let mut bytes = 0;
    files::write_atomic_with(WHAT, path, 0o600, |file| {
        let mut out = BufWriter::new(file);
        for line in &lines {
            let encoded = serde_json::to_vec(line)?;
            bytes += encoded.len() + 1;
            out.write_all(&encoded)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    })?;
    Ok((lines.len(), bytes))
}

/// What start-up may do with a process group an interrupted job left behind.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Provably the job's: end it; by its cgroup when that is the proof.
    Ours(Option<PathBuf>),
    /// Another boot, or no process left: nothing to do.
    Gone,
    /// Live processes that cannot be shown to be the job's: never signalled, only named.
    LeftAlone { why: &'static str, pids: Vec<u32> },
}

/// Whether a recorded group is still this job's, from what `/proc` says now.
///
/// A job whose cgroup (`job-<id>`, made for this job alone, in the tree the agent uses
/// now) is still there is judged by it: processes in it are the job's, wherever their
/// group or session went; an empty one is removed. (A tree that moved since, say from
/// the root to a systemd service, is not searched: the group is then judged as below.)
///
/// Without one: a group number is a pid, and is reused once every process of the group (and of the
/// session, which the job's leader also made) is gone. So:
/// - another boot: gone;
/// - the leader is alive (or a zombie): ours only if it started when the journal says;
/// - the leader is gone: ours only if a live member of the group is in the job's
///   session and started between the job's start and `seen_until` (while the previous
///   agent still counted the job as running, so the number could not yet be reused: a
///   stranger's processes all start after the reuse). A member started later may be
///   the job's or a stranger's; nothing proves which, so it is left alone.
fn judge(
    group: &Group,
    cgroup: Option<JobCgroup>,
    boot: Option<&str>,
    seen_until: Option<u64>,
) -> Verdict {
    if let Some(cgroup) = cgroup {
        if cgroup.populated() {
            return Verdict::Ours(Some(cgroup.dir().to_path_buf()));
        }
        let _ = cgroup.remove();
        return Verdict::Gone;
    }
    judge_with(
        group,
        boot,
        seen_until,
        sys::start_ticks(group.pgid),
        || sys::group_members(group.pgid),
    )
}

/// [`judge`] with what `/proc` says passed in, for tests.
fn judge_with(
    group: &Group,
    boot: Option<&str>,
    seen_until: Option<u64>,
    leader_start_now: Option<u64>,
    members: impl FnOnce() -> Option<Vec<sys::Member>>,
) -> Verdict {
    if group.boot.is_none() || group.boot.as_deref() != boot {
        return Verdict::Gone;
    }
    let pids = |listed: &Option<Vec<sys::Member>>| -> Vec<u32> {
        listed.iter().flatten().map(|m| m.pid).collect()
    };
    if let Some(now) = leader_start_now {
        return if group.leader_start == Some(now) {
            Verdict::Ours(None)
        } else {
            Verdict::LeftAlone {
                why: "its number now belongs to a process started after the job",
                pids: pids(&members()),
            }
        };
    }
    let listed = members();
    let Some(found) = &listed else {
        return Verdict::LeftAlone {
            why: "its leader is gone and /proc cannot be read to tell whose its processes are",
            pids: Vec::new(),
        };
    };
    if found.is_empty() {
        return Verdict::Gone;
    }
    let proven = match (group.leader_start, seen_until) {
        (Some(from), Some(until)) => found
            .iter()
            .any(|m| m.session == group.pgid && (from..=until).contains(&m.start)),
        _ => false,
    };
    if proven {
        Verdict::Ours(None)
    } else {
        Verdict::LeftAlone {
            why: "its leader is gone and none of its processes can be shown to be the job's \
                  (a group number is reused once the job's processes are all gone)",
            pids: pids(&listed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;

    fn tempdir(tag: &str) -> PathBuf {
        crate::sys::files::test_dir(&format!("journal-{tag}"))
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
        let (journal, recovered) = Journal::open(&dir, 10).unwrap();
        assert!(recovered.records.is_empty());
        let done = record(1, Status::Succeeded);
        journal.submitted(&record(1, Status::Queued));
        journal.ended(&done);
        journal.submitted(&record(2, Status::Queued));
        journal.submitted(&record(3, Status::Queued));
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
        let (_journal, recovered) = Journal::open(&dir, 10).unwrap();
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
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.lines().all(|l| l.starts_with(r#"{"ev":"end""#)),
            "{text}"
        );
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
        let (_journal, recovered) = Journal::open(&dir, 10).unwrap();
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
        let (journal, _) = Journal::open(&dir, 5).unwrap();
        let mut long = record(1, Status::Succeeded);
        long.stdout = "é".repeat(JOURNAL_OUTPUT_MAX);
        journal.submitted(&long);
        journal.ended(&long);
        journal.sync();
        drop(journal);
        let (_journal, recovered) = Journal::open(&dir, 5).unwrap();
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
        let (journal, _) = Journal::open(&dir, 5).unwrap();
        for n in 0..100 {
            journal.submitted(&record(n, Status::Queued));
            journal.ended(&record(n, Status::Succeeded));
            journal.sync();
        }
        drop(journal);
        let lines = std::fs::read_to_string(dir.join(FILE_NAME))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 10, "{lines} lines for history 5");
        let (_journal, recovered) = Journal::open(&dir, 5).unwrap();
        let ids: Vec<String> = recovered.records.into_iter().map(|r| r.id).collect();
        let want: Vec<String> = (95..100).map(|n| record(n, Status::Queued).id).collect();
        assert_eq!(ids, want);
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
        let kept = std::fs::read(&path).unwrap();
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
        let (_journal, recovered) = Journal::open(&dir, 10).unwrap();
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
    fn refuses_a_symlinked_journal() {
        let dir = tempdir("link");
        std::fs::write(dir.join("elsewhere"), "").unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join(FILE_NAME)).unwrap();
        let err = Journal::open(&dir, 5).err().unwrap().to_string();
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
        let group = Group {
            pgid: 500,
            boot: Some("b".into()),
            leader_start: Some(1000),
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
    }
}
