//! Meaning checks on a file with schema errors. A typo like `dedline` must not hide the
//! file's other mistakes until it is fixed, so the parts the schema refuses are left out (an
//! unknown key, a wrong-typed value, an entry that cannot be read without them) and the rest
//! is read into the model and checked as usual.
//!
//! Leaving something out can make other checks complain about its absence — a step whose
//! misspelt `kind` was dropped lacks a role, a form field with a wrong `type` is unknown to
//! the conditions that use it. Those findings only restate the schema error, so
//! [`Partial::keeps`] drops them: anything at the place of a removed part, anything about the
//! object that lost a part that shapes it, any "unknown" name whose declaration was removed;
//! and when the step graph itself lost a part, the graph checks are not run at all.
//!
//! This module decides what to leave out and what to keep quiet about; it must not report
//! anything itself, and must never panic on any document.

use std::collections::HashSet;
use std::ops::Range;

use serde_json::Value;

use super::diagnostic::Diagnostic;
use super::schema::{self, Violation};
use super::source::{escape, unescape, SpannedDoc};

/// Rounds of leaving out and validating again before giving up: each round removes at
/// least one node, and a removal can expose at most one more error per level above it.
const MAX_ROUNDS: usize = 32;

/// Keys whose absence no meaning check complains about: leaving them out restates nothing.
/// (`form`, `compute`, `data`, `roles` and `required` declare names, handled by name.)
const HARMLESS: &[&str] = &[
    "title",
    "description",
    "meaning",
    "source",
    "deadline",
    "separation",
    "delegation",
    "signatures",
    "form",
    "compute",
    "calendar",
    "remind",
    "on_breach",
    "required",
    "min",
    "max",
    "min_length",
    "max_length",
    "min_items",
    "max_items",
    "enum",
    "start_roles",
    "cancel_roles",
    "schedule",
    "kpis",
    "data",
    "roles",
    "version",
    "id",
    "even_if_claimed",
    "reason_required",
    "level",
    "to_roles",
    "not_same_person_as",
    "not_from_department",
    "at_least",
    "at_most",
    "max_depth",
    "timezone",
    "starting",
];

/// Keys of a step whose absence changes the step graph.
const SHAPING: &[&str] = &["kind", "next", "to", "branches", "join"];

/// Codes of findings that name something which may have been declared in a removed part.
const ABOUT_NAMES: &[&str] = &[
    "unknown-step",
    "unknown-role",
    "unknown-field",
    "unknown-name",
    "unknown-outcome",
    "unhandled-outcome",
    "wrong-field-type",
    "field-may-be-empty",
    "missing-input",
    "cel-type",
    "cel-type-mismatch",
];

/// Codes of findings that depend on what kind of step a step is.
const ABOUT_KINDS: &[&str] = &[
    "not-an-end-step",
    "bad-kpi-step",
    "bad-start",
    "bad-breach-action",
];

/// A document cut down to what the schema accepts, and what to keep quiet about.
pub struct Partial {
    /// The document without the refused parts; spans still point into the original text.
    pub doc: SpannedDoc,
    /// The document as written, to tell which part of the file a finding is about.
    original: SpannedDoc,
    removed: Vec<Range<usize>>,
    /// Findings about things under these pointers restate a removal.
    zones: Vec<String>,
    /// Steps, fields, roles and outcomes whose declaration was removed or damaged.
    names: HashSet<String>,
    all_roles: bool,
    /// Codes of findings about names that may all have been declared in a part whose names
    /// cannot be read (`collect = 7`, `form = "x"`).
    moot: HashSet<&'static str>,
    /// Steps whose `kind` was removed: they now read as tasks.
    kinds_lost: HashSet<String>,
    /// The step graph lost an edge, a step or a kind: graph checks would restate that.
    pub reshaped: bool,
    /// The procedure id was unreadable and stands in as a placeholder.
    pub id_replaced: bool,
}

/// What the procedure's id is replaced with when it cannot be read.
const PLACEHOLDER_ID: &str = "unreadable-id";

