//! Working-day calendars: the `calendars/<id>.toml` file model (what a process owner edits
//! when next year's holidays are announced), the checks on it, and the working-time
//! arithmetic the deadline scheduler uses to turn `3 working days` into an instant.
//!
//! Nothing here reads the clock (DESIGN invariant 4): every function takes the instant it
//! starts from. Nothing here panics on a calendar or an amount written by a person: date
//! arithmetic is checked and reports [`TimeError::OutOfRange`].
//!
//! # Semantics
//!
//! All arithmetic happens in the calendar's time zone.
//!
//! - **Working day**: a day that is not a weekend day and not a holiday, or that is listed in
//!   `extra_working_days` (an extra working day wins over a holiday; `check` reports that
//!   conflict as an error anyway). A working day has the calendar's `working_hours`, or the
//!   whole day when it has none.
//! - **`N working days`** is not N×24 business hours: it is the *same local time* on the N-th
//!   following working day (opened Tue 15:00 → Wed 15:00; Fri 15:00 → Mon 15:00; if Mon is a
//!   holiday, Tue 15:00). A start outside working time (evening, weekend, holiday, before
//!   the day's start) first rolls forward to the start of the next working period and counts
//!   from there (Sat 10:00 + 1 working day → Tue 08:30 with hours 08:30–17:30).
//! - **`N working hours`** counts only real elapsed time inside working periods
//!   (Fri 16:30 + 2 working hours with 08:30–17:30 → Mon 09:30). Reaching exactly the end of
//!   a period gives that end (Fri 16:30 + 1 working hour → Fri 17:30).
//! - **Counting backwards** (`2 working days before audit_date`, reminders) mirrors this: a
//!   time outside working time first rolls back to the end of the previous working period,
//!   then steps back over working days keeping that local time. So 2 working days before
//!   Monday 00:00 is Wednesday 17:30 (with hours 08:30–17:30) or Thursday 00:00 (without).
//! - **Minutes and hours** are exact elapsed time: `24h` across a DST change is 24 real
//!   hours. **Days and weeks** are calendar days: the same local wall-clock time N days later.
//!   **Months and years** are calendar months: the same day of the month, or the last day of
//!   a shorter month (Jan 31 + 1 month → Feb 28, or 29 in a leap year).
//! - **Dates** (`2027-01-31`, a date field holding `2027-01-31`) mean the start (00:00) of
//!   that day in the calendar's zone. Date-times without an offset are local to the calendar.
//! - **DST**: a local time that does not exist (spring forward) moves forward to the first
//!   valid instant (02:30 on 2026-03-29 in Berlin → 03:00 CEST); an ambiguous one (fall back)
//!   takes the earlier of its two instants. Gap detection works to the minute, which covers
//!   every transition in the tz database since 1970.
//! - An amount of zero (`0h`, `0 working days`) always means the starting instant itself.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{
    DateTime, Datelike, Days, MappedLocalTime, Months, NaiveDate, NaiveDateTime, NaiveTime,
    TimeDelta, TimeZone, Timelike, Utc,
};
use chrono_tz::{Tz, TZ_VARIANTS};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::diagnostic::{did_you_mean, Diagnostic};
use super::duration::{Amount, Due, FixedTime, ParseError, Unit};
use super::source::{ptr, SpannedDoc};

// ---------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------

/// A working-day calendar: which days are working days, and when work happens on them.
/// Deadlines written in working days or working hours (`3 working days`) are counted with it.
/// Each file under `calendars/` holds one calendar; procedures name it with `calendar`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sopflow calendar")]
pub struct CalendarFile {
    /// Identifier of the calendar: the file name without `.toml` (`default`, `shanghai`).
    /// Procedures refer to it by this name.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_-]*$"), length(max = 64))]
    pub id: String,

    /// Human title ("Shanghai office, 2026–2027").
    #[schemars(length(min = 1))]
    pub title: String,

    /// Time zone the working days and hours are in, as an IANA name: `Asia/Shanghai`,
    /// `Europe/Berlin`, `America/New_York`. Defaults to `UTC`.
    #[serde(default = "default_timezone")]
    pub timezone: String,

    /// Days of the week nobody works, in lower case. Defaults to `["saturday", "sunday"]`.
    #[serde(default = "default_weekend")]
    pub weekend: Vec<Weekday>,

    /// When work happens on a working day. Without it, a working day counts whole
    /// (from midnight to midnight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_hours: Option<WorkingHours>,

    /// Public holidays and company closures: days that are not working days even though
    /// they are not weekend days. Give `date` for one day, or `from` and `to` for several
    /// days in a row (both included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<Holiday>,

    /// Weekend days that are working days this time (make-up working days, as announced
    /// with the Chinese public holidays).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_working_days: Vec<ExtraWorkingDay>,

    /// Years whose holidays are provisional: entered before the official arrangement was
    /// published. `sopflow validate` reminds you to replace them while they lie ahead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provisional: Vec<i32>,
}

fn default_timezone() -> String {
    "UTC".to_string()
}

fn default_weekend() -> Vec<Weekday> {
    vec![Weekday::Saturday, Weekday::Sunday]
}

pub(crate) fn date_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "format": "date",
        "description": "A date, written `2027-01-01`."
    })
}

/// A day of the week.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    pub fn from_chrono(d: chrono::Weekday) -> Self {
        match d {
            chrono::Weekday::Mon => Weekday::Monday,
            chrono::Weekday::Tue => Weekday::Tuesday,
            chrono::Weekday::Wed => Weekday::Wednesday,
            chrono::Weekday::Thu => Weekday::Thursday,
            chrono::Weekday::Fri => Weekday::Friday,
            chrono::Weekday::Sat => Weekday::Saturday,
            chrono::Weekday::Sun => Weekday::Sunday,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Weekday::Monday => "Monday",
            Weekday::Tuesday => "Tuesday",
            Weekday::Wednesday => "Wednesday",
            Weekday::Thursday => "Thursday",
            Weekday::Friday => "Friday",
            Weekday::Saturday => "Saturday",
            Weekday::Sunday => "Sunday",
        }
    }
}

/// Start and end of the working day, as `HH:MM` in the calendar's time zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkingHours {
    /// When work starts, `08:30`.
    #[schemars(regex(pattern = r"^[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?$"))]
    pub start: String,
    /// When work ends, `17:30`. Must be later than `start` on the same day.
    #[schemars(regex(pattern = r"^[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?$"))]
    pub end: String,
}

