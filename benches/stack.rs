//! The userspace stack's cost per data segment with many streams open, next to smoltcp used
//! the usual way (one `Interface`, every socket in one `SocketSet`) on the same exchange.
//!
//! One iteration: the sending app writes one full segment (1380 bytes) into its stream, the
//! segment crosses to the receiving stack, its app reads it, and whatever the receiver
//! answers (an ACK, now or when its delayed-ACK timer says) crosses back. With `idle`
//! other established streams open between the same two stacks. Ours must stay flat as
//! `idle` grows (issue 12: within 15 % from 0 to 5000); the reference scans every socket
//! for each segment and each poll.
//!
//! ```text
//! cargo bench --bench stack
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::session::HEADROOM;
use skywire_dataplane::stack::{
    ListenOptions, ListenerId, Owner, Stack, StackEvent, StackSetup, StreamId,
};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};

const MTU: usize = 1420;
const SEGMENT: usize = 1380;
const IDLE: [usize; 3] = [0, 1000, 5000];
const OWNER: Owner = Owner(1000);

// ---- ours ----

fn move_packets(from: &mut Stack, to: &mut Stack, from_key: PublicKey, now: Instant) -> usize {
    let mut n = 0;
    let mut packets: Vec<Vec<u8>> = Vec::new();
    while let Some((_, buf, len)) = from.pop_egress() {
        packets.push(buf[HEADROOM..HEADROOM + len].to_vec());
    }
    for p in &packets {
        to.ingress(now, from_key, p);
        n += 1;
    }
    from.poll(now);
    n
}

struct Ours {
    a: Stack,
    b: Stack,
    ka: PublicKey,
    kb: PublicKey,
    at_a: StreamId,
    at_b: StreamId,
    now: Instant,
}

impl Ours {
    fn settle(&mut self) {
        loop {
            let n = move_packets(&mut self.a, &mut self.b, self.ka, self.now)
                + move_packets(&mut self.b, &mut self.a, self.kb, self.now);
            if n == 0 {
                break;
            }
        }
    }

    fn open(&mut self) -> (StreamId, StreamId) {
        let id = self
            .a
            .dial(self.now, self.kb, 7, OWNER, Duration::from_secs(5))
            .unwrap();
        self.settle();
        let at_b = self
            .b
            .drain_events()
            .find_map(|e| match e {
                StackEvent::Arrived { info, .. } => Some(info.id),
                _ => None,
            })
            .unwrap();
        self.a.drain_events().for_each(drop);
        self.a.attach(self.now, id, OWNER).unwrap();
        self.b.attach(self.now, at_b, OWNER).unwrap();
        (id, at_b)
    }

    fn new(idle: usize) -> Self {
        let now = Instant::now();
        let (ka, kb) = (
            PublicKey::from_bytes([1; 32]),
            PublicKey::from_bytes([2; 32]),
        );
        let setup = StackSetup {
            max_streams: 10_000,
            max_streams_per_peer: 10_000,
            max_streams_per_app: 10_000,
            max_half_open: 10_000,
            // Idle streams get the small buffer; the measured one is opened first and gets
            // the full one.
            memory: 4 << 30,
            ..StackSetup::default()
        };
        let mut ours = Ours {
            a: Stack::new(setup, ka, MTU, HEADROOM + MTU + 16, now, 1),
            b: Stack::new(setup, kb, MTU, HEADROOM + MTU + 16, now, 2),
            ka,
            kb,
            at_a: StreamId(0),
            at_b: StreamId(0),
            now,
        };
        ours.b
            .listen(
                ListenerId(1),
                ListenOptions {
                    port: 7,
                    backlog: 10_000,
                    allow: None,
                    owner: OWNER,
                },
            )
            .unwrap();
        let (a, b) = ours.open();
        (ours.at_a, ours.at_b) = (a, b);
        for _ in 0..idle {
            ours.open();
        }
        ours
    }

    fn segment(&mut self, data: &[u8]) {
        assert_eq!(self.a.app_send(self.now, self.at_a, data), data.len());
        // Until it all arrived: the segment, and ACKs back when the window needs them.
        let mut got = 0;
        for _ in 0..100 {
            move_packets(&mut self.a, &mut self.b, self.ka, self.now);
            // The receive buffer is a ring: the data may come in two pieces.
            loop {
                let mut piece = 0;
                self.b.app_recv(self.now, self.at_b, |bytes| {
                    piece += bytes.len();
                    bytes.len()
                });
                if piece == 0 {
                    break;
                }
                got += piece;
            }
            if got >= data.len() {
                break;
            }
            self.now += Duration::from_millis(1);
            self.b.poll(self.now);
            move_packets(&mut self.b, &mut self.a, self.kb, self.now);
            self.a.poll(self.now);
        }
        assert_eq!(got, data.len(), "the segment did not arrive");
        // The delayed ACK (or the immediate one every second segment) goes back.
        self.now += Duration::from_millis(1);
        self.b.poll(self.now);
        move_packets(&mut self.b, &mut self.a, self.kb, self.now);
    }
}

