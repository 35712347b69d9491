//! The JSON Schemas of sopflow's files, generated from the Rust types, and the second
//! validation layer: checking a parsed file against its schema and turning each violation
//! into a sentence located at a line and column.
//!
//! The schema is Draft-07 because that is what Taplo (Even Better TOML) understands; it is
//! checked in under `schemas/` and a test keeps it in sync. This module must not check
//! meaning (references, graph): a file that passes here is well-formed, not necessarily sound.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use schemars::JsonSchema;
use serde_json::{json, Value};

use super::diagnostic::{did_you_mean, Diagnostic};
use super::source::{escape, SpannedDoc};

/// The Draft-07 schema of `T`, post-processed for TOML and for editors.
pub fn schema_for<T: JsonSchema>() -> Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut value = schema.to_value();
    tidy(&mut value);
    value
}

/// The procedure schema, as checked in at `schemas/procedure.schema.json`.
pub fn procedure_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(schema_for::<super::model::Procedure>)
}

/// The calendar schema, as checked in at `schemas/calendar.schema.json`.
pub fn calendar_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(schema_for::<super::calendar::CalendarFile>)
}

/// The register schema, as checked in at `schemas/register.schema.json`.
pub fn register_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(schema_for::<super::register::RegisterFile>)
}

/// Pretty JSON with a trailing newline: the exact bytes of the checked-in files.
pub fn to_file_text(schema: &Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}

/// Rewrites what schemars emits into what suits TOML files and editors:
/// - TOML has no null, so `Option<T>` is just `T` (no `"null"` type, no `anyOf [T, null]`);
/// - an enum of documented variants (`oneOf` of `const`s) becomes a plain `enum`, whose
///   violation reads "must be one of …" instead of "not valid under any of the schemas",
///   with the variant docs kept for Taplo in `x-taplo.docs.enumValues`;
/// - Rust's numeric formats (`uint32`, `double`) mean nothing to other validators.
fn tidy(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for child in map.values_mut() {
                tidy(child);
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(alts)) = map.get("anyOf") {
                let non_null: Vec<Value> = alts
                    .iter()
                    .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                    .cloned()
                    .collect();
                if non_null.len() == 1 && alts.len() == 2 {
                    map.remove("anyOf");
                    if let Value::Object(inner) = &non_null[0] {
                        for (k, val) in inner {
                            map.entry(k.clone()).or_insert_with(|| val.clone());
                        }
                    }
                }
            }
            if let Some(Value::Array(alts)) = map.get("oneOf") {
                let consts: Option<Vec<(Value, Value)>> = alts
                    .iter()
                    .map(|a| {
                        a.get("const").map(|c| {
                            (
                                c.clone(),
                                a.get("description").cloned().unwrap_or(Value::Null),
                            )
                        })
                    })
                    .collect();
                if let Some(consts) = consts {
                    map.remove("oneOf");
                    map.insert("type".into(), json!("string"));
                    map.insert(
                        "enum".into(),
                        Value::Array(consts.iter().map(|(c, _)| c.clone()).collect()),
                    );
                    map.insert(
                        "x-taplo".into(),
                        json!({ "docs": { "enumValues": consts.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>() } }),
                    );
                }
            }
            if let Some(Value::String(f)) = map.get("format") {
                if f.starts_with("int") || f.starts_with("uint") || f == "double" || f == "float" {
                    map.remove("format");
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// Validates `doc` against `schema` and reports every violation, located and worded for a
/// process owner.
pub fn check(
    doc: &SpannedDoc,
    schema: &'static Value,
    validator: &jsonschema::Validator,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for err in validator.iter_errors(&doc.value) {
        let pointer = pointer_of(err.instance_path().segments());
        let schema_node = schema_at(schema, err.schema_path().segments());
        out.extend(explain(
            doc,
            schema,
            &pointer,
            schema_node,
            err.kind(),
            err.instance(),
        ));
    }
    out
}

/// One schema violation, by what it takes to leave it out of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The object at `at` has keys the schema does not allow; each with the allowed key it
    /// most resembles (what the author probably meant), if any.
    UnknownKeys {
        at: String,
        keys: Vec<(String, Option<String>)>,
    },
    /// The object at `at` lacks the required `key`.
    Missing { at: String, key: String },
    /// The value at `at` is not allowed (wrong type, not a choice, out of range…).
    Invalid { at: String },
}

/// The violations of `value` against `schema`, for pruning a document down to what can be
/// read (`partial.rs`); `check` words the same violations for people.
pub fn violations(
    value: &Value,
    schema: &'static Value,
    validator: &jsonschema::Validator,
) -> Vec<Violation> {
    validator
        .iter_errors(value)
        .map(|err| {
            let at = pointer_of(err.instance_path().segments());
            match err.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let allowed = allowed_keys(schema_at(schema, err.schema_path().segments()));
                    let keys = unexpected
                        .iter()
                        .map(|k| {
                            let meant = did_you_mean(k, allowed.iter().map(String::as_str));
                            (k.clone(), meant.map(str::to_string))
                        })
                        .collect();
                    Violation::UnknownKeys { at, keys }
                }
                ValidationErrorKind::Required { property } => Violation::Missing {
                    at,
                    key: property.as_str().unwrap_or_default().to_string(),
                },
                _ => Violation::Invalid { at },
            }
        })
        .collect()
}

