//! The example configs in `examples/` are checked, not just shown: the Asterisk dialplan
//! parses and its SHELL() line runs a message safely, the Home Assistant YAML parses,
//! its rest_command body is what the agent accepts, the notify commands post what the
//! HA automations read, and a phone's reply, rendered as HA would, approves a held
//! request.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use crate::common::{Agent, Retrying, agent_shell_command, read_message, url_decode};
use serde_json::{Value, json};

fn example(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Asterisk

/// A small structural check of an `extensions.conf`: `[sections]`, `exten =>` lines
/// with pattern, priority and application, `same =>` lines after an `exten`, priorities
/// that Asterisk accepts, and balanced (), {} and [] in every line. Returns the number
/// of priorities.
fn check_dialplan(text: &str) -> Result<usize, String> {
    let mut section: Option<&str> = None;
    let mut in_exten = false;
    let mut priorities = 0;
    for (n, raw) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {raw}", n + 1);
        // `;` starts a comment; `\;` is a literal semicolon.
        let line = match raw
            .match_indices(';')
            .find(|(i, _)| !raw[..*i].ends_with('\\'))
        {
            Some((i, _)) => &raw[..i],
            None => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| at("unclosed section"))?;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(at("bad section name"));
            }
            section = Some(name);
            in_exten = false;
            continue;
        }
        section.ok_or_else(|| at("line outside a [section]"))?;
        let (key, value) = line
            .split_once("=>")
            .ok_or_else(|| at("expected `key => value`"))?;
        let (priority, app) = match key.trim() {
            "exten" => {
                let fields: Vec<&str> = value.splitn(3, ',').collect();
                let [pattern, priority, app] = fields[..] else {
                    return Err(at("exten needs pattern,priority,application"));
                };
                if pattern.trim().is_empty() || priority.trim() != "1" {
                    return Err(at("an extension starts with a pattern and priority 1"));
                }
                in_exten = true;
                (priority, app)
            }
            "same" if in_exten => {
                let (priority, app) = value
                    .split_once(',')
                    .ok_or_else(|| at("same needs priority,application"))?;
                (priority, app)
            }
            "same" => return Err(at("`same` before any `exten` in this section")),
            "include" => continue,
            _ => return Err(at("unknown key")),
        };
        let priority = priority.trim();
        let label_ok = priority
            .strip_prefix("n(")
            .and_then(|l| l.strip_suffix(')'))
            .is_some_and(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !(priority == "n" || label_ok || priority.bytes().all(|b| b.is_ascii_digit())) {
            return Err(at("bad priority"));
        }
        let app = app.trim();
        let name_len = app
            .find('(')
            .ok_or_else(|| at("application without (arguments)"))?;
        if name_len == 0
            || !app[..name_len].bytes().all(|b| b.is_ascii_alphabetic())
            || !app.ends_with(')')
        {
            return Err(at("expected Application(arguments)"));
        }
        let mut stack = Vec::new();
        for c in app.chars() {
            match c {
                '(' | '{' | '[' => stack.push(c),
                ')' | '}' | ']' => {
                    let open = stack.pop().ok_or_else(|| at("unbalanced brackets"))?;
                    if (open, c) != ('(', ')') && (open, c) != ('{', '}') && (open, c) != ('[', ']')
                    {
                        return Err(at("mismatched brackets"));
                    }
                }
                _ => {}
            }
        }
        if !stack.is_empty() {
            return Err(at("unbalanced brackets"));
        }
        priorities += 1;
    }
    Ok(priorities)
}

#[test]
fn asterisk_dialplan_parses() {
    let text = example("asterisk/extensions.conf");
    let priorities = check_dialplan(&text).unwrap();
    assert!(priorities >= 8, "{priorities}");
    for needed in [
        "MESSAGE(body)",
        "MESSAGE(from)",
        "SHELL(",
        "MessageSend(",
        "--message",
    ] {
        assert!(text.contains(needed), "dialplan lacks {needed}");
    }
    // The checker does catch broken dialplans.
    for broken in [
        "exten => a,1,NoOp(x)",
        "[s]\nexten => a,1,Set(A=${B)",
        "[s]\nexten => a,NoOp(x)",
        "[s]\nsame => n,NoOp(x)",
        "[s]\nexten => a,1,NoOp(x)\n same => x,NoOp(y)",
        "[s]\nexten => a,1,NoOp(x))",
        "[s\nexten => a,1,NoOp(x)",
    ] {
        assert!(check_dialplan(broken).is_err(), "{broken:?} passed");
    }
}

