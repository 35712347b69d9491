//! A procedure prepared for running: CEL programs compiled once, each form turned into a
//! JSON Schema validator, field types indexed so instance data can be given to CEL with the
//! right types (dates as timestamps). Built from a procedure that passed validation.
//!
//! Compilation must not fail on a validated procedure except through a bug; it reports such
//! a bug as `CompileError` rather than panicking. Nothing here touches an instance.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::objects::Key;
use cel::{Program, Value as Cel};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use crate::definition::model::{Field, FieldType, Procedure, Step};
use crate::definition::semantic::{self, declared_fields};

/// A procedure ready to run, pinned to one file text by its hash.
pub struct CompiledProcedure {
    pub def: Procedure,
    /// SHA-256 of the file's bytes: instances are pinned to (id, version, hash).
    pub hash: String,
    /// Every declared field (start data, forms, computed values, collected child results).
    pub fields: BTreeMap<String, Field>,
    steps: HashMap<String, CompiledStep>,
    /// Validator of the start data (`[data]`).
    pub start_form: FormValidator,
    /// For each join step, how many branches must arrive before it continues: every branch
    /// its parallel step starts, or its `wait_for`.
    pub join_width: HashMap<String, usize>,
    /// Join step → the steps between its parallel step and it (every branch, nested
    /// blocks included): what a partial join withdraws when it continues.
    pub join_region: HashMap<String, std::collections::BTreeSet<String>>,
    /// Whether any expression reads `register` (only then is it bound: it costs a copy of
    /// every register).
    pub uses_registers: bool,
    /// `starts_from.data`, compiled (over `key` and `entry`).
    pub starts_from: Vec<(String, Arc<Program>)>,
    /// The states the procedure reaches by itself, explored on first need (an operator's
    /// move, a migration) and kept: a move must land in one of them.
    markings: std::sync::OnceLock<Option<Arc<crate::definition::soundness::Markings>>>,
}

/// Per-step compiled parts.
pub struct CompiledStep {
    pub form: FormValidator,
    /// `next[i].when`, compiled; `None` where there is no condition.
    pub guards: Vec<Option<Arc<Program>>>,
    /// `compute`, in file order.
    pub compute: Vec<(String, Arc<Program>)>,
    /// Subprocess `input`, in file order.
    pub input: Vec<(String, Arc<Program>)>,
    /// `writes`, compiled: register, key expression, and an expression per field set.
    pub writes: Vec<CompiledWrite>,
}

/// One register write of a step, compiled.
pub struct CompiledWrite {
    pub register: String,
    pub key: Arc<Program>,
    pub set: Vec<(String, Arc<Program>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("procedure {procedure}: {what}")]
    Invalid { procedure: String, what: String },
}

/// A compiled form: rejects unknown fields, checks types, required fields, choices, ranges.
/// Keeps the fields it was made from, so each problem is worded for the field it is about
/// (its type, its choices in their declared order) rather than in the validator's words.
pub struct FormValidator {
    validator: jsonschema::Validator,
    fields: indexmap::IndexMap<String, Field>,
}

/// One problem with one submitted field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldProblem {
    /// The field (or `field/0/sub` inside lists and objects); empty for the form as a whole.
    pub field: String,
    pub message: String,
}

