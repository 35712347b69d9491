//! Changing what runs: deploying a procedure text, the versions of a procedure with their
//! dates and running instances, the deployments history, reading the files again, an
//! operator's repairs of an instance (suspend, resume, withdraw a task, move work) and
//! migrating instances to a newer version. Who may repair or migrate is the engine's rule
//! (admin or the procedure's `operator_roles`); deploying and reloading are the process
//! owner's and the admin's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::*;
use crate::engine::deploy::Registered;
use crate::engine::migrate::MigrationPlan;
use crate::http::auth::{Caller, ADMIN, AUDITOR, PROCESS_OWNER};
use crate::http::dto::{self, HistoryEvent, IdempotencyHeader};
use crate::http::error::{ApiError, Problem};
use crate::reload::{FileProblem, ReloadError, ReloadReport};

impl From<ReloadError> for ApiError {
    fn from(e: ReloadError) -> Self {
        match e {
            ReloadError::Engine(e) => e.into(),
            ReloadError::Write { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

fn reloader(
    state: &AppState,
) -> Result<&crate::reload::Reloader<crate::store::any::AnyStore>, ApiError> {
    state.reloader.as_deref().ok_or_else(|| {
        ApiError::Conflict("this server was started without procedure files to reload".into())
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The procedure file's TOML text.
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeployResponse {
    /// `registered`, `restored` (a retired procedure back) or `unchanged`.
    pub outcome: String,
    pub procedure: String,
    pub version: u32,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics: Vec<dto::Diagnostic>,
}

/// Deploys a procedure text (process owner, admin): checked like a file against the
/// registered procedures; when clean it is written to the procedures directory and
/// registered, new instances start on it; refused texts are recorded (422 `invalid-procedure`
/// with every diagnostic) and change nothing else.
#[utoipa::path(post, path = "/v1/procedures/deploy", tag = "procedures", security(("bearer" = [])),
    request_body = DeployRequest,
    responses((status = 201, body = DeployResponse), (status = 200, body = DeployResponse, description = "Already registered with this text"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 422, body = Problem)))]
pub async fn deploy_procedure(
    State(state): St,
    caller: Caller,
    Json(req): Json<DeployRequest>,
) -> Result<Response, ApiError> {
    caller.require_any(&[PROCESS_OWNER, ADMIN], "deploying procedures")?;
    let actor = caller.acting()?;
    crate::http::command_begun();
    let (v, done) = reloader(&state)?.deploy_text(&req.text, &actor).await?;
    let mut diagnostics = Vec::new();
    for r in &v.reports {
        for d in r.to_json() {
            let d: dto::Diagnostic = serde_json::from_value(d)
                .map_err(|e| ApiError::Internal(format!("diagnostic as JSON: {e}")))?;
            diagnostics.push(d);
        }
    }
    let (status, outcome, procedure, version) = match done {
        Some(Registered::New { id, version }) => (StatusCode::CREATED, "registered", id, version),
        Some(Registered::Restored { id, version }) => (StatusCode::CREATED, "restored", id, version),
        Some(Registered::Unchanged { id, version }) => (StatusCode::OK, "unchanged", id, version),
        None => {
            return Err(ApiError::InvalidProcedure(
                format!(
                    "the text has {} error(s) and was not deployed; the version already running keeps serving",
                    v.errors()
                ),
                diagnostics,
            ))
        }
    };
    Ok((
        status,
        Json(DeployResponse {
            outcome: outcome.into(),
            procedure,
            version,
            errors: v.errors(),
            warnings: v.warnings(),
            diagnostics,
        }),
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionItem {
    pub version: u32,
    pub hash: String,
    pub valid_from: Option<NaiveDate>,
    pub valid_until: Option<NaiveDate>,
    /// Instances running on this version (counted up to 20,000).
    pub running: usize,
    /// The version new instances start on today.
    pub current: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    pub procedure: String,
    /// Its file was removed: no new instances start.
    pub retired: bool,
    /// Newest first.
    pub items: Vec<VersionItem>,
}

/// Every version of a procedure, newest first, with its dates and running instances
/// (any user).
#[utoipa::path(get, path = "/v1/procedures/{id}/versions", tag = "procedures", security(("bearer" = [])),
    params(("id" = String, Path, description = "Procedure id")),
    responses((status = 200, body = VersionList), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn procedure_versions(
    State(state): St,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    if state.engine.procedure(&id).is_none() {
        return Err(ApiError::NotFound(format!("there is no procedure `{id}`")));
    }
    let engine = state.engine.clone();
    let lookup = id.clone();
    let versions = blocking("listing versions", move || engine.version_list(&lookup)).await?;
    Ok(Json(VersionList {
        retired: state.engine.is_retired(&id),
        procedure: id,
        items: versions
            .into_iter()
            .map(|v| VersionItem {
                version: v.version,
                hash: v.hash,
                valid_from: v.valid_from,
                valid_until: v.valid_until,
                running: v.running,
                current: v.current,
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeploymentsQuery {
    /// Most entries, newest first (1–500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentList {
    /// The deployments history, newest first: `procedure_deployed`, `deployment_refused`,
    /// `procedure_retired`.
    pub items: Vec<HistoryEvent>,
    /// Files whose current text is refused (the version before keeps serving).
    pub refused_now: Vec<FileProblem>,
    pub last_reload: Option<DateTime<Utc>>,
}

/// The deployments history and the files refused now (process owner, admin, auditor).
#[utoipa::path(get, path = "/v1/deployments", tag = "procedures", security(("bearer" = [])),
    params(DeploymentsQuery),
    responses((status = 200, body = DeploymentList), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub async fn deployments(
    State(state): St,
    caller: Caller,
    Query(q): Query<DeploymentsQuery>,
) -> Result<Json<DeploymentList>, ApiError> {
    caller.require_any(&[PROCESS_OWNER, ADMIN, AUDITOR], "reading the deployments")?;
    let limit = page_limit(q.limit, 100, MAX_PAGE)?;
    let engine = state.engine.clone();
    let items = blocking("reading the deployments", move || engine.deployments(limit)).await?;
    let status = state
        .reloader
        .as_ref()
        .map(|r| r.status())
        .unwrap_or_default();
    Ok(Json(DeploymentList {
        items: items.iter().map(HistoryEvent::from).collect(),
        refused_now: status.refused_now,
        last_reload: status.last_at,
    }))
}

/// Reads the procedure, calendar and directory files again now, as the file watcher does
/// on a change (process owner, admin).
#[utoipa::path(post, path = "/v1/admin/reload", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = ReloadReport), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem)))]
pub async fn reload(State(state): St, caller: Caller) -> Result<Json<ReloadReport>, ApiError> {
    caller.require_any(&[PROCESS_OWNER, ADMIN], "reloading the procedure files")?;
    crate::http::command_begun();
    Ok(Json(reloader(&state)?.rescan().await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "reason": "Waiting for the customer's reply" }))]
pub struct RepairRequest {
    /// Why (required; kept in the history).
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "to": "review", "reason": "The reviewer left; redo the review" }))]
pub struct MoveRequest {
    /// The step to open.
    pub to: String,
    /// The open tasks to close; none means all open work.
    #[serde(default)]
    pub tasks: Vec<Uuid>,
    pub reason: String,
}

async fn repair(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    kind: &'static str,
    cmd: Command,
    once: &OnceKey,
) -> Result<Answer, ApiError> {
    let actor = caller.acting()?;
    let once = once.for_caller(caller);
    let done = command(
        kind,
        state
            .engine
            .execute_once(id, cmd, Some(&actor), once.as_ref()),
    )
    .await?;
    Ok(Answer::new(state, &done))
}

/// Suspends an instance: no commands until it resumes; deadlines paused (admin or the
/// procedure's operator roles).
#[utoipa::path(post, path = "/v1/instances/{id}/suspend", tag = "instances", security(("bearer" = [])),
    params(IdempotencyHeader, ("id" = Uuid, Path, description = "Instance id")), request_body = RepairRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn suspend_instance(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Keyed(once, req): Keyed<RepairRequest>,
) -> Result<Answer, ApiError> {
    repair(
        &state,
        &caller,
        id,
        "suspend",
        Command::Suspend { reason: req.reason },
        &once,
    )
    .await
}

/// Resumes a suspended instance; its due times move on by the time it was suspended
/// (admin or the procedure's operator roles).
#[utoipa::path(post, path = "/v1/instances/{id}/resume", tag = "instances", security(("bearer" = [])),
    params(IdempotencyHeader, ("id" = Uuid, Path, description = "Instance id")), request_body = RepairRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn resume_instance(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Keyed(once, req): Keyed<RepairRequest>,
) -> Result<Answer, ApiError> {
    repair(
        &state,
        &caller,
        id,
        "resume",
        Command::Resume { reason: req.reason },
        &once,
    )
    .await
}

/// Moves an instance's work to another step: closes the tasks named (all open work when
/// none is), opens `to`; refused when the result is not a state the procedure reaches by
/// itself (admin or the procedure's operator roles).
#[utoipa::path(post, path = "/v1/instances/{id}/move", tag = "instances", security(("bearer" = [])),
    params(IdempotencyHeader, ("id" = Uuid, Path, description = "Instance id")), request_body = MoveRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn move_instance(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Keyed(once, req): Keyed<MoveRequest>,
) -> Result<Answer, ApiError> {
    if req.tasks.len() > 1_000 {
        return Err(ApiError::Unprocessable("name at most 1,000 tasks".into()));
    }
    let cmd = Command::Move {
        tasks: req.tasks,
        to: req.to,
        reason: req.reason,
    };
    repair(&state, &caller, id, "move", cmd, &once).await
}

/// Withdraws one open task without it being done (admin or the procedure's operator
/// roles).
#[utoipa::path(post, path = "/v1/tasks/{id}/withdraw", tag = "tasks", security(("bearer" = [])),
    params(IdempotencyHeader, ("id" = Uuid, Path, description = "Task id")), request_body = RepairRequest,
    responses((status = 200, body = InstanceView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn withdraw_task(
    State(state): St,
    caller: Caller,
    Path(id): Path<Uuid>,
    Keyed(once, req): Keyed<RepairRequest>,
) -> Result<Answer, ApiError> {
    super::tasks::on_task(&state, &caller, &once, "withdraw_task", id, || {
        Ok(Command::WithdrawTask {
            task: id,
            reason: req.reason.clone(),
        })
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "name": "complaint-v2-to-v3", "procedure": "complaint-handling",
    "from_version": 2, "to_version": 3, "steps": { "investigate": "analyse_cause" },
    "reason": "Revised procedure QP-8.2 rev C", "dry_run": true }))]
pub struct MigrationRequest {
    pub name: String,
    pub procedure: String,
    #[serde(deserialize_with = "whole_u32")]
    pub from_version: u32,
    #[serde(deserialize_with = "whole_u32")]
    pub to_version: u32,
    /// Old step → new step, for renamed or removed steps.
    #[serde(default)]
    pub steps: std::collections::BTreeMap<String, String>,
    /// Compute open tasks' due times again under the new version (default: keep them).
    #[serde(default)]
    pub recompute_deadlines: bool,
    /// Only these instances (default: every running one on `from_version`).
    #[serde(default)]
    pub instances: Vec<Uuid>,
    pub reason: String,
    /// Only say what would happen (default `true`).
    #[serde(default = "yes")]
    pub dry_run: bool,
}

/// A version number: JSON Schema's `integer` admits `2.0`, so a client that writes every
/// number as a float (JavaScript's `JSON.stringify` of a computed value can) is read, not
/// refused as malformed; `2.5` or `-1` still are.
fn whole_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    super::whole_number(&n, u64::from(u32::MAX))
        .and_then(|u| u32::try_from(u).ok())
        .ok_or_else(|| {
            D::Error::custom(format!(
                "expected a version number (0 to {}), not {n}",
                u32::MAX
            ))
        })
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationOutcome {
    pub instance: Uuid,
    /// `migrates` (dry run), `migrated`, or `refused`.
    pub result: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationResult {
    pub dry_run: bool,
    pub outcomes: Vec<MigrationOutcome>,
}

/// Moves running instances to a newer version by a plan: a dry run lists what would
/// happen to each; otherwise each instance that can move is migrated in its own commit
/// (admin or the procedure's operator roles).
#[utoipa::path(post, path = "/v1/migrations", tag = "instances", security(("bearer" = [])),
    request_body = MigrationRequest,
    responses((status = 200, body = MigrationResult), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 422, body = Problem)))]
pub async fn migrate(
    State(state): St,
    caller: Caller,
    Json(req): Json<MigrationRequest>,
) -> Result<Json<MigrationResult>, ApiError> {
    let actor = caller.acting()?;
    let plan = MigrationPlan {
        name: req.name,
        procedure: req.procedure,
        from_version: req.from_version,
        to_version: req.to_version,
        steps: req.steps,
        recompute_deadlines: req.recompute_deadlines,
        instances: req.instances,
        reason: req.reason,
    };
    crate::http::command_begun();
    let outcomes = state
        .engine
        .migrate(&plan, &actor, !req.dry_run)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(MigrationResult {
        dry_run: req.dry_run,
        outcomes: outcomes
            .into_iter()
            .map(|o| MigrationOutcome {
                instance: o.instance,
                result: o.result.to_string(),
                detail: o.detail,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(from: &str) -> Result<MigrationRequest, serde_json::Error> {
        serde_json::from_str(&format!(
            r#"{{"name":"p","procedure":"x","from_version":{from},"to_version":3,"reason":"r"}}"#
        ))
    }

    #[test]
    fn versions_are_whole_numbers_written_either_way() {
        assert_eq!(plan("2").unwrap().from_version, 2);
        assert_eq!(plan("2.0").unwrap().from_version, 2);
        for bad in ["2.5", "-1", "4294967296", "1e20", "\"2\""] {
            assert!(plan(bad).is_err(), "{bad} was read");
        }
    }
}
