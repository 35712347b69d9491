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
        let start = node_for(&proc.start, &mut index, &mut nodes);
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
                        let to = node_for(b, &mut index, &mut nodes);
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
                        let to = node_for(&t.to, &mut index, &mut nodes);
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
                let to = node_for(to, &mut index, &mut nodes);
                edges.push(Edge {
                    from,
                    to,
                    label: wrap(&label, LABEL_WRAP),
                    late: true,
                });
            }
        }
        Graph {
            nodes,
            edges: merge_parallel(edges),
        }
    }
}

/// One edge per pair of steps (and kind), its labels stacked: two arrows between the same
/// boxes would be drawn on top of each other, and layout-rs trips over such pairs.
fn merge_parallel(edges: Vec<Edge>) -> Vec<Edge> {
    let mut merged: Vec<Edge> = Vec::with_capacity(edges.len());
    let mut at: HashMap<(usize, usize, bool), usize> = HashMap::new();
    for e in edges {
        match at.get(&(e.from, e.to, e.late)) {
            Some(&i) => {
                let m = &mut merged[i];
                if m.label.is_empty() || e.label.is_empty() {
                    // An unlabelled edge is "any outcome": say it once.
                    let any = if m.label.is_empty() {
                        &e.label
                    } else {
                        &m.label
                    };
                    if !any.is_empty() && !m.label.is_empty() {
                        continue;
                    }
                    m.label = any.clone();
                } else {
                    m.label.extend(e.label);
                }
            }
            None => {
                at.insert((e.from, e.to, e.late), merged.len());
                merged.push(e);
            }
        }
    }
    merged
}

/// The node of step `name`, or a "missing step" node for a name no step has (one per name).
fn node_for<'a>(
    name: &'a str,
    index: &mut HashMap<&'a str, usize>,
    nodes: &mut Vec<Node>,
) -> usize {
    *index.entry(name).or_insert_with(|| {
        nodes.push(missing_node(name));
        nodes.len() - 1
    })
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

/// Where everything goes: node centres, each edge as cubic segments, the middle of each
/// edge label.
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
        vg.do_it(false, std::env::var("NOOPT").is_ok(), false, &mut rec);
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
    fn draw_rect(
        &mut self,
        _: Point,
        _: Point,
        _: &StyleAttr,
        _: Option<String>,
        _: Option<ClipHandle>,
    ) {
    }

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
    let deepest = rank
        .iter()
        .filter(|&&r| r != usize::MAX)
        .max()
        .copied()
        .unwrap_or(0);
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
            (
                Point::new(a.x + w, a.y - 6.0),
                Point::new(a.x + w, a.y + 6.0),
            )
        } else {
            (
                border_point(a, graph.nodes[e.from].size, b),
                border_point(b, graph.nodes[e.to].size, a),
            )
        };
        let c = |t: f64| {
            Point::new(
                start.x + (end.x - start.x) * t,
                start.y + (end.y - start.y) * t,
            )
        };
        let (c1, c2) = if e.from == e.to {
            (
                Point::new(start.x + 40.0, start.y - 20.0),
                Point::new(end.x + 40.0, end.y + 20.0),
            )
        } else {
            (c(1.0 / 3.0), c(2.0 / 3.0))
        };
        let (lw, lh) = label_size(&e.label);
        let mid = if e.from == e.to {
            Point::new(start.x + 34.0, start.y)
        } else {
            c(0.5)
        };
        let _ = lh;
        labels.push(Some(Point::new(mid.x + lw / 2.0 + 6.0, mid.y)));
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
    let sx = if dx == 0.0 {
        f64::INFINITY
    } else {
        size.0 / 2.0 / dx.abs()
    };
    let sy = if dy == 0.0 {
        f64::INFINITY
    } else {
        size.1 / 2.0 / dy.abs()
    };
    let s = sx.min(sy).min(1.0);
    Point::new(c.x + dx * s, c.y + dy * s)
}