/// A compiled Draft-07 validator for one of our schemas.
pub fn validator(schema: &'static Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(schema)
        .map_err(|e| e.to_string())
}

pub fn procedure_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    // The schema is generated from our own types: failing to compile it is a bug in this
    // crate, caught by the schema tests, not something input can cause.
    V.get_or_init(|| validator(procedure_schema()).expect("procedure schema compiles"))
}

pub fn calendar_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| validator(calendar_schema()).expect("calendar schema compiles"))
}

pub fn register_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| validator(register_schema()).expect("register schema compiles"))
}

fn pointer_of<'a>(segments: impl Iterator<Item = LocationSegment<'a>>) -> String {
    let mut p = String::new();
    for s in segments {
        p.push('/');
        match s {
            LocationSegment::Property(name) => p.push_str(&escape(&name)),
            LocationSegment::Index(i) => p.push_str(&i.to_string()),
        }
    }
    p
}

/// The schema object whose keyword failed (the parent of the keyword in the schema path),
/// following `$ref`s so we can list the keys it allows.
fn schema_at<'a>(
    root: &'a Value,
    segments: impl Iterator<Item = LocationSegment<'a>>,
) -> Option<&'a Value> {
    let segs: Vec<LocationSegment<'a>> = segments.collect();
    let mut node = root;
    // Drop the failing keyword itself: we want the object that holds it.
    for seg in segs.iter().take(segs.len().saturating_sub(1)) {
        node = deref(root, node);
        node = match seg {
            LocationSegment::Property(name) => node.get(name.as_ref())?,
            LocationSegment::Index(i) => node.get(*i)?,
        };
    }
    Some(deref(root, node))
}

fn deref<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..8 {
        match node.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => node = target,
                None => return node,
            },
            None => return node,
        }
    }
    node
}

/// "step `register`", "transition 2 of step `register`", "the form field `severity` of step
/// `register`": where in the procedure a pointer lands, in the words of the file.
pub fn describe(pointer: &str) -> String {
    let segs: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        [] => "the procedure".into(),
        ["steps", step] => format!("step `{step}`"),
        ["steps", step, "next", i, ..] => {
            format!(
                "transition {} of step `{step}`",
                i.parse::<usize>().map_or(0, |n| n + 1)
            )
        }
        ["steps", step, "form", field, ..] => format!("form field `{field}` of step `{step}`"),
        ["steps", step, "deadline", "on_breach", i, ..] => format!(
            "breach action {} of step `{step}`",
            i.parse::<usize>().map_or(0, |n| n + 1)
        ),
        ["steps", step, "deadline", ..] => format!("the deadline of step `{step}`"),
        ["steps", step, section, ..] => format!("`{section}` of step `{step}`"),
        ["data", field, ..] => format!("data field `{field}`"),
        ["roles", ..] => "`roles`".into(),
        ["schedule", ..] => "`schedule`".into(),
        ["holidays", i, ..] => format!("holiday {}", i.parse::<usize>().map_or(0, |n| n + 1)),
        [first, ..] => format!("`{first}`"),
    }
}

