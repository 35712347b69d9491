//! Acting on a task: delegating it to a colleague and completing (or signing) it, with the
//! form checked, the outcome routed and the signature recorded.

use super::*;

impl<'a> Run<'a> {
    pub(super) fn delegate(
        &mut self,
        task: TaskId,
        to: &Actor,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        let a = self.person()?;
        let t = self.task(task)?;
        let step = self
            .def()
            .steps
            .get(&t.step)
            .ok_or_else(|| EngineError::NotFound(format!("step {}", t.step)))?;
        let Some(rule) = &step.delegation else {
            return Err(EngineError::Forbidden(format!(
                "task `{}` may not be delegated",
                t.step
            )));
        };
        // Only the person who holds the task (or could take it and nobody has) hands it on.
        match t.holder() {
            Some(h) if h != a.id => {
                return Err(Self::moved_on_or_forbidden(
                    &t,
                    a,
                    format!("task `{}` is held by {h}", t.step),
                ))
            }
            _ => self.check_eligible(&t, a)?,
        }
        if to.id == a.id {
            return Err(EngineError::Invalid(
                "you cannot delegate a task to yourself".into(),
            ));
        }
        let allowed: Vec<String> = if rule.to_roles.is_empty() {
            t.roles.clone()
        } else {
            rule.to_roles.clone()
        };
        if !to.holds_any(&allowed) {
            return Err(EngineError::Forbidden(format!(
                "{} may not take `{}`: the delegate needs one of the roles {}",
                to.id,
                t.step,
                allowed.join(", ")
            )));
        }
        if rule.level == DelegationLevel::SameOrAbove && to.level < a.level {
            return Err(EngineError::Forbidden(format!(
                "{} is at level {}, below your level {}: `{}` may only be delegated to the same level or above",
                to.id, to.level, a.level, t.step
            )));
        }
        let reason = reason.filter(|r| !r.trim().is_empty());
        if rule.reason_required && reason.is_none() {
            return Err(EngineError::Invalid(
                "a reason is required to delegate this task".into(),
            ));
        }
        self.check_separation(&t.step, to)?;
        self.emit(
            Some(a.stamp()),
            EventKind::TaskDelegated {
                task,
                to: to.id.clone(),
                reason,
            },
        );
        Ok(())
    }

