//! Pictures of a procedure: Mermaid `stateDiagram-v2` text and Graphviz DOT text, for process
//! owners reviewing a file and for documentation.
//!
//! Rendering shows what the file says and judges nothing: it must accept any procedure,
//! including one that failed validation (edges to unknown steps are drawn as written), must
//! never panic, and must produce output both tools parse whatever the titles and conditions
//! contain — every label goes through the escaping of its syntax. Output follows file order
//! so it is stable enough to snapshot.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::graph::successors;
use super::model::{Procedure, Step, StepKind, Transition};

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
                let text = node_lines(id, step)
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
                for t in &step.next {
                    let to = ids.get(&t.to);
                    match edge_label(t) {
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
        let label = dot_quote(&node_lines(id, step).join("\n"));
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
                for t in &step.next {
                    let to = dot_quote(&t.to);
                    match edge_label(t) {
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
    }
    let _ = writeln!(out, "}}");
    out
}

/// The text lines describing a step: title, who does it, what kind, when it is due.
fn node_lines(id: &str, step: &Step) -> Vec<String> {
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
        lines.push(format!("role: {}", one_line(role)));
    }
    if let Some(assignee) = &step.assignee {
        lines.push(format!("assigned to: {}", one_line(assignee)));
    }
    if let Some(deadline) = &step.deadline {
        lines.push(format!("due: {}", one_line(&deadline.due)));
    }
    lines
}

/// `approve [score >= 60]`, `approve`, `[score >= 60]` or nothing.
fn edge_label(t: &Transition) -> Option<String> {
    let on = t.on.as_deref().map(one_line).filter(|s| !s.is_empty());
    let when = t.when.as_deref().map(one_line).filter(|s| !s.is_empty());
    match (on, when) {
        (Some(on), Some(when)) => Some(format!("{on} [{when}]")),
        (Some(on), None) => Some(on),
        (None, Some(when)) => Some(format!("[{when}]")),
        (None, None) => None,
    }
}

/// Titles and conditions may span lines in TOML; a diagram label is one line.
fn one_line(s: &str) -> String {
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
        assert!(m.contains("    end_ --> state_\n"));
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
        assert_eq!(edge_label(&blank), None);
        let step = Step {
            title: Some("\n".into()),
            ..Step::default()
        };
        assert_eq!(node_lines("", &step), vec!["(unnamed)"]);
    }
}
