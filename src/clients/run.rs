//! `sudo-agent run`: submit a command to the agent, wait for it, print its output as it
//! was, and exit with its exit code (replaces the shell script that polled). The same
//! flow carries `run --request` (held until a human approves), `approve` and `deny`.
//!
//! Exit codes, chosen as `timeout(1)` and `env(1)` use them, and never overlapping:
//! the remote exit code (1–123 as the command gave it, 128+N when it died of signal N),
//! 124 it timed out on the agent, `--wait` ran out first or its approval expired, 125
//! the agent refused it (wrong code, locked out, busy, bad request, denied by a human)
//! or it could not start, 126 no rule allows it, 127 the agent could not be reached. A
//! command that itself exits 124–127 is reported as such; `--json` tells the cases
//! apart.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use super::endpoint::Endpoint;
use super::http_client::{Answer, Call, Client, ClientError, Held, Refusal, Submission};
use super::shown::argv_text;
use super::sip::{self, Message};
use crate::jobs::{JobRecord, Status};
use crate::sys::EchoOff;
use crate::text::printable;

pub const EXIT_TIMED_OUT: i32 = 124;
pub const EXIT_REFUSED: i32 = 125;
pub const EXIT_NOT_ALLOWED: i32 = 126;
pub const EXIT_UNREACHABLE: i32 = 127;
/// Longest single long-poll; shorter than any proxy or NAT idle timeout.
const POLL_S: u64 = 30;