impl FormValidator {
    fn new(fields: &indexmap::IndexMap<String, Field>) -> Result<Self, String> {
        let schema = form_schema(fields);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| e.to_string())?;
        Ok(FormValidator {
            validator,
            fields: fields.clone(),
        })
    }

    /// The validator of a set of fields as declared; `None` if they do not compile (which
    /// validated files never give).
    pub fn for_fields(fields: &indexmap::IndexMap<String, Field>) -> Option<Self> {
        Self::new(fields).ok()
    }

    /// The validator of a partial update of these fields: each value given must fit its
    /// field, none is required (a register write sets some fields of an entry).
    pub fn for_updates(fields: &indexmap::IndexMap<String, Field>) -> Option<Self> {
        let optional = fields
            .iter()
            .map(|(k, f)| {
                let mut f = f.clone();
                f.required = false;
                (k.clone(), f)
            })
            .collect();
        Self::new(&optional).ok()
    }

    /// Every problem of `values`, in a stable order. Empty means valid.
    pub fn check(&self, values: &Map<String, Value>) -> Vec<FieldProblem> {
        use jsonschema::error::ValidationErrorKind as Kind;
        let instance = Value::Object(values.clone());
        let errors: Vec<_> = self.validator.iter_errors(&instance).collect();
        // One value can fail several keywords; say the most useful once. A wrong value for
        // a field with choices fails `type` and `enum`: the list of choices says what the
        // type would, and more. An empty id fails `minLength` and `pattern`: "is empty" is
        // the whole story.
        let at = |pred: fn(&Kind, &Value) -> bool| -> std::collections::HashSet<String> {
            errors
                .iter()
                .filter(|e| pred(e.kind(), e.instance()))
                .map(|e| e.instance_path().to_string())
                .collect()
        };
        let with_choices = at(|k, _| matches!(k, Kind::Enum { .. }));
        let empty = at(|k, v| matches!(k, Kind::MinLength { .. }) && v.as_str() == Some(""));
        let mut out: Vec<FieldProblem> = errors
            .iter()
            .flat_map(|e| {
                let pointer = e.instance_path().to_string();
                let path = pointer.trim_start_matches('/').to_string();
                match e.kind() {
                    Kind::Required { property } => vec![FieldProblem {
                        field: join_path(&path, property.as_str().unwrap_or_default()),
                        message: "is required".into(),
                    }],
                    Kind::AdditionalProperties { unexpected } => unexpected
                        .iter()
                        .map(|u| FieldProblem {
                            field: join_path(&path, u),
                            message: "is not a field of this form".into(),
                        })
                        .collect(),
                    Kind::Type { .. } if with_choices.contains(&pointer) => vec![],
                    Kind::Pattern { .. } if empty.contains(&pointer) => vec![],
                    kind => vec![FieldProblem {
                        message: explain(kind, e.instance(), field_at(&self.fields, &path)),
                        field: path,
                    }],
                }
            })
            .collect();
        out.sort_by(|a, b| a.field.cmp(&b.field).then(a.message.cmp(&b.message)));
        out.dedup();
        out
    }
}

/// The declared field a submitted value sits at (`spare_parts/0/quantity`), if any.
fn field_at<'a>(fields: &'a indexmap::IndexMap<String, Field>, path: &str) -> Option<&'a Field> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let first = segments.next()?;
    let mut field = fields.get(&unescape_pointer(first))?;
    for seg in segments {
        field = match field.ty {
            FieldType::List => field.items.as_deref()?,
            FieldType::Object => field.fields.get(&unescape_pointer(seg))?,
            _ => return None,
        };
    }
    Some(field)
}

