//! UTC calendar days, for the usage ledger's daily files and `skywire usage --since`, and
//! the log's timestamps: days since 1970-01-01 to and from `YYYY-MM-DD`, in the proleptic
//! Gregorian calendar, without a date library (only these two conversions are needed).

use core::fmt;
use core::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC calendar day, counted from 1970-01-01 (day 0). Days before 1970 do not occur: a
/// clock set before it reads as day 0. In JSON, the text `YYYY-MM-DD`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Day(u32);

impl TryFrom<String> for Day {
    type Error = BadDay;

    fn try_from(s: String) -> Result<Self, BadDay> {
        s.parse()
    }
}

impl From<Day> for String {
    fn from(day: Day) -> Self {
        day.to_string()
    }
}

/// The latest day accepted: 9999-12-31.
const LAST_DAY: u32 = 2_932_896;

impl Day {
    /// The day `days` after 1970-01-01.
    pub const fn from_days(days: u32) -> Self {
        Self(days)
    }

    /// Days since 1970-01-01.
    pub const fn days(self) -> u32 {
        self.0
    }

    /// The UTC day of `at`.
    pub fn of(at: SystemTime) -> Self {
        let secs = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        Self(
            u32::try_from(secs / 86_400)
                .unwrap_or(u32::MAX)
                .min(LAST_DAY),
        )
    }

    /// Today, in UTC.
    pub fn today() -> Self {
        Self::of(SystemTime::now())
    }

    /// The day `n` days before this one (1970-01-01 at the earliest).
    pub fn minus(self, n: u32) -> Self {
        Self(self.0.saturating_sub(n))
    }

    /// The next day.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1).min(LAST_DAY))
    }

    /// Year, month (1-12) and day of the month (1-31).
    pub fn ymd(self) -> (u32, u32, u32) {
        let (y, m, d) = civil_date(u64::from(self.0));
        (
            u32::try_from(y).unwrap_or(u32::MAX),
            u32::try_from(m).unwrap_or(1),
            u32::try_from(d).unwrap_or(1),
        )
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// A text that is not a day as `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date as YYYY-MM-DD (1970-01-01 to 9999-12-31)")]
pub struct BadDay(pub String);

impl FromStr for Day {
    type Err = BadDay;

    fn from_str(s: &str) -> Result<Self, BadDay> {
        let bad = || BadDay(s.to_owned());
        let b = s.as_bytes();
        if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return Err(bad());
        }
        let num = |range: core::ops::Range<usize>| -> Result<u32, BadDay> {
            let part = s.get(range).ok_or_else(bad)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > month_len(year, month) {
            return Err(bad());
        }
        Ok(Self(days_from_civil(year, month, day)))
    }
}

fn month_len(year: u32, month: u32) -> u32 {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a valid date on or after it: the inverse of [`civil_date`],
/// counted the same way (400-year eras starting on 1 March).
fn days_from_civil(year: u32, month: u32, day: u32) -> u32 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year % 400;
    let month_from_march = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).saturating_sub(719_468)
}

/// The proleptic Gregorian date `days` after 1970-01-01: counted in 400-year eras that
/// start on 1 March, so the leap day is the last day of a year and needs no special case.
pub fn civil_date(days: u64) -> (u64, u64, u64) {
    // 1970-01-01 is day 719_468 counted from 0000-03-01.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 is March, 11 is February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_day_from_1970_to_2200_reads_back_as_itself() {
        for days in 0..84_000 {
            let day = Day::from_days(days);
            let text = day.to_string();
            assert_eq!(text.parse::<Day>().unwrap(), day, "{text}");
        }
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // 1970 to 2400: the day after each date is the next date (month and year rolls,
        // leap years by the 4/100/400 rule).
        let leap =
            |y: u64| y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
        let mut prev = civil_date(0);
        assert_eq!(prev, (1970, 1, 1));
        for day in 1..157_000 {
            let (y, m, d) = civil_date(day);
            let (py, pm, pd) = prev;
            let month_len = match pm {
                2 if leap(py) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let want = if pd < month_len {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), want, "day {day}");
            prev = (y, m, d);
        }
    }

    #[test]
    fn known_days() {
        assert_eq!(Day::from_days(0).to_string(), "1970-01-01");
        assert_eq!("2000-02-29".parse::<Day>().unwrap().days(), 11_016);
        assert_eq!(
            "2026-12-06".parse::<Day>().unwrap().to_string(),
            "2026-12-06"
        );
        assert_eq!("9999-12-31".parse::<Day>().unwrap().days(), LAST_DAY);
    }

    #[test]
    fn what_is_not_a_day_is_refused() {
        for bad in [
            "",
            "2026-1-06",
            "2026-13-01",
            "2026-02-29",
            "1900-02-29",
            "1969-12-31",
            "2026-12-00",
            "2026-12-32",
            "+026-12-06",
            "2026/12/06",
            "2026-12-06 ",
            "２０２６-12-06",
        ] {
            assert!(bad.parse::<Day>().is_err(), "{bad:?}");
        }
        assert!("2024-02-29".parse::<Day>().is_ok());
    }
}
