//! Staff pages: my work (the worklist), a task with its form, claim / release / delegate /
//! complete, starting an instance, and notifications. Each action calls the API handler of
//! the same name with the signed-in person as caller; a refused form comes back with every
//! problem next to its field and everything typed kept.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::forms::{self, Input};
use super::view::{self, Line};
use super::{done, page, page_with, Chrome, Posted, Signed, WebError};
use crate::definition::model::Procedure;
use crate::engine::compiled::FieldProblem;
use crate::engine::decide::may_start;
use crate::http::api;
use crate::http::dto::{CompleteRequest, DelegateRequest, StartRequest, TaskQuery};
use crate::http::error::ApiError;
use crate::http::AppState;

type St = State<Arc<AppState>>;

/// Most tasks one worklist page shows (the most urgent first).
pub const WORKLIST_PAGE: usize = 100;

/// Reads a query string, refusing a malformed one as the API would.
fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, WebError> {
    q.map(|Query(v)| v).map_err(|r| {
        ApiError::Malformed(format!("the address could not be read: {}", r.body_text())).into()
    })
}

fn blank_none(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// A line naming the instance for people: its first declared data value that is text
/// (the customer, the document), else its procedure's title.
pub fn summary(def: &Procedure, data: &Map<String, Value>) -> String {
    def.data
        .keys()
        .chain(data.keys())
        .find_map(|k| {
            data.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .map(|s| s.chars().take(80).collect())
        .unwrap_or_default()
}

/// A step's title (its id in words when it has none).
pub fn step_title(def: &Procedure, step: &str) -> String {
    def.steps
        .get(step)
        .and_then(|s| s.title.clone())
        .unwrap_or_else(|| view::words(step))
}

// ---------------------------------------------------------------------------------------------
// My work
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct WorkFilter {
    procedure: Option<String>,
    role: Option<String>,
    state: Option<String>,
}

pub struct WorkRow {
    id: Uuid,
    title: String,
    procedure: String,
    summary: String,
    roles: String,
    holder: String,
    mine: bool,
    due: String,
    due_at: String,
    due_class: &'static str,
    deadline: &'static str,
}

#[derive(Template)]
#[template(path = "worklist.html")]
struct WorklistPage {
    chrome: Chrome,
    rows: Vec<WorkRow>,
    /// (state, label, count, selected)
    counts: Vec<(&'static str, &'static str, usize, bool)>,
    procedures: Vec<(String, String, bool)>,
    roles: Vec<(String, bool)>,
    total: usize,
    shown_all: bool,
    filtered: bool,
}

pub async fn worklist(
    State(state): St,
    signed: Signed,
    q: Result<Query<WorkFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let f = query(q)?;
    let (procedure, role, wanted) = (
        blank_none(f.procedure),
        blank_none(f.role),
        blank_none(f.state),
    );
    let ask = |state_filter: Option<String>, limit: usize| TaskQuery {
        role: role.clone(),
        procedure: procedure.clone(),
        due_before: None,
        state: state_filter,
        limit: Some(limit),
    };
    // Counts over everything the filters (other than the state) select; the page itself
    // is the API's answer for the chosen state.
    let all = api::list_tasks(
        State(state.clone()),
        signed.caller.clone(),
        api::Query(ask(None, api::MAX_TASKS)),
    )
    .await?
    .0
    .items;
    let me = signed.caller.actor.id.as_str();
    let count = |pred: &dyn Fn(&crate::http::dto::TaskSummary) -> bool| {
        all.iter().filter(|t| pred(t)).count()
    };
    let counts = vec![
        ("", "All", all.len(), wanted.is_none()),
        (
            "offered",
            "Offered",
            count(&|t| t.holder.is_none()),
            wanted.as_deref() == Some("offered"),
        ),
        (
            "held",
            "With me",
            count(&|t| t.holder.as_deref() == Some(me)),
            wanted.as_deref() == Some("held"),
        ),
        (
            "overdue",
            "Overdue",
            count(&|t| t.overdue),
            wanted.as_deref() == Some("overdue"),
        ),
        (
            "reminded",
            "Reminded",
            count(&|t| t.deadline == "reminded"),
            wanted.as_deref() == Some("reminded"),
        ),
        (
            "escalated",
            "Escalated",
            count(&|t| t.deadline == "escalated"),
            wanted.as_deref() == Some("escalated"),
        ),
    ];
    let items = api::list_tasks(
        State(state.clone()),
        signed.caller.clone(),
        api::Query(ask(wanted.clone(), WORKLIST_PAGE)),
    )
    .await?
    .0
    .items;
    let now = state.engine.clock().now();
    let zone = state.engine.default_zone();
    let mut rows = Vec::with_capacity(items.len());
    for t in &items {
        let inst = state.engine.instance(t.instance).map_err(ApiError::from)?;
        let def = state
            .engine
            .procedure_version(&t.procedure, inst.as_ref().map_or(0, |i| i.version))
            .or_else(|| state.engine.procedure(&t.procedure));
        let (title, proc_title, summary) = match (&def, &inst) {
            (Some(p), Some(i)) => (
                step_title(&p.def, &t.step),
                p.def.title.clone(),
                summary(&p.def, &i.data),
            ),
            _ => (view::words(&t.step), t.procedure.clone(), String::new()),
        };
        let (due, due_class) = view::due_text(t.due, now);
        rows.push(WorkRow {
            id: t.id,
            title,
            procedure: proc_title,
            summary,
            roles: t.roles.join(", "),
            holder: t
                .holder
                .as_deref()
                .map(|h| view::name_of(&state.people, h))
                .unwrap_or_default(),
            mine: t.holder.as_deref() == Some(me),
            due,
            due_at: t.due.map(|d| view::when(d, zone)).unwrap_or_default(),
            due_class,
            deadline: view::deadline_word(&t.deadline),
        });
    }
    let mut procs: Vec<(String, String, bool)> = state
        .engine
        .procedures()
        .iter()
        .map(|p| {
            (
                p.id().to_string(),
                p.def.title.clone(),
                procedure.as_deref() == Some(p.id()),
            )
        })
        .collect();
    procs.sort_by(|a, b| a.1.cmp(&b.1));
    let roles = signed
        .caller
        .actor
        .roles
        .iter()
        .map(|r| (r.clone(), role.as_deref() == Some(r.as_str())))
        .collect();
    let total = counts.iter().find(|c| c.3).map_or(all.len(), |c| c.2);
    Ok(page(WorklistPage {
        chrome: signed.chrome(&state, "My work", "work"),
        shown_all: rows.len() >= total,
        total,
        filtered: procedure.is_some() || role.is_some() || wanted.is_some(),
        rows,
        counts,
        procedures: procs,
        roles,
    }))
}

/// Where a claim or release from a list or a task page returns to.
fn back_to(posted: &Posted, task: Uuid) -> String {
    match posted.get("_back") {
        Some("task") => format!("/tasks/{task}"),
        _ => "/tasks".to_string(),
    }
}

pub async fn claim(
    State(state): St,
    Path(id): Path<Uuid>,
    posted: Posted,
) -> Result<Response, WebError> {
    api::claim_task(
        State(state.clone()),
        posted.signed.caller.clone(),
        api::Path(id),
    )
    .await?;
    Ok(done(
        &state,
        &posted.signed,
        "Claimed: the task is now with you.",
        &back_to(&posted, id),
    ))
}

pub async fn release(
    State(state): St,
    Path(id): Path<Uuid>,
    posted: Posted,
) -> Result<Response, WebError> {
    api::release_task(
        State(state.clone()),
        posted.signed.caller.clone(),
        api::Path(id),
    )
    .await?;
    Ok(done(
        &state,
        &posted.signed,
        "Released: the task is back with its roles.",
        &back_to(&posted, id),
    ))
}

// ---------------------------------------------------------------------------------------------
// A task
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    chrome: Chrome,
    id: Uuid,
    instance: Uuid,
    title: String,
    description: String,
    procedure: String,
    source: String,
    summary: String,
    roles: String,
    holder: String,
    mine: bool,
    claimable: bool,
    due: String,
    due_at: String,
    due_class: &'static str,
    deadline: &'static str,
    data: Vec<(String, String)>,
    history: Vec<Line>,
    can_act: bool,
    inputs: Vec<Input>,
    outcomes: Vec<(String, String)>,
    comment: String,
    meaning: String,
    signatures: String,
    alert: Option<String>,
    problems: Vec<String>,
    delegates: Vec<(String, String)>,
    reason_required: bool,
}

/// What was typed, to draw the form again.
#[derive(Default)]
struct Typed {
    values: Option<Map<String, Value>>,
    comment: String,
    problems: Vec<FieldProblem>,
    alert: Option<String>,
}

pub async fn task_page(
    State(state): St,
    signed: Signed,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    task_view(&state, &signed, id, Typed::default(), StatusCode::OK).await
}

async fn task_view(
    state: &Arc<AppState>,
    signed: &Signed,
    id: Uuid,
    typed: Typed,
    status: StatusCode,
) -> Result<Response, WebError> {
    let detail = api::get_task(State(state.clone()), signed.caller.clone(), api::Path(id))
        .await?
        .0;
    let history = api::instance_history(
        State(state.clone()),
        signed.caller.clone(),
        api::Path(detail.instance),
        api::Query(api::HistoryQuery {
            from: None,
            limit: None,
        }),
    )
    .await?
    .0;
    let proc = state
        .engine
        .procedure_version(&detail.procedure, detail.version)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "procedure {} v{}",
                detail.procedure, detail.version
            ))
        })?;
    let def = &proc.def;
    let step = def
        .steps
        .get(&detail.task.step)
        .ok_or_else(|| ApiError::NotFound(format!("step {}", detail.task.step)))?;
    let zone = state.engine.zone_of_procedure(&detail.procedure);
    let now = state.engine.clock().now();
    let me = &signed.caller.actor;
    let offered =
        detail.task.holder.as_deref() == Some(me.id.as_str()) || me.holds_any(&detail.task.roles);
    let can_act = offered && signed.caller.acting().is_ok();
    // What the form shows: what was typed, else what the instance already knows.
    let values = typed.values.unwrap_or_else(|| {
        step.form
            .keys()
            .filter_map(|k| detail.data.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    });
    let titles = field_titles(def);
    let step_title_of = |s: &str| step_title(def, s);
    let delegates = match &step.delegation {
        Some(d) if can_act => {
            let roles: Vec<String> = if d.to_roles.is_empty() {
                step.role.iter().cloned().collect()
            } else {
                d.to_roles.clone()
            };
            state
                .people
                .users()
                .iter()
                .filter(|u| u.active && u.id != me.id && u.roles.iter().any(|r| roles.contains(r)))
                .map(|u| (u.id.clone(), format!("{} ({})", u.name, u.roles.join(", "))))
                .collect()
        }
        _ => Vec::new(),
    };
    let (due, due_class) = view::due_text(detail.task.due, now);
    let problems = typed
        .problems
        .iter()
        .map(|p| {
            let field = p.field.split('/').next().unwrap_or_default();
            let label = titles
                .get(field)
                .cloned()
                .unwrap_or_else(|| view::words(field));
            if p.field.is_empty() {
                p.message.clone()
            } else {
                format!("{label}: {}", p.message)
            }
        })
        .collect();
    let signatures = match &step.signatures {
        Some(_) if detail.task.signatures > 0 => {
            format!("{} signature(s) given so far", detail.task.signatures)
        }
        _ => String::new(),
    };
    let page_ = TaskPage {
        chrome: signed.chrome(
            state,
            detail
                .title
                .clone()
                .unwrap_or_else(|| view::words(&detail.task.step)),
            "work",
        ),
        id,
        instance: detail.instance,
        title: detail
            .title
            .clone()
            .unwrap_or_else(|| view::words(&detail.task.step)),
        description: detail.description.clone().unwrap_or_default(),
        procedure: def.title.clone(),
        source: def.source.clone().unwrap_or_default(),
        summary: summary(def, &detail.data),
        roles: detail.task.roles.join(", "),
        holder: detail
            .task
            .holder
            .as_deref()
            .map(|h| view::name_of(&state.people, h))
            .unwrap_or_default(),
        mine: detail.task.holder.as_deref() == Some(me.id.as_str()),
        claimable: can_act && detail.task.holder.is_none(),
        due,
        due_at: detail
            .task
            .due
            .map(|d| view::when(d, zone))
            .unwrap_or_default(),
        due_class,
        deadline: view::deadline_word(&detail.task.deadline),
        data: detail
            .data
            .iter()
            .map(|(k, v)| {
                (
                    titles.get(k).cloned().unwrap_or_else(|| view::words(k)),
                    view::value_text(v),
                )
            })
            .collect(),
        history: history
            .events
            .iter()
            .rev()
            .map(|e| view::line(e, &state.people, zone, &step_title_of))
            .collect(),
        can_act,
        inputs: forms::inputs(&step.form, &values, &typed.problems, &state.people, zone),
        outcomes: detail
            .outcomes
            .iter()
            .map(|o| {
                let title = if detail.outcomes.len() == 1 && o.id == "done" {
                    "Complete".to_string()
                } else {
                    o.title.clone()
                };
                (o.id.clone(), title)
            })
            .collect(),
        comment: typed.comment,
        meaning: step.meaning.clone().unwrap_or_default(),
        signatures,
        alert: typed.alert,
        problems,
        delegates,
        reason_required: step.delegation.as_ref().is_some_and(|d| d.reason_required),
    };
    Ok(page_with(status, page_))
}

