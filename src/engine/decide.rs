//! `decide`: what a command does to an instance. A pure function of (procedure, instance,
//! command, actor, time) — no I/O, no store, no clock, no randomness — returning the events
//! to append and the effects on other instances (children to start, a parent to tell).
//!
//! It works on a scratch copy of the instance and applies each event as it emits it, so the
//! routing that follows a completion always sees the state it is producing. Any rule broken
//! anywhere returns an error and no events: a rejected command changes nothing.

use std::sync::Arc;

use cel::objects::Key;
use cel::Value as Cel;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::compiled::{from_cel, to_cel, zone_of, CompiledProcedure, FieldProblem};
use super::instance::{
    derive_id, Actor, ChildStart, Event, EventKind, Instance, InstanceId, ParentLink, Stamp,
    Status, Task, TaskId, TimerKind, TimerSpec,
};
use super::roster::{unknown_names, Roster};
use crate::definition::calendar::{resolve_in, Calendar};
use crate::definition::duration::{parse_amount, parse_reminder, Due, Reminder};
use crate::definition::model::{
    BreachAction, DelegationLevel, Procedure, Step, StepKind, DEFAULT_OUTCOME,
};

/// The working-day calendars by id, for deadlines.
pub type Calendars = std::collections::HashMap<String, Arc<Calendar>>;

/// What a command is decided against besides the instance: the time, the calendars and
/// who exists. All given by the caller, so `decide` stays a pure function of its arguments.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub now: DateTime<Utc>,
    pub calendars: &'a Calendars,
    pub roster: &'a dyn Roster,
}

/// What someone (or the engine) asks of an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start a new instance with `id` (chosen by the caller so it can be time-ordered).
    Start {
        id: InstanceId,
        data: Map<String, Value>,
        parent: Option<ParentLink>,
    },
    Claim {
        task: TaskId,
    },
    Release {
        task: TaskId,
    },
    Complete {
        task: TaskId,
        /// Required when the step has several outcomes.
        outcome: Option<String>,
        form: Map<String, Value>,
        comment: Option<String>,
    },
    Delegate {
        task: TaskId,
        to: Actor,
        reason: Option<String>,
    },
    Cancel {
        reason: String,
    },
    Comment {
        text: String,
    },
    /// A deadline timer fell due (armed by the deadlines milestone).
    FireTimer {
        timer: uuid::Uuid,
    },
    /// Sent by the engine when a child instance ends.
    ChildEnded {
        step: String,
        child: InstanceId,
        outcome: String,
        data: Map<String, Value>,
    },
}

impl Command {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Start { .. } => "start",
            Command::Claim { .. } => "claim",
            Command::Release { .. } => "release",
            Command::Complete { .. } => "complete",
            Command::Delegate { .. } => "delegate",
            Command::Cancel { .. } => "cancel",
            Command::Comment { .. } => "comment",
            Command::FireTimer { .. } => "fire_timer",
            Command::ChildEnded { .. } => "child_ended",
        }
    }
}

/// Work on other instances that must happen in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    StartChild {
        id: InstanceId,
        procedure: String,
        data: Map<String, Value>,
        parent: ParentLink,
    },
    NotifyParent {
        parent: InstanceId,
        step: String,
        child: InstanceId,
        outcome: String,
        data: Map<String, Value>,
    },
    CancelChild {
        id: InstanceId,
        reason: String,
    },
}

/// The result of a command that is allowed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub events: Vec<Event>,
    pub effects: Vec<Effect>,
}

/// Why a command was refused. Each maps to one HTTP status in the API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the form is not valid")]
    InvalidForm(Vec<FieldProblem>),
    #[error("a condition could not be evaluated: {0}")]
    Guard(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the instance has ended ({0})")]
    Ended(&'static str),
}

/// The largest form a person may submit (a start form or a completion form), as JSON
/// bytes. Every form is kept forever in the history and copied into the instance's
/// snapshot, which is rewritten by each later command, so the body limit alone (1 MiB)
/// would let one request make every later command on that instance slow. 64 KiB is some
/// thirty pages of text.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// The longest comment, or reason for a cancellation or delegation, in characters.
pub const MAX_TEXT_CHARS: usize = 8_000;

/// The most child instances one subprocess step starts (one per item of its `for_each`
/// list). All of them start in the same commit as the step, so an unbounded list would
/// be an unbounded transaction.
pub const MAX_CHILDREN: usize = 200;

/// How deep instances may nest (a child of a child of …), whatever the procedures declare:
/// the validator refuses procedures that start each other without a `max_depth`, and this
/// bound holds even for procedures registered without validation.
pub const MAX_NESTING: u32 = 16;

/// A writer that only counts what is written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Refuses what a person sent that is larger than the engine keeps, before anything else
/// is looked at, so an oversized command costs no more than its parse.
fn check_sizes(cmd: &Command, actor: Option<&Actor>) -> Result<(), EngineError> {
    if actor.is_none() {
        // The engine's own commands carry data the engine produced.
        return Ok(());
    }
    let form = match cmd {
        Command::Start { data, .. } => Some(data),
        Command::Complete { form, .. } => Some(form),
        _ => None,
    };
    if let Some(form) = form {
        // Counted as it is encoded, not encoded into a buffer (up to the 1 MiB body) only
        // to take its length.
        let mut bytes = ByteCount(0);
        if serde_json::to_writer(&mut bytes, form).is_err() {
            bytes.0 = usize::MAX;
        }
        let bytes = bytes.0;
        if bytes > MAX_FORM_BYTES {
            return Err(EngineError::InvalidForm(vec![FieldProblem {
                field: String::new(),
                message: format!(
                    "the form is {} KiB; at most {} KiB are kept per form, so attach large \
                     documents elsewhere and give their reference",
                    bytes.div_ceil(1024),
                    MAX_FORM_BYTES / 1024
                ),
            }]));
        }
    }
    let text = match cmd {
        Command::Complete { comment, .. } => comment.as_deref().map(|t| ("a comment", t)),
        Command::Comment { text } => Some(("a comment", text.as_str())),
        Command::Cancel { reason } => Some(("a reason", reason.as_str())),
        Command::Delegate { reason, .. } => reason.as_deref().map(|t| ("a reason", t)),
        _ => None,
    };
    if let Some((what, text)) = text {
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(EngineError::Invalid(format!(
                "{what} may be at most {MAX_TEXT_CHARS} characters; this one has {chars}"
            )));
        }
    }
    Ok(())
}

/// The most steps one command may pass through without a person acting; a guard-driven
/// loop of `auto` steps that never settles is stopped here rather than spinning forever.
pub const STEP_BUDGET: usize = 1_000;

