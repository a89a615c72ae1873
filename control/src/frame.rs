//! The frame codec of the control plane's binary protocols: signal (viscript and its apps)
//! and the node-manager protocol use the same header, written once here. Sans-IO.
//!
//! ```text
//! offset  size  field
//! 0       4     length: u32 big-endian, the bytes after this field (10 + payload)
//! 4       1     version
//! 5       1     kind: the protocol's op or message kind (a reply sets 0x80)
//! 6       8     request id: u64 big-endian, chosen by the requester, echoed in the reply
//! 14      n     payload
//! ```
//!
//! The codec stops at bytes. It checks the length against the bounds its protocol gives
//! and the version byte (as soon as it arrives, before the rest of the frame is buffered),
//! and hands out the kind, the id and the payload. What the payload holds is the
//! protocol's business: signal reads a JSON body (`crate::signal::frame`); the manager
//! protocol reads a JSON body followed by a MAC tag over the header and body
//! (`crate::manager::proto::frame`).
//!
//! Invariants: bytes from the peer never panic; the decoder never holds more than one
//! frame of its maximum length plus what was pushed with it; after an error the stream is
//! unusable and the connection must be closed.

/// Bytes of the length field.
pub const LEN_FIELD: usize = 4;

/// Bytes of the header after the length field: version, kind, request id.
pub const HEADER_AFTER_LEN: usize = 10;

/// Bit set in the kind of a reply, by both protocols.
pub const REPLY: u8 = 0x80;

/// One frame, as the codec sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The kind (a protocol's op), with [`REPLY`] set in a reply.
    pub kind: u8,
    /// The request id.
    pub id: u64,
    /// Everything after the header.
    pub payload: Vec<u8>,
}

/// Why bytes are not a frame. Either closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is outside the protocol's bounds (or the frame would be).
    #[error("frame length out of range")]
    Length,
    /// The version byte is not the protocol's.
    #[error("unsupported protocol version")]
    Version,
}

/// The header bytes after the length field, as the frame carries them (what a MAC covers
/// along with the payload).
pub fn header(version: u8, kind: u8, id: u64) -> [u8; HEADER_AFTER_LEN] {
    let mut header = [0u8; HEADER_AFTER_LEN];
    let [v, k, rest @ ..] = &mut header;
    *v = version;
    *k = kind;
    *rest = id.to_be_bytes();
    header
}

