//! Requests held for a human: `POST /request` holds one (no code), `POST /approve` runs
//! exactly that one with a fresh code, `POST /deny` ends it, `GET /pending` lists them.
//! The approval code names a request and nothing more: approving takes a TOTP code
//! through the same throttle, replay and lockout as `/run`, and who may approve or deny
//! is decided by the kernel's word on the caller (`approvals.approvers`), never by
//! anything in the request.

use std::time::Instant;

use serde::Serialize;

use super::body::{self, BadBody};
use super::message::{ApiError, Request, Response};
use super::routes::{
    DURABLE_LIMIT, Routes, bad_err, check_text, invocation, new_id, plan, wait_duration,
};
use super::server::{Reply, WaitKind};
use crate::audit;
use crate::jobs::{self, ExecSpec, HeldBy, JobRecord};
use crate::policy::{self, Action, Caller};
use crate::sys::clock;

/// Longest `reason` accepted, in bytes of UTF-8.
pub const MAX_REASON: usize = 256;

#[derive(Serialize)]
struct Pending<'a> {
    pending: Vec<PendingEntry<'a>>,
}

#[derive(Serialize)]
struct PendingEntry<'a> {
    id: &'a str,
    approval: Option<&'a str>,
    command: &'a str,
    argv: &'a [String],
    rule: &'a str,
    caller: &'a Caller,
    reason: Option<&'a str>,
    submitted_at: Option<u64>,
    expires_at: Option<u64>,
}

impl Routes {
    /// `/request`, `/approve`, `/deny` (all POST).
    pub(super) fn held_route(&mut self, req: &Request, now: Instant) -> Result<Reply, ApiError> {
        match req.path.as_str() {
            "/request" => self.request(req, now),
            "/approve" => self.approve(req, now),
            _ => self.deny(req, now),
        }
    }

    /// Matches the policy, then holds the job (a `no_pin` rule runs at once).
    fn request(&mut self, req: &Request, now: Instant) -> Result<Reply, ApiError> {
        let body =
            body::submit(&req.body, body::REQUEST).map_err(|bad| self.refuse_body(req, bad))?;
        let (request, command) = invocation(req, &body)?;
        if let Some(pin) = body.pin.clone().filter(|p| !p.is_empty()) {
            // A code has no place here: it travelled where it should not, so it is spent.
            let bad = BadBody {
                message: "a held request takes no code; send it to /approve once the request \
                          is held"
                    .into(),
                stray_pin: vec![pin],
                command: Some(command),
            };
            return Err(self.refuse_body(req, bad));
        }
        if let Some(reason) = &body.reason {
            check_text("reason", reason, MAX_REASON).map_err(|e| bad_err(req, e))?;
        }
        let wait = wait_duration(body.wait, self.cfg.jobs.wait_s, self.cfg.jobs.wait_max_s)
            .map_err(|e| bad_err(req, e))?;
        let caller = self.caller(req.caller.clone());
        let cfg = &self.cfg;
        let Some(plan) = plan(cfg, req, &request, &caller)? else {
            audit::denied_by_policy(&req.peer.to_string(), &command);
            return Err(ApiError::NotAllowed);
        };
        if plan.rule.no_pin {
            self.room(&command)?;
            let job = self.new_job(&plan, command, caller);
            return self.start(job, None, wait, now);
        }
        let max = self.cfg.approvals.max_pending;
        if self.jobs.held_count() >= max {
            log::warn!(
                "BUSY {max} requests await approval, refused: {}",
                audit::one_line(&command, 500)
            );
            return Err(ApiError::TooManyHeld(max));
        }
        let job = self.new_job(&plan, command, caller);
        let jobs = &self.jobs;
        let approval = jobs::new_code(|code| jobs.approval(code).is_some())
            .map_err(|e| ApiError::Internal(format!("no randomness for a code: {e}")))?;
        let id = new_id()?;
        let expires_at = clock::now_unix() + self.cfg.approvals.ttl_s;
        audit::requested(&id, &approval, &job.rule, &job.caller.audit(), &job.command);
        let held = HeldBy {
            approval,
            reason: body.reason,
            expires_at,
        };
        self.jobs.hold(id.clone(), job, held);
        if let (Some(notify), Some(record)) = (&self.approval_notify, self.jobs.get(&id)) {
            notify.held(record);
        }
        // Answered once journaled (a restart keeps it), with its code.
        Ok(Reply::Wait {
            on: id,
            until: now + DURABLE_LIMIT,
            kind: WaitKind::Submit,
        })
    }

