//! Writing the placed picture as SVG: nodes, edges, labels and text, with presentation
//! attributes only (the Content-Security-Policy forbids inline styles) and every label
//! escaped.

use super::*;
pub(super) use crate::web::svg::{coord as n, esc};

/// Fill, border and border width of a step box: the current step stands out most, then the
/// heat of waiting work, then where the instance has been.
pub(super) fn colours(mark: &StepMark) -> (&'static str, &'static str, f64) {
    match mark {
        m if m.current => ("#fde68a", "#92400e", 3.0),
        // Light enough at every shade for dark text and the dark red late count.
        m if m.waiting > 0 => {
            let fill = match m.waiting {
                1..=2 => "#ffedd5",
                3..=9 => "#fed7aa",
                _ => "#fdba74",
            };
            (fill, "#c2410c", 2.0)
        }
        m if m.visited => ("#dcfce7", "#15803d", 1.5),
        _ => ("#ffffff", "#6b7280", 1.5),
    }
}

pub(super) fn draw(proc: &Procedure, graph: &Graph, placed: &Placed) -> String {
    // The view box: every box, label and control point (which bound their curves).
    let mut pts: Vec<(Point, (f64, f64))> = Vec::new();
    for (node, c) in graph.nodes.iter().zip(&placed.centres) {
        pts.push((*c, (node.size.0 / 2.0 + 6.0, node.size.1 / 2.0 + 6.0)));
    }
    for ((curve, edge), at) in placed.curves.iter().zip(&graph.edges).zip(&placed.labels) {
        let (w, h) = label_size(&edge.label);
        pts.push((*at, (w / 2.0 + 4.0, h / 2.0 + 4.0)));
        pts.extend(
            curve
                .segments
                .iter()
                .flat_map(|s| [s.0, s.1, s.2])
                .chain([curve.start])
                .map(|p| (p, (0.0, 0.0))),
        );
    }
    let lo = |f: fn(&(Point, (f64, f64))) -> f64| {
        (pts.iter().map(f).fold(f64::INFINITY, f64::min) - 12.0).floor()
    };
    let hi = |f: fn(&(Point, (f64, f64))) -> f64| {
        (pts.iter().map(f).fold(f64::NEG_INFINITY, f64::max) + 12.0).ceil()
    };
    let (x0, y0) = (lo(|(p, r)| p.x - r.0), lo(|(p, r)| p.y - r.1));
    let (w, h) = (hi(|(p, r)| p.x + r.0) - x0, hi(|(p, r)| p.y + r.1) - y0);

    let (label, font) = (esc(&summary(proc, graph)), esc(FONT));
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"{x0} {y0} {w} {h}\" \
         role=\"img\" aria-label=\"{label}\" font-family=\"{font}\"><defs>{HEADS}</defs>\
         <g fill=\"none\" stroke-width=\"1.5\">"
    );
    for (curve, edge) in placed.curves.iter().zip(&graph.edges) {
        draw_edge(&mut out, curve, edge.late);
    }
    out.push_str("</g>");
    for (at, edge) in placed
        .labels
        .iter()
        .zip(&graph.edges)
        .filter(|(_, e)| !e.label.is_empty())
    {
        draw_label(&mut out, *at, edge);
    }
    for (node, c) in graph.nodes.iter().zip(&placed.centres) {
        draw_node(&mut out, node, *c);
    }
    out.push_str("</svg>");
    out
}

/// The sentence a screen reader says for the picture: what it is, and where the instance is
/// (where work waits is in the table beside the heat map).
pub(super) fn summary(proc: &Procedure, graph: &Graph) -> String {
    let mut s = format!("The steps of {} as a graph", one_line(&proc.title));
    let current: Vec<String> = graph
        .nodes
        .iter()
        .filter(|n| n.mark.current)
        .map(|n| n.lines.join(" "))
        .collect();
    if !current.is_empty() {
        let _ = write!(s, ". Now at: {}", current.join("; "));
    }
    s + "."
}

pub(super) fn draw_edge(out: &mut String, curve: &Curve, late: bool) {
    let (colour, head, dash) = match late {
        true => (LATE, "late", " stroke-dasharray=\"6 4\""),
        false => (EDGE, "head", ""),
    };
    let mut d = format!("M{}", pt(curve.start));
    for (a, b, e) in &curve.segments {
        let _ = write!(d, " C{} {} {}", pt(*a), pt(*b), pt(*e));
    }
    let _ = write!(out, "<path d=\"{d}\" stroke=\"{colour}\"{dash}");
    for (at, wanted) in [("end", curve.head_at_end), ("start", curve.head_at_start)] {
        if wanted {
            let _ = write!(out, " marker-{at}=\"url(#sopflow-{head})\"");
        }
    }
    out.push_str("/>");
}

