//! The scalars of the config sections, each a newtype parsed from the text as written.
//!
//! Every type here deserializes through `TryFrom<String>` and fails with a [`Problem`], so
//! the parser attaches the line and the key path to the error like any other (see the
//! module docs of `config`). Numbers written without quotes (`in_id: 5`, `mtu: 1420`) reach
//! them as their text. They check one value each; checks that involve several values run
//! after parsing, in the section's module (`node`, `manager`).

use core::fmt;
use core::time::Duration;
use std::net::SocketAddr;

use serde::Deserialize;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::crypto::keys::KeyParseError;
use skywire_dataplane::route::{Prefix, PrefixError};
use skywire_dataplane::wire::RouteId;

use super::error::Problem;
use crate::manager::topology::DEFAULT_MAX_HOPS;

/// The smallest MTU accepted: the IPv4 minimum every host must reassemble.
pub(super) const MIN_MTU: u16 = 576;
/// The largest MTU accepted: a jumbo frame.
pub(super) const MAX_MTU: u16 = 9000;
/// The IPv6 minimum link MTU (RFC 8200); a TUN device with an IPv6 address needs at least
/// this much.
pub(super) const MIN_IPV6_MTU: u16 = 1280;
/// The longest duration accepted. Longer keepalive intervals are pointless (NAT mappings
/// expire in minutes), and the bound keeps `now + interval` far from overflowing.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest interface name Linux accepts (`IFNAMSIZ` minus the NUL).
pub(super) const MAX_INTERFACE_NAME: usize = 15;
/// The bounds of `manager.rule_expiry`. Below 3 seconds a rule would expire on one lost
/// keepalive on a busy path; above an hour a dead route would hold its ids for too long.
pub(super) const MIN_RULE_EXPIRY: Duration = Duration::from_secs(3);
/// See [`MIN_RULE_EXPIRY`].
pub(super) const MAX_RULE_EXPIRY: Duration = Duration::from_secs(60 * 60);
/// The bounds of `manager.setup_timeout`: a hop acknowledges a rule within a round trip, so
/// shorter than 100ms fails on ordinary paths, and longer than 30s only delays the retry.
pub(super) const MIN_SETUP_TIMEOUT: Duration = Duration::from_millis(100);
/// See [`MIN_SETUP_TIMEOUT`].
pub(super) const MAX_SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The bounds of `manager.heartbeat`: faster than 100ms is load without benefit, slower
/// than a minute leaves a dead node in the routes for minutes.
pub(super) const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// See [`MIN_HEARTBEAT`].
pub(super) const MAX_HEARTBEAT: Duration = Duration::from_secs(60);

/// Whether `text` is a whole number as written in a config: ASCII digits only, no sign.
pub(super) fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A port: 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct PortValue(pub(super) u16);

impl TryFrom<String> for PortValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        text.parse::<u16>()
            .ok()
            .filter(|p| *p != 0 && is_digits(&text))
            .map(Self)
            .ok_or(Problem::NotAPort)
    }
}

/// A transport address to bind: any `IP:PORT`, port 0 letting the system pick one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct ListenAddr(pub(super) SocketAddr);

impl TryFrom<String> for ListenAddr {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        text.parse()
            .map(Self)
            .map_err(|_| Problem::NotASocketAddress)
    }
}

/// The transport address of a neighbour: a specific IP and a port other than 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct HopAddr(pub(super) SocketAddr);

impl TryFrom<String> for HopAddr {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        let addr: SocketAddr = text.parse().map_err(|_| Problem::NotASocketAddress)?;
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(Problem::UnspecifiedHopAddress);
        }
        Ok(Self(addr))
    }
}

/// An IP prefix, `10.77.0.0/24`; host bits may be set (`10.77.0.1/24`, an interface's
/// address on its network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct PrefixValue(pub(super) Prefix);

