//! Fault repair and dispatch driven through the engine (seed 004 After-sales service rules
//! (3)–(10) and User supervision measures (1), (3); seed 002 Maintenance Service and Technical
//! Support Control Procedure §3.1–§3.5, §4.1.3–§4.1.4): the call recorded and passed to sales
//! (§4.1.3, rule (3)), remote guidance that solves it (rule (4)), dispatch with the Fault
//! Handling Dispatch Form (rule (5)), arrival in the normal and the emergency path (measure
//! (3)), on-site repair signed by the user (rules (7)–(8)), return to the factory with a
//! temporary spare and the Spare Parts Replacement Notice (rule (9)), factory repair with the
//! quality test before reconnection — failing, then passing (rule (9), §3.5) — the scrap
//! appraisal signed by materials, engineering and quality (rule (10)), and the follow-up
//! visit (§4.1.4); and the rejections that must leave the store untouched.

mod common;

use common::*;
use serde_json::{json, Value};
use sopflow::engine::decide::{Command, EngineError};
use sopflow::engine::instance::{Actor, EventKind, Instance, Status};
use sopflow::engine::service::{Engine, ServiceError};
use sopflow::store::memory::MemoryStore;
use sopflow::store::Store;

struct Cast {
    /// Follow-up personnel (hotline, visits).
    fiona: Actor,
    /// Sales department.
    sam: Actor,
    /// After-sales service department (guidance, dispatch).
    alan: Actor,
    /// The technician sent on site (after-sales).
    tom: Actor,
    /// Another after-sales technician, not the one dispatched.
    tim: Actor,
    /// Production (factory repair).
    pat: Actor,
    /// Quality (testing, appraisal).
    quinn: Actor,
    /// Engineering (appraisal).
    ed: Actor,
    /// Materials (leads the appraisal team, scrap record).
    mia: Actor,
}

fn cast() -> Cast {
    Cast {
        fiona: person("fiona", "after_sales", &["follow_up"], 2),
        sam: person("sam", "sales", &["sales"], 2),
        alan: person("alan", "after_sales", &["after_sales"], 3),
        tom: person("tom", "after_sales", &["after_sales"], 2),
        tim: person("tim", "after_sales", &["after_sales"], 2),
        pat: person("pat", "production", &["production"], 3),
        quinn: person("quinn", "quality", &["quality"], 3),
        ed: person("ed", "engineering", &["engineering"], 3),
        mia: person("mia", "materials", &["materials"], 3),
    }
}

fn start_data() -> serde_json::Map<String, Value> {
    obj(json!({
        // Not in the customer register: an ordinary customer (AAA ones are in
        // tests/engine_registers.rs).
        "customer": "Dongfang Port",
        "contact": "Mr Li, 0731-555",
        "equipment": "QD20 overhead crane, serial QD20-0711",
    }))
}

fn order(emergency: bool) -> Value {
    json!({
        "fault_cause": "Unknown; brake may be worn",
        "occurred_at": "2026-11-02T07:30:00Z",
        "fault_nature": "Hoist drifts down under load",
        "fault_category": "mechanical",
        "fault_location": "Workshop 3, main hoist",
        "impact": if emergency { "production_stopped" } else { "reduced_operation" },
        "user_measures": "Load limited to 5 t",
        "in_warranty": true,
        "emergency": emergency,
    })
}

fn dispatch_form() -> Value {
    json!({
        "technician": "tom",
        "dispatch_number": "FD-2026-0412",
        "fault_type": "Brake",
        "tools": ["torque wrench", "multimeter"],
        "spare_parts": [{ "part": "Brake pad set", "quantity": 2, "vulnerable": true }],
    })
}

fn repair_form() -> Value {
    json!({
        "fault_analysis": "Brake pads worn below limit",
        "treatment_measures": "Pads replaced, brake adjusted",
        "completed_at": "2026-11-04T15:00:00Z",
        "user_signed": true,
    })
}

fn follow_up() -> Value {
    json!({ "customer_satisfied": true, "satisfaction_score": 100, "customer_opinion": "Quick and clean" })
}

