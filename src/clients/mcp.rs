//! `sudo-agent mcp`: a Model Context Protocol server on stdio (JSON-RPC 2.0, one JSON
//! message per line) that lets an AI assistant ask the agent to run commands. It holds
//! no secret and talks to the agent over HTTP like any client, so every privileged
//! command still needs a code that only the human's phone can produce.
//!
//! `run_command` without a code holds the request (`POST /request`). When the client
//! declared form elicitation, the server asks the human through `elicitation/create`
//! (the exact command, rule, reason and approval code; one field for the code) and
//! approves with the answer, so the code goes from the human to the agent and never
//! into the model's context. Otherwise the tool answers with the approval code and the
//! assistant waits with `job_status` while the human approves on another channel.
//!
//! Stdin is read on its own thread into a small bounded queue, so the server can take
//! the client's answer to `elicitation/create` (and pings, and other requests) while a
//! tool call is still outstanding.

use std::io::{self, BufRead, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::endpoint::{Endpoint, has_approvers, peek_config};
use super::http_client::{Answer, Call, Client, ClientError, Held, Refusal, Submission};
use super::shown::{argv_text, caller_name};
use crate::jobs::Status;
use crate::sys::clock;
use crate::text::printable;

/// Versions whose tool subset this server implements, newest first. 2025-11-25 only
/// adds to what this server uses (form elicitation is still the default mode).
const SUPPORTED_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The first version with elicitation.
const ELICITATION_SINCE: &str = "2025-06-18";
/// Longest line read; a longer one is skipped and answered with a parse error.
pub const MAX_LINE: usize = 1 << 20;
/// Lines read ahead of the server; with `MAX_LINE`, what stdin may hold in memory.
const QUEUE: usize = 4;
/// Most messages in one batch.
const MAX_BATCH: usize = 64;
/// Default and largest wait for a tool call, in seconds. Clients time tool calls out
/// after about a minute; a longer job is followed with `job_status`.
const DEFAULT_WAIT_S: u64 = 30;
const MAX_WAIT_S: u64 = 120;
/// The longest a request is held (`approvals.ttl_s` at most).
const MAX_TTL_S: u64 = 86_400;
/// Codes the human may type into one elicitation before the request is left held.
const TRIES: usize = 3;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

const INSTRUCTIONS: &str = "Runs allowlisted commands as root on this machine through \
sudo-agent. Call run_command without a code: the agent holds the request and the human \
approves it themselves (a prompt from this client, or their phone), so never ask the \
human to tell you a code. If the answer is awaiting_approval, tell the human the approval \
code and call job_status with the id to wait. Call list_allowed_commands to see what may \
be asked for.";

/// One line from stdin.
enum Line {
    Eof,
    Complete(Vec<u8>),
    TooLong,
}

/// Serves MCP on stdin/stdout until stdin ends.
pub fn serve(endpoint: &Endpoint) -> Result<(), String> {
    let client = endpoint.client().map_err(|e| e.to_string())?;
    // The MCP server runs as the assistant's user: where `approvers` is set, the agent
    // refuses its approvals anyway, so it does not ask the human for a useless code.
    let approvers = peek_config(&endpoint.config).is_some_and(|cfg| has_approvers(&cfg));
    let (tx, inbox) = sync_channel(QUEUE);
    let reader = std::thread::Builder::new().name("mcp-stdin".into());
    let spawned = reader.spawn(move || {
        let mut input = io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            let line = match read_line(&mut input, &mut buf, MAX_LINE) {
                Ok(Scan::Complete) => Line::Complete(std::mem::take(&mut buf)),
                Ok(Scan::TooLong) => Line::TooLong,
                Ok(Scan::Eof) | Err(_) => Line::Eof,
            };
            let eof = matches!(line, Line::Eof);
            if tx.send(line).is_err() || eof {
                return;
            }
        }
    });
    spawned.map_err(|e| format!("mcp: cannot start the stdin reader thread: {e}"))?;
    let mut session = Session::new(client, io::stdout().lock(), inbox, approvers);
    session.run().map_err(|e| format!("mcp: stdio failed: {e}"))
}

