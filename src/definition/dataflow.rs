//! Which data fields definitely have a value when each step opens, and the checks that need
//! one: a step assigned to the person in a field (`assignee`), a deadline counted from a date
//! field (`due = "2 days before planned_end"`), and an independence rule naming a department
//! field (`separation.not_from_department`). A field that may still be empty there makes
//! every instance reaching the step fail at run time (or, for separation, silently skip the
//! rule), so it is reported when the file loads.
//!
//! One forward must-analysis over the step graph: a field has a value after a step when it
//! had one before, or the step sets it — a required field of its form (unless the clock
//! completes the step with `take`, which fills in no form), a `compute` value, a subprocess
//! step's `collect`. Before a step is the intersection over the ways into it (a fixpoint, so
//! loops are handled); the start step begins with the `[data]` fields marked `required`.
//! Branches of a parallel step start from its state, and a join, where every branch has run,
//! has the union of what each branch set for certain.
//!
//! This module reads the graph; it must not report what other passes do (unknown fields,
//! fields of the wrong type, unreachable steps are skipped here) and must never panic.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::diagnostic::Diagnostic;
use super::duration::Due;
use super::graph::Graph;
use super::model::{Field, FieldType, Procedure, Step, StepKind};
use super::source::{ptr, SpannedDoc};

/// `field-may-be-empty` errors for assignees, deadline fields and department fields that may
/// have no value when their step opens. One field missing is one mistake, so it is reported
/// once, at the use nearest the start, naming the other steps that need it too. `fields` are
/// the procedure's declared fields with their types (`semantic::declared_fields`).
pub fn check(
    proc: &Procedure,
    doc: &SpannedDoc,
    fields: &BTreeMap<String, Field>,
) -> Vec<Diagnostic> {
    let flow = Flow::new(proc);
    let Some(start) = flow.g.start else {
        return Vec::new();
    };
    let distance = flow.g.distances(start);
    let has_type =
        |name: &str, types: &[FieldType]| fields.get(name).is_some_and(|f| types.contains(&f.ty));
    let mut found: Vec<Finding> = Vec::new();
    for (i, step) in flow.g.steps.iter().enumerate() {
        // Unreachable steps are graph.rs's `unreachable-step`.
        let Some(d) = distance.get(i).copied().flatten() else {
            continue;
        };
        let id = flow.g.id(i);
        let mut uses: Vec<(String, Use, Span)> = Vec::new();
        if step.kind == StepKind::Task {
            if let Some(f) = step.assignee.as_deref() {
                if has_type(f, &[FieldType::User]) {
                    let at = doc.value_span(&ptr(&["steps", id, "assignee"]));
                    uses.push((f.to_string(), Use::Assignee, at));
                }
            }
            let dep = step
                .separation
                .as_ref()
                .and_then(|s| s.not_from_department.as_deref());
            if let Some(f) = dep {
                if has_type(f, &[FieldType::Department]) {
                    let at =
                        doc.value_span(&ptr(&["steps", id, "separation", "not_from_department"]));
                    uses.push((f.to_string(), Use::Separation, at));
                }
            }
        }
        // A due time that does not parse is `bad-duration`, reported elsewhere.
        if let Some((dl, due)) = step
            .deadline
            .as_ref()
            .and_then(|dl| dl.due.parse::<Due>().ok().map(|due| (dl, due)))
        {
            for f in due.fields() {
                if has_type(f, &[FieldType::Date, FieldType::Datetime]) {
                    let pointer = ptr(&["steps", id, "deadline", "due"]);
                    let word = word_in(&dl.due, f);
                    let at = super::duration::locate(doc, &pointer, &dl.due, word.as_ref());
                    uses.push((f.to_string(), Use::Deadline, at));
                }
            }
        }
        for (field, need, at) in uses {
            if !flow.has_value(i, &field) {
                found.push(Finding {
                    distance: d,
                    step: i,
                    field,
                    need,
                    at,
                });
            }
        }
    }
    found.sort_by_key(|f| (f.distance, f.step));
    let mut out: Vec<Diagnostic> = Vec::new();
    let mut reported: Vec<&str> = Vec::new();
    for f in &found {
        if reported.contains(&f.field.as_str()) {
            continue;
        }
        reported.push(&f.field);
        let mut also: Vec<&str> = found
            .iter()
            .filter(|g| g.field == f.field && g.step != f.step)
            .map(|g| flow.g.id(g.step))
            .collect();
        also.dedup();
        out.push(flow.report(f.step, &f.field, f.need, f.at.clone(), &also));
    }
    out
}

