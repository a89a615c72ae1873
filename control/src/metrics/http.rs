//! The HTTP/1.1 the metrics server speaks, sans-IO: [`parse_request`] reads a request head
//! from the bytes received so far, [`response`] writes a whole response.
//!
//! Only what a Prometheus scraper (or `curl`) sends is understood: `GET` and `HEAD`, an
//! origin-form target, HTTP/1.0 or 1.1, headers without bodies. Everything else is an
//! [`HttpError`] with its status code; the server answers it and closes the connection.
//!
//! Invariants: the parser looks at most [`MAX_HEAD`] bytes, never allocates, never
//! panics (it only slices with `get` and splits), and a request it accepts has no body
//! (`Content-Length` other than 0 and any `Transfer-Encoding` are refused, so nothing a
//! client sends after a head can be mistaken for the next request). Line ends may be CRLF
//! or a bare LF (RFC 9112 §2.2 allows a server to take LF).

use core::fmt::Write as _;

/// The longest request head read, in bytes: request line and headers. A scraper's is a
/// few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;

/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

/// A request head, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// `GET`, or `HEAD` (the same answer without its body).
    pub method: Method,
    /// What was asked for.
    pub target: Target,
    /// Whether the client keeps the connection open for another request (HTTP/1.1 unless
    /// it sent `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
}

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// [`METRICS_PATH`], with or without a query string (which is ignored).
    Metrics,
    /// Any other path: 404.
    Other,
}

/// Why a request was refused; each has its status code ([`HttpError::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The head is longer than [`MAX_HEAD`] without ending.
    #[error("request head longer than {MAX_HEAD} bytes")]
    TooLarge,
    /// The request line is not `METHOD TARGET HTTP/x.y`, or the target is not a path.
    #[error("malformed request line")]
    RequestLine,
    /// A header line is not `name: value` (or is an obsolete folded line).
    #[error("malformed header line")]
    Header,
    /// The request has a body (a `Content-Length` other than 0, or a
    /// `Transfer-Encoding`): nothing here takes one.
    #[error("a request with a body")]
    Body,
    /// A method other than `GET` and `HEAD`.
    #[error("method not allowed")]
    Method,
    /// A version other than HTTP/1.0 and HTTP/1.1.
    #[error("HTTP version not supported")]
    Version,
}

impl HttpError {
    /// The status to answer with.
    pub fn status(self) -> Status {
        match self {
            Self::TooLarge => Status::HeaderTooLarge,
            Self::RequestLine | Self::Header | Self::Body => Status::BadRequest,
            Self::Method => Status::MethodNotAllowed,
            Self::Version => Status::VersionNotSupported,
        }
    }
}

/// What [`parse_request`] found in the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The head has not ended yet: read more (unless [`MAX_HEAD`] bytes are there, which
    /// is [`HttpError::TooLarge`] instead).
    Incomplete,
    /// A whole head, `len` bytes long (what follows belongs to the next request).
    Request {
        /// The request.
        request: Request,
        /// Bytes of `buf` the head took.
        len: usize,
    },
    /// A request to refuse.
    Error(HttpError),
}

/// Parse the request head at the start of `buf`.
pub fn parse_request(buf: &[u8]) -> Parsed {
    // Empty lines before a request line are to be ignored (RFC 9112 §2.2).
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let window = buf.get(..buf.len().min(MAX_HEAD)).unwrap_or_default();
    let Some(end) = head_end(window, start) else {
        return if buf.len() >= MAX_HEAD {
            Parsed::Error(HttpError::TooLarge)
        } else {
            Parsed::Incomplete
        };
    };
    let head = window.get(start..end).unwrap_or_default();
    match parse_head(head) {
        Ok(request) => Parsed::Request {
            request,
            len: end_of_blank_line(window, end),
        },
        Err(e) => Parsed::Error(e),
    }
}

