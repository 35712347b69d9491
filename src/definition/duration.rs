//! The time grammar process owners write in procedure files: amounts of time (`24h`,
//! `3 working days`), due times (`10 days before warranty_end`, `earlier of 7 days and
//! audit_date`), reminders (`2h before`), breach delays, schedule intervals (`6 months`) and
//! cron expressions — parsed by hand, printed back canonically, and reported as diagnostics
//! that point at the offending word inside the file.
//!
//! This module only reads text. It must not turn amounts into instants (that needs a
//! calendar, see `calendar.rs`) and must not read the clock (DESIGN invariant 4). Parsing
//! never panics on user input: numbers are checked, slices go through `get`.
//!
//! Accepted syntax, in short (case does not matter, extra spaces are fine):
//!
//! - amount: a whole number and a unit — `30m`, `30 min`, `30 minutes`, `24h`, `24 hours`,
//!   `7d`, `7 days`, `2w`, `2 weeks`, `6 months`, `1 year`, `3 working days`,
//!   `4 working hours` (`business` is a synonym of `working`). `0h` means at once.
//! - due: an amount after the step opens (`24h`); an amount before or after a date field
//!   (`10 days before warranty_end`); a date field alone (`audit_date`); a fixed date or
//!   date-time (`2027-01-31`, `2027-01-31T17:00`, `2027-01-31T17:00:00+08:00`); or
//!   `earlier of A and B [and C…]` / `later of …` over those.
//! - reminder: `<amount> before` (counted back from the due time), or `every <amount>`
//!   (repeating from the moment the step opens until it is done).
//! - schedule interval: `<amount>` in days, weeks, months or years, or `half a year`.
//! - cron: five fields, minute hour day-of-month month day-of-week.
//!
//! Diagnostic codes: `bad-duration` (deadline `due`, `remind`, `on_breach.after`),
//! `bad-schedule` (`every`/`cron` missing or both, bad interval, cron or `starting`),
//! `unknown-timezone` (schedule `timezone`).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike};
use croner::parser::{CronParser, Seconds, Year};
use thiserror::Error;

use super::calendar::parse_timezone;
use super::diagnostic::{did_you_mean, Diagnostic};
use super::model::{Deadline, Schedule};
use super::source::SpannedDoc;

/// A mistake in one time expression, located inside that string.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ParseError {
    /// The sentence a process owner reads.
    pub message: String,
    /// Byte range of the offending word inside the parsed string; `None` means the whole
    /// string (for example when it is empty).
    pub at: Option<Range<usize>>,
    /// What to write instead.
    pub help: Option<String>,
}

impl ParseError {
    fn new(message: impl Into<String>, at: Option<Range<usize>>) -> Self {
        ParseError {
            message: message.into(),
            at,
            help: None,
        }
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

const UNITS_LIST: &str =
    "Units: minutes, hours, days, weeks, months, years, working days, working hours";

const DUE_FORMS: &str = "write an amount (`24h`, `3 working days`), an amount before or after a \
     date field (`10 days before warranty_end`), a date field (`audit_date`), a date \
     (`2027-01-31`), or `earlier of 7 days and 3 days before audit_date`";

// ---------------------------------------------------------------------------------------------
// Amounts
// ---------------------------------------------------------------------------------------------

/// A unit of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Minutes,
    Hours,
    /// Calendar days: the same local time so many days later (not 24-hour blocks).
    Days,
    /// Seven calendar days.
    Weeks,
    /// Calendar months; the day of month is kept, or the month's last day if it is shorter.
    Months,
    /// Twelve calendar months.
    Years,
    /// Days of the calendar that are working days; see `calendar.rs` for the exact rule.
    WorkingDays,
    /// Time inside working hours on working days.
    WorkingHours,
}

impl Unit {
    /// Needs a working-day calendar to be evaluated.
    pub fn is_working(self) -> bool {
        matches!(self, Unit::WorkingDays | Unit::WorkingHours)
    }

    fn singular(self) -> &'static str {
        match self {
            Unit::Minutes => "minute",
            Unit::Hours => "hour",
            Unit::Days => "day",
            Unit::Weeks => "week",
            Unit::Months => "month",
            Unit::Years => "year",
            Unit::WorkingDays => "working day",
            Unit::WorkingHours => "working hour",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Unit::Minutes => "minutes",
            Unit::Hours => "hours",
            Unit::Days => "days",
            Unit::Weeks => "weeks",
            Unit::Months => "months",
            Unit::Years => "years",
            Unit::WorkingDays => "working days",
            Unit::WorkingHours => "working hours",
        }
    }

    /// The largest amount accepted, about 100 years. Beyond it a deadline is surely a typo,
    /// and the cap keeps working-day arithmetic (which walks day by day) quick.
    pub fn max(self) -> u32 {
        match self {
            Unit::Minutes => 52_560_000,
            Unit::Hours => 876_000,
            Unit::Days => 36_500,
            Unit::Weeks => 5_200,
            Unit::Months => 1_200,
            Unit::Years => 100,
            Unit::WorkingDays => 26_000,
            Unit::WorkingHours => 876_000,
        }
    }
}

/// An amount of time: a whole number and a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    pub n: u32,
    pub unit: Unit,
}

impl Amount {
    pub fn new(n: u32, unit: Unit) -> Self {
        Amount { n, unit }
    }

    /// Whether evaluating it needs a working-day calendar.
    pub fn uses_working_time(&self) -> bool {
        self.unit.is_working()
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.n == 1 {
            self.unit.singular()
        } else {
            self.unit.plural()
        };
        write!(f, "{} {unit}", self.n)
    }
}

impl FromStr for Amount {
    type Err = ParseError;

    /// A plain amount with nothing after it, as in `on_breach.after`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_amount(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Due times
// ---------------------------------------------------------------------------------------------

/// A point in time written without reference to when a step opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedTime {
    /// `2027-01-31`: the start (00:00) of that day in the calendar's time zone. The start, not
    /// the end, so that `due = "audit_date"` means "before the audit day begins" and a date
    /// and a date-time on the same day compare the way they read.
    Date(NaiveDate),
    /// `2027-01-31T17:00`: that wall-clock time in the calendar's time zone.
    Local(NaiveDateTime),
    /// `2027-01-31T17:00:00Z`, `2027-01-31T17:00+08:00`: that exact instant.
    Exact(DateTime<FixedOffset>),
}

impl FromStr for FixedTime {
    type Err = ParseError;

    /// A date or date-time and nothing else (schedule `starting`, values of date fields).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = Parser::new(s);
        let Some(t) = p.bump() else {
            return Err(ParseError::new("no date given", None).help(
                "write a date like `2027-01-15` or a date and time like `2027-01-15T09:00`",
            ));
        };
        if !looks_like_date(t.text) {
            return Err(
                ParseError::new(format!("`{}` is not a date", s.trim()), None).help(
                    "write a date like `2027-01-15` or a date and time like `2027-01-15T09:00`",
                ),
            );
        }
        let fixed = p.fixed(t)?;
        p.finish("the date")?;
        Ok(fixed)
    }
}

impl fmt::Display for FixedTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn clock(t: &NaiveDateTime) -> String {
            if t.second() == 0 && t.nanosecond() == 0 {
                t.format("%Y-%m-%dT%H:%M").to_string()
            } else {
                t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
            }
        }
        match self {
            FixedTime::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            FixedTime::Local(t) => f.write_str(&clock(t)),
            FixedTime::Exact(t) => {
                let offset = t.offset().local_minus_utc();
                let zone = if offset == 0 {
                    "Z".to_string()
                } else {
                    let sign = if offset < 0 { '-' } else { '+' };
                    let a = offset.unsigned_abs();
                    format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
                };
                write!(f, "{}{zone}", clock(&t.naive_local()))
            }
        }
    }
}

/// When a step is due (`deadline.due`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// `24h`: this long after the step opens.
    After(Amount),
    /// `10 days before warranty_end`, `2 working days after audit_date`.
    Relative {
        amount: Amount,
        before: bool,
        field: String,
    },
    /// `audit_date`: the time or date held in that data field.
    AtField(String),
    /// `2027-01-31`, `2027-01-31T17:00`, `2027-01-31T17:00:00Z`.
    Fixed(FixedTime),
    /// `earlier of A and B`: whichever comes first.
    Earlier(Box<Due>, Box<Due>),
    /// `later of A and B`: whichever comes last.
    Later(Box<Due>, Box<Due>),
}

