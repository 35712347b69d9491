//! The v1 endpoint handlers. Each one authenticates (the `Caller` extractor), applies the
//! API's role × endpoint rule, turns the request body into an engine command and the
//! result into a response body. The engine's own rules (start and cancel roles, who may
//! complete a step, separation of duties, signatures, delegation) run inside the engine;
//! a handler must not re-implement them, only refuse earlier what the matrix forbids.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::auth::{Caller, ADMIN, AUDITOR, PROCESS_OWNER};
use super::dto::{self, *};
use super::error::{ApiError, Problem};
use super::AppState;
use crate::definition::model::Procedure;
use crate::definition::{load, render};
use crate::engine::compiled::form_schema;
use crate::engine::decide::Command;
use crate::engine::instance::{Actor as EngineActor, Instance, Task};
use crate::engine::service::ServiceError;
use crate::store::Store;

/// Most items one list page returns.
pub const MAX_PAGE: usize = 500;
/// Most tasks one worklist call returns.
pub const MAX_TASKS: usize = 1000;
/// Most events one history page returns.
pub const MAX_HISTORY_PAGE: usize = 1000;
/// Farthest one clock move goes (about ten years): far enough for any procedure's
/// deadlines and schedules, near enough that calendar and cron arithmetic stay in range.
pub const MAX_CLOCK_JUMP_DAYS: i64 = 3660;

type St = State<Arc<AppState>>;

/// A JSON request body (or response): `axum::Json` with problem+json rejections, and
/// refusing anything but an object at the top level — serde would otherwise read a
/// request struct from an array of its fields in order, which no client means.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim();
                m.eq_ignore_ascii_case("application/json")
                    || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !json {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge("the request body is larger than the server accepts".into())
            } else {
                ApiError::Malformed(format!(
                    "the request body could not be read: {}",
                    r.body_text()
                ))
            }
        })?;
        json_object(&bytes)?;
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(v)| Json(v))
            .map_err(ApiError::from)
    }
}

/// Refuses a JSON body that is not an object before serde reads a struct from it.
fn json_object(bytes: &[u8]) -> Result<(), ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        None => Err(ApiError::Malformed(
            "the request body is empty; send a JSON object".into(),
        )),
        Some(_) => Err(ApiError::Malformed(
            "the request body must be a JSON object".into(),
        )),
    }
}

