//! `sudo-agent explain`: the words a command becomes, each rule tried with the first
//! word it refused and why, the rule that matches, and exactly how the agent would run
//! it (the `ExecSpec` the agent itself builds for that rule). Runs nothing; exit 0 when
//! allowed, 1 when not. `--json` says the same as one JSON object, for tools.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::parse::Asked;
use crate::config::Config;
use crate::jobs::{ExecSpec, own_home};
use crate::policy::{self, Explanation, Invocation, quote};
use crate::sys::{self, Limits, Sandbox};

/// Loads the config as `serve` would (trusted-file checks, every rule validated) and
/// explains `asked`; the exit code is 0 when it would be allowed.
pub fn explain(config: &Path, asked: &Asked, json: bool) -> Result<i32, String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let request = match asked {
        Asked::Command(command) => Invocation::Command(command),
        Asked::Argv(argv) => Invocation::Argv(argv),
    };
    let explained =
        policy::explain(&cfg.rules, &request).map_err(|e| format!("nothing to explain: {e}"))?;
    let home = own_home();
    let spec = explained
        .plan
        .as_ref()
        .map(|plan| ExecSpec::for_rule(plan.rule, plan.argv.clone(), &cfg.jobs, &home));
    if json {
        println!("{}", as_json(asked, &explained, spec.as_ref()));
    } else {
        print!("{}", as_text(&explained, spec.as_ref()));
    }
    Ok(if explained.plan.is_some() { 0 } else { 1 })
}

