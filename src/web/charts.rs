//! KPI charts: a procedure's KPI report drawn as SVG bar charts on the server, for the
//! auditor's and process owner's report page (on-time rate per step, durations, breaches,
//! declared objectives against actual rates). It must draw only presentation attributes (no
//! `style` attributes or `<style>` elements: the Content-Security-Policy forbids them) and
//! escape every label. It reads a report; it computes no figure of its own.
//!
//! Every chart is the same drawing — rows of a label and one or more horizontal bars with
//! the figure written at the bar's end — so they read alike side by side. The view box is
//! about as wide as a chart's column on the page, so the 13px text stays near 13px there.

use std::fmt::Write as _;

use super::svg::{coord as n, esc, text_width, FONT};
use crate::definition::render::one_line;
use crate::report::kpi::{KpiReport, Objective, StepFigures};

/// One chart: a heading and its SVG.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    /// A sentence saying what the chart shows, for people who cannot see it (aria).
    pub summary: String,
    pub svg: String,
}

/// The charts for `report`, in the order the page shows them; charts with nothing to show
/// are left out.
pub fn kpi_charts(report: &KpiReport) -> Vec<Chart> {
    [
        on_time_chart(report),
        duration_chart(report),
        breach_chart(report),
        rate_chart(report),
    ]
    .into_iter()
    .flatten()
    .collect()
}

const WIDTH: f64 = 520.0;
const FONT_PX: f64 = 13.0;
const LINE: f64 = 16.0;
/// The label column: titles are wrapped to two lines of this many characters at most.
const LABEL_CHARS: usize = 24;
const BAR_X: f64 = 190.0;
/// Bars end here at most, leaving room for the figure written after them.
const BAR_END: f64 = 430.0;
const BAR_H: f64 = 16.0;
const GROUPED_BAR_H: f64 = 14.0;
const ROW_GAP: f64 = 12.0;

const INK: &str = "#111827";
const MUTED: &str = "#4b5563";
const GRID: &str = "#d1d5db";
// All of these are at least 4.5:1 against white, so bars and the text beside them read.
const GREEN: &str = "#15803d";
const AMBER: &str = "#b45309";
const RED: &str = "#b91c1c";
const BLUE: &str = "#1d4ed8";
const PURPLE: &str = "#6d28d9";

/// One bar of a row: its length on the chart's scale, its colour, and (in a group of bars)
/// the figure written after it.
struct Bar {
    value: f64,
    colour: &'static str,
    figure: String,
}

/// One row: a label, its bars (none: "no data"), what is written after a single bar (or in
/// place of none), an optional marker line (an objective) and an optional line of text under
/// the bars.
struct Row {
    label: String,
    bars: Vec<Bar>,
    figure: String,
    marker: Option<f64>,
    note: Option<(String, &'static str)>,
}

impl Row {
    fn new(label: String) -> Row {
        Row {
            label,
            bars: Vec::new(),
            figure: "no data".into(),
            marker: None,
            note: None,
        }
    }
}

/// How values map to bar lengths, and whether to draw a 0–100 % axis.
struct Scale {
    max: f64,
    percent_axis: bool,
}

fn step_name(s: &StepFigures) -> String {
    s.title
        .as_deref()
        .map(one_line)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| one_line(&s.step))
}

