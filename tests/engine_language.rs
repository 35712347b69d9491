//! The procedure language's rules for who decides and when, driven through the engine: per
//! outcome signature rules, steps offered to a list of people, rules on the person,
//! fields needed for one outcome, earliest completion, fire-and-forget children, messages on
//! entering and completing a step, partial joins and terminating ends. Each refusal leaves
//! the store unchanged; each history folds to the stored instance.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::Duration;
use common::*;
use serde_json::json;
use sopflow::definition::load::{validate_paths, validate_text, Options};
use sopflow::engine::decide::{Command, EngineError};
use sopflow::engine::instance::{Actor, EventKind, Instance, Status};
use sopflow::engine::roster::Roster;
use sopflow::engine::service::{Engine, ServiceError};
use sopflow::store::memory::MemoryStore;
use sopflow::store::Store;

/// The engine with the shipped procedures and calendars, plus `texts` registered.
async fn with(texts: &[&str]) -> (Engine<MemoryStore>, sopflow::clock::ManualClock) {
    let (e, clock) = engine().await;
    let shipped = validate_paths(
        &[std::path::PathBuf::from("procedures")],
        &Options::default(),
    );
    let mut others: Vec<_> = shipped.valid.iter().map(|v| v.procedure.clone()).collect();
    let calendars = HashSet::from(["default".to_string()]);
    let mut valid = Vec::new();
    // Each text may start one registered before it; files are named by their ids.
    for t in texts {
        let id = t
            .lines()
            .find_map(|l| l.strip_prefix("id = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("an id line");
        let v = validate_text(&format!("{id}.toml"), t, &others, &calendars);
        assert_eq!(v.errors(), 0, "{}", v.reports[0].render_text());
        others.extend(v.valid.iter().map(|p| p.procedure.clone()));
        valid.extend(v.valid);
    }
    e.register(&valid).await.expect("registers");
    (e, clock)
}

fn engine_err(r: Result<Instance, ServiceError>) -> EngineError {
    match r {
        Err(ServiceError::Engine(e)) => e,
        other => panic!("expected an engine refusal, got {other:?}"),
    }
}

fn kinds(e: &Engine<MemoryStore>, id: uuid::Uuid) -> Vec<String> {
    e.history(id)
        .unwrap()
        .iter()
        .map(|ev| ev.kind.name().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Signature rules per outcome
// ---------------------------------------------------------------------------------------------

const JOINT: &str = r#"
id = "joint"
version = 1
title = "Joint decision"
start = "decide"
[roles]
engineering = "Engineering"
quality = "Quality"
[steps.decide]
role = "engineering"
signatures = { required = 2, roles = ["engineering", "quality"], one_per_role = true, decide = { approve = 2, reject = "all", rework = "any" } }
outcomes = ["approve", "reject", "rework"]
next = [{ on = "approve", to = "approved" }, { on = "reject", to = "rejected" }, { on = "rework", to = "reworked" }]
[steps.approved]
kind = "end"
[steps.rejected]
kind = "end"
[steps.reworked]
kind = "end"
"#;

fn ed() -> Actor {
    person("ed", "engineering", &["engineering"], 3)
}
fn eve() -> Actor {
    person("eve", "engineering", &["engineering"], 3)
}
fn quinn() -> Actor {
    person("quinn", "quality", &["quality"], 3)
}

#[tokio::test]
async fn a_veto_needs_everyone_and_a_changed_mind_counts() {
    let (e, _) = with(&[JOINT]).await;
    let inst = e.start("joint", obj(json!({})), Some(&ed())).await.unwrap();
    // One signer saying "reject" decides nothing: the rule for reject is "all".
    let inst = complete(&e, &inst, "decide", &ed(), Some("reject"), empty())
        .await
        .unwrap();
    assert_eq!(inst.status, Status::Running);
    // The other chooses approve: neither rule is met (approve 1 of 2, reject not unanimous).
    let inst = complete(&e, &inst, "decide", &quinn(), Some("approve"), empty())
        .await
        .unwrap();
    assert_eq!(inst.status, Status::Running);
    // Signing the same choice twice is a conflict and changes nothing.
    let err = refused(&e, &inst, "decide", &quinn(), Some("approve"), empty()).await;
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    // Quinn changes their mind: now both reject, and nobody chose otherwise.
    let inst = complete(&e, &inst, "decide", &quinn(), Some("reject"), empty())
        .await
        .unwrap();
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some("rejected"));
    let history = e.history(inst.id).unwrap();
    let decided = history
        .iter()
        .find_map(|ev| match &ev.kind {
            EventKind::TaskCompleted { decided, .. } => decided.clone(),
            _ => None,
        })
        .expect("the completion records the rule");
    assert_eq!(decided.rule, "all signers");
    assert_eq!(decided.signers, ["ed", "quinn"]);
    assert_folds(&e, inst.id);
}

#[tokio::test]
async fn approval_needs_one_per_role_and_a_return_needs_one() {
    let (e, _) = with(&[JOINT]).await;
    // Two engineers do not make a joint approval.
    let inst = e.start("joint", obj(json!({})), Some(&ed())).await.unwrap();
    let inst = complete(&e, &inst, "decide", &ed(), Some("approve"), empty())
        .await
        .unwrap();
    let inst = complete(&e, &inst, "decide", &eve(), Some("approve"), empty())
        .await
        .unwrap();
    assert_eq!(inst.status, Status::Running);
    let inst = complete(&e, &inst, "decide", &quinn(), Some("approve"), empty())
        .await
        .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("approved"));

    // Rework is decided by the first signer who asks for it.
    let inst = e.start("joint", obj(json!({})), Some(&ed())).await.unwrap();
    let inst = complete(&e, &inst, "decide", &quinn(), Some("rework"), empty())
        .await
        .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("reworked"));
}

#[tokio::test]
async fn the_shipped_recall_needs_both_departments_to_close_a_report_as_not_defective() {
    let (e, _) = engine().await;
    let quality = person("quinn", "quality", &["quality"], 3);
    let eng = person("ed", "engineering", &["engineering"], 3);
    let inst = e
        .start(
            "recall",
            obj(json!({ "product": "QD20", "batch_or_model": "B7", "source": "internal_discovery" })),
            Some(&quality),
        )
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "record_report",
        &quality,
        None,
        json!({ "channel": "telephone", "reporter": "Li", "defect_description": "Limit switch", "state_designated_department": false }),
    )
    .await
    .unwrap();
    let form =
        json!({ "identification_basis": "none", "identification_findings": "No fault found" });
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &eng,
        Some("not_defective"),
        form.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        open_steps(&inst),
        ["identify_jointly"],
        "one department alone cannot close the report"
    );
    let inst = complete(
        &e,
        &inst,
        "identify_jointly",
        &quality,
        Some("not_defective"),
        form,
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("no_defect"));
}

