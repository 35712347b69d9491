//! Where the picture's parts go: layout-rs places boxes of the sizes this module measured
//! and the edge curves between them (recorded through a `RenderBackend` that draws nothing);
//! a panic or a non-finite coordinate in layout-rs falls back to simpler placements.

use super::*;

/// Where everything goes: node centres, each edge as cubic segments, the middle of each
/// edge's label.
pub(super) struct Placed {
    pub(super) centres: Vec<Point>,
    pub(super) curves: Vec<Curve>,
    pub(super) labels: Vec<Point>,
}

#[derive(Clone)]
pub(super) struct Curve {
    pub(super) start: Point,
    /// (control 1, control 2, end) of each cubic segment.
    pub(super) segments: Vec<(Point, Point, Point)>,
    pub(super) head_at_start: bool,
    pub(super) head_at_end: bool,
}

/// Places the graph: layout-rs with the labels as boxes of their own (so nothing overlaps
/// them), else layout-rs without them (labels at the middle of their edges), else a column.
///
/// layout-rs's edge straightening can move a label box onto its neighbour and then trip its
/// own assertion; whether it does depends on the boxes' sizes, so a second size is tried
/// before the labels are left out (which it has not been seen to fail on).
pub(super) fn place(proc_id: &str, graph: &Graph) -> Placed {
    let span = span_estimate(graph);
    let attempts = if span <= MAX_SPAN {
        &LABEL_MARGINS[..]
    } else {
        &[]
    };
    for (attempt, &margin) in attempts.iter().enumerate() {
        // A graph that made layout-rs panic is not given to it again, so that showing a page
        // again does not print the panic again.
        let key = (graph.shape_hash(), attempt);
        if FAILED.lock().is_ok_and(|f| f.contains(&key)) {
            continue;
        }
        if let Some(placed) = layout_rs(graph, margin, span <= SPAN_BUDGET) {
            return placed;
        }
        if let Ok(mut f) = FAILED.lock() {
            // Bounded: the shapes of a server's procedures, not of all ever validated.
            if f.len() >= 256 {
                f.clear();
            }
            f.push(key);
        }
        tracing::warn!(
            procedure = proc_id,
            attempt,
            "procedure picture: layout-rs failed (the panic above, caught); placing it more simply"
        );
    }
    place_in_column(graph)
}

static FAILED: Mutex<Vec<(u64, usize)>> = Mutex::new(Vec::new());

/// The placeholders layout-rs will add, roughly: one per row an edge spans (rows taken as
/// the distance from the start), twice for the label rows. Its crossing optimiser is slow in
/// them.
pub(super) fn span_estimate(graph: &Graph) -> usize {
    let mut rank = vec![usize::MAX; graph.nodes.len()];
    let mut queue = std::collections::VecDeque::from([0]);
    rank[0] = 0;
    while let Some(u) = queue.pop_front() {
        for e in graph.edges.iter().filter(|e| e.from == u) {
            if rank[e.to] == usize::MAX {
                rank[e.to] = rank[u] + 1;
                queue.push_back(e.to);
            }
        }
    }
    // What the start does not reach counts as one row further.
    let last = rank
        .iter()
        .filter(|&&r| r != usize::MAX)
        .max()
        .map_or(0, |r| r + 1);
    let rank = |i: usize| rank[i].min(last);
    let spans: usize = graph
        .edges
        .iter()
        .map(|e| rank(e.from).abs_diff(rank(e.to)))
        .sum();
    spans * 2 + graph.nodes.len()
}

