//! A small blocking HTTP/1.1 client for the agent's API, used by `sudo-agent run` and
//! `sudo-agent mcp`. No HTTP stack: a `TcpStream` (or a `UnixStream` for the agent's
//! Unix socket), a request written by hand, the response head parsed with `httparse`. One connection per request
//! (`Connection: close`), connect and read timeouts, and a cap on everything read, so a
//! wrong or hostile server on the port cannot make the client hang or hoard memory.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::config::DEFAULT_LISTEN;
use crate::jobs::JobRecord;

/// The agent's default address as a URL, for `run --url` and `mcp --url`.
pub fn default_url() -> String {
    format!("http://{DEFAULT_LISTEN}")
}
/// Response head (status line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Response body. A job record holds at most two capped output streams (1 MiB each by
/// default); JSON escaping can grow control bytes sixfold.
pub const MAX_BODY: usize = 32 << 20;
const MAX_HEADERS: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Added to a long-poll's `wait` for the read timeout: the agent answers at `wait`.
const READ_MARGIN: Duration = Duration::from_secs(15);

/// Why a request got no usable answer from the agent.
#[derive(Debug)]
pub enum ClientError {
    /// The URL is not `http://HOST[:PORT]`.
    Url(String),
    /// Nothing accepted the connection.
    Connect { url: String, err: io::Error },
    /// The connection broke or timed out.
    Io { url: String, err: io::Error },
    /// Something answered, but not like the agent does.
    Protocol { url: String, why: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(why) => write!(f, "{why}"),
            Self::Connect { url, err } => write!(
                f,
                "cannot reach the agent at {url}: {err}; is it running? (systemctl status sudo-agent) or pass --url or --socket"
            ),
            Self::Io { url, err } => write!(f, "talking to the agent at {url} failed: {err}"),
            Self::Protocol { url, why } => write!(
                f,
                "the server at {url} does not answer like sudo-agent ({why}); check --url"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

/// A raw answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The agent's `{"error","message"}` body with its status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    pub status: u16,
    pub error: String,
    pub message: String,
}

/// What a submit or a poll came back with.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The job record (finished, or still running after a poll's wait).
    Job(Box<JobRecord>),
    /// 202 to a submit: the job runs on; poll it by id.
    Pending { id: String },
    /// 202 to `POST /request`: held until a human approves it with `approval`.
    Held(Held),
    /// Any non-2xx status.
    Refused(Refusal),
}

/// A held request as the agent announced it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    pub id: String,
    pub approval: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// A `POST` the agent answers like `/run`: a job record, a 202, or a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `/run`, with a code (or none, for `no_pin` rules).
    Run {
        pin: Option<String>,
        what: Submission,
    },
    /// `/request`: hold it for a human to approve (`no_pin` rules run at once).
    Request {
        what: Submission,
        reason: Option<String>,
    },
    /// `/approve`: run the held request `approval` with the human's code.
    Approve { approval: String, pin: String },
    /// `/deny`: end the held request `approval` unrun.
    Deny { approval: String },
}

impl Call {
    fn path(&self) -> &'static str {
        match self {
            Call::Run { .. } => "/run",
            Call::Request { .. } => "/request",
            Call::Approve { .. } => "/approve",
            Call::Deny { .. } => "/deny",
        }
    }

    fn body(&self, wait_s: u64) -> Value {
        let (what, fields) = match self {
            Call::Run { pin, what } => (Some(what), [("pin", pin.as_ref()), ("", None)]),
            Call::Request { what, reason } => {
                (Some(what), [("reason", reason.as_ref()), ("", None)])
            }
            Call::Approve { approval, pin } => {
                (None, [("approval", Some(approval)), ("pin", Some(pin))])
            }
            Call::Deny { approval } => (None, [("approval", Some(approval)), ("", None)]),
        };
        let mut body = serde_json::Map::new();
        for (key, value) in fields {
            if let Some(value) = value {
                body.insert(key.into(), value.as_str().into());
            }
        }
        match what {
            Some(Submission::Argv(argv)) => body.insert("argv".into(), argv.clone().into()),
            Some(Submission::Command(line)) => body.insert("command".into(), line.clone().into()),
            None => None,
        };
        if !matches!(self, Call::Deny { .. }) {
            body.insert("wait".into(), wait_s.into()); // `/deny` ends the job: nothing to wait for.
        }
        Value::Object(body)
    }
}

