//! Meaning checks of a step's deadline: its times parse, the fields and calendars it names
//! exist, and each breach action does exactly one thing with a role or outcome that exists.
//! Must report every problem it finds and never panic.

use super::super::diagnostic::Diagnostic;
use super::super::model::{FieldType, Step, StepKind};
use super::super::source::ptr;
use super::Checker;

impl Checker<'_> {
    pub(super) fn deadline(
        &mut self,
        id: &str,
        step: &Step,
        dl: &super::super::model::Deadline,
        outcomes: &[&str],
    ) {
        let base = ptr(&["steps", id, "deadline"]);
        self.out
            .extend(super::super::duration::check_deadline(dl, &base, self.doc));
        if let Ok(due) = dl.due.parse::<super::super::duration::Due>() {
            for f in due.fields() {
                self.check_field_ref(
                    f,
                    &["steps", id, "deadline", "due"],
                    &format!("the deadline of step `{id}`"),
                    &[FieldType::Date, FieldType::Datetime],
                );
            }
        }
        if let Some(opens) = dl
            .opens
            .as_deref()
            .and_then(|o| o.parse::<super::super::duration::Due>().ok())
        {
            for f in opens.fields() {
                self.check_field_ref(
                    f,
                    &["steps", id, "deadline", "opens"],
                    &format!("the opening time of step `{id}`"),
                    &[FieldType::Date, FieldType::Datetime],
                );
            }
            if step.kind != StepKind::Task {
                self.out.push(
                    Diagnostic::error(
                        "misplaced-key",
                        format!("`opens` limits when a person may complete a task; step `{id}` is not a task"),
                    )
                    .at(self.key_span(&["steps", id, "deadline", "opens"])),
                );
            }
        }
        if let Some(cal) = &dl.calendar {
            self.check_calendar(cal, &["steps", id, "deadline", "calendar"]);
        }
        for (i, a) in dl.on_breach.iter().enumerate() {
            let idx = i.to_string();
            let segs = ["steps", id, "deadline", "on_breach", idx.as_str()];
            let given: Vec<&str> = [
                ("escalate_to", a.escalate_to.is_some()),
                ("reassign_to", a.reassign_to.is_some()),
                ("notify", a.notify.is_some()),
                ("take", a.take.is_some()),
            ]
            .into_iter()
            .filter(|(_, g)| *g)
            .map(|(k, _)| k)
            .collect();
            if given.len() != 1 {
                self.out.push(
                    Diagnostic::error(
                        "bad-breach-action",
                        if given.is_empty() {
                            format!("breach action {} of step `{id}` does nothing", i + 1)
                        } else {
                            format!("breach action {} of step `{id}` does several things at once ({})", i + 1, given.join(", "))
                        },
                    )
                    .at(self.span(&segs))
                    .help("give exactly one of `escalate_to`, `reassign_to`, `notify` or `take` per action; list several actions for several things"),
                );
            }
            for (key, role) in [
                ("escalate_to", &a.escalate_to),
                ("reassign_to", &a.reassign_to),
                ("notify", &a.notify),
            ] {
                if let Some(r) = role {
                    self.check_role_ref(
                        r,
                        &[&segs[..], &[key]].concat(),
                        &format!("breach action {} of step `{id}`", i + 1),
                    );
                }
            }
            if let Some(o) = &a.take {
                if !outcomes.contains(&o.as_str()) {
                    self.out.push(
                        Diagnostic::error(
                            "unknown-outcome",
                            format!(
                                "breach action {} of step `{id}` takes the outcome `{o}`, but the step's outcomes are {}",
                                i + 1,
                                outcomes.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ")
                            ),
                        )
                        .at(self.span(&[&segs[..], &["take"]].concat()))
                        .suggest(o, outcomes.iter().copied()),
                    );
                }
                if step.kind != StepKind::Task {
                    self.out.push(
                        Diagnostic::error(
                            "bad-breach-action",
                            "`take` completes a task automatically; this step is not a task",
                        )
                        .at(self.span(&[&segs[..], &["take"]].concat())),
                    );
                }
            }
        }
    }
}
