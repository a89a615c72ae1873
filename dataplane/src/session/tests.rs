//! Two session ends exchanging packets in memory.

use super::*;
use crate::crypto::PrivateKey;
use crate::crypto::kdf;
use crate::crypto::noise::RouteBinding;
use crate::wire::TAG_LEN;

const BUF: usize = 2048;

fn id(n: u32) -> RouteId {
    RouteId::new(n).unwrap()
}

/// A's ids of the route: it sends with 10, which is what B receives with, and receives
/// with 20, which is what B sends with.
fn a_ids() -> RouteIds {
    RouteIds {
        out_id: id(10),
        in_id: id(20),
        peer_in_id: id(10),
    }
}

fn b_ids() -> RouteIds {
    RouteIds {
        out_id: id(20),
        in_id: id(10),
        peer_in_id: id(20),
    }
}

/// One end of the route: its session and its node's memory of the peer key. Derefs to the
/// session.
struct End {
    session: Session,
    peer: PeerMemory,
    limits: Limits,
}

impl End {
    fn new(keys: StaticKeys, ids: RouteIds, limits: Limits, now: Instant, unix: Duration) -> Self {
        Self {
            session: Session::new(keys, ids, limits, now, unix),
            peer: PeerMemory::new(),
            limits,
        }
    }

    /// The node restarts: a fresh session, and the node's memory is gone too.
    fn restart(&mut self, now: Instant, unix: Duration) {
        self.reinstall(now, unix);
        self.peer = PeerMemory::new();
    }

    /// The route end is installed again (a repair, a remove and add): a fresh session on
    /// the same node, which still remembers the peer.
    fn reinstall(&mut self, now: Instant, unix: Duration) {
        let (keys, ids) = (self.session.keys().clone(), self.session.ids());
        self.session = Session::new(keys, ids, self.limits, now, unix);
    }
}

impl core::ops::Deref for End {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl core::ops::DerefMut for End {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

struct Pair {
    a: End,
    b: End,
    t0: Instant,
}

fn pair_with(limits: Limits) -> Pair {
    let ka = PrivateKey::generate().unwrap();
    let kb = PrivateKey::generate().unwrap();
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let t0 = Instant::now();
    let unix = Duration::from_secs(1_800_000_000);
    let a = End::new(StaticKeys::new(ka, pb).unwrap(), a_ids(), limits, t0, unix);
    let b = End::new(StaticKeys::new(kb, pa).unwrap(), b_ids(), limits, t0, unix);
    Pair { a, b, t0 }
}

fn data(session: &mut Session, now: Instant, payload: &[u8]) -> Result<Vec<u8>, SendError> {
    let mut buf = vec![0u8; BUF];
    buf[HEADROOM..][..payload.len()].copy_from_slice(payload);
    let n = session.encapsulate(now, &mut buf, payload.len())?;
    buf.truncate(n);
    Ok(buf)
}

/// Feed `packet` to `end`; returns the outcome with owned bytes.
fn feed(end: &mut End, now: Instant, packet: &[u8]) -> OwnedOutcome {
    let mut buf = packet.to_vec();
    match end.session.decapsulate(now, &mut buf, &mut end.peer) {
        Outcome::Deliver(p) => OwnedOutcome::Deliver(p.to_vec()),
        Outcome::Reply(p) => OwnedOutcome::Reply(p.to_vec()),
        Outcome::Consumed => OwnedOutcome::Consumed,
        Outcome::Closed => OwnedOutcome::Closed,
        Outcome::Pong(nonce) => OwnedOutcome::Pong(nonce),
        Outcome::Dropped(r) => OwnedOutcome::Dropped(r),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum OwnedOutcome {
    Deliver(Vec<u8>),
    Reply(Vec<u8>),
    Consumed,
    Closed,
    Pong(u64),
    Dropped(DropReason),
}

fn poll(end: &mut End, now: Instant) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; BUF];
    end.session
        .poll(now, &mut buf, &mut end.peer)
        .map(|n| buf[..n].to_vec())
}

/// A initiates; B answers; A confirms. Returns after both hold a confirmed keypair.
fn handshake(p: &mut Pair, now: Instant) {
    assert_eq!(data(&mut p.a, now, b"x"), Err(SendError::NoSession));
    let init = poll(&mut p.a, now).expect("initiation");
    assert_eq!(init.len(), HANDSHAKE_INIT_LEN);
    let OwnedOutcome::Reply(response) = feed(&mut p.b, now, &init) else {
        panic!("no response")
    };
    assert_eq!(response.len(), HANDSHAKE_RESPONSE_LEN);
    let OwnedOutcome::Reply(confirm) = feed(&mut p.a, now, &response) else {
        panic!("no confirm")
    };
    assert_eq!(feed(&mut p.b, now, &confirm), OwnedOutcome::Consumed);
    assert!(p.a.is_established() && p.b.is_established());
}

#[test]
fn handshake_and_burst_with_replay_forgery_reorder_and_old() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    handshake(&mut p, now);

