//! Internal evaluation driven through the engine (seed 002 Service Internal Evaluation):
//! three deduction items start three corrective actions, the parent continues only after all
//! three have ended, and the children's results are readable by the parent. Separation of
//! duties (evaluators not from the audited department; verifier not the implementer),
//! assignment to a person named in the data, and the computed score (§5.3.3 d).

mod common;

use sopflow::clock::ManualClock;

use common::*;
use serde_json::{json, Value};
use sopflow::engine::decide::EngineError;
use sopflow::engine::instance::{Actor, Instance, Status};
use sopflow::engine::service::{Engine, ServiceError};
use sopflow::store::memory::MemoryStore;
use sopflow::store::Store;

struct Cast {
    mary: Actor,
    george: Actor,
    lena: Actor,
    otto: Actor,
    quinn: Actor,
    sally: Actor,
}

fn cast() -> Cast {
    Cast {
        mary: person("mary", "general_management", &["management_rep"], 4),
        george: person("george", "general_management", &["general_manager"], 5),
        // Team leader and a member, from the quality department.
        lena: person("lena", "quality", &["audit_team"], 3),
        otto: person("otto", "office", &["audit_team"], 2),
        // Head of the audited sales department.
        quinn: person("quinn", "sales", &["sales"], 3),
        // A sales auditor: may not audit her own department.
        sally: person("sally", "sales", &["audit_team"], 2),
    }
}

async fn through_the_audit(
    e: &Engine<MemoryStore>,
    clock: &ManualClock,
    c: &Cast,
    items: Vec<Value>,
) -> Instance {
    let inst = up_to_report_approval(e, clock, c, items).await;
    complete(
        e,
        &inst,
        "approve_report",
        &c.mary,
        Some("approve"),
        json!({}),
    )
    .await
    .unwrap()
}

