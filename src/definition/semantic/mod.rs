//! The third validation layer, part one: meaning. References between parts of a procedure
//! (steps, roles, outcomes, fields, calendars, child procedures), which keys fit which kind
//! of step (`kinds.rs`), fields and forms (`fields.rs`), deadlines (`deadlines.rs`), KPIs
//! (`kpis.rs`), and every CEL expression. Graph shape and soundness are in `graph.rs` and
//! `soundness.rs`; cycles between procedures in `cycles.rs`.
//!
//! Runs only on what passed the schema (the whole file, or what `partial.rs` left of it), so
//! the types are right; it must report every problem it finds (never stop at the first) and
//! must never panic on any procedure.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use indexmap::IndexMap;

mod deadlines;
mod fields;
mod kinds;
mod kpis;
mod registers;
mod rules;

use super::diagnostic::{did_you_mean, Diagnostic};
use super::expr::{self, Scope};
use super::model::{Field, FieldType, Procedure, Step, StepKind, DEFAULT_OUTCOME, RESERVED_NAMES};
use super::source::{ptr, SpannedDoc};

/// What else is known when checking one procedure: the other procedures and the calendars.
#[derive(Default)]
pub struct Context<'a> {
    pub procedures: HashMap<&'a str, &'a Procedure>,
    pub calendars: HashSet<String>,
    /// The file's name without `.toml`, which must equal the procedure id.
    pub file_stem: Option<String>,
    /// The registers procedures may read and write, by id.
    pub registers: HashMap<String, std::sync::Arc<super::register::RegisterFile>>,
}

/// Every field a procedure declares — start data, forms, computed values, collected child
/// results — by name, with the first declaration's type.
pub fn declared_fields(proc: &Procedure, ctx: &Context<'_>) -> BTreeMap<String, Field> {
    declare(proc, ctx).0
}

/// The computed values whose type cannot be told from their expression on sample data (it
/// fails there, or gives a duration or nothing). `declared_fields` calls them numbers; checks
/// that judge types must not rely on that.
pub fn untyped_fields(proc: &Procedure, ctx: &Context<'_>) -> BTreeSet<String> {
    declare(proc, ctx).1
}

fn declare(proc: &Procedure, ctx: &Context<'_>) -> (BTreeMap<String, Field>, BTreeSet<String>) {
    let mut untyped = BTreeSet::new();
    let mut fields: BTreeMap<String, Field> = BTreeMap::new();
    for (name, f) in &proc.data {
        fields.entry(name.clone()).or_insert_with(|| f.clone());
    }
    for step in proc.steps.values() {
        for (name, f) in &step.form {
            fields.entry(name.clone()).or_insert_with(|| f.clone());
        }
        if let Some(collect) = &step.collect {
            let child = step
                .procedure
                .as_deref()
                .and_then(|p| ctx.procedures.get(p));
            // Without the child procedure the items' fields are unknown: expressions over
            // them are not judged (the missing procedure is reported on its own).
            if child.is_none() {
                untyped.insert(collect.clone());
            }
            fields
                .entry(collect.clone())
                .or_insert_with(|| collected_field(child.copied(), ctx));
        }
    }
    // Computed values: their type is whatever the expression gives on sample data. Two
    // passes so one computed value may use another.
    for pass in 0..2 {
        for step in proc.steps.values() {
            for (name, src) in &step.compute {
                if fields.contains_key(name) && proc_declares_field(proc, name) {
                    continue;
                }
                let inferred = infer_type(src, &fields);
                if pass == 1 {
                    if inferred.is_some() {
                        untyped.remove(name);
                    } else {
                        untyped.insert(name.clone());
                    }
                }
                fields.insert(name.clone(), plain(inferred.unwrap_or(FieldType::Number)));
            }
        }
    }
    (fields, untyped)
}

fn proc_declares_field(proc: &Procedure, name: &str) -> bool {
    proc.data.contains_key(name) || proc.steps.values().any(|s| s.form.contains_key(name))
}

