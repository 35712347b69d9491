//! The instance page: status, data, open tasks with their due state, the procedure picture
//! with where the instance is now and where it has been, the timeline (who, when, what, why,
//! on time or late, signature meanings), and comments. Reads go through the API's handlers,
//! so who may see an instance is the API's rule.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::pages_work::{step_title, summary};
use super::picture::{self, StepMark};
use super::view::{self, Line};
use super::{done, page, query, Chrome, Posted, Signed, WebError};
use crate::http::api::{self, HistoryQuery};
use crate::http::dto::CommentRequest;
use crate::http::error::ApiError;
use crate::http::AppState;

type St = State<Arc<AppState>>;

// ---------------------------------------------------------------------------------------------
// An instance
// ---------------------------------------------------------------------------------------------

pub struct OpenRow {
    id: Uuid,
    title: String,
    roles: String,
    holder: String,
    due: String,
    due_class: &'static str,
    deadline: &'static str,
}

#[derive(Template)]
#[template(path = "instance.html")]
struct InstancePage {
    chrome: Chrome,
    id: Uuid,
    procedure: String,
    procedure_id: String,
    version: u32,
    summary: String,
    status: String,
    end: String,
    started: String,
    updated: String,
    parent: Option<Uuid>,
    data: Vec<(String, String)>,
    open: Vec<OpenRow>,
    picture: String,
    timeline: Vec<Line>,
    /// The next history page's first sequence number, when there is more.
    more_from: Option<u64>,
    can_comment: bool,
    auditor: bool,
    /// The operator's forms are shown (admin or the procedure's operator roles).
    can_repair: bool,
    /// "since … by …: reason" while suspended.
    suspended: Option<String>,
    /// Steps work may be moved to: (id, title).
    steps: Vec<(String, String)>,
}

/// Events per timeline page.
const TIMELINE_PAGE: usize = 500;

#[derive(Debug, Default, Deserialize)]
pub struct TimelineQuery {
    from: Option<u64>,
}

