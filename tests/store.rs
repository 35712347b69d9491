//! Store contract tests: every test in `suite!` runs against `MemoryStore`, `SledStore` and
//! (when `SOPFLOW_TEST_POSTGRES` names a database) `PgStore`, so the engine can trust that the in-memory store it tests against behaves
//! like the one it ships with. Sled-only tests (reopen, format marker, durability) follow.
//! These tests must not reach into a store's internals except through `dump()` and, for the
//! format tests, by opening the data directory with plain sled.

use std::sync::Arc;

use sopflow::store::memory::MemoryStore;
use sopflow::store::postgres::PgStore;
use sopflow::store::sled_store::{SledOptions, SledStore};
use sopflow::store::{
    chain, AuditQuery, Commit, EventSummary, IdempotencyRecord, IdempotencyWrite, InstanceWrite,
    NewEvent, ProcedureRecord, StatusChange, Store, StoreError, TaskRow, TimerRow, WorklistQuery,
};
use uuid::Uuid;

type Dump = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

fn new_id() -> Uuid {
    Uuid::now_v7()
}

fn write(id: Uuid, expected: u64, events: usize) -> InstanceWrite {
    InstanceWrite {
        id,
        procedure: "p".into(),
        expected_version: expected,
        events: (0..events)
            .map(|i| {
                let seq = expected + 1 + i as u64;
                NewEvent {
                    bytes: format!("event {seq} of {id}").into_bytes(),
                    summary: EventSummary {
                        at_ms: seq as i64 * 1000,
                        kind: "test".into(),
                        user: None,
                        on_behalf_of: None,
                    },
                }
            })
            .collect(),
        snapshot: format!("snapshot of {id} at {}", expected + events as u64).into_bytes(),
    }
}

fn create(id: Uuid, procedure: &str, status: &str) -> Commit {
    Commit {
        instances: vec![write(id, 0, 1)],
        statuses: vec![StatusChange {
            instance: id,
            procedure: procedure.into(),
            from: None,
            to: status.into(),
        }],
        ..Commit::default()
    }
}

fn task(instance: Uuid, roles: &[&str], assignee: Option<&str>, due_ms: Option<i64>) -> TaskRow {
    TaskRow {
        task: new_id(),
        instance,
        procedure: "complaint-handling".into(),
        step: "register".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        assignee: assignee.map(str::to_string),
        due_ms,
        deadline: String::new(),
        opens_ms: None,
    }
}

fn timer(due_ms: i64, instance: Uuid) -> TimerRow {
    TimerRow {
        due_ms,
        instance,
        timer: new_id(),
        payload: format!("fire at {due_ms}").into_bytes(),
    }
}

fn record(id: &str, version: u32, hash: &str) -> ProcedureRecord {
    ProcedureRecord {
        id: id.into(),
        version,
        hash: hash.into(),
        source: format!("id = \"{id}\"\nversion = {version}\n"),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn tree<'a>(dump: &'a Dump, name: &str) -> &'a [(Vec<u8>, Vec<u8>)] {
    dump.iter()
        .find(|(n, _)| n == name)
        .map(|(_, e)| e.as_slice())
        .unwrap_or(&[])
}

// ---------------------------------------------------------------------------------------
// The shared suite
// ---------------------------------------------------------------------------------------

async fn cas_same_version_twice<S: Store>(s: S) {
    let id = new_id();
    s.commit(create(id, "p", "open")).await.unwrap();
    s.commit(Commit {
        instances: vec![write(id, 1, 2)],
        ..Commit::default()
    })
    .await
    .unwrap();
    let before = s.dump().unwrap();
    let err = s
        .commit(Commit {
            instances: vec![write(id, 1, 1)],
            open_tasks: vec![task(id, &["sales"], None, None)],
            arm_timers: vec![timer(5, id)],
            ..Commit::default()
        })
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            instance,
            expected,
            found,
        } => {
            assert_eq!((instance, expected, found), (id, 1, 3));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        s.dump().unwrap(),
        before,
        "a conflicting commit wrote something"
    );
    assert_eq!(s.instance(id).unwrap().unwrap().version, 3);
}

async fn create_twice_conflicts<S: Store>(s: S) {
    let id = new_id();
    s.commit(create(id, "p", "open")).await.unwrap();
    let before = s.dump().unwrap();
    let err = s.commit(create(id, "p", "open")).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 0,
                found: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.dump().unwrap(), before);
    // Updating an instance that does not exist conflicts too.
    let err = s
        .commit(Commit {
            instances: vec![write(new_id(), 4, 1)],
            ..Commit::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 4,
                found: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.dump().unwrap(), before);
}