/// Where the code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// `--pin P`.
    Given(String),
    /// `--pin-stdin`: the first line of stdin.
    Stdin,
    /// Neither: prompt without echo when stdin is a terminal, else send no code.
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Words after `--`. One word holding whitespace is sent as a command line for the
    /// agent to split (`run -- 'systemctl restart nginx'`); otherwise argv, unsplit.
    Words(Vec<String>),
    /// `--message 'Agent: CODE COMMAND'` (the SIP flow).
    Message(String),
    /// `approve APPROVAL`: the code comes from `pin`.
    Approve(String),
    /// `deny APPROVAL`.
    Deny(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFormat {
    /// Output as it was, stdout to stdout and stderr to stderr.
    Text,
    /// One reply of at most `sip::MAX_REPLY` bytes on stdout.
    Sip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    pub endpoint: Endpoint,
    pub pin: Pin,
    /// `--request`: hold it for a human to approve instead of sending a code.
    pub hold: bool,
    /// `--reason`, shown to whoever approves.
    pub reason: Option<String>,
    /// Seconds to wait for the job in all; `None` waits until it ends.
    pub wait_s: Option<u64>,
    pub json: bool,
    pub detach: bool,
    pub reply: ReplyFormat,
    pub what: What,
}

/// The exit code for a job record (see the module comment).
pub fn exit_code(job: &JobRecord) -> i32 {
    match job.status {
        Status::Succeeded => 0,
        Status::TimedOut
        | Status::Queued
        | Status::Running
        | Status::AwaitingApproval
        | Status::Expired => EXIT_TIMED_OUT,
        Status::Denied => EXIT_REFUSED,
        Status::Failed | Status::Cancelled | Status::Interrupted => {
            match (job.exit_code, job.signal) {
                (Some(code @ 1..=255), _) => code,
                (_, Some(signal @ 1..=127)) => 128 + signal,
                // Could not start, or ended with no status to report.
                _ => EXIT_REFUSED,
            }
        }
    }
}

/// The exit code for a refusal: 126 for "no rule allows it", 125 for everything else.
pub fn refusal_exit(refusal: &Refusal) -> i32 {
    if refusal.status == 403 && refusal.error == "not_allowed" {
        EXIT_NOT_ALLOWED
    } else {
        EXIT_REFUSED
    }
}

/// Carries out `run`; returns the exit code.
pub fn main(args: RunArgs) -> i32 {
    let out = Output {
        json: args.json,
        reply: args.reply,
    };
    let client = match args.endpoint.client() {
        Ok(client) => client,
        Err(err) => return out.unreachable(&err),
    };
    let call = match what_to_send(&args, &client) {
        Ok(call) => call,
        Err(why) => return out.local_failure(&why),
    };
    let deadline = args.wait_s.map(|s| Instant::now() + Duration::from_secs(s));
    let first_wait = if args.detach { 0 } else { wait_for(deadline) };
    let answer = match client.post(&call, first_wait) {
        Ok(answer) => answer,
        Err(err) => return out.unreachable(&err),
    };
    let id = match answer {
        Answer::Job(job) if matches!(call, Call::Deny { .. }) => return out.denied(&job),
        // `--detach` gives the id even for a job that ended before the answer left.
        Answer::Job(job) if job.status.is_final() && !args.detach => return out.finished(&job),
        Answer::Refused(refusal) => return out.refused(&refusal),
        Answer::Held(held) => {
            out.held(&held, &call);
            if args.detach && !out.json && out.reply == ReplyFormat::Text {
                println!("{}", held.id); // As `--detach` prints any job's id.
            }
            if args.detach || out.reply == ReplyFormat::Sip {
                return 0; // The reply says what to send; a SIP exchange cannot wait.
            }
            held.id
        }
        Answer::Job(job) => job.id,
        Answer::Pending { id } => id,
    };
    if args.detach {
        return out.detached(&id, &client);
    }
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return out.still_running(&id, &client);
        }
        let asked = Instant::now();
        match client.job(&id, wait_for(deadline)) {
            Ok(Answer::Job(job)) if job.status.is_final() => return out.finished(&job),
            Ok(Answer::Job(_) | Answer::Pending { .. } | Answer::Held(_)) => {
                // An agent with a tiny wait_max_s answers at once: do not spin on it.
                if asked.elapsed() < Duration::from_millis(500) {
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            Ok(Answer::Refused(refusal)) => {
                return out.local_failure(&format!(
                    "job {id} was accepted but polling it failed: {} (the agent may have restarted)",
                    refusal.message
                ));
            }
            Err(err) => return out.unreachable(&err),
        }
    }
}

/// Seconds for the next long-poll: until the deadline, at most `POLL_S`.
fn wait_for(deadline: Option<Instant>) -> u64 {
    deadline.map_or(POLL_S, |d| {
        d.saturating_duration_since(Instant::now())
            .as_secs()
            .min(POLL_S)
    })
}

/// The request to send, from the arguments (and stdin or a prompt).
fn what_to_send(args: &RunArgs, client: &Client) -> Result<Call, String> {
    let pin = |shown: &str| match &args.pin {
        Pin::Given(pin) => Ok(Some(pin.clone())),
        Pin::Stdin => read_line_from_stdin(),
        Pin::Auto if io::stdin().is_terminal() => prompt_for_code(shown),
        Pin::Auto => Ok(None),
    };
    Ok(match &args.what {
        What::Message(text) => match sip::parse_message(text).map_err(|e| e.to_string())? {
            Message::Run {
                pin: Some(pin),
                command,
            } => Call::Run {
                pin: Some(pin),
                what: Submission::Command(command),
            },
            Message::Run { pin: None, command } => Call::Request {
                what: Submission::Command(command),
                reason: None,
            },
            Message::Approve { pin, approval } => Call::Approve { approval, pin },
            Message::Deny { approval } => Call::Deny { approval },
        },
        What::Words(words) => {
            let what = match words.as_slice() {
                [line] if line.contains(char::is_whitespace) => Submission::Command(line.clone()),
                _ => Submission::Argv(words.clone()),
            };
            match args.hold {
                true => Call::Request {
                    what,
                    reason: args.reason.clone(),
                },
                false => Call::Run {
                    pin: pin(&format!("`{}`", words.join(" ")))?,
                    what,
                },
            }
        }
        What::Approve(approval) => {
            let shown = held_command(client, approval)
                .map_or_else(|| format!("request {approval}"), |c| format!("`{c}`"));
            match pin(&shown)? {
                Some(pin) => Call::Approve {
                    approval: approval.clone(),
                    pin,
                },
                None => return Err("approving needs the code from your authenticator app: run it on a terminal or pass --pin-stdin".into()),
            }
        }
        What::Deny(approval) => Call::Deny {
            approval: approval.clone(),
        },
    })
}

/// The argv a held request would run, from `GET /pending`, so the human reads it
/// before typing a code; `None` when the agent does not say.
fn held_command(client: &Client, approval: &str) -> Option<String> {
    let pending = client.get_json("/pending").ok()?.ok()?;
    pending["pending"]
        .as_array()?
        .iter()
        .find(|p| {
            p["approval"]
                .as_str()
                .is_some_and(|a| a.eq_ignore_ascii_case(approval))
        })
        .map(|p| argv_text(&p["argv"]))
}

fn read_line_from_stdin() -> Result<Option<String>, String> {
    let mut line = String::new();
    // `take` bounds what a stray pipe can make us buffer; codes are 6–8 digits.
    io::stdin()
        .lock()
        .take(256)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the code from stdin: {e}"))?;
    let code = line.trim();
    Ok((!code.is_empty()).then(|| code.to_string()))
}

/// Asks on the terminal with echo off; an empty answer sends no code (`no_pin` rules).
/// Echo goes off before the prompt shows: turning it off flushes pending input
/// (`TCSAFLUSH`), which would drop a code typed or pasted right after the prompt.
fn prompt_for_code(shown: &str) -> Result<Option<String>, String> {
    let echo = EchoOff::stdin().map_err(|e| {
        format!("cannot turn off terminal echo to read the code: {e}; use --pin-stdin")
    })?;
    eprint!("code for {shown} (Enter for none): ");
    let _ = io::stderr().flush();
    let line = read_line_from_stdin();
    drop(echo);
    line
}

/// How results are shown: text (or JSON) on stdout/stderr, or one SIP reply.
struct Output {
    json: bool,
    reply: ReplyFormat,
}

impl Output {
    fn finished(&self, job: &JobRecord) -> i32 {
        let code = exit_code(job);
        if self.json {
            print_json(job);
        } else if self.reply == ReplyFormat::Sip {
            let rc = match (job.exit_code, job.signal) {
                (Some(rc), _) => format!("rc={rc}"),
                (None, Some(signal)) => format!("signal {signal}"),
                (None, None) => "no exit code".into(),
            };
            let head = format!("{} ({rc}): {}", job.status.as_str(), job.command);
            let mut body = job.stdout.clone();
            if !job.stderr.trim().is_empty() {
                body.push_str(&format!("\nstderr:\n{}", job.stderr));
            }
            println!("{}", sip::reply(&head, &body, job.result_file.as_deref()));
        } else {
            let _ = io::stdout().write_all(job.stdout.as_bytes());
            let _ = io::stdout().flush();
            let mut err = io::stderr();
            let _ = err.write_all(job.stderr.as_bytes());
            if job.truncated {
                let _ = writeln!(
                    err,
                    "sudo-agent: output over the rule's max_output_bytes was dropped; result in {}",
                    job.result_file.as_deref().unwrap_or("(no file)")
                );
            }
            if job.status != Status::Succeeded && job.status != Status::Failed {
                let _ = writeln!(err, "sudo-agent: job {} {}", job.id, job.status.as_str());
            }
        }
        code
    }

    /// A held request: what it is and how to answer it (on stderr, or as the SIP reply).
    fn held(&self, held: &Held, call: &Call) {
        if self.json {
            print_json(held);
            return;
        }
        let what = match call {
            Call::Request {
                what: Submission::Command(line),
                ..
            } => line.clone(),
            Call::Request {
                what: Submission::Argv(argv),
                ..
            } => argv.join(" "),
            _ => String::new(),
        };
        let what = printable(&what);
        let a = &held.approval;
        let expires = held
            .expires_at
            .saturating_sub(crate::sys::clock::now_unix());
        match self.reply {
            ReplyFormat::Sip => println!(
                "{}",
                sip::reply(
                    &format!("held as {a}: {what}"),
                    &format!(
                        "to run it send: Agent: CODE approve {a}\nto refuse: Agent: deny {a}\nexpires in {expires} s"
                    ),
                    None
                )
            ),
            ReplyFormat::Text => eprintln!(
                "sudo-agent: held for approval as {a} (expires in {expires} s): {what}\n  \
                 approve: sudo-agent approve {a}   (asks for the code)\n  \
                 deny:    sudo-agent deny {a}\nwaiting for a decision..."
            ),
        }
    }

    /// `deny` done: the record says `denied`; anything else is what the agent said.
    fn denied(&self, job: &JobRecord) -> i32 {
        if job.status != Status::Denied {
            return self.finished(job);
        }
        if self.json {
            print_json(job);
        } else {
            let text = format!("denied: {}", printable(&job.command));
            match self.reply {
                ReplyFormat::Sip => println!("{}", sip::reply(&text, "", None)),
                ReplyFormat::Text => println!("{text}"),
            }
        }
        0
    }

    fn refused(&self, refusal: &Refusal) -> i32 {
        if self.json {
            print_json(refusal);
        } else {
            self.say(&format!("refused ({}): {}", refusal.error, refusal.message));
        }
        refusal_exit(refusal)
    }

    fn unreachable(&self, err: &ClientError) -> i32 {
        if self.reply == ReplyFormat::Sip {
            println!("agent unreachable");
        }
        eprintln!("sudo-agent: {err}");
        EXIT_UNREACHABLE
    }

    fn local_failure(&self, why: &str) -> i32 {
        self.say(why);
        EXIT_REFUSED
    }

    fn detached(&self, id: &str, client: &Client) -> i32 {
        if self.json {
            print_json(&pending(id, client));
        } else {
            println!("{id}");
        }
        0
    }

    fn still_running(&self, id: &str, client: &Client) -> i32 {
        if self.json {
            print_json(&pending(id, client));
        } else {
            self.say(&format!(
                "still running after --wait: job {id}; poll {}/job/{id}?wait=60",
                client.url()
            ));
        }
        EXIT_TIMED_OUT
    }

    /// A one-line outcome: the SIP reply on stdout, else a diagnostic on stderr.
    fn say(&self, text: &str) {
        match self.reply {
            ReplyFormat::Sip => println!("{}", sip::reply(text, "", None)),
            ReplyFormat::Text => eprintln!("sudo-agent: {text}"),
        }
    }
}

/// What `--json` prints for a job still running: the shape of the agent's 202.
#[derive(serde::Serialize)]
struct Pending<'a> {
    id: &'a str,
    status: &'static str,
    poll: String,
}

