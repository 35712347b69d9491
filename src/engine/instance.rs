//! Instances as the fold of their events (invariant 1): the event and command types, the
//! instance state, and `apply`, the one function that changes an instance.
//!
//! `apply` is total and deterministic: it never fails, never looks at the clock, and never
//! decides anything — every choice was made by `decide` when it emitted the event. That is
//! what makes replaying a history always give the same instance.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use crate::store::{InstanceId, TaskId};

/// A person acting, as the directory describes them at the moment of the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub name: String,
    pub department: String,
    pub roles: Vec<String>,
    /// Seniority for "delegate to the same level or above".
    pub level: u8,
    /// The departments the person counts as belonging to: their own and every department
    /// above it. Empty means just `department`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub within: Vec<String>,
}

impl Actor {
    pub fn holds(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn holds_any(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.holds(r))
    }

    /// Whether the person may repair and migrate instances of `def`: `admin`, or one of the
    /// roles the procedure names in `operator_roles`. The engine, the API and the pages ask
    /// this one question.
    pub fn operates(&self, def: &crate::definition::model::Procedure) -> bool {
        self.holds("admin") || self.holds_any(&def.operator_roles)
    }

    /// Whether the person belongs to `department`, directly or through a sub-department.
    pub fn in_department(&self, department: &str) -> bool {
        self.department == department || self.within.iter().any(|d| d == department)
    }

    /// The person with this id in the directory, as the engine sees them; `None` if unknown
    /// or no longer active.
    pub fn from_directory(dir: &crate::directory::Directory, id: &str) -> Option<Actor> {
        let u = dir.user(id).filter(|u| u.active)?;
        let mut within = vec![u.department.clone()];
        let mut current = dir.department(&u.department).and_then(|d| d.parent.clone());
        // Parent cycles are refused when the directory loads; the bound is only a guard.
        for _ in 0..64 {
            let Some(p) = current else { break };
            current = dir.department(&p).and_then(|d| d.parent.clone());
            within.push(p);
        }
        Some(Actor {
            id: u.id.clone(),
            name: u.name.clone(),
            department: u.department.clone(),
            roles: u.roles.clone(),
            level: u.level,
            within,
        })
    }

    /// The actor as recorded in an event.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            user: self.id.clone(),
            name: self.name.clone(),
            department: self.department.clone(),
            roles: self.roles.clone(),
            on_behalf_of: None,
        }
    }
}

/// Who did something, recorded in the event as they were then (later directory changes do
/// not rewrite history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub user: String,
    pub name: String,
    pub department: String,
    pub roles: Vec<String>,
    /// For a delegate: the person who handed the task on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// Where a child instance came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    pub instance: InstanceId,
    pub step: String,
    /// Position of the list item this child is for.
    pub index: usize,
    /// How deep the child is nested: 1 for a child of a top-level instance, 2 for a
    /// grandchild… (histories written before it was recorded read as 1).
    #[serde(default = "first_level")]
    pub depth: u32,
    /// Started without the parent waiting (`wait = false`): the child does not report its
    /// end to the parent and is not cancelled with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detached: bool,
}

fn first_level() -> u32 {
    1
}

/// A child started by a subprocess step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildStart {
    pub id: InstanceId,
    pub index: usize,
    pub data: Map<String, Value>,
}

