//! Store benchmark: durable commits per second through `SledStore::commit().await` with 1, 8
//! and 64 concurrent callers, their p50/p99 latency, and the disk's fsync ceiling (one
//! sequential `insert + flush()` per operation) beside it. Run with
//! `cargo bench --bench store`. Environment: `SOPFLOW_BENCH_SECS` seconds per row (default
//! 3), `SOPFLOW_BENCH_SNAPSHOT_BYTES` snapshot size (default 1024), `SOPFLOW_BENCH_ONLY=N`
//! only the N-caller row with default options (for profiling).
//!
//! A plain `main` rather than criterion groups: what matters is throughput under
//! concurrency and tail latency, which criterion's one-closure-at-a-time model does not
//! measure. It must not be used as a correctness test (it asserts nothing but success).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sopflow::store::sled_store::{SledOptions, SledStore};
use sopflow::store::{
    Commit, EventSummary, InstanceWrite, NewEvent, StatusChange, Store, TaskRow, TimerRow,
};
use uuid::Uuid;

const EVENT_BYTES: usize = 300;

/// Snapshot size: 1 KB, or `SOPFLOW_BENCH_SNAPSHOT_BYTES` to see how cost scales with it.
fn snapshot_bytes() -> usize {
    std::env::var("SOPFLOW_BENCH_SNAPSHOT_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024)
}

fn task(instance: Uuid, n: u64) -> TaskRow {
    TaskRow {
        task: Uuid::now_v7(),
        instance,
        procedure: "complaint-handling".into(),
        step: format!("step-{}", n % 7),
        roles: vec!["follow_up".into()],
        assignee: Some(format!("user-{}", n % 50)),
        due_ms: Some(1_700_000_000_000 + n as i64),
        deadline: String::new(),
        opens_ms: None,
    }
}

/// An event of the usual size, indexed like an engine event (a person's, or the engine's).
fn event(fill: u8, at: i64, user: Option<&str>) -> NewEvent {
    NewEvent {
        bytes: vec![fill; EVENT_BYTES],
        summary: EventSummary {
            at_ms: 1_700_000_000_000 + at,
            kind: if user.is_some() {
                "task_completed"
            } else {
                "task_opened"
            }
            .into(),
            user: user.map(str::to_string),
            on_behalf_of: None,
        },
    }
}

/// One caller: creates its instance, then completes a step per commit — two events, a new
/// snapshot, the open task closed and the next one opened, a deadline timer armed.
async fn caller(store: Arc<SledStore>, until: Instant, warmup_until: Instant) -> Vec<Duration> {
    let id = Uuid::now_v7();
    let mut open = task(id, 0);
    store
        .commit(Commit {
            instances: vec![InstanceWrite {
                id,
                procedure: "complaint-handling".into(),
                expected_version: 0,
                events: vec![event(b'e', 0, None)],
                snapshot: vec![b's'; snapshot_bytes()],
            }],
            open_tasks: vec![open.clone()],
            statuses: vec![StatusChange {
                instance: id,
                procedure: "complaint-handling".into(),
                from: None,
                to: "running".into(),
            }],
            ..Commit::default()
        })
        .await
        .expect("create");
    let mut version = 1;
    let mut latencies = Vec::with_capacity(100_000);
    let mut n = 1;
    loop {
        let started = Instant::now();
        if started >= until {
            return latencies;
        }
        let next = task(id, n);
        let commit = Commit {
            instances: vec![InstanceWrite {
                id,
                procedure: "complaint-handling".into(),
                expected_version: version,
                events: vec![
                    event(b'e', n as i64, Some("liu.yang")),
                    event(b'f', n as i64, None),
                ],
                snapshot: vec![b's'; snapshot_bytes()],
            }],
            closed_tasks: vec![open],
            open_tasks: vec![next.clone()],
            arm_timers: vec![TimerRow {
                due_ms: 1_700_000_000_000 + n as i64,
                instance: id,
                timer: Uuid::now_v7(),
                payload: vec![b't'; 64],
            }],
            ..Commit::default()
        };
        store.commit(commit).await.expect("commit");
        if started >= warmup_until {
            latencies.push(started.elapsed());
        }
        version += 2;
        open = next;
        n += 1;
    }
}

struct Row {
    label: String,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    batch: f64,
    /// Writer-thread microseconds per commit applied and per flush.
    apply_us: f64,
    flush_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn run_commits(
    rt: &tokio::runtime::Runtime,
    callers: usize,
    options: SledOptions,
    secs: f64,
) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let label = format!(
        "commit, {callers:>2} caller{}, {}",
        if callers == 1 { " " } else { "s" },
        describe(&options)
    );
    let store = Arc::new(SledStore::open(dir.path(), options).expect("open"));
    let warmup = Duration::from_secs_f64(secs / 6.0);
    let start = Instant::now();
    let warmup_until = start + warmup;
    let until = warmup_until + Duration::from_secs_f64(secs);
    let stats_before = std::cell::Cell::new(None);
    let mut latencies = rt.block_on(async {
        let handles: Vec<_> = (0..callers)
            .map(|_| tokio::spawn(caller(Arc::clone(&store), until, warmup_until)))
            .collect();
        tokio::time::sleep_until(warmup_until.into()).await;
        stats_before.set(Some(store.stats()));
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.expect("caller"));
        }
        all
    });
    let measured = until.duration_since(warmup_until).as_secs_f64();
    let before = stats_before.get().unwrap_or_default();
    let after = store.stats();
    latencies.sort_unstable();
    Row {
        label,
        per_sec: latencies.len() as f64 / measured,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        batch: (after.commits - before.commits) as f64
            / (after.flushes - before.flushes).max(1) as f64,
        apply_us: (after.apply_micros - before.apply_micros) as f64
            / (after.commits - before.commits).max(1) as f64,
        flush_us: (after.flush_micros - before.flush_micros) as f64
            / (after.flushes - before.flushes).max(1) as f64,
    }
}

