//! Frames of the manager protocol: the shared codec ([`crate::frame`]) with a JSON body
//! and, after the key proof, a MAC tag; and reading them from a connection.
//!
//! The tag is the first 16 bytes of BLAKE3 keyed with the direction's key, over the
//! direction's sequence number (u64 big-endian, implicit, starting at 0) and the frame's
//! bytes after the length field without the tag. A frame that fails the tag, or whose body
//! is not JSON, ends the connection; a JSON body of the wrong shape is answered with a
//! `bad_request` error by whoever parses it ([`Frame::parse`], [`Frame::reply`]).

use core::fmt;
use std::io::{self, Read as _};
use std::net::TcpStream;
use std::time::Instant;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::{ErrorKind, HEADER_AFTER_LEN, MAX_FRAME, ProtoError, REPLY, TAG_LEN, VERSION};
use crate::frame as codec;

/// One frame: its kind, request id and JSON body (empty for none).
///
/// The body stays bytes until its reader knows what it expects: [`Self::parse`] for a
/// request's body, [`Self::reply`] for a reply's. Building a frame serialises a typed
/// body; no untyped JSON value crosses the protocol.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The kind, with [`REPLY`] set in replies.
    pub kind: u8,
    /// The request id.
    pub id: u64,
    /// The JSON body; empty when the frame has none.
    pub body: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &format_args!("{:#04x}", self.kind))
            .field("id", &self.id)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

/// The body of every reply: `{"ok": ...}` or `{"error": {"kind", "message"}}`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReplyBody<T> {
    Ok(T),
    Error(ErrorBody),
}

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    kind: String,
    message: String,
}

/// JSON of plain data: serialising cannot fail; if it ever did, the body is empty and the
/// peer answers `bad_request` rather than this side panicking.
fn json<T: Serialize + ?Sized>(body: &T) -> Vec<u8> {
    match serde_json::to_vec(body) {
        Ok(bytes) if bytes != b"null" => bytes,
        _ => Vec::new(),
    }
}

/// Parse a body; an empty one reads as JSON `null`.
fn from_body<T: DeserializeOwned>(body: &[u8]) -> serde_json::Result<T> {
    if body.is_empty() {
        serde_json::from_slice(b"null")
    } else {
        serde_json::from_slice(body)
    }
}

impl Frame {
    /// A request of `kind` with a typed body (`&()` for none).
    pub fn request<T: Serialize + ?Sized>(kind: u8, id: u64, body: &T) -> Self {
        Self {
            kind,
            id,
            body: json(body),
        }
    }

    /// The successful reply to a request of `kind`.
    pub fn ok<T: Serialize + ?Sized>(kind: u8, id: u64, body: &T) -> Self {
        Self {
            kind: kind | REPLY,
            id,
            body: json(&ReplyBody::Ok(body)),
        }
    }

    /// An error reply to a request of `kind`.
    pub fn error(kind: u8, id: u64, error: &ProtoError) -> Self {
        let body: ReplyBody<()> = ReplyBody::Error(ErrorBody {
            kind: error.kind.as_str().to_owned(),
            message: error.message.clone(),
        });
        Self {
            kind: kind | REPLY,
            id,
            body: json(&body),
        }
    }

    /// True for replies.
    pub fn is_reply(&self) -> bool {
        self.kind & REPLY != 0
    }

    /// The kind without the reply bit.
    pub fn base_kind(&self) -> u8 {
        self.kind & !REPLY
    }

    /// The body of a request, typed; a body of another shape is a `bad_request`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ProtoError> {
        from_body(&self.body)
            .map_err(|e| ProtoError::new(ErrorKind::BadRequest, format!("bad body: {e}")))
    }

    /// The `ok` of a reply, typed, or the error it carries.
    pub fn reply<T: DeserializeOwned>(&self) -> Result<T, ProtoError> {
        let bad = |e: serde_json::Error| {
            ProtoError::new(ErrorKind::BadRequest, format!("bad reply: {e}"))
        };
        // An empty reply body is an `ok` without a value.
        let body = if self.body.is_empty() {
            ReplyBody::Ok(from_body(b"null").map_err(bad)?)
        } else {
            serde_json::from_slice(&self.body).map_err(bad)?
        };
        match body {
            ReplyBody::Ok(value) => Ok(value),
            ReplyBody::Error(error) => Err(ProtoError {
                kind: ErrorKind::from_name(&error.kind),
                message: error.message,
            }),
        }
    }
}

/// Why bytes are not a frame. Any of these closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below the header's size or above the limit.
    #[error("frame length out of range")]
    Length,
    /// The version byte is not [`VERSION`].
    #[error("unsupported manager protocol version")]
    Version,
    /// The MAC tag does not verify.
    #[error("frame authentication failed")]
    Tag,
    /// The body is not JSON.
    #[error("frame body is not JSON")]
    Body,
}

impl From<codec::FrameError> for FrameError {
    fn from(error: codec::FrameError) -> Self {
        match error {
            codec::FrameError::Length => Self::Length,
            codec::FrameError::Version => Self::Version,
        }
    }
}

/// One direction's MAC state: the key and the next sequence number.
#[derive(Clone)]
pub struct Mac {
    key: [u8; 32],
    seq: u64,
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac(<key>, seq {})", self.seq)
    }
}

