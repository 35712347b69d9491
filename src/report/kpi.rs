//! Service KPIs of one procedure over a period `[from, to)`: how many instances started,
//! ended and are still open, how long they and their steps took, how many steps were done
//! on time, and the rates the procedure declares under `[kpis]` with their objectives.
//!
//! `KpiFold` is the core: a pure fold over instance histories, one at a time, so a driver
//! can stream histories from any store without holding them all. It must not do I/O, read
//! the clock, or panic on any history (a condition that cannot be evaluated becomes a
//! warning in the report). `kpis_from_engine` is the only function here that reads, and it
//! only reads.
//!
//! What counts is decided by the event's own time: an event at `from` is inside the period,
//! an event at `to` is not. "Open" figures describe the state just before `to`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use cel::{Program, Value as Cel};
use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::definition::model::StepKind;
use crate::engine::compiled::{to_cel, CompiledProcedure};
use crate::engine::instance::{Event, EventKind, Instance, InstanceId, Status, TaskId};
use crate::engine::service::{Engine, ServiceError};
use crate::store::Store;

/// Why a report could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("there is no procedure `{0}`")]
    UnknownProcedure(String),
    #[error("a KPI report needs at least one version of the procedure's definition")]
    NoDefinition,
    #[error("the definitions given belong to different procedures (`{0}` and `{1}`)")]
    MixedProcedures(String, String),
    #[error("the period ends ({to}) before it starts ({from})")]
    BadPeriod {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error(transparent)]
    Engine(#[from] ServiceError),
}

/// The KPIs of one procedure over the period `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct KpiReport {
    /// The procedure id.
    pub procedure: String,
    /// Start of the period (included).
    pub from: DateTime<Utc>,
    /// End of the period (excluded).
    pub to: DateTime<Utc>,
    pub instances: InstanceFigures,
    /// Every task step of the procedure in definition order, including steps nothing
    /// happened at; then steps of older versions that the newest no longer has.
    pub steps: Vec<StepFigures>,
    /// The rates the procedure declares under `[kpis]`, in declaration order.
    pub rates: Vec<RateFigures>,
    /// Things that could not be counted as the definition says (a KPI condition that could
    /// not be evaluated on one completion, which then counts as not met).
    pub warnings: Vec<String>,
}

/// Instance figures for the period.
#[derive(Debug, Clone, PartialEq, Default, Serialize, utoipa::ToSchema)]
pub struct InstanceFigures {
    /// Instances started in the period.
    pub started: u64,
    /// Instances that reached an end step in the period.
    pub completed: u64,
    /// Instances cancelled in the period.
    pub cancelled: u64,
    /// Instances running at the end of the period: started before `to`, neither completed
    /// nor cancelled before `to`.
    pub open: u64,
    /// From start to end step, for the instances completed in the period (cancelled ones are
    /// left out: they were not carried out).
    pub duration: DurationFigures,
    /// Percent of the task completions in the period that were on time, among those whose
    /// step has a deadline; `None` when there were none.
    pub on_time_rate: Option<f64>,
    /// Tasks that became late in the period (a task counts once, however many breach
    /// actions follow).
    pub breaches: u64,
    /// Escalations and reassignments of late tasks in the period.
    pub escalations: u64,
}

/// Median and 90th percentile of durations, in seconds (nearest rank: always one of the
/// measured durations; the median of an even count is the lower middle one).
#[derive(Debug, Clone, PartialEq, Default, Serialize, utoipa::ToSchema)]
pub struct DurationFigures {
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
}

/// Figures of one task step for the period.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StepFigures {
    pub step: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Tasks of this step opened in the period.
    pub opened: u64,
    /// Tasks of this step completed in the period (partial signatures do not count).
    pub completed: u64,
    /// Tasks of this step open at the end of the period.
    pub open: u64,
    /// From opening to completion, for the tasks completed in the period (opened in it or
    /// before).
    pub duration: DurationFigures,
    /// Percent of this step's completions in the period that were on time; `None` without
    /// completions of a step with a deadline.
    pub on_time_rate: Option<f64>,
    /// Tasks of this step that became late in the period.
    pub breaches: u64,
    /// Escalations and reassignments of this step's tasks in the period.
    pub escalations: u64,
}