/// Where the head's last header line ends (the index of the `\n` before the blank line),
/// if the blank line is in `buf`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(nl) = buf.get(at..)?.iter().position(|&b| b == b'\n') {
        let nl = at + nl;
        match buf.get(nl + 1..)? {
            [b'\n', ..] | [b'\r', b'\n', ..] => return Some(nl),
            _ => at = nl + 1,
        }
    }
    None
}

/// The index just past the blank line that follows the `\n` at `end`.
fn end_of_blank_line(buf: &[u8], end: usize) -> usize {
    match buf.get(end + 1) {
        Some(b'\r') => end + 3,
        _ => end + 2,
    }
}

/// The request line and headers (lines split on `\n`, a trailing `\r` dropped).
fn parse_head(head: &[u8]) -> Result<Request, HttpError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().ok_or(HttpError::RequestLine)?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::RequestLine);
    };
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        v if v.starts_with(b"HTTP/") => return Err(HttpError::Version),
        _ => return Err(HttpError::RequestLine),
    };
    if method.is_empty() || !method.iter().copied().all(is_token) {
        return Err(HttpError::RequestLine);
    }
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => return Err(HttpError::Method),
    };
    if !target.starts_with(b"/") || !target.iter().all(|b| b.is_ascii_graphic()) {
        return Err(HttpError::RequestLine);
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let target = if path == METRICS_PATH.as_bytes() {
        Target::Metrics
    } else {
        Target::Other
    };
    let mut keep_alive = http11;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(HttpError::Header);
        };
        let (name, value) = (line.get(..colon), line.get(colon + 1..));
        let (Some(name), Some(value)) = (name, value) else {
            return Err(HttpError::Header);
        };
        // An empty name, or a folded line (starting with a space): both refused.
        if name.is_empty() || !name.iter().copied().all(is_token) {
            return Err(HttpError::Header);
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            if value != b"0" {
                return Err(HttpError::Body);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(HttpError::Body);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if option.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    Ok(Request {
        method,
        target,
        keep_alive,
    })
}

/// A `tchar` of RFC 9110 §5.6.2.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The statuses the server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200: the metrics.
    Ok,
    /// 400: a malformed request, or one with a body.
    BadRequest,
    /// 404: a path other than [`METRICS_PATH`].
    NotFound,
    /// 405: a method other than `GET` and `HEAD`.
    MethodNotAllowed,
    /// 408: the request did not arrive in time.
    RequestTimeout,
    /// 431: the head is longer than [`MAX_HEAD`].
    HeaderTooLarge,
    /// 500: the metrics could not be written.
    InternalError,
    /// 503: the node or manager did not answer, or too many connections.
    Unavailable,
    /// 505: not HTTP/1.0 or 1.1.
    VersionNotSupported,
}

impl Status {
    /// The code and reason phrase.
    pub fn line(self) -> (u16, &'static str) {
        match self {
            Self::Ok => (200, "OK"),
            Self::BadRequest => (400, "Bad Request"),
            Self::NotFound => (404, "Not Found"),
            Self::MethodNotAllowed => (405, "Method Not Allowed"),
            Self::RequestTimeout => (408, "Request Timeout"),
            Self::HeaderTooLarge => (431, "Request Header Fields Too Large"),
            Self::InternalError => (500, "Internal Server Error"),
            Self::Unavailable => (503, "Service Unavailable"),
            Self::VersionNotSupported => (505, "HTTP Version Not Supported"),
        }
    }
}

