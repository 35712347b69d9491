//! Complaint handling driven through the engine: the main path and each alternative the
//! seed describes (seed 002 Customer Relationship and Complaint Handling §4.5–4.8), and the
//! rejections that must leave the store untouched.

mod common;

use common::*;
use serde_json::json;
use sopflow::engine::decide::{Command, EngineError};
use sopflow::engine::instance::{EventKind, Status};
use sopflow::engine::service::ServiceError;
use sopflow::store::Store;

fn cast() -> (
    sopflow::engine::instance::Actor,
    sopflow::engine::instance::Actor,
    sopflow::engine::instance::Actor,
) {
    (
        person("fiona", "after_sales", &["follow_up"], 2),
        person("sam", "sales", &["sales"], 2),
        person("mary", "general_management", &["management_rep"], 4),
    )
}

fn start_data() -> serde_json::Map<String, serde_json::Value> {
    obj(json!({ "customer": "Hengxin Lifting", "contact": "Mr Li, 0731-555" }))
}

fn registration(severity: &str) -> serde_json::Value {
    json!({
        "channel": "hotline",
        "complaint": "Hoist brake slips under load",
        "severity": severity,
        "first_answer": "An engineer will call today", "received_at": "2026-11-02T08:30:00Z",
    })
}

fn resolution() -> serde_json::Value {
    json!({ "resolution": "Brake pads replaced", "resolved_on": "2026-11-03" })
}

#[tokio::test]
async fn general_complaint_resolved_satisfied_closed() {
    let (e, _clock) = engine().await;
    let (fiona, sam, _) = cast();
    let inst = e
        .start("complaint-handling", start_data(), Some(&fiona))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["register"]);
    let inst = complete(&e, &inst, "register", &fiona, None, registration("general"))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["resolve_general"]);
    let inst = complete(&e, &inst, "resolve_general", &sam, None, resolution())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["follow_up_visit"]);
    let inst = complete(
        &e,
        &inst,
        "follow_up_visit",
        &fiona,
        None,
        json!({ "customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Works now" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some("closed"));
    assert!(inst.tasks.is_empty());

    // The history is the truth: folding it gives the stored snapshot.
    let history = e.history(inst.id).unwrap();
    let folded = sopflow::engine::instance::Instance::fold(inst.id, &history).unwrap();
    assert_eq!(folded, e.instance(inst.id).unwrap().unwrap());
    assert!(matches!(
        history.last().unwrap().kind,
        EventKind::Ended { .. }
    ));
    // Everyone's worklist is empty again.
    assert!(e.tasks_for(&fiona).unwrap().is_empty());
    assert!(e.tasks_for(&sam).unwrap().is_empty());
}

#[tokio::test]
async fn major_complaint_goes_to_the_management_representative() {
    let (e, _clock) = engine().await;
    let (fiona, sam, mary) = cast();
    let inst = e
        .start("complaint-handling", start_data(), Some(&fiona))
        .await
        .unwrap();
    let inst = complete(&e, &inst, "register", &fiona, None, registration("major"))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["handle_by_management_rep"]);
    // Offered to the management representative, not to sales.
    assert_eq!(e.tasks_for(&mary).unwrap().len(), 1);
    assert!(e.tasks_for(&sam).unwrap().is_empty());
    // seed 000 §3: the decision (the handling plan) is due 24 hours after the complaint was
    // received, not after it was registered here.
    let t = task_at(&inst, "handle_by_management_rep");
    assert_eq!(
        t.due.map(|d| d.to_rfc3339()),
        Some("2026-11-03T08:30:00+00:00".to_string())
    );
    let plan = json!({ "handling_plan": "Replace the hoist under warranty" });
    let inst = complete(&e, &inst, "handle_by_management_rep", &mary, None, plan)
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["implement_handling_plan"]);
    let inst = complete(
        &e,
        &inst,
        "implement_handling_plan",
        &mary,
        None,
        resolution(),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["follow_up_visit"]);
}

