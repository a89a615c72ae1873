//! The SOCKS5 codec against byte vectors: RFC 1928 and 1929 messages, every split of them,
//! malformed and foreign input, round trips.

use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Feed `bytes` one more byte at a time: `None` until the whole message, which takes
/// exactly `bytes.len()`; with bytes after it, the same message of the same length. (A
/// macro: a function could not take a parser whose message borrows from both the bytes and
/// a local copy of them.)
macro_rules! every_split {
    ($bytes:expr, $parse:expr) => {{
        let bytes: &[u8] = &$bytes[..];
        for cut in 0..bytes.len() {
            assert_eq!(
                $parse(&bytes[..cut]),
                Ok(None),
                "cut at {cut} of {bytes:02x?}"
            );
        }
        let (message, len) = $parse(bytes).unwrap().expect("a whole message");
        assert_eq!(len, bytes.len());
        let more = [bytes, b"\x05\x01\x00next"].concat();
        assert_eq!(
            $parse(&more),
            Ok(Some((message.clone(), len))),
            "bytes after it"
        );
        message
    }};
}

fn name(s: &str) -> Dest {
    Dest::Name(Name::new(s).unwrap())
}

fn request_bytes(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(request, &mut out);
    out
}

#[test]
fn greeting() {
    let greeting = every_split!(&[5, 2, 0, 2], parse_greeting);
    assert_eq!(greeting.methods, [0, 2]);
    assert!(greeting.offers(Method::NoAuth));
    assert!(greeting.offers(Method::UsernamePassword));
    let gssapi = every_split!(&[5, 1, 1], parse_greeting);
    assert!(!gssapi.offers(Method::NoAuth));
    let all: Vec<u8> = [5, 255].into_iter().chain(0..=254).collect();
    assert_eq!(all.len(), MAX_GREETING_LEN);
    assert_eq!(every_split!(&all, parse_greeting).methods.len(), 255);
    let mut out = Vec::new();
    encode_greeting(&Greeting { methods: &[0, 2] }, &mut out);
    assert_eq!(out, [5, 2, 0, 2]);

    assert_eq!(parse_greeting(&[5, 0]), Err(WireError::NoMethods));
    assert_eq!(parse_greeting(&[5, 0, 0]), Err(WireError::NoMethods));
    assert_eq!(method_reply(Method::NoAuth), [5, 0]);
    assert_eq!(method_reply(Method::UsernamePassword), [5, 2]);
    assert_eq!(method_reply(Method::NoAcceptable), [5, 0xff]);
}

#[test]
fn other_protocols_are_refused_at_the_first_byte() {
    for first in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"G",
        b"CONNECT a:443 HTTP/1.1",
    ] {
        let err = WireError::NotSocks5(first[0]);
        assert_eq!(parse_greeting(first), Err(err));
        assert_eq!(parse_request(first), Err(err));
        assert_eq!(parse_reply(first), Err(err));
        assert_eq!(err.rep(), None);
    }
    // SOCKS4 CONNECT to 127.0.0.1:80.
    let socks4 = [4, 1, 0, 80, 127, 0, 0, 1, 0];
    assert_eq!(parse_greeting(&socks4), Err(WireError::NotSocks5(4)));
    assert_eq!(
        parse_greeting(&[0x16, 3, 1]),
        Err(WireError::NotSocks5(0x16))
    );
    assert_eq!(
        parse_auth(b"GET / HTTP/1.1"),
        Err(WireError::BadAuthVersion(b'G'))
    );
}

