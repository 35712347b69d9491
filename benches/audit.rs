//! Audit-trail benchmark (issue 6) at a realistic size: a sled store of 10 million events
//! (1,000,000 instances x 10 events over one year, 6 procedures, 200 people), built once
//! through `Store::commit` and reused, then:
//!
//! 1. generation rate (events/s) and the size of the store on disk;
//! 2. latency of a first page (100 events) of the audit queries an auditor asks — a person's
//!    month, a 1-hour and a 1-day window, a procedure's kind for a month, and a filter the
//!    chosen index does not cover (bounded by `SCAN_BUDGET`) — p50/p99/max over many random
//!    queries after a warm-up, and one cold sample of each right after opening the store
//!    with its files evicted from the OS page cache;
//! 3. export throughput of one month of everything (JSONL and CSV, through `Engine`, into
//!    `std::io::sink()`), with the process's RSS before, during and after;
//! 4. the cost of the hash chain: `chain::link` per event and per command, against the
//!    store's measured apply time, and `Store::verify` over the whole store.
//!
//! Run: `cargo bench --bench audit` (builds `target/audit-bench-10m` on first run). Mind
//! the disk: sled 0.34 took about 3 KB per event in the 7-million-event run (for ~300-byte
//! events; about 4x the ~750 bytes of events, index entries and instance rows written), so
//! 10 million events need ~30 GB and, at the measured ~5,900 events/s on 2 cores, 30-45
//! minutes to build.
//! Options after `--`: `--data DIR` (store directory), `--events N` (dataset size; a quick
//! try: `cargo bench --bench audit -- --events 200000 --data /tmp/audit-small`),
//! `--skip-verify`, `--reps N` (queries per row, default 200), `--per-commit K` (instances
//! per generation commit, default 8), `--tasks N` (concurrent committers, default 64).
//! A directory holds one dataset size (the `complete` marker records it).
//!
//! A plain `main` rather than criterion, like the other benches: the figures that matter are
//! tail latencies over random parameters on a store far bigger than the cache, and rates of
//! long runs, not a tight loop around one closure. It asserts nothing but success, and must
//! not be used as a correctness test.
//!
//! The store is opened with `SledOptions::default()` (256 MiB sled cache, fdatasync on):
//! the cache is deliberately not raised, so the dataset is far bigger than the cache, as
//! it would be on a server after a year.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sopflow::audit::{export, ExportFormat};
use sopflow::clock::SystemClock;
use sopflow::engine::instance::{Event, EventKind, Stamp};
use sopflow::engine::service::Engine;
use sopflow::store::audit::SCAN_BUDGET;
use sopflow::store::chain;
use sopflow::store::sled_store::{SledOptions, SledStore};
use sopflow::store::{
    AuditQuery, Commit, EventSummary, InstanceWrite, NewEvent, StatusChange, Store,
};
use uuid::Uuid;

mod support;
use support::{rss_kib, Rng};

// ---------------------------------------------------------------------------------------
// The synthetic organisation and its year
// ---------------------------------------------------------------------------------------

/// 2025-01-01T00:00:00Z and 2026-01-01T00:00:00Z, Unix ms.
const YEAR_START: i64 = 1_735_689_600_000;
const YEAR_END: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2025-03-01 and 2025-04-01, Unix ms.
const MARCH: (i64, i64) = (1_740_787_200_000, 1_743_465_600_000);
/// Events per instance.
const PER_INSTANCE: u64 = 10;
/// Longest gap between two events of an instance; with at most 8 gaps an instance spans
/// at most 16 days, so instances start in the first 349 days and every event is in 2025.
const MAX_GAP: i64 = 48 * HOUR;
const START_SPAN: i64 = YEAR_END - YEAR_START - 16 * DAY;

struct Proc {
    id: &'static str,
    /// Share of instances, percent.
    weight: u32,
    /// (step, role) in order.
    steps: &'static [(&'static str, &'static str)],
}

const PROCS: [Proc; 6] = [
    Proc {
        id: "complaint-handling",
        weight: 30,
        steps: &[
            ("triage", "customer_service"),
            ("investigate", "quality_engineer"),
            ("decide_action", "quality_manager"),
            ("implement", "production_lead"),
            ("verify", "quality_manager"),
        ],
    },
    Proc {
        id: "supplier-evaluation",
        weight: 15,
        steps: &[
            ("collect_scores", "purchaser"),
            ("assess_quality", "quality_engineer"),
            ("approve", "purchasing_manager"),
        ],
    },
    Proc {
        id: "internal-audit",
        weight: 15,
        steps: &[
            ("plan", "auditor"),
            ("fieldwork", "auditor"),
            ("report", "lead_auditor"),
            ("respond", "process_owner"),
        ],
    },
    Proc {
        id: "change-control",
        weight: 15,
        steps: &[
            ("request", "engineer"),
            ("impact_assessment", "quality_engineer"),
            ("approve", "change_board"),
            ("implement", "engineer"),
        ],
    },
    Proc {
        id: "document-review",
        weight: 15,
        steps: &[
            ("draft", "author"),
            ("review", "reviewer"),
            ("approve", "quality_manager"),
        ],
    },
    Proc {
        id: "capa",
        weight: 10,
        steps: &[
            ("root_cause", "quality_engineer"),
            ("plan_actions", "quality_manager"),
            ("implement", "production_lead"),
            ("effectiveness_check", "quality_manager"),
        ],
    },
];

