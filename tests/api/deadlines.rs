//! Deadlines as people see them (issue 13 items 6, 8, 9 and 10), driven by the manual clock:
//! "overdue" means `now >= due` from the due instant on, also for a task that opens late; a
//! reminder reaches the people the task is offered to or held by (a notification, the
//! worklist row's state, the `reminded` filter), and a repeating one stops when the task
//! closes; a deadline's `take` spares a claimed task unless told otherwise; an ended instance
//! takes no more comments. Fixture: `tests/fixtures/runtime/deadline-choices.toml`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

fn row_for<'a>(rows: &'a [Value], task: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["id"] == task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_from_the_due_instant_on() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let register = task_at(&inst, "register");
    srv.advance(json!({ "by": "24h" })).await.to_string();
    // Exactly at the due time: overdue, in the worklist, the filter and the instance view.
    let rows = srv.worklist("xu.na", "state=overdue").await;
    let row = row_for(&rows, &register).expect("listed as overdue at the due instant");
    assert_eq!(row["overdue"], true);
    let view = srv.instance(&id_of(&inst)).await;
    let open = view["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == register.as_str()))
        .cloned()
        .expect("the open task");
    assert_eq!(open["overdue"], true, "{open}");
    assert_ne!(open["deadline"], "on_time", "{open}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_opens_past_its_due_time_is_overdue_at_once() {
    let srv = Server::start().await;
    let inst = srv
        .start_instance(
            "qian.li",
            "corrective-action",
            json!({
                "clause": "5.3", "finding": "Records incomplete", "department": "sales",
                "owner": "liu.yang", "rectification_deadline": "2026-10-01",
                "reviewer": "zheng.hao"
            }),
        )
        .await;
    let task = inst["tasks"][0].clone();
    assert_eq!(task["step"], "plan_rectification");
    assert_eq!(task["overdue"], true, "{task}");
    assert_eq!(task["deadline"], "breached", "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_reaches_the_role_and_shows_on_the_worklist() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let register = task_at(&inst, "register");
    assert!(srv.worklist("xu.na", "state=reminded").await.is_empty());
    // Reminded 4 h before the 24 h deadline.
    srv.advance(json!({ "by": "20h" })).await;
    let rows = srv.worklist("xu.na", "state=reminded").await;
    let row = row_for(&rows, &register).expect("listed as reminded");
    assert_eq!(row["deadline"], "reminded");
    assert_eq!(row["overdue"], false);
    for user in ["xu.na", "gao.yan"] {
        let v = srv.get_ok(user, "/v1/notifications").await;
        let items = v["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "{user}: {v}");
        assert_eq!(items[0]["role"], "follow_up");
        assert_eq!(items[0]["task"], json!(register));
    }
    // Not for anyone the task is not offered to.
    let v = srv.get_ok("liu.yang", "/v1/notifications").await;
    assert_eq!(v["items"], json!([]));
    // An unknown state is a clear 400 naming the choices.
    let r = srv.get_reply("xu.na", "/v1/tasks?state=later").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("reminded"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeating_reminder_tells_the_holder_each_day_until_the_task_is_done() {
    let (srv, _procs) = Server::start_with_fixtures(&["deadline-choices.toml"]).await;
    let inst = srv
        .start_instance("liu.yang", "deadline-choices", json!({ "which": "nagged" }))
        .await;
    let task = task_at(&inst, "nagged");
    srv.post_expect(
        "he.ping",
        &format!("/v1/tasks/{task}/claim"),
        json!({}),
        StatusCode::OK,
    )
    .await;
    srv.advance(json!({ "by": "3 days" })).await;
    // Held by he.ping: the reminders are his alone, one a day.
    let mine = srv.get_ok("he.ping", "/v1/notifications").await;
    let items = mine["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{mine}");
    assert!(items
        .iter()
        .all(|n| n["user"] == "he.ping" && n["role"].is_null()));
    let theirs = srv.get_ok("liu.yang", "/v1/notifications").await;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    let h = srv.history(&id_of(&inst)).await;
    let reminded: Vec<&Value> = h
        .iter()
        .filter(|e| e["kind"] == "deadline_reminded")
        .collect();
    assert_eq!(reminded.len(), 3);
    // Each on its own day, not all at the end of the clock move.
    let days: std::collections::HashSet<&str> = reminded
        .iter()
        .filter_map(|e| e["at"].as_str())
        .map(|at| &at[..10])
        .collect();
    assert_eq!(days.len(), 3, "{reminded:?}");
    // Done: the reminders stop.
    let (s, v) = srv.complete("he.ping", &task, None, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    srv.advance(json!({ "by": "3 days" })).await;
    let h = srv.history(&id_of(&inst)).await;
    assert_eq!(
        h.iter()
            .filter(|e| e["kind"] == "deadline_reminded")
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_spares_a_claimed_task_unless_told_to_take_it_even_so() {
    let (srv, _procs) = Server::start_with_fixtures(&["deadline-choices.toml"]).await;
    let spared = srv
        .start_instance("liu.yang", "deadline-choices", json!({ "which": "spared" }))
        .await;
    let taken = srv
        .start_instance("liu.yang", "deadline-choices", json!({ "which": "taken" }))
        .await;
    let unclaimed = srv
        .start_instance("liu.yang", "deadline-choices", json!({ "which": "spared" }))
        .await;
    let spared_task = task_at(&spared, "spared");
    let taken_task = task_at(&taken, "taken");
    for task in [&spared_task, &taken_task] {
        srv.post_expect(
            "he.ping",
            &format!("/v1/tasks/{task}/claim"),
            json!({}),
            StatusCode::OK,
        )
        .await;
    }
    srv.advance(json!({ "by": "2 days" })).await;

    // Default: the person holding the task keeps it, and the history says why.
    let view = srv.instance(&id_of(&spared)).await;
    assert_eq!(view["status"], "running");
    let h = srv.history(&id_of(&spared)).await;
    let breach = h
        .iter()
        .find(|e| e["kind"] == "deadline_breached")
        .expect("the breach");
    let action = breach["details"]["action"].as_str().unwrap_or_default();
    assert!(
        action.contains("not taken") && action.contains("he.ping"),
        "{action}"
    );
    let (s, v) = srv
        .complete("he.ping", &spared_task, Some("object"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Unclaimed: taken as declared.
    let view = srv.instance(&id_of(&unclaimed)).await;
    assert_eq!(view["status"], "completed", "{view}");
    // `even_if_claimed = true`: taken from the holder, who is then told it is done.
    let view = srv.instance(&id_of(&taken)).await;
    assert_eq!(view["status"], "completed", "{view}");
    let (s, _) = srv
        .complete("he.ping", &taken_task, Some("object"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_instance_takes_no_comments() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let id = id_of(&inst);
    let path = format!("/v1/instances/{id}/comments");
    srv.post_expect(
        "xu.na",
        &path,
        json!({ "text": "Called back" }),
        StatusCode::CREATED,
    )
    .await;
    srv.post_expect(
        "qian.li",
        &format!("/v1/instances/{id}/cancel"),
        json!({ "reason": "Duplicate of another complaint" }),
        StatusCode::OK,
    )
    .await;
    let v = srv
        .refused_post(
            &id,
            "xu.na",
            &path,
            json!({ "text": "One more thing" }),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(
        v["detail"].as_str().is_some_and(|d| d.contains("ended")),
        "{v}"
    );
    // Not even the admin annotates a closed record.
    srv.refused_post(
        &id,
        ADMIN,
        &path,
        json!({ "text": "Note" }),
        StatusCode::CONFLICT,
    )
    .await;
}
