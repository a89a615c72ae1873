//! The frames a stream's bytes travel in between an app and its node, on the app socket
//! connection once the stream is open (`docs/APPS.md`): a 4-byte header, the kind and a
//! 24-bit big-endian length, then the payload.
//!
//! | kind | name  | payload                                                   |
//! |-----:|-------|-----------------------------------------------------------|
//! | 0    | DATA  | stream bytes (any length up to 16 MiB - 1; 0 is allowed)  |
//! | 1    | FIN   | none: the sender sends no more (a half-close)             |
//! | 2    | RESET | up to 1024 bytes of UTF-8: why the stream was aborted     |
//! | 3    | HANDED| none: from here the stream's bytes go over the app's own socket |
//!
//! Both directions use the same frames, except HANDED, which only the node sends: it
//! answers an app that handed the stream over to a socket of its own (`docs/APPS.md`,
//! "Handing a stream to a socket"), and is the last frame on the connection. After FIN only
//! RESET or HANDED may follow; after RESET or HANDED nothing. The decoder is incremental and does not buffer DATA: a payload is handed on in
//! whatever pieces the input arrives in, so a stream's bytes are copied once.

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 4;
/// The largest payload a frame may announce.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// The longest RESET reason.
pub const MAX_REASON: usize = 1024;

/// A frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Stream bytes.
    Data = 0,
    /// No more bytes from the sender.
    Fin = 1,
    /// The stream is aborted.
    Reset = 2,
    /// The node sends no more frames: the stream's bytes now go over the socket the app
    /// handed over.
    Handed = 3,
}

/// The header of a frame of `kind` with a payload of `len` bytes (cut to [`MAX_PAYLOAD`];
/// callers never send more in one frame).
pub fn header(kind: Kind, len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len.min(MAX_PAYLOAD)).unwrap_or(0);
    let [_, a, b, c] = len.to_be_bytes();
    [kind as u8, a, b, c]
}

/// A whole RESET frame with `reason` (cut to [`MAX_REASON`] bytes at a character boundary).
pub fn reset(reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let text = reason.get(..end).unwrap_or_default();
    let mut frame = Vec::with_capacity(HEADER_LEN + text.len());
    frame.extend_from_slice(&header(Kind::Reset, text.len()));
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A piece of a DATA frame's payload (never empty).
    Data(&'a [u8]),
    /// A FIN frame.
    Fin,
    /// A RESET frame and its reason.
    Reset(String),
    /// A HANDED frame.
    Handed,
}

/// A frame the protocol does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The kind byte is not 0, 1, 2 or 3.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A FIN frame with a payload.
    #[error("a FIN frame carries no payload (it announced {0} bytes)")]
    FinWithPayload(usize),
    /// A HANDED frame with a payload.
    #[error("a HANDED frame carries no payload (it announced {0} bytes)")]
    HandedWithPayload(usize),
    /// A RESET reason longer than [`MAX_REASON`].
    #[error("a RESET reason is at most {MAX_REASON} bytes (it announced {0})")]
    ReasonTooLong(usize),
    /// A RESET reason that is not UTF-8.
    #[error("a RESET reason must be UTF-8")]
    ReasonNotUtf8,
    /// A frame other than RESET or HANDED after FIN.
    #[error("only RESET or HANDED may follow FIN")]
    AfterFin,
    /// Anything after RESET or HANDED.
    #[error("nothing may follow RESET or HANDED")]
    AfterReset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Header { buf: [u8; HEADER_LEN], got: usize },
    Data { left: usize },
    Reason { left: usize, text: Vec<u8> },
    Ended,
}