async fn race_64<S: Store>(s: S) {
    let s = Arc::new(s);
    let id = new_id();
    s.commit(create(id, "p", "open")).await.unwrap();
    let mut racers = Vec::new();
    for i in 0..64 {
        let s = Arc::clone(&s);
        racers.push(tokio::spawn(async move {
            let mut w = write(id, 1, 1);
            w.snapshot = format!("winner {i}").into_bytes();
            (
                i,
                s.commit(Commit {
                    instances: vec![w],
                    ..Commit::default()
                })
                .await,
            )
        }));
    }
    let mut winners = Vec::new();
    for r in racers {
        let (i, result) = r.await.unwrap();
        match result {
            Ok(()) => winners.push(i),
            Err(StoreError::Conflict {
                expected: 1,
                found: 2,
                ..
            }) => {}
            Err(other) => panic!("racer {i}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = s.instance(id).unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(
        stored.snapshot,
        format!("winner {}", winners[0]).into_bytes()
    );
    assert_eq!(s.history(id, 1, 100).unwrap().len(), 2);
}

async fn second_cas_fails_nothing_written<S: Store>(s: S) {
    let (a, b) = (new_id(), new_id());
    s.commit(create(a, "p", "open")).await.unwrap();
    s.commit(create(b, "p", "open")).await.unwrap();
    let before = s.dump().unwrap();
    let err = s
        .commit(Commit {
            instances: vec![write(a, 1, 1), write(b, 7, 1)],
            statuses: vec![StatusChange {
                instance: a,
                procedure: "p".into(),
                from: Some("open".into()),
                to: "done".into(),
            }],
            open_tasks: vec![task(a, &["sales"], Some("ann"), None)],
            arm_timers: vec![timer(1, a)],
            ..Commit::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { instance, .. } if instance == b),
        "{err:?}"
    );
    assert_eq!(s.dump().unwrap(), before);
}

async fn task_index_open_close<S: Store>(s: S) {
    let id = new_id();
    s.commit(create(id, "p", "open")).await.unwrap();
    let before = s.dump().unwrap();
    let t1 = task(id, &["sales", "quality"], Some("ann"), Some(3_000));
    let t2 = task(id, &["quality"], None, Some(1_000));
    let t3 = task(id, &[], Some("bob"), None);
    s.commit(Commit {
        instances: vec![write(id, 1, 1)],
        open_tasks: vec![t1.clone(), t2.clone(), t3.clone()],
        ..Commit::default()
    })
    .await
    .unwrap();
    assert_eq!(s.task(t1.task).unwrap().as_ref(), Some(&t1));
    assert_eq!(
        s.tasks_for(&strings(&["sales"]), "nobody").unwrap(),
        vec![t1.clone()]
    );
    // Deduplicated across roles and the assignee, sorted by due time, undated last.
    assert_eq!(
        s.tasks_for(&strings(&["sales", "quality"]), "ann").unwrap(),
        vec![t2.clone(), t1.clone()]
    );
    assert_eq!(
        s.tasks_for(&strings(&["quality"]), "bob").unwrap(),
        vec![t2.clone(), t1.clone(), t3.clone()]
    );
    assert_eq!(s.tasks_for(&[], "bob").unwrap(), vec![t3.clone()]);
    assert!(
        s.tasks_for(&strings(&["sale"]), "an").unwrap().is_empty(),
        "prefix, not exact match"
    );

    s.commit(Commit {
        instances: vec![write(id, 2, 1)],
        closed_tasks: vec![t1.clone(), t2.clone(), t3.clone()],
        ..Commit::default()
    })
    .await
    .unwrap();
    let after = s.dump().unwrap();
    for name in ["tasks_by_role", "tasks_by_assignee"] {
        assert_eq!(
            tree(&after, name),
            tree(&before, name),
            "{name} still holds keys"
        );
    }
    // Closed tasks leave a tombstone naming their instance, and nothing else.
    let tombstones: Vec<(Vec<u8>, Vec<u8>)> = [&t1, &t2, &t3]
        .iter()
        .map(|t| (t.task.as_bytes().to_vec(), t.instance.as_bytes().to_vec()))
        .collect();
    let mut tombstones = tombstones;
    tombstones.sort();
    assert_eq!(tree(&after, "tasks"), tombstones);
    assert!(s.task(t1.task).unwrap().is_none());
    assert_eq!(s.task_instance(t1.task).unwrap(), Some(t1.instance));
    assert_eq!(s.task_instance(uuid::Uuid::nil()).unwrap(), None);
    assert!(s
        .tasks_for(&strings(&["sales", "quality"]), "ann")
        .unwrap()
        .is_empty());
}

async fn reopen_task_with_new_roles<S: Store>(s: S) {
    let id = new_id();
    s.commit(create(id, "p", "open")).await.unwrap();
    let old = task(id, &["sales", "quality"], Some("ann"), Some(10));
    s.commit(Commit {
        instances: vec![write(id, 1, 1)],
        open_tasks: vec![old.clone()],
        ..Commit::default()
    })
    .await
    .unwrap();
    let mut new = old.clone();
    new.roles = strings(&["quality", "management_rep"]);
    new.assignee = None;
    new.due_ms = Some(20);
    s.commit(Commit {
        instances: vec![write(id, 2, 1)],
        closed_tasks: vec![old.clone()],
        open_tasks: vec![new.clone()],
        ..Commit::default()
    })
    .await
    .unwrap();
    assert_eq!(s.task(old.task).unwrap(), Some(new.clone()));
    assert!(s.tasks_for(&strings(&["sales"]), "ann").unwrap().is_empty());
    assert_eq!(
        s.tasks_for(&strings(&["quality"]), "x").unwrap(),
        vec![new.clone()]
    );
    assert_eq!(
        s.tasks_for(&strings(&["management_rep"]), "x").unwrap(),
        vec![new.clone()]
    );
    let dump = s.dump().unwrap();
    assert_eq!(tree(&dump, "tasks").len(), 1);
    assert_eq!(tree(&dump, "tasks_by_role").len(), 2);
    assert_eq!(tree(&dump, "tasks_by_assignee").len(), 0);
}

/// Walks every page of a listing with page size `limit`.
fn all_pages<S: Store>(
    s: &S,
    procedure: Option<&str>,
    status: Option<&str>,
    limit: usize,
) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = s
            .instances(procedure, status, cursor.as_deref(), limit)
            .unwrap();
        assert!(page.items.len() <= limit);
        out.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

async fn status_index_and_paging<S: Store>(s: S) {
    // 7 instances: p/open ×3, p/done ×2, q/open ×2; created in this order.
    let plan = [
        ("p", "open"),
        ("q", "open"),
        ("p", "open"),
        ("p", "done"),
        ("q", "open"),
        ("p", "open"),
        ("p", "done"),
    ];
    let mut ids = Vec::new();
    for (procedure, status) in plan {
        let id = new_id();
        s.commit(create(id, procedure, "open")).await.unwrap();
        if status == "done" {
            s.commit(Commit {
                instances: vec![write(id, 1, 1)],
                statuses: vec![StatusChange {
                    instance: id,
                    procedure: procedure.into(),
                    from: Some("open".into()),
                    to: "done".into(),
                }],
                ..Commit::default()
            })
            .await
            .unwrap();
        }
        ids.push((id, procedure, status));
    }
    let expect = |p: Option<&str>, st: Option<&str>| -> Vec<Uuid> {
        ids.iter()
            .filter(|(_, pp, ss)| p.is_none_or(|p| p == *pp) && st.is_none_or(|st| st == *ss))
            .map(|(id, _, _)| *id)
            .collect()
    };
    for p in [None, Some("p"), Some("q"), Some("r")] {
        for st in [None, Some("open"), Some("done"), Some("gone")] {
            let want = expect(p, st);
            for limit in [1, 2, 3, 100] {
                assert_eq!(
                    all_pages(&s, p, st, limit),
                    want,
                    "procedure {p:?} status {st:?} limit {limit}"
                );
            }
        }
    }
    // A page that ends exactly at the last item says so.
    let page = s.instances(Some("p"), Some("done"), None, 2).unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.next, None);
    // A cursor that is not one the store handed out is refused, not misread.
    assert!(matches!(
        s.instances(None, None, Some(b"xyz"), 2),
        Err(StoreError::Invalid(_))
    ));
}

async fn timers<S: Store>(s: S) {
    let id = new_id();
    s.commit(create(id, "p", "open")).await.unwrap();
    assert_eq!(s.next_timer().unwrap(), None);
    assert!(s.due_timers(i64::MAX, 10).unwrap().is_empty());
    let dues = [5_000, -3, 0, i64::MIN, 1, -1_000_000, i64::MAX, 0];
    let rows: Vec<TimerRow> = dues.iter().map(|&d| timer(d, id)).collect();
    s.commit(Commit {
        instances: vec![write(id, 1, 1)],
        arm_timers: rows.clone(),
        ..Commit::default()
    })
    .await
    .unwrap();
    let mut sorted = rows.clone();
    sorted.sort_by_key(|t| (t.due_ms, t.instance, t.timer));
    assert_eq!(s.next_timer().unwrap().as_ref(), Some(&sorted[0]));
    assert_eq!(s.due_timers(i64::MAX, 100).unwrap(), sorted);
    let due_now: Vec<_> = sorted.iter().filter(|t| t.due_ms <= 0).cloned().collect();
    assert_eq!(
        s.due_timers(0, 100).unwrap(),
        due_now,
        "due at or before now, earliest first"
    );
    assert_eq!(s.due_timers(0, 2).unwrap(), due_now[..2].to_vec());
    // One process alone may fire whatever is due, again after a failed try.
    for _ in 0..2 {
        assert_eq!(s.claim_due_timers(0, 100).unwrap(), due_now);
        assert_eq!(s.claim_due_timers(i64::MAX, 100).unwrap(), sorted);
    }
    assert!(s.due_timers(i64::MIN, 100).unwrap().len() == 1);
    // Disarm the earliest two; the next one is now the earliest.
    s.commit(Commit {
        instances: vec![write(id, 2, 1)],
        disarm_timers: sorted[..2].to_vec(),
        ..Commit::default()
    })
    .await
    .unwrap();
    assert_eq!(s.next_timer().unwrap().as_ref(), Some(&sorted[2]));
    assert_eq!(s.due_timers(i64::MAX, 100).unwrap(), sorted[2..].to_vec());
    // Disarm and re-arm the same timer at another time in one commit: it moves.
    let mut moved = sorted[2].clone();
    moved.due_ms = 42;
    s.commit(Commit {
        instances: vec![write(id, 3, 1)],
        disarm_timers: vec![sorted[2].clone()],
        arm_timers: vec![moved.clone()],
        ..Commit::default()
    })
    .await
    .unwrap();
    assert!(s
        .due_timers(41, 100)
        .unwrap()
        .iter()
        .all(|t| t.timer != moved.timer));
    assert!(s.due_timers(42, 100).unwrap().contains(&moved));
}

async fn procedures<S: Store>(s: S) {
    assert!(s.procedures().unwrap().is_empty());
    let a1 = record("complaint-handling", 1, "aaa");
    s.put_procedure(a1.clone()).await.unwrap();
    let before = s.dump().unwrap();
    s.put_procedure(a1.clone()).await.unwrap();
    assert_eq!(s.dump().unwrap(), before, "same hash again is a no-op");
    let err = s
        .put_procedure(record("complaint-handling", 1, "bbb"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::ProcedureChanged { id, version: 1 } if id == "complaint-handling"),
        "{err:?}"
    );
    assert_eq!(s.dump().unwrap(), before);
    let a2 = record("complaint-handling", 2, "bbb");
    let a10 = record("complaint-handling", 10, "ccc");
    let r1 = record("recall", 1, "ddd");
    let c1 = record("complaint", 1, "eee");
    for r in [&a10, &r1, &a2, &c1] {
        s.put_procedure(r.clone()).await.unwrap();
    }
    assert_eq!(
        s.procedure("complaint-handling", 2).unwrap(),
        Some(a2.clone())
    );
    assert_eq!(s.procedure("complaint-handling", 3).unwrap(), None);
    assert_eq!(s.procedure("complaint", 1).unwrap(), Some(c1.clone()));
    // By id, then by version numerically (10 after 2); "complaint" before "complaint-handling".
    assert_eq!(s.procedures().unwrap(), vec![c1, a1, a2, a10, r1]);
}

async fn history_paging<S: Store>(s: S) {
    let (id, other) = (new_id(), new_id());
    s.commit(create(other, "p", "open")).await.unwrap();
    s.commit(create(id, "p", "open")).await.unwrap();
    s.commit(Commit {
        instances: vec![write(id, 1, 4)],
        ..Commit::default()
    })
    .await
    .unwrap();
    s.commit(Commit {
        instances: vec![write(id, 5, 5)],
        ..Commit::default()
    })
    .await
    .unwrap();
    assert_eq!(s.instance(id).unwrap().unwrap().version, 10);
    let all = s.history(id, 1, 100).unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(all[6].bytes, format!("event 7 of {id}").into_bytes());
    let mut paged = Vec::new();
    let mut from = 1;
    loop {
        let page = s.history(id, from, 3).unwrap();
        if page.is_empty() {
            break;
        }
        from = page.last().unwrap().seq + 1;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(
        s.history(id, 0, 2).unwrap(),
        all[..2].to_vec(),
        "seq 0 starts at the first event"
    );
    assert!(s.history(id, 11, 5).unwrap().is_empty());
    assert!(s.history(id, 1, 0).unwrap().is_empty());
    assert!(s.history(new_id(), 1, 5).unwrap().is_empty());
    assert_eq!(s.history(other, 1, 100).unwrap().len(), 1);
}

async fn nul_rejected<S: Store>(s: S) {
    let id = new_id();
    s.commit(create(id, "p", "open")).await.unwrap();
    let before = s.dump().unwrap();
    let bad_commits = [
        create(new_id(), "p\0q", "open"),
        create(new_id(), "p", "op\0en"),
        Commit {
            instances: vec![write(id, 1, 1)],
            open_tasks: vec![task(id, &["sa\0les"], None, None)],
            ..Commit::default()
        },
        Commit {
            instances: vec![write(id, 1, 1)],
            open_tasks: vec![task(id, &["sales"], Some("a\0nn"), None)],
            ..Commit::default()
        },
        Commit {
            instances: vec![write(id, 1, 1), write(id, 2, 1)],
            ..Commit::default()
        },
    ];
    for c in bad_commits {
        let err = s.commit(c.clone()).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{c:?}: {err:?}");
    }
    assert!(matches!(
        s.put_procedure(record("a\0b", 1, "h")).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.tasks_for(&strings(&["a\0"]), "u"),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.tasks_for(&[], "u\0"),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.instances(Some("p\0"), None, None, 5),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(s.procedure("p\0", 1), Err(StoreError::Invalid(_))));
    assert_eq!(s.dump().unwrap(), before);
}

/// A scripted sequence of commits whose final `dump()` is compared across implementations.
async fn script<S: Store>(s: &S, ids: &[Uuid], tasks: &[TaskRow], timers: &[TimerRow]) {
    s.put_procedure(record("p", 1, "h")).await.unwrap();
    for &id in ids {
        s.commit(create(id, "p", "open")).await.unwrap();
    }
    s.commit(Commit {
        instances: vec![write(ids[0], 1, 2), write(ids[1], 1, 1)],
        open_tasks: tasks.to_vec(),
        arm_timers: timers.to_vec(),
        statuses: vec![StatusChange {
            instance: ids[1],
            procedure: "p".into(),
            from: Some("open".into()),
            to: "waiting".into(),
        }],
        ..Commit::default()
    })
    .await
    .unwrap();
    s.commit(Commit {
        instances: vec![write(ids[0], 3, 1)],
        closed_tasks: vec![tasks[0].clone()],
        disarm_timers: vec![timers[0].clone()],
        ..Commit::default()
    })
    .await
    .unwrap();
    assert!(s.commit(create(ids[2], "p", "open")).await.is_err());
}

// ---------------------------------------------------------------------------------------
// Hash chain and audit index
// ---------------------------------------------------------------------------------------

/// A commit creating `id` with events by the given (kind, user, on_behalf_of, at_ms).
fn events_of(
    id: Uuid,
    procedure: &str,
    expected: u64,
    events: &[(&str, Option<&str>, Option<&str>, i64)],
) -> Commit {
    Commit {
        instances: vec![InstanceWrite {
            id,
            procedure: procedure.into(),
            expected_version: expected,
            events: events
                .iter()
                .enumerate()
                .map(|(i, (kind, user, behalf, at))| NewEvent {
                    bytes: format!(
                        "{{\"seq\":{},\"kind\":\"{kind}\"}}",
                        expected + 1 + i as u64
                    )
                    .into_bytes(),
                    summary: EventSummary {
                        at_ms: *at,
                        kind: (*kind).into(),
                        user: user.map(str::to_string),
                        on_behalf_of: behalf.map(str::to_string),
                    },
                })
                .collect(),
            snapshot: b"s".to_vec(),
        }],
        ..Commit::default()
    }
}

async fn chain_links_every_event<S: Store>(s: S) {
    let id = new_id();
    s.commit(create(id, "p", "open")).await.unwrap();
    s.commit(Commit {
        instances: vec![write(id, 1, 3)],
        ..Commit::default()
    })
    .await
    .unwrap();
    let history = s.history(id, 1, 100).unwrap();
    let mut previous = chain::GENESIS;
    for e in &history {
        assert_eq!(
            e.hash,
            chain::link(id, e.seq, &previous, &e.bytes),
            "event {}",
            e.seq
        );
        previous = e.hash;
    }
    assert_eq!(s.instance(id).unwrap().unwrap().head, previous);
    let other = new_id();
    s.commit(create(other, "p", "open")).await.unwrap();
    let mut seen = Vec::new();
    let v = s.verify(&mut |n| seen.push(n)).unwrap();
    assert!(v.intact(), "{v:?}");
    assert_eq!((v.instances, v.events, v.broken), (2, 5, 0));
    assert_eq!(seen.last(), Some(&5));
    let one = s.verify_instance(id).unwrap().expect("the instance exists");
    assert!(one.intact(), "{one:?}");
    assert_eq!((one.instances, one.events, one.broken), (1, 4, 0));
    assert_eq!(
        s.verify_instance(new_id()).unwrap(),
        None,
        "no such instance"
    );
    // A refused commit leaves the chain as it was.
    let before = s.dump().unwrap();
    assert!(s
        .commit(Commit {
            instances: vec![write(id, 1, 1)],
            ..Commit::default()
        })
        .await
        .is_err());
    assert_eq!(s.dump().unwrap(), before);
}

async fn audit_queries_filter_and_page<S: Store>(s: S) {
    let (a, b) = (new_id(), new_id());
    s.commit(events_of(
        a,
        "complaint",
        0,
        &[
            ("started", Some("ann"), None, 1_000),
            ("task_opened", None, None, 1_000),
            ("task_completed", Some("bob"), Some("ann"), 5_000),
            ("ended", None, None, 5_000),
        ],
    ))
    .await
    .unwrap();
    s.commit(events_of(
        b,
        "recall",
        0,
        &[
            ("started", Some("bob"), None, 2_000),
            ("deadline_breached", None, None, 9_000),
            ("task_completed", Some("annie"), None, 12_000),
        ],
    ))
    .await
    .unwrap();
    let q = |actor: Option<&str>, procedure: Option<&str>, kind: Option<&str>, from, to| {
        let query = AuditQuery {
            actor: actor.map(str::to_string),
            procedure: procedure.map(str::to_string),
            kind: kind.map(str::to_string),
            from_ms: from,
            to_ms: to,
        };
        let page = s.audit(&query, None, 100).unwrap();
        assert_eq!(page.next, None);
        page.items
            .iter()
            .map(|e| (if e.instance == a { 'a' } else { 'b' }, e.seq))
            .collect::<Vec<_>>()
    };
    // Everything, in time order across instances.
    assert_eq!(
        q(None, None, None, None, None),
        [
            ('a', 1),
            ('a', 2),
            ('b', 1),
            ('a', 3),
            ('a', 4),
            ('b', 2),
            ('b', 3)
        ]
    );
    // By actor: ann started `a` and bob completed a step on her behalf; "annie" is not ann.
    assert_eq!(q(Some("ann"), None, None, None, None), [('a', 1), ('a', 3)]);
    assert_eq!(q(Some("bob"), None, None, None, None), [('b', 1), ('a', 3)]);
    assert_eq!(q(Some("annie"), None, None, None, None), [('b', 3)]);
    assert_eq!(q(Some("nobody"), None, None, None, None), []);
    // By procedure and kind, alone and together.
    assert_eq!(
        q(None, Some("recall"), None, None, None),
        [('b', 1), ('b', 2), ('b', 3)]
    );
    assert_eq!(
        q(None, None, Some("task_completed"), None, None),
        [('a', 3), ('b', 3)]
    );
    assert_eq!(
        q(None, Some("complaint"), Some("task_completed"), None, None),
        [('a', 3)]
    );
    assert_eq!(
        q(Some("bob"), None, Some("started"), None, None),
        [('b', 1)]
    );
    assert_eq!(
        q(Some("bob"), Some("complaint"), None, None, None),
        [('a', 3)]
    );
    // Time is [from, to).
    assert_eq!(
        q(None, None, None, Some(2_000), Some(9_000)),
        [('b', 1), ('a', 3), ('a', 4)]
    );
    assert_eq!(q(Some("ann"), None, None, Some(1_001), None), [('a', 3)]);
    assert_eq!(
        q(None, Some("recall"), None, None, Some(9_001)),
        [('b', 1), ('b', 2)]
    );
    // The events come back as stored, with their chain link.
    let page = s.audit(&AuditQuery::default(), None, 1).unwrap();
    let stored = s.history(a, 1, 1).unwrap();
    assert_eq!(page.items[0].event, stored[0].bytes);
    assert_eq!(page.items[0].hash, stored[0].hash);
    assert_eq!(page.items[0].procedure, "complaint");
    // Paging with the cursor gives the same events as one page, whatever the page size and
    // window: a query by time alone merges the per-kind entries, so pages must cut across
    // kinds and instances without losing or repeating an event.
    for (from, to) in [
        (None, None),
        (Some(2_000), Some(9_000)),
        (Some(5_000), None),
    ] {
        let query = AuditQuery {
            from_ms: from,
            to_ms: to,
            ..AuditQuery::default()
        };
        let whole: Vec<_> = s
            .audit(&query, None, 100)
            .unwrap()
            .items
            .iter()
            .map(|e| (e.instance, e.seq))
            .collect();
        for limit in 1..=8 {
            let mut paged = Vec::new();
            let mut cursor: Option<Vec<u8>> = None;
            for _ in 0..=whole.len() {
                let page = s.audit(&query, cursor.as_deref(), limit).unwrap();
                assert!(page.items.len() <= limit);
                paged.extend(page.items.iter().map(|e| (e.instance, e.seq)));
                match page.next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            assert_eq!(paged, whole, "limit {limit}, window {from:?}..{to:?}");
        }
    }
    // Bad filters and cursors are refused, not misread.
    let nul = AuditQuery {
        actor: Some("a\0b".into()),
        ..AuditQuery::default()
    };
    assert!(matches!(
        s.audit(&nul, None, 10),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.audit(&AuditQuery::default(), Some(&[1, 2, 3]), 10),
        Err(StoreError::Invalid(_))
    ));
}

/// Reads every page of a worklist query, checking each page's size.
fn worklist_all<S: Store>(s: &S, q: &WorklistQuery, limit: usize) -> (Vec<TaskRow>, usize) {
    let (mut out, mut cursor, mut pages) = (Vec::new(), None::<Vec<u8>>, 0);
    loop {
        let page = s.worklist(q, cursor.as_deref(), limit).unwrap();
        assert!(page.items.len() <= limit);
        out.extend(page.items);
        pages += 1;
        assert!(pages < 10_000, "paging does not end");
        match page.next {
            Some(n) => cursor = Some(n),
            None => return (out, pages),
        }
    }
}

async fn worklist_pages<S: Store>(s: S) {
    let id = new_id();
    let mut rows = Vec::new();
    // Due times out of order, some tied, some none; offered to one or both roles, some held.
    for i in 0..40i64 {
        let roles: &[&str] = match i % 3 {
            0 => &["sales"],
            1 => &["quality"],
            _ => &["sales", "quality"],
        };
        let assignee = (i % 7 == 0).then_some(if i % 2 == 0 { "ann" } else { "bob" });
        let due = (i % 5 != 0).then_some(((i * 37) % 11) * 1000);
        rows.push(task(id, roles, assignee, due));
    }
    rows.push(task(id, &["other"], Some("ann"), Some(500)));
    let mut c = create(id, "p", "running");
    c.open_tasks = rows.clone();
    s.commit(c).await.unwrap();
    let key = |r: &TaskRow| (r.due_ms.is_none(), r.due_ms, r.task);
    let expect = |pred: &dyn Fn(&TaskRow) -> bool| {
        let mut v: Vec<TaskRow> = rows.iter().filter(|r| pred(r)).cloned().collect();
        v.sort_by_key(key);
        v
    };
    let mine = |r: &TaskRow| {
        r.roles.iter().any(|x| x == "sales" || x == "quality")
            || r.assignee.as_deref() == Some("ann")
    };
    let q = WorklistQuery::everything(&strings(&["sales", "quality"]), "ann");
    for limit in [1, 3, 7, 100] {
        let (got, _) = worklist_all(&s, &q, limit);
        assert_eq!(got, expect(&mine), "limit {limit}");
    }
    assert_eq!(
        s.tasks_for(&strings(&["sales", "quality"]), "ann").unwrap(),
        expect(&mine)
    );
    // Only what ann holds: the assignee stream alone.
    let held = WorklistQuery {
        held_only: true,
        ..q.clone()
    };
    assert_eq!(
        worklist_all(&s, &held, 5).0,
        expect(&|r| r.assignee.as_deref() == Some("ann"))
    );
    // Due before 4 s: stops there; tasks without a due time never match.
    let early = WorklistQuery {
        due_before_ms: Some(4000),
        ..q.clone()
    };
    assert_eq!(
        worklist_all(&s, &early, 4).0,
        expect(&|r| mine(r) && r.due_ms.is_some_and(|d| d < 4000))
    );
    // A filter that keeps almost nothing still ends, and finds what it keeps.
    let target = rows[17].task;
    let rare = WorklistQuery {
        keep: Arc::new(move |r: &TaskRow| r.task == target),
        ..q.clone()
    };
    let (got, _) = worklist_all(&s, &rare, 10);
    assert_eq!(got.iter().map(|r| r.task).collect::<Vec<_>>(), vec![target]);
    // Closed tasks leave every stream.
    let close = Commit {
        closed_tasks: rows[..20].to_vec(),
        ..Commit::default()
    };
    s.commit(close).await.unwrap();
    let rest: Vec<TaskRow> = expect(&mine)
        .into_iter()
        .filter(|r| !rows[..20].iter().any(|c| c.task == r.task))
        .collect();
    assert_eq!(worklist_all(&s, &q, 6).0, rest);
    assert!(matches!(
        s.worklist(&q, Some(b"short"), 5),
        Err(StoreError::Invalid(_))
    ));
}

/// A worklist much larger than one page's budget: each page stays within it, and paging
/// still yields every task once, in order.
async fn worklist_budget<S: Store>(s: S) {
    let id = new_id();
    let n = sopflow::store::worklist::PAGE_BUDGET * 2 + 17;
    let rows: Vec<TaskRow> = (0..n)
        .map(|i| task(id, &["sales"], None, Some(i as i64)))
        .collect();
    let mut c = create(id, "p", "running");
    c.open_tasks = rows.clone();
    s.commit(c).await.unwrap();
    // Keeps one task in a thousand: pages come back short, with a cursor, never failing.
    let q = WorklistQuery {
        keep: Arc::new(|r: &TaskRow| r.due_ms.is_some_and(|d| d % 1000 == 999)),
        ..WorklistQuery::everything(&strings(&["sales"]), "nobody")
    };
    let first = s.worklist(&q, None, 10).unwrap();
    assert!(
        first.items.len() < 10 && first.next.is_some(),
        "{:?}",
        first.items.len()
    );
    let (got, pages) = worklist_all(&s, &q, 10);
    let want: Vec<i64> = (0..n as i64).filter(|d| d % 1000 == 999).collect();
    assert_eq!(
        got.iter().filter_map(|r| r.due_ms).collect::<Vec<_>>(),
        want
    );
    assert!(pages >= 3, "{pages} pages");
}

async fn idempotency_keys<S: Store>(s: S) {
    let (a, b) = (new_id(), new_id());
    let rec = |instance, at_ms| IdempotencyRecord {
        fingerprint: [1; 32],
        at_ms,
        instance,
        version: 1,
    };
    let keyed = |id, at_ms: i64, caller: &str| {
        let mut c = create(id, "p", "running");
        c.idempotency = Some(IdempotencyWrite {
            caller: caller.into(),
            key: "k-1".into(),
            record: rec(id, at_ms),
            stale_before_ms: at_ms - 1000,
        });
        c
    };
    s.commit(keyed(a, 10_000, "ann")).await.unwrap();
    assert_eq!(s.idempotency("ann", "k-1").unwrap(), Some(rec(a, 10_000)));
    assert_eq!(s.idempotency("bob", "k-1").unwrap(), None);
    // The same key again within the window: nothing of the second commit is written.
    let before = s.dump().unwrap();
    assert!(matches!(
        s.commit(keyed(b, 10_500, "ann")).await,
        Err(StoreError::KeyUsed)
    ));
    assert_eq!(s.dump().unwrap(), before);
    assert!(s.instance(b).unwrap().is_none());
    // Another caller's key of the same text is another key.
    s.commit(keyed(b, 10_500, "bob")).await.unwrap();
    // After the window the key may be taken again, and the record is the new one.
    let c = new_id();
    s.commit(keyed(c, 11_001, "ann")).await.unwrap();
    assert_eq!(s.idempotency("ann", "k-1").unwrap(), Some(rec(c, 11_001)));
    assert!(matches!(
        s.idempotency("ann", ""),
        Err(StoreError::Invalid(_))
    ));
}

async fn notifications_newest_first<S: Store>(s: S) {
    use sopflow::store::NotificationRow;
    let (a, b) = (new_id(), new_id());
    let mut rows = Vec::new();
    for i in 0..60i64 {
        rows.push(NotificationRow {
            role: ["sales", "quality", "@ann", "other"][(i % 4) as usize].into(),
            at_ms: (i * 7919) % 23 * 1000,
            instance: if i % 2 == 0 { a } else { b },
            seq: i as u64 + 1,
            task: None,
            message: format!("n{i}"),
        });
    }
    let mut c = create(a, "p", "running");
    c.notifications = rows.clone();
    s.commit(c).await.unwrap();
    let roles = strings(&["sales", "quality", "@ann"]);
    let mut want: Vec<NotificationRow> = rows
        .iter()
        .filter(|r| roles.contains(&r.role))
        .cloned()
        .collect();
    want.sort_by_key(|n| std::cmp::Reverse((n.at_ms, n.instance, n.seq)));
    for limit in [0, 1, 5, 13, 100] {
        let got = s.notifications_for(&roles, limit).unwrap();
        assert_eq!(got, want[..limit.min(want.len())].to_vec(), "limit {limit}");
    }
    // A role that is a prefix of another reads only its own.
    assert!(s
        .notifications_for(&strings(&["sale"]), 10)
        .unwrap()
        .is_empty());
}

fn delivery(dest: &str, instance: u128, seq: u64) -> sopflow::store::Delivery {
    sopflow::store::Delivery {
        destination: dest.to_string(),
        instance: Uuid::from_u128(instance),
        seq,
        procedure: "p".into(),
        kind: "task.opened".into(),
        at_ms: 1_000,
        body: String::new(),
        subject: None,
        attempts: 0,
        next_ms: 0,
        last_error: None,
        done_ms: None,
    }
}

/// The outbox: deliveries by destination in history order, paging, moving between states,
/// the destinations found by skip-scan, sent ones newest first and pruned by time.
async fn stored_hooks<S: Store>(s: S) {
    use sopflow::store::{DeliveryState::*, HookWrite, OutboxWrite};
    let hook = |id: &str, v: Option<&[u8]>| HookWrite {
        id: id.into(),
        value: v.map(<[u8]>::to_vec),
    };
    s.commit(Commit {
        hooks: vec![hook("erp", Some(b"{2}")), hook("crm", Some(b"{1}"))],
        outbox: vec![OutboxWrite::put(Pending, delivery("hook:crm", 1, 1))],
        ..Commit::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.stored_hooks().unwrap(),
        [b"{1}".to_vec(), b"{2}".to_vec()],
        "by id"
    );
    // Beside them, the queues are as they were.
    assert_eq!(s.delivery_destinations(Pending).unwrap(), ["hook:crm"]);
    assert_eq!(
        s.deliveries(Pending, None, None, 10).unwrap().items.len(),
        1
    );
    assert!(s.deliveries(Sent, None, None, 10).unwrap().items.is_empty());
    s.commit(Commit {
        hooks: vec![hook("crm", None)],
        ..Commit::default()
    })
    .await
    .unwrap();
    assert_eq!(s.stored_hooks().unwrap(), [b"{2}".to_vec()]);
    let bad = s
        .commit(Commit {
            hooks: vec![hook("a\0b", Some(b"{}"))],
            ..Commit::default()
        })
        .await;
    assert!(bad.is_err(), "an id with a NUL byte is refused");
    assert_eq!(s.stored_hooks().unwrap(), [b"{2}".to_vec()]);
}

async fn outbox_states<S: Store>(s: S) {
    use sopflow::store::{DeliveryState::*, OutboxWrite};
    let put = |d| OutboxWrite::put(Pending, d);
    let mut writes = Vec::new();
    for (dest, inst, seq) in [
        ("hook:crm", 2, 3),
        ("hook:crm", 1, 2),
        ("hook:crm", 1, 1),
        ("mail:ann", 1, 1),
        ("hook:crm2", 1, 1),
    ] {
        writes.push(put(delivery(dest, inst, seq)));
    }
    s.commit(Commit {
        outbox: writes,
        ..Commit::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.delivery_destinations(Pending).unwrap(),
        ["hook:crm", "hook:crm2", "mail:ann"]
    );
    // One destination's queue: by instance, then history order; paged by one.
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .deliveries(Pending, Some("hook:crm"), cursor.as_deref(), 1)
            .unwrap();
        got.extend(page.items.iter().map(|d| (d.instance.as_u128(), d.seq)));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(got, [(1, 1), (1, 2), (2, 3)]);
    assert_eq!(
        s.deliveries(Pending, None, None, 10).unwrap().items.len(),
        5
    );
    // Sent, dead, retried.
    let mut sent = delivery("hook:crm", 1, 1);
    sent.done_ms = Some(5_000);
    let mut dead = delivery("hook:crm", 1, 2);
    dead.attempts = 10;
    s.commit(Commit {
        outbox: vec![
            OutboxWrite::remove(Pending, delivery("hook:crm", 1, 1)),
            OutboxWrite::put(Sent, sent.clone()),
            OutboxWrite::remove(Pending, delivery("hook:crm", 1, 2)),
            OutboxWrite::put(Dead, dead.clone()),
        ],
        ..Commit::default()
    })
    .await
    .unwrap();
    let at = dead.instance;
    assert_eq!(s.delivery(Dead, at, 2, "hook:crm").unwrap(), Some(dead));
    assert_eq!(s.delivery(Pending, at, 2, "hook:crm").unwrap(), None);
    assert_eq!(
        s.deliveries(Sent, None, None, 10).unwrap().items,
        [sent.clone()]
    );
    assert!(s.sent_before(5_000, 10).unwrap().is_empty());
    assert_eq!(s.sent_before(5_001, 10).unwrap(), [sent]);
    assert_eq!(
        s.deliveries(Pending, Some("hook:crm"), None, 10)
            .unwrap()
            .items
            .len(),
        1
    );
    // A cursor of another list never shows that list's entries: it is clamped to this
    // list's range (before it, a forward list starts at its beginning; past it, it is done).
    let dead_all = s.deliveries(Dead, None, None, 10).unwrap().items;
    assert_eq!(dead_all.len(), 1);
    assert_eq!(
        s.deliveries(Dead, None, Some(b"q-pending"), 10)
            .unwrap()
            .items,
        dead_all
    );
    assert!(s
        .deliveries(Dead, None, Some(b"z"), 10)
        .unwrap()
        .items
        .is_empty());
    // Sent ones are read newest first: past their end is where the list begins.
    assert!(s
        .deliveries(Sent, None, Some(b"a"), 10)
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        s.deliveries(Sent, None, Some(b"zz"), 10)
            .unwrap()
            .items
            .len(),
        1
    );
}

macro_rules! suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn the_chain_links_every_event_and_verifies() {
                super::chain_links_every_event($make).await;
            }
            #[tokio::test]
            async fn audit_queries_filter_by_actor_procedure_kind_and_time() {
                super::audit_queries_filter_and_page($make).await;
            }
            #[tokio::test]
            async fn cas_same_version_twice_one_conflicts_and_writes_nothing() {
                super::cas_same_version_twice($make).await;
            }
            #[tokio::test]
            async fn creating_twice_or_updating_a_missing_instance_conflicts() {
                super::create_twice_conflicts($make).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sixty_four_racers_one_winner() {
                super::race_64($make).await;
            }
            #[tokio::test]
            async fn second_instance_cas_failure_writes_nothing_for_either() {
                super::second_cas_fails_nothing_written($make).await;
            }
            #[tokio::test]
            async fn task_index_open_and_close() {
                super::task_index_open_close($make).await;
            }
            #[tokio::test]
            async fn reopening_a_task_with_other_roles_in_one_commit() {
                super::reopen_task_with_new_roles($make).await;
            }
            #[tokio::test]
            async fn status_index_and_paging_for_every_filter() {
                super::status_index_and_paging($make).await;
            }
            #[tokio::test]
            async fn timers_arm_due_next_disarm() {
                super::timers($make).await;
            }
            #[tokio::test]
            async fn procedure_registry() {
                super::procedures($make).await;
            }
            #[tokio::test]
            async fn history_pages() {
                super::history_paging($make).await;
            }
            #[tokio::test]
            async fn worklist_pages_in_due_order_across_roles() {
                super::worklist_pages($make).await;
            }
            #[tokio::test]
            async fn a_worklist_larger_than_a_page_budget_pages_through_all() {
                super::worklist_budget($make).await;
            }
            #[tokio::test]
            async fn notifications_are_read_newest_first_a_page_at_a_time() {
                super::notifications_newest_first($make).await;
            }
            #[tokio::test]
            async fn idempotency_keys_are_checked_inside_the_commit() {
                super::idempotency_keys($make).await;
            }
            #[tokio::test]
            async fn the_outbox_keeps_each_destinations_queue_in_history_order() {
                super::outbox_states($make).await;
            }
            #[tokio::test]
            async fn subscriptions_made_over_the_api_are_kept_apart_from_the_queues() {
                super::stored_hooks($make).await;
            }
            #[tokio::test]
            async fn nul_bytes_and_duplicate_instances_are_rejected() {
                super::nul_rejected($make).await;
            }
        }
    };
}

fn sled_temp() -> SledStore {
    SledStore::temporary().unwrap()
}

/// A store in a fresh schema of the database `SOPFLOW_TEST_POSTGRES` names (CI sets it:
/// `.ci/run`); without it the PostgreSQL tests say so and pass.
fn pg_temp() -> Option<PgStore> {
    let Ok(url) = std::env::var("SOPFLOW_TEST_POSTGRES") else {
        eprintln!("SOPFLOW_TEST_POSTGRES is not set: the PostgreSQL store is not tested");
        return None;
    };
    Some(PgStore::temporary(&url).expect("the PostgreSQL test database opens"))
}

suite!(memory, MemoryStore::new());
suite!(sled, sled_temp());
// Every commit handed to the thread that writes into sled while the suite reads: the reads
// merge the memtable's layers with sled as they are being applied.
suite!(
    sled_layered,
    SledStore::temporary_with(SledOptions {
        layer_bytes: 1,
        ..SledOptions::default()
    })
    .unwrap()
);
suite!(
    postgres,
    match pg_temp() {
        Some(s) => s,
        None => return,
    }
);

// ---------------------------------------------------------------------------------------
// Across implementations and sled-only
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn memory_and_sled_write_identical_bytes() {
    let ids: Vec<Uuid> = (0..3).map(|_| new_id()).collect();
    let tasks = vec![
        task(ids[0], &["sales", "quality"], Some("ann"), Some(9)),
        task(ids[1], &["quality"], None, None),
    ];
    let timers = vec![timer(-5, ids[0]), timer(7, ids[1])];
    let memory = MemoryStore::new();
    let sled = sled_temp();
    script(&memory, &ids, &tasks, &timers).await;
    script(&sled, &ids, &tasks, &timers).await;
    let (m, s) = (memory.dump().unwrap(), sled.dump().unwrap());
    assert_eq!(m, s);
    if let Some(pg) = pg_temp() {
        script(&pg, &ids, &tasks, &timers).await;
        assert_eq!(pg.dump().unwrap(), m, "PostgreSQL holds the same bytes");
    }
    let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "trees in name order");
}

#[tokio::test]
async fn reopen_gives_an_identical_dump() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| new_id()).collect();
    let tasks = vec![
        task(ids[0], &["sales"], Some("ann"), Some(9)),
        task(ids[1], &["quality"], None, None),
    ];
    let timers = vec![timer(-5, ids[0]), timer(7, ids[1])];
    let before = {
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        script(&s, &ids, &tasks, &timers).await;
        s.dump().unwrap()
    };
    let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
    assert_eq!(s.dump().unwrap(), before);
    assert_eq!(s.instance(ids[0]).unwrap().unwrap().version, 4);
}

#[tokio::test]
async fn an_acknowledged_commit_is_in_the_files_before_the_store_closes() {
    // sled's own periodic flush is off, so only the group-commit flush can have written
    // the commit to the files by the time we copy them (the store is still open).
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let options = SledOptions {
        flush_every_ms: None,
        ..SledOptions::default()
    };
    let s = SledStore::open(dir.path(), options.clone()).unwrap();
    let id = new_id();
    s.commit(create(id, "p", "open")).await.unwrap();
    s.commit(Commit {
        instances: vec![write(id, 1, 2)],
        ..Commit::default()
    })
    .await
    .unwrap();
    copy_dir(dir.path(), copy.path());
    let recovered = SledStore::open(copy.path(), options).unwrap();
    assert_eq!(recovered.instance(id).unwrap().unwrap().version, 3);
    assert_eq!(recovered.history(id, 1, 10).unwrap().len(), 3);
    drop(s);
}

/// Opens the directory with plain sled, waiting out the moment a just-dropped store's IO
/// threads still hold the file lock (see `SledStore::open`).
fn raw_open(path: &std::path::Path) -> ::sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match ::sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("cannot open {}: {e}", path.display()),
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn an_unknown_format_version_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    {
        let db = raw_open(dir.path());
        let meta = db.open_tree("meta").unwrap();
        meta.insert("format", &99u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path(), SledOptions::default())
        .err()
        .expect("must refuse");
    let StoreError::Corrupt(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("format 99") && message.contains("format 5"),
        "{message}"
    );
    assert!(
        message.contains("open it with the sopflow version that wrote it"),
        "{message}"
    );
}

#[tokio::test]
async fn data_without_a_format_marker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = raw_open(dir.path());
        db.open_tree("instances").unwrap().insert("x", "y").unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path(), SledOptions::default())
        .err()
        .expect("must refuse");
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("no format marker")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_corrupt_value_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let id = new_id();
    {
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        s.commit(create(id, "p", "open")).await.unwrap();
    }
    {
        let db = raw_open(dir.path());
        db.open_tree("instances")
            .unwrap()
            .insert(id.as_bytes(), &[1, 2, 3][..])
            .unwrap();
        db.open_tree("timers")
            .unwrap()
            .insert(&[0u8; 5][..], &[][..])
            .unwrap();
        db.flush().unwrap();
    }
    let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
    assert!(matches!(s.instance(id), Err(StoreError::Corrupt(_))));
    assert!(matches!(s.next_timer(), Err(StoreError::Corrupt(_))));
    let err = s
        .commit(Commit {
            instances: vec![write(id, 1, 1)],
            ..Commit::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path(), SledOptions::default()).unwrap();
    let second = SledStore::open(dir.path(), SledOptions::default());
    assert!(
        matches!(second, Err(StoreError::Io(_))),
        "{:?}",
        second.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    let before = s.stats();
    let mut handles = Vec::new();
    for _ in 0..64 {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            for _ in 0..4 {
                s.commit(create(new_id(), "p", "open")).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let after = s.stats();
    let (commits, flushes) = (
        after.commits - before.commits,
        after.flushes - before.flushes,
    );
    assert_eq!(commits, 256);
    assert!(
        flushes < commits / 2,
        "{flushes} flushes for {commits} commits: no grouping"
    );
    assert_eq!(all_pages(&*s, None, None, 100).len(), 256);
}

// ---------------------------------------------------------------------------------------
// Model check: random command sequences give the same answers and the same bytes
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Create(usize),
    /// Update instance `i`; `stale` uses an out-of-date expected version.
    Update {
        i: usize,
        stale: bool,
        task: bool,
        timer: Option<i64>,
    },
    CloseTasks(usize),
    DisarmTimers(usize),
    Move {
        i: usize,
        to: usize,
    },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (0..4usize).prop_map(Step::Create),
        (
            0..4usize,
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(-5i64..5)
        )
            .prop_map(|(i, stale, task, timer)| Step::Update {
                i,
                stale,
                task,
                timer
            }),
        (0..4usize).prop_map(Step::CloseTasks),
        (0..4usize).prop_map(Step::DisarmTimers),
        (0..4usize, 0..3usize).prop_map(|(i, to)| Step::Move { i, to }),
    ]
}

const STATUSES: [&str; 3] = ["open", "waiting", "done"];

/// Turns steps into commits, tracking what is open so closes name real rows. The same
/// commits are then sent to both stores.
fn commits_for(steps: &[Step], ids: &[Uuid]) -> Vec<Commit> {
    let mut version = [0u64; 4];
    let mut status: [Option<usize>; 4] = [None; 4];
    let mut tasks: Vec<Vec<TaskRow>> = vec![Vec::new(); 4];
    let mut timers: Vec<Vec<TimerRow>> = vec![Vec::new(); 4];
    let mut out = Vec::new();
    for s in steps {
        let mut c = Commit::default();
        match *s {
            Step::Create(i) => {
                c = create(ids[i], if i % 2 == 0 { "p" } else { "q" }, "open");
                if version[i] == 0 {
                    version[i] = 1;
                    status[i] = Some(0);
                }
            }
            Step::Update {
                i,
                stale,
                task: with_task,
                timer: due,
            } => {
                let expected = if stale { version[i] + 1 } else { version[i] };
                c.instances.push(write(ids[i], expected, 1));
                let ok = !stale && version[i] > 0;
                if with_task {
                    let roles: &[&str] = if i % 2 == 0 {
                        &["sales"]
                    } else {
                        &["sales", "quality"]
                    };
                    let row = task(ids[i], roles, (i == 3).then_some("ann"), due);
                    c.open_tasks.push(row.clone());
                    if ok {
                        tasks[i].push(row);
                    }
                }
                if let Some(due) = due {
                    let t = timer(due, ids[i]);
                    c.arm_timers.push(t.clone());
                    if ok {
                        timers[i].push(t);
                    }
                }
                if ok {
                    version[i] += 1;
                }
            }
            Step::CloseTasks(i) => {
                c.instances.push(write(ids[i], version[i], 1));
                if version[i] > 0 {
                    c.closed_tasks = std::mem::take(&mut tasks[i]);
                    version[i] += 1;
                }
            }
            Step::DisarmTimers(i) => {
                c.instances.push(write(ids[i], version[i], 1));
                if version[i] > 0 {
                    c.disarm_timers = std::mem::take(&mut timers[i]);
                    version[i] += 1;
                }
            }
            Step::Move { i, to } => {
                c.instances.push(write(ids[i], version[i], 1));
                if let Some(from) = status[i] {
                    c.statuses.push(StatusChange {
                        instance: ids[i],
                        procedure: if i % 2 == 0 { "p" } else { "q" }.into(),
                        from: Some(STATUSES[from].into()),
                        to: STATUSES[to].into(),
                    });
                    status[i] = Some(to);
                    version[i] += 1;
                }
            }
        }
        out.push(c);
    }
    out
}

fn outcome(r: Result<(), StoreError>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(StoreError::Conflict {
            instance,
            expected,
            found,
        }) => {
            format!("conflict {instance} {expected} {found}")
        }
        Err(other) => format!("other: {other}"),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    #[test]
    fn memory_and_sled_agree_on_random_histories(steps in proptest::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ids: Vec<Uuid> = (0..4).map(|_| new_id()).collect();
        let commits = commits_for(&steps, &ids);
        let memory = MemoryStore::new();
        let sled = sled_temp();
        rt.block_on(async {
            for c in commits {
                let a = outcome(memory.commit(c.clone()).await);
                let b = outcome(sled.commit(c).await);
                assert_eq!(a, b);
            }
        });
        assert_eq!(memory.dump().unwrap(), sled.dump().unwrap());
        let roles = strings(&["sales", "quality"]);
        assert_eq!(memory.tasks_for(&roles, "ann").unwrap(), sled.tasks_for(&roles, "ann").unwrap());
        assert_eq!(memory.due_timers(2, 100).unwrap(), sled.due_timers(2, 100).unwrap());
        for p in [None, Some("p"), Some("q")] {
            for st in [None, Some("open"), Some("waiting"), Some("done")] {
                assert_eq!(all_pages(&memory, p, st, 2), all_pages(&sled, p, st, 3));
            }
        }
        // Every index entry points at a live task row, and every task row is indexed.
        let dump = sled.dump().unwrap();
        for (k, _) in tree(&dump, "tasks_by_role").iter().chain(tree(&dump, "tasks_by_assignee")) {
            let id = Uuid::from_slice(&k[k.len() - 16..]).unwrap();
            assert!(sled.task(id).unwrap().is_some());
        }
    }
}

#[tokio::test]
async fn large_snapshots_stored_as_sled_blobs_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| new_id()).collect();
    let snapshot = |i: usize| vec![b'a' + i as u8; 300 * 1024];
    {
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        for (i, &id) in ids.iter().enumerate() {
            let mut c = create(id, "p", "open");
            c.instances[0].snapshot = snapshot(i);
            s.commit(c).await.unwrap();
        }
    }
    // Counted after the close, whose checkpoint writes the memtable's layers into sled.
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        blobs > 0,
        "expected sled to store these pages as blob files"
    );
    let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(s.instance(id).unwrap().unwrap().snapshot, snapshot(i));
    }
}

