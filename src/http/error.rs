//! The one error type of the HTTP API and its RFC 9457 `application/problem+json` body.
//! Every refusal — bad JSON, a missing token, a role the caller lacks, an invalid form —
//! becomes one `ApiError` with a stable `type` URI per kind, so clients branch on `type`
//! and people read `detail`. It must never leak internals: a store or corrupt-data error is
//! logged with the request id and answered with a bare 500 naming only that id.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::compiled::FieldProblem;
use crate::engine::decide::EngineError;
use crate::engine::service::ServiceError;
use crate::store::StoreError;

/// Base of every problem `type`; the part after it names the kind.
pub const PROBLEM_BASE: &str = "urn:sopflow:problem:";

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be read: bad JSON, wrong types, unknown fields, bad query.
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Already completed, claimed by someone else, ended, changed concurrently.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A form failed validation; every field's problem is listed.
    #[error("the form is not valid")]
    InvalidForm(Vec<FieldProblem>),
    /// A procedure text has errors; every diagnostic is listed with line and column.
    #[error("{0}")]
    InvalidProcedure(String, Vec<crate::http::dto::Diagnostic>),
    /// A procedure condition failed to evaluate on this instance's data.
    #[error("{0}")]
    Guard(String),
    /// Well-formed but not acceptable (missing reason, unknown outcome, unknown procedure).
    #[error("{0}")]
    Unprocessable(String),
    /// An `Idempotency-Key` sent again with a different request.
    #[error("{0}")]
    KeyReused(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    /// Logged in full; the client sees only that something failed and the request id.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The RFC 9457 body. `problems` is present for invalid forms.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem; branch on this.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, in words a person can act on.
    pub detail: String,
    /// The request id (also in the `x-request-id` header), for finding it in the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For `invalid-form`: every field's problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<FieldProblemBody>>,
    /// For `invalid-procedure`: every diagnostic, with file, line and column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<crate::http::dto::Diagnostic>>,
}

