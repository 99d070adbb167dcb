//! Plain HTTP data shared by the event loop (`server`) and the routes (`api`): a parsed
//! request, a response, and the one mapping from an API error to its status and body.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use super::browser::Refused;
use crate::policy::Caller;
use crate::sys::is_loopback;

/// A complete request as the event loop hands it to the routes.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The part after `?`, empty when absent.
    pub query: String,
    pub body: Vec<u8>,
    pub peer: Peer,
    /// Who sent it, as far as the kernel said: `via` and `uid` (the routes add the
    /// user name).
    pub caller: Caller,
}

/// Where a request came from: a TCP address, or the Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl Peer {
    /// On this machine: a loopback address, or the Unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            Peer::Tcp(addr) => is_loopback(addr.ip()),
            Peer::Unix => true,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix => f.write_str("unix socket"),
        }
    }
}

impl Request {
    /// Value of `name` in the query string (`?wait=5`), without percent-decoding: the
    /// agent's parameters are plain numbers.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

/// A header in `Response::headers` that replaces the default `application/json`.
const CONTENT_TYPE: &str = "Content-Type";

/// A response body. Shared: every connection sending the same answer (a job's record,
/// perhaps megabytes) holds the one copy.
pub type Body = Arc<Vec<u8>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Extra headers beyond Content-Length and Connection (and Content-Type, unless set
    /// here).
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    /// A JSON response; serializing plain data structs cannot fail, but if it ever did the
    /// client gets a 500 instead of the process panicking.
    pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
        match encode_json(value) {
            Ok(body) => Response::shared(status, Arc::new(body)),
            Err(_) => ApiError::Internal("response could not be encoded".into()).response(),
        }
    }

    /// A JSON response whose body is already encoded (and perhaps being sent elsewhere).
    pub fn shared(status: u16, body: Body) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// A response that is not JSON (the Prometheus text of `/metrics`).
    pub fn text(status: u16, content_type: &str, body: String) -> Response {
        Response {
            status,
            headers: vec![(CONTENT_TYPE, content_type.to_string())],
            body: Arc::new(body.into_bytes()),
        }
    }