#[test]
fn credentials() {
    let bytes = b"\x01\x05alice\x06secret";
    let creds = every_split!(bytes, parse_auth);
    assert_eq!(creds.username, b"alice");
    assert_eq!(creds.password, b"secret");
    let mut out = Vec::new();
    encode_auth(&creds, &mut out);
    assert_eq!(out, bytes);
    assert!(!format!("{creds:?}").contains("secret"));

    assert!(creds.matches(b"alice", b"secret"));
    // Both must match: the original Skywire accepted either one.
    assert!(!creds.matches(b"alice", b"wrong!"));
    assert!(!creds.matches(b"bob", b"secret"));
    assert!(!creds.matches(b"alic", b"secret"));
    assert!(!creds.matches(b"alice", b"secret2"));
    assert!(!creds.matches(b"", b""));

    let long = [[1, 255].as_slice(), &[b'u'; 255], &[255], &[b'p'; 255]].concat();
    assert_eq!(long.len(), MAX_AUTH_LEN);
    let creds = every_split!(&long, parse_auth);
    assert!(creds.matches(&[b'u'; 255], &[b'p'; 255]));
    assert!(!creds.matches(&[b'u'; 256], &[b'p'; 255]));

    assert_eq!(parse_auth(b"\x01\x00\x01p"), Err(WireError::EmptyUsername));
    assert_eq!(parse_auth(b"\x01\x01u\x00"), Err(WireError::EmptyPassword));
    assert_eq!(parse_auth(b"\x05\x01u"), Err(WireError::BadAuthVersion(5)));
    assert_eq!(auth_reply(true), [1, 0]);
    assert_eq!(auth_reply(false), [1, 1]);
}

#[test]
fn requests() {
    // CONNECT 192.0.2.7:443, as curl sends it.
    let v4 = [5, 1, 0, 1, 192, 0, 2, 7, 1, 187];
    let request = every_split!(&v4, parse_request);
    assert_eq!(
        request,
        Request {
            command: Command::Connect,
            dest: Dest::Ip(Ipv4Addr::new(192, 0, 2, 7).into()),
            port: 443,
        }
    );
    assert_eq!(request_bytes(&request), v4);

    // CONNECT example.com:80 (curl --socks5-hostname).
    let named = b"\x05\x01\x00\x03\x0bexample.com\x00\x50";
    let request = every_split!(named, parse_request);
    assert_eq!(request.dest, name("example.com"));
    assert_eq!(request.port, 80);
    assert_eq!(request_bytes(&request), named);

    // UDP ASSOCIATE [2001:db8::1]:0 and BIND.
    let mut v6 = vec![5, 3, 0, 4];
    v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    v6.extend_from_slice(&[0, 0]);
    let request = every_split!(&v6, parse_request);
    assert_eq!(request.command, Command::UdpAssociate);
    assert_eq!(request.dest.to_string(), "2001:db8::1");
    assert_eq!(request_bytes(&request), v6);
    let bind = every_split!(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0], parse_request);
    assert_eq!(bind.command, Command::Bind);

    // An IPv4-mapped address stays as sent.
    let mut mapped = vec![5, 1, 0, 4];
    mapped.extend_from_slice(&Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets());
    mapped.extend_from_slice(&[0, 80]);
    let request = every_split!(&mapped, parse_request);
    assert!(matches!(request.dest, Dest::Ip(IpAddr::V6(_))));
    assert_eq!(request_bytes(&request), mapped);
}

#[test]
fn domain_name_lengths() {
    let with_name = |name: &[u8]| {
        let len = u8::try_from(name.len()).unwrap();
        [&[5, 1, 0, 3, len][..], name, &[0, 80]].concat()
    };
    let longest = with_name(&[b'a'; 255]);
    assert_eq!(longest.len(), MAX_REQUEST_LEN);
    let request = every_split!(&longest, parse_request);
    assert_eq!(request.dest.to_string().len(), 255);
    assert_eq!(request_bytes(&request), longest);
    every_split!(&with_name(b"a"), parse_request);

    let empty = with_name(b"");
    assert_eq!(parse_request(&empty), Err(WireError::EmptyName));
    assert_eq!(parse_request(&empty[..5]), Err(WireError::EmptyName));
    assert_eq!(WireError::EmptyName.rep(), Some(Rep::GeneralFailure));
    for (bad, byte) in [
        (&b"a b"[..], b' '),
        (b"a\0b", 0),
        (b"caf\xc3\xa9", 0xc3),
        (b"x\x7f", 0x7f),
        (b"\n", b'\n'),
    ] {
        let bytes = with_name(bad);
        assert_eq!(parse_request(&bytes), Err(WireError::BadName(byte)));
        // An invalid name is found once all of it is there, never earlier.
        assert_eq!(parse_request(&bytes[..bytes.len() - 3]), Ok(None));
        assert_eq!(WireError::BadName(byte).rep(), Some(Rep::GeneralFailure));
    }

    assert_eq!(Name::new(""), Err(WireError::EmptyName));
    assert_eq!(Name::new("a".repeat(256)), Err(WireError::NameTooLong));
    assert_eq!(Name::new("a b"), Err(WireError::BadName(b' ')));
    assert_eq!(Name::new("a".repeat(255)).unwrap().as_str().len(), 255);
}