type Span = Option<std::ops::Range<usize>>;

/// A use of a field that may be empty when its step opens.
struct Finding {
    /// Fewest transitions from the start to the step: the nearest use is reported.
    distance: usize,
    step: usize,
    field: String,
    need: Use,
    /// Where the field is named.
    at: Span,
}

/// What a step needs the field for, which decides the sentence.
#[derive(Clone, Copy)]
enum Use {
    Assignee,
    Deadline,
    Separation,
}

/// A set of field indices.
#[derive(Clone, PartialEq, Eq)]
struct Set(Vec<u64>);

impl Set {
    fn empty(n: usize) -> Set {
        Set(vec![0; n.div_ceil(64)])
    }

    fn full(n: usize) -> Set {
        let mut s = Set(vec![u64::MAX; n.div_ceil(64)]);
        if !n.is_multiple_of(64) {
            if let Some(last) = s.0.last_mut() {
                *last = (1u64 << (n % 64)) - 1;
            }
        }
        s
    }

    fn insert(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn intersect(&mut self, other: &Set) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a &= b;
        }
    }

    fn union(&mut self, other: &Set) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// How a join's state is made: per branch, the steps of that branch leading into the join
/// (the parallel step itself for a branch that is the join alone).
struct JoinShape {
    branches: Vec<Vec<usize>>,
}

/// The analysis and its result.
struct Flow<'a> {
    g: Graph<'a>,
    proc: &'a Procedure,
    index: HashMap<&'a str, usize>,
    n: usize,
    start_data: Set,
    /// Set by the step however it completes: `compute`, `collect`.
    sets_always: Vec<Set>,
    /// Set by the step's form when a person completes it: its required fields.
    sets_by_form: Vec<Set>,
    joins: HashMap<usize, JoinShape>,
    /// Fields with a value when each step opens.
    before: Vec<Set>,
}

