//! Worklist page times over HTTP against a running `sopflow serve` (say on a store the
//! `scale` example built): for each user and each filter the API offers, the same
//! `GET /v1/tasks` request many times, one after another, printing p50 / p99 / max and how
//! many tasks the page held. A page counts only when the server answered 200.
//!
//! ```text
//! target/release/examples/scale --data /tmp/scale --instances 150000 --open 100000
//! target/release/sopflow serve --data-dir /tmp/scale --listen 127.0.0.1:18181 --no-watch &
//! target/release/examples/worklist --url http://127.0.0.1:18181 \
//!     --tokens /tmp/scale/demo-tokens.txt --requests 200
//! ```
//!
//! Options: `--url`, `--tokens FILE` (the demo tokens `serve` wrote), `--requests N` per
//! (user, filter), `--users a,b,c` (default: people of the complaint procedure's roles with
//! the largest worklists, and the admin).

use std::collections::HashMap;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    tokens: String,
    requests: usize,
    users: Vec<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        tokens: "data/demo-tokens.txt".into(),
        requests: 200,
        users: ["xu.na", "liu.yang", "qian.li", "it.admin"]
            .map(String::from)
            .to_vec(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val()?,
            "--tokens" => a.tokens = val()?,
            "--requests" => a.requests = val()?.parse().map_err(|e| format!("{e}"))?,
            "--users" => a.users = val()?.split(',').map(String::from).collect(),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

fn tokens(path: &str) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

const QUERIES: [&str; 9] = [
    "",
    "?limit=10",
    "?limit=100",
    "?limit=100&state=offered",
    "?limit=100&state=held",
    "?limit=100&state=overdue",
    "?limit=100&state=reminded",
    "?limit=100&procedure=complaint-handling",
    "?limit=100&due_before=2030-01-01T00:00:00Z",
];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let toks = tokens(&a.tokens).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    println!(
        "{:<10} {:<44} {:>6} {:>8} {:>8} {:>8}",
        "user", "query", "tasks", "p50 ms", "p99 ms", "max ms"
    );
    for user in &a.users {
        let Some(token) = toks.get(user) else {
            eprintln!("no token for {user} in {}", a.tokens);
            continue;
        };
        for q in QUERIES {
            let url = format!("{}/v1/tasks{q}", a.url);
            let mut times = Vec::with_capacity(a.requests);
            let mut n = 0;
            for _ in 0..a.requests {
                let t = Instant::now();
                let res = http.get(&url).bearer_auth(token).send().await;
                let Ok(res) = res else { continue };
                if res.status() != 200 {
                    eprintln!("{user} {q}: {}", res.status());
                    break;
                }
                let body: serde_json::Value = res.json().await.unwrap_or_default();
                times.push(t.elapsed());
                n = body["items"].as_array().map_or(0, Vec::len);
            }
            if times.is_empty() {
                continue;
            }
            times.sort();
            println!(
                "{user:<10} {:<44} {n:>6} {:>8.2} {:>8.2} {:>8.2}",
                if q.is_empty() {
                    "(default limit 200)"
                } else {
                    q
                },
                pct(&times, 0.5),
                pct(&times, 0.99),
                times.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            );
        }
    }
}
