//! The PostgreSQL store: the same key layout as sled and memory (`layout.rs`), kept in one
//! table `kv (tree, key, value)` of a schema of the caller's choosing, so the three stores
//! agree byte for byte (`dump()`s compare) and every query is written once.
//!
//! Each `commit` is one database transaction: the instances it appends to are locked with
//! transaction-level advisory locks (taken in id order, so two commits never wait on each
//! other in a cycle), their stored versions compared, the hash chain continued from the
//! stored head, and every write sent as one upsert and one delete. It returns after
//! PostgreSQL committed with `synchronous_commit = on` (set on every connection, whatever
//! the server's default), so an acknowledged command is on the primary's disk.
//!
//! The `postgres` client blocks, and must not block inside a Tokio runtime, so connections
//! live on threads of their own (`pool.rs`); a connection that broke is opened again for the
//! next request. This module must not interpret event or snapshot bytes (that is
//! `layout.rs`), and must never log a connection string: it may hold a password.

use std::ops::Bound;

use uuid::Uuid;

use super::layout::{self, Kv, ProcedureOutcome, Tree, Visit};
use super::pg_pool::{Conn, PgConfig, Pool, Stmts};
use super::{
    AuditEvent, AuditQuery, Commit, Dump, InstanceId, Page, ProcedureRecord, Store, StoreError,
    StoredEvent, StoredInstance, TaskId, TaskRow, TimerRow, Verification,
};

/// Rows read per round trip of a scan; grows while the caller keeps reading.
const FIRST_BATCH: i64 = 32;
const MAX_BATCH: i64 = 1024;

/// A `Store` on PostgreSQL.
pub struct PgStore {
    pool: Pool,
    /// This store's name in timer claims (one per process: a node).
    node: String,
    /// The channel commits that arm timers notify.
    channel: String,
    /// Tells the other nodes when this one armed timers; started at the first.
    announcer: std::sync::OnceLock<super::pg_pool::Announcer>,
    /// Woken when any node arms a timer; listening starts when first asked.
    listener: std::sync::OnceLock<std::sync::Arc<tokio::sync::Notify>>,
    /// Set for a store made by `temporary`: its schema is dropped with it.
    drop_schema: bool,
    /// The store format found when it was opened.
    format: u32,
}

impl PgStore {
    /// Opens the store at `url` (`postgres://user@host/db`, or `host=… dbname=…`) in
    /// `schema`, creating or upgrading its tables; a database holding a newer schema than
    /// this build knows is refused.
    pub fn open(url: &str, schema: &str, connections: usize) -> Result<Self, StoreError> {
        Self::open_with(url, schema, connections, false)
    }

    /// Opens a store of the format `sopflow store upgrade` rewrites too (for that command
    /// only: nothing else may run on an older format).
    pub fn open_upgrading(url: &str, schema: &str) -> Result<Self, StoreError> {
        Self::open_with(url, schema, 2, true)
    }

    fn open_with(
        url: &str,
        schema: &str,
        connections: usize,
        upgrading: bool,
    ) -> Result<Self, StoreError> {
        let config = PgConfig::new(url, schema)?;
        let pool = Pool::start(config, connections.max(1))?;
        let format = pool.run(true, move |c| {
            super::pg_schema::migrate(&mut c.client, upgrading)
        })?;
        Ok(Self {
            format,
            channel: super::pg_commit::channel(schema),
            node: Uuid::now_v7().to_string(),
            listener: std::sync::OnceLock::new(),
            announcer: std::sync::OnceLock::new(),
            pool,
            drop_schema: false,
        })
    }

    /// A store in a fresh schema of the database at `url`, dropped when the store is, for
    /// tests.
    pub fn temporary(url: &str) -> Result<Self, StoreError> {
        let schema = format!("sopflow_t_{}", Uuid::now_v7().simple());
        let mut s = Self::open(url, &schema, 4)?;
        s.drop_schema = true;
        Ok(s)
    }

    /// The schema its tables are in (a second store may open the same one: two nodes).
    pub fn schema(&self) -> &str {
        self.pool.schema()
    }

    /// Where it is, without any password, for messages.
    pub fn describe(&self) -> String {
        self.pool.describe()
    }