/// Tampering with the stored bytes, as someone with access to the data directory could:
/// each kind of change is named by `verify` with the instance and event.
#[tokio::test]
async fn verify_names_the_first_changed_event() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let (a, b) = (new_id(), new_id());
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        for id in [a, b] {
            s.commit(create(id, "p", "open")).await.unwrap();
            s.commit(Commit {
                instances: vec![write(id, 1, 4)],
                ..Commit::default()
            })
            .await
            .unwrap();
        }
        assert!(s.verify(&mut |_| {}).unwrap().intact());
        (a, b)
    };
    let key = |id: Uuid, seq: u64| {
        let mut k = id.as_bytes().to_vec();
        k.extend_from_slice(&seq.to_be_bytes());
        k
    };
    let tamper = |f: &dyn Fn(&::sled::Tree)| {
        let db = raw_open(dir.path());
        f(&db.open_tree("events").unwrap());
        db.flush().unwrap();
    };
    let check = || {
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        let v = s.verify(&mut |_| {}).unwrap();
        drop(s);
        v
    };
    // One byte of the content of event 3 of `b`.
    let original = {
        let db = raw_open(dir.path());
        let v = db
            .open_tree("events")
            .unwrap()
            .get(key(b, 3))
            .unwrap()
            .unwrap()
            .to_vec();
        drop(db);
        v
    };
    tamper(&|t| {
        let mut v = original.clone();
        let last = v.len() - 1;
        v[last] ^= 0x01;
        t.insert(key(b, 3), v).unwrap();
    });
    let v = check();
    let br = v.first_break.clone().expect("the change must be found");
    assert_eq!((br.instance, br.seq, v.broken), (b, 3, 1), "{br:?}");
    assert_eq!(br.found, chain::hex(&original[..32]));
    assert_ne!(br.expected, br.found);
    assert!(
        br.problem.contains("changed after it was written"),
        "{}",
        br.problem
    );
    assert_eq!(
        v.events, 8,
        "the walk stops at a broken link of each instance"
    );
    // Put it back: intact again.
    tamper(&|t| {
        t.insert(key(b, 3), original.clone()).unwrap();
    });
    assert!(check().intact());
    // Remove the last event of `a`: the head no longer matches.
    tamper(&|t| {
        t.remove(key(a, 5)).unwrap();
    });
    let br = check().first_break.unwrap();
    assert_eq!((br.instance, br.seq), (a, 5), "{br:?}");
    assert!(br.problem.contains("only 4 events"), "{}", br.problem);
}

