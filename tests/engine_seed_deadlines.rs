//! Every deadline the seeds set, through the shipped procedures and the default calendar
//! (Asia/Shanghai, 08:30–17:30, Sat/Sun weekend, the 2026 holidays and make-up days), driven
//! only by the manual clock. For each: the exact due instant, nothing firing one millisecond
//! before, what fires at the instant (reminder, breach, its action), the effect on the
//! worklists, and the stored instance equal to the fold of its history.
//!
//! - complaint follow-up within three working days (seed 002 Complaint Handling §4.6);
//! - the evaluation notice 7–10 days before the audit date and objections up to 3 days
//!   before (seed 002 Service Internal Evaluation §5.1.3–§5.1.4);
//! - remote guidance within 24 hours, on site within 7 days, 3 in an emergency (seed 004 rule
//!   (4), User supervision measures (1), (3));
//! - the rectification deadline of a corrective action (seed 002 Service Internal Evaluation
//!   §5.5.2);
//! - the warranty-expiry notice ten days ahead (seed 004 After-sales service rules (12)).
//!
//! The complaint's 24-hour registration is in `engine_deadlines.rs`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::*;
use serde_json::{json, Value};
use sopflow::clock::ManualClock;
use sopflow::definition::load::{validate_paths, Options};
use sopflow::engine::instance::{Actor, DeadlineState, Event, EventKind, Instance, Status};
use sopflow::engine::service::Engine;
use sopflow::store::memory::MemoryStore;
use sopflow::store::InstanceId;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .expect("valid time")
}

/// The shipped procedures in an engine whose manual clock starts at `start` (the harness's
/// clock starts at `t0()` and cannot go back).
async fn engine_at(start: DateTime<Utc>) -> (Engine<MemoryStore>, ManualClock) {
    let clock = ManualClock::new(start);
    let e = Engine::open(Arc::new(MemoryStore::new()), Arc::new(clock.clone())).unwrap();
    let v = validate_paths(&[PathBuf::from("procedures")], &Options::default());
    assert_eq!(v.errors(), 0, "shipped procedures must validate");
    e.set_calendars(&v.calendars);
    e.register(&v.valid).await.unwrap();
    (e, clock)
}

/// Nothing fires one millisecond before `t`; exactly `n` timers fire at `t`.
async fn fires_at(e: &Engine<MemoryStore>, clock: &ManualClock, t: DateTime<Utc>, n: usize) {
    clock.set(t - Duration::milliseconds(1));
    assert_eq!(
        e.fire_due().await.unwrap(),
        0,
        "nothing fires 1 ms before {t}"
    );
    clock.set(t);
    assert_eq!(e.fire_due().await.unwrap(), n, "timers firing at {t}");
    assert_eq!(e.fire_due().await.unwrap(), 0, "each fires exactly once");
}

fn rfc(t: Option<DateTime<Utc>>) -> String {
    t.expect("the step has a due time").to_rfc3339()
}

fn current(e: &Engine<MemoryStore>, id: InstanceId) -> Instance {
    e.instance(id).unwrap().unwrap()
}

/// (step, due, timer) of every reminder.
fn reminders(h: &[Event]) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::DeadlineReminded { step, due, .. } => Some((step.clone(), due.to_rfc3339())),
            _ => None,
        })
        .collect()
}

/// (step, late_ms, action) of every breach.
fn breaches(h: &[Event]) -> Vec<(String, i64, String)> {
    h.iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::DeadlineBreached {
                step,
                late_ms,
                action,
                ..
            } => Some((step.clone(), *late_ms, action.clone())),
            _ => None,
        })
        .collect()
}

/// (step, role) of every notification.
fn notified(h: &[Event]) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::Notified { step, role, .. } => Some((step.clone(), role.clone())),
            _ => None,
        })
        .collect()
}

fn escalations(h: &[Event]) -> Vec<String> {
    h.iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::TaskEscalated { role, .. } => Some(role.clone()),
            _ => None,
        })
        .collect()
}

/// `on_time` of the completion of `step` (the last one).
fn completed_on_time(h: &[Event], step: &str) -> Option<bool> {
    h.iter()
        .rev()
        .find_map(|ev| match &ev.kind {
            EventKind::TaskCompleted {
                step: s, on_time, ..
            } if s == step => Some(*on_time),
            _ => None,
        })
        .expect("the step was completed")
}

