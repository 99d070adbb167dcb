//! The job journal's file, `<state_dir>/jobs.jsonl`: its lines, how start-up reads it
//! back, how it is compacted, and what start-up makes of the jobs it finds cut off and
//! may do with their process groups (`end_cut_off`, `judge`). The threads that write it
//! are in `journal`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::contain::left_by;
use super::record::{HISTORY_BYTES, JobRecord, Status};
use crate::audit;
use crate::sys::files::{self, FileError, Replacement, Trust};
use crate::sys::{self, JobCgroup, clock};

/// File name inside `state_dir`.
pub(super) const FILE_NAME: &str = "jobs.jsonl";
pub(super) const WHAT: &str = "journal file";

/// Zeros kept written and synced ahead of the journal's last line. A line written over
/// them changes no size or block the file system must commit, so its `fdatasync` is one
/// flush of the device; an append that grows the file is two on ext4 (the data, then
/// the journal commit of the new size): a code's sync on an SD card takes half as long.
/// Readers stop at the first NUL, which no JSON line holds.
pub(super) const TAIL: u64 = 64 * 1024;

/// Reads `inner` up to its first NUL byte: the journal's lines end there (see [`TAIL`]).
pub(super) struct UpToNul<R> {
    inner: R,
    done: bool,
}

impl<R> UpToNul<R> {
    pub(super) fn new(inner: R) -> Self {
        UpToNul { inner, done: false }
    }
}

impl<R: Read> Read for UpToNul<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        match buf
            .get(..n)
            .and_then(|read| read.iter().position(|&b| b == 0))
        {
            Some(at) => {
                self.done = true;
                Ok(at)
            }
            None => Ok(n),
        }
    }
}

/// Where the lines of an open journal end (its first NUL, or its length), and whether
/// only zeros follow. Bytes after the end that are not zeros are what a crash kept of
/// lines never synced, beyond an older end: never to be read as lines.
pub(super) fn data_end(file: &File) -> io::Result<(u64, bool)> {
    let (mut at, mut end) = (0u64, None);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok((end.unwrap_or(at), true));
        }
        for (i, &byte) in buf.iter().take(n).enumerate() {
            match (byte, end) {
                (0, None) => end = Some(at + i as u64),
                (1.., Some(end)) => return Ok((end, false)),
                _ => {}
            }
        }
        at += n as u64;
    }
}

