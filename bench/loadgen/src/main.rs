//! loadgen: the measuring side of `bench/run.sh`.
//!
//! Modes (each prints one line of `key=value` pairs on stdout; times in microseconds):
//!
//! ```text
//! loadgen http    --addr A [--method POST] [--path /run] [--body JSON] [--n 2000] [--warmup 50]
//!                 [--expect 200] [--max-secs 300] [--gap-ms 0] [--times FILE]
//!     sequential requests on ONE keep-alive connection (reconnects only if the server
//!     closes it), each after a pause of gap-ms; latency of each, request written to
//!     response fully read (with --times, each timed one also to FILE, a line each, in
//!     the order sent: where in a run the slow ones fall)
//! loadgen reject  --addr A [--conns 16] [--secs 3] [--path /run] [--body JSON]
//!                 [--health-path /health] [--health-interval-ms 2]
//!     `conns` keep-alive connections sending the body back to back, plus one more
//!     connection timing GET health-path meanwhile
//! loadgen idle    --addr A --pid P [--n 256] [--settle-ms 1000]
//!     opens n connections, sends half a request head on each (no blank line), waits,
//!     reads RSS and threads of P from /proc, checks how many are still open
//! loadgen spawn   [--n 2000] [--warmup 50] [--setup plain|same] [--gap-ms 0]
//!     fork+exec+wait of /bin/true from a loop: `plain` is Command::status(); `same` is
//!     what a job gets: cleared env, stdin null, stdout/stderr piped and read to EOF,
//!     own process group
//! loadgen httpfloor --port P [--max-secs 300]
//!     the least an HTTP server can do for a job: one thread serving one keep-alive
//!     connection at a time on 127.0.0.1:P, each request (head and body, 64 KiB each at most)
//!     answered with a short JSON 200 after the `same` spawn of /bin/true; no journal,
//!     no result file, no log, no checks. Exits after max-secs
//! loadgen startup --addr A [--path /health] [--n 5] [--activate 0|1] [--log FILE] -- PROG ARGS..
//!     time from spawn to the first 200 on path; with --activate 1 the socket is bound
//!     here and handed over as fd 3 with LISTEN_FDS=1, LISTEN_PID=<child>
//! loadgen procstat --pid P      RSS (KiB) and threads of P
//! loadgen freeport              a free loopback TCP port
//! loadgen codes   --addr A --secret BASE32 [--step 1] [--digits 6] [--n 8] [--body-rest JSON]
//!                 [--plain-body JSON] [--probe-ms 2]
//!     code-bearing requests on one keep-alive connection, one per TOTP time step (each
//!     step's code is accepted once), `{"pin":CODE,` + body-rest, 50 ms into the step;
//!     half a step later the plain body (no code) on the same connection, timed as
//!     `plain_*`: the same request as cold, for comparison; meanwhile GET /health every
//!     probe-ms on another connection (0: none)
//! loadgen syncfloor --dir D [--n 50] [--gap-ms 0] [--write append|over-zeros]
//!     write 200 bytes and fdatasync them in D, n times: what one sync costs there;
//!     appended (the file grows), or over zeros written and synced first (its size
//!     stays: how the agent's journal writes a code)
//! loadgen notify  --path P --secs S
//!     binds a datagram socket at P (a NOTIFY_SOCKET) for S seconds: how many
//!     WATCHDOG=1 pings came and the longest gap between two
//! ```
//!
//! Everything is bounded: counts, deadlines and socket timeouts, so nothing here can hang.

use std::collections::BTreeMap;
use std::ffi::{CString, c_char};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a single socket operation may block.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment every job child gets (SPEC, Policy), for the `same` spawn floor.
const JOB_ENV: [(&str, &str); 9] = [
    ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ("LANG", "C.UTF-8"),
    ("HOME", "/root"),
    ("SYSTEMD_PAGER", "cat"),
    ("SYSTEMD_PAGERSECURE", "1"),
    ("PAGER", "cat"),
    ("LESSSECURE", "1"),
    ("SYSTEMD_COLORS", "0"),
    ("TERM", "dumb"),
];

