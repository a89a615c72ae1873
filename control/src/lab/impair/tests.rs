#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::driver::RelayCommand;
use super::settings::MAX_HOLD;
use super::*;

fn settings(text: &str) -> Impairments {
    text.parse().unwrap()
}

/// Feed `count` datagrams (each its number as 8 bytes) going `dir`, one every `gap`, and
/// collect everything sent, with the time it left, until nothing is pending.
fn run(core: &mut Impairer, dir: Dir, count: u64, gap: Duration) -> Vec<(Instant, Vec<u8>)> {
    let start = Instant::now();
    let mut now = start;
    let mut out = Vec::new();
    let drain = |core: &mut Impairer, now: Instant, out: &mut Vec<(Instant, Vec<u8>)>| {
        while let Some(t) = core.poll_transmit(now) {
            assert_eq!(t.dir, dir);
            out.push((now, t.bytes));
        }
    };
    for n in 0..count {
        core.handle_datagram(now, dir, &n.to_be_bytes());
        drain(core, now, &mut out);
        now += gap;
    }
    while let Some(next) = core.poll_timeout() {
        now = now.max(next);
        drain(core, now, &mut out);
    }
    assert_eq!(core.pending(), 0);
    out
}

fn numbers(sent: &[(Instant, Vec<u8>)]) -> Vec<u64> {
    sent.iter()
        .map(|(_, b)| u64::from_be_bytes(b.as_slice().try_into().unwrap()))
        .collect()
}

#[test]
fn no_settings_forward_everything_at_once_in_order() {
    let mut core = Impairer::new(1);
    let sent = run(&mut core, Dir::Forward, 100, Duration::from_millis(1));
    assert_eq!(numbers(&sent), (0..100).collect::<Vec<_>>());
    let r = core.report();
    assert_eq!((r.forward.received, r.forward.sent), (100, 100));
    assert_eq!(r.forward.bytes_sent, 800);
    assert_eq!(r.back, Counters::default());
}

#[test]
fn loss_drops_about_the_share_asked_and_the_rest_in_order() {
    let mut core = Impairer::new(7);
    core.set(Instant::now(), Dir::Forward, settings("loss=20%"));
    let sent = numbers(&run(&mut core, Dir::Forward, 10_000, Duration::ZERO));
    let r = core.report().forward;
    assert_eq!(r.lost + r.sent, 10_000);
    assert!((1800..2200).contains(&r.lost), "lost {}", r.lost);
    assert!(sent.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn the_same_seed_decides_the_same_and_another_seed_differently() {
    let decide = |seed| {
        let mut core = Impairer::new(seed);
        let now = Instant::now();
        core.set(
            now,
            Dir::Back,
            settings("loss=0.3,flip=0.3,dup=0.3,truncate=0.1"),
        );
        (0..500u64)
            .map(|n| core.handle_datagram(now, Dir::Back, &n.to_be_bytes()))
            .collect::<Vec<_>>()
    };
    assert_eq!(decide(42), decide(42));
    assert_ne!(decide(42), decide(43));
}

#[test]
fn directions_draw_independently() {
    let now = Instant::now();
    let mut core = Impairer::new(5);
    core.set(now, Dir::Forward, settings("loss=0.5"));
    core.set(now, Dir::Back, settings("loss=0.5"));
    let forward: Vec<bool> = (0..200)
        .map(|_| core.handle_datagram(now, Dir::Forward, b"x").lost)
        .collect();
    let back: Vec<bool> = (0..200)
        .map(|_| core.handle_datagram(now, Dir::Back, b"x").lost)
        .collect();
    assert_ne!(forward, back);
}

#[test]
fn a_packets_fate_does_not_depend_on_other_settings() {
    // Loss decisions stay the same when flips are added: each draw has its place.
    let now = Instant::now();
    let losses = |extra: &str| {
        let mut core = Impairer::new(9);
        core.set(now, Dir::Forward, settings(&format!("loss=0.1{extra}")));
        (0..300)
            .map(|_| core.handle_datagram(now, Dir::Forward, b"abcd").lost)
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(""), losses(",flip=0.5,dup=0.5"));
    // Nor when `late` is added (drawn after all the others).
    assert_eq!(losses(""), losses(",late=0.5"));
}

#[test]
fn late_datagrams_are_overtaken_by_the_next_ones_and_counted() {
    // 1 % late by 5 ms, one datagram every 100 us: each late one is overtaken by about 50.
    let mut core = Impairer::new(16);
    core.set(Instant::now(), Dir::Forward, settings("late=1%"));
    let sent = run(&mut core, Dir::Forward, 20_000, Duration::from_micros(100));
    let r = core.report().forward;
    assert_eq!((r.received, r.sent), (20_000, 20_000));
    assert!((150..=250).contains(&r.late), "late: {}", r.late);
    assert_eq!(r.delayed, r.late);
    let order = numbers(&sent);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..20_000).collect::<Vec<_>>(), "each sent once");
    // The late ones are exactly those that left after a higher number: a sparse reorder.
    let mut highest = 0;
    let mut overtaken = 0;
    for n in &order {
        if *n < highest {
            overtaken += 1;
        }
        highest = highest.max(*n);
    }
    assert_eq!(overtaken, r.late);
    // `late_by` sets how late.
    let mut core = Impairer::new(16);
    let now = Instant::now();
    core.set(now, Dir::Forward, settings("late=1,late_by=20ms"));
    let decision = core.handle_datagram(now, Dir::Forward, b"x");
    assert!(decision.late);
    assert_eq!(decision.delay_us, 20_000);
    assert!(
        core.poll_transmit(now + Duration::from_millis(19))
            .is_none()
    );
    assert!(
        core.poll_transmit(now + Duration::from_millis(20))
            .is_some()
    );
}