#[tokio::test]
async fn not_satisfied_becomes_a_second_complaint() {
    let (e, _clock) = engine().await;
    let (fiona, sam, _) = cast();
    let after_sales = person("alan", "after_sales", &["after_sales"], 2);
    let inst = e
        .start("complaint-handling", start_data(), Some(&fiona))
        .await
        .unwrap();
    let inst = complete(&e, &inst, "register", &fiona, None, registration("general"))
        .await
        .unwrap();
    let inst = complete(&e, &inst, "resolve_general", &sam, None, resolution())
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "follow_up_visit",
        &fiona,
        None,
        json!({ "customer_satisfied": false, "satisfaction_score": 40, "customer_evaluation": "Still slips" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["second_complaint"]);
    let inst = complete(
        &e,
        &inst,
        "second_complaint",
        &after_sales,
        None,
        json!({ "second_cause": "product_quality", "second_findings": "Worn drum" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["resolve_second"]);
    let inst = complete(
        &e,
        &inst,
        "resolve_second",
        &after_sales,
        None,
        resolution(),
    )
    .await
    .unwrap();
    // A loop: back to the follow-up visit, which now closes it.
    let inst = complete(
        &e,
        &inst,
        "follow_up_visit",
        &fiona,
        None,
        json!({ "customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Fixed" }),
    )
    .await
    .unwrap();
    assert_eq!(inst.status, Status::Completed);
}

/// Every rejection leaves the store byte-for-byte unchanged.
#[tokio::test]
async fn rejections_change_nothing() {
    let (e, _clock) = engine().await;
    let (fiona, sam, mary) = cast();
    let inst = e
        .start("complaint-handling", start_data(), Some(&fiona))
        .await
        .unwrap();
    let task = task_at(&inst, "register");
    let before = e.store().dump().unwrap();

    // Wrong role.
    let err = complete(&e, &inst, "register", &sam, None, registration("general"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    // Invalid form: every field's problem listed.
    let err = complete(
        &e,
        &inst,
        "register",
        &fiona,
        None,
        json!({ "severity": "minor", "colour": "red" }),
    )
    .await
    .unwrap_err();
    let ServiceError::Engine(EngineError::InvalidForm(problems)) = err else {
        panic!("expected an invalid form, got {err:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for f in ["channel", "colour", "complaint", "first_answer", "severity"] {
        assert!(fields.contains(&f), "{f} missing from {problems:?}");
    }
    // Unknown outcome.
    let err = complete(
        &e,
        &inst,
        "register",
        &fiona,
        Some("approve"),
        registration("general"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Invalid(_))),
        "{err:?}"
    );
    // Unknown task.
    let err = e
        .execute(
            inst.id,
            Command::Claim {
                task: uuid::Uuid::nil(),
            },
            Some(&fiona),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::NotFound(_))),
        "{err:?}"
    );
    // Cancel without the role.
    let err = e
        .execute(
            inst.id,
            Command::Cancel {
                reason: "duplicate".into(),
            },
            Some(&sam),
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

    // Completed task, then cancelled instance.
    let done = complete(&e, &inst, "register", &fiona, None, registration("general"))
        .await
        .unwrap();
    let snapshot = e.store().dump().unwrap();
    let err = e
        .execute(
            inst.id,
            Command::Complete {
                task: task.id,
                outcome: None,
                form: obj(registration("general")),
                comment: None,
            },
            Some(&fiona),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Conflict(_))),
        "{err:?}"
    );
    assert_eq!(snapshot, e.store().dump().unwrap());
    let cancelled = e
        .execute(
            done.id,
            Command::Cancel {
                reason: "customer withdrew".into(),
            },
            Some(&mary),
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    assert!(
        e.tasks_for(&sam).unwrap().is_empty(),
        "cancelling closes the worklist entries"
    );
    let snapshot = e.store().dump().unwrap();
    let err = complete(&e, &done, "resolve_general", &sam, None, resolution())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Ended(_))),
        "{err:?}"
    );
    assert_eq!(snapshot, e.store().dump().unwrap());
}

