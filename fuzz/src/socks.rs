//! Target for the SOCKS app (`control::apps::socks`): the SOCKS5 codec, which reads bytes
//! from any local program (the client app) and from the mesh (the exit), and the exit's
//! policy, which must never let a parsed address through to where it must not go.
//!
//! `socks_wire`: the first byte `c` says that bytes arrive `c + 1` at a time; the rest goes
//! to every parser: greeting, username/password, request, reply (read as a stream, in those
//! chunks and at once), a UDP datagram, and, if it is UTF-8, [`numeric_host`] and
//! [`check_name`]. Checks: no panic; a parser's answer on the bytes so far is `None` or the
//! answer on all of them; a message needs all its bytes and no more than the protocol's
//! maximum; every parsed message encodes back to exactly the bytes it took; the first byte
//! alone decides `NotSocks5`. Every address parsed (and every numeric host name) goes to
//! [`Policy::check`] with a fixed policy: the IPv4 address and its IPv4-mapped form get the
//! same answer, and nothing loopback, multicast, unspecified, link-local or unique-local is
//! ever allowed, nor port 25 outside the one exception that names it.

use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use skywire_control::apps::socks::policy::{Policy, check_name, numeric_host};
use skywire_control::apps::socks::wire::{
    self, Credentials, Dest, MAX_AUTH_LEN, MAX_GREETING_LEN, MAX_REQUEST_LEN, Parsed, Rep,
    UdpHeader, WireError,
};

/// The exceptions of the fixed policy.
pub const ALLOW: [&str; 3] = ["198.18.0.0/15:8080", "[2001:db8::/32]:*", "10.0.0.0/8:25"];

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let p = |s: &str| s.parse().expect("a prefix");
        Policy {
            allow: ALLOW
                .iter()
                .map(|e| e.parse().expect("an exception"))
                .collect(),
            own: vec![p("192.0.2.2/24"), p("2001:db8:5::2/64")],
            mesh: vec![p("fd77::/16"), p("100.96.0.0/12")],
            ..Policy::default()
        }
    })
}

/// Every parser on the input: see the module doc.
pub fn socks_wire(data: &[u8]) {
    let (chunk, bytes) = match data.split_first() {
        Some((&first, rest)) => (usize::from(first) + 1, rest),
        None => (1, data),
    };
    let not_socks5 = bytes.first().filter(|&&b| b != wire::VERSION).copied();

    let greeting = stream(bytes, chunk, MAX_GREETING_LEN, wire::parse_greeting);
    first_byte(&greeting, not_socks5);
    if let Ok(Some((greeting, len))) = greeting {
        assert_eq!(len, 2 + greeting.methods.len());
        encodes_to(bytes, len, |out| wire::encode_greeting(&greeting, out));
    }

    if let Ok(Some((creds, len))) = stream(bytes, chunk, MAX_AUTH_LEN, wire::parse_auth) {
        encodes_to(bytes, len, |out| wire::encode_auth(&creds, out));
        credentials(&creds);
    }

    let request = stream(bytes, chunk, MAX_REQUEST_LEN, wire::parse_request);
    first_byte(&request, not_socks5);
    match request {
        Ok(Some((request, len))) => {
            encodes_to(bytes, len, |out| wire::encode_request(&request, out));
            judge(&request.dest, request.port);
        }
        Err(error) => {
            // What the client app answers before it closes.
            if let Some(rep) = error.rep() {
                assert!(matches!(
                    rep,
                    Rep::GeneralFailure | Rep::CommandNotSupported | Rep::AddressTypeNotSupported
                ));
            }
        }
        Ok(None) => {}
    }

    let reply = stream(bytes, chunk, MAX_REQUEST_LEN, wire::parse_reply);
    first_byte(&reply, not_socks5);
    if let Ok(Some((reply, len))) = reply {
        encodes_to(bytes, len, |out| wire::encode_reply(&reply, out));
        assert_eq!(Rep::from(u8::from(reply.rep)), reply.rep);
    }

    if let Ok((header, data)) = wire::parse_udp(bytes) {
        let mut out = Vec::new();
        wire::encode_udp_header(&header, &mut out);
        out.extend_from_slice(data);
        assert_eq!(out, bytes, "a datagram re-encodes to itself");
        let UdpHeader { dest, port } = header;
        judge(&dest, port);
    }

    if let Ok(text) = std::str::from_utf8(bytes) {
        host_name(text, 443);
    }
}

