//! Property tests of the engine over every shipped procedure: random sequences of commands
//! by random people keep the invariants: the stored snapshot equals the fold of the stored
//! history (invariant 1); no task is completed twice; an ended instance accepts no command
//! but a comment; and a refused command changes nothing in the store.
//! Forms are generated from the declared field types, so most commands are valid and the
//! instances travel deep into their procedures.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sopflow::definition::model::{Field, FieldType, Procedure};
use sopflow::engine::decide::Command;
use sopflow::engine::instance::{Actor, EventKind, Instance, Status};
use sopflow::engine::service::Engine;
use sopflow::store::any::AnyStore;
use sopflow::store::memory::MemoryStore;
use sopflow::store::Store;

const USERS: usize = 6;
const DEPARTMENTS: [&str; 3] = ["sales", "quality", "office"];

/// Everyone holds every role, so whether a command is allowed depends on the procedure's
/// own rules (separation, signatures, claims), which is what is being exercised.
fn people(roles: &[String]) -> Vec<Actor> {
    let mut roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    roles.push("admin");
    (0..USERS)
        .map(|i| {
            person(
                &format!("u{i}"),
                DEPARTMENTS[i % 3],
                &roles,
                (i % 5) as u8 + 1,
            )
        })
        .collect()
}

/// A value of the field's type, chosen by `seed`.
fn value(f: &Field, seed: u64) -> Value {
    match f.ty {
        FieldType::String if !f.choices.is_empty() => {
            json!(f.choices[(seed as usize) % f.choices.len()])
        }
        FieldType::String | FieldType::Text => json!(format!("text {seed}")),
        FieldType::Integer => json!(f
            .min
            .map_or(1, |m| m.ceil() as i64)
            .max(f.max.map_or(i64::MIN, |m| m.floor() as i64).min(1))),
        FieldType::Number => json!(f.min.unwrap_or(0.0).max(f.max.map_or(1.0, |m| m.min(1.0)))),
        FieldType::Boolean => json!(seed.is_multiple_of(2)),
        FieldType::Date => json!(format!("2026-12-{:02}", 1 + seed % 28)),
        FieldType::Datetime => json!(format!("2026-12-{:02}T10:00:00Z", 1 + seed % 28)),
        FieldType::User => json!(format!("u{}", seed as usize % USERS)),
        FieldType::Department => json!(DEPARTMENTS[seed as usize % 3]),
        FieldType::List => {
            let n = f.min_items.unwrap_or(0).max(seed % 3);
            let n = f.max_items.map_or(n, |m| n.min(m));
            let item = f.items.as_deref();
            Value::Array(
                (0..n)
                    .filter_map(|i| item.map(|it| value(it, seed.wrapping_add(i))))
                    .collect(),
            )
        }
        FieldType::Object => Value::Object(
            f.fields
                .iter()
                .map(|(k, sub)| {
                    (
                        k.clone(),
                        value(sub, seed.wrapping_mul(31).wrapping_add(k.len() as u64)),
                    )
                })
                .collect(),
        ),
    }
}

