//! The live event feed behind `GET /v1/events/stream`: every committed event, told to the
//! server's listeners once its commit is durable, with what a listener needs to decide
//! whether its caller may see it (the task's roles and holder). Nothing is kept: a listener
//! that falls behind is told to reload, and an auditor resumes from the audit index with
//! the event's id, which is the event's audit-index cursor.
//!
//! Building the items costs nothing while nobody listens (`Engine` checks first). This
//! module must not carry form data or any other content of an event beyond its summary.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::instance::{Actor, Event, EventKind};
use crate::store::{Commit, InstanceId, TaskId};

/// Events kept for listeners that are a little behind; one further behind is told to reload.
pub const FEED_CAPACITY: usize = 4096;

/// One committed event as listeners get it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Published {
    /// The event's audit-index cursor (hex): `Last-Event-ID` to resume after it.
    #[serde(skip)]
    pub id: String,
    pub instance: InstanceId,
    pub seq: u64,
    pub procedure: String,
    pub kind: &'static str,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    /// Who the task is offered to (roles, or `@user` for a list of people) and who holds it,
    /// before and after the event: decides who sees it.
    #[serde(skip)]
    pub roles: Vec<String>,
    #[serde(skip)]
    pub holders: Vec<String>,
}

impl Published {
    /// Whether `actor` may see the event: auditors and admins see all; others see what
    /// they did and what happens to tasks offered to them or held by them.
    pub fn visible_to(&self, actor: &Actor, reads_everything: bool) -> bool {
        if reads_everything || self.user.as_deref() == Some(actor.id.as_str()) {
            return true;
        }
        self.task.is_some()
            && (self.holders.contains(&actor.id)
                || self.roles.iter().any(|r| {
                    actor.roles.contains(r) || r.strip_prefix('@') == Some(actor.id.as_str())
                }))
    }
}

/// The id of an event in the stream: its audit-index cursor as text.
pub fn event_id(at_ms: i64, instance: InstanceId, seq: u64) -> String {
    crate::audit::cursor_text(&crate::store::audit::cursor_for(at_ms, instance, seq))
}

/// The task an event concerns, if any.
pub fn task_of(kind: &EventKind) -> Option<TaskId> {
    match kind {
        EventKind::TaskOpened { task, .. }
        | EventKind::DeadlineReminded { task, .. }
        | EventKind::DeadlineBreached { task, .. }
        | EventKind::TaskEscalated { task, .. }
        | EventKind::TaskReassigned { task, .. }
        | EventKind::TaskClaimed { task }
        | EventKind::TaskReleased { task }
        | EventKind::TaskDelegated { task, .. }
        | EventKind::Signed { task, .. }
        | EventKind::TaskCompleted { task, .. } => Some(*task),
        EventKind::Notified { task, .. } => *task,
        EventKind::TaskReturned { task, .. } | EventKind::TaskWithdrawn { task, .. } => Some(*task),
        _ => None,
    }
}

/// The items of one commit's events (`events` per instance, with its procedure).
pub fn published(events: &[(InstanceId, &str, &[Event])], commit: &Commit) -> Vec<Arc<Published>> {
    let mut who: HashMap<TaskId, (Vec<String>, Vec<String>)> = HashMap::new();
    for row in commit.open_tasks.iter().chain(&commit.closed_tasks) {
        let (roles, holders) = who.entry(row.task).or_default();
        roles.extend(row.roles.iter().cloned());
        holders.extend(row.assignee.iter().cloned());
    }
    let mut out = Vec::new();
    for (instance, procedure, evs) in events {
        for e in *evs {
            let task = task_of(&e.kind);
            let (roles, holders) = task.and_then(|t| who.get(&t).cloned()).unwrap_or_default();
            out.push(Arc::new(Published {
                id: event_id(e.at.timestamp_millis(), *instance, e.seq),
                instance: *instance,
                seq: e.seq,
                procedure: procedure.to_string(),
                kind: e.kind.name(),
                at: e.at,
                user: e.by.as_ref().map(|b| b.user.clone()),
                task,
                roles,
                holders,
            }));
        }
    }
    out
}
