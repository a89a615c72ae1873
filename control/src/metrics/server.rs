//! The metrics server: `GET /metrics` over HTTP/1.1 on a TCP address, answered from a
//! [`Source`] on every request.
//!
//! - **One thread accepts**, waiting in `poll(2)` on the listener and a [`StopSignal`]
//!   ([`StopSignal::accept_until_stopped`]), so it stops at once with the node or manager.
//! - **A thread per connection**, at most [`MAX_CONNECTIONS`] at once; a connection over
//!   the cap gets `503` (written without waiting) and is closed. A scraper needs one.
//! - **Bounded requests**: a head is at most [`http::MAX_HEAD`] bytes and must arrive
//!   whole within [`REQUEST_TIMEOUT`] of the moment the server began waiting for it (not
//!   of the last byte, so a client that trickles bytes is cut off too); an idle keep-alive
//!   connection is closed after the same time. A write blocked for [`REQUEST_TIMEOUT`]
//!   closes the connection.
//! - **Bad input** (a malformed head, a body, another method or version, a head too long)
//!   is answered with its status and closes that connection only; nothing a client sends
//!   can panic the parser ([`http`], fuzzed by `fuzz/fuzz_targets/metrics_http.rs`).
//! - **Where it listens**: any address the config gives; one that is not loopback is
//!   logged as a warning when bound, since the metrics show the node's peers and traffic.

use core::time::Duration;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::thread;
use std::time::Instant;

use super::CONTENT_TYPE;
use super::http::{self, HttpError, Method, Parsed, Status, Target};
use crate::local::{ConnectionSlot, StopSignal};

/// At most this many connections are served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// A request head must arrive within this time; a write may block this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server serves: the exposition text on each `GET /metrics`.
pub trait Source: Send + Sync + 'static {
    /// The exposition text now, or why there is none (answered `503` with the reason).
    fn render(&self) -> Result<String, String>;
}

impl<F: Fn() -> Result<String, String> + Send + Sync + 'static> Source for F {
    fn render(&self) -> Result<String, String> {
        self()
    }
}

/// A bound metrics listener, not serving yet.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    local: SocketAddr,
}

impl MetricsServer {
    /// Bind `addr` (port 0: any free port; see [`Self::local_addr`]). A non-loopback
    /// address is allowed, and logged as a warning naming `who` (`node`, `manager`).
    pub fn bind(addr: SocketAddr, who: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() {
            log::warn!(
                "skywire {who}: metrics on {local}, which is not a loopback address: whoever \
                 can reach it sees this {who}'s routes, peers and traffic volumes (bind \
                 127.0.0.1 and let a local scraper or proxy reach it, or firewall the port)"
            );
        }
        Ok(Self { listener, local })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serve `source` on a new thread named `name` until `stop` is stopped. Connections
    /// open then end within [`REQUEST_TIMEOUT`].
    pub fn spawn(
        self,
        name: &str,
        source: impl Source,
        stop: StopSignal,
    ) -> io::Result<thread::JoinHandle<()>> {
        let source: Arc<dyn Source> = Arc::new(source);
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || self.serve(&source, &stop))
    }

    fn serve(&self, source: &Arc<dyn Source>, stop: &StopSignal) {
        let open = Arc::new(AtomicUsize::new(0));
        stop.accept_until_stopped(
            &format!("metrics on {}", self.local),
            self.listener.as_fd(),
            || self.listener.accept(),
            |(stream, _)| start_connection(stream, source, &open),
        );
    }
}

fn start_connection(stream: TcpStream, source: &Arc<dyn Source>, open: &Arc<AtomicUsize>) {
    let Some(slot) = ConnectionSlot::take_of(open, MAX_CONNECTIONS) else {
        // A fresh socket's buffer takes these few bytes without blocking; if not, the
        // client simply sees the connection closed.
        let busy = http::response(
            Status::Unavailable,
            "text/plain; charset=utf-8",
            b"too many connections to the metrics server\n",
            false,
            false,
        );
        let _ = stream.set_nonblocking(true);
        let _ = (&stream).write_all(&busy);
        return;
    };
    let source = Arc::clone(source);
    // If no thread can be had, the connection is closed with the closure.
    let _ = thread::Builder::new()
        .name("skywire-metrics-conn".to_owned())
        .spawn(move || {
            let _slot = slot;
            let _ = serve_connection(stream, &*source);
        });
}