type Opts = BTreeMap<String, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        usage();
    };
    let (opts, rest) = parse_args(&args[1..]);
    let result = match mode.as_str() {
        "http" => http(&opts),
        "reject" => reject(&opts),
        "idle" => idle(&opts),
        "spawn" => spawn(&opts),
        "httpfloor" => httpfloor(&opts),
        "startup" => startup(&opts, &rest),
        "procstat" => procstat_cmd(&opts),
        "freeport" => freeport(),
        "codes" => codes(&opts),
        "syncfloor" => syncfloor(&opts),
        "notify" => notify(&opts),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("loadgen {mode}: {e}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen http|reject|idle|spawn|httpfloor|startup|procstat|freeport|codes|syncfloor|notify [--opt value].. (see src/main.rs)"
    );
    std::process::exit(2);
}

fn parse_args(args: &[String]) -> (Opts, Vec<String>) {
    let mut opts = Opts::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            return (opts, it.cloned().collect());
        }
        let Some(key) = a.strip_prefix("--") else {
            eprintln!("unexpected argument {a}");
            usage();
        };
        let Some(value) = it.next() else {
            eprintln!("--{key} needs a value");
            usage();
        };
        opts.insert(key.to_string(), value.clone());
    }
    (opts, Vec::new())
}

fn opt<T: std::str::FromStr>(opts: &Opts, key: &str, default: T) -> io::Result<T> {
    match opts.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| invalid(format!("--{key} {v}: not valid"))),
    }
}

fn opt_str<'a>(opts: &'a Opts, key: &str, default: &'a str) -> &'a str {
    opts.get(key).map_or(default, String::as_str)
}

fn addr_opt(opts: &Opts) -> io::Result<SocketAddr> {
    let text = opts
        .get("addr")
        .ok_or_else(|| invalid("--addr is required"))?;
    text.to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid(format!("--addr {text}: no address")))
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

// ---------------------------------------------------------------- statistics

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(prefix: &str, mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let mean = if v.is_empty() {
        0
    } else {
        v.iter().sum::<u64>() / v.len() as u64
    };
    format!(
        "{prefix}n={} {prefix}p50_us={} {prefix}p90_us={} {prefix}p99_us={} {prefix}mean_us={} {prefix}max_us={}",
        v.len(),
        pct(&v, 0.50),
        pct(&v, 0.90),
        pct(&v, 0.99),
        mean,
        v.last().copied().unwrap_or(0)
    )
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------- HTTP/1.1 client

struct Response {
    status: u16,
}

/// One HTTP/1.1 connection, kept alive while the server allows it.
struct Client {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    connects: u64,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            connects: 0,
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        self.stream = None;
        self.buf.clear();
        let s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        self.stream = Some(s);
        self.connects += 1;
        Ok(())
    }

    /// Sends one request and reads its response. A reused connection that turns out to
    /// be closed by the server is reopened once.
    fn request(&mut self, req: &[u8]) -> io::Result<Response> {
        let fresh = self.stream.is_none();
        if fresh {
            self.connect()?;
        }
        match self.exchange(req) {
            Ok(r) => Ok(r),
            Err(_) if !fresh => {
                self.connect()?;
                self.exchange(req).inspect_err(|_| self.stream = None)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    fn exchange(&mut self, req: &[u8]) -> io::Result<Response> {
        let Client { stream, buf, .. } = self;
        let s = stream.as_mut().ok_or_else(|| invalid("not connected"))?;
        s.write_all(req)?;
        let head_len = loop {
            if let Some(i) = find(buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                return Err(invalid("response head over 64 KiB"));
            }
            read_more(s, buf)?;
        };
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        buf.drain(..head_len);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let mut close = status_line.starts_with("HTTP/1.0");
        let mut length: Option<usize> = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse().ok(),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => {
                    let v = value.to_ascii_lowercase();
                    if v.contains("close") {
                        close = true;
                    } else if v.contains("keep-alive") {
                        close = false;
                    }
                }
                _ => {}
            }
        }
        if chunked {
            read_chunked(s, buf)?;
        } else if let Some(n) = length {
            while buf.len() < n {
                read_more(s, buf)?;
            }
            buf.drain(..n);
        } else if status == 204 || status == 304 || status < 200 {
        } else {
            // Delimited by the server closing the connection.
            let mut sink = Vec::new();
            s.read_to_end(&mut sink)?;
            close = true;
        }
        if close {
            *stream = None;
            buf.clear();
        }
        Ok(Response { status })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut tmp = [0u8; 16 * 1024];
    let n = s.read(&mut tmp)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed the connection",
        ));
    }
    buf.extend_from_slice(&tmp[..n]);
    Ok(())
}

fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            read_more(s, buf)?;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let end = loop {
                    if let Some(i) = find(buf, b"\r\n") {
                        break i;
                    }
                    read_more(s, buf)?;
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(());
                }
            }
        }
        while buf.len() < size + 2 {
            read_more(s, buf)?;
        }
        buf.drain(..size + 2);
    }
}

fn build_request(method: &str, path: &str, body: &str) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: loadgen\r\n");
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

// ---------------------------------------------------------------- modes

fn http(opts: &Opts) -> io::Result<()> {
    let addr = addr_opt(opts)?;
    let method = opt_str(opts, "method", "POST");
    let req = build_request(
        method,
        opt_str(opts, "path", "/run"),
        opt_str(opts, "body", ""),
    );
    let n: usize = opt(opts, "n", 2000)?;
    let warmup: usize = opt(opts, "warmup", 50)?;
    let expect: u16 = opt(opts, "expect", 200)?;
    let deadline = Instant::now() + Duration::from_secs(opt(opts, "max-secs", 300)?);
    // A pause before each request: one after a quiet spell, as a home lab sends them.
    let gap = Duration::from_millis(opt(opts, "gap-ms", 0)?);
    let mut client = Client::new(addr);
    let mut times = Vec::with_capacity(n);
    let (mut bad, mut errors, mut last_bad) = (0u64, 0u64, 0u16);
    let started = Instant::now();
    for i in 0..warmup + n {
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(gap);
        let t0 = Instant::now();
        let r = client.request(&req);
        let dt = t0.elapsed();
        match r {
            Ok(r) if r.status == expect => {
                if i >= warmup {
                    times.push(micros(dt));
                }
            }
            Ok(r) => {
                bad += 1;
                last_bad = r.status;
            }
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("loadgen http: {e}");
                }
                if errors > 20 {
                    return Err(io::Error::other(format!("too many errors, last: {e}")));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    if let Some(path) = opts.get("times") {
        let lines: String = times.iter().map(|t| format!("{t}\n")).collect();
        std::fs::write(path, lines)?;
    }
    println!(
        "{} bad={bad} last_bad_status={last_bad} errors={errors} connects={} secs={:.2}",
        summary("", times),
        client.connects,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn reject(opts: &Opts) -> io::Result<()> {
    let addr = addr_opt(opts)?;
    let conns: usize = opt(opts, "conns", 16)?;
    let secs: f64 = opt(opts, "secs", 3.0)?;
    let req = build_request(
        "POST",
        opt_str(opts, "path", "/run"),
        opt_str(opts, "body", ""),
    );
    let health = build_request("GET", opt_str(opts, "health-path", "/health"), "");
    let interval = Duration::from_millis(opt(opts, "health-interval-ms", 2)?);
    let run_for = Duration::from_secs_f64(secs.clamp(0.1, 120.0));
    let start = Instant::now();
    let deadline = start + run_for;
    let (workers, health_result) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                let req = &req;
                scope.spawn(move || {
                    let mut client = Client::new(addr);
                    let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
                    let mut errors = 0u64;
                    while Instant::now() < deadline {
                        match client.request(req) {
                            Ok(r) => *counts.entry(r.status).or_default() += 1,
                            Err(_) => {
                                errors += 1;
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    (counts, errors, client.connects)
                })
            })
            .collect();
        let health = &health;
        let h = scope.spawn(move || {
            let mut client = Client::new(addr);
            let mut times = Vec::new();
            let mut bad = 0u64;
            // Let the flood start first.
            std::thread::sleep(Duration::from_millis(50).min(run_for / 4));
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match client.request(health) {
                    Ok(r) if r.status == 200 => times.push(micros(t0.elapsed())),
                    _ => bad += 1,
                }
                std::thread::sleep(interval);
            }
            (times, bad)
        });
        let workers: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        (workers, h.join().unwrap_or_default())
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut errors, mut connects) = (0u64, 0u64);
    for (c, e, n) in workers {
        for (k, v) in c {
            *counts.entry(k).or_default() += v;
        }
        errors += e;
        connects += n;
    }
    let total: u64 = counts.values().sum();
    let mix: Vec<String> = counts.iter().map(|(k, v)| format!("s{k}={v}")).collect();
    let (htimes, hbad) = health_result;
    println!(
        "rps={:.0} total={total} {} errors={errors} connects={connects} secs={elapsed:.2} {} health_bad={hbad}",
        total as f64 / elapsed,
        mix.join(" "),
        summary("health_", htimes)
    );
    Ok(())
}

/// (RSS KiB, threads) of a process, from /proc/PID/status.
fn procstat(pid: u32) -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("Threads:")))
}

