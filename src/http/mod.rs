//! The HTTP API (`sopflow serve`): axum routes over the engine, bearer-token
//! authentication, the role × endpoint rules, RFC 9457 problem responses, request ids,
//! timeouts, body limits, Prometheus metrics and the OpenAPI document.
//!
//! Layout: `server` starts and stops everything (store, engine, scheduler, listener,
//! signals); `api` holds the handlers; `auth` the caller extractor, demo tokens and the
//! coarse role rules; `dto` the request/response bodies; `error` the one error type;
//! `openapi` the generated document; `clock` the manual clock's amounts. Nothing here may
//! decide a procedure rule (the engine does) or answer with a 500 for bad input.

pub mod api;
pub mod auth;
pub mod clock;
pub mod dto;
pub mod error;
pub mod openapi;
pub mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::clock::ManualClock;
use crate::definition::calendar::Calendar;
use crate::directory::Directory;
use crate::engine::service::Engine;
use crate::store::any::AnyStore;
use error::{ApiError, Problem, PROBLEM_JSON};

/// Everything a handler can reach.
pub struct AppState {
    pub engine: Arc<Engine<AnyStore>>,
    /// The people now: swapped whole when the directory file is reloaded.
    pub directory: crate::reload::SharedDirectory,
    /// Reads the procedure, calendar and directory files again (`None` when the server
    /// was built without files to watch, as in some tests).
    pub reloader: Option<Arc<crate::reload::Reloader<AnyStore>>>,
    pub tokens: auth::Tokens,
    /// Present only when serving with the manual clock.
    pub manual_clock: Option<ManualClock>,
    /// Held while the manual clock moves: two moves stepping through due timers at once
    /// would record firings at each other's times.
    pub clock_moves: tokio::sync::Mutex<()>,
    /// The calendar "working days" in a clock advance are counted on.
    pub calendar: Arc<Calendar>,
    pub metrics: Option<PrometheusHandle>,
    /// The web app's signed-in sessions.
    pub sessions: crate::web::session::Sessions,
    /// Set to `true` when the server starts shutting down: open event streams end then,
    /// since a graceful shutdown waits for every response to finish.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// The people as the directory file says now.
    pub fn people(&self) -> Arc<Directory> {
        self.directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body, bytes (default 1 MiB).
    pub body_bytes: usize,
    /// Longest a request may take before it is answered 503 — unless it has handed a
    /// command to the engine by then: a command's work is bounded, and its answer waits for
    /// its commit so that no command is ever applied behind a 503.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 1 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The process-wide Prometheus recorder (the `metrics` facade allows one per process, so
/// servers started by tests share it).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
            let latency = [
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("sopflow_commit_batch_size".into()),
                        &sizes,
                    )
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are off: the recorder could not be installed");
                    None
                }
            }
        })
        .clone()
}

/// The whole API as a router.
pub fn router(state: Arc<AppState>, limits: Limits) -> Router {
    let mut v1 = Router::new()
        .route("/v1/openapi.json", get(api::openapi))
        .route("/v1/me", get(api::me))
        .route("/v1/procedures", get(api::list_procedures))
        .route("/v1/procedures/validate", post(api::validate_procedure))
        .route("/v1/procedures/{id}", get(api::get_procedure))
        .route("/v1/procedures/{id}/graph", get(api::procedure_graph))
        .route("/v1/procedures/{id}/versions", get(api::procedure_versions))
        .route("/v1/procedures/deploy", post(api::deploy_procedure))
        .route("/v1/deployments", get(api::deployments))
        .route("/v1/admin/reload", post(api::reload))
        .route("/v1/admin/deliveries", get(api::list_deliveries))
        .route("/v1/admin/deliveries/retry", post(api::retry_delivery))
        .route(
            "/v1/admin/webhooks",
            get(api::list_webhooks).post(api::create_webhook),
        )
        .route("/v1/admin/webhooks/{id}", delete(api::delete_webhook))
        .route("/v1/migrations", post(api::migrate))
        .route("/v1/instances/{id}/suspend", post(api::suspend_instance))
        .route("/v1/instances/{id}/resume", post(api::resume_instance))
        .route("/v1/instances/{id}/move", post(api::move_instance))
        .route("/v1/tasks/{id}/withdraw", post(api::withdraw_task))
        .route("/v1/registers", get(api::list_registers))
        .route("/v1/registers/{id}", get(api::register_entries))
        .route(
            "/v1/instances",
            post(api::start_instance).get(api::list_instances),
        )
        .route("/v1/instances/{id}", get(api::get_instance))
        .route("/v1/instances/{id}/history", get(api::instance_history))
        .route("/v1/instances/{id}/cancel", post(api::cancel_instance))
        .route("/v1/instances/{id}/comments", post(api::comment_instance))
        .route("/v1/tasks", get(api::list_tasks))
        .route("/v1/tasks/{id}", get(api::get_task))
        .route("/v1/tasks/{id}/claim", post(api::claim_task))
        .route("/v1/tasks/{id}/release", post(api::release_task))
        .route("/v1/tasks/{id}/delegate", post(api::delegate_task))
        .route("/v1/tasks/{id}/complete", post(api::complete_task))
        .route("/v1/notifications", get(api::notifications))
        .route("/v1/audit/events", get(api::audit_events))
        .route("/v1/events/stream", get(api::event_stream))
        .route("/v1/audit/verify", get(api::audit_verify))
        .route("/v1/audit/export", get(api::audit_export))
        .route("/v1/reports/kpis", get(api::kpi_report))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics));
    // The clock endpoint exists only on a manual clock; otherwise it is an unknown path.
    if state.manual_clock.is_some() {
        v1 = v1.route("/v1/admin/clock/advance", post(api::advance_clock));
    }
    let request_id = header::HeaderName::from_static("x-request-id");
    v1.merge(crate::web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(track))
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .layer(middleware::from_fn_with_state(limits.timeout, deadline))
        .layer(middleware::from_fn(problems))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