/// Runs `work` on the blocking pool: store scans, verification and reports whose cost
/// grows with the data must never hold a runtime worker. A panic in it is an internal
/// error, logged by `ApiError`.
async fn blocking<T, E>(
    what: &str,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("{what}: {e}")))?
        .map_err(ApiError::from)
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejection (a malformed id) is a 404.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` whose rejection is a 400 problem.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Runs an engine command, counting it by kind and result and timing it.
async fn command<F>(kind: &'static str, fut: F) -> Result<Instance, ApiError>
where
    F: Future<Output = Result<Instance, ServiceError>>,
{
    super::command_begun();
    let started = Instant::now();
    // Mapped first, so the metric's result follows the one mapping of errors to statuses.
    let r = fut.await.map_err(ApiError::from);
    let result = match &r {
        Ok(_) => "ok",
        Err(e) => match e.status() {
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid",
            _ => "error",
        },
    };
    metrics::counter!("sopflow_commands_total", "kind" => kind, "result" => result).increment(1);
    metrics::histogram!("sopflow_command_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    r
}

/// A task is the caller's to see (and, by the engine's rules, possibly to act on) when it
/// is offered to one of their roles or is with them.
pub fn offered_to(t: &Task, a: &EngineActor) -> bool {
    t.holder() == Some(a.id.as_str())
        || t.assignee.as_deref() == Some(a.id.as_str())
        || a.holds_any(&t.roles)
}

/// Staff read an instance they take part in: one of its open tasks is theirs, or they
/// acted in its history. Auditors and admins read every instance.
fn may_read(state: &AppState, caller: &Caller, inst: &Instance) -> Result<(), ApiError> {
    if caller.reads_everything() || inst.tasks.values().any(|t| offered_to(t, &caller.actor)) {
        return Ok(());
    }
    let me = caller.actor.id.as_str();
    let acted = |e: &crate::engine::instance::Event| {
        e.by.as_ref()
            .is_some_and(|b| b.user == me || b.on_behalf_of.as_deref() == Some(me))
            || matches!(&e.kind, crate::engine::instance::EventKind::TaskDelegated { to, .. } if to == me)
    };
    // Page by page, stopping at the first sign of taking part (usually the first event).
    let mut took_part = false;
    let mut from = 1;
    while !took_part && from <= inst.seq {
        let page = state.engine.history_page(inst.id, from, 200)?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        took_part = page.iter().any(acted);
    }
    if took_part {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{me} takes no part in instance {}: no task of it is offered to their roles and they have not acted in it",
            inst.id
        )))
    }
}

fn load_instance(state: &AppState, id: Uuid) -> Result<Instance, ApiError> {
    state
        .engine
        .instance(id)?
        .ok_or_else(|| ApiError::NotFound(format!("there is no instance {id}")))
}

fn view(state: &AppState, inst: &Instance) -> Json<InstanceView> {
    Json(InstanceView::at(inst, state.engine.clock().now()))
}

// ---------------------------------------------------------------------------------------------
// Service endpoints
// ---------------------------------------------------------------------------------------------

/// Liveness: answers without a token.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Prometheus metrics (auditor, admin).
#[utoipa::path(get, path = "/metrics", tag = "service", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn metrics(State(state): St, caller: Caller) -> Result<Response, ApiError> {
    caller.require_any(&[AUDITOR, ADMIN], "reading metrics")?;
    // Index scans only, but their cost grows with the open tasks: off the runtime workers.
    let counts = {
        let state = state.clone();
        blocking("counting open tasks", move || {
            state
                .people
                .roles()
                .keys()
                .map(|role| Ok((role.clone(), state.engine.store().open_task_count(role)?)))
                .collect::<Result<Vec<_>, ServiceError>>()
        })
        .await?
    };
    for (role, n) in counts {
        metrics::gauge!("sopflow_open_tasks", "role" => role).set(n as f64);
    }
    let text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response())
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "service", security(("bearer" = [])),
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object), (status = 401, body = Problem)))]
pub async fn openapi(_caller: Caller) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        super::openapi::document_json(),
    )
        .into_response()
}

/// The caller: id, name, department, roles.
#[utoipa::path(get, path = "/v1/me", tag = "service", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
pub async fn me(caller: Caller) -> Json<Me> {
    let a = caller.actor;
    Json(Me {
        id: a.id,
        name: a.name,
        department: a.department,
        roles: a.roles,
        level: a.level,
    })
}

// ---------------------------------------------------------------------------------------------
// Procedures
// ---------------------------------------------------------------------------------------------

/// Every registered procedure at its newest version (any user).
#[utoipa::path(get, path = "/v1/procedures", tag = "procedures", security(("bearer" = [])),
    responses((status = 200, body = ProcedureList), (status = 401, body = Problem)))]
pub async fn list_procedures(State(state): St, _caller: Caller) -> Json<ProcedureList> {
    let items = state
        .engine
        .procedures()
        .iter()
        .map(|p| ProcedureSummary {
            id: p.id().to_string(),
            version: p.version(),
            title: p.def.title.clone(),
            versions: state.engine.versions(p.id()),
            start_roles: p.def.start_roles.clone(),
        })
        .collect();
    Json(ProcedureList { items })
}

fn find_procedure(
    state: &AppState,
    id: &str,
    version: Option<u32>,
) -> Result<Arc<crate::engine::compiled::CompiledProcedure>, ApiError> {
    match version {
        None => state.engine.procedure(id),
        Some(v) => state.engine.procedure_version(id, v),
    }
    .ok_or_else(|| match version {
        None => ApiError::NotFound(format!("there is no procedure `{id}`")),
        Some(v) => ApiError::NotFound(format!("procedure `{id}` has no version {v}")),
    })
}

/// One procedure: its text, its definition as JSON and its start form (any user).
#[utoipa::path(get, path = "/v1/procedures/{id}", tag = "procedures", security(("bearer" = [])),
    params(("id" = String, Path, description = "Procedure id"), VersionQuery),
    responses((status = 200, body = ProcedureDetail), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub async fn get_procedure(
    State(state): St,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Json<ProcedureDetail>, ApiError> {
    let p = find_procedure(&state, &id, q.version)?;
    let source = state
        .engine
        .store()
        .procedure(p.id(), p.version())
        .map_err(ServiceError::from)?
        .map(|r| r.source)
        .unwrap_or_default();
    let definition = serde_json::to_value(&p.def)
        .map_err(|e| ApiError::Internal(format!("procedure {id} as JSON: {e}")))?;
    Ok(Json(ProcedureDetail {
        id: p.id().to_string(),
        version: p.version(),
        title: p.def.title.clone(),
        hash: p.hash.clone(),
        source,
        definition,
        start_form: form_schema(&p.def.data),
    }))
}

/// The procedure's graph as Mermaid (default) or Graphviz DOT text (any user).
#[utoipa::path(get, path = "/v1/procedures/{id}/graph", tag = "procedures", security(("bearer" = [])),
    params(("id" = String, Path, description = "Procedure id"), GraphQuery),
    responses((status = 200, description = "Mermaid (`text/vnd.mermaid`) or DOT (`text/vnd.graphviz`) text",
            content((String = "text/vnd.mermaid"), (String = "text/vnd.graphviz"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn procedure_graph(
    State(state): St,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let p = find_procedure(&state, &id, q.version)?;
    let (text, ctype) = match q.format.as_deref().unwrap_or("mermaid") {
        "mermaid" => (render::mermaid(&p.def), "text/vnd.mermaid; charset=utf-8"),
        "dot" => (render::dot(&p.def), "text/vnd.graphviz; charset=utf-8"),
        other => {
            return Err(ApiError::Malformed(format!(
                "unknown graph format `{other}`; use `mermaid` or `dot`"
            )))
        }
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(ctype))],
        text,
    )
        .into_response())
}

/// The query of `POST /v1/procedures/validate`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ValidateQuery {
    /// File name to report diagnostics against (default `<id>.toml`), unless a JSON body
    /// names one: 1–255 characters, no slashes.
    #[param(max_length = 255, min_length = 1, pattern = r"^[^/\\\x00]+$")]
    pub name: Option<String>,
}

/// 1–255 characters, none of them a slash, a backslash or NUL: a name to report against,
/// never a path.
fn plain_file_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().count() > 255 || name.contains(['/', '\\', '\0']) {
        return Err(ApiError::Malformed(
            "`name` must be a plain file name without slashes".into(),
        ));
    }
    Ok(())
}

/// Checks a procedure file and returns every diagnostic with line and column
/// (process owner, admin). Nothing is registered.
#[utoipa::path(post, path = "/v1/procedures/validate", tag = "procedures", security(("bearer" = [])),
    params(ValidateQuery),
    request_body(content((ProcedureText = "application/toml"), (ProcedureText = "text/plain"), (ValidateRequest = "application/json")),
        description = "The TOML text, raw or as `{\"text\": …}`"),
    responses((status = 200, body = ValidateResponse), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem)))]