    let packets: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| data(&mut p.a, now, format!("packet {i}").as_bytes()).unwrap())
        .collect();
    // Deliver most in order, holding back #9000 (reordered within the window) and #10
    // (too old once 10 000 later packets were seen).
    for (i, packet) in packets.iter().enumerate() {
        if i == 10 || i == 9000 {
            continue;
        }
        let want = format!("packet {i}").into_bytes();
        assert_eq!(feed(&mut p.b, now, packet), OwnedOutcome::Deliver(want));
    }
    assert_eq!(
        feed(&mut p.b, now, &packets[9000]),
        OwnedOutcome::Deliver(b"packet 9000".to_vec())
    );
    assert_eq!(
        feed(&mut p.b, now, &packets[10]),
        OwnedOutcome::Dropped(DropReason::Replay)
    );
    // Replayed.
    assert_eq!(
        feed(&mut p.b, now, &packets[9999]),
        OwnedOutcome::Dropped(DropReason::Replay)
    );
    // Forged: a flipped ciphertext bit.
    let mut forged = data(&mut p.a, now, b"genuine").unwrap();
    forged[TRANSPORT_HEADER_LEN] ^= 0x80;
    assert_eq!(
        feed(&mut p.b, now, &forged),
        OwnedOutcome::Dropped(DropReason::BadTag)
    );
    // The forged packet did not advance the window: the genuine one with that counter
    // (re-sealed from the same sender state is impossible, so send the next) still works.
    let next = data(&mut p.a, now, b"after forgery").unwrap();
    assert_eq!(
        feed(&mut p.b, now, &next),
        OwnedOutcome::Deliver(b"after forgery".to_vec())
    );

    let s = p.b.stats();
    assert_eq!(s.rx_packets, 10_000);
    assert_eq!(s.drops.get(DropReason::Replay), 2);
    assert_eq!(s.drops.get(DropReason::BadTag), 1);
    assert_eq!(s.drops.total(), 3);
    assert_eq!(p.a.stats().tx_packets, 10_002);
}

#[test]
fn both_directions_and_keepalive_confirmation() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    handshake(&mut p, now);
    let back = data(&mut p.b, now, b"from b").unwrap();
    assert_eq!(
        feed(&mut p.a, now, &back),
        OwnedOutcome::Deliver(b"from b".to_vec())
    );
    // A received data and sent nothing since: a keepalive is due after keepalive_timeout.
    let later = now + Limits::WIREGUARD.keepalive_timeout;
    assert_eq!(p.a.poll_timeout(), Some(later));
    assert!(poll(&mut p.a, later - Duration::from_millis(1)).is_none());
    let keepalive = poll(&mut p.a, later).expect("keepalive");
    assert_eq!(keepalive.len(), TRANSPORT_OVERHEAD);
    assert_eq!(feed(&mut p.b, later, &keepalive), OwnedOutcome::Consumed);
    assert!(poll(&mut p.a, later).is_none());
}

#[test]
fn replayed_or_forged_handshakes_create_no_state() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    p.a.request_handshake();
    let init = poll(&mut p.a, now).unwrap();
    let OwnedOutcome::Reply(response) = feed(&mut p.b, now, &init) else {
        panic!()
    };
    // The same initiation again: refused before any work, no new keypair.
    assert_eq!(
        feed(&mut p.b, now, &init),
        OwnedOutcome::Dropped(DropReason::ReplayedHandshake)
    );
    // A forged initiation (bit flip in the sealed static key).
    let mut forged = init.clone();
    forged[50] ^= 1;
    assert_eq!(
        feed(&mut p.b, now, &forged),
        OwnedOutcome::Dropped(DropReason::BadHandshake)
    );
    // The genuine response still completes A's handshake, and B's keypair is the one made
    // for the genuine initiation.
    let OwnedOutcome::Reply(confirm) = feed(&mut p.a, now, &response) else {
        panic!()
    };
    assert_eq!(feed(&mut p.b, now, &confirm), OwnedOutcome::Consumed);
    // The response replayed: A has no pending initiation any more.
    assert_eq!(
        feed(&mut p.a, now, &response),
        OwnedOutcome::Dropped(DropReason::UnexpectedResponse)
    );
    let msg = data(&mut p.a, now, b"ok").unwrap();
    assert_eq!(
        feed(&mut p.b, now, &msg),
        OwnedOutcome::Deliver(b"ok".to_vec())
    );
    // An older initiation that B never saw (captured earlier) is refused by its timestamp.
    let mut c = pair_with(Limits::WIREGUARD);
    c.a.request_handshake();
    let first = poll(&mut c.a, c.t0).unwrap();
    c.a.request_handshake();
    let t1 = c.t0 + Limits::WIREGUARD.rekey_timeout;
    let second = poll(&mut c.a, t1).unwrap();
    assert!(matches!(
        feed(&mut c.b, t1, &second),
        OwnedOutcome::Reply(_)
    ));
    assert_eq!(
        feed(&mut c.b, t1, &first),
        OwnedOutcome::Dropped(DropReason::ReplayedHandshake)
    );
}

#[test]
fn responder_sends_only_after_confirmation() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    p.a.request_handshake();
    let init = poll(&mut p.a, now).unwrap();
    let OwnedOutcome::Reply(_response) = feed(&mut p.b, now, &init) else {
        panic!()
    };
    // B holds only an unconfirmed keypair: it cannot send yet.
    assert!(!p.b.is_established());
    assert_eq!(data(&mut p.b, now, b"early"), Err(SendError::NoSession));
}

