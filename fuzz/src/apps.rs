//! Targets for the app socket (`docs/APPS.md`): the opening line a local program sends
//! and the lines the node answers with (`control::node::apps::protocol`), and the frames a
//! stream's bytes travel in (`dataplane::stack::appframe`). Both read bytes from programs
//! of other users, which must never panic the node or make it read past a request line.
//!
//! `app_request`: the first byte picks how many bytes arrive at a time; the rest is what the
//! program sent. The server's reading is replayed ([`protocol::scan_opening`] on what a
//! peek would see, as `server.rs` does) and must find the same line as a scan of all the
//! bytes at once, taking nothing after its newline. The line then goes to
//! [`protocol::parse_request`]; the bytes are also read as the answer lines a client parses,
//! and as a RESET reason ([`ResetReason::parse`]).
//!
//! `app_frames`: the first byte `k` says that the next `k % 8` bytes are chunk sizes (each
//! byte `b` is `b + 1` bytes, used in turn); the rest is a stream's bytes, decoded by
//! [`Decoder`] in those chunks and all at once.

use serde::Serialize;
use serde::de::DeserializeOwned;
use skywire_control::node::apps::protocol::{
    self, AppRequest, ErrorKind, Handed, ListenerLine, Listening, MAX_BACKLOG, MAX_DIAL_TIMEOUT,
    MAX_REQUEST, Reply, RequestError, ResetReason, Scan, StreamOpened, WatchLine, WatchOpened,
};
use skywire_dataplane::stack::appframe::{
    self, Decoder, Frame, FrameError, Kind, MAX_PAYLOAD, MAX_REASON,
};

/// How reading an opening line ends.
#[derive(Debug, PartialEq, Eq)]
enum Opening<'a> {
    /// The line, without its newline.
    Line(&'a [u8]),
    /// The bytes ended before a newline (the server answers `bad_request`, or nothing if
    /// there were none).
    Ended,
    /// More than [`MAX_REQUEST`] bytes before the newline.
    TooLong,
}

/// The opening as the server reads it: `chunk` more bytes arrive at a time, it peeks at
/// what waits (at most one byte past the longest line), scans, and takes only the line.
fn read_like_the_server(chunk: usize, bytes: &[u8]) -> Opening<'_> {
    let mut taken = 0;
    let mut arrived = 0;
    loop {
        arrived = (arrived + chunk).min(bytes.len());
        let room = (MAX_REQUEST + 1).saturating_sub(taken).max(1);
        let waiting = &bytes[taken..arrived.min(taken + room)];
        if waiting.is_empty() {
            if arrived == bytes.len() {
                return Opening::Ended;
            }
            continue;
        }
        match protocol::scan_opening(taken, waiting) {
            Scan::Line(n) => {
                assert!(
                    (1..=waiting.len()).contains(&n),
                    "took {n} of {}",
                    waiting.len()
                );
                assert_eq!(waiting[n - 1], b'\n', "a line ends at its newline");
                assert!(
                    !waiting[..n - 1].contains(&b'\n'),
                    "took past the first newline"
                );
                assert!(taken + n - 1 <= MAX_REQUEST, "a line over the limit");
                return Opening::Line(&bytes[..taken + n - 1]);
            }
            Scan::Partial(n) => {
                assert_eq!(n, waiting.len(), "a partial line takes all that waits");
                assert!(!waiting.contains(&b'\n'), "a partial line with a newline");
                taken += n;
                assert!(taken <= MAX_REQUEST, "a partial line over the limit");
            }
            Scan::TooLong => {
                let end = waiting.iter().position(|&b| b == b'\n');
                assert!(
                    taken + end.unwrap_or(waiting.len()) > MAX_REQUEST,
                    "too long too early"
                );
                return Opening::TooLong;
            }
        }
    }
}

/// The opening judged on all the bytes at once.
fn read_at_once(bytes: &[u8]) -> Opening<'_> {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(end) if end <= MAX_REQUEST => Opening::Line(&bytes[..end]),
        Some(_) => Opening::TooLong,
        None if bytes.len() > MAX_REQUEST => Opening::TooLong,
        None => Opening::Ended,
    }
}

