//! Meaning checks of fields, in `[data]` and in forms: names, which keys fit which type,
//! ranges, choices, and one type per name across the whole procedure. Must report every
//! problem it finds and never panic.

use std::collections::{HashMap, HashSet};

use super::super::diagnostic::Diagnostic;
use super::super::model::{Field, FieldType, RESERVED_NAMES};
use super::super::source::ptr;
use super::{is_step_id, type_name, Checker};

impl Checker<'_> {
    /// Fields: names, shapes, and one type per name across all forms.
    pub(super) fn fields(&mut self) {
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

    pub(super) fn field_shape(&mut self, f: &Field, segs: &[&str]) {
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
}
