//! Calendar arithmetic on record time (milliseconds since the Unix epoch): RFC 3339 timestamps
//! for reasons, and the weekday and minute of day at a fixed UTC offset for `change` rules'
//! allowed hours.
//!
//! A few lines of civil-from-days arithmetic (Howard Hinnant's algorithm) instead of a date-time
//! dependency: the rules need nothing else from a calendar, and fixed offsets (no time zones)
//! keep a rule's meaning independent of the host's zone database.

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_MINUTE: i64 = 60_000;

/// Days since 1970-01-01 and the milliseconds into that day, for any `ms` (before the epoch too).
fn split_day(ms: i64) -> (i64, i64) {
    (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY))
}

/// The proleptic Gregorian (year, month 1–12, day 1–31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of a 400-year era's years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are small by construction (1..=31, 1..=12).
    (year, month as u32, day as u32)
}

/// `2026-12-01T03:12:00Z`, with `.123` milliseconds only when there are any.
pub(crate) fn rfc3339(ms: i64) -> String {
    let (days, in_day) = split_day(ms);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        in_day / 3_600_000,
        in_day / MS_PER_MINUTE % 60,
        in_day / 1_000 % 60,
        in_day % 1_000,
    );
    if milli == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
    }
}

/// The local weekday (0 = Monday … 6 = Sunday) and minute of day (0–1439) of `ms` at a fixed
/// offset of `offset_minutes` east of UTC.
pub(crate) fn local_day_and_minute(ms: i64, offset_minutes: i32) -> (u8, u32) {
    let local = ms.saturating_add(i64::from(offset_minutes) * MS_PER_MINUTE);
    let (days, in_day) = split_day(local);
    // 1970-01-01 was a Thursday: index 3 with Monday as 0.
    let weekday = (days + 3).rem_euclid(7);
    // In range by construction: 0..=6 and 0..=1439.
    (weekday as u8, (in_day / MS_PER_MINUTE) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        // A leap day and the turn of a century that is a leap year.
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_094_720_000), "2026-12-01T03:12:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn every_day_of_four_centuries_round_trips_through_the_calendar() {
        // Against a naive model: count days forward month by month.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1900i64, 1u32, 1u32);
        let start = -25_567; // 1900-01-01
        for days in start..start + 146_097 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn weekday_and_minute_follow_the_offset() {
        // 2026-12-01T03:12:00Z is a Tuesday.
        let t = 1_796_094_720_000;
        assert_eq!(local_day_and_minute(t, 0), (1, 3 * 60 + 12));
        assert_eq!(local_day_and_minute(t, 60), (1, 4 * 60 + 12));
        // Five hours west it is still Monday evening.
        assert_eq!(local_day_and_minute(t, -300), (0, 22 * 60 + 12));
        assert!(
            local_day_and_minute(i64::MAX, 60).0 < 7,
            "saturates, never overflows"
        );
    }
}
