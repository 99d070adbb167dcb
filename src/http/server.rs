//! The HTTP event loop: one thread, `mio` readiness, `httparse` heads. Everything that
//! arrives from the network is bounded here: connections, head and body sizes, the time
//! a client may take to send and to read, the requests parked at once, and the bytes of
//! answers held for clients. Jobs never block the loop: a request that waits for one is
//! parked, and job threads wake the loop through a `mio::Waker`.

use std::collections::{HashMap, HashSet};
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::browser::{Gate, Provenance};
use super::head::{MAX_BODY, MAX_HEAD, parse_head};
use super::message::{ApiError, Body, Peer, Request, Response};
use super::stream::Stream;
use crate::policy::Caller;

/// Most connections held at once; beyond, one is closed for the newcomer (see
/// `Loop::evict_for_slot` for which).
pub const MAX_CONNECTIONS: usize = 256;
/// Requests parked at once, and parked on any one thing (a job); past either, the
/// oldest of them is answered early (a job still running: 202 with its poll URL).
const MAX_PARKED: usize = 192;
const MAX_PARKED_ON_ONE: usize = 128;
/// Answers up to this size always go out; larger ones must fit `send_queue_bytes`.
const SMALL_ANSWER: usize = 16 * 1024;
/// A connection whose answer has not moved while the loop waited this long for events
/// is a slow reader: closed when the send queue needs room. Counted in the loop's idle
/// time, so a moment the loop spent busy (encoding a large answer) is nobody's stall.
const STALLED: Duration = Duration::from_secs(1);
/// Time from a request's first byte to its last, and the longest an answer may go
/// without the client reading any of it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive connection with no request in flight is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After an error response, unread input is drained this long so the client sees the
/// response instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
/// Input buffers a lingering connection may drain per wake-up (about 1 MiB).
const LINGER_ROUNDS: usize = 16;
/// Kernel send buffer per connection (doubled by the kernel): by default it grows to
/// 4 MiB, so 160 clients that never read would pin 640 MiB of kernel memory, and the
/// loop would spend seconds copying into it.
const SEND_BUFFER: usize = 128 * 1024;
/// Wait before retrying accept() after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const UNIX_LISTENER: Token = Token(3);
const FIRST_CONN: usize = 4;

/// What the routes answer: now, or once what the request waits for is ready (or the
/// wait runs out).
#[derive(Debug)]
pub enum Reply {
    Now(Response),
    /// Park the request until `Handler::on_wake` names `on` (a job id, or anything else
    /// the handler wakes), or until `until`; `kind` goes back to the handler.
    Wait {
        on: String,
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

/// Why a parked request is answered now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// `Handler::on_wake` named what it waits for.
    Ready,
    /// Its wait ran out.
    Deadline,
    /// Too many requests are parked, or its slot is needed: answer with what is known.
    Evicted,
}

/// The application behind the loop (`api::Agent`).
pub trait Handler {
    /// Answers one complete request.
    fn handle(&mut self, request: Request, now: Instant) -> Reply;
    /// The waker fired: collect events, return what became ready (ids of jobs that
    /// ended); requests parked on them are answered.
    fn on_wake(&mut self) -> Vec<String>;
    /// Answers a request parked on `on` until `until`, or parks it again (`Reply::Wait`
    /// with a later `until`: what it waits for is not there yet). Never parks again when
    /// `why` is `Evicted`.
    fn answer_wait(&mut self, on: &str, kind: WaitKind, why: Woken, until: Instant) -> Reply;
    /// Called once a loop turn; lets the application ping a watchdog or decide to exit
    /// when idle. Returns true to stop serving.
    fn tick(&mut self, now: Instant, open_connections: usize) -> bool;
    /// SIGTERM/SIGINT arrived: stop jobs before the loop returns.
    fn shutdown(&mut self);
}

/// How the request being answered wants its answer.
#[derive(Debug, Clone, Default)]
struct Asked {
    keep_alive: bool,
    /// HEAD: the GET's head, Content-Length included, and no body.
    head_only: bool,
    /// A page of an allowed origin asked: its answers say so (CORS).
    origin: Option<String>,
}

enum Phase {
    /// Reading a request (possibly none started yet).
    Reading,
    /// A complete request is parked until `on` is ready or `until`.
    Waiting {
        on: String,
        until: Instant,
        kind: WaitKind,
        since: Instant,
        asked: Asked,
    },
    /// A response is being written; then read the next request or close.
    Writing { close: bool },
    /// Response sent, write side shut: drain input briefly, then close.
    Lingering { until: Instant },
}

struct Conn {
    stream: Stream,
    peer: Peer,
    /// Read from the kernel with the first request, then kept.
    caller: Option<Caller>,
    input: Vec<u8>,
    /// The answer's head (after a `100 Continue`, if one is still unsent)...
    out_head: Vec<u8>,
    /// ...and its body, shared with every connection sending the same answer.
    out_body: Option<Body>,
    /// Bytes of `out_head` then `out_body` written so far.
    sent: usize,
    phase: Phase,
    /// When the first byte of the request being read arrived.
    request_started: Option<Instant>,
    /// Last byte read or written, or when the answer was queued...
    last_active: Instant,
    /// ...and `Loop::idle` then.
    idle_mark: Duration,
    continue_sent: bool,
    peer_closed: bool,
    /// Has sent at least one whole request: a client, not just an open socket.
    served: bool,
}

/// What the loop needs from the config.
pub struct Limits {
    /// The Host and Origin allowlists.
    pub gate: Gate,
    /// Most bytes of answers held for clients, all connections together.
    pub send_queue_bytes: usize,
}

/// The listening socket, the poller and the waker job threads use to reach the loop.
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    unix: Option<UnixListener>,
    waker: Arc<Waker>,
    limits: Limits,
}