/// A holiday: one `date`, or the days `from` … `to` (both included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Holiday {
    /// The day of a one-day holiday, `2027-01-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_schema")]
    pub date: Option<NaiveDate>,
    /// First day of a holiday of several days, `2027-10-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_schema")]
    pub from: Option<NaiveDate>,
    /// Last day of a holiday of several days (included), `2027-10-07`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_schema")]
    pub to: Option<NaiveDate>,
    /// What the holiday is ("National Day").
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A weekend day that is a working day this time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtraWorkingDay {
    /// The day, `2027-10-09`.
    #[schemars(schema_with = "date_schema")]
    pub date: NaiveDate,
    /// Why ("make-up day for National Day").
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Longest holiday range accepted: longer is surely a typo in a year.
const MAX_HOLIDAY_DAYS: i64 = 366;

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Checks a calendar file beyond its schema. `file_stem` is the file name without `.toml`.
///
/// Codes: `calendar-id-mismatch`, `unknown-timezone`, `bad-working-hours`, `bad-holiday`,
/// `bad-holiday-range`, `holiday-and-working-day`, `no-working-day` (errors);
/// `duplicate-date`, `duplicate-weekday`, `redundant-working-day` (warnings).
/// Whether the calendar knows the holidays of every year from `today` to twelve months on:
/// a year without any holiday listed is taken as not entered yet (every real calendar has
/// some), and a year marked `provisional` is named as such. `sopflow validate` runs this with
/// the current date; the file checks above do not depend on the date.
pub fn check_coverage(cal: &CalendarFile, doc: &SpannedDoc, today: NaiveDate) -> Vec<Diagnostic> {
    // The twelve months starting today: up to the day before the same date next year.
    let until = today
        .checked_add_months(chrono::Months::new(12))
        .and_then(|d| d.pred_opt())
        .unwrap_or(today);
    let listed = |year: i32| {
        cal.holidays.iter().any(|h| {
            [h.date, h.from, h.to]
                .into_iter()
                .flatten()
                .any(|d| d.year() == year)
        })
    };
    let mut out = Vec::new();
    let missing: Vec<i32> = (today.year()..=until.year())
        .filter(|y| !listed(*y))
        .collect();
    if !missing.is_empty() {
        out.push(
            Diagnostic::warning(
                "calendar-not-covering",
                format!(
                    "the calendar `{}` lists no holidays for {} — working-day deadlines up to {until} would count them as ordinary working days",
                    cal.id,
                    missing.iter().map(i32::to_string).collect::<Vec<_>>().join(" and ")
                ),
            )
            .at(doc.key_span("/holidays"))
            .help("add the year's holidays (and make-up working days); if the official arrangement is not published yet, enter the statutory dates and add the year to `provisional`"),
        );
    }
    let ahead: Vec<i32> = cal
        .provisional
        .iter()
        .copied()
        .filter(|y| (today.year()..=until.year()).contains(y))
        .collect();
    if !ahead.is_empty() {
        out.push(
            Diagnostic::warning(
                "calendar-provisional",
                format!(
                    "the holidays of {} in `{}` are provisional: deadlines in those months are counted on dates that may still change",
                    ahead.iter().map(i32::to_string).collect::<Vec<_>>().join(" and "),
                    cal.id
                ),
            )
            .at(doc.key_span("/provisional"))
            .help("replace them with the official arrangement when it is published, then remove the year from `provisional`"),
        );
    }
    out
}

pub fn check(cal: &CalendarFile, doc: &SpannedDoc, file_stem: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();

    if cal.id != file_stem {
        out.push(
            Diagnostic::error(
                "calendar-id-mismatch",
                format!(
                    "the calendar id `{}` does not match its file name `{file_stem}.toml`",
                    cal.id
                ),
            )
            .at(doc.value_span("/id"))
            .label("procedures find the calendar by its file name")
            .help(format!(
                "change the id to `{file_stem}`, or rename the file to `{}.toml`",
                cal.id
            )),
        );
    }

    if let Err(e) = parse_timezone(&cal.timezone) {
        let span = doc
            .value_span("/timezone")
            .filter(|_| doc.contains("/timezone"));
        let mut d = Diagnostic::error("unknown-timezone", e.message).at(span);
        if let Some(h) = e.help {
            d = d.help(h);
        }
        out.push(d);
    }

    let mut seen_days = BTreeSet::new();
    for (i, day) in cal.weekend.iter().enumerate() {
        if !seen_days.insert(*day) {
            out.push(
                Diagnostic::warning(
                    "duplicate-weekday",
                    format!("{} is listed twice in `weekend`", day.name()),
                )
                .at(doc.value_span(&ptr(&["weekend", &i.to_string()])))
                .label("listed before")
                .help("remove the second one"),
            );
        }
    }
    if seen_days.len() == Weekday::ALL.len() {
        out.push(
            Diagnostic::error("no-working-day", "every day of the week is a weekend day")
                .at(doc.value_span("/weekend"))
                .label("no working day is left")
                .help("list only the days nobody works, usually `[\"saturday\", \"sunday\"]`"),
        );
    }

    if let Some(h) = &cal.working_hours {
        let start = parse_clock(&h.start);
        let end = parse_clock(&h.end);
        for (key, text, parsed) in [("start", &h.start, start), ("end", &h.end, end)] {
            if parsed.is_none() {
                out.push(
                    Diagnostic::error(
                        "bad-working-hours",
                        format!("`{text}` is not a time of day"),
                    )
                    .at(doc.value_span(&ptr(&["working_hours", key])))
                    .label("here")
                    .help("write times as `HH:MM` on a 24-hour clock, like `08:30` or `17:30`"),
                );
            }
        }
        if let (Some(s), Some(e)) = (start, end) {
            if s >= e {
                out.push(
                    Diagnostic::error(
                        "bad-working-hours",
                        format!("work ends at {} but starts at {}", h.end, h.start),
                    )
                    .at(doc.value_span("/working_hours/end"))
                    .label("must be later than `start`")
                    .help(
                        "working hours must start and end on the same day, like `08:30` to `17:30`",
                    ),
                );
            }
        }
    }

    // date -> pointer of the entry that listed it first
    let mut holiday_at: BTreeMap<NaiveDate, String> = BTreeMap::new();
    for (i, h) in cal.holidays.iter().enumerate() {
        let base = ptr(&["holidays", &i.to_string()]);
        let days = match holiday_days(h) {
            Ok(days) => days,
            Err(e) => {
                let (code, key) = match e {
                    CalendarError::BadHoliday { .. } => ("bad-holiday", ""),
                    _ => ("bad-holiday-range", "/to"),
                };
                let message = match &e {
                    CalendarError::BadHoliday { .. } => format!(
                        "the holiday \"{}\" needs either `date`, or both `from` and `to`",
                        h.name
                    ),
                    _ => e.to_string(),
                };
                out.push(
                    Diagnostic::error(code, message)
                        .at(doc.value_span(&format!("{base}{key}")))
                        .label("here")
                        .help(
                            "write `{ date = 2027-01-01, name = \"New Year\" }` or \
                             `{ from = 2027-10-01, to = 2027-10-07, name = \"National Day\" }`",
                        ),
                );
                continue;
            }
        };
        for d in days {
            if let Some(first) = holiday_at.get(&d) {
                let first_name = first.clone();
                out.push(
                    Diagnostic::warning(
                        "duplicate-date",
                        format!("{d} is already a holiday ({first_name})"),
                    )
                    .at(doc.value_span(&base))
                    .label("listed again here")
                    .help("remove the repeated day, or shorten one of the ranges"),
                );
                break;
            }
            holiday_at.insert(d, h.name.clone());
        }
    }

    let weekend: BTreeSet<Weekday> = cal.weekend.iter().copied().collect();
    let mut extra_seen = BTreeSet::new();
    for (i, x) in cal.extra_working_days.iter().enumerate() {
        let at = doc.value_span(&ptr(&["extra_working_days", &i.to_string(), "date"]));
        if !extra_seen.insert(x.date) {
            out.push(
                Diagnostic::warning(
                    "duplicate-date",
                    format!("{} is listed twice as an extra working day", x.date),
                )
                .at(at.clone())
                .label("listed again here")
                .help("remove the second one"),
            );
            continue;
        }
        if let Some(name) = holiday_at.get(&x.date) {
            out.push(
                Diagnostic::error(
                    "holiday-and-working-day",
                    format!(
                        "{} is both a holiday ({name}) and an extra working day ({})",
                        x.date, x.name
                    ),
                )
                .at(at)
                .label("also a holiday")
                .help("keep it in only one of `holidays` and `extra_working_days`"),
            );
            continue;
        }
        let wd = Weekday::from_chrono(x.date.weekday());
        if !weekend.contains(&wd) {
            out.push(
                Diagnostic::warning(
                    "redundant-working-day",
                    format!(
                        "{} is a {}, which is a working day anyway",
                        x.date,
                        wd.name()
                    ),
                )
                .at(at)
                .label("not a weekend day")
                .help("extra working days are for weekend days; check the date"),
            );
        }
    }
    out
}

/// A time zone by its IANA name, with "did you mean" for near misses.
pub fn parse_timezone(name: &str) -> Result<Tz, ParseError> {
    if let Ok(tz) = name.parse::<Tz>() {
        return Ok(tz);
    }
    let default_help =
        "use an IANA time zone name such as `Asia/Shanghai`, `Europe/Berlin` or `UTC`";
    if name.trim().is_empty() {
        return Err(ParseError {
            message: "the time zone is empty".into(),
            at: None,
            help: Some(default_help.into()),
        });
    }
    let help = if let Some(tz) = TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(name.trim()))
    {
        format!(
            "did you mean `{}`? Time zone names are case-sensitive",
            tz.name()
        )
    } else if let Some(best) = did_you_mean(name, TZ_VARIANTS.iter().map(|tz| tz.name())) {
        format!("did you mean `{best}`?")
    } else {
        default_help.to_string()
    };
    Err(ParseError {
        message: format!("`{name}` is not a time zone sopflow knows"),
        at: None,
        help: Some(help),
    })
}

