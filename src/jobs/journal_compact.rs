//! The job journal's compaction while the agent runs: the file rewritten beside itself
//! with what the newest `history` jobs need, without stopping its appenders (see
//! `journal` for who appends and syncs).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::journal::{Open, Shared};
use super::journal_file::{Compacted, WHAT, compact_into, next_compaction};
use super::record::HISTORY_BYTES;
use crate::sys::files::{self, FileError, Replacement, Trust};

/// Where a compaction began: the file's length and the appends then.
#[derive(Clone, Copy)]
pub(super) struct Snapshot {
    len: u64,
    appended: u64,
}

impl Open {
    /// With the lock held: claims the one compaction at a time, of the lines in the
    /// file now (`None`: one is under way).
    pub(super) fn claim(&mut self) -> Option<Snapshot> {
        if self.compacting {
            return None;
        }
        self.compacting = true;
        Some(Snapshot {
            len: self.end,
            appended: self.appended,
        })
    }
}

impl Shared {
    /// Rewrites the file with what the newest `history` jobs need, holding the lock
    /// only at the start and for the switch, so appenders never wait for the rewrite
    /// or its sync (an SD card's 100 ms): the lines up to the start are compacted
    /// into a new file beside it and synced; then, locked, the lines appended since
    /// are copied after them and the new file is renamed in place. Its directory is
    /// synced by the next [`Shared::sync`], before that sync counts anything as on
    /// disk. A line appended meanwhile and already reported synced is synced again in
    /// the new file before the rename, so nothing reported synced is ever lost.
    pub(super) fn compact(&self) {
        self.compact_with(|| {});
    }

    /// [`Shared::compact`], running `meanwhile` once the new file is written and synced,
    /// before the switch (where tests append, as job threads would). Returns whether
    /// the switch synced the lines appended meanwhile again (one of them had been
    /// reported synced).
    pub(super) fn compact_with(&self, meanwhile: impl FnOnce()) -> bool {
        let Some(snapshot) = self.lock().claim() else {
            return false;
        };
        self.compact_from(snapshot, meanwhile)
    }

    /// A compaction claimed by an appender, on a thread of its own (on the appender's
    /// if none can be started).
    pub(super) fn compact_aside(self: &Arc<Self>, snapshot: Snapshot) {
        let shared = Arc::clone(self);
        #[cfg(test)]
        let hold = self.hold.lock().ok().and_then(|mut hold| hold.take());
        let started = std::thread::Builder::new()
            .name("compact".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                shared.compact_from(snapshot, || {
                    #[cfg(test)]
                    if let Some(hold) = hold {
                        let _ = hold.recv();
                    }
                });
            });
        if let Err(err) = started {
            log::warn!("cannot start a thread to compact the journal ({err}); compacting here");
            self.compact_from(snapshot, || {});
        }
    }

    /// The compaction `snapshot` claimed: see [`Shared::compact_with`].
    fn compact_from(&self, snapshot: Snapshot, meanwhile: impl FnOnce()) -> bool {
        let head = compact_into(&self.path, self.history, HISTORY_BYTES, None, snapshot.len)
            .and_then(|(mut new, size)| {
                new.file().sync_data().map_err(|err| new.failed(err))?;
                Ok((new, size))
            });
        meanwhile();
        let mut open = self.lock();
        // The next one is due `history` after what was kept, the lines appended
        // meanwhile included, so the file's bound is as if they came after.
        let kept = head.and_then(|(new, size)| {
            let kept = (size.lines, size.bytes);
            let resynced = self.switch(&mut open, new, size, &snapshot)?;
            Ok((kept, resynced))
        });
        let ((lines, bytes), resynced) = kept.unwrap_or_else(|err| {
            log::error!("cannot compact the journal: {err}");
            ((open.lines, open.bytes), false)
        });
        open.compact_at = next_compaction(lines, self.history);
        open.compact_bytes = next_compaction(bytes, HISTORY_BYTES);
        open.told_compact = false;
        open.compacting = false;
        self.compacted.notify_all();
        resynced
    }

    /// With the lock held: the lines appended since `snapshot` copied into `new`, which
    /// then replaces the file; whether they had to be synced first.
    fn switch(
        &self,
        open: &mut Open,
        mut new: Replacement,
        size: Compacted,
        snapshot: &Snapshot,
    ) -> Result<bool, FileError> {
        let path = &self.path;
        let (mut tail, _) = files::open_trusted(WHAT, path, Trust::Private)?;
        tail.seek(SeekFrom::Start(snapshot.len))
            .map_err(|err| new.failed(err))?;
        let mut tail = tail.take(open.end.saturating_sub(snapshot.len));
        let (mut lines, mut bytes, mut ends_whole) = (0usize, 0usize, true);
        // After the lines kept, over the zeros that follow them.
        let mut at = size.bytes as u64;
        let mut buf = [0u8; 8192];
        loop {
            let n = tail.read(&mut buf).map_err(|err| new.failed(err))?;
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                break;
            };
            (new.file().write_all_at(chunk, at)).map_err(|err| new.failed(err))?;
            at += n as u64;
            lines += chunk.iter().filter(|&&b| b == b'\n').count();
            bytes += n;
            ends_whole = chunk.ends_with(b"\n");
        }
        let resync = open.synced > snapshot.appended;
        if resync {
            new.file().sync_data().map_err(|err| new.failed(err))?;
        }
        let placed = new.rename()?;
        // Appends must go to the file now in place, whatever happens: reopened as at
        // start-up, or else through the handle that wrote it (lines are written where
        // `end` says, so either does).
        let file = files::open_read_write(WHAT, path, 0o600).unwrap_or_else(|err| {
            log::warn!("{err}; appending through the compaction's own handle");
            placed
        });
        open.file = Arc::new(file);
        open.end = at;
        // Either way the file in place takes appends now.
        open.writable = true;
        open.generation += 1;
        open.dir_unsynced = true;
        open.lines = size.lines + lines;
        open.bytes = size.bytes + bytes;
        open.torn = !ends_whole;
        Ok(resync)
    }
}