#[test]
fn duplicates_are_exact_copies_counted_once_each() {
    let mut core = Impairer::new(3);
    core.set(Instant::now(), Dir::Forward, settings("dup=10%"));
    let sent = numbers(&run(&mut core, Dir::Forward, 2000, Duration::ZERO));
    let r = core.report().forward;
    assert_eq!(r.sent, 2000 + r.duplicated);
    assert!((150..250).contains(&r.duplicated), "{}", r.duplicated);
    let mut unique = sent.clone();
    unique.dedup();
    assert_eq!(unique, (0..2000).collect::<Vec<_>>());
    assert_eq!(sent.len() as u64 - unique.len() as u64, r.duplicated);
}

#[test]
fn reorder_releases_each_full_hold_as_a_permutation() {
    let mut core = Impairer::new(11);
    core.set(Instant::now(), Dir::Forward, settings("reorder=64"));
    let sent = numbers(&run(&mut core, Dir::Forward, 640, Duration::ZERO));
    assert_eq!(sent.len(), 640);
    for (i, group) in sent.chunks(64).enumerate() {
        let mut sorted = group.to_vec();
        sorted.sort_unstable();
        let base = i as u64 * 64;
        assert_eq!(sorted, (base..base + 64).collect::<Vec<_>>());
        assert_ne!(group, sorted.as_slice(), "hold {i} left in order");
    }
    let r = core.report().forward;
    assert_eq!((r.held, r.holds_released), (640, 10));
}

#[test]
fn a_hold_that_is_not_full_is_released_after_the_timeout() {
    let mut core = Impairer::new(2);
    let start = Instant::now();
    core.set(start, Dir::Forward, settings("reorder=64"));
    for n in 0..5u64 {
        core.handle_datagram(start, Dir::Forward, &n.to_be_bytes());
    }
    assert_eq!(core.poll_transmit(start), None);
    assert_eq!(core.poll_timeout(), Some(start + HOLD_TIMEOUT));
    let later = start + HOLD_TIMEOUT;
    let mut got = Vec::new();
    while let Some(t) = core.poll_transmit(later) {
        got.push(t.bytes);
    }
    assert_eq!(got.len(), 5);

    // A longer wait of its own.
    core.set(later, Dir::Forward, settings("reorder=64,hold=1s"));
    core.handle_datagram(later, Dir::Forward, b"x");
    assert_eq!(core.poll_timeout(), Some(later + Duration::from_secs(1)));
    assert_eq!(core.poll_transmit(later + Duration::from_millis(999)), None);
    assert!(core.poll_transmit(later + Duration::from_secs(1)).is_some());
}