/// Decides what `cmd` does. `state` is `None` only for `Start`. `actor` is `None` when the
/// engine itself acts (a parent starting a child, a child ending, a timer).
pub fn decide(
    proc: &CompiledProcedure,
    state: Option<&Instance>,
    cmd: &Command,
    actor: Option<&Actor>,
    env: Env<'_>,
) -> Result<Decision, EngineError> {
    check_sizes(cmd, actor)?;
    if let Command::Start { id, data, parent } = cmd {
        if state.is_some() {
            return Err(EngineError::Conflict(format!(
                "instance {id} already exists"
            )));
        }
        return start(proc, *id, data, parent.clone(), actor, env);
    }
    let state = state.ok_or_else(|| EngineError::NotFound("instance".into()))?;
    if state.procedure != proc.id() || state.version != proc.version() {
        return Err(EngineError::Invalid(format!(
            "instance {} runs {} v{}, not {} v{}",
            state.id,
            state.procedure,
            state.version,
            proc.id(),
            proc.version()
        )));
    }
    if state.status != Status::Running {
        // Ended means ended: a closed record is not reopened, not even by a comment. A
        // later remark belongs to the work that follows (a new complaint, an audit), which
        // can name this instance.
        return Err(EngineError::Ended(state.status.as_str()));
    }
    let mut run = Run::new(proc, state.clone(), actor, env);
    match cmd {
        // Handled above, before there is an instance.
        Command::Start { .. } => {}
        Command::Claim { task } => run.claim(*task)?,
        Command::Release { task } => run.release(*task)?,
        Command::Complete {
            task,
            outcome,
            form,
            comment,
        } => run.complete(*task, outcome.as_deref(), form, comment.clone())?,
        Command::Delegate { task, to, reason } => run.delegate(*task, to, reason.clone())?,
        Command::Cancel { reason } => run.cancel(reason)?,
        Command::Comment { text } => run.comment(text)?,
        Command::FireTimer { timer } => run.fire(*timer)?,
        Command::ChildEnded {
            step,
            child,
            outcome,
            data,
        } => run.child_ended(step, *child, outcome, data)?,
    }
    Ok(run.finish())
}

/// The roles that may start `proc`: its `start_roles`, else every role it declares.
pub fn start_roles(proc: &CompiledProcedure) -> Vec<String> {
    if proc.def.start_roles.is_empty() {
        proc.def.roles.keys().cloned().collect()
    } else {
        proc.def.start_roles.clone()
    }
}

/// Whether `a` may start `proc` (one of its start roles, or admin): the rule `start`
/// applies, also used to list what a person may start.
pub fn may_start(proc: &CompiledProcedure, a: &Actor) -> bool {
    a.holds_any(&start_roles(proc)) || a.holds("admin")
}

fn start(
    proc: &CompiledProcedure,
    id: InstanceId,
    data: &Map<String, Value>,
    parent: Option<ParentLink>,
    actor: Option<&Actor>,
    env: Env<'_>,
) -> Result<Decision, EngineError> {
    let now = env.now;
    if let Some(a) = actor {
        if !may_start(proc, a) {
            let allowed = start_roles(proc);
            return Err(EngineError::Forbidden(format!(
                "starting `{}` needs one of the roles {}",
                proc.id(),
                allowed.join(", ")
            )));
        }
    }
    let problems = proc.start_form.check(data);
    if !problems.is_empty() {
        return Err(EngineError::InvalidForm(problems));
    }
    let first = Event {
        seq: 1,
        at: now,
        by: actor.map(Actor::stamp),
        kind: EventKind::Started {
            procedure: proc.id().to_string(),
            version: proc.version(),
            hash: proc.hash.clone(),
            data: data.clone(),
            parent,
        },
    };
    let state = Instance::from_first(id, &first)
        .ok_or_else(|| EngineError::Invalid("bad start event".into()))?;
    let mut run = Run::new(proc, state, actor, env);
    run.check_names(data, data)?;
    run.events.push(first);
    let start_step = proc.def.start.clone();
    run.enter(&start_step)?;
    Ok(run.finish())
}

/// A command in progress: the scratch instance, the events emitted so far, the effects.
struct Run<'a> {
    proc: &'a CompiledProcedure,
    s: Instance,
    actor: Option<&'a Actor>,
    now: DateTime<Utc>,
    events: Vec<Event>,
    effects: Vec<Effect>,
    budget: usize,
    calendars: &'a Calendars,
    roster: &'a dyn Roster,
}

impl<'a> Run<'a> {
    fn new(
        proc: &'a CompiledProcedure,
        s: Instance,
        actor: Option<&'a Actor>,
        env: Env<'a>,
    ) -> Self {
        Run {
            proc,
            s,
            actor,
            now: env.now,
            events: Vec::new(),
            effects: Vec::new(),
            budget: STEP_BUDGET,
            calendars: env.calendars,
            roster: env.roster,
        }
    }

    fn finish(self) -> Decision {
        Decision {
            events: self.events,
            effects: self.effects,
        }
    }