fn form(fields: &indexmap::IndexMap<String, Field>, seed: u64) -> Map<String, Value> {
    fields
        .iter()
        .filter(|(_, f)| f.required || seed.is_multiple_of(3))
        .map(|(k, f)| (k.clone(), value(f, seed.wrapping_add(k.len() as u64))))
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Start {
        procedure: usize,
        seed: u64,
    },
    Complete {
        instance: usize,
        task: usize,
        user: usize,
        seed: u64,
        garbage: bool,
    },
    Claim {
        instance: usize,
        task: usize,
        user: usize,
    },
    Release {
        instance: usize,
        task: usize,
        user: usize,
    },
    Delegate {
        instance: usize,
        task: usize,
        user: usize,
        to: usize,
    },
    Cancel {
        instance: usize,
        user: usize,
    },
    Comment {
        instance: usize,
        user: usize,
    },
    Suspend {
        instance: usize,
        user: usize,
    },
    Resume {
        instance: usize,
        user: usize,
    },
    Withdraw {
        instance: usize,
        task: usize,
        user: usize,
    },
    Move {
        instance: usize,
        step: usize,
        user: usize,
    },
    /// To the next version (the same text with its version raised), in place.
    Migrate {
        instance: usize,
        user: usize,
        recompute: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..16, any::<u64>()).prop_map(|(procedure, seed)| Op::Start { procedure, seed }),
        12 => (0usize..8, 0usize..4, 0usize..USERS, any::<u64>(), prop::bool::weighted(0.1))
            .prop_map(|(instance, task, user, seed, garbage)| Op::Complete { instance, task, user, seed, garbage }),
        2 => (0usize..8, 0usize..4, 0usize..USERS).prop_map(|(instance, task, user)| Op::Claim { instance, task, user }),
        1 => (0usize..8, 0usize..4, 0usize..USERS).prop_map(|(instance, task, user)| Op::Release { instance, task, user }),
        1 => (0usize..8, 0usize..4, 0usize..USERS, 0usize..USERS)
            .prop_map(|(instance, task, user, to)| Op::Delegate { instance, task, user, to }),
        // Rare: a cancelled instance takes no further part.
        1 => (0usize..8, 0usize..USERS, 0u8..4).prop_filter_map("rare", |(instance, user, r)| (r == 0).then_some(Op::Cancel { instance, user })),
        1 => (0usize..8, 0usize..USERS).prop_map(|(instance, user)| Op::Comment { instance, user }),
        1 => (0usize..8, 0usize..USERS).prop_map(|(instance, user)| Op::Suspend { instance, user }),
        2 => (0usize..8, 0usize..USERS).prop_map(|(instance, user)| Op::Resume { instance, user }),
        1 => (0usize..8, 0usize..4, 0usize..USERS).prop_map(|(instance, task, user)| Op::Withdraw { instance, task, user }),
        1 => (0usize..8, 0usize..32, 0usize..USERS).prop_map(|(instance, step, user)| Op::Move { instance, step, user }),
        2 => (0usize..8, 0usize..USERS, any::<bool>()).prop_map(|(instance, user, recompute)| Op::Migrate { instance, user, recompute }),
    ]
}

struct World {
    e: Engine<AnyStore>,
    procs: Vec<Procedure>,
    people: Vec<Actor>,
    /// Instances started by the test (children are checked through their parents' runs).
    ids: Vec<uuid::Uuid>,
}

impl World {
    /// The `i`-th instance, counting running ones first so most commands land where there
    /// is work; the odd index past them reaches ended instances, which must refuse.
    fn nth(&self, i: usize) -> Option<Instance> {
        let all: Vec<Instance> = self
            .ids
            .iter()
            .filter_map(|id| self.e.instance(*id).ok().flatten())
            .collect();
        let (mut running, ended): (Vec<Instance>, Vec<Instance>) =
            all.into_iter().partition(|x| x.status == Status::Running);
        if running.is_empty() || (i == 7 && !ended.is_empty()) {
            running.extend(ended);
        }
        running
            .into_iter()
            .nth(i % self.ids.len().max(1))
            .or_else(|| {
                self.ids
                    .first()
                    .and_then(|id| self.e.instance(*id).ok().flatten())
            })
    }

    /// Every instance in the store, children included.
    fn all(&self) -> Vec<uuid::Uuid> {
        let page = self.e.instances(None, None, None, 10_000).expect("list");
        page.items
    }
}

/// Runs one operation; returns whether it was accepted.
async fn step(w: &mut World, op: &Op) -> bool {
    step_checked(w, op, true).await
}

