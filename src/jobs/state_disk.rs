//! Whether the state disk (`state_dir`) takes writes, as its last write or sync said:
//! `/health` and `/metrics` report it, since a disk that refuses them makes the agent
//! refuse every code (503) while it still answers and runs `no_pin` rules. The agent
//! never writes only to find out: a disk that went bad while nothing was written shows
//! with the first write after.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;

/// The last failure, until a sync succeeds.
#[derive(Debug, Default)]
pub(super) struct StateDisk {
    trouble: Mutex<Option<(String, Instant)>>,
}

/// `/health`'s `state_disk`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiskHealth {
    pub writable: bool,
    /// What failed (the file and the error), while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Seconds since it first failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_s: Option<u64>,
}

impl StateDisk {
    /// A write or sync failed with `why`; the first failure's time is kept.
    pub(super) fn failed(&self, why: String) {
        let mut trouble = self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        let since = trouble.take().map_or_else(Instant::now, |(_, since)| since);
        *trouble = Some((why, since));
    }

    /// A sync succeeded: everything written before it is on the disk.
    pub(super) fn synced(&self) {
        let mut trouble = self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((why, since)) = trouble.take() {
            log::warn!(
                "the state disk takes writes again, after {} s ({why})",
                since.elapsed().as_secs()
            );
        }
    }

    pub(super) fn health(&self) -> DiskHealth {
        let trouble = self.trouble.lock().unwrap_or_else(PoisonError::into_inner);
        match &*trouble {
            None => DiskHealth {
                writable: true,
                problem: None,
                for_s: None,
            },
            Some((why, since)) => DiskHealth {
                writable: false,
                problem: Some(format!(
                    "{why}; codes are refused until it takes writes: check the disk of \
                     state_dir (full, failing, read-only?)"
                )),
                for_s: Some(since.elapsed().as_secs()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_shows_until_a_sync_succeeds_and_keeps_when_it_began() {
        let disk = StateDisk::default();
        assert!(disk.health().writable);
        assert_eq!(disk.health().problem, None);
        disk.failed("jobs.jsonl: No space left on device (os error 28)".into());
        let began = disk.trouble.lock().unwrap().as_ref().unwrap().1;
        disk.failed("jobs.jsonl: Read-only file system (os error 30)".into());
        let health = disk.health();
        assert!(!health.writable);
        let problem = health.problem.unwrap();
        assert!(
            problem.starts_with("jobs.jsonl: Read-only file system"),
            "{problem}"
        );
        assert!(problem.contains("codes are refused"), "{problem}");
        assert_eq!(disk.trouble.lock().unwrap().as_ref().unwrap().1, began);
        assert_eq!(health.for_s, Some(0));
        disk.synced();
        assert!(disk.health().writable);
        assert_eq!(disk.health().for_s, None);
    }
}