impl<'a> Flow<'a> {
    fn new(proc: &'a Procedure) -> Flow<'a> {
        let g = Graph::new(proc);
        let mut index: HashMap<&str, usize> = HashMap::new();
        // Every declared field gets an index, also those nothing sets for certain.
        for name in proc
            .data
            .keys()
            .chain(g.steps.iter().flat_map(|s| s.form.keys()))
        {
            intern(&mut index, name);
        }
        let data: Vec<usize> = proc
            .data
            .iter()
            .filter(|(_, f)| f.required)
            .map(|(k, _)| intern(&mut index, k))
            .collect();
        let mut always_idx: Vec<Vec<usize>> = Vec::new();
        let mut form_idx: Vec<Vec<usize>> = Vec::new();
        for step in &g.steps {
            let mut always: Vec<usize> =
                step.compute.keys().map(|k| intern(&mut index, k)).collect();
            if step.kind == StepKind::Subprocess {
                if let Some(c) = step.collect.as_deref() {
                    always.push(intern(&mut index, c));
                }
            }
            let form: Vec<usize> = if step.kind == StepKind::Task {
                step.form
                    .iter()
                    .filter(|(_, f)| f.required)
                    .map(|(k, _)| intern(&mut index, k))
                    .collect()
            } else {
                Vec::new()
            };
            always_idx.push(always);
            form_idx.push(form);
        }
        let n = index.len();
        let set_of = |idx: &[usize]| {
            let mut s = Set::empty(n);
            idx.iter().for_each(|&i| s.insert(i));
            s
        };
        let start_data = set_of(&data);
        let sets_always = always_idx.iter().map(|v| set_of(v)).collect();
        let sets_by_form = form_idx.iter().map(|v| set_of(v)).collect();
        let joins = join_shapes(&g);
        let steps = g.len();
        let mut flow = Flow {
            g,
            proc,
            index,
            n,
            start_data,
            sets_always,
            sets_by_form,
            joins,
            before: vec![Set::full(n); steps],
        };
        flow.solve();
        flow
    }

    /// Whether the clock may complete `step` with `take` and go on along a transition to
    /// `to`: then no form was filled in on that way.
    fn form_skipped(&self, from: usize, to: usize) -> bool {
        let step = self.g.steps[from];
        let target = self.g.id(to);
        let taken: Vec<&str> = step
            .deadline
            .iter()
            .flat_map(|d| d.on_breach.iter())
            .filter_map(|a| a.take.as_deref())
            .collect();
        !taken.is_empty()
            && step
                .next
                .iter()
                .any(|t| t.to == target && t.on.as_deref().is_none_or(|on| taken.contains(&on)))
    }

    /// Fields with a value on the way from `from` to its successor `to`.
    fn after(&self, from: usize, to: usize) -> Set {
        let mut s = self.before[from].clone();
        s.union(&self.sets_always[from]);
        if !self.form_skipped(from, to) {
            s.union(&self.sets_by_form[from]);
        }
        s
    }

    fn entering(&self, i: usize) -> Set {
        if let Some(shape) = self.joins.get(&i) {
            let mut union: Option<Set> = None;
            for preds in &shape.branches {
                // A branch that never arrives is graph.rs's to report; it adds nothing here.
                let Some(first) = preds.first() else { continue };
                let mut branch = self.after(*first, i);
                for &p in &preds[1..] {
                    branch.intersect(&self.after(p, i));
                }
                match &mut union {
                    Some(u) => u.union(&branch),
                    None => union = Some(branch),
                }
            }
            if let Some(u) = union {
                return u;
            }
        }
        let mut s = if Some(i) == self.g.start {
            self.start_data.clone()
        } else {
            Set::full(self.n)
        };
        for &p in &self.g.pred[i] {
            s.intersect(&self.after(p, i));
        }
        s
    }

    /// The greatest fixpoint: every step starts with every field and only loses fields, so
    /// the rounds end (at most one per field and step, in practice a few).
    fn solve(&mut self) {
        let limit = self.n.saturating_mul(self.g.len()).saturating_add(2);
        for _ in 0..limit {
            let mut changed = false;
            for i in 0..self.g.len() {
                let s = self.entering(i);
                if s != self.before[i] {
                    self.before[i] = s;
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }

    fn has_value(&self, step: usize, field: &str) -> bool {
        self.index
            .get(field)
            .is_some_and(|&f| self.before.get(step).is_some_and(|s| s.contains(f)))
    }

    /// A shortest way from the start to `target` along which `field` is never set.
    fn way_without(&self, target: usize, field: &str) -> Option<Vec<usize>> {
        let f = *self.index.get(field)?;
        let start = self.g.start?;
        if self.start_data.contains(f) {
            return None;
        }
        let mut parent: Vec<Option<usize>> = vec![None; self.g.len()];
        let mut seen = vec![false; self.g.len()];
        seen[start] = true;
        let mut queue = VecDeque::from([start]);
        while let Some(x) = queue.pop_front() {
            if x == target {
                let mut path = vec![x];
                let mut at = x;
                while let Some(p) = parent[at] {
                    path.push(p);
                    at = p;
                }
                path.reverse();
                return Some(path);
            }
            for &y in &self.g.succ[x] {
                if !seen[y] && !self.after(x, y).contains(f) {
                    seen[y] = true;
                    parent[y] = Some(x);
                    queue.push_back(y);
                }
            }
        }
        None
    }

    fn report(&self, step: usize, field: &str, need: Use, span: Span, also: &[&str]) -> Diagnostic {
        let id = self.g.id(step);
        let why = match self.way_without(step, field) {
            Some(path) if path.len() > 1 => format!(
                " (on the way {}, nothing sets it)",
                path.iter()
                    .map(|&i| format!("`{}`", self.g.id(i)))
                    .collect::<Vec<_>>()
                    .join(" → ")
            ),
            Some(_) => format!(" (`{id}` is the first step, and `[data]` does not require it)"),
            None => String::new(),
        };
        let (message, consequence) = match need {
            Use::Assignee => (
                format!("step `{id}` is for the person named in `{field}`, but `{field}` may be empty when the step opens{why}"),
                "an instance that gets here without it stops with an error. ",
            ),
            Use::Deadline => (
                format!("the deadline of step `{id}` counts from `{field}`, but `{field}` may be empty when the step opens{why}"),
                "without the date the due time cannot be computed and the instance stops with an error. ",
            ),
            Use::Separation => (
                format!("the separation rule of step `{id}` keeps out the department in `{field}`, but `{field}` may be empty when the step opens{why}, and the rule would then be skipped"),
                "",
            ),
        };
        let others = match also {
            [] => String::new(),
            [one] => format!(" Step `{one}` needs `{field}` too."),
            more => format!(
                " Steps {} need `{field}` too.",
                more.iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Diagnostic::error("field-may-be-empty", message)
            .at(span)
            .label("may be empty here")
            .help(format!("{consequence}{}.{others}", self.fix(id, field)))
    }

    /// How to give the field a value for sure, from where it is set now.
    fn fix(&self, step: &str, field: &str) -> String {
        let mut optional: Vec<String> = Vec::new();
        let mut certain: Vec<String> = Vec::new();
        let mut taken: Vec<&str> = Vec::new();
        if let Some(f) = self.proc.data.get(field) {
            if f.required {
                certain.push("`[data]`".into());
            } else {
                optional.push("`[data]`".into());
            }
        }
        for (sid, s) in &self.proc.steps {
            if let Some(f) = s.form.get(field) {
                if f.required && s.kind == StepKind::Task {
                    certain.push(format!("the form of `{sid}`"));
                    if takes(s) {
                        taken.push(sid);
                    }
                } else {
                    optional.push(format!("the form of `{sid}`"));
                }
            }
            if s.compute.contains_key(field) {
                certain.push(format!("`compute` of `{sid}`"));
            }
            if s.collect.as_deref() == Some(field) && s.kind == StepKind::Subprocess {
                certain.push(format!("`collect` of `{sid}`"));
            }
        }
        let mut hint = if !optional.is_empty() {
            format!(
                "Make `{field}` required (`required = true`) in {}, or set it in a step that always comes before `{step}`",
                optional.join(" and ")
            )
        } else if !certain.is_empty() {
            format!(
                "`{field}` is set only in {}, which not every instance passes on its way to `{step}`: set it in a step that always comes before `{step}`",
                certain.join(" and ")
            )
        } else {
            format!("No step sets `{field}`: declare it with `required = true` in `[data]` or in the form of a step that always comes before `{step}`")
        };
        for sid in taken {
            hint.push_str(&format!(
                "; `{sid}` may be completed by its deadline (`take`), which fills in no form"
            ));
        }
        hint
    }
}

fn takes(step: &Step) -> bool {
    step.deadline
        .iter()
        .flat_map(|d| d.on_breach.iter())
        .any(|a| a.take.is_some())
}

/// The joins whose parallel step is known, with the steps of each branch that lead into
/// them. A join named by two parallel steps, or not a join, is graph.rs's to report; it is
/// then treated as an ordinary step.
fn join_shapes(g: &Graph<'_>) -> HashMap<usize, JoinShape> {
    let mut out: HashMap<usize, JoinShape> = HashMap::new();
    for (p, join) in g.parallels() {
        let Some(j) = join.filter(|&j| g.kind(j) == Some(StepKind::Join)) else {
            continue;
        };
        if out.contains_key(&j) {
            continue;
        }
        let mut branches = Vec::new();
        for (_, b) in g.branches(p) {
            if b == j {
                branches.push(vec![p]);
                continue;
            }
            let region = g.reach(&[b], Some(j));
            let preds: Vec<usize> = g.pred[j]
                .iter()
                .copied()
                .filter(|&x| x != j && region.get(x).copied().unwrap_or(false))
                .collect();
            branches.push(preds);
        }
        out.insert(j, JoinShape { branches });
    }
    out
}

fn intern<'a>(index: &mut HashMap<&'a str, usize>, name: &'a str) -> usize {
    let next = index.len();
    *index.entry(name).or_insert(next)
}

/// Byte range of `word` standing alone in `text` (not part of a longer name).
fn word_in(text: &str, word: &str) -> Option<std::ops::Range<usize>> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word)
        .map(|(i, _)| i..i + word.len())
        .find(|r| {
            let before = text[..r.start].chars().next_back();
            let after = text[r.end..].chars().next();
            !before.is_some_and(is_name) && !after.is_some_and(is_name)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::semantic::{declared_fields, Context};

    /// (code, message, help, the text the diagnostic points at) for a procedure made of
    /// `body` after a common head.
    fn run(body: &str) -> Vec<(String, String, String)> {
        let src = format!("id = \"t\"\nversion = 1\ntitle = \"T\"\nstart = \"a\"\n[roles]\nclerk = \"Clerk\"\n{body}");
        let proc: Procedure = toml::from_str(&src).expect("parses");
        let doc = SpannedDoc::parse(&src).expect("spans");
        let fields = declared_fields(&proc, &Context::default());
        check(&proc, &doc, &fields)
            .into_iter()
            .map(|d| {
                assert_eq!(d.code, "field-may-be-empty");
                let at = d
                    .span
                    .clone()
                    .and_then(|s| src.get(s))
                    .unwrap_or_default()
                    .to_string();
                (d.message, d.help.unwrap_or_default(), at)
            })
            .collect()
    }

    const END: &str = "[steps.done]\nkind = \"end\"\n";

    #[test]
    fn a_person_chosen_in_a_required_field_of_an_earlier_step_is_fine() {
        let body = format!(
            r#"
[steps.a]
role = "clerk"
form.leader = {{ type = "user", required = true }}
next = [{{ to = "b" }}]
[steps.b]
assignee = "leader"
outcomes = ["ok", "again"]
next = [{{ to = "a", on = "again" }}, {{ to = "done" }}]
{END}"#
        );
        assert_eq!(run(&body), []);
    }

    #[test]
    fn an_optional_field_is_reported_at_the_assignee_with_the_way_there() {
        let body = format!(
            r#"
[steps.a]
role = "clerk"
form.leader = {{ type = "user" }}
next = [{{ to = "b" }}]
[steps.b]
assignee = "leader"
next = [{{ to = "done" }}]
{END}"#
        );
        let found = run(&body);
        assert_eq!(found.len(), 1, "{found:?}");
        let (message, help, at) = &found[0];
        assert_eq!(at, "\"leader\"");
        assert!(
            message.contains("on the way `a` → `b`, nothing sets it"),
            "{message}"
        );
        assert!(
            help.contains("`required = true`) in the form of `a`"),
            "{help}"
        );
    }

    #[test]
    fn one_missing_field_is_one_error_at_its_first_use() {
        let body = format!(
            r#"
[steps.c]
assignee = "leader"
next = [{{ to = "done" }}]
[steps.a]
role = "clerk"
form.leader = {{ type = "user" }}
next = [{{ to = "b" }}]
[steps.b]
assignee = "leader"
next = [{{ to = "c" }}]
{END}"#
        );
        let found = run(&body);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.starts_with("step `b`"), "{found:?}");
        assert!(
            found[0].1.ends_with("Step `c` needs `leader` too."),
            "{found:?}"
        );
    }

    #[test]
    fn a_field_set_on_one_way_only_is_reported_with_the_other_way() {
        let body = format!(
            r#"
[data]
big = {{ type = "boolean", required = true }}
[steps.a]
role = "clerk"
next = [{{ to = "choose", when = "big" }}, {{ to = "b" }}]
[steps.choose]
role = "clerk"
form.leader = {{ type = "user", required = true }}
next = [{{ to = "b" }}]
[steps.b]
assignee = "leader"
next = [{{ to = "done" }}]
{END}"#
        );
        let found = run(&body);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.contains("`a` → `b`,"), "{found:?}");
        assert!(
            found[0].1.contains("set only in the form of `choose`"),
            "{found:?}"
        );
    }

    #[test]
    fn the_first_step_sees_only_the_required_start_data() {
        let body = format!(
            r#"
[data]
owner = {{ type = "user" }}
boss = {{ type = "user", required = true }}
[steps.a]
assignee = "owner"
next = [{{ to = "b" }}]
[steps.b]
assignee = "boss"
next = [{{ to = "done" }}]
{END}"#
        );
        let found = run(&body);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.contains("`a` is the first step"), "{found:?}");
        assert!(found[0].1.contains("in `[data]`"), "{found:?}");
    }

    #[test]
    fn computed_and_collected_values_count_as_set() {
        let body = format!(
            r#"
[data]
list = {{ type = "list", items = {{ type = "string" }}, required = true }}
[steps.a]
kind = "auto"
compute.when_due = "timestamp('2027-01-01T00:00:00Z')"
next = [{{ to = "kids" }}]
[steps.kids]
kind = "subprocess"
procedure = "t"
for_each = "list"
collect = "results"
max_depth = 2
next = [{{ to = "b" }}]
[steps.b]
role = "clerk"
deadline = {{ due = "later of 2 days before when_due and 1 day" }}
next = [{{ to = "done" }}]
{END}"#
        );
        assert_eq!(run(&body), []);
    }

    #[test]
    fn a_due_date_that_may_be_empty_is_reported_at_its_name_in_the_due_text() {
        let body = format!(
            r#"
[steps.a]
role = "clerk"
form.planned_end = {{ type = "date" }}
next = [{{ to = "b" }}]
[steps.b]
role = "clerk"
deadline = {{ due = "earlier of 7 days and 3 days before planned_end" }}
next = [{{ to = "done" }}]
{END}"#
        );
        let found = run(&body);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].2, "planned_end");
        assert!(found[0]
            .0
            .starts_with("the deadline of step `b` counts from `planned_end`"));
    }

