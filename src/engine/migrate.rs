//! Moving running instances from one version of their procedure to a newer one, by a plan
//! (`MigrationPlan`: from, to, a mapping for renamed or removed steps, whether deadlines are
//! recomputed). A dry run says per instance what would happen or why it cannot move; apply
//! migrates each movable instance in its own commit with a `migrated` event, so the chain
//! continues and `fold(history)` gives the snapshot under the new version.
//!
//! An instance is refused, with the reason, when a step it has work at is gone and the plan
//! maps it nowhere, when its work would land on a step of another kind (a task on an
//! automatic step, children waited for by a step that no longer starts them), when the
//! work in flight is not a state the new version reaches by itself (a parallel region or
//! join whose shape changed), or when its data does not fit the new version's fields. It
//! must not change an instance it refuses, nor any instance on a dry run.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::changes::{marking, Migration, Recomputed, TaskMove};
use super::compiled::{CompiledProcedure, FormValidator};
use super::decide::{recompute, EngineError, Env};
use super::instance::{Actor, Event, EventKind, Instance, InstanceId};
use super::service::{Engine, ServiceError};
use crate::definition::model::StepKind;
use crate::store::Store;

/// The most instances one plan run looks at: a larger migration is run in parts with
/// `instances` listing each part.
pub const MAX_MIGRATION_INSTANCES: usize = 5_000;

/// A migration plan, as a file (`sopflow migrate plan.toml`) or an API body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationPlan {
    /// A name for the plan, kept in each instance's history (`complaint-v2-to-v3`).
    pub name: String,
    pub procedure: String,
    pub from_version: u32,
    pub to_version: u32,
    /// Old step → new step, for steps that were renamed or removed. A step not named here
    /// keeps its name.
    #[serde(default)]
    pub steps: BTreeMap<String, String>,
    /// Compute each open task's due time and timers again under the new version, from when
    /// the task opened. Without it, due times and timers stay as they are.
    #[serde(default)]
    pub recompute_deadlines: bool,
    /// Only these instances (default: every running instance on `from_version`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub instances: Vec<InstanceId>,
    /// Why the instances move, kept in their histories.
    pub reason: String,
}

/// What the plan does, or would do, to one instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceOutcome {
    pub instance: InstanceId,
    /// `migrates` (dry run), `migrated` (applied), `refused` or `skipped`.
    pub result: &'static str,
    /// For a refusal or a skip, why; otherwise what moves (`task at review → assess`).
    pub detail: String,
}

/// Why a plan as a whole cannot run.
fn bad_plan(what: String) -> ServiceError {
    ServiceError::Engine(EngineError::Invalid(what))
}

impl<S: Store> Engine<S> {
    /// Checks the plan (versions, mapping, who runs it) and returns the two versions.
    fn plan_versions(
        &self,
        plan: &MigrationPlan,
        actor: &Actor,
    ) -> Result<(Arc<CompiledProcedure>, Arc<CompiledProcedure>), ServiceError> {
        let old = self
            .procedure_version(&plan.procedure, plan.from_version)
            .ok_or_else(|| {
                bad_plan(format!(
                    "`{}` has no version {}; its versions are {:?}",
                    plan.procedure,
                    plan.from_version,
                    self.versions(&plan.procedure)
                ))
            })?;
        let new = self
            .procedure_version(&plan.procedure, plan.to_version)
            .ok_or_else(|| {
                bad_plan(format!(
                    "`{}` has no version {}; deploy it first (its versions are {:?})",
                    plan.procedure,
                    plan.to_version,
                    self.versions(&plan.procedure)
                ))
            })?;
        if !actor.operates(&new.def) {
            return Err(ServiceError::Engine(EngineError::Forbidden(format!(
                "migrating `{}` instances needs admin{}",
                plan.procedure,
                if new.def.operator_roles.is_empty() {
                    String::new()
                } else {
                    format!(" or one of the roles {}", new.def.operator_roles.join(", "))
                }
            ))));
        }
        if plan.to_version <= plan.from_version {
            return Err(bad_plan(format!(
                "a migration goes to a newer version: {} is not newer than {}",
                plan.to_version, plan.from_version
            )));
        }
        if plan.reason.trim().is_empty() || plan.name.trim().is_empty() {
            return Err(bad_plan(
                "a plan needs a `name` and a `reason`; both are kept in each instance's history"
                    .into(),
            ));
        }
        if plan.instances.len() > MAX_MIGRATION_INSTANCES {
            return Err(bad_plan(format!(
                "a plan may name at most {MAX_MIGRATION_INSTANCES} instances; run it in parts"
            )));
        }
        for (from, to) in &plan.steps {
            if old.step(from).is_none() {
                return Err(bad_plan(format!(
                    "the plan maps `{from}`, which is not a step of v{}",
                    plan.from_version
                )));
            }
            if new.step(to).is_none() {
                return Err(bad_plan(format!(
                    "the plan maps `{from}` to `{to}`, which is not a step of v{}",
                    plan.to_version
                )));
            }
        }
        Ok((old, new))
    }

