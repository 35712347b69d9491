//! The v1 endpoint handlers. Each one authenticates (the `Caller` extractor), applies the
//! API's role × endpoint rule, turns the request body into an engine command and the
//! result into a response body. The engine's own rules (start and cancel roles, who may
//! complete a step, separation of duties, signatures, delegation) run inside the engine;
//! a handler must not re-implement them, only refuse earlier what the matrix forbids.
//!
//! The web app (`crate::web`) calls these same functions with the signed-in person as the
//! caller: they are the one place the API's rules are applied, for both.
//!
//! This file holds what every handler shares (extractors with problem rejections, the
//! blocking pool, the command counter, who may read an instance); the handlers are in
//! `service`, `procedures`, `instances`, `tasks` and `admin_audit`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::auth::Caller;
use super::dto::InstanceView;
use super::error::ApiError;
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
        read_json(req, state).await.map(|(_, v)| Json(v))
    }
}

/// Reads a JSON object body: its bytes and the value.
async fn read_json<T, S>(req: axum::extract::Request, state: &S) -> Result<(Bytes, T), ApiError>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    {
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
        let axum::Json(v) = axum::Json::<T>::from_bytes(&bytes).map_err(ApiError::from)?;
        Ok((bytes, v))
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
async fn command<F, T>(kind: &'static str, fut: F) -> Result<T, ApiError>
where
    F: Future<Output = Result<T, ServiceError>>,
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

/// The page size asked for, or `default`; out of 1..=max is a 400.
/// A JSON number that is a whole number from 0 to `max`, written `2` or `2.0`: JSON
/// Schema's `integer` admits both, and a client that writes every number as a float is read,
/// not refused; `2.5` and `-1` are not whole numbers in range.
pub(super) fn whole_number(n: &serde_json::Number, max: u64) -> Option<u64> {
    match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => Some(u),
        (None, Some(f)) if f.fract() == 0.0 && f >= 0.0 && f <= max as f64 => Some(f as u64),
        _ => None,
    }
    .filter(|u| *u <= max)
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

mod admin_audit;
mod changes;
mod instances;
mod once;
pub mod outbox;
mod procedures;
mod registers;
mod service;
pub mod stream;
mod tasks;
pub mod webhooks;

pub use admin_audit::*;
pub use changes::*;
pub use instances::*;
pub use once::{Answer, Keyed, OnceKey};
pub use outbox::*;
pub use procedures::*;
pub use registers::*;
pub use service::*;
pub use stream::{__path_event_stream, event_stream};
pub use tasks::*;
pub use webhooks::*;