/// One entry of an instance's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 1-based position in the history; also the instance's version after this event.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// The person; `None` for the engine itself (routing, timers, children ending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Stamp>,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    Started {
        procedure: String,
        version: u32,
        hash: String,
        data: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentLink>,
    },
    TaskOpened {
        task: TaskId,
        step: String,
        roles: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignee: Option<String>,
        /// The people the task is offered to (the step's `assignees` list), if any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        people: Vec<String>,
        /// The earliest time the task may be completed (the deadline's `opens`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opens: Option<DateTime<Utc>>,
        /// When the step is due, computed when it opened (calendar and data as they were).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due: Option<DateTime<Utc>>,
        /// Reminders and breach actions armed with the task.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        timers: Vec<TimerSpec>,
    },
    /// A reminder fell due and was sent: to the one person holding the task, or to
    /// everyone holding one of the roles it is offered to.
    DeadlineReminded {
        task: TaskId,
        step: String,
        due: DateTime<Utc>,
        timer: uuid::Uuid,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        to_roles: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        to_users: Vec<String>,
        /// What the people were told (histories written before reminders were sent have
        /// none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// A repeating reminder's next firing, armed by this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<TimerSpec>,
    },
    /// A breach threshold passed: the step is late by `late_ms`; `action` says what
    /// happens (escalate, reassign, notify, take), followed by its own event.
    DeadlineBreached {
        task: TaskId,
        step: String,
        due: DateTime<Utc>,
        late_ms: i64,
        action: String,
        timer: uuid::Uuid,
    },
    /// The task is offered to another role as well.
    TaskEscalated {
        task: TaskId,
        role: String,
    },
    /// The task is taken from its role and person and offered to another role.
    TaskReassigned {
        task: TaskId,
        role: String,
    },
    /// A notification for everyone holding `role` and for each of `to_users`: a breach
    /// action's `notify`, or a step's `notify` on entering or completing it.
    Notified {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<TaskId>,
        step: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        role: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        to_users: Vec<String>,
        message: String,
    },
    TaskClaimed {
        task: TaskId,
    },
    TaskReleased {
        task: TaskId,
    },
    TaskDelegated {
        task: TaskId,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// One signature of a multi-signature step that does not complete it yet.
    Signed {
        task: TaskId,
        step: String,
        outcome: String,
        form: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meaning: Option<String>,
    },
    TaskCompleted {
        task: TaskId,
        step: String,
        outcome: String,
        form: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        computed: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meaning: Option<String>,
        /// For a step with a deadline: whether it was completed by its due time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_time: Option<bool>,
        /// For a multi-signature step: the rule that decided the outcome and who signed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decided: Option<SignDecision>,
    },
    /// An `auto` step ran.
    AutoPassed {
        step: String,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        computed: Map<String, Value>,
    },
    BranchesStarted {
        step: String,
        branches: Vec<String>,
    },
    /// A branch reached its join, which still waits for others.
    BranchArrived {
        join: String,
    },
    Joined {
        step: String,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        computed: Map<String, Value>,
    },
    ChildrenStarted {
        step: String,
        procedure: String,
        children: Vec<ChildStart>,
        /// The step did not wait for them (`wait = false`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        detached: bool,
    },
    ChildEnded {
        step: String,
        child: InstanceId,
        outcome: String,
        data: Map<String, Value>,
    },
    /// Every child of a subprocess step has ended; their results are in the data.
    ChildrenCollected {
        step: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
        results: Vec<Value>,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        computed: Map<String, Value>,
    },
    Commented {
        text: String,
    },
    Cancelled {
        reason: String,
    },
    Ended {
        step: String,
    },
    /// Open work closed without being done, because a join continued after enough branches
    /// (`wait_for`) or an end step with `terminate` was reached: the tasks close, the join
    /// counters reset, the children still running are cancelled.
    Withdrawn {
        /// The step that withdrew the work.
        step: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tasks: Vec<TaskId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        joins: Vec<String>,
        /// Subprocess steps whose waiting children were cancelled.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        children: Vec<InstanceId>,
    },
    /// Fields of a register entry set by this instance (a step's `writes`, or the mark of a
    /// start before a register date). The register's current entries are the fold of these.
    RegisterWritten {
        register: String,
        key: String,
        values: Map<String, Value>,
    },
    /// A task held by someone who left (deactivated in the directory) went back to the
    /// roles it is offered to.
    TaskReturned {
        task: TaskId,
        user: String,
        reason: String,
    },
    /// An operator stopped the instance: nothing but a comment or a resumption is accepted
    /// until it resumes, and its deadline timers are held.
    Suspended {
        reason: String,
    },
    /// The instance goes on; every held timer and open task's due time moves on by
    /// `paused_ms`, the time it was suspended (decided once, so replay needs no clock).
    Resumed {
        reason: String,
        paused_ms: i64,
    },
    /// An operator closed one open task without it being done (workflow pattern "cancel
    /// activity"); the work it stood for goes no further. In a parallel region the events
    /// that follow record its branch arriving at the join without it.
    TaskWithdrawn {
        task: TaskId,
        step: String,
        reason: String,
    },
    /// An operator moved stuck work: these tasks closed (and the children their
    /// subprocess steps waited for cancelled), and the instance entered `to`; the events
    /// that follow record what entering it did.
    Moved {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tasks: Vec<TaskId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        children: Vec<InstanceId>,
        /// Joins whose arrived branches were given up.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        joins: Vec<String>,
        to: String,
        reason: String,
    },
    /// The instance moved to another version of its procedure by a migration plan.
    Migrated(Box<super::changes::Migration>),
    /// A procedure version was registered (from a file or over the API). Kept in the
    /// deployments history, not in an instance's.
    ProcedureDeployed(super::changes::Deployment),
    /// A procedure text was refused; the version already running keeps serving.
    DeploymentRefused(super::changes::Refusal),
    /// A procedure's file was removed: no new instances, running ones finish.
    ProcedureRetired {
        procedure: String,
        origin: String,
    },
}

