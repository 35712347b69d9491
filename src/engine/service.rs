//! The engine as a service: the one API the HTTP layer, the CLI, tests and benchmarks use.
//! It loads an instance, asks the pure core what a command does, carries out the effects on
//! other instances (children, parents) in the same commit, turns the result into a store
//! `Commit` (events, snapshots, worklist and status index rows) and waits until it is durable.
//!
//! It holds the procedure registry: every version ever registered stays runnable, and an
//! instance always runs on the exact version it started on (invariant 6). It must not decide
//! anything itself — rules live in `decide` — and must not read the system time except
//! through its `Clock`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use super::compiled::CompiledProcedure;
use super::decide::{decide, Calendars, Command, Effect, EngineError, Env};
use super::instance::{Actor, Event, EventKind, Instance, InstanceId, Task};
use super::registers::{EntryWrite, RegisterBook};
use super::roster::{Roster, Unchecked};
use crate::clock::Clock;
use crate::definition::load::ValidProcedure;
use crate::definition::model::Procedure;
use crate::store::{
    AuditQuery, Commit, EventSummary, InstanceWrite, NewEvent, Page, ProcedureRecord, StatusChange,
    Store, StoreError, TaskRow, TimerRow, Verification,
};

mod commit;
mod reads;
mod registry;
mod settings;

pub(super) use commit::build_commit;
use reads::decode_event;
pub use reads::AuditRecord;
use registry::Registry;

/// Everything that can go wrong with a command, for the caller to map to a response.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("procedure `{0}` is not registered")]
    UnknownProcedure(String),
    #[error(
        "procedure `{id}` version {version} was changed without raising `version`; running instances depend on the old text, so give the changed file `version = {next}`"
    )]
    ProcedureChanged { id: String, version: u32, next: u32 },
    #[error(
        "procedure `{id}` is at version {running}; version {version} is not newer, so it cannot replace it: give the file `version = {next}`"
    )]
    VersionNotRaised {
        id: String,
        version: u32,
        running: u32,
        next: u32,
    },
    #[error("procedure `{0}` was retired (its file was removed): instances already running finish, but no new ones start")]
    Retired(String),
    #[error("procedure `{id}` cannot be started today ({today}): {windows}")]
    NotValidNow {
        id: String,
        today: String,
        windows: String,
    },
    #[error("the store failed: {0}")]
    Store(StoreError),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    /// An idempotency key sent again with a different request.
    #[error("{0}")]
    KeyReused(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(e)
    }
}

/// The most instance decisions one command may make: the instance it names, the children it
/// starts, their children, the parents they tell, the children a cancellation reaches.
/// A step starts at most `MAX_CHILDREN` (200) children, so a thousand leaves room for any
/// procedure the company runs while a command that would fan out or recurse further is
/// refused in milliseconds. Checked before the queued work is decided.
pub const MAX_INSTANCE_STEPS_PER_COMMAND: usize = 1_000;

/// The most history entries one command may append, across every instance it touches.
pub const MAX_EVENTS_PER_COMMAND: usize = 10_000;

/// The most bytes (events and instance snapshots) one command may write: one commit is one
/// transaction, held in memory until it is durable.
pub const MAX_COMMIT_BYTES: usize = 16 << 20;

/// The refusal of a command that would do more than one command may.
fn too_much(what: String) -> ServiceError {
    ServiceError::Engine(EngineError::Invalid(format!(
        "this command would make {what}; one command is bounded so that it always answers quickly, and nothing was changed"
    )))
}

/// How often a command is retried when another command changed the instance between our
/// read and our commit. Each retry re-decides on fresh state, so the loser of a race on
/// one task gets the engine's answer ("already completed"), not a storage error.
const CAS_RETRIES: usize = 8;

