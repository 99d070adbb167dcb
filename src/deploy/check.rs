//! `sudo-agent check`, like `visudo -c`: everything the agent would refuse at start-up,
//! found at once. `install` runs the same check before it enables the service, so a
//! bad config never reaches it.

use std::path::Path;

use crate::audit;
use crate::auth::{StateStore, load_secret};
use crate::config::{Config, ConfigError};
use crate::jobs::{ResultsDir, preview_containment};

/// What `check` found: problems stop the agent; warnings are legal but risky.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// What contains jobs on this box, as far as `check` can tell from here.
    pub containment: Option<String>,
}

/// Checks the config at `config`, the secret, state and results directories and the log
/// directory it names. `root` is where those live on disk ("/" but for `install --root`).
pub fn check(config: &Path, root: &Path) -> Report {
    let mut report = Report::default();
    let problems = &mut report.problems;
    let cfg = match Config::load_in_root(config, root) {
        Ok(cfg) => cfg,
        Err(ConfigError::Invalid { problems: list, .. }) => {
            problems.extend(list.iter().map(|p| format!("{}: {p}", config.display())));
            return report;
        }
        Err(err) => {
            problems.push(err.to_string());
            return report;
        }
    };
    if let Err(err) = load_secret(&cfg.secret_file) {
        problems.push(err.to_string());
    }
    if cfg.state_dir.exists()
        && let Err(err) = StateStore::open(&cfg.state_dir)
    {
        problems.push(err.to_string());
    }
    if cfg.results.dir.exists()
        && let Err(err) = ResultsDir::open(&cfg.results)
    {
        problems.push(err.to_string());
    }
    if let Some(dir) = cfg.log_file.parent().filter(|d| !d.is_dir()) {
        problems.push(format!(
            "log directory {} does not exist; run: mkdir -p {}",
            dir.display(),
            dir.display()
        ));
    }
    report.warnings = cfg.warnings();
    // The agent runs elsewhere (under systemd): what the kernel and the v2 hierarchy
    // offer at most, so a rule that would be refused is named now.
    let containment = preview_containment();
    report.containment = Some(containment.describe());
    report
        .warnings
        .extend(containment.warnings(&cfg.rules, &cfg.jobs));
    report.warnings.extend(approval_warnings(&cfg));
    report
        .warnings
        .extend(audit::clock_unsynced().map(str::to_owned));
    report
}

/// The setup for an assistant on this box: it asks as its own user (a rule's `callers`)
/// and someone else approves (`approvals.approvers`). Warns where a caller could
/// approve its own requests.
fn approval_warnings(cfg: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for rule in &cfg.rules {
        let Some(callers) = &rule.callers else {
            continue;
        };
        let Some(approvers) = &cfg.approvals.approvers else {
            warnings.push(format!(
                "rule `{}` limits its callers but approvals.approvers is not set: a caller \
                 who learns a code can approve its own held requests; put Home Assistant's \
                 (or your) user in approvals.approvers, never the assistant's",
                rule.name
            ));
            break;
        };
        let shared = |a: &[u32], b: &[u32]| a.iter().any(|id| b.contains(id));
        if shared(&callers.uids, &approvers.uids) || shared(&callers.gids, &approvers.gids) {
            warnings.push(format!(
                "rule `{}`: a user or group in its callers is also in approvals.approvers, \
                 so it can approve its own requests; keep the assistant's user out of \
                 approvers",
                rule.name
            ));
        }
    }
    warnings
}
