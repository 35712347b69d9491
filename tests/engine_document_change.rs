//! Controlled document change driven through the engine (seed 002 Document Control
//! Procedure §3.1–§3.2, §4.3.2, §4.6.1, §4.7.1–§4.7.4, §4.9): the application with reasons and
//! contents (§4.7.1), evidence for an important modification (§4.7.1), approval by the
//! original approving role (§4.7.2 with §3.1/§3.2), delegation of the approval to someone
//! "at the same level or above" with a reason (§4.7.2), reject, return for rework to the
//! applicant, partial change vs new version (§4.7.1, §4.3.2), distribution and retrieval
//! (§4.7.3, §4.6.1), invalidation of old copies (§4.9) and change registration (§4.7.4); and
//! the rejections that must leave the store untouched.

mod common;

use common::*;
use serde_json::{json, Value};
use sopflow::engine::decide::{Command, EngineError};
use sopflow::engine::instance::{Actor, EventKind, Instance, Status};
use sopflow::engine::service::{Engine, ServiceError};
use sopflow::store::memory::MemoryStore;
use sopflow::store::Store;

struct Cast {
    /// The applicant (any employee).
    alice: Actor,
    /// Another employee, not the applicant.
    bob: Actor,
    /// General manager, level 5.
    george: Actor,
    /// A second general manager, level 5 (same level as George).
    gina: Actor,
    /// Management representative, level 4.
    mary: Actor,
    /// A junior management representative, level 3.
    mark: Actor,
    /// Office document administrator.
    dora: Actor,
    /// A senior engineer, level 5, with neither approving role.
    eric: Actor,
}

fn cast() -> Cast {
    Cast {
        alice: person("alice", "quality", &["staff"], 2),
        bob: person("bob", "sales", &["staff"], 2),
        george: person("george", "general_management", &["general_manager"], 5),
        gina: person("gina", "general_management", &["general_manager"], 5),
        mary: person("mary", "general_management", &["management_rep"], 4),
        mark: person("mark", "office", &["management_rep"], 3),
        dora: person("dora", "office", &["document_admin"], 2),
        eric: person("eric", "engineering", &["staff"], 5),
    }
}

/// A change approved by `approver`: who approves follows from the kind of document (§3.1,
/// §3.2) — a procedural document goes to the general manager, an institutional one to the
/// management representative. Any other value is taken as the document type itself.
fn start_data(approver: &str) -> serde_json::Map<String, Value> {
    let document_type = match approver {
        "general_manager" => "procedure",
        "management_rep" => "management",
        other => other,
    };
    obj(json!({
        "document_number": "CX-05",
        "document_title": "Document Control Procedure",
        "document_type": document_type,
        "current_revision": "B/1",
        "applicant": "alice",
    }))
}

fn application(important: bool, method: &str) -> Value {
    json!({
        "change_reason": "The retrieval of old copies is not described clearly enough",
        "change_content": "Rewrite §4.7.3 to name who retrieves old copies and when",
        "important": important,
        "change_method": method,
    })
}

fn distribution() -> Value {
    json!({
        "server_updated": true,
        "distribution_record": [
            { "department": "sales", "recipient": "bob", "distribution_number": "D-07",
              "old_copy_retrieved": true },
            { "department": "quality", "recipient": "alice", "distribution_number": "D-08",
              "old_copy_retrieved": true }
        ],
    })
}

fn old_copies() -> Value {
    json!({
        "old_copies": [
            { "distribution_number": "D-07", "disposition": "invalidated" },
            { "distribution_number": "D-08", "disposition": "invalid_retention",
              "retention_reason": "Kept as evidence for the supplier audit" }
        ],
    })
}

fn registration() -> Value {
    json!({ "change_record_number": "CR-2026-031", "document_list_updated": true })
}

async fn delegate(
    e: &Engine<MemoryStore>,
    inst: &Instance,
    step: &str,
    from: &Actor,
    to: &Actor,
    reason: Option<&str>,
) -> Result<Instance, ServiceError> {
    let t = task_at(inst, step);
    e.execute(
        inst.id,
        Command::Delegate {
            task: t.id,
            to: to.clone(),
            reason: reason.map(str::to_string),
        },
        Some(from),
    )
    .await
}

