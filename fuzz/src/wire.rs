//! Targets for the zero-copy views and `Repr`s of `skywire_dataplane::wire`.
//!
//! Each checked constructor is compared with a naive restatement of `docs/PROTOCOL.md`, and
//! every accepted packet must survive `parse` then `emit` byte for byte (for transport
//! packets: the 20 header bytes, with the payload and tag left alone).

use skywire_dataplane::wire::{
    HANDSHAKE_INIT_LEN, HANDSHAKE_RESPONSE_LEN, HandshakeInitPacket, HandshakeInitRepr,
    HandshakeResponsePacket, HandshakeResponseRepr, PacketType, RouteHeader, RouteId,
    TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD, TransportPacket, TransportRepr, VERSION,
};

/// The route header rules, restated: version 1, type 1..=7 or 10 (a cookie reply),
/// reserved zero, id non-zero.
fn header_is_valid(data: &[u8]) -> bool {
    data.len() >= 8
        && data[0] == VERSION
        && ((1..=7).contains(&data[1]) || data[1] == 10)
        && data[2..4] == [0, 0]
        && data[4..8] != [0; 4]
}

/// `RouteHeader::new_checked` agrees with the rules; accessors and the relay's in-place
/// route id rewrite touch only what they should.
pub fn route_header(data: &[u8]) {
    let checked = RouteHeader::new_checked(data);
    assert_eq!(checked.is_ok(), header_is_valid(data));
    let Ok(header) = checked else { return };
    assert_eq!(header.version(), VERSION);
    assert_eq!(header.packet_type() as u8, data[1]);
    let id = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    assert_eq!(header.route_id().get(), id);

    let new_id = RouteId::new(id.wrapping_add(1)).unwrap_or(RouteId::MIN);
    let mut copy = data.to_vec();
    RouteHeader::new_checked(&mut copy[..])
        .expect("the same bytes pass again")
        .set_route_id(new_id);
    assert_eq!(copy[..4], data[..4]);
    assert_eq!(copy[4..8], new_id.get().to_be_bytes());
    assert_eq!(copy[8..], data[8..]);
    let again = RouteHeader::new_checked(&copy[..]).expect("a rewritten header stays valid");
    assert_eq!(again.route_id(), new_id);
}

/// `TransportPacket::new_checked` agrees with the rules; `TransportRepr::parse` then `emit`
/// reproduces the 20 header bytes and writes nothing else.
pub fn transport(data: &[u8]) {
    let model = header_is_valid(data)
        && match data[1] {
            3 => data.len() > TRANSPORT_OVERHEAD,
            4 | 5 => data.len() == TRANSPORT_OVERHEAD,
            6 | 7 => data.len() == TRANSPORT_OVERHEAD + 8,
            _ => false,
        };
    let checked = TransportPacket::new_checked(data);
    assert_eq!(checked.is_ok(), model);
    let Ok(packet) = checked else { return };
    let repr = TransportRepr::parse(&packet);
    assert!(repr.packet_type.is_transport());
    assert_eq!(repr.buffer_len(), data.len());
    assert_eq!(repr.payload_len, data.len() - TRANSPORT_OVERHEAD);
    let aad = packet.aad();
    assert_eq!(aad[..4], data[..4]);
    assert_eq!(aad[4..], data[8..TRANSPORT_HEADER_LEN]);

    // Start from the complement of the input so that any byte emit forgot shows up.
    let mut out: Vec<u8> = data.iter().map(|b| !b).collect();
    repr.emit(&mut out)
        .expect("a parsed repr emits into a buffer of its own size");
    assert_eq!(out[..TRANSPORT_HEADER_LEN], data[..TRANSPORT_HEADER_LEN]);
    assert!(
        out[TRANSPORT_HEADER_LEN..]
            .iter()
            .zip(&data[TRANSPORT_HEADER_LEN..])
            .all(|(o, d)| *o == !*d),
        "emit wrote past the header"
    );
    assert!(repr.emit(&mut out[..data.len() - 1]).is_err());
}

