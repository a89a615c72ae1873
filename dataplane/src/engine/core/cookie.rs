//! Handshake-flood protection at a route end (`docs/PROTOCOL.md` §5.10), after WireGuard's
//! cookie MACs: the node-wide "under load" state, the cookie secret, and a token bucket per
//! source address. Sans-IO: it takes `now` and the caller's buffer.
//!
//! Every initiation that reaches one of our route ends with a valid mac1 passes through
//! [`CookieGate::check`] before its session spends a Diffie-Hellman on it:
//!
//! - **Load.** A node-wide token bucket of [`LOAD_BURST`] initiations, refilled at one per
//!   [`LOAD_INTERVAL`], measures the rate of such initiations. When it runs dry the node is
//!   under load, and stays so until [`UNDER_LOAD_HOLD`] after it last ran dry. Not under
//!   load, every initiation goes on to its session, as without this module.
//! - **Under load**, an initiation goes on only with a valid mac2 for the cookie of its
//!   source address and route, and only while that source's bucket ([`SOURCE_BURST`], one
//!   per [`SOURCE_INTERVAL`]) is not spent; with a valid mac2 and a spent bucket it is
//!   dropped (`initiation under load dropped`). Without a valid mac2 it is answered with a
//!   cookie reply written over it (84 bytes for 132 or 148: never more than arrived), and
//!   nothing else happens: no Diffie-Hellman, no state but the load bucket.
//! - **Secret.** Cookies are made under a random secret replaced when it is
//!   [`COOKIE_SECRET_LIFETIME`] old; a mac2 under a cookie of an older secret is invalid.
//!
//! Only the route's real initiator can obtain the cookie: the reply goes back along the
//! route, not to the (spoofable) source address. So an off-path sender spoofing a
//! previous hop costs the node a keyed hash per initiation and gets nothing back, and the
//! per-source buckets are spent only by senders holding a valid cookie.
//!
//! Nothing here runs for packets other than initiations, so the data path is unchanged.
//! The per-source table is allocated once ([`SOURCES_TRACKED`] entries): when it is full,
//! sources whose bucket is full again are forgotten (they carry no information), and if
//! none is, all are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::crypto::PublicKey;
use crate::crypto::cookie::{self, CookieSecret};
use crate::crypto::kdf;
use crate::crypto::keys::fill_random;
use crate::crypto::noise::constant_time_eq;
use crate::wire::{COOKIE_NONCE_LEN, InitParts, RouteId, mac_input, split_init};

/// Initiations with a valid mac1 the node takes at once before it is under load.
pub const LOAD_BURST: u32 = 64;
/// After a burst, one initiation per this interval keeps the node out of load (32 a
/// second, sustained).
pub const LOAD_INTERVAL: Duration = Duration::from_micros(31_250);
/// The node stays under load this long after its load bucket last ran dry.
pub const UNDER_LOAD_HOLD: Duration = Duration::from_secs(1);
/// Initiations with a valid mac2 one source address may bring at once while under load.
pub const SOURCE_BURST: u32 = 20;
/// After that, one per this interval per source address (10 a second).
pub const SOURCE_INTERVAL: Duration = Duration::from_millis(100);
/// The cookie secret is replaced when it is this old; cookies made under it die with it.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);
/// Source addresses whose rate the node tracks at once.
pub const SOURCES_TRACKED: usize = 1024;

/// A token bucket kept as the instant it is full again (`None`: full), as
/// [`crate::session::PeerMemory`] keeps a peer's.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    full_at: Option<Instant>,
}

impl Bucket {
    /// Spend one token if the bucket has one.
    fn take(&mut self, now: Instant, burst: u32, interval: Duration) -> bool {
        let headroom = interval.saturating_mul(burst.saturating_sub(1));
        if self
            .full_at
            .is_some_and(|full| full.saturating_duration_since(now) > headroom)
        {
            return false;
        }
        let from = self.full_at.map_or(now, |full| full.max(now));
        self.full_at = Some(from.checked_add(interval).unwrap_or(from));
        true
    }

    fn is_full(&self, now: Instant) -> bool {
        self.full_at.is_none_or(|full| full <= now)
    }
}

/// What to do with an initiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// Hand it to its session, as without this module.
    Pass,
    /// Send the cookie reply now in the buffer's first bytes (this many) back along the
    /// route; the initiation is gone.
    Reply(usize),
    /// Drop it: under load, and its source spent its budget (or the random source failed).
    Drop,
}

