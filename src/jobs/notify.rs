//! The optional `notify` command: run when a job whose submitter got a 202 ends, so a
//! Home Assistant (or anything else) hears about it without polling. An argv, never a
//! shell; the job's facts come in as environment variables, not as arguments, so no
//! command output or request text can become an option of the notify program.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::exec::{self, Ending, ExecSpec};
use super::record::JobRecord;
use crate::audit;

/// A notify command that takes longer is stopped: it is a message, not a job.
const TIMEOUT: Duration = Duration::from_secs(30);
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Output kept for the log line.
const MAX_OUTPUT: usize = 4096;
/// At most this many run at once; beyond, a notification is dropped and logged, so a
/// hung receiver cannot pile up threads.
const MAX_RUNNING: usize = 4;
const STACK: usize = 256 * 1024;

pub struct NotifyCommand {
    argv: Vec<String>,
    home: PathBuf,
    running: Arc<AtomicUsize>,
}

impl NotifyCommand {
    pub fn new(argv: Vec<String>, home: PathBuf) -> NotifyCommand {
        NotifyCommand {
            argv,
            home,
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs the notify command for `record` on its own thread; once, never retried.
    pub fn job_ended(&self, record: &JobRecord) {
        self.run(&record.id, job_env(record));
    }

    /// `approvals.notify` for a request just held: what it is, who asked, and the
    /// approval code the human types back (never a TOTP code, which is not known here).
    pub fn held(&self, r: &JobRecord) {
        let opt = |v: Option<&str>| v.unwrap_or_default().to_owned();
        let env = [
            ("APPROVAL", opt(r.approval.as_deref())),
            ("JOB_ID", r.id.clone()),
            ("COMMAND", r.command.clone()),
            ("RULE", r.rule.clone()),
            ("CALLER", r.caller.describe()),
            ("REASON", opt(r.reason.as_deref())),
            (
                "EXPIRES_AT",
                r.expires_at.map(|t| t.to_string()).unwrap_or_default(),
            ),
        ];
        self.run(
            &r.id,
            env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        );
    }

    fn run(&self, id: &str, env: Vec<(String, String)>) {
        let id = id.to_owned();
        if self.running.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING {
            self.running.fetch_sub(1, Ordering::SeqCst);
            audit::notified(&id, "skipped", "", "too many notify commands running");
            return;
        }
        let spec = ExecSpec {
            env,
            timeout: TIMEOUT,
            kill_grace: KILL_GRACE,
            max_output_bytes: MAX_OUTPUT,
            ..ExecSpec::plain(self.argv.clone(), self.home.clone())
        };
        let running = Arc::clone(&self.running);
        let job = id.clone();
        let spawned = std::thread::Builder::new()
            .name("notify".into())
            .stack_size(STACK)
            .spawn(move || {
                let out = exec::run(&spec, None, &AtomicBool::new(false), |_| {});
                let rc = match &out.ending {
                    Ending::TimedOut => "timeout".to_string(),
                    Ending::SpawnFailed(why) | Ending::Refused(why) => {
                        format!("not started: {why}")
                    }
                    _ => audit::rc_text(out.exit_code, out.signal),
                };
                audit::notified(&job, &rc, &out.stdout, &out.stderr);
                running.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(err) = spawned {
            self.running.fetch_sub(1, Ordering::SeqCst);
            audit::notified(&id, "not started", "", &err.to_string());
        }
    }
}

/// `JOB_ID`, `STATUS`, `EXIT_CODE`, `RESULT_FILE`, `COMMAND`, `CALLER`; empty when not
/// known.
fn job_env(r: &JobRecord) -> Vec<(String, String)> {
    [
        ("JOB_ID", r.id.clone()),
        ("STATUS", r.status.as_str().to_owned()),
        (
            "EXIT_CODE",
            r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        ),
        ("RESULT_FILE", r.result_file.clone().unwrap_or_default()),
        ("COMMAND", r.command.clone()),
        ("CALLER", r.caller.describe()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