fn unescape_pointer(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// One validation failure as a sentence a member of staff can act on: what was sent, what
/// the field takes instead. Never the validator's own wording, which speaks of schemas.
fn explain(
    kind: &jsonschema::error::ValidationErrorKind,
    value: &Value,
    field: Option<&Field>,
) -> String {
    use jsonschema::error::ValidationErrorKind as Kind;
    let shown = show_value(value);
    match kind {
        Kind::Enum { options } => {
            let choices: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(plain).collect())
                .unwrap_or_default();
            if value.is_null() {
                format!("is empty: choose one of {}", choices.join(", "))
            } else {
                format!("{shown} is not one of the choices: {}", choices.join(", "))
            }
        }
        Kind::Type { .. } => {
            let wanted = field.map_or("another kind of value", |f| takes(f.ty));
            match value {
                Value::Null => match field {
                    Some(f) if !f.required => {
                        format!("is empty: give {wanted}, or leave the field out")
                    }
                    _ => format!("is empty: give {wanted}"),
                },
                Value::Number(_) if field.is_some_and(|f| f.ty == FieldType::Integer) => {
                    format!("{shown} is not a whole number")
                }
                _ => format!(
                    "{shown} is {}, but this field takes {wanted}",
                    kind_of(value)
                ),
            }
        }
        Kind::Minimum { limit } => {
            format!(
                "{shown} is too small: the smallest allowed is {}",
                plain(limit)
            )
        }
        Kind::Maximum { limit } => {
            format!(
                "{shown} is too large: the largest allowed is {}",
                plain(limit)
            )
        }
        Kind::ExclusiveMinimum { limit } => {
            format!(
                "{shown} is too small: it must be more than {}",
                plain(limit)
            )
        }
        Kind::ExclusiveMaximum { limit } => {
            format!(
                "{shown} is too large: it must be less than {}",
                plain(limit)
            )
        }
        Kind::MinLength { limit } => {
            let had = value.as_str().map_or(0, |s| s.chars().count());
            if had == 0 {
                match field.map(|f| f.ty) {
                    Some(ty @ (FieldType::User | FieldType::Department)) => {
                        format!("is empty: give {}", takes(ty))
                    }
                    _ => format!("is empty: write at least {}", count(*limit, "character")),
                }
            } else {
                format!(
                    "is too short: {} written, at least {} needed",
                    count(had as u64, "character"),
                    limit
                )
            }
        }
        Kind::MaxLength { limit } => {
            let had = value.as_str().map_or(0, |s| s.chars().count());
            format!(
                "is too long: {} written, at most {} allowed; shorten it",
                count(had as u64, "character"),
                limit
            )
        }
        Kind::MinItems { limit } => {
            let had = value.as_array().map_or(0, Vec::len) as u64;
            format!(
                "lists {}, but at least {} needed",
                count(had, "item"),
                count_verb(*limit)
            )
        }
        Kind::MaxItems { limit } => {
            let had = value.as_array().map_or(0, Vec::len) as u64;
            format!(
                "lists {}, but at most {} allowed",
                count(had, "item"),
                count_verb(*limit)
            )
        }
        Kind::Format { format } => match format.as_str() {
            "date" => format!("{shown} is not a date: write it like 2026-03-31"),
            "date-time" => format!(
                "{shown} is not a date and time: write it like 2026-03-31T14:00:00Z, \
                 with the time zone (Z for UTC, or an offset like +08:00)"
            ),
            _ => format!("{shown} is not written the way this field takes it"),
        },
        Kind::Pattern { .. } => "is not an id from the directory: ids are lower-case letters, \
             digits, `_`, `-` and `.`, like `li.wei`"
            .into(),
        // Forms are built from declared fields, which use none of the other keywords;
        // should one appear, the sentence still names the value and no schema term.
        _ => format!("{shown} is not accepted here"),
    }
}

/// What a field of this type takes, as a phrase ("a whole number").
fn takes(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String | FieldType::Text => "text",
        FieldType::Integer => "a whole number",
        FieldType::Number => "a number",
        FieldType::Boolean => "yes or no (true or false)",
        FieldType::Date => "a date, like 2026-03-31",
        FieldType::Datetime => "a date and time, like 2026-03-31T14:00:00Z",
        FieldType::User => "a user id from the directory, like `li.wei`",
        FieldType::Department => "a department id from the directory, like `quality`",
        FieldType::List => "a list",
        FieldType::Object => "a group of fields",
    }
}

/// What kind of value was sent, as a phrase ("text", "a number").
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "yes or no",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a group of fields",
    }
}

/// A submitted value quoted for a message, cut short if long.
fn show_value(v: &Value) -> String {
    let text = match v {
        Value::Array(_) => return "the list".into(),
        Value::Object(_) => return "the group of fields".into(),
        other => plain(other),
    };
    const MAX: usize = 60;
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("`{cut}…`")
    } else {
        format!("`{text}`")
    }
}

/// A value as a person writes it: text without quotes, whole numbers without `.0`.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f)
                if n.as_i64().is_none()
                    && n.as_u64().is_none()
                    && f.fract() == 0.0
                    && f.abs() < 1e15 =>
            {
                format!("{}", f as i64)
            }
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// `1 item`, `3 items`.
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `1 is`, `3 are`.
fn count_verb(n: u64) -> String {
    if n == 1 {
        "1 is".into()
    } else {
        format!("{n} are")
    }
}

fn join_path(base: &str, leaf: &str) -> String {
    if base.is_empty() {
        leaf.to_string()
    } else {
        format!("{base}/{leaf}")
    }
}

