//! Defective product disclosure and return/exchange (recall) driven through the engine
//! (seed 002 "Disclosure of defective product information and return/exchange procedures"
//! §5.1–§5.4, §6.1–§6.4, §7.1–§7.5): each source of the defect information (§6.2.1–§6.2.3),
//! each identification path — by the state-designated department (§6.3.2.1) or jointly by
//! engineering and quality with one signature each (§6.3.2.2) — the parallel scope of impact
//! (hazard level signed by engineering, production and quality, §6.4.1, while the office
//! estimates the losses, §6.4.2) whose join waits for both, the plan and budget (§7.1, §7.4),
//! the decision signed by the general manager and the committee with approve / rework /
//! reject (§5.1), announcement and website publication (§7.2.2, §7.2.6), implementation
//! (§7.2.3, §7.2.5), evaluation with another round when not effective (§7.3.1–§7.3.2), and
//! statistics, survey and settlement before termination (§7.5.1–§7.5.3).

mod common;

use common::*;
use serde_json::{json, Value};
use sopflow::engine::decide::{Command, EngineError};
use sopflow::engine::instance::{Actor, EventKind, Instance, Status};
use sopflow::engine::service::{Engine, ServiceError};
use sopflow::store::memory::MemoryStore;
use sopflow::store::Store;

struct Cast {
    /// Quality department.
    quinn: Actor,
    /// Engineering department, two people.
    ed: Actor,
    eve: Actor,
    /// Production department.
    pat: Actor,
    /// Office.
    olga: Actor,
    /// General manager.
    george: Actor,
    /// Member of the Service System Management Committee.
    cora: Actor,
    /// Sales department.
    sid: Actor,
}

fn cast() -> Cast {
    Cast {
        quinn: person("quinn", "quality", &["quality"], 3),
        ed: person("ed", "engineering", &["engineering"], 3),
        eve: person("eve", "engineering", &["engineering"], 2),
        pat: person("pat", "production", &["production"], 3),
        olga: person("olga", "office", &["office"], 2),
        george: person("george", "general_management", &["general_manager"], 5),
        cora: person("cora", "general_management", &["service_committee"], 4),
        sid: person("sid", "sales", &["sales"], 2),
    }
}

fn start_data(source: &str) -> serde_json::Map<String, Value> {
    obj(
        json!({ "product": "QD20 overhead crane", "batch_or_model": "Batch 2026-07", "source": source }),
    )
}

fn report(state_designated: bool) -> Value {
    json!({
        "channel": "telephone",
        "reporter": "Hengxin Lifting, Mr Li",
        "defect_description": "Limit switch does not stop the hoist at the upper limit",
        "state_designated_department": state_designated,
    })
}

fn identification(basis: &str) -> Value {
    json!({ "identification_basis": basis, "identification_findings": "Reproduced in 3 of 5 tests" })
}

fn hazard() -> Value {
    json!({ "hazard_level": "high", "damage_probability": 0.05, "affected_quantity": 140 })
}

fn losses() -> Value {
    json!({ "estimated_losses": 380000.0, "reputation_damage": "Regional; two key accounts affected" })
}

fn plan() -> Value {
    json!({
        "handling_method": "replacement",
        "user_notification": "Letter and telephone call to every user of the batch",
        "handling_place": "At the user's site",
        "planned_start": "2026-11-20",
        "planned_end": "2027-01-31",
        "expected_effectiveness": "All 140 switches replaced",
    })
}

fn budget() -> Value {
    json!({ "budget_amount": 420000.0, "budget_breakdown": "Parts 180k, labour 160k, travel 80k" })
}

fn decision(text: &str) -> Value {
    json!({ "decision_comments": text })
}

fn announcement() -> Value {
    json!({
        "announcement_date": "2026-11-20",
        "announcement_defect": "Upper limit switch of batch 2026-07 may fail",
        "announcement_possible_damage": "The hoist may hit the upper stop",
        "announcement_preventive_measures": "Do not run the hoist at full height until replaced",
        "acceptance_locations": "At the user's site",
        "acceptance_period": "2026-11-20 to 2027-01-31",
        "announcement_text": "Upper limit switch of batch 2026-07 to be replaced free of charge",
        "hotline": "400-800-1234",
        "registered_with_authority": true,
    })
}

