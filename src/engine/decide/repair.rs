//! An operator's repairs of one instance: suspend and resume it (deadlines paused, then
//! extended by the pause), withdraw one open task, move stuck work to another step. Each
//! needs `admin` or one of the procedure's `operator_roles`, and a reason, which the
//! history keeps. A move or a withdrawal must leave the instance in a state the procedure
//! reaches by itself (the soundness explorer's states), so neither can strand a join. It decides nothing
//! about the procedure's own steps beyond entering the target.

use super::*;

impl<'a> Run<'a> {
    /// The operator acting, refused unless they hold `admin` or an operator role.
    fn operator(&self, what: &str) -> Result<&'a Actor, EngineError> {
        let a = self.person()?;
        if a.operates(self.def()) {
            return Ok(a);
        }
        Err(EngineError::Forbidden(
            if self.def().operator_roles.is_empty() {
                format!("only an admin may {what} `{}` instances", self.def().id)
            } else {
                format!(
                    "to {what} `{}` instances you need admin or one of the roles {}",
                    self.def().id,
                    self.def().operator_roles.join(", ")
                )
            },
        ))
    }

    fn reason(reason: &str, what: &str) -> Result<String, EngineError> {
        let r = reason.trim();
        if r.is_empty() {
            return Err(EngineError::Invalid(format!(
                "a reason is required to {what}; it is kept in the history for auditors"
            )));
        }
        Ok(r.to_string())
    }

    pub(super) fn suspend(&mut self, reason: &str) -> Result<(), EngineError> {
        let a = self.operator("suspend")?;
        let reason = Self::reason(reason, "suspend an instance")?;
        if self.s.suspended.is_some() {
            return Err(EngineError::Conflict(
                "the instance is already suspended".into(),
            ));
        }
        self.emit(Some(a.stamp()), EventKind::Suspended { reason });
        Ok(())
    }

    pub(super) fn resume(&mut self, reason: &str) -> Result<(), EngineError> {
        let a = self.operator("resume")?;
        let reason = Self::reason(reason, "resume an instance")?;
        let since = self
            .s
            .suspended
            .as_ref()
            .map(|s| s.since)
            .ok_or_else(|| EngineError::Conflict("the instance is not suspended".into()))?;
        let paused_ms = (self.now - since).num_milliseconds().max(0);
        self.emit(Some(a.stamp()), EventKind::Resumed { reason, paused_ms });
        Ok(())
    }

    /// Withdraws one open task. What is left must still be able to end: the task's branch
    /// of a parallel region arrives at its join without the work (the siblings would
    /// otherwise wait there forever), and the instance's only open work is not withdrawn
    /// (nothing would be left to do; a move or a cancellation says what happens instead).
    pub(super) fn withdraw_task(&mut self, task: TaskId, reason: &str) -> Result<(), EngineError> {
        let a = self.operator("withdraw tasks of")?;
        let reason = Self::reason(reason, "withdraw a task")?;
        let t = self.task(task)?;
        let mut after = self.s.clone();
        after.tasks.remove(&task);
        let rest = crate::engine::changes::marking(&after);
        if rest.is_empty() {
            return Err(EngineError::Conflict(format!(
                "`{}` is this instance's only open work: withdrawn, nothing would be left to do \
                 and the instance would never end; move the work to another step, or cancel \
                 the instance",
                t.step
            )));
        }
        let markings = self.proc.markings().ok_or_else(|| {
            EngineError::Invalid("this procedure's states cannot be explored".into())
        })?;
        let reaches = |extra: Option<&str>| {
            let mut names: Vec<&str> = rest.iter().map(String::as_str).collect();
            names.extend(extra);
            markings.contains(&names) == Ok(true)
        };
        // The innermost region first: a branch nested in another arrives at its own join.
        let mut regions: Vec<(&String, usize)> = self
            .proc
            .join_region
            .iter()
            .filter(|(_, r)| r.contains(&t.step))
            .map(|(j, r)| (j, r.len()))
            .collect();
        regions.sort_by_key(|&(j, n)| (n, j.clone()));
        let join = if reaches(None) {
            None
        } else if let Some((j, _)) = regions.into_iter().find(|(j, _)| reaches(Some(j))) {
            Some(j.clone())
        } else {
            return Err(EngineError::Conflict(format!(
                "withdrawing the `{}` task would leave work at {} — a state `{}` never reaches by \
                 itself, from which it might not end; move the work instead",
                t.step,
                rest.iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.def().id,
            )));
        };
        self.emit(
            Some(a.stamp()),
            EventKind::TaskWithdrawn {
                task,
                step: t.step,
                reason,
            },
        );
        match join {
            Some(j) => self.enter(&j),
            None => Ok(()),
        }
    }

    pub(super) fn move_to(
        &mut self,
        tasks: &[TaskId],
        to: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let a = self.operator("move work of")?;
        let reason = Self::reason(reason, "move work")?;
        if self.proc.step(to).is_none() {
            let known: Vec<&str> = self.def().steps.keys().map(String::as_str).collect();
            // 422, not 404: the instance was found; what it was asked to do is not possible.
            return Err(EngineError::Invalid(format!(
                "there is no step `{to}` in `{}` v{} to move to (its steps: {})",
                self.def().id,
                self.def().version,
                known.join(", ")
            )));
        }
        let everything = tasks.is_empty();
        for t in tasks {
            self.task(*t)?;
        }
        let closing: Vec<TaskId> = if everything {
            self.s.tasks.keys().copied().collect()
        } else {
            let mut v = tasks.to_vec();
            v.sort();
            v.dedup();
            v
        };
        let (groups, joins): (Vec<String>, Vec<String>) = if everything {
            (
                self.s.children.keys().cloned().collect(),
                self.s.joins.keys().cloned().collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        // The state after the move, checked against the states the procedure reaches.
        let mut after = self.s.clone();
        for t in &closing {
            after.tasks.remove(t);
        }
        for g in &groups {
            after.children.remove(g);
        }
        for j in &joins {
            after.joins.remove(j);
        }
        let mut tokens = crate::engine::changes::marking(&after);
        tokens.push(to.to_string());
        let names: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let markings = self.proc.markings().ok_or_else(|| {
            EngineError::Invalid("this procedure's states cannot be explored".into())
        })?;
        match markings.contains(&names) {
            Ok(true) => {}
            Ok(false) => {
                return Err(EngineError::Conflict(format!(
                    "moving {} to `{to}` would leave work at {} — a state `{}` never reaches by itself, from which it might not end (a branch waiting for a sibling that is gone); {}",
                    if everything { "all open work".to_string() } else { format!("{} task(s)", closing.len()) },
                    tokens.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "),
                    self.def().id,
                    if markings.complete { "move all open work, or a task to a step in its own branch" } else { "the procedure is too large to check every state, so only moves to states it was seen to reach are allowed" }
                )));
            }
            Err(step) => return Err(EngineError::NotFound(format!("step `{step}`"))),
        }
        let children: Vec<InstanceId> = groups
            .iter()
            .filter_map(|g| self.s.children.get(g))
            .flat_map(|g| g.pending.keys().copied())
            .collect();
        self.emit(
            Some(a.stamp()),
            EventKind::Moved {
                tasks: closing,
                groups,
                children: children.clone(),
                joins,
                to: to.to_string(),
                reason: reason.clone(),
            },
        );
        for id in children {
            self.effects.push(Effect::CancelChild {
                id,
                reason: format!(
                    "moved: instance {} was moved to `{to}` ({reason})",
                    self.s.id
                ),
            });
        }
        self.enter(to)
    }

    pub(super) fn return_task(
        &mut self,
        task: TaskId,
        user: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        if self.actor.is_some() {
            return Err(EngineError::Forbidden(
                "tasks are returned by the engine when the directory deactivates someone".into(),
            ));
        }
        let t = self.task(task)?;
        if t.claimed_by.as_deref() != Some(user) && t.delegated_to.as_deref() != Some(user) {
            return Ok(());
        }
        self.emit(
            None,
            EventKind::TaskReturned {
                task,
                user: user.to_string(),
                reason: reason.to_string(),
            },
        );
        Ok(())
    }
}
