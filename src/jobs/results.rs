//! Result files: one `agent-<id>.txt` per finished job in a private directory, and a
//! bounded cleanup so the directory never grows without limit (the old agent never
//! deleted any).
//!
//! The directory is verified (0700, ours, not a link) by `files::open_private_dir`, and
//! everything inside it is reached through that descriptor (`openat`, `unlinkat`), never
//! by path: a sticky `/tmp` stops others renaming the directory, but once it is aged
//! away (systemd-tmpfiles) anyone may put a link where it was. The descriptor is kept
//! from one job to the next while an `lstat` of the path finds that same directory,
//! still ours and private (`files::kept_private_dir`); anything else opens it again,
//! with every check.
//!
//! Cleanup after a job works from an index of the files (a listing, plus what was
//! written since), not a new listing: with `max_files` at 200 a listing and a look at
//! each file is some 200 system calls, more than the job itself. The directory is
//! listed again every [`RELIST_EVERY`] jobs, so whatever else changed in it is seen.
//!
//! At the bounds, the oldest file is recycled for the next one (renamed and written
//! over, see [`recycle`]), and that is done ahead where it can be: after a job's
//! answer, for the ids made ahead for the next jobs (`contain::Spare`), the file is
//! made ready under the id's name, so that such a job only writes
//! ([`ResultsDir::prepare`]). A file made ahead holds an older job's record (or
//! nothing, the first one) under the new name until its job writes it; it is not a
//! result file yet (the listing leaves it out, and `max_files` results are kept
//! besides it), it is removed if its job has not written it after [`AHEAD_UNUSED`], and
//! at the agent's stop; after a crash, start-up removes it as it removes any file that
//! does not begin with its own id.
//!
//! Result files are not fsynced: the journal holds each record (output up to 64 KiB),
//! and on most systems `/tmp` is emptied at boot anyway, so a power cut that loses a
//! result file loses nothing the journal does not keep; a crash of the agent alone
//! loses nothing, as the page cache outlives it. A power cut can leave worse than a lost
//! file, though: a recycled file renamed on disk before its new bytes reached it holds
//! the old job's record under the new name. Start-up removes every file that does not
//! begin with its own id line (`cleanup`).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::ResultsConfig;
use crate::sys;
use crate::sys::files::{self, FileError};

const WHAT: &str = "results dir";
/// Stores between two listings of the directory.
const RELIST_EVERY: usize = 256;
/// Files made ahead at most: one per id made ahead, and a few whose jobs have their ids
/// but have not ended yet.
const AHEAD_MAX: usize = 4;
/// A file made ahead whose job has taken its id but not written it after this long
/// (it never ran, or runs long) is removed: such a job then stores the plain way.
const AHEAD_UNUSED: Duration = Duration::from_secs(60);

/// The verified results directory and its bounds.
#[derive(Debug)]
pub struct ResultsDir {
    dir: PathBuf,
    max_files: usize,
    max_bytes: u64,
    max_age_s: u64,
    /// Held from making room to the last byte written, so jobs ending together never
    /// push the directory past its bounds.
    room: Mutex<Index>,
}

/// What a cleanup makes room for, and when it runs (ages are measured from `now_unix`).
#[derive(Debug, Clone, Copy)]
struct Room {
    now_unix: u64,
    files: usize,
    bytes: u64,
}

impl Room {
    /// No new file: only the bounds and the age.
    fn none(now_unix: u64) -> Room {
        Room {
            now_unix,
            files: 0,
            bytes: 0,
        }
    }
}

/// The result files, oldest first, with their total size.
#[derive(Debug, Default)]
struct Index {
    files: VecDeque<Entry>,
    bytes: u64,
    /// Stores since the last listing; `None` before the first.
    since_listing: Option<usize>,
    /// The directory, open since the last store.
    dir: Option<files::KeptDir>,
    /// Files made ahead for ids not written yet, besides the results: in neither
    /// `files` nor `bytes` (the bounds keep `max_files` results, and these besides).
    ahead: Vec<Ahead>,
}

/// A file made ahead for a job id ([`ResultsDir::prepare`]).
#[derive(Debug)]
struct Ahead {
    name: String,
    file: fs::File,
    /// Its size: an older job's record's, or none.
    bytes: u64,
    made: Instant,
}

/// What one cleanup pass did and left.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub removed: usize,
    /// Of those removed, the ids of the files that did not hold their own job's record
    /// (at start-up; see [`ResultsDir::cleanup`]).
    pub foreign: Vec<String>,
    pub kept_files: usize,
    pub kept_bytes: u64,
    /// One line per entry that could not be examined or removed; never fatal.
    pub errors: Vec<String>,
}

/// A result file seen by cleanup.
#[derive(Debug)]
struct Entry {
    mtime: (i64, i64),
    name: String,
    bytes: u64,
}