impl Mac {
    /// A MAC state for a fresh connection: sequence number 0.
    pub(super) fn new(key: [u8; 32]) -> Self {
        Self { key, seq: 0 }
    }

    /// The tag of the next frame, whose bytes after the length field are `parts` joined;
    /// moves the sequence number on.
    fn tag(&mut self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&self.seq.to_be_bytes());
        for part in parts {
            hasher.update(part);
        }
        self.seq = self.seq.wrapping_add(1);
        let mut tag = [0u8; TAG_LEN];
        hasher.finalize_xof().fill(&mut tag);
        tag
    }
}

/// Encode `frame`, with a tag when `mac` is given. A frame over [`MAX_FRAME`] is refused
/// before the sequence number moves.
pub fn encode(frame: &Frame, mac: Option<&mut Mac>) -> Result<Vec<u8>, FrameError> {
    let tag_len = if mac.is_some() { TAG_LEN } else { 0 };
    if HEADER_AFTER_LEN + frame.body.len() + tag_len > MAX_FRAME {
        return Err(FrameError::Length);
    }
    match mac {
        Some(mac) => {
            let header = codec::header(VERSION, frame.kind, frame.id);
            let tag = mac.tag(&[&header, &frame.body]);
            codec::encode(
                VERSION,
                frame.kind,
                frame.id,
                &[&frame.body, &tag],
                MAX_FRAME,
            )
        }
        None => codec::encode(VERSION, frame.kind, frame.id, &[&frame.body], MAX_FRAME),
    }
    .map_err(FrameError::from)
}

/// The largest frame before the key proof (`HELLO`, `AUTH` and its reply are far
/// smaller): a peer that has proved nothing cannot make a connection hold 1 MiB.
pub const MAX_AUTH_FRAME: usize = 4096;

/// Accumulates bytes from a connection and yields whole frames.
#[derive(Debug)]
pub struct Decoder {
    codec: codec::Decoder,
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// An empty decoder taking frames up to [`MAX_FRAME`].
    pub fn new() -> Self {
        Self::with_limit(MAX_FRAME)
    }

    /// An empty decoder taking frames up to `limit` bytes after the length field.
    pub fn with_limit(limit: usize) -> Self {
        let limit = limit.min(MAX_FRAME);
        Self {
            codec: codec::Decoder::new(VERSION, HEADER_AFTER_LEN, limit),
            limit,
        }
    }

    /// Change the largest frame accepted (after the key proof: [`MAX_FRAME`]).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_FRAME);
    }

    /// Add bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.codec.push(bytes);
    }

    /// Bytes held that are not a whole frame yet.
    pub fn buffered(&self) -> usize {
        self.codec.buffered()
    }

    /// The next whole frame (`Ok(None)`: more bytes needed), checking its tag when `mac` is
    /// given. After an error the stream is unusable: close the connection.
    pub fn next_frame(&mut self, mac: Option<&mut Mac>) -> Result<Option<Frame>, FrameError> {
        let tag_len = if mac.is_some() { TAG_LEN } else { 0 };
        self.codec
            .set_bounds(HEADER_AFTER_LEN + tag_len, self.limit);
        let Some(raw) = self.codec.next_frame()? else {
            return Ok(None);
        };
        let mut body = raw.payload;
        if let Some(mac) = mac {
            let at = body.len().checked_sub(TAG_LEN).ok_or(FrameError::Length)?;
            let tag = body.split_off(at);
            let header = codec::header(VERSION, raw.kind, raw.id);
            let expected = mac.tag(&[&header, &body]);
            if !constant_time_eq(&tag, &expected) {
                return Err(FrameError::Tag);
            }
        }
        if !body.is_empty() && serde_json::from_slice::<IgnoredAny>(&body).is_err() {
            return Err(FrameError::Body);
        }
        Ok(Some(Frame {
            kind: raw.kind,
            id: raw.id,
            body,
        }))
    }
}

/// How a connection ended while a frame was being read.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    /// The peer closed the connection between frames.
    #[error("closed")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    ClosedMidFrame,
    /// No whole frame arrived before the deadline.
    #[error("timed out")]
    TimedOut,
    /// The bytes are not a frame of this protocol (or fail its tag).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Read from `stream` until `decoder` yields a frame, giving up at `deadline` if one is
/// given (an absolute limit: a peer trickling bytes cannot stretch it). An error, or the
/// stream ending, is the connection's end.
pub fn read_frame(
    stream: &mut TcpStream,
    decoder: &mut Decoder,
    mut mac: Option<&mut Mac>,
    deadline: Option<Instant>,
) -> Result<Frame, ConnectionEnd> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(frame) = decoder.next_frame(mac.as_deref_mut())? {
            return Ok(frame);
        }
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConnectionEnd::TimedOut);
            }
            stream.set_read_timeout(Some(left))?;
        }
        match stream.read(&mut buf) {
            Ok(0) if decoder.buffered() > 0 => return Err(ConnectionEnd::ClosedMidFrame),
            Ok(0) => return Err(ConnectionEnd::Closed),
            Ok(n) => decoder.push(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if deadline.is_some()
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
            {
                return Err(ConnectionEnd::TimedOut);
            }
            Err(e) => return Err(ConnectionEnd::Io(e)),
        }
    }
}

/// Equal slices, compared in time that does not depend on where they differ.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