/// The node-wide state of the flood protection.
#[derive(Debug)]
pub(super) struct CookieGate {
    public: PublicKey,
    mac1_key: [u8; 32],
    /// The current secret and when it was made.
    secret: Option<(Instant, CookieSecret)>,
    load: Bucket,
    under_load_until: Option<Instant>,
    sources: HashMap<SocketAddr, Bucket>,
}

impl CookieGate {
    pub(super) fn new(public: PublicKey) -> Self {
        Self {
            public,
            mac1_key: kdf::derive(kdf::CTX_MAC1, &[public.as_bytes()]),
            secret: None,
            load: Bucket::default(),
            under_load_until: None,
            sources: HashMap::with_capacity(SOURCES_TRACKED),
        }
    }

    /// Is the node under load at `now`?
    pub(super) fn is_under_load(&self, now: Instant) -> bool {
        self.under_load_until.is_some_and(|until| now < until)
    }

    /// The initiation in `buf` arrived from `from` at the route end that receives the
    /// route as `in_id` and sends with `out_id`. Decide; a cookie reply is written over
    /// `buf`.
    pub(super) fn check(
        &mut self,
        now: Instant,
        from: SocketAddr,
        in_id: RouteId,
        out_id: RouteId,
        buf: &mut [u8],
    ) -> Gate {
        // Anything that is not an initiation with a valid mac1 is the session's to count.
        let Some(InitParts { init, mac1, mac2 }) = split_init(buf) else {
            return Gate::Pass;
        };
        if !constant_time_eq(&kdf::mac1(&self.mac1_key, mac_input(init)), &mac1) {
            return Gate::Pass;
        }
        if !self.load.take(now, LOAD_BURST, LOAD_INTERVAL) {
            self.under_load_until = now.checked_add(UNDER_LOAD_HOLD);
        }
        if !self.is_under_load(now) {
            return Gate::Pass;
        }
        let Some(secret) = self.secret(now) else {
            return Gate::Drop;
        };
        let cookie = cookie::cookie(&secret, from, in_id);
        if mac2.is_some_and(|mac2| cookie::mac2_is_valid(&cookie, init, &mac2)) {
            return if self
                .source(now, from)
                .take(now, SOURCE_BURST, SOURCE_INTERVAL)
            {
                Gate::Pass
            } else {
                Gate::Drop
            };
        }
        let sender_index = init
            .get(8..12)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_be_bytes);
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        if fill_random(&mut nonce).is_err() {
            return Gate::Drop;
        }
        match cookie::write_reply(
            &self.public,
            nonce,
            out_id,
            sender_index,
            &mac1,
            &cookie,
            buf,
        ) {
            Ok(n) => Gate::Reply(n),
            Err(_) => Gate::Drop,
        }
    }

    /// The secret at `now`, made afresh when there is none or it is too old (`None`: the
    /// random source failed).
    fn secret(&mut self, now: Instant) -> Option<CookieSecret> {
        let fresh = self
            .secret
            .filter(|(born, _)| now.saturating_duration_since(*born) < COOKIE_SECRET_LIFETIME);
        if let Some((_, secret)) = fresh {
            return Some(secret);
        }
        let mut secret = [0u8; 32];
        fill_random(&mut secret).ok()?;
        self.secret = Some((now, secret));
        Some(secret)
    }

    /// The bucket of `from`, made if needed without growing the table past its capacity.
    fn source(&mut self, now: Instant, from: SocketAddr) -> &mut Bucket {
        if !self.sources.contains_key(&from) && self.sources.len() >= SOURCES_TRACKED {
            self.sources.retain(|_, bucket| !bucket.is_full(now));
            if self.sources.len() >= SOURCES_TRACKED {
                self.sources.clear();
            }
        }
        self.sources.entry(from).or_default()
    }

    /// The secret in use, for the tests that play an initiator holding a cookie.
    #[cfg(test)]
    fn current_secret(&self) -> Option<CookieSecret> {
        self.secret.map(|(_, secret)| secret)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::crypto::PrivateKey;
    use crate::crypto::cookie::{mac2, read_reply};
    use crate::crypto::noise::{self, RouteBinding, StaticKeys};
    use crate::wire::{COOKIE_REPLY_LEN, HANDSHAKE_INIT_LEN, HANDSHAKE_INIT_MAC2_LEN};

    fn id(n: u32) -> RouteId {
        RouteId::new(n).unwrap()
    }

    const IN: u32 = 101;
    const OUT: u32 = 200;

    fn relay() -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 2], 6000))
    }

    /// A gate for a fresh key and an initiator that knows that key (so its mac1 is valid).
    fn setup() -> (CookieGate, StaticKeys) {
        let node = PrivateKey::generate().unwrap();
        let gate = CookieGate::new(node.public_key());
        let initiator =
            StaticKeys::new(PrivateKey::generate().unwrap(), node.public_key()).unwrap();
        (gate, initiator)
    }

    /// An initiation with sender index `index`, in a buffer with room for mac2.
    fn init(keys: &StaticKeys, index: u32) -> Vec<u8> {
        let mut buf = vec![0u8; HANDSHAKE_INIT_MAC2_LEN];
        let binding = RouteBinding {
            initiator_in: id(OUT),
            responder_in: id(IN),
        };
        noise::write_init(keys, binding, id(IN), index, u64::from(index), &mut buf).unwrap();
        buf.truncate(HANDSHAKE_INIT_LEN);
        buf
    }

    /// The same initiation with a mac2 under `cookie`.
    fn with_mac2(init: &[u8], cookie: &[u8; 32]) -> Vec<u8> {
        let mut out = init.to_vec();
        out.extend_from_slice(&mac2(cookie, init));
        out
    }

    /// Put the gate under load at `now`: initiations until one finds the bucket empty.
    fn load(gate: &mut CookieGate, keys: &StaticKeys, now: Instant) {
        let template = init(keys, 1);
        while !gate.is_under_load(now) {
            gate.check(now, relay(), id(IN), id(OUT), &mut template.clone());
        }
    }

    #[test]
    fn not_under_load_everything_passes() {
        let (mut gate, keys) = setup();
        let now = Instant::now();
        for i in 0..LOAD_BURST {
            let mut buf = init(&keys, i + 1);
            assert_eq!(
                gate.check(now, relay(), id(IN), id(OUT), &mut buf),
                Gate::Pass
            );
        }
        assert!(!gate.is_under_load(now));
        // A bad mac1 or another length is the session's business: it passes untouched.
        let mut bad = init(&keys, 7);
        bad[116] ^= 1;
        let mut copy = bad.clone();
        assert_eq!(
            gate.check(now, relay(), id(IN), id(OUT), &mut copy),
            Gate::Pass
        );
        assert_eq!(copy, bad);
        assert!(!gate.is_under_load(now), "a bad mac1 spends no load token");
    }

    #[test]
    fn under_load_a_cookie_reply_and_then_a_valid_mac2_passes() {
        let (mut gate, keys) = setup();
        let now = Instant::now();
        load(&mut gate, &keys, now);
        let plain = init(&keys, 42);
        let mut buf = plain.clone();
        let Gate::Reply(n) = gate.check(now, relay(), id(IN), id(OUT), &mut buf) else {
            panic!("no cookie reply");
        };
        assert_eq!(n, COOKIE_REPLY_LEN);
        assert!(n <= plain.len());
        assert_eq!(
            buf[4..8],
            OUT.to_be_bytes(),
            "sent with the route end's out id"
        );
        let mac1: [u8; 16] = plain[116..132].try_into().unwrap();
        let cookie = read_reply(&keys.remote_public(), 42, &mac1, &buf[..n]).unwrap();
        assert_eq!(
            cookie,
            crate::crypto::cookie::cookie(&gate.current_secret().unwrap(), relay(), id(IN))
        );
        let next = init(&keys, 43);
        let mut buf = with_mac2(&next, &cookie);
        assert_eq!(
            gate.check(now, relay(), id(IN), id(OUT), &mut buf),
            Gate::Pass
        );
    }

    #[test]
    fn a_cookie_for_another_source_or_route_is_refused() {
        let (mut gate, keys) = setup();
        let now = Instant::now();
        load(&mut gate, &keys, now);
        let secret = gate.secret(now).unwrap();
        let other_port = SocketAddr::from(([198, 18, 0, 2], 6001));
        let other_host = SocketAddr::from(([198, 18, 0, 9], 6000));
        for (source, route) in [(other_port, IN), (other_host, IN), (relay(), IN + 1)] {
            let cookie = crate::crypto::cookie::cookie(&secret, source, id(route));
            let mut buf = with_mac2(&init(&keys, 5), &cookie);
            assert!(
                matches!(
                    gate.check(now, relay(), id(IN), id(OUT), &mut buf),
                    Gate::Reply(_)
                ),
                "{source} {route}"
            );
        }
    }

    #[test]
    fn a_cookie_of_an_expired_secret_is_refused() {
        let (mut gate, keys) = setup();
        let t0 = Instant::now();
        load(&mut gate, &keys, t0);
        let cookie = crate::crypto::cookie::cookie(&gate.secret(t0).unwrap(), relay(), id(IN));
        let later = t0 + COOKIE_SECRET_LIFETIME;
        load(&mut gate, &keys, later);
        let mut buf = with_mac2(&init(&keys, 9), &cookie);
        assert!(matches!(
            gate.check(later, relay(), id(IN), id(OUT), &mut buf),
            Gate::Reply(_)
        ));
    }

    #[test]
    fn valid_mac2s_from_one_source_are_held_to_its_budget() {
        let (mut gate, keys) = setup();
        let now = Instant::now();
        load(&mut gate, &keys, now);
        let cookie = crate::crypto::cookie::cookie(&gate.secret(now).unwrap(), relay(), id(IN));
        let good = with_mac2(&init(&keys, 3), &cookie);
        for _ in 0..SOURCE_BURST {
            assert_eq!(
                gate.check(now, relay(), id(IN), id(OUT), &mut good.clone()),
                Gate::Pass
            );
        }
        assert_eq!(
            gate.check(now, relay(), id(IN), id(OUT), &mut good.clone()),
            Gate::Drop
        );
        // Another source has its own budget (and its own cookie).
        let other = SocketAddr::from(([198, 18, 0, 4], 6000));
        let cookie = crate::crypto::cookie::cookie(&gate.secret(now).unwrap(), other, id(IN));
        let mut buf = with_mac2(&init(&keys, 3), &cookie);
        assert_eq!(
            gate.check(now, other, id(IN), id(OUT), &mut buf),
            Gate::Pass
        );
    }

    #[test]
    fn load_ends_a_second_after_the_flood() {
        let (mut gate, keys) = setup();
        let t0 = Instant::now();
        load(&mut gate, &keys, t0);
        assert!(gate.is_under_load(t0 + UNDER_LOAD_HOLD - Duration::from_millis(1)));
        let t1 = t0 + UNDER_LOAD_HOLD;
        assert!(!gate.is_under_load(t1));
        let mut buf = init(&keys, 11);
        assert_eq!(
            gate.check(t1, relay(), id(IN), id(OUT), &mut buf),
            Gate::Pass
        );
    }

    #[test]
    fn a_bucket_gives_its_burst_then_one_per_interval() {
        let mut bucket = Bucket::default();
        let t0 = Instant::now();
        for _ in 0..SOURCE_BURST {
            assert!(bucket.take(t0, SOURCE_BURST, SOURCE_INTERVAL));
        }
        assert!(!bucket.take(t0, SOURCE_BURST, SOURCE_INTERVAL));
        assert!(!bucket.is_full(t0));
        let t1 = t0 + SOURCE_INTERVAL;
        assert!(bucket.take(t1, SOURCE_BURST, SOURCE_INTERVAL));
        assert!(!bucket.take(t1, SOURCE_BURST, SOURCE_INTERVAL));
        assert!(bucket.is_full(t1 + SOURCE_INTERVAL * SOURCE_BURST));
    }

    #[test]
    fn the_source_table_never_grows_past_its_capacity() {
        let mut gate = CookieGate::new(PublicKey::from_bytes([9; 32]));
        let now = Instant::now();
        for i in 0..(3 * SOURCES_TRACKED as u32) {
            let from =
                SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000 + (i >> 16) as u16));
            gate.source(now, from)
                .take(now, SOURCE_BURST, SOURCE_INTERVAL);
            assert!(gate.sources.len() <= SOURCES_TRACKED);
        }
    }

    #[test]
    fn the_secret_lives_two_minutes() {
        let mut gate = CookieGate::new(PublicKey::from_bytes([9; 32]));
        let t0 = Instant::now();
        let first = gate.secret(t0).unwrap();
        assert_eq!(
            gate.secret(t0 + COOKIE_SECRET_LIFETIME - Duration::from_millis(1)),
            Some(first)
        );
        assert_ne!(gate.secret(t0 + COOKIE_SECRET_LIFETIME), Some(first));
    }
}
