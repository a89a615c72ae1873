//! The pool's reserved addresses, lease life and saved state, and 100 000 random operations
//! against a naive model.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn a_slash_30_leases_only_its_second_host() {
    let mut pool = Pool::new(p("198.19.128.0/30"), None).unwrap();
    assert_eq!(pool.capacity(), 1);
    assert_eq!(pool.gateway4(), v4("198.19.128.1"));
    let lease = pool.lease(key(1), 0).unwrap();
    assert_eq!(lease.ipv4, v4("198.19.128.2"));
    assert_eq!(lease.ipv6, None);
    assert_eq!(
        pool.lease(key(2), 0),
        Err(PoolError::Exhausted {
            pool: p("198.19.128.0/30"),
            capacity: 1
        })
    );
}

#[test]
fn a_slash_29_leases_two_to_six_and_host_bits_are_ignored() {
    let mut pool = Pool::new(p("10.213.0.5/29"), None).unwrap();
    assert_eq!(pool.ipv4(), p("10.213.0.0/29"));
    let got: Vec<Ipv4Addr> = (1..=5)
        .map(|n| pool.lease(key(n), 0).unwrap().ipv4)
        .collect();
    let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 213, 0, h)).collect();
    assert_eq!(got, want);
    assert!(matches!(
        pool.lease(key(6), 0),
        Err(PoolError::Exhausted { capacity: 5, .. })
    ));
}

#[test]
fn bad_prefixes_are_refused() {
    let v6 = Some(p("fd00:5b::/64"));
    assert_eq!(
        Pool::new(p("10.0.0.0/31"), None).err(),
        Some(PoolError::TooSmall(p("10.0.0.0/31")))
    );
    assert_eq!(
        Pool::new(p("fd00::/64"), None).err(),
        Some(PoolError::NotIpv4(p("fd00::/64")))
    );
    assert_eq!(
        Pool::new(p("10.0.0.0/24"), Some(p("10.1.0.0/24"))).err(),
        Some(PoolError::NotIpv6(p("10.1.0.0/24")))
    );
    assert_eq!(
        Pool::new(p("10.0.0.0/30"), Some(p("fd00::/127"))).err(),
        Some(PoolError::TooSmall(p("fd00::/127")))
    );
    assert!(Pool::new(p("10.0.0.0/30"), Some(p("fd00::/126"))).is_ok());
    assert_eq!(
        Pool::new(p("10.0.0.0/29"), Some(p("fd00::/126"))).err(),
        Some(PoolError::Ipv6Smaller {
            ipv4: p("10.0.0.0/29"),
            ipv6: p("fd00::/126")
        })
    );
    assert!(Pool::new(p("10.0.0.0/24"), Some(p("fd00::/120"))).is_ok());
    assert!(Pool::new(p("10.0.0.0/16"), Some(p("fd00::/120"))).is_err());
    assert!(Pool::new(p("0.0.0.0/0"), v6).is_ok());
    let text = PoolError::TooSmall(p("10.0.0.0/31")).to_string();
    assert!(text.contains("/30"), "{text}");
}

#[test]
fn ipv6_uses_the_same_host_number() {
    let mut pool = Pool::new(p("198.19.128.0/24"), Some(p("fd00:5b::/64"))).unwrap();
    assert_eq!(pool.gateway6(), Some("fd00:5b::1".parse().unwrap()));
    for n in 1..=10 {
        pool.lease(key(n), 0).unwrap();
    }
    let lease = pool.lease(key(11), 0).unwrap();
    assert_eq!(lease.ipv4, v4("198.19.128.12"));
    assert_eq!(lease.ipv6, Some("fd00:5b::c".parse().unwrap()));
    let mut small = Pool::new(p("10.0.0.0/30"), Some(p("fd00:1::/126"))).unwrap();
    assert_eq!(
        small.lease(key(1), 0).unwrap().ipv6,
        Some("fd00:1::2".parse().unwrap())
    );
}