#[test]
fn delay_and_jitter_hold_each_datagram_within_bounds() {
    let mut core = Impairer::new(4);
    let start = Instant::now();
    core.set(start, Dir::Back, settings("delay=10ms,jitter=5ms"));
    for n in 0..200u64 {
        core.handle_datagram(start, Dir::Back, &n.to_be_bytes());
    }
    assert_eq!(
        core.poll_transmit(start + Duration::from_micros(9_999)),
        None
    );
    let mut got = 0;
    let mut now = start;
    while let Some(next) = core.poll_timeout() {
        now = next;
        while core.poll_transmit(now).is_some() {
            got += 1;
        }
    }
    assert_eq!(got, 200);
    assert!(now <= start + Duration::from_millis(15));
    assert_eq!(core.report().back.delayed, 200);
}

#[test]
fn a_flip_changes_exactly_one_bit_and_truncation_shortens() {
    let mut core = Impairer::new(6);
    let now = Instant::now();
    core.set(now, Dir::Forward, settings("flip=1"));
    let original = [0x5Au8; 40];
    for _ in 0..100 {
        let d = core.handle_datagram(now, Dir::Forward, &original);
        let t = core.poll_transmit(now).unwrap();
        let differing: u32 = t
            .bytes
            .iter()
            .zip(original)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(differing, 1);
        let bit = d.flipped_bit.unwrap();
        assert_eq!(t.bytes[bit / 8] ^ original[bit / 8], 0x80 >> (bit % 8));
    }
    core.set(now, Dir::Forward, settings("truncate=1"));
    for _ in 0..100 {
        let d = core.handle_datagram(now, Dir::Forward, &original);
        let t = core.poll_transmit(now).unwrap();
        assert!(t.bytes.len() < original.len());
        assert_eq!(d.truncated_to, Some(t.bytes.len()));
        assert_eq!(t.bytes[..], original[..t.bytes.len()]);
    }
    // An empty datagram can be neither flipped nor cut; it still goes through.
    core.set(now, Dir::Forward, settings("flip=1,truncate=1"));
    let d = core.handle_datagram(now, Dir::Forward, &[]);
    assert_eq!((d.flipped_bit, d.truncated_to), (None, None));
    assert_eq!(core.poll_transmit(now).unwrap().bytes, Vec::<u8>::new());
}

#[test]
fn replays_send_an_earlier_datagram_again() {
    let mut core = Impairer::new(8);
    core.set(Instant::now(), Dir::Forward, settings("replay=0.5"));
    let sent = numbers(&run(&mut core, Dir::Forward, 1000, Duration::ZERO));
    let r = core.report().forward;
    assert!((400..600).contains(&r.replayed), "{}", r.replayed);
    assert_eq!(r.sent, 1000 + r.replayed);
    // Every datagram is sent once in order, each replay is of one sent before it.
    let mut highest = None;
    let mut fresh = Vec::new();
    for n in sent {
        if highest.is_none_or(|h| n > h) {
            highest = Some(n);
            fresh.push(n);
        } else {
            assert!(Some(n) <= highest);
        }
    }
    assert_eq!(fresh, (0..1000).collect::<Vec<_>>());
}

#[test]
fn rate_spaces_datagrams_and_leaves_the_other_direction_alone() {
    let mut core = Impairer::new(13);
    let start = Instant::now();
    core.set(start, Dir::Forward, settings("rate=1000,reorder=100"));
    for n in 0..100u64 {
        core.handle_datagram(start, Dir::Forward, &n.to_be_bytes());
        core.handle_datagram(start, Dir::Back, &n.to_be_bytes());
    }
    let mut forward = Vec::new();
    let mut back = 0;
    let mut now = start;
    while let Some(next) = core.poll_timeout() {
        now = now.max(next);
        while let Some(t) = core.poll_transmit(now) {
            match t.dir {
                Dir::Forward => forward.push(now),
                Dir::Back => back += 1,
            }
        }
    }
    assert_eq!((forward.len(), back), (100, 100));
    assert!(
        forward
            .windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_millis(1))
    );
    assert_eq!(forward[99] - forward[0], Duration::from_millis(99));
}

#[test]
fn everything_at_once_conserves_datagrams() {
    let mut core = Impairer::new(12);
    core.set(
        Instant::now(),
        Dir::Forward,
        settings("loss=5%,dup=5%,reorder=16,delay=1ms,jitter=2ms,replay=2%"),
    );
    let sent = run(&mut core, Dir::Forward, 5000, Duration::from_micros(50));
    let r = core.report().forward;
    assert_eq!(sent.len() as u64, r.sent);
    assert_eq!(r.sent, r.received - r.lost + r.duplicated + r.replayed);
    assert_eq!(r.held, r.sent);
}