fn pending<'a>(id: &'a str, client: &Client) -> Pending<'a> {
    Pending {
        id,
        status: "running",
        poll: format!("{}/job/{id}", client.url()),
    }
}

pub(super) fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => println!("{text}"),
        Err(err) => eprintln!("sudo-agent: cannot encode the answer as JSON: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: Status, exit_code: Option<i32>, signal: Option<i32>) -> JobRecord {
        JobRecord {
            status,
            exit_code,
            signal,
            ..JobRecord::queued(
                "0".repeat(32),
                "x".into(),
                vec!["/bin/x".into()],
                "x".into(),
                String::new(),
            )
        }
    }

    #[test]
    fn exit_codes_do_not_overlap() {
        assert_eq!(exit_code(&record(Status::Succeeded, Some(0), None)), 0);
        assert_eq!(exit_code(&record(Status::Failed, Some(3), None)), 3);
        assert_eq!(exit_code(&record(Status::Failed, None, Some(9))), 137);
        assert_eq!(exit_code(&record(Status::TimedOut, None, Some(15))), 124);
        assert_eq!(exit_code(&record(Status::Running, None, None)), 124);
        assert_eq!(exit_code(&record(Status::Cancelled, None, Some(15))), 143);
        // Cancelled must never look like success, even if the process exited 0 on TERM.
        assert_eq!(exit_code(&record(Status::Cancelled, Some(0), None)), 125);
        // Spawn failures carry exit code -1 or none.
        assert_eq!(exit_code(&record(Status::Failed, Some(-1), None)), 125);
        let refusal = |status, error: &str| Refusal {
            status,
            error: error.into(),
            message: String::new(),
        };
        assert_eq!(refusal_exit(&refusal(403, "not_allowed")), 126);
        for (status, error) in [
            (400, "bad_request"),
            (401, "invalid_code"),
            (403, "forbidden"),
            (429, "locked_out"),
            (503, "busy"),
            (500, "http_error"),
        ] {
            assert_eq!(
                refusal_exit(&refusal(status, error)),
                125,
                "{status} {error}"
            );
        }
    }
}
