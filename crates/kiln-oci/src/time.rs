//! Times in image documents and HTTP answers, parsed with bounds: an image config's
//! `created` (RFC 3339) and an HTTP `Last-Modified` (IMF-fixdate, RFC 850 or asctime) come
//! from registries and servers kiln does not control, so years outside what `jiff` and
//! `httpdate` represent are refused rather than computed with overflowing arithmetic.

/// Seconds since the epoch of an RFC 3339 time (`2024-01-02T03:04:05.123Z`, any UTC offset;
/// fractions of a second are dropped, rounding towards the past). `None` when the text is not
/// one, or its year is outside -9999..=9999.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let timestamp: jiff::Timestamp = text.parse().ok()?;
    let seconds = timestamp.as_second();
    // `as_second` truncates towards zero; a negative time with a fraction is a second earlier.
    if timestamp.subsec_nanosecond() < 0 {
        seconds.checked_sub(1)
    } else {
        Some(seconds)
    }
}

/// Seconds since the epoch as RFC 3339 UTC (`2024-01-02T03:04:05Z`). A time beyond the years
/// -9999..=9999 is written as the nearest one inside them.
pub fn format_rfc3339(seconds: i64) -> String {
    let clamped = seconds.clamp(
        jiff::Timestamp::MIN.as_second(),
        jiff::Timestamp::MAX.as_second(),
    );
    let timestamp = jiff::Timestamp::from_second(clamped).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    // Display is RFC 3339 in UTC, with no fraction for a whole second.
    timestamp.to_string()
}

/// Seconds since the epoch of an HTTP date in any of the three forms HTTP allows
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT`,
/// `Sun Nov  6 08:49:37 1994`); `None` when it is none of them or before 1970.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_secs()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        for t in [0, 1_700_000_000, 951_782_400, -1, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2024-01-02T03:04:05.123456789Z"),
            Some(1_704_164_645)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.5Z"), Some(-1));
        assert_eq!(
            parse_rfc3339("2024-01-02T05:04:05+02:00"),
            Some(1_704_164_645),
            "an offset is applied, not ignored"
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    /// A base image's `created` is registry data: a huge year used to be multiplied
    /// unchecked (a panic with overflow checks, a wrong time without).
    #[test]
    fn rfc3339_years_out_of_range_are_refused() {
        for text in [
            "9223372036854775807-01-01T00:00:00Z",
            "-9223372036854775808-01-01T00:00:00Z",
            "99999999999-12-31T23:59:59Z",
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T25:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
        assert!(format_rfc3339(i64::MAX).starts_with("9999-12-"));
        assert!(format_rfc3339(i64::MIN).starts_with("-009999-"));
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        let want = Some(784_111_777);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), want);
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        assert_eq!(
            parse_http_date("Tue, 01 Jan 2030 00:00:00 GMT"),
            Some(1_893_456_000)
        );
        for bad in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 30 Feb 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "1994-11-06T08:49:37Z",
            "Sun, 06 Nov 99999999999 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }
}
