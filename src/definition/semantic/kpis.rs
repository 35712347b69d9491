//! Meaning checks of `[kpis]`: what each rate counts (a step's completions with a condition,
//! or how instances ended), that its condition reads only what one completion records, and
//! that its objective is a percentage. Must report every problem it finds and never panic.

use std::collections::BTreeMap;

use super::super::diagnostic::{did_you_mean, Diagnostic};
use super::super::expr::{self, Scope};
use super::super::model::StepKind;
use super::{is_step_id, kind_name, names_list, Checker};

/// Names a KPI condition may use besides its step's fields. `data`, `actor` and `now` are
/// left out because a KPI is computed from the completion alone, long after the fact;
/// `form` because its fields are already names of their own.
const KPI_BUILTINS: &[&str] = &["outcome"];

impl Checker<'_> {
    /// `[kpis]`: what each rate counts, its condition and its objective.
    pub(super) fn kpis(&mut self) {
        let p = self.proc;
        for (id, kpi) in &p.kpis {
            let id = id.as_str();
            if !is_step_id(id) {
                self.out.push(
                    Diagnostic::error("bad-id", format!("the KPI id `{id}` is not allowed"))
                        .at(self.key_span(&["kpis", id]))
                        .help("use lower-case letters, digits and `_`, starting with a letter, like `satisfaction_rate`"),
                );
            }
            let ends = !kpi.ends_at.is_empty();
            match (&kpi.step, ends, &kpi.when) {
                (Some(_), true, _) => self.out.push(
                    Diagnostic::error(
                        "bad-kpi",
                        format!("KPI `{id}` gives both `step` and `ends_at`, but a rate counts one thing"),
                    )
                    .at(self.key_span(&["kpis", id, "ends_at"]))
                    .help("keep `step` and `when` to count a step's completions, or `ends_at` to count how instances ended; declare two KPIs for both"),
                ),
                (None, false, Some(_)) => self.out.push(
                    Diagnostic::error(
                        "missing-key",
                        format!("KPI `{id}` has a condition (`when`) but no `step` whose completions it is tested on"),
                    )
                    .at(self.key_span(&["kpis", id]))
                    .help("add `step = \"…\"`, the task whose form the condition reads"),
                ),
                (None, false, None) => self.out.push(
                    Diagnostic::error("bad-kpi", format!("KPI `{id}` does not say what it counts"))
                        .at(self.key_span(&["kpis", id]))
                        .help("give `step = \"…\"` with `when = \"…\"` (the share of that step's completions where the condition holds), or `ends_at = [\"…\"]` (the share of ended instances that ended at one of these end steps)"),
                ),
                (Some(step), false, None) => self.out.push(
                    Diagnostic::error(
                        "missing-key",
                        format!("KPI `{id}` counts completions of `{step}` but has no `when`, so every completion would count and the rate would always be 100%"),
                    )
                    .at(self.key_span(&["kpis", id]))
                    .help(format!("add `when = \"…\"`, a condition on the form of `{step}` (for example a yes/no field of it)")),
                ),
                (None, true, Some(_)) => self.out.push(
                    Diagnostic::error(
                        "misplaced-key",
                        format!("`when` does not apply to KPI `{id}`, which counts how instances ended (`ends_at`)"),
                    )
                    .at(self.key_span(&["kpis", id, "when"]))
                    .help("remove `when`, or count the completions of a step with `step` instead of `ends_at`"),
                ),
                _ => {}
            }
            if let Some(step) = &kpi.step {
                self.kpi_step(id, step, kpi.when.as_deref());
            }
            self.kpi_ends_at(id, &kpi.ends_at);
            self.kpi_objective(id, kpi);
        }
    }

    pub(super) fn kpi_step(&mut self, id: &str, step_id: &str, when: Option<&str>) {
        let what = format!("KPI `{id}`");
        let proc = self.proc;
        let Some(step) = proc.steps.get(step_id) else {
            self.unknown_step(step_id, &["kpis", id, "step"], &what);
            return;
        };
        let tasks_with_forms = || {
            proc.steps
                .iter()
                .filter(|(_, s)| s.kind == StepKind::Task && !s.form.is_empty())
                .map(|(k, _)| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if step.kind != StepKind::Task {
            self.out.push(
                Diagnostic::error(
                    "bad-kpi-step",
                    format!(
                        "KPI `{id}` counts completions of `{step_id}`, but that is {} {} step: only task steps are completed, with a form",
                        if matches!(step.kind, StepKind::Auto | StepKind::End) { "an" } else { "a" },
                        kind_name(step.kind)
                    ),
                )
                .at(self.span(&["kpis", id, "step"]))
                .help(format!("name a task step with a form: {}", tasks_with_forms())),
            );
            return;
        }
        if step.form.is_empty() && step.outcomes.is_empty() {
            self.out.push(
                Diagnostic::error(
                    "bad-kpi-step",
                    format!("KPI `{id}` counts completions of `{step_id}`, but that step has no form and no outcomes for its condition to test"),
                )
                .at(self.span(&["kpis", id, "step"]))
                .help(format!("name a task step with a form ({}), or add the field the KPI needs to the form of `{step_id}`", tasks_with_forms())),
            );
            return;
        }
        let Some(when) = when else { return };
        // What the condition sees is what one completion records: the step's form and the
        // values computed when it completed, with the types the procedure declares.
        let mut fields = BTreeMap::new();
        for (name, f) in &step.form {
            fields.insert(name.clone(), f.clone());
        }
        for name in step.compute.keys() {
            if let Some(f) = self.fields.get(name) {
                fields.entry(name.clone()).or_insert_with(|| f.clone());
            }
        }
        let scope = Scope {
            fields,
            extra: BTreeMap::new(),
            boolean: true,
            untyped: self.untyped.clone(),
        };
        let segs = ["kpis", id, "when"];
        let base = self.expr_base(when, &segs);
        let before = self.out.len();
        for (name, at) in expr::free_names(when) {
            if expr::BUILTINS.contains(&name.as_str())
                && !KPI_BUILTINS.contains(&name.as_str())
                && !scope.fields.contains_key(&name)
            {
                let span = match (base, at) {
                    (Some(b), Some(at)) => Some(b + at.start..b + at.end),
                    _ => self.span(&segs),
                };
                self.out.push(
                    Diagnostic::error(
                        "unknown-name",
                        format!("a KPI condition cannot use `{name}`: it is tested on each completion of `{step_id}` and sees only that step's form and `outcome`"),
                    )
                    .at(span)
                    .help(format!("use the fields of `{step_id}`: {}", names_list(scope.fields.keys()))),
                );
            }
        }
        // The dry run would only restate a refused name as a type error.
        if self.out.len() == before {
            self.cel_in(when, &segs, &scope, Some(step_id));
        }
    }

    pub(super) fn kpi_unknown_name(
        &self,
        name: &str,
        step: &str,
        scope: &Scope,
        span: Option<std::ops::Range<usize>>,
    ) -> Diagnostic {
        let d = Diagnostic::error(
            "unknown-name",
            format!(
                "`{name}` is not in the form of step `{step}`, whose completions this KPI counts"
            ),
        )
        .at(span)
        .label("not in this step's form");
        let visible: Vec<&str> = scope
            .fields
            .keys()
            .map(String::as_str)
            .chain(KPI_BUILTINS.iter().copied())
            .collect();
        let list = names_list(scope.fields.keys());
        match did_you_mean(name, visible) {
            Some(b) => d.help(format!("did you mean `{b}`?")),
            None if self.fields.contains_key(name) => d.help(format!(
                "`{name}` is filled in at another step; the condition is tested on each completion of `{step}` and sees only its fields: {list}"
            )),
            None => d.help(format!("the fields of `{step}` are: {list}")),
        }
    }

    pub(super) fn kpi_ends_at(&mut self, id: &str, ends_at: &[String]) {
        let proc = self.proc;
        let ends: Vec<&str> = proc
            .steps
            .iter()
            .filter(|(_, s)| s.kind == StepKind::End)
            .map(|(k, _)| k.as_str())
            .collect();
        for (i, end) in ends_at.iter().enumerate() {
            let idx = i.to_string();
            let segs = ["kpis", id, "ends_at", idx.as_str()];
            match proc.steps.get(end) {
                None => self.unknown_step(end, &segs, &format!("`ends_at` of KPI `{id}`")),
                Some(s) if s.kind != StepKind::End => {
                    let d = Diagnostic::error(
                        "not-an-end-step",
                        format!(
                            "KPI `{id}` counts instances that ended at `{end}`, but `{end}` is a {} step, where no instance ends",
                            kind_name(s.kind)
                        ),
                    )
                    .at(self.span(&segs))
                    .label("not an end step");
                    let d = match did_you_mean(end, ends.iter().copied()) {
                        Some(b) => d.help(format!("did you mean `{b}`?")),
                        None => d.help(format!(
                            "name end steps (`kind = \"end\"`): {}",
                            names_list(ends.iter())
                        )),
                    };
                    self.out.push(d);
                }
                Some(_) => {}
            }
        }
        self.duplicates(
            ends_at,
            &["kpis", id, "ends_at"],
            &format!("`ends_at` of KPI `{id}`"),
        );
    }

    pub(super) fn kpi_objective(&mut self, id: &str, kpi: &super::super::model::Kpi) {
        for (key, v) in [("at_least", kpi.at_least), ("at_most", kpi.at_most)] {
            if let Some(v) = v {
                if !(0.0..=100.0).contains(&v) {
                    self.out.push(
                        Diagnostic::error(
                            "bad-objective",
                            format!("the objective `{key} = {v}` of KPI `{id}` is not a percentage"),
                        )
                        .at(self.span(&["kpis", id, key]))
                        .help("give a number from 0 to 100: rates are in percent, so `at_least = 95` means 95%"),
                    );
                }
            }
        }
        if kpi.at_least.is_some() && kpi.at_most.is_some() {
            self.out.push(
                Diagnostic::error(
                    "bad-objective",
                    format!("KPI `{id}` gives both `at_least` and `at_most`"),
                )
                .at(self.key_span(&["kpis", id, "at_most"]))
                .help("keep one objective: `at_least` for a rate that should be high (satisfaction), `at_most` for one that should be low (complaints)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{check, Context};
    use crate::definition::model::Procedure;
    use crate::definition::source::SpannedDoc;

    const BASE: &str = r#"
id = "t"
version = 1
title = "T"
start = "visit"
[roles]
clerk = "Clerk"
[steps.visit]
role = "clerk"
outcomes = ["done", "skip"]
form.satisfied = { type = "boolean", required = true }
form.score = { type = "integer" }
compute.high = "score > 8"
next = [{ to = "closed", when = "satisfied" }, { to = "visit" }]
[steps.note]
role = "clerk"
next = [{ to = "closed" }]
[steps.route]
kind = "auto"
next = [{ to = "closed" }]
[steps.closed]
kind = "end"
"#;

    /// The codes and messages of the KPI problems of `BASE` plus `kpis`.
    fn kpi_problems(kpis: &str) -> Vec<(&'static str, String)> {
        let src = format!("{BASE}{kpis}");
        let proc: Procedure = toml::from_str(&src).expect("parses");
        let doc = SpannedDoc::parse(&src).expect("spans");
        check(&proc, &doc, &Context::default())
            .into_iter()
            .filter(|d| d.span.as_ref().is_some_and(|s| s.start >= BASE.len()))
            .map(|d| (d.code, d.message))
            .collect()
    }

    fn codes(kpis: &str) -> Vec<&'static str> {
        kpi_problems(kpis).into_iter().map(|(c, _)| c).collect()
    }

    #[test]
    fn well_formed_kpis_pass() {
        for ok in [
            "[kpis.a]\ntitle = \"A\"\nstep = \"visit\"\nwhen = \"satisfied\"\nat_least = 95\n",
            // Computed values and `outcome` are part of what a completion records.
            "[kpis.a]\ntitle = \"A\"\nstep = \"visit\"\nwhen = \"high && outcome == 'done'\"\nat_most = 0\n",
            "[kpis.a]\ntitle = \"A\"\nends_at = [\"closed\"]\nat_least = 100\n",
        ] {
            assert_eq!(kpi_problems(ok), vec![], "{ok}");
        }
    }

    #[test]
    fn instance_wide_names_are_refused_in_kpi_conditions() {
        let p = kpi_problems(
            "[kpis.a]\ntitle = \"A\"\nstep = \"visit\"\nwhen = \"satisfied && now > timestamp('2026-01-01T00:00:00Z')\"\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "unknown-name");
        assert!(p[0].1.contains("cannot use `now`"), "{p:?}");
        assert_eq!(
            codes("[kpis.a]\ntitle = \"A\"\nstep = \"visit\"\nwhen = \"form.satisfied\"\n"),
            ["unknown-name"]
        );
    }

    #[test]
    fn kpi_conditions_are_type_checked_against_the_step_form() {
        assert_eq!(
            codes("[kpis.a]\ntitle = \"A\"\nstep = \"visit\"\nwhen = \"score > 'high'\"\n"),
            ["cel-type-mismatch"]
        );
        assert_eq!(
            codes("[kpis.a]\ntitle = \"A\"\nstep = \"visit\"\nwhen = \"score\"\n"),
            ["cel-not-boolean"]
        );
        assert_eq!(
            codes("[kpis.a]\ntitle = \"A\"\nstep = \"visit\"\nwhen = \"satisfied &&\"\n"),
            ["cel-syntax"]
        );
    }

    #[test]
    fn what_a_kpi_counts_must_be_clear() {
        assert_eq!(codes("[kpis.a]\ntitle = \"A\"\n"), ["bad-kpi"]);
        assert_eq!(
            codes("[kpis.a]\ntitle = \"A\"\nwhen = \"satisfied\"\n"),
            ["missing-key"]
        );
        assert_eq!(
            codes("[kpis.a]\ntitle = \"A\"\nends_at = [\"closed\"]\nwhen = \"satisfied\"\n"),
            ["misplaced-key"]
        );
        assert_eq!(
            codes("[kpis.a]\ntitle = \"A\"\nstep = \"note\"\nwhen = \"outcome == 'done'\"\n"),
            ["bad-kpi-step"],
            "a task without form or outcomes"
        );
        assert_eq!(
            codes("[kpis.a]\ntitle = \"A\"\nstep = \"route\"\nwhen = \"true\"\n"),
            ["bad-kpi-step"]
        );
        assert_eq!(
            codes("[kpis.a]\ntitle = \"A\"\nends_at = [\"closd\", \"closed\", \"closed\"]\n"),
            ["unknown-step", "duplicate-id"]
        );
        assert_eq!(
            codes("[kpis.a]\ntitle = \"A\"\nends_at = [\"closed\"]\nat_most = -1\n"),
            ["bad-objective"]
        );
        assert_eq!(
            codes("[kpis.Rate]\ntitle = \"A\"\nends_at = [\"closed\"]\n"),
            ["bad-id"]
        );
    }
}