impl Due {
    /// The data fields this due time reads, in order of appearance, without repeats.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Due::Relative { field, .. } | Due::AtField(field) => {
                if !out.contains(&field.as_str()) {
                    out.push(field);
                }
            }
            Due::Earlier(a, b) | Due::Later(a, b) => {
                a.collect_fields(out);
                b.collect_fields(out);
            }
            Due::After(_) | Due::Fixed(_) => {}
        }
    }

    /// Whether evaluating it needs a working-day calendar.
    pub fn uses_working_time(&self) -> bool {
        match self {
            Due::After(a) | Due::Relative { amount: a, .. } => a.uses_working_time(),
            Due::Earlier(a, b) | Due::Later(a, b) => a.uses_working_time() || b.uses_working_time(),
            Due::AtField(_) | Due::Fixed(_) => false,
        }
    }
}

impl FromStr for Due {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = Parser::new(s);
        if p.peek().is_none() {
            return Err(ParseError::new("the due time is empty", None).help(DUE_FORMS));
        }
        let due = p.due()?;
        if let Some(t) = p.peek() {
            if let (Due::AtField(f), true) = (&due, t.text.starts_with(['+', '-'])) {
                return Err(ParseError::new(
                    "sopflow does not calculate with `+` and `-`",
                    Some(t.span()),
                )
                .help(format!(
                    "count from a date field with words: `3 days after {f}`, `3 days before {f}`"
                )));
            }
            if t.is("and") {
                return Err(ParseError::new(
                    "to combine two due times, start with `earlier of` or `later of`",
                    Some(t.span()),
                )
                .help("for example `earlier of 7 days and 3 days before audit_date`"));
            }
        }
        p.finish("the due time")?;
        Ok(due)
    }
}

impl fmt::Display for Due {
    /// Canonical text: parsing it gives back an equal value. (A combination nested on the
    /// left, which the parser never produces, is printed as if it were on the right.)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Due::After(a) => write!(f, "{a}"),
            Due::Relative {
                amount,
                before,
                field,
            } => {
                let word = if *before { "before" } else { "after" };
                write!(f, "{amount} {word} {field}")
            }
            Due::AtField(field) => f.write_str(field),
            Due::Fixed(t) => write!(f, "{t}"),
            Due::Earlier(a, b) => combo(f, "earlier of", a, b),
            Due::Later(a, b) => combo(f, "later of", a, b),
        }
    }
}

