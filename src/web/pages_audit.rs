//! Pages for following an instance and for auditors: the instance page (status, data, open
//! tasks, the procedure picture with live state, the timeline, comments), the event search,
//! chain verification, exports and the KPI report. Each reads through the API handler of the
//! same purpose with the signed-in person as caller, so who may see what is the API's rule.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::charts::{self, Chart};
use super::pages_work::summary;
use super::view::{self, Line};
use super::{blank_none, page, query, Chrome, Signed, WebError};
use crate::http::api::{self, ExportQuery};
use crate::http::dto::{AuditEventsQuery, KpiQuery, VerifyQuery};
use crate::http::error::ApiError;
use crate::http::AppState;

type St = State<Arc<AppState>>;

// ---------------------------------------------------------------------------------------------
// Event search, verification, exports
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    actor: Option<String>,
    procedure: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

pub struct Found {
    instance: Uuid,
    procedure: String,
    summary: String,
    seq: u64,
    line: Line,
    hash: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    from: String,
    to: String,
    /// (id, label, selected)
    people: Vec<(String, String, bool)>,
    procedures: Vec<(String, String, bool)>,
    kinds: Vec<(&'static str, bool)>,
    searched: bool,
    found: Vec<Found>,
    next: Option<String>,
    /// The filters as a query string, for the export links and the next page.
    filters: String,
}

/// Events per audit search page.
const AUDIT_PAGE: usize = 50;

pub async fn search(
    State(state): St,
    signed: Signed,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let q = query(q)?;
    let (actor, procedure, kind, from, to) = (
        blank_none(q.actor),
        blank_none(q.procedure),
        blank_none(q.kind),
        blank_none(q.from),
        blank_none(q.to),
    );
    let searched = actor.is_some()
        || procedure.is_some()
        || kind.is_some()
        || from.is_some()
        || to.is_some()
        || q.cursor.is_some();
    let page_ = api::audit_events(
        State(state.clone()),
        signed.caller.clone(),
        api::Query(AuditEventsQuery {
            actor: actor.clone(),
            procedure: procedure.clone(),
            kind: kind.clone(),
            from: from.clone(),
            to: to.clone(),
            cursor: blank_none(q.cursor),
            limit: Some(AUDIT_PAGE),
        }),
    )
    .await?
    .0;
    let zone = state.engine.default_zone();
    // Names per procedure, built once per page; a summary line per instance.
    let mut names: HashMap<String, view::Names> = HashMap::new();
    let mut summaries: HashMap<uuid::Uuid, String> = HashMap::new();
    let mut found = Vec::with_capacity(page_.items.len());
    for r in &page_.items {
        let def = state.engine.procedure(&r.procedure);
        let n = names
            .entry(r.procedure.clone())
            .or_insert_with(|| match &def {
                Some(p) => view::Names::of(&p.def),
                None => view::Names::default(),
            });
        if let std::collections::hash_map::Entry::Vacant(slot) = summaries.entry(r.instance) {
            let line = match (
                state.engine.instance(r.instance).map_err(ApiError::from)?,
                &def,
            ) {
                (Some(i), Some(p)) => summary(&p.def, &i.data),
                _ => String::new(),
            };
            slot.insert(line);
        }
        found.push(Found {
            instance: r.instance,
            procedure: def
                .as_ref()
                .map_or_else(|| r.procedure.clone(), |p| p.def.title.clone()),
            summary: summaries.get(&r.instance).cloned().unwrap_or_default(),
            seq: r.event.seq,
            line: view::line(&r.event, &state.people(), zone, n),
            hash: r.hash.chars().take(12).collect(),
        });
    }
    let mut filters = url_pairs(&[
        ("actor", &actor),
        ("procedure", &procedure),
        ("kind", &kind),
        ("from", &from),
        ("to", &to),
    ]);
    if filters.is_empty() {
        filters.push('?');
    } else {
        filters.push('&');
    }
    let mut people: Vec<(String, String, bool)> = state
        .people()
        .users()
        .iter()
        .map(|u| {
            let sel = actor.as_deref() == Some(u.id.as_str());
            (u.id.clone(), format!("{} ({})", u.name, u.id), sel)
        })
        .collect();
    people.sort_by(|a, b| a.1.cmp(&b.1));
    let procedures = super::procedure_choices(&state, procedure.as_deref());
    let kinds = crate::engine::instance::EventKind::NAMES
        .iter()
        .map(|k| (*k, kind.as_deref() == Some(*k)))
        .collect();
    Ok(page(AuditPage {
        chrome: signed.chrome(&state, "Audit", "audit"),
        from: from.unwrap_or_default(),
        to: to.unwrap_or_default(),
        people,
        procedures,
        kinds,
        searched,
        found,
        next: page_.next,
        filters,
    }))
}

/// `?a=1&b=2` for the pairs that have a value (empty when none has).
fn url_pairs(pairs: &[(&str, &Option<String>)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            out.append_pair(k, v);
        }
    }
    let s = out.finish();
    if s.is_empty() {
        s
    } else {
        format!("?{s}")
    }
}