/// The objective a procedure sets for a rate, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    AtLeast(f64),
    AtMost(f64),
}

impl Objective {
    fn met_by(self, rate: f64) -> bool {
        match self {
            Objective::AtLeast(x) => rate >= x,
            Objective::AtMost(x) => rate <= x,
        }
    }
}

/// One declared rate for the period.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RateFigures {
    /// The KPI's id under `[kpis]`.
    pub id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What counted as success: completions where the condition held, or instances that
    /// ended at one of the `ends_at` steps.
    pub numerator: u64,
    /// What was counted: completions of the step, or instances completed or cancelled.
    pub denominator: u64,
    /// `numerator / denominator` in percent; `None` when nothing was counted.
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objective: Option<Objective>,
    /// Whether the rate meets the objective; `None` without an objective or without a rate.
    pub met: Option<bool>,
}

/// What one declared KPI counts, prepared for the fold.
enum Counting {
    /// Completions of `step` and those where `when` holds. `None` program: the condition
    /// did not compile (impossible for a validated procedure); nothing counts as met.
    Step {
        step: String,
        when: Option<Arc<Program>>,
        /// The names the condition may read: the step's form and computed values.
        names: Vec<String>,
    },
    EndsAt(HashSet<String>),
}

struct RateAcc {
    id: String,
    title: String,
    source: Option<String>,
    objective: Option<Objective>,
    counting: Counting,
    numerator: u64,
    denominator: u64,
}

#[derive(Default)]
struct StepAcc {
    title: Option<String>,
    opened: u64,
    completed: u64,
    open: u64,
    durations: Vec<f64>,
    on_time: OnTime,
    breaches: u64,
    escalations: u64,
}

#[derive(Default, Clone, Copy)]
struct OnTime {
    on_time: u64,
    judged: u64,
}

impl OnTime {
    fn add(&mut self, on_time: Option<bool>) {
        if let Some(ok) = on_time {
            self.judged += 1;
            self.on_time += u64::from(ok);
        }
    }

    fn rate(self) -> Option<f64> {
        percent(self.on_time, self.judged)
    }
}

/// The fold: feed it histories with `add`, then `finish`.
pub struct KpiFold {
    procedure: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// The newest definition: field types for binding KPI conditions.
    def: Arc<CompiledProcedure>,
    instances: InstanceFigures,
    instance_durations: Vec<f64>,
    instance_on_time: OnTime,
    steps: IndexMap<String, StepAcc>,
    rates: Vec<RateAcc>,
    warnings: Warnings,
    /// The time zone date fields are read in (the procedure's calendar's), as the engine
    /// reads them in conditions and deadlines.
    zone: chrono_tz::Tz,
}

/// Most warnings a report lists; the rest are counted in one closing line.
const MAX_WARNINGS: usize = 100;

/// The first `MAX_WARNINGS` warnings and a count of the rest, so a condition failing on
/// every completion of a busy year cannot make the report grow without bound.
#[derive(Default)]
struct Warnings {
    list: Vec<String>,
    dropped: u64,
}

impl Warnings {
    fn push(&mut self, warning: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(warning);
        } else {
            self.dropped += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("… and {} more warnings like these", self.dropped));
        }
        self.list
    }
}