// ---- the reference: one interface, one socket set ----

struct Queue(VecDeque<Vec<u8>>);

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

/// A device whose input is `rx` and whose output goes to `tx`.
struct Dev<'a> {
    rx: &'a mut Queue,
    tx: &'a mut Queue,
}

impl phy::Device for Dev<'_> {
    type RxToken<'b>
        = Rx
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;
    fn receive(&mut self, _: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.0.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx.0)))
    }
    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx.0))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }
}

struct Naive {
    ia: Interface,
    ib: Interface,
    sa: SocketSet<'static>,
    sb: SocketSet<'static>,
    a_to_b: Queue,
    b_to_a: Queue,
    active: (SocketHandle, SocketHandle),
    now: SmolInstant,
}

fn socket(buffer: usize) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buffer]),
        tcp::SocketBuffer::new(vec![0; buffer]),
    );
    s.set_nagle_enabled(false);
    s
}

impl Naive {
    /// A's interface takes what B sent and sends what it has.
    fn poll_a(&mut self) {
        self.ia.poll(
            self.now,
            &mut Dev {
                rx: &mut self.b_to_a,
                tx: &mut self.a_to_b,
            },
            &mut self.sa,
        );
    }

    /// B's interface takes what A sent and sends what it has.
    fn poll_b(&mut self) {
        self.ib.poll(
            self.now,
            &mut Dev {
                rx: &mut self.a_to_b,
                tx: &mut self.b_to_a,
            },
            &mut self.sb,
        );
    }

    fn iface(addr: Ipv4Address, rx: &mut Queue, tx: &mut Queue, seed: u64) -> Interface {
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut Dev { rx, tx }, SmolInstant::from_millis(0));
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(addr), 30)).unwrap());
        iface
    }

    fn pump(&mut self) {
        for _ in 0..10 {
            self.poll_a();
            self.poll_b();
            if self.a_to_b.0.is_empty() && self.b_to_a.0.is_empty() {
                break;
            }
        }
    }

    fn connect(&mut self, port: u16, buffer: usize) -> (SocketHandle, SocketHandle) {
        let mut server = socket(buffer);
        server.listen(7).unwrap();
        let hb = self.sb.add(server);
        let mut client = socket(buffer);
        client
            .connect(self.ia.context(), (IpAddress::v4(169, 254, 77, 2), 7), port)
            .unwrap();
        let ha = self.sa.add(client);
        self.pump();
        (ha, hb)
    }

    fn new(idle: usize) -> Self {
        let (mut q1, mut q2) = (Queue(VecDeque::new()), Queue(VecDeque::new()));
        let ia = Self::iface(Ipv4Address::new(169, 254, 77, 1), &mut q1, &mut q2, 1);
        let ib = Self::iface(Ipv4Address::new(169, 254, 77, 2), &mut q2, &mut q1, 2);
        let mut naive = Naive {
            ia,
            ib,
            sa: SocketSet::new(vec![]),
            sb: SocketSet::new(vec![]),
            a_to_b: q1,
            b_to_a: q2,
            active: (SocketHandle::default(), SocketHandle::default()),
            now: SmolInstant::from_millis(1),
        };
        naive.active = naive.connect(40000, 256 * 1024);
        for i in 0..idle {
            naive.connect(40001 + i as u16, 64 * 1024);
        }
        assert_eq!(
            naive.sb.get::<tcp::Socket<'_>>(naive.active.1).state(),
            tcp::State::Established
        );
        naive
    }

    fn segment(&mut self, data: &[u8]) {
        let (ha, hb) = self.active;
        assert_eq!(
            self.sa
                .get_mut::<tcp::Socket<'_>>(ha)
                .send_slice(data)
                .unwrap(),
            data.len()
        );
        let mut got = 0;
        for _ in 0..100 {
            self.poll_a();
            self.poll_b();
            let socket = self.sb.get_mut::<tcp::Socket<'_>>(hb);
            // The receive buffer is a ring: the data may come in two pieces.
            while let Ok(piece) = socket.recv(|b| (b.len(), b.len())) {
                if piece == 0 {
                    break;
                }
                got += piece;
            }
            if got >= data.len() {
                break;
            }
            self.now += smoltcp::time::Duration::from_millis(1);
        }
        assert_eq!(got, data.len());
        self.now += smoltcp::time::Duration::from_millis(1);
        self.poll_b();
        self.poll_a();
    }
}

fn per_segment(c: &mut Criterion) {
    let data = vec![0x5a; SEGMENT];
    let mut group = c.benchmark_group("stack_segment");
    group.throughput(Throughput::Bytes(SEGMENT as u64));
    group.sample_size(30);
    for idle in IDLE {
        let mut ours = Ours::new(idle);
        group.bench_function(BenchmarkId::new("skywire_stack", idle), |b| {
            b.iter(|| ours.segment(&data));
        });
        let mut naive = Naive::new(idle);
        group.bench_function(BenchmarkId::new("smoltcp_one_set_reference", idle), |b| {
            b.iter(|| naive.segment(&data));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = per_segment
}
criterion_main!(benches);