#[derive(Template)]
#[template(path = "verify.html")]
struct VerifyPage {
    chrome: Chrome,
    instance: Option<Uuid>,
    intact: bool,
    instances: u64,
    events: u64,
    broken: u64,
    first_break: String,
    break_instance: Option<Uuid>,
}

pub async fn verify(
    State(state): St,
    signed: Signed,
    q: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let q = query(q)?;
    let instance = q.instance;
    let r = api::audit_verify(State(state.clone()), signed.caller.clone(), api::Query(q))
        .await?
        .0;
    Ok(page(VerifyPage {
        chrome: signed.chrome(&state, "Verify histories", "audit"),
        instance,
        intact: r.intact,
        instances: r.instances,
        events: r.events,
        broken: r.broken,
        first_break: r
            .first_break
            .as_ref()
            .map(|b| format!("event {}: {}", b.seq, b.problem))
            .unwrap_or_default(),
        break_instance: r.first_break.as_ref().map(|b| b.instance),
    }))
}

async fn export(
    state: Arc<AppState>,
    signed: Signed,
    q: SearchQuery,
    format: &str,
) -> Result<Response, WebError> {
    let res = api::audit_export(
        State(state),
        signed.caller,
        api::Query(ExportQuery {
            format: Some(format.to_string()),
            actor: blank_none(q.actor),
            procedure: blank_none(q.procedure),
            kind: blank_none(q.kind),
            from: blank_none(q.from),
            to: blank_none(q.to),
        }),
    )
    .await?;
    // The API's own file answer, headers and all.
    let (parts, body) = res.into_parts();
    let mut res = Response::from_parts(parts, body);
    res.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(header::HeaderValue::from_static("no-store"));
    Ok(res.into_response())
}

pub async fn export_csv(
    State(state): St,
    signed: Signed,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    export(state, signed, query(q)?, "csv").await
}

pub async fn export_jsonl(
    State(state): St,
    signed: Signed,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    export(state, signed, query(q)?, "jsonl").await
}

// ---------------------------------------------------------------------------------------------
// KPI report
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct ReportQuery {
    procedure: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub struct StepRow {
    title: String,
    opened: u64,
    completed: u64,
    open: u64,
    on_time: String,
    median: String,
    breaches: u64,
    escalations: u64,
}

#[derive(Template)]
#[template(path = "kpis.html")]
struct KpiPage {
    chrome: Chrome,
    procedures: Vec<(String, String, bool)>,
    from: String,
    to: String,
    report: bool,
    title: String,
    period: String,
    started: u64,
    completed: u64,
    cancelled: u64,
    open: u64,
    on_time: String,
    breaches: u64,
    steps: Vec<StepRow>,
    /// (title, actual, objective, met)
    rates: Vec<(String, String, String, String)>,
    warnings: Vec<String>,
    charts: Vec<Chart>,
}

/// A rate the report gives in percent (0–100), rounded.
fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_string(), |r| format!("{r:.0} %"))
}