impl TryFrom<String> for PrefixValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        text.parse().map(Self).map_err(|err| match err {
            PrefixError::MissingLength => Problem::PrefixWithoutLength,
            PrefixError::BadAddress => Problem::PrefixBadAddress,
            PrefixError::BadLength => Problem::PrefixBadLength,
        })
    }
}

/// A route id, 1 to `u32::MAX`: 0 means "no route" on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct RouteIdValue(pub(super) RouteId);

impl TryFrom<String> for RouteIdValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        if !is_digits(&text) {
            return Err(Problem::NotARouteId);
        }
        // All digits, so the only way to fail is not fitting in 32 bits.
        let id: u32 = text.parse().map_err(|_| Problem::NotARouteId)?;
        RouteId::new(id).map(Self).ok_or(Problem::RouteIdZero)
    }
}

/// A node's static public key: 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct PublicKeyValue(pub(super) PublicKey);

impl TryFrom<String> for PublicKeyValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        text.parse().map(Self).map_err(|err| match err {
            KeyParseError::Length(_) => Problem::PublicKeyLength,
            KeyParseError::NotHex => Problem::PublicKeyNotHex,
        })
    }
}

/// A peer in a rule: a node's public key, or `any` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct PeerValue(pub(super) Option<PublicKey>);

impl TryFrom<String> for PeerValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        if text == "any" {
            return Ok(Self(None));
        }
        text.parse()
            .map(|k| Self(Some(k)))
            .map_err(|_| Problem::NotAPeer)
    }
}

/// A duration: a whole number and a unit, `500ms`, `25s`, `1m`, `1h`, or a plain number of
/// seconds (`25`). Longer than zero and at most [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct DurationValue(pub(super) Duration);

impl TryFrom<String> for DurationValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        // The smallest unit is a millisecond, so "longer than zero" starts there.
        duration_within(
            &text,
            Duration::from_millis(1),
            MAX_DURATION,
            Problem::DurationOutOfRange,
        )
        .map(Self)
    }
}

/// `manager.rule_expiry`: a duration from [`MIN_RULE_EXPIRY`] to [`MAX_RULE_EXPIRY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct RuleExpiry(pub(super) Duration);

impl TryFrom<String> for RuleExpiry {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        duration_within(
            &text,
            MIN_RULE_EXPIRY,
            MAX_RULE_EXPIRY,
            Problem::RuleExpiryOutOfRange,
        )
        .map(Self)
    }
}

/// `manager.setup_timeout`: a duration from [`MIN_SETUP_TIMEOUT`] to [`MAX_SETUP_TIMEOUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct SetupTimeout(pub(super) Duration);

impl TryFrom<String> for SetupTimeout {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        duration_within(
            &text,
            MIN_SETUP_TIMEOUT,
            MAX_SETUP_TIMEOUT,
            Problem::SetupTimeoutOutOfRange,
        )
        .map(Self)
    }
}

/// `manager.heartbeat`: a duration from [`MIN_HEARTBEAT`] to [`MAX_HEARTBEAT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct Heartbeat(pub(super) Duration);

impl TryFrom<String> for Heartbeat {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        duration_within(
            &text,
            MIN_HEARTBEAT,
            MAX_HEARTBEAT,
            Problem::HeartbeatOutOfRange,
        )
        .map(Self)
    }
}

/// `text` as a duration (see [`DurationValue`] for the forms) from `min` to `max`;
/// [`Problem::NotADuration`] when it is not written as one, `out_of_range` when it is
/// outside the bounds (also when its number is too large to count).
fn duration_within(
    text: &str,
    min: Duration,
    max: Duration,
    out_of_range: Problem,
) -> Result<Duration, Problem> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(Problem::NotADuration),
    };
    if !is_digits(number) {
        return Err(Problem::NotADuration);
    }
    // All digits: failing to parse means too many of them.
    let millis = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .ok_or(out_of_range)?;
    let duration = Duration::from_millis(millis);
    if duration < min || duration > max {
        return Err(out_of_range);
    }
    Ok(duration)
}