/// `compare`: dump the whole store before and compare after a refusal (the property test
/// does; the long progress run only samples it, to stay fast).
async fn step_checked(w: &mut World, op: &Op, compare: bool) -> bool {
    let before = if compare {
        w.e.store().dump().expect("dump")
    } else {
        Vec::new()
    };
    let (result, ended_target) = match op.clone() {
        Op::Start { procedure, seed } => {
            let p = &w.procs[procedure % w.procs.len()];
            let data = form(&p.data, seed);
            let who = &w.people[seed as usize % USERS];
            match w.e.start(&p.id, data, Some(who)).await {
                Ok(inst) => {
                    w.ids.push(inst.id);
                    (Ok(()), false)
                }
                Err(e) => (Err(e), false),
            }
        }
        other => {
            let (instance, cmd, user) = match other {
                Op::Complete {
                    instance,
                    task,
                    user,
                    seed,
                    garbage,
                } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    let Some(t) = inst
                        .tasks
                        .values()
                        .nth(task % inst.tasks.len().max(1))
                        .cloned()
                    else {
                        return false;
                    };
                    let def = w
                        .procs
                        .iter()
                        .find(|p| p.id == inst.procedure)
                        .expect("known procedure");
                    let step = &def.steps[&t.step];
                    let outcomes = Procedure::outcomes_of(step);
                    let outcome = outcomes[seed as usize % outcomes.len()].to_string();
                    let form = if garbage {
                        Map::from_iter([("nonsense".to_string(), json!(1))])
                    } else {
                        form(&step.form, seed)
                    };
                    (
                        inst,
                        Command::Complete {
                            task: t.id,
                            outcome: Some(outcome),
                            form,
                            comment: None,
                        },
                        user,
                    )
                }
                Op::Claim {
                    instance,
                    task,
                    user,
                } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    let Some(t) = inst
                        .tasks
                        .values()
                        .nth(task % inst.tasks.len().max(1))
                        .cloned()
                    else {
                        return false;
                    };
                    (inst, Command::Claim { task: t.id }, user)
                }
                Op::Release {
                    instance,
                    task,
                    user,
                } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    let Some(t) = inst
                        .tasks
                        .values()
                        .nth(task % inst.tasks.len().max(1))
                        .cloned()
                    else {
                        return false;
                    };
                    (inst, Command::Release { task: t.id }, user)
                }
                Op::Delegate {
                    instance,
                    task,
                    user,
                    to,
                } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    let Some(t) = inst
                        .tasks
                        .values()
                        .nth(task % inst.tasks.len().max(1))
                        .cloned()
                    else {
                        return false;
                    };
                    let to = w.people[to].clone();
                    (
                        inst,
                        Command::Delegate {
                            task: t.id,
                            to,
                            reason: Some("away".into()),
                        },
                        user,
                    )
                }
                Op::Cancel { instance, user } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    (
                        inst,
                        Command::Cancel {
                            reason: "random".into(),
                        },
                        user,
                    )
                }
                Op::Comment { instance, user } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    (
                        inst,
                        Command::Comment {
                            text: "note".into(),
                        },
                        user,
                    )
                }
                Op::Suspend { instance, user } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    (
                        inst,
                        Command::Suspend {
                            reason: "hold".into(),
                        },
                        user,
                    )
                }
                Op::Resume { instance, user } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    (
                        inst,
                        Command::Resume {
                            reason: "go on".into(),
                        },
                        user,
                    )
                }
                Op::Withdraw {
                    instance,
                    task,
                    user,
                } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    let Some(t) = inst
                        .tasks
                        .values()
                        .nth(task % inst.tasks.len().max(1))
                        .cloned()
                    else {
                        return false;
                    };
                    let cmd = Command::WithdrawTask {
                        task: t.id,
                        reason: "not needed".into(),
                    };
                    (inst, cmd, user)
                }
                Op::Move {
                    instance,
                    step,
                    user,
                } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    let def = w
                        .procs
                        .iter()
                        .find(|p| p.id == inst.procedure)
                        .expect("known procedure");
                    let to = def
                        .steps
                        .keys()
                        .nth(step % def.steps.len())
                        .cloned()
                        .unwrap_or_default();
                    let cmd = Command::Move {
                        tasks: Vec::new(),
                        to,
                        reason: "stuck".into(),
                    };
                    (inst, cmd, user)
                }
                Op::Migrate {
                    instance,
                    user,
                    recompute,
                } => {
                    let Some(inst) = w.nth(instance) else {
                        return false;
                    };
                    let plan = sopflow::engine::migrate::MigrationPlan {
                        name: "next".into(),
                        procedure: inst.procedure.clone(),
                        from_version: inst.version,
                        to_version: inst.version + 1,
                        steps: Default::default(),
                        recompute_deadlines: recompute,
                        instances: vec![inst.id],
                        reason: "revised".into(),
                    };
                    let who = w.people[user].clone();
                    let r = match w.e.migrate(&plan, &who, true).await {
                        Ok(out) if out.iter().all(|o| o.result == "migrated") => Ok(()),
                        Ok(out) => Err(sopflow::engine::service::ServiceError::Engine(
                            sopflow::engine::decide::EngineError::Conflict(format!("{out:?}")),
                        )),
                        Err(e) => Err(e),
                    };
                    return finish(w, op, r, false, before, compare);
                }
                Op::Start { .. } => unreachable!(),
            };
            let ended =
                instance.status != Status::Running && !matches!(cmd, Command::Comment { .. });
            let who = w.people[user].clone();
            (
                w.e.execute(instance.id, cmd, Some(&who)).await.map(|_| ()),
                ended,
            )
        }
    };
    finish(w, op, result, ended_target, before, compare)
}