/// layout-rs's placement; labels as boxes `label_margin` wider than their text, or (`None`)
/// left out of the layout and put at the middle of their edges.
pub(super) fn layout_rs(
    graph: &Graph,
    label_margin: Option<f64>,
    optimise: bool,
) -> Option<Placed> {
    let (centres, rec) = catch_unwind(AssertUnwindSafe(|| {
        let mut vg = VisualGraph::new(Orientation::TopToBottom);
        // Its checks after every edge are quadratic; the output is checked below instead.
        vg.dag.set_validate(false);
        let look = StyleAttr::new(Color::fast("black"), 1, None, 0, GRAIN);
        let handles: Vec<_> = graph
            .nodes
            .iter()
            .map(|n| {
                let shape = if n.kind == Kind::Start {
                    ShapeKind::new_circle("")
                } else {
                    ShapeKind::new_box("")
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
            // A self loop needs a label box even without text, or its bow hides under its step.
            let text = match label_margin {
                Some(m) if !e.label.is_empty() => placeholder(i, w.max(24.0) + m, h),
                _ if e.from == e.to => placeholder(i, 24.0, LABEL_LINE),
                _ => String::new(),
            };
            let mut arrow = Arrow::simple(&text);
            arrow.look = look.clone();
            arrow.properties = Some(i.to_string());
            vg.add_edge(arrow, handles[e.from], handles[e.to]);
        }
        let mut rec = Recorder::default();
        vg.do_it(false, !optimise, false, &mut rec);
        let centres: Vec<Point> = handles.iter().map(|&h| vg.pos(h).center()).collect();
        (centres, rec)
    }))
    .ok()?;
    let curves = (0..graph.edges.len())
        .map(|i| rec.curves.get(&i).cloned())
        .collect::<Option<Vec<_>>>()?;
    let labels: Vec<Point> = curves
        .iter()
        .enumerate()
        .map(|(i, c)| match rec.labels.get(&i) {
            Some(at) if label_margin.is_some() => *at,
            _ => curve_middle(c),
        })
        .collect();
    let finite = |p: &Point| p.x.is_finite() && p.y.is_finite();
    let mut points = curves.iter().flat_map(|c| {
        c.segments
            .iter()
            .flat_map(|s| [s.0, s.1, s.2])
            .chain([c.start])
    });
    let ok = centres.iter().chain(&labels).all(finite) && points.all(|p| finite(&p));
    ok.then_some(Placed {
        centres,
        curves,
        labels,
    })
}

/// A point near the middle of a curve, for its label.
pub(super) fn curve_middle(c: &Curve) -> Point {
    let k = c.segments.len();
    // One segment: the cubic Bézier at t = ½; more: the joint nearest the middle.
    let (s0, (a, b, d)) = match k {
        0 => return c.start,
        1 => (c.start, c.segments[0]),
        _ => return c.segments[(k - 1) / 2].2,
    };
    Point::new(
        (s0.x + 3.0 * a.x + 3.0 * b.x + d.x) / 8.0,
        (s0.y + 3.0 * a.y + 3.0 * b.y + d.y) / 8.0,
    )
}

/// The grain of the placeholder text that sizes label boxes in layout-rs: it measures a
/// label as (characters × font size) by (lines × font size) plus padding, so a label of the
/// measured size is passed as that many characters and lines of this "font size".
pub(super) const GRAIN: usize = 4;
/// The padding layout-rs adds to a connector's text size (`BOX_SHAPE_PADDING`).
pub(super) const CONNECTOR_PAD: f64 = 10.0;

/// The text layout-rs measures for label `i` of size `w` × `h`: the index first, so the
/// recorder knows whose label it is handed, padded to the size in grains.
pub(super) fn placeholder(i: usize, w: f64, h: f64) -> String {
    let cols = ((w / GRAIN as f64).ceil() as usize).max(i.to_string().len());
    let rows = (((h - CONNECTOR_PAD).max(0.0) / GRAIN as f64).ceil() as usize).max(1);
    format!("{i:_<cols$}{}", "\n_".repeat(rows - 1))
}

/// A layout-rs backend that draws nothing: it keeps the edge curves (by the index in the
/// arrow's properties) and where each label box is (by the index in its placeholder).
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) curves: HashMap<usize, Curve>,
    pub(super) labels: HashMap<usize, Point>,
}

impl RenderBackend for Recorder {
    fn draw_rect(
        &mut self,
        _: Point,
        _: Point,
        _: &StyleAttr,
        _: Option<String>,
        _: Option<usize>,
    ) {
    }
    fn draw_line(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}
    fn draw_circle(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}
    fn create_clip(&mut self, _: Point, _: Point, _: usize) -> usize {
        0
    }

    fn draw_text(&mut self, xy: Point, text: &str, _: &StyleAttr) {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(i) = digits.parse() {
            self.labels.insert(i, xy);
        }
    }

    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        _: bool,
        head: (bool, bool),
        _: &StyleAttr,
        properties: Option<String>,
        _: &str,
    ) {
        let Some(i) = properties.and_then(|p| p.parse().ok()) else {
            return;
        };
        let [(start, c1), (c2, end), rest @ ..] = path else {
            return;
        };
        // layout-rs writes `M p0 C c1 c2 p1 S c2' p2 …`; an `S` mirrors the last control point.
        let mut segments = vec![(*c1, *c2, *end)];
        for &(c2, end) in rest {
            let (_, last_c2, last_end) = segments[segments.len() - 1];
            let c1 = Point::new(2.0 * last_end.x - last_c2.x, 2.0 * last_end.y - last_c2.y);
            segments.push((c1, c2, end));
        }
        let curve = Curve {
            start: *start,
            segments,
            head_at_start: head.0,
            head_at_end: head.1,
        };
        self.curves.insert(i, curve);
    }
}

/// The last resort, when layout-rs cannot place the graph: the boxes in a column in file
/// order, without edges (the marks still show where work is).
pub(super) fn place_in_column(graph: &Graph) -> Placed {
    let mut y = 0.0;
    let centres = graph.nodes.iter().map(|n| {
        y += n.size.1 + 24.0;
        Point::new(0.0, y - n.size.1 / 2.0)
    });
    Placed {
        centres: centres.collect(),
        curves: Vec::new(),
        labels: Vec::new(),
    }
}