// ---------------------------------------------------------------------------------------------
// Several people, rules on the person
// ---------------------------------------------------------------------------------------------

const RECEIPT: &str = r#"
id = "receipt"
version = 1
title = "Distribution"
start = "distribute"
[roles]
document_admin = "Document administrator"
staff = "Staff"
[data]
recipients = { type = "list", items = { type = "user" }, required = true, min_items = 1 }
[steps.distribute]
role = "document_admin"
notify = [{ when = "complete", person = "recipients", message = "A controlled copy is on its way" }]
next = [{ to = "confirm" }]
[steps.confirm]
assignees = "recipients"
signatures = { required = 1, decide = { done = "all" } }
notify = [{ when = "enter", role = "document_admin" }]
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;

#[tokio::test]
async fn a_step_offered_to_a_list_of_people_waits_for_each_of_them() {
    let (e, _) = with(&[RECEIPT]).await;
    let admin = person("olga", "office", &["document_admin"], 2);
    let ann = person("ann", "sales", &["staff"], 2);
    let bob = person("bob", "quality", &["staff"], 2);
    let carl = person("carl", "sales", &["staff", "document_admin"], 2);
    let inst = e
        .start(
            "receipt",
            obj(json!({ "recipients": ["ann", "bob"] })),
            Some(&admin),
        )
        .await
        .unwrap();
    let inst = complete(&e, &inst, "distribute", &admin, None, empty())
        .await
        .unwrap();
    let t = task_at(&inst, "confirm");
    assert_eq!(t.people, ["ann", "bob"]);
    // In the worklists of the people named, and not in the role's.
    assert!(e.tasks_for(&ann).unwrap().iter().any(|r| r.task == t.id));
    assert!(!e.tasks_for(&admin).unwrap().iter().any(|r| r.task == t.id));
    // Someone not on the list may not sign, whatever roles they hold.
    let err = refused(&e, &inst, "confirm", &carl, None, empty()).await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let inst = complete(&e, &inst, "confirm", &ann, None, empty())
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["confirm"], "bob has not signed yet");
    let inst = complete(&e, &inst, "confirm", &bob, None, empty())
        .await
        .unwrap();
    assert_eq!(inst.status, Status::Completed);
    // The messages: each recipient on completing `distribute`, the role on entering `confirm`.
    let notes: Vec<(String, Vec<String>)> = e
        .history(inst.id)
        .unwrap()
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::Notified { role, to_users, .. } => Some((role.clone(), to_users.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        notes,
        [
            (String::new(), vec!["ann".to_string(), "bob".to_string()]),
            ("document_admin".to_string(), vec![]),
        ]
    );
    let for_bob = e.notifications_for(&bob, 10).unwrap();
    assert!(for_bob
        .iter()
        .any(|n| n.message == "A controlled copy is on its way"));
    assert_folds(&e, inst.id);
}

