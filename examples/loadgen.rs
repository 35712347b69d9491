//! Load generator for `sopflow serve`: N concurrent connections each start complaints and
//! complete every step to the end (register → resolve → follow-up → closed: three durable
//! step completions per instance), then it prints completions/s and latency percentiles.
//!
//! ```text
//! target/release/sopflow serve --data-dir /tmp/load --listen 127.0.0.1:8080 &
//! cargo run --release --example loadgen -- --tokens /tmp/load/demo-tokens.txt \
//!     --connections 64 --seconds 20
//! ```
//!
//! Every request is a separate HTTP/1.1 request on a kept-alive connection; a completion
//! counts only when the server answered 200, which it does after the commit is durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Args {
    url: String,
    tokens: String,
    connections: usize,
    seconds: u64,
    threads: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        tokens: "data/demo-tokens.txt".into(),
        connections: 64,
        seconds: 20,
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val()?,
            "--tokens" => a.tokens = val()?,
            "--connections" => a.connections = val()?.parse().map_err(|e| format!("--connections: {e}"))?,
            "--seconds" => a.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--threads" => a.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "-h" | "--help" => {
                return Err("usage: loadgen [--url URL] [--tokens FILE] [--connections N] [--seconds S] [--threads T]".into())
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

#[derive(Default)]
struct Stats {
    completions: AtomicU64,
    starts: AtomicU64,
    instances_done: AtomicU64,
    errors: AtomicU64,
    /// Latency of each completion, microseconds.
    latencies: Mutex<Vec<u64>>,
}

struct Worker {
    client: reqwest::Client,
    url: String,
    tokens: Arc<HashMap<String, String>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    n: u64,
}

impl Worker {
    async fn post(&self, user: &str, path: &str, body: Value) -> Result<Value, String> {
        let token = self
            .tokens
            .get(user)
            .ok_or_else(|| format!("no token for {user}"))?;
        let res = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let v: Value = res.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(v)
        } else {
            Err(format!("{path}: {status} {v}"))
        }
    }

    fn open_task(inst: &Value, step: &str) -> Result<String, String> {
        inst["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["step"] == step))
            .and_then(|t| t["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("no open `{step}` task in {inst}"))
    }

    async fn complete(
        &self,
        user: &str,
        inst: &Value,
        step: &str,
        form: Value,
    ) -> Result<Value, String> {
        let task = Self::open_task(inst, step)?;
        let started = Instant::now();
        let v = self
            .post(
                user,
                &format!("/v1/tasks/{task}/complete"),
                json!({ "form": form }),
            )
            .await?;
        let us = started.elapsed().as_micros() as u64;
        self.stats.completions.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.stats.latencies.lock() {
            l.push(us);
        }
        Ok(v)
    }

    async fn one_instance(&mut self) -> Result<(), String> {
        self.n += 1;
        let inst = self
            .post(
                "xu.na",
                "/v1/instances",
                json!({"procedure": "complaint-handling",
                       "data": {"customer": format!("Customer {}", self.n), "contact": "load test"}}),
            )
            .await?;
        self.stats.starts.fetch_add(1, Ordering::Relaxed);
        let inst = self
            .complete(
                "xu.na",
                &inst,
                "register",
                json!({
                "channel": "hotline", "complaint": "Machine stops after an hour.",
                "severity": "general", "first_answer": "An engineer will call you today.", "received_at": "2026-11-02T08:30:00Z"}),
            )
            .await?;
        let inst = self
            .complete(
                "liu.yang",
                &inst,
                "resolve_general",
                json!({
                "resolution": "Replaced the thermal switch.", "resolved_on": "2026-11-03"}),
            )
            .await?;
        let inst = self
            .complete(
                "xu.na",
                &inst,
                "follow_up_visit",
                json!({
                "customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Works again."}),
            )
            .await?;
        if inst["status"] != "completed" {
            return Err(format!("instance did not complete: {inst}"));
        }
        self.stats.instances_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.one_instance().await {
                if self.stats.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("error: {e}");
                }
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let text = match std::fs::read_to_string(&a.tokens) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read the tokens file {}: {e} (start the server once; it writes DATA_DIR/demo-tokens.txt)", a.tokens);
            std::process::exit(2);
        }
    };
    let tokens: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, t)| (u.to_string(), t.trim().to_string()))
        .collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    rt.block_on(async move {
        let client = match reqwest::Client::builder()
            .pool_max_idle_per_host(a.connections)
            .tcp_nodelay(true)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot build the HTTP client: {e}");
                std::process::exit(2);
            }
        };
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tokens = Arc::new(tokens);
        let mut joins = Vec::new();
        for _ in 0..a.connections {
            let w = Worker {
                client: client.clone(),
                url: a.url.trim_end_matches('/').to_string(),
                tokens: tokens.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                n: 0,
            };
            joins.push(tokio::spawn(w.run()));
        }
        // Warm-up: the first second opens connections and fills caches; it is not counted.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c0 = stats.completions.load(Ordering::Relaxed);
        if let Ok(mut l) = stats.latencies.lock() {
            l.clear();
        }
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(a.seconds)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let done = stats.completions.load(Ordering::Relaxed) - c0;
        let mut lat = stats.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        stop.store(true, Ordering::Relaxed);
        for j in joins {
            let _ = j.await;
        }
        lat.sort_unstable();
        println!(
            "connections {}  measured {:.1}s  completions {}  => {:.0} completions/s",
            a.connections, elapsed, done, done as f64 / elapsed
        );
        println!(
            "complete latency ms: p50 {:.2}  p99 {:.2}  max {:.2}   (instances started {}, finished {}, errors {})",
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat.last().map_or(0.0, |m| *m as f64 / 1000.0),
            stats.starts.load(Ordering::Relaxed),
            stats.instances_done.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed)
        );
    });
}