impl KpiFold {
    /// A fold for the procedure of `versions` (any versions of one procedure; steps and KPIs
    /// are taken from the newest, since that is what its owner now declares).
    pub fn new(
        versions: &[Arc<CompiledProcedure>],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Self, ReportError> {
        if to < from {
            return Err(ReportError::BadPeriod { from, to });
        }
        let def = versions
            .iter()
            .max_by_key(|p| p.version())
            .cloned()
            .ok_or(ReportError::NoDefinition)?;
        if let Some(other) = versions.iter().find(|p| p.id() != def.id()) {
            return Err(ReportError::MixedProcedures(
                def.id().to_string(),
                other.id().to_string(),
            ));
        }
        let steps = def
            .def
            .steps
            .iter()
            .filter(|(_, s)| s.kind == StepKind::Task)
            .map(|(id, s)| {
                (
                    id.clone(),
                    StepAcc {
                        title: s.title.clone(),
                        ..StepAcc::default()
                    },
                )
            })
            .collect();
        let mut warnings = Warnings::default();
        let rates = def
            .def
            .kpis
            .iter()
            .map(|(id, k)| {
                let counting = match &k.step {
                    Some(step) => {
                        let when = k.when.as_deref().and_then(|src| {
                            Program::compile(src).map(Arc::new).map_or_else(
                                |e| {
                                    warnings.push(format!(
                                        "{id}: the condition `{src}` does not compile ({e}); nothing counts as met"
                                    ));
                                    None
                                },
                                Some,
                            )
                        });
                        let names = def
                            .def
                            .steps
                            .get(step)
                            .map(|s| s.form.keys().chain(s.compute.keys()).cloned().collect())
                            .unwrap_or_default();
                        Counting::Step {
                            step: step.clone(),
                            when,
                            names,
                        }
                    }
                    None => Counting::EndsAt(k.ends_at.iter().cloned().collect()),
                };
                let objective = match (k.at_least, k.at_most) {
                    (Some(x), _) => Some(Objective::AtLeast(x)),
                    (None, Some(x)) => Some(Objective::AtMost(x)),
                    (None, None) => None,
                };
                RateAcc {
                    id: id.clone(),
                    title: k.title.clone(),
                    source: k.source.clone(),
                    objective,
                    counting,
                    numerator: 0,
                    denominator: 0,
                }
            })
            .collect();
        Ok(KpiFold {
            procedure: def.id().to_string(),
            from,
            to,
            def,
            instances: InstanceFigures::default(),
            instance_durations: Vec::new(),
            instance_on_time: OnTime::default(),
            steps,
            rates,
            warnings,
            zone: chrono_tz::Tz::UTC,
        })
    }

    /// Reads date fields in `zone` (the procedure's calendar's) rather than UTC.
    pub fn in_zone(mut self, zone: chrono_tz::Tz) -> Self {
        self.zone = zone;
        self
    }

    fn in_period(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && at < self.to
    }

    /// Adds one instance's history (oldest event first). Histories of other procedures —
    /// children started by this one, or anything else — are ignored.
    pub fn add(&mut self, history: &[Event]) {
        let Some(first) = history.first() else { return };
        let EventKind::Started { procedure, .. } = &first.kind else {
            return;
        };
        if *procedure != self.procedure {
            return;
        }
        let started_at = first.at;
        if self.in_period(started_at) {
            self.instances.started += 1;
        }
        // Task → (step, opened at): escalations name only the task, and a completion's
        // duration runs from its opening, which may lie before the period.
        let mut tasks: HashMap<TaskId, (String, DateTime<Utc>)> = HashMap::new();
        let mut breached: HashSet<TaskId> = HashSet::new();
        for e in history {
            let inside = self.in_period(e.at);
            match &e.kind {
                EventKind::TaskOpened { task, step, .. } => {
                    tasks.insert(*task, (step.clone(), e.at));
                    if inside {
                        self.step(step).opened += 1;
                    }
                }
                EventKind::TaskCompleted {
                    task,
                    step,
                    outcome,
                    form,
                    computed,
                    on_time,
                    ..
                } if inside => {
                    let opened = tasks.get(task).map(|(_, at)| *at);
                    let acc = self.step(step);
                    acc.completed += 1;
                    acc.on_time.add(*on_time);
                    if let Some(opened) = opened {
                        acc.durations.push(seconds(opened, e.at));
                    }
                    self.instance_on_time.add(*on_time);
                    self.count_completion(step, outcome, form, computed, e.at);
                }
                // The first breach of a task is when it became late; later breach actions
                // (a notification a day later) are the same lateness, not another one.
                EventKind::DeadlineBreached { task, step, .. } => {
                    let first = breached.insert(*task);
                    if first && inside {
                        self.step(step).breaches += 1;
                        self.instances.breaches += 1;
                    }
                }
                EventKind::TaskEscalated { task, .. } | EventKind::TaskReassigned { task, .. }
                    if inside =>
                {
                    match tasks.get(task) {
                        Some((step, _)) => {
                            let step = step.clone();
                            self.step(&step).escalations += 1;
                        }
                        None => self.warnings.push(format!(
                            "an escalation at {} names task {task}, which the history never opened",
                            e.at
                        )),
                    }
                    self.instances.escalations += 1;
                }
                EventKind::Cancelled { .. } if inside => {
                    self.instances.cancelled += 1;
                    self.count_end(None);
                }
                EventKind::Ended { step } if inside => {
                    self.instances.completed += 1;
                    self.instance_durations.push(seconds(started_at, e.at));
                    self.count_end(Some(step));
                }
                _ => {}
            }
        }
        self.count_open(history);
    }

    /// What was open just before `to`, by the engine's own `apply` over the events before
    /// `to`, so "open" means here exactly what it means to the engine.
    fn count_open(&mut self, history: &[Event]) {
        let before: Vec<&Event> = history.iter().take_while(|e| e.at < self.to).collect();
        let Some((first, rest)) = before.split_first() else {
            return;
        };
        // The id plays no part in `apply`; the history does not carry it.
        let Some(mut inst) = Instance::from_first(InstanceId::nil(), first) else {
            return;
        };
        for e in rest {
            inst.apply(e);
        }
        if inst.status != Status::Running {
            return;
        }
        self.instances.open += 1;
        for t in inst.tasks.values() {
            self.step(&t.step).open += 1;
        }
    }

    fn step(&mut self, step: &str) -> &mut StepAcc {
        self.steps.entry(step.to_string()).or_default()
    }

    fn count_completion(
        &mut self,
        step: &str,
        outcome: &str,
        form: &Map<String, Value>,
        computed: &Map<String, Value>,
        at: DateTime<Utc>,
    ) {
        for r in &mut self.rates {
            let Counting::Step {
                step: counted,
                when,
                names,
            } = &r.counting
            else {
                continue;
            };
            if counted != step {
                continue;
            }
            r.denominator += 1;
            let Some(program) = when else { continue };
            match eval_when(program, &self.def, names, outcome, form, computed, self.zone) {
                Ok(true) => r.numerator += 1,
                Ok(false) => {}
                Err(e) => self.warnings.push(format!(
                    "{}: the condition could not be evaluated on the completion of `{step}` at {at} ({e}); counted as not met",
                    r.id
                )),
            }
        }
    }

    fn count_end(&mut self, end_step: Option<&str>) {
        for r in &mut self.rates {
            if let Counting::EndsAt(ends) = &r.counting {
                r.denominator += 1;
                if end_step.is_some_and(|s| ends.contains(s)) {
                    r.numerator += 1;
                }
            }
        }
    }

    /// The report.
    pub fn finish(mut self) -> KpiReport {
        self.instances.duration = durations(&mut self.instance_durations);
        self.instances.on_time_rate = self.instance_on_time.rate();
        let steps = self
            .steps
            .into_iter()
            .map(|(step, mut a)| StepFigures {
                step,
                title: a.title,
                opened: a.opened,
                completed: a.completed,
                open: a.open,
                duration: durations(&mut a.durations),
                on_time_rate: a.on_time.rate(),
                breaches: a.breaches,
                escalations: a.escalations,
            })
            .collect();
        let rates = self
            .rates
            .into_iter()
            .map(|r| {
                let rate = percent(r.numerator, r.denominator);
                RateFigures {
                    id: r.id,
                    title: r.title,
                    source: r.source,
                    numerator: r.numerator,
                    denominator: r.denominator,
                    rate,
                    objective: r.objective,
                    met: r.objective.zip(rate).map(|(o, x)| o.met_by(x)),
                }
            })
            .collect();
        KpiReport {
            procedure: self.procedure,
            from: self.from,
            to: self.to,
            instances: self.instances,
            steps,
            rates,
            warnings: self.warnings.finish(),
        }
    }
}

/// Whether a KPI condition holds on one completion: the step's fields bound as the engine
/// binds instance data (declared types, so dates are timestamps; a field left empty is
/// null), plus `outcome` — exactly the names `definition/semantic/kpis.rs` lets a KPI condition use.
fn eval_when(
    program: &Program,
    def: &CompiledProcedure,
    names: &[String],
    outcome: &str,
    form: &Map<String, Value>,
    computed: &Map<String, Value>,
    zone: chrono_tz::Tz,
) -> Result<bool, String> {
    let mut ctx = crate::definition::expr::context();
    let value = |name: &str| form.get(name).or_else(|| computed.get(name));
    let mut bound: HashSet<&str> = HashSet::new();
    for name in names {
        let v = value(name).map_or(Cel::Null, |v| to_cel(v, def.fields.get(name), zone));
        ctx.add_variable_from_value(name.clone(), v);
        bound.insert(name);
    }
    // A completion recorded under an older version may carry fields the newest form lacks.
    for (name, v) in form.iter().chain(computed.iter()) {
        if bound.insert(name) {
            ctx.add_variable_from_value(name.clone(), to_cel(v, def.fields.get(name), zone));
        }
    }
    ctx.add_variable_from_value("outcome", Cel::String(Arc::new(outcome.to_string())));
    match program.execute(&ctx) {
        Ok(Cel::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("it gave {other:?} instead of true or false")),
        Err(e) => Err(e.to_string()),
    }
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

fn durations(samples: &mut [f64]) -> DurationFigures {
    samples.sort_by(f64::total_cmp);
    DurationFigures {
        median_seconds: nearest_rank(samples, 50),
        p90_seconds: nearest_rank(samples, 90),
    }
}

/// The nearest-rank `p`-th percentile of sorted samples: the smallest sample with at least
/// `p`% of the samples at or below it.
fn nearest_rank(sorted: &[f64], p: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Computes the report from the engine's store: every version of `procedure` and every
/// instance of it. Reads only.
pub fn kpis_from_engine<S: Store>(
    engine: &Engine<S>,
    procedure: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<KpiReport, ReportError> {
    let versions: Vec<Arc<CompiledProcedure>> = engine
        .versions(procedure)
        .into_iter()
        .filter_map(|v| engine.procedure_version(procedure, v))
        .collect();
    if versions.is_empty() {
        return Err(ReportError::UnknownProcedure(procedure.to_string()));
    }
    let zone = versions
        .iter()
        .max_by_key(|p| p.version())
        .map_or(chrono_tz::Tz::UTC, |p| engine.zone_of(&p.def));
    let mut fold = KpiFold::new(&versions, from, to)?.in_zone(zone);
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = engine.instances(Some(procedure), None, cursor.as_deref(), 500)?;
        for id in page.items {
            if starts_at_or_after(id, to) {
                continue;
            }
            fold.add(&engine.history(id)?);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(fold.finish())
}

/// Whether an instance id proves the instance started at or after `t`, so its history
/// need not be read. Top-level instance ids are UUID v7 made from the engine clock just
/// before the `Started` event is stamped by the same clock, so the event is never earlier
/// than the id's millisecond (the clock does not run back: the manual clock cannot, and a
/// system clock stepped back is the one case this shortcut would miss). Child ids are
/// derived by hashing (not v7) and carry no time: they are always read. The listing is in
/// id order, but derived ids fall anywhere in it, so this skips rather than stops.
fn starts_at_or_after(id: InstanceId, t: DateTime<Utc>) -> bool {
    if id.get_version_num() != 7 {
        return false;
    }
    let Some(ts) = id.get_timestamp() else {
        return false;
    };
    let (secs, nanos) = ts.to_unix();
    let Ok(secs) = i64::try_from(secs) else {
        return false;
    };
    DateTime::from_timestamp(secs, nanos).is_some_and(|at| at >= t)
}

/// The report as a fixed-width table for a terminal.
pub fn render_table(report: &KpiReport) -> String {
    let mut out = String::new();
    let i = &report.instances;
    let _ = writeln!(
        out,
        "{}: from {} to {} (excluded)",
        report.procedure,
        report.from.to_rfc3339_opts(SecondsFormat::Secs, true),
        report.to.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let _ = writeln!(
        out,
        "instances: {} started, {} completed, {} cancelled, {} open at the end",
        i.started, i.completed, i.cancelled, i.open
    );
    let _ = writeln!(
        out,
        "duration: median {}, p90 {}; on time {}; {} late, {} escalated",
        opt_duration(i.duration.median_seconds),
        opt_duration(i.duration.p90_seconds),
        opt_percent(i.on_time_rate),
        i.breaches,
        i.escalations
    );
    out.push('\n');
    let mut rows = vec![[
        "step",
        "opened",
        "done",
        "open",
        "median",
        "p90",
        "on time",
        "late",
        "escalated",
    ]
    .map(String::from)
    .to_vec()];
    for s in &report.steps {
        rows.push(vec![
            s.step.clone(),
            s.opened.to_string(),
            s.completed.to_string(),
            s.open.to_string(),
            opt_duration(s.duration.median_seconds),
            opt_duration(s.duration.p90_seconds),
            opt_percent(s.on_time_rate),
            s.breaches.to_string(),
            s.escalations.to_string(),
        ]);
    }
    table(&mut out, &rows, 1);
    if !report.rates.is_empty() {
        out.push('\n');
        let mut rows = vec![["rate", "value", "counted", "objective", "met"]
            .map(String::from)
            .to_vec()];
        for r in &report.rates {
            rows.push(vec![
                r.id.clone(),
                opt_percent(r.rate),
                format!("{}/{}", r.numerator, r.denominator),
                match r.objective {
                    Some(Objective::AtLeast(x)) => format!("≥ {}%", number(x)),
                    Some(Objective::AtMost(x)) => format!("≤ {}%", number(x)),
                    None => "—".into(),
                },
                match r.met {
                    Some(true) => "✓".into(),
                    Some(false) => "✗".into(),
                    None => "—".into(),
                },
            ]);
        }
        table(&mut out, &rows, 1);
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// Rows as columns: the first `left` columns left-aligned (names), the rest right-aligned
/// (figures), widths in characters so `✓` and `≥` take one column.
fn table(out: &mut String, rows: &[Vec<String>], left: usize) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let w = widths[c];
            if c < left {
                let _ = write!(line, "{cell:<w$}");
            } else {
                let _ = write!(line, "{cell:>w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn opt_percent(p: Option<f64>) -> String {
    p.map_or_else(|| "—".into(), |p| format!("{p:.1}%"))
}

fn number(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

fn opt_duration(s: Option<f64>) -> String {
    s.map_or_else(|| "—".into(), duration_words)
}

/// `45s`, `12m 5s`, `3h 20m`, `2d 4h`: the two largest units, enough to compare steps.
fn duration_words(secs: f64) -> String {
    let s = secs.round() as i64;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_capped_and_the_rest_counted() {
        let mut w = Warnings::default();
        for i in 0..MAX_WARNINGS + 50 {
            w.push(format!("w{i}"));
        }
        let list = w.finish();
        assert_eq!(list.len(), MAX_WARNINGS + 1);
        assert_eq!(list[MAX_WARNINGS - 1], format!("w{}", MAX_WARNINGS - 1));
        assert_eq!(list[MAX_WARNINGS], "… and 50 more warnings like these");
        assert_eq!(Warnings::default().finish(), Vec::<String>::new());
    }
    use crate::definition::model::Procedure;
    use chrono::Duration;
    use serde_json::json;
    use uuid::Uuid;

    const SRC: &str = r#"
id = "mini"
version = 1
title = "Mini"
start = "ask"

[roles]
clerk = "Clerk"

[steps.ask]
role = "clerk"
form.happy = { type = "boolean", required = true }
form.score = { type = "integer" }
next = [{ to = "done" }]

[steps.done]
kind = "end"

[kpis.happy_rate]
title = "Happy"
step = "ask"
when = "happy"
at_least = 50

[kpis.big_scores]
title = "Big scores"
step = "ask"
when = "score > 5"
at_most = 10

[kpis.done_rate]
title = "Done"
ends_at = ["done"]
at_least = 100
"#;

    fn def() -> Arc<CompiledProcedure> {
        let p: Procedure = toml::from_str(SRC).expect("parses");
        Arc::new(CompiledProcedure::compile(p, "h".into(), &[]).expect("compiles"))
    }

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid") + Duration::hours(h)
    }

    fn ev(seq: u64, at: DateTime<Utc>, kind: EventKind) -> Event {
        Event {
            seq,
            at,
            by: None,
            kind,
        }
    }

    fn started(at: DateTime<Utc>, procedure: &str) -> Event {
        ev(
            1,
            at,
            EventKind::Started {
                procedure: procedure.into(),
                version: 1,
                hash: "h".into(),
                data: Map::new(),
                parent: None,
            },
        )
    }

    fn opened(seq: u64, at: DateTime<Utc>, task: u128) -> Event {
        ev(
            seq,
            at,
            EventKind::TaskOpened {
                task: Uuid::from_u128(task),
                step: "ask".into(),
                roles: vec!["clerk".into()],
                assignee: None,
                people: vec![],
                opens: None,
                due: None,
                timers: vec![],
            },
        )
    }

    fn completed(
        seq: u64,
        at: DateTime<Utc>,
        task: u128,
        form: Value,
        on_time: Option<bool>,
    ) -> Event {
        let Value::Object(form) = form else {
            panic!("form must be an object")
        };
        ev(
            seq,
            at,
            EventKind::TaskCompleted {
                task: Uuid::from_u128(task),
                step: "ask".into(),
                outcome: "done".into(),
                form,
                computed: Map::new(),
                comment: None,
                meaning: None,
                on_time,
                decided: None,
            },
        )
    }

    fn ended(seq: u64, at: DateTime<Utc>) -> Event {
        ev(
            seq,
            at,
            EventKind::Ended {
                step: "done".into(),
            },
        )
    }

    /// A whole instance: started at `s`, task opened at once, completed at `c`, ended at
    /// `c` too.
    fn whole(s: i64, c: i64, task: u128, form: Value) -> Vec<Event> {
        vec![
            started(t(s), "mini"),
            opened(2, t(s), task),
            completed(3, t(c), task, form, Some(c - s <= 2)),
            ended(4, t(c)),
        ]
    }

    fn report(histories: &[Vec<Event>], from: i64, to: i64) -> KpiReport {
        let mut f = KpiFold::new(&[def()], t(from), t(to)).expect("fold");
        for h in histories {
            f.add(h);
        }
        f.finish()
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[7.0], 50), Some(7.0));
        assert_eq!(nearest_rank(&[7.0], 90), Some(7.0));
        // Even count: the lower middle value.
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 50), Some(2.0));
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&ten, 50), Some(5.0));
        assert_eq!(nearest_rank(&ten, 90), Some(9.0));
        let eleven: Vec<f64> = (1..=11).map(f64::from).collect();
        assert_eq!(nearest_rank(&eleven, 90), Some(10.0), "ceil(0.9 × 11) = 10");
        let mut unsorted = vec![30.0, 10.0, 20.0];
        assert_eq!(
            durations(&mut unsorted),
            DurationFigures {
                median_seconds: Some(20.0),
                p90_seconds: Some(30.0)
            }
        );
    }

    #[test]
    fn the_period_includes_from_and_excludes_to() {
        // Started exactly at `from`: counts. Started exactly at `to`: does not.
        let at_from = whole(10, 11, 1, json!({ "happy": true }));
        let at_to = whole(20, 21, 2, json!({ "happy": true }));
        // Ended exactly at `to`: the start counts, the end does not, and it is open at `to`.
        let ends_at_to = whole(12, 20, 3, json!({ "happy": false }));
        let r = report(&[at_from, at_to, ends_at_to], 10, 20);
        assert_eq!(r.instances.started, 2);
        assert_eq!(r.instances.completed, 1);
        assert_eq!(r.instances.open, 1);
        assert_eq!(r.instances.duration.median_seconds, Some(3600.0));
        let ask = &r.steps[0];
        assert_eq!((ask.opened, ask.completed, ask.open), (2, 1, 1));
        assert_eq!(r.rates[0].numerator, 1);
        assert_eq!(r.rates[0].denominator, 1);
    }

    #[test]
    fn open_at_to_follows_the_events_before_to() {
        // Started and finished before the period: not open, nothing counted.
        let before = whole(0, 1, 1, json!({ "happy": true }));
        // Started before the period, still running at `to`: open, its task open.
        let running = vec![started(t(5), "mini"), opened(2, t(5), 2)];
        // Started before, completed inside: not open; its duration runs from the opening
        // before the period (5h → 12h = 7h).
        let finishing = whole(5, 12, 3, json!({ "happy": true }));
        // Cancelled inside the period: not open, its task closed.
        let cancelled = vec![
            started(t(11), "mini"),
            opened(2, t(11), 4),
            ev(
                3,
                t(13),
                EventKind::Cancelled {
                    reason: "dup".into(),
                },
            ),
        ];
        let r = report(&[before, running, finishing, cancelled], 10, 20);
        assert_eq!(r.instances.open, 1);
        assert_eq!(r.instances.started, 1);
        assert_eq!(r.instances.completed, 1);
        assert_eq!(r.instances.cancelled, 1);
        assert_eq!(r.steps[0].open, 1);
        assert_eq!(r.steps[0].opened, 1, "only the cancelled one opened inside");
        assert_eq!(r.steps[0].duration.median_seconds, Some(7.0 * 3600.0));
        // The one completion (5h → 12h) was late: on time needs ≤ 2h in `whole`.
        assert_eq!(r.steps[0].on_time_rate, Some(0.0));
        // Ended: 1 at `done`, 1 cancelled → 50%, objective 100 not met.
        let done = &r.rates[2];
        assert_eq!((done.numerator, done.denominator), (1, 2));
        assert_eq!(done.rate, Some(50.0));
        assert_eq!(done.met, Some(false));
    }

    #[test]
    fn rates_meet_or_miss_their_objectives_and_errors_become_warnings() {
        let a = whole(1, 2, 1, json!({ "happy": true, "score": 9 }));
        let b = whole(1, 2, 2, json!({ "happy": false, "score": 1 }));
        // No score: `score > 5` compares null with a number, an evaluation error.
        let c = whole(1, 2, 3, json!({ "happy": true }));
        let r = report(&[a, b, c], 0, 10);
        let happy = &r.rates[0];
        assert_eq!((happy.numerator, happy.denominator), (2, 3));
        assert_eq!(happy.met, Some(true), "66.7% ≥ 50%");
        let big = &r.rates[1];
        assert_eq!((big.numerator, big.denominator), (1, 3));
        assert_eq!(big.met, Some(false), "33.3% > 10%");
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].starts_with("big_scores:"), "{:?}", r.warnings);
    }

    #[test]
    fn no_activity_gives_no_rates_but_every_step() {
        let r = report(&[], 0, 10);
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.steps[0].step, "ask");
        assert_eq!(r.steps[0].on_time_rate, None);
        assert_eq!(r.instances.duration, DurationFigures::default());
        assert!(r.rates.iter().all(|x| x.rate.is_none() && x.met.is_none()));
    }

