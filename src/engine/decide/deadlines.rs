//! Deadlines: when a step is due on its calendar, the next reminder, a timer firing
//! (reminders, breach actions: escalate, reassign, notify, take an outcome).

use super::*;

/// What a step opening now is given by its deadline.
#[derive(Default)]
pub(super) struct Deadlines {
    pub due: Option<DateTime<Utc>>,
    pub opens: Option<DateTime<Utc>>,
    pub timers: Vec<TimerSpec>,
}

impl<'a> Run<'a> {
    /// The due time of a step opening now, the earliest time it may be completed (`opens`)
    /// and the timers it arms: one per reminder (those still ahead), one per breach action
    /// at its threshold — or, without actions, one at the due time so the breach is still
    /// recorded in the history.
    pub(super) fn deadline_of(&self, id: &str, step: &Step) -> Result<Deadlines, EngineError> {
        let Some(dl) = &step.deadline else {
            return Ok(Deadlines::default());
        };
        let cal_id = dl
            .calendar
            .as_deref()
            .or(self.def().calendar.as_deref())
            .unwrap_or("default");
        let cal = self.calendars.get(cal_id).ok_or_else(|| {
            EngineError::Guard(format!(
                "the deadline of `{id}` uses the calendar `{cal_id}`, which is not loaded"
            ))
        })?;
        let bad = |what: String| EngineError::Guard(format!("the deadline of `{id}`: {what}"));
        let due_expr: Due = dl
            .due
            .parse()
            .map_err(|e: crate::definition::duration::ParseError| bad(e.to_string()))?;
        let due = resolve_in(&due_expr, self.now, &self.s.data, cal, self.zone())
            .map_err(|e| bad(e.to_string()))?;
        let opens = match &dl.opens {
            None => None,
            Some(text) => {
                let expr: Due = text
                    .parse()
                    .map_err(|e: crate::definition::duration::ParseError| bad(e.to_string()))?;
                let at = resolve_in(&expr, self.now, &self.s.data, cal, self.zone())
                    .map_err(|e| bad(e.to_string()))?;
                // An opening already past is no restriction; keeping it would only clutter
                // the worklist.
                Some(at).filter(|at| *at > self.now)
            }
        };
        let seq = self.s.seq + 1;
        let mut timers = Vec::new();
        for (i, r) in dl.remind.iter().enumerate() {
            let at = match parse_reminder(r).map_err(|e| bad(e.to_string()))? {
                Reminder::Before(amount) => {
                    cal.subtract(due, &amount).map_err(|e| bad(e.to_string()))?
                }
                Reminder::Every(amount) => {
                    cal.add(self.now, &amount).map_err(|e| bad(e.to_string()))?
                }
            };
            if at > self.now {
                timers.push(TimerSpec {
                    id: derive_id(self.s.id, seq, timer_slot(REMIND_SLOTS, i)?),
                    at,
                    kind: TimerKind::Remind { index: i },
                });
            }
        }
        for (i, a) in dl.on_breach.iter().enumerate() {
            let at = match &a.after {
                Some(after) => {
                    let amount = parse_amount(after).map_err(|e| bad(e.to_string()))?;
                    cal.add(due, &amount).map_err(|e| bad(e.to_string()))?
                }
                None => due,
            };
            timers.push(TimerSpec {
                id: derive_id(self.s.id, seq, timer_slot(BREACH_SLOTS, i)?),
                at,
                kind: TimerKind::Breach { index: i },
            });
        }
        if dl.on_breach.is_empty() {
            timers.push(TimerSpec {
                id: derive_id(self.s.id, seq, timer_slot(BREACH_SLOTS, 0)?),
                at: due,
                kind: TimerKind::Breach { index: 0 },
            });
        }
        Ok(Deadlines {
            due: Some(due),
            opens,
            timers,
        })
    }