#[test]
fn holders_grace_and_expiry() {
    let mut pool = Pool::new(p("10.0.0.0/29"), None).unwrap();
    let first = pool.lease(key(1), 100).unwrap();
    // A reconnect before the old stream ended: two holders, the same address.
    assert_eq!(pool.lease(key(1), 105).unwrap(), first);
    assert_eq!(
        pool.drop_holder(&key(1), 106),
        Some(LeaseState::Held {
            holders: 1,
            since: 100
        })
    );
    assert_eq!(
        pool.drop_holder(&key(1), 110),
        Some(LeaseState::Grace { since: 110 })
    );
    // Another drop changes nothing; an unknown key has no state.
    assert_eq!(
        pool.drop_holder(&key(1), 111),
        Some(LeaseState::Grace { since: 110 })
    );
    assert_eq!(pool.drop_holder(&key(9), 111), None);
    assert!(pool.expire(230, 120).is_empty());
    // Back within the grace: the same address, held again.
    assert_eq!(pool.lease(key(1), 200).unwrap(), first);
    pool.drop_holder(&key(1), 300);
    assert_eq!(pool.expire(420, 120), []);
    assert_eq!(pool.expire(421, 120), [first]);
    assert!(pool.is_empty());
    assert_eq!(pool.get(&key(1)), None);
}

#[test]
fn never_used_addresses_first_then_least_recently_released() {
    let mut pool = Pool::new(p("10.0.0.0/29"), None).unwrap();
    let a = pool.lease(key(1), 0).unwrap();
    let b = pool.lease(key(2), 0).unwrap();
    pool.release(&key(2));
    pool.release(&key(1));
    // .4, .5, .6 were never used: they come before b's and a's.
    for n in 3..=5 {
        let lease = pool.lease(key(n), 0).unwrap();
        assert_eq!(lease.ipv4, Ipv4Addr::new(10, 0, 0, n + 1));
    }
    assert_eq!(pool.lease(key(6), 0).unwrap().ipv4, b.ipv4);
    assert_eq!(pool.lease(key(7), 0).unwrap().ipv4, a.ipv4);
    assert_eq!(pool.release(&key(42)), None);
}

#[test]
fn state_round_trips_through_json_and_loads_in_grace() {
    let mut pool = Pool::new(p("10.0.0.0/28"), Some(p("fd00:5b::/64"))).unwrap();
    for n in 1..=4 {
        pool.lease(key(n), 10).unwrap();
    }
    pool.release(&key(3));
    pool.release(&key(1));
    let state = pool.to_state();
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.contains(&key(2).to_string()), "{json}");
    let back: PoolState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);

    let mut loaded =
        Pool::from_state(p("10.0.0.0/28"), Some(p("fd00:5b::/64")), back, 500).unwrap();
    let entries: Vec<(Lease, LeaseState)> = loaded.leases().collect();
    assert_eq!(entries.len(), 2);
    for (lease, state) in &entries {
        assert_eq!(*state, LeaseState::Grace { since: 500 });
        assert_eq!(Some(*lease), pool.get(&lease.key).map(|(l, _)| l));
    }
    // The never-used addresses still come first, then the freed ones in their order.
    assert_eq!(loaded.lease(key(10), 500).unwrap().ipv4, v4("10.0.0.6"));
    for _ in 7..=14 {
        loaded.lease(key(11 + loaded.len() as u8), 500).unwrap();
    }
    assert_eq!(loaded.lease(key(50), 500).unwrap().ipv4, v4("10.0.0.4"));
    assert_eq!(loaded.lease(key(51), 500).unwrap().ipv4, v4("10.0.0.2"));
    assert!(loaded.lease(key(52), 500).is_err());
}

