//! Operator repairs on the engine with the manual clock: a suspension pauses deadlines and
//! extends them by the time suspended; a move into a parallel region is allowed only where
//! the procedure itself could be (a branch together with its sibling), never stranding a
//! join; repairs need admin or the procedure's operator roles and a reason.

mod common;

use common::*;
use serde_json::json;
use sopflow::clock::Clock;
use sopflow::engine::decide::{Command, EngineError};
use sopflow::engine::instance::EventKind;
use sopflow::engine::service::ServiceError;
use sopflow::store::Store;

fn admin() -> sopflow::engine::instance::Actor {
    person("root", "office", &["admin"], 5)
}

#[tokio::test]
async fn a_suspension_pauses_deadlines_and_extends_them_by_its_length() {
    let (e, clock) = engine().await;
    let starter = person("xu.na", "after_sales", &["follow_up"], 2);
    let inst = e
        .start(
            "complaint-handling",
            obj(json!({ "customer": "Hengxin", "contact": "Li" })),
            Some(&starter),
        )
        .await
        .unwrap();
    let due = inst.tasks.values().next().unwrap().due.unwrap();
    let timers: Vec<_> = inst.timers.values().map(|t| t.at).collect();
    let cmd = |reason: &str| Command::Suspend {
        reason: reason.into(),
    };
    // Not an operator, no reason: refused.
    let r = e.execute(inst.id, cmd("hold"), Some(&starter)).await;
    assert!(
        matches!(r, Err(ServiceError::Engine(EngineError::Forbidden(_)))),
        "{r:?}"
    );
    let r = e.execute(inst.id, cmd(""), Some(&admin())).await;
    assert!(
        matches!(r, Err(ServiceError::Engine(EngineError::Invalid(_)))),
        "{r:?}"
    );
    let held = e
        .execute(inst.id, cmd("Waiting for the customer"), Some(&admin()))
        .await
        .unwrap();
    assert!(held.timers.is_empty(), "timers are held, not armed");
    // Past the due time while suspended: nothing fires.
    e.advance_clock(&clock, clock.now() + chrono::Duration::days(5))
        .await
        .unwrap();
    let h = e.history(inst.id).unwrap();
    assert!(
        !h.iter().any(|ev| matches!(
            ev.kind,
            EventKind::DeadlineBreached { .. } | EventKind::DeadlineReminded { .. }
        )),
        "{h:?}"
    );
    let back = e
        .execute(
            inst.id,
            Command::Resume {
                reason: "Answered".into(),
            },
            Some(&admin()),
        )
        .await
        .unwrap();
    let shifted = back.tasks.values().next().unwrap().due.unwrap();
    assert_eq!(shifted - due, chrono::Duration::days(5));
    let mut after: Vec<_> = back.timers.values().map(|t| t.at).collect();
    let mut want: Vec<_> = timers
        .iter()
        .map(|t| *t + chrono::Duration::days(5))
        .collect();
    after.sort();
    want.sort();
    assert_eq!(after, want);
    // The history replays to the same state.
    let folded = sopflow::engine::instance::Instance::fold(inst.id, &e.history(inst.id).unwrap());
    assert_eq!(folded.as_ref(), Some(&back));
}