/// Field id → title, over the procedure's data and every step's form.
fn field_titles(def: &Procedure) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for (k, f) in def
        .data
        .iter()
        .chain(def.steps.values().flat_map(|s| s.form.iter()))
    {
        if let Some(t) = &f.title {
            out.entry(k.clone()).or_insert_with(|| t.clone());
        }
    }
    out
}

pub async fn complete(
    State(state): St,
    Path(id): Path<Uuid>,
    posted: Posted,
) -> Result<Response, WebError> {
    let signed = &posted.signed;
    // The step's fields, to read the form back: from the task's procedure version.
    let detail = api::get_task(State(state.clone()), signed.caller.clone(), api::Path(id))
        .await?
        .0;
    let proc = state
        .engine
        .procedure_version(&detail.procedure, detail.version)
        .ok_or_else(|| ApiError::NotFound(format!("procedure {}", detail.procedure)))?;
    let Some(step) = proc.def.steps.get(&detail.task.step) else {
        return Err(ApiError::NotFound(format!("step {}", detail.task.step)).into());
    };
    let zone = state.engine.zone_of_procedure(&detail.procedure);
    let mut values = forms::read(&step.form, &posted.fields, zone);
    let comment = posted.text("comment");
    let again = |values, problems, alert| Typed {
        values: Some(values),
        comment: comment.clone().unwrap_or_default(),
        problems,
        alert,
    };
    if let Some(change) = forms::row_change(&posted.fields) {
        forms::apply_row_change(&step.form, &mut values, &change);
        return task_view(
            &state,
            signed,
            id,
            again(values, vec![], None),
            StatusCode::OK,
        )
        .await;
    }
    let outcome = posted.text("_outcome");
    if outcome.is_none() && detail.outcomes.len() > 1 {
        let names: Vec<_> = detail.outcomes.iter().map(|o| o.title.clone()).collect();
        let alert = format!(
            "Choose what you decide with one of the buttons: {}.",
            names.join(", ")
        );
        return task_view(
            &state,
            signed,
            id,
            again(values, vec![], Some(alert)),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let req = CompleteRequest {
        outcome,
        form: values.clone(),
        comment: comment.clone(),
    };
    match api::complete_task(
        State(state.clone()),
        signed.caller.clone(),
        api::Path(id),
        api::Json(req),
    )
    .await
    {
        Ok(_) => {
            let title = step_title(&proc.def, &detail.task.step);
            Ok(done(&state, signed, format!("Done: “{title}”."), "/tasks"))
        }
        Err(ApiError::InvalidForm(problems)) => {
            let n = problems.len();
            let alert = format!(
                "The form was not accepted: {n} problem{} to fix. Nothing was changed.",
                if n == 1 { "" } else { "s" }
            );
            task_view(
                &state,
                signed,
                id,
                again(values, problems, Some(alert)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e @ (ApiError::Unprocessable(_) | ApiError::Guard(_))) => {
            let alert = format!("Not accepted: {e}. Nothing was changed.");
            task_view(
                &state,
                signed,
                id,
                again(values, vec![], Some(alert)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn delegate(
    State(state): St,
    Path(id): Path<Uuid>,
    posted: Posted,
) -> Result<Response, WebError> {
    let signed = &posted.signed;
    let Some(to) = posted.text("to") else {
        return task_view(
            &state,
            signed,
            id,
            Typed {
                alert: Some("Choose the colleague to delegate to.".into()),
                ..Typed::default()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let req = DelegateRequest {
        to: to.clone(),
        reason: posted.text("reason"),
    };
    match api::delegate_task(
        State(state.clone()),
        signed.caller.clone(),
        api::Path(id),
        api::Json(req),
    )
    .await
    {
        Ok(_) => Ok(done(
            &state,
            signed,
            format!("Delegated to {}.", view::name_of(&state.people, &to)),
            "/tasks",
        )),
        Err(e @ (ApiError::Unprocessable(_) | ApiError::InvalidForm(_))) => {
            let alert = format!("Not delegated: {e}. Nothing was changed.");
            task_view(
                &state,
                signed,
                id,
                Typed {
                    alert: Some(alert),
                    ..Typed::default()
                },
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "start_list.html")]
struct StartList {
    chrome: Chrome,
    /// (id, title, description, source)
    procedures: Vec<(String, String, String, String)>,
}

pub async fn start_list(State(state): St, signed: Signed) -> Result<Response, WebError> {
    let mut procedures: Vec<_> = state
        .engine
        .procedures()
        .iter()
        .filter(|p| may_start(p, &signed.caller.actor) && signed.caller.acting().is_ok())
        .map(|p| {
            (
                p.id().to_string(),
                p.def.title.clone(),
                p.def.description.clone().unwrap_or_default(),
                p.def.source.clone().unwrap_or_default(),
            )
        })
        .collect();
    procedures.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(page(StartList {
        chrome: signed.chrome(&state, "Start", "start"),
        procedures,
    }))
}

#[derive(Template)]
#[template(path = "start_form.html")]
struct StartForm {
    chrome: Chrome,
    id: String,
    title: String,
    description: String,
    inputs: Vec<Input>,
    alert: Option<String>,
}

pub async fn start_form(
    State(state): St,
    signed: Signed,
    Path(procedure): Path<String>,
) -> Result<Response, WebError> {
    start_view(
        &state,
        &signed,
        &procedure,
        Map::new(),
        vec![],
        None,
        StatusCode::OK,
    )
}

fn start_view(
    state: &AppState,
    signed: &Signed,
    procedure: &str,
    values: Map<String, Value>,
    problems: Vec<FieldProblem>,
    alert: Option<String>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let p = state
        .engine
        .procedure(procedure)
        .ok_or_else(|| ApiError::NotFound(format!("there is no procedure `{procedure}`")))?;
    let zone = state.engine.zone_of_procedure(procedure);
    Ok(page_with(
        status,
        StartForm {
            chrome: signed.chrome(state, format!("Start: {}", p.def.title), "start"),
            id: p.id().to_string(),
            title: p.def.title.clone(),
            description: p.def.description.clone().unwrap_or_default(),
            inputs: forms::inputs(&p.def.data, &values, &problems, &state.people, zone),
            alert,
        },
    ))
}

pub async fn start(
    State(state): St,
    Path(procedure): Path<String>,
    posted: Posted,
) -> Result<Response, WebError> {
    let signed = &posted.signed;
    let p = state
        .engine
        .procedure(&procedure)
        .ok_or_else(|| ApiError::NotFound(format!("there is no procedure `{procedure}`")))?;
    let zone = state.engine.zone_of_procedure(&procedure);
    let mut values = forms::read(&p.def.data, &posted.fields, zone);
    if let Some(change) = forms::row_change(&posted.fields) {
        forms::apply_row_change(&p.def.data, &mut values, &change);
        return start_view(
            &state,
            signed,
            &procedure,
            values,
            vec![],
            None,
            StatusCode::OK,
        );
    }
    let req = StartRequest {
        procedure: procedure.clone(),
        data: values.clone(),
    };
    match api::start(&state, &signed.caller, req).await {
        Ok(inst) => Ok(done(
            &state,
            signed,
            format!("Started: {}.", p.def.title),
            &format!("/instances/{}", inst.id),
        )),
        Err(ApiError::InvalidForm(problems)) => {
            let n = problems.len();
            let alert = format!(
                "Not started: {n} problem{} to fix.",
                if n == 1 { "" } else { "s" }
            );
            start_view(
                &state,
                signed,
                &procedure,
                values,
                problems,
                Some(alert),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

pub struct NoteRow {
    at: String,
    to: String,
    message: String,
    instance: Uuid,
    task: Option<Uuid>,
}

#[derive(Template)]
#[template(path = "notifications.html")]
struct NotificationsPage {
    chrome: Chrome,
    rows: Vec<NoteRow>,
}

pub async fn notifications(State(state): St, signed: Signed) -> Result<Response, WebError> {
    let list = api::notifications(
        State(state.clone()),
        signed.caller.clone(),
        api::Query(crate::http::dto::NotificationQuery { limit: Some(100) }),
    )
    .await?
    .0;
    let zone = state.engine.default_zone();
    let rows = list
        .items
        .into_iter()
        .map(|n| NoteRow {
            at: view::when(n.at, zone),
            to: match (&n.user, &n.role) {
                (Some(u), _) => format!("you ({})", view::name_of(&state.people, u)),
                (None, Some(r)) => format!("role {r}"),
                _ => String::new(),
            },
            message: n.message,
            instance: n.instance,
            task: n.task,
        })
        .collect();
    Ok(page(NotificationsPage {
        chrome: signed.chrome(&state, "Notifications", "notifications"),
        rows,
    }))
}
