//! Task endpoints: the worklist, one task with its form, claim, release, delegate, complete;
//! and the caller's notifications.

use axum::extract::State;
use uuid::Uuid;

use super::*;
use crate::http::auth::Caller;
use crate::http::dto::*;
use crate::http::error::{ApiError, Problem};
use crate::http::AppState;

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
    let me = caller.actor.id.as_str();
    // Reads every open task of the caller's roles (to sort by due time): off the runtime
    // workers, so a large worklist never stalls other requests.
    let rows = {
        let (state, actor) = (state.clone(), caller.actor.clone());
        blocking("reading a worklist", move || state.engine.tasks_for(&actor)).await?
    };
    let items = rows
        .iter()
        // A task a colleague has taken is no longer on offer to the caller.
        .filter(|r| r.assignee.as_deref().is_none_or(|a| a == me))
        .filter(|r| q.role.as_ref().is_none_or(|role| r.roles.contains(role)))
        .filter(|r| q.procedure.as_ref().is_none_or(|p| &r.procedure == p))
        .filter(|r| {
            q.due_before
                .is_none_or(|b| r.due_ms.is_some_and(|d| d < b.timestamp_millis()))
        })
        .map(|r| TaskSummary::from_row(r, now))
        .filter(|t| match q.state.as_deref() {
            Some("offered") => t.holder.is_none(),
            Some("held") => t.holder.as_deref() == Some(me),
            Some("overdue") => t.overdue,
            Some("reminded") => t.deadline == "reminded",
            Some("escalated") => t.deadline == "escalated",
            _ => true,
        })
        .take(limit)
        .collect();
    Ok(Json(TaskList { items }))
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
    kind: &'static str,
    task: Uuid,
    make: impl FnOnce() -> Result<Command, ApiError>,
) -> Result<Json<InstanceView>, ApiError> {
    let actor = caller.acting()?;
    let instance = state
        .engine
        .task_instance(task)?
        .ok_or_else(|| ApiError::NotFound(format!("there is no task {task}")))?;
    let cmd = make()?;
    let inst = command(kind, state.engine.execute(instance, cmd, Some(&actor))).await?;
    Ok(view(state, &inst))
}

/// Takes a task so nobody else does it.
#[utoipa::path(post, path = "/v1/tasks/{id}/claim", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Task id")),
    responses((status = 200, body = InstanceView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn claim_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<InstanceView>, ApiError> {
    on_task(&state, &caller, "claim", id, || {
        Ok(Command::Claim { task: id })
    })
    .await
}

/// Gives a claimed task back to its roles.
#[utoipa::path(post, path = "/v1/tasks/{id}/release", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Task id")),
    responses((status = 200, body = InstanceView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn release_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<InstanceView>, ApiError> {
    on_task(&state, &caller, "release", id, || {
        Ok(Command::Release { task: id })
    })
    .await
}

/// Hands a task on to a colleague, as the step's delegation rule allows.
#[utoipa::path(post, path = "/v1/tasks/{id}/delegate", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Task id")), request_body = DelegateRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn delegate_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<DelegateRequest>,
) -> Result<Json<InstanceView>, ApiError> {
    on_task(&state, &caller, "delegate", id, || {
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
    params(("id" = Uuid, Path, description = "Task id")), request_body = CompleteRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn complete_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<CompleteRequest>,
) -> Result<Json<InstanceView>, ApiError> {
    on_task(&state, &caller, "complete", id, || {
        Ok(Command::Complete {
            task: id,
            outcome: req.outcome,
            form: req.form,
            comment: req.comment,
        })
    })
    .await
}