tokio::task_local! {
    /// Set by a handler once it has handed a command to the engine (see `deadline`).
    static COMMAND_BEGUN: Arc<AtomicBool>;
}

/// Marks the request as carrying a command from here on: from now the request timeout no
/// longer cuts it off, because a command dropped after this point might still commit and
/// its caller would never hear so. The engine bounds every command's work (instances,
/// events, bytes: `engine::service`), so the wait is bounded too.
pub(crate) fn command_begun() {
    let _ = COMMAND_BEGUN.try_with(|b| b.store(true, Ordering::SeqCst));
}

/// The request timeout. A request that has not reached the engine with a command by then
/// is stopped and answered 503 — nothing it carried was applied. One that has is left to
/// finish, and its answer (success or refusal) is what happened.
async fn deadline(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let begun = Arc::new(AtomicBool::new(false));
    let work = COMMAND_BEGUN.scope(begun.clone(), next.run(req));
    tokio::pin!(work);
    tokio::select! {
        res = &mut work => res,
        _ = tokio::time::sleep(timeout) => {
            if begun.load(Ordering::SeqCst) {
                tracing::warn!(timeout_s = timeout.as_secs_f64(), "a command outlasted the request timeout; waiting for its commit so the answer says what happened");
                work.await
            } else {
                // Nothing was applied: the client may simply try again.
                (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")]).into_response()
            }
        }
    }
}

/// An unknown path: a problem for API clients, a page for a browser (which asks for HTML)
/// outside `/v1/`.
async fn not_found(req: Request) -> Response {
    let browser = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if browser && !req.uri().path().starts_with("/v1/") {
        let mut res = crate::web::WebError::Api(ApiError::NotFound(
            "there is no page at this address".into(),
        ))
        .into_response();
        res.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(crate::web::CSP),
        );
        return res;
    }
    ApiError::NotFound("there is no such endpoint; see /v1/openapi.json".into()).into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed(
        "this endpoint does not take that method; see /v1/openapi.json".into(),
    )
}

/// Counts and times every request by route and status.
async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("sopflow_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("sopflow_http_request_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}

/// Makes every error a problem+json body carrying the request id, including those made by
/// layers that know nothing of problems (timeouts, rejected bodies).
async fn problems(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    // The web app's pages answer errors as pages.
    let is_page = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_page {
        return res;
    }
    let (mut parts, _body) = res.into_parts();
    let mut problem = match parts.extensions.remove::<Arc<Problem>>() {
        Some(p) => Arc::unwrap_or_clone(p),
        None => generic(status).problem(),
    };
    problem.request_id = request_id;
    parts.headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The body was not read; the connection cannot carry another request, so say so
        // rather than let a keep-alive client send its next request into a closed socket.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

/// A problem for a status some layer produced without a body of ours.
fn generic(status: StatusCode) -> ApiError {
    match status.as_u16() {
        400 => ApiError::Malformed("the request could not be read".into()),
        401 => ApiError::Unauthorized("a valid bearer token is required".into()),
        403 => ApiError::Forbidden("not allowed".into()),
        404 => ApiError::NotFound("not found".into()),
        405 => ApiError::MethodNotAllowed("this endpoint does not take that method".into()),
        409 => ApiError::Conflict("conflicts with the current state".into()),
        413 => ApiError::TooLarge("the request body is larger than the server accepts".into()),
        415 => ApiError::UnsupportedMediaType("unsupported content type".into()),
        422 => ApiError::Unprocessable("the request cannot be carried out".into()),
        503 => ApiError::Timeout(
            "the request took too long and was stopped before it reached the engine; nothing was changed, so it is safe to retry".into(),
        ),
        s if s >= 500 => ApiError::Internal(format!("status {s}")),
        _ => ApiError::Malformed(format!("the request failed with status {status}")),
    }
}
