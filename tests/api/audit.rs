//! The audit endpoints: events across instances by actor, procedure, kind and time, page by
//! page; verification of the hash chains; and who may call them.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

fn register_form() -> Value {
    json!({
        "channel": "hotline",
        "complaint": "The repair took three weeks",
        "severity": "general",
        "first_answer": "We are sorry; sales will call you today", "received_at": "2026-11-02T08:30:00Z",
    })
}

/// (instance, seq, kind) of every event of an audit query, following `next` to the end.
async fn all_pages(srv: &Server, query: &str, limit: usize) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/audit/events?limit={limit}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = srv.get_ok(AUDITOR, &path).await;
        for e in page["items"].as_array().expect("items") {
            assert_eq!(e["hash"].as_str().map(str::len), Some(64), "{e}");
            out.push((
                e["instance"].as_str().unwrap().to_string(),
                e["event"]["seq"].as_u64().unwrap(),
                e["event"]["kind"].as_str().unwrap().to_string(),
            ));
        }
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_query_events_by_actor_kind_procedure_and_time() {
    let srv = Server::start().await;
    // t0: xu.na takes one complaint; 25 h later the register deadline has breached and
    // escalated to the management representative, who registers it.
    let late = srv.start_complaint("xu.na").await;
    srv.advance(json!({ "by": "25h" })).await;
    let on_time = srv.start_complaint("gao.yan").await;
    let late = srv.instance(&id_of(&late)).await;
    srv.complete_step(&late, "register", "qian.li", None, register_form())
        .await;
    let (late_id, on_time_id) = (id_of(&late), id_of(&on_time));

    let by_xu = all_pages(&srv, "actor=xu.na", 100).await;
    assert_eq!(by_xu, [(late_id.clone(), 1, "started".to_string())]);
    let by_qian = all_pages(&srv, "actor=qian.li", 100).await;
    assert_eq!(
        by_qian.iter().map(|e| e.2.as_str()).collect::<Vec<_>>(),
        ["task_completed"]
    );
    let breaches = all_pages(&srv, "kind=deadline_breached", 100).await;
    assert_eq!(breaches.len(), 1);
    assert_eq!(breaches[0].0, late_id);
    // Time windows: before the clock move only the first instance's events exist.
    // (The deployments history, also before the move, is under `@deployments`.)
    let first_day = all_pages(
        &srv,
        "to=2026-11-02T12:00:00Z&procedure=complaint-handling",
        100,
    )
    .await;
    assert!(first_day.iter().all(|e| e.0 == late_id), "{first_day:?}");
    assert_eq!(
        first_day.iter().map(|e| e.2.as_str()).collect::<Vec<_>>(),
        ["started", "task_opened"]
    );
    let later = all_pages(
        &srv,
        "from=2026-11-02T12:00:00Z&procedure=complaint-handling",
        100,
    )
    .await;
    assert!(later.iter().any(|e| e.0 == on_time_id));
    assert!(later.iter().all(|e| !(e.0 == late_id && e.1 <= 2)));
    // Everything, page by page with pages of 2, equals one big page, in time order.
    let all = all_pages(&srv, "", 1000).await;
    assert_eq!(all_pages(&srv, "", 2).await, all);
    // Beside the two instances, only the deployments history.
    let ledger = sopflow::engine::deploy::ledger_id().to_string();
    let all: Vec<_> = all.into_iter().filter(|e| e.0 != ledger).collect();
    let total: usize = [&late_id, &on_time_id]
        .iter()
        .map(|id| id.as_str())
        .map(|id| all.iter().filter(|e| e.0 == id).count())
        .sum();
    assert_eq!(total, all.len());
    assert_eq!(
        all.len(),
        srv.history(&late_id).await.len() + srv.history(&on_time_id).await.len()
    );
    // The admin may read the trail too.
    let r = srv.get_reply(ADMIN, "/v1/audit/events?kind=started").await;
    assert_eq!(r.status, StatusCode::OK);
    // The two instances and the deployments history.
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 3);
    // The returned event carries who, with their roles at the time.
    let page = srv.get_ok(AUDITOR, "/v1/audit/events?actor=qian.li").await;
    let by = &page["items"][0]["event"]["by"];
    assert_eq!(by["user"], "qian.li", "{by}");
    assert!(by["roles"]
        .as_array()
        .unwrap()
        .contains(&json!("management_rep")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_reports_intact_chains() {
    let srv = Server::start().await;
    let a = srv.start_complaint("xu.na").await;
    srv.start_complaint("gao.yan").await;
    let v = srv.get_ok(AUDITOR, "/v1/audit/verify").await;
    assert_eq!(v["intact"], true, "{v}");
    // Two instances and the deployments history (its start and one entry per procedure
    // registered at start-up), all chained and checked alike.
    assert_eq!(v["instances"], 3);
    let deployed = srv.get_ok(ADMIN, "/v1/deployments").await["items"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(deployed > 0);
    assert_eq!(v["events"], 4 + 1 + deployed as u64);
    assert_eq!(v["broken"], 0);
    assert!(v["first_break"].is_null());
    let one = srv
        .get_ok(ADMIN, &format!("/v1/audit/verify?instance={}", id_of(&a)))
        .await;
    assert_eq!(one["intact"], true);
    assert_eq!(one["instances"], 1);
    assert_eq!(one["events"], 2);
    let r = srv
        .get_reply(
            AUDITOR,
            "/v1/audit/verify?instance=01890a5d-ac96-774b-bcce-b302099a8057",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_and_the_admin_read_the_trail_and_bad_queries_are_400() {
    let srv = Server::start().await;
    srv.start_complaint("xu.na").await;
    for user in srv.issued_users() {
        let me = srv.get_ok(&user, "/v1/me").await;
        let roles = me["roles"].as_array().unwrap();
        let allowed = roles.contains(&json!("auditor")) || roles.contains(&json!("admin"));
        for path in ["/v1/audit/events", "/v1/audit/verify"] {
            let r = srv.get_reply(&user, path).await;
            let want = if allowed {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(r.status, want, "GET {path} as {user}: {}", r.text());
        }
    }
    for query in [
        "kind=completed",
        "from=yesterday",
        "from=2026-11-03&to=2026-11-02",
        "cursor=xyz",
        "cursor=00",
        "limit=0",
        "limit=1001",
        "actor=",
        "colour=red",
        "instance=1",
    ] {
        let r = srv
            .get_reply(AUDITOR, &format!("/v1/audit/events?{query}"))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text());
    }
    let r = srv
        .get_reply(AUDITOR, "/v1/audit/verify?instance=nope")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpis_for_a_period_and_who_may_read_them() {
    let srv = Server::start().await;
    // One complaint registered late (the 24 h deadline breaches and escalates), one still
    // waiting at the end of the period.
    let late = srv.start_complaint("xu.na").await;
    srv.advance(json!({ "by": "25h" })).await;
    let late = srv.instance(&id_of(&late)).await;
    srv.complete_step(&late, "register", "qian.li", None, register_form())
        .await;
    srv.start_complaint("gao.yan").await;
    let path = "/v1/reports/kpis?procedure=complaint-handling&from=2026-11-01&to=2026-12-01";
    let r = srv.get_ok(AUDITOR, path).await;
    assert_eq!(r["procedure"], "complaint-handling");
    assert_eq!(r["instances"]["started"], 2, "{r}");
    assert_eq!(r["instances"]["open"], 2, "{r}");
    assert_eq!(r["instances"]["breaches"], 1, "{r}");
    assert_eq!(r["instances"]["escalations"], 1, "{r}");
    let register = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "register")
        .expect("a register row");
    assert_eq!(register["opened"], 2, "{register}");
    assert_eq!(register["completed"], 1, "{register}");
    let rates: Vec<&str> = r["rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(rates.contains(&"satisfaction_rate"), "{rates:?}");

    for user in srv.issued_users() {
        let me = srv.get_ok(&user, "/v1/me").await;
        let roles = me["roles"].as_array().unwrap();
        let allowed = [
            "auditor",
            "admin",
            "process_owner",
            "management_rep",
            "sales",
        ]
        .iter()
        .any(|role| roles.contains(&json!(role)));
        let r = srv.get_reply(&user, path).await;
        let want = if allowed {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(r.status, want, "{user}: {}", r.text());
    }
    for (query, status) in [
        ("procedure=nope&from=2026-11-01", StatusCode::NOT_FOUND),
        (
            "procedure=complaint-handling&from=soon",
            StatusCode::BAD_REQUEST,
        ),
        (
            "procedure=complaint-handling&from=2026-12-01&to=2026-11-01",
            StatusCode::BAD_REQUEST,
        ),
        ("from=2026-11-01", StatusCode::BAD_REQUEST),
    ] {
        let r = srv
            .get_reply(AUDITOR, &format!("/v1/reports/kpis?{query}"))
            .await;
        assert_eq!(r.status, status, "{query}: {}", r.text());
    }
}
