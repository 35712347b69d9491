//! Instance endpoints: start, list, read, history, cancel, comment.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::*;
use crate::engine::once::Done;
use crate::http::auth::{Caller, ADMIN, AUDITOR};
use crate::http::dto::*;
use crate::http::error::{ApiError, Problem};
use crate::http::AppState;

/// Starts an instance of a procedure's newest version (the procedure's start roles, or
/// admin).
#[utoipa::path(post, path = "/v1/instances", tag = "instances", security(("bearer" = [])),
    params(IdempotencyHeader),
    request_body = StartRequest,
    responses((status = 201, body = InstanceView, headers(("location" = String, description = "/v1/instances/{id}")),
            links(
                ("GetInstance" = (operation_id = "get_instance", parameters(("id" = "$response.body#/id")))),
                ("InstanceHistory" = (operation_id = "instance_history", parameters(("id" = "$response.body#/id")))),
                ("CancelInstance" = (operation_id = "cancel_instance", parameters(("id" = "$response.body#/id")))),
                ("CommentInstance" = (operation_id = "comment_instance", parameters(("id" = "$response.body#/id")))),
                ("GetFirstTask" = (operation_id = "get_task", parameters(("id" = "$response.body#/tasks/0/id")),
                    description = "The first open task")),
                ("ClaimFirstTask" = (operation_id = "claim_task", parameters(("id" = "$response.body#/tasks/0/id")))),
                ("ReleaseFirstTask" = (operation_id = "release_task", parameters(("id" = "$response.body#/tasks/0/id")))),
                ("DelegateFirstTask" = (operation_id = "delegate_task", parameters(("id" = "$response.body#/tasks/0/id")))),
                ("CompleteFirstTask" = (operation_id = "complete_task", parameters(("id" = "$response.body#/tasks/0/id"))))
            )),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 422, body = Problem)))]
