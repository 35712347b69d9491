//! Deadlines through the engine, driven only by the manual clock (no test sleeps): the
//! complaint's 24-hour registration deadline (seed 000 §3, seed 004 User supervision
//! measures (1)) with its reminder, escalation at once and a notification one working day
//! later; a step done one millisecond before its due time; `take` completing a step when
//! nobody objects in time; exactly-once firing, also for timers that fell due while the
//! store was closed.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Duration;
use common::*;
use serde_json::json;
use sopflow::clock::ManualClock;
use sopflow::definition::load::validate_text;
use sopflow::engine::instance::{DeadlineState, EventKind, Instance, Status};
use sopflow::engine::service::Engine;
use sopflow::store::sled_store::{SledOptions, SledStore};
use sopflow::store::Store;

fn data() -> serde_json::Map<String, serde_json::Value> {
    obj(json!({ "customer": "Hengxin", "contact": "Li" }))
}

fn fiona() -> sopflow::engine::instance::Actor {
    person("fiona", "after_sales", &["follow_up"], 2)
}

fn kinds(history: &[sopflow::engine::instance::Event]) -> Vec<String> {
    history
        .iter()
        .map(|e| {
            serde_json::to_value(&e.kind).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn count(history: &[sopflow::engine::instance::Event], kind: &str) -> usize {
    kinds(history).iter().filter(|k| *k == kind).count()
}

#[tokio::test]
async fn reminder_then_escalation_then_a_notification_a_working_day_later() {
    let (e, clock) = engine().await;
    let mary = person("mary", "general_management", &["management_rep"], 4);
    // Monday 2026-11-02 09:00 UTC (17:00 in Shanghai, within working hours).
    let inst = e
        .start("complaint-handling", data(), Some(&fiona()))
        .await
        .unwrap();
    let task = task_at(&inst, "register");
    assert_eq!(task.due, Some(t0() + Duration::hours(24)));
    assert_eq!(
        inst.timers.len(),
        3,
        "one reminder and two breach thresholds"
    );
    // The worklist row carries the due time.
    let rows = e.tasks_for(&fiona()).unwrap();
    assert_eq!(
        rows[0].due_ms,
        Some((t0() + Duration::hours(24)).timestamp_millis())
    );

    clock.advance(Duration::hours(20) - Duration::milliseconds(1));
    assert_eq!(e.fire_due().await.unwrap(), 0);
    clock.advance(Duration::milliseconds(1));
    assert_eq!(e.fire_due().await.unwrap(), 1, "the reminder, 4h before");
    let now = e.instance(inst.id).unwrap().unwrap();
    assert_eq!(task_at(&now, "register").deadline, DeadlineState::Reminded);
    assert!(e.tasks_for(&mary).unwrap().is_empty());

    clock.advance(Duration::hours(4));
    assert_eq!(
        e.fire_due().await.unwrap(),
        1,
        "the breach: escalate at once"
    );
    let now = e.instance(inst.id).unwrap().unwrap();
    let t = task_at(&now, "register");
    assert_eq!(t.deadline, DeadlineState::Escalated);
    assert!(t.roles.contains(&"management_rep".to_string()));
    assert_eq!(
        e.tasks_for(&mary).unwrap().len(),
        1,
        "the management representative now sees it"
    );
    assert_eq!(e.fire_due().await.unwrap(), 0, "fires exactly once");

    // "1 working day" after Tuesday 17:00 Shanghai is Wednesday 17:00 Shanghai.
    clock.advance(Duration::hours(24) - Duration::milliseconds(1));
    assert_eq!(e.fire_due().await.unwrap(), 0);
    clock.advance(Duration::milliseconds(1));
    assert_eq!(
        e.fire_due().await.unwrap(),
        1,
        "the general manager is notified"
    );
    let history = e.history(inst.id).unwrap();
    let notified: Vec<_> = history
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::Notified { role, .. } => Some(role.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(notified, ["general_manager"]);
    // The general manager can list it; the follow-up personnel have none.
    let gm = person("george", "general_management", &["general_manager"], 5);
    let listed = e.notifications_for(&gm, 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].instance, inst.id);
    assert!(
        listed[0].message.contains("register"),
        "{}",
        listed[0].message
    );
    // The follow-up personnel were reminded (the task is offered to their role), and were
    // not sent the general manager's notification.
    let theirs = e.notifications_for(&fiona(), 10).unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].role, "follow_up");
    assert!(
        theirs[0].message.starts_with("Reminder"),
        "{}",
        theirs[0].message
    );
    let breach = history
        .iter()
        .find_map(|ev| match &ev.kind {
            EventKind::DeadlineBreached {
                late_ms, action, ..
            } if action.starts_with("notify") => Some(*late_ms),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        breach,
        Duration::hours(24).num_milliseconds(),
        "how late is recorded"
    );
    assert_eq!(e.fire_due().await.unwrap(), 0);
    let now = e.instance(inst.id).unwrap().unwrap();
    assert!(now.timers.is_empty());
    assert_eq!(Instance::fold(inst.id, &history).unwrap(), now);
}

#[tokio::test]
async fn a_step_done_one_millisecond_before_its_due_time_never_fires() {
    let (e, clock) = engine().await;
    let inst = e
        .start("complaint-handling", data(), Some(&fiona()))
        .await
        .unwrap();
    clock.advance(Duration::hours(24) - Duration::milliseconds(1));
    // The reminder (4h before) fired on the way; the breach must not.
    assert_eq!(e.fire_due().await.unwrap(), 1);
    let inst = e.instance(inst.id).unwrap().unwrap();
    let registration = task_at(&inst, "register").id;
    let after = complete(
        &e,
        &inst,
        "register",
        &fiona(),
        None,
        json!({ "channel": "hotline", "complaint": "x", "severity": "general", "first_answer": "y", "received_at": "2026-11-02T08:30:00Z" }),
    )
    .await
    .unwrap();
    assert!(
        after.timers.values().all(|t| t.task != registration),
        "completing disarms the step's timers in the same commit"
    );
    clock.advance(Duration::days(30));
    // Only the resolution's own timers (reminder, breach) fire for this instance now; none of
    // the registration's. (Other procedures' scheduled runs may fall in these 30 days.)
    e.fire_due().await.unwrap();
    let history = e.history(inst.id).unwrap();
    let of_register = |kind: &str| {
        history
            .iter()
            .filter(|ev| match &ev.kind {
                EventKind::DeadlineBreached { step, .. }
                | EventKind::DeadlineReminded { step, .. } => {
                    step == "register" && ev.kind.name() == kind
                }
                _ => false,
            })
            .count()
    };
    assert_eq!(of_register("deadline_breached"), 0);
    assert_eq!(of_register("deadline_reminded"), 1);
    let on_time = history.iter().find_map(|ev| match &ev.kind {
        EventKind::TaskCompleted { on_time, .. } => Some(*on_time),
        _ => None,
    });
    assert_eq!(on_time, Some(Some(true)));
}

const OBJECTION: &str = r#"
id = "objection"
version = 1
title = "No objection means we proceed"
start = "object"
calendar = "default"
[roles]
dept = "Audited department"
[data]
audit_date = { type = "date", required = true }
[steps.object]
role = "dept"
outcomes = ["accept", "object"]
deadline = { due = "3 days before audit_date", on_breach = [{ take = "accept" }] }
next = [{ to = "proceed", on = "accept" }, { to = "rescheduled", on = "object" }]
[steps.proceed]
kind = "end"
[steps.rescheduled]
kind = "end"
"#;

#[tokio::test]
async fn nobody_objects_in_time_so_the_clock_takes_the_step() {
    let (e, clock) = engine().await;
    let v = validate_text(
        "objection.toml",
        OBJECTION,
        &[],
        &HashSet::from(["default".to_string()]),
    );
    assert_eq!(v.errors(), 0, "{}", v.reports[0].render_text());
    e.register(&v.valid).await.unwrap();
    let dept = person("dora", "sales", &["dept"], 3);
    let inst = e
        .start(
            "objection",
            obj(json!({ "audit_date": "2026-11-12" })),
            Some(&dept),
        )
        .await
        .unwrap();
    // Due 3 days before 2026-11-12 00:00 Shanghai = 2026-11-08 16:00 UTC.
    let due = task_at(&inst, "object").due.unwrap();
    assert_eq!(due.to_rfc3339(), "2026-11-08T16:00:00+00:00");
    clock.set(due - Duration::milliseconds(1));
    assert_eq!(e.fire_due().await.unwrap(), 0);
    clock.set(due);
    assert_eq!(e.fire_due().await.unwrap(), 1);
    let done = e.instance(inst.id).unwrap().unwrap();
    assert_eq!(done.status, Status::Completed);
    assert_eq!(done.end_step.as_deref(), Some("proceed"));
    let history = e.history(inst.id).unwrap();
    let by_clock = history.iter().any(|ev| {
        matches!(&ev.kind, EventKind::TaskCompleted { outcome, .. } if outcome == "accept")
            && ev.by.is_none()
    });
    assert!(
        by_clock,
        "the completion is recorded as the engine's, not a person's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_due_while_the_store_was_closed_fire_once_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let ids = {
        let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
        let (e, _clock) = engine_on(store).await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(
                e.start("complaint-handling", data(), Some(&fiona()))
                    .await
                    .unwrap()
                    .id,
            );
        }
        ids
    };
    // Three days pass with the store closed.
    let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    assert!(store.next_timer().unwrap().is_some());
    let clock = ManualClock::new(t0() + Duration::days(3));
    let e = Engine::open(store.clone(), Arc::new(clock)).unwrap();
    let v = sopflow::definition::load::validate_paths(
        &[std::path::PathBuf::from("procedures")],
        &Default::default(),
    );
    e.set_calendars(&v.calendars);
    // Five instances × (reminder, escalation, notification).
    assert_eq!(e.fire_due().await.unwrap(), 15);
    assert_eq!(e.fire_due().await.unwrap(), 0);
    // Only future timers remain (the shipped procedures' recurring schedules).
    let now_ms = (t0() + Duration::days(3)).timestamp_millis();
    assert!(store.due_timers(now_ms, 10).unwrap().is_empty());
    for id in ids {
        let h = e.history(id).unwrap();
        assert_eq!(count(&h, "deadline_reminded"), 1);
        assert_eq!(count(&h, "deadline_breached"), 2);
        assert_eq!(count(&h, "task_escalated"), 1);
        assert_eq!(count(&h, "notified"), 1);
    }
}

const REASSIGN: &str = r#"
id = "reassign"
version = 1
title = "Late work moves to another team"
start = "fix"
calendar = "default"
[roles]
team_a = "Team A"
team_b = "Team B"
[steps.fix]
role = "team_a"
deadline = { due = "2h", on_breach = [{ reassign_to = "team_b" }] }
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;

#[tokio::test]
async fn a_late_task_is_reassigned_and_completion_records_whether_it_was_on_time() {
    let (e, clock) = engine().await;
    let v = validate_text(
        "reassign.toml",
        REASSIGN,
        &[],
        &HashSet::from(["default".to_string()]),
    );
    assert_eq!(v.errors(), 0, "{}", v.reports[0].render_text());
    e.register(&v.valid).await.unwrap();
    let ann = person("ann", "office", &["team_a"], 2);
    let bob = person("bob", "office", &["team_b"], 2);
    let inst = e
        .start("reassign", Default::default(), Some(&ann))
        .await
        .unwrap();
    let t = task_at(&inst, "fix");
    e.execute(
        inst.id,
        sopflow::engine::decide::Command::Claim { task: t.id },
        Some(&ann),
    )
    .await
    .unwrap();
    clock.advance(Duration::hours(2));
    assert_eq!(e.fire_due().await.unwrap(), 1);
    // Taken from Ann (who had claimed it) and offered to team B only.
    assert!(e.tasks_for(&ann).unwrap().is_empty());
    assert_eq!(e.tasks_for(&bob).unwrap().len(), 1);
    let now = e.instance(inst.id).unwrap().unwrap();
    let err = complete(&e, &now, "fix", &ann, None, json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
    complete(&e, &now, "fix", &bob, None, json!({}))
        .await
        .unwrap();
    let on_time: Vec<Option<bool>> = e
        .history(inst.id)
        .unwrap()
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::TaskCompleted { on_time, .. } => Some(*on_time),
            _ => None,
        })
        .collect();
    assert_eq!(
        on_time,
        [Some(false)],
        "the history records the step as late"
    );
}