fn combo(f: &mut fmt::Formatter<'_>, head: &str, a: &Due, b: &Due) -> fmt::Result {
    let is_combo = |d: &Due| matches!(d, Due::Earlier(..) | Due::Later(..));
    // Both orders mean the same; the grammar only nests on the right.
    let (a, b) = if is_combo(a) && !is_combo(b) {
        (b, a)
    } else {
        (a, b)
    };
    write!(f, "{head} {a}")?;
    // `earlier of a and earlier of b and c` is printed `earlier of a and b and c`, which
    // parses back to the same nesting.
    let mut rest = b;
    loop {
        let inner = match (head, rest) {
            ("earlier of", Due::Earlier(x, y)) | ("later of", Due::Later(x, y)) if !is_combo(x) => {
                Some((x, y))
            }
            _ => None,
        };
        match inner {
            Some((x, y)) => {
                write!(f, " and {x}")?;
                rest = y;
            }
            None => return write!(f, " and {rest}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points for the other strings
// ---------------------------------------------------------------------------------------------

/// A plain amount with nothing after it (`on_breach.after`: `"0h"`, `"1 working day"`).
pub fn parse_amount(s: &str) -> Result<Amount, ParseError> {
    let mut p = Parser::new(s);
    if p.peek().is_none() {
        return Err(ParseError::new("no amount of time given", None)
            .help("write an amount like `0h` (at once), `1 day` or `1 working day`"));
    }
    let amount = p.amount()?;
    p.finish("the amount")?;
    Ok(amount)
}

/// A reminder of a step's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reminder {
    /// `"2h before"`, `"1 working day before"`: once, counted back from the due time.
    Before(Amount),
    /// `"every 3 days"`, `"every 1 working day"`: first that long after the step opens,
    /// then again and again until the task is closed (also after the due time).
    Every(Amount),
}

/// A reminder: `"2h before"`, `"1 working day before"` (counted back from the due time), or
/// `"every 3 days"` (repeating from the moment the step opens until it is done).
pub fn parse_reminder(s: &str) -> Result<Reminder, ParseError> {
    let mut p = Parser::new(s);
    if p.peek().is_none() {
        return Err(ParseError::new("the reminder is empty", None)
            .help("write how long before the due time to remind: `2h before`, or how often: `every 2 days`"));
    }
    if p.peek().is_some_and(|t| t.is("every")) {
        p.bump();
        let start = p.pos;
        let amount = p.amount()?;
        let written = p.span_from(start);
        // More often than hourly is no longer a reminder but noise, and each one is an
        // entry in the history forever.
        if matches!(amount.unit, Unit::Minutes) {
            return Err(ParseError::new(
                "a repeating reminder must be at least an hour apart",
                Some(written),
            )
            .help("write `every 1h` or longer, e.g. `every 1 working day`"));
        }
        if amount.n == 0 {
            return Err(ParseError::new(
                "a repeating reminder needs a length of time greater than zero",
                Some(written),
            )
            .help("write `every 1 day`, `every 3 days`"));
        }
        p.finish("the reminder")?;
        return Ok(Reminder::Every(amount));
    }
    let start = p.pos;
    let amount = p.amount()?;
    let written = p.span_from(start);
    match p.bump() {
        Some(t) if t.is("before") => {
            // "before due" / "before the deadline" read naturally; accept them.
            if p.peek().is_some_and(|t| t.is("the")) {
                p.bump();
            }
            if p.peek().is_some_and(|t| t.is("due") || t.is("deadline")) {
                p.bump();
            }
        }
        Some(t) if t.is("after") => {
            return Err(ParseError::new(
                "reminders come before the due time, not after it",
                Some(t.span()),
            )
            .help("to act after the due time, add an `on_breach` entry with `after`"));
        }
        Some(t) => {
            return Err(ParseError::new(
                format!(
                    "`{}` does not belong here; a reminder ends with `before`",
                    t.text
                ),
                Some(t.span()),
            )
            .help(format!("write `{amount} before`")));
        }
        None => {
            return Err(ParseError::new(
                "say that the reminder is before the due time",
                Some(written),
            )
            .help(format!("write `{amount} before`")));
        }
    }
    p.finish("the reminder")?;
    Ok(Reminder::Before(amount))
}

/// A schedule interval (`schedule.every`): days, weeks, months or years, at least one.
///
/// Hours and minutes are refused — starting a procedure several times a day is what `cron`
/// is for — and so are working days: a schedule repeats in calendar time. `half a year` is
/// accepted as `6 months`; a leading `every` is tolerated.
pub fn parse_every(s: &str) -> Result<Amount, ParseError> {
    let mut p = Parser::new(s);
    if p.peek().is_some_and(|t| t.is("every")) {
        p.bump();
    }
    let Some(first) = p.peek() else {
        return Err(ParseError::new("the interval is empty", None)
            .help("write how often to start: `6 months`, `1 year`, `2 weeks`"));
    };
    if first.is("half") {
        p.bump();
        if p.peek().is_some_and(|t| t.is("a")) {
            p.bump();
        }
        match p.bump() {
            Some(t) if t.is("year") => {
                p.finish("the interval")?;
                return Ok(Amount::new(6, Unit::Months));
            }
            _ => {
                return Err(ParseError::new(
                    "only `half a year` can be written with `half`",
                    Some(first.span()),
                )
                .help("write whole units: `6 months`, `2 weeks`"))
            }
        }
    }
    let start = p.pos;
    let amount = p.amount()?;
    let at = Some(p.span_from(start));
    p.finish("the interval")?;
    match amount.unit {
        Unit::WorkingDays | Unit::WorkingHours => Err(ParseError::new(
            "a schedule repeats in calendar time, not in working time",
            at,
        )
        .help("write days, weeks, months or years: `1 month`, `2 weeks`")),
        Unit::Minutes | Unit::Hours => Err(ParseError::new(
            "`every` counts days, weeks, months or years",
            at,
        )
        .help("to start several times a day, use `cron` instead, e.g. `0 8,14 * * 1-5`")),
        _ if amount.n == 0 => {
            Err(ParseError::new("the interval cannot be zero", at).help("write at least `1 day`"))
        }
        _ => Ok(amount),
    }
}

/// The cron parser sopflow uses everywhere: five fields, no seconds, no years, so that what
/// `validate` accepts is exactly what the scheduler runs.
pub fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

const CRON_FIELDS: [(&str, &str); 5] = [
    ("minute", "0 to 59"),
    ("hour", "0 to 23"),
    ("day of the month", "1 to 31, or `L` for the last day"),
    ("month", "1 to 12, or `jan` to `dec`"),
    (
        "day of the week",
        "0 to 7 (0 and 7 are Sunday), or `sun` to `sat`",
    ),
];

const CRON_SHAPE: &str = "five parts: minute hour day-of-month month day-of-week, e.g. \
     `0 9 1 1,7 *` (09:00 on 1 January and 1 July)";

/// Checks a cron expression (minute hour day-of-month month day-of-week) and says, in plain
/// words, which part is wrong.
pub fn check_cron(expr: &str) -> Result<(), ParseError> {
    let p = Parser::new(expr);
    let toks = &p.toks;
    let parser = cron_parser();
    let Some(first) = toks.first() else {
        return Err(ParseError::new("the cron expression is empty", None).help(CRON_SHAPE));
    };
    if first.text.starts_with('@') {
        const SHORTCUTS: [&str; 6] = [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@hourly",
        ];
        let ok = toks.len() == 1 && SHORTCUTS.iter().any(|s| first.is(s));
        return if ok && parser.parse(expr).is_ok() {
            Ok(())
        } else {
            Err(ParseError::new(
                format!("`{}` is not a cron shortcut", first.text),
                Some(p.span_from(0)),
            )
            .help("shortcuts are @yearly, @monthly, @weekly, @daily and @hourly"))
        };
    }
    if toks.len() != 5 {
        let at = match toks.get(5) {
            Some(extra) => Some(extra.start..expr.len()),
            None => Some(p.span_from(0)),
        };
        let extra = if toks.len() > 5 {
            " (sopflow cron has no seconds or years part)"
        } else {
            ""
        };
        return Err(ParseError::new(
            format!(
                "a cron expression has 5 parts, but this one has {}{extra}",
                toks.len()
            ),
            at,
        )
        .help(CRON_SHAPE));
    }
    for (i, (tok, (name, range))) in toks.iter().zip(CRON_FIELDS).enumerate() {
        let mut fields = ["*"; 5];
        if let Some(slot) = fields.get_mut(i) {
            *slot = tok.text;
        }
        if parser.parse(&fields.join(" ")).is_err() {
            return Err(ParseError::new(
                format!("`{}` is not a valid {name}", tok.text),
                Some(tok.span()),
            )
            .help(format!(
                "the {name} goes from {range}; write `*` for every one, a list `1,15`, a \
                 range `1-5` or a step `*/2`"
            )));
        }
    }
    parser.parse(expr).map(|_| ()).map_err(|e| {
        ParseError::new(
            format!("this cron expression cannot be used: {e}"),
            Some(p.span_from(0)),
        )
        .help(CRON_SHAPE)
    })
}

// ---------------------------------------------------------------------------------------------
// Diagnostics in files
// ---------------------------------------------------------------------------------------------

/// Parses every time expression of a step's deadline (`due`, each `remind`, each
/// `on_breach[i].after`) and reports `bad-duration` errors located at the offending word.
/// `ptr_base` is the JSON Pointer of the deadline table (`/steps/review/deadline`).
pub fn check_deadline(deadline: &Deadline, ptr_base: &str, doc: &SpannedDoc) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if let Err(e) = deadline.due.parse::<Due>() {
        let p = format!("{ptr_base}/due");
        out.push(diagnostic("bad-duration", e, &deadline.due, &p, doc));
    }
    if let Some(opens) = &deadline.opens {
        if let Err(e) = opens.parse::<Due>() {
            let p = format!("{ptr_base}/opens");
            out.push(diagnostic("bad-duration", e, opens, &p, doc));
        }
    }
    for (i, r) in deadline.remind.iter().enumerate() {
        if let Err(e) = parse_reminder(r) {
            let p = format!("{ptr_base}/remind/{i}");
            out.push(diagnostic("bad-duration", e, r, &p, doc));
        }
    }
    for (i, b) in deadline.on_breach.iter().enumerate() {
        if let Some(after) = &b.after {
            if let Err(e) = parse_amount(after) {
                let p = format!("{ptr_base}/on_breach/{i}/after");
                out.push(diagnostic("bad-duration", e, after, &p, doc));
            }
        }
    }
    out
}

/// Checks a procedure's `schedule`: exactly one of `every` and `cron` (`bad-schedule`), each
/// parses (`bad-schedule`), `starting` is a date or date-time (`bad-schedule`), `timezone` is
/// a known IANA zone (`unknown-timezone`). `ptr_base` is the pointer of the table
/// (`/schedule`).
pub fn check_schedule(s: &Schedule, ptr_base: &str, doc: &SpannedDoc) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    match (&s.every, &s.cron) {
        (None, None) => out.push(
            Diagnostic::error(
                "bad-schedule",
                "the schedule says neither `every` nor `cron`",
            )
            .at(doc.key_span(ptr_base))
            .label("when should instances start?")
            .help("add `every = \"6 months\"` (with `starting`) or `cron = \"0 9 1 1,7 *\"`"),
        ),
        (Some(_), Some(_)) => out.push(
            Diagnostic::error("bad-schedule", "the schedule gives both `every` and `cron`")
                .at(doc.key_span(&format!("{ptr_base}/cron")))
                .label("remove one of the two")
                .help("use `every` for a plain interval, or `cron` for specific days and times"),
        ),
        _ => {}
    }
    if let Some(every) = &s.every {
        if let Err(e) = parse_every(every) {
            let p = format!("{ptr_base}/every");
            out.push(diagnostic("bad-schedule", e, every, &p, doc));
        }
    }
    if let Some(cron) = &s.cron {
        if let Err(e) = check_cron(cron) {
            let p = format!("{ptr_base}/cron");
            out.push(diagnostic("bad-schedule", e, cron, &p, doc));
        }
    }
    if let Some(starting) = &s.starting {
        if let Err(e) = starting.parse::<FixedTime>() {
            let p = format!("{ptr_base}/starting");
            out.push(diagnostic("bad-schedule", e, starting, &p, doc));
        }
    }
    if let Some(tz) = &s.timezone {
        if let Err(e) = parse_timezone(tz) {
            let p = format!("{ptr_base}/timezone");
            out.push(diagnostic("unknown-timezone", e, tz, &p, doc));
        }
    }
    out
}

/// Turns a [`ParseError`] inside the string at `pointer` into a diagnostic in the file.
pub fn diagnostic(
    code: &'static str,
    e: ParseError,
    text: &str,
    pointer: &str,
    doc: &SpannedDoc,
) -> Diagnostic {
    let span = locate(doc, pointer, text, e.at.as_ref());
    let mut d = Diagnostic::error(code, e.message).at(span);
    if e.at.is_some() {
        d = d.label("here");
    }
    match e.help {
        Some(h) => d.help(h),
        None => d,
    }
}

/// The file span of byte range `at` inside the string value at `pointer`.
///
/// The value span includes the quotes. When the written string is exactly the text plus one
/// delimiter on each side (a one-line string without escapes, `"…"` or `'…'`), inner offsets
/// map one to one; otherwise (escapes, multi-line strings) the whole value is the best
/// honest answer.
pub fn locate(
    doc: &SpannedDoc,
    pointer: &str,
    text: &str,
    at: Option<&Range<usize>>,
) -> Option<Range<usize>> {
    let value = doc.value_span(pointer)?;
    let plain = value.end.checked_sub(value.start) == text.len().checked_add(2);
    match at {
        Some(r) if plain && r.start <= r.end && r.end <= text.len() => {
            let inner = value.start.checked_add(1)?;
            Some(inner.checked_add(r.start)?..inner.checked_add(r.end)?)
        }
        _ => Some(value),
    }
}

// ---------------------------------------------------------------------------------------------
// The parser
// ---------------------------------------------------------------------------------------------

/// One whitespace-separated word and where it starts in the parsed string.
#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    text: &'a str,
    start: usize,
}

impl Tok<'_> {
    fn end(&self) -> usize {
        self.start.saturating_add(self.text.len())
    }

    fn span(&self) -> Range<usize> {
        self.start..self.end()
    }

    fn is(&self, word: &str) -> bool {
        self.text.eq_ignore_ascii_case(word)
    }
}

fn tokenize(s: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            if let Some(st) = start.take() {
                if let Some(text) = s.get(st..i) {
                    out.push(Tok { text, start: st });
                }
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        if let Some(text) = s.get(st..) {
            out.push(Tok { text, start: st });
        }
    }
    out
}