/// The argument of `${SHELL(...)}` in the dialplan, brackets balanced.
fn shell_line(dialplan: &str) -> String {
    let start = dialplan
        .find("${SHELL(")
        .expect("no SHELL() in the dialplan")
        + "${SHELL(".len();
    let mut depth = 1;
    for (i, c) in dialplan[start..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return dialplan[start..start + i].to_string();
        }
    }
    panic!("unbalanced SHELL(");
}

#[test]
fn asterisk_shell_line_runs_a_message_and_never_its_shell_code() {
    let agent = Agent::start("asterisk", json!({"totp": {"step_s": 1}}));
    let dialplan = example("asterisk/extensions.conf");
    // What Asterisk hands to /bin/sh once ${MSGVAR} is substituted, pointed at our agent.
    let line = shell_line(&dialplan)
        .replace("${MSGVAR}", "SUDO_AGENT_MSG_42")
        .replace(
            "/usr/local/bin/sudo-agent run",
            &format!("{} run --url {}", agent_shell_command(), agent.url("")),
        );
    assert!(line.contains(" run --url "), "{line}");
    let marker = agent.dir.path().join("pwned");
    let m = marker.display();
    let body = format!(
        "Agent: {} echo \"$(touch {m})\" `touch {m}` ; touch {m}",
        agent.fresh_code()
    );
    let out = Command::new("/bin/sh")
        .args(["-c", &line])
        .env("SUDO_AGENT_MSG_42", &body)
        .output_retrying()
        .unwrap();
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        reply.starts_with("succeeded (rc=0): echo"),
        "{reply} {out:?}"
    );
    assert!(reply.contains(&format!("$(touch {m})")), "{reply}");
    assert!(!marker.exists(), "the message body ran as shell code");
}

// ---------------------------------------------------------------------------------------
// Home Assistant

/// A YAML file as JSON, through PyYAML; `None` (after a loud skip) when it is missing.
fn yaml(path: &str) -> Option<Value> {
    if !crate::common::python_has("yaml", "pip install pyyaml") {
        return None;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path);
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&path)
        .output_retrying()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

const WEBHOOK: &str = "sudo-agent-CHANGE-ME";

#[test]
fn home_assistant_yaml_parses_and_matches_the_agent_side() {
    let Some(ha) = yaml("homeassistant/configuration.yaml") else {
        return;
    };
    assert_eq!(ha["input_text"]["sudo_agent_code"]["mode"], "password");
    let rest = &ha["rest_command"]["sudo_agent"];
    assert_eq!(rest["url"], "http://127.0.0.1:9999/run");
    assert_eq!(rest["content_type"], "application/json");
    let script = &ha["script"]["sudo_agent_restart_nginx"]["sequence"];
    assert_eq!(script[0]["action"], "rest_command.sudo_agent");
    let trigger = &ha["automation"][0]["triggers"][0];
    assert_eq!(
        (trigger["trigger"].as_str(), trigger["webhook_id"].as_str()),
        (Some("webhook"), Some(WEBHOOK))
    );
    // The agent's notify command posts to this very webhook.
    let notify: Value = serde_json::from_str(&example("homeassistant/agent-notify.json")).unwrap();
    let argv = notify["notify"].as_array().unwrap();
    assert!(
        argv[2]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/webhook/{WEBHOOK}"))
    );
    for field in ["status", "exit_code", "command", "result_file"] {
        assert!(
            argv[2].as_str().unwrap().contains(&format!("\"{field}=$")),
            "{field}"
        );
    }
}

