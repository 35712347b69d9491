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
use crate::scheduler::Scheduler;
use crate::setup::{self, Opened, SetupError};

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
    /// PostgreSQL instead of the data directory's sled store.
    pub store_url: Option<String>,
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
    /// Watch the procedure, calendar and directory files and apply changes while serving.
    pub watch: bool,
    /// Webhooks, mail and links in messages.
    pub outbox: OutboxConfig,
}

/// How the server reaches people and systems (`crate::outbox`).
#[derive(Debug, Clone, Default)]
pub struct OutboxConfig {
    /// The webhook subscriptions file.
    pub webhooks: Option<PathBuf>,
    /// The web app's address as people reach it, for links in messages.
    pub public_url: Option<String>,
    /// The SMTP server's address (`SOPFLOW_SMTP_URL`; may carry credentials, never logged).
    pub smtp_url: Option<String>,
    /// The sender address of mail.
    pub mail_from: Option<String>,
}

impl OutboxConfig {
    fn mailer(&self) -> Result<Option<crate::outbox::mail::Mailer>, ServeError> {
        let Some(url) = &self.smtp_url else {
            return Ok(None);
        };
        let from = self
            .mail_from
            .as_deref()
            .unwrap_or("sopflow <sopflow@localhost>");
        crate::outbox::mail::Mailer::new(url, from)
            .map(Some)
            .map_err(ServeError::Mail)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    // The inner error is part of the sentence, not a `source`: printed as a chain it
    // would be said twice. The same for `Bind`, which would say "Address already in use"
    // twice.
    #[error("cannot set up demo tokens: {0}")]
    Tokens(DemoTokenError),
    #[error("cannot listen on {addr}: {error} (is another server using the port? pick another with --listen)")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("the webhooks file has errors; nothing was started:\n{0}")]
    Webhooks(String),
    #[error("mail cannot be sent as configured: {0}")]
    Mail(String),
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
    #[error("cannot read the procedure files again: {0}")]
    Reload(crate::reload::ReloadError),
    #[error(
        "cannot watch the procedure files ({0}); start with --no-watch to serve without reloading"
    )]
    Watch(notify::Error),
}

impl From<DemoTokenError> for ServeError {
    fn from(e: DemoTokenError) -> Self {
        ServeError::Tokens(e)
    }
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
    /// Where instances are kept, for the start line (no password).
    pub store_description: String,
    listener: TcpListener,
    limits: Limits,
    /// Sends mail, when a mail server is configured.
    mailer: Option<crate::outbox::mail::Mailer>,
    /// The file watcher, started before the first scan of the files so that no change
    /// made after `bind` returns is missed; dropping it stops the watching.
    watching: Option<crate::reload::Watching>,
}

/// Loads everything and binds the listener. Nothing is served yet.
pub async fn bind(cfg: &ServeConfig) -> Result<Bound, ServeError> {
    let (clock, manual): (Arc<dyn Clock>, Option<ManualClock>) = match cfg.clock {
        ClockChoice::System => (Arc::new(SystemClock), None),
        ClockChoice::Manual(start) => {
            let m = ManualClock::new(start.unwrap_or_else(|| SystemClock.now()));
            (Arc::new(m.clone()), Some(m))
        }
    };
    let places = setup::Places {
        data_dir: cfg.data_dir.clone(),
        procedures: cfg.procedures.clone(),
        directory: cfg.directory.clone(),
        calendars: cfg.calendars.clone(),
        cache_bytes: cfg.cache_bytes,
        store_url: cfg.store_url.clone(),
    };
    let Opened {
        engine,
        people,
        calendars,
    } = setup::open(&places, clock).await?;
    let store_description = match &**engine.store() {
        crate::store::any::AnyStore::Postgres(pg) => format!("PostgreSQL {}", pg.describe()),
        crate::store::any::AnyStore::Sled(_) => cfg.data_dir.display().to_string(),
        crate::store::any::AnyStore::Memory(_) => "memory (nothing kept)".to_string(),
    };
    let calendar = calendars
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
    let tokens = Tokens::new(&extra);
    // A broken subscriptions file stops the start, with every problem located, like a
    // broken procedure; on a reload it only keeps the subscriptions in force.
    if let Some(path) = &cfg.outbox.webhooks {
        let (hooks, report) = crate::outbox::hooks::load(path, &|v| std::env::var(v).ok());
        if hooks.is_none() {
            return Err(ServeError::Webhooks(report.render_text()));
        }
    }
    let mailer = cfg.outbox.mailer()?;
    let engine = Arc::new(engine);
    let directory: crate::reload::SharedDirectory =
        Arc::new(std::sync::RwLock::new(Arc::new(people)));
    let reloader = Arc::new(
        crate::reload::Reloader::new(
            engine.clone(),
            crate::reload::Sources {
                procedures: cfg.procedures.clone(),
                calendars: cfg.calendars.clone(),
                directory: cfg.directory.clone(),
                webhooks: cfg.outbox.webhooks.clone(),
            },
            directory.clone(),
        )
        .with_routes(crate::reload::RouteSettings {
            public_url: cfg.outbox.public_url.clone(),
            mail: mailer.is_some(),
        }),
    );
    // Watching starts before the scan below: a file saved while the server starts is then
    // either in that scan or seen as a change after it, never lost in between.
    let watching = if cfg.watch {
        Some(crate::reload::watch(reloader.clone()).map_err(ServeError::Watch)?)
    } else {
        None
    };
    // Notes the files as setup just loaded them, so the first change is told apart.
    reloader.rescan().await.map_err(ServeError::Reload)?;
    // The subscriptions made over the API route from the first command on.
    if let Err(e) = crate::outbox::stored::refresh(&engine) {
        tracing::warn!(error = %e, "the stored webhook subscriptions could not be read; trying again shortly");
    }
    let state = Arc::new(AppState {
        engine,
        directory,
        reloader: Some(reloader),
        tokens,
        manual_clock: manual,
        clock_moves: tokio::sync::Mutex::new(()),
        calendar,
        metrics: metrics_handle(),
        sessions: Default::default(),
        closing: tokio::sync::watch::Sender::new(false),
    });
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|error| ServeError::Bind {
            addr: cfg.listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| ServeError::Bind {
        addr: cfg.listen,
        error,
    })?;
    Ok(Bound {
        addr,
        state,
        issued_tokens: issued,
        tokens_file,
        store_description,
        listener,
        limits: cfg.limits,
        mailer,
        watching,
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
        let sender = crate::outbox::sender::Sender::spawn(self.state.engine.clone(), self.mailer);
        // Kept until the server stops: dropping it stops the watching.
        let _watching = self.watching;
        let app = router(self.state.clone(), self.limits);
        let state = self.state.clone();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Event streams never finish on their own: told now, they end, and the
                // requests in flight are what the shutdown waits for.
                state.closing.send_replace(true);
            })
            .await;
        scheduler.stop().await;
        sender.stop().await;
        served.map_err(ServeError::Serve)
    }
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: the server says it is serving (and fires
/// overdue timers) before `serve` polls it, and a signal in that gap would otherwise kill
/// the process the default way instead of stopping it cleanly. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signalled = {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn wait(s: Option<Signal>) {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
    };
    #[cfg(not(unix))]
    let signalled = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    async move {
        signalled.await;
        tracing::info!("shutting down: finishing requests in flight");
    }
}
