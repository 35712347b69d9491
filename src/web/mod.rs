//! The web app (`/` of `sopflow serve`): server-rendered pages for staff (their work, task
//! forms, starting instances), auditors (timelines, event search, chain verification,
//! exports, KPI reports), process owners (procedures, heat maps, validation) and admins
//! (the manual clock).
//!
//! Every page and action calls the API's own handler functions (`http::api`) with the
//! signed-in person as the `Caller`: the web app has no authorization rules of its own and
//! can do nothing the API would refuse. It only turns forms into requests and answers into
//! HTML. Templates (askama, `src/web/templates/`) are compiled into the binary and escape
//! every value; the style sheet and the one script are embedded too.
//!
//! Layout: `session` (sign-in sessions, CSRF), `forms` (step forms drawn from a procedure's
//! fields and read back), `view` (times, values and events in words), `picture` and
//! `charts` (server-drawn SVG, sharing `svg`); the handlers by audience: `pages_work` (the worklist), `pages_task` (a task),
//! `pages_start` (starting, notifications), `pages_instance` (an instance), `pages_audit` (audit,
//! reports),
//! `pages_owner` (procedures, validation, the clock).

pub mod charts;
pub mod forms;
pub mod pages_audit;
pub mod pages_changes;
pub mod pages_instance;
pub mod pages_outbox;
pub mod pages_owner;
pub mod pages_registers;
pub mod pages_repair;
pub mod pages_start;
pub mod pages_task;
pub mod pages_work;
pub mod picture;
pub mod session;
pub mod svg;
pub mod view;

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::http::auth::{Caller, ADMIN, AUDITOR, PROCESS_OWNER};
use crate::http::error::ApiError;
use crate::http::AppState;

/// The Content-Security-Policy of every page: nothing inline, nothing from elsewhere.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

const APP_CSS: &str = include_str!("static/app.css");
const APP_JS: &str = include_str!("static/app.js");

/// The web app's routes (merged beside the API's in `http::router`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .route("/tasks", get(pages_work::worklist))
        .route("/tasks/{id}", get(pages_task::task_page))
        .route("/tasks/{id}/claim", post(pages_work::claim))
        .route("/tasks/{id}/release", post(pages_work::release))
        .route("/tasks/{id}/complete", post(pages_task::complete))
        .route("/tasks/{id}/delegate", post(pages_task::delegate))
        .route("/start", get(pages_start::start_list))
        .route(
            "/start/{procedure}",
            get(pages_start::start_form).post(pages_start::start),
        )
        .route("/notifications", get(pages_start::notifications))
        .route("/events", get(pages_outbox::events))
        .route("/admin/deliveries", get(pages_outbox::deliveries))
        .route("/admin/deliveries/retry", post(pages_outbox::retry))
        .route("/admin/webhooks", post(pages_outbox::create_webhook))
        .route("/admin/webhooks/remove", post(pages_outbox::remove_webhook))
        .route("/instances/{id}", get(pages_instance::instance_page))
        .route("/instances/{id}/comments", post(pages_instance::comment))
        .route("/instances/{id}/suspend", post(pages_repair::suspend))
        .route("/instances/{id}/resume", post(pages_repair::resume))
        .route("/instances/{id}/move", post(pages_repair::move_work))
        .route("/instances/{id}/withdraw", post(pages_repair::withdraw))
        .route("/procedures/deployments", get(pages_changes::deployments))
        .route(
            "/procedures/{id}/migrate",
            get(pages_changes::migrate_page).post(pages_changes::migrate),
        )
        .route("/audit", get(pages_audit::search))
        .route("/audit/verify", get(pages_audit::verify))
        .route("/audit/export.csv", get(pages_audit::export_csv))
        .route("/audit/export.jsonl", get(pages_audit::export_jsonl))
        .route("/reports/kpis", get(pages_audit::kpis))
        .route("/procedures", get(pages_owner::procedures))
        .route("/registers", get(pages_registers::registers))
        .route("/registers/{id}", get(pages_registers::register_page))
        .route(
            "/procedures/validate",
            get(pages_owner::validate_page).post(pages_owner::validate),
        )
        .route("/procedures/{id}", get(pages_owner::procedure_page))
        .route(
            "/admin/clock",
            get(pages_owner::clock_page).post(pages_owner::move_clock),
        )
        .layer(middleware::from_fn(security_headers))
}

/// Security headers on every page: the policy above, no framing, no sniffing, no caching of
/// pages that show people's work.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        APP_CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        APP_JS,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The signed-in person
// ---------------------------------------------------------------------------------------------

/// A request from a signed-in person: their session and the `Caller` the API would see.
pub struct Signed {
    pub caller: Caller,
    /// The session id (from the cookie), for flash messages and sign-out.
    pub sid: String,
    pub csrf: String,
    pub flash: Option<String>,
}