const SIMPLE_UNITS: &[(&str, Unit)] = &[
    ("m", Unit::Minutes),
    ("min", Unit::Minutes),
    ("mins", Unit::Minutes),
    ("minute", Unit::Minutes),
    ("minutes", Unit::Minutes),
    ("h", Unit::Hours),
    ("hr", Unit::Hours),
    ("hrs", Unit::Hours),
    ("hour", Unit::Hours),
    ("hours", Unit::Hours),
    ("d", Unit::Days),
    ("day", Unit::Days),
    ("days", Unit::Days),
    ("w", Unit::Weeks),
    ("wk", Unit::Weeks),
    ("wks", Unit::Weeks),
    ("week", Unit::Weeks),
    ("weeks", Unit::Weeks),
    ("month", Unit::Months),
    ("months", Unit::Months),
    ("y", Unit::Years),
    ("yr", Unit::Years),
    ("yrs", Unit::Years),
    ("year", Unit::Years),
    ("years", Unit::Years),
];

const SECONDS_WORDS: [&str; 5] = ["s", "sec", "secs", "second", "seconds"];

const KEYWORDS: [&str; 8] = [
    "before", "after", "and", "of", "earlier", "later", "earliest", "latest",
];

fn simple_unit(word: &str) -> Option<Unit> {
    SIMPLE_UNITS
        .iter()
        .find(|(w, _)| word.eq_ignore_ascii_case(w))
        .map(|(_, u)| *u)
}