/// A whole HTTP/1.1 response: status line, `Content-Type`, `Content-Length`,
/// `Connection: close` unless `keep_alive`, `Allow` on a 405, and `body` unless
/// `head_only` (a `HEAD` gets the headers a `GET` would).
pub fn response(
    status: Status,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> Vec<u8> {
    let (code, reason) = status.line();
    let mut head = String::with_capacity(160);
    // Writing to a String cannot fail.
    let _ = write!(
        head,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if status == Status::MethodNotAllowed {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<(Request, usize), HttpError> {
        match parse_request(text.as_bytes()) {
            Parsed::Request { request, len } => Ok((request, len)),
            Parsed::Error(e) => Err(e),
            Parsed::Incomplete => panic!("incomplete: {text:?}"),
        }
    }

    #[test]
    fn a_scrape_is_a_get_of_metrics() {
        let text = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9586\r\nUser-Agent: \
                    Prometheus/2.42.0\r\nAccept: text/plain;version=0.0.4\r\n\r\nGET";
        let (req, len) = request(text).unwrap();
        assert_eq!(
            req,
            Request {
                method: Method::Get,
                target: Target::Metrics,
                keep_alive: true
            }
        );
        assert_eq!(&text[len..], "GET");
    }

    #[test]
    fn heads_queries_bare_newlines_and_http10() {
        let (req, len) = request("HEAD /metrics?x=1 HTTP/1.0\n\n").unwrap();
        assert_eq!(req.method, Method::Head);
        assert_eq!(req.target, Target::Metrics);
        assert!(!req.keep_alive);
        assert_eq!(len, 28);
        let (req, _) = request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert_eq!(req.target, Target::Other);
        assert!(req.keep_alive);
        let (req, _) =
            request("\r\nGET /metricsx HTTP/1.1\r\nconnection: foo, close\r\n\r\n").unwrap();
        assert_eq!(req.target, Target::Other);
        assert!(!req.keep_alive);
        let (req, _) = request("GET /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(req.target, Target::Metrics);
    }

    #[test]
    fn incomplete_heads_wait_and_long_ones_are_refused() {
        assert_eq!(parse_request(b""), Parsed::Incomplete);
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\n"),
            Parsed::Incomplete
        );
        assert_eq!(parse_request(b"\r\n\r\n"), Parsed::Incomplete);
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD, b'a');
        assert_eq!(parse_request(&long), Parsed::Error(HttpError::TooLarge));
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&long), Parsed::Error(HttpError::TooLarge));
    }

    #[test]
    fn bad_requests_have_their_status() {
        let cases = [
            ("POST /metrics HTTP/1.1\r\n\r\n", HttpError::Method),
            ("GET /metrics HTTP/2.0\r\n\r\n", HttpError::Version),
            ("GET /metrics FTP/1.0\r\n\r\n", HttpError::RequestLine),
            ("GET  /metrics HTTP/1.1\r\n\r\n", HttpError::RequestLine),
            (
                "GET http://x/metrics HTTP/1.1\r\n\r\n",
                HttpError::RequestLine,
            ),
            ("GET /metrics HTTP/1.1 x\r\n\r\n", HttpError::RequestLine),
            ("G(T /metrics HTTP/1.1\r\n\r\n", HttpError::RequestLine),
            (
                "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
                HttpError::Header,
            ),
            (
                "GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n",
                HttpError::Header,
            ),
            ("GET /metrics HTTP/1.1\r\n: x\r\n\r\n", HttpError::Header),
            (
                "GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                HttpError::Body,
            ),
            (
                "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::Body,
            ),
        ];
        for (text, error) in cases {
            assert_eq!(request(text).unwrap_err(), error, "{text:?}");
        }
        assert_eq!(HttpError::Method.status().line().0, 405);
        assert_eq!(HttpError::TooLarge.status().line().0, 431);
        assert_eq!(HttpError::Body.status().line().0, 400);
    }

    #[test]
    fn responses_have_length_and_connection() {
        let r = response(Status::Ok, "text/plain", b"abc", false, true);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: \
             keep-alive\r\n\r\nabc"
        );
        let r = String::from_utf8(response(
            Status::MethodNotAllowed,
            "text/plain",
            b"no",
            true,
            false,
        ))
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(r.contains("Allow: GET, HEAD\r\n"));
        assert!(r.ends_with("Content-Length: 2\r\nAllow: GET, HEAD\r\nConnection: close\r\n\r\n"));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            match parse_request(&bytes) {
                Parsed::Request { len, .. } => proptest::prop_assert!(len <= bytes.len()),
                Parsed::Incomplete | Parsed::Error(_) => {}
            }
        }
    }
}