    #[test]
    fn a_department_to_keep_out_that_may_be_empty_is_reported() {
        let body = format!(
            r#"
[data]
audited = {{ type = "department" }}
[steps.a]
role = "clerk"
separation = {{ not_from_department = "audited" }}
next = [{{ to = "done" }}]
{END}"#
        );
        let found = run(&body);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].0.contains("rule would then be skipped"),
            "{found:?}"
        );
    }

    #[test]
    fn a_form_the_clock_may_skip_does_not_set_its_fields() {
        let body = format!(
            r#"
[steps.a]
role = "clerk"
outcomes = ["go", "wait"]
form.leader = {{ type = "user", required = true }}
deadline = {{ due = "1 day", on_breach = [{{ take = "go" }}] }}
next = [{{ to = "b", on = "go" }}, {{ to = "c", on = "wait" }}]
[steps.b]
assignee = "leader"
next = [{{ to = "done" }}]
[steps.c]
assignee = "leader"
next = [{{ to = "done" }}]
{END}"#
        );
        let found = run(&body);
        // Only the way the clock can take loses the form.
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.starts_with("step `b`"), "{found:?}");
        assert!(
            found[0]
                .1
                .contains("`a` may be completed by its deadline (`take`)"),
            "{found:?}"
        );
    }

    const PARALLEL: &str = r#"