/// Call recorded, order recorded: at the remote guidance.
async fn ordered(e: &Engine<MemoryStore>, c: &Cast, emergency: bool) -> Instance {
    let inst = e
        .start("repair-dispatch", start_data(), Some(&c.fiona))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["register_call"]);
    let inst = complete(
        e,
        &inst,
        "register_call",
        &c.fiona,
        None,
        json!({ "call_received_at": "2026-11-02T08:05:00Z", "call_channel": "hotline", "call_summary": "Hoist drifts down" }),
    )
    .await
    .unwrap();
    // §4.1.3: transferred to the sales department for repair calls.
    assert_eq!(open_steps(&inst), ["record_order"]);
    let inst = complete(e, &inst, "record_order", &c.sam, None, order(emergency))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["remote_guidance"]);
    inst
}

/// Remote guidance did not solve it; dispatched to Tom; arrival: at the on-site repair.
async fn on_site(e: &Engine<MemoryStore>, c: &Cast, emergency: bool) -> Instance {
    let inst = ordered(e, c, emergency).await;
    let inst = complete(
        e,
        &inst,
        "remote_guidance",
        &c.alan,
        Some("site_visit_needed"),
        json!({ "guidance_given": "Checked the brake gap by phone; not adjustable remotely" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["dispatch"]);
    let inst = complete(e, &inst, "dispatch", &c.alan, None, dispatch_form())
        .await
        .unwrap();
    // Rule (7): the dispatched technician tells the user when he will arrive.
    assert_eq!(open_steps(&inst), ["inform_arrival"]);
    assert_eq!(
        task_at(&inst, "inform_arrival").assignee.as_deref(),
        Some("tom")
    );
    assert_eq!(e.tasks_for(&c.tom).unwrap().len(), 1);
    assert!(
        e.tasks_for(&c.tim).unwrap().is_empty(),
        "assigned to Tom, not offered to after-sales"
    );
    let err = refused(
        e,
        &inst,
        "inform_arrival",
        &c.tim,
        None,
        json!({ "estimated_arrival": "2026-11-03T10:00:00Z" }),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(
        e,
        &inst,
        "inform_arrival",
        &c.tom,
        None,
        json!({ "estimated_arrival": "2026-11-03T10:00:00Z" }),
    )
    .await
    .unwrap();
    let arrive = if emergency {
        "arrive_emergency"
    } else {
        "arrive_normal"
    };
    assert_eq!(open_steps(&inst), [arrive]);
    assert_eq!(task_at(&inst, arrive).assignee.as_deref(), Some("tom"));
    let inst = complete(
        e,
        &inst,
        arrive,
        &c.tom,
        None,
        json!({ "arrived_at": "2026-11-03T10:20:00Z" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["on_site_repair"]);
    assert_eq!(
        task_at(&inst, "on_site_repair").assignee.as_deref(),
        Some("tom")
    );
    inst
}

/// Back on the user's site after the factory: reconnection, follow-up visit, closed.
async fn follow_up_and_close(e: &Engine<MemoryStore>, c: &Cast, inst: Instance) -> Instance {
    assert_eq!(open_steps(&inst), ["follow_up_visit"]);
    let inst = complete(e, &inst, "follow_up_visit", &c.fiona, None, follow_up())
        .await
        .unwrap();
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some("closed"));
    assert!(inst.tasks.is_empty());
    let stored = assert_folds(e, inst.id);
    assert_eq!(stored, inst);
    for who in [
        &c.fiona, &c.sam, &c.alan, &c.tom, &c.pat, &c.quinn, &c.ed, &c.mia,
    ] {
        assert!(
            e.tasks_for(who).unwrap().is_empty(),
            "{} still has work",
            who.id
        );
    }
    inst
}

fn steps_completed(e: &Engine<MemoryStore>, inst: &Instance) -> Vec<String> {
    e.history(inst.id)
        .unwrap()
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::TaskCompleted { step, outcome, .. } => Some(format!("{step}:{outcome}")),
            _ => None,
        })
        .collect()
}

/// Rule (4): remote guidance solves the fault; no one is dispatched.
#[tokio::test]
async fn remote_guidance_solves_it_then_follow_up() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = ordered(&e, &c, false).await;
    let inst = complete(
        &e,
        &inst,
        "remote_guidance",
        &c.alan,
        Some("solved_remotely"),
        json!({ "guidance_given": "Reset the overload relay" }),
    )
    .await
    .unwrap();
    let inst = follow_up_and_close(&e, &c, inst).await;
    assert_eq!(
        steps_completed(&e, &inst),
        [
            "register_call:done",
            "record_order:done",
            "remote_guidance:solved_remotely",
            "follow_up_visit:done"
        ]
    );
    assert!(inst.data.get("technician").is_none());
}

/// Measure (3), normal case: on site within 7 days; repaired on site and signed by the user.
#[tokio::test]
async fn normal_on_site_repair() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = on_site(&e, &c, false).await;
    let inst = complete(
        &e,
        &inst,
        "on_site_repair",
        &c.tom,
        Some("repaired"),
        repair_form(),
    )
    .await
    .unwrap();
    let inst = follow_up_and_close(&e, &c, inst).await;
    let steps = steps_completed(&e, &inst);
    assert!(
        steps.contains(&"arrive_normal:done".to_string()),
        "{steps:?}"
    );
    assert!(
        !steps.iter().any(|s| s.starts_with("arrive_emergency")),
        "{steps:?}"
    );
    assert_eq!(inst.data["user_signed"], json!(true));
}

