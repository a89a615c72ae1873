//! The demo's own traffic generator, so it needs neither `ping` nor `iperf3`: UDP echoes
//! and one-way TCP streams whose bytes are checksummed at both ends.
//!
//! Every socket is created inside a namespace by [`in_namespace`] and then used from
//! ordinary threads: a socket stays in the namespace it was made in. Every blocking call
//! has a timeout, so a broken tunnel or a Ctrl-C ends each loop within a fraction of a
//! second.

use core::time::Duration;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use super::DemoError;
use crate::lab::in_namespace;

/// A string carried in clear inside the tunnel, looked for on the relay's links.
pub const MARKER: &[u8] = b"SKYWIRE-DEMO-PLAINTEXT-MARKER";

/// The UDP port of the echo service on C (the classic echo port).
pub(super) const ECHO_PORT: u16 = 7;

/// How long a poll loop waits before it looks at the interrupt and stop flags again.
const TICK: Duration = Duration::from_millis(100);

/// A transfer that moves no byte for this long has failed.
const STALL: Duration = Duration::from_secs(10);

/// How long connecting and accepting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of the block of content a sender repeats, and of its reads and writes.
const CONTENT_LEN: usize = 1 << 20;

/// One marked block of the marker stream: the marker, its number, filler, a newline.
const MARKED_BLOCK: usize = 256;

/// `f`, run on a thread inside `namespace`, with both failures turned into [`DemoError`].
pub(super) fn in_ns<T: Send>(
    namespace: &str,
    what: &str,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> Result<T, DemoError> {
    let io_error = |source| DemoError::Io {
        what: format!("{what} in namespace {namespace}"),
        source,
    };
    in_namespace(namespace, f)
        .map_err(io_error)?
        .map_err(io_error)
}

/// A 64-bit checksum of a byte stream that depends on every byte and its position, so a
/// lost, duplicated, reordered or changed byte shows. Not cryptographic: it guards against
/// accidents, not against an adversary (the route's AEAD does that).
#[derive(Debug, Clone)]
pub(super) struct Checksum {
    state: u64,
    pending: [u8; 8],
    pending_len: usize,
    len: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Self {
            state: 0x736b_7977_6972_6521,
            pending: [0; 8],
            pending_len: 0,
            len: 0,
        }
    }
}

impl Checksum {
    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }

    /// Add `data` to the stream.
    pub(super) fn update(&mut self, data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        let mut data = data;
        if self.pending_len > 0 {
            let take = (8 - self.pending_len).min(data.len());
            let (head, rest) = data.split_at(take);
            if let Some(slot) = self
                .pending
                .get_mut(self.pending_len..self.pending_len + take)
            {
                slot.copy_from_slice(head);
            }
            self.pending_len += take;
            data = rest;
            if self.pending_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.pending));
            self.pending_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for word in &mut words {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            self.mix(u64::from_le_bytes(bytes));
        }
        let rest = words.remainder();
        if let Some(slot) = self.pending.get_mut(..rest.len()) {
            slot.copy_from_slice(rest);
        }
        self.pending_len = rest.len();
    }

    /// Bytes added so far.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// The checksum of everything added so far.
    pub(super) fn value(&self) -> u64 {
        let mut last = self.clone();
        let mut tail = [0u8; 8];
        if let (Some(dst), Some(src)) = (
            tail.get_mut(..self.pending_len),
            self.pending.get(..self.pending_len),
        ) {
            dst.copy_from_slice(src);
        }
        last.mix(u64::from_le_bytes(tail));
        last.mix(self.len);
        let mut x = last.state;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}

/// Counts the markers in a stream that arrives in pieces, including those cut in two.
#[derive(Debug, Default)]
pub(super) struct MarkerCounter {
    /// The last `MARKER.len() - 1` bytes seen.
    tail: Vec<u8>,
    count: u64,
}

impl MarkerCounter {
    /// Count the markers that end inside `data`.
    pub(super) fn update(&mut self, data: &[u8]) {
        let keep = MARKER.len() - 1;
        // Markers that start in the tail and end in `data`: the tail is shorter than a
        // marker, and so is the head of `data` looked at here, so none is counted twice.
        let mut joint = self.tail.clone();
        joint.extend_from_slice(data.get(..keep.min(data.len())).unwrap_or_default());
        self.count += count_marker(&joint) + count_marker(data);
        self.tail.extend_from_slice(data);
        let excess = self.tail.len().saturating_sub(keep);
        self.tail.drain(..excess);
    }

