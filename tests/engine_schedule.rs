//! Recurring starts: the customer rating every half year (seed 003 §3.2) and the annual
//! internal evaluation plan (seed 002 Service Internal Evaluation §4.3, a cron schedule).
//! The next run is stored with the schedule and advanced in the same commit that starts the
//! run, so a restart neither skips nor repeats one, and runs missed while the store was
//! closed are caught up one by one, in order: none is dropped. A manual clock move stops at
//! every run and deadline on the way, so each is recorded at its own due time.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::*;
use sopflow::clock::{Clock, ManualClock};
use sopflow::engine::instance::EventKind;
use sopflow::engine::service::Engine;
use sopflow::store::sled_store::{SledOptions, SledStore};
use sopflow::store::Store;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn runs_of<S: Store>(e: &Engine<S>, procedure: &str) -> usize {
    e.instances(Some(procedure), None, None, 1000)
        .unwrap()
        .items
        .len()
}

#[tokio::test]
async fn the_customer_rating_starts_every_half_year() {
    let (e, clock) = engine().await;
    // `every = "6 months"`, `starting = "2027-01-15T09:00:00"` in Asia/Shanghai.
    let first = at("2027-01-15T01:00:00Z");
    let s = e
        .store()
        .schedule("customer-rating")
        .unwrap()
        .expect("armed at registration");
    assert_eq!((s.runs, s.next_ms), (0, first.timestamp_millis()));
    // Registering again does not arm a second run.
    assert_eq!(e.arm_schedules().await.unwrap(), 0);

    clock.set(first - Duration::milliseconds(1));
    e.fire_due().await.unwrap();
    assert_eq!(runs_of(&e, "customer-rating"), 0);
    clock.set(first);
    e.fire_due().await.unwrap();
    assert_eq!(runs_of(&e, "customer-rating"), 1);
    let s = e.store().schedule("customer-rating").unwrap().unwrap();
    assert_eq!(
        (s.runs, s.next_ms),
        (1, at("2027-07-15T01:00:00Z").timestamp_millis())
    );
    // The run is an ordinary instance, started by the engine, with work open.
    let id = e
        .instances(Some("customer-rating"), None, None, 10)
        .unwrap()
        .items[0];
    let inst = e.instance(id).unwrap().unwrap();
    assert!(!inst.tasks.is_empty());
    assert!(e.history(id).unwrap()[0].by.is_none());
    // Nothing more until the next half year.
    e.fire_due().await.unwrap();
    assert_eq!(runs_of(&e, "customer-rating"), 1);
}

#[tokio::test]
async fn the_annual_evaluation_plan_starts_on_its_cron_date() {
    let (e, clock) = engine().await;
    // `cron = "0 9 5 1 *"` in Asia/Shanghai: 5 January, 09:00 local.
    let s = e.store().schedule("internal-evaluation").unwrap().unwrap();
    assert_eq!(s.next_ms, at("2027-01-05T01:00:00Z").timestamp_millis());
    clock.set(at("2027-01-05T01:00:00Z"));
    e.fire_due().await.unwrap();
    assert_eq!(runs_of(&e, "internal-evaluation"), 1);
    let s = e.store().schedule("internal-evaluation").unwrap().unwrap();
    assert_eq!(s.next_ms, at("2028-01-05T01:00:00Z").timestamp_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_missed_while_closed_are_caught_up_one_by_one_and_none_repeats() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
        let (e, clock) = engine_on(store).await;
        clock.set(at("2027-01-15T01:00:00Z"));
        e.fire_due().await.unwrap();
        assert_eq!(runs_of(&e, "customer-rating"), 1);
    }
    // Closed for more than a year: the July 2027 and January 2028 runs were missed.
    let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    let clock = ManualClock::new(at("2028-03-01T00:00:00Z"));
    let e = Engine::open(store.clone(), Arc::new(clock.clone())).unwrap();
    let v = sopflow::definition::load::validate_paths(
        &[std::path::PathBuf::from("procedures")],
        &Default::default(),
    );
    e.set_calendars(&v.calendars);
    e.register(&v.valid).await.unwrap();
    e.fire_due().await.unwrap();
    assert_eq!(
        runs_of(&e, "customer-rating"),
        3,
        "each missed run starts: July 2027 and January 2028"
    );
    let s = store.schedule("customer-rating").unwrap().unwrap();
    assert_eq!(
        (s.runs, s.next_ms),
        (3, at("2028-07-15T01:00:00Z").timestamp_millis())
    );
    // Reopening again repeats nothing.
    drop(e);
    let e = Engine::open(store.clone(), Arc::new(clock)).unwrap();
    e.set_calendars(&v.calendars);
    e.register(&v.valid).await.unwrap();
    e.fire_due().await.unwrap();
    assert_eq!(runs_of(&e, "customer-rating"), 3);
}

#[tokio::test]
async fn a_long_clock_move_fires_every_run_and_deadline_at_its_own_time() {
    let (e, clock) = engine().await;
    clock.set(at("2027-01-01T00:00:00Z"));
    e.fire_due().await.unwrap();
    // A complaint whose registration deadline (a reminder, a breach, a notification a
    // working day later) falls due during the move.
    let complaint = e
        .start(
            "complaint-handling",
            obj(serde_json::json!({ "customer": "Hengxin", "contact": "Li" })),
            Some(&person("fiona", "after_sales", &["follow_up"], 2)),
        )
        .await
        .unwrap()
        .id;
    let target = at("2027-01-01T00:00:00Z") + Duration::days(400);
    let fired = e.advance_clock(&clock, target).await.unwrap();
    assert_eq!(clock.now(), target);
    assert!(fired >= 3, "{fired} timers fired");
    // Three half-yearly runs were crossed; each started at its scheduled time, in order.
    let mut starts: Vec<DateTime<Utc>> = e
        .instances(Some("customer-rating"), None, None, 1000)
        .unwrap()
        .items
        .iter()
        .map(|id| e.history(*id).unwrap()[0].at)
        .collect();
    starts.sort();
    assert_eq!(
        starts,
        vec![
            at("2027-01-15T01:00:00Z"),
            at("2027-07-15T01:00:00Z"),
            at("2028-01-15T01:00:00Z"),
        ]
    );
    // Every deadline that fell due on the way is recorded at its due time, not at the
    // move's target, and was not late.
    let history = e.history(complaint).unwrap();
    let breaches: Vec<_> = history
        .iter()
        .filter_map(|ev| match ev.kind {
            EventKind::DeadlineBreached { due, late_ms, .. } => Some((ev.at, due, late_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(breaches.len(), 2, "two breach thresholds passed");
    // The first threshold is the due time itself; the second, one working day later (after
    // the New Year holiday and a weekend), records how late the task was then.
    assert_eq!(breaches[0], (breaches[0].1, breaches[0].1, 0));
    let (recorded, due, late_ms) = breaches[1];
    assert_eq!(recorded, at("2027-01-05T00:30:00Z"));
    assert_eq!(late_ms, (recorded - due).num_milliseconds());
    assert!(history
        .iter()
        .any(|ev| matches!(ev.kind, EventKind::DeadlineReminded { .. }) && ev.at < target));
}
