//! Micro-benchmarks of the data plane's per-packet paths, each next to the reference it
//! must be close to or beat, so one run shows both. Results and the command that made them
//! go into `BENCHMARKS.md`.
//!
//! - `seal`: raw ChaCha20-Poly1305 (the reference), `SendKey::seal`, `Session::encapsulate`.
//! - `open`: raw ChaCha20-Poly1305 open (the reference), header parse + `RecvKey::open`,
//!   `Session::decapsulate`.
//! - `route`: `HashMap<u32, _>` with the default SipHash (the reference), `Snapshot::lookup`,
//!   `RouteReader::load` + lookup, and the whole `route::forward` decision.
//! - `handshake`: one full Noise IK handshake, both ends.
//! - `batch`: the fast path's batch stages, per 64 KiB TCP super-packet from the TUN device
//!   (46 segments of 1368 B): cutting it into packets (`sys::tun::split`, new headers and
//!   checksums) next to copying the same bytes into 46 buffers (the reference); handing the
//!   sealed packets to the send batch (`SendBatch::push`, copy and GSO grouping) next to
//!   copying them into one vector; and the whole sender path (split, seal each, push).
//!
//! The raw AEAD reference is `AeadKey::{seal_in_place, open_in_place}`, the crate's thin
//! wrapper over `ring::aead::LessSafeKey` (a nonce built from the counter, the tag copied
//! out). This package does not depend on `ring` directly, so the bench cannot name it
//! without a new dependency.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use common::SplitMix;
use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use skywire_dataplane::crypto::PrivateKey;
use skywire_dataplane::crypto::aead::AeadKey;
use skywire_dataplane::crypto::cipher::{Limits, RecvKey, SendKey};
use skywire_dataplane::crypto::noise::{self, RouteBinding, StaticKeys};
use skywire_dataplane::route::{self, Decision, Entry, RouteTable, Rule};
use skywire_dataplane::session::{HEADROOM, Outcome, PeerMemory, RouteIds, Session};
use skywire_dataplane::sys::batch::SendBatch;
use skywire_dataplane::sys::tun::split;
use skywire_dataplane::wire::{
    HANDSHAKE_INIT_LEN, HANDSHAKE_RESPONSE_LEN, PacketType, RouteId, TAG_LEN, TRANSPORT_OVERHEAD,
    TransportPacket, TransportRepr,
};

/// Payload sizes: a small packet and a full one under a 1500-byte path MTU.
const PAYLOADS: [usize; 2] = [64, 1420];

/// Associated data for the raw AEAD reference: 16 bytes, as the transport header's AAD.
const AAD: [u8; 16] = [0x5a; 16];

/// Open benchmarks seal this many packets (untimed), then open them (timed).
const CHUNK: usize = 256;

/// Routes in the table of the `route` group.
const ROUTES: usize = 10_000;

/// Length of the pseudo-random sequence of looked-up ids (a power of two).
const LOOKUPS: usize = 4096;

/// Two sessions with a confirmed keypair: `a` initiated, both can send. The second half of
/// the result is each end's memory of its peer's key, as its node would keep it.
fn session_pair() -> ((Session, Session, Instant), (PeerMemory, PeerMemory)) {
    let ka = PrivateKey::generate().unwrap();
    let kb = PrivateKey::generate().unwrap();
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let t0 = Instant::now();
    let unix = Duration::from_secs(1_800_000_000);
    let (id10, id20) = (RouteId::new(10).unwrap(), RouteId::new(20).unwrap());
    let mut a = Session::new(
        StaticKeys::new(ka, pb).unwrap(),
        RouteIds {
            out_id: id10,
            in_id: id20,
            peer_in_id: id10,
        },
        Limits::WIREGUARD,
        t0,
        unix,
    );
    let mut b = Session::new(
        StaticKeys::new(kb, pa).unwrap(),
        RouteIds {
            out_id: id20,
            in_id: id10,
            peer_in_id: id20,
        },
        Limits::WIREGUARD,
        t0,
        unix,
    );
    let (mut peer_of_a, mut peer_of_b) = (PeerMemory::new(), PeerMemory::new());
    a.request_handshake();
    let mut buf = vec![0u8; 2048];
    let n = a.poll(t0, &mut buf, &mut peer_of_a).expect("initiation");
    let mut init = buf[..n].to_vec();
    let Outcome::Reply(response) = b.decapsulate(t0, &mut init, &mut peer_of_b) else {
        panic!("no handshake response");
    };
    let mut response = response.to_vec();
    let Outcome::Reply(confirm) = a.decapsulate(t0, &mut response, &mut peer_of_a) else {
        panic!("no confirmation");
    };
    let mut confirm = confirm.to_vec();
    assert!(matches!(
        b.decapsulate(t0, &mut confirm, &mut peer_of_b),
        Outcome::Consumed
    ));
    assert!(a.is_established() && b.is_established());
    ((a, b, t0), (peer_of_a, peer_of_b))
}

