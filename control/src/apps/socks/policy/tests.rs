//! The exit policy against the addresses an attacker would try first, and the exceptions
//! and own-address rules a deployment sets.

use super::*;
use proptest::prelude::*;
use skywire_dataplane::route::PrefixError;

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn check(policy: &Policy, ip: impl Into<IpAddr>, port: u16) -> Result<(), Refusal> {
    policy.check(SocketAddr::new(ip.into(), port))
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn special_addresses_are_refused() {
    let policy = Policy::default();
    let cases: &[(&str, Refusal)] = &[
        ("127.0.0.1", Refusal::Loopback),
        ("127.255.255.254", Refusal::Loopback),
        ("0.0.0.0", Refusal::Reserved),
        ("0.1.2.3", Refusal::Reserved),
        ("10.0.0.1", Refusal::Private),
        ("172.16.0.1", Refusal::Private),
        ("172.31.255.255", Refusal::Private),
        ("192.168.1.1", Refusal::Private),
        ("169.254.169.254", Refusal::LinkLocal),
        ("100.64.0.1", Refusal::Cgnat),
        ("100.127.255.255", Refusal::Cgnat),
        ("192.0.0.170", Refusal::Reserved),
        ("224.0.0.1", Refusal::Multicast),
        ("239.255.255.250", Refusal::Multicast),
        ("240.0.0.1", Refusal::Reserved),
        ("255.255.255.255", Refusal::Reserved),
        ("::", Refusal::Reserved),
        ("::1", Refusal::Loopback),
        ("fe80::1", Refusal::LinkLocal),
        ("fd00::1", Refusal::UniqueLocal),
        ("fc00::1", Refusal::UniqueLocal),
        ("fec0::1", Refusal::Private),
        ("ff02::1", Refusal::Multicast),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Refusal::Teredo),
        // Wrapped IPv4 addresses are judged by what they carry.
        ("::ffff:127.0.0.1", Refusal::Loopback),
        ("::ffff:10.0.0.1", Refusal::Private),
        ("::ffff:0:169.254.169.254", Refusal::LinkLocal),
        ("::127.0.0.1", Refusal::Loopback),
        ("::0.0.0.2", Refusal::Reserved),
        ("64:ff9b::7f00:1", Refusal::Loopback),
        ("64:ff9b::a9fe:a9fe", Refusal::LinkLocal),
        ("2002:7f00:1::", Refusal::Loopback),
        ("2002:c0a8:101::1", Refusal::Private),
    ];
    for (ip, why) in cases {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(check(&policy, ip, 443), Err(*why), "{ip}");
    }
    // 127.0.0.1 in the integer forms inet_aton accepts.
    assert_eq!(
        check(&policy, Ipv4Addr::from(2130706433u32), 80),
        Err(Refusal::Loopback)
    );
    assert_eq!(
        check(&policy, Ipv4Addr::from(0x7f00_0001u32), 80),
        Err(Refusal::Loopback)
    );
}

#[test]
fn public_addresses_are_allowed_but_port_25() {
    let policy = Policy::default();
    assert_eq!(policy.check(at("1.1.1.1:443")), Ok(()));
    assert_eq!(policy.check(at("1.1.1.1:25")), Err(Refusal::PortDenied(25)));
    assert_eq!(policy.check(at("[2606:4700::1111]:443")), Ok(()));
    assert_eq!(policy.check(at("[::ffff:1.1.1.1]:443")), Ok(()));
    assert_eq!(policy.check(at("[64:ff9b::101:101]:443")), Ok(()));
    assert_eq!(policy.check(at("[2002:101:101::1]:443")), Ok(()));
    assert_eq!(
        policy.check(at("[::ffff:1.1.1.1]:25")),
        Err(Refusal::PortDenied(25))
    );
    // The project's namespace tests and the TEST-NETs are not special.
    for ip in [
        "198.18.0.1",
        "198.19.255.1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
    ] {
        assert_eq!(check(&policy, ip.parse::<Ipv4Addr>().unwrap(), 80), Ok(()));
    }
    let open = Policy {
        deny_ports: Vec::new(),
        ..Policy::default()
    };
    assert_eq!(open.check(at("1.1.1.1:25")), Ok(()));
}

