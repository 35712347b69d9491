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
use chrono::{DateTime, NaiveDate, Utc};
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
    /// For each join step, how many branches its parallel step starts.
    pub join_width: HashMap<String, usize>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("procedure {procedure}: {what}")]
    Invalid { procedure: String, what: String },
}

/// A compiled form: rejects unknown fields, checks types, required fields, choices, ranges.
pub struct FormValidator {
    validator: jsonschema::Validator,
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
        Ok(FormValidator { validator })
    }

    /// Every problem of `values`, in a stable order. Empty means valid.
    pub fn check(&self, values: &Map<String, Value>) -> Vec<FieldProblem> {
        let instance = Value::Object(values.clone());
        let mut out: Vec<FieldProblem> = self
            .validator
            .iter_errors(&instance)
            .flat_map(|e| {
                let path = e.instance_path().to_string();
                let path = path.trim_start_matches('/').to_string();
                match e.kind() {
                    jsonschema::error::ValidationErrorKind::Required { property } => {
                        vec![FieldProblem {
                            field: join_path(&path, property.as_str().unwrap_or_default()),
                            message: "is required".into(),
                        }]
                    }
                    jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                        unexpected
                            .iter()
                            .map(|u| FieldProblem {
                                field: join_path(&path, u),
                                message: "is not a field of this form".into(),
                            })
                            .collect()
                    }
                    jsonschema::error::ValidationErrorKind::Pattern { .. } => vec![FieldProblem {
                        field: path,
                        message: "is not an id from the directory: ids are lower-case letters, digits, `_`, `-` and `.`, like `li.wei`".into(),
                    }],
                    _ => vec![FieldProblem {
                        field: path,
                        message: e.to_string(),
                    }],
                }
            })
            .collect();
        out.sort_by(|a, b| a.field.cmp(&b.field).then(a.message.cmp(&b.message)));
        out.dedup();
        out
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

impl CompiledProcedure {
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
            steps.insert(
                id.clone(),
                CompiledStep {
                    form,
                    guards,
                    compute,
                    input,
                },
            );
        }
        let start_form =
            FormValidator::new(&def.data).map_err(|e| invalid(format!("start data: {e}")))?;
        let mut join_width = HashMap::new();
        for step in def.steps.values() {
            if let Some(j) = &step.join {
                join_width.insert(j.clone(), step.branches.len());
            }
        }
        Ok(CompiledProcedure {
            def,
            hash,
            fields,
            steps,
            start_form,
            join_width,
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
    pub fn coerce(&self, name: &str, value: Value) -> Value {
        let Some(field) = self.fields.get(name) else {
            return value;
        };
        coerce_to(field, value)
    }

    /// Instance data as CEL variables: every declared field bound (to null when unset, so a
    /// condition on a field not filled in yet is a clear error, not an unknown name), with
    /// dates as timestamps.
    pub fn bind(&self, ctx: &mut cel::Context<'_, '_>, data: &Map<String, Value>) {
        let mut all = HashMap::new();
        for (name, field) in &self.fields {
            let v = data.get(name).map_or(Cel::Null, |v| to_cel(v, Some(field)));
            all.insert(Key::String(Arc::new(name.clone())), v.clone());
            ctx.add_variable_from_value(name.clone(), v);
        }
        for (name, v) in data {
            if !self.fields.contains_key(name) {
                all.insert(Key::String(Arc::new(name.clone())), to_cel(v, None));
            }
        }
        ctx.add_variable_from_value("data", Cel::Map(all.into()));
    }
}

fn coerce_to(field: &Field, value: Value) -> Value {
    match (field.ty, value) {
        (FieldType::Date, Value::String(s)) => match parse_instant(&s) {
            Some(t) => Value::String(t.date_naive().format("%Y-%m-%d").to_string()),
            None => Value::String(s),
        },
        (FieldType::Integer, Value::Number(n)) => match n.as_f64() {
            Some(f) if n.as_i64().is_none() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                json!(f as i64)
            }
            _ => Value::Number(n),
        },
        (FieldType::List, Value::Array(items)) => match field.items.as_deref() {
            Some(item) => Value::Array(items.into_iter().map(|v| coerce_to(item, v)).collect()),
            None => Value::Array(items),
        },
        (FieldType::Object, Value::Object(m)) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match field.fields.get(&k) {
                        Some(f) => coerce_to(f, v),
                        None => v,
                    };
                    (k, v)
                })
                .collect(),
        ),
        (_, v) => v,
    }
}

/// JSON → CEL, typed by the declared field when known (date strings become timestamps).
pub fn to_cel(v: &Value, field: Option<&Field>) -> Cel {
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
            Some(FieldType::Date) | Some(FieldType::Datetime) => match parse_instant(s) {
                Some(t) => Cel::Timestamp(t.fixed_offset()),
                None => Cel::String(Arc::new(s.clone())),
            },
            _ => Cel::String(Arc::new(s.clone())),
        },
        Value::Array(items) => {
            let item_field = field.and_then(|f| f.items.as_deref());
            Cel::List(Arc::new(
                items.iter().map(|i| to_cel(i, item_field)).collect(),
            ))
        }
        Value::Object(m) => {
            let map: HashMap<Key, Cel> = m
                .iter()
                .map(|(k, v)| {
                    let sub = field.and_then(|f| f.fields.get(k));
                    (Key::String(Arc::new(k.clone())), to_cel(v, sub))
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

/// A date (`2027-01-31`, start of day UTC) or an RFC 3339 instant.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}