#[test]
fn home_assistant_rest_command_body_is_what_the_agent_accepts() {
    let Some(ha) = yaml("homeassistant/configuration.yaml") else {
        return;
    };
    let rest = &ha["rest_command"]["sudo_agent"];
    let agent = Agent::start("homeassistant", json!({"totp": {"step_s": 1}}));
    // Render the template as Home Assistant would: each `| to_json` is a JSON string.
    let command = r#"echo "quoted" and 'single'"#;
    let code = agent.fresh_code();
    let body = rest["payload"]
        .as_str()
        .unwrap()
        .replace(
            "{{ states('input_text.sudo_agent_code') | to_json }}",
            &json!(code).to_string(),
        )
        .replace("{{ command | to_json }}", &json!(command).to_string());
    assert!(!body.contains("{{"), "template not fully rendered: {body}");
    let path = rest["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://127.0.0.1:9999");
    assert_eq!(rest["method"], "post");
    let r = agent.post(path, &body);
    assert_eq!(r.status, 200, "{body} → {}", r.body);
    assert_eq!(r.json()["stdout"], "quoted and single\n");
}

/// The value of form field `key`.
fn field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// One form POST to the webhook `id` taken on `listener` and answered 200: its fields.
/// Fails after a minute rather than hang when nothing posts.
fn receive_form(listener: &TcpListener, id: &str) -> Vec<(String, String)> {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("nothing posted to the webhook: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let (head, body) = read_message(&mut conn, false).expect("no whole request came");
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(
        head.starts_with(&format!("POST /api/webhook/{id} HTTP/1.1")),
        "{head}"
    );
    form_decode(std::str::from_utf8(&body).unwrap())
}

/// URL-form decoding into pairs.
fn form_decode(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (url_decode(k), url_decode(v)))
        .collect()
}

#[test]
fn notify_command_posts_the_form_the_automation_reads() {
    if !Path::new("/usr/bin/curl").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl missing under CI=true; apt-get install curl"
        );
        eprintln!("SKIPPED: /usr/bin/curl is missing; apt-get install curl");
        return;
    }
    let notify: Value = serde_json::from_str(&example("homeassistant/agent-notify.json")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/api/webhook/{WEBHOOK}",
        listener.local_addr().unwrap()
    );
    let argv: Vec<String> = notify["notify"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str().unwrap().replace(
                &format!("http://127.0.0.1:8123/api/webhook/{WEBHOOK}"),
                &url,
            )
        })
        .collect();
    let command = r#"echo "$(id)" 'x' & y=1"#;
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("JOB_ID", "0123456789abcdef0123456789abcdef")
        .env("STATUS", "succeeded")
        .env("EXIT_CODE", "0")
        .env("COMMAND", command)
        .env("RESULT_FILE", "/tmp/sudo-agent/agent-0123.txt")
        .spawn_retrying()
        .unwrap();
    let form = receive_form(&listener, WEBHOOK);
    assert!(child.wait().unwrap().success());
    let get = |k: &str| field(&form, k);
    assert_eq!(get("command"), Some(command), "{form:?}");
    assert_eq!(get("status"), Some("succeeded"));
    assert_eq!(get("exit_code"), Some("0"));
    assert_eq!(get("job_id"), Some("0123456789abcdef0123456789abcdef"));
}

const APPROVAL_WEBHOOK: &str = "sudo-agent-approval-CHANGE-ME";

/// The `approvals.notify` argv of agent-notify.json, posting to `url` instead of HA.
fn approvals_notify(url: &str) -> Value {
    let notify: Value = serde_json::from_str(&example("homeassistant/agent-notify.json")).unwrap();
    let argv = notify["approvals"]["notify"].as_array().unwrap().iter();
    let target = format!("http://127.0.0.1:8123/api/webhook/{APPROVAL_WEBHOOK}");
    argv.map(|a| json!(a.as_str().unwrap().replace(&target, url)))
        .collect()
}

