//! Commits and timer claims on PostgreSQL: the write side of `postgres.rs`.
//!
//! A commit is one transaction: advisory locks on the instances it appends to (in id
//! order, so two commits never wait on each other in a cycle), their stored versions
//! compared, the hash chain continued from the stored head, then one delete and one upsert.
//! (A one-round-trip variant — reads first, then one call of a PL/pgSQL function that locks,
//! re-checks and writes — measured slower on this workload: 20–30 % fewer completions per
//! second, its statements planned again inside the function; it is not kept.)
//!
//! Due timers are claimed before they are fired (`claim_due`): a lease per instance in
//! `timer_claims`, so two nodes never decide the same firing and an instance's timers fire
//! in due order; the commit that fires (or disarms) a timer removes the row and the lease
//! together, and a lease of a node that died runs out after `CLAIM_SECONDS`.
//!
//! Work one node of several does at a time (the outbox's sending) is held by a lease in
//! `leases` (`hold_lease`), renewed by its holder and taken over once it runs out.
//!
//! A commit that arms a timer says so to its caller, which tells the other nodes with a
//! `NOTIFY` of its own, outside the commit: a notifying transaction takes a database-wide
//! lock at commit, which would queue every commit behind it and undo the group commit.
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

/// The channel a schema's nodes announce armed timers on (a channel name is at most 63
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
    /// Whether a timer is armed (other nodes' schedulers should look again).
    pub(super) arms: bool,
}

impl Writes {
    pub(super) fn new(ops: Vec<layout::Op>) -> Writes {
        let mut last: BTreeMap<(i16, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
        let timers = tree_code(Tree::Timers);
        for op in ops {
            last.insert((tree_code(op.tree), op.key), op.value);
        }
        let mut w = Writes::default();
        let mut fired = std::collections::BTreeSet::new();
        for ((t, k), v) in last {
            match v {
                Some(v) => {
                    w.arms |= t == timers;
                    w.up_t.push(t);
                    w.up_k.push(k);
                    w.up_v.push(v);
                }
                None => {
                    if t == timers {
                        if let Ok(row) = layout::decode_timer(&k, &[]) {
                            fired.insert(row.instance);
                        }
                    }
                    w.del_t.push(t);
                    w.del_k.push(k);
                }
            }
        }
        w.fired = fired.iter().map(|id| id.as_bytes().to_vec()).collect();
        w
    }

    /// Writes them inside `tx` (the careful path and `store copy`).
    pub(super) fn apply(
        &self,
        tx: &mut postgres::Transaction<'_>,
        st: &Stmts,
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
        Ok(())
    }
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
    // Two retries racing with one key: the second waits for the first's commit, then
    // finds its record.
    if let Some(c) = &plan.idempotency {
        locks.push(name_lock(3, &String::from_utf8_lossy(&c.key)));
    }
    locks.sort_unstable();
    locks.dedup();
    locks
}

/// Commits `plan` as one transaction: locks, reads and writes; `Conflict` and
/// `ScheduleMoved` roll it back whole. Returns whether it armed a timer.
pub(super) fn commit(conn: &mut Conn, plan: layout::Plan) -> Result<bool, StoreError> {
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
        if let Some(c) = &plan.idempotency {
            let stored = kv.get(Tree::Idempotency, &c.key)?;
            super::idempotency::check(c, stored.as_deref())?;
        }
    }
    writes.extend(plan.ops);
    let w = Writes::new(writes);
    w.apply(&mut tx, st)?;
    tx.commit().map_err(pg)?;
    Ok(w.arms)
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
    let mut attempt = 0;
    let rows = loop {
        let r = c.query(
            &st.claim,
            &[
                &tree_code(Tree::Timers),
                &bound,
                &node,
                &limit,
                &CLAIM_SECONDS,
            ],
        );
        match r {
            Ok(rows) => break rows,
            // The statement was rolled back whole: claiming again is safe, and a deadlock
            // or serialization failure says another node was claiming at the same moment.
            Err(e)
                if attempt < 3
                    && e.code().is_some_and(|c| {
                        *c == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                            || *c == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                    }) =>
            {
                attempt += 1;
            }
            Err(e) => return Err(pg(e)),
        }
    };
    rows.iter()
        .map(|r| layout::decode_timer(r.get::<_, &[u8]>(0), r.get::<_, &[u8]>(1)))
        .collect()
}

/// The claim statement (prepared per connection). A lease is per instance, not per timer:
/// an instance's due timers are fired by one node, in due order (a reminder never after its
/// own breach because another node held it). The due rows are read in key (due) order, so
/// an instance's rows in the batch are always its earliest; the upsert decides between two
/// nodes whose snapshots both saw an instance unclaimed (the second waits for the first's
/// insert, then finds it taken). Claims are inserted in instance order, the order a firing
/// commit's `unclaim` deletes them in: two nodes claiming overlapping instances in different
/// orders deadlocked (PostgreSQL aborts one with 40P01; seen by the crash test).
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
    FROM (SELECT DISTINCT instance FROM due ORDER BY instance) AS d
    ON CONFLICT (instance) DO UPDATE SET node = excluded.node, until = excluded.until
        WHERE timer_claims.node = excluded.node OR timer_claims.until <= clock_timestamp()
    RETURNING instance
)
SELECT due.key, due.value FROM due JOIN claimed USING (instance) ORDER BY due.key";

/// Takes or renews the lease `name` for `node` for `seconds` (the database's clock decides,
/// so nodes whose clocks differ still agree): granted when nobody holds it, this node
/// does, or the holder's ran out. One statement, so two nodes asking at once get one answer
/// each from the row's lock.
pub(super) fn hold_lease(
    conn: &mut Conn,
    node: &str,
    name: &str,
    seconds: f64,
) -> Result<bool, StoreError> {
    let (c, _) = conn.parts()?;
    let rows = c
        .query(
            "INSERT INTO leases (name, node, until)
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
             ON CONFLICT (name) DO UPDATE SET node = excluded.node, until = excluded.until
                 WHERE leases.node = excluded.node OR leases.until <= clock_timestamp()
             RETURNING node",
            &[&name, &node, &seconds],
        )
        .map_err(pg)?;
    Ok(!rows.is_empty())
}

/// Ends `node`'s lease `name` now (nothing when another node holds it).
pub(super) fn release_lease(conn: &mut Conn, node: &str, name: &str) -> Result<(), StoreError> {
    let (c, _) = conn.parts()?;
    c.execute(
        "DELETE FROM leases WHERE name = $1 AND node = $2",
        &[&name, &node],
    )
    .map_err(pg)?;
    Ok(())
}

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
        assert!(w.arms);
    }

    #[test]
    fn a_commit_without_timers_wakes_nobody() {
        let w = Writes::new(vec![op(Tree::Tasks, b"a", Some(b"1"))]);
        assert!(!w.arms && w.fired.is_empty());
    }
}
