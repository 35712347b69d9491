//! The document-control, laws-and-regulations, service-objective and assessment workflows of
//! seed 002 driven through the engine: new-document release (Document Control §3.1–§3.4,
//! §4.4, §4.6.2 a), distribution and recovery of controlled copies (§4.6.1, §4.9), borrowing
//! and copying (§4.6.2 b–d), reissue of damaged or lost copies (§4.6.2 e–f), document review
//! (§4.8), the yearly laws-and-regulations list (Laws and Regulations §5.2–§5.3), the annual
//! service objectives (Supervision and Management §4.1.3; Service Objective Program §6) and
//! the monthly work-log sampling (Supervision and Management §4.2). Main paths, rework and
//! rejection loops, the refusals that must leave the store untouched, separation of duties,
//! rules on the person, windows and recurring starts.

mod common;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{json, Value};
use sopflow::engine::decide::EngineError;
use sopflow::engine::instance::{Actor, EventKind, Instance, Status};
use sopflow::engine::service::{Engine, ServiceError};
use sopflow::store::memory::MemoryStore;
use sopflow::store::{InstanceId, Store};

struct Cast {
    /// Preparer / borrower / reviewer, quality department.
    pia: Actor,
    /// An employee of the sales department.
    sam: Actor,
    /// General manager.
    george: Actor,
    /// The executive deputy: general manager and management representative.
    zoe: Actor,
    /// Management representative.
    mary: Actor,
    /// A second management representative.
    mark: Actor,
    /// Office document administrator.
    dora: Actor,
    /// Office manager (level 3).
    olga: Actor,
    /// A second office manager (level 3).
    omar: Actor,
    /// Office clerk (level 2).
    oscar: Actor,
    /// Holds the office role but works in sales (level 3).
    otis: Actor,
    /// Follow-up personnel.
    fred: Actor,
    /// Sales department.
    sid: Actor,
    /// Members of the Service System Management Committee.
    cora: Actor,
    carl: Actor,
    /// Marketing manager.
    mike: Actor,
}

