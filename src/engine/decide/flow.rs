//! The instance's flow: cancelling, comments, children ending and being collected, computed
//! values, conditions, routing along transitions, entering steps of every kind, and the
//! messages a step sends on entering or completing.

use super::*;

impl<'a> Run<'a> {
    pub(super) fn cancel(&mut self, reason: &str) -> Result<(), EngineError> {
        // Who may cancel is checked before what they sent: someone without the right
        // hears "not allowed", not advice on the reason.
        if let Some(a) = self.actor {
            if !a.holds_any(&self.def().cancel_roles) && !a.holds("admin") {
                return Err(EngineError::Forbidden(
                    if self.def().cancel_roles.is_empty() {
                        format!("only an admin may cancel `{}` instances", self.def().id)
                    } else {
                        format!(
                            "cancelling `{}` needs one of the roles {}",
                            self.def().id,
                            self.def().cancel_roles.join(", ")
                        )
                    },
                ));
            }
        }
        if reason.trim().is_empty() {
            return Err(EngineError::Invalid(
                "a reason is required to cancel an instance".into(),
            ));
        }
        let children: Vec<InstanceId> = self
            .s
            .children
            .values()
            .flat_map(|g| g.pending.keys().copied())
            .collect();
        let by = self.actor.map(Actor::stamp);
        self.emit(
            by,
            EventKind::Cancelled {
                reason: reason.to_string(),
            },
        );
        for id in children {
            self.effects.push(Effect::CancelChild {
                id,
                reason: format!("parent {} cancelled: {reason}", self.s.id),
            });
        }
        // A parent waits for every child; one cancelled on its own must still report, or
        // the parent would wait forever. (When the parent itself cancelled it, the service
        // drops this report: the parent is no longer running.)
        if let Some(p) = self.s.parent.clone().filter(|p| !p.detached) {
            self.effects.push(Effect::NotifyParent {
                parent: p.instance,
                step: p.step,
                child: self.s.id,
                outcome: "cancelled".into(),
                data: self.s.data.clone(),
            });
        }
        Ok(())
    }

    pub(super) fn comment(&mut self, text: &str) -> Result<(), EngineError> {
        let a = self.person()?;
        if text.trim().is_empty() {
            return Err(EngineError::Invalid("a comment needs text".into()));
        }
        self.emit(
            Some(a.stamp()),
            EventKind::Commented {
                text: text.to_string(),
            },
        );
        Ok(())
    }

    pub(super) fn child_ended(
        &mut self,
        step: &str,
        child: InstanceId,
        outcome: &str,
        data: &Map<String, Value>,
    ) -> Result<(), EngineError> {
        let Some(group) = self.s.children.get(step) else {
            // The step stopped waiting: its children were withdrawn (a partial join or a
            // terminating end) and cancelled in the same commit, and this is the report of
            // that cancellation. Nothing is left to record.
            return Ok(());
        };
        if !group.pending.contains_key(&child) {
            return Err(EngineError::Conflict(format!(
                "child {child} already reported its end"
            )));
        }
        self.emit(
            None,
            EventKind::ChildEnded {
                step: step.to_string(),
                child,
                outcome: outcome.to_string(),
                data: data.clone(),
            },
        );
        let done = self
            .s
            .children
            .get(step)
            .is_some_and(|g| g.pending.is_empty());
        if done {
            self.collect(step)?;
        }
        Ok(())
    }

    /// All children of `step` ended: store their results and go on.
    pub(super) fn collect(&mut self, step: &str) -> Result<(), EngineError> {
        let results: Vec<Value> = self
            .s
            .children
            .get(step)
            .map(|g| g.results.values().cloned().collect())
            .unwrap_or_default();
        let (def_step, compiled) = self
            .proc
            .step(step)
            .ok_or_else(|| EngineError::NotFound(format!("step {step}")))?;
        let field = def_step.collect.clone();
        let mut data = self.s.data.clone();
        if let Some(f) = &field {
            data.insert(f.clone(), Value::Array(results.clone()));
        }
        let computed = self.compute(&compiled.compute, &data, None, None)?;
        self.emit(
            None,
            EventKind::ChildrenCollected {
                step: step.to_string(),
                field,
                results,
                computed,
            },
        );
        self.route(step, DEFAULT_OUTCOME, None)
    }