/// Writes all of `bytes` at `at`; how many were written, also before an error.
pub(super) fn write_at(file: &File, bytes: &[u8], at: u64) -> Result<u64, (u64, io::Error)> {
    let mut written = 0;
    while let Some(rest) = bytes.get(written..).filter(|rest| !rest.is_empty()) {
        match file.write_at(rest, at + written as u64) {
            Ok(0) => return Err((written as u64, io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err((written as u64, err)),
        }
    }
    Ok(written as u64)
}

/// [`TAIL`] zeros written at `at`, a page at a time from the stack (no heap kept for
/// them); stops at the first error, which nothing needs: lines then grow the file.
pub(super) fn write_zeros(file: &File, at: u64) -> io::Result<()> {
    let zeros = [0u8; 4096];
    for page in 0..TAIL / 4096 {
        write_at(file, &zeros, at + page * 4096).map_err(|(_, err)| err)?;
    }
    Ok(())
}

/// One journal line. `J` is `&JobRecord` when writing, `JobRecord` when reading.
#[derive(Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub(super) enum Line<J> {
    /// A code of this TOTP time step was accepted: synced before what it authorised
    /// acts, so after any crash the step stays used (with `auth.json`, the larger wins).
    Used { step: u64 },
    /// Accepted (queued); written before the job may start.
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
        /// The session its processes are in: the agent's. Absent in lines of agents
        /// whose jobs each made a session of their own, numbered as the group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<u32>,
    },
    /// The final record.
    End { job: J },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Group {
    pub(super) pgid: u32,
    pub(super) boot: Option<String>,
    pub(super) leader_start: Option<u64>,
    /// See [`Line::Start`]; `None`: the group's own number.
    pub(super) session: Option<u32>,
}

/// A job as the journal last recorded it.
#[derive(Debug)]
pub(super) struct Kept {
    pub(super) record: JobRecord,
    pub(super) group: Option<Group>,
}

/// At least `keep` new lines (or bytes) between compactions, and never before
/// `2 × keep`: the file stays under about twice what it keeps.
pub(super) fn next_compaction(now: usize, keep: usize) -> usize {
    now.saturating_add(keep).max(keep.saturating_mul(2))
}

pub(super) fn io_error(path: &Path, err: io::Error) -> FileError {
    FileError::Io {
        what: WHAT.into(),
        path: path.into(),
        err,
    }
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
pub(super) struct Compacted {
    pub(super) lines: usize,
    pub(super) bytes: usize,
    /// The newest process start any job's start line recorded under the boot given:
    /// what [`judge`] needs to prove a leaderless group is a job's, and what the start
    /// lines of ended jobs, not kept, carried.
    pub(super) seen_until: Option<u64>,
    /// The highest time step a code was used for, carried in one `Used` line.
    pub(super) last_step: u64,
}

/// Rewrites the journal with what the newest `history` jobs need, as long as their lines
/// fit `budget` bytes, plus every job not yet ended ([`compact_into`], then put in place).
pub(super) fn compact(
    path: &Path,
    history: usize,
    budget: usize,
    boot: Option<&str>,
) -> Result<Compacted, FileError> {
    let (new, compacted) = compact_into(path, history, budget, boot, u64::MAX)?;
    new.commit()?;
    Ok(compacted)
}

/// The journal at start-up: each job's newest state, oldest first, and what the file
/// carries. Compacted to the newest `history` jobs first, so what is parsed whole fits
/// the budget; on a full or read-only disk the agent still starts, and the file is read
/// as it is (its size as bounded as when it was written: the journal thread compacts it
/// once it is due and the disk takes writes). Missing: a fresh start.
pub(super) fn load(
    path: &Path,
    history: usize,
    boot: Option<&str>,
) -> Result<(Vec<Kept>, Compacted), FileError> {
    let carried = match compact(path, history, HISTORY_BYTES, boot) {
        Err(err) if err.disk_refuses_writes() => {
            log::error!(
                "{err}: the journal was read but not compacted; until the disk takes writes \
                 again, a code whose use cannot be recorded is refused (503) and job history \
                 may be lost, while no_pin rules run"
            );
            as_it_is(path, boot)?
        }
        Err(FileError::Missing { .. }) => return Ok((Vec::new(), Compacted::default())),
        other => other?,
    };
    let (file, _) = files::open_trusted(WHAT, path, Trust::Private)?;
    // Of the same type as `each_line`'s reader: one copy of its code.
    let reader = BufReader::new(UpToNul::new(file.take(u64::MAX)));
    let jobs = read(reader, path).map_err(|err| io_error(path, err))?;
    Ok((jobs, carried))
}

/// Where each job's lines are in a journal's first bytes, and what the file carries
/// besides: the first of [`compact_into`]'s passes.
struct Survey {
    order: Vec<String>,
    jobs: HashMap<String, Lines>,
    /// `lines` and `bytes` are the file's own, uncompacted.
    carried: Compacted,
}

/// What [`survey`] needs of a line, borrowed from it. A [`Line`] is an internally
/// tagged enum, which serde buffers whole (every string copied) before it builds the
/// record (every string copied again); a compaction reads every line of the file, about
/// `2 × history`, on the same CPU as the requests: parsed that way, a compaction of the
/// default 1 000 jobs held five requests in a row for 1–2 ms each. Unknown fields are
/// skipped without a copy. The agent writes ids, statuses and boot ids without escapes,
/// so borrowing never fails on its lines; a line that does not parse this way is
/// skipped like one that does not parse at all. A line that parses this way but not
/// whole (a record with a field missing; no writer of ours leaves one) is kept, and
/// start-up's full read skips it with a warning.
#[derive(Deserialize)]
struct Glance<'a> {
    ev: &'a str,
    step: Option<u64>,
    #[serde(borrow)]
    job: Option<JobGlance<'a>>,
    id: Option<&'a str>,
    boot: Option<&'a str>,
    leader_start: Option<u64>,
}

#[derive(Deserialize)]
struct JobGlance<'a> {
    id: &'a str,
    status: Status,
}