fn records() -> Value {
    json!({ "return_records": [
        { "customer": "Hengxin Lifting", "product_serial": "QD20-0711", "action": "replacement",
          "date": "2026-12-02", "user_copy_given": true }
    ] })
}

fn statistics(survey: bool) -> Value {
    json!({ "products_handled": 140, "statistics_summary": "140 of 140 replaced", "survey_needed": survey })
}

/// Record the internal report; identification by the two departments comes next.
async fn recorded(e: &Engine<MemoryStore>, c: &Cast, source: &str) -> Instance {
    let inst = e
        .start("recall", start_data(source), Some(&c.quinn))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["record_report"]);
    let inst = complete(e, &inst, "record_report", &c.quinn, None, report(false))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["identify_jointly"]);
    inst
}

/// Identified jointly as defective (engineering, then quality).
async fn identified(e: &Engine<MemoryStore>, c: &Cast) -> Instance {
    let inst = recorded(e, c, "internal_discovery").await;
    let inst = complete(
        e,
        &inst,
        "identify_jointly",
        &c.ed,
        Some("defective"),
        identification("potential_damage"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["identify_jointly"]);
    let inst = complete(
        e,
        &inst,
        "identify_jointly",
        &c.quinn,
        Some("defective"),
        identification("potential_damage"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard", "estimate_losses"]);
    inst
}

/// Both branches of the scope of impact, then plan and budget: at the decision.
async fn at_decision(e: &Engine<MemoryStore>, c: &Cast, inst: Instance) -> Instance {
    assert_eq!(open_steps(&inst), ["assess_hazard", "estimate_losses"]);
    let inst = complete(e, &inst, "estimate_losses", &c.olga, None, losses())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard"]);
    let inst = complete(e, &inst, "assess_hazard", &c.ed, None, hazard())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard"]);
    let inst = complete(e, &inst, "assess_hazard", &c.pat, None, hazard())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard"]);
    let inst = complete(e, &inst, "assess_hazard", &c.quinn, None, hazard())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["prepare_plan"]);
    planned(e, c, inst).await
}

/// Plan and budget: at the decision.
async fn planned(e: &Engine<MemoryStore>, c: &Cast, inst: Instance) -> Instance {
    assert_eq!(open_steps(&inst), ["prepare_plan"]);
    let inst = complete(e, &inst, "prepare_plan", &c.pat, None, plan())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["prepare_budget"]);
    let inst = complete(e, &inst, "prepare_budget", &c.olga, None, budget())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["decide"]);
    inst
}