/// The JSON Schema of a form: one property per field, unknown fields refused. Each field
/// carries its `title` and `description` (annotations, ignored by validation), so a client
/// drawing the form from this schema can label every field as the procedure words it.
pub fn form_schema(fields: &indexmap::IndexMap<String, Field>) -> Value {
    let props: Map<String, Value> = fields
        .iter()
        .map(|(k, f)| (k.clone(), field_schema(f)))
        .collect();
    let required: Vec<&String> = fields
        .iter()
        .filter(|(_, f)| f.required)
        .map(|(k, _)| k)
        .collect();
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

fn field_schema(f: &Field) -> Value {
    let mut s = Map::new();
    let ty = match f.ty {
        FieldType::String | FieldType::Text | FieldType::User | FieldType::Department => "string",
        FieldType::Date | FieldType::Datetime => "string",
        FieldType::Integer => "integer",
        FieldType::Number => "number",
        FieldType::Boolean => "boolean",
        FieldType::List => "array",
        FieldType::Object => "object",
    };
    s.insert("type".into(), json!(ty));
    if let Some(title) = &f.title {
        s.insert("title".into(), json!(title));
    }
    if let Some(description) = &f.description {
        s.insert("description".into(), json!(description));
    }
    match f.ty {
        FieldType::Date => {
            s.insert("format".into(), json!("date"));
        }
        FieldType::Datetime => {
            s.insert("format".into(), json!("date-time"));
        }
        // An id that could not be a directory id (a NUL, a space, upper case) is refused
        // here, with the field named, rather than by the store's key encoding later.
        FieldType::User | FieldType::Department => {
            s.insert("minLength".into(), json!(1));
            s.insert("pattern".into(), json!(crate::directory::ID_PATTERN));
        }
        _ => {}
    }
    if !f.choices.is_empty() {
        s.insert("enum".into(), json!(f.choices));
    }
    // Rules that depend on the outcome chosen cannot be said in the form's own schema (the
    // outcome is not a form field), so they are carried as annotations clients show.
    if !f.required_for.is_empty() {
        s.insert("x-required-for".into(), json!(f.required_for));
    }
    if !f.must_be_true_for.is_empty() {
        s.insert("x-must-be-true-for".into(), json!(f.must_be_true_for));
    }
    if let Some(v) = f.min {
        s.insert("minimum".into(), json!(v));
    }
    if let Some(v) = f.max {
        s.insert("maximum".into(), json!(v));
    }
    if let Some(v) = f.min_length {
        s.insert("minLength".into(), json!(v));
    }
    if let Some(v) = f.max_length {
        s.insert("maxLength".into(), json!(v));
    }
    if let Some(v) = f.min_items {
        s.insert("minItems".into(), json!(v));
    }
    if let Some(v) = f.max_items {
        s.insert("maxItems".into(), json!(v));
    }
    if let Some(items) = &f.items {
        s.insert("items".into(), field_schema(items));
    }
    if f.ty == FieldType::Object {
        let inner = form_schema(&f.fields);
        if let Value::Object(inner) = inner {
            for (k, v) in inner {
                if k != "type" {
                    s.insert(k, v);
                }
            }
        }
    }
    Value::Object(s)
}

/// Every CEL expression of a procedure.
fn expressions(def: &Procedure) -> Vec<&str> {
    let mut out = Vec::new();
    for step in def.steps.values() {
        out.extend(step.next.iter().filter_map(|t| t.when.as_deref()));
        out.extend(step.compute.values().map(String::as_str));
        out.extend(step.input.values().map(String::as_str));
        for w in &step.writes {
            out.push(w.key.as_str());
            out.extend(w.set.values().map(String::as_str));
        }
    }
    out
}

/// The steps reachable from `starts` without passing through `join`.
fn region(def: &Procedure, starts: &[String], join: &str) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut stack: Vec<&str> = starts.iter().map(String::as_str).collect();
    while let Some(id) = stack.pop() {
        if id == join || !seen.insert(id.to_string()) {
            continue;
        }
        if let Some(s) = def.steps.get(id) {
            stack.extend(s.next.iter().map(|t| t.to.as_str()));
            stack.extend(s.branches.iter().map(String::as_str));
        }
    }
    seen
}

impl CompiledProcedure {
    /// The states of the token game this procedure reaches from its start.
    pub fn markings(&self) -> Option<Arc<crate::definition::soundness::Markings>> {
        self.markings
            .get_or_init(|| crate::definition::soundness::Markings::of(&self.def).map(Arc::new))
            .clone()
    }