/// The largest count a `node.apps` limit takes (streams, listeners).
pub(super) const MAX_COUNT: usize = 1 << 20;
/// The largest size in bytes a `node.apps` size takes (1 TiB).
pub(super) const MAX_BYTES: u64 = 1 << 40;

/// A count of things (`node.apps.streams`): a whole number from 1 to [`MAX_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct CountValue(pub(super) usize);

impl TryFrom<String> for CountValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        if !is_digits(&text) {
            return Err(Problem::CountOutOfRange);
        }
        text.parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_COUNT).contains(n))
            .map(Self)
            .ok_or(Problem::CountOutOfRange)
    }
}

/// A size in bytes (`node.apps.buffer`): a whole number from 1 to [`MAX_BYTES`], without a
/// unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct ByteCount(pub(super) usize);

impl TryFrom<String> for ByteCount {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        if !is_digits(&text) {
            return Err(Problem::ByteCountOutOfRange);
        }
        text.parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_BYTES).contains(n))
            .and_then(|n| usize::try_from(n).ok())
            .map(Self)
            .ok_or(Problem::ByteCountOutOfRange)
    }
}

/// A user or a group as the config names one: a numeric id (all digits, as `chown`
/// reads it) or a name to look up in `/etc/passwd` or `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    /// A uid or gid.
    Id(u32),
    /// A user or group name.
    Name(String),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// The longest user or group name accepted (Linux's `LOGIN_NAME_MAX` is 256 with the NUL).
const MAX_ACCOUNT_NAME: usize = 255;

/// [`Account`] as written: digits are an id (a 32-bit one), anything else a name of 1 to
/// 255 bytes without whitespace, control characters, `:` or `/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct AccountValue(pub(super) Account);

impl TryFrom<String> for AccountValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        if is_digits(&text) {
            return text
                .parse()
                .map(|id| Self(Account::Id(id)))
                .map_err(|_| Problem::NotAnAccount);
        }
        let bad = |c: char| c.is_whitespace() || c.is_control() || c == ':' || c == '/';
        if text.is_empty() || text.len() > MAX_ACCOUNT_NAME || text.chars().any(bad) {
            return Err(Problem::NotAnAccount);
        }
        Ok(Self(Account::Name(text)))
    }
}

/// The most hops a route may have (`min_hops`, `max_hops`), and the default `max_hops`: the
/// route search's own default.
pub const MAX_HOPS: u8 = 16;
const _: () = assert!(MAX_HOPS as usize == DEFAULT_MAX_HOPS);

/// A number of hops on a route the manager computes, 1 to [`MAX_HOPS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct HopCount(pub(super) u8);

impl TryFrom<String> for HopCount {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        if !is_digits(&text) {
            return Err(Problem::HopCountOutOfRange);
        }
        text.parse::<u8>()
            .ok()
            .filter(|hops| (1..=MAX_HOPS).contains(hops))
            .map(Self)
            .ok_or(Problem::HopCountOutOfRange)
    }
}

/// The manager's TCP address as a node dials it: a specific IP and a port other than 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct ManagerAddr(pub(super) SocketAddr);

impl TryFrom<String> for ManagerAddr {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        let addr: SocketAddr = text.parse().map_err(|_| Problem::NotASocketAddress)?;
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(Problem::UnspecifiedManagerAddress);
        }
        Ok(Self(addr))
    }
}

/// A network interface name as Linux accepts it: 1 to 15 bytes of `A-Z a-z 0-9 _ . -`,
/// and not `.` or `..`. (The kernel allows more characters; these are the ones that need
/// no quoting in a shell or in `ip` commands.)
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct InterfaceName(pub(super) String);

impl TryFrom<String> for InterfaceName {
    type Error = Problem;