/// Approved by both, announced and published, implemented: at the evaluation.
async fn implemented(e: &Engine<MemoryStore>, c: &Cast, inst: Instance) -> Instance {
    assert_eq!(open_steps(&inst), ["decide"]);
    let inst = complete(
        e,
        &inst,
        "decide",
        &c.george,
        Some("approve"),
        decision("Approved"),
    )
    .await
    .unwrap();
    assert_eq!(
        open_steps(&inst),
        ["decide"],
        "one of two signatures does not decide"
    );
    let inst = complete(
        e,
        &inst,
        "decide",
        &c.cora,
        Some("approve"),
        decision("Approved by the committee"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["announce", "publish_on_website"]);
    let inst = complete(e, &inst, "announce", &c.sid, None, announcement())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["publish_on_website"]);
    let inst = complete(
        e,
        &inst,
        "publish_on_website",
        &c.olga,
        None,
        json!({ "website_url": "https://example.org/recalls/2026-07" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["implement"]);
    let inst = complete(e, &inst, "implement", &c.sid, None, records())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["evaluate_effectiveness"]);
    inst
}

/// Evaluated effective, statistics (no survey) and settlement: terminated.
async fn terminated(e: &Engine<MemoryStore>, c: &Cast, inst: Instance) -> Instance {
    assert_eq!(open_steps(&inst), ["evaluate_effectiveness"]);
    let inst = complete(
        e,
        &inst,
        "evaluate_effectiveness",
        &c.cora,
        Some("effective"),
        json!({ "evaluation_opinion": "Qualified" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["compile_statistics", "settle_expenses"]);
    let inst = complete(
        e,
        &inst,
        "compile_statistics",
        &c.sid,
        None,
        statistics(false),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["settle_expenses"]);
    let inst = complete(
        e,
        &inst,
        "settle_expenses",
        &c.olga,
        None,
        json!({ "actual_cost": 1.0 }),
    )
    .await
    .unwrap();
    assert_ended(e, &inst, "terminated");
    inst
}

fn assert_ended(e: &Engine<MemoryStore>, inst: &Instance, end: &str) {
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some(end));
    assert!(inst.tasks.is_empty());
    assert!(inst.joins.is_empty());
    let stored = assert_folds(e, inst.id);
    assert_eq!(&stored, inst);
}

#[tokio::test]
async fn internal_discovery_identified_jointly_through_to_termination() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = recorded(&e, &c, "internal_discovery").await;
    // §6.3.2.2: one engineering signature leaves the identification open.
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.ed,
        Some("defective"),
        identification("potential_damage"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["identify_jointly"]);
    let t = task_at(&inst, "identify_jointly");
    assert_eq!(t.signatures.len(), 1);
    assert_eq!(t.signatures[0].user, "ed");
    // The same person twice: a conflict. A third party without either role: forbidden.
    let err = refused(
        &e,
        &inst,
        "identify_jointly",
        &c.ed,
        Some("defective"),
        identification("potential_damage"),
    )
    .await;
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    let err = refused(
        &e,
        &inst,
        "identify_jointly",
        &c.olga,
        Some("defective"),
        identification("potential_damage"),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    // A second engineer is a second person but not the other role: one per role.
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.eve,
        Some("defective"),
        identification("potential_damage"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["identify_jointly"]);
    assert_eq!(task_at(&inst, "identify_jointly").signatures.len(), 2);
    // Quality signs: identified, and the scope of impact starts on both fronts.
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.quinn,
        Some("defective"),
        identification("potential_damage"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard", "estimate_losses"]);
    assert_eq!(inst.done_by["identify_jointly"], ["ed", "eve", "quinn"]);

    // §6.4: the office estimates the losses while the three departments grade the hazard.
    let inst = complete(&e, &inst, "estimate_losses", &c.olga, None, losses())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard"]);
    assert_eq!(inst.joins.get("scope_determined"), Some(&1));
    let inst = complete(&e, &inst, "assess_hazard", &c.ed, None, hazard())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard"]);
    let inst = complete(&e, &inst, "assess_hazard", &c.pat, None, hazard())
        .await
        .unwrap();
    // All but the last signature of the last branch: the join still waits.
    assert_eq!(open_steps(&inst), ["assess_hazard"]);
    let inst = complete(&e, &inst, "assess_hazard", &c.quinn, None, hazard())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["prepare_plan"]);
    assert!(inst.joins.is_empty());

    let inst = planned(&e, &c, inst).await;
    let inst = implemented(&e, &c, inst).await;
    let inst = complete(
        &e,
        &inst,
        "evaluate_effectiveness",
        &c.cora,
        Some("effective"),
        json!({ "evaluation_opinion": "All users reached; no further failures" }),
    )
    .await
    .unwrap();
    // §7.5.2: statistics by sales and settlement by the office, in parallel.
    assert_eq!(open_steps(&inst), ["compile_statistics", "settle_expenses"]);
    let inst = complete(
        &e,
        &inst,
        "compile_statistics",
        &c.sid,
        None,
        statistics(false),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["settle_expenses"]);
    let inst = complete(
        &e,
        &inst,
        "settle_expenses",
        &c.olga,
        None,
        json!({ "actual_cost": 401250.5, "settlement_notes": "Within budget" }),
    )
    .await
    .unwrap();
    assert_ended(&e, &inst, "terminated");
    let history = e.history(inst.id).unwrap();
    let signed = history
        .iter()
        .filter(
            |ev| matches!(&ev.kind, EventKind::Signed { step, .. } if step == "identify_jointly"),
        )
        .count();
    assert_eq!(signed, 2, "two signatures before the completing one");
    for who in [&c.quinn, &c.ed, &c.pat, &c.olga, &c.george, &c.cora, &c.sid] {
        assert!(
            e.tasks_for(who).unwrap().is_empty(),
            "{} still has work",
            who.id
        );
    }
}

/// §6.3.2.2: either department finding no defect decides at once (a veto) — no defect.
#[tokio::test]
async fn user_report_identified_jointly_as_not_defective() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = recorded(&e, &c, "user_report").await;
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.ed,
        Some("defective"),
        identification("potential_damage"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["identify_jointly"]);
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.quinn,
        Some("not_defective"),
        identification("none"),
    )
    .await
    .unwrap();
    // The departments disagree: nothing is decided (§6.3.2.2 "jointly identify").
    assert_eq!(open_steps(&inst), ["identify_jointly"]);
    // Engineering reconsiders and signs again: now both say not defective.
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.ed,
        Some("not_defective"),
        identification("none"),
    )
    .await
    .unwrap();
    assert_ended(&e, &inst, "no_defect");
    assert_eq!(inst.data["identification_basis"], "none");
}

