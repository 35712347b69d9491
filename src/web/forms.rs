//! Step and start forms in the browser: each field of a procedure's form drawn as the input a
//! person expects (text, long text, number, check box, choice list, date, person or
//! department picker, lists of items with rows to add and remove), and the posted strings
//! read back into the values the engine checks.
//!
//! Reading back converts only what is unambiguous (a number that parses, a ticked box); a
//! value that does not convert is passed on as typed, so the engine's one form validator
//! refuses it with its own message. Nothing here decides whether a form is valid.

use chrono::{NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::definition::model::{Field, FieldType};
use crate::directory::Directory;
use crate::engine::compiled::FieldProblem;

/// Prefix of every form field's input name (`f.customer`), so they never meet `_csrf`,
/// `_outcome` and the other controls.
pub const PREFIX: &str = "f.";
/// Most rows a list may be given in the browser.
pub const MAX_ROWS: usize = 200;

/// One input as a template draws it.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// The input's `name` (`f.items.0.amount`).
    pub name: String,
    /// The element id (`f-items-0-amount`).
    pub id: String,
    pub label: String,
    pub help: String,
    /// `text`, `textarea`, `integer`, `number`, `checkbox`, `select`, `date`, `datetime`,
    /// `list`.
    pub kind: &'static str,
    pub value: String,
    pub checked: bool,
    pub required: bool,
    /// (value, label, selected)
    pub options: Vec<(String, String, bool)>,
    pub error: Option<String>,
    /// For a list: its rows, each a set of inputs, and the row's key for "Remove".
    pub rows: Vec<Row>,
    /// For a list: the posted name of the "Add" button's value.
    pub key: String,
}

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub key: String,
    pub cells: Vec<Input>,
}

/// Draws `fields` with `values` (what was typed, or the instance's data), showing each of
/// `problems` next to its field.
pub fn inputs(
    fields: &IndexMap<String, Field>,
    values: &Map<String, Value>,
    problems: &[FieldProblem],
    people: &Directory,
    zone: Tz,
) -> Vec<Input> {
    fields
        .iter()
        .map(|(name, f)| input(name, name, f, values.get(name), problems, people, zone))
        .collect()
}