/// One problem with one form field.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct FieldProblemBody {
    /// The field, `field/0/sub` inside lists and objects; empty for the form as a whole.
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidForm(_)
            | ApiError::InvalidProcedure(..)
            | ApiError::Guard(_)
            | ApiError::Unprocessable(_)
            | ApiError::KeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// One error of every kind, for the OpenAPI document's response descriptions (a new
    /// variant belongs here too, beside `status` and `kind`).
    pub fn one_of_each() -> [ApiError; 16] {
        let s = String::new;
        [
            ApiError::Malformed(s()),
            ApiError::Unauthorized(s()),
            ApiError::Forbidden(s()),
            ApiError::NotFound(s()),
            ApiError::MethodNotAllowed(s()),
            ApiError::Conflict(s()),
            ApiError::TooLarge(s()),
            ApiError::UnsupportedMediaType(s()),
            ApiError::InvalidForm(Vec::new()),
            ApiError::InvalidProcedure(s(), Vec::new()),
            ApiError::Guard(s()),
            ApiError::Unprocessable(s()),
            ApiError::KeyReused(s()),
            ApiError::Timeout(s()),
            ApiError::Unavailable(s()),
            ApiError::Internal(s()),
        ]
    }

    /// The last segment of the `type` URI, and the title.
    pub fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Malformed(_) => ("malformed-request", "The request could not be read"),
            ApiError::Unauthorized(_) => ("unauthenticated", "A valid bearer token is required"),
            ApiError::Forbidden(_) => ("forbidden", "Not allowed for this user"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::MethodNotAllowed(_) => ("method-not-allowed", "Method not allowed"),
            ApiError::Conflict(_) => ("conflict", "Conflicts with the current state"),
            ApiError::TooLarge(_) => ("payload-too-large", "The request body is too large"),
            ApiError::UnsupportedMediaType(_) => {
                ("unsupported-media-type", "Unsupported content type")
            }
            ApiError::InvalidForm(_) => ("invalid-form", "The form is not valid"),
            ApiError::InvalidProcedure(..) => {
                ("invalid-procedure", "The procedure text has errors")
            }
            ApiError::Guard(_) => ("condition-failed", "A condition could not be evaluated"),
            ApiError::Unprocessable(_) => ("unprocessable", "The request cannot be carried out"),
            ApiError::KeyReused(_) => (
                "idempotency-key-reused",
                "The idempotency key was used for another request",
            ),
            ApiError::Timeout(_) => ("timeout", "The request took too long"),
            ApiError::Unavailable(_) => ("unavailable", "The service is unavailable"),
            ApiError::Internal(_) => ("internal", "Internal error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (slug, title) = self.kind();
        let detail = match self {
            ApiError::Internal(_) => {
                "something failed on the server; it is logged under this request's id".to_string()
            }
            other => other.to_string(),
        };
        Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: title.to_string(),
            status: self.status().as_u16(),
            detail,
            request_id: None,
            problems: match self {
                ApiError::InvalidForm(p) => Some(
                    p.iter()
                        .map(|p| FieldProblemBody {
                            field: p.field.clone(),
                            message: p.message.clone(),
                        })
                        .collect(),
                ),
                _ => None,
            },
            diagnostics: match self {
                ApiError::InvalidProcedure(_, d) => Some(d.clone()),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(what) = &self {
            // The request span carries the request id, so the log line and the
            // client's `request_id` meet.
            tracing::error!(error = %what, "internal error");
        }
        let status = self.status();
        let problem = self.problem();
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut res = (status, body).into_response();
        // The problems middleware adds the request id from this instead of re-reading the
        // body (which may be long: an invalid form lists every field).
        res.extensions_mut().insert(std::sync::Arc::new(problem));
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Busy or the database away: worth trying again in a moment.
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sopflow\""),
            );
        }
        res
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
        match e {
            crate::audit::AuditError::Invalid(why) => ApiError::Malformed(why),
            crate::audit::AuditError::Service(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Engine(e) => e.into(),
            ServiceError::UnknownProcedure(id) => {
                ApiError::Unprocessable(format!("there is no procedure `{id}`"))
            }
            e @ (ServiceError::ProcedureChanged { .. }
            | ServiceError::Retired(_)
            | ServiceError::NotValidNow { .. }) => ApiError::Conflict(e.to_string()),
            e @ ServiceError::VersionNotRaised { .. } => ApiError::Unprocessable(e.to_string()),
            ServiceError::KeyReused(why) => ApiError::KeyReused(why),
            ServiceError::Store(StoreError::Conflict { instance, .. }) => ApiError::Conflict(
                format!("instance {instance} is being changed by others; try again"),
            ),
            // The store refuses input it cannot keep (a NUL in an id) before writing anything.
            ServiceError::Store(StoreError::Invalid(why)) => {
                ApiError::Unprocessable(format!("this cannot be stored: {why}"))
            }
            // Logged, not shown: the sentence may name the database's host.
            ServiceError::Store(StoreError::Unreachable(why)) => {
                tracing::warn!(error = %why, "store unreachable");
                ApiError::Unavailable(
                    "the database cannot be reached just now; nothing was changed, try again"
                        .into(),
                )
            }
            ServiceError::Store(e) => ApiError::Internal(e.to_string()),
            ServiceError::Corrupt(e) => ApiError::Internal(e),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            EngineError::Forbidden(why) => ApiError::Forbidden(why),
            EngineError::Conflict(why) => ApiError::Conflict(why),
            EngineError::InvalidForm(problems) => ApiError::InvalidForm(problems),
            EngineError::Guard(why) => ApiError::Guard(format!(
                "a condition of the procedure could not be evaluated: {why}"
            )),
            EngineError::Invalid(why) => ApiError::Unprocessable(why),
            e @ EngineError::Ended(_) => ApiError::Conflict(e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge("the request body is larger than the server accepts".into())
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            _ => ApiError::Malformed(r.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::Malformed(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        // A malformed id names nothing that exists.
        ApiError::NotFound(format!("no such resource: {}", r.body_text()))
    }
}