/// §6.2.3: a notice from the competent department is recorded by the office; §6.3.2.1: the
/// state-designated department identifies, quality records its result.
#[tokio::test]
async fn supervisory_notice_identified_by_the_designated_department() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start("recall", start_data("supervisory_notice"), Some(&c.olga))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["record_notice"]);
    let notice = json!({
        "notice_channel": "official_letter",
        "reporter": "Provincial Market Supervision Administration",
        "notice_reference": "PMSA-2026-118",
        "defect_description": "Reports of hoist limit switch failures",
        "state_designated_department": true,
    });
    let err = refused(&e, &inst, "record_notice", &c.quinn, None, notice.clone()).await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(&e, &inst, "record_notice", &c.olga, None, notice)
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["record_external_identification"]);
    // One person records it: no signatures needed, and the office cannot.
    let err = refused(
        &e,
        &inst,
        "record_external_identification",
        &c.olga,
        Some("defective"),
        identification("nonconforming_safety"),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "record_external_identification",
        &c.quinn,
        Some("defective"),
        identification("nonconforming_safety"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard", "estimate_losses"]);
    let inst = at_decision(&e, &c, inst).await;
    let inst = implemented(&e, &c, inst).await;
    let inst = terminated(&e, &c, inst).await;
    assert_eq!(inst.data["notice_reference"], "PMSA-2026-118");
    assert_eq!(inst.data["identification_basis"], "nonconforming_safety");
}

#[tokio::test]
async fn internal_report_identified_by_the_designated_department_as_not_defective() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start("recall", start_data("internal_discovery"), Some(&c.quinn))
        .await
        .unwrap();
    let inst = complete(&e, &inst, "record_report", &c.quinn, None, report(true))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["record_external_identification"]);
    let inst = complete(
        &e,
        &inst,
        "record_external_identification",
        &c.quinn,
        Some("not_defective"),
        identification("none"),
    )
    .await
    .unwrap();
    assert_ended(&e, &inst, "no_defect");
}

/// The join of §6.4 waits for the office too: the hazard finished first does not go on.
#[tokio::test]
async fn the_scope_join_waits_for_the_office_when_the_hazard_is_assessed_first() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = identified(&e, &c).await;
    let inst = complete(&e, &inst, "assess_hazard", &c.pat, None, hazard())
        .await
        .unwrap();
    let inst = complete(&e, &inst, "assess_hazard", &c.quinn, None, hazard())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard", "estimate_losses"]);
    let inst = complete(&e, &inst, "assess_hazard", &c.ed, None, hazard())
        .await
        .unwrap();
    assert_eq!(
        open_steps(&inst),
        ["estimate_losses"],
        "prepare_plan must wait for the losses"
    );
    assert_eq!(inst.joins.get("scope_determined"), Some(&1));
    assert!(e.tasks_for(&c.pat).unwrap().is_empty());
    let inst = complete(&e, &inst, "estimate_losses", &c.olga, None, losses())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["prepare_plan"]);
    assert_eq!(inst.data["hazard_level"], "high");
    assert_eq!(inst.data["estimated_losses"], json!(380000.0));
    let stored = assert_folds(&e, inst.id);
    assert_eq!(stored, inst);
}