/// One MCP connection: the agent, the client's stdio, and what was negotiated.
struct Session<W: Write> {
    client: Client,
    out: W,
    inbox: Receiver<Line>,
    approvers: bool,
    /// Negotiated in `initialize`: the client takes `elicitation/create` forms.
    can_elicit: bool,
    /// An elicitation awaits its answer: a tool call arriving meanwhile does not ask.
    asking: bool,
    /// The id of the tool call being served, to notice it cancelled.
    serving: Option<Value>,
    /// Stdin ended while a tool call was outstanding.
    ended: bool,
    sent: u64,
}

/// How the human answered an elicitation.
enum Elicited {
    Code(String),
    Declined,
    /// Dismissed, cancelled by the client, unanswered in time, or stdin ended.
    NoAnswer(&'static str),
}

impl<W: Write> Session<W> {
    fn new(client: Client, out: W, inbox: Receiver<Line>, approvers: bool) -> Self {
        Session {
            client,
            out,
            inbox,
            approvers,
            can_elicit: false,
            asking: false,
            serving: None,
            ended: false,
            sent: 0,
        }
    }

    fn run(&mut self) -> io::Result<()> {
        while !self.ended {
            let line = self.inbox.recv().unwrap_or(Line::Eof);
            self.take(line)?;
        }
        Ok(())
    }

    /// One line: answered, unless it is a notification or a response.
    fn take(&mut self, line: Line) -> io::Result<()> {
        let answer = match line {
            Line::Eof => {
                self.ended = true;
                None
            }
            Line::TooLong => Some(error(
                Value::Null,
                PARSE_ERROR,
                &format!("message longer than {MAX_LINE} bytes"),
            )),
            Line::Complete(text) if text.iter().all(u8::is_ascii_whitespace) => None,
            Line::Complete(text) => self.handle_text(&text),
        };
        match answer {
            Some(answer) => self.send(&answer),
            None => Ok(()),
        }
    }

    fn send(&mut self, message: &Value) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.out.write_all(&bytes)?;
        self.out.flush()
    }

    /// One line: a message or a batch. `None` when nothing is to be sent back.
    fn handle_text(&mut self, text: &[u8]) -> Option<Value> {
        let message: Value = match serde_json::from_slice(text) {
            Ok(message) => message,
            Err(e) => return Some(error(Value::Null, PARSE_ERROR, &format!("not JSON: {e}"))),
        };
        match message {
            Value::Array(batch) if batch.is_empty() || batch.len() > MAX_BATCH => Some(error(
                Value::Null,
                INVALID_REQUEST,
                &format!("a batch holds 1 to {MAX_BATCH} messages"),
            )),
            Value::Array(batch) => {
                let answers: Vec<Value> = batch.iter().filter_map(|m| self.handle(m)).collect();
                (!answers.is_empty()).then_some(Value::Array(answers))
            }
            message => self.handle(&message),
        }
    }

    /// One JSON-RPC message. Notifications (no `id`) and responses get no answer.
    fn handle(&mut self, message: &Value) -> Option<Value> {
        let Some(object) = message.as_object() else {
            return Some(error(
                Value::Null,
                INVALID_REQUEST,
                "a message is a JSON object",
            ));
        };
        let id = object.get("id").cloned();
        let method = object.get("method");
        if method.is_none() && (object.contains_key("result") || object.contains_key("error")) {
            return None; // A response to nothing awaited (a late answer to an elicitation).
        }
        let valid_id = matches!(&id, None | Some(Value::String(_) | Value::Number(_)));
        let (Some(Value::String(method)), true, Some("2.0")) = (
            method,
            valid_id,
            object.get("jsonrpc").and_then(Value::as_str),
        ) else {
            return Some(error(
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                "expected {\"jsonrpc\": \"2.0\", \"id\": number|string, \"method\": string}",
            ));
        };
        let id = id?; // A notification: `notifications/initialized` and the like.
        let params = object.get("params").cloned().unwrap_or(json!({}));
        Some(match self.call(method, &params, &id) {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err((code, message)) => error(id, code, &message),
        })
    }

