//! Procedures end to end through HTTP only, with the people of org.toml: a complaint with a
//! deadline breach, the other complaint routes, an internal evaluation with its corrective
//! actions, delegation, multi-signature, notifications and the worklist filters.

use chrono::Duration;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;
use crate::matrix::plan_form;

const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;

fn due_of(task: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    task["due"].as_str().map(at)
}

/// Scenario 1: registered late (the deadline breach escalates to the management
/// representative), handled as a major complaint, a second complaint caused by the service
/// (penalty recorded), and closed when the customer is satisfied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaint_with_a_deadline_breach_to_closure() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let id = id_of(&inst);
    let register = task_at(&inst, "register");
    assert_eq!(due_of(&inst["tasks"][0]), Some(t0() + Duration::hours(24)));
    // Offered to follow-up staff only.
    for user in ["xu.na", "gao.yan"] {
        let w = srv.worklist(user, "").await;
        assert!(w.iter().any(|t| t["id"] == json!(register)), "{user}");
    }
    assert!(srv.worklist("qian.li", "").await.is_empty());

    // 20 hours: the reminder (4h before) fires; nothing else.
    let v = srv.advance(json!({ "by": "20h" })).await;
    assert_eq!(v["fired"], 1, "{v}");
    let h = srv.history(&id).await;
    assert_eq!(
        kinds(&h).last().map(String::as_str),
        Some("deadline_reminded")
    );
    assert_eq!(srv.instance(&id).await["tasks"][0]["deadline"], "reminded");
    assert!(srv.worklist("qian.li", "").await.is_empty());

    // 25 hours: breached and escalated to the management representative.
    let v = srv.advance(json!({ "by": "5h" })).await;
    assert!(v["fired"].as_u64().is_some_and(|n| n >= 1), "{v}");
    let h = srv.history(&id).await;
    let breach = h
        .iter()
        .find(|e| e["kind"] == "deadline_breached")
        .expect("the breach is recorded");
    assert_eq!(breach["details"]["step"], "register");
    assert!(breach["by"].is_null(), "the clock acted, not a person");
    let escalated = h
        .iter()
        .find(|e| e["kind"] == "task_escalated")
        .expect("the escalation is recorded");
    assert_eq!(escalated["details"]["role"], "management_rep");
    assert_eq!(escalated["details"]["task"], json!(register));
    let inst = srv.instance(&id).await;
    assert_eq!(inst["tasks"][0]["deadline"], "escalated");
    assert_eq!(
        inst["tasks"][0]["roles"],
        json!(["follow_up", "management_rep"])
    );
    // Now on the management representative's worklist, overdue, and she may read it.
    let w = srv.worklist("qian.li", "").await;
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0]["id"], json!(register));
    assert_eq!(w[0]["overdue"], true);
    srv.get_ok("qian.li", &format!("/v1/instances/{id}")).await;
    srv.get_ok("qian.li", &format!("/v1/tasks/{register}"))
        .await;

    // gao.yan registers it (late) as a major complaint.
    let inst = srv
        .complete_step(&inst, "register", "gao.yan", None, registration("major"))
        .await;
    assert_eq!(open_steps(&inst), ["handle_by_management_rep"]);
    let h = srv.history(&id).await;
    let done = h
        .iter()
        .find(|e| e["kind"] == "task_completed")
        .expect("completion recorded");
    assert_eq!(done["details"]["on_time"], false);
    // Sales are not offered a major complaint.
    assert!(srv.worklist("liu.yang", "").await.is_empty());
    let inst = srv
        .complete_step(
            &inst,
            "handle_by_management_rep",
            "qian.li",
            None,
            management_plan(),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "implement_handling_plan",
            "qian.li",
            None,
            management_handling(),
        )
        .await;
    assert_eq!(open_steps(&inst), ["follow_up_visit"]);
    let inst = srv
        .complete_step(
            &inst,
            "follow_up_visit",
            "xu.na",
            None,
            json!({ "customer_satisfied": false, "satisfaction_score": 40, "customer_evaluation": "The brake still slips" }),
        )
        .await;
    assert_eq!(open_steps(&inst), ["second_complaint"]);
    // The after-sales department: luo.bin claims it, tang.kai cannot take it over.
    let second = task_at(&inst, "second_complaint");
    srv.post_expect(
        "luo.bin",
        &format!("/v1/tasks/{second}/claim"),
        json!(null),
        StatusCode::OK,
    )
    .await;
    srv.refused_completion(
        &id,
        "tang.kai",
        &second,
        None,
        json!({ "second_cause": "service", "second_findings": "x" }),
        StatusCode::CONFLICT,
    )
    .await;
    let inst = srv
        .complete_step(
            &inst,
            "second_complaint",
            "luo.bin",
            None,
            json!({ "second_cause": "service", "second_findings": "The technician skipped the brake test" }),
        )
        .await;
    let inst = srv
        .complete_step(&inst, "resolve_second", "tang.kai", None, resolution())
        .await;
    assert_eq!(open_steps(&inst), ["record_penalty"]);
    let inst = srv
        .complete_step(
            &inst,
            "record_penalty",
            "wu.fang",
            None,
            json!({ "responsible_person": "tang.kai", "penalty": "Written warning; service score −2" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "follow_up_visit",
            "gao.yan",
            None,
            json!({ "customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Works now" }),
        )
        .await;
    assert_eq!(inst["status"], "completed");
    assert_eq!(inst["end_step"], "closed");
    assert_eq!(inst["tasks"], json!([]));

    // The history says who did what.
    let h = srv.history(&id).await;
    let who: Vec<(String, String)> = completions(&h)
        .into_iter()
        .map(|(step, user, _)| (step, user))
        .collect();
    let want: Vec<(String, String)> = [
        ("register", "gao.yan"),
        ("handle_by_management_rep", "qian.li"),
        ("implement_handling_plan", "qian.li"),
        ("follow_up_visit", "xu.na"),
        ("second_complaint", "luo.bin"),
        ("resolve_second", "tang.kai"),
        ("record_penalty", "wu.fang"),
        ("follow_up_visit", "gao.yan"),
    ]
    .iter()
    .map(|(s, u)| (s.to_string(), u.to_string()))
    .collect();
    assert_eq!(who, want);
    let k = kinds(&h);
    assert_eq!(k.first().map(String::as_str), Some("started"));
    assert_eq!(k.last().map(String::as_str), Some("ended"));
    for kind in [
        "deadline_reminded",
        "deadline_breached",
        "task_escalated",
        "task_claimed",
    ] {
        assert!(k.iter().any(|x| x == kind), "{kind} missing from {k:?}");
    }
    // Every person event carries the person's department and roles at that moment.
    let claim = h
        .iter()
        .find(|e| e["kind"] == "task_claimed")
        .expect("claim recorded");
    assert_eq!(claim["by"]["user"], "luo.bin");
    assert_eq!(claim["by"]["department"], "after_sales");
    assert!(claim["by"]["roles"]
        .as_array()
        .is_some_and(|r| r.contains(&json!("after_sales"))));
    // Everyone's worklist is empty again; the auditor finds it among the completed.
    for user in [
        "xu.na", "gao.yan", "qian.li", "luo.bin", "tang.kai", "wu.fang",
    ] {
        assert!(srv.worklist(user, "").await.is_empty(), "{user}");
    }
    let done = srv.get_ok(AUDITOR, "/v1/instances?status=completed").await;
    assert_eq!(done["items"][0]["id"], json!(id));
    // A completed instance takes no more commands.
    srv.refused_post(
        &id,
        "qian.li",
        &format!("/v1/instances/{id}/cancel"),
        json!({ "reason": "late" }),
        StatusCode::CONFLICT,
    )
    .await;
}

/// The other complaint routes: general (sales resolves), crisis (sales analyses, follow-up
/// reports, the management representative handles) and a customer-caused second complaint
/// negotiated by the person the management representative names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaint_general_crisis_and_customer_caused_routes() {
    let srv = Server::start().await;
    // General.
    let inst = srv.start_complaint("liu.yang").await;
    let inst = srv
        .complete_step(&inst, "register", "xu.na", None, registration("general"))
        .await;
    assert_eq!(open_steps(&inst), ["resolve_general"]);
    // Not offered to the management representative.
    srv.refused_completion(
        &id_of(&inst),
        "qian.li",
        &task_at(&inst, "resolve_general"),
        None,
        resolution(),
        FORBIDDEN,
    )
    .await;
    let inst = srv
        .complete_step(&inst, "resolve_general", "he.ping", None, resolution())
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "follow_up_visit",
            "gao.yan",
            None,
            json!({ "customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Good" }),
        )
        .await;
    assert_eq!(inst["status"], "completed");

    // Crisis, then a second complaint caused by the customer.
    let inst = srv.start_complaint("gao.yan").await;
    let id = id_of(&inst);
    let inst = srv
        .complete_step(&inst, "register", "gao.yan", None, registration("crisis"))
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "analyse_crisis_causes",
            "he.ping",
            None,
            json!({ "cause_analysis": "Posted on social media after a delayed repair" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "crisis_report",
            "xu.na",
            None,
            json!({ "event_description": "Video of the hoist", "proposed_solution": "Visit and replace" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "handle_by_management_rep",
            "zhou.min",
            None,
            management_plan(),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "implement_handling_plan",
            "zhou.min",
            None,
            management_handling(),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "follow_up_visit",
            "xu.na",
            None,
            json!({ "customer_satisfied": false, "satisfaction_score": 40, "customer_evaluation": "Same again" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "second_complaint",
            "tang.kai",
            None,
            json!({ "second_cause": "customer", "second_findings": "The operator overloads the hoist" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "customer_cause_report",
            "liu.yang",
            None,
            json!({ "written_report": "Overload beyond the rated capacity" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "assign_dedicated_person",
            "qian.li",
            None,
            json!({ "dedicated_person": "luo.bin", "instructions": "Negotiate a training visit" }),
        )
        .await;
    // Assigned to the named person only.
    let negotiate = task_at(&inst, "negotiate");
    assert_eq!(inst["tasks"][0]["holder"], "luo.bin");
    assert!(srv
        .worklist("luo.bin", "")
        .await
        .iter()
        .any(|t| t["id"] == json!(negotiate)));
    assert!(srv.worklist("tang.kai", "").await.is_empty());
    let (s, _) = srv.get("tang.kai", &format!("/v1/tasks/{negotiate}")).await;
    assert_eq!(s, FORBIDDEN);
    let v = srv
        .get_ok("luo.bin", &format!("/v1/tasks/{negotiate}"))
        .await;
    assert_eq!(v["holder"], "luo.bin");
    let before = srv.snapshot(&id).await;
    let (s, _) = srv
        .complete("tang.kai", &negotiate, None, resolution())
        .await;
    assert_eq!(s, FORBIDDEN);
    srv.assert_unchanged(&id, &before, "negotiate by another")
        .await;
    let inst = srv
        .complete_step(&inst, "negotiate", "luo.bin", None, resolution())
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "follow_up_visit",
            "xu.na",
            None,
            json!({ "customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Agreed" }),
        )
        .await;
    assert_eq!(inst["status"], "completed");
    let steps: Vec<String> = completions(&srv.history(&id).await)
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(
        steps,
        [
            "register",
            "analyse_crisis_causes",
            "crisis_report",
            "handle_by_management_rep",
            "implement_handling_plan",
            "follow_up_visit",
            "second_complaint",
            "customer_cause_report",
            "assign_dedicated_person",
            "negotiate",
            "follow_up_visit"
        ]
    );
}

fn deduction_item(n: u32) -> Value {
    json!({
        "clause": format!("4.{n}"), "description": format!("Finding {n}"), "department": "sales",
        "department_head": "liu.yang", "part": "customer_service", "points_deducted": 1.0, "special": false
    })
}

/// Scenario 2: an internal evaluation of the sales department, from the plan to the
/// confirmation of rectification, with two corrective actions run as child instances.
/// Separation of duties refuses a sales auditor (403) and the implementer as verifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_evaluation_end_to_end() {
    let srv = Server::start().await;
    let inst = srv
        .start_instance("qian.li", "internal-evaluation", json!({}))
        .await;
    let id = id_of(&inst);
    let inst = srv
        .complete_step(&inst, "prepare_plan", "qian.li", None, plan_form())
        .await;
    // The plan goes to the general manager; first sent back once.
    // The management representative does not approve her own plan.
    srv.refused_completion(
        &id,
        "qian.li",
        &task_at(&inst, "approve_plan"),
        Some("approve"),
        json!({}),
        FORBIDDEN,
    )
    .await;
    let inst = srv
        .complete_step(
            &inst,
            "approve_plan",
            "zhao.gang",
            Some("rework"),
            json!({ "plan_comments": "Add the audit basis documents" }),
        )
        .await;
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
    let inst = srv
        .complete_step(
            &inst,
            "designate_team",
            "qian.li",
            None,
            json!({ "team_leader": "zheng.hao", "team_members": ["zheng.hao", "chen.jing"], "division_of_labour": "Zheng Hao leads" }),
        )
        .await;
    // §4.2: an auditor from the audited (sales) department is refused, and nothing changes.
    let checklist = json!({ "checklist": [{ "department": "sales", "time": "2026-11-20T09:00:00Z", "project": "Complaints", "content": "Records" }] });
    let before = srv.snapshot(&id).await;
    let r = srv
        .post_reply(
            "he.ping",
            &format!("/v1/tasks/{}/complete", task_at(&inst, "prepare_checklist")),
            json!({ "form": checklist }),
        )
        .await;
    assert_eq!(r.status, FORBIDDEN);
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains("separation") || detail.contains("department"),
        "{detail}"
    );
    srv.assert_unchanged(&id, &before, "separation of duties")
        .await;
    let inst = srv
        .complete_step(&inst, "prepare_checklist", "chen.jing", None, checklist)
        .await;
    // Assigned to the team leader named in the data.
    let notify = task_at(&inst, "notify_department");
    assert_eq!(inst["tasks"][0]["holder"], "zheng.hao");
    srv.refused_completion(
        &id,
        "chen.jing",
        &notify,
        None,
        json!({ "notice_date": "2026-11-10" }),
        FORBIDDEN,
    )
    .await;
    // §5.1.5: not earlier than 10 days before the audit (2026-11-20): 409 with the time it
    // opens, and nothing changes; the worklist says when it opens.
    let r = srv
        .post_reply(
            "zheng.hao",
            &format!("/v1/tasks/{notify}/complete"),
            json!({ "form": { "notice_date": "2026-11-02" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("2026-11-10 00:00 +08:00"), "{}", r.text());
    let listed = srv.worklist("zheng.hao", "").await;
    assert_eq!(listed[0]["opens"], "2026-11-09T16:00:00Z");
    srv.advance(json!({ "by": "184h" })).await;
    let inst = srv.instance(&id).await;
    let inst = srv
        .complete_step(
            &inst,
            "notify_department",
            "zheng.hao",
            None,
            json!({ "notice_date": "2026-11-10" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "await_objection",
            "liu.yang",
            Some("accept"),
            json!({}),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "first_meeting",
            "zheng.hao",
            None,
            json!({ "attendees": "GM, MR, team, sales", "final_meeting_time": "2026-11-20T16:00:00Z" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "on_site_audit",
            "chen.jing",
            None,
            json!({
                "service_system_score": 36.0, "commodity_service_score": 30.0, "customer_service_score": 20.0,
                "deleted_points": 10.0, "deduction_items": [deduction_item(1), deduction_item(2)]
            }),
        )
        .await;
    // §5.3.3 d: 86 / 90 × 100.
    let score = inst["data"]["score"].as_f64().expect("score computed");
    assert!((score - 95.555_555).abs() < 1e-3, "score {score}");
    let inst = srv
        .complete_step(
            &inst,
            "review_deductions",
            "zheng.hao",
            Some("confirm"),
            json!({}),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "final_meeting",
            "zheng.hao",
            None,
            json!({ "findings_agreed": true, "rectification_deadline": "2026-12-20" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "write_report",
            "zheng.hao",
            None,
            json!({ "report_summary": "Two deduction items", "conclusion": "Effective with corrections" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "approve_report",
            "qian.li",
            Some("approve"),
            json!({}),
        )
        .await;
    // The parent waits for its two corrective actions.
    assert_eq!(inst["status"], "running");
    assert_eq!(inst["tasks"], json!([]));
    let children = srv
        .get_ok(AUDITOR, "/v1/instances?procedure=corrective-action")
        .await;
    let children: Vec<String> = children["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(children.len(), 2);
    // The owner's worklist has both plans.
    let plans = srv
        .worklist("liu.yang", "procedure=corrective-action")
        .await;
    assert_eq!(plans.len(), 2, "{plans:?}");
    for (i, child) in children.iter().enumerate() {
        let c = srv
            .get_ok("liu.yang", &format!("/v1/instances/{child}"))
            .await;
        assert_eq!(c["parent"], json!(id));
        assert_eq!(c["data"]["owner"], "liu.yang");
        assert_eq!(c["data"]["reviewer"], "zheng.hao");
        let c = srv
            .complete_step(
                &c,
                "plan_rectification",
                "liu.yang",
                None,
                json!({ "impact_analysis": "Minor", "cause_analysis": "Training", "corrective_measures": "Retrain", "planned_completion": "2026-12-10" }),
            )
            .await;
        let c = srv
            .complete_step(
                &c,
                "implement",
                "liu.yang",
                None,
                json!({ "implementation_record": "Done", "document_changed": false, "witness_materials": [{ "description": "Attendance", "reference": "R-07" }] }),
            )
            .await;
        let verification = json!({ "plan_followed": true, "measures_completed": true, "nonconformity_corrected": true, "changes_controlled": true, "verification_notes": "Checked on site" });
        let before = srv.snapshot(child).await;
        let (s, _) = srv
            .complete(
                "liu.yang",
                &task_at(&c, "verify"),
                Some("verified"),
                verification.clone(),
            )
            .await;
        assert_eq!(s, FORBIDDEN, "the implementer does not verify");
        srv.assert_unchanged(child, &before, "verify by the implementer")
            .await;
        let c = srv
            .complete_step(&c, "verify", "zheng.hao", Some("verified"), verification)
            .await;
        assert_eq!(c["status"], "completed");
        let parent = srv.instance(&id).await;
        if i == 0 {
            assert_eq!(
                parent["tasks"],
                json!([]),
                "the parent waits for all children"
            );
        } else {
            assert_eq!(open_steps(&parent), ["confirm_rectification"]);
            let results = parent["data"]["corrective_results"]
                .as_array()
                .expect("results collected");
            assert_eq!(results.len(), 2);
        }
    }
    let parent = srv.instance(&id).await;
    let done = srv
        .complete_step(
            &parent,
            "confirm_rectification",
            "zheng.hao",
            None,
            json!({ "rectification_summary": "All verified" }),
        )
        .await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["data"]["all_verified"], true);
    let who = completions(&srv.history(&id).await);
    assert_eq!(who.first().map(|c| c.1.as_str()), Some("qian.li"));
    assert!(who
        .iter()
        .any(|c| c.0 == "approve_plan" && c.1 == "zhou.min"));
    assert!(who
        .iter()
        .any(|c| c.0 == "prepare_checklist" && c.1 == "chen.jing"));
    assert_eq!(who.last().map(|c| c.1.as_str()), Some("zheng.hao"));
    let all = srv.get_ok(ADMIN, "/v1/instances?status=completed").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(3));
}

/// Scenario 3a: the management representative's approval of a document change delegated
/// upwards with a reason, through HTTP; every refused delegation changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegating_a_document_change_approval() {
    let srv = Server::start().await;
    let inst = srv
        .start_instance(
            "lin.tao",
            "document-change",
            json!({
                "document_number": "CX-05", "document_title": "Document Control Procedure",
                "document_type": "management", "current_revision": "B/1",
                "applicant": "lin.tao"
            }),
        )
        .await;
    let id = id_of(&inst);
    let inst = srv
        .complete_step(
            &inst,
            "apply",
            "lin.tao",
            None,
            json!({
                "change_reason": "The retrieval of old copies is not described clearly enough",
                "change_content": "Rewrite §4.7.3 to name who retrieves old copies and when",
                "important": false, "change_method": "page_change"
            }),
        )
        .await;
    let approve = task_at(&inst, "approve_mr");
    let delegate = format!("/v1/tasks/{approve}/delegate");
    let before = srv.snapshot(&id).await;
    for (who, body, want) in [
        // Below the delegator's level (5 → 4).
        (
            "zhou.min",
            json!({ "to": "qian.li", "reason": "Travelling" }),
            FORBIDDEN,
        ),
        // Holds no approving role.
        (
            "qian.li",
            json!({ "to": "liu.yang", "reason": "Travelling" }),
            FORBIDDEN,
        ),
        // Not someone who could take the task.
        (
            "lin.tao",
            json!({ "to": "zhou.min", "reason": "Travelling" }),
            FORBIDDEN,
        ),
        (
            AUDITOR,
            json!({ "to": "zhou.min", "reason": "Travelling" }),
            FORBIDDEN,
        ),
        // A reason is required.
        (
            "qian.li",
            json!({ "to": "zhou.min" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "qian.li",
            json!({ "to": "zhou.min", "reason": "  " }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        // Not to oneself, nobody, or someone who has left.
        (
            "qian.li",
            json!({ "to": "qian.li", "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "qian.li",
            json!({ "to": "no.body", "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "qian.li",
            json!({ "to": "shi.lan", "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        // Malformed.
        ("qian.li", json!({ "reason": "x" }), StatusCode::BAD_REQUEST),
        (
            "qian.li",
            json!({ "to": "zhou.min", "reason": "x", "until": "Friday" }),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, v) = srv.post(who, &delegate, body.clone()).await;
        assert_eq!(s, want, "{who} {body}: {v}");
        srv.assert_unchanged(&id, &before, &format!("{who} {body}"))
            .await;
    }
    let v = srv
        .post_expect(
            "qian.li",
            &delegate,
            json!({ "to": "zhou.min", "reason": "On leave until Friday" }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["tasks"][0]["delegated_to"], "zhou.min");
    assert_eq!(v["tasks"][0]["holder"], "zhou.min");
    // Now only on the delegate's worklist; the delegator can no longer complete it: a
    // conflict (the task moved on), since she could have before.
    assert!(srv.worklist("qian.li", "").await.is_empty());
    let w = srv.worklist("zhou.min", "").await;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0]["holder"], "zhou.min");
    srv.refused_completion(
        &id,
        "qian.li",
        &approve,
        Some("approve"),
        json!({}),
        StatusCode::CONFLICT,
    )
    .await;
    // Both may read it: the delegate holds it, the delegator holds the role.
    for user in ["zhou.min", "qian.li"] {
        srv.get_ok(user, &format!("/v1/tasks/{approve}")).await;
    }
    let inst = srv
        .complete_step(
            &v,
            "approve_mr",
            "zhou.min",
            Some("approve"),
            json!({ "approval_comments": "Approved for Qian Li" }),
        )
        .await;
    assert_eq!(open_steps(&inst), ["make_partial_change"]);
    let h = srv.history(&id).await;
    let delegated = h
        .iter()
        .find(|e| e["kind"] == "task_delegated")
        .expect("delegation recorded");
    assert_eq!(delegated["by"]["user"], "qian.li");
    assert_eq!(delegated["details"]["to"], "zhou.min");
    assert_eq!(delegated["details"]["reason"], "On leave until Friday");
    assert!(completions(&h).contains(&(
        "approve_mr".to_string(),
        "zhou.min".to_string(),
        Some("qian.li".to_string())
    )));
    // The delegator took part, so still reads the instance.
    srv.get_ok("qian.li", &format!("/v1/instances/{id}")).await;
    // The office finishes it.
    let inst = srv
        .complete_step(
            &inst,
            "make_partial_change",
            "wu.fang",
            None,
            json!({ "new_revision": "B/2", "changed_pages": "12" }),
        )
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "distribute",
            "wu.fang",
            None,
            json!({
                "server_updated": true,
                "distribution_record": [{ "department": "sales", "recipient": "liu.yang", "distribution_number": "D-07", "old_copy_retrieved": true }]
            }),
        )
        .await;
    // The recipient signs for the copy in person (§4.6.1 b): the task is in their worklist.
    let receipt = task_at(&inst, "confirm_receipt");
    assert!(srv
        .worklist("liu.yang", "")
        .await
        .iter()
        .any(|t| t["id"] == receipt.as_str() && t["people"] == json!(["liu.yang"])));
    let inst = srv
        .complete_step(&inst, "confirm_receipt", "liu.yang", None, json!({}))
        .await;
    let inst = srv
        .complete_step(
            &inst,
            "invalidate_old_copies",
            "wu.fang",
            None,
            json!({ "old_copies": [{ "distribution_number": "D-07", "disposition": "invalidated" }] }),
        )
        .await;
    let (s, _) = srv
        .complete(
            "chen.jing",
            &task_at(&inst, "register_change"),
            None,
            json!({ "change_record_number": "CR-2026-031", "document_list_updated": true }),
        )
        .await;
    assert_eq!(
        s, FORBIDDEN,
        "chen.jing is office staff but no document admin"
    );
    let inst = srv
        .complete_step(
            &inst,
            "register_change",
            "wu.fang",
            None,
            json!({ "change_record_number": "CR-2026-031", "document_list_updated": true }),
        )
        .await;
    assert_eq!(inst["status"], "completed");
    assert_eq!(inst["end_step"], "changed");
}

/// Scenario 3b: breaches that notify a role; the notifications are visible to that role's
/// holders only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaches_notify_the_named_role() {
    let srv = Server::start().await;
    let a = srv.start_complaint("xu.na").await;
    let a_id = id_of(&a);
    let register = task_at(&a, "register");
    for user in ["zhao.gang", "zhou.min", "qian.li", "xu.na"] {
        let v = srv.get_ok(user, "/v1/notifications").await;
        assert_eq!(v["items"], json!([]), "{user}");
    }
    // Breach at 24h escalates; one working day later the general manager is told.
    srv.advance(json!({ "by": "25h" })).await;
    let v = srv.get_ok("zhao.gang", "/v1/notifications").await;
    assert_eq!(v["items"], json!([]), "not yet: {v}");
    srv.advance(json!({ "by": "1 working day" })).await;
    for user in ["zhao.gang", "zhou.min"] {
        let v = srv.get_ok(user, "/v1/notifications").await;
        let items = v["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "{user}: {v}");
        assert_eq!(items[0]["role"], "general_manager");
        assert_eq!(items[0]["instance"], json!(a_id));
        assert_eq!(items[0]["task"], json!(register));
        assert!(items[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
        let seq = items[0]["seq"].as_u64().expect("seq");
        let h = srv.history(&a_id).await;
        let source = h
            .iter()
            .find(|e| e["seq"] == seq)
            .expect("the notification's history entry");
        assert_eq!(source["kind"], "notified");
    }
    // The follow-up personnel were reminded 4 h before the due time (the task is offered to
    // their role); the general manager's notification is not theirs.
    let v = srv.get_ok("xu.na", "/v1/notifications").await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["items"][0]["role"], "follow_up");
    assert!(v["items"][0]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("Reminder")));
    for user in ["qian.li", AUDITOR] {
        let v = srv.get_ok(user, "/v1/notifications").await;
        assert_eq!(v["items"], json!([]), "{user}: {v}");
    }

    // The follow-up visit breach (3 working days) notifies the management representative.
    let b = srv.start_complaint("gao.yan").await;
    let b_id = id_of(&b);
    let b = srv
        .complete_step(&b, "register", "gao.yan", None, registration("general"))
        .await;
    srv.complete_step(&b, "resolve_general", "liu.yang", None, resolution())
        .await;
    srv.advance(json!({ "by": "4 working days" })).await;
    let v = srv.get_ok("qian.li", "/v1/notifications").await;
    let items = v["items"].as_array().expect("items");
    assert!(
        items
            .iter()
            .any(|n| n["role"] == "management_rep" && n["instance"] == json!(b_id)),
        "{v}"
    );
    // Newest first, and limited on request.
    let v = srv.get_ok("zhou.min", "/v1/notifications").await;
    let items = v["items"].as_array().expect("items");
    assert!(items.len() >= 2, "{v}");
    let ats: Vec<chrono::DateTime<chrono::Utc>> = items
        .iter()
        .filter_map(|n| n["at"].as_str().map(at))
        .collect();
    assert!(ats.windows(2).all(|w| w[0] >= w[1]), "{ats:?}");
    let v = srv.get_ok("zhou.min", "/v1/notifications?limit=1").await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1));
}

/// Scenario 3c: a step signed by several people (recall: joint identification by
/// engineering and quality, one signature per role).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joint_identification_needs_a_signature_per_role() {
    let srv = Server::start().await;
    let inst = srv
        .start_instance(
            "wang.qiang",
            "recall",
            json!({ "product": "QD hoist", "batch_or_model": "Batch 2026-07", "source": "user_report" }),
        )
        .await;
    let id = id_of(&inst);
    let inst = srv
        .complete_step(
            &inst,
            "record_report",
            "zheng.hao",
            None,
            json!({ "channel": "telephone", "reporter": "Customer", "defect_description": "Brake slips", "state_designated_department": false }),
        )
        .await;
    let task = task_at(&inst, "identify_jointly");
    let form = json!({ "identification_basis": "potential_damage", "identification_findings": "Brake lining wears early" });
    // No claim on a signed step.
    srv.refused_post(
        &id,
        "lin.tao",
        &format!("/v1/tasks/{task}/claim"),
        json!(null),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let v = srv
        .post_expect(
            "lin.tao",
            &format!("/v1/tasks/{task}/complete"),
            json!({ "outcome": "defective", "form": form }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["tasks"][0]["signatures"], 1);
    let before = srv.snapshot(&id).await;
    // Signing twice, or without a signing role, or as the auditor.
    let (s, _) = srv
        .complete("lin.tao", &task, Some("defective"), form.clone())
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    for user in ["guo.jun", AUDITOR, ADMIN] {
        let (s, _) = srv
            .complete(user, &task, Some("defective"), form.clone())
            .await;
        assert_eq!(s, FORBIDDEN, "{user}");
    }
    srv.assert_unchanged(&id, &before, "refused signatures")
        .await;
    // A second engineer is not the quality signature: still open.
    let v = srv
        .post_expect(
            "feng.yu",
            &format!("/v1/tasks/{task}/complete"),
            json!({ "outcome": "defective", "form": form }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["tasks"][0]["step"], "identify_jointly");
    assert_eq!(v["tasks"][0]["signatures"], 2);
    let v = srv
        .post_expect(
            "wang.qiang",
            &format!("/v1/tasks/{task}/complete"),
            json!({ "outcome": "defective", "form": form }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(open_steps(&v), ["assess_hazard", "estimate_losses"]);
    let h = srv.history(&id).await;
    let signers: Vec<String> = h
        .iter()
        .filter(|e| {
            e["kind"] == "signed"
                || (e["kind"] == "task_completed" && e["details"]["step"] == "identify_jointly")
        })
        .map(|e| e["by"]["user"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(signers, ["lin.tao", "feng.yu", "wang.qiang"]);
    // Only the general manager cancels a recall.
    srv.refused_post(
        &id,
        "wang.qiang",
        &format!("/v1/instances/{id}/cancel"),
        json!({ "reason": "x" }),
        FORBIDDEN,
    )
    .await;
    let v = srv
        .post_expect(
            "zhao.gang",
            &format!("/v1/instances/{id}/cancel"),
            json!({ "reason": "Supplier recall covers it" }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["status"], "cancelled");
}

/// Scenario 4: the worklist filters (role, procedure, due_before, state) and its order (due
/// time, then tasks without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worklist_filters_and_order() {
    let srv = Server::start().await;
    // A: due t0+24h.
    let a = srv.start_complaint("xu.na").await;
    let a_task = task_at(&a, "register");
    srv.advance(json!({ "by": "2h" })).await;
    // B: due t0+26h.
    let b = srv.start_complaint("gao.yan").await;
    let b_task = task_at(&b, "register");
    // C: a document change assigned to xu.na, no due time.
    let c = srv
        .start_instance(
            "xu.na",
            "document-change",
            json!({
                "document_number": "R-12", "document_title": "Follow-up record",
                "document_type": "record", "current_revision": "A/0",
                "applicant": "xu.na"
            }),
        )
        .await;
    let c_task = task_at(&c, "apply");
    // D: an internal evaluation (management representative; no due time).
    srv.start_instance("qian.li", "internal-evaluation", json!({}))
        .await;

    let ids = |w: &[Value]| -> Vec<String> { w.iter().map(id_of).collect() };
    let all = srv.worklist("xu.na", "").await;
    assert_eq!(
        ids(&all),
        [a_task.as_str(), b_task.as_str(), c_task.as_str()]
    );
    assert!(all[2]["due"].is_null());
    assert_eq!(all[2]["holder"], "xu.na");
    assert_eq!(
        ids(&srv.worklist("xu.na", "procedure=complaint-handling").await),
        [a_task.as_str(), b_task.as_str()]
    );
    assert_eq!(
        ids(&srv.worklist("xu.na", "procedure=document-change").await),
        [c_task.as_str()]
    );
    assert!(srv.worklist("xu.na", "procedure=recall").await.is_empty());
    assert_eq!(
        ids(&srv.worklist("xu.na", "role=follow_up").await),
        [a_task.as_str(), b_task.as_str()]
    );
    assert!(srv.worklist("xu.na", "role=sales").await.is_empty());
    assert_eq!(
        ids(&srv
            .worklist("xu.na", "due_before=2026-11-03T01:30:00Z")
            .await),
        [a_task.as_str()],
        "before t0+24h30m"
    );
    assert_eq!(
        ids(&srv
            .worklist("xu.na", "due_before=2026-11-03T12:00:00%2B08:00")
            .await),
        [a_task.as_str(), b_task.as_str()]
    );
    assert!(srv
        .worklist("xu.na", "due_before=2026-11-02T00:00:00Z")
        .await
        .is_empty());
    assert_eq!(
        ids(&srv.worklist("xu.na", "limit=1").await),
        [a_task.as_str()]
    );
    // gao.yan sees both complaints, not xu.na's document change.
    assert_eq!(
        ids(&srv.worklist("gao.yan", "").await),
        [a_task.as_str(), b_task.as_str()]
    );
    // Claiming B: held by xu.na, gone from gao.yan's list.
    srv.post_expect(
        "xu.na",
        &format!("/v1/tasks/{b_task}/claim"),
        json!(null),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids(&srv.worklist("xu.na", "state=held").await),
        [b_task.as_str(), c_task.as_str()]
    );
    assert_eq!(
        ids(&srv.worklist("xu.na", "state=offered").await),
        [a_task.as_str()]
    );
    assert_eq!(ids(&srv.worklist("gao.yan", "").await), [a_task.as_str()]);
    assert!(srv.worklist("gao.yan", "state=held").await.is_empty());
    assert!(srv.worklist("xu.na", "state=overdue").await.is_empty());
    // t0+25h: A is overdue (and escalated to the management representative), B not yet.
    srv.advance(json!({ "by": "23h" })).await;
    let overdue = srv.worklist("xu.na", "state=overdue").await;
    assert_eq!(ids(&overdue), [a_task.as_str()]);
    assert_eq!(overdue[0]["overdue"], true);
    let mine = srv.worklist("xu.na", "").await;
    assert_eq!(mine[1]["overdue"], false);
    assert_eq!(
        ids(&srv
            .worklist("qian.li", "role=management_rep&state=overdue")
            .await),
        [a_task.as_str()]
    );
    // The management representative's whole list: A (due), then the evaluation's plan.
    let qian = srv.worklist("qian.li", "").await;
    assert_eq!(qian.len(), 2, "{qian:?}");
    assert_eq!(qian[0]["id"], json!(a_task));
    assert_eq!(qian[1]["step"], "prepare_plan");
    // Sorted by due time everywhere, tasks without one last.
    for user in ["xu.na", "gao.yan", "qian.li"] {
        let w = srv.worklist(user, "").await;
        let dues: Vec<Option<chrono::DateTime<chrono::Utc>>> = w.iter().map(due_of).collect();
        let mut sorted = dues.clone();
        sorted.sort_by_key(|d| (d.is_none(), *d));
        assert_eq!(dues, sorted, "{user}");
    }
    // Bad filters.
    for q in [
        "state=mine",
        "due_before=soon",
        "limit=0",
        "limit=1001",
        "rol=sales",
    ] {
        let (s, _) = srv.get("xu.na", &format!("/v1/tasks?{q}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
    }
}

/// Restarting on the same data directory keeps the instances and the demo tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_flushes_and_a_restart_keeps_everything() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let id = id_of(&inst);
    let token = srv.token("xu.na").to_string();
    let store_url = srv.store_url();
    let (stopped, dir) = srv.stop().await;
    stopped.expect("the server stops cleanly");
    let keep = dir.path().to_path_buf();
    let cfg = sopflow::http::server::ServeConfig {
        data_dir: keep.clone(),
        store_url,
        procedures: "procedures".into(),
        directory: "org.toml".into(),
        calendars: None,
        calendar: "default".into(),
        listen: "127.0.0.1:0".parse().expect("address"),
        clock: sopflow::http::server::ClockChoice::Manual(Some(t0())),
        limits: sopflow::http::Limits::default(),
        demo_tokens: true,
        cache_bytes: 16 << 20,
        watch: false,
        outbox: Default::default(),
    };
    let bound = match sopflow::http::server::bind(&cfg).await {
        Ok(b) => b,
        Err(e) => panic!("the server does not start again: {e}"),
    };
    assert!(
        bound.issued_tokens.is_empty(),
        "the demo tokens of the first start are reused"
    );
    let addr = bound.addr;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let res = client
        .get(format!("http://{addr}/v1/instances/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("a reply");
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.expect("JSON");
    assert_eq!(v["id"], json!(id));
    assert_eq!(open_steps(&v), ["register"]);
    drop(client);
    let _ = tx.send(());
    task.await
        .expect("the server task does not panic")
        .expect("the server stops cleanly");
}