    /// A read, tried once more on a fresh connection when the first found the connection
    /// broken (a restarted database): reads change nothing, so trying again is safe.
    fn read<T: Send + 'static>(
        &self,
        f: impl Fn(&dyn Kv) -> Result<T, StoreError> + Send + Sync + 'static,
    ) -> Result<T, StoreError> {
        let f = std::sync::Arc::new(f);
        let again = f.clone();
        match self.pool.run(false, move |c| {
            let (c, st) = c.parts()?;
            f(&ClientKv(std::cell::RefCell::new(c), st))
        }) {
            // On a connection checked first: the other idle ones may be broken too.
            Err(StoreError::Unreachable(_)) => self.pool.run(true, move |c| {
                let (c, st) = c.parts()?;
                again(&ClientKv(std::cell::RefCell::new(c), st))
            }),
            r => r,
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if self.drop_schema {
            let schema = self.pool.schema().to_string();
            // Best effort: a test's leftover schema is harmless, a panic in drop is not.
            let _ = self.pool.run(false, move |c| {
                c.client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .map_err(pg)
            });
        }
    }
}

pub(crate) fn pg(e: postgres::Error) -> StoreError {
    // A closed connection, one the server is shutting down (57P0x) or a connection
    // exception (08xxx): the database is away, not the request wrong.
    // Turning values into or out of rows fails the same way every time: not the database
    // being away, so not worth a retry.
    let conversion = e.to_string().contains("serializ");
    let away = e.is_closed()
        || (e.as_db_error().is_none() && !conversion)
        || e.code()
            .is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"));
    match e.as_db_error() {
        _ if away => StoreError::Unreachable(format!("PostgreSQL: {e}")),
        Some(d) => StoreError::Io(format!("PostgreSQL: {}", d.message())),
        None => StoreError::Io(format!("PostgreSQL: {e}")),
    }
}

pub(super) fn tree_code(t: Tree) -> i16 {
    i16::try_from(t.index()).unwrap_or(i16::MAX)
}

/// Reads on one connection, inside or outside a transaction, with its prepared statements.
pub(super) struct ClientKv<'c, C: postgres::GenericClient>(
    std::cell::RefCell<&'c mut C>,
    &'c Stmts,
);

impl<'c, C: postgres::GenericClient> ClientKv<'c, C> {
    pub(super) fn new(c: &'c mut C, st: &'c Stmts) -> Self {
        ClientKv(std::cell::RefCell::new(c), st)
    }
}

impl<C: postgres::GenericClient> Kv for ClientKv<'_, C> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.0.borrow_mut();
        let row = c
            .query_opt(&self.1.get, &[&tree_code(tree), &key])
            .map_err(pg)?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn scan(
        &self,
        tree: Tree,
        from: Bound<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let code = tree_code(tree);
        let (mut key, mut inclusive) = match from {
            Bound::Included(k) => (k.to_vec(), true),
            Bound::Excluded(k) => (k.to_vec(), false),
            Bound::Unbounded => (Vec::new(), true),
        };
        let mut batch = FIRST_BATCH;
        loop {
            let stmt = if inclusive {
                &self.1.scan_from
            } else {
                &self.1.scan_after
            };
            let rows = self
                .0
                .borrow_mut()
                .query(stmt, &[&code, &key, &batch])
                .map_err(pg)?;
            let n = rows.len();
            for r in &rows {
                let k: &[u8] = r.get(0);
                let v: &[u8] = r.get(1);
                if !visit(k, v)? {
                    return Ok(());
                }
            }
            match rows.last() {
                Some(last) if i64::try_from(n).unwrap_or(0) == batch => {
                    key = last.get::<_, Vec<u8>>(0);
                    inclusive = false;
                    batch = (batch * 4).min(MAX_BATCH);
                }
                _ => return Ok(()),
            }
        }
    }

    fn scan_back(
        &self,
        tree: Tree,
        before: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let code = tree_code(tree);
        let mut key = before.to_vec();
        let mut batch = FIRST_BATCH;
        loop {
            let rows = self
                .0
                .borrow_mut()
                .query(&self.1.scan_before, &[&code, &key, &batch])
                .map_err(pg)?;
            let n = rows.len();
            for r in &rows {
                if !visit(r.get(0), r.get(1))? {
                    return Ok(());
                }
            }
            match rows.last() {
                Some(last) if i64::try_from(n).unwrap_or(0) == batch => {
                    key = last.get::<_, Vec<u8>>(0);
                    batch = (batch * 4).min(MAX_BATCH);
                }
                _ => return Ok(()),
            }
        }
    }
}

fn register(conn: &mut Conn, record: ProcedureRecord) -> Result<(), StoreError> {
    let key = layout::procedure_key(&record.id, record.version)?;
    let encoded = layout::encode_procedure(&record)?;
    let (c, st) = conn.parts()?;
    let mut tx = c.transaction().map_err(pg)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&super::pg_commit::name_lock(2, &record.id)],
    )
    .map_err(pg)?;
    let stored = ClientKv(std::cell::RefCell::new(&mut tx), st).get(Tree::Procedures, &key)?;
    if layout::procedure_outcome(&record, stored.as_deref())? == ProcedureOutcome::Insert {
        tx.execute(
            "INSERT INTO kv (tree, key, value) VALUES ($1, $2, $3)",
            &[&tree_code(Tree::Procedures), &key, &encoded],
        )
        .map_err(pg)?;
    }
    tx.commit().map_err(pg)
}

