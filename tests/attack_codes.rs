//! Attack: guess or bend the code — brute force from parallel clients, malformed codes,
//! codes outside the skew window. (A clock jumping backwards is faked in auth.rs's unit
//! test `clock_jumping_backwards`, where `now` is a parameter.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Agent, now, now_ms};
use serde_json::json;
use sudo_agent::totp;

#[test]
fn brute_force_from_four_clients_for_a_minute_gets_five_tries_per_lockout() {
    let agent = Agent::start(
        "c-brute",
        json!({"throttle": {"max_failures": 5, "window_s": 60, "lockout_s": 30, "lockout_max_s": 3600}}),
    );
    let counts: [AtomicUsize; 3] = Default::default(); // 401, 429, anything else
    let tried = AtomicUsize::new(0);
    let until = Instant::now() + Duration::from_secs(60);
    std::thread::scope(|s| {
        for client in 0..4u64 {
            let (agent, counts, tried) = (&agent, &counts, &tried);
            s.spawn(move || {
                let mut guess = client * 250_000;
                while Instant::now() < until {
                    // Never the real code of the window: a lucky hit would end the attack.
                    let valid: Vec<String> = (0..3)
                        .map(|i| totp::code_at(&agent.key, now() + i * 30 - 30, &agent.params))
                        .collect();
                    let code = format!("{:06}", guess % 1_000_000);
                    guess += 1;
                    if valid.contains(&code) {
                        continue;
                    }
                    let r = agent.post_json("/run", &json!({"pin": code, "command": "true"}));
                    let slot = match r.status {
                        401 => 0,
                        429 => {
                            assert!(r.header("Retry-After").is_some());
                            1
                        }
                        _ => 2,
                    };
                    counts[slot].fetch_add(1, Ordering::SeqCst);
                    tried.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let [wrong, locked, other] = counts.map(|c| c.into_inner());
    // t=0: 5 wrong, locked 30 s; t=30: 5 wrong, locked 60 s; nothing else in a minute.
    assert_eq!(other, 0);
    assert!(
        (5..=10).contains(&wrong),
        "{wrong} codes were checked in 60 s"
    );
    assert!(locked > 100, "only {locked} refusals: was the agent slow?");
    let log = agent.log();
    assert!(
        log.contains("LOCKED OUT for 30s after 5 failed codes"),
        "{log}"
    );
    assert_eq!(log.matches("INVALID PIN attempt").count(), wrong);
    assert!(!log.contains("EXECUTING"));
    let state = agent.auth_state();
    assert_eq!(
        state["lockouts"].as_u64(),
        Some((wrong as u64).div_ceil(5)),
        "{state}"
    );
    assert!(agent.health_ok());
    println!(
        "brute force: {wrong} checked, {locked} locked out, {} requests",
        tried.into_inner()
    );
}

#[test]
fn bent_codes_and_codes_outside_the_window_are_wrong_codes() {
    let agent = Agent::start("c-shapes", json!({"throttle": {"max_failures": 100}}));
    // Stay clear of a step boundary, so "now" is the same step for the whole test.
    while now_ms() % 30_000 > 20_000 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = now();
    let code = totp::code_at(&agent.key, t, &agent.params);
    let at = |steps: i64| {
        totp::code_at(
            &agent.key,
            t.saturating_add_signed(steps * 30),
            &agent.params,
        )
    };
    let fullwidth: String = code
        .chars()
        .map(|c| char::from_u32(c as u32 - 0x30 + 0xff10).unwrap())
        .collect();
    let arabic: String = code
        .chars()
        .map(|c| char::from_u32(c as u32 - 0x30 + 0x0660).unwrap())
        .collect();
    let bent = [
        format!(" {code}"),
        format!("{code} "),
        format!("{} {}", &code[..3], &code[3..]),
        format!("{code}\n"),
        format!("+{}", &code[1..]),
        format!("+{code}"),
        format!("-{}", &code[1..]),
        code[..5].to_string(),
        format!("{code}000"),
        format!("0{code}"),
        fullwidth,
        arabic,
        format!("{code}\u{0}"),
        format!("{}.{}", &code[..3], &code[3..]),
        code.parse::<u32>().unwrap().to_string() + "x",
        at(2),
        at(-2),
        at(10),
    ];
    let mut sent = 0;
    for pin in &bent {
        if *pin == code || *pin == at(1) || *pin == at(-1) {
            continue; // a ±2 step code equal to a valid one: one in a million
        }
        let r = agent.post_json("/run", &json!({"pin": pin, "command": "true"}));
        assert_eq!(r.status, 401, "{pin:?}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_code");
        sent += 1;
    }
    // Past the timestamp (whose digits may hold anything), no line holds the code.
    let log = agent.log();
    let messages = log
        .lines()
        .map(|l| l.split_once("] ").map_or(l, |(_, m)| m));
    assert!(
        messages.clone().all(|m| !m.contains(&code)),
        "a code reached the log: {log}"
    );
    assert_eq!(
        messages.filter(|m| m.starts_with("INVALID PIN")).count(),
        sent
    );
    // None of them spent the real code: it still works once, then never again.
    let r = agent.post_json("/run", &json!({"pin": code, "command": "true"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = agent.post_json("/run", &json!({"pin": code, "command": "true"}));
    assert_eq!(r.status, 401);
    // The next step is inside the window and newer; the previous one then is older.
    assert_eq!(
        agent
            .post_json("/run", &json!({"pin": at(1), "command": "true"}))
            .status,
        200
    );
    assert_eq!(
        agent
            .post_json("/run", &json!({"pin": at(-1), "command": "true"}))
            .status,
        401
    );
}

#[test]
fn codes_in_the_wrong_shape_are_never_echoed_and_are_spent() {
    // `{"pin": 614029}` was a 400 quoting serde's "invalid type: integer `614029`" into
    // the answer, the audit log and stderr (the journal), and the code stayed valid: a
    // reader of the journal could use it within its window.
    let agent = Agent::start(
        "c-shapes",
        json!({"totp": {"step_s": 3}, "throttle": {"max_failures": 100}}),
    );
    let none = "0".repeat(32);
    // (path, body) for a code `c` (digits) and `n` (the JSON number it becomes).
    let shapes: &[(&str, &str)] = &[
        ("/run", r#"{"pin": N, "command": "echo hi"}"#),
        ("/run", r#"{"command": "echo hi", "pin": N.0}"#),
        ("/run", r#"{"pin": ["C"], "argv": ["echo", "hi"]}"#),
        ("/run", r#"{"pin": {"code": N}, "command": "echo hi"}"#),
        ("/run", r#"{"pin": N, "command": 7}"#),
        ("/run", r#"{"pin": N, "sudo": true}"#),
        ("/job/NONE/cancel", r#"{"pin": N}"#),
    ];
    let mut codes = Vec::new();
    for (n, (path, shape)) in shapes.iter().enumerate() {
        let code = agent.fresh_code();
        let number = code.trim_start_matches('0').to_string();
        let body = shape.replace('C', &code).replace('N', &number);
        let r = agent.post(&path.replace("NONE", &none), &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["error"], "bad_request");
        assert!(!r.body.contains(&number), "{body} echoed: {}", r.body);
        // The code, sent properly at once (well inside its window), is refused as used.
        let reused_before = agent.log().matches("REUSED PIN attempt").count();
        let again = agent.post_json("/run", &json!({"pin": code, "command": "echo hi"}));
        assert_eq!(again.status, 401, "shape {n} {body}: the code still worked");
        assert_eq!(
            agent.log().matches("REUSED PIN attempt").count(),
            reused_before + 1,
            "shape {n} {body}: refused, but not as a spent code"
        );
        codes.push(code);
    }
    let (log, stderr) = (agent.log(), agent.stderr());
    assert!(
        log.contains(": pin must be a string (the code as text"),
        "{log}"
    );
    assert!(
        log.contains("INVALID PIN attempt for command: echo hi"),
        "{log}"
    );
    for code in &codes {
        let number = code.trim_start_matches('0');
        for text in [&log, &stderr] {
            assert!(!text.contains(number), "{code} reached a log:\n{text}");
        }
    }
}