    /// Evaluates `compute` in order; each value is visible to the next.
    pub(super) fn compute(
        &self,
        exprs: &[(String, Arc<cel::Program>)],
        data: &Map<String, Value>,
        form: Option<&Map<String, Value>>,
        outcome: Option<&str>,
    ) -> Result<Map<String, Value>, EngineError> {
        let mut data = data.clone();
        let mut out = Map::new();
        for (name, program) in exprs {
            let v = self
                .eval(program, &data, form, outcome, None)
                .map_err(|e| EngineError::Guard(format!("computing `{name}`: {e}")))?;
            let json = self.proc.coerce(name, from_cel(&v), self.zone());
            data.insert(name.clone(), json.clone());
            out.insert(name.clone(), json);
        }
        self.check_names(&out, &data)?;
        Ok(out)
    }

    pub(super) fn eval(
        &self,
        program: &cel::Program,
        data: &Map<String, Value>,
        form: Option<&Map<String, Value>>,
        outcome: Option<&str>,
        item: Option<&Value>,
    ) -> Result<Cel, String> {
        let mut ctx = crate::definition::expr::context();
        self.proc.bind(&mut ctx, data, self.zone());
        let form_map: std::collections::HashMap<Key, Cel> = form
            .map(|f| {
                f.iter()
                    .map(|(k, v)| {
                        (
                            Key::String(Arc::new(k.clone())),
                            to_cel(v, self.proc.fields.get(k), self.zone()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        ctx.add_variable_from_value("form", Cel::Map(form_map.into()));
        ctx.add_variable_from_value("actor", self.actor.map_or(Cel::Null, actor_value));
        ctx.add_variable_from_value(
            "outcome",
            outcome.map_or(Cel::Null, |o| Cel::String(Arc::new(o.to_string()))),
        );
        ctx.add_variable_from_value("now", Cel::Timestamp(self.now.fixed_offset()));
        if self.proc.uses_registers {
            ctx.add_variable_from_value("register", self.register_value());
        }
        if let Some(item) = item {
            ctx.add_variable_from_value("item", to_cel(item, None, self.zone()));
        }
        program.execute(&ctx).map_err(|e| e.to_string())
    }

    /// Leaves `from` with `outcome`: the first transition that matches and holds.
    pub(super) fn route(
        &mut self,
        from: &str,
        outcome: &str,
        form: Option<&Map<String, Value>>,
    ) -> Result<(), EngineError> {
        let (step, compiled) = self
            .proc
            .step(from)
            .ok_or_else(|| EngineError::NotFound(format!("step {from}")))?;
        for (t, guard) in step.next.iter().zip(&compiled.guards) {
            if t.on.as_deref().is_some_and(|on| on != outcome) {
                continue;
            }
            let holds = match guard {
                None => true,
                Some(p) => match self.eval(p, &self.s.data, form, Some(outcome), None) {
                    Ok(Cel::Bool(b)) => b,
                    Ok(other) => {
                        return Err(EngineError::Guard(format!(
                            "the condition `{}` on `{from}` gave {other:?}, not true or false",
                            t.when.as_deref().unwrap_or_default()
                        )))
                    }
                    Err(e) => {
                        return Err(EngineError::Guard(format!(
                            "the condition `{}` on `{from}` failed: {e}",
                            t.when.as_deref().unwrap_or_default()
                        )))
                    }
                },
            };
            if holds {
                let to = t.to.clone();
                return self.enter(&to);
            }
        }
        Err(EngineError::Guard(format!(
            "no transition of `{from}` applies to outcome `{outcome}` with this data; the instance would be stuck"
        )))
    }

    /// Arrives at `id`.
    pub(super) fn enter(&mut self, id: &str) -> Result<(), EngineError> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            EngineError::Guard(format!(
                "the procedure passed {STEP_BUDGET} steps without anyone acting (an endless loop of automatic steps at `{id}`)"
            ))
        })?;
        let (step, compiled) = self
            .proc
            .step(id)
            .ok_or_else(|| EngineError::NotFound(format!("step {id}")))?;
        match step.kind {
            StepKind::Task => {
                let task = derive_id(self.s.id, self.s.seq + 1, 0);
                let assignee = match &step.assignee {
                    Some(field) => Some(
                        self.s
                            .data
                            .get(field)
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty())
                            .ok_or_else(|| {
                                EngineError::Guard(format!(
                                    "step `{id}` is assigned to the person in `{field}`, but `{field}` is not filled in"
                                ))
                            })?
                            .to_string(),
                    ),
                    None => None,
                };
                // A multi-signature task is offered to every role that may sign it.
                let mut roles: Vec<String> = step.role.iter().cloned().collect();
                if let Some(sig) = &step.signatures {
                    for r in &sig.roles {
                        if !roles.contains(r) {
                            roles.push(r.clone());
                        }
                    }
                }
                let people = match &step.assignees {
                    Some(field) => {
                        let people = self.names_in(field);
                        if people.is_empty() {
                            return Err(EngineError::Guard(format!(
                                "step `{id}` is offered to the people in `{field}`, but `{field}` lists nobody"
                            )));
                        }
                        people
                    }
                    None => Vec::new(),
                };
                let d = self.deadline_of(id, step)?;
                self.emit(
                    None,
                    EventKind::TaskOpened {
                        task,
                        step: id.to_string(),
                        roles,
                        assignee,
                        people,
                        opens: d.opens,
                        due: d.due,
                        timers: d.timers,
                    },
                );
                self.notify_step(id, NoticeWhen::Enter, Some(task));
                Ok(())
            }
            StepKind::Auto => {
                let data = self.s.data.clone();
                let computed = self.compute(&compiled.compute, &data, None, None)?;
                self.emit(
                    None,
                    EventKind::AutoPassed {
                        step: id.to_string(),
                        computed,
                    },
                );
                self.write_registers(id)?;
                self.route(id, DEFAULT_OUTCOME, None)
            }
            StepKind::Parallel => {
                let branches = step.branches.clone();
                self.emit(
                    None,
                    EventKind::BranchesStarted {
                        step: id.to_string(),
                        branches: branches.clone(),
                    },
                );
                let join = step.join.clone().unwrap_or_default();
                let seq = self.s.seq;
                for b in &branches {
                    self.enter(b)?;
                    // A branch that reached a partial join (or a terminating end) at once
                    // has withdrawn the block: the branches after it never start.
                    if self.withdrawn_since(seq, &join) || self.s.status != Status::Running {
                        break;
                    }
                }
                Ok(())
            }
            StepKind::Join => {
                let width = self.proc.join_width.get(id).copied().unwrap_or(1);
                let arrived = self.s.joins.get(id).copied().unwrap_or(0) + 1;
                if arrived < width {
                    self.emit(
                        None,
                        EventKind::BranchArrived {
                            join: id.to_string(),
                        },
                    );
                    return Ok(());
                }
                if step.wait_for.is_some() {
                    let region = self.proc.join_region.get(id).cloned().unwrap_or_default();
                    self.withdraw(id, |step| region.contains(step));
                }
                let data = self.s.data.clone();
                let computed = self.compute(&compiled.compute, &data, None, None)?;
                self.emit(
                    None,
                    EventKind::Joined {
                        step: id.to_string(),
                        computed,
                    },
                );
                self.route(id, DEFAULT_OUTCOME, None)
            }
            StepKind::Subprocess => {
                let child_proc = step.procedure.clone().unwrap_or_default();
                let list_field = step.for_each.clone().unwrap_or_default();
                // Without `for_each`, one child (whose `item` is null).
                let items: Vec<Value> = match self.s.data.get(&list_field) {
                    _ if step.for_each.is_none() => vec![Value::Null],
                    Some(Value::Array(items)) => items.clone(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        return Err(EngineError::Guard(format!(
                            "`{list_field}` should be a list to start one `{child_proc}` per item"
                        )))
                    }
                };
                let depth = self.s.depth().saturating_add(1);
                if !items.is_empty() {
                    if let Some(limit) = step.max_depth.filter(|m| depth > *m) {
                        return Err(EngineError::Invalid(format!(
                            "step `{id}` would start `{child_proc}` {depth} levels below the first \
                             instance, and it allows at most {limit} (`max_depth`); the nesting \
                             stops here"
                        )));
                    }
                    if depth > MAX_NESTING {
                        return Err(EngineError::Invalid(format!(
                            "step `{id}` would start `{child_proc}` {depth} levels below the first \
                             instance; instances nest at most {MAX_NESTING} levels deep"
                        )));
                    }
                }
                if items.len() > MAX_CHILDREN {
                    return Err(EngineError::Invalid(format!(
                        "`{list_field}` lists {} items, and step `{id}` starts one `{child_proc}` \
                         per item; at most {MAX_CHILDREN} are started at once, so split the list",
                        items.len()
                    )));
                }
                let seq = self.s.seq + 1;
                let mut children = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    let mut data = Map::new();
                    for (name, program) in &compiled.input {
                        let v = self
                            .eval(program, &self.s.data, None, None, Some(item))
                            .map_err(|e| {
                                EngineError::Guard(format!("input `{name}` of `{id}`: {e}"))
                            })?;
                        data.insert(name.clone(), from_cel(&v));
                    }
                    let n = u32::try_from(index)
                        .map_err(|_| EngineError::Invalid("too many list items".into()))?;
                    children.push(ChildStart {
                        id: derive_id(self.s.id, seq, n),
                        index,
                        data,
                    });
                }
                let detached = !step.waits();
                self.emit(
                    None,
                    EventKind::ChildrenStarted {
                        step: id.to_string(),
                        procedure: child_proc.clone(),
                        children: children.clone(),
                        detached,
                    },
                );
                for c in children {
                    self.effects.push(Effect::StartChild {
                        id: c.id,
                        procedure: child_proc.clone(),
                        data: c.data,
                        parent: ParentLink {
                            instance: self.s.id,
                            step: id.to_string(),
                            index: c.index,
                            depth,
                            detached,
                        },
                    });
                }
                self.notify_step(id, NoticeWhen::Enter, None);
                if detached {
                    // Fire and forget: the children run on their own; this instance goes
                    // on at once and collects nothing.
                    let data = self.s.data.clone();
                    let computed = self.compute(&compiled.compute, &data, None, None)?;
                    self.emit(
                        None,
                        EventKind::AutoPassed {
                            step: id.to_string(),
                            computed,
                        },
                    );
                    return self.route(id, DEFAULT_OUTCOME, None);
                }
                if items.is_empty() {
                    return self.collect(id);
                }
                Ok(())
            }
            StepKind::End => {
                if step.terminate {
                    self.withdraw(id, |_| true);
                }
                let busy = !self.s.tasks.is_empty()
                    || !self.s.joins.is_empty()
                    || !self.s.children.is_empty();
                if busy {
                    // Validation proves this cannot happen in a sound procedure; refusing is
                    // safer than ending with work still open.
                    return Err(EngineError::Guard(format!(
                        "reached the end step `{id}` while other work is still open"
                    )));
                }
                self.notify_step(id, NoticeWhen::Enter, None);
                self.emit(
                    None,
                    EventKind::Ended {
                        step: id.to_string(),
                    },
                );
                if let Some(p) = self.s.parent.clone().filter(|p| !p.detached) {
                    self.effects.push(Effect::NotifyParent {
                        parent: p.instance,
                        step: p.step,
                        child: self.s.id,
                        outcome: id.to_string(),
                        data: self.s.data.clone(),
                    });
                }
                Ok(())
            }
        }
    }
}

impl<'a> Run<'a> {
    /// Sends the step's `notify` messages for `when` (entering or completing it).
    pub(super) fn notify_step(&mut self, id: &str, when: NoticeWhen, task: Option<TaskId>) {
        let Some(step) = self.def().steps.get(id) else {
            return;
        };
        let notices: Vec<_> = step
            .notify
            .iter()
            .filter(|n| n.when == when)
            .cloned()
            .collect();
        let title = step.title.clone().unwrap_or_else(|| id.to_string());
        for n in notices {
            let to_users = n
                .person
                .as_deref()
                .map(|f| self.names_in(f))
                .unwrap_or_default();
            let role = n.role.clone().unwrap_or_default();
            if role.is_empty() && to_users.is_empty() {
                // The field naming the person is empty: there is nobody to tell, and a
                // message must never stop the work it reports on.
                continue;
            }
            let message = n.message.clone().unwrap_or_else(|| match when {
                NoticeWhen::Enter => {
                    format!("{title}: now open in {} {}", self.def().id, self.s.id)
                }
                NoticeWhen::Complete => {
                    format!("{title}: completed in {} {}", self.def().id, self.s.id)
                }
            });
            self.emit(
                None,
                EventKind::Notified {
                    task,
                    step: id.to_string(),
                    role,
                    to_users,
                    message,
                },
            );
        }
    }
}
