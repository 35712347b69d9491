//! The outbox for administrators: deliveries by state (pending, dead, sent), retrying a
//! dead one by hand (subscriptions: `webhooks.rs`).

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::*;
use crate::http::auth::ADMIN;
use crate::http::error::Problem;
use crate::store::{Delivery, DeliveryState};

/// Longest cursor accepted, bytes (a key: family, time, instance, seq, destination).
const MAX_CURSOR: usize = 1 + 8 + 256 + 1 + 16 + 8;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending` (waiting or failed, to be tried again), `dead` or `sent`; pending if left out.
    #[param(pattern = "^(pending|dead|sent)$")]
    pub state: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The `next` of the previous page of the same list.
    #[param(pattern = "^([0-9a-f]{2}){1,290}$")]
    pub cursor: Option<String>,
}

/// One delivery of one message to one destination.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// `hook:<subscription>` or `mail:<user>`.
    pub destination: String,
    pub state: String,
    pub instance: Uuid,
    /// The event that caused it.
    pub seq: u64,
    pub procedure: String,
    /// The webhook event type, or `mail`.
    pub kind: String,
    /// When the event happened.
    pub at: chrono::DateTime<chrono::Utc>,
    pub attempts: u32,
    /// When it will be tried (pending ones that failed, or wait for a mail digest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was sent, or given up on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<chrono::DateTime<chrono::Utc>>,
    /// A mail's subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The `webhook-id` receivers see (the same on every try).
    pub message_id: String,
}

impl DeliveryView {
    pub fn new(d: Delivery, state: DeliveryState) -> DeliveryView {
        let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
        DeliveryView {
            message_id: crate::outbox::sender::message_id(&d),
            state: state.as_str().into(),
            next_attempt: (state == DeliveryState::Pending && (d.attempts > 0 || d.next_ms > 0))
                .then(|| at(d.next_ms)),
            at: at(d.at_ms),
            done: d.done_ms.map(at),
            destination: d.destination,
            instance: d.instance,
            seq: d.seq,
            procedure: d.procedure,
            kind: d.kind,
            attempts: d.attempts,
            last_error: d.last_error,
            subject: d.subject,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// The cursor of the next page, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Which dead delivery to try again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRetry {
    pub instance: Uuid,
    /// The event's sequence number (a whole number; `3.0` is read as 3).
    #[serde(deserialize_with = "whole_seq")]
    #[schema(minimum = 1)]
    pub seq: u64,
    /// `hook:<subscription>` or `mail:<user>`.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00]+$")]
    pub destination: String,
}

fn whole_seq<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    super::whole_number(&n, u64::MAX)
        .ok_or_else(|| D::Error::custom(format!("expected an event's sequence number, not {n}")))
}

/// The state a query names.
pub fn parse_state(s: Option<&str>) -> Result<DeliveryState, ApiError> {
    match s.unwrap_or("pending") {
        "pending" => Ok(DeliveryState::Pending),
        "dead" => Ok(DeliveryState::Dead),
        "sent" => Ok(DeliveryState::Sent),
        other => Err(ApiError::Malformed(format!(
            "unknown state `{other}`; use pending, dead or sent"
        ))),
    }
}

/// A page of deliveries (admin).
pub fn delivery_page(
    state: &AppState,
    which: DeliveryState,
    cursor: Option<&str>,
    limit: usize,
) -> Result<DeliveryPage, ApiError> {
    let cursor = match cursor {
        None => None,
        Some(c) => Some(
            (!c.is_empty() && c.len() <= 2 * MAX_CURSOR && c.len() % 2 == 0)
                .then(|| crate::store::chain::unhex(c, c.len() / 2))
                .flatten()
                .ok_or_else(|| {
                    ApiError::Malformed(format!("`{c}` is not a cursor this list gave"))
                })?,
        ),
    };
    let page = state
        .engine
        .store()
        .deliveries(which, None, cursor.as_deref(), limit)
        .map_err(|e| match e {
            // A cursor of another list: the request is wrong, not the store.
            crate::store::StoreError::Invalid(why) => ApiError::Malformed(why),
            e => ApiError::from(crate::engine::service::ServiceError::from(e)),
        })?;
    Ok(DeliveryPage {
        items: page
            .items
            .into_iter()
            .map(|d| DeliveryView::new(d, which))
            .collect(),
        next: page.next.as_deref().map(crate::store::chain::hex),
    })
}

/// Deliveries of webhook calls and mails by state: pending (with their tries and the next
/// one), dead (given up on after the tries or refused for good) and sent (kept 7 days)
/// (admin).
#[utoipa::path(get, path = "/v1/admin/deliveries", tag = "admin", security(("bearer" = [])),
    params(DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub async fn list_deliveries(
    State(state): St,
    caller: Caller,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    caller.require_any(&[ADMIN], "reading the outbox")?;
    let which = parse_state(q.state.as_deref())?;
    let limit = page_limit(q.limit, 50, MAX_PAGE)?;
    Ok(Json(delivery_page(
        &state,
        which,
        q.cursor.as_deref(),
        limit,
    )?))
}

/// Puts a dead delivery back in the queue with its tries reset, once its receiver is fixed
/// (admin). 404 when there is no such dead delivery.
#[utoipa::path(post, path = "/v1/admin/deliveries/retry", tag = "admin", security(("bearer" = [])),
    request_body = DeliveryRetry,
    responses((status = 200, body = DeliveryView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem)))]
pub async fn retry_delivery(
    State(state): St,
    caller: Caller,
    Json(req): Json<DeliveryRetry>,
) -> Result<Json<DeliveryView>, ApiError> {
    caller.require_any(&[ADMIN], "retrying a delivery")?;
    Ok(Json(retry(&state, req).await?))
}

/// The retry behind the API and the web app's button.
pub async fn retry(state: &AppState, req: DeliveryRetry) -> Result<DeliveryView, ApiError> {
    if req.destination.contains('\0') || req.destination.len() > 256 {
        return Err(ApiError::Malformed("that is not a destination".into()));
    }
    let store_err = |e| ApiError::from(crate::engine::service::ServiceError::from(e));
    let found =
        crate::outbox::sender::retry(&state.engine, req.instance, req.seq, &req.destination)
            .await
            .map_err(store_err)?;
    if !found {
        return Err(ApiError::NotFound(format!(
            "no dead delivery of event {} of {} to `{}`",
            req.seq, req.instance, req.destination
        )));
    }
    let d = state
        .engine
        .store()
        .delivery(
            DeliveryState::Pending,
            req.instance,
            req.seq,
            &req.destination,
        )
        .map_err(store_err)?;
    // Sent already between the retry and this read: show it as it was queued.
    Ok(match d {
        Some(d) => DeliveryView::new(d, DeliveryState::Pending),
        None => DeliveryView {
            destination: req.destination,
            state: "pending".into(),
            instance: req.instance,
            seq: req.seq,
            procedure: String::new(),
            kind: String::new(),
            at: chrono::DateTime::default(),
            attempts: 0,
            next_attempt: None,
            last_error: None,
            done: None,
            subject: None,
            message_id: format!("msg_{}_{}", req.instance.simple(), req.seq),
        },
    })
}