impl FromRequestParts<Arc<AppState>> for Signed {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let sid = session::cookie_value(&parts.headers).ok_or(WebError::SignIn)?;
        let s = state.sessions.get(&sid).ok_or(WebError::SignIn)?;
        let Some(caller) = Caller::of_user(state, &s.user) else {
            // Deactivated since signing in: the session ends with the person.
            state.sessions.end(&sid);
            return Err(WebError::SignIn);
        };
        // A message left by the last action shows on the next page read, not on a post.
        let flash = if parts.method == Method::GET {
            state.sessions.take_flash(&sid)
        } else {
            None
        };
        Ok(Signed {
            caller,
            sid,
            csrf: s.csrf,
            flash,
        })
    }
}

impl Signed {
    /// The frame of every page for this person.
    pub fn chrome(&self, state: &AppState, title: impl Into<String>, nav: &'static str) -> Chrome {
        let a = &self.caller.actor;
        let department = state
            .people()
            .department(&a.department)
            .map_or_else(|| a.department.clone(), |d| d.name.clone());
        Chrome {
            title: title.into(),
            nav,
            user_name: a.name.clone(),
            user_line: format!("{} · {}", department, view::roles(&a.roles)),
            csrf: self.csrf.clone(),
            flash: self.flash.clone(),
            audit: self.caller.reads_everything(),
            start: self.caller.acting().is_ok()
                && state
                    .engine
                    .procedures()
                    .iter()
                    .any(|p| crate::engine::decide::may_start(p, a)),
            clock: state.manual_clock.is_some() && self.caller.holds(ADMIN),
            deliveries: self.caller.holds(ADMIN),
            reports: self.caller.holds(AUDITOR)
                || self.caller.holds(ADMIN)
                || self.caller.holds(PROCESS_OWNER)
                || self.caller.holds("management_rep")
                || self.caller.holds("sales"),
        }
    }
}

/// What the layout around every page needs.
pub struct Chrome {
    pub title: String,
    /// Which navigation entry is current (`work`, `start`, `audit`, …).
    pub nav: &'static str,
    pub user_name: String,
    /// Department and roles, under the name.
    pub user_line: String,
    pub csrf: String,
    pub flash: Option<String>,
    pub audit: bool,
    /// The person may start at least one procedure.
    pub start: bool,
    pub clock: bool,
    /// The person may read the outbox (admin).
    pub deliveries: bool,
    pub reports: bool,
}

/// A form posted by a signed-in person, its CSRF token checked: the only way a handler gets
/// at posted fields, so no state-changing page can forget the check.
pub struct Posted {
    pub signed: Signed,
    pub fields: Vec<(String, String)>,
}

impl Posted {
    /// The first value of `name`, if sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, trimmed, or `None` when missing or blank.
    /// Every value sent for `name` (checkboxes), trimmed, blanks left out.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }
}

impl FromRequest<Arc<AppState>> for Posted {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, WebError> {
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        if !same_origin(&parts.headers) {
            return Err(WebError::Csrf);
        }
        let req = Request::from_parts(parts, body);
        let axum::Form(fields) = axum::Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    WebError::Api(ApiError::TooLarge(
                        "the form is larger than the server accepts".into(),
                    ))
                } else {
                    WebError::Api(ApiError::Malformed(format!(
                        "the form could not be read: {}",
                        r.body_text()
                    )))
                }
            })?;
        let sent = fields
            .iter()
            .find(|(k, _)| k == "_csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        if !session::same_secret(sent, &signed.csrf) {
            return Err(WebError::Csrf);
        }
        Ok(Posted { signed, fields })
    }
}

/// A post's `Origin` (when the browser sends one) must be this server: a form on another
/// site posting here is refused even before its CSRF token is looked at.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    !host.is_empty() && origin_host == host
}

