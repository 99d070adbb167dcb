//! Plain HTTP data shared by the event loop (`server`) and the routes (`api`): a parsed
//! request, a response, and the one mapping from an API error to its status and body.

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

/// A complete request as the event loop hands it to the routes.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The part after `?`, empty when absent.
    pub query: String,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Extra headers beyond Content-Length and Connection (and Content-Type, unless set
    /// here).
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response; serializing plain data structs cannot fail, but if it ever did the
    /// client gets a 500 instead of the process panicking.
    pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Response {
                    status,
                    headers: Vec::new(),
                    body,
                }
            }
            Err(_) => ApiError::Internal("response could not be encoded".into()).response(),
        }
    }

    /// A response that is not JSON (the Prometheus text of `/metrics`).
    pub fn text(status: u16, content_type: &str, body: String) -> Response {
        Response {
            status,
            headers: vec![(CONTENT_TYPE, content_type.to_string())],
            body: body.into_bytes(),
        }
    }

    /// Status line, headers and body, ready for the socket.
    pub fn to_bytes(&self, keep_alive: bool) -> Vec<u8> {
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
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
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
    NotFound,
    MethodNotAllowed(&'static str),
    Timeout,
    LengthRequired,
    TooLarge,
    HeadTooLarge,
    LockedOut { retry_after_s: u64 },
    Busy,
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
            Self::NotAllowed | Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::Timeout => 408,
            Self::LengthRequired => 411,
            Self::TooLarge => 413,
            Self::HeadTooLarge => 431,
            Self::LockedOut { .. } => 429,
            Self::Busy | Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::InvalidCode => "invalid_code",
            Self::NotAllowed => "not_allowed",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Timeout => "request_timeout",
            Self::LengthRequired => "length_required",
            Self::TooLarge => "too_large",
            Self::HeadTooLarge => "header_too_large",
            Self::LockedOut { .. } => "locked_out",
            Self::Busy => "busy",
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
        let bytes = String::from_utf8(ApiError::NotFound.response().to_bytes(false)).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 404 Not Found\r\n"), "{bytes}");
        assert!(bytes.contains("Connection: close\r\n"));
    }

    #[test]
    fn query_params() {
        let req = Request {
            method: "GET".into(),
            path: "/job/x".into(),
            query: "a=1&wait=5".into(),
            body: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
        };
        assert_eq!(req.query_param("wait"), Some("5"));
        assert_eq!(req.query_param("b"), None);
    }
}
