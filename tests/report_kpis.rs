//! Service KPIs (seed 002 Supervision and Management §4.1.2) computed from the histories
//! the real engine writes: five complaints driven on the manual clock, every figure of the
//! report worked out by hand from the clock moves below.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use serde_json::{json, Value};
use sopflow::engine::decide::Command;
use sopflow::engine::instance::{Actor, Instance};
use sopflow::engine::service::Engine;
use sopflow::report::{kpis_from_engine, render_table, KpiReport, Objective, ReportError};
use sopflow::store::memory::MemoryStore;

const P: &str = "complaint-handling";

fn at(hours: i64) -> DateTime<Utc> {
    t0() + Duration::hours(hours)
}

fn registration(severity: &str) -> Value {
    json!({
        "channel": "hotline",
        "complaint": "Hoist brake slips under load",
        "severity": severity,
        "first_answer": "An engineer will call today", "received_at": "2026-11-02T08:30:00Z",
    })
}

fn resolution() -> Value {
    json!({ "resolution": "Brake pads replaced", "resolved_on": "2026-11-03" })
}

fn visit(satisfied: bool) -> Value {
    json!({ "customer_satisfied": satisfied, "satisfaction_score": (if satisfied { 100 } else { 40 }), "customer_evaluation": "asked by phone" })
}

async fn start(e: &Engine<MemoryStore>, who: &Actor) -> Instance {
    let data = obj(json!({ "customer": "Hengxin Lifting", "contact": "Mr Li" }));
    e.start(P, data, Some(who)).await.expect("starts")
}

async fn done(
    e: &Engine<MemoryStore>,
    inst: &Instance,
    step: &str,
    who: &Actor,
    form: Value,
) -> Instance {
    let current = e.instance(inst.id).unwrap().unwrap();
    complete(e, &current, step, who, None, form)
        .await
        .unwrap_or_else(|err| panic!("{step}: {err:?}"))
}

/// (step, opened, completed, open, median s, p90 s, on-time %, late, escalated)
type Row<S> = (
    S,
    u64,
    u64,
    u64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    u64,
    u64,
);

fn round2(x: Option<f64>) -> Option<f64> {
    x.map(|x| (x * 100.0).round() / 100.0)
}

fn rows(r: &KpiReport) -> Vec<Row<String>> {
    r.steps
        .iter()
        .map(|s| {
            (
                s.step.clone(),
                s.opened,
                s.completed,
                s.open,
                s.duration.median_seconds,
                s.duration.p90_seconds,
                round2(s.on_time_rate),
                s.breaches,
                s.escalations,
            )
        })
        .collect()
}

/// Hours → seconds, for reading the expectations.
fn h(hours: f64) -> Option<f64> {
    Some(hours * 3600.0)
}