[steps.a]
role = "clerk"
next = [{ to = "split" }]
[steps.split]
kind = "parallel"
branches = ["x", "y"]
join = "met"
[steps.x]
role = "clerk"
form.leader = { type = "user", required = true }
next = [{ to = "x2" }]
[steps.x2]
role = "clerk"
next = [{ to = "met" }, { to = "x" }]
[steps.y]
ASSIGNEE
next = [{ to = "met" }]
[steps.met]
kind = "join"
next = [{ to = "b" }]
[steps.b]
assignee = "leader"
next = [{ to = "done" }]
"#;

    #[test]
    fn after_a_join_every_branch_has_run() {
        let body = format!("{}{END}", PARALLEL.replace("ASSIGNEE", "role = \"clerk\""));
        assert_eq!(run(&body), []);
    }

    #[test]
    fn a_sibling_branch_may_not_have_run_yet() {
        let body = format!(
            "{}{END}",
            PARALLEL.replace("ASSIGNEE", "assignee = \"leader\"")
        );
        let found = run(&body);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.starts_with("step `y`"), "{found:?}");
        assert!(found[0].0.contains("`a` → `split` → `y`"), "{found:?}");
    }

    #[test]
    fn nested_parallel_blocks_pass_what_their_branches_set_outwards() {
        let body = format!(
            r#"
[steps.a]
role = "clerk"
next = [{{ to = "outer" }}]
[steps.outer]
kind = "parallel"
branches = ["inner", "z"]
join = "outer_met"
[steps.inner]
kind = "parallel"
branches = ["x", "y"]
join = "inner_met"
[steps.x]
role = "clerk"
form.leader = {{ type = "user", required = true }}
next = [{{ to = "inner_met" }}]
[steps.y]
role = "clerk"
next = [{{ to = "inner_met" }}]
[steps.inner_met]
kind = "join"
next = [{{ to = "after_inner" }}]
[steps.after_inner]
assignee = "leader"
next = [{{ to = "outer_met" }}]
[steps.z]
role = "clerk"
form.due_on = {{ type = "date", required = true }}
next = [{{ to = "outer_met" }}]
[steps.outer_met]
kind = "join"
next = [{{ to = "b" }}]
[steps.b]
assignee = "leader"
deadline = {{ due = "due_on" }}
next = [{{ to = "done" }}]
{END}"#
        );
        assert_eq!(run(&body), []);
        // Inside the outer block, `z` runs beside the inner one: it cannot count on `leader`.
        let beside = body.replace(
            "[steps.z]\nrole = \"clerk\"",
            "[steps.z]\nassignee = \"leader\"",
        );
        let found = run(&beside);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.starts_with("step `z`"), "{found:?}");
    }

    #[test]
    fn unreachable_steps_and_odd_graphs_are_left_alone() {
        let body = format!(
            r#"
[steps.a]
role = "clerk"
next = [{{ to = "nowhere" }}, {{ to = "done" }}]
[steps.lost]
assignee = "leader"
form.leader = {{ type = "user" }}
next = [{{ to = "lost" }}]
{END}"#
        );
        assert_eq!(run(&body), []);
    }

    #[test]
    fn sets_hold_any_number_of_fields() {
        for n in [0, 1, 63, 64, 65, 130] {
            let mut s = Set::full(n);
            let mut e = Set::empty(n);
            for i in 0..n {
                assert!(s.contains(i) && !e.contains(i));
                e.insert(i);
            }
            assert!(!s.contains(n) && !e.contains(n));
            s.intersect(&Set::empty(n));
            assert!(s == Set::empty(n));
            s.union(&e);
            assert!(s == Set::full(n));
        }
    }
}