/// §5.1: the committee returns the plan for rework (one signer decides a return at once); a
/// new decision task collects fresh signatures; the general manager then decides against.
#[tokio::test]
async fn decision_returned_for_rework_then_rejected() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = identified(&e, &c).await;
    let inst = at_decision(&e, &c, inst).await;
    let first = task_at(&inst, "decide");
    let inst = complete(
        &e,
        &inst,
        "decide",
        &c.george,
        Some("approve"),
        decision("Approved"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["decide"]);
    // Without a comment the decision form is refused.
    let err = refused(&e, &inst, "decide", &c.cora, Some("rework"), json!({})).await;
    assert!(matches!(err, EngineError::InvalidForm(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "decide",
        &c.cora,
        Some("rework"),
        decision("Plan the retrieval in two phases"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["prepare_plan"]);
    let inst = planned(&e, &c, inst).await;
    let second = task_at(&inst, "decide");
    assert_ne!(second.id, first.id);
    assert!(
        second.signatures.is_empty(),
        "the new decision starts without signatures"
    );
    let inst = complete(
        &e,
        &inst,
        "decide",
        &c.george,
        Some("reject"),
        decision("Cost out of proportion"),
    )
    .await
    .unwrap();
    // One signer cannot turn the recall down: the history must not show a joint decision
    // that only one person took.
    assert_eq!(open_steps(&inst), ["decide"]);
    let inst = complete(
        &e,
        &inst,
        "decide",
        &c.cora,
        Some("reject"),
        decision("Agreed"),
    )
    .await
    .unwrap();
    assert_ended(&e, &inst, "not_returned");
    assert_eq!(inst.done_by["decide"], ["george", "cora", "george", "cora"]);
}

/// §7.3.2: not effective → another round of plan, budget, decision, publication and
/// implementation; then effective, with a satisfaction survey (§7.5.3) before termination.
#[tokio::test]
async fn not_effective_runs_another_round_then_terminates_with_a_survey() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = identified(&e, &c).await;
    let inst = at_decision(&e, &c, inst).await;
    let inst = implemented(&e, &c, inst).await;
    let inst = complete(
        &e,
        &inst,
        "evaluate_effectiveness",
        &c.cora,
        Some("not_effective"),
        json!({
            "evaluation_opinion": "30 users not reached",
            "competent_department_opinion": "Another return/exchange is required"
        }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["prepare_plan"]);
    let inst = planned(&e, &c, inst).await;
    let inst = implemented(&e, &c, inst).await;
    let inst = complete(
        &e,
        &inst,
        "evaluate_effectiveness",
        &c.cora,
        Some("effective"),
        json!({ "evaluation_opinion": "All users reached" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["compile_statistics", "settle_expenses"]);
    let inst = complete(
        &e,
        &inst,
        "settle_expenses",
        &c.olga,
        None,
        json!({ "actual_cost": 455000.0 }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["compile_statistics"]);
    let inst = complete(
        &e,
        &inst,
        "compile_statistics",
        &c.sid,
        None,
        statistics(true),
    )
    .await
    .unwrap();
    // The survey is still on the statistics branch: the join waits for it.
    assert_eq!(open_steps(&inst), ["satisfaction_survey"]);
    assert_eq!(inst.status, Status::Running);
    let inst = complete(
        &e,
        &inst,
        "satisfaction_survey",
        &c.sid,
        None,
        json!({ "survey_results": "92% satisfied; no market impact" }),
    )
    .await
    .unwrap();
    assert_ended(&e, &inst, "terminated");
    let history = e.history(inst.id).unwrap();
    let implementations = history
        .iter()
        .filter(
            |ev| matches!(&ev.kind, EventKind::TaskCompleted { step, .. } if step == "implement"),
        )
        .count();
    assert_eq!(implementations, 2);
}

/// A multi-signature step collects signatures from several roles; each signer must find the
/// task on their own worklist, not only people of the step's `role`.
#[tokio::test]
async fn every_signing_role_sees_the_multi_signature_task() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = recorded(&e, &c, "internal_discovery").await;
    assert_eq!(e.tasks_for(&c.ed).unwrap().len(), 1);
    // Quality must sign the joint identification (§6.3.2.2).
    assert_eq!(
        e.tasks_for(&c.quinn).unwrap().len(),
        1,
        "quality cannot find the identification it must sign"
    );
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.ed,
        Some("defective"),
        identification("caused_damage"),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.quinn,
        Some("defective"),
        identification("caused_damage"),
    )
    .await
    .unwrap();
    // Production and quality must sign the hazard level (§6.4.1).
    assert_eq!(open_steps(&inst), ["assess_hazard", "estimate_losses"]);
    assert_eq!(
        e.tasks_for(&c.pat).unwrap().len(),
        1,
        "production cannot find the hazard assessment"
    );
    let inst = at_decision(&e, &c, inst).await;
    // The committee must sign the decision (§5.1).
    assert_eq!(open_steps(&inst), ["decide"]);
    assert_eq!(
        e.tasks_for(&c.cora).unwrap().len(),
        1,
        "the committee cannot find the decision"
    );
}

/// Every rejection leaves the store byte-for-byte unchanged.
#[tokio::test]
async fn rejections_change_nothing() {
    let (e, _clock) = engine().await;
    let c = cast();
    let before = e.store().dump().unwrap();
    // §6.2: only quality or the office record defect information.
    let err = e
        .start("recall", start_data("user_report"), Some(&c.sid))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let err = e
        .start("recall", start_data("rumour"), Some(&c.quinn))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::InvalidForm(_))),
        "{err:?}"
    );
    assert_eq!(before, e.store().dump().unwrap());

    let inst = recorded(&e, &c, "internal_discovery").await;
    let t = task_at(&inst, "identify_jointly");
    let before = e.store().dump().unwrap();
    // A multi-signature task is signed, not claimed.
    let err = e
        .execute(inst.id, Command::Claim { task: t.id }, Some(&c.ed))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Invalid(_))),
        "{err:?}"
    );
    // A wrong choice of principle, and no findings.
    let err = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.ed,
        Some("defective"),
        json!({ "identification_basis": "gut_feeling" }),
    )
    .await
    .unwrap_err();
    let ServiceError::Engine(EngineError::InvalidForm(problems)) = err else {
        panic!("expected an invalid form, got {err:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert!(
        fields.contains(&"identification_basis") && fields.contains(&"identification_findings"),
        "{problems:?}"
    );
    // Two outcomes: one must be chosen.
    let err = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.ed,
        None,
        identification("none"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Invalid(_))),
        "{err:?}"
    );
    // Not delegable; only the general manager cancels.
    let err = e
        .execute(
            inst.id,
            Command::Delegate {
                task: t.id,
                to: c.eve.clone(),
                reason: Some("Away".into()),
            },
            Some(&c.ed),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let err = e
        .execute(
            inst.id,
            Command::Cancel {
                reason: "Duplicate report".into(),
            },
            Some(&c.quinn),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    assert_eq!(
        before,
        e.store().dump().unwrap(),
        "a rejected command wrote something"
    );

    // In the hazard assessment: a probability above 1, a negative quantity.
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.ed,
        Some("defective"),
        identification("caused_damage"),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.quinn,
        Some("defective"),
        identification("caused_damage"),
    )
    .await
    .unwrap();
    let err = refused(
        &e,
        &inst,
        "assess_hazard",
        &c.pat,
        None,
        json!({ "hazard_level": "high", "damage_probability": 1.5, "affected_quantity": -1 }),
    )
    .await;
    let EngineError::InvalidForm(problems) = err else {
        panic!("expected an invalid form, got {err:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert!(
        fields.contains(&"damage_probability") && fields.contains(&"affected_quantity"),
        "{problems:?}"
    );
    let err = refused(&e, &inst, "assess_hazard", &c.sid, None, hazard()).await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(&e, &inst, "assess_hazard", &c.pat, None, hazard())
        .await
        .unwrap();
    let err = refused(&e, &inst, "assess_hazard", &c.pat, None, hazard()).await;
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    // The general manager cancels: every open task closes, and nothing more can be done.
    let cancelled = e
        .execute(
            inst.id,
            Command::Cancel {
                reason: "Duplicate of an earlier recall".into(),
            },
            Some(&c.george),
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    assert!(cancelled.tasks.is_empty());
    assert!(e.tasks_for(&c.olga).unwrap().is_empty());
    let err = refused(&e, &inst, "estimate_losses", &c.olga, None, losses()).await;
    assert!(matches!(err, EngineError::Ended(_)), "{err:?}");
    let stored = assert_folds(&e, inst.id);
    assert_eq!(stored, cancelled);
}

/// Two engineers race to give the joint identification its second signature after quality
/// signed: exactly one completes it, the other learns it is already done. Then the last
/// hazard signature and the office's estimate race: the join fires exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_signers_and_racing_branches_decide_once() {
    let (e, _clock) = engine().await;
    let e = std::sync::Arc::new(e);
    let c = cast();
    let inst = recorded(&e, &c, "internal_discovery").await;
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &c.quinn,
        Some("defective"),
        identification("caused_damage"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["identify_jointly"]);
    let mut handles = Vec::new();
    for who in [c.ed.clone(), c.eve.clone()] {
        let (e, inst) = (e.clone(), inst.clone());
        handles.push(tokio::spawn(async move {
            complete(
                &e,
                &inst,
                "identify_jointly",
                &who,
                Some("defective"),
                identification("caused_damage"),
            )
            .await
        }));
    }
    let mut wins = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => wins += 1,
            Err(ServiceError::Engine(EngineError::Conflict(_))) => {}
            Err(other) => panic!("the loser must get a conflict, got {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    let inst = e.instance(inst.id).unwrap().unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard", "estimate_losses"]);
    assert_eq!(inst.done_by["identify_jointly"].len(), 2);

    let inst = complete(&e, &inst, "assess_hazard", &c.ed, None, hazard())
        .await
        .unwrap();
    let inst = complete(&e, &inst, "assess_hazard", &c.pat, None, hazard())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["assess_hazard", "estimate_losses"]);
    let last_signature = {
        let (e, inst, who) = (e.clone(), inst.clone(), c.quinn.clone());
        tokio::spawn(
            async move { complete(&e, &inst, "assess_hazard", &who, None, hazard()).await },
        )
    };
    let estimate = {
        let (e, inst, who) = (e.clone(), inst.clone(), c.olga.clone());
        tokio::spawn(
            async move { complete(&e, &inst, "estimate_losses", &who, None, losses()).await },
        )
    };
    last_signature.await.unwrap().unwrap();
    estimate.await.unwrap().unwrap();
    let inst = assert_folds(&e, inst.id);
    assert_eq!(open_steps(&inst), ["prepare_plan"], "the join fires once");
    assert!(inst.joins.is_empty());
    let joined = e
        .history(inst.id)
        .unwrap()
        .iter()
        .filter(
            |ev| matches!(&ev.kind, EventKind::Joined { step, .. } if step == "scope_determined"),
        )
        .count();
    assert_eq!(joined, 1);
    let inst = planned(&e, &c, inst).await;
    let inst = complete(
        &e,
        &inst,
        "decide",
        &c.george,
        Some("reject"),
        decision("Not proportionate"),
    )
    .await
    .unwrap();
    // Turning the recall down is a decision of both (§5.1).
    assert_eq!(open_steps(&inst), ["decide"]);
    let inst = complete(
        &e,
        &inst,
        "decide",
        &c.cora,
        Some("reject"),
        decision("Agreed: not proportionate"),
    )
    .await
    .unwrap();
    assert_ended(&e, &inst, "not_returned");
}