    fn call(&mut self, method: &str, params: &Value, id: &Value) -> Result<Value, (i64, String)> {
        match method {
            "initialize" => {
                let asked = params.get("protocolVersion").and_then(Value::as_str);
                // A version we do not know is likely newer: offer our newest.
                let version = asked
                    .filter(|v| SUPPORTED_VERSIONS.contains(v))
                    .unwrap_or(SUPPORTED_VERSIONS[0]);
                // `{}` means form mode (2025-06-18); later clients may name `form` and `url`.
                let elicitation = &params["capabilities"]["elicitation"];
                self.can_elicit = version >= ELICITATION_SINCE
                    && elicitation.as_object().is_some_and(|modes| {
                        modes.is_empty() || modes.get("form").is_some_and(|f| !f.is_null())
                    });
                Ok(json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "sudo-agent", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": INSTRUCTIONS,
                }))
            }
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({"tools": tools()})),
            "tools/call" => {
                let name = params.get("name").and_then(Value::as_str).unwrap_or("");
                let empty = json!({});
                let args = params.get("arguments").unwrap_or(&empty);
                let text = |key: &str| args.get(key).and_then(Value::as_str);
                let wait = |default: u64| match args.get("wait_s") {
                    None => Ok(default),
                    Some(v) => v
                        .as_u64()
                        .map(|s| s.min(MAX_WAIT_S))
                        .ok_or_else(|| invalid("wait_s must be a whole number of seconds")),
                };
                match name {
                    "run_command" => {
                        let command = text("command")
                            .filter(|c| !c.trim().is_empty())
                            .ok_or_else(|| invalid("run_command needs \"command\" (a string)"))?;
                        let optional = |key: &str| match args.get(key) {
                            None | Some(Value::Null) => Ok(None),
                            Some(Value::String(v)) => Ok(Some(v.trim()).filter(|v| !v.is_empty())),
                            Some(_) => Err(invalid(&format!("\"{key}\" must be a string"))),
                        };
                        let code = optional("code")?.map(String::from);
                        let reason = optional("reason")?.map(String::from);
                        let what = Submission::Command(command.to_string());
                        let wait = wait(DEFAULT_WAIT_S)?;
                        if code.is_some() {
                            return Ok(job_result(
                                self.client.post(&Call::Run { pin: code, what }, wait),
                            ));
                        }
                        // A call served while another awaits its form keeps the outer id.
                        let outer = self.serving.replace(id.clone());
                        let result = self.hold(what, reason, wait);
                        self.serving = outer;
                        Ok(result)
                    }
                    "job_status" => {
                        let id = text("id").ok_or_else(|| invalid("job_status needs \"id\""))?;
                        Ok(job_result(self.client.job(id, wait(0)?)))
                    }
                    "list_allowed_commands" => Ok(rules_result(self.client.get_json("/rules"))),
                    other => Err(invalid(&format!("unknown tool {other:?}"))),
                }
            }
            other => Err((METHOD_NOT_FOUND, format!("method {other:?} not found"))),
        }
    }

    /// `run_command` without a code: hold it, then have the human approve it here if
    /// this client can ask them, else hand back the approval code to wait on.
    fn hold(&mut self, what: Submission, reason: Option<String>, wait: u64) -> Value {
        let held = match self.client.post(&Call::Request { what, reason }, wait) {
            Ok(Answer::Held(held)) => held,
            other => return job_result(other), // Ran under a no_pin rule, or refused.
        };
        if !self.can_elicit || self.asking {
            return awaiting(&held, "");
        }
        if self.approvers {
            return awaiting(
                &held,
                "This agent names its approvers, so the human approves outside this chat. ",
            );
        }
        // What the human is asked to approve, from the agent's own record of it.
        let record = match self.client.get_json(&format!("/job/{}?wait=0", held.id)) {
            Ok(Ok(record)) => record,
            _ => return awaiting(&held, ""),
        };
        // Until the request expires; never longer than the longest `approvals.ttl_s`,
        // whatever the server claims.
        let left = held.expires_at.saturating_sub(clock::now_unix());
        let until = Instant::now() + Duration::from_secs(left.min(MAX_TTL_S));
        let mut note = "";
        for _ in 0..TRIES {
            let message = format!(
                "{note}Run as root on this machine?\n\n{}\n\nrule: {}\nasked by: {}\nreason: {}\n\
                 approval code: {}\n\nType the current code from your authenticator app to run \
                 it; decline to refuse it.",
                argv_text(&record["argv"]),
                printable(record["rule"].as_str().unwrap_or("?")),
                caller_name(&record["caller"]),
                printable(record["reason"].as_str().unwrap_or("(none given)")),
                held.approval,
            );
            let pin = match self.elicit(&message, until) {
                Elicited::Code(pin) => pin,
                Elicited::Declined => {
                    let call = Call::Deny {
                        approval: held.approval.clone(),
                    };
                    return match self.client.post(&call, 0) {
                        Ok(Answer::Job(_)) => tool_text(
                            format!(
                                "The human declined: request {} was denied and did not run. Do not \
                                 ask again unless the human wants it.",
                                held.approval
                            ),
                            true,
                        ),
                        other => job_result(other),
                    };
                }
                Elicited::NoAnswer(why) => return awaiting(&held, why),
            };
            let call = Call::Approve {
                approval: held.approval.clone(),
                pin,
            };
            match self.client.post(&call, wait) {
                Ok(Answer::Refused(refusal)) if refusal.error == "invalid_code" => {
                    note = "That code was not accepted; wait for the next one.\n\n";
                }
                Ok(Answer::Refused(refusal)) if refusal.status == 403 => {
                    return awaiting(
                        &held,
                        "This MCP server may not approve (the agent names its approvers). ",
                    );
                }
                other => return job_result(other),
            }
        }
        awaiting(&held, "The codes typed were not accepted. ")
    }

    /// Asks the human through the client; takes other messages meanwhile.
    fn elicit(&mut self, message: &str, until: Instant) -> Elicited {
        self.sent += 1;
        let id = json!(format!("sudo-agent-{}", self.sent));
        let request = json!({
            "jsonrpc": "2.0", "id": id, "method": "elicitation/create",
            "params": {"message": message, "requestedSchema": {
                "type": "object", "required": ["code"],
                "properties": {"code": {
                    "type": "string", "title": "Authenticator code",
                    "description": "the 6-digit code your authenticator app shows now",
                    "minLength": 6, "maxLength": 8,
                }},
            }},
        });
        if self.send(&request).is_err() {
            return Elicited::NoAnswer("The client could not be asked. ");
        }
        self.asking = true;
        let answer = self.await_answer(&id, until);
        self.asking = false;
        let Some(result) = answer else {
            return Elicited::NoAnswer(
                "The human did not answer the prompt (or it was cancelled). ",
            );
        };
        match (
            result["action"].as_str(),
            result["content"]["code"].as_str(),
        ) {
            (Some("accept"), Some(code)) if !code.trim().is_empty() => {
                Elicited::Code(code.trim().to_string())
            }
            (Some("decline"), _) => Elicited::Declined,
            _ => Elicited::NoAnswer("The human dismissed the prompt. "),
        }
    }

    /// Reads messages until the response to `id` (its `result`); serves every other
    /// message as usual. `None`: an error response, a cancelled tool call, stdin ended or
    /// `until` passed.
    fn await_answer(&mut self, id: &Value, until: Instant) -> Option<Value> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = match self.inbox.recv_timeout(left) {
                Ok(Line::Complete(text)) => text,
                Ok(Line::TooLong) => {
                    self.take(Line::TooLong).ok()?;
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Ok(Line::Eof) | Err(RecvTimeoutError::Disconnected) => {
                    self.ended = true;
                    return None;
                }
            };
            let message: Value = serde_json::from_slice(&line).unwrap_or_default();
            if message["id"] == *id && message.get("method").is_none() {
                return message.get("result").cloned();
            }
            if message["method"] == "notifications/cancelled"
                && self
                    .serving
                    .as_ref()
                    .is_some_and(|serving| message["params"]["requestId"] == *serving)
            {
                return None;
            }
            self.take(Line::Complete(line)).ok()?;
        }
    }
}

