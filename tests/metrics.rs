//! `GET /metrics` after a known sequence of requests: every counter exact.

use std::collections::BTreeMap;

use crate::common::Agent;
use serde_json::json;

/// Sample lines as `name{labels}` → value; checks every line has the exposition shape.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP sudo_agent_") || rest.starts_with("TYPE sudo_agent_"),
                "{line}"
            );
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name = key.split('{').next().unwrap();
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{line}"
        );
        assert!(
            text.contains(&format!(
                "# TYPE {}",
                name.trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count")
            )),
            "no TYPE for {line}"
        );
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(
            out.insert(key.to_string(), value).is_none(),
            "duplicate {line}"
        );
    }
    out
}

#[test]
fn counters_match_a_known_sequence() {
    let agent = Agent::start(
        "metrics",
        json!({"totp": {"step_s": 1}, "throttle": {"max_failures": 2, "lockout_s": 30}}),
    );
    assert_eq!(agent.get("/health").status, 200);
    assert_eq!(
        agent
            .post_json("/run", &json!({"command": "uptime"}))
            .status,
        200
    );
    let code = agent.fresh_code();
    let r = agent.post_json("/run", &json!({"pin": code, "command": "echo hi"}));
    assert_eq!(r.status, 200);
    // `wait: 0` answers 202, or 200 when the job had already ended by the time its
    // submission was on disk and the loop looked (a busy machine); the pause makes
    // 202 the usual case, and the counters below follow whichever came.
    let r = agent.post_json(
        "/run",
        &json!({"pin": agent.fresh_code(), "argv": ["sh", "-c", "sleep 0.5; exit 3"], "wait": 0}),
    );
    assert!(matches!(r.status, 200 | 202), "{} {}", r.status, r.body);
    let ended_first = r.status == 200;
    if ended_first {
        assert_eq!(r.json()["status"], "failed", "{}", r.body);
    }
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        agent.get(&format!("/job/{id}?wait=10")).json()["status"],
        "failed"
    );
    let wrong = if agent.code() == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_eq!(
        agent
            .post_json("/run", &json!({"pin": wrong, "command": "echo x"}))
            .status,
        401
    );
    // The first code again: reused, the second failure, so a lockout begins.
    assert_eq!(
        agent
            .post_json("/run", &json!({"pin": code, "command": "echo x"}))
            .status,
        401
    );
    assert_eq!(
        agent
            .post_json("/run", &json!({"pin": wrong, "command": "echo x"}))
            .status,
        429
    );
    assert_eq!(agent.get("/job/not-an-id").status, 404);
    assert_eq!(agent.get("/nope").status, 404);
    assert_eq!(agent.post("/metrics", "").status, 405);
    assert_eq!(
        agent.get("/rules").status,
        404,
        "rules are private by default"
    );

    let r = agent.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = samples(&r.body);
    let (files, bytes) = std::fs::read_dir(agent.dir.path().join("results"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .fold((0, 0), |(n, b), len| (n + 1, b + len));
    let expected: &[(&str, f64)] = &[
        (
            r#"sudo_agent_http_requests_total{route="/health",status="200"}"#,
            1.0,
        ),
        (
            r#"sudo_agent_http_requests_total{route="/run",status="200"}"#,
            if ended_first { 3.0 } else { 2.0 },
        ),
        (
            r#"sudo_agent_http_requests_total{route="/job",status="200"}"#,
            1.0,
        ),
        (
            r#"sudo_agent_http_requests_total{route="/run",status="401"}"#,
            2.0,
        ),
        (
            r#"sudo_agent_http_requests_total{route="/run",status="429"}"#,
            1.0,
        ),
        (
            r#"sudo_agent_http_requests_total{route="/job",status="404"}"#,
            1.0,
        ),
        (
            r#"sudo_agent_http_requests_total{route="other",status="404"}"#,
            1.0,
        ),
        (
            r#"sudo_agent_http_requests_total{route="/rules",status="404"}"#,
            1.0,
        ),
        (
            r#"sudo_agent_http_requests_total{route="/metrics",status="405"}"#,
            1.0,
        ),
        (r#"sudo_agent_codes_total{outcome="accepted"}"#, 2.0),
        (r#"sudo_agent_codes_total{outcome="invalid"}"#, 1.0),
        (r#"sudo_agent_codes_total{outcome="reused"}"#, 1.0),
        (r#"sudo_agent_codes_total{outcome="locked_out"}"#, 1.0),
        (r#"sudo_agent_codes_total{outcome="unavailable"}"#, 0.0),
        ("sudo_agent_lockouts_total", 1.0),
        (r#"sudo_agent_jobs_total{status="succeeded"}"#, 2.0),
        (r#"sudo_agent_jobs_total{status="failed"}"#, 1.0),
        (r#"sudo_agent_jobs_total{status="timed_out"}"#, 0.0),
        (r#"sudo_agent_jobs_total{status="cancelled"}"#, 0.0),
        (r#"sudo_agent_job_duration_seconds_bucket{le="+Inf"}"#, 3.0),
        ("sudo_agent_job_duration_seconds_count", 3.0),
        ("sudo_agent_jobs_running", 0.0),
        ("sudo_agent_jobs_queued", 0.0),
        ("sudo_agent_results_files", files as f64),
        ("sudo_agent_results_bytes", bytes as f64),
    ];
    for (key, want) in expected {
        assert_eq!(m.get(*key), Some(want), "{key} in\n{}", r.body);
    }
    let accepted_202 = m.get(r#"sudo_agent_http_requests_total{route="/run",status="202"}"#);
    assert_eq!(accepted_202, (!ended_first).then_some(&1.0), "{}", r.body);
    assert_eq!(files, 3);
    let requests: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("sudo_agent_http_requests_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        requests, 12.0,
        "no request counted twice or missed:\n{}",
        r.body
    );
    assert!(m["sudo_agent_locked_out_seconds"] > 0.0);
    // No code, command or job id ever shows up.
    for secret in [code.as_str(), "echo hi", id.as_str()] {
        assert!(!r.body.contains(secret), "{secret} leaked into /metrics");
    }
    // The scrape itself is counted once answered.
    let again = samples(&agent.get("/metrics").body);
    assert_eq!(
        again[r#"sudo_agent_http_requests_total{route="/metrics",status="200"}"#],
        1.0
    );
}