fn last_key(pointer: &str) -> String {
    pointer
        .rsplit('/')
        .next()
        .unwrap_or("")
        .replace("~1", "/")
        .replace("~0", "~")
}

/// What a person calls each JSON type when writing TOML.
fn type_words(t: &str) -> &'static str {
    match t {
        "string" => "text in quotes",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "`true` or `false`",
        "array" => "a list in `[ ]`",
        "object" => "a table",
        _ => "a value",
    }
}

fn found_words(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the text \"{}\"", truncate(s)),
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("`{b}`"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a table".into(),
        Value::Null => "nothing".into(),
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

fn allowed_keys(schema_node: Option<&Value>) -> Vec<String> {
    schema_node
        .and_then(|n| n.get("properties"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn explain(
    doc: &SpannedDoc,
    root: &Value,
    pointer: &str,
    schema_node: Option<&Value>,
    kind: &ValidationErrorKind,
    instance: &Value,
) -> Vec<Diagnostic> {
    let place = describe(pointer);
    match kind {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = allowed_keys(schema_node);
            unexpected
                .iter()
                .map(|key| {
                    let p = format!("{pointer}/{}", escape(key));
                    let d = Diagnostic::error("unknown-key", format!("{place} has an unknown key `{key}`"))
                        .at(doc.key_span(&p))
                        .label("not a key sopflow knows here");
                    let hint = did_you_mean(key, allowed.iter().map(String::as_str));
                    match hint {
                        Some(h) => d.help(format!("did you mean `{h}`?")),
                        None if !allowed.is_empty() => d.help(format!(
                            "the keys allowed here are: {}",
                            allowed.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                        )),
                        None => d,
                    }
                })
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let key = property.as_str().unwrap_or_default();
            let description = schema_node
                .and_then(|n| n.pointer(&format!("/properties/{}", escape(key))))
                .map(|p| deref(root, p))
                .and_then(|p| p.get("description"))
                .and_then(Value::as_str)
                .map(first_sentence);
            // For the file itself, point at its first key rather than at line 1, which is
            // usually the `#:schema` comment; a file with no keys at all (empty, or only
            // comments) gets the start of the file, so the error is still located.
            let at = if pointer.is_empty() {
                doc.first_key_span().or(Some(0..0))
            } else {
                doc.key_span(pointer).or_else(|| doc.value_span(pointer))
            };
            let d = Diagnostic::error("missing-key", format!("{place} is missing the required key `{key}`"))
                .at(at)
                .label(format!("add `{key} = …` here"));
            vec![match description {
                Some(desc) => d.help(format!("`{key}`: {desc}")),
                None => d,
            }]
        }
        ValidationErrorKind::Type { kind } => {
            let expected: Vec<&str> = match kind {
                jsonschema::error::TypeKind::Single(t) => vec![type_words(&t.to_string())],
                jsonschema::error::TypeKind::Multiple(ts) => {
                    ts.iter().map(|t| type_words(&t.to_string())).collect()
                }
            };
            let d = Diagnostic::error(
                "wrong-type",
                format!("{} must be {}, not {}", what(pointer, &place), expected.join(" or "), found_words(instance)),
            )
            .at(doc.value_span(pointer))
            .label(format!("expected {}", expected.join(" or ")));
            vec![match list_hint(&last_key(pointer), expected.as_slice(), instance) {
                Some(h) => d.help(h),
                None => d,
            }]
        }
        ValidationErrorKind::Enum { options } => {
            let choices: Vec<&str> = options
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let found = instance.as_str().unwrap_or_default();
            vec![Diagnostic::error(
                "not-a-choice",
                format!(
                    "{} must be one of {}, not {}",
                    what(pointer, &place),
                    choices.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "),
                    found_words(instance)
                ),
            )
            .at(doc.value_span(pointer))
            .label("not one of the allowed values")
            .suggest(found, choices.iter().copied())]
        }
        ValidationErrorKind::Pattern { .. } if last_key(pointer) == "id" => vec![Diagnostic::error(
            "bad-id",
            format!("the id \"{}\" is not allowed", instance.as_str().unwrap_or_default()),
        )
        .at(doc.value_span(pointer))
        .help("use lower-case letters, digits and `-`, starting with a letter, like `complaint-handling`")],
        ValidationErrorKind::Minimum { limit } | ValidationErrorKind::ExclusiveMinimum { limit } => {
            vec![Diagnostic::error(
                "out-of-range",
                format!("{} must be at least {limit}, not {}", what(pointer, &place), found_words(instance)),
            )
            .at(doc.value_span(pointer))]
        }
        ValidationErrorKind::MinLength { .. } => vec![Diagnostic::error(
            "empty-value",
            format!("{} must not be empty", what(pointer, &place)),
        )
        .at(doc.value_span(pointer))],
        other => vec![Diagnostic::error(
            "schema",
            format!("{}: {}", what(pointer, &place), plain_kind(other)),
        )
        .at(doc.value_span(pointer))],
    }
}

/// The usual way to write a list where a single value was given.
fn list_hint(key: &str, expected: &[&str], found: &Value) -> Option<String> {
    if expected != [type_words("array")] {
        return None;
    }
    Some(match (key, found) {
        ("next", Value::String(s)) => format!("write `next = [{{ to = \"{s}\" }}]`"),
        (_, Value::String(s)) => format!("write `{key} = [\"{s}\"]`"),
        (_, Value::Object(_)) => format!("put the table in a list: `{key} = [{{ … }}]`; add more tables to the list for more entries"),
        _ => format!("write a list: `{key} = [ … ]`"),
    })
}

/// "`version`", or "`due` in the deadline of step `x`".
fn what(pointer: &str, place: &str) -> String {
    let key = last_key(pointer);
    if key.is_empty() {
        return "the file".into();
    }
    if key.parse::<usize>().is_ok() || place.contains(&format!("`{key}`")) {
        return place.to_string();
    }
    if place == "the procedure" {
        format!("`{key}`")
    } else {
        format!("`{key}` in {place}")
    }
}

fn first_sentence(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.find(". ") {
        Some(i) => one_line[..=i].to_string(),
        None => one_line,
    }
}

fn plain_kind(kind: &ValidationErrorKind) -> String {
    match kind {
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}"),
        ValidationErrorKind::MaxLength { limit } => {
            format!("must be at most {limit} characters long")
        }
        ValidationErrorKind::MinItems { limit } => format!("needs at least {limit} entries"),
        ValidationErrorKind::MaxItems { limit } => format!("may have at most {limit} entries"),
        ValidationErrorKind::Pattern { pattern } => {
            format!("does not have the expected form ({pattern})")
        }
        ValidationErrorKind::Format { format } => format!("must be a valid {format}"),
        ValidationErrorKind::UniqueItems => "lists the same entry twice".into(),
        _ => "is not valid here".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing_keys(src: &str) -> Vec<Diagnostic> {
        let doc = SpannedDoc::parse(src).expect("valid TOML");
        check(&doc, procedure_schema(), procedure_validator())
            .into_iter()
            .filter(|d| d.code == "missing-key")
            .collect()
    }

    // Found by `cargo fuzz run loader`: an empty file (or one with only comments) has no
    // first key, and its missing-key errors had no span.
    #[test]
    fn missing_keys_of_a_file_without_keys_are_located_at_its_start() {
        for src in [
            "",
            "#:schema ../schemas/procedure.schema.json\n# nothing yet\n",
        ] {
            let errs = missing_keys(src);
            assert!(!errs.is_empty(), "{src:?}");
            assert!(
                errs.iter().all(|d| d.span == Some(0..0)),
                "{src:?}: {errs:?}"
            );
        }
    }

    #[test]
    fn missing_keys_of_the_file_point_at_its_first_key() {
        let src = "# a comment\ntitle = \"x\"\n";
        let errs = missing_keys(src);
        assert!(!errs.is_empty());
        for d in errs {
            assert_eq!(&src[d.span.clone().expect("located")], "title", "{d:?}");
        }
    }
}