pub(super) fn draw_label(out: &mut String, at: Point, edge: &Edge) {
    let colour = if edge.late { LATE } else { "#374151" };
    let top = at.y - label_size(&edge.label).1 / 2.0;
    // A white outline keeps the words readable where an edge runs under them.
    let _ = write!(
        out,
        "<text font-size=\"{LABEL_PX}\" fill=\"{colour}\" text-anchor=\"middle\" stroke=\"#ffffff\" \
         stroke-width=\"4\" stroke-linejoin=\"round\" paint-order=\"stroke\">"
    );
    for (i, line) in edge.label.iter().enumerate() {
        let (x, y) = (n(at.x), n(top + LABEL_LINE * (i as f64 + 0.78)));
        let _ = write!(out, "<tspan x=\"{x}\" y=\"{y}\">{}</tspan>", esc(line));
    }
    out.push_str("</text>");
}

pub(super) fn draw_node(out: &mut String, node: &Node, c: Point) {
    let (w, h) = node.size;
    let (x, y) = (c.x - w / 2.0, c.y - h / 2.0);
    let _ = write!(out, "<g><title>{}</title>", esc(&node.tooltip));
    let (fill, border, width) = colours(&node.mark);
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
            let m = &node.mark;
            let fill = if m.current {
                "#b45309"
            } else if m.visited {
                "#15803d"
            } else {
                BAR_FILL
            };
            rect(out, (x, y, w, h), 2.0, fill, ("none", 0.0), "");
        }
        Kind::Missing => rect(out, (x, y, w, h), 6.0, "#fef2f2", (LATE, 1.5), "4 3"),
        // Double border and round ends: where an instance finishes.
        Kind::Step(StepKind::End) => {
            rect(out, (x, y, w, h), h / 2.0, fill, (border, width), "");
            let i = 3.0 + width / 2.0;
            rect(
                out,
                (x + i, y + i, w - 2.0 * i, h - 2.0 * i),
                (h / 2.0 - i).max(0.0),
                "none",
                (border, 1.0),
                "",
            );
        }
        Kind::Step(StepKind::Auto) => rect(out, (x, y, w, h), 6.0, fill, (border, width), "5 3"),
        // Side bars, as flowcharts draw a predefined process.
        Kind::Step(StepKind::Subprocess) => {
            rect(out, (x, y, w, h), 2.0, fill, (border, width), "");
            let (left, right, top, bottom) = (n(x + 8.0), n(x + w - 8.0), n(y), n(y + h));
            let _ = write!(out, "<path d=\"M{left} {top} V{bottom} M{right} {top} V{bottom}\" stroke=\"{border}\"/>");
        }
        Kind::Step(_) => rect(out, (x, y, w, h), 6.0, fill, (border, width), ""),
    }
    if !node.lines.is_empty() {
        node_text(
            out,
            node,
            c,
            if node.kind == Kind::Missing {
                LATE
            } else {
                INK
            },
        );
    }
    out.push_str("</g>");
}

pub(super) fn rect(
    out: &mut String,
    (x, y, w, h): (f64, f64, f64, f64),
    radius: f64,
    fill: &str,
    (stroke, width): (&str, f64),
    dash: &str,
) {
    let (x, y, w, h, r) = (n(x), n(y), n(w), n(h), n(radius));
    let _ = write!(
        out,
        "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"{r}\" fill=\"{fill}\""
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
pub(super) fn node_text(out: &mut String, node: &Node, c: Point, colour: &str) {
    let m = &node.mark;
    let badges = m.waiting > 0 || m.late > 0;
    let top = c.y - (node.lines.len() + usize::from(badges)) as f64 * TITLE_LINE / 2.0;
    let row_y = |i: usize| n(top + TITLE_LINE * (i as f64 + 0.75));
    let cx = n(c.x);
    let weight = if m.current {
        " font-weight=\"700\""
    } else {
        ""
    };
    let _ = write!(
        out,
        "<text font-size=\"{TITLE_PX}\" fill=\"{colour}\" text-anchor=\"middle\">"
    );
    for (i, line) in node.lines.iter().enumerate() {
        let _ = write!(
            out,
            "<tspan x=\"{cx}\" y=\"{}\"{weight}>{}</tspan>",
            row_y(i),
            esc(line)
        );
    }
    if badges {
        let _ = write!(
            out,
            "<tspan x=\"{cx}\" y=\"{}\" font-weight=\"700\">",
            row_y(node.lines.len())
        );
        if m.waiting > 0 {
            let _ = write!(
                out,
                "{} waiting{}",
                m.waiting,
                if m.late > 0 { " · " } else { "" }
            );
        }
        if m.late > 0 {
            let _ = write!(out, "<tspan fill=\"{LATE}\">{} late</tspan>", m.late);
        }
        out.push_str("</tspan>");
    }
    out.push_str("</text>");
}

pub(super) fn pt(p: Point) -> String {
    format!("{} {}", n(p.x), n(p.y))
}