    /// Compiles a validated procedure. `others` are the procedures it may start as children
    /// (their fields type the collected results).
    pub fn compile(
        def: Procedure,
        hash: String,
        others: &[&Procedure],
    ) -> Result<Self, CompileError> {
        let invalid = |what: String| CompileError::Invalid {
            procedure: def.id.clone(),
            what,
        };
        let ctx = semantic::Context {
            procedures: others.iter().map(|p| (p.id.as_str(), *p)).collect(),
            calendars: Default::default(),
            file_stem: None,
            registers: Default::default(),
        };
        let fields = declared_fields(&def, &ctx);
        let compile = |src: &str| {
            Program::compile(src)
                .map(Arc::new)
                .map_err(|e| invalid(format!("`{src}`: {e}")))
        };
        let mut steps = HashMap::new();
        for (id, step) in &def.steps {
            let guards = step
                .next
                .iter()
                .map(|t| t.when.as_deref().map(compile).transpose())
                .collect::<Result<Vec<_>, _>>()?;
            let compute = step
                .compute
                .iter()
                .map(|(k, src)| compile(src).map(|p| (k.clone(), p)))
                .collect::<Result<Vec<_>, _>>()?;
            let input = step
                .input
                .iter()
                .map(|(k, src)| compile(src).map(|p| (k.clone(), p)))
                .collect::<Result<Vec<_>, _>>()?;
            let form = FormValidator::new(&step.form)
                .map_err(|e| invalid(format!("form of `{id}`: {e}")))?;
            let writes = step
                .writes
                .iter()
                .map(|w| {
                    Ok(CompiledWrite {
                        register: w.register.clone(),
                        key: compile(&w.key)?,
                        set: w
                            .set
                            .iter()
                            .map(|(k, src)| compile(src).map(|p| (k.clone(), p)))
                            .collect::<Result<Vec<_>, _>>()?,
                    })
                })
                .collect::<Result<Vec<_>, CompileError>>()?;
            steps.insert(
                id.clone(),
                CompiledStep {
                    form,
                    guards,
                    compute,
                    input,
                    writes,
                },
            );
        }
        let start_form =
            FormValidator::new(&def.data).map_err(|e| invalid(format!("start data: {e}")))?;
        let starts_from = def
            .starts_from
            .iter()
            .flat_map(|s| s.data.iter())
            .map(|(k, src)| compile(src).map(|p| (k.clone(), p)))
            .collect::<Result<Vec<_>, _>>()?;
        let uses_registers = expressions(&def)
            .iter()
            .any(|src| !crate::definition::expr::register_refs(src).is_empty());
        let mut join_width = HashMap::new();
        let mut join_region = HashMap::new();
        for step in def.steps.values() {
            if let Some(j) = &step.join {
                let all = step.branches.len();
                let wait_for = def
                    .steps
                    .get(j)
                    .and_then(|s| s.wait_for)
                    .map_or(all, |n| usize::try_from(n).unwrap_or(all).min(all));
                join_width.insert(j.clone(), wait_for);
                join_region.insert(j.clone(), region(&def, &step.branches, j));
            }
        }
        Ok(CompiledProcedure {
            def,
            hash,
            fields,
            steps,
            start_form,
            join_width,
            join_region,
            uses_registers,
            markings: std::sync::OnceLock::new(),
            starts_from,
        })
    }

    pub fn id(&self) -> &str {
        &self.def.id
    }

    pub fn version(&self) -> u32 {
        self.def.version
    }

    pub fn step(&self, id: &str) -> Option<(&Step, &CompiledStep)> {
        Some((self.def.steps.get(id)?, self.steps.get(id)?))
    }

    /// Fits a value the engine produced (a computed value, a child's input) to the declared
    /// type of field `name`: CEL gives dates back as timestamps and whole numbers as
    /// decimals in places, which the forms of later steps would rightly refuse. Values people
    /// submit are never coerced — they are validated as sent.
    pub fn coerce(&self, name: &str, value: Value, zone: Tz) -> Value {
        let Some(field) = self.fields.get(name) else {
            return value;
        };
        coerce_to(field, value, zone)
    }

