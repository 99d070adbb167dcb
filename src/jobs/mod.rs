//! Jobs from acceptance to history: `table` (queue, running set, bounded history, on
//! the loop thread), `pool` (the job threads), `task` (a job on its thread, from its
//! submission line to its end line), `exec` (one job's process), `journal`
//! (history and used codes across restarts; its file's format in `journal_file`, its
//! compaction while serving in `journal_compact`), `results` (the `agent-<id>.txt` files),
//! `notify` (the command run when a detached job ends), `record` (a job as clients see
//! it), `spec` (a rule's settings as an `ExecSpec`), `state_disk` (whether the state
//! disk takes writes) and `contain` (the cgroups and sandbox jobs get here).

mod approval;
mod contain;
mod exec;
mod journal;
mod journal_compact;
mod journal_file;
mod mark;
mod notify;
mod pool;
mod record;
mod results;
mod spec;
mod state_disk;
mod table;
mod task;

pub(crate) use self::approval::{new_code, normalize as normalize_code};
pub(crate) use self::contain::{
    Layers, RemoveTree, agent as containment, init as init_containment, next_id as next_job_id,
    preview as preview_containment,
};
pub(crate) use self::exec::{ExecSpec, own_home};
pub(crate) use self::journal::{Journal, Ticket};
pub(crate) use self::notify::NotifyCommand;
pub(crate) use self::record::{JobRecord, Status, new_id, valid_id};
pub(crate) use self::results::ResultsDir;
pub(crate) use self::state_disk::DiskHealth;
pub(crate) use self::table::{CancelError, HeldBy, Jobs, Journaled, NewJob};
