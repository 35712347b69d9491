//! Meaning checks of the rules that say who does a step and how it is decided: the people a
//! step is offered to (`assignees`) and what they must be (`must_be`), how many signers
//! decide each outcome (`signatures.decide`), fields needed for one outcome
//! (`required_for`, `must_be_true_for`), messages on entering or completing a step
//! (`notify`), and the keys that change how the flow waits (`wait`, `wait_for`,
//! `terminate`). Must report every problem it finds and never panic.

use super::super::diagnostic::Diagnostic;
use super::super::model::{FieldType, NoticeWhen, Procedure, SignRule, SignWord, Step, StepKind};
use super::Checker;

impl Checker<'_> {
    pub(super) fn rules(&mut self, id: &str, step: &Step) {
        let outcomes = Procedure::outcomes_of(step);
        self.people(id, step);
        self.sign_rules(id, step, &outcomes);
        self.outcome_fields(id, step, &outcomes);
        self.notices(id, step);
        self.flow_keys(id, step);
    }

    fn people(&mut self, id: &str, step: &Step) {
        if let Some(field) = &step.assignees {
            self.check_field_ref(
                field,
                &["steps", id, "assignees"],
                &format!("`assignees` of step `{id}`"),
                &[FieldType::List],
            );
            let item = self
                .fields
                .get(field)
                .and_then(|f| f.items.as_deref())
                .map(|i| i.ty);
            if self
                .fields
                .get(field)
                .is_some_and(|f| f.ty == FieldType::List)
                && item != Some(FieldType::User)
            {
                self.out.push(
                    Diagnostic::error(
                        "wrong-field-type",
                        format!("`assignees` of step `{id}` needs a list of users, but the items of `{field}` are not users"),
                    )
                    .at(self.span(&["steps", id, "assignees"]))
                    .help(format!("declare `{field}` as `{{ type = \"list\", items = {{ type = \"user\" }} }}`")),
                );
            }
            if step.assignee.is_some() {
                self.out.push(
                    Diagnostic::error(
                        "conflicting-keys",
                        format!("step `{id}` names both one `assignee` and a list of `assignees`"),
                    )
                    .at(self.key_span(&["steps", id, "assignees"]))
                    .help("keep `assignee` for one person, or `assignees` for several"),
                );
            }
        }
        let Some(rule) = &step.must_be else { return };
        if rule.department.is_none()
            && rule.department_in.is_none()
            && rule.role.is_none()
            && rule.level_at_least.is_none()
        {
            self.out.push(
                Diagnostic::error("empty-rule", format!("`must_be` of step `{id}` says nothing"))
                    .at(self.key_span(&["steps", id, "must_be"]))
                    .help("give `department`, `department_in`, `role` or `level_at_least`, or remove `must_be`"),
            );
        }
        if let Some(r) = &rule.role {
            self.check_role_ref(
                r,
                &["steps", id, "must_be", "role"],
                &format!("`must_be` of step `{id}`"),
            );
        }
        if let Some(f) = &rule.department_in {
            self.check_field_ref(
                f,
                &["steps", id, "must_be", "department_in"],
                &format!("`must_be` of step `{id}`"),
                &[FieldType::Department],
            );
        }
    }

    fn sign_rules(&mut self, id: &str, step: &Step, outcomes: &[&str]) {
        let Some(sig) = &step.signatures else { return };
        for (o, rule) in &sig.decide {
            let segs = ["steps", id, "signatures", "decide", o.as_str()];
            if !outcomes.contains(&o.as_str()) {
                self.out.push(
                    Diagnostic::error(
                        "unknown-outcome",
                        format!(
                            "`signatures.decide` of step `{id}` has a rule for `{o}`, but the step's outcomes are {}",
                            list(outcomes)
                        ),
                    )
                    .at(self.doc.key_span(&super::ptr(&segs)))
                    .suggest(o, outcomes.iter().copied()),
                );
            }
            match rule {
                SignRule::Count(0) => self.out.push(
                    Diagnostic::error("bad-signatures", format!("the outcome `{o}` of step `{id}` is decided by 0 signers"))
                        .at(self.span(&segs))
                        .help("give 1 or more, `\"any\"` or `\"all\"`"),
                ),
                SignRule::Count(n) if *n > sig.required && step.assignees.is_none() => self.out.push(
                    Diagnostic::error(
                        "bad-signatures",
                        format!("the outcome `{o}` of step `{id}` needs {n} signers, but the step only waits for `required = {}`", sig.required),
                    )
                    .at(self.span(&segs))
                    .help(format!("lower it to {} or less, or raise `required`", sig.required)),
                ),
                _ => {}
            }
        }
        if outcomes.len() > 1 {
            let missing: Vec<&str> = outcomes
                .iter()
                .copied()
                .filter(|o| !sig.decide.contains_key(*o))
                .collect();
            if !missing.is_empty() {
                let example: Vec<String> = outcomes
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| sig.decide.is_empty() || missing.contains(*o))
                    .map(|(i, o)| {
                        if i == 0 {
                            format!("{o} = {}", sig.required)
                        } else {
                            format!("{o} = \"all\"")
                        }
                    })
                    .collect();
                let fix = if sig.decide.is_empty() {
                    format!(
                        "add `decide = {{ {} }}` to `signatures`",
                        example.join(", ")
                    )
                } else {
                    format!(
                        "add {} to `signatures.decide`",
                        example
                            .iter()
                            .map(|e| format!("`{e}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    )
                };
                self.out.push(
                    Diagnostic::error(
                        "missing-sign-rule",
                        format!(
                            "step `{id}` is signed by several people but does not say how many decide {}",
                            list(&missing)
                        ),
                    )
                    .at(self.key_span(&["steps", id, "signatures"]))
                    .help(format!(
                        "{fix}: a number of signers, \"any\" (one decides) or \"all\" (everyone, nobody against)"
                    )),
                );
            }
            let anys = sig
                .decide
                .values()
                .filter(|r| matches!(r, SignRule::Word(SignWord::Any) | SignRule::Count(1)))
                .count();
            if anys > 1 {
                self.out.push(
                    Diagnostic::warning(
                        "sign-rule-race",
                        format!("on step `{id}` one signer alone decides more than one outcome, so whoever signs first decides"),
                    )
                    .at(self.key_span(&["steps", id, "signatures", "decide"]))
                    .help("if the document asks for a joint decision, require more signers (or \"all\") for all but one outcome"),
                );
            }
        }
    }

    fn outcome_fields(&mut self, id: &str, step: &Step, outcomes: &[&str]) {
        for (name, f) in &step.form {
            for (key, given) in [
                ("required_for", &f.required_for),
                ("must_be_true_for", &f.must_be_true_for),
            ] {
                for (i, o) in given.iter().enumerate() {
                    if !outcomes.contains(&o.as_str()) {
                        self.out.push(
                            Diagnostic::error(
                                "unknown-outcome",
                                format!(
                                    "`{key}` of the field `{name}` names the outcome `{o}`, but the outcomes of step `{id}` are {}",
                                    list(outcomes)
                                ),
                            )
                            .at(self.span(&["steps", id, "form", name, key, &i.to_string()]))
                            .suggest(o, outcomes.iter().copied()),
                        );
                    }
                }
            }
            if !f.must_be_true_for.is_empty() && f.ty != FieldType::Boolean {
                self.out.push(
                    Diagnostic::error(
                        "wrong-field-type",
                        format!("`must_be_true_for` needs a yes/no field, but `{name}` is not `boolean`"),
                    )
                    .at(self.key_span(&["steps", id, "form", name, "must_be_true_for"]))
                    .help("use `required_for` for a value that must be given, or make the field `type = \"boolean\"`"),
                );
            }
            if f.required && !f.required_for.is_empty() {
                self.out.push(
                    Diagnostic::warning(
                        "redundant-key",
                        format!("the field `{name}` is required for every outcome, so `required_for` adds nothing"),
                    )
                    .at(self.key_span(&["steps", id, "form", name, "required_for"]))
                    .help("remove `required = true` to require it only for these outcomes"),
                );
            }
        }
        for (name, f) in &self.proc.data {
            for key in ["required_for", "must_be_true_for"] {
                let given = if key == "required_for" {
                    &f.required_for
                } else {
                    &f.must_be_true_for
                };
                if !given.is_empty() {
                    self.out.push(
                        Diagnostic::error(
                            "misplaced-key",
                            format!("`{key}` on the start data field `{name}`: starting an instance has no outcome"),
                        )
                        .at(self.key_span(&["data", name, key]))
                        .help("put the field in the form of the step whose outcome it depends on"),
                    );
                }
            }
        }
    }

    fn notices(&mut self, id: &str, step: &Step) {
        for (i, n) in step.notify.iter().enumerate() {
            let idx = i.to_string();
            let segs = ["steps", id, "notify", idx.as_str()];
            if n.role.is_none() && n.person.is_none() {
                self.out.push(
                    Diagnostic::error(
                        "bad-notice",
                        format!("message {} of step `{id}` goes to nobody", i + 1),
                    )
                    // Located inside the message's table (at its `when`), so a misspelt
                    // `role` there is reported once, as the unknown key it is.
                    .at(self.span(&[&segs[..], &["when"]].concat()))
                    .help("give `role = \"…\"` or `person = \"…\"` (a user field)"),
                );
            }
            if let Some(r) = &n.role {
                self.check_role_ref(
                    r,
                    &[&segs[..], &["role"]].concat(),
                    &format!("message {} of step `{id}`", i + 1),
                );
            }
            if let Some(f) = &n.person {
                self.check_field_ref(
                    f,
                    &[&segs[..], &["person"]].concat(),
                    &format!("message {} of step `{id}`", i + 1),
                    &[FieldType::User, FieldType::List],
                );
            }
            if n.when == NoticeWhen::Complete && step.kind != StepKind::Task {
                self.out.push(
                    Diagnostic::error(
                        "bad-notice",
                        format!("step `{id}` is not a task, so nobody completes it: `when = \"complete\"` never happens"),
                    )
                    .at(self.span(&[&segs[..], &["when"]].concat()))
                    .help("use `when = \"enter\"`"),
                );
            }
        }
    }

    fn flow_keys(&mut self, id: &str, step: &Step) {
        if step.wait == Some(false) {
            if let Some(c) = &step.collect {
                self.out.push(
                    Diagnostic::error(
                        "conflicting-keys",
                        format!("step `{id}` does not wait for its children (`wait = false`) but collects their results into `{c}`"),
                    )
                    .at(self.key_span(&["steps", id, "collect"]))
                    .help("remove `collect`, or let the step wait"),
                );
            }
        }
        if let Some(n) = step.wait_for {
            let owner = self
                .proc
                .steps
                .values()
                .find(|s| s.kind == StepKind::Parallel && s.join.as_deref() == Some(id));
            if let Some(p) = owner {
                let width = u32::try_from(p.branches.len()).unwrap_or(u32::MAX);
                if n == 0 || n > width {
                    self.out.push(
                        Diagnostic::error(
                            "bad-join",
                            format!("join `{id}` waits for {n} branches, but its parallel step starts {width}"),
                        )
                        .at(self.span(&["steps", id, "wait_for"]))
                        .help(format!("give a number from 1 to {width}")),
                    );
                } else if n == width {
                    self.out.push(
                        Diagnostic::warning(
                            "redundant-key",
                            format!("join `{id}` waits for all {width} branches anyway"),
                        )
                        .at(self.span(&["steps", id, "wait_for"]))
                        .help("remove `wait_for`, or lower it to continue before every branch is done"),
                    );
                }
            }
        }
    }
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
