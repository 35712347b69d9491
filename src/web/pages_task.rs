//! A task page: the step's title, description and clause, the instance's data and history,
//! the form drawn from the step's fields, the outcome buttons, the signature's meaning,
//! delegation; and completing or delegating it through the API's handlers. A refused form
//! comes back with every problem next to its field and everything typed kept.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::forms::{self, Input};
use super::pages_work::{step_title, summary};
use super::view::{self, Line};
use super::{done, page_with, Chrome, Posted, Signed, WebError};
use crate::engine::compiled::FieldProblem;
use crate::http::api::{self};
use crate::http::dto::{CompleteRequest, DelegateRequest};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::store::Store;

type St = State<Arc<AppState>>;

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
    /// The comment above the step in the procedure file: the document clause it implements.
    clause: String,
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
    let names = view::Names::of(def);
    let delegates = match &step.delegation {
        Some(d) if can_act => {
            let roles: Vec<String> = if d.to_roles.is_empty() {
                step.role.iter().cloned().collect()
            } else {
                d.to_roles.clone()
            };
            state
                .people()
                .users()
                .iter()
                .filter(|u| u.active && u.id != me.id && u.roles.iter().any(|r| roles.contains(r)))
                .map(|u| {
                    (
                        u.id.clone(),
                        format!("{} ({})", u.name, view::roles(&u.roles)),
                    )
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let (due, due_class) = view::due_text(detail.task.due, now);
    // The summary lists the problems in the order the form shows the fields.
    let mut listed: Vec<&FieldProblem> = typed.problems.iter().collect();
    let place = |f: &str| {
        let top = f.split('/').next().unwrap_or_default();
        step.form.get_index_of(top).unwrap_or(usize::MAX)
    };
    listed.sort_by_key(|p| place(&p.field));
    let problems = listed
        .iter()
        .map(|p| {
            let field = p.field.split('/').next().unwrap_or_default();
            if p.field.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", names.field(field), p.message)
            }
        })
        .collect();
    let mut notes: Vec<String> = Vec::new();
    if let Some(opens) = detail.task.opens.filter(|o| *o > now) {
        notes.push(format!(
            "This task opens {}: it cannot be completed before then.",
            view::when(opens, zone)
        ));
    }
    if let Some(sig) = &step.signatures {
        let rules: Vec<String> = sig
            .decide
            .iter()
            .map(|(o, r)| format!("{} needs {}", view::words(o), r.describe()))
            .collect();
        if !rules.is_empty() {
            notes.push(format!("Decided jointly: {}.", rules.join("; ")));
        }
        if detail.task.signatures > 0 {
            notes.push(format!(
                "{} signature(s) given so far",
                detail.task.signatures
            ));
        }
    }
    let signatures = notes.join(" ");
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
        clause: state
            .engine
            .store()
            .procedure(&detail.procedure, detail.version)
            .ok()
            .flatten()
            .and_then(|r| view::step_clause(&r.source, &detail.task.step))
            .unwrap_or_default(),
        source: def.source.clone().unwrap_or_default(),
        summary: summary(def, &detail.data),
        roles: if detail.task.people.is_empty() {
            view::roles(&detail.task.roles)
        } else {
            detail
                .task
                .people
                .iter()
                .map(|p| view::name_of(&state.people(), p))
                .collect::<Vec<_>>()
                .join(", ")
        },
        holder: detail
            .task
            .holder
            .as_deref()
            .map(|h| view::name_of(&state.people(), h))
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
        data: names.values(&detail.data, &state.people()),
        history: history
            .events
            .iter()
            .rev()
            .map(|e| view::line(e, &state.people(), zone, &names))
            .collect(),
        can_act,
        inputs: forms::inputs(&step.form, &values, &typed.problems, &state.people(), zone),
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

pub async fn complete(
    State(state): St,
    Path(id): Path<Uuid>,
    posted: Posted,
) -> Result<Response, WebError> {
    let signed = &posted.signed;
    // The step's fields, to read the form back: from the task's procedure version.
    let detail =
        match api::get_task(State(state.clone()), signed.caller.clone(), api::Path(id)).await {
            Ok(d) => d.0,
            // Not open (completed meanwhile, or never there): the API's own answer to this
            // completion says which — 409 "already completed", or 404.
            Err(ApiError::NotFound(why)) => {
                let req = CompleteRequest {
                    outcome: posted.text("_outcome"),
                    form: Map::new(),
                    comment: None,
                };
                return match api::complete_task(
                    State(state.clone()),
                    signed.caller.clone(),
                    api::Path(id),
                    api::Keyed(api::OnceKey::none(), req),
                )
                .await
                {
                    Err(e) => Err(e.into()),
                    Ok(_) => Err(ApiError::NotFound(why).into()),
                };
            }
            Err(e) => return Err(e.into()),
        };
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
        api::Keyed(api::OnceKey::none(), req),
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
        api::Keyed(api::OnceKey::none(), req),
    )
    .await
    {
        Ok(_) => Ok(done(
            &state,
            signed,
            format!("Delegated to {}.", view::name_of(&state.people(), &to)),
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
