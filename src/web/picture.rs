//! The procedure picture: a procedure's state graph drawn as SVG on the server (layout-rs),
//! with each step marked — where an instance is now, where it has been, how many instances
//! wait at a step and how many were late there (the process owner's heat map).
//! It must draw only presentation attributes (no `style` attributes or `<style>` elements, which
//! the web app's Content-Security-Policy forbids) and escape every label.
//!
//! layout-rs only places things here. Its own SVG writer emits a `<style>` block and guesses
//! text widths from the font size, so this module passes it boxes of the sizes it measured
//! itself, records where layout-rs puts them and the edge curves it computes (through a
//! `RenderBackend` that draws nothing), and writes the SVG on its own. Layout-rs asserts its
//! invariants with panics; a picture is not worth a failed page, so a panic (or a
//! non-finite coordinate) falls back to a plain layered layout drawn the same way.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::format::{ClipHandle, RenderBackend};
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;

use crate::definition::model::{Procedure, Step, StepKind, Transition};

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
    let placed = place_with_layout_rs(&graph).unwrap_or_else(|| place_in_rows(&graph));
    draw(proc, &graph, &placed)
}

const FONT: &str = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";
const TITLE_PX: f64 = 14.0;
const TITLE_LINE: f64 = 18.0;
const LABEL_PX: f64 = 12.0;
const LABEL_LINE: f64 = 15.0;
/// Step titles and edge labels are cut near these many characters, so a long title makes a
/// box taller rather than the whole picture wider (and smaller once scaled to the page).
const TITLE_WRAP: usize = 24;
const LABEL_WRAP: usize = 26;
const PAD_X: f64 = 12.0;
const PAD_Y: f64 = 8.0;
const BAR: (f64, f64) = (120.0, 8.0);
const START_DOT: f64 = 14.0;
/// Above this many steps layout-rs's checks (quadratic in edges at every edge) get slow
/// enough to hold up a page; the rows are good enough there.
const MAX_LAYOUT_NODES: usize = 120;

const INK: &str = "#111827";
const EDGE: &str = "#4b5563";
const LATE: &str = "#991b1b";
const BAR_FILL: &str = "#374151";

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
    fn of(proc: &Procedure, marks: &HashMap<String, StepMark>) -> Graph {
        let mut nodes = vec![Node {
            kind: Kind::Start,
            lines: Vec::new(),
            tooltip: "start".into(),
            mark: StepMark::default(),
            size: (START_DOT, START_DOT),
        }];
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (id, step) in &proc.steps {
            index.insert(id.as_str(), nodes.len());
            let mark = marks.get(id).cloned().unwrap_or_default();
            nodes.push(step_node(id, step, mark));
        }
        let mut edges = Vec::new();
        let mut to_node = |name: &str, nodes: &mut Vec<Node>| -> usize {
            if let Some(&i) = index.get(name) {
                return i;
            }
            nodes.push(missing_node(name));
            nodes.len() - 1
        };
        let start = to_node(&proc.start, &mut nodes);
        edges.push(Edge {
            from: 0,
            to: start,
            label: Vec::new(),
            late: false,
        });
        for (from, (_, step)) in proc.steps.iter().enumerate() {
            let from = from + 1;
            match step.kind {
                StepKind::Parallel => {
                    for b in &step.branches {
                        let to = to_node(b, &mut nodes);
                        edges.push(Edge {
                            from,
                            to,
                            label: Vec::new(),
                            late: false,
                        });
                    }
                }
                StepKind::End => {}
                _ => {
                    for (i, t) in step.next.iter().enumerate() {
                        let to = to_node(&t.to, &mut nodes);
                        let label = edge_label(t, is_default(step, i))
                            .map(|l| wrap(&l, LABEL_WRAP))
                            .unwrap_or_default();
                        edges.push(Edge {
                            from,
                            to,
                            label,
                            late: false,
                        });
                    }
                }
            }
            for (to, label) in late_edges(step) {
                let to = to_node(to, &mut nodes);
                edges.push(Edge {
                    from,
                    to,
                    label: wrap(&label, LABEL_WRAP),
                    late: true,
                });
            }
        }
        Graph { nodes, edges }
    }
}