/// Handshake initiation: exactly 132 bytes of type 1; parse then emit gives the same bytes.
pub fn handshake_init(data: &[u8]) {
    let model = header_is_valid(data)
        && data[1] == PacketType::HandshakeInit as u8
        && data.len() == HANDSHAKE_INIT_LEN;
    let checked = HandshakeInitPacket::new_checked(data);
    assert_eq!(checked.is_ok(), model);
    let Ok(packet) = checked else { return };
    let repr = HandshakeInitRepr::parse(&packet);
    let mut out = [0u8; HANDSHAKE_INIT_LEN + 1];
    out.iter_mut().zip(data).for_each(|(o, d)| *o = !d);
    out[HANDSHAKE_INIT_LEN] = 0x5a;
    repr.emit(&mut out).expect("132 bytes of room");
    assert_eq!(out[..HANDSHAKE_INIT_LEN], *data);
    assert_eq!(out[HANDSHAKE_INIT_LEN], 0x5a, "emit wrote past 132 bytes");
    assert!(repr.emit(&mut out[..HANDSHAKE_INIT_LEN - 1]).is_err());
    let reparsed = HandshakeInitPacket::new_checked(&out[..HANDSHAKE_INIT_LEN])
        .expect("emitted bytes are the input, which passed");
    assert_eq!(HandshakeInitRepr::parse(&reparsed), repr);
}

/// Handshake response: exactly 80 bytes of type 2; parse then emit gives the same bytes.
pub fn handshake_response(data: &[u8]) {
    let model = header_is_valid(data)
        && data[1] == PacketType::HandshakeResponse as u8
        && data.len() == HANDSHAKE_RESPONSE_LEN;
    let checked = HandshakeResponsePacket::new_checked(data);
    assert_eq!(checked.is_ok(), model);
    let Ok(packet) = checked else { return };
    let repr = HandshakeResponseRepr::parse(&packet);
    let mut out = [0u8; HANDSHAKE_RESPONSE_LEN + 1];
    out.iter_mut().zip(data).for_each(|(o, d)| *o = !d);
    out[HANDSHAKE_RESPONSE_LEN] = 0x5a;
    repr.emit(&mut out).expect("80 bytes of room");
    assert_eq!(out[..HANDSHAKE_RESPONSE_LEN], *data);
    assert_eq!(
        out[HANDSHAKE_RESPONSE_LEN], 0x5a,
        "emit wrote past 80 bytes"
    );
    assert!(repr.emit(&mut out[..HANDSHAKE_RESPONSE_LEN - 1]).is_err());
    let reparsed = HandshakeResponsePacket::new_checked(&out[..HANDSHAKE_RESPONSE_LEN])
        .expect("emitted bytes are the input, which passed");
    assert_eq!(HandshakeResponseRepr::parse(&reparsed), repr);
}

/// `wire::LinkProbePacket::new_checked`, `LinkProbeRepr::parse` / `emit`, `write_link_tag`,
/// and the tag check of `crypto::link::LinkKey` (fixed keys `[1; 32]` and `[2; 32]`):
/// accepts exactly 40 bytes of type 8 or 9 with zero reserved bytes and route id; parse
/// then emit and the tag reproduce all 40 bytes; a tag verifies only if it is the one the
/// link key makes.
pub fn link_probe(data: &[u8]) {
    use skywire_dataplane::crypto::PrivateKey;
    use skywire_dataplane::crypto::link::LinkKey;
    use skywire_dataplane::wire::{
        LINK_PROBE_AUTHENTICATED, LINK_PROBE_LEN, LinkProbePacket, LinkProbeRepr, write_link_tag,
    };
    let Ok(packet) = LinkProbePacket::new_checked(data) else {
        let valid = data.len() == LINK_PROBE_LEN
            && data[0] == 1
            && matches!(data[1], 8 | 9)
            && data[2..8] == [0; 6];
        assert!(!valid, "a valid link packet was refused");
        return;
    };
    assert_eq!(data.len(), LINK_PROBE_LEN);
    let repr = LinkProbeRepr::parse(&packet);
    let mut out = [0u8; LINK_PROBE_LEN];
    repr.emit(&mut out).expect("40 bytes hold a probe");
    write_link_tag(&mut out, packet.tag()).expect("a tag fits");
    assert_eq!(&out[..], data);
    let link = LinkKey::new(
        &PrivateKey::from_bytes([1; 32]),
        &PrivateKey::from_bytes([2; 32]).public_key(),
    )
    .expect("fixed keys are usable");
    let expected = link.tag(&data[..LINK_PROBE_AUTHENTICATED]);
    assert_eq!(
        link.verify(packet.authenticated(), packet.tag()),
        expected[..] == data[LINK_PROBE_AUTHENTICATED..]
    );
}
