//! The lease protocol's lines as the plan writes them, the refusals, and the line reader
//! against streams cut every which way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn granted() -> Reply {
    Reply::Granted(LeaseReply {
        ipv4: "198.19.128.2".parse().unwrap(),
        ipv6: Some("fd00:5b::2".parse().unwrap()),
        dns: vec!["198.18.9.53".parse().unwrap()],
        mtu: 1420,
    })
}

#[test]
fn requests_encode_as_the_plan_writes_them() {
    assert_eq!(
        encode_request(Request::Lease),
        b"{\"v\":1,\"op\":\"lease\"}\n"
    );
    assert_eq!(
        encode_request(Request::Keepalive),
        b"{\"v\":1,\"op\":\"keepalive\"}\n"
    );
    assert_eq!(
        encode_request(Request::Release),
        b"{\"v\":1,\"op\":\"release\"}\n"
    );
    for r in [Request::Lease, Request::Keepalive, Request::Release] {
        assert_eq!(decode_request(&encode_request(r)).unwrap(), r);
    }
    // Without the newline, with spaces, fields in another order.
    assert_eq!(
        decode_request(br#"{ "op" : "lease", "v" : 1 }"#).unwrap(),
        Request::Lease
    );
}

#[test]
fn replies_encode_as_the_plan_writes_them() {
    assert_eq!(
        String::from_utf8(encode_reply(&granted())).unwrap(),
        "{\"v\":1,\"ok\":{\"ipv4\":\"198.19.128.2\",\"ipv6\":\"fd00:5b::2\",\"dns\":[\"198.18.9.53\"],\"mtu\":1420}}\n"
    );
    let v4_only = Reply::Granted(LeaseReply {
        ipv4: "198.19.128.3".parse().unwrap(),
        ipv6: None,
        dns: vec![],
        mtu: 1420,
    });
    assert_eq!(
        String::from_utf8(encode_reply(&v4_only)).unwrap(),
        "{\"v\":1,\"ok\":{\"ipv4\":\"198.19.128.3\",\"ipv6\":null,\"dns\":[],\"mtu\":1420}}\n"
    );
    let refused = Reply::Error {
        kind: ErrorKind::BadRequest,
        message: "no".into(),
    };
    assert_eq!(
        encode_reply(&refused),
        b"{\"v\":1,\"error\":{\"kind\":\"bad_request\",\"message\":\"no\"}}\n"
    );
    assert_eq!(
        encode_reply(&Reply::Keepalive),
        b"{\"v\":1,\"op\":\"keepalive\"}\n"
    );
    for kind in [
        ErrorKind::Forbidden,
        ErrorKind::Exhausted,
        ErrorKind::BadRequest,
        ErrorKind::Unavailable,
    ] {
        let reply = Reply::Error {
            kind,
            message: format!("{kind:?}"),
        };
        assert_eq!(decode_reply(&encode_reply(&reply)).unwrap(), reply);
    }
    for reply in [granted(), v4_only, Reply::Keepalive] {
        assert_eq!(decode_reply(&encode_reply(&reply)).unwrap(), reply);
    }
}

#[test]
fn long_messages_are_shortened_to_fit_a_line() {
    for filler in ["x", "é", "\u{1}", "\"", "😀"] {
        let reply = Reply::Error {
            kind: ErrorKind::Unavailable,
            message: filler.repeat(3000),
        };
        let line = encode_reply(&reply);
        assert!(line.len() <= MAX_LINE, "{filler}: {}", line.len());
        assert!(line.len() > MAX_LINE - 12, "{filler}: {}", line.len());
        let Reply::Error { kind, message } = decode_reply(&line).unwrap() else {
            panic!("not an error")
        };
        assert_eq!(kind, ErrorKind::Unavailable);
        assert!(filler.repeat(3000).starts_with(&message));
    }
    // Too many DNS servers: the first eight are sent.
    let mut lease = LeaseReply {
        ipv4: "10.0.0.2".parse().unwrap(),
        ipv6: None,
        dns: vec!["2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(); 20],
        mtu: 1280,
    };
    let line = encode_reply(&Reply::Granted(lease.clone()));
    assert!(line.len() <= MAX_LINE);
    lease.dns.truncate(MAX_DNS);
    assert_eq!(decode_reply(&line).unwrap(), Reply::Granted(lease));
}

#[test]
fn refusals_say_what_is_wrong() {
    let err = |line: &[u8]| decode_request(line).unwrap_err();
    assert!(matches!(
        err(br#"{"v":2,"op":"lease"}"#),
        ProtoError::Version(2)
    ));
    assert!(matches!(err(br#"{"v":0}"#), ProtoError::Version(0)));
    assert!(matches!(err(br#"{"op":"lease"}"#), ProtoError::Json(_)));
    assert!(matches!(
        err(br#"{"v":1,"op":"steal"}"#),
        ProtoError::Json(_)
    ));
    assert!(matches!(
        err(br#"{"v":1,"op":"lease","x":1}"#),
        ProtoError::Json(_)
    ));
    assert!(matches!(
        err(br#"{"v":1,"op":"lease"} {}"#),
        ProtoError::Json(_)
    ));
    assert!(matches!(err(b"\xff\xfe"), ProtoError::NotObject));
    assert!(matches!(err(b"{\xff}"), ProtoError::Json(_)));
    assert!(matches!(err(b""), ProtoError::NotObject));
    assert!(matches!(err(br#"[1,"lease"]"#), ProtoError::NotObject));
    assert_eq!(
        decode_request(b" \t{\"v\":1,\"op\":\"lease\"}\n").unwrap(),
        Request::Lease
    );
    assert!(matches!(
        err(b"{\"v\":1,\"op\":\"lease\"}\n{\"v\":1,\"op\":\"lease\"}\n"),
        ProtoError::Newline
    ));
    let mut long = br#"{"v":1,"op":"lease"}"#.to_vec();
    long.resize(MAX_LINE, b' ');
    assert!(decode_request(&long).is_ok(), "exactly 1024 bytes");
    long.push(b'\n');
    assert!(matches!(err(&long), ProtoError::TooLong(1025)));
    let text = ProtoError::Version(2).to_string();
    assert!(
        text.contains("version 2") && text.contains("speaks 1"),
        "{text}"
    );
    let text = err(br#"{"v":1,"op":"steal"}"#).to_string();
    assert!(text.contains("steal"), "{text}");

    let err = |line: &str| decode_reply(line.as_bytes()).unwrap_err();
    assert!(matches!(err(r#"{"v":1}"#), ProtoError::ReplyShape));
    assert!(matches!(
        err(r#"{"v":1,"op":"keepalive","error":{"kind":"exhausted","message":""}}"#),
        ProtoError::ReplyShape
    ));
    assert!(matches!(
        err(r#"{"v":1,"op":"lease"}"#),
        ProtoError::Json(_)
    ));
    assert!(matches!(
        err(r#"{"v":1,"error":{"kind":"angry","message":""}}"#),
        ProtoError::Json(_)
    ));
    assert!(matches!(
        err(r#"{"v":1,"ok":{"ipv4":"10.0.0.2","ipv6":null,"dns":[],"mtu":500}}"#),
        ProtoError::Mtu(500)
    ));
    assert!(matches!(
        err(r#"{"v":1,"ok":{"ipv4":"fd00::2","ipv6":null,"dns":[],"mtu":1420}}"#),
        ProtoError::Json(_)
    ));
    assert!(matches!(
        err(r#"{"v":1,"ok":{"ipv4":"10.0.0.2","ipv6":null,"dns":[],"mtu":1420,"x":0}}"#),
        ProtoError::Json(_)
    ));
    let nine = format!(
        r#"{{"v":1,"ok":{{"ipv4":"10.0.0.2","ipv6":null,"dns":[{}],"mtu":1420}}}}"#,
        ["\"1.1.1.1\""; 9].join(",")
    );
    assert!(matches!(err(&nine), ProtoError::TooManyDns(9)));
}

/// A reader that hands out at most `chunk` bytes per call, with an `Interrupted` first.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
    interrupt: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn lines(data: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Option<LineError>) {
    let mut reader = LineReader::new(Chunked {
        data,
        chunk,
        interrupt: false,
    });
    let mut out = Vec::new();
    loop {
        match reader.read_line() {
            Ok(Some(line)) => out.push(line.to_vec()),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

#[test]
fn the_line_reader_cuts_streams_at_newlines() {
    let stream = [
        encode_request(Request::Lease),
        encode_reply(&granted()),
        b"\n".to_vec(),
        encode_request(Request::Release),
    ]
    .concat();
    for chunk in [1, 2, 7, 64, 5000] {
        let (got, end) = lines(&stream, chunk);
        assert!(end.is_none(), "chunk {chunk}: {end:?}");
        assert_eq!(got.len(), 4);
        assert_eq!(got.concat(), stream);
        assert_eq!(decode_request(&got[3]).unwrap(), Request::Release);
    }
}

#[test]
fn the_line_reader_stops_at_long_lines_and_truncation() {
    let mut exact = vec![b'a'; MAX_LINE - 1];
    exact.push(b'\n');
    let (got, end) = lines(&[exact.clone(), exact.clone()].concat(), 100);
    assert_eq!(got, [exact.clone(), exact.clone()]);
    assert!(end.is_none());

    let long = [vec![b'a'; MAX_LINE], b"\n".to_vec()].concat();
    let (got, end) = lines(&[exact.clone(), long].concat(), 300);
    assert_eq!(got, [exact]);
    assert!(matches!(end, Some(LineError::TooLong)));

    let (got, end) = lines(b"{\"v\":1,\"op\":\"lease\"}\n{\"v\":1", 3);
    assert_eq!(got.len(), 1);
    assert!(matches!(end, Some(LineError::Truncated)));

    let (got, end) = lines(b"", 3);
    assert!(got.is_empty() && end.is_none());
}
