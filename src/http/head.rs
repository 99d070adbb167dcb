//! A request head, parsed: `httparse` plus the bounds and the headers the agent reads
//! (length, connection, expect, and where a request comes from for the browser gate).
//! Pure, for the event loop and the fuzz targets.

use super::browser::Provenance;
use super::message::ApiError;

/// Request line plus headers.
pub const MAX_HEAD: usize = 8 * 1024;
/// Request body (decided from Content-Length before any of it is read).
pub const MAX_BODY: usize = 64 * 1024;
/// Headers parsed per request; more is answered with 431.
const MAX_HEADERS: usize = 32;

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
    /// Host, Origin and Sec-Fetch-Site, for the browser gate.
    pub provenance: Provenance,
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
    let mut provenance = Provenance::default();
    for header in req.headers.iter() {
        // Not UTF-8 is no allowed value: kept as the replacement character, it is
        // refused like any other unknown name.
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        if header.name.eq_ignore_ascii_case("host") {
            provenance.host.add(value);
        } else if header.name.eq_ignore_ascii_case("origin") {
            provenance.origin.add(value);
        } else if header.name.eq_ignore_ascii_case("sec-fetch-site") {
            provenance.fetch_site.add(value);
        } else if header.name.eq_ignore_ascii_case("content-length") {
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
        provenance,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::browser::Seen;
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
        assert_eq!(h.provenance, Provenance::default());
        let h = head(
            "POST /run HTTP/1.1\r\nhost: a\r\nHOST: b\r\nOrigin: https://x.example \r\n\
             Sec-Fetch-Site: cross-site\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.provenance.host, Seen::Repeated);
        assert_eq!(h.provenance.origin, Seen::Once("https://x.example".into()));
        assert_eq!(h.provenance.fetch_site, Seen::Once("cross-site".into()));
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
