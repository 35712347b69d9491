//! Page times of the web app on demo data: seeds a running `sopflow serve` with complaints
//! (most driven to closure through register → resolve → follow-up, the rest left open at
//! each step), signs in as the people who use each page, and requests every main page many
//! times, one after another per connection, printing p50 / p99 / max per page.
//!
//! ```text
//! target/release/sopflow serve --data-dir /tmp/web --listen 127.0.0.1:8080 --clock manual &
//! cargo run --release --example webload -- --tokens /tmp/web/demo-tokens.txt \
//!     --instances 10000 --requests 300 --connections 2
//! ```
//!
//! A page counts only when the server answered 200. Seeding goes through the API (bearer
//! tokens); the pages are read with a session cookie, as a browser does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Args {
    url: String,
    tokens: String,
    instances: usize,
    requests: usize,
    connections: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        tokens: "data/demo-tokens.txt".into(),
        instances: 10_000,
        requests: 300,
        connections: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{e}"));
        match flag.as_str() {
            "--url" => a.url = val()?,
            "--tokens" => a.tokens = val()?,
            "--instances" => a.instances = num(val()?)?,
            "--requests" => a.requests = num(val()?)?,
            "--connections" => a.connections = num(val()?)?.max(1),
            "-h" | "--help" => {
                return Err("usage: webload [--url URL] [--tokens FILE] [--instances N] [--requests R] [--connections C]".into())
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    url: String,
    tokens: Arc<HashMap<String, String>>,
}

impl Api {
    async fn call(
        &self,
        user: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let token = self
            .tokens
            .get(user)
            .ok_or_else(|| format!("no token for {user}"))?;
        let mut req = match method {
            "GET" => self.client.get(format!("{}{path}", self.url)),
            _ => self.client.post(format!("{}{path}", self.url)),
        }
        .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        let status = res.status();
        let v: Value = res.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(v)
        } else {
            Err(format!("{method} {path}: {status} {v}"))
        }
    }

    async fn complete(
        &self,
        user: &str,
        inst: &Value,
        step: &str,
        form: Value,
    ) -> Result<Value, String> {
        let task = inst["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["step"] == step))
            .and_then(|t| t["id"].as_str())
            .ok_or_else(|| format!("no open {step} task"))?;
        self.call(
            user,
            "POST",
            &format!("/v1/tasks/{task}/complete"),
            Some(json!({ "form": form })),
        )
        .await
    }

    /// One complaint, taken `depth` steps along (0: just registered as started).
    async fn seed_one(&self, n: usize, depth: usize) -> Result<String, String> {
        let inst = self
            .call(
                "xu.na",
                "POST",
                "/v1/instances",
                Some(json!({"procedure": "complaint-handling",
                    "data": {"customer": format!("Customer {n}"), "contact": "webload"}})),
            )
            .await?;
        let id = inst["id"].as_str().unwrap_or_default().to_string();
        if depth == 0 {
            return Ok(id);
        }
        let inst = self
            .complete("xu.na", &inst, "register", json!({"channel": "telephone",
                "complaint": "Roller damaged", "severity": "general", "first_answer": "We ship a new one", "received_at": "2026-11-02T08:30:00Z"}))
            .await?;
        if depth == 1 {
            return Ok(id);
        }
        let inst = self
            .complete(
                "liu.yang",
                &inst,
                "resolve_general",
                json!({"resolution": "Replaced", "resolved_on": "2026-11-02"}),
            )
            .await?;
        if depth == 2 {
            return Ok(id);
        }
        self.complete(
            "gao.yan",
            &inst,
            "follow_up_visit",
            json!({"customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Fine"}),
        )
        .await?;
        Ok(id)
    }
}

/// Signs `user` in and returns the session cookie (`name=value`).
async fn sign_in(client: &reqwest::Client, url: &str, token: &str) -> Result<String, String> {
    let res = client
        .post(format!("{url}/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    res.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| format!("sign-in answered {} without a cookie", res.status()))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let a = args()?;
    let tokens: HashMap<String, String> = std::fs::read_to_string(&a.tokens)
        .map_err(|e| format!("{}: {e}", a.tokens))?
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, t)| (u.to_string(), t.trim().to_string()))
        .collect();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let api = Api {
        client: client.clone(),
        url: a.url.clone(),
        tokens: Arc::new(tokens.clone()),
    };

    // Seed: 90 % closed, the rest spread over the open steps (so every worklist has work).
    let started = Instant::now();
    let mut ids = Vec::with_capacity(a.instances);
    let workers = 16usize;
    let mut handles = Vec::new();
    for w in 0..workers {
        let api = api.clone();
        let n = a.instances;
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in (w..n).step_by(workers) {
                let depth = if i % 10 == 0 { (i / 10) % 3 } else { 3 };
                mine.push(api.seed_one(i, depth).await?);
            }
            Ok::<_, String>(mine)
        }));
    }
    for h in handles {
        ids.extend(h.await.map_err(|e| e.to_string())??);
    }
    eprintln!(
        "seeded {} complaints in {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );

    // Ids the pages need: an open task for each worker role, instances to open.
    let xu_tasks = api.call("xu.na", "GET", "/v1/tasks?limit=1", None).await?;
    let task = xu_tasks["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Worker 0 seeded numbers 0, 16, 32…: number 0 is left just started, 16 is closed.
    let instance = ids.first().cloned().unwrap_or_default();
    let closed = ids.get(1).cloned().unwrap_or_default();
    let pages: Vec<(&str, &str, String)> = vec![
        ("worklist", "xu.na", "/tasks".into()),
        (
            "worklist, overdue filter",
            "xu.na",
            "/tasks?state=overdue".into(),
        ),
        ("task page", "xu.na", format!("/tasks/{task}")),
        (
            "instance page",
            "jiang.audit",
            format!("/instances/{instance}"),
        ),
        (
            "instance page (closed)",
            "jiang.audit",
            format!("/instances/{closed}"),
        ),
        ("start list", "xu.na", "/start".into()),
        ("start form", "xu.na", "/start/complaint-handling".into()),
        ("notifications", "xu.na", "/notifications".into()),
        (
            "audit search",
            "jiang.audit",
            "/audit?actor=liu.yang".into(),
        ),
        (
            "verify one history",
            "jiang.audit",
            format!("/audit/verify?instance={instance}"),
        ),
        ("procedures", "qian.li", "/procedures".into()),
        (
            "procedure heat map",
            "qian.li",
            "/procedures/complaint-handling".into(),
        ),
        (
            "KPI report",
            "qian.li",
            "/reports/kpis?procedure=complaint-handling".into(),
        ),
    ];
    let mut cookies = HashMap::new();
    for user in ["xu.na", "jiang.audit", "qian.li"] {
        let token = tokens
            .get(user)
            .ok_or_else(|| format!("no token for {user}"))?;
        cookies.insert(user, sign_in(&client, &a.url, token).await?);
    }
    println!(
        "{:<28} {:>8} {:>9} {:>9} {:>9}",
        "page", "requests", "p50 ms", "p99 ms", "max ms"
    );
    for (name, user, path) in pages {
        let cookie = cookies[user].clone();
        let per = a.requests.div_ceil(a.connections);
        let mut handles = Vec::new();
        for _ in 0..a.connections {
            let (client, url, path, cookie) =
                (client.clone(), a.url.clone(), path.clone(), cookie.clone());
            handles.push(tokio::spawn(async move {
                let mut times = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let res = client
                        .get(format!("{url}{path}"))
                        .header("cookie", &cookie)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = res.status();
                    let _ = res.bytes().await.map_err(|e| e.to_string())?;
                    if status != reqwest::StatusCode::OK {
                        return Err(format!("{path}: {status}"));
                    }
                    times.push(t.elapsed());
                }
                Ok::<_, String>(times)
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.map_err(|e| e.to_string())??);
        }
        all.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<28} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            name,
            all.len(),
            ms(pct(&all, 0.5)),
            ms(pct(&all, 0.99)),
            ms(*all.last().unwrap_or(&Duration::ZERO))
        );
    }
    Ok(())
}
