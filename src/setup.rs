//! Opening what a sopflow process runs instances on: the directory file, the procedures
//! (every one must validate), the store in the data directory, and an engine over them
//! with the procedures registered. `sopflow serve` and the command line's instance
//! commands both start here, so they refuse the same broken files with the same words.
//! Auditors' commands open an existing store with `open_existing`.
//! It must not print: diagnostics travel in the error, for the caller to show.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock::Clock;
use crate::definition::calendar::Calendar;
use crate::definition::load::{self, Options};
use crate::directory::{self, Directory};
use crate::engine::service::{Engine, ServiceError};
use crate::store::any::AnyStore;
use crate::store::postgres::PgStore;
use crate::store::sled_store::{SledOptions, SledStore};

/// Where the data, procedures and people are.
#[derive(Debug, Clone)]
pub struct Places {
    pub data_dir: PathBuf,
    pub procedures: PathBuf,
    pub directory: PathBuf,
    /// Calendar files (default `calendars/` beside the procedures directory).
    pub calendars: Option<PathBuf>,
    /// The store's page cache, bytes.
    pub cache_bytes: u64,
    /// A PostgreSQL database (`postgres://USER@HOST/DB`) to keep instances in instead of
    /// the data directory.
    pub store_url: Option<String>,
}

/// The schema sopflow's tables live in, in a PostgreSQL database.
pub const PG_SCHEMA: &str = "sopflow";
/// Connections each process keeps to PostgreSQL (each on a thread of its own), unless
/// `SOPFLOW_PG_CONNECTIONS` says otherwise (1–256).
pub const PG_CONNECTIONS: usize = 16;

/// The pool size: `SOPFLOW_PG_CONNECTIONS` if set (a value that is not 1–256 is refused, not
/// silently replaced by the default), else `PG_CONNECTIONS`.
fn pg_connections() -> Result<usize, SetupError> {
    let Some(v) = std::env::var_os("SOPFLOW_PG_CONNECTIONS") else {
        return Ok(PG_CONNECTIONS);
    };
    v.to_str()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=256).contains(n))
        .ok_or_else(|| SetupError::Postgres {
            reason: format!(
                "SOPFLOW_PG_CONNECTIONS is `{}`: give a number of connections from 1 to 256",
                v.to_string_lossy()
            ),
        })
}

/// Opens PostgreSQL at `url`: a database that cannot be reached or holds a newer schema is
/// one sentence, without the password the address may carry.
pub fn open_postgres(url: &str) -> Result<AnyStore, SetupError> {
    PgStore::open(url, PG_SCHEMA, pg_connections()?)
        .map(AnyStore::from)
        .map_err(|e| SetupError::Postgres {
            reason: e.to_string(),
        })
}

impl Places {
    /// The given places with the default calendars directory and page cache.
    pub fn new(data_dir: PathBuf, procedures: PathBuf, directory: PathBuf) -> Places {
        Places {
            data_dir,
            procedures,
            directory,
            calendars: None,
            cache_bytes: SledOptions::default().cache_capacity_bytes,
            store_url: None,
        }
    }
}

/// An engine ready for commands, with the people and calendars it was opened with.
pub struct Opened {
    pub engine: Engine<AnyStore>,
    pub people: Directory,
    pub calendars: Vec<Arc<Calendar>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{report}the directory file {path} has errors; fix them (sopflow validate --directory {path})")]
    Directory { path: String, report: String },
    #[error(
        "{report}the procedures have errors; fix them (sopflow validate) before running instances"
    )]
    Procedures { report: String },
    #[error("the data directory {path} is a file; give --data-dir a directory (it is created if missing)")]
    DataDirIsAFile { path: String },
    #[error("cannot create the data directory {path}: {error}")]
    DataDir { path: String, error: std::io::Error },
    #[error("cannot open the store in {path}: {reason}")]
    Store { path: String, reason: String },
    /// sled's lock is held by another process (after waiting `LOCK_WAIT` for it).
    #[error("the store in {path} is in use by another process (`sopflow serve` or another sopflow command), and only one process can open it at a time: while the server runs, use the HTTP API instead, or stop the server first")]
    StoreInUse { path: String },
    // The engine's sentence is part of this one, not a `source`: printed as a chain
    // (`{:#}`) it would otherwise be said twice.
    #[error("cannot register the procedures: {0}")]
    Register(ServiceError),
    #[error("there is no sopflow store in {path}; give the data directory `sopflow serve` uses (--data-dir)")]
    NoStore { path: String },
    #[error("the store in {path} cannot be read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("cannot open the PostgreSQL store: {reason}")]
    Postgres { reason: String },
}

impl From<ServiceError> for SetupError {
    fn from(e: ServiceError) -> Self {
        SetupError::Register(e)
    }
}