/// Run `iters` opens in chunks of [`CHUNK`]: `prepare(state, n)` seals `n` fresh packets
/// and is not timed; `open(state, n)` opens them and is the only part timed. Returns the
/// summed time of the `open` calls (plus two clock reads per chunk, under 0.2 ns a packet).
fn chunked<S>(
    iters: u64,
    state: &mut S,
    mut prepare: impl FnMut(&mut S, usize),
    mut open: impl FnMut(&mut S, usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        prepare(state, n);
        let start = Instant::now();
        open(state, n);
        total += start.elapsed();
        left -= n as u64;
    }
    total
}

/// What one iteration does in each row of `seal`:
///
/// - `aead_raw`: seal `len` bytes in place with a 16-byte AAD, write the tag after them.
/// - `send_key`: `SendKey::seal`: header, counter, AAD, seal, tag, all in place.
/// - `session`: `Session::encapsulate`: key selection and expiry checks, `SendKey::seal`,
///   rekey check, counters.
///
/// Each seals the same buffer again (the ciphertext of the previous iteration), so the
/// buffer stays in L1, like a packet just read from the TUN device.
fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal");
    for len in PAYLOADS {
        group.throughput(Throughput::Bytes(len as u64));

        let key = AeadKey::new(&[7; 32]);
        let mut buf = vec![0x42u8; len + TAG_LEN];
        let mut counter = 0u64;
        group.bench_function(BenchmarkId::new("aead_raw", len), |b| {
            b.iter(|| {
                let (payload, tag) = buf.split_at_mut(len);
                tag.copy_from_slice(&key.seal_in_place(counter, black_box(&AAD), payload));
                counter += 1;
                black_box(&mut buf);
            });
        });

        let mut tx = SendKey::new(&[7; 32], 77);
        let route = RouteId::new(5).unwrap();
        let limits = Limits::default();
        let mut buf = vec![0x42u8; len + TRANSPORT_OVERHEAD];
        group.bench_function(BenchmarkId::new("send_key", len), |b| {
            b.iter(|| {
                let n = tx
                    .seal(&mut buf, PacketType::Data, route, black_box(len), &limits)
                    .unwrap();
                black_box((n, &mut buf));
            });
        });

        let ((mut a, _b, now), _) = session_pair();
        let mut buf = vec![0x42u8; len + TRANSPORT_OVERHEAD];
        group.bench_function(BenchmarkId::new("session", len), |b| {
            b.iter(|| {
                let n = a.encapsulate(now, &mut buf, black_box(len)).unwrap();
                black_box((n, &mut buf));
            });
        });
    }
    group.finish();
}