const FIRST: [&str; 20] = [
    "liu", "anna", "omar", "sofia", "jonas", "mei", "pablo", "nora", "ivan", "leila", "tom",
    "akira", "sara", "david", "chen", "fatima", "lukas", "maria", "yusuf", "elena",
];
const LAST: [&str; 10] = [
    "yang", "schmidt", "haddad", "rossi", "berg", "tanaka", "garcia", "kowalski", "nguyen",
    "okafor",
];
const DEPARTMENTS: [&str; 8] = [
    "quality",
    "production",
    "purchasing",
    "customer-service",
    "engineering",
    "internal-audit",
    "logistics",
    "management",
];
const USERS: usize = FIRST.len() * LAST.len();
/// Zipf exponent of who acts: user 0 acts most (about 10% of people's events), user 199
/// least (about 0.15%) — an organisation has a few very busy people and a long tail.
const ZIPF_S: f64 = 0.8;

struct Person {
    id: String,
    name: String,
    department: &'static str,
    roles: Vec<String>,
}

struct World {
    people: Vec<Person>,
    /// Cumulative Zipf weights over `people`.
    cdf: Vec<f64>,
    /// Cumulative procedure weights.
    proc_cdf: Vec<u32>,
}

impl World {
    fn new() -> Self {
        let mut people = Vec::with_capacity(USERS);
        for (i, (f, l)) in FIRST
            .iter()
            .flat_map(|f| LAST.iter().map(move |l| (f, l)))
            .enumerate()
        {
            let cap = |s: &str| {
                let mut c = s.chars();
                c.next()
                    .map(|h| h.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            };
            let p = &PROCS[i % PROCS.len()];
            people.push(Person {
                id: format!("{f}.{l}"),
                name: format!("{} {}", cap(f), cap(l)),
                department: DEPARTMENTS[(i * 7) % DEPARTMENTS.len()],
                roles: vec![
                    p.steps[i % p.steps.len()].1.to_string(),
                    "employee".to_string(),
                ],
            });
        }
        let mut acc = 0.0;
        let cdf = (1..=USERS)
            .map(|k| {
                acc += (k as f64).powf(-ZIPF_S);
                acc
            })
            .collect::<Vec<_>>();
        let total = acc;
        let cdf = cdf.into_iter().map(|c| c / total).collect();
        let mut w = 0;
        let proc_cdf = PROCS
            .iter()
            .map(|p| {
                w += p.weight;
                w
            })
            .collect();
        World {
            people,
            cdf,
            proc_cdf,
        }
    }

    fn person(&self, rng: &mut Rng) -> &Person {
        let u = rng.unit();
        let i = self.cdf.partition_point(|c| *c < u).min(USERS - 1);
        &self.people[i]
    }

    fn procedure(&self, rng: &mut Rng) -> &'static Proc {
        let w = rng.below(u64::from(*self.proc_cdf.last().unwrap_or(&1))) as u32;
        &PROCS[self.proc_cdf.partition_point(|c| *c <= w)]
    }
}

/// The bench's own draws, on the shared generator.
impl Rng {
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn uuid_v4(&mut self) -> Uuid {
        let b = (u128::from(self.next()) << 64) | u128::from(self.next());
        uuid::Builder::from_random_bytes(b.to_be_bytes()).into_uuid()
    }
    /// A gap between two steps: exponential with `mean_ms`, capped at `MAX_GAP`.
    fn gap(&mut self, mean_ms: f64) -> i64 {
        let g = -mean_ms * (1.0 - self.unit()).ln();
        (g as i64).clamp(1_000, MAX_GAP)
    }
}

const NOTES: [&str; 8] = [
    "Checked against the drawing, tolerances within limits after rework of the fixture.",
    "Supplier confirmed the batch number; replacement parts ship next week.",
    "Root cause is a worn tool on line 3; maintenance interval shortened.",
    "Customer informed by phone, written confirmation sent the same day.",
    "No deviation found in the sampled records; two minor remarks noted.",
    "Training record updated, operator re-instructed on the new work instruction.",
    "Document revised to version C, obsolete copies withdrawn from the floor.",
    "Risk rated low after review with production and engineering.",
];
const OUTCOMES: [&str; 4] = ["done", "done", "approved", "rejected"];

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("time in range")
}

fn stamp(p: &Person, behalf: Option<&Person>) -> Stamp {
    Stamp {
        user: p.id.clone(),
        name: p.name.clone(),
        department: p.department.to_string(),
        roles: p.roles.clone(),
        on_behalf_of: behalf.map(|b| b.id.clone()),
    }
}

fn form(rng: &mut Rng, step: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "decision".into(),
        json!(if rng.chance(0.9) { "accept" } else { "rework" }),
    );
    m.insert(
        "notes".into(),
        json!(NOTES[rng.below(NOTES.len() as u64) as usize]),
    );
    m.insert(
        "reference".into(),
        json!(format!(
            "{}-2025-{:05}",
            step.chars().next().unwrap_or('x').to_ascii_uppercase(),
            rng.below(100_000)
        )),
    );
    m
}

/// One synthetic instance: its id, procedure, 10 events (as the engine encodes them) and a
/// snapshot. Deterministic in `i`.
struct Generated {
    id: Uuid,
    procedure: &'static str,
    events: Vec<Event>,
    snapshot: Vec<u8>,
}