/// How a multi-signature step was decided: the rule for the outcome and who chose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignDecision {
    /// The rule as written for the outcome, in words (`all signers`, `2 signers`).
    pub rule: String,
    /// Everyone who chose the outcome, in the order they signed (the last completes it).
    pub signers: Vec<String>,
}

impl EventKind {
    /// The event's kind as stored (`task_completed`): the audit index files events under it.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Started { .. } => "started",
            EventKind::TaskOpened { .. } => "task_opened",
            EventKind::DeadlineReminded { .. } => "deadline_reminded",
            EventKind::DeadlineBreached { .. } => "deadline_breached",
            EventKind::TaskEscalated { .. } => "task_escalated",
            EventKind::TaskReassigned { .. } => "task_reassigned",
            EventKind::Notified { .. } => "notified",
            EventKind::TaskClaimed { .. } => "task_claimed",
            EventKind::TaskReleased { .. } => "task_released",
            EventKind::TaskDelegated { .. } => "task_delegated",
            EventKind::Signed { .. } => "signed",
            EventKind::TaskCompleted { .. } => "task_completed",
            EventKind::AutoPassed { .. } => "auto_passed",
            EventKind::BranchesStarted { .. } => "branches_started",
            EventKind::BranchArrived { .. } => "branch_arrived",
            EventKind::Joined { .. } => "joined",
            EventKind::ChildrenStarted { .. } => "children_started",
            EventKind::ChildEnded { .. } => "child_ended",
            EventKind::ChildrenCollected { .. } => "children_collected",
            EventKind::Commented { .. } => "commented",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::Ended { .. } => "ended",
            EventKind::Withdrawn { .. } => "withdrawn",
            EventKind::RegisterWritten { .. } => "register_written",
            EventKind::TaskReturned { .. } => "task_returned",
            EventKind::Suspended { .. } => "suspended",
            EventKind::Resumed { .. } => "resumed",
            EventKind::TaskWithdrawn { .. } => "task_withdrawn",
            EventKind::Moved { .. } => "moved",
            EventKind::Migrated(..) => "migrated",
            EventKind::ProcedureDeployed(..) => "procedure_deployed",
            EventKind::DeploymentRefused(..) => "deployment_refused",
            EventKind::ProcedureRetired { .. } => "procedure_retired",
        }
    }

    /// Every kind name, for validating a query's `kind` filter.
    pub const NAMES: [&'static str; 33] = [
        "started",
        "task_opened",
        "deadline_reminded",
        "deadline_breached",
        "task_escalated",
        "task_reassigned",
        "notified",
        "task_claimed",
        "task_released",
        "task_delegated",
        "signed",
        "task_completed",
        "auto_passed",
        "branches_started",
        "branch_arrived",
        "joined",
        "children_started",
        "child_ended",
        "children_collected",
        "commented",
        "cancelled",
        "ended",
        "withdrawn",
        "register_written",
        "task_returned",
        "suspended",
        "resumed",
        "task_withdrawn",
        "moved",
        "migrated",
        "procedure_deployed",
        "deployment_refused",
        "procedure_retired",
    ];
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Completed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimerKind {
    /// The `index`-th reminder of the step's deadline.
    Remind { index: usize },
    /// The `index`-th breach action of the step's deadline.
    Breach { index: usize },
}