/// Leaves out of `doc` what `schema` refuses, until the rest is valid. `None` when what is
/// left would not be a procedure worth checking (no steps, no start).
pub fn prune(
    doc: &SpannedDoc,
    schema: &'static Value,
    validator: &jsonschema::Validator,
) -> Option<Partial> {
    let mut p = Partial {
        doc: doc.clone(),
        original: doc.clone(),
        removed: Vec::new(),
        zones: Vec::new(),
        names: HashSet::new(),
        all_roles: false,
        moot: HashSet::new(),
        kinds_lost: HashSet::new(),
        reshaped: false,
        id_replaced: false,
    };
    for _ in 0..MAX_ROUNDS {
        let violations = schema::violations(&p.doc.value, schema, validator);
        if violations.is_empty() {
            return Some(p);
        }
        // (pointer, for an unknown key: the key it most resembles)
        let mut targets: Vec<(String, Option<Option<String>>)> = Vec::new();
        let mut progress = false;
        for v in violations {
            match v {
                Violation::UnknownKeys { at, keys } => {
                    for (key, meant) in keys {
                        targets.push((format!("{at}/{}", escape(&key)), Some(meant)));
                    }
                }
                Violation::Missing { at, key } if at.is_empty() => {
                    if !p.placeholder(&key) {
                        return None;
                    }
                    progress = true;
                }
                Violation::Missing { at, .. } | Violation::Invalid { at } => {
                    if at.is_empty() {
                        return None;
                    }
                    targets.push((at, None));
                }
            }
        }
        // Later list items first, so removing one does not move the next one's place; and
        // nothing under a part that goes anyway.
        targets.sort_by(|a, b| order(&b.0, &a.0));
        targets.dedup_by(|a, b| a.0 == b.0);
        let pointers: Vec<String> = targets.iter().map(|t| t.0.clone()).collect();
        for (pointer, unknown) in targets {
            let under_another = pointers
                .iter()
                .any(|q| q != &pointer && pointer.starts_with(&format!("{q}/")));
            if !under_another && p.remove(&pointer, unknown) {
                progress = true;
            }
        }
        if !progress {
            return None;
        }
    }
    None
}

/// Compares pointers segment by segment, list positions as numbers.
fn order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (unescape(a), unescape(b));
    for (x, y) in a.iter().zip(&b) {
        let c = match (x.parse::<usize>(), y.parse::<usize>()) {
            (Ok(i), Ok(j)) => i.cmp(&j),
            _ => x.cmp(y),
        };
        if c.is_ne() {
            return c;
        }
    }
    a.len().cmp(&b.len())
}

/// What a segment of a pointer into a procedure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    /// A key of the format (`role`, `next`).
    Key,
    /// A name the author chose, of this kind: a step id, a field, a role…
    Name(&'static str),
    /// A position in a list.
    Index,
}

