//! SOCKS5 messages (RFC 1928) and the username/password sub-negotiation (RFC 1929),
//! sans-IO: parsers over the bytes received so far, encoders that append to a caller's
//! buffer.
//!
//! | step | bytes | parse | answer |
//! |---|---|---|---|
//! | greeting | `05 NMETHODS METHODS` | [`parse_greeting`] | [`method_reply`] |
//! | username/password | `01 ULEN UNAME PLEN PASSWD` | [`parse_auth`] | [`auth_reply`] |
//! | request | `05 CMD 00 ATYP DST.ADDR DST.PORT` | [`parse_request`] | [`reply`], [`encode_reply`] |
//! | UDP datagram | `00 00 FRAG ATYP DST.ADDR DST.PORT DATA` | [`parse_udp`] | [`encode_udp_header`] |
//!
//! A stream message's parser returns `Ok(None)` while the bytes are a strict prefix of a
//! message, `Ok(Some((message, len)))` once the first `len` bytes are a whole one (bytes
//! after it are not looked at), and an error as soon as a byte makes it invalid (a domain
//! name is checked once all of it is there). More bytes never turn an error into a message
//! or change a message, so a caller may parse again after every read, and stop reading at
//! the protocol's maximum ([`MAX_GREETING_LEN`], [`MAX_AUTH_LEN`], [`MAX_REQUEST_LEN`]). Every parsed message encodes back to exactly the `len` bytes it came
//! from: the client app forwards a request's bytes to the exit as they came, and the exit
//! parses the same message out of them. A UDP datagram is whole or malformed.
//!
//! Limits: NMETHODS, ULEN, PLEN and a domain name's length are 1 to 255 (0 is an error, so
//! no message is longer than [`MAX_AUTH_LEN`]). A domain name must be printable ASCII
//! without spaces (`0x21..=0x7e`), which every hostname is; it is kept as a [`Name`]. RSV
//! bytes must be zero: RFC 1928 §3 says fields marked RSV "must be set to X'00'", and being
//! strict keeps parse and encode exact inverses. Addresses are kept as sent (an IPv4-mapped
//! IPv6 address stays IPv6); unwrapping them is the policy's business
//! ([`super::policy`]).
//!
//! What to answer a request the parser refused ([`WireError::rep`]):
//!
//! | error | answer |
//! |---|---|
//! | [`WireError::NotSocks5`] | nothing: close (HTTP, SOCKS4 and other protocols land here) |
//! | [`WireError::UnknownCommand`] | 7, command not supported |
//! | [`WireError::UnknownAddressType`] | 8, address type not supported |
//! | [`WireError::EmptyName`], [`WireError::BadName`], [`WireError::ReservedNotZero`] | 1, general failure (the address type is supported; this name or request is malformed) |
//!
//! A failed connect maps with [`Rep::from_connect_error`]. Errors of the greeting and the
//! sub-negotiation have no reply code: close the connection.
//!
//! Not here: sockets, timeouts, name resolution, which destinations are allowed
//! ([`super::policy`]), GSSAPI (method 1) and UDP fragment reassembly.

use core::fmt;
use std::io;
use std::net::IpAddr;

/// The SOCKS protocol version of every message but the sub-negotiation.
pub const VERSION: u8 = 5;
/// The version of the username/password sub-negotiation (RFC 1929).
pub const AUTH_VERSION: u8 = 1;
/// The longest greeting: version, count, 255 methods.
pub const MAX_GREETING_LEN: usize = 2 + 255;
/// The longest sub-negotiation: version, two lengths, 255-byte username and password.
pub const MAX_AUTH_LEN: usize = 3 + 2 * 255;
/// The longest request or reply: four fixed bytes, a 255-byte name with its length, port.
pub const MAX_REQUEST_LEN: usize = 4 + 1 + 255 + 2;
/// The length of [`reply`]'s answer.
pub const REPLY_LEN: usize = 10;

