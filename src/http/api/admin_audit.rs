//! The manual clock (admin) and the audit trail: event queries, chain verification,
//! exports and KPI reports (auditor, admin).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::*;
use crate::http::auth::{Caller, ADMIN, AUDITOR, PROCESS_OWNER};
use crate::http::dto::{self, *};
use crate::http::error::{ApiError, Problem};

/// Notifications for the caller's roles, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "tasks", security(("bearer" = [])),
    params(NotificationQuery),
    responses((status = 200, body = NotificationList), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn notifications(
    State(state): St,
    caller: Caller,
    Query(q): Query<NotificationQuery>,
) -> Result<Json<NotificationList>, ApiError> {
    let limit = page_limit(q.limit, 50, MAX_PAGE)?;
    let rows = state.engine.notifications_for(&caller.actor, limit)?;
    let items = rows
        .into_iter()
        .map(|r| Notification {
            at: chrono::DateTime::from_timestamp_millis(r.at_ms).unwrap_or_default(),
            user: r.role.strip_prefix('@').map(str::to_string),
            role: (!r.role.starts_with('@')).then_some(r.role),
            instance: r.instance,
            seq: r.seq,
            task: r.task,
            message: r.message,
        })
        .collect();
    Ok(Json(NotificationList { items }))
}

/// Moves the manual clock, stopping at each deadline and scheduled run that falls due on the
/// way so each fires at its own due time, in order (admin; only when serving with
/// `--clock manual`, otherwise 404).
#[utoipa::path(post, path = "/v1/admin/clock/advance", tag = "admin", security(("bearer" = [])),
    request_body = ClockAdvance,
    responses((status = 200, body = ClockState), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn advance_clock(
    State(state): St,
    caller: Caller,
    Json(req): Json<ClockAdvance>,
) -> Result<Json<ClockState>, ApiError> {
    caller.require_any(&[ADMIN], "moving the clock")?;
    let Some(clock) = &state.manual_clock else {
        return Err(ApiError::NotFound(
            "the clock can only be moved when serving with `--clock manual`".into(),
        ));
    };
    let now = state.engine.clock().now();
    let limit = now
        .checked_add_signed(chrono::Duration::days(MAX_CLOCK_JUMP_DAYS))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let target = match (&req.by, req.to) {
        (Some(by), None) => crate::http::clock::advance_target(by, now, &state.calendar)
            .map_err(ApiError::Unprocessable)?,
        (None, Some(to)) if to >= now => to,
        (None, Some(to)) => {
            return Err(ApiError::Unprocessable(format!(
                "the clock does not run back: it is {now}, before {to} was asked"
            )))
        }
        _ => {
            return Err(ApiError::Malformed(
                "give exactly one of `by` (\"3 working days\", \"PT2H\") or `to` (an instant)"
                    .into(),
            ))
        }
    };
    if target > limit {
        return Err(ApiError::Unprocessable(format!(
            "the clock moves at most {MAX_CLOCK_JUMP_DAYS} days at a time (to {limit}); move it in steps"
        )));
    }
    // From here on the move changes instances: a request timeout must not cut it off
    // half-way and answer as if nothing had happened.
    crate::http::command_begun();
    let _moving = state.clock_moves.lock().await;
    let fired = state.engine.advance_clock(clock, target).await?;
    Ok(Json(ClockState {
        now: state.engine.clock().now(),
        fired,
    }))
}

/// Most events one audit page returns.
pub const MAX_AUDIT_PAGE: usize = 1000;

/// Events across instances by actor, procedure, kind and time, oldest first, from the audit
/// index (auditor, admin).
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", security(("bearer" = [])),
    params(AuditEventsQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn audit_events(
    State(state): St,
    caller: Caller,
    Query(q): Query<AuditEventsQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require_any(&[AUDITOR, ADMIN], "reading the audit trail")?;
    let filters = crate::audit::Filters {
        actor: q.actor,
        procedure: q.procedure,
        kind: q.kind,
        from: q.from,
        to: q.to,
    };
    let query = filters.query(state.engine.default_zone())?;
    let limit = page_limit(q.limit, 100, MAX_AUDIT_PAGE)?;
    let cursor = q
        .cursor
        .as_deref()
        .map(crate::audit::parse_cursor)
        .transpose()?;
    let page = blocking("audit query", move || {
        state.engine.audit(&query, cursor.as_deref(), limit)
    })
    .await?;
    Ok(Json(AuditPage {
        items: page
            .items
            .iter()
            .map(|r| dto::AuditEvent {
                instance: r.instance,
                procedure: r.procedure.clone(),
                hash: r.hash.clone(),
                event: HistoryEvent::from(&r.event),
            })
            .collect(),
        next: page.next.as_deref().map(crate::audit::cursor_text),
    }))
}

/// Checks every instance's hash chain, or one instance's, and reports the first broken
/// link (auditor, admin). On a large store this reads every event: use `sopflow verify`
/// on a stopped store when the request would outlast the request timeout.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    params(VerifyQuery),
    responses((status = 200, body = VerifyReport), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn audit_verify(
    State(state): St,
    caller: Caller,
    Query(q): Query<VerifyQuery>,
) -> Result<Json<VerifyReport>, ApiError> {
    caller.require_any(&[AUDITOR, ADMIN], "verifying the audit trail")?;
    let report = blocking("verify", move || -> Result<VerifyReport, ApiError> {
        match q.instance {
            Some(id) => Ok(state
                .engine
                .verify_instance(id)?
                .ok_or_else(|| ApiError::NotFound(format!("instance {id}")))?
                .into()),
            None => Ok(state.engine.verify(&mut |_| {})?.into()),
        }
    })
    .await?;
    Ok(Json(report))
}

/// Service KPIs of a procedure for a period: instances started, ended and open, durations,
/// on-time rate, breaches and escalations, per step, and the rates the procedure declares
/// against their objectives (auditor, admin, process owners, and — as seed 002 Service
/// Objective Management §4.1 and §4.3 give them the statistics — the management
/// representative and the sales department).
#[utoipa::path(get, path = "/v1/reports/kpis", tag = "audit", security(("bearer" = [])),
    params(KpiQuery),
    responses((status = 200, body = crate::report::kpi::KpiReport), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn kpi_report(
    State(state): St,
    caller: Caller,
    Query(q): Query<KpiQuery>,
) -> Result<Json<crate::report::kpi::KpiReport>, ApiError> {
    require_kpi_reader(&caller)?;
    let (from, to) = crate::audit::parse_period(
        &q.from,
        q.to.as_deref(),
        state.engine.clock().now(),
        state.engine.zone_of_procedure(&q.procedure),
    )?;
    let report = blocking("KPI report", move || {
        crate::report::kpi::kpis_from_engine(&state.engine, &q.procedure, from, to).map_err(|e| {
            match e {
                crate::report::kpi::ReportError::UnknownProcedure(p) => {
                    ApiError::NotFound(format!("procedure `{p}`"))
                }
                crate::report::kpi::ReportError::Engine(e) => e.into(),
                other => ApiError::Malformed(other.to_string()),
            }
        })
    })
    .await?;
    Ok(Json(report))
}

/// Most events one export download holds: an export is built in memory before it is sent,
/// so its size is bounded before the work is done. Larger trails: narrow the filters, or
/// `sopflow export` on a stopped store (streaming, any size).
pub const MAX_EXPORT_EVENTS: u64 = 50_000;

/// The query of `GET /v1/audit/export`: the audit filters and the format.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `jsonl` (default) or `csv`.
    #[param(value_type = Option<String>, pattern = "^(jsonl|csv)$")]
    pub format: Option<String>,
    /// Events by this user, or by a delegate on their behalf.
    #[param(min_length = 1, pattern = r"^[^\x00]+$")]
    pub actor: Option<String>,
    /// Events of instances of this procedure.
    #[param(min_length = 1, pattern = r"^[^\x00]+$")]
    pub procedure: Option<String>,
    /// Events of this kind (`task_completed`, `deadline_breached`, …).
    #[param(value_type = Option<EventKindName>)]
    pub kind: Option<String>,
    /// From this time on, inclusive: RFC 3339 or a date.
    #[param(value_type = Option<DateOrInstant>)]
    pub from: Option<String>,
    /// Before this time, exclusive.
    #[param(value_type = Option<DateOrInstant>)]
    pub to: Option<String>,
}

/// The events matching the filters as a file: JSON Lines or CSV, oldest first, the same
/// encoding `sopflow export` writes (auditor, admin). At most 50,000 events; more is
/// refused (422) before anything is sent — narrow the filters.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", security(("bearer" = [])),
    params(ExportQuery),
    responses((status = 200, description = "JSON Lines (`application/x-ndjson`) or CSV (`text/csv`)",
            content((String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn audit_export(
    State(state): St,
    caller: Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    caller.require_any(&[AUDITOR, ADMIN], "exporting the audit trail")?;
    let (format, ctype, ext) = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => (
            crate::audit::ExportFormat::Jsonl,
            "application/x-ndjson; charset=utf-8",
            "jsonl",
        ),
        "csv" => (
            crate::audit::ExportFormat::Csv,
            "text/csv; charset=utf-8",
            "csv",
        ),
        other => {
            return Err(ApiError::Malformed(format!(
                "unknown export format `{other}`; use jsonl or csv"
            )))
        }
    };
    let filters = crate::audit::Filters {
        actor: q.actor,
        procedure: q.procedure,
        kind: q.kind,
        from: q.from,
        to: q.to,
    };
    let query = filters.query(state.engine.default_zone())?;
    let body = blocking("audit export", move || -> Result<Vec<u8>, ApiError> {
        let mut out = Vec::new();
        let (_, over) = crate::audit::export_at_most(
            &state.engine,
            &query,
            format,
            &mut out,
            MAX_EXPORT_EVENTS,
        )?;
        if over {
            return Err(ApiError::Unprocessable(format!(
                "more than {MAX_EXPORT_EVENTS} events match; narrow the filters (a shorter period, one procedure) or use `sopflow export` on a stopped store"
            )));
        }
        Ok(out)
    })
    .await?;
    let disposition = format!("attachment; filename=\"sopflow-events.{ext}\"");
    let mut res = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(ctype))],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// Who reads service figures across instances — the KPI report here, and the web app's
/// heat map of a procedure: auditors, admins, process owners, and (seed 002 Service
/// Objective Management §4.1 and §4.3) the management representative and the sales
/// department.
pub fn require_kpi_reader(caller: &Caller) -> Result<(), ApiError> {
    caller.require_any(
        &[AUDITOR, ADMIN, PROCESS_OWNER, "management_rep", "sales"],
        "reading service KPIs",
    )
}