pub async fn validate_procedure(
    State(state): St,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<ValidateQuery>,
    body: Bytes,
) -> Result<Json<ValidateResponse>, ApiError> {
    caller.require_any(&[PROCESS_OWNER, ADMIN], "validating procedures")?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    // Checked even when a JSON body names the file itself, so a bad query never passes.
    query.name.as_deref().map(plain_file_name).transpose()?;
    let (name, text) = if is_json {
        json_object(&body)?;
        let r: ValidateRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Malformed(format!("the body is not a validate request: {e}")))?;
        (r.name.or(query.name), r.text)
    } else {
        if body.is_empty() {
            return Err(ApiError::Malformed(
                "the request body is empty; send the procedure's TOML text".into(),
            ));
        }
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::Malformed("the procedure text is not valid UTF-8".into()))?;
        (query.name, text)
    };
    let own = load::parse_procedure(&text).map(|p| p.id);
    // Without a name the file is taken to be `<id>.toml`, as it would be in `procedures/`.
    let name = name.unwrap_or_else(|| match &own {
        Some(id) if crate::directory::is_id(id) => format!("{id}.toml"),
        _ => "procedure.toml".to_string(),
    });
    plain_file_name(&name)?;
    // Other procedures are context (child references); the file's own id is left out so a
    // changed version of a registered procedure is checked as itself.
    let others: Vec<_> = state
        .engine
        .procedures()
        .iter()
        .filter(|p| Some(p.id()) != own.as_deref())
        .map(|p| p.def.clone())
        .collect();
    let v = load::validate_text(&name, &text, &others, &state.calendar_ids);
    let mut diagnostics = Vec::new();
    for r in &v.reports {
        for d in r.to_json() {
            let d: dto::Diagnostic = serde_json::from_value(d)
                .map_err(|e| ApiError::Internal(format!("diagnostic as JSON: {e}")))?;
            diagnostics.push(d);
        }
    }
    let errors = v.errors();
    Ok(Json(ValidateResponse {
        valid: errors == 0,
        errors,
        warnings: v.warnings(),
        diagnostics,
    }))
}