/// The list a subprocess step collects: one table per child, with the child's fields and
/// its final `outcome`.
fn collected_field(child: Option<&Procedure>, ctx: &Context<'_>) -> Field {
    let mut item = plain(FieldType::Object);
    if let Some(child) = child {
        let child_ctx = Context {
            procedures: HashMap::new(),
            calendars: ctx.calendars.clone(),
            file_stem: None,
            registers: ctx.registers.clone(),
        };
        for (k, f) in declared_fields(child, &child_ctx) {
            item.fields.insert(k, f);
        }
    }
    item.fields
        .insert("outcome".into(), plain(FieldType::String));
    let mut list = plain(FieldType::List);
    list.items = Some(Box::new(item));
    list
}

fn infer_type(src: &str, fields: &BTreeMap<String, Field>) -> Option<FieldType> {
    let program = cel::Program::compile(src).ok()?;
    let mut ctx = crate::definition::expr::context();
    for (name, f) in fields {
        ctx.add_variable_from_value(name.clone(), expr::sample(f, true));
    }
    match program.execute(&ctx).ok()? {
        cel::Value::Int(_) | cel::Value::UInt(_) => Some(FieldType::Integer),
        cel::Value::Float(_) => Some(FieldType::Number),
        cel::Value::Bool(_) => Some(FieldType::Boolean),
        cel::Value::String(_) => Some(FieldType::String),
        cel::Value::Timestamp(_) => Some(FieldType::Datetime),
        cel::Value::List(_) => Some(FieldType::List),
        cel::Value::Map(_) => Some(FieldType::Object),
        _ => None,
    }
}

/// A field of type `ty` with nothing else set.
pub fn plain(ty: FieldType) -> Field {
    Field {
        ty,
        title: None,
        description: None,
        required: false,
        required_for: vec![],
        must_be_true_for: vec![],
        choices: vec![],
        min: None,
        max: None,
        min_length: None,
        max_length: None,
        min_items: None,
        max_items: None,
        items: None,
        fields: IndexMap::new(),
    }
}

/// Runs every meaning check on one procedure.
pub fn check(proc: &Procedure, doc: &SpannedDoc, ctx: &Context<'_>) -> Vec<Diagnostic> {
    let (fields, untyped) = declare(proc, ctx);
    let mut c = Checker {
        proc,
        doc,
        ctx,
        out: Vec::new(),
        fields,
        untyped,
    };
    c.procedure_level();
    c.starts_from();
    c.fields();
    for (id, step) in &proc.steps {
        c.step(id, step);
    }
    c.kpis();
    c.out
}

struct Checker<'a> {
    proc: &'a Procedure,
    doc: &'a SpannedDoc,
    ctx: &'a Context<'a>,
    out: Vec<Diagnostic>,
    fields: BTreeMap<String, Field>,
    untyped: BTreeSet<String>,
}

