//! The job journal, `<state_dir>/jobs.jsonl`: one JSON line per event (a job submitted,
//! its process group started, the job ended), so history survives a restart, and a job
//! cut off by a crash reads `interrupted` and its processes can be found and ended.
//!
//! One writer thread owns the file. Lines arrive over a channel and are written in
//! batches; [`Journal::sync`] returns once everything sent before it is on disk, with one
//! fdatasync for all the jobs that asked meanwhile (group commit). The file is rewritten
//! atomically with only what the newest `history` jobs need when it holds about twice
//! that many lines, and at every start-up, which also drops a torn last line.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use serde::{Deserialize, Serialize};

use super::contain::left_by;
use super::record::{JobRecord, Status};
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

#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub pgid: u32,
    /// Proven the job's by its cgroup: end what is in it, not the group number.
    pub cgroup: Option<PathBuf>,
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
    /// Loads the journal from `state_dir` (missing is a fresh start), marks jobs that
    /// never ended `interrupted` (and journals that), keeps the newest `history`, rewrites
    /// the file compacted, and starts the writer thread. The file must be a regular
    /// file of ours, mode 0600 or stricter, and is never opened through a link.
    pub fn open(state_dir: &Path, history: usize) -> Result<(Journal, Recovered), FileError> {
        files::ensure_private_dir("state dir", state_dir)?;
        let path = state_dir.join(FILE_NAME);
        let mut jobs = match files::open_trusted(WHAT, &path, Trust::Private) {
            Ok((file, _)) => read(BufReader::new(file), &path).map_err(|err| FileError::Io {
                what: WHAT.into(),
                path: path.clone(),
                err,
            })?,
            Err(FileError::Missing { .. }) => Vec::new(),
            Err(err) => return Err(err),
        };
        let boot = sys::boot_id();
        let seen_until = last_seen_running(&jobs, boot.as_deref());
        let mut orphans = Vec::new();
        for job in &mut jobs {
            if job.record.status.is_final() {
                continue;
            }
            // When it died is unknown, so `finished_at` stays empty.
            job.record.status = Status::Interrupted;
            audit::interrupted(&job.record.id, &job.record.command);
            let Some(group) = job.group.take() else {
                continue;
            };
            let id = &job.record.id;
            match judge(&group, left_by(id), boot.as_deref(), seen_until) {
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
        let lines = rewrite(&path, &jobs)?;
        let file = files::open_append(WHAT, &path, 0o600)?;
        let (tx, rx) = channel();
        let writer = Writer {
            compact_at: next_compaction(lines, history),
            path: path.clone(),
            file,
            history,
            lines,
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
    /// Output beyond [`JOURNAL_OUTPUT_MAX`] per stream is left to the result file, so the
    /// journal stays near `history` × 128 KiB at most.
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
    /// Lines in the file now, and the count that triggers a compaction.
    lines: usize,
    compact_at: usize,
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
            // Compact before answering, so a finished `sync` sees the file settled.
            if self.lines >= self.compact_at {
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
        let compacted = files::open_trusted(WHAT, &self.path, Trust::Private)
            .and_then(|(file, _)| {
                read(BufReader::new(file), &self.path).map_err(|err| FileError::Io {
                    what: WHAT.into(),
                    path: self.path.clone(),
                    err,
                })
            })
            .and_then(|jobs| rewrite(&self.path, &keep(jobs, self.history)))
            .and_then(|lines| Ok((lines, files::open_append(WHAT, &self.path, 0o600)?)));
        match compacted {
            Ok((lines, file)) => {
                self.file = file;
                self.lines = lines;
                self.torn = false;
            }
            Err(err) => log::error!("cannot compact the journal: {err}"),
        }
        self.compact_at = next_compaction(self.lines, self.history);
    }
}

/// At least `history` new lines between compactions, and never before `2 × history`.
fn next_compaction(lines: usize, history: usize) -> usize {
    lines.saturating_add(history).max(history.saturating_mul(2))
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
            Err(err) => {
                let torn = if buf.ends_with(b"\n") {
                    ""
                } else {
                    " (torn: the agent stopped in the middle of writing it)"
                };
                log::warn!(
                    "journal {}: line {number} skipped{torn}: {err}",
                    path.display()
                );
            }
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

/// Replaces the journal with `jobs` (temp file, fsync, rename); returns its line count.
fn rewrite(path: &Path, jobs: &[Kept]) -> Result<usize, FileError> {
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
    let mut bytes = Vec::new();
    for line in &lines {
        serde_json::to_writer(&mut bytes, line).map_err(|err| FileError::Io {
            what: WHAT.into(),
            path: path.into(),
            err: err.into(),
        })?;
        bytes.push(b'\n');
    }
    files::write_atomic(WHAT, path, &bytes, 0o600)?;
    Ok(lines.len())
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

/// The newest process start (clock ticks since boot) the journal recorded under this
/// boot: a moment the previous agent was alive and every job without an end line was
/// still running, so none of their process group numbers was free for reuse.
fn last_seen_running(jobs: &[Kept], boot: Option<&str>) -> Option<u64> {
    jobs.iter()
        .filter_map(|k| k.group.as_ref())
        .filter(|g| g.boot.is_some() && g.boot.as_deref() == boot)
        .filter_map(|g| g.leader_start)
        .max()
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