    fn def(&self) -> &'a Procedure {
        &self.proc.def
    }

    /// The time zone this procedure's dates are read in (its calendar's).
    fn zone(&self) -> chrono_tz::Tz {
        zone_of(self.def(), self.calendars)
    }

    fn emit(&mut self, by: Option<Stamp>, kind: EventKind) {
        let e = Event {
            seq: self.s.seq + 1,
            at: self.now,
            by,
            kind,
        };
        self.s.apply(&e);
        self.events.push(e);
    }

    fn person(&self) -> Result<&'a Actor, EngineError> {
        self.actor
            .ok_or_else(|| EngineError::Forbidden("this needs a person to act".into()))
    }

    fn task(&self, id: TaskId) -> Result<Task, EngineError> {
        if let Some(t) = self.s.tasks.get(&id) {
            return Ok(t.clone());
        }
        // Of several people completing the same task, the losers learn it is done, not that
        // it never existed.
        match self.s.closed.get(&id) {
            Some(step) => Err(EngineError::Conflict(format!(
                "task `{step}` ({id}) is already completed"
            ))),
            None => Err(EngineError::NotFound(format!(
                "task {id} in instance {}",
                self.s.id
            ))),
        }
    }

    /// May `a` take this task at all (before claims and separation)?
    fn eligible(&self, t: &Task, a: &Actor) -> bool {
        match (&t.delegated_to, &t.assignee) {
            (Some(d), _) => d == &a.id,
            (None, Some(person)) => person == &a.id,
            (None, None) => a.holds_any(&t.roles),
        }
    }

    /// Why `a` may not act on `t` now. Someone the task was offered to (before anyone
    /// delegated or took it) lost a race or came too late: a conflict. A 403 would wrongly
    /// tell them they never had the right.
    fn moved_on_or_forbidden(t: &Task, a: &Actor, why: String) -> EngineError {
        let offered = match &t.assignee {
            Some(person) => person == &a.id,
            None => a.holds_any(&t.roles),
        };
        if offered {
            EngineError::Conflict(why)
        } else {
            EngineError::Forbidden(why)
        }
    }

    fn check_eligible(&self, t: &Task, a: &Actor) -> Result<(), EngineError> {
        if self.eligible(t, a) {
            return Ok(());
        }
        Err(match (&t.delegated_to, &t.assignee) {
            (Some(d), _) => {
                Self::moved_on_or_forbidden(t, a, format!("task `{}` was delegated to {d}", t.step))
            }
            (None, Some(p)) => {
                EngineError::Forbidden(format!("task `{}` is assigned to {p}", t.step))
            }
            (None, None) => EngineError::Forbidden(format!(
                "task `{}` is for the roles {}",
                t.step,
                t.roles.join(", ")
            )),
        })
    }

    /// Separation of duties for `a` doing `step`.
    fn check_separation(&self, step: &str, a: &Actor) -> Result<(), EngineError> {
        match self.separation_problem(step, a, &self.s.data) {
            Some(why) => Err(EngineError::Forbidden(why)),
            None => Ok(()),
        }
    }

    /// Why `a` may not do `step` by its separation rules, reading department fields from
    /// `data` (the instance's data, or the data a command is about to write).
    fn separation_problem(
        &self,
        step: &str,
        a: &Actor,
        data: &Map<String, Value>,
    ) -> Option<String> {
        let def = self.def();
        let s = def.steps.get(step)?;
        if let Some(sep) = &s.separation {
            for other in &sep.not_same_person_as {
                if self.did(other, &a.id) {
                    return Some(format!(
                        "{} did `{other}`, so may not do `{step}` (separation of duties)",
                        a.id
                    ));
                }
            }
            if let Some(field) = &sep.not_from_department {
                if let Some(dep) = data
                    .get(field)
                    .and_then(Value::as_str)
                    .filter(|d| a.in_department(d))
                {
                    return Some(format!(
                        "{} belongs to the department in `{field}` ({dep}), so may not do `{step}`",
                        a.id
                    ));
                }
            }
        }
        // Parallel siblings: a rule on `other` naming this step binds this step too, since
        // either may be done first.
        for (other_id, other) in &def.steps {
            if let Some(sep) = &other.separation {
                if sep.not_same_person_as.iter().any(|x| x == step) && self.did(other_id, &a.id) {
                    return Some(format!(
                        "{} did `{other_id}`, so may not do `{step}` (separation of duties)",
                        a.id
                    ));
                }
            }
        }
        None
    }

    /// The people and departments `values` name (a start form, a completion form, computed
    /// values) must exist now, and a person put into a field that later steps are assigned
    /// to must be allowed to do those steps — checked here, when the person is chosen, not
    /// when the step opens with nobody able to act on it. `data` is the instance data as it
    /// will be once `values` are written.
    fn check_names(
        &self,
        values: &Map<String, Value>,
        data: &Map<String, Value>,
    ) -> Result<(), EngineError> {
        let mut problems = unknown_names(&self.proc.fields, values, self.roster);
        for (field, value) in values {
            let Some(id) = value.as_str() else { continue };
            if problems.iter().any(|p| &p.field == field) {
                continue;
            }
            let steps = self
                .def()
                .steps
                .iter()
                .filter(|(_, s)| s.assignee.as_deref() == Some(field.as_str()));
            for (step_id, _) in steps {
                let Some(person) = self.roster.person(id) else {
                    continue;
                };
                if let Some(why) = self.separation_problem(step_id, &person, data) {
                    problems.push(FieldProblem {
                        field: field.clone(),
                        message: format!(
                            "`{id}` cannot be chosen: the step `{step_id}` is assigned to the person in `{field}`, and {why}"
                        ),
                    });
                    break;
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(EngineError::InvalidForm(problems))
        }
    }

    fn did(&self, step: &str, user: &str) -> bool {
        self.s
            .done_by
            .get(step)
            .is_some_and(|v| v.iter().any(|u| u == user))
    }

    fn claim(&mut self, task: TaskId) -> Result<(), EngineError> {
        let a = self.person()?;
        let t = self.task(task)?;
        if self.is_multi_sig(&t.step) {
            return Err(EngineError::Invalid(format!(
                "`{}` is signed by several people; sign it by completing it, no claim needed",
                t.step
            )));
        }
        self.check_eligible(&t, a)?;
        self.check_separation(&t.step, a)?;
        match &t.claimed_by {
            Some(c) if c == &a.id => {
                return Err(EngineError::Conflict(format!(
                    "you already hold task `{}`",
                    t.step
                )))
            }
            Some(c) => {
                return Err(EngineError::Conflict(format!(
                    "task `{}` is already claimed by {c}",
                    t.step
                )))
            }
            None => {}
        }
        self.emit(Some(a.stamp()), EventKind::TaskClaimed { task });
        Ok(())
    }

    fn release(&mut self, task: TaskId) -> Result<(), EngineError> {
        let a = self.person()?;
        let t = self.task(task)?;
        if t.claimed_by.as_deref() != Some(a.id.as_str()) {
            return Err(EngineError::Conflict(format!(
                "task `{}` is not claimed by you",
                t.step
            )));
        }
        self.emit(Some(a.stamp()), EventKind::TaskReleased { task });
        Ok(())
    }

    fn is_multi_sig(&self, step: &str) -> bool {
        self.def()
            .steps
            .get(step)
            .is_some_and(|s| s.signatures.is_some())
    }

    fn delegate(
        &mut self,
        task: TaskId,
        to: &Actor,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        let a = self.person()?;
        let t = self.task(task)?;
        let step = self
            .def()
            .steps
            .get(&t.step)
            .ok_or_else(|| EngineError::NotFound(format!("step {}", t.step)))?;
        let Some(rule) = &step.delegation else {
            return Err(EngineError::Forbidden(format!(
                "task `{}` may not be delegated",
                t.step
            )));
        };
        // Only the person who holds the task (or could take it and nobody has) hands it on.
        match t.holder() {
            Some(h) if h != a.id => {
                return Err(Self::moved_on_or_forbidden(
                    &t,
                    a,
                    format!("task `{}` is held by {h}", t.step),
                ))
            }
            _ => self.check_eligible(&t, a)?,
        }
        if to.id == a.id {
            return Err(EngineError::Invalid(
                "you cannot delegate a task to yourself".into(),
            ));
        }
        let allowed: Vec<String> = if rule.to_roles.is_empty() {
            t.roles.clone()
        } else {
            rule.to_roles.clone()
        };
        if !to.holds_any(&allowed) {
            return Err(EngineError::Forbidden(format!(
                "{} may not take `{}`: the delegate needs one of the roles {}",
                to.id,
                t.step,
                allowed.join(", ")
            )));
        }
        if rule.level == DelegationLevel::SameOrAbove && to.level < a.level {
            return Err(EngineError::Forbidden(format!(
                "{} is at level {}, below your level {}: `{}` may only be delegated to the same level or above",
                to.id, to.level, a.level, t.step
            )));
        }
        let reason = reason.filter(|r| !r.trim().is_empty());
        if rule.reason_required && reason.is_none() {
            return Err(EngineError::Invalid(
                "a reason is required to delegate this task".into(),
            ));
        }
        self.check_separation(&t.step, to)?;
        self.emit(
            Some(a.stamp()),
            EventKind::TaskDelegated {
                task,
                to: to.id.clone(),
                reason,
            },
        );
        Ok(())
    }

    fn complete(
        &mut self,
        task: TaskId,
        outcome: Option<&str>,
        form: &Map<String, Value>,
        comment: Option<String>,
    ) -> Result<(), EngineError> {
        let a = self.person()?;
        let t = self.task(task)?;
        let (step, compiled) = self
            .proc
            .step(&t.step)
            .ok_or_else(|| EngineError::NotFound(format!("step {}", t.step)))?;
        let outcomes = Procedure::outcomes_of(step);
        let outcome = match outcome {
            Some(o) if outcomes.contains(&o) => o.to_string(),
            Some(o) => {
                return Err(EngineError::Invalid(format!(
                    "`{o}` is not an outcome of `{}`; choose one of {}",
                    t.step,
                    outcomes.join(", ")
                )))
            }
            None if outcomes.len() == 1 => outcomes[0].to_string(),
            None => {
                return Err(EngineError::Invalid(format!(
                    "`{}` has several outcomes; choose one of {}",
                    t.step,
                    outcomes.join(", ")
                )))
            }
        };
        let multi = step.signatures.clone();
        if let Some(sig) = &multi {
            let roles = if sig.roles.is_empty() {
                t.roles.clone()
            } else {
                sig.roles.clone()
            };
            if !a.holds_any(&roles) {
                return Err(EngineError::Forbidden(format!(
                    "signing `{}` needs one of the roles {}",
                    t.step,
                    roles.join(", ")
                )));
            }
            if t.signatures.iter().any(|s| s.user == a.id) {
                return Err(EngineError::Conflict(format!(
                    "you have already signed `{}`",
                    t.step
                )));
            }
        } else {
            self.check_eligible(&t, a)?;
            if let Some(c) = &t.claimed_by {
                if c != &a.id {
                    return Err(EngineError::Conflict(format!(
                        "task `{}` is claimed by {c}",
                        t.step
                    )));
                }
            }
        }
        self.check_separation(&t.step, a)?;
        let problems = compiled.form.check(form);
        if !problems.is_empty() {
            return Err(EngineError::InvalidForm(problems));
        }
        let mut after = self.s.data.clone();
        merge_values(&mut after, form);
        self.check_names(form, &after)?;
        let mut stamp = a.stamp();
        stamp.on_behalf_of = t
            .delegated_by
            .clone()
            .filter(|_| t.delegated_to.as_deref() == Some(a.id.as_str()));

        if let Some(sig) = &multi {
            // The first outcome (approve, confirm…) needs every required signature; any other
            // outcome from one eligible signer decides at once, as a veto or a return.
            let agreeing = outcome == outcomes[0];
            let roles = if sig.roles.is_empty() {
                t.roles.clone()
            } else {
                sig.roles.clone()
            };
            let mut signers: Vec<(String, Vec<String>)> = t
                .signatures
                .iter()
                .filter(|s| s.outcome == outcome)
                .map(|s| (s.user.clone(), s.roles.clone()))
                .collect();
            signers.push((a.id.clone(), a.roles.clone()));
            let enough = signers.len() >= sig.required as usize
                && (!sig.one_per_role || distinct_signer_per_role(&roles, &signers));
            if agreeing && !enough {
                self.emit(
                    Some(stamp),
                    EventKind::Signed {
                        task,
                        step: t.step.clone(),
                        outcome,
                        form: form.clone(),
                        comment,
                        meaning: step.meaning.clone(),
                    },
                );
                return Ok(());
            }
        }

        let mut data = self.s.data.clone();
        for (k, v) in form {
            data.insert(k.clone(), v.clone());
        }
        let computed = self.compute(&compiled.compute, &data, Some(form), Some(&outcome))?;
        // Completing an unclaimed task claims it implicitly: the completion event already
        // says who took it, so no separate claim event is written.
        self.emit(
            Some(stamp),
            EventKind::TaskCompleted {
                task,
                step: t.step.clone(),
                outcome: outcome.clone(),
                form: form.clone(),
                computed,
                comment,
                meaning: step.meaning.clone(),
                on_time: t.due.map(|due| self.now < due),
            },
        );
        // Other open tasks of a multi-signature step do not exist: one task collects all
        // signatures. Route on.
        let from = t.step.clone();
        self.route(&from, &outcome, Some(form))
    }

    /// The due time of a step opening now and the timers it arms: one per reminder (those
    /// still ahead), one per breach action at its threshold — or, without actions, one at the
    /// due time so the breach is still recorded in the history.
    fn deadline_of(
        &self,
        id: &str,
        step: &Step,
    ) -> Result<(Option<DateTime<Utc>>, Vec<TimerSpec>), EngineError> {
        let Some(dl) = &step.deadline else {
            return Ok((None, Vec::new()));
        };
        let cal_id = dl
            .calendar
            .as_deref()
            .or(self.def().calendar.as_deref())
            .unwrap_or("default");
        let cal = self.calendars.get(cal_id).ok_or_else(|| {
            EngineError::Guard(format!(
                "the deadline of `{id}` uses the calendar `{cal_id}`, which is not loaded"
            ))
        })?;
        let bad = |what: String| EngineError::Guard(format!("the deadline of `{id}`: {what}"));
        let due_expr: Due = dl
            .due
            .parse()
            .map_err(|e: crate::definition::duration::ParseError| bad(e.to_string()))?;
        let due = resolve_in(&due_expr, self.now, &self.s.data, cal, self.zone())
            .map_err(|e| bad(e.to_string()))?;
        let seq = self.s.seq + 1;
        let mut timers = Vec::new();
        for (i, r) in dl.remind.iter().enumerate() {
            let at = match parse_reminder(r).map_err(|e| bad(e.to_string()))? {
                Reminder::Before(amount) => {
                    cal.subtract(due, &amount).map_err(|e| bad(e.to_string()))?
                }
                Reminder::Every(amount) => {
                    cal.add(self.now, &amount).map_err(|e| bad(e.to_string()))?
                }
            };
            if at > self.now {
                timers.push(TimerSpec {
                    id: derive_id(self.s.id, seq, timer_slot(REMIND_SLOTS, i)?),
                    at,
                    kind: TimerKind::Remind { index: i },
                });
            }
        }
        for (i, a) in dl.on_breach.iter().enumerate() {
            let at = match &a.after {
                Some(after) => {
                    let amount = parse_amount(after).map_err(|e| bad(e.to_string()))?;
                    cal.add(due, &amount).map_err(|e| bad(e.to_string()))?
                }
                None => due,
            };
            timers.push(TimerSpec {
                id: derive_id(self.s.id, seq, timer_slot(BREACH_SLOTS, i)?),
                at,
                kind: TimerKind::Breach { index: i },
            });
        }
        if dl.on_breach.is_empty() {
            timers.push(TimerSpec {
                id: derive_id(self.s.id, seq, timer_slot(BREACH_SLOTS, 0)?),
                at: due,
                kind: TimerKind::Breach { index: 0 },
            });
        }
        Ok((Some(due), timers))
    }

    /// The calendar a step's deadline counts on, if it is loaded.
    fn deadline_calendar(&self, step: &str) -> Option<&'a Calendar> {
        let dl = self.def().steps.get(step)?.deadline.as_ref()?;
        let id = dl
            .calendar
            .as_deref()
            .or(self.def().calendar.as_deref())
            .unwrap_or("default");
        self.calendars.get(id).map(|c| &**c)
    }

    /// An instant as the people of the step's calendar read it (`2026-11-03 17:00 +08:00`).
    fn local_time(&self, step: &str, t: DateTime<Utc>) -> String {
        match self.deadline_calendar(step) {
            Some(cal) => t
                .with_timezone(&cal.timezone())
                .format("%Y-%m-%d %H:%M %:z")
                .to_string(),
            None => t.format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }

    /// The next firing of a repeating reminder (`every 3 days`) that just fired as `t`,
    /// counted from when it was due so the rhythm does not drift; `None` for a one-off
    /// reminder. Never an error: a timer must always be able to fire.
    fn next_reminder(
        &self,
        step_def: &Step,
        index: usize,
        t: &super::instance::Timer,
    ) -> Option<TimerSpec> {
        let text = step_def.deadline.as_ref()?.remind.get(index)?;
        let Ok(Reminder::Every(amount)) = parse_reminder(text) else {
            return None;
        };
        let cal = self.deadline_calendar(&self.s.tasks.get(&t.task)?.step)?;
        let mut at = cal.add(t.at, &amount).ok()?;
        // After a long stop (or a long clock move) several periods may have passed: remind
        // once now, and next at the first period still ahead.
        for _ in 0..10_000 {
            if at > self.now {
                break;
            }
            at = cal.add(at, &amount).ok()?;
        }
        let slot = timer_slot(REMIND_SLOTS, index).ok()?;
        (at > self.now).then(|| TimerSpec {
            id: derive_id(self.s.id, self.s.seq + 1, slot),
            at,
            kind: TimerKind::Remind { index },
        })
    }

    /// A timer fell due. Never refused for what the procedure says (only for an unknown
    /// timer): a timer that could not fire would fire again forever.
    fn fire(&mut self, timer: uuid::Uuid) -> Result<(), EngineError> {
        let t = self
            .s
            .timers
            .get(&timer)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("timer {timer}")))?;
        let task = self.task(t.task)?;
        let step_def = self
            .def()
            .steps
            .get(&task.step)
            .cloned()
            .unwrap_or_default();
        let due = task.due.unwrap_or(t.at);
        match t.kind {
            TimerKind::Remind { index } => {
                // A reminder reaches whoever has the task now: the one person holding it,
                // or everyone it is offered to.
                let (to_roles, to_users) = match task.holder() {
                    Some(person) => (Vec::new(), vec![person.to_string()]),
                    None => (task.roles.clone(), Vec::new()),
                };
                let next = self.next_reminder(&step_def, index, &t);
                let message = if self.now >= due {
                    format!(
                        "Reminder: `{}` of {} {} was due {} and is not done yet",
                        task.step,
                        self.s.procedure,
                        self.s.id,
                        self.local_time(&task.step, due)
                    )
                } else {
                    format!(
                        "Reminder: `{}` of {} {} is due {}",
                        task.step,
                        self.s.procedure,
                        self.s.id,
                        self.local_time(&task.step, due)
                    )
                };
                self.emit(
                    None,
                    EventKind::DeadlineReminded {
                        task: task.id,
                        step: task.step.clone(),
                        due,
                        timer,
                        to_roles,
                        to_users,
                        message: Some(message),
                        next,
                    },
                );
            }
            TimerKind::Breach { index } => {
                let action = step_def
                    .deadline
                    .as_ref()
                    .and_then(|d| d.on_breach.get(index))
                    .cloned()
                    .unwrap_or_default();
                // A person who took the task is working on it: the clock does not complete
                // it under them unless the procedure says so (`even_if_claimed`).
                let held = task.claimed_by.as_ref().or(task.delegated_to.as_ref());
                let spared = match (&action.take, held) {
                    (Some(_), Some(holder)) if !action.even_if_claimed => Some(holder.clone()),
                    _ => None,
                };
                let mut what = describe_action(&action);
                if let Some(holder) = &spared {
                    what = format!("{what}: not taken, {holder} holds the task");
                }
                self.emit(
                    None,
                    EventKind::DeadlineBreached {
                        task: task.id,
                        step: task.step.clone(),
                        due,
                        late_ms: (self.now - due).num_milliseconds(),
                        action: what,
                        timer,
                    },
                );
                if spared.is_none() {
                    self.breach_action(&task, &action, due)?;
                }
            }
        }
        Ok(())
    }

    fn breach_action(
        &mut self,
        task: &Task,
        action: &BreachAction,
        due: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        if let Some(role) = &action.escalate_to {
            self.emit(
                None,
                EventKind::TaskEscalated {
                    task: task.id,
                    role: role.clone(),
                },
            );
        } else if let Some(role) = &action.reassign_to {
            self.emit(
                None,
                EventKind::TaskReassigned {
                    task: task.id,
                    role: role.clone(),
                },
            );
        } else if let Some(role) = &action.notify {
            let message = format!(
                "`{}` of {} {} was due {} and is not done",
                task.step,
                self.s.procedure,
                self.s.id,
                due.format("%Y-%m-%d %H:%M UTC")
            );
            self.emit(
                None,
                EventKind::Notified {
                    task: task.id,
                    step: task.step.clone(),
                    role: role.clone(),
                    message,
                },
            );
        } else if let Some(outcome) = &action.take {
            // The clock completes the step. If the procedure cannot go on from there (a
            // condition fails on this data), undo the attempt and tell the step's role, so
            // the timer is spent and a person decides.
            let saved = (
                self.s.clone(),
                self.events.len(),
                self.effects.len(),
                self.budget,
            );
            if let Err(e) = self.take(task, outcome) {
                self.s = saved.0;
                self.events.truncate(saved.1);
                self.effects.truncate(saved.2);
                self.budget = saved.3;
                let role = task
                    .roles
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "admin".into());
                self.emit(
                    None,
                    EventKind::Notified {
                        task: task.id,
                        step: task.step.clone(),
                        role,
                        message: format!(
                            "`{}` could not be completed automatically with `{outcome}`: {e}",
                            task.step
                        ),
                    },
                );
            }
        }
        Ok(())
    }

    fn take(&mut self, task: &Task, outcome: &str) -> Result<(), EngineError> {
        let (step, compiled) = self
            .proc
            .step(&task.step)
            .ok_or_else(|| EngineError::NotFound(format!("step {}", task.step)))?;
        let data = self.s.data.clone();
        let computed = self.compute(&compiled.compute, &data, None, Some(outcome))?;
        self.emit(
            None,
            EventKind::TaskCompleted {
                task: task.id,
                step: task.step.clone(),
                outcome: outcome.to_string(),
                form: Map::new(),
                computed,
                comment: Some("completed by the clock: the deadline passed".into()),
                meaning: step.meaning.clone(),
                on_time: Some(false),
            },
        );
        let from = task.step.clone();
        self.route(&from, outcome, None)
    }

    fn cancel(&mut self, reason: &str) -> Result<(), EngineError> {
        // Who may cancel is checked before what they sent: someone without the right
        // hears "not allowed", not advice on the reason.
        if let Some(a) = self.actor {
            if !a.holds_any(&self.def().cancel_roles) && !a.holds("admin") {
                return Err(EngineError::Forbidden(
                    if self.def().cancel_roles.is_empty() {
                        format!("only an admin may cancel `{}` instances", self.def().id)
                    } else {
                        format!(
                            "cancelling `{}` needs one of the roles {}",
                            self.def().id,
                            self.def().cancel_roles.join(", ")
                        )
                    },
                ));
            }
        }
        if reason.trim().is_empty() {
            return Err(EngineError::Invalid(
                "a reason is required to cancel an instance".into(),
            ));
        }
        let children: Vec<InstanceId> = self
            .s
            .children
            .values()
            .flat_map(|g| g.pending.keys().copied())
            .collect();
        let by = self.actor.map(Actor::stamp);
        self.emit(
            by,
            EventKind::Cancelled {
                reason: reason.to_string(),
            },
        );
        for id in children {
            self.effects.push(Effect::CancelChild {
                id,
                reason: format!("parent {} cancelled: {reason}", self.s.id),
            });
        }
        // A parent waits for every child; one cancelled on its own must still report, or
        // the parent would wait forever. (When the parent itself cancelled it, the service
        // drops this report: the parent is no longer running.)
        if let Some(p) = self.s.parent.clone() {
            self.effects.push(Effect::NotifyParent {
                parent: p.instance,
                step: p.step,
                child: self.s.id,
                outcome: "cancelled".into(),
                data: self.s.data.clone(),
            });
        }
        Ok(())
    }

    fn comment(&mut self, text: &str) -> Result<(), EngineError> {
        let a = self.person()?;
        if text.trim().is_empty() {
            return Err(EngineError::Invalid("a comment needs text".into()));
        }
        self.emit(
            Some(a.stamp()),
            EventKind::Commented {
                text: text.to_string(),
            },
        );
        Ok(())
    }

    fn child_ended(
        &mut self,
        step: &str,
        child: InstanceId,
        outcome: &str,
        data: &Map<String, Value>,
    ) -> Result<(), EngineError> {
        let group = self
            .s
            .children
            .get(step)
            .ok_or_else(|| EngineError::NotFound(format!("children of step {step}")))?;
        if !group.pending.contains_key(&child) {
            return Err(EngineError::Conflict(format!(
                "child {child} already reported its end"
            )));
        }
        self.emit(
            None,
            EventKind::ChildEnded {
                step: step.to_string(),
                child,
                outcome: outcome.to_string(),
                data: data.clone(),
            },
        );
        let done = self
            .s
            .children
            .get(step)
            .is_some_and(|g| g.pending.is_empty());
        if done {
            self.collect(step)?;
        }
        Ok(())
    }

    /// All children of `step` ended: store their results and go on.
    fn collect(&mut self, step: &str) -> Result<(), EngineError> {
        let results: Vec<Value> = self
            .s
            .children
            .get(step)
            .map(|g| g.results.values().cloned().collect())
            .unwrap_or_default();
        let (def_step, compiled) = self
            .proc
            .step(step)
            .ok_or_else(|| EngineError::NotFound(format!("step {step}")))?;
        let field = def_step.collect.clone();
        let mut data = self.s.data.clone();
        if let Some(f) = &field {
            data.insert(f.clone(), Value::Array(results.clone()));
        }
        let computed = self.compute(&compiled.compute, &data, None, None)?;
        self.emit(
            None,
            EventKind::ChildrenCollected {
                step: step.to_string(),
                field,
                results,
                computed,
            },
        );
        self.route(step, DEFAULT_OUTCOME, None)
    }

    /// Evaluates `compute` in order; each value is visible to the next.
    fn compute(
        &self,
        exprs: &[(String, Arc<cel::Program>)],
        data: &Map<String, Value>,
        form: Option<&Map<String, Value>>,
        outcome: Option<&str>,
    ) -> Result<Map<String, Value>, EngineError> {
        let mut data = data.clone();
        let mut out = Map::new();
        for (name, program) in exprs {
            let v = self
                .eval(program, &data, form, outcome, None)
                .map_err(|e| EngineError::Guard(format!("computing `{name}`: {e}")))?;
            let json = self.proc.coerce(name, from_cel(&v), self.zone());
            data.insert(name.clone(), json.clone());
            out.insert(name.clone(), json);
        }
        self.check_names(&out, &data)?;
        Ok(out)
    }

    fn eval(
        &self,
        program: &cel::Program,
        data: &Map<String, Value>,
        form: Option<&Map<String, Value>>,
        outcome: Option<&str>,
        item: Option<&Value>,
    ) -> Result<Cel, String> {
        let mut ctx = cel::Context::default();
        self.proc.bind(&mut ctx, data, self.zone());
        let form_map: std::collections::HashMap<Key, Cel> = form
            .map(|f| {
                f.iter()
                    .map(|(k, v)| {
                        (
                            Key::String(Arc::new(k.clone())),
                            to_cel(v, self.proc.fields.get(k), self.zone()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        ctx.add_variable_from_value("form", Cel::Map(form_map.into()));
        ctx.add_variable_from_value("actor", self.actor.map_or(Cel::Null, actor_value));
        ctx.add_variable_from_value(
            "outcome",
            outcome.map_or(Cel::Null, |o| Cel::String(Arc::new(o.to_string()))),
        );
        ctx.add_variable_from_value("now", Cel::Timestamp(self.now.fixed_offset()));
        if let Some(item) = item {
            ctx.add_variable_from_value("item", to_cel(item, None, self.zone()));
        }
        program.execute(&ctx).map_err(|e| e.to_string())
    }

    /// Leaves `from` with `outcome`: the first transition that matches and holds.
    fn route(
        &mut self,
        from: &str,
        outcome: &str,
        form: Option<&Map<String, Value>>,
    ) -> Result<(), EngineError> {
        let (step, compiled) = self
            .proc
            .step(from)
            .ok_or_else(|| EngineError::NotFound(format!("step {from}")))?;
        for (t, guard) in step.next.iter().zip(&compiled.guards) {
            if t.on.as_deref().is_some_and(|on| on != outcome) {
                continue;
            }
            let holds = match guard {
                None => true,
                Some(p) => match self.eval(p, &self.s.data, form, Some(outcome), None) {
                    Ok(Cel::Bool(b)) => b,
                    Ok(other) => {
                        return Err(EngineError::Guard(format!(
                            "the condition `{}` on `{from}` gave {other:?}, not true or false",
                            t.when.as_deref().unwrap_or_default()
                        )))
                    }
                    Err(e) => {
                        return Err(EngineError::Guard(format!(
                            "the condition `{}` on `{from}` failed: {e}",
                            t.when.as_deref().unwrap_or_default()
                        )))
                    }
                },
            };
            if holds {
                let to = t.to.clone();
                return self.enter(&to);
            }
        }
        Err(EngineError::Guard(format!(
            "no transition of `{from}` applies to outcome `{outcome}` with this data; the instance would be stuck"
        )))
    }

    /// Arrives at `id`.
    fn enter(&mut self, id: &str) -> Result<(), EngineError> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            EngineError::Guard(format!(
                "the procedure passed {STEP_BUDGET} steps without anyone acting (an endless loop of automatic steps at `{id}`)"
            ))
        })?;
        let (step, compiled) = self
            .proc
            .step(id)
            .ok_or_else(|| EngineError::NotFound(format!("step {id}")))?;
        match step.kind {
            StepKind::Task => {
                let task = derive_id(self.s.id, self.s.seq + 1, 0);
                let assignee = match &step.assignee {
                    Some(field) => Some(
                        self.s
                            .data
                            .get(field)
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty())
                            .ok_or_else(|| {
                                EngineError::Guard(format!(
                                    "step `{id}` is assigned to the person in `{field}`, but `{field}` is not filled in"
                                ))
                            })?
                            .to_string(),
                    ),
                    None => None,
                };
                // A multi-signature task is offered to every role that may sign it.
                let mut roles: Vec<String> = step.role.iter().cloned().collect();
                if let Some(sig) = &step.signatures {
                    for r in &sig.roles {
                        if !roles.contains(r) {
                            roles.push(r.clone());
                        }
                    }
                }
                let (due, timers) = self.deadline_of(id, step)?;
                self.emit(
                    None,
                    EventKind::TaskOpened {
                        task,
                        step: id.to_string(),
                        roles,
                        assignee,
                        due,
                        timers,
                    },
                );
                Ok(())
            }
            StepKind::Auto => {
                let data = self.s.data.clone();
                let computed = self.compute(&compiled.compute, &data, None, None)?;
                self.emit(
                    None,
                    EventKind::AutoPassed {
                        step: id.to_string(),
                        computed,
                    },
                );
                self.route(id, DEFAULT_OUTCOME, None)
            }
            StepKind::Parallel => {
                let branches = step.branches.clone();
                self.emit(
                    None,
                    EventKind::BranchesStarted {
                        step: id.to_string(),
                        branches: branches.clone(),
                    },
                );
                for b in &branches {
                    self.enter(b)?;
                }
                Ok(())
            }
            StepKind::Join => {
                let width = self.proc.join_width.get(id).copied().unwrap_or(1);
                let arrived = self.s.joins.get(id).copied().unwrap_or(0) + 1;
                if arrived < width {
                    self.emit(
                        None,
                        EventKind::BranchArrived {
                            join: id.to_string(),
                        },
                    );
                    return Ok(());
                }
                let data = self.s.data.clone();
                let computed = self.compute(&compiled.compute, &data, None, None)?;
                self.emit(
                    None,
                    EventKind::Joined {
                        step: id.to_string(),
                        computed,
                    },
                );
                self.route(id, DEFAULT_OUTCOME, None)
            }
            StepKind::Subprocess => {
                let child_proc = step.procedure.clone().unwrap_or_default();
                let list_field = step.for_each.clone().unwrap_or_default();
                let items: Vec<Value> = match self.s.data.get(&list_field) {
                    Some(Value::Array(items)) => items.clone(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        return Err(EngineError::Guard(format!(
                            "`{list_field}` should be a list to start one `{child_proc}` per item"
                        )))
                    }
                };
                let depth = self.s.depth().saturating_add(1);
                if !items.is_empty() {
                    if let Some(limit) = step.max_depth.filter(|m| depth > *m) {
                        return Err(EngineError::Invalid(format!(
                            "step `{id}` would start `{child_proc}` {depth} levels below the first \
                             instance, and it allows at most {limit} (`max_depth`); the nesting \
                             stops here"
                        )));
                    }
                    if depth > MAX_NESTING {
                        return Err(EngineError::Invalid(format!(
                            "step `{id}` would start `{child_proc}` {depth} levels below the first \
                             instance; instances nest at most {MAX_NESTING} levels deep"
                        )));
                    }
                }
                if items.len() > MAX_CHILDREN {
                    return Err(EngineError::Invalid(format!(
                        "`{list_field}` lists {} items, and step `{id}` starts one `{child_proc}` \
                         per item; at most {MAX_CHILDREN} are started at once, so split the list",
                        items.len()
                    )));
                }
                let seq = self.s.seq + 1;
                let mut children = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    let mut data = Map::new();
                    for (name, program) in &compiled.input {
                        let v = self
                            .eval(program, &self.s.data, None, None, Some(item))
                            .map_err(|e| {
                                EngineError::Guard(format!("input `{name}` of `{id}`: {e}"))
                            })?;
                        data.insert(name.clone(), from_cel(&v));
                    }
                    let n = u32::try_from(index)
                        .map_err(|_| EngineError::Invalid("too many list items".into()))?;
                    children.push(ChildStart {
                        id: derive_id(self.s.id, seq, n),
                        index,
                        data,
                    });
                }
                self.emit(
                    None,
                    EventKind::ChildrenStarted {
                        step: id.to_string(),
                        procedure: child_proc.clone(),
                        children: children.clone(),
                    },
                );
                for c in children {
                    self.effects.push(Effect::StartChild {
                        id: c.id,
                        procedure: child_proc.clone(),
                        data: c.data,
                        parent: ParentLink {
                            instance: self.s.id,
                            step: id.to_string(),
                            index: c.index,
                            depth,
                        },
                    });
                }
                if items.is_empty() {
                    return self.collect(id);
                }
                Ok(())
            }
            StepKind::End => {
                let busy = !self.s.tasks.is_empty()
                    || !self.s.joins.is_empty()
                    || !self.s.children.is_empty();
                if busy {
                    // Validation proves this cannot happen in a sound procedure; refusing is
                    // safer than ending with work still open.
                    return Err(EngineError::Guard(format!(
                        "reached the end step `{id}` while other work is still open"
                    )));
                }
                self.emit(
                    None,
                    EventKind::Ended {
                        step: id.to_string(),
                    },
                );
                if let Some(p) = self.s.parent.clone() {
                    self.effects.push(Effect::NotifyParent {
                        parent: p.instance,
                        step: p.step,
                        child: self.s.id,
                        outcome: id.to_string(),
                        data: self.s.data.clone(),
                    });
                }
                Ok(())
            }
        }
    }
}