#[tokio::test]
async fn a_move_into_a_parallel_region_must_be_a_state_the_procedure_reaches() {
    let (e, _clock) = engine().await;
    let p = e.procedure("recall").unwrap();
    let starter = person(
        "s",
        "quality",
        &p.def
            .start_roles
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        3,
    );
    let data = obj(
        json!({ "product": "Roller", "batch_or_model": "R-2026-11", "source": "internal_discovery" }),
    );
    let inst = match e.start("recall", data, Some(&starter)).await {
        Ok(i) => i,
        Err(err) => panic!("recall starts: {err}"),
    };
    let dump = e.store().dump().unwrap();
    // Into one branch alone: its sibling would never come, the join would wait forever.
    let r = e
        .execute(
            inst.id,
            Command::Move {
                tasks: vec![],
                to: "assess_hazard".into(),
                reason: "skip ahead".into(),
            },
            Some(&admin()),
        )
        .await;
    match r {
        Err(ServiceError::Engine(EngineError::Conflict(why))) => {
            assert!(why.contains("never reaches by itself"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.store().dump().unwrap(),
        dump,
        "a refused move changes nothing"
    );
    // To the parallel step itself: both branches open.
    let moved = e
        .execute(
            inst.id,
            Command::Move {
                tasks: vec![],
                to: "assess_scope".into(),
                reason: "identified on the phone".into(),
            },
            Some(&admin()),
        )
        .await
        .unwrap();
    let mut steps: Vec<_> = moved.tasks.values().map(|t| t.step.clone()).collect();
    steps.sort();
    assert_eq!(steps, ["assess_hazard", "estimate_losses"]);
    // One branch's task to the other branch's step: two at one step never happens.
    let hazard = moved
        .tasks
        .values()
        .find(|t| t.step == "assess_hazard")
        .unwrap()
        .id;
    let r = e
        .execute(
            inst.id,
            Command::Move {
                tasks: vec![hazard],
                to: "estimate_losses".into(),
                reason: "x".into(),
            },
            Some(&admin()),
        )
        .await;
    assert!(
        matches!(r, Err(ServiceError::Engine(EngineError::Conflict(_)))),
        "{r:?}"
    );
    let folded = sopflow::engine::instance::Instance::fold(inst.id, &e.history(inst.id).unwrap());
    assert_eq!(folded.as_ref(), Some(&moved));
}

#[tokio::test]
async fn a_withdrawn_branch_reaches_its_join_and_the_only_open_work_stays() {
    let (e, _clock) = engine().await;
    let data = obj(
        json!({ "product": "Roller", "batch_or_model": "R-2026-11", "source": "internal_discovery" }),
    );
    let inst = e.start("recall", data, Some(&admin())).await.unwrap();
    // The only open work: withdrawn, the instance could never end. Refused, nothing written.
    let only = inst.tasks.values().next().unwrap().id;
    assert_eq!(inst.tasks.len(), 1);
    let dump = e.store().dump().unwrap();
    let r = e
        .execute(
            inst.id,
            Command::WithdrawTask {
                task: only,
                reason: "opened by mistake".into(),
            },
            Some(&admin()),
        )
        .await;
    match r {
        Err(ServiceError::Engine(EngineError::Conflict(why))) => {
            assert!(why.contains("only open work"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.store().dump().unwrap(),
        dump,
        "a refused withdrawal changes nothing"
    );
    // Both assessments open; the hazard one withdrawn: its branch arrives at the join
    // without it, so finishing the losses estimate passes the join.
    let moved = e
        .execute(
            inst.id,
            Command::Move {
                tasks: vec![],
                to: "assess_scope".into(),
                reason: "source confirmed".into(),
            },
            Some(&admin()),
        )
        .await
        .unwrap();
    let hazard = task_at(&moved, "assess_hazard").id;
    let after = e
        .execute(
            inst.id,
            Command::WithdrawTask {
                task: hazard,
                reason: "assessed in the earlier recall".into(),
            },
            Some(&admin()),
        )
        .await
        .unwrap();
    assert_eq!(open_steps(&after), ["estimate_losses"]);
    assert_eq!(after.joins.get("scope_determined"), Some(&1));
    let kinds: Vec<String> = e
        .history(inst.id)
        .unwrap()
        .iter()
        .map(|ev| ev.kind.name().to_string())
        .collect();
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["task_withdrawn", "branch_arrived"]
    );
    let office = person("o", "office", &["office"], 3);
    let done = complete(
        &e,
        &after,
        "estimate_losses",
        &office,
        None,
        json!({ "estimated_losses": 1000, "reputation_damage": "small" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&done), ["prepare_plan"]);
    assert_folds(&e, inst.id);
}