/// sled 0.34 opens a directory whose `db` file is damaged (or gone) as a new, empty store
/// and writes over it. The marker file beside it makes sopflow refuse instead of serving
/// an empty store as if nothing had happened.
#[tokio::test]
async fn a_damaged_or_missing_store_is_refused_not_replaced_by_an_empty_one() {
    for damage in ["garbage", "missing", "swapped"] {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
            s.commit(create(new_id(), "p", "open")).await.unwrap();
        }
        assert!(dir.path().join("sopflow-store").is_file());
        match damage {
            "garbage" => std::fs::write(dir.path().join("db"), vec![0x5a; 4096]).unwrap(),
            "missing" => std::fs::remove_file(dir.path().join("db")).unwrap(),
            _ => {
                // Another store's files put in its place (the marker stays).
                let other = tempfile::tempdir().unwrap();
                drop(SledStore::open(other.path(), SledOptions::default()).unwrap());
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    let p = entry.unwrap().path();
                    if p.file_name().unwrap() != "sopflow-store" {
                        if p.is_dir() {
                            std::fs::remove_dir_all(&p).unwrap();
                        } else {
                            std::fs::remove_file(&p).unwrap();
                        }
                    }
                }
                for entry in std::fs::read_dir(other.path()).unwrap() {
                    let p = entry.unwrap().path();
                    if p.file_name().unwrap() != "sopflow-store" {
                        let to = dir.path().join(p.file_name().unwrap());
                        if p.is_dir() {
                            copy_dir(&p, &to);
                        } else {
                            std::fs::copy(&p, &to).unwrap();
                        }
                    }
                }
            }
        }
        let err = SledStore::open(dir.path(), SledOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{damage}: must refuse"));
        let StoreError::Corrupt(message) = &err else {
            panic!("{damage}: {err:?}")
        };
        let want = if damage == "swapped" {
            "the store files were replaced"
        } else {
            "damaged or missing"
        };
        assert!(message.contains(want), "{damage}: {message}");
        assert!(
            message.contains("restore the data directory from a backup"),
            "{message}"
        );
    }
}

