//! KPI charts: a procedure's KPI report drawn as SVG bar charts on the server, for the
//! auditor's and process owner's report page (on-time rate per step, durations, breaches,
//! declared objectives against actual rates). It must draw only presentation attributes (no
//! `style` attributes or `<style>` elements: the Content-Security-Policy forbids them) and
//! escape every label. It reads a report; it computes no figure of its own.

use crate::report::kpi::KpiReport;

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
    let _ = report;
    todo!("written by the charts helper")
}
