//! Starting and stopping `sopflow serve`: load the directory and the procedures (refusing
//! to start on any error, with the diagnostics), open the store, register procedures, set
//! up demo tokens, bind the listener, run the deadline scheduler beside the API, and on a
//! shutdown signal stop accepting, finish the requests in flight, stop the scheduler and
//! let the store flush. Every way start-up can fail is a `ServeError` with a sentence
//! saying what to do; it must not panic.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;

use super::auth::{ensure_demo_tokens, DemoTokenError, Tokens};
use super::{metrics_handle, router, AppState, Limits};
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::definition::calendar::Calendar;
use crate::definition::load::{self, Options};
use crate::directory;
use crate::engine::service::{Engine, ServiceError};
use crate::scheduler::Scheduler;
use crate::store::sled_store::{SledOptions, SledStore};

/// Which clock the server runs on.
#[derive(Debug, Clone)]
pub enum ClockChoice {
    System,
    /// Starts at the given instant (now if `None`) and moves only through
    /// `POST /v1/admin/clock/advance`.
    Manual(Option<DateTime<Utc>>),
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub procedures: PathBuf,
    pub directory: PathBuf,
    /// Calendar files (default `calendars/` beside the procedures directory).
    pub calendars: Option<PathBuf>,
    /// The calendar id a clock advance in working days counts on.
    pub calendar: String,
    pub listen: SocketAddr,
    pub clock: ClockChoice,
    pub limits: Limits,
    /// Give users without a token hash a demo token (written to the data directory).
    pub demo_tokens: bool,
    /// The store's page cache, bytes.
    pub cache_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{report}the directory file {path} has errors; fix them (sopflow validate --directory {path})")]
    Directory { path: String, report: String },
    #[error("{report}the procedures have errors; fix them (sopflow validate) before serving")]
    Procedures { report: String },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the store in {path}: {reason}")]
    Store { path: String, reason: String },
    #[error("cannot register the procedures: {0}")]
    Register(ServiceError),
    #[error("cannot set up demo tokens: {0}")]
    Tokens(#[from] DemoTokenError),
    #[error("cannot listen on {addr}: {source} (is another server using the port? pick another with --listen)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// A server that is listening but not yet serving.
pub struct Bound {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    /// Demo tokens issued on this start (user, token); empty when the data directory
    /// already had them.
    pub issued_tokens: Vec<(String, String)>,
    /// Where the demo tokens are written.
    pub tokens_file: PathBuf,
    listener: TcpListener,
    limits: Limits,
}

/// Loads everything and binds the listener. Nothing is served yet.
pub async fn bind(cfg: &ServeConfig) -> Result<Bound, ServeError> {
    let (people, report) = directory::load(&cfg.directory);
    let people = people.ok_or_else(|| ServeError::Directory {
        path: cfg.directory.display().to_string(),
        report: report.render_text(),
    })?;
    let v = load::validate_paths(
        std::slice::from_ref(&cfg.procedures),
        &Options {
            calendars_dir: cfg.calendars.clone(),
        },
    );
    if v.errors() > 0 {
        return Err(ServeError::Procedures {
            report: v
                .reports
                .iter()
                .filter(|r| r.errors() > 0)
                .map(|r| r.render_text())
                .collect(),
        });
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ServeError::DataDir {
        path: cfg.data_dir.display().to_string(),
        source,
    })?;
    let opts = SledOptions {
        cache_capacity_bytes: cfg.cache_bytes,
        ..SledOptions::default()
    };
    let store = SledStore::open(&cfg.data_dir, opts).map_err(|e| ServeError::Store {
        path: cfg.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let (clock, manual): (Arc<dyn Clock>, Option<ManualClock>) = match cfg.clock {
        ClockChoice::System => (Arc::new(SystemClock), None),
        ClockChoice::Manual(start) => {
            let m = ManualClock::new(start.unwrap_or_else(|| SystemClock.now()));
            (Arc::new(m.clone()), Some(m))
        }
    };
    let engine = Engine::open(Arc::new(store), clock).map_err(ServeError::Register)?;
    engine.set_calendars(&v.calendars);
    engine
        .register(&v.valid)
        .await
        .map_err(ServeError::Register)?;
    let calendar = v
        .calendars
        .iter()
        .find(|c| c.id() == cfg.calendar)
        .cloned()
        .unwrap_or_else(|| Arc::new(Calendar::utc()));
    let (extra, issued, tokens_file) = if cfg.demo_tokens {
        let d = ensure_demo_tokens(&cfg.data_dir, &people)?;
        (d.hashes, d.issued, d.file)
    } else {
        (
            Default::default(),
            Vec::new(),
            cfg.data_dir.join("demo-tokens.txt"),
        )
    };
    let tokens = Tokens::new(&people, &extra);
    let state = Arc::new(AppState {
        engine: Arc::new(engine),
        calendar_ids: super::api::calendar_ids(&v.calendars),
        people: Arc::new(people),
        tokens,
        manual_clock: manual,
        calendar,
        metrics: metrics_handle(),
    });
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.listen,
        source,
    })?;
    Ok(Bound {
        addr,
        state,
        issued_tokens: issued,
        tokens_file,
        listener,
        limits: cfg.limits,
    })
}

impl Bound {
    /// Serves until `shutdown` resolves, then stops accepting, lets requests in flight
    /// finish, stops the scheduler and returns once every acknowledged commit is durable
    /// (each was flushed before it was acknowledged).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        // Deadlines that passed while the server was down fire before the first request.
        if let Err(e) = self.state.engine.fire_due().await {
            tracing::warn!(error = %e, "firing overdue timers at start failed; the scheduler retries");
        }
        let scheduler = Scheduler::spawn(self.state.engine.clone());
        let app = router(self.state.clone(), self.limits);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        scheduler.stop().await;
        served.map_err(ServeError::Serve)
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
