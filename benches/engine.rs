//! Engine benchmark: durable step completions per second through `Engine::execute` on the
//! sled store, at 1, 8 and 64 concurrent callers, each driving five-step instances from
//! start to end; with p50/p99 latency of a completion, the fsync ceiling of the same disk,
//! and the memory cost of an open instance.
//!
//! Run: `cargo bench --bench engine` (add `-- --seconds N` to measure longer). With
//! `-- --memory` the same load runs on the in-memory store: no disk, so the figure is the
//! engine's own CPU ceiling, to compare with the durable one.

// The allocator the product binary uses (src/main.rs), so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Map;
use sopflow::clock::SystemClock;
use sopflow::definition::load::validate_text;
use sopflow::engine::decide::Command;
use sopflow::engine::instance::Actor;
use sopflow::engine::service::Engine;
use sopflow::store::memory::MemoryStore;
use sopflow::store::sled_store::{SledOptions, SledStore};
use sopflow::store::Store;

mod support;
use support::rss_kib;

const FIVE_STEPS: &str = r#"
id = "bench-five"
version = 1
title = "Five steps"
start = "s1"
[roles]
clerk = "Clerk"
[steps.s1]
role = "clerk"
next = [{ to = "s2" }]
[steps.s2]
role = "clerk"
next = [{ to = "s3" }]
[steps.s3]
role = "clerk"
next = [{ to = "s4" }]
[steps.s4]
role = "clerk"
next = [{ to = "s5" }]
[steps.s5]
role = "clerk"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;

fn clerk(i: usize) -> Actor {
    Actor {
        id: format!("clerk{i}"),
        name: format!("Clerk {i}"),
        department: "office".into(),
        roles: vec!["clerk".into()],
        level: 1,
        within: vec![],
    }
}

async fn open_engine<S: Store>(store: S) -> Arc<Engine<S>> {
    let engine = Engine::open(Arc::new(store), Arc::new(SystemClock)).expect("engine opens");
    let v = validate_text("bench-five.toml", FIVE_STEPS, &[], &HashSet::new());
    assert_eq!(v.errors(), 0, "{}", v.reports[0].render_text());
    engine.register(&v.valid).await.expect("register");
    Arc::new(engine)
}

/// Drives instances start to end until `until`; returns completion latencies.
async fn caller<S: Store>(engine: Arc<Engine<S>>, who: Actor, until: Instant) -> Vec<Duration> {
    let mut lat = Vec::new();
    while Instant::now() < until {
        let mut inst = engine
            .start("bench-five", Map::new(), Some(&who))
            .await
            .expect("start");
        while let Some(task) = inst.tasks.keys().next().copied() {
            let t = Instant::now();
            inst = engine
                .execute(
                    inst.id,
                    Command::Complete {
                        task,
                        outcome: None,
                        form: Map::new(),
                        comment: None,
                    },
                    Some(&who),
                )
                .await
                .expect("complete");
            lat.push(t.elapsed());
        }
    }
    lat
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sequential write + fdatasync of 4 KiB: what one disk flush costs here.
fn fsync_ceiling(dir: &std::path::Path, secs: f64) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let buf = vec![7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let memory = std::env::args().any(|a| a == "--memory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "sopflow engine benchmark — {cores} cores, {} store, five-step procedure, {secs} s per level",
        if memory { "in-memory (not durable)" } else { "sled" }
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    println!(
        "fsync ceiling (4 KiB write + fdatasync, 1 thread): {:.0}/s",
        fsync_ceiling(tmp.path(), 2.0)
    );
    println!();
    println!(
        "{:>8} {:>14} {:>10} {:>10} {:>10}",
        "callers", "completions/s", "p50", "p99", "max"
    );
    let open_cost = if memory {
        (0, 0.0, 0.0)
    } else {
        open_cost(&rt)
    };
    for callers in [1usize, 8, 64] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rate, lat, split) = if memory {
            let (rate, lat, _) =
                rt.block_on(measure(open_engine(MemoryStore::new()), callers, secs));
            (rate, lat, String::new())
        } else {
            let store = SledStore::open(dir.path(), SledOptions::default()).expect("store opens");
            let (rate, lat, engine) = rt.block_on(measure(open_engine(store), callers, secs));
            let s = engine.store().stats();
            let per = |micros: u64| micros as f64 / s.commits.max(1) as f64;
            // The sled trees that took most of the apply thread's time, with their share.
            let mut trees = engine.store().tree_stats();
            trees.sort_by_key(|t| std::cmp::Reverse(t.sled_micros));
            let top: Vec<String> = trees
                .iter()
                .take(4)
                .filter(|t| t.sled_micros > 0)
                .map(|t| {
                    format!(
                        "{} {:.0}%",
                        t.tree,
                        100.0 * t.sled_micros as f64 / s.sled_micros.max(1) as f64
                    )
                })
                .collect();
            (
                rate,
                lat,
                format!(
                    "   batch {:.1}, writer µs/commit: apply {:.0} + flush {:.0}; sled µs/commit {:.0} ({}), {:.0}% of writes reached sled",
                    s.commits as f64 / s.flushes.max(1) as f64,
                    per(s.apply_micros),
                    per(s.flush_micros),
                    per(s.sled_micros),
                    top.join(", "),
                    100.0 * s.sled_writes as f64 / s.layered_writes.max(1) as f64
                ),
            )
        };
        let mut lat = lat;
        lat.sort();
        println!(
            "{:>8} {:>14.0} {:>10.2?} {:>10.2?} {:>10.2?}{split}",
            callers,
            rate,
            pct(&lat, 0.50),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or_default()
        );
    }

    if memory {
        return;
    }
    let (n, per_instance, disk) = open_cost;
    println!();
    println!("{n} open instances: {per_instance:.0} bytes of resident memory each (process RSS growth), {disk:.0} bytes on disk each");
}

/// Memory and disk per open instance: instances started and left waiting at their first
/// step (memory while the store is open, disk once it is closed). Run before the throughput levels: with mimalloc, memory those levels freed is
/// reused and the process's RSS would not grow at all.
fn open_cost(rt: &tokio::runtime::Runtime) -> (usize, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 20_000usize;
    let (per_instance, disk) = rt.block_on(async {
        let store = SledStore::open(dir.path(), SledOptions::default()).expect("store opens");
        let engine = open_engine(store).await;
        let who = clerk(0);
        let before = rss_kib() * 1024;
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let e = engine.clone();
                let who = who.clone();
                tokio::spawn(async move {
                    for _ in 0..n / 8 {
                        e.start("bench-five", Map::new(), Some(&who))
                            .await
                            .expect("start");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("starter");
        }
        let after = rss_kib() * 1024;
        // Closed first: the close's checkpoint writes what the memtable still holds into
        // sled's files, so the figure is what the store takes at rest.
        drop(engine);
        let disk: u64 = walk_size(dir.path());
        (
            after.saturating_sub(before) as f64 / n as f64,
            disk as f64 / n as f64,
        )
    });
    (n, per_instance, disk)
}

async fn measure<S: Store>(
    engine: impl std::future::Future<Output = Arc<Engine<S>>>,
    callers: usize,
    secs: f64,
) -> (f64, Vec<Duration>, Arc<Engine<S>>) {
    let engine = engine.await;
    // Warm up, then measure.
    let warm = Instant::now() + Duration::from_millis(500);
    caller(engine.clone(), clerk(0), warm).await;
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..callers)
        .map(|i| tokio::spawn(caller(engine.clone(), clerk(i), until)))
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("caller"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    (all.len() as f64 / elapsed, all, engine)
}

fn walk_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_size(&path)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}