/// `08:30`, `8:30` or `08:30:00` → a time of day.
pub fn parse_clock(s: &str) -> Option<NaiveTime> {
    let mut parts = s.trim().split(':');
    let h = parts.next()?;
    let m = parts.next()?;
    let sec = parts.next();
    if parts.next().is_some()
        || !(1..=2).contains(&h.len())
        || m.len() != 2
        || sec.is_some_and(|s| s.len() != 2)
    {
        return None;
    }
    let num = |p: &str| -> Option<u32> {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse().ok()
        } else {
            None
        }
    };
    NaiveTime::from_hms_opt(num(h)?, num(m)?, sec.map_or(Some(0), num)?)
}

/// The days of one holiday entry.
fn holiday_days(h: &Holiday) -> Result<Vec<NaiveDate>, CalendarError> {
    let (from, to) = match (h.date, h.from, h.to) {
        (Some(d), None, None) => (d, d),
        (None, Some(f), Some(t)) => (f, t),
        _ => {
            return Err(CalendarError::BadHoliday {
                name: h.name.clone(),
            })
        }
    };
    if from > to {
        return Err(CalendarError::HolidayRange {
            name: h.name.clone(),
            problem: format!("ends ({to}) before it begins ({from})"),
        });
    }
    if to.signed_duration_since(from).num_days() >= MAX_HOLIDAY_DAYS {
        return Err(CalendarError::HolidayRange {
            name: h.name.clone(),
            problem: format!("is longer than a year ({from} to {to})"),
        });
    }
    Ok(from.iter_days().take_while(|d| *d <= to).collect())
}

// ---------------------------------------------------------------------------------------------
// The compiled calendar
// ---------------------------------------------------------------------------------------------

/// Why a calendar file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CalendarError {
    #[error("`{0}` is not a time zone sopflow knows")]
    UnknownTimezone(String),
    #[error("the working hours are not valid: {0}")]
    BadWorkingHours(String),
    #[error("every day of the week is a weekend day, so there is no working day")]
    NoWorkingDay,
    #[error("the holiday \"{name}\" needs either `date`, or both `from` and `to`")]
    BadHoliday { name: String },
    #[error("the holiday \"{name}\" {problem}")]
    HolidayRange { name: String, problem: String },
}

/// Why a time could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimeError {
    #[error("the time is outside the range of dates sopflow can work with")]
    OutOfRange,
    #[error("the calendar has no working day within reach")]
    NoWorkingDay,
    #[error("the data field `{0}` has no value")]
    MissingField(String),
    #[error("the data field `{field}` holds `{value}`, which is not a date or a date and time")]
    NotADate { field: String, value: String },
}

/// A calendar ready for arithmetic (see the module documentation for the exact rules).
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    id: String,
    tz: Tz,
    /// Indexed by days from Monday.
    weekend: [bool; 7],
    holidays: BTreeMap<NaiveDate, String>,
    extra: BTreeSet<NaiveDate>,
    /// Start and end of work as offsets from local midnight; `None` means the whole day.
    hours: Option<(TimeDelta, TimeDelta)>,
}

fn since_midnight(t: NaiveTime) -> TimeDelta {
    t.signed_duration_since(NaiveTime::MIN)
}

impl Calendar {
    /// Compiles a calendar file. Rejects what `check` reports as errors, except a wrong id
    /// and a day that is both a holiday and an extra working day (the extra day wins here,
    /// so a calendar the loader already reported on still computes something sensible).
    pub fn from_file(file: &CalendarFile) -> Result<Calendar, CalendarError> {
        let tz = file
            .timezone
            .parse::<Tz>()
            .map_err(|_| CalendarError::UnknownTimezone(file.timezone.clone()))?;
        let mut weekend = [false; 7];
        for d in &file.weekend {
            let i = usize::try_from(chrono_weekday(*d).num_days_from_monday()).unwrap_or(0);
            if let Some(slot) = weekend.get_mut(i) {
                *slot = true;
            }
        }
        if weekend.iter().all(|w| *w) {
            return Err(CalendarError::NoWorkingDay);
        }
        let hours = match &file.working_hours {
            None => None,
            Some(h) => {
                let bad = |t: &str| CalendarError::BadWorkingHours(format!("`{t}` is not HH:MM"));
                let s = parse_clock(&h.start).ok_or_else(|| bad(&h.start))?;
                let e = parse_clock(&h.end).ok_or_else(|| bad(&h.end))?;
                if s >= e {
                    return Err(CalendarError::BadWorkingHours(format!(
                        "work ends at {} but starts at {}",
                        h.end, h.start
                    )));
                }
                Some((since_midnight(s), since_midnight(e)))
            }
        };
        let mut holidays = BTreeMap::new();
        for h in &file.holidays {
            for d in holiday_days(h)? {
                holidays.entry(d).or_insert_with(|| h.name.clone());
            }
        }
        let extra = file.extra_working_days.iter().map(|x| x.date).collect();
        Ok(Calendar {
            id: file.id.clone(),
            tz,
            weekend,
            holidays,
            extra,
            hours,
        })
    }

    /// A calendar in UTC with Saturday and Sunday off, no holidays and whole working days:
    /// what plain durations need when a procedure names no calendar.
    pub fn utc() -> Calendar {
        let mut weekend = [false; 7];
        weekend[5] = true;
        weekend[6] = true;
        Calendar {
            id: "utc".to_string(),
            tz: Tz::UTC,
            weekend,
            holidays: BTreeMap::new(),
            extra: BTreeSet::new(),
            hours: None,
        }
    }