impl ResultsDir {
    /// Creates the directory 0700 if missing, else verifies it (not a link, ours, no
    /// group/other bits).
    pub fn open(cfg: &ResultsConfig) -> Result<ResultsDir, FileError> {
        files::ensure_private_dir(WHAT, &cfg.dir)?;
        Ok(ResultsDir {
            dir: cfg.dir.clone(),
            max_files: cfg.max_files,
            max_bytes: cfg.max_bytes,
            max_age_s: cfg.max_age_s,
            room: Mutex::new(Index::default()),
        })
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.room.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// (files, bytes) of result files, as of the last store or listing: for `/metrics`,
    /// without a look at the disk.
    pub fn usage(&self) -> (u64, u64) {
        let index = self.index();
        let ahead: u64 = index.ahead.iter().map(|ahead| ahead.bytes).sum();
        (
            (index.files.len() + index.ahead.len()) as u64,
            index.bytes + ahead,
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `agent-<id>.txt` (mode 0600) and fsyncs it. The name must not exist yet:
    /// `O_CREAT|O_EXCL|O_NOFOLLOW` means a file or link planted there is an error, never
    /// followed and never overwritten. `id` must be 32 lowercase hex characters.
    #[cfg(test)]
    pub fn write(&self, id: &str, text: &str) -> io::Result<PathBuf> {
        let dir = self.open_dir()?;
        let name = result_name(id)?;
        let file = create_in(&dir, &name, text)?;
        self.synced(&dir, name, &file)
    }

    /// What a finished job calls: deletes the oldest files until the new one fits the
    /// bounds, then writes it (not fsynced: see the module notes), under a lock. The
    /// oldest file, when it has to go, is recycled (see [`recycle`]) rather than removed.
    pub fn store(&self, id: &str, text: &str, now_unix: u64) -> (io::Result<PathBuf>, Cleanup) {
        let stored = result_name(id).and_then(|name| {
            self.in_dir(|dir, index| self.store_in(dir, index, name, text, now_unix))
                .map_err(|e| io::Error::other(e.to_string()))
        });
        stored.unwrap_or_else(|e| {
            let report = Cleanup {
                errors: vec![e.to_string()],
                ..Cleanup::default()
            };
            (Err(e), report)
        })
    }

    /// `work` in the directory, under the lock, its descriptor kept from one use to the
    /// next while the path still names it (`files::kept_private_dir`). Files made ahead
    /// in a directory that is no longer the one at the path are forgotten, never written
    /// (they stay in it).
    fn in_dir<R>(&self, work: impl FnOnce(&fs::File, &mut Index) -> R) -> Result<R, FileError> {
        let mut index = self.index();
        let mut kept = index.dir.take();
        let was = kept.as_ref().map(files::KeptDir::id);
        let done = files::kept_private_dir(WHAT, &self.dir, &mut kept).map(|dir| {
            if was != Some(dir.id()) {
                index.ahead.clear();
            }
            work(dir.file(), &mut index)
        });
        if done.is_err() {
            index.ahead.clear();
        }
        index.dir = kept;
        done
    }

    /// [`ResultsDir::store`] in the directory opened, under the lock.
    fn store_in(
        &self,
        dir: &fs::File,
        index: &mut Index,
        name: String,
        text: &str,
        now_unix: u64,
    ) -> (io::Result<PathBuf>, Cleanup) {
        let room = text.len() as u64;
        let mut report = match index.since_listing {
            Some(n) if n < RELIST_EVERY => Cleanup::default(),
            _ => self.sweep(dir, index, Room::none(now_unix), false),
        };
        let need = Room {
            now_unix,
            files: 1,
            bytes: room,
        };
        // Padded to whole pages (see `recycle`) where that moment's size fits too.
        let pad = |index: &Index| {
            let pages = text.len().next_multiple_of(sys::page_size());
            let fits = index.bytes.saturating_add(pages as u64) <= self.max_bytes;
            if fits { pages - text.len() } else { 0 }
        };
        let mut recycled = false;
        let mut recycled_ahead = false;
        if let Some(at) = index.ahead.iter().position(|ahead| ahead.name == name) {
            let ahead = index.ahead.swap_remove(at);
            recycled_ahead = write_ahead(dir, ahead, text, pad(index)).is_ok();
            recycled = recycled_ahead;
        } else if let Some(oldest) = index.files.front()
            && self.must_go(oldest, index, need)
            && let Some(old) = index.files.pop_front()
        {
            index.bytes -= old.bytes.min(index.bytes);
            recycled = recycle(dir, &old.name, &name, text, pad(index)).is_ok();
            if recycled {
                report.removed += 1;
            } else {
                // Left for `trim`, which removes it the plain way.
                index.bytes += old.bytes;
                index.files.push_front(old);
            }
        }
        // Written into a file made ahead, it is one result over the bounds for now: the
        // `prepare` after its answer takes the oldest for the next job, off its path.
        let need = if recycled_ahead {
            Room::none(now_unix)
        } else {
            need
        };
        let trimmed = self.trim(dir, index, need);
        report.removed += trimmed.removed;
        report.errors.extend(trimmed.errors);
        report.kept_files = trimmed.kept_files;
        report.kept_bytes = trimmed.kept_bytes;
        let stored = if recycled {
            Ok(())
        } else {
            create_in(dir, &name, text).map(drop)
        };
        if stored.is_ok() {
            index.files.push_back(Entry {
                mtime: (i64::try_from(now_unix).unwrap_or(i64::MAX), 0),
                name: name.clone(),
                bytes: room,
            });
            index.bytes += room;
        }
        index.since_listing = index.since_listing.map(|n| n + 1);
        (stored.map(|()| self.dir.join(name)), report)
    }

    /// Whether `entry` (the oldest) must go: too old, or in the way of `room`.
    fn must_go(&self, entry: &Entry, index: &Index, room: Room) -> bool {
        let mtime = u64::try_from(entry.mtime.0).unwrap_or(0);
        room.now_unix.saturating_sub(mtime) > self.max_age_s
            || index.files.len().saturating_add(room.files) > self.max_files
            || index.bytes.saturating_add(room.bytes) > self.max_bytes
    }

    /// On a job thread after its answer, for `ids` made ahead for the next jobs: where
    /// the directory is at its bounds, so that such a job would recycle the oldest file,
    /// a file is made ready under its id's name now, and that job writes into it without
    /// a rename on its path. Over the bounds (a job just wrote into such a file) that is
    /// the oldest, renamed (checked as [`recycle`] checks it); at them, a new one, once.
    /// Files made ahead that no job wrote for [`AHEAD_UNUSED`], other than `ids`', are
    /// removed first, and whatever is still over the bounds last. Quiet on failure: the
    /// job then stores the plain way.
    pub fn prepare(&self, ids: &[String], now_unix: u64) {
        let _ = self.in_dir(|dir, index| self.prepare_in(dir, index, ids, now_unix));
    }

    /// [`ResultsDir::prepare`] in the directory opened, under the lock.
    fn prepare_in(&self, dir: &fs::File, index: &mut Index, ids: &[String], now_unix: u64) {
        let names: Vec<String> = ids.iter().filter_map(|id| result_name(id).ok()).collect();
        let unused =
            |ahead: &Ahead| ahead.made.elapsed() >= AHEAD_UNUSED && !names.contains(&ahead.name);
        for ahead in index.ahead.extract_if(.., |ahead| unused(ahead)) {
            let _ = sys::unlink_at(dir.as_fd(), &ahead.name);
        }
        for name in names {
            if index.ahead.len() >= AHEAD_MAX {
                break;
            }
            if index.ahead.iter().any(|ahead| ahead.name == name) {
                continue;
            }
            let made = match index.files.front() {
                // Over the bounds (the last job wrote into a file made ahead): the oldest.
                Some(old) if self.must_go(old, index, Room::none(now_unix)) => {
                    let renamed = reusable(dir, &old.name).and_then(|file| {
                        sys::rename_at(dir.as_fd(), &old.name, &name).map(|()| file)
                    });
                    renamed.map(|file| {
                        let old = index.files.pop_front().map_or(0, |old| old.bytes);
                        index.bytes -= old.min(index.bytes);
                        (file, old)
                    })
                }
                // At them (by count): a new one, made here rather than on a job's path,
                // and from then on the oldest, once its job has written it.
                _ if index.files.len() >= self.max_files => {
                    create_in(dir, &name, "").map(|file| (file, 0))
                }
                // Room left: the job makes its own.
                _ => break,
            };
            // Not made (its job has written it meanwhile, or the oldest is not ours):
            // that job stores the plain way.
            if let Ok((file, bytes)) = made {
                index.ahead.push(Ahead {
                    name,
                    file,
                    bytes,
                    made: Instant::now(),
                });
            }
        }
        // Still over the bounds (no id to rename the oldest for): as after a store.
        self.trim(dir, index, Room::none(now_unix));
    }

    /// At the agent's stop: the files made ahead that no job wrote are removed.
    pub fn drop_ahead(&self) {
        let _ = self.in_dir(|dir, index| {
            for ahead in index.ahead.drain(..) {
                let _ = sys::unlink_at(dir.as_fd(), &ahead.name);
            }
        });
    }

    /// The directory, re-checked and opened without following links: if /tmp's entry
    /// was swapped for a link since start-up, nothing may land where it points.
    fn open_dir(&self) -> io::Result<fs::File> {
        files::open_private_dir(WHAT, &self.dir).map_err(|e| io::Error::other(e.to_string()))
    }

    /// Flushes a result file to disk; on failure removes it (we created it, O_EXCL).
    #[cfg(test)]
    fn synced(&self, dir: &fs::File, name: String, file: &fs::File) -> io::Result<PathBuf> {
        match file.sync_all() {
            Ok(()) => Ok(self.dir.join(name)),
            Err(e) => {
                let _ = sys::unlink_at(dir.as_fd(), &name);
                Err(e)
            }
        }
    }

    /// At start-up: removes each result file of ours that does not begin with its own
    /// job's id (see [`ResultsDir::holds_its_own`]), then deletes result files, oldest
    /// first, until none is older than `max_age_s`, at most `max_files` remain and they
    /// total at most `max_bytes`. Only regular files named `agent-*.txt` directly in the
    /// directory are considered; links, directories and other names are never touched.
    /// Errors are collected, not fatal.
    pub fn cleanup(&self, now_unix: u64) -> Cleanup {
        match self.open_dir() {
            Ok(dir) => self.sweep(&dir, &mut self.index(), Room::none(now_unix), true),
            Err(e) => Cleanup {
                errors: vec![e.to_string()],
                ..Cleanup::default()
            },
        }
    }

    /// [`ResultsDir::cleanup`] in the opened `dir`, leaving `room`, the heads of the
    /// files checked first if `heads`; the listing becomes the new index. Names come
    /// from the path; every look and every removal goes through the checked descriptor,
    /// so a swapped path can only make names miss, never reach elsewhere.
    fn sweep(&self, dir: &fs::File, index: &mut Index, room: Room, heads: bool) -> Cleanup {
        let mut report = Cleanup::default();
        let mut entries = self.list(dir, &mut report.errors);
        // Not result files yet (see `prepare`).
        entries.retain(|entry| !index.ahead.iter().any(|ahead| ahead.name == entry.name));
        if heads {
            entries.retain(|entry| {
                let own = self.holds_its_own(dir, &entry.name, &mut report.errors);
                if !own {
                    report.foreign.push(id_of(&entry.name).into());
                }
                own
            });
        }
        entries.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.name.cmp(&b.name)));
        index.bytes = entries.iter().map(|e| e.bytes).sum();
        index.files = entries.into();
        index.since_listing = Some(0);
        let trimmed = self.trim(dir, index, room);
        report.errors.extend(trimmed.errors);
        Cleanup {
            removed: trimmed.removed + report.foreign.len(),
            foreign: report.foreign,
            errors: report.errors,
            ..trimmed
        }
    }

    /// The regular files named `agent-*.txt` in the directory, in no order.
    fn list(&self, dir: &fs::File, errors: &mut Vec<String>) -> Vec<Entry> {
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) => {
                errors.push(format!("{}: {e}", self.dir.display()));
                return Vec::new();
            }
        };
        let mut entries = Vec::new();
        for item in listing {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    errors.push(format!("{}: {e}", self.dir.display()));
                    continue;
                }
            };
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_result_name(&name) {
                continue;
            }
            match sys::stat_at(dir.as_fd(), &name) {
                // A link is seen as a link, never as its target.
                Ok(seen) if seen.file => entries.push(Entry {
                    mtime: seen.mtime,
                    name,
                    bytes: seen.len,
                }),
                Ok(_) => {}
                // Removed since the listing: nothing to do.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("{}: {e}", self.dir.join(&name).display())),
            }
        }
        entries
    }

    /// Whether the file `name` begins with its own job's id; if not it is removed and
    /// `false` returned (`true` if that fails: it is still there, and said in `errors`).
    /// After a power cut (or a disk pulled out) a recycled file can be on disk under its
    /// new name while its new bytes are not, and then hold the record of the job it was
    /// recycled from; a file created just before can hold nothing. Files named otherwise
    /// (the Python agent's) hold their own.
    fn holds_its_own(&self, dir: &fs::File, name: &str, errors: &mut Vec<String>) -> bool {
        let id = id_of(name);
        if result_name(id).is_err() {
            return true;
        }
        let want = format!("id: {id}\n");
        let mut head = [0; "id: \n".len() + 32];
        let read = sys::open_read_at(dir.as_fd(), name).and_then(|mut f| f.read_exact(&mut head));
        let failed = |e: io::Error| format!("{}: {e}", self.dir.join(name).display());
        match read {
            Ok(()) if head[..] == *want.as_bytes() => return true,
            // Shorter than its id line: empty, or cut.
            Err(e) if e.kind() != io::ErrorKind::UnexpectedEof => {
                errors.push(failed(e));
                return true;
            }
            _ => {}
        }
        match sys::unlink_at(dir.as_fd(), name) {
            Ok(()) => false,
            Err(e) => {
                errors.push(failed(e));
                true
            }
        }
    }

    /// Deletes indexed files, oldest first, until none is older than `max_age_s` and
    /// `room` fits the bounds.
    fn trim(&self, dir: &fs::File, index: &mut Index, room: Room) -> Cleanup {
        let mut report = Cleanup::default();
        let mut i = 0;
        while let Some(entry) = index.files.get(i) {
            if !self.must_go(entry, index, room) {
                // Oldest first: every later file is newer and the totals only shrank, so
                // nothing further needs removing.
                break;
            }
            match sys::unlink_at(dir.as_fd(), &entry.name) {
                Ok(()) => report.removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Still counted, so newer files go instead and the bound holds.
                    let path = self.dir.join(&entry.name);
                    report.errors.push(format!("{}: {e}", path.display()));
                    i += 1;
                    continue;
                }
            }
            if let Some(gone) = index.files.remove(i) {
                index.bytes -= gone.bytes.min(index.bytes);
            }
        }
        report.kept_files = index.files.len();
        report.kept_bytes = index.bytes;
        report
    }
}