/// Opening needs a packet never opened before (the replay window refuses the rest, and
/// opening in place destroys the ciphertext). So each row seals [`CHUNK`] fresh packets
/// with increasing counters outside the clock, then times opening all of them, in order;
/// see [`chunked`]. Timed per packet:
///
/// - `aead_raw`: open `len` bytes + tag in place with a 16-byte AAD, check it authenticated.
/// - `recv_key`: `TransportPacket::new_checked` + `TransportRepr::parse` + `RecvKey::open`
///   (limit check, replay check, AAD, open, replay window update).
/// - `session`: `Session::decapsulate` (route header and transport header checks, key id
///   to keypair, expiry, `RecvKey::open`, counters), check the outcome is `Deliver`.
///
/// The packets of a chunk (256 x 1456 B = 364 KiB at most) were just written by the sealer,
/// so they are in L2 rather than L1; all three rows read them the same way.
fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open");
    for len in PAYLOADS {
        group.throughput(Throughput::Bytes(len as u64));

        let key = AeadKey::new(&[7; 32]);
        let mut state = (
            0u64,
            vec![vec![0x42u8; len + TAG_LEN]; CHUNK],
            [0u64; CHUNK],
        );
        group.bench_function(BenchmarkId::new("aead_raw", len), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    &mut state,
                    |(next, bufs, counters), n| {
                        for (buf, counter) in bufs.iter_mut().zip(counters.iter_mut()).take(n) {
                            let (payload, tag) = buf.split_at_mut(len);
                            tag.copy_from_slice(&key.seal_in_place(*next, &AAD, payload));
                            *counter = *next;
                            *next += 1;
                        }
                    },
                    |(_, bufs, counters), n| {
                        for (buf, counter) in bufs.iter_mut().zip(counters.iter()).take(n) {
                            let opened = key.open_in_place(*counter, black_box(&AAD), buf);
                            assert_eq!(opened, Ok(len));
                        }
                    },
                )
            });
        });

        let route = RouteId::new(5).unwrap();
        let limits = Limits::default();
        let mut state = (
            SendKey::new(&[7; 32], 77),
            RecvKey::new(&[7; 32]),
            vec![vec![0x42u8; len + TRANSPORT_OVERHEAD]; CHUNK],
        );
        group.bench_function(BenchmarkId::new("recv_key", len), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    &mut state,
                    |(tx, _, bufs), n| {
                        for buf in bufs.iter_mut().take(n) {
                            tx.seal(buf, PacketType::Data, route, len, &limits).unwrap();
                        }
                    },
                    |(_, rx, bufs), n| {
                        for buf in bufs.iter_mut().take(n) {
                            let packet = TransportPacket::new_checked(&buf[..]).unwrap();
                            let repr = TransportRepr::parse(&packet);
                            let range = rx.open(&repr, buf, &limits).unwrap();
                            black_box(range);
                        }
                    },
                )
            });
        });

        let ((a, b, now), (_, mut peer_of_b)) = session_pair();
        let mut state = (a, b, vec![vec![0x42u8; len + TRANSPORT_OVERHEAD]; CHUNK]);
        group.bench_function(BenchmarkId::new("session", len), |bench| {
            bench.iter_custom(|iters| {
                chunked(
                    iters,
                    &mut state,
                    |(a, _, bufs), n| {
                        for buf in bufs.iter_mut().take(n) {
                            a.encapsulate(now, buf, len).unwrap();
                        }
                    },
                    |(_, b, bufs), n| {
                        for buf in bufs.iter_mut().take(n) {
                            let outcome = b.decapsulate(now, buf, &mut peer_of_b);
                            let Outcome::Deliver(payload) = outcome else {
                                panic!("not delivered: {outcome:?}");
                            };
                            black_box(payload);
                        }
                    },
                )
            });
        });
    }
    group.finish();
}

