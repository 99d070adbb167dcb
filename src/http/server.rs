//! The HTTP event loop: one thread, `mio` readiness, `httparse` heads. Everything that
//! arrives from the network is bounded here: connections, head and body sizes, and the
//! time a client may take. Jobs never block the loop: a request that waits for a job
//! is parked, and job threads wake the loop through a `mio::Waker`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::message::{ApiError, Request, Response};

/// Most connections held at once; beyond, the least recently active one is closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Request line plus headers.
pub const MAX_HEAD: usize = 8 * 1024;
/// Request body (decided from Content-Length before any of it is read).
pub const MAX_BODY: usize = 64 * 1024;
/// Headers parsed per request; more is answered with 431.
const MAX_HEADERS: usize = 32;
/// Time from a request's first byte to its last.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive connection with no request in flight is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After an error response, unread input is drained this long so the client sees the
/// response instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
/// Input buffers a lingering connection may drain per wake-up (about 1 MiB).
const LINGER_ROUNDS: usize = 16;
/// Wait before retrying accept() after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const FIRST_CONN: usize = 3;

/// What the routes answer: now, or once a job ends (or the wait runs out).
#[derive(Debug)]
pub enum Reply {
    Now(Response),
    /// Park the request until `Handler::on_wake` names `job` (a job id, or another key
    /// the handler chose) or `until` passes; then ask `Handler::answer_wait`.
    Wait {
        job: String,
        until: Instant,
        kind: WaitKind,
    },
}

/// Why a connection waits: the submit's `wait`, `GET /job/<id>?wait=`, or its own state
/// being made durable (a used code, a counted failure) by a writer thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitKind {
    Submit,
    Poll,
    Durable,
}

/// The application behind the loop (`api::Agent`).
pub trait Handler {
    /// Answers one complete request.
    fn handle(&mut self, request: Request, now: Instant) -> Reply;
    /// The waker fired: collect events, return the keys of parked requests with news.
    fn on_wake(&mut self) -> Vec<String>;
    /// Answers a parked request that had news or whose wait (`until`) ran out, or parks
    /// it again (with a later `until`).
    fn answer_wait(&mut self, job: &str, kind: WaitKind, until: Instant) -> Reply;
    /// Called once a loop turn; lets the application ping a watchdog or decide to exit
    /// when idle. Returns true to stop serving.
    fn tick(&mut self, now: Instant, open_connections: usize) -> bool;
    /// SIGTERM/SIGINT arrived: stop jobs before the loop returns.
    fn shutdown(&mut self);
}

enum Phase {
    /// Reading a request (possibly none started yet).
    Reading,
    /// A complete request waits for a job.
    Waiting {
        job: String,
        until: Instant,
        kind: WaitKind,
        keep_alive: bool,
    },
    /// A response is being written; then read the next request or close.
    Writing { close: bool },
    /// Response sent, write side shut: drain input briefly, then close.
    Lingering { until: Instant },
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    phase: Phase,
    /// When the first byte of the request being read arrived.
    request_started: Option<Instant>,
    last_active: Instant,
    continue_sent: bool,
    peer_closed: bool,
    /// Has sent at least one whole request: a client, not just an open socket.
    served: bool,
}

/// A parsed request head (pub for the fuzz targets).
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub target: String,
    /// Bytes of the head, terminating blank line included.
    pub len: usize,
    pub content_length: usize,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// The listening socket, the poller and the waker job threads use to reach the loop.
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    waker: Arc<Waker>,
}