/// [`Survey`] of the file's first `len` bytes, one line at a time.
fn survey(path: &Path, boot: Option<&str>, len: u64) -> Result<Survey, FileError> {
    let (file, _) = files::open_trusted(WHAT, path, Trust::Private)?;
    let mut carried = Compacted::default();
    let mut order: Vec<String> = Vec::new();
    let mut jobs: HashMap<String, Lines> = HashMap::new();
    each_line(file.take(len), |number, line| {
        let text = line.trim_ascii();
        if text.is_empty() {
            return;
        }
        carried.lines += 1;
        carried.bytes += line.len();
        let glance = match serde_json::from_slice::<Glance>(text) {
            Ok(glance) => glance,
            Err(err) => return skipped(path, number + 1, line, &err),
        };
        match glance {
            Glance {
                ev: "used",
                step: Some(step),
                ..
            } => carried.last_step = carried.last_step.max(step),
            Glance {
                ev: "submit" | "end",
                job: Some(job),
                ..
            } => {
                let is_final = job.status.is_final();
                let record = (number, line.len());
                match jobs.get_mut(job.id) {
                    // A submission never takes back an end already seen.
                    Some(kept) if kept.is_final && !is_final => {}
                    Some(kept) => {
                        kept.record = record;
                        kept.is_final = is_final;
                    }
                    None => {
                        order.push(job.id.to_owned());
                        let start = None;
                        jobs.insert(
                            job.id.to_owned(),
                            Lines {
                                record,
                                start,
                                is_final,
                            },
                        );
                    }
                }
            }
            Glance {
                ev: "start",
                id: Some(id),
                boot: started_in,
                leader_start,
                ..
            } => {
                if let Some(kept) = jobs.get_mut(id)
                    && !kept.is_final
                {
                    kept.start = Some((number, line.len()));
                    if boot.is_some() && started_in == boot {
                        carried.seen_until = carried.seen_until.max(leader_start);
                    }
                }
            }
            Glance { ev, .. } => {
                let err = serde::de::Error::custom(format_args!(
                    "not a line this agent writes (event {ev:?})"
                ));
                skipped(path, number + 1, line, &err);
            }
        }
    })
    .map_err(|err| io_error(path, err))?;
    Ok(Survey {
        order,
        jobs,
        carried,
    })
}

/// What start-up needs of a journal it cannot compact (no room on the disk): the file
/// as it is, read whole, with what its lines carry.
fn as_it_is(path: &Path, boot: Option<&str>) -> Result<Compacted, FileError> {
    Ok(survey(path, boot, u64::MAX)?.carried)
}

/// The compacted journal, from the file's first `len` bytes, written beside it and not
/// yet synced nor in place. Two passes over those bytes, each holding one line at a
/// time: first which job's lines are where, then a copy of the lines kept, byte for
/// byte, and [`TAIL`] zeros after them (not in its `bytes`).
pub(super) fn compact_into(
    path: &Path,
    history: usize,
    budget: usize,
    boot: Option<&str>,
    len: u64,
) -> Result<(Replacement, Compacted), FileError> {
    let Survey {
        order,
        jobs,
        carried,
    } = survey(path, boot, len)?;
    let (seen_until, last_step) = (carried.seen_until, carried.last_step);
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
    let mut new = Replacement::begin(WHAT, path, 0o600)?;
    let written = (|| {
        let mut out = BufWriter::new(new.file());
        if last_step > 0 {
            let used = serde_json::to_vec(&Line::<&JobRecord>::Used { step: last_step })?;
            lines += 1;
            bytes += used.len() + 1;
            out.write_all(&used)?;
            out.write_all(b"\n")?;
        }
        let mut copied = Ok(());
        each_line(source.take(len), |number, line| {
            if copied.is_ok() && wanted.get(number) == Some(&true) {
                lines += 1;
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                bytes += line.len() + 1;
                copied = out.write_all(line).and_then(|()| out.write_all(b"\n"));
            }
        })?;
        copied?;
        out.flush()
    })();
    let written = written.and_then(|()| write_zeros(new.file(), bytes as u64));
    written.map_err(|err| new.failed(err))?;
    let compacted = Compacted {
        lines,
        bytes,
        seen_until,
        last_step,
    };
    Ok((new, compacted))
}

/// Warns of a line that does not parse (a torn last line after a crash or a full disk).
fn skipped(path: &Path, number: usize, line: &[u8], err: &serde_json::Error) {
    let torn = if line.ends_with(b"\n") {
        ""
    } else {
        " (torn: cut short by a crash, a power cut or a full disk)"
    };
    log::warn!(
        "journal {}: line {number} skipped{torn}: {err}",
        path.display()
    );
}

