//! The impairments of one direction as text, `loss=5%,dup=0.1,reorder=64,delay=10ms`, parsed
//! into [`Impairments`] at the edge (the command line, the relay's stdin) and printed back
//! in the same form.
//!
//! Keys (each at most once, in any order, separated by commas; `none` or an empty string
//! is no impairment at all):
//!
//! | key        | value                         | what happens to a datagram            |
//! |------------|-------------------------------|---------------------------------------|
//! | `loss`     | probability                   | dropped                               |
//! | `dup`      | probability                   | sent twice                            |
//! | `reorder`  | count K, 2..=65536            | held until K are held, sent shuffled  |
//! | `hold`     | duration                      | a hold not full is sent after this long without a new datagram (default 20 ms) |
//! | `delay`    | duration                      | sent that much later                  |
//! | `jitter`   | duration                      | plus a uniform extra in `0..=jitter`  |
//! | `flip`     | probability                   | one random bit inverted               |
//! | `truncate` | probability                   | cut to a random shorter length        |
//! | `replay`   | probability                   | followed by an earlier datagram again |
//! | `rate`     | datagrams a second, 1..=10^7  | leaves no sooner than 1/rate after the previous one |
//! | `late`     | probability                   | sent `late_by` later than its delay says: the datagrams behind it overtake it |
//! | `late_by`  | duration                      | how much later a `late` datagram goes (default 5 ms) |
//!
//! A probability is a number in `0..=1` or a percentage (`5%`); a duration is a whole
//! number with `us`, `ms` or `s` and at most 10 s. The parser takes untrusted text and
//! never panics (fuzzed through [`Impairments::parse_bytes`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// The largest `reorder` hold: more would only hold memory.
pub const MAX_HOLD: usize = 65_536;
/// The highest `rate`, datagrams a second.
pub const MAX_RATE: u32 = 10_000_000;
/// The longest `delay` or `jitter`.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// How much later a `late` datagram goes unless `late_by` says otherwise: long enough for
/// the next datagrams of a busy stream to overtake it, short enough not to look lost.
pub const LATE_BY: Duration = Duration::from_millis(5);

/// What to do to the datagrams of one direction; the default does nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairments {
    /// Probability of dropping a datagram.
    pub loss: f64,
    /// Probability of sending a datagram twice.
    pub duplicate: f64,
    /// Hold this many datagrams and release them in a shuffled order (0: no reordering).
    pub reorder: usize,
    /// How long a hold that is not full waits for its next datagram before it is released
    /// anyway (`None`: [`super::HOLD_TIMEOUT`]).
    pub hold: Option<Duration>,
    /// Fixed delay of every datagram.
    pub delay: Duration,
    /// Upper bound of a uniform extra delay per datagram (which reorders too).
    pub jitter: Duration,
    /// Probability of inverting one random bit.
    pub flip: f64,
    /// Probability of cutting a datagram to a random shorter length (0 included).
    pub truncate: f64,
    /// Probability of sending an earlier datagram of the same direction again after this one.
    pub replay: f64,
    /// At most this many datagrams a second leave (0: no limit).
    pub rate: u32,
    /// Probability of sending a datagram `late_by` later than the others: a sparse
    /// reordering (`late=1%` reorders about 1 % of a busy stream), unlike `reorder`,
    /// which shuffles every datagram.
    pub late: f64,
    /// How much later a `late` datagram goes (`None`: [`LATE_BY`]).
    pub late_by: Option<Duration>,
}

/// Why a settings string was refused; the key is named where there is one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    /// An item without `=`.
    #[error("`{0}`: expected KEY=VALUE")]
    NotKeyValue(String),
    /// A key this relay does not know.
    #[error(
        "unknown key `{0}` (known: loss, dup, reorder, hold, delay, jitter, flip, truncate, replay, rate, late, late_by)"
    )]
    UnknownKey(String),
    /// A key given twice.
    #[error("`{0}` given twice")]
    Duplicate(&'static str),
    /// Not a probability in 0..=1 (or 0%..=100%).
    #[error("{0}: not a probability (0..=1 or 0%..=100%)")]
    Probability(&'static str),
    /// Not a duration such as `10ms`, or over the limit.
    #[error("{0}: not a duration of at most 10 s (`500us`, `10ms`, `1s`)")]
    Duration(&'static str),
    /// A hold count outside 2..=65536 (0 turns reordering off).
    #[error("reorder: a count of 2..=65536, or 0")]
    Hold,
    /// A rate outside 1..=10 000 000 (0 turns the limit off).
    #[error("rate: datagrams a second, 1..=10000000, or 0")]
    Rate,
    /// Bytes that are not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
}

impl Impairments {
    /// Whether nothing is impaired.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }

    /// [`FromStr`] on bytes: the entry point of a fuzz target (`fuzz/` can call it with the
    /// fuzzer's input as it is; it must never panic, and whatever it accepts prints back to
    /// text that parses to the same value).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, SettingsError> {
        std::str::from_utf8(bytes)
            .map_err(|_| SettingsError::NotUtf8)?
            .parse()
    }
}

/// A probability: `0.05` or `5%`.
fn probability(key: &'static str, text: &str) -> Result<f64, SettingsError> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(number) => (number, 100.0),
        None => (text, 1.0),
    };
    let value = number
        .parse::<f64>()
        .map_err(|_| SettingsError::Probability(key))?
        / scale;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        // NaN lands here too.
        Err(SettingsError::Probability(key))
    }
}