fn steps_of(e: &Engine<MemoryStore>, who: &Actor) -> Vec<String> {
    let mut v: Vec<String> = e
        .tasks_for(who)
        .unwrap()
        .into_iter()
        .map(|r| r.step)
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Complaint: follow-up within three working days (seed 002 Complaint Handling §4.6).

fn fiona() -> Actor {
    person("fiona", "after_sales", &["follow_up"], 2)
}
fn sam() -> Actor {
    person("sam", "sales", &["sales"], 2)
}
fn mary() -> Actor {
    person("mary", "general_management", &["management_rep"], 4)
}

/// A general complaint registered at once and resolved by sales at `resolved_at`: the
/// follow-up visit is open from then.
async fn complaint_resolved_at(
    e: &Engine<MemoryStore>,
    clock: &ManualClock,
    resolved_at: DateTime<Utc>,
) -> Instance {
    let inst = e
        .start(
            "complaint-handling",
            obj(json!({ "customer": "Hengxin", "contact": "Li" })),
            Some(&fiona()),
        )
        .await
        .unwrap();
    let registration = task_at(&inst, "register").id;
    let inst = complete(
        e,
        &inst,
        "register",
        &fiona(),
        None,
        json!({ "channel": "hotline", "complaint": "Noisy hoist", "severity": "general", "first_answer": "A technician will call", "received_at": "2026-11-02T08:30:00Z" }),
    )
    .await
    .unwrap();
    // (The general complaint's resolution arms timers of its own.)
    assert!(
        inst.timers.values().all(|t| t.task != registration),
        "the registration's timers are disarmed"
    );
    clock.set(resolved_at);
    let inst = complete(
        e,
        &inst,
        "resolve_general",
        &sam(),
        None,
        json!({ "resolution": "Hoist adjusted", "resolved_on": "2026-11-06" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["follow_up_visit"]);
    inst
}

/// Walks the follow-up deadline: reminder, then the breach notifying the management
/// representative; the late visit is recorded as late and the complaint closes.
async fn follow_up_walk(
    e: &Engine<MemoryStore>,
    clock: &ManualClock,
    inst: Instance,
    remind: &str,
    due: &str,
) {
    let t = task_at(&inst, "follow_up_visit");
    assert_eq!(rfc(t.due), due);
    assert_eq!(inst.timers.len(), 2, "one reminder, one breach action");
    eprintln!(
        "PROBE {:?}",
        inst.timers
            .values()
            .map(|t| (t.at, t.kind))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        e.tasks_for(&fiona()).unwrap()[0].due_ms,
        Some(at(due).timestamp_millis())
    );

    fires_at(e, clock, at(remind), 1).await;
    let now = current(e, inst.id);
    assert_eq!(
        task_at(&now, "follow_up_visit").deadline,
        DeadlineState::Reminded
    );

    fires_at(e, clock, at(due), 1).await;
    let now = current(e, inst.id);
    assert_eq!(
        task_at(&now, "follow_up_visit").deadline,
        DeadlineState::Breached
    );
    assert!(now.timers.is_empty());
    let h = e.history(inst.id).unwrap();
    assert_eq!(
        reminders(&h),
        [("follow_up_visit".to_string(), due.to_string())]
    );
    assert_eq!(
        breaches(&h),
        [(
            "follow_up_visit".to_string(),
            0,
            "notify management_rep".to_string()
        )]
    );
    assert_eq!(
        notified(&h),
        [("follow_up_visit".to_string(), "management_rep".to_string())]
    );
    // A notification, not an escalation: the task stays with the follow-up personnel.
    assert!(escalations(&h).is_empty());
    assert_eq!(steps_of(e, &fiona()), ["follow_up_visit"]);
    assert!(e.tasks_for(&mary()).unwrap().is_empty());

    clock.advance(Duration::hours(1));
    let done = complete(
        e,
        &now,
        "follow_up_visit",
        &fiona(),
        None,
        json!({ "customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Fine now" }),
    )
    .await
    .unwrap();
    assert_eq!(done.status, Status::Completed);
    assert_eq!(done.end_step.as_deref(), Some("closed"));
    let h = e.history(inst.id).unwrap();
    assert_eq!(completed_on_time(&h, "follow_up_visit"), Some(false));
    assert_eq!(Instance::fold(inst.id, &h).unwrap(), current(e, inst.id));
    assert_eq!(assert_folds(e, inst.id), done);
}

#[tokio::test]
async fn complaint_follow_up_opened_friday_afternoon_is_due_wednesday_same_time() {
    let (e, clock) = engine().await;
    // Friday 2026-11-06 15:00 Shanghai: Mon, Tue, Wed are the three working days.
    let inst = complaint_resolved_at(&e, &clock, at("2026-11-06T07:00:00Z")).await;
    // Due Wednesday 2026-11-11 15:00 Shanghai; reminded one working day before (Tuesday).
    follow_up_walk(
        &e,
        &clock,
        inst,
        "2026-11-10T07:00:00+00:00",
        "2026-11-11T07:00:00+00:00",
    )
    .await;
}

/// The due instant and the breach of a follow-up opened after work; the reminder is checked in
/// the ignored test below.
#[tokio::test]
async fn complaint_follow_up_opened_friday_evening_is_due_thursday_at_the_start_of_work() {
    let (e, clock) = engine().await;
    // Friday 2026-11-06 18:00 Shanghai, after work: counting starts Monday 08:30.
    let inst = complaint_resolved_at(&e, &clock, at("2026-11-06T10:00:00Z")).await;
    // Monday 08:30 + 3 working days = Thursday 2026-11-12 08:30 Shanghai.
    let due = at("2026-11-12T00:30:00Z");
    assert_eq!(
        rfc(task_at(&inst, "follow_up_visit").due),
        "2026-11-12T00:30:00+00:00"
    );
    clock.set(due - Duration::milliseconds(1));
    e.fire_due().await.unwrap();
    let h = e.history(inst.id).unwrap();
    assert!(
        breaches(&h).is_empty(),
        "no breach 1 ms before the due time"
    );
    assert_ne!(
        task_at(&current(&e, inst.id), "follow_up_visit").deadline,
        DeadlineState::Breached
    );
    clock.set(due);
    assert_eq!(
        e.fire_due().await.unwrap(),
        1,
        "the breach, at the due instant"
    );
    let h = e.history(inst.id).unwrap();
    assert_eq!(
        breaches(&h),
        [(
            "follow_up_visit".to_string(),
            0,
            "notify management_rep".to_string()
        )]
    );
    assert_eq!(
        notified(&h),
        [("follow_up_visit".to_string(), "management_rep".to_string())]
    );
    assert_eq!(steps_of(&e, &fiona()), ["follow_up_visit"]);
    assert_eq!(Instance::fold(inst.id, &h).unwrap(), current(&e, inst.id));
}

#[tokio::test]
async fn complaint_follow_up_opened_friday_evening_rolls_to_monday_morning_first() {
    let (e, clock) = engine().await;
    // Friday 2026-11-06 18:00 Shanghai, after work: counting starts Monday 08:30.
    let inst = complaint_resolved_at(&e, &clock, at("2026-11-06T10:00:00Z")).await;
    // Monday 08:30 + 3 working days = Thursday 2026-11-12 08:30 Shanghai; reminder Wednesday.
    follow_up_walk(
        &e,
        &clock,
        inst,
        "2026-11-11T00:30:00+00:00",
        "2026-11-12T00:30:00+00:00",
    )
    .await;
}

#[tokio::test]
async fn complaint_follow_up_opened_before_national_day_skips_the_holiday() {
    // Wednesday 2026-09-30 09:00 Shanghai, the day before the National Day holiday.
    let (e, clock) = engine_at(at("2026-09-30T01:00:00Z")).await;
    let inst = complaint_resolved_at(&e, &clock, at("2026-09-30T07:00:00Z")).await;
    // Opened Wed 15:00; Oct 1–7 are holidays; Thu Oct 8 (1), Fri Oct 9 (2) and the make-up
    // working Saturday Oct 10 (3): due Saturday 2026-10-10 15:00 Shanghai, reminded Friday.
    follow_up_walk(
        &e,
        &clock,
        inst,
        "2026-10-09T07:00:00+00:00",
        "2026-10-10T07:00:00+00:00",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Internal evaluation: notice 7–10 days before the audit date, objections up to 3 days before
// (seed 002 Service Internal Evaluation §5.1.3–§5.1.4).

struct EvalCast {
    mary: Actor,
    george: Actor,
    lena: Actor,
    otto: Actor,
    quinn: Actor,
}

fn eval_cast() -> EvalCast {
    EvalCast {
        mary: mary(),
        george: person("george", "general_management", &["general_manager"], 5),
        lena: person("lena", "quality", &["audit_team"], 3),
        otto: person("otto", "office", &["audit_team"], 2),
        quinn: person("quinn", "sales", &["sales"], 3),
    }
}

/// Plan (audit on Friday 2026-11-20), approval, team, checklist: at the notice.
async fn evaluation_at_notice(e: &Engine<MemoryStore>, c: &EvalCast) -> Instance {
    let inst = e
        .start("internal-evaluation", obj(json!({})), Some(&c.mary))
        .await
        .unwrap();
    let inst = complete(
        e,
        &inst,
        "prepare_plan",
        &c.mary,
        None,
        json!({
            "audit_purpose": "Annual evaluation", "audit_scope": "After-sales service",
            "audit_basis": "GB/T 27922-2011", "audited_department": "sales",
            "audited_department_head": "quinn", "audit_date": "2026-11-20"
        }),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "approve_plan",
        &c.george,
        Some("approve"),
        json!({}),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "designate_team",
        &c.mary,
        None,
        json!({ "team_leader": "lena", "team_members": ["lena", "otto"], "division_of_labour": "Lena leads" }),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "prepare_checklist",
        &c.otto,
        None,
        json!({ "checklist": [{ "department": "sales", "time": "2026-11-20T01:00:00Z", "project": "Complaints", "content": "Records" }] }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["notify_department"]);
    inst
}

#[tokio::test]
async fn evaluation_notice_is_due_seven_days_before_the_audit_and_reminded_ten_days_before() {
    let (e, clock) = engine().await;
    let c = eval_cast();
    let inst = evaluation_at_notice(&e, &c).await;
    // 7 days before 2026-11-20 00:00 Shanghai = 2026-11-13 00:00 Shanghai; the reminder 3 days
    // earlier is 10 days before the audit: the seed's window of 7–10 days.
    let t = task_at(&inst, "notify_department");
    assert_eq!(rfc(t.due), "2026-11-12T16:00:00+00:00");
    assert_eq!(inst.timers.len(), 2);

    fires_at(&e, &clock, at("2026-11-09T16:00:00Z"), 1).await;
    let now = current(&e, inst.id);
    assert_eq!(
        task_at(&now, "notify_department").deadline,
        DeadlineState::Reminded
    );
    assert!(e.tasks_for(&c.mary).unwrap().is_empty());

    fires_at(&e, &clock, at("2026-11-12T16:00:00Z"), 1).await;
    let now = current(&e, inst.id);
    assert_eq!(
        task_at(&now, "notify_department").deadline,
        DeadlineState::Breached
    );
    let h = e.history(inst.id).unwrap();
    assert_eq!(
        reminders(&h),
        [(
            "notify_department".to_string(),
            "2026-11-12T16:00:00+00:00".to_string()
        )]
    );
    assert_eq!(
        breaches(&h),
        [(
            "notify_department".to_string(),
            0,
            "notify management_rep".to_string()
        )]
    );
    assert_eq!(
        notified(&h),
        [(
            "notify_department".to_string(),
            "management_rep".to_string()
        )]
    );
    // Still the team leader's task alone.
    assert_eq!(steps_of(&e, &c.lena), ["notify_department"]);
    assert!(e.tasks_for(&c.otto).unwrap().is_empty());
    assert!(e.tasks_for(&c.mary).unwrap().is_empty());

    // The late notice, on Saturday 2026-11-14 10:00 Shanghai.
    clock.set(at("2026-11-14T02:00:00Z"));
    let inst = complete(
        &e,
        &now,
        "notify_department",
        &c.lena,
        None,
        json!({ "notice_date": "2026-11-14" }),
    )
    .await
    .unwrap();
    let h = e.history(inst.id).unwrap();
    assert_eq!(completed_on_time(&h, "notify_department"), Some(false));
    assert_eq!(open_steps(&inst), ["await_objection"]);
    assert_eq!(Instance::fold(inst.id, &h).unwrap(), current(&e, inst.id));
}

#[tokio::test]
async fn no_objection_by_three_days_before_the_audit_means_accept_and_the_first_meeting_opens() {
    let (e, clock) = engine().await;
    let c = eval_cast();
    let inst = evaluation_at_notice(&e, &c).await;
    // The notice on time, Tuesday 2026-11-10 10:00 Shanghai.
    clock.set(at("2026-11-10T02:00:00Z"));
    assert_eq!(
        e.fire_due().await.unwrap(),
        1,
        "the notice's reminder on the way"
    );
    let inst = current(&e, inst.id);
    let inst = complete(
        &e,
        &inst,
        "notify_department",
        &c.lena,
        None,
        json!({ "notice_date": "2026-11-10" }),
    )
    .await
    .unwrap();
    assert!(
        inst.timers
            .iter()
            .all(|(_, t)| t.task == task_at(&inst, "await_objection").id),
        "the notice's breach timer is disarmed"
    );
    let h = e.history(inst.id).unwrap();
    assert_eq!(completed_on_time(&h, "notify_department"), Some(true));

    // 3 days before 2026-11-20 00:00 Shanghai = 2026-11-17 00:00 Shanghai.
    let t = task_at(&inst, "await_objection");
    assert_eq!(rfc(t.due), "2026-11-16T16:00:00+00:00");
    assert_eq!(t.assignee.as_deref(), Some("quinn"));
    assert_eq!(steps_of(&e, &c.quinn), ["await_objection"]);
    assert_eq!(inst.timers.len(), 1);

    fires_at(&e, &clock, at("2026-11-16T16:00:00Z"), 1).await;
    let now = current(&e, inst.id);
    assert_eq!(open_steps(&now), ["first_meeting"]);
    let h = e.history(inst.id).unwrap();
    assert_eq!(
        breaches(&h),
        [(
            "await_objection".to_string(),
            0,
            "take outcome accept".to_string()
        )]
    );
    let taken = h.iter().find_map(|ev| match &ev.kind {
        EventKind::TaskCompleted {
            step,
            outcome,
            on_time,
            ..
        } if step == "await_objection" => Some((outcome.clone(), ev.by.is_none(), *on_time)),
        _ => None,
    });
    let (outcome, by_engine, _) = taken.expect("the clock completed the step");
    assert_eq!(outcome, "accept");
    assert!(
        by_engine,
        "recorded as the engine's completion, not Quinn's"
    );
    // The department head's worklist is empty; the team leader has the first meeting.
    assert!(e.tasks_for(&c.quinn).unwrap().is_empty());
    assert_eq!(steps_of(&e, &c.lena), ["first_meeting"]);
    assert_eq!(
        task_at(&now, "first_meeting").assignee.as_deref(),
        Some("lena")
    );
    assert_eq!(e.fire_due().await.unwrap(), 0);
    assert_eq!(Instance::fold(inst.id, &h).unwrap(), now);
}

// ---------------------------------------------------------------------------------------------
// Repair dispatch: remote guidance within 24 hours, on site within 7 days, 3 in an emergency
// (seed 004 rule (4), User supervision measures (1), (3)).

fn alan() -> Actor {
    person("alan", "after_sales", &["after_sales"], 3)
}
fn tom() -> Actor {
    person("tom", "after_sales", &["after_sales"], 2)
}

/// Call received Monday 2026-11-02 16:05 Shanghai (08:05 UTC), recorded, order recorded.
async fn repair_ordered(e: &Engine<MemoryStore>, emergency: bool) -> Instance {
    let inst = e
        .start(
            "repair-dispatch",
            obj(json!({ "customer": "Dongfang Port", "contact": "Mr Li", "equipment": "QD20 crane" })),
            Some(&fiona()),
        )
        .await
        .unwrap();
    let inst = complete(
        e,
        &inst,
        "register_call",
        &fiona(),
        None,
        json!({ "call_received_at": "2026-11-02T08:05:00Z", "call_channel": "hotline", "call_summary": "Hoist drifts down" }),
    )
    .await
    .unwrap();
    let order: Value = json!({
        "fault_cause": "Brake may be worn",
        "occurred_at": "2026-11-02T07:30:00Z",
        "fault_nature": "Hoist drifts down under load",
        "fault_category": "mechanical",
        "fault_location": "Workshop 3",
        "impact": if emergency { "production_stopped" } else { "reduced_operation" },
        "user_measures": "Load limited",
        "in_warranty": true,
        "emergency": emergency,
    });
    let inst = complete(e, &inst, "record_order", &sam(), None, order)
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["remote_guidance"]);
    inst
}

/// Guidance did not solve it, Tom dispatched and gave his arrival time: at the arrival.
async fn repair_travelling(e: &Engine<MemoryStore>, emergency: bool) -> Instance {
    let inst = repair_ordered(e, emergency).await;
    let inst = complete(
        e,
        &inst,
        "remote_guidance",
        &alan(),
        Some("site_visit_needed"),
        json!({ "guidance_given": "Not adjustable remotely" }),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "dispatch",
        &alan(),
        None,
        json!({
            "technician": "tom", "dispatch_number": "FD-2026-0412", "fault_type": "Brake",
            "tools": ["torque wrench"], "spare_parts": [{ "part": "Brake pad set", "quantity": 2, "vulnerable": true }],
        }),
    )
    .await
    .unwrap();
    complete(
        e,
        &inst,
        "inform_arrival",
        &tom(),
        None,
        json!({ "estimated_arrival": "2026-11-03T02:00:00Z" }),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn remote_guidance_within_24_hours_of_the_call_or_sales_gets_the_task() {
    let (e, clock) = engine().await;
    let inst = repair_ordered(&e, false).await;
    let t = task_at(&inst, "remote_guidance");
    // 24 hours after the call at 2026-11-02T08:05Z.
    assert_eq!(rfc(t.due), "2026-11-03T08:05:00+00:00");
    assert!(e.tasks_for(&sam()).unwrap().is_empty());
    assert_eq!(steps_of(&e, &alan()), ["remote_guidance"]);

    fires_at(&e, &clock, at("2026-11-03T04:05:00Z"), 1).await;
    assert_eq!(
        task_at(&current(&e, inst.id), "remote_guidance").deadline,
        DeadlineState::Reminded
    );
    assert!(e.tasks_for(&sam()).unwrap().is_empty());

    fires_at(&e, &clock, at("2026-11-03T08:05:00Z"), 1).await;
    let now = current(&e, inst.id);
    let t = task_at(&now, "remote_guidance");
    assert_eq!(t.deadline, DeadlineState::Escalated);
    assert!(t.roles.contains(&"sales".to_string()));
    assert!(t.roles.contains(&"after_sales".to_string()));
    let h = e.history(inst.id).unwrap();
    assert_eq!(
        breaches(&h),
        [(
            "remote_guidance".to_string(),
            0,
            "escalate to sales".to_string()
        )]
    );
    assert_eq!(escalations(&h), ["sales"]);
    // Sales now sees it; after-sales still does.
    assert_eq!(steps_of(&e, &sam()), ["remote_guidance"]);
    assert_eq!(steps_of(&e, &alan()), ["remote_guidance"]);

    // The sales department guides the user, late.
    let done = complete(
        &e,
        &now,
        "remote_guidance",
        &sam(),
        Some("solved_remotely"),
        json!({ "guidance_given": "Reset the brake controller" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&done), ["follow_up_visit"]);
    let h = e.history(inst.id).unwrap();
    assert_eq!(completed_on_time(&h, "remote_guidance"), Some(false));
    assert_eq!(Instance::fold(inst.id, &h).unwrap(), current(&e, inst.id));
}

async fn arrival_walk(emergency: bool) {
    let (e, clock) = engine().await;
    let inst = repair_travelling(&e, emergency).await;
    let step = if emergency {
        "arrive_emergency"
    } else {
        "arrive_normal"
    };
    // Calendar days after the call (2026-11-02 16:05 Shanghai), same local time.
    let (remind, due, second) = if emergency {
        // Due Thursday 2026-11-05 16:05 Shanghai; sales told 4 hours later.
        (
            "2026-11-04T08:05:00+00:00",
            "2026-11-05T08:05:00+00:00",
            "2026-11-05T12:05:00+00:00",
        )
    } else {
        // Due Monday 2026-11-09 16:05 Shanghai (calendar days: the weekend counts); sales
        // told a day later.
        (
            "2026-11-08T08:05:00+00:00",
            "2026-11-09T08:05:00+00:00",
            "2026-11-10T08:05:00+00:00",
        )
    };
    assert_eq!(open_steps(&inst), [step]);
    let t = task_at(&inst, step);
    assert_eq!(rfc(t.due), due);
    assert_eq!(t.assignee.as_deref(), Some("tom"));
    assert_eq!(inst.timers.len(), 3);

    fires_at(&e, &clock, at(remind), 1).await;
    assert_eq!(
        task_at(&current(&e, inst.id), step).deadline,
        DeadlineState::Reminded
    );
    fires_at(&e, &clock, at(due), 1).await;
    let h = e.history(inst.id).unwrap();
    assert_eq!(
        notified(&h),
        [(step.to_string(), "after_sales".to_string())]
    );
    fires_at(&e, &clock, at(second), 1).await;
    let now = current(&e, inst.id);
    let t = task_at(&now, step);
    assert_eq!(t.deadline, DeadlineState::Breached);
    assert!(now.timers.is_empty());
    let h = e.history(inst.id).unwrap();
    assert_eq!(reminders(&h), [(step.to_string(), due.to_string())]);
    let late = (at(second) - at(due)).num_milliseconds();
    assert_eq!(
        breaches(&h),
        [
            (step.to_string(), 0, "notify after_sales".to_string()),
            (step.to_string(), late, "notify sales".to_string()),
        ]
    );
    assert_eq!(
        notified(&h),
        [
            (step.to_string(), "after_sales".to_string()),
            (step.to_string(), "sales".to_string()),
        ]
    );
    // Notifications only: still Tom's task alone.
    assert!(escalations(&h).is_empty());
    assert_eq!(steps_of(&e, &tom()), [step]);
    assert!(e.tasks_for(&alan()).unwrap().is_empty());
    assert!(e.tasks_for(&sam()).unwrap().is_empty());

    let arrived = complete(
        &e,
        &now,
        step,
        &tom(),
        None,
        json!({ "arrived_at": "2026-11-10T09:00:00Z" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&arrived), ["on_site_repair"]);
    let h = e.history(inst.id).unwrap();
    assert_eq!(completed_on_time(&h, step), Some(false));
    assert_eq!(Instance::fold(inst.id, &h).unwrap(), current(&e, inst.id));
}

#[tokio::test]
async fn on_site_within_seven_days_of_the_call() {
    arrival_walk(false).await;
}

#[tokio::test]
async fn on_site_within_three_days_of_the_call_in_an_emergency() {
    arrival_walk(true).await;
}

#[tokio::test]
async fn arriving_one_millisecond_before_the_due_time_is_on_time() {
    let (e, clock) = engine().await;
    let inst = repair_travelling(&e, true).await;
    let due = at("2026-11-05T08:05:00Z");
    clock.set(due - Duration::milliseconds(1));
    assert_eq!(e.fire_due().await.unwrap(), 1, "only the reminder");
    let now = current(&e, inst.id);
    let after = complete(
        &e,
        &now,
        "arrive_emergency",
        &tom(),
        None,
        json!({ "arrived_at": "2026-11-05T08:04:59Z" }),
    )
    .await
    .unwrap();
    assert!(after.timers.is_empty());
    clock.advance(Duration::days(10));
    assert_eq!(e.fire_due().await.unwrap(), 0);
    let h = e.history(inst.id).unwrap();
    assert!(breaches(&h).is_empty());
    assert_eq!(completed_on_time(&h, "arrive_emergency"), Some(true));
    assert_eq!(Instance::fold(inst.id, &h).unwrap(), current(&e, inst.id));
}

// ---------------------------------------------------------------------------------------------
// Corrective action: the rectification deadline (seed 002 Service Internal Evaluation §5.5.2).

#[tokio::test]
async fn corrective_action_rectification_deadline_reminds_then_notifies_the_team_then_the_rep() {
    let (e, clock) = engine().await;
    let quinn = person("quinn", "sales", &["sales"], 3);
    let lena = person("lena", "quality", &["audit_team"], 3);
    let inst = e
        .start(
            "corrective-action",
            obj(json!({
                "clause": "GB/T 27922 5.4.3", "finding": "Follow-up records incomplete",
                "department": "sales", "owner": "quinn",
                "rectification_deadline": "2026-11-20", "reviewer": "lena",
            })),
            Some(&mary()),
        )
        .await
        .unwrap();
    // Due 2026-11-20 00:00 Shanghai. The reminder 3 working days before: 00:00 Friday rolls back
    // to Thursday 17:30, then Wed, Tue, Mon: Monday 2026-11-16 17:30 Shanghai.
    let t = task_at(&inst, "plan_rectification");
    assert_eq!(rfc(t.due), "2026-11-19T16:00:00+00:00");
    assert_eq!(t.assignee.as_deref(), Some("quinn"));
    assert_eq!(inst.timers.len(), 3);

    // The plan on time (Wednesday 2026-11-04); the implementation carries the same deadline.
    clock.set(at("2026-11-04T02:00:00Z"));
    assert_eq!(e.fire_due().await.unwrap(), 0);
    let inst = complete(
        &e,
        &inst,
        "plan_rectification",
        &quinn,
        None,
        json!({
            "impact_analysis": "Visits not traceable", "cause_analysis": "No form",
            "corrective_measures": "Introduce the follow-up form", "planned_completion": "2026-11-18",
        }),
    )
    .await
    .unwrap();
    let h = e.history(inst.id).unwrap();
    assert_eq!(completed_on_time(&h, "plan_rectification"), Some(true));
    let t = task_at(&inst, "implement");
    assert_eq!(rfc(t.due), "2026-11-19T16:00:00+00:00");
    assert_eq!(inst.timers.len(), 3, "only the implementation's timers");
    assert_eq!(steps_of(&e, &quinn), ["implement"]);

    fires_at(&e, &clock, at("2026-11-16T09:30:00Z"), 1).await;
    assert_eq!(
        task_at(&current(&e, inst.id), "implement").deadline,
        DeadlineState::Reminded
    );
    fires_at(&e, &clock, at("2026-11-19T16:00:00Z"), 1).await;
    let h = e.history(inst.id).unwrap();
    assert_eq!(
        notified(&h),
        [("implement".to_string(), "audit_team".to_string())]
    );
    // One working day after the due time: Friday 00:00 Shanghai rolls to Friday 08:30, plus
    // one working day = Monday 2026-11-23 08:30 Shanghai.
    fires_at(&e, &clock, at("2026-11-23T00:30:00Z"), 1).await;
    let now = current(&e, inst.id);
    assert_eq!(task_at(&now, "implement").deadline, DeadlineState::Breached);
    assert!(now.timers.is_empty());
    let h = e.history(inst.id).unwrap();
    assert_eq!(
        reminders(&h),
        [(
            "implement".to_string(),
            "2026-11-19T16:00:00+00:00".to_string()
        )]
    );
    let late = (at("2026-11-23T00:30:00Z") - at("2026-11-19T16:00:00Z")).num_milliseconds();
    assert_eq!(
        breaches(&h),
        [
            ("implement".to_string(), 0, "notify audit_team".to_string()),
            (
                "implement".to_string(),
                late,
                "notify management_rep".to_string()
            ),
        ]
    );
    assert_eq!(
        notified(&h),
        [
            ("implement".to_string(), "audit_team".to_string()),
            ("implement".to_string(), "management_rep".to_string()),
        ]
    );
    // Notifications only: the owner still holds the task.
    assert_eq!(steps_of(&e, &quinn), ["implement"]);
    assert!(e.tasks_for(&lena).unwrap().is_empty());
    assert!(e.tasks_for(&mary()).unwrap().is_empty());

    let inst = complete(
        &e,
        &now,
        "implement",
        &quinn,
        None,
        json!({
            "implementation_record": "Form in use since 2026-11-23", "document_changed": false,
            "witness_materials": [{ "description": "Filled forms", "reference": "FU-2026-11" }],
        }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["verify"]);
    assert_eq!(steps_of(&e, &lena), ["verify"]);
    let h = e.history(inst.id).unwrap();
    assert_eq!(completed_on_time(&h, "implement"), Some(false));
    assert_eq!(Instance::fold(inst.id, &h).unwrap(), current(&e, inst.id));
}

// ---------------------------------------------------------------------------------------------
// Warranty renewal: the notice ten days before the warranty ends (seed 004 After-sales service
// rules (12)).

async fn warranty(e: &Engine<MemoryStore>) -> Instance {
    e.start(
        "warranty-renewal",
        obj(json!({ "customer": "Hengxin Lifting", "equipment": "QD20 crane, serial QD20-0711", "warranty_end": "2026-12-01" })),
        Some(&alan()),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn warranty_notice_ten_days_before_the_end_escalates_to_sales_then_tells_the_rep() {
    let (e, clock) = engine().await;
    let inst = warranty(&e).await;
    // 10 days before 2026-12-01 00:00 Shanghai = 2026-11-21 00:00 Shanghai; reminder 3 days
    // earlier; the management representative is told a day after the breach.
    let t = task_at(&inst, "notify_user");
    assert_eq!(rfc(t.due), "2026-11-20T16:00:00+00:00");
    assert_eq!(inst.timers.len(), 3);
    assert_eq!(steps_of(&e, &alan()), ["notify_user"]);
    assert!(e.tasks_for(&sam()).unwrap().is_empty());

    fires_at(&e, &clock, at("2026-11-17T16:00:00Z"), 1).await;
    assert_eq!(
        task_at(&current(&e, inst.id), "notify_user").deadline,
        DeadlineState::Reminded
    );
    assert!(e.tasks_for(&sam()).unwrap().is_empty());

    fires_at(&e, &clock, at("2026-11-20T16:00:00Z"), 1).await;
    let now = current(&e, inst.id);
    let t = task_at(&now, "notify_user");
    assert_eq!(t.deadline, DeadlineState::Escalated);
    assert!(t.roles.contains(&"sales".to_string()));
    assert_eq!(steps_of(&e, &sam()), ["notify_user"]);
    assert_eq!(steps_of(&e, &alan()), ["notify_user"]);
    assert!(e.tasks_for(&mary()).unwrap().is_empty());

    fires_at(&e, &clock, at("2026-11-21T16:00:00Z"), 1).await;
    let now = current(&e, inst.id);
    assert!(now.timers.is_empty());
    let h = e.history(inst.id).unwrap();
    assert_eq!(
        reminders(&h),
        [(
            "notify_user".to_string(),
            "2026-11-20T16:00:00+00:00".to_string()
        )]
    );
    assert_eq!(
        breaches(&h),
        [
            (
                "notify_user".to_string(),
                0,
                "escalate to sales".to_string()
            ),
            (
                "notify_user".to_string(),
                Duration::days(1).num_milliseconds(),
                "notify management_rep".to_string()
            ),
        ]
    );
    assert_eq!(escalations(&h), ["sales"]);
    assert_eq!(
        notified(&h),
        [("notify_user".to_string(), "management_rep".to_string())]
    );
    // Notified, not given the task.
    assert!(e.tasks_for(&mary()).unwrap().is_empty());

    // Sales notifies the user late; the user does not renew: the written materials follow.
    let inst = complete(
        &e,
        &now,
        "notify_user",
        &sam(),
        Some("not_renewed"),
        json!({ "notified_on": "2026-11-22", "notice_channel": "telephone", "user_reply": "Will not renew" }),
    )
    .await
    .unwrap();
    let h = e.history(inst.id).unwrap();
    assert_eq!(completed_on_time(&h, "notify_user"), Some(false));
    assert_eq!(open_steps(&inst), ["discontinued_parts_materials"]);
    assert!(task_at(&inst, "discontinued_parts_materials").due.is_none());
    let done = complete(
        &e,
        &inst,
        "discontinued_parts_materials",
        &alan(),
        None,
        json!({
            "matters_explained": "No free repairs after 2026-12-01; paid service on request",
            "materials_provided": "Replacement list for the discontinued QD20 brake controller",
            "materials_sent_on": "2026-11-23",
        }),
    )
    .await
    .unwrap();
    assert_eq!(done.status, Status::Completed);
    assert_eq!(done.end_step.as_deref(), Some("warranty_ended"));
    let h = e.history(inst.id).unwrap();
    assert_eq!(Instance::fold(inst.id, &h).unwrap(), current(&e, inst.id));
}

#[tokio::test]
async fn warranty_renewed_in_time_fires_nothing_after_the_reminder() {
    let (e, clock) = engine().await;
    let inst = warranty(&e).await;
    // Notified on the reminder day, Wednesday 2026-11-18 10:00 Shanghai.
    clock.set(at("2026-11-18T02:00:00Z"));
    assert_eq!(e.fire_due().await.unwrap(), 1, "the reminder");
    let now = current(&e, inst.id);
    let done = complete(
        &e,
        &now,
        "notify_user",
        &alan(),
        Some("renewed"),
        json!({ "notified_on": "2026-11-18", "notice_channel": "letter", "user_reply": "Renews for two years", "new_warranty_end": "2028-12-01" }),
    )
    .await
    .unwrap();
    assert_eq!(done.status, Status::Completed);
    assert_eq!(done.end_step.as_deref(), Some("renewed"));
    assert!(done.timers.is_empty());
    let events = e.history(inst.id).unwrap().len();
    clock.advance(Duration::days(30));
    // (Other procedures' scheduled runs may fall in these 30 days; this instance is done.)
    e.fire_due().await.unwrap();
    let h = e.history(inst.id).unwrap();
    assert_eq!(h.len(), events, "nothing fires for an ended instance");
    assert!(breaches(&h).is_empty());
    assert_eq!(completed_on_time(&h, "notify_user"), Some(true));
    assert_eq!(Instance::fold(inst.id, &h).unwrap(), current(&e, inst.id));
}