#[test]
fn rekey_after_time_keeps_traffic_flowing() {
    let limits = Limits::WIREGUARD;
    let mut p = pair_with(limits);
    let t0 = p.t0;
    handshake(&mut p, t0);
    let later = p.t0 + limits.rekey_after_time;
    // Sending after rekey_after_time still works and asks for a new handshake.
    let old = data(&mut p.a, later, b"old key").unwrap();
    let init = poll(&mut p.a, later).expect("rekey initiation");
    assert_eq!(init.len(), HANDSHAKE_INIT_LEN);
    let OwnedOutcome::Reply(response) = feed(&mut p.b, later, &init) else {
        panic!()
    };
    let OwnedOutcome::Reply(confirm) = feed(&mut p.a, later, &response) else {
        panic!()
    };
    // A packet sealed with the previous keypair, arriving late, still opens.
    assert_eq!(
        feed(&mut p.b, later, &old),
        OwnedOutcome::Deliver(b"old key".to_vec())
    );
    assert_eq!(feed(&mut p.b, later, &confirm), OwnedOutcome::Consumed);
    let new = data(&mut p.a, later, b"new key").unwrap();
    assert_ne!(new[8..12], old[8..12], "new key id");
    assert_eq!(
        feed(&mut p.b, later, &new),
        OwnedOutcome::Deliver(b"new key".to_vec())
    );
    assert_eq!(p.a.stats().handshakes_completed, 2);
}

#[test]
fn keys_are_refused_past_reject_after_time() {
    let limits = Limits::WIREGUARD;
    let mut p = pair_with(limits);
    let t0 = p.t0;
    handshake(&mut p, t0);
    let msg = data(&mut p.a, p.t0, b"late").unwrap();
    let expired = p.t0 + limits.reject_after_time;
    assert_eq!(
        feed(&mut p.b, expired, &msg),
        OwnedOutcome::Dropped(DropReason::KeyExpired)
    );
    assert_eq!(
        data(&mut p.a, expired, b"too late"),
        Err(SendError::NoSession)
    );
    // After three reject times with no new handshake every key is forgotten.
    assert!(poll(&mut p.b, p.t0 + limits.reject_after_time * 3).is_none());
    assert!(!p.b.is_established());
}

#[test]
fn rekey_and_refusal_by_message_count() {
    let limits = Limits {
        rekey_after_messages: 5,
        reject_after_messages: 8,
        ..Limits::WIREGUARD
    };
    let mut p = pair_with(limits);
    let now = p.t0;
    handshake(&mut p, now); // the confirming keepalive used counter 0
    for _ in 0..4 {
        data(&mut p.a, now, b"m").unwrap();
    }
    // Counter 5 reached: a rekey is wanted, but sending still works until the hard limit.
    assert!(p.a.want_handshake);
    for _ in 0..3 {
        data(&mut p.a, now, b"m").unwrap();
    }
    assert_eq!(data(&mut p.a, now, b"m"), Err(SendError::NoSession));
    // No initiation within rekey_timeout of the last one; then it goes out.
    assert!(poll(&mut p.a, now).is_none());
    let later = now + Limits::WIREGUARD.rekey_timeout;
    assert!(poll(&mut p.a, later).is_some_and(|m| m.len() == HANDSHAKE_INIT_LEN));
}

#[test]
fn handshake_retransmits_then_gives_up() {
    let limits = Limits::WIREGUARD;
    let mut p = pair_with(limits);
    p.a.request_handshake();
    let mut now = p.t0;
    let mut sent = 0;
    while now < p.t0 + limits.rekey_attempt_time + limits.rekey_timeout {
        if let Some(init) = poll(&mut p.a, now) {
            assert_eq!(init.len(), HANDSHAKE_INIT_LEN);
            sent += 1;
        }
        now += Duration::from_millis(500);
    }
    // One every rekey_timeout for rekey_attempt_time, then nothing.
    assert_eq!(
        sent,
        (limits.rekey_attempt_time.as_secs() / limits.rekey_timeout.as_secs()) as usize
    );
    assert_eq!(p.a.stats().handshakes_abandoned, 1);
    assert!(poll(&mut p.a, now + Duration::from_secs(60)).is_none());
}

#[test]
fn restarted_peer_recovers_at_once() {
    let mut p = pair_with(Limits::WIREGUARD);
    let t0 = p.t0;
    handshake(&mut p, t0);
    // B restarts: a fresh session with the same keys and a later wall clock.
    let t1 = p.t0 + Duration::from_secs(3);
    p.b.restart(t1, Duration::from_secs(1_800_000_003));
    // A keeps sending with its old keys; B cannot open them and starts a handshake itself.
    let stale = data(&mut p.a, t1, b"while restarting").unwrap();
    assert_eq!(
        feed(&mut p.b, t1, &stale),
        OwnedOutcome::Dropped(DropReason::UnknownKey)
    );
    let init = poll(&mut p.b, t1).expect("restarted end initiates");
    let OwnedOutcome::Reply(response) = feed(&mut p.a, t1, &init) else {
        panic!()
    };
    let OwnedOutcome::Reply(confirm) = feed(&mut p.b, t1, &response) else {
        panic!()
    };
    assert_eq!(feed(&mut p.a, t1, &confirm), OwnedOutcome::Consumed);
    let msg = data(&mut p.a, t1, b"resumed").unwrap();
    assert_eq!(
        feed(&mut p.b, t1, &msg),
        OwnedOutcome::Deliver(b"resumed".to_vec())
    );
}