/// Whether each role can be matched to a different signer holding it (joint identification
/// by technical *and* quality departments needs two people, even if one holds both roles).
/// Kuhn's augmenting-path matching: roles and signers are a handful, so this is instant.
fn distinct_signer_per_role(roles: &[String], signers: &[(String, Vec<String>)]) -> bool {
    fn augment(
        role: usize,
        roles: &[String],
        signers: &[(String, Vec<String>)],
        seen: &mut [bool],
        owner: &mut [Option<usize>],
    ) -> bool {
        for (s, (_, held)) in signers.iter().enumerate() {
            if seen[s] || !held.iter().any(|h| h == &roles[role]) {
                continue;
            }
            seen[s] = true;
            let free = match owner[s] {
                None => true,
                Some(other) => augment(other, roles, signers, seen, owner),
            };
            if free {
                owner[s] = Some(role);
                return true;
            }
        }
        false
    }
    let mut owner = vec![None; signers.len()];
    (0..roles.len()).all(|r| {
        let mut seen = vec![false; signers.len()];
        augment(r, roles, signers, &mut seen, &mut owner)
    })
}

/// Ids derived for one `TaskOpened` event: the task takes slot 0, reminders and breach
/// actions take disjoint ranges above it, so no count of either can make two collide.
const REMIND_SLOTS: u32 = 1 << 30;
const BREACH_SLOTS: u32 = 1 << 31;

