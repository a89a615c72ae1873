//! IP packets for the in-memory TUN devices: the engine routes what it reads from a TUN by
//! destination address, so traffic in the mesh is IP packets, not bare payloads.

use std::net::Ipv4Addr;

/// Length of the IPv4 header [`ipv4`] writes (no options).
pub const IPV4_HEADER_LEN: usize = 20;

/// IP protocol number 253, set aside for experiments and tests (RFC 3692).
const EXPERIMENTAL: u8 = 253;

/// An IPv4 packet from `src` to `dst` carrying `payload`, with a valid header checksum. The
/// total length saturates at 65 535 for larger payloads (the engine refuses those anyway).
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(IPV4_HEADER_LEN + payload.len()).unwrap_or(u16::MAX);
    let mut header = [0u8; IPV4_HEADER_LEN];
    header[0] = 0x45; // version 4, 5 words of header
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header[8] = 64; // TTL
    header[9] = EXPERIMENTAL;
    header[12..16].copy_from_slice(&src.octets());
    header[16..20].copy_from_slice(&dst.octets());
    let sum = header
        .chunks_exact(2)
        .map(|w| match w {
            &[hi, lo] => u32::from(u16::from_be_bytes([hi, lo])),
            _ => 0,
        })
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    let mut packet = Vec::with_capacity(IPV4_HEADER_LEN + payload.len());
    packet.extend_from_slice(&header);
    packet.extend_from_slice(payload);
    packet
}

/// The payload of an IPv4 packet (after its header, options included); `None` if `packet`
/// is not IPv4 or is cut short.
pub fn ipv4_payload(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    packet.get(usize::from(first & 0x0f) * 4..)
}

/// Source and destination of an IPv4 packet; `None` if it is not one.
pub fn ipv4_addresses(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if packet.first()? >> 4 != 4 {
        return None;
    }
    let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
    Some((src.into(), dst.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checksum_verifies_and_fields_read_back() {
        let (a, b) = (Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 3));
        let p = ipv4(a, b, b"hello");
        assert_eq!(p.len(), 25);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 25);
        // A header with its checksum sums to 0xffff.
        let sum: u32 = p[..20]
            .chunks_exact(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff);
        assert_eq!(ipv4_payload(&p), Some(&b"hello"[..]));
        assert_eq!(ipv4_addresses(&p), Some((a, b)));
        assert_eq!(
            crate::route::prefix::destination(&p),
            Some(std::net::IpAddr::V4(b))
        );
        assert_eq!(ipv4_payload(&[0x60; 40]), None);
        assert_eq!(ipv4_addresses(&p[..10]), None);
    }
}