fn step_node(id: &str, step: &Step, mark: StepMark) -> Node {
    let title = step
        .title
        .as_deref()
        .map(one_line)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| one_line(id));
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
    if step.kind == StepKind::Subprocess {
        let _ = write!(
            tooltip,
            " — runs procedure {}",
            one_line(step.procedure.as_deref().unwrap_or("?"))
        );
    }
    let badges = badges(&mark);
    if !badges.is_empty() {
        let _ = write!(tooltip, " — {}", badges.join(", "));
    }
    if matches!(step.kind, StepKind::Parallel | StepKind::Join) {
        return Node {
            kind: Kind::Step(step.kind),
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
    let mut width = lines
        .iter()
        .map(|l| text_width(l, TITLE_PX))
        .fold(0.0, f64::max);
    let mut height = lines.len() as f64 * TITLE_LINE;
    if !badges.is_empty() {
        width = width.max(text_width(&badges.join(" · "), TITLE_PX) * 1.08);
        height += TITLE_LINE;
    }
    // Room for the side bars of a subprocess and the round ends of an end step.
    let extra = match step.kind {
        StepKind::Subprocess => 16.0,
        StepKind::End => height / 2.0,
        _ => 0.0,
    };
    Node {
        kind: Kind::Step(step.kind),
        lines,
        tooltip,
        mark,
        size: (
            (width + 2.0 * PAD_X + extra).max(96.0).ceil(),
            (height + 2.0 * PAD_Y).ceil(),
        ),
    }
}

fn missing_node(name: &str) -> Node {
    let lines = wrap(&format!("missing step: {}", one_line(name)), TITLE_WRAP);
    let width = lines
        .iter()
        .map(|l| text_width(l, TITLE_PX))
        .fold(0.0, f64::max);
    Node {
        kind: Kind::Missing,
        size: (
            (width + 2.0 * PAD_X).ceil(),
            (lines.len() as f64 * TITLE_LINE + 2.0 * PAD_Y).ceil(),
        ),
        tooltip: format!("no step is called {}", one_line(name)),
        lines,
        mark: StepMark::default(),
    }
}

fn badges(mark: &StepMark) -> Vec<String> {
    let mut out = Vec::new();
    if mark.waiting > 0 {
        out.push(format!("{} waiting", mark.waiting));
    }
    if mark.late > 0 {
        out.push(format!("{} late", mark.late));
    }
    out
}

/// A rough width of `text` in a sans-serif font: no font metrics on the server, so a little
/// generous, with wide (CJK) characters counted as a full em.
fn text_width(text: &str, px: f64) -> f64 {
    text.chars()
        .map(|c| if c.len_utf8() >= 3 { 1.0 } else { 0.58 })
        .sum::<f64>()
        * px
}

fn label_size(label: &[String]) -> (f64, f64) {
    let w = label
        .iter()
        .map(|l| text_width(l, LABEL_PX))
        .fold(0.0, f64::max);
    (w, label.len() as f64 * LABEL_LINE)
}

/// Where everything goes: node centres and sizes, each edge as cubic segments, each label's
/// top-left corner.
struct Placed {
    centres: Vec<Point>,
    curves: Vec<Curve>,
    labels: Vec<Option<Point>>,
}

#[derive(Clone)]
struct Curve {
    start: Point,
    /// (control 1, control 2, end) of each cubic segment.
    segments: Vec<(Point, Point, Point)>,
    head_at_start: bool,
    head_at_end: bool,
}

/// The grain of the placeholder text that sizes label boxes in layout-rs: it measures a
/// label as (characters × font size) by (lines × font size) plus padding, so a label of the
/// measured size is passed as that many characters and lines of this "font size".
const GRAIN: usize = 4;
/// Padding layout-rs adds to a connector's text size (`BOX_SHAPE_PADDING`).
const CONNECTOR_PAD: f64 = 10.0;

fn place_with_layout_rs(graph: &Graph) -> Option<Placed> {
    if graph.nodes.len() + graph.edges.len() > MAX_LAYOUT_NODES * 2
        || graph.nodes.len() > MAX_LAYOUT_NODES
    {
        return None;
    }
    let placed = catch_unwind(AssertUnwindSafe(|| {
        let mut vg = VisualGraph::new(Orientation::TopToBottom);
        let look = StyleAttr::new(Color::fast("black"), 1, None, 0, GRAIN);
        let handles: Vec<_> = graph
            .nodes
            .iter()
            .map(|n| {
                let shape = match n.kind {
                    Kind::Start => ShapeKind::new_circle(""),
                    _ => ShapeKind::new_box(""),
                };
                let size = Point::new(n.size.0, n.size.1);
                vg.add_node(Element::create(
                    shape,
                    look.clone(),
                    Orientation::TopToBottom,
                    size,
                ))
            })
            .collect();
        for (i, e) in graph.edges.iter().enumerate() {
            let (w, h) = label_size(&e.label);
            // A self loop needs a label box even without text, or its bow hides under the
            // step.
            let text = if e.label.is_empty() && e.from != e.to {
                String::new()
            } else {
                placeholder(i, w.max(24.0), h.max(LABEL_LINE))
            };
            let mut arrow = Arrow::simple(&text);
            arrow.look = look.clone();
            arrow.properties = Some(i.to_string());
            vg.add_edge(arrow, handles[e.from], handles[e.to]);
        }
        let mut rec = Recorder::default();
        vg.do_it(false, false, false, &mut rec);
        let centres: Vec<Point> = handles.iter().map(|&h| vg.pos(h).center()).collect();
        (centres, rec)
    }))
    .ok()?;
    let (centres, rec) = placed;
    let mut curves = Vec::with_capacity(graph.edges.len());
    let mut labels = vec![None; graph.edges.len()];
    for i in 0..graph.edges.len() {
        curves.push(rec.curves.get(&i)?.clone());
    }
    for (i, at) in rec.labels {
        if let Some(slot) = labels.get_mut(i) {
            *slot = Some(at);
        }
    }
    let finite = |p: &Point| p.x.is_finite() && p.y.is_finite();
    let ok = centres.iter().all(finite)
        && labels.iter().flatten().all(finite)
        && curves.iter().all(|c| {
            finite(&c.start)
                && c.segments
                    .iter()
                    .all(|(a, b, d)| finite(a) && finite(b) && finite(d))
        });
    ok.then_some(Placed {
        centres,
        curves,
        labels,
    })
}

/// The text layout-rs measures for label `i` of size `w` × `h`: the index first, so the
/// recorder knows whose label it is handed, padded to the size in grains.
fn placeholder(i: usize, w: f64, h: f64) -> String {
    let cols = ((w / GRAIN as f64).ceil() as usize).max(i.to_string().len());
    let rows = (((h - CONNECTOR_PAD).max(0.0) / GRAIN as f64).ceil() as usize).max(1);
    let mut text = format!("{i:_<cols$}");
    for _ in 1..rows {
        text.push_str("\n_");
    }
    text
}

/// A layout-rs backend that draws nothing: it keeps the edge curves (by the index in the
/// arrow's properties) and where each label box is (by the index in its placeholder).
#[derive(Default)]
struct Recorder {
    curves: HashMap<usize, Curve>,
    labels: HashMap<usize, Point>,
}

impl RenderBackend for Recorder {
    fn draw_rect(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>, _: Option<ClipHandle>) {}

    fn draw_line(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}

    fn draw_circle(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}

    fn draw_text(&mut self, xy: Point, text: &str, _: &StyleAttr) {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(i) = digits.parse() {
            self.labels.insert(i, xy);
        }
    }

    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        _dashed: bool,
        head: (bool, bool),
        _look: &StyleAttr,
        properties: Option<String>,
        _text: &str,
    ) {
        let Some(i) = properties.and_then(|p| p.parse().ok()) else {
            return;
        };
        if path.len() < 2 {
            return;
        }
        // layout-rs writes `M p0 C c1 c2 p1 S c2 p2 …`; an `S` mirrors the last control point.
        let start = path[0].0;
        let mut segments = vec![(path[0].1, path[1].0, path[1].1)];
        for p in &path[2..] {
            let (_, c2, end) = segments[segments.len() - 1];
            let c1 = Point::new(2.0 * end.x - c2.x, 2.0 * end.y - c2.y);
            segments.push((c1, p.0, p.1));
        }
        self.curves.insert(
            i,
            Curve {
                start,
                segments,
                head_at_start: head.0,
                head_at_end: head.1,
            },
        );
    }

    fn create_clip(&mut self, _: Point, _: Point, _: usize) -> ClipHandle {
        0
    }
}

