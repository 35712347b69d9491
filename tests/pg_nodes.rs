//! Two engines on one PostgreSQL store, as two `sopflow serve` nodes on one database: a
//! claim raced from both has one winner, and deadlines due at once fire exactly once across
//! both (counted from the histories, against one engine doing the same alone). Runs when
//! `SOPFLOW_TEST_POSTGRES` names a database (`.ci/run` sets it); otherwise says so and passes.

mod common;

use std::sync::Arc;

use chrono::Duration;
use common::*;
use serde_json::json;
use sopflow::clock::Clock;
use sopflow::engine::decide::Command;
use sopflow::engine::service::Engine;
use sopflow::store::postgres::PgStore;
use sopflow::store::Store;

fn url() -> Option<String> {
    let u = std::env::var("SOPFLOW_TEST_POSTGRES").ok();
    if u.is_none() {
        eprintln!("SOPFLOW_TEST_POSTGRES is not set: two nodes on PostgreSQL are not tested");
    }
    u
}

/// Two engines, each with its own store handle (its own connections) on one schema, and
/// their manual clocks.
async fn two_nodes(
    url: &str,
) -> (
    (Engine<PgStore>, sopflow::clock::ManualClock),
    (Engine<PgStore>, sopflow::clock::ManualClock),
) {
    let first = PgStore::temporary(url).expect("a PostgreSQL schema");
    let second = PgStore::open(url, first.schema(), 4).expect("the same schema again");
    let a = engine_on(Arc::new(first)).await;
    let b = engine_on(Arc::new(second)).await;
    (a, b)
}