/// Fill, border and border width of a step box: the current step stands out most, then the
/// heat of waiting work, then where the instance has been.
fn colours(mark: &StepMark) -> (&'static str, &'static str, f64) {
    if mark.current {
        ("#fde68a", "#92400e", 3.0)
    } else if mark.waiting > 0 {
        // Light enough at every shade for dark text and the dark red late count.
        let fill = match mark.waiting {
            1..=2 => "#ffedd5",
            3..=9 => "#fed7aa",
            _ => "#fdba74",
        };
        (fill, "#c2410c", 2.0)
    } else if mark.visited {
        ("#dcfce7", "#15803d", 1.5)
    } else {
        ("#ffffff", "#6b7280", 1.5)
    }
}

fn draw(proc: &Procedure, graph: &Graph, placed: &Placed) -> String {
    let mut bounds = Bounds::default();
    for (node, c) in graph.nodes.iter().zip(&placed.centres) {
        bounds.add(c.x - node.size.0 / 2.0 - 6.0, c.y - node.size.1 / 2.0 - 6.0);
        bounds.add(c.x + node.size.0 / 2.0 + 6.0, c.y + node.size.1 / 2.0 + 6.0);
    }
    for (curve, edge) in placed.curves.iter().zip(&graph.edges) {
        // Control points bound the curve (convex hull), a little loosely.
        bounds.add(curve.start.x, curve.start.y);
        for (a, b, d) in &curve.segments {
            for p in [a, b, d] {
                bounds.add(p.x, p.y);
            }
        }
        let _ = edge;
    }
    for (at, edge) in placed.labels.iter().zip(&graph.edges) {
        if let Some(at) = at {
            let (w, h) = label_size(&edge.label);
            bounds.add(at.x - w / 2.0 - 4.0, at.y - h / 2.0 - 4.0);
            bounds.add(at.x + w / 2.0 + 4.0, at.y + h / 2.0 + 4.0);
        }
    }
    let (x0, y0, w, h) = bounds.view(12.0);

    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"{x0} {y0} {w} {h}\" role=\"img\" aria-label=\"{}\" font-family=\"{}\">",
        esc(&summary(proc, graph)),
        esc(FONT)
    );
    out.push_str("<g fill=\"none\" stroke-width=\"1.5\">");
    for (curve, edge) in placed.curves.iter().zip(&graph.edges) {
        draw_edge(&mut out, curve, edge.late);
    }
    out.push_str("</g>");
    for (at, edge) in placed.labels.iter().zip(&graph.edges) {
        if let (Some(at), false) = (at, edge.label.is_empty()) {
            draw_label(&mut out, *at, edge);
        }
    }
    for (node, c) in graph.nodes.iter().zip(&placed.centres) {
        draw_node(&mut out, node, *c);
    }
    out.push_str("</svg>");
    out
}

/// The sentence a screen reader says for the picture: what it is, where the instance is,
/// where work waits.
fn summary(proc: &Procedure, graph: &Graph) -> String {
    let mut s = format!("The steps of {} as a graph", one_line(&proc.title));
    let name = |n: &Node| n.lines.join(" ");
    let current: Vec<String> = graph
        .nodes
        .iter()
        .filter(|n| n.mark.current)
        .map(name)
        .collect();
    if !current.is_empty() {
        let _ = write!(s, ". Now at: {}", current.join("; "));
    }
    let waiting: Vec<String> = graph
        .nodes
        .iter()
        .filter(|n| n.mark.waiting > 0 || n.mark.late > 0)
        .map(|n| format!("{} ({})", name(n), badges(&n.mark).join(", ")))
        .collect();
    if !waiting.is_empty() {
        let _ = write!(s, ". {}", waiting.join("; "));
    }
    s.push('.');
    s
}

fn draw_edge(out: &mut String, curve: &Curve, late: bool) {
    let colour = if late { LATE } else { EDGE };
    let mut d = format!("M{} {}", n(curve.start.x), n(curve.start.y));
    for (a, b, e) in &curve.segments {
        let _ = write!(
            d,
            " C{} {} {} {} {} {}",
            n(a.x),
            n(a.y),
            n(b.x),
            n(b.y),
            n(e.x),
            n(e.y)
        );
    }
    let dash = if late {
        " stroke-dasharray=\"6 4\""
    } else {
        ""
    };
    let _ = write!(out, "<path d=\"{d}\" stroke=\"{colour}\"{dash}/>");
    if let Some((a, b, e)) = curve.segments.last().filter(|_| curve.head_at_end) {
        arrow_head(out, *e, [*b, *a, curve.start], colour);
    }
    if let Some((a, b, e)) = curve.segments.first().filter(|_| curve.head_at_start) {
        arrow_head(out, curve.start, [*a, *b, *e], colour);
    }
}