impl Server {
    /// Takes a bound listener (from `bind` or from systemd's socket activation).
    pub fn new(listener: std::net::TcpListener) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            poll,
            listener,
            waker,
        })
    }

    /// Given to job threads: `wake()` makes the loop call `Handler::on_wake`.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Serves until a stop signal or `Handler::tick` says so. `signals`, when given, is
    /// the read end of the pipe the SIGTERM/SIGINT handler writes to.
    pub fn run<H: Handler>(
        mut self,
        handler: &mut H,
        signals: Option<UnixStream>,
    ) -> io::Result<()> {
        let mut signals = signals;
        if let Some(sig) = signals.as_mut() {
            self.poll
                .registry()
                .register(sig, SIGNALS, Interest::READABLE)?;
        }
        let mut loop_ = Loop {
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            accept_retry_at: None,
        };
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            if handler.tick(now, loop_.conns.len()) {
                return Ok(());
            }
            // Wake at least once a second so `tick` (watchdog, idle exit) keeps running.
            let timeout = loop_
                .next_deadline(now)
                .map_or(Duration::from_secs(1), |d| {
                    d.saturating_duration_since(now).min(Duration::from_secs(1))
                });
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => loop_.accept(&self.listener, self.poll.registry()),
                    WAKER => {
                        let ended: HashSet<String> = handler.on_wake().into_iter().collect();
                        loop_.answer_ended(&ended, handler);
                    }
                    SIGNALS => {
                        log::warn!("stop signal received; stopping jobs and exiting");
                        handler.shutdown();
                        return Ok(());
                    }
                    Token(t) => loop_.drive(t, handler),
                }
            }
            let now = Instant::now();
            if loop_.accept_retry_at.is_some_and(|at| at <= now) {
                loop_.accept_retry_at = None;
                loop_.accept(&self.listener, self.poll.registry());
            }
            loop_.expire(now, handler);
        }
    }
}

struct Loop {
    conns: HashMap<usize, Conn>,
    next_token: usize,
    accept_retry_at: Option<Instant>,
}

impl Loop {
    fn accept(&mut self, listener: &TcpListener, registry: &mio::Registry) {
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.conns.len() >= MAX_CONNECTIONS && !self.evict_one() {
                        // Every slot holds a parked request: refuse the newcomer.
                        continue;
                    }
                    let token = self.next_token;
                    self.next_token = self.next_token.wrapping_add(1).max(FIRST_CONN);
                    if let Err(err) = registry.register(
                        &mut stream,
                        Token(token),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("cannot watch connection from {peer}: {err}");
                        continue;
                    }
                    let now = Instant::now();
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            peer,
                            input: Vec::new(),
                            output: Vec::new(),
                            written: 0,
                            phase: Phase::Reading,
                            request_started: None,
                            last_active: now,
                            continue_sent: false,
                            served: false,
                            peer_closed: false,
                        },
                    );
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(err) => {
                    // EMFILE and friends: the loop must survive; free a slot, retry soon.
                    log::warn!("accept failed: {err}; retrying");
                    self.evict_one();
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Closes the least recently active connection that is not waiting for a job,
    /// preferring sockets that never sent a whole request: a flood of bare connects
    /// must not push out a client's idle keep-alive connection.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| !matches!(c.phase, Phase::Waiting { .. }))
            .min_by_key(|(_, c)| (c.served, c.last_active))
            .map(|(t, _)| *t);
        match victim {
            Some(token) => {
                self.conns.remove(&token);
                true
            }
            None => false,
        }
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let conn_deadline = self.conns.values().map(Conn::deadline).min();
        let retry = self.accept_retry_at;
        [conn_deadline, retry]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.max(now))
    }

    fn expire<H: Handler>(&mut self, now: Instant, handler: &mut H) {
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline() <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            match &conn.phase {
                Phase::Waiting {
                    job,
                    kind,
                    keep_alive,
                    until,
                } => {
                    let reply = handler.answer_wait(job, *kind, *until);
                    let keep_alive = *keep_alive;
                    conn.answer(reply, keep_alive);
                }
                Phase::Reading if !conn.input.is_empty() => {
                    conn.respond(&ApiError::Timeout.response(), false)
                }
                _ => {
                    self.conns.remove(&token);
                    continue;
                }
            }
            self.drive(token, handler);
        }
    }

    fn answer_ended<H: Handler>(&mut self, ended: &HashSet<String>, handler: &mut H) {
        if ended.is_empty() {
            return;
        }
        let ready: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(&c.phase, Phase::Waiting { job, .. } if ended.contains(job)))
            .map(|(t, _)| *t)
            .collect();
        for token in ready {
            if let Some(conn) = self.conns.get_mut(&token)
                && let Phase::Waiting {
                    job,
                    kind,
                    keep_alive,
                    until,
                } = &conn.phase
            {
                let reply = handler.answer_wait(job, *kind, *until);
                let keep_alive = *keep_alive;
                conn.answer(reply, keep_alive);
            }
            self.drive(token, handler);
        }
    }

    /// Moves one connection as far as it can go without blocking.
    fn drive<H: Handler>(&mut self, token: usize, handler: &mut H) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.step(handler).is_err() {
            self.conns.remove(&token);
        }
    }
}