/// Checks the outcome of one operation: an accepted command on an ended instance is a bug;
/// a refused one must leave the store as it was.
fn finish(
    w: &World,
    op: &Op,
    result: Result<(), sopflow::engine::service::ServiceError>,
    ended_target: bool,
    before: sopflow::store::Dump,
    compare: bool,
) -> bool {
    match result {
        Ok(()) => {
            assert!(!ended_target, "an ended instance accepted a command");
            true
        }
        Err(e) => {
            if std::env::var_os("PROPS_DEBUG").is_some() {
                eprintln!("refused {:?}: {e}", std::mem::discriminant(op));
            }
            if compare {
                assert_eq!(
                    before,
                    w.e.store().dump().expect("dump"),
                    "a refused command changed the store"
                );
            }
            false
        }
    }
}

/// Registers, for every shipped procedure, the same text with its version raised by one, so
/// instances can be migrated to it mid-run.
async fn register_next_versions(e: &Engine<AnyStore>) {
    let mut next = Vec::new();
    for c in e.procedures() {
        let source = e
            .store()
            .procedure(c.id(), c.version())
            .expect("read")
            .expect("stored")
            .source;
        let old = format!("\nversion = {}\n", c.version());
        assert!(source.contains(&old), "{}: no `{old}` line", c.id());
        let text = source.replacen(&old, &format!("\nversion = {}\n", c.version() + 1), 1);
        let mut def = c.def.clone();
        def.version += 1;
        next.push(sopflow::definition::load::ValidProcedure {
            path: format!("{}.toml", c.id()),
            procedure: def,
            hash: sopflow::definition::load::hash_hex(text.as_bytes()),
            source: text.into(),
        });
    }
    e.register(&next).await.expect("next versions register");
}

