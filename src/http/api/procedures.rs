//! Procedure endpoints: the registered procedures, one with its text and start form, its
//! graph, and checking a procedure file without registering it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::*;
use crate::http::auth::{Caller, ADMIN, PROCESS_OWNER};
use crate::http::dto::{self, *};
use crate::http::error::{ApiError, Problem};
use crate::http::AppState;

/// Every registered procedure at its newest version (any user).
#[utoipa::path(get, path = "/v1/procedures", tag = "procedures", security(("bearer" = [])),
    responses((status = 200, body = ProcedureList), (status = 401, body = Problem)))]
pub async fn list_procedures(State(state): St, _caller: Caller) -> Json<ProcedureList> {
    let items = state
        .engine
        .procedures()
        .iter()
        .map(|p| ProcedureSummary {
            id: p.id().to_string(),
            version: p.version(),
            title: p.def.title.clone(),
            versions: state.engine.versions(p.id()),
            start_roles: p.def.start_roles.clone(),
        })
        .collect();
    Json(ProcedureList { items })
}

fn find_procedure(
    state: &AppState,
    id: &str,
    version: Option<u32>,
) -> Result<Arc<crate::engine::compiled::CompiledProcedure>, ApiError> {
    match version {
        None => state.engine.procedure(id),
        Some(v) => state.engine.procedure_version(id, v),
    }
    .ok_or_else(|| match version {
        None => ApiError::NotFound(format!("there is no procedure `{id}`")),
        Some(v) => ApiError::NotFound(format!("procedure `{id}` has no version {v}")),
    })
}

/// One procedure: its text, its definition as JSON and its start form (any user).
#[utoipa::path(get, path = "/v1/procedures/{id}", tag = "procedures", security(("bearer" = [])),
    params(("id" = String, Path, description = "Procedure id"), VersionQuery),
    responses((status = 200, body = ProcedureDetail), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub async fn get_procedure(
    State(state): St,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Json<ProcedureDetail>, ApiError> {
    let p = find_procedure(&state, &id, q.version)?;
    let source = state
        .engine
        .store()
        .procedure(p.id(), p.version())
        .map_err(ServiceError::from)?
        .map(|r| r.source)
        .unwrap_or_default();
    let definition = serde_json::to_value(&p.def)
        .map_err(|e| ApiError::Internal(format!("procedure {id} as JSON: {e}")))?;
    Ok(Json(ProcedureDetail {
        id: p.id().to_string(),
        version: p.version(),
        title: p.def.title.clone(),
        hash: p.hash.clone(),
        source,
        definition,
        start_form: form_schema(&p.def.data),
    }))
}

/// The procedure's graph as Mermaid (default) or Graphviz DOT text (any user).
#[utoipa::path(get, path = "/v1/procedures/{id}/graph", tag = "procedures", security(("bearer" = [])),
    params(("id" = String, Path, description = "Procedure id"), GraphQuery),
    responses((status = 200, description = "Mermaid (`text/vnd.mermaid`) or DOT (`text/vnd.graphviz`) text",
            content((String = "text/vnd.mermaid"), (String = "text/vnd.graphviz"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn procedure_graph(
    State(state): St,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Result<Response, ApiError> {
    let p = find_procedure(&state, &id, q.version)?;
    let (text, ctype) = match q.format.as_deref().unwrap_or("mermaid") {
        "mermaid" => (render::mermaid(&p.def), "text/vnd.mermaid; charset=utf-8"),
        "dot" => (render::dot(&p.def), "text/vnd.graphviz; charset=utf-8"),
        other => {
            return Err(ApiError::Malformed(format!(
                "unknown graph format `{other}`; use `mermaid` or `dot`"
            )))
        }
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(ctype))],
        text,
    )
        .into_response())
}

/// The query of `POST /v1/procedures/validate`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ValidateQuery {
    /// File name to report diagnostics against (default `<id>.toml`), unless a JSON body
    /// names one: 1–255 characters, no slashes.
    #[param(max_length = 255, min_length = 1, pattern = r"^[^/\\\x00]+$")]
    pub name: Option<String>,
}

/// 1–255 characters, none of them a slash, a backslash or NUL: a name to report against,
/// never a path.
fn plain_file_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().count() > 255 || name.contains(['/', '\\', '\0']) {
        return Err(ApiError::Malformed(
            "`name` must be a plain file name without slashes".into(),
        ));
    }
    Ok(())
}

/// Checks a procedure file and returns every diagnostic with line and column
/// (process owner, admin). Nothing is registered.
#[utoipa::path(post, path = "/v1/procedures/validate", tag = "procedures", security(("bearer" = [])),
    params(ValidateQuery),
    request_body(content((ProcedureText = "application/toml"), (ProcedureText = "text/plain"), (ValidateRequest = "application/json")),
        description = "The TOML text, raw or as `{\"text\": …}`"),
    responses((status = 200, body = ValidateResponse), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem)))]
pub async fn validate_procedure(
    State(state): St,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<ValidateQuery>,
    body: Bytes,
) -> Result<Json<ValidateResponse>, ApiError> {
    caller.require_any(&[PROCESS_OWNER, ADMIN], "validating procedures")?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    // Checked even when a JSON body names the file itself, so a bad query never passes.
    query.name.as_deref().map(plain_file_name).transpose()?;
    let (name, text) = if is_json {
        json_object(&body)?;
        let r: ValidateRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Malformed(format!("the body is not a validate request: {e}")))?;
        (r.name.or(query.name), r.text)
    } else {
        if body.is_empty() {
            return Err(ApiError::Malformed(
                "the request body is empty; send the procedure's TOML text".into(),
            ));
        }
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::Malformed("the procedure text is not valid UTF-8".into()))?;
        (query.name, text)
    };
    let own = load::parse_procedure(&text).map(|p| p.id);
    // Without a name the file is taken to be `<id>.toml`, as it would be in `procedures/`.
    let name = name.unwrap_or_else(|| match &own {
        Some(id) if crate::directory::is_id(id) => format!("{id}.toml"),
        _ => "procedure.toml".to_string(),
    });
    plain_file_name(&name)?;
    // Other procedures are context (child references); the file's own id is left out so a
    // changed version of a registered procedure is checked as itself.
    let others: Vec<_> = state
        .engine
        .procedures()
        .iter()
        .filter(|p| Some(p.id()) != own.as_deref())
        .map(|p| p.def.clone())
        .collect();
    let registers: Vec<_> = state.engine.registers().defs().cloned().collect();
    let v = load::validate_text_with(
        &name,
        &text,
        &others,
        &state.engine.calendar_ids(),
        &registers,
    );
    let mut diagnostics = Vec::new();
    for r in &v.reports {
        for d in r.to_json() {
            let d: dto::Diagnostic = serde_json::from_value(d)
                .map_err(|e| ApiError::Internal(format!("diagnostic as JSON: {e}")))?;
            diagnostics.push(d);
        }
    }
    let errors = v.errors();
    Ok(Json(ValidateResponse {
        valid: errors == 0,
        errors,
        warnings: v.warnings(),
        diagnostics,
    }))
}