    /// Markers seen.
    pub(super) fn count(&self) -> u64 {
        self.count
    }
}

/// How many times the marker occurs in `bytes`.
pub(super) fn count_marker(bytes: &[u8]) -> u64 {
    bytes.windows(MARKER.len()).filter(|w| *w == MARKER).count() as u64
}

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Content {
    /// Pseudo-random bytes (fixed seed), for throughput.
    Random,
    /// Blocks of 256 bytes, each starting with [`MARKER`], for the plaintext check.
    Marked,
}

impl Content {
    /// [`CONTENT_LEN`] bytes, which the sender repeats.
    fn block(self) -> Vec<u8> {
        let mut block = Vec::with_capacity(CONTENT_LEN);
        match self {
            Content::Random => {
                let mut x: u64 = 0x2545_f491_4f6c_dd1d;
                while block.len() < CONTENT_LEN {
                    // xorshift64*
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    block.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
                }
            }
            Content::Marked => {
                for n in 0..CONTENT_LEN / MARKED_BLOCK {
                    let start = block.len();
                    block.extend_from_slice(MARKER);
                    block.extend_from_slice(format!(" block {n:08} ").as_bytes());
                    block.resize(start + MARKED_BLOCK - 1, b'.');
                    block.push(b'\n');
                }
            }
        }
        block.truncate(CONTENT_LEN);
        block
    }
}

/// One end's account of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamTally {
    /// Bytes moved.
    pub(super) bytes: u64,
    /// Their [`Checksum`].
    pub(super) checksum: u64,
    /// Markers among them.
    pub(super) markers: u64,
    /// From the first to the last byte (receiver) or from connect to the last write
    /// (sender).
    pub(super) elapsed: Duration,
}

/// Both ends' accounts of one TCP transfer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Transfer {
    /// What A sent.
    pub(super) sent: StreamTally,
    /// What C received.
    pub(super) received: StreamTally,
}

impl Transfer {
    /// Whether C received exactly what A sent.
    pub(super) fn intact(&self) -> bool {
        self.sent.bytes > 0
            && self.sent.bytes == self.received.bytes
            && self.sent.checksum == self.received.checksum
    }
}

/// How much a transfer sends: `bytes` or as many as fit in `time`, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit {
    /// At most this many bytes.
    pub(super) bytes: u64,
    /// For at most this long.
    pub(super) time: Duration,
}

/// Send a TCP stream of `content` from `from_ns` to `to:any port` (a listener made in
/// `to_ns`) and return both ends' accounts.
pub(super) fn tcp_transfer(
    from_ns: &str,
    to_ns: &str,
    to: Ipv4Addr,
    content: Content,
    limit: Limit,
    interrupted: &Arc<AtomicBool>,
) -> Result<Transfer, DemoError> {
    let listener = in_ns(to_ns, "cannot listen on TCP", || {
        let listener = TcpListener::bind((to, 0))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })?;
    let addr = listener.local_addr().map_err(|source| DemoError::Io {
        what: "cannot read the listener's address".to_owned(),
        source,
    })?;
    let give_up = Arc::new(AtomicBool::new(false));
    let count_markers = content == Content::Marked;
    let receiver = {
        let (interrupted, give_up) = (Arc::clone(interrupted), Arc::clone(&give_up));
        spawn("demo-receiver", move || {
            receive(&listener, &interrupted, &give_up, count_markers)
        })?
    };
    let sent = in_ns(from_ns, "cannot connect through the tunnel", || {
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
    })
    .and_then(|stream| {
        send(stream, content, limit, interrupted).map_err(|source| DemoError::Io {
            what: format!("sending to {addr} through the tunnel failed"),
            source,
        })
    });
    if sent.is_err() {
        give_up.store(true, Ordering::Relaxed);
    }
    let received = join(receiver, "receiving through the tunnel failed");
    if interrupted.load(Ordering::Relaxed) {
        return Err(DemoError::Interrupted);
    }
    let sent = sent?;
    Ok(Transfer {
        sent,
        received: received?,
    })
}

