//! `GET /v1/events/stream`: committed events as Server-Sent Events. Auditors and admins see
//! every event and resume after a disconnect with `Last-Event-ID` (replayed from the audit
//! index, at most `MAX_REPLAY` events); everyone else sees what happens to the tasks offered
//! to them or held by them, and their own actions — a worklist that updates itself — and is
//! told to reload (`event: reset`) when they reconnect or fall behind, since missed events
//! of a worklist are cheaper to re-read than to replay.
//!
//! Each event is a summary (instance, seq, procedure, kind, time, who, task), never form
//! data: a listener reads the instance for the rest, under the usual rules.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::*;
use crate::http::error::Problem;
use crate::outbox::live::Published;

/// Events one resumption replays at most; further behind, the listener is told to reload.
pub const MAX_REPLAY: usize = 10_000;
/// A resumption replays from this long before the event it resumes after: an event's time
/// is when its command was decided, so one committed a moment later can carry an earlier
/// time (or, on a manual clock, the same one with a lower instance id) than the last event a
/// listener got. Events within the margin may come twice; listeners drop repeats by id.
pub const REPLAY_MARGIN_MS: i64 = 5_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this event id (what `Last-Event-ID` carries; the header wins).
    #[param(pattern = r"^[0-9a-fA-F]{64}$")]
    pub after: Option<String>,
}

/// A stream's state: what to replay first, then the live feed.
struct Listener {
    replay: VecDeque<SseEvent>,
    replayed: HashSet<(Uuid, u64)>,
    rx: tokio::sync::broadcast::Receiver<Arc<Published>>,
    actor: crate::engine::instance::Actor,
    everything: bool,
    closing: tokio::sync::watch::Receiver<bool>,
}

fn sse(p: &Published) -> SseEvent {
    SseEvent::default()
        .id(p.id.clone())
        .event("event")
        .json_data(p)
        .unwrap_or_else(|_| SseEvent::default().event("event"))
}

fn reset(reason: &str) -> SseEvent {
    SseEvent::default()
        .event("reset")
        .data(format!("{{\"reason\":\"{reason}\"}}"))
}

/// Committed events as they happen (Server-Sent Events; `event: event` with a JSON summary,
/// `event: reset` when the listener should reload what it shows). Auditors and admins get
/// every event and can resume with `Last-Event-ID`; others get the events of tasks offered to
/// or held by them, and their own.
#[utoipa::path(get, path = "/v1/events/stream", tag = "audit", security(("bearer" = [])),
    params(StreamQuery),
    responses((status = 200, description = "A text/event-stream of events", content_type = "text/event-stream"),
        (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn event_stream(
    State(state): St,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    stream_for(state, caller, &headers, q.after).await
}

/// The stream behind the API endpoint and the web app's `/events`.
pub async fn stream_for(
    state: Arc<AppState>,
    caller: Caller,
    headers: &HeaderMap,
    after: Option<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // An empty `Last-Event-ID` is what a browser sends before it has seen an id: no resume.
    // An empty `after` is a malformed parameter, refused like any other.
    let resume = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(id) => Some(id.to_string()).filter(|s| !s.is_empty()),
        None => after,
    };
    let cursor = resume
        .as_deref()
        .map(crate::audit::parse_cursor)
        .transpose()?;
    let everything = caller.reads_everything();
    // Subscribed before the replay is read, so nothing committed in between is lost (what
    // both hold is sent once).
    let rx = state.engine.subscribe_events();
    let mut listener = Listener {
        replay: VecDeque::new(),
        replayed: HashSet::new(),
        rx,
        actor: caller.actor.clone(),
        everything,
        closing: state.closing.subscribe(),
    };
    if let Some(cursor) = cursor {
        if everything {
            let seen = resume.unwrap_or_default();
            replay(&state, &cursor, &seen, &mut listener).await?;
        } else {
            listener.replay.push_back(reset("reconnected"));
        }
    }
    let stream = futures_util::stream::unfold(listener, |mut l| async move {
        if let Some(e) = l.replay.pop_front() {
            return Some((Ok(e), l));
        }
        loop {
            let next = tokio::select! {
                next = l.rx.recv() => next,
                // The server is shutting down (or the flag's sender is gone): the stream ends.
                _ = l.closing.wait_for(|closing| *closing) => return None,
            };
            match next {
                Ok(p) => {
                    if l.replayed.remove(&(p.instance, p.seq)) {
                        continue;
                    }
                    if p.visible_to(&l.actor, l.everything) {
                        return Some((Ok(sse(&p)), l));
                    }
                }
                Err(RecvError::Lagged(_)) => return Some((Ok(reset("lagged")), l)),
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Reads what was committed since `REPLAY_MARGIN_MS` before the event `cursor` names from
/// the audit index into the listener, leaving out that event itself (`seen`, its id).
async fn replay(
    state: &Arc<AppState>,
    cursor: &[u8],
    seen: &str,
    l: &mut Listener,
) -> Result<(), ApiError> {
    let engine = state.engine.clone();
    let ms = cursor
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(|b| (u64::from_be_bytes(b) ^ (1 << 63)) as i64)
        .ok_or_else(|| ApiError::Malformed("that is not an event id this stream gave".into()))?;
    let from = crate::store::audit::cursor_for(ms.saturating_sub(REPLAY_MARGIN_MS), Uuid::nil(), 0);
    let seen = seen.to_string();
    let found = blocking("replaying the event stream", move || {
        let query = crate::store::AuditQuery::default();
        let mut out = Vec::new();
        let mut at = Some(from);
        while let Some(c) = at.take() {
            let page = engine.audit(&query, Some(&c), 1000)?;
            out.extend(page.items);
            if out.len() > MAX_REPLAY {
                return Ok(None);
            }
            at = page.next;
        }
        Ok::<_, ApiError>(Some(out))
    })
    .await?;
    match found {
        None => l.replay.push_back(reset("too far behind")),
        Some(records) => {
            for r in records {
                let e = &r.event;
                let id = crate::outbox::live::event_id(e.at.timestamp_millis(), r.instance, e.seq);
                if id == seen {
                    continue;
                }
                let p = Published {
                    id,
                    instance: r.instance,
                    seq: e.seq,
                    procedure: r.procedure.clone(),
                    kind: e.kind.name(),
                    at: e.at,
                    user: e.by.as_ref().map(|b| b.user.clone()),
                    task: crate::outbox::live::task_of(&e.kind),
                    roles: Vec::new(),
                    holders: Vec::new(),
                };
                l.replayed.insert((p.instance, p.seq));
                l.replay.push_back(sse(&p));
            }
        }
    }
    Ok(())
}