fn input(
    path: &str,
    name: &str,
    f: &Field,
    value: Option<&Value>,
    problems: &[FieldProblem],
    people: &Directory,
    zone: Tz,
) -> Input {
    let error = problems
        .iter()
        .filter(|p| p.field == path)
        .map(|p| p.message.clone())
        .reduce(|a, b| format!("{a}; {b}"));
    let mut i = Input {
        name: format!("{PREFIX}{}", path.replace('/', ".")),
        id: format!("f-{}", path.replace(['/', '.'], "-")),
        label: f.title.clone().unwrap_or_else(|| super::view::words(name)),
        help: outcome_help(f),
        required: f.required,
        error,
        ..Input::default()
    };
    let text = || match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => super::view::value_text(other),
    };
    match f.ty {
        FieldType::String if !f.choices.is_empty() => {
            let current = text();
            i.kind = "select";
            i.options = choices(
                f.choices.iter().map(|c| (c.clone(), c.clone())),
                &current,
                f.required,
            );
        }
        FieldType::String => {
            i.kind = "text";
            i.value = text();
        }
        FieldType::Text => {
            i.kind = "textarea";
            i.value = text();
        }
        FieldType::Integer => {
            i.kind = "integer";
            i.value = text();
        }
        FieldType::Number => {
            i.kind = "number";
            i.value = text();
        }
        FieldType::Boolean => {
            i.kind = "checkbox";
            i.checked = matches!(value, Some(Value::Bool(true)));
        }
        FieldType::Date => {
            i.kind = "date";
            i.value = text();
        }
        FieldType::Datetime => {
            i.kind = "datetime";
            i.value = match value {
                Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&zone).format("%Y-%m-%dT%H:%M").to_string())
                    .unwrap_or_else(|_| s.clone()),
                _ => String::new(),
            };
        }
        FieldType::User => {
            let current = text();
            i.kind = "select";
            i.options = choices(
                people
                    .users()
                    .iter()
                    .filter(|u| u.active)
                    .map(|u| (u.id.clone(), format!("{} ({})", u.name, u.id))),
                &current,
                f.required,
            );
        }
        FieldType::Department => {
            let current = text();
            i.kind = "select";
            i.options = choices(
                people
                    .departments()
                    .iter()
                    .map(|(id, d)| (id.clone(), d.name.clone())),
                &current,
                f.required,
            );
        }
        FieldType::List => {
            i.kind = "list";
            i.key = path.replace('/', ".");
            let items: &[Value] = match value {
                Some(Value::Array(a)) => a,
                _ => &[],
            };
            let item = f.items.as_deref();
            i.rows = items
                .iter()
                .take(MAX_ROWS)
                .enumerate()
                .map(|(n, v)| row(path, n, item, v, problems, people, zone))
                .collect();
        }
        FieldType::Object => {
            // An object outside a list: its fields one after another, named `path.sub`.
            i.kind = "list";
            i.key = String::new();
            let empty = Map::new();
            let inner = match value {
                Some(Value::Object(m)) => m,
                _ => &empty,
            };
            i.rows = vec![Row {
                key: String::new(),
                cells: f
                    .fields
                    .iter()
                    .map(|(k, sub)| {
                        input(
                            &format!("{path}/{k}"),
                            k,
                            sub,
                            inner.get(k),
                            problems,
                            people,
                            zone,
                        )
                    })
                    .collect(),
            }];
        }
    }
    i
}

fn row(
    path: &str,
    n: usize,
    item: Option<&Field>,
    v: &Value,
    problems: &[FieldProblem],
    people: &Directory,
    zone: Tz,
) -> Row {
    let here = format!("{path}/{n}");
    let cells = match item {
        Some(f) if f.ty == FieldType::Object => f
            .fields
            .iter()
            .map(|(k, sub)| {
                let inner = v.get(k);
                input(
                    &format!("{here}/{k}"),
                    k,
                    sub,
                    inner,
                    problems,
                    people,
                    zone,
                )
            })
            .collect(),
        Some(f) => vec![input(
            &here,
            &format!("item {}", n + 1),
            f,
            Some(v),
            problems,
            people,
            zone,
        )],
        None => vec![],
    };
    Row {
        key: here.replace('/', "."),
        cells,
    }
}

fn choices(
    all: impl Iterator<Item = (String, String)>,
    current: &str,
    required: bool,
) -> Vec<(String, String, bool)> {
    let mut out = vec![(
        String::new(),
        if required { "Choose…" } else { "(none)" }.to_string(),
        current.is_empty(),
    )];
    out.extend(all.map(|(v, l)| {
        let sel = v == current;
        (v, l, sel)
    }));
    out
}

/// A change to a list's rows asked for by the "Add" and "Remove" buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowChange {
    Add(String),
    Remove(String),
}

/// The posted row change, if the person pressed "Add" or "Remove" rather than an outcome.
pub fn row_change(fields: &[(String, String)]) -> Option<RowChange> {
    fields.iter().find_map(|(k, v)| match k.as_str() {
        "_add" => Some(RowChange::Add(v.clone())),
        "_remove" => Some(RowChange::Remove(v.clone())),
        _ => None,
    })
}

/// Reads the posted pairs back into form values for `fields`. Empty inputs are left out
/// (so a required one is reported missing); booleans drawn as check boxes are `false` when
/// not ticked.
pub fn read(
    fields: &IndexMap<String, Field>,
    posted: &[(String, String)],
    zone: Tz,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, f) in fields {
        if let Some(v) = read_one(&format!("{PREFIX}{name}"), f, posted, zone) {
            out.insert(name.clone(), v);
        }
    }
    out
}

