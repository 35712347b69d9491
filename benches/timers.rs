//! Deadline-timer benchmark, on the durable sled store with a manual clock:
//!
//! 1. N timers (default 100,000) due at the same instant all fire: N instances of a
//!    one-step procedure whose task is due in 1h with one `notify` breach action; the clock
//!    moves 1h on and `Engine::fire_due` (what the product uses: rounds of up to 512
//!    firings, each decided on its own and committed together, the next round decided
//!    while the store writes the last) fires them. If that takes longer than
//!    `--seq-limit` seconds (default 40) it is stopped there and the rate is extrapolated.
//!    Then the same load (a fresh store) is fired by 64 concurrent workers that split the
//!    due rows among themselves (`Engine::execute(FireTimer)`), so group commit can batch.
//! 2. One million armed future timers (rows written straight through `Store::commit`, in
//!    batches of 10,000): the cost of `next_timer`, of reopening the store compared with an
//!    empty one, the CPU time the real `Scheduler` uses while idle for 5 s, and disk size.
//!
//! Run: `cargo bench --bench timers` (options after `--`: `--timers N`, `--seq-limit S`,
//! `--armed N`).

// The allocator the product binary uses (src/main.rs), so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Map;
use sopflow::clock::ManualClock;
use sopflow::definition::load::{validate_paths, validate_text, Options};
use sopflow::engine::decide::Command;
use sopflow::engine::instance::Actor;
use sopflow::engine::service::Engine;
use sopflow::scheduler::Scheduler;
use sopflow::store::sled_store::{SledOptions, SledStore};
use sopflow::store::{Commit, Store, TimerRow};

const ONE_DEADLINE: &str = r#"
id = "bench-deadline"
version = 1
title = "One step due in an hour"
start = "s1"
calendar = "default"
[roles]
clerk = "Clerk"
[steps.s1]
role = "clerk"
deadline = { due = "1h", on_breach = [{ notify = "clerk" }] }
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;

const STARTERS: usize = 64;
const FIRERS: usize = 64;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-02T09:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .expect("valid time")
}

fn clerk() -> Actor {
    Actor {
        id: "clerk".into(),
        name: "Clerk".into(),
        department: "office".into(),
        roles: vec!["clerk".into()],
        level: 1,
        within: vec![],
    }
}

/// Process CPU time (user + system, all threads) from `/proc/self/stat`, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): state is field 3, utime 14,
    // stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of the process's live threads, in nanoseconds, summed from
