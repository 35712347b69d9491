//! The outbox for administrators in the web app: what was sent, what waits (with its tries
//! and the next one), what is dead and why, a button to send a dead one again; and the live
//! event stream the worklist listens to (`/events`); making and removing webhook
//! subscriptions (the secret shown once). Every action goes through the API's
//! own handlers (`http::api::outbox`, `http::api::stream`), with the signed-in caller.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{done, page, view, Chrome, Posted, Signed, WebError};
use crate::http::api;
use crate::http::api::outbox::{DeliveryRetry, DeliveryView};
use crate::http::api::webhooks::{NewSubscription, SubscriptionView};
use crate::http::auth::ADMIN;
use crate::http::error::ApiError;
use crate::http::AppState;

type St = State<std::sync::Arc<AppState>>;

#[derive(Debug, Deserialize)]
pub struct DeliveriesFilter {
    state: Option<String>,
    cursor: Option<String>,
}

/// A delivery as the page shows it: times in the server's zone, as on every other page.
struct Row {
    d: DeliveryView,
    at: String,
    /// When it was sent or given up on, or its next try, or "now".
    when: String,
}

#[derive(Template)]
#[template(path = "deliveries.html")]
struct DeliveriesPage {
    chrome: Chrome,
    /// (state, label, current)
    tabs: Vec<(&'static str, &'static str, bool)>,
    state: String,
    rows: Vec<Row>,
    next: Option<String>,
    hooks: Vec<SubscriptionView>,
    /// The event types a new subscription can name.
    event_types: &'static [&'static str],
}

pub async fn deliveries(
    State(state): St,
    signed: Signed,
    q: Result<Query<DeliveriesFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    signed.caller.require_any(&[ADMIN], "reading the outbox")?;
    let f = super::query(q)?;
    let which = api::outbox::parse_state(f.state.as_deref().filter(|s| !s.is_empty()))?;
    let cursor = super::blank_none(f.cursor);
    let p = api::outbox::delivery_page(&state, which, cursor.as_deref(), 100)?;
    let zone = state.engine.default_zone();
    let tabs = [("pending", "Waiting"), ("dead", "Dead"), ("sent", "Sent")]
        .into_iter()
        .map(|(s, l)| (s, l, s == which.as_str()))
        .collect();
    Ok(page(DeliveriesPage {
        chrome: signed.chrome(&state, "Deliveries", "deliveries"),
        tabs,
        state: which.as_str().to_string(),
        rows: p
            .items
            .into_iter()
            .map(|d| Row {
                at: view::when(d.at, zone),
                when: d
                    .done
                    .or(d.next_attempt)
                    .map_or_else(|| "now".to_string(), |t| view::when(t, zone)),
                d,
            })
            .collect(),
        next: p.next,
        hooks: api::webhooks::subscriptions(&state),
        event_types: &crate::outbox::hooks::EVENT_TYPES,
    }))
}

pub async fn retry(State(state): St, posted: Posted) -> Result<Response, WebError> {
    let signed = &posted.signed;
    signed.caller.require_any(&[ADMIN], "retrying a delivery")?;
    let req = DeliveryRetry {
        instance: posted
            .text("instance")
            .and_then(|s| uuid::Uuid::try_parse(&s).ok())
            .ok_or_else(|| ApiError::Malformed("which instance?".into()))?,
        seq: posted
            .text("seq")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::Malformed("which event?".into()))?,
        destination: posted
            .text("destination")
            .ok_or_else(|| ApiError::Malformed("which destination?".into()))?,
    };
    let what = format!(
        "event {} of {} to {}",
        req.seq, req.instance, req.destination
    );
    api::outbox::retry(&state, req).await?;
    Ok(done(
        &state,
        signed,
        format!("Queued again: {what}."),
        "/admin/deliveries?state=dead",
    ))
}

/// Makes a subscription from the page's form; the secret is shown once, in the message on
/// the page the admin comes back to.
pub async fn create_webhook(State(state): St, posted: Posted) -> Result<Response, WebError> {
    let signed = &posted.signed;
    signed
        .caller
        .require_any(&[ADMIN], "making a webhook subscription")?;
    let events = posted
        .all("events")
        .into_iter()
        .map(|e| {
            serde_json::from_value(serde_json::Value::String(e.clone()))
                .map_err(|_| ApiError::Unprocessable(format!("`{e}` is not an event type")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let req = NewSubscription {
        id: posted.text("id").unwrap_or_default(),
        url: posted.text("url").unwrap_or_default(),
        events,
        procedures: posted
            .text("procedures")
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        allow_private: posted.get("allow_private").is_some(),
        paused: posted.get("paused").is_some(),
    };
    let made = api::webhooks::create(&state, req, &signed.caller.actor.id).await?;
    Ok(done(
        &state,
        signed,
        format!(
            "Subscription {} made. Its signing secret, shown this once — give it to the receiver now: {}",
            made.subscription.id, made.secret
        ),
        "/admin/deliveries",
    ))
}

/// Removes a subscription made over the API.
pub async fn remove_webhook(State(state): St, posted: Posted) -> Result<Response, WebError> {
    let signed = &posted.signed;
    signed
        .caller
        .require_any(&[ADMIN], "removing a webhook subscription")?;
    let id = posted
        .text("id")
        .ok_or_else(|| ApiError::Malformed("which subscription?".into()))?;
    api::webhooks::remove(&state, &id, &signed.caller.actor.id).await?;
    Ok(done(
        &state,
        signed,
        format!("Subscription {id} removed."),
        "/admin/deliveries",
    ))
}

/// The live event stream for the signed-in person (the worklist reloads itself on it).
pub async fn events(
    State(state): St,
    signed: Signed,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    Ok(
        api::stream::stream_for(state, signed.caller, &headers, None)
            .await?
            .into_response(),
    )
}