#[test]
fn approvals_notify_posts_what_the_phone_notification_shows() {
    let Some(ha) = yaml("homeassistant/configuration.yaml") else {
        return;
    };
    if !Path::new("/usr/bin/curl").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl missing under CI=true"
        );
        eprintln!("SKIPPED: /usr/bin/curl is missing; apt-get install curl");
        return;
    }
    let automation = &ha["automation"][1];
    assert_eq!(automation["triggers"][0]["webhook_id"], APPROVAL_WEBHOOK);
    let shown = automation["actions"][0]["data"].to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/api/webhook/{APPROVAL_WEBHOOK}",
        listener.local_addr().unwrap()
    );
    let agent = Agent::start(
        "ha-approval",
        json!({"approvals": {"notify": approvals_notify(&url)}}),
    );
    let held = agent.post_json(
        "/request",
        &json!({"command": "echo \"$(id)\" & x", "reason": "why"}),
    );
    assert_eq!(held.status, 202, "{}", held.body);
    let form = receive_form(&listener, APPROVAL_WEBHOOK);
    let get = |k: &str| field(&form, k);
    assert_eq!(
        get("approval"),
        held.json()["approval"].as_str(),
        "{form:?}"
    );
    assert_eq!(get("command"), Some("echo \"$(id)\" & x"));
    // The test runs as root; under qemu-user the agent cannot read the peer uid from
    // the kernel (observed: `unknown`), and says so rather than guess.
    let caller = if crate::common::emulated() {
        "unknown"
    } else {
        "root"
    };
    assert_eq!(
        (get("caller"), get("reason"), get("rule")),
        (Some(caller), Some("why"), Some("echo"))
    );
    // The notification shows each field it is sent, and its actions carry the approval.
    for field in ["approval", "caller", "command", "rule", "reason"] {
        assert!(
            shown.contains(&format!("trigger.data.{field}")),
            "{field}: {shown}"
        );
    }
    let actions = &automation["actions"][0]["data"]["data"]["actions"];
    assert_eq!(actions[0]["behavior"], "textInput");
}

/// What HA would post for a notification action `event` (tests/ha_render.py).
fn phone_reply(event: &Value) -> Option<Value> {
    if yaml("homeassistant/configuration.yaml").is_none()
        || !crate::common::python_has("jinja2", "pip install jinja2")
    {
        return None;
    }
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ha_render.py"))
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/homeassistant/configuration.yaml"),
        )
        .args(["mobile_app_notification_action", &event.to_string()])
        .output_retrying()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn a_reply_typed_into_the_phone_notification_approves_the_held_request() {
    // 30 s steps: Python and Jinja2 start slowly on a busy machine; one code is used.
    let agent = Agent::start("ha-reply", json!({}));
    let held = agent.post_json("/request", &json!({"command": "echo from the phone"}));
    assert_eq!(held.status, 202, "{}", held.body);
    let approval = held.json()["approval"].as_str().unwrap().to_string();
    // The Companion app's textInput reply: the action id and the typed text.
    let event = json!({"action": format!("SUDO_AGENT_APPROVE_{approval}"), "reply_text": format!(" {} ", agent.code())});
    let Some(post) = phone_reply(&event) else {
        return;
    };
    let path = post["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://127.0.0.1:9999");
    assert_eq!((path, post["method"].as_str()), ("/approve", Some("post")));
    let r = agent.post(path, post["body"].as_str().unwrap());
    assert_eq!(r.status, 200, "{post} -> {}", r.body);
    assert_eq!(r.json()["stdout"], "from the phone\n");

    let held = agent.post_json("/request", &json!({"command": "echo never"}));
    let approval = held.json()["approval"].as_str().unwrap().to_string();
    let post = phone_reply(&json!({"action": format!("SUDO_AGENT_DENY_{approval}")})).unwrap();
    let path = post["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://127.0.0.1:9999");
    let r = agent.post(path, post["body"].as_str().unwrap());
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("denied")),
        "{}",
        r.body
    );
    // Other notification actions are not this automation's business.
    assert_eq!(
        phone_reply(&json!({"action": "SOMETHING_ELSE"})).unwrap(),
        json!({})
    );
}