/// For `sopflow store copy`: rows read in key order and written as they are.
impl super::copy::Raw for PgStore {
    fn page(
        &self,
        tree: Tree,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<super::copy::Row>, StoreError> {
        self.read(move |kv| super::copy::page_of(kv, tree, after.as_deref(), limit))
    }

    fn put(&self, tree: Tree, rows: Vec<super::copy::Row>) -> Result<(), StoreError> {
        let ops = rows
            .into_iter()
            .map(|(key, value)| layout::Op {
                tree,
                key,
                value: Some(value),
            })
            .collect();
        self.pool.run(true, move |conn| {
            let (c, st) = conn.parts()?;
            let mut tx = c.transaction().map_err(pg)?;
            super::pg_commit::Writes::new(ops).apply(&mut tx, st)?;
            tx.commit().map_err(pg)
        })
    }

    fn sync(&self) -> Result<(), StoreError> {
        // Each batch committed with synchronous_commit on.
        Ok(())
    }

    fn clear(&self, tree: Tree) -> Result<(), StoreError> {
        let code = tree_code(tree);
        self.pool.run(true, move |conn| {
            let (c, _) = conn.parts()?;
            c.execute("DELETE FROM kv WHERE tree = $1", &[&code])
                .map(|_| ())
                .map_err(pg)
        })
    }

    fn clear_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<u64, StoreError> {
        let code = tree_code(tree);
        let from = prefix.to_vec();
        // A key range rather than a pattern, so the primary key's index finds the rows: the
        // first key after every key with the prefix is the prefix with its last byte below
        // 0xff raised by one (no such byte: the prefix runs to the end of the tree).
        let mut to = from.clone();
        while to.last() == Some(&0xff) {
            to.pop();
        }
        let to = match to.last_mut() {
            Some(b) => {
                *b += 1;
                Some(to)
            }
            None => None,
        };
        self.pool.run(true, move |conn| {
            let (c, _) = conn.parts()?;
            match &to {
                Some(to) => c.execute(
                    "DELETE FROM kv WHERE tree = $1 AND key >= $2 AND key < $3",
                    &[&code, &from, to],
                ),
                None => c.execute(
                    "DELETE FROM kv WHERE tree = $1 AND key >= $2",
                    &[&code, &from],
                ),
            }
            .map_err(pg)
        })
    }

    fn format(&self) -> u32 {
        self.format
    }
}

impl Store for PgStore {
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let plan = layout::plan_commit(commit)?;
        // One transaction per commit: PostgreSQL groups the WAL flushes of concurrent
        // transactions itself, so the batch this store sees is always one.
        metrics::histogram!("sopflow_commit_batch_size").record(1.0);
        let armed = self
            .pool
            .run_async(move |c| super::pg_commit::commit(c, plan))
            .await?;
        if armed {
            self.announcer
                .get_or_init(|| self.pool.announcer(&self.channel))
                .announce();
        }
        Ok(())
    }

    fn instance(&self, id: InstanceId) -> Result<Option<StoredInstance>, StoreError> {
        self.read(move |t| layout::instance(t, id))
    }