/// Calls `each` with the number (from 0) and bytes (newline included) of every line.
fn each_line(file: impl Read, mut each: impl FnMut(usize, &[u8])) -> io::Result<()> {
    let mut reader = BufReader::new(UpToNul::new(file));
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
pub(super) fn read(mut reader: impl BufRead, path: &Path) -> io::Result<Vec<Kept>> {
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
            // Carried by `compact`, which start-up runs first.
            Ok(Line::Used { .. }) => {}
            Ok(Line::Submit { job } | Line::End { job }) => match jobs.get_mut(&job.id) {
                // A submission never takes back an end already seen.
                Some(kept) if kept.record.status.is_final() && !job.status.is_final() => {}
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
                session,
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
                        session,
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
pub(super) fn keep(jobs: Vec<Kept>, history: usize) -> Vec<Kept> {
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

/// Replaces the journal with the used step and `jobs` (temp file, fsync, rename);
/// returns its lines and bytes.
pub(super) fn rewrite(
    path: &Path,
    jobs: &[Kept],
    last_step: u64,
) -> Result<(usize, usize), FileError> {
    let mut lines: Vec<Line<&JobRecord>> = Vec::with_capacity(jobs.len() + 1);
    if last_step > 0 {
        lines.push(Line::Used { step: last_step });
    }
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
                session: g.session,
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
pub(super) enum Verdict {
    /// Provably the job's: end it; by its cgroup when that is the proof.
    Ours(Option<PathBuf>),
    /// Another boot, or no process left: nothing to do.
    Gone,
    /// Live processes that cannot be shown to be the job's: never signalled, only named.
    LeftAlone { why: &'static str, pids: Vec<u32> },
}

/// Whether a recorded group is still this job's, from what `/proc` says now.
///
/// A job whose cgroup (`job-<key>`, the second half of its id, in the tree the agent uses
/// now) is still there is judged by it: processes in it are the job's, wherever their
/// group or session went (an earlier job handed it on only once empty, and no later one
/// got it while this one had not ended); an empty one is removed. (A tree that moved since, say from
/// the root to a systemd service, is not searched: the group is then judged as below.)
///
/// Without one: a group number is a pid, and is reused once every process of the group
/// (and, for an older agent's job, which made a session too, of that session) is gone.
/// So:
/// - another boot: gone;
/// - the leader is alive (or a zombie): ours only if it started when the journal says;
/// - the leader is gone: ours only if a live member of the group is in the job's
///   session (the one its start line records: the agent's; else the group's number)
///   and started between the job's start and `seen_until` (while the previous
///   agent still counted the job as running, so the number could not yet be reused: a
///   stranger's processes all start after the reuse). A member started later may be
///   the job's or a stranger's; nothing proves which, so it is left alone. So is one
///   whose session reads 0 (its leader outside our pid namespace): every such session
///   reads the same, so it tells the job's from no other.
pub(super) fn judge(
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
pub(super) fn judge_with(
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
    let session = group.session.unwrap_or(group.pgid);
    if session == 0 {
        return Verdict::LeftAlone {
            why: "its leader is gone and its session's leader is outside this pid namespace \
                  (every such session reads 0), so none of its processes can be shown to be \
                  the job's",
            pids: pids(&listed),
        };
    }
    let proven = match (group.leader_start, seen_until) {
        (Some(from), Some(until)) => found
            .iter()
            .any(|m| m.session == session && (from..=until).contains(&m.start)),
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

/// What start-up makes of the jobs it finds not ended: a held request whose time still
/// runs waits on, one whose time ran out is `expired`, the rest are `interrupted`, and
/// the process groups those left are judged ([`judge`]). Returns the ids of those that
/// ended now (to be journaled), and the groups proven theirs, to be ended.
pub(super) fn end_cut_off(
    jobs: &mut [Kept],
    boot: Option<&str>,
    seen_until: Option<u64>,
) -> (Vec<String>, Vec<Orphan>) {
    let mut orphans = Vec::new();
    let mut ended_now = Vec::new();
    let now = clock::now_unix();
    for job in jobs.iter_mut() {
        if job.record.status.is_final() {
            continue;
        }
        // A held request waits on (its time still runs), or expired while the agent
        // was down.
        if job.record.status == Status::AwaitingApproval {
            if job.record.expires_at.is_some_and(|at| at > now) {
                continue;
            }
            job.record.status = Status::Expired;
            job.record.finished_at = Some(clock::rfc3339(clock::now_unix_ms()));
            let code = job.record.approval.as_deref().unwrap_or_default();
            audit::expired(&job.record.id, code);
            ended_now.push(job.record.id.clone());
            continue;
        }
        // When it died is unknown, so `finished_at` stays empty.
        job.record.status = Status::Interrupted;
        ended_now.push(job.record.id.clone());
        audit::interrupted(&job.record.id, &job.record.command);
        let id = &job.record.id;
        // The cgroup is there even when the start line is not (not synced yet).
        let (group, cgroup) = match (job.group.take(), left_by(id)) {
            (None, None) => continue,
            (Some(group), cgroup) => (group, cgroup),
            (None, Some(cgroup)) => (Group::default(), Some(cgroup)),
        };
        match judge(&group, cgroup, boot, seen_until) {
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
    (ended_now, orphans)
}
