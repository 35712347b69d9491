//! The auditor's side of the history: the filters people type (`--actor liu.yang --from
//! 2026-03-01 --to 2026-04-01`), checked before any read; the page cursor as text; and the
//! export encodings — JSON Lines and CSV — written a page at a time, so an export of any
//! size runs in constant memory.
//!
//! Everything here reads through `Engine::audit`, which serves the store's audit index.
//! This module must not write to the store, and must not summarise or reorder events: an
//! export is the stored events, byte-for-byte decodable back to what the store holds.

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::definition::diagnostic::did_you_mean;
use crate::engine::instance::{Event, EventKind, InstanceId};
use crate::engine::service::{AuditRecord, Engine, ServiceError};
use crate::store::{AuditQuery, Store};

/// Events per page of an export: large enough to amortise the index scan, small enough to
/// keep memory flat.
const EXPORT_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A filter or cursor that cannot be used; the sentence says how to write it.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
    #[error("cannot write the export: {0}")]
    Csv(#[from] csv::Error),
}

/// Filters as given by a person or a query string, before they are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub actor: Option<String>,
    pub procedure: Option<String>,
    pub kind: Option<String>,
    /// Inclusive: an RFC 3339 instant or a date (midnight UTC).
    pub from: Option<String>,
    /// Exclusive, like `from`.
    pub to: Option<String>,
}

impl Filters {
    /// The store query these filters ask for, or what is wrong with them.
    /// The store query; a date written alone is its midnight in `zone`.
    pub fn query(&self, zone: chrono_tz::Tz) -> Result<AuditQuery, AuditError> {
        if let Some(kind) = &self.kind {
            if !EventKind::NAMES.contains(&kind.as_str()) {
                let hint = did_you_mean(kind, EventKind::NAMES)
                    .map(|k| format!("did you mean `{k}`? "))
                    .unwrap_or_default();
                return Err(AuditError::Invalid(format!(
                    "`{kind}` is not an event kind; {hint}the kinds are {}",
                    EventKind::NAMES.join(", ")
                )));
            }
        }
        for (what, v) in [("actor", &self.actor), ("procedure", &self.procedure)] {
            if v.as_deref()
                .is_some_and(|v| v.is_empty() || v.contains('\0'))
            {
                return Err(AuditError::Invalid(format!(
                    "the {what} filter must be a non-empty id without NUL characters"
                )));
            }
        }
        let from = self
            .from
            .as_deref()
            .map(|s| parse_instant(s, zone))
            .transpose()?;
        let to = self
            .to
            .as_deref()
            .map(|s| parse_instant(s, zone))
            .transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            ordered(f, t)?;
        }
        Ok(AuditQuery {
            actor: self.actor.clone(),
            procedure: self.procedure.clone(),
            kind: self.kind.clone(),
            from_ms: from.map(|t| t.timestamp_millis()),
            to_ms: to.map(|t| t.timestamp_millis()),
        })
    }
}

/// An instant as people write it: RFC 3339 (`2026-03-01T08:00:00Z`) or a date
/// (`2026-03-01`, meaning its midnight in `zone` — the calendar's, as dates mean
/// everywhere in sopflow).
pub fn parse_instant(s: &str, zone: chrono_tz::Tz) -> Result<DateTime<Utc>, AuditError> {
    if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() || DateTime::parse_from_rfc3339(s).is_ok() {
        if let Some(t) = crate::engine::compiled::parse_instant(s, zone) {
            return Ok(t);
        }
    }
    Err(AuditError::Invalid(format!(
        "`{s}` is not a time; write a date like 2026-03-01 or an instant like \
         2026-03-01T08:00:00Z"
    )))
}

/// A period `[from, to)` as people write it (see `parse_instant`); `to` defaults to `now`.
pub fn parse_period(
    from: &str,
    to: Option<&str>,
    now: DateTime<Utc>,
    zone: chrono_tz::Tz,
) -> Result<(DateTime<Utc>, DateTime<Utc>), AuditError> {
    let from = parse_instant(from, zone)?;
    let to = to
        .map(|s| parse_instant(s, zone))
        .transpose()?
        .unwrap_or(now);
    ordered(from, to)?;
    Ok((from, to))
}