/// A timer armed when a task opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerSpec {
    pub id: uuid::Uuid,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: TimerKind,
}

/// An armed timer of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub task: TaskId,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: TimerKind,
}

/// Where a task stands against its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineState {
    #[default]
    OnTime,
    Reminded,
    Breached,
    Escalated,
}

/// A signature on a multi-signature step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub user: String,
    pub roles: Vec<String>,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

/// An open task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub step: String,
    /// Roles the task is offered to.
    pub roles: Vec<String>,
    /// The person named by the step's `assignee` field, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// The people the task is offered to by the step's `assignees` list (instead of roles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub people: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// Set when the task was handed on: the delegate, and who delegated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_by: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Signature>,
    pub opened_at: DateTime<Utc>,
    /// The earliest time the task may be completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<DateTime<Utc>>,
    #[serde(default)]
    pub deadline: DeadlineState,
}

/// A task's deadline state at `now`, from its due time and what its timers recorded: past
/// the due time it is at least `breached` — also in the instant before the breach timer
/// has fired, and for a task that opened already late — and `escalated` once an escalation
/// or reassignment happened; before the due time, `reminded` once a reminder went out.
pub fn deadline_state(
    recorded: DeadlineState,
    due: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DeadlineState {
    match recorded {
        DeadlineState::Escalated => DeadlineState::Escalated,
        _ if due.is_some_and(|d| now >= d) => DeadlineState::Breached,
        r => r,
    }
}

impl DeadlineState {
    /// The state named `s` in the API and the history; `on_time` for anything else.
    pub fn parse(s: &str) -> DeadlineState {
        match s {
            "reminded" => DeadlineState::Reminded,
            "breached" => DeadlineState::Breached,
            "escalated" => DeadlineState::Escalated,
            _ => DeadlineState::OnTime,
        }
    }

    /// The name used in the API and the history (`on_time`, `reminded`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineState::OnTime => "on_time",
            DeadlineState::Reminded => "reminded",
            DeadlineState::Breached => "breached",
            DeadlineState::Escalated => "escalated",
        }
    }
}

impl Task {
    /// Whether the task is overdue at `now`: its due time has come (`now >= due`), whether
    /// or not the breach timer has fired yet.
    pub fn overdue(&self, now: DateTime<Utc>) -> bool {
        self.due.is_some_and(|d| now >= d)
    }

    /// Where the task stands against its deadline at `now` (see `deadline_state`).
    pub fn deadline_at(&self, now: DateTime<Utc>) -> DeadlineState {
        deadline_state(self.deadline, self.due, now)
    }

    /// The one person the task is with, if it is with one person: delegate, claimer, or
    /// named assignee, in that order.
    pub fn holder(&self) -> Option<&str> {
        self.delegated_to
            .as_deref()
            .or(self.claimed_by.as_deref())
            .or(self.assignee.as_deref())
    }
}

