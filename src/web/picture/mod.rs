//! The procedure picture: a procedure's state graph drawn as SVG on the server (layout-rs),
//! with each step marked — where an instance is now, where it has been, how many instances
//! wait at a step and how many were late there (the process owner's heat map).
//! It must draw only presentation attributes (no `style` attributes or `<style>` elements, which
//! the web app's Content-Security-Policy forbids) and escape every label.
//!
//! layout-rs only places things here. Its own SVG writer emits a `<style>` block and guesses
//! text widths from the font size, so this module gives it boxes of the sizes it measured
//! itself, records where layout-rs puts them and the edge curves it computes (through a
//! `RenderBackend` that draws nothing), and writes the SVG on its own. layout-rs checks its
//! invariants with panics; a picture is not worth a failed page, so a panic (or a
//! non-finite coordinate) is caught and the graph placed more simply (see `place`).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::format::RenderBackend;
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;

use crate::definition::model::{Procedure, Step, StepKind};
use crate::definition::render::{condition, edge_label, is_default, one_line};

mod draw;
mod placement;

use super::svg::{text_width, FONT};

use draw::*;
use placement::*;

/// How one step is marked in the picture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepMark {
    /// An open task of the instance is at this step.
    pub current: bool,
    /// The instance has been here (a task of it completed at this step, or it passed an
    /// automatic step).
    pub visited: bool,
    /// Instances waiting at this step now (heat map); 0 draws no badge.
    pub waiting: u64,
    /// Times this step was late (breaches) in the period shown; 0 draws no badge.
    pub late: u64,
}

/// The SVG picture of `proc`, steps marked by `marks` (steps without a mark are plain).
pub fn procedure_svg(proc: &Procedure, marks: &HashMap<String, StepMark>) -> String {
    let graph = Graph::of(proc, marks);
    let placed = place(&proc.id, &graph);
    draw(proc, &graph, &placed)
}

const TITLE_PX: f64 = 14.0;
const TITLE_LINE: f64 = 18.0;
const LABEL_PX: f64 = 12.0;
const LABEL_LINE: f64 = 15.0;
/// Titles and edge labels are cut near these many characters, so a long title makes a box
/// taller rather than the whole picture wider (and smaller once scaled to the page).
const TITLE_WRAP: usize = 24;
const LABEL_WRAP: usize = 26;
const PAD: (f64, f64) = (12.0, 8.0);
/// Bold text is this much wider.
const BOLD: f64 = 1.1;
const BAR: (f64, f64) = (120.0, 8.0);
const START_DOT: f64 = 14.0;
/// Past this `span_estimate` layout-rs's crossing optimiser is skipped (it would take
/// a tenth of a second and more), and past the second layout-rs is (seconds).
const SPAN_BUDGET: usize = 150;
const MAX_SPAN: usize = 3000;
/// The room around a label's text, by attempt (see `place`). 8 lays out every shipped
/// procedure at the first attempt, however marked (a test checks it).
const LABEL_MARGINS: [Option<f64>; 3] = [Some(8.0), Some(0.0), None];

const INK: &str = "#111827";
const EDGE: &str = "#4b5563";
const LATE: &str = "#991b1b";
const BAR_FILL: &str = "#374151";
/// Arrow heads, grey and late red; `auto-start-reverse` turns a head at a path's start
/// around (layout-rs reverses back edges).
const HEADS: &str = "\
<marker id=\"sopflow-head\" viewBox=\"0 0 10 9\" refX=\"10\" refY=\"4.5\" markerWidth=\"10\" \
markerHeight=\"9\" markerUnits=\"userSpaceOnUse\" orient=\"auto-start-reverse\">\
<path d=\"M0 0 L10 4.5 L0 9 Z\" fill=\"#4b5563\"/></marker>\
<marker id=\"sopflow-late\" viewBox=\"0 0 10 9\" refX=\"10\" refY=\"4.5\" markerWidth=\"10\" \
markerHeight=\"9\" markerUnits=\"userSpaceOnUse\" orient=\"auto-start-reverse\">\
<path d=\"M0 0 L10 4.5 L0 9 Z\" fill=\"#991b1b\"/></marker>";

