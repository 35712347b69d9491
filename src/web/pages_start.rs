//! Starting an instance (the procedures a person may start, each with its start form) and
//! the notifications page. Starting goes through `api::start`, the API's one path; a refused
//! start form comes back with every problem next to its field.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::forms::{self, Input};
use super::view;
use super::{done, page, page_with, Chrome, Posted, Signed, WebError};
use crate::engine::compiled::FieldProblem;
use crate::engine::decide::may_start;
use crate::http::api;
use crate::http::dto::StartRequest;
use crate::http::error::ApiError;
use crate::http::AppState;

type St = State<Arc<AppState>>;

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
            inputs: forms::inputs(&p.def.data, &values, &problems, &state.people(), zone),
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
                (Some(u), _) => format!("you ({})", view::name_of(&state.people(), u)),
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