#[test]
fn unanswered_sender_rehandshakes() {
    let limits = Limits::WIREGUARD;
    let mut p = pair_with(limits);
    let t0 = p.t0;
    handshake(&mut p, t0);
    data(&mut p.a, p.t0, b"into the void").unwrap();
    let deadline = p.t0 + limits.keepalive_timeout + limits.rekey_timeout;
    assert!(poll(&mut p.a, deadline - Duration::from_millis(1)).is_none());
    assert!(poll(&mut p.a, deadline).is_some_and(|m| m.len() == HANDSHAKE_INIT_LEN));
}

#[test]
fn close_is_authenticated() {
    let mut p = pair_with(Limits::WIREGUARD);
    let t0 = p.t0;
    handshake(&mut p, t0);
    let mut buf = [0u8; 64];
    let n = p.a.close(p.t0, &mut buf).unwrap();
    let mut forged = buf[..n].to_vec();
    forged[n - 1] ^= 1;
    assert_eq!(
        feed(&mut p.b, p.t0, &forged),
        OwnedOutcome::Dropped(DropReason::BadTag)
    );
    assert!(p.b.is_established());
    assert_eq!(feed(&mut p.b, p.t0, &buf[..n]), OwnedOutcome::Closed);
    assert!(!p.b.is_established() && !p.a.is_established());
}

#[test]
fn every_truncation_and_extension_is_dropped_without_panic() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    p.a.request_handshake();
    let init = poll(&mut p.a, now).unwrap();
    let mut b2 = pair_with(Limits::WIREGUARD);
    handshake(&mut b2, now);
    let msg = data(&mut b2.a, now, &[0x5a; 100]).unwrap();
    for packet in [&init, &msg] {
        for len in 0..packet.len() + TAG_LEN {
            let mut bytes = packet.clone();
            bytes.resize(len, 0xee);
            if len == packet.len() {
                continue;
            }
            let outcome = feed(&mut b2.b, now, &bytes);
            assert!(
                matches!(outcome, OwnedOutcome::Dropped(_)),
                "len {len}: {outcome:?}"
            );
        }
    }
    // The session still works afterwards.
    let msg = data(&mut b2.a, now, b"still fine").unwrap();
    assert_eq!(
        feed(&mut b2.b, now, &msg),
        OwnedOutcome::Deliver(b"still fine".to_vec())
    );
}

#[test]
fn crossed_initiations_leave_both_directions_working() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    p.a.request_handshake();
    p.b.request_handshake();
    let init_a = poll(&mut p.a, now).unwrap();
    let init_b = poll(&mut p.b, now).unwrap();
    let OwnedOutcome::Reply(resp_to_a) = feed(&mut p.b, now, &init_a) else {
        panic!()
    };
    let OwnedOutcome::Reply(resp_to_b) = feed(&mut p.a, now, &init_b) else {
        panic!()
    };
    let OwnedOutcome::Reply(confirm_a) = feed(&mut p.a, now, &resp_to_a) else {
        panic!()
    };
    let OwnedOutcome::Reply(confirm_b) = feed(&mut p.b, now, &resp_to_b) else {
        panic!()
    };
    assert_eq!(feed(&mut p.b, now, &confirm_a), OwnedOutcome::Consumed);
    assert_eq!(feed(&mut p.a, now, &confirm_b), OwnedOutcome::Consumed);
    let ab = data(&mut p.a, now, b"a to b").unwrap();
    let ba = data(&mut p.b, now, b"b to a").unwrap();
    assert_eq!(
        feed(&mut p.b, now, &ab),
        OwnedOutcome::Deliver(b"a to b".to_vec())
    );
    assert_eq!(
        feed(&mut p.a, now, &ba),
        OwnedOutcome::Deliver(b"b to a".to_vec())
    );
    assert_eq!(p.a.stats().drops.total() + p.b.stats().drops.total(), 0);
}

#[test]
fn tiny_limits_never_panic() {
    let limits = Limits {
        rekey_after_time: Duration::from_secs(1),
        reject_after_time: Duration::from_secs(2),
        rekey_timeout: Duration::from_secs(5),
        keepalive_timeout: Duration::from_secs(10),
        rekey_attempt_time: Duration::from_secs(3),
        ..Limits::WIREGUARD
    };
    let mut p = pair_with(limits);
    let t0 = p.t0;
    handshake(&mut p, t0);
    let mut now = t0;
    for _ in 0..40 {
        now += Duration::from_millis(250);
        if let Ok(msg) = data(&mut p.a, now, b"tick") {
            let _ = feed(&mut p.b, now, &msg);
        }
        while let Some(m) = poll(&mut p.a, now) {
            if let OwnedOutcome::Reply(r) = feed(&mut p.b, now, &m) {
                let _ = feed(&mut p.a, now, &r);
            }
        }
        let _ = poll(&mut p.b, now);
        let _ = p.a.poll_timeout();
    }
    let extreme = Limits {
        reject_after_time: Duration::MAX,
        keepalive_timeout: Duration::MAX,
        ..limits
    };
    let mut q = pair_with(extreme);
    let t0 = q.t0;
    handshake(&mut q, t0);
    let msg = data(&mut q.a, t0, b"x").unwrap();
    assert!(matches!(feed(&mut q.b, t0, &msg), OwnedOutcome::Deliver(_)));
    let _ = q.b.poll_timeout();
    let _ = poll(&mut q.b, t0 + Duration::from_secs(1));
}

