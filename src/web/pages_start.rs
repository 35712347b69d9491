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
    /// The form's idempotency key: a form sent twice starts one instance.
    once: String,
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
        Typed {
            values: Map::new(),
            once: &Uuid::now_v7().to_string(),
        },
        vec![],
        None,
        StatusCode::OK,
    )
}

/// What the form shows as typed, and the form's idempotency key.
struct Typed<'a> {
    values: Map<String, Value>,
    once: &'a str,
}

fn start_view(
    state: &AppState,
    signed: &Signed,
    procedure: &str,
    typed: Typed<'_>,
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
            once: typed.once.to_string(),
            id: p.id().to_string(),
            title: p.def.title.clone(),
            description: p.def.description.clone().unwrap_or_default(),
            inputs: forms::inputs(&p.def.data, &typed.values, &problems, &state.people(), zone),
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
    // A form shown before this field existed (or tampered with) gets a key of its own.
    let once = posted
        .get("_once")
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    if let Some(change) = forms::row_change(&posted.fields) {
        forms::apply_row_change(&p.def.data, &mut values, &change);
        return start_view(
            &state,
            signed,
            &procedure,
            Typed {
                values,
                once: &once,
            },
            vec![],
            None,
            StatusCode::OK,
        );
    }
    let req = StartRequest {
        procedure: procedure.clone(),
        data: values.clone(),
    };
    let key = api::OnceKey::of_form(&once, &format!("/start/{procedure}"), &req)
        .unwrap_or_else(api::OnceKey::none);
    match api::start_keyed(&state, &signed.caller, req, &key).await {
        Ok(done_) => Ok(done(
            &state,
            signed,
            if done_.replayed {
                format!(
                    "Already started: {} (the form was sent twice).",
                    p.def.title
                )
            } else {
                format!("Started: {}.", p.def.title)
            },
            &format!("/instances/{}", done_.instance.id),
        )),
        // The form started an instance and was then changed and sent again (the back
        // button): a new key, and the person decides whether to start another.
        Err(ApiError::KeyReused(_)) => start_view(
            &state,
            signed,
            &procedure,
            Typed {
                values,
                once: &Uuid::now_v7().to_string(),
            },
            vec![],
            Some(
                "This form already started an instance. Check the values and press Start \
                 again to start another one."
                    .into(),
            ),
            StatusCode::CONFLICT,
        ),
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
                Typed {
                    values,
                    once: &once,
                },
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