/// Loads the directory and the procedures, opens the store and registers every procedure.
pub async fn open(p: &Places, clock: Arc<dyn Clock>) -> Result<Opened, SetupError> {
    let (people, report) = directory::load(&p.directory);
    let people = people.ok_or_else(|| SetupError::Directory {
        path: p.directory.display().to_string(),
        report: report.render_text(),
    })?;
    let v = load::validate_paths(
        std::slice::from_ref(&p.procedures),
        &Options {
            calendars_dir: p.calendars.clone(),
            registers_dir: None,
            coverage_from: None,
        },
    );
    if v.errors() > 0 {
        return Err(SetupError::Procedures {
            report: v
                .reports
                .iter()
                .filter(|r| r.errors() > 0)
                .map(|r| r.render_text())
                .collect(),
        });
    }
    let store = match &p.store_url {
        Some(url) => open_postgres(url)?,
        None => open_sled(p)?,
    };
    let engine = Engine::open(Arc::new(store), clock)?;
    engine.set_calendars(&v.calendars);
    engine.set_roster(Arc::new(people.clone()));
    engine.set_registers(&v.registers)?;
    engine.register(&v.valid).await?;
    // A procedure registered before whose file is gone is retired: the files say what
    // new instances may start on.
    for id in engine.procedure_ids() {
        if !engine.is_retired(&id) && !v.valid.iter().any(|p| p.procedure.id == id) {
            engine
                .retire(&id, &p.procedures.display().to_string(), None)
                .await?;
        }
    }
    Ok(Opened {
        engine,
        people,
        calendars: v.calendars,
    })
}

fn open_sled(p: &Places) -> Result<AnyStore, SetupError> {
    if p.data_dir.exists() && !p.data_dir.is_dir() {
        return Err(SetupError::DataDirIsAFile {
            path: p.data_dir.display().to_string(),
        });
    }
    std::fs::create_dir_all(&p.data_dir).map_err(|error| SetupError::DataDir {
        path: p.data_dir.display().to_string(),
        error,
    })?;
    let opts = SledOptions {
        cache_capacity_bytes: p.cache_bytes,
        ..SledOptions::default()
    };
    let store = SledStore::open(&p.data_dir, opts).map_err(|e| store_error(&p.data_dir, &e))?;
    Ok(store.into())
}

/// Opens the store of an existing data directory for an auditor's command (verify, audit,
/// export, report): no procedure or directory files are read — the procedures are the
/// versions stored with the instances, which are what the instances ran on. Refuses a
/// directory that holds no store instead of creating an empty one.
pub fn open_existing(
    data_dir: &Path,
    clock: Arc<dyn Clock>,
) -> Result<Engine<AnyStore>, SetupError> {
    // sled keeps its data in a file named `db`; without it there is nothing to audit.
    if !data_dir.join("db").is_file() {
        return Err(SetupError::NoStore {
            path: data_dir.display().to_string(),
        });
    }
    let store =
        SledStore::open(data_dir, SledOptions::default()).map_err(|e| store_error(data_dir, &e))?;
    Engine::open(Arc::new(store.into()), clock).map_err(|e| SetupError::Unreadable {
        path: data_dir.display().to_string(),
        reason: e.to_string(),
    })
}

/// A store named the way `sopflow store copy` takes it: `postgres://…` (or
/// `postgresql://…`) is a database, anything else a data directory, which must already hold
/// a store unless `create`.
pub fn open_store_at(spec: &str, create: bool) -> Result<AnyStore, SetupError> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return open_postgres(spec);
    }
    let dir = PathBuf::from(spec);
    if !create && !dir.join("db").is_file() {
        return Err(SetupError::NoStore { path: spec.into() });
    }
    let mut p = Places::new(dir, PathBuf::new(), PathBuf::new());
    p.store_url = None;
    open_sled(&p)
}

/// A store for `sopflow store upgrade`: opened although its format is the previous one.
/// A data directory must already hold a store.
pub fn open_for_upgrade(spec: &str) -> Result<AnyStore, SetupError> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return PgStore::open_upgrading(spec, PG_SCHEMA)
            .map(AnyStore::from)
            .map_err(|e| SetupError::Postgres {
                reason: e.to_string(),
            });
    }
    let dir = PathBuf::from(spec);
    if !dir.join("db").is_file() {
        return Err(SetupError::NoStore { path: spec.into() });
    }
    let opts = SledOptions {
        upgrading: true,
        ..SledOptions::default()
    };
    let store = SledStore::open(&dir, opts).map_err(|e| store_error(&dir, &e))?;
    Ok(store.into())
}

/// `open_existing` for a PostgreSQL store.
pub fn open_existing_postgres(
    url: &str,
    clock: Arc<dyn Clock>,
) -> Result<Engine<AnyStore>, SetupError> {
    let store = open_postgres(url)?;
    Engine::open(Arc::new(store), clock).map_err(|e| SetupError::Postgres {
        reason: e.to_string(),
    })
}

/// Why a store did not open. sled says only "could not acquire lock" with an OS error in
/// Rust's debug form when another process holds the store; that becomes one sentence
/// saying who probably holds it and what to do.
fn store_error(dir: &Path, e: &crate::store::StoreError) -> SetupError {
    let path = dir.display().to_string();
    let reason = e.to_string();
    if reason.contains("could not acquire lock") {
        SetupError::StoreInUse { path }
    } else {
        SetupError::Store { path, reason }
    }
}