fn is_working_word(word: &str) -> bool {
    word.eq_ignore_ascii_case("working") || word.eq_ignore_ascii_case("business")
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// Looks like the start of a date: at least four digits, then `-`.
fn looks_like_date(word: &str) -> bool {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    digits >= 4 && word.as_bytes().get(digits) == Some(&b'-')
}

fn is_identifier(word: &str) -> bool {
    let mut chars = word.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The unit a misspelt word most likely meant, for "did you mean".
fn guess_unit(word: &str, next: Option<&str>) -> Option<&'static str> {
    const PHRASES: [&str; 4] = [
        "working days",
        "working hours",
        "business days",
        "business hours",
    ];
    let lower = word.to_ascii_lowercase();
    if let Some(next) = next {
        let phrase = format!("{lower} {}", next.to_ascii_lowercase());
        if let Some(hit) = did_you_mean(&phrase, PHRASES) {
            return Some(hit);
        }
    }
    const WORDS: [(&str, &str); 14] = [
        ("minute", "minutes"),
        ("minutes", "minutes"),
        ("hour", "hours"),
        ("hours", "hours"),
        ("day", "days"),
        ("days", "days"),
        ("week", "weeks"),
        ("weeks", "weeks"),
        ("month", "months"),
        ("months", "months"),
        ("year", "years"),
        ("years", "years"),
        ("working", "working days"),
        ("business", "business days"),
    ];
    let hit = did_you_mean(&lower, WORDS.iter().map(|(w, _)| *w))?;
    WORDS.iter().find(|(w, _)| *w == hit).map(|(_, s)| *s)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Tok<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            toks: tokenize(src),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).copied()
    }

    fn peek_at(&self, k: usize) -> Option<Tok<'a>> {
        self.toks.get(self.pos.saturating_add(k)).copied()
    }

    fn bump(&mut self) -> Option<Tok<'a>> {
        let t = self.peek()?;
        self.pos = self.pos.saturating_add(1);
        Some(t)
    }

    /// From the start of token `from` to the end of the last token read (or of the string).
    fn span_from(&self, from: usize) -> Range<usize> {
        let start = self.toks.get(from).map_or(0, |t| t.start);
        let last = self.pos.checked_sub(1).and_then(|i| self.toks.get(i));
        let end = match last {
            Some(t) if self.pos > from => t.end(),
            _ => self.toks.last().map_or(self.src.len(), |t| t.end()),
        };
        start..end.max(start)
    }

    /// Fails on anything left over.
    fn finish(&self, what: &str) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(ParseError::new(
                format!("`{}` does not belong in {what}", t.text),
                Some(t.start..self.toks.last().map_or(t.end(), |l| l.end())),
            )
            .help(format!("remove it, or check the spelling of {what}"))),
        }
    }

    fn due(&mut self) -> Result<Due, ParseError> {
        if let (Some(head), Some(of)) = (self.peek(), self.peek_at(1)) {
            let earlier = head.is("earlier") || head.is("earliest");
            let later = head.is("later") || head.is("latest");
            if (earlier || later) && of.is("of") {
                return self.combination(earlier, head);
            }
            if earlier || later {
                return Err(ParseError::new(
                    format!("write `{} of` followed by two due times", head.text),
                    Some(head.span()),
                )
                .help("for example `earlier of 7 days and 3 days before audit_date`"));
            }
        }
        self.simple()
    }

    /// `earlier of A and B and C` = earlier of A and (earlier of B and C); a nested
    /// `earlier of`/`later of` may only come last, where it takes the rest of the text.
    fn combination(&mut self, earlier: bool, head: Tok<'a>) -> Result<Due, ParseError> {
        self.pos = self.pos.saturating_add(2);
        let mut items = Vec::new();
        loop {
            let nested = self.peek().is_some_and(|t| {
                ["earlier", "later", "earliest", "latest"]
                    .iter()
                    .any(|w| t.is(w))
            });
            if nested {
                items.push(self.due()?);
                break;
            }
            if self.peek().is_none() {
                let after = self.toks.get(self.pos.saturating_sub(1)).copied();
                return Err(ParseError::new(
                    format!(
                        "`{}` needs a due time after it",
                        after.map_or(head.text, |t| t.text)
                    ),
                    Some(after.unwrap_or(head).span()),
                )
                .help("for example `earlier of 7 days and 3 days before audit_date`"));
            }
            items.push(self.simple()?);
            match self.peek() {
                Some(t) if t.is("and") => {
                    self.bump();
                }
                _ => break,
            }
        }
        let mut it = items.into_iter().rev();
        let Some(mut acc) = it.next() else {
            return Err(ParseError::new("nothing to compare", Some(head.span())));
        };
        let mut count = 1;
        for d in it {
            count += 1;
            acc = if earlier {
                Due::Earlier(Box::new(d), Box::new(acc))
            } else {
                Due::Later(Box::new(d), Box::new(acc))
            };
        }
        if count < 2 {
            return Err(ParseError::new(
                format!("`{} of` compares two due times joined by `and`", head.text),
                Some(head.start..self.src.len()),
            )
            .help("for example `earlier of 7 days and 3 days before audit_date`"));
        }
        Ok(acc)
    }

    /// One due time without `earlier of`/`later of`.
    fn simple(&mut self) -> Result<Due, ParseError> {
        let Some(t) = self.peek() else {
            return Err(ParseError::new("a due time is missing", None).help(DUE_FORMS));
        };
        if looks_like_date(t.text) {
            self.bump();
            return self.fixed(t).map(Due::Fixed);
        }
        let first = t.text.chars().next().unwrap_or(' ');
        if first.is_ascii_digit() || matches!(first, '-' | '+' | '.') {
            let amount = self.amount()?;
            return match self.peek() {
                Some(k) if k.is("before") || k.is("after") => {
                    self.bump();
                    let field = self.field_after(k)?;
                    Ok(Due::Relative {
                        amount,
                        before: k.is("before"),
                        field,
                    })
                }
                _ => Ok(Due::After(amount)),
            };
        }
        if simple_unit(t.text).is_some() || is_working_word(t.text) {
            // Show the whole unit (`working days`), not just its first word.
            let unit_end = match self.peek_at(1) {
                Some(n) if is_working_word(t.text) && simple_unit(n.text).is_some() => n,
                _ => t,
            };
            let unit = self.src.get(t.start..unit_end.end()).unwrap_or(t.text);
            return Err(ParseError::new(
                format!("a number is missing before `{unit}`"),
                Some(t.start..unit_end.end()),
            )
            .help(format!("write how many, like `3 {unit}`")));
        }
        const FILLERS: [&str; 6] = ["by", "on", "at", "until", "within", "in"];
        if let Some(next) = self.peek_at(1) {
            if FILLERS.iter().any(|w| t.is(w)) {
                let rest = self.src.get(next.start..).unwrap_or(next.text).trim_end();
                return Err(
                    ParseError::new(format!("leave out `{}`", t.text), Some(t.span()))
                        .help(format!("write just `{rest}`")),
                );
            }
            if is_identifier(t.text)
                && (simple_unit(next.text).is_some() || is_working_word(next.text))
            {
                return Err(ParseError::new(
                    format!("`{}` is not a number", t.text),
                    Some(t.span()),
                )
                .help(format!("write numbers with digits, like `3 {}`", next.text)));
            }
        }
        if is_keyword(t.text) {
            return Err(ParseError::new(
                format!("expected a due time, found `{}`", t.text),
                Some(t.span()),
            )
            .help(DUE_FORMS));
        }
        if is_identifier(t.text) {
            self.bump();
            return Ok(Due::AtField(t.text.to_string()));
        }
        Err(ParseError::new(
            format!("`{}` is not a time, a date or a field name", t.text),
            Some(t.span()),
        )
        .help(DUE_FORMS))
    }

    /// The date field after `before`/`after`.
    fn field_after(&mut self, keyword: Tok<'a>) -> Result<String, ParseError> {
        let Some(f) = self.bump() else {
            return Err(ParseError::new(
                format!("`{}` what? Name a date field", keyword.text),
                Some(keyword.span()),
            )
            .help(format!(
                "for example `10 days {} warranty_end`",
                keyword.text.to_ascii_lowercase()
            )));
        };
        if looks_like_date(f.text) {
            return Err(ParseError::new(
                format!(
                    "`{}` can only count from a date field, not from a written date",
                    keyword.text
                ),
                Some(f.span()),
            )
            .help(
                "write the date itself (`2027-01-31`), or keep it in a field of the instance data",
            ));
        }
        if is_keyword(f.text) || !is_identifier(f.text) {
            return Err(ParseError::new(
                format!("`{}` is not a field name", f.text),
                Some(f.span()),
            )
            .help("field names are one word of letters, digits and `_`, like `warranty_end`"));
        }
        Ok(f.text.to_string())
    }

    /// A date or date-time written as one word (or a date and a time as two words).
    fn fixed(&mut self, t: Tok<'a>) -> Result<FixedTime, ParseError> {
        const FORMAT_HELP: &str = "write dates as `2027-01-31`, times as `2027-01-31T17:00`, \
             and exact instants with their offset: `2027-01-31T17:00:00Z`, `2027-01-31T17:00+08:00`";
        let bad = |msg: String, at: Range<usize>| ParseError::new(msg, Some(at)).help(FORMAT_HELP);
        let (date_text, time_text, at) = match t.text.find(['T', 't']) {
            Some(i) => (
                t.text.get(..i).unwrap_or_default(),
                t.text.get(i.saturating_add(1)..),
                t.span(),
            ),
            None => {
                // TOML and people both write "2027-01-31 17:00"; take the time as well.
                match self.peek() {
                    Some(n)
                        if n.text.as_bytes().get(..3).is_some_and(|b| {
                            b.first().is_some_and(u8::is_ascii_digit) && b.contains(&b':')
                        }) =>
                    {
                        self.bump();
                        (t.text, Some(n.text), t.start..n.end())
                    }
                    _ => (t.text, None, t.span()),
                }
            }
        };
        let date = parse_date(date_text).ok_or_else(|| {
            bad(
                format!("`{date_text}` is not a date on the calendar"),
                t.start..t.start.saturating_add(date_text.len()),
            )
        })?;
        let Some(time_text) = time_text else {
            return Ok(FixedTime::Date(date));
        };
        let whole = || format!("`{}`", self.src.get(at.clone()).unwrap_or(t.text));
        // Split off the zone: `Z`, or a sign after the time's first character.
        let (clock, zone) = if let Some(c) = time_text.strip_suffix(['Z', 'z']) {
            (c, Some(0))
        } else if let Some(i) = time_text
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '+' || *c == '-')
            .map(|(i, _)| i)
        {
            let sign: i32 = if time_text.get(i..=i) == Some("-") {
                -1
            } else {
                1
            };
            let offset = time_text
                .get(i.saturating_add(1)..)
                .and_then(parse_offset)
                .ok_or_else(|| {
                    bad(
                        format!("{} has an offset sopflow cannot read", whole()),
                        at.clone(),
                    )
                })?;
            (time_text.get(..i).unwrap_or_default(), Some(sign * offset))
        } else {
            (time_text, None)
        };
        let time = NaiveTime::from_str(clock).map_err(|_| {
            bad(
                format!("{} is not a valid date and time", whole()),
                at.clone(),
            )
        })?;
        let local = date.and_time(time);
        match zone {
            None => Ok(FixedTime::Local(local)),
            Some(secs) => FixedOffset::east_opt(secs)
                .and_then(|o| o.from_local_datetime(&local).single())
                .map(FixedTime::Exact)
                .ok_or_else(|| {
                    bad(
                        format!("{} has an offset out of range", whole()),
                        at.clone(),
                    )
                }),
        }
    }

    /// A number and its unit.
    fn amount(&mut self) -> Result<Amount, ParseError> {
        let Some(t) = self.bump() else {
            return Err(ParseError::new("an amount of time is missing", None)
                .help("for example `24h` or `3 working days`"));
        };
        if t.text.starts_with('-') {
            return Err(ParseError::new(
                format!("`{}` is negative; an amount of time cannot be", t.text),
                Some(t.span()),
            )
            .help("to point before a date write `3 days before audit_date`; for a reminder, `2h before`"));
        }
        if t.text.starts_with('+') {
            return Err(ParseError::new(
                format!("write `{}` without the `+`", t.text),
                Some(t.span()),
            )
            .help("for example `3 days`"));
        }
        let digits = t.text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, rest) = t.text.split_at_checked(digits).unwrap_or((t.text, ""));
        // Decimals: `1.5 days`, `1,5 days`, `.5h`.
        if let Some(after_point) = rest.strip_prefix(['.', ',']) {
            let frac = after_point.bytes().take_while(u8::is_ascii_digit).count();
            if frac > 0 {
                return Err(self.decimal_error(t, number, after_point, frac));
            }
        }
        if digits == 0 {
            return Err(ParseError::new(
                format!("expected a number, found `{}`", t.text),
                Some(t.span()),
            )
            .help("for example `24h` or `3 working days`"));
        }
        let number_span = t.start..t.start.saturating_add(digits);
        let n: u32 = number.parse().map_err(|_| {
            ParseError::new(
                format!("`{number}` is far too large"),
                Some(number_span.clone()),
            )
            .help("deadlines can be at most about 100 years away")
        })?;
        let (unit, unit_span) = if rest.is_empty() {
            match self.peek() {
                Some(u) if !is_keyword(u.text) => {
                    self.bump();
                    self.unit(u)?
                }
                _ => return Err(missing_unit(number, number_span)),
            }
        } else {
            let glued = Tok {
                text: rest,
                start: t.start.saturating_add(digits),
            };
            self.unit(glued)?
        };
        if n > unit.max() {
            let amount = Amount::new(n, unit);
            return Err(ParseError::new(
                format!("`{amount}` is more than 100 years"),
                Some(t.start..unit_span.end),
            )
            .help(format!(
                "amounts can be at most about 100 years ({})",
                Amount::new(unit.max(), unit)
            )));
        }
        Ok(Amount::new(n, unit))
    }

    /// The unit starting with `first` (which is already read); may read `days`/`hours` after
    /// `working`.
    fn unit(&mut self, first: Tok<'a>) -> Result<(Unit, Range<usize>), ParseError> {
        if let Some(u) = simple_unit(first.text) {
            return Ok((u, first.span()));
        }
        if is_working_word(first.text) {
            let Some(second) = self.peek() else {
                return Err(ParseError::new(
                    format!("`{}` what? Say `{0} days` or `{0} hours`", first.text),
                    Some(first.span()),
                )
                .help(UNITS_LIST));
            };
            let span = first.start..second.end();
            return match simple_unit(second.text) {
                Some(Unit::Days) => {
                    self.bump();
                    Ok((Unit::WorkingDays, span))
                }
                Some(Unit::Hours) => {
                    self.bump();
                    Ok((Unit::WorkingHours, span))
                }
                Some(other) => Err(ParseError::new(
                    format!(
                        "working time is counted in working days or working hours, not {}",
                        other.plural()
                    ),
                    Some(span),
                )
                .help("for example `15 working days` or `4 working hours`")),
                None => {
                    let mut e = ParseError::new(
                        format!("`{} {}` is not a unit of time", first.text, second.text),
                        Some(second.span()),
                    );
                    let guess = guess_unit(first.text, Some(second.text));
                    e.help = Some(match guess {
                        Some(g) => format!("did you mean `{g}`? {UNITS_LIST}"),
                        None => UNITS_LIST.to_string(),
                    });
                    Err(e)
                }
            };
        }
        if SECONDS_WORDS.iter().any(|w| first.is(w)) {
            return Err(ParseError::new(
                "deadlines are not counted in seconds",
                Some(first.span()),
            )
            .help("use minutes, e.g. `1m`"));
        }
        let next = self.peek().filter(|n| !is_keyword(n.text)).map(|n| n.text);
        let guess = guess_unit(first.text, next);
        Err(ParseError::new(
            format!("`{}` is not a unit of time", first.text),
            Some(first.span()),
        )
        .help(match guess {
            Some(g) => format!("did you mean `{g}`? {UNITS_LIST}"),
            None => UNITS_LIST.to_string(),
        }))
    }

    /// `1.5 days`: say so, and offer the same amount in a smaller unit when it is whole.
    fn decimal_error(&self, t: Tok<'a>, whole: &str, after_point: &str, frac: usize) -> ParseError {
        let frac_text = after_point.get(..frac).unwrap_or_default();
        let glued = after_point.get(frac..).unwrap_or_default();
        let at = t.start
            ..t.start
                .saturating_add(whole.len())
                .saturating_add(1)
                .saturating_add(frac);
        let written = format!("{whole}.{frac_text}");
        // The unit, without consuming or judging it: only for the hint.
        let unit = if glued.is_empty() {
            self.peek().and_then(|u| {
                if is_working_word(u.text) {
                    let second = self.peek_at(1)?;
                    match simple_unit(second.text)? {
                        Unit::Days => Some(Unit::WorkingDays),
                        Unit::Hours => Some(Unit::WorkingHours),
                        _ => None,
                    }
                } else {
                    simple_unit(u.text)
                }
            })
        } else {
            simple_unit(glued)
        };
        let smaller = unit.and_then(|u| {
            let (factor, to): (u64, &str) = match u {
                Unit::Days => (24, "h"),
                Unit::Hours => (60, " minutes"),
                Unit::Weeks => (7, " days"),
                Unit::Years => (12, " months"),
                _ => return None,
            };
            let scale = 10u64.checked_pow(u32::try_from(frac).ok()?)?;
            let int: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().ok()?
            };
            let f: u64 = frac_text.parse().ok()?;
            let value = int
                .checked_mul(scale)?
                .checked_add(f)?
                .checked_mul(factor)?;
            (value % scale == 0).then(|| format!("{}{to}", value / scale))
        });
        let help = match smaller {
            Some(s) => format!("use whole numbers: `{s}`"),
            None => {
                "use whole numbers, or a smaller unit (`36h` instead of `1.5 days`)".to_string()
            }
        };
        ParseError::new(format!("`{written}` is not a whole number"), Some(at)).help(help)
    }
}