fn ordered(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), AuditError> {
    if from < to {
        Ok(())
    } else {
        Err(AuditError::Invalid(format!(
            "`from` ({from}) must be before `to` ({to}); the period is [from, to)"
        )))
    }
}

/// A page cursor as text: hex (`store::chain::hex`), as the API and the CLI hand it out.
pub use crate::store::chain::hex as cursor_text;

/// The bytes of a cursor given back by a client.
pub fn parse_cursor(text: &str) -> Result<Vec<u8>, AuditError> {
    crate::store::chain::unhex(text, crate::store::audit::CURSOR_LEN)
        .ok_or_else(|| AuditError::Invalid(format!("`{text}` is not a cursor this query gave")))
}

/// One exported event: where it is, its chain link, and the event exactly as stored.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ExportLine {
    pub instance: InstanceId,
    pub procedure: String,
    pub seq: u64,
    pub hash: String,
    pub event: Event,
}

impl From<AuditRecord> for ExportLine {
    fn from(r: AuditRecord) -> Self {
        ExportLine {
            instance: r.instance,
            procedure: r.procedure,
            seq: r.event.seq,
            hash: r.hash,
            event: r.event,
        }
    }
}

/// The export encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line (`ExportLine`).
    Jsonl,
    /// A header and one row per event: readable columns first, then the whole event as
    /// JSON in the last column so nothing is lost.
    Csv,
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 17] = [
    "instance",
    "procedure",
    "seq",
    "at",
    "kind",
    "user",
    "name",
    "department",
    "roles",
    "on_behalf_of",
    "step",
    "task",
    "outcome",
    "meaning",
    "comment",
    "hash",
    "event",
];

fn csv_row(line: &ExportLine) -> Result<Vec<String>, AuditError> {
    let event = serde_json::to_value(&line.event)
        .map_err(|e| AuditError::Invalid(format!("event {}: {e}", line.seq)))?;
    let field = |name: &str| match event.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let by = line.event.by.as_ref();
    // The "why" of an event has a different name per kind: a comment on a completion, the
    // reason of a cancel or delegation, the text of a comment.
    let why = ["comment", "reason", "text"]
        .iter()
        .map(|k| field(k))
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    let event_json = event.to_string();
    Ok(vec![
        line.instance.to_string(),
        line.procedure.clone(),
        line.seq.to_string(),
        line.event
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        line.event.kind.name().to_string(),
        by.map(|b| b.user.clone()).unwrap_or_default(),
        by.map(|b| b.name.clone()).unwrap_or_default(),
        by.map(|b| b.department.clone()).unwrap_or_default(),
        by.map(|b| b.roles.join(";")).unwrap_or_default(),
        by.and_then(|b| b.on_behalf_of.clone()).unwrap_or_default(),
        field("step"),
        field("task"),
        field("outcome"),
        field("meaning"),
        why,
        line.hash.clone(),
        // The `Value` keeps the struct's field order (serde_json's preserve_order), so this
        // is the event's own encoding without serialising it a second time.
        event_json,
    ])
}

enum Sink<W: Write> {
    // Boxed: the CSV writer carries its own buffer state, several times the size of the
    // JSON Lines one.
    Csv(Box<csv::Writer<W>>),
    Jsonl(std::io::BufWriter<W>),
}