    /// The same calendar read in another time zone (a schedule's own `timezone`).
    pub fn in_zone(&self, tz: Tz) -> Calendar {
        Calendar { tz, ..self.clone() }
    }

    /// The `k`-th run of a schedule that first runs at `first` and repeats `every`
    /// (`k = 0` is `first`). Always counted from the first run, never from the previous one,
    /// so a monthly schedule starting on 31 January runs on 28 February and then 31 March,
    /// not 28 March.
    pub fn occurrence(
        &self,
        first: DateTime<Utc>,
        every: &Amount,
        k: u32,
    ) -> Result<DateTime<Utc>, TimeError> {
        let n = every.n.checked_mul(k).ok_or(TimeError::OutOfRange)?;
        self.add(first, &Amount::new(n, every.unit))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Whether work happens on this (local) day.
    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        if self.extra.contains(&d) {
            return true;
        }
        let i = usize::try_from(d.weekday().num_days_from_monday()).unwrap_or(0);
        !self.weekend.get(i).copied().unwrap_or(false) && !self.holidays.contains_key(&d)
    }

    /// The name of the holiday on this day, if it is one.
    pub fn holiday(&self, d: NaiveDate) -> Option<&str> {
        self.holidays.get(&d).map(String::as_str)
    }

    /// The instant of a local wall-clock time in this calendar's zone; a time skipped by a
    /// DST change moves forward to the first valid instant, an ambiguous one takes the
    /// earlier instant.
    pub fn local_to_utc(&self, t: NaiveDateTime) -> Result<DateTime<Utc>, TimeError> {
        match self.tz.from_local_datetime(&t) {
            MappedLocalTime::Single(x) | MappedLocalTime::Ambiguous(x, _) => Ok(x.to_utc()),
            MappedLocalTime::None => {
                // Walk forward minute by minute; the longest gap on record is a day (Samoa,
                // 2011-12-30), so two days is a safe bound.
                let mut c = t
                    .with_second(0)
                    .and_then(|c| c.with_nanosecond(0))
                    .ok_or(TimeError::OutOfRange)?;
                for _ in 0..(2 * 24 * 60) {
                    c = c
                        .checked_add_signed(TimeDelta::minutes(1))
                        .ok_or(TimeError::OutOfRange)?;
                    if let Some(x) = self.tz.from_local_datetime(&c).earliest() {
                        return Ok(x.to_utc());
                    }
                }
                Err(TimeError::OutOfRange)
            }
        }
    }

    /// The instant a fixed time means in this calendar (dates: start of the day).
    pub fn at(&self, t: &FixedTime) -> Result<DateTime<Utc>, TimeError> {
        match t {
            FixedTime::Date(d) => self.local_to_utc(d.and_time(NaiveTime::MIN)),
            FixedTime::Local(t) => self.local_to_utc(*t),
            FixedTime::Exact(t) => Ok(t.to_utc()),
        }
    }

    /// `from` plus an amount of any unit.
    pub fn add(&self, from: DateTime<Utc>, amount: &Amount) -> Result<DateTime<Utc>, TimeError> {
        self.shift(from, amount, true)
    }

    /// `from` minus an amount of any unit (`3 days before audit_date`, reminders).
    pub fn subtract(
        &self,
        from: DateTime<Utc>,
        amount: &Amount,
    ) -> Result<DateTime<Utc>, TimeError> {
        self.shift(from, amount, false)
    }