/// A filled head with its tip at `tip`, pointing away from the first of `from` that is not
/// the tip itself (a control point may coincide with the end).
fn arrow_head(out: &mut String, tip: Point, from: [Point; 3], colour: &str) {
    let Some(back) = from
        .iter()
        .map(|p| (tip.x - p.x, tip.y - p.y))
        .find(|(dx, dy)| dx.hypot(*dy) > 0.5)
    else {
        return;
    };
    let len = back.0.hypot(back.1);
    let (ux, uy) = (back.0 / len, back.1 / len);
    let (bx, by) = (tip.x - ux * 10.0, tip.y - uy * 10.0);
    let _ = write!(
        out,
        "<path d=\"M{} {} L{} {} L{} {} Z\" fill=\"{colour}\" stroke=\"none\"/>",
        n(tip.x),
        n(tip.y),
        n(bx - uy * 4.5),
        n(by + ux * 4.5),
        n(bx + uy * 4.5),
        n(by - ux * 4.5)
    );
}

fn draw_label(out: &mut String, at: Point, edge: &Edge) {
    let colour = if edge.late { LATE } else { "#374151" };
    let (_, h) = label_size(&edge.label);
    let top = at.y - h / 2.0;
    // A white outline keeps the words readable where an edge crosses them.
    let _ = write!(
        out,
        "<text font-size=\"{LABEL_PX}\" fill=\"{colour}\" text-anchor=\"middle\" \
         stroke=\"#ffffff\" stroke-width=\"4\" stroke-linejoin=\"round\" paint-order=\"stroke\">"
    );
    for (i, line) in edge.label.iter().enumerate() {
        let y = top + LABEL_LINE * (i as f64 + 0.78);
        let _ = write!(
            out,
            "<tspan x=\"{}\" y=\"{}\">{}</tspan>",
            n(at.x),
            n(y),
            esc(line)
        );
    }
    out.push_str("</text>");
}

fn draw_node(out: &mut String, node: &Node, c: Point) {
    let (w, h) = node.size;
    let (x, y) = (c.x - w / 2.0, c.y - h / 2.0);
    let _ = write!(out, "<g><title>{}</title>", esc(&node.tooltip));
    match node.kind {
        Kind::Start => {
            let _ = write!(
                out,
                "<circle cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"{BAR_FILL}\"/>",
                n(c.x),
                n(c.y),
                START_DOT / 2.0
            );
        }
        Kind::Step(StepKind::Parallel | StepKind::Join) => {
            let fill = if node.mark.current {
                "#b45309"
            } else if node.mark.visited {
                "#15803d"
            } else {
                BAR_FILL
            };
            rect(out, (x, y, w, h), 2.0, fill, "none", 0.0, "");
        }
        Kind::Missing => {
            rect(out, (x, y, w, h), 6.0, "#fef2f2", LATE, 1.5, "4 3");
            node_text(out, node, c, LATE);
        }
        Kind::Step(kind) => {
            let (fill, border, width) = colours(&node.mark);
            match kind {
                StepKind::End => {
                    // Double border, round ends: where an instance finishes.
                    rect(out, (x, y, w, h), h / 2.0, fill, border, width, "");
                    let i = 3.0 + width / 2.0;
                    let inner = (x + i, y + i, w - 2.0 * i, h - 2.0 * i);
                    rect(out, inner, (h / 2.0 - i).max(0.0), "none", border, 1.0, "");
                }
                StepKind::Auto => rect(out, (x, y, w, h), 6.0, fill, border, width, "5 3"),
                StepKind::Subprocess => {
                    rect(out, (x, y, w, h), 2.0, fill, border, width, "");
                    for bx in [x + 8.0, x + w - 8.0] {
                        let _ = write!(
                            out,
                            "<path d=\"M{} {} V{}\" stroke=\"{border}\" stroke-width=\"1\"/>",
                            n(bx),
                            n(y),
                            n(y + h)
                        );
                    }
                }
                _ => rect(out, (x, y, w, h), 6.0, fill, border, width, ""),
            }
            node_text(out, node, c, INK);
        }
    }
    out.push_str("</g>");
}

