//! Request and response bodies of the HTTP API, separate from the domain model so the
//! store's encoding can change without changing the API (and the other way round). Each
//! derives `ToSchema` for the OpenAPI document. Requests refuse unknown fields, so a
//! misspelt `outcom` is an error rather than silently ignored. Conversions from the domain
//! live here; nothing here decides anything.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::engine::instance::{deadline_state, DeadlineState, Event, Instance, Stamp, Task};
use crate::store::TaskRow;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` while the server takes requests.
    pub status: String,
}

/// The caller as the directory knows them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub id: String,
    pub name: String,
    pub department: String,
    pub roles: Vec<String>,
    pub level: u8,
}

// ---------------------------------------------------------------------------------------------
// Procedures
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProcedureSummary {
    pub id: String,
    /// The newest registered version (new instances start on it).
    pub version: u32,
    pub title: String,
    /// Every registered version (older instances keep running on theirs).
    pub versions: Vec<u32>,
    /// Roles that may start an instance (empty: any role the procedure names).
    pub start_roles: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProcedureList {
    pub items: Vec<ProcedureSummary>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProcedureDetail {
    pub id: String,
    pub version: u32,
    pub title: String,
    /// SHA-256 of the file text this version was registered from.
    pub hash: String,
    /// The procedure file's text.
    pub source: String,
    /// The definition as JSON (the TOML file's structure).
    #[schema(value_type = Object)]
    pub definition: Value,
    /// JSON Schema of the start data, each field with its `title` and `description`.
    #[schema(value_type = Object)]
    pub start_form: Value,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// A registered version; the newest if absent.
    pub version: Option<u32>,
}

/// Paging through a register's entries.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RegisterEntriesQuery {
    /// Entries with keys after this one (the `next_after` of the previous page).
    #[param(max_length = 512)]
    pub after: Option<String>,
    /// Page size, 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// A register: keyed reference records procedures keep and read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterSummary {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The company document that defines these records.
    #[serde(default)]
    pub source: Option<String>,
    /// What an entry's key is, in words.
    pub key: String,
    /// The fields of an entry, as a JSON Schema.
    #[schema(value_type = Object)]
    pub fields: Value,
    /// How many entries it holds now.
    pub entries: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterList {
    pub items: Vec<RegisterSummary>,
}

/// One entry of a register, as it is now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterEntry {
    pub key: String,
    #[schema(value_type = Object)]
    pub values: Map<String, Value>,
}

/// A page of a register's entries, in key order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterEntries {
    pub id: String,
    pub items: Vec<RegisterEntry>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(default)]
    pub next_after: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    /// `mermaid` (default) or `dot`.
    #[param(value_type = Option<GraphFormat>)]
    pub format: Option<String>,
    pub version: Option<u32>,
}

/// A procedure file's TOML text, sent as the raw request body (documentation only).
pub struct ProcedureText;

impl utoipa::PartialSchema for ProcedureText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A procedure file's TOML text (not empty)."))
            .min_length(Some(1))
            .build()
            .into()
    }
}

impl ToSchema for ProcedureText {}

/// A procedure file to check. Send it as the raw body (`Content-Type: application/toml`
/// or `text/plain`), or as this JSON object.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The TOML text.
    pub text: String,
    /// File name to report diagnostics against (default `<id>.toml`): 1–255 characters,
    /// no slashes.
    #[serde(default)]
    #[schema(max_length = 255, min_length = 1, pattern = r"^[^/\\\x00]+$")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    /// `error` or `warning`.
    pub severity: String,
    /// Stable code, e.g. `unknown-step`.
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub help: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ValidateResponse {
    /// True when there is no error (warnings allowed).
    pub valid: bool,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics: Vec<Diagnostic>,
}

// ---------------------------------------------------------------------------------------------
// Instances
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "procedure": "complaint-handling",
    "data": { "customer": "Huadong Packaging Co.", "contact": "Mr Zhang, 021-5555-0101" }
}))]
pub struct StartRequest {
    /// Procedure id; the instance runs on its newest version.
    pub procedure: String,
    /// Start data, checked against the procedure's `[data]` fields.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "reason": "Entered twice; the other complaint goes on" }))]
pub struct CancelRequest {
    /// Why the instance is cancelled (required; recorded in the history).
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "text": "The customer called again; a call back is promised for today" }))]
pub struct CommentRequest {
    pub text: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstanceQuery {
    /// Only instances of this procedure.
    // A NUL is refused 400, so the schema says so (Schemathesis sent one as schema-valid).
    #[param(pattern = r"^[^\x00]*$")]
    pub procedure: Option<String>,
    /// `running`, `completed` or `cancelled`.
    #[param(value_type = Option<InstanceStatus>)]
    pub status: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// An open task as part of an instance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenTask {
    pub id: Uuid,
    pub step: String,
    /// Roles the task is offered to.
    pub roles: Vec<String>,
    /// The people the task is offered to, when the step names a list of people.
    #[serde(default)]
    pub people: Vec<String>,
    /// The earliest time the task may be completed, if the step sets one.
    #[serde(default)]
    pub opens: Option<DateTime<Utc>>,
    /// The one person it is with (delegate, claimer or named assignee), if any.
    #[serde(default)]
    pub holder: Option<String>,
    #[serde(default)]
    pub claimed_by: Option<String>,
    #[serde(default)]
    pub delegated_to: Option<String>,
    pub opened_at: DateTime<Utc>,
    /// When the step is due.
    #[serde(default)]
    pub due: Option<DateTime<Utc>>,
    /// Due at or before the server's current time (`now >= due`).
    pub overdue: bool,
    /// `on_time`; `reminded` (a reminder went out); `breached` (the due time has come);
    /// `escalated` (offered to another role too, or reassigned, after the due time).
    pub deadline: String,
    /// Signatures given so far on a multi-signature step.
    pub signatures: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstanceView {
    pub id: Uuid,
    pub procedure: String,
    pub version: u32,
    /// `running`, `completed` or `cancelled`.
    pub status: String,
    /// The end step reached, once completed.
    #[serde(default)]
    pub end_step: Option<String>,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// Number of events in the history.
    pub events: u64,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The parent instance, for a child started by a subprocess step.
    #[serde(default)]
    pub parent: Option<Uuid>,
    pub tasks: Vec<OpenTask>,
    /// Set while an operator has the instance suspended.
    #[serde(default)]
    pub suspended: Option<SuspensionView>,
}

/// Who suspended an instance, when and why.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SuspensionView {
    pub since: DateTime<Utc>,
    #[serde(default)]
    pub by: Option<String>,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstanceSummary {
    pub id: Uuid,
    pub procedure: String,
    pub version: u32,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub open_tasks: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstancePage {
    pub items: Vec<InstanceSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default)]
    pub next: Option<String>,
}

/// Who did something, as they were at that moment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Actor {
    pub user: String,
    pub name: String,
    pub department: String,
    /// The roles the person held at that moment.
    pub roles: Vec<String>,
    /// For a delegate: the person who handed the task on.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
}

/// One entry of an instance's history. `kind` names the event; the other fields depend on
/// it (`task`, `step`, `outcome`, `form`, `comment`, `reason`, `due`, …).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryEvent {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// Absent when the engine acted (routing, timers, children ending).
    #[serde(default)]
    pub by: Option<Actor>,
    pub kind: String,
    /// The event's own fields.
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct History {
    pub instance: Uuid,
    pub events: Vec<HistoryEvent>,
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Only tasks offered to this role.
    pub role: Option<String>,
    /// Only tasks of this procedure.
    pub procedure: Option<String>,
    /// Only tasks due before this instant (RFC 3339).
    pub due_before: Option<DateTime<Utc>>,
    /// `offered` (nobody holds it yet), `held` (with the caller) or `overdue`.
    #[param(value_type = Option<TaskState>)]
    pub state: Option<String>,
    /// At most this many (1–1000, default 200).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Where to go on from: the `next` of the page before.
    #[param(pattern = "^[0-9a-f]{50}$")]
    pub cursor: Option<String>,
}

/// The header every instance and task command accepts (`http::api::once`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// Any string of 1 to 255 visible ASCII characters (a UUID): a retry with the same key
    /// and request within 24 hours returns the first answer (with
    /// `Idempotent-Replayed: true`) and changes nothing; with another request, 422.
    #[param(rename = "Idempotency-Key", value_type = String, required = false, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")]
    pub idempotency_key: Option<String>,
}

/// A worklist entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskSummary {
    pub id: Uuid,
    pub instance: Uuid,
    pub procedure: String,
    pub step: String,
    pub roles: Vec<String>,
    /// The people the task is offered to, when the step names a list of people instead of
    /// a role.
    #[serde(default)]
    pub people: Vec<String>,
    /// The person it is with, if any.
    #[serde(default)]
    pub holder: Option<String>,
    /// The earliest time it may be completed, when the step has one still ahead.
    #[serde(default)]
    pub opens: Option<DateTime<Utc>>,
    #[serde(default)]
    pub due: Option<DateTime<Utc>>,
    /// Due at or before the server's current time (`now >= due`).
    pub overdue: bool,
    /// `on_time`, `reminded`, `breached` or `escalated`, as for an instance's open tasks.
    pub deadline: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    pub items: Vec<TaskSummary>,
    /// Pass as `cursor` for the next page; absent at the end. A page reads a bounded
    /// stretch of the worklist, so one with fewer items than `limit` (even none) may still
    /// have a `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A task with what is needed to complete it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: OpenTask,
    pub instance: Uuid,
    pub procedure: String,
    pub version: u32,
    /// The step's title.
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Every outcome one may choose, in the procedure's order; a step that declares none has
    /// the one outcome `done`. Send the `id` as the completion's `outcome` (it may be left
    /// out when there is only one).
    pub outcomes: Vec<OutcomeChoice>,
    /// JSON Schema of the step's form, each field with its `title` and `description`.
    #[schema(value_type = Object)]
    pub form: Value,
    /// The instance's data so far.
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
}

