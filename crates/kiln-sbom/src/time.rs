//! The one timestamp an SBOM or an attestation carries.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, written as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time (whole seconds).
    pub fn now() -> Timestamp {
        let seconds = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_secs())
                .map(|s| -s)
                .unwrap_or(0),
        };
        Timestamp(seconds)
    }

    /// A `SOURCE_DATE_EPOCH` value: decimal seconds, nothing else. `None` when it is not one
    /// (reproducible-builds.org says to refuse it rather than guess).
    pub fn from_source_date_epoch(value: &str) -> Option<Timestamp> {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        value.parse().ok().map(Timestamp)
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// civil-from-days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Clamp to years 0..=9999 so the text is always a valid RFC 3339 date.
        let seconds = self.0.clamp(-62_167_219_200, 253_402_300_799);
        let days = seconds.div_euclid(86_400);
        let in_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            in_day / 3600,
            in_day % 3600 / 60,
            in_day % 60
        )
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(Timestamp(1_700_000_000).to_string(), "2023-11-14T22:13:20Z");
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59Z");
        assert_eq!(Timestamp(i64::MAX).to_string(), "9999-12-31T23:59:59Z");
        assert_eq!(Timestamp(i64::MIN).to_string(), "0000-01-01T00:00:00Z");
    }

    #[test]
    fn source_date_epoch() {
        assert_eq!(
            Timestamp::from_source_date_epoch("1700000000"),
            Some(Timestamp(1_700_000_000))
        );
        assert_eq!(Timestamp::from_source_date_epoch("-5"), None);
        assert_eq!(Timestamp::from_source_date_epoch("1e9"), None);
        assert_eq!(Timestamp::from_source_date_epoch(""), None);
        assert_eq!(
            Timestamp::from_source_date_epoch("99999999999999999999"),
            None
        );
    }
}