/// What one box of the picture is.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Start,
    Step(StepKind),
    /// A transition names a step the procedure does not have (only in files that failed
    /// validation, but the picture must draw them as written).
    Missing,
}

struct Node {
    kind: Kind,
    lines: Vec<String>,
    tooltip: String,
    mark: StepMark,
    size: (f64, f64),
}

struct Edge {
    from: usize,
    to: usize,
    label: Vec<String>,
    late: bool,
}

struct Graph {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

impl Graph {
    /// The start dot, the steps in file order, then a box per unknown name; the edges
    /// `definition::render` draws, with its labels.
    fn of(proc: &Procedure, marks: &HashMap<String, StepMark>) -> Graph {
        let start = Node {
            kind: Kind::Start,
            lines: Vec::new(),
            tooltip: "start".into(),
            mark: StepMark::default(),
            size: (START_DOT, START_DOT),
        };
        let mut nodes = vec![start];
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (id, step) in &proc.steps {
            index.insert(id.as_str(), nodes.len());
            nodes.push(step_node(
                id,
                step,
                marks.get(id).cloned().unwrap_or_default(),
            ));
        }
        let mut raw: Vec<(usize, &str, Option<String>, bool)> =
            vec![(0, proc.start.as_str(), None, false)];
        for (from, step) in proc.steps.values().enumerate() {
            let from = from + 1;
            match step.kind {
                StepKind::Parallel => raw.extend(
                    step.branches
                        .iter()
                        .map(|b| (from, b.as_str(), None, false)),
                ),
                StepKind::End => {}
                _ => raw.extend(step.next.iter().enumerate().map(|(i, t)| {
                    (
                        from,
                        t.to.as_str(),
                        edge_label(t, is_default(step, i)),
                        false,
                    )
                })),
            }
            raw.extend(
                late_edges(step)
                    .into_iter()
                    .map(|(to, l)| (from, to, Some(l), true)),
            );
        }
        let mut edges: Vec<Edge> = Vec::with_capacity(raw.len());
        let mut at: HashMap<(usize, usize, bool), usize> = HashMap::new();
        for (from, to, label, late) in raw {
            let to = *index.entry(to).or_insert_with(|| {
                nodes.push(missing_node(to));
                nodes.len() - 1
            });
            let label = label.map(|l| wrap(&l, LABEL_WRAP)).unwrap_or_default();
            // One edge per pair of boxes, its labels stacked: two arrows between the same
            // boxes would be drawn on top of each other, and layout-rs trips over them.
            match at.get(&(from, to, late)) {
                Some(&i) => edges[i].label.extend(label),
                None => {
                    at.insert((from, to, late), edges.len());
                    edges.push(Edge {
                        from,
                        to,
                        label,
                        late,
                    });
                }
            }
        }
        Graph { nodes, edges }
    }

    /// What layout-rs is given, hashed: a graph that made it panic is not given to it again.
    fn shape_hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for n in &self.nodes {
            (n.size.0.to_bits(), n.size.1.to_bits()).hash(&mut h);
        }
        for e in &self.edges {
            let (w, lh) = label_size(&e.label);
            (e.from, e.to, w.to_bits(), lh.to_bits()).hash(&mut h);
        }
        h.finish()
    }
}

