//! The auditors' commands — `verify`, `audit`, `export`, `report` — on a stopped store:
//! argument handling, progress display and printing only. The checks, queries and
//! encodings are the library's (`store::chain`, `audit`, `report`); this module must not
//! compute any figure of its own.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sopflow::audit::{self, ExportFormat, ExportLine, Filters};
use sopflow::clock::SystemClock;
use sopflow::engine::service::Engine;
use sopflow::setup;
use sopflow::store::any::AnyStore;

/// The data directory of a stopped store.
#[derive(clap::Args, Debug, Clone)]
pub struct DataDir {
    /// Data directory of the embedded store (stop `sopflow serve` first, or use the API).
    #[arg(long = "data-dir", visible_alias = "data", default_value = "data")]
    pub data_dir: PathBuf,
    /// Read a PostgreSQL store instead (`postgres://USER@HOST/DATABASE`).
    #[arg(long, env = "SOPFLOW_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// Calendar files. A date written alone (`--from 2026-03-01`, a date field in a KPI
    /// condition) means its midnight in the calendar's time zone, as everywhere in sopflow;
    /// UTC when there are none.
    #[arg(long, default_value = "calendars")]
    pub calendars: PathBuf,
}

impl DataDir {
    fn open(&self) -> anyhow::Result<Engine<AnyStore>> {
        let engine = match &self.store {
            Some(url) => setup::open_existing_postgres(url, Arc::new(SystemClock))?,
            None => setup::open_existing(&self.data_dir, Arc::new(SystemClock))?,
        };
        engine.set_calendars(&self.calendar_files());
        Ok(engine)
    }

    /// The calendars in `--calendars`. Only their time zones matter to these commands; a
    /// broken calendar file is left out (`sopflow validate` reports it).
    fn calendar_files(&self) -> Vec<Arc<sopflow::definition::calendar::Calendar>> {
        if !self.calendars.is_dir() {
            return Vec::new();
        }
        sopflow::definition::load::validate_paths(
            &[],
            &sopflow::definition::load::Options {
                calendars_dir: Some(self.calendars.clone()),
                registers_dir: None,
                coverage_from: None,
            },
        )
        .calendars
    }

    /// What a date alone means in a filter: midnight in the default calendar's zone.
    fn default_zone(&self) -> chrono_tz::Tz {
        self.calendar_files()
            .iter()
            .find(|c| c.id() == "default")
            .map_or(chrono_tz::Tz::UTC, |c| c.timezone())
    }
}

/// The filters every audit command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Events by this user, or by a delegate on their behalf.
    #[arg(long)]
    pub actor: Option<String>,
    /// Events of instances of this procedure.
    #[arg(long)]
    pub procedure: Option<String>,
    /// Events of this kind (task_completed, deadline_breached, …).
    #[arg(long)]
    pub kind: Option<String>,
    /// From this time on (inclusive): 2026-03-01 or 2026-03-01T08:00:00Z.
    #[arg(long)]
    pub from: Option<String>,
    /// Before this time (exclusive).
    #[arg(long)]
    pub to: Option<String>,
}

impl FilterArgs {
    fn filters(&self) -> Filters {
        Filters {
            actor: self.actor.clone(),
            procedure: self.procedure.clone(),
            kind: self.kind.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
        }
    }
}

/// A spinner on stderr when a person is watching; nothing when output is piped or stderr
/// is not a terminal, so scripts and files get only the data.
fn progress(output_is_file: bool, what: &'static str) -> ProgressBar {
    let watching =
        std::io::stderr().is_terminal() && (output_is_file || std::io::stdout().is_terminal());
    if !watching {
        return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {{human_pos}} {what} ({{per_sec}}, {{elapsed}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// `sopflow verify`: exit 0 when every chain holds, 1 at a broken link.
pub fn verify(dir: &DataDir, json: bool) -> anyhow::Result<ExitCode> {
    let engine = dir.open()?;
    let bar = progress(true, "events checked");
    let v = engine.verify(&mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if let Some(b) = &v.first_break {
        println!(
            "BROKEN: {} of {} instances have a broken hash chain ({} events checked).",
            v.broken, v.instances, v.events
        );
        println!("first broken link:");
        println!("  instance  {}", b.instance);
        println!("  event     {}", b.seq);
        if !b.expected.is_empty() || !b.found.is_empty() {
            println!("  expected  {}", b.expected);
            println!("  found     {}", b.found);
        }
        println!("  problem   {}", b.problem);
    } else {
        println!(
            "ok: {} instances, {} events; every hash chain is intact.",
            v.instances, v.events
        );
    }
    Ok(if v.intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `sopflow audit`: one page of matching events.
pub fn query(
    dir: &DataDir,
    filters: &FilterArgs,
    limit: usize,
    cursor: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let query = filters.filters().query(dir.default_zone())?;
    let cursor = cursor.map(audit::parse_cursor).transpose()?;
    let engine = dir.open()?;
    let page = engine.audit(&query, cursor.as_deref(), limit.clamp(1, 10_000))?;
    let next = page.next.as_deref().map(audit::cursor_text);
    let lines: Vec<ExportLine> = page.items.into_iter().map(ExportLine::from).collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "events": lines, "next": next }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if lines.is_empty() {
        println!("no events match");
    }
    for l in &lines {
        let e = &l.event;
        let who = match &e.by {
            Some(b) => match &b.on_behalf_of {
                Some(o) => format!("{} (for {o})", b.user),
                None => b.user.clone(),
            },
            None => "(engine)".into(),
        };
        let v = serde_json::to_value(e)?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let mut what = get("step");
        for k in ["outcome", "meaning", "comment", "reason", "text"] {
            let x = get(k);
            if !x.is_empty() {
                what.push_str(&format!(" {k}={x}"));
            }
        }
        println!(
            "{}  {:<22} {} #{:<3} {:<18} {:<24} {}",
            e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            l.procedure,
            l.instance,
            l.seq,
            e.kind.name(),
            who,
            what.trim()
        );
    }
    if let Some(n) = next {
        println!("more: --cursor {n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `sopflow export`: every matching event, streamed.
pub fn export(
    dir: &DataDir,
    filters: &FilterArgs,
    format: ExportFormat,
    output: Option<&PathBuf>,
) -> anyhow::Result<ExitCode> {
    let query = filters.filters().query(dir.default_zone())?;
    let engine = dir.open()?;
    let bar = progress(output.is_some(), "events exported");
    let n = match output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
            audit::export(&engine, &query, format, file, &mut |n| bar.set_position(n))?
        }
        None => audit::export(
            &engine,
            &query,
            format,
            std::io::stdout().lock(),
            &mut |n| bar.set_position(n),
        )?,
    };
    bar.finish_and_clear();
    if let Some(path) = output {
        eprintln!("exported {n} events to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `sopflow report`: a procedure's KPIs for a period, as a table or JSON.
pub fn report(
    dir: &DataDir,
    procedure: &str,
    from: &str,
    to: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let engine = dir.open()?;
    let (from, to) = audit::parse_period(
        from,
        to,
        engine.clock().now(),
        engine.zone_of_procedure(procedure),
    )?;
    let report = sopflow::report::kpi::kpis_from_engine(&engine, procedure, from, to)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", sopflow::report::kpi::render_table(&report));
    }
    Ok(ExitCode::SUCCESS)
}