    fn try_from(name: String) -> Result<Self, Problem> {
        if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
            // Checked on bytes, as the kernel does; a non-ASCII name fails the next check
            // anyway, but a long one should hear about its length first.
            return Err(Problem::InterfaceNameLength);
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
        if !name.bytes().all(allowed) || name == "." || name == ".." {
            return Err(Problem::InterfaceNameCharacters);
        }
        Ok(Self(name))
    }
}

/// A TUN device's MTU, [`MIN_MTU`] to [`MAX_MTU`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct Mtu(pub(super) u16);

impl TryFrom<String> for Mtu {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        if !is_digits(&text) {
            return Err(Problem::MtuOutOfRange);
        }
        text.parse::<u16>()
            .ok()
            .filter(|mtu| (MIN_MTU..=MAX_MTU).contains(mtu))
            .map(Self)
            .ok_or(Problem::MtuOutOfRange)
    }
}

/// A route's name, shown in status output: not empty, no whitespace or control characters,
/// so that it is one word on a line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct RouteName(pub(super) String);

impl TryFrom<String> for RouteName {
    type Error = Problem;

    fn try_from(name: String) -> Result<Self, Problem> {
        if name.is_empty() {
            Err(Problem::EmptyRouteName)
        } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(Problem::RouteNameNotOneWord)
        } else {
            Ok(Self(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: TryFrom<String, Error = Problem>>(text: &str) -> Result<T, Problem> {
        T::try_from(text.to_owned())
    }

    #[test]
    fn addresses() {
        let listen: ListenAddr = parse("0.0.0.0:0").unwrap();
        assert_eq!(listen.0, "0.0.0.0:0".parse().unwrap());
        let hop: HopAddr = parse("[fd00::2]:6000").unwrap();
        assert_eq!(hop.0, "[fd00::2]:6000".parse().unwrap());
        for bad in ["198.18.0.2", "198.18.0.2:", "host:6000", "fd00::2:6000", ""] {
            assert_eq!(
                parse::<HopAddr>(bad),
                Err(Problem::NotASocketAddress),
                "{bad}"
            );
            assert_eq!(
                parse::<ListenAddr>(bad),
                Err(Problem::NotASocketAddress),
                "{bad}"
            );
        }
        for bad in ["0.0.0.0:6000", "[::]:6000", "198.18.0.2:0"] {
            assert_eq!(
                parse::<HopAddr>(bad),
                Err(Problem::UnspecifiedHopAddress),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefixes() {
        let p: PrefixValue = parse("10.77.0.1/24").unwrap();
        assert_eq!(p.0, "10.77.0.1/24".parse().unwrap());
        assert_eq!(parse::<PrefixValue>("fd77::/64").unwrap().0.len(), 64);
        assert_eq!(
            parse::<PrefixValue>("10.0.0.0"),
            Err(Problem::PrefixWithoutLength)
        );
        assert_eq!(
            parse::<PrefixValue>("10.0.0/8"),
            Err(Problem::PrefixBadAddress)
        );
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0.0/x", "10.0.0.0/"] {
            assert_eq!(
                parse::<PrefixValue>(bad),
                Err(Problem::PrefixBadLength),
                "{bad}"
            );
        }
    }

    #[test]
    fn route_ids() {
        assert_eq!(parse::<RouteIdValue>("1").unwrap().0.get(), 1);
        assert_eq!(
            parse::<RouteIdValue>("4294967295").unwrap().0.get(),
            u32::MAX
        );
        assert_eq!(parse::<RouteIdValue>("0"), Err(Problem::RouteIdZero));
        assert_eq!(parse::<RouteIdValue>("000"), Err(Problem::RouteIdZero));
        for bad in ["4294967296", "-1", "+1", "1.0", "0x10", " 1", ""] {
            assert_eq!(
                parse::<RouteIdValue>(bad),
                Err(Problem::NotARouteId),
                "{bad}"
            );
        }
    }

    #[test]
    fn public_keys() {
        let hex = "ab".repeat(32);
        assert_eq!(
            parse::<PublicKeyValue>(&hex).unwrap().0,
            PublicKey::from_bytes([0xab; 32])
        );
        assert_eq!(
            parse::<PublicKeyValue>(&hex[1..]),
            Err(Problem::PublicKeyLength)
        );
        assert_eq!(
            parse::<PublicKeyValue>(&format!("{hex}0")),
            Err(Problem::PublicKeyLength)
        );
        let not_hex = format!("{}zz", &hex[2..]);
        assert_eq!(
            parse::<PublicKeyValue>(&not_hex),
            Err(Problem::PublicKeyNotHex)
        );
    }

    #[test]
    fn durations() {
        let d = |text: &str| parse::<DurationValue>(text).map(|d| d.0);
        assert_eq!(d("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(d("25"), Ok(Duration::from_secs(25)));
        assert_eq!(d("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("24h"), Ok(MAX_DURATION));
        assert_eq!(d("86400"), Ok(MAX_DURATION));
        for bad in ["0", "0s", "0ms", "25h", "86401s", "99999999999999999999h"] {
            assert_eq!(d(bad), Err(Problem::DurationOutOfRange), "{bad}");
        }
        for bad in [
            "", "s", "1.5s", "25 s", "25sec", "-1s", "1m30s", "ms500", "1d",
        ] {
            assert_eq!(d(bad), Err(Problem::NotADuration), "{bad}");
        }
    }

    #[test]
    fn bounded_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse::<RuleExpiry>("3s").map(|d| d.0), Ok(MIN_RULE_EXPIRY));
        assert_eq!(parse::<RuleExpiry>("60m").map(|d| d.0), Ok(MAX_RULE_EXPIRY));
        assert_eq!(parse::<SetupTimeout>("100ms").map(|d| d.0), Ok(ms(100)));
        assert_eq!(parse::<SetupTimeout>("30").map(|d| d.0), Ok(ms(30_000)));
        assert_eq!(parse::<Heartbeat>("100ms").map(|d| d.0), Ok(MIN_HEARTBEAT));
        assert_eq!(parse::<Heartbeat>("1m").map(|d| d.0), Ok(MAX_HEARTBEAT));
        for bad in ["2999ms", "3601s", "2h", "0", "99999999999999999999h"] {
            assert_eq!(
                parse::<RuleExpiry>(bad),
                Err(Problem::RuleExpiryOutOfRange),
                "{bad}"
            );
        }
        for bad in ["99ms", "30001ms", "1m", "0s"] {
            assert_eq!(
                parse::<SetupTimeout>(bad),
                Err(Problem::SetupTimeoutOutOfRange),
                "{bad}"
            );
        }
        for bad in ["99ms", "61s", "2m", "0ms"] {
            assert_eq!(
                parse::<Heartbeat>(bad),
                Err(Problem::HeartbeatOutOfRange),
                "{bad}"
            );
        }
        for bad in ["", "1.5s", "1d", "-1s", "1 s"] {
            assert_eq!(
                parse::<RuleExpiry>(bad),
                Err(Problem::NotADuration),
                "{bad}"
            );
            assert_eq!(
                parse::<SetupTimeout>(bad),
                Err(Problem::NotADuration),
                "{bad}"
            );
            assert_eq!(parse::<Heartbeat>(bad), Err(Problem::NotADuration), "{bad}");
        }
    }

    #[test]
    fn hop_counts() {
        assert_eq!(parse::<HopCount>("1"), Ok(HopCount(1)));
        assert_eq!(parse::<HopCount>("16"), Ok(HopCount(MAX_HOPS)));
        assert_eq!(parse::<HopCount>("016"), Ok(HopCount(16)));
        for bad in ["0", "17", "256", "-1", "+1", "1.0", ""] {
            assert_eq!(
                parse::<HopCount>(bad),
                Err(Problem::HopCountOutOfRange),
                "{bad}"
            );
        }
    }

    #[test]
    fn manager_addresses() {
        let addr: ManagerAddr = parse("[fd00::9]:5999").unwrap();
        assert_eq!(addr.0, "[fd00::9]:5999".parse().unwrap());
        for bad in ["0.0.0.0:5999", "[::]:5999", "127.0.0.1:0"] {
            assert_eq!(
                parse::<ManagerAddr>(bad),
                Err(Problem::UnspecifiedManagerAddress),
                "{bad}"
            );
        }
        for bad in ["127.0.0.1", "manager:5999", ""] {
            assert_eq!(
                parse::<ManagerAddr>(bad),
                Err(Problem::NotASocketAddress),
                "{bad}"
            );
        }
    }

    #[test]
    fn interface_names() {
        for good in ["sky0", "a", "sky_0.v-1", "abcdefghijklmno"] {
            assert_eq!(parse::<InterfaceName>(good).unwrap().0, good);
        }
        for bad in ["", "abcdefghijklmnop"] {
            assert_eq!(
                parse::<InterfaceName>(bad),
                Err(Problem::InterfaceNameLength),
                "{bad}"
            );
        }
        for bad in ["sky 0", "sky/0", "sky:0", ".", "..", "skyé"] {
            assert_eq!(
                parse::<InterfaceName>(bad),
                Err(Problem::InterfaceNameCharacters),
                "{bad}"
            );
        }
    }

    #[test]
    fn mtus() {
        assert_eq!(parse::<Mtu>("576"), Ok(Mtu(576)));
        assert_eq!(parse::<Mtu>("9000"), Ok(Mtu(9000)));
        for bad in ["575", "9001", "70000", "0", "", "1420.0", "-1"] {
            assert_eq!(parse::<Mtu>(bad), Err(Problem::MtuOutOfRange), "{bad}");
        }
    }

    #[test]
    fn counts_and_sizes() {
        assert_eq!(parse::<CountValue>("1"), Ok(CountValue(1)));
        assert_eq!(parse::<CountValue>("1048576"), Ok(CountValue(MAX_COUNT)));
        for bad in [
            "0",
            "1048577",
            "-1",
            "1.5",
            "",
            "1k",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse::<CountValue>(bad),
                Err(Problem::CountOutOfRange),
                "{bad}"
            );
        }
        assert_eq!(parse::<ByteCount>("65536"), Ok(ByteCount(65536)));
        assert_eq!(parse::<ByteCount>("1099511627776"), Ok(ByteCount(1 << 40)));
        for bad in ["0", "1099511627777", "64KiB", "1 MiB", "", "-5"] {
            assert_eq!(
                parse::<ByteCount>(bad),
                Err(Problem::ByteCountOutOfRange),
                "{bad}"
            );
        }
    }

    #[test]
    fn accounts() {
        assert_eq!(parse::<AccountValue>("0").unwrap().0, Account::Id(0));
        assert_eq!(parse::<AccountValue>("1001").unwrap().0, Account::Id(1001));
        assert_eq!(
            parse::<AccountValue>("skywire-apps").unwrap().0,
            Account::Name("skywire-apps".into())
        );
        assert_eq!(
            parse::<AccountValue>("machine$").unwrap().0,
            Account::Name("machine$".into())
        );
        assert_eq!(Account::Name("a".into()).to_string(), "a");
        assert_eq!(Account::Id(7).to_string(), "7");
        let long = "a".repeat(256);
        for bad in ["", "a b", "a:b", "a/b", "a\tb", "4294967296", long.as_str()] {
            assert_eq!(
                parse::<AccountValue>(bad),
                Err(Problem::NotAnAccount),
                "{bad}"
            );
        }
    }

    #[test]
    fn route_names() {
        assert_eq!(parse::<RouteName>("to-c").unwrap().0, "to-c");
        assert_eq!(parse::<RouteName>(""), Err(Problem::EmptyRouteName));
        assert_eq!(
            parse::<RouteName>("to c"),
            Err(Problem::RouteNameNotOneWord)
        );
        assert_eq!(
            parse::<RouteName>("to\nc"),
            Err(Problem::RouteNameNotOneWord)
        );
    }
}