impl Checker<'_> {
    fn span(&self, segs: &[&str]) -> Option<std::ops::Range<usize>> {
        self.doc.value_span(&ptr(segs))
    }

    fn key_span(&self, segs: &[&str]) -> Option<std::ops::Range<usize>> {
        self.doc.key_span(&ptr(segs))
    }

    fn step_ids(&self) -> impl Iterator<Item = &str> {
        self.proc.steps.keys().map(String::as_str)
    }

    fn role_ids(&self) -> impl Iterator<Item = &str> {
        self.proc.roles.keys().map(String::as_str)
    }

    fn unknown_step(&mut self, name: &str, segs: &[&str], what: &str) {
        let d = Diagnostic::error(
            "unknown-step",
            format!("{what} names the step `{name}`, but this procedure has no step `{name}`"),
        )
        .at(self.span(segs))
        .label("no such step");
        let d = match did_you_mean(name, self.step_ids()) {
            Some(b) => d.help(format!("did you mean `{b}`?")),
            None => d.help(format!(
                "the steps are: {}",
                self.step_ids()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        self.out.push(d);
    }

    fn check_step_ref(&mut self, name: &str, segs: &[&str], what: &str) {
        if !self.proc.steps.contains_key(name) {
            self.unknown_step(name, segs, what);
        }
    }

    fn check_role_ref(&mut self, role: &str, segs: &[&str], what: &str) {
        if self.proc.roles.contains_key(role) {
            return;
        }
        let d = Diagnostic::error(
            "unknown-role",
            format!("{what} names the role `{role}`, which is not declared in `[roles]`"),
        )
        .at(self.span(segs))
        .label("not declared");
        let d = match did_you_mean(role, self.role_ids()) {
            Some(b) => d.help(format!(
                "did you mean `{b}`? Otherwise add `{role} = \"…description…\"` under `[roles]`"
            )),
            None => d.help(format!("add `{role} = \"…description…\"` under `[roles]`")),
        };
        self.out.push(d);
    }

    fn check_field_ref(&mut self, name: &str, segs: &[&str], what: &str, types: &[FieldType]) {
        match self.fields.get(name) {
            None => {
                let d = Diagnostic::error(
                    "unknown-field",
                    format!("{what} names the field `{name}`, but no form or `[data]` of this procedure declares it"),
                )
                .at(self.span(segs))
                .label("no such field");
                let names: Vec<&str> = self.fields.keys().map(String::as_str).collect();
                let d = match did_you_mean(name, names) {
                    Some(b) => d.help(format!("did you mean `{b}`?")),
                    None => d.help("declare it in `[data]` or in the form of an earlier step"),
                };
                self.out.push(d);
            }
            Some(f) if !types.is_empty() && !types.contains(&f.ty) => {
                let want = types
                    .iter()
                    .map(|t| format!("`{}`", type_name(*t)))
                    .collect::<Vec<_>>()
                    .join(" or ");
                self.out.push(
                    Diagnostic::error(
                        "wrong-field-type",
                        format!(
                            "{what} needs a field of type {want}, but `{name}` is of type `{}`",
                            type_name(f.ty)
                        ),
                    )
                    .at(self.span(segs)),
                );
            }
            Some(_) => {}
        }
    }

    fn procedure_level(&mut self) {
        let p = self.proc;
        if let Some(stem) = &self.ctx.file_stem {
            if &p.id != stem {
                self.out.push(
                    Diagnostic::error(
                        "id-mismatch",
                        format!("the procedure id is `{}` but the file is named `{stem}.toml`", p.id),
                    )
                    .at(self.span(&["id"]))
                    .help(format!(
                        "name the file `{}.toml` or set `id = \"{stem}\"`: other procedures and the API find a procedure by its file name",
                        p.id
                    )),
                );
            }
        }
        if !p.steps.contains_key(&p.start) {
            self.unknown_step(&p.start.clone(), &["start"], "`start`");
        } else if let Some(s) = p.steps.get(&p.start) {
            if matches!(s.kind, StepKind::Join | StepKind::End) {
                self.out.push(
                    Diagnostic::error(
                        "bad-start",
                        format!(
                            "the procedure starts at `{}`, which is a {} step",
                            p.start,
                            kind_name(s.kind)
                        ),
                    )
                    .at(self.span(&["start"]))
                    .help("start at the first step where work is done"),
                );
            }
        }
        for (i, r) in p.start_roles.iter().enumerate() {
            self.check_role_ref(r, &["start_roles", &i.to_string()], "`start_roles`");
        }
        for (i, r) in p.cancel_roles.iter().enumerate() {
            self.check_role_ref(r, &["cancel_roles", &i.to_string()], "`cancel_roles`");
        }
        for (i, r) in p.operator_roles.iter().enumerate() {
            self.check_role_ref(r, &["operator_roles", &i.to_string()], "`operator_roles`");
        }
        self.duplicates(&p.start_roles, &["start_roles"], "`start_roles`");
        self.duplicates(&p.cancel_roles, &["cancel_roles"], "`cancel_roles`");
        self.duplicates(&p.operator_roles, &["operator_roles"], "`operator_roles`");
        if let (Some(from), Some(until)) = (p.valid_from, p.valid_until) {
            if until < from {
                self.out.push(
                    Diagnostic::error(
                        "validity-reversed",
                        format!(
                            "`valid_until` ({until}) is before `valid_from` ({from}), so this version could never be started"
                        ),
                    )
                    .at(self.span(&["valid_until"]))
                    .help("give the last day the version may be started, on or after `valid_from`"),
                );
            }
        }
        if let Some(cal) = &p.calendar {
            self.check_calendar(cal, &["calendar"]);
        }
        if !p.steps.values().any(|s| s.kind == StepKind::End) {
            self.out.push(
                Diagnostic::error("no-end-step", "the procedure has no end step, so no instance could ever finish")
                    .at(self.key_span(&["steps"]))
                    .help("add a step with `kind = \"end\"` (for example `[steps.closed]`) and lead to it"),
            );
        }
        for id in p.steps.keys() {
            if !is_step_id(id) {
                self.out.push(
                    Diagnostic::error("bad-id", format!("the step id `{id}` is not allowed"))
                        .at(self.key_span(&["steps", id]))
                        .help("use lower-case letters, digits and `_`, starting with a letter, like `follow_up`"),
                );
            }
        }
        if let Some(s) = &p.schedule {
            self.out
                .extend(super::duration::check_schedule(s, "/schedule", self.doc));
            let data_fields: Vec<String> = s.data.keys().cloned().collect();
            for k in data_fields {
                if !p.data.contains_key(&k) {
                    self.out.push(
                        Diagnostic::error(
                            "unknown-field",
                            format!("the schedule's start data sets `{k}`, which `[data]` does not declare"),
                        )
                        .at(self.doc.key_span(&ptr(&["schedule", "data", &k])))
                        .suggest(&k, p.data.keys().map(String::as_str)),
                    );
                }
            }
            let missing: Vec<&String> = p
                .data
                .iter()
                .filter(|(k, f)| f.required && !s.data.contains_key(*k))
                .map(|(k, _)| k)
                .collect();
            for k in missing {
                self.out.push(
                    Diagnostic::error(
                        "missing-input",
                        format!(
                            "scheduled instances would start without the required data field `{k}`"
                        ),
                    )
                    .at(self.key_span(&["schedule"]))
                    .help(format!(
                        "set `{k}` in `schedule.data`, or make it optional in `[data]`"
                    )),
                );
            }
        }
    }

    fn check_calendar(&mut self, cal: &str, segs: &[&str]) {
        if !self.ctx.calendars.contains(cal) {
            let known: Vec<&str> = self.ctx.calendars.iter().map(String::as_str).collect();
            let d = Diagnostic::error(
                "unknown-calendar",
                format!("there is no calendar `{cal}` (a file `calendars/{cal}.toml`)"),
            )
            .at(self.span(segs));
            let d = match did_you_mean(cal, known.iter().copied()) {
                Some(b) => d.help(format!("did you mean `{b}`?")),
                None if known.is_empty() => {
                    d.help("no calendars were found; pass `--calendars DIR`")
                }
                None => d.help(format!("the calendars are: {}", known.join(", "))),
            };
            self.out.push(d);
        }
    }

    fn duplicates(&mut self, items: &[String], segs: &[&str], what: &str) {
        let mut seen = HashSet::new();
        for (i, it) in items.iter().enumerate() {
            if !seen.insert(it) {
                let mut p: Vec<&str> = segs.to_vec();
                let idx = i.to_string();
                p.push(&idx);
                self.out.push(
                    Diagnostic::error("duplicate-id", format!("{what} lists `{it}` twice"))
                        .at(self.span(&p))
                        .help("remove the second one"),
                );
            }
        }
    }

    fn step(&mut self, id: &str, step: &Step) {
        self.kind_fit(id, step);
        self.rules(id, step);
        self.writes(id, step);
        let outcomes: Vec<&str> = Procedure::outcomes_of(step);
        self.duplicates(
            &step.outcomes,
            &["steps", id, "outcomes"],
            &format!("step `{id}`'s `outcomes`"),
        );

        if let Some(role) = &step.role {
            self.check_role_ref(role, &["steps", id, "role"], &format!("step `{id}`"));
        }
        if let Some(a) = &step.assignee {
            self.check_field_ref(
                a,
                &["steps", id, "assignee"],
                &format!("`assignee` of step `{id}`"),
                &[FieldType::User],
            );
        }

        // Transitions.
        let mut unguarded_for: HashSet<&str> = HashSet::new();
        for (i, t) in step.next.iter().enumerate() {
            let idx = i.to_string();
            let base = ["steps", id, "next", idx.as_str()];
            self.check_step_ref(
                &t.to,
                &[&base[..], &["to"]].concat(),
                &format!("transition {} of step `{id}`", i + 1),
            );
            if let Some(on) = &t.on {
                if !outcomes.contains(&on.as_str()) {
                    let d = Diagnostic::error(
                        "unknown-outcome",
                        format!(
                            "transition {} of step `{id}` is for the outcome `{on}`, but the step's outcomes are {}",
                            i + 1,
                            outcomes.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ")
                        ),
                    )
                    .at(self.span(&[&base[..], &["on"]].concat()));
                    let d = match did_you_mean(on, outcomes.iter().copied()) {
                        Some(b) => d.help(format!("did you mean `{b}`?")),
                        None => d.help(format!(
                            "add `{on}` to the step's `outcomes`, or correct the name"
                        )),
                    };
                    self.out.push(d);
                }
            }
            let applies: Vec<&str> = match &t.on {
                Some(on) => vec![on.as_str()],
                None => outcomes.clone(),
            };
            if applies.iter().all(|o| unguarded_for.contains(o)) && !applies.is_empty() {
                self.out.push(
                    Diagnostic::warning(
                        "unreachable-transition",
                        format!("transition {} of step `{id}` can never be taken: an earlier transition without `when` already catches the same outcome", i + 1),
                    )
                    .at(self.span(&base))
                    .help("transitions are tried in order; move the unconditional one last"),
                );
            }
            if let Some(when) = &t.when {
                self.cel(
                    when,
                    &[&base[..], &["when"]].concat(),
                    true,
                    &BTreeMap::new(),
                );
            } else {
                unguarded_for.extend(applies.iter().copied());
            }
        }
        if matches!(
            step.kind,
            StepKind::Task | StepKind::Auto | StepKind::Subprocess | StepKind::Join
        ) {
            if step.next.is_empty() {
                self.out.push(
                    Diagnostic::error("no-transitions", format!("step `{id}` has no `next`: where does the procedure go after it?"))
                        .at(self.key_span(&["steps", id]))
                        .help("add `next = [{ to = \"…\" }]`, or make it an end step with `kind = \"end\"`"),
                );
            } else {
                for o in &outcomes {
                    let handled = step
                        .next
                        .iter()
                        .any(|t| t.on.as_deref().is_none_or(|on| on == *o));
                    if !handled {
                        self.out.push(
                            Diagnostic::error(
                                "unhandled-outcome",
                                format!("step `{id}` can end with the outcome `{o}`, but no transition says where to go then"),
                            )
                            .at(self.outcome_span(id, o))
                            .help(format!("add `{{ to = \"…\", on = \"{o}\" }}` to `next`")),
                        );
                    } else if !unguarded_for.contains(o) {
                        self.out.push(
                            Diagnostic::warning(
                                "no-default-transition",
                                if outcomes.len() == 1 && *o == DEFAULT_OUTCOME {
                                    format!("every transition of step `{id}` has a condition; if none holds, the instance is stuck")
                                } else {
                                    format!("for the outcome `{o}` of step `{id}` every transition has a condition; if none holds, the instance is stuck")
                                },
                            )
                            .at(self.key_span(&["steps", id, "next"]))
                            .help("add a last transition without `when` as the default"),
                        );
                    }
                }
            }
        }

        // Parallel.
        for (i, b) in step.branches.iter().enumerate() {
            self.check_step_ref(
                b,
                &["steps", id, "branches", &i.to_string()],
                &format!("parallel step `{id}`"),
            );
        }
        self.duplicates(
            &step.branches,
            &["steps", id, "branches"],
            &format!("step `{id}`'s `branches`"),
        );
        if let Some(j) = &step.join {
            self.check_step_ref(j, &["steps", id, "join"], &format!("`join` of step `{id}`"));
        }

        // Subprocess.
        if let Some(child) = &step.procedure {
            self.subprocess(id, step, child);
        }
        if let Some(list) = &step.for_each {
            self.check_field_ref(
                list,
                &["steps", id, "for_each"],
                &format!("`for_each` of step `{id}`"),
                &[FieldType::List],
            );
        }
        if step.kind != StepKind::Subprocess {
            for (k, src) in &step.input {
                self.cel(src, &["steps", id, "input", k], false, &BTreeMap::new());
            }
        }

        // Signatures.
        if let Some(sig) = &step.signatures {
            for (i, r) in sig.roles.iter().enumerate() {
                self.check_role_ref(
                    r,
                    &["steps", id, "signatures", "roles", &i.to_string()],
                    &format!("`signatures` of step `{id}`"),
                );
            }
            self.duplicates(
                &sig.roles,
                &["steps", id, "signatures", "roles"],
                "`signatures.roles`",
            );
            if sig.one_per_role && (sig.required as usize) < sig.roles.len() {
                self.out.push(
                    Diagnostic::error(
                        "bad-signatures",
                        format!(
                            "step `{id}` needs one signature per role from {} roles but only {} signatures in all",
                            sig.roles.len(),
                            sig.required
                        ),
                    )
                    .at(self.span(&["steps", id, "signatures", "required"]))
                    .help(format!("set `required = {}` or more", sig.roles.len())),
                );
            }
            if sig.one_per_role && sig.roles.is_empty() {
                self.out.push(
                    Diagnostic::error(
                        "bad-signatures",
                        "`one_per_role` needs the list of `roles` to sign",
                    )
                    .at(self.key_span(&["steps", id, "signatures"])),
                );
            }
            if sig.roles.is_empty() && step.role.is_none() && step.assignees.is_none() {
                self.out.push(
                    Diagnostic::error(
                        "bad-signatures",
                        format!("step `{id}` asks for signatures but names no role to sign"),
                    )
                    .at(self.key_span(&["steps", id, "signatures"]))
                    .help("give `signatures.roles`, the step's `role`, or `assignees` (the people who sign)"),
                );
            }
        }

        // Separation of duties.
        if let Some(sep) = &step.separation {
            for (i, other) in sep.not_same_person_as.iter().enumerate() {
                let segs = [
                    "steps",
                    id,
                    "separation",
                    "not_same_person_as",
                    &i.to_string(),
                ];
                self.check_step_ref(other, &segs, &format!("the separation rule of step `{id}`"));
                if other == id {
                    self.out.push(
                        Diagnostic::error(
                            "bad-separation",
                            format!("step `{id}` cannot be separated from itself"),
                        )
                        .at(self.span(&segs)),
                    );
                }
            }
            if let Some(dep) = &sep.not_from_department {
                self.check_field_ref(
                    dep,
                    &["steps", id, "separation", "not_from_department"],
                    &format!("the separation rule of step `{id}`"),
                    &[FieldType::Department],
                );
            }
        }

        // Delegation.
        if let Some(del) = &step.delegation {
            for (i, r) in del.to_roles.iter().enumerate() {
                self.check_role_ref(
                    r,
                    &["steps", id, "delegation", "to_roles", &i.to_string()],
                    &format!("the delegation rule of step `{id}`"),
                );
            }
        }

        // Computed values.
        for (name, src) in &step.compute {
            if RESERVED_NAMES.contains(&name.as_str()) {
                self.out.push(
                    Diagnostic::error(
                        "reserved-name",
                        format!("a computed value may not be called `{name}`"),
                    )
                    .at(self.doc.key_span(&ptr(&["steps", id, "compute", name]))),
                );
            }
            self.cel(
                src,
                &["steps", id, "compute", name],
                false,
                &BTreeMap::new(),
            );
        }

        // Deadline.
        if let Some(dl) = &step.deadline {
            self.deadline(id, step, dl, &outcomes);
        }
    }

    fn outcome_span(&self, id: &str, o: &str) -> Option<std::ops::Range<usize>> {
        let step = self.proc.steps.get(id)?;
        match step.outcomes.iter().position(|x| x == o) {
            Some(i) => self.span(&["steps", id, "outcomes", &i.to_string()]),
            None => self.key_span(&["steps", id, "next"]),
        }
    }

    fn subprocess(&mut self, id: &str, step: &Step, child_id: &str) {
        let Some(child) = self.ctx.procedures.get(child_id).copied() else {
            let known: Vec<&str> = self.ctx.procedures.keys().copied().collect();
            let d = Diagnostic::error(
                "unknown-procedure",
                format!(
                    "step `{id}` starts the procedure `{child_id}`, but there is no such procedure"
                ),
            )
            .at(self.span(&["steps", id, "procedure"]));
            let d = match did_you_mean(child_id, known.iter().copied()) {
                Some(b) => d.help(format!("did you mean `{b}`?")),
                None => {
                    d.help("child procedures are looked up among the files in the same directory")
                }
            };
            self.out.push(d);
            for (k, src) in &step.input {
                self.cel_input(src, &["steps", id, "input", k], step);
            }
            return;
        };
        // Starting itself again (directly or through other procedures) is `cycles.rs`'s.
        for (k, src) in &step.input {
            if !child.data.contains_key(k) {
                let d = Diagnostic::error(
                    "unknown-field",
                    format!("`input` sets `{k}`, but the procedure `{child_id}` declares no data field `{k}`"),
                )
                .at(self.doc.key_span(&ptr(&["steps", id, "input", k])));
                let d = match did_you_mean(k, child.data.keys().map(String::as_str)) {
                    Some(b) => d.help(format!("did you mean `{b}`?")),
                    None => d.help(format!(
                        "its data fields are: {}",
                        child
                            .data
                            .keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                self.out.push(d);
            }
            self.cel_input(src, &["steps", id, "input", k], step);
        }
        for (k, f) in &child.data {
            if f.required && !step.input.contains_key(k) {
                self.out.push(
                    Diagnostic::error(
                        "missing-input",
                        format!("the procedure `{child_id}` needs the data field `{k}`, but step `{id}` does not give it in `input`"),
                    )
                    .at(self.key_span(&["steps", id]))
                    .help(format!("add `{k} = \"…\"` to `input` (a CEL expression; `item` is the list item)")),
                );
            }
        }
    }

    /// Checks a subprocess `input` expression, where `item` is an item of the `for_each`
    /// list. When that list is not known (misspelt, or not a list), neither is `item`, and
    /// the expression is not judged on what `item` holds.
    fn cel_input(&mut self, src: &str, segs: &[&str], step: &Step) {
        let item = step
            .for_each
            .as_deref()
            .and_then(|l| self.fields.get(l))
            .and_then(|f| f.items.as_deref().cloned());
        let mut untyped = self.untyped.clone();
        if item.is_none() {
            untyped.insert("item".to_string());
        }
        let scope = Scope {
            fields: self.fields.clone(),
            extra: BTreeMap::from([(
                "item".to_string(),
                item.unwrap_or_else(|| plain(FieldType::String)),
            )]),
            boolean: false,
            untyped,
        };
        self.cel_in(src, segs, &scope, None);
    }

    /// Checks one CEL expression written at `segs` and maps its problems into the file.
    fn cel(&mut self, src: &str, segs: &[&str], boolean: bool, extra: &BTreeMap<String, Field>) {
        let scope = Scope {
            fields: self.fields.clone(),
            extra: extra.clone(),
            boolean,
            untyped: self.untyped.clone(),
        };
        self.cel_in(src, segs, &scope, None);
    }

    /// `cel` over an explicit scope. `kpi_step` words unknown names for a KPI condition,
    /// which sees one step's form rather than the whole instance.
    fn cel_in(&mut self, src: &str, segs: &[&str], scope: &Scope, kpi_step: Option<&str>) {
        let value_span = self.span(segs);
        let inner = self.expr_base(src, segs);
        for p in expr::check(src, scope) {
            let span = match (inner, &p.at) {
                (Some(base), Some(at)) => Some(base + at.start..base + at.end),
                _ => value_span.clone(),
            };
            let mut d = Diagnostic::error(p.code, p.message.clone()).at(span.clone());
            if let (Some(name), Some(step)) = (&p.unknown_name, kpi_step) {
                d = self.kpi_unknown_name(name, step, scope, span);
            } else if let Some(name) = &p.unknown_name {
                let names: Vec<&str> = scope
                    .fields
                    .keys()
                    .map(String::as_str)
                    .chain(expr::BUILTINS.iter().copied())
                    .collect();
                d = match did_you_mean(name, names) {
                    Some(b) => d.help(format!("did you mean `{b}`?")),
                    None => d.help(p.help.clone().unwrap_or_else(|| {
                        "declare it in `[data]` or in the form of a step".into()
                    })),
                };
            } else if let Some(h) = &p.help {
                d = d.help(h.clone());
            }
            self.out.push(d);
        }
        for (id, at) in expr::register_refs(src) {
            if self.ctx.registers.contains_key(&id) {
                continue;
            }
            let span = match (inner, at) {
                (Some(base), Some(at)) => Some(base + at.start..base + at.end),
                _ => value_span.clone(),
            };
            self.out.push(self.unknown_register(&id, span));
        }
    }

    fn unknown_register(&self, id: &str, span: Option<std::ops::Range<usize>>) -> Diagnostic {
        let d = Diagnostic::error(
            "unknown-register",
            format!("there is no register `{id}` (a file `registers/{id}.toml`)"),
        )
        .at(span)
        .label("no such register");
        let known: Vec<&str> = self.ctx.registers.keys().map(String::as_str).collect();
        match did_you_mean(id, known.iter().copied()) {
            Some(b) => d.help(format!("did you mean `{b}`?")),
            None if known.is_empty() => d.help(
                "no registers were found: put register files in `registers/` beside `procedures/`",
            ),
            None => d.help(format!("the registers are: {}", known.join(", "))),
        }
    }

    /// Byte offset of an expression's first character in the file, when the file holds it
    /// as a plain one-line string; with escapes or multi-line strings offsets inside it
    /// cannot be mapped, and callers point at the whole string instead.
    fn expr_base(&self, src: &str, segs: &[&str]) -> Option<usize> {
        let s = self.span(segs)?;
        let raw = self.doc_text(s.clone())?;
        let quoted_same = (raw.starts_with('"') || raw.starts_with('\''))
            && raw.len() == src.len() + 2
            && &raw[1..raw.len() - 1] == src;
        quoted_same.then_some(s.start + 1)
    }

    fn doc_text(&self, span: std::ops::Range<usize>) -> Option<&str> {
        self.doc.source_text().get(span)
    }
}

fn names_list<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn is_step_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 64
}

pub fn type_name(t: FieldType) -> &'static str {
    match t {
        FieldType::String => "string",
        FieldType::Text => "text",
        FieldType::Integer => "integer",
        FieldType::Number => "number",
        FieldType::Boolean => "boolean",
        FieldType::Date => "date",
        FieldType::Datetime => "datetime",
        FieldType::User => "user",
        FieldType::Department => "department",
        FieldType::List => "list",
        FieldType::Object => "object",
    }
}

pub fn kind_name(k: StepKind) -> &'static str {
    match k {
        StepKind::Task => "task",
        StepKind::Auto => "auto",
        StepKind::Parallel => "parallel",
        StepKind::Join => "join",
        StepKind::Subprocess => "subprocess",
        StepKind::End => "end",
    }
}