    fn shift(
        &self,
        from: DateTime<Utc>,
        amount: &Amount,
        forward: bool,
    ) -> Result<DateTime<Utc>, TimeError> {
        let n = amount.n;
        if n == 0 {
            return Ok(from);
        }
        let exact = |d: Option<TimeDelta>| {
            let d = d.ok_or(TimeError::OutOfRange)?;
            let r = if forward {
                from.checked_add_signed(d)
            } else {
                from.checked_sub_signed(d)
            };
            r.ok_or(TimeError::OutOfRange)
        };
        match amount.unit {
            Unit::Minutes => exact(TimeDelta::try_minutes(i64::from(n))),
            Unit::Hours => exact(TimeDelta::try_hours(i64::from(n))),
            Unit::Days => self.shift_days(from, u64::from(n), forward),
            Unit::Weeks => self.shift_days(from, u64::from(n).saturating_mul(7), forward),
            Unit::Months => self.shift_months(from, n, forward),
            Unit::Years => self.shift_months(
                from,
                n.checked_mul(12).ok_or(TimeError::OutOfRange)?,
                forward,
            ),
            Unit::WorkingDays if forward => self.add_working_days(from, n),
            Unit::WorkingDays => self.subtract_working_days(from, n),
            Unit::WorkingHours if forward => self.add_working_hours(from, n),
            Unit::WorkingHours => self.subtract_working_hours(from, n),
        }
    }

    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.tz).naive_local()
    }

    fn shift_days(
        &self,
        from: DateTime<Utc>,
        n: u64,
        forward: bool,
    ) -> Result<DateTime<Utc>, TimeError> {
        let local = self.local(from);
        let r = if forward {
            local.checked_add_days(Days::new(n))
        } else {
            local.checked_sub_days(Days::new(n))
        };
        self.local_to_utc(r.ok_or(TimeError::OutOfRange)?)
    }

    fn shift_months(
        &self,
        from: DateTime<Utc>,
        n: u32,
        forward: bool,
    ) -> Result<DateTime<Utc>, TimeError> {
        let local = self.local(from);
        // chrono clamps to the month's last day: Jan 31 + 1 month = Feb 28/29.
        let r = if forward {
            local.checked_add_months(Months::new(n))
        } else {
            local.checked_sub_months(Months::new(n))
        };
        self.local_to_utc(r.ok_or(TimeError::OutOfRange)?)
    }

    fn start_of_work(&self) -> TimeDelta {
        self.hours.map_or(TimeDelta::zero(), |(s, _)| s)
    }

    fn end_of_work(&self) -> TimeDelta {
        self.hours.map_or(TimeDelta::days(1), |(_, e)| e)
    }

    /// The instant of `tod` after local midnight of `d` (`tod` may be 24:00).
    fn at_offset(&self, d: NaiveDate, tod: TimeDelta) -> Result<DateTime<Utc>, TimeError> {
        let t = d
            .and_time(NaiveTime::MIN)
            .checked_add_signed(tod)
            .ok_or(TimeError::OutOfRange)?;
        self.local_to_utc(t)
    }

    /// Start and end instants of the working period of `d` (assumed a working day).
    fn period(&self, d: NaiveDate) -> Result<(DateTime<Utc>, DateTime<Utc>), TimeError> {
        Ok((
            self.at_offset(d, self.start_of_work())?,
            self.at_offset(d, self.end_of_work())?,
        ))
    }

    /// How many days to search for the next working day before giving up. With at least one
    /// non-weekend weekday, every 7 days hold one such day, and `h` holidays can cover at
    /// most `h` of them.
    fn search_limit(&self) -> usize {
        self.holidays.len().saturating_add(2).saturating_mul(7)
    }

    fn next_working_day(&self, d: NaiveDate) -> Result<NaiveDate, TimeError> {
        let mut d = d;
        for _ in 0..self.search_limit() {
            d = d.succ_opt().ok_or(TimeError::OutOfRange)?;
            if self.is_working_day(d) {
                return Ok(d);
            }
        }
        Err(TimeError::NoWorkingDay)
    }

    fn previous_working_day(&self, d: NaiveDate) -> Result<NaiveDate, TimeError> {
        let mut d = d;
        for _ in 0..self.search_limit() {
            d = d.pred_opt().ok_or(TimeError::OutOfRange)?;
            if self.is_working_day(d) {
                return Ok(d);
            }
        }
        Err(TimeError::NoWorkingDay)
    }

    /// The same local time on the `n`-th following working day, after rolling a start outside
    /// working time forward to the start of the next working period.
    pub fn add_working_days(
        &self,
        from: DateTime<Utc>,
        n: u32,
    ) -> Result<DateTime<Utc>, TimeError> {
        if n == 0 {
            return Ok(from);
        }
        let local = self.local(from);
        let mut day = local.date();
        let mut tod = since_midnight(local.time());
        if self.is_working_day(day) {
            let (start, end) = self.period(day)?;
            if from < start {
                tod = self.start_of_work();
            } else if from >= end {
                day = self.next_working_day(day)?;
                tod = self.start_of_work();
            }
        } else {
            day = self.next_working_day(day)?;
            tod = self.start_of_work();
        }
        for _ in 0..n {
            day = self.next_working_day(day)?;
        }
        self.at_offset(day, tod)
    }

    /// The mirror of [`Calendar::add_working_days`]: a start outside working time rolls back
    /// to the end of the previous working period, then steps back `n` working days.
    pub fn subtract_working_days(
        &self,
        from: DateTime<Utc>,
        n: u32,
    ) -> Result<DateTime<Utc>, TimeError> {
        if n == 0 {
            return Ok(from);
        }
        let local = self.local(from);
        let mut day = local.date();
        let mut tod = since_midnight(local.time());
        if self.is_working_day(day) {
            let (start, end) = self.period(day)?;
            if from > end {
                tod = self.end_of_work();
            } else if from < start {
                day = self.previous_working_day(day)?;
                tod = self.end_of_work();
            }
        } else {
            day = self.previous_working_day(day)?;
            tod = self.end_of_work();
        }
        for _ in 0..n {
            day = self.previous_working_day(day)?;
        }
        self.at_offset(day, tod)
    }

    /// `from` plus `n` hours of working time (real elapsed time inside working periods).
    pub fn add_working_hours(
        &self,
        from: DateTime<Utc>,
        n: u32,
    ) -> Result<DateTime<Utc>, TimeError> {
        let mut remaining = TimeDelta::try_hours(i64::from(n)).ok_or(TimeError::OutOfRange)?;
        if remaining.is_zero() {
            return Ok(from);
        }
        let mut day = self.local(from).date();
        loop {
            if self.is_working_day(day) {
                let (start, end) = self.period(day)?;
                let begin = start.max(from);
                if begin < end {
                    let available = end.signed_duration_since(begin);
                    if remaining <= available {
                        return begin
                            .checked_add_signed(remaining)
                            .ok_or(TimeError::OutOfRange);
                    }
                    remaining = remaining
                        .checked_sub(&available)
                        .ok_or(TimeError::OutOfRange)?;
                }
            }
            // Ends at the last representable date at the latest; every week has working time.
            day = day.succ_opt().ok_or(TimeError::OutOfRange)?;
        }
    }

    /// `from` minus `n` hours of working time.
    pub fn subtract_working_hours(
        &self,
        from: DateTime<Utc>,
        n: u32,
    ) -> Result<DateTime<Utc>, TimeError> {
        let mut remaining = TimeDelta::try_hours(i64::from(n)).ok_or(TimeError::OutOfRange)?;
        if remaining.is_zero() {
            return Ok(from);
        }
        let mut day = self.local(from).date();
        loop {
            if self.is_working_day(day) {
                let (start, end) = self.period(day)?;
                let finish = end.min(from);
                if finish > start {
                    let available = finish.signed_duration_since(start);
                    if remaining <= available {
                        return finish
                            .checked_sub_signed(remaining)
                            .ok_or(TimeError::OutOfRange);
                    }
                    remaining = remaining
                        .checked_sub(&available)
                        .ok_or(TimeError::OutOfRange)?;
                }
            }
            day = day.pred_opt().ok_or(TimeError::OutOfRange)?;
        }
    }
}

fn chrono_weekday(d: Weekday) -> chrono::Weekday {
    match d {
        Weekday::Monday => chrono::Weekday::Mon,
        Weekday::Tuesday => chrono::Weekday::Tue,
        Weekday::Wednesday => chrono::Weekday::Wed,
        Weekday::Thursday => chrono::Weekday::Thu,
        Weekday::Friday => chrono::Weekday::Fri,
        Weekday::Saturday => chrono::Weekday::Sat,
        Weekday::Sunday => chrono::Weekday::Sun,
    }
}

/// The instant a due time means for a step opened at `opened`, with the instance data
/// `data` (date fields hold `YYYY-MM-DD`, a local `YYYY-MM-DDTHH:MM[:SS]` or RFC 3339 text).
pub fn resolve(
    due: &Due,
    opened: DateTime<Utc>,
    data: &serde_json::Map<String, serde_json::Value>,
    cal: &Calendar,
) -> Result<DateTime<Utc>, TimeError> {
    resolve_in(due, opened, data, cal, cal.timezone())
}

/// `resolve`, reading the date fields of the data as dates of `dates` (a date field means
/// its midnight in the procedure's time zone, whichever calendar a deadline counts on).
pub fn resolve_in(
    due: &Due,
    opened: DateTime<Utc>,
    data: &serde_json::Map<String, serde_json::Value>,
    cal: &Calendar,
    dates: Tz,
) -> Result<DateTime<Utc>, TimeError> {
    match due {
        Due::After(a) => cal.add(opened, a),
        Due::Relative {
            amount,
            before,
            field,
        } => {
            let anchor = field_time(data, field, cal, dates)?;
            if *before {
                cal.subtract(anchor, amount)
            } else {
                cal.add(anchor, amount)
            }
        }
        Due::AtField(field) => field_time(data, field, cal, dates),
        Due::Fixed(t) => cal.at(t),
        Due::Earlier(a, b) => {
            Ok(resolve_in(a, opened, data, cal, dates)?
                .min(resolve_in(b, opened, data, cal, dates)?))
        }
        Due::Later(a, b) => {
            Ok(resolve_in(a, opened, data, cal, dates)?
                .max(resolve_in(b, opened, data, cal, dates)?))
        }
    }
}