fn rect(
    out: &mut String,
    (x, y, w, h): (f64, f64, f64, f64),
    radius: f64,
    fill: &str,
    stroke: &str,
    width: f64,
    dash: &str,
) {
    let _ = write!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{}\" fill=\"{fill}\"",
        n(x),
        n(y),
        n(w),
        n(h),
        n(radius)
    );
    if stroke != "none" {
        let _ = write!(out, " stroke=\"{stroke}\" stroke-width=\"{width}\"");
    }
    if !dash.is_empty() {
        let _ = write!(out, " stroke-dasharray=\"{dash}\"");
    }
    out.push_str("/>");
}

/// The title lines centred in the box, then the waiting / late counts, late in red.
fn node_text(out: &mut String, node: &Node, c: Point, colour: &str) {
    let badges = !badges(&node.mark).is_empty();
    let rows = node.lines.len() + usize::from(badges);
    let top = c.y - rows as f64 * TITLE_LINE / 2.0;
    let _ = write!(
        out,
        "<text font-size=\"{TITLE_PX}\" fill=\"{colour}\" text-anchor=\"middle\">"
    );
    for (i, line) in node.lines.iter().enumerate() {
        let weight = if node.mark.current {
            " font-weight=\"700\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tspan x=\"{}\" y=\"{}\"{weight}>{}</tspan>",
            n(c.x),
            n(top + TITLE_LINE * (i as f64 + 0.75)),
            esc(line)
        );
    }
    if badges {
        let y = top + TITLE_LINE * (node.lines.len() as f64 + 0.75);
        let _ = write!(
            out,
            "<tspan x=\"{}\" y=\"{}\" font-weight=\"700\">",
            n(c.x),
            n(y)
        );
        let m = &node.mark;
        if m.waiting > 0 {
            let _ = write!(out, "{} waiting", m.waiting);
        }
        if m.waiting > 0 && m.late > 0 {
            out.push_str(" · ");
        }
        if m.late > 0 {
            let _ = write!(out, "<tspan fill=\"{LATE}\">{} late</tspan>", m.late);
        }
        out.push_str("</tspan>");
    }
    out.push_str("</text>");
}

#[derive(Default)]
struct Bounds(Option<(f64, f64, f64, f64)>);

impl Bounds {
    fn add(&mut self, x: f64, y: f64) {
        let b = self.0.get_or_insert((x, y, x, y));
        *b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
    }

    /// The view box with a margin, on whole pixels.
    fn view(&self, margin: f64) -> (f64, f64, f64, f64) {
        let (a, b, c, d) = self.0.unwrap_or((0.0, 0.0, 0.0, 0.0));
        let (x0, y0) = ((a - margin).floor(), (b - margin).floor());
        (x0, y0, (c + margin).ceil() - x0, (d + margin).ceil() - y0)
    }
}

/// A coordinate with one decimal: enough for a screen, and stable in snapshots.
fn n(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r == 0.0 {
        "0".into()
    } else {
        format!("{r}")
    }
}

/// Text for SVG content and attribute values. Characters XML 1.0 forbids become spaces.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

// The edges and their labels say what `definition::render` says (its helpers are private to
// it): `approve [score >= 60]`, `approve, otherwise`, and the clock's `late → take …`.

