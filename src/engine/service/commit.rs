//! A command's result as a store `Commit`: the events with their audit summaries, the
//! snapshots, the worklist, timer, status and notification index rows that changed, and the
//! messages the events cause (`outbox::route`). It must not decide anything: it only turns
//! the before and after of each touched instance into writes.

use super::*;

/// The index row of an open task: offered to its roles, or with one person.
fn task_row(inst: &Instance, t: &Task) -> TaskRow {
    let holder = t.holder().map(str::to_string);
    TaskRow {
        task: t.id,
        instance: inst.id,
        procedure: inst.procedure.clone(),
        step: t.step.clone(),
        // A task offered to a list of people is filed under each person's own key, the
        // way notifications are, so their worklists find it.
        roles: if holder.is_some() {
            Vec::new()
        } else if !t.people.is_empty() {
            t.people.iter().map(|u| personal_recipient(u)).collect()
        } else {
            t.roles.clone()
        },
        assignee: holder,
        due_ms: t.due.map(|d| d.timestamp_millis()),
        deadline: match t.deadline {
            crate::engine::instance::DeadlineState::OnTime => String::new(),
            d => d.as_str().to_string(),
        },
        opens_ms: t.opens.map(|o| o.timestamp_millis()),
    }
}

fn timer_rows(inst: &Instance) -> Vec<TimerRow> {
    inst.timers
        .iter()
        .map(|(id, t)| TimerRow {
            due_ms: t.at.timestamp_millis(),
            instance: inst.id,
            timer: *id,
            payload: Vec::new(),
        })
        .collect()
}

pub(in crate::engine) fn build_commit(
    touched: &[(InstanceId, Touched)],
    routes: &crate::outbox::Routes,
) -> Result<Commit, ServiceError> {
    let mut commit = Commit::default();
    for (id, t) in touched {
        crate::outbox::route(
            routes,
            *id,
            &t.after.procedure,
            &t.events,
            &mut commit.outbox,
        );
        let events = t
            .events
            .iter()
            .map(|e| {
                Ok(NewEvent {
                    bytes: serde_json::to_vec(e)?,
                    summary: EventSummary {
                        at_ms: e.at.timestamp_millis(),
                        kind: e.kind.name().to_string(),
                        user: e.by.as_ref().map(|b| b.user.clone()),
                        on_behalf_of: e.by.as_ref().and_then(|b| b.on_behalf_of.clone()),
                    },
                })
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        for e in &t.events {
            let row = |recipient: String, task: Option<&uuid::Uuid>, message: &str| {
                crate::store::NotificationRow {
                    role: recipient,
                    at_ms: e.at.timestamp_millis(),
                    instance: *id,
                    seq: e.seq,
                    task: task.copied(),
                    message: message.to_string(),
                }
            };
            match &e.kind {
                EventKind::Notified {
                    task,
                    role,
                    to_users,
                    message,
                    ..
                } => {
                    if !role.is_empty() {
                        commit
                            .notifications
                            .push(row(role.clone(), task.as_ref(), message));
                    }
                    for u in to_users {
                        commit.notifications.push(row(
                            personal_recipient(u),
                            task.as_ref(),
                            message,
                        ));
                    }
                }
                EventKind::DeadlineReminded {
                    task,
                    to_roles,
                    to_users,
                    message: Some(message),
                    ..
                } => {
                    for r in to_roles {
                        commit
                            .notifications
                            .push(row(r.clone(), Some(task), message));
                    }
                    for u in to_users {
                        commit
                            .notifications
                            .push(row(personal_recipient(u), Some(task), message));
                    }
                }
                _ => {}
            }
        }
        commit.instances.push(InstanceWrite {
            id: *id,
            procedure: t.after.procedure.clone(),
            expected_version: t.before.as_ref().map_or(0, |b| b.seq),
            events,
            snapshot: serde_json::to_vec(&t.after)
                .map_err(|e| ServiceError::Corrupt(e.to_string()))?,
        });
        let before_rows: Vec<TaskRow> = t
            .before
            .as_ref()
            .map(|b| b.tasks.values().map(|task| task_row(b, task)).collect())
            .unwrap_or_default();
        let after_rows: Vec<TaskRow> = t
            .after
            .tasks
            .values()
            .map(|task| task_row(&t.after, task))
            .collect();
        for r in &before_rows {
            if !after_rows.contains(r) {
                commit.closed_tasks.push(r.clone());
            }
        }
        for r in &after_rows {
            if !before_rows.contains(r) {
                commit.open_tasks.push(r.clone());
            }
        }
        // Timers are armed and disarmed in the same commit as the step change that causes
        // them: a step completed before its deadline never fires.
        let before_timers = t.before.as_ref().map(timer_rows).unwrap_or_default();
        let after_timers = timer_rows(&t.after);
        for r in &before_timers {
            if !after_timers.contains(r) {
                commit.disarm_timers.push(r.clone());
            }
        }
        for r in &after_timers {
            if !before_timers.contains(r) {
                commit.arm_timers.push(r.clone());
            }
        }
        let from = t.before.as_ref().map(|b| b.status.as_str().to_string());
        let to = t.after.status.as_str().to_string();
        // A pseudo-instance (the deployments history, procedure `@…`) is no one's work: it
        // stays out of the lists by procedure and status.
        if from.as_deref() != Some(to.as_str()) && !t.after.procedure.starts_with('@') {
            commit.statuses.push(StatusChange {
                instance: *id,
                procedure: t.after.procedure.clone(),
                from,
                to,
            });
        }
    }
    Ok(commit)
}