fn field_time(
    data: &serde_json::Map<String, serde_json::Value>,
    field: &str,
    cal: &Calendar,
    dates: Tz,
) -> Result<DateTime<Utc>, TimeError> {
    match data.get(field) {
        None | Some(serde_json::Value::Null) => Err(TimeError::MissingField(field.to_string())),
        Some(serde_json::Value::String(s)) => {
            let t = s.parse::<FixedTime>().map_err(|_| TimeError::NotADate {
                field: field.to_string(),
                value: s.clone(),
            })?;
            if dates == cal.timezone() {
                cal.at(&t)
            } else {
                cal.in_zone(dates).at(&t)
            }
        }
        Some(other) => Err(TimeError::NotADate {
            field: field.to_string(),
            value: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const CN: &str = r#"
id = "cn"
title = "Shanghai office"
timezone = "Asia/Shanghai"
weekend = ["saturday", "sunday"]
working_hours = { start = "08:30", end = "17:30" }
holidays = [
  { date = 2026-05-01, name = "Labour Day" },
  { from = 2026-10-01, to = 2026-10-07, name = "National Day" },
  { date = 2026-11-19, name = "Company day" },
]
extra_working_days = [ { date = 2026-10-10, name = "make-up day for National Day" } ]
"#;

    fn file(src: &str) -> (SpannedDoc, CalendarFile) {
        let doc = SpannedDoc::parse(src).unwrap_or_else(|e| panic!("{e:?}"));
        let f = serde_json::from_value(doc.value.clone()).unwrap_or_else(|e| panic!("{e}"));
        (doc, f)
    }

    fn cal(src: &str) -> Calendar {
        Calendar::from_file(&file(src).1).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn coverage_names_the_years_missing_and_the_provisional_ones_ahead() {
        let (doc, f) = file(CN);
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // In January 2026 the coming twelve months stay in 2026, which has holidays.
        assert!(check_coverage(&f, &doc, day("2026-01-01")).is_empty());
        // From June 2026 they reach into 2027, which has none.
        let ds = check_coverage(&f, &doc, day("2026-06-01"));
        let codes: Vec<&str> = ds.iter().map(|d| d.code).collect();
        assert_eq!(codes, ["calendar-not-covering"]);
        assert!(ds[0].message.contains("for 2027"), "{}", ds[0].message);
        assert_eq!(
            ds[0].severity,
            crate::definition::diagnostic::Severity::Warning
        );
        // A provisional year ahead is named; one already past is not.
        let marked = format!("{CN}provisional = [2026]\n");
        let (doc, f) = file(&marked);
        let codes = |today: &str| -> Vec<&'static str> {
            check_coverage(&f, &doc, day(today))
                .iter()
                .map(|d| d.code)
                .collect()
        };
        assert_eq!(codes("2026-01-01"), ["calendar-provisional"]);
        assert_eq!(codes("2027-01-02"), ["calendar-not-covering"]);
    }

    fn whole_days(tz: &str, weekend: &str) -> Calendar {
        cal(&format!(
            "id = \"x\"\ntitle = \"x\"\ntimezone = \"{tz}\"\nweekend = [{weekend}]\n"
        ))
    }

    /// A local wall-clock time in `cal`'s zone, as UTC.
    fn at(cal: &Calendar, s: &str) -> DateTime<Utc> {
        let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap_or_else(|e| panic!("{s}: {e}"));
        cal.local_to_utc(t).unwrap_or_else(|e| panic!("{e}"))
    }

    fn local(cal: &Calendar, t: DateTime<Utc>) -> String {
        t.with_timezone(&cal.timezone())
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    fn add(cal: &Calendar, from: &str, amount: &str) -> String {
        let a: Amount = amount.parse().unwrap_or_else(|e| panic!("{e:?}"));
        local(
            cal,
            cal.add(at(cal, from), &a).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    fn sub(cal: &Calendar, from: &str, amount: &str) -> String {
        let a: Amount = amount.parse().unwrap_or_else(|e| panic!("{e:?}"));
        local(
            cal,
            cal.subtract(at(cal, from), &a)
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn weekends_holidays_and_make_up_days() {
        let c = cal(CN);
        assert!(c.is_working_day(date("2026-05-11")));
        assert!(!c.is_working_day(date("2026-05-09")), "Saturday");
        assert!(!c.is_working_day(date("2026-05-10")), "Sunday");
        assert!(!c.is_working_day(date("2026-05-01")), "Labour Day");
        assert_eq!(c.holiday(date("2026-10-03")), Some("National Day"));
        assert!(c.is_working_day(date("2026-10-10")), "make-up Saturday");
        assert!(!c.is_working_day(date("2026-10-11")), "Sunday after");
    }

    #[test]
    fn one_working_day_is_the_same_time_on_the_next_working_day() {
        let c = cal(CN);
        assert_eq!(
            add(&c, "2026-05-12 15:00", "1 working day"),
            "2026-05-13 15:00 CST"
        );
        assert_eq!(
            add(&c, "2026-05-15 15:00", "1 working day"),
            "2026-05-18 15:00 CST"
        );
        assert_eq!(
            add(&c, "2026-05-11 09:00", "3 working days"),
            "2026-05-14 09:00 CST"
        );
        // lands on a holiday (Thu 2026-11-19): moves on to Friday
        assert_eq!(
            add(&c, "2026-11-18 15:00", "1 working day"),
            "2026-11-20 15:00 CST"
        );
        assert_eq!(
            add(&c, "2026-05-12 15:00", "0 working days"),
            "2026-05-12 15:00 CST"
        );
    }

    #[test]
    fn golden_week_and_the_make_up_saturday() {
        let c = cal(CN);
        assert_eq!(
            add(&c, "2026-09-30 10:00", "1 working day"),
            "2026-10-08 10:00 CST"
        );
        // a start inside the holiday rolls to the first working morning after it
        assert_eq!(
            add(&c, "2026-10-03 10:00", "1 working day"),
            "2026-10-09 08:30 CST"
        );
        assert_eq!(
            add(&c, "2026-10-09 10:00", "1 working day"),
            "2026-10-10 10:00 CST"
        );
        assert_eq!(
            add(&c, "2026-10-09 10:00", "2 working days"),
            "2026-10-12 10:00 CST"
        );
        assert_eq!(
            add(&c, "2026-09-30 16:30", "2 working hours"),
            "2026-10-08 09:30 CST"
        );
    }

    #[test]
    fn a_start_outside_working_time_rolls_forward_first() {
        let c = cal(CN);
        // Saturday → Monday 08:30 → Tuesday 08:30
        assert_eq!(
            add(&c, "2026-05-16 10:00", "1 working day"),
            "2026-05-19 08:30 CST"
        );
        // before work on Tuesday → Tuesday 08:30 → Wednesday 08:30
        assert_eq!(
            add(&c, "2026-05-12 07:00", "1 working day"),
            "2026-05-13 08:30 CST"
        );
        // after work (end is exclusive)
        assert_eq!(
            add(&c, "2026-05-12 17:30", "1 working day"),
            "2026-05-14 08:30 CST"
        );
        assert_eq!(
            add(&c, "2026-05-12 18:00", "4 working hours"),
            "2026-05-13 12:30 CST"
        );
        assert_eq!(
            add(&c, "2026-05-16 10:00", "2 working hours"),
            "2026-05-18 10:30 CST"
        );
    }

    #[test]
    fn working_hours_roll_over_the_weekend() {
        let c = cal(CN);
        assert_eq!(
            add(&c, "2026-05-15 16:30", "2 working hours"),
            "2026-05-18 09:30 CST"
        );
        assert_eq!(
            add(&c, "2026-05-15 16:30", "1 working hour"),
            "2026-05-15 17:30 CST"
        );
        assert_eq!(
            add(&c, "2026-05-11 08:30", "18 working hours"),
            "2026-05-12 17:30 CST"
        );
        assert_eq!(
            sub(&c, "2026-05-18 09:30", "2 working hours"),
            "2026-05-15 16:30 CST"
        );
        assert_eq!(
            sub(&c, "2026-05-18 08:00", "1 working hour"),
            "2026-05-15 16:30 CST"
        );
    }

    #[test]
    fn counting_back_over_working_days() {
        let c = cal(CN);
        assert_eq!(
            sub(&c, "2026-05-13 15:00", "1 working day"),
            "2026-05-12 15:00 CST"
        );
        assert_eq!(
            sub(&c, "2026-05-18 15:00", "1 working day"),
            "2026-05-15 15:00 CST"
        );
        // Monday 00:00 is outside working time: end of Friday, then two days back
        assert_eq!(
            sub(&c, "2026-05-11 00:00", "2 working days"),
            "2026-05-06 17:30 CST"
        );
        // the same without working hours: Thursday 00:00 (= Wednesday 24:00)
        let w = whole_days("Asia/Shanghai", "\"saturday\", \"sunday\"");
        assert_eq!(
            sub(&w, "2026-05-11 00:00", "2 working days"),
            "2026-05-07 00:00 CST"
        );
        assert_eq!(
            sub(&w, "2026-05-13 15:00", "1 working day"),
            "2026-05-12 15:00 CST"
        );
        assert_eq!(
            sub(&c, "2026-10-08 10:00", "1 working day"),
            "2026-09-30 10:00 CST"
        );
    }

    #[test]
    fn dst_spring_forward_and_fall_back_in_berlin() {
        let c = whole_days("Europe/Berlin", "");
        // 2026-03-29 02:30 does not exist: first valid instant is 03:00 CEST
        assert_eq!(
            add(&c, "2026-03-28 02:30", "1 day"),
            "2026-03-29 03:00 CEST"
        );
        assert_eq!(
            add(&c, "2026-03-28 02:30", "1 working day"),
            "2026-03-29 03:00 CEST"
        );
        // days keep the wall-clock time; hours are elapsed time
        assert_eq!(
            add(&c, "2026-03-28 12:00", "1 day"),
            "2026-03-29 12:00 CEST"
        );
        assert_eq!(add(&c, "2026-03-28 12:00", "24h"), "2026-03-29 13:00 CEST");
        assert_eq!(
            add(&c, "2026-03-29 00:00", "4 working hours"),
            "2026-03-29 05:00 CEST"
        );
        // 2026-10-25 02:30 happens twice: the earlier (CEST) one is taken
        assert_eq!(
            add(&c, "2026-10-24 02:30", "1 day"),
            "2026-10-25 02:30 CEST"
        );
        assert_eq!(add(&c, "2026-10-24 12:00", "24h"), "2026-10-25 11:00 CET");
        assert_eq!(
            add(&c, "2026-10-25 00:00", "4 working hours"),
            "2026-10-25 03:00 CET"
        );
        let gap = NaiveDateTime::parse_from_str("2026-03-29 02:00:30", "%Y-%m-%d %H:%M:%S")
            .unwrap_or_default();
        assert_eq!(
            c.local_to_utc(gap).map(|t| t.to_rfc3339()),
            Ok("2026-03-29T01:00:00+00:00".to_string())
        );
    }

    #[test]
    fn months_clamp_to_the_end_of_the_month() {
        let c = Calendar::utc();
        assert_eq!(
            add(&c, "2027-01-31 09:00", "1 month"),
            "2027-02-28 09:00 UTC"
        );
        assert_eq!(
            add(&c, "2028-01-31 09:00", "1 month"),
            "2028-02-29 09:00 UTC"
        );
        assert_eq!(
            add(&c, "2028-02-29 09:00", "1 year"),
            "2029-02-28 09:00 UTC"
        );
        assert_eq!(
            sub(&c, "2027-03-31 09:00", "1 month"),
            "2027-02-28 09:00 UTC"
        );
        assert_eq!(
            add(&c, "2027-01-31 09:00", "2 weeks"),
            "2027-02-14 09:00 UTC"
        );
        assert_eq!(add(&c, "2027-01-31 09:00", "90m"), "2027-01-31 10:30 UTC");
    }

    #[test]
    fn schedule_runs_count_from_the_first_run() {
        let c = cal(CN).in_zone(Tz::Europe__Berlin);
        let first = at(&c, "2027-01-31 09:00");
        let month = Amount::new(1, Unit::Months);
        let runs: Vec<String> = (0..4)
            .map(|k| local(&c, c.occurrence(first, &month, k).unwrap_or(first)))
            .collect();
        assert_eq!(
            runs,
            vec![
                "2027-01-31 09:00 CET",
                "2027-02-28 09:00 CET",
                "2027-03-31 09:00 CEST",
                "2027-04-30 09:00 CEST"
            ]
        );
        let half_year = Amount::new(6, Unit::Months);
        assert_eq!(
            c.occurrence(first, &half_year, u32::MAX),
            Err(TimeError::OutOfRange)
        );
    }

    proptest::proptest! {
        #[test]
        fn working_days_land_inside_working_time(
            minutes in 0i64..(2 * 366 * 24 * 60),
            n in 1u32..40,
        ) {
            let c = cal(CN);
            let from = at(&c, "2026-01-01 00:00") + Duration::minutes(minutes);
            let to = c.add_working_days(from, n).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let day = c.local(to).date();
            proptest::prop_assert!(to > from);
            proptest::prop_assert!(c.is_working_day(day));
            let (start, end) = c.period(day).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert!(start <= to && to < end);
            // counting back the same amount never goes before the start
            let back = c.subtract_working_days(to, n).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert!(back <= to);
        }

        #[test]
        fn working_hours_add_and_subtract_are_inverse_inside_working_time(
            minutes in 0i64..(366 * 24 * 60),
            n in 1u32..200,
        ) {
            let c = cal(CN);
            let from = at(&c, "2026-01-01 00:00") + Duration::minutes(minutes);
            let fail = |e: TimeError| proptest::test_runner::TestCaseError::fail(e.to_string());
            let to = c.add_working_hours(from, n).map_err(fail)?;
            let back = c.subtract_working_hours(to, n).map_err(fail)?;
            // `from` outside working time rolls to the next start; coming back lands there
            let rolled = c.add_working_hours(back, 0).map_err(fail)?;
            proptest::prop_assert!(rolled >= from);
            proptest::prop_assert_eq!(c.add_working_hours(back, n).map_err(fail)?, to);
        }
    }

    fn data(pairs: &[(&str, serde_json::Value)]) -> serde_json::Map<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn resolved(
        c: &Calendar,
        due: &str,
        opened: &str,
        d: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TimeError> {
        let due: Due = due.parse().unwrap_or_else(|e| panic!("{e:?}"));
        resolve(&due, at(c, opened), d, c).map(|t| local(c, t))
    }

    #[test]
    fn resolves_due_times() {
        let c = cal(CN);
        let d = data(&[
            ("audit_date", "2026-05-11".into()),
            ("warranty_end", "2026-06-30T12:00:00Z".into()),
            ("count", 3.into()),
            ("empty", serde_json::Value::Null),
        ]);
        let opened = "2026-05-04 10:00";
        assert_eq!(
            resolved(&c, "24h", opened, &d),
            Ok("2026-05-05 10:00 CST".into())
        );
        assert_eq!(
            resolved(&c, "audit_date", opened, &d),
            Ok("2026-05-11 00:00 CST".into())
        );
        assert_eq!(
            resolved(&c, "2 working days before audit_date", opened, &d),
            Ok("2026-05-06 17:30 CST".into())
        );
        assert_eq!(
            resolved(&c, "1 working day after audit_date", opened, &d),
            Ok("2026-05-12 08:30 CST".into())
        );
        assert_eq!(
            resolved(&c, "10 days before warranty_end", opened, &d),
            Ok("2026-06-20 20:00 CST".into())
        );
        assert_eq!(
            resolved(
                &c,
                "earlier of 7 days and 3 days before audit_date",
                opened,
                &d
            ),
            Ok("2026-05-08 00:00 CST".into())
        );
        assert_eq!(
            resolved(
                &c,
                "later of 7 days and 3 days before audit_date",
                opened,
                &d
            ),
            Ok("2026-05-11 10:00 CST".into())
        );
        assert_eq!(
            resolved(&c, "2027-01-31", opened, &d),
            Ok("2027-01-31 00:00 CST".into())
        );
        assert_eq!(
            resolved(&c, "2027-01-31T17:00", opened, &d),
            Ok("2027-01-31 17:00 CST".into())
        );
        assert_eq!(
            resolved(&c, "2027-01-31T17:00Z", opened, &d),
            Ok("2027-02-01 01:00 CST".into())
        );
        assert_eq!(
            resolved(&c, "nope", opened, &d),
            Err(TimeError::MissingField("nope".into()))
        );
        assert_eq!(
            resolved(&c, "empty", opened, &d),
            Err(TimeError::MissingField("empty".into()))
        );
        assert_eq!(
            resolved(&c, "count", opened, &d),
            Err(TimeError::NotADate {
                field: "count".into(),
                value: "3".into()
            })
        );
    }

    #[test]
    fn large_amounts_finish_quickly_and_never_panic() {
        let c = cal(CN);
        let from = at(&c, "2026-05-11 09:00");
        let max_wd = Amount::new(Unit::WorkingDays.max(), Unit::WorkingDays);
        assert!(c.add(from, &max_wd).is_ok());
        let max_wh = Amount::new(Unit::WorkingHours.max(), Unit::WorkingHours);
        assert!(c.add(from, &max_wh).is_ok());
        // beyond the parser's caps, arithmetic still reports instead of panicking
        let far = DateTime::<Utc>::MAX_UTC - Duration::days(2);
        assert_eq!(
            c.add(far, &Amount::new(u32::MAX, Unit::Years)),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(
            c.add(far, &Amount::new(u32::MAX, Unit::Minutes)),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(
            c.add(far, &Amount::new(10, Unit::Days)),
            Err(TimeError::OutOfRange)
        );
        assert!(c.add(far, &Amount::new(10, Unit::WorkingDays)).is_err());
        assert!(c
            .subtract(
                DateTime::<Utc>::MIN_UTC + Duration::days(2),
                &Amount::new(100, Unit::WorkingHours)
            )
            .is_err());
    }

    fn diagnostics(src: &str, stem: &str) -> Vec<(&'static str, String)> {
        let (doc, f) = file(src);
        check(&f, &doc, stem)
            .into_iter()
            .map(|d| {
                (
                    d.code,
                    d.span.and_then(|r| src.get(r)).unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_good_calendar_has_no_diagnostics() {
        assert_eq!(diagnostics(CN, "cn"), vec![]);
        let (_, f) = file("id = \"d\"\ntitle = \"d\"\n");
        assert_eq!(f.timezone, "UTC");
        assert_eq!(f.weekend, vec![Weekday::Saturday, Weekday::Sunday]);
    }

    #[test]
    fn check_reports_each_mistake_where_it_is() {
        let src = r#"
id = "shanghai"
title = "x"
timezone = "Asia/Shangai"
weekend = ["saturday", "sunday", "sunday"]
working_hours = { start = "17:30", end = "8:30" }
holidays = [
  { date = 2027-01-01, name = "New Year" },
  { from = 2027-10-07, to = 2027-10-01, name = "National Day" },
  { name = "Nothing" },
  { from = 2026-12-31, to = 2027-01-02, name = "Overlap" },
]
extra_working_days = [
  { date = 2027-01-01, name = "clash" },
  { date = 2027-01-04, name = "a Monday" },
  { date = 2027-01-04, name = "twice" },
]
"#;
        let d = diagnostics(src, "cn");
        let codes: Vec<_> = d.iter().map(|(c, s)| (*c, s.as_str())).collect();
        assert_eq!(
            codes,
            vec![
                ("calendar-id-mismatch", "\"shanghai\""),
                ("unknown-timezone", "\"Asia/Shangai\""),
                ("duplicate-weekday", "\"sunday\""),
                ("bad-working-hours", "\"8:30\""),
                ("bad-holiday-range", "2027-10-01"),
                ("bad-holiday", "{ name = \"Nothing\" }"),
                (
                    "duplicate-date",
                    "{ from = 2026-12-31, to = 2027-01-02, name = \"Overlap\" }"
                ),
                ("holiday-and-working-day", "2027-01-01"),
                ("redundant-working-day", "2027-01-04"),
                ("duplicate-date", "2027-01-04"),
            ]
        );
        let (doc, f) = file(src);
        let all = check(&f, &doc, "cn");
        let tz = all.iter().find(|d| d.code == "unknown-timezone");
        assert_eq!(
            tz.and_then(|d| d.help.as_deref()),
            Some("did you mean `Asia/Shanghai`?")
        );
        assert!(all
            .iter()
            .filter(|d| d.code.starts_with("duplicate") || d.code.starts_with("redundant"))
            .all(|d| !d.is_error()));
    }

    #[test]
    fn all_weekend_and_bad_times_are_rejected() {
        let src = "id = \"x\"\ntitle = \"x\"\nweekend = [\"monday\",\"tuesday\",\"wednesday\",\"thursday\",\"friday\",\"saturday\",\"sunday\"]\nworking_hours = { start = \"8h30\", end = \"17:30\" }\n";
        let d = diagnostics(src, "x");
        assert_eq!(d.first().map(|x| x.0), Some("no-working-day"));
        assert_eq!(
            d.get(1).map(|x| (x.0, x.1.as_str())),
            Some(("bad-working-hours", "\"8h30\""))
        );
        assert_eq!(
            Calendar::from_file(&file(src).1),
            Err(CalendarError::NoWorkingDay)
        );
        assert!(parse_timezone("europe/berlin")
            .err()
            .and_then(|e| e.help)
            .unwrap_or_default()
            .contains("`Europe/Berlin`"));
        assert!(parse_timezone("").is_err());
        assert_eq!(parse_clock("8:30"), NaiveTime::from_hms_opt(8, 30, 0));
        assert_eq!(parse_clock("17:30:00"), NaiveTime::from_hms_opt(17, 30, 0));
        assert_eq!(parse_clock("24:00"), None);
        assert_eq!(parse_clock("8:3"), None);
    }

    #[test]
    fn schema_writes_dates_as_strings() {
        let schema = serde_json::to_value(schemars::schema_for!(CalendarFile)).unwrap_or_default();
        let text = schema.to_string();
        assert!(text.contains("\"format\":\"date\""), "{text}");
        let required = &schema["required"];
        assert_eq!(required, &serde_json::json!(["id", "title"]));
        let holiday_required = &schema["$defs"]["Holiday"]["required"];
        assert_eq!(holiday_required, &serde_json::json!(["name"]));
    }
}