fn procstat_cmd(opts: &Opts) -> io::Result<()> {
    let pid: u32 = opt(opts, "pid", 0)?;
    let (rss, threads) = procstat(pid)?;
    println!("rss_kib={rss} threads={threads}");
    Ok(())
}

fn idle(opts: &Opts) -> io::Result<()> {
    let addr = addr_opt(opts)?;
    let pid: u32 = opt(opts, "pid", 0)?;
    let n: usize = opt(opts, "n", 256)?;
    let settle = Duration::from_millis(opt(opts, "settle-ms", 1000)?);
    // Half a request: the request line and one header, never the blank line that ends
    // the head, so the server must hold the connection and its buffer.
    let partial = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(partial)?;
        held.push(s);
    }
    std::thread::sleep(settle);
    let (rss, threads) = procstat(pid)?;
    // Still open = a read would block (nothing sent back, no FIN).
    let mut open = 0;
    for s in &held {
        s.set_nonblocking(true)?;
        let mut b = [0u8; 1];
        if let Err(e) = s.peek(&mut b)
            && e.kind() == io::ErrorKind::WouldBlock
        {
            open += 1;
        }
    }
    println!("rss_kib={rss} threads={threads} open={open} n={n}");
    Ok(())
}

fn spawn(opts: &Opts) -> io::Result<()> {
    let n: usize = opt(opts, "n", 2000)?;
    let warmup: usize = opt(opts, "warmup", 50)?;
    // A pause before each spawn: the floor in a code-bearing request's rhythm (one a
    // second), as cold as that request, not back to back.
    let gap = Duration::from_millis(opt(opts, "gap-ms", 0)?);
    let same = match opt_str(opts, "setup", "plain") {
        "plain" => false,
        "same" => true,
        other => return Err(invalid(format!("--setup {other}: plain or same"))),
    };
    let mut times = Vec::with_capacity(n);
    for i in 0..warmup + n {
        std::thread::sleep(gap);
        let t0 = Instant::now();
        let ok = if same {
            true_as_a_job()?
        } else {
            Command::new("/bin/true").status()?.success()
        };
        let dt = t0.elapsed();
        if !ok {
            return Err(io::Error::other("/bin/true failed"));
        }
        if i >= warmup {
            times.push(micros(dt));
        }
    }
    println!("{}", summary("", times));
    Ok(())
}

/// `/bin/true` set up as a job is: cleared env plus the job variables, stdin null,
/// stdout and stderr piped and read to EOF, its own process group. Whether it exited 0.
fn true_as_a_job() -> io::Result<bool> {
    Ok(Command::new("/bin/true")
        .env_clear()
        .envs(JOB_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .output()?
        .status
        .success())
}

fn httpfloor(opts: &Opts) -> io::Result<()> {
    let port: u16 = opt(opts, "port", 0)?;
    let deadline = Instant::now() + Duration::from_secs(opt(opts, "max-secs", 300)?);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    while Instant::now() < deadline {
        let mut s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => return Err(e),
        };
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        // A connection ends at its client's close, an error or half a second idle.
        let _ = serve_floor(&mut s, deadline);
    }
    Ok(())
}