#[test]
fn loading_drops_what_does_not_fit() {
    let record = |n: u8, ip: &str| LeaseRecord {
        key: key(n),
        ipv4: v4(ip),
        ipv6: None,
    };
    let state = PoolState {
        leases: vec![
            record(1, "10.0.0.2"),
            record(2, "10.0.0.2"), // the address again
            record(1, "10.0.0.3"), // the key again
            record(3, "10.0.1.9"), // outside the pool
            record(4, "10.0.0.1"), // the gateway
            record(5, "10.0.0.7"), // broadcast
            record(6, "10.0.0.0"), // network
            record(7, "10.0.0.6"),
        ],
        free: vec![
            v4("10.0.0.6"),
            v4("10.0.0.4"),
            v4("10.0.0.4"),
            v4("8.8.8.8"),
        ],
    };
    let mut pool = Pool::from_state(p("10.0.0.0/29"), None, state, 7).unwrap();
    let keys: Vec<PublicKey> = pool.leases().map(|(l, _)| l.key).collect();
    assert_eq!(keys, [key(1), key(7)]);
    assert_eq!(pool.get(&key(1)).unwrap().0.ipv4, v4("10.0.0.2"));
    // Never used: .3 and .5; then the freed .4.
    let next: Vec<Ipv4Addr> = (20..23)
        .map(|n| pool.lease(key(n), 7).unwrap().ipv4)
        .collect();
    assert_eq!(next, [v4("10.0.0.3"), v4("10.0.0.5"), v4("10.0.0.4")]);
    assert!(pool.lease(key(23), 7).is_err());
    // A smaller pool now: the saved leases outside it go.
    let state = PoolState {
        leases: vec![record(1, "10.0.0.2"), record(2, "10.0.0.6")],
        free: vec![],
    };
    let pool = Pool::from_state(p("10.0.0.0/30"), None, state, 0).unwrap();
    assert_eq!(pool.len(), 1);
    let bad = r#"{"leases":[{"key":"zz","ipv4":"10.0.0.2"}]}"#;
    assert!(serde_json::from_str::<PoolState>(bad).is_err());
}

#[test]
fn ula_prefixes() {
    let a = ula_for(&key(1));
    let b = ula_for(&key(2));
    assert_eq!(a.len(), 64);
    assert_eq!(a, ula_for(&key(1)));
    assert_ne!(a, b);
    assert!(p("fd00::/8").contains(a.addr()));
    assert_eq!(a.network(), a.addr());
    assert!(Pool::new(p("10.0.0.0/8"), Some(a)).is_ok());
}

/// xorshift64*: a seeded generator, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The pool as plainly as it can be written: a list of addresses, a set of the used ones,
/// and a list of the freed ones in order.
struct Model {
    addresses: Vec<Ipv4Addr>,
    entries: BTreeMap<PublicKey, (Ipv4Addr, LeaseState)>,
    used: HashSet<Ipv4Addr>,
    free: Vec<Ipv4Addr>,
}

impl Model {
    fn lease(&mut self, key: PublicKey, now: u64) -> Option<Ipv4Addr> {
        if let Some((addr, state)) = self.entries.get_mut(&key) {
            *state = match *state {
                LeaseState::Held { holders, since } => LeaseState::Held {
                    holders: holders + 1,
                    since,
                },
                LeaseState::Grace { .. } => LeaseState::Held {
                    holders: 1,
                    since: now,
                },
            };
            return Some(*addr);
        }
        let addr = match self.addresses.iter().find(|a| !self.used.contains(a)) {
            Some(&a) => a,
            None if !self.free.is_empty() => self.free.remove(0),
            None => return None,
        };
        self.used.insert(addr);
        self.entries.insert(
            key,
            (
                addr,
                LeaseState::Held {
                    holders: 1,
                    since: now,
                },
            ),
        );
        Some(addr)
    }

    fn drop_holder(&mut self, key: &PublicKey, now: u64) {
        if let Some((_, state)) = self.entries.get_mut(key)
            && let LeaseState::Held { holders, since } = *state
        {
            *state = if holders == 1 {
                LeaseState::Grace { since: now }
            } else {
                LeaseState::Held {
                    holders: holders - 1,
                    since,
                }
            };
        }
    }