/// How [`read_line`] ended.
enum Scan {
    Eof,
    Complete,
    TooLong,
}

/// Reads one line into `buf` (without its newline), holding at most `max` bytes; the
/// rest of a longer line is read and dropped.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Scan> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Scan::Eof,
                (true, true) => Scan::TooLong,
                (true, false) => Scan::Complete,
            });
        }
        any = true;
        let (part, used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        if buf.len() + part.len() > max {
            too_long = true;
        } else if !too_long {
            buf.extend_from_slice(part);
        }
        input.consume(used);
        if done {
            return Ok(if too_long {
                Scan::TooLong
            } else {
                Scan::Complete
            });
        }
    }
}

/// A held request the human approves elsewhere: what the assistant needs to wait.
fn awaiting(held: &Held, why: &str) -> Value {
    #[derive(serde::Serialize)]
    struct Awaiting<'a> {
        id: &'a str,
        status: &'static str,
        approval: &'a str,
        expires_at: u64,
        next: String,
    }
    let a = &held.approval;
    let text = json_text(&Awaiting {
        id: &held.id,
        status: "awaiting_approval",
        approval: a,
        expires_at: held.expires_at,
        next: format!(
            "{why}The request is held until the human approves it on their own channel (the \
             phone notification, `sudo-agent approve {a}` on the machine, or SIP `Agent: CODE \
             approve {a}`). Tell the human the approval code {a}; never ask them for their \
             authenticator code here. Call job_status with this id and wait_s to wait for it."
        ),
    });
    tool_text(text, false)
}