fn send(
    mut stream: TcpStream,
    content: Content,
    limit: Limit,
    interrupted: &AtomicBool,
) -> io::Result<StreamTally> {
    let block = content.block();
    stream.set_write_timeout(Some(TICK))?;
    let mut checksum = Checksum::default();
    let mut markers = MarkerCounter::default();
    let started = Instant::now();
    let mut progress = started;
    let mut offset = 0;
    while checksum.len() < limit.bytes && started.elapsed() < limit.time {
        if interrupted.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let left = usize::try_from(limit.bytes - checksum.len()).unwrap_or(usize::MAX);
        let end = block.len().min(offset + left);
        let chunk = block.get(offset..end).unwrap_or_default();
        match stream.write(chunk) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let written = chunk.get(..n).unwrap_or_default();
                checksum.update(written);
                if content == Content::Marked {
                    markers.update(written);
                }
                offset = (offset + n) % block.len();
                progress = Instant::now();
            }
            Err(e) if is_timeout(&e) => {
                if progress.elapsed() > STALL {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no byte could be sent for {} s", STALL.as_secs()),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let elapsed = started.elapsed();
    stream.shutdown(Shutdown::Write)?;
    Ok(StreamTally {
        bytes: checksum.len(),
        checksum: checksum.value(),
        markers: markers.count(),
        elapsed,
    })
}

fn receive(
    listener: &TcpListener,
    interrupted: &AtomicBool,
    give_up: &AtomicBool,
    count_markers: bool,
) -> io::Result<StreamTally> {
    let stop = || interrupted.load(Ordering::Relaxed) || give_up.load(Ordering::Relaxed);
    let deadline = Instant::now() + CONNECT_TIMEOUT + TICK;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop() || Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nobody connected through the tunnel",
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TICK))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut checksum = Checksum::default();
    let mut markers = MarkerCounter::default();
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                let data = buf.get(..n).unwrap_or_default();
                checksum.update(data);
                if count_markers {
                    markers.update(data);
                }
            }
            Err(e) if is_timeout(&e) => {
                if stop() {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                if last.elapsed() > STALL {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no byte arrived for {} s", STALL.as_secs()),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(StreamTally {
        bytes: checksum.len(),
        checksum: checksum.value(),
        markers: markers.count(),
        elapsed: first.map(|f| last.duration_since(f)).unwrap_or_default(),
    })
}

/// The UDP echo service on C: sends every datagram back where it came from. Dropping it
/// stops its thread, like [`EchoServer::stop`].
#[derive(Debug)]
pub(super) struct EchoServer {
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl EchoServer {
    /// Start it on `addr:ECHO_PORT` inside `namespace`.
    pub(super) fn start(namespace: &str, addr: Ipv4Addr) -> Result<Self, DemoError> {
        let socket = in_ns(namespace, "cannot bind the UDP echo service", || {
            let socket = UdpSocket::bind((addr, ECHO_PORT))?;
            socket.set_read_timeout(Some(TICK))?;
            Ok(socket)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, echoed) = (Arc::clone(&stop), Arc::clone(&echoed));
            spawn("demo-echo", move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            socket.send_to(buf.get(..n).unwrap_or_default(), from)?;
                            echoed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })?
        };
        Ok(Self {
            stop,
            echoed,
            thread: Some(thread),
        })
    }

    /// Stop it; returns how many datagrams it echoed.
    pub(super) fn stop(mut self) -> Result<u64, DemoError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            join(thread, "the UDP echo service failed")?;
        }
        Ok(self.echoed.load(Ordering::Relaxed))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A's side of the echoes: a UDP socket made in A's namespace, connected to C's service.
#[derive(Debug)]
pub(super) struct EchoClient {
    socket: UdpSocket,
}

/// The size of an echo request: sequence number, marker, padding.
pub(super) const ECHO_LEN: usize = 64;

impl EchoClient {
    /// A socket on `from` (inside `namespace`) connected to `to:ECHO_PORT`.
    pub(super) fn connect(
        namespace: &str,
        from: Ipv4Addr,
        to: Ipv4Addr,
    ) -> Result<Self, DemoError> {
        let socket = in_ns(namespace, "cannot open a UDP socket", || {
            let socket = UdpSocket::bind((from, 0))?;
            socket.connect(SocketAddr::from((to, ECHO_PORT)))?;
            Ok(socket)
        })?;
        Ok(Self { socket })
    }

