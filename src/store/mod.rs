//! The store: where instances, their histories and the indexes the worklists and the
//! scheduler read are kept. One `Store` trait, two implementations: sled (`sled_store.rs`,
//! the embedded default) and memory (`memory.rs`, for tests); PostgreSQL will be a third.
//!
//! The store knows nothing of procedures or CEL: the engine hands it a `Commit` — encoded
//! events and snapshots plus plain index rows — and the store applies it atomically, with a
//! compare-and-swap on each instance's version (invariant 2), and acknowledges only once the
//! commit is on disk (invariant 3). It must not interpret event bytes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod any;
pub mod audit;
pub mod chain;
pub mod copy;
mod group_commit;
pub mod idempotency;
mod layout;
pub mod outbox;
pub mod upgrade;
pub mod worklist;

pub use audit::{AuditEvent, AuditQuery, EventSummary};
pub use chain::{Break, Hash, Verification};
pub use idempotency::{IdempotencyRecord, IdempotencyWrite};
pub use outbox::{Delivery, DeliveryState, HookWrite, OutboxWrite};
pub use worklist::WorklistQuery;
pub mod memory;
mod pg_commit;
mod pg_pool;
mod pg_schema;
pub mod postgres;
mod sled_memtable;
pub mod sled_store;
mod sled_wal;
mod sled_writer;

/// Identifies an instance. UUID v7: time-ordered, so keys sort by creation.
pub type InstanceId = Uuid;
/// Identifies a task (one open step occurrence). UUID v7.
pub type TaskId = Uuid;

/// Everything one command changes, applied all-or-nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commit {
    /// One entry per instance the command touches (a child ending also moves its parent).
    pub instances: Vec<InstanceWrite>,
    /// Tasks that became open (or changed candidates, assignee or due time: close the old
    /// row and open the new one in the same commit).
    pub open_tasks: Vec<TaskRow>,
    /// Tasks that closed (completed, cancelled, reassigned): the row exactly as it was opened,
    /// so the store can find every index key it wrote.
    pub closed_tasks: Vec<TaskRow>,
    /// Instance status changes, for "instances by procedure and status".
    pub statuses: Vec<StatusChange>,
    /// Timers armed by this command.
    pub arm_timers: Vec<TimerRow>,
    /// Timers disarmed by this command (fired, or made moot because their step closed).
    pub disarm_timers: Vec<TimerRow>,
    /// Notifications this command records (a breach's `notify` action), indexed by role.
    pub notifications: Vec<NotificationRow>,
    /// Recurring-start schedules advanced by this command, each with a compare-and-swap on
    /// its run count so a run is started exactly once.
    pub schedules: Vec<ScheduleWrite>,
    /// The record of a command sent with an idempotency key: the commit fails with
    /// `KeyUsed` (writing nothing) if a live record already holds the key.
    pub idempotency: Option<IdempotencyWrite>,
    /// Messages to send because of this commit's events (written pending, in the same
    /// commit, so a message exists exactly when its event does), or the sender's record of
    /// a delivery's fate (`outbox.rs`).
    pub outbox: Vec<OutboxWrite>,
    /// Webhook subscriptions made or removed over the admin API (`outbox.rs`).
    pub hooks: Vec<HookWrite>,
}

/// A notification for everyone holding `role`, or for one person when `role` is `@` and
/// their user id (role ids never start with `@`). Its source of truth is the event in the
/// instance's history (`instance`, `seq`: a breach's `notified`, a `deadline_reminded`);
/// this row is the index people list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRow {
    pub role: String,
    pub at_ms: i64,
    pub instance: InstanceId,
    pub seq: u64,
    pub task: Option<TaskId>,
    pub message: String,
}

/// The new state of one procedure's recurring-start schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleWrite {
    pub procedure: String,
    /// Runs the caller read; if the stored count differs, the whole commit fails with
    /// `StoreError::ScheduleMoved` (0 also means "no schedule stored yet").
    pub expected_runs: u64,
    pub runs: u64,
    /// When the next run is due, Unix milliseconds.
    pub next_ms: i64,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    pub procedure: String,
    pub runs: u64,
    pub next_ms: i64,
}

/// The new state of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceWrite {
    pub id: InstanceId,
    /// The procedure the instance runs, for the audit index.
    pub procedure: String,
    /// The version the engine read; 0 means the instance must not exist yet. If the stored
    /// version differs, the whole commit fails with `StoreError::Conflict`.
    pub expected_version: u64,
    /// Encoded events, appended with sequence numbers `expected_version + 1 ..`. The new
    /// version is `expected_version + events.len()`. The store chains each to the one
    /// before it (`chain.rs`) inside the transaction, so no caller can break a chain.
    pub events: Vec<NewEvent>,
    /// Encoded snapshot of the instance after these events.
    pub snapshot: Vec<u8>,
}