    /// The calendar a step's deadline counts on, if it is loaded.
    pub(super) fn deadline_calendar(&self, step: &str) -> Option<&'a Calendar> {
        let dl = self.def().steps.get(step)?.deadline.as_ref()?;
        let id = dl
            .calendar
            .as_deref()
            .or(self.def().calendar.as_deref())
            .unwrap_or("default");
        self.calendars.get(id).map(|c| &**c)
    }

    /// An instant as the people of the step's calendar read it (`2026-11-03 17:00 +08:00`).
    pub(super) fn local_time(&self, step: &str, t: DateTime<Utc>) -> String {
        match self.deadline_calendar(step) {
            Some(cal) => t
                .with_timezone(&cal.timezone())
                .format("%Y-%m-%d %H:%M %:z")
                .to_string(),
            None => t.format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }

    /// The next firing of a repeating reminder (`every 3 days`) that just fired as `t`,
    /// counted from when it was due so the rhythm does not drift; `None` for a one-off
    /// reminder. Never an error: a timer must always be able to fire.
    pub(super) fn next_reminder(
        &self,
        step_def: &Step,
        index: usize,
        t: &crate::engine::instance::Timer,
    ) -> Option<TimerSpec> {
        let text = step_def.deadline.as_ref()?.remind.get(index)?;
        let Ok(Reminder::Every(amount)) = parse_reminder(text) else {
            return None;
        };
        let cal = self.deadline_calendar(&self.s.tasks.get(&t.task)?.step)?;
        let mut at = cal.add(t.at, &amount).ok()?;
        // After a long stop (or a long clock move) several periods may have passed: remind
        // once now, and next at the first period still ahead.
        for _ in 0..10_000 {
            if at > self.now {
                break;
            }
            at = cal.add(at, &amount).ok()?;
        }
        let slot = timer_slot(REMIND_SLOTS, index).ok()?;
        (at > self.now).then(|| TimerSpec {
            id: derive_id(self.s.id, self.s.seq + 1, slot),
            at,
            kind: TimerKind::Remind { index },
        })
    }

    /// A timer fell due. Never refused for what the procedure says (only for an unknown
    /// timer): a timer that could not fire would fire again forever.
    pub(super) fn fire(&mut self, timer: uuid::Uuid) -> Result<(), EngineError> {
        let t = self
            .s
            .timers
            .get(&timer)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("timer {timer}")))?;
        let task = self.task(t.task)?;
        let step_def = self
            .def()
            .steps
            .get(&task.step)
            .cloned()
            .unwrap_or_default();
        let due = task.due.unwrap_or(t.at);
        match t.kind {
            TimerKind::Remind { index } => {
                // A reminder reaches whoever has the task now: the one person holding it,
                // or everyone it is offered to.
                let (to_roles, to_users) = match task.holder() {
                    Some(person) => (Vec::new(), vec![person.to_string()]),
                    None => (task.roles.clone(), Vec::new()),
                };
                let next = self.next_reminder(&step_def, index, &t);
                let message = if self.now >= due {
                    format!(
                        "Reminder: `{}` of {} {} was due {} and is not done yet",
                        task.step,
                        self.s.procedure,
                        self.s.id,
                        self.local_time(&task.step, due)
                    )
                } else {
                    format!(
                        "Reminder: `{}` of {} {} is due {}",
                        task.step,
                        self.s.procedure,
                        self.s.id,
                        self.local_time(&task.step, due)
                    )
                };
                self.emit(
                    None,
                    EventKind::DeadlineReminded {
                        task: task.id,
                        step: task.step.clone(),
                        due,
                        timer,
                        to_roles,
                        to_users,
                        message: Some(message),
                        next,
                    },
                );
            }
            TimerKind::Breach { index } => {
                let action = step_def
                    .deadline
                    .as_ref()
                    .and_then(|d| d.on_breach.get(index))
                    .cloned()
                    .unwrap_or_default();
                // A person who took the task is working on it: the clock does not complete
                // it under them unless the procedure says so (`even_if_claimed`).
                let held = task.claimed_by.as_ref().or(task.delegated_to.as_ref());
                let spared = match (&action.take, held) {
                    (Some(_), Some(holder)) if !action.even_if_claimed => Some(holder.clone()),
                    _ => None,
                };
                let mut what = describe_action(&action);
                if let Some(holder) = &spared {
                    what = format!("{what}: not taken, {holder} holds the task");
                }
                self.emit(
                    None,
                    EventKind::DeadlineBreached {
                        task: task.id,
                        step: task.step.clone(),
                        due,
                        late_ms: (self.now - due).num_milliseconds(),
                        action: what,
                        timer,
                    },
                );
                if spared.is_none() {
                    self.breach_action(&task, &action, due)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn breach_action(
        &mut self,
        task: &Task,
        action: &BreachAction,
        due: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        if let Some(role) = &action.escalate_to {
            self.emit(
                None,
                EventKind::TaskEscalated {
                    task: task.id,
                    role: role.clone(),
                },
            );
        } else if let Some(role) = &action.reassign_to {
            self.emit(
                None,
                EventKind::TaskReassigned {
                    task: task.id,
                    role: role.clone(),
                },
            );
        } else if let Some(role) = &action.notify {
            let message = format!(
                "`{}` of {} {} was due {} and is not done",
                task.step,
                self.s.procedure,
                self.s.id,
                due.format("%Y-%m-%d %H:%M UTC")
            );
            self.emit(
                None,
                EventKind::Notified {
                    task: Some(task.id),
                    step: task.step.clone(),
                    role: role.clone(),
                    to_users: Vec::new(),
                    message,
                },
            );
        } else if let Some(outcome) = &action.take {
            // The clock completes the step. If the procedure cannot go on from there (a
            // condition fails on this data), undo the attempt and tell the step's role, so
            // the timer is spent and a person decides.
            let saved = (
                self.s.clone(),
                self.events.len(),
                self.effects.len(),
                self.budget,
            );
            if let Err(e) = self.take(task, outcome) {
                self.s = saved.0;
                self.events.truncate(saved.1);
                self.effects.truncate(saved.2);
                self.budget = saved.3;
                let role = task
                    .roles
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "admin".into());
                self.emit(
                    None,
                    EventKind::Notified {
                        task: Some(task.id),
                        step: task.step.clone(),
                        role,
                        to_users: Vec::new(),
                        message: format!(
                            "`{}` could not be completed automatically with `{outcome}`: {e}",
                            task.step
                        ),
                    },
                );
            }
        }
        Ok(())
    }

    pub(super) fn take(&mut self, task: &Task, outcome: &str) -> Result<(), EngineError> {
        let (step, compiled) = self
            .proc
            .step(&task.step)
            .ok_or_else(|| EngineError::NotFound(format!("step {}", task.step)))?;
        let data = self.s.data.clone();
        let computed = self.compute(&compiled.compute, &data, None, Some(outcome))?;
        self.emit(
            None,
            EventKind::TaskCompleted {
                task: task.id,
                step: task.step.clone(),
                outcome: outcome.to_string(),
                form: Map::new(),
                computed,
                comment: Some("completed by the clock: the deadline passed".into()),
                meaning: step.meaning.clone(),
                on_time: Some(false),
                decided: None,
            },
        );
        self.write_registers(&task.step)?;
        let from = task.step.clone();
        self.route(&from, outcome, None)
    }
}

/// The due time and timers step `step` of `proc` gives a task of `inst` that opened at
/// `opened_at`, as if it had opened on that version (a migration that recomputes
/// deadlines). Timer ids are derived from event `seq` and `slot_base`, so several tasks
/// recomputed by one event get distinct ids.
pub fn recompute(
    proc: &CompiledProcedure,
    inst: &Instance,
    step: &str,
    opened_at: DateTime<Utc>,
    env: Env<'_>,
    seq: u64,
    slot_base: u32,
) -> Result<(Option<DateTime<Utc>>, Vec<TimerSpec>), EngineError> {
    let (def, _) = proc
        .step(step)
        .ok_or_else(|| EngineError::NotFound(format!("step {step}")))?;
    let run = Run::new(
        proc,
        inst.clone(),
        None,
        Env {
            now: opened_at,
            ..env
        },
    );
    let d = run.deadline_of(step, def)?;
    let mut timers = Vec::new();
    for (n, mut t) in (slot_base..).zip(d.timers) {
        // A reminder whose time passed while the task was open on the old version is no
        // longer worth sending; a breach that passed is recorded when the timer fires.
        if matches!(t.kind, TimerKind::Remind { .. }) && t.at <= env.now {
            continue;
        }
        t.id = derive_id(inst.id, seq, n);
        timers.push(t);
    }
    Ok((d.due, timers))
}