    fn release(&mut self, key: &PublicKey) {
        if let Some((addr, _)) = self.entries.remove(key) {
            self.free.push(addr);
        }
    }

    fn expire(&mut self, now: u64, grace: u64) -> Vec<PublicKey> {
        let mut due: Vec<(u64, PublicKey)> = self
            .entries
            .iter()
            .filter_map(|(k, (_, s))| match s {
                LeaseState::Grace { since } if now - since > grace => Some((*since, *k)),
                _ => None,
            })
            .collect();
        due.sort();
        for (_, k) in &due {
            self.release(k);
        }
        due.into_iter().map(|(_, k)| k).collect()
    }

    fn restart(&mut self, now: u64) {
        for (_, state) in self.entries.values_mut() {
            *state = LeaseState::Grace { since: now };
        }
    }
}

#[test]
fn random_operations_match_the_model() {
    let prefix = p("198.19.128.8/29");
    let mut pool = Pool::new(prefix, Some(p("fd00:5b::/120"))).unwrap();
    let mut model = Model {
        addresses: (2..=6)
            .map(|h| Ipv4Addr::new(198, 19, 128, 8 + h))
            .collect(),
        entries: BTreeMap::new(),
        used: HashSet::new(),
        free: Vec::new(),
    };
    let keys: Vec<PublicKey> = (1..=9).map(key).collect();
    let mut rng = Rng(0x5eed_0014_0000_0001);
    let mut now = 1_000u64;
    let (mut granted, mut exhausted, mut expired, mut restarts) = (0, 0, 0, 0);
    for step in 0..100_000 {
        let k = keys[rng.below(keys.len() as u64) as usize];
        match rng.below(100) {
            0..40 => {
                let want = model.lease(k, now);
                let got = pool.lease(k, now);
                match (&got, want) {
                    (Ok(lease), Some(addr)) => {
                        granted += 1;
                        assert_eq!(lease.ipv4, addr, "step {step}");
                        assert_eq!(lease.key, k);
                        let host = u128::from(u32::from(addr) - 0xc613_8008);
                        assert_eq!(lease.ipv6, Some(Ipv6Addr::from((0xfd00_005b << 96) + host)));
                    }
                    (Err(PoolError::Exhausted { .. }), None) => exhausted += 1,
                    _ => panic!("step {step}: pool {got:?}, model {want:?}"),
                }
            }
            40..65 => {
                model.drop_holder(&k, now);
                pool.drop_holder(&k, now);
            }
            65..72 => {
                model.release(&k);
                pool.release(&k);
            }
            72..82 => {
                let grace = rng.below(30);
                let want = model.expire(now, grace);
                let got: Vec<PublicKey> = pool.expire(now, grace).iter().map(|l| l.key).collect();
                expired += got.len();
                assert_eq!(got, want, "step {step}");
            }
            82..98 => now += rng.below(10),
            _ => {
                let json = serde_json::to_vec(&pool.to_state()).unwrap();
                let state = serde_json::from_slice(&json).unwrap();
                pool = Pool::from_state(prefix, Some(p("fd00:5b::/120")), state, now).unwrap();
                model.restart(now);
                restarts += 1;
            }
        }
        let got: Vec<(PublicKey, Ipv4Addr, LeaseState)> =
            pool.leases().map(|(l, s)| (l.key, l.ipv4, s)).collect();
        let want: Vec<(PublicKey, Ipv4Addr, LeaseState)> = model
            .entries
            .iter()
            .map(|(k, (a, s))| (*k, *a, *s))
            .collect();
        assert_eq!(got, want, "step {step}");
        let distinct: HashSet<Ipv4Addr> = got.iter().map(|(_, a, _)| *a).collect();
        assert_eq!(
            distinct.len(),
            got.len(),
            "step {step}: an address held twice"
        );
        assert!(got.len() <= 5);
    }
    // The run exercised every path.
    assert!(granted > 10_000 && exhausted > 100 && expired > 1_000 && restarts > 100);
}