/// Children a subprocess step waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildGroup {
    pub procedure: String,
    /// Child id → item index, for those still running.
    pub pending: BTreeMap<InstanceId, usize>,
    /// Item index → the child's final data with its `outcome`.
    pub results: BTreeMap<usize, Value>,
}

/// An instance: the fold of its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub procedure: String,
    pub version: u32,
    pub hash: String,
    pub status: Status,
    /// The end step reached, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_step: Option<String>,
    pub data: Map<String, Value>,
    /// Number of events so far (the store's version of this instance).
    pub seq: u64,
    pub tasks: BTreeMap<TaskId, Task>,
    /// Tasks completed (or closed by cancelling), with their step: a later command on one is
    /// a conflict, not an unknown task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub closed: BTreeMap<TaskId, String>,
    /// Join step → branches arrived so far.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub joins: BTreeMap<String, usize>,
    /// Armed timers by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timers: BTreeMap<uuid::Uuid, Timer>,
    /// Subprocess step → children still running.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub children: BTreeMap<String, ChildGroup>,
    /// Step → everyone who completed or signed it, in order (separation of duties).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub done_by: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// Set while an operator has the instance suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<super::changes::Suspension>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Instance {
    /// How deep the instance is nested below the instance that started the chain (0 for
    /// an instance nobody's subprocess step started).
    pub fn depth(&self) -> u32 {
        self.parent.as_ref().map_or(0, |p| p.depth)
    }

    /// The instance a `Started` event creates; `None` for any other event.
    pub fn from_first(id: InstanceId, e: &Event) -> Option<Instance> {
        match &e.kind {
            EventKind::Started {
                procedure,
                version,
                hash,
                data,
                parent,
            } => Some(Instance {
                id,
                procedure: procedure.clone(),
                version: *version,
                hash: hash.clone(),
                status: Status::Running,
                end_step: None,
                data: data.clone(),
                seq: e.seq,
                tasks: BTreeMap::new(),
                closed: BTreeMap::new(),
                timers: BTreeMap::new(),
                joins: BTreeMap::new(),
                children: BTreeMap::new(),
                done_by: BTreeMap::new(),
                parent: parent.clone(),
                suspended: None,
                started_at: e.at,
                updated_at: e.at,
            }),
            _ => None,
        }
    }

    /// Rebuilds an instance from its whole history.
    pub fn fold(id: InstanceId, events: &[Event]) -> Option<Instance> {
        let (first, rest) = events.split_first()?;
        let mut inst = Instance::from_first(id, first)?;
        for e in rest {
            inst.apply(e);
        }
        Some(inst)
    }

    /// Applies one event. Total: an event that does not fit (a task already gone) changes
    /// only what it can, because `decide` guarantees it never emits such an event.
    pub fn apply(&mut self, e: &Event) {
        self.seq = e.seq;
        self.updated_at = e.at;
        let user = e.by.as_ref().map(|s| s.user.clone());
        match &e.kind {
            EventKind::Started { .. } => {}
            EventKind::TaskOpened {
                task,
                step,
                roles,
                assignee,
                people,
                opens,
                due,
                timers,
            } => {
                // Work opened while suspended (a child ending) keeps its timers held too.
                let held = match self.suspended.as_mut() {
                    Some(s) => &mut s.timers,
                    None => &mut self.timers,
                };
                for t in timers {
                    held.insert(
                        t.id,
                        Timer {
                            task: *task,
                            at: t.at,
                            kind: t.kind,
                        },
                    );
                }
                self.tasks.insert(
                    *task,
                    Task {
                        id: *task,
                        step: step.clone(),
                        roles: roles.clone(),
                        assignee: assignee.clone(),
                        people: people.clone(),
                        claimed_by: None,
                        delegated_to: None,
                        delegated_by: None,
                        signatures: Vec::new(),
                        opened_at: e.at,
                        opens: *opens,
                        due: *due,
                        deadline: DeadlineState::OnTime,
                    },
                );
            }
            EventKind::DeadlineReminded {
                task, timer, next, ..
            } => {
                self.timers.remove(timer);
                if let Some(n) = next {
                    self.timers.insert(
                        n.id,
                        Timer {
                            task: *task,
                            at: n.at,
                            kind: n.kind,
                        },
                    );
                }
                if let Some(t) = self.tasks.get_mut(task) {
                    if t.deadline == DeadlineState::OnTime {
                        t.deadline = DeadlineState::Reminded;
                    }
                }
            }
            EventKind::DeadlineBreached { task, timer, .. } => {
                self.timers.remove(timer);
                if let Some(t) = self.tasks.get_mut(task) {
                    if t.deadline != DeadlineState::Escalated {
                        t.deadline = DeadlineState::Breached;
                    }
                }
            }
            EventKind::TaskEscalated { task, role } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    if !t.roles.contains(role) {
                        t.roles.push(role.clone());
                    }
                    t.deadline = DeadlineState::Escalated;
                }
            }
            EventKind::TaskReassigned { task, role } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.roles = vec![role.clone()];
                    t.assignee = None;
                    t.people.clear();
                    t.claimed_by = None;
                    t.delegated_to = None;
                    t.delegated_by = None;
                    t.deadline = DeadlineState::Escalated;
                }
            }
            EventKind::Notified { .. } => {}
            EventKind::TaskClaimed { task } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.claimed_by = user;
                }
            }
            EventKind::TaskReleased { task } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.claimed_by = None;
                }
            }
            EventKind::TaskDelegated { task, to, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.delegated_by = user;
                    t.delegated_to = Some(to.clone());
                    t.claimed_by = None;
                }
            }
            EventKind::Signed {
                task,
                step,
                outcome,
                form,
                ..
            } => {
                merge(&mut self.data, form);
                let mut again = false;
                if let (Some(t), Some(stamp)) = (self.tasks.get_mut(task), &e.by) {
                    // Signing again with another outcome replaces the signer's earlier
                    // choice (both stay in the history); they did the step once.
                    again = t.signatures.iter().any(|s| s.user == stamp.user);
                    t.signatures.retain(|s| s.user != stamp.user);
                    t.signatures.push(Signature {
                        user: stamp.user.clone(),
                        roles: stamp.roles.clone(),
                        outcome: outcome.clone(),
                        at: e.at,
                    });
                }
                if let Some(u) = user.filter(|_| !again) {
                    self.done_by.entry(step.clone()).or_default().push(u);
                }
            }
            EventKind::TaskCompleted {
                task,
                step,
                form,
                computed,
                ..
            } => {
                merge(&mut self.data, form);
                merge(&mut self.data, computed);
                // A signer who completes the step with a new choice was counted already.
                let signed = self.tasks.remove(task).is_some_and(|t| {
                    user.as_ref()
                        .is_some_and(|u| t.signatures.iter().any(|s| &s.user == u))
                });
                self.timers.retain(|_, t| t.task != *task);
                self.closed.insert(*task, step.clone());
                if let Some(u) = user.filter(|_| !signed) {
                    self.done_by.entry(step.clone()).or_default().push(u);
                }
            }
            EventKind::AutoPassed { computed, .. } | EventKind::Joined { computed, .. } => {
                if let EventKind::Joined { step, .. } = &e.kind {
                    self.joins.remove(step);
                }
                merge(&mut self.data, computed);
            }
            EventKind::BranchesStarted { .. } => {}
            EventKind::BranchArrived { join } => {
                *self.joins.entry(join.clone()).or_default() += 1;
            }
            EventKind::ChildrenStarted {
                step,
                procedure,
                children,
                detached,
            } => {
                if *detached {
                    return;
                }
                self.children.insert(
                    step.clone(),
                    ChildGroup {
                        procedure: procedure.clone(),
                        pending: children.iter().map(|c| (c.id, c.index)).collect(),
                        results: BTreeMap::new(),
                    },
                );
            }
            EventKind::ChildEnded {
                step,
                child,
                outcome,
                data,
            } => {
                if let Some(g) = self.children.get_mut(step) {
                    if let Some(index) = g.pending.remove(child) {
                        let mut result = data.clone();
                        result.insert("outcome".into(), Value::String(outcome.clone()));
                        g.results.insert(index, Value::Object(result));
                    }
                }
            }
            EventKind::ChildrenCollected {
                step,
                field,
                results,
                computed,
            } => {
                self.children.remove(step);
                if let Some(f) = field {
                    self.data.insert(f.clone(), Value::Array(results.clone()));
                }
                merge(&mut self.data, computed);
            }
            EventKind::Commented { .. } => {}
            EventKind::Cancelled { .. } => {
                self.status = Status::Cancelled;
                for (id, t) in std::mem::take(&mut self.tasks) {
                    self.closed.insert(id, t.step);
                }
                self.timers.clear();
                self.joins.clear();
                self.children.clear();
            }
            EventKind::Ended { step } => {
                self.status = Status::Completed;
                self.end_step = Some(step.clone());
            }
            EventKind::RegisterWritten { .. } => {}
            EventKind::Withdrawn {
                tasks,
                joins,
                groups,
                ..
            } => {
                for id in tasks {
                    if let Some(t) = self.tasks.remove(id) {
                        self.closed.insert(*id, t.step);
                    }
                    self.timers.retain(|_, t| t.task != *id);
                }
                for j in joins {
                    self.joins.remove(j);
                }
                for g in groups {
                    self.children.remove(g);
                }
            }
            EventKind::TaskReturned { task, user, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    if t.claimed_by.as_deref() == Some(user.as_str()) {
                        t.claimed_by = None;
                    }
                    if t.delegated_to.as_deref() == Some(user.as_str()) {
                        t.delegated_to = None;
                        t.delegated_by = None;
                    }
                }
            }
            EventKind::Suspended { reason } => super::changes::suspend(self, e, reason),
            EventKind::Resumed { paused_ms, .. } => super::changes::resume(self, *paused_ms),
            EventKind::TaskWithdrawn { task, .. } => {
                if let Some(t) = self.tasks.remove(task) {
                    self.closed.insert(*task, t.step);
                }
                self.timers.retain(|_, t| t.task != *task);
            }
            EventKind::Moved {
                tasks,
                groups,
                joins,
                ..
            } => {
                for j in joins {
                    self.joins.remove(j);
                }
                for id in tasks {
                    if let Some(t) = self.tasks.remove(id) {
                        self.closed.insert(*id, t.step);
                    }
                    self.timers.retain(|_, t| t.task != *id);
                }
                for g in groups {
                    self.children.remove(g);
                }
            }
            EventKind::Migrated(m) => super::changes::migrate(self, m),
            EventKind::ProcedureDeployed(..)
            | EventKind::DeploymentRefused(..)
            | EventKind::ProcedureRetired { .. } => {}
        }
    }
}

fn merge(data: &mut Map<String, Value>, values: &Map<String, Value>) {
    for (k, v) in values {
        data.insert(k.clone(), v.clone());
    }
}

/// A task or child id derived from the instance id and the position of the event that
/// creates it: deterministic (so `decide` needs no randomness and no clock), and unique
/// because instance ids are.
pub fn derive_id(instance: InstanceId, seq: u64, n: u32) -> Uuid {
    let mut h = Sha256::new();
    h.update(instance.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(n.to_be_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    #[test]
    fn deadline_names_match_their_serde_form() {
        use super::DeadlineState as D;
        for d in [D::OnTime, D::Reminded, D::Breached, D::Escalated] {
            assert_eq!(
                serde_json::to_value(d).ok(),
                Some(serde_json::json!(d.as_str()))
            );
        }
    }
}
