//! Target for the VPN's lease protocol (`control::apps::vpn::proto`): the lines a client
//! sends the exit (read by the exit from any mesh node that may dial its port 44) and the
//! lines the exit answers (read by the client).
//!
//! `vpn_lease`: the first byte `c` says that bytes arrive `c + 1` at a time; the rest is a
//! stream, cut into lines by [`LineReader`] in those chunks. Checks: the reader's lines are
//! the stream's own newline-terminated pieces, in order, each at most [`MAX_LINE`] bytes;
//! it stops with `TooLong` exactly when the next piece has no newline in its first
//! [`MAX_LINE`] bytes, with `Truncated` exactly at a shorter unterminated end, and with
//! `None` only at the end. Each line, and the whole stream as one line, goes to
//! [`decode_request`] and [`decode_reply`]: over [`MAX_LINE`] bytes is always an error;
//! whatever decodes encodes to one line of at most [`MAX_LINE`] bytes that decodes to the
//! same message (an error message only shortened when the line would not fit).

use std::io::{self, Read};

use skywire_control::apps::vpn::proto::{
    LineError, LineReader, MAX_LINE, Reply, decode_reply, decode_request, encode_reply,
    encode_request,
};

/// Every check on the input: see the module doc.
pub fn vpn_lease(data: &[u8]) {
    let (chunk, bytes) = match data.split_first() {
        Some((&first, rest)) => (usize::from(first) + 1, rest),
        None => (1, data),
    };
    message(bytes);
    let mut reader = LineReader::new(Chunked { data: bytes, chunk });
    let mut rest = bytes;
    loop {
        match reader.read_line() {
            Ok(Some(line)) => {
                assert!(line.len() <= MAX_LINE, "a line of {}", line.len());
                assert!(rest.starts_with(line), "not the stream's next bytes");
                assert_eq!(line.iter().position(|&b| b == b'\n'), Some(line.len() - 1));
                rest = &rest[line.len()..];
                message(line);
            }
            Ok(None) => {
                assert!(rest.is_empty(), "ended with {} bytes left", rest.len());
                break;
            }
            Err(LineError::TooLong) => {
                let head = &rest[..MAX_LINE.min(rest.len())];
                assert!(head.len() == MAX_LINE && !head.contains(&b'\n'));
                break;
            }
            Err(LineError::Truncated) => {
                assert!(!rest.is_empty() && rest.len() < MAX_LINE && !rest.contains(&b'\n'));
                break;
            }
            Err(LineError::Io(e)) => panic!("the reader made up an error: {e}"),
        }
    }
}

/// Both decoders on `line`, and the round trips.
fn message(line: &[u8]) {
    let request = decode_request(line);
    let reply = decode_reply(line);
    if line.len() > MAX_LINE {
        assert!(request.is_err() && reply.is_err(), "a long line decoded");
    }
    if let Ok(request) = request {
        let again = encode_request(request);
        assert!(again.len() <= MAX_LINE);
        assert_eq!(decode_request(&again).expect("re-encoded request"), request);
    }
    if let Ok(reply) = reply {
        let again = encode_reply(&reply);
        assert!(again.len() <= MAX_LINE, "a reply of {}", again.len());
        assert_eq!(again.last(), Some(&b'\n'));
        let decoded = decode_reply(&again).expect("re-encoded reply");
        match (&reply, &decoded) {
            (
                Reply::Error { kind, message },
                Reply::Error {
                    kind: k,
                    message: shorter,
                },
            ) => {
                assert_eq!(kind, k);
                assert!(message.starts_with(shorter.as_str()));
                // A cut line is full to within one escaped character.
                if again.len() <= MAX_LINE - 6 {
                    assert_eq!(message, shorter);
                }
            }
            _ => assert_eq!(decoded, reply),
        }
    }
}

/// A reader that hands out at most `chunk` bytes per call.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// `vpn_state`: the VPN apps' state files (`ClientState`, `ExitState`), which an app reads
/// at start after a crash or from another version. Checks: whatever parses as either
/// writes back as JSON that parses to the same value; nothing panics.
pub fn vpn_state(data: &[u8]) {
    use skywire_control::apps::vpn::exit::ExitState;
    use skywire_control::apps::vpn::state::ClientState;
    if let Ok(state) = serde_json::from_slice::<ClientState>(data) {
        let again = serde_json::to_vec(&state).expect("a state writes");
        let back: ClientState = serde_json::from_slice(&again).expect("and reads back");
        assert_eq!(back, state);
    }
    if let Ok(state) = serde_json::from_slice::<ExitState>(data) {
        let again = serde_json::to_vec(&state).expect("a state writes");
        let back: ExitState = serde_json::from_slice(&again).expect("and reads back");
        assert_eq!(back, state);
    }
}