/// `agent-<id>.txt`; `id` must be 32 lowercase hex characters.
fn result_name(id: &str) -> io::Result<String> {
    if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("result id {id:?} is not 32 lowercase hex characters"),
        ));
    }
    Ok(format!("agent-{id}.txt"))
}

/// Creates `name` holding `text` inside `dir`, not yet synced.
fn create_in(dir: &fs::File, name: &str, text: &str) -> io::Result<fs::File> {
    let mut file = sys::create_at(dir.as_fd(), name, 0o600)?;
    if let Err(e) = file.write_all(text.as_bytes()) {
        // We created it (O_EXCL), so removing the partial file touches nothing else.
        let _ = sys::unlink_at(dir.as_fd(), name);
        return Err(e);
    }
    Ok(file)
}

/// Turns the old result file `old` into `name` holding `text`: renamed (never over an
/// existing entry), then truncated and written through the descriptor opened and
/// checked (a regular 0600 file of ours with no other link) before the rename. At the
/// bound every job would otherwise remove one file and create another, and on ext4 a
/// file created right after removals costs more than the job (the inode allocator
/// looks past every recently freed inode).
fn recycle(dir: &fs::File, old: &str, name: &str, text: &str, pad: usize) -> io::Result<()> {
    let mut file = reusable(dir, old)?;
    sys::rename_at(dir.as_fd(), old, name)?;
    fill(dir, &mut file, name, text, pad)
}

