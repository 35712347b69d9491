//! The service workflows driven through the engine: spare parts replacement (seed 002
//! Maintenance §4.2.1, §5.2), the annual satisfaction survey and the satisfaction check after
//! service work (seed 002 Complaint Handling §4.10–§4.12, seed 001 §3.4.4), return visits
//! (seed 000 §3, seed 001 §3.4.4, seed 004 rule (1)), quality information feedback (seed 001
//! §3.3, §3.4.3), crisis events (seed 002 Complaint Handling §4.8), holiday care visits
//! (§4.14), contract review and pre-shipment acceptance (seed 000 §2), installation,
//! commissioning and training (seed 000 §3, seed 004 Free technical training) and service
//! equipment acceptance (seed 002 Infrastructure §5.4.1). Main paths, the loops back, the
//! refusals that must leave the store untouched, and deadlines on the manual clock.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use serde_json::{json, Value};
use sopflow::engine::decide::EngineError;
use sopflow::engine::instance::{Actor, EventKind, Instance, Status};
use sopflow::engine::service::Engine;
use sopflow::store::memory::MemoryStore;
use sopflow::store::Store;

struct Cast {
    /// Follow-up personnel.
    fiona: Actor,
    /// Sales department.
    sam: Actor,
    /// Another sales person.
    sue: Actor,
    /// After-sales service department.
    alan: Actor,
    /// After-sales technician.
    tom: Actor,
    /// Materials department.
    mia: Actor,
    /// Quality department.
    quinn: Actor,
    /// Engineering department.
    ed: Actor,
    /// Production department.
    pat: Actor,
    /// Office.
    olga: Actor,
    /// Marketing office.
    mark: Actor,
    /// Management representative.
    rita: Actor,
    /// General manager.
    gus: Actor,
}