fn step_node(id: &str, step: &Step, mark: StepMark) -> Node {
    let title = step
        .title
        .as_deref()
        .map(one_line)
        .filter(|t| !t.is_empty());
    let title = title.unwrap_or_else(|| one_line(id));
    let mut tooltip = if title == one_line(id) {
        title.clone()
    } else {
        format!("{title} ({})", one_line(id))
    };
    if let Some(role) = &step.role {
        let _ = write!(tooltip, " — role: {}", one_line(role));
    }
    if let Some(deadline) = &step.deadline {
        let _ = write!(tooltip, " — due: {}", one_line(&deadline.due));
    }
    if let (StepKind::Subprocess, Some(child)) = (step.kind, &step.procedure) {
        let _ = write!(tooltip, " — runs procedure {}", one_line(child));
    }
    let badges = badges(&mark);
    if !badges.is_empty() {
        let _ = write!(tooltip, " — {}", badges.join(", "));
    }
    let kind = Kind::Step(step.kind);
    if matches!(step.kind, StepKind::Parallel | StepKind::Join) {
        return Node {
            kind,
            lines: Vec::new(),
            tooltip,
            mark,
            size: BAR,
        };
    }
    let mut lines = wrap(&title, TITLE_WRAP);
    if lines.iter().all(|l| l.is_empty()) {
        lines = vec!["(unnamed)".into()];
    }
    if step.kind == StepKind::Auto {
        lines.push("(automatic)".into());
    }
    boxed(kind, lines, tooltip, mark)
}

fn missing_node(name: &str) -> Node {
    let lines = wrap(&format!("missing step: {}", one_line(name)), TITLE_WRAP);
    let tooltip = format!("no step is called {}", one_line(name));
    boxed(Kind::Missing, lines, tooltip, StepMark::default())
}

/// A box sized for its lines and counts.
fn boxed(kind: Kind, lines: Vec<String>, tooltip: String, mark: StepMark) -> Node {
    // The current step's title is bold, and bold is wider.
    let bold = if mark.current { BOLD } else { 1.0 };
    let mut width = lines
        .iter()
        .map(|l| text_width(l, TITLE_PX) * bold)
        .fold(0.0, f64::max);
    let mut height = lines.len() as f64 * TITLE_LINE;
    let badges = badges(&mark);
    if !badges.is_empty() {
        width = width.max(text_width(&badges.join(" · "), TITLE_PX) * BOLD);
        height += TITLE_LINE;
    }
    // Room for the side bars of a subprocess and the round ends of an end step.
    let extra = match kind {
        Kind::Step(StepKind::Subprocess) => 16.0,
        Kind::Step(StepKind::End) => height / 2.0,
        _ => 0.0,
    };
    let size = (
        (width + 2.0 * PAD.0 + extra).max(96.0).ceil(),
        (height + 2.0 * PAD.1).ceil(),
    );
    Node {
        kind,
        lines,
        tooltip,
        mark,
        size,
    }
}

fn badges(mark: &StepMark) -> Vec<String> {
    let waiting = (mark.waiting > 0).then(|| format!("{} waiting", mark.waiting));
    let late = (mark.late > 0).then(|| format!("{} late", mark.late));
    waiting.into_iter().chain(late).collect()
}

fn label_size(label: &[String]) -> (f64, f64) {
    let w = label
        .iter()
        .map(|l| text_width(l, LABEL_PX))
        .fold(0.0, f64::max);
    (w, label.len() as f64 * LABEL_LINE)
}

// The edges and their labels say what `definition::render` says — its label helpers are
// shared: `approve [score >= 60]`, `approve, otherwise`; the clock's `late → take …` edges
// are drawn here with their own wording.

fn late_edges(step: &Step) -> Vec<(&str, String)> {
    let mut edges = Vec::new();
    let actions = step.deadline.iter().flat_map(|d| &d.on_breach);
    for (action, outcome) in actions.filter_map(|a| Some((a, a.take.as_deref()?))) {
        let after = action
            .after
            .as_deref()
            .map(one_line)
            .filter(|a| !a.is_empty());
        let what = format!(
            "{} → take {}",
            after.map_or("late".into(), |a| format!("{a} late")),
            one_line(outcome)
        );
        for (i, t) in step.next.iter().enumerate() {
            if t.on.as_deref().is_some_and(|on| on != outcome) {
                continue;
            }
            let label = match condition(t) {
                Some(c) => format!("{what} [{c}]"),
                None if is_default(step, i) => format!("{what}, otherwise"),
                None => what.clone(),
            };
            edges.push((t.to.as_str(), label));
        }
    }
    edges
}