fn timer_slot(base: u32, i: usize) -> Result<u32, EngineError> {
    u32::try_from(i)
        .ok()
        .filter(|i| *i < (1 << 30))
        .map(|i| base | i)
        .ok_or_else(|| {
            EngineError::Invalid("a deadline lists too many reminders or breach actions".into())
        })
}

fn merge_values(into: &mut Map<String, Value>, values: &Map<String, Value>) {
    for (k, v) in values {
        into.insert(k.clone(), v.clone());
    }
}

fn describe_action(a: &BreachAction) -> String {
    if let Some(r) = &a.escalate_to {
        format!("escalate to {r}")
    } else if let Some(r) = &a.reassign_to {
        format!("reassign to {r}")
    } else if let Some(r) = &a.notify {
        format!("notify {r}")
    } else if let Some(o) = &a.take {
        format!("take outcome {o}")
    } else {
        "record".into()
    }
}

fn actor_value(a: &Actor) -> Cel {
    let m: std::collections::HashMap<Key, Cel> = [
        ("id", Cel::String(Arc::new(a.id.clone()))),
        ("name", Cel::String(Arc::new(a.name.clone()))),
        ("department", Cel::String(Arc::new(a.department.clone()))),
        (
            "roles",
            Cel::List(Arc::new(
                a.roles
                    .iter()
                    .map(|r| Cel::String(Arc::new(r.clone())))
                    .collect(),
            )),
        ),
        ("level", Cel::Int(i64::from(a.level))),
    ]
    .into_iter()
    .map(|(k, v)| (Key::String(Arc::new(k.to_string())), v))
    .collect();
    Cel::Map(m.into())
}