/// `Err(())` means: close the connection now.
type Step = Result<(), ()>;

impl Conn {
    fn deadline(&self) -> Instant {
        match &self.phase {
            Phase::Reading => match self.request_started {
                Some(started) => started + REQUEST_TIMEOUT,
                None => self.last_active + IDLE_TIMEOUT,
            },
            Phase::Waiting { until, .. } => *until,
            Phase::Writing { .. } => self.last_active + REQUEST_TIMEOUT,
            Phase::Lingering { until } => *until,
        }
    }

    /// A response now, or parked (again) until its news or deadline.
    fn answer(&mut self, reply: Reply, keep_alive: bool) {
        match reply {
            Reply::Now(response) => self.respond(&response, keep_alive),
            Reply::Wait { job, until, kind } => {
                self.phase = Phase::Waiting {
                    job,
                    until,
                    kind,
                    keep_alive,
                }
            }
        }
    }

    fn respond(&mut self, response: &Response, keep_alive: bool) {
        let keep_alive = keep_alive && !self.peer_closed;
        self.output
            .extend_from_slice(&response.to_bytes(keep_alive));
        self.phase = Phase::Writing { close: !keep_alive };
    }

    fn step<H: Handler>(&mut self, handler: &mut H) -> Step {
        loop {
            self.flush()?;
            match &self.phase {
                Phase::Reading => {
                    self.fill()?;
                    if !self.input.is_empty() && self.request_started.is_none() {
                        self.request_started = Some(Instant::now());
                    }
                    match self.take_request() {
                        Ok(None) if self.peer_closed => return Err(()),
                        Ok(None) => return Ok(()),
                        Ok(Some((request, keep_alive))) => {
                            self.request_started = None;
                            self.served = true;
                            self.answer(handler.handle(request, Instant::now()), keep_alive);
                            if let Phase::Waiting { .. } = self.phase {
                                return Ok(());
                            }
                        }
                        Err(err) => {
                            crate::audit::bad_request(&self.peer.to_string(), &err.to_string());
                            self.respond(&err.response(), false);
                        }
                    }
                }
                Phase::Waiting { .. } => {
                    // Only to notice a client that hung up; pipelined bytes stay buffered.
                    self.fill()?;
                    return if self.peer_closed { Err(()) } else { Ok(()) };
                }
                Phase::Writing { close } => {
                    if self.written < self.output.len() {
                        return Ok(());
                    }
                    if *close {
                        let _ = self.stream.shutdown(Shutdown::Write);
                        self.phase = Phase::Lingering {
                            until: Instant::now() + LINGER,
                        };
                    } else {
                        self.phase = Phase::Reading;
                        self.continue_sent = false;
                    }
                }
                Phase::Lingering { .. } => {
                    // Edge-triggered: stopping at the input cap with bytes still queued
                    // means no further wake-up, and the slot stays taken until the
                    // linger deadline. Read on to WouldBlock; a client still sending
                    // after LINGER_ROUNDS buffers' worth is cut off instead.
                    for _ in 0..LINGER_ROUNDS {
                        self.input.clear();
                        self.fill()?;
                        if self.peer_closed || self.input.len() < MAX_HEAD + MAX_BODY {
                            self.input = Vec::new();
                            return if self.peer_closed { Err(()) } else { Ok(()) };
                        }
                    }
                    return Err(());
                }
            }
        }
    }

