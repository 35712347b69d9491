//! Register files (`registers/<id>.toml`): small keyed reference records that procedures
//! keep and read — the customer's rating, the warranty of each unit. A file declares the
//! register's fields and seeds its first entries; procedures change entries afterwards
//! (`writes` on a step), each change an event of the writing instance's history.
//!
//! This module reads and checks the files (schema, fields, entries against the fields); it
//! must not hold the registers' current state, which is the engine's (`engine/registers.rs`).

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::diagnostic::Diagnostic;
use super::model::{Field, FieldType};
use super::source::{ptr, SpannedDoc};

/// A register: keyed entries with the same fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sopflow register")]
pub struct RegisterFile {
    /// Identifier, as procedures name it (`register.customers[customer].rating`): lower-case
    /// letters, digits and `_`; the file is `registers/<id>.toml`.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"), length(max = 64))]
    pub id: String,

    /// Human title ("Customer ratings").
    #[schemars(length(min = 1))]
    pub title: String,

    /// What the register holds and who keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// The company document that defines these records (file and clause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,

    /// What an entry's key is, in words ("Customer", "Serial number").
    #[schemars(length(min = 1))]
    pub key: String,

    /// The fields of every entry, like a form's (`rating = { type = "string", enum = […] }`).
    pub fields: IndexMap<String, Field>,

    /// The entries the register starts with, each with its `key` and field values. Procedures
    /// change them later; a change is recorded in the history of the instance that made it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<Map<String, Value>>,
}

impl RegisterFile {
    /// The seeded entries by key, without the `key` member.
    pub fn seeded(&self) -> Vec<(String, Map<String, Value>)> {
        self.entries
            .iter()
            .filter_map(|e| {
                let key = e.get("key")?.as_str()?.to_string();
                let mut values = e.clone();
                values.remove("key");
                Some((key, values))
            })
            .collect()
    }
}

/// The field types a register may hold: single values (a register is a lookup table, not a
/// document store).
const PLAIN: &[FieldType] = &[
    FieldType::String,
    FieldType::Text,
    FieldType::Integer,
    FieldType::Number,
    FieldType::Boolean,
    FieldType::Date,
    FieldType::Datetime,
    FieldType::User,
    FieldType::Department,
];

/// Checks a register file that passed the schema: its id matches the file name, its fields
/// are plain and named well, and every seeded entry has a unique key and values that fit
/// the fields. Never panics; reports every problem.
pub fn check(reg: &RegisterFile, doc: &SpannedDoc, stem: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if reg.id != stem {
        out.push(
            Diagnostic::error(
                "id-mismatch",
                format!(
                    "the register id is `{}` but the file is named `{stem}.toml`",
                    reg.id
                ),
            )
            .at(doc.value_span(&ptr(&["id"])))
            .help(format!(
                "name the file `{}.toml` or set `id = \"{stem}\"`",
                reg.id
            )),
        );
    }
    for (name, f) in &reg.fields {
        if name == "key" {
            out.push(
                Diagnostic::error("reserved-name", "a register field may not be called `key`")
                    .at(doc.key_span(&ptr(&["fields", name])))
                    .help("the entry's key is given by `key`; call the field something else"),
            );
        }
        if !PLAIN.contains(&f.ty) {
            out.push(
                Diagnostic::error(
                    "wrong-field-type",
                    format!("the register field `{name}` is a list or an object; a register holds single values"),
                )
                .at(doc.value_span(&ptr(&["fields", name, "type"])))
                .help("keep lists in the procedures' data; a register entry is one record"),
            );
        }
    }
    let validator = crate::engine::compiled::FormValidator::for_fields(&reg.fields);
    let mut seen = std::collections::HashSet::new();
    for (i, e) in reg.entries.iter().enumerate() {
        let idx = i.to_string();
        let at = doc.value_span(&ptr(&["entries", &idx]));
        let Some(key) = e
            .get("key")
            .and_then(Value::as_str)
            .filter(|k| !k.trim().is_empty())
        else {
            out.push(
                Diagnostic::error("missing-key", format!("entry {} has no `key`", i + 1))
                    .at(at)
                    .help(format!(
                        "give each entry its key: `key = \"…\"` ({})",
                        reg.key
                    )),
            );
            continue;
        };
        if !seen.insert(key.to_string()) {
            out.push(
                Diagnostic::error("duplicate-id", format!("the key `{key}` is seeded twice"))
                    .at(doc.value_span(&ptr(&["entries", &idx, "key"])))
                    .help("each key has one entry; merge the two"),
            );
        }
        let mut values = e.clone();
        values.remove("key");
        let Some(validator) = &validator else {
            continue;
        };
        for p in validator.check(&values) {
            let top = p.field.split('/').next().unwrap_or_default().to_string();
            let span = doc
                .value_span(&ptr(&["entries", &idx, &top]))
                .or_else(|| at.clone());
            out.push(
                Diagnostic::error(
                    "bad-entry",
                    if p.field.is_empty() {
                        format!("entry `{key}`: {}", p.message)
                    } else {
                        format!("entry `{key}`, field `{}`: {}", p.field, p.message)
                    },
                )
                .at(span),
            );
        }
    }
    out
}
