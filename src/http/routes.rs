//! Routes: decode the request, authenticate, match the policy, hand the job over, and
//! map every failure to an `ApiError`. The order is fixed: peer, shape, capacity, code,
//! policy, so a caller without a valid code learns nothing about the policy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::body::{self, BadBody};
use super::message::{ApiError, Request, Response, encode_json};
use super::metrics::{self, CodeOutcome, Gauges, Metrics};
use super::server::{Handler, Reply, WaitKind, Woken};
use crate::audit;
use crate::auth::{Auth, Denied};
use crate::config::Config;
use crate::jobs::{self, CancelError, ExecSpec, Jobs, NewJob, own_home, results_usage, valid_id};
use crate::policy::{self, Action, ArgPattern, Plan, Rule};
use crate::sys::{clock, is_loopback};

/// Longest `command` string accepted.
pub const MAX_COMMAND: usize = 4096;
/// Most words in an `argv` request, and the longest word.
pub const MAX_WORDS: usize = 256;
pub const MAX_WORD: usize = 4096;
/// Longest code string looked at; real codes have 6–8 digits.
const MAX_PIN: usize = 16;

#[derive(Serialize)]
struct Accepted<'a> {
    id: &'a str,
    status: &'a str,
    poll: String,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_s: u64,
    running: usize,
    queued: usize,
    locked_for_s: u64,
    containment: jobs::Layers,
}

/// The agent as the event loop sees it: configuration, the code gate, the job table.
pub struct Routes {
    cfg: Config,
    auth: Auth,
    jobs: Jobs,
    started: Instant,
    /// HOME for children of rules without a `user`.
    own_home: PathBuf,
    metrics: Metrics,
}

impl Routes {
    pub fn new(cfg: Config, auth: Auth, jobs: Jobs) -> Routes {
        Routes {
            cfg,
            auth,
            jobs,
            started: Instant::now(),
            own_home: own_home(),
            metrics: Metrics::default(),
        }
    }

    /// No job running or queued: with socket activation, the agent may exit.
    pub fn idle(&self) -> bool {
        self.jobs.running() == 0 && self.jobs.queued() == 0
    }