fn late_edges(step: &Step) -> Vec<(&str, String)> {
    let Some(deadline) = &step.deadline else {
        return Vec::new();
    };
    let mut edges = Vec::new();
    for action in &deadline.on_breach {
        let Some(outcome) = action.take.as_deref() else {
            continue;
        };
        let when = match action
            .after
            .as_deref()
            .map(one_line)
            .filter(|a| !a.is_empty())
        {
            Some(after) => format!("{after} late"),
            None => "late".to_string(),
        };
        let what = format!("{when} → take {}", one_line(outcome));
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

fn condition(t: &Transition) -> Option<String> {
    t.when.as_deref().map(one_line).filter(|s| !s.is_empty())
}

/// Whether transition `i` is taken "otherwise": it has no condition, and a conditional
/// transition before it may apply to the same outcome.
fn is_default(step: &Step, i: usize) -> bool {
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

fn edge_label(t: &Transition, default: bool) -> Option<String> {
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

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` in lines of at most `width` characters, broken between words (a longer word is
/// cut, so one long identifier cannot widen the picture without bound).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width * 3 / 2 {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..width).collect());
        }
        let word: String = word.into_iter().collect();
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::load::{validate_paths, Options};

    fn shipped() -> Vec<Procedure> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("procedures");
        let v = validate_paths(&[dir], &Options::default());
        assert_eq!(v.errors(), 0);
        v.valid.into_iter().map(|p| p.procedure).collect()
    }

    #[test]
    fn stress_probe() {
        let mut seed: u64 = 42;
        let mut rnd = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut fallbacks = 0;
        let mut valid = 0;
        for round in 0..400 {
            let n = 3 + rnd(if round % 10 == 0 { 40 } else { 20 }) as usize;
            let mut text =
                "id = \"r\"\nversion = 1\ntitle = \"R\"\nstart = \"s0\"\n[roles]\nx = \"X\"\n"
                    .to_string();
            for i in 0..n {
                text.push_str(&format!("[steps.s{i}]\n"));
                if i == n - 1 {
                    text.push_str("kind = \"end\"\n");
                    continue;
                }
                text.push_str("role = \"x\"\n");
                let k = rnd(3);
                if k == 0 {
                    text.push_str(&format!("next = [{{ to = \"s{}\" }}]\n", i + 1));
                    continue;
                }
                let outs: Vec<String> = (0..=k).map(|j| format!("o{j}")).collect();
                text.push_str(&format!(
                    "outcomes = [{}]\n",
                    outs.iter()
                        .map(|o| format!("\"{o}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                let mut next = vec![format!("{{ to = \"s{}\", on = \"o0\" }}", i + 1)];
                for j in 1..=k {
                    next.push(format!("{{ to = \"s{}\", on = \"o{j}\" }}", rnd(n as u64)));
                }
                text.push_str(&format!("next = [{}]\n", next.join(", ")));
            }
            let v = crate::definition::load::validate_text(
                "r.toml",
                &text,
                &[],
                &std::collections::HashSet::new(),
            );
            if v.errors() > 0 {
                continue;
            }
            valid += 1;
            let p = &v.valid[0].procedure;
            let g = Graph::of(p, &HashMap::new());
            let t = std::time::Instant::now();
            if place_with_layout_rs(&g).is_none() {
                fallbacks += 1;
                let mut g2 = Graph::of(p, &HashMap::new());
                for e in &mut g2.edges {
                    e.label.clear();
                }
                let mut g3 = Graph::of(p, &HashMap::new());
                g3.edges.retain(|e| e.from != e.to);
                let mut g4 = Graph::of(p, &HashMap::new());
                g4.edges.retain(|e| e.from != e.to);
                for e in &mut g4.edges {
                    e.label.clear();
                }
                eprintln!(
                    "RETRY nolabels={} noself={} neither={}",
                    place_with_layout_rs(&g2).is_some(),
                    place_with_layout_rs(&g3).is_some(),
                    place_with_layout_rs(&g4).is_some()
                );
                eprintln!(
                    "FAIL {n} {:?}",
                    g.edges
                        .iter()
                        .map(|e| (e.from, e.to, e.label.len()))
                        .collect::<Vec<_>>()
                );
            }
            let el = t.elapsed();
            if el.as_millis() > 200 {
                eprintln!("slow {n} steps: {el:?}");
            }
        }
        eprintln!("valid {valid} fallbacks: {fallbacks}");
    }

    #[test]
    fn dump_for_eyes() {
        for p in shipped() {
            let mut marks = HashMap::new();
            for (i, id) in p.steps.keys().enumerate() {
                marks.insert(
                    id.clone(),
                    StepMark {
                        current: i == 3,
                        visited: i < 3,
                        waiting: (i as u64 * 3) % 13,
                        late: i as u64 % 3,
                    },
                );
            }
            std::fs::write(format!("/tmp/pic-{}.svg", p.id), procedure_svg(&p, &marks)).unwrap();
        }
    }
}
