//! Process owners' and admins' pages: the procedures with their versions, each procedure's
//! picture as a heat map (open tasks waiting at each step now, and how many are late), checking a
//! procedure's text with every diagnostic at its line and column, and moving the manual
//! clock. Reads and checks go through the API handlers; nothing here registers a procedure.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::picture::{self, StepMark};
use super::view;
use super::{page, page_with, Chrome, Posted, Signed, WebError};
use crate::http::api::{self, ValidateQuery};
use crate::http::dto::{ClockAdvance, VersionQuery};
use crate::http::error::ApiError;
use crate::http::AppState;

type St = State<Arc<AppState>>;

// ---------------------------------------------------------------------------------------------
// Procedures
// ---------------------------------------------------------------------------------------------

pub struct ProcRow {
    id: String,
    title: String,
    version: u32,
    versions: String,
    start_roles: String,
    source: String,
}

#[derive(Template)]
#[template(path = "procedures.html")]
struct ProceduresPage {
    chrome: Chrome,
    rows: Vec<ProcRow>,
    can_validate: bool,
}

fn can_validate(signed: &Signed) -> bool {
    signed
        .caller
        .require_any(
            &[crate::http::auth::PROCESS_OWNER, crate::http::auth::ADMIN],
            "validating procedures",
        )
        .is_ok()
}

