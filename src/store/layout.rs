//! The key layout shared by every key-value store implementation (sled, memory): tree names,
//! key encoders, the translation of a `Commit` into plain tree writes (`Plan`), and the read
//! queries written once over a minimal `Kv` trait. The layout itself is documented in
//! `sled_store.rs`.
//!
//! Keeping this in one place is what makes `MemoryStore` and `SledStore` agree byte for byte
//! (their `dump()`s are comparable). This module must not do I/O of its own, must not
//! interpret event or snapshot bytes, and must never panic on bytes read back from disk:
//! anything malformed is `StoreError::Corrupt`.

use std::collections::BTreeSet;
use std::ops::Bound;

use uuid::Uuid;

use super::chain::{self, Hash, GENESIS};
use super::{
    Commit, Dump, InstanceId, NotificationRow, Page, ProcedureRecord, ScheduleRow, StoreError,
    StoredEvent, StoredInstance, TaskId, TaskRow, TimerRow,
};

/// The on-disk format this build reads and writes. Bump it (and write a migration) whenever
/// a key or value encoding below changes.
pub(crate) const FORMAT_VERSION: u32 = 5;
/// The older formats `sopflow store upgrade` rewrites into this one (`upgrade.rs`): format 3
/// keyed the worklist indexes by task id alone, with no idempotency tree; format 4 kept a
/// time-only family in the audit index (`audit.rs`).
pub(crate) const UPGRADABLE_FORMATS: [u32; 2] = [3, 4];
/// Key in the `meta` tree holding `FORMAT_VERSION` as u32 big-endian.
pub(crate) const FORMAT_KEY: &[u8] = b"format";
/// Key in the `meta` tree holding the store's id (UUID text), also named by the marker file
/// beside a sled store (`sled_store.rs`). It names the store, not its content, so `dump`
/// leaves it out: two stores holding the same data dump equal.
pub(crate) const STORE_ID_KEY: &[u8] = b"store";

/// Separates variable-length text from what follows it in a key; text may never contain it.
pub(crate) const SEP: u8 = 0x00;
pub(crate) const UUID_LEN: usize = 16;
const VERSION_LEN: usize = 8;
const HASH_LEN: usize = 32;
const TIMER_KEY_LEN: usize = 8 + UUID_LEN + UUID_LEN;

/// The trees, in name order (so `dump()` lists them in name order by walking `ALL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Tree {
    Audit,
    Events,
    Instances,
    InstancesAll,
    InstancesByProcedure,
    InstancesByStatus,
    InstancesByStatusAny,
    Meta,
    Notifications,
    Procedures,
    Schedules,
    Tasks,
    TasksByAssignee,
    TasksByRole,
    Timers,
    /// Last, not in name order: PostgreSQL stores a tree as its index, so a tree added in
    /// the middle would renumber the ones after it.
    Idempotency,
    Outbox,
}

impl Tree {
    pub(crate) const ALL: [Tree; 17] = [
        Tree::Audit,
        Tree::Events,
        Tree::Idempotency,
        Tree::Instances,
        Tree::InstancesAll,
        Tree::InstancesByProcedure,
        Tree::InstancesByStatus,
        Tree::InstancesByStatusAny,
        Tree::Meta,
        Tree::Notifications,
        Tree::Outbox,
        Tree::Procedures,
        Tree::Schedules,
        Tree::Tasks,
        Tree::TasksByAssignee,
        Tree::TasksByRole,
        Tree::Timers,
    ];

    /// Every tree in `index()` order: the slots of implementations that keep their trees
    /// in an array are filled from this, never from `ALL`.
    pub(crate) const BY_INDEX: [Tree; 17] = [
        Tree::Audit,
        Tree::Events,
        Tree::Instances,
        Tree::InstancesAll,
        Tree::InstancesByProcedure,
        Tree::InstancesByStatus,
        Tree::InstancesByStatusAny,
        Tree::Meta,
        Tree::Notifications,
        Tree::Procedures,
        Tree::Schedules,
        Tree::Tasks,
        Tree::TasksByAssignee,
        Tree::TasksByRole,
        Tree::Timers,
        Tree::Idempotency,
        Tree::Outbox,
    ];