#[tokio::test]
async fn claim_release_and_claimed_tasks_belong_to_one_person() {
    let (e, _clock) = engine().await;
    let (fiona, _, _) = cast();
    let fred = person("fred", "after_sales", &["follow_up"], 2);
    let inst = e
        .start("complaint-handling", start_data(), Some(&fiona))
        .await
        .unwrap();
    let t = task_at(&inst, "register");
    assert_eq!(e.tasks_for(&fred).unwrap().len(), 1);
    let inst = e
        .execute(inst.id, Command::Claim { task: t.id }, Some(&fiona))
        .await
        .unwrap();
    assert_eq!(
        task_at(&inst, "register").claimed_by.as_deref(),
        Some("fiona")
    );
    // Claimed: it leaves the role's list and is on Fiona's.
    assert!(e.tasks_for(&fred).unwrap().is_empty());
    assert_eq!(e.tasks_for(&fiona).unwrap().len(), 1);
    let err = e
        .execute(inst.id, Command::Claim { task: t.id }, Some(&fred))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ServiceError::Engine(EngineError::Conflict(_))
    ));
    let err = complete(&e, &inst, "register", &fred, None, registration("general"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ServiceError::Engine(EngineError::Conflict(_))
    ));
    let inst = e
        .execute(inst.id, Command::Release { task: t.id }, Some(&fiona))
        .await
        .unwrap();
    assert_eq!(e.tasks_for(&fred).unwrap().len(), 1);
    complete(&e, &inst, "register", &fred, None, registration("general"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_racers_complete_one_task_exactly_once() {
    let (e, _clock) = engine().await;
    let e = std::sync::Arc::new(e);
    let (fiona, _, _) = cast();
    let inst = e
        .start("complaint-handling", start_data(), Some(&fiona))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..64 {
        let e = e.clone();
        let inst = inst.clone();
        let who = person(&format!("racer{i}"), "after_sales", &["follow_up"], 2);
        handles.push(tokio::spawn(async move {
            complete(&e, &inst, "register", &who, None, registration("general")).await
        }));
    }
    let mut wins = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => wins += 1,
            Err(ServiceError::Engine(EngineError::Conflict(_))) => {}
            Err(other) => panic!("a loser must get a conflict, got {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    let history = e.history(inst.id).unwrap();
    let completions = history
        .iter()
        .filter(|ev| matches!(ev.kind, EventKind::TaskCompleted { .. }))
        .count();
    assert_eq!(completions, 1);
}

/// Found measuring a million instances: worklists read the role index, then each task row,
/// outside any transaction, so a task closed between the two reads was reported as a
/// damaged store (a 500 on `GET /v1/tasks` and `/metrics` under write load). Readers race
/// writers here on the real sled store; every read must succeed and list only open tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worklists_read_while_tasks_open_and_close_never_fail() {
    use sopflow::store::sled_store::SledStore;
    let store = std::sync::Arc::new(SledStore::temporary().unwrap());
    let (e, _clock) = engine_on(store).await;
    let e = std::sync::Arc::new(e);
    let (fiona, sam, _) = cast();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..6 {
        let (e, fiona, sam) = (e.clone(), fiona.clone(), sam.clone());
        writers.push(tokio::spawn(async move {
            for _ in 0..40 {
                let inst = e
                    .start("complaint-handling", start_data(), Some(&fiona))
                    .await
                    .unwrap();
                let inst = complete(&e, &inst, "register", &fiona, None, registration("general"))
                    .await
                    .unwrap();
                complete(&e, &inst, "resolve_general", &sam, None, resolution())
                    .await
                    .unwrap();
            }
        }));
    }
    let mut readers = Vec::new();
    for who in [fiona.clone(), sam.clone()] {
        let (e, stop) = (e.clone(), stop.clone());
        readers.push(tokio::task::spawn_blocking(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let rows = e
                    .tasks_for(&who)
                    .unwrap_or_else(|err| panic!("a worklist read failed: {err}"));
                assert!(rows
                    .iter()
                    .all(|r| r.roles.iter().any(|r| who.roles.contains(r))));
                reads += 1;
            }
            reads
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    // Each complaint ends up waiting at the follow-up visit: 240 open tasks for fiona.
    assert_eq!(e.tasks_for(&fiona).unwrap().len(), 240);
    // The metrics gauge counts the same tasks from the index alone.
    assert_eq!(e.store().open_task_count("follow_up").unwrap(), 240);
    assert_eq!(e.store().open_task_count("sales").unwrap(), 0);
}