fn complaint() -> serde_json::Map<String, serde_json::Value> {
    obj(json!({ "customer": "Hengxin Lifting", "contact": "Mr Li" }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_raced_from_two_nodes_has_one_winner() {
    let Some(url) = url() else { return };
    let ((a, _), (b, _)) = two_nodes(&url).await;
    let xu = person("xu.na", "after_sales", &["follow_up"], 2);
    let zhao = person("zhao.min", "after_sales", &["follow_up"], 2);
    for _ in 0..10 {
        let inst = a
            .start("complaint-handling", complaint(), Some(&xu))
            .await
            .unwrap();
        let task = inst.tasks.values().next().unwrap().id;
        let claim = Command::Claim { task };
        let (ra, rb) = tokio::join!(
            a.execute(inst.id, claim.clone(), Some(&xu)),
            b.execute(inst.id, claim, Some(&zhao)),
        );
        assert!(
            ra.is_ok() != rb.is_ok(),
            "exactly one wins: {ra:?} / {rb:?}"
        );
        let holder = a.instance(inst.id).unwrap().unwrap().tasks[&task]
            .claimed_by
            .clone();
        let winner = if ra.is_ok() { "xu.na" } else { "zhao.min" };
        assert_eq!(holder.as_deref(), Some(winner));
        let claims = a
            .history(inst.id)
            .unwrap()
            .iter()
            .filter(|e| e.kind.name() == "task_claimed")
            .count();
        assert_eq!(claims, 1, "one claim in the history");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadlines_due_at_once_fire_once_across_two_nodes() {
    let Some(url) = url() else { return };
    let xu = person("xu.na", "after_sales", &["follow_up"], 2);
    // The same work on one engine alone gives the events to expect.
    let alone = PgStore::temporary(&url).expect("a PostgreSQL schema");
    let (solo, solo_clock) = engine_on(Arc::new(alone)).await;
    let ((a, clock_a), (b, clock_b)) = two_nodes(&url).await;
    let n = 30;
    let mut solo_ids = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        solo_ids.push(
            solo.start("complaint-handling", complaint(), Some(&xu))
                .await
                .unwrap()
                .id,
        );
        let node = if i % 2 == 0 { &a } else { &b };
        ids.push(
            node.start("complaint-handling", complaint(), Some(&xu))
                .await
                .unwrap()
                .id,
        );
    }
    // Three days on: every reminder, breach and escalation of the register step is due.
    for c in [&solo_clock, &clock_a, &clock_b] {
        c.advance(Duration::days(3));
    }
    let fired_alone = solo.fire_due().await.unwrap();
    assert!(fired_alone >= n, "the deadlines were due ({fired_alone})");
    let (fa, fb) = tokio::join!(a.fire_due(), b.fire_due());
    let (fa, fb) = (fa.unwrap(), fb.unwrap());
    assert_eq!(fa + fb, fired_alone, "fired {fa} + {fb} across the nodes");
    // Later deadlines (beyond three days) may stay armed; none that was due does.
    let now = clock_a.now().timestamp_millis();
    assert!(a.store().due_timers(now, 10).unwrap().is_empty());
    let kinds = |e: &Engine<PgStore>, id| -> Vec<String> {
        e.history(id)
            .unwrap()
            .iter()
            .map(|ev| ev.kind.name().to_string())
            .collect()
    };
    let expected = kinds(&solo, solo_ids[0]);
    assert!(
        expected
            .iter()
            .any(|k| k.contains("breach") || k.contains("remind")),
        "{expected:?}"
    );
    for id in ids {
        assert_eq!(kinds(&a, id), expected, "instance {id}: each firing once");
        assert_folds(&a, id);
    }
}

fn timer_row(due_ms: i64) -> sopflow::store::TimerRow {
    sopflow::store::TimerRow {
        due_ms,
        instance: uuid::Uuid::now_v7(),
        timer: uuid::Uuid::now_v7(),
        payload: Vec::new(),
    }
}

#[tokio::test]
async fn an_instances_due_timers_are_claimed_by_one_node_until_fired() {
    let Some(url) = url() else { return };
    let a = PgStore::temporary(&url).expect("a PostgreSQL schema");
    let b = PgStore::open(&url, a.schema(), 2).expect("the same schema again");
    // Ten instances with a reminder (due first) and a breach each.
    let rows: Vec<_> = (0..10).map(|i| timer_row(1_000 + i)).collect();
    let breaches: Vec<_> = rows
        .iter()
        .map(|r| sopflow::store::TimerRow {
            due_ms: r.due_ms + 100,
            timer: uuid::Uuid::now_v7(),
            ..r.clone()
        })
        .collect();
    let arm = sopflow::store::Commit {
        arm_timers: rows.iter().chain(&breaches).cloned().collect(),
        ..Default::default()
    };
    a.commit(arm).await.unwrap();
    // Not yet due for either.
    assert!(b.claim_due_timers(999, 100).unwrap().is_empty());
    let mine = a.claim_due_timers(1_004, 100).unwrap();
    assert_eq!(mine, rows[..5].to_vec(), "due ones, in due order");
    // The other node gets only instances the first does not hold: not the breaches of
    // the first five, whose reminders the first node is firing.
    let theirs = b.claim_due_timers(2_000, 100).unwrap();
    let mut want: Vec<_> = rows[5..].iter().chain(&breaches[5..]).cloned().collect();
    want.sort_by_key(|t| t.due_ms);
    assert_eq!(theirs, want);
    assert_eq!(
        b.claim_due_timers(2_000, 100).unwrap(),
        want,
        "its own again"
    );
    let mut first: Vec<_> = rows[..5].iter().chain(&breaches[..5]).cloned().collect();
    first.sort_by_key(|t| t.due_ms);
    assert_eq!(a.claim_due_timers(2_000, 100).unwrap(), first);
    // The reminders fired by their holder: those instances are anyone's again.
    a.commit(sopflow::store::Commit {
        disarm_timers: rows[..5].to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let now_theirs = b.claim_due_timers(2_000, 100).unwrap();
    assert_eq!(now_theirs.len(), 15, "five breaches more: {now_theirs:?}");
    assert!(a.claim_due_timers(2_000, 100).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_armed_on_one_node_wakes_the_others_scheduler() {
    let Some(url) = url() else { return };
    let a = PgStore::temporary(&url).expect("a PostgreSQL schema");
    let b = PgStore::open(&url, a.schema(), 2).expect("the same schema again");
    let wake = b
        .timer_wakeups()
        .expect("PostgreSQL nodes hear of each other's timers");
    let within = std::time::Duration::from_secs(20);
    // The listener wakes once when it starts listening (whatever was armed before).
    tokio::time::timeout(within, wake.notified())
        .await
        .expect("the listener starts");
    a.commit(sopflow::store::Commit {
        arm_timers: vec![timer_row(5_000)],
        ..Default::default()
    })
    .await
    .unwrap();
    tokio::time::timeout(within, wake.notified())
        .await
        .expect("the commit's NOTIFY reached the other node");
}

#[test]
fn a_lease_has_one_holder_until_given_up_or_run_out() {
    let Some(url) = url() else { return };
    let first = PgStore::temporary(&url).expect("a PostgreSQL schema");
    let second = PgStore::open(&url, first.schema(), 4).expect("the same schema again");
    assert!(first.hold_lease("work", 60.0).unwrap(), "free: taken");
    assert!(
        !second.hold_lease("work", 60.0).unwrap(),
        "held by the first"
    );
    assert!(
        first.hold_lease("work", 60.0).unwrap(),
        "renewed by its holder"
    );
    assert!(
        second.hold_lease("other", 60.0).unwrap(),
        "leases are by name"
    );
    // Given up by a node that does not hold it: nothing happens.
    second.release_lease("work").unwrap();
    assert!(!second.hold_lease("work", 60.0).unwrap());
    first.release_lease("work").unwrap();
    assert!(
        second.hold_lease("work", 60.0).unwrap(),
        "given up: taken at once"
    );
    assert!(!first.hold_lease("work", 60.0).unwrap());
    // Renewed for no time at all, it has run out by the next question: a holder that died.
    assert!(second.hold_lease("work", 0.0).unwrap());
    assert!(
        first.hold_lease("work", 60.0).unwrap(),
        "run out: taken over"
    );
}

/// A webhook receiver counting each `webhook-id` it is called with.
async fn counting_receiver() -> (
    reqwest::Url,
    Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) {
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let keep = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let keep = keep.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                *keep.lock().unwrap().entry(id).or_insert(0) += 1;
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook").parse().unwrap(), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_node_sends_the_outbox_and_another_takes_over_when_it_stops() {
    use sopflow::outbox::sender::{Sender, LEASE};
    use sopflow::outbox::{Routes, Subscription};
    let Some(url) = url() else { return };
    let ((a, _), (b, _)) = two_nodes(&url).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (hook, seen) = counting_receiver().await;
    let routes = Routes {
        hooks: vec![Subscription {
            id: "crm".into(),
            url: hook,
            events: vec!["instance.started".into()],
            procedures: vec![],
            key: Arc::from(&b"a-test-secret-of-24-characters"[..]),
            allow_private: true,
            paused: false,
        }],
        ..Routes::default()
    };
    a.set_routes(routes.clone());
    b.set_routes(routes);
    let mut senders = vec![
        Some(Sender::spawn(a.clone(), None)),
        Some(Sender::spawn(b.clone(), None)),
    ];
    let xu = person("xu.na", "after_sales", &["follow_up"], 2);
    let delivered = |n: usize| {
        let seen = seen.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while seen.lock().unwrap().len() < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "only {} of {n} delivered",
                    seen.lock().unwrap().len()
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    // Started on both nodes: both nodes' senders see every pending message.
    for i in 0..40 {
        let node = if i % 2 == 0 { &a } else { &b };
        node.start("complaint-handling", complaint(), Some(&xu))
            .await
            .unwrap();
    }
    delivered(40).await;
    // The one holding the lease stops (as a node shut down); the other takes over.
    let holder = usize::from(!a.store().hold_lease(LEASE, 60.0).unwrap());
    senders[holder].take().unwrap().stop().await;
    for _ in 0..40 {
        a.start("complaint-handling", complaint(), Some(&xu))
            .await
            .unwrap();
    }
    delivered(80).await;
    let seen = seen.lock().unwrap().clone();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent by both nodes: {twice:?}");
    for s in senders.into_iter().flatten() {
        s.stop().await;
    }
}
