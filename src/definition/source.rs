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

/// The segments of a JSON Pointer, unescaped: the inverse of [`ptr`].
pub fn unescape(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
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
            let mut unspanned = Unspanned::new(source);
            return Err(errors
                .into_iter()
                .map(|e| {
                    let span = e.span().unwrap_or_else(|| unspanned.locate(e.message()));
                    Diagnostic::error("toml-syntax", syntax_sentence(e.message()))
                        .at(Some(span))
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

    /// The pointer of the innermost node written at byte `offset` (its key or its value
    /// contains it), for telling which part of the file a diagnostic is about.
    pub fn pointer_at(&self, offset: usize) -> Option<&str> {
        self.index
            .iter()
            .filter(|(p, _)| !p.is_empty())
            .filter_map(|(p, n)| {
                [n.key.as_ref(), Some(&n.value)]
                    .into_iter()
                    .flatten()
                    .filter(|r| r.start <= offset && offset < r.end.max(r.start + 1))
                    .map(|r| r.end - r.start)
                    .min()
                    .map(|len| (len, p.as_str()))
            })
            .min()
            .map(|(_, p)| p)
    }

    /// Removes the node at `pointer` (and everything under it) from the document, as if it
    /// had not been written; later items of the same list move up one place, their spans
    /// still pointing where they were written. Returns the removed value with the spans of
    /// its key and value, or `None` when there is no such node (or it is the root).
    pub fn remove(&mut self, pointer: &str) -> Option<(Value, Vec<Range<usize>>)> {
        let segments = unescape(pointer);
        let (last, parent_segs) = segments.split_last()?;
        let mut parent = &mut self.value;
        for seg in parent_segs {
            parent = match parent {
                Value::Object(m) => m.get_mut(seg.as_str())?,
                Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        let parent_ptr = ptr(parent_segs);
        let (removed, shifted_from) = match parent {
            Value::Object(m) => (m.shift_remove(last.as_str())?, None),
            Value::Array(a) => {
                let i = last.parse::<usize>().ok().filter(|i| *i < a.len())?;
                (a.remove(i), Some(i))
            }
            _ => return None,
        };
        let spans = self
            .index
            .get(pointer)
            .map(|n| n.key.iter().cloned().chain([n.value.clone()]).collect())
            .unwrap_or_default();
        let below = format!("{pointer}/");
        self.index
            .retain(|p, _| p != pointer && !p.starts_with(&below));
        if let Some(i) = shifted_from {
            // Items after the removed one now answer to the index before theirs.
            let prefix = format!("{parent_ptr}/");
            let moved: Vec<String> = self
                .index
                .keys()
                .filter(|p| {
                    p.strip_prefix(&prefix)
                        .and_then(|rest| rest.split('/').next())
                        .and_then(|n| n.parse::<usize>().ok())
                        .is_some_and(|n| n > i)
                })
                .cloned()
                .collect();
            let mut renamed: Vec<(String, Node)> = Vec::new();
            for old in moved {
                if let Some(node) = self.index.remove(&old) {
                    let rest = &old[prefix.len()..];
                    let (n, tail) = rest.split_once('/').map_or((rest, ""), |(n, t)| (n, t));
                    let n = n.parse::<usize>().unwrap_or(1).saturating_sub(1);
                    let new = if tail.is_empty() {
                        format!("{prefix}{n}")
                    } else {
                        format!("{prefix}{n}/{tail}")
                    };
                    renamed.push((new, node));
                }
            }
            self.index.extend(renamed);
        }
        Some((removed, spans))
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

/// Places syntax errors the parser gave no span for. The toml crate reports one such error,
/// "recursion limit", for a key with more than 80 dotted parts. A key never spans lines, so
/// the lines that give the same error on their own are the places, taken in order (errors
/// come in document order). Failing that, the start of the file: such an error is then at
/// least located, never left unplaced.
struct Unspanned<'a> {
    source: &'a str,
    /// Spanless errors of each line parsed on its own, found on first need: one pass.
    found: Option<Vec<(String, Range<usize>)>>,
}

impl<'a> Unspanned<'a> {
    fn new(source: &'a str) -> Self {
        Unspanned {
            source,
            found: None,
        }
    }

    fn locate(&mut self, message: &str) -> Range<usize> {
        let source = self.source;
        let found = self.found.get_or_insert_with(|| {
            let mut found = Vec::new();
            let mut start = 0;
            for line in source.split_inclusive('\n') {
                let (_, errors) = DeTable::parse_recoverable(line);
                for e in errors.iter().filter(|e| e.span().is_none()) {
                    let text = line.trim_end_matches(['\n', '\r']);
                    let indent = text.len() - text.trim_start().len();
                    found.push((e.message().to_string(), start + indent..start + text.len()));
                }
                start += line.len();
            }
            found
        });
        match found.iter().position(|(m, _)| m == message) {
            Some(i) => found.remove(i).1,
            None => 0..0,
        }
    }
}

/// toml's messages are terse ("invalid key"); say what a person should look at.
fn syntax_sentence(message: &str) -> String {
    let m = message.trim();
    let m = m.strip_prefix("TOML parse error").unwrap_or(m).trim();
    if m == "recursion limit" {
        "the file is not valid TOML: this key has too many dotted parts (at most 80 are read)"
            .to_string()
    } else if m.contains("duplicate key") {
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

    // Found by `cargo fuzz run loader`: toml reports a key with too many dotted parts as
    // "recursion limit" without a span.
    #[test]
    fn locates_a_key_with_too_many_dotted_parts() {
        let long_key = vec!["a"; 200].join(".");
        for src in [
            format!("id = \"x\"\n  {long_key} = 1\ntitle = \"t\"\n"),
            format!("id = \"x\"\r\n[{long_key}]\r\n"),
            format!("id = \"x\"\nsteps = {{ {long_key} = 1 }}\n"),
            format!("# é\n{}\n", ".".repeat(100)),
        ] {
            let errs = SpannedDoc::parse(&src).unwrap_err();
            assert!(!errs.is_empty());
            for d in &errs {
                let span = d.span.clone().unwrap_or_else(|| panic!("unlocated {d:?}"));
                assert!(span.end <= src.len(), "{span:?} outside {src:?}");
            }
            let deep = errs
                .iter()
                .find(|d| d.message.contains("too many dotted parts"))
                .unwrap_or_else(|| panic!("no recursion-limit error in {errs:?}"));
            let at = &src[deep.span.clone().unwrap()];
            assert!(at.len() > 80 && !at.contains('\n'), "{at:?}");
        }
        // Two such keys (toml reports the first only): each error is at one of their lines.
        let src = format!("id = \"x\"\n{long_key} = 1\n{long_key}.b = 2\n");
        let lines = [format!("{long_key} = 1"), format!("{long_key}.b = 2")];
        for d in SpannedDoc::parse(&src).unwrap_err() {
            assert!(lines.contains(&src[d.span.unwrap()].to_string()));
        }
        // 80 parts are still read.
        let key = vec!["a"; 80].join(".");
        assert!(SpannedDoc::parse(&format!("{key} = 1\n")).is_ok());
    }

    #[test]
    fn removing_a_node_keeps_the_places_of_what_remains() {
        let src = "[steps.a]\nrole = \"r\"\nnext = [{ to = \"x\" }, { to = \"y\", when = \"w\" }, { to = \"z\" }]\n";
        let mut doc = SpannedDoc::parse(src).unwrap();
        let (removed, spans) = doc.remove("/steps/a/next/0").unwrap();
        assert_eq!(removed["to"], "x");
        assert_eq!(&src[spans[0].clone()], "{ to = \"x\" }");
        assert_eq!(doc.value["steps"]["a"]["next"][0]["to"], "y");
        // The second transition is now the first, still found where it was written.
        let when = doc.value_span("/steps/a/next/0/when").unwrap();
        assert_eq!(&src[when], "\"w\"");
        let z = doc.value_span("/steps/a/next/1/to").unwrap();
        assert_eq!(&src[z], "\"z\"");
        assert!(!doc.contains("/steps/a/next/2"));
        let (role, spans) = doc.remove("/steps/a/role").unwrap();
        assert_eq!(role, "r");
        assert_eq!(spans.len(), 2, "key and value");
        assert!(doc.value["steps"]["a"].get("role").is_none());
        assert!(doc.remove("/steps/a/role").is_none());
        assert!(doc.remove("").is_none());
        assert!(doc.remove("/nowhere/3").is_none());
    }

    #[test]
    fn finds_the_innermost_node_at_a_place() {
        let src = "id = \"x\"\n[steps.a]\nrole = \"r\"\n[steps.a.form.f]\ntype = \"string\"\n";
        let doc = SpannedDoc::parse(src).unwrap();
        let at = |needle: &str| {
            doc.pointer_at(src.find(needle).unwrap())
                .map(str::to_string)
        };
        assert_eq!(at("\"r\"").as_deref(), Some("/steps/a/role"));
        assert_eq!(at("a]").as_deref(), Some("/steps/a"));
        assert_eq!(at("\"string\"").as_deref(), Some("/steps/a/form/f/type"));
        assert_eq!(at("\"x\"").as_deref(), Some("/id"));
    }

    #[test]
    fn escapes_pointer_segments() {
        assert_eq!(ptr(&["a/b", "c~d"]), "/a~1b/c~0d");
        assert_eq!(unescape("/a~1b/c~0d"), ["a/b", "c~d"]);
    }
}