    /// Runs the held job an approval code names, once a fresh code is accepted;
    /// answered as `/run` is.
    fn approve(&mut self, req: &Request, now: Instant) -> Result<Reply, ApiError> {
        let caller = self.approver(req)?;
        let body =
            body::submit(&req.body, body::APPROVE).map_err(|bad| self.refuse_body(req, bad))?;
        let wait = wait_duration(body.wait, self.cfg.jobs.wait_s, self.cfg.jobs.wait_max_s)
            .map_err(|e| bad_err(req, e))?;
        let typed = body.approval.unwrap_or_default();
        let label = format!("approve {}", audit::one_line(&typed, 8));
        self.room(&label)?;
        let Some(pin) = body.pin.filter(|p| !p.is_empty()) else {
            audit::invalid_code(&label);
            return Err(ApiError::InvalidCode);
        };
        // The code first: a caller without one learns nothing of what is held, and
        // each guess at an approval code costs a code or counts toward the lockout.
        let step = self.authenticate(&pin, &label)?;
        let code = jobs::normalize_code(&typed).ok_or(ApiError::NotFound)?;
        let record = self.jobs.approval(&code).ok_or(ApiError::NotFound)?;
        let (id, command) = (record.id.clone(), record.command.clone());
        let spec = if self.jobs.needs_spec(&id) {
            let record = record.clone();
            match self.respec(&record) {
                Some(spec) => Some(spec),
                None => {
                    audit::denied(&id, &code, "policy changed since it was held", &command);
                    self.jobs.deny(&id);
                    return Err(ApiError::NotAllowed);
                }
            }
        } else {
            None
        };
        audit::approved(&id, &code, &caller.audit(), &command);
        if self.jobs.approve(&id, step, wait, spec) {
            self.code_journaled();
        }
        Ok(Reply::Wait {
            on: id,
            until: now + wait,
            kind: WaitKind::Submit,
        })
    }

    /// Ends the held job an approval code names, `denied`.
    fn deny(&mut self, req: &Request, now: Instant) -> Result<Reply, ApiError> {
        let caller = self.approver(req)?;
        let body = body::submit(&req.body, body::DENY)
            .map_err(|bad| bad_err(req, ApiError::BadRequest(bad.message)))?;
        let code = (body.approval.as_deref())
            .and_then(jobs::normalize_code)
            .ok_or(ApiError::NotFound)?;
        let record = self.jobs.approval(&code).ok_or(ApiError::NotFound)?;
        let id = record.id.clone();
        audit::denied(&id, &code, &caller.audit(), &record.command);
        self.jobs.deny(&id);
        // Answered with its record once its end is written.
        Ok(Reply::Wait {
            on: id,
            until: now + DURABLE_LIMIT,
            kind: WaitKind::Poll,
        })
    }

    /// The held requests, oldest first; for approvers only, when they are named.
    pub(super) fn pending(&mut self, req: &Request) -> Result<Reply, ApiError> {
        self.approver(req)?;
        let pending = self
            .jobs
            .pending()
            .into_iter()
            .map(|r| PendingEntry {
                id: &r.id,
                approval: r.approval.as_deref(),
                command: &r.command,
                argv: &r.argv,
                rule: &r.rule,
                caller: &r.caller,
                reason: r.reason.as_deref(),
                submitted_at: clock::parse_rfc3339(&r.submitted_at),
                expires_at: r.expires_at,
            })
            .collect();
        Ok(Reply::Now(Response::json(200, &Pending { pending })))
    }

    /// The caller, if `approvals.approvers` admits it (or names nobody); else 403.
    fn approver(&mut self, req: &Request) -> Result<Caller, ApiError> {
        let caller = self.caller(req.caller.clone());
        match &self.cfg.approvals.approvers {
            Some(who) if !who.allows(&caller) => {
                log::warn!(
                    "FORBIDDEN {} {} (not an approver): {}",
                    req.path,
                    caller.audit(),
                    req.peer
                );
                Err(ApiError::NotApprover)
            }
            _ => Ok(caller),
        }
    }

    /// The spec of a request held before a restart, if its rule still takes it exactly
    /// as it was planned, for the caller who asked.
    fn respec(&mut self, record: &JobRecord) -> Option<ExecSpec> {
        let caller = self.caller(record.caller.clone());
        let rule = self.cfg.rules.iter().find(|r| r.name == record.rule)?;
        let fits = match &rule.action {
            Action::Shell => record.argv.first().is_some_and(|p| p == policy::SHELL),
            Action::Argv { .. } => policy::matches(rule, &record.argv),
        };
        let admitted = rule.callers.as_ref().is_none_or(|who| who.allows(&caller));
        (fits && admitted)
            .then(|| ExecSpec::for_rule(rule, record.argv.clone(), &self.cfg.jobs, &self.own_home))
    }
}