/// A duration: `500us`, `10ms`, `2s`.
fn duration(key: &'static str, text: &str) -> Result<Duration, SettingsError> {
    let (number, unit): (&str, fn(u64) -> Duration) = if let Some(n) = text.strip_suffix("us") {
        (n, Duration::from_micros)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, Duration::from_millis)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, Duration::from_secs)
    } else {
        return Err(SettingsError::Duration(key));
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SettingsError::Duration(key));
    }
    let value = number
        .parse::<u64>()
        .map_err(|_| SettingsError::Duration(key))?;
    let value = unit(value.min(MAX_DELAY.as_micros() as u64 + 1));
    if value <= MAX_DELAY {
        Ok(value)
    } else {
        Err(SettingsError::Duration(key))
    }
}

impl FromStr for Impairments {
    type Err = SettingsError;

    fn from_str(text: &str) -> Result<Self, SettingsError> {
        let text = text.trim();
        let mut out = Impairments::default();
        if text.is_empty() || text == "none" {
            return Ok(out);
        }
        let mut seen = [false; 12];
        for item in text.split(',') {
            let (key, value) = item
                .trim()
                .split_once('=')
                .ok_or_else(|| SettingsError::NotKeyValue(item.trim().to_owned()))?;
            let (key, value) = (key.trim(), value.trim());
            let (index, name) = match key {
                "loss" => (0, "loss"),
                "dup" => (1, "dup"),
                "reorder" => (2, "reorder"),
                "delay" => (3, "delay"),
                "jitter" => (4, "jitter"),
                "flip" => (5, "flip"),
                "truncate" => (6, "truncate"),
                "replay" => (7, "replay"),
                "rate" => (8, "rate"),
                "hold" => (9, "hold"),
                "late" => (10, "late"),
                "late_by" => (11, "late_by"),
                other => return Err(SettingsError::UnknownKey(other.to_owned())),
            };
            let Some(slot) = seen.get_mut(index) else {
                return Err(SettingsError::UnknownKey(key.to_owned()));
            };
            if *slot {
                return Err(SettingsError::Duplicate(name));
            }
            *slot = true;
            match name {
                "loss" => out.loss = probability(name, value)?,
                "dup" => out.duplicate = probability(name, value)?,
                "reorder" => {
                    let hold = value.parse::<usize>().map_err(|_| SettingsError::Hold)?;
                    if hold == 1 || hold > MAX_HOLD {
                        return Err(SettingsError::Hold);
                    }
                    out.reorder = hold;
                }
                "delay" => out.delay = duration(name, value)?,
                "jitter" => out.jitter = duration(name, value)?,
                "hold" => out.hold = Some(duration(name, value)?),
                "late" => out.late = probability(name, value)?,
                "late_by" => out.late_by = Some(duration(name, value)?),
                "flip" => out.flip = probability(name, value)?,
                "truncate" => out.truncate = probability(name, value)?,
                "rate" => {
                    let rate = value.parse::<u32>().map_err(|_| SettingsError::Rate)?;
                    if rate > MAX_RATE {
                        return Err(SettingsError::Rate);
                    }
                    out.rate = rate;
                }
                _ => out.replay = probability(name, value)?,
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Impairments {
    /// The settings in the parser's syntax, only the keys that are set (`none` for none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        let mut probability = |key: &str, p: f64| {
            if p > 0.0 {
                items.push(format!("{key}={p}"));
            }
        };
        probability("loss", self.loss);
        probability("dup", self.duplicate);
        if self.reorder > 0 {
            items.push(format!("reorder={}", self.reorder));
        }
        if let Some(hold) = self.hold {
            items.push(format!("hold={}us", hold.as_micros()));
        }
        if !self.delay.is_zero() {
            items.push(format!("delay={}us", self.delay.as_micros()));
        }
        if !self.jitter.is_zero() {
            items.push(format!("jitter={}us", self.jitter.as_micros()));
        }
        let mut probability = |key: &str, p: f64| {
            if p > 0.0 {
                items.push(format!("{key}={p}"));
            }
        };
        probability("flip", self.flip);
        probability("truncate", self.truncate);
        probability("replay", self.replay);
        if self.rate > 0 {
            items.push(format!("rate={}", self.rate));
        }
        if self.late > 0.0 {
            items.push(format!("late={}", self.late));
        }
        if let Some(late_by) = self.late_by {
            items.push(format!("late_by={}us", late_by.as_micros()));
        }
        if items.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&items.join(","))
        }
    }
}
