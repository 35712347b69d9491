//! The `sopflow` commands that run instances from the command line — start, worklist,
//! claim, complete, delegate, cancel, comment, show — on the embedded store in a data
//! directory. The command line's own module: argument handling and printing only; every
//! rule is the engine's. sled lets one process open a store, so these work while the
//! server is stopped.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use serde_json::{Map, Value};
use sopflow::clock::SystemClock;
use sopflow::directory::Directory;
use sopflow::engine::decide::EngineError;
use sopflow::engine::instance::{Actor, Instance};
use sopflow::engine::service::{Engine, ServiceError};
use sopflow::setup;
use sopflow::store::any::AnyStore;

/// Where the data, procedures and people are.
#[derive(clap::Args, Debug, Clone)]
pub struct Places {
    /// Data directory of the embedded store.
    #[arg(long, default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// Directory of procedure files (all are validated and registered).
    #[arg(long, default_value = "procedures", global = true)]
    pub procedures: PathBuf,
    /// The directory file of departments, roles and users.
    #[arg(long, default_value = "org.toml", global = true)]
    pub directory: PathBuf,
    /// Keep instances in PostgreSQL instead of the data directory
    /// (`postgres://USER@HOST/DATABASE`), as `sopflow serve --store` does.
    #[arg(long, env = "SOPFLOW_STORE", hide_env_values = true, global = true)]
    pub store: Option<String>,
}

pub struct Session {
    pub engine: Engine<AnyStore>,
    pub people: Directory,
}

impl Session {
    pub async fn open(p: &Places) -> anyhow::Result<Session> {
        let mut places = setup::Places::new(
            p.data_dir.clone(),
            p.procedures.clone(),
            p.directory.clone(),
        );
        places.store_url = p.store.clone();
        let opened = setup::open(&places, Arc::new(SystemClock)).await?;
        // Deadlines that passed since the last command take effect before this one.
        opened.engine.fire_due().await?;
        Ok(Session {
            engine: opened.engine,
            people: opened.people,
        })
    }

    pub fn actor(&self, id: &str) -> anyhow::Result<Actor> {
        Actor::from_directory(&self.people, id)
            .ok_or_else(|| anyhow!("there is no active user `{id}` in the directory"))
    }

    /// Finds the instance holding an open task.
    pub fn instance_of_task(&self, task: uuid::Uuid) -> anyhow::Result<Instance> {
        match self.engine.task(task)? {
            Some((_, inst)) => Ok(inst),
            None => bail!("there is no open task {task}"),
        }
    }
}

pub fn parse_json_object(text: Option<&str>, what: &str) -> anyhow::Result<Map<String, Value>> {
    match text {
        None => Ok(Map::new()),
        Some(t) => match serde_json::from_str::<Value>(t) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => bail!("{what} must be a JSON object, like '{{\"field\": \"value\"}}'"),
            Err(e) => bail!("{what} is not valid JSON: {e}"),
        },
    }
}

/// A refused command in the words the engine gave, with every form problem listed.
pub fn explain(e: ServiceError) -> anyhow::Error {
    match e {
        ServiceError::Engine(EngineError::InvalidForm(problems)) => {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| {
                    format!(
                        "  - {}: {}",
                        if p.field.is_empty() {
                            "(form)"
                        } else {
                            &p.field
                        },
                        p.message
                    )
                })
                .collect();
            anyhow!("the form is not valid:\n{}", lines.join("\n"))
        }
        other => anyhow!(other),
    }
}

pub fn print_instance(inst: &Instance) {
    println!(
        "instance {} — {} v{} — {}",
        inst.id,
        inst.procedure,
        inst.version,
        inst.status.as_str()
    );
    if let Some(end) = &inst.end_step {
        println!("ended at: {end}");
    }
    for t in inst.tasks.values() {
        let who = match t.holder() {
            Some(h) => format!("with {h}"),
            None => format!("offered to {}", t.roles.join(", ")),
        };
        let due = match t.due {
            Some(d) => format!(
                "  due {} ({})",
                d.format("%Y-%m-%d %H:%M UTC"),
                t.deadline.as_str()
            ),
            None => String::new(),
        };
        println!("open task {}  step `{}`  {who}{due}", t.id, t.step);
    }
}

pub fn print_history(engine: &Engine<AnyStore>, id: uuid::Uuid) -> anyhow::Result<()> {
    for e in engine.history(id)? {
        let who =
            e.by.as_ref()
                .map_or("(engine)".to_string(), |b| match &b.on_behalf_of {
                    Some(o) => format!("{} for {o}", b.user),
                    None => b.user.clone(),
                });
        let kind = serde_json::to_value(&e.kind)?;
        println!(
            "{:>4}  {}  {:<16}  {}",
            e.seq,
            e.at.format("%Y-%m-%d %H:%M:%S"),
            who,
            kind
        );
    }
    Ok(())
}
