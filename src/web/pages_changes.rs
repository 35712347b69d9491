//! The process owner's and the operator's pages for change: deploying a text (from the
//! check page), the deployments history with the files refused now, the versions of a
//! procedure, and migrating running instances to another version with a dry-run preview.
//! Each goes through the API handler of the same name; the page only reads forms and
//! draws answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;

use super::view;
use super::{page, Chrome, Posted, Signed, WebError};
use crate::http::api::{self, DeployRequest, DeploymentsQuery, MigrationRequest};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::reload::FileProblem;

type St = State<Arc<AppState>>;

pub struct VersionRow {
    pub version: u32,
    pub window: String,
    pub running: usize,
    pub hash: String,
    pub current: bool,
}

/// The versions table of a procedure page.
pub async fn version_rows(
    state: &Arc<AppState>,
    signed: &Signed,
    id: &str,
) -> Result<Vec<VersionRow>, WebError> {
    let list = api::procedure_versions(
        State(state.clone()),
        signed.caller.clone(),
        api::Path(id.to_string()),
    )
    .await?
    .0;
    Ok(list
        .items
        .into_iter()
        .map(|v| VersionRow {
            version: v.version,
            window: match (v.valid_from, v.valid_until) {
                (Some(f), Some(u)) => format!("from {f} to {u}"),
                (Some(f), None) => format!("from {f}"),
                (None, Some(u)) => format!("until {u}"),
                (None, None) => "any day".into(),
            },
            running: v.running,
            hash: v.hash.chars().take(12).collect(),
            current: v.current,
        })
        .collect())
}