fn read_one(key: &str, f: &Field, posted: &[(String, String)], zone: Tz) -> Option<Value> {
    let raw = || {
        posted
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match f.ty {
        FieldType::Boolean => Some(Value::Bool(raw().is_some_and(|v| v != "false"))),
        FieldType::Integer => raw().map(|v| {
            v.parse::<i64>()
                .map(Value::from)
                .unwrap_or(Value::String(v))
        }),
        FieldType::Number => raw().map(|v| match v.parse::<f64>() {
            Ok(n) if n.is_finite() => serde_json::Number::from_f64(n)
                .map(Value::Number)
                .unwrap_or(Value::String(v)),
            _ => Value::String(v),
        }),
        FieldType::Datetime => raw().map(|v| {
            NaiveDateTime::parse_from_str(&v, "%Y-%m-%dT%H:%M")
                .ok()
                .and_then(|naive| zone.from_local_datetime(&naive).earliest())
                .map(|t| Value::String(t.with_timezone(&Utc).to_rfc3339()))
                .unwrap_or(Value::String(v))
        }),
        FieldType::List => {
            let rows = row_indices(key, posted);
            let item = f.items.as_deref()?;
            let values: Vec<Value> = rows
                .into_iter()
                .filter_map(|n| {
                    let here = format!("{key}.{n}");
                    match item.ty {
                        FieldType::Object => {
                            let m: Map<String, Value> = item
                                .fields
                                .iter()
                                .filter_map(|(k, sub)| {
                                    read_one(&format!("{here}.{k}"), sub, posted, zone)
                                        .map(|v| (k.clone(), v))
                                })
                                .collect();
                            // A row left wholly empty (check boxes aside) is no item.
                            let any = m.values().any(|v| !matches!(v, Value::Bool(false)));
                            any.then_some(Value::Object(m))
                        }
                        _ => read_one(&here, item, posted, zone),
                    }
                })
                .collect();
            (!values.is_empty()).then_some(Value::Array(values))
        }
        FieldType::Object => {
            let m: Map<String, Value> = f
                .fields
                .iter()
                .filter_map(|(k, sub)| {
                    read_one(&format!("{key}.{k}"), sub, posted, zone).map(|v| (k.clone(), v))
                })
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        _ => raw().map(Value::String),
    }
}

/// The row numbers posted for list `key` (`key.N` or `key.N.sub`), in order, at most
/// `MAX_ROWS`.
fn row_indices(key: &str, posted: &[(String, String)]) -> Vec<usize> {
    let prefix = format!("{key}.");
    let mut rows: Vec<usize> = posted
        .iter()
        .filter_map(|(k, _)| k.strip_prefix(&prefix))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .filter(|n| *n < MAX_ROWS * 4)
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows.truncate(MAX_ROWS);
    rows
}

/// Applies an "Add" or "Remove" to the values read back: one more empty row at the end of
/// the list, or the row taken out. Unknown keys change nothing.
pub fn apply_row_change(
    fields: &IndexMap<String, Field>,
    values: &mut Map<String, Value>,
    change: &RowChange,
) {
    match change {
        RowChange::Add(key) => {
            let Some(f) = fields.get(key.as_str()) else {
                return;
            };
            if f.ty != FieldType::List {
                return;
            }
            let blank = match f.items.as_deref().map(|i| i.ty) {
                Some(FieldType::Object) => Value::Object(Map::new()),
                Some(FieldType::Boolean) => Value::Bool(false),
                _ => Value::String(String::new()),
            };
            let list = values
                .entry(key.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = list {
                if a.len() < MAX_ROWS {
                    a.push(blank);
                }
            }
        }
        RowChange::Remove(key) => {
            let Some((list, n)) = key.rsplit_once('.') else {
                return;
            };
            let Ok(n) = n.parse::<usize>() else { return };
            if let Some(Value::Array(a)) = values.get_mut(list) {
                if n < a.len() {
                    a.remove(n);
                }
            }
        }
    }
}

/// The field's help text with the rules that depend on the outcome chosen, so the person
/// knows before submitting ("Required when you choose reject.").
fn outcome_help(f: &Field) -> String {
    let words = |os: &[String]| {
        os.iter()
            .map(|o| super::view::words(o))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let mut parts: Vec<String> = f.description.iter().cloned().collect();
    if !f.required_for.is_empty() {
        parts.push(format!(
            "Required when you choose {}.",
            words(&f.required_for)
        ));
    }
    if !f.must_be_true_for.is_empty() {
        parts.push(format!(
            "Must be ticked to choose {}.",
            words(&f.must_be_true_for)
        ));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> IndexMap<String, Field> {
        let toml = r#"
            customer = { type = "string", title = "Customer", required = true }
            amount = { type = "number" }
            count = { type = "integer" }
            ok = { type = "boolean" }
            when = { type = "datetime" }
            items = { type = "list", items = { type = "object", fields = { what = { type = "string" }, cost = { type = "number" } } } }
        "#;
        toml::from_str(toml).unwrap()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn posted_strings_become_typed_values() {
        let posted = pairs(&[
            ("f.customer", " Hengxin "),
            ("f.amount", "2.5"),
            ("f.count", "seven"),
            ("f.ok", "true"),
            ("f.when", "2026-11-02T09:30"),
            ("f.items.0.what", "roller"),
            ("f.items.0.cost", "12"),
            ("f.items.1.what", ""),
            ("f.items.1.cost", ""),
            ("f.items.3.what", "belt"),
        ]);
        let v = read(&fields(), &posted, chrono_tz::Asia::Shanghai);
        assert_eq!(v["customer"], "Hengxin");
        assert_eq!(v["amount"], 2.5);
        // Not a number: passed on as typed, for the engine's validator to refuse.
        assert_eq!(v["count"], "seven");
        assert_eq!(v["ok"], true);
        assert_eq!(v["when"], "2026-11-02T01:30:00+00:00");
        assert_eq!(
            v["items"],
            serde_json::json!([{"what": "roller", "cost": 12.0}, {"what": "belt"}])
        );
    }

    #[test]
    fn empty_inputs_are_left_out_and_unticked_boxes_are_false() {
        let v = read(&fields(), &pairs(&[("f.customer", "  ")]), chrono_tz::UTC);
        assert!(!v.contains_key("customer"));
        assert_eq!(v["ok"], false);
    }

    #[test]
    fn rows_are_added_and_removed() {
        let f = fields();
        let mut v = read(
            &f,
            &pairs(&[("f.items.0.what", "a"), ("f.items.1.what", "b")]),
            chrono_tz::UTC,
        );
        apply_row_change(&f, &mut v, &RowChange::Add("items".into()));
        assert_eq!(v["items"].as_array().unwrap().len(), 3);
        apply_row_change(&f, &mut v, &RowChange::Remove("items.0".into()));
        assert_eq!(v["items"][0]["what"], "b");
        apply_row_change(&f, &mut v, &RowChange::Remove("nonsense".into()));
    }

    #[test]
    fn problems_show_next_to_their_field() {
        let (dir, report) = crate::directory::load(std::path::Path::new("org.toml"));
        let dir = dir.unwrap_or_else(|| panic!("org.toml: {report:?}"));
        let problems = vec![FieldProblem {
            field: "customer".into(),
            message: "is required".into(),
        }];
        let drawn = inputs(&fields(), &Map::new(), &problems, &dir, chrono_tz::UTC);
        assert_eq!(drawn[0].error.as_deref(), Some("is required"));
        assert_eq!(drawn[0].kind, "text");
        assert_eq!(drawn[5].kind, "list");
    }
}