#[cfg(test)]
mod tests {
    use super::distinct_signer_per_role;

    mod sizes {
        use super::super::{check_sizes, Command, EngineError, MAX_FORM_BYTES, MAX_TEXT_CHARS};
        use crate::engine::instance::Actor;
        use serde_json::{json, Map, Value};

        fn someone() -> Actor {
            Actor {
                id: "li.wei".into(),
                name: "Li Wei".into(),
                department: "sales".into(),
                roles: vec!["sales".into()],
                level: 2,
                within: vec![],
            }
        }

        fn form_of(bytes: usize) -> Map<String, Value> {
            // `{"t":"…"}` is 8 bytes around the text.
            let mut m = Map::new();
            m.insert("t".into(), json!("x".repeat(bytes - 8)));
            m
        }

        fn complete(form: Map<String, Value>, comment: Option<String>) -> Command {
            Command::Complete {
                task: uuid::Uuid::nil(),
                outcome: None,
                form,
                comment,
            }
        }

        #[test]
        fn a_form_up_to_the_bound_passes_and_one_byte_more_is_refused() {
            let a = someone();
            assert_eq!(
                serde_json::to_vec(&form_of(MAX_FORM_BYTES)).unwrap().len(),
                MAX_FORM_BYTES
            );
            assert!(check_sizes(&complete(form_of(MAX_FORM_BYTES), None), Some(&a)).is_ok());
            match check_sizes(&complete(form_of(MAX_FORM_BYTES + 1), None), Some(&a)) {
                Err(EngineError::InvalidForm(p)) => {
                    assert_eq!(p.len(), 1);
                    assert!(p[0].message.contains("at most 64 KiB"), "{}", p[0].message);
                }
                other => panic!("{other:?}"),
            }
            let start = Command::Start {
                id: uuid::Uuid::nil(),
                data: form_of(MAX_FORM_BYTES + 1),
                parent: None,
            };
            assert!(check_sizes(&start, Some(&a)).is_err());
            // The engine's own child starts carry data it produced from a bounded form.
            assert!(check_sizes(&start, None).is_ok());
        }

