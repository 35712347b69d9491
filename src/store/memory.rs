//! An in-memory `Store` for tests of the engine and the HTTP layer: same semantics and the
//! same key layout as `SledStore` (both go through `layout.rs`), so `dump()`s compare, but
//! nothing touches a disk and "durable" means "applied". It must not be used where
//! invariant 3 matters: everything is lost when the process ends.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::layout::{self, Kv, ProcedureOutcome, Tree, Visit};
use super::{
    AuditEvent, AuditQuery, Commit, Dump, InstanceId, Page, ProcedureRecord, Store, StoreError,
    StoredEvent, StoredInstance, TaskId, TaskRow, TimerRow, Verification,
};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// All trees behind one lock, so a commit is atomic by construction.
pub struct MemoryStore {
    trees: Mutex<Vec<Map>>,
}

struct Trees<'a>(&'a [Map]);

impl MemoryStore {
    pub fn new() -> Self {
        let mut trees = vec![Map::new(); Tree::ALL.len()];
        trees[Tree::Meta.index()]
            .insert(layout::FORMAT_KEY.to_vec(), layout::format_value().to_vec());
        Self {
            trees: Mutex::new(trees),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Map>> {
        // Writers never panic half-way through a commit (every check runs before the first
        // write), so a poisoned lock still guards consistent data.
        self.trees.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Trees<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.lock();
        f(&Trees(&guard))
    }

    fn apply(&self, commit: Commit) -> Result<(), StoreError> {
        let plan = layout::plan_commit(commit)?;
        let mut trees = self.lock();
        let ops = layout::resolve(plan, &mut |tree, key| {
            Ok(trees[tree.index()].get(key).cloned())
        })?;
        for op in ops {
            let tree = &mut trees[op.tree.index()];
            match op.value {
                Some(v) => tree.insert(op.key, v),
                None => tree.remove(&op.key),
            };
        }
        Ok(())
    }

    fn register(&self, record: ProcedureRecord) -> Result<(), StoreError> {
        let key = layout::procedure_key(&record.id, record.version)?;
        let encoded = layout::encode_procedure(&record)?;
        let mut trees = self.lock();
        let tree = &mut trees[Tree::Procedures.index()];
        if layout::procedure_outcome(&record, tree.get(&key).map(Vec::as_slice))?
            == ProcedureOutcome::Insert
        {
            tree.insert(key, encoded);
        }
        Ok(())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Kv for Trees<'_> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0[tree.index()].get(key).cloned())
    }

    fn scan(
        &self,
        tree: Tree,
        from: Bound<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        for (k, v) in self.0[tree.index()].range::<[u8], _>((from, Bound::Unbounded)) {
            if !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }

    fn scan_back(
        &self,
        tree: Tree,
        before: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let range = (Bound::Unbounded, Bound::Excluded(before));
        for (k, v) in self.0[tree.index()].range::<[u8], _>(range).rev() {
            if !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }
}

impl super::copy::Raw for MemoryStore {
    fn page(
        &self,
        tree: Tree,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<super::copy::Row>, StoreError> {
        self.read(|t| super::copy::page_of(t, tree, after.as_deref(), limit))
    }

    fn put(&self, tree: Tree, rows: Vec<super::copy::Row>) -> Result<(), StoreError> {
        let mut trees = self.lock();
        trees[tree.index()].extend(rows);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn clear(&self, tree: Tree) -> Result<(), StoreError> {
        self.lock()[tree.index()].clear();
        Ok(())
    }

    fn clear_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<u64, StoreError> {
        let mut trees = self.lock();
        let rows = &mut trees[tree.index()];
        let before = rows.len();
        rows.retain(|k, _| !k.starts_with(prefix));
        Ok((before - rows.len()) as u64)
    }

    fn format(&self) -> u32 {
        self.read(|t| {
            Ok(t.0[Tree::Meta.index()]
                .get(layout::FORMAT_KEY)
                .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                .map_or(0, u32::from_be_bytes))
        })
        .unwrap_or(0)
    }
}

impl Store for MemoryStore {
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.apply(commit)
    }

    fn instance(&self, id: InstanceId) -> Result<Option<StoredInstance>, StoreError> {
        self.read(|t| layout::instance(t, id))
    }

    fn history(
        &self,
        id: InstanceId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(|t| layout::history(t, id, from_seq, limit))
    }

    fn audit(
        &self,
        query: &AuditQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError> {
        self.read(|t| super::audit::query(t, query, cursor, limit))
    }

    fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<Verification, StoreError> {
        self.read(|t| super::chain::verify_all(t, progress))
    }

    fn verify_instance(&self, id: InstanceId) -> Result<Option<Verification>, StoreError> {
        self.read(|t| super::chain::verify_one(t, id))
    }

    fn task(&self, id: TaskId) -> Result<Option<TaskRow>, StoreError> {
        self.read(|t| layout::task(t, id))
    }

    fn task_instance(&self, id: TaskId) -> Result<Option<InstanceId>, StoreError> {
        self.read(|t| layout::task_instance(t, id))
    }

    fn tasks_for(&self, roles: &[String], user: &str) -> Result<Vec<TaskRow>, StoreError> {
        self.read(|t| super::worklist::all(t, roles, user))
    }

    fn worklist(
        &self,
        query: &super::WorklistQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<TaskRow>, StoreError> {
        self.read(|t| super::worklist::page(t, query, cursor, limit))
    }

    fn idempotency(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<super::IdempotencyRecord>, StoreError> {
        self.read(|t| super::idempotency::read(t, caller, key))
    }

    fn open_task_count(&self, role: &str) -> Result<usize, StoreError> {
        self.read(|t| super::worklist::open_count(t, role))
    }

    fn instances(
        &self,
        procedure: Option<&str>,
        status: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<InstanceId>, StoreError> {
        self.read(|t| layout::instances(t, procedure, status, cursor, limit))
    }

    fn due_timers(&self, now_ms: i64, limit: usize) -> Result<Vec<TimerRow>, StoreError> {
        self.read(|t| layout::due_timers(t, now_ms, limit))
    }

    fn next_timer(&self) -> Result<Option<TimerRow>, StoreError> {
        self.read(|t| layout::next_timer(t))
    }

    async fn put_procedure(&self, record: ProcedureRecord) -> Result<(), StoreError> {
        self.register(record)
    }

    fn procedure(&self, id: &str, version: u32) -> Result<Option<ProcedureRecord>, StoreError> {
        self.read(|t| layout::procedure(t, id, version))
    }

    fn procedures(&self) -> Result<Vec<ProcedureRecord>, StoreError> {
        self.read(|t| layout::procedures(t))
    }

    fn notifications_for(
        &self,
        roles: &[String],
        limit: usize,
    ) -> Result<Vec<super::NotificationRow>, StoreError> {
        self.read(|t| layout::notifications_for(t, roles, limit))
    }

    fn schedule(&self, procedure: &str) -> Result<Option<super::ScheduleRow>, StoreError> {
        self.read(|t| layout::schedule(t, procedure))
    }

    fn deliveries(
        &self,
        state: super::DeliveryState,
        destination: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<super::Page<super::Delivery>, StoreError> {
        self.read(|t| super::outbox::page(t, state, destination, cursor, limit))
    }

    fn stored_hooks(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(|t| super::outbox::hooks(t))
    }

    fn delivery_destinations(
        &self,
        state: super::DeliveryState,
    ) -> Result<Vec<String>, StoreError> {
        self.read(|t| super::outbox::destinations(t, state))
    }

    fn delivery(
        &self,
        state: super::DeliveryState,
        instance: super::InstanceId,
        seq: u64,
        destination: &str,
    ) -> Result<Option<super::Delivery>, StoreError> {
        self.read(|t| super::outbox::get(t, state, instance, seq, destination))
    }

    fn sent_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, StoreError> {
        self.read(|t| super::outbox::sent_before(t, before_ms, limit))
    }

    fn dump(&self) -> Result<Dump, StoreError> {
        self.read(|t| layout::dump(t))
    }
}
