//! The lease protocol between a VPN client and its exit, on an app stream to the exit's
//! port 44 (`docs/design/vpn-plan.md`, D9). The exit knows the client by the stream's
//! authenticated peer key; nothing in a message names it.
//!
//! Every message is one line of JSON ending in `\n`, at most [`MAX_LINE`] bytes with the
//! newline, and carries the protocol version `"v":1`:
//!
//! ```text
//! client -> exit   {"v":1,"op":"lease"}       take (or take back) this key's lease
//!                  {"v":1,"op":"keepalive"}   every 10 s; answered with the same line
//!                  {"v":1,"op":"release"}     free the lease now (on `vpn down`)
//! exit -> client   {"v":1,"ok":{"ipv4":"198.19.128.2","ipv6":"fd00:5b::2","dns":["198.18.9.53"],"mtu":1420}}
//!                  {"v":1,"ok":{"ipv4":"198.19.128.2","ipv6":null,"dns":[],"mtu":1420}}
//!                  {"v":1,"error":{"kind":"exhausted","message":"all 5 addresses ..."}}
//!                  {"v":1,"op":"keepalive"}
//! ```
//!
//! Error kinds: `forbidden` (the key is not among the exit's clients), `exhausted` (no
//! address left), `bad_request` (a line this module refused), `unavailable` (the exit
//! cannot serve now, for example its node is down).
//!
//! Decoding is strict: anything but a JSON object, another version, an unknown field or
//! `op`, a reply with other than exactly one of `ok`, `error` and `op`, more than
//! [`MAX_DNS`] servers, an MTU under 576 or a line over [`MAX_LINE`] bytes are errors. [`LineReader`] cuts a stream into lines
//! without ever holding more than [`MAX_LINE`] bytes.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The longest line, newline included.
pub const MAX_LINE: usize = 1024;
/// The protocol version this module speaks.
pub const VERSION: u64 = 1;
/// The most DNS servers a lease may offer.
pub const MAX_DNS: usize = 8;
/// The smallest MTU a lease may carry (the IPv4 minimum datagram every host accepts).
pub const MIN_MTU: u16 = 576;

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Take this key's lease (the same one again after a reconnect).
    Lease,
    /// Keep the stream alive; the exit answers [`Reply::Keepalive`].
    Keepalive,
    /// Free the lease now.
    Release,
}

/// A granted lease: the client's addresses and how to use them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseReply {
    /// The client's IPv4 address (a /32 on its TUN).
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address (a /128), when the exit has an IPv6 pool.
    pub ipv6: Option<Ipv6Addr>,
    /// DNS servers to use through the tunnel; empty leaves DNS alone.
    pub dns: Vec<IpAddr>,
    /// The exit's TUN MTU.
    pub mtu: u16,
}

/// Why the exit refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The key is not one of the exit's clients.
    Forbidden,
    /// The pool has no address left.
    Exhausted,
    /// The exit could not read the request.
    BadRequest,
    /// The exit cannot serve now.
    Unavailable,
}

/// What the exit answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The lease.
    Granted(LeaseReply),
    /// A refusal; `message` is for the operator (and may be shortened to fit a line).
    Error {
        /// Why, for the program.
        kind: ErrorKind,
        /// Why, for the person.
        message: String,
    },
    /// The answer to a keepalive.
    Keepalive,
}

/// A line of the protocol could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Over [`MAX_LINE`] bytes.
    #[error("a lease protocol line is at most {MAX_LINE} bytes, this one has {0}")]
    TooLong(usize),
    /// A newline before the end: two messages given as one.
    #[error("a newline inside a lease protocol line")]
    Newline,
    /// Not a JSON object.
    #[error("a lease protocol message is a JSON object")]
    NotObject,
    /// Not JSON, or not the shape of any message.
    #[error("not a lease protocol message: {0}")]
    Json(#[source] serde_json::Error),
    /// Another protocol version.
    #[error("lease protocol version {0} is not supported (this side speaks {VERSION})")]
    Version(u64),
    /// A reply must have exactly one of `ok`, `error` and `op`.
    #[error("a lease reply needs exactly one of \"ok\", \"error\" and \"op\"")]
    ReplyShape,
    /// Too many DNS servers.
    #[error("a lease offers at most {MAX_DNS} DNS servers, this one {0}")]
    TooManyDns(usize),
    /// An MTU too small to carry anything.
    #[error("a lease's MTU must be at least {MIN_MTU}, this one is {0}")]
    Mtu(u16),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestLine {
    v: u64,
    op: Request,
}

/// Only `"op":"keepalive"` is a reply op.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReplyOp {
    Keepalive,
}

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    kind: ErrorKind,
    message: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyLine {
    v: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ok: Option<LeaseReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<ReplyOp>,
}

/// Any message's version, read before its shape so another version is named as such.
#[derive(Deserialize)]
struct Versioned {
    v: u64,
}

/// `request` as a line, `\n` included.
pub fn encode_request(request: Request) -> Vec<u8> {
    line(&RequestLine {
        v: VERSION,
        op: request,
    })
}