    /// Status line and headers, ready for the socket; the body goes after them (or, for
    /// HEAD, does not, though Content-Length still gives its length).
    pub fn head(&self, keep_alive: bool) -> Vec<u8> {
        let content_type = self
            .headers
            .iter()
            .find(|(name, _)| *name == CONTENT_TYPE)
            .map_or("application/json", |(_, value)| value.as_str());
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason(self.status),
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        );
        for (name, value) in self.headers.iter().filter(|(n, _)| *n != CONTENT_TYPE) {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// `value` as JSON plus a newline, its buffer cut to size: a shared answer is held as
/// long as its slowest reader needs it. (A large buffer is mapped memory: growing and
/// cutting it moves pages, not bytes, and untouched capacity is never resident.)
pub fn encode_json<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut body = serde_json::to_vec(value)?;
    body.push(b'\n');
    body.shrink_to_fit();
    Ok(body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Everything a request can fail with; `response` is the only place that turns one into
/// a status and an `{"error","message"}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    BadRequest(String),
    InvalidCode,
    NotAllowed,
    Forbidden,
    /// A web page, or a name that may be DNS rebinding (see `browser`).
    Browser(Refused),
    NotFound,
    MethodNotAllowed(&'static str),
    Timeout,
    LengthRequired,
    TooLarge,
    HeadTooLarge,
    LockedOut {
        retry_after_s: u64,
    },
    Busy,
    /// `approvals.max_pending` requests already wait for a human.
    TooManyHeld(usize),
    /// Not among `approvals.approvers` (or the kernel could not say who it is).
    NotApprover,
    /// Answers not yet read by their clients fill `send_queue_bytes`.
    Overloaded,
    Unavailable(String),
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::InvalidCode => 401,
            Self::NotAllowed | Self::Forbidden | Self::Browser(_) | Self::NotApprover => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::Timeout => 408,
            Self::LengthRequired => 411,
            Self::TooLarge => 413,
            Self::HeadTooLarge => 431,
            Self::LockedOut { .. } => 429,
            Self::Busy | Self::TooManyHeld(_) | Self::Overloaded | Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::InvalidCode => "invalid_code",
            Self::NotAllowed => "not_allowed",
            Self::Forbidden | Self::Browser(_) | Self::NotApprover => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Timeout => "request_timeout",
            Self::LengthRequired => "length_required",
            Self::TooLarge => "too_large",
            Self::HeadTooLarge => "header_too_large",
            Self::LockedOut { .. } => "locked_out",
            Self::Busy | Self::TooManyHeld(_) | Self::Overloaded => "busy",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    pub fn response(&self) -> Response {
        let message = self.to_string();
        let mut response = Response::json(
            self.status(),
            &ErrorBody {
                error: self.code(),
                message: &message,
            },
        );
        match self {
            Self::LockedOut { retry_after_s } => response
                .headers
                .push(("Retry-After", retry_after_s.to_string())),
            Self::MethodNotAllowed(allow) => response.headers.push(("Allow", (*allow).to_string())),
            Self::Overloaded => response.headers.push(("Retry-After", "1".to_string())),
            _ => {}
        }
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRequest(why) => write!(f, "{why}"),
            Self::InvalidCode => write!(
                f,
                "the code is wrong, expired or already used; wait for a new code"
            ),
            Self::NotAllowed => write!(f, "no rule in the policy allows this command"),
            Self::Forbidden => write!(f, "only loopback clients may use this agent"),
            Self::Browser(refused) => write!(f, "{refused}"),
            Self::NotFound => write!(f, "no such resource"),
            Self::MethodNotAllowed(allow) => write!(f, "method not allowed here; use {allow}"),
            Self::Timeout => write!(f, "the request was not received in time"),
            Self::LengthRequired => {
                write!(f, "chunked bodies are not accepted; send Content-Length")
            }
            Self::TooLarge => write!(f, "the body is larger than 64 KiB"),
            Self::HeadTooLarge => write!(
                f,
                "the request line and headers are larger than 8 KiB or too many"
            ),
            Self::LockedOut { retry_after_s } => {
                write!(
                    f,
                    "too many wrong codes; locked out, retry in {retry_after_s} s"
                )
            }
            Self::Busy => write!(f, "the job queue is full; try again later"),
            Self::TooManyHeld(max) => write!(
                f,
                "{max} requests already await approval (approvals.max_pending); approve, deny \
                 or let them expire, then ask again"
            ),
            Self::NotApprover => write!(
                f,
                "only the users and groups in approvals.approvers may approve or deny, and \
                 the kernel did not name this caller as one of them"
            ),
            Self::Overloaded => write!(
                f,
                "answers not yet read by slow clients fill the send queue (send_queue_bytes); \
                 try again in a moment"
            ),
            Self::Unavailable(why) | Self::Internal(why) => write!(f, "{why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_and_headers() {
        let r = ApiError::LockedOut { retry_after_s: 30 }.response();
        assert_eq!(r.status, 429);
        assert_eq!(r.headers, vec![("Retry-After", "30".to_string())]);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "locked_out");
        assert!(body["message"].as_str().unwrap().contains("30 s"));
        let not_found = ApiError::NotFound.response();
        let head = String::from_utf8(not_found.head(false)).unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(head.contains("Connection: close\r\n"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", not_found.body.len())));
        assert!(head.ends_with("\r\n\r\n"));
        let busy = ApiError::Overloaded.response();
        assert_eq!((busy.status, busy.headers[0].0), (503, "Retry-After"));
    }

    #[test]
    fn json_is_encoded_with_no_spare_capacity() {
        let value = serde_json::json!({"stdout": "\u{0}".repeat(1000)});
        let body = encode_json(&value).unwrap();
        assert_eq!(body.len(), body.capacity());
        assert_eq!(body.len(), 6 * 1000 + r#"{"stdout":""}"#.len() + 1);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            value
        );
    }

    #[test]
    fn query_params() {
        let req = Request {
            method: "GET".into(),
            path: "/job/x".into(),
            query: "a=1&wait=5".into(),
            body: Vec::new(),
            peer: Peer::Tcp("127.0.0.1:1".parse().unwrap()),
            caller: Caller::default(),
        };
        assert_eq!(req.query_param("wait"), Some("5"));
        assert_eq!(req.query_param("b"), None);
    }
}