    /// Instance data as CEL variables: every declared field bound (to null when unset, so a
    /// condition on a field not filled in yet is a clear error, not an unknown name), with
    /// dates as timestamps (a date is its midnight in `zone`, the procedure's time zone).
    pub fn bind(&self, ctx: &mut cel::Context<'_, '_>, data: &Map<String, Value>, zone: Tz) {
        let mut all = HashMap::new();
        for (name, field) in &self.fields {
            let v = data
                .get(name)
                .map_or(Cel::Null, |v| to_cel(v, Some(field), zone));
            all.insert(Key::String(Arc::new(name.clone())), v.clone());
            ctx.add_variable_from_value(name.clone(), v);
        }
        for (name, v) in data {
            if !self.fields.contains_key(name) {
                all.insert(Key::String(Arc::new(name.clone())), to_cel(v, None, zone));
            }
        }
        ctx.add_variable_from_value("data", Cel::Map(all.into()));
    }
}

pub(crate) fn coerce_to(field: &Field, value: Value, zone: Tz) -> Value {
    match (field.ty, value) {
        // The date a computed instant falls on where the procedure's people are.
        (FieldType::Date, Value::String(s)) => match parse_instant(&s, zone) {
            Some(t) => Value::String(
                t.with_timezone(&zone)
                    .date_naive()
                    .format("%Y-%m-%d")
                    .to_string(),
            ),
            None => Value::String(s),
        },
        (FieldType::Integer, Value::Number(n)) => match n.as_f64() {
            Some(f) if n.as_i64().is_none() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                json!(f as i64)
            }
            _ => Value::Number(n),
        },
        (FieldType::List, Value::Array(items)) => match field.items.as_deref() {
            Some(item) => Value::Array(
                items
                    .into_iter()
                    .map(|v| coerce_to(item, v, zone))
                    .collect(),
            ),
            None => Value::Array(items),
        },
        (FieldType::Object, Value::Object(m)) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match field.fields.get(&k) {
                        Some(f) => coerce_to(f, v, zone),
                        None => v,
                    };
                    (k, v)
                })
                .collect(),
        ),
        (_, v) => v,
    }
}

/// JSON → CEL, typed by the declared field when known (date strings become timestamps:
/// a date alone is its midnight in `zone`, as in deadlines).
pub fn to_cel(v: &Value, field: Option<&Field>, zone: Tz) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (field.map(|f| f.ty), n.as_i64(), n.as_f64()) {
            (Some(FieldType::Number), _, Some(f)) => Cel::Float(f),
            (_, Some(i), _) => Cel::Int(i),
            (_, _, Some(f)) => Cel::Float(f),
            _ => Cel::Null,
        },
        Value::String(s) => match field.map(|f| f.ty) {
            Some(FieldType::Date) | Some(FieldType::Datetime) => match parse_instant(s, zone) {
                Some(t) => Cel::Timestamp(t.fixed_offset()),
                None => Cel::String(Arc::new(s.clone())),
            },
            _ => Cel::String(Arc::new(s.clone())),
        },
        Value::Array(items) => {
            let item_field = field.and_then(|f| f.items.as_deref());
            Cel::List(Arc::new(
                items.iter().map(|i| to_cel(i, item_field, zone)).collect(),
            ))
        }
        Value::Object(m) => {
            let map: HashMap<Key, Cel> = m
                .iter()
                .map(|(k, v)| {
                    let sub = field.and_then(|f| f.fields.get(k));
                    (Key::String(Arc::new(k.clone())), to_cel(v, sub, zone))
                })
                .collect();
            Cel::Map(map.into())
        }
    }
}

/// CEL → JSON, for computed values and child inputs. Timestamps become RFC 3339 text.
pub fn from_cel(v: &Cel) -> Value {
    match v {
        Cel::Null => Value::Null,
        Cel::Bool(b) => json!(b),
        Cel::Int(i) => json!(i),
        Cel::UInt(u) => json!(u),
        Cel::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Cel::String(s) => json!(s.as_str()),
        Cel::Timestamp(t) => json!(t.with_timezone(&Utc).to_rfc3339()),
        Cel::Duration(d) => json!(format!("{}s", d.num_seconds())),
        Cel::List(items) => Value::Array(items.iter().map(from_cel).collect()),
        Cel::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m.map.iter() {
                let key = match k {
                    Key::String(s) => s.to_string(),
                    Key::Int(i) => i.to_string(),
                    Key::Uint(u) => u.to_string(),
                    Key::Bool(b) => b.to_string(),
                };
                out.insert(key, from_cel(v));
            }
            Value::Object(out)
        }
        _ => Value::Null,
    }
}