/// `/proc/self/task/*/schedstat` (finer than the 10 ms ticks of `/proc/self/stat`, but a
/// thread that exits between two readings drops out of the sum).
fn cpu_nanos() -> Option<u64> {
    let mut sum = 0u64;
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        sum += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(sum)
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 on Linux unless told otherwise.
fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn walk_size(p: &Path) -> u64 {
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

fn mib(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

async fn open_engine(store: Arc<SledStore>) -> (Arc<Engine<SledStore>>, ManualClock) {
    let clock = ManualClock::new(t0());
    let engine = Engine::open(store, Arc::new(clock.clone())).expect("engine opens");
    let shipped = validate_paths(&[PathBuf::from("procedures")], &Options::default());
    engine.set_calendars(&shipped.calendars);
    let v = validate_text(
        "bench-deadline.toml",
        ONE_DEADLINE,
        &[],
        &HashSet::from(["default".to_string()]),
    );
    assert_eq!(v.errors(), 0, "{}", v.reports[0].render_text());
    engine.register(&v.valid).await.expect("register");
    (Arc::new(engine), clock)
}

/// Starts `n` instances with `STARTERS` concurrent callers; returns the seconds it took.
async fn start_instances(engine: &Arc<Engine<SledStore>>, n: usize) -> f64 {
    let t = Instant::now();
    let handles: Vec<_> = (0..STARTERS)
        .map(|i| {
            let e = engine.clone();
            let share = n / STARTERS + usize::from(i < n % STARTERS);
            tokio::spawn(async move {
                let who = clerk();
                for _ in 0..share {
                    e.start("bench-deadline", Map::new(), Some(&who))
                        .await
                        .expect("start");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("starter");
    }
    t.elapsed().as_secs_f64()
}

fn due_count(engine: &Engine<SledStore>) -> usize {
    let now_ms = engine.clock().now().timestamp_millis();
    engine
        .store()
        .due_timers(now_ms, usize::MAX)
        .expect("due timers")
        .len()
}

struct Row {
    what: String,
    figure: String,
}

fn row(rows: &mut Vec<Row>, what: impl Into<String>, figure: impl Into<String>) {
    let r = Row {
        what: what.into(),
        figure: figure.into(),
    };
    println!("  {:<62} {}", r.what, r.figure);
    rows.push(r);
}

fn main() {
    let n: usize = arg("--timers", 100_000);
    let seq_limit: f64 = arg("--seq-limit", 40.0);
    let armed: usize = arg("--armed", 1_000_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "sopflow timer benchmark — nproc {cores}, sled store (fsync on), manual clock; \
         {n} simultaneous timers, {armed} armed future timers"
    );
    let mut rows: Vec<Row> = Vec::new();

    // ---- 1a. N simultaneous timers, fired by `fire_due` (sequential, the product today).
    println!();
    println!("1. {n} timers due at the same instant");
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).expect("open"));
        let (engine, clock) = open_engine(store).await;
        let secs = start_instances(&engine, n).await;
        row(
            &mut rows,
            format!("start {n} instances (arming {n} timers), {STARTERS} callers"),
            format!("{secs:.1} s ({:.0}/s)", n as f64 / secs),
        );
        clock.advance(chrono::Duration::hours(1));
        assert_eq!(due_count(&engine), n, "every timer is due");
        let before = engine.store().stats();
        let trees_before = engine.store().tree_stats();
        let t = Instant::now();
        let res = tokio::time::timeout(
            Duration::from_secs_f64(seq_limit),
            engine.fire_due(),
        )
        .await;
        let secs = t.elapsed().as_secs_f64();
        // Not timed: the apply thread writes the last layers into sled after the firings
        // are acknowledged; the counts below want them in.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let s = engine.store().stats();
        let per = |a: u64, b: u64| (a - b) as f64 / n as f64;
        row(
            &mut rows,
            "  per firing: commits, log writes, sled writes",
            format!(
                "{:.4} commits, {:.1} layered writes, {:.1} sled writes; writer {:.1} µs \
                 apply + {:.1} µs flush, sled {:.1} µs",
                per(s.commits, before.commits),
                per(s.layered_writes, before.layered_writes),
                per(s.sled_writes, before.sled_writes),
                per(s.apply_micros, before.apply_micros),
                per(s.flush_micros, before.flush_micros),
                per(s.sled_micros, before.sled_micros),
            ),
        );
        // Where the apply thread's time went, per sled tree: the map for layout changes.
        let trees_after = engine.store().tree_stats();
        let total: u64 = trees_after
            .iter()
            .zip(&trees_before)
            .map(|(a, b)| a.sled_micros - b.sled_micros)
            .sum();
        for (a, b) in trees_after.iter().zip(&trees_before) {
            let (w, us) = (a.sled_writes - b.sled_writes, a.sled_micros - b.sled_micros);
            // Leftovers of the start's last layers (a write per hundreds of firings) are noise.
            if w as f64 / n as f64 >= 0.005 {
                row(
                    &mut rows,
                    format!("    sled tree `{}`", a.tree),
                    format!(
                        "{:.2} writes/firing, {:.1} µs/firing ({:.0}% of sled time)",
                        w as f64 / n as f64,
                        us as f64 / n as f64,
                        us as f64 * 100.0 / total.max(1) as f64
                    ),
                );
            }
        }
        match res {
            Ok(fired) => {
                let fired = fired.expect("fire_due");
                assert_eq!(fired, n);
                row(
                    &mut rows,
                    format!("fire_due (sequential, used today): {n} fire"),
                    format!(
                        "{secs:.2} s ({:.0} fires/s) — goal < 5 s: {}",
                        n as f64 / secs,
                        if secs < 5.0 { "met" } else { "NOT met" }
                    ),
                );
            }
            Err(_) => {
                let left = due_count(&engine);
                let fired = n - left;
                let rate = fired as f64 / secs;
                row(
                    &mut rows,
                    format!("fire_due (sequential, used today): stopped after {seq_limit:.0} s"),
                    format!(
                        "{fired} fired ({rate:.0} fires/s) → all {n} ≈ {:.0} s (extrapolated) — goal < 5 s: NOT met",
                        n as f64 / rate
                    ),
                );
            }
        }
        drop(engine);
    });
    drop(dir);

    // ---- 1b. The same load, fired by 64 concurrent workers splitting the due rows.
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).expect("open"));
        let (engine, clock) = open_engine(store).await;
        start_instances(&engine, n).await;
        clock.advance(chrono::Duration::hours(1));
        let t = Instant::now();
        let now_ms = engine.clock().now().timestamp_millis();
        let due = engine
            .store()
            .due_timers(now_ms, usize::MAX)
            .expect("due timers");
        assert_eq!(due.len(), n);
        let read = t.elapsed();
        let mut shares: Vec<Vec<TimerRow>> = (0..FIRERS).map(|_| Vec::new()).collect();
        for (i, r) in due.into_iter().enumerate() {
            shares[i % FIRERS].push(r);
        }
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let e = engine.clone();
                tokio::spawn(async move {
                    for r in share {
                        e.execute(r.instance, Command::FireTimer { timer: r.timer }, None)
                            .await
                            .expect("fire");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("firer");
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(due_count(&engine), 0, "every timer fired");
        row(
            &mut rows,
            format!("{FIRERS} concurrent workers (not in the product): {n} fire"),
            format!(
                "{secs:.2} s ({:.0} fires/s; reading the due rows {read:.0?}) — goal < 5 s: {}",
                n as f64 / secs,
                if secs < 5.0 { "met" } else { "NOT met" }
            ),
        );
        drop(engine);
    });
    drop(dir);

    // ---- 2. One million armed future timers.
    println!();
    println!("2. {armed} armed timers, all in the future");
    let empty_dir = tempfile::tempdir().expect("tempdir");
    drop(SledStore::open(empty_dir.path(), SledOptions::default()).expect("open empty"));
    let dir = tempfile::tempdir().expect("tempdir");
    let base_ms = (t0() + chrono::Duration::days(1)).timestamp_millis();
    rt.block_on(async {
        let store = SledStore::open(dir.path(), SledOptions::default()).expect("open");
        let t = Instant::now();
        let batch = 10_000usize;
        let mut i = 0usize;
        while i < armed {
            let end = (i + batch).min(armed);
            let arm_timers = (i..end)
                .map(|k| TimerRow {
                    // Spread over the future, one a second, in scrambled write order.
                    due_ms: base_ms + ((k as i64 * 7919) % armed as i64) * 1000,
                    instance: uuid::Uuid::from_u128(0x5eed_0000_0000 + k as u128),
                    timer: uuid::Uuid::from_u128(0x7173_0000_0000_0000 + k as u128),
                    payload: Vec::new(),
                })
                .collect();
            store
                .commit(Commit {
                    arm_timers,
                    ..Default::default()
                })
                .await
                .expect("commit timers");
            i = end;
        }
        let secs = t.elapsed().as_secs_f64();
        row(
            &mut rows,
            format!("arm {armed} timer rows directly (Store::commit, batches of {batch})"),
            format!("{secs:.1} s ({:.0} rows/s)", armed as f64 / secs),
        );
        let t = Instant::now();
        let next = store.next_timer().expect("next").expect("a timer");
        let first = t.elapsed();
        assert_eq!(next.due_ms, base_ms);
        let reps = 10_000u32;
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(store.next_timer().expect("next"));
        }
        let each = t.elapsed() / reps;
        row(
            &mut rows,
            format!("next_timer() with {armed} armed (first call / mean of 10,000)"),
            format!("{first:.1?} / {each:.1?}"),
        );
        drop(store);
    });
    let disk = walk_size(dir.path());
    let empty_disk = walk_size(empty_dir.path());
    row(
        &mut rows,
        format!("disk size of the store ({armed} timer rows / empty store)"),
        format!(
            "{} / {} ({:.0} bytes per timer)",
            mib(disk),
            mib(empty_disk),
            (disk - empty_disk.min(disk)) as f64 / armed as f64
        ),
    );

    // Reopen: empty store vs the one with 1M timers (open, then the first next_timer).
    let time_open = |p: &Path| {
        let t = Instant::now();
        let store = SledStore::open(p, SledOptions::default()).expect("reopen");
        let open = t.elapsed();
        let t = Instant::now();
        let next = store.next_timer().expect("next");
        let first = t.elapsed();
        (store, open, first, next.is_some())
    };
    let (s, open_empty, first_empty, any) = time_open(empty_dir.path());
    assert!(!any);
    drop(s);
    let (store, open_full, first_full, any) = time_open(dir.path());
    assert!(any);
    row(
        &mut rows,
        "SledStore::open + first next_timer(), empty store",
        format!("{open_empty:.1?} + {first_empty:.1?}"),
    );
    row(
        &mut rows,
        format!("SledStore::open + first next_timer(), {armed} timers armed"),
        format!("{open_full:.1?} + {first_full:.1?}"),
    );

    // The real scheduler, idle for 5 s with every timer in the future.
    let hz = ticks_per_sec();
    let (ticks, nanos, fired) = rt.block_on(async {
        let (engine, _clock) = open_engine(Arc::new(store)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = cpu_ticks();
        let before_ns = cpu_nanos();
        let sched = Scheduler::spawn(engine.clone());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = cpu_ticks();
        let after_ns = cpu_nanos();
        sched.stop().await;
        let left = engine.store().next_timer().expect("next");
        (
            before.zip(after).map(|(b, a)| a.saturating_sub(b)),
            before_ns.zip(after_ns).map(|(b, a)| a.saturating_sub(b)),
            left.map(|r| r.due_ms) != Some(base_ms),
        )
    });
    assert!(!fired, "nothing was due, nothing fired");
    row(
        &mut rows,
        format!("process CPU time while the Scheduler idles 5 s over {armed} timers"),
        match ticks {
            Some(t) => format!(
                "{:.0} ms ({t} ticks at {hz:.0} Hz; {:.2}% of one core); schedstat: {}",
                t as f64 * 1000.0 / hz,
                t as f64 / hz / 5.0 * 100.0,
                nanos.map_or("unreadable".into(), |n| format!("{:.2} ms", n as f64 / 1e6))
            ),
            None => "not measured (/proc/self/stat unreadable)".into(),
        },
    );

    println!();
    println!("| measure | figure |");
    println!("|---|---|");
    for r in &rows {
        println!("| {} | {} |", r.what, r.figure);
    }
}