fn quoted(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

fn as_text(e: &Explanation<'_>, spec: Option<&ExecSpec>) -> String {
    let mut out = String::new();
    match (&e.words, &e.split_error) {
        (Some(words), _) => out.push_str(&format!("words: {}\n", quoted(words))),
        (None, Some(err)) => out.push_str(&format!("words: none, {err}\n")),
        (None, None) => {}
    }
    for attempt in &e.tried {
        let name = quote(&attempt.rule.name);
        match &attempt.refused {
            Some(refusal) => out.push_str(&format!("rule {name}: no, {refusal}\n")),
            None => out.push_str(&format!("rule {name}: matches\n")),
        }
    }
    match (&e.plan, spec) {
        (Some(plan), Some(spec)) => {
            let code = if plan.rule.no_pin {
                "no (no_pin)"
            } else {
                "yes"
            };
            let callers = plan.rule.callers.as_ref().map_or_else(
                || "anyone who reaches the agent".into(),
                |who| {
                    format!(
                        "{} only (to others, as if it were not there)",
                        who.shown.join(", ")
                    )
                },
            );
            out.push_str(&format!(
                "allowed by rule {}; needs a code: {code}\nmay ask: {callers}\nwould run:\n",
                quote(&plan.rule.name)
            ));
            for (key, value) in run_lines(spec) {
                out.push_str(&format!("  {key}: {value}\n"));
            }
        }
        _ => out.push_str(
            "refused: no rule matches (the agent answers 403 not_allowed to a valid code, 401 \
             without one)\n",
        ),
    }
    out.push_str("nothing was run\n");
    out
}

/// How the job would run, one setting a line; a new setting is one more line here and
/// one more key in [`run_json`].
fn run_lines(spec: &ExecSpec) -> Vec<(&'static str, String)> {
    let env = if spec.env.is_empty() {
        "the base environment only".to_string()
    } else {
        let added: Vec<String> = spec
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect();
        format!("the base environment plus {}", added.join(" "))
    };
    vec![
        ("argv", quoted(&spec.argv)),
        ("user", user_text(spec)),
        ("home", spec.home.display().to_string()),
        (
            "working directory",
            spec.cwd
                .as_ref()
                .map_or_else(|| "/".into(), |d| d.display().to_string()),
        ),
        ("environment", env),
        (
            "timeout",
            format!(
                "{} s, then SIGTERM to its process group and SIGKILL {} s later",
                spec.timeout.as_secs(),
                spec.kill_grace.as_secs()
            ),
        ),
        (
            "output kept",
            format!(
                "{} bytes of stdout and {} of stderr",
                spec.max_output_bytes, spec.max_output_bytes
            ),
        ),
        ("limits", limits_text(&spec.limits)),
        ("sandbox", sandbox_text(&spec.sandbox)),
    ]
}

fn limits_text(limits: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(bytes) = limits.memory_max {
        parts.push(format!("memory {bytes} bytes, swap included"));
    }
    if let Some(n) = limits.tasks_max {
        parts.push(format!("{n} tasks"));
    }
    if let Some(p) = limits.cpu_max_percent {
        parts.push(format!("{p}% of one CPU"));
    }
    if parts.is_empty() {
        return "none (its own cgroup still ends every process it starts)".into();
    }
    format!(
        "{} in its own cgroup (the job is refused where the kernel cannot enforce one)",
        parts.join(", ")
    )
}

fn sandbox_text(sandbox: &Sandbox) -> String {
    let mut parts = Vec::new();
    if sandbox.read_only {
        parts.push(match sandbox.writable.as_slice() {
            [] => "every mount read-only (to write, list the paths in sandbox.writable)".into(),
            paths => {
                let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                format!("every mount read-only but {}", shown.join(", "))
            }
        });
    }
    if sandbox.private_network {
        parts.push("no network (a loopback that is down)".to_string());
    }
    if sandbox.private_tmp {
        parts.push("a private /tmp".to_string());
    }
    if sandbox.no_new_privileges {
        parts.push("no new privileges (setuid programs do not raise them)".to_string());
    }
    if parts.is_empty() {
        return "none".into();
    }
    parts.join("; ")
}

fn user_name(uid: u32) -> String {
    sys::lookup_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

fn user_text(spec: &ExecSpec) -> String {
    match (spec.uid, spec.gid) {
        (Some(uid), Some(gid)) => format!(
            "{} (uid {uid}, gid {gid}, no supplementary groups)",
            user_name(uid)
        ),
        (Some(uid), None) => format!("{} (uid {uid})", user_name(uid)),
        (None, Some(gid)) => {
            let uid = sys::euid();
            format!("{} (uid {uid}, the agent's own), gid {gid}", user_name(uid))
        }
        (None, None) => {
            let uid = sys::euid();
            format!(
                "{} (uid {uid}), the agent's own user and groups",
                user_name(uid)
            )
        }
    }
}

fn run_json(spec: &ExecSpec) -> Value {
    let uid = spec.uid.unwrap_or_else(sys::euid);
    let env: Map<String, Value> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    json!({
        "argv": spec.argv,
        "user": user_name(uid),
        "uid": uid,
        "gid": spec.gid,
        "home": spec.home,
        "cwd": spec.cwd,
        "env": env,
        "timeout_s": spec.timeout.as_secs(),
        "kill_grace_s": spec.kill_grace.as_secs(),
        "max_output_bytes": spec.max_output_bytes,
        "limits": {
            "memory_max": spec.limits.memory_max,
            "tasks_max": spec.limits.tasks_max,
            "cpu_max_percent": spec.limits.cpu_max_percent,
        },
        "sandbox": {
            "read_only": spec.sandbox.read_only,
            "writable": spec.sandbox.writable,
            "network": !spec.sandbox.private_network,
            "private_tmp": spec.sandbox.private_tmp,
            "no_new_privileges": spec.sandbox.no_new_privileges,
        },
    })
}

fn as_json(asked: &Asked, e: &Explanation<'_>, spec: Option<&ExecSpec>) -> Value {
    let tried: Vec<Value> = e
        .tried
        .iter()
        .map(|attempt| match &attempt.refused {
            None => json!({"rule": attempt.rule.name, "matched": true}),
            Some(r) => json!({
                "rule": attempt.rule.name,
                "matched": false,
                "position": r.position,
                "word": r.word,
                "why": r.why,
            }),
        })
        .collect();
    let (command, argv) = match asked {
        Asked::Command(command) => (Some(command), None),
        Asked::Argv(argv) => (None, Some(argv)),
    };
    let plan = e.plan.as_ref();
    json!({
        "command": command,
        "argv": argv,
        "words": e.words,
        "split_error": e.split_error.as_ref().map(ToString::to_string),
        "tried": tried,
        "allowed": plan.is_some(),
        "rule": plan.map(|p| &p.rule.name),
        "needs_code": plan.map(|p| !p.rule.no_pin),
        "run": spec.map(run_json),
    })
}