/// One event to append: its encoded bytes and what the audit index needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub bytes: Vec<u8>,
    pub summary: EventSummary,
}

/// One stored event: its position, its link in the instance's hash chain and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub hash: Hash,
    pub bytes: Vec<u8>,
}

/// One open task, as the worklist indexes see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    pub task: TaskId,
    pub instance: InstanceId,
    pub procedure: String,
    pub step: String,
    /// Roles whose holders are offered the task; a task offered to a list of people has
    /// each person's key (`@user`) here instead.
    pub roles: Vec<String>,
    /// The one person it is assigned to (or claimed by), if any.
    pub assignee: Option<String>,
    /// Due time, Unix milliseconds.
    pub due_ms: Option<i64>,
    /// What the deadline's timers have done so far, in the engine's words (`reminded`,
    /// `breached`, `escalated`); empty while nothing has fired.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deadline: String,
    /// The earliest time the task may be completed, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens_ms: Option<i64>,
}

/// An instance entering or leaving a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub instance: InstanceId,
    pub procedure: String,
    /// `None` for a new instance.
    pub from: Option<String>,
    pub to: String,
}

/// A durable timer: at `due_ms`, the scheduler sends the instance a fire-timer command
/// carrying `payload` (opaque to the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRow {
    pub due_ms: i64,
    pub instance: InstanceId,
    /// Distinguishes several timers of one instance at the same instant.
    pub timer: Uuid,
    pub payload: Vec<u8>,
}

/// A stored instance: its version (= number of events), the hash of its last event and
/// its encoded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    pub version: u64,
    /// The chain head: the link of event `version` (`chain::GENESIS` before any event).
    pub head: Hash,
    pub snapshot: Vec<u8>,
}

/// A page of results and the cursor for the next page (`None` at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Vec<u8>>,
}

/// Every tree of a store as (name, [(key, value)]), trees in name order: see `Store::dump`.
pub type Dump = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

/// A stored procedure version: the registry pins instances to (id, version, hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcedureRecord {
    pub id: String,
    pub version: u32,
    /// SHA-256 of the file's bytes, hex.
    pub hash: String,
    /// The file's text, so an instance can always be replayed on the exact definition.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else changed the instance first (or it already exists / does not exist).
    #[error(
        "instance {instance} was changed concurrently (expected version {expected}, found {found})"
    )]
    Conflict {
        instance: InstanceId,
        expected: u64,
        found: u64,
    },
    /// Someone else advanced the schedule first (or it was created twice).
    #[error("the schedule of {procedure} was advanced concurrently")]
    ScheduleMoved { procedure: String },
    /// A different file was registered under the same procedure id and version.
    #[error("procedure {id} version {version} is already registered with different content")]
    ProcedureChanged { id: String, version: u32 },
    /// The data directory holds something this version cannot read.
    #[error("the store is damaged or from an incompatible version: {0}")]
    Corrupt(String),
    #[error("storage failure: {0}")]
    Io(String),
    /// The database could not be reached (or the connection broke mid-request): nothing
    /// was acknowledged, and trying again later may succeed.
    #[error("the database is unreachable: {0}")]
    Unreachable(String),
    /// A live idempotency record already holds the commit's key: the command was done
    /// before (or is being done by a concurrent retry); nothing was written.
    #[error("the idempotency key was already used")]
    KeyUsed,
    /// The request cannot be stored as given (an id containing the reserved 0x00 byte, a
    /// malformed cursor, the same instance twice in one commit); nothing was written.
    #[error("invalid store request: {0}")]
    Invalid(String),
}