fn instance(world: &World, i: u64, instances: u64) -> Generated {
    let mut rng = Rng::new(i);
    // Instances start in index order, spread evenly over the year: the generation then
    // writes in time order, as a real server does, so every audit family is appended near
    // its end instead of at random places (which would also be unrealistic).
    let start =
        YEAR_START + ((i as f64 + rng.unit()) / instances as f64 * START_SPAN as f64) as i64;
    let mut rand10 = [0u8; 10];
    rand10[..8].copy_from_slice(&rng.next().to_be_bytes());
    rand10[8..].copy_from_slice(&rng.next().to_be_bytes()[..2]);
    let id = uuid::Builder::from_unix_timestamp_millis(start as u64, &rand10).into_uuid();
    let proc = world.procedure(&mut rng);
    let starter = world.person(&mut rng);
    let mut events = Vec::with_capacity(PER_INSTANCE as usize);
    let mut t = start;
    let mut data = Map::new();
    data.insert(
        "customer".into(),
        json!(format!("Customer {}", rng.below(5000))),
    );
    data.insert(
        "product".into(),
        json!(format!("P-{:04}", rng.below(10_000))),
    );
    data.insert(
        "severity".into(),
        json!(["low", "medium", "high"][rng.below(3) as usize]),
    );
    data.insert(
        "received".into(),
        json!(at(t).format("%Y-%m-%d").to_string()),
    );
    let mut hash = String::with_capacity(64);
    for _ in 0..4 {
        hash.push_str(&format!("{:016x}", rng.next()));
    }
    events.push(Event {
        seq: 1,
        at: at(t),
        by: Some(stamp(starter, None)),
        kind: EventKind::Started {
            procedure: proc.id.to_string(),
            version: 1 + (i % 3) as u32,
            hash,
            data: data.clone(),
            parent: None,
        },
    });
    let mut step = 0usize;
    // A task opens: a fresh task id (the engine derives it from the instance and seq; any
    // uuid decodes the same), due in three days.
    let open = |rng: &mut Rng, step: usize, t: i64| {
        let (name, role) = proc.steps[step % proc.steps.len()];
        let task = rng.uuid_v4();
        let kind = EventKind::TaskOpened {
            task,
            step: name.to_string(),
            roles: vec![role.to_string()],
            assignee: None,
            people: vec![],
            opens: None,
            due: Some(at(t + 3 * DAY)),
            timers: vec![],
        };
        (task, kind)
    };
    t += 20;
    let (mut task, kind) = open(&mut rng, step, t);
    let mut opened_at = t;
    events.push(Event {
        seq: 2,
        at: at(t),
        by: None,
        kind,
    });
    // Then, until 10 events: mostly a completion followed by the next task opening; now
    // and then a claim, a comment, or a breach (engine) followed by an escalation (engine).
    while (events.len() as u64) < PER_INSTANCE {
        let seq = events.len() as u64 + 1;
        let (name, _) = proc.steps[step % proc.steps.len()];
        let r = rng.unit();
        if r < 0.08 && seq < PER_INSTANCE {
            t += rng.gap(30.0 * HOUR as f64);
            let due = opened_at + 3 * DAY;
            events.push(Event {
                seq,
                at: at(t),
                by: None,
                kind: EventKind::DeadlineBreached {
                    task,
                    step: name.to_string(),
                    due: at(due),
                    late_ms: (t - due).max(60_000),
                    action: "escalate".into(),
                    timer: rng.uuid_v4(),
                },
            });
            t += 15;
            events.push(Event {
                seq: seq + 1,
                at: at(t),
                by: None,
                kind: EventKind::TaskEscalated {
                    task,
                    role: "quality_manager".into(),
                },
            });
        } else if r < 0.14 {
            t += rng.gap(2.0 * HOUR as f64);
            events.push(Event {
                seq,
                at: at(t),
                by: Some(stamp(world.person(&mut rng), None)),
                kind: EventKind::TaskClaimed { task },
            });
        } else if r < 0.18 {
            t += rng.gap(4.0 * HOUR as f64);
            events.push(Event {
                seq,
                at: at(t),
                by: Some(stamp(world.person(&mut rng), None)),
                kind: EventKind::Commented {
                    text: NOTES[rng.below(NOTES.len() as u64) as usize].to_string(),
                },
            });
        } else {
            t += rng.gap(20.0 * HOUR as f64);
            let who = world.person(&mut rng);
            // About 1 event in 50 overall is a delegate's completion on someone's behalf.
            let behalf = rng.chance(0.057).then(|| world.person(&mut rng));
            events.push(Event {
                seq,
                at: at(t),
                by: Some(stamp(who, behalf)),
                kind: EventKind::TaskCompleted {
                    task,
                    step: name.to_string(),
                    outcome: OUTCOMES[rng.below(OUTCOMES.len() as u64) as usize].into(),
                    form: form(&mut rng, name),
                    computed: Map::new(),
                    comment: rng
                        .chance(0.3)
                        .then(|| NOTES[rng.below(NOTES.len() as u64) as usize].to_string()),
                    meaning: None,
                    on_time: Some(t <= opened_at + 3 * DAY),
                    decided: None,
                },
            });
            if (events.len() as u64) < PER_INSTANCE {
                step += 1;
                t += 5 + rng.below(40) as i64;
                opened_at = t;
                let (nt, kind) = open(&mut rng, step, t);
                task = nt;
                events.push(Event {
                    seq: seq + 1,
                    at: at(t),
                    by: None,
                    kind,
                });
            }
        }
    }
    let snapshot = serde_json::to_vec(&json!({
        "id": id,
        "procedure": proc.id,
        "version": 1 + (i % 3),
        "status": "running",
        "data": data,
        "tokens": [proc.steps[step % proc.steps.len()].0],
        "tasks": { task.to_string(): {
            "step": proc.steps[step % proc.steps.len()].0,
            "roles": [proc.steps[step % proc.steps.len()].1],
            "opened": at(opened_at),
            "due": at(opened_at + 3 * DAY),
        }},
        "timers": [],
        "seq": PER_INSTANCE,
    }))
    .expect("snapshot encodes");
    Generated {
        id,
        procedure: proc.id,
        events,
        snapshot,
    }
}