    /// The instances a plan looks at: those it names, or every running one of the procedure.
    fn plan_instances(&self, plan: &MigrationPlan) -> Result<Vec<InstanceId>, ServiceError> {
        if !plan.instances.is_empty() {
            return Ok(plan.instances.clone());
        }
        let mut ids = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = self.instances(
                Some(&plan.procedure),
                Some("running"),
                cursor.as_deref(),
                500,
            )?;
            ids.extend(page.items);
            if ids.len() > MAX_MIGRATION_INSTANCES {
                return Err(bad_plan(format!(
                    "more than {MAX_MIGRATION_INSTANCES} instances of `{}` are running; name the instances to move in parts (`instances`)",
                    plan.procedure
                )));
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        Ok(ids)
    }

    /// Runs a plan: a dry run (`apply = false`) changes nothing; apply migrates each
    /// instance that can move in its own commit. Either way every instance gets an outcome.
    pub async fn migrate(
        &self,
        plan: &MigrationPlan,
        actor: &Actor,
        apply: bool,
    ) -> Result<Vec<InstanceOutcome>, ServiceError> {
        let (old, new) = self.plan_versions(plan, actor)?;
        let mut out = Vec::new();
        for id in self.plan_instances(plan)? {
            // Without a list, only the instances on the plan's version are its business.
            if plan.instances.is_empty()
                && self
                    .load(id)?
                    .is_none_or(|i| i.version != plan.from_version)
            {
                continue;
            }
            let outcome = if apply {
                let made = self
                    .append(id, |inst| {
                        let inst = inst.ok_or_else(|| {
                            ServiceError::Engine(EngineError::NotFound(format!("instance {id}")))
                        })?;
                        self.plan_one(&old, &new, plan, inst, actor)
                            .map(|e| vec![e])
                            .map_err(|why| ServiceError::Engine(EngineError::Conflict(why)))
                    })
                    .await;
                match made {
                    Ok(inst) => InstanceOutcome {
                        instance: id,
                        result: "migrated",
                        detail: describe(&inst, plan.to_version),
                    },
                    Err(ServiceError::Engine(e)) => InstanceOutcome {
                        instance: id,
                        result: "refused",
                        detail: refusal_text(e),
                    },
                    Err(e) => return Err(e),
                }
            } else {
                match self.load(id)? {
                    None => InstanceOutcome {
                        instance: id,
                        result: "refused",
                        detail: format!("instance {id} not found"),
                    },
                    Some(inst) => match self.plan_one(&old, &new, plan, &inst, actor) {
                        Ok(e) => {
                            let mut after = inst.clone();
                            after.apply(&e);
                            InstanceOutcome {
                                instance: id,
                                result: "migrates",
                                detail: describe(&after, plan.to_version),
                            }
                        }
                        Err(why) => InstanceOutcome {
                            instance: id,
                            result: "refused",
                            detail: why,
                        },
                    },
                }
            };
            out.push(outcome);
        }
        Ok(out)
    }

    /// The `migrated` event for one instance, or why it cannot move.
    fn plan_one(
        &self,
        old: &CompiledProcedure,
        new: &CompiledProcedure,
        plan: &MigrationPlan,
        inst: &Instance,
        actor: &Actor,
    ) -> Result<Event, String> {
        if inst.procedure != plan.procedure {
            return Err(format!(
                "it runs `{}`, not `{}`",
                inst.procedure, plan.procedure
            ));
        }
        if inst.version != plan.from_version {
            return Err(format!(
                "it runs v{}, not v{}",
                inst.version, plan.from_version
            ));
        }
        if inst.status != super::instance::Status::Running {
            return Err(format!("it has ended ({})", inst.status.as_str()));
        }
        let map = |s: &str| plan.steps.get(s).cloned().unwrap_or_else(|| s.to_string());
        let kind_of = |s: &str| new.step(s).map(|(d, _)| d.kind);
        let gone = |s: &str, what: &str| {
            format!(
                "{what} at `{s}`, which v{} does not have; map it in the plan (`{s} = \"<step of v{}>\"`)",
                plan.to_version, plan.to_version
            )
        };
        let mut renamed = BTreeMap::new();
        let mut note = |from: &str, to: &str| {
            if from != to {
                renamed.insert(from.to_string(), to.to_string());
            }
        };
        let now = self.clock.now();
        let calendars = self
            .calendars
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let env = Env {
            now,
            calendars: &calendars,
            roster: &super::roster::Unchecked,
            registers: &super::registers::RegisterBook::default(),
        };
        let seq = inst.seq + 1;
        let mut tasks = Vec::new();
        for (n, t) in inst.tasks.values().enumerate() {
            let to = map(&t.step);
            match kind_of(&to) {
                None => return Err(gone(&t.step, "an open task")),
                Some(StepKind::Task) => {}
                Some(k) => {
                    return Err(format!(
                        "the open task at `{}` would move to `{to}`, a {k:?} step in v{}; tasks stay on task steps",
                        t.step, plan.to_version
                    ))
                }
            }
            let (step, _) = new.step(&to).ok_or_else(|| gone(&to, "a task"))?;
            if !t.signatures.is_empty() && step.signatures.is_none() {
                return Err(format!(
                    "the task at `{}` has signatures, and `{to}` in v{} takes none: they would be lost",
                    t.step, plan.to_version
                ));
            }
            let field_empty = |f: &str| {
                inst.data
                    .get(f)
                    .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
            };
            for f in step.assignee.iter().chain(step.assignees.iter()) {
                if field_empty(f) {
                    return Err(format!(
                        "`{to}` in v{} is assigned by `{f}`, which this instance has not filled in",
                        plan.to_version
                    ));
                }
            }
            let mut roles: Vec<String> = step.role.iter().cloned().collect();
            if let Some(sig) = &step.signatures {
                for r in &sig.roles {
                    if !roles.contains(r) {
                        roles.push(r.clone());
                    }
                }
            }
            if !t.people.is_empty() {
                roles.clear();
            }
            let recomputed = if plan.recompute_deadlines {
                let base = u32::try_from(n).unwrap_or(u32::MAX / 64).saturating_mul(64);
                let (due, timers) = recompute(new, inst, &to, t.opened_at, env, seq, base)
                    .map_err(|e| format!("the deadline of `{to}` cannot be computed: {e}"))?;
                Some(Recomputed { due, timers })
            } else {
                None
            };
            note(&t.step, &to);
            tasks.push(TaskMove {
                task: t.id,
                from: t.step.clone(),
                to,
                roles,
                recomputed,
            });
        }
        for (step, group) in &inst.children {
            let to = map(step);
            match new.step(&to) {
                None => return Err(gone(step, "children are waited for")),
                Some((d, _)) if d.kind != StepKind::Subprocess => {
                    return Err(format!(
                        "children are waited for at `{step}`, and `{to}` in v{} is not a subprocess step",
                        plan.to_version
                    ))
                }
                Some((d, _)) if d.procedure.as_deref() != Some(group.procedure.as_str()) => {
                    return Err(format!(
                        "children of `{}` are waited for at `{step}`, and `{to}` in v{} starts other children",
                        group.procedure, plan.to_version
                    ))
                }
                Some(_) => note(step, &to),
            }
        }
        for join in inst.joins.keys() {
            let to = map(join);
            match kind_of(&to) {
                Some(StepKind::Join) => note(join, &to),
                None => return Err(gone(join, "branches have arrived")),
                Some(_) => {
                    return Err(format!(
                        "branches have arrived at `{join}`, and `{to}` in v{} is not a join",
                        plan.to_version
                    ))
                }
            }
        }
        for step in inst.done_by.keys() {
            if new.step(step).is_none() {
                if let Some(to) = plan.steps.get(step) {
                    note(step, to);
                }
            }
        }
        // The work in flight, on the new version's steps, must be a state it reaches.
        let tokens: Vec<String> = marking(inst).iter().map(|s| map(s)).collect();
        let names: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let markings = new
            .markings()
            .ok_or_else(|| "the new version's states cannot be explored".to_string())?;
        if !names.is_empty() && !matches!(markings.contains(&names), Ok(true)) {
            return Err(format!(
                "its work in flight ({}) is not a state v{} reaches: a parallel region or join it is in changed shape",
                tokens.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "),
                plan.to_version
            ));
        }
        // Its data must fit the new version's fields (those the new version still has).
        let declared: indexmap::IndexMap<String, crate::definition::model::Field> = new
            .fields
            .iter()
            .filter(|(k, _)| inst.data.contains_key(*k))
            .map(|(k, f)| (k.clone(), f.clone()))
            .collect();
        let values: serde_json::Map<String, serde_json::Value> = inst
            .data
            .iter()
            .filter(|(k, _)| declared.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(v) = FormValidator::for_updates(&declared) {
            let problems = v.check(&values);
            if !problems.is_empty() {
                return Err(format!(
                    "its data does not fit v{}: {}",
                    plan.to_version,
                    problems
                        .iter()
                        .map(|p| format!("`{}`: {}", p.field, p.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
        if inst.hash != old.hash {
            return Err(format!(
                "it is pinned to another text of v{} than the one registered",
                plan.from_version
            ));
        }
        Ok(Event {
            seq,
            at: now,
            by: Some(actor.stamp()),
            kind: EventKind::Migrated(Box::new(Migration {
                plan: plan.name.clone(),
                from_version: plan.from_version,
                to_version: plan.to_version,
                hash: new.hash.clone(),
                renamed,
                tasks,
                reason: plan.reason.trim().to_string(),
            })),
        })
    }
}

fn describe(inst: &Instance, to: u32) -> String {
    let work: Vec<String> = inst
        .tasks
        .values()
        .map(|t| format!("task at `{}`", t.step))
        .collect();
    if work.is_empty() {
        format!("to v{to}")
    } else {
        format!("to v{to}: {}", work.join(", "))
    }
}

fn refusal_text(e: EngineError) -> String {
    match e {
        EngineError::Conflict(s) | EngineError::Invalid(s) => s,
        other => other.to_string(),
    }
}