    pub(crate) const fn name(self) -> &'static str {
        match self {
            Tree::Audit => "audit",
            Tree::Events => "events",
            Tree::Idempotency => "idempotency",
            Tree::Instances => "instances",
            Tree::InstancesAll => "instances_all",
            Tree::InstancesByProcedure => "instances_by_procedure",
            Tree::InstancesByStatus => "instances_by_status",
            Tree::InstancesByStatusAny => "instances_by_status_any",
            Tree::Meta => "meta",
            Tree::Notifications => "notifications",
            Tree::Outbox => "outbox",
            Tree::Procedures => "procedures",
            Tree::Schedules => "schedules",
            Tree::Tasks => "tasks",
            Tree::TasksByAssignee => "tasks_by_assignee",
            Tree::TasksByRole => "tasks_by_role",
            Tree::Timers => "timers",
        }
    }

    /// A stable number per tree (PostgreSQL's tree code), also the slot of implementations
    /// that keep their trees in an array. Not the position in `ALL`.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// One write of a plan: `Some` inserts, `None` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Op {
    pub tree: Tree,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A write for tests: `value` `None` removes.
#[cfg(test)]
pub(crate) fn test_op(tree: Tree, key: &[u8], value: Option<&[u8]>) -> Op {
    Op {
        tree,
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
    }
}

/// A commit translated into tree writes, computed on the caller's task so that the store's
/// writer (or transaction) only compares and writes (`resolve`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Instances to append to: each checks its expected version before any write (the
    /// first mismatch aborts) and is then chained onto the stored head (`append_ops`).
    pub appends: Vec<Append>,
    /// (procedure, expected schedule runs): checked like `checks`.
    pub schedule_checks: Vec<(String, u64)>,
    /// The idempotency key the commit records, which no live record may hold.
    pub idempotency: Option<super::idempotency::Check>,
    /// Applied in order, so a removal followed by an insert of the same key leaves the insert.
    pub ops: Vec<Op>,
}

/// Events for one instance. The hashes depend on the stored chain head, which only the
/// store's writer (or transaction) may read, so they are computed there, not in `Plan::ops`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Append {
    pub id: InstanceId,
    pub expected_version: u64,
    pub events: Vec<Vec<u8>>,
    pub snapshot: Vec<u8>,
}

/// The writes of an append whose version check passed, given the stored instance value
/// (`None` for a new instance): each event stored as `hash ++ bytes`, chained from the
/// stored head, and the instance value with the new version and head.
pub(crate) fn append_ops(a: &Append, stored: Option<&[u8]>) -> Result<Vec<Op>, StoreError> {
    let mut head = match stored {
        None => GENESIS,
        Some(v) => version_and_head(v)?.1,
    };
    let mut ops = Vec::with_capacity(a.events.len() + 1);
    let mut seq = a.expected_version;
    for bytes in &a.events {
        seq += 1;
        head = chain::link(a.id, seq, &head, bytes);
        let mut value = Vec::with_capacity(HASH_LEN + bytes.len());
        value.extend_from_slice(&head);
        value.extend_from_slice(bytes);
        ops.push(Op {
            tree: Tree::Events,
            key: event_key(a.id, seq),
            value: Some(value),
        });
    }
    ops.push(Op {
        tree: Tree::Instances,
        key: instance_key(a.id).to_vec(),
        value: Some(instance_value(seq, &head, &a.snapshot)),
    });
    Ok(ops)
}

// ---------------------------------------------------------------------------------------
// Key encoders
// ---------------------------------------------------------------------------------------

/// Text that goes into a key in front of `SEP`. A 0x00 inside would make two different
/// (text, id) pairs share a key prefix, so it is refused rather than silently mis-indexed.
pub(crate) fn text(what: &str, value: &str) -> Result<(), StoreError> {
    if value.as_bytes().contains(&SEP) {
        return Err(StoreError::Invalid(format!(
            "{what} {value:?} contains a NUL (0x00) character, which the store reserves as a separator"
        )));
    }
    Ok(())
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(SEP);
        }
        key.extend_from_slice(part);
    }
    key
}

pub(crate) fn instance_key(id: InstanceId) -> [u8; UUID_LEN] {
    *id.as_bytes()
}