pub async fn start_instance(
    State(state): St,
    caller: Caller,
    Keyed(once, req): Keyed<StartRequest>,
) -> Result<Response, ApiError> {
    let done = start_keyed(&state, &caller, req, &once).await?;
    let location = format!("/v1/instances/{}", done.instance.id);
    let mut res = (StatusCode::CREATED, Answer::new(&state, &done)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// Starts an instance for the caller: the one path for the API and the web app.
pub async fn start(
    state: &AppState,
    caller: &Caller,
    req: StartRequest,
) -> Result<Instance, ApiError> {
    Ok(start_keyed(state, caller, req, &OnceKey::none())
        .await?
        .instance)
}

/// `start`, at most once per idempotency key.
pub async fn start_keyed(
    state: &AppState,
    caller: &Caller,
    req: StartRequest,
    once: &OnceKey,
) -> Result<Done, ApiError> {
    let actor = caller.acting()?;
    command(
        "start",
        state.engine.start_once(
            &req.procedure,
            req.data,
            Some(&actor),
            once.for_caller(caller).as_ref(),
        ),
    )
    .await
}

/// Instances by procedure and status, oldest first, a page at a time (auditor, admin).
#[utoipa::path(get, path = "/v1/instances", tag = "instances", security(("bearer" = [])),
    params(InstanceQuery),
    responses((status = 200, body = InstancePage), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_instances(
    State(state): St,
    caller: Caller,
    Query(q): Query<InstanceQuery>,
) -> Result<Json<InstancePage>, ApiError> {
    caller.require_any(&[AUDITOR, ADMIN], "listing all instances")?;
    if let Some(s) = &q.status {
        if !InstanceStatus::VALUES.contains(&s.as_str()) {
            return Err(ApiError::Malformed(format!(
                "unknown status `{s}`; use running, completed or cancelled"
            )));
        }
    }
    let limit = page_limit(q.limit, 50, MAX_PAGE)?;
    let cursor = match &q.cursor {
        None => None,
        Some(c) => Some(
            Uuid::try_parse(c)
                .map_err(|_| ApiError::Malformed(format!("`{c}` is not a cursor this API gave")))?,
        ),
    };
    let procedure = q.procedure.as_deref().filter(|p| !p.is_empty());
    if procedure.is_some_and(|p| p.contains('\0')) {
        return Err(ApiError::Malformed("a procedure id has no NUL".into()));
    }
    let page = state.engine.instances(
        procedure,
        q.status.as_deref(),
        cursor.as_ref().map(|c| c.as_bytes().as_slice()),
        limit,
    )?;
    let mut items = Vec::with_capacity(page.items.len());
    for id in &page.items {
        if let Some(inst) = state.engine.instance(*id)? {
            items.push(InstanceSummary::from(&inst));
        }
    }
    let next = page
        .next
        .and_then(|n| Uuid::from_slice(&n).ok())
        .map(|u| u.to_string());
    Ok(Json(InstancePage { items, next }))
}

/// An instance: status, data, open tasks with due times (auditor, admin, or someone taking
/// part in it).
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Instance id")),
    responses((status = 200, body = InstanceView), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_instance(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<InstanceView>, ApiError> {
    let inst = load_instance(&state, id)?;
    may_read(&state, &caller, &inst)?;
    Ok(view(&state, &inst))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// First sequence number to return (default 1; at most 2^63 − 1). The maximum is in
    /// the schema too: generated clients and fuzzers otherwise send larger numbers, which are
    /// refused 400.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub from: Option<u64>,
    /// At most this many events (1–1000, default 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// An instance's history, oldest first: who did what, when, in which role, why
/// (auditor, admin, or someone taking part in it).
#[utoipa::path(get, path = "/v1/instances/{id}/history", tag = "instances", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Instance id"), HistoryQuery),
    responses((status = 200, body = History), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn instance_history(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let inst = load_instance(&state, id)?;
    may_read(&state, &caller, &inst)?;
    let limit = page_limit(q.limit, MAX_HISTORY_PAGE, MAX_HISTORY_PAGE)?;
    let from = q.from.unwrap_or(1).max(1);
    // Documented (and read by most clients) as a signed 64-bit integer.
    if i64::try_from(from).is_err() {
        return Err(ApiError::Malformed(format!(
            "`from` {from} is out of range; use 0 to {}",
            i64::MAX
        )));
    }
    let events = state.engine.history_page(id, from, limit)?;
    Ok(Json(History {
        instance: id,
        events: events.iter().map(HistoryEvent::from).collect(),
    }))
}

/// Cancels a running instance and its children (the procedure's cancel roles, or admin).
#[utoipa::path(post, path = "/v1/instances/{id}/cancel", tag = "instances", security(("bearer" = [])),
    params(IdempotencyHeader, ("id" = Uuid, Path, description = "Instance id")), request_body = CancelRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn cancel_instance(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Keyed(once, req): Keyed<CancelRequest>,
) -> Result<Answer, ApiError> {
    let actor = caller.acting()?;
    // An unknown instance is the engine's 404; no read is needed first.
    let done = command(
        "cancel",
        state.engine.execute_once(
            id,
            Command::Cancel { reason: req.reason },
            Some(&actor),
            once.for_caller(&caller).as_ref(),
        ),
    )
    .await?;
    Ok(Answer::new(&state, &done))
}

/// Adds a comment to an instance's history (someone taking part in it, or admin).
#[utoipa::path(post, path = "/v1/instances/{id}/comments", tag = "instances", security(("bearer" = [])),
    params(IdempotencyHeader, ("id" = Uuid, Path, description = "Instance id")), request_body = CommentRequest,
    responses((status = 201, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn comment_instance(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Keyed(once, req): Keyed<CommentRequest>,
) -> Result<Response, ApiError> {
    let actor = caller.acting()?;
    let inst = load_instance(&state, id)?;
    may_read(&state, &caller, &inst)?;
    let done = command(
        "comment",
        state.engine.execute_once(
            id,
            Command::Comment { text: req.text },
            Some(&actor),
            once.for_caller(&caller).as_ref(),
        ),
    )
    .await?;
    Ok((StatusCode::CREATED, Answer::new(&state, &done)).into_response())
}