/// An RFC 3339 instant, or a date (`2027-01-31`) as the start of that day in `zone`.
pub fn parse_instant(s: &str, zone: Tz) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let midnight = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(0, 0, 0)?;
    // A midnight skipped by a clock change starts the day at the first instant after it.
    zone.from_local_datetime(&midnight)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}

/// The time zone dates of `def` are read in: its calendar's (`calendar`, else `default`),
/// or UTC when that calendar is not loaded (an auditor's tool on a bare store).
pub fn zone_of(def: &Procedure, calendars: &crate::engine::decide::Calendars) -> Tz {
    calendars
        .get(def.calendar.as_deref().unwrap_or("default"))
        .map_or(Tz::UTC, |c| c.timezone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &str = r#"
channel = { type = "string", title = "Received through", required = true, enum = ["hotline", "website", "email", "letter", "visit", "other"] }
count = { type = "integer", min = 1, max = 100 }
score = { type = "number", min = 0, max = 100 }
urgent = { type = "boolean" }
summary = { type = "text", min_length = 10, max_length = 20 }
owner = { type = "user" }
due_on = { type = "date" }
called_at = { type = "datetime" }
tags = { type = "list", min_items = 1, max_items = 2, items = { type = "string" } }

[parts]
type = "list"
title = "Spare parts"
items = { type = "object", fields = { quantity = { type = "integer", title = "Quantity", description = "How many were used" } } }
"#;

    fn form() -> (indexmap::IndexMap<String, Field>, FormValidator) {
        let fields: indexmap::IndexMap<String, Field> = toml::from_str(FORM).expect("fields");
        let v = FormValidator::new(&fields).expect("a validator");
        (fields, v)
    }

    /// The problems of a form holding the channel and the given fields, as (field, message).
    fn problems(extra: Value) -> Vec<(String, String)> {
        let mut values = json!({ "channel": "hotline" });
        if let (Some(m), Value::Object(e)) = (values.as_object_mut(), extra) {
            m.extend(e);
        }
        let Value::Object(values) = values else {
            unreachable!()
        };
        form()
            .1
            .check(&values)
            .into_iter()
            .map(|p| (p.field, p.message))
            .collect()
    }

    fn one(extra: Value) -> (String, String) {
        let mut p = problems(extra.clone());
        assert_eq!(p.len(), 1, "{extra}: {p:?}");
        p.remove(0)
    }

    fn says(extra: Value, field: &str, message: &str) {
        assert_eq!(one(extra), (field.to_string(), message.to_string()));
    }

    #[test]
    fn a_refused_choice_names_every_choice_in_declared_order() {
        says(
            json!({ "channel": "pigeon" }),
            "channel",
            "`pigeon` is not one of the choices: hotline, website, email, letter, visit, other",
        );
        // A number where a choice is expected: one sentence, the list of choices.
        says(
            json!({ "channel": 5 }),
            "channel",
            "`5` is not one of the choices: hotline, website, email, letter, visit, other",
        );
    }

    #[test]
    fn wrong_types_say_what_the_field_takes() {
        says(
            json!({ "count": "three" }),
            "count",
            "`three` is text, but this field takes a whole number",
        );
        says(
            json!({ "count": 2.5 }),
            "count",
            "`2.5` is not a whole number",
        );
        says(
            json!({ "urgent": "yes" }),
            "urgent",
            "`yes` is text, but this field takes yes or no (true or false)",
        );
        says(
            json!({ "summary": 12 }),
            "summary",
            "`12` is a number, but this field takes text",
        );
        says(
            json!({ "tags": "a" }),
            "tags",
            "`a` is text, but this field takes a list",
        );
        says(
            json!({ "score": null }),
            "score",
            "is empty: give a number, or leave the field out",
        );
        says(
            json!({ "channel": null }),
            "channel",
            "is empty: choose one of hotline, website, email, letter, visit, other",
        );
    }

    #[test]
    fn ranges_and_lengths_give_the_bound() {
        says(
            json!({ "score": 120 }),
            "score",
            "`120` is too large: the largest allowed is 100",
        );
        says(
            json!({ "score": -0.5 }),
            "score",
            "`-0.5` is too small: the smallest allowed is 0",
        );
        says(
            json!({ "count": 0 }),
            "count",
            "`0` is too small: the smallest allowed is 1",
        );
        says(
            json!({ "summary": "too short" }),
            "summary",
            "is too short: 9 characters written, at least 10 needed",
        );
        says(
            json!({ "summary": "" }),
            "summary",
            "is empty: write at least 10 characters",
        );
        says(
            json!({ "summary": "far too long for this small box" }),
            "summary",
            "is too long: 31 characters written, at most 20 allowed; shorten it",
        );
        says(
            json!({ "owner": "" }),
            "owner",
            "is empty: give a user id from the directory, like `li.wei`",
        );
        says(
            json!({ "owner": "Li Wei" }),
            "owner",
            "is not an id from the directory: ids are lower-case letters, digits, `_`, `-` and `.`, like `li.wei`",
        );
    }

    #[test]
    fn lists_and_nested_fields() {
        says(
            json!({ "tags": [] }),
            "tags",
            "lists 0 items, but at least 1 is needed",
        );
        says(
            json!({ "tags": ["a", "b", "c"] }),
            "tags",
            "lists 3 items, but at most 2 are allowed",
        );
        says(
            json!({ "tags": ["a", 7] }),
            "tags/1",
            "`7` is a number, but this field takes text",
        );
        says(
            json!({ "parts": [{ "quantity": "two" }] }),
            "parts/0/quantity",
            "`two` is text, but this field takes a whole number",
        );
        says(
            json!({ "parts": [{ "colour": "red" }] }),
            "parts/0/colour",
            "is not a field of this form",
        );
    }

    #[test]
    fn dates_say_how_to_write_them() {
        says(
            json!({ "due_on": "31/03/2026" }),
            "due_on",
            "`31/03/2026` is not a date: write it like 2026-03-31",
        );
        says(
            json!({ "called_at": "2026-03-31 14:00" }),
            "called_at",
            "`2026-03-31 14:00` is not a date and time: write it like 2026-03-31T14:00:00Z, \
             with the time zone (Z for UTC, or an offset like +08:00)",
        );
        assert!(problems(
            json!({ "due_on": "2026-03-31", "called_at": "2026-03-31T14:00:00+08:00" })
        )
        .is_empty());
    }

    #[test]
    fn no_message_uses_the_validators_words() {
        let all = problems(json!({
            "channel": "pigeon", "count": "x", "score": 1000, "urgent": 1, "summary": "",
            "owner": "", "due_on": "soon", "called_at": "later", "tags": [],
            "parts": [{ "quantity": 1.5 }], "extra": true,
        }));
        assert_eq!(all.len(), 11, "{all:?}");
        let long = "y".repeat(500);
        let all: Vec<_> = all
            .into_iter()
            .chain(problems(json!({ "channel": long })))
            .collect();
        for (field, message) in &all {
            for crate_words in [
                "is not of type",
                "is not one of \"",
                "candidates",
                "schema",
                "is less than the minimum",
                "is greater than the maximum",
                "is not a \"",
                "shorter than",
                "longer than",
                "has less than",
                "has more than",
            ] {
                assert!(!message.contains(crate_words), "{field}: {message}");
            }
            assert!(
                message.len() < 200,
                "{field}: a long value is cut: {message}"
            );
        }
    }

    #[test]
    fn the_form_schema_carries_titles_and_descriptions_nested_too() {
        let (fields, _) = form();
        let s = form_schema(&fields);
        assert_eq!(s["properties"]["channel"]["title"], "Received through");
        assert_eq!(s["properties"]["parts"]["title"], "Spare parts");
        let quantity = &s["properties"]["parts"]["items"]["properties"]["quantity"];
        assert_eq!(quantity["title"], "Quantity");
        assert_eq!(quantity["description"], "How many were used");
        assert!(s["properties"]["count"].get("title").is_none());
    }
}