    fn history(
        &self,
        id: InstanceId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |t| layout::history(t, id, from_seq, limit))
    }

    fn audit(
        &self,
        query: &AuditQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let query = query.clone();
        let cursor = cursor.map(<[u8]>::to_vec);
        self.read(move |t| super::audit::query(t, &query, cursor.as_deref(), limit))
    }

    fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<Verification, StoreError> {
        // Checked on a connection of its own thread; the progress is reported at the end.
        let v = self.read(move |t| super::chain::verify_all(t, &mut |_| {}))?;
        progress(v.events);
        Ok(v)
    }

    fn verify_instance(&self, id: InstanceId) -> Result<Option<Verification>, StoreError> {
        self.read(move |t| super::chain::verify_one(t, id))
    }

    fn task(&self, id: TaskId) -> Result<Option<TaskRow>, StoreError> {
        self.read(move |t| layout::task(t, id))
    }

    fn task_instance(&self, id: TaskId) -> Result<Option<InstanceId>, StoreError> {
        self.read(move |t| layout::task_instance(t, id))
    }

    fn tasks_for(&self, roles: &[String], user: &str) -> Result<Vec<TaskRow>, StoreError> {
        let (roles, user) = (roles.to_vec(), user.to_string());
        self.read(move |t| super::worklist::all(t, &roles, &user))
    }

    fn worklist(
        &self,
        query: &super::WorklistQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<TaskRow>, StoreError> {
        let (query, cursor) = (query.clone(), cursor.map(<[u8]>::to_vec));
        self.read(move |t| super::worklist::page(t, &query, cursor.as_deref(), limit))
    }

    fn idempotency(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<super::IdempotencyRecord>, StoreError> {
        let (caller, key) = (caller.to_string(), key.to_string());
        self.read(move |t| super::idempotency::read(t, &caller, &key))
    }

    fn open_task_count(&self, role: &str) -> Result<usize, StoreError> {
        let role = role.to_string();
        self.read(move |t| super::worklist::open_count(t, &role))
    }

    fn instances(
        &self,
        procedure: Option<&str>,
        status: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<InstanceId>, StoreError> {
        let procedure = procedure.map(str::to_string);
        let status = status.map(str::to_string);
        let cursor = cursor.map(<[u8]>::to_vec);
        self.read(move |t| {
            layout::instances(
                t,
                procedure.as_deref(),
                status.as_deref(),
                cursor.as_deref(),
                limit,
            )
        })
    }

    fn due_timers(&self, now_ms: i64, limit: usize) -> Result<Vec<TimerRow>, StoreError> {
        self.read(move |t| layout::due_timers(t, now_ms, limit))
    }

    fn next_timer(&self) -> Result<Option<TimerRow>, StoreError> {
        self.read(|t| layout::next_timer(t))
    }

    fn claim_due_timers(&self, now_ms: i64, limit: usize) -> Result<Vec<TimerRow>, StoreError> {
        let node = self.node.clone();
        self.pool.run(true, move |c| {
            super::pg_commit::claim_due(c, &node, now_ms, limit)
        })
    }

    fn hold_lease(&self, name: &str, seconds: f64) -> Result<bool, StoreError> {
        let (node, name) = (self.node.clone(), name.to_string());
        self.pool.run(true, move |c| {
            super::pg_commit::hold_lease(c, &node, &name, seconds)
        })
    }

    fn release_lease(&self, name: &str) -> Result<(), StoreError> {
        let (node, name) = (self.node.clone(), name.to_string());
        self.pool.run(true, move |c| {
            super::pg_commit::release_lease(c, &node, &name)
        })
    }

    fn timer_wakeups(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(
            self.listener
                .get_or_init(|| self.pool.listen(&self.channel))
                .clone(),
        )
    }

    async fn put_procedure(&self, record: ProcedureRecord) -> Result<(), StoreError> {
        self.pool.run_async(move |c| register(c, record)).await
    }

    fn procedure(&self, id: &str, version: u32) -> Result<Option<ProcedureRecord>, StoreError> {
        let id = id.to_string();
        self.read(move |t| layout::procedure(t, &id, version))
    }

    fn procedures(&self) -> Result<Vec<ProcedureRecord>, StoreError> {
        self.read(|t| layout::procedures(t))
    }

    fn notifications_for(
        &self,
        roles: &[String],
        limit: usize,
    ) -> Result<Vec<super::NotificationRow>, StoreError> {
        let roles = roles.to_vec();
        self.read(move |t| layout::notifications_for(t, &roles, limit))
    }

    fn schedule(&self, procedure: &str) -> Result<Option<super::ScheduleRow>, StoreError> {
        let procedure = procedure.to_string();
        self.read(move |t| layout::schedule(t, &procedure))
    }

    fn deliveries(
        &self,
        state: super::DeliveryState,
        destination: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<super::Page<super::Delivery>, StoreError> {
        let cursor = cursor.map(<[u8]>::to_vec);
        let destination = destination.map(str::to_string);
        self.read(move |t| {
            super::outbox::page(t, state, destination.as_deref(), cursor.as_deref(), limit)
        })
    }

    fn stored_hooks(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(|t| super::outbox::hooks(t))
    }

    fn delivery_destinations(
        &self,
        state: super::DeliveryState,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |t| super::outbox::destinations(t, state))
    }

    fn delivery(
        &self,
        state: super::DeliveryState,
        instance: super::InstanceId,
        seq: u64,
        destination: &str,
    ) -> Result<Option<super::Delivery>, StoreError> {
        let destination = destination.to_string();
        self.read(move |t| super::outbox::get(t, state, instance, seq, &destination))
    }

    fn sent_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, StoreError> {
        self.read(move |t| super::outbox::sent_before(t, before_ms, limit))
    }

    fn dump(&self) -> Result<Dump, StoreError> {
        self.read(|t| layout::dump(t))
    }
}