/// A store made before the marker file existed gets one, and reopens as before.
#[tokio::test]
async fn a_store_without_a_marker_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let id = new_id();
    {
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        s.commit(create(id, "p", "open")).await.unwrap();
    }
    std::fs::remove_file(dir.path().join("sopflow-store")).unwrap();
    drop(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    assert!(dir.path().join("sopflow-store").is_file());
    let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
    assert_eq!(s.instance(id).unwrap().unwrap().version, 1);
}

/// Marks the raw sled database `db` of the store in `dir` as format `format`, closes it, and
/// checks that a normal open refuses it, naming the command to run.
fn mark_old_format_and_expect_refusal(db: ::sled::Db, dir: &std::path::Path, format: u32) {
    db.open_tree("meta")
        .unwrap()
        .insert("format", &format.to_be_bytes())
        .unwrap();
    db.flush().unwrap();
    drop(db);
    let err = match SledStore::open(dir, SledOptions::default()) {
        Ok(s) => panic!(
            "format {format} must be refused; opened format {}",
            s.format()
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("sopflow store upgrade") && err.contains(&format!("format {format}")),
        "{err}"
    );
}

/// A format-3 data directory (worklist indexes keyed by task id alone, no idempotency tree)
/// is refused with the command to run; `store upgrade` rewrites it into exactly what this
/// build writes for the same data, and a second run finds nothing to do.
#[tokio::test]
async fn a_format_3_store_is_refused_then_upgraded_to_what_this_build_writes() {
    use sopflow::store::any::AnyStore;
    let dir = tempfile::tempdir().unwrap();
    let id = new_id();
    let rows = vec![
        task(id, &["sales", "quality"], None, Some(5_000)),
        task(id, &["sales"], Some("ann"), None),
        task(id, &["@bob"], None, Some(-3)),
    ];
    let want = {
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        let mut c = create(id, "p", "running");
        c.open_tasks = rows.clone();
        s.commit(c).await.unwrap();
        let close = Commit {
            closed_tasks: vec![rows[2].clone()],
            ..Commit::default()
        };
        s.commit(close).await.unwrap();
        s.dump().unwrap()
    };
    {
        // What format 3 kept: `owner 0x00 task` → instance id, for the same open tasks.
        let db = raw_open(dir.path());
        for name in ["tasks_by_role", "tasks_by_assignee"] {
            db.open_tree(name).unwrap().clear().unwrap();
        }
        let old_key = |owner: &str, t: &TaskRow| {
            let mut k = owner.as_bytes().to_vec();
            k.push(0);
            k.extend_from_slice(t.task.as_bytes());
            k
        };
        for t in &rows[..2] {
            for r in &t.roles {
                db.open_tree("tasks_by_role")
                    .unwrap()
                    .insert(old_key(r, t), t.instance.as_bytes())
                    .unwrap();
            }
            if let Some(a) = &t.assignee {
                db.open_tree("tasks_by_assignee")
                    .unwrap()
                    .insert(old_key(a, t), t.instance.as_bytes())
                    .unwrap();
            }
        }
        db.drop_tree("idempotency").unwrap();
        mark_old_format_and_expect_refusal(db, dir.path(), 3);
    }
    let upgrading = SledOptions {
        upgrading: true,
        ..SledOptions::default()
    };
    {
        let s = AnyStore::from(SledStore::open(dir.path(), upgrading.clone()).unwrap());
        let r = sopflow::store::upgrade::upgrade(&s, &mut |_, _| {}).unwrap();
        assert_eq!((r.from, r.to, r.instances, r.open_tasks), (3, 5, 1, 2));
        assert_eq!(
            r.audit_entries_removed, 0,
            "this build wrote no time-only entries"
        );
    }
    {
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        assert_eq!(s.dump().unwrap(), want);
        let q = WorklistQuery::everything(&strings(&["sales"]), "ann");
        let page = s.worklist(&q, None, 10).unwrap();
        assert_eq!(page.items, vec![rows[0].clone(), rows[1].clone()]);
    }
    let s = AnyStore::from(SledStore::open(dir.path(), upgrading).unwrap());
    let r = sopflow::store::upgrade::upgrade(&s, &mut |_, _| {}).unwrap();
    assert_eq!((r.from, r.to, r.open_tasks), (5, 5, 0));
}

/// A format-4 data directory (an audit index with a time-only family) is refused with the
/// command to run; `store upgrade` removes that family, leaving exactly what this build
/// writes for the same events.
#[tokio::test]
async fn a_format_4_store_is_refused_then_upgraded_to_what_this_build_writes() {
    use sopflow::store::any::AnyStore;
    let dir = tempfile::tempdir().unwrap();
    let id = new_id();
    let events = [
        ("started", Some("ann"), None, -5_000),
        ("task_opened", None, None, 1_000),
        ("task_completed", Some("bob"), Some("ann"), 7_000),
    ];
    let want = {
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        s.commit(events_of(id, "complaint", 0, &events))
            .await
            .unwrap();
        s.dump().unwrap()
    };
    {
        // What format 4 added for each event: `t` ++ (ms with its sign bit flipped) ++
        // instance ++ seq → the event's summary.
        let db = raw_open(dir.path());
        let audit = db.open_tree("audit").unwrap();
        for (seq, (kind, user, behalf, at)) in (1u64..).zip(events) {
            let mut key = b"t".to_vec();
            key.extend_from_slice(&((at as u64) ^ (1 << 63)).to_be_bytes());
            key.extend_from_slice(id.as_bytes());
            key.extend_from_slice(&seq.to_be_bytes());
            let value = format!(
                "{kind}\0complaint\0{}\0{}",
                user.unwrap_or(""),
                behalf.unwrap_or("")
            );
            audit.insert(key, value.as_bytes()).unwrap();
        }
        // A tree handle keeps the database (and its lock) open.
        drop(audit);
        mark_old_format_and_expect_refusal(db, dir.path(), 4);
    }
    let upgrading = SledOptions {
        upgrading: true,
        ..SledOptions::default()
    };
    {
        let s = AnyStore::from(SledStore::open(dir.path(), upgrading).unwrap());
        let r = sopflow::store::upgrade::upgrade(&s, &mut |_, _| {}).unwrap();
        assert_eq!((r.from, r.to, r.instances, r.events), (4, 5, 1, 3));
        assert_eq!(r.audit_entries_removed, 3);
    }
    let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
    assert_eq!(s.dump().unwrap(), want);
    let page = s.audit(&AuditQuery::default(), None, 10).unwrap();
    let seqs: Vec<u64> = page.items.iter().map(|e| e.seq).collect();
    assert_eq!((seqs, page.next), (vec![1, 2, 3], None));
}

/// The same upgrade on PostgreSQL: a schema made to look like format 3 is refused by a
/// normal open and rewritten by `store upgrade` into what this build writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_3_postgresql_store_is_refused_then_upgraded() {
    use sopflow::store::any::AnyStore;
    let Ok(url) = std::env::var("SOPFLOW_TEST_POSTGRES") else {
        eprintln!("SOPFLOW_TEST_POSTGRES is not set: the PostgreSQL upgrade is not tested");
        return;
    };
    // Kept open for its schema (dropped with it at the end).
    let s = PgStore::temporary(&url).unwrap();
    let schema = s.schema().to_string();
    let id = new_id();
    let rows = vec![
        task(id, &["sales", "quality"], None, Some(5_000)),
        task(id, &["sales"], Some("ann"), None),
    ];
    let mut c = create(id, "p", "running");
    c.open_tasks = rows.clone();
    s.commit(c).await.unwrap();
    let want = s.dump().unwrap();
    let (url2, schema2, rows2) = (url.clone(), schema.clone(), rows.clone());
    tokio::task::spawn_blocking(move || {
        let mut db = ::postgres::Client::connect(&url2, ::postgres::NoTls).unwrap();
        // Tree codes: 12 tasks_by_assignee, 13 tasks_by_role, 15 idempotency, 7 meta.
        db.batch_execute(&format!(
            "SET search_path TO {schema2}; DELETE FROM kv WHERE tree IN (12, 13, 15);"
        ))
        .unwrap();
        for t in &rows2 {
            let old = |owner: &str| {
                let mut k = owner.as_bytes().to_vec();
                k.push(0);
                k.extend_from_slice(t.task.as_bytes());
                k
            };
            let mut put = |tree: i16, key: Vec<u8>| {
                db.execute(
                    "INSERT INTO kv (tree, key, value) VALUES ($1, $2, $3)",
                    &[&tree, &key, &t.instance.as_bytes().to_vec()],
                )
                .unwrap();
            };
            for r in &t.roles {
                put(13, old(r));
            }
            if let Some(a) = &t.assignee {
                put(12, old(a));
            }
        }
        // And format 4's time-only audit entries (tree 0), which the upgrade removes.
        for seq in [1u64, 2] {
            let mut key = b"t".to_vec();
            key.extend_from_slice(&(1u64 << 63).to_be_bytes());
            key.extend_from_slice(id.as_bytes());
            key.extend_from_slice(&seq.to_be_bytes());
            db.execute(
                "INSERT INTO kv (tree, key, value) VALUES (0, $1, $2)",
                &[&key, &b"kind\0p\0\0".to_vec()],
            )
            .unwrap();
        }
        db.execute(
            "UPDATE kv SET value = $1 WHERE tree = 7 AND key = 'format'::bytea",
            &[&3u32.to_be_bytes().to_vec()],
        )
        .unwrap();
    })
    .await
    .unwrap();
    let err = match PgStore::open(&url, &schema, 2) {
        Ok(_) => panic!("format 3 must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("sopflow store upgrade"), "{err}");
    let up = AnyStore::from(PgStore::open_upgrading(&url, &schema).unwrap());
    let r = sopflow::store::upgrade::upgrade(&up, &mut |_, _| {}).unwrap();
    assert_eq!((r.from, r.to, r.open_tasks), (3, 5, 2));
    assert_eq!(r.audit_entries_removed, 2);
    drop(up);
    let again = PgStore::open(&url, &schema, 2).unwrap();
    assert_eq!(again.dump().unwrap(), want);
}
