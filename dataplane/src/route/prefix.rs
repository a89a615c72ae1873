//! IP prefixes (`10.77.0.0/24`, `fd77::/64`) and the longest-prefix match that picks which
//! route a packet from the TUN device takes.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, SocketAddr};

/// An IP address with a prefix length; host bits may be set (`10.77.0.1/24` is the address of
/// an interface on the `10.77.0.0/24` network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// A prefix could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// No `/` separating address and length.
    #[error("expected ADDRESS/LENGTH, for example 10.77.0.0/24")]
    MissingLength,
    /// The address part is not an IPv4 or IPv6 address.
    #[error("not an IP address")]
    BadAddress,
    /// The length is not a number up to 32 (IPv4) or 128 (IPv6).
    #[error("prefix length must be 0-32 for IPv4 and 0-128 for IPv6")]
    BadLength,
}

impl Prefix {
    /// A prefix; `None` if `len` is too long for the address family.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        (len <= max_len(addr)).then_some(Self { addr, len })
    }

    /// The address as written (host bits kept).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length (the number of network bits; not a container's length, hence no
    /// `is_empty`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for `/0`, which matches every address of its family.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// The network: the address with its host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(self.len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(self.len)).into()),
        }
    }

    /// Does the prefix contain `ip`? Addresses of the other family never match.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.len);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.len);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask32(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.trim().split_once('/').ok_or(PrefixError::MissingLength)?;
        let addr: IpAddr = addr.parse().map_err(|_| PrefixError::BadAddress)?;
        let len: u8 = len.parse().map_err(|_| PrefixError::BadLength)?;
        Self::new(addr, len).ok_or(PrefixError::BadLength)
    }
}

/// The destination address of an IPv4 or IPv6 packet, or `None` if it is neither.
#[inline]
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// The source address of an IP packet (IPv4 or IPv6, by the version nibble), if the packet
/// is long enough to hold it. Used to check that a packet a peer sent comes from an address
/// that peer may use.
pub fn source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// If `packet` is a UDP datagram (IPv4, or IPv6 with UDP as its first header) from source
/// port `port`, its destination address and port. Used to recognise a node's own transport
/// packets coming back through its TUN device (a routing loop). A non-first IPv4 fragment
/// carries no UDP header and is not recognised.
#[inline]
pub fn udp_from_port(packet: &[u8], port: u16) -> Option<SocketAddr> {
    let (dst, header) = match packet.first()? >> 4 {
        4 => {
            // Protocol UDP, fragment offset zero.
            if *packet.get(9)? != 17
                || u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff != 0
            {
                return None;
            }
            (
                destination(packet)?,
                usize::from(packet.first()? & 0x0f) * 4,
            )
        }
        6 => {
            if *packet.get(6)? != 17 {
                return None;
            }
            (destination(packet)?, 40)
        }
        _ => return None,
    };
    let ports = packet.get(header..header + 4)?;
    let source = u16::from_be_bytes([*ports.first()?, *ports.get(1)?]);
    let dport = u16::from_be_bytes([*ports.get(2)?, *ports.get(3)?]);
    (source == port).then_some(SocketAddr::new(dst, dport))
}

/// A longest-prefix-match table from prefixes to values, for the few prefixes a node routes
/// (a linear scan over entries kept sorted longest first: no allocation per lookup).
#[derive(Debug, Clone)]
pub struct PrefixTable<T> {
    entries: Vec<(Prefix, T)>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<T> PrefixTable<T> {
    /// Add a prefix. A prefix equal to one already present replaces its value.
    pub fn insert(&mut self, prefix: Prefix, value: T) {
        let prefix = Prefix {
            addr: prefix.network(),
            len: prefix.len,
        };
        self.entries.retain(|(p, _)| *p != prefix);
        let at = self.entries.partition_point(|(p, _)| p.len >= prefix.len);
        self.entries.insert(at, (prefix, value));
    }

    /// The value of the longest prefix containing `ip`.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        self.entries
            .iter()
            .find(|(p, _)| p.contains(ip))
            .map(|(_, v)| v)
    }

