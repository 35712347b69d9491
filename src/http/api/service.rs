//! Service endpoints: liveness, metrics, the OpenAPI document, who the caller is.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::*;
use crate::http::auth::{Caller, ADMIN, AUDITOR};
use crate::http::dto::*;
use crate::http::error::{ApiError, Problem};

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
                .people()
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
        crate::http::openapi::document_json(),
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