/// One answer a person can give when completing a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({ "id": "return_for_rework", "title": "Return for rework" }))]
pub struct OutcomeChoice {
    /// What to send as `outcome` (`approve`, `done`).
    pub id: String,
    /// The id in words, for a button or a list ("Return for rework").
    pub title: String,
}

impl OutcomeChoice {
    /// The outcome with a title made from its id: procedures give outcomes no titles, and
    /// their ids are lower-case words joined with `_` (or `-`).
    pub fn new(id: &str) -> OutcomeChoice {
        let words = id.replace(['_', '-'], " ");
        let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut chars = words.chars();
        let title = match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => id.to_string(),
        };
        OutcomeChoice {
            id: id.to_string(),
            title,
        }
    }
}

/// Reads both shapes `outcomes` has had: objects with `id` and `title`, and the plain ids
/// servers sent before outcomes had titles (given their derived title), so a reader of an
/// older answer or a saved one still gets every outcome.
impl<'de> Deserialize<'de> for OutcomeChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Id(String),
            Full { id: String, title: Option<String> },
        }
        Ok(match Shape::deserialize(d)? {
            Shape::Id(id) => OutcomeChoice::new(&id),
            Shape::Full { id, title: None } => OutcomeChoice::new(&id),
            Shape::Full {
                id,
                title: Some(title),
            } => OutcomeChoice { id, title },
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "form": { "channel": "telephone", "complaint": "The replacement roller arrived damaged.",
              "severity": "general", "first_answer": "A new roller ships today by courier." },
    "comment": "Registered on the customer's second call"
}))]
pub struct CompleteRequest {
    /// Required when the step has several outcomes.
    #[serde(default)]
    pub outcome: Option<String>,
    /// The step's form values.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub form: Map<String, Value>,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "to": "liu.yang", "reason": "On leave until Friday" }))]
pub struct DelegateRequest {
    /// The colleague's user id.
    pub to: String,
    #[serde(default)]
    pub reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Notifications, clock
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// At most this many, newest first (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    pub at: DateTime<Utc>,
    /// The role whose holders are told; absent for a notification to one person.
    #[serde(default)]
    pub role: Option<String>,
    /// The one person told (a reminder of a task they hold); absent for a role's.
    #[serde(default)]
    pub user: Option<String>,
    pub instance: Uuid,
    /// The history entry (sequence number) the notification comes from.
    pub seq: u64,
    #[serde(default)]
    pub task: Option<Uuid>,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationList {
    pub items: Vec<Notification>,
}

/// How far to move the manual clock: `by` (`"3 working days"`, `"2h"`, or an ISO 8601
/// duration like `"PT2H"`, `"P3D"`) or `to` (an RFC 3339 instant). Exactly one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "by": "3 working days" }))]
pub struct ClockAdvance {
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClockState {
    /// The clock after moving.
    pub now: DateTime<Utc>,
    /// Deadline timers that fell due and fired.
    pub fired: usize,
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

impl OpenTask {
    /// The task as the API shows it at `now`.
    pub fn at(t: &Task, now: DateTime<Utc>) -> Self {
        OpenTask {
            id: t.id,
            step: t.step.clone(),
            roles: t.roles.clone(),
            people: t.people.clone(),
            opens: t.opens,
            holder: t.holder().map(str::to_string),
            claimed_by: t.claimed_by.clone(),
            delegated_to: t.delegated_to.clone(),
            opened_at: t.opened_at,
            due: t.due,
            overdue: t.overdue(now),
            deadline: t.deadline_at(now).as_str().to_string(),
            signatures: t.signatures.len(),
        }
    }
}

impl InstanceView {
    /// The instance as the API shows it at `now` (deadline states depend on the time).
    pub fn at(i: &Instance, now: DateTime<Utc>) -> Self {
        let mut tasks: Vec<OpenTask> = i.tasks.values().map(|t| OpenTask::at(t, now)).collect();
        tasks.sort_by(|a, b| {
            (a.due.is_none(), a.due, a.opened_at).cmp(&(b.due.is_none(), b.due, b.opened_at))
        });
        InstanceView {
            id: i.id,
            procedure: i.procedure.clone(),
            version: i.version,
            status: i.status.as_str().to_string(),
            end_step: i.end_step.clone(),
            data: i.data.clone(),
            events: i.seq,
            started_at: i.started_at,
            updated_at: i.updated_at,
            parent: i.parent.as_ref().map(|p| p.instance),
            tasks,
            suspended: i.suspended.as_ref().map(|s| SuspensionView {
                since: s.since,
                by: s.by.clone(),
                reason: s.reason.clone(),
            }),
        }
    }
}

impl From<&Instance> for InstanceSummary {
    fn from(i: &Instance) -> Self {
        InstanceSummary {
            id: i.id,
            procedure: i.procedure.clone(),
            version: i.version,
            status: i.status.as_str().to_string(),
            started_at: i.started_at,
            updated_at: i.updated_at,
            open_tasks: i.tasks.len(),
        }
    }
}

impl From<&Stamp> for Actor {
    fn from(s: &Stamp) -> Self {
        Actor {
            user: s.user.clone(),
            name: s.name.clone(),
            department: s.department.clone(),
            roles: s.roles.clone(),
            on_behalf_of: s.on_behalf_of.clone(),
        }
    }
}

impl From<&Event> for HistoryEvent {
    fn from(e: &Event) -> Self {
        let (kind, details) = match serde_json::to_value(&e.kind) {
            Ok(Value::Object(mut m)) => {
                let kind = m
                    .remove("kind")
                    .and_then(|k| k.as_str().map(str::to_string))
                    .unwrap_or_default();
                (kind, m)
            }
            _ => (String::new(), Map::new()),
        };
        HistoryEvent {
            seq: e.seq,
            at: e.at,
            by: e.by.as_ref().map(Actor::from),
            kind,
            details,
        }
    }
}

impl TaskSummary {
    pub fn from_row(r: &TaskRow, now: DateTime<Utc>) -> Self {
        let due = r.due_ms.and_then(DateTime::<Utc>::from_timestamp_millis);
        let state = deadline_state(DeadlineState::parse(&r.deadline), due, now);
        TaskSummary {
            id: r.task,
            instance: r.instance,
            procedure: r.procedure.clone(),
            step: r.step.clone(),
            roles: r
                .roles
                .iter()
                .filter(|x| !x.starts_with('@'))
                .cloned()
                .collect(),
            people: r
                .roles
                .iter()
                .filter_map(|x| x.strip_prefix('@'))
                .map(str::to_string)
                .collect(),
            holder: r.assignee.clone(),
            opens: r.opens_ms.and_then(DateTime::<Utc>::from_timestamp_millis),
            due,
            overdue: due.is_some_and(|d| now >= d),
            deadline: state.as_str().to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditEventsQuery {
    /// Events by this user, or by a delegate on their behalf.
    #[param(min_length = 1, pattern = r"^[^\x00]+$")]
    pub actor: Option<String>,
    /// Events of instances of this procedure.
    #[param(min_length = 1, pattern = r"^[^\x00]+$")]
    pub procedure: Option<String>,
    /// Events of this kind (`task_completed`, `deadline_breached`, …).
    #[param(value_type = Option<EventKindName>)]
    pub kind: Option<String>,
    /// From this time on, inclusive: RFC 3339 or a date (`2026-03-01`, midnight UTC).
    /// Before `to` when both are given.
    #[param(value_type = Option<DateOrInstant>)]
    pub from: Option<String>,
    /// Before this time, exclusive; written like `from`.
    #[param(value_type = Option<DateOrInstant>)]
    pub to: Option<String>,
    /// The `next` of the previous page.
    #[param(pattern = r"^[0-9a-fA-F]{64}$")]
    pub cursor: Option<String>,
    /// At most this many events (1–1000, default 100). A page may hold fewer and still
    /// have a `next`: each page reads a bounded stretch of the index.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// One event found by an audit query, with its place and its link in the hash chain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    pub instance: Uuid,
    pub procedure: String,
    /// The event's link in its instance's hash chain (SHA-256, hex).
    pub hash: String,
    pub event: HistoryEvent,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    /// Pass back as `cursor` for the next page; absent at the end.
    pub next: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// Check only this instance's chain.
    pub instance: Option<Uuid>,
}

/// The first link of a hash chain that does not hold.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BrokenLink {
    pub instance: Uuid,
    /// The event whose link fails.
    pub seq: u64,
    /// The link recomputed from the event and the previous link (empty when the problem
    /// is not a hash, such as a missing event).
    pub expected: String,
    /// The link the store holds.
    pub found: String,
    pub problem: String,
}

/// The outcome of checking hash chains.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    pub intact: bool,
    pub instances: u64,
    pub events: u64,
    /// Instances whose chain is broken.
    pub broken: u64,
    pub first_break: Option<BrokenLink>,
}

impl From<crate::store::Break> for BrokenLink {
    fn from(b: crate::store::Break) -> Self {
        BrokenLink {
            instance: b.instance,
            seq: b.seq,
            expected: b.expected,
            found: b.found,
            problem: b.problem,
        }
    }
}

impl From<crate::store::Verification> for VerifyReport {
    fn from(v: crate::store::Verification) -> Self {
        VerifyReport {
            intact: v.intact(),
            instances: v.instances,
            events: v.events,
            broken: v.broken,
            first_break: v.first_break.map(BrokenLink::from),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KpiQuery {
    /// The procedure id.
    pub procedure: String,
    /// Start of the period, inclusive: RFC 3339 or a date (`2026-03-01`, midnight UTC).
    /// Before `to` (or now).
    #[param(value_type = DateOrInstant)]
    pub from: String,
    /// End of the period, exclusive (default: now).
    #[param(value_type = Option<DateOrInstant>)]
    pub to: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Schemas of query parameters the handlers read as strings and check themselves. They exist
// for the OpenAPI document only.
// ---------------------------------------------------------------------------------------------

fn string_enum<'a>(
    description: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(description))
        .enum_values(Some(values))
        .build()
        .into()
}

macro_rules! string_enum_schema {
    ($name:ident, $description:literal, $values:expr) => {
        #[doc = $description]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                string_enum($description, Self::VALUES.iter().copied())
            }
        }

        impl ToSchema for $name {}

        impl $name {
            /// The values the handler accepts, which the document lists.
            pub const VALUES: &'static [&'static str] = &$values;
        }
    };
}

string_enum_schema!(GraphFormat, "How a graph is drawn.", ["mermaid", "dot"]);
string_enum_schema!(
    InstanceStatus,
    "An instance's status.",
    ["running", "completed", "cancelled"]
);
string_enum_schema!(
    TaskState,
    "Where a task of the worklist is.",
    ["offered", "held", "overdue", "reminded", "escalated"]
);
string_enum_schema!(
    EventKindName,
    "The kind of a history event.",
    crate::engine::instance::EventKind::NAMES
);

/// A date (`2026-03-01`, meaning its midnight UTC) or an RFC 3339 instant.
pub struct DateOrInstant;

impl utoipa::PartialSchema for DateOrInstant {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::{schema::Type, KnownFormat, ObjectBuilder, SchemaFormat};
        let string = |f| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(f)))
        };
        let any = utoipa::openapi::schema::AnyOfBuilder::new()
            .description(Some(
                "A date (`2026-03-01`, meaning its midnight UTC) or an RFC 3339 instant.",
            ))
            .item(string(KnownFormat::Date))
            .item(string(KnownFormat::DateTime))
            .build();
        utoipa::openapi::RefOr::T(utoipa::openapi::Schema::AnyOf(any))
    }
}