/// Labels each segment of a pointer into a procedure file.
fn label(segments: &[String]) -> Vec<Seg> {
    // What the next segment names, by where we are.
    #[derive(Clone, Copy)]
    enum At {
        Root,
        Steps,
        Step,
        Fields,
        Field,
        Names(&'static str),
        Schedule,
        Other,
    }
    let mut at = At::Root;
    let mut out = Vec::with_capacity(segments.len());
    for s in segments {
        if s.parse::<usize>().is_ok() && !matches!(at, At::Steps | At::Fields | At::Names(_)) {
            out.push(Seg::Index);
            at = At::Other;
            continue;
        }
        let (seg, next) = match (at, s.as_str()) {
            (At::Root, "steps") => (Seg::Key, At::Steps),
            (At::Root, "roles") => (Seg::Key, At::Names("role")),
            (At::Root, "data") => (Seg::Key, At::Fields),
            (At::Root, "kpis") => (Seg::Key, At::Names("kpi")),
            (At::Root, "schedule") => (Seg::Key, At::Schedule),
            (At::Schedule, "data") => (Seg::Key, At::Names("start value")),
            (At::Steps, _) => (Seg::Name("step"), At::Step),
            (At::Step, "form") => (Seg::Key, At::Fields),
            (At::Step, "compute") => (Seg::Key, At::Names("field")),
            (At::Step, "input") => (Seg::Key, At::Names("input")),
            (At::Fields, _) => (Seg::Name("field"), At::Field),
            (At::Field, "fields") => (Seg::Key, At::Fields),
            (At::Field, "items") => (Seg::Key, At::Field),
            (At::Names(kind), _) => (Seg::Name(kind), At::Other),
            _ => (Seg::Key, At::Other),
        };
        out.push(seg);
        at = next;
    }
    out
}

impl Partial {
    /// Stands in for a missing top-level key that only identifies the procedure; `false`
    /// for one the checks cannot do without (`steps`, `start`).
    fn placeholder(&mut self, key: &str) -> bool {
        let value = match key {
            "id" => {
                self.id_replaced = true;
                Value::from(PLACEHOLDER_ID)
            }
            "version" => Value::from(1),
            "title" => Value::from("(title unreadable)"),
            _ => return false,
        };
        match self.doc.value.as_object_mut() {
            Some(root) => {
                root.insert(key.to_string(), value);
                true
            }
            None => false,
        }
    }

    /// Removes the node at `pointer` and notes what its absence may cause. `unknown` is set
    /// for an unknown key, with the allowed key it most resembles.
    fn remove(&mut self, pointer: &str, unknown: Option<Option<String>>) -> bool {
        let Some((value, spans)) = self.doc.remove(pointer) else {
            return false;
        };
        self.removed.extend(spans);
        let segments = unescape(pointer);
        let labels = label(&segments);
        // The key the author wrote (or meant), ignoring list positions after it.
        let mut end = segments.len();
        while end > 0 && labels[end - 1] == Seg::Index {
            end -= 1;
        }
        let Some(last) = end.checked_sub(1) else {
            return true;
        };
        let in_step = labels.first() == Some(&Seg::Key)
            && segments.first().map(String::as_str) == Some("steps")
            && labels.get(1) == Some(&Seg::Name("step"));
        // A whole named entry (a step, a field, a role) went: whatever names it is moot.
        if let Seg::Name(kind) = labels[last] {
            self.names.insert(segments[last].clone());
            if kind == "step" {
                self.reshaped = true;
                self.names.extend(declared_by_step(&value));
            }
            return true;
        }
        let meant: Option<String> = match unknown {
            Some(meant) => meant,
            None => Some(segments[last].clone()),
        };
        // A part of a field's declaration: the field may now read differently.
        if let Some(i) = labels[..last]
            .iter()
            .rposition(|l| *l == Seg::Name("field"))
        {
            let cosmetic = matches!(
                meant.as_deref(),
                Some(
                    "title"
                        | "description"
                        | "min"
                        | "max"
                        | "min_length"
                        | "max_length"
                        | "min_items"
                        | "max_items"
                        | "enum"
                )
            );
            if !cosmetic {
                self.names.insert(segments[i].clone());
            }
        }
        match meant.as_deref() {
            Some("form" | "compute" | "data" | "fields" | "roles") => {
                match &value {
                    Value::Object(m) => self.names.extend(m.keys().cloned()),
                    _ => self.moot.extend(["unknown-name", "unknown-field"]),
                }
                if meant.as_deref() == Some("roles") && last == 0 {
                    self.all_roles = true;
                }
            }
            // A misspelt `[steps.…]` table: its steps and everything they declare.
            Some("steps") if last == 0 => {
                self.reshaped = true;
                if let Value::Object(steps) = &value {
                    for (id, step) in steps {
                        self.names.insert(id.clone());
                        self.names.extend(declared_by_step(step));
                    }
                }
            }
            Some("collect") => match &value {
                Value::String(s) => {
                    self.names.insert(s.clone());
                }
                _ => self.moot.extend(["unknown-name", "unknown-field"]),
            },
            Some("outcomes") => match &value {
                Value::Array(a) => {
                    self.names
                        .extend(a.iter().filter_map(Value::as_str).map(str::to_string));
                }
                Value::String(s) => {
                    self.names.insert(s.clone());
                }
                _ => self.moot.extend(["unknown-outcome", "unhandled-outcome"]),
            },
            _ => {}
        }
        if in_step && meant.as_deref().is_some_and(|k| SHAPING.contains(&k)) {
            self.reshaped = true;
            if meant.as_deref() == Some("kind") {
                self.kinds_lost.insert(segments[1].clone());
            }
        }
        let harmless = meant.as_deref().is_some_and(|k| HARMLESS.contains(&k));
        if !harmless && last > 0 {
            // The object the key belonged to: what is said about it may restate the removal.
            self.zones.push(super::source::ptr(&segments[..last]));
        }
        true
    }

    /// Whether a finding on the cut-down procedure says something the schema errors do not.
    pub fn keeps(&self, d: &Diagnostic) -> bool {
        if let Some(span) = &d.span {
            let overlaps = |r: &Range<usize>| {
                span.start < r.end.max(r.start + 1) && r.start < span.end.max(span.start + 1)
            };
            if self.removed.iter().any(overlaps) {
                return false;
            }
            if let Some(p) = self.original.pointer_at(span.start) {
                if self
                    .zones
                    .iter()
                    .any(|z| p == z || p.starts_with(&format!("{z}/")))
                {
                    return false;
                }
            }
        }
        if ABOUT_NAMES.contains(&d.code)
            && self
                .names
                .iter()
                .any(|n| d.message.contains(&format!("`{n}`")))
        {
            return false;
        }
        if ABOUT_KINDS.contains(&d.code)
            && self
                .kinds_lost
                .iter()
                .any(|n| d.message.contains(&format!("`{n}`")))
        {
            return false;
        }
        if self.moot.contains(d.code) {
            return false;
        }
        if self.all_roles && d.code == "unknown-role" {
            return false;
        }
        if self.reshaped && d.code == "no-end-step" {
            return false;
        }
        !(self.id_replaced && matches!(d.code, "id-mismatch" | "duplicate-procedure"))
    }
}

/// The names a step (as JSON) declares: its form fields, computed values, collected field
/// and outcomes.
fn declared_by_step(step: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["form", "compute"] {
        if let Some(Value::Object(m)) = step.get(key) {
            out.extend(m.keys().cloned());
        }
    }
    if let Some(Value::String(c)) = step.get("collect") {
        out.push(c.clone());
    }
    if let Some(Value::Array(a)) = step.get("outcomes") {
        out.extend(a.iter().filter_map(Value::as_str).map(str::to_string));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use crate::definition::load::validate_text;

    const BASE: &str = r#"id = "t"
version = 1
title = "T"
start = "register"
[roles]
follow_up = "Follow-up"
sales = "Sales"
[steps.register]
title = "Register"
role = "follow_up"
form.severity = { type = "string", enum = ["general", "major"], required = true }
form.leader = { type = "user", required = true }
outcomes = ["done", "drop"]
next = [{ to = "route", on = "done" }, { to = "closed", on = "drop" }]
[steps.route]
kind = "auto"
next = [{ to = "resolve", when = "severity == 'general'" }, { to = "review" }]
[steps.review]
assignee = "leader"
deadline = { due = "24h", on_breach = [{ escalate_to = "sales" }] }
next = [{ to = "resolve" }]
[steps.resolve]
title = "Resolve"
role = "sales"
next = [{ to = "closed" }]
[steps.closed]
kind = "end"
"#;

    /// The codes reported for `BASE` with `from` replaced by `to`.
    fn codes(from: &str, to: &str) -> Vec<&'static str> {
        assert!(BASE.contains(from), "{from}");
        let text = BASE.replacen(from, to, 1);
        let v = validate_text("t.toml", &text, &[], &HashSet::from(["default".into()]));
        let report = &v.reports[0];
        for d in &report.diagnostics {
            assert!(d.span.is_some(), "unlocated {d:?}");
        }
        report.diagnostics.iter().map(|d| d.code).collect()
    }

    #[test]
    fn the_base_is_clean() {
        assert_eq!(codes("", ""), Vec::<&str>::new());
    }

    #[test]
    fn a_schema_error_no_longer_hides_the_other_mistakes() {
        let found = codes("deadline = { due = \"24h\"", "dedline = { due = \"24h\"");
        assert_eq!(found, ["unknown-key"]);
        let text = BASE
            .replacen("deadline = { due", "dedline = { due", 1)
            .replacen("role = \"sales\"", "role = \"sale\"", 1)
            .replacen("{ to = \"review\" }", "{ to = \"reveiw\" }", 1)
            .replacen("severity == 'general'", "severity == 3", 1)
            .replacen("title = \"Resolve\"", "title = 3", 1);
        let v = validate_text("t.toml", &text, &[], &HashSet::from(["default".into()]));
        let mut found: Vec<&str> = v.reports[0].diagnostics.iter().map(|d| d.code).collect();
        found.sort();
        assert_eq!(
            found,
            [
                "cel-type-mismatch",
                "unknown-key",
                "unknown-role",
                "unknown-step",
                "wrong-type"
            ],
            "{}",
            v.reports[0].render_text()
        );
    }

    #[test]
    fn a_misspelt_kind_does_not_make_the_step_look_like_a_broken_task() {
        assert_eq!(
            codes("kind = \"auto\"", "kind = \"atuo\""),
            ["not-a-choice"]
        );
        assert_eq!(codes("kind = \"end\"", "kind = \"ned\""), ["not-a-choice"]);
        assert_eq!(codes("kind = \"auto\"", "knd = \"auto\""), ["unknown-key"]);
    }

    #[test]
    fn a_field_whose_declaration_is_refused_is_not_also_unknown() {
        assert_eq!(
            codes("{ type = \"string\", enum", "{ type = \"strng\", enum"),
            ["not-a-choice"]
        );
        assert_eq!(codes("form.severity", "frm.severity"), ["unknown-key"]);
        assert_eq!(
            codes(
                "form.leader = { type = \"user\", required = true }",
                "form.leader = { type = \"user\", requierd = true }"
            ),
            ["unknown-key"]
        );
    }

    #[test]
    fn a_broken_transition_does_not_make_its_target_unreachable() {
        assert_eq!(
            codes("{ to = \"review\" }", "{ too = \"review\" }"),
            ["missing-key", "unknown-key"]
        );
        assert_eq!(codes("{ to = \"review\" }", "{ to = 3 }"), ["wrong-type"]);
        assert_eq!(codes("outcomes = [", "outcome = ["), ["unknown-key"]);
    }

    #[test]
    fn who_does_a_step_and_what_happens_when_it_is_late() {
        assert_eq!(codes("role = \"sales\"", "role = 3"), ["wrong-type"]);
        assert_eq!(
            codes("assignee = \"leader\"", "asignee = \"leader\""),
            ["unknown-key"]
        );
        assert_eq!(codes("{ escalate_to", "{ escalte_to"), ["unknown-key"]);
    }

    #[test]
    fn top_level_keys_stand_in_or_stop_the_meaning_checks() {
        // An unreadable id stands in: the meaning checks still run, without id-mismatch.
        assert_eq!(codes("id = \"t\"", "id = \"T t\"\n"), ["bad-id"]);
        let text = BASE.replacen("id = \"t\"", "id = 7", 1).replacen(
            "role = \"sales\"",
            "role = \"sale\"",
            1,
        );
        let v = validate_text("t.toml", &text, &[], &HashSet::from(["default".into()]));
        let found: Vec<&str> = v.reports[0].diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(found, ["wrong-type", "unknown-role"]);
        assert_eq!(codes("version = 1", "version = \"1\""), ["wrong-type"]);
        // Without readable steps or start nothing else can be said.
        assert_eq!(codes("start = \"register\"", "start = 1"), ["wrong-type"]);
        assert_eq!(codes("[roles]", "[role]"), ["unknown-key"]);
        assert_eq!(
            codes("[steps.register]", "[step.register]"),
            ["unknown-key"]
        );
    }
}