/// The operations the engine needs. Async so a network store fits behind it; the sled
/// implementation runs its blocking work on threads it owns.
pub trait Store: Send + Sync + 'static {
    /// Applies `commit` atomically and returns once it is durable. On `Conflict` nothing
    /// was written.
    fn commit(
        &self,
        commit: Commit,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    fn instance(&self, id: InstanceId) -> Result<Option<StoredInstance>, StoreError>;

    /// Events of an instance with sequence numbers `from_seq ..` (1-based), at most `limit`.
    fn history(
        &self,
        id: InstanceId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// A page of events across instances matching `query`, oldest first, served from the
    /// audit index (`audit.rs`). A page may hold fewer than `limit` events and still have
    /// a `next`: each page reads a bounded stretch of the index.
    fn audit(
        &self,
        query: &AuditQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError>;

    /// Checks every instance's hash chain; `progress` gets the events checked so far.
    fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<Verification, StoreError>;

    /// Checks one instance's chain; `None` when there is no such instance.
    fn verify_instance(&self, id: InstanceId) -> Result<Option<Verification>, StoreError>;

    /// An open task's row.
    fn task(&self, id: TaskId) -> Result<Option<TaskRow>, StoreError>;

    /// The instance a task belongs to, whether it is still open or was closed.
    fn task_instance(&self, id: TaskId) -> Result<Option<InstanceId>, StoreError>;

    /// Open tasks offered to any of `roles` or assigned to `user`, without duplicates.
    fn tasks_for(&self, roles: &[String], user: &str) -> Result<Vec<TaskRow>, StoreError>;

    /// A page of the worklist `query` selects, most urgent first (tasks without a due time
    /// last), after `cursor`. Its cost is bounded by the page size, the number of streams
    /// and `worklist::PAGE_BUDGET`, not by how many tasks are open: a page may hold fewer
    /// than `limit` tasks and still have a `next`.
    fn worklist(
        &self,
        query: &WorklistQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<TaskRow>, StoreError>;

    /// The live or stale record stored under `caller`'s idempotency `key`, if any.
    fn idempotency(&self, caller: &str, key: &str)
        -> Result<Option<IdempotencyRecord>, StoreError>;

    /// How many open tasks are offered to `role`, from the index alone (no task row is
    /// read), for the open-task gauge a scrape computes.
    fn open_task_count(&self, role: &str) -> Result<usize, StoreError>;

    /// Instances of `procedure` (all if `None`) in `status` (any if `None`), in creation
    /// order, after `cursor`.
    fn instances(
        &self,
        procedure: Option<&str>,
        status: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<InstanceId>, StoreError>;

    /// Timers due at or before `now_ms`, earliest first, at most `limit`.
    fn due_timers(&self, now_ms: i64, limit: usize) -> Result<Vec<TimerRow>, StoreError>;

    /// The earliest armed timer, if any (the scheduler sleeps until it).
    fn next_timer(&self) -> Result<Option<TimerRow>, StoreError>;

    /// Due timers this process may fire now: on a store shared by several processes, those
    /// no other holds a claim on, claimed for this one for a while (a process that dies
    /// holding a claim only delays its timers). The firing commit still decides: a timer
    /// already fired is gone from the store. One process alone: `due_timers`.
    fn claim_due_timers(&self, now_ms: i64, limit: usize) -> Result<Vec<TimerRow>, StoreError> {
        self.due_timers(now_ms, limit)
    }

    /// Woken when another process sharing the store arms a timer, so the scheduler looks
    /// again at once instead of at its next poll; `None` where no other process can.
    fn timer_wakeups(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// Whether this process holds the lease `name` (taken now if free or run out) for the
    /// next `seconds`: on a store shared by several processes, one of them does the work the
    /// lease names (the outbox's sending), and another takes over once a holder that died
    /// lets it run out. One process alone always holds it.
    fn hold_lease(&self, name: &str, seconds: f64) -> Result<bool, StoreError> {
        let _ = (name, seconds);
        Ok(true)
    }

    /// Gives up the lease `name` if this process holds it (a graceful stop), so another
    /// process takes it at once instead of after it runs out.
    fn release_lease(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        Ok(())
    }

    /// Registers a procedure version. Registering the same (id, version, hash) again is a
    /// no-op; the same (id, version) with another hash is `ProcedureChanged`. Durable on return.
    fn put_procedure(
        &self,
        record: ProcedureRecord,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    fn procedure(&self, id: &str, version: u32) -> Result<Option<ProcedureRecord>, StoreError>;

    /// Notifications for any of `roles`, newest first, at most `limit`.
    fn notifications_for(
        &self,
        roles: &[String],
        limit: usize,
    ) -> Result<Vec<NotificationRow>, StoreError>;

    /// The recurring-start schedule of a procedure, if one was ever armed.
    fn schedule(&self, procedure: &str) -> Result<Option<ScheduleRow>, StoreError>;

    /// Every registered version of every procedure.
    fn procedures(&self) -> Result<Vec<ProcedureRecord>, StoreError>;

    /// A page of the outbox's deliveries in `state` (`outbox.rs`): pending and dead ones by
    /// destination (only `destination`'s when given) and instance, sent ones newest first.
    fn deliveries(
        &self,
        state: DeliveryState,
        destination: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<Delivery>, StoreError>;

    /// The destinations with pending (or dead) deliveries.
    fn delivery_destinations(&self, state: DeliveryState) -> Result<Vec<String>, StoreError>;

    /// One pending or dead delivery.
    fn delivery(
        &self,
        state: DeliveryState,
        instance: InstanceId,
        seq: u64,
        destination: &str,
    ) -> Result<Option<Delivery>, StoreError>;

    /// The records of the webhook subscriptions made over the admin API, by id.
    fn stored_hooks(&self) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Sent deliveries recorded before `before_ms`, oldest first, at most `limit`.
    fn sent_before(&self, before_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError>;

    /// Every key and value of every tree, for tests that compare the whole store
    /// before and after a rejected command.
    fn dump(&self) -> Result<Dump, StoreError>;
}