impl<W: Write> Sink<W> {
    fn new(format: ExportFormat, out: W) -> Result<Self, AuditError> {
        Ok(match format {
            ExportFormat::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(CSV_HEADER)?;
                Sink::Csv(Box::new(w))
            }
            ExportFormat::Jsonl => Sink::Jsonl(std::io::BufWriter::new(out)),
        })
    }

    fn write(&mut self, line: &ExportLine) -> Result<(), AuditError> {
        match self {
            Sink::Csv(w) => w.write_record(csv_row(line)?)?,
            Sink::Jsonl(w) => {
                serde_json::to_writer(&mut *w, line).map_err(std::io::Error::from)?;
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// Flushes explicitly: a failed final write must be an error, not lost in a drop.
    fn finish(self) -> Result<(), AuditError> {
        match self {
            Sink::Csv(mut w) => w.flush()?,
            Sink::Jsonl(mut w) => w.flush()?,
        }
        Ok(())
    }
}

/// Writes the events matching `query` to `out` like `export`, but stops after `limit`
/// events. Returns how many were written and whether more would have followed (the output
/// then holds `limit` events and must not be passed off as the whole trail); reads at most
/// one page past the limit.
pub fn export_at_most<S: Store>(
    engine: &Engine<S>,
    query: &AuditQuery,
    format: ExportFormat,
    out: impl Write,
    limit: u64,
) -> Result<(u64, bool), AuditError> {
    export_bounded(engine, query, format, out, limit, &mut |_| {})
}

/// Writes every event matching `query` to `out`, oldest first, a page at a time.
/// `progress` gets the number of events written so far after each page. Returns the count.
pub fn export<S: Store>(
    engine: &Engine<S>,
    query: &AuditQuery,
    format: ExportFormat,
    out: impl Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, AuditError> {
    export_bounded(engine, query, format, out, u64::MAX, progress).map(|(n, _)| n)
}

/// The one export loop: pages of the audit index into the sink, at most `limit` events.
fn export_bounded<S: Store>(
    engine: &Engine<S>,
    query: &AuditQuery,
    format: ExportFormat,
    out: impl Write,
    limit: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(u64, bool), AuditError> {
    let mut sink = Sink::new(format, out)?;
    let mut written = 0u64;
    let mut cursor: Option<Vec<u8>> = None;
    let mut over = false;
    'pages: loop {
        let page = engine.audit(query, cursor.as_deref(), EXPORT_PAGE)?;
        for record in page.items {
            if written == limit {
                over = true;
                break 'pages;
            }
            sink.write(&record.into())?;
            written += 1;
        }
        progress(written);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    sink.finish()?;
    Ok((written, over))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s, chrono_tz::Tz::UTC).unwrap()
    }

    #[test]
    fn instants_are_dates_or_rfc3339() {
        assert_eq!(at("2026-03-01"), at("2026-03-01T00:00:00Z"));
        assert_eq!(at("2026-03-01T08:00:00+08:00"), at("2026-03-01T00:00:00Z"));
        assert!(parse_instant("March", chrono_tz::Tz::UTC).is_err());
        assert!(parse_instant("2026-02-30", chrono_tz::Tz::UTC).is_err());
        let shanghai = parse_instant("2026-03-01", chrono_tz::Tz::Asia__Shanghai).unwrap();
        assert_eq!(shanghai.to_rfc3339(), "2026-02-28T16:00:00+00:00");
    }

    #[test]
    fn a_period_runs_forward_and_ends_now_by_default() {
        let now = at("2026-11-22T12:00:00Z");
        assert_eq!(
            parse_period("2026-11-01", None, now, chrono_tz::Tz::UTC).unwrap(),
            (at("2026-11-01"), now)
        );
        assert_eq!(
            parse_period("2026-11-01", Some("2026-12-01"), now, chrono_tz::Tz::UTC).unwrap(),
            (at("2026-11-01"), at("2026-12-01"))
        );
        for (from, to) in [
            ("2026-12-01", Some("2026-11-01")),
            ("2026-11-01", Some("2026-11-01")),
        ] {
            let err = parse_period(from, to, now, chrono_tz::Tz::UTC)
                .unwrap_err()
                .to_string();
            assert!(err.contains("must be before"), "{err}");
        }
        assert!(
            parse_period("2026-12-01", None, now, chrono_tz::Tz::UTC).is_err(),
            "from after now"
        );
    }

    #[test]
    fn cursors_round_trip_and_only_their_own_length_is_accepted() {
        let bytes: Vec<u8> = (0..crate::store::audit::CURSOR_LEN as u8).collect();
        assert_eq!(parse_cursor(&cursor_text(&bytes)).unwrap(), bytes);
        for bad in ["", "00", "zz", &"0".repeat(63), &"g".repeat(64)] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
