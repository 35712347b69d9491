//! Pictures of a procedure: Mermaid `stateDiagram-v2` text and Graphviz DOT text, for process
//! owners reviewing a file and for documentation.
//!
//! Besides steps and transitions, a picture shows what a process owner would otherwise have
//! to read the file for: the description of each step's role (from `[roles]`), which
//! transition is the default ("otherwise") after conditional ones, and what happens when a
//! deadline passes — a dashed "late → take …" edge for an automatic outcome, a note beside
//! the step for escalation, reassignment and notification.
//!
//! Rendering shows what the file says and judges nothing: it must accept any procedure,
//! including one that failed validation (edges to unknown steps are drawn as written), must
//! never panic, and must produce output both tools parse whatever the titles and conditions
//! contain — every label goes through the escaping of its syntax. Output follows file order
//! so it is stable enough to snapshot.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use indexmap::IndexMap;

use super::graph::successors;
use super::model::{BreachAction, Procedure, Step, StepKind, Transition};

/// The procedure as a Mermaid state diagram (`stateDiagram-v2`).
pub fn mermaid(proc: &Procedure) -> String {
    let ids = MermaidIds::new(proc);
    let mut out = String::new();
    let _ = writeln!(out, "---");
    // A JSON string is a valid YAML scalar, whatever the title holds. Mermaid decodes no
    // entities in the title and strips anything that looks like an HTML tag from it.
    let title = format!("{} (v{})", one_line(&proc.title), proc.version)
        .replace('<', "‹")
        .replace('>', "›");
    let title = serde_json::Value::String(title);
    let _ = writeln!(out, "title: {title}");
    let _ = writeln!(out, "---");
    let _ = writeln!(out, "stateDiagram-v2");
    let _ = writeln!(out, "    classDef auto stroke-dasharray: 5 5");
    let _ = writeln!(out, "    classDef subprocess stroke-width: 3px");
    let _ = writeln!(
        out,
        "    classDef finish font-weight: bold, stroke-width: 3px"
    );

    for (id, step) in &proc.steps {
        let mid = ids.get(id);
        match step.kind {
            StepKind::Parallel => {
                let _ = writeln!(out, "    state {mid} <<fork>>");
            }
            StepKind::Join => {
                let _ = writeln!(out, "    state {mid} <<join>>");
            }
            _ => {
                let text = node_lines(id, step, &proc.roles)
                    .iter()
                    .map(|l| mermaid_text(l))
                    .collect::<Vec<_>>()
                    .join("<br/>");
                let _ = writeln!(out, "    state \"{text}\" as {mid}");
            }
        }
    }

    let _ = writeln!(out, "    [*] --> {}", ids.get(&proc.start));
    for (id, step) in &proc.steps {
        let from = ids.get(id);
        match step.kind {
            StepKind::Parallel => {
                for b in &step.branches {
                    let _ = writeln!(out, "    {from} --> {}", ids.get(b));
                }
            }
            StepKind::End => {
                let _ = writeln!(out, "    {from} --> [*]");
            }
            _ => {
                for (i, t) in step.next.iter().enumerate() {
                    let to = ids.get(&t.to);
                    match edge_label(t, is_default(step, i)) {
                        Some(label) => {
                            let _ = writeln!(out, "    {from} --> {to} : {}", mermaid_text(&label));
                        }
                        None => {
                            let _ = writeln!(out, "    {from} --> {to}");
                        }
                    }
                }
            }
        }
        // Mermaid state diagrams have no dashed transitions; the label says it is the clock.
        for late in late_edges(step) {
            let _ = writeln!(
                out,
                "    {from} --> {} : {}",
                ids.get(late.to),
                mermaid_text(&late.label)
            );
        }
        let notes = late_notes(step);
        if !notes.is_empty() {
            let _ = writeln!(out, "    note right of {from}");
            for line in notes {
                let _ = writeln!(out, "        {}", mermaid_note_text(&line));
            }
            let _ = writeln!(out, "    end note");
        }
    }

    for (class, kind) in [
        ("auto", StepKind::Auto),
        ("subprocess", StepKind::Subprocess),
        ("finish", StepKind::End),
    ] {
        let members: Vec<&str> = proc
            .steps
            .iter()
            .filter(|(_, s)| s.kind == kind)
            .map(|(id, _)| ids.get(id))
            .collect();
        if !members.is_empty() {
            let _ = writeln!(out, "    class {} {class}", members.join(", "));
        }
    }
    out
}