#[test]
fn settings_parse_and_print_back() {
    let s = settings(
        " loss=5% , dup=0.1,reorder=64,delay=10ms,jitter=500us,flip=1,truncate=0,replay=1%,rate=5000,hold=1s,late=1%,late_by=7ms ",
    );
    assert_eq!(s.loss, 0.05);
    assert_eq!(s.duplicate, 0.1);
    assert_eq!(s.reorder, 64);
    assert_eq!(s.delay, Duration::from_millis(10));
    assert_eq!(s.jitter, Duration::from_micros(500));
    assert_eq!(s.flip, 1.0);
    assert_eq!(s.replay, 0.01);
    assert_eq!(s.rate, 5000);
    assert_eq!(s.hold, Some(Duration::from_secs(1)));
    assert_eq!(s.late, 0.01);
    assert_eq!(s.late_by, Some(Duration::from_millis(7)));
    assert_eq!(settings(&s.to_string()), s);
    assert_eq!(settings("none"), Impairments::default());
    assert_eq!(settings(""), Impairments::default());
    assert_eq!(Impairments::default().to_string(), "none");
    assert!(settings("delay=10s").delay == Duration::from_secs(10));
}

#[test]
fn bad_settings_are_refused_with_the_key() {
    use SettingsError as E;
    let cases: &[(&str, SettingsError)] = &[
        ("loss", E::NotKeyValue("loss".into())),
        ("lose=1", E::UnknownKey("lose".into())),
        ("loss=1,loss=0", E::Duplicate("loss")),
        ("loss=1.5", E::Probability("loss")),
        ("loss=-0", E::Probability("loss")),
        ("dup=NaN", E::Probability("dup")),
        ("flip=200%", E::Probability("flip")),
        ("delay=10", E::Duration("delay")),
        ("delay=11s", E::Duration("delay")),
        ("jitter=-1ms", E::Duration("jitter")),
        ("delay=99999999999999999999ms", E::Duration("delay")),
        ("reorder=1", E::Hold),
        ("reorder=65537", E::Hold),
        ("reorder=x", E::Hold),
        ("rate=-1", E::Rate),
        ("rate=10000001", E::Rate),
        ("late=2", E::Probability("late")),
        ("late_by=5", E::Duration("late_by")),
        ("late=1%,late=2%", E::Duplicate("late")),
    ];
    for (text, expected) in cases {
        // `-0` parses as a float equal to 0: a probability, so accepted.
        if *text == "loss=-0" {
            assert_eq!(settings(text).loss, 0.0);
            continue;
        }
        assert_eq!(
            text.parse::<Impairments>().as_ref(),
            Err(expected),
            "{text}"
        );
    }
    assert_eq!(Impairments::parse_bytes(&[0xFF]), Err(E::NotUtf8));
}

#[test]
fn commands_parse() {
    assert_eq!(
        "forward loss=1%".parse::<RelayCommand>().unwrap(),
        RelayCommand::Set(Dir::Forward, settings("loss=0.01"))
    );
    assert_eq!(
        "back none".parse::<RelayCommand>().unwrap(),
        RelayCommand::Set(Dir::Back, Impairments::default())
    );
    assert_eq!(
        "report".parse::<RelayCommand>().unwrap(),
        RelayCommand::Report
    );
    assert!("report now".parse::<RelayCommand>().is_err());
    assert!("sideways loss=1".parse::<RelayCommand>().is_err());
    assert!("forward loss=2".parse::<RelayCommand>().is_err());
}

proptest! {
    /// The fuzz target's property: no panic, and whatever parses prints back to the same.
    #[test]
    fn settings_never_panic_and_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(s) = Impairments::parse_bytes(&bytes) {
            prop_assert_eq!(settings(&s.to_string()), s);
        }
    }

    #[test]
    fn settings_made_of_keys_round_trip(
        loss in 0.0f64..=1.0,
        reorder in prop_oneof![Just(0usize), 2usize..=MAX_HOLD],
        delay_ms in 0u64..=10_000,
    ) {
        let text = format!("loss={loss},reorder={reorder},delay={delay_ms}ms");
        let s = settings(&text);
        prop_assert_eq!(s.loss, loss);
        prop_assert_eq!(settings(&s.to_string()), s);
    }
}
