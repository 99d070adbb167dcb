//! Counters for `GET /metrics` (Prometheus text format 0.0.4). Plain integers owned by
//! the event-loop thread, bumped where things happen; label values come from fixed
//! sets, never from a request, so the series stay few. No codes, no commands, no ids.

use std::fmt::Write as _;

use crate::jobs::{JobRecord, Status};

/// What a code check came to; the discriminant indexes `CODE_OUTCOMES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeOutcome {
    Accepted,
    Invalid,
    Reused,
    /// Refused unchecked during a lockout.
    LockedOut,
    /// Valid, but could not be recorded.
    Unavailable,
}

const CODE_OUTCOMES: [&str; 5] = ["accepted", "invalid", "reused", "locked_out", "unavailable"];

const FINAL_STATUSES: [Status; 7] = [
    Status::Succeeded,
    Status::Failed,
    Status::TimedOut,
    Status::Cancelled,
    Status::Interrupted,
    Status::Denied,
    Status::Expired,
];

/// Upper bounds of the job duration buckets, in milliseconds (10 ms to 30 min).
const DURATION_BUCKETS_MS: [u64; 12] = [
    10, 50, 100, 500, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000,
];

/// Values read at scrape time rather than counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub running: usize,
    pub queued: usize,
    pub locked_for_s: u64,
    pub results_files: u64,
    pub results_bytes: u64,
    pub uptime_s: u64,
    /// Audit lines lost since start (a counter kept by `audit`).
    pub audit_dropped: u64,
    /// The state disk took the journal's last write and sync.
    pub state_disk_writable: bool,
    /// Each containment layer and whether it is in force.
    pub containment: [(&'static str, bool); 6],
}

/// Plain arrays and a short list rather than maps: the label sets are small and fixed,
/// and every KiB counts in a binary that must stay under 1 MiB.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (route, status, count) in first-seen order; at most routes × statuses entries.
    requests: Vec<(&'static str, u16, u64)>,
    codes: [u64; CODE_OUTCOMES.len()],
    lockouts: u64,
    /// Per entry of `FINAL_STATUSES`.
    jobs: [u64; FINAL_STATUSES.len()],
    /// Per bucket of `DURATION_BUCKETS_MS`, plus one for +Inf; not cumulative here.
    duration_counts: [u64; DURATION_BUCKETS_MS.len() + 1],
    duration_sum_ms: u64,
}

/// The route label for a path: a fixed name, so ids and junk paths add no series.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/" | "/run" => "/run",
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/rules" => "/rules",
        "/request" => "/request",
        "/approve" => "/approve",
        "/deny" => "/deny",
        "/pending" => "/pending",
        p if p.starts_with("/job/") && p.ends_with("/cancel") => "/job/cancel",
        p if p.starts_with("/job/") => "/job",
        _ => "other",
    }
}

impl Metrics {
    /// One answered request.
    pub fn request(&mut self, route: &'static str, status: u16) {
        match self
            .requests
            .iter_mut()
            .find(|(r, s, _)| *r == route && *s == status)
        {
            Some((_, _, n)) => *n += 1,
            None => self.requests.push((route, status, 1)),
        }
    }

    pub fn code(&mut self, outcome: CodeOutcome) {
        self.codes[outcome as usize] += 1;
    }

    /// A lockout began.
    pub fn lockout(&mut self) {
        self.lockouts += 1;
    }

    /// A job reached its final status.
    pub fn job_ended(&mut self, job: &JobRecord) {
        if let Some(i) = FINAL_STATUSES.iter().position(|s| *s == job.status) {
            self.jobs[i] += 1;
        }
        if let Some(ms) = job.duration_ms {
            let bucket = DURATION_BUCKETS_MS
                .iter()
                .position(|&le| ms <= le)
                .unwrap_or(DURATION_BUCKETS_MS.len());
            self.duration_counts[bucket] += 1;
            self.duration_sum_ms = self.duration_sum_ms.saturating_add(ms);
        }
    }