/// The procedure as a Graphviz digraph (`dot -Tsvg`).
pub fn dot(proc: &Procedure) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_quote(&proc.id));
    let _ = writeln!(
        out,
        "    graph [rankdir=TB, fontname=\"Helvetica\", labelloc=t, forcelabels=true, label={}];",
        dot_quote(&format!("{} (v{})", proc.title, proc.version))
    );
    let _ = writeln!(
        out,
        "    node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=10];"
    );
    let _ = writeln!(out, "    edge [fontname=\"Helvetica\", fontsize=9];");

    // The start marker must not share a name with a step.
    let mut start = String::from("__start__");
    while proc.steps.contains_key(&start) {
        start.push('_');
    }
    let _ = writeln!(
        out,
        "    {} [shape=point, width=0.2, label=\"\"];",
        dot_quote(&start)
    );

    for (id, step) in &proc.steps {
        let q = dot_quote(id);
        let label = dot_quote(&node_lines(id, step, &proc.roles).join("\n"));
        let attrs = match step.kind {
            StepKind::Parallel | StepKind::Join => format!(
                "shape=box, style=filled, fillcolor=black, fixedsize=true, width=1.6, \
                 height=0.08, label=\"\", xlabel={}",
                dot_quote(id)
            ),
            StepKind::End => format!("shape=doublecircle, label={}", dot_quote(id)),
            StepKind::Auto => format!("style=\"rounded,dashed\", label={label}"),
            StepKind::Subprocess => format!("peripheries=2, label={label}"),
            StepKind::Task => format!("label={label}"),
        };
        let _ = writeln!(out, "    {q} [{attrs}];");
    }

    let _ = writeln!(
        out,
        "    {} -> {};",
        dot_quote(&start),
        dot_quote(&proc.start)
    );
    for (id, step) in &proc.steps {
        let from = dot_quote(id);
        match step.kind {
            StepKind::Parallel => {
                for b in &step.branches {
                    let _ = writeln!(out, "    {from} -> {};", dot_quote(b));
                }
            }
            StepKind::End => {}
            _ => {
                for (i, t) in step.next.iter().enumerate() {
                    let to = dot_quote(&t.to);
                    match edge_label(t, is_default(step, i)) {
                        Some(label) => {
                            let _ =
                                writeln!(out, "    {from} -> {to} [label={}];", dot_quote(&label));
                        }
                        None => {
                            let _ = writeln!(out, "    {from} -> {to};");
                        }
                    }
                }
            }
        }
        for late in late_edges(step) {
            let _ = writeln!(
                out,
                "    {from} -> {} [{LATE_STYLE}, label={}];",
                dot_quote(late.to),
                dot_quote(&late.label)
            );
        }
        let notes = late_notes(step);
        if !notes.is_empty() {
            // A name no step has, as for the start marker.
            let mut note = format!("__late__{id}");
            while proc.steps.contains_key(&note) {
                note.push('_');
            }
            let note = dot_quote(&note);
            let _ = writeln!(
                out,
                "    {note} [shape=note, style=dashed, {LATE_COLOURS}, fontsize=9, label={}];",
                dot_quote(&notes.join("\n"))
            );
            let _ = writeln!(out, "    {from} -> {note} [{LATE_STYLE}, arrowhead=none];");
            // Beside its step rather than somewhere below.
            let _ = writeln!(out, "    {{ rank=same; {from}; {note}; }}");
        }
    }
    let _ = writeln!(out, "}}");
    out
}

/// What the clock does is drawn dashed and in one colour, apart from what people do.
const LATE_COLOURS: &str = "color=firebrick, fontcolor=firebrick";
const LATE_STYLE: &str = "style=dashed, color=firebrick, fontcolor=firebrick";

/// An edge the deadline takes: the step completed by the clock with an outcome (`take`).
struct LateEdge<'a> {
    to: &'a str,
    label: String,
}

/// One dashed edge per transition a breach `take` may follow: those for its outcome (or
/// for any outcome), each with its condition, in file order.
fn late_edges(step: &Step) -> Vec<LateEdge<'_>> {
    let Some(deadline) = &step.deadline else {
        return Vec::new();
    };
    let mut edges = Vec::new();
    for action in &deadline.on_breach {
        let Some(outcome) = action.take.as_deref() else {
            continue;
        };
        let mut what = format!("{} → take {}", late_when(action), one_line(outcome));
        if action.even_if_claimed {
            what.push_str(" (even if claimed)");
        }
        for (i, t) in step.next.iter().enumerate() {
            if t.on.as_deref().is_some_and(|on| on != outcome) {
                continue;
            }
            let condition = match condition(t) {
                Some(when) => format!(" [{when}]"),
                None if is_default(step, i) => ", otherwise".to_string(),
                None => String::new(),
            };
            edges.push(LateEdge {
                to: &t.to,
                label: format!("{what}{condition}"),
            });
        }
    }
    edges
}