const ATYP_IPV4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// Why bytes are not a SOCKS5 message. Payloads are the offending byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// The version byte of a greeting, request or reply is not 5: another protocol (HTTP
    /// text, SOCKS4). Close without answering.
    #[error("not SOCKS5 (first byte {0:#04x})")]
    NotSocks5(u8),
    /// A greeting that offers no method (NMETHODS 0).
    #[error("a greeting with no methods")]
    NoMethods,
    /// The username/password sub-negotiation's version byte is not 1.
    #[error("username/password version {0}, not 1")]
    BadAuthVersion(u8),
    /// ULEN 0: RFC 1929 allows 1 to 255 bytes.
    #[error("an empty username")]
    EmptyUsername,
    /// PLEN 0: RFC 1929 allows 1 to 255 bytes.
    #[error("an empty password")]
    EmptyPassword,
    /// CMD is not 1 (CONNECT), 2 (BIND) or 3 (UDP ASSOCIATE).
    #[error("unknown command {0}")]
    UnknownCommand(u8),
    /// An RSV byte is not zero.
    #[error("reserved byte {0:#04x}, not 0")]
    ReservedNotZero(u8),
    /// ATYP is not 1 (IPv4), 3 (domain name) or 4 (IPv6).
    #[error("unknown address type {0}")]
    UnknownAddressType(u8),
    /// A domain name of length 0.
    #[error("an empty domain name")]
    EmptyName,
    /// A domain name longer than 255 bytes (only [`Name::new`]: the length byte cannot say
    /// more).
    #[error("a domain name longer than 255 bytes")]
    NameTooLong,
    /// A domain name with a byte outside printable ASCII (`0x21..=0x7e`).
    #[error("a domain name with byte {0:#04x}")]
    BadName(u8),
    /// A UDP datagram with FRAG not 0: fragments are not reassembled; drop it.
    #[error("UDP fragment {0} (fragments are not supported)")]
    Fragment(u8),
    /// A UDP datagram shorter than its header.
    #[error("a UDP datagram shorter than its header")]
    Truncated,
}

impl WireError {
    /// The reply code to answer a request refused with this error before closing, or
    /// `None` to close without a reply (not SOCKS5, greeting and sub-negotiation errors,
    /// UDP datagrams, which are dropped).
    pub fn rep(&self) -> Option<Rep> {
        match self {
            Self::UnknownCommand(_) => Some(Rep::CommandNotSupported),
            Self::UnknownAddressType(_) => Some(Rep::AddressTypeNotSupported),
            Self::ReservedNotZero(_) | Self::EmptyName | Self::NameTooLong | Self::BadName(_) => {
                Some(Rep::GeneralFailure)
            }
            Self::NotSocks5(_)
            | Self::NoMethods
            | Self::BadAuthVersion(_)
            | Self::EmptyUsername
            | Self::EmptyPassword
            | Self::Fragment(_)
            | Self::Truncated => None,
        }
    }
}

/// What a stream message's parser returns: `None` while incomplete, else the message and
/// the number of bytes it is made of.
pub type Parsed<T> = Result<Option<(T, usize)>, WireError>;

/// An authentication method of the greeting and the method selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// 0x00: no authentication.
    NoAuth,
    /// 0x02: username/password (RFC 1929).
    UsernamePassword,
    /// 0xff: none of the offered methods is acceptable; the client closes.
    NoAcceptable,
}

impl From<Method> for u8 {
    fn from(method: Method) -> u8 {
        match method {
            Method::NoAuth => 0x00,
            Method::UsernamePassword => 0x02,
            Method::NoAcceptable => 0xff,
        }
    }
}

/// A client's greeting: the methods it offers, as sent (unknown ones included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting<'a> {
    /// The method bytes, 1 to 255 of them.
    pub methods: &'a [u8],
}

impl Greeting<'_> {
    /// Does the client offer `method`?
    pub fn offers(&self, method: Method) -> bool {
        self.methods.contains(&u8::from(method))
    }
}

/// Parse a greeting `05 NMETHODS METHODS`.
pub fn parse_greeting(bytes: &[u8]) -> Parsed<Greeting<'_>> {
    finish(bytes, |r| {
        version(r)?;
        let count = r.u8()?;
        if count == 0 {
            return Err(WireError::NoMethods.into());
        }
        Ok(Greeting {
            methods: r.take(usize::from(count))?,
        })
    })
}

/// Append a greeting (what a client sends; `methods` must be 1 to 255 bytes, or what is
/// written is no greeting).
pub fn encode_greeting(greeting: &Greeting<'_>, out: &mut Vec<u8>) {
    out.push(VERSION);
    push_len(out, greeting.methods);
}