/// From the approved change to the registration: distribution, invalidation of old copies,
/// registration, each step checked on the way.
async fn distribute_and_register(e: &Engine<MemoryStore>, c: &Cast, inst: Instance) -> Instance {
    assert_eq!(open_steps(&inst), ["distribute"]);
    let inst = complete(e, &inst, "distribute", &c.dora, None, distribution())
        .await
        .unwrap();
    // Each recipient on the record signs for their copy (§4.6.1 b); the administrator may not.
    assert_eq!(open_steps(&inst), ["confirm_receipt"]);
    assert_eq!(task_at(&inst, "confirm_receipt").people, ["bob", "alice"]);
    let err = complete(e, &inst, "confirm_receipt", &c.dora, None, json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let inst = complete(e, &inst, "confirm_receipt", &c.bob, None, json!({}))
        .await
        .unwrap();
    assert_eq!(
        open_steps(&inst),
        ["confirm_receipt"],
        "alice has not signed"
    );
    let inst = complete(e, &inst, "confirm_receipt", &c.alice, None, json!({}))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["invalidate_old_copies"]);
    let inst = complete(
        e,
        &inst,
        "invalidate_old_copies",
        &c.dora,
        None,
        old_copies(),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["register_change"]);
    let inst = complete(e, &inst, "register_change", &c.dora, None, registration())
        .await
        .unwrap();
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some("changed"));
    assert!(inst.tasks.is_empty());
    let stored = assert_folds(e, inst.id);
    assert_eq!(stored, inst);
    inst
}

#[tokio::test]
async fn partial_change_approved_by_the_general_manager_then_distributed_and_registered() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-change",
            start_data("general_manager"),
            Some(&c.alice),
        )
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["apply"]);
    // §4.7.1: the applicant fills in the form; it is assigned to the applicant named in the data.
    assert_eq!(task_at(&inst, "apply").assignee.as_deref(), Some("alice"));
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.alice,
        None,
        application(false, "page_change"),
    )
    .await
    .unwrap();
    // Not important: no evidence step. §4.7.2: to the original approver, the general manager.
    assert_eq!(open_steps(&inst), ["approve_gm"]);
    assert_eq!(e.tasks_for(&c.george).unwrap().len(), 1);
    assert!(
        e.tasks_for(&c.mary).unwrap().is_empty(),
        "the management representative did not approve it originally"
    );
    let err = refused(&e, &inst, "approve_gm", &c.mary, Some("approve"), json!({})).await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "approve_gm",
        &c.george,
        Some("approve"),
        json!({ "approval_comments": "Agreed" }),
    )
    .await
    .unwrap();
    // §4.7.1: a partial change by page change, the revision status marked (B/1 → B/2).
    assert_eq!(open_steps(&inst), ["make_partial_change"]);
    let inst = complete(
        &e,
        &inst,
        "make_partial_change",
        &c.dora,
        None,
        json!({ "new_revision": "B/2", "changed_pages": "7–8" }),
    )
    .await
    .unwrap();
    let inst = distribute_and_register(&e, &c, inst).await;
    assert_eq!(inst.data["new_revision"], "B/2");
    assert_eq!(inst.data["change_record_number"], "CR-2026-031");
    // The approval is recorded with its meaning.
    let history = e.history(inst.id).unwrap();
    let approval = history
        .iter()
        .find_map(|ev| match &ev.kind {
            EventKind::TaskCompleted {
                step,
                outcome,
                meaning,
                ..
            } if step == "approve_gm" => Some((
                outcome.clone(),
                meaning.clone(),
                ev.by.as_ref().unwrap().user.clone(),
            )),
            _ => None,
        })
        .expect("approval recorded");
    assert_eq!(
        approval,
        (
            "approve".to_string(),
            Some("approved".to_string()),
            "george".to_string()
        )
    );
    assert!(matches!(
        history.last().unwrap().kind,
        EventKind::Ended { .. }
    ));
    for who in [&c.alice, &c.george, &c.dora] {
        assert!(e.tasks_for(who).unwrap().is_empty());
    }
}

