//! `sudo-agent mcp` spoken to over pipes, as an MCP client (Claude Desktop and others)
//! does: initialize, list tools, call them with a good and a bad code; and the official
//! MCP Python SDK approving a held request through elicitation (tests/mcp_sdk.py).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::common::{Agent, Retrying, SECRET_B32, agent_command, agent_shell_command, python_has};
use serde_json::{Value, json};

/// A running `sudo-agent mcp` with its stdio.
struct Session {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Session {
    fn start(agent: &Agent) -> Session {
        let mut child = agent_command()
            .args(["mcp", "--url", &agent.url("")])
            .args(["--config", agent.config_path.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn_retrying()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Session {
            child,
            input,
            output,
        }
    }

    fn send(&mut self, line: &str) {
        self.input.write_all(line.as_bytes()).unwrap();
        self.input.write_all(b"\n").unwrap();
        self.input.flush().unwrap();
    }

    fn receive(&mut self) -> Value {
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        );
        let answer = self.receive();
        assert_eq!(answer["id"], id, "{answer}");
        answer
    }

    /// A `tools/call`: (isError, text of the first content item).
    fn call(&mut self, id: u64, tool: &str, arguments: Value) -> (bool, String) {
        let answer = self.request(
            id,
            "tools/call",
            json!({"name": tool, "arguments": arguments}),
        );
        let result = &answer["result"];
        assert_eq!(result["content"][0]["type"], "text", "{answer}");
        (
            result["isError"].as_bool().unwrap(),
            result["content"][0]["text"].as_str().unwrap().to_string(),
        )
    }
}

#[test]
fn mcp_session_runs_commands_only_with_the_humans_code() {
    let agent = Agent::start("mcp", json!({"totp": {"step_s": 1}, "expose_rules": true}));
    let mut mcp = Session::start(&agent);

    let init = mcp.request(
        1,
        "initialize",
        json!({"protocolVersion": "2024-11-05", "capabilities": {},
               "clientInfo": {"name": "test", "version": "0"}}),
    );
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(
        init["result"]["capabilities"]["tools"],
        json!({"listChanged": false})
    );
    assert_eq!(init["result"]["serverInfo"]["name"], "sudo-agent");
    // A notification gets no answer: the next line read answers the next request.
    mcp.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    let tools = mcp.request(2, "tools/list", json!({}));
    let tools = tools["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["run_command", "job_status", "list_allowed_commands"]
    );
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["command"]));

    let (is_error, text) = mcp.call(3, "list_allowed_commands", json!({}));
    assert!(!is_error, "{text}");
    let rules: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        rules["rules"][2],
        json!({"name": "echo", "argv": ["/bin/echo", "**"], "no_pin": false})
    );

    let (is_error, text) = mcp.call(
        4,
        "run_command",
        json!({"command": "echo from the assistant", "code": agent.fresh_code()}),
    );
    assert!(!is_error, "{text}");
    let job: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["stdout"], "from the assistant\n");

    let (is_error, text) = mcp.call(5, "job_status", json!({"id": job["id"]}));
    assert!(!is_error, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["id"],
        job["id"]
    );

    let wrong = if agent.code() == "000000" {
        "111111"
    } else {
        "000000"
    };
    let (is_error, text) = mcp.call(
        6,
        "run_command",
        json!({"command": "echo x", "code": wrong}),
    );
    assert!(is_error, "{text}");
    assert!(
        text.contains("invalid_code") && text.contains("Ask the human"),
        "{text}"
    );
    // Without any code, a command needing one is held for the human (this client did
    // not declare elicitation): the assistant gets the approval code to wait on.
    let (is_error, text) = mcp.call(7, "run_command", json!({"command": "echo x"}));
    assert!(!is_error, "{text}");
    let held: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(held["status"], "awaiting_approval", "{text}");
    assert_eq!(
        agent.get("/pending").json()["pending"][0]["approval"],
        held["approval"]
    );

    mcp.send("{this is not json");
    let answer = mcp.receive();
    assert_eq!(
        (answer["error"]["code"].as_i64(), &answer["id"]),
        (Some(-32700), &Value::Null)
    );
    let answer = mcp.request(8, "prompts/list", json!({}));
    assert_eq!(answer["error"]["code"], -32601);
    assert_eq!(mcp.request(9, "ping", json!({}))["result"], json!({}));

    // End of input ends the server cleanly.
    drop(mcp.input);
    assert!(mcp.child.wait().unwrap().success());
    assert!(
        agent
            .log()
            .contains("INVALID PIN attempt for command: echo x")
    );
}

#[test]
fn with_approvers_set_the_mcp_server_never_asks_for_a_code() {
    // It runs as the assistant's user, which the kernel cannot tell from the assistant:
    // where the agent names its approvers, the human approves elsewhere.
    let agent = Agent::start(
        "mcp-approvers",
        json!({"approvals": {"approvers": {"users": ["root"]}}}),
    );
    let mut mcp = Session::start(&agent);
    let init = mcp.request(
        1,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}},
               "clientInfo": {"name": "test", "version": "0"}}),
    );
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    // The next line is the tool result itself, not an `elicitation/create`.
    let (is_error, text) = mcp.call(2, "run_command", json!({"command": "echo x"}));
    assert!(!is_error, "{text}");
    let held: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(held["status"], "awaiting_approval", "{text}");
    assert!(
        held["next"]
            .as_str()
            .unwrap()
            .contains("names its approvers")
    );
    // An unknown (newer) version is answered with our newest, not the oldest.
    let init = mcp.request(3, "initialize", json!({"protocolVersion": "2099-01-01"}));
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
}