#[test]
fn malformed_response_counts_as_malformed() {
    let mut p = pair_with(Limits::WIREGUARD);
    let mut bogus = vec![1u8, 2, 0, 0, 0, 0, 0, 9];
    bogus.resize(79, 0);
    assert_eq!(
        feed(&mut p.a, p.t0, &bogus),
        OwnedOutcome::Dropped(DropReason::Malformed)
    );
}

#[test]
fn responder_does_not_initiate_right_after_answering() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    p.a.request_handshake();
    let init = poll(&mut p.a, now).unwrap();
    let OwnedOutcome::Reply(response) = feed(&mut p.b, now, &init) else {
        panic!()
    };
    // B has data before the confirmation arrives: no crossing initiation goes out.
    assert_eq!(data(&mut p.b, now, b"early"), Err(SendError::NoSession));
    assert!(poll(&mut p.b, now).is_none());
    let OwnedOutcome::Reply(confirm) = feed(&mut p.a, now, &response) else {
        panic!()
    };
    assert_eq!(feed(&mut p.b, now, &confirm), OwnedOutcome::Consumed);
    // Confirmed: the request is answered, nothing more is sent later either.
    assert!(poll(&mut p.b, now + Limits::WIREGUARD.rekey_timeout).is_none());
    assert_eq!(p.b.stats().handshake_inits_sent, 0);
}

#[test]
fn unknown_key_flood_prompts_one_initiation_per_rekey_timeout() {
    let mut p = pair_with(Limits::WIREGUARD);
    let t0 = p.t0;
    handshake(&mut p, t0);
    let stale = data(&mut p.a, t0, b"x").unwrap();
    let t1 = t0 + Duration::from_secs(1);
    p.b.restart(t1, Duration::from_secs(1_800_000_001));
    let mut inits = 0;
    let mut now = t1;
    // 1000 junk packets a second for 12 seconds (ignore the real initiator's answers).
    for i in 0..12_000u64 {
        let mut junk = stale.clone();
        junk[8..12].copy_from_slice(&(i as u32).to_be_bytes());
        assert_eq!(
            feed(&mut p.b, now, &junk),
            OwnedOutcome::Dropped(DropReason::UnknownKey)
        );
        while let Some(m) = poll(&mut p.b, now) {
            assert_eq!(m.len(), HANDSHAKE_INIT_LEN);
            inits += 1;
        }
        now += Duration::from_millis(1);
    }
    // At t1, then retransmissions at +5 s and +10 s.
    assert_eq!(inits, 3);
}

/// Drive two sessions through random events and check the driver contract: whenever
/// `poll_timeout` is due, `poll` makes progress, so a driver never spins.
mod no_spin {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Event {
        SendA,
        SendB,
        DeliverNext(bool),
        DropNext,
        Advance(u64),
        RestartB,
        ReinstallB,
        Junk,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            3 => Just(Event::SendA),
            2 => Just(Event::SendB),
            4 => any::<bool>().prop_map(Event::DeliverNext),
            1 => Just(Event::DropNext),
            3 => (1u64..200_000).prop_map(Event::Advance),
            1 => Just(Event::RestartB),
            1 => Just(Event::ReinstallB),
            1 => Just(Event::Junk),
        ]
    }

    /// Call `poll` while it is due, as a driver would; fail if that does not settle.
    fn settle(s: &mut End, now: Instant, out: &mut Vec<Vec<u8>>) -> Result<(), TestCaseError> {
        for _ in 0..20 {
            match s.poll_timeout() {
                Some(due) if due <= now => {}
                _ => return Ok(()),
            }
            if let Some(packet) = poll(s, now) {
                out.push(packet);
            }
        }
        prop_assert!(false, "poll_timeout still due at {:?} after 20 polls", now);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn poll_makes_progress_whenever_due(
            events in prop::collection::vec(event(), 1..120),
            persistent in any::<bool>(),
        ) {
            let mut p = pair_with(Limits::WIREGUARD);
            if persistent {
                p.a.set_persistent_keepalive(Some(Duration::from_secs(25)));
            }
            let mut now = p.t0;
            let mut to_b: Vec<Vec<u8>> = Vec::new();
            let mut to_a: Vec<Vec<u8>> = Vec::new();
            for ev in events {
                match ev {
                    Event::SendA => { if let Ok(m) = data(&mut p.a, now, b"a") { to_b.push(m) } }
                    Event::SendB => { if let Ok(m) = data(&mut p.b, now, b"b") { to_a.push(m) } }
                    Event::DeliverNext(towards_b) => {
                        let (queue, session, back) = if towards_b {
                            (&mut to_b, &mut p.b, &mut to_a)
                        } else {
                            (&mut to_a, &mut p.a, &mut to_b)
                        };
                        if !queue.is_empty() {
                            let m = queue.remove(0);
                            if let OwnedOutcome::Reply(r) = feed(session, now, &m) { back.push(r) }
                        }
                    }
                    Event::DropNext => { if !to_b.is_empty() { to_b.remove(0); } }
                    Event::Advance(ms) => now += Duration::from_millis(ms),
                    Event::RestartB => {
                        let unix = Duration::from_secs(1_800_000_000) + now.duration_since(p.t0);
                        p.b.restart(now, unix);
                    }
                    Event::ReinstallB => {
                        let unix = Duration::from_secs(1_800_000_000) + now.duration_since(p.t0);
                        p.b.reinstall(now, unix);
                    }
                    Event::Junk => {
                        let mut junk = vec![1u8, 3, 0, 0, 0, 0, 0, 20];
                        junk.resize(60, 0x77);
                        let _ = feed(&mut p.b, now, &junk);
                    }
                }
                settle(&mut p.a, now, &mut to_b)?;
                settle(&mut p.b, now, &mut to_a)?;
            }
        }
    }
}