#[tokio::test]
async fn kpis_of_five_complaints_match_the_hand_computation() {
    let (e, clock) = engine().await;
    let fiona = person("fiona", "after_sales", &["follow_up"], 2);
    let sam = person("sam", "sales", &["sales"], 2);
    let mary = person("mary", "general_management", &["management_rep"], 4);
    let alan = person("alan", "after_sales", &["after_sales"], 2);

    // The period: from t0 + 1h (included) to t0 + 48h (excluded). Times below are hours
    // after t0 (Monday 2026-11-02 09:00Z).
    let (from, to) = (at(1), at(48));

    // 0h: complaint A starts, before the period; its `register` opens at 0h.
    let a = start(&e, &fiona).await;
    // 1h (= from, so inside): B and C start; A's register is answered (opened 0h → 1h).
    clock.set(at(1));
    let b = start(&e, &fiona).await;
    let c = start(&e, &fiona).await;
    let a = done(&e, &a, "register", &fiona, registration("general")).await;
    // 2h: C's register (1h → 2h); D starts.
    clock.set(at(2));
    let c = done(&e, &c, "register", &fiona, registration("general")).await;
    let d = start(&e, &fiona).await;
    // 3h: A's and C's resolutions (A 1h → 3h, C 2h → 3h).
    clock.set(at(3));
    let a = done(&e, &a, "resolve_general", &sam, resolution()).await;
    let c = done(&e, &c, "resolve_general", &sam, resolution()).await;
    // 4h: D is cancelled with its register still open.
    clock.set(at(4));
    e.execute(
        d.id,
        Command::Cancel {
            reason: "registered twice".into(),
        },
        Some(&mary),
    )
    .await
    .expect("cancels");
    // 5h: A's follow-up (3h → 5h), satisfied: A is closed, 5h after its start.
    clock.set(at(5));
    let a = done(&e, &a, "follow_up_visit", &fiona, visit(true)).await;
    assert_eq!(a.end_step.as_deref(), Some("closed"));
    // 6h: C's follow-up (3h → 6h), not satisfied: a second complaint opens.
    clock.set(at(6));
    let c = done(&e, &c, "follow_up_visit", &fiona, visit(false)).await;
    // 8h: the second complaint's cause (6h → 8h, due 24h after it opened): resolve_second
    // opens and stays open past the end of the period.
    clock.set(at(8));
    let c = done(
        &e,
        &c,
        "second_complaint",
        &alan,
        json!({ "second_cause": "product_quality", "second_findings": "Worn drum" }),
    )
    .await;
    assert_eq!(open_steps(&c), ["resolve_second"]);
    // 25h: B's register, open since 1h, is 24h old: its reminder (4h before, 21h) and its
    // breach (escalate to the management representative) fire.
    clock.set(at(25));
    assert_eq!(e.fire_due().await.unwrap(), 2);
    // 27h: the management representative answers B's register, late (1h → 27h).
    clock.set(at(27));
    let b = done(&e, &b, "register", &mary, registration("general")).await;
    // 28h: B's resolution (27h → 28h); 29h: B's follow-up (28h → 29h), satisfied, closed
    // 28h after its start.
    clock.set(at(28));
    let b = done(&e, &b, "resolve_general", &sam, resolution()).await;
    clock.set(at(29));
    let b = done(&e, &b, "follow_up_visit", &fiona, visit(true)).await;
    assert_eq!(b.end_step.as_deref(), Some("closed"));
    // 48h (= to, so outside): E starts and C's second resolution is done; 51h: C's
    // satisfied follow-up closes C — all outside the period.
    clock.set(at(48));
    let _e_complaint = start(&e, &fiona).await;
    let c = done(&e, &c, "resolve_second", &alan, resolution()).await;
    clock.set(at(51));
    let c = done(&e, &c, "follow_up_visit", &fiona, visit(true)).await;
    assert_eq!(c.end_step.as_deref(), Some("closed"));

    let r = kpis_from_engine(&e, P, from, to).expect("report");

    assert_eq!((r.procedure.as_str(), r.from, r.to), (P, from, to));
    let i = &r.instances;
    // Started in [1h, 48h): B, C (1h), D (2h). A started at 0h, E at 48h.
    assert_eq!(i.started, 3);
    // Completed: A (5h), B (29h); C only at 51h. Cancelled: D (4h).
    assert_eq!((i.completed, i.cancelled), (2, 1));
    // Open at 48h: C (resolve_second). E starts at 48h, not before it.
    assert_eq!(i.open, 1);
    // Durations: A 0h → 5h = 18,000 s; B 1h → 29h = 100,800 s. Median of two by nearest
    // rank = rank ⌈0.5 × 2⌉ = 1 → 18,000 s; p90 = rank ⌈0.9 × 2⌉ = 2 → 100,800 s.
    assert_eq!(i.duration.median_seconds, Some(18_000.0));
    assert_eq!(i.duration.p90_seconds, Some(100_800.0));
    // Completions of steps with a deadline in the period: register A, C (on time), B (late);
    // resolve_general A, C, B (on time, due in 7 days); follow_up_visit A, C, B (on time);
    // second_complaint C (on time) → 9 of 10 = 90%.
    assert_eq!(round2(i.on_time_rate), Some(90.0));
    // B's register: one breach, one escalation.
    assert_eq!((i.breaches, i.escalations), (1, 1));

    let expected: Vec<Row<&str>> = vec![
        // opened B, C (1h), D (2h) — A's at 0h is before; completed A 1h, C 1h, B 26h:
        // median rank 2 of [1h, 1h, 26h] = 1h, p90 rank 3 = 26h; on time 2 of 3.
        ("register", 3, 3, 0, h(1.0), h(26.0), Some(66.67), 1, 1),
        // A 1h → 3h (2h), C 2h → 3h (1h), B 27h → 28h (1h): [1h, 1h, 2h].
        (
            "resolve_general",
            3,
            3,
            0,
            h(1.0),
            h(2.0),
            Some(100.0),
            0,
            0,
        ),
        ("analyse_crisis_causes", 0, 0, 0, None, None, None, 0, 0),
        ("crisis_report", 0, 0, 0, None, None, None, 0, 0),
        ("handle_by_management_rep", 0, 0, 0, None, None, None, 0, 0),
        ("implement_handling_plan", 0, 0, 0, None, None, None, 0, 0),
        // A 3h → 5h (2h), C 3h → 6h (3h), B 28h → 29h (1h); C's second at 48h is after.
        (
            "follow_up_visit",
            3,
            3,
            0,
            h(2.0),
            h(3.0),
            Some(100.0),
            0,
            0,
        ),
        // C 6h → 8h.
        (
            "second_complaint",
            1,
            1,
            0,
            h(2.0),
            h(2.0),
            Some(100.0),
            0,
            0,
        ),
        // C's, opened 8h, completed at 48h = to: still open at the end.
        ("resolve_second", 1, 0, 1, None, None, None, 0, 0),
        ("record_penalty", 0, 0, 0, None, None, None, 0, 0),
        ("customer_cause_report", 0, 0, 0, None, None, None, 0, 0),
        ("assign_dedicated_person", 0, 0, 0, None, None, None, 0, 0),
        ("negotiate", 0, 0, 0, None, None, None, 0, 0),
    ];
    let expected: Vec<Row<String>> = expected
        .into_iter()
        .map(|(s, a, b, c, d, e, f, g, k)| (s.to_string(), a, b, c, d, e, f, g, k))
        .collect();
    assert_eq!(rows(&r), expected);

    let rates: Vec<_> = r
        .rates
        .iter()
        .map(|x| {
            (
                x.id.as_str(),
                x.numerator,
                x.denominator,
                round2(x.rate),
                x.objective,
                x.met,
            )
        })
        .collect();
    assert_eq!(
        rates,
        [
            // Follow-up scores in the period: A 100, C 40, B 100 → 2 of 3 at 95 or more,
            // against an objective of every visit (§4.1.2 "satisfaction score ≥ 95 points").
            (
                "satisfaction_score",
                2,
                3,
                Some(66.67),
                Some(Objective::AtLeast(100.0)),
                Some(false)
            ),
            // Follow-ups in the period: A yes, C no, B yes → 2/3 = 66.67% < 95%.
            (
                "satisfaction_rate",
                2,
                3,
                Some(66.67),
                Some(Objective::AtLeast(95.0)),
                Some(false)
            ),
            // C's → 1/3; no objective.
            ("second_complaint_rate", 1, 3, Some(33.33), None, None),
            // Ended in the period: A, B closed, D cancelled → 2/3 < 100%.
            (
                "resolution_rate",
                2,
                3,
                Some(66.67),
                Some(Objective::AtLeast(100.0)),
                Some(false)
            ),
        ]
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // The same period a day later holds only B's late events and nothing else: the fold
    // looks at each event's own time, not at when the report is asked.
    let later = kpis_from_engine(&e, P, at(24), at(30)).expect("report");
    assert_eq!(later.instances.started, 0);
    assert_eq!(later.instances.completed, 1, "B at 29h");
    assert_eq!(
        later.instances.open, 1,
        "C; A and D ended before 30h, B at 29h"
    );
    assert_eq!(later.instances.breaches, 1);
    // Resolution over [24h, 30h): only B ended → 1/1 = 100%, met.
    let res = &later.rates[3];
    assert_eq!(
        (res.numerator, res.denominator, res.met),
        (1, 1, Some(true))
    );

    insta::assert_snapshot!("kpi_table", render_table(&r));
}

#[tokio::test]
async fn an_unknown_procedure_is_a_typed_error() {
    let (e, _clock) = engine().await;
    let err = kpis_from_engine(&e, "no-such-procedure", at(0), at(1)).unwrap_err();
    assert!(matches!(err, ReportError::UnknownProcedure(p) if p == "no-such-procedure"));
    let err = kpis_from_engine(&e, P, at(1), at(0)).unwrap_err();
    assert!(matches!(err, ReportError::BadPeriod { .. }), "{err:?}");
}

#[tokio::test]
async fn the_report_serialises_with_percent_rates_and_seconds() {
    let (e, clock) = engine().await;
    let fiona = person("fiona", "after_sales", &["follow_up"], 2);
    let _ = start(&e, &fiona).await;
    clock.set(at(1));
    let r = kpis_from_engine(&e, P, at(0), at(1)).expect("report");
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["instances"]["started"], 1);
    assert_eq!(v["instances"]["open"], 1);
    assert_eq!(v["steps"][0]["step"], "register");
    assert_eq!(v["steps"][0]["open"], 1);
    assert_eq!(v["rates"][0]["objective"], json!({ "at_least": 100.0 }));
    assert_eq!(v["rates"][0]["rate"], Value::Null);
    assert_eq!(v["rates"][0]["met"], Value::Null);
}
