//! The registers page: every register procedures keep (customer ratings, warranties) with
//! its entries as they are now, read through the API's own handlers. Reading only.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::view;
use super::{page, Chrome, Signed, WebError};
use crate::http::api;
use crate::http::dto::RegisterEntriesQuery;

type St = State<std::sync::Arc<crate::http::AppState>>;

pub struct RegisterRow {
    id: String,
    title: String,
    description: String,
    source: String,
    entries: usize,
}

#[derive(Template)]
#[template(path = "registers.html")]
struct RegistersPage {
    chrome: Chrome,
    rows: Vec<RegisterRow>,
}

pub async fn registers(State(state): St, signed: Signed) -> Result<Response, WebError> {
    let list = api::list_registers(State(state.clone()), signed.caller.clone())
        .await
        .0;
    let rows = list
        .items
        .into_iter()
        .map(|r| RegisterRow {
            id: r.id,
            title: r.title,
            description: r.description.unwrap_or_default(),
            source: r.source.unwrap_or_default(),
            entries: r.entries,
        })
        .collect();
    Ok(page(RegistersPage {
        chrome: signed.chrome(&state, "Registers", "registers"),
        rows,
    }))
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    chrome: Chrome,
    title: String,
    description: String,
    source: String,
    key: String,
    columns: Vec<String>,
    rows: Vec<(String, Vec<String>)>,
    /// The link to the next page, when there is one.
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct After {
    after: Option<String>,
}

pub async fn register_page(
    State(state): St,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<After>,
) -> Result<Response, WebError> {
    let list = api::list_registers(State(state.clone()), signed.caller.clone())
        .await
        .0;
    let entries = api::register_entries(
        State(state.clone()),
        signed.caller.clone(),
        api::Path(id.clone()),
        api::Query(RegisterEntriesQuery {
            after: q.after,
            limit: Some(100),
        }),
    )
    .await?
    .0;
    let def = list.items.into_iter().find(|r| r.id == id);
    let book = state.engine.registers();
    let fields = book.def(&id).map(|d| d.fields.clone()).unwrap_or_default();
    let columns: Vec<String> = fields
        .iter()
        .map(|(k, f)| f.title.clone().unwrap_or_else(|| view::words(k)))
        .collect();
    let rows = entries
        .items
        .into_iter()
        .map(|e| {
            let cells = fields
                .keys()
                .map(|k| e.values.get(k).map(view::value_text).unwrap_or_default())
                .collect();
            (e.key, cells)
        })
        .collect();
    // The entries call above already answered 404 for an unknown register.
    let def = def.ok_or_else(|| {
        WebError::Api(crate::http::error::ApiError::NotFound(format!(
            "there is no register `{id}`"
        )))
    })?;
    Ok(page(RegisterPage {
        chrome: signed.chrome(&state, &def.title, "registers"),
        title: def.title,
        description: def.description.unwrap_or_default(),
        source: def.source.unwrap_or_default(),
        key: def.key,
        columns,
        rows,
        next: entries.next_after.map(|after| {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("after", &after)
                .finish();
            format!("/registers/{id}?{query}")
        }),
    }))
}