const FEEDBACK: &str = r#"
id = "feedback"
version = 1
title = "Quality information feedback"
start = "register"
[roles]
sales = "Sales"
quality = "Quality"
[steps.register]
role = "sales"
form.responsible_unit = { type = "department", required = true }
form.processor = { type = "user", required = true }
next = [{ to = "process" }]
[steps.process]
assignee = "processor"
must_be = { department_in = "responsible_unit", level_at_least = 3 }
next = [{ to = "check" }]
[steps.check]
role = "quality"
must_be = { department = "quality", role = "quality" }
delegation = { to_roles = ["quality", "sales"], reason_required = false }
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;

struct People(BTreeMap<String, Actor>);

impl Roster for People {
    fn person(&self, id: &str) -> Option<Actor> {
        self.0.get(id).cloned()
    }
    fn has_department(&self, _id: &str) -> bool {
        true
    }
}

#[tokio::test]
async fn rules_on_the_person_are_checked_when_chosen_claimed_completed_and_delegated() {
    let (e, _) = with(&[FEEDBACK]).await;
    let sid = person("sid", "sales", &["sales"], 2);
    let junior = person("jun", "production", &[], 2);
    let senior = person("sen", "production", &[], 4);
    let outsider = person("out", "office", &[], 5);
    let quinn = person("quinn", "quality", &["quality"], 3);
    e.set_roster(Arc::new(People(
        [&sid, &junior, &senior, &outsider, &quinn]
            .into_iter()
            .map(|a| (a.id.clone(), a.clone()))
            .collect(),
    )));
    let inst = e
        .start("feedback", obj(json!({})), Some(&sid))
        .await
        .unwrap();
    // Choosing someone who may not do the step they are chosen for is refused at once.
    for who in ["jun", "out"] {
        let err = refused(
            &e,
            &inst,
            "register",
            &sid,
            None,
            json!({ "responsible_unit": "production", "processor": who }),
        )
        .await;
        match err {
            EngineError::InvalidForm(p) => {
                assert_eq!(p[0].field, "processor", "{p:?}");
                assert!(p[0].message.contains("may not do `process`"), "{p:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    let inst = complete(
        &e,
        &inst,
        "register",
        &sid,
        None,
        json!({ "responsible_unit": "production", "processor": "sen" }),
    )
    .await
    .unwrap();
    let inst = complete(&e, &inst, "process", &senior, None, empty())
        .await
        .unwrap();
    // `check` is for quality people of the quality department; a sales delegate is refused.
    let t = task_at(&inst, "check");
    let before = e.store().dump().unwrap();
    let err = engine_err(
        e.execute(
            inst.id,
            Command::Delegate {
                task: t.id,
                to: sid.clone(),
                reason: None,
            },
            Some(&quinn),
        )
        .await,
    );
    assert!(
        matches!(&err, EngineError::Forbidden(m) if m.contains("department `quality`")),
        "{err:?}"
    );
    assert_eq!(before, e.store().dump().unwrap());
    let inst = complete(&e, &inst, "check", &quinn, None, empty())
        .await
        .unwrap();
    assert_eq!(inst.status, Status::Completed);
}

// ---------------------------------------------------------------------------------------------
// Fields for one outcome, earliest completion
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn verified_cannot_be_chosen_with_a_check_not_done() {
    let (e, _) = engine().await;
    let owner = person("dora", "sales", &["department_head"], 3);
    let reviewer = person("rita", "quality", &["audit_team"], 3);
    let inst = e
        .start(
            "corrective-action",
            obj(json!({
                "clause": "§4.2", "finding": "Logs incomplete", "department": "sales",
                "owner": "dora", "rectification_deadline": "2026-12-31", "reviewer": "rita",
            })),
            None,
        )
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "plan_rectification",
        &owner,
        None,
        json!({ "impact_analysis": "Some", "cause_analysis": "Training", "corrective_measures": "Train", "planned_completion": "2026-12-01" }),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "implement",
        &owner,
        None,
        json!({ "implementation_record": "Trained all", "document_changed": false, "witness_materials": [{ "description": "Attendance list", "reference": "R-12" }] }),
    )
    .await
    .unwrap();
    let checks = |c: bool| {
        json!({ "plan_followed": true, "measures_completed": true, "nonconformity_corrected": c,
                "changes_controlled": true, "verification_notes": "Checked on site" })
    };
    let err = refused(
        &e,
        &inst,
        "verify",
        &reviewer,
        Some("verified"),
        checks(false),
    )
    .await;
    match err {
        EngineError::InvalidForm(p) => {
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].field, "nonconformity_corrected");
            assert_eq!(p[0].message, "must be ticked (true) to choose `verified`");
        }
        other => panic!("{other:?}"),
    }
    // Not effective may be chosen with a check not done; verified with all of them.
    let inst = complete(
        &e,
        &inst,
        "verify",
        &reviewer,
        Some("verified"),
        checks(true),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("verified"));
}

