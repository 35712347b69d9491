//! The store a process runs on, chosen at start: sled in a data directory (the default,
//! nothing to install) or PostgreSQL (`--store postgres://…`, several nodes on one
//! database). The server and the command line hold an `Engine<AnyStore>`, so one build
//! serves either; each call is a match and a forward, nothing more. This module must not
//! add behaviour of its own: the contract is `Store`'s.

use super::memory::MemoryStore;
use super::postgres::PgStore;
use super::sled_store::SledStore;
use super::{
    AuditEvent, AuditQuery, Commit, Dump, InstanceId, NotificationRow, Page, ProcedureRecord,
    ScheduleRow, Store, StoreError, StoredEvent, StoredInstance, TaskId, TaskRow, TimerRow,
    Verification,
};

pub enum AnyStore {
    Sled(SledStore),
    Postgres(PgStore),
    /// For tests that run one body on whichever store an environment variable names.
    Memory(MemoryStore),
}

impl From<SledStore> for AnyStore {
    fn from(s: SledStore) -> Self {
        AnyStore::Sled(s)
    }
}

impl From<PgStore> for AnyStore {
    fn from(s: PgStore) -> Self {
        AnyStore::Postgres(s)
    }
}

macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sled($s) => $call,
            AnyStore::Postgres($s) => $call,
            AnyStore::Memory($s) => $call,
        }
    };
}

impl Store for AnyStore {
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        forward!(self, s => s.commit(commit).await)
    }

    fn instance(&self, id: InstanceId) -> Result<Option<StoredInstance>, StoreError> {
        forward!(self, s => s.instance(id))
    }

    fn history(
        &self,
        id: InstanceId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        forward!(self, s => s.history(id, from_seq, limit))
    }

    fn audit(
        &self,
        query: &AuditQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError> {
        forward!(self, s => s.audit(query, cursor, limit))
    }

    fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<Verification, StoreError> {
        forward!(self, s => s.verify(progress))
    }

    fn verify_instance(&self, id: InstanceId) -> Result<Option<Verification>, StoreError> {
        forward!(self, s => s.verify_instance(id))
    }

    fn task(&self, id: TaskId) -> Result<Option<TaskRow>, StoreError> {
        forward!(self, s => s.task(id))
    }

    fn task_instance(&self, id: TaskId) -> Result<Option<InstanceId>, StoreError> {
        forward!(self, s => s.task_instance(id))
    }

    fn tasks_for(&self, roles: &[String], user: &str) -> Result<Vec<TaskRow>, StoreError> {
        forward!(self, s => s.tasks_for(roles, user))
    }

    fn worklist(
        &self,
        query: &super::WorklistQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<TaskRow>, StoreError> {
        forward!(self, s => s.worklist(query, cursor, limit))
    }

    fn idempotency(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<super::IdempotencyRecord>, StoreError> {
        forward!(self, s => s.idempotency(caller, key))
    }

    fn open_task_count(&self, role: &str) -> Result<usize, StoreError> {
        forward!(self, s => s.open_task_count(role))
    }

    fn instances(
        &self,
        procedure: Option<&str>,
        status: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<InstanceId>, StoreError> {
        forward!(self, s => s.instances(procedure, status, cursor, limit))
    }

    fn due_timers(&self, now_ms: i64, limit: usize) -> Result<Vec<TimerRow>, StoreError> {
        forward!(self, s => s.due_timers(now_ms, limit))
    }

    fn next_timer(&self) -> Result<Option<TimerRow>, StoreError> {
        forward!(self, s => s.next_timer())
    }

    fn claim_due_timers(&self, now_ms: i64, limit: usize) -> Result<Vec<TimerRow>, StoreError> {
        forward!(self, s => s.claim_due_timers(now_ms, limit))
    }

    fn hold_lease(&self, name: &str, seconds: f64) -> Result<bool, StoreError> {
        forward!(self, s => s.hold_lease(name, seconds))
    }

    fn release_lease(&self, name: &str) -> Result<(), StoreError> {
        forward!(self, s => s.release_lease(name))
    }

    fn timer_wakeups(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        forward!(self, s => s.timer_wakeups())
    }

    async fn put_procedure(&self, record: ProcedureRecord) -> Result<(), StoreError> {
        forward!(self, s => s.put_procedure(record).await)
    }

    fn procedure(&self, id: &str, version: u32) -> Result<Option<ProcedureRecord>, StoreError> {
        forward!(self, s => s.procedure(id, version))
    }

    fn notifications_for(
        &self,
        roles: &[String],
        limit: usize,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        forward!(self, s => s.notifications_for(roles, limit))
    }

    fn deliveries(
        &self,
        state: super::DeliveryState,
        destination: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<super::Page<super::Delivery>, StoreError> {
        forward!(self, s => s.deliveries(state, destination, cursor, limit))
    }

    fn stored_hooks(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        forward!(self, s => s.stored_hooks())
    }

    fn delivery_destinations(
        &self,
        state: super::DeliveryState,
    ) -> Result<Vec<String>, StoreError> {
        forward!(self, s => s.delivery_destinations(state))
    }

    fn delivery(
        &self,
        state: super::DeliveryState,
        instance: super::InstanceId,
        seq: u64,
        destination: &str,
    ) -> Result<Option<super::Delivery>, StoreError> {
        forward!(self, s => s.delivery(state, instance, seq, destination))
    }

    fn sent_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, StoreError> {
        forward!(self, s => s.sent_before(before_ms, limit))
    }

    fn schedule(&self, procedure: &str) -> Result<Option<ScheduleRow>, StoreError> {
        forward!(self, s => s.schedule(procedure))
    }

    fn procedures(&self) -> Result<Vec<ProcedureRecord>, StoreError> {
        forward!(self, s => s.procedures())
    }

    fn dump(&self) -> Result<Dump, StoreError> {
        forward!(self, s => s.dump())
    }
}
