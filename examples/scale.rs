//! Builds a data directory with many complaint-handling instances through the real engine,
//! for measuring `sopflow serve` at scale (memory with a big store, disk growth).
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/scale --data /tmp/scale-1m --instances 1000000 --open 100000
//! target/release/sopflow serve --data-dir /tmp/scale-1m --listen 127.0.0.1:18181
//! ```
//!
//! Every instance goes through `Engine::start` / `Engine::execute` with the shipped
//! procedures (`procedures/`), calendars and people (`org.toml`), so `sopflow serve` opens the
//! result as it would any data directory. `--open N` of the instances are left running with a
//! task waiting (at registration, resolution, the management representative, the follow-up
//! visit or a second complaint; some claimed by a person); the rest are driven to their end:
//! closed as general, major or crisis complaints, some through a second complaint, and ~6%
//! cancelled by the management representative. Open and ended instances are interleaved
//! evenly, in creation order.
//!
//! Many instances are driven at once (`--concurrency`, default 128) so group commit batches
//! their commits. The store is opened with `fsync` off by default (sled still flushes each
//! batch with `sync_file_range`; only the extra `fdatasync` is skipped), which survives a
//! process crash but not a power cut; `--fsync` turns it on. The mix is deterministic per
//! instance number, but ids and times come from the system clock.
//!
//! Worklist page times on the result: `examples/worklist.rs` (README "Worklists at scale").
//!
//! Cost, measured on 2 shared cores: 1,000,000 instances (3.9 million commands) took 32
//! minutes and 31.6 GiB of disk (about 34 KB per instance, ~4.8x the live keys and values);
//! with the write-ahead log and the memtable (issue 18), 27 minutes and 31.0 GiB.
//!
//! Resuming: the directory gets a `scale.json` marker when the run starts. Run again with the
//! same directory and it counts the instances by status and generates only what is missing
//! (an instance interrupted half-way is left running and counts as open). A non-empty
//! directory without the marker is refused, so it never adds to a store it did not build.
//! The store can be open in one process at a time: stop `sopflow serve` first.
//!
//! Options: `--data DIR` (required), `--instances N` (default 1,000,000), `--open N` (default
//! 100,000), `--concurrency C` (default 128), `--cache-mib M` (sled cache, default 256),
//! `--fsync`, `--procedures DIR`, `--directory FILE`, `--calendars DIR`, and `--live`: at
//! the end, also read every tree (`Store::dump`, which holds the whole store in memory, so
//! only for small stores) and print the live bytes of keys and values per tree against the
//! size on disk.

#[path = "../benches/support/mod.rs"]
mod support;
use support::{rss_kib, Rng};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use sopflow::clock::SystemClock;
use sopflow::definition::load::{self, Options};
use sopflow::directory::{self, Directory};
use sopflow::engine::decide::Command;
use sopflow::engine::instance::{Actor, Instance, Status};
use sopflow::engine::service::Engine;
use sopflow::store::sled_store::{SledOptions, SledStore};

const PROCEDURE: &str = "complaint-handling";
const MARKER: &str = "scale.json";

struct Args {
    data: PathBuf,
    instances: u64,
    open: u64,
    concurrency: usize,
    cache_mib: u64,
    fsync: bool,
    procedures: PathBuf,
    directory: PathBuf,
    calendars: Option<PathBuf>,
    live: bool,
}

