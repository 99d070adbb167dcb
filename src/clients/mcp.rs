//! `sudo-agent mcp`: a Model Context Protocol server on stdio (JSON-RPC 2.0, one JSON
//! message per line) that lets an AI assistant ask the agent to run commands. It holds
//! no secret and talks to the agent over HTTP like any client, so every privileged
//! command still needs a code that only the human's phone can produce.

use std::io::{self, BufRead, Write};

use serde_json::{Value, json};

use super::http_client::{Answer, Client, ClientError, Refusal, Submission};

/// Versions whose tool subset this server implements, newest first.
const SUPPORTED_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];
/// Answered to a client asking for a version not listed above.
const FALLBACK_VERSION: &str = "2024-11-05";
/// Longest line read; a longer one is skipped and answered with a parse error.
pub const MAX_LINE: usize = 1 << 20;
/// Most messages in one batch.
const MAX_BATCH: usize = 64;
/// Default and largest wait for a tool call, in seconds. Clients time tool calls out
/// after about a minute; a longer job is followed with `job_status`.
const DEFAULT_WAIT_S: u64 = 30;
const MAX_WAIT_S: u64 = 120;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

const INSTRUCTIONS: &str = "Runs allowlisted commands as root on this machine through \
sudo-agent. Every command except read-only no_pin rules needs a fresh 6-digit code from \
the owner's authenticator app: ask the human for it each time, never guess or reuse one \
(each code works once; wrong codes lock the agent out). Call list_allowed_commands to \
see what may be asked for.";

/// Serves MCP on stdin/stdout until stdin ends.
pub fn serve(url: &str) -> Result<(), String> {
    let client = Client::new(url).map_err(|e| e.to_string())?;
    serve_on(&client, io::stdin().lock(), io::stdout().lock())
        .map_err(|e| format!("mcp: stdio failed: {e}"))
}

/// The server loop over any line source and sink (tests use pipes).
pub fn serve_on(
    client: &Client,
    mut input: impl BufRead,
    mut output: impl Write,
) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        let answer = match read_line(&mut input, &mut line, MAX_LINE)? {
            Line::Eof => return Ok(()),
            Line::TooLong => Some(error(
                Value::Null,
                PARSE_ERROR,
                &format!("message longer than {MAX_LINE} bytes"),
            )),
            Line::Complete if line.iter().all(u8::is_ascii_whitespace) => None,
            Line::Complete => handle_text(client, &line),
        };
        if let Some(answer) = answer {
            let mut bytes = serde_json::to_vec(&answer).map_err(io::Error::other)?;
            bytes.push(b'\n');
            output.write_all(&bytes)?;
            output.flush()?;
        }
    }
}

enum Line {
    Eof,
    Complete,
    TooLong,
}

/// Reads one line into `buf` (without its newline), holding at most `max` bytes; the
/// rest of a longer line is read and dropped.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
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
                (false, _) => Line::Eof,
                (true, true) => Line::TooLong,
                (true, false) => Line::Complete,
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
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// One line: a message or a batch. `None` when nothing is to be sent back.
pub fn handle_text(client: &Client, text: &[u8]) -> Option<Value> {
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
            let answers: Vec<Value> = batch.iter().filter_map(|m| handle(client, m)).collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        message => handle(client, &message),
    }
}

/// One JSON-RPC message. Notifications (no `id`) and responses get no answer.
fn handle(client: &Client, message: &Value) -> Option<Value> {
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
        return None; // A response; this server sends no requests, so nothing awaits one.
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
    Some(match call(client, method, &params) {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => error(id, code, &message),
    })
}

fn call(client: &Client, method: &str, params: &Value) -> Result<Value, (i64, String)> {
    match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str);
            let version = asked
                .filter(|v| SUPPORTED_VERSIONS.contains(v))
                .unwrap_or(FALLBACK_VERSION);
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
                    let code = match args.get("code") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(code)) => Some(code.trim()).filter(|c| !c.is_empty()),
                        Some(_) => return Err(invalid("\"code\" must be a string of digits")),
                    };
                    let submission = Submission::Command(command.to_string());
                    Ok(job_result(client.submit(
                        code,
                        &submission,
                        wait(DEFAULT_WAIT_S)?,
                    )))
                }
                "job_status" => {
                    let id = text("id").ok_or_else(|| invalid("job_status needs \"id\""))?;
                    Ok(job_result(client.job(id, wait(0)?)))
                }
                "list_allowed_commands" => Ok(rules_result(client.get_json("/rules"))),
                other => Err(invalid(&format!("unknown tool {other:?}"))),
            }
        }
        other => Err((METHOD_NOT_FOUND, format!("method {other:?} not found"))),
    }
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
        Ok(Answer::Job(job)) => still_running(&job.id),
        Ok(Answer::Pending { id }) => still_running(&id),
        Ok(Answer::Refused(refusal)) => refused(&refusal),
        Err(err) => tool_text(err.to_string(), true),
    }
}

fn still_running(id: &str) -> Value {
    #[derive(serde::Serialize)]
    struct StillRunning<'a> {
        id: &'a str,
        status: &'static str,
        next: &'static str,
    }
    let text = json_text(&StillRunning {
        id,
        status: "running",
        next: "call job_status with this id (and wait_s) to get the result",
    });
    tool_text(text, false)
}

fn refused(refusal: &Refusal) -> Value {
    let hint = match refusal.error.as_str() {
        "invalid_code" => {
            " Ask the human for the current code from their authenticator app; each code works once."
        }
        "not_allowed" => " No rule allows this command; see list_allowed_commands.",
        "locked_out" => " Too many wrong codes: wait, then ask the human for a new code.",
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
                job record (status, exit_code, stdout, stderr). Needs a fresh code from the \
                human's authenticator app unless the rule is no_pin. The command is split into \
                words with shell quoting but never run by a shell.",
            "inputSchema": {"type": "object", "required": ["command"], "properties": {
                "command": {"type": "string", "description": "e.g. \"systemctl restart nginx\""},
                "code": {
                    "type": "string",
                    "description": "the current 6-digit code the human read from their \
                        authenticator app",
                },
                "wait_s": wait_s,
            }},
        },
        {
            "name": "job_status",
            "description": "The job record of an earlier run_command by its id; waits up to \
                wait_s seconds for it to end.",
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

    /// A client for a port nothing listens on: tool calls fail fast, the rest is local.
    fn client() -> Client {
        Client::new("http://127.0.0.1:1").unwrap()
    }

    fn ask(text: &str) -> Option<Value> {
        handle_text(&client(), text.as_bytes())
    }

    #[test]
    fn protocol_basics() {
        let r = ask(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05"}}"#).unwrap();
        assert_eq!(r["result"]["protocolVersion"], "2024-11-05");
        assert_eq!(r["result"]["serverInfo"]["name"], "sudo-agent");
        let r = ask(r#"{"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2099-01-01"}}"#).unwrap();
        assert_eq!(
            (r["id"].as_str(), r["result"]["protocolVersion"].as_str()),
            (Some("a"), Some(FALLBACK_VERSION))
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
        let r = ask(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run_command","arguments":{"command":"uptime"}}}"#).unwrap();
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
            Line::TooLong
        ));
        assert!(matches!(
            read_line(&mut input, &mut buf, 4).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"bb");
        assert!(matches!(
            read_line(&mut input, &mut buf, 4).unwrap(),
            Line::Complete
        ));
        assert!(buf.is_empty());
        assert!(matches!(
            read_line(&mut input, &mut buf, 4).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"last");
        assert!(matches!(
            read_line(&mut input, &mut buf, 4).unwrap(),
            Line::Eof
        ));
    }
}
