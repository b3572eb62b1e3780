//! Lenient timestamps: shops and payloads write times in many forms.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Values above this are taken as milliseconds rather than seconds
/// (1e11 seconds is the year 5138; 1e11 milliseconds is 1973).
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// Unix seconds from an integer that may be seconds or milliseconds.
pub fn seconds_from_number(n: i64) -> i64 {
    if n.abs() >= MILLIS_THRESHOLD {
        n.div_euclid(1000)
    } else {
        n
    }
}

/// Parses a time into Unix seconds. Accepts Unix seconds or milliseconds (as text
/// or a number), RFC 3339 (`2014-04-25T16:15:47Z`), SQLite's `2024-01-02 03:04:05`
/// (UTC), the same with an offset (`2019-10-01 10:00:00 +0800`) and a bare date.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i64>() {
        return Some(seconds_from_number(n));
    }
    if let Ok(f) = s.parse::<f64>() {
        return f.is_finite().then(|| seconds_from_number(f.floor() as i64));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f %z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.timestamp());
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y/%m/%d %H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Now, Unix milliseconds.
pub fn now_ms() -> i64 {
    manirec_store::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_a_shop_writes_is_understood() {
        let t = 1_398_442_547; // 2014-04-25T16:15:47Z
        assert_eq!(parse_timestamp("2014-04-25T16:15:47Z"), Some(t));
        assert_eq!(parse_timestamp("2014-04-25T18:15:47+02:00"), Some(t));
        assert_eq!(parse_timestamp("2014-04-25 16:15:47"), Some(t));
        assert_eq!(parse_timestamp("2014-04-26 00:15:47 +0800"), Some(t));
        assert_eq!(parse_timestamp("2014-04-25T16:15:47.250Z"), Some(t));
        assert_eq!(parse_timestamp("1398442547"), Some(t));
        assert_eq!(parse_timestamp("1398442547123"), Some(t));
        assert_eq!(parse_timestamp(" 1398442547.9 "), Some(t));
        assert_eq!(parse_timestamp("2014-04-25"), Some(1_398_384_000));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "yesterday", "2014-13-45", "NaN", "12:00"] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