/// Encode one frame whose payload is `parts` joined (a body, and a tag after it). Fails
/// with [`FrameError::Length`] when the length after the length field would exceed
/// `max_len`.
pub fn encode(
    version: u8,
    kind: u8,
    id: u64,
    parts: &[&[u8]],
    max_len: usize,
) -> Result<Vec<u8>, FrameError> {
    let payload: usize = parts.iter().map(|part| part.len()).sum();
    let len = HEADER_AFTER_LEN + payload;
    if len > max_len {
        return Err(FrameError::Length);
    }
    let len_field = u32::try_from(len).map_err(|_| FrameError::Length)?;
    let mut out = Vec::with_capacity(LEN_FIELD + len);
    out.extend_from_slice(&len_field.to_be_bytes());
    out.extend_from_slice(&header(version, kind, id));
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// Accumulates bytes from a connection and yields whole frames of one protocol version
/// whose length (after the length field) lies within the decoder's bounds.
#[derive(Debug)]
pub struct Decoder {
    version: u8,
    min_len: usize,
    max_len: usize,
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder for `version`, taking frames of `min_len..=max_len` bytes after
    /// the length field (`min_len` is raised to the header's size).
    pub fn new(version: u8, min_len: usize, max_len: usize) -> Self {
        Self {
            version,
            min_len: min_len.max(HEADER_AFTER_LEN),
            max_len,
            buf: Vec::new(),
        }
    }

    /// Change the bounds for the frames that follow (the manager protocol allows larger
    /// frames, each with a tag, once the peer has proved its key).
    pub fn set_bounds(&mut self, min_len: usize, max_len: usize) {
        self.min_len = min_len.max(HEADER_AFTER_LEN);
        self.max_len = max_len;
    }

    /// Add bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not a whole frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed. A bad length or
    /// version is reported as soon as its bytes are here, before the frame is buffered.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, FrameError> {
        let Some(len_bytes) = self.buf.first_chunk::<LEN_FIELD>() else {
            return Ok(None);
        };
        let len =
            usize::try_from(u32::from_be_bytes(*len_bytes)).map_err(|_| FrameError::Length)?;
        if !(self.min_len..=self.max_len).contains(&len) {
            return Err(FrameError::Length);
        }
        if let Some(&version) = self.buf.get(LEN_FIELD)
            && version != self.version
        {
            return Err(FrameError::Version);
        }
        let Some(frame) = self.buf.get(LEN_FIELD..LEN_FIELD + len) else {
            return Ok(None);
        };
        let Some((header, payload)) = frame.split_first_chunk::<HEADER_AFTER_LEN>() else {
            return Err(FrameError::Length);
        };
        let [_version, kind, id @ ..] = *header;
        let frame = RawFrame {
            kind,
            id: u64::from_be_bytes(id),
            payload: payload.to_vec(),
        };
        self.buf.drain(..LEN_FIELD + len);
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_byte_for_byte() {
        let bytes = encode(1, 0x12, 7, &[b"{}", b"tag"], 1 << 20).unwrap();
        assert_eq!(
            bytes,
            [
                0, 0, 0, 15, 1, 0x12, 0, 0, 0, 0, 0, 0, 0, 7, b'{', b'}', b't', b'a', b'g'
            ]
        );
        let mut decoder = Decoder::new(1, 0, 1 << 20);
        decoder.push(&bytes);
        assert_eq!(
            decoder.next_frame(),
            Ok(Some(RawFrame {
                kind: 0x12,
                id: 7,
                payload: b"{}tag".to_vec()
            }))
        );
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn bounds_and_version_are_checked_before_buffering() {
        let mut decoder = Decoder::new(1, 0, 100);
        decoder.push(&[0, 0, 0, 101]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Length));
        let mut decoder = Decoder::new(1, 0, 100);
        decoder.push(&[0, 0, 0, 9]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Length));
        let mut decoder = Decoder::new(1, 26, 100);
        decoder.push(&[0, 0, 0, 25]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Length));
        let mut decoder = Decoder::new(1, 0, 100);
        decoder.push(&[0, 0, 0, 50, 2]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Version));
        let mut decoder = Decoder::new(1, 0, 100);
        decoder.push(&[0, 0, 0, 50, 1]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(encode(1, 0, 0, &[&[0; 91]], 100), Err(FrameError::Length));
        assert!(encode(1, 0, 0, &[&[0; 90]], 100).is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes, in any chunks: frames or an error, never a panic, and nothing
            /// buffered beyond what was pushed.
            #[test]
            fn arbitrary_bytes_never_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                chunk in 1usize..64,
            ) {
                let mut decoder = Decoder::new(1, 0, 512);
                'feed: for piece in bytes.chunks(chunk) {
                    decoder.push(piece);
                    loop {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => prop_assert!(frame.payload.len() <= 502),
                            Ok(None) => break,
                            Err(_) => break 'feed,
                        }
                    }
                }
            }

            /// Frames split anywhere decode to what was encoded.
            #[test]
            fn frames_round_trip_in_any_chunks(
                frames in proptest::collection::vec(
                    (any::<u8>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64)),
                    1..5,
                ),
                chunk in 1usize..40,
            ) {
                let stream: Vec<u8> = frames
                    .iter()
                    .flat_map(|(kind, id, payload)| {
                        encode(1, *kind, *id, &[payload], 1 << 10).unwrap()
                    })
                    .collect();
                let mut decoder = Decoder::new(1, 0, 1 << 10);
                let mut got = Vec::new();
                for piece in stream.chunks(chunk) {
                    decoder.push(piece);
                    while let Some(frame) = decoder.next_frame().unwrap() {
                        got.push((frame.kind, frame.id, frame.payload));
                    }
                }
                prop_assert_eq!(got, frames);
            }
        }
    }
}