    pub(super) fn complete(
        &mut self,
        task: TaskId,
        outcome: Option<&str>,
        form: &Map<String, Value>,
        comment: Option<String>,
    ) -> Result<(), EngineError> {
        let a = self.person()?;
        let t = self.task(task)?;
        let (step, compiled) = self
            .proc
            .step(&t.step)
            .ok_or_else(|| EngineError::NotFound(format!("step {}", t.step)))?;
        let outcomes = Procedure::outcomes_of(step);
        let outcome = match outcome {
            Some(o) if outcomes.contains(&o) => o.to_string(),
            Some(o) => {
                return Err(EngineError::Invalid(format!(
                    "`{o}` is not an outcome of `{}`; choose one of {}",
                    t.step,
                    outcomes.join(", ")
                )))
            }
            None if outcomes.len() == 1 => outcomes[0].to_string(),
            None => {
                return Err(EngineError::Invalid(format!(
                    "`{}` has several outcomes; choose one of {}",
                    t.step,
                    outcomes.join(", ")
                )))
            }
        };
        let multi = step.signatures.clone();
        if let Some(sig) = &multi {
            let roles = if sig.roles.is_empty() {
                t.roles.clone()
            } else {
                sig.roles.clone()
            };
            if !t.people.is_empty() {
                if !t.people.contains(&a.id) {
                    return Err(EngineError::Forbidden(format!(
                        "`{}` is signed by {} only",
                        t.step,
                        t.people.join(", ")
                    )));
                }
            } else if !a.holds_any(&roles) {
                return Err(EngineError::Forbidden(format!(
                    "signing `{}` needs one of the roles {}",
                    t.step,
                    roles.join(", ")
                )));
            }
            if t.signatures
                .iter()
                .any(|s| s.user == a.id && s.outcome == outcome)
            {
                return Err(EngineError::Conflict(format!(
                    "you have already signed `{}` with `{outcome}`",
                    t.step
                )));
            }
        } else {
            self.check_eligible(&t, a)?;
            if let Some(c) = &t.claimed_by {
                if c != &a.id {
                    return Err(EngineError::Conflict(format!(
                        "task `{}` is claimed by {c}",
                        t.step
                    )));
                }
            }
        }
        self.check_separation(&t.step, a)?;
        if let Some(opens) = t.opens.filter(|o| self.now < *o) {
            return Err(EngineError::Conflict(format!(
                "`{}` cannot be completed before {}: it opens then",
                t.step,
                self.local_time(&t.step, opens)
            )));
        }
        let mut problems = compiled.form.check(form);
        problems.extend(outcome_problems(step, &outcome, form));
        if !problems.is_empty() {
            return Err(EngineError::InvalidForm(problems));
        }
        let mut after = self.s.data.clone();
        merge_values(&mut after, form);
        self.check_names(form, &after)?;
        let mut stamp = a.stamp();
        stamp.on_behalf_of = t
            .delegated_by
            .clone()
            .filter(|_| t.delegated_to.as_deref() == Some(a.id.as_str()));

        let mut decided = None;
        if let Some(sig) = &multi {
            let roles = if sig.roles.is_empty() {
                t.roles.clone()
            } else {
                sig.roles.clone()
            };
            // Everyone's current choice once this signature counts: a signer who signs
            // again has changed their mind.
            let mut votes: Vec<(String, Vec<String>, String)> = t
                .signatures
                .iter()
                .filter(|s| s.user != a.id)
                .map(|s| (s.user.clone(), s.roles.clone(), s.outcome.clone()))
                .collect();
            votes.push((a.id.clone(), a.roles.clone(), outcome.clone()));
            let signers: Vec<(String, Vec<String>)> = votes
                .iter()
                .filter(|v| v.2 == outcome)
                .map(|v| (v.0.clone(), v.1.clone()))
                .collect();
            let rule = sign_rule(sig, &outcome, &outcomes);
            let panel = if t.people.is_empty() {
                sig.required as usize
            } else {
                t.people.len()
            };
            let per_role = |n: usize| {
                !sig.one_per_role || n < roles.len() || distinct_signer_per_role(&roles, &signers)
            };
            let enough = match &rule {
                SignRule::Count(n) => {
                    let n = *n as usize;
                    signers.len() >= n && per_role(n)
                }
                SignRule::Word(SignWord::Any) => true,
                SignRule::Word(SignWord::All) => {
                    signers.len() >= panel && votes.len() == signers.len() && per_role(panel)
                }
            };
            if !enough {
                self.emit(
                    Some(stamp),
                    EventKind::Signed {
                        task,
                        step: t.step.clone(),
                        outcome,
                        form: form.clone(),
                        comment,
                        meaning: step.meaning.clone(),
                    },
                );
                return Ok(());
            }
            decided = Some(SignDecision {
                rule: rule.describe(),
                signers: signers.into_iter().map(|s| s.0).collect(),
            });
        }

        let mut data = self.s.data.clone();
        for (k, v) in form {
            data.insert(k.clone(), v.clone());
        }
        let computed = self.compute(&compiled.compute, &data, Some(form), Some(&outcome))?;
        // Completing an unclaimed task claims it implicitly: the completion event already
        // says who took it, so no separate claim event is written.
        self.emit(
            Some(stamp),
            EventKind::TaskCompleted {
                task,
                step: t.step.clone(),
                outcome: outcome.clone(),
                form: form.clone(),
                computed,
                comment,
                meaning: step.meaning.clone(),
                on_time: t.due.map(|due| self.now < due),
                decided,
            },
        );
        self.notify_step(&t.step, NoticeWhen::Complete, Some(task));
        self.write_registers(&t.step)?;
        // Other open tasks of a multi-signature step do not exist: one task collects all
        // signatures. Route on.
        let from = t.step.clone();
        self.route(&from, &outcome, Some(form))
    }
}

/// The rule deciding `outcome` on a multi-signature step. Steps with several outcomes
/// declare one per outcome (the validator insists); a version registered before rules
/// existed keeps the behaviour it ran with: the first outcome needs `required` signers and
/// any other is decided by one.
fn sign_rule(
    sig: &crate::definition::model::Signatures,
    outcome: &str,
    outcomes: &[&str],
) -> SignRule {
    match sig.decide.get(outcome) {
        Some(rule) => rule.clone(),
        None if outcomes.first() == Some(&outcome) => SignRule::Count(sig.required),
        None => SignRule::Word(SignWord::Any),
    }
}

/// Fields the chosen outcome needs: `required_for` filled in, `must_be_true_for` ticked.
fn outcome_problems(step: &Step, outcome: &str, form: &Map<String, Value>) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    for (name, f) in &step.form {
        let v = form.get(name);
        if f.required_for.iter().any(|o| o == outcome) {
            let empty = match v {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.trim().is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            if empty {
                out.push(FieldProblem {
                    field: name.clone(),
                    message: format!("required when the outcome is `{outcome}`"),
                });
            }
        }
        if f.must_be_true_for.iter().any(|o| o == outcome) && v != Some(&Value::Bool(true)) {
            out.push(FieldProblem {
                field: name.clone(),
                message: format!("must be ticked (true) to choose `{outcome}`"),
            });
        }
    }
    out
}