#[test]
fn malformed_requests() {
    let cases: [(&[u8], WireError, Option<Rep>); 6] = [
        (
            &[5, 4, 0, 1, 1, 2, 3, 4, 0, 80],
            WireError::UnknownCommand(4),
            Some(Rep::CommandNotSupported),
        ),
        (
            &[5, 0, 0, 1],
            WireError::UnknownCommand(0),
            Some(Rep::CommandNotSupported),
        ),
        (
            &[5, 1, 0, 2, 1, 2, 3, 4, 0, 80],
            WireError::UnknownAddressType(2),
            Some(Rep::AddressTypeNotSupported),
        ),
        (
            &[5, 1, 0, 0],
            WireError::UnknownAddressType(0),
            Some(Rep::AddressTypeNotSupported),
        ),
        (
            &[5, 1, 1, 1, 1, 2, 3, 4, 0, 80],
            WireError::ReservedNotZero(1),
            Some(Rep::GeneralFailure),
        ),
        (&[4, 1, 0, 80], WireError::NotSocks5(4), None),
    ];
    for (bytes, error, rep) in cases {
        assert_eq!(parse_request(bytes), Err(error), "{bytes:?}");
        assert_eq!(error.rep(), rep);
        // Found as soon as the offending byte arrives.
        let at = bytes
            .iter()
            .zip([5, 1, 0, 1])
            .position(|(a, b)| *a != b)
            .unwrap();
        assert_eq!(parse_request(&bytes[..=at]), Err(error));
        assert_eq!(parse_request(&bytes[..at]), Ok(None));
    }
}

#[test]
fn truncated_requests_wait() {
    for bytes in [
        &[][..],
        &[5],
        &[5, 1, 0, 1, 1, 2, 3, 4, 0],
        &[5, 1, 0, 3, 3, b'a', b'b', b'c'],
    ] {
        assert_eq!(parse_request(bytes), Ok(None), "{bytes:?}");
    }
}