const WINDOW: &str = r#"
id = "window"
version = 1
title = "Audit notice"
start = "notify"
[roles]
team_leader = "Audit team leader"
[data]
audit_date = { type = "date", required = true }
[steps.notify]
role = "team_leader"
outcomes = ["sent", "object"]
form.objection_reason = { type = "text", required_for = ["object"] }
deadline = { opens = "10 days before audit_date", due = "7 days before audit_date" }
next = [{ on = "sent", to = "done" }, { on = "object", to = "done" }]
[steps.done]
kind = "end"
"#;

#[tokio::test]
async fn a_window_refuses_early_completion_with_the_time_it_opens() {
    let (e, clock) = with(&[WINDOW]).await;
    let leader = person("lee", "quality", &["team_leader"], 3);
    // t0 is 2026-11-02 09:00 UTC; the audit on 2026-11-20 opens the notice on 2026-11-10.
    let inst = e
        .start(
            "window",
            obj(json!({ "audit_date": "2026-11-20" })),
            Some(&leader),
        )
        .await
        .unwrap();
    let t = task_at(&inst, "notify");
    let opens = t.opens.expect("the task knows when it opens");
    assert!(opens > t0() && opens < t.due.unwrap());
    let row = e.tasks_for(&leader).unwrap();
    assert_eq!(row[0].opens_ms, Some(opens.timestamp_millis()));
    let err = refused(&e, &inst, "notify", &leader, Some("sent"), empty()).await;
    assert!(
        matches!(&err, EngineError::Conflict(m) if m.contains("cannot be completed before 2026-11-10")),
        "{err:?}"
    );
    e.advance_clock(&clock, opens + Duration::minutes(1))
        .await
        .unwrap();
    // Objecting needs the reason; sending does not.
    let err = refused(&e, &inst, "notify", &leader, Some("object"), empty()).await;
    assert!(
        matches!(&err, EngineError::InvalidForm(p) if p[0].field == "objection_reason"),
        "{err:?}"
    );
    let inst = complete(&e, &inst, "notify", &leader, Some("sent"), empty())
        .await
        .unwrap();
    assert_eq!(inst.status, Status::Completed);
}