fn cast() -> Cast {
    Cast {
        pia: person("pia", "quality", &["staff"], 2),
        sam: person("sam", "sales", &["staff"], 2),
        george: person("george", "general_management", &["general_manager"], 5),
        zoe: person(
            "zoe",
            "general_management",
            &["general_manager", "management_rep", "staff"],
            5,
        ),
        mary: person(
            "mary",
            "general_management",
            &["management_rep", "staff"],
            4,
        ),
        mark: person("mark", "general_management", &["management_rep"], 4),
        dora: person("dora", "office", &["document_admin", "staff"], 2),
        olga: person("olga", "office", &["office", "staff"], 3),
        omar: person("omar", "office", &["office"], 3),
        oscar: person("oscar", "office", &["office"], 2),
        otis: person("otis", "sales", &["office"], 3),
        fred: person("fred", "after_sales", &["follow_up"], 1),
        sid: person("sid", "sales", &["sales"], 3),
        cora: person("cora", "quality", &["service_committee"], 3),
        carl: person("carl", "sales", &["service_committee"], 3),
        mike: person("mike", "marketing", &["marketing_manager"], 3),
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn reload(e: &Engine<MemoryStore>, id: InstanceId) -> Instance {
    e.instance(id).unwrap().expect("instance stored")
}

fn instances_of(e: &Engine<MemoryStore>, procedure: &str) -> Vec<InstanceId> {
    e.instances(Some(procedure), None, None, 1000)
        .unwrap()
        .items
}

fn forbidden(err: &EngineError) -> bool {
    matches!(err, EngineError::Forbidden(_))
}

fn invalid_field(err: &EngineError, field: &str) -> bool {
    matches!(err, EngineError::InvalidForm(p) if p.iter().any(|p| p.field == field))
}

fn separation(err: &EngineError) -> bool {
    matches!(err, EngineError::Forbidden(m) if m.contains("separation of duties"))
}

/// The `notified` events of an instance: (step, role, people).
fn notes(e: &Engine<MemoryStore>, id: InstanceId) -> Vec<(String, String, Vec<String>)> {
    e.history(id)
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

// ---------------------------------------------------------------------------------------------
// document-release
// ---------------------------------------------------------------------------------------------

fn release_data(
    document_type: &str,
    preparer: &str,
    department: &str,
) -> serde_json::Map<String, Value> {
    obj(json!({
        "document_number": "CX-09",
        "document_title": "Document Borrowing Procedure",
        "document_type": document_type,
        "preparer": preparer,
        "preparing_department": department,
    }))
}

fn draft(publish_online: bool) -> Value {
    json!({
        "content_summary": "How controlled documents are borrowed and copied",
        "proposed_scope": "Sales and quality, one copy each",
        "publish_online": publish_online,
    })
}

fn registration(seal: bool) -> Value {
    json!({
        "revision_status": "A/0",
        "release_date": "2026-11-05",
        "controlled_seal": seal,
        "document_list_updated": true,
    })
}

fn record(people: &[(&str, &str)]) -> Value {
    let rows: Vec<Value> = people
        .iter()
        .enumerate()
        .map(|(n, (who, dept))| {
            json!({ "department": dept, "recipient": who, "distribution_number": format!("D-{:02}", n + 1) })
        })
        .collect();
    json!({ "distribution_record": rows })
}

/// Runs a `controlled-copy-distribution` child of `issue` from the record to the last
/// signature, with sam and pia as recipients.
async fn run_distribution(e: &Engine<MemoryStore>, c: &Cast, child: Instance) -> Instance {
    assert_eq!(open_steps(&child), ["prepare_record"]);
    let child = complete(
        e,
        &child,
        "prepare_record",
        &c.dora,
        None,
        record(&[("sam", "sales"), ("pia", "quality")]),
    )
    .await
    .unwrap();
    // §3.4: the management representative approves the scope.
    let err = refused(
        e,
        &child,
        "approve_scope",
        &c.dora,
        Some("approve"),
        empty(),
    )
    .await;
    assert!(forbidden(&err), "{err:?}");
    let child = complete(
        e,
        &child,
        "approve_scope",
        &c.mary,
        Some("approve"),
        empty(),
    )
    .await
    .unwrap();
    let child = complete(
        e,
        &child,
        "distribute",
        &c.dora,
        None,
        json!({ "controlled_seal": true }),
    )
    .await
    .unwrap();
    assert_eq!(task_at(&child, "confirm_receipt").people, ["sam", "pia"]);
    let child = complete(e, &child, "confirm_receipt", &c.sam, None, empty())
        .await
        .unwrap();
    assert_eq!(
        open_steps(&child),
        ["confirm_receipt"],
        "pia has not signed"
    );
    let child = complete(e, &child, "confirm_receipt", &c.pia, None, empty())
        .await
        .unwrap();
    assert_eq!(child.end_step.as_deref(), Some("distributed"));
    child
}

fn only_child(parent: &Instance, step: &str) -> InstanceId {
    let pending: Vec<InstanceId> = parent.children[step].pending.keys().copied().collect();
    assert_eq!(pending.len(), 1, "one child at `{step}`");
    pending[0]
}

#[tokio::test]
async fn a_procedure_is_approved_by_the_general_manager_published_and_distributed() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-release",
            release_data("procedure", "pia", "quality"),
            Some(&c.pia),
        )
        .await
        .unwrap();
    assert_eq!(task_at(&inst, "prepare").assignee.as_deref(), Some("pia"));
    let err = refused(&e, &inst, "prepare", &c.sam, None, draft(true)).await;
    assert!(forbidden(&err), "{err:?}");
    let inst = complete(&e, &inst, "prepare", &c.pia, None, draft(true))
        .await
        .unwrap();
    // §3.1: the general manager releases procedural documents; the management rep may not.
    assert_eq!(open_steps(&inst), ["approve_gm"]);
    let err = refused(&e, &inst, "approve_gm", &c.mary, Some("approve"), empty()).await;
    assert!(forbidden(&err), "{err:?}");
    let inst = complete(&e, &inst, "approve_gm", &c.george, Some("approve"), empty())
        .await
        .unwrap();
    // §4.2: no registration without the controlled seal.
    let err = refused(&e, &inst, "register", &c.dora, None, registration(false)).await;
    assert!(invalid_field(&err, "controlled_seal"), "{err:?}");
    let inst = complete(&e, &inst, "register", &c.dora, None, registration(true))
        .await
        .unwrap();
    // §4.6.2 a: the office leadership approves publication: an office manager, not a clerk,
    // nor a level-3 holder of the office role from another department.
    assert_eq!(open_steps(&inst), ["approve_publication"]);
    let comments = json!({ "publication_comments": "Upload to /procedures as PDF" });
    for who in [&c.oscar, &c.otis] {
        let err = refused(
            &e,
            &inst,
            "approve_publication",
            who,
            Some("approve"),
            comments.clone(),
        )
        .await;
        assert!(forbidden(&err), "{}: {err:?}", who.id);
    }
    let err = refused(
        &e,
        &inst,
        "approve_publication",
        &c.olga,
        Some("approve"),
        empty(),
    )
    .await;
    assert!(invalid_field(&err, "publication_comments"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "approve_publication",
        &c.olga,
        Some("approve"),
        comments,
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "publish",
        &c.dora,
        None,
        json!({ "server_reference": "cms://procedures/CX-09", "version_and_date_shown": true }),
    )
    .await
    .unwrap();
    assert!(notes(&e, inst.id)
        .iter()
        .any(|(step, role, _)| step == "publish" && role == "document_admin"));
    // §3.4, §4.6.1: the paper copies go out through the distribution procedure; the release
    // waits for it.
    assert!(inst.tasks.is_empty());
    assert_eq!(inst.status, Status::Running);
    let child = reload(&e, only_child(&inst, "distribute"));
    assert_eq!(child.procedure, "controlled-copy-distribution");
    assert_eq!(child.data["current_revision"], "A/0");
    assert_eq!(child.data["movement"], "issue");
    run_distribution(&e, &c, child).await;
    let inst = reload(&e, inst.id);
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some("released"));
    assert_eq!(inst.data["distribution"][0]["outcome"], "distributed");
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn the_manual_is_reviewed_reworked_and_released_by_someone_who_did_not_review_it() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-release",
            release_data("manual", "pia", "quality"),
            Some(&c.pia),
        )
        .await
        .unwrap();
    let inst = complete(&e, &inst, "prepare", &c.pia, None, draft(false))
        .await
        .unwrap();
    // §3.2: the management representative reviews the Manual first.
    assert_eq!(open_steps(&inst), ["review_manual"]);
    let err = refused(&e, &inst, "review_manual", &c.zoe, Some("rework"), empty()).await;
    assert!(invalid_field(&err, "review_comments"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "review_manual",
        &c.zoe,
        Some("rework"),
        json!({ "review_comments": "Add the numbering rules" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["prepare"]);
    let inst = complete(&e, &inst, "prepare", &c.pia, None, draft(false))
        .await
        .unwrap();
    let inst = complete(&e, &inst, "review_manual", &c.zoe, Some("forward"), empty())
        .await
        .unwrap();
    // zoe reviewed it: as general manager she may not also release it.
    let err = refused(&e, &inst, "approve_gm", &c.zoe, Some("approve"), empty()).await;
    assert!(separation(&err), "{err:?}");
    let inst = complete(&e, &inst, "approve_gm", &c.george, Some("approve"), empty())
        .await
        .unwrap();
    // Not to be published online: straight to the paper distribution.
    let inst = complete(&e, &inst, "register", &c.dora, None, registration(true))
        .await
        .unwrap();
    assert!(inst.tasks.is_empty());
    let child = reload(&e, only_child(&inst, "distribute"));
    assert_eq!(open_steps(&child), ["prepare_record"]);
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn an_institutional_document_is_rejected_by_the_management_rep_who_did_not_prepare_it() {
    let (e, _clock) = engine().await;
    let c = cast();
    let data = release_data("management", "mary", "general_management");
    // The preparer must belong to the preparing department.
    let inst = e
        .start(
            "document-release",
            release_data("management", "pia", "sales"),
            Some(&c.pia),
        )
        .await
        .unwrap();
    let err = refused(&e, &inst, "prepare", &c.pia, None, draft(false)).await;
    assert!(forbidden(&err), "{err:?}");
    let inst = e
        .start("document-release", data, Some(&c.mary))
        .await
        .unwrap();
    let inst = complete(&e, &inst, "prepare", &c.mary, None, draft(true))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["approve_mr"]);
    let err = refused(&e, &inst, "approve_mr", &c.mary, Some("approve"), empty()).await;
    assert!(separation(&err), "{err:?}");
    let err = refused(&e, &inst, "approve_mr", &c.mark, Some("reject"), empty()).await;
    assert!(invalid_field(&err, "approval_comments"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "approve_mr",
        &c.mark,
        Some("reject"),
        json!({ "approval_comments": "Already covered by M-03" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some("rejected"));
    assert!(!inst.data.contains_key("revision_status"));
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn a_refused_publication_still_distributes_the_paper_copies() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-release",
            release_data("record", "pia", "quality"),
            Some(&c.pia),
        )
        .await
        .unwrap();
    let inst = complete(&e, &inst, "prepare", &c.pia, None, draft(true))
        .await
        .unwrap();
    let inst = complete(&e, &inst, "approve_mr", &c.mary, Some("approve"), empty())
        .await
        .unwrap();
    let inst = complete(&e, &inst, "register", &c.dora, None, registration(true))
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "approve_publication",
        &c.olga,
        Some("refuse"),
        json!({ "publication_comments": "Records stay on paper" }),
    )
    .await
    .unwrap();
    assert!(inst.tasks.is_empty());
    let child = reload(&e, only_child(&inst, "distribute"));
    assert_eq!(child.procedure, "controlled-copy-distribution");
    assert!(!e
        .history(inst.id)
        .unwrap()
        .iter()
        .any(|ev| matches!(&ev.kind, EventKind::TaskCompleted { step, .. } if step == "publish")));
}

// ---------------------------------------------------------------------------------------------
// controlled-copy-distribution
// ---------------------------------------------------------------------------------------------

fn copy_data(movement: &str) -> serde_json::Map<String, Value> {
    obj(json!({
        "document_number": "CX-05",
        "document_title": "Document Control Procedure",
        "current_revision": "B/1",
        "movement": movement,
    }))
}

#[tokio::test]
async fn copies_go_out_within_the_approved_scope_and_every_recipient_signs() {
    let (e, _clock) = engine().await;
    let c = cast();
    // Only the office document administrator distributes (§4.6.1 a).
    let before = e.store().dump().unwrap();
    let err = e
        .start(
            "controlled-copy-distribution",
            copy_data("issue"),
            Some(&c.sam),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    assert_eq!(before, e.store().dump().unwrap());
    // An administrator who is also a management representative prepares the record.
    let dm = person("dm", "office", &["document_admin", "management_rep"], 4);
    let inst = e
        .start(
            "controlled-copy-distribution",
            copy_data("issue"),
            Some(&dm),
        )
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "prepare_record",
        &dm,
        None,
        record(&[("sam", "sales")]),
    )
    .await
    .unwrap();
    // …and may not approve the scope of their own record (§3.4).
    let err = refused(&e, &inst, "approve_scope", &dm, Some("approve"), empty()).await;
    assert!(separation(&err), "{err:?}");
    let err = refused(&e, &inst, "approve_scope", &c.mary, Some("rework"), empty()).await;
    assert!(invalid_field(&err, "scope_comments"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "approve_scope",
        &c.mary,
        Some("rework"),
        json!({ "scope_comments": "Quality needs a copy too" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["prepare_record"]);
    let inst = complete(
        &e,
        &inst,
        "prepare_record",
        &c.dora,
        None,
        record(&[("sam", "sales"), ("pia", "quality")]),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "approve_scope",
        &c.mary,
        Some("approve"),
        empty(),
    )
    .await
    .unwrap();
    let err = refused(
        &e,
        &inst,
        "distribute",
        &c.dora,
        None,
        json!({ "controlled_seal": false }),
    )
    .await;
    assert!(invalid_field(&err, "controlled_seal"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "distribute",
        &c.dora,
        None,
        json!({ "controlled_seal": true }),
    )
    .await
    .unwrap();
    // §4.6.1 b: each recipient signs for themselves; the administrator cannot sign for them.
    assert_eq!(task_at(&inst, "confirm_receipt").people, ["sam", "pia"]);
    let err = refused(&e, &inst, "confirm_receipt", &c.dora, None, empty()).await;
    assert!(forbidden(&err), "{err:?}");
    assert!(e
        .notifications_for(&c.pia, 10)
        .unwrap()
        .iter()
        .any(|n| n.message.contains("controlled copy has been issued")));
    let inst = complete(&e, &inst, "confirm_receipt", &c.pia, None, empty())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["confirm_receipt"], "sam has not signed");
    let inst = complete(&e, &inst, "confirm_receipt", &c.sam, None, empty())
        .await
        .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("distributed"));
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn recovered_copies_are_signed_back_by_their_holders_and_stamped() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "controlled-copy-distribution",
            copy_data("recover"),
            Some(&c.dora),
        )
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["recover"]);
    let inst = complete(
        &e,
        &inst,
        "recover",
        &c.dora,
        None,
        json!({ "recovery_record": [
            { "department": "sales", "holder": "sam", "distribution_number": "D-07" },
            { "department": "quality", "holder": "pia", "distribution_number": "D-08" }
        ] }),
    )
    .await
    .unwrap();
    assert_eq!(task_at(&inst, "confirm_return").people, ["sam", "pia"]);
    let inst = complete(&e, &inst, "confirm_return", &c.sam, None, empty())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["confirm_return"]);
    let inst = complete(&e, &inst, "confirm_return", &c.pia, None, empty())
        .await
        .unwrap();
    let err = refused(
        &e,
        &inst,
        "stamp_recovered",
        &c.dora,
        None,
        json!({ "returned_copies": [{ "distribution_number": "D-07", "disposition": "shredded" }] }),
    )
    .await;
    assert!(matches!(err, EngineError::InvalidForm(_)), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "stamp_recovered",
        &c.dora,
        None,
        json!({ "returned_copies": [
            { "distribution_number": "D-07", "disposition": "invalidated" },
            { "distribution_number": "D-08", "disposition": "invalid_retention",
              "retention_reason": "Evidence for the supplier audit" }
        ] }),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("recovered"));
    assert_folds(&e, inst.id);
}

// ---------------------------------------------------------------------------------------------
// document-borrowing
// ---------------------------------------------------------------------------------------------

fn borrow_data(borrower: &str, department: &str) -> serde_json::Map<String, Value> {
    obj(json!({
        "document_number": "CX-05",
        "document_title": "Document Control Procedure",
        "borrower": borrower,
        "using_department": department,
    }))
}

fn borrow_request(return_by: &str) -> Value {
    json!({
        "purpose": "training",
        "purpose_details": "New staff training on document control",
        "copies_requested": 2,
        "return_by": return_by,
    })
}

#[tokio::test]
async fn a_borrowing_without_approval_is_lent_and_returned() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-borrowing",
            borrow_data("pia", "quality"),
            Some(&c.pia),
        )
        .await
        .unwrap();
    let err = refused(
        &e,
        &inst,
        "apply",
        &c.sam,
        None,
        borrow_request("2026-11-20"),
    )
    .await;
    assert!(forbidden(&err), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.pia,
        None,
        borrow_request("2026-11-20"),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "register",
        &c.dora,
        None,
        json!({ "record_number": "BC-2026-14", "needs_mr_approval": false }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["hand_over"]);
    let inst = complete(
        &e,
        &inst,
        "hand_over",
        &c.dora,
        None,
        json!({ "copies_made": 2, "copy_numbers": "C-01, C-02" }),
    )
    .await
    .unwrap();
    // Due at the end of the return day (00:00 Asia/Shanghai the next day).
    let t = task_at(&inst, "return_document");
    assert_eq!(t.assignee.as_deref(), Some("pia"));
    assert_eq!(t.due, Some(at("2026-11-20T16:00:00Z")));
    let inst = complete(&e, &inst, "return_document", &c.pia, None, empty())
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "check_return",
        &c.dora,
        Some("complete"),
        empty(),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("returned"));
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn a_borrower_from_another_department_cannot_apply_for_it() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-borrowing",
            borrow_data("pia", "sales"),
            Some(&c.pia),
        )
        .await
        .unwrap();
    let err = refused(
        &e,
        &inst,
        "apply",
        &c.pia,
        None,
        borrow_request("2026-11-20"),
    )
    .await;
    assert!(forbidden(&err), "{err:?}");
}