/// The engine over a store.
pub struct Engine<S: Store> {
    pub(super) store: Arc<S>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) registry: RwLock<Registry>,
    /// Held while procedures are registered or retired: reloads, API deployments and
    /// start-up go one at a time, never blocking commands (which only read the registry).
    pub(super) deploying: tokio::sync::Mutex<()>,
    pub(super) calendars: RwLock<Arc<Calendars>>,
    /// Who exists: people and departments named in data are checked against it.
    roster: RwLock<Arc<dyn Roster>>,
    /// The registers' entries: seeded from their files, changed by committed writes.
    registers: RwLock<Arc<RegisterBook>>,
    /// Held while instances are started from register dates, so two passes (the scheduler
    /// and a clock move) never start the same one twice.
    pub(super) register_starts: tokio::sync::Mutex<()>,
    /// Signalled after a commit that armed timers, so a sleeping scheduler can wake for a
    /// timer earlier than the one it sleeps towards.
    pub(super) timers_armed: tokio::sync::Notify,
    /// Which messages events cause (webhook subscriptions, who gets mail): swapped whole
    /// when their files are read again.
    routes: RwLock<Arc<crate::outbox::Routes>>,
    /// Signalled after a commit that queued messages, so the outbox sender looks at once.
    outbox_wake: Arc<tokio::sync::Notify>,
    /// Committed events for the live stream's listeners (`outbox::live`).
    feed: tokio::sync::broadcast::Sender<Arc<crate::outbox::live::Published>>,
}

/// Deadline events of a command, counted for the metrics once its commit is durable.
#[derive(Debug, Default)]
pub(super) struct Tally {
    reminders: u64,
    breaches: u64,
    escalations: u64,
    /// Messages the commit queued in the outbox.
    pub(super) messages: usize,
    /// The commit's events for the live stream, built only while someone listens.
    pub(super) published: Vec<Arc<crate::outbox::live::Published>>,
    /// Register entries the command set, applied to the book once the commit is durable.
    pub(super) writes: Vec<EntryWrite>,
}

impl Tally {
    pub(super) fn add(&mut self, o: &Tally) {
        self.reminders += o.reminders;
        self.breaches += o.breaches;
        self.escalations += o.escalations;
        self.messages += o.messages;
        self.published.extend(o.published.iter().cloned());
        self.writes.extend(o.writes.iter().cloned());
    }

    pub(super) fn record(self) {
        for (kind, n) in [
            ("reminded", self.reminders),
            ("breached", self.breaches),
            ("escalated", self.escalations),
        ] {
            if n > 0 {
                metrics::counter!("sopflow_deadline_events_total", "kind" => kind).increment(n);
            }
        }
    }
}

/// An instance touched by a command in progress.
pub(super) struct Touched {
    pub(super) before: Option<Instance>,
    pub(super) after: Instance,
    pub(super) events: Vec<Event>,
}

