//! The procedure registry and the durable store under the engine: versions are pinned
//! (invariant 6), a changed file with an unchanged version is refused, and a sled store
//! reopened after the engine is dropped gives identical state and keeps running old
//! versions.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use serde_json::json;
use sopflow::clock::ManualClock;
use sopflow::definition::load::{validate_text, ValidProcedure};
use sopflow::engine::instance::Status;
use sopflow::engine::service::{Engine, ServiceError};
use sopflow::store::memory::MemoryStore;
use sopflow::store::sled_store::{SledOptions, SledStore};
use sopflow::store::Store;

const V1: &str = r#"
id = "leave"
version = 1
title = "Leave request"
start = "approve"
[roles]
manager = "Manager"
[steps.approve]
role = "manager"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;

fn valid(text: &str) -> Vec<ValidProcedure> {
    let v = validate_text("leave.toml", text, &[], &HashSet::new());
    assert_eq!(v.errors(), 0, "{}", v.reports[0].render_text());
    v.valid
}

fn manager() -> sopflow::engine::instance::Actor {
    person("max", "office", &["manager"], 3)
}

#[tokio::test]
async fn a_changed_file_must_raise_its_version() {
    let clock = ManualClock::new(t0());
    let e = Engine::open(Arc::new(MemoryStore::new()), Arc::new(clock)).unwrap();
    e.register(&valid(V1)).await.unwrap();
    // Registering the identical file again is fine.
    e.register(&valid(V1)).await.unwrap();
    let changed = V1.replace(
        "title = \"Leave request\"",
        "title = \"Leave request (new)\"",
    );
    let err = e.register(&valid(&changed)).await.unwrap_err();
    assert!(
        matches!(err, ServiceError::ProcedureChanged { ref id, version: 1, next: 2 } if id == "leave")
    );
    let msg = err.to_string();
    assert!(msg.contains("version = 2"), "{msg}");
    assert!(msg.contains("without raising `version`"), "{msg}");
}

#[tokio::test]
async fn running_instances_keep_their_version() {
    let clock = ManualClock::new(t0());
    let e = Engine::open(Arc::new(MemoryStore::new()), Arc::new(clock)).unwrap();
    e.register(&valid(V1)).await.unwrap();
    let old = e
        .start("leave", Default::default(), Some(&manager()))
        .await
        .unwrap();
    // Version 2 adds a second approval by HR.
    let v2 = V1
        .replace("version = 1", "version = 2")
        .replace("manager = \"Manager\"", "manager = \"Manager\"\nhr = \"Human resources\"")
        .replace("next = [{ to = \"done\" }]\n[steps.done]", "next = [{ to = \"hr_check\" }]\n[steps.hr_check]\nrole = \"hr\"\nnext = [{ to = \"done\" }]\n[steps.done]");
    e.register(&valid(&v2)).await.unwrap();
    let new = e
        .start("leave", Default::default(), Some(&manager()))
        .await
        .unwrap();
    assert_eq!((old.version, new.version), (1, 2));
    // The old instance ends after one approval, as version 1 says; the new one goes to HR.
    let old = complete(&e, &old, "approve", &manager(), None, json!({}))
        .await
        .unwrap();
    assert_eq!(old.status, Status::Completed);
    let new = complete(&e, &new, "approve", &manager(), None, json!({}))
        .await
        .unwrap();
    assert_eq!(open_steps(&new), ["hr_check"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_the_sled_store_gives_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let (fiona, sam) = (
        person("fiona", "after_sales", &["follow_up"], 2),
        person("sam", "sales", &["sales"], 2),
    );
    let (id, dump_before) = {
        let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
        let (e, _clock) = engine_on(store.clone()).await;
        e.register(&valid(V1)).await.unwrap();
        let inst = e
            .start(
                "complaint-handling",
                obj(json!({ "customer": "C", "contact": "K" })),
                Some(&fiona),
            )
            .await
            .unwrap();
        let inst = complete(
            &e,
            &inst,
            "register",
            &fiona,
            None,
            json!({ "channel": "hotline", "complaint": "x", "severity": "general", "first_answer": "y", "received_at": "2026-11-02T08:30:00Z" }),
        )
        .await
        .unwrap();
        (inst.id, store.dump().unwrap())
    };
    // Engine and store dropped: reopen the same directory.
    let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    assert_eq!(store.dump().unwrap(), dump_before, "reopened store differs");
    let e = Engine::open(store, Arc::new(ManualClock::new(t0()))).unwrap();
    // Calendars are configuration read from files, not stored: load them as a server would.
    let v = sopflow::definition::load::validate_paths(
        &[std::path::PathBuf::from("procedures")],
        &Default::default(),
    );
    e.set_calendars(&v.calendars);
    // The registry came back from the store: both procedures are runnable without
    // registering the files again.
    assert!(e.procedure("leave").is_some());
    let inst = e.instance(id).unwrap().unwrap();
    assert_eq!(open_steps(&inst), ["resolve_general"]);
    assert_eq!(e.tasks_for(&sam).unwrap().len(), 1);
    let inst = complete(
        &e,
        &inst,
        "resolve_general",
        &sam,
        None,
        json!({ "resolution": "r", "resolved_on": "2026-11-03" }),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["follow_up_visit"]);
}
