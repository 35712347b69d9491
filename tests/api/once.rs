//! Idempotency keys over HTTP: a retried command (same caller, key and request) gets the
//! first answer and changes nothing, a reused key with another request is a 422, racing
//! retries make one instance; and the worklist pages with its cursor.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;

async fn keyed(srv: &Server, user: &str, path: &str, body: Value, key: &str) -> Reply {
    srv.send(
        Method::POST,
        path,
        Auth::User(user),
        Body::Json(body),
        &[("Idempotency-Key", key)],
    )
    .await
}

fn start_body() -> Value {
    json!({ "procedure": "complaint-handling", "data": complaint_data() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_start_returns_the_first_answer_and_starts_nothing() {
    let srv = Server::start().await;
    let first = keyed(&srv, "xu.na", "/v1/instances", start_body(), "order-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    let before = srv.all_instances().await;
    let again = keyed(&srv, "xu.na", "/v1/instances", start_body(), "order-1").await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.json(), first.json());
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(srv.all_instances().await, before);

    // The same key with another body is refused and changes nothing.
    let mut other = start_body();
    other["data"]["customer"] = json!("Someone else");
    let r = keyed(&srv, "xu.na", "/v1/instances", other, "order-1").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("order-1"), "{}", r.text());
    assert_eq!(srv.all_instances().await, before);

    // Another person's key of the same text is theirs.
    let r = keyed(&srv, "gao.yan", "/v1/instances", start_body(), "order-1").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_ne!(r.json()["id"], first.json()["id"]);

    // A key that is not visible ASCII, or too long, is a 400 before anything runs.
    for bad in ["a b", &"k".repeat(256)] {
        let r = keyed(&srv, "xu.na", "/v1/instances", start_body(), bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.text());
    }
    assert_eq!(srv.all_instances().await.len(), before.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_task_commands_are_answered_once_and_recorded_once() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let id = inst["id"].as_str().unwrap().to_string();
    let task = task_at(&inst, "register");
    let claim = format!("/v1/tasks/{task}/claim");
    let a = keyed(&srv, "gao.yan", &claim, json!(null), "claim-1").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let b = keyed(&srv, "gao.yan", &claim, json!(null), "claim-1").await;
    // Without the key a second claim would be refused; with it, the first answer again.
    assert_eq!(b.status, StatusCode::OK, "{}", b.text());
    assert_eq!(b.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(b.json(), a.json());
    let claims = |h: &[Value]| h.iter().filter(|e| e["kind"] == "task_claimed").count();
    assert_eq!(claims(&srv.history(&id).await), 1);

    // The answer is the instance as the command left it, even after later changes.
    srv.post_expect(
        "gao.yan",
        &format!("/v1/instances/{id}/comments"),
        json!({ "text": "called the customer" }),
        StatusCode::CREATED,
    )
    .await;
    let c = keyed(&srv, "gao.yan", &claim, json!(null), "claim-1").await;
    assert_eq!(c.json(), a.json());
    // A key names one request: the same key on another endpoint is another request.
    let r = keyed(
        &srv,
        "gao.yan",
        &format!("/v1/tasks/{task}/release"),
        json!(null),
        "claim-1",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_retries_with_one_key_start_one_instance() {
    let srv = Arc::new(Server::start().await);
    let before = srv.all_instances().await.len();
    let mut joins = Vec::new();
    for _ in 0..8 {
        let srv = srv.clone();
        joins.push(tokio::spawn(async move {
            keyed(&srv, "xu.na", "/v1/instances", start_body(), "race").await
        }));
    }
    let mut ids = Vec::new();
    for j in joins {
        let r = j.await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        ids.push(r.json()["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(srv.all_instances().await.len(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worklist_pages_with_its_cursor_in_due_order() {
    let srv = Server::start().await;
    for _ in 0..5 {
        srv.start_complaint("xu.na").await;
    }
    let all = srv.get_ok("gao.yan", "/v1/tasks").await["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), 5);
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tasks?limit=2&cursor={c}"),
            None => "/v1/tasks?limit=2".to_string(),
        };
        let page = srv.get_ok("gao.yan", &path).await;
        seen.extend(page["items"].as_array().unwrap().clone());
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
        assert!(seen.len() <= 10, "paging does not end");
    }
    assert_eq!(seen, all);
    let due: Vec<&str> = all.iter().map(|t| t["due"].as_str().unwrap()).collect();
    let mut sorted = due.clone();
    sorted.sort();
    assert_eq!(due, sorted);
    let (s, _) = srv.get("gao.yan", "/v1/tasks?cursor=zz").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
