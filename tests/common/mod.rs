//! Shared test harness: the shipped procedures registered in an engine over a store, a
//! manual clock, and the people of a small cast.
#![allow(dead_code)]

pub mod cli;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sopflow::clock::ManualClock;
use sopflow::definition::load::{validate_paths, Options, ValidProcedure};
use sopflow::engine::decide::Command;
use sopflow::engine::instance::{Actor, Instance, Task};
use sopflow::engine::service::{Engine, ServiceError};
use sopflow::store::memory::MemoryStore;
use sopflow::store::Store;

pub fn shipped() -> Vec<ValidProcedure> {
    let v = validate_paths(&[PathBuf::from("procedures")], &Options::default());
    assert_eq!(v.errors(), 0, "shipped procedures must validate");
    v.valid
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-02T09:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .expect("valid time")
}

pub async fn engine() -> (Engine<MemoryStore>, ManualClock) {
    engine_on(Arc::new(MemoryStore::new())).await
}

pub async fn engine_on<S: Store>(store: Arc<S>) -> (Engine<S>, ManualClock) {
    let clock = ManualClock::new(t0());
    let engine = Engine::open(store, Arc::new(clock.clone())).expect("engine opens");
    let v = validate_paths(&[PathBuf::from("procedures")], &Options::default());
    assert_eq!(v.errors(), 0, "shipped procedures must validate");
    engine.set_calendars(&v.calendars);
    engine.set_registers(&v.registers).expect("registers load");
    engine
        .register(&v.valid)
        .await
        .expect("shipped procedures register");
    (engine, clock)
}

pub fn person(id: &str, department: &str, roles: &[&str], level: u8) -> Actor {
    Actor {
        id: id.into(),
        name: id.to_uppercase(),
        department: department.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        level,
        within: vec![],
    }
}

pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("expected an object"),
    }
}

/// The one open task at `step`.
pub fn task_at(inst: &Instance, step: &str) -> Task {
    let open: Vec<&Task> = inst.tasks.values().filter(|t| t.step == step).collect();
    assert_eq!(
        open.len(),
        1,
        "expected one open task at `{step}`, open tasks: {:?}",
        inst.tasks.values().map(|t| &t.step).collect::<Vec<_>>()
    );
    open[0].clone()
}

pub fn open_steps(inst: &Instance) -> Vec<String> {
    let mut v: Vec<String> = inst.tasks.values().map(|t| t.step.clone()).collect();
    v.sort();
    v
}

/// Completes the open task at `step` as `who`.
pub async fn complete<S: Store>(
    e: &Engine<S>,
    inst: &Instance,
    step: &str,
    who: &Actor,
    outcome: Option<&str>,
    form: Value,
) -> Result<Instance, ServiceError> {
    let t = task_at(inst, step);
    e.execute(
        inst.id,
        Command::Complete {
            task: t.id,
            outcome: outcome.map(str::to_string),
            form: obj(form),
            comment: None,
        },
        Some(who),
    )
    .await
}

pub fn empty() -> Value {
    json!({})
}

/// The stored instance is exactly the fold of its history (the history is the truth), and
/// is returned for further checks.
pub fn assert_folds<S: Store>(e: &Engine<S>, id: sopflow::store::InstanceId) -> Instance {
    let history = e.history(id).expect("history readable");
    let folded = Instance::fold(id, &history).expect("history folds");
    let stored = e
        .instance(id)
        .expect("instance readable")
        .expect("instance stored");
    assert_eq!(
        folded, stored,
        "the stored snapshot differs from the fold of the history"
    );
    stored
}

/// Completes `step` as `who`, expecting a refusal, and asserts the store did not change.
pub async fn refused<S: Store>(
    e: &Engine<S>,
    inst: &Instance,
    step: &str,
    who: &Actor,
    outcome: Option<&str>,
    form: Value,
) -> sopflow::engine::decide::EngineError {
    let before = e.store().dump().expect("store dump");
    let err = complete(e, inst, step, who, outcome, form)
        .await
        .expect_err("must be refused");
    assert_eq!(
        before,
        e.store().dump().expect("store dump"),
        "a refused command wrote something"
    );
    match err {
        ServiceError::Engine(err) => err,
        other => panic!("expected an engine refusal, got {other:?}"),
    }
}