pub async fn instance_page(
    State(state): St,
    signed: Signed,
    Path(id): Path<Uuid>,
    q: Result<Query<TimelineQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let q = query(q)?;
    // The deployments history is kept like an instance; its page is the deployments page.
    if id == crate::engine::deploy::ledger_id() {
        return Ok(axum::response::Redirect::to("/procedures/deployments").into_response());
    }
    let inst = api::get_instance(State(state.clone()), signed.caller.clone(), api::Path(id))
        .await?
        .0;
    let from = q.from.unwrap_or(1).max(1);
    let history = api::instance_history(
        State(state.clone()),
        signed.caller.clone(),
        api::Path(id),
        api::Query(HistoryQuery {
            from: Some(from),
            limit: Some(TIMELINE_PAGE),
        }),
    )
    .await?
    .0;
    let proc = state
        .engine
        .procedure_version(&inst.procedure, inst.version)
        .ok_or_else(|| {
            ApiError::NotFound(format!("procedure {} v{}", inst.procedure, inst.version))
        })?;
    let def = &proc.def;
    let zone = state.engine.zone_of_procedure(&inst.procedure);
    let now = state.engine.clock().now();
    // The picture: where the instance is now, and where it has been (every step whose
    // completion, passing or joining the history records).
    let mut marks: HashMap<String, StepMark> = HashMap::new();
    // Each task's due time, to say how late a late completion was.
    let mut dues: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut seen_from = 1;
    loop {
        let page = state
            .engine
            .history_page(id, seen_from, 1000)
            .map_err(ApiError::from)?;
        let Some(last) = page.last() else { break };
        seen_from = last.seq + 1;
        for e in &page {
            use crate::engine::instance::EventKind as K;
            if let K::TaskOpened {
                task,
                due: Some(due),
                ..
            } = &e.kind
            {
                dues.insert(task.to_string(), *due);
            }
            let step = match &e.kind {
                K::TaskCompleted { step, .. }
                | K::AutoPassed { step, .. }
                | K::Joined { step, .. }
                | K::BranchesStarted { step, .. }
                | K::ChildrenCollected { step, .. }
                | K::Ended { step } => step,
                _ => continue,
            };
            marks.entry(step.clone()).or_default().visited = true;
        }
        if page.len() < 1000 {
            break;
        }
    }
    for t in &inst.tasks {
        marks.entry(t.step.clone()).or_default().current = true;
    }
    let names = view::Names::of(def);
    let timeline: Vec<Line> = history
        .events
        .iter()
        .map(|e| {
            let mut l = view::line(e, &state.people(), zone, &names);
            let due = e
                .details
                .get("task")
                .and_then(|t| t.as_str())
                .and_then(|t| dues.get(t));
            if let (true, Some(due)) = (l.late && e.kind == "task_completed", due) {
                l.timing = format!("{} late", view::span((e.at - *due).num_milliseconds()));
            }
            l
        })
        .collect();
    let more_from = (history.events.len() == TIMELINE_PAGE)
        .then(|| history.events.last().map(|e| e.seq + 1))
        .flatten();
    let open = inst
        .tasks
        .iter()
        .map(|t| {
            let (due, due_class) = view::due_text(t.due, now);
            OpenRow {
                id: t.id,
                title: step_title(def, &t.step),
                roles: view::roles(&t.roles),
                holder: t
                    .holder
                    .as_deref()
                    .map(|h| view::name_of(&state.people(), h))
                    .unwrap_or_default(),
                due,
                due_class,
                deadline: view::deadline_word(&t.deadline),
            }
        })
        .collect();
    let status = match inst.status.as_str() {
        "running" => "Running",
        "completed" => "Completed",
        "cancelled" => "Cancelled",
        other => other,
    }
    .to_string();
    Ok(page(InstancePage {
        chrome: signed.chrome(
            &state,
            format!("{} — {}", def.title, summary(def, &inst.data)),
            "work",
        ),
        id,
        procedure: def.title.clone(),
        procedure_id: inst.procedure.clone(),
        version: inst.version,
        summary: summary(def, &inst.data),
        status,
        end: inst
            .end_step
            .as_deref()
            .map(|s| step_title(def, s))
            .unwrap_or_default(),
        started: view::when(inst.started_at, zone),
        updated: view::when(inst.updated_at, zone),
        parent: inst.parent,
        data: names.values(&inst.data, &state.people()),
        open,
        picture: picture::procedure_svg(def, &marks),
        timeline,
        more_from,
        can_comment: inst.status == "running" && signed.caller.acting().is_ok(),
        auditor: signed.caller.reads_everything(),
        can_repair: inst.status == "running"
            && signed.caller.acting().is_ok_and(|a| a.operates(def)),
        suspended: inst.suspended.as_ref().map(|s| {
            format!(
                "since {}{}: {}",
                view::when(s.since, zone),
                s.by.as_deref()
                    .map(|b| format!(" by {}", view::name_of(&state.people(), b)))
                    .unwrap_or_default(),
                s.reason
            )
        }),
        steps: def
            .steps
            .iter()
            .filter(|(_, s)| s.kind != crate::definition::model::StepKind::End)
            .map(|(k, _)| (k.clone(), step_title(def, k)))
            .collect(),
    }))
}

pub async fn comment(
    State(state): St,
    Path(id): Path<Uuid>,
    posted: Posted,
) -> Result<Response, WebError> {
    let Some(text) = posted.text("comment") else {
        return Err(ApiError::Unprocessable("write the comment first".into()).into());
    };
    api::comment_instance(
        State(state.clone()),
        posted.signed.caller.clone(),
        api::Path(id),
        api::Keyed(api::OnceKey::none(), CommentRequest { text }),
    )
    .await?;
    Ok(done(
        &state,
        &posted.signed,
        "Comment added.",
        &format!("/instances/{id}"),
    ))
}
