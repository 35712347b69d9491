//! The operator's forms on an instance page: suspend, resume, move the work to another
//! step, withdraw an open task. Each posts to the API handler of the same name with the
//! signed-in person as the caller, so who may repair and what is safe stay the engine's
//! rules; a refusal comes back as the error page with the engine's sentence.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use uuid::Uuid;

use super::{done, Posted, WebError};
use crate::http::api::{self, MoveRequest, RepairRequest};
use crate::http::error::ApiError;
use crate::http::AppState;

type St = State<Arc<AppState>>;

fn reason(posted: &Posted) -> Result<String, WebError> {
    posted.text("reason").ok_or_else(|| {
        ApiError::Unprocessable("give a reason; it is kept in the history for auditors".into())
            .into()
    })
}

pub async fn suspend(
    State(state): St,
    Path(id): Path<Uuid>,
    posted: Posted,
) -> Result<Response, WebError> {
    hold(state, id, posted, true).await
}

pub async fn resume(
    State(state): St,
    Path(id): Path<Uuid>,
    posted: Posted,
) -> Result<Response, WebError> {
    hold(state, id, posted, false).await
}

/// Suspends (`suspend`) or resumes the instance through the API handler of the same name.
async fn hold(
    state: Arc<AppState>,
    id: Uuid,
    posted: Posted,
    suspend: bool,
) -> Result<Response, WebError> {
    let body = api::Keyed(
        api::OnceKey::none(),
        RepairRequest {
            reason: reason(&posted)?,
        },
    );
    let (caller, path) = (posted.signed.caller.clone(), api::Path(id));
    let said = if suspend {
        api::suspend_instance(State(state.clone()), caller, path, body).await?;
        "Suspended: no work goes on and its deadlines are paused until it is resumed."
    } else {
        api::resume_instance(State(state.clone()), caller, path, body).await?;
        "Resumed: its due times moved on by the time it was suspended."
    };
    Ok(done(
        &state,
        &posted.signed,
        said,
        &format!("/instances/{id}"),
    ))
}

pub async fn move_work(
    State(state): St,
    Path(id): Path<Uuid>,
    posted: Posted,
) -> Result<Response, WebError> {
    let reason = reason(&posted)?;
    let to = posted.text("to").ok_or_else(|| {
        WebError::from(ApiError::Unprocessable("choose the step to move to".into()))
    })?;
    let tasks = match posted.text("task") {
        None => Vec::new(),
        Some(t) => vec![t.parse::<Uuid>().map_err(|_| {
            WebError::from(ApiError::Unprocessable(
                "choose a task from the list".into(),
            ))
        })?],
    };
    api::move_instance(
        State(state.clone()),
        posted.signed.caller.clone(),
        api::Path(id),
        api::Keyed(
            api::OnceKey::none(),
            MoveRequest {
                to: to.clone(),
                tasks,
                reason,
            },
        ),
    )
    .await?;
    Ok(done(
        &state,
        &posted.signed,
        format!("Moved to “{to}”."),
        &format!("/instances/{id}"),
    ))
}

pub async fn withdraw(
    State(state): St,
    Path(id): Path<Uuid>,
    posted: Posted,
) -> Result<Response, WebError> {
    let reason = reason(&posted)?;
    let task: Uuid = posted
        .text("task")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            WebError::from(ApiError::Unprocessable(
                "choose the task to withdraw".into(),
            ))
        })?;
    api::withdraw_task(
        State(state.clone()),
        posted.signed.caller.clone(),
        api::Path(task),
        api::Keyed(api::OnceKey::none(), RepairRequest { reason }),
    )
    .await?;
    Ok(done(
        &state,
        &posted.signed,
        "Task withdrawn.",
        &format!("/instances/{id}"),
    ))
}