/// A figure only if it can be drawn: the report's figures are computed, but a chart must not
/// draw NaN.
fn usable(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

fn on_time_chart(report: &KpiReport) -> Option<Chart> {
    let figure = |s: &StepFigures| {
        let rate = usable(s.on_time_rate)?;
        let colour = match rate {
            r if r >= 90.0 => GREEN,
            r if r >= 70.0 => AMBER,
            _ => RED,
        };
        Some((rate, colour, pct(rate)))
    };
    let what = "Share of each step's completions that were on time";
    per_step(
        "On-time rate per step",
        what,
        report,
        percent_scale(),
        figure,
    )
}

fn duration_chart(report: &KpiReport) -> Option<Chart> {
    let median = |s: &StepFigures| usable(s.duration.median_seconds).map(|m| m.max(0.0));
    let max = report.steps.iter().filter_map(median).fold(0.0, f64::max);
    // All medians zero still draws (zero-length bars with their figures).
    let scale = Scale {
        max: if max > 0.0 { max } else { 1.0 },
        percent_axis: false,
    };
    let figure = |s: &StepFigures| median(s).map(|m| (m, BLUE, human_duration(m)));
    let what = "Median time from a step's opening to its completion";
    per_step("Median duration per step", what, report, scale, figure)
}

/// A chart of one figure per step (value, colour, as written), "no data" where a step has
/// none; none at all when no step has one.
fn per_step(
    title: &str,
    what: &str,
    report: &KpiReport,
    scale: Scale,
    figure: impl Fn(&StepFigures) -> Option<(f64, &'static str, String)>,
) -> Option<Chart> {
    let (mut said, mut missing) = (Vec::new(), 0);
    let mut rows = Vec::new();
    for s in &report.steps {
        let mut row = Row::new(step_name(s));
        match figure(s) {
            Some((value, colour, written)) => {
                said.push(format!("{} {written}", row.label));
                row.bars.push(Bar {
                    value,
                    colour,
                    figure: String::new(),
                });
                row.figure = written;
            }
            None => missing += 1,
        }
        rows.push(row);
    }
    if said.is_empty() {
        return None;
    }
    let mut summary = format!("{what}: {}", said.join("; "));
    if missing > 0 {
        let _ = write!(summary, "; no data for {}", count(missing, "step"));
    }
    summary.push('.');
    let svg = bar_chart(&rows, &scale, &[], &summary);
    Some(Chart {
        title: title.into(),
        summary,
        svg,
    })
}

fn breach_chart(report: &KpiReport) -> Option<Chart> {
    let late: Vec<&StepFigures> = report
        .steps
        .iter()
        .filter(|s| s.breaches > 0 || s.escalations > 0)
        .collect();
    if late.is_empty() {
        return None;
    }
    let max = late
        .iter()
        .map(|s| s.breaches.max(s.escalations))
        .max()
        .unwrap_or(1) as f64;
    let mut said = Vec::new();
    let rows: Vec<Row> = late
        .iter()
        .map(|s| {
            let mut row = Row::new(step_name(s));
            row.bars = vec![
                Bar {
                    value: s.breaches as f64,
                    colour: RED,
                    figure: s.breaches.to_string(),
                },
                Bar {
                    value: s.escalations as f64,
                    colour: PURPLE,
                    figure: s.escalations.to_string(),
                },
            ];
            row.figure = format!("{} late · {} escalated", s.breaches, s.escalations);
            said.push(format!(
                "{}: {} late, {} escalated or reassigned",
                row.label, s.breaches, s.escalations
            ));
            row
        })
        .collect();
    let others = report.steps.len() - late.len();
    let mut summary = format!(
        "Tasks that became late, and escalations or reassignments, per step: {}",
        said.join("; ")
    );
    if others > 0 {
        let _ = write!(summary, "; none at the other {}", count(others, "step"));
    }
    summary.push('.');
    let scale = Scale {
        max: max.max(1.0),
        percent_axis: false,
    };
    let legend = [
        ("late (breaches)", RED),
        ("escalated or reassigned", PURPLE),
    ];
    Some(Chart {
        title: "Late tasks and escalations per step".into(),
        svg: bar_chart(&rows, &scale, &legend, &summary),
        summary,
    })
}

fn rate_chart(report: &KpiReport) -> Option<Chart> {
    if report.rates.is_empty() {
        return None;
    }
    let mut said = Vec::new();
    let rows: Vec<Row> = report
        .rates
        .iter()
        .map(|r| {
            let title = one_line(&r.title);
            let mut row = Row::new(if title.is_empty() {
                one_line(&r.id)
            } else {
                title
            });
            let objective = r.objective.and_then(|o| match o {
                Objective::AtLeast(x) if x.is_finite() => Some((format!("at least {}", pct(x)), x)),
                Objective::AtMost(x) if x.is_finite() => Some((format!("at most {}", pct(x)), x)),
                _ => None,
            });
            row.marker = objective.as_ref().map(|(_, x)| *x);
            let verdict = match r.met {
                Some(true) => Some(("met", GREEN)),
                Some(false) => Some(("not met", RED)),
                None => None,
            };
            if let Some(rate) = usable(r.rate) {
                row.bars.push(Bar {
                    value: rate,
                    colour: verdict.map_or(BLUE, |(_, c)| c),
                    figure: String::new(),
                });
                row.figure = pct(rate);
            }
            let mut sentence = format!("{} {}", row.label, row.figure);
            let note = match (&objective, verdict) {
                (Some((o, _)), Some((v, colour))) => Some((format!("objective {o}: {v}"), colour)),
                (Some((o, _)), None) => Some((format!("objective {o}"), MUTED)),
                (None, _) => None,
            };
            if let Some((text, _)) = &note {
                let _ = write!(sentence, " ({text})");
            }
            said.push(sentence);
            row.note = note;
            row
        })
        .collect();
    let summary = format!(
        "Declared rates against their objectives: {}.",
        said.join("; ")
    );
    Some(Chart {
        title: "Rates against objectives".into(),
        svg: bar_chart(&rows, &percent_scale(), &[], &summary),
        summary,
    })
}

fn percent_scale() -> Scale {
    Scale {
        max: 100.0,
        percent_axis: true,
    }
}

/// The SVG of rows of bars: label column on the left, bars from `BAR_X`, each row's figure
/// after its longest bar, a legend and a 0–100 % axis on top when asked for.
fn bar_chart(rows: &[Row], scale: &Scale, legend: &[(&str, &str)], summary: &str) -> String {
    let mut body = String::new();
    let mut y = 8.0;
    if !legend.is_empty() {
        let mut x = BAR_X;
        for (name, colour) in legend {
            let _ = write!(
                body,
                "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" rx=\"2\" fill=\"{colour}\"/>\
                 <text x=\"{}\" y=\"{}\" fill=\"{INK}\">{}</text>",
                n(x),
                n(y + 1.0),
                n(x + 17.0),
                n(y + 11.5),
                esc(name)
            );
            x += 17.0 + text_width(name, FONT_PX) + 16.0;
        }
        y += LINE + 8.0;
    }
    if scale.percent_axis {
        for tick in [0.0, 50.0, 100.0] {
            let x = bar_x(tick, scale);
            let _ = write!(
                body,
                "<text x=\"{}\" y=\"{}\" fill=\"{MUTED}\" text-anchor=\"middle\">{}</text>",
                n(x),
                n(y + 11.0),
                pct(tick)
            );
        }
        y += LINE + 4.0;
    }
    let rows_top = y;
    for row in rows {
        y = draw_row(&mut body, row, scale, y);
    }
    if scale.percent_axis {
        // Grid lines under the bars, drawn last but placed first.
        let mut grid = String::new();
        for tick in [0.0, 50.0, 100.0] {
            let x = bar_x(tick, scale);
            let _ = write!(
                grid,
                "<path d=\"M{} {} V{}\" stroke=\"{GRID}\" stroke-width=\"1\"/>",
                n(x),
                n(rows_top - 2.0),
                n(y - ROW_GAP / 2.0)
            );
        }
        body.insert_str(0, &grid);
    } else {
        let _ = write!(
            body,
            "<path d=\"M{BAR_X} {} V{}\" stroke=\"{GRID}\" stroke-width=\"1\"/>",
            n(rows_top - 2.0),
            n(y - ROW_GAP / 2.0)
        );
    }
    let height = (y + 4.0).ceil();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{}\" font-family=\"{}\" \
         font-size=\"{FONT_PX}\">{body}</svg>",
        esc(summary),
        esc(FONT)
    )
}

/// Draws one row from `top`; returns where the next row starts.
fn draw_row(out: &mut String, row: &Row, scale: &Scale, top: f64) -> f64 {
    let label = label_lines(&row.label);
    let bar_h = if row.bars.len() > 1 {
        GROUPED_BAR_H
    } else {
        BAR_H
    };
    let bars_h = (row.bars.len().max(1)) as f64 * (bar_h + 3.0) - 3.0;
    let block_h = bars_h + if row.note.is_some() { LINE + 2.0 } else { 0.0 };
    let label_h = label.len() as f64 * LINE;
    let h = block_h.max(label_h);
    let _ = write!(
        out,
        "<g><title>{}: {}</title>",
        esc(&row.label),
        esc(&row.figure)
    );
    let label_top = top + (h - label_h) / 2.0;
    let _ = write!(out, "<text fill=\"{INK}\" text-anchor=\"end\">");
    for (i, line) in label.iter().enumerate() {
        let _ = write!(
            out,
            "<tspan x=\"{}\" y=\"{}\">{}</tspan>",
            n(BAR_X - 8.0),
            n(label_top + LINE * i as f64 + 12.0),
            esc(line)
        );
    }
    out.push_str("</text>");
    let bars_top = top + (h - block_h) / 2.0;
    let mut end = BAR_X;
    for (i, bar) in row.bars.iter().enumerate() {
        let y = bars_top + i as f64 * (bar_h + 3.0);
        let w = bar_x(bar.value, scale) - BAR_X;
        // A figure of zero still shows a sliver, so "0" reads as measured, not missing.
        let w = w.max(2.0);
        let _ = write!(
            out,
            "<rect x=\"{BAR_X}\" y=\"{}\" width=\"{}\" height=\"{bar_h}\" rx=\"2\" fill=\"{}\"/>",
            n(y),
            n(w),
            bar.colour
        );
        end = end.max(BAR_X + w);
        if row.bars.len() > 1 {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" fill=\"{INK}\" font-weight=\"600\">{}</text>",
                n(BAR_X + w + 6.0),
                n(y + bar_h / 2.0 + 4.5),
                esc(&bar.figure)
            );
        }
    }
    if let Some(m) = row.marker {
        let x = bar_x(m, scale);
        let _ = write!(
            out,
            "<path d=\"M{} {} V{}\" stroke=\"{INK}\" stroke-width=\"2.5\"/>",
            n(x),
            n(bars_top - 4.0),
            n(bars_top + bars_h + 4.0)
        );
        end = end.max(x + 2.0);
    }
    if row.bars.len() <= 1 {
        let (colour, weight) = if row.bars.is_empty() {
            (MUTED, "")
        } else {
            (INK, " font-weight=\"600\"")
        };
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\"{weight}>{}</text>",
            n(end + 6.0),
            n(bars_top + bars_h / 2.0 + 4.5),
            esc(&row.figure)
        );
    }
    if let Some((note, colour)) = &row.note {
        let _ = write!(
            out,
            "<text x=\"{BAR_X}\" y=\"{}\" fill=\"{colour}\">{}</text>",
            n(bars_top + bars_h + 2.0 + 12.5),
            esc(note)
        );
    }
    out.push_str("</g>");
    top + h + ROW_GAP
}