// ---------------------------------------------------------------------------------------------
// Fire and forget
// ---------------------------------------------------------------------------------------------

const CHILD: &str = r#"
id = "ff-child"
version = 1
title = "Child"
start = "work"
[roles]
clerk = "Clerk"
[data]
topic = { type = "string", required = true }
[steps.work]
role = "clerk"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;

const PARENT: &str = r#"
id = "ff-parent"
version = 1
title = "Parent"
start = "kick_off"
cancel_roles = ["clerk"]
[roles]
clerk = "Clerk"
[data]
topics = { type = "list", items = { type = "string" }, required = true }
[steps.kick_off]
kind = "subprocess"
procedure = "ff-child"
for_each = "topics"
wait = false
input.topic = "item"
next = [{ to = "go_on" }]
[steps.go_on]
role = "clerk"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;

#[tokio::test]
async fn children_started_without_waiting_run_on_their_own_and_are_linked_both_ways() {
    let (e, _) = with(&[CHILD, PARENT]).await;
    let clerk = person("cy", "office", &["clerk"], 2);
    let parent = e
        .start(
            "ff-parent",
            obj(json!({ "topics": ["a", "b"] })),
            Some(&clerk),
        )
        .await
        .unwrap();
    // The parent went on at once.
    assert_eq!(open_steps(&parent), ["go_on"]);
    let children: Vec<uuid::Uuid> = e
        .history(parent.id)
        .unwrap()
        .iter()
        .find_map(|ev| match &ev.kind {
            EventKind::ChildrenStarted {
                children, detached, ..
            } => {
                assert!(*detached);
                Some(children.iter().map(|c| c.id).collect())
            }
            _ => None,
        })
        .expect("the parent's history names its children");
    assert_eq!(children.len(), 2);
    for c in &children {
        let child = e.instance(*c).unwrap().expect("child stored");
        let link = child.parent.as_ref().expect("the child names its parent");
        assert_eq!(link.instance, parent.id);
        assert!(link.detached);
    }
    // Cancelling the parent leaves the children running; a child ending tells nobody.
    let parent = e
        .execute(
            parent.id,
            Command::Cancel {
                reason: "not needed".into(),
            },
            Some(&clerk),
        )
        .await
        .unwrap();
    assert_eq!(parent.status, Status::Cancelled);
    let child = e.instance(children[0]).unwrap().unwrap();
    assert_eq!(child.status, Status::Running);
    let child = complete(&e, &child, "work", &clerk, None, empty())
        .await
        .unwrap();
    assert_eq!(child.status, Status::Completed);
    assert_eq!(
        kinds(&e, parent.id).last().map(String::as_str),
        Some("cancelled")
    );
    assert_folds(&e, parent.id);
}

// ---------------------------------------------------------------------------------------------
// Partial join and termination
// ---------------------------------------------------------------------------------------------

const FIRST_ANSWER: &str = r#"
id = "first-answer"
version = 1
title = "First answer wins"
start = "ask"
[roles]
sales = "Sales"
quality = "Quality"
clerk = "Clerk"
[data]
topics = { type = "list", items = { type = "string" } }
[steps.ask]
kind = "parallel"
branches = ["ask_sales", "ask_quality", "ask_children"]
join = "answered"
[steps.ask_sales]
role = "sales"
next = [{ to = "answered" }]
[steps.ask_quality]
role = "quality"
deadline = { due = "2 days" }
next = [{ to = "answered" }]
[steps.ask_children]
kind = "subprocess"
procedure = "ff-child"
for_each = "topics"
input.topic = "item"
next = [{ to = "answered" }]
[steps.answered]
kind = "join"
wait_for = 1
next = [{ to = "decide" }]
[steps.decide]
role = "clerk"
outcomes = ["close", "withdraw_all"]
next = [{ on = "close", to = "closed" }, { on = "withdraw_all", to = "closed" }]
[steps.closed]
kind = "end"
"#;