#[tokio::test]
async fn important_change_needs_evidence_and_a_new_version_approved_by_the_management_rep() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-change",
            start_data("management_rep"),
            Some(&c.alice),
        )
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.alice,
        None,
        application(true, "new_version"),
    )
    .await
    .unwrap();
    // §4.7.1: "sufficient evidence for important modifications".
    assert_eq!(open_steps(&inst), ["provide_evidence"]);
    assert_eq!(
        task_at(&inst, "provide_evidence").assignee.as_deref(),
        Some("alice")
    );
    // Only the applicant provides it, and at least one piece of evidence is needed.
    let err = refused(
        &e,
        &inst,
        "provide_evidence",
        &c.bob,
        None,
        json!({ "evidence": [{ "description": "x", "reference": "y" }] }),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let err = refused(
        &e,
        &inst,
        "provide_evidence",
        &c.alice,
        None,
        json!({ "evidence": [] }),
    )
    .await;
    assert!(matches!(err, EngineError::InvalidForm(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "provide_evidence",
        &c.alice,
        None,
        json!({ "evidence": [
            { "description": "Audit finding: old copies found in use", "reference": "IA-2026-04 item 3" }
        ] }),
    )
    .await
    .unwrap();
    // §4.7.2 with §3.2: the management representative approved it originally.
    assert_eq!(open_steps(&inst), ["approve_mr"]);
    assert!(e.tasks_for(&c.george).unwrap().is_empty());
    let err = refused(
        &e,
        &inst,
        "approve_mr",
        &c.george,
        Some("approve"),
        json!({}),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(&e, &inst, "approve_mr", &c.mary, Some("approve"), json!({}))
        .await
        .unwrap();
    // §4.7.1: many changes at once → a new version (§4.5.2: the office reissues it).
    assert_eq!(open_steps(&inst), ["issue_new_version"]);
    let err = refused(
        &e,
        &inst,
        "issue_new_version",
        &c.dora,
        None,
        json!({ "new_revision": "C/0", "release_date": "next week" }),
    )
    .await;
    assert!(matches!(err, EngineError::InvalidForm(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "issue_new_version",
        &c.dora,
        None,
        json!({ "new_revision": "C/0", "release_date": "2026-11-15" }),
    )
    .await
    .unwrap();
    let inst = distribute_and_register(&e, &c, inst).await;
    assert_eq!(inst.data["new_revision"], "C/0");
    assert_eq!(inst.data["evidence"][0]["reference"], "IA-2026-04 item 3");
}

/// §4.7.2: "If the original approver is unable to approve in a timely manner … approval can
/// be carried out by personnel at the same level or above who are familiar with the
/// business." Refused below the level, without a reason, or to someone without an approving
/// role; completed by the delegate on behalf of the approver.
#[tokio::test]
async fn approval_delegated_to_a_same_level_colleague_with_a_reason() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-change",
            start_data("general_manager"),
            Some(&c.alice),
        )
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.alice,
        None,
        application(false, "scratch"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["approve_gm"]);
    let before = e.store().dump().unwrap();

    // The management representative holds an allowed role but is below George's level.
    let err = delegate(
        &e,
        &inst,
        "approve_gm",
        &c.george,
        &c.mary,
        Some("Travelling"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    // A reason is required.
    let err = delegate(&e, &inst, "approve_gm", &c.george, &c.gina, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Invalid(_))),
        "{err:?}"
    );
    let err = delegate(&e, &inst, "approve_gm", &c.george, &c.gina, Some("   "))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Invalid(_))),
        "{err:?}"
    );
    // Senior enough, but holds no approving role.
    let err = delegate(
        &e,
        &inst,
        "approve_gm",
        &c.george,
        &c.eric,
        Some("Travelling"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    // Only someone who could take the task hands it on.
    let err = delegate(
        &e,
        &inst,
        "approve_gm",
        &c.mary,
        &c.gina,
        Some("Travelling"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    // Not to oneself.
    let err = delegate(
        &e,
        &inst,
        "approve_gm",
        &c.george,
        &c.george,
        Some("Travelling"),
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
        "a refused delegation wrote something"
    );
    assert_eq!(task_at(&inst, "approve_gm").delegated_to, None);

    let inst = delegate(
        &e,
        &inst,
        "approve_gm",
        &c.george,
        &c.gina,
        Some("On a customer visit until Friday"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["approve_gm"]);
    let t = task_at(&inst, "approve_gm");
    assert_eq!(t.delegated_to.as_deref(), Some("gina"));
    assert_eq!(t.delegated_by.as_deref(), Some("george"));
    // The task is now on Gina's list only, not on the role's.
    assert_eq!(e.tasks_for(&c.gina).unwrap().len(), 1);
    assert!(e.tasks_for(&c.george).unwrap().is_empty());
    // After delegating only the delegate may complete. George could have, so he hears the
    // task moved on (a conflict, as for anyone who comes second); Mary never could.
    let err = refused(
        &e,
        &inst,
        "approve_gm",
        &c.george,
        Some("approve"),
        json!({}),
    )
    .await;
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    let err = refused(&e, &inst, "approve_gm", &c.mary, Some("approve"), json!({})).await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "approve_gm",
        &c.gina,
        Some("approve"),
        json!({ "approval_comments": "Approved for George" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["make_partial_change"]);

    let history = e.history(inst.id).unwrap();
    let delegated = history
        .iter()
        .find_map(|ev| match &ev.kind {
            EventKind::TaskDelegated { to, reason, .. } => Some((
                ev.by.as_ref().unwrap().user.clone(),
                to.clone(),
                reason.clone(),
            )),
            _ => None,
        })
        .expect("the delegation is recorded");
    assert_eq!(
        delegated,
        (
            "george".to_string(),
            "gina".to_string(),
            Some("On a customer visit until Friday".to_string())
        )
    );
    let by = history
        .iter()
        .find_map(|ev| match &ev.kind {
            EventKind::TaskCompleted { step, .. } if step == "approve_gm" => ev.by.clone(),
            _ => None,
        })
        .expect("the approval is recorded");
    assert_eq!(by.user, "gina");
    assert_eq!(by.on_behalf_of.as_deref(), Some("george"));
    // An auditor asking what George did finds his delegation and the approval Gina signed
    // for him, with the meaning the procedure gives the signature; asking about Gina finds
    // the approval too.
    let by_actor = |who: &str| {
        let q = sopflow::store::AuditQuery {
            actor: Some(who.into()),
            procedure: Some("document-change".into()),
            ..Default::default()
        };
        e.audit(&q, None, 100)
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.event.kind.name())
            .collect::<Vec<_>>()
    };
    assert_eq!(by_actor("george"), ["task_delegated", "task_completed"]);
    assert_eq!(by_actor("gina"), ["task_completed"]);
    let approval = e
        .audit(
            &sopflow::store::AuditQuery {
                actor: Some("gina".into()),
                ..Default::default()
            },
            None,
            1,
        )
        .unwrap()
        .items
        .remove(0);
    assert!(
        matches!(&approval.event.kind, EventKind::TaskCompleted { meaning: Some(m), .. } if m == "approved"),
        "{:?}",
        approval.event
    );

    let inst = complete(
        &e,
        &inst,
        "make_partial_change",
        &c.dora,
        None,
        json!({ "new_revision": "B/2", "changed_pages": "12" }),
    )
    .await
    .unwrap();
    distribute_and_register(&e, &c, inst).await;
}

/// The management representative's approval may go up to a general manager (level 5 ≥ 4).
#[tokio::test]
async fn management_rep_delegates_upwards_to_a_general_manager() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-change",
            start_data("management_rep"),
            Some(&c.alice),
        )
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.alice,
        None,
        application(false, "page_change"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["approve_mr"]);
    // A junior management representative is below Mary's level.
    let err = delegate(&e, &inst, "approve_mr", &c.mary, &c.mark, Some("Leave"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let inst = delegate(
        &e,
        &inst,
        "approve_mr",
        &c.mary,
        &c.george,
        Some("On leave"),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "approve_mr",
        &c.george,
        Some("reject"),
        json!({ "approval_comments": "Not needed" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some("rejected"));
    let stored = assert_folds(&e, inst.id);
    assert_eq!(stored, inst);
    let by = e
        .history(inst.id)
        .unwrap()
        .iter()
        .find_map(|ev| match &ev.kind {
            EventKind::TaskCompleted { step, .. } if step == "approve_mr" => ev.by.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (by.user.as_str(), by.on_behalf_of.as_deref()),
        ("george", Some("mary"))
    );
}

#[tokio::test]
async fn rejected_change_ends_without_revision() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-change",
            start_data("general_manager"),
            Some(&c.alice),
        )
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.alice,
        None,
        application(true, "page_change"),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "provide_evidence",
        &c.alice,
        None,
        json!({ "evidence": [{ "description": "Customer request", "reference": "Letter 2026-10-30" }] }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["approve_gm"]);
    // Three outcomes: one must be chosen.
    let err = refused(&e, &inst, "approve_gm", &c.george, None, json!({})).await;
    assert!(matches!(err, EngineError::Invalid(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "approve_gm",
        &c.george,
        Some("reject"),
        json!({ "approval_comments": "The current text is adequate" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some("rejected"));
    assert!(inst.tasks.is_empty());
    assert!(inst.data.get("new_revision").is_none());
    let stored = assert_folds(&e, inst.id);
    assert_eq!(stored, inst);
    assert!(e.tasks_for(&c.dora).unwrap().is_empty());
}

/// Returned for rework: back to the applicant, who changes the application; the second
/// round goes on to the approver again.
#[tokio::test]
async fn returned_for_rework_loops_back_to_the_applicant() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-change",
            start_data("management_rep"),
            Some(&c.alice),
        )
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.alice,
        None,
        application(false, "page_change"),
    )
    .await
    .unwrap();
    let first_apply = e
        .history(inst.id)
        .unwrap()
        .iter()
        .find_map(|ev| match &ev.kind {
            EventKind::TaskOpened { task, step, .. } if step == "apply" => Some(*task),
            _ => None,
        })
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "approve_mr",
        &c.mary,
        Some("rework"),
        json!({ "approval_comments": "Too many pages change: issue a new version" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.status, Status::Running);
    assert_eq!(open_steps(&inst), ["apply"]);
    let again = task_at(&inst, "apply");
    assert_ne!(
        again.id, first_apply,
        "a new task, not the old one reopened"
    );
    assert_eq!(again.assignee.as_deref(), Some("alice"));
    assert_eq!(e.tasks_for(&c.alice).unwrap().len(), 1);
    let err = refused(
        &e,
        &inst,
        "apply",
        &c.bob,
        None,
        application(false, "new_version"),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.alice,
        None,
        application(false, "new_version"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["approve_mr"]);
    let inst = complete(&e, &inst, "approve_mr", &c.mary, Some("approve"), json!({}))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["issue_new_version"]);
    let inst = complete(
        &e,
        &inst,
        "issue_new_version",
        &c.dora,
        None,
        json!({ "new_revision": "C/0", "release_date": "2026-12-01" }),
    )
    .await
    .unwrap();
    let inst = distribute_and_register(&e, &c, inst).await;
    assert_eq!(inst.done_by["apply"], ["alice", "alice"]);
    assert_eq!(inst.done_by["approve_mr"], ["mary", "mary"]);
}

/// Every rejection leaves the store byte-for-byte unchanged.
#[tokio::test]
async fn rejections_change_nothing() {
    let (e, _clock) = engine().await;
    let c = cast();
    // Starting needs the staff role, and complete start data.
    let before = e.store().dump().unwrap();
    let err = e
        .start(
            "document-change",
            start_data("general_manager"),
            Some(&c.dora),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let mut bad = start_data("board");
    bad.remove("applicant");
    let err = e
        .start("document-change", bad, Some(&c.alice))
        .await
        .unwrap_err();
    let ServiceError::Engine(EngineError::InvalidForm(problems)) = err else {
        panic!("expected an invalid form, got {err:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert!(
        fields.contains(&"applicant") && fields.contains(&"document_type"),
        "{problems:?}"
    );
    assert_eq!(before, e.store().dump().unwrap());

    let inst = e
        .start(
            "document-change",
            start_data("general_manager"),
            Some(&c.alice),
        )
        .await
        .unwrap();
    let before = e.store().dump().unwrap();
    // Reasons too short, unknown change method, missing `important`.
    let err = complete(
        &e,
        &inst,
        "apply",
        &c.alice,
        None,
        json!({ "change_reason": "typo", "change_content": "Fix the typo on page 3", "change_method": "rewrite" }),
    )
    .await
    .unwrap_err();
    let ServiceError::Engine(EngineError::InvalidForm(problems)) = err else {
        panic!("expected an invalid form, got {err:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for f in ["change_method", "change_reason", "important"] {
        assert!(fields.contains(&f), "{f} missing from {problems:?}");
    }
    // Not the applicant; a claim by someone else; no outcome on a one-outcome step is fine,
    // an unknown one is not.
    let err = complete(
        &e,
        &inst,
        "apply",
        &c.bob,
        None,
        application(false, "scratch"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let t = task_at(&inst, "apply");
    let err = e
        .execute(inst.id, Command::Claim { task: t.id }, Some(&c.bob))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let err = complete(
        &e,
        &inst,
        "apply",
        &c.alice,
        Some("approve"),
        application(false, "scratch"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Invalid(_))),
        "{err:?}"
    );
    // The application step may not be delegated.
    let err = e
        .execute(
            inst.id,
            Command::Delegate {
                task: t.id,
                to: c.bob.clone(),
                reason: Some("Busy".into()),
            },
            Some(&c.alice),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    // Only the office or the management representative withdraws an application.
    let err = e
        .execute(
            inst.id,
            Command::Cancel {
                reason: "No longer needed".into(),
            },
            Some(&c.alice),
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

    // Further on: the distribution record needs at least one recipient, each fully filled in.
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.alice,
        None,
        application(false, "scratch"),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "approve_gm",
        &c.george,
        Some("approve"),
        json!({}),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "make_partial_change",
        &c.dora,
        None,
        json!({ "new_revision": "B/2", "changed_pages": "3" }),
    )
    .await
    .unwrap();
    let err = refused(
        &e,
        &inst,
        "distribute",
        &c.dora,
        None,
        json!({ "server_updated": true, "distribution_record": [] }),
    )
    .await;
    assert!(matches!(err, EngineError::InvalidForm(_)), "{err:?}");
    let err = refused(
        &e,
        &inst,
        "distribute",
        &c.dora,
        None,
        json!({ "server_updated": true, "distribution_record": [{ "department": "sales", "recipient": "bob" }] }),
    )
    .await;
    assert!(matches!(err, EngineError::InvalidForm(_)), "{err:?}");
    let err = refused(&e, &inst, "distribute", &c.alice, None, distribution()).await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    // Cancelled by the office: nothing more can be done.
    let cancelled = e
        .execute(
            inst.id,
            Command::Cancel {
                reason: "Superseded by CR-2026-032".into(),
            },
            Some(&c.dora),
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    assert!(e.tasks_for(&c.dora).unwrap().is_empty());
    let err = refused(&e, &inst, "distribute", &c.dora, None, distribution()).await;
    assert!(matches!(err, EngineError::Ended(_)), "{err:?}");
    let stored = assert_folds(&e, inst.id);
    assert_eq!(stored, cancelled);
}

/// §3.2 and §3.1: a change to the Service System Manual is reviewed by the management
/// representative and then approved by the general manager; nobody approves their own
/// application, whatever roles they hold.
#[tokio::test]
async fn the_manual_is_reviewed_then_approved_and_nobody_approves_their_own_change() {
    let (e, _clock) = engine().await;
    let c = cast();
    // Gina, a general manager who is also staff, applies for a change to the Manual herself.
    let gina = person(
        "gina",
        "general_management",
        &["general_manager", "staff"],
        5,
    );
    let mut data = start_data("manual");
    data.insert("applicant".into(), json!("gina"));
    let inst = e.start("document-change", data, Some(&gina)).await.unwrap();
    let inst = complete(
        &e,
        &inst,
        "apply",
        &gina,
        None,
        application(false, "new_version"),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["review_manual"]);
    // Sending it back needs the review comments.
    let err = refused(
        &e,
        &inst,
        "review_manual",
        &c.mary,
        Some("rework"),
        json!({}),
    )
    .await;
    assert!(
        matches!(&err, EngineError::InvalidForm(p) if p[0].field == "review_comments"),
        "{err:?}"
    );
    let inst = complete(
        &e,
        &inst,
        "review_manual",
        &c.mary,
        Some("forward"),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["approve_gm"]);
    // Gina holds the approving role but applied: separation of duties refuses her.
    let err = refused(&e, &inst, "approve_gm", &gina, Some("approve"), json!({})).await;
    assert!(
        matches!(&err, EngineError::Forbidden(m) if m.contains("separation of duties")),
        "{err:?}"
    );
    let inst = complete(
        &e,
        &inst,
        "approve_gm",
        &c.george,
        Some("approve"),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["issue_new_version"]);
}