/// Deploys a text from the check page: a sentence saying what happened, and whether it was
/// refused.
pub async fn deploy(
    state: &Arc<AppState>,
    signed: &Signed,
    text: &str,
) -> Result<(String, bool), WebError> {
    let r = api::deploy_procedure(
        State(state.clone()),
        signed.caller.clone(),
        api::Json(DeployRequest {
            text: text.to_string(),
        }),
    )
    .await;
    let r = match r {
        Ok(r) => r,
        // A changed text under a registered version, a lower version: said on the page.
        Err(ApiError::Conflict(why) | ApiError::Unprocessable(why)) => {
            return Ok((format!("Not deployed: {why}"), true))
        }
        // Errors in the text: listed below by the check that follows.
        Err(ApiError::InvalidProcedure(..)) => {
            return Ok((
                "Not deployed: the text has errors (listed below). The version already running keeps serving.".into(),
                true,
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::Internal(format!("deploy answer: {e}")))?;
    let body: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("deploy answer: {e}")))?;
    let id = body["procedure"]
        .as_str()
        .unwrap_or("the procedure")
        .to_string();
    let version = body["version"].as_u64().unwrap_or(0);
    Ok(match body["outcome"].as_str() {
        Some("registered") => (
            format!("Deployed: {id} version {version} is registered; new instances start on it (within its dates), running ones stay on their version."),
            false,
        ),
        Some("restored") => (format!("Deployed: {id} version {version} is back in service."), false),
        Some("unchanged") => (
            format!("Nothing to deploy: {id} version {version} is already registered with this very text."),
            false,
        ),
        _ => (format!("Not deployed ({status})."), true),
    })
}

pub struct DeploymentRow {
    at: String,
    what: String,
    who: String,
    problems: Vec<String>,
    refused: bool,
}

#[derive(Template)]
#[template(path = "deployments.html")]
struct DeploymentsPage {
    chrome: Chrome,
    refused_now: Vec<FileProblem>,
    rows: Vec<DeploymentRow>,
}

pub async fn deployments(State(state): St, signed: Signed) -> Result<Response, WebError> {
    let list = api::deployments(
        State(state.clone()),
        signed.caller.clone(),
        api::Query(DeploymentsQuery { limit: Some(200) }),
    )
    .await?
    .0;
    let zone = state.engine.default_zone();
    let rows = list
        .items
        .iter()
        .map(|e| {
            let d = &e.details;
            let s = |k: &str| {
                d.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let n = |k: &str| {
                d.get(k)
                    .and_then(|v| v.as_u64())
                    .map(|v| format!(" version {v}"))
                    .unwrap_or_default()
            };
            let what = match e.kind.as_str() {
                "procedure_deployed" => format!(
                    "{}{} {} from {}",
                    s("procedure"),
                    n("version"),
                    if d.get("restored").and_then(|v| v.as_bool()) == Some(true) {
                        "restored"
                    } else {
                        "registered"
                    },
                    s("origin")
                ),
                "deployment_refused" => format!(
                    "{}{} refused ({})",
                    d.get("procedure")
                        .and_then(|v| v.as_str())
                        .unwrap_or("a text"),
                    n("version"),
                    s("origin")
                ),
                "procedure_retired" => {
                    format!("{} retired: {} was removed", s("procedure"), s("origin"))
                }
                other => view::words(other),
            };
            DeploymentRow {
                at: view::when(e.at, zone),
                what,
                who: e
                    .by
                    .as_ref()
                    .map(|b| view::name_of(&state.people(), &b.user))
                    .unwrap_or_else(|| "the file watcher".into()),
                problems: d
                    .get("problems")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                refused: e.kind == "deployment_refused",
            }
        })
        .collect();
    Ok(page(DeploymentsPage {
        chrome: signed.chrome(&state, "Deployments", "procedures"),
        refused_now: list.refused_now,
        rows,
    }))
}

pub struct OutcomeRow {
    instance: String,
    result: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "migrate.html")]
struct MigratePage {
    chrome: Chrome,
    id: String,
    title: String,
    versions: Vec<u32>,
    from: u32,
    to: u32,
    name: String,
    steps: String,
    recompute: bool,
    reason: String,
    outcomes: Vec<OutcomeRow>,
    /// Set after a preview or a run: what it was.
    ran: Option<String>,
    movable: usize,
}

fn migrate_view(state: &AppState, signed: &Signed, id: &str) -> Result<MigratePage, WebError> {
    let latest = state
        .engine
        .procedure(id)
        .ok_or_else(|| ApiError::NotFound(format!("there is no procedure `{id}`")))?;
    // The page shows the plan form and the instances that would move: the same people the
    // engine lets migrate may see it, nobody else.
    let may = signed
        .caller
        .acting()
        .is_ok_and(|a| a.operates(&latest.def));
    if !may {
        return Err(ApiError::Forbidden(format!(
            "migrating `{id}` instances needs admin{}",
            if latest.def.operator_roles.is_empty() {
                String::new()
            } else {
                format!(
                    " or one of the roles {}",
                    latest.def.operator_roles.join(", ")
                )
            }
        ))
        .into());
    }
    let versions = state.engine.versions(id);
    let to = latest.version();
    let from = versions.iter().rev().nth(1).copied().unwrap_or(to);
    Ok(MigratePage {
        chrome: signed.chrome(state, format!("Migrate {}", latest.def.title), "procedures"),
        id: id.to_string(),
        title: latest.def.title.clone(),
        versions,
        from,
        to,
        name: format!("{id}-v{from}-to-v{to}"),
        steps: String::new(),
        recompute: false,
        reason: String::new(),
        outcomes: Vec::new(),
        ran: None,
        movable: 0,
    })
}

pub async fn migrate_page(
    State(state): St,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    Ok(page(migrate_view(&state, &signed, &id)?))
}

/// `old = new` lines (or `old -> new`), blank lines and `#` comments ignored.
fn parse_steps(text: &str) -> Result<BTreeMap<String, String>, WebError> {
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (a, b) = line
            .split_once("->")
            .or_else(|| line.split_once('='))
            .ok_or_else(|| {
                WebError::from(ApiError::Unprocessable(format!(
                    "step mapping line {}: write `old_step = new_step`",
                    i + 1
                )))
            })?;
        let clean = |s: &str| s.trim().trim_matches('"').to_string();
        map.insert(clean(a), clean(b));
    }
    Ok(map)
}

pub async fn migrate(
    State(state): St,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, WebError> {
    let signed = &posted.signed;
    let mut v = migrate_view(&state, signed, &id)?;
    let num = |k: &str, d: u32| posted.text(k).and_then(|t| t.parse().ok()).unwrap_or(d);
    v.from = num("from_version", v.from);
    v.to = num("to_version", v.to);
    v.name = posted.text("name").unwrap_or(v.name);
    v.steps = posted.get("steps").unwrap_or_default().to_string();
    v.recompute = posted.get("recompute") == Some("on");
    v.reason = posted.text("reason").unwrap_or_default();
    let apply = posted.get("action") == Some("apply");
    let steps = parse_steps(&v.steps)?;
    let r = api::migrate(
        State(state.clone()),
        signed.caller.clone(),
        api::Json(MigrationRequest {
            name: v.name.clone(),
            procedure: id.clone(),
            from_version: v.from,
            to_version: v.to,
            steps,
            recompute_deadlines: v.recompute,
            instances: Vec::new(),
            reason: v.reason.clone(),
            dry_run: !apply,
        }),
    )
    .await?
    .0;
    v.movable = r.outcomes.iter().filter(|o| o.result != "refused").count();
    v.ran = Some(if apply {
        "applied".into()
    } else {
        "preview".into()
    });
    v.outcomes = r
        .outcomes
        .into_iter()
        .map(|o| OutcomeRow {
            instance: o.instance.to_string(),
            result: o.result,
            detail: o.detail,
        })
        .collect();
    Ok(page(v))
}