    /// Send echo request `seq` and wait at most `timeout` for its answer; the round trip
    /// time, or `None` if it did not come back in time. Late answers to earlier requests
    /// are skipped.
    pub(super) fn ping(&self, seq: u64, timeout: Duration) -> Result<Option<Duration>, DemoError> {
        let io_error = |source| DemoError::Io {
            what: "the UDP echo failed".to_owned(),
            source,
        };
        let mut request = [0u8; ECHO_LEN];
        request
            .iter_mut()
            .zip(seq.to_be_bytes().iter().chain(MARKER))
            .for_each(|(dst, src)| *dst = *src);
        let started = Instant::now();
        self.socket.send(&request).map_err(io_error)?;
        let mut answer = [0u8; ECHO_LEN + 1];
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(io_error)?;
            match self.socket.recv(&mut answer) {
                Ok(n) if answer.get(..n) == Some(&request[..]) => {
                    return Ok(Some(started.elapsed()));
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Ok(None),
                // An ICMP error from an earlier request (nothing listened yet).
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Start a named thread.
pub(super) fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, DemoError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|source| DemoError::Io {
            what: format!("cannot start thread {name}"),
            source,
        })
}

/// Wait for a thread and pass on its error (or its panic) as a [`DemoError`].
pub(super) fn join<T>(thread: JoinHandle<io::Result<T>>, what: &str) -> Result<T, DemoError> {
    match thread.join() {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Err(DemoError::Interrupted),
        Ok(Err(source)) => Err(DemoError::Io {
            what: what.to_owned(),
            source,
        }),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_does_not_depend_on_how_the_stream_is_cut() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut whole = Checksum::default();
        whole.update(&data);
        for cut in [1, 3, 7, 8, 9, 1000, 4093] {
            let mut pieces = Checksum::default();
            for piece in data.chunks(cut) {
                pieces.update(piece);
            }
            assert_eq!(pieces.value(), whole.value(), "cut {cut}");
            assert_eq!(pieces.len(), 10_000);
        }
    }

    #[test]
    fn the_checksum_sees_changes_swaps_and_lengths() {
        let sum = |data: &[u8]| {
            let mut c = Checksum::default();
            c.update(data);
            c.value()
        };
        let data: Vec<u8> = (0..64u8).collect();
        let mut changed = data.clone();
        changed[40] ^= 1;
        let mut swapped = data.clone();
        swapped.swap(3, 11);
        let mut longer = data.clone();
        longer.push(0);
        let reference = sum(&data);
        for other in [&changed, &swapped, &longer, &data[..63].to_vec()] {
            assert_ne!(sum(other), reference);
        }
        assert_ne!(sum(&[]), sum(&[0]));
    }

    #[test]
    fn markers_are_counted_across_pieces() {
        let block = Content::Marked.block();
        assert_eq!(block.len(), CONTENT_LEN);
        let expected = (CONTENT_LEN / MARKED_BLOCK) as u64;
        assert_eq!(count_marker(&block), expected);
        for cut in [1, 5, 28, 29, 30, 256, 1000] {
            let mut counter = MarkerCounter::default();
            for piece in block.chunks(cut) {
                counter.update(piece);
            }
            assert_eq!(counter.count(), expected, "cut {cut}");
        }
        assert_eq!(count_marker(&Content::Random.block()), 0);
    }

    #[test]
    fn a_transfer_is_intact_only_when_both_ends_agree() {
        let tally = |bytes, checksum| StreamTally {
            bytes,
            checksum,
            markers: 0,
            elapsed: Duration::ZERO,
        };
        let t = |s, r| Transfer {
            sent: s,
            received: r,
        };
        assert!(t(tally(5, 9), tally(5, 9)).intact());
        assert!(!t(tally(5, 9), tally(5, 8)).intact());
        assert!(!t(tally(5, 9), tally(4, 9)).intact());
        assert!(!t(tally(0, 9), tally(0, 9)).intact());
    }
}