/// The scheduler fires what is due without anyone calling `fire_due`. Its first pass runs
/// at once, so the bound below is a safety net, not a timing assumption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_fires_due_timers_by_itself() {
    let (e, clock) = engine().await;
    let e = Arc::new(e);
    let inst = e
        .start("complaint-handling", data(), Some(&fiona()))
        .await
        .unwrap();
    clock.advance(Duration::days(3));
    let scheduler = sopflow::scheduler::Scheduler::spawn(e.clone());
    let fired = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let h = e.history(inst.id).unwrap();
            if count(&h, "notified") == 1 {
                return h;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the scheduler fired the overdue timers");
    scheduler.stop().await;
    assert_eq!(count(&fired, "deadline_breached"), 2);
    assert_eq!(
        e.fire_due().await.unwrap(),
        0,
        "nothing was left, nothing fired twice"
    );
}

/// A timer row no instance knows can never fire. Left in place it would stay the earliest
/// timer, and the scheduler would wake for it again and again without sleeping.
#[tokio::test]
async fn a_timer_row_no_instance_knows_is_removed_not_retried_forever() {
    let (e, clock) = engine().await;
    let orphan = sopflow::store::TimerRow {
        due_ms: (t0() - Duration::hours(1)).timestamp_millis(),
        instance: uuid::Uuid::from_u128(7),
        timer: uuid::Uuid::from_u128(8),
        payload: Vec::new(),
    };
    e.store()
        .commit(sopflow::store::Commit {
            arm_timers: vec![orphan.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(e.store().next_timer().unwrap(), Some(orphan));
    assert_eq!(e.fire_due().await.unwrap(), 0);
    let now_ms = clock_now_ms(&clock);
    assert!(e.store().due_timers(now_ms, 10).unwrap().is_empty());
    assert_ne!(
        e.store().next_timer().unwrap().map(|t| t.instance),
        Some(uuid::Uuid::from_u128(7))
    );
}

fn clock_now_ms(clock: &ManualClock) -> i64 {
    use sopflow::clock::Clock;
    clock.now().timestamp_millis()
}

/// A clock move reads the due timers, then a completion or cancel ends the instance before
/// its timer is decided. The timer is moot, not an error: before this was handled, the
/// whole clock move failed with "the instance has ended" (found by `tests/crash.rs`). The
/// race is reproduced by leaving a due timer row behind an ended instance.
#[tokio::test]
async fn a_due_timer_of_an_instance_that_just_ended_is_dropped_not_an_error() {
    let (e, clock) = engine().await;
    let inst = e
        .start("complaint-handling", data(), Some(&fiona()))
        .await
        .unwrap();
    let rep = person("mira", "general_management", &["management_rep"], 4);
    e.execute(
        inst.id,
        sopflow::engine::decide::Command::Cancel {
            reason: "Duplicate of an earlier complaint".into(),
        },
        Some(&rep),
    )
    .await
    .unwrap();
    let history = e.history(inst.id).unwrap();
    let timers_of = |id| {
        e.store()
            .due_timers(i64::MAX, 10_000)
            .unwrap()
            .into_iter()
            .filter(|t| t.instance == id)
            .count()
    };
    assert_eq!(timers_of(inst.id), 0, "cancelling disarmed the deadline");
    e.store()
        .commit(sopflow::store::Commit {
            arm_timers: vec![sopflow::store::TimerRow {
                due_ms: sopflow::clock::Clock::now(&clock).timestamp_millis(),
                instance: inst.id,
                timer: uuid::Uuid::now_v7(),
                payload: Vec::new(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    clock.advance(Duration::hours(1));
    assert_eq!(e.fire_due().await.unwrap(), 0);
    assert_eq!(timers_of(inst.id), 0, "the moot row is gone");
    assert_eq!(
        e.history(inst.id).unwrap(),
        history,
        "nothing was added to the history"
    );
}

const DATES: &str = r#"
id = "dates"
version = 1
title = "One meaning of a date"
start = "route"

[roles]
dept = "Department"

[data]
audit_date = { type = "date", title = "Audit date", required = true }

[steps.route]
kind = "auto"
next = [
  { to = "on_the_day", when = "audit_date == timestamp('2026-11-11T16:00:00Z')" },
  { to = "elsewhen" },
]

[steps.on_the_day]
title = "Audit"
role = "dept"
deadline = { due = "audit_date" }
next = [{ to = "done" }]

[steps.elsewhen]
title = "Audit on another day"
role = "dept"
next = [{ to = "done" }]

[steps.done]
kind = "end"
"#;

/// A date field means midnight in the procedure calendar's zone (Asia/Shanghai here) in
/// conditions as in deadlines: 2026-11-12 is 2026-11-11 16:00 UTC for both.
#[tokio::test]
async fn a_date_means_the_same_instant_in_conditions_and_deadlines() {
    let (e, _clock) = engine().await;
    let v = validate_text(
        "dates.toml",
        DATES,
        &[],
        &HashSet::from(["default".to_string()]),
    );
    assert_eq!(v.errors(), 0, "{}", v.reports[0].render_text());
    e.register(&v.valid).await.unwrap();
    let dept = person("dora", "sales", &["dept"], 3);
    let inst = e
        .start(
            "dates",
            obj(json!({ "audit_date": "2026-11-12" })),
            Some(&dept),
        )
        .await
        .unwrap();
    let task = task_at(&inst, "on_the_day");
    assert_eq!(task.due.unwrap().to_rfc3339(), "2026-11-11T16:00:00+00:00");
}

/// More timers due at once than one round of `fire_due` takes (512): the rounds are decided
/// while the one before is being written, so none may take a timer or an instance of the
/// round in flight. Every timer fires exactly once, and a second pass finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_bigger_than_a_round_fires_every_timer_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    let (e, clock) = engine_on(store.clone()).await;
    let e = Arc::new(e);
    let starters: Vec<_> = (0..8)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move {
                let (who, mut ids) = (fiona(), Vec::new());
                for _ in 0..150 {
                    let inst = e.start("complaint-handling", data(), Some(&who));
                    ids.push(inst.await.unwrap().id);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in starters {
        ids.extend(s.await.unwrap());
    }
    // Three days on: each of the 1,200 complaints has its reminder, escalation and
    // notification due — 3,600 timers, seven rounds.
    clock.set(t0() + Duration::days(3));
    assert_eq!(e.fire_due().await.unwrap(), 3 * ids.len());
    assert_eq!(e.fire_due().await.unwrap(), 0);
    let now_ms = (t0() + Duration::days(3)).timestamp_millis();
    assert!(store.due_timers(now_ms, 10).unwrap().is_empty());
    for id in ids {
        let h = e.history(id).unwrap();
        assert_eq!(count(&h, "deadline_reminded"), 1, "{id}: {:?}", kinds(&h));
        assert_eq!(count(&h, "deadline_breached"), 2, "{id}: {:?}", kinds(&h));
        assert_eq!(count(&h, "notified"), 1, "{id}: {:?}", kinds(&h));
    }
}
