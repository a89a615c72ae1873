//! Signal frames: the JSON body on the shared frame codec ([`crate::frame`]), an encoder and
//! an incremental decoder. Sans-IO.
//!
//! ```text
//! offset  size  field
//! 0       4     length: u32 big-endian, the bytes after this field (10 + body length)
//! 4       1     version: 1
//! 5       1     op: the original op number, | 0x80 in a reply
//! 6       8     request id: u64 big-endian, chosen by the requester, echoed in the reply
//! 14      ...   body: UTF-8 JSON (an object), or nothing
//! ```
//!
//! A body is at most [`MAX_BODY`] bytes. The decoder refuses a frame whose length field is
//! below 10 or above `10 + MAX_BODY`, an unknown version, and a body that is not JSON,
//! before buffering it: the connection is then closed (see `docs/SIGNAL.md`). It never
//! allocates more than one frame's worth.

use serde_json::Value;

use crate::frame as codec;

/// The protocol version this code speaks.
pub const VERSION: u8 = 1;

/// The largest body, in bytes (64 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// Bytes of the header after the length field: version, op, request id.
pub const HEADER_AFTER_LEN: usize = codec::HEADER_AFTER_LEN;

/// Bit set in the op of a reply.
pub const REPLY: u8 = codec::REPLY;

/// Ops, keeping the original numbering. Numbers are per direction: 0 from a client is
/// `Reg`, 0 from the server is `Top`.
pub mod op {
    /// Client to server: register with an id, body `{"Id": n}`; echoed.
    pub const REG: u8 = 0;
    /// Server to client: the client's own resource figures; reply body an object.
    pub const TOP: u8 = 0;
    /// Server to client: ping; empty reply body.
    pub const PING: u8 = 1;
    /// Server to client: shut down; reply `{"Pid": n}`, then the client exits.
    pub const SHUTDOWN: u8 = 2;
    /// Server to client, the first frame on a connection: `{"Nonce": hex}`, not replied
    /// to (the client's `Reg` answers it; see [`crate::signal::auth`]).
    pub const HELLO: u8 = 3;
}

/// One frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The op, with [`REPLY`] set in a reply.
    pub op: u8,
    /// The request id.
    pub request: u64,
    /// The body; `Value::Null` for an empty body.
    pub body: Value,
}

impl Frame {
    /// A request frame.
    pub fn request(op: u8, request: u64, body: Value) -> Self {
        Self { op, request, body }
    }

    /// The reply to this frame, with `body`.
    pub fn reply(&self, body: Value) -> Self {
        Self {
            op: self.op | REPLY,
            request: self.request,
            body,
        }
    }

    /// Whether this is a reply.
    pub fn is_reply(&self) -> bool {
        self.op & REPLY != 0
    }

    /// The op without the reply bit.
    pub fn base_op(&self) -> u8 {
        self.op & !REPLY
    }

    /// The frame's bytes. Fails only for a body over [`MAX_BODY`].
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let body = match &self.body {
            Value::Null => Vec::new(),
            value => serde_json::to_vec(value).map_err(|_| FrameError::BadBody)?,
        };
        if body.len() > MAX_BODY {
            return Err(FrameError::TooLong);
        }
        codec::encode(
            VERSION,
            self.op,
            self.request,
            &[&body],
            HEADER_AFTER_LEN + MAX_BODY,
        )
        .map_err(FrameError::from)
    }
}

/// Why bytes are not a frame. Any of these closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below the header's size or above the limit.
    #[error("frame length out of range")]
    TooLong,
    /// The version byte is not [`VERSION`].
    #[error("unsupported signal protocol version")]
    Version,
    /// The body is not JSON.
    #[error("frame body is not JSON")]
    BadBody,
}

impl From<codec::FrameError> for FrameError {
    fn from(error: codec::FrameError) -> Self {
        match error {
            codec::FrameError::Length => Self::TooLong,
            codec::FrameError::Version => Self::Version,
        }
    }
}

