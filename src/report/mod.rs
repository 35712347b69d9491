//! Reports computed from instance histories, for process owners and auditors: the service
//! KPIs of a procedure over a period (`kpi`), from the history alone — the history is the
//! truth, so a report can be recomputed for any past period and always gives the same
//! figures.
//!
//! This module must not change anything: it never writes to the store, never runs a
//! command, and never reads the clock (the period is an argument). Its core is a pure fold
//! over events; the only code that reads from an `Engine` is the thin driver
//! `kpi::kpis_from_engine`.

pub mod kpi;

pub use kpi::{
    kpis_from_engine, render_table, DurationFigures, InstanceFigures, KpiFold, KpiReport,
    Objective, RateFigures, ReportError, StepFigures,
};