/// The note beside a step: each breach action other than a `take` that has an edge, in
/// order, with how late it happens.
fn late_notes(step: &Step) -> Vec<String> {
    let Some(deadline) = &step.deadline else {
        return Vec::new();
    };
    let has_edge = |outcome: &str| {
        step.next
            .iter()
            .any(|t| t.on.as_deref().is_none_or(|on| on == outcome))
    };
    deadline
        .on_breach
        .iter()
        .filter_map(|a| {
            let what = if let Some(role) = &a.escalate_to {
                format!("escalate to {}", one_line(role))
            } else if let Some(role) = &a.reassign_to {
                format!("reassign to {}", one_line(role))
            } else if let Some(role) = &a.notify {
                format!("notify {}", one_line(role))
            } else if let Some(outcome) = a.take.as_deref().filter(|o| !has_edge(o)) {
                format!("take {}", one_line(outcome))
            } else {
                return None;
            };
            Some(format!("{} → {what}", late_when(a)))
        })
        .collect()
}

/// `late`, or `1 working day late` for an action that waits after the due time.
fn late_when(action: &BreachAction) -> String {
    match action
        .after
        .as_deref()
        .map(one_line)
        .filter(|a| !a.is_empty())
    {
        Some(after) => format!("{after} late"),
        None => "late".to_string(),
    }
}

/// The text lines describing a step: title, who does it, what kind, when it is due.
fn node_lines(id: &str, step: &Step, roles: &IndexMap<String, String>) -> Vec<String> {
    let title = step
        .title
        .as_deref()
        .map(one_line)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| one_line(id));
    // An empty description would break Mermaid's `state "…" as x`.
    let title = if title.is_empty() {
        "(unnamed)".to_string()
    } else {
        title
    };
    let mut lines = vec![title];
    match step.kind {
        StepKind::Auto => lines.push("(automatic)".to_string()),
        StepKind::Subprocess => {
            let child = step.procedure.as_deref().unwrap_or("?");
            lines.push(match step.for_each.as_deref() {
                Some(list) => format!("runs procedure {child} for each item of {list}"),
                None => format!("runs procedure {child}"),
            });
        }
        StepKind::End => lines.push("(end)".to_string()),
        StepKind::Task | StepKind::Parallel | StepKind::Join => {}
    }
    if let Some(role) = &step.role {
        // The id is what the file says; the description is what it means to a reader.
        let described = match roles.get(role).map(|d| one_line(d)) {
            Some(d) if !d.is_empty() => format!("role: {} — {d}", one_line(role)),
            _ => format!("role: {}", one_line(role)),
        };
        lines.extend(wrap(&described, WRAP));
    }
    if let Some(assignee) = &step.assignee {
        lines.push(format!("assigned to: {}", one_line(assignee)));
    }
    if let Some(deadline) = &step.deadline {
        lines.push(format!("due: {}", one_line(&deadline.due)));
    }
    lines
}

/// Lines of a role description are cut near this many characters, so a long description
/// makes a step taller rather than the whole picture wider.
const WRAP: usize = 48;

/// `text` in lines of at most `width` characters, broken between words (a longer word
/// stands alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// The transition's condition on one line, if it has one.
pub(crate) fn condition(t: &Transition) -> Option<String> {
    t.when.as_deref().map(one_line).filter(|s| !s.is_empty())
}

/// Whether transition `i` of `step` is a default: it has no condition, and a conditional
/// transition before it may apply to the same outcome — so it is taken "otherwise".
pub(crate) fn is_default(step: &Step, i: usize) -> bool {
    let Some(t) = step.next.get(i) else {
        return false;
    };
    let same_outcome = |a: Option<&str>, b: Option<&str>| match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    condition(t).is_none()
        && step.next[..i]
            .iter()
            .any(|e| condition(e).is_some() && same_outcome(e.on.as_deref(), t.on.as_deref()))
}

