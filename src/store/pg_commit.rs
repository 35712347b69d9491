//! Commits and timer claims on PostgreSQL: the write side of `postgres.rs`.
//!
//! A commit normally costs one round trip: the stored head of each instance it appends to
//! is read first (none for a new instance), the chain and every write are computed here,
//! and one call of the `sopflow_commit` function (migration 2) takes the advisory locks,
//! checks that each read value is still the stored one, and writes — one transaction, with
//! `synchronous_commit` on. If anything changed between the read and the locks, the
//! function writes nothing and the commit is done again the careful way (`apply_locked`:
//! locks first, then reads, in one transaction), which also names the conflict exactly.
//!
//! Due timers are claimed before they are fired (`claim_due`): a lease per instance in
//! `timer_claims`, so two nodes never decide the same firing and an instance's timers fire
//! in due order; the commit that fires (or disarms) a timer removes the row and the lease
//! together, and a lease of a node that died runs out after `CLAIM_SECONDS`. A commit that arms a timer sends `NOTIFY` on the
//! schema's channel, delivered when it commits, so every node's scheduler looks again.
//! This module must not interpret event or snapshot bytes beyond what `layout.rs` offers.

use std::collections::BTreeMap;

use super::layout::{self, Kv, Tree};
use super::pg_pool::{Conn, Stmts};
use super::postgres::{pg, tree_code, ClientKv};
use super::{InstanceId, StoreError, TimerRow};

/// How long a node's claim on an instance's due timers keeps others from firing them.
/// Firing a batch takes milliseconds; a claim outliving its node (killed mid-firing) only
/// delays those timers by at most this much.
pub(super) const CLAIM_SECONDS: f64 = 10.0;