impl Server {
    /// Takes a bound listener (from `bind` or from systemd's socket activation), and
    /// the Unix socket's, if there is one.
    pub fn new(
        listener: std::net::TcpListener,
        unix: Option<std::os::unix::net::UnixListener>,
        limits: Limits,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let unix = match unix {
            Some(unix) => {
                unix.set_nonblocking(true)?;
                let mut unix = UnixListener::from_std(unix);
                poll.registry()
                    .register(&mut unix, UNIX_LISTENER, Interest::READABLE)?;
                Some(unix)
            }
            None => None,
        };
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            poll,
            listener,
            unix,
            waker,
            limits,
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
            limits: self.limits,
            again: Vec::new(),
            idle: Duration::ZERO,
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
            let polled = Instant::now();
            let result = self.poll.poll(&mut events, Some(timeout));
            loop_.idle += polled.elapsed();
            if let Err(err) = result {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => loop_.accept(&self.listener, None, self.poll.registry(), handler),
                    UNIX_LISTENER => loop_.accept(
                        &self.listener,
                        self.unix.as_ref(),
                        self.poll.registry(),
                        handler,
                    ),
                    WAKER => {
                        let ready: HashSet<String> = handler.on_wake().into_iter().collect();
                        loop_.answer_ready(&ready, handler);
                    }
                    SIGNALS => {
                        log::warn!("stop signal received; stopping jobs and exiting");
                        handler.shutdown();
                        return Ok(());
                    }
                    Token(t) => loop_.drive(t, handler),
                }
                loop_.drive_again(handler);
            }
            let now = Instant::now();
            if loop_.accept_retry_at.is_some_and(|at| at <= now) {
                loop_.accept_retry_at = None;
                loop_.accept(&self.listener, None, self.poll.registry(), handler);
                loop_.accept(
                    &self.listener,
                    self.unix.as_ref(),
                    self.poll.registry(),
                    handler,
                );
            }
            loop_.expire(now, handler);
            loop_.drive_again(handler);
        }
    }
}

struct Loop {
    conns: HashMap<usize, Conn>,
    next_token: usize,
    accept_retry_at: Option<Instant>,
    limits: Limits,
    /// Connections answered from outside their own turn (a parked request evicted for
    /// another): driven once the current one is done, never from inside it.
    again: Vec<usize>,
    /// Time spent waiting for events, all turns together: what a slow reader's stall
    /// is measured in.
    idle: Duration,
}