/// Whether the request came over TLS (directly or through a proxy that says so): the
/// session cookie is then `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a page could not be shown or an action not done, as a page.
#[derive(Debug)]
pub enum WebError {
    /// Not signed in (or the session ended): go to the sign-in page.
    SignIn,
    /// A post without this session's CSRF token, or from another site.
    Csrf,
    /// What the API would have answered.
    Api(ApiError),
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        WebError::Api(e)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    heading: &'static str,
    detail: String,
    hint: &'static str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, heading, detail, hint) = match self {
            WebError::SignIn => return Redirect::to("/sign-in").into_response(),
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                "This form has expired or did not come from this site, so it was not accepted."
                    .to_string(),
                "Nothing was changed. Go back, reload the page and try again.",
            ),
            WebError::Api(e) => {
                let status = e.status();
                if status == StatusCode::UNAUTHORIZED {
                    return Redirect::to("/sign-in").into_response();
                }
                if let ApiError::Internal(what) = &e {
                    tracing::error!(error = %what, "internal error");
                }
                let (heading, hint) = match status.as_u16() {
                    403 => ("Not allowed", "Nothing was changed."),
                    404 => ("Not found", "It may have been finished or never existed."),
                    409 => (
                        "Conflict",
                        "Someone else changed it first, it is no longer open, or it is on hold until an operator resumes it. Nothing was changed.",
                    ),
                    413 => ("Too large", "Nothing was changed."),
                    422 => ("Cannot do that", "Nothing was changed."),
                    503 => ("Try again", "The server was too busy. Nothing was changed."),
                    s if s >= 500 => (
                        "Something went wrong",
                        "The server could not do this; the error is logged.",
                    ),
                    _ => ("Cannot do that", "Nothing was changed."),
                };
                (status, heading, e.problem().detail, hint)
            }
        };
        let page = ErrorPage {
            status: status.as_u16(),
            heading,
            detail,
            hint,
        };
        (status, html(page.render())).into_response()
    }
}

/// A rendered template as an HTML response (a template error is an internal error).
pub fn html(rendered: Result<String, askama::Error>) -> Response {
    match rendered {
        Ok(body) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "The page could not be drawn; the error is logged.",
            )
                .into_response()
        }
    }
}

/// Renders `page` with `status`.
pub fn page_with(status: StatusCode, page: impl Template) -> Response {
    let mut res = html(page.render());
    if res.status().is_success() {
        *res.status_mut() = status;
    }
    res
}

/// Renders `page` (200).
pub fn page(page: impl Template) -> Response {
    html(page.render())
}

/// Reads a query string, refusing a malformed one as the API would (400).
pub fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, WebError> {
    q.map(|axum::extract::Query(v)| v).map_err(|r| {
        ApiError::Malformed(format!("the address could not be read: {}", r.body_text())).into()
    })
}

/// A form or query value, trimmed; `None` when missing or blank (an unchosen filter).
pub fn blank_none(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Every registered procedure as (id, title, selected) for a choice list, by title.
pub fn procedure_choices(state: &AppState, selected: Option<&str>) -> Vec<(String, String, bool)> {
    let mut out: Vec<(String, String, bool)> = state
        .engine
        .procedures()
        .iter()
        .map(|p| {
            (
                p.id().to_string(),
                p.def.title.clone(),
                selected == Some(p.id()),
            )
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// After an action: a message for the next page, and a 303 to it.
pub fn done(state: &AppState, signed: &Signed, message: impl Into<String>, to: &str) -> Response {
    state.sessions.flash(&signed.sid, message);
    Redirect::to(to).into_response()
}

// ---------------------------------------------------------------------------------------------
// Home, sign-in, sign-out
// ---------------------------------------------------------------------------------------------

async fn home(state: axum::extract::State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let signed_in =
        session::cookie_value(&headers).is_some_and(|sid| state.sessions.get(&sid).is_some());
    Redirect::to(if signed_in { "/tasks" } else { "/sign-in" }).into_response()
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    error: Option<String>,
}

async fn sign_in_page() -> Response {
    page(SignInPage { error: None })
}

#[derive(serde::Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
}

/// Signs in with an API token: the same lookup as the API's bearer token.
async fn sign_in(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<axum::Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    // No session yet, so no CSRF token: a sign-in form posted from another site (login
    // CSRF) is refused by its origin instead.
    if !same_origin(&headers) {
        return WebError::Csrf.into_response();
    }
    let token = match form {
        Ok(axum::Form(f)) => f.token,
        Err(_) => String::new(),
    };
    let token = token.trim();
    let people = state.people();
    let user = (!token.is_empty() && token.len() <= 256)
        .then(|| state.tokens.user_of(&people, token))
        .flatten()
        .and_then(|u| Caller::of_user(&state, u))
        .map(|c| c.actor.id);
    let Some(user) = user else {
        return page_with(
            StatusCode::UNAUTHORIZED,
            SignInPage {
                error: Some(
                    "That token is not valid. Copy it again from where it was given to you.".into(),
                ),
            },
        );
    };
    match state.sessions.start(&user) {
        Ok(sid) => {
            let cookie = session::set_cookie(&sid, over_tls(&headers));
            let mut res = Redirect::to("/tasks").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        Err(e) => WebError::Api(ApiError::Internal(e.to_string())).into_response(),
    }
}

async fn sign_out(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    headers: HeaderMap,
    posted: Posted,
) -> Response {
    state.sessions.end(&posted.signed.sid);
    let mut res = Redirect::to("/sign-in").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(over_tls(&headers))) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}