fn check_invariants(w: &World) {
    for id in w.all() {
        let stored =
            w.e.instance(id)
                .expect("read")
                .expect("listed instances exist");
        let history = w.e.history(id).expect("history");
        assert_eq!(
            history.len() as u64,
            stored.seq,
            "history length is the version"
        );
        for (i, ev) in history.iter().enumerate() {
            assert_eq!(ev.seq, i as u64 + 1, "sequence numbers are dense");
        }
        let folded = Instance::fold(id, &history).expect("fold");
        assert_eq!(folded, stored, "snapshot != fold(history) for {id}");
        let mut completed = std::collections::HashSet::new();
        for ev in &history {
            if let EventKind::TaskCompleted { task, .. } = &ev.kind {
                assert!(completed.insert(*task), "task {task} completed twice");
            }
        }
    }
}

/// The engine on the store `SOPFLOW_TEST_STORE` names: `postgres` (a fresh schema of the
/// database `SOPFLOW_TEST_POSTGRES`; `.ci/run` runs this file so too) or, by default, memory.
async fn engine_any() -> (Engine<AnyStore>, sopflow::clock::ManualClock) {
    let store = match std::env::var("SOPFLOW_TEST_STORE").as_deref() {
        Ok("postgres") => {
            let url = std::env::var("SOPFLOW_TEST_POSTGRES")
                .expect("SOPFLOW_TEST_STORE=postgres needs SOPFLOW_TEST_POSTGRES=postgres://…/db");
            AnyStore::from(
                sopflow::store::postgres::PgStore::temporary(&url).expect("a PostgreSQL schema"),
            )
        }
        _ => AnyStore::Memory(MemoryStore::new()),
    };
    engine_on(std::sync::Arc::new(store)).await
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let (e, _clock) = engine_any().await;
            let procs: Vec<Procedure> = e.procedures().iter().map(|c| c.def.clone()).collect();
            register_next_versions(&e).await;
            let roles: Vec<String> = {
                let mut r: Vec<String> = procs.iter().flat_map(|p| p.roles.keys().cloned()).collect();
                r.sort();
                r.dedup();
                r
            };
            let mut w = World { e, procs, people: people(&roles), ids: Vec::new() };
            // Always begin with one instance so the other operations have something to act on.
            step(&mut w, &Op::Start { procedure: 0, seed: 7 }).await;
            for op in &ops {
                step(&mut w, op).await;
                check_invariants(&w);
            }
        });
    }
}

/// Guards the property test against passing vacuously: with mostly valid generated forms, a
/// long run completes many steps and finishes instances of several procedures.
#[tokio::test]
async fn generated_commands_make_real_progress() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let (e, clock) = engine_any().await;
    let procs: Vec<Procedure> = e.procedures().iter().map(|c| c.def.clone()).collect();
    let mut roles: Vec<String> = procs.iter().flat_map(|p| p.roles.keys().cloned()).collect();
    roles.sort();
    roles.dedup();
    let mut w = World {
        e,
        procs,
        people: people(&roles),
        ids: Vec::new(),
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7u8; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let mut completions = 0;
    for i in 0..2000 {
        // Repairs hold and move work; this run measures how far plain work gets.
        let plain = op().prop_filter("no repairs", |o| {
            !matches!(
                o,
                Op::Suspend { .. }
                    | Op::Resume { .. }
                    | Op::Withdraw { .. }
                    | Op::Move { .. }
                    | Op::Migrate { .. }
            )
        });
        let op = plain.new_tree(&mut runner).expect("generate").current();
        let is_complete = matches!(op, Op::Complete { .. });
        if step_checked(&mut w, &op, i % 50 == 0).await && is_complete {
            completions += 1;
        }
        // Spread the events over time so the audit index's time ranges have work to do.
        clock.advance(chrono::Duration::minutes(7));
    }
    check_invariants(&w);
    check_audit_index(&w);
    let ended: std::collections::BTreeSet<String> = w
        .all()
        .iter()
        .filter_map(|id| w.e.instance(*id).ok().flatten())
        .filter(|i| i.status == Status::Completed)
        .map(|i| i.procedure)
        .collect();
    assert!(
        completions > 200,
        "only {completions} completions succeeded"
    );
    assert!(ended.len() >= 3, "instances ended only for {ended:?}");
}