/// Decodes one direction of a stream's frames, as the bytes arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    fin: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            state: State::Header {
                buf: [0; HEADER_LEN],
                got: 0,
            },
            fin: false,
        }
    }
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a FIN was decoded.
    pub fn fin(&self) -> bool {
        self.fin
    }

    /// Whether the input so far ends between two frames (so an end of input here is a
    /// clean end, not a cut frame).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { got: 0, .. } | State::Ended)
    }

    /// How many payload bytes of the current DATA frame are still to come (0 outside one).
    pub fn data_left(&self) -> usize {
        match self.state {
            State::Data { left } => left,
            _ => 0,
        }
    }

    /// Decode from the front of `input`: how many bytes were used, and the frame (or piece
    /// of one) they completed, if any. Call again with the rest until it uses nothing.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Frame<'a>>), FrameError> {
        match &mut self.state {
            State::Ended => {
                if input.is_empty() {
                    Ok((0, None))
                } else {
                    Err(FrameError::AfterReset)
                }
            }
            State::Data { left } => {
                let n = (*left).min(input.len());
                let piece = input.get(..n).unwrap_or_default();
                *left -= n;
                if *left == 0 {
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        got: 0,
                    };
                }
                Ok((n, (n > 0).then_some(Frame::Data(piece))))
            }
            State::Reason { left, text } => {
                let n = (*left).min(input.len());
                text.extend_from_slice(input.get(..n).unwrap_or_default());
                *left -= n;
                if *left > 0 {
                    return Ok((n, None));
                }
                let text = std::mem::take(text);
                self.state = State::Ended;
                let reason = String::from_utf8(text).map_err(|_| FrameError::ReasonNotUtf8)?;
                Ok((n, Some(Frame::Reset(reason))))
            }
            State::Header { buf, got } => {
                let n = (HEADER_LEN - *got).min(input.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(*got..*got + n), input.get(..n)) {
                    dst.copy_from_slice(src);
                }
                *got += n;
                if *got < HEADER_LEN {
                    return Ok((n, None));
                }
                let [kind, a, b, c] = *buf;
                let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                match kind {
                    0 if self.fin => Err(FrameError::AfterFin),
                    0 => {
                        self.state = if len == 0 {
                            State::Header {
                                buf: [0; HEADER_LEN],
                                got: 0,
                            }
                        } else {
                            State::Data { left: len }
                        };
                        Ok((n, None))
                    }
                    1 if self.fin => Err(FrameError::AfterFin),
                    1 if len != 0 => Err(FrameError::FinWithPayload(len)),
                    1 => {
                        self.fin = true;
                        self.state = State::Header {
                            buf: [0; HEADER_LEN],
                            got: 0,
                        };
                        Ok((n, Some(Frame::Fin)))
                    }
                    2 if len > MAX_REASON => Err(FrameError::ReasonTooLong(len)),
                    2 if len == 0 => {
                        self.state = State::Ended;
                        Ok((n, Some(Frame::Reset(String::new()))))
                    }
                    2 => {
                        self.state = State::Reason {
                            left: len,
                            text: Vec::with_capacity(len),
                        };
                        Ok((n, None))
                    }
                    3 if len != 0 => Err(FrameError::HandedWithPayload(len)),
                    3 => {
                        self.state = State::Ended;
                        Ok((n, Some(Frame::Handed)))
                    }
                    other => Err(FrameError::UnknownKind(other)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame in `input`, fed in pieces of `step` bytes, DATA pieces joined.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<Frame<'static>>), FrameError> {
        let mut d = Decoder::new();
        let mut data = Vec::new();
        let mut frames = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            let mut rest = chunk;
            loop {
                let (used, frame) = d.decode(rest)?;
                match frame {
                    Some(Frame::Data(piece)) => data.extend_from_slice(piece),
                    Some(Frame::Fin) => frames.push(Frame::Fin),
                    Some(Frame::Reset(r)) => frames.push(Frame::Reset(r)),
                    Some(Frame::Handed) => frames.push(Frame::Handed),
                    None => {}
                }
                rest = &rest[used..];
                if used == 0 || rest.is_empty() {
                    break;
                }
            }
        }
        Ok((data, frames))
    }

    fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut f = header(kind, payload.len()).to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn data_fin_and_reset_in_any_pieces() {
        let mut input = frame(Kind::Data, b"hello ");
        input.extend(frame(Kind::Data, b""));
        input.extend(frame(Kind::Data, b"world"));
        input.extend(frame(Kind::Fin, b""));
        input.extend(reset("route_gone: the route to the peer is gone"));
        for step in [1, 2, 3, 5, 7, 1000] {
            let (data, frames) = decode_all(&input, step).unwrap();
            assert_eq!(data, b"hello world", "step {step}");
            assert_eq!(
                frames,
                vec![
                    Frame::Fin,
                    Frame::Reset("route_gone: the route to the peer is gone".into())
                ]
            );
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(
            decode_all(&[7, 0, 0, 0], 4),
            Err(FrameError::UnknownKind(7))
        );
        assert_eq!(
            decode_all(&[1, 0, 0, 1, 0], 5),
            Err(FrameError::FinWithPayload(1))
        );
        assert_eq!(
            decode_all(&[2, 0, 4, 1], 4),
            Err(FrameError::ReasonTooLong(1025))
        );
        assert_eq!(
            decode_all(&[2, 0, 0, 1, 0xff], 5),
            Err(FrameError::ReasonNotUtf8)
        );
        let mut after_fin = frame(Kind::Fin, b"");
        after_fin.extend(frame(Kind::Data, b"x"));
        assert_eq!(decode_all(&after_fin, 3), Err(FrameError::AfterFin));
        let mut after_reset = reset("");
        after_reset.push(0);
        assert_eq!(decode_all(&after_reset, 9), Err(FrameError::AfterReset));
        assert_eq!(
            decode_all(&[3, 0, 0, 2], 4),
            Err(FrameError::HandedWithPayload(2))
        );
        let mut after_handed = frame(Kind::Fin, b"");
        after_handed.extend(frame(Kind::Handed, b""));
        assert_eq!(
            decode_all(&after_handed, 2).unwrap().1,
            vec![Frame::Fin, Frame::Handed]
        );
        after_handed.push(0);
        assert_eq!(decode_all(&after_handed, 2), Err(FrameError::AfterReset));
    }

    #[test]
    fn boundaries_and_long_reasons() {
        let mut d = Decoder::new();
        assert!(d.at_boundary());
        assert_eq!(d.decode(&[0, 0, 0]).unwrap(), (3, None));
        assert!(!d.at_boundary());
        assert_eq!(d.decode(&[2, b'a']).unwrap(), (1, None));
        assert_eq!(d.data_left(), 2);
        let long = "é".repeat(600);
        let f = reset(&long);
        assert_eq!(f.len(), HEADER_LEN + 1024);
        assert!(std::str::from_utf8(&f[HEADER_LEN..]).is_ok());
        assert_eq!(header(Kind::Data, usize::MAX), [0, 0xff, 0xff, 0xff]);
    }
}
