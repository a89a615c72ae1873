//! A fake engine for tests: [`FakeEngine`] implements [`Streams`] and [`Routes`] in
//! memory, so the app socket's server, its client library and the tools on them are tested
//! through real Unix sockets without an engine, a route or a peer.
//!
//! Its world is one node talking to itself: a dial to any key it has a route to reaches
//! its own listener on that port, which sees the stream coming from the fake's own key
//! (so `allow` lists are checked against [`FakeEngine::key`]). Each stream is two ends, the
//! dialed one and the arrived one; once both are attached, a thread per direction decodes
//! the frames one app sends and writes them to the other: DATA as DATA, FIN (or an end of
//! input at a frame boundary) as FIN, a RESET as `reset: the peer reset the stream`, a
//! protocol error as `app_protocol: ...` to the sender and a peer reset to the other. After
//! FIN both ways, both connections are closed. A write to an app that closed its
//! connection aborts the stream, as the real engine does.
//!
//! Limits: `max_streams` and `max_streams_per_app` (counting ends), `max_listeners`, the
//! listeners' backlogs (ends not yet attached), and `take_timeout` (checked when an end is
//! attached late). Idle timeouts, buffer sizes and hand-overs to an app's own socket are
//! not modelled: `hand_over` and `watch` are refused as `unknown_stream`, and the tests of
//! hand-overs run against the real engine (`tests/apps_handover.rs`, the SOCKS tests).
//!
//! It is a test double, like the data plane's `sim`: it spawns threads per stream and
//! allocates freely, and a RESET it cannot write within a second (the app is not reading)
//! is left out, the connection just closed.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::WatchId;
use skywire_dataplane::stack::appframe::{self, Decoder, Frame, Kind};
use skywire_dataplane::stack::{
    Limit, ListenOptions, ListenerId, Owner, StackSetup, StreamError, StreamId, StreamInfo,
};

use super::protocol::reset_reason;
use super::{RouteFailure, Routes, Streams};

/// The first port a dialed stream gets on this side.
const FIRST_EPHEMERAL_PORT: u16 = 49152;

/// A RESET the fake writes is given up after this long (the app is not reading).
const RESET_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// An in-memory engine (see the module doc). Clones share the same state.
#[derive(Debug, Clone)]
pub struct FakeEngine {
    key: PublicKey,
    setup: StackSetup,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    next_port: u16,
    stopped: bool,
    routes: HashSet<PublicKey>,
    on_demand: HashSet<PublicKey>,
    black_holes: HashSet<PublicKey>,
    ensure_calls: Vec<PublicKey>,
    listeners: HashMap<u16, FakeListener>,
    ends: HashMap<StreamId, End>,
}

#[derive(Debug)]
struct FakeListener {
    id: ListenerId,
    owner: Owner,
    allow: Option<Vec<PublicKey>>,
    backlog: usize,
    tx: Sender<StreamInfo>,
}

#[derive(Debug)]
struct End {
    owner: Owner,
    /// The listener it arrived on (`None` for the dialed end).
    listener: Option<ListenerId>,
    link: Arc<Link>,
    side: usize,
    attached: bool,
    created: Instant,
}

impl FakeEngine {
    /// An engine for the node `key`, with `setup`'s limits.
    pub fn new(key: PublicKey, setup: StackSetup) -> Self {
        Self {
            key,
            setup,
            state: Arc::new(Mutex::new(State {
                next_id: 1,
                next_port: FIRST_EPHEMERAL_PORT,
                ..State::default()
            })),
        }
    }

    /// The node's key: where every arrived stream says it comes from.
    pub fn key(&self) -> PublicKey {
        self.key
    }

    /// A route to `peer`: dials to it reach this engine's listeners.
    pub fn add_route(&self, peer: PublicKey) {
        self.lock().routes.insert(peer);
    }

    /// No route to `peer` yet, but [`Routes::ensure_route`] makes one.
    pub fn route_on_demand(&self, peer: PublicKey) {
        self.lock().on_demand.insert(peer);
    }

    /// Dials to `peer` get no answer: they fail with `timeout` after their whole timeout.
    pub fn black_hole(&self, peer: PublicKey) {
        let mut state = self.lock();
        state.routes.insert(peer);
        state.black_holes.insert(peer);
    }