#[test]
fn an_authenticated_close_lifts_the_handshake_rate_limit() {
    let mut p = pair_with(Limits::WIREGUARD);
    let t0 = p.t0;
    handshake(&mut p, t0);
    let mut buf = [0u8; 64];
    let n = p.b.close(t0, &mut buf).unwrap();
    assert_eq!(feed(&mut p.a, t0, &buf[..n]), OwnedOutcome::Closed);
    // A just sent an initiation at t0, yet its next packet may start a new one at once.
    assert_eq!(data(&mut p.a, t0, b"x"), Err(SendError::NoSession));
    assert!(poll(&mut p.a, t0).is_some_and(|m| m.len() == HANDSHAKE_INIT_LEN));
}

fn ping(session: &mut Session, now: Instant, nonce: u64) -> Result<Vec<u8>, SendError> {
    let mut buf = vec![0u8; BUF];
    let n = session.ping(now, &mut buf, nonce)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn ping_is_answered_with_a_pong_of_the_same_nonce_and_size() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    // No keys yet: refused, and a handshake is requested.
    assert_eq!(ping(&mut p.a, now, 1), Err(SendError::NoSession));
    assert!(p.a.poll_timeout().is_some_and(|t| t <= now));
    handshake(&mut p, now);

    let request = ping(&mut p.a, now, 0x0102_0304_0506_0708).unwrap();
    assert_eq!(request.len(), PING_LEN);
    assert_eq!(request[1], PacketType::Ping as u8);
    let OwnedOutcome::Reply(pong) = feed(&mut p.b, now, &request) else {
        panic!("no pong")
    };
    assert_eq!(pong.len(), PING_LEN);
    assert_eq!(pong[1], PacketType::Pong as u8);
    assert_eq!(
        feed(&mut p.a, now, &pong),
        OwnedOutcome::Pong(0x0102_0304_0506_0708)
    );
    // Replayed pong, replayed ping: the replay window refuses both.
    assert_eq!(
        feed(&mut p.a, now, &pong),
        OwnedOutcome::Dropped(DropReason::Replay)
    );
    assert_eq!(
        feed(&mut p.b, now, &request),
        OwnedOutcome::Dropped(DropReason::Replay)
    );
    // Pings are not data: no payload counters, no passive keepalive armed by either.
    assert_eq!((p.a.stats().tx_packets, p.b.stats().rx_packets), (0, 0));
    assert!(poll(&mut p.a, now + Duration::from_secs(11)).is_none());
    assert!(poll(&mut p.b, now + Duration::from_secs(11)).is_none());
}

#[test]
fn forged_pong_and_ping_are_dropped() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    handshake(&mut p, now);
    let request = ping(&mut p.a, now, 7).unwrap();
    let OwnedOutcome::Reply(pong) = feed(&mut p.b, now, &request) else {
        panic!("no pong")
    };
    // A flipped nonce bit in the pong, and one in a ping: the tag does not verify.
    let mut forged = pong.clone();
    forged[TRANSPORT_HEADER_LEN] ^= 1;
    assert_eq!(
        feed(&mut p.a, now, &forged),
        OwnedOutcome::Dropped(DropReason::BadTag)
    );
    let mut forged = ping(&mut p.a, now, 8).unwrap();
    forged[TRANSPORT_HEADER_LEN + 7] ^= 1;
    assert_eq!(
        feed(&mut p.b, now, &forged),
        OwnedOutcome::Dropped(DropReason::BadTag)
    );
    // Truncated and extended pings are malformed.
    assert_eq!(
        feed(&mut p.b, now, &request[..PING_LEN - 1]),
        OwnedOutcome::Dropped(DropReason::Malformed)
    );
    let mut long = request.clone();
    long.push(0);
    assert_eq!(
        feed(&mut p.b, now, &long),
        OwnedOutcome::Dropped(DropReason::Malformed)
    );
    // The genuine pong still arrives.
    assert_eq!(feed(&mut p.a, now, &pong), OwnedOutcome::Pong(7));
}

#[test]
fn an_unanswered_ping_requests_a_handshake() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    handshake(&mut p, now);
    ping(&mut p.a, now, 1).unwrap();
    let limits = Limits::WIREGUARD;
    let later = now + limits.keepalive_timeout + limits.rekey_timeout;
    let init = poll(&mut p.a, later).expect("initiation after an unanswered ping");
    assert_eq!(init.len(), HANDSHAKE_INIT_LEN);
}