fn describe(o: &SledOptions) -> String {
    match (o.fsync, o.flush_every_ms) {
        (true, None) => "defaults (fdatasync on)".into(),
        (false, None) => "fsync: false".into(),
        (f, ms) => format!("fsync: {f}, flush_every_ms: {ms:?}"),
    }
}

/// The disk's ceiling for one-at-a-time durability: sled insert + flush per operation,
/// optionally followed by an `fdatasync` of sled's log file as `SledOptions::fsync` does.
fn run_fsync_ceiling(secs: f64, fdatasync: bool) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()
        .expect("sled");
    let tree = db.open_tree("ceiling").expect("tree");
    let log = std::fs::File::open(dir.path().join("db")).expect("log file");
    let value = vec![b'v'; snapshot_bytes()];
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut latencies = Vec::new();
    let mut i: u64 = 0;
    let start = Instant::now();
    while Instant::now() < until {
        let t = Instant::now();
        tree.insert(i.to_be_bytes(), value.as_slice())
            .expect("insert");
        db.flush().expect("flush");
        if fdatasync {
            log.sync_data().expect("fdatasync");
        }
        latencies.push(t.elapsed());
        i += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Row {
        label: if fdatasync {
            "ceiling: sled insert + flush() + fdatasync, sequential".into()
        } else {
            "ceiling: sled insert + flush(), sequential".into()
        },
        per_sec: latencies.len() as f64 / elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        batch: 1.0,
        apply_us: f64::NAN,
        flush_us: f64::NAN,
    }
}

fn main() {
    let secs: f64 = std::env::var("SOPFLOW_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let snapshot = snapshot_bytes();
    // `SOPFLOW_BENCH_ONLY=64`: just that many callers with default options (for profiling).
    let only: Option<usize> = std::env::var("SOPFLOW_BENCH_ONLY")
        .ok()
        .and_then(|s| s.parse().ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    if let Some(callers) = only {
        rows.push(run_commits(&rt, callers, SledOptions::default(), secs));
        print_table(rows, cores, secs, snapshot);
        return;
    }
    rows.push(run_fsync_ceiling(secs, false));
    rows.push(run_fsync_ceiling(secs, true));
    let defaults = SledOptions::default();
    let no_fsync = SledOptions {
        fsync: false,
        ..SledOptions::default()
    };
    let sled_timer = SledOptions {
        flush_every_ms: Some(500),
        ..SledOptions::default()
    };
    for callers in [1, 8, 64] {
        rows.push(run_commits(&rt, callers, defaults.clone(), secs));
    }
    for options in [no_fsync, sled_timer] {
        for callers in [1, 64] {
            rows.push(run_commits(&rt, callers, options.clone(), secs));
        }
    }
    print_table(rows, cores, secs, snapshot);
}

fn print_table(rows: Vec<Row>, cores: usize, secs: f64, snapshot: usize) {
    println!();
    println!(
        "sopflow store benchmark: {cores} cores, {secs} s per row, tokio multi-thread runtime \
         ({cores} workers); commit = 1 instance (2 events x {EVENT_BYTES} B, {snapshot} B \
         snapshot), 1 task closed + 1 opened, 1 timer armed"
    );
    println!();
    println!(
        "| {:<56} | {:>13} | {:>10} | {:>10} | {:>13} | {:>12} | {:>12} |",
        "what", "durable ops/s", "p50", "p99", "commits/flush", "apply us/op", "flush us/op"
    );
    println!(
        "|{:-<58}|{:->15}|{:->12}|{:->12}|{:->15}|{:->14}|{:->14}|",
        "", "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<56} | {:>13.0} | {:>10.3?} | {:>10.3?} | {:>13.1} | {:>12.1} | {:>12.1} |",
            r.label, r.per_sec, r.p50, r.p99, r.batch, r.apply_us, r.flush_us
        );
    }
}
