//! Measures a migration across a real version change on a durable store: N complaint
//! instances started through the engine (each waiting at `register`), version 3 of
//! complaint-handling registered (the shipped text with `register` renamed), then the
//! dry run and the apply of a plan mapping the renamed step, each timed.
//!
//! ```text
//! cargo run --release --example migrate -- --instances 2000
//! ```
//!
//! The store is sled in a temporary directory with `fsync` on (acknowledged means on
//! disk), so apply's figure includes one durable commit per instance, as in production.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use sopflow::clock::SystemClock;
use sopflow::definition::load::{self, Options, ValidProcedure};
use sopflow::engine::instance::Actor;
use sopflow::engine::migrate::MigrationPlan;
use sopflow::engine::service::Engine;
use sopflow::store::sled_store::{SledOptions, SledStore};

fn person(id: &str, roles: &[&str]) -> Actor {
    Actor {
        id: id.into(),
        name: id.into(),
        department: "after_sales".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        level: 3,
        within: vec![],
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--instances")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), SledOptions::default())?;
    let engine = Arc::new(Engine::open(Arc::new(store), Arc::new(SystemClock))?);
    let v = load::validate_paths(&["procedures".into()], &Options::default());
    engine.set_calendars(&v.calendars);
    engine.set_registers(&v.registers)?;
    engine.register(&v.valid).await?;

    let starter = person("xu.na", &["follow_up"]);
    let t = Instant::now();
    let mut started = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (e, who) = (engine.clone(), starter.clone());
        started.spawn(async move {
            let data = json!({ "customer": "Hengxin", "contact": "Li" });
            let data = data.as_object().cloned().unwrap_or_default();
            e.start("complaint-handling", data, Some(&who))
                .await
                .map(|_| ())
        });
        // At most 64 in flight, so group commit batches them as a busy server would.
        while started.len() >= 64 {
            if let Some(r) = started.join_next().await {
                r??;
            }
        }
    }
    while let Some(r) = started.join_next().await {
        r??;
    }
    println!("started {n} instances in {:.2?}", t.elapsed());

    let text = std::fs::read_to_string("procedures/complaint-handling.toml")?;
    let v3 = text
        .replacen("\nversion = 2\n", "\nversion = 3\n", 1)
        .replace("[steps.register", "[steps.register_complaint")
        .replace("start = \"register\"", "start = \"register_complaint\"");
    let mut def = load::parse_procedure(&v3).ok_or("v3 parses")?;
    def.version = 3;
    engine
        .register(&[ValidProcedure {
            path: "complaint-handling.toml".into(),
            procedure: def,
            hash: load::hash_hex(v3.as_bytes()),
            source: v3.into(),
        }])
        .await?;
    let plan = MigrationPlan {
        name: "bench".into(),
        procedure: "complaint-handling".into(),
        from_version: 2,
        to_version: 3,
        steps: [("register".to_string(), "register_complaint".to_string())].into(),
        recompute_deadlines: false,
        instances: Vec::new(),
        reason: "benchmark".into(),
    };
    let admin = person("root", &["admin"]);
    let t = Instant::now();
    let dry = engine.migrate(&plan, &admin, false).await?;
    let dry_time = t.elapsed();
    let t = Instant::now();
    let done = engine.migrate(&plan, &admin, true).await?;
    let apply_time = t.elapsed();
    let migrated = done.iter().filter(|o| o.result == "migrated").count();
    println!(
        "dry run: {} instances in {:.2?} ({:.0}/s); apply: {migrated} migrated in {:.2?} ({:.0}/s), one durable commit each",
        dry.len(),
        dry_time,
        dry.len() as f64 / dry_time.as_secs_f64(),
        apply_time,
        migrated as f64 / apply_time.as_secs_f64()
    );
    Ok(())
}