/// `approve [score >= 60]`, `approve`, `[score >= 60]`, `otherwise`, `approve, otherwise`
/// or nothing.
pub(crate) fn edge_label(t: &Transition, default: bool) -> Option<String> {
    let on = t.on.as_deref().map(one_line).filter(|s| !s.is_empty());
    match (on, condition(t)) {
        (Some(on), Some(when)) => Some(format!("{on} [{when}]")),
        (Some(on), None) if default => Some(format!("{on}, otherwise")),
        (Some(on), None) => Some(on),
        (None, Some(when)) => Some(format!("[{when}]")),
        (None, None) if default => Some("otherwise".to_string()),
        (None, None) => None,
    }
}

/// Titles and conditions may span lines in TOML; a diagram label is one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Mermaid text with every character that ends or changes a label written as an entity
/// (`#quot;`, `#58;`…), which Mermaid turns back into the character when drawing.
fn mermaid_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            ':' => out.push_str("#58;"),
            ';' => out.push_str("#59;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '{' => out.push_str("#123;"),
            '}' => out.push_str("#125;"),
            '&' => out.push_str("#amp;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text of a line inside a Mermaid `note … end note`: escaped like any label, and never
/// holding `end note`, which would end the note early (whatever its case or spacing: the
/// space becomes an entity, which Mermaid draws as a space).
fn mermaid_note_text(s: &str) -> String {
    let text = mermaid_text(&one_line(s));
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in lower.match_indices("end note") {
        out.push_str(&text[last..at + 3]);
        out.push_str("#32;");
        last = at + 4;
    }
    out.push_str(&text[last..]);
    out
}

/// A DOT quoted string: every id and label is one, so no keyword or symbol can break it.
fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Mermaid state ids for step ids. Step ids are usually already valid, but a step may be
/// called `end` or `state` (Mermaid keywords) or contain characters Mermaid ids cannot, and
/// edges may name steps that do not exist: each name gets a unique safe id.
struct MermaidIds {
    map: HashMap<String, String>,
}

const MERMAID_KEYWORDS: &[&str] = &[
    "end",
    "state",
    "note",
    "direction",
    "class",
    "classdef",
    "style",
    "default",
    "as",
    "fork",
    "join",
    "choice",
    "hide",
    "scale",
    "click",
    "acctitle",
    "accdescr",
    "left",
    "right",
    "of",
    "over",
    "tb",
    "bt",
    "lr",
    "rl",
    "statediagram",
    "statediagram-v2",
    "title",
];

impl MermaidIds {
    fn new(proc: &Procedure) -> Self {
        let mut names: Vec<&str> = vec![proc.start.as_str()];
        for (id, step) in &proc.steps {
            names.push(id);
            names.extend(successors(step));
        }
        // Steps get first pick, so a valid step id stays itself.
        let mut ordered: Vec<&str> = proc.steps.keys().map(String::as_str).collect();
        ordered.extend(names);
        let mut map = HashMap::new();
        let mut used = HashSet::new();
        for name in ordered {
            if map.contains_key(name) {
                continue;
            }
            let mut base: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if !base.starts_with(|c: char| c.is_ascii_alphabetic()) {
                base.insert_str(0, "s_");
            }
            if MERMAID_KEYWORDS.contains(&base.to_ascii_lowercase().as_str()) {
                base.push('_');
            }
            let mut candidate = base.clone();
            let mut n = 2;
            while used.contains(&candidate) {
                candidate = format!("{base}_{n}");
                n += 1;
            }
            used.insert(candidate.clone());
            map.insert(name.to_string(), candidate);
        }
        MermaidIds { map }
    }

    fn get(&self, name: &str) -> &str {
        self.map.get(name).map_or("unknown_", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
id = "esc"
version = 2
title = 'Quotes "and" colons: {braces} <tags> #hash; semi'
start = "end"

[steps.end]
title = "Start \"here\"\nsecond line"
role = "quality"
deadline = { due = "3 working days" }
outcomes = ["approve", "reject"]
next = [
  { to = "split", on = "approve", when = "score >= 60 && note != \"x: y; z\"" },
  { to = "rejected", on = "reject" },
  { to = "state" },
]

[steps.state]
kind = "auto"
next = [{ to = "missing step" }]

[steps.split]
kind = "parallel"
branches = ["kids", "who"]
join = "met"

[steps.kids]
kind = "subprocess"
procedure = "corrective-action"
for_each = "items"
next = [{ to = "met" }]

[steps.who]
assignee = "leader"
next = [{ to = "met" }]

[steps.met]
kind = "join"
next = [{ to = "closed" }]

[steps.closed]
kind = "end"

[steps.rejected]
kind = "end"
"#;

    fn proc() -> Procedure {
        toml::from_str(SRC).unwrap()
    }

    #[test]
    fn mermaid_escapes_labels_and_avoids_keywords() {
        let m = mermaid(&proc());
        assert!(m.starts_with("---\ntitle: \"Quotes \\\"and\\\" colons: {braces} ‹tags› #hash; semi (v2)\"\n---\nstateDiagram-v2\n"), "{m}");
        // The step called `end` is a Mermaid keyword; it gets another id.
        assert!(m.contains("    state \"Start #quot;here#quot; second line<br/>role#58; quality<br/>due#58; 3 working days\" as end_\n"), "{m}");
        assert!(m.contains("    [*] --> end_\n"));
        assert!(m.contains("    end_ --> split : approve [score #gt;= 60 #amp;#amp; note != #quot;x#58; y#59; z#quot;]\n"), "{m}");
        // After a conditional transition for `approve`, the bare one is the default.
        assert!(m.contains("    end_ --> state_ : otherwise\n"), "{m}");
        assert!(m.contains("    state_ --> missing_step\n"));
        assert!(
            m.contains("    state split <<fork>>\n    state \"kids<br/>"),
            "{m}"
        );
        assert!(m.contains("    state met <<join>>\n"));
        assert!(m.contains("runs procedure corrective-action for each item of items"));
        assert!(m.contains("assigned to#58; leader"));
        assert!(m.contains("    closed --> [*]\n    rejected --> [*]\n"));
        assert!(m.contains("    class closed, rejected finish\n"));
        // Nothing that ends a label survives unescaped inside one.
        for line in m.lines().filter(|l| l.contains(" as ")) {
            let inner = &line[line.find('"').unwrap() + 1..line.rfind('"').unwrap()];
            assert!(
                !inner.contains(['"', ':', ';', '{', '}', '<', '>']) || inner.contains("<br/>"),
                "{line}"
            );
        }
    }

    #[test]
    fn dot_quotes_every_id_and_label() {
        let d = dot(&proc());
        assert!(d.starts_with("digraph \"esc\" {\n"));
        assert!(d.contains("label=\"Quotes \\\"and\\\" colons: {braces} <tags> #hash; semi (v2)\""));
        assert!(d.contains("    \"end\" [label=\"Start \\\"here\\\" second line\\nrole: quality\\ndue: 3 working days\"];\n"), "{d}");
        assert!(d.contains("    \"__start__\" -> \"end\";\n"));
        assert!(d.contains("    \"end\" -> \"split\" [label=\"approve [score >= 60 && note != \\\"x: y; z\\\"]\"];\n"), "{d}");
        assert!(d.contains("    \"state\" -> \"missing step\";\n"));
        assert!(d.contains("\"closed\" [shape=doublecircle, label=\"closed\"]"));
        assert!(d.contains("\"split\" [shape=box, style=filled, fillcolor=black"));
        assert!(d.contains("\"kids\" [peripheries=2, label=\"kids\\nruns procedure corrective-action for each item of items\"]"), "{d}");
        assert!(d.contains("\"state\" [style=\"rounded,dashed\""));
        assert!(d.ends_with("}\n"));
    }

    /// Roles with descriptions, a default transition per outcome, and every breach action,
    /// with text that would break either syntax.
    const LATE: &str = r#"
id = "late"
version = 1
title = "Late"
start = "review"

[roles]
reviewer = 'Reviewer of "documents": checks; #1 {x} <y> & end note and the long tail of words'
boss = "Boss"

[steps.review]
title = "Review"
role = "reviewer"
outcomes = ["approve", "reject"]
next = [
  { to = "done", on = "approve", when = "score >= 60" },
  { to = "rework", on = "approve" },
  { to = "done", on = "reject" },
]

[steps.review.deadline]
due = "3 working days"
on_breach = [
  { escalate_to = "boss" },
  { after = "1 working day", notify = "x: End  Note; {y}" },
  { after = "2 days", take = "approve", even_if_claimed = true },
  { reassign_to = "other" },
  { take = "no_such_outcome" },
]

[steps.rework]
role = "nobody_described"
next = [{ to = "review" }]

[steps.done]
kind = "end"
"#;

    fn late() -> Procedure {
        toml::from_str(LATE).unwrap()
    }

    #[test]
    fn roles_are_described_and_defaults_labelled() {
        let m = mermaid(&late());
        assert!(
            m.contains("<br/>role#58; reviewer — Reviewer of #quot;documents#quot;#58;<br/>checks#59; #35;1 #123;x#125; #lt;y#gt; #amp; end note and the long tail<br/>of words<br/>due#58; 3 working days\" as review\n"),
            "{m}"
        );
        assert!(
            m.contains("<br/>role#58; nobody_described\" as rework"),
            "{m}"
        );
        assert!(
            m.contains("    review --> done : approve [score #gt;= 60]\n"),
            "{m}"
        );
        assert!(
            m.contains("    review --> rework : approve, otherwise\n"),
            "{m}"
        );
        // A transition for another outcome is no default of `approve`.
        assert!(m.contains("    review --> done : reject\n"), "{m}");
        let d = dot(&late());
        assert!(d.contains("\\nrole: reviewer — Reviewer of \\\"documents\\\":\\nchecks; #1 {x} <y> & end note and the long tail\\nof words\\ndue: 3 working days\""), "{d}");
        assert!(
            d.contains("    \"review\" -> \"rework\" [label=\"approve, otherwise\"];\n"),
            "{d}"
        );
    }

    #[test]
    fn breach_actions_are_drawn() {
        let m = mermaid(&late());
        assert!(m.contains("    review --> done : 2 days late → take approve (even if claimed) [score #gt;= 60]\n"), "{m}");
        assert!(
            m.contains(
                "    review --> rework : 2 days late → take approve (even if claimed), otherwise\n"
            ),
            "{m}"
        );
        assert!(
            m.contains(
                "    note right of review\n        late → escalate to boss\n        1 working day late → notify x#58; End#32;Note#59; #123;y#125;\n        late → reassign to other\n        late → take no_such_outcome\n    end note\n"
            ),
            "{m}"
        );
        // Only the real end of the note says `end note`.
        let note = &m[m.find("note right of").unwrap()..];
        let body = &note[..note.find("\n    end note").unwrap()];
        assert!(!body.to_ascii_lowercase().contains("end note"), "{body}");

        let d = dot(&late());
        assert!(d.contains("    \"review\" -> \"done\" [style=dashed, color=firebrick, fontcolor=firebrick, label=\"2 days late → take approve (even if claimed) [score >= 60]\"];\n"), "{d}");
        assert!(d.contains("    \"__late__review\" [shape=note, style=dashed, color=firebrick, fontcolor=firebrick, fontsize=9, label=\"late → escalate to boss\\n1 working day late → notify x: End Note; {y}\\nlate → reassign to other\\nlate → take no_such_outcome\"];\n"), "{d}");
        assert!(d.contains("    \"review\" -> \"__late__review\" [style=dashed, color=firebrick, fontcolor=firebrick, arrowhead=none];\n"), "{d}");
        assert!(
            d.contains("    { rank=same; \"review\"; \"__late__review\"; }\n"),
            "{d}"
        );
        // No note for a step without deadline actions.
        assert!(!d.contains("__late__rework"), "{d}");
    }

    #[test]
    fn a_note_never_takes_a_steps_name() {
        let mut p = late();
        let taken = p.steps["rework"].clone();
        p.steps.insert("__late__review".into(), taken);
        let d = dot(&p);
        assert!(d.contains("    \"__late__review_\" [shape=note"), "{d}");
    }

    #[test]
    fn lines_wrap_between_words() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(
            wrap("averyveryverylongword b", 4),
            vec!["averyveryverylongword", "b"]
        );
        assert_eq!(wrap("", 4), vec![""]);
    }

    #[test]
    fn output_is_deterministic_and_survives_an_empty_procedure() {
        assert_eq!(mermaid(&proc()), mermaid(&proc()));
        assert_eq!(dot(&proc()), dot(&proc()));
        let mut p = proc();
        p.steps.clear();
        assert!(mermaid(&p).contains("[*] --> end_"));
        assert!(dot(&p).contains("-> \"end\""));
    }

    #[test]
    fn escaping_helpers() {
        assert_eq!(
            mermaid_text("a\"b:c;d#e{f}<g>&"),
            "a#quot;b#58;c#59;d#35;e#123;f#125;#lt;g#gt;#amp;"
        );
        assert_eq!(dot_quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(one_line("  two\n  lines "), "two lines");
        let blank = Transition {
            to: "x".into(),
            on: Some(" ".into()),
            when: Some(String::new()),
        };
        assert_eq!(edge_label(&blank, false), None);
        let step = Step {
            title: Some("\n".into()),
            ..Step::default()
        };
        assert_eq!(node_lines("", &step, &IndexMap::new()), vec!["(unnamed)"]);
    }
}