#[test]
fn local_use_nat64_checks_every_reading() {
    let policy = Policy::default();
    // 127.0.0.1 embedded at /96 of 64:ff9b:1::/48.
    assert_eq!(
        check(&policy, v6("64:ff9b:1::7f00:1"), 80),
        Err(Refusal::Loopback)
    );
    // 10.1.2.3 at /48 (bytes 6, 7, then 9, 10), public at /56, /64 and /96.
    assert_eq!(
        check(&policy, v6("64:ff9b:1:a01:2:304:506:708"), 80),
        Err(Refusal::Private)
    );
    // 1.1.1.1 at /64 reads as 0.1.1.1 at /56: refused.
    assert_eq!(
        check(&policy, v6("64:ff9b:1:0:1:101:100::"), 80),
        Err(Refusal::Reserved)
    );
    // A public address at every reading passes.
    assert_eq!(
        check(&policy, v6("64:ff9b:1:101:1:101:101:101"), 80),
        Ok(())
    );
}

#[test]
fn exceptions() {
    let policy = Policy {
        allow: vec!["10.0.0.0/8:8080".parse().unwrap()],
        ..Policy::default()
    };
    assert_eq!(policy.check(at("10.1.2.3:8080")), Ok(()));
    assert_eq!(policy.check(at("10.1.2.3:8081")), Err(Refusal::Private));
    assert_eq!(policy.check(at("[::ffff:10.1.2.3]:8080")), Ok(()));
    assert_eq!(policy.check(at("11.1.2.3:8080")), Ok(()));
    assert_eq!(policy.check(at("127.0.0.1:8080")), Err(Refusal::Loopback));

    // `*` allows every port but the denied ones; an explicit port allows even those.
    let policy = Policy {
        allow: vec![
            "192.168.7.0/24:*".parse().unwrap(),
            "192.168.9.0/24:25".parse().unwrap(),
        ],
        ..Policy::default()
    };
    assert_eq!(policy.check(at("192.168.7.7:1")), Ok(()));
    assert_eq!(policy.check(at("192.168.7.7:65535")), Ok(()));
    assert_eq!(
        policy.check(at("192.168.7.7:25")),
        Err(Refusal::PortDenied(25))
    );
    assert_eq!(policy.check(at("192.168.9.9:25")), Ok(()));
    assert_eq!(policy.check(at("192.168.9.9:26")), Err(Refusal::Private));

    // An IPv6 exception, and one naming the wrapper rather than what it carries.
    let policy = Policy {
        allow: vec![
            "[fd77::/16]:443".parse().unwrap(),
            "[64:ff9b::/96]:*".parse().unwrap(),
        ],
        ..Policy::default()
    };
    assert_eq!(policy.check(at("[fd77::5]:443")), Ok(()));
    assert_eq!(policy.check(at("[fd78::5]:443")), Err(Refusal::UniqueLocal));
    assert_eq!(policy.check(at("[64:ff9b::a00:1]:80")), Ok(()));
}