fn serve_floor(s: &mut TcpStream, deadline: Instant) -> io::Result<()> {
    let mut buf = Vec::new();
    while Instant::now() < deadline {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                return Err(invalid("request head over 64 KiB"));
            }
            read_more(s, &mut buf)?;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let body_len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(Ok(0), |v| {
                v.trim().parse().map_err(|_| invalid("bad Content-Length"))
            })?;
        if body_len > 64 * 1024 {
            return Err(invalid("request body over 64 KiB"));
        }
        while buf.len() < head_end + body_len {
            read_more(s, &mut buf)?;
        }
        buf.drain(..head_end + body_len);
        let body = format!(
            r#"{{"status":"succeeded","exit_code":{}}}"#,
            if true_as_a_job()? { 0 } else { 1 }
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(answer.as_bytes())?;
    }
    Ok(())
}

fn freeport() -> io::Result<()> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", l.local_addr()?.port());
    Ok(())
}

unsafe extern "C" {
    fn getpid() -> i32;
    fn dup2(oldfd: i32, newfd: i32) -> i32;
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> i32;
}

const F_SETFD: i32 = 2;

/// Makes `cmd` exec `prog` itself after the fork with the socket as fd 3, LISTEN_FDS=1 and
/// LISTEN_PID set to the child's own pid (known only after the fork). Everything is
/// allocated before the fork; the child only writes digits into a buffer and calls
/// async-signal-safe functions.
fn socket_activation(cmd: &mut Command, listener: &TcpListener, argv: &[String]) -> io::Result<()> {
    let fd = listener.as_raw_fd();
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| invalid("NUL byte in argument or env"));
    let path = cstr(argv[0].as_bytes())?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut env: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        let k = k.as_bytes();
        if k.starts_with(b"LISTEN_") {
            continue;
        }
        let mut kv = k.to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        env.push(cstr(&kv)?);
    }
    env.push(cstr(b"LISTEN_FDS=1")?);
    const PREFIX: &[u8] = b"LISTEN_PID=";
    let mut pid_entry = vec![0u8; PREFIX.len() + 24].into_boxed_slice();
    pid_entry[..PREFIX.len()].copy_from_slice(PREFIX);
    let pid_at = pid_entry.as_mut_ptr() as usize + PREFIX.len();
    let mut envp: Vec<usize> = env.iter().map(|c| c.as_ptr() as usize).collect();
    envp.push(pid_entry.as_ptr() as usize);
    envp.push(0);
    let mut argvp: Vec<usize> = args.iter().map(|c| c.as_ptr() as usize).collect();
    argvp.push(0);
    // SAFETY: runs in the forked child before exec; touches only memory allocated before
    // the fork (the child's own copy) and calls async-signal-safe functions.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = (&path, &args, &env, &pid_entry);
            let mut pid = getpid() as u32;
            let mut digits = [0u8; 12];
            let mut len = 0;
            loop {
                digits[len] = b'0' + (pid % 10) as u8;
                len += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let out = pid_at as *mut u8;
            for i in 0..len {
                *out.add(i) = digits[len - 1 - i];
            }
            *out.add(len) = 0;
            if fd == 3 {
                fcntl(3, F_SETFD, 0);
            } else if dup2(fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            execve(
                path.as_ptr(),
                argvp.as_ptr() as *const *const c_char,
                envp.as_ptr() as *const *const c_char,
            );
            Err(io::Error::last_os_error())
        });
    }
    Ok(())
}