fn invalid(why: &str) -> (i64, String) {
    (INVALID_PARAMS, why.to_string())
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn tool_text(text: String, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

/// Compact JSON: models read it as well as indented, and it is smaller on the wire.
fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("(cannot encode: {e})"))
}

/// A submit or poll as a tool result: the record as text; refusals set `isError`.
fn job_result(answer: Result<Answer, ClientError>) -> Value {
    match answer {
        Ok(Answer::Job(job)) if job.status.is_final() => tool_text(json_text(&job), false),
        Ok(Answer::Job(job)) => still_running(&job.id, job.status),
        Ok(Answer::Pending { id }) => still_running(&id, Status::Running),
        Ok(Answer::Held(held)) => awaiting(&held, ""),
        Ok(Answer::Refused(refusal)) => refused(&refusal),
        Err(err) => tool_text(err.to_string(), true),
    }
}

fn still_running(id: &str, status: Status) -> Value {
    #[derive(serde::Serialize)]
    struct StillRunning<'a> {
        id: &'a str,
        status: &'static str,
        next: &'static str,
    }
    let text = json_text(&StillRunning {
        id,
        status: status.as_str(),
        next: match status {
            Status::AwaitingApproval => {
                "still held for the human's approval; call job_status again with this id and wait_s"
            }
            _ => "call job_status with this id (and wait_s) to get the result",
        },
    });
    tool_text(text, false)
}