/// Requests on one connection until it closes, errs, idles out or asks to close.
fn serve_connection(mut stream: TcpStream, source: &dyn Source) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; http::MAX_HEAD];
    let mut filled = 0usize;
    loop {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let (request, len) = loop {
            let seen = buf.get(..filled).unwrap_or_default();
            match http::parse_request(seen) {
                Parsed::Request { request, len } => break (request, len),
                Parsed::Error(e) => return refuse(&mut stream, e),
                Parsed::Incomplete => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return timed_out(&mut stream, filled);
            }
            stream.set_read_timeout(Some(left))?;
            let Some(room) = buf.get_mut(filled..) else {
                return refuse(&mut stream, HttpError::TooLarge);
            };
            match stream.read(room) {
                Ok(0) => return Ok(()),
                Ok(n) => filled += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return timed_out(&mut stream, filled);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        // Whatever followed the head is the start of the next request.
        buf.copy_within(len.min(filled)..filled, 0);
        filled -= len.min(filled);
        let head_only = request.method == Method::Head;
        let reply = match request.target {
            Target::Metrics => match source.render() {
                Ok(text) => http::response(
                    Status::Ok,
                    CONTENT_TYPE,
                    text.as_bytes(),
                    head_only,
                    request.keep_alive,
                ),
                Err(why) => http::response(
                    Status::Unavailable,
                    "text/plain; charset=utf-8",
                    format!("{why}\n").as_bytes(),
                    head_only,
                    request.keep_alive,
                ),
            },
            Target::Other => http::response(
                Status::NotFound,
                "text/plain; charset=utf-8",
                b"not found: the metrics are at /metrics\n",
                head_only,
                request.keep_alive,
            ),
        };
        stream.write_all(&reply)?;
        if !request.keep_alive {
            return Ok(());
        }
    }
}

/// Answer a refused request with its status, and close.
fn refuse(stream: &mut TcpStream, error: HttpError) -> io::Result<()> {
    let body = format!("{error}\n");
    stream.write_all(&http::response(
        error.status(),
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
        false,
    ))
}

/// The time for a request ran out: a client that had begun one hears `408`; an idle
/// keep-alive connection is closed without a word.
fn timed_out(stream: &mut TcpStream, filled: usize) -> io::Result<()> {
    if filled == 0 {
        return Ok(());
    }
    stream.write_all(&http::response(
        Status::RequestTimeout,
        "text/plain; charset=utf-8",
        b"the request did not arrive in time\n",
        false,
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    fn serve(source: impl Source) -> (SocketAddr, StopSignal, thread::JoinHandle<()>) {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), "test").unwrap();
        let addr = server.local_addr();
        let stop = StopSignal::new().unwrap();
        let thread = server.spawn("test-metrics", source, stop.clone()).unwrap();
        (addr, stop, thread)
    }

    /// One response: status code, headers (lower-case names), body.
    fn read_response(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>, String) {
        read_answer(reader, false)
    }

    /// One response, to a `HEAD` if `head` (no body follows its headers).
    fn read_answer(reader: &mut impl BufRead, head: bool) -> (u16, Vec<(String, String)>, String) {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let code = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(": ").unwrap();
            headers.push((n.to_ascii_lowercase(), v.to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        let mut body = vec![0u8; if head { 0 } else { len }];
        reader.read_exact(&mut body).unwrap();
        (code, headers, String::from_utf8(body).unwrap())
    }

    #[test]
    fn serves_metrics_keeps_alive_and_refuses_the_rest() {
        let (addr, stop, thread) = serve(|| Ok("skywire_x 1\n".to_owned()));
        let stream = TcpStream::connect(addr).unwrap();
        let mut reader = io::BufReader::new(stream.try_clone().unwrap());
        let mut w = &stream;
        // Two pipelined requests on one connection, then a 404, then a bad one.
        w.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\n")
            .unwrap();
        let (code, headers, body) = read_response(&mut reader);
        assert_eq!(code, 200);
        assert_eq!(body, "skywire_x 1\n");
        assert!(headers.contains(&("content-type".into(), CONTENT_TYPE.into())));
        let (code, headers, body) = read_answer(&mut reader, true);
        assert_eq!(code, 200);
        assert!(body.is_empty());
        assert!(headers.contains(&("content-length".into(), "12".into())));
        w.write_all(b"GET /other HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut reader).0, 404);
        w.write_all(b"DELETE /metrics HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut reader).0, 405);
        // Closed after the refusal.
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        stop.stop();
        thread.join().unwrap();
    }

    #[test]
    fn an_unavailable_source_is_503_and_garbage_closes_only_its_connection() {
        let (addr, stop, thread) = serve(|| Err("the node did not answer".to_owned()));
        let garbage = TcpStream::connect(addr).unwrap();
        (&garbage).write_all(&[0xff; 100]).unwrap();
        (&garbage).write_all(b"\r\n\r\n").unwrap();
        let mut reader = io::BufReader::new(garbage);
        assert_eq!(read_response(&mut reader).0, 400);
        let good = TcpStream::connect(addr).unwrap();
        (&good).write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let (code, _, body) = read_response(&mut io::BufReader::new(good));
        assert_eq!(code, 503);
        assert_eq!(body, "the node did not answer\n");
        stop.stop();
        thread.join().unwrap();
    }

    #[test]
    fn a_head_too_long_is_431_and_connections_are_capped() {
        let (addr, stop, thread) = serve(|| Ok(String::new()));
        let long = TcpStream::connect(addr).unwrap();
        let mut head = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        head.resize(http::MAX_HEAD + 10, b'a');
        // The server may close before reading all of it; the answer is there either way.
        let _ = (&long).write_all(&head);
        assert_eq!(read_response(&mut io::BufReader::new(long)).0, 431);
        // MAX_CONNECTIONS idle clients hold every place; the next one hears 503.
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // Each is accepted (and holds its place) before the next is looked at: wait until
        // the server took them all.
        let deadline = Instant::now() + Duration::from_secs(5);
        let answer = loop {
            let extra = TcpStream::connect(addr).unwrap();
            (&extra)
                .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .unwrap();
            let code = read_response(&mut io::BufReader::new(extra)).0;
            if code == 503 || Instant::now() > deadline {
                break code;
            }
        };
        assert_eq!(answer, 503);
        drop(idle);
        stop.stop();
        thread.join().unwrap();
    }
}
