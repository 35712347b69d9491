//! Who may act on a task: eligibility (roles, assignee, delegate), separation of duties,
//! names in form data checked against the directory; claiming and releasing.

use super::*;

impl<'a> Run<'a> {
    /// May `a` take this task at all (before claims and separation)?
    pub(super) fn eligible(&self, t: &Task, a: &Actor) -> bool {
        match (&t.delegated_to, &t.assignee) {
            (Some(d), _) => d == &a.id,
            (None, Some(person)) => person == &a.id,
            (None, None) if !t.people.is_empty() => t.people.contains(&a.id),
            (None, None) => a.holds_any(&t.roles),
        }
    }

    /// Why `a` may not act on `t` now. Someone the task was offered to (before anyone
    /// delegated or took it) lost a race or came too late: a conflict. A 403 would wrongly
    /// tell them they never had the right.
    pub(super) fn moved_on_or_forbidden(t: &Task, a: &Actor, why: String) -> EngineError {
        let offered = match &t.assignee {
            Some(person) => person == &a.id,
            None if !t.people.is_empty() => t.people.contains(&a.id),
            None => a.holds_any(&t.roles),
        };
        if offered {
            EngineError::Conflict(why)
        } else {
            EngineError::Forbidden(why)
        }
    }

    pub(super) fn check_eligible(&self, t: &Task, a: &Actor) -> Result<(), EngineError> {
        if self.eligible(t, a) {
            return Ok(());
        }
        Err(match (&t.delegated_to, &t.assignee) {
            (Some(d), _) => {
                Self::moved_on_or_forbidden(t, a, format!("task `{}` was delegated to {d}", t.step))
            }
            (None, Some(p)) => {
                EngineError::Forbidden(format!("task `{}` is assigned to {p}", t.step))
            }
            (None, None) if !t.people.is_empty() => EngineError::Forbidden(format!(
                "task `{}` is for {} only",
                t.step,
                t.people.join(", ")
            )),
            (None, None) => EngineError::Forbidden(format!(
                "task `{}` is for the roles {}",
                t.step,
                t.roles.join(", ")
            )),
        })
    }

    /// Separation of duties for `a` doing `step`.
    pub(super) fn check_separation(&self, step: &str, a: &Actor) -> Result<(), EngineError> {
        match self.separation_problem(step, a, &self.s.data) {
            Some(why) => Err(EngineError::Forbidden(why)),
            None => Ok(()),
        }
    }

    /// Why `a` may not do `step` by its separation rules, reading department fields from
    /// `data` (the instance's data, or the data a command is about to write).
    pub(super) fn separation_problem(
        &self,
        step: &str,
        a: &Actor,
        data: &Map<String, Value>,
    ) -> Option<String> {
        let def = self.def();
        let s = def.steps.get(step)?;
        if let Some(rule) = &s.must_be {
            if let Some(why) = person_rule_problem(rule, a, data) {
                return Some(format!("{} may not do `{step}`: {why}", a.id));
            }
        }
        if let Some(sep) = &s.separation {
            for other in &sep.not_same_person_as {
                if self.did(other, &a.id) {
                    return Some(format!(
                        "{} did `{other}`, so may not do `{step}` (separation of duties)",
                        a.id
                    ));
                }
            }
            if let Some(field) = &sep.not_from_department {
                if let Some(dep) = data
                    .get(field)
                    .and_then(Value::as_str)
                    .filter(|d| a.in_department(d))
                {
                    return Some(format!(
                        "{} belongs to the department in `{field}` ({dep}), so may not do `{step}`",
                        a.id
                    ));
                }
            }
        }
        // Parallel siblings: a rule on `other` naming this step binds this step too, since
        // either may be done first.
        for (other_id, other) in &def.steps {
            if let Some(sep) = &other.separation {
                if sep.not_same_person_as.iter().any(|x| x == step) && self.did(other_id, &a.id) {
                    return Some(format!(
                        "{} did `{other_id}`, so may not do `{step}` (separation of duties)",
                        a.id
                    ));
                }
            }
        }
        None
    }