/// `text` in lines of at most `width` characters, broken between words (a word longer than
/// half as much again is cut, so one long identifier cannot widen the picture without bound).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width * 3 / 2 {
            lines.extend((!line.is_empty()).then(|| std::mem::take(&mut line)));
            lines.push(word.drain(..width).collect());
        }
        if !line.is_empty() && line.chars().count() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.extend(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::load::{validate_paths, validate_text, Options};
    use std::collections::HashSet;

    fn load(text: &str) -> Procedure {
        let v = validate_text(
            "leave.toml",
            text,
            &[],
            &HashSet::from(["default".to_string()]),
        );
        assert_eq!(v.errors(), 0, "{}", v.reports[0].render_text());
        v.valid[0].procedure.clone()
    }

    /// A task, an automatic choice, outcomes with a rework loop, a deadline that takes an
    /// outcome, two ends.
    const LEAVE: &str = r#"
id = "leave"
version = 1
title = "Leave request"
start = "request"

[roles]
staff = "Staff"
boss = "Line manager"

[steps.request]
title = "Request leave"
role = "staff"
form.days = { type = "integer", title = "Days", required = true }
next = [{ to = "check" }]

[steps.check]
kind = "auto"
title = "Long leave?"
next = [{ to = "approve", when = "days > 5" }, { to = "granted" }]

[steps.approve]
title = "Approve the leave request"
role = "boss"
outcomes = ["approve", "reject", "rework"]
next = [
  { to = "granted", on = "approve" },
  { to = "refused", on = "reject" },
  { to = "request", on = "rework" },
]

[steps.approve.deadline]
due = "2 days"
on_breach = [{ take = "approve" }]

[steps.granted]
kind = "end"
title = "Granted"

[steps.refused]
kind = "end"
title = "Refused"
"#;

    fn marks(list: &[(&str, StepMark)]) -> HashMap<String, StepMark> {
        list.iter()
            .map(|(id, m)| (id.to_string(), m.clone()))
            .collect()
    }

    fn leave_marks() -> HashMap<String, StepMark> {
        marks(&[
            (
                "request",
                StepMark {
                    visited: true,
                    ..StepMark::default()
                },
            ),
            (
                "check",
                StepMark {
                    visited: true,
                    ..StepMark::default()
                },
            ),
            (
                "approve",
                StepMark {
                    current: true,
                    waiting: 3,
                    late: 2,
                    ..StepMark::default()
                },
            ),
        ])
    }

    /// The `<g>` drawn for the step titled `title` (its tooltip starts with the title).
    fn node_of<'a>(svg: &'a str, title: &str) -> &'a str {
        let at = svg
            .find(&format!("<g><title>{title}"))
            .unwrap_or_else(|| panic!("no node {title}: {svg}"));
        let end = svg[at..].find("</g>").unwrap();
        &svg[at..at + end]
    }

    /// What every picture must be: one `<svg>` element, sized by its view box, with only
    /// presentation attributes and finite numbers.
    fn assert_clean(svg: &str) {
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\""),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(!svg.contains("<?xml"));
        assert!(!svg.contains("style"), "{svg}");
        assert!(!svg.contains("class="), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf\""), "{svg}");
        let head = &svg[..svg.find('>').unwrap()];
        let attr = |name: &str| -> f64 {
            let at = head.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            head[at..at + head[at..].find('"').unwrap()]
                .split(' ')
                .next_back()
                .unwrap()
                .parse()
                .unwrap()
        };
        // The view box is as big as the picture, so `max-width: 100%` scales it as a whole.
        assert!(attr("width") > 0.0 && attr("height") > 0.0, "{head}");
        assert!(head.contains(&format!(" {} {}\"", attr("width"), attr("height"))));
    }

    #[test]
    fn snapshot_of_a_small_procedure() {
        let svg = procedure_svg(&load(LEAVE), &leave_marks());
        assert_clean(&svg);
        // Line breaks between elements, so a change reads as a diff of lines.
        insta::assert_snapshot!(svg.replace("><", ">\n<"));
    }

    #[test]
    fn a_small_procedure_has_its_edges_and_labels() {
        let p = load(LEAVE);
        let svg = procedure_svg(&p, &HashMap::new());
        for label in [
            ">[days &gt; 5]<",
            ">otherwise<",
            ">approve<",
            ">reject<",
            ">rework<",
            ">late → take approve<",
        ] {
            assert!(svg.contains(label), "{label}: {svg}");
        }
        // The start dot, a dashed automatic step, double-bordered ends, the late edge dashed
        // and red.
        assert_eq!(svg.matches("<circle ").count(), 1);
        assert!(node_of(&svg, "Long leave?").contains("stroke-dasharray=\"5 3\""));
        assert_eq!(node_of(&svg, "Granted").matches("<rect ").count(), 2);
        assert!(svg.contains(&format!("stroke=\"{LATE}\" stroke-dasharray=\"6 4\"")));
        assert!(svg.matches("<path d=\"M").count() >= 7);
        // Same input, same picture.
        assert_eq!(svg, procedure_svg(&p, &HashMap::new()));
        // The simpler placements draw the same things.
        let g = Graph::of(&p, &HashMap::new());
        let simpler = draw(&p, &g, &layout_rs(&g, None, true).unwrap());
        assert_clean(&simpler);
        assert!(simpler.contains(">late → take approve<") && simpler.contains(">rework<"));
        let paths = |svg: &str| svg.matches("<path d=\"M").count();
        assert_eq!(paths(&simpler), paths(&svg));
        // The last resort shows the steps and their marks.
        let column = draw(&p, &g, &place_in_column(&g));
        assert_clean(&column);
        assert_eq!(paths(&column), 2);
        assert!(column.contains(">Approve the leave<"));
    }

    #[test]
    fn the_current_step_is_highlighted() {
        let svg = procedure_svg(&load(LEAVE), &leave_marks());
        let current = node_of(&svg, "Approve the leave request");
        assert!(
            current.contains("fill=\"#fde68a\" stroke=\"#92400e\" stroke-width=\"3\""),
            "{current}"
        );
        assert!(current.contains("font-weight=\"700\">Approve the leave"));
        assert!(current.contains(">3 waiting · <tspan fill=\"#991b1b\">2 late</tspan>"));
        let visited = node_of(&svg, "Request leave");
        assert!(visited.contains("fill=\"#dcfce7\""), "{visited}");
        let plain = node_of(&svg, "Refused");
        assert!(
            plain.contains("fill=\"#ffffff\" stroke=\"#6b7280\""),
            "{plain}"
        );
        assert!(!svg[..svg.find('>').unwrap()].is_empty());
        assert!(svg.contains("aria-label=\"The steps of Leave request as a graph. Now at: Approve the leave request.\""), "{svg}");
    }

    #[test]
    fn the_more_waiting_the_warmer() {
        let p = load(LEAVE);
        let fill = |waiting| {
            let m = marks(&[(
                "request",
                StepMark {
                    waiting,
                    ..StepMark::default()
                },
            )]);
            let svg = procedure_svg(&p, &m);
            let node = node_of(&svg, "Request leave");
            let at = node.find("fill=\"").unwrap() + 6;
            node[at..at + 7].to_string()
        };
        assert_eq!(fill(0), "#ffffff");
        assert_eq!(fill(1), "#ffedd5");
        assert_eq!(fill(4), "#fed7aa");
        assert_eq!(fill(40), "#fdba74");
    }

    #[test]
    fn no_style_in_any_shipped_procedure() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("procedures");
        let v = validate_paths(&[dir], &Options::default());
        assert_eq!(v.errors(), 0);
        assert!(v.valid.len() >= 9);
        for vp in &v.valid {
            let p = &vp.procedure;
            let all: HashMap<String, StepMark> = p
                .steps
                .keys()
                .enumerate()
                .map(|(i, id)| {
                    let m = StepMark {
                        current: i % 4 == 1,
                        visited: i % 2 == 0,
                        waiting: i as u64 * 3,
                        late: i as u64 % 3,
                    };
                    (id.clone(), m)
                })
                .collect();
            let heat: HashMap<String, StepMark> = p
                .steps
                .keys()
                .enumerate()
                .map(|(i, id)| {
                    let m = StepMark {
                        waiting: (i as u64 * 7) % 13,
                        late: i as u64 % 2,
                        ..StepMark::default()
                    };
                    (id.clone(), m)
                })
                .collect();
            for m in [HashMap::new(), all.clone(), heat.clone()] {
                let svg = procedure_svg(p, &m);
                assert_clean(&svg);
                assert!(!svg.contains("<style"), "{}", p.id);
            }
            // The shipped procedures get the full layout at the first attempt, labels placed
            // as boxes of their own, however they are marked.
            for m in [HashMap::new(), all.clone(), heat.clone()] {
                let g = Graph::of(p, &m);
                assert!(span_estimate(&g) <= SPAN_BUDGET, "{}", p.id);
                assert!(layout_rs(&g, LABEL_MARGINS[0], true).is_some(), "{}", p.id);
            }
        }
    }

    #[test]
    fn every_label_is_escaped() {
        let text = r#"
id = "esc"
version = 1
title = "Tags <script>alert('x')</script> & \"quotes\""
start = "a"

[steps.a]
title = "<script>alert(1)</script> & co \u0007"
outcomes = ["<b>", "a&b"]
next = [{ to = "b", on = "<b>", when = "x < 1 && y > 2" }, { to = "<img src=x>", on = "a&b" }]

[steps.b]
kind = "end"
title = "]]> <!-- -->"
"#;
        let p: Procedure = toml::from_str(text).unwrap();
        let svg = procedure_svg(&p, &HashMap::new());
        assert_clean(&svg);
        for raw in ["<script", "<b>", "<img", "<!--", "]]>", "a&b", "\u{7}"] {
            assert!(!svg.contains(raw), "{raw}: {svg}");
        }
        for escaped in [
            "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co",
            "&lt;b&gt; [x &lt; 1 &amp;&amp; y &gt; 2]",
            "a&amp;b",
            "missing step: &lt;img",
            "]]&gt; &lt;!-- --&gt;",
            "Tags &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quotes&quot;",
        ] {
            assert!(svg.contains(escaped), "{escaped}: {svg}");
        }
    }

    #[test]
    fn odd_procedures_are_drawn_without_panicking() {
        let base = "id = \"odd\"\nversion = 1\ntitle = \"Odd\"\nstart = \"a\"\n";
        let cases = [
            // A self loop, with and without a label, and a step going nowhere.
            "[steps.a]\nnext = [{ to = \"a\", on = \"again\" }, { to = \"a\" }, { to = \"b\" }]\n[steps.b]\n",
            // No steps at all: the start names a missing one.
            "[steps]\n",
            // Parallel branches meeting at a join, and a subprocess.
            "[steps.a]\nkind = \"parallel\"\nbranches = [\"b\", \"c\"]\njoin = \"j\"\n[steps.b]\nnext = [{ to = \"j\" }]\n[steps.c]\nkind = \"subprocess\"\nprocedure = \"child\"\nnext = [{ to = \"j\" }]\n[steps.j]\nkind = \"join\"\nnext = [{ to = \"e\" }]\n[steps.e]\nkind = \"end\"\n",
            // Edges both ways, repeated, and to unknown steps.
            "[steps.a]\nnext = [{ to = \"b\", on = \"x\" }, { to = \"b\", on = \"y\" }, { to = \"nowhere\" }]\n[steps.b]\nnext = [{ to = \"a\", on = \"back\" }, { to = \"nowhere\" }]\n",
        ];
        for case in cases {
            let p: Procedure = toml::from_str(&format!("{base}{case}")).unwrap();
            let svg = procedure_svg(&p, &HashMap::new());
            assert_clean(&svg);
        }
        let p: Procedure = toml::from_str(&format!("{base}{}", cases[0])).unwrap();
        let svg = procedure_svg(&p, &HashMap::new());
        assert!(svg.contains(">again<"), "{svg}");
        let p: Procedure = toml::from_str(&format!("{base}{}", cases[3])).unwrap();
        let svg = procedure_svg(&p, &HashMap::new());
        // One arrow per pair, its labels stacked; one box per unknown name.
        assert!(
            svg.contains(">x</tspan><tspan ") && svg.contains(">y</tspan>"),
            "{svg}"
        );
        assert_eq!(svg.matches("missing step: nowhere").count(), 1);
    }

    #[test]
    fn many_steps_are_drawn_in_a_column() {
        let mut text =
            String::from("id = \"long\"\nversion = 1\ntitle = \"Long\"\nstart = \"s0\"\n");
        for i in 0..400 {
            let _ = write!(
                text,
                "[steps.s{i}]\nnext = [{{ to = \"s{}\" }}, {{ to = \"s0\", on = \"restart\" }}]\n",
                i + 1
            );
        }
        text.push_str("[steps.s400]\nkind = \"end\"\n");
        let p: Procedure = toml::from_str(&text).unwrap();
        let started = std::time::Instant::now();
        let svg = procedure_svg(&p, &HashMap::new());
        assert_clean(&svg);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(svg.contains(">s399<") && svg.contains(">s400<"));
    }

    /// Procedures the loader accepts, made up from a seed: chains with outcomes jumping
    /// anywhere, back edges and self loops included. Layout-rs panics on some of these
    /// shapes (caught, and printed by the panic hook); each must still come out whole.
    #[test]
    fn made_up_valid_procedures_are_all_drawn() {
        let mut seed: u64 = 7;
        let mut rnd = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut drawn = 0;
        for _ in 0..60 {
            let n = 3 + rnd(14) as usize;
            let mut text = String::from(
                "id = \"r\"\nversion = 1\ntitle = \"R\"\nstart = \"s0\"\n[roles]\nx = \"X\"\n",
            );
            for i in 0..n - 1 {
                let k = rnd(3) as usize;
                let outcomes: Vec<String> = (0..=k).map(|j| format!("\"o{j}\"")).collect();
                let mut next = vec![format!("{{ to = \"s{}\", on = \"o0\" }}", i + 1)];
                for j in 1..=k {
                    next.push(format!("{{ to = \"s{}\", on = \"o{j}\" }}", rnd(n as u64)));
                }
                let _ = write!(
                    text,
                    "[steps.s{i}]\nrole = \"x\"\noutcomes = [{}]\nnext = [{}]\n",
                    outcomes.join(", "),
                    next.join(", ")
                );
            }
            let _ = write!(text, "[steps.s{}]\nkind = \"end\"\n", n - 1);
            let v = validate_text("r.toml", &text, &[], &HashSet::new());
            let Some(vp) = v.valid.first() else { continue };
            drawn += 1;
            let svg = procedure_svg(&vp.procedure, &HashMap::new());
            assert_clean(&svg);
            let edges = Graph::of(&vp.procedure, &HashMap::new()).edges.len();
            // Each edge is a path (after the two arrow heads).
            assert_eq!(svg.matches("<path d=\"M").count(), 2 + edges, "{text}");
        }
        assert!(drawn > 40, "{drawn}");
    }

    #[test]
    fn helpers() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        let cut = wrap(&"x".repeat(50), 20);
        assert_eq!(cut.iter().map(String::len).collect::<Vec<_>>(), [20, 30]);
        assert_eq!(wrap("", 4), vec![""]);
        assert_eq!(esc("<&>\"'\u{1}"), "&lt;&amp;&gt;&quot;&#39; ");
        assert_eq!(n(1.04), "1");
        assert_eq!(n(-0.01), "0");
        assert_eq!(n(2.25), "2.3");
        let placeholder = placeholder(12, 40.0, 30.0);
        assert_eq!(placeholder, "12________\n_\n_\n_\n_");
        let c = Curve {
            start: Point::new(0.0, 0.0),
            segments: vec![(
                Point::new(0.0, 10.0),
                Point::new(10.0, 10.0),
                Point::new(10.0, 20.0),
            )],
            head_at_start: false,
            head_at_end: true,
        };
        let m = curve_middle(&c);
        assert_eq!((m.x, m.y), (5.0, 10.0));
    }
}
