//! Task endpoints: the worklist, one task with its form, claim, release, delegate, complete;
//! and the caller's notifications.

use axum::extract::State;
use uuid::Uuid;

use super::*;
use crate::engine::instance::{deadline_state, DeadlineState};
use crate::engine::service::personal_recipient;
use crate::http::auth::Caller;
use crate::http::dto::*;
use crate::http::error::{ApiError, Problem};
use crate::http::AppState;
use crate::store::worklist::SORT_KEY_LEN;
use crate::store::{TaskRow, WorklistQuery};

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
    let cursor = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let me = caller.actor.id.clone();
    let mut roles = caller.actor.roles.clone();
    roles.push(personal_recipient(&me));
    if let Some(role) = &q.role {
        // Tasks of another role can still be on the page: those the caller holds.
        roles.retain(|r| r == role);
    }
    let wanted = q.state.clone();
    // Overdue means due at or before now: the streams stop there instead of reading on.
    let overdue_bound = (wanted.as_deref() == Some("overdue")).then(|| now.timestamp_millis() + 1);
    let due_before_ms = match (q.due_before.map(|b| b.timestamp_millis()), overdue_bound) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let keep = {
        let (me, role, procedure) = (me.clone(), q.role.clone(), q.procedure.clone());
        move |r: &TaskRow| {
            // A task a colleague has taken is no longer on offer to the caller.
            r.assignee.as_deref().is_none_or(|a| a == me)
                && role.as_ref().is_none_or(|role| r.roles.contains(role))
                && procedure.as_ref().is_none_or(|p| &r.procedure == p)
                && match wanted.as_deref() {
                    Some("offered") => r.assignee.is_none(),
                    Some("held") => r.assignee.as_deref() == Some(me.as_str()),
                    Some("reminded") => deadline_now(r, now) == DeadlineState::Reminded,
                    Some("escalated") => deadline_now(r, now) == DeadlineState::Escalated,
                    _ => true,
                }
        }
    };
    let query = WorklistQuery {
        roles,
        user: me.clone(),
        due_before_ms,
        held_only: q.state.as_deref() == Some("held"),
        keep: Arc::new(keep),
    };
    // Reads a bounded stretch of the caller's worklist indexes: off the runtime workers
    // all the same, as every store read that may touch disk.
    let page = {
        let state = state.clone();
        blocking("reading a worklist", move || {
            state.engine.worklist(&query, cursor.as_deref(), limit)
        })
        .await?
    };
    let items = page
        .items
        .iter()
        .map(|r| TaskSummary::from_row(r, now))
        .collect();
    let next = page.next.as_deref().map(crate::store::chain::hex);
    Ok(Json(TaskList { items, next }))
}

/// A task's deadline state now: what the filter sees is what the row shows
/// (`TaskSummary::from_row`), without building the summary for every entry read.
fn deadline_now(r: &TaskRow, now: chrono::DateTime<chrono::Utc>) -> DeadlineState {
    let due = r
        .due_ms
        .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis);
    deadline_state(DeadlineState::parse(&r.deadline), due, now)
}

fn parse_cursor(text: &str) -> Result<Vec<u8>, ApiError> {
    crate::store::chain::unhex(text, SORT_KEY_LEN)
        .ok_or_else(|| ApiError::Malformed(format!("`{text}` is not a cursor this API gave")))
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
pub(super) async fn on_task(
    state: &AppState,
    caller: &Caller,
    once: &OnceKey,
    kind: &'static str,
    task: Uuid,
    make: impl FnOnce() -> Result<Command, ApiError>,
) -> Result<Answer, ApiError> {
    let actor = caller.acting()?;
    let instance = state
        .engine
        .task_instance(task)?
        .ok_or_else(|| ApiError::NotFound(format!("there is no task {task}")))?;
    let cmd = make()?;
    let once = once.for_caller(caller);
    let done = command(
        kind,
        state
            .engine
            .execute_once(instance, cmd, Some(&actor), once.as_ref()),
    )
    .await?;
    Ok(Answer::new(state, &done))
}

/// Takes a task so nobody else does it.
#[utoipa::path(post, path = "/v1/tasks/{id}/claim", tag = "tasks", security(("bearer" = [])),
    params(IdempotencyHeader, ("id" = Uuid, Path, description = "Task id")),
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn claim_task(
    State(state): St,
    caller: Caller,
    once: OnceKey,
    Path(id): Path<Uuid>,
) -> Result<Answer, ApiError> {
    on_task(&state, &caller, &once, "claim", id, || {
        Ok(Command::Claim { task: id })
    })
    .await
}

/// Gives a claimed task back to its roles.
#[utoipa::path(post, path = "/v1/tasks/{id}/release", tag = "tasks", security(("bearer" = [])),
    params(IdempotencyHeader, ("id" = Uuid, Path, description = "Task id")),
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn release_task(
    State(state): St,
    caller: Caller,
    once: OnceKey,
    Path(id): Path<Uuid>,
) -> Result<Answer, ApiError> {
    on_task(&state, &caller, &once, "release", id, || {
        Ok(Command::Release { task: id })
    })
    .await
}

/// Hands a task on to a colleague, as the step's delegation rule allows.
#[utoipa::path(post, path = "/v1/tasks/{id}/delegate", tag = "tasks", security(("bearer" = [])),
    params(IdempotencyHeader, ("id" = Uuid, Path, description = "Task id")), request_body = DelegateRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn delegate_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Keyed(once, req): Keyed<DelegateRequest>,
) -> Result<Answer, ApiError> {
    on_task(&state, &caller, &once, "delegate", id, || {
        let to = EngineActor::from_directory(&state.people(), &req.to).ok_or_else(|| {
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
    params(IdempotencyHeader, ("id" = Uuid, Path, description = "Task id")), request_body = CompleteRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn complete_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Keyed(once, req): Keyed<CompleteRequest>,
) -> Result<Answer, ApiError> {
    on_task(&state, &caller, &once, "complete", id, || {
        Ok(Command::Complete {
            task: id,
            outcome: req.outcome,
            form: req.form,
            comment: req.comment,
        })
    })
    .await
}
