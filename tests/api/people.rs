//! People and departments named in data are checked against the directory when the command
//! runs (issue 13 items 2 and 3): an unknown or inactive user, an unknown department, or a
//! person designated for later steps whose separation rules they would break is refused
//! with `invalid-form` naming the field, and nothing is written.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;
use crate::matrix::plan_form;

fn corrective(owner: &str, department: &str, reviewer: &str) -> Value {
    json!({
        "clause": "5.3", "finding": "Complaint records incomplete", "department": department,
        "owner": owner, "rectification_deadline": "2026-12-01", "reviewer": reviewer
    })
}

/// Starting with `data` must be refused with invalid-form naming `field`, storing nothing.
async fn refused_start(srv: &Server, data: Value, field: &str) -> String {
    let before = srv.dump();
    let r = srv
        .post_reply(
            "qian.li",
            "/v1/instances",
            json!({ "procedure": "corrective-action", "data": data }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.problem_kind(), "invalid-form");
    let body = r.json();
    let fields: Vec<&str> = body["problems"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, [field], "{body}");
    assert_eq!(before, srv.dump(), "a refused start wrote to the store");
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_data_naming_nobody_or_nowhere_is_refused() {
    let srv = Server::start().await;
    let body = refused_start(&srv, corrective("nobody", "sales", "zheng.hao"), "owner").await;
    assert!(body.contains("nobody"), "{body}");
    // shi.lan has left the company (`active = false`).
    refused_start(&srv, corrective("liu.yang", "sales", "shi.lan"), "reviewer").await;
    let body = refused_start(
        &srv,
        corrective("liu.yang", "nowhere", "zheng.hao"),
        "department",
    )
    .await;
    assert!(body.contains("nowhere"), "{body}");
    // With real people it starts, and the task is held by the owner, who can see it.
    let inst = srv
        .start_instance(
            "qian.li",
            "corrective-action",
            corrective("liu.yang", "sales", "zheng.hao"),
        )
        .await;
    let rows = srv.worklist("liu.yang", "").await;
    assert!(rows.iter().any(|r| r["instance"] == inst["id"]), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_naming_an_unknown_user_is_refused_and_changes_nothing() {
    let srv = Server::start().await;
    let inst = srv
        .start_instance("qian.li", "internal-evaluation", json!({}))
        .await;
    let id = id_of(&inst);
    let mut plan = plan_form();
    plan["audited_department_head"] = json!("ghost");
    let v = srv
        .refused_completion(
            &id,
            "qian.li",
            &task_at(&inst, "prepare_plan"),
            None,
            plan,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert_eq!(v["problems"][0]["field"], "audited_department_head", "{v}");
}

/// §4.2 of the evaluation procedure: evaluators have no responsibility for the audited
/// department. The team leader is assigned every later team step, each with
/// `not_from_department = "audited_department"`, so choosing a leader from the audited
/// department is refused when they are chosen, not when the evaluation reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_leader_from_the_audited_department_is_refused_at_designation() {
    let srv = Server::start().await;
    let inst = srv
        .start_instance("qian.li", "internal-evaluation", json!({}))
        .await;
    let id = id_of(&inst);
    let inst = srv
        .complete_step(&inst, "prepare_plan", "qian.li", None, plan_form())
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "approve_plan",
            "zhou.min",
            Some("approve"),
            json!({}),
        )
        .await;
    // he.ping is an evaluator, but from sales, the audited department.
    let v = srv
        .refused_completion(
            &id,
            "qian.li",
            &task_at(&inst, "designate_team"),
            None,
            json!({ "team_leader": "he.ping", "team_members": ["he.ping"], "division_of_labour": "He Ping leads" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert_eq!(v["problems"][0]["field"], "team_leader", "{v}");
    let msg = v["problems"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("he.ping") && msg.contains("sales"), "{msg}");
    // An evaluator from quality may lead.
    srv.complete_step(
        &inst,
        "designate_team",
        "qian.li",
        None,
        json!({ "team_leader": "zheng.hao", "team_members": ["zheng.hao"], "division_of_labour": "Zheng Hao leads" }),
    )
    .await;
}