#[tokio::test]
async fn the_management_rep_approval_is_not_given_by_the_borrower_and_a_refusal_needs_a_reason() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start(
            "document-borrowing",
            borrow_data("mary", "general_management"),
            Some(&c.mary),
        )
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.mary,
        None,
        borrow_request("2026-11-20"),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "register",
        &c.dora,
        None,
        json!({ "record_number": "BC-2026-15", "needs_mr_approval": true,
                "approval_reason": "Copies for an outside trainer" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["approve_mr"]);
    let err = refused(&e, &inst, "approve_mr", &c.mary, Some("approve"), empty()).await;
    assert!(separation(&err), "{err:?}");
    let err = refused(&e, &inst, "approve_mr", &c.mark, Some("refuse"), empty()).await;
    assert!(invalid_field(&err, "refusal_reason"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "approve_mr",
        &c.mark,
        Some("refuse"),
        json!({ "refusal_reason": "Controlled documents are not given to outside trainers" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("refused"));
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn a_late_return_tells_the_office_and_an_incomplete_return_is_recorded() {
    let (e, clock) = engine().await;
    let c = cast();
    // A borrower who is also a document administrator may not check her own return.
    let dana = person("dana", "office", &["staff", "document_admin"], 2);
    let inst = e
        .start(
            "document-borrowing",
            borrow_data("dana", "office"),
            Some(&dana),
        )
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "apply",
        &dana,
        None,
        borrow_request("2026-11-10"),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "register",
        &c.dora,
        None,
        json!({ "record_number": "BC-2026-16", "needs_mr_approval": false }),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "hand_over",
        &c.dora,
        None,
        json!({ "copies_made": 0 }),
    )
    .await
    .unwrap();
    let late = |e: &Engine<MemoryStore>| {
        notes(e, inst.id)
            .iter()
            .any(|(step, role, _)| step == "return_document" && role == "document_admin")
    };
    e.advance_clock(&clock, at("2026-11-10T15:59:00Z"))
        .await
        .unwrap();
    assert!(!late(&e), "not late before the end of the return day");
    e.advance_clock(&clock, at("2026-11-10T16:01:00Z"))
        .await
        .unwrap();
    assert!(late(&e), "the office is told when the return is late");
    let inst = reload(&e, inst.id);
    let inst = complete(&e, &inst, "return_document", &dana, None, empty())
        .await
        .unwrap();
    let err = refused(&e, &inst, "check_return", &dana, Some("complete"), empty()).await;
    assert!(separation(&err), "{err:?}");
    let err = refused(
        &e,
        &inst,
        "check_return",
        &c.dora,
        Some("incomplete"),
        empty(),
    )
    .await;
    assert!(invalid_field(&err, "shortfall"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "check_return",
        &c.dora,
        Some("incomplete"),
        json!({ "shortfall": "Pages 3-4 scribbled on; dana held responsible" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("returned_incomplete"));
    assert_folds(&e, inst.id);
}

// ---------------------------------------------------------------------------------------------
// copy-reissue
// ---------------------------------------------------------------------------------------------

fn reissue_data(applicant: &str, department: &str) -> serde_json::Map<String, Value> {
    obj(json!({
        "document_number": "CX-05",
        "document_title": "Document Control Procedure",
        "distribution_number": "D-07",
        "holder_department": department,
        "applicant": applicant,
    }))
}

#[tokio::test]
async fn a_damaged_copy_is_reissued_by_the_office_under_its_original_number() {
    let (e, _clock) = engine().await;
    let c = cast();
    // The sales department's document administrator.
    let lily = person("lily", "sales", &["staff", "document_admin"], 2);
    let inst = e
        .start("copy-reissue", reissue_data("lily", "sales"), Some(&lily))
        .await
        .unwrap();
    let err = refused(&e, &inst, "apply", &lily, Some("damaged"), empty()).await;
    assert!(invalid_field(&err, "damage_description"), "{err:?}");
    let err = refused(
        &e,
        &inst,
        "apply",
        &lily,
        Some("damaged"),
        json!({ "damage_description": "Water damage, pages 2-6", "damaged_copy_handed_in": false }),
    )
    .await;
    assert!(invalid_field(&err, "damaged_copy_handed_in"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "apply",
        &lily,
        Some("damaged"),
        json!({ "damage_description": "Water damage, pages 2-6", "damaged_copy_handed_in": true }),
    )
    .await
    .unwrap();
    // No approval for a damaged copy; the office issues it, not a department's administrator.
    assert_eq!(open_steps(&inst), ["reissue"]);
    let err = refused(
        &e,
        &inst,
        "reissue",
        &lily,
        None,
        json!({ "marked_reissue": true }),
    )
    .await;
    assert!(forbidden(&err), "{err:?}");
    let err = refused(
        &e,
        &inst,
        "reissue",
        &c.dora,
        None,
        json!({ "marked_reissue": false }),
    )
    .await;
    assert!(invalid_field(&err, "marked_reissue"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "reissue",
        &c.dora,
        None,
        json!({ "marked_reissue": true, "damaged_copy_invalidated": true }),
    )
    .await
    .unwrap();
    assert_eq!(
        task_at(&inst, "confirm_receipt").assignee.as_deref(),
        Some("lily")
    );
    let inst = complete(&e, &inst, "confirm_receipt", &lily, None, empty())
        .await
        .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("reissued"));
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn a_lost_copy_needs_a_statement_and_another_office_managers_approval() {
    let (e, _clock) = engine().await;
    let c = cast();
    // The office manager lost her own copy.
    let inst = e
        .start(
            "copy-reissue",
            reissue_data("olga", "office"),
            Some(&c.olga),
        )
        .await
        .unwrap();
    let err = refused(&e, &inst, "apply", &c.olga, Some("lost"), empty()).await;
    assert!(invalid_field(&err, "loss_statement"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.olga,
        Some("lost"),
        json!({ "loss_statement": "Left in a customer's workshop on 28 October" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["approve_loss"]);
    // Not by herself, not by an office clerk, not by an "office" role holder from sales.
    let err = refused(&e, &inst, "approve_loss", &c.olga, Some("approve"), empty()).await;
    assert!(separation(&err), "{err:?}");
    for who in [&c.oscar, &c.otis] {
        let err = refused(&e, &inst, "approve_loss", who, Some("approve"), empty()).await;
        assert!(forbidden(&err), "{}: {err:?}", who.id);
    }
    let inst = complete(&e, &inst, "approve_loss", &c.omar, Some("approve"), empty())
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "reissue",
        &c.dora,
        None,
        json!({ "marked_reissue": true }),
    )
    .await
    .unwrap();
    let inst = complete(&e, &inst, "confirm_receipt", &c.olga, None, empty())
        .await
        .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("reissued"));
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn a_refused_reissue_ends_without_a_new_copy() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start("copy-reissue", reissue_data("sam", "sales"), Some(&c.sam))
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "apply",
        &c.sam,
        Some("lost"),
        json!({ "loss_statement": "Cannot find it" }),
    )
    .await
    .unwrap();
    let err = refused(&e, &inst, "approve_loss", &c.olga, Some("refuse"), empty()).await;
    assert!(invalid_field(&err, "refusal_reason"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "approve_loss",
        &c.olga,
        Some("refuse"),
        json!({ "refusal_reason": "Third loss this year: use the electronic version" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("refused"));
    assert!(!e
        .history(inst.id)
        .unwrap()
        .iter()
        .any(|ev| matches!(&ev.kind, EventKind::TaskCompleted { step, .. } if step == "reissue")));
}

// ---------------------------------------------------------------------------------------------
// document-review
// ---------------------------------------------------------------------------------------------

fn review_data(document_type: &str) -> serde_json::Map<String, Value> {
    obj(json!({
        "document_number": "CX-05",
        "document_title": "Document Control Procedure",
        "document_type": document_type,
        "current_revision": "B/1",
    }))
}

#[tokio::test]
async fn a_document_is_confirmed_suitable_only_when_every_reviewer_agrees() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start("document-review", review_data("procedure"), Some(&c.mary))
        .await
        .unwrap();
    // §4.8 with §3.1: the approver of a procedure, the general manager, organises it.
    assert_eq!(open_steps(&inst), ["organise_gm"]);
    let plan = json!({ "reviewers": ["pia", "sam"], "review_focus": "Still matches practice?" });
    let err = refused(&e, &inst, "organise_gm", &c.mary, None, plan.clone()).await;
    assert!(forbidden(&err), "{err:?}");
    let inst = complete(&e, &inst, "organise_gm", &c.george, None, plan)
        .await
        .unwrap();
    assert_eq!(task_at(&inst, "review").people, ["pia", "sam"]);
    let err = refused(&e, &inst, "review", &c.dora, Some("suitable"), empty()).await;
    assert!(forbidden(&err), "{err:?}");
    let inst = complete(&e, &inst, "review", &c.pia, Some("suitable"), empty())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["review"], "sam has not reviewed it");
    let inst = complete(&e, &inst, "review", &c.sam, Some("suitable"), empty())
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "record_review",
        &c.dora,
        None,
        json!({ "review_date": "2026-11-02" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("suitable"));
    assert!(instances_of(&e, "document-change").is_empty());
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn one_reviewer_finding_it_unsuitable_starts_a_document_change() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start("document-review", review_data("management"), Some(&c.dora))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["organise_mr"]);
    let inst = complete(
        &e,
        &inst,
        "organise_mr",
        &c.mary,
        None,
        json!({ "reviewers": ["pia", "sam"], "review_focus": "Retrieval of old copies" }),
    )
    .await
    .unwrap();
    let inst = complete(&e, &inst, "review", &c.sam, Some("suitable"), empty())
        .await
        .unwrap();
    let err = refused(&e, &inst, "review", &c.pia, Some("needs_change"), empty()).await;
    assert!(invalid_field(&err, "findings"), "{err:?}");
    // One finding is enough (§4.8 "any content found unsuitable … shall be modified").
    let inst = complete(
        &e,
        &inst,
        "review",
        &c.pia,
        Some("needs_change"),
        json!({ "findings": "§4.7.3 does not say who retrieves old copies" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["name_applicant"]);
    let inst = complete(
        &e,
        &inst,
        "name_applicant",
        &c.dora,
        None,
        json!({ "change_applicant": "pia" }),
    )
    .await
    .unwrap();
    // The change runs on its own; the review has ended.
    assert_eq!(inst.end_step.as_deref(), Some("change_started"));
    let changes = instances_of(&e, "document-change");
    assert_eq!(changes.len(), 1);
    let change = reload(&e, changes[0]);
    assert!(change.parent.as_ref().is_some_and(|p| p.detached));
    assert_eq!(change.data["document_type"], "management");
    assert_eq!(task_at(&change, "apply").assignee.as_deref(), Some("pia"));
    assert_folds(&e, inst.id);
}

// ---------------------------------------------------------------------------------------------
// laws-regulations-list
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_yearly_revision_of_the_laws_list_starts_on_its_date_and_is_approved() {
    let (e, clock) = engine().await;
    let c = cast();
    // 15 January, 09:00 Asia/Shanghai.
    let s = e
        .store()
        .schedule("laws-regulations-list")
        .unwrap()
        .expect("armed at registration");
    assert_eq!(s.next_ms, at("2027-01-15T01:00:00Z").timestamp_millis());
    e.advance_clock(&clock, at("2027-01-15T00:59:00Z"))
        .await
        .unwrap();
    assert!(instances_of(&e, "laws-regulations-list").is_empty());
    e.advance_clock(&clock, at("2027-01-15T01:00:00Z"))
        .await
        .unwrap();
    let runs = instances_of(&e, "laws-regulations-list");
    assert_eq!(runs.len(), 1);
    let inst = reload(&e, runs[0]);
    assert_eq!(inst.data["occasion"], "yearly_revision");
    let err = refused(
        &e,
        &inst,
        "request_identification",
        &c.sam,
        None,
        json!({ "department_contacts": ["sam"] }),
    )
    .await;
    assert!(forbidden(&err), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "request_identification",
        &c.oscar,
        None,
        json!({ "department_contacts": ["sam", "pia"] }),
    )
    .await
    .unwrap();
    assert!(e
        .notifications_for(&c.sam, 10)
        .unwrap()
        .iter()
        .any(|n| n.message.contains("Identify the laws")));
    // §5.2.1: every department named reports, each for itself.
    assert_eq!(
        task_at(&inst, "report_department_lists").people,
        ["sam", "pia"]
    );
    let err = refused(
        &e,
        &inst,
        "report_department_lists",
        &c.pia,
        None,
        json!({ "list_reported": false }),
    )
    .await;
    assert!(invalid_field(&err, "list_reported"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "report_department_lists",
        &c.pia,
        None,
        json!({ "list_reported": true }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["report_department_lists"]);
    let inst = complete(
        &e,
        &inst,
        "report_department_lists",
        &c.sam,
        None,
        json!({ "list_reported": true }),
    )
    .await
    .unwrap();
    // The compiler of the list may not approve it, whatever roles they hold.
    let max = person("max", "office", &["office", "management_rep"], 4);
    let list = json!({
        "list_version": "2027",
        "changes": "Added the revised Product Quality Law",
        "requirements": [{ "title": "Product Quality Law", "kind": "law",
                           "number_and_date": "2018-12-29" }],
    });
    let inst = complete(&e, &inst, "prepare_list", &max, None, list.clone())
        .await
        .unwrap();
    let err = refused(&e, &inst, "approve_list", &max, Some("approve"), empty()).await;
    assert!(separation(&err), "{err:?}");
    let err = refused(&e, &inst, "approve_list", &c.mary, Some("rework"), empty()).await;
    assert!(invalid_field(&err, "review_comments"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "approve_list",
        &c.mary,
        Some("rework"),
        json!({ "review_comments": "Add the Standardization Law" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["prepare_list"]);
    let inst = complete(&e, &inst, "prepare_list", &c.oscar, None, list)
        .await
        .unwrap();
    let inst = complete(&e, &inst, "approve_list", &c.mary, Some("approve"), empty())
        .await
        .unwrap();
    let err = refused(
        &e,
        &inst,
        "communicate",
        &c.oscar,
        None,
        json!({ "texts_kept": false, "training_plan": "February session" }),
    )
    .await;
    assert!(invalid_field(&err, "texts_kept"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "communicate",
        &c.oscar,
        None,
        json!({ "texts_kept": true, "training_plan": "February session" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("list_approved"));
    assert_folds(&e, inst.id);
}

// ---------------------------------------------------------------------------------------------
// annual-service-objectives
// ---------------------------------------------------------------------------------------------

fn objectives() -> Value {
    json!({
        "target_year": 2027,
        "satisfaction_score_target": 95.0,
        "complaint_rate_max": 1.0,
        "resolution_rate_target": 100.0,
    })
}

#[tokio::test]
async fn next_years_objectives_are_drafted_at_the_end_of_december_reviewed_and_approved() {
    let (e, clock) = engine().await;
    let c = cast();
    // 20 December, 09:00 Asia/Shanghai; the draft is due by 31 December.
    e.advance_clock(&clock, at("2026-12-20T00:59:00Z"))
        .await
        .unwrap();
    assert!(instances_of(&e, "annual-service-objectives").is_empty());
    e.advance_clock(&clock, at("2026-12-20T01:00:00Z"))
        .await
        .unwrap();
    let runs = instances_of(&e, "annual-service-objectives");
    assert_eq!(runs.len(), 1);
    let inst = reload(&e, runs[0]);
    assert_eq!(
        task_at(&inst, "draft_objectives").due,
        Some(at("2026-12-31T01:00:00Z"))
    );
    // The management representative drafts (Supervision §4.1.3), not the sales department.
    let err = refused(&e, &inst, "draft_objectives", &c.sid, None, objectives()).await;
    assert!(forbidden(&err), "{err:?}");
    let inst = complete(&e, &inst, "draft_objectives", &c.zoe, None, objectives())
        .await
        .unwrap();
    let breakdown = json!({ "breakdown": [
        { "department": "after_sales", "objective": "Follow-up visits within 3 working days", "target": "100 %" }
    ] });
    let inst = complete(&e, &inst, "decompose", &c.sid, None, breakdown.clone())
        .await
        .unwrap();
    // The review meeting: one endorsement is not enough…
    let inst = complete(
        &e,
        &inst,
        "review_meeting",
        &c.cora,
        Some("endorse"),
        empty(),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["review_meeting"]);
    let inst = complete(
        &e,
        &inst,
        "review_meeting",
        &c.carl,
        Some("endorse"),
        empty(),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["approve"]);
    // …the drafter does not approve; a rework needs the reason and goes back to the draft.
    let err = refused(&e, &inst, "approve", &c.zoe, Some("approve"), empty()).await;
    assert!(separation(&err), "{err:?}");
    let err = refused(&e, &inst, "approve", &c.george, Some("rework"), empty()).await;
    assert!(invalid_field(&err, "approval_comments"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "approve",
        &c.george,
        Some("rework"),
        json!({ "approval_comments": "Add the timely service rate" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["draft_objectives"]);
    let inst = complete(&e, &inst, "draft_objectives", &c.mary, None, objectives())
        .await
        .unwrap();
    let inst = complete(&e, &inst, "decompose", &c.sid, None, breakdown)
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "review_meeting",
        &c.cora,
        Some("endorse"),
        empty(),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "review_meeting",
        &c.carl,
        Some("endorse"),
        empty(),
    )
    .await
    .unwrap();
    // mary holds no general manager role.
    let err = refused(&e, &inst, "approve", &c.mary, Some("approve"), empty()).await;
    assert!(forbidden(&err), "{err:?}");
    let inst = complete(&e, &inst, "approve", &c.george, Some("approve"), empty())
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "distribute",
        &c.mary,
        None,
        json!({ "distributed_on": "2026-12-30" }),
    )
    .await
    .unwrap();
    let told: Vec<String> = notes(&e, inst.id)
        .into_iter()
        .filter(|(step, _, _)| step == "distribute")
        .map(|(_, role, _)| role)
        .collect();
    assert_eq!(
        told,
        [
            "sales",
            "quality",
            "engineering",
            "production",
            "office",
            "after_sales",
            "materials"
        ]
    );
    let err = refused(
        &e,
        &inst,
        "file_department_objectives",
        &c.sid,
        None,
        json!({ "department_objectives": [] }),
    )
    .await;
    assert!(forbidden(&err), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "file_department_objectives",
        &c.mike,
        None,
        json!({ "department_objectives": [
            { "department": "sales", "objectives": "Complaint rate below 1 %", "approved_by_head": "sid" }
        ] }),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("objectives_released"));
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn any_one_member_of_the_review_meeting_sends_the_draft_back() {
    let (e, _clock) = engine().await;
    let c = cast();
    let inst = e
        .start("annual-service-objectives", obj(json!({})), Some(&c.mary))
        .await
        .unwrap();
    let inst = complete(&e, &inst, "draft_objectives", &c.mary, None, objectives())
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "decompose",
        &c.sid,
        None,
        json!({ "breakdown": [{ "department": "sales", "objective": "Complaint rate", "target": "1 %" }] }),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "review_meeting",
        &c.cora,
        Some("endorse"),
        empty(),
    )
    .await
    .unwrap();
    let err = refused(
        &e,
        &inst,
        "review_meeting",
        &c.carl,
        Some("rework"),
        empty(),
    )
    .await;
    assert!(invalid_field(&err, "meeting_comments"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "review_meeting",
        &c.carl,
        Some("rework"),
        json!({ "meeting_comments": "The complaint rate is not measurable as written" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["draft_objectives"]);
    assert_folds(&e, inst.id);
}

// ---------------------------------------------------------------------------------------------
// work-log-sampling
// ---------------------------------------------------------------------------------------------

fn sample(n: usize) -> Value {
    let rows: Vec<Value> = (0..n)
        .map(|i| json!({ "person": format!("tech{i}"), "score": 24.0, "log_matches_maintenance_record": true }))
        .collect();
    json!({ "sample": rows })
}

/// Records one week with ten people in the logs and samples three of them.
async fn one_week(e: &Engine<MemoryStore>, c: &Cast, inst: Instance, week: &str) -> Instance {
    let inst = complete(
        e,
        &inst,
        "record_week",
        &c.oscar,
        None,
        json!({ "week_start": week, "personnel_in_logs": 10 }),
    )
    .await
    .unwrap();
    complete(e, &inst, "survey_sample", &c.fred, None, sample(3))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_month_of_sampling_ends_with_the_scores_at_the_office_and_the_quarterly_evaluation() {
    let (e, clock) = engine().await;
    let c = cast();
    // The first of each month, 09:00 Asia/Shanghai.
    e.advance_clock(&clock, at("2026-12-01T01:00:00Z"))
        .await
        .unwrap();
    let runs = instances_of(&e, "work-log-sampling");
    assert_eq!(runs.len(), 1, "the December run");
    let inst = reload(&e, runs[0]);
    let inst = complete(
        &e,
        &inst,
        "open_month",
        &c.oscar,
        None,
        json!({ "month_end": "2026-12-31", "weeks_in_month": 4, "quarter_end": true }),
    )
    .await
    .unwrap();
    // Week 1: two of ten is below 30 %: the week is recorded and sampled again.
    let inst = complete(
        &e,
        &inst,
        "record_week",
        &c.oscar,
        None,
        json!({ "week_start": "2026-11-30", "personnel_in_logs": 10 }),
    )
    .await
    .unwrap();
    let err = refused(&e, &inst, "survey_sample", &c.oscar, None, sample(3)).await;
    assert!(forbidden(&err), "{err:?}");
    let err = refused(
        &e,
        &inst,
        "survey_sample",
        &c.fred,
        None,
        json!({ "sample": [{ "person": "tech0", "score": 26.0, "log_matches_maintenance_record": true }] }),
    )
    .await;
    assert!(
        matches!(err, EngineError::InvalidForm(_)),
        "25 points a week: {err:?}"
    );
    let inst = complete(&e, &inst, "survey_sample", &c.fred, None, sample(2))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["record_week"]);
    assert_eq!(
        inst.data["weeks_done"], 0,
        "a week sampled too thinly does not count"
    );
    let inst = one_week(&e, &c, inst, "2026-11-30").await;
    assert_eq!(inst.data["weeks_done"], 1);
    let inst = one_week(&e, &c, inst, "2026-12-07").await;
    let inst = one_week(&e, &c, inst, "2026-12-14").await;
    let inst = one_week(&e, &c, inst, "2026-12-21").await;
    assert_eq!(open_steps(&inst), ["monthly_scores"]);
    // "At the end of each month": not before the last day (00:00 Asia/Shanghai).
    let t = task_at(&inst, "monthly_scores");
    assert_eq!(t.opens, Some(at("2026-12-30T16:00:00Z")));
    assert_eq!(t.due, Some(at("2026-12-31T16:00:00Z")));
    let scores = json!({
        "department_average": 96.0,
        "scores": [{ "person": "tech0", "monthly_score": 96.0 }],
    });
    let err = refused(&e, &inst, "monthly_scores", &c.fred, None, scores.clone()).await;
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    e.advance_clock(&clock, at("2026-12-31T02:00:00Z"))
        .await
        .unwrap();
    let inst = reload(&e, inst.id);
    let inst = complete(&e, &inst, "monthly_scores", &c.fred, None, scores)
        .await
        .unwrap();
    assert!(notes(&e, inst.id)
        .iter()
        .any(|(step, role, _)| step == "monthly_scores" && role == "office"));
    let err = refused(
        &e,
        &inst,
        "salary_calculation",
        &c.oscar,
        None,
        json!({ "salaries_calculated": false }),
    )
    .await;
    assert!(invalid_field(&err, "salaries_calculated"), "{err:?}");
    let inst = complete(
        &e,
        &inst,
        "salary_calculation",
        &c.oscar,
        None,
        json!({ "salaries_calculated": true }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["quarterly_evaluation"]);
    let inst = complete(
        &e,
        &inst,
        "quarterly_evaluation",
        &c.olga,
        None,
        json!({
            "outstanding_personnel": ["tech0"],
            "rewards": "Bonus for tech0",
            "department_totals": "After-sales 96",
            "measures": [{ "person": "tech2", "measure": "job_transfer" }],
        }),
    )
    .await
    .unwrap();
    let told: Vec<String> = notes(&e, inst.id)
        .into_iter()
        .filter(|(step, _, _)| step == "quarterly_evaluation")
        .map(|(_, role, _)| role)
        .collect();
    assert_eq!(told, ["general_manager", "management_rep"]);
    assert_eq!(inst.end_step.as_deref(), Some("month_closed"));
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn a_month_that_does_not_close_a_quarter_ends_after_the_salary_calculation() {
    let (e, clock) = engine().await;
    let c = cast();
    let inst = e
        .start("work-log-sampling", obj(json!({})), Some(&c.oscar))
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "open_month",
        &c.oscar,
        None,
        json!({ "month_end": "2026-11-30", "weeks_in_month": 4, "quarter_end": false }),
    )
    .await
    .unwrap();
    let mut inst = inst;
    for week in ["2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23"] {
        inst = one_week(&e, &c, inst, week).await;
    }
    assert_eq!(open_steps(&inst), ["monthly_scores"]);
    e.advance_clock(&clock, at("2026-11-29T16:00:00Z"))
        .await
        .unwrap();
    let inst = reload(&e, inst.id);
    let inst = complete(
        &e,
        &inst,
        "monthly_scores",
        &c.fred,
        None,
        json!({ "department_average": 93.5, "scores": [{ "person": "tech0", "monthly_score": 93.5 }] }),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "salary_calculation",
        &c.oscar,
        None,
        json!({ "salaries_calculated": true }),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("month_closed"));
    assert_folds(&e, inst.id);
}
