//! Changing what runs while the server runs: files edited (good, broken, same version,
//! removed) and read again through `POST /v1/admin/reload` — the path the file watcher
//! takes, driven here without waiting on file-system events — a directory change, a
//! deployment over the API, versions with validity dates, an operator's repairs and a
//! migration across a real version change. Refusals leave the store byte-identical.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

const OWNER: &str = "qian.li";

fn edit(site: &std::path::Path, file: &str, f: impl Fn(String) -> String) {
    let path = site.join("procedures").join(file);
    let text = std::fs::read_to_string(&path).expect("the procedure file");
    std::fs::write(&path, f(text)).expect("the edit written");
}

async fn reload(srv: &Server) -> Value {
    srv.post_expect(OWNER, "/v1/admin/reload", json!({}), StatusCode::OK)
        .await
}

async fn deployment_kinds(srv: &Server) -> Vec<String> {
    let v = srv.get_ok(AUDITOR, "/v1/deployments?limit=500").await;
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_to_a_running_servers_files_are_taken_refused_or_retired() {
    let (srv, site) = Server::start_with_site().await;
    let old = srv.start_complaint("xu.na").await;
    assert_eq!(old["version"], 2);
    // Nothing changed: a reload registers nothing and records nothing.
    let before = deployment_kinds(&srv).await;
    let r = reload(&srv).await;
    assert_eq!(r["registered"], json!([]), "{r}");
    assert_eq!(deployment_kinds(&srv).await, before);

    // A good edit with a raised version: new instances start on it, running ones stay.
    edit(site.path(), "complaint-handling.toml", |t| {
        t.replace("version = 2", "version = 3").replace(
            "title = \"Customer complaint handling\"",
            "title = \"Customer complaints\"",
        )
    });
    let r = reload(&srv).await;
    assert_eq!(
        r["registered"][0]
            .as_str()
            .map(|s| s.starts_with("complaint-handling v3")),
        Some(true),
        "{r}"
    );
    let new = srv.start_complaint("xu.na").await;
    assert_eq!(new["version"], 3);
    assert_eq!(srv.instance(&id_of(&old)).await["version"], 2);
    let versions = srv
        .get_ok("xu.na", "/v1/procedures/complaint-handling/versions")
        .await;
    assert_eq!(versions["items"][0]["version"], 3, "{versions}");
    assert_eq!(versions["items"][0]["current"], true);
    assert_eq!(versions["items"][0]["running"], 1);
    assert_eq!(versions["items"][1]["version"], 2);
    assert_eq!(versions["items"][1]["running"], 1);

    // A broken edit: refused with line and column, recorded once, v3 keeps serving.
    edit(site.path(), "complaint-handling.toml", |t| {
        t.replace("version = 3", "version = 4")
            .replace("start = \"register\"", "start = \"registr\"")
    });
    let r = reload(&srv).await;
    let problems = r["refused"][0]["problems"].to_string();
    assert!(problems.contains("complaint-handling.toml:"), "{r}");
    assert!(problems.contains("registr"), "{r}");
    assert_eq!(srv.start_complaint("xu.na").await["version"], 3);
    let d = srv.get_ok(OWNER, "/v1/deployments").await;
    assert_eq!(d["refused_now"].as_array().map(Vec::len), Some(1), "{d}");
    let refusals = |k: &[String]| k.iter().filter(|k| *k == "deployment_refused").count();
    let once = refusals(&deployment_kinds(&srv).await);
    assert_eq!(once, 1);
    reload(&srv).await;
    assert_eq!(
        refusals(&deployment_kinds(&srv).await),
        1,
        "recorded once per text"
    );

    // The same version with other content: refused with that sentence.
    edit(site.path(), "complaint-handling.toml", |t| {
        t.replace("version = 4", "version = 3")
            .replace("start = \"registr\"", "start = \"register\"")
            .replace("title = \"Customer complaints\"", "title = \"Complaints\"")
    });
    let r = reload(&srv).await;
    assert!(
        r["refused"]
            .to_string()
            .contains("without raising `version`"),
        "{r}"
    );
    // Put right: nothing is refused any more.
    edit(site.path(), "complaint-handling.toml", |t| {
        t.replace("title = \"Complaints\"", "title = \"Customer complaints\"")
    });
    reload(&srv).await;
    let d = srv.get_ok(OWNER, "/v1/deployments").await;
    assert_eq!(d["refused_now"], json!([]), "{d}");

    // The old version's text put back: refused, the file must say what runs.
    let v3_text =
        std::fs::read_to_string(site.path().join("procedures/complaint-handling.toml")).unwrap();
    std::fs::copy(
        "procedures/complaint-handling.toml",
        site.path().join("procedures/complaint-handling.toml"),
    )
    .unwrap();
    let r = reload(&srv).await;
    assert!(r["refused"].to_string().contains("is at version 3"), "{r}");
    assert_eq!(srv.start_complaint("xu.na").await["version"], 3);
    std::fs::write(
        site.path().join("procedures/complaint-handling.toml"),
        v3_text,
    )
    .unwrap();
    reload(&srv).await;
    // A removed file retires its procedure: no new starts, the history says so.
    std::fs::remove_file(site.path().join("procedures/work-log-sampling.toml")).unwrap();
    let r = reload(&srv).await;
    assert_eq!(r["retired"], json!(["work-log-sampling"]), "{r}");
    let (s, v) = srv
        .post(
            "chen.jing",
            "/v1/instances",
            json!({ "procedure": "work-log-sampling", "data": {} }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].to_string().contains("retired"), "{v}");
    let kinds = deployment_kinds(&srv).await;
    assert_eq!(kinds[0], "procedure_retired", "{kinds:?}");
    // The deployments history is chained and verified with the instances.
    let verified = srv.get_ok(AUDITOR, "/v1/audit/verify").await;
    assert_eq!(verified["intact"], true, "{verified}");
    // Process owners and admins reload; others may not.
    let (s, _) = srv.post("xu.na", "/v1/admin/reload", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_change_swaps_people_at_once_and_returns_their_tasks() {
    let (srv, site) = Server::start_with_site().await;
    let inst = srv.start_complaint("xu.na").await;
    let task = task_at(&inst, "register");
    srv.post_expect(
        "xu.na",
        &format!("/v1/tasks/{task}/claim"),
        json!({}),
        StatusCode::OK,
    )
    .await;
    assert_eq!(srv.get("xu.na", "/v1/me").await.0, StatusCode::OK);
    // A broken directory file is refused; everyone keeps working.
    let org = site.path().join("org.toml");
    let text = std::fs::read_to_string(&org).unwrap();
    std::fs::write(&org, format!("{text}\n[[users]]\nid = \"x\"\n")).unwrap();
    let r = reload(&srv).await;
    assert!(r["refused"].to_string().contains("org.toml"), "{r}");
    assert_eq!(srv.get("xu.na", "/v1/me").await.0, StatusCode::OK);
    // Xu Na leaves: her token stops working at once, her held task goes back to its role.
    let gone = text.replacen(
        "roles = [\"follow_up\", \"staff\"]",
        "roles = [\"follow_up\", \"staff\"]\nactive = false",
        1,
    );
    assert_ne!(gone, text);
    std::fs::write(&org, gone).unwrap();
    let r = reload(&srv).await;
    assert_eq!(r["directory_applied"], true, "{r}");
    assert_eq!(r["tasks_returned"], 1, "{r}");
    assert_eq!(srv.get("xu.na", "/v1/me").await.0, StatusCode::UNAUTHORIZED);
    let after = srv.instance(&id_of(&inst)).await;
    assert!(after["tasks"][0]["holder"].is_null(), "{after}");
    let h = srv.history(&id_of(&inst)).await;
    assert_eq!(kinds(&h).last().map(String::as_str), Some("task_returned"));
    // Gao Yan, follow-up too, can take it now.
    srv.post_expect(
        "gao.yan",
        &format!("/v1/tasks/{task}/claim"),
        json!({}),
        StatusCode::OK,
    )
    .await;
}

fn bumped(version: u32, extra: &str) -> String {
    let text = std::fs::read_to_string("procedures/complaint-handling.toml").unwrap();
    text.replace("version = 2", &format!("version = {version}{extra}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_owner_deploys_over_the_api_within_validity_dates() {
    let (srv, site) = Server::start_with_site().await;
    // Only process owners and admins deploy; a refusal changes nothing but the record.
    let (s, _) = srv
        .post(
            "xu.na",
            "/v1/procedures/deploy",
            json!({ "text": bumped(3, "") }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let broken = srv
        .post_expect(
            OWNER,
            "/v1/procedures/deploy",
            json!({ "text": bumped(3, "").replace("role = \"follow_up\"", "role = \"nobody\"") }),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert_eq!(
        broken["type"], "urn:sopflow:problem:invalid-procedure",
        "{broken}"
    );
    assert!(
        broken["diagnostics"][0]["line"].as_u64().is_some(),
        "{broken}"
    );
    // The same version with another text is a conflict.
    let (s, v) = srv
        .post(
            OWNER,
            "/v1/procedures/deploy",
            json!({ "text": bumped(2, "").replace("title = \"Customer complaint handling\"", "title = \"X\"") }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Version 3 valid from 2026-12-01: deployed now, started only from that day.
    let v3 = bumped(3, "\nvalid_from = 2026-12-01");
    let ok = srv
        .post_expect(
            OWNER,
            "/v1/procedures/deploy",
            json!({ "text": v3 }),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(ok["outcome"], "registered", "{ok}");
    assert_eq!(ok["version"], 3);
    // Written to the procedures directory: the file and the registry agree.
    let saved =
        std::fs::read_to_string(site.path().join("procedures/complaint-handling.toml")).unwrap();
    assert!(saved.contains("valid_from = 2026-12-01"));
    let r = reload(&srv).await;
    assert_eq!(
        r["registered"],
        json!([]),
        "the watcher sees nothing new: {r}"
    );
    // Again: nothing to do.
    let again = srv
        .post_expect(
            OWNER,
            "/v1/procedures/deploy",
            json!({ "text": v3 }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(again["outcome"], "unchanged");
    assert_eq!(srv.start_complaint("xu.na").await["version"], 2);
    srv.advance(json!({ "to": "2026-12-01T00:00:00+08:00" }))
        .await;
    assert_eq!(srv.start_complaint("xu.na").await["version"], 3);
    // A version whose window is over, with none after it: a clear 409 with the dates.
    let v4 = bumped(4, "\nvalid_until = 2026-12-02");
    srv.post_expect(
        OWNER,
        "/v1/procedures/deploy",
        json!({ "text": v4 }),
        StatusCode::CREATED,
    )
    .await;
    srv.advance(json!({ "to": "2026-12-03T00:00:00+08:00" }))
        .await;
    assert_eq!(srv.start_complaint("xu.na").await["version"], 3);
    let d = srv.get_ok(AUDITOR, "/v1/deployments").await;
    let first = &d["items"][0];
    assert_eq!(first["kind"], "procedure_deployed", "{d}");
    assert_eq!(first["details"]["origin"], "api");
    assert_eq!(first["by"]["user"], OWNER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_suspends_resumes_withdraws_and_moves_with_a_reason() {
    let srv = Server::start().await;
    let inst = srv.start_complaint("xu.na").await;
    let id = id_of(&inst);
    let due_before = inst["tasks"][0]["due"].as_str().unwrap().to_string();
    // Not an operator: refused, nothing changed anywhere.
    let dump = srv.dump();
    let (s, _) = srv
        .post(
            "xu.na",
            &format!("/v1/instances/{id}/suspend"),
            json!({ "reason": "x" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = srv
        .post(
            ADMIN,
            &format!("/v1/instances/{id}/suspend"),
            json!({ "reason": " " }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(srv.dump(), dump, "refusals change nothing");
    // Suspended: the task cannot be completed; the clock runs; no deadline fires.
    let v = srv
        .post_expect(
            ADMIN,
            &format!("/v1/instances/{id}/suspend"),
            json!({ "reason": "Waiting for the customer's documents" }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["suspended"]["by"], ADMIN, "{v}");
    let task = task_at(&inst, "register");
    srv.refused_completion(
        &id,
        "xu.na",
        &task,
        None,
        registration("general"),
        StatusCode::CONFLICT,
    )
    .await;
    srv.advance(json!({ "by": "P3D" })).await;
    let h = srv.history(&id).await;
    assert!(
        !kinds(&h).iter().any(|k| k.starts_with("deadline")),
        "{h:?}"
    );
    // Resumed: the due time moved on by the three days.
    let v = srv
        .post_expect(
            ADMIN,
            &format!("/v1/instances/{id}/resume"),
            json!({ "reason": "Documents received" }),
            StatusCode::OK,
        )
        .await;
    assert!(v["suspended"].is_null());
    let due_after = v["tasks"][0]["due"].as_str().unwrap();
    let shift = at(due_after) - at(&due_before);
    assert_eq!(
        shift,
        chrono::Duration::days(3),
        "{due_before} → {due_after}"
    );
    // A move to a step whose deadline needs data the instance lacks: refused, unchanged.
    srv.refused_post(
        &id,
        ADMIN,
        &format!("/v1/instances/{id}/move"),
        json!({ "to": "handle_by_management_rep", "reason": "Major, by phone" }),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // Move: to a step the procedure reaches by itself.
    let moved = srv
        .post_expect(
            ADMIN,
            &format!("/v1/instances/{id}/move"),
            json!({ "to": "resolve_general", "reason": "Classified by phone as general" }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(open_steps(&moved), ["resolve_general"], "{moved}");
    let (s, v) = srv
        .post(
            ADMIN,
            &format!("/v1/instances/{id}/move"),
            json!({ "to": "nowhere", "reason": "x" }),
        )
        .await;
    // The instance is there; the step is not: 422 with the steps it has.
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("its steps:"), "{v}");
    // The one open task cannot be withdrawn: nothing would be left to do.
    let t = task_at(&moved, "resolve_general");
    let before = srv.snapshot(&id).await;
    let (s, v) = srv
        .post(
            ADMIN,
            &format!("/v1/tasks/{t}/withdraw"),
            json!({ "reason": "Handled outside the system" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("only open work"),
        "{v}"
    );
    srv.assert_unchanged(&id, &before, "a refused withdrawal")
        .await;
    let h = srv.history(&id).await;
    let k = kinds(&h);
    for want in ["suspended", "resumed", "moved"] {
        assert!(k.iter().any(|x| x == want), "{want} in {k:?}");
    }
    let reasons: Vec<&Value> = h
        .iter()
        .filter_map(|e| e["details"].get("reason"))
        .collect();
    assert!(reasons.iter().any(|r| *r == "Documents received"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_instances_migrate_across_a_real_version_change() {
    let (srv, _site) = Server::start_with_site().await;
    // Three instances on v2: one at `register`, one at `resolve_general`, one suspended.
    let a = srv.start_complaint("xu.na").await;
    let b = srv.start_complaint("xu.na").await;
    let b = srv
        .complete_step(&b, "register", "xu.na", None, registration("general"))
        .await;
    assert_eq!(open_steps(&b), ["resolve_general"]);
    // Version 3 renames `resolve_general` to `resolve_by_sales`.
    let v3 = bumped(3, "")
        .replace("[steps.resolve_general", "[steps.resolve_by_sales")
        .replace("to = \"resolve_general\"", "to = \"resolve_by_sales\"");
    srv.post_expect(
        OWNER,
        "/v1/procedures/deploy",
        json!({ "text": v3 }),
        StatusCode::CREATED,
    )
    .await;
    let plan = |dry: bool, steps: Value| {
        json!({ "name": "complaints-v2-to-v3", "procedure": "complaint-handling",
            "from_version": 2, "to_version": 3, "steps": steps,
            "reason": "Revised complaint procedure", "dry_run": dry })
    };
    // Without a mapping the renamed step cannot move; nothing changes on a dry run.
    let dump = srv.dump();
    let r = srv
        .post_expect(
            ADMIN,
            "/v1/migrations",
            plan(true, json!({})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(srv.dump(), dump, "a dry run changes nothing");
    let outcome = |r: &Value, id: &str| {
        r["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["instance"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {r}"))
    };
    assert_eq!(outcome(&r, &id_of(&a))["result"], "migrates", "{r}");
    let refused = outcome(&r, &id_of(&b));
    assert_eq!(refused["result"], "refused");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("resolve_general"),
        "{refused}"
    );
    // A plan naming a step v3 does not have is refused whole.
    let (s, _) = srv
        .post(
            ADMIN,
            "/v1/migrations",
            plan(true, json!({ "resolve_general": "nope" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Not an operator: refused.
    let (s, _) = srv
        .post("xu.na", "/v1/migrations", plan(false, json!({})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(srv.dump(), dump);
    // Applied with the mapping: both move, tasks keep their ids, due times and claims.
    let task_b = task_at(&b, "resolve_general");
    let due_b = b["tasks"][0]["due"].clone();
    let r = srv
        .post_expect(
            ADMIN,
            "/v1/migrations",
            plan(false, json!({ "resolve_general": "resolve_by_sales" })),
            StatusCode::OK,
        )
        .await;
    assert_eq!(outcome(&r, &id_of(&b))["result"], "migrated", "{r}");
    let b2 = srv.instance(&id_of(&b)).await;
    assert_eq!(b2["version"], 3);
    assert_eq!(task_at(&b2, "resolve_by_sales"), task_b);
    assert_eq!(b2["tasks"][0]["due"], due_b);
    let h = srv.history(&id_of(&b)).await;
    let m = h.last().unwrap();
    assert_eq!(m["kind"], "migrated");
    assert_eq!(
        m["details"]["renamed"]["resolve_general"],
        "resolve_by_sales"
    );
    assert_eq!(m["by"]["user"], ADMIN);
    // The instance goes on under v3.
    srv.complete_step(&b2, "resolve_by_sales", "liu.yang", None, resolution())
        .await;
    let verified = srv.get_ok(AUDITOR, "/v1/audit/verify").await;
    assert_eq!(verified["intact"], true);
    // Run again: nothing is left on v2.
    let r = srv
        .post_expect(
            ADMIN,
            "/v1/migrations",
            plan(true, json!({})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r["outcomes"], json!([]), "{r}");
}

/// The watcher itself: an editor's hidden and backup files register nothing, a saved file
/// does. It waits for the file-system event (up to 20 s) instead of driving the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_registers_a_saved_file_and_ignores_editor_files() {
    let (srv, site) = Server::start_watching_site().await;
    let procs = site.path().join("procedures");
    let text = std::fs::read_to_string(procs.join("complaint-handling.toml")).unwrap();
    let v3 = text.replace("version = 2", "version = 3");
    // Editor leftovers: a swap-like hidden file and a backup copy with another extension.
    std::fs::write(procs.join(".complaint-handling.toml"), &v3).unwrap();
    std::fs::write(procs.join("complaint-handling.toml~"), &v3).unwrap();
    // The save, written beside and renamed over, as editors do.
    std::fs::write(procs.join("complaint-handling.toml.tmp"), &v3).unwrap();
    std::fs::rename(
        procs.join("complaint-handling.toml.tmp"),
        procs.join("complaint-handling.toml"),
    )
    .unwrap();
    // The version is registered, then its deployment recorded (two commits): wait for both.
    let v3 = |d: &Value| -> Vec<Value> {
        d["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|e| {
                        e["details"]["procedure"] == "complaint-handling"
                            && e["details"]["version"] == 3
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let (mut seen, mut d) = (Value::Null, Value::Null);
    for _ in 0..200 {
        seen = srv
            .get_ok("xu.na", "/v1/procedures/complaint-handling/versions")
            .await;
        d = srv.get_ok(AUDITOR, "/v1/deployments").await;
        if seen["items"][0]["version"] == 3 && !v3(&d).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen["items"][0]["version"], 3, "{seen}");
    let registered = v3(&d);
    assert_eq!(registered.len(), 1, "{d}");
    assert!(registered[0]["details"]["origin"]
        .as_str()
        .unwrap()
        .ends_with("procedures/complaint-handling.toml"));
    assert_eq!(d["refused_now"], json!([]), "{d}");
}