/// The audit up to the management representative's approval of the report, which starts
/// one corrective action per deduction item.
async fn up_to_report_approval(
    e: &Engine<MemoryStore>,
    clock: &ManualClock,
    c: &Cast,
    items: Vec<Value>,
) -> Instance {
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
    // An auditor from the audited department is refused (§4.2), and nothing changes.
    let err = complete(
        e,
        &inst,
        "prepare_checklist",
        &c.sally,
        None,
        json!({ "checklist": [{ "department": "sales", "time": "2026-11-20T09:00:00Z", "project": "Complaints", "content": "Records" }] }),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let inst = complete(
        e,
        &inst,
        "prepare_checklist",
        &c.otto,
        None,
        json!({ "checklist": [{ "department": "sales", "time": "2026-11-20T09:00:00Z", "project": "Complaints", "content": "Records" }] }),
    )
    .await
    .unwrap();
    // Assigned to the team leader named in the data: only Lena sees it.
    let t = task_at(&inst, "notify_department");
    assert_eq!(t.assignee.as_deref(), Some("lena"));
    let err = complete(
        e,
        &inst,
        "notify_department",
        &c.otto,
        None,
        json!({ "notice_date": "2026-11-10" }),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    // §5.1.5: the notice goes out 7–10 days before the audit (2026-11-20), not earlier. (A
    // second evaluation started later in the same test opens inside the window.)
    if let Some(opens) = task_at(&inst, "notify_department").opens {
        let early = complete(
            e,
            &inst,
            "notify_department",
            &c.lena,
            None,
            json!({ "notice_date": "2026-11-02" }),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&early, ServiceError::Engine(EngineError::Conflict(m)) if m.contains("2026-11-10")),
            "{early:?}"
        );
        e.advance_clock(clock, opens).await.unwrap();
    }
    let inst = e.instance(inst.id).unwrap().unwrap();
    let inst = complete(
        e,
        &inst,
        "notify_department",
        &c.lena,
        None,
        json!({ "notice_date": "2026-11-10" }),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "await_objection",
        &c.quinn,
        Some("accept"),
        json!({}),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "first_meeting",
        &c.lena,
        None,
        json!({ "attendees": "GM, MR, team, sales", "final_meeting_time": "2026-11-20T16:00:00Z" }),
    )
    .await
    .unwrap();
    // Points earned above the total of the related items (the 10 deleted points entered as
    // earned) cannot be scored: the audit step opens again to be corrected.
    let inst = complete(
        e,
        &inst,
        "on_site_audit",
        &c.otto,
        None,
        json!({
            "service_system_score": 40.0, "commodity_service_score": 35.0, "customer_service_score": 20.0,
            "deleted_points": 10.0, "deduction_items": items.clone()
        }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["on_site_audit"]);
    let specials = items.iter().filter(|i| i["special"] == json!(true)).count() as f64;
    let inst = complete(
        e,
        &inst,
        "on_site_audit",
        &c.otto,
        None,
        json!({
            "service_system_score": 36.0, "commodity_service_score": 30.0, "customer_service_score": 20.0,
            "deleted_points": 10.0, "deduction_items": items
        }),
    )
    .await
    .unwrap();
    // §5.3.3 d: actual score / total of the related items × 100 = 86 / 90 × 100, and §5.3.3 c:
    // one point off for each special deduction item.
    let score = inst.data["score"].as_f64().unwrap();
    assert!(
        (score - (95.555_555 - specials)).abs() < 1e-3,
        "score {score}"
    );
    let inst = complete(
        e,
        &inst,
        "review_deductions",
        &c.lena,
        Some("confirm"),
        json!({}),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "final_meeting",
        &c.lena,
        None,
        json!({ "findings_agreed": true, "rectification_deadline": "2026-12-20" }),
    )
    .await
    .unwrap();
    complete(
        e,
        &inst,
        "write_report",
        &c.lena,
        None,
        json!({ "report_summary": "Three deduction items", "conclusion": "Effective with corrections" }),
    )
    .await
    .unwrap()
}

fn item(n: u32, head: &str) -> Value {
    json!({
        "clause": format!("4.{n}"), "description": format!("Finding {n}"), "department": "sales",
        "department_head": head, "part": "customer_service", "points_deducted": 1.0, "special": false
    })
}

async fn run_child(
    e: &Engine<MemoryStore>,
    child: &Instance,
    owner: &Actor,
    reviewer: &Actor,
) -> Instance {
    let child = complete(
        e,
        child,
        "plan_rectification",
        owner,
        None,
        json!({ "impact_analysis": "Minor", "cause_analysis": "Training", "corrective_measures": "Retrain", "planned_completion": "2026-12-10" }),
    )
    .await
    .unwrap();
    let child = complete(
        e,
        &child,
        "implement",
        owner,
        None,
        json!({ "implementation_record": "Done", "document_changed": false, "witness_materials": [{ "description": "Attendance", "reference": "R-07" }] }),
    )
    .await
    .unwrap();
    // The implementer may not verify their own work.
    let err = complete(
        e,
        &child,
        "verify",
        owner,
        Some("verified"),
        json!({ "plan_followed": true, "measures_completed": true, "nonconformity_corrected": true, "changes_controlled": true, "verification_notes": "ok" }),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    complete(
        e,
        &child,
        "verify",
        reviewer,
        Some("verified"),
        json!({ "plan_followed": true, "measures_completed": true, "nonconformity_corrected": true, "changes_controlled": true, "verification_notes": "Checked on site" }),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn three_deduction_items_three_corrective_actions_then_the_parent_continues() {
    let (e, clock) = engine().await;
    let c = cast();
    let parent = through_the_audit(
        &e,
        &clock,
        &c,
        vec![item(1, "quinn"), item(2, "quinn"), item(3, "quinn")],
    )
    .await;
    assert!(
        parent.tasks.is_empty(),
        "the parent waits for its children: {:?}",
        open_steps(&parent)
    );
    let group = parent
        .children
        .get("corrective_actions")
        .expect("children started");
    assert_eq!(group.pending.len(), 3);
    let children: Vec<_> = group.pending.keys().copied().collect();

    for (i, id) in children.iter().enumerate() {
        let child = e.instance(*id).unwrap().expect("child stored");
        assert_eq!(child.procedure, "corrective-action");
        assert_eq!(child.parent.as_ref().map(|p| p.instance), Some(parent.id));
        assert_eq!(
            task_at(&child, "plan_rectification").assignee.as_deref(),
            Some("quinn")
        );
        let ended = run_child(&e, &child, &c.quinn, &c.lena).await;
        assert_eq!(ended.status, Status::Completed);
        let parent_now = e.instance(parent.id).unwrap().unwrap();
        if i < 2 {
            assert!(
                parent_now.tasks.is_empty(),
                "the parent must wait for all children"
            );
        } else {
            assert_eq!(open_steps(&parent_now), ["confirm_rectification"]);
            let results = parent_now.data["corrective_results"].as_array().unwrap();
            assert_eq!(results.len(), 3);
            assert!(results.iter().all(|r| r["outcome"] == "verified"));
            assert_eq!(results[0]["clause"], "4.1");
        }
    }
    let parent_now = e.instance(parent.id).unwrap().unwrap();
    let done = complete(
        &e,
        &parent_now,
        "confirm_rectification",
        &c.lena,
        None,
        json!({ "rectification_summary": "All verified" }),
    )
    .await
    .unwrap();
    assert_eq!(done.data["all_verified"], json!(true));
    assert_eq!(done.status, Status::Completed);
}

#[tokio::test]
async fn more_deduction_items_than_children_allowed_is_refused_and_changes_nothing() {
    use sopflow::engine::decide::MAX_CHILDREN;
    let (e, clock) = engine().await;
    let c = cast();
    let items: Vec<Value> = (0..=MAX_CHILDREN as u32)
        .map(|n| item(n, "quinn"))
        .collect();
    let inst = up_to_report_approval(&e, &clock, &c, items).await;
    let before = e.store().dump().unwrap();
    let err = complete(
        &e,
        &inst,
        "approve_report",
        &c.mary,
        Some("approve"),
        json!({}),
    )
    .await
    .unwrap_err();
    match &err {
        ServiceError::Engine(EngineError::Invalid(why)) => {
            assert!(
                why.contains(&format!("lists {} items", MAX_CHILDREN + 1)),
                "{why}"
            );
            assert!(why.contains(&format!("at most {MAX_CHILDREN}")), "{why}");
        }
        other => panic!("expected a refusal naming the bound, got {other:?}"),
    }
    assert_eq!(before, e.store().dump().unwrap());

    // Exactly the bound is fine: every child starts in the approval's commit.
    let items: Vec<Value> = (0..MAX_CHILDREN as u32).map(|n| item(n, "quinn")).collect();
    let inst = through_the_audit(&e, &clock, &c, items).await;
    assert_eq!(
        inst.children["corrective_actions"].pending.len(),
        MAX_CHILDREN
    );
}

#[tokio::test]
async fn no_deduction_items_closes_without_children() {
    let (e, clock) = engine().await;
    let c = cast();
    let inst = through_the_audit(&e, &clock, &c, vec![]).await;
    assert_eq!(inst.status, Status::Completed);
    assert!(inst.children.is_empty());
}

#[tokio::test]
async fn cancelling_the_parent_cancels_running_children() {
    let (e, clock) = engine().await;
    let c = cast();
    let parent = through_the_audit(&e, &clock, &c, vec![item(1, "quinn"), item(2, "quinn")]).await;
    let children: Vec<_> = parent.children["corrective_actions"]
        .pending
        .keys()
        .copied()
        .collect();
    let admin = person("root", "office", &["admin"], 5);
    let cancelled = e
        .execute(
            parent.id,
            sopflow::engine::decide::Command::Cancel {
                reason: "Audit annulled".into(),
            },
            Some(&admin),
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    for id in children {
        assert_eq!(e.instance(id).unwrap().unwrap().status, Status::Cancelled);
    }
    assert!(e.tasks_for(&c.quinn).unwrap().is_empty());
}

/// §5.5.3: rectification is confirmed only when every corrective action is verified. A
/// cancelled corrective action is not: its item gets a new one, and a special deduction item
/// costs a point beyond the score (§5.3.3 c).
#[tokio::test]
async fn a_cancelled_corrective_action_is_not_verified_and_is_started_again() {
    let (e, clock) = engine().await;
    let c = cast();
    let mut special = item(1, "quinn");
    special["special"] = json!(true);
    let parent = through_the_audit(&e, &clock, &c, vec![special, item(2, "quinn")]).await;
    let score = parent.data["score"].as_f64().unwrap();
    assert!((score - 94.555_555).abs() < 1e-3, "score {score}");
    // The children in item order (their ids are not).
    let mut children: Vec<_> = parent.children["corrective_actions"]
        .pending
        .iter()
        .map(|(id, index)| (*index, *id))
        .collect();
    children.sort();
    let children: Vec<_> = children.into_iter().map(|(_, id)| id).collect();
    let admin = person("root", "office", &["admin"], 5);
    e.execute(
        children[0],
        sopflow::engine::decide::Command::Cancel {
            reason: "Raised against the wrong department".into(),
        },
        Some(&admin),
    )
    .await
    .unwrap();
    let other = e.instance(children[1]).unwrap().unwrap();
    run_child(&e, &other, &c.quinn, &c.lena).await;
    let parent = e.instance(parent.id).unwrap().unwrap();
    // The cancelled item is open again, as one new corrective action; nothing to confirm yet.
    assert!(parent.tasks.is_empty(), "{:?}", open_steps(&parent));
    let again: Vec<_> = parent.children["corrective_actions"]
        .pending
        .keys()
        .copied()
        .collect();
    assert_eq!(again.len(), 1);
    let redo = e.instance(again[0]).unwrap().unwrap();
    assert_eq!(redo.data["clause"], json!("4.1"));
    run_child(&e, &redo, &c.quinn, &c.lena).await;
    let parent = e.instance(parent.id).unwrap().unwrap();
    assert_eq!(open_steps(&parent), ["confirm_rectification"]);
    assert_eq!(parent.data["all_verified"], json!(true));
    assert_folds(&e, parent.id);
}