#[test]
fn replies() {
    for rep in (0..=255).map(Rep::from) {
        let bytes = reply(rep);
        let parsed = every_split!(&bytes, parse_reply);
        assert_eq!(parsed.rep, rep);
        assert_eq!(parsed.bound, Dest::Ip(Ipv4Addr::UNSPECIFIED.into()));
        assert_eq!(parsed.port, 0);
        let mut out = Vec::new();
        encode_reply(&parsed, &mut out);
        assert_eq!(out, bytes);
        assert_eq!(Rep::from(u8::from(rep)), rep);
    }
    assert_eq!(reply(Rep::NotAllowed), [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(Rep::from(9), Rep::Other(9));
    assert_eq!(Rep::from(8), Rep::AddressTypeNotSupported);
    assert_eq!(Rep::HostUnreachable.to_string(), "host unreachable");
    assert_eq!(Rep::Other(200).to_string(), "reply code 200");

    // A reply naming a host, as some servers send.
    let named = b"\x05\x00\x00\x03\x04exit\x04\x38";
    let parsed = every_split!(named, parse_reply);
    assert_eq!(parsed.bound, name("exit"));
    assert_eq!(parsed.port, 1080);
    assert_eq!(parse_reply(&[5, 0, 9]), Err(WireError::ReservedNotZero(9)));
}

#[test]
fn connect_errors_map_to_replies() {
    use io::ErrorKind as K;
    for (kind, rep) in [
        (K::ConnectionRefused, Rep::ConnectionRefused),
        (K::TimedOut, Rep::TtlExpired),
        (K::HostUnreachable, Rep::HostUnreachable),
        (K::NetworkUnreachable, Rep::NetworkUnreachable),
        (K::PermissionDenied, Rep::GeneralFailure),
        (K::AddrNotAvailable, Rep::GeneralFailure),
    ] {
        assert_eq!(Rep::from_connect_error(&io::Error::from(kind)), rep);
    }
    // What connect(2) returns, through std's errno mapping.
    for (errno, rep) in [
        (libc::ECONNREFUSED, Rep::ConnectionRefused),
        (libc::ETIMEDOUT, Rep::TtlExpired),
        (libc::EHOSTUNREACH, Rep::HostUnreachable),
        (libc::ENETUNREACH, Rep::NetworkUnreachable),
    ] {
        assert_eq!(
            Rep::from_connect_error(&io::Error::from_raw_os_error(errno)),
            rep
        );
    }
}

#[test]
fn udp_datagrams() {
    let datagram = [0, 0, 0, 1, 192, 0, 2, 9, 0, 53, 0xde, 0xad];
    let (header, data) = parse_udp(&datagram).unwrap();
    assert_eq!(header.dest, Dest::Ip(Ipv4Addr::new(192, 0, 2, 9).into()));
    assert_eq!(header.port, 53);
    assert_eq!(data, [0xde, 0xad]);
    let mut out = Vec::new();
    encode_udp_header(&header, &mut out);
    assert_eq!(out, datagram[..10]);

    let named = b"\x00\x00\x00\x03\x03dns\x00\x35";
    let (header, data) = parse_udp(named).unwrap();
    assert_eq!(header.dest, name("dns"));
    assert!(data.is_empty());

    assert_eq!(
        parse_udp(&[0, 0, 1, 1, 192, 0, 2, 9, 0, 53]),
        Err(WireError::Fragment(1))
    );
    assert_eq!(
        parse_udp(&[0, 1, 0, 1, 192, 0, 2, 9, 0, 53]),
        Err(WireError::ReservedNotZero(1))
    );
    assert_eq!(
        parse_udp(&[0, 0, 0, 7, 192, 0, 2, 9, 0, 53]),
        Err(WireError::UnknownAddressType(7))
    );
    for cut in 0..10 {
        assert_eq!(parse_udp(&datagram[..cut]), Err(WireError::Truncated));
    }
}

fn dest() -> impl Strategy<Value = Dest> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| Dest::Ip(IpAddr::from(b))),
        any::<[u8; 16]>().prop_map(|b| Dest::Ip(IpAddr::from(b))),
        "[!-~]{1,255}".prop_map(|s| Dest::Name(Name::new(s).unwrap())),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Connect),
        Just(Command::Bind),
        Just(Command::UdpAssociate)
    ]
}

proptest! {
    #[test]
    fn request_round_trip(command in command(), dest in dest(), port: u16, tail: Vec<u8>) {
        let request = Request { command, dest, port };
        let mut bytes = request_bytes(&request);
        let len = bytes.len();
        prop_assert!(len <= MAX_REQUEST_LEN);
        for cut in 0..len {
            prop_assert_eq!(parse_request(&bytes[..cut]), Ok(None));
        }
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(parse_request(&bytes), Ok(Some((request, len))));
    }

    #[test]
    fn reply_and_udp_round_trip(code: u8, dest in dest(), port: u16, data: Vec<u8>) {
        let reply = Reply { rep: Rep::from(code), bound: dest.clone(), port };
        let mut bytes = Vec::new();
        encode_reply(&reply, &mut bytes);
        prop_assert_eq!(parse_reply(&bytes), Ok(Some((reply, bytes.len()))));

        let header = UdpHeader { dest, port };
        let mut datagram = Vec::new();
        encode_udp_header(&header, &mut datagram);
        datagram.extend_from_slice(&data);
        prop_assert_eq!(parse_udp(&datagram), Ok((header, &data[..])));
    }

    #[test]
    fn any_bytes_parse_consistently(command in 0u8..=4, atyp in 0u8..=5, tail: Vec<u8>) {
        // A prefix's answer is never contradicted by more bytes.
        let bytes = [&[5, command, 0, atyp][..], &tail].concat();
        let whole = parse_request(&bytes);
        for cut in 0..=bytes.len() {
            match parse_request(&bytes[..cut]) {
                Ok(None) => {}
                early => prop_assert_eq!(early, whole.clone()),
            }
        }
    }
}