fn bar_x(value: f64, scale: &Scale) -> f64 {
    let v = if value.is_finite() { value } else { 0.0 };
    BAR_X + (v / scale.max).clamp(0.0, 1.0) * (BAR_END - BAR_X)
}

/// A label in at most two lines of the label column, the rest cut with an ellipsis (the full
/// label is in the row's tooltip and the chart's summary).
fn label_lines(label: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut cut = false;
    for word in label.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > LABEL_CHARS {
            lines.push(std::mem::take(&mut line));
        }
        if lines.len() == 2 {
            cut = true;
            break;
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    for l in &mut lines {
        if l.chars().count() > LABEL_CHARS {
            *l = l.chars().take(LABEL_CHARS - 1).collect();
            l.push('…');
        }
    }
    if cut {
        if let Some(last) = lines.last_mut() {
            if last.chars().count() >= LABEL_CHARS - 1 {
                *last = last.chars().take(LABEL_CHARS - 2).collect();
            }
            last.push('…');
        }
    }
    lines
}

/// `95 %`, `99.5 %`: whole percents unless that would hide a difference that matters near
/// an objective.
fn pct(v: f64) -> String {
    if (v - v.round()).abs() < 0.05 {
        format!("{:.0} %", v.round())
    } else {
        format!("{v:.1} %")
    }
}

/// Seconds in the unit a person would use: minutes under two hours, hours under two days,
/// then days.
fn human_duration(seconds: f64) -> String {
    let minutes = seconds / 60.0;
    let hours = minutes / 60.0;
    if minutes < 1.0 {
        "under 1 min".into()
    } else if minutes < 120.0 {
        format!("{:.0} min", minutes.round())
    } else if hours < 48.0 {
        format!("{} h", one_decimal(hours))
    } else {
        format!("{} days", one_decimal(hours / 24.0))
    }
}

fn one_decimal(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::kpi::{DurationFigures, InstanceFigures, RateFigures};
    use chrono::{TimeZone, Utc};

    fn step(id: &str, title: Option<&str>) -> StepFigures {
        StepFigures {
            step: id.into(),
            title: title.map(Into::into),
            opened: 0,
            completed: 0,
            open: 0,
            duration: DurationFigures::default(),
            on_time_rate: None,
            breaches: 0,
            escalations: 0,
        }
    }

    fn empty() -> KpiReport {
        KpiReport {
            procedure: "p".into(),
            from: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
            instances: InstanceFigures::default(),
            steps: vec![step("register", Some("Register")), step("close", None)],
            rates: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn full() -> KpiReport {
        let mut r = empty();
        let durations = [
            Some(45.0 * 60.0),
            Some(3.5 * 3600.0),
            Some(2.5 * 86400.0),
            None,
        ];
        let rates = [Some(95.0), Some(75.5), Some(40.0), None];
        r.steps = ["register", "review", "approve", "archive"]
            .iter()
            .zip(durations.iter().zip(rates))
            .enumerate()
            .map(|(i, (id, (d, rate)))| {
                let mut s = step(id, Some(&format!("Step {id}")));
                s.duration.median_seconds = *d;
                s.on_time_rate = rate;
                s.breaches = [0, 2, 5, 0][i];
                s.escalations = [0, 1, 0, 0][i];
                s
            })
            .collect();
        r.rates = vec![
            RateFigures {
                id: "first_time_right".into(),
                title: "First time right".into(),
                source: None,
                numerator: 18,
                denominator: 20,
                rate: Some(90.0),
                objective: Some(Objective::AtLeast(95.0)),
                met: Some(false),
            },
            RateFigures {
                id: "complaints".into(),
                title: "Complaints".into(),
                source: None,
                numerator: 1,
                denominator: 50,
                rate: Some(2.0),
                objective: Some(Objective::AtMost(5.0)),
                met: Some(true),
            },
            RateFigures {
                id: "nothing_yet".into(),
                title: "Nothing counted yet".into(),
                source: None,
                numerator: 0,
                denominator: 0,
                rate: None,
                objective: None,
                met: None,
            },
        ];
        r
    }

    fn assert_clean(svg: &str) {
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" "),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains(" viewBox=\"0 0 520 "), "{svg}");
        assert!(!svg.contains("style"), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf\""), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
    }

    #[test]
    fn a_report_with_figures_gives_four_charts() {
        let charts = kpi_charts(&full());
        let titles: Vec<&str> = charts.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "On-time rate per step",
                "Median duration per step",
                "Late tasks and escalations per step",
                "Rates against objectives"
            ]
        );
        for c in &charts {
            assert_clean(&c.svg);
            assert!(c.summary.ends_with('.'), "{}", c.summary);
        }

        let on_time = &charts[0];
        assert!(on_time.svg.contains(&format!("fill=\"{GREEN}\"")));
        assert!(on_time.svg.contains(&format!("fill=\"{AMBER}\"")));
        assert!(on_time.svg.contains(&format!("fill=\"{RED}\"")));
        for figure in [">95 %<", ">75.5 %<", ">40 %<", ">no data<", ">100 %<"] {
            assert!(on_time.svg.contains(figure), "{figure}: {}", on_time.svg);
        }
        assert_eq!(
            on_time.summary,
            "Share of each step's completions that were on time: Step register 95 %; \
             Step review 75.5 %; Step approve 40 %; no data for 1 step."
        );
        // A 95 % bar is 95 % of the bar area long.
        let bar = format!("width=\"{}\"", n((BAR_END - BAR_X) * 0.95));
        assert!(on_time.svg.contains(&bar), "{bar}");

        let durations = &charts[1];
        for figure in [">45 min<", ">3.5 h<", ">2.5 days<", ">no data<"] {
            assert!(durations.svg.contains(figure), "{figure}");
        }
        // The longest median fills the bar area.
        assert!(durations
            .svg
            .contains(&format!("width=\"{}\"", n(BAR_END - BAR_X))));

        let late = &charts[2];
        assert!(late.svg.contains("late (breaches)"));
        assert!(!late.svg.contains("Step register") && !late.svg.contains("Step archive"));
        assert_eq!(
            late.summary,
            "Tasks that became late, and escalations or reassignments, per step: \
             Step review: 2 late, 1 escalated or reassigned; Step approve: 5 late, 0 escalated \
             or reassigned; none at the other 2 steps."
        );

        let rates = &charts[3];
        assert!(rates.svg.contains(">objective at least 95 %: not met<"));
        assert!(rates.svg.contains(">objective at most 5 %: met<"));
        assert!(rates.svg.contains(">no data<"));
        // The objective's marker line.
        let at = n(bar_x(95.0, &percent_scale()));
        assert!(
            rates.svg.contains(&format!("<path d=\"M{at} ")),
            "{}",
            rates.svg
        );
        assert!(rates
            .summary
            .contains("First time right 90 % (objective at least 95 %: not met)"));
        assert!(rates.summary.contains("Nothing counted yet no data"));
    }

    #[test]
    fn an_empty_report_gives_no_charts() {
        assert!(kpi_charts(&empty()).is_empty());
        let mut r = empty();
        r.steps.clear();
        assert!(kpi_charts(&r).is_empty());
        // Figures that cannot be drawn are no figures.
        r.steps = vec![step("x", None)];
        r.steps[0].on_time_rate = Some(f64::NAN);
        r.steps[0].duration.median_seconds = Some(f64::INFINITY);
        assert!(kpi_charts(&r).is_empty());
    }

    #[test]
    fn labels_are_escaped() {
        let mut r = full();
        r.steps[1].title = Some("<script>alert(\"x\")</script> & 'co'".into());
        r.rates[0].title = "Rate <b>bold</b> & \u{7}bell".into();
        let charts = kpi_charts(&r);
        assert_eq!(charts.len(), 4);
        for c in &charts {
            assert_clean(&c.svg);
            assert!(
                !c.svg.contains("<script") && !c.svg.contains("<b>"),
                "{}",
                c.svg
            );
            assert!(!c.svg.contains('\u{7}'));
        }
        assert!(charts[0]
            .svg
            .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;co&#39;"));
        assert!(charts[3].svg.contains("Rate &lt;b&gt;bold&lt;/b&gt; &amp;"));
        // The summary is plain text: the template escapes it.
        assert!(charts[0].summary.contains("<script>"));
    }

    #[test]
    fn long_labels_are_cut_to_two_lines() {
        assert_eq!(label_lines("Register"), vec!["Register"]);
        assert_eq!(
            label_lines("Report the crisis event to the management representative at once"),
            vec!["Report the crisis event", "to the management…"]
        );
        let long = label_lines(&"x".repeat(60));
        assert_eq!(long, vec![format!("{}…", "x".repeat(LABEL_CHARS - 1))]);
        assert_eq!(label_lines(""), vec![""]);
    }

    #[test]
    fn figures_read_as_people_say_them() {
        assert_eq!(pct(95.0), "95 %");
        assert_eq!(pct(99.96), "100 %");
        assert_eq!(pct(85.714), "85.7 %");
        assert_eq!(human_duration(20.0), "under 1 min");
        assert_eq!(human_duration(45.0 * 60.0), "45 min");
        assert_eq!(human_duration(119.0 * 60.0), "119 min");
        assert_eq!(human_duration(3.0 * 3600.0), "3 h");
        assert_eq!(human_duration(47.5 * 3600.0), "47.5 h");
        assert_eq!(human_duration(3.0 * 86400.0), "3 days");
        assert_eq!(count(1, "step"), "1 step");
        assert_eq!(count(2, "step"), "2 steps");
    }
}