fn missing_unit(number: &str, at: Range<usize>) -> ParseError {
    ParseError::new(format!("`{number}` needs a unit of time"), Some(at)).help(format!(
        "say what {number} is: `{number} days`, `{number} working days`, `{number}h`"
    ))
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    // Exactly YYYY-MM-DD (four-digit year or more), so `2027-1-5` is not silently accepted.
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() < 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !(all_digits(y) && all_digits(m) && all_digits(d)) {
        return None;
    }
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

/// `08:00` or `0800` or `08` → seconds.
fn parse_offset(s: &str) -> Option<i32> {
    let (h, m) = match s.split_once(':') {
        Some((h, m)) => (h, m),
        None if s.len() == 4 => (s.get(..2)?, s.get(2..)?),
        None => (s, "00"),
    };
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 3600 + m * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(s: &str) -> Amount {
        parse_amount(s).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    fn due(s: &str) -> Due {
        s.parse::<Due>().unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    fn err<T: fmt::Debug>(r: Result<T, ParseError>) -> ParseError {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    /// The text an error points at.
    fn pointed<'a>(s: &'a str, e: &ParseError) -> &'a str {
        e.at.clone().and_then(|r| s.get(r)).unwrap_or("<none>")
    }

    #[test]
    fn accepts_every_documented_amount_form() {
        use Unit::*;
        let cases = [
            ("30m", 30, Minutes),
            ("30 min", 30, Minutes),
            ("30 minutes", 30, Minutes),
            ("1 minute", 1, Minutes),
            ("24h", 24, Hours),
            ("24 hours", 24, Hours),
            ("1 hour", 1, Hours),
            ("7d", 7, Days),
            ("7 days", 7, Days),
            ("1 day", 1, Days),
            ("2w", 2, Weeks),
            ("2 weeks", 2, Weeks),
            ("6 months", 6, Months),
            ("1 year", 1, Years),
            ("3 working days", 3, WorkingDays),
            ("1 working day", 1, WorkingDays),
            ("4 working hours", 4, WorkingHours),
            ("2 business days", 2, WorkingDays),
            ("1 business hour", 1, WorkingHours),
            ("0h", 0, Hours),
            ("  3   Working   DAYS ", 3, WorkingDays),
            ("24H", 24, Hours),
            ("1 days", 1, Days),
        ];
        for (text, n, unit) in cases {
            assert_eq!(amount(text), Amount::new(n, unit), "{text}");
        }
    }

    #[test]
    fn amounts_print_canonically_and_round_trip() {
        assert_eq!(amount("24h").to_string(), "24 hours");
        assert_eq!(amount("1 business day").to_string(), "1 working day");
        assert_eq!(amount("30m").to_string(), "30 minutes");
        for s in [
            "0 hours",
            "1 minute",
            "2 weeks",
            "3 working days",
            "1 working hour",
            "1 year",
        ] {
            assert_eq!(amount(s).to_string(), s);
            assert_eq!(amount(&amount(s).to_string()), amount(s));
        }
    }

    #[test]
    fn rejects_decimals_with_a_whole_number_hint() {
        let s = "1.5 days";
        let e = err(parse_amount(s));
        assert_eq!(e.message, "`1.5` is not a whole number");
        assert_eq!(pointed(s, &e), "1.5");
        assert_eq!(e.help.as_deref(), Some("use whole numbers: `36h`"));

        let e = err(parse_amount("2,5h"));
        assert_eq!(e.help.as_deref(), Some("use whole numbers: `150 minutes`"));
        let e = err(parse_amount("1.5 working days"));
        assert!(e
            .help
            .unwrap_or_default()
            .starts_with("use whole numbers, or"));
    }

    #[test]
    fn rejects_a_missing_unit() {
        let e = err(parse_amount("3"));
        assert_eq!(e.message, "`3` needs a unit of time");
        assert_eq!(
            e.help.as_deref(),
            Some("say what 3 is: `3 days`, `3 working days`, `3h`")
        );
        assert_eq!(e.at, Some(0..1));
        let s = "3 before audit_date";
        let e = err(s.parse::<Due>());
        assert_eq!(pointed(s, &e), "3");
    }

    #[test]
    fn rejects_unknown_units_with_did_you_mean() {
        let s = "3 wrking days";
        let e = err(parse_amount(s));
        assert_eq!(e.message, "`wrking` is not a unit of time");
        assert_eq!(pointed(s, &e), "wrking");
        let help = e.help.unwrap_or_default();
        assert!(help.starts_with("did you mean `working days`?"), "{help}");
        assert!(help.contains("Units: minutes, hours"), "{help}");

        let s = "3 dyas";
        let e = err(parse_amount(s));
        assert_eq!(pointed(s, &e), "dyas");
        assert!(e
            .help
            .unwrap_or_default()
            .starts_with("did you mean `days`?"));

        let s = "2 working dayz";
        let e = err(parse_amount(s));
        assert_eq!(pointed(s, &e), "dayz");
        assert!(e
            .help
            .unwrap_or_default()
            .starts_with("did you mean `working days`?"));

        let e = err(parse_amount("5 working weeks"));
        assert!(e.message.contains("working days or working hours"));
        let e = err(parse_amount("3 working"));
        assert!(e.message.contains("`working` what?"));
        let e = err(parse_amount("30s"));
        assert_eq!(e.message, "deadlines are not counted in seconds");
        let e = err(parse_amount("3 fortnights"));
        assert_eq!(e.help.as_deref(), Some(UNITS_LIST));
    }

    #[test]
    fn rejects_negative_signed_and_huge_amounts_without_panicking() {
        let e = err(parse_amount("-3 days"));
        assert!(e.message.contains("negative"));
        assert_eq!(e.at, Some(0..2));
        assert!(err(parse_amount("+3 days"))
            .message
            .contains("without the `+`"));
        let s = "4000000000 days";
        let e = err(parse_amount(s));
        assert_eq!(e.message, "`4000000000 days` is more than 100 years");
        assert_eq!(pointed(s, &e), s);
        let s = "99999999999999999999 working days";
        let e = err(parse_amount(s));
        assert_eq!(pointed(s, &e), "99999999999999999999");
        assert!(err(parse_amount("99999999999999999999.5 days"))
            .message
            .contains("whole"));
        assert!(err(parse_amount("")).message.contains("no amount"));
        assert!(err(parse_amount("3 days later"))
            .message
            .contains("`later` does not belong"));
    }

    #[test]
    fn parses_due_forms() {
        let h24 = Amount::new(24, Unit::Hours);
        assert_eq!(due("24h"), Due::After(h24));
        assert_eq!(
            due("10 days before warranty_end"),
            Due::Relative {
                amount: Amount::new(10, Unit::Days),
                before: true,
                field: "warranty_end".into()
            }
        );
        assert_eq!(
            due("2 working days AFTER audit_date"),
            Due::Relative {
                amount: Amount::new(2, Unit::WorkingDays),
                before: false,
                field: "audit_date".into()
            }
        );
        assert_eq!(due("audit_date"), Due::AtField("audit_date".into()));
        let d = NaiveDate::from_ymd_opt(2027, 1, 31).unwrap_or_default();
        assert_eq!(due("2027-01-31"), Due::Fixed(FixedTime::Date(d)));
        let t = d.and_hms_opt(17, 0, 0).unwrap_or_default();
        assert_eq!(due("2027-01-31T17:00"), Due::Fixed(FixedTime::Local(t)));
        assert_eq!(due("2027-01-31 17:00"), Due::Fixed(FixedTime::Local(t)));
        let z = FixedOffset::east_opt(0).and_then(|o| o.from_local_datetime(&t).single());
        assert_eq!(
            due("2027-01-31T17:00:00Z"),
            Due::Fixed(FixedTime::Exact(z.unwrap_or_default()))
        );
        let cst = FixedOffset::east_opt(8 * 3600).and_then(|o| o.from_local_datetime(&t).single());
        let Due::Fixed(FixedTime::Exact(x)) = due("2027-01-31T17:00+08:00") else {
            panic!("not exact")
        };
        assert_eq!(Some(x), cst);
        assert_eq!(x.offset().local_minus_utc(), 8 * 3600);
        assert!(matches!(
            due("2027-01-31T17:00:00-05:30"),
            Due::Fixed(FixedTime::Exact(_))
        ));
        assert_eq!(
            due("earlier of 7 days and 3 days before audit_date"),
            Due::Earlier(
                Box::new(Due::After(Amount::new(7, Unit::Days))),
                Box::new(Due::Relative {
                    amount: Amount::new(3, Unit::Days),
                    before: true,
                    field: "audit_date".into()
                })
            )
        );
        assert_eq!(
            due("later of a and b and c"),
            Due::Later(
                Box::new(Due::AtField("a".into())),
                Box::new(Due::Later(
                    Box::new(Due::AtField("b".into())),
                    Box::new(Due::AtField("c".into()))
                ))
            )
        );
        assert!(
            matches!(due("earlier of 7 days and later of a and b"), Due::Earlier(_, b) if matches!(*b, Due::Later(..)))
        );
    }

    #[test]
    fn due_round_trips_through_display() {
        for s in [
            "24 hours",
            "10 days before warranty_end",
            "2 working days after audit_date",
            "audit_date",
            "2027-01-31",
            "2027-01-31T17:00",
            "2027-01-31T17:00:30",
            "2027-01-31T17:00Z",
            "2027-01-31T17:00+08:00",
            "2027-01-31T17:00-05:30",
            "earlier of 7 days and 3 days before audit_date",
            "later of a and b and c",
            "later of a and earlier of b and c",
            "earlier of 1 working day and later of a and 2027-01-01",
            "earlier of a and b and later of c and e",
        ] {
            assert_eq!(due(s).to_string(), s, "{s}");
            assert_eq!(due(&due(s).to_string()), due(s));
        }
        assert_eq!(
            due("EARLIER OF 7d AND 3d BEFORE x").to_string(),
            "earlier of 7 days and 3 days before x"
        );
        assert_eq!(due("2027-01-31T17:00:00Z").to_string(), "2027-01-31T17:00Z");
    }

    #[test]
    fn lists_fields_and_working_time() {
        let d = due(
            "earlier of 2 working days before audit_date and later of audit_date and warranty_end",
        );
        assert_eq!(d.fields(), vec!["audit_date", "warranty_end"]);
        assert!(d.uses_working_time());
        assert!(due("24h").fields().is_empty());
        assert!(!due("later of 24h and audit_date").uses_working_time());
        assert!(due("4 working hours").uses_working_time());
    }

    #[test]
    fn rejects_bad_due_times_at_the_right_word() {
        let cases = [
            ("", "the due time is empty", "<none>"),
            (
                "10 days before",
                "`before` what? Name a date field",
                "before",
            ),
            (
                "10 days before 2027-01-01",
                "`before` can only count from a date field, not from a written date",
                "2027-01-01",
            ),
            (
                "10 days before warranty-end",
                "`warranty-end` is not a field name",
                "warranty-end",
            ),
            (
                "7 days and 3 days",
                "to combine two due times, start with `earlier of` or `later of`",
                "and",
            ),
            (
                "earlier of 7 days",
                "`earlier of` compares two due times joined by `and`",
                "earlier of 7 days",
            ),
            (
                "earlier of 7 days and",
                "`and` needs a due time after it",
                "and",
            ),
            (
                "earlier 7 days and 3 days",
                "write `earlier of` followed by two due times",
                "earlier",
            ),
            ("days before x", "a number is missing before `days`", "days"),
            (
                "2027-02-30",
                "`2027-02-30` is not a date on the calendar",
                "2027-02-30",
            ),
            (
                "2027-01-31T25:00",
                "`2027-01-31T25:00` is not a valid date and time",
                "2027-01-31T25:00",
            ),
            (
                "2027-01-31T10:00+99:00",
                "`2027-01-31T10:00+99:00` has an offset sopflow cannot read",
                "2027-01-31T10:00+99:00",
            ),
            (
                "audit date",
                "`date` does not belong in the due time",
                "date",
            ),
            ("before x", "expected a due time, found `before`", "before"),
            ("#x", "`#x` is not a time, a date or a field name", "#x"),
            (
                "3 wrking days before x",
                "`wrking` is not a unit of time",
                "wrking",
            ),
            (
                "working days",
                "a number is missing before `working days`",
                "working days",
            ),
            ("three days", "`three` is not a number", "three"),
            ("by audit_date", "leave out `by`", "by"),
            ("within 3 days", "leave out `within`", "within"),
            (
                "audit_date + 3 days",
                "sopflow does not calculate with `+` and `-`",
                "+",
            ),
            (
                "24 hours from now",
                "`from` does not belong in the due time",
                "from now",
            ),
        ];
        for (s, message, at) in cases {
            let e = err(s.parse::<Due>());
            assert_eq!(e.message, message, "{s}");
            assert_eq!(pointed(s, &e), at, "{s}");
        }
    }

    #[test]
    fn error_offsets_are_byte_offsets_in_unicode_text() {
        let s = "\u{3000}3 wrking days";
        let e = err(parse_amount(s));
        assert_eq!(pointed(s, &e), "wrking");
    }

    #[test]
    fn reminders_need_before() {
        assert_eq!(
            parse_reminder("2h before"),
            Ok(Reminder::Before(Amount::new(2, Unit::Hours)))
        );
        assert_eq!(
            parse_reminder("every 3 days"),
            Ok(Reminder::Every(Amount::new(3, Unit::Days)))
        );
        assert_eq!(
            parse_reminder("every 1 working day"),
            Ok(Reminder::Every(Amount::new(1, Unit::WorkingDays)))
        );
        assert!(err(parse_reminder("every 30m"))
            .message
            .contains("at least an hour apart"));
        assert!(err(parse_reminder("every 0 days"))
            .message
            .contains("greater than zero"));
        assert!(parse_reminder("every 3 days before").is_err());
        assert_eq!(
            parse_reminder("1 working day before"),
            Ok(Reminder::Before(Amount::new(1, Unit::WorkingDays)))
        );
        assert_eq!(
            parse_reminder("1 day before the deadline"),
            Ok(Reminder::Before(Amount::new(1, Unit::Days)))
        );
        let e = err(parse_reminder("2h"));
        assert_eq!(e.message, "say that the reminder is before the due time");
        assert_eq!(e.help.as_deref(), Some("write `2 hours before`"));
        let s = "2h after";
        let e = err(parse_reminder(s));
        assert_eq!(pointed(s, &e), "after");
        assert!(err(parse_reminder("")).message.contains("empty"));
        assert!(err(parse_reminder("2 hour before x"))
            .message
            .contains("`x` does not belong"));
    }

    #[test]
    fn schedule_intervals() {
        assert_eq!(parse_every("6 months"), Ok(Amount::new(6, Unit::Months)));
        assert_eq!(parse_every("1 year"), Ok(Amount::new(1, Unit::Years)));
        assert_eq!(parse_every("2 weeks"), Ok(Amount::new(2, Unit::Weeks)));
        assert_eq!(parse_every("1 day"), Ok(Amount::new(1, Unit::Days)));
        assert_eq!(parse_every("half a year"), Ok(Amount::new(6, Unit::Months)));
        assert_eq!(
            parse_every("every 2 weeks"),
            Ok(Amount::new(2, Unit::Weeks))
        );
        assert!(err(parse_every("3 working days"))
            .message
            .contains("calendar time"));
        assert!(err(parse_every("12h"))
            .help
            .unwrap_or_default()
            .contains("cron"));
        assert!(err(parse_every("0 days")).message.contains("zero"));
        assert!(err(parse_every("half a day"))
            .message
            .contains("half a year"));
        assert!(err(parse_every("")).message.contains("empty"));
    }

    #[test]
    fn cron_expressions() {
        assert_eq!(check_cron("0 9 1 1,7 *"), Ok(()));
        assert_eq!(check_cron("*/15 8-17 * * mon-fri"), Ok(()));
        assert_eq!(check_cron("@yearly"), Ok(()));
        let s = "61 9 * * *";
        let e = err(check_cron(s));
        assert_eq!(e.message, "`61` is not a valid minute");
        assert_eq!(pointed(s, &e), "61");
        let s = "0 9 1 13 *";
        let e = err(check_cron(s));
        assert_eq!(e.message, "`13` is not a valid month");
        assert_eq!(pointed(s, &e), "13");
        let s = "0 0 9 1 1,7 *";
        let e = err(check_cron(s));
        assert!(e
            .message
            .starts_with("a cron expression has 5 parts, but this one has 6"));
        assert_eq!(pointed(s, &e), "*");
        assert!(err(check_cron("0 9 *")).message.contains("has 3"));
        assert!(err(check_cron("")).message.contains("empty"));
        assert!(err(check_cron("@sometimes"))
            .message
            .contains("not a cron shortcut"));
        assert_eq!(
            err(check_cron("0 9 * * funday")).message,
            "`funday` is not a valid day of the week"
        );
    }

    #[test]
    fn fixed_times_alone() {
        assert!("2027-01-15".parse::<FixedTime>().is_ok());
        assert!("2027-01-15T09:00:00".parse::<FixedTime>().is_ok());
        assert!("2027-01-15T09:00:00.5+01:00".parse::<FixedTime>().is_ok());
        assert!("2027-1-15".parse::<FixedTime>().is_err());
        assert!("2027-01-15 junk".parse::<FixedTime>().is_err());
        assert!("".parse::<FixedTime>().is_err());
        assert!("soon".parse::<FixedTime>().is_err());
    }

    proptest::proptest! {
        #[test]
        fn no_input_makes_the_parsers_panic(s in "\\PC{0,40}") {
            let _ = s.parse::<Due>();
            let _ = parse_amount(&s);
            let _ = parse_reminder(&s);
            let _ = parse_every(&s);
            let _ = check_cron(&s);
            let _ = s.parse::<FixedTime>();
        }

        #[test]
        fn errors_point_inside_the_string(
            s in "[0-9a-z .,:+-]{0,12}( (working|days?|hours?|before|after|and|of|earlier)){0,4}"
        ) {
            if let Err(e) = s.parse::<Due>() {
                if let Some(r) = e.at {
                    proptest::prop_assert!(r.start <= r.end && r.end <= s.len());
                    proptest::prop_assert!(s.get(r).is_some());
                }
            }
        }

        #[test]
        fn amounts_round_trip(n in 0u32..30_000, u in 0usize..8) {
            let units = [
                Unit::Minutes, Unit::Hours, Unit::Days, Unit::Weeks,
                Unit::Months, Unit::Years, Unit::WorkingDays, Unit::WorkingHours,
            ];
            let unit = units.get(u).copied().unwrap_or(Unit::Days);
            let a = Amount::new(n.min(unit.max()), unit);
            proptest::prop_assert_eq!(parse_amount(&a.to_string()), Ok(a));
            let d = Due::Relative { amount: a, before: n % 2 == 0, field: "f".into() };
            proptest::prop_assert_eq!(d.to_string().parse::<Due>(), Ok(d));
        }
    }

    fn deadline_doc(src: &str) -> (SpannedDoc, Deadline) {
        let doc = SpannedDoc::parse(src).unwrap_or_else(|e| panic!("{e:?}"));
        let d: Deadline =
            serde_json::from_value(doc.value["deadline"].clone()).unwrap_or_else(|e| panic!("{e}"));
        (doc, d)
    }

    #[test]
    fn deadline_diagnostics_point_into_the_file() {
        let src = "[deadline]\ndue = \"3 wrking days\"\nremind = [\"2h\", '1 day before']\non_breach = [{ after = \"1.5 days\", notify = \"x\" }]\n";
        let (doc, d) = deadline_doc(src);
        let diags = check_deadline(&d, "/deadline", &doc);
        assert_eq!(diags.len(), 3, "{diags:?}");
        assert!(diags
            .iter()
            .all(|d| d.code == "bad-duration" && d.is_error()));
        let text = |i: usize| {
            diags
                .get(i)
                .and_then(|d| d.span.clone())
                .and_then(|r| src.get(r))
                .unwrap_or("")
        };
        assert_eq!(text(0), "wrking");
        assert_eq!(text(1), "2h");
        assert_eq!(text(2), "1.5");
    }

    #[test]
    fn escaped_strings_fall_back_to_the_whole_value() {
        let src = "[deadline]\ndue = \"3 wrking\\u0020days\"\n";
        let (doc, d) = deadline_doc(src);
        let diags = check_deadline(&d, "/deadline", &doc);
        let span = diags
            .first()
            .and_then(|d| d.span.clone())
            .unwrap_or_default();
        assert_eq!(src.get(span), Some("\"3 wrking\\u0020days\""));
    }

    #[test]
    fn schedule_diagnostics() {
        let check = |src: &str| {
            let doc = SpannedDoc::parse(src).unwrap_or_else(|e| panic!("{e:?}"));
            let s: Schedule = serde_json::from_value(doc.value["schedule"].clone())
                .unwrap_or_else(|e| panic!("{e}"));
            let diags = check_schedule(&s, "/schedule", &doc);
            diags
                .into_iter()
                .map(|d| {
                    (
                        d.code,
                        d.span.and_then(|r| src.get(r)).unwrap_or("").to_string(),
                        d.help,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert!(check("[schedule]\nevery = \"6 months\"\nstarting = 2027-01-15\ntimezone = \"Asia/Shanghai\"\n").is_empty());
        assert!(check("[schedule]\ncron = \"0 9 1 1,7 *\"\n").is_empty());
        let d = check("[schedule]\ntimezone = \"UTC\"\n");
        assert_eq!(d.first().map(|x| x.0), Some("bad-schedule"));
        let d = check("[schedule]\nevery = \"1 year\"\ncron = \"0 9 1 1 *\"\n");
        assert_eq!(
            d.first().map(|x| (x.0, x.1.as_str())),
            Some(("bad-schedule", "cron"))
        );
        let d = check("[schedule]\nevery = \"6 mnths\"\nstarting = \"next week\"\ntimezone = \"Asia/Shangai\"\n");
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!(d.first().map(|x| x.1.as_str()), Some("mnths"));
        assert_eq!(d.get(1).map(|x| x.1.as_str()), Some("\"next week\""));
        let tz = d.get(2).cloned().unwrap_or_else(|| panic!("no tz"));
        assert_eq!(tz.0, "unknown-timezone");
        assert_eq!(tz.1, "\"Asia/Shangai\"");
        assert_eq!(tz.2.as_deref(), Some("did you mean `Asia/Shanghai`?"));
    }
}