/// Accumulates bytes and yields whole frames.
#[derive(Debug)]
pub struct Decoder(codec::Decoder);

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self(codec::Decoder::new(
            VERSION,
            HEADER_AFTER_LEN,
            HEADER_AFTER_LEN + MAX_BODY,
        ))
    }

    /// Add bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.0.push(bytes);
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed. After an error the
    /// stream is unusable: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(raw) = self.0.next_frame()? else {
            return Ok(None);
        };
        let body = if raw.payload.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw.payload).map_err(|_| FrameError::BadBody)?
        };
        Ok(Some(Frame {
            op: raw.kind,
            request: raw.id,
            body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_registration_byte_for_byte() {
        let frame = Frame::request(op::REG, 7, json!({"Id": 3}));
        let bytes = frame.encode().unwrap();
        let mut expected = vec![0, 0, 0, 18, 1, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        expected.extend_from_slice(br#"{"Id":3}"#);
        assert_eq!(bytes, expected);
        let echo = frame.reply(frame.body.clone()).encode().unwrap();
        assert_eq!(echo.get(5), Some(&0x80));
    }

    #[test]
    fn an_empty_body_is_null() {
        let bytes = Frame::request(op::PING, u64::MAX, Value::Null)
            .encode()
            .unwrap();
        assert_eq!(
            bytes,
            [0, 0, 0, 10, 1, 1, 255, 255, 255, 255, 255, 255, 255, 255]
        );
        let mut decoder = Decoder::new();
        decoder.push(&bytes);
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_eq!(
            (frame.op, frame.request, frame.body),
            (1, u64::MAX, Value::Null)
        );
    }

    #[test]
    fn frames_split_and_joined_anywhere_decode() {
        let frames = [
            Frame::request(op::TOP, 1, Value::Null),
            Frame::request(op::SHUTDOWN, 2, json!({"Pid": 99})).reply(json!({"Pid": 99})),
            Frame::request(op::REG, 3, json!({"Id": 1, "x": "é"})),
        ];
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.encode().unwrap()).collect();
        for chunk in 1..stream.len() {
            let mut decoder = Decoder::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                decoder.push(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    got.push(frame);
                }
            }
            assert_eq!(got, frames, "chunk {chunk}");
        }
    }

    #[test]
    fn bad_frames_are_errors_before_buffering() {
        let mut decoder = Decoder::new();
        decoder.push(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLong));
        let mut decoder = Decoder::new();
        decoder.push(&[0, 0, 0, 9]);
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLong));
        let mut decoder = Decoder::new();
        decoder.push(&[0, 0, 0, 10, 2]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Version));
        let mut decoder = Decoder::new();
        decoder.push(&[0, 0, 0, 11, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'{']);
        assert_eq!(decoder.next_frame(), Err(FrameError::BadBody));
        let mut decoder = Decoder::new();
        decoder.push(&[0, 0, 0, 12, 1]);
        assert_eq!(decoder.next_frame(), Ok(None));
        let big = Frame::request(0, 0, Value::String("x".repeat(MAX_BODY)));
        assert_eq!(big.encode(), Err(FrameError::TooLong));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes, in any chunks: frames or an error, never a panic, and never a
            /// frame after an error is reported.
            #[test]
            fn arbitrary_bytes_never_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                chunk in 1usize..64,
            ) {
                let mut decoder = Decoder::new();
                'feed: for piece in bytes.chunks(chunk) {
                    decoder.push(piece);
                    loop {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => prop_assert!(frame.encode().is_ok()),
                            Ok(None) => break,
                            Err(_) => break 'feed,
                        }
                    }
                }
            }

            /// Encoding then decoding gives the frame back.
            #[test]
            fn frames_round_trip(
                op in any::<u8>(),
                request in any::<u64>(),
                key in "[A-Za-z]{1,8}",
                value in any::<i64>(),
                empty in any::<bool>(),
            ) {
                let body = if empty { Value::Null } else { json!({ key: value }) };
                let frame = Frame::request(op, request, body);
                let mut decoder = Decoder::new();
                decoder.push(&frame.encode().unwrap());
                prop_assert_eq!(decoder.next_frame().unwrap(), Some(frame));
                prop_assert_eq!(decoder.next_frame().unwrap(), None);
            }
        }
    }
}