#[test]
fn mesh_and_own_addresses() {
    let policy = Policy {
        own: vec![
            p("198.18.1.2/24"),
            p("2001:db8:5::2/64"),
            p("203.0.113.9/32"),
        ],
        mesh: vec![p("198.19.0.0/16"), p("fd77::/16")],
        ..Policy::default()
    };
    assert_eq!(policy.check(at("198.18.1.2:80")), Err(Refusal::OwnAddress));
    assert_eq!(policy.check(at("198.18.1.3:80")), Err(Refusal::OwnLan));
    assert_eq!(policy.check(at("198.18.1.0:80")), Err(Refusal::OwnLan));
    assert_eq!(policy.check(at("198.18.2.3:80")), Ok(()));
    assert_eq!(policy.check(at("203.0.113.9:80")), Err(Refusal::OwnAddress));
    assert_eq!(policy.check(at("203.0.113.10:80")), Ok(()));
    assert_eq!(
        policy.check(at("[2001:db8:5::2]:80")),
        Err(Refusal::OwnAddress)
    );
    assert_eq!(
        policy.check(at("[2001:db8:5::99]:80")),
        Err(Refusal::OwnLan)
    );
    assert_eq!(
        policy.check(at("[::ffff:198.18.1.2]:80")),
        Err(Refusal::OwnAddress)
    );
    assert_eq!(policy.check(at("198.19.3.4:80")), Err(Refusal::Mesh));
    // The special ranges are named before the mesh.
    assert_eq!(policy.check(at("[fd77::1]:80")), Err(Refusal::UniqueLocal));
    // The own address of a 6to4 exit is refused in its IPv6 form too.
    let sixtofour = Policy {
        own: vec![p("2002:cb00:7109::1/48")],
        ..Policy::default()
    };
    assert_eq!(
        sixtofour.check(at("[2002:cb00:7109::1]:80")),
        Err(Refusal::OwnAddress)
    );

    // An exception overrides the own LAN (and the own address), not the port deny.
    let policy = Policy {
        allow: vec!["198.18.1.0/24:*".parse().unwrap()],
        ..policy
    };
    assert_eq!(policy.check(at("198.18.1.3:80")), Ok(()));
    assert_eq!(policy.check(at("198.18.1.2:80")), Ok(()));
    assert_eq!(
        policy.check(at("198.18.1.3:25")),
        Err(Refusal::PortDenied(25))
    );
}

#[test]
fn exception_syntax() {
    for (text, prefix, ports) in [
        ("198.18.0.0/15:8080", "198.18.0.0/15", Ports::One(8080)),
        ("198.18.0.0/15:*", "198.18.0.0/15", Ports::All),
        ("[2001:db8::/32]:443", "2001:db8::/32", Ports::One(443)),
        ("[::/0]:*", "::/0", Ports::All),
        ("[10.0.0.0/8]:1", "10.0.0.0/8", Ports::One(1)),
        (" 10.0.0.1/32:65535 ", "10.0.0.1/32", Ports::One(65535)),
    ] {
        let exception: Exception = text.parse().unwrap();
        assert_eq!(exception.prefix, p(prefix), "{text}");
        assert_eq!(exception.ports, ports, "{text}");
        assert_eq!(exception.to_string().parse::<Exception>(), Ok(exception));
    }
    assert_eq!(
        "[2001:db8::/32]:443"
            .parse::<Exception>()
            .unwrap()
            .to_string(),
        "[2001:db8::/32]:443"
    );
    for (text, error) in [
        ("10.0.0.0/8", ExceptionError::MissingPort),
        ("10.0.0.0/8:", ExceptionError::BadPort),
        ("10.0.0.0/8:0", ExceptionError::BadPort),
        ("10.0.0.0/8:65536", ExceptionError::BadPort),
        ("10.0.0.0/8:+80", ExceptionError::BadPort),
        ("10.0.0.0/8:http", ExceptionError::BadPort),
        ("2001:db8::/32:443", ExceptionError::Brackets),
        ("[2001:db8::/32:443", ExceptionError::Brackets),
        ("[2001:db8::/32]443", ExceptionError::MissingPort),
        ("10.0.0.0:80", PrefixError::MissingLength.into()),
        ("10.0.0.0/33:80", PrefixError::BadLength.into()),
        ("example.com/8:80", PrefixError::BadAddress.into()),
    ] {
        assert_eq!(text.parse::<Exception>(), Err(error), "{text}");
    }
}