#[tokio::test]
async fn a_partial_join_goes_on_after_the_first_branch_and_withdraws_the_rest() {
    let (e, _) = with(&[CHILD, FIRST_ANSWER]).await;
    let sid = person("sid", "sales", &["sales"], 2);
    let inst = e
        .start("first-answer", obj(json!({ "topics": ["x"] })), Some(&sid))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["ask_quality", "ask_sales"]);
    assert_eq!(inst.children.len(), 1);
    let child = *inst
        .children
        .values()
        .next()
        .unwrap()
        .pending
        .keys()
        .next()
        .unwrap();
    assert_eq!(inst.timers.len(), 1);
    let inst = complete(&e, &inst, "ask_sales", &sid, None, empty())
        .await
        .unwrap();
    assert_eq!(
        open_steps(&inst),
        ["decide"],
        "the other branches are withdrawn"
    );
    assert!(inst.children.is_empty() && inst.timers.is_empty() && inst.joins.is_empty());
    let withdrawn = e
        .history(inst.id)
        .unwrap()
        .into_iter()
        .find_map(|ev| match ev.kind {
            EventKind::Withdrawn {
                step,
                tasks,
                children,
                ..
            } => Some((step, tasks.len(), children)),
            _ => None,
        })
        .expect("one event says what was withdrawn");
    assert_eq!(withdrawn, ("answered".to_string(), 1, vec![child]));
    let child = e.instance(child).unwrap().unwrap();
    assert_eq!(
        child.status,
        Status::Cancelled,
        "the waiting child is cancelled"
    );
    // The quality task is closed: completing it now is a conflict, not a second answer.
    assert!(e
        .tasks_for(&person("q", "quality", &["quality"], 2))
        .unwrap()
        .is_empty());
    assert_folds(&e, inst.id);
}

const TERMINATE: &str = r#"
id = "terminate"
version = 1
title = "Stop everything"
start = "split"
[roles]
sales = "Sales"
quality = "Quality"
[steps.split]
kind = "parallel"
branches = ["sales_work", "quality_work"]
join = "together"
[steps.sales_work]
role = "sales"
outcomes = ["done", "customer_withdrew"]
next = [{ on = "done", to = "together" }, { on = "customer_withdrew", to = "withdrawn" }]
[steps.quality_work]
role = "quality"
next = [{ to = "together" }]
[steps.together]
kind = "join"
next = [{ to = "finished" }]
[steps.finished]
kind = "end"
[steps.withdrawn]
kind = "end"
terminate = true
"#;

#[tokio::test]
async fn a_terminating_end_closes_every_other_branch() {
    let (e, _) = with(&[TERMINATE]).await;
    let sid = person("sid", "sales", &["sales"], 2);
    let inst = e
        .start("terminate", obj(json!({})), Some(&sid))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["quality_work", "sales_work"]);
    let inst = complete(
        &e,
        &inst,
        "sales_work",
        &sid,
        Some("customer_withdrew"),
        empty(),
    )
    .await
    .unwrap();
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some("withdrawn"));
    assert!(inst.tasks.is_empty() && inst.joins.is_empty());
    let k = kinds(&e, inst.id);
    assert_eq!(&k[k.len() - 2..], ["withdrawn", "ended"]);
    // Without `terminate` the same file is refused by the validator.
    let plain = TERMINATE.replace("terminate = true\n", "");
    let v = validate_text("terminate.toml", &plain, &[], &HashSet::new());
    let codes: Vec<&str> = v.reports[0].diagnostics.iter().map(|d| d.code).collect();
    assert!(codes.contains(&"join-mismatch"), "{codes:?}");
    assert_folds(&e, inst.id);
}