fn refused(refusal: &Refusal) -> Value {
    let hint = match refusal.error.as_str() {
        "invalid_code" => {
            " Ask the human for the current code from their authenticator app; each code works once."
        }
        "not_allowed" => " No rule allows this command; see list_allowed_commands.",
        "locked_out" => " Too many wrong codes: wait before trying again.",
        _ => "",
    };
    tool_text(
        format!(
            "refused by sudo-agent ({} {}): {}.{hint}",
            refusal.status, refusal.error, refusal.message
        ),
        true,
    )
}

fn rules_result(answer: Result<Result<Value, Refusal>, ClientError>) -> Value {
    match answer {
        Ok(Ok(rules)) => tool_text(json_text(&rules), false),
        Ok(Err(refusal)) if refusal.status == 404 => tool_text(
            "this agent does not publish its rules; its owner can set \"expose_rules\": true \
             in /etc/sudo-agent/config.json. Ask the human which commands are allowed."
                .into(),
            true,
        ),
        Ok(Err(refusal)) => refused(&refusal),
        Err(err) => tool_text(err.to_string(), true),
    }
}

/// The tools this server offers, with their JSON Schemas.
fn tools() -> Value {
    let wait_s = json!({
        "type": "integer", "minimum": 0, "maximum": MAX_WAIT_S,
        "description": "seconds to wait for the job to end before answering",
    });
    json!([
        {
            "name": "run_command",
            "description": "Run an allowlisted command as root through sudo-agent and return its \
                job record (status, exit_code, stdout, stderr). Give no code: the agent holds \
                the request and the human approves it with their authenticator app outside \
                this conversation (a prompt from this client, or their phone); no_pin rules run \
                at once. If the answer is awaiting_approval, tell the human its approval code \
                and wait with job_status. The command is split into words with shell quoting \
                but never run by a shell.",
            "inputSchema": {"type": "object", "required": ["command"], "properties": {
                "command": {"type": "string", "description": "e.g. \"systemctl restart nginx\""},
                "reason": {
                    "type": "string", "maxLength": 256,
                    "description": "why, in a few words; shown to the human who approves",
                },
                "code": {
                    "type": "string",
                    "description": "leave out. Only for a code the human put in this chat \
                        unasked; never ask for one",
                },
                "wait_s": wait_s,
            }},
        },
        {
            "name": "job_status",
            "description": "The job record of an earlier run_command by its id; waits up to \
                wait_s seconds for it to end, or for a held request to be approved, denied or \
                expire.",
            "inputSchema": {"type": "object", "required": ["id"], "properties": {
                "id": {"type": "string", "description": "the 32-hex-character job id"},
                "wait_s": wait_s,
            }},
        },
        {
            "name": "list_allowed_commands",
            "description": "The agent's rules: each name, its argv pattern and whether it \
                needs a code (no_pin false). In a pattern a string is that word; a list, one \
                of those words; \"*\" one word not starting with - (any word after a literal \
                \"--\"); {\"any\": true} any one word; {\"re\": R} a word regex R matches \
                whole; {\"path_under\": D} an absolute path below D without . or ..; \
                {\"int\": [A, B]} an integer from A to B; \"**\" any further words.",
            "inputSchema": {"type": "object", "properties": {}},
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::mpsc::SyncSender;

    /// A session whose agent is a port nothing listens on (tool calls fail fast, the
    /// rest is local), its stdin a queue the test fills, its stdout a buffer.
    fn session() -> (Session<Vec<u8>>, SyncSender<Line>) {
        let (tx, inbox) = sync_channel(16);
        let client = Client::new("http://127.0.0.1:1").unwrap();
        (Session::new(client, Vec::new(), inbox, false), tx)
    }

    fn ask(text: &str) -> Option<Value> {
        session().0.handle_text(text.as_bytes())
    }

    fn sent(session: &mut Session<Vec<u8>>) -> Vec<Value> {
        let out = std::mem::take(&mut session.out);
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn versions_and_elicitation_are_negotiated() {
        let (mut s, _tx) = session();
        let mut init = |version: &str, caps: &str| {
            let text = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{version}","capabilities":{caps}}}}}"#
            );
            let r = s.handle_text(text.as_bytes()).unwrap();
            (
                r["result"]["protocolVersion"].as_str().unwrap().to_string(),
                s.can_elicit,
            )
        };
        // Real SDK clients ask for the newest they know; unknown ones get our newest.
        assert_eq!(
            init("2025-11-25", r#"{"elicitation":{"form":{},"url":{}}}"#),
            ("2025-11-25".into(), true)
        );
        assert_eq!(
            init("2026-07-28", r#"{"elicitation":{}}"#),
            ("2025-11-25".into(), true)
        );
        assert_eq!(
            init("2025-06-18", r#"{"elicitation":{}}"#),
            ("2025-06-18".into(), true)
        );
        assert!(!init("2025-11-25", r#"{"elicitation":{"url":{}}}"#).1);
        assert!(!init("2025-11-25", r#"{}"#).1);
        // Before elicitation existed, a stray capability means nothing.
        assert_eq!(
            init("2025-03-26", r#"{"elicitation":{}}"#),
            ("2025-03-26".into(), false)
        );
    }

    #[test]
    fn an_elicitation_waits_for_its_answer_and_serves_the_rest() {
        let (mut s, tx) = session();
        let line = |text: &str| Line::Complete(text.as_bytes().to_vec());
        tx.send(line(r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#))
            .unwrap();
        tx.send(line(
            r#"{"jsonrpc":"2.0","id":"other","result":{"action":"accept","content":{"code":"1"}}}"#,
        ))
        .unwrap();
        tx.send(line(r#"{"jsonrpc":"2.0","id":"sudo-agent-1","result":{"action":"accept","content":{"code":" 123456 "}}}"#)).unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        assert!(matches!(s.elicit("run `x`?", until), Elicited::Code(c) if c == "123456"));
        let out = sent(&mut s);
        assert_eq!(out[0]["method"], "elicitation/create");
        assert_eq!(
            out[0]["params"]["requestedSchema"]["required"],
            json!(["code"])
        );
        assert_eq!(out[1], json!({"jsonrpc": "2.0", "id": 7, "result": {}}));
        assert_eq!(out.len(), 2);

        tx.send(line(
            r#"{"jsonrpc":"2.0","id":"sudo-agent-2","result":{"action":"decline"}}"#,
        ))
        .unwrap();
        assert!(matches!(s.elicit("?", until), Elicited::Declined));
        tx.send(line(
            r#"{"jsonrpc":"2.0","id":"sudo-agent-3","result":{"action":"cancel"}}"#,
        ))
        .unwrap();
        assert!(matches!(s.elicit("?", until), Elicited::NoAnswer(_)));
        tx.send(line(
            r#"{"jsonrpc":"2.0","id":"sudo-agent-4","error":{"code":-1,"message":"no"}}"#,
        ))
        .unwrap();
        assert!(matches!(s.elicit("?", until), Elicited::NoAnswer(_)));
        // The tool call being served is cancelled by the client, after another tool
        // call was served meanwhile (answered; the outer call still noticed).
        s.serving = Some(json!(3));
        sent(&mut s);
        tx.send(line(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"run_command","arguments":{"command":"uptime"}}}"#)).unwrap();
        tx.send(line(
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#,
        ))
        .unwrap();
        assert!(matches!(s.elicit("?", until), Elicited::NoAnswer(_)));
        assert_eq!(sent(&mut s)[1]["id"], 9);
        assert_eq!(s.serving, Some(json!(3)));
        // Unanswered in time, then stdin ends: left held, and the session ends.
        assert!(matches!(
            s.elicit("?", Instant::now()),
            Elicited::NoAnswer(_)
        ));
        tx.send(Line::Eof).unwrap();
        assert!(matches!(s.elicit("?", until), Elicited::NoAnswer(_)));
        assert!(s.ended && !s.asking);
    }

    #[test]
    fn protocol_basics() {
        let r = ask(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05"}}"#).unwrap();
        assert_eq!(r["result"]["protocolVersion"], "2024-11-05");
        assert_eq!(r["result"]["serverInfo"]["name"], "sudo-agent");
        let r = ask(r#"{"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2099-01-01"}}"#).unwrap();
        assert_eq!(
            (r["id"].as_str(), r["result"]["protocolVersion"].as_str()),
            (Some("a"), Some(SUPPORTED_VERSIONS[0]))
        );
        assert_eq!(
            ask(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
        assert_eq!(
            ask(r#"{"jsonrpc":"2.0","method":"no/such/notification"}"#),
            None
        );
        assert_eq!(ask(r#"{"jsonrpc":"2.0","id":5,"result":{}}"#), None);
        let r = ask(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#).unwrap();
        assert_eq!(r["result"], json!({}));
        let r = ask(r#"{"jsonrpc":"2.0","id":3,"method":"resources/list"}"#).unwrap();
        assert_eq!(r["error"]["code"], METHOD_NOT_FOUND);
        assert_eq!(r["id"], 3);
        let r = ask("{not json").unwrap();
        assert_eq!(
            (r["error"]["code"].as_i64(), &r["id"]),
            (Some(PARSE_ERROR), &Value::Null)
        );
        for bad in [
            r#"{"id":4,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":4}"#,
            "7",
            r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#,
            "[]",
        ] {
            assert_eq!(ask(bad).unwrap()["error"]["code"], INVALID_REQUEST, "{bad}");
        }
        let r = ask(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#).unwrap();
        assert_eq!(r.as_array().unwrap().len(), 2);
    }

    #[test]
    fn tools_and_their_arguments() {
        let r = ask(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        let names: Vec<&str> = r["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["run_command", "job_status", "list_allowed_commands"]
        );
        for tool in &r["result"]["tools"].as_array().unwrap()[..2] {
            let wait = &tool["inputSchema"]["properties"]["wait_s"];
            assert_eq!(wait["maximum"], MAX_WAIT_S);
        }
        for bad in [
            r#"{"name":"nope","arguments":{}}"#,
            r#"{"name":"run_command","arguments":{}}"#,
            r#"{"name":"run_command","arguments":{"command":"x","code":123456}}"#,
            r#"{"name":"run_command","arguments":{"command":"x","wait_s":-1}}"#,
            r#"{"name":"job_status","arguments":{}}"#,
        ] {
            let text =
                format!(r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{bad}}}"#);
            assert_eq!(
                ask(&text).unwrap()["error"]["code"],
                INVALID_PARAMS,
                "{bad}"
            );
        }
        // The agent is unreachable: a tool error the assistant can read, not a crash.
        let r = ask(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run_command","arguments":{"command":"uptime","reason":"load"}}}"#).unwrap();
        assert_eq!(r["result"]["isError"], true);
        assert!(
            r["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("cannot reach")
        );
    }

    #[test]
    fn long_lines_are_skipped_whole() {
        let mut input = &b"aaaaaaaaaa\nbb\n\nlast"[..];
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut input, &mut buf, 4).unwrap(),
            Scan::TooLong
        ));
        assert!(matches!(
            read_line(&mut input, &mut buf, 4).unwrap(),
            Scan::Complete
        ));
        assert_eq!(buf, b"bb");
        assert!(matches!(
            read_line(&mut input, &mut buf, 4).unwrap(),
            Scan::Complete
        ));
        assert!(buf.is_empty());
        assert!(matches!(
            read_line(&mut input, &mut buf, 4).unwrap(),
            Scan::Complete
        ));
        assert_eq!(buf, b"last");
        assert!(matches!(
            read_line(&mut input, &mut buf, 4).unwrap(),
            Scan::Eof
        ));
    }
}
