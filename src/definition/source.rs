//! The spanned document: a TOML file parsed with `toml::de::DeTable` (which keeps byte spans),
//! turned into a `serde_json::Value` for schema validation and typed deserialisation, plus an
//! index from JSON Pointer to the source spans of each key and value.
//!
//! This is what lets every later check — schema, semantics, graph — point at a line and
//! column. It must not judge the content: syntax errors are the only diagnostics it makes.

use std::collections::HashMap;
use std::ops::Range;

use serde_json::{Map, Number, Value};
use toml::de::{DeTable, DeValue};

use super::diagnostic::Diagnostic;

/// Spans of one node of the document.
#[derive(Debug, Clone, Default)]
struct Node {
    key: Option<Range<usize>>,
    value: Range<usize>,
}

/// A parsed file: its JSON form and where each part of it was written.
#[derive(Debug, Clone)]
pub struct SpannedDoc {
    pub value: Value,
    index: HashMap<String, Node>,
    len: usize,
    source: String,
}

/// Escapes one JSON Pointer segment (RFC 6901).
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Builds a JSON Pointer from segments: `ptr(&["steps", "review", "next"])`.
pub fn ptr<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.push_str(&escape(s.as_ref()));
    }
    out
}

impl SpannedDoc {
    /// Parses TOML. On syntax errors returns every error the recovering parser found.
    pub fn parse(source: &str) -> Result<SpannedDoc, Vec<Diagnostic>> {
        let (root, errors) = DeTable::parse_recoverable(source);
        if !errors.is_empty() {
            return Err(errors
                .into_iter()
                .map(|e| {
                    Diagnostic::error("toml-syntax", syntax_sentence(e.message()))
                        .at(e.span())
                        .label("here")
                        .help("this is not valid TOML; fix the syntax first, then the other checks run")
                })
                .collect());
        }
        let mut index = HashMap::new();
        let root_span = 0..source.len();
        index.insert(
            String::new(),
            Node {
                key: None,
                value: root_span,
            },
        );
        let value = table_to_json(root.get_ref(), "", &mut index);
        Ok(SpannedDoc {
            value,
            index,
            len: source.len(),
            source: source.to_string(),
        })
    }

    /// The text the document was parsed from.
    pub fn source_text(&self) -> &str {
        &self.source
    }

    /// Span of the value at `pointer`, or of its nearest ancestor that exists.
    pub fn value_span(&self, pointer: &str) -> Option<Range<usize>> {
        self.nearest(pointer).map(|n| n.value.clone())
    }

    /// Span of the key naming the node at `pointer` (falls back to its value, then ancestors).
    pub fn key_span(&self, pointer: &str) -> Option<Range<usize>> {
        self.nearest(pointer)
            .map(|n| n.key.clone().unwrap_or_else(|| n.value.clone()))
    }

    /// Span of the first key written at the top level of the file, if any.
    pub fn first_key_span(&self) -> Option<Range<usize>> {
        self.value
            .as_object()
            .and_then(|m| m.keys().next())
            .and_then(|k| self.index.get(&format!("/{}", escape(k))))
            .and_then(|n| n.key.clone())
    }

    /// Whether `pointer` names a node written in the file (not inherited from an ancestor).
    pub fn contains(&self, pointer: &str) -> bool {
        self.index.contains_key(pointer)
    }

    fn nearest(&self, pointer: &str) -> Option<&Node> {
        let mut p = pointer;
        loop {
            if let Some(n) = self.index.get(p) {
                // The root spans the whole file: pointing at it says nothing useful.
                if p.is_empty() {
                    return Some(n).filter(|_| self.len > 0).map(|_| &self.index[""]);
                }
                return Some(n);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }
}

/// toml's messages are terse ("invalid key"); say what a person should look at.
fn syntax_sentence(message: &str) -> String {
    let m = message.trim();
    let m = m.strip_prefix("TOML parse error").unwrap_or(m).trim();
    if m.contains("duplicate key") {
        format!("{m}: each key (and each `[steps.NAME]` table) may be written only once")
    } else {
        format!("the file is not valid TOML: {m}")
    }
}

fn table_to_json(table: &DeTable<'_>, at: &str, index: &mut HashMap<String, Node>) -> Value {
    let mut map = Map::new();
    for (k, v) in table.iter() {
        let key: &str = k.get_ref();
        let p = format!("{at}/{}", escape(key));
        index.insert(
            p.clone(),
            Node {
                key: Some(k.span()),
                value: v.span(),
            },
        );
        map.insert(key.to_string(), value_to_json(v.get_ref(), &p, index));
    }
    Value::Object(map)
}

fn value_to_json(v: &DeValue<'_>, at: &str, index: &mut HashMap<String, Node>) -> Value {
    match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .map(|n| Value::Number(n.into()))
            // Out of i64 range: keep the text so the schema reports a type error, not a panic.
            .unwrap_or_else(|_| Value::String(i.as_str().to_string())),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.as_str().to_string())),
        DeValue::Boolean(b) => Value::Bool(*b),
        // Dates travel as their TOML text; the schema's `format` and our checks read them.
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let p = format!("{at}/{i}");
                    index.insert(
                        p.clone(),
                        Node {
                            key: None,
                            value: item.span(),
                        },
                    );
                    value_to_json(item.get_ref(), &p, index)
                })
                .collect(),
        ),
        DeValue::Table(t) => table_to_json(t, at, index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_and_values_of_header_tables_and_arrays() {
        let src = "id = \"x\"\n[steps.review]\nrole = \"sales\"\nnext = [ { to = \"end\" } ]\n";
        let doc = SpannedDoc::parse(src).unwrap();
        assert_eq!(doc.value["steps"]["review"]["role"], "sales");
        let role = doc.value_span("/steps/review/role").unwrap();
        assert_eq!(&src[role], "\"sales\"");
        let key = doc.key_span("/steps/review/role").unwrap();
        assert_eq!(&src[key], "role");
        let to = doc.value_span("/steps/review/next/0/to").unwrap();
        assert_eq!(&src[to], "\"end\"");
        // missing child falls back to its parent
        let missing = doc.value_span("/steps/review/next/0/when").unwrap();
        assert!(src[missing].contains("to = \"end\""));
        let header = doc.key_span("/steps/review").unwrap();
        assert_eq!(&src[header], "review");
    }

    #[test]
    fn reports_every_syntax_error_with_a_span() {
        let errs = SpannedDoc::parse("a = \nb = [1,\n").unwrap_err();
        assert!(!errs.is_empty());
        assert!(errs
            .iter()
            .all(|d| d.code == "toml-syntax" && d.span.is_some()));
    }

    #[test]
    fn escapes_pointer_segments() {
        assert_eq!(ptr(&["a/b", "c~d"]), "/a~1b/c~0d");
    }
}