/// The function a commit calls (created by migration 2; the text is the migration's).
pub(super) const COMMIT_FUNCTION: &str = "
CREATE FUNCTION sopflow_commit(
    locks bigint[],
    check_tree smallint[], check_key bytea[], check_prefix bytea[],
    del_tree smallint[], del_key bytea[],
    up_tree smallint[], up_key bytea[], up_value bytea[],
    fired bytea[], channel text, wake text
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(l) FROM unnest(locks) AS l ORDER BY l;
    -- Each read value must still be there (its first bytes: version and chain head), and
    -- each value read as absent still absent.
    IF EXISTS (
        SELECT 1 FROM unnest(check_tree, check_key, check_prefix) AS c(tree, key, prefix)
        LEFT JOIN kv ON kv.tree = c.tree AND kv.key = c.key
        WHERE CASE WHEN c.prefix IS NULL THEN kv.value IS NOT NULL
                   ELSE kv.value IS NULL
                        OR substring(kv.value FROM 1 FOR length(c.prefix)) <> c.prefix END
    ) THEN
        RETURN false;
    END IF;
    DELETE FROM kv USING unnest(del_tree, del_key) AS d(tree, key)
        WHERE kv.tree = d.tree AND kv.key = d.key;
    INSERT INTO kv (tree, key, value)
        SELECT * FROM unnest(up_tree, up_key, up_value)
        ON CONFLICT (tree, key) DO UPDATE SET value = excluded.value;
    IF cardinality(fired) > 0 THEN
        DELETE FROM timer_claims WHERE instance = ANY (fired);
    END IF;
    IF wake IS NOT NULL THEN
        PERFORM pg_notify(channel, wake);
    END IF;
    RETURN true;
END
$$";

/// The channel a schema's commits announce armed timers on (a channel name is at most 63
/// bytes; two schemas sharing a truncated name only wake each other needlessly).
pub(super) fn channel(schema: &str) -> String {
    format!("sopflow_{}", &schema[..schema.len().min(50)])
}

/// The writes of a commit, last one per key winning (the plan's order), as the arrays the
/// statements take, with what the timers tree gains and loses.
#[derive(Default)]
pub(super) struct Writes {
    up_t: Vec<i16>,
    up_k: Vec<Vec<u8>>,
    up_v: Vec<Vec<u8>>,
    del_t: Vec<i16>,
    del_k: Vec<Vec<u8>>,
    /// Instances that lost timers (fired or disarmed): their claims go with them, so the
    /// next due timer of each is anyone's again.
    fired: Vec<Vec<u8>>,
    /// The earliest due time armed (the notification's payload), if any.
    wake: Option<String>,
}

impl Writes {
    pub(super) fn new(ops: Vec<layout::Op>) -> Writes {
        let mut last: BTreeMap<(i16, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
        let timers = tree_code(Tree::Timers);
        for op in ops {
            last.insert((tree_code(op.tree), op.key), op.value);
        }
        let mut w = Writes::default();
        for ((t, k), v) in last {
            match v {
                Some(v) => {
                    if t == timers && w.wake.is_none() {
                        // Keys are in order and a timer key starts with its due time.
                        w.wake = Some(hex(&k[..k.len().min(8)]));
                    }
                    w.up_t.push(t);
                    w.up_k.push(k);
                    w.up_v.push(v);
                }
                None => {
                    if let (true, Some(instance)) = (t == timers, k.get(8..24)) {
                        if !w.fired.iter().any(|f| f == instance) {
                            w.fired.push(instance.to_vec());
                        }
                    }
                    w.del_t.push(t);
                    w.del_k.push(k);
                }
            }
        }
        w
    }

    /// Writes them inside `tx` (the careful path and `store copy`).
    pub(super) fn apply(
        &self,
        tx: &mut postgres::Transaction<'_>,
        st: &Stmts,
        channel: &str,
    ) -> Result<(), StoreError> {
        if !self.del_t.is_empty() {
            tx.execute(&st.delete, &[&self.del_t, &self.del_k])
                .map_err(pg)?;
        }
        if !self.up_t.is_empty() {
            tx.execute(&st.upsert, &[&self.up_t, &self.up_k, &self.up_v])
                .map_err(pg)?;
        }
        if !self.fired.is_empty() {
            tx.execute(&st.unclaim, &[&self.fired]).map_err(pg)?;
        }
        if let Some(wake) = &self.wake {
            tx.execute("SELECT pg_notify($1, $2)", &[&channel, wake])
                .map_err(pg)?;
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An advisory lock key for an instance: its id's last eight bytes (v7 ids put their time
/// first, random bits here; a collision only makes two commits take turns).
fn instance_lock(id: InstanceId) -> i64 {
    let b = id.as_bytes();
    i64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
}

/// Lock keys for schedules and procedure registration: apart from instances' by a tag.
pub(super) fn name_lock(tag: u8, name: &str) -> i64 {
    use sha2::Digest;
    let b = sha2::Sha256::digest(name.as_bytes());
    i64::from_be_bytes([tag, b[0], b[1], b[2], b[3], b[4], b[5], b[6]])
}

fn locks_of(plan: &layout::Plan) -> Vec<i64> {
    let mut locks: Vec<i64> = plan.appends.iter().map(|a| instance_lock(a.id)).collect();
    locks.extend(plan.schedule_checks.iter().map(|(p, _)| name_lock(1, p)));
    locks.sort_unstable();
    locks.dedup();
    locks
}

/// Commits `plan`: one round trip for the reads it needs and one call of `sopflow_commit`;
/// if something moved in between, the careful path.
pub(super) fn commit(conn: &mut Conn, plan: layout::Plan, channel: &str) -> Result<(), StoreError> {
    let (c, st) = conn.parts()?;
    // (tree, key, the stored value's first bytes or None for absent), one per value read.
    let mut checks: (Vec<i16>, Vec<Vec<u8>>, Vec<Prefix>) = Default::default();
    let mut ops: Vec<layout::Op> = Vec::new();
    {
        let kv = ClientKv::new(&mut *c, st);
        for a in &plan.appends {
            let key = layout::instance_key(a.id);
            // A new instance has nothing to read: the check below finds it absent or not.
            let stored = if a.expected_version == 0 {
                None
            } else {
                kv.get(Tree::Instances, &key)?
            };
            layout::check_version(a.id, a.expected_version, stored.as_deref())?;
            ops.extend(layout::append_ops(a, stored.as_deref())?);
            checks.0.push(tree_code(Tree::Instances));
            checks
                .2
                .push(stored.map(|v| v[..v.len().min(HEAD_PREFIX)].to_vec()));
            checks.1.push(key.to_vec());
        }
        for (procedure, expected) in &plan.schedule_checks {
            let stored = kv.get(Tree::Schedules, procedure.as_bytes())?;
            layout::check_schedule(procedure, *expected, stored.as_deref())?;
            checks.0.push(tree_code(Tree::Schedules));
            checks.1.push(procedure.as_bytes().to_vec());
            checks.2.push(stored);
        }
    }
    let locks = locks_of(&plan);
    ops.extend(plan.ops.iter().cloned());
    let w = Writes::new(ops);
    let row = c
        .query_one(
            &st.commit,
            &[
                &locks, &checks.0, &checks.1, &checks.2, &w.del_t, &w.del_k, &w.up_t, &w.up_k,
                &w.up_v, &w.fired, &channel, &w.wake,
            ],
        )
        .map_err(pg)?;
    if row.get::<_, bool>(0) {
        return Ok(());
    }
    metrics::counter!("sopflow_pg_commit_retried_total").increment(1);
    apply_locked(conn, plan, channel)
}

type Prefix = Option<Vec<u8>>;

/// Version (8 bytes) and chain head (32) of a stored instance value: equal heads mean equal
/// histories, so comparing these is comparing the instance.
const HEAD_PREFIX: usize = 40;

/// The careful commit: locks, reads and writes in one transaction; `Conflict` and
/// `ScheduleMoved` roll it back whole.
fn apply_locked(conn: &mut Conn, plan: layout::Plan, channel: &str) -> Result<(), StoreError> {
    let (c, st) = conn.parts()?;
    let mut tx = c.transaction().map_err(pg)?;
    let locks = locks_of(&plan);
    if !locks.is_empty() {
        tx.execute(&st.lock, &[&locks]).map_err(pg)?;
    }
    let mut writes: Vec<layout::Op> = Vec::new();
    {
        let kv = ClientKv::new(&mut tx, st);
        for a in &plan.appends {
            let stored = kv.get(Tree::Instances, &layout::instance_key(a.id))?;
            layout::check_version(a.id, a.expected_version, stored.as_deref())?;
            writes.extend(layout::append_ops(a, stored.as_deref())?);
        }
        for (procedure, expected) in &plan.schedule_checks {
            let stored = kv.get(Tree::Schedules, procedure.as_bytes())?;
            layout::check_schedule(procedure, *expected, stored.as_deref())?;
        }
    }
    writes.extend(plan.ops);
    Writes::new(writes).apply(&mut tx, st, channel)?;
    tx.commit().map_err(pg)
}

/// Due timers (by `now_ms`) of instances no other node holds a claim on, those instances
/// now claimed by `node` for `CLAIM_SECONDS`, oldest first. Instances this node already
/// claims count as unclaimed (a firing that lost a race is re-decided by the same node).
pub(super) fn claim_due(
    conn: &mut Conn,
    node: &str,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<TimerRow>, StoreError> {
    let (c, st) = conn.parts()?;
    // A timer key is its due time and two ids: every key due by `now_ms` sorts before
    // `now_ms` followed by more 0xff bytes than the ids take.
    let mut bound = layout::ordered_ms(now_ms).to_vec();
    bound.extend_from_slice(&[0xff; 40]);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c
        .query(
            &st.claim,
            &[
                &tree_code(Tree::Timers),
                &bound,
                &node,
                &limit,
                &CLAIM_SECONDS,
            ],
        )
        .map_err(pg)?;
    rows.iter()
        .map(|r| layout::decode_timer(r.get::<_, &[u8]>(0), r.get::<_, &[u8]>(1)))
        .collect()
}

/// The claim statement (prepared per connection). A lease is per instance, not per timer:
/// an instance's due timers are fired by one node, in due order (a reminder never after its
/// own breach because another node held it). The due rows are read in key (due) order, so
/// an instance's rows in the batch are always its earliest; the upsert decides between two
/// nodes whose snapshots both saw an instance unclaimed (the second waits for the first's
/// insert, then finds it taken).
pub(super) const CLAIM_SQL: &str = "
WITH due AS (
    SELECT key, value, substring(key FROM 9 FOR 16) AS instance FROM kv
    WHERE tree = $1 AND key < $2
      AND NOT EXISTS (SELECT 1 FROM timer_claims c
                      WHERE c.instance = substring(kv.key FROM 9 FOR 16)
                        AND c.node <> $3 AND c.until > clock_timestamp())
    ORDER BY key LIMIT $4
), claimed AS (
    INSERT INTO timer_claims (instance, node, until)
    SELECT instance, $3, clock_timestamp() + make_interval(secs => $5)
    FROM (SELECT DISTINCT instance FROM due) AS d
    ON CONFLICT (instance) DO UPDATE SET node = excluded.node, until = excluded.until
        WHERE timer_claims.node = excluded.node OR timer_claims.until <= clock_timestamp()
    RETURNING instance
)
SELECT due.key, due.value FROM due JOIN claimed USING (instance) ORDER BY due.key";

#[cfg(test)]
mod tests {
    use super::*;

    fn op(tree: Tree, key: &[u8], value: Option<&[u8]>) -> layout::Op {
        layout::Op {
            tree,
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    /// A timer key: due time (8 bytes), instance (16), timer (16).
    fn timer_key(due: u8, instance: u8, timer: u8) -> Vec<u8> {
        let mut k = vec![0u8; 40];
        k[7] = due;
        k[8..24].fill(instance);
        k[24..].fill(timer);
        k
    }

    #[test]
    fn the_last_write_of_a_key_wins_and_timers_are_noticed() {
        let w = Writes::new(vec![
            op(Tree::Tasks, b"a", Some(b"1")),
            op(Tree::Tasks, b"a", None),
            op(Tree::Tasks, b"b", None),
            op(Tree::Tasks, b"b", Some(b"2")),
            op(Tree::Timers, &timer_key(9, 1, 1), Some(b"t")),
            op(Tree::Timers, &timer_key(8, 1, 2), Some(b"t")),
            op(Tree::Timers, &timer_key(3, 2, 1), None),
            op(Tree::Timers, &timer_key(4, 2, 2), None),
        ]);
        assert_eq!(w.del_k[0], b"a".to_vec());
        assert_eq!(w.del_k.len(), 3);
        assert_eq!(w.up_k[0], b"b".to_vec());
        assert_eq!(w.up_v[0], b"2".to_vec());
        // The instance that lost timers, once.
        assert_eq!(w.fired, vec![vec![2u8; 16]]);
        // The earliest armed due time, not the first key written.
        assert_eq!(w.wake.as_deref(), Some("0000000000000008"));
    }

    #[test]
    fn a_commit_without_timers_wakes_nobody() {
        let w = Writes::new(vec![op(Tree::Tasks, b"a", Some(b"1"))]);
        assert!(w.wake.is_none() && w.fired.is_empty());
    }
}