#[test]
fn rules_stay_private_unless_exposed() {
    let agent = Agent::start("mcp-private", json!({}));
    assert_eq!(agent.get("/rules").status, 404);
    let mut mcp = Session::start(&agent);
    let (is_error, text) = mcp.call(1, "list_allowed_commands", json!({}));
    assert!(is_error);
    assert!(text.contains("\"expose_rules\": true"), "{text}");
    // no_pin rules still work without a code.
    let (is_error, text) = mcp.call(2, "run_command", json!({"command": "uptime"}));
    assert!(!is_error, "{text}");
}

/// Runs tests/mcp_sdk.py: the SDK starts `sudo-agent mcp` itself, asks for `command`,
/// and its elicitation callback takes `action`. Its JSON report.
fn sdk(agent: &Agent, action: &str, command: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_sdk.py");
    let out = Command::new("python3")
        .arg(script)
        .args(agent_shell_command().split_whitespace())
        .args([
            &agent.url(""),
            SECRET_B32,
            &agent.params.step_s.to_string(),
            action,
            command,
        ])
        .stderr(Stdio::inherit())
        .output_retrying()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mcp_sdk.py failed: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The SDK and pyotp, or a loud skip (a failure under CI=true).
fn sdk_present() -> bool {
    python_has("mcp", "pip install mcp") && python_has("pyotp", "pip install pyotp")
}

#[test]
fn the_official_sdk_approves_through_elicitation_and_the_code_stays_out_of_the_model() {
    if !sdk_present() {
        return;
    }
    let agent = Agent::start("mcp-sdk", json!({}));
    let marker = agent.dir.path().join("ran");
    let command = format!("sh -c 'echo ran >> {}; echo approved'", marker.display());
    let out = sdk(&agent, "accept", &command);
    // The SDK asks for the newest version it knows, which this server speaks.
    assert_eq!(out["protocolVersion"], "2025-11-25", "{out}");
    assert!(
        out["description"]
            .as_str()
            .unwrap()
            .contains("Give no code"),
        "{out}"
    );
    // The human saw the exact argv, the rule, the reason and the approval code.
    let asked = out["asked"][0]["message"].as_str().unwrap();
    let argv = format!(
        "/bin/sh -c 'echo ran >> {}; echo approved'",
        marker.display()
    );
    for part in [
        argv.as_str(),
        "rule: sh",
        "reason: the test asks",
        "approval code: ",
    ] {
        assert!(asked.contains(part), "{part:?} not in {asked}");
    }
    assert_eq!(out["asked"][0]["schema"]["required"], json!(["code"]));
    let code = out["codes"][0].as_str().unwrap();
    let result = &out["results"][0];
    assert_eq!(result["isError"], false, "{out}");
    let job: Value = serde_json::from_str(result["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        (job["status"].as_str(), job["stdout"].as_str()),
        (Some("succeeded"), Some("approved\n"))
    );
    // Ran once; the code went human -> server and is nowhere the model can read.
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
    assert!(!out["results"].to_string().contains(code), "{out}");
    assert!(!agent.log().contains(code));
    assert_eq!(agent.get("/pending").json()["pending"], json!([]));
}

#[test]
fn the_official_sdk_declining_denies_and_dismissing_leaves_it_held() {
    if !sdk_present() {
        return;
    }
    let agent = Agent::start("mcp-sdk-no", json!({}));
    let marker = agent.dir.path().join("ran");
    let command = format!("sh -c 'echo ran >> {}'", marker.display());
    let out = sdk(&agent, "decline", &command);
    let result = &out["results"][0];
    assert_eq!(result["isError"], true, "{out}");
    assert!(result["text"].as_str().unwrap().contains("denied"), "{out}");
    assert_eq!(agent.get("/pending").json()["pending"], json!([]));

    let out = sdk(&agent, "cancel", &command);
    let held: Value = serde_json::from_str(out["results"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(held["status"], "awaiting_approval", "{out}");
    let approval = held["approval"].as_str().unwrap();
    assert!(
        held["next"]
            .as_str()
            .unwrap()
            .contains(&format!("approve {approval}"))
    );
    let status: Value = serde_json::from_str(out["results"][1]["text"].as_str().unwrap()).unwrap();
    assert_eq!(status["status"], "awaiting_approval", "{out}");
    let pending = agent.get("/pending").json();
    assert_eq!(pending["pending"][0]["approval"], approval);
    assert_eq!(
        agent
            .post_json("/deny", &json!({"approval": approval}))
            .status,
        200
    );
    assert!(!marker.exists(), "nothing ran");
}
