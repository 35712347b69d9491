//! Recurring starts: the customer rating every half year (seed 003 §3.2) and the annual
//! internal evaluation plan (seed 002 Service Internal Evaluation §4.3, a cron schedule).
//! The next run is stored with the schedule and advanced in the same commit that starts the
//! run, so a restart neither skips nor repeats one, and runs missed while the store was
//! closed are caught up once, not once per missed period.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::*;
use sopflow::clock::ManualClock;
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
async fn runs_missed_while_closed_are_caught_up_once_and_none_repeats() {
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
    e.fire_due().await.unwrap();
    assert_eq!(
        runs_of(&e, "customer-rating"),
        2,
        "one catch-up run, not one per missed period"
    );
    let s = store.schedule("customer-rating").unwrap().unwrap();
    assert_eq!(
        (s.runs, s.next_ms),
        (2, at("2028-07-15T01:00:00Z").timestamp_millis())
    );
    // Reopening again repeats nothing.
    drop(e);
    let e = Engine::open(store.clone(), Arc::new(clock)).unwrap();
    e.set_calendars(&v.calendars);
    e.register(&v.valid).await.unwrap();
    e.fire_due().await.unwrap();
    assert_eq!(runs_of(&e, "customer-rating"), 2);
}