// ---------------------------------------------------------------------------------------------
// Instances
// ---------------------------------------------------------------------------------------------

/// Starts an instance of a procedure's newest version (the procedure's start roles, or
/// admin).
#[utoipa::path(post, path = "/v1/instances", tag = "instances", security(("bearer" = [])),
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
    Json(req): Json<StartRequest>,
) -> Result<Response, ApiError> {
    let inst = start(&state, &caller, req).await?;
    let location = format!("/v1/instances/{}", inst.id);
    let mut res = (StatusCode::CREATED, view(&state, &inst)).into_response();
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
    let actor = caller.acting()?;
    command(
        "start",
        state.engine.start(&req.procedure, req.data, Some(&actor)),
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

fn page_limit(asked: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match asked {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::Malformed(format!(
            "limit {n} is out of range; use 1 to {max}"
        ))),
    }
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
    params(("id" = Uuid, Path, description = "Instance id")), request_body = CancelRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn cancel_instance(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<CancelRequest>,
) -> Result<Json<InstanceView>, ApiError> {
    let actor = caller.acting()?;
    // An unknown instance is the engine's 404; no read is needed first.
    let inst = command(
        "cancel",
        state
            .engine
            .execute(id, Command::Cancel { reason: req.reason }, Some(&actor)),
    )
    .await?;
    Ok(view(&state, &inst))
}

/// Adds a comment to an instance's history (someone taking part in it, or admin).
#[utoipa::path(post, path = "/v1/instances/{id}/comments", tag = "instances", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Instance id")), request_body = CommentRequest,
    responses((status = 201, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn comment_instance(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<CommentRequest>,
) -> Result<Response, ApiError> {
    let actor = caller.acting()?;
    let inst = load_instance(&state, id)?;
    may_read(&state, &caller, &inst)?;
    let inst = command(
        "comment",
        state
            .engine
            .execute(id, Command::Comment { text: req.text }, Some(&actor)),
    )
    .await?;
    Ok((StatusCode::CREATED, view(&state, &inst)).into_response())
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

/// The caller's worklist: tasks offered to their roles or with them, most urgent first.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])),
    params(TaskQuery),
    responses((status = 200, body = TaskList), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list_tasks(
    State(state): St,
    caller: Caller,
    Query(q): Query<TaskQuery>,
) -> Result<Json<TaskList>, ApiError> {
    let limit = page_limit(q.limit, 200, MAX_TASKS)?;
    let now = state.engine.clock().now();
    if let Some(s) = &q.state {
        if !TaskState::VALUES.contains(&s.as_str()) {
            return Err(ApiError::Malformed(format!(
                "unknown state `{s}`; use offered, held, overdue, reminded or escalated"
            )));
        }
    }
    let me = caller.actor.id.as_str();
    // Reads every open task of the caller's roles (to sort by due time): off the runtime
    // workers, so a large worklist never stalls other requests.
    let rows = {
        let (state, actor) = (state.clone(), caller.actor.clone());
        blocking("reading a worklist", move || state.engine.tasks_for(&actor)).await?
    };
    let items = rows
        .iter()
        // A task a colleague has taken is no longer on offer to the caller.
        .filter(|r| r.assignee.as_deref().is_none_or(|a| a == me))
        .filter(|r| q.role.as_ref().is_none_or(|role| r.roles.contains(role)))
        .filter(|r| q.procedure.as_ref().is_none_or(|p| &r.procedure == p))
        .filter(|r| {
            q.due_before
                .is_none_or(|b| r.due_ms.is_some_and(|d| d < b.timestamp_millis()))
        })
        .map(|r| TaskSummary::from_row(r, now))
        .filter(|t| match q.state.as_deref() {
            Some("offered") => t.holder.is_none(),
            Some("held") => t.holder.as_deref() == Some(me),
            Some("overdue") => t.overdue,
            Some("reminded") => t.deadline == "reminded",
            Some("escalated") => t.deadline == "escalated",
            _ => true,
        })
        .take(limit)
        .collect();
    Ok(Json(TaskList { items }))
}

/// One open task with its step's outcomes and form (those it is offered to, auditor, admin).
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Task id")),
    responses((status = 200, body = TaskDetail), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<TaskDetail>, ApiError> {
    let Some((task, inst)) = state.engine.task(id)? else {
        return Err(match state.engine.task_instance(id)? {
            Some(i) => ApiError::NotFound(format!(
                "task {id} is closed; instance {i}'s history says how"
            )),
            None => ApiError::NotFound(format!("there is no task {id}")),
        });
    };
    if !caller.reads_everything() && !offered_to(&task, &caller.actor) {
        return Err(ApiError::Forbidden(format!(
            "task {id} is offered to {}, and {} holds none of them",
            task.roles.join(", "),
            caller.actor.id
        )));
    }
    let proc = state
        .engine
        .procedure_version(&inst.procedure, inst.version)
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "{} v{} not registered",
                inst.procedure, inst.version
            ))
        })?;
    let (step, _) = proc.step(&task.step).ok_or_else(|| {
        ApiError::Internal(format!("step {} not in {}", task.step, inst.procedure))
    })?;
    Ok(Json(TaskDetail {
        task: OpenTask::at(&task, state.engine.clock().now()),
        instance: inst.id,
        procedure: inst.procedure.clone(),
        version: inst.version,
        title: step.title.clone(),
        description: step.description.clone(),
        outcomes: Procedure::outcomes_of(step)
            .into_iter()
            .map(OutcomeChoice::new)
            .collect(),
        form: form_schema(&step.form),
        data: inst.data.clone(),
    }))
}

/// Runs a command on a task for the caller: the task names its instance (open or closed,
/// so a late command hears "already completed"), `make` builds the command once the task
/// is known, and the engine decides.
async fn on_task(
    state: &AppState,
    caller: &Caller,
    kind: &'static str,
    task: Uuid,
    make: impl FnOnce() -> Result<Command, ApiError>,
) -> Result<Json<InstanceView>, ApiError> {
    let actor = caller.acting()?;
    let instance = state
        .engine
        .task_instance(task)?
        .ok_or_else(|| ApiError::NotFound(format!("there is no task {task}")))?;
    let cmd = make()?;
    let inst = command(kind, state.engine.execute(instance, cmd, Some(&actor))).await?;
    Ok(view(state, &inst))
}

/// Takes a task so nobody else does it.
#[utoipa::path(post, path = "/v1/tasks/{id}/claim", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Task id")),
    responses((status = 200, body = InstanceView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn claim_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<InstanceView>, ApiError> {
    on_task(&state, &caller, "claim", id, || {
        Ok(Command::Claim { task: id })
    })
    .await
}

/// Gives a claimed task back to its roles.
#[utoipa::path(post, path = "/v1/tasks/{id}/release", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Task id")),
    responses((status = 200, body = InstanceView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn release_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<InstanceView>, ApiError> {
    on_task(&state, &caller, "release", id, || {
        Ok(Command::Release { task: id })
    })
    .await
}

/// Hands a task on to a colleague, as the step's delegation rule allows.
#[utoipa::path(post, path = "/v1/tasks/{id}/delegate", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Task id")), request_body = DelegateRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn delegate_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<DelegateRequest>,
) -> Result<Json<InstanceView>, ApiError> {
    on_task(&state, &caller, "delegate", id, || {
        let to = EngineActor::from_directory(&state.people, &req.to).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "there is no active user `{}` to delegate to",
                req.to
            ))
        })?;
        Ok(Command::Delegate {
            task: id,
            to,
            reason: req.reason,
        })
    })
    .await
}

/// Completes (or signs) a task with an outcome, the form values and a comment.
#[utoipa::path(post, path = "/v1/tasks/{id}/complete", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Task id")), request_body = CompleteRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn complete_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<CompleteRequest>,
) -> Result<Json<InstanceView>, ApiError> {
    on_task(&state, &caller, "complete", id, || {
        Ok(Command::Complete {
            task: id,
            outcome: req.outcome,
            form: req.form,
            comment: req.comment,
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Notifications, clock
// ---------------------------------------------------------------------------------------------

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
        (Some(by), None) => super::clock::advance_target(by, now, &state.calendar)
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
    super::command_begun();
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
    caller.require_any(
        &[AUDITOR, ADMIN, PROCESS_OWNER, "management_rep", "sales"],
        "reading service KPIs",
    )?;
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
        let mut over = false;
        let written = crate::audit::export_at_most(
            &state.engine,
            &query,
            format,
            &mut out,
            MAX_EXPORT_EVENTS,
            &mut over,
        )?;
        if over {
            return Err(ApiError::Unprocessable(format!(
                "more than {MAX_EXPORT_EVENTS} events match; narrow the filters (a shorter period, one procedure) or use `sopflow export` on a stopped store"
            )));
        }
        let _ = written;
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