/// The method selection answering a greeting: `05 METHOD`.
pub fn method_reply(method: Method) -> [u8; 2] {
    [VERSION, method.into()]
}

/// A username and password (RFC 1929), borrowed from the bytes they came in. `Debug` does
/// not show the password.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// 1 to 255 bytes.
    pub username: &'a [u8],
    /// 1 to 255 bytes.
    pub password: &'a [u8],
}

impl Credentials<'_> {
    /// Are these the expected username and password, both of them? Each comparison takes
    /// the same time wherever the bytes differ, and both are always made, so the timing
    /// tells an attacker neither which one nor which byte was wrong (only, as usual, the
    /// lengths can show).
    pub fn matches(&self, username: &[u8], password: &[u8]) -> bool {
        let user = eq_constant_time(self.username, username);
        let pass = eq_constant_time(self.password, password);
        user & pass
    }
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &String::from_utf8_lossy(self.username))
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Equal byte strings, compared in a time that depends on neither where they differ nor
/// (up to 255 bytes, the wire's limit) on their contents' lengths.
///
/// Not `ring::constant_time::verify_slices_are_equal`: ring 0.17.14 deprecates it as
/// "internal ... with no promises regarding side channels".
fn eq_constant_time(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()).max(255) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    core::hint::black_box(diff) == 0
}

/// Parse a username/password sub-negotiation `01 ULEN UNAME PLEN PASSWD`.
pub fn parse_auth(bytes: &[u8]) -> Parsed<Credentials<'_>> {
    finish(bytes, |r| {
        let version = r.u8()?;
        if version != AUTH_VERSION {
            return Err(WireError::BadAuthVersion(version).into());
        }
        let username = r.counted(WireError::EmptyUsername)?;
        let password = r.counted(WireError::EmptyPassword)?;
        Ok(Credentials { username, password })
    })
}

/// Append a sub-negotiation (what a client sends; both fields 1 to 255 bytes).
pub fn encode_auth(credentials: &Credentials<'_>, out: &mut Vec<u8>) {
    out.push(AUTH_VERSION);
    push_len(out, credentials.username);
    push_len(out, credentials.password);
}

/// The sub-negotiation's answer: `01 00` for success, `01 01` for failure (after which
/// the server closes, RFC 1929 §2).
pub fn auth_reply(success: bool) -> [u8; 2] {
    [AUTH_VERSION, u8::from(!success)]
}

/// A request's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 1: a TCP connection to the destination.
    Connect,
    /// 2: a listening TCP port for one incoming connection.
    Bind,
    /// 3: a UDP relay.
    UdpAssociate,
}

impl From<Command> for u8 {
    fn from(command: Command) -> u8 {
        match command {
            Command::Connect => 1,
            Command::Bind => 2,
            Command::UdpAssociate => 3,
        }
    }
}

/// A domain name as SOCKS carries it: 1 to 255 bytes of printable ASCII without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    /// Check a name: [`WireError::EmptyName`], [`WireError::NameTooLong`] or
    /// [`WireError::BadName`] if SOCKS cannot carry it.
    pub fn new(name: impl Into<String>) -> Result<Self, WireError> {
        let name = name.into();
        check_name(name.as_bytes())?;
        if name.len() > 255 {
            return Err(WireError::NameTooLong);
        }
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_name(name: &[u8]) -> Result<(), WireError> {
    if name.is_empty() {
        return Err(WireError::EmptyName);
    }
    match name.iter().find(|b| !(0x21..=0x7e).contains(*b)) {
        Some(&bad) => Err(WireError::BadName(bad)),
        None => Ok(()),
    }
}

/// A destination (or bound) address: an IP address or a domain name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    /// ATYP 1 or 4, as sent.
    Ip(IpAddr),
    /// ATYP 3.
    Name(Name),
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Name(name) => name.fmt(f),
        }
    }
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// Where.
    pub dest: Dest,
    /// The destination port (0 is passed on as sent).
    pub port: u16,
}

/// Parse a request `05 CMD 00 ATYP DST.ADDR DST.PORT`. On an error, answer
/// [`WireError::rep`] (if any) and close.
pub fn parse_request(bytes: &[u8]) -> Parsed<Request> {
    finish(bytes, |r| {
        version(r)?;
        let command = match r.u8()? {
            1 => Command::Connect,
            2 => Command::Bind,
            3 => Command::UdpAssociate,
            other => return Err(WireError::UnknownCommand(other).into()),
        };
        reserved(r)?;
        let dest = address(r)?;
        let port = r.u16()?;
        Ok(Request {
            command,
            dest,
            port,
        })
    })
}