    /// The people and departments `values` name (a start form, a completion form, computed
    /// values) must exist now, and a person put into a field that later steps are assigned
    /// to must be allowed to do those steps — checked here, when the person is chosen, not
    /// when the step opens with nobody able to act on it. `data` is the instance data as it
    /// will be once `values` are written.
    pub(super) fn check_names(
        &self,
        values: &Map<String, Value>,
        data: &Map<String, Value>,
    ) -> Result<(), EngineError> {
        let mut problems = unknown_names(&self.proc.fields, values, self.roster);
        for (field, value) in values {
            let ids: Vec<&str> = match value {
                Value::String(id) => vec![id.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => continue,
            };
            if problems.iter().any(|p| &p.field == field) {
                continue;
            }
            let steps = self.def().steps.iter().filter(|(_, s)| {
                s.assignee.as_deref() == Some(field.as_str())
                    || s.assignees.as_deref() == Some(field.as_str())
            });
            for ((step_id, _), id) in steps.flat_map(|s| ids.iter().map(move |id| (s, *id))) {
                let Some(person) = self.roster.person(id) else {
                    continue;
                };
                if let Some(why) = self.separation_problem(step_id, &person, data) {
                    problems.push(FieldProblem {
                        field: field.clone(),
                        message: format!(
                            "`{id}` cannot be chosen: the step `{step_id}` is assigned to the person in `{field}`, and {why}"
                        ),
                    });
                    break;
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(EngineError::InvalidForm(problems))
        }
    }

    /// The people a data field names: one user id, or a list of them.
    pub(super) fn names_in(&self, field: &str) -> Vec<String> {
        match self.s.data.get(field) {
            Some(Value::String(u)) if !u.is_empty() => vec![u.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }

    pub(super) fn did(&self, step: &str, user: &str) -> bool {
        self.s
            .done_by
            .get(step)
            .is_some_and(|v| v.iter().any(|u| u == user))
    }

    pub(super) fn claim(&mut self, task: TaskId) -> Result<(), EngineError> {
        let a = self.person()?;
        let t = self.task(task)?;
        if self.is_multi_sig(&t.step) {
            return Err(EngineError::Invalid(format!(
                "`{}` is signed by several people; sign it by completing it, no claim needed",
                t.step
            )));
        }
        self.check_eligible(&t, a)?;
        self.check_separation(&t.step, a)?;
        match &t.claimed_by {
            Some(c) if c == &a.id => {
                return Err(EngineError::Conflict(format!(
                    "you already hold task `{}`",
                    t.step
                )))
            }
            Some(c) => {
                return Err(EngineError::Conflict(format!(
                    "task `{}` is already claimed by {c}",
                    t.step
                )))
            }
            None => {}
        }
        self.emit(Some(a.stamp()), EventKind::TaskClaimed { task });
        Ok(())
    }

    pub(super) fn release(&mut self, task: TaskId) -> Result<(), EngineError> {
        let a = self.person()?;
        let t = self.task(task)?;
        if t.claimed_by.as_deref() != Some(a.id.as_str()) {
            return Err(EngineError::Conflict(format!(
                "task `{}` is not claimed by you",
                t.step
            )));
        }
        self.emit(Some(a.stamp()), EventKind::TaskReleased { task });
        Ok(())
    }

    pub(super) fn is_multi_sig(&self, step: &str) -> bool {
        self.def()
            .steps
            .get(step)
            .is_some_and(|s| s.signatures.is_some())
    }
}

/// Why `a` does not fit a step's `must_be`, reading `department_in` from `data`.
fn person_rule_problem(
    rule: &crate::definition::model::PersonRule,
    a: &Actor,
    data: &Map<String, Value>,
) -> Option<String> {
    if let Some(d) = rule.department.as_deref().filter(|d| !a.in_department(d)) {
        return Some(format!(
            "the step must be done by someone from department `{d}`"
        ));
    }
    if let Some(field) = &rule.department_in {
        match data.get(field).and_then(Value::as_str) {
            Some(d) if a.in_department(d) => {}
            Some(d) => {
                return Some(format!(
                    "the step must be done by someone from the department in `{field}` ({d})"
                ))
            }
            None => {
                return Some(format!(
                    "the step must be done by someone from the department in `{field}`, which is not filled in"
                ))
            }
        }
    }
    if let Some(r) = rule.role.as_deref().filter(|r| !a.holds(r)) {
        return Some(format!(
            "the step must be done by someone holding the role `{r}`"
        ));
    }
    if let Some(n) = rule.level_at_least.filter(|n| a.level < *n) {
        return Some(format!(
            "the step must be done by someone of level {n} or above ({} is at level {})",
            a.id, a.level
        ));
    }
    None
}
