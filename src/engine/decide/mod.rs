//! `decide`: what a command does to an instance. A pure function of (procedure, instance,
//! command, actor, time) — no I/O, no store, no clock, no randomness — returning the events
//! to append and the effects on other instances (children to start, a parent to tell).
//!
//! It works on a scratch copy of the instance and applies each event as it emits it, so the
//! routing that follows a completion always sees the state it is producing. Any rule broken
//! anywhere returns an error and no events: a rejected command changes nothing.
//!
//! This file holds the commands, errors, the entry point, starting an instance and the
//! scratch `Run`; its work is split by concern: `people` (who may act: eligibility,
//! separation, names in data, claim and release), `tasks` (delegate, complete, sign),
//! `deadlines` (due times, reminders, timers firing, breach actions), `flow` (cancel,
//! comments, children, computed values, routing, entering steps, step messages), `withdraw`
//! (what a partial join or a terminating end closes) and `registers` (the `register` value
//! expressions read, and a step's `writes`).

use std::sync::Arc;

use cel::objects::Key;
use cel::Value as Cel;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::compiled::{from_cel, to_cel, zone_of, CompiledProcedure, FieldProblem, FormValidator};
use super::instance::{
    derive_id, Actor, ChildStart, Event, EventKind, Instance, InstanceId, ParentLink, SignDecision,
    Stamp, Status, Task, TaskId, TimerKind, TimerSpec,
};
use super::registers::{EntryWrite, RegisterBook};
use super::roster::{unknown_names, Roster};
use crate::definition::calendar::{resolve_in, Calendar};
use crate::definition::duration::{parse_amount, parse_reminder, Due, Reminder};
use crate::definition::model::{
    BreachAction, DelegationLevel, NoticeWhen, Procedure, SignRule, SignWord, Step, StepKind,
    DEFAULT_OUTCOME,
};

mod deadlines;
pub use deadlines::recompute;
mod flow;
mod people;
mod registers;
mod repair;
mod tasks;
mod withdraw;

/// The working-day calendars by id, for deadlines.
pub type Calendars = std::collections::HashMap<String, Arc<Calendar>>;

/// What a command is decided against besides the instance: the time, the calendars and
/// who exists. All given by the caller, so `decide` stays a pure function of its arguments.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub now: DateTime<Utc>,
    pub calendars: &'a Calendars,
    pub roster: &'a dyn Roster,
    /// The registers' entries as they are now (read by `register.…` in expressions).
    pub registers: &'a RegisterBook,
}

/// Why an instance is started by the engine from a register: the entry and the date it is
/// started for, recorded in the entry's `mark` field in the same commit.
#[derive(Debug, Clone, PartialEq)]
pub struct StartOrigin {
    pub register: String,
    pub key: String,
    pub mark: String,
    pub date: Value,
}

/// What someone (or the engine) asks of an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start a new instance with `id` (chosen by the caller so it can be time-ordered).
    Start {
        id: InstanceId,
        data: Map<String, Value>,
        parent: Option<ParentLink>,
        /// Set when the engine starts it before a register date (`starts_from`).
        origin: Option<StartOrigin>,
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
    /// Sent by the engine when the directory deactivated `user`: their hold on the task
    /// ends and it goes back to its roles.
    ReturnTask {
        task: TaskId,
        user: String,
        reason: String,
    },
    /// An operator holds the instance (deadlines paused).
    Suspend {
        reason: String,
    },
    /// An operator lets a suspended instance go on (deadlines extended by the pause).
    Resume {
        reason: String,
    },
    /// An operator closes one open task without it being done.
    WithdrawTask {
        task: TaskId,
        reason: String,
    },
    /// An operator moves work to another step: the named tasks close (all open work when
    /// none is named) and `to` is entered.
    Move {
        tasks: Vec<TaskId>,
        to: String,
        reason: String,
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
            Command::ReturnTask { .. } => "return_task",
            Command::Suspend { .. } => "suspend",
            Command::Resume { .. } => "resume",
            Command::WithdrawTask { .. } => "withdraw_task",
            Command::Move { .. } => "move",
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
        Command::Suspend { reason }
        | Command::Resume { reason }
        | Command::WithdrawTask { reason, .. }
        | Command::Move { reason, .. } => Some(("a reason", reason.as_str())),
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
    if let Command::Start {
        id,
        data,
        parent,
        origin,
    } = cmd
    {
        if state.is_some() {
            return Err(EngineError::Conflict(format!(
                "instance {id} already exists"
            )));
        }
        return start(proc, *id, data, parent.clone(), origin.as_ref(), actor, env);
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
    if let (Some(s), Some(_)) = (&state.suspended, actor) {
        // The engine's own commands (a child ending, a cancellation reaching down from a
        // parent) still apply: refusing them would fail the other instance's command.
        if !matches!(cmd, Command::Resume { .. } | Command::Comment { .. }) {
            return Err(EngineError::Conflict(format!(
                "instance {} is suspended since {} ({}); an operator must resume it first",
                state.id,
                s.since.format("%Y-%m-%d %H:%M UTC"),
                s.reason
            )));
        }
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
        Command::ReturnTask { task, user, reason } => run.return_task(*task, user, reason)?,
        Command::Suspend { reason } => run.suspend(reason)?,
        Command::Resume { reason } => run.resume(reason)?,
        Command::WithdrawTask { task, reason } => run.withdraw_task(*task, reason)?,
        Command::Move { tasks, to, reason } => run.move_to(tasks, to, reason)?,
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
    origin: Option<&StartOrigin>,
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
    if let Some(o) = origin {
        let mut values = Map::new();
        values.insert(o.mark.clone(), o.date.clone());
        run.emit(
            None,
            EventKind::RegisterWritten {
                register: o.register.clone(),
                key: o.key.clone(),
                values,
            },
        );
    }
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
    registers: &'a RegisterBook,
    /// Register entries this command set so far: expressions after them read them.
    writes: Vec<EntryWrite>,
    /// The `register` value expressions read, built once per command (and again after a
    /// write), not once per expression: it copies every register.
    register_cel: std::cell::OnceCell<Cel>,
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
            registers: env.registers,
            writes: Vec::new(),
            register_cel: std::cell::OnceCell::new(),
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
                origin: None,
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
