//! Attack: taking every connection slot with requests the loop must hold (long-polls on
//! a running job, idle keep-alive clients, bare sockets). Parked requests are capped,
//! and when the 256 slots are full a newcomer always gets one: sockets that never sent
//! a request go first, then the oldest parked request (answered 202 with its poll URL
//! before it is closed), then idle keep-alive clients. A fresh `/health` gets through
//! within a second throughout.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Agent, fresh_get, read_answer, status_of};
use serde_json::{Value, json};

const HEALTH_LIMIT: Duration = Duration::from_secs(1);

fn sleep_rule() -> Value {
    json!({"rules": [{"name": "sleep", "argv": ["/bin/sleep", "*"], "no_pin": true}]})
}

/// Starts `sleep secs` with `wait: 0` on a connection of its own; returns the job id.
fn sleeping_job(agent: &Agent, secs: u32) -> String {
    let body = json!({"command": format!("sleep {secs}"), "wait": 0}).to_string();
    let answer = agent.raw(
        format!(
            "POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(status_of(&answer), 202, "{answer}");
    let json: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    json["id"].as_str().unwrap().to_string()
}

fn long_poll(agent: &Agent, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(agent.addr).unwrap();
    write!(
        s,
        "GET /job/{id}?wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    s
}

/// Whether the agent has sent nothing on `s` yet and not closed it.
fn silent(mut s: &TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut byte = [0u8; 1];
    matches!(s.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

/// The answer a parked poll got when it was cut short: 202 and where to poll again.
fn assert_poll_again(status: u16, body: &[u8], id: &str) {
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(body));
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["poll"], format!("/job/{id}"), "{body}");
    assert_eq!(body["status"], "running", "{body}");
}

/// A client that asked `/health` and keeps its connection open, idle.
fn keep_alive_client(agent: &Agent) -> TcpStream {
    let mut s = TcpStream::connect(agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut s, false).map(|a| a.0), Some(200));
    s
}

#[test]
fn two_hundred_and_sixty_long_polls_on_a_running_job_leave_room_for_health() {
    let agent = Agent::start("slots-polls", sleep_rule());
    let id = sleeping_job(&agent, 4);
    let mut polls: Vec<TcpStream> = (0..260).map(|_| long_poll(&agent, &id)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let (status, _, took) = fresh_get(agent.addr, "/health");
        assert_eq!(status, 200);
        assert!(took < HEALTH_LIMIT, "/health took {took:?}");
    }
    // Each poll ends one of three ways: cut short at once (202, poll again), answered
    // when the job ends (200), or closed unanswered because its request had not been
    // read when its slot was needed.
    let (mut early, mut ended, mut closed) = (0, 0, 0);
    for s in &mut polls {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        match read_answer(s, false) {
            Some((200, _, body)) => {
                let job: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(job["status"], "succeeded", "{job}");
                ended += 1;
            }
            Some((status, _, body)) => {
                assert_poll_again(status, &body, &id);
                early += 1;
            }
            None => closed += 1,
        }
    }
    println!(
        "260 long-polls: {early} cut short (202), {ended} answered at the end, {closed} closed"
    );
    assert!(ended <= 128, "{ended} parked on one job at once");
    assert!(early >= 260 - 128 - 10, "{early} cut short");
    assert!(closed <= 10, "{closed} closed unanswered");
}

#[test]
fn a_full_table_gives_way_oldest_parked_first_and_never_to_bare_sockets() {
    let agent = Agent::start("slots-order", sleep_rule());
    let id = sleeping_job(&agent, 30);
    let mut parked: Vec<TcpStream> = (0..100)
        .map(|_| {
            let s = long_poll(&agent, &id);
            std::thread::sleep(Duration::from_millis(3));
            s
        })
        .collect();
    let mut idle: Vec<TcpStream> = (0..156).map(|_| keep_alive_client(&agent)).collect();
    // 256 slots taken: each newcomer (kept open, so the table stays full) costs the
    // oldest parked request its slot.
    for _ in 0..3 {
        let started = Instant::now();
        idle.push(keep_alive_client(&agent));
        let took = started.elapsed();
        assert!(took < HEALTH_LIMIT, "/health took {took:?}");
    }
    let mut evicted = Vec::new();
    for (n, s) in parked.iter_mut().enumerate() {
        if silent(s) {
            continue;
        }
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (status, head, body) = read_answer(s, false).unwrap();
        assert_poll_again(status, &body, &id);
        assert!(head.contains("Connection: close"), "{head}");
        let mut rest = Vec::new();
        assert_eq!(
            s.read_to_end(&mut rest).unwrap_or(0),
            0,
            "closed after the answer"
        );
        evicted.push(n);
    }
    assert_eq!(evicted.len(), 3, "evicted {evicted:?}");
    assert!(
        evicted.iter().all(|&n| n < 10),
        "not the oldest: {evicted:?}"
    );

    // Sockets that never send a request push out one more parked request (the first
    // finds no other bare socket), then only each other.
    let bare: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(agent.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let still_parked = parked.iter().filter(|s| silent(s)).count();
    assert!(
        still_parked >= 96,
        "bare sockets evicted parked requests: {still_parked} left"
    );
    for s in &mut idle {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        assert_eq!(
            read_answer(s, false).map(|a| a.0),
            Some(200),
            "idle client closed"
        );
    }
    drop(bare);
    // Ends the sleeping job with the agent (TERM to its group), leaving nothing behind.
    drop(parked);
    drop(idle);
    let mut agent = agent;
    assert!(agent.terminate().success());
}