/// The old result file `old`, opened for writing if it is one of ours: a regular 0600
/// file of our user with no other link.
fn reusable(dir: &fs::File, old: &str) -> io::Result<fs::File> {
    let file = sys::open_write_at(dir.as_fd(), old)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file()
        || meta.uid() != sys::euid()
        || meta.nlink() != 1
        || meta.mode() & 0o077 != 0
    {
        return Err(io::Error::other(format!(
            "{old} is not a result file of ours"
        )));
    }
    Ok(file)
}

/// The file made ahead for this job, written: still in the directory (no one
/// removed it meanwhile), else an error and the job stores the plain way.
fn write_ahead(dir: &fs::File, mut ahead: Ahead, text: &str, pad: usize) -> io::Result<()> {
    if ahead.file.metadata()?.nlink() != 1 {
        return Err(io::Error::other(format!("{} was removed", ahead.name)));
    }
    fill(dir, &mut ahead.file, &ahead.name, text, pad)
}

/// `text` written over a recycled file's bytes, which it then holds alone; on failure
/// the file (`name`) is removed.
fn fill(dir: &fs::File, file: &mut fs::File, name: &str, text: &str, pad: usize) -> io::Result<()> {
    // Over the old bytes, then cut to length: truncating to zero first would free the
    // blocks (a discard, on SSDs and SD cards) and make ext4 flush the file on close.
    // Then `pad` newlines the cut removes, in the same write, to the page boundary: a
    // page written in part is read from the disk first when it is no longer cached, as
    // an old file's seldom is (130–200 µs here, an SD card's random read on a Pi).
    let written =
        write_padded(file, text.as_bytes(), pad).and_then(|()| file.set_len(text.len() as u64));
    if let Err(e) = written {
        let _ = sys::unlink_at(dir.as_fd(), name);
        return Err(e);
    }
    Ok(())
}