/// Append a request: exactly the bytes [`parse_request`] took it from.
pub fn encode_request(request: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, request.command.into(), 0]);
    push_address(out, &request.dest, request.port);
}

/// A reply code (REP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rep {
    /// 0.
    Succeeded,
    /// 1: general SOCKS server failure.
    GeneralFailure,
    /// 2: connection not allowed by ruleset (the exit policy refused it).
    NotAllowed,
    /// 3.
    NetworkUnreachable,
    /// 4.
    HostUnreachable,
    /// 5.
    ConnectionRefused,
    /// 6: TTL expired (what a connect that timed out answers).
    TtlExpired,
    /// 7.
    CommandNotSupported,
    /// 8.
    AddressTypeNotSupported,
    /// 9 to 255, unassigned. (`Other` of a code above is never made by parsing.)
    Other(u8),
}

impl From<u8> for Rep {
    fn from(code: u8) -> Self {
        match code {
            0 => Self::Succeeded,
            1 => Self::GeneralFailure,
            2 => Self::NotAllowed,
            3 => Self::NetworkUnreachable,
            4 => Self::HostUnreachable,
            5 => Self::ConnectionRefused,
            6 => Self::TtlExpired,
            7 => Self::CommandNotSupported,
            8 => Self::AddressTypeNotSupported,
            other => Self::Other(other),
        }
    }
}

impl From<Rep> for u8 {
    fn from(rep: Rep) -> u8 {
        match rep {
            Rep::Succeeded => 0,
            Rep::GeneralFailure => 1,
            Rep::NotAllowed => 2,
            Rep::NetworkUnreachable => 3,
            Rep::HostUnreachable => 4,
            Rep::ConnectionRefused => 5,
            Rep::TtlExpired => 6,
            Rep::CommandNotSupported => 7,
            Rep::AddressTypeNotSupported => 8,
            Rep::Other(code) => code,
        }
    }
}

impl Rep {
    /// The answer to a TCP connect that failed with `error`: refused 5, timed out 6, host
    /// unreachable 4, network unreachable 3, anything else 1.
    pub fn from_connect_error(error: &io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => Self::ConnectionRefused,
            io::ErrorKind::TimedOut => Self::TtlExpired,
            io::ErrorKind::HostUnreachable => Self::HostUnreachable,
            io::ErrorKind::NetworkUnreachable => Self::NetworkUnreachable,
            _ => Self::GeneralFailure,
        }
    }
}

impl fmt::Display for Rep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Succeeded => "succeeded",
            Self::GeneralFailure => "general SOCKS server failure",
            Self::NotAllowed => "connection not allowed by ruleset",
            Self::NetworkUnreachable => "network unreachable",
            Self::HostUnreachable => "host unreachable",
            Self::ConnectionRefused => "connection refused",
            Self::TtlExpired => "TTL expired",
            Self::CommandNotSupported => "command not supported",
            Self::AddressTypeNotSupported => "address type not supported",
            Self::Other(code) => return write!(f, "reply code {code}"),
        };
        f.write_str(text)
    }
}

/// A server's reply to a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    /// The outcome.
    pub rep: Rep,
    /// BND.ADDR.
    pub bound: Dest,
    /// BND.PORT.
    pub port: u16,
}

/// The reply `05 REP 00 01 0.0.0.0 0`: the exit never tells a client its own addresses.
pub fn reply(rep: Rep) -> [u8; REPLY_LEN] {
    [VERSION, rep.into(), 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0]
}

/// Parse a reply `05 REP 00 ATYP BND.ADDR BND.PORT`.
pub fn parse_reply(bytes: &[u8]) -> Parsed<Reply> {
    finish(bytes, |r| {
        version(r)?;
        let rep = Rep::from(r.u8()?);
        reserved(r)?;
        let bound = address(r)?;
        let port = r.u16()?;
        Ok(Reply { rep, bound, port })
    })
}