/// What to run: words as given (no splitting anywhere) or a line the agent splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    Argv(Vec<String>),
    Command(String),
}

/// The agent at one base URL or Unix socket.
#[derive(Debug, Clone)]
pub struct Client {
    /// For messages: `http://HOST:PORT` or `unix:PATH`.
    url: String,
    target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A connection of either kind; both carry the same HTTP.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

impl Client {
    /// `http://HOST[:PORT][/]`, HOST an IP address or `localhost`. The agent serves
    /// plain HTTP on loopback, so no TLS and no DNS (a resolver would add 30 KiB to a
    /// binary that must stay under 1 MiB, for a name that is always 127.0.0.1).
    pub fn new(url: &str) -> Result<Client, ClientError> {
        let bad = |why: &str| ClientError::Url(format!("--url {url:?} {why}"));
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            bad("must start with http:// (the agent speaks plain HTTP on loopback)")
        })?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad("must be http://HOST[:PORT] with no path"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]` alone has colons but no port.
            Some((host, port)) if !port.contains(']') => {
                let port = port
                    .parse()
                    .map_err(|_| bad("has a port that is not a number"))?;
                (host, port)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => host
                .parse()
                .map_err(|_| bad("needs an IP address or localhost as its host"))?,
        };
        Ok(Client {
            url: format!("http://{authority}"),
            target: Target::Tcp(SocketAddr::new(ip, port)),
        })
    }

    /// The agent's Unix socket (config `unix_socket.path`).
    pub fn unix(path: &Path) -> Client {
        Client {
            url: format!("unix:{}", path.display()),
            target: Target::Unix(path.to_path_buf()),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One `POST`; `wait_s` is how long the agent should hold the answer for the job.
    pub fn post(&self, call: &Call, wait_s: u64) -> Result<Answer, ClientError> {
        let body = call.body(wait_s).to_string();
        let response = self.request("POST", call.path(), Some(body.as_bytes()), wait_s)?;
        self.answer(response)
    }

    /// `GET /job/<id>?wait=S`: the record once the job ends or `wait_s` runs out.
    pub fn job(&self, id: &str, wait_s: u64) -> Result<Answer, ClientError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(Answer::Refused(Refusal {
                status: 404,
                error: "not_found".into(),
                message: format!("{id:?} is not a job id (32 hex characters)"),
            }));
        }
        let response = self.request("GET", &format!("/job/{id}?wait={wait_s}"), None, wait_s)?;
        self.answer(response)
    }

    /// `GET path` decoded as JSON, or the refusal.
    pub fn get_json(&self, path: &str) -> Result<Result<Value, Refusal>, ClientError> {
        let response = self.request("GET", path, None, 0)?;
        if (200..300).contains(&response.status) {
            serde_json::from_slice(&response.body)
                .map(Ok)
                .map_err(|e| self.protocol(format!("body is not JSON: {e}")))
        } else {
            Ok(Err(self.refusal(&response)))
        }
    }

    fn answer(&self, response: HttpResponse) -> Result<Answer, ClientError> {
        if !(200..300).contains(&response.status) {
            return Ok(Answer::Refused(self.refusal(&response)));
        }
        let body: Value = serde_json::from_slice(&response.body)
            .map_err(|e| self.protocol(format!("body is not JSON: {e}")))?;
        let id = body.get("id").and_then(Value::as_str);
        let approval = body.get("approval").and_then(Value::as_str);
        match (response.status, id) {
            (202, Some(id)) => Ok(match approval {
                Some(approval) => Answer::Held(Held {
                    id: id.to_string(),
                    approval: approval.to_string(),
                    expires_at: body["expires_at"].as_u64().unwrap_or(0),
                }),
                None => Answer::Pending { id: id.to_string() },
            }),
            (_, Some(_)) => job_record(body)
                .map(|r| Answer::Job(Box::new(r)))
                .ok_or_else(|| self.protocol("a 200 without a job record".into())),
            _ => Err(self.protocol(format!("a {} without a job id", response.status))),
        }
    }

    /// A non-2xx answer as a `Refusal`; a body that is not the agent's error shape still
    /// keeps its status, so the exit code stays right.
    fn refusal(&self, response: &HttpResponse) -> Refusal {
        let body: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        match (text("error"), text("message")) {
            (Some(error), Some(message)) => Refusal {
                status: response.status,
                error,
                message,
            },
            _ => Refusal {
                status: response.status,
                error: "http_error".into(),
                message: format!(
                    "HTTP {} from {}: {}",
                    response.status,
                    self.url,
                    String::from_utf8_lossy(&response.body[..response.body.len().min(200)]).trim()
                ),
            },
        }
    }

    fn protocol(&self, why: String) -> ClientError {
        ClientError::Protocol {
            url: self.url.clone(),
            why,
        }
    }

    fn io(&self, err: io::Error) -> ClientError {
        ClientError::Io {
            url: self.url.clone(),
            err,
        }
    }

    /// One request on a fresh connection. `wait_s` is how long the agent may hold the
    /// answer; the read timeout allows that plus a margin.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        wait_s: u64,
    ) -> Result<HttpResponse, ClientError> {
        let read_timeout = Duration::from_secs(wait_s).saturating_add(READ_MARGIN);
        let mut stream = self.connect(read_timeout)?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sudo-agent/{}\r\n\
             Accept: application/json\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            match &self.target {
                Target::Tcp(addr) => addr.to_string(),
                Target::Unix(_) => "localhost".into(),
            },
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .map_err(|e| self.io(e))?;
        read_response(&mut stream, method == "HEAD").map_err(|err| match err {
            ReadError::Io(err) => self.io(err),
            ReadError::Protocol(why) => self.protocol(why),
        })
    }

    /// A connection with its read timeout (and `READ_MARGIN` to write).
    fn connect(&self, read: Duration) -> Result<Box<dyn Conn>, ClientError> {
        let (read, write) = (Some(read), Some(READ_MARGIN));
        let stream: io::Result<Box<dyn Conn>> = match &self.target {
            Target::Tcp(addr) => TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).and_then(|s| {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)?;
                Ok(Box::new(s) as Box<dyn Conn>)
            }),
            Target::Unix(path) => UnixStream::connect(path).and_then(|s| {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)?;
                Ok(Box::new(s) as Box<dyn Conn>)
            }),
        };
        stream.map_err(|err| ClientError::Connect {
            url: self.url.clone(),
            err,
        })
    }
}

/// A job record from the agent's JSON; `None` when the body is not one.
fn job_record(v: Value) -> Option<JobRecord> {
    serde_json::from_value(v).ok()
}

enum ReadError {
    Io(io::Error),
    Protocol(String),
}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> Self {
        ReadError::Io(err)
    }
}

/// Reads one response: head up to `MAX_HEAD`, then a `Content-Length` body (or, without
/// one, until the server closes), never more than `MAX_BODY`.
fn read_response(stream: &mut impl Read, head_only: bool) -> Result<HttpResponse, ReadError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let (status, head_len, content_length) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ReadError::Protocol(
                "connection closed before a complete response head".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.unwrap_or(0);
                let mut length = None;
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        let text = std::str::from_utf8(header.value).unwrap_or("");
                        length = Some(text.trim().parse::<usize>().map_err(|_| {
                            ReadError::Protocol(format!("bad Content-Length {text:?}"))
                        })?);
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(ReadError::Protocol("chunked responses".into()));
                    }
                }
                break (status, len, length);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(ReadError::Protocol(format!(
                    "response head over {MAX_HEAD} bytes"
                )));
            }
            Err(err) => return Err(ReadError::Protocol(format!("not HTTP: {err}"))),
        }
    };
    if head_only {
        return Ok(HttpResponse {
            status,
            body: Vec::new(),
        });
    }
    let mut body = buf.split_off(head_len);
    if content_length.is_some_and(|n| n > MAX_BODY) || body.len() > MAX_BODY {
        return Err(ReadError::Protocol(format!(
            "response body over {MAX_BODY} bytes"
        )));
    }
    let want = content_length.unwrap_or(MAX_BODY);
    // `take` bounds the read even when the server sends more than it announced.
    let limit = (want.saturating_sub(body.len()) as u64).saturating_add(1);
    stream.take(limit).read_to_end(&mut body)?;
    match content_length {
        Some(n) if body.len() < n => Err(ReadError::Protocol(format!(
            "body ended after {} of {n} bytes",
            body.len()
        ))),
        Some(n) => {
            body.truncate(n);
            Ok(HttpResponse { status, body })
        }
        None if body.len() > MAX_BODY => Err(ReadError::Protocol(format!(
            "response body over {MAX_BODY} bytes"
        ))),
        None => Ok(HttpResponse { status, body }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Status;

    fn read(bytes: &[u8]) -> Result<HttpResponse, String> {
        read_response(&mut &bytes[..], false).map_err(|e| match e {
            ReadError::Io(e) => e.to_string(),
            ReadError::Protocol(why) => why,
        })
    }

    #[test]
    fn urls() {
        let c = Client::new("http://127.0.0.1:9999").unwrap();
        assert_eq!(c.target, Target::Tcp("127.0.0.1:9999".parse().unwrap()));
        let c = Client::new("http://[::1]:8080/").unwrap();
        assert_eq!(c.target, Target::Tcp("[::1]:8080".parse().unwrap()));
        assert_eq!(c.url(), "http://[::1]:8080");
        let c = Client::new("http://localhost").unwrap();
        assert_eq!(c.target, Target::Tcp("127.0.0.1:80".parse().unwrap()));
        for bad in [
            "https://127.0.0.1:9999",
            "127.0.0.1:9999",
            "http://127.0.0.1:99999",
            "http://host:9/run",
            "http://",
            "http://:9",
            "http://agent.example:9999",
        ] {
            assert!(Client::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        // Extra bytes past Content-Length are ignored; no length reads to EOF.
        let r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}garbage").unwrap();
        assert_eq!(r.body, b"{}");
        let r = read(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
        assert!(read(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(read(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(read(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").is_err());
        assert!(read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(read(huge.as_bytes()).unwrap_err().contains("over"));
        let endless_head = vec![b'x'; MAX_HEAD + 10];
        let mut head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        head.extend_from_slice(&endless_head);
        assert!(read(&head).is_err());
    }

    #[test]
    fn job_records_read_back_whole() {
        let record = JobRecord {
            id: "0".repeat(32),
            command: "sh -c 'exit 3'".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), "exit 3".into()],
            rule: "sh".into(),
            status: Status::Failed,
            exit_code: Some(3),
            signal: None,
            stdout: "out\n".into(),
            stderr: "é\u{1}".into(),
            truncated: true,
            submitted_at: "2026-01-01T00:00:00.000Z".into(),
            started_at: Some("2026-01-01T00:00:00.001Z".into()),
            finished_at: None,
            duration_ms: Some(7),
            result_file: Some("/tmp/r".into()),
            result_error: Some("disk full".into()),
            caller: Default::default(),
            approval: None,
            reason: None,
            expires_at: None,
            killed_by: Some("memory_limit".into()),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(job_record(json.clone()), Some(record));
        for field in ["status", "stdout", "argv", "truncated"] {
            let mut broken = json.clone();
            broken[field] = Value::from(12);
            assert_eq!(job_record(broken), None, "{field}");
        }
    }

    #[test]
    fn each_call_sends_its_own_fields() {
        let what = || Submission::Argv(vec!["df".into()]);
        let body = |call: Call| (call.path(), call.body(5));
        assert_eq!(
            body(Call::Run {
                pin: None,
                what: what()
            }),
            ("/run", serde_json::json!({"argv": ["df"], "wait": 5}))
        );
        assert_eq!(
            body(Call::Request {
                what: Submission::Command("df -h".into()),
                reason: Some("full".into())
            }),
            (
                "/request",
                serde_json::json!({"command": "df -h", "reason": "full", "wait": 5})
            )
        );
        assert_eq!(
            body(Call::Approve {
                approval: "K7QX".into(),
                pin: "123456".into()
            }),
            (
                "/approve",
                serde_json::json!({"approval": "K7QX", "pin": "123456", "wait": 5})
            )
        );
        // `/deny` takes the approval alone.
        assert_eq!(
            body(Call::Deny {
                approval: "K7QX".into()
            }),
            ("/deny", serde_json::json!({"approval": "K7QX"}))
        );
    }

    #[test]
    fn body_without_length_is_capped() {
        // A server that streams forever without Content-Length: stop at the cap.
        let head = &b"HTTP/1.1 200 OK\r\n\r\n"[..];
        let mut endless = head.chain(io::repeat(b'a'));
        match read_response(&mut endless, false) {
            Err(ReadError::Protocol(why)) => assert!(why.contains("over"), "{why}"),
            _ => panic!("an endless body must be refused"),
        }
    }
}