/// The fallback: rows by distance from the start, straight edges.
fn place_in_rows(graph: &Graph) -> Placed {
    let n = graph.nodes.len();
    let mut rank = vec![usize::MAX; n];
    let mut queue = VecDeque::from([0usize]);
    rank[0] = 0;
    while let Some(u) = queue.pop_front() {
        for e in graph.edges.iter().filter(|e| e.from == u) {
            if rank[e.to] == usize::MAX {
                rank[e.to] = rank[u] + 1;
                queue.push_back(e.to);
            }
        }
    }
    let deepest = rank.iter().filter(|&&r| r != usize::MAX).max().copied().unwrap_or(0);
    for r in rank.iter_mut().filter(|r| **r == usize::MAX) {
        *r = deepest + 1;
    }
    let rows = rank.iter().max().map_or(0, |m| m + 1);
    let mut centres = vec![Point::zero(); n];
    let mut y = 0.0;
    for row in 0..rows {
        let members: Vec<usize> = (0..n).filter(|&i| rank[i] == row).collect();
        let height = members
            .iter()
            .map(|&i| graph.nodes[i].size.1)
            .fold(0.0, f64::max);
        let mut x = 0.0;
        for &i in &members {
            let w = graph.nodes[i].size.0;
            centres[i] = Point::new(x + w / 2.0, y + height / 2.0);
            x += w + 40.0;
        }
        y += height + 70.0;
    }
    let mut curves = Vec::new();
    let mut labels = Vec::new();
    for e in &graph.edges {
        let (a, b) = (centres[e.from], centres[e.to]);
        let (start, end) = if e.from == e.to {
            let w = graph.nodes[e.from].size.0 / 2.0;
            (Point::new(a.x + w, a.y - 6.0), Point::new(a.x + w, a.y + 6.0))
        } else {
            (
                border_point(a, graph.nodes[e.from].size, b),
                border_point(b, graph.nodes[e.to].size, a),
            )
        };
        let c = |t: f64| Point::new(start.x + (end.x - start.x) * t, start.y + (end.y - start.y) * t);
        let (c1, c2) = if e.from == e.to {
            (Point::new(start.x + 40.0, start.y - 20.0), Point::new(end.x + 40.0, end.y + 20.0))
        } else {
            (c(1.0 / 3.0), c(2.0 / 3.0))
        };
        let (lw, lh) = label_size(&e.label);
        let mid = if e.from == e.to {
            Point::new(start.x + 34.0, start.y)
        } else {
            c(0.5)
        };
        labels.push(Some(Point::new(mid.x + lw.max(24.0) / 2.0 + 6.0, mid.y - lh / 2.0 + 2.0)));
        curves.push(Curve {
            start,
            segments: vec![(c1, c2, end)],
            head_at_start: false,
            head_at_end: true,
        });
    }
    Placed {
        centres,
        curves,
        labels,
    }
}

/// Where the segment from the centre `c` of a box of `size` towards `to` leaves the box.
fn border_point(c: Point, size: (f64, f64), to: Point) -> Point {
    let (dx, dy) = (to.x - c.x, to.y - c.y);
    if dx == 0.0 && dy == 0.0 {
        return c;
    }
    let sx = if dx == 0.0 { f64::INFINITY } else { size.0 / 2.0 / dx.abs() };
    let sy = if dy == 0.0 { f64::INFINITY } else { size.1 / 2.0 / dy.abs() };
    let s = sx.min(sy).min(1.0);
    Point::new(c.x + dx * s, c.y + dy * s)
}
