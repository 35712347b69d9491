//! What the history records when something other than the procedure changes an instance
//! or the registry: operators' repairs (suspend, resume), migrations to another version,
//! and deployments of procedure texts. Each payload carries everything its `apply` needs
//! (shifts, new timers, renames), decided once, so replaying a history needs no clock and
//! no procedure. It must not decide anything: the rules are in `decide/repair.rs`,
//! `migrate.rs` and `deploy.rs`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::instance::{Event, Instance, TaskId, Timer, TimerSpec};

/// An instance held by an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspension {
    pub since: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub reason: String,
    /// The deadline timers held while suspended; re-armed, shifted, on resumption.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timers: BTreeMap<uuid::Uuid, Timer>,
}

pub(super) fn suspend(inst: &mut Instance, e: &Event, reason: &str) {
    inst.suspended = Some(Suspension {
        since: e.at,
        by: e.by.as_ref().map(|s| s.user.clone()),
        reason: reason.to_string(),
        timers: std::mem::take(&mut inst.timers),
    });
}

pub(super) fn resume(inst: &mut Instance, paused_ms: i64) {
    let shift = chrono::Duration::milliseconds(paused_ms);
    if let Some(s) = inst.suspended.take() {
        for (id, mut t) in s.timers {
            t.at += shift;
            inst.timers.insert(id, t);
        }
    }
    for t in inst.tasks.values_mut() {
        if let Some(d) = t.due.as_mut() {
            *d += shift;
        }
    }
}

/// One open task carried across a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMove {
    pub task: TaskId,
    pub from: String,
    pub to: String,
    /// The roles the new version's step offers it to.
    pub roles: Vec<String>,
    /// Set when the plan recomputed deadlines: the new due time and timers replace the
    /// task's (`due` may be `None` when the new step has no deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recomputed: Option<Recomputed>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recomputed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers: Vec<TimerSpec>,
}

/// An instance moved from one version of its procedure to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// The plan's name, as the operator gave it.
    pub plan: String,
    pub from_version: u32,
    pub to_version: u32,
    /// The new version's content hash: the instance is pinned to it from now on.
    pub hash: String,
    /// Old step → new step, for every renamed step the instance had work at (tasks,
    /// waiting children, branches arrived at a join, people who did a step).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub renamed: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskMove>,
    pub reason: String,
}

pub(super) fn migrate(inst: &mut Instance, m: &Migration) {
    inst.version = m.to_version;
    inst.hash = m.hash.clone();
    let rename = |k: String| m.renamed.get(&k).cloned().unwrap_or(k);
    inst.joins = std::mem::take(&mut inst.joins)
        .into_iter()
        .map(|(k, v)| (rename(k), v))
        .collect();
    inst.children = std::mem::take(&mut inst.children)
        .into_iter()
        .map(|(k, v)| (rename(k), v))
        .collect();
    let mut done_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in std::mem::take(&mut inst.done_by) {
        done_by.entry(rename(k)).or_default().extend(v);
    }
    inst.done_by = done_by;
    for mv in &m.tasks {
        let Some(t) = inst.tasks.get_mut(&mv.task) else {
            continue;
        };
        t.step = mv.to.clone();
        t.roles = mv.roles.clone();
        if let Some(r) = &mv.recomputed {
            t.due = r.due;
            let task = mv.task;
            let timers = match inst.suspended.as_mut() {
                Some(s) => &mut s.timers,
                None => &mut inst.timers,
            };
            timers.retain(|_, x| x.task != task);
            for spec in &r.timers {
                timers.insert(
                    spec.id,
                    Timer {
                        task,
                        at: spec.at,
                        kind: spec.kind,
                    },
                );
            }
        }
    }
}

/// A procedure version registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub procedure: String,
    pub version: u32,
    pub hash: String,
    /// The file it was read from, or `api` when a person submitted the text.
    pub origin: String,
    /// Set when the procedure had been retired and its file came back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restored: bool,
}

/// A procedure text refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// The procedure and version it claims, when the text could be read that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    pub hash: String,
    pub origin: String,
    /// Each problem as `file:line:col: sentence`.
    pub problems: Vec<String>,
}

/// Where the instance's work is, as tokens of the procedure's token game: a step per open
/// task and per subprocess step waiting for children, and a join step once per branch that
/// has arrived there.
pub fn marking(inst: &Instance) -> Vec<String> {
    let mut tokens: Vec<String> = inst.tasks.values().map(|t| t.step.clone()).collect();
    tokens.extend(inst.children.keys().cloned());
    for (join, n) in &inst.joins {
        tokens.extend(std::iter::repeat_n(join.clone(), *n));
    }
    tokens
}