/// Lookups among [`ROUTES`] random non-zero ids, of a pseudo-random sequence of [`LOOKUPS`]
/// present ids, cycled. Each iteration takes the next id of the sequence and:
///
/// - `hashmap_siphash`: `HashMap<u32, Entry>::get` with the default SipHash-1-3.
/// - `snapshot`: `Snapshot::lookup` (the table's own hasher).
/// - `reader_load`: `RouteReader::load` + `Snapshot::lookup`, what a forwarding thread does
///   when it loads the table per packet (loading per batch costs less).
/// - `forward`: writes the id into a 1456-byte data packet (1420 B payload; a 4-byte store),
///   then `route::forward` on the snapshot (no `load`, as when loaded once per batch):
///   header check, lookup, previous-hop check, id rewrite, two relaxed atomic counter adds.
fn route(c: &mut Criterion) {
    let mut rng = SplitMix(0x5eed_0001);
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(ROUTES);
    while ids.len() < ROUTES {
        let id = rng.next() as u32;
        if id != 0 && seen.insert(id) {
            ids.push(id);
        }
    }
    let prev_hop = SocketAddr::from(([198, 18, 0, 1], 4000));
    let next_hop = SocketAddr::from(([198, 18, 0, 2], 4000));
    let rule = |id: u32| Rule::Forward {
        prev_hop,
        next_hop,
        out_id: RouteId::new(id ^ 0x8000_0000).unwrap_or(RouteId::MIN),
    };
    let sequence: Vec<u32> = (0..LOOKUPS)
        .map(|_| ids[(rng.next() % ROUTES as u64) as usize])
        .collect();
    let route_ids: Vec<RouteId> = sequence
        .iter()
        .map(|&id| RouteId::new(id).unwrap())
        .collect();

    let reference: HashMap<u32, Entry> = ids
        .iter()
        .map(|&id| {
            let entry = Entry {
                rule: rule(id),
                stats: Default::default(),
            };
            (id, entry)
        })
        .collect();
    let table = RouteTable::new();
    table
        .update(|t| {
            for &id in &ids {
                t.insert(RouteId::new(id).unwrap(), rule(id))?;
            }
            Ok::<_, route::TableError>(())
        })
        .unwrap();
    let snapshot = table.snapshot();
    let mut reader = table.reader();
    assert_eq!(snapshot.len(), ROUTES);

    let mut tx = SendKey::new(&[7; 32], 77);
    let mut packet = vec![0u8; 1420 + TRANSPORT_OVERHEAD];
    tx.seal(
        &mut packet,
        PacketType::Data,
        RouteId::MIN,
        1420,
        &Limits::default(),
    )
    .unwrap();
    for &id in &route_ids {
        packet[4..8].copy_from_slice(&id.get().to_be_bytes());
        let decision = route::forward(&snapshot, prev_hop, &mut packet);
        assert_eq!(decision, Decision::Forward { next_hop });
    }

    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("hashmap_siphash", |b| {
        b.iter(|| {
            let id = sequence[i % LOOKUPS];
            i = i.wrapping_add(1);
            black_box(reference.get(&black_box(id)));
        });
    });
    group.bench_function("snapshot", |b| {
        b.iter(|| {
            let id = route_ids[i % LOOKUPS];
            i = i.wrapping_add(1);
            black_box(snapshot.lookup(black_box(id)));
        });
    });
    group.bench_function("reader_load", |b| {
        b.iter(|| {
            let id = route_ids[i % LOOKUPS];
            i = i.wrapping_add(1);
            black_box(reader.load().lookup(black_box(id)));
        });
    });
    let from = prev_hop;
    group.bench_function("forward", |b| {
        b.iter(|| {
            let id = route_ids[i % LOOKUPS];
            i = i.wrapping_add(1);
            packet[4..8].copy_from_slice(&id.get().to_be_bytes());
            black_box(route::forward(&snapshot, black_box(from), &mut packet));
        });
    });
    group.finish();
}

/// One complete handshake per iteration: `write_init` (ephemeral key generation, 1 DH),
/// `read_init` (1 DH), `write_response` (ephemeral key generation, 2 DH), `read_response`
/// (2 DH). The static-static DH is precomputed in `StaticKeys::new`, as in a session.
fn handshake(c: &mut Criterion) {
    let ka = PrivateKey::generate().unwrap();
    let kb = PrivateKey::generate().unwrap();
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let initiator = StaticKeys::new(ka, pb).unwrap();
    let responder = StaticKeys::new(kb, pa).unwrap();
    let route = RouteId::new(10).unwrap();
    let binding = RouteBinding {
        initiator_in: RouteId::new(20).unwrap(),
        responder_in: route,
    };
    let mut timestamp = 1_800_000_000_000_000_000u64;

    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("noise_ik", |b| {
        b.iter(|| {
            timestamp += 1;
            let mut init = [0u8; HANDSHAKE_INIT_LEN];
            let mut response = [0u8; HANDSHAKE_RESPONSE_LEN];
            let state =
                noise::write_init(&initiator, binding, route, 11, timestamp, &mut init).unwrap();
            let received = noise::read_init(&responder, binding, &init).unwrap();
            let responder_keys =
                noise::write_response(&responder, received, route, 22, &mut response).unwrap();
            let (initiator_keys, index) =
                noise::read_response(&initiator, &state, &response).unwrap();
            black_box((responder_keys, initiator_keys, index));
        });
    });
    group.finish();
}