/// The audit index answers exactly what a scan of every history would, for every actor,
/// procedure and kind, alone and combined, over several time windows, page by page; the
/// kind names it files events under are the stored ones; and every hash chain holds.
fn check_audit_index(w: &World) {
    use sopflow::store::AuditQuery;
    // (at_ms, instance, seq, procedure, kind, user, on_behalf_of) of every stored event.
    let mut all = Vec::new();
    // Every instance, and the deployments history, which the index files like one.
    let ledger = sopflow::engine::deploy::ledger_id();
    for id in w.all().into_iter().chain([ledger]) {
        let inst = w.e.instance(id).expect("read").expect("listed");
        for ev in w.e.history(id).expect("history") {
            let stored = serde_json::to_value(&ev).expect("encode");
            assert_eq!(stored["kind"], ev.kind.name(), "kind name of {ev:?}");
            assert!(EventKind::NAMES.contains(&ev.kind.name()));
            all.push((
                ev.at.timestamp_millis(),
                id,
                ev.seq,
                inst.procedure.clone(),
                ev.kind.name().to_string(),
                ev.by.as_ref().map(|b| b.user.clone()),
                ev.by.as_ref().and_then(|b| b.on_behalf_of.clone()),
            ));
        }
    }
    all.sort();
    assert!(all.len() > 1000, "only {} events", all.len());
    let verified = w.e.verify(&mut |_| {}).expect("verify");
    assert!(verified.intact(), "{verified:?}");
    assert_eq!(verified.events, all.len() as u64);

    let (t_min, t_max) = (all[0].0, all[all.len() - 1].0);
    let third = (t_max - t_min) / 3;
    let windows = [
        (None, None),
        (Some(t_min + third), None),
        (None, Some(t_min + third)),
        (Some(t_min + third), Some(t_max - third)),
    ];
    let mut actors: Vec<Option<String>> = w
        .people
        .iter()
        .take(6)
        .map(|p| Some(p.id.clone()))
        .collect();
    actors.push(None);
    actors.push(Some("nobody".into()));
    let mut procedures: Vec<Option<String>> =
        w.procs.iter().take(3).map(|p| Some(p.id.clone())).collect();
    procedures.push(None);
    let kinds = [
        None,
        Some("task_completed".to_string()),
        Some("task_delegated".into()),
        Some("started".into()),
    ];
    let mut checked = 0;
    for actor in &actors {
        for procedure in &procedures {
            for kind in &kinds {
                for (from, to) in windows {
                    let q = AuditQuery {
                        actor: actor.clone(),
                        procedure: procedure.clone(),
                        kind: kind.clone(),
                        from_ms: from,
                        to_ms: to,
                    };
                    let want: Vec<(uuid::Uuid, u64)> =
                        all.iter()
                            .filter(|e| {
                                actor.as_ref().is_none_or(|a| {
                                    e.5.as_ref() == Some(a) || e.6.as_ref() == Some(a)
                                }) && procedure.as_ref().is_none_or(|p| &e.3 == p)
                                    && kind.as_ref().is_none_or(|k| &e.4 == k)
                                    && from.is_none_or(|f| e.0 >= f)
                                    && to.is_none_or(|t| e.0 < t)
                            })
                            .map(|e| (e.1, e.2))
                            .collect();
                    let mut got = Vec::new();
                    let mut cursor: Option<Vec<u8>> = None;
                    loop {
                        let page = w.e.audit(&q, cursor.as_deref(), 37).expect("audit");
                        got.extend(page.items.iter().map(|r| (r.instance, r.event.seq)));
                        match page.next {
                            Some(n) => cursor = Some(n),
                            None => break,
                        }
                    }
                    assert_eq!(got, want, "audit query {q:?}");
                    checked += usize::from(!want.is_empty());
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} non-empty queries: the model check is too weak"
    );
}
