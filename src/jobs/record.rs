//! A job as clients see it: its record, its status names, and its id. The journal,
//! notify, the routes, the metrics and the clients all read these; nothing here
//! depends on how jobs are run.

use serde::{Deserialize, Serialize};

use crate::policy::Caller;
use crate::text::utf8_prefix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Interrupted,
    /// Held until a human approves it (`POST /request`).
    AwaitingApproval,
    Denied,
    /// Held and never approved or denied within `approvals.ttl_s`.
    Expired,
}

impl Status {
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            Status::Queued | Status::Running | Status::AwaitingApproval
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
            Status::AwaitingApproval => "awaiting_approval",
            Status::Denied => "denied",
            Status::Expired => "expired",
        }
    }
}

/// A job as `GET /job/<id>` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub command: String,
    pub argv: Vec<String>,
    pub rule: String,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub result_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_error: Option<String>,
    /// Who asked, as the kernel reported it.
    #[serde(default)]
    pub caller: Caller,
    /// For a request held for a human: the code that names it, the caller's reason,
    /// and when it expires (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// `memory_limit`: the OOM killer ended the job at its rule's `memory_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed_by: Option<String>,
}

/// What the history of finished jobs may take, in memory and (twice over, between
/// compactions) in the journal: commands, argv and output all count.
pub const HISTORY_BYTES: usize = 8 << 20;

/// A record's cost beyond its strings: the struct, its table entry, id and timestamps.
const RECORD_OVERHEAD: usize = 512;

/// Output kept per stream in a journaled record; the result file has all of it.
pub const JOURNAL_OUTPUT_MAX: usize = 64 * 1024;

impl JobRecord {
    /// This record with output beyond [`JOURNAL_OUTPUT_MAX`] per stream left to the
    /// result file, so the journal stays near `history` × 128 KiB at most.
    pub fn for_journal(&self) -> std::borrow::Cow<'_, JobRecord> {
        let max = JOURNAL_OUTPUT_MAX;
        if self.stdout.len() <= max && self.stderr.len() <= max {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut cut = self.clone();
        cut.stdout = utf8_prefix(&self.stdout, max).to_owned();
        cut.stderr = utf8_prefix(&self.stderr, max).to_owned();
        cut.truncated = true;
        std::borrow::Cow::Owned(cut)
    }

    /// About the bytes this record holds in memory, every string counted.
    pub fn weight(&self) -> usize {
        let strings = [&self.command, &self.rule, &self.stdout, &self.stderr]
            .iter()
            .map(|s| s.len())
            .sum::<usize>();
        let argv = self.argv.iter().map(|a| a.len() + 24).sum::<usize>();
        let optional = [
            &self.result_file,
            &self.result_error,
            &self.reason,
            &self.caller.user,
        ]
        .iter()
        .filter_map(|s| s.as_ref().map(String::len))
        .sum::<usize>();
        RECORD_OVERHEAD + strings + argv + optional
    }

    /// A record as a job starts out: queued, nothing run yet.
    pub fn queued(
        id: String,
        command: String,
        argv: Vec<String>,
        rule: String,
        submitted_at: String,
    ) -> JobRecord {
        JobRecord {
            id,
            command,
            argv,
            rule,
            status: Status::Queued,
            exit_code: None,
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            submitted_at,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            result_file: None,
            result_error: None,
            caller: Caller::default(),
            approval: None,
            reason: None,
            expires_at: None,
            killed_by: None,
        }
    }
}

impl JobRecord {
    /// The result file: a header a person can read, then the output as it was.
    pub fn render(&self) -> String {
        let r = self;
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let num = |v: Option<i32>| v.map_or_else(|| "-".into(), |n| n.to_string());
        format!(
            "id: {}\ncommand: {}\nargv: {}\nrule: {}\ncaller: {}\nstatus: {}\nexit_code: {}\n\
             signal: {}\nsubmitted_at: {}\nstarted_at: {}\nfinished_at: {}\nduration_ms: {}\n\
             truncated: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
            r.id,
            r.command,
            serde_json::to_string(&r.argv).unwrap_or_default(),
            r.rule,
            r.caller.audit(),
            r.status.as_str(),
            num(r.exit_code),
            num(r.signal),
            r.submitted_at,
            opt(&r.started_at),
            opt(&r.finished_at),
            r.duration_ms.map_or_else(|| "-".into(), |d| d.to_string()),
            r.truncated,
            r.stdout,
            r.stderr,
        )
    }
}

/// A fresh 128-bit job id, 32 lowercase hex characters.
pub fn new_id() -> Result<String, getrandom::Error> {
    random_hex::<16>()
}

/// 16 random hex characters: the second half of the ids of the jobs that run in one
/// cgroup, one after another (`contain::Spare`); each job's second half is its own.
pub fn new_key() -> Result<String, getrandom::Error> {
    random_hex::<8>()
}

fn random_hex<const N: usize>() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    Ok(bytes
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect())
}

/// Job ids are exactly 32 lowercase hex characters; anything else is not a job.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bit_hex() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn ids_are_valid_only_as_32_lowercase_hex() {
        assert!(valid_id("0123456789abcdef0123456789abcdef"));
        assert!(!valid_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!valid_id("../../etc/passwd"));
        assert!(valid_id(&new_id().unwrap()));
    }

    #[test]
    fn status_names_match_serde() {
        for s in [
            Status::Queued,
            Status::TimedOut,
            Status::Interrupted,
            Status::AwaitingApproval,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