    /// The keys [`Routes::ensure_route`] was asked for, in order.
    pub fn ensure_route_calls(&self) -> Vec<PublicKey> {
        self.lock().ensure_calls.clone()
    }

    /// Stream ends alive (dialed or arrived, attached or not).
    pub fn live_streams(&self) -> usize {
        self.lock().ends.len()
    }

    /// Listeners.
    pub fn listeners(&self) -> usize {
        self.lock().listeners.len()
    }

    /// Fail the stream `stream` belongs to with `error`, as the engine does when a route
    /// goes or a stream idles: both ends get a RESET `reset_reason(error)`. `false` if no
    /// such stream.
    pub fn reset(&self, stream: StreamId, error: StreamError) -> bool {
        let link = self
            .lock()
            .ends
            .get(&stream)
            .map(|end| Arc::clone(&end.link));
        let Some(link) = link else {
            return false;
        };
        let reason = reset_reason(error);
        link.end([Some(reason.clone()), Some(reason)]);
        true
    }

    /// Stop, as the engine does on shutdown: every listener's receiver disconnects, every
    /// stream is reset with `shutdown`, and later calls fail with `shutdown`.
    pub fn shutdown(&self) {
        let links: Vec<Arc<Link>> = {
            let mut state = self.lock();
            state.stopped = true;
            state.listeners.clear();
            state
                .ends
                .values()
                .map(|end| Arc::clone(&end.link))
                .collect()
        };
        let reason = reset_reason(StreamError::Shutdown);
        for link in links {
            link.end([Some(reason.clone()), Some(reason.clone())]);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Limits a new stream of `owner` would break (each stream is two ends here).
    fn check_limits(&self, state: &State, owner: Owner) -> Result<(), StreamError> {
        if state.ends.len() + 2 > self.setup.max_streams {
            return Err(StreamError::Limit(Limit::Node));
        }
        let own = state.ends.values().filter(|e| e.owner == owner).count();
        if own + 1 > self.setup.max_streams_per_app {
            return Err(StreamError::Limit(Limit::App));
        }
        Ok(())
    }
}

impl Streams for FakeEngine {
    fn dial(
        &self,
        peer: PublicKey,
        port: u16,
        owner: Owner,
        timeout: Duration,
    ) -> Result<StreamInfo, StreamError> {
        let mut state = self.lock();
        if state.stopped {
            return Err(StreamError::Shutdown);
        }
        if state.black_holes.contains(&peer) {
            drop(state);
            thread::sleep(timeout);
            return Err(StreamError::TimedOut);
        }
        if !state.routes.contains(&peer) {
            return Err(StreamError::NoRoute);
        }
        self.check_limits(&state, owner)?;
        let listener = state.listeners.get(&port).ok_or(StreamError::Refused)?;
        if listener
            .allow
            .as_ref()
            .is_some_and(|keys| !keys.contains(&self.key))
        {
            return Err(StreamError::Refused);
        }
        let (listener_id, listener_owner, backlog, tx) = (
            listener.id,
            listener.owner,
            listener.backlog,
            listener.tx.clone(),
        );
        let waiting = state
            .ends
            .values()
            .filter(|e| e.listener == Some(listener_id) && !e.attached)
            .count();
        if waiting >= backlog {
            return Err(StreamError::Refused);
        }
        let (dialed, arrived) = (StreamId(state.next_id), StreamId(state.next_id + 1));
        state.next_id += 2;
        let local_port = state.next_port;
        state.next_port = state
            .next_port
            .checked_add(1)
            .unwrap_or(FIRST_EPHEMERAL_PORT);
        let link = Arc::new(Link::new([dialed, arrived], Arc::downgrade(&self.state)));
        let now = Instant::now();
        let dialed_info = StreamInfo {
            id: dialed,
            peer,
            local_port,
            remote_port: port,
        };
        let arrived_info = StreamInfo {
            id: arrived,
            peer: self.key,
            local_port: port,
            remote_port: local_port,
        };
        if tx.try_send(arrived_info).is_err() {
            return Err(StreamError::Refused);
        }
        state.ends.insert(
            dialed,
            End {
                owner,
                listener: None,
                link: Arc::clone(&link),
                side: 0,
                attached: false,
                created: now,
            },
        );
        // The arrived end belongs to the listener's user.
        state.ends.insert(
            arrived,
            End {
                owner: listener_owner,
                listener: Some(listener_id),
                link,
                side: 1,
                attached: false,
                created: now,
            },
        );
        Ok(dialed_info)
    }

    fn listen(
        &self,
        options: ListenOptions,
    ) -> Result<(ListenerId, crossbeam_channel::Receiver<StreamInfo>), StreamError> {
        let mut state = self.lock();
        if state.stopped {
            return Err(StreamError::Shutdown);
        }
        if state.listeners.contains_key(&options.port) {
            return Err(StreamError::PortInUse);
        }
        if state.listeners.len() >= self.setup.max_listeners {
            return Err(StreamError::Limit(Limit::Listeners));
        }
        let id = ListenerId(state.next_id);
        state.next_id += 1;
        let (tx, rx) = crossbeam_channel::unbounded();
        state.listeners.insert(
            options.port,
            FakeListener {
                id,
                owner: options.owner,
                allow: options.allow,
                backlog: options.backlog,
                tx,
            },
        );
        Ok((id, rx))
    }

    fn unlisten(&self, listener: ListenerId) {
        // Arrivals are handed out on the receiver as they come (there is no handshake
        // here), so they are the server's to attach or abort, as with the engine.
        self.lock().listeners.retain(|_, l| l.id != listener);
    }

    fn attach(
        &self,
        stream: StreamId,
        owner: Owner,
        socket: UnixStream,
        greeting: Vec<u8>,
    ) -> Result<(), StreamError> {
        let (link, side) = {
            let mut state = self.lock();
            if state.stopped {
                return Err(StreamError::Shutdown);
            }
            let take_timeout = self.setup.take_timeout;
            let end = state
                .ends
                .get_mut(&stream)
                .ok_or(StreamError::UnknownStream)?;
            if end.attached || end.owner != owner {
                return Err(StreamError::UnknownStream);
            }
            if end.created.elapsed() > take_timeout {
                let link = Arc::clone(&end.link);
                drop(state);
                let peer_reset = reset_reason(StreamError::PeerReset);
                link.end([Some(peer_reset.clone()), Some(peer_reset)]);
                return Err(StreamError::NotTaken);
            }
            end.attached = true;
            (Arc::clone(&end.link), end.side)
        };
        // The greeting goes before the pumps can write a frame.
        if (&socket).write_all(&greeting).is_err() {
            drop(socket);
            let mut reasons = [None, None];
            if let Some(other) = reasons.get_mut(1 - side) {
                *other = Some(reset_reason(StreamError::PeerReset));
            }
            link.end(reasons);
            return Err(StreamError::AppGone);
        }
        link.attach(side, socket);
        Ok(())
    }

    fn hand_over(
        &self,
        _stream: StreamId,
        _owner: Owner,
        _socket: OwnedFd,
        _watch: Option<WatchId>,
    ) -> Result<(), StreamError> {
        Err(StreamError::UnknownStream)
    }

    fn watch(&self, _owner: Owner, _socket: UnixStream) -> Result<WatchId, StreamError> {
        Err(StreamError::UnknownStream)
    }

    fn abort(&self, stream: StreamId) {
        let end = self
            .lock()
            .ends
            .get(&stream)
            .map(|end| (Arc::clone(&end.link), end.side));
        if let Some((link, side)) = end {
            let mut reasons = [None, None];
            if let Some(other) = reasons.get_mut(1 - side) {
                *other = Some(reset_reason(StreamError::PeerReset));
            }
            link.end(reasons);
        }
    }
}

impl Routes for FakeEngine {
    fn ensure_route(&self, peer: PublicKey, _deadline: Instant) -> Result<(), RouteFailure> {
        let mut state = self.lock();
        state.ensure_calls.push(peer);
        if state.on_demand.contains(&peer) {
            state.routes.insert(peer);
            Ok(())
        } else {
            Err(RouteFailure::plain(StreamError::NoRoute))
        }
    }
}

/// One stream: its two ends' connections, and the two threads that pump frames between
/// them once both are attached.
#[derive(Debug)]
struct Link {
    ids: [StreamId; 2],
    engine: Weak<Mutex<State>>,
    /// Each side's connection, for writing to it (the pump into it, and RESETs); held
    /// during a write, which blocks while the app does not read.
    writers: [Mutex<Option<UnixStream>>; 2],
    /// Each side's connection again, only to shut it down, which also ends a write
    /// blocked in a pump; never held during I/O.
    closers: Mutex<[Option<UnixStream>; 2]>,
    state: Mutex<LinkState>,
}

#[derive(Debug, Default)]
struct LinkState {
    /// Each side's connection, for reading, until both are attached and the pumps start.
    readers: [Option<UnixStream>; 2],
    /// FIN delivered from each side to the other.
    fin: [bool; 2],
    /// The stream ended (both FINs, or a reset); nothing more is forwarded.
    ended: bool,
    /// For a side not attached when the stream was reset: the RESET it gets on attach.
    late_reasons: [Option<String>; 2],
}

impl Link {
    fn new(ids: [StreamId; 2], engine: Weak<Mutex<State>>) -> Self {
        Self {
            ids,
            engine,
            writers: [Mutex::new(None), Mutex::new(None)],
            closers: Mutex::new([None, None]),
            state: Mutex::new(LinkState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self, side: usize) -> Option<MutexGuard<'_, Option<UnixStream>>> {
        self.writers
            .get(side)
            .map(|w| w.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Side `side`'s app connection arrives; with both here, the pumps start.
    fn attach(self: &Arc<Self>, side: usize, socket: UnixStream) {
        let mut state = self.state();
        if state.ended {
            let reason = state.late_reasons.get_mut(side).and_then(Option::take);
            drop(state);
            if let Some(reason) = reason {
                let _ = socket.set_write_timeout(Some(RESET_WRITE_TIMEOUT));
                let _ = (&socket).write_all(&appframe::reset(&reason));
            }
            self.forget(side);
            return;
        }
        let (Ok(writer), Ok(closer)) = (socket.try_clone(), socket.try_clone()) else {
            drop(state);
            self.end([None, Some(reset_reason(StreamError::PeerReset))]);
            return;
        };
        if let Some(mut slot) = self.writer(side) {
            *slot = Some(writer);
        }
        if let Some(slot) = self
            .closers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(side)
        {
            *slot = Some(closer);
        }
        if let Some(reader) = state.readers.get_mut(side) {
            *reader = Some(socket);
        }
        let both = match &mut state.readers {
            [Some(_), Some(_)] => {
                let [a, b] = std::mem::take(&mut state.readers);
                a.zip(b)
            }
            _ => None,
        };
        drop(state);
        if let Some((a, b)) = both {
            for (from, reader) in [(0, a), (1, b)] {
                let link = Arc::clone(self);
                let started = thread::Builder::new()
                    .name("skywire-fake-pump".to_owned())
                    .spawn(move || link.pump(from, &reader));
                if started.is_err() {
                    self.end([None, None]);
                }
            }
        }
    }

    /// Move frames from side `from`'s app to the other's until the stream ends.
    fn pump(&self, from: usize, reader: &UnixStream) {
        let to = 1 - from;
        let peer_reset = || Some(reset_reason(StreamError::PeerReset));
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match (&*reader).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if self.state().ended {
                return;
            }
            if n == 0 {
                // The app closed or shut down its side: a FIN, if between frames.
                if decoder.fin() {
                    return;
                }
                if decoder.at_boundary() {
                    self.deliver_fin(from, to);
                } else {
                    let mut reasons = [None, None];
                    if let Some(r) = reasons.get_mut(to) {
                        *r = peer_reset();
                    }
                    self.end(reasons);
                }
                return;
            }
            let mut input = buf.get(..n).unwrap_or_default();
            while !input.is_empty() {
                let (used, frame) = match decoder.decode(input) {
                    Ok(step) => step,
                    Err(_) => {
                        let mut reasons = [None, None];
                        if let Some(r) = reasons.get_mut(from) {
                            *r = Some(reset_reason(StreamError::AppProtocol));
                        }
                        if let Some(r) = reasons.get_mut(to) {
                            *r = peer_reset();
                        }
                        self.end(reasons);
                        return;
                    }
                };
                input = input.get(used..).unwrap_or_default();
                match frame {
                    Some(Frame::Data(piece))
                        if !self.send(to, &[&appframe::header(Kind::Data, piece.len()), piece]) =>
                    {
                        let mut reasons = [None, None];
                        if let Some(r) = reasons.get_mut(from) {
                            *r = peer_reset();
                        }
                        self.end(reasons);
                        return;
                    }
                    Some(Frame::Data(_)) => {}
                    Some(Frame::Fin) => self.deliver_fin(from, to),
                    // Apps never send HANDED; the fake treats it as the engine does.
                    Some(Frame::Handed) => {
                        let mut reasons = [None, None];
                        if let Some(r) = reasons.get_mut(from) {
                            *r = Some(reset_reason(StreamError::AppProtocol));
                        }
                        if let Some(r) = reasons.get_mut(to) {
                            *r = peer_reset();
                        }
                        self.end(reasons);
                        return;
                    }
                    Some(Frame::Reset(_)) => {
                        let mut reasons = [None, None];
                        if let Some(r) = reasons.get_mut(to) {
                            *r = peer_reset();
                        }
                        self.end(reasons);
                        return;
                    }
                    None => {}
                }
            }
        }
    }

    /// Write `parts` to side `to`'s app; `false` if it cannot be written.
    fn send(&self, to: usize, parts: &[&[u8]]) -> bool {
        let Some(writer) = self.writer(to) else {
            return false;
        };
        let Some(socket) = writer.as_ref() else {
            return false;
        };
        parts.iter().all(|part| (&*socket).write_all(part).is_ok())
    }

    /// A FIN from side `from` reaches side `to`; after both, the connections close.
    fn deliver_fin(&self, from: usize, to: usize) {
        if !self.send(to, &[&appframe::header(Kind::Fin, 0)]) {
            let mut reasons = [None, None];
            if let Some(r) = reasons.get_mut(from) {
                *r = Some(reset_reason(StreamError::PeerReset));
            }
            self.end(reasons);
            return;
        }
        let mut state = self.state();
        if let Some(fin) = state.fin.get_mut(from) {
            *fin = true;
        }
        if state.fin == [true, true] && !state.ended {
            state.ended = true;
            drop(state);
            self.close_both();
            self.forget_all();
        }
    }

    /// End the stream: each attached side gets its RESET (if any) and its connection
    /// closed; a side not attached yet gets its RESET when it attaches.
    fn end(&self, reasons: [Option<String>; 2]) {
        let mut state = self.state();
        if state.ended {
            return;
        }
        state.ended = true;
        state.readers = [None, None];
        let mut late = [None, None];
        for (side, reason) in reasons.into_iter().enumerate() {
            let Some(writer) = self.writers.get(side) else {
                continue;
            };
            // A pump holds the writer while it writes to the app, which takes a moment when
            // the app reads; a side whose app is not reading keeps it held: no RESET then,
            // only the close below.
            let attached = match lock_within(writer, RESET_WRITE_TIMEOUT) {
                Some(guard) => guard.as_ref().map(|socket| {
                    if let Some(reason) = &reason {
                        let _ = socket.set_write_timeout(Some(RESET_WRITE_TIMEOUT));
                        let _ = (&*socket).write_all(&appframe::reset(reason));
                    }
                }),
                None => Some(()),
            }
            .is_some();
            if !attached && let Some(slot) = late.get_mut(side) {
                *slot = reason;
            }
        }
        state.late_reasons = late;
        let waiting: Vec<usize> = state
            .late_reasons
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_some())
            .map(|(side, _)| side)
            .collect();
        drop(state);
        self.close_both();
        // Ends still to attach stay known until they do, to be told why.
        for side in 0..2 {
            if !waiting.contains(&side) {
                self.forget(side);
            }
        }
    }

    fn close_both(&self) {
        let closers = self.closers.lock().unwrap_or_else(PoisonError::into_inner);
        for socket in closers.iter().flatten() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    fn forget_all(&self) {
        self.forget(0);
        self.forget(1);
    }

    /// The engine forgets side `side`'s id.
    fn forget(&self, side: usize) {
        let (Some(engine), Some(id)) = (self.engine.upgrade(), self.ids.get(side)) else {
            return;
        };
        engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ends
            .remove(id);
    }
}

/// `mutex` locked, if it comes free within `wait` (polled: std has no timed lock).
fn lock_within<T>(mutex: &Mutex<T>, wait: Duration) -> Option<MutexGuard<'_, T>> {
    let deadline = Instant::now() + wait;
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}