/// `reply` as a line, `\n` included. An error message is cut (at a character boundary)
/// to the longest start that fits in [`MAX_LINE`]; a lease with over [`MAX_DNS`] servers
/// keeps the first ones.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Granted(lease) => {
            let mut lease = lease.clone();
            lease.dns.truncate(MAX_DNS);
            line(&ReplyLine {
                v: VERSION,
                ok: Some(lease),
                error: None,
                op: None,
            })
        }
        Reply::Error { kind, message } => {
            let encode = |message: &str| {
                line(&ReplyLine {
                    v: VERSION,
                    ok: None,
                    error: Some(ErrorBody {
                        kind: *kind,
                        message: message.to_owned(),
                    }),
                    op: None,
                })
            };
            let full = encode(message);
            if full.len() <= MAX_LINE {
                return full;
            }
            // The longest prefix (at a character boundary) that fits, by bisection: escapes
            // make the encoded length of a prefix anything from 1 to 6 bytes a byte.
            let ends: Vec<usize> = message.char_indices().map(|(at, _)| at).collect();
            let prefix = |k: usize| {
                message
                    .get(..ends.get(k).copied().unwrap_or(0))
                    .unwrap_or("")
            };
            let (mut fits, mut too_long) = (0, ends.len());
            while too_long - fits > 1 {
                let mid = fits + (too_long - fits) / 2;
                if encode(prefix(mid)).len() <= MAX_LINE {
                    fits = mid;
                } else {
                    too_long = mid;
                }
            }
            encode(prefix(fits))
        }
        Reply::Keepalive => line(&ReplyLine {
            v: VERSION,
            ok: None,
            error: None,
            op: Some(ReplyOp::Keepalive),
        }),
    }
}

/// A client's line (with or without its `\n`).
pub fn decode_request(line: &[u8]) -> Result<Request, ProtoError> {
    let json = versioned(line)?;
    let request: RequestLine = serde_json::from_slice(json).map_err(ProtoError::Json)?;
    Ok(request.op)
}

/// An exit's line (with or without its `\n`).
pub fn decode_reply(line: &[u8]) -> Result<Reply, ProtoError> {
    let json = versioned(line)?;
    let reply: ReplyLine = serde_json::from_slice(json).map_err(ProtoError::Json)?;
    match (reply.ok, reply.error, reply.op) {
        (Some(lease), None, None) => {
            if lease.dns.len() > MAX_DNS {
                return Err(ProtoError::TooManyDns(lease.dns.len()));
            }
            if lease.mtu < MIN_MTU {
                return Err(ProtoError::Mtu(lease.mtu));
            }
            Ok(Reply::Granted(lease))
        }
        (None, Some(ErrorBody { kind, message }), None) => Ok(Reply::Error { kind, message }),
        (None, None, Some(ReplyOp::Keepalive)) => Ok(Reply::Keepalive),
        _ => Err(ProtoError::ReplyShape),
    }
}

/// Check the length and the newline, then the version; returns the JSON.
fn versioned(line: &[u8]) -> Result<&[u8], ProtoError> {
    if line.len() > MAX_LINE {
        return Err(ProtoError::TooLong(line.len()));
    }
    let json = line.strip_suffix(b"\n").unwrap_or(line);
    if json.contains(&b'\n') {
        return Err(ProtoError::Newline);
    }
    // serde's derive would also read a struct written as an array (`[1,"lease"]`).
    if json.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\r')) != Some(&b'{') {
        return Err(ProtoError::NotObject);
    }
    let Versioned { v } = serde_json::from_slice(json).map_err(ProtoError::Json)?;
    if v != VERSION {
        return Err(ProtoError::Version(v));
    }
    Ok(json)
}

fn line<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these types cannot fail: no maps with non-string keys, no I/O.
    let mut out = serde_json::to_vec(message).unwrap_or_default();
    out.push(b'\n');
    out
}

/// A stream could not be cut into lines.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// Reading failed.
    #[error("reading the lease stream: {0}")]
    Io(#[from] io::Error),
    /// No newline within [`MAX_LINE`] bytes.
    #[error("a lease protocol line longer than {MAX_LINE} bytes")]
    TooLong,
    /// The stream ended inside a line.
    #[error("the lease stream ended inside a line")]
    Truncated,
}

/// Lines of at most [`MAX_LINE`] bytes from a reader, through a buffer of that size.
///
/// After an error the stream is out of step; the caller closes it.
pub struct LineReader<R> {
    inner: R,
    buf: Box<[u8; MAX_LINE]>,
    /// Bytes in `buf`.
    len: usize,
    /// Bytes at the front of `buf` that belong to the line returned last.
    taken: usize,
}

impl<R: Read> LineReader<R> {
    /// A reader of lines from `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Box::new([0; MAX_LINE]),
            len: 0,
            taken: 0,
        }
    }

    /// The next line with its `\n`, or `None` when the stream ended between lines.
    pub fn read_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        self.buf.copy_within(self.taken..self.len, 0);
        self.len -= self.taken;
        self.taken = 0;
        let mut scanned = 0;
        loop {
            let filled = self.buf.get(..self.len).unwrap_or_default();
            if let Some(at) = filled
                .get(scanned..)
                .and_then(|new| new.iter().position(|&b| b == b'\n'))
            {
                self.taken = scanned + at + 1;
                return Ok(self.buf.get(..self.taken));
            }
            scanned = self.len;
            let Some(free) = self.buf.get_mut(self.len..).filter(|f| !f.is_empty()) else {
                return Err(LineError::TooLong);
            };
            match self.inner.read(free) {
                Ok(0) if self.len == 0 => return Ok(None),
                Ok(0) => return Err(LineError::Truncated),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The reader underneath (to write replies on the same stream).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The reader underneath; bytes read ahead of the last line are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

#[cfg(test)]
mod tests;
