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

#[derive(Default)]
pub(super) struct Registry {
    /// id → version → compiled procedure.
    pub(super) by_id: HashMap<String, BTreeMap<u32, Arc<CompiledProcedure>>>,
    /// Procedures whose file was removed: no new starts.
    pub(super) retired: std::collections::HashSet<String>,
}

impl Registry {
    fn get(&self, id: &str, version: u32) -> Option<Arc<CompiledProcedure>> {
        self.by_id.get(id)?.get(&version).cloned()
    }

    pub(super) fn latest(&self, id: &str) -> Option<Arc<CompiledProcedure>> {
        self.by_id.get(id)?.values().next_back().cloned()
    }
}

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

    /// Sets the working-day calendars deadlines are computed with (replacing any before).
    /// Calendars are live configuration: a holiday added today moves deadlines computed
    /// from now on, never those already recorded in a history.
    pub fn set_calendars(&self, calendars: &[Arc<crate::definition::calendar::Calendar>]) {
        let map: Calendars = calendars
            .iter()
            .map(|c| (c.id().to_string(), c.clone()))
            .collect();
        *self.calendars.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
    }

    /// The time zone the dates of `def` are read in (its calendar's; UTC if not loaded).
    pub fn zone_of(&self, def: &Procedure) -> chrono_tz::Tz {
        let calendars = self.calendars.read().unwrap_or_else(|p| p.into_inner());
        super::compiled::zone_of(def, &calendars)
    }

    /// The calendar `def` counts working time on (its own, else `default`), if loaded.
    pub(super) fn calendar_of(
        &self,
        def: &Procedure,
    ) -> Option<Arc<crate::definition::calendar::Calendar>> {
        let calendars = self.calendars.read().unwrap_or_else(|p| p.into_inner());
        calendars
            .get(def.calendar.as_deref().unwrap_or("default"))
            .cloned()
    }

    /// The time zone of the `default` calendar (UTC if none is loaded): what a date alone
    /// means where no procedure is named (audit filters).
    pub fn default_zone(&self) -> chrono_tz::Tz {
        let calendars = self.calendars.read().unwrap_or_else(|p| p.into_inner());
        calendars
            .get("default")
            .map_or(chrono_tz::Tz::UTC, |c| c.timezone())
    }

    /// The time zone dates of procedure `id` are read in (its newest version's calendar),
    /// else the default calendar's.
    pub fn zone_of_procedure(&self, id: &str) -> chrono_tz::Tz {
        match self.procedure(id) {
            Some(p) => self.zone_of(&p.def),
            None => self.default_zone(),
        }
    }

    /// Loads the registers: each file's seeded entries, then every write recorded in the
    /// store's histories, in the order they were made. Replaces the book in one step.
    pub fn set_registers(
        &self,
        defs: &[Arc<crate::definition::register::RegisterFile>],
    ) -> Result<(), ServiceError> {
        let mut book = RegisterBook::seeded(defs);
        let query = crate::store::AuditQuery {
            kind: Some("register_written".into()),
            ..Default::default()
        };
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = self.store.audit(&query, cursor.as_deref(), 1000)?;
            for found in &page.items {
                let e = decode_event(found.instance, found.seq, &found.event)?;
                if let EventKind::RegisterWritten {
                    register,
                    key,
                    values,
                } = e.kind
                {
                    book.apply(&EntryWrite {
                        register,
                        key,
                        values,
                    });
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        *self.registers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(book);
        Ok(())
    }

    /// The registers as they are now.
    pub fn registers(&self) -> Arc<RegisterBook> {
        self.registers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a durable commit: its register writes join the book, its deadline events the
    /// metrics.
    pub(super) fn settle(&self, tally: Tally) {
        if tally.messages > 0 {
            self.outbox_wake.notify_one();
        }
        for p in &tally.published {
            // No listener left is not an error: the feed keeps nothing.
            let _ = self.feed.send(p.clone());
        }
        if !tally.writes.is_empty() {
            let mut guard = self.registers.write().unwrap_or_else(|p| p.into_inner());
            let book = Arc::make_mut(&mut guard);
            for w in &tally.writes {
                book.apply(w);
            }
        }
        tally.record();
    }

    /// Sets who exists (the directory): every later command checks the people and
    /// departments it names against it. Until it is called nothing is checked, which only
    /// tests and benchmarks with invented people rely on.
    /// Sets which messages events cause from now on (webhook subscriptions, who gets mail).
    pub fn set_routes(&self, routes: crate::outbox::Routes) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
    }

    /// Changes the message routes in force in place (the file's part and the API's part
    /// are changed by different callers; neither may undo the other's change).
    pub fn update_routes(&self, change: impl FnOnce(&mut crate::outbox::Routes)) {
        let mut guard = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let mut routes = (**guard).clone();
        change(&mut routes);
        *guard = Arc::new(routes);
    }

    /// The message routes in force.
    pub fn routes(&self) -> Arc<crate::outbox::Routes> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Committed events from now on, for the live stream (lagging listeners miss some and
    /// are told so by the channel).
    pub fn subscribe_events(
        &self,
    ) -> tokio::sync::broadcast::Receiver<Arc<crate::outbox::live::Published>> {
        self.feed.subscribe()
    }

    /// The live stream's items of one commit, if anyone listens.
    pub(super) fn to_publish(
        &self,
        touched: &[(InstanceId, Touched)],
        commit: &Commit,
    ) -> Vec<Arc<crate::outbox::live::Published>> {
        if self.feed.receiver_count() == 0 {
            return Vec::new();
        }
        let events: Vec<(InstanceId, &str, &[Event])> = touched
            .iter()
            .map(|(id, t)| (*id, t.after.procedure.as_str(), t.events.as_slice()))
            .collect();
        crate::outbox::live::published(&events, commit)
    }

    /// Signalled after every commit that queued messages (the outbox sender waits on it).
    pub fn outbox_wake(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_wake.clone()
    }

    pub fn set_roster(&self, roster: Arc<dyn Roster>) {
        *self.roster.write().unwrap_or_else(|p| p.into_inner()) = roster;
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn install(&self, defs: &[(Procedure, String)]) -> Result<(), ServiceError> {
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Procedure> = reg
            .by_id
            .values()
            .flat_map(|v| v.values().map(|c| c.def.clone()))
            .collect();
        all.extend(defs.iter().map(|(p, _)| p.clone()));
        let refs: Vec<&Procedure> = all.iter().collect();
        for (p, hash) in defs {
            let compiled = CompiledProcedure::compile(p.clone(), hash.clone(), &refs)
                .map_err(|e| ServiceError::Corrupt(e.to_string()))?;
            reg.by_id
                .entry(p.id.clone())
                .or_default()
                .insert(p.version, Arc::new(compiled));
        }
        Ok(())
    }

    /// Registers validated procedures (from `definition::load`) and records each new one in
    /// the deployments history. A file whose content changed while its version did not, or
    /// whose version is lower than the one registered, is refused, and nothing of this call
    /// is registered. The one path every registration takes (start-up, the file watcher,
    /// the API): see `deploy.rs`.
    pub async fn register(&self, procedures: &[ValidProcedure]) -> Result<(), ServiceError> {
        self.deploy_all(procedures, None).await.map(|_| ())
    }

    /// Whether `p` may be registered now (not a changed text under a registered version,
    /// not older than the version running), without registering it.
    pub fn check_registration(&self, p: &ValidProcedure) -> Result<(), ServiceError> {
        self.check_registrable(std::slice::from_ref(p))
    }

    /// The ids of the calendars loaded now.
    pub fn calendar_ids(&self) -> std::collections::HashSet<String> {
        self.calendars
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Checks that each procedure may be registered, before anything is.
    pub(super) fn check_registrable(
        &self,
        procedures: &[ValidProcedure],
    ) -> Result<(), ServiceError> {
        for p in procedures {
            if let Some(existing) = self.store.procedure(&p.procedure.id, p.procedure.version)? {
                if existing.hash != p.hash {
                    let next = self
                        .latest_version(&p.procedure.id)
                        .unwrap_or(p.procedure.version)
                        + 1;
                    return Err(ServiceError::ProcedureChanged {
                        id: p.procedure.id.clone(),
                        version: p.procedure.version,
                        next,
                    });
                }
            }
            // An older version's text (a file put back) would leave the file saying one
            // version while new instances start on another: the file must say what runs.
            if let Some(running) = self.latest_version(&p.procedure.id) {
                if p.procedure.version < running {
                    return Err(ServiceError::VersionNotRaised {
                        id: p.procedure.id.clone(),
                        version: p.procedure.version,
                        running,
                        next: running + 1,
                    });
                }
            }
        }
        Ok(())
    }

    /// Stores and compiles procedures already checked by `check_registrable`.
    pub(super) async fn install_checked(
        &self,
        procedures: &[ValidProcedure],
    ) -> Result<(), ServiceError> {
        for p in procedures {
            self.put_source(p).await?;
        }
        let defs: Vec<(Procedure, String)> = procedures
            .iter()
            .map(|p| (p.procedure.clone(), p.hash.clone()))
            .collect();
        self.install(&defs)?;
        self.arm_schedules().await?;
        Ok(())
    }

    async fn put_source(&self, p: &ValidProcedure) -> Result<(), ServiceError> {
        match self
            .store
            .put_procedure(ProcedureRecord {
                id: p.procedure.id.clone(),
                version: p.procedure.version,
                hash: p.hash.clone(),
                source: p.source.to_string(),
            })
            .await
        {
            Err(StoreError::ProcedureChanged { id, version }) => {
                Err(ServiceError::ProcedureChanged {
                    next: version + 1,
                    id,
                    version,
                })
            }
            other => other.map_err(ServiceError::from),
        }
    }

    pub(super) fn latest_version(&self, id: &str) -> Option<u32> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.latest(id).map(|c| c.version())
    }

    /// The newest registered version of a procedure.
    pub fn procedure(&self, id: &str) -> Option<Arc<CompiledProcedure>> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .latest(id)
    }

    /// A specific version.
    pub fn procedure_version(&self, id: &str, version: u32) -> Option<Arc<CompiledProcedure>> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id, version)
    }

    /// Every registered version of `id`, oldest first.
    pub fn versions(&self, id: &str) -> Vec<u32> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.by_id
            .get(id)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Up to `limit` events of an instance from sequence number `from` on.
    pub fn history_page(
        &self,
        id: InstanceId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Event>, ServiceError> {
        self.store
            .history(id, from, limit)?
            .iter()
            .map(|e| decode_event(id, e.seq, &e.bytes))
            .collect()
    }

    /// A page of events across instances matching `query`, oldest first, from the audit
    /// index; `cursor` is the previous page's `next`.
    pub fn audit(
        &self,
        query: &AuditQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AuditRecord>, ServiceError> {
        let page = self.store.audit(query, cursor, limit)?;
        let items = page
            .items
            .into_iter()
            .map(|a| {
                Ok(AuditRecord {
                    event: decode_event(a.instance, a.seq, &a.event)?,
                    instance: a.instance,
                    procedure: a.procedure,
                    hash: crate::store::chain::hex(&a.hash),
                })
            })
            .collect::<Result<_, ServiceError>>()?;
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// Checks one instance's hash chain; `None` when there is no such instance.
    pub fn verify_instance(&self, id: InstanceId) -> Result<Option<Verification>, ServiceError> {
        Ok(self.store.verify_instance(id)?)
    }

    /// Checks every instance's hash chain (invariant 7); `progress` gets events checked.
    pub fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<Verification, ServiceError> {
        Ok(self.store.verify(progress)?)
    }

    /// Every registered procedure at its newest version, by id.
    pub fn procedures(&self) -> Vec<Arc<CompiledProcedure>> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Arc<CompiledProcedure>> = reg
            .by_id
            .values()
            .filter_map(|m| m.values().next_back().cloned())
            .collect();
        v.sort_by(|a, b| a.id().cmp(b.id()));
        v
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

    /// The current state of an instance.
    pub fn instance(&self, id: InstanceId) -> Result<Option<Instance>, ServiceError> {
        self.load(id)
    }

    /// The whole history of an instance, oldest first.
    pub fn history(&self, id: InstanceId) -> Result<Vec<Event>, ServiceError> {
        let mut out = Vec::new();
        loop {
            let from = out.last().map_or(1, |e: &Event| e.seq + 1);
            let page = self.history_page(id, from, 1000)?;
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page);
        }
    }

    /// The tasks a person may see: offered to one of their roles or with them.
    pub fn tasks_for(&self, actor: &Actor) -> Result<Vec<TaskRow>, ServiceError> {
        let mut to = actor.roles.clone();
        to.push(personal_recipient(&actor.id));
        Ok(self.store.tasks_for(&to, &actor.id)?)
    }

    /// A page of a worklist (`store::worklist`): the caller builds the query from the
    /// person's roles and the filters asked for.
    pub fn worklist(
        &self,
        query: &crate::store::WorklistQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<TaskRow>, ServiceError> {
        Ok(self.store.worklist(query, cursor, limit)?)
    }

    /// Notifications for the roles a person holds and for them personally, newest first.
    pub fn notifications_for(
        &self,
        actor: &Actor,
        limit: usize,
    ) -> Result<Vec<crate::store::NotificationRow>, ServiceError> {
        let mut to = actor.roles.clone();
        to.push(personal_recipient(&actor.id));
        Ok(self.store.notifications_for(&to, limit)?)
    }

    /// An open task and its instance.
    pub fn task(&self, task: uuid::Uuid) -> Result<Option<(Task, Instance)>, ServiceError> {
        let Some(row) = self.store.task(task)? else {
            return Ok(None);
        };
        let Some(inst) = self.load(row.instance)? else {
            return Ok(None);
        };
        Ok(inst.tasks.get(&task).cloned().map(|t| (t, inst)))
    }

    /// The instance a task belongs to, whether the task is open or closed.
    pub fn task_instance(&self, task: uuid::Uuid) -> Result<Option<InstanceId>, ServiceError> {
        Ok(self.store.task_instance(task)?)
    }

    /// Instances by procedure and status, in creation order, a page at a time.
    pub fn instances(
        &self,
        procedure: Option<&str>,
        status: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<InstanceId>, ServiceError> {
        if procedure.is_some() || status.is_some() || limit == 0 {
            return Ok(self.store.instances(procedure, status, cursor, limit)?);
        }
        // The deployments history is kept as a pseudo-instance, not one anybody runs: it is
        // left out, reading one more so a page is still full (the cursor is the last id).
        let ledger = super::deploy::ledger_id();
        let mut page = self
            .store
            .instances(None, None, cursor, limit.saturating_add(1))?;
        page.items.retain(|i| *i != ledger);
        if page.items.len() > limit {
            page.items.truncate(limit);
            page.next = page.items.last().map(|i| i.as_bytes().to_vec());
        }
        Ok(page)
    }
}

/// An event found by an audit query.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub instance: InstanceId,
    pub procedure: String,
    /// The event's link in its instance's hash chain, hex.
    pub hash: String,
    pub event: Event,
}

fn decode_event(id: InstanceId, seq: u64, bytes: &[u8]) -> Result<Event, ServiceError> {
    serde_json::from_slice(bytes)
        .map_err(|err| ServiceError::Corrupt(format!("event {seq} of {id}: {err}")))
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

/// The index row of an open task: offered to its roles, or with one person.
fn task_row(inst: &Instance, t: &Task) -> TaskRow {
    let holder = t.holder().map(str::to_string);
    TaskRow {
        task: t.id,
        instance: inst.id,
        procedure: inst.procedure.clone(),
        step: t.step.clone(),
        // A task offered to a list of people is filed under each person's own key, the
        // way notifications are, so their worklists find it.
        roles: if holder.is_some() {
            Vec::new()
        } else if !t.people.is_empty() {
            t.people.iter().map(|u| personal_recipient(u)).collect()
        } else {
            t.roles.clone()
        },
        assignee: holder,
        due_ms: t.due.map(|d| d.timestamp_millis()),
        deadline: match t.deadline {
            super::instance::DeadlineState::OnTime => String::new(),
            d => d.as_str().to_string(),
        },
        opens_ms: t.opens.map(|o| o.timestamp_millis()),
    }
}

fn timer_rows(inst: &Instance) -> Vec<TimerRow> {
    inst.timers
        .iter()
        .map(|(id, t)| TimerRow {
            due_ms: t.at.timestamp_millis(),
            instance: inst.id,
            timer: *id,
            payload: Vec::new(),
        })
        .collect()
}

pub(super) fn build_commit(
    touched: &[(InstanceId, Touched)],
    routes: &crate::outbox::Routes,
) -> Result<Commit, ServiceError> {
    let mut commit = Commit::default();
    for (id, t) in touched {
        crate::outbox::route(
            routes,
            *id,
            &t.after.procedure,
            &t.events,
            &mut commit.outbox,
        );
        let events = t
            .events
            .iter()
            .map(|e| {
                Ok(NewEvent {
                    bytes: serde_json::to_vec(e)?,
                    summary: EventSummary {
                        at_ms: e.at.timestamp_millis(),
                        kind: e.kind.name().to_string(),
                        user: e.by.as_ref().map(|b| b.user.clone()),
                        on_behalf_of: e.by.as_ref().and_then(|b| b.on_behalf_of.clone()),
                    },
                })
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        for e in &t.events {
            let row = |recipient: String, task: Option<&uuid::Uuid>, message: &str| {
                crate::store::NotificationRow {
                    role: recipient,
                    at_ms: e.at.timestamp_millis(),
                    instance: *id,
                    seq: e.seq,
                    task: task.copied(),
                    message: message.to_string(),
                }
            };
            match &e.kind {
                EventKind::Notified {
                    task,
                    role,
                    to_users,
                    message,
                    ..
                } => {
                    if !role.is_empty() {
                        commit
                            .notifications
                            .push(row(role.clone(), task.as_ref(), message));
                    }
                    for u in to_users {
                        commit.notifications.push(row(
                            personal_recipient(u),
                            task.as_ref(),
                            message,
                        ));
                    }
                }
                EventKind::DeadlineReminded {
                    task,
                    to_roles,
                    to_users,
                    message: Some(message),
                    ..
                } => {
                    for r in to_roles {
                        commit
                            .notifications
                            .push(row(r.clone(), Some(task), message));
                    }
                    for u in to_users {
                        commit
                            .notifications
                            .push(row(personal_recipient(u), Some(task), message));
                    }
                }
                _ => {}
            }
        }
        commit.instances.push(InstanceWrite {
            id: *id,
            procedure: t.after.procedure.clone(),
            expected_version: t.before.as_ref().map_or(0, |b| b.seq),
            events,
            snapshot: serde_json::to_vec(&t.after)
                .map_err(|e| ServiceError::Corrupt(e.to_string()))?,
        });
        let before_rows: Vec<TaskRow> = t
            .before
            .as_ref()
            .map(|b| b.tasks.values().map(|task| task_row(b, task)).collect())
            .unwrap_or_default();
        let after_rows: Vec<TaskRow> = t
            .after
            .tasks
            .values()
            .map(|task| task_row(&t.after, task))
            .collect();
        for r in &before_rows {
            if !after_rows.contains(r) {
                commit.closed_tasks.push(r.clone());
            }
        }
        for r in &after_rows {
            if !before_rows.contains(r) {
                commit.open_tasks.push(r.clone());
            }
        }
        // Timers are armed and disarmed in the same commit as the step change that causes
        // them: a step completed before its deadline never fires.
        let before_timers = t.before.as_ref().map(timer_rows).unwrap_or_default();
        let after_timers = timer_rows(&t.after);
        for r in &before_timers {
            if !after_timers.contains(r) {
                commit.disarm_timers.push(r.clone());
            }
        }
        for r in &after_timers {
            if !before_timers.contains(r) {
                commit.arm_timers.push(r.clone());
            }
        }
        let from = t.before.as_ref().map(|b| b.status.as_str().to_string());
        let to = t.after.status.as_str().to_string();
        // A pseudo-instance (the deployments history, procedure `@…`) is no one's work: it
        // stays out of the lists by procedure and status.
        if from.as_deref() != Some(to.as_str()) && !t.after.procedure.starts_with('@') {
            commit.statuses.push(StatusChange {
                instance: *id,
                procedure: t.after.procedure.clone(),
                from,
                to,
            });
        }
    }
    Ok(commit)
}
