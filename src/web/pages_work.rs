//! My work: the worklist (tasks offered to the person's roles or with them, most urgent
//! first, counts per state, filters) with claim and release from the list; and the words
//! shared by the staff pages (an instance's summary line, a step's title). Each action calls
//! the API handler of the same name with the signed-in person as caller.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::view::{self};
use super::{blank_none, done, page, query, Chrome, Posted, Signed, WebError};
use crate::definition::model::Procedure;
use crate::http::api;
use crate::http::dto::TaskQuery;
use crate::http::error::ApiError;
use crate::http::AppState;

type St = State<Arc<AppState>>;

/// Most tasks one worklist page shows (the most urgent first).
pub const WORKLIST_PAGE: usize = 100;

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
    /// "opens 2027-03-05 09:00" while the task may not be completed yet.
    opens: String,
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
        cursor: None,
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
    // Without a state filter the page is the head of the list already read for the counts
    // (the API orders both the same way); only a state filter needs the API's own answer.
    let items = match &wanted {
        None => all.into_iter().take(WORKLIST_PAGE).collect(),
        Some(_) => {
            api::list_tasks(
                State(state.clone()),
                signed.caller.clone(),
                api::Query(ask(wanted.clone(), WORKLIST_PAGE)),
            )
            .await?
            .0
            .items
        }
    };
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
            roles: if t.people.is_empty() {
                view::roles(&t.roles)
            } else {
                t.people
                    .iter()
                    .map(|p| view::name_of(&state.people(), p))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            opens: t
                .opens
                .filter(|o| *o > now)
                .map(|o| format!("opens {}", view::when(o, zone)))
                .unwrap_or_default(),
            holder: t
                .holder
                .as_deref()
                .map(|h| view::name_of(&state.people(), h))
                .unwrap_or_default(),
            mine: t.holder.as_deref() == Some(me),
            due,
            due_at: t.due.map(|d| view::when(d, zone)).unwrap_or_default(),
            due_class,
            deadline: view::deadline_word(&t.deadline),
        });
    }
    let procs = super::procedure_choices(&state, procedure.as_deref());
    let roles = signed
        .caller
        .actor
        .roles
        .iter()
        .map(|r| (r.clone(), role.as_deref() == Some(r.as_str())))
        .collect();
    let total = counts.iter().find(|c| c.3).map_or(counts[0].2, |c| c.2);
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
        api::OnceKey::none(),
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
        api::OnceKey::none(),
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