pub(crate) fn event_key(id: InstanceId, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(UUID_LEN + 8);
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// `i64` → `u64` preserving order: flipping the sign bit is adding 2^63, so negative due
/// times sort before zero and positive ones.
pub(crate) fn ordered_ms(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn ms_from_ordered(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

pub(crate) fn timer_key(t: &TimerRow) -> Vec<u8> {
    let mut key = Vec::with_capacity(TIMER_KEY_LEN);
    key.extend_from_slice(&ordered_ms(t.due_ms));
    key.extend_from_slice(t.instance.as_bytes());
    key.extend_from_slice(t.timer.as_bytes());
    key
}

pub(crate) fn procedure_key(id: &str, version: u32) -> Result<Vec<u8>, StoreError> {
    text("procedure id", id)?;
    Ok(join(&[id.as_bytes(), &version.to_be_bytes()]))
}

fn status_key(procedure: &str, status: &str, id: InstanceId) -> Vec<u8> {
    join(&[procedure.as_bytes(), status.as_bytes(), id.as_bytes()])
}

fn status_any_key(status: &str, id: InstanceId) -> Vec<u8> {
    join(&[status.as_bytes(), id.as_bytes()])
}

fn text_then_id(prefix: &str, id: Uuid) -> Vec<u8> {
    join(&[prefix.as_bytes(), id.as_bytes()])
}

/// Every (tree, key, value) a task row owns.
/// (tree, key, value) of one index or row entry.
type Entry = (Tree, Vec<u8>, Vec<u8>);

fn task_entries(row: &TaskRow) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::with_capacity(row.roles.len() + 2);
    out.push((Tree::Tasks, row.task.as_bytes().to_vec(), Vec::new()));
    // The index entries carry the row itself: a worklist page is read from the index
    // alone, in due order, without a lookup per task.
    let value = encode_task(row)?;
    for role in &row.roles {
        text("role", role)?;
        out.push((
            Tree::TasksByRole,
            super::worklist::index_key(role, row),
            value.clone(),
        ));
    }
    if let Some(user) = &row.assignee {
        text("assignee", user)?;
        out.push((
            Tree::TasksByAssignee,
            super::worklist::index_key(user, row),
            value.clone(),
        ));
    }
    out[0].2 = value;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

pub(crate) fn encode_task(row: &TaskRow) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(row).map_err(|e| StoreError::Invalid(format!("task row: {e}")))
}

pub(crate) fn decode_task(bytes: &[u8]) -> Result<TaskRow, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("task row: {e}")))
}

pub(crate) fn encode_procedure(record: &ProcedureRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Invalid(format!("procedure record: {e}")))
}

pub(crate) fn decode_procedure(bytes: &[u8]) -> Result<ProcedureRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("procedure record: {e}")))
}

fn instance_value(version: u64, head: &Hash, snapshot: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(VERSION_LEN + HASH_LEN + snapshot.len());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(head);
    value.extend_from_slice(snapshot);
    value
}

/// The version and chain head stored in front of an instance's snapshot.
pub(crate) fn version_and_head(value: &[u8]) -> Result<(u64, Hash), StoreError> {
    let version = stored_version(value)?;
    let head = value
        .get(VERSION_LEN..VERSION_LEN + HASH_LEN)
        .and_then(|h| Hash::try_from(h).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("instance value of {} bytes", value.len())))?;
    Ok((version, head))
}

/// A stored event value split into its chain link and its bytes; `None` if too short.
pub(crate) fn split_event(value: &[u8]) -> Option<(Hash, &[u8])> {
    let hash = Hash::try_from(value.get(..HASH_LEN)?).ok()?;
    Some((hash, &value[HASH_LEN..]))
}

/// The sequence number in an event key.
pub(crate) fn event_seq(key: &[u8]) -> Result<u64, StoreError> {
    key.get(UUID_LEN..)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("event key of {} bytes", key.len())))
}

/// A key (or key part) that is exactly one UUID.
pub(crate) fn uuid_key(bytes: &[u8], what: &str) -> Result<Uuid, StoreError> {
    if bytes.len() != UUID_LEN {
        return Err(StoreError::Corrupt(format!(
            "{what}: {} bytes",
            bytes.len()
        )));
    }
    uuid_at(bytes, 0, what)
}

/// The version stored in front of an instance's snapshot.
pub(crate) fn stored_version(value: &[u8]) -> Result<u64, StoreError> {
    value
        .get(..VERSION_LEN)
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("instance value of {} bytes", value.len())))
}

fn decode_instance(value: &[u8]) -> Result<StoredInstance, StoreError> {
    let (version, head) = version_and_head(value)?;
    Ok(StoredInstance {
        version,
        head,
        snapshot: value[VERSION_LEN + HASH_LEN..].to_vec(),
    })
}