    /// Every entry, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = (&Prefix, &T)> {
        self.entries.iter().map(|(p, v)| (p, v))
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_display_contains() {
        assert_eq!(p("10.77.0.1/24").to_string(), "10.77.0.1/24");
        assert_eq!(p("10.77.0.1/24").network(), ip("10.77.0.0"));
        assert!(p("10.77.0.0/24").contains(ip("10.77.0.255")));
        assert!(!p("10.77.0.0/24").contains(ip("10.77.1.0")));
        assert!(p("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(!p("0.0.0.0/0").contains(ip("::1")));
        assert!(p("fd77::/64").contains(ip("fd77::5")));
        assert!(p("fd77::1/128").contains(ip("fd77::1")));
        assert!(!p("fd77::1/128").contains(ip("fd77::2")));
        assert_eq!(
            "10.0.0.0".parse::<Prefix>(),
            Err(PrefixError::MissingLength)
        );
        assert_eq!("10.0.0/8".parse::<Prefix>(), Err(PrefixError::BadAddress));
        assert_eq!("10.0.0.0/33".parse::<Prefix>(), Err(PrefixError::BadLength));
        assert_eq!("::/129".parse::<Prefix>(), Err(PrefixError::BadLength));
    }

    #[test]
    fn longest_match_wins() {
        let mut t = PrefixTable::default();
        t.insert(p("0.0.0.0/0"), "default");
        t.insert(p("10.77.0.0/16"), "wide");
        t.insert(p("10.77.3.0/24"), "narrow");
        t.insert(p("fd77::/64"), "v6");
        assert_eq!(t.lookup(ip("10.77.3.9")), Some(&"narrow"));
        assert_eq!(t.lookup(ip("10.77.4.9")), Some(&"wide"));
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(&"default"));
        assert_eq!(t.lookup(ip("fd77::9")), Some(&"v6"));
        assert_eq!(t.lookup(ip("fd78::9")), None);
        t.insert(p("10.77.3.1/24"), "replaced");
        assert_eq!(t.len(), 4);
        assert_eq!(t.lookup(ip("10.77.3.9")), Some(&"replaced"));
    }

    #[test]
    fn destination_of_packets() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[10, 77, 0, 3]);
        assert_eq!(destination(&v4), Some(ip("10.77.0.3")));
        assert_eq!(destination(&v4[..19]), None);
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[24..40].copy_from_slice(
            &ip("fd77::3")
                .to_string()
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        assert_eq!(destination(&v6), Some(ip("fd77::3")));
        assert_eq!(destination(&[0x50; 40]), None);
        assert_eq!(destination(&[]), None);
    }

    #[test]
    fn udp_from_a_port_is_recognised_in_both_families_but_not_in_later_fragments() {
        // IPv4 with 4 bytes of options, UDP 6000 -> 198.18.1.2:6001.
        let mut v4 = [0u8; 32];
        v4[0] = 0x46;
        v4[9] = 17;
        v4[16..20].copy_from_slice(&[198, 18, 1, 2]);
        v4[24..28].copy_from_slice(&[0x17, 0x70, 0x17, 0x71]);
        let to = "198.18.1.2:6001".parse().unwrap();
        assert_eq!(udp_from_port(&v4, 6000), Some(to));
        assert_eq!(udp_from_port(&v4, 6001), None);
        assert_eq!(udp_from_port(&v4[..27], 6000), None);
        let mut tcp = v4;
        tcp[9] = 6;
        assert_eq!(udp_from_port(&tcp, 6000), None);
        // A later fragment: its bytes at the port offsets are data.
        let mut later = v4;
        later[7] = 1;
        assert_eq!(udp_from_port(&later, 6000), None);
        // The first fragment (more fragments set, offset 0) carries the header.
        let mut first = v4;
        first[6] = 0x20;
        assert_eq!(udp_from_port(&first, 6000), Some(to));

        let mut v6 = [0u8; 48];
        v6[0] = 0x60;
        v6[6] = 17;
        v6[24..40].copy_from_slice(&"fd77::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6[40..44].copy_from_slice(&[0x17, 0x70, 0x17, 0x70]);
        assert_eq!(
            udp_from_port(&v6, 6000),
            Some("[fd77::2]:6000".parse().unwrap())
        );
        v6[6] = 44;
        assert_eq!(udp_from_port(&v6, 6000), None);
        assert_eq!(udp_from_port(&[], 6000), None);
        assert_eq!(udp_from_port(&[0x45; 20], 6000), None);
    }

    #[test]
    fn source_of_packets() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[10, 77, 0, 1]);
        v4[16..20].copy_from_slice(&[10, 77, 0, 3]);
        assert_eq!(source(&v4), Some(ip("10.77.0.1")));
        assert_eq!(source(&v4[..15]), None);
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[8..24].copy_from_slice(&"fd77::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6[24..40].copy_from_slice(&"fd77::3".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(source(&v6), Some(ip("fd77::1")));
        assert_eq!(source(&v6[..23]), None);
        assert_eq!(source(&[0x50; 40]), None);
        assert_eq!(source(&[]), None);
        // A packet's source is checked against the peer's prefixes, both families.
        assert!(p("fd77::/64").contains(source(&v6).unwrap()));
        assert!(!p("10.77.0.3/32").contains(source(&v4).unwrap()));
    }
}
