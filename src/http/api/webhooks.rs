//! Webhook subscriptions over the admin API: listing those in force (the file's and those
//! made here, never a secret), making one (the secret is shown in that answer only) and
//! removing one made here (`outbox::stored` keeps them). The file's subscriptions are
//! changed in the file.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::*;
use crate::http::auth::ADMIN;
use crate::http::error::Problem;
use crate::outbox::hooks::EventType;
use crate::outbox::stored::{self, NewHook, StoredError};

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub procedures: Vec<String>,
    pub allow_private: bool,
    pub paused: bool,
    /// `file` (the webhooks file) or `api` (made over the admin API).
    pub source: String,
    /// Who made it over the API, and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A subscription to make over the API.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// Lower-case letters, digits, `_` and `-`; deliveries are filed under `hook:<id>`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9][a-z0-9_-]*$")]
    pub id: String,
    /// The receiver's `http://` or `https://` address.
    #[schema(
        min_length = 8,
        max_length = 2048,
        pattern = r"^https?://[^\s/?#@]+(/\S*)?$"
    )]
    pub url: String,
    /// Event types, or `*` for all.
    #[schema(min_items = 1, max_items = 11)]
    pub events: Vec<EventType>,
    /// Only events of these procedures (every procedure when empty).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub procedures: Vec<String>,
    /// Allow a receiver on this machine or the private network.
    #[serde(default)]
    pub allow_private: bool,
    /// Queue messages but do not send them yet.
    #[serde(default)]
    pub paused: bool,
}

/// A subscription just made, with its signing secret: shown this once, never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedSubscription {
    pub subscription: SubscriptionView,
    /// `whsec_…`: give it to the receiver to verify each call's `webhook-signature`.
    pub secret: String,
}

impl From<StoredError> for ApiError {
    fn from(e: StoredError) -> Self {
        match e {
            StoredError::Invalid(why) => ApiError::Unprocessable(why),
            StoredError::Conflict(why) => ApiError::Conflict(why),
            e @ StoredError::NotFound(_) => ApiError::NotFound(e.to_string()),
            StoredError::Random(e) => ApiError::Internal(format!("random source: {e}")),
            StoredError::Store(e) => ApiError::from(crate::engine::service::ServiceError::from(e)),
        }
    }
}

/// The webhook subscriptions in force (admin): the webhooks file's and those made over the
/// API; secrets are never shown.
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<SubscriptionView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_webhooks(
    State(state): St,
    caller: Caller,
) -> Result<Json<Vec<SubscriptionView>>, ApiError> {
    caller.require_any(&[ADMIN], "reading the webhook subscriptions")?;
    Ok(Json(subscriptions(&state)))
}

/// Makes a webhook subscription (admin). The answer holds its signing secret, shown this
/// once. 409 when the id is taken (also by the webhooks file) or 100 exist already; 422 for
/// an address or event type the webhooks file would refuse too.
#[utoipa::path(post, path = "/v1/admin/webhooks", tag = "admin", security(("bearer" = [])),
    request_body = NewSubscription,
    responses((status = 201, body = CreatedSubscription), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn create_webhook(
    State(state): St,
    caller: Caller,
    Json(req): Json<NewSubscription>,
) -> Result<axum::response::Response, ApiError> {
    caller.require_any(&[ADMIN], "making a webhook subscription")?;
    let made = create(&state, req, &caller.actor.id).await?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// Makes a subscription for `by` (the API's and the web app's way in).
pub async fn create(
    state: &AppState,
    req: NewSubscription,
    by: &str,
) -> Result<CreatedSubscription, ApiError> {
    let made = stored::create(
        &state.engine,
        NewHook {
            id: req.id,
            url: req.url,
            events: req.events.iter().map(|e| e.as_str().to_string()).collect(),
            procedures: req.procedures,
            allow_private: req.allow_private,
            paused: req.paused,
        },
        by,
    )
    .await?;
    let view = view_of(state, &made.id).ok_or_else(|| {
        ApiError::Internal(format!(
            "subscription `{}` not in force after it was made",
            made.id
        ))
    })?;
    Ok(CreatedSubscription {
        subscription: view,
        secret: made.secret,
    })
}

/// Removes a webhook subscription made over the API (admin). Messages still queued for it
/// are given up (dead). 409 for one of the webhooks file (remove it there).
#[utoipa::path(delete, path = "/v1/admin/webhooks/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 204, description = "Removed"), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_webhook(
    State(state): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_any(&[ADMIN], "removing a webhook subscription")?;
    remove(&state, &id, &caller.actor.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a subscription made over the API, for `by`.
pub async fn remove(state: &AppState, id: &str, by: &str) -> Result<(), ApiError> {
    Ok(stored::remove(&state.engine, id, by).await?)
}

fn view_of(state: &AppState, id: &str) -> Option<SubscriptionView> {
    subscriptions(state).into_iter().find(|s| s.id == id)
}

/// Every subscription in force, the file's first.
pub fn subscriptions(state: &AppState) -> Vec<SubscriptionView> {
    let routes = state.engine.routes();
    let records = stored::records(&**state.engine.store());
    routes
        .subscriptions()
        .map(|s| {
            let api = stored::is_stored(&routes, &s.id);
            let record = api.then(|| records.iter().find(|r| r.id == s.id)).flatten();
            SubscriptionView {
                id: s.id.clone(),
                url: s.url.to_string(),
                events: s.events.clone(),
                procedures: s.procedures.clone(),
                allow_private: s.allow_private,
                paused: s.paused,
                source: if api { "api" } else { "file" }.into(),
                created_by: record.map(|r| r.created_by.clone()),
                created_at: record
                    .and_then(|r| chrono::DateTime::from_timestamp_millis(r.created_ms)),
            }
        })
        .collect()
}
