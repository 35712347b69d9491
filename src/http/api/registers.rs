//! Register endpoints: the registers procedures keep (customer ratings, warranties) and their
//! entries as they are now. Reading only: entries change through the procedures that write
//! them, each change an event in the writing instance's history.

use axum::extract::State;

use super::*;
use crate::http::auth::Caller;
use crate::http::dto::*;
use crate::http::error::{ApiError, Problem};

/// Every register with its fields and how many entries it holds (any user).
#[utoipa::path(get, path = "/v1/registers", tag = "registers", security(("bearer" = [])),
    responses((status = 200, body = RegisterList), (status = 401, body = Problem)))]
pub async fn list_registers(State(state): St, _caller: Caller) -> Json<RegisterList> {
    let book = state.engine.registers();
    let items = book
        .defs()
        .map(|d| RegisterSummary {
            id: d.id.clone(),
            title: d.title.clone(),
            description: d.description.clone(),
            source: d.source.clone(),
            key: d.key.clone(),
            fields: form_schema(&d.fields),
            entries: book.entries(&d.id).map_or(0, |e| e.len()),
        })
        .collect();
    Json(RegisterList { items })
}

/// The longest `after` key accepted (as documented in the OpenAPI document).
const MAX_AFTER: usize = 512;

/// A page of a register's entries in key order, after `after` (any user).
#[utoipa::path(get, path = "/v1/registers/{id}", tag = "registers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Register id"), RegisterEntriesQuery),
    responses((status = 200, body = RegisterEntries), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub async fn register_entries(
    State(state): St,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RegisterEntriesQuery>,
) -> Result<Json<RegisterEntries>, ApiError> {
    // The cost of the page is bounded before any work: the key to start after is at most
    // as long as the schema says.
    if q.after
        .as_ref()
        .is_some_and(|a| a.chars().count() > MAX_AFTER)
    {
        return Err(ApiError::Malformed(format!(
            "`after` may be at most {MAX_AFTER} characters"
        )));
    }
    let limit = page_limit(q.limit, 100, 500)?;
    let book = state.engine.registers();
    let entries = book
        .entries(&id)
        .ok_or_else(|| ApiError::NotFound(format!("there is no register `{id}`")))?;
    let after = q.after.unwrap_or_default();
    let mut items: Vec<RegisterEntry> = entries
        .range::<String, _>((
            std::ops::Bound::Excluded(&after),
            std::ops::Bound::Unbounded,
        ))
        .take(limit + 1)
        .map(|(k, v)| RegisterEntry {
            key: k.clone(),
            values: v.clone(),
        })
        .collect();
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|e| e.key.clone()).unwrap_or_default()
    });
    Ok(Json(RegisterEntries {
        id,
        items,
        next_after: next,
    }))
}
