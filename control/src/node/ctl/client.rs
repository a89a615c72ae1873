//! The client's side of the control socket: one request, one typed answer.

use core::time::Duration;
use std::io::{self, BufReader, ErrorKind as IoErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::local::{self, ConnectFailure, LineRead, read_line};

use super::protocol::{ErrorKind, MAX_RESPONSE, Op, Outcome, Request, Response, StatusReply};

/// How long `skywire status` waits for the node by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The socket does not exist or nothing listens on it.
    #[error("is `skywire node` running? cannot connect to its control socket {}", path.display())]
    NotRunning {
        /// The socket's path.
        path: PathBuf,
        /// `NotFound` or `ConnectionRefused`.
        #[source]
        source: io::Error,
    },
    /// The operating system refused the connection (the socket or its folder belongs to
    /// another user).
    #[error(
        "permission denied on the control socket {}: run as root or as the user running `skywire node`",
        path.display()
    )]
    PermissionDenied {
        /// The socket's path.
        path: PathBuf,
        /// The `connect` error.
        #[source]
        source: io::Error,
    },
    /// The node answered that this user may not use its socket.
    #[error(
        "permission denied by the node on {}: {message}; run as root or as the user running `skywire node`",
        path.display()
    )]
    Denied {
        /// The socket's path.
        path: PathBuf,
        /// The node's explanation.
        message: String,
    },
    /// The node answered with an error other than `permission`.
    #[error("{message} ({kind}, from the node at {})", path.display())]
    Refused {
        /// The socket's path.
        path: PathBuf,
        /// The error kind it sent.
        kind: ErrorKind,
        /// The node's explanation.
        message: String,
    },
    /// Connecting failed for another reason.
    #[error("cannot connect to the control socket {}", path.display())]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// The `connect` error.
        #[source]
        source: io::Error,
    },
    /// The node did not answer in time.
    #[error("the node at {} did not answer within {} s", path.display(), timeout.as_secs_f64())]
    Timeout {
        /// The socket's path.
        path: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
    /// Sending the request or reading the answer failed.
    #[error("talking to the node at {} failed", path.display())]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The node closed the connection before it said anything (it is stopping, or it
    /// made room for another client).
    #[error("the node at {} closed the connection before answering (is it stopping?)", path.display())]
    Closed {
        /// The socket's path.
        path: PathBuf,
    },
    /// The answer was not a valid response to the request.
    #[error("the node at {} sent a bad response: {reason}", path.display())]
    BadResponse {
        /// The socket's path.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

impl CtlError {
    /// Whether the node is not there or cannot answer: exit code 69 (service unavailable).
    /// That is a missing or refused socket, a timeout, an `unavailable` answer, and a
    /// connection the node closed or reset before answering (a node that is stopping).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::NotRunning { .. }
            | Self::Timeout { .. }
            | Self::Closed { .. }
            | Self::Refused {
                kind: ErrorKind::Unavailable,
                ..
            } => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }

    /// Whether the node sent the request on over the mesh and nothing came back in time
    /// (a ping without a pong): asking again may work.
    pub fn is_no_reply(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                kind: ErrorKind::NoReply,
                ..
            }
        )
    }

    /// Whether the node found its config file bad (a reload): exit code 78.
    pub fn is_bad_config(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                kind: ErrorKind::BadConfig,
                ..
            }
        )
    }

    /// Whether this user may not talk to the node: exit code 77 (permission denied).
    pub fn is_permission(&self) -> bool {
        matches!(self, Self::PermissionDenied { .. } | Self::Denied { .. })
    }
}

/// Ask the node listening on `path` for its status, waiting at most `timeout` in all.
pub fn request_status(path: &Path, timeout: Duration) -> Result<StatusReply, CtlError> {
    request(path, Op::Status, timeout)
}