/// Parse a stream message from `bytes` as a reader would, `chunk` more bytes at a time,
/// and check it against the parse of all the bytes at once, which is returned.
fn stream<'a, T: PartialEq + Debug>(
    bytes: &'a [u8],
    chunk: usize,
    max: usize,
    parse: impl Fn(&'a [u8]) -> Parsed<T>,
) -> Parsed<T> {
    let whole = parse(bytes);
    let mut have = 0;
    loop {
        have = (have + chunk).min(bytes.len());
        match parse(&bytes[..have]) {
            Ok(None) if have < bytes.len() => continue,
            early => {
                assert_eq!(early, whole, "after {have} of {} bytes", bytes.len());
                break;
            }
        }
    }
    match &whole {
        Ok(None) => assert!(bytes.len() < max, "incomplete after {} bytes", bytes.len()),
        Ok(Some((_, len))) => {
            assert!(
                (1..=max).contains(len) && *len <= bytes.len(),
                "length {len}"
            );
            assert_eq!(
                parse(&bytes[..len - 1]),
                Ok(None),
                "a message needs all its bytes"
            );
            assert_eq!(parse(&bytes[..*len]), whole, "and no more");
        }
        Err(_) => {}
    }
    whole
}

/// `NotSocks5` exactly when the first byte is not 5.
fn first_byte<T>(parsed: &Parsed<T>, not_socks5: Option<u8>) {
    let refused = match parsed {
        Err(WireError::NotSocks5(b)) => Some(*b),
        _ => None,
    };
    assert_eq!(refused, not_socks5);
}

/// What `encode` writes is exactly `bytes[..len]`.
fn encodes_to(bytes: &[u8], len: usize, encode: impl FnOnce(&mut Vec<u8>)) {
    let mut out = Vec::new();
    encode(&mut out);
    assert_eq!(out, bytes[..len], "re-encoded");
}

/// Credentials match themselves, and not with either part changed.
fn credentials(creds: &Credentials<'_>) {
    assert!(!creds.username.is_empty() && creds.username.len() <= 255);
    assert!(!creds.password.is_empty() && creds.password.len() <= 255);
    assert!(creds.matches(creds.username, creds.password));
    let longer = |b: &[u8]| [b, b"x"].concat();
    assert!(!creds.matches(creds.username, &longer(creds.password)));
    assert!(!creds.matches(&longer(creds.username), creds.password));
    let mut flipped = creds.password.to_vec();
    if let Some(last) = flipped.last_mut() {
        *last ^= 1;
    }
    assert!(!creds.matches(creds.username, &flipped));
}

/// The exit's decision on a destination: a name as the exit reads it, an address checked.
fn judge(dest: &Dest, port: u16) {
    match dest {
        Dest::Ip(ip) => address(*ip, port),
        Dest::Name(name) => host_name(name.as_str(), port),
    }
}

fn host_name(name: &str, port: u16) {
    match numeric_host(name) {
        Some(ip) => {
            assert_eq!(numeric_host(&ip.to_string()), Some(ip), "{name}");
            address(ip, port);
        }
        None => {
            let _ = check_name(name);
        }
    }
    // What std reads as an address, numeric_host reads the same.
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        assert_eq!(numeric_host(name), Some(IpAddr::V4(ip)), "{name}");
    }
    if let Ok(ip) = name.parse::<Ipv6Addr>() {
        assert_eq!(numeric_host(name), Some(IpAddr::V6(ip)), "{name}");
    }
}

fn address(ip: IpAddr, port: u16) {
    let policy = policy();
    let verdict = policy.check(SocketAddr::new(ip, port));
    let canonical = ip.to_canonical();
    if let IpAddr::V4(v4) = canonical {
        let mapped = SocketAddr::new(v4.to_ipv6_mapped().into(), port);
        assert_eq!(
            verdict,
            policy.check(mapped),
            "{ip} and its mapped form, port {port}"
        );
    }
    if verdict.is_err() {
        return;
    }
    let forbidden = match canonical {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unique_local() || v6.is_unicast_link_local(),
    };
    assert!(
        !forbidden && !canonical.is_loopback() && !canonical.is_multicast(),
        "{ip}:{port} allowed"
    );
    assert!(!canonical.is_unspecified(), "{ip}:{port} allowed");
    // (An IPv6 address that embeds one of 10/8 may pass too: the policy judges it by what
    // it carries, which `to_canonical` does not unwrap beyond `::ffff:0:0/96`.)
    if let (25, IpAddr::V4(v4)) = (port, canonical) {
        assert_eq!(v4.octets()[0], 10, "{ip}:25 allowed outside the exception");
    }
}
