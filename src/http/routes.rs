//! Routes: decode the request, authenticate, match the policy, hand the job over, and
//! map every failure to an `ApiError`. The order is fixed: peer, shape, capacity, code,
//! policy, so a caller without a valid code learns nothing about the policy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::body::{self, BadBody, Submit};
use super::message::{ApiError, Request, Response, encode_json};
use super::metrics::{self, CodeOutcome, Gauges, Metrics};
use super::server::{Handler, Reply, WaitKind, Woken};
use super::users::Users;
use crate::audit;
use crate::auth::{Auth, Denied};
use crate::config::Config;
use crate::jobs::{
    self, CancelError, ExecSpec, Jobs, Journaled, NewJob, NotifyCommand, Status, Ticket, own_home,
    valid_id,
};
use crate::policy::{self, Action, ArgPattern, Caller, Invocation, Plan, Rule};
use crate::sys::clock;

/// Longest `command` string accepted.
pub const MAX_COMMAND: usize = 4096;
/// Most words in an `argv` request, and the longest word.
pub const MAX_WORDS: usize = 256;
pub const MAX_WORD: usize = 4096;
/// Longest code string looked at; real codes have 6–8 digits.
const MAX_PIN: usize = 16;
/// How long a request may wait for its own state to reach the disk (a used code, a
/// counted failure, a submission) before the agent gives up on the disk: the command
/// does not run and the client gets 503 `unavailable`. An SD card syncs in well under a
/// second; a disk that takes this long is failing.
pub(super) const DURABLE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Serialize)]
struct Accepted<'a> {
    id: &'a str,
    status: &'a str,
    /// A held request's code and when it expires (unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
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
    /// Whether the state disk takes writes: without, every code is refused (503).
    state_disk: jobs::DiskHealth,
    /// Whether the kernel's clock is synchronized (null: cannot tell): codes are
    /// checked against it.
    clock_synchronized: Option<bool>,
    containment: jobs::Layers,
}

/// A request parked until the journal thread reports on its ticket.
struct Held {
    what: Hold,
    /// The route it came in on, for the metrics.
    route: &'static str,
    since: Instant,
    /// The report, once it came.
    result: Option<Result<(), String>>,
}

enum Hold {
    /// A refusal whose failed code is being saved: a denial stays a denial either way,
    /// but it leaves only once a restart cannot forget the failure.
    Refusal(Response),
    /// A cancel whose code is being synced; done only once it is.
    Cancel(String),
}

/// The key a held request is parked under (never a job id, which is 32 hex digits).
fn held_key(ticket: Ticket) -> String {
    format!("#{ticket}")
}

/// The agent as the event loop sees it: configuration, the code gate, the job table.
pub struct Routes {
    pub(super) cfg: Config,
    auth: Auth,
    pub(super) jobs: Jobs,
    started: Instant,
    /// HOME for children of rules without a `user`.
    pub(super) own_home: PathBuf,
    metrics: Metrics,
    /// Requests parked on a journal ticket. Few by construction: only a counted failure
    /// (at most `max_failures` per lockout) or an accepted code (one per time step)
    /// parks one; `tick` drops those whose client stopped waiting.
    held: HashMap<Ticket, Held>,
    /// Callers' names and primary groups, from a snapshot read off the loop.
    users: Users,
    /// `approvals.notify`.
    pub(super) approval_notify: Option<NotifyCommand>,
}

impl Routes {
    pub fn new(cfg: Config, auth: Auth, jobs: Jobs, users: Users) -> Routes {
        let home = own_home();
        Routes {
            approval_notify: (cfg.approvals.notify.clone())
                .map(|argv| NotifyCommand::new(argv, home.clone())),
            users,
            cfg,
            auth,
            jobs,
            started: Instant::now(),
            own_home: home,
            metrics: Metrics::default(),
            held: HashMap::new(),
        }
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.jobs.running()
    }

    /// No job running, queued or held: with socket activation, the agent may exit.
    pub fn idle(&self) -> bool {
        self.jobs.running() == 0 && self.jobs.queued() == 0 && self.jobs.held_count() == 0
    }