/// The opening line and everything a client reads: see the module doc.
pub fn app_request(data: &[u8]) {
    let (chunk, bytes) = match data.split_first() {
        // 1 to 128 bytes at a time, or 40 to 5120 in steps of 40.
        Some((&first, rest)) if first < 128 => (usize::from(first) + 1, rest),
        Some((&first, rest)) => (usize::from(first - 127) * 40, rest),
        None => (1, data),
    };
    let opening = read_like_the_server(chunk, bytes);
    assert_eq!(opening, read_at_once(bytes), "chunks of {chunk}");
    if let Opening::Line(line) = opening {
        request(line);
    }
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    answer::<Reply<StreamOpened>>(line);
    answer::<Reply<Listening>>(line);
    answer::<ListenerLine>(line);
    answer::<Reply<Handed>>(line);
    answer::<Reply<WatchOpened>>(line);
    answer::<WatchLine>(line);
    if let Ok(text) = core::str::from_utf8(line) {
        reset_reason(text);
    }
}

/// A request line: refused for what it is, or a request within the protocol's bounds that
/// the client library writes back to a line parsing to the same request.
fn request(line: &[u8]) {
    let parsed = protocol::parse_request(line);
    assert_eq!(
        matches!(parsed, Err(RequestError::NotUtf8)),
        core::str::from_utf8(line).is_err(),
        "NotUtf8 exactly for bytes that are not UTF-8"
    );
    let request = match parsed {
        Ok(request) => request,
        Err(RequestError::UnknownOp(op)) => {
            assert!(op.chars().count() <= 64, "an unknown op shown whole");
            return;
        }
        Err(_) => return,
    };
    match &request {
        AppRequest::Dial { port, timeout, .. } => {
            assert_ne!(*port, 0);
            assert!(
                !timeout.is_zero() && *timeout <= MAX_DIAL_TIMEOUT,
                "{timeout:?}"
            );
            assert_eq!(timeout.subsec_nanos() % 1_000_000, 0, "whole milliseconds");
        }
        AppRequest::Listen {
            port,
            backlog,
            allow,
        } => {
            assert_ne!(*port, 0);
            assert!((1..=MAX_BACKLOG).contains(backlog), "backlog {backlog}");
            assert!(allow.as_ref().is_none_or(|keys| !keys.is_empty()));
        }
        AppRequest::Accept { .. } | AppRequest::HandOver { .. } | AppRequest::Watch => {}
    }
    let again = request.to_line();
    let (newline, body) = again.split_last().expect("a line");
    assert_eq!(*newline, b'\n');
    assert!(!body.contains(&b'\n'), "a written request is one line");
    assert_eq!(protocol::parse_request(body).as_ref(), Ok(&request));
    if body.len() <= MAX_REQUEST {
        assert_eq!(protocol::scan_opening(0, &again), Scan::Line(again.len()));
    }
}

/// A line as a client reads an answer: what parses writes back to a line that parses to
/// the same value.
fn answer<T: Answer + DeserializeOwned + PartialEq + core::fmt::Debug>(line: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(line) else {
        return;
    };
    let again = value.line();
    assert_eq!(again.last(), Some(&b'\n'));
    let back: T = serde_json::from_slice(&again).expect("a written answer parses");
    assert_eq!(back, value);
}

/// The answer types' own writers.
trait Answer {
    fn line(&self) -> Vec<u8>;
}

impl<T: Serialize> Answer for Reply<T> {
    fn line(&self) -> Vec<u8> {
        self.to_line()
    }
}

impl Answer for ListenerLine {
    fn line(&self) -> Vec<u8> {
        self.to_line()
    }
}

/// The node's engine writes these by hand (`dataplane::engine`'s `apps` module); serde's
/// form is what they must read back as.
impl Answer for WatchLine {
    fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// A RESET's text: read back from its own writing to the same kind and message, and
/// written exactly as it came when it had a kind.
fn reset_reason(text: &str) {
    let reason = ResetReason::parse(text);
    let written = reason.to_string();
    assert_eq!(ResetReason::parse(&written), reason);
    if reason.kind != ErrorKind::Reset || text.starts_with("reset: ") {
        assert_eq!(written, text);
    }
}

/// A whole frame as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whole {
    /// A DATA frame's payload, its pieces joined (empty frames included).
    Data(Vec<u8>),
    /// FIN.
    Fin,
    /// RESET and its reason.
    Reset(String),
    /// HANDED (the node's answer to a hand-over).
    Handed,
}

/// What decoding a stream's bytes made of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The whole frames, in order.
    pub frames: Vec<Whole>,
    /// The payload so far of a DATA frame the input ends in.
    pub partial: Option<Vec<u8>>,
    /// The frame the decoder refused, if it did.
    pub error: Option<FrameError>,
    /// Whether the input ended between frames (after an error: where the error was found).
    pub at_boundary: bool,
    /// Whether a FIN was decoded.
    pub fin: bool,
}

