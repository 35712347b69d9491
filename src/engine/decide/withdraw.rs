//! Withdrawing open work: what a partial join (`wait_for`) or a terminating end step no
//! longer needs — tasks, join counters, children still running — closed in one `withdrawn`
//! event, with the children cancelled in the same commit. It decides nothing else.

use super::*;

impl<'a> Run<'a> {
    /// Closes the open work of the steps `inside` selects — tasks, join counters, children
    /// still running — because `by` (a partial join, a terminating end) no longer needs it.
    /// One event says what was withdrawn; the children are cancelled in the same commit.
    pub(super) fn withdraw(&mut self, by: &str, inside: impl Fn(&str) -> bool) {
        let tasks: Vec<TaskId> = self
            .s
            .tasks
            .values()
            .filter(|t| inside(&t.step))
            .map(|t| t.id)
            .collect();
        let joins: Vec<String> = self
            .s
            .joins
            .keys()
            .filter(|j| inside(j) || j.as_str() == by)
            .cloned()
            .collect();
        let groups: Vec<String> = self
            .s
            .children
            .keys()
            .filter(|g| inside(g))
            .cloned()
            .collect();
        let children: Vec<InstanceId> = groups
            .iter()
            .filter_map(|g| self.s.children.get(g))
            .flat_map(|g| g.pending.keys().copied())
            .collect();
        if tasks.is_empty() && joins.is_empty() && groups.is_empty() {
            return;
        }
        self.emit(
            None,
            EventKind::Withdrawn {
                step: by.to_string(),
                tasks,
                joins,
                groups,
                children: children.clone(),
            },
        );
        for id in children {
            self.effects.push(Effect::CancelChild {
                id,
                reason: format!("withdrawn: instance {} reached `{by}`", self.s.id),
            });
        }
    }

    /// Whether a `Withdrawn` event by `by` was emitted after event `seq`.
    pub(super) fn withdrawn_since(&self, seq: u64, by: &str) -> bool {
        self.events.iter().any(|e| {
            e.seq > seq && matches!(&e.kind, EventKind::Withdrawn { step, .. } if step == by)
        })
    }
}
