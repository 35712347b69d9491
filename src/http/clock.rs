//! Reading how far an administrator wants the manual clock moved: a process owner's
//! amount (`"3 working days"`, `"2h"`, counted on the default calendar) or an ISO 8601
//! duration (`"PT2H"`, `"P3D"`, `"P1W"`). chrono has no ISO 8601 duration parser and the
//! subset acceptance tests use (weeks, days, hours, minutes, seconds) is a dozen lines, so
//! it is written here rather than pulling in a crate. It only computes instants; moving
//! the clock and firing timers is the handler's.

use chrono::{DateTime, Duration, Utc};

use crate::definition::calendar::Calendar;
use crate::definition::duration::parse_amount;

/// Where the clock lands when moved `by` from `now`.
pub fn advance_target(
    by: &str,
    now: DateTime<Utc>,
    cal: &Calendar,
) -> Result<DateTime<Utc>, String> {
    let by = by.trim();
    if by.starts_with('P') {
        let d = parse_iso(by)?;
        return now
            .checked_add_signed(d)
            .ok_or_else(|| format!("moving the clock by `{by}` goes past the year 262143"));
    }
    let amount = parse_amount(by).map_err(|e| {
        format!("`{by}` is not an amount of time like `3 working days`, `2h` or `PT2H`: {e}")
    })?;
    cal.add(now, &amount)
        .map_err(|e| format!("cannot move the clock by `{by}`: {e}"))
}

/// `PnWnDTnHnMnS` (each part optional, whole numbers, at least one part).
pub fn parse_iso(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not an ISO 8601 duration like `PT2H`, `P3D` or `P1DT12H`");
    let rest = s.strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, t),
        Some(_) => return Err(bad()),
        None => (rest, ""),
    };
    let mut total = Duration::zero();
    let mut any = false;
    for (part, units) in [
        (date, &[('W', 604_800i64), ('D', 86_400)][..]),
        (time, &[('H', 3600), ('M', 60), ('S', 1)][..]),
    ] {
        let mut num = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let pos = units[next_unit..]
                .iter()
                .position(|(u, _)| *u == c)
                .ok_or_else(bad)?;
            let secs = units[next_unit + pos].1;
            next_unit += pos + 1;
            let n: i64 = num.parse().map_err(|_| bad())?;
            num.clear();
            let add = n
                .checked_mul(secs)
                .and_then(Duration::try_seconds)
                .ok_or_else(bad)?;
            total = total.checked_add(&add).ok_or_else(bad)?;
            any = true;
        }
        if !num.is_empty() {
            return Err(bad());
        }
    }
    if any {
        Ok(total)
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations() {
        assert_eq!(parse_iso("PT2H"), Ok(Duration::hours(2)));
        assert_eq!(parse_iso("P3D"), Ok(Duration::days(3)));
        assert_eq!(parse_iso("P1W"), Ok(Duration::days(7)));
        assert_eq!(
            parse_iso("P1DT12H30M5S"),
            Ok(Duration::days(1)
                + Duration::hours(12)
                + Duration::minutes(30)
                + Duration::seconds(5))
        );
        for bad in [
            "P",
            "PT",
            "P1H",
            "PT1D",
            "P1",
            "PTH",
            "P2D1W",
            "P-1D",
            "P1.5D",
            "P99999999999999999999D",
        ] {
            assert!(parse_iso(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn working_days_follow_the_calendar() {
        let cal = Calendar::utc();
        // Friday 2026-11-06 09:00 UTC plus one working day is Monday.
        let fri = DateTime::parse_from_rfc3339("2026-11-06T09:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default();
        let to = advance_target("1 working day", fri, &cal).unwrap_or_default();
        assert_eq!(to.format("%a").to_string(), "Mon");
        assert!(advance_target("soon", fri, &cal).is_err());
    }
}