/// Decode `bytes` in chunks of `sizes` in turn (all at once if `sizes` is empty), checking
/// each step; the re-encoded whole frames must be the input up to the last boundary.
fn decode(bytes: &[u8], sizes: &[usize]) -> Decoded {
    let mut decoder = Decoder::new();
    let mut out = Decoded {
        frames: Vec::new(),
        partial: None,
        error: None,
        at_boundary: true,
        fin: false,
    };
    // The length the current DATA frame's header announced.
    let mut announced = 0;
    let (mut consumed, mut boundary) = (0, 0);
    let mut sizes = sizes.iter().cycle();
    'chunks: while consumed < bytes.len() {
        let size = sizes.next().copied().unwrap_or(bytes.len());
        let end = (consumed + size).min(bytes.len());
        let mut input = &bytes[consumed..end];
        while !input.is_empty() {
            let (used, frame) = match decoder.decode(input) {
                Ok(step) => step,
                Err(error) => {
                    out.error = Some(error);
                    break 'chunks;
                }
            };
            assert!(used > 0, "no progress on {} bytes", input.len());
            assert!(used <= input.len());
            assert!(decoder.data_left() <= MAX_PAYLOAD);
            match frame {
                Some(Frame::Data(piece)) => {
                    assert!(
                        !piece.is_empty() && piece.len() == used,
                        "a DATA piece is what was used"
                    );
                    let payload = out.partial.get_or_insert_with(Vec::new);
                    payload.extend_from_slice(piece);
                    if decoder.data_left() == 0 {
                        let payload = out.partial.take().unwrap_or_default();
                        assert_eq!(payload.len(), announced, "a DATA frame as announced");
                        out.frames.push(Whole::Data(payload));
                    }
                }
                Some(Frame::Fin) => {
                    assert!(decoder.fin());
                    out.frames.push(Whole::Fin);
                }
                Some(Frame::Reset(reason)) => {
                    assert!(reason.len() <= MAX_REASON, "a reason of {}", reason.len());
                    out.frames.push(Whole::Reset(reason));
                }
                Some(Frame::Handed) => out.frames.push(Whole::Handed),
                // A DATA header with a payload to come.
                None if decoder.data_left() > 0 && out.partial.is_none() => {
                    announced = decoder.data_left();
                    out.partial = Some(Vec::new());
                }
                // A header completed at a boundary without a frame: an empty DATA frame.
                None if decoder.at_boundary() => out.frames.push(Whole::Data(Vec::new())),
                None => {}
            }
            consumed += used;
            input = &input[used..];
            if decoder.at_boundary() {
                boundary = consumed;
            }
        }
    }
    out.at_boundary = decoder.at_boundary();
    out.fin = decoder.fin();
    if out.error.is_none() {
        assert_eq!(consumed, bytes.len());
    }
    assert_eq!(
        encode(&out.frames),
        bytes[..boundary],
        "whole frames re-encode to the bytes they came from"
    );
    out
}

/// Frames as a sender writes them.
fn encode(frames: &[Whole]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for frame in frames {
        match frame {
            Whole::Data(payload) => {
                bytes.extend_from_slice(&appframe::header(Kind::Data, payload.len()));
                bytes.extend_from_slice(payload);
            }
            Whole::Fin => bytes.extend_from_slice(&appframe::header(Kind::Fin, 0)),
            Whole::Reset(reason) => bytes.extend(appframe::reset(reason)),
            Whole::Handed => bytes.extend_from_slice(&appframe::header(Kind::Handed, 0)),
        }
    }
    bytes
}

/// The chunk sizes and the stream's bytes of an `app_frames` input.
fn frames_input(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let k = usize::from(first % 8).min(rest.len());
    let (sizes, bytes) = rest.split_at(k);
    (sizes.iter().map(|&b| usize::from(b) + 1).collect(), bytes)
}

/// The decoding of an `app_frames` input, in its chunks (the seed checks use it).
pub fn frames_decoded(data: &[u8]) -> Decoded {
    let (sizes, bytes) = frames_input(data);
    decode(bytes, &sizes)
}

/// A stream's frames in chunks and at once: see the module doc.
pub fn app_frames(data: &[u8]) {
    let (sizes, bytes) = frames_input(data);
    let chunked = decode(bytes, &sizes);
    let whole = decode(bytes, &[]);
    assert_eq!(chunked, whole, "chunks {sizes:?} against all at once");
}
