//! The third validation layer, part one: meaning. References between parts of a procedure
//! (steps, roles, outcomes, fields, calendars, child procedures), which keys fit which kind
//! of step, forms, and every CEL expression. Graph shape and soundness are in `graph.rs`
//! and `soundness.rs`.
//!
//! Runs only on files that passed the schema, so the types are right; it must report every
//! problem it finds (never stop at the first) and must never panic on any procedure.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use indexmap::IndexMap;

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
    let mut ctx = cel::Context::default();
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
    c.fields();
    for (id, step) in &proc.steps {
        c.step(id, step);
    }
    c.kpis();
    c.out
}

/// Names a KPI condition may use besides its step's fields. `data`, `actor` and `now` are
/// left out because a KPI is computed from the completion alone, long after the fact;
/// `form` because its fields are already names of their own.
const KPI_BUILTINS: &[&str] = &["outcome"];

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
        self.duplicates(&p.start_roles, &["start_roles"], "`start_roles`");
        self.duplicates(&p.cancel_roles, &["cancel_roles"], "`cancel_roles`");
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

    /// Fields: names, shapes, and one type per name across all forms.
    fn fields(&mut self) {
        let mut first: HashMap<String, (FieldType, String)> = HashMap::new();
        let mut all: Vec<(Vec<String>, String, Field)> = Vec::new();
        for (name, f) in &self.proc.data {
            all.push((
                vec!["data".into(), name.clone()],
                "`[data]`".into(),
                f.clone(),
            ));
        }
        for (sid, step) in &self.proc.steps {
            for (name, f) in &step.form {
                all.push((
                    vec!["steps".into(), sid.clone(), "form".into(), name.clone()],
                    format!("the form of step `{sid}`"),
                    f.clone(),
                ));
            }
        }
        for (path, where_, f) in all {
            let name = path.last().cloned().unwrap_or_default();
            let segs: Vec<&str> = path.iter().map(String::as_str).collect();
            if RESERVED_NAMES.contains(&name.as_str()) {
                self.out.push(
                    Diagnostic::error(
                        "reserved-name",
                        format!(
                            "a field may not be called `{name}`: sopflow uses that name itself"
                        ),
                    )
                    .at(self.doc.key_span(&ptr(&segs)))
                    .help(format!("reserved names: {}", RESERVED_NAMES.join(", "))),
                );
            } else if !is_step_id(&name) {
                self.out.push(
                    Diagnostic::error("bad-id", format!("the field name `{name}` is not allowed"))
                        .at(self.doc.key_span(&ptr(&segs)))
                        .help("use lower-case letters, digits and `_`, starting with a letter, like `audit_date`"),
                );
            }
            match first.get(&name) {
                Some((ty, at)) if *ty != f.ty => self.out.push(
                    Diagnostic::error(
                        "field-type-conflict",
                        format!(
                            "the field `{name}` is of type `{}` here but of type `{}` in {at}",
                            type_name(f.ty),
                            type_name(*ty)
                        ),
                    )
                    .at(self.doc.value_span(&ptr(&[segs.as_slice(), &["type"]].concat())))
                    .help("a field keeps one type for the whole instance; use the same type or another name"),
                ),
                Some(_) => {}
                None => {
                    first.insert(name.clone(), (f.ty, where_.clone()));
                }
            }
            self.field_shape(&f, &segs);
        }
    }

    fn field_shape(&mut self, f: &Field, segs: &[&str]) {
        let at = |k: &str| ptr(&[segs, &[k]].concat());
        let t = type_name(f.ty);
        let misplaced = |key: &str, present: bool, fits: &str, this: &mut Self| {
            if present {
                this.out.push(
                    Diagnostic::error(
                        "misplaced-key",
                        format!("`{key}` does not apply to a field of type `{t}`"),
                    )
                    .at(this.doc.key_span(&at(key)))
                    .help(format!(
                        "`{key}` is for {fits} fields; remove it or change the type"
                    )),
                );
            }
        };
        let is_num = matches!(f.ty, FieldType::Integer | FieldType::Number);
        let is_text = matches!(f.ty, FieldType::String | FieldType::Text);
        misplaced(
            "enum",
            !f.choices.is_empty() && f.ty != FieldType::String,
            "`string`",
            self,
        );
        misplaced(
            "min",
            f.min.is_some() && !is_num,
            "`integer` and `number`",
            self,
        );
        misplaced(
            "max",
            f.max.is_some() && !is_num,
            "`integer` and `number`",
            self,
        );
        misplaced(
            "min_length",
            f.min_length.is_some() && !is_text,
            "`string` and `text`",
            self,
        );
        misplaced(
            "max_length",
            f.max_length.is_some() && !is_text,
            "`string` and `text`",
            self,
        );
        misplaced(
            "min_items",
            f.min_items.is_some() && f.ty != FieldType::List,
            "`list`",
            self,
        );
        misplaced(
            "max_items",
            f.max_items.is_some() && f.ty != FieldType::List,
            "`list`",
            self,
        );
        misplaced(
            "items",
            f.items.is_some() && f.ty != FieldType::List,
            "`list`",
            self,
        );
        misplaced(
            "fields",
            !f.fields.is_empty() && f.ty != FieldType::Object,
            "`object`",
            self,
        );
        if f.ty == FieldType::List && f.items.is_none() {
            self.out.push(
                Diagnostic::error(
                    "missing-key",
                    "a `list` field must say what one item is, under `items`",
                )
                .at(self.doc.key_span(&ptr(segs)))
                .help("for example `items = { type = \"string\" }`"),
            );
        }
        if f.ty == FieldType::Object && f.fields.is_empty() {
            self.out.push(
                Diagnostic::error(
                    "missing-key",
                    "an `object` field must list its fields under `fields`",
                )
                .at(self.doc.key_span(&ptr(segs))),
            );
        }
        if let (Some(lo), Some(hi)) = (f.min, f.max) {
            if lo > hi {
                self.out.push(
                    Diagnostic::error(
                        "bad-range",
                        format!(
                            "`min` ({lo}) is larger than `max` ({hi}): no value could be entered"
                        ),
                    )
                    .at(self.doc.value_span(&at("min"))),
                );
            }
        }
        if let (Some(lo), Some(hi)) = (f.min_length, f.max_length) {
            if lo > hi {
                self.out.push(
                    Diagnostic::error(
                        "bad-range",
                        format!("`min_length` ({lo}) is larger than `max_length` ({hi})"),
                    )
                    .at(self.doc.value_span(&at("min_length"))),
                );
            }
        }
        if let (Some(lo), Some(hi)) = (f.min_items, f.max_items) {
            if lo > hi {
                self.out.push(
                    Diagnostic::error(
                        "bad-range",
                        format!("`min_items` ({lo}) is larger than `max_items` ({hi})"),
                    )
                    .at(self.doc.value_span(&at("min_items"))),
                );
            }
        }
        let mut seen = HashSet::new();
        for (i, c) in f.choices.iter().enumerate() {
            if !seen.insert(c) {
                self.out.push(
                    Diagnostic::error("duplicate-id", format!("the choice `{c}` is listed twice"))
                        .at(self
                            .doc
                            .value_span(&ptr(&[segs, &["enum", &i.to_string()]].concat()))),
                );
            }
        }
        if let Some(items) = &f.items {
            let sub: Vec<&str> = [segs, &["items"]].concat();
            self.field_shape(items, &sub);
        }
        for (name, sub) in &f.fields {
            let p: Vec<&str> = [segs, &["fields", name.as_str()]].concat();
            self.field_shape(sub, &p);
        }
    }

    fn step(&mut self, id: &str, step: &Step) {
        self.kind_fit(id, step);
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
            if sig.roles.is_empty() && step.role.is_none() {
                self.out.push(
                    Diagnostic::error(
                        "bad-signatures",
                        format!("step `{id}` asks for signatures but names no role to sign"),
                    )
                    .at(self.key_span(&["steps", id, "signatures"]))
                    .help("give `signatures.roles` or the step's `role`"),
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

    /// Which keys belong to which kind of step.
    fn kind_fit(&mut self, id: &str, s: &Step) {
        let k = s.kind;
        let present: [(&str, bool); 17] = [
            ("role", s.role.is_some()),
            ("assignee", s.assignee.is_some()),
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
                "outcomes",
                "form",
                "next",
                "deadline",
                "signatures",
                "separation",
                "delegation",
                "compute",
            ],
            StepKind::Auto => &["next", "compute"],
            StepKind::Parallel => &["branches", "join"],
            // `next` on an end step is reported by the graph check, with its own sentence.
            StepKind::Join => &["next", "compute"],
            StepKind::Subprocess => &[
                "next",
                "procedure",
                "for_each",
                "input",
                "collect",
                "max_depth",
                "deadline",
                "compute",
            ],
            StepKind::End => &["next"],
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
            StepKind::Task if s.role.is_none() && s.assignee.is_none() => self.out.push(
                Diagnostic::error("missing-role", format!("step `{id}` is a task but nobody is asked to do it"))
                    .at(self.key_span(&["steps", id]))
                    .help("add `role = \"…\"` (a role from `[roles]`) or `assignee = \"…\"` (a user field)"),
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
            StepKind::Subprocess => {
                for (key, here) in [("procedure", s.procedure.is_some()), ("for_each", s.for_each.is_some())] {
                    if !here {
                        self.out.push(
                            Diagnostic::error("missing-key", format!("subprocess step `{id}` needs `{key}`"))
                                .at(self.key_span(&["steps", id]))
                                .help("a subprocess step names the child `procedure` and the list field `for_each` whose items each get a child"),
                        );
                    }
                }
            }
            _ => {}
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

    fn deadline(&mut self, id: &str, step: &Step, dl: &super::model::Deadline, outcomes: &[&str]) {
        let base = ptr(&["steps", id, "deadline"]);
        self.out
            .extend(super::duration::check_deadline(dl, &base, self.doc));
        if let Ok(due) = dl.due.parse::<super::duration::Due>() {
            for f in due.fields() {
                self.check_field_ref(
                    f,
                    &["steps", id, "deadline", "due"],
                    &format!("the deadline of step `{id}`"),
                    &[FieldType::Date, FieldType::Datetime],
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
    }

    /// `[kpis]`: what each rate counts, its condition and its objective.
    fn kpis(&mut self) {
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

    fn kpi_step(&mut self, id: &str, step_id: &str, when: Option<&str>) {
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

    fn kpi_unknown_name(
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

    fn kpi_ends_at(&mut self, id: &str, ends_at: &[String]) {
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

    fn kpi_objective(&mut self, id: &str, kpi: &super::model::Kpi) {
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

fn kind_help(k: StepKind, key: &str) -> String {
    match (k, key) {
        (StepKind::Parallel, "next") => "a parallel step continues into its `branches`; the `join` step has the `next`".into(),
        (StepKind::Auto, _) => "an auto step is done by the engine at once: it only computes values and routes with `next`".into(),
        (StepKind::Join, _) => "a join step only waits for the branches and continues with `next`".into(),
        (_, "branches" | "join") => "`branches` and `join` belong on a step with `kind = \"parallel\"`".into(),
        (_, "procedure" | "for_each" | "input" | "collect" | "max_depth") => {
            format!("`{key}` belongs on a step with `kind = \"subprocess\"`")
        }
        (StepKind::Subprocess, _) => "a subprocess step is run by the engine; put people's work in the child procedure".into(),
        _ => format!("remove `{key}` or change the step's `kind`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