impl ToSchema for DateOrInstant {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_documented_audit_cursor_is_as_long_as_the_real_one() {
        // `AuditEventsQuery::cursor`'s pattern says 64 hex digits.
        assert_eq!(2 * crate::store::audit::CURSOR_LEN, 64);
    }

    #[test]
    fn an_outcome_is_titled_from_its_id() {
        use super::OutcomeChoice;
        let title = |id: &str| OutcomeChoice::new(id).title;
        assert_eq!(title("return_for_rework"), "Return for rework");
        assert_eq!(title("done"), "Done");
        assert_eq!(title("no-defect"), "No defect");
        assert_eq!(title("approve"), "Approve");
        assert_eq!(title("_"), "_", "an id of separators alone keeps itself");
        assert_eq!(OutcomeChoice::new("approve").id, "approve");
    }

    #[test]
    fn outcomes_read_in_both_shapes() {
        use super::OutcomeChoice;
        let read = |v: serde_json::Value| -> Vec<OutcomeChoice> {
            serde_json::from_value(v).expect("outcomes")
        };
        let now = read(serde_json::json!([{ "id": "approve", "title": "Approve it" }]));
        assert_eq!(now[0].title, "Approve it");
        let before = read(serde_json::json!(["return_for_rework"]));
        assert_eq!(before, vec![OutcomeChoice::new("return_for_rework")]);
        let untitled = read(serde_json::json!([{ "id": "done" }]));
        assert_eq!(untitled[0].title, "Done");
    }
}
