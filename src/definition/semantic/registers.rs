//! Meaning checks of what a procedure does with registers: the entries a step sets
//! (`writes`: the register and its fields exist, the values are expressions of the right
//! type) and the instances started before a date of each entry (`starts_from`). Reads in
//! conditions (`register.<id>[…]`) are checked with every expression (`cel_in`). Must report
//! every problem it finds and never panic.

use std::collections::BTreeMap;

use super::super::diagnostic::Diagnostic;
use super::super::model::{Field, FieldType, Step};
use super::super::register::RegisterFile;
use super::{infer_type, plain, type_name, Checker};

impl Checker<'_> {
    pub(super) fn writes(&mut self, id: &str, step: &Step) {
        for (i, w) in step.writes.iter().enumerate() {
            let idx = i.to_string();
            let base = ["steps", id, "writes", idx.as_str()];
            self.cel(
                &w.key,
                &[&base[..], &["key"]].concat(),
                false,
                &BTreeMap::new(),
            );
            let Some(reg) = self.register(&w.register, &[&base[..], &["register"]].concat()) else {
                for (field, src) in &w.set {
                    self.cel(
                        src,
                        &[&base[..], &["set", field]].concat(),
                        false,
                        &BTreeMap::new(),
                    );
                }
                continue;
            };
            if w.set.is_empty() {
                self.out.push(
                    Diagnostic::error(
                        "empty-rule",
                        format!("write {} of step `{id}` sets no field", i + 1),
                    )
                    .at(self.span(&base))
                    .help(format!(
                        "set at least one field of `{}`: {}",
                        reg.id,
                        fields_of(&reg)
                    )),
                );
            }
            for (field, src) in &w.set {
                let segs = [&base[..], &["set", field]].concat();
                self.cel(src, &segs, false, &BTreeMap::new());
                let Some(f) = reg.fields.get(field) else {
                    self.out.push(
                        Diagnostic::error(
                            "unknown-field",
                            format!("the register `{}` has no field `{field}`", reg.id),
                        )
                        .at(self.doc.key_span(&super::ptr(&segs)))
                        .suggest(field, reg.fields.keys().map(String::as_str)),
                    );
                    continue;
                };
                // A value computed from something whose type is not known (an untyped
                // computed value, a field lost to an earlier error) is not judged.
                let judged = super::expr::free_names(src)
                    .iter()
                    .all(|(n, _)| self.fields.contains_key(n) && !self.untyped.contains(n));
                if let Some(got) = infer_type(src, &self.fields).filter(|_| judged) {
                    if !same_kind(got, f.ty) {
                        self.out.push(
                            Diagnostic::error(
                                "wrong-field-type",
                                format!(
                                    "`{field}` of the register `{}` is of type `{}`, but this expression gives `{}`",
                                    reg.id,
                                    type_name(f.ty),
                                    type_name(got)
                                ),
                            )
                            .at(self.span(&segs)),
                        );
                    }
                }
            }
        }
    }

    pub(super) fn starts_from(&mut self) {
        let Some(s) = &self.proc.starts_from else {
            return;
        };
        let Some(reg) = self.register(&s.register, &["starts_from", "register"]) else {
            return;
        };
        for (key, name) in [("date", &s.date), ("mark", &s.mark)] {
            match reg.fields.get(name) {
                Some(f) if f.ty == FieldType::Date => {}
                Some(f) => self.out.push(
                    Diagnostic::error(
                        "wrong-field-type",
                        format!(
                            "`starts_from.{key}` needs a `date` field, but `{name}` of `{}` is of type `{}`",
                            reg.id,
                            type_name(f.ty)
                        ),
                    )
                    .at(self.span(&["starts_from", key])),
                ),
                None => self.out.push(
                    Diagnostic::error(
                        "unknown-field",
                        format!("the register `{}` has no field `{name}`", reg.id),
                    )
                    .at(self.span(&["starts_from", key]))
                    .suggest(name, reg.fields.keys().map(String::as_str)),
                ),
            }
        }
        if s.date == s.mark {
            self.out.push(
                Diagnostic::error(
                    "conflicting-keys",
                    "`starts_from.mark` must be another field than `date`: it records which date an instance was started for",
                )
                .at(self.span(&["starts_from", "mark"])),
            );
        }
        if let Err(e) = super::super::duration::parse_amount(&s.before) {
            self.out.push(
                Diagnostic::error("bad-duration", e.to_string())
                    .at(self.span(&["starts_from", "before"]))
                    .help("write an amount: `10 days`, `2 working days`"),
            );
        }
        // The start data is computed from the entry: `key` and `entry` are bound there.
        let mut entry = plain(FieldType::Object);
        entry.fields = reg.fields.clone();
        let extra: BTreeMap<String, Field> = [
            ("key".to_string(), plain(FieldType::String)),
            ("entry".to_string(), entry),
        ]
        .into_iter()
        .collect();
        for (name, src) in &s.data {
            self.cel(src, &["starts_from", "data", name], false, &extra);
            if !self.proc.data.contains_key(name) {
                self.out.push(
                    Diagnostic::error(
                        "unknown-field",
                        format!(
                            "`starts_from.data` sets `{name}`, which `[data]` does not declare"
                        ),
                    )
                    .at(self
                        .doc
                        .key_span(&super::ptr(&["starts_from", "data", name])))
                    .suggest(name, self.proc.data.keys().map(String::as_str)),
                );
            }
        }
        let missing: Vec<&String> = self
            .proc
            .data
            .iter()
            .filter(|(k, f)| f.required && !s.data.contains_key(*k))
            .map(|(k, _)| k)
            .collect();
        for k in missing {
            self.out.push(
                Diagnostic::error(
                    "missing-input",
                    format!("instances started from the register would lack the required data field `{k}`"),
                )
                .at(self.key_span(&["starts_from"]))
                .help(format!("set `{k}` in `starts_from.data`, e.g. `{k} = \"entry.{k}\"`")),
            );
        }
    }

    /// The register named at `segs`, or an error there.
    fn register(&mut self, id: &str, segs: &[&str]) -> Option<std::sync::Arc<RegisterFile>> {
        if let Some(r) = self.ctx.registers.get(id) {
            return Some(r.clone());
        }
        let d = self.unknown_register(id, self.span(segs));
        self.out.push(d);
        None
    }
}

fn fields_of(reg: &RegisterFile) -> String {
    reg.fields
        .keys()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a value of type `got` can be stored in a field of type `want` (text-like types
/// are all text to an expression; a whole number fits a number field).
fn same_kind(got: FieldType, want: FieldType) -> bool {
    use FieldType as T;
    let text = |t| matches!(t, T::String | T::Text | T::User | T::Department);
    got == want
        || (text(got) && text(want))
        || (got == T::Integer && want == T::Number)
        || (matches!(got, T::Date | T::Datetime) && matches!(want, T::Date | T::Datetime))
}