/// Measure (3), emergency: the emergency arrival step (within 3 days).
#[tokio::test]
async fn emergency_on_site_repair() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = on_site(&e, &c, true).await;
    let inst = complete(
        &e,
        &inst,
        "on_site_repair",
        &c.tom,
        Some("repaired"),
        repair_form(),
    )
    .await
    .unwrap();
    let inst = follow_up_and_close(&e, &c, inst).await;
    let steps = steps_completed(&e, &inst);
    assert!(
        steps.contains(&"arrive_emergency:done".to_string()),
        "{steps:?}"
    );
    assert!(
        !steps.iter().any(|s| s.starts_with("arrive_normal")),
        "{steps:?}"
    );
}

/// Rule (9): not repairable on site — spare installed, factory repair, the test fails and
/// the equipment goes back to repair, the second test passes, reconnected; notice withdrawn.
#[tokio::test]
async fn returned_to_the_factory_test_fails_then_passes() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = on_site(&e, &c, false).await;
    let inst = complete(
        &e,
        &inst,
        "on_site_repair",
        &c.tom,
        Some("return_to_factory"),
        repair_form(),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["replace_with_spare"]);
    assert_eq!(
        task_at(&inst, "replace_with_spare").assignee.as_deref(),
        Some("tom")
    );
    let inst = complete(
        &e,
        &inst,
        "replace_with_spare",
        &c.tom,
        None,
        json!({
            "replacement_notice_number": "SP-2026-088",
            "faulty_item": "Hoist brake assembly",
            "spare_installed": "Brake assembly from stock, S/N B-3321",
            "situation_explained": true,
        }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["factory_repair"]);
    let err = refused(
        &e,
        &inst,
        "factory_repair",
        &c.quinn,
        Some("repaired"),
        json!({ "factory_repair_record": "x" }),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "factory_repair",
        &c.pat,
        Some("repaired"),
        json!({ "factory_repair_record": "Drum bearing replaced" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["test_repaired"]);
    let err = refused(
        &e,
        &inst,
        "test_repaired",
        &c.pat,
        Some("qualified"),
        json!({ "test_record": "ok" }),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "test_repaired",
        &c.quinn,
        Some("not_qualified"),
        json!({ "test_record": "Braking distance 40% over limit" }),
    )
    .await
    .unwrap();
    // Not qualified: back to the factory repair, not reconnected.
    assert_eq!(open_steps(&inst), ["factory_repair"]);
    let inst = complete(
        &e,
        &inst,
        "factory_repair",
        &c.pat,
        Some("repaired"),
        json!({ "factory_repair_record": "Brake disc machined, springs replaced" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["test_repaired"]);
    let inst = complete(
        &e,
        &inst,
        "test_repaired",
        &c.quinn,
        Some("qualified"),
        json!({ "test_record": "Braking distance within limit at 125% load" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["reconnect"]);
    assert_eq!(task_at(&inst, "reconnect").assignee.as_deref(), Some("tom"));
    let inst = complete(
        &e,
        &inst,
        "reconnect",
        &c.tom,
        None,
        json!({ "reconnected_at": "2026-11-12T11:00:00Z", "notice_withdrawn": true }),
    )
    .await
    .unwrap();
    let inst = follow_up_and_close(&e, &c, inst).await;
    let steps = steps_completed(&e, &inst);
    let tests: Vec<&String> = steps
        .iter()
        .filter(|s| s.starts_with("test_repaired"))
        .collect();
    assert_eq!(
        tests,
        ["test_repaired:not_qualified", "test_repaired:qualified"]
    );
    assert_eq!(inst.done_by["factory_repair"], ["pat", "pat"]);
    assert_eq!(
        inst.data["test_record"],
        "Braking distance within limit at 125% load"
    );
}

async fn at_factory(e: &Engine<MemoryStore>, c: &Cast) -> Instance {
    let inst = on_site(e, c, true).await;
    let inst = complete(
        e,
        &inst,
        "on_site_repair",
        &c.tom,
        Some("return_to_factory"),
        repair_form(),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "replace_with_spare",
        &c.tom,
        None,
        json!({
            "replacement_notice_number": "SP-2026-089",
            "faulty_item": "Hoist gearbox",
            "spare_installed": "Gearbox from stock",
            "situation_explained": true,
        }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["factory_repair"]);
    inst
}

/// Rule (10): proposed for scrapping; the temporary appraisal team (materials, engineering,
/// quality) signs one each; the third signature decides; the scrap record; follow-up.
#[tokio::test]
async fn scrap_appraisal_needs_all_three_departments() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = at_factory(&e, &c).await;
    let inst = complete(
        &e,
        &inst,
        "factory_repair",
        &c.pat,
        Some("propose_scrap"),
        json!({ "factory_repair_record": "Gearbox housing cracked" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["scrap_appraisal"]);
    let opinion = |text: &str| json!({ "appraisal_opinion": text });
    let inst = complete(
        &e,
        &inst,
        "scrap_appraisal",
        &c.mia,
        Some("scrap"),
        opinion("Housing beyond repair"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["scrap_appraisal"]);
    // The team leader cannot sign twice; sales is not on the team.
    let err = refused(
        &e,
        &inst,
        "scrap_appraisal",
        &c.mia,
        Some("scrap"),
        opinion("again"),
    )
    .await;
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    let err = refused(
        &e,
        &inst,
        "scrap_appraisal",
        &c.sam,
        Some("scrap"),
        opinion("agree"),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "scrap_appraisal",
        &c.ed,
        Some("scrap"),
        opinion("Crack through the bearing seat"),
    )
    .await
    .unwrap();
    assert_eq!(
        open_steps(&inst),
        ["scrap_appraisal"],
        "two of three signatures do not decide"
    );
    assert_eq!(task_at(&inst, "scrap_appraisal").signatures.len(), 2);
    let inst = complete(
        &e,
        &inst,
        "scrap_appraisal",
        &c.quinn,
        Some("scrap"),
        opinion("Confirmed by dye test"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["record_scrap"]);
    let inst = complete(
        &e,
        &inst,
        "record_scrap",
        &c.mia,
        None,
        json!({
            "scrap_record_number": "SD-2026-014",
            "disposal_method": "Sold as scrap metal",
            "formal_replacement": "Spare gearbox S/N G-118 becomes the formal replacement",
        }),
    )
    .await
    .unwrap();
    let inst = follow_up_and_close(&e, &c, inst).await;
    assert_eq!(inst.done_by["scrap_appraisal"], ["mia", "ed", "quinn"]);
    let completed_by = e
        .history(inst.id)
        .unwrap()
        .iter()
        .find_map(|ev| match &ev.kind {
            EventKind::TaskCompleted { step, meaning, .. } if step == "scrap_appraisal" => {
                Some((ev.by.as_ref().unwrap().user.clone(), meaning.clone()))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(
        completed_by,
        ("quinn".to_string(), Some("approved".to_string()))
    );
}

/// Rule (10): one member of the team sends it back for repair instead (decides at once); the
/// repaired equipment is tested and reconnected.
#[tokio::test]
async fn scrap_appraisal_sends_it_back_for_repair() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = at_factory(&e, &c).await;
    let inst = complete(
        &e,
        &inst,
        "factory_repair",
        &c.pat,
        Some("propose_scrap"),
        json!({ "factory_repair_record": "Gearbox housing cracked" }),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "scrap_appraisal",
        &c.mia,
        Some("scrap"),
        json!({ "appraisal_opinion": "Scrap" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["scrap_appraisal"]);
    let inst = complete(
        &e,
        &inst,
        "scrap_appraisal",
        &c.ed,
        Some("repair_instead"),
        json!({ "appraisal_opinion": "The housing can be welded and stress-relieved" }),
    )
    .await
    .unwrap();
    // One member's view does not send it back: repairing instead needs two of the three.
    assert_eq!(open_steps(&inst), ["scrap_appraisal"]);
    let inst = complete(
        &e,
        &inst,
        "scrap_appraisal",
        &c.quinn,
        Some("repair_instead"),
        json!({ "appraisal_opinion": "Agreed: weld it" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["factory_repair"]);
    let inst = complete(
        &e,
        &inst,
        "factory_repair",
        &c.pat,
        Some("repaired"),
        json!({ "factory_repair_record": "Housing welded and stress-relieved" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["test_repaired"]);
    let inst = complete(
        &e,
        &inst,
        "test_repaired",
        &c.quinn,
        Some("qualified"),
        json!({ "test_record": "Passed" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["reconnect"]);
    let inst = complete(
        &e,
        &inst,
        "reconnect",
        &c.tom,
        None,
        json!({ "reconnected_at": "2026-11-20T09:00:00Z", "notice_withdrawn": true }),
    )
    .await
    .unwrap();
    let inst = follow_up_and_close(&e, &c, inst).await;
    assert!(inst.data.get("scrap_record_number").is_none());
}

/// With one person holding all three appraisal roles, "one signature each" from three
/// departments still needs a distinct person for each role: two further materials signatures
/// do not stand in for engineering and quality.
#[tokio::test]
async fn one_signer_with_every_role_does_not_cover_the_other_roles() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = at_factory(&e, &c).await;
    let inst = complete(
        &e,
        &inst,
        "factory_repair",
        &c.pat,
        Some("propose_scrap"),
        json!({ "factory_repair_record": "Gearbox housing cracked" }),
    )
    .await
    .unwrap();
    let all_three = person(
        "max",
        "materials",
        &["materials", "engineering", "quality"],
        4,
    );
    let mo = person("mo", "materials", &["materials"], 2);
    let opinion = json!({ "appraisal_opinion": "Scrap" });
    let inst = complete(
        &e,
        &inst,
        "scrap_appraisal",
        &all_three,
        Some("scrap"),
        opinion.clone(),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "scrap_appraisal",
        &c.mia,
        Some("scrap"),
        opinion.clone(),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "scrap_appraisal",
        &mo,
        Some("scrap"),
        opinion.clone(),
    )
    .await
    .unwrap();
    // Three people signed, but only Max can stand for engineering or quality, not for both.
    assert_eq!(
        open_steps(&inst),
        ["scrap_appraisal"],
        "three signatures cover only two roles"
    );
    let inst = complete(
        &e,
        &inst,
        "scrap_appraisal",
        &c.quinn,
        Some("scrap"),
        opinion,
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["record_scrap"]);
}

/// Every rejection leaves the store byte-for-byte unchanged.
#[tokio::test]
async fn rejections_change_nothing() {
    let (e, _clock) = engine().await;
    let c = cast();
    let before = e.store().dump().unwrap();
    let err = e
        .start("repair-dispatch", start_data(), Some(&c.pat))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let mut incomplete = start_data();
    incomplete.remove("equipment");
    let err = e
        .start("repair-dispatch", incomplete, Some(&c.fiona))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::InvalidForm(_))),
        "{err:?}"
    );
    assert_eq!(before, e.store().dump().unwrap());

    let inst = e
        .start("repair-dispatch", start_data(), Some(&c.fiona))
        .await
        .unwrap();
    let before = e.store().dump().unwrap();
    // Not a date-time; a channel not offered.
    let err = complete(
        &e,
        &inst,
        "register_call",
        &c.fiona,
        None,
        json!({ "call_received_at": "this morning", "call_channel": "pigeon", "call_summary": "Hoist drifts" }),
    )
    .await
    .unwrap_err();
    let ServiceError::Engine(EngineError::InvalidForm(problems)) = err else {
        panic!("expected an invalid form, got {err:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert!(
        fields.contains(&"call_received_at") && fields.contains(&"call_channel"),
        "{problems:?}"
    );
    let err = complete(
        &e,
        &inst,
        "register_call",
        &c.sam,
        None,
        json!({ "call_received_at": "2026-11-02T08:05:00Z", "call_channel": "hotline", "call_summary": "Hoist drifts" }),
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
                reason: "Wrong customer".into(),
            },
            Some(&c.fiona),
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
                reason: "  ".into(),
            },
            Some(&c.sam),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Invalid(_))),
        "{err:?}"
    );
    assert_eq!(
        before,
        e.store().dump().unwrap(),
        "a rejected command wrote something"
    );

    // The dispatch form: no technician, a spare part of quantity 0, tools not a list.
    let inst = ordered(&e, &c, false).await;
    let inst = complete(
        &e,
        &inst,
        "remote_guidance",
        &c.alan,
        Some("site_visit_needed"),
        json!({ "guidance_given": "Not solvable by phone" }),
    )
    .await
    .unwrap();
    let err = refused(
        &e,
        &inst,
        "dispatch",
        &c.alan,
        None,
        json!({
            "technician": "", "dispatch_number": "FD-1", "fault_type": "Brake",
            "tools": "wrench", "spare_parts": [{ "part": "Pad", "quantity": 0 }],
        }),
    )
    .await;
    let EngineError::InvalidForm(problems) = err else {
        panic!("expected an invalid form, got {err:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for f in ["technician", "tools", "spare_parts/0/quantity"] {
        assert!(fields.contains(&f), "{f} missing from {problems:?}");
    }
    let inst = complete(&e, &inst, "dispatch", &c.alan, None, dispatch_form())
        .await
        .unwrap();
    // The technician's task cannot be claimed by a colleague.
    let t = task_at(&inst, "inform_arrival");
    let before = e.store().dump().unwrap();
    let err = e
        .execute(inst.id, Command::Claim { task: t.id }, Some(&c.tim))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    assert_eq!(before, e.store().dump().unwrap());
    // Sales cancels; the technician's worklist empties.
    let cancelled = e
        .execute(
            inst.id,
            Command::Cancel {
                reason: "Customer repaired it themselves".into(),
            },
            Some(&c.sam),
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    assert!(e.tasks_for(&c.tom).unwrap().is_empty());
    let err = refused(
        &e,
        &inst,
        "inform_arrival",
        &c.tom,
        None,
        json!({ "estimated_arrival": "2026-11-03T10:00:00Z" }),
    )
    .await;
    assert!(matches!(err, EngineError::Ended(_)), "{err:?}");
    let stored = assert_folds(&e, inst.id);
    assert_eq!(stored, cancelled);
}