/// Append a reply: exactly the bytes [`parse_reply`] took it from.
pub fn encode_reply(reply: &Reply, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, reply.rep.into(), 0]);
    push_address(out, &reply.bound, reply.port);
}

/// The header of a UDP datagram relayed for UDP ASSOCIATE (RFC 1928 §7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UdpHeader {
    /// DST.ADDR: where the data goes (or, on the way back, where it came from).
    pub dest: Dest,
    /// DST.PORT.
    pub port: u16,
}

/// Parse a UDP datagram `00 00 FRAG ATYP DST.ADDR DST.PORT DATA` into its header and its
/// data. A fragment (FRAG not 0) is [`WireError::Fragment`]: drop it.
pub fn parse_udp(datagram: &[u8]) -> Result<(UdpHeader, &[u8]), WireError> {
    let parsed = finish(datagram, |r| {
        reserved(r)?;
        reserved(r)?;
        let frag = r.u8()?;
        if frag != 0 {
            return Err(WireError::Fragment(frag).into());
        }
        let dest = address(r)?;
        let port = r.u16()?;
        Ok(UdpHeader { dest, port })
    })?;
    let (header, len) = parsed.ok_or(WireError::Truncated)?;
    Ok((header, datagram.get(len..).unwrap_or_default()))
}

/// Append a UDP datagram's header (FRAG 0); the data follows it.
pub fn encode_udp_header(header: &UdpHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0]);
    push_address(out, &header.dest, header.port);
}

/// Why parsing stopped short of a message.
enum Stop {
    /// The bytes end inside the message.
    Incomplete,
    /// They are not one.
    Invalid(WireError),
}

impl From<WireError> for Stop {
    fn from(error: WireError) -> Self {
        Self::Invalid(error)
    }
}

/// The bytes of one message, read front to back.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let end = self.at.saturating_add(n);
        let taken = self.bytes.get(self.at..end).ok_or(Stop::Incomplete)?;
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        self.take(N)?.try_into().map_err(|_| Stop::Incomplete)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        let [b] = self.array()?;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A length byte (1 to 255; 0 is `empty`) and that many bytes.
    fn counted(&mut self, empty: WireError) -> Result<&'a [u8], Stop> {
        match self.u8()? {
            0 => Err(empty.into()),
            len => self.take(usize::from(len)),
        }
    }
}

/// Run a message's parser over `bytes`: the message and its length, `None` if incomplete.
fn finish<'a, T>(
    bytes: &'a [u8],
    parse: impl FnOnce(&mut Reader<'a>) -> Result<T, Stop>,
) -> Parsed<T> {
    let mut reader = Reader { bytes, at: 0 };
    match parse(&mut reader) {
        Ok(message) => Ok(Some((message, reader.at))),
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Invalid(error)) => Err(error),
    }
}

fn version(r: &mut Reader<'_>) -> Result<(), Stop> {
    match r.u8()? {
        VERSION => Ok(()),
        other => Err(WireError::NotSocks5(other).into()),
    }
}

fn reserved(r: &mut Reader<'_>) -> Result<(), Stop> {
    match r.u8()? {
        0 => Ok(()),
        other => Err(WireError::ReservedNotZero(other).into()),
    }
}

/// `ATYP ADDR` (without the port).
fn address(r: &mut Reader<'_>) -> Result<Dest, Stop> {
    match r.u8()? {
        ATYP_IPV4 => Ok(Dest::Ip(IpAddr::from(r.array::<4>()?))),
        ATYP_IPV6 => Ok(Dest::Ip(IpAddr::from(r.array::<16>()?))),
        ATYP_NAME => {
            let name = r.counted(WireError::EmptyName)?;
            check_name(name)?;
            // Printable ASCII, one char per byte.
            Ok(Dest::Name(Name(
                name.iter().map(|&b| char::from(b)).collect(),
            )))
        }
        other => Err(WireError::UnknownAddressType(other).into()),
    }
}

fn push_address(out: &mut Vec<u8>, dest: &Dest, port: u16) {
    match dest {
        Dest::Ip(IpAddr::V4(ip)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        Dest::Ip(IpAddr::V6(ip)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
        Dest::Name(name) => {
            out.push(ATYP_NAME);
            push_len(out, name.as_str().as_bytes());
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
}

/// A length byte and the bytes (at most 255 of them are written).
fn push_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

#[cfg(test)]
mod tests;
