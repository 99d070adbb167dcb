//! Bad input over HTTP: each gets its own error and the agent keeps answering /health.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Agent, status_of};
use serde_json::json;

#[test]
fn malformed_bodies_get_400_and_the_agent_lives_on() {
    let agent = Agent::start("badjson", json!({}));
    let cases: &[(&str, &str)] = &[
        ("{not json", "malformed JSON"),
        ("", "malformed JSON"),
        (
            r#"{"pin": 123456, "command": "uptime"}"#,
            "pin must be a string",
        ),
        (r#"{"command": ["uptime"]}"#, "command must be a string"),
        (
            r#"{"command": "uptime", "argv": ["uptime"]}"#,
            "exactly one",
        ),
        (r#"{"pin": "123456"}"#, "exactly one"),
        (r#"{"command": "upt\u0000ime"}"#, "NUL"),
        (r#"{"argv": ["/usr/bin/uptime", "a\u0000"]}"#, "NUL"),
        (r#"{"argv": []}"#, "argv must hold"),
        (r#"{"command": "uptime", "wait": -1}"#, "wait"),
        (r#"{"command": "uptime", "sudo": true}"#, "unknown field"),
        (r#"{"command": "echo 'unterminated"}"#, "split"),
    ];
    for (body, needle) in cases {
        let r = agent.post("/run", body);
        assert_eq!(r.status, 400, "{body} → {}", r.body);
        let err = r.json();
        assert_eq!(err["error"], "bad_request", "{body}");
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{body} → {}",
            err["message"]
        );
    }
    let long = "a".repeat(5000);
    assert_eq!(
        agent.post_json("/run", &json!({"command": long})).status,
        400
    );
    assert!(agent.health_ok());
    assert!(
        agent.log().contains("BAD REQUEST from 127.0.0.1"),
        "{}",
        agent.log()
    );
}

#[test]
fn oversized_bodies_are_413_before_being_read() {
    let agent = Agent::start("big", json!({}));
    let body = format!(r#"{{"command": "{}"}}"#, "x".repeat(200_000));
    let r = agent.post("/run", &body);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"], "too_large");

    let raw = agent.raw(
        b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000000\r\n\r\n{\"command\":",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&raw), 413, "{raw}");
    assert!(agent.health_ok());
}

#[test]
fn protocol_abuse_gets_clear_statuses() {
    let agent = Agent::start("proto", json!({}));
    let t = Duration::from_secs(8);
    assert_eq!(
        status_of(&agent.raw(
            b"POST /run HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            t
        )),
        411
    );
    assert_eq!(status_of(&agent.raw(b"GET /\r\n\r\n", t)), 400, "HTTP/0.9");
    assert_eq!(
        status_of(&agent.raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", t)),
        400,
        "HTTP/2 preface"
    );
    let many: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(
        status_of(&agent.raw(format!("GET /health HTTP/1.1\r\n{many}\r\n").as_bytes(), t)),
        431
    );
    let line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(1 << 20));
    assert_eq!(status_of(&agent.raw(line.as_bytes(), t)), 431);
    assert_eq!(
        status_of(&agent.raw(b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n", t)),
        404
    );
    let r = agent.raw(b"DELETE /run HTTP/1.1\r\nConnection: close\r\n\r\n", t);
    assert_eq!(status_of(&r), 405);
    assert!(r.contains("Allow: POST"), "{r}");
    // HEAD is GET without the body: here the GET's 405, head only.
    let r = agent.raw(b"HEAD /run HTTP/1.1\r\nConnection: close\r\n\r\n", t);
    assert_eq!(status_of(&r), 405);
    assert!(r.contains("Allow: POST") && r.ends_with("\r\n\r\n"), "{r}");
    assert_eq!(
        content_length(&r),
        content_length(&agent.raw(b"GET /run HTTP/1.1\r\nConnection: close\r\n\r\n", t))
    );
    assert_eq!(
        status_of(&agent.raw(
            b"GET /job/0123456789abcdef0123456789abcdef HTTP/1.0\r\n\r\n",
            t
        )),
        404
    );
    // A request that stops half-way gets 408 after 5 s.
    let started = Instant::now();
    let r = agent.raw(
        b"POST /run HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"comm",
        t,
    );
    assert_eq!(status_of(&r), 408, "{r}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(agent.health_ok());
}

fn content_length(raw: &str) -> usize {
    raw.lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {raw}"))
}

#[test]
fn head_answers_the_gets_head_and_no_body() {
    let agent = Agent::start("head", json!({}));
    let t = Duration::from_secs(5);
    let id = agent
        .post_json("/run", &json!({"command": "uptime"}))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let get = agent.raw(
        format!("GET /job/{id} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
        t,
    );
    let head = agent.raw(
        format!("HEAD /job/{id} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
        t,
    );
    assert_eq!(status_of(&head), 200, "{head}");
    let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
    assert_eq!(content_length(&head), get_body.len());
    assert_eq!(
        head,
        format!("{get_head}\r\n\r\n"),
        "the GET's head, nothing after it"
    );
    // On a kept-alive connection the next answer starts right after the head: a body
    // there would be read as the start of the next answer (the old `HEAD /health`).
    let r = agent.raw(
        b"HEAD /health HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n",
        t,
    );
    let (first, rest) = r.split_once("\r\n\r\n").unwrap();
    assert_eq!(status_of(first), 200, "{r}");
    assert!(content_length(first) > 0, "{r}");
    assert!(rest.starts_with("HTTP/1.1 404"), "{r}");
}

#[test]
fn pipelined_and_expect_continue_requests_are_served() {
    let agent = Agent::start("pipeline", json!({}));
    let raw = agent.raw(
        b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 3, "{raw}");

    let mut s = TcpStream::connect(agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = br#"{"command":"uptime"}"#;
    write!(s, "POST /run HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", body.len())
        .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(body).unwrap();
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert!(rest.contains("HTTP/1.1 200 OK"), "{rest}");
}

#[test]
fn three_hundred_half_sent_requests_do_not_starve_health() {
    let agent = Agent::start("halfsent", json!({}));
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(agent.addr).unwrap();
        s.write_all(b"POST /run HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"com")
            .unwrap();
        held.push(s);
    }
    let started = Instant::now();
    assert!(agent.health_ok());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "/health took {took:?} with 300 half-sent requests open"
    );
    // The loop, the journal and audit writers, the users thread and the mounts thread
    // (the start-up probe kept a read-only namespace; qemu-user adds one of its own).
    let threads = crate::common::threads(agent.pid());
    assert!(
        threads <= 5 + usize::from(crate::common::emulated()),
        "the loop must not spawn threads per connection: {threads}"
    );
    drop(held);
}

#[test]
fn a_flood_of_bad_requests_cannot_flood_the_audit_log() {
    let agent = Agent::start("logflood", json!({}));
    let started = Instant::now();
    for _ in 0..300 {
        assert_eq!(agent.post("/run", "{not json").status, 400);
    }
    // A burst of 50, then one more per second the flood took (slow under emulation).
    let most = 50 + started.elapsed().as_secs() as usize + 1;
    let lines = agent.log().matches("BAD REQUEST from").count();
    assert!(
        (50..=most).contains(&lines),
        "{lines} BAD REQUEST lines for 300 bad requests (at most {most})"
    );
    // The next line of that kind, once the budget refills, says how many were left out.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(agent.post("/run", "{not json").status, 400);
    let log = agent.log();
    assert!(log.contains("like it not logged)"), "{log}");
    assert!(agent.health_ok());
}

#[test]
fn a_flood_of_bare_connects_does_not_push_out_a_keep_alive_client() {
    let agent = Agent::start("evict", json!({}));
    let mut client = TcpStream::connect(agent.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ask = |s: &mut TcpStream| {
        s.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(ask(&mut client).starts_with("HTTP/1.1 200"));
    // 300 sockets that never send a byte: 256 slots, so 44+ must be closed for them.
    let flood: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(agent.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let again = ask(&mut client);
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "the keep-alive client was closed: {again:?}"
    );
    drop(flood);
}

#[test]
fn worst_case_json_bodies_stay_within_a_few_mebibytes() {
    // Bodies are decoded into JSON values (so no message quotes a value): the densest
    // 64 KiB bodies make the most values. Each is refused; memory stays bounded.
    let agent = Agent::start("badjson-dense", json!({}));
    let room = sudo_agent::testing::MAX_BODY - 16;
    let many = |item: &str| vec![item; room / (item.len() + 1)].join(",");
    let keys: Vec<String> = (0..room / 10).map(|n| format!("\"{n}\":0")).collect();
    let bodies = [
        format!(r#"{{"pin":[{}]}}"#, many("[]")),
        format!(r#"{{"pin":[{}]}}"#, many("0")),
        format!(r#"{{"pin":[{}]}}"#, many(r#""""#)),
        format!(r#"{{"pin":[{}]}}"#, many("{}")),
        format!(r#"{{"argv":[{}]}}"#, many(r#""""#)),
        format!("{{{}}}", keys.join(",")),
    ];
    let before = crate::common::rss_kib(agent.pid());
    for _ in 0..3 {
        for body in &bodies {
            assert!(
                body.len() <= sudo_agent::testing::MAX_BODY,
                "{}",
                body.len()
            );
            assert_eq!(agent.post("/run", body).status, 400);
        }
    }
    let grown = crate::common::rss_kib(agent.pid()).saturating_sub(before);
    assert!(agent.health_ok());
    assert!(
        grown < 8 * 1024 + crate::common::rss_allowance_kib(),
        "RSS grew by {grown} KiB"
    );
    eprintln!("dense bodies: RSS {before} KiB, +{grown} KiB");
}