#[test]
fn numeric_hosts() {
    let loopback = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    for name in [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "2130706433",
        "0x7f000001",
        "0X7F000001",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f.1",
        "017700000001",
        "127.0.0.1.",
        "0177.0x0.00.1",
    ] {
        assert_eq!(numeric_host(name), loopback, "{name}");
    }
    assert_eq!(numeric_host("0"), Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    assert_eq!(
        numeric_host("4294967295"),
        Some(IpAddr::V4(Ipv4Addr::BROADCAST))
    );
    assert_eq!(
        numeric_host("1.2.65535"),
        Some("1.2.255.255".parse().unwrap())
    );
    assert_eq!(numeric_host("::1"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert_eq!(numeric_host("[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert_eq!(
        numeric_host("fe80::1%eth0"),
        Some("fe80::1".parse().unwrap())
    );
    assert_eq!(
        numeric_host("[::ffff:127.0.0.1]"),
        Some("::ffff:127.0.0.1".parse().unwrap())
    );
    for name in [
        "",
        ".",
        "example.com",
        "localhost",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.256.0.1",
        "1.2.65536",
        "1.16777216",
        "4294967296",
        "08.0.0.1",
        "0x",
        "0xg",
        "1..1",
        ".1",
        "+1",
        "1.+1",
        "-1",
        " 1",
        "1 ",
        "127.0.0.1..",
        "[127.0.0.1]",
        "[::1",
        "::1]",
        "1.2.3.4a",
        "0x1.2.3.4.5",
    ] {
        assert_eq!(numeric_host(name), None, "{name:?}");
    }
    // What the exit does with them: checked as addresses, never resolved.
    let policy = Policy::default();
    for name in ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "[::1]"] {
        let ip = numeric_host(name).unwrap();
        assert_eq!(check(&policy, ip, 80), Err(Refusal::Loopback), "{name}");
    }
}

#[test]
fn localhost_names() {
    for name in [
        "localhost",
        "LOCALHOST",
        "localhost.",
        "a.localhost",
        "x.y.LocalHost.",
    ] {
        assert_eq!(check_name(name), Err(Refusal::Loopback), "{name}");
    }
    for name in [
        "example.com",
        "localhost.example",
        "mylocalhost",
        "localhos",
        "é",
    ] {
        assert_eq!(check_name(name), Ok(()), "{name}");
    }
}

#[test]
fn refusals_read_well() {
    assert_eq!(Refusal::PortDenied(25).to_string(), "port 25 is denied");
    assert_eq!(Refusal::Loopback.to_string(), "a loopback address");
}

proptest! {
    /// inet_aton's four-part form in any mix of radixes reads as the address.
    #[test]
    fn numeric_host_radixes(octets: [u8; 4], radixes in proptest::array::uniform4(0u8..3)) {
        let parts: Vec<String> = octets
            .iter()
            .zip(radixes)
            .map(|(&o, radix)| match radix {
                0 => o.to_string(),
                1 => format!("0{o:o}"),
                _ => format!("0x{o:x}"),
            })
            .collect();
        let want = Some(IpAddr::V4(Ipv4Addr::from(octets)));
        prop_assert_eq!(numeric_host(&parts.join(".")), want);
        prop_assert_eq!(numeric_host(&u32::from_be_bytes(octets).to_string()), want);
    }

    /// What std prints parses back, both families.
    #[test]
    fn numeric_host_reads_std(ip: IpAddr) {
        prop_assert_eq!(numeric_host(&ip.to_string()), Some(ip));
    }

    /// Every IPv4 address and its mapped IPv6 form get the same answer, whatever the
    /// port.
    #[test]
    fn mapped_agrees_with_plain(ip: Ipv4Addr, port: u16) {
        let policy = Policy {
            allow: vec!["10.9.0.0/16:*".parse().unwrap()],
            own: vec![p("198.18.0.1/24")],
            ..Policy::default()
        };
        prop_assert_eq!(
            check(&policy, ip, port),
            check(&policy, ip.to_ipv6_mapped(), port)
        );
    }
}