    fn route(&mut self, req: &Request, now: Instant) -> Result<Reply, ApiError> {
        if !self.cfg.allow_remote && !is_loopback(req.peer.ip()) {
            audit::forbidden_peer(&req.peer.to_string());
            return Err(ApiError::Forbidden);
        }
        let method = req.method.as_str();
        match req.path.as_str() {
            "/" | "/run" => match method {
                "POST" => self.submit(req, now),
                _ => Err(ApiError::MethodNotAllowed("POST")),
            },
            "/health" => match method {
                "GET" => Ok(Reply::Now(self.health())),
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            "/metrics" => match method {
                "GET" => Ok(Reply::Now(self.metrics_page())),
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            // Off by default: without it the policy stays private (see README, MCP).
            "/rules" if self.cfg.expose_rules => match method {
                "GET" => Ok(Reply::Now(Response::json(
                    200,
                    &rules_view(&self.cfg.rules),
                ))),
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            path => match path
                .strip_prefix("/job/")
                .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
            {
                Some((id, "")) if valid_id(id) => match method {
                    "GET" => self.job(req, id, now),
                    _ => Err(ApiError::MethodNotAllowed("GET")),
                },
                Some((id, "cancel")) if valid_id(id) => match method {
                    "POST" => self.cancel(req, id, now),
                    _ => Err(ApiError::MethodNotAllowed("POST")),
                },
                _ => Err(ApiError::NotFound),
            },
        }
    }

    fn health(&self) -> Response {
        Response::json(
            200,
            &Health {
                status: "ok",
                version: env!("CARGO_PKG_VERSION"),
                uptime_s: self.started.elapsed().as_secs(),
                running: self.jobs.running(),
                queued: self.jobs.queued(),
                locked_for_s: self.auth.locked_for(clock::now_unix()),
                containment: jobs::containment().layers(),
            },
        )
    }

    fn metrics_page(&self) -> Response {
        let (results_files, results_bytes) = results_usage(
            &self.cfg.results.dir,
            self.cfg.results.max_files.saturating_add(1024),
        );
        let gauges = Gauges {
            running: self.jobs.running(),
            queued: self.jobs.queued(),
            locked_for_s: self.auth.locked_for(clock::now_unix()),
            results_files,
            results_bytes,
            uptime_s: self.started.elapsed().as_secs(),
            containment: jobs::containment().layers().gauges(),
        };
        Response::text(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            self.metrics.render(&gauges),
        )
    }

    fn submit(&mut self, req: &Request, now: Instant) -> Result<Reply, ApiError> {
        let body = body::submit(&req.body).map_err(|bad| self.refuse_body(req, bad))?;
        let (request, command) = match (&body.command, &body.argv) {
            (Some(command), None) => {
                check_text("command", command, MAX_COMMAND).map_err(|e| bad_err(req, e))?;
                (policy::Invocation::Command(command), command.clone())
            }
            (None, Some(argv)) => {
                if argv.is_empty() || argv.len() > MAX_WORDS {
                    return Err(bad(req, format!("argv must hold 1 to {MAX_WORDS} strings")));
                }
                for word in argv {
                    check_text("argv", word, MAX_WORD).map_err(|e| bad_err(req, e))?;
                }
                (policy::Invocation::Argv(argv), quote_words(argv))
            }
            _ => {
                return Err(bad(
                    req,
                    "send exactly one of \"command\" (a string) or \"argv\" (a list)".into(),
                ));
            }
        };
        let wait = wait_duration(body.wait, self.cfg.jobs.wait_s, self.cfg.jobs.wait_max_s)
            .map_err(|e| bad_err(req, e))?;
        if !self.jobs.has_room() {
            log::warn!(
                "BUSY queue full, refused: {}",
                audit::one_line(&command, 500)
            );
            return Err(ApiError::Busy);
        }
        let authenticated = match body.pin.as_deref().filter(|p| !p.is_empty()) {
            Some(pin) => {
                self.authenticate(pin, &command)?;
                true
            }
            None => false,
        };
        let plan = match policy::plan(&self.cfg.rules, &request) {
            Ok(plan) => plan,
            Err(err) => {
                return Err(bad(
                    req,
                    format!("command cannot be split into words: {err}"),
                ));
            }
        };
        let plan = match plan {
            Some(plan) if authenticated || plan.rule.no_pin => plan,
            // Without a code, "no rule" and "rule needs a code" must look the same.
            _ if !authenticated => {
                audit::invalid_code(&command);
                return Err(ApiError::InvalidCode);
            }
            _ => {
                audit::denied_by_policy(&req.peer.to_string(), &command);
                return Err(ApiError::NotAllowed);
            }
        };
        let id = jobs::new_id()
            .map_err(|e| ApiError::Internal(format!("no randomness for a job id: {e}")))?;
        audit::accepted(&id, &plan.rule.name, &command);
        let job = NewJob {
            command,
            rule: plan.rule.name.clone(),
            spec: self.exec_spec(&plan),
        };
        self.jobs.submit(id.clone(), job);
        if wait.is_zero() {
            return Ok(Reply::Now(self.accepted(&id)));
        }
        Ok(Reply::Wait {
            on: id,
            until: now + wait,
            kind: WaitKind::Submit,
        })
    }

    /// Throttle, code, replay. Persists before it returns Ok.
    fn authenticate(&mut self, pin: &str, command: &str) -> Result<(), ApiError> {
        let pin: String = pin.chars().take(MAX_PIN).collect();
        let now = clock::now_unix();
        match self.auth.check(&pin, now) {
            Ok(_) => {
                self.metrics.code(CodeOutcome::Accepted);
                Ok(())
            }
            Err(Denied::Invalid) => {
                self.count_failure(CodeOutcome::Invalid, now);
                audit::invalid_code(command);
                Err(ApiError::InvalidCode)
            }
            Err(Denied::Reused) => {
                self.count_failure(CodeOutcome::Reused, now);
                audit::reused_code(command);
                Err(ApiError::InvalidCode)
            }
            Err(Denied::LockedOut { retry_after_s }) => {
                self.metrics.code(CodeOutcome::LockedOut);
                audit::locked_refused(retry_after_s, command);
                Err(ApiError::LockedOut { retry_after_s })
            }
            Err(Denied::Unavailable(err)) => {
                self.metrics.code(CodeOutcome::Unavailable);
                log::error!("cannot record the used code, refusing to run: {err}");
                Err(ApiError::Unavailable(format!(
                    "the agent cannot record used codes: {err}"
                )))
            }
        }
    }

    /// A 400 for a body that could not be decoded. A code inside it in the wrong shape
    /// (`"pin": 614029`) is spent and counted as a failed attempt: the request may have
    /// been logged on its way here, so that code must already be useless.
    fn refuse_body(&mut self, req: &Request, bad: BadBody) -> ApiError {
        if !bad.stray_pin.is_empty() {
            let now = clock::now_unix();
            if self.auth.refuse_stray(&bad.stray_pin, now) {
                self.count_failure(CodeOutcome::Invalid, now);
            } else {
                self.metrics.code(CodeOutcome::LockedOut);
            }
            audit::invalid_code(bad.command.as_deref().unwrap_or("(not decoded)"));
        }
        bad_err(req, ApiError::BadRequest(bad.message))
    }

    /// A bad code was counted; `check` refuses unchecked while locked, so being locked
    /// right after a failure means this failure began a lockout.
    fn count_failure(&mut self, outcome: CodeOutcome, now: u64) {
        self.metrics.code(outcome);
        if self.auth.locked_for(now) > 0 {
            self.metrics.lockout();
        }
    }

    fn exec_spec(&self, plan: &Plan<'_>) -> ExecSpec {
        ExecSpec::for_rule(plan.rule, plan.argv.clone(), &self.cfg.jobs, &self.own_home)
    }

    /// 202 for a job still queued or running; from now on its end is notified.
    fn accepted(&mut self, id: &str) -> Response {
        self.jobs.detach(id);
        self.poll_answer(id)
    }

    /// 202 with the poll URL of a job still queued or running.
    fn poll_answer(&self, id: &str) -> Response {
        let status = self.jobs.get(id).map_or("running", |r| r.status.as_str());
        Response::json(
            202,
            &Accepted {
                id,
                status,
                poll: format!("/job/{id}"),
            },
        )
    }

    /// The record of job `id` as JSON: encoded once per state of the job and shared by
    /// every connection sending it (a record can be megabytes once escaped).
    fn record_answer(&mut self, id: &str) -> Response {
        let Some((record, cached)) = self.jobs.answer_slot(id) else {
            return ApiError::NotFound.response();
        };
        if let Some(body) = cached.upgrade() {
            return Response::shared(200, body);
        }
        match encode_json(record) {
            Ok(body) => {
                let body = Arc::new(body);
                *cached = Arc::downgrade(&body);
                Response::shared(200, body)
            }
            Err(_) => ApiError::Internal("the job record could not be encoded".into()).response(),
        }
    }

    fn job(&mut self, req: &Request, id: &str, now: Instant) -> Result<Reply, ApiError> {
        let record = self.jobs.get(id).ok_or(ApiError::NotFound)?;
        let wait = match req.query_param("wait") {
            Some(text) => {
                let secs = text
                    .parse::<f64>()
                    .map_err(|_| bad(req, "wait must be a number of seconds".into()))?;
                wait_duration(Some(secs), 0, self.cfg.jobs.wait_max_s)
                    .map_err(|e| bad_err(req, e))?
            }
            None => Duration::ZERO,
        };
        if record.status.is_final() || wait.is_zero() {
            return Ok(Reply::Now(self.record_answer(id)));
        }
        Ok(Reply::Wait {
            on: id.to_string(),
            until: now + wait,
            kind: WaitKind::Poll,
        })
    }

    fn cancel(&mut self, req: &Request, id: &str, now: Instant) -> Result<Reply, ApiError> {
        let body = body::cancel(&req.body).map_err(|bad| self.refuse_body(req, bad))?;
        let command = self.jobs.get(id).ok_or(ApiError::NotFound)?.command.clone();
        let pin = body.pin.filter(|p| !p.is_empty()).ok_or_else(|| {
            audit::invalid_code(&format!("cancel {id}"));
            ApiError::InvalidCode
        })?;
        self.authenticate(&pin, &format!("cancel {id} ({command})"))?;
        let cancelled = self.jobs.cancel(id);
        // A queued job ends here, never passing through `on_wake`.
        if cancelled == Ok(jobs::Status::Cancelled)
            && let Some(job) = self.jobs.get(id)
        {
            self.metrics.job_ended(job);
        }
        match cancelled {
            Ok(jobs::Status::Running) => {
                // Answer once the group is gone: TERM, grace, KILL.
                let until = now + Duration::from_secs(self.cfg.jobs.kill_grace_s + 2);
                Ok(Reply::Wait {
                    on: id.to_string(),
                    until,
                    kind: WaitKind::Poll,
                })
            }
            Ok(_) | Err(CancelError::AlreadyFinished(_)) => Ok(Reply::Now(self.record_answer(id))),
            Err(CancelError::NotFound) => Err(ApiError::NotFound),
        }
    }
}

impl Handler for Routes {
    fn handle(&mut self, request: Request, now: Instant) -> Reply {
        let reply = self
            .route(&request, now)
            .unwrap_or_else(|err| Reply::Now(err.response()));
        if let Reply::Now(response) = &reply {
            let route = metrics::route_label(&request.path);
            self.metrics.request(route, response.status);
        }
        reply
    }

    fn on_wake(&mut self) -> Vec<String> {
        let ended = self.jobs.collect();
        for job in ended.iter().filter_map(|id| self.jobs.get(id)) {
            self.metrics.job_ended(job);
        }
        ended
    }

    fn answer_wait(&mut self, job: &str, kind: WaitKind, why: Woken) -> Response {
        let response = match self.jobs.get(job).map(|r| r.status) {
            None => ApiError::NotFound.response(),
            Some(status)
                if status.is_final() || (kind == WaitKind::Poll && why != Woken::Evicted) =>
            {
                self.record_answer(job)
            }
            Some(_) if kind == WaitKind::Submit => self.accepted(job),
            // A poll cut short to make room: come back for the rest.
            Some(_) => self.poll_answer(job),
        };
        // Parked requests are counted when answered; a cancel that waited for its
        // process group is a Poll wait too, so it counts under "/job".
        let route = match kind {
            WaitKind::Submit => "/run",
            WaitKind::Poll => "/job",
        };
        self.metrics.request(route, response.status);
        response
    }

    fn tick(&mut self, _now: Instant, _open_connections: usize) -> bool {
        false
    }

    fn shutdown(&mut self) {
        self.jobs
            .shutdown(Duration::from_secs(self.cfg.jobs.kill_grace_s + 1));
    }
}

/// A rule as `GET /rules` shows it: name, patterns as written in the config, and
/// whether a code is needed. Users, env and paths beyond the program stay private.
#[derive(Serialize)]
struct RuleView<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    argv: Option<Vec<ArgView<'a>>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    shell: bool,
    no_pin: bool,
}

/// The program path, then each pattern as the config writes it.
#[derive(Serialize)]
#[serde(untagged)]
enum ArgView<'a> {
    Program(String),
    Pattern(&'a ArgPattern),
}

#[derive(Serialize)]
struct RulesView<'a> {
    rules: Vec<RuleView<'a>>,
}

fn rules_view(rules: &[Rule]) -> RulesView<'_> {
    let rules = rules
        .iter()
        .map(|rule| {
            let argv = match &rule.action {
                Action::Argv { program, args } => {
                    let mut argv = vec![ArgView::Program(program.display().to_string())];
                    argv.extend(args.iter().map(ArgView::Pattern));
                    Some(argv)
                }
                Action::Shell => None,
            };
            RuleView {
                name: &rule.name,
                shell: argv.is_none(),
                argv,
                no_pin: rule.no_pin,
            }
        })
        .collect();
    RulesView { rules }
}