/// The event as the engine hands it to the store (`service.rs`): JSON bytes and a summary.
fn encode(e: &Event) -> NewEvent {
    NewEvent {
        bytes: serde_json::to_vec(e).expect("event encodes"),
        summary: EventSummary {
            at_ms: e.at.timestamp_millis(),
            kind: e.kind.name().to_string(),
            user: e.by.as_ref().map(|b| b.user.clone()),
            on_behalf_of: e.by.as_ref().and_then(|b| b.on_behalf_of.clone()),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------

/// What the generation run measured; kept in the `complete` marker so a reused store still
/// reports it.
#[derive(Default, Clone)]
struct GenFigures {
    events: u64,
    instances: u64,
    seconds: f64,
    commits: u64,
    flushes: u64,
    apply_micros: u64,
    flush_micros: u64,
    event_bytes: u64,
    /// Events with a person / with on_behalf_of.
    with_user: u64,
    with_behalf: u64,
    kinds: BTreeMap<String, u64>,
    per_commit: u64,
}

impl GenFigures {
    fn to_marker(&self) -> String {
        let mut s = format!(
            "{}\ninstances={}\nseconds={}\ncommits={}\nflushes={}\napply_micros={}\n\
             flush_micros={}\nevent_bytes={}\nwith_user={}\nwith_behalf={}\nper_commit={}\n",
            self.events,
            self.instances,
            self.seconds,
            self.commits,
            self.flushes,
            self.apply_micros,
            self.flush_micros,
            self.event_bytes,
            self.with_user,
            self.with_behalf,
            self.per_commit
        );
        for (k, n) in &self.kinds {
            s.push_str(&format!("kind.{k}={n}\n"));
        }
        s
    }

    fn from_marker(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let mut g = GenFigures {
            events: lines.next()?.trim().parse().ok()?,
            ..GenFigures::default()
        };
        for line in lines {
            let (k, v) = line.split_once('=')?;
            match k {
                "instances" => g.instances = v.parse().ok()?,
                "seconds" => g.seconds = v.parse().ok()?,
                "commits" => g.commits = v.parse().ok()?,
                "flushes" => g.flushes = v.parse().ok()?,
                "apply_micros" => g.apply_micros = v.parse().ok()?,
                "flush_micros" => g.flush_micros = v.parse().ok()?,
                "event_bytes" => g.event_bytes = v.parse().ok()?,
                "with_user" => g.with_user = v.parse().ok()?,
                "with_behalf" => g.with_behalf = v.parse().ok()?,
                "per_commit" => g.per_commit = v.parse().ok()?,
                k if k.starts_with("kind.") => {
                    g.kinds.insert(k[5..].to_string(), v.parse().ok()?);
                }
                _ => {}
            }
        }
        Some(g)
    }
}

fn generate(dir: &Path, events: u64, tasks: usize, per_commit: u64) -> GenFigures {
    let instances = events.div_ceil(PER_INSTANCE);
    let total = instances * PER_INSTANCE;
    println!(
        "generating {total} events ({instances} instances x {PER_INSTANCE}) in {} with {tasks} \
         concurrent committers, {per_commit} instances ({} events) per commit",
        dir.display(),
        per_commit * PER_INSTANCE
    );
    let store = Arc::new(SledStore::open(dir, SledOptions::default()).expect("open store"));
    let world = Arc::new(World::new());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let figures = Arc::new(Mutex::new(GenFigures::default()));
    let step = 1_000_000.min((total / 10).max(1));
    let started = Instant::now();
    let dir_buf = dir.to_path_buf();
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (store, world, next, done, figures, dir) = (
                    Arc::clone(&store),
                    Arc::clone(&world),
                    Arc::clone(&next),
                    Arc::clone(&done),
                    Arc::clone(&figures),
                    dir_buf.clone(),
                );
                tokio::spawn(async move {
                    let mut mine = GenFigures::default();
                    loop {
                        let first = next.fetch_add(per_commit, Ordering::Relaxed);
                        if first >= instances {
                            break;
                        }
                        let last = (first + per_commit).min(instances);
                        let mut commit = Commit::default();
                        let mut n = 0;
                        for i in first..last {
                            let g = instance(&world, i, instances);
                            let evs: Vec<NewEvent> = g.events.iter().map(encode).collect();
                            for e in &evs {
                                mine.event_bytes += e.bytes.len() as u64;
                                mine.with_user += u64::from(e.summary.user.is_some());
                                mine.with_behalf += u64::from(e.summary.on_behalf_of.is_some());
                                *mine.kinds.entry(e.summary.kind.clone()).or_default() += 1;
                            }
                            n += evs.len() as u64;
                            commit.statuses.push(StatusChange {
                                instance: g.id,
                                procedure: g.procedure.to_string(),
                                from: None,
                                to: "running".into(),
                            });
                            commit.instances.push(InstanceWrite {
                                id: g.id,
                                procedure: g.procedure.to_string(),
                                expected_version: 0,
                                events: evs,
                                snapshot: g.snapshot,
                            });
                        }
                        store.commit(commit).await.expect("commit");
                        let before = done.fetch_add(n, Ordering::Relaxed);
                        if before / step != (before + n) / step {
                            let secs = started.elapsed().as_secs_f64();
                            println!(
                                "  {:>10} events  {:>7.1} s  {:>7.0} events/s  on disk {}  RSS {}",
                                before + n,
                                secs,
                                (before + n) as f64 / secs,
                                gb(dir_size(&dir)),
                                mb(rss_kib()),
                            );
                        }
                    }
                    let mut f = figures.lock().unwrap_or_else(|p| p.into_inner());
                    f.event_bytes += mine.event_bytes;
                    f.with_user += mine.with_user;
                    f.with_behalf += mine.with_behalf;
                    for (k, n) in mine.kinds {
                        *f.kinds.entry(k).or_default() += n;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("committer");
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let stats = store.stats();
    let mut f = figures.lock().unwrap_or_else(|p| p.into_inner()).clone();
    f.events = done.load(Ordering::Relaxed);
    f.instances = instances;
    f.seconds = seconds;
    f.commits = stats.commits;
    f.flushes = stats.flushes;
    f.apply_micros = stats.apply_micros;
    f.flush_micros = stats.flush_micros;
    f.per_commit = per_commit;
    drop(rt);
    drop(store);
    // The marker is written last, so an interrupted run is never taken for a full dataset.
    std::fs::write(dir.join("complete"), f.to_marker()).expect("write marker");
    f
}

// ---------------------------------------------------------------------------------------
// Measuring helpers
// ---------------------------------------------------------------------------------------

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => files(&e.path(), out),
                Ok(_) => out.push(e.path()),
                Err(_) => {}
            }
        }
    }
}

extern "C" {
    fn posix_fadvise(fd: i32, offset: i64, len: i64, advice: i32) -> i32;
    fn flock(fd: i32, operation: i32) -> i32;
}
const POSIX_FADV_DONTNEED: i32 = 4;
const LOCK_EX: i32 = 2;
const LOCK_NB: i32 = 4;
const LOCK_UN: i32 = 8;

/// Waits until the store dropped last has let go of its data file. sled's threads finish
/// their last flush after the handle is dropped, and on a store this size that can take
/// longer than the half second `SledStore::open` waits for the lock (sled locks the file
/// with `flock`). Returns how long it waited.
fn wait_for_unlock(dir: &Path) -> Duration {
    let t = Instant::now();
    let Ok(f) = std::fs::File::open(dir.join("db")) else {
        return t.elapsed();
    };
    loop {
        // SAFETY: a valid open descriptor; the lock is released at once.
        let locked = unsafe { flock(f.as_raw_fd(), LOCK_EX | LOCK_NB) } != 0;
        if !locked {
            unsafe { flock(f.as_raw_fd(), LOCK_UN) };
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "the store in {} is still locked after 10 minutes",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drops the store's files (only those) from the OS page cache, so a "cold" query really
/// reads the disk; other processes' cached files are untouched.
fn evict(dir: &Path) {
    let mut all = Vec::new();
    files(dir, &mut all);
    for p in all {
        if let Ok(f) = std::fs::File::open(&p) {
            let _ = f.sync_data();
            // SAFETY: a valid open descriptor; offset 0, length 0 means the whole file.
            unsafe {
                posix_fadvise(f.as_raw_fd(), 0, 0, POSIX_FADV_DONTNEED);
            }
        }
    }
}

fn mb(kb: u64) -> String {
    format!("{:.0} MB", kb as f64 / 1024.0)
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

// ---------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Q {
    ActorMarch,
    Hour,
    Day,
    ProcKindMonth,
    /// actor + deadline_breached over the year for one of the 10 busiest people: the actor
    /// family holds > SCAN_BUDGET entries for them and none matches (breaches have no
    /// person), so every page scans exactly the budget and returns nothing.
    ActorBreachedBusy,
    /// The same for a random person: most have fewer entries than the budget in a year.
    ActorBreachedAny,
}

const QUERIES: [Q; 6] = [
    Q::ActorMarch,
    Q::Hour,
    Q::Day,
    Q::ProcKindMonth,
    Q::ActorBreachedBusy,
    Q::ActorBreachedAny,
];

/// Month starts of 2025, Unix ms, and 2026-01-01.
fn month_bounds(m: usize) -> (i64, i64) {
    let start = |m: u32| {
        chrono::NaiveDate::from_ymd_opt(2025 + (m / 12) as i32, m % 12 + 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp_millis())
            .expect("date")
    };
    (start(m as u32), start(m as u32 + 1))
}

impl Q {
    fn label(self) -> &'static str {
        match self {
            Q::ActorMarch => "actor, March (a person's month)",
            Q::Hour => "time only, random 1-hour window",
            Q::Day => "time only, random 1-day window",
            Q::ProcKindMonth => "procedure + kind, random month",
            Q::ActorBreachedBusy => "busy actor + deadline_breached, year",
            Q::ActorBreachedAny => "any actor + deadline_breached, year",
        }
    }

    fn make(self, world: &World, rng: &mut Rng) -> AuditQuery {
        let user = |rng: &mut Rng, n: u64| Some(world.people[rng.below(n) as usize].id.clone());
        match self {
            Q::ActorMarch => AuditQuery {
                actor: user(rng, USERS as u64),
                from_ms: Some(MARCH.0),
                to_ms: Some(MARCH.1),
                ..AuditQuery::default()
            },
            Q::Hour | Q::Day => {
                let len = if matches!(self, Q::Hour) { HOUR } else { DAY };
                let from = YEAR_START + rng.below((YEAR_END - YEAR_START - len) as u64) as i64;
                AuditQuery {
                    from_ms: Some(from),
                    to_ms: Some(from + len),
                    ..AuditQuery::default()
                }
            }
            Q::ProcKindMonth => {
                let (from, to) = month_bounds(rng.below(12) as usize);
                let kinds = ["task_completed", "deadline_breached", "started"];
                AuditQuery {
                    procedure: Some(PROCS[rng.below(6) as usize].id.to_string()),
                    kind: Some(kinds[rng.below(3) as usize].to_string()),
                    from_ms: Some(from),
                    to_ms: Some(to),
                    ..AuditQuery::default()
                }
            }
            Q::ActorBreachedBusy | Q::ActorBreachedAny => AuditQuery {
                actor: user(
                    rng,
                    if matches!(self, Q::ActorBreachedBusy) {
                        10
                    } else {
                        USERS as u64
                    },
                ),
                kind: Some("deadline_breached".into()),
                from_ms: Some(YEAR_START),
                to_ms: Some(YEAR_END),
                ..AuditQuery::default()
            },
        }
    }
}

const PAGE: usize = 100;

/// One row of the warm table: what is asked, through what.
enum Probe {
    /// `Store::audit`, first page of `limit`.
    Store(Q, usize),
    /// `Engine::audit` (also decodes each event as `Event`), first page of `PAGE`.
    Engine(Q),
    /// One random stored event read alone: `Store::history(id, seq, 1)`.
    Point,
}

struct Row {
    label: String,
    probe: Probe,
    rng: Rng,
    lat: Vec<Duration>,
    items: usize,
    /// Pages that ended with a `next` but fewer events than asked: the scan budget was hit.
    budget_hits: usize,
}

impl Row {
    fn new(label: String, probe: Probe, seed: u64) -> Self {
        Row {
            label,
            probe,
            rng: Rng::new(seed),
            lat: Vec::new(),
            items: 0,
            budget_hits: 0,
        }
    }

    /// Runs the probe once with fresh random parameters; records it if `record`.
    fn run(
        &mut self,
        world: &World,
        instances: u64,
        store: &SledStore,
        engine: &Engine<SledStore>,
        record: bool,
    ) {
        let (took, n, more, limit) = match self.probe {
            Probe::Store(q, limit) => {
                let query = q.make(world, &mut self.rng);
                let t = Instant::now();
                let page = store.audit(&query, None, limit).expect("audit");
                (t.elapsed(), page.items.len(), page.next.is_some(), limit)
            }
            Probe::Engine(q) => {
                let query = q.make(world, &mut self.rng);
                let t = Instant::now();
                let page = engine.audit(&query, None, PAGE).expect("engine audit");
                (t.elapsed(), page.items.len(), page.next.is_some(), PAGE)
            }
            Probe::Point => {
                // The instance id is regenerated (deterministic), outside the timing.
                let g = instance(world, self.rng.below(instances), instances);
                let seq = 1 + self.rng.below(PER_INSTANCE);
                let t = Instant::now();
                let got = store.history(g.id, seq, 1).expect("history");
                let took = t.elapsed();
                assert_eq!(got.len(), 1, "event {seq} of {} is stored", g.id);
                (took, 1, false, 1)
            }
        };
        if record {
            self.lat.push(took);
            self.items += n;
            self.budget_hits += usize::from(more && n < limit);
        }
    }
}

fn store_page(store: &SledStore, q: &AuditQuery) -> (usize, bool) {
    let page = store.audit(q, None, PAGE).expect("audit");
    (page.items.len(), page.next.is_some())
}

// ---------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------

struct Args {
    data: PathBuf,
    events: u64,
    skip_verify: bool,
    reps: usize,
    per_commit: u64,
    tasks: usize,
}

fn args() -> Args {
    let mut a = Args {
        data: PathBuf::from("target/audit-bench-10m"),
        events: 10_000_000,
        skip_verify: false,
        reps: 200,
        per_commit: 8,
        tasks: 64,
    };
    let mut it = std::env::args().skip(1);
    // `cargo bench` adds `--bench`; anything not ours is ignored.
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--data" => a.data = PathBuf::from(value()),
            "--events" => a.events = value().parse().expect("--events N"),
            "--reps" => a.reps = value().parse().expect("--reps N"),
            "--per-commit" => a.per_commit = value().parse().expect("--per-commit K"),
            "--tasks" => a.tasks = value().parse().expect("--tasks N"),
            "--skip-verify" => a.skip_verify = true,
            _ => {}
        }
    }
    a
}

/// Checks, before anything is written, that generated events decode as the engine's
/// `Event` (export and `Engine::audit` decode every event) and are the intended size.
fn check_events(world: &World) {
    let mut bytes = 0usize;
    let mut n = 0usize;
    for i in 0..1000 {
        let g = instance(world, i, 1000);
        assert_eq!(g.events.len() as u64, PER_INSTANCE);
        for (k, e) in g.events.iter().enumerate() {
            assert_eq!(e.seq, k as u64 + 1);
            let enc = encode(e);
            let back: Event = serde_json::from_slice(&enc.bytes).expect("event decodes");
            assert_eq!(&back, e, "event round-trips");
            bytes += enc.bytes.len();
            n += 1;
        }
        assert!(g.events.windows(2).all(|w| w[0].at <= w[1].at));
    }
    let sample = encode(&instance(world, 0, 1000).events[2]);
    println!(
        "event check: 10,000 generated events decode as `Event` and round-trip; mean {} bytes; \
         e.g. ({} bytes):\n  {}",
        bytes / n,
        sample.bytes.len(),
        String::from_utf8_lossy(&sample.bytes)
    );
}

fn prepare(dir: &Path, events: u64, tasks: usize, per_commit: u64) -> (GenFigures, bool) {
    let marker = dir.join("complete");
    let want = events.div_ceil(PER_INSTANCE) * PER_INSTANCE;
    if let Ok(text) = std::fs::read_to_string(&marker) {
        match GenFigures::from_marker(&text) {
            Some(g) if g.events == want => {
                println!(
                    "reusing the dataset in {} ({} events)",
                    dir.display(),
                    g.events
                );
                return (g, false);
            }
            _ => panic!(
                "{} holds a dataset of another size ({:?}); pass another --data or remove it",
                dir.display(),
                text.lines().next()
            ),
        }
    }
    if dir.exists() {
        // An interrupted generation: only remove what the store wrote (sled's files and
        // sopflow's marker), never a foreign directory.
        let sled_only = std::fs::read_dir(dir)
            .expect("read data dir")
            .flatten()
            .all(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n == "db"
                    || n == "conf"
                    || n == "blobs"
                    || n == "sopflow-store"
                    || n.starts_with("snap.")
            });
        assert!(
            sled_only,
            "{} exists, is not a complete dataset and holds files the store did not write; \
             pass another --data",
            dir.display()
        );
        println!("removing the incomplete dataset in {}", dir.display());
        std::fs::remove_dir_all(dir).expect("remove incomplete dataset");
    }
    (generate(dir, events, tasks, per_commit), true)
}

fn main() {
    let a = args();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let opts = SledOptions::default();
    println!(
        "sopflow audit benchmark: {cores} cores; SledOptions::default() (cache {} MiB, fsync \
         {}); {} people (Zipf s={ZIPF_S}), {} procedures",
        opts.cache_capacity_bytes >> 20,
        opts.fsync,
        USERS,
        PROCS.len()
    );
    let world = World::new();
    check_events(&world);
    let mut summary: Vec<(String, String)> = Vec::new();

    // 1. The dataset.
    let (gen, fresh) = prepare(&a.data, a.events, a.tasks, a.per_commit);
    let size = dir_size(&a.data);
    let rate = gen.events as f64 / gen.seconds.max(1e-9);
    println!(
        "dataset: {} events, {} instances; generated in {:.0} s = {:.0} events/s{}; on disk {} \
         ({:.0} bytes/event); mean event {} bytes",
        gen.events,
        gen.instances,
        gen.seconds,
        rate,
        if fresh { "" } else { " (when it was built)" },
        gb(size),
        size as f64 / gen.events.max(1) as f64,
        gen.event_bytes / gen.events.max(1)
    );
    println!(
        "  mix: {}; with a person {:.1}%, with on_behalf_of {:.2}% (1 in {:.0})",
        gen.kinds
            .iter()
            .map(|(k, n)| format!("{k} {:.1}%", 100.0 * *n as f64 / gen.events.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", "),
        100.0 * gen.with_user as f64 / gen.events.max(1) as f64,
        100.0 * gen.with_behalf as f64 / gen.events.max(1) as f64,
        gen.events as f64 / gen.with_behalf.max(1) as f64
    );
    let apply_per_commit = gen.apply_micros as f64 / gen.commits.max(1) as f64;
    let apply_per_event = gen.apply_micros as f64 / gen.events.max(1) as f64;
    println!(
        "  store: {} commits of {} instances, {} flushes ({:.1} commits/flush); writer apply \
         {:.0} us/commit = {:.2} us/event, flush {:.1} ms/flush",
        gen.commits,
        gen.per_commit,
        gen.flushes,
        gen.commits as f64 / gen.flushes.max(1) as f64,
        apply_per_commit,
        apply_per_event,
        gen.flush_micros as f64 / gen.flushes.max(1) as f64 / 1e3
    );
    summary.push((
        "dataset".into(),
        format!(
            "{} events / {} instances, {} on disk",
            gen.events,
            gen.instances,
            gb(size)
        ),
    ));
    summary.push(("generation rate".into(), format!("{rate:.0} events/s")));
    summary.push((
        "writer apply (generation)".into(),
        format!(
            "{apply_per_commit:.0} us/commit of {} events, {apply_per_event:.2} us/event",
            gen.per_commit * PER_INSTANCE
        ),
    ));

    // 2a. Cold: the first query after opening the store, with the store's files evicted
    // from the OS page cache, one sample per query type (each from a fresh open).
    println!("\ncold: one query per type, each right after evicting the store's files from the page cache and opening it");
    let mut rng = Rng::new(0xc01d);
    for q in QUERIES {
        let waited = wait_for_unlock(&a.data);
        if waited > Duration::from_millis(100) {
            println!(
                "  (the previous handle held the lock {:.1} s after drop)",
                waited.as_secs_f64()
            );
        }
        evict(&a.data);
        let t = Instant::now();
        let store = SledStore::open(&a.data, SledOptions::default()).expect("open");
        let open = t.elapsed();
        let query = q.make(&world, &mut rng);
        let t = Instant::now();
        let (n, more) = store_page(&store, &query);
        let took = t.elapsed();
        println!(
            "  {:<40} open {:>10}  first query {:>10}  ({n} events, next: {more})",
            q.label(),
            ms(open),
            ms(took)
        );
        summary.push((
            format!("cold first query: {}", q.label()),
            format!("{} (open before it {})", ms(took), ms(open)),
        ));
        drop(store);
    }

    // 2b. Warm: many random queries per row after a warm-up. The rows take turns (one query
    // of each per round) so that all see the same cache state: run one after the other, a
    // later row would profit from pages an earlier one brought into the cache.
    wait_for_unlock(&a.data);
    let store = Arc::new(SledStore::open(&a.data, SledOptions::default()).expect("open"));
    let engine = Engine::open(Arc::clone(&store), Arc::new(SystemClock)).expect("engine");
    println!(
        "\nwarm: first page of {PAGE} events, {} random queries per row, rows interleaved, \
         after {} warm-up rounds (SCAN_BUDGET = {SCAN_BUDGET})",
        a.reps,
        (a.reps / 10).max(20)
    );
    let mut rows: Vec<Row> = QUERIES
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            Row::new(
                format!("Store::audit  {}", q.label()),
                Probe::Store(q, PAGE),
                100 + i as u64,
            )
        })
        .collect();
    // Same distribution as the Store::audit row, other parameters: the difference is the
    // decoding of 100 events (and the hex of their hashes).
    rows.push(Row::new(
        format!("Engine::audit {} (decodes)", Q::ActorMarch.label()),
        Probe::Engine(Q::ActorMarch),
        200,
    ));
    // Where a page's time goes: the 1-hour query asking for one event (an index seek and
    // one event read) instead of a hundred; and one event read alone. The index entries of
    // a page are contiguous; its event reads are not (the events tree is keyed by
    // instance, so an hour's 100 events sit in ~100 different leaves).
    rows.push(Row::new(
        format!("Store::audit  {}, limit 1", Q::Hour.label()),
        Probe::Store(Q::Hour, 1),
        300,
    ));
    rows.push(Row::new(
        "Store::history(id, seq, 1): one random event".into(),
        Probe::Point,
        400,
    ));
    for _ in 0..(a.reps / 10).max(20) {
        for r in rows.iter_mut() {
            r.run(&world, gen.instances, &store, &engine, false);
        }
    }
    for _ in 0..a.reps {
        for r in rows.iter_mut() {
            r.run(&world, gen.instances, &store, &engine, true);
        }
    }
    println!(
        "  | {:<62} | {:>9} | {:>9} | {:>9} | {:>8} | {:>12} |",
        "query", "p50", "p99", "max", "events", "budget hit"
    );
    for r in rows.iter_mut() {
        r.lat.sort_unstable();
        let (p50, p99) = (percentile(&r.lat, 0.5), percentile(&r.lat, 0.99));
        let max = *r.lat.last().unwrap_or(&Duration::ZERO);
        let mean = r.items as f64 / r.lat.len().max(1) as f64;
        println!(
            "  | {:<62} | {:>9} | {:>9} | {:>9} | {:>8.1} | {:>5} of {:<4} |",
            r.label,
            ms(p50),
            ms(p99),
            ms(max),
            mean,
            r.budget_hits,
            r.lat.len()
        );
        summary.push((
            format!("warm {}", r.label),
            format!(
                "p50 {} p99 {} max {} ({mean:.0} events/page, budget hit {}/{})",
                ms(p50),
                ms(p99),
                ms(max),
                r.budget_hits,
                r.lat.len()
            ),
        ));
    }

    // The flip side of the bound: answering the uncovered filter completely takes as many
    // pages as the busiest person's year has budgets.
    {
        let query = AuditQuery {
            actor: Some(world.people[0].id.clone()),
            kind: Some("deadline_breached".into()),
            from_ms: Some(YEAR_START),
            to_ms: Some(YEAR_END),
            ..AuditQuery::default()
        };
        let t = Instant::now();
        let (mut pages, mut found) = (0u64, 0usize);
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = store.audit(&query, cursor.as_deref(), PAGE).expect("audit");
            pages += 1;
            found += page.items.len();
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        let took = t.elapsed();
        println!(
            "  walking every page of busiest actor + deadline_breached for the year: {pages} \
             pages, {found} events, {:.2} s ({} per page)",
            took.as_secs_f64(),
            ms(took / pages.max(1) as u32)
        );
        summary.push((
            "all pages: busiest actor + deadline_breached, year".into(),
            format!(
                "{pages} pages (at most {} index entries), {:.2} s",
                pages as usize * SCAN_BUDGET,
                took.as_secs_f64()
            ),
        ));
    }

    // 3. Export of one month of everything, through Engine (decodes every event).
    println!("\nexport: all events of March 2025 into std::io::sink()");
    let march = AuditQuery {
        from_ms: Some(MARCH.0),
        to_ms: Some(MARCH.1),
        ..AuditQuery::default()
    };
    for (name, format) in [("JSONL", ExportFormat::Jsonl), ("CSV", ExportFormat::Csv)] {
        let before = rss_kib();
        let mut peak = before;
        let t = Instant::now();
        let n = export(&engine, &march, format, std::io::sink(), &mut |_| {
            peak = peak.max(rss_kib());
        })
        .expect("export");
        let took = t.elapsed().as_secs_f64();
        let after = rss_kib();
        println!(
            "  {name:<5} {n} events in {took:.1} s = {:.0} events/s; RSS before {}, peak {}, \
             after {}",
            n as f64 / took,
            mb(before),
            mb(peak),
            mb(after)
        );
        summary.push((
            format!("export {name}, March ({n} events)"),
            format!(
                "{:.0} events/s; RSS {} -> peak {} -> {}",
                n as f64 / took,
                mb(before),
                mb(peak),
                mb(after)
            ),
        ));
    }

    // 4. The hash chain.
    println!("\nhash chain");
    let event = vec![b'x'; 350];
    let id = Uuid::now_v7();
    let mut head = chain::GENESIS;
    let loops = 1_000_000u64;
    let t = Instant::now();
    for seq in 1..=loops {
        head = chain::link(id, seq, &head, std::hint::black_box(&event));
    }
    std::hint::black_box(head);
    let link_ns = t.elapsed().as_nanos() as f64 / loops as f64;
    let per_command_us = 2.5 * link_ns / 1e3;
    println!(
        "  chain::link, 350-byte event: {link_ns:.0} ns/event; a command appending 2-3 events: \
         {:.1}-{:.1} us ({per_command_us:.1} us at 2.5)",
        2.0 * link_ns / 1e3,
        3.0 * link_ns / 1e3
    );
    println!(
        "  against the writer's measured apply time in generation: {apply_per_event:.2} us/event \
         -> links are {:.1}% of applying an event (they run on the writer thread, inside the \
         transaction)",
        100.0 * link_ns / 1e3 / apply_per_event.max(1e-9)
    );
    summary.push((
        "chain::link (350 B)".into(),
        format!("{link_ns:.0} ns/event"),
    ));
    summary.push((
        "chain per command (2.5 events)".into(),
        format!(
            "{per_command_us:.1} us = {:.1}% of the apply time of 2.5 events ({:.1} us)",
            100.0 * link_ns / 1e3 / apply_per_event.max(1e-9),
            2.5 * apply_per_event
        ),
    ));
    drop(engine);

    if a.skip_verify {
        println!("  Store::verify skipped (--skip-verify)");
    } else {
        let step = (gen.events / 10).clamp(1, 1_000_000);
        let mut next_print = step;
        let t = Instant::now();
        let v = store
            .verify(&mut |n| {
                if n >= next_print {
                    println!(
                        "    verified {n} events, {:.0} events/s",
                        n as f64 / t.elapsed().as_secs_f64()
                    );
                    next_print += step;
                }
            })
            .expect("verify");
        let took = t.elapsed().as_secs_f64();
        println!(
            "  Store::verify: {} instances, {} events in {took:.1} s = {:.0} events/s; intact: {}",
            v.instances,
            v.events,
            v.events as f64 / took,
            v.intact()
        );
        summary.push((
            "Store::verify (whole store)".into(),
            format!(
                "{} events in {took:.1} s = {:.0} events/s, intact {}",
                v.events,
                v.events as f64 / took,
                v.intact()
            ),
        ));
    }
    drop(store);

    println!("\nsummary ({cores} cores, available_parallelism)");
    let w = summary.iter().map(|(k, _)| k.len()).max().unwrap_or(10);
    for (k, v) in &summary {
        println!("| {k:<w$} | {v} |");
    }
}