    /// Reads what the socket has, up to one head plus one body.
    fn fill(&mut self) -> Step {
        let mut chunk = [0u8; 8192];
        while self.input.len() < MAX_HEAD + MAX_BODY && !self.peer_closed {
            let room = (MAX_HEAD + MAX_BODY - self.input.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => self.peer_closed = true,
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    self.last_active = Instant::now();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        Ok(())
    }

    /// Writes what is pending; `Ok` when all is written or the socket is full.
    fn flush(&mut self) -> Step {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    self.written += n;
                    self.last_active = Instant::now();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(())
    }

    /// A complete request out of the input buffer, if one is there.
    fn take_request(&mut self) -> Result<Option<(Request, bool)>, ApiError> {
        let Some(head) = parse_head(&self.input)? else {
            return Ok(None);
        };
        let total = head.len + head.content_length;
        if self.input.len() < total {
            if head.expect_continue && !self.continue_sent {
                self.continue_sent = true;
                self.output
                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                let _ = self.flush();
            }
            if self.peer_closed {
                return Err(ApiError::BadRequest(
                    "the body ended before Content-Length bytes".into(),
                ));
            }
            return Ok(None);
        }
        let body = self.input[head.len..total].to_vec();
        self.input.drain(..total);
        let (path, query) = match head.target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (head.target, String::new()),
        };
        let request = Request {
            method: head.method,
            path,
            query,
            body,
            peer: self.peer,
        };
        Ok(Some((request, head.keep_alive)))
    }
}

/// Parses a request head; `Ok(None)` while it is incomplete.
pub fn parse_head(input: &[u8]) -> Result<Option<Head>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Err(ApiError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ApiError::HeadTooLarge),
        Err(err) => {
            return Err(ApiError::BadRequest(format!(
                "malformed HTTP/1.1 request: {err}"
            )));
        }
    };
    if len > MAX_HEAD {
        return Err(ApiError::HeadTooLarge);
    }
    let mut content_length: Option<usize> = None;
    let mut keep_alive = req.version == Some(1);
    let mut expect_continue = false;
    for header in req.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            // Digits only: no sign, no spaces inside, no overflow (a huge value is 413).
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::BadRequest(
                    "Content-Length is not a number".into(),
                ));
            }
            let n = value.parse::<usize>().unwrap_or(usize::MAX);
            if content_length.is_some_and(|old| old != n) {
                return Err(ApiError::BadRequest(
                    "conflicting Content-Length headers".into(),
                ));
            }
            content_length = Some(n);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ApiError::LengthRequired);
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if header.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY {
        return Err(ApiError::TooLarge);
    }
    Ok(Some(Head {
        method: req.method.unwrap_or("").to_string(),
        target: req.path.unwrap_or("/").to_string(),
        len,
        content_length,
        keep_alive,
        expect_continue,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, ApiError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn heads() {
        let h = head("POST /run HTTP/1.1\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.method.as_str(), h.target.as_str(), h.content_length),
            ("POST", "/run", 12)
        );
        assert!(h.keep_alive);
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 100000000000000\r\n\r\n").err(),
            Some(ApiError::TooLarge)
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n").err(),
            Some(ApiError::TooLarge)
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").err(),
            Some(ApiError::LengthRequired)
        );
        assert!(matches!(
            head("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            head("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            head("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(ApiError::BadRequest(_))
        ));
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(),
            Some(ApiError::HeadTooLarge)
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD + 10));
        assert_eq!(head(&long).err(), Some(ApiError::HeadTooLarge));
    }
}