    /// The exposition text. Every series of a fixed label set is written even at zero,
    /// so a dashboard sees it from the first scrape.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "sudo_agent_http_requests_total",
            "counter",
            "HTTP requests answered by the routes, by route and status.",
        );
        for (route, status, n) in &self.requests {
            let _ = writeln!(
                out,
                "sudo_agent_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        header(
            &mut out,
            "sudo_agent_codes_total",
            "counter",
            "Code checks by outcome.",
        );
        for (name, n) in CODE_OUTCOMES.iter().zip(self.codes) {
            let _ = writeln!(out, "sudo_agent_codes_total{{outcome=\"{name}\"}} {n}");
        }
        header(
            &mut out,
            "sudo_agent_lockouts_total",
            "counter",
            "Lockouts begun after too many bad codes.",
        );
        let _ = writeln!(out, "sudo_agent_lockouts_total {}", self.lockouts);
        header(
            &mut out,
            "sudo_agent_audit_lines_dropped_total",
            "counter",
            "Audit lines lost: the log queue was full, or the log file could not be written.",
        );
        let _ = writeln!(
            out,
            "sudo_agent_audit_lines_dropped_total {}",
            gauges.audit_dropped
        );
        header(
            &mut out,
            "sudo_agent_jobs_total",
            "counter",
            "Jobs that ended, by final status.",
        );
        for (status, n) in FINAL_STATUSES.iter().zip(self.jobs) {
            let name = status.as_str();
            let _ = writeln!(out, "sudo_agent_jobs_total{{status=\"{name}\"}} {n}");
        }
        self.render_durations(&mut out);
        for (name, help, value) in [
            (
                "sudo_agent_jobs_running",
                "Jobs running now.",
                gauges.running as u64,
            ),
            (
                "sudo_agent_jobs_queued",
                "Jobs waiting for a slot.",
                gauges.queued as u64,
            ),
            (
                "sudo_agent_locked_out_seconds",
                "Seconds of lockout left (0 when not locked).",
                gauges.locked_for_s,
            ),
            (
                "sudo_agent_results_files",
                "Result files in the results directory.",
                gauges.results_files,
            ),
            (
                "sudo_agent_results_bytes",
                "Bytes of result files in the results directory.",
                gauges.results_bytes,
            ),
            (
                "sudo_agent_uptime_seconds",
                "Seconds since the agent started.",
                gauges.uptime_s,
            ),
            (
                "sudo_agent_state_disk_writable",
                "1 while the state disk takes writes; 0: every code is refused (503).",
                u64::from(gauges.state_disk_writable),
            ),
        ] {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        header(
            &mut out,
            "sudo_agent_containment",
            "gauge",
            "1 when the layer contains jobs: cgroup, its controllers, the sandbox namespaces.",
        );
        for (layer, on) in &gauges.containment {
            let _ = writeln!(
                out,
                "sudo_agent_containment{{layer=\"{layer}\"}} {}",
                u8::from(*on)
            );
        }
        header(
            &mut out,
            "sudo_agent_build_info",
            "gauge",
            "Always 1; the version as a label.",
        );
        let _ = writeln!(
            out,
            "sudo_agent_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }

    fn render_durations(&self, out: &mut String) {
        let name = "sudo_agent_job_duration_seconds";
        header(out, name, "histogram", "Run time of ended jobs.");
        let mut cumulative = 0;
        for (i, le_ms) in DURATION_BUCKETS_MS.iter().enumerate() {
            cumulative += self.duration_counts[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                seconds(*le_ms)
            );
        }
        cumulative += self.duration_counts[DURATION_BUCKETS_MS.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", seconds(self.duration_sum_ms));
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Milliseconds as a decimal number of seconds, exactly (no float rounding).
fn seconds(ms: u64) -> String {
    match ms % 1000 {
        0 => format!("{}", ms / 1000),
        frac => format!(
            "{}.{}",
            ms / 1000,
            format!("{frac:03}").trim_end_matches('0')
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: Status, duration_ms: Option<u64>) -> JobRecord {
        JobRecord {
            status,
            duration_ms,
            ..JobRecord::queued(
                "0".repeat(32),
                "secret-looking command".into(),
                Vec::new(),
                "r".into(),
                String::new(),
            )
        }
    }

    #[test]
    fn routes_have_fixed_labels() {
        assert_eq!(route_label("/"), "/run");
        assert_eq!(route_label("/job/abc"), "/job");
        assert_eq!(route_label("/job/abc/cancel"), "/job/cancel");
        assert_eq!(route_label("/etc/passwd"), "other");
    }

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let mut m = Metrics::default();
        m.request("/run", 200);
        m.request("/run", 200);
        m.request("/run", 401);
        m.code(CodeOutcome::Accepted);
        m.code(CodeOutcome::Invalid);
        m.lockout();
        m.job_ended(&job(Status::Succeeded, Some(5)));
        m.job_ended(&job(Status::Failed, Some(1_500)));
        m.job_ended(&job(Status::Cancelled, None));
        let text = m.render(&Gauges {
            running: 2,
            results_bytes: 99,
            ..Gauges::default()
        });
        for line in [
            "sudo_agent_http_requests_total{route=\"/run\",status=\"200\"} 2",
            "sudo_agent_http_requests_total{route=\"/run\",status=\"401\"} 1",
            "sudo_agent_codes_total{outcome=\"accepted\"} 1",
            "sudo_agent_codes_total{outcome=\"reused\"} 0",
            "sudo_agent_lockouts_total 1",
            "sudo_agent_jobs_total{status=\"cancelled\"} 1",
            "sudo_agent_jobs_total{status=\"timed_out\"} 0",
            "sudo_agent_job_duration_seconds_bucket{le=\"0.01\"} 1",
            "sudo_agent_job_duration_seconds_bucket{le=\"1\"} 1",
            "sudo_agent_job_duration_seconds_bucket{le=\"5\"} 2",
            "sudo_agent_job_duration_seconds_bucket{le=\"+Inf\"} 2",
            "sudo_agent_job_duration_seconds_sum 1.505",
            "sudo_agent_job_duration_seconds_count 2",
            "sudo_agent_jobs_running 2",
            "sudo_agent_results_bytes 99",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("secret-looking"));
        // Every sample line is `name{labels} value` with a number value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(10), "0.01");
        assert_eq!(seconds(1_500), "1.5");
        assert_eq!(seconds(600_000), "600");
        assert_eq!(seconds(1), "0.001");
    }
}
