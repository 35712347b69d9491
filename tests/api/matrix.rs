//! The role × endpoint authorization matrix of the README, cell by cell. Every refused write
//! is followed by the proof that nothing changed: the instance (as the admin reads it) and
//! its history are the same as before, or no instance was added.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sopflow::http::server::ClockChoice;

use crate::harness::*;

const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;
const BAD: StatusCode = StatusCode::BAD_REQUEST;
const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
const CONFLICT: StatusCode = StatusCode::CONFLICT;
const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

/// An instance id that exists nowhere (a well-formed v7 UUID).
const NO_SUCH_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

/// The read endpoints every signed-in user may call.
const READS: [&str; 9] = [
    "/v1/openapi.json",
    "/v1/me",
    "/v1/procedures",
    "/v1/procedures/complaint-handling",
    "/v1/procedures/complaint-handling/graph",
    "/v1/procedures/complaint-handling/graph?format=mermaid",
    "/v1/procedures/complaint-handling/graph?format=dot",
    "/v1/tasks",
    "/v1/notifications",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_active_user_gets_a_demo_token_and_the_inactive_one_does_not() {
    let srv = Server::start().await;
    let mut want: Vec<String> = USERS
        .iter()
        .filter(|u| **u != "shi.lan")
        .map(|u| u.to_string())
        .collect();
    want.sort();
    assert_eq!(srv.issued_users(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_needs_no_token() {
    let srv = Server::start().await;
    for auth in [
        Auth::None,
        Auth::Header("Bearer not-a-token"),
        Auth::User("xu.na"),
    ] {
        let r = srv
            .send(Method::GET, "/healthz", auth, Body::Empty, &[])
            .await;
        assert_eq!(r.status, OK, "{auth:?}");
        assert_eq!(r.json(), json!({ "status": "ok" }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_for_the_auditor_and_the_admin_only() {
    let srv = Server::start().await;
    // A command first, so the command counter exists; then a missed deadline.
    srv.start_complaint("xu.na").await;
    srv.post_expect(ADMIN, "/v1/admin/clock/advance", json!({ "by": "25h" }), OK)
        .await;
    for user in ["liu.yang", "xu.na", "qian.li", "chen.jing", "zhao.gang"] {
        let r = srv.get_reply(user, "/metrics").await;
        assert_eq!(r.status, FORBIDDEN, "{user}");
        assert_eq!(r.problem_kind(), "forbidden");
    }
    let r = srv
        .send(Method::GET, "/metrics", Auth::None, Body::Empty, &[])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for user in [AUDITOR, ADMIN] {
        let r = srv.get_reply(user, "/metrics").await;
        assert_eq!(r.status, OK, "{user}: {}", r.text());
        assert!(r
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")));
        let text = r.text();
        assert!(text.contains("sopflow_open_tasks"), "{text}");
        assert!(
            text.contains("sopflow_open_tasks{role=\"follow_up\"}"),
            "{text}"
        );
        assert!(text.contains("sopflow_commands_total"), "{text}");
        assert!(text.contains("sopflow_http_requests_total"), "{text}");
        assert!(text.contains("sopflow_command_seconds_bucket"), "{text}");
        assert!(text.contains("sopflow_commit_batch_size_bucket"), "{text}");
        // The metrics recorder is shared by every server in this test process, so only
        // the presence of the breach counter is certain, not its value.
        assert!(
            text.contains("sopflow_deadline_events_total{kind=\"breached\"}"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signed_in_user_reads_the_public_endpoints() {
    let srv = Server::start().await;
    for user in srv.issued_users() {
        for path in READS {
            let r = srv.get_reply(&user, path).await;
            assert_eq!(r.status, OK, "GET {path} as {user}: {}", r.text());
        }
        let me = srv.get_ok(&user, "/v1/me").await;
        assert_eq!(me["id"], json!(user));
        assert!(me["roles"].is_array());
    }
    let me = srv.get_ok("qian.li", "/v1/me").await;
    assert_eq!(me["department"], "general_management");
    assert_eq!(me["level"], 4);
    assert_eq!(
        me["roles"],
        json!([
            "management_rep",
            "service_committee",
            "process_owner",
            "staff"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_endpoints_refuse_missing_and_bad_credentials() {
    let srv = Server::start().await;
    let good = srv.token("xu.na").to_string();
    let token_scheme = format!("Token {good}");
    let no_space = format!("Bearer{good}");
    let bad: Vec<Auth<'_>> = vec![
        Auth::None,
        Auth::Header("Bearer not-a-token"),
        Auth::Header("Bearer "),
        Auth::Header("Bearer"),
        // Basic credentials of a real user are not accepted.
        Auth::Header("Basic eHUubmE6cGFzc3dvcmQ="),
        Auth::Header(&token_scheme),
        Auth::Header(&no_space),
        // The inactive user's token (hash still on file) is refused.
        Auth::User("shi.lan"),
    ];
    let mut paths: Vec<&str> = READS.to_vec();
    paths.extend([
        "/metrics",
        "/v1/instances",
        "/v1/instances/01890a5d-ac96-774b-bcce-b302099a8057",
    ]);
    for path in paths {
        for auth in &bad {
            let r = srv.send(Method::GET, path, *auth, Body::Empty, &[]).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "GET {path} with {auth:?}"
            );
            assert_eq!(r.problem_kind(), "unauthenticated");
        }
    }
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let lower = format!("bearer {good}");
    let r = srv
        .send(
            Method::GET,
            "/v1/me",
            Auth::Header(&lower),
            Body::Empty,
            &[],
        )
        .await;
    assert_eq!(r.status, OK);
    // Writes too: no instance is started without a valid token.
    for auth in &bad {
        let r = srv
            .send(
                Method::POST,
                "/v1/instances",
                *auth,
                Body::Json(json!({ "procedure": "complaint-handling", "data": complaint_data() })),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    assert!(srv.all_instances().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_procedures_is_for_process_owners_and_the_admin() {
    let srv = Server::start().await;
    let text =
        std::fs::read_to_string("procedures/complaint-handling.toml").expect("procedure file");
    for user in ["qian.li", "chen.jing", ADMIN] {
        let r = srv
            .send(
                Method::POST,
                "/v1/procedures/validate",
                Auth::User(user),
                Body::Raw(Some("application/toml"), text.clone().into_bytes()),
                &[],
            )
            .await;
        assert_eq!(r.status, OK, "{user}: {}", r.text());
        // The raw form is checked as `<id>.toml`: a shipped procedure has no error.
        let v = r.json();
        let codes: Vec<&str> = v["diagnostics"]
            .as_array()
            .expect("diagnostics")
            .iter()
            .filter(|d| d["severity"] == "error")
            .filter_map(|d| d["code"].as_str())
            .collect();
        assert!(codes.is_empty(), "{v}");
        // Named after its id, it is valid.
        let v = srv
            .post_expect(
                user,
                "/v1/procedures/validate",
                json!({ "text": text, "name": "complaint-handling.toml" }),
                OK,
            )
            .await;
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["errors"], 0);
    }
    for user in ["liu.yang", "xu.na", "zhao.gang", AUDITOR] {
        let r = srv
            .send(
                Method::POST,
                "/v1/procedures/validate",
                Auth::User(user),
                Body::Raw(Some("application/toml"), text.clone().into_bytes()),
                &[],
            )
            .await;
        assert_eq!(r.status, FORBIDDEN, "{user}");
        let (s, _) = srv
            .post(user, "/v1/procedures/validate", json!({ "text": text }))
            .await;
        assert_eq!(s, FORBIDDEN, "{user}");
    }

    // A broken procedure: 200 with the diagnostics, each placed in the file.
    let broken = text.replacen(
        "{ to = \"resolve_general\", when",
        "{ to = \"resolve_generl\", when",
        1,
    );
    assert_ne!(broken, text, "the test must break something");
    let typo_line = broken
        .lines()
        .position(|l| l.contains("resolve_generl"))
        .expect("the typo is in the text")
        + 1;
    let v = srv
        .post_expect(
            "qian.li",
            "/v1/procedures/validate",
            json!({ "text": broken, "name": "complaint-handling.toml" }),
            OK,
        )
        .await;
    assert_eq!(v["valid"], false, "{v}");
    assert!(v["errors"].as_u64().is_some_and(|n| n >= 1), "{v}");
    let diags = v["diagnostics"].as_array().expect("diagnostics");
    assert!(!diags.is_empty());
    for d in diags {
        assert!(d["line"].as_u64().is_some_and(|n| n >= 1), "{d}");
        assert!(d["column"].as_u64().is_some_and(|n| n >= 1), "{d}");
        assert!(d["code"].as_str().is_some_and(|c| !c.is_empty()), "{d}");
        assert!(d["message"].as_str().is_some_and(|c| !c.is_empty()), "{d}");
        assert_eq!(d["file"], "complaint-handling.toml");
    }
    assert!(
        diags
            .iter()
            .any(|d| d["severity"] == "error" && d["line"].as_u64() == Some(typo_line as u64)),
        "no error on line {typo_line}: {v}"
    );
    // Broken TOML, sent raw.
    let r = srv
        .send(
            Method::POST,
            "/v1/procedures/validate",
            Auth::User("chen.jing"),
            Body::Raw(Some("application/toml"), b"id = \"x\"\n[steps\n".to_vec()),
            &[],
        )
        .await;
    assert_eq!(r.status, OK);
    let v = r.json();
    assert_eq!(v["valid"], false, "{v}");
    assert!(v["diagnostics"][0]["line"].as_u64().is_some(), "{v}");
    // A file name with a path in it is refused.
    let (s, _) = srv
        .post(
            "qian.li",
            "/v1/procedures/validate",
            json!({ "text": text, "name": "../etc/passwd" }),
        )
        .await;
    assert_eq!(s, BAD);
    // Validating registers nothing: the procedure list is unchanged.
    let procs = srv.get_ok("qian.li", "/v1/procedures").await;
    assert_eq!(
        procs["items"].as_array().map(Vec::len),
        Some(shipped_count())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_follows_the_procedures_start_roles() {
    let srv = Server::start().await;
    // complaint-handling: follow_up or sales, and the admin.
    for user in ["xu.na", "gao.yan", "liu.yang", "he.ping", ADMIN] {
        let v = srv.start_complaint(user).await;
        assert_eq!(v["status"], "running");
        assert_eq!(v["procedure"], "complaint-handling");
        assert_eq!(open_steps(&v), ["register"]);
        let h = srv.history(&id_of(&v)).await;
        assert_eq!(h[0]["kind"], "started");
        assert_eq!(h[0]["by"]["user"], json!(user));
    }
    let count = srv.all_instances().await.len();
    assert_eq!(count, 5);
    for user in [
        "lin.tao",
        "guo.jun",
        "qian.li",
        "zhao.gang",
        "chen.jing",
        "luo.bin",
        AUDITOR,
    ] {
        let r = srv
            .post_reply(
                user,
                "/v1/instances",
                json!({ "procedure": "complaint-handling", "data": complaint_data() }),
            )
            .await;
        assert_eq!(r.status, FORBIDDEN, "{user}: {}", r.text());
        assert!(r.header("location").is_none());
    }
    assert_eq!(srv.all_instances().await.len(), count, "a refused start");
    // internal-evaluation: the management representative only.
    for user in ["qian.li", "zhou.min"] {
        srv.start_instance(user, "internal-evaluation", json!({}))
            .await;
    }
    for user in ["xu.na", "zhao.gang", "liu.yang", AUDITOR] {
        let (s, v) = srv
            .post(
                user,
                "/v1/instances",
                json!({ "procedure": "internal-evaluation" }),
            )
            .await;
        assert_eq!(s, FORBIDDEN, "{user}: {v}");
    }
    assert_eq!(srv.all_instances().await.len(), count + 2);
    // An unknown procedure.
    let r = srv
        .post_reply(
            "xu.na",
            "/v1/instances",
            json!({ "procedure": "no-such-procedure", "data": {} }),
        )
        .await;
    assert_eq!(r.status, UNPROCESSABLE);
    assert_eq!(r.problem_kind(), "unprocessable");
    // Invalid start data: every field named.
    let r = srv
        .post_reply(
            "xu.na",
            "/v1/instances",
            json!({ "procedure": "complaint-handling", "data": { "customer": 5, "colour": "red" } }),
        )
        .await;
    assert_eq!(r.status, UNPROCESSABLE);
    assert_eq!(r.problem_kind(), "invalid-form");
    let fields = problem_fields(&r.json());
    for f in ["colour", "contact", "customer"] {
        assert!(fields.contains(&f.to_string()), "{f} not in {fields:?}");
    }
    assert_eq!(srv.all_instances().await.len(), count + 2);
}

pub fn problem_fields(problem: &Value) -> Vec<String> {
    problem["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {problem}"))
        .iter()
        .map(|p| {
            assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()), "{p}");
            p["field"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_instances_is_for_the_auditor_and_the_admin() {
    let srv = Server::start().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(id_of(&srv.start_complaint("xu.na").await));
    }
    ids.push(id_of(
        &srv.start_instance("qian.li", "internal-evaluation", json!({}))
            .await,
    ));
    srv.post_expect(
        "qian.li",
        &format!("/v1/instances/{}/cancel", ids[0]),
        json!({ "reason": "Duplicate of another complaint" }),
        OK,
    )
    .await;

    for user in ["xu.na", "liu.yang", "qian.li", "chen.jing", "zhao.gang"] {
        let (s, _) = srv.get(user, "/v1/instances").await;
        assert_eq!(s, FORBIDDEN, "{user}");
    }
    let count = |v: &Value| v["items"].as_array().map_or(0, Vec::len);
    for user in [AUDITOR, ADMIN] {
        let all = srv.get_ok(user, "/v1/instances").await;
        assert_eq!(count(&all), 4, "{all}");
        assert!(all["next"].is_null(), "{all}");
        for (query, n) in [
            ("procedure=complaint-handling", 3),
            ("procedure=internal-evaluation", 1),
            ("procedure=recall", 0),
            ("procedure=no-such-procedure", 0),
            ("status=running", 3),
            ("status=cancelled", 1),
            ("status=completed", 0),
            ("procedure=complaint-handling&status=running", 2),
            ("procedure=complaint-handling&status=cancelled", 1),
            ("limit=500", 4),
        ] {
            let v = srv.get_ok(user, &format!("/v1/instances?{query}")).await;
            assert_eq!(count(&v), n, "{query}: {v}");
        }
        let cancelled = srv.get_ok(user, "/v1/instances?status=cancelled").await;
        assert_eq!(cancelled["items"][0]["id"], json!(ids[0]));
        assert_eq!(cancelled["items"][0]["status"], "cancelled");
        assert_eq!(cancelled["items"][0]["open_tasks"], 0);
    }
    // Paging one at a time visits every instance once.
    let mut seen = Vec::new();
    let mut path = "/v1/instances?limit=1".to_string();
    loop {
        let page = srv.get_ok(AUDITOR, &path).await;
        assert_eq!(count(&page), 1, "{page}");
        seen.push(page["items"][0]["id"].as_str().expect("id").to_string());
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/instances?limit=1&cursor={next}"),
            None => break,
        }
        assert!(seen.len() <= 4, "paging does not end: {seen:?}");
    }
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    sorted_seen.dedup();
    assert_eq!(sorted_seen.len(), 4, "{seen:?}");
    let mut want = ids.clone();
    want.sort();
    assert_eq!(sorted_seen, want);
    // Paging with a filter.
    let first = srv
        .get_ok(ADMIN, "/v1/instances?procedure=complaint-handling&limit=2")
        .await;
    assert_eq!(count(&first), 2);
    let next = first["next"].as_str().expect("a next page");
    let second = srv
        .get_ok(
            ADMIN,
            &format!("/v1/instances?procedure=complaint-handling&limit=2&cursor={next}"),
        )
        .await;
    assert_eq!(count(&second), 1, "{second}");
    assert!(second["next"].is_null());
    // Bad parameters.
    for query in [
        "status=done",
        "status=",
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=many",
        "cursor=not-a-cursor",
        "cursor=",
        "colour=red",
        "procedure=a%00b",
    ] {
        let r = srv
            .get_reply(ADMIN, &format!("/v1/instances?{query}"))
            .await;
        assert_eq!(r.status, BAD, "{query}: {}", r.text());
        assert_eq!(r.problem_kind(), "malformed-request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_an_instance_is_for_those_taking_part() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let id = id_of(&inst);
    let get = format!("/v1/instances/{id}");
    let history = format!("/v1/instances/{id}/history");
    // Offered to follow_up (xu.na, gao.yan); xu.na started it.
    for user in [AUDITOR, ADMIN, "xu.na", "gao.yan"] {
        let v = srv.get_ok(user, &get).await;
        assert_eq!(v["id"], json!(id));
        let h = srv.get_ok(user, &history).await;
        assert_eq!(h["instance"], json!(id));
        assert!(!h["events"].as_array().expect("events").is_empty());
    }
    for user in ["guo.jun", "lin.tao", "liu.yang", "qian.li", "luo.bin"] {
        for path in [&get, &history] {
            let r = srv.get_reply(user, path).await;
            assert_eq!(r.status, FORBIDDEN, "{user} {path}");
        }
    }
    // After registration the task moves to sales: sales reads, gao.yan no longer takes part,
    // xu.na has acted in it.
    srv.complete_step(&inst, "register", "xu.na", None, registration("general"))
        .await;
    for user in ["liu.yang", "he.ping", "xu.na", AUDITOR, ADMIN] {
        srv.get_ok(user, &get).await;
        srv.get_ok(user, &history).await;
    }
    for user in ["gao.yan", "guo.jun", "qian.li"] {
        let (s, _) = srv.get(user, &get).await;
        assert_eq!(s, FORBIDDEN, "{user}");
        let (s, _) = srv.get(user, &history).await;
        assert_eq!(s, FORBIDDEN, "{user}");
    }
    // Unknown and malformed ids.
    for path in [
        format!("/v1/instances/{NO_SUCH_ID}"),
        format!("/v1/instances/{NO_SUCH_ID}/history"),
        "/v1/instances/not-a-uuid".to_string(),
        "/v1/instances/not-a-uuid/history".to_string(),
        "/v1/instances/12345".to_string(),
    ] {
        for user in [ADMIN, AUDITOR, "xu.na"] {
            let r = srv.get_reply(user, &path).await;
            assert_eq!(r.status, NOT_FOUND, "{user} {path}");
            assert_eq!(r.problem_kind(), "not-found");
        }
    }
    // History paging.
    let all = srv.history(&id).await;
    assert!(all.len() >= 4, "{all:?}");
    let seqs: Vec<u64> = all.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    let page = srv.get_ok(AUDITOR, &format!("{history}?limit=2")).await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(2));
    let page = srv
        .get_ok(AUDITOR, &format!("{history}?from=2&limit=1"))
        .await;
    assert_eq!(page["events"][0]["seq"], 2);
    let page = srv.get_ok(AUDITOR, &format!("{history}?from=999")).await;
    assert_eq!(page["events"], json!([]));
    for q in ["limit=0", "limit=1001", "from=x", "colour=red"] {
        let (s, _) = srv.get(AUDITOR, &format!("{history}?{q}")).await;
        assert_eq!(s, BAD, "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_is_for_the_cancel_roles_and_the_admin() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let id = id_of(&inst);
    srv.complete_step(&inst, "register", "xu.na", None, registration("general"))
        .await;
    let cancel = format!("/v1/instances/{id}/cancel");
    let before = srv.snapshot(&id).await;
    // Taking part is not enough; the auditor changes nothing; the general manager is not a
    // cancel role of complaints.
    for user in ["xu.na", "liu.yang", "guo.jun", "zhao.gang", AUDITOR] {
        let (s, v) = srv
            .post(user, &cancel, json!({ "reason": "Customer withdrew" }))
            .await;
        assert_eq!(s, FORBIDDEN, "{user}: {v}");
        srv.assert_unchanged(&id, &before, user).await;
    }
    // No reason.
    for (body, want) in [
        (json!({}), BAD),
        (json!({ "reason": null }), BAD),
        (json!({ "reason": 7 }), BAD),
        (json!({ "reason": "x", "why": "y" }), BAD),
        (json!({ "reason": "" }), UNPROCESSABLE),
        (json!({ "reason": "   " }), UNPROCESSABLE),
    ] {
        let (s, v) = srv.post("qian.li", &cancel, body.clone()).await;
        assert_eq!(s, want, "{body}: {v}");
        srv.assert_unchanged(&id, &before, &body.to_string()).await;
    }
    let (s, _) = srv
        .post(
            "qian.li",
            &format!("/v1/instances/{NO_SUCH_ID}/cancel"),
            json!({ "reason": "x" }),
        )
        .await;
    assert_eq!(s, NOT_FOUND);
    let (s, _) = srv
        .post(
            "qian.li",
            "/v1/instances/not-a-uuid/cancel",
            json!({ "reason": "x" }),
        )
        .await;
    assert_eq!(s, NOT_FOUND);

    let v = srv
        .post_expect(
            "qian.li",
            &cancel,
            json!({ "reason": "Customer withdrew the complaint" }),
            OK,
        )
        .await;
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["tasks"], json!([]));
    let h = srv.history(&id).await;
    let last = h.last().expect("events");
    assert_eq!(last["kind"], "cancelled");
    assert_eq!(last["by"]["user"], "qian.li");
    assert_eq!(last["details"]["reason"], "Customer withdrew the complaint");
    assert!(srv.worklist("liu.yang", "").await.is_empty());
    // Cancelling again is a conflict and changes nothing.
    let after = srv.snapshot(&id).await;
    for user in ["zhou.min", ADMIN] {
        let r = srv
            .post_reply(user, &cancel, json!({ "reason": "Again" }))
            .await;
        assert_eq!(r.status, CONFLICT, "{user}");
        assert_eq!(r.problem_kind(), "conflict");
        srv.assert_unchanged(&id, &after, user).await;
    }
    // The other holder of the role and the admin cancel others.
    for user in ["zhou.min", ADMIN] {
        let other = id_of(&srv.start_complaint("liu.yang").await);
        let v = srv
            .post_expect(
                user,
                &format!("/v1/instances/{other}/cancel"),
                json!({ "reason": "Opened by mistake" }),
                OK,
            )
            .await;
        assert_eq!(v["status"], "cancelled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commenting_is_for_those_taking_part_and_the_admin() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let id = id_of(&inst);
    let path = format!("/v1/instances/{id}/comments");
    let mut events = inst["events"].as_u64().expect("events");
    for user in ["xu.na", "gao.yan", ADMIN] {
        let r = srv
            .post_reply(user, &path, json!({ "text": format!("Note from {user}") }))
            .await;
        assert_eq!(r.status, CREATED, "{user}: {}", r.text());
        events += 1;
        assert_eq!(r.json()["events"], events);
    }
    let before = srv.snapshot(&id).await;
    for user in ["guo.jun", "liu.yang", "qian.li", AUDITOR] {
        let (s, v) = srv.post(user, &path, json!({ "text": "Let me in" })).await;
        assert_eq!(s, FORBIDDEN, "{user}: {v}");
        srv.assert_unchanged(&id, &before, user).await;
    }
    for (body, want) in [
        (json!({}), BAD),
        (json!({ "text": 1 }), BAD),
        (json!({ "text": "x", "colour": 1 }), BAD),
        (json!({ "text": "" }), UNPROCESSABLE),
        (json!({ "text": "  \n " }), UNPROCESSABLE),
    ] {
        let (s, v) = srv.post("xu.na", &path, body.clone()).await;
        assert_eq!(s, want, "{body}: {v}");
        srv.assert_unchanged(&id, &before, &body.to_string()).await;
    }
    let (s, _) = srv
        .post(
            ADMIN,
            &format!("/v1/instances/{NO_SUCH_ID}/comments"),
            json!({ "text": "x" }),
        )
        .await;
    assert_eq!(s, NOT_FOUND);
    let comments: Vec<(String, String)> = srv
        .history(&id)
        .await
        .iter()
        .filter(|e| e["kind"] == "commented")
        .map(|e| {
            (
                e["by"]["user"].as_str().unwrap_or_default().to_string(),
                e["details"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        comments,
        ["xu.na", "gao.yan", ADMIN]
            .iter()
            .map(|u| (u.to_string(), format!("Note from {u}")))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_task_is_for_its_roles_the_auditor_and_the_admin() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let id = id_of(&inst);
    let task = task_at(&inst, "register");
    let path = format!("/v1/tasks/{task}");
    for user in ["xu.na", "gao.yan", AUDITOR, ADMIN] {
        let v = srv.get_ok(user, &path).await;
        assert_eq!(v["id"], json!(task));
        assert_eq!(v["instance"], json!(id));
        assert_eq!(v["procedure"], "complaint-handling");
        assert_eq!(v["step"], "register");
        assert_eq!(v["roles"], json!(["follow_up"]));
        assert_eq!(
            v["outcomes"],
            json!([{ "id": "done", "title": "Done" }]),
            "register has a single way on, and completing it is `done`"
        );
        assert_eq!(v["data"]["customer"], "Hengxin Lifting");
        assert_eq!(v["deadline"], "on_time");
        let due = v["due"].as_str().expect("a due time");
        assert_eq!(at(due), t0() + chrono::Duration::hours(24));
        let form = &v["form"];
        assert_eq!(form["type"], "object");
        assert_eq!(form["additionalProperties"], false);
        for f in ["channel", "complaint", "severity", "first_answer"] {
            assert!(form["properties"][f].is_object(), "{f}: {form}");
            assert!(
                form["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!(f))),
                "{f}"
            );
        }
        assert_eq!(
            form["properties"]["severity"]["enum"],
            json!(["general", "major", "crisis"])
        );
        // Every field is labelled as the procedure words it.
        assert_eq!(form["properties"]["severity"]["title"], "Classification");
        assert_eq!(form["properties"]["channel"]["title"], "Received through");
    }
    for user in ["liu.yang", "guo.jun", "qian.li", "luo.bin"] {
        let (s, _) = srv.get(user, &path).await;
        assert_eq!(s, FORBIDDEN, "{user}");
    }
    for p in [
        format!("/v1/tasks/{NO_SUCH_ID}"),
        "/v1/tasks/nope".to_string(),
    ] {
        let (s, _) = srv.get(ADMIN, &p).await;
        assert_eq!(s, NOT_FOUND, "{p}");
    }
    // A task with outcomes lists them.
    let ev = srv
        .start_instance("qian.li", "internal-evaluation", json!({}))
        .await;
    let ev = srv
        .complete_step(&ev, "prepare_plan", "qian.li", None, plan_form())
        .await;
    let v = srv
        .get_ok(
            "zhao.gang",
            &format!("/v1/tasks/{}", task_at(&ev, "approve_plan")),
        )
        .await;
    assert_eq!(
        v["outcomes"],
        json!([
            { "id": "approve", "title": "Approve" },
            { "id": "rework", "title": "Rework" }
        ])
    );
    // Once completed, the task is gone.
    srv.complete_step(&inst, "register", "gao.yan", None, registration("major"))
        .await;
    for user in ["gao.yan", ADMIN] {
        let r = srv.get_reply(user, &path).await;
        assert_eq!(r.status, NOT_FOUND, "{user}");
        assert!(r.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("closed")));
    }
}

pub fn plan_form() -> Value {
    json!({
        "audit_purpose": "Annual evaluation", "audit_scope": "After-sales service",
        "audit_basis": "GB/T 27922-2011", "audited_department": "sales",
        "audited_department_head": "liu.yang", "audit_date": "2026-11-20"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_commands_follow_the_engines_rules() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let id = id_of(&inst);
    let task = task_at(&inst, "register");
    let claim = format!("/v1/tasks/{task}/claim");
    let release = format!("/v1/tasks/{task}/release");
    let delegate = format!("/v1/tasks/{task}/delegate");
    let before = srv.snapshot(&id).await;

    // Without the role (the admin has no special right on tasks), or as the auditor.
    for user in ["liu.yang", "qian.li", ADMIN, AUDITOR] {
        let (s, v) = srv.post(user, &claim, json!(null)).await;
        assert_eq!(s, FORBIDDEN, "claim as {user}: {v}");
        let (s, v) = srv
            .complete(user, &task, None, registration("general"))
            .await;
        assert_eq!(s, FORBIDDEN, "complete as {user}: {v}");
        srv.assert_unchanged(&id, &before, user).await;
    }
    let (s, _) = srv.post(AUDITOR, &release, json!(null)).await;
    assert_eq!(s, FORBIDDEN);
    // The step may not be delegated.
    let (s, v) = srv
        .post(
            "xu.na",
            &delegate,
            json!({ "to": "gao.yan", "reason": "Busy" }),
        )
        .await;
    assert_eq!(s, FORBIDDEN, "{v}");
    srv.assert_unchanged(&id, &before, "delegate").await;

    // Claim: the task is with xu.na; a colleague's claim, release or completion conflicts.
    let v = srv.post_expect("xu.na", &claim, json!(null), OK).await;
    assert_eq!(v["tasks"][0]["claimed_by"], "xu.na");
    assert_eq!(v["tasks"][0]["holder"], "xu.na");
    let held = srv.snapshot(&id).await;
    let (s, _) = srv.post("xu.na", &claim, json!(null)).await;
    assert_eq!(s, CONFLICT, "claiming twice");
    let (s, _) = srv.post("gao.yan", &claim, json!(null)).await;
    assert_eq!(s, CONFLICT);
    let (s, _) = srv.post("gao.yan", &release, json!(null)).await;
    assert_eq!(s, CONFLICT);
    let (s, _) = srv
        .complete("gao.yan", &task, None, registration("general"))
        .await;
    assert_eq!(s, CONFLICT);
    srv.assert_unchanged(&id, &held, "a colleague's commands")
        .await;
    // Gone from the colleague's worklist, on xu.na's as held.
    assert!(srv.worklist("gao.yan", "").await.is_empty());
    let mine = srv.worklist("xu.na", "").await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["holder"], "xu.na");

    let v = srv.post_expect("xu.na", &release, json!(null), OK).await;
    assert!(v["tasks"][0]["claimed_by"].is_null(), "{v}");
    assert_eq!(srv.worklist("gao.yan", "").await.len(), 1);
    let (s, _) = srv.post("xu.na", &release, json!(null)).await;
    assert_eq!(s, CONFLICT, "releasing what one does not hold");

    // Invalid completions change nothing.
    let released = srv.snapshot(&id).await;
    let (s, _) = srv
        .complete("gao.yan", &task, Some("approve"), registration("general"))
        .await;
    assert_eq!(s, UNPROCESSABLE, "an outcome the step does not have");
    let (s, _) = srv
        .post(
            "gao.yan",
            &format!("/v1/tasks/{task}/complete"),
            json!({ "outcom": "x", "form": registration("general") }),
        )
        .await;
    assert_eq!(s, BAD, "a misspelt field");
    srv.assert_unchanged(&id, &released, "invalid completions")
        .await;

    let v = srv
        .post_expect(
            "gao.yan",
            &format!("/v1/tasks/{task}/complete"),
            json!({ "form": registration("general"), "comment": "Called back at once" }),
            OK,
        )
        .await;
    assert_eq!(open_steps(&v), ["resolve_general"]);
    // Replays and late comers: 409, nothing changes.
    let done = srv.snapshot(&id).await;
    for user in ["gao.yan", "xu.na"] {
        let (s, _) = srv
            .complete(user, &task, None, registration("general"))
            .await;
        assert_eq!(s, CONFLICT, "{user}");
        let (s, _) = srv.post(user, &claim, json!(null)).await;
        assert_eq!(s, CONFLICT, "{user}");
        let (s, _) = srv.post(user, &release, json!(null)).await;
        assert_eq!(s, CONFLICT, "{user}");
    }
    srv.assert_unchanged(&id, &done, "replays").await;
    let h = srv.history(&id).await;
    let completed: Vec<&Value> = h.iter().filter(|e| e["kind"] == "task_completed").collect();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["by"]["user"], "gao.yan");
    assert_eq!(completed[0]["details"]["comment"], "Called back at once");

    // Unknown and malformed task ids.
    for t in [NO_SUCH_ID, "not-a-uuid"] {
        for (verb, body) in [
            ("claim", json!(null)),
            ("release", json!(null)),
            ("delegate", json!({ "to": "gao.yan", "reason": "x" })),
            ("complete", json!({ "form": {} })),
        ] {
            let (s, v) = srv
                .post("xu.na", &format!("/v1/tasks/{t}/{verb}"), body)
                .await;
            assert_eq!(s, NOT_FOUND, "{verb} {t}: {v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_clock_is_for_the_admin_on_a_manual_clock() {
    let srv = Server::start().await;
    let path = "/v1/admin/clock/advance";
    for user in ["qian.li", "liu.yang", "zhao.gang", AUDITOR] {
        let (s, _) = srv.post(user, path, json!({ "by": "25h" })).await;
        assert_eq!(s, FORBIDDEN, "{user}");
    }
    let v = srv.advance(json!({ "by": "PT1H" })).await;
    assert_eq!(
        at(v["now"].as_str().expect("now")),
        t0() + chrono::Duration::hours(1)
    );
    assert_eq!(v["fired"], 0);
    let v = srv.advance(json!({ "by": "25h" })).await;
    assert_eq!(
        at(v["now"].as_str().expect("now")),
        t0() + chrono::Duration::hours(26)
    );
    // Working days: Tuesday 11:00 plus three working days is Friday.
    let v = srv.advance(json!({ "by": "3 working days" })).await;
    let now = at(v["now"].as_str().expect("now"));
    assert_eq!(
        now.with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%a")
            .to_string(),
        "Fri",
        "{now}"
    );
    let v = srv
        .advance(json!({ "to": "2026-12-01T09:00:00+08:00" }))
        .await;
    assert_eq!(
        at(v["now"].as_str().expect("now")),
        at("2026-12-01T09:00:00+08:00")
    );
    for (body, want) in [
        (json!({}), BAD),
        (json!({ "by": "1h", "to": "2027-01-01T00:00:00Z" }), BAD),
        (json!({ "by": 5 }), BAD),
        (json!({ "to": "yesterday" }), BAD),
        (json!({ "when": "1h" }), BAD),
        (json!({ "by": "soon" }), UNPROCESSABLE),
        (json!({ "by": "P" }), UNPROCESSABLE),
        (json!({ "to": "2026-01-01T00:00:00Z" }), UNPROCESSABLE),
    ] {
        let (s, v) = srv.post(ADMIN, path, body.clone()).await;
        assert_eq!(s, want, "{body}: {v}");
    }
    // None of the refusals moved the clock.
    let v = srv.advance(json!({ "by": "PT0S" })).await;
    assert_eq!(
        at(v["now"].as_str().expect("now")),
        at("2026-12-01T09:00:00+08:00")
    );

    // On the system clock the endpoint does not exist.
    let sys = Server::start_with(ClockChoice::System).await;
    for user in [ADMIN, "qian.li"] {
        let r = sys.post_reply(user, path, json!({ "by": "1h" })).await;
        assert_eq!(r.status, NOT_FOUND, "{user}");
        assert_eq!(r.problem_kind(), "not-found");
    }
    sys.stop().await.0.expect("the server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procedures_graphs_and_the_openapi_document() {
    let srv = Server::start().await;
    let list = srv.get_ok("ma.lei", "/v1/procedures").await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), shipped_count());
    let complaint = items
        .iter()
        .find(|p| p["id"] == "complaint-handling")
        .expect("complaint-handling listed");
    assert_eq!(complaint["version"], 2);
    assert_eq!(complaint["versions"], json!([2]));
    assert_eq!(complaint["start_roles"], json!(["follow_up", "sales"]));

    let detail = srv
        .get_ok("ma.lei", "/v1/procedures/complaint-handling")
        .await;
    let text =
        std::fs::read_to_string("procedures/complaint-handling.toml").expect("procedure file");
    assert_eq!(detail["source"], json!(text));
    assert_eq!(detail["definition"]["start"], "register");
    assert_eq!(
        detail["start_form"]["required"],
        json!(["customer", "contact"])
    );
    assert_eq!(
        detail["start_form"]["properties"]["contact"]["title"],
        "Contact person and telephone"
    );
    assert!(detail["hash"].as_str().is_some_and(|h| h.len() == 64));
    let v1 = srv
        .get_ok("ma.lei", "/v1/procedures/complaint-handling?version=2")
        .await;
    assert_eq!(v1["hash"], detail["hash"]);
    for path in [
        "/v1/procedures/complaint-handling?version=3",
        "/v1/procedures/no-such-procedure",
        "/v1/procedures/no-such-procedure/graph",
    ] {
        let (s, _) = srv.get("ma.lei", path).await;
        assert_eq!(s, NOT_FOUND, "{path}");
    }

    for (query, ctype, marker) in [
        ("", "text/vnd.mermaid", "register"),
        ("?format=mermaid", "text/vnd.mermaid", "register"),
        ("?format=dot", "text/vnd.graphviz", "digraph"),
    ] {
        let r = srv
            .get_reply(
                "ma.lei",
                &format!("/v1/procedures/complaint-handling/graph{query}"),
            )
            .await;
        assert_eq!(r.status, OK, "{query}");
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with(ctype)),
            "{query}: {:?}",
            r.header("content-type")
        );
        let body = r.text();
        assert!(body.contains(marker), "{query}: {body}");
        assert!(body.contains("follow_up_visit"), "{query}");
    }
    let (s, _) = srv
        .get(
            "ma.lei",
            "/v1/procedures/complaint-handling/graph?format=png",
        )
        .await;
    assert_eq!(s, BAD);

    let doc = srv.get_ok("ma.lei", "/v1/openapi.json").await;
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    for path in [
        "/healthz",
        "/metrics",
        "/v1/me",
        "/v1/procedures",
        "/v1/procedures/validate",
        "/v1/procedures/{id}",
        "/v1/procedures/{id}/graph",
        "/v1/instances",
        "/v1/instances/{id}",
        "/v1/instances/{id}/history",
        "/v1/instances/{id}/cancel",
        "/v1/instances/{id}/comments",
        "/v1/tasks",
        "/v1/tasks/{id}",
        "/v1/tasks/{id}/claim",
        "/v1/tasks/{id}/release",
        "/v1/tasks/{id}/delegate",
        "/v1/tasks/{id}/complete",
        "/v1/notifications",
        "/v1/admin/clock/advance",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} not documented");
    }
}

/// How many procedure files are shipped (`procedures/*.toml`): every one is registered.
fn shipped_count() -> usize {
    std::fs::read_dir("procedures")
        .expect("procedures/")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .count()
}