/// Newlines to fill a page with: one slice of them, given as often as needed, rather
/// than a page-sized buffer per job (4–64 KiB, a `mmap` and `munmap` each with musl).
const PADDING: [u8; 512] = [b'\n'; 512];

/// `text` and then `pad` newlines, in `writev`s (the first writes all unless
/// interrupted: every page it touches is then written whole).
fn write_padded(file: &mut fs::File, text: &[u8], pad: usize) -> io::Result<()> {
    let mut slices = vec![IoSlice::new(text)];
    let mut left = pad;
    while left > 0 {
        let n = left.min(PADDING.len());
        slices.push(IoSlice::new(&PADDING[..n]));
        left -= n;
    }
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a result name (`agent-*.txt`, [`is_result_name`]) holds between its ends.
fn id_of(name: &str) -> &str {
    &name["agent-".len()..name.len() - ".txt".len()]
}

fn is_result_name(name: &str) -> bool {
    name.starts_with("agent-") && name.ends_with(".txt")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::{Duration, SystemTime};

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn tempdir(tag: &str) -> PathBuf {
        crate::sys::files::test_dir(&format!("results-{tag}"))
    }

    fn cfg(dir: &Path, max_files: usize, max_bytes: u64, max_age_s: u64) -> ResultsConfig {
        ResultsConfig {
            dir: dir.to_path_buf(),
            max_files,
            max_bytes,
            max_age_s,
        }
    }

    fn id(n: usize) -> String {
        format!("{n:032x}")
    }

    /// Writes result `n`, `bytes` long and beginning with its id line (at least 37
    /// bytes), with its mtime `age_s` seconds before `now`.
    fn put(results: &ResultsDir, n: usize, bytes: usize, now: u64, age_s: u64) -> PathBuf {
        let head = format!("id: {}\n", id(n));
        let text = head.clone() + &"x".repeat(bytes - head.len());
        let path = results.write(&id(n), &text).unwrap();
        set_age(&path, now, age_s);
        path
    }

    /// Sets `path`'s mtime `age_s` seconds before `now`.
    fn set_age(path: &Path, now: u64, age_s: u64) {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(now - age_s);
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(when).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_creates_private_file_once() {
        let base = tempdir("write");
        let results = ResultsDir::open(&cfg(&base.join("r"), 10, 1 << 20, 3600)).unwrap();
        assert_eq!(fs::metadata(results.dir()).unwrap().mode() & 0o777, 0o700);
        let path = results.write(ID, "hello\n").unwrap();
        assert_eq!(path, results.dir().join(format!("agent-{ID}.txt")));
        assert_eq!(fs::read_to_string(&path).unwrap(), "hello\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);

        let err = results.write(ID, "again").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&path).unwrap(), "hello\n");
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn planted_symlink_is_not_followed() {
        let base = tempdir("plant");
        let results = ResultsDir::open(&cfg(&base.join("r"), 10, 1 << 20, 3600)).unwrap();
        let target = base.join("target");
        fs::write(&target, "original").unwrap();
        symlink(&target, results.dir().join(format!("agent-{ID}.txt"))).unwrap();
        assert!(results.write(ID, "evil").is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "original");

        // A dangling link must not create its target either.
        let other = id(7);
        let missing = base.join("missing");
        symlink(&missing, results.dir().join(format!("agent-{other}.txt"))).unwrap();
        assert!(results.write(&other, "evil").is_err());
        assert!(!missing.exists());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn results_dir_swapped_for_a_link_is_never_followed() {
        // /tmp race: the dir is aged away (systemd-tmpfiles) and someone puts a link to
        // a directory of their choice where it was. Neither write nor cleanup may reach
        // through it.
        let base = tempdir("swapdir");
        let results = ResultsDir::open(&cfg(&base.join("r"), 0, 0, 0)).unwrap();
        let elsewhere = base.join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let victim = elsewhere.join(format!("agent-{}.txt", id(1)));
        fs::write(&victim, "victim").unwrap();
        fs::remove_dir(results.dir()).unwrap();
        symlink(&elsewhere, results.dir()).unwrap();

        let err = results.write(ID, "planted").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let report = results.cleanup(1_800_000_000);
        assert_eq!(report.removed, 0);
        assert!(report.errors[0].contains("symbolic link"), "{report:?}");
        assert_eq!(names(&elsewhere), [format!("agent-{}.txt", id(1))]);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "victim");
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn bad_ids_rejected() {
        let base = tempdir("ids");
        let results = ResultsDir::open(&cfg(&base.join("r"), 10, 1 << 20, 3600)).unwrap();
        for bad in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "../../../../../../etc/passwd00000",
            "0123456789abcdef/123456789abcdef",
            "0123456789abcdeg0123456789abcdef",
        ] {
            let err = results.write(bad, "x").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        assert!(names(results.dir()).is_empty());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn write_recreates_vanished_dir() {
        let base = tempdir("vanish");
        let results = ResultsDir::open(&cfg(&base.join("r"), 10, 1 << 20, 3600)).unwrap();
        fs::remove_dir(results.dir()).unwrap();
        results.write(ID, "x").unwrap();
        assert_eq!(fs::metadata(results.dir()).unwrap().mode() & 0o777, 0o700);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn cleanup_by_count() {
        let base = tempdir("count");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 3, 1 << 20, 3600)).unwrap();
        for n in 0..5 {
            put(&results, n, 40, now, 100 - n as u64);
        }
        let report = results.cleanup(now);
        assert_eq!(
            report,
            Cleanup {
                removed: 2,
                foreign: vec![],
                kept_files: 3,
                kept_bytes: 120,
                errors: vec![]
            }
        );
        let want: Vec<String> = (2..5).map(|n| format!("agent-{}.txt", id(n))).collect();
        assert_eq!(names(results.dir()), want);
        // A second pass has nothing to do.
        assert_eq!(results.cleanup(now).removed, 0);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn cleanup_by_bytes() {
        let base = tempdir("bytes");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 100, 250, 3600)).unwrap();
        for n in 0..4 {
            put(&results, n, 100, now, 100 - n as u64);
        }
        let report = results.cleanup(now);
        assert_eq!(report.removed, 2);
        assert_eq!(report.kept_files, 2);
        assert_eq!(report.kept_bytes, 200);
        let want: Vec<String> = (2..4).map(|n| format!("agent-{}.txt", id(n))).collect();
        assert_eq!(names(results.dir()), want);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn cleanup_by_age() {
        let base = tempdir("age");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 100, 1 << 20, 3600)).unwrap();
        put(&results, 1, 40, now, 7200);
        put(&results, 2, 40, now, 3601);
        put(&results, 3, 40, now, 3600);
        put(&results, 4, 40, now, 0);
        let report = results.cleanup(now);
        assert_eq!(report.removed, 2);
        assert_eq!(report.kept_files, 2);
        let want: Vec<String> = [3, 4]
            .iter()
            .map(|n| format!("agent-{}.txt", id(*n)))
            .collect();
        assert_eq!(names(results.dir()), want);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn at_start_up_a_file_holding_another_jobs_record_or_nothing_is_removed() {
        // As a power cut leaves them: a recycled file renamed on disk without its new
        // bytes holds the old job's record; a new file without its bytes is empty.
        let base = tempdir("foreign");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 100, 1 << 20, 3600)).unwrap();
        let own = put(&results, 1, 60, now, 30);
        let stale = put(&results, 2, 60, now, 20);
        fs::rename(&stale, results.dir().join(format!("agent-{}.txt", id(3)))).unwrap();
        results.write(&id(4), "").unwrap();
        results.write(&id(5), "id: 0000").unwrap();
        let python = results.dir().join("agent-20240101-1200.txt");
        fs::write(&python, "the old agent's").unwrap();
        set_age(&python, now, 0);
        let report = results.cleanup(now);
        assert_eq!((report.removed, report.kept_files), (3, 2));
        assert_eq!(report.foreign.len(), 3);
        assert!([3, 4, 5].iter().all(|&n| report.foreign.contains(&id(n))));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(own.exists() && python.exists());
        assert_eq!(names(results.dir()).len(), 2);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn cleanup_ignores_other_names_links_and_dirs() {
        let base = tempdir("ignore");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 0, 0, 0)).unwrap();
        let dir = results.dir();
        let outside = base.join("outside.txt");
        fs::write(&outside, "keep me").unwrap();
        fs::write(dir.join("notes.txt"), "keep").unwrap();
        fs::write(dir.join("agent-x.log"), "keep").unwrap();
        symlink(&outside, dir.join("agent-link.txt")).unwrap();
        fs::create_dir(dir.join("agent-dir.txt")).unwrap();
        fs::write(dir.join("agent-dir.txt/inner"), "keep").unwrap();
        put(&results, 1, 40, now, 10);

        let report = results.cleanup(now);
        assert_eq!(report.removed, 1);
        assert_eq!(report.kept_files, 0);
        assert_eq!(report.kept_bytes, 0);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            names(dir),
            [
                "agent-dir.txt",
                "agent-link.txt",
                "agent-x.log",
                "notes.txt"
            ]
        );
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep me");
        assert!(dir.join("agent-dir.txt/inner").exists());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn open_refuses_symlinked_and_open_dirs() {
        let base = tempdir("open");
        let real = base.join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.join("link");
        symlink(&real, &link).unwrap();
        assert!(matches!(
            ResultsDir::open(&cfg(&link, 1, 1, 1)),
            Err(FileError::Symlink { .. })
        ));

        let open = base.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            ResultsDir::open(&cfg(&open, 1, 1, 1)),
            Err(FileError::Mode { .. })
        ));
        assert!(ResultsDir::open(&cfg(&real, 1, 1, 1)).is_ok());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn at_the_bound_the_oldest_file_is_recycled_never_through_a_link() {
        let base = tempdir("recycle");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 2, 1 << 20, 3600)).unwrap();
        let a = put(&results, 0, 40, now, 100);
        let b = put(&results, 1, 40, now, 90);
        let ino = fs::metadata(&a).unwrap().ino();
        let (second, report) = results.store(&id(2), "new text", now);
        let second = second.unwrap();
        let meta = fs::metadata(&second).unwrap();
        assert_eq!(meta.ino(), ino, "the oldest file's inode is reused");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&second).unwrap(), "new text");
        assert!(!a.exists());
        assert_eq!((report.removed, report.kept_files), (1, 1));

        // A second name for the oldest file (a hard link outside): never written
        // through; the name in the directory is removed instead.
        let outside = base.join("outside");
        fs::write(&outside, "keep").unwrap();
        fs::remove_file(&b).unwrap();
        fs::hard_link(&outside, &b).unwrap();
        results.store(&id(3), "third", now).0.unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        assert!(fs::symlink_metadata(&b).is_err());

        // A link planted where the oldest was: removed itself, its target untouched.
        fs::remove_file(&second).unwrap();
        symlink(&outside, &second).unwrap();
        let fourth = results.store(&id(4), "fourth", now).0.unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        assert!(fs::symlink_metadata(&second).is_err());
        assert_eq!(fs::read_to_string(fourth).unwrap(), "fourth");
        assert_eq!(names(results.dir()).len(), 2);
        fs::remove_dir_all(base).unwrap();
    }

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    /// Three files of 100 bytes at the bounds (3 files), listed; one made ahead for
    /// `id(9)`: a new, empty file, as the first one is.
    fn at_bounds_with_one_ahead(tag: &str, now: u64) -> (PathBuf, ResultsDir, PathBuf) {
        let base = tempdir(tag);
        let results = ResultsDir::open(&cfg(&base.join("r"), 3, 10_000, 3600)).unwrap();
        for n in 0..3 {
            put(&results, n, 100, now, 30 - n as u64);
        }
        results.cleanup(now);
        results.prepare(&[id(9)], now);
        let ahead = results.dir().join(format!("agent-{}.txt", id(9)));
        assert_eq!(
            fs::read(&ahead).unwrap(),
            b"",
            "no new file made ahead at the bounds"
        );
        assert_eq!(names(results.dir()).len(), 4, "a result went to make it");
        assert_eq!(results.usage(), (4, 300));
        (base, results, ahead)
    }

    fn record(n: usize) -> String {
        format!("id: {}\nstatus: succeeded\n", id(n))
    }

    #[test]
    fn files_made_ahead_are_written_in_place_and_every_result_kept() {
        let now = 1_800_000_000;
        let (base, results, ahead) = at_bounds_with_one_ahead("ahead-used", now);
        let made = ino(&ahead);
        assert_eq!(results.store(&id(9), &record(9), now).0.unwrap(), ahead);
        assert_eq!(ino(&ahead), made, "renamed or made again on the job's path");
        assert_eq!(fs::read_to_string(&ahead).unwrap(), record(9));
        // One over the bounds until the next job's file is made: the oldest, renamed.
        let oldest = results.dir().join(format!("agent-{}.txt", id(0)));
        let recycled = ino(&oldest);
        results.prepare(&[id(10)], now);
        let next = results.dir().join(format!("agent-{}.txt", id(10)));
        assert!(!oldest.exists());
        assert_eq!(ino(&next), recycled, "not the oldest file, renamed");
        let (stored, report) = results.store(&id(10), &record(10), now);
        assert_eq!(stored.unwrap(), next);
        assert_eq!(ino(&next), recycled, "renamed again on the job's path");
        assert_eq!(fs::read_to_string(&next).unwrap(), record(10));
        assert_eq!(report.removed, 0, "a result removed on the job's path");
        // With no next id, whatever is over the bounds goes all the same.
        results.prepare(&[], now);
        let want: Vec<String> = [2, 9, 10]
            .iter()
            .map(|n| format!("agent-{}.txt", id(*n)))
            .collect();
        assert_eq!(names(results.dir()), want);
        assert!(results.cleanup(now).foreign.is_empty());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn nothing_is_made_ahead_below_the_bounds_or_twice() {
        let now = 1_800_000_000;
        let base = tempdir("ahead-room");
        let results = ResultsDir::open(&cfg(&base.join("r"), 5, 10_000, 3600)).unwrap();
        for n in 0..3 {
            put(&results, n, 100, now, 10);
        }
        results.cleanup(now);
        let was = names(results.dir());
        results.prepare(&[id(9)], now);
        assert_eq!(
            names(results.dir()),
            was,
            "a file made ahead with room left"
        );
        let (base2, results2, _) = at_bounds_with_one_ahead("ahead-twice", now);
        results2.prepare(&[id(9)], now);
        assert_eq!(names(results2.dir()).len(), 4);
        assert_eq!(results2.index().ahead.len(), 1, "made ahead twice");
        fs::remove_dir_all(base).unwrap();
        fs::remove_dir_all(base2).unwrap();
    }

    #[test]
    fn a_file_made_ahead_is_no_result_file_until_written_and_goes_when_unused() {
        let now = 1_800_000_000;
        let (base, results, ahead) = at_bounds_with_one_ahead("ahead-unused", now);
        // A listing (every 256 jobs) neither counts it as a result nor removes it.
        let report = results.cleanup(now);
        assert!(
            report.foreign.is_empty() && report.removed == 0,
            "{report:?}"
        );
        assert_eq!(report.kept_files, 3);
        assert!(ahead.exists());
        // Its id still made ahead: kept, however old.
        let mut index = results.index();
        index.ahead[0].made = Instant::now().checked_sub(AHEAD_UNUSED).unwrap();
        drop(index);
        results.prepare(&[id(9)], now);
        assert!(
            ahead.exists(),
            "removed while its id was still to be given out"
        );
        // Its id taken by a job that never wrote it: removed once unused that long.
        results.prepare(&[], now);
        assert!(!ahead.exists(), "left after its job's time");
        assert_eq!(results.usage(), (3, 300));
        // A job that ran that long stores the plain way.
        assert_eq!(results.store(&id(9), &record(9), now).0.unwrap(), ahead);
        assert_eq!(fs::read_to_string(&ahead).unwrap(), record(9));
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn files_made_ahead_go_at_the_stop_and_after_a_crash_at_the_start() {
        let now = 1_800_000_000;
        let (base, results, ahead) = at_bounds_with_one_ahead("ahead-stop", now);
        results.drop_ahead();
        assert!(!ahead.exists(), "left at the stop");
        assert_eq!(results.usage(), (3, 300));
        // A crash leaves one holding an older job's record: start-up removes it.
        let (base2, results2, _) = at_bounds_with_one_ahead("ahead-crash", now);
        results2.store(&id(9), &record(9), now).0.unwrap();
        results2.prepare(&[id(10)], now);
        let dir = results2.dir().to_path_buf();
        drop(results2);
        let restarted = ResultsDir::open(&cfg(&dir, 3, 10_000, 3600)).unwrap();
        assert_eq!(restarted.cleanup(now).foreign, vec![id(10)]);
        assert!(!dir.join(format!("agent-{}.txt", id(10))).exists());
        fs::remove_dir_all(base).unwrap();
        fs::remove_dir_all(base2).unwrap();
    }

    #[test]
    fn a_file_made_ahead_in_a_directory_swapped_since_is_not_written() {
        let now = 1_800_000_000;
        let (base, results, ahead) = at_bounds_with_one_ahead("ahead-swapped", now);
        fs::rename(results.dir(), base.join("old")).unwrap();
        files::ensure_private_dir(WHAT, results.dir()).unwrap();
        assert_eq!(results.store(&id(9), &record(9), now).0.unwrap(), ahead);
        assert_eq!(fs::read_to_string(&ahead).unwrap(), record(9));
        let moved = base.join("old").join(format!("agent-{}.txt", id(9)));
        assert_eq!(
            fs::read(moved).unwrap(),
            b"",
            "written through the old directory"
        );
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn store_makes_room_first() {
        let base = tempdir("store");
        let now = 1_800_000_000;
        let results = ResultsDir::open(&cfg(&base.join("r"), 3, 250, 3600)).unwrap();
        for n in 0..3 {
            put(&results, n, 50, now, 100 - n as u64);
        }
        let (stored, report) = results.store(&id(9), &"y".repeat(200), now);
        let stored = stored.unwrap();
        assert_eq!(stored, results.dir().join(format!("agent-{}.txt", id(9))));
        // One file goes for the count; then 100 + 200 > 250 bytes: a second for the bytes.
        assert_eq!(
            (report.removed, report.kept_files, report.kept_bytes),
            (2, 1, 50)
        );
        let want: Vec<String> = [2, 9]
            .iter()
            .map(|n| format!("agent-{}.txt", id(*n)))
            .collect();
        assert_eq!(names(results.dir()), want);
        fs::remove_dir_all(base).unwrap();
    }
}