    #[test]
    fn other_procedures_histories_are_ignored() {
        let mut other = whole(1, 2, 1, json!({ "happy": true }));
        other[0] = started(t(1), "other");
        let r = report(&[other, vec![]], 0, 10);
        assert_eq!(r.instances, InstanceFigures::default());
    }

    #[test]
    fn a_task_breached_twice_is_late_once() {
        let task = Uuid::from_u128(1);
        let breach = |seq, at| {
            ev(
                seq,
                at,
                EventKind::DeadlineBreached {
                    task,
                    step: "ask".into(),
                    due: t(1),
                    late_ms: 0,
                    action: "escalate".into(),
                    timer: Uuid::from_u128(seq.into()),
                },
            )
        };
        let h = vec![
            started(t(0), "mini"),
            opened(2, t(0), 1),
            breach(3, t(1)),
            ev(
                4,
                t(1),
                EventKind::TaskEscalated {
                    task,
                    role: "boss".into(),
                },
            ),
            breach(5, t(3)),
        ];
        let r = report(std::slice::from_ref(&h), 0, 10);
        assert_eq!((r.instances.breaches, r.instances.escalations), (1, 1));
        assert_eq!((r.steps[0].breaches, r.steps[0].escalations), (1, 1));
        // A period holding only the second breach action: the task was already late.
        let r = report(&[h], 2, 10);
        assert_eq!(r.instances.breaches, 0);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            KpiFold::new(&[def()], t(2), t(1)),
            Err(ReportError::BadPeriod { .. })
        ));
        assert!(matches!(
            KpiFold::new(&[], t(1), t(2)),
            Err(ReportError::NoDefinition)
        ));
    }

    #[test]
    fn only_v7_ids_from_at_or_after_to_are_skipped() {
        let to = t(10);
        let id = |at: DateTime<Utc>| crate::engine::service::new_instance_id(at);
        assert!(starts_at_or_after(id(to), to));
        assert!(starts_at_or_after(id(t(11)), to));
        assert!(!starts_at_or_after(id(to - Duration::milliseconds(1)), to));
        // A child's id is derived, not time-based: always read.
        let child = crate::engine::instance::derive_id(id(t(11)), 3, 0);
        assert!(!starts_at_or_after(child, to));
    }
}