fn startup(opts: &Opts, prog: &[String]) -> io::Result<()> {
    if prog.is_empty() {
        return Err(invalid("startup needs -- PROG ARGS.."));
    }
    let addr = addr_opt(opts)?;
    let req = build_request("GET", opt_str(opts, "path", "/health"), "");
    let n: usize = opt(opts, "n", 5)?;
    let activate: u8 = opt(opts, "activate", 0)?;
    let log = opts.get("log");
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let listener = if activate == 1 {
            Some(TcpListener::bind(addr)?)
        } else {
            None
        };
        let mut cmd = Command::new(&prog[0]);
        cmd.args(&prog[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                cmd.stderr(f);
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        if let Some(l) = &listener {
            socket_activation(&mut cmd, l, prog)?;
        }
        let t0 = Instant::now();
        let mut child = cmd.spawn()?;
        drop(listener);
        let deadline = t0 + Duration::from_secs(15);
        let mut answered = None;
        while Instant::now() < deadline {
            let mut client = Client::new(addr);
            match client.request(&req) {
                Ok(r) if r.status == 200 => {
                    answered = Some(t0.elapsed());
                    break;
                }
                _ => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(io::Error::other(format!(
                    "{} exited with {status} before answering",
                    prog[0]
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        let t = answered.ok_or_else(|| io::Error::other("no answer within 15 s"))?;
        times.push(micros(t));
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{}", summary("", times));
    Ok(())
}

// ---------------------------------------------------------------- TOTP (RFC 6238)

/// SHA-1 (FIPS 180-4), enough for HMAC over short messages: a bench tool, not a
/// verifier (the agent's own is checked against oathtool and pyotp).
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..20].copy_from_slice(&sha1(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = k
        .iter()
        .map(|b| b ^ 0x36)
        .chain(msg.iter().copied())
        .collect();
    let outer: Vec<u8> = k
        .iter()
        .map(|b| b ^ 0x5c)
        .chain(sha1(&inner).iter().copied())
        .collect();
    sha1(&outer)
}

fn base32(text: &str) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u64, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return Err(invalid("--secret is not base32")),
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

fn totp(key: &[u8], step: u64, digits: u32) -> String {
    let mac = hmac_sha1(key, &step.to_be_bytes());
    let off = (mac[19] & 0x0f) as usize;
    let bin = u32::from_be_bytes([mac[off] & 0x7f, mac[off + 1], mac[off + 2], mac[off + 3]]);
    format!(
        "{:0width$}",
        bin % 10u32.pow(digits),
        width = digits as usize
    )
}

fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

fn codes(opts: &Opts) -> io::Result<()> {
    let addr = addr_opt(opts)?;
    let key = base32(
        opts.get("secret")
            .ok_or_else(|| invalid("--secret is required"))?,
    )?;
    let step_s: u64 = opt(opts, "step", 1)?;
    let digits: u32 = opt(opts, "digits", 6)?;
    let n: usize = opt(opts, "n", 8)?;
    let rest = opt_str(opts, "body-rest", r#""argv":["/bin/true"]}"#);
    let plain = build_request(
        "POST",
        "/run",
        opt_str(opts, "plain-body", r#"{"argv":["/bin/true"]}"#),
    );
    let probe_ms: u64 = opt(opts, "probe-ms", 2)?;
    let health = build_request("GET", "/health", "");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (times, plain_times, statuses, probe) = std::thread::scope(|scope| {
        let prober = (probe_ms > 0).then(|| {
            let (health, stop) = (&health, &stop);
            scope.spawn(move || {
                let mut client = Client::new(addr);
                let (mut times, mut bad) = (Vec::new(), 0u64);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let t0 = Instant::now();
                    match client.request(health) {
                        Ok(r) if r.status == 200 => times.push(micros(t0.elapsed())),
                        _ => bad += 1,
                    }
                    std::thread::sleep(Duration::from_millis(probe_ms));
                }
                (times, bad)
            })
        });
        let mut client = Client::new(addr);
        let mut times = Vec::with_capacity(n);
        let mut plain_times = Vec::with_capacity(n);
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        let mut last_step = 0;
        for _ in 0..n {
            // The next step not used yet, 50 ms into it (clear of the boundary).
            let now = unix_now();
            let mut step = now.as_secs() / step_s;
            if step <= last_step {
                step = last_step + 1;
            }
            let at = Duration::from_secs(step * step_s) + Duration::from_millis(50);
            if let Some(wait) = at.checked_sub(now) {
                std::thread::sleep(wait);
            }
            last_step = step;
            let body = format!(r#"{{"pin":"{}",{rest}"#, totp(&key, step, digits));
            let req = build_request("POST", "/run", &body);
            let t0 = Instant::now();
            match client.request(&req) {
                Ok(r) => {
                    *statuses.entry(r.status).or_default() += 1;
                    if r.status == 200 {
                        times.push(micros(t0.elapsed()));
                    }
                }
                Err(e) => eprintln!("loadgen codes: {e}"),
            }
            let half = at + Duration::from_millis(step_s * 500);
            if let Some(wait) = half.checked_sub(unix_now()) {
                std::thread::sleep(wait);
            }
            let t0 = Instant::now();
            match client.request(&plain) {
                Ok(r) if r.status == 200 => plain_times.push(micros(t0.elapsed())),
                Ok(r) => eprintln!("loadgen codes: plain request answered {}", r.status),
                Err(e) => eprintln!("loadgen codes: {e}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let probe = prober
            .map(|p| p.join().unwrap_or_default())
            .unwrap_or_default();
        (times, plain_times, statuses, probe)
    });
    let mix: Vec<String> = statuses.iter().map(|(k, v)| format!("s{k}={v}")).collect();
    println!(
        "{} {} {} {} health_bad={}",
        summary("", times),
        summary("plain_", plain_times),
        mix.join(" "),
        summary("health_", probe.0),
        probe.1
    );
    Ok(())
}

fn syncfloor(opts: &Opts) -> io::Result<()> {
    let dir = std::path::PathBuf::from(
        opts.get("dir")
            .ok_or_else(|| invalid("--dir is required"))?,
    );
    let n: usize = opt(opts, "n", 50)?;
    // As for `spawn`: a pause before each, for a sync as cold as a code-bearing request's.
    let gap = Duration::from_millis(opt(opts, "gap-ms", 0)?);
    let over_zeros = match opt_str(opts, "write", "append") {
        "append" => false,
        "over-zeros" => true,
        other => return Err(invalid(format!("--write {other}: append or over-zeros"))),
    };
    let path = dir.join(format!(".syncfloor.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(!over_zeros)
        .write(true)
        .open(&path)?;
    let line = [b'x'; 200];
    if over_zeros {
        file.write_all(&vec![0; line.len() * n])?;
        file.sync_all()?;
        io::Seek::rewind(&mut file)?;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        std::thread::sleep(gap);
        let t0 = Instant::now();
        file.write_all(&line)?;
        file.sync_data()?;
        times.push(micros(t0.elapsed()));
    }
    drop(file);
    std::fs::remove_file(&path)?;
    println!("{}", summary("", times));
    Ok(())
}

fn notify(opts: &Opts) -> io::Result<()> {
    let path = opts
        .get("path")
        .ok_or_else(|| invalid("--path is required"))?;
    let secs: f64 = opt(opts, "secs", 10.0)?;
    let _ = std::fs::remove_file(path);
    let sock = std::os::unix::net::UnixDatagram::bind(path)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs.clamp(0.1, 3600.0));
    let (mut pings, mut last, mut max_gap) = (0u64, None::<Instant>, Duration::ZERO);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "WATCHDOG=1")
                {
                    let now = Instant::now();
                    if let Some(prev) = last {
                        max_gap = max_gap.max(now - prev);
                    }
                    last = Some(now);
                    pings += 1;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = std::fs::remove_file(path);
    println!("pings={pings} max_gap_us={}", micros(max_gap));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vectors() {
        let key = b"12345678901234567890";
        assert_eq!(totp(key, 59 / 30, 8), "94287082");
        assert_eq!(totp(key, 1_111_111_109 / 30, 8), "07081804");
        assert_eq!(totp(key, 20_000_000_000 / 30, 8), "65353130");
        assert_eq!(base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap(), key);
    }
}