fn bad(req: &Request, why: String) -> ApiError {
    bad_err(req, ApiError::BadRequest(why))
}

/// Logs a refused request shape once, where it is refused.
fn bad_err(req: &Request, err: ApiError) -> ApiError {
    if let ApiError::BadRequest(why) = &err {
        audit::bad_request(&req.peer.to_string(), why);
    }
    err
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::BadRequest(format!("{field} contains a NUL byte")));
    }
    if text.len() > max {
        return Err(ApiError::BadRequest(format!(
            "{field} is longer than {max} bytes"
        )));
    }
    Ok(())
}

/// `wait` seconds from the request, capped at `max_s`; absent means `default_s`.
fn wait_duration(wait: Option<f64>, default_s: u64, max_s: u64) -> Result<Duration, ApiError> {
    let secs = wait.unwrap_or(default_s as f64);
    if !secs.is_finite() || secs < 0.0 {
        return Err(ApiError::BadRequest(
            "wait must be a number of seconds, 0 or more".into(),
        ));
    }
    Ok(Duration::from_secs_f64(secs.min(max_s as f64)))
}

/// An argv request as a shell-quoted line, for the record and the audit log.
fn quote_words(words: &[String]) -> String {
    let quote = |w: &String| {
        if !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
        {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    words.iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits() {
        assert_eq!(
            wait_duration(None, 10, 120).unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(
            wait_duration(Some(500.0), 10, 120).unwrap(),
            Duration::from_secs(120)
        );
        assert!(wait_duration(Some(-1.0), 10, 120).is_err());
        assert!(wait_duration(Some(f64::NAN), 10, 120).is_err());
    }

    #[test]
    fn quoting() {
        let words: Vec<String> = ["echo", "a b", "it's", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(quote_words(&words), r"echo 'a b' 'it'\''s' ''");
    }
}
