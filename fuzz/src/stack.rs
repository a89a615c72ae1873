//! Target for `stack::Stack::ingress`: the packets a route end opened for the node's
//! userspace TCP/IP stack, from a peer that may send anything.
//!
//! Two stacks, A (key `[1; 32]`) and B (key `[2; 32]`), are joined back to back; B listens
//! on port 7 and one stream A -> B is open and attached at both ends before the script
//! starts. The input is a script of one-byte ops:
//!
//! | op (byte % 5) | then | does |
//! |---|---|---|
//! | 0 | length (1 byte), bytes | B receives those bytes as a packet from A's key |
//! | 1 | length (1 byte), bytes | the same, from a third key (`[3; 32]`), which has no stream |
//! | 2 | milliseconds (1 byte) | time passes; both stacks run their timers |
//! | 3 | | what each stack queued goes to the other |
//! | 4 | length (1 byte) | A's app writes that many bytes into the stream |
//!
//! Checks: nothing panics; B never holds more streams than its limits allow; and, when the
//! script sent nothing under A's key (packets under a key can only be that key's, since the
//! route authenticates them: whoever holds A's key may garble A's own stream, as a TCP peer
//! may garble its own connection), the stream still works at the end: bytes A's app writes
//! afterwards reach B's app, in order, whole.

use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::session::HEADROOM;
use skywire_dataplane::stack::{
    ListenOptions, ListenerId, Owner, Stack, StackEvent, StackSetup, StreamId,
};

const MTU: usize = 1420;
const OWNER: Owner = Owner(1000);

/// The keys of A, B and the stranger.
pub const A: [u8; 32] = [1; 32];
/// B's key.
pub const B: [u8; 32] = [2; 32];
/// A key B has no stream with.
pub const STRANGER: [u8; 32] = [3; 32];

fn setup() -> StackSetup {
    StackSetup {
        max_streams: 64,
        max_streams_per_peer: 32,
        max_half_open: 16,
        ..StackSetup::default()
    }
}

/// A and B with one attached stream A -> B:7.
pub struct Pair {
    /// A's stack.
    pub a: Stack,
    /// B's stack.
    pub b: Stack,
    /// The stream at A.
    pub at_a: StreamId,
    /// The stream at B.
    pub at_b: StreamId,
    /// The clock.
    pub now: Instant,
}

fn move_packets(from: &mut Stack, to: &mut Stack, from_key: PublicKey, now: Instant) -> usize {
    let mut packets = Vec::new();
    while let Some((_, buf, len)) = from.pop_egress() {
        packets.push(
            buf.get(HEADROOM..HEADROOM + len)
                .unwrap_or_default()
                .to_vec(),
        );
    }
    for p in &packets {
        to.ingress(now, from_key, p);
    }
    from.poll(now);
    packets.len()
}

impl Pair {
    /// The two stacks with their stream open.
    pub fn new() -> Self {
        let now = Instant::now();
        let (ka, kb) = (PublicKey::from_bytes(A), PublicKey::from_bytes(B));
        let mut a = Stack::new(setup(), ka, MTU, HEADROOM + MTU + 16, now, 1);
        let mut b = Stack::new(setup(), kb, MTU, HEADROOM + MTU + 16, now, 2);
        b.listen(
            ListenerId(1),
            ListenOptions {
                port: 7,
                backlog: 8,
                allow: None,
                owner: OWNER,
            },
        )
        .expect("listen");
        let at_a = a
            .dial(now, kb, 7, OWNER, Duration::from_secs(5))
            .expect("dial");
        let mut pair = Self {
            a,
            b,
            at_a,
            at_b: StreamId(0),
            now,
        };
        pair.settle();
        let at_b = pair
            .b
            .drain_events()
            .find_map(|e| match e {
                StackEvent::Arrived { info, .. } => Some(info.id),
                _ => None,
            })
            .expect("arrived");
        pair.a.drain_events().for_each(drop);
        pair.a.attach(now, at_a, OWNER).expect("attach a");
        pair.b.attach(now, at_b, OWNER).expect("attach b");
        pair.at_b = at_b;
        pair
    }

    /// Move packets until both are quiet (bounded).
    pub fn settle(&mut self) {
        let (ka, kb) = (PublicKey::from_bytes(A), PublicKey::from_bytes(B));
        for _ in 0..1000 {
            let n = move_packets(&mut self.a, &mut self.b, ka, self.now)
                + move_packets(&mut self.b, &mut self.a, kb, self.now);
            if n == 0 {
                return;
            }
        }
    }

    /// What B's app has received.
    pub fn read_b(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.b.app_recv(self.now, self.at_b, |bytes| {
            out.extend_from_slice(bytes);
            bytes.len()
        });
        out
    }
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

/// The target's body.
pub fn ingress(data: &[u8]) {
    let mut pair = Pair::new();
    let (ka, stranger) = (PublicKey::from_bytes(A), PublicKey::from_bytes(STRANGER));
    let mut rest = data;
    let mut as_a = false;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 5 {
            0 | 1 => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let len = usize::from(len).min(tail.len());
                let (packet, tail) = tail.split_at(len);
                rest = tail;
                let from = if op % 5 == 0 { ka } else { stranger };
                as_a |= op % 5 == 0;
                pair.b.ingress(pair.now, from, packet);
            }
            2 => {
                let Some((&ms, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                pair.now += Duration::from_millis(u64::from(ms));
                pair.a.poll(pair.now);
                pair.b.poll(pair.now);
            }
            3 => pair.settle(),
            _ => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                let bytes = vec![0x42; usize::from(len)];
                pair.a.app_send(pair.now, pair.at_a, &bytes);
            }
        }
        assert!(pair.b.status().streams <= setup().max_streams);
        assert!(pair.b.status().half_open <= setup().max_half_open);
    }
    pair.settle();
    if as_a {
        return;
    }
    // Drain what the script had A send, then check a fresh message gets through whole.
    pair.read_b();
    if pair.b.app_view(pair.at_b).is_none() || pair.a.app_view(pair.at_a).is_none() {
        return;
    }
    let marker = b"still-working-after-the-script";
    let sent = pair.a.app_send(pair.now, pair.at_a, marker);
    if sent < marker.len() {
        return; // A's send buffer is full of the script's bytes that B never acknowledged.
    }
    let mut got = Vec::new();
    for _ in 0..200 {
        pair.settle();
        got.extend(pair.read_b());
        if got.ends_with(marker) || pair.b.app_view(pair.at_b).is_none() {
            break;
        }
        pair.now += Duration::from_millis(200);
        pair.a.poll(pair.now);
        pair.b.poll(pair.now);
    }
    if pair.b.app_view(pair.at_b).is_some() && pair.a.app_view(pair.at_a).is_some() {
        assert!(
            got.ends_with(marker),
            "an open stream stopped carrying bytes ({} bytes arrived)",
            got.len()
        );
    }
}