const USAGE: &str = "usage: scale --data DIR [--instances N] [--open N] [--concurrency C] \
[--cache-mib M] [--fsync] [--live] [--procedures DIR] [--directory FILE] [--calendars DIR]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        data: PathBuf::new(),
        instances: 1_000_000,
        open: 100_000,
        concurrency: 128,
        cache_mib: 256,
        fsync: false,
        procedures: "procedures".into(),
        directory: "org.toml".into(),
        calendars: None,
        live: false,
    };
    let mut data = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |s: String| -> Result<u64, String> {
            s.replace('_', "")
                .parse()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--data" => data = Some(PathBuf::from(val()?)),
            "--instances" => a.instances = num(val()?)?,
            "--open" => a.open = num(val()?)?,
            "--concurrency" => a.concurrency = num(val()?)?.max(1) as usize,
            "--cache-mib" => a.cache_mib = num(val()?)?.max(1),
            "--fsync" => a.fsync = true,
            "--live" => a.live = true,
            "--procedures" => a.procedures = val()?.into(),
            "--directory" => a.directory = val()?.into(),
            "--calendars" => a.calendars = Some(val()?.into()),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    a.data = data.ok_or_else(|| format!("--data DIR is required\n{USAGE}"))?;
    if a.open > a.instances {
        return Err(format!(
            "--open {} is more than --instances {}",
            a.open, a.instances
        ));
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------
// The mix
// ---------------------------------------------------------------------------------------

/// How an ended instance goes.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// register (general) → resolve_general → follow_up_visit → closed. 80%.
    General,
    /// register (major) → handle_by_management_rep → follow_up_visit → closed. 8%.
    Major,
    /// register (crisis) → analyse_crisis_causes → crisis_report → handle_by_management_rep
    /// → follow_up_visit → closed. 2%.
    Crisis,
    /// general, not satisfied → second_complaint → resolve_second → follow_up_visit. 4%.
    Second,
    /// cancelled by the management representative, after registration or right away. 6%.
    Cancelled,
}

/// Where an open instance stops: the step whose task is left waiting, and whether a person
/// has claimed it.
#[derive(Clone, Copy, Debug)]
struct Stop {
    step: &'static str,
    claim: bool,
}

#[derive(Clone, Copy, Debug)]
enum Plan {
    End(Ending),
    Open(Stop),
}

fn ended_plan(rng: &mut Rng) -> Plan {
    Plan::End(match rng.below(100) {
        0..80 => Ending::General,
        80..88 => Ending::Major,
        88..90 => Ending::Crisis,
        90..94 => Ending::Second,
        _ => Ending::Cancelled,
    })
}

fn open_plan(rng: &mut Rng) -> Plan {
    let (step, claim_pct) = match rng.below(100) {
        0..40 => ("register", 25),
        40..70 => ("resolve_general", 33),
        70..80 => ("handle_by_management_rep", 50),
        80..95 => ("follow_up_visit", 10),
        _ => ("second_complaint", 50),
    };
    Plan::Open(Stop {
        step,
        claim: rng.below(100) < claim_pct,
    })
}

/// The step sequence a plan walks (before any stop), and the severity registered.
fn path(plan: Plan) -> (&'static str, &'static [&'static str]) {
    const GENERAL: &[&str] = &["register", "resolve_general", "follow_up_visit"];
    // seed 002 §4.5 (the shipped procedure): the management representative decides the
    // handling plan, then carries it out as a second step.
    const MAJOR: &[&str] = &[
        "register",
        "handle_by_management_rep",
        "implement_handling_plan",
        "follow_up_visit",
    ];
    const CRISIS: &[&str] = &[
        "register",
        "analyse_crisis_causes",
        "crisis_report",
        "handle_by_management_rep",
        "implement_handling_plan",
        "follow_up_visit",
    ];
    const SECOND: &[&str] = &[
        "register",
        "resolve_general",
        "follow_up_visit",
        "second_complaint",
        "resolve_second",
        "follow_up_visit",
    ];
    match plan {
        Plan::End(Ending::General) | Plan::End(Ending::Cancelled) => ("general", GENERAL),
        Plan::End(Ending::Major) => ("major", MAJOR),
        Plan::End(Ending::Crisis) => ("crisis", CRISIS),
        Plan::End(Ending::Second) => ("general", SECOND),
        Plan::Open(s) => match s.step {
            "handle_by_management_rep" => ("major", MAJOR),
            "second_complaint" => ("general", SECOND),
            _ => ("general", GENERAL),
        },
    }
}

const CUSTOMERS: [&str; 8] = [
    "Hengxin Machinery",
    "Dongfang Pumps",
    "Jinhua Textiles",
    "Beifang Logistics",
    "Huaxia Ceramics",
    "Nanyang Foods",
    "Xinda Plastics",
    "Changcheng Steel",
];
const COMPLAINTS: [&str; 6] = [
    "Machine stops after an hour of running; the thermal switch trips.",
    "Hydraulic unit leaks oil at the main cylinder seal after two weeks.",
    "Delivered spare parts do not match the order; wrong bearing size.",
    "Control panel shows error E42 at every start in cold weather.",
    "Technician arrived two days later than promised for the repair.",
    "Noise from the gearbox increased since the last maintenance visit.",
];
const RESOLUTIONS: [&str; 5] = [
    "Replaced the thermal switch and checked the cooling circuit.",
    "Replaced the cylinder seal kit; tested under load for two hours.",
    "Sent the correct bearings by express; wrong parts collected.",
    "Updated the controller firmware and adjusted the heater setting.",
    "Apologised, scheduled a fixed visit window and credited the call-out fee.",
];

fn form(rng: &mut Rng, step: &str, severity: &str, satisfied: bool) -> Map<String, Value> {
    let v = match step {
        "register" => json!({
            "channel": rng.pick(&["hotline", "website", "telephone", "letter", "in_person"]),
            "complaint": rng.pick(&COMPLAINTS),
            "severity": severity,
            "first_answer": "Registered; an engineer will call you within the day.", "received_at": "2026-11-02T08:30:00Z",
        }),
        "resolve_general" | "resolve_second" => json!({
            "resolution": rng.pick(&RESOLUTIONS),
            "resolved_on": format!("2026-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
        }),
        "handle_by_management_rep" => json!({
            "handling_plan": "Field engineer on site, replacement unit on loan until repaired.",
        }),
        "implement_handling_plan" => json!({
            "resolution": rng.pick(&RESOLUTIONS),
            "resolved_on": format!("2026-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
        }),
        "analyse_crisis_causes" => json!({
            "cause_analysis": "Batch of controllers with a faulty relay; three customers affected.",
        }),
        "crisis_report" => json!({
            "event_description": "Repeated failures reported publicly by the customer.",
            "proposed_solution": "Recall the batch, replace relays, visit every affected site.",
        }),
        "follow_up_visit" => json!({
            "customer_satisfied": satisfied, "satisfaction_score": (if satisfied { 100 } else { 40 }),
            "customer_evaluation": if satisfied { "Works again, thanks." } else { "Same problem again." },
        }),
        "second_complaint" => json!({
            "second_cause": "product_quality",
            "second_findings": "The replaced part failed again; supplier batch suspected.",
        }),
        _ => json!({}),
    };
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The people who act, by role (from the shipped `org.toml`).
struct People {
    follow_up: Vec<Actor>,
    sales: Vec<Actor>,
    management_rep: Vec<Actor>,
    after_sales: Vec<Actor>,
}

impl People {
    fn new(dir: &Directory) -> Result<Self, String> {
        let get = |ids: &[&str]| -> Result<Vec<Actor>, String> {
            ids.iter()
                .map(|id| {
                    Actor::from_directory(dir, id)
                        .ok_or_else(|| format!("the directory has no active user {id}"))
                })
                .collect()
        };
        Ok(People {
            follow_up: get(&["xu.na", "gao.yan"])?,
            sales: get(&["liu.yang", "he.ping"])?,
            management_rep: get(&["qian.li", "zhou.min"])?,
            after_sales: get(&["luo.bin", "tang.kai"])?,
        })
    }

    fn for_step(&self, step: &str, rng: &mut Rng) -> &Actor {
        let v = match step {
            "register" | "crisis_report" | "follow_up_visit" => &self.follow_up,
            "resolve_general" | "analyse_crisis_causes" => &self.sales,
            "handle_by_management_rep" | "implement_handling_plan" => &self.management_rep,
            _ => &self.after_sales,
        };
        &v[rng.below(v.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------
// Driving one instance
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    instances: AtomicU64,
    ended: AtomicU64,
    open: AtomicU64,
    commands: AtomicU64,
    errors: AtomicU64,
}

fn task_at(inst: &Instance, step: &str) -> Result<uuid::Uuid, String> {
    inst.tasks
        .values()
        .find(|t| t.step == step)
        .map(|t| t.id)
        .ok_or_else(|| format!("instance {} has no open `{step}` task", inst.id))
}

async fn drive(
    engine: &Engine<SledStore>,
    people: &People,
    n: u64,
    plan: Plan,
    counters: &Counters,
) -> Result<(), String> {
    let mut rng = Rng::new(n);
    let (severity, steps) = path(plan);
    let starter = &people.follow_up[rng.below(2) as usize];
    let mut data = Map::new();
    data.insert("customer".into(), json!(rng.pick(&CUSTOMERS)));
    data.insert(
        "contact".into(),
        json!(format!(
            "Mr Li, 138 {:04} {:04}",
            rng.below(10_000),
            n % 10_000
        )),
    );
    let mut inst = engine
        .start(PROCEDURE, data, Some(starter))
        .await
        .map_err(|e| format!("start: {e}"))?;
    counters.commands.fetch_add(1, Ordering::Relaxed);
    // Cancelled: half right after the start, half after registration.
    let cancel_after = match plan {
        Plan::End(Ending::Cancelled) => Some(rng.below(2) as usize),
        _ => None,
    };
    let second_visit = steps.len() == 6;
    for (i, step) in steps.iter().enumerate() {
        if cancel_after == Some(i) {
            let who = &people.management_rep[rng.below(2) as usize];
            inst = engine
                .execute(
                    inst.id,
                    Command::Cancel {
                        reason: "Customer withdrew the complaint.".into(),
                    },
                    Some(who),
                )
                .await
                .map_err(|e| format!("cancel: {e}"))?;
            counters.commands.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let task = task_at(&inst, step)?;
        if let Plan::Open(stop) = plan {
            // A second complaint stops at its own step, not at the first follow-up visit.
            if stop.step == *step && !(stop.step == "follow_up_visit" && second_visit) {
                if stop.claim {
                    let who = people.for_step(step, &mut rng);
                    engine
                        .execute(inst.id, Command::Claim { task }, Some(who))
                        .await
                        .map_err(|e| format!("claim {step}: {e}"))?;
                    counters.commands.fetch_add(1, Ordering::Relaxed);
                }
                counters.open.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        // The first follow-up visit of a second complaint finds the customer unsatisfied.
        let satisfied = !(second_visit && i == 2);
        let who = people.for_step(step, &mut rng).clone();
        let form = form(&mut rng, step, severity, satisfied);
        inst = engine
            .execute(
                inst.id,
                Command::Complete {
                    task,
                    outcome: None,
                    form,
                    comment: None,
                },
                Some(&who),
            )
            .await
            .map_err(|e| format!("complete {step}: {e}"))?;
        counters.commands.fetch_add(1, Ordering::Relaxed);
    }
    if inst.status == Status::Running {
        return Err(format!(
            "instance {} did not end ({plan:?}); open tasks: {:?}",
            inst.id,
            inst.tasks.values().map(|t| &t.step).collect::<Vec<_>>()
        ));
    }
    counters.ended.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Opening, resuming, reporting
// ---------------------------------------------------------------------------------------

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Instances of the procedure by status: (running, completed, cancelled).
fn count(engine: &Engine<SledStore>) -> Result<(u64, u64, u64), String> {
    let mut out = [0u64; 3];
    for (i, status) in ["running", "completed", "cancelled"].iter().enumerate() {
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = engine
                .instances(Some(PROCEDURE), Some(status), cursor.as_deref(), 10_000)
                .map_err(|e| format!("counting instances: {e}"))?;
            out[i] += page.items.len() as u64;
            match page.next {
                Some(c) if !page.items.is_empty() => cursor = Some(c),
                _ => break,
            }
        }
    }
    Ok((out[0], out[1], out[2]))
}

/// Live bytes (keys + values) per tree against the size on disk. Reads the whole store into
/// memory (`Store::dump`): for small stores only.
fn live_bytes(engine: &Engine<SledStore>, data: &Path) -> Result<(), String> {
    use sopflow::store::Store;
    let dump = engine
        .store()
        .dump()
        .map_err(|e| format!("reading the store: {e}"))?;
    println!();
    println!(
        "{:<26} {:>10} {:>14} {:>14}",
        "tree", "entries", "key bytes", "value bytes"
    );
    let (mut n, mut k, mut v) = (0usize, 0usize, 0usize);
    for (tree, rows) in &dump {
        let kb: usize = rows.iter().map(|(key, _)| key.len()).sum();
        let vb: usize = rows.iter().map(|(_, val)| val.len()).sum();
        println!("{tree:<26} {:>10} {kb:>14} {vb:>14}", rows.len());
        (n, k, v) = (n + rows.len(), k + kb, v + vb);
    }
    let disk = dir_size(data);
    println!("{:<26} {n:>10} {k:>14} {v:>14}", "total");
    println!(
        "live data {} bytes; on disk {disk} bytes: {:.1}x the live data",
        k + v,
        disk as f64 / (k + v).max(1) as f64
    );
    Ok(())
}

/// Checks the directory: empty or missing (a new run), or one this program built (resume).
fn check_dir(a: &Args) -> Result<bool, String> {
    let marker = a.data.join(MARKER);
    if marker.is_file() {
        let text = std::fs::read_to_string(&marker)
            .map_err(|e| format!("cannot read {}: {e}", marker.display()))?;
        println!("resuming: {} says {}", marker.display(), text.trim());
        return Ok(true);
    }
    match std::fs::read_dir(&a.data) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot read {}: {e}", a.data.display())),
        Ok(mut rd) => {
            if rd.next().is_some() {
                Err(format!(
                    "{} is not empty and was not built by this program (no {MARKER}); \
                     give a new or empty directory",
                    a.data.display()
                ))
            } else {
                Ok(false)
            }
        }
    }
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = rt.block_on(run(a)) {
        eprintln!("scale: {e}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let resuming = check_dir(&a)?;
    let (people_dir, report) = directory::load(&a.directory);
    let people_dir = people_dir.ok_or_else(|| {
        format!(
            "{}the directory file {} has errors",
            report.render_text(),
            a.directory.display()
        )
    })?;
    let people = Arc::new(People::new(&people_dir)?);
    let v = load::validate_paths(
        std::slice::from_ref(&a.procedures),
        &Options {
            calendars_dir: a.calendars.clone(),
            ..Default::default()
        },
    );
    if v.errors() > 0 {
        return Err(format!(
            "{}the procedures have errors",
            v.reports
                .iter()
                .filter(|r| r.errors() > 0)
                .map(|r| r.render_text())
                .collect::<String>()
        ));
    }
    std::fs::create_dir_all(&a.data)
        .map_err(|e| format!("cannot create {}: {e}", a.data.display()))?;
    let t_open = Instant::now();
    let opts = SledOptions {
        cache_capacity_bytes: a.cache_mib << 20,
        fsync: a.fsync,
        ..SledOptions::default()
    };
    let store = SledStore::open(&a.data, opts).map_err(|e| {
        format!(
            "cannot open the store in {}: {e} (is `sopflow serve` using it?)",
            a.data.display()
        )
    })?;
    let engine = Engine::open(Arc::new(store), Arc::new(SystemClock)).map_err(|e| e.to_string())?;
    engine.set_calendars(&v.calendars);
    engine
        .set_registers(&v.registers)
        .map_err(|e| format!("cannot load the registers: {e}"))?;
    engine
        .register(&v.valid)
        .await
        .map_err(|e| format!("cannot register the procedures: {e}"))?;
    let engine = Arc::new(engine);
    if !resuming {
        let marker = json!({
            "procedure": PROCEDURE,
            "instances": a.instances,
            "open": a.open,
            "note": "built by examples/scale.rs; run it again with this --data to resume",
        });
        std::fs::write(a.data.join(MARKER), format!("{marker}\n"))
            .map_err(|e| format!("cannot write the marker: {e}"))?;
    }
    let (running0, completed0, cancelled0) = count(&engine)?;
    let ended0 = completed0 + cancelled0;
    println!(
        "store {} opened in {:.1}s: {running0} running, {completed0} completed, {cancelled0} cancelled; {} on disk",
        a.data.display(),
        t_open.elapsed().as_secs_f64(),
        gib(dir_size(&a.data))
    );
    let want_ended = a.instances - a.open;
    let todo_ended = want_ended.saturating_sub(ended0);
    let todo_open = a.open.saturating_sub(running0);
    let todo = todo_ended + todo_open;
    println!(
        "target {} instances ({} ended, {} open); to generate: {todo_ended} ended + {todo_open} open",
        a.instances, want_ended, a.open
    );
    println!(
        "{cores} cores; {} concurrent drivers; sled cache {} MiB; fsync {}",
        a.concurrency,
        a.cache_mib,
        if a.fsync {
            "ON (fdatasync after every group flush)"
        } else {
            "OFF (generation speed: sled's flush with sync_file_range only, not power-safe)"
        }
    );
    if todo == 0 {
        println!("nothing to do: the store already holds the target");
        if a.live {
            live_bytes(&engine, &a.data)?;
        }
        return Ok(());
    }

    // Instance k of this run (0..todo) is open when the evenly spread open count steps up.
    let next = Arc::new(AtomicU64::new(0));
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let stats0 = engine.store().stats();
    let mut drivers = Vec::new();
    for _ in 0..a.concurrency {
        let (engine, people, next, counters) = (
            engine.clone(),
            people.clone(),
            next.clone(),
            counters.clone(),
        );
        let base = ended0 + running0;
        drivers.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= todo {
                    return;
                }
                let is_open = (k + 1) * todo_open / todo > k * todo_open / todo;
                let n = base + k;
                let mut rng = Rng::new(n.wrapping_mul(31).wrapping_add(7));
                let plan = if is_open {
                    open_plan(&mut rng)
                } else {
                    ended_plan(&mut rng)
                };
                if let Err(e) = drive(&engine, &people, n, plan, &counters).await {
                    if counters.errors.fetch_add(1, Ordering::Relaxed) < 10 {
                        eprintln!("error on instance #{n}: {e}");
                    }
                }
                counters.instances.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Progress every 10 s.
    let reporter = {
        let (engine, counters, data) = (engine.clone(), counters.clone(), a.data.clone());
        tokio::spawn(async move {
            println!(
                "{:>9} {:>10} {:>9} {:>10} {:>9} {:>8} {:>7} {:>10} {:>9} {:>9}",
                "elapsed",
                "instances",
                "inst/s",
                "commands",
                "cmds/s",
                "batch",
                "errors",
                "disk",
                "rss MiB",
                "eta"
            );
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let done = counters.instances.load(Ordering::Relaxed);
                let cmds = counters.commands.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, done);
                let s = engine.store().stats();
                let batch = (s.commits - stats0.commits) as f64
                    / (s.flushes - stats0.flushes).max(1) as f64;
                let eta = if rate > 0.0 {
                    hms(Duration::from_secs_f64(
                        (todo - done.min(todo)) as f64 / rate,
                    ))
                } else {
                    "-".into()
                };
                println!(
                    "{:>9} {:>10} {:>9.0} {:>10} {:>9.0} {:>8.1} {:>7} {:>10} {:>9.0} {:>9}",
                    hms(started.elapsed()),
                    done,
                    rate,
                    cmds,
                    cmds as f64 / started.elapsed().as_secs_f64(),
                    batch,
                    counters.errors.load(Ordering::Relaxed),
                    gib(dir_size(&data)),
                    (rss_kib() as f64 / 1024.0),
                    eta
                );
            }
        })
    };
    for d in drivers {
        d.await.map_err(|e| format!("a driver failed: {e}"))?;
    }
    reporter.abort();
    // Wait for it to go, so the engine below is the last handle and closes the store.
    let _ = reporter.await;
    let elapsed = started.elapsed();
    let cmds = counters.commands.load(Ordering::Relaxed);
    let done = counters.instances.load(Ordering::Relaxed);
    let s = engine.store().stats();
    let (commits, flushes) = (s.commits - stats0.commits, s.flushes - stats0.flushes);
    println!();
    println!(
        "generated {done} instances ({} ended, {} left open, {} errors) with {cmds} commands in {} ({:.1} s)",
        counters.ended.load(Ordering::Relaxed),
        counters.open.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        hms(elapsed),
        elapsed.as_secs_f64()
    );
    println!(
        "rate: {:.0} instances/s, {:.0} commands/s; group commit: {commits} commits in {flushes} flushes ({:.1} per flush), writer busy applying {:.0} s, flushing {:.0} s",
        done as f64 / elapsed.as_secs_f64(),
        cmds as f64 / elapsed.as_secs_f64(),
        commits as f64 / flushes.max(1) as f64,
        (s.apply_micros - stats0.apply_micros) as f64 / 1e6,
        (s.flush_micros - stats0.flush_micros) as f64 / 1e6,
    );
    let (running, completed, cancelled) = count(&engine)?;
    let total = running + completed + cancelled;
    let disk = dir_size(&a.data);
    println!(
        "store now: {total} instances: {running} running, {completed} completed, {cancelled} cancelled"
    );
    println!(
        "disk: {} ({disk} bytes, {:.0} bytes per instance); generator RSS {:.0} MiB",
        gib(disk),
        disk as f64 / total.max(1) as f64,
        (rss_kib() as f64 / 1024.0)
    );
    if a.live {
        live_bytes(&engine, &a.data)?;
    }
    // Drop the engine (and the store's writer) before printing the next step, so the
    // directory is unlocked when the reader runs it.
    drop(engine);
    println!(
        "serve it: target/release/sopflow serve --data-dir {} --listen 127.0.0.1:18181",
        a.data.display()
    );
    Ok(())
}