pub async fn kpis(
    State(state): St,
    signed: Signed,
    q: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let q = query(q)?;
    let procedure = blank_none(q.procedure);
    let zone = state.engine.default_zone();
    let now = state.engine.clock().now();
    // A year back by default: the report is about a period, and most are asked per year.
    let from = blank_none(q.from).unwrap_or_else(|| {
        (now - chrono::Duration::days(365))
            .with_timezone(&zone)
            .format("%Y-%m-%d")
            .to_string()
    });
    // Through today, inclusive: the API's period ends before `to`, and on a manual clock
    // everything may have happened at exactly "now".
    let to = Some(blank_none(q.to).unwrap_or_else(|| super::view::tomorrow(now, zone)));
    let procedures = super::procedure_choices(&state, procedure.as_deref());
    let mut page_ = KpiPage {
        chrome: signed.chrome(&state, "Reports", "reports"),
        procedures,
        from: from.clone(),
        to: to.clone().unwrap_or_default(),
        report: false,
        title: String::new(),
        period: String::new(),
        started: 0,
        completed: 0,
        cancelled: 0,
        open: 0,
        on_time: String::new(),
        breaches: 0,
        steps: vec![],
        rates: vec![],
        warnings: vec![],
        charts: vec![],
    };
    let Some(procedure) = procedure else {
        // The rule is the API's: asking for the page is asking for a report.
        signed.caller.require_any(
            &[
                crate::http::auth::AUDITOR,
                crate::http::auth::ADMIN,
                crate::http::auth::PROCESS_OWNER,
                "management_rep",
                "sales",
            ],
            "reading service KPIs",
        )?;
        return Ok(page(page_));
    };
    let r = api::kpi_report(
        State(state.clone()),
        signed.caller.clone(),
        api::Query(KpiQuery {
            procedure: procedure.clone(),
            from,
            to,
        }),
    )
    .await?
    .0;
    let def = state.engine.procedure(&procedure);
    page_.report = true;
    page_.title = def
        .as_ref()
        .map_or_else(|| procedure.clone(), |p| p.def.title.clone());
    page_.period = format!("{} to {}", view::when(r.from, zone), view::when(r.to, zone));
    page_.started = r.instances.started;
    page_.completed = r.instances.completed;
    page_.cancelled = r.instances.cancelled;
    page_.open = r.instances.open;
    page_.on_time = percent(r.instances.on_time_rate);
    page_.breaches = r.instances.breaches;
    page_.steps = r
        .steps
        .iter()
        .map(|s| StepRow {
            title: s.title.clone().unwrap_or_else(|| view::words(&s.step)),
            opened: s.opened,
            completed: s.completed,
            open: s.open,
            on_time: percent(s.on_time_rate),
            median: s
                .duration
                .median_seconds
                .map(|m| view::span((m * 1000.0) as i64))
                .unwrap_or_else(|| "—".into()),
            breaches: s.breaches,
            escalations: s.escalations,
        })
        .collect();
    page_.rates = r
        .rates
        .iter()
        .map(|x| {
            (
                x.title.clone(),
                format!("{} ({} of {})", percent(x.rate), x.numerator, x.denominator),
                match x.objective {
                    Some(crate::report::kpi::Objective::AtLeast(v)) => format!("at least {v} %"),
                    Some(crate::report::kpi::Objective::AtMost(v)) => format!("at most {v} %"),
                    None => "—".into(),
                },
                match x.met {
                    Some(true) => "met".into(),
                    Some(false) => "not met".into(),
                    None => "—".into(),
                },
            )
        })
        .collect();
    page_.warnings = r.warnings.clone();
    page_.charts = charts::kpi_charts(&r);
    Ok(page(page_))
}