/// Send `op` to the node listening on `path` and return its `ok` body as a `T` (the op's
/// reply type: see [`Op`]), waiting at most `timeout` in all; an error answer becomes a
/// [`CtlError`].
pub fn request<T: serde::de::DeserializeOwned>(
    path: &Path,
    op: Op,
    timeout: Duration,
) -> Result<T, CtlError> {
    let request = Request { id: 1, op };
    let response: Response<T> = exchange(path, &request, timeout)?;
    match response.outcome {
        Outcome::Ok(body) if response.id == Some(request.id) => Ok(body),
        Outcome::Ok(_) => Err(CtlError::BadResponse {
            path: path.to_owned(),
            reason: format!(
                "an answer for request {:?}, not {}",
                response.id, request.id
            ),
        }),
        Outcome::Error(body) if body.kind == ErrorKind::Permission => Err(CtlError::Denied {
            path: path.to_owned(),
            message: body.message,
        }),
        Outcome::Error(body) => Err(CtlError::Refused {
            path: path.to_owned(),
            kind: body.kind,
            message: body.message,
        }),
    }
}

/// Connect, send `request`, read one response line and parse it.
fn exchange<T: serde::de::DeserializeOwned>(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response<T>, CtlError> {
    let deadline = Instant::now() + timeout;
    let stream = local::connect(path).map_err(|failure| {
        let path = path.to_owned();
        match failure {
            ConnectFailure::NotRunning(source) => CtlError::NotRunning { path, source },
            ConnectFailure::PermissionDenied(source) => CtlError::PermissionDenied { path, source },
            ConnectFailure::Other(source) => CtlError::Connect { path, source },
        }
    })?;
    let io_error = |source: io::Error| {
        if matches!(
            source.kind(),
            IoErrorKind::WouldBlock | IoErrorKind::TimedOut
        ) {
            CtlError::Timeout {
                path: path.to_owned(),
                timeout,
            }
        } else {
            CtlError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };

    let mut line = serde_json::to_vec(request).map_err(|e| CtlError::BadResponse {
        path: path.to_owned(),
        reason: format!("cannot encode the request: {e}"),
    })?;
    line.push(b'\n');
    stream
        .set_write_timeout(Some(remaining(deadline)))
        .map_err(io_error)?;
    match (&stream).write_all(&line) {
        Ok(()) => {}
        // The node may answer and close before reading (a `permission` answer, or too many
        // connections): its answer is still there to read.
        Err(e)
            if matches!(
                e.kind(),
                IoErrorKind::BrokenPipe | IoErrorKind::ConnectionReset
            ) => {}
        Err(e) => return Err(io_error(e)),
    }

    let mut reader = BufReader::new(DeadlineReader {
        stream: &stream,
        deadline,
    });
    let mut answer = Vec::new();
    let bad = |reason: &str| CtlError::BadResponse {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    match read_line(&mut reader, MAX_RESPONSE, &mut answer).map_err(io_error)? {
        LineRead::Line => {}
        LineRead::Eof => {
            return Err(CtlError::Closed {
                path: path.to_owned(),
            });
        }
        LineRead::Truncated => {
            return Err(bad("the connection closed in the middle of the answer"));
        }
        LineRead::TooLong => {
            return Err(bad(&format!(
                "the answer is longer than {MAX_RESPONSE} bytes"
            )));
        }
    }
    serde_json::from_slice(&answer).map_err(|e| bad(&e.to_string()))
}

/// Time left until `deadline`, at least a millisecond (a zero timeout means "none" to std).
fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// Reads from the stream, each read waiting only until the overall deadline.
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(IoErrorKind::TimedOut.into());
        }
        self.stream
            .set_read_timeout(Some(remaining(self.deadline)))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ctl::protocol::tests::sample_status;
    use crate::node::ctl::server::tests::{FakeSource, Running, TempDir};
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;
    use std::thread;

    #[test]
    fn status_from_a_running_server() {
        let tmp = TempDir::new();
        let path = tmp.0.join("node.sock");
        let _running = Running::start(&path, FakeSource(Some(sample_status())));
        let reply = request_status(&path, DEFAULT_TIMEOUT).unwrap();
        assert_eq!(reply, StatusReply::from(&sample_status()));
    }

    #[test]
    fn a_missing_or_dead_socket_means_not_running() {
        let tmp = TempDir::new();
        let path = tmp.0.join("node.sock");
        let err = request_status(&path, DEFAULT_TIMEOUT).unwrap_err();
        assert!(matches!(err, CtlError::NotRunning { .. }), "{err:?}");
        assert!(err.is_unavailable());
        assert!(err.to_string().contains("is `skywire node` running?"));
        assert!(err.to_string().contains(&path.display().to_string()));

        drop(UnixListener::bind(&path).unwrap());
        let err = request_status(&path, DEFAULT_TIMEOUT).unwrap_err();
        assert!(matches!(err, CtlError::NotRunning { .. }), "{err:?}");
    }

    #[test]
    fn a_stopped_engine_is_unavailable() {
        let tmp = TempDir::new();
        let path = tmp.0.join("node.sock");
        let _running = Running::start(&path, FakeSource(None));
        let err = request_status(&path, DEFAULT_TIMEOUT).unwrap_err();
        assert!(
            matches!(
                err,
                CtlError::Refused {
                    kind: ErrorKind::Unavailable,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_unavailable());
    }

    /// A one-connection server that reads the request line and answers `answer` (or
    /// nothing).
    fn scripted(path: &Path, answer: Option<&'static [u8]>) -> thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(&stream).read_line(&mut request).unwrap();
            assert_eq!(request, "{\"id\":1,\"op\":\"status\"}\n");
            match answer {
                Some(answer) => stream.write_all(answer).unwrap(),
                None => thread::sleep(Duration::from_secs(2)),
            }
        })
    }

    #[test]
    fn a_permission_answer_is_a_permission_error() {
        let tmp = TempDir::new();
        let path = tmp.0.join("node.sock");
        // As the real server does: answer at once, without reading the request, and close.
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .write_all(
                    b"{\"id\":null,\"error\":{\"kind\":\"permission\",\"message\":\"uid 1000 may not\"}}\n",
                )
                .unwrap();
        });
        let err = request_status(&path, DEFAULT_TIMEOUT).unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, CtlError::Denied { .. }), "{err:?}");
        assert!(err.is_permission());
        assert!(err.to_string().contains("uid 1000 may not"), "{err}");
    }

    #[test]
    fn silence_is_a_timeout() {
        let tmp = TempDir::new();
        let path = tmp.0.join("node.sock");
        let server = scripted(&path, None);
        let started = Instant::now();
        let err = request_status(&path, Duration::from_millis(100)).unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(1500));
        server.join().unwrap();
        assert!(matches!(err, CtlError::Timeout { .. }), "{err:?}");
        assert!(err.is_unavailable());
    }

    #[test]
    fn a_connection_closed_without_an_answer_is_unavailable() {
        // What a node that is stopping does to a request it will not answer.
        let tmp = TempDir::new();
        let path = tmp.0.join("node.sock");
        let server = scripted(&path, Some(&b""[..]));
        let err = request_status(&path, DEFAULT_TIMEOUT).unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, CtlError::Closed { .. }), "{err:?}");
        assert!(err.is_unavailable());
    }

    #[test]
    fn garbage_is_a_bad_response() {
        for answer in [
            &b"hello\n"[..],
            b"{\"id\":1}\n",
            b"{\"id\":2,\"ok\":{}}\n",
            b"{\"id\":1,\"ok\":{}}",
        ] {
            let tmp = TempDir::new();
            let path = tmp.0.join("node.sock");
            let server = scripted(&path, Some(answer));
            let err = request_status(&path, DEFAULT_TIMEOUT).unwrap_err();
            server.join().unwrap();
            assert!(matches!(err, CtlError::BadResponse { .. }), "{err:?}");
            assert!(!err.is_unavailable() && !err.is_permission());
        }
    }

    #[test]
    fn a_wrong_id_is_a_bad_response() {
        let tmp = TempDir::new();
        let path = tmp.0.join("node.sock");
        let mut line = serde_json::to_vec(&Response {
            id: Some(2),
            outcome: Outcome::Ok(StatusReply::from(&sample_status())),
        })
        .unwrap();
        line.push(b'\n');
        let line: &'static [u8] = line.leak();
        let server = scripted(&path, Some(line));
        let err = request_status(&path, DEFAULT_TIMEOUT).unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, CtlError::BadResponse { .. }), "{err:?}");
    }
}
