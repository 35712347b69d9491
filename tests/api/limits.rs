//! One command's work is bounded before it is done (issue 13 item 1): procedures that start
//! each other (`tests/fixtures/runtime/recurse-a.toml` and `recurse-b.toml`, a declared
//! recursion with `max_depth = 16`) driven by start data asking for far more. Each refusal is
//! a 4xx that leaves the store byte-for-byte unchanged and answers at once, and the server
//! stays responsive to everyone else.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

async fn refused_start(srv: &Server, data: serde_json::Value) -> String {
    let before = srv.dump();
    let began = Instant::now();
    let r = srv
        .post_reply(
            "liu.yang",
            "/v1/instances",
            json!({ "procedure": "recurse-a", "data": data }),
        )
        .await;
    let took = began.elapsed();
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    // The bound: a refused command costs milliseconds, not a minute. A debug build
    // refuses these after at most a thousand small decisions, far below a second.
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    assert_eq!(before, srv.dump(), "a refused start wrote to the store");
    // Everyone else is still served.
    let me = srv.get_reply("xu.na", "/v1/me").await;
    assert_eq!(me.status, StatusCode::OK);
    r.json()["detail"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_recursion_80000_deep_is_refused_at_its_declared_depth() {
    let (srv, _procs) = Server::start_with_fixtures(&["recurse-a.toml", "recurse-b.toml"]).await;
    let detail = refused_start(&srv, json!({ "depth": 80000, "branches": ["x"] })).await;
    assert!(detail.contains("max_depth"), "{detail}");
    assert!(detail.contains("17 levels"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_within_the_depth_is_refused_by_the_per_command_bound() {
    let (srv, _procs) = Server::start_with_fixtures(&["recurse-a.toml", "recurse-b.toml"]).await;
    // Four children per level: 4 + 16 + 64 + 256 + 1024 instances by the fifth level.
    let detail = refused_start(
        &srv,
        json!({ "depth": 16, "branches": ["a", "b", "c", "d"] }),
    )
    .await;
    assert!(detail.contains("more than 1000 instances"), "{detail}");
    assert!(detail.contains("nothing was changed"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursion_within_its_bounds_runs() {
    let (srv, _procs) = Server::start_with_fixtures(&["recurse-a.toml", "recurse-b.toml"]).await;
    let inst = srv
        .start_instance(
            "liu.yang",
            "recurse-a",
            json!({ "depth": 3, "branches": ["x"] }),
        )
        .await;
    assert_eq!(inst["status"], "running");
    // The first instance and three nested below it: a → b → a → b.
    assert_eq!(srv.all_instances().await.len(), 4);
}