fn cast() -> Cast {
    Cast {
        fiona: person("fiona", "after_sales", &["follow_up", "staff"], 2),
        sam: person("sam", "sales", &["sales", "staff"], 3),
        sue: person("sue", "sales", &["sales", "staff"], 2),
        alan: person("alan", "after_sales", &["after_sales", "staff"], 3),
        tom: person("tom", "after_sales", &["after_sales", "staff"], 2),
        mia: person("mia", "materials", &["materials", "staff"], 3),
        quinn: person("quinn", "quality", &["quality", "staff"], 3),
        ed: person("ed", "engineering", &["engineering", "staff"], 3),
        pat: person("pat", "production", &["production", "staff"], 3),
        olga: person("olga", "office", &["office", "staff"], 2),
        mark: person(
            "mark",
            "marketing_office",
            &["marketing_office", "staff"],
            2,
        ),
        rita: person(
            "rita",
            "general_management",
            &["management_rep", "staff"],
            4,
        ),
        gus: person(
            "gus",
            "general_management",
            &["general_manager", "staff"],
            5,
        ),
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Completes `step` as `who`; it must be accepted.
async fn go(
    e: &Engine<MemoryStore>,
    inst: &Instance,
    step: &str,
    who: &Actor,
    outcome: Option<&str>,
    form: Value,
) -> Instance {
    complete(e, inst, step, who, outcome, form)
        .await
        .unwrap_or_else(|err| panic!("{step} by {}: {err:?}", who.id))
}

async fn start(e: &Engine<MemoryStore>, procedure: &str, who: &Actor, data: Value) -> Instance {
    e.start(procedure, obj(data), Some(who))
        .await
        .unwrap_or_else(|err| panic!("start {procedure}: {err:?}"))
}

/// Steps whose deadline was breached, in order.
fn breaches(e: &Engine<MemoryStore>, inst: &Instance) -> Vec<String> {
    e.history(inst.id)
        .unwrap()
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::DeadlineBreached { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

/// The messages of the history: (step, role, people).
fn notes(e: &Engine<MemoryStore>, inst: &Instance) -> Vec<(String, String, Vec<String>)> {
    e.history(inst.id)
        .unwrap()
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::Notified {
                step,
                role,
                to_users,
                ..
            } => Some((step.clone(), role.clone(), to_users.clone())),
            _ => None,
        })
        .collect()
}

/// The children a step started without waiting.
fn detached_children(e: &Engine<MemoryStore>, inst: &Instance) -> Vec<uuid::Uuid> {
    e.history(inst.id)
        .unwrap()
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::ChildrenStarted {
                children, detached, ..
            } => {
                assert!(*detached, "started without waiting");
                Some(children.iter().map(|c| c.id).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

fn is_forbidden(err: &EngineError) -> bool {
    matches!(err, EngineError::Forbidden(_))
}

fn invalid_field(err: &EngineError, field: &str) -> bool {
    matches!(err, EngineError::InvalidForm(p) if p.iter().any(|p| p.field == field))
}

fn too_early(err: &EngineError, date: &str) -> bool {
    matches!(err, EngineError::Conflict(m) if m.contains(&format!("cannot be completed before {date}")))
}

fn ended(inst: &Instance, end: &str) {
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some(end));
    assert!(inst.tasks.is_empty());
}

// ---------------------------------------------------------------------------------------------
// spare-parts-replacement
// ---------------------------------------------------------------------------------------------

fn application(in_warranty: bool, parts: Value) -> Value {
    json!({
        "application_number": "RA-2026-031",
        "in_warranty": in_warranty,
        "required_by": "2026-11-06",
        "reason": "Brake pads and the controller board worn out",
        "parts": parts,
    })
}

/// §4.2.1: in warranty only the vulnerable part is charged; the special part comes from the
/// materials department by the date on the application, which is breached on the clock.
#[tokio::test]
async fn spare_parts_in_warranty_charge_only_the_vulnerable_part() {
    let (e, clock) = engine().await;
    let c = cast();
    let inst = start(
        &e,
        "spare-parts-replacement",
        &c.alan,
        json!({ "customer": "Hengxin Lifting", "equipment": "QD20 crane" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["apply"]);
    let parts = json!([
        { "part": "Brake pad set", "quantity": 2, "vulnerable": true, "special": false },
        { "part": "Controller board", "quantity": 1, "vulnerable": false, "special": true },
    ]);
    // The form's list cannot be empty.
    let err = refused(
        &e,
        &inst,
        "apply",
        &c.alan,
        None,
        application(true, json!([])),
    )
    .await;
    assert!(invalid_field(&err, "parts"), "{err:?}");
    let inst = go(&e, &inst, "apply", &c.alan, None, application(true, parts)).await;
    assert_eq!(
        inst.data["chargeable_parts"],
        json!([{ "part": "Brake pad set", "quantity": 2, "vulnerable": true, "special": false }])
    );
    assert_eq!(open_steps(&inst), ["supply_special_parts"]);
    // Only the materials department distributes special parts.
    let err = refused(
        &e,
        &inst,
        "supply_special_parts",
        &c.alan,
        None,
        json!({ "supply_record": "x" }),
    )
    .await;
    assert!(is_forbidden(&err), "{err:?}");
    // Needed by 6 November (Asia/Shanghai): late afterwards, after-sales is told.
    e.advance_clock(&clock, at("2026-11-05T17:00:00Z"))
        .await
        .unwrap();
    assert_eq!(breaches(&e, &inst), ["supply_special_parts"]);
    let inst = e.instance(inst.id).unwrap().unwrap();
    assert!(notes(&e, &inst)
        .iter()
        .any(|(s, r, _)| s == "supply_special_parts" && r == "after_sales"));
    let inst = go(
        &e,
        &inst,
        "supply_special_parts",
        &c.mia,
        None,
        json!({ "supply_record": "Controller board CB-7 (alternative for the discontinued CB-5)" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["issue_with_charge"]);
    let err = refused(
        &e,
        &inst,
        "issue_with_charge",
        &c.tom,
        None,
        json!({ "distribution_record": "Handed over" }),
    )
    .await;
    assert!(invalid_field(&err, "sales_record_number"), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "issue_with_charge",
        &c.tom,
        None,
        json!({ "distribution_record": "Handed over on site", "sales_record_number": "S-118", "amount_charged": 240.0 }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "waste_advice",
        &c.mia,
        None,
        json!({ "waste_advice_given": "Old pads belong to the customer; dispose as metal scrap" }),
    )
    .await;
    ended(&inst, "closed");
    assert_folds(&e, inst.id);
}

/// In warranty with no vulnerable or special part: straight to the free hand-over. Out of
/// warranty every part is charged.
#[tokio::test]
async fn spare_parts_free_in_warranty_and_charged_out_of_it() {
    let (e, _) = engine().await;
    let c = cast();
    let parts =
        json!([{ "part": "Limit switch", "quantity": 1, "vulnerable": false, "special": false }]);
    let data = json!({ "customer": "Hengxin Lifting", "equipment": "QD20 crane" });
    let inst = start(&e, "spare-parts-replacement", &c.sam, data.clone()).await;
    let inst = go(
        &e,
        &inst,
        "apply",
        &c.tom,
        None,
        application(true, parts.clone()),
    )
    .await;
    assert_eq!(inst.data["chargeable_parts"], json!([]));
    assert_eq!(open_steps(&inst), ["issue_free"]);
    let inst = go(
        &e,
        &inst,
        "issue_free",
        &c.tom,
        None,
        json!({ "distribution_record": "Free of charge, in warranty" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["waste_advice"]);

    let out = start(&e, "spare-parts-replacement", &c.sam, data).await;
    let out = go(
        &e,
        &out,
        "apply",
        &c.tom,
        None,
        application(false, parts.clone()),
    )
    .await;
    assert_eq!(out.data["chargeable_parts"], parts);
    assert_eq!(open_steps(&out), ["issue_with_charge"]);
}

// ---------------------------------------------------------------------------------------------
// satisfaction-survey
// ---------------------------------------------------------------------------------------------

fn runs_of(e: &Engine<MemoryStore>, procedure: &str) -> Vec<uuid::Uuid> {
    e.instances(Some(procedure), None, None, 100).unwrap().items
}

/// §4.12 "at the end of each year": the survey starts itself on 1 December (Asia/Shanghai).
#[tokio::test]
async fn the_annual_survey_starts_itself_in_december() {
    let (e, clock) = engine().await;
    let first = at("2027-12-01T01:00:00Z");
    let s = e
        .store()
        .schedule("satisfaction-survey")
        .unwrap()
        .expect("armed at registration");
    assert_eq!(s.next_ms, first.timestamp_millis());
    clock.set(first - Duration::milliseconds(1));
    e.fire_due().await.unwrap();
    assert!(runs_of(&e, "satisfaction-survey").is_empty());
    clock.set(first);
    e.fire_due().await.unwrap();
    let runs = runs_of(&e, "satisfaction-survey");
    assert_eq!(runs.len(), 1);
    let inst = e.instance(runs[0]).unwrap().unwrap();
    assert_eq!(open_steps(&inst), ["plan_survey"]);
    let s = e.store().schedule("satisfaction-survey").unwrap().unwrap();
    assert_eq!(
        s.next_ms,
        at("2028-12-01T01:00:00Z").timestamp_millis(),
        "next year's run"
    );
}

async fn survey_summarised(e: &Engine<MemoryStore>, c: &Cast) -> Instance {
    let inst = start(e, "satisfaction-survey", &c.fiona, json!({})).await;
    let plan = json!({
        "survey_year": 2026,
        "selection_method": "Every 10th customer of the register, random start",
        "customers": ["Hengxin Lifting", "Dali Port"],
    });
    // A targeted survey needs the weak points and the questions; a standard one does not.
    let err = refused(
        e,
        &inst,
        "plan_survey",
        &c.fiona,
        Some("targeted"),
        plan.clone(),
    )
    .await;
    assert!(invalid_field(&err, "targeted_questions"), "{err:?}");
    let mut targeted = plan.clone();
    targeted["weak_points"] = json!("Arrival times in remote areas");
    targeted["targeted_questions"] = json!("How long did you wait for the technician?");
    let inst = go(
        e,
        &inst,
        "plan_survey",
        &c.fiona,
        Some("targeted"),
        targeted,
    )
    .await;
    let err = refused(
        e,
        &inst,
        "issue_letters",
        &c.fiona,
        None,
        json!({ "letters_sent_on": "2026-11-03" }),
    )
    .await;
    assert!(
        is_forbidden(&err),
        "the marketing department issues the letters"
    );
    let inst = go(
        e,
        &inst,
        "issue_letters",
        &c.mark,
        None,
        json!({ "letters_sent_on": "2026-11-03" }),
    )
    .await;
    let inst = go(
        e,
        &inst,
        "collect_answers",
        &c.fiona,
        None,
        json!({ "answers_received": 2, "satisfaction_score": 96.5, "comments": "Delivery dates slipped twice" }),
    )
    .await;
    let inst = go(
        e,
        &inst,
        "summarise",
        &c.mark,
        None,
        json!({ "summary": "Satisfied with quality; delivery dates to improve" }),
    )
    .await;
    assert!(notes(e, &inst)
        .iter()
        .any(|(s, r, _)| s == "summarise" && r == "quality"));
    assert_eq!(open_steps(&inst), ["analyse_reasons"]);
    inst
}

/// The analysis is signed by quality, sales, engineering and production; any one sends an
/// unfit summary back; agreement needs all four.
#[tokio::test]
async fn the_survey_analysis_needs_all_departments_and_one_can_send_it_back() {
    let (e, _) = engine().await;
    let c = cast();
    let inst = survey_summarised(&e, &c).await;
    let agreed = json!({ "reasons": "Transport booked late", "improvements": [{ "opportunity": "Book transport at contract signing", "department": "sales" }] });
    let inst = go(
        &e,
        &inst,
        "analyse_reasons",
        &c.quinn,
        Some("agreed"),
        agreed.clone(),
    )
    .await;
    assert_eq!(open_steps(&inst), ["analyse_reasons"]);
    let err = refused(
        &e,
        &inst,
        "analyse_reasons",
        &c.pat,
        Some("summary_incomplete"),
        empty(),
    )
    .await;
    assert!(invalid_field(&err, "what_is_missing"), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "analyse_reasons",
        &c.pat,
        Some("summary_incomplete"),
        json!({ "what_is_missing": "No figures per product line" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["summarise"], "one signer sends it back");
    let inst = go(
        &e,
        &inst,
        "summarise",
        &c.mark,
        None,
        json!({ "summary": "With figures per product line" }),
    )
    .await;
    let mut inst = inst;
    for (i, who) in [&c.quinn, &c.sam, &c.ed, &c.pat].into_iter().enumerate() {
        assert_eq!(
            open_steps(&inst),
            ["analyse_reasons"],
            "after {i} signatures"
        );
        inst = go(
            &e,
            &inst,
            "analyse_reasons",
            who,
            Some("agreed"),
            agreed.clone(),
        )
        .await;
    }
    ended(&inst, "closed");
    assert_folds(&e, inst.id);
}

// ---------------------------------------------------------------------------------------------
// service-satisfaction-check
// ---------------------------------------------------------------------------------------------

fn service_data() -> Value {
    json!({
        "customer": "Hengxin Lifting",
        "contact": "Mr Li, 0731-555",
        "service_order": "FD-2026-0412",
        "technician": "tom",
        "completed_on": "2026-10-30",
    })
}

/// Both checks at once; both fine: closed.
#[tokio::test]
async fn service_check_closes_when_customer_and_log_agree() {
    let (e, _) = engine().await;
    let c = cast();
    let inst = start(&e, "service-satisfaction-check", &c.fiona, service_data()).await;
    assert_eq!(
        open_steps(&inst),
        ["evaluate_satisfaction", "verify_work_log"]
    );
    let err = refused(
        &e,
        &inst,
        "verify_work_log",
        &c.olga,
        Some("inconsistent"),
        json!({ "work_log_reference": "W44 p.3" }),
    )
    .await;
    assert!(invalid_field(&err, "discrepancy"), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "verify_work_log",
        &c.olga,
        Some("consistent"),
        json!({ "work_log_reference": "W44 p.3" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["evaluate_satisfaction"]);
    let inst = go(
        &e,
        &inst,
        "evaluate_satisfaction",
        &c.fiona,
        None,
        json!({ "customer_satisfied": true, "satisfaction_score": 98, "customer_opinion": "Good" }),
    )
    .await;
    ended(&inst, "closed");
    assert_folds(&e, inst.id);
}

/// A log that does not match goes to after-sales (the technician is told); the customer's
/// persisting problem becomes a complaint, started without waiting.
#[tokio::test]
async fn service_check_findings_can_become_a_complaint() {
    let (e, _) = engine().await;
    let c = cast();
    let inst = start(&e, "service-satisfaction-check", &c.olga, service_data()).await;
    let inst = go(
        &e,
        &inst,
        "evaluate_satisfaction",
        &c.fiona,
        None,
        json!({ "customer_satisfied": true, "satisfaction_score": 90, "customer_opinion": "Fine" }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "verify_work_log",
        &c.olga,
        Some("inconsistent"),
        json!({ "work_log_reference": "W44 p.3", "discrepancy": "Log says 4 h, record says 2 h" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["review_findings"]);
    assert!(notes(&e, &inst)
        .iter()
        .any(|(s, _, p)| s == "review_findings" && p == &["tom".to_string()]));
    let inst = go(
        &e,
        &inst,
        "review_findings",
        &c.alan,
        Some("register_complaint"),
        json!({ "measures": "Technician interviewed; customer still reports the fault" }),
    )
    .await;
    ended(&inst, "handed_to_complaints");
    let children = detached_children(&e, &inst);
    assert_eq!(children.len(), 1);
    let child = e.instance(children[0]).unwrap().unwrap();
    assert_eq!(child.procedure, "complaint-handling");
    assert_eq!(child.status, Status::Running);
    assert_eq!(child.data["customer"], json!("Hengxin Lifting"));
    assert_folds(&e, inst.id);
}

// ---------------------------------------------------------------------------------------------
// return-visit
// ---------------------------------------------------------------------------------------------

/// The general manager names the team; the visits cannot be recorded before they start;
/// every member records theirs; only the marketing department files, and only when filed.
#[tokio::test]
async fn return_visits_by_the_named_team_are_recorded_and_filed() {
    let (e, clock) = engine().await;
    let c = cast();
    let err = e
        .start("return-visit", obj(json!({})), Some(&c.mark))
        .await
        .expect_err("the marketing office does not start return visits");
    assert!(format!("{err:?}").contains("Forbidden"), "{err:?}");
    let inst = start(&e, "return-visit", &c.gus, json!({})).await;
    let inst = go(
        &e,
        &inst,
        "organise",
        &c.gus,
        None,
        json!({ "customers": ["Hengxin Lifting", "Dali Port"], "visit_team": ["quinn", "alan"], "visits_from": "2026-11-16" }),
    )
    .await;
    let t = task_at(&inst, "visit");
    assert_eq!(t.people, ["quinn", "alan"]);
    let record = json!({ "visit_record": "Hengxin: asks for faster spare parts" });
    let err = refused(&e, &inst, "visit", &c.quinn, None, record.clone()).await;
    assert!(too_early(&err, "2026-11-16"), "{err:?}");
    e.advance_clock(&clock, at("2026-11-16T01:00:00Z"))
        .await
        .unwrap();
    let inst = e.instance(inst.id).unwrap().unwrap();
    // Someone not on the team may not record, whatever their roles.
    let err = refused(&e, &inst, "visit", &c.tom, None, record.clone()).await;
    assert!(is_forbidden(&err), "{err:?}");
    let inst = go(&e, &inst, "visit", &c.quinn, None, record.clone()).await;
    assert_eq!(open_steps(&inst), ["visit"], "alan has not recorded yet");
    let inst = go(&e, &inst, "visit", &c.alan, None, record).await;
    assert_eq!(open_steps(&inst), ["transmit_records"]);
    let transmit = |filed: bool| json!({ "departments": ["quality", "sales"], "summary": "Spare parts too slow", "records_filed": filed });
    let err = refused(
        &e,
        &inst,
        "transmit_records",
        &c.mark,
        Some("filed"),
        transmit(false),
    )
    .await;
    assert!(invalid_field(&err, "records_filed"), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "transmit_records",
        &c.mark,
        Some("filed"),
        transmit(true),
    )
    .await;
    ended(&inst, "closed");
    assert!(notes(&e, &inst)
        .iter()
        .any(|(s, r, _)| s == "transmit_records" && r == "quality"));
    assert_folds(&e, inst.id);
}

/// "At least once a year": a round starts itself every March.
#[tokio::test]
async fn return_visits_start_every_year() {
    let (e, clock) = engine().await;
    let first = at("2027-03-01T01:00:00Z");
    let s = e.store().schedule("return-visit").unwrap().expect("armed");
    assert_eq!(s.next_ms, first.timestamp_millis());
    clock.set(first);
    e.fire_due().await.unwrap();
    let runs = runs_of(&e, "return-visit");
    assert_eq!(runs.len(), 1);
    let inst = e.instance(runs[0]).unwrap().unwrap();
    assert_eq!(open_steps(&inst), ["organise"]);
}

// ---------------------------------------------------------------------------------------------
// quality-feedback
// ---------------------------------------------------------------------------------------------

fn feedback_data(source: &str) -> Value {
    json!({ "customer": "Hengxin Lifting", "product_batch": "QD20 batch 2026-10", "source_of_information": source })
}

/// §3.4.3: the call-back after a batch without objection is filed at once.
#[tokio::test]
async fn a_batch_call_back_without_objection_is_filed() {
    let (e, _) = engine().await;
    let c = cast();
    let inst = start(
        &e,
        "quality-feedback",
        &c.mark,
        feedback_data("batch_call_back"),
    )
    .await;
    assert_eq!(open_steps(&inst), ["call_back"]);
    // An objection needs the time it was raised (the 24 hours run from it).
    let err = refused(
        &e,
        &inst,
        "call_back",
        &c.mark,
        Some("objection"),
        json!({ "call_back_notes": "Noise from the gearbox" }),
    )
    .await;
    assert!(invalid_field(&err, "received_at"), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "call_back",
        &c.mark,
        Some("no_objection"),
        json!({ "call_back_notes": "Running well" }),
    )
    .await;
    ended(&inst, "no_objection");
}

/// Sales → quality (late after 24 hours) → sales plans → only the responsible unit processes
/// → quality sends it back once, then files it.
#[tokio::test]
async fn quality_information_goes_to_the_responsible_unit_and_back_to_quality() {
    let (e, clock) = engine().await;
    let c = cast();
    let inst = start(
        &e,
        "quality-feedback",
        &c.sam,
        feedback_data("customer_report"),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "send_to_quality",
        &c.sam,
        None,
        json!({ "information": "Hook block paint peeling", "received_at": "2026-11-02T08:00:00Z" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["analyse"]);
    // The disposal suggestion is due 24 hours after receipt; sales is told when it is late.
    e.advance_clock(&clock, at("2026-11-03T08:30:00Z"))
        .await
        .unwrap();
    let inst = e.instance(inst.id).unwrap().unwrap();
    assert_eq!(breaches(&e, &inst), ["analyse"]);
    let inst = go(
        &e,
        &inst,
        "analyse",
        &c.quinn,
        None,
        json!({
            "feedback_sheet_number": "QF-2026-77",
            "analysis": "Surface preparation skipped",
            "disposal_suggestion": "Repaint on site",
            "responsible_unit": "production",
            "process_by": "2026-11-20",
        }),
    )
    .await;
    assert!(notes(&e, &inst)
        .iter()
        .any(|(s, r, _)| s == "analyse" && r == "sales"));
    let inst = go(
        &e,
        &inst,
        "plan_processing",
        &c.sue,
        None,
        json!({ "processing_plan": "Production repaints with the after-sales team" }),
    )
    .await;
    // Someone of another department may not process it.
    let result = json!({ "treatment_result": "Repainted" });
    for outsider in [&c.ed, &c.quinn] {
        let err = refused(&e, &inst, "process", outsider, None, result.clone()).await;
        assert!(is_forbidden(&err), "{err:?}");
    }
    let inst = go(&e, &inst, "process", &c.pat, None, result.clone()).await;
    let err = refused(&e, &inst, "file", &c.quinn, Some("reprocess"), empty()).await;
    assert!(invalid_field(&err, "reprocess_reason"), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "file",
        &c.quinn,
        Some("reprocess"),
        json!({ "reprocess_reason": "Primer missing" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["process"]);
    let inst = go(&e, &inst, "process", &c.pat, None, result).await;
    let inst = go(&e, &inst, "file", &c.quinn, Some("filed"), empty()).await;
    ended(&inst, "closed");
    assert_folds(&e, inst.id);
}

// ---------------------------------------------------------------------------------------------
// crisis-event
// ---------------------------------------------------------------------------------------------

/// The report (description, sales' analysis of the causes, solutions); an incomplete report
/// goes back; the decision is late after 24 hours; measures that did not work are repeated.
#[tokio::test]
async fn a_crisis_event_is_reported_decided_and_resolved() {
    let (e, clock) = engine().await;
    let c = cast();
    let inst = start(
        &e,
        "crisis-event",
        &c.fiona,
        json!({ "customer": "Dali Port", "contact": "Ms Wu" }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "describe_event",
        &c.fiona,
        None,
        json!({ "received_at": "2026-11-02T08:00:00Z", "event_description": "Customer threatens press campaign over crane stop" }),
    )
    .await;
    assert!(notes(&e, &inst)
        .iter()
        .any(|(s, r, _)| s == "describe_event" && r == "management_rep"));
    let inst = go(
        &e,
        &inst,
        "analyse_causes",
        &c.sam,
        None,
        json!({ "cause_analysis": "Spare part delivered late" }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "write_report",
        &c.fiona,
        None,
        json!({ "proposed_solutions": "Visit by the MR" }),
    )
    .await;
    let err = refused(
        &e,
        &inst,
        "decide_measures",
        &c.sam,
        Some("decide"),
        json!({ "measures": "x" }),
    )
    .await;
    assert!(
        is_forbidden(&err),
        "only the management representative decides"
    );
    let err = refused(
        &e,
        &inst,
        "decide_measures",
        &c.rita,
        Some("decide"),
        empty(),
    )
    .await;
    assert!(invalid_field(&err, "measures"), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "decide_measures",
        &c.rita,
        Some("report_incomplete"),
        json!({ "what_is_missing": "Costs of the solutions" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["write_report"]);
    let inst = go(
        &e,
        &inst,
        "write_report",
        &c.fiona,
        None,
        json!({ "proposed_solutions": "Visit by the MR; free spare; cost 3000" }),
    )
    .await;
    e.advance_clock(&clock, at("2026-11-03T08:30:00Z"))
        .await
        .unwrap();
    let inst = e.instance(inst.id).unwrap().unwrap();
    assert_eq!(breaches(&e, &inst), ["decide_measures"]);
    assert!(notes(&e, &inst)
        .iter()
        .any(|(s, r, _)| s == "decide_measures" && r == "general_manager"));
    let inst = go(
        &e,
        &inst,
        "decide_measures",
        &c.rita,
        Some("decide"),
        json!({ "measures": "MR visits; spare part free of charge" }),
    )
    .await;
    let done = json!({ "result": "Visited; spare installed" });
    let inst = go(&e, &inst, "carry_out_measures", &c.sue, None, done.clone()).await;
    let inst = go(
        &e,
        &inst,
        "confirm_result",
        &c.rita,
        Some("not_resolved"),
        json!({ "further_measures": "Written apology" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["carry_out_measures"]);
    let inst = go(&e, &inst, "carry_out_measures", &c.sue, None, done).await;
    let inst = go(
        &e,
        &inst,
        "confirm_result",
        &c.rita,
        Some("resolved"),
        empty(),
    )
    .await;
    ended(&inst, "closed");
    assert_folds(&e, inst.id);
}

// ---------------------------------------------------------------------------------------------
// holiday-care-visit
// ---------------------------------------------------------------------------------------------

fn care_plan() -> Value {
    json!({
        "customers": ["Hengxin Lifting"],
        "gifts": "Greeting card, tea set",
        "care_form": "visit",
        "visitors": ["sam", "sue"],
        "period_start": "2026-12-28",
        "period_end": "2027-01-03",
    })
}

/// The MR returns the plan with a reason, then approves it; a planner who is also MR may not
/// approve their own plan; the delivery is not recorded before the holiday period; both
/// visitors record.
#[tokio::test]
async fn holiday_care_plan_is_approved_and_delivered_in_the_holiday_period() {
    let (e, clock) = engine().await;
    let c = cast();
    let both = person("bo", "sales", &["sales", "management_rep", "staff"], 4);
    let inst = start(
        &e,
        "holiday-care-visit",
        &c.sam,
        json!({ "holiday": "New Year" }),
    )
    .await;
    let inst = go(&e, &inst, "plan", &both, None, care_plan()).await;
    let err = refused(&e, &inst, "approve_plan", &both, Some("approve"), empty()).await;
    assert!(is_forbidden(&err), "{err:?}");
    let err = refused(&e, &inst, "approve_plan", &c.rita, Some("rework"), empty()).await;
    assert!(invalid_field(&err, "approval_comment"), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "approve_plan",
        &c.rita,
        Some("rework"),
        json!({ "approval_comment": "Add Dali Port" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["plan"]);
    let inst = go(&e, &inst, "plan", &c.sam, None, care_plan()).await;
    let inst = go(&e, &inst, "approve_plan", &c.rita, Some("approve"), empty()).await;
    assert!(notes(&e, &inst)
        .iter()
        .any(|(s, _, p)| s == "approve_plan" && p == &["sam".to_string(), "sue".to_string()]));
    let record = json!({ "delivery_record": "Card and tea set delivered; customer thanked us" });
    let err = refused(&e, &inst, "deliver", &c.sam, None, record.clone()).await;
    assert!(too_early(&err, "2026-12-28"), "{err:?}");
    e.advance_clock(&clock, at("2026-12-28T02:00:00Z"))
        .await
        .unwrap();
    let inst = e.instance(inst.id).unwrap().unwrap();
    let inst = go(&e, &inst, "deliver", &c.sam, None, record.clone()).await;
    assert_eq!(open_steps(&inst), ["deliver"], "sue has not recorded yet");
    let inst = go(&e, &inst, "deliver", &c.sue, None, record).await;
    let inst = go(
        &e,
        &inst,
        "record",
        &c.sam,
        None,
        json!({ "customer_record_entries": "New Year care 2027 entered" }),
    )
    .await;
    ended(&inst, "closed");
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn a_rejected_holiday_plan_ends() {
    let (e, _) = engine().await;
    let c = cast();
    let inst = start(
        &e,
        "holiday-care-visit",
        &c.sam,
        json!({ "holiday": "Mid-Autumn" }),
    )
    .await;
    let inst = go(&e, &inst, "plan", &c.sam, None, care_plan()).await;
    let inst = go(
        &e,
        &inst,
        "approve_plan",
        &c.rita,
        Some("reject"),
        json!({ "approval_comment": "No budget" }),
    )
    .await;
    ended(&inst, "rejected");
}

// ---------------------------------------------------------------------------------------------
// contract-review
// ---------------------------------------------------------------------------------------------

fn contract(pre_shipment: bool, installation: bool) -> Value {
    json!({
        "contract_number": "HT-2026-101",
        "requirements": "QD20 crane, national standard GB/T 14405, site power 380 V",
        "technical_agreement": "Span 22.5 m, lift 12 m",
        "quality_clauses": "12 months warranty",
        "pre_shipment_acceptance": pre_shipment,
        "installation_included": installation,
    })
}

async fn drafted(e: &Engine<MemoryStore>, c: &Cast, pre: bool, inst_: bool) -> Instance {
    let inst = start(
        e,
        "contract-review",
        &c.sam,
        json!({ "customer": "Hengxin Lifting", "contact": "Mr Li", "products": "1 × QD20 crane" }),
    )
    .await;
    go(e, &inst, "draft", &c.sam, None, contract(pre, inst_)).await
}

/// Approval needs sales, engineering and quality; the drafter may not review; any one of them
/// returns it for revision.
async fn reviewed(e: &Engine<MemoryStore>, c: &Cast, pre: bool, inst_: bool) -> Instance {
    let inst = drafted(e, c, pre, inst_).await;
    let err = refused(e, &inst, "review", &c.sam, Some("approve"), empty()).await;
    assert!(is_forbidden(&err), "the drafter reviews: {err:?}");
    let inst = go(e, &inst, "review", &c.sue, Some("approve"), empty()).await;
    let inst = go(e, &inst, "review", &c.ed, Some("approve"), empty()).await;
    assert_eq!(open_steps(&inst), ["review"], "quality has not signed");
    let inst = go(
        e,
        &inst,
        "review",
        &c.quinn,
        Some("revise"),
        json!({ "review_notes": "Warranty clause must name the vulnerable parts" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["draft"]);
    let inst = go(e, &inst, "draft", &c.sam, None, contract(pre, inst_)).await;
    let mut inst = inst;
    for who in [&c.sue, &c.ed, &c.quinn] {
        assert_eq!(open_steps(&inst), ["review"]);
        inst = go(e, &inst, "review", who, Some("approve"), empty()).await;
    }
    assert_eq!(open_steps(&inst), ["sign_contract"]);
    let inst = go(
        e,
        &inst,
        "sign_contract",
        &c.sam,
        None,
        json!({ "signed_on": "2026-11-02" }),
    )
    .await;
    assert!(notes(e, &inst)
        .iter()
        .any(|(s, r, _)| s == "sign_contract" && r == "after_sales"));
    inst
}

async fn ship(e: &Engine<MemoryStore>, c: &Cast, inst: Instance) -> Instance {
    assert_eq!(open_steps(&inst), ["check_documents", "confirm_transport"]);
    let inst = go(
        e,
        &inst,
        "check_documents",
        &c.quinn,
        None,
        json!({ "documents_checked": "Manual, certificate of conformity, packing list" }),
    )
    .await;
    let inst = go(
        e,
        &inst,
        "confirm_transport",
        &c.sue,
        None,
        json!({ "transport_method": "Truck", "storage_confirmed": true }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["deliver"]);
    let delivery =
        |signed: bool| json!({ "delivery_record": "Delivered to site", "customer_signed": signed });
    let err = refused(
        e,
        &inst,
        "deliver",
        &c.sam,
        Some("delivered"),
        delivery(false),
    )
    .await;
    assert!(invalid_field(&err, "customer_signed"), "{err:?}");
    go(
        e,
        &inst,
        "deliver",
        &c.sam,
        Some("delivered"),
        delivery(true),
    )
    .await
}

/// Pre-shipment acceptance on the agreed date: a nonconformity (one signer decides it) goes
/// to production and a new date; conformity needs quality and sales; delivery starts the
/// installation without waiting for it.
#[tokio::test]
async fn contract_with_pre_shipment_acceptance_and_installation() {
    let (e, clock) = engine().await;
    let c = cast();
    let inst = reviewed(&e, &c, true, true).await;
    assert_eq!(open_steps(&inst), ["notify_acceptance"]);
    let inst = go(
        &e,
        &inst,
        "notify_acceptance",
        &c.sam,
        None,
        json!({ "acceptance_date": "2026-11-10" }),
    )
    .await;
    let test = json!({ "test_record": "Load test 25 t", "customer_present": true });
    let err = refused(
        &e,
        &inst,
        "acceptance_test",
        &c.quinn,
        Some("conforms"),
        test.clone(),
    )
    .await;
    assert!(too_early(&err, "2026-11-10"), "{err:?}");
    e.advance_clock(&clock, at("2026-11-10T01:00:00Z"))
        .await
        .unwrap();
    let inst = e.instance(inst.id).unwrap().unwrap();
    let inst = go(
        &e,
        &inst,
        "acceptance_test",
        &c.quinn,
        Some("nonconforming"),
        json!({ "test_record": "Load test", "customer_present": true, "nonconformities": "Brake noise" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["rectify"]);
    let inst = go(
        &e,
        &inst,
        "rectify",
        &c.pat,
        None,
        json!({ "rectification": "Brake adjusted" }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "notify_acceptance",
        &c.sam,
        None,
        json!({ "acceptance_date": "2026-11-12" }),
    )
    .await;
    e.advance_clock(&clock, at("2026-11-12T01:00:00Z"))
        .await
        .unwrap();
    let inst = e.instance(inst.id).unwrap().unwrap();
    // Conformity cannot be signed without the customer taking part.
    let err = refused(
        &e,
        &inst,
        "acceptance_test",
        &c.quinn,
        Some("conforms"),
        json!({ "test_record": "Load test", "customer_present": false }),
    )
    .await;
    assert!(invalid_field(&err, "customer_present"), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "acceptance_test",
        &c.quinn,
        Some("conforms"),
        test.clone(),
    )
    .await;
    assert_eq!(
        open_steps(&inst),
        ["acceptance_test"],
        "sales has not signed"
    );
    let inst = go(&e, &inst, "acceptance_test", &c.sue, Some("conforms"), test).await;
    let inst = ship(&e, &c, inst).await;
    ended(&inst, "closed");
    let children = detached_children(&e, &inst);
    assert_eq!(children.len(), 1);
    let child = e.instance(children[0]).unwrap().unwrap();
    assert_eq!(child.procedure, "installation-commissioning");
    assert_eq!(child.data["contract_number"], json!("HT-2026-101"));
    assert_eq!(open_steps(&child), ["plan_installation"]);
    assert_folds(&e, inst.id);
}

/// Without pre-shipment acceptance or installation: straight to shipment, no child.
#[tokio::test]
async fn contract_without_acceptance_or_installation() {
    let (e, _) = engine().await;
    let c = cast();
    let inst = reviewed(&e, &c, false, false).await;
    let inst = ship(&e, &c, inst).await;
    ended(&inst, "closed");
    assert!(detached_children(&e, &inst).is_empty());
}

/// A rejection needs two of the three reviewers; one alone does not decide it.
#[tokio::test]
async fn a_contract_rejection_needs_two_reviewers() {
    let (e, _) = engine().await;
    let c = cast();
    let inst = drafted(&e, &c, false, false).await;
    let why = json!({ "review_notes": "Customer's credit not cleared" });
    let inst = go(&e, &inst, "review", &c.sue, Some("reject"), why.clone()).await;
    assert_eq!(open_steps(&inst), ["review"]);
    let inst = go(&e, &inst, "review", &c.quinn, Some("reject"), why).await;
    ended(&inst, "rejected");
}

// ---------------------------------------------------------------------------------------------
// installation-commissioning
// ---------------------------------------------------------------------------------------------

/// Training at the company while the site is prepared; installation by the named team in its
/// window (late after the contract date); on-site training with an expert lecture later.
#[tokio::test]
async fn installation_commissioning_and_training() {
    let (e, clock) = engine().await;
    let c = cast();
    let inst = start(
        &e,
        "installation-commissioning",
        &c.alan,
        json!({ "customer": "Hengxin Lifting", "contact": "Mr Li", "contract_number": "HT-2026-101", "equipment": "QD20 crane" }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "plan_installation",
        &c.alan,
        None,
        json!({
            "party_a_opinions": "Install during the weekend shutdown",
            "installation_plan": "Rail check, erection, load test",
            "team": ["tom"],
            "install_from": "2026-11-09",
            "complete_by": "2026-11-13",
        }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["factory_training", "prepare_site"]);
    let inst = go(
        &e,
        &inst,
        "prepare_site",
        &c.tom,
        None,
        json!({ "preparations": "Foundations checked" }),
    )
    .await;
    assert_eq!(
        open_steps(&inst),
        ["factory_training"],
        "waits for the training"
    );
    let inst = go(
        &e,
        &inst,
        "factory_training",
        &c.ed,
        None,
        json!({ "trainees": ["Wang (operator)", "Li (technician)"], "factory_training_content": "Operation, maintenance" }),
    )
    .await;
    assert_eq!(task_at(&inst, "install").people, ["tom"]);
    let install = json!({ "commissioning_record": "Load test 25 t passed", "procedures_compiled": "Operating procedure OP-7" });
    let err = refused(&e, &inst, "install", &c.tom, None, install.clone()).await;
    assert!(too_early(&err, "2026-11-09"), "{err:?}");
    // Due at the start of 13 November (Asia/Shanghai); after-sales is told when late.
    e.advance_clock(&clock, at("2026-11-13T01:00:00Z"))
        .await
        .unwrap();
    let inst = e.instance(inst.id).unwrap().unwrap();
    assert_eq!(breaches(&e, &inst), ["install"]);
    let err = refused(&e, &inst, "install", &c.alan, None, install.clone()).await;
    assert!(is_forbidden(&err), "not on the team: {err:?}");
    let inst = go(&e, &inst, "install", &c.tom, None, install).await;
    let training = json!({ "training_content": "All 6 operators", "safety_and_vulnerable_parts_explained": true });
    let err = refused(
        &e,
        &inst,
        "onsite_training",
        &c.tom,
        Some("expert_lecture_needed"),
        training.clone(),
    )
    .await;
    assert!(invalid_field(&err, "lecture_topics"), "{err:?}");
    let err = refused(
        &e,
        &inst,
        "onsite_training",
        &c.tom,
        Some("trained"),
        json!({ "training_content": "All 6 operators", "safety_and_vulnerable_parts_explained": false }),
    )
    .await;
    assert!(
        invalid_field(&err, "safety_and_vulnerable_parts_explained"),
        "{err:?}"
    );
    let mut lecture = training;
    lecture["lecture_topics"] = json!("Hydraulics");
    let inst = go(
        &e,
        &inst,
        "onsite_training",
        &c.tom,
        Some("expert_lecture_needed"),
        lecture,
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "arrange_lecture",
        &c.alan,
        None,
        json!({ "lecture_date": "2026-11-20" }),
    )
    .await;
    let given = json!({ "lecture_record": "Hydraulics lecture, 2 h" });
    let err = refused(&e, &inst, "expert_lecture", &c.ed, None, given.clone()).await;
    assert!(too_early(&err, "2026-11-20"), "{err:?}");
    e.advance_clock(&clock, at("2026-11-20T02:00:00Z"))
        .await
        .unwrap();
    let inst = e.instance(inst.id).unwrap().unwrap();
    let inst = go(&e, &inst, "expert_lecture", &c.ed, None, given).await;
    ended(&inst, "closed");
    assert_folds(&e, inst.id);
}

// ---------------------------------------------------------------------------------------------
// equipment-acceptance
// ---------------------------------------------------------------------------------------------

/// Engineering and the user department each inspect and sign; a rejection sends it to the
/// supplier and back to both inspections; only people of the user department check and put
/// it into use.
#[tokio::test]
async fn equipment_is_inspected_by_engineering_and_the_user_department() {
    let (e, _) = engine().await;
    let c = cast();
    let inst = start(
        &e,
        "equipment-acceptance",
        &c.ed,
        json!({ "equipment": "Torque wrench set TW-300", "supplier": "Hangzhou Tools", "user_department": "after_sales" }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "register",
        &c.ed,
        None,
        json!({ "purchase_reference": "PA-2026-19", "delivered_on": "2026-11-02" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["technical_inspection", "user_check"]);
    let check = json!({ "user_check_record": "Fits our vans" });
    let err = refused(
        &e,
        &inst,
        "user_check",
        &c.pat,
        Some("accept"),
        check.clone(),
    )
    .await;
    assert!(is_forbidden(&err), "not of the user department: {err:?}");
    let err = refused(
        &e,
        &inst,
        "technical_inspection",
        &c.ed,
        Some("reject"),
        json!({ "inspection_record": "Calibration" }),
    )
    .await;
    assert!(invalid_field(&err, "technical_defects"), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "technical_inspection",
        &c.ed,
        Some("reject"),
        json!({ "inspection_record": "Calibration", "technical_defects": "No calibration certificate" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["user_check"], "the join waits for both");
    let inst = go(
        &e,
        &inst,
        "user_check",
        &c.tom,
        Some("accept"),
        check.clone(),
    )
    .await;
    assert_eq!(open_steps(&inst), ["rectify"]);
    let inst = go(
        &e,
        &inst,
        "rectify",
        &c.ed,
        Some("rectified"),
        json!({ "rectification": "Certificate supplied" }),
    )
    .await;
    assert_eq!(open_steps(&inst), ["technical_inspection", "user_check"]);
    let inst = go(
        &e,
        &inst,
        "technical_inspection",
        &c.ed,
        Some("accept"),
        json!({ "inspection_record": "Calibrated, certificate C-88" }),
    )
    .await;
    let inst = go(&e, &inst, "user_check", &c.alan, Some("accept"), check).await;
    let use_form = |intact: bool| json!({ "marked_intact": intact, "responsible_person": "tom", "list_entry": "SE-2026-044" });
    let err = refused(
        &e,
        &inst,
        "put_into_use",
        &c.tom,
        Some("in_use"),
        use_form(false),
    )
    .await;
    assert!(invalid_field(&err, "marked_intact"), "{err:?}");
    let err = refused(
        &e,
        &inst,
        "put_into_use",
        &c.ed,
        Some("in_use"),
        use_form(true),
    )
    .await;
    assert!(is_forbidden(&err), "{err:?}");
    let inst = go(
        &e,
        &inst,
        "put_into_use",
        &c.tom,
        Some("in_use"),
        use_form(true),
    )
    .await;
    ended(&inst, "in_use");
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn equipment_that_fails_can_be_returned() {
    let (e, _) = engine().await;
    let c = cast();
    let inst = start(
        &e,
        "equipment-acceptance",
        &c.ed,
        json!({ "equipment": "Multimeter", "supplier": "X", "user_department": "after_sales" }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "register",
        &c.ed,
        None,
        json!({ "purchase_reference": "PA-2026-20", "delivered_on": "2026-11-02" }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "technical_inspection",
        &c.ed,
        Some("accept"),
        json!({ "inspection_record": "OK" }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "user_check",
        &c.tom,
        Some("reject"),
        json!({ "user_check_record": "Wrong range", "user_defects": "Needs 1000 V range" }),
    )
    .await;
    let inst = go(
        &e,
        &inst,
        "rectify",
        &c.ed,
        Some("returned"),
        json!({ "rectification": "Supplier takes it back" }),
    )
    .await;
    ended(&inst, "returned");
}