/// MSS of a 1420-byte TUN MTU (IPv4, 32-byte TCP header with timestamps).
const MSS: usize = 1368;
/// Segments in the benchmark's super-packet.
const SEGMENTS: usize = 46;

/// A 64 KiB IPv4 TCP super-packet as a TUN device with offloads hands it over: the
/// virtio-net header (native byte order: `NEEDS_CSUM`, `GSO_TCPV4`, header length, segment
/// size, checksum start and offset), then the packet with a partial checksum.
fn super_packet() -> Vec<u8> {
    let payload = MSS * SEGMENTS;
    let total = 20 + 32 + payload;
    let mut raw = vec![1u8, 1];
    for field in [52u16, MSS as u16, 20, 16] {
        raw.extend(field.to_ne_bytes());
    }
    raw.extend([0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    raw[12..14].copy_from_slice(&(total as u16).to_be_bytes());
    raw.extend([10, 77, 0, 1, 10, 77, 0, 2]);
    raw.extend(5201u16.to_be_bytes());
    raw.extend(40000u16.to_be_bytes());
    raw.extend(1u32.to_be_bytes());
    raw.extend(1u32.to_be_bytes());
    raw.extend([0x80, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    raw.extend([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    raw.extend((0..payload).map(|i| i as u8));
    raw
}

fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Bytes((MSS * SEGMENTS) as u64));
    let template = super_packet();
    let mut raw = template.clone();
    let slot = HEADROOM + 1420 + TAG_LEN;
    let mut bufs = vec![vec![0u8; slot]; 64];
    let mut sizes = vec![0usize; 64];

    group.bench_function("split_super_packet/copy_reference", |b| {
        b.iter(|| {
            let data = &template[10 + 52..];
            for (buf, chunk) in bufs.iter_mut().zip(data.chunks(MSS)) {
                buf[HEADROOM + 52..HEADROOM + 52 + chunk.len()].copy_from_slice(chunk);
                buf[HEADROOM..HEADROOM + 52].copy_from_slice(&template[10..62]);
            }
            black_box(&mut bufs);
        });
    });
    group.bench_function("split_super_packet/split", |b| {
        b.iter(|| {
            raw.copy_from_slice(&template);
            let n = split(&mut raw, &mut bufs, &mut sizes, HEADROOM).unwrap();
            assert_eq!(n, SEGMENTS);
            black_box(&mut bufs);
        });
    });

    let to: SocketAddr = "198.18.1.2:6000".parse().unwrap();
    let datagram = vec![0x5au8; TRANSPORT_OVERHEAD + 1420];
    let mut flat = Vec::with_capacity(1 << 20);
    group.bench_function("send_batch/copy_reference", |b| {
        b.iter(|| {
            flat.clear();
            for _ in 0..SEGMENTS {
                flat.extend_from_slice(black_box(&datagram));
            }
            black_box(&mut flat);
        });
    });
    let mut out = SendBatch::new("0.0.0.0:6000".parse().unwrap(), true);
    group.bench_function("send_batch/push", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..SEGMENTS {
                assert!(out.push(to, black_box(&datagram)));
            }
            black_box(&mut out);
        });
    });

    let ((mut a, _, now), _) = session_pair();
    group.bench_function("sender_path/seal_each_reference", |b| {
        b.iter(|| {
            for buf in bufs.iter_mut().take(SEGMENTS) {
                let n = a.encapsulate(now, buf, MSS + 52).unwrap();
                black_box(n);
            }
        });
    });
    group.bench_function("sender_path/split_seal_push", |b| {
        b.iter(|| {
            raw.copy_from_slice(&template);
            let n = split(&mut raw, &mut bufs, &mut sizes, HEADROOM).unwrap();
            out.clear();
            for (buf, &len) in bufs.iter_mut().zip(&sizes).take(n) {
                let sealed = a.encapsulate(now, buf, len).unwrap();
                assert!(out.push(to, &buf[..sealed]));
            }
            black_box(&mut out);
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = seal, open, route, handshake, batch
}
criterion_main!(benches);