impl<S: Store> Engine<S> {
    /// Opens the engine and loads every procedure version the store already knows, so
    /// instances started on an older version keep running after the file changed.
    pub fn open(store: Arc<S>, clock: Arc<dyn Clock>) -> Result<Self, ServiceError> {
        let engine = Engine {
            store,
            clock,
            registry: RwLock::new(Registry::default()),
            deploying: tokio::sync::Mutex::new(()),
            calendars: RwLock::new(Arc::new(Calendars::new())),
            roster: RwLock::new(Arc::new(Unchecked)),
            registers: RwLock::new(Arc::new(RegisterBook::default())),
            register_starts: tokio::sync::Mutex::new(()),
            timers_armed: tokio::sync::Notify::new(),
            routes: RwLock::new(Arc::new(crate::outbox::Routes::default())),
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            feed: tokio::sync::broadcast::channel(crate::outbox::live::FEED_CAPACITY).0,
        };
        let records = engine.store.procedures()?;
        let defs: Vec<(Procedure, String)> = records
            .iter()
            .map(|r| {
                crate::definition::load::parse_procedure(&r.source)
                    .map(|p| (p, r.hash.clone()))
                    .ok_or_else(|| {
                        ServiceError::Corrupt(format!(
                            "stored procedure {} v{} does not parse",
                            r.id, r.version
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        engine.install(&defs)?;
        engine.restore_retired()?;
        Ok(engine)
    }

    /// Starts an instance of the newest version of `procedure`.
    pub async fn start(
        &self,
        procedure: &str,
        data: Map<String, Value>,
        actor: Option<&Actor>,
    ) -> Result<Instance, ServiceError> {
        Ok(self
            .start_once(procedure, data, actor, None)
            .await?
            .instance)
    }

    /// Runs a command on an existing instance and returns the instance after it.
    pub async fn execute(
        &self,
        instance: InstanceId,
        cmd: Command,
        actor: Option<&Actor>,
    ) -> Result<Instance, ServiceError> {
        self.run(instance, None, cmd, actor, None).await
    }

    pub(super) async fn run(
        &self,
        id: InstanceId,
        start_proc: Option<Arc<CompiledProcedure>>,
        cmd: Command,
        actor: Option<&Actor>,
        once: Option<&super::once::Idempotency>,
    ) -> Result<Instance, ServiceError> {
        let mut attempt = 0;
        loop {
            let (mut commit, result, tally) = self.prepare(id, start_proc.clone(), &cmd, actor)?;
            // Recorded with the events it answers for: a crash leaves both or neither.
            commit.idempotency = once.map(|o| o.write(self.clock.now(), id, result.seq));
            let armed = !commit.arm_timers.is_empty();
            match self.store.commit(commit).await {
                Ok(()) => {
                    self.settle(tally);
                    if armed {
                        self.timers_armed.notify_one();
                    }
                    return Ok(result);
                }
                Err(StoreError::Conflict { .. }) if attempt < CAS_RETRIES => {
                    attempt += 1;
                    tokio::task::yield_now().await;
                }
                Err(StoreError::Conflict { instance, .. }) => {
                    return Err(EngineError::Conflict(format!(
                        "instance {instance} is being changed by others; try again"
                    ))
                    .into())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Decides a command and every effect it causes, and builds the commit — no writes.
    pub(super) fn prepare(
        &self,
        id: InstanceId,
        start_proc: Option<Arc<CompiledProcedure>>,
        cmd: &Command,
        actor: Option<&Actor>,
    ) -> Result<(Commit, Instance, Tally), ServiceError> {
        let now = self.clock.now();
        let mut touched: Vec<(InstanceId, Touched)> = Vec::new();
        let mut queue: Vec<(InstanceId, Option<Arc<CompiledProcedure>>, Command, bool)> =
            vec![(id, start_proc, cmd.clone(), true)];
        // Read once per command, not per instance the command touches.
        let calendars = self
            .calendars
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let roster = self
            .roster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Writes of instances touched earlier in this command are not seen by later ones
        // (each instance decides against the book as committed).
        let registers = self.registers();
        let mut decided = 0usize;
        let mut events = 0usize;
        while let Some((target, proc, cmd, by_actor)) = queue.pop() {
            decided += 1;
            let pos = touched.iter().position(|(i, _)| *i == target);
            let current: Option<Instance> = match pos {
                Some(p) => Some(touched[p].1.after.clone()),
                // A child this command is starting has an id minted for it just now: there
                // is nothing to read (the commit's create-only check still guards it), and on
                // a networked store a fan-out of hundreds would otherwise wait for hundreds
                // of round trips before it is refused.
                None if matches!(
                    cmd,
                    Command::Start {
                        parent: Some(_),
                        ..
                    }
                ) =>
                {
                    None
                }
                None => self.load(target)?,
            };
            let proc = match (&proc, &current) {
                (Some(p), _) => p.clone(),
                (None, Some(inst)) => self
                    .procedure_version(&inst.procedure, inst.version)
                    .ok_or_else(|| {
                        ServiceError::Corrupt(format!(
                            "instance {target} runs {} v{}, which is not registered",
                            inst.procedure, inst.version
                        ))
                    })?,
                (None, None) => {
                    return Err(EngineError::NotFound(format!("instance {target}")).into())
                }
            };
            let who = if by_actor { actor } else { None };
            let env = Env {
                now,
                calendars: &calendars,
                roster: &*roster,
                registers: &registers,
            };
            let decision = decide(&proc, current.as_ref(), &cmd, who, env)?;
            events += decision.events.len();
            if events > MAX_EVENTS_PER_COMMAND {
                return Err(too_much(format!(
                    "more than {MAX_EVENTS_PER_COMMAND} history entries"
                )));
            }
            let mut after = match &current {
                Some(c) => c.clone(),
                None => decision
                    .events
                    .first()
                    .and_then(|e| Instance::from_first(target, e))
                    .ok_or_else(|| {
                        ServiceError::Corrupt("a start produced no start event".into())
                    })?,
            };
            let skip = usize::from(current.is_none());
            for e in decision.events.iter().skip(skip) {
                after.apply(e);
            }
            match pos {
                Some(p) => {
                    touched[p].1.after = after;
                    touched[p].1.events.extend(decision.events);
                }
                None => touched.push((
                    target,
                    Touched {
                        before: current,
                        after,
                        events: decision.events,
                    },
                )),
            }
            for effect in decision.effects.into_iter().rev() {
                match effect {
                    Effect::StartChild {
                        id,
                        procedure,
                        data,
                        parent,
                    } => {
                        let child = self.for_child(&procedure, now)?;
                        let zone = super::compiled::zone_of(&child.def, &calendars);
                        let data = data
                            .into_iter()
                            .map(|(k, v)| {
                                let v = child.coerce(&k, v, zone);
                                (k, v)
                            })
                            .collect();
                        queue.push((
                            id,
                            Some(child),
                            Command::Start {
                                id,
                                data,
                                parent: Some(parent),
                                origin: None,
                            },
                            false,
                        ));
                    }
                    Effect::NotifyParent {
                        parent,
                        step,
                        child,
                        outcome,
                        data,
                    } => {
                        // A parent that was cancelled (by the cascade that cancelled this
                        // child) no longer waits for anything.
                        if self.is_running(parent, &touched)? {
                            queue.push((
                                parent,
                                None,
                                Command::ChildEnded {
                                    step,
                                    child,
                                    outcome,
                                    data,
                                },
                                false,
                            ));
                        }
                    }
                    Effect::CancelChild { id, reason } => {
                        // A child that already ended needs no cancelling.
                        if self.is_running(id, &touched)? {
                            queue.push((id, None, Command::Cancel { reason }, false));
                        }
                    }
                }
            }
            // Counted before the queued work is done, so a command that would fan out too
            // far is refused after a handful of decisions, not after thousands.
            if decided + queue.len() > MAX_INSTANCE_STEPS_PER_COMMAND {
                return Err(too_much(format!(
                    "changes to more than {MAX_INSTANCE_STEPS_PER_COMMAND} instances (children \
                     starting children, or a cancellation reaching that many)"
                )));
            }
        }
        let result = touched
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, t)| t.after.clone())
            .ok_or_else(|| ServiceError::Corrupt("the command touched no instance".into()))?;
        let mut tally = Tally::default();
        for (_, t) in &touched {
            for e in &t.events {
                match &e.kind {
                    EventKind::DeadlineReminded { .. } => tally.reminders += 1,
                    EventKind::DeadlineBreached { .. } => tally.breaches += 1,
                    EventKind::TaskEscalated { .. } => tally.escalations += 1,
                    EventKind::RegisterWritten {
                        register,
                        key,
                        values,
                    } => tally.writes.push(EntryWrite {
                        register: register.clone(),
                        key: key.clone(),
                        values: values.clone(),
                    }),
                    _ => {}
                }
            }
        }
        let commit = build_commit(&touched, &self.routes())?;
        tally.messages = commit.outbox.len();
        tally.published = self.to_publish(&touched, &commit);
        let bytes: usize = commit
            .instances
            .iter()
            .map(|w| w.snapshot.len() + w.events.iter().map(|e| e.bytes.len()).sum::<usize>())
            .sum();
        if bytes > MAX_COMMIT_BYTES {
            return Err(too_much(format!(
                "{} MiB of history and instance data, more than the {} MiB one command may write",
                bytes.div_ceil(1 << 20),
                MAX_COMMIT_BYTES >> 20
            )));
        }
        Ok((commit, result, tally))
    }

    fn is_running(
        &self,
        id: InstanceId,
        touched: &[(InstanceId, Touched)],
    ) -> Result<bool, ServiceError> {
        Ok(match touched.iter().find(|(i, _)| *i == id) {
            Some((_, t)) => t.after.status == super::instance::Status::Running,
            None => self
                .load(id)?
                .is_some_and(|c| c.status == super::instance::Status::Running),
        })
    }

    pub(super) fn load(&self, id: InstanceId) -> Result<Option<Instance>, ServiceError> {
        match self.store.instance(id)? {
            None => Ok(None),
            Some(stored) => {
                let inst: Instance = serde_json::from_slice(&stored.snapshot)
                    .map_err(|e| ServiceError::Corrupt(format!("snapshot of {id}: {e}")))?;
                if inst.seq != stored.version {
                    return Err(ServiceError::Corrupt(format!(
                        "snapshot of {id} is at event {} but the store is at {}",
                        inst.seq, stored.version
                    )));
                }
                Ok(Some(inst))
            }
        }
    }

    /// Appends events decided outside `decide` (a migration, a deployment record) to one
    /// instance in a commit of its own. `make` gets the current state (`None` for a new
    /// instance) and returns the events; on a version conflict it is called again on the
    /// fresh state, so what it decides always follows the head it is appended to.
    pub(super) async fn append(
        &self,
        id: InstanceId,
        make: impl Fn(Option<&Instance>) -> Result<Vec<Event>, ServiceError>,
    ) -> Result<Instance, ServiceError> {
        let mut attempt = 0;
        loop {
            let before = self.load(id)?;
            let events = make(before.as_ref())?;
            let mut after = match &before {
                Some(b) => b.clone(),
                None => events
                    .first()
                    .and_then(|e| Instance::from_first(id, e))
                    .ok_or_else(|| {
                        ServiceError::Corrupt("a new history must begin with `started`".into())
                    })?,
            };
            for e in events.iter().skip(usize::from(before.is_none())) {
                after.apply(e);
            }
            let result = after.clone();
            let touched = [(
                id,
                Touched {
                    before,
                    after,
                    events,
                },
            )];
            let commit = build_commit(&touched, &self.routes())?;
            let tally = Tally {
                messages: commit.outbox.len(),
                published: self.to_publish(&touched, &commit),
                ..Tally::default()
            };
            let armed = !commit.arm_timers.is_empty();
            match self.store.commit(commit).await {
                Ok(()) => {
                    if armed {
                        self.timers_armed.notify_one();
                    }
                    self.settle(tally);
                    return Ok(result);
                }
                Err(StoreError::Conflict { .. }) if attempt < CAS_RETRIES => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A time-ordered instance id whose time part comes from our clock, not the system's.
pub fn new_instance_id(now: chrono::DateTime<chrono::Utc>) -> InstanceId {
    let secs = u64::try_from(now.timestamp()).unwrap_or(0);
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, secs, now.timestamp_subsec_nanos());
    uuid::Uuid::new_v7(ts)
}

/// The notification index key of one person (role ids never start with `@`).
pub fn personal_recipient(user: &str) -> String {
    format!("@{user}")
}
