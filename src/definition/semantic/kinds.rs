//! Which keys fit which kind of step (`role` on a task, `branches` on a parallel step…), and
//! the keys a kind cannot do without. One sentence per misplaced key, saying where it
//! belongs. Must never panic.

use super::super::diagnostic::Diagnostic;
use super::super::model::{Step, StepKind};
use super::{kind_name, Checker};

impl Checker<'_> {
    /// Which keys belong to which kind of step.
    pub(super) fn kind_fit(&mut self, id: &str, s: &Step) {
        let k = s.kind;
        let present: [(&str, bool); 24] = [
            ("writes", !s.writes.is_empty()),
            ("role", s.role.is_some()),
            ("assignee", s.assignee.is_some()),
            ("assignees", s.assignees.is_some()),
            ("must_be", s.must_be.is_some()),
            ("notify", !s.notify.is_empty()),
            ("wait", s.wait.is_some()),
            ("wait_for", s.wait_for.is_some()),
            ("terminate", s.terminate),
            ("outcomes", !s.outcomes.is_empty()),
            ("form", !s.form.is_empty()),
            ("next", !s.next.is_empty()),
            ("deadline", s.deadline.is_some()),
            ("signatures", s.signatures.is_some()),
            ("separation", s.separation.is_some()),
            ("delegation", s.delegation.is_some()),
            ("compute", !s.compute.is_empty()),
            ("branches", !s.branches.is_empty()),
            ("join", s.join.is_some()),
            ("procedure", s.procedure.is_some()),
            ("for_each", s.for_each.is_some()),
            ("input", !s.input.is_empty()),
            ("collect", s.collect.is_some()),
            ("max_depth", s.max_depth.is_some()),
        ];
        let allowed: &[&str] = match k {
            StepKind::Task => &[
                "role",
                "assignee",
                "assignees",
                "must_be",
                "notify",
                "writes",
                "outcomes",
                "form",
                "next",
                "deadline",
                "signatures",
                "separation",
                "delegation",
                "compute",
            ],
            StepKind::Auto => &["next", "compute", "writes"],
            StepKind::Parallel => &["branches", "join"],
            // `next` on an end step is reported by the graph check, with its own sentence.
            StepKind::Join => &["next", "compute", "wait_for"],
            StepKind::Subprocess => &[
                "next",
                "procedure",
                "for_each",
                "input",
                "collect",
                "max_depth",
                "deadline",
                "compute",
                "wait",
                "notify",
            ],
            StepKind::End => &["next", "terminate", "notify"],
        };
        for (key, here) in present {
            if here && !allowed.contains(&key) {
                self.out.push(
                    Diagnostic::error(
                        "misplaced-key",
                        format!(
                            "`{key}` does not belong on step `{id}`, which is a {} step",
                            kind_name(k)
                        ),
                    )
                    .at(self.key_span(&["steps", id, key]))
                    .help(kind_help(k, key)),
                );
            }
        }
        match k {
            StepKind::Task if s.role.is_none() && s.assignee.is_none() && s.assignees.is_none() => self.out.push(
                Diagnostic::error("missing-role", format!("step `{id}` is a task but nobody is asked to do it"))
                    .at(self.key_span(&["steps", id]))
                    .help("add `role = \"…\"` (a role from `[roles]`), `assignee = \"…\"` (a user field) or `assignees = \"…\"` (a list of users)"),
            ),
            StepKind::Parallel => {
                if s.branches.len() < 2 {
                    self.out.push(
                        Diagnostic::error("missing-key", format!("parallel step `{id}` needs at least two `branches`"))
                            .at(self.key_span(&["steps", id]))
                            .help("list the first step of each branch: `branches = [\"a\", \"b\"]`"),
                    );
                }
                if s.join.is_none() {
                    self.out.push(
                        Diagnostic::error("missing-key", format!("parallel step `{id}` must name its `join` step"))
                            .at(self.key_span(&["steps", id]))
                            .help("add `join = \"…\"`, the step with `kind = \"join\"` where the branches meet"),
                    );
                }
            }
            StepKind::Subprocess if s.procedure.is_none() => self.out.push(
                Diagnostic::error("missing-key", format!("subprocess step `{id}` needs `procedure`"))
                    .at(self.key_span(&["steps", id]))
                    .help("a subprocess step names the child `procedure`, and optionally a list field `for_each` whose items each get a child (without it, one child)"),
            ),
            _ => {}
        }
    }
}

fn kind_help(k: StepKind, key: &str) -> String {
    match (k, key) {
        (StepKind::Parallel, "next") => "a parallel step continues into its `branches`; the `join` step has the `next`".into(),
        (StepKind::Auto, _) => "an auto step is done by the engine at once: it only computes values and routes with `next`".into(),
        (StepKind::Join, _) => "a join step only waits for the branches and continues with `next`".into(),
        (_, "branches" | "join") => "`branches` and `join` belong on a step with `kind = \"parallel\"`".into(),
        (_, "wait_for") => "`wait_for` belongs on a join step: it says how many branches it waits for".into(),
        (_, "terminate") => "`terminate` belongs on an end step".into(),
        (_, "procedure" | "for_each" | "input" | "collect" | "max_depth" | "wait") => {
            format!("`{key}` belongs on a step with `kind = \"subprocess\"`")
        }
        (StepKind::Subprocess, _) => "a subprocess step is run by the engine; put people's work in the child procedure".into(),
        _ => format!("remove `{key}` or change the step's `kind`"),
    }
}
