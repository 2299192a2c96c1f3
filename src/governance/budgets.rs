//! Budgets: a spending limit in USD per key or per user over a period (UTC day, ISO week
//! starting Monday, calendar month, or the key's whole life).
//!
//! The check runs before the upstream call against the spend the store knew at the last
//! refresh plus what this replica settled since (so a replica never forgets its own spend
//! between refreshes); the request's cost is settled from its actual usage afterwards.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Week,
    Month,
    Total,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "day" | "daily" => Period::Day,
            "week" | "weekly" => Period::Week,
            "month" | "monthly" => Period::Month,
            "total" | "lifetime" | "all" => Period::Total,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    /// The first UTC day (days since the epoch) of the period containing `now_secs`.
    pub fn start_day(self, now_secs: i64) -> i64 {
        let today = now_secs.div_euclid(86_400);
        match self {
            Period::Day => today,
            // 1970-01-01 was a Thursday: Monday-based weekday = (days + 3) mod 7.
            Period::Week => today - (today + 3).rem_euclid(7),
            Period::Month => {
                let (y, m, _) = civil_from_days(today);
                days_from_civil(y, m, 1)
            }
            Period::Total => i64::MIN / 4,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A budget: at most `limit_usd` per `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub limit_usd: f64,
    pub period: Period,
}

/// Howard Hinnant's days-from-civil (proleptic Gregorian, UTC).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` (UTC midnight) or `YYYY-MM-DDTHH:MM:SSZ` to Unix seconds.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim_end_matches('Z'))),
        None => (s, None),
    };
    let mut it = date.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    if civil_from_days(days) != (y, m, d) {
        return None; // 2027-02-30
    }
    let mut secs = days * 86_400;
    if let Some(t) = time {
        let mut it = t.split(':');
        let h: i64 = it.next()?.parse().ok()?;
        let mi: i64 = it.next().unwrap_or("0").parse().ok()?;
        let se: i64 = it.next().unwrap_or("0").parse().ok()?;
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + se;
    }
    Some(secs)
}

/// Unix seconds to `YYYY-MM-DD HH:MM:SSZ`.
pub fn format_time(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

/// `7d`, `24h`, `30m`, `90s`, `2w` to seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: i64 = s[..split].parse().ok()?;
    let unit = match &s[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_starts() {
        // 2026-11-25 (a Wednesday) 13:00 UTC
        let now = parse_date("2026-11-25T13:00:00Z").unwrap();
        assert_eq!(Period::Day.start_day(now), days_from_civil(2026, 11, 25));
        assert_eq!(Period::Week.start_day(now), days_from_civil(2026, 11, 23));
        assert_eq!(Period::Month.start_day(now), days_from_civil(2026, 11, 1));
        assert!(Period::Total.start_day(now) < 0);
        // A Monday is its own week start; a Sunday belongs to the week before.
        let monday = parse_date("2026-11-23").unwrap();
        assert_eq!(
            Period::Week.start_day(monday),
            days_from_civil(2026, 11, 23)
        );
        let sunday = parse_date("2026-11-29T23:59:59Z").unwrap();
        assert_eq!(
            Period::Week.start_day(sunday),
            days_from_civil(2026, 11, 23)
        );
    }

    #[test]
    fn dates_and_durations() {
        assert_eq!(parse_date("1970-01-02"), Some(86_400));
        assert_eq!(parse_date("2027-01-01"), Some(1_798_761_600));
        assert_eq!(parse_date("2027-02-30"), None);
        assert_eq!(parse_date("soon"), None);
        assert_eq!(format_time(1_798_761_600), "2027-01-01 00:00:00Z");
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("7"), None);
        assert_eq!(Period::parse("Month"), Some(Period::Month));
        assert_eq!(Period::parse("year"), None);
    }
}
