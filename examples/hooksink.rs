//! A webhook receiver for trying a subscription and for the outbox benchmark: answers every
//! POST 204 (or 503 for the first `--fail N` calls), counts the calls and the distinct
//! `webhook-id`s, and prints them every few seconds.
//!
//! ```text
//! cargo run --release --example hooksink -- --listen 127.0.0.1:9900
//! # webhooks.toml: url = "http://127.0.0.1:9900/hook", allow_private = true
//! ```
//!
//! It does not verify signatures (the tests do that with an independent library); it is a
//! counter, kept small so it costs the machine little beside a server under load.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    fail: AtomicU64,
    ids: Mutex<HashSet<String>>,
}

async fn hook(State(c): State<Arc<Counts>>, headers: HeaderMap) -> StatusCode {
    c.calls.fetch_add(1, Ordering::Relaxed);
    if c.fail
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        if let Ok(mut ids) = c.ids.lock() {
            ids.insert(id.to_string());
        }
    }
    StatusCode::NO_CONTENT
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = "127.0.0.1:9900".to_string();
    let mut fail = 0u64;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--listen" => listen = it.next().ok_or("--listen needs an address")?,
            "--fail" => fail = it.next().ok_or("--fail needs a number")?.parse()?,
            _ => return Err("usage: hooksink [--listen ADDR] [--fail N]".into()),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let counts = Arc::new(Counts::default());
        counts.fail.store(fail, Ordering::Relaxed);
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(counts.clone());
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!(
            "hooksink listening on http://{}/hook",
            listener.local_addr()?
        );
        let report = counts.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let ids = report.ids.lock().map(|i| i.len()).unwrap_or(0);
                println!(
                    "{:>6.1}s calls {} distinct {}",
                    start.elapsed().as_secs_f64(),
                    report.calls.load(Ordering::Relaxed),
                    ids
                );
            }
        });
        axum::serve(listener, app).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