        #[test]
        fn comments_and_reasons_are_bounded_in_characters_not_bytes() {
            let a = someone();
            let at_bound = "永".repeat(MAX_TEXT_CHARS);
            let over = "x".repeat(MAX_TEXT_CHARS + 1);
            for cmd in [
                Command::Comment {
                    text: at_bound.clone(),
                },
                Command::Cancel {
                    reason: at_bound.clone(),
                },
                complete(Map::new(), Some(at_bound.clone())),
            ] {
                assert!(check_sizes(&cmd, Some(&a)).is_ok());
            }
            for cmd in [
                Command::Comment { text: over.clone() },
                Command::Cancel {
                    reason: over.clone(),
                },
                Command::Delegate {
                    task: uuid::Uuid::nil(),
                    to: someone(),
                    reason: Some(over.clone()),
                },
                complete(Map::new(), Some(over.clone())),
            ] {
                match check_sizes(&cmd, Some(&a)) {
                    Err(EngineError::Invalid(why)) => {
                        assert!(why.contains("at most 8000 characters"), "{why}")
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    fn signer(id: &str, roles: &[&str]) -> (String, Vec<String>) {
        (id.into(), roles.iter().map(|r| r.to_string()).collect())
    }

    #[test]
    fn reminder_and_breach_ids_never_share_a_slot() {
        use super::{timer_slot, BREACH_SLOTS, REMIND_SLOTS};
        let reminders: Vec<u32> = [0, 1, 999, 1000, 5000]
            .iter()
            .map(|i| timer_slot(REMIND_SLOTS, *i).unwrap())
            .collect();
        let breaches: Vec<u32> = [0, 1, 999, 1000, 5000]
            .iter()
            .map(|i| timer_slot(BREACH_SLOTS, *i).unwrap())
            .collect();
        assert!(reminders.iter().all(|r| !breaches.contains(r) && *r != 0));
        assert!(timer_slot(REMIND_SLOTS, 1 << 30).is_err());
    }

    #[test]
    fn each_role_needs_its_own_signer() {
        let roles = vec!["engineering".to_string(), "quality".to_string()];
        assert!(!distinct_signer_per_role(
            &roles,
            &[signer("a", &["engineering", "quality"])]
        ));
        assert!(distinct_signer_per_role(
            &roles,
            &[
                signer("a", &["engineering", "quality"]),
                signer("b", &["quality"])
            ]
        ));
        // Greedy would give `a` engineering first and then fail; matching reassigns.
        assert!(distinct_signer_per_role(
            &roles,
            &[
                signer("a", &["quality", "engineering"]),
                signer("b", &["engineering"])
            ]
        ));
        assert!(!distinct_signer_per_role(
            &roles,
            &[signer("a", &["quality"]), signer("b", &["quality"])]
        ));
    }
}
