//! A job thread's submission line and the loop's interest in it, settled between the
//! two threads without a lock (see `table`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// A job thread's submission line: written yet, does the loop wait to hear of it, or
/// did the loop give up on it (then the job must not run). The two threads settle it
/// with compare-and-swap, so exactly one of "written" and "given up" wins.
pub struct Mark(AtomicU8);

pub const PENDING: u8 = 0;
const WANTED: u8 = 1;
pub const WRITTEN: u8 = 2;
const ABANDONED: u8 = 3;

impl Mark {
    pub fn new(state: u8) -> Arc<Mark> {
        Arc::new(Mark(AtomicU8::new(state)))
    }

    /// The line is written (synced, for a code): `Some(true)` if the loop asked to hear
    /// of it, `None` if the loop gave up first and the job must not run.
    pub fn set_written(&self) -> Option<bool> {
        self.settle(WRITTEN, ABANDONED).map(|was| was == WANTED)
    }

    /// The loop gives up on it: true unless it was written first.
    pub fn abandon(&self) -> bool {
        self.settle(ABANDONED, WRITTEN).is_some()
    }

    /// Moves to `to` unless `rival` got there first; the state it left.
    fn settle(&self, to: u8, rival: u8) -> Option<u8> {
        let mut state = self.0.load(Ordering::Acquire);
        loop {
            if state == rival {
                return None;
            }
            match self
                .0
                .compare_exchange(state, to, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(was) => return Some(was),
                Err(now) => state = now,
            }
        }
    }

    /// True if written; otherwise the job thread will report it (an extra wake-up only
    /// for the rare answer that has to wait for it).
    pub fn written_or_want(&self) -> bool {
        match self
            .0
            .compare_exchange(PENDING, WANTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => false,
            Err(state) => state == WRITTEN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_is_either_written_or_given_up_never_both() {
        let mark = Mark::new(PENDING);
        assert!(!mark.written_or_want(), "not written yet: the loop waits");
        assert_eq!(mark.set_written(), Some(true), "and hears of it");
        assert!(mark.written_or_want());
        assert!(!mark.abandon(), "too late to give up");

        let mark = Mark::new(PENDING);
        assert!(mark.abandon());
        assert_eq!(mark.set_written(), None, "given up: the job must not run");

        // The two threads racing: exactly one wins, every time.
        for _ in 0..500 {
            let mark = Mark::new(WANTED);
            let other = Arc::clone(&mark);
            let writer = std::thread::spawn(move || other.set_written());
            let abandoned = mark.abandon();
            let written = writer.join().unwrap();
            assert_ne!(abandoned, written.is_some());
        }
    }
}