    fn route(&mut self, req: &Request, now: Instant) -> Result<Reply, ApiError> {
        if !self.cfg.allow_remote && !req.peer.is_local() {
            audit::forbidden_peer(&req.peer.to_string());
            return Err(ApiError::Forbidden);
        }
        let method = req.method.as_str();
        match req.path.as_str() {
            "/" | "/run" => match method {
                "POST" => self.submit(req, now),
                _ => Err(ApiError::MethodNotAllowed("POST")),
            },
            "/request" | "/approve" | "/deny" => match method {
                "POST" => self.held_route(req, now),
                _ => Err(ApiError::MethodNotAllowed("POST")),
            },
            "/pending" => match method {
                "GET" => self.pending(req),
                _ => Err(ApiError::MethodNotAllowed("GET")),
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

    /// `status` is `degraded` while the state disk refuses writes: the agent answers and
    /// runs `no_pin` rules, but no code can be accepted.
    fn health(&self) -> Response {
        let state_disk = self.jobs.disk_health();
        Response::json(
            200,
            &Health {
                status: if state_disk.writable {
                    "ok"
                } else {
                    "degraded"
                },
                version: env!("CARGO_PKG_VERSION"),
                uptime_s: self.started.elapsed().as_secs(),
                running: self.jobs.running(),
                queued: self.jobs.queued(),
                locked_for_s: self.auth.locked_for(clock::now_unix()),
                state_disk,
                clock_synchronized: clock::synchronized(),
                containment: jobs::containment().layers(),
            },
        )
    }

    fn metrics_page(&self) -> Response {
        let (results_files, results_bytes) = self.jobs.results_usage();
        let gauges = Gauges {
            running: self.jobs.running(),
            queued: self.jobs.queued(),
            locked_for_s: self.auth.locked_for(clock::now_unix()),
            results_files,
            results_bytes,
            uptime_s: self.started.elapsed().as_secs(),
            audit_dropped: audit::dropped(),
            state_disk_writable: self.jobs.disk_health().writable,
            containment: jobs::containment().layers().gauges(),
        };
        Response::text(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            self.metrics.render(&gauges),
        )
    }

    fn submit(&mut self, req: &Request, now: Instant) -> Result<Reply, ApiError> {
        let body = body::submit(&req.body, body::RUN).map_err(|bad| self.refuse_body(req, bad))?;
        let (request, command) = invocation(req, &body)?;
        let wait = wait_duration(body.wait, self.cfg.jobs.wait_s, self.cfg.jobs.wait_max_s)
            .map_err(|e| bad_err(req, e))?;
        self.room(&command)?;
        let step = match body.pin.as_deref().filter(|p| !p.is_empty()) {
            Some(pin) => Some(self.authenticate(pin, &command)?),
            None => None,
        };
        let authenticated = step.is_some();
        let caller = self.caller(req.caller.clone());
        let cfg = &self.cfg;
        let plan = match plan(cfg, req, &request, &caller)? {
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
        let job = self.new_job(&plan, command, caller);
        self.start(job, step, wait, now)
    }

    /// Refuses with 503 `busy` when the queue is full.
    pub(super) fn room(&self, command: &str) -> Result<(), ApiError> {
        if self.jobs.has_room() {
            return Ok(());
        }
        log::warn!(
            "BUSY queue full, refused: {}",
            audit::one_line(command, 500)
        );
        Err(ApiError::Busy)
    }

    pub(super) fn new_job(&self, plan: &Plan<'_>, command: String, caller: Caller) -> NewJob {
        NewJob {
            command,
            rule: plan.rule.name.clone(),
            spec: self.exec_spec(plan),
            caller,
        }
    }

    /// Submits `job` and parks the request until it is journaled and, within `wait`,
    /// ended.
    pub(super) fn start(
        &mut self,
        job: NewJob,
        step: Option<u64>,
        wait: Duration,
        now: Instant,
    ) -> Result<Reply, ApiError> {
        let (id, ahead) = jobs::next_job_id().map_err(no_randomness)?;
        audit::accepted(&id, &job.rule, &job.caller.audit(), &job.command);
        self.jobs.submit(id.clone(), ahead, job, step, wait);
        if step.is_some() {
            self.code_journaled();
        }
        // Even with `wait: 0`: the id is given out only once it is in the journal.
        Ok(Reply::Wait {
            on: id,
            until: now + wait,
            kind: WaitKind::Submit,
        })
    }

    /// `caller` with its user name and primary group, from the snapshot of the user
    /// database (the loop never reads `/etc/passwd` itself).
    pub(super) fn caller(&self, caller: Caller) -> Caller {
        self.users.name(caller)
    }

    /// Throttle, code, replay, decided in memory: a good code is used from here on, and
    /// its step comes back for the caller to make durable before acting on it. A refusal
    /// that counted a failure is held by `handle` until the failure is saved.
    pub(super) fn authenticate(&mut self, pin: &str, command: &str) -> Result<u64, ApiError> {
        let pin: String = pin.chars().take(MAX_PIN).collect();
        let now = clock::now_unix();
        match self.auth.check(&pin, now) {
            Ok(step) => {
                self.metrics.code(CodeOutcome::Accepted);
                Ok(step)
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
        }
    }

    /// The step of the code `authenticate` accepted went to the journal with what it
    /// authorised, which syncs it before acting (see `Auth::journaled`).
    pub(super) fn code_journaled(&mut self) {
        self.auth.journaled();
    }

    fn hold(&mut self, ticket: Ticket, what: Hold, route: &'static str, now: Instant) -> Reply {
        self.held.insert(
            ticket,
            Held {
                what,
                route,
                since: now,
                result: None,
            },
        );
        Reply::Wait {
            on: held_key(ticket),
            until: now + DURABLE_LIMIT,
            kind: WaitKind::Durable,
        }
    }

    /// A 400 for a body that could not be decoded. A code inside it in the wrong shape
    /// (`"pin": 614029`) is spent and counted as a failed attempt: the request may have
    /// been logged on its way here, so that code must already be useless.
    pub(super) fn refuse_body(&mut self, req: &Request, bad: BadBody) -> ApiError {
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

    pub(super) fn exec_spec(&self, plan: &Plan<'_>) -> ExecSpec {
        ExecSpec::for_rule(plan.rule, plan.argv.clone(), &self.cfg.jobs, &self.own_home)
    }

    /// 202 for a job still queued or running; from now on its end is notified.
    fn accepted(&mut self, id: &str) -> Response {
        self.jobs.detach(id);
        self.poll_answer(id)
    }

    /// 202 with the poll URL of a job still queued, running or held (then with its
    /// approval code and expiry).
    fn poll_answer(&self, id: &str) -> Response {
        let record = self.jobs.get(id);
        let held = record.filter(|r| r.status == Status::AwaitingApproval);
        Response::json(
            202,
            &Accepted {
                id,
                status: record.map_or("running", |r| r.status.as_str()),
                approval: held.and_then(|r| r.approval.as_deref()),
                expires_at: held.and_then(|r| r.expires_at),
                poll: format!("/job/{id}"),
            },
        )
    }

    /// The record of job `id` as JSON: encoded once per state of the job and shared by
    /// every connection sending it (a record can be megabytes once escaped).
    pub(super) fn record_answer(&mut self, id: &str) -> Response {
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
        // The cancel acts once its code is synced: a code is never acted on twice.
        let step = self.authenticate(&pin, &format!("cancel {id} ({command})"))?;
        let ticket = self.jobs.journal().used(step);
        self.code_journaled();
        Ok(self.hold(ticket, Hold::Cancel(id.to_string()), "/job/cancel", now))
    }

    fn cancel_now(&mut self, id: &str, now: Instant) -> Reply {
        match self.jobs.cancel(id) {
            Ok(status) if !status.is_final() => {
                // Answer once the group is gone (TERM, grace, KILL) or, for a queued job,
                // once its end is journaled.
                let until = now + Duration::from_secs(self.cfg.jobs.kill_grace_s + 2);
                Reply::Wait {
                    on: id.to_string(),
                    until,
                    kind: WaitKind::Poll,
                }
            }
            Ok(_) | Err(CancelError::AlreadyFinished(_)) => Reply::Now(self.record_answer(id)),
            Err(CancelError::NotFound) => Reply::Now(ApiError::NotFound.response()),
        }
    }

    /// A parked submit: the job ended (200), its wait ran out (202), or it is not yet in
    /// the journal (parked again, for at most [`DURABLE_LIMIT`]).
    fn answer_submit(&mut self, id: &str, why: Woken) -> Reply {
        let now = Instant::now();
        let (submitted, wait) = self.jobs.submitted(id).unwrap_or((now, Duration::ZERO));
        match self.jobs.journaled(id) {
            Journaled::Refused(why) => {
                self.metrics.code(CodeOutcome::Unavailable);
                Reply::Now(unavailable(&why).response())
            }
            Journaled::NotYet => {
                let limit = submitted + DURABLE_LIMIT;
                if now < limit && why != Woken::Evicted {
                    return Reply::Wait {
                        on: id.to_string(),
                        until: limit,
                        kind: WaitKind::Submit,
                    };
                }
                let reason = if why == Woken::Evicted {
                    "the agent had to answer before the state disk recorded the job".to_string()
                } else {
                    format!(
                        "the state disk did not record the job within {} s",
                        DURABLE_LIMIT.as_secs()
                    )
                };
                if !self.jobs.abandon(id, &reason) && self.jobs.journaled(id) == Journaled::Yes {
                    // Journaled in the meantime: it runs, and is answered as usual.
                    return self.answer_submit(id, why);
                }
                self.metrics.code(CodeOutcome::Unavailable);
                Reply::Now(unavailable(&reason).response())
            }
            Journaled::Yes => match self.jobs.get(id).map(|r| r.status) {
                None => Reply::Now(ApiError::NotFound.response()),
                Some(status) if status.is_final() => Reply::Now(self.record_answer(id)),
                // Held: answered at once, and its end is not notified unless approved.
                Some(Status::AwaitingApproval) => Reply::Now(self.poll_answer(id)),
                Some(_) if now < submitted + wait && why != Woken::Evicted => Reply::Wait {
                    on: id.to_string(),
                    until: submitted + wait,
                    kind: WaitKind::Submit,
                },
                Some(_) => Reply::Now(self.accepted(id)),
            },
        }
    }

    /// A request held for its ticket: answered once reported (or given up on).
    fn answer_held(&mut self, key: &str, why: Woken, now: Instant) -> Reply {
        let ticket = key.strip_prefix('#').and_then(|t| t.parse::<Ticket>().ok());
        let Some(held) = ticket.and_then(|t| self.held.get(&t)) else {
            return Reply::Now(ApiError::NotFound.response());
        };
        let limit = held.since + DURABLE_LIMIT;
        if held.result.is_none() && now < limit && why != Woken::Evicted {
            return Reply::Wait {
                on: key.to_string(),
                until: limit,
                kind: WaitKind::Durable,
            };
        }
        let Some(held) = ticket.and_then(|t| self.held.remove(&t)) else {
            return Reply::Now(ApiError::NotFound.response());
        };
        let reply = match (held.what, held.result) {
            // A denial stays a denial; its failure is counted in memory either way.
            (Hold::Refusal(response), result) => {
                if let Some(Err(why)) = result {
                    log::error!("{why}");
                }
                Reply::Now(response)
            }
            (Hold::Cancel(id), Some(Ok(()))) => self.cancel_now(&id, now),
            (Hold::Cancel(_), result) => {
                self.metrics.code(CodeOutcome::Unavailable);
                let why = match result {
                    Some(Err(why)) => why,
                    _ if why == Woken::Evicted => {
                        "the agent had to answer before the state disk recorded the code".into()
                    }
                    _ => format!(
                        "the state disk did not record the code within {} s",
                        DURABLE_LIMIT.as_secs()
                    ),
                };
                Reply::Now(unavailable(&why).response())
            }
        };
        if let Reply::Now(response) = &reply {
            self.metrics.request(held.route, response.status);
        }
        reply
    }
}

/// 503 `unavailable`: what was asked was not done, because the disk did not say yes.
fn unavailable(why: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "nothing was run: {why}; check the disk of state_dir (full, failing, read-only?)"
    ))
}

impl Handler for Routes {
    fn handle(&mut self, request: Request, now: Instant) -> Reply {
        let mut reply = self
            .route(&request, now)
            .unwrap_or_else(|err| Reply::Now(err.response()));
        let route = metrics::route_label(&request.path);
        // The code gate's state changed. A refusal that counted a failure leaves once
        // the failure is saved, so a restart cannot forget it. A success is saved at the
        // journal's next group commit when it reset the throttle or when its step went
        // to no journal line (the request was refused after the code); otherwise its
        // step is made durable with what it authorised, and nothing is saved.
        if let Some(save) = self.auth.save_work() {
            match reply {
                Reply::Now(response) if save.urgent => {
                    let ticket = self.jobs.journal().run(save.work);
                    reply = self.hold(ticket, Hold::Refusal(response), route, now);
                }
                _ => self.jobs.journal().run_later(save.work),
            }
        }
        if let Reply::Now(response) = &reply {
            self.metrics.request(route, response.status);
        }
        reply
    }

    fn on_wake(&mut self) -> Vec<String> {
        let news = self.jobs.collect();
        for job in news.ended.iter().filter_map(|id| self.jobs.get(id)) {
            self.metrics.job_ended(job);
        }
        let mut keys = news.changed;
        for report in news.reports {
            match self.held.get_mut(&report.ticket) {
                Some(held) => {
                    held.result = Some(report.result);
                    keys.push(held_key(report.ticket));
                }
                // Its request was answered without it (the disk was slow): still said.
                None => {
                    if let Err(why) = report.result {
                        log::error!("{why}");
                    }
                }
            }
        }
        keys
    }

    fn answer_wait(&mut self, on: &str, kind: WaitKind, why: Woken, until: Instant) -> Reply {
        let now = Instant::now();
        let reply = match kind {
            WaitKind::Durable => return self.answer_held(on, why, now),
            WaitKind::Submit => self.answer_submit(on, why),
            WaitKind::Poll => match self.jobs.get(on).map(|r| r.status) {
                None => Reply::Now(ApiError::NotFound.response()),
                // News that is not its end (its submission was journaled): wait on.
                Some(status) if !status.is_final() && why == Woken::Ready && now < until => {
                    Reply::Wait {
                        on: on.to_string(),
                        until,
                        kind,
                    }
                }
                Some(status) if status.is_final() || why != Woken::Evicted => {
                    Reply::Now(self.record_answer(on))
                }
                // A poll cut short to make room: come back for the rest.
                Some(_) => Reply::Now(self.poll_answer(on)),
            },
        };
        // Parked requests are counted when answered; a cancel that waited for its
        // process group is a Poll wait too, so it counts under "/job".
        if let Reply::Now(response) = &reply {
            let route = match kind {
                WaitKind::Submit => "/run",
                _ => "/job",
            };
            self.metrics.request(route, response.status);
        }
        reply
    }

    fn tick(&mut self, now: Instant, _open_connections: usize) -> bool {
        // The loop turns at least once a second: held requests expire on time.
        self.jobs.expire(clock::now_unix());
        // Held requests whose client went away: their report came or never will.
        if !self.held.is_empty() {
            self.held
                .retain(|_, held| now < held.since + DURABLE_LIMIT + DURABLE_LIMIT);
        }
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

/// A fresh job id.
pub(super) fn new_id() -> Result<String, ApiError> {
    jobs::new_id().map_err(no_randomness)
}

fn no_randomness(e: getrandom::Error) -> ApiError {
    ApiError::Internal(format!("no randomness for a job id: {e}"))
}

/// The first rule for `caller` that fits `request`; rules whose `callers` leave it out
/// are skipped as if absent.
pub(super) fn plan<'c>(
    cfg: &'c Config,
    req: &Request,
    request: &Invocation<'_>,
    caller: &Caller,
) -> Result<Option<Plan<'c>>, ApiError> {
    policy::plan_for(&cfg.rules, request, Some(caller))
        .map_err(|err| bad(req, format!("command cannot be split into words: {err}")))
}

/// The command of a body, as the policy reads it and as the record and the log show it.
pub(super) fn invocation<'b>(
    req: &Request,
    body: &'b Submit,
) -> Result<(Invocation<'b>, String), ApiError> {
    match (&body.command, &body.argv) {
        (Some(command), None) => {
            check_text("command", command, MAX_COMMAND).map_err(|e| bad_err(req, e))?;
            Ok((Invocation::Command(command), command.clone()))
        }
        (None, Some(argv)) => {
            if argv.is_empty() || argv.len() > MAX_WORDS {
                return Err(bad(req, format!("argv must hold 1 to {MAX_WORDS} strings")));
            }
            for word in argv {
                check_text("argv", word, MAX_WORD).map_err(|e| bad_err(req, e))?;
            }
            Ok((Invocation::Argv(argv), quote_words(argv)))
        }
        _ => Err(bad(
            req,
            "send exactly one of \"command\" (a string) or \"argv\" (a list)".into(),
        )),
    }
}

pub(super) fn bad(req: &Request, why: String) -> ApiError {
    bad_err(req, ApiError::BadRequest(why))
}

/// Logs a refused request shape once, where it is refused.
pub(super) fn bad_err(req: &Request, err: ApiError) -> ApiError {
    if let ApiError::BadRequest(why) = &err {
        audit::bad_request(&req.peer.to_string(), why);
    }
    err
}

pub(super) fn check_text(field: &str, text: &str, max: usize) -> Result<(), ApiError> {
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
pub(super) fn wait_duration(
    wait: Option<f64>,
    default_s: u64,
    max_s: u64,
) -> Result<Duration, ApiError> {
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