impl Loop {
    /// Accepts what `unix` (if given) or else `listener` has waiting.
    fn accept<H: Handler>(
        &mut self,
        listener: &TcpListener,
        unix: Option<&UnixListener>,
        registry: &mio::Registry,
        handler: &mut H,
    ) {
        let interest = Interest::READABLE | Interest::WRITABLE;
        loop {
            let token = Token(self.next_token);
            let accepted = match unix {
                None => listener.accept().and_then(|(mut s, peer)| {
                    registry.register(&mut s, token, interest)?;
                    Ok((Stream::Tcp(s), Peer::Tcp(peer)))
                }),
                Some(unix) => unix.accept().and_then(|(mut s, _)| {
                    registry.register(&mut s, token, interest)?;
                    Ok((Stream::Unix(s), Peer::Unix))
                }),
            };
            match accepted {
                Ok((stream, peer)) => {
                    let fd = match &stream {
                        Stream::Tcp(s) => s.as_fd(),
                        Stream::Unix(s) => s.as_fd(),
                    };
                    if let Err(err) = crate::sys::set_send_buffer(fd, SEND_BUFFER) {
                        log::warn!("cannot size the send buffer of {peer}: {err}");
                    }
                    if self.conns.len() >= MAX_CONNECTIONS {
                        self.evict_for_slot(handler);
                    }
                    self.next_token = self.next_token.wrapping_add(1).max(FIRST_CONN);
                    let now = Instant::now();
                    self.conns.insert(
                        token.0,
                        Conn {
                            stream,
                            peer,
                            caller: None,
                            input: Vec::new(),
                            out_head: Vec::new(),
                            out_body: None,
                            sent: 0,
                            phase: Phase::Reading,
                            request_started: None,
                            last_active: now,
                            idle_mark: self.idle,
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
                    self.evict_for_slot(handler);
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Closes one connection to make room for a newcomer, so that a new client always
    /// gets in: first sockets that never sent a whole request (a flood of bare connects
    /// must not push out clients), then the oldest parked request (answered first: a
    /// job still running gets 202 and its poll URL), then the least recently active of
    /// the rest (idle keep-alive, slow readers).
    fn evict_for_slot<H: Handler>(&mut self, handler: &mut H) {
        let victim = self
            .conns
            .iter()
            .min_by_key(|(_, c)| match &c.phase {
                _ if !c.served => (0, c.last_active),
                Phase::Waiting { since, .. } => (1, *since),
                _ => (2, c.last_active),
            })
            .map(|(t, _)| *t);
        let Some(mut conn) = victim.and_then(|t| self.conns.remove(&t)) else {
            return;
        };
        if self.answer_parked(&mut conn, Woken::Evicted, false, handler) {
            // Best effort: the answer is small and the socket's buffer empty.
            let _ = conn.flush();
            let _ = conn.fill();
            let _ = conn.stream.shutdown(Shutdown::Write);
        }
    }

    /// A request is about to park on `on`: if as many as allowed are parked on it, or
    /// in all, the oldest of them is answered now (it stays open) to make room.
    fn make_parking_room<H: Handler>(&mut self, on: &str, handler: &mut H) {
        for one_topic in [true, false] {
            let mut count = 0;
            let mut oldest: Option<(Instant, usize)> = None;
            for (token, conn) in &self.conns {
                if let Phase::Waiting { on: o, since, .. } = &conn.phase
                    && (!one_topic || o == on)
                {
                    count += 1;
                    if oldest.is_none_or(|(old, _)| *since < old) {
                        oldest = Some((*since, *token));
                    }
                }
            }
            let cap = if one_topic {
                MAX_PARKED_ON_ONE
            } else {
                MAX_PARKED
            };
            if count >= cap
                && let Some((_, token)) = oldest
                && let Some(mut conn) = self.conns.remove(&token)
            {
                self.answer_parked(&mut conn, Woken::Evicted, true, handler);
                self.conns.insert(token, conn);
                self.again.push(token);
            }
        }
    }

    /// Queues the handler's answer on a parked connection, or parks it again; false if
    /// it was not parked or still is.
    fn answer_parked<H: Handler>(
        &mut self,
        conn: &mut Conn,
        why: Woken,
        keep_alive: bool,
        handler: &mut H,
    ) -> bool {
        let Phase::Waiting {
            on,
            kind,
            asked,
            until,
            since,
        } = &conn.phase
        else {
            return false;
        };
        let response = match handler.answer_wait(on, *kind, why, *until) {
            Reply::Now(response) => response,
            // Evicted means now: a handler that cannot answer gets the client told so.
            Reply::Wait { .. } if why == Woken::Evicted => ApiError::Overloaded.response(),
            Reply::Wait { on, until, kind } => {
                let (since, asked) = (*since, asked.clone());
                conn.phase = Phase::Waiting {
                    on,
                    until,
                    kind,
                    since,
                    asked,
                };
                return false;
            }
        };
        let asked = Asked {
            keep_alive: asked.keep_alive && keep_alive,
            ..asked.clone()
        };
        self.respond(conn, response, &asked);
        true
    }

    /// Queues `response` on `conn` (taken out of `conns`). A large body that would push
    /// the bytes held for clients past `send_queue_bytes` first closes the slowest
    /// readers (no progress for `STALLED`); if it still does not fit it becomes 503.
    fn respond(&mut self, conn: &mut Conn, mut response: Response, asked: &Asked) {
        if !asked.head_only
            && response.body.len() > SMALL_ANSWER
            && !self.make_sending_room(&response.body)
        {
            response = ApiError::Overloaded.response();
        }
        if let Some(origin) = &asked.origin {
            response.headers.extend([
                ("Access-Control-Allow-Origin", origin.clone()),
                ("Vary", "Origin".into()),
            ]);
        }
        let keep_alive = asked.keep_alive && !conn.peer_closed;
        conn.out_head.extend_from_slice(&response.head(keep_alive));
        conn.out_body = (!asked.head_only && !response.body.is_empty()).then_some(response.body);
        conn.phase = Phase::Writing { close: !keep_alive };
        conn.last_active = Instant::now();
        conn.idle_mark = self.idle;
    }

    fn make_sending_room(&mut self, body: &Body) -> bool {
        loop {
            // Bodies are shared: count each one once, however many connections send it.
            let mut seen = HashSet::new();
            let mut held = 0usize;
            for out in self.conns.values().filter_map(|c| c.out_body.as_ref()) {
                if seen.insert(Arc::as_ptr(out)) {
                    held += out.len();
                }
            }
            if held == 0
                || seen.contains(&Arc::as_ptr(body))
                || held + body.len() <= self.limits.send_queue_bytes
            {
                return true;
            }
            let slowest = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.out_body.is_some() && self.idle.saturating_sub(c.idle_mark) >= STALLED
                })
                .min_by_key(|(_, c)| c.idle_mark)
                .map(|(t, _)| *t);
            match slowest {
                Some(token) => self.conns.remove(&token),
                None => return false,
            };
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
            let Some(mut conn) = self.conns.remove(&token) else {
                continue;
            };
            match conn.phase {
                Phase::Waiting { .. } => {
                    self.answer_parked(&mut conn, Woken::Deadline, true, handler);
                }
                Phase::Reading if !conn.input.is_empty() => {
                    self.respond(&mut conn, ApiError::Timeout.response(), &Asked::default());
                }
                // Idle in write as long as a request may take to arrive, unless the loop
                // itself was what kept it waiting.
                Phase::Writing { .. } => {
                    if !conn.moves() {
                        continue;
                    }
                    conn.idle_mark = self.idle;
                }
                _ => continue,
            }
            self.step(token, conn, handler);
        }
    }

    fn answer_ready<H: Handler>(&mut self, ready: &HashSet<String>, handler: &mut H) {
        if ready.is_empty() {
            return;
        }
        let tokens: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(&c.phase, Phase::Waiting { on, .. } if ready.contains(on)))
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            if let Some(mut conn) = self.conns.remove(&token) {
                self.answer_parked(&mut conn, Woken::Ready, true, handler);
                self.step(token, conn, handler);
            }
        }
    }

    /// Moves one connection as far as it can go without blocking.
    fn drive<H: Handler>(&mut self, token: usize, handler: &mut H) {
        if let Some(conn) = self.conns.remove(&token) {
            self.step(token, conn, handler);
        }
    }

    fn drive_again<H: Handler>(&mut self, handler: &mut H) {
        while let Some(token) = self.again.pop() {
            self.drive(token, handler);
        }
    }

    /// Steps `conn`, out of `conns` meanwhile so it can reach the other connections
    /// (the send queue, parking room), and puts it back unless it is to be closed.
    fn step<H: Handler>(&mut self, token: usize, mut conn: Conn, handler: &mut H) {
        let active = conn.last_active;
        if conn.step(self, handler).is_ok() {
            if conn.last_active != active {
                conn.idle_mark = self.idle;
            }
            self.conns.insert(token, conn);
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

    fn step<H: Handler>(&mut self, lp: &mut Loop, handler: &mut H) -> Step {
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
                        Ok(Some((request, asked, provenance))) => {
                            self.request_started = None;
                            self.served = true;
                            if self.handle(request, asked, &provenance, lp, handler) {
                                return Ok(());
                            }
                        }
                        Err(err) => {
                            crate::audit::bad_request(&self.peer.to_string(), &err.to_string());
                            lp.respond(self, err.response(), &Asked::default());
                        }
                    }
                }
                Phase::Waiting { .. } => {
                    // A hang-up here may be only a half-close (`shutdown(SHUT_WR)`, as
                    // `nc -N` does once its request is out): the answer still goes when
                    // ready, then the connection closes (a peer that is gone fails that
                    // write). The slot stays bounded by the wait and the parking caps.
                    // Pipelined bytes stay buffered.
                    return self.fill();
                }
                Phase::Writing { close } => {
                    if self.sent < self.out_len() {
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

    /// Answers or parks one complete request; true when it parked. Browser pages and
    /// names that may be DNS rebinding are refused before the handler sees anything.
    fn handle<H: Handler>(
        &mut self,
        request: Request,
        mut asked: Asked,
        provenance: &Provenance,
        lp: &mut Loop,
        handler: &mut H,
    ) -> bool {
        let response = match lp.limits.gate.check(provenance) {
            Err(refused) => {
                crate::audit::forbidden_browser(
                    &self.peer.to_string(),
                    refused.header(),
                    &provenance.shown(refused),
                );
                ApiError::Browser(refused).response()
            }
            Ok(Some(origin)) if request.method == "OPTIONS" => {
                asked.origin = Some(origin);
                preflight()
            }
            Ok(origin) => {
                asked.origin = origin;
                match handler.handle(request, Instant::now()) {
                    Reply::Now(response) => response,
                    Reply::Wait { on, until, kind } => {
                        lp.make_parking_room(&on, handler);
                        self.phase = Phase::Waiting {
                            on,
                            until,
                            kind,
                            since: Instant::now(),
                            asked,
                        };
                        return true;
                    }
                }
            }
        };
        lp.respond(self, response, &asked);
        false
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

    /// Tries to write: whether any of the answer went out (all of it, perhaps).
    fn moves(&mut self) -> bool {
        let before = (self.sent, self.out_len());
        self.flush().is_ok() && (self.sent, self.out_len()) != before
    }

    fn out_len(&self) -> usize {
        self.out_head.len() + self.out_body.as_ref().map_or(0, |b| b.len())
    }

    /// Writes what is pending; `Ok` when all is written or the socket is full.
    fn flush(&mut self) -> Step {
        while self.sent < self.out_len() {
            let head = self.out_head.get(self.sent..).unwrap_or_default();
            let body = self.out_body.as_deref().map_or(&[][..], |b| {
                &b[self.sent.saturating_sub(self.out_head.len())..]
            });
            match self
                .stream
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            {
                Ok(0) => return Err(()),
                Ok(n) => {
                    self.sent += n;
                    self.last_active = Instant::now();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        self.out_head.clear();
        self.out_body = None;
        self.sent = 0;
        Ok(())
    }

    /// A complete request out of the input buffer, if one is there.
    fn take_request(&mut self) -> Result<Option<(Request, Asked, Provenance)>, ApiError> {
        let Some(head) = parse_head(&self.input)? else {
            return Ok(None);
        };
        let total = head.len + head.content_length;
        if self.input.len() < total {
            if head.expect_continue && !self.continue_sent {
                self.continue_sent = true;
                self.out_head
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
        // HEAD is answered as GET is, minus the body.
        let head_only = head.method == "HEAD";
        let (stream, peer) = (&self.stream, self.peer);
        let caller = self.caller.get_or_insert_with(|| stream.caller(peer));
        let request = Request {
            method: if head_only { "GET".into() } else { head.method },
            path,
            query,
            body,
            peer: self.peer,
            caller: caller.clone(),
        };
        let asked = Asked {
            keep_alive: head.keep_alive,
            head_only,
            origin: None,
        };
        Ok(Some((request, asked, head.provenance)))
    }
}

/// The CORS preflight a page of an allowed origin sends before a JSON POST.
fn preflight() -> Response {
    let mut response = Response::shared(200, Arc::default());
    response.headers.extend([
        ("Access-Control-Allow-Methods", "GET, POST".to_string()),
        ("Access-Control-Allow-Headers", "Content-Type".to_string()),
        ("Access-Control-Max-Age", "600".to_string()),
    ]);
    response
}