#[test]
fn initiations_replayed_into_a_reinstalled_session_are_refused() {
    let mut p = pair_with(Limits::WIREGUARD);
    let t0 = p.t0;
    p.a.request_handshake();
    let older = poll(&mut p.a, t0).unwrap();
    // A second initiation, 5 s later; B sees only this one.
    let t1 = t0 + Limits::WIREGUARD.rekey_timeout;
    let newest = poll(&mut p.a, t1).unwrap();
    assert!(matches!(
        feed(&mut p.b, t1, &newest),
        OwnedOutcome::Reply(_)
    ));
    let unix = |t: Instant| Duration::from_secs(1_800_000_000) + t.duration_since(t0);
    // The attack, as it worked while the memory was the session's: a fresh session with a
    // fresh memory (what a re-install used to be, and what a node restart still is)
    // answers both.
    for replay in [&older, &newest] {
        let keys = p.b.keys().clone();
        let mut forgetful = End::new(keys, b_ids(), Limits::WIREGUARD, t1, unix(t1));
        assert!(matches!(
            feed(&mut forgetful, t1, replay),
            OwnedOutcome::Reply(_)
        ));
    }
    // B's route end is installed again on the same node: its memory of A's key stays.
    let t2 = t1 + Duration::from_secs(1);
    p.b.reinstall(t2, unix(t2));
    for replay in [&newest, &older] {
        assert_eq!(
            feed(&mut p.b, t2, replay),
            OwnedOutcome::Dropped(DropReason::ReplayedHandshake)
        );
    }
    assert_eq!(p.b.stats().drops.get(DropReason::ReplayedHandshake), 2);
    assert_eq!(p.b.stats().handshakes_completed, 0);
    // A's next initiation is newer than anything B's node accepted: honest traffic goes on.
    let t3 = t1 + Limits::WIREGUARD.rekey_timeout;
    let fresh = poll(&mut p.a, t3).unwrap();
    let OwnedOutcome::Reply(response) = feed(&mut p.b, t3, &fresh) else {
        panic!("no response")
    };
    let OwnedOutcome::Reply(confirm) = feed(&mut p.a, t3, &response) else {
        panic!("no confirm")
    };
    assert_eq!(feed(&mut p.b, t3, &confirm), OwnedOutcome::Consumed);
    let msg = data(&mut p.a, t3, b"after").unwrap();
    assert_eq!(
        feed(&mut p.b, t3, &msg),
        OwnedOutcome::Deliver(b"after".to_vec())
    );
}

#[test]
fn an_initiation_for_another_route_between_the_same_keys_is_refused() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    p.a.request_handshake();
    let init = poll(&mut p.a, now).unwrap();
    // B also ends another route from A, which B receives with id 30, on the same node: the
    // same keys, the same memory of A's key.
    let other_ids = RouteIds {
        in_id: id(30),
        ..b_ids()
    };
    let mut other = Session::new(
        p.b.keys().clone(),
        other_ids,
        Limits::WIREGUARD,
        now,
        Duration::from_secs(1_800_000_000),
    );
    let mut buf = init.clone();
    assert_eq!(
        other.decapsulate(now, &mut buf, &mut p.b.peer),
        Outcome::Dropped(DropReason::BadHandshake)
    );
    assert_eq!(other.stats().drops.get(DropReason::BadHandshake), 1);
    // Nothing was remembered: the initiation still completes on its own route.
    assert_eq!(p.b.peer.newest_accepted(), None);
    let OwnedOutcome::Reply(response) = feed(&mut p.b, now, &init) else {
        panic!("refused on its own route")
    };
    // And the response, moved to a route end of A's with other ids, fails there too.
    let mut a_other = Session::new(
        p.a.keys().clone(),
        RouteIds {
            peer_in_id: id(30),
            ..a_ids()
        },
        Limits::WIREGUARD,
        now,
        Duration::from_secs(1_800_000_000),
    );
    a_other.request_handshake();
    let mut scratch = vec![0u8; BUF];
    assert!(a_other.poll(now, &mut scratch, &mut p.a.peer).is_some());
    let mut moved = response.clone();
    assert!(matches!(
        a_other.decapsulate(now, &mut moved, &mut p.a.peer),
        Outcome::Dropped(DropReason::UnexpectedResponse | DropReason::BadHandshake)
    ));
    assert!(matches!(
        feed(&mut p.a, now, &response),
        OwnedOutcome::Reply(_)
    ));
}

#[test]
fn a_peer_flooding_valid_initiations_is_rate_limited_before_any_diffie_hellman() {
    use crate::session::peer::{INITIATION_BURST, INITIATION_INTERVAL};
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    // A's key makes valid initiations for B's route, each with a new timestamp.
    let keys = p.a.keys().clone();
    let binding = RouteBinding {
        initiator_in: a_ids().in_id,
        responder_in: b_ids().in_id,
    };
    let init = |i: u64| {
        let mut buf = vec![0u8; HANDSHAKE_INIT_LEN];
        noise::write_init(&keys, binding, id(10), 1 + i as u32, 1_000 + i, &mut buf).unwrap();
        buf
    };
    let burst = u64::from(INITIATION_BURST);
    for i in 0..burst {
        assert!(
            matches!(feed(&mut p.b, now, &init(i)), OwnedOutcome::Reply(_)),
            "{i}"
        );
    }
    for i in burst..burst + 50 {
        assert_eq!(
            feed(&mut p.b, now, &init(i)),
            OwnedOutcome::Dropped(DropReason::HandshakeRateLimited)
        );
    }
    // Refused before read_init: a forgery with a valid mac1 is refused the same way, not
    // as a bad handshake, so it cost no Diffie-Hellman either.
    let mut forged = init(1000);
    forged[50] ^= 1;
    let mac_key = kdf::derive(kdf::CTX_MAC1, &[p.b.keys().local_public().as_bytes()]);
    let mac = kdf::mac1(&mac_key, crate::wire::mac_input(&forged));
    forged[HANDSHAKE_INIT_LEN - MAC_LEN..].copy_from_slice(&mac);
    assert_eq!(
        feed(&mut p.b, now, &forged),
        OwnedOutcome::Dropped(DropReason::HandshakeRateLimited)
    );
    assert_eq!(p.b.stats().drops.get(DropReason::HandshakeRateLimited), 51);
    // One more per interval after that.
    let later = now + INITIATION_INTERVAL;
    assert!(matches!(
        feed(&mut p.b, later, &init(2000)),
        OwnedOutcome::Reply(_)
    ));
    assert_eq!(
        feed(&mut p.b, later, &init(2001)),
        OwnedOutcome::Dropped(DropReason::HandshakeRateLimited)
    );
}