pub(crate) fn uuid_at(bytes: &[u8], at: usize, what: &str) -> Result<Uuid, StoreError> {
    bytes
        .get(at..at + UUID_LEN)
        .and_then(|b| Uuid::from_slice(b).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: {} bytes", bytes.len())))
}

pub(crate) fn decode_timer(key: &[u8], payload: &[u8]) -> Result<TimerRow, StoreError> {
    if key.len() != TIMER_KEY_LEN {
        return Err(StoreError::Corrupt(format!(
            "timer key of {} bytes",
            key.len()
        )));
    }
    let mut due = [0u8; 8];
    due.copy_from_slice(&key[..8]);
    Ok(TimerRow {
        due_ms: ms_from_ordered(due),
        instance: uuid_at(key, 8, "timer key")?,
        timer: uuid_at(key, 8 + UUID_LEN, "timer key")?,
        payload: payload.to_vec(),
    })
}

pub(crate) fn format_value() -> [u8; 4] {
    FORMAT_VERSION.to_be_bytes()
}

/// Checks the `meta` format entry of an existing store; `what` names the store for the message.
/// With `upgrading`, the format `sopflow store upgrade` rewrites is accepted too; returns
/// the format found.
pub(crate) fn check_format(stored: &[u8], what: &str, upgrading: bool) -> Result<u32, StoreError> {
    let found = <[u8; 4]>::try_from(stored).ok().map(u32::from_be_bytes);
    match found {
        Some(FORMAT_VERSION) => Ok(FORMAT_VERSION),
        Some(v) if UPGRADABLE_FORMATS.contains(&v) && upgrading => Ok(v),
        Some(v) if UPGRADABLE_FORMATS.contains(&v) => Err(StoreError::Corrupt(format!(
            "{what} uses store format {v}, and this build of sopflow reads format \
             {FORMAT_VERSION}: stop every server using it, back it up, and run `sopflow \
             store upgrade` with the same --data-dir or --store (it verifies every chain, \
             then rewrites the indexes that changed)"
        ))),
        Some(v) => Err(StoreError::Corrupt(format!(
            "{what} uses store format {v}, but this build of sopflow reads format \
             {FORMAT_VERSION}; open it with the sopflow version that wrote it (or restore \
             a backup of the data directory) instead of starting this version on it"
        ))),
        None => Err(StoreError::Corrupt(format!(
            "{what} has an unreadable format marker ({} bytes); it was not written by \
             sopflow or is damaged: restore the data directory from a backup",
            stored.len()
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Commit → plan
// ---------------------------------------------------------------------------------------

/// Translates a commit into checks and writes. Order of the writes: instances and events,
/// then task closes before task opens (so a task reopened with new candidates in the same
/// commit ends up with exactly its new keys), status moves (leave before enter), timer
/// disarms before arms.
pub(crate) fn plan_commit(commit: Commit) -> Result<Plan, StoreError> {
    let mut plan = Plan::default();
    let mut seen = BTreeSet::new();
    for w in commit.instances {
        if !seen.insert(w.id) {
            return Err(StoreError::Invalid(format!(
                "instance {} appears twice in one commit; merge its events into one write",
                w.id
            )));
        }
        let n = u64::try_from(w.events.len())
            .map_err(|_| StoreError::Invalid("too many events".into()))?;
        // Refused here, before the transaction, so `append_ops` can count without overflow.
        w.expected_version
            .checked_add(n)
            .ok_or_else(|| StoreError::Invalid(format!("instance {} version overflows", w.id)))?;
        let mut events = Vec::with_capacity(w.events.len());
        for (seq, e) in (w.expected_version + 1..).zip(w.events) {
            super::audit::entries(&w.procedure, w.id, seq, &e.summary, &mut plan.ops)?;
            events.push(e.bytes);
        }
        plan.appends.push(Append {
            id: w.id,
            expected_version: w.expected_version,
            events,
            snapshot: w.snapshot,
        });
        if w.expected_version == 0 {
            plan.ops.push(Op {
                tree: Tree::InstancesAll,
                key: instance_key(w.id).to_vec(),
                value: Some(Vec::new()),
            });
        }
    }
    for row in &commit.closed_tasks {
        for (tree, key, _) in task_entries(row)? {
            // The task row stays as a tombstone naming its instance, so a late command on a
            // finished task finds the instance and hears "already completed", not "unknown".
            let value = (tree == Tree::Tasks).then(|| row.instance.as_bytes().to_vec());
            plan.ops.push(Op { tree, key, value });
        }
    }
    for row in &commit.open_tasks {
        for (tree, key, value) in task_entries(row)? {
            plan.ops.push(Op {
                tree,
                key,
                value: Some(value),
            });
        }
    }
    for s in &commit.statuses {
        text("procedure id", &s.procedure)?;
        text("status", &s.to)?;
        match &s.from {
            Some(from) => {
                text("status", from)?;
                plan.ops.push(Op {
                    tree: Tree::InstancesByStatus,
                    key: status_key(&s.procedure, from, s.instance),
                    value: None,
                });
                plan.ops.push(Op {
                    tree: Tree::InstancesByStatusAny,
                    key: status_any_key(from, s.instance),
                    value: None,
                });
            }
            None => plan.ops.push(Op {
                tree: Tree::InstancesByProcedure,
                key: text_then_id(&s.procedure, s.instance),
                value: Some(Vec::new()),
            }),
        }
        plan.ops.push(Op {
            tree: Tree::InstancesByStatus,
            key: status_key(&s.procedure, &s.to, s.instance),
            value: Some(Vec::new()),
        });
        plan.ops.push(Op {
            tree: Tree::InstancesByStatusAny,
            key: status_any_key(&s.to, s.instance),
            value: Some(Vec::new()),
        });
    }
    for t in &commit.disarm_timers {
        plan.ops.push(Op {
            tree: Tree::Timers,
            key: timer_key(t),
            value: None,
        });
    }
    for t in commit.arm_timers {
        plan.ops.push(Op {
            tree: Tree::Timers,
            key: timer_key(&t),
            value: Some(t.payload),
        });
    }
    for n in &commit.notifications {
        text("role", &n.role)?;
        let mut key = n.role.as_bytes().to_vec();
        key.push(SEP);
        key.extend_from_slice(&ordered_ms(n.at_ms));
        key.extend_from_slice(n.instance.as_bytes());
        key.extend_from_slice(&n.seq.to_be_bytes());
        let value = serde_json::to_vec(n).map_err(|e| StoreError::Invalid(e.to_string()))?;
        plan.ops.push(Op {
            tree: Tree::Notifications,
            key,
            value: Some(value),
        });
    }
    for w in &commit.outbox {
        plan.ops.push(super::outbox::op(w)?);
    }
    for w in &commit.hooks {
        plan.ops.push(super::outbox::hook_op(w)?);
    }
    if let Some(w) = &commit.idempotency {
        let (check, op) = super::idempotency::plan(w)?;
        plan.idempotency = Some(check);
        plan.ops.push(op);
    }
    for sw in commit.schedules {
        text("procedure id", &sw.procedure)?;
        plan.schedule_checks
            .push((sw.procedure.clone(), sw.expected_runs));
        let mut value = sw.runs.to_be_bytes().to_vec();
        value.extend_from_slice(&sw.next_ms.to_be_bytes());
        plan.ops.push(Op {
            tree: Tree::Schedules,
            key: sw.procedure.into_bytes(),
            value: Some(value),
        });
    }
    Ok(plan)
}

/// A point read of one stored value, as `resolve` needs it.
pub(crate) type Lookup<'a> = dyn FnMut(Tree, &[u8]) -> Result<Option<Vec<u8>>, StoreError> + 'a;

/// Runs a plan's checks against the stored values `get` returns (which must include the
/// writes of plans resolved before it in the same batch) and returns every write it makes:
/// the chained events and instance values, then the plan's other writes. An `Err` means the
/// plan writes nothing.
pub(crate) fn resolve(plan: Plan, get: &mut Lookup<'_>) -> Result<Vec<Op>, StoreError> {
    let mut ops = Vec::with_capacity(plan.ops.len() + 4 * plan.appends.len());
    for a in &plan.appends {
        let stored = get(Tree::Instances, &instance_key(a.id))?;
        check_version(a.id, a.expected_version, stored.as_deref())?;
        ops.extend(append_ops(a, stored.as_deref())?);
    }
    for (procedure, expected) in &plan.schedule_checks {
        let stored = get(Tree::Schedules, procedure.as_bytes())?;
        check_schedule(procedure, *expected, stored.as_deref())?;
    }
    if let Some(c) = &plan.idempotency {
        let stored = get(Tree::Idempotency, &c.key)?;
        super::idempotency::check(c, stored.as_deref())?;
    }
    ops.extend(plan.ops);
    Ok(ops)
}

/// The CAS verdict for one schedule given its stored value (absent counts as 0 runs).
pub(crate) fn check_schedule(
    procedure: &str,
    expected: u64,
    stored: Option<&[u8]>,
) -> Result<(), StoreError> {
    let found = match stored {
        None => 0,
        Some(v) => decode_schedule(procedure, v)?.runs,
    };
    if found == expected {
        Ok(())
    } else {
        Err(StoreError::ScheduleMoved {
            procedure: procedure.to_string(),
        })
    }
}

fn decode_schedule(procedure: &str, v: &[u8]) -> Result<ScheduleRow, StoreError> {
    let (runs, next) = (v.get(..8), v.get(8..16));
    match (runs, next, v.len()) {
        (Some(r), Some(n), 16) => Ok(ScheduleRow {
            procedure: procedure.to_string(),
            runs: u64::from_be_bytes(
                r.try_into()
                    .map_err(|_| StoreError::Corrupt("schedule".into()))?,
            ),
            next_ms: i64::from_be_bytes(
                n.try_into()
                    .map_err(|_| StoreError::Corrupt("schedule".into()))?,
            ),
        }),
        _ => Err(StoreError::Corrupt(format!(
            "the schedule of {procedure} has {} bytes, not 16",
            v.len()
        ))),
    }
}

/// Notifications for any of `roles`, newest first: each role's entries read backwards from
/// its newest, at most `limit` of them, so the cost follows the page and the number of
/// roles, not how many notifications were ever recorded.
pub(crate) fn notifications_for(
    kv: &dyn Kv,
    roles: &[String],
    limit: usize,
) -> Result<Vec<NotificationRow>, StoreError> {
    let mut out: Vec<NotificationRow> = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for role in roles {
        text("role", role)?;
        let mut prefix = role.as_bytes().to_vec();
        prefix.push(SEP);
        // Every key of the role sorts below the role followed by the next byte.
        let mut end = role.as_bytes().to_vec();
        end.push(SEP + 1);
        let mut taken = 0usize;
        kv.scan_back(Tree::Notifications, &end, &mut |k, v| {
            if !k.starts_with(&prefix) {
                return Ok(false);
            }
            out.push(
                serde_json::from_slice(v)
                    .map_err(|e| StoreError::Corrupt(format!("notification: {e}")))?,
            );
            taken += 1;
            Ok(taken < limit)
        })?;
    }
    // The keys' order reversed (time, instance, seq), so each role's first `limit` are
    // exactly its share of the merged first `limit`.
    out.sort_by_key(|n| std::cmp::Reverse((n.at_ms, n.instance, n.seq)));
    out.dedup();
    out.truncate(limit);
    Ok(out)
}

/// The stored schedule of `procedure`.
pub(crate) fn schedule(kv: &dyn Kv, procedure: &str) -> Result<Option<ScheduleRow>, StoreError> {
    text("procedure id", procedure)?;
    kv.get(Tree::Schedules, procedure.as_bytes())?
        .map(|v| decode_schedule(procedure, &v))
        .transpose()
}

/// What registering `record` must do, given what is stored under its key.
pub(crate) fn procedure_outcome(
    record: &ProcedureRecord,
    stored: Option<&[u8]>,
) -> Result<ProcedureOutcome, StoreError> {
    match stored {
        None => Ok(ProcedureOutcome::Insert),
        Some(bytes) => {
            let existing = decode_procedure(bytes)?;
            if existing.hash == record.hash {
                Ok(ProcedureOutcome::AlreadyThere)
            } else {
                Err(StoreError::ProcedureChanged {
                    id: record.id.clone(),
                    version: record.version,
                })
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcedureOutcome {
    Insert,
    AlreadyThere,
}

/// The CAS verdict for one instance given its stored value.
pub(crate) fn check_version(
    instance: InstanceId,
    expected: u64,
    stored: Option<&[u8]>,
) -> Result<(), StoreError> {
    let found = match stored {
        None => 0,
        Some(v) => stored_version(v)?,
    };
    if found == expected {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            instance,
            expected,
            found,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------

/// A scan callback: gets each (key, value), returns whether to go on.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError> + 'a;

/// The reads the queries need. `scan` visits entries with keys from `from` upwards in key
/// order until `visit` returns `false`.
pub(crate) trait Kv {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan(&self, tree: Tree, from: Bound<&[u8]>, visit: &mut Visit<'_>)
        -> Result<(), StoreError>;
    /// Visits entries with keys below `before`, in descending key order, until `visit`
    /// returns `false` (newest-first pages of time-ordered keys).
    fn scan_back(&self, tree: Tree, before: &[u8], visit: &mut Visit<'_>)
        -> Result<(), StoreError>;
}

pub(crate) fn instance(kv: &dyn Kv, id: InstanceId) -> Result<Option<StoredInstance>, StoreError> {
    kv.get(Tree::Instances, &instance_key(id))?
        .as_deref()
        .map(decode_instance)
        .transpose()
}

pub(crate) fn history(
    kv: &dyn Kv,
    id: InstanceId,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let start = event_key(id, from_seq.max(1));
    kv.scan(Tree::Events, Bound::Included(&start), &mut |k, v| {
        if !k.starts_with(id.as_bytes()) {
            return Ok(false);
        }
        let seq = event_seq(k)?;
        let (hash, bytes) = split_event(v).ok_or_else(|| {
            StoreError::Corrupt(format!("event {seq} of {id} is {} bytes long", v.len()))
        })?;
        out.push(StoredEvent {
            seq,
            hash,
            bytes: bytes.to_vec(),
        });
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

pub(crate) fn task(kv: &dyn Kv, id: TaskId) -> Result<Option<TaskRow>, StoreError> {
    match kv.get(Tree::Tasks, id.as_bytes())? {
        Some(v) if v.len() == UUID_LEN => Ok(None),
        Some(v) => decode_task(&v).map(Some),
        None => Ok(None),
    }
}

/// The instance a task belongs to, open or closed.
pub(crate) fn task_instance(kv: &dyn Kv, id: TaskId) -> Result<Option<InstanceId>, StoreError> {
    match kv.get(Tree::Tasks, id.as_bytes())? {
        Some(v) if v.len() == UUID_LEN => Ok(Some(uuid_at(&v, 0, "task tombstone")?)),
        Some(v) => Ok(Some(decode_task(&v)?.instance)),
        None => Ok(None),
    }
}

pub(crate) fn instances(
    kv: &dyn Kv,
    procedure: Option<&str>,
    status: Option<&str>,
    cursor: Option<&[u8]>,
    limit: usize,
) -> Result<Page<InstanceId>, StoreError> {
    let (tree, prefix) = match (procedure, status) {
        (None, None) => (Tree::InstancesAll, Vec::new()),
        (Some(p), None) => {
            text("procedure id", p)?;
            (Tree::InstancesByProcedure, join(&[p.as_bytes(), b""]))
        }
        (None, Some(s)) => {
            text("status", s)?;
            (Tree::InstancesByStatusAny, join(&[s.as_bytes(), b""]))
        }
        (Some(p), Some(s)) => {
            text("procedure id", p)?;
            text("status", s)?;
            (
                Tree::InstancesByStatus,
                join(&[p.as_bytes(), s.as_bytes(), b""]),
            )
        }
    };
    // The cursor is the last instance id returned; the filter supplies the rest of the key,
    // so a cursor stays valid even if the caller changes nothing but the page size.
    let after = match cursor {
        None | Some([]) => None,
        Some(c) if c.len() == UUID_LEN => {
            let mut key = prefix.clone();
            key.extend_from_slice(c);
            Some(key)
        }
        Some(c) => {
            return Err(StoreError::Invalid(format!(
                "instance cursor of {} bytes; pass back the `next` of the previous page",
                c.len()
            )))
        }
    };
    if limit == 0 {
        return Ok(Page {
            items: Vec::new(),
            next: cursor.map(<[u8]>::to_vec),
        });
    }
    let from = match &after {
        Some(key) => Bound::Excluded(key.as_slice()),
        None => Bound::Included(prefix.as_slice()),
    };
    let mut items = Vec::new();
    let mut more = false;
    kv.scan(tree, from, &mut |k, _| {
        if !k.starts_with(&prefix) {
            return Ok(false);
        }
        if items.len() == limit {
            more = true;
            return Ok(false);
        }
        if k.len() != prefix.len() + UUID_LEN {
            return Err(StoreError::Corrupt(format!(
                "{} key of {} bytes",
                tree.name(),
                k.len()
            )));
        }
        items.push(uuid_at(k, prefix.len(), tree.name())?);
        Ok(true)
    })?;
    let next = if more {
        items.last().map(|id| id.as_bytes().to_vec())
    } else {
        None
    };
    Ok(Page { items, next })
}

/// Every distinct `family ++ text ++ SEP` key prefix in `tree`, one seek each: after a
/// prefix is read, the next key at or after `family ++ text ++ 0x01` begins the next one
/// (the audit index's kinds, the outbox's destinations).
pub(crate) fn distinct_heads(
    kv: &dyn Kv,
    tree: Tree,
    family: u8,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    let mut from = vec![family];
    loop {
        let mut found = None;
        kv.scan(tree, Bound::Included(&from), &mut |k, _| {
            if k.first() == Some(&family) {
                let end = k.iter().position(|b| *b == SEP).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "{} key of {} bytes has no separator",
                        tree.name(),
                        k.len()
                    ))
                })?;
                found = Some(k[..=end].to_vec());
            }
            Ok(false)
        })?;
        let Some(prefix) = found else {
            return Ok(out);
        };
        from.clone_from(&prefix);
        if let Some(b) = from.last_mut() {
            *b = SEP + 1;
        }
        out.push(prefix);
    }
}

pub(crate) fn due_timers(
    kv: &dyn Kv,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<TimerRow>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let now = ordered_ms(now_ms);
    kv.scan(Tree::Timers, Bound::Unbounded, &mut |k, v| {
        if k.get(..8).is_some_and(|due| due > &now[..]) {
            return Ok(false);
        }
        out.push(decode_timer(k, v)?);
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

pub(crate) fn next_timer(kv: &dyn Kv) -> Result<Option<TimerRow>, StoreError> {
    let mut out = None;
    kv.scan(Tree::Timers, Bound::Unbounded, &mut |k, v| {
        out = Some(decode_timer(k, v)?);
        Ok(false)
    })?;
    Ok(out)
}

pub(crate) fn procedure(
    kv: &dyn Kv,
    id: &str,
    version: u32,
) -> Result<Option<ProcedureRecord>, StoreError> {
    let key = procedure_key(id, version)?;
    kv.get(Tree::Procedures, &key)?
        .as_deref()
        .map(decode_procedure)
        .transpose()
}

pub(crate) fn procedures(kv: &dyn Kv) -> Result<Vec<ProcedureRecord>, StoreError> {
    let mut out = Vec::new();
    kv.scan(Tree::Procedures, Bound::Unbounded, &mut |_, v| {
        out.push(decode_procedure(v)?);
        Ok(true)
    })?;
    Ok(out)
}

pub(crate) fn dump(kv: &dyn Kv) -> Result<Dump, StoreError> {
    let mut out = Vec::with_capacity(Tree::ALL.len());
    for tree in Tree::ALL {
        let mut entries = Vec::new();
        kv.scan(tree, Bound::Unbounded, &mut |k, v| {
            if !(tree == Tree::Meta && k == STORE_ID_KEY) {
                entries.push((k.to_vec(), v.to_vec()));
            }
            Ok(true)
        })?;
        out.push((tree.name().to_string(), entries));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_ms_sorts_like_i64() {
        let values = [i64::MIN, -1_000, -1, 0, 1, 1_000, i64::MAX];
        for pair in values.windows(2) {
            assert!(ordered_ms(pair[0]) < ordered_ms(pair[1]), "{pair:?}");
        }
        for v in values {
            assert_eq!(ms_from_ordered(ordered_ms(v)), v);
        }
    }

    #[test]
    fn tree_order_is_name_order() {
        let names: Vec<_> = Tree::ALL.iter().map(|t| t.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        // Every slot used once: the indexes are stable codes, not positions in `ALL`.
        let mut slots: Vec<_> = Tree::ALL.iter().map(|t| t.index()).collect();
        slots.sort_unstable();
        assert_eq!(slots, (0..Tree::ALL.len()).collect::<Vec<_>>());
        for (i, t) in Tree::BY_INDEX.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
        // PostgreSQL stores these numbers: the trees of format 3 keep theirs.
        assert_eq!(Tree::Timers.index(), 14);
        assert_eq!(Tree::Idempotency.index(), 15);
    }

    #[test]
    fn malformed_values_are_corrupt_not_panics() {
        assert!(matches!(
            stored_version(&[1, 2, 3]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_timer(&[0; 7], b""),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(decode_task(b"{"), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            check_format(&[0, 0], "x", false),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            check_format(&9u32.to_be_bytes(), "x", false),
            Err(StoreError::Corrupt(_))
        ));
        assert!(check_format(&format_value(), "x", false).is_ok());
    }

    #[test]
    fn nul_in_text_is_refused() {
        assert!(matches!(
            procedure_key("a\0b", 1),
            Err(StoreError::Invalid(_))
        ));
    }
}