pub async fn procedures(State(state): St, signed: Signed) -> Result<Response, WebError> {
    let list = api::list_procedures(State(state.clone()), signed.caller.clone())
        .await
        .0;
    let mut rows: Vec<ProcRow> = list
        .items
        .into_iter()
        .map(|p| {
            let source = state
                .engine
                .procedure(&p.id)
                .and_then(|c| c.def.source.clone())
                .unwrap_or_default();
            ProcRow {
                versions: p
                    .versions
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                start_roles: p.start_roles.join(", "),
                id: p.id,
                title: p.title,
                version: p.version,
                source,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.title.cmp(&b.title));
    Ok(page(ProceduresPage {
        chrome: signed.chrome(&state, "Procedures", "procedures"),
        rows,
        can_validate: can_validate(&signed),
    }))
}

/// One step's row of the heat map table.
pub struct HeatRow {
    title: String,
    role: String,
    waiting: u64,
    late: u64,
}

#[derive(Template)]
#[template(path = "procedure.html")]
struct ProcedurePage {
    chrome: Chrome,
    id: String,
    title: String,
    description: String,
    source: String,
    version: u32,
    versions: Vec<u32>,
    hash: String,
    text: String,
    picture: String,
    heat: Vec<HeatRow>,
    /// Why there is no heat map (the reader may not see KPIs), when there is none.
    heat_note: String,
    period: String,
    /// Every version with its dates and running instances, newest first.
    version_rows: Vec<super::pages_changes::VersionRow>,
    retired: bool,
    /// The reader may migrate instances (admin or an operator role).
    can_migrate: bool,
}

pub async fn procedure_page(
    State(state): St,
    signed: Signed,
    Path(id): Path<String>,
    q: Result<Query<VersionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let Query(q) = q.map_err(|r| {
        WebError::from(ApiError::Malformed(format!(
            "the address could not be read: {}",
            r.body_text()
        )))
    })?;
    let detail = api::get_procedure(
        State(state.clone()),
        signed.caller.clone(),
        api::Path(id.clone()),
        api::Query(q),
    )
    .await?
    .0;
    let compiled = state
        .engine
        .procedure_version(&detail.id, detail.version)
        .ok_or_else(|| ApiError::NotFound(format!("procedure `{id}`")))?;
    let def = &compiled.def;
    let zone = state.engine.zone_of_procedure(&id);
    let now = state.engine.clock().now();
    // The heat map: every running instance's open tasks counted by step — waiting now, and
    // past their due time now. Read by the API's rule for figures across instances; the
    // scan is bounded before it starts.
    let mut marks: HashMap<String, StepMark> = HashMap::new();
    let (heat, heat_note, period) = match api::require_kpi_reader(&signed.caller) {
        Ok(()) => {
            let (engine, pid) = (state.engine.clone(), detail.id.clone());
            let (counts, partial) =
                tokio::task::spawn_blocking(move || waiting_by_step(&engine, &pid, now))
                    .await
                    .map_err(|e| ApiError::Internal(format!("heat map: {e}")))??;
            let rows = def
                .steps
                .iter()
                .filter(|(_, st)| st.role.is_some() || st.assignee.is_some())
                .map(|(sid, st)| {
                    let (waiting, late) = counts.get(sid).copied().unwrap_or((0, 0));
                    let m = marks.entry(sid.clone()).or_default();
                    m.waiting = waiting;
                    m.late = late;
                    HeatRow {
                        title: st.title.clone().unwrap_or_else(|| view::words(sid)),
                        role: st.role.as_deref().map(view::role).unwrap_or_default(),
                        waiting,
                        late,
                    }
                })
                .collect();
            let when = format!("now ({})", view::when(now, zone));
            let when = if partial {
                format!("{when}, over the first {MAX_HEAT_SCAN} running instances")
            } else {
                when
            };
            (rows, String::new(), when)
        }
        Err(ApiError::Forbidden(why)) => (Vec::new(), why, String::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(page(ProcedurePage {
        chrome: signed.chrome(&state, def.title.clone(), "procedures"),
        id: detail.id.clone(),
        title: def.title.clone(),
        description: def.description.clone().unwrap_or_default(),
        source: def.source.clone().unwrap_or_default(),
        version: detail.version,
        versions: state.engine.versions(&detail.id),
        hash: detail.hash.chars().take(16).collect(),
        text: detail.source,
        picture: picture::procedure_svg(def, &marks),
        heat,
        heat_note,
        period,
        version_rows: super::pages_changes::version_rows(&state, &signed, &detail.id).await?,
        retired: state.engine.is_retired(&detail.id),
        can_migrate: signed.caller.acting().is_ok_and(|a| a.operates(def)),
    }))
}

// ---------------------------------------------------------------------------------------------
// Validate
// ---------------------------------------------------------------------------------------------

pub struct DiagRow {
    line: usize,
    column: usize,
    severity: String,
    code: String,
    message: String,
    help: String,
}

pub struct SourceLine {
    n: usize,
    text: String,
    /// `error`, `warning` or empty.
    mark: &'static str,
}

#[derive(Template)]
#[template(path = "validate.html")]
struct ValidatePage {
    chrome: Chrome,
    text: String,
    name: String,
    checked: bool,
    valid: bool,
    errors: usize,
    warnings: usize,
    diagnostics: Vec<DiagRow>,
    lines: Vec<SourceLine>,
    /// What a deployment did, when the text was deployed (or refused).
    deployed: Option<String>,
    deploy_refused: bool,
}

fn validate_view(signed: &Signed, state: &AppState, text: String, name: String) -> ValidatePage {
    ValidatePage {
        chrome: signed.chrome(state, "Check a procedure", "procedures"),
        text,
        name,
        checked: false,
        valid: false,
        errors: 0,
        warnings: 0,
        diagnostics: vec![],
        lines: vec![],
        deployed: None,
        deploy_refused: false,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ValidateFrom {
    /// A registered procedure whose text fills the editor.
    procedure: Option<String>,
}

pub async fn validate_page(
    State(state): St,
    signed: Signed,
    q: Result<Query<ValidateFrom>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    signed.caller.require_any(
        &[crate::http::auth::PROCESS_OWNER, crate::http::auth::ADMIN],
        "validating procedures",
    )?;
    let q = q.map(|Query(v)| v).unwrap_or_default();
    let (text, name) = match q.procedure.filter(|p| !p.is_empty()) {
        Some(p) => {
            let d = api::get_procedure(
                State(state.clone()),
                signed.caller.clone(),
                api::Path(p.clone()),
                api::Query(VersionQuery { version: None }),
            )
            .await?
            .0;
            (d.source, format!("{p}.toml"))
        }
        None => (String::new(), String::new()),
    };
    Ok(page(validate_view(&signed, &state, text, name)))
}

pub async fn validate(State(state): St, posted: Posted) -> Result<Response, WebError> {
    let signed = &posted.signed;
    let text = posted.get("text").unwrap_or_default().to_string();
    let name = posted.text("name");
    let mut view_ = validate_view(
        signed,
        &state,
        text.clone(),
        name.clone().unwrap_or_default(),
    );
    if text.trim().is_empty() {
        return Ok(page_with(StatusCode::UNPROCESSABLE_ENTITY, view_));
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain"),
    );
    if posted.get("action") == Some("deploy") {
        let (deployed, refused) = super::pages_changes::deploy(&state, signed, &text).await?;
        view_.deployed = Some(deployed);
        view_.deploy_refused = refused;
    }
    let r = api::validate_procedure(
        State(state.clone()),
        signed.caller.clone(),
        headers,
        api::Query(ValidateQuery { name }),
        Bytes::from(text.clone()),
    )
    .await?
    .0;
    let mut marks: HashMap<usize, &'static str> = HashMap::new();
    for d in &r.diagnostics {
        let m = if d.severity == "error" {
            "error"
        } else {
            "warning"
        };
        let e = marks.entry(d.line).or_insert(m);
        if m == "error" {
            *e = "error";
        }
    }
    view_.checked = true;
    view_.valid = r.valid;
    view_.errors = r.errors;
    view_.warnings = r.warnings;
    view_.lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| SourceLine {
            n: i + 1,
            text: l.to_string(),
            mark: marks.get(&(i + 1)).copied().unwrap_or(""),
        })
        .collect();
    view_.diagnostics = r
        .diagnostics
        .into_iter()
        .map(|d| DiagRow {
            line: d.line,
            column: d.column,
            severity: d.severity,
            code: d.code,
            message: d.message,
            help: d.help.unwrap_or_default(),
        })
        .collect();
    Ok(page(view_))
}

// ---------------------------------------------------------------------------------------------
// The manual clock
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "clock.html")]
struct ClockPage {
    chrome: Chrome,
    now: String,
    by: String,
    result: Option<String>,
    error: Option<String>,
}

fn clock_gate(state: &AppState, signed: &Signed) -> Result<(), WebError> {
    signed
        .caller
        .require_any(&[crate::http::auth::ADMIN], "moving the clock")?;
    if state.manual_clock.is_none() {
        return Err(ApiError::NotFound(
            "the clock can only be moved when serving with `--clock manual`".into(),
        )
        .into());
    }
    Ok(())
}

pub async fn clock_page(State(state): St, signed: Signed) -> Result<Response, WebError> {
    clock_gate(&state, &signed)?;
    let zone = state.engine.default_zone();
    Ok(page(ClockPage {
        chrome: signed.chrome(&state, "Clock", "clock"),
        now: view::when(state.engine.clock().now(), zone),
        by: String::new(),
        result: None,
        error: None,
    }))
}

pub async fn move_clock(State(state): St, posted: Posted) -> Result<Response, WebError> {
    let signed = &posted.signed;
    clock_gate(&state, signed)?;
    let zone = state.engine.default_zone();
    let by = posted.text("by").unwrap_or_default();
    let before = state.engine.clock().now();
    let r = api::advance_clock(
        State(state.clone()),
        signed.caller.clone(),
        api::Json(ClockAdvance {
            by: Some(by.clone()),
            to: None,
        }),
    )
    .await;
    let (status, result, error) = match r {
        Ok(c) => (
            StatusCode::OK,
            Some(format!(
                "The clock moved from {} to {}; {} deadline timer{} fired.",
                view::when(before, zone),
                view::when(c.0.now, zone),
                c.0.fired,
                if c.0.fired == 1 { "" } else { "s" }
            )),
            None,
        ),
        Err(e @ (ApiError::Unprocessable(_) | ApiError::Malformed(_))) => {
            (StatusCode::UNPROCESSABLE_ENTITY, None, Some(e.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    Ok(page_with(
        status,
        ClockPage {
            chrome: signed.chrome(&state, "Clock", "clock"),
            now: view::when(state.engine.clock().now(), zone),
            by,
            result,
            error,
        },
    ))
}

/// Step id → (open tasks waiting there, of them past due).
type StepCounts = HashMap<String, (u64, u64)>;

/// Most running instances one heat map reads.
pub const MAX_HEAT_SCAN: usize = 20_000;

/// Open tasks of `procedure`'s running instances by step: (waiting, past due at `now`),
/// and whether the scan stopped at `MAX_HEAT_SCAN` before the end.
fn waiting_by_step(
    engine: &crate::engine::service::Engine<crate::store::any::AnyStore>,
    procedure: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(StepCounts, bool), ApiError> {
    let mut counts = StepCounts::new();
    let mut cursor: Option<Vec<u8>> = None;
    let mut read = 0usize;
    loop {
        let page = engine.instances(Some(procedure), Some("running"), cursor.as_deref(), 500)?;
        for id in &page.items {
            if let Some(inst) = engine.instance(*id)? {
                for t in inst.tasks.values() {
                    let c = counts.entry(t.step.clone()).or_default();
                    c.0 += 1;
                    if t.due.is_some_and(|d| d <= now) {
                        c.1 += 1;
                    }
                }
            }
        }
        read += page.items.len();
        match page.next {
            Some(next) if read < MAX_HEAT_SCAN => cursor = Some(next),
            Some(_) => return Ok((counts, true)),
            None => return Ok((counts, false)),
        }
    }
}