/// A cookie reply from B's node to the initiation `init`, carrying `cookie`.
fn cookie_reply(p: &Pair, init: &[u8], cookie: &[u8; COOKIE_LEN]) -> Vec<u8> {
    let index = u32::from_be_bytes(init[8..12].try_into().unwrap());
    let mac1: [u8; MAC_LEN] = init[116..132].try_into().unwrap();
    let mut out = vec![0u8; crate::wire::COOKIE_REPLY_LEN];
    let responder = p.a.keys().remote_public();
    cookie::write_reply(&responder, [7; 24], id(20), index, &mac1, cookie, &mut out).unwrap();
    out
}

#[test]
fn a_cookie_reply_puts_mac2_on_the_initiations_of_the_next_two_minutes() {
    let limits = Limits::WIREGUARD;
    let mut p = pair_with(limits);
    let now = p.t0;
    p.a.request_handshake();
    let init = poll(&mut p.a, now).unwrap();
    assert_eq!(init.len(), HANDSHAKE_INIT_LEN);
    let jar = [0x3c; COOKIE_LEN];
    let reply = cookie_reply(&p, &init, &jar);
    assert_eq!(feed(&mut p.a, now, &reply), OwnedOutcome::Consumed);
    assert!(!p.a.is_established(), "a cookie is no handshake");
    // The same reply again is a replay.
    assert_eq!(
        feed(&mut p.a, now, &reply),
        OwnedOutcome::Dropped(DropReason::BadCookieReply)
    );
    // The retry carries mac2 under the cookie, and the responder reads it as ever.
    let later = now + limits.rekey_timeout;
    let retry = poll(&mut p.a, later).unwrap();
    assert_eq!(retry.len(), HANDSHAKE_INIT_MAC2_LEN);
    assert!(cookie::mac2_is_valid(
        &jar,
        &retry[..HANDSHAKE_INIT_LEN],
        &retry[HANDSHAKE_INIT_LEN..].try_into().unwrap()
    ));
    let OwnedOutcome::Reply(response) = feed(&mut p.b, later, &retry) else {
        panic!("a 148-byte initiation is answered");
    };
    assert!(matches!(
        feed(&mut p.a, later, &response),
        OwnedOutcome::Reply(_)
    ));
    assert!(p.a.is_established());
    // Two minutes after it came, the cookie is no longer used.
    let almost = now + COOKIE_LIFETIME - Duration::from_secs(1);
    p.a.request_handshake();
    let again = poll(&mut p.a, almost).unwrap();
    assert_eq!(again.len(), HANDSHAKE_INIT_MAC2_LEN);
    let OwnedOutcome::Reply(response) = feed(&mut p.b, almost, &again) else {
        panic!("answered");
    };
    feed(&mut p.a, almost, &response);
    let expired_at = now + COOKIE_LIFETIME + limits.rekey_timeout;
    p.a.request_handshake();
    let expired = poll(&mut p.a, expired_at).unwrap();
    assert_eq!(expired.len(), HANDSHAKE_INIT_LEN);
}

#[test]
fn cookie_replies_for_other_initiations_or_none_are_refused() {
    let mut p = pair_with(Limits::WIREGUARD);
    let now = p.t0;
    let jar = [0x3c; COOKIE_LEN];
    p.a.request_handshake();
    let init = poll(&mut p.a, now).unwrap();
    // For no initiation of A's: nothing pending at B.
    let to_b = cookie_reply(&p, &init, &jar);
    assert_eq!(
        feed(&mut p.b, now, &to_b),
        OwnedOutcome::Dropped(DropReason::BadCookieReply)
    );
    // Another sender index, another mac1: refused, and the right one still works.
    let mut other = init.clone();
    other[8] ^= 1;
    let wrong_index = cookie_reply(&p, &other, &jar);
    assert_eq!(
        feed(&mut p.a, now, &wrong_index),
        OwnedOutcome::Dropped(DropReason::BadCookieReply)
    );
    let mut forged = init.clone();
    forged[120] ^= 1;
    let wrong_mac1 = cookie_reply(&p, &forged, &jar);
    assert_eq!(
        feed(&mut p.a, now, &wrong_mac1),
        OwnedOutcome::Dropped(DropReason::BadCookieReply)
    );
    let good = cookie_reply(&p, &init, &jar);
    assert_eq!(
        feed(&mut p.a, now, &good[..good.len() - 1]),
        OwnedOutcome::Dropped(DropReason::Malformed)
    );
    assert_eq!(feed(&mut p.a, now, &good), OwnedOutcome::Consumed);
    assert_eq!(p.a.stats().drops.get(DropReason::BadCookieReply), 2);
}
