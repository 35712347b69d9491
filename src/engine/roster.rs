//! Who exists, as the engine is allowed to know it: the active people and the departments
//! of the directory at the moment of a command. `decide` takes a `Roster` as an argument —
//! like the clock's `now` — so it stays a pure function of what it is given; the service
//! holds the current one and hands it over.
//!
//! It answers two questions and nothing else: it must not expose tokens or anything the
//! engine does not decide with, and it never reads files (the directory module does).

use std::collections::BTreeMap;

use super::compiled::FieldProblem;
use super::instance::Actor;
use crate::definition::model::{Field, FieldType};
use serde_json::{Map, Value};

/// The people and departments a command may name.
pub trait Roster: Send + Sync {
    /// The active person with this id, as the engine sees them (roles, department and the
    /// departments above it, level); `None` for an unknown or inactive id.
    fn person(&self, id: &str) -> Option<Actor>;
    /// Whether a department with this id exists.
    fn has_department(&self, id: &str) -> bool;
    /// Whether names are checked at all (false only for `Unchecked`).
    fn checks(&self) -> bool {
        true
    }
}

impl Roster for crate::directory::Directory {
    fn person(&self, id: &str) -> Option<Actor> {
        Actor::from_directory(self, id)
    }

    fn has_department(&self, id: &str) -> bool {
        self.department(id).is_some()
    }
}

/// A roster that knows nobody and so checks nothing: what an engine has before a directory
/// is given to it (`Engine::set_roster`). Only tests and benchmarks that drive the engine
/// with invented people run on it; `sopflow serve` and the command line always give the
/// directory file.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unchecked;

impl Roster for Unchecked {
    fn person(&self, _id: &str) -> Option<Actor> {
        None
    }

    fn has_department(&self, _id: &str) -> bool {
        true
    }

    fn checks(&self) -> bool {
        false
    }
}

/// Every `user` value in `values` that names no active person, and every `department`
/// value that names no department, as form problems at the field's path (`team/0`, a list
/// item). Values of other types, and fields `fields` does not declare, are left to the
/// form's schema.
pub fn unknown_names(
    fields: &BTreeMap<String, Field>,
    values: &Map<String, Value>,
    roster: &dyn Roster,
) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    if !roster.checks() {
        return out;
    }
    for (name, value) in values {
        if let Some(field) = fields.get(name) {
            check_value(field, value, name.clone(), roster, &mut out);
        }
    }
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

fn check_value(
    field: &Field,
    value: &Value,
    path: String,
    roster: &dyn Roster,
    out: &mut Vec<FieldProblem>,
) {
    match (field.ty, value) {
        (FieldType::User, Value::String(id)) if roster.person(id).is_none() => {
            out.push(FieldProblem {
                field: path,
                message: format!(
                    "`{id}` is not an active user of the directory; give the id of a person who works here now"
                ),
            });
        }
        (FieldType::Department, Value::String(id)) if !roster.has_department(id) => {
            out.push(FieldProblem {
                field: path,
                message: format!(
                    "`{id}` is not a department of the directory; give a department id such as the one on the person's record"
                ),
            });
        }
        (FieldType::List, Value::Array(items)) => {
            if let Some(item) = field.items.as_deref() {
                for (i, v) in items.iter().enumerate() {
                    check_value(item, v, format!("{path}/{i}"), roster, out);
                }
            }
        }
        (FieldType::Object, Value::Object(m)) => {
            for (k, v) in m {
                if let Some(f) = field.fields.get(k) {
                    check_value(f, v, format!("{path}/{k}"), roster, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::semantic::plain;

    struct Two;
    impl Roster for Two {
        fn person(&self, id: &str) -> Option<Actor> {
            (id == "li.wei").then(|| Actor {
                id: id.into(),
                name: "Li Wei".into(),
                department: "sales".into(),
                roles: vec![],
                level: 1,
                within: vec![],
            })
        }
        fn has_department(&self, id: &str) -> bool {
            id == "sales"
        }
    }

    fn field(ty: FieldType) -> Field {
        plain(ty)
    }

    #[test]
    fn names_every_unknown_person_and_department_by_path() {
        let mut list = field(FieldType::List);
        list.items = Some(Box::new(field(FieldType::User)));
        let lookup: BTreeMap<String, Field> = [
            ("worker", field(FieldType::User)),
            ("dept", field(FieldType::Department)),
            ("team", list),
            ("note", field(FieldType::Text)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let values = serde_json::json!({
            "worker": "nobody", "dept": "nowhere", "team": ["li.wei", "ghost"],
            "note": "nobody", "undeclared": "nobody"
        });
        let got = unknown_names(&lookup, values.as_object().unwrap(), &Two);
        let fields: Vec<&str> = got.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["dept", "team/1", "worker"]);
        assert!(got[2].message.contains("`nobody` is not an active user"));
        assert!(unknown_names(&lookup, values.as_object().unwrap(), &Unchecked).is_empty());
    }
}
