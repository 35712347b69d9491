//! Connections to PostgreSQL, each on a thread of its own, shared by the store's callers
//! through one job queue. The `postgres` client blocks on a runtime of its own, which may
//! not run inside Tokio's; on plain threads it may, and the async store calls wait on a
//! oneshot instead of blocking a Tokio worker.
//!
//! A connection found broken after a job is dropped and opened again for the next one, so a
//! restarted database is picked up without restarting sopflow; the job that met the break
//! fails with `StoreError::Io`, which the API answers 503. This module must not log or
//! return the connection string (it may hold a password): `describe` gives user, host and
//! database only.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::{Client, NoTls, Statement};

use super::StoreError;

/// How long opening a connection may take before the request fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection idle longer than this is checked before a write is sent on it.
const IDLE_BEFORE_CHECK: Duration = Duration::from_secs(1);
/// How long the liveness check before a write may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how to connect.
pub(crate) struct PgConfig {
    config: postgres::Config,
    schema: String,
    description: String,
}

impl PgConfig {
    pub(crate) fn new(url: &str, schema: &str) -> Result<Self, StoreError> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            StoreError::Invalid(format!(
                "the PostgreSQL address could not be read ({e}); write postgres://USER@HOST/DATABASE"
            ))
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("sopflow");
        let ok = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !schema.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(StoreError::Invalid(format!(
                "`{schema}` is not a schema name sopflow uses: lower-case letters, digits and _, \
                 at most 63, not starting with a digit"
            )));
        }
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(h) => h.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let description = format!(
            "{}@{}{}/{} (schema {schema})",
            config.get_user().unwrap_or("?"),
            hosts.join(","),
            if ports.is_empty() {
                String::new()
            } else {
                format!(":{}", ports.join(","))
            },
            config.get_dbname().unwrap_or("?"),
        );
        Ok(Self {
            config,
            schema: schema.to_string(),
            description,
        })
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let mut c = self.config.connect(NoTls).map_err(|e| {
            // The client's sentence ("error connecting to server") leaves out why; its source
            // says it ("Connection refused").
            let why = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            StoreError::Unreachable(format!(
                "cannot reach PostgreSQL at {}: {e}{why}",
                self.description
            ))
        })?;
        // Acknowledged means committed: whatever the server's default, wait for the commit
        // to be flushed (and, where synchronous replication is configured, replicated).
        c.batch_execute(&format!(
            "SET search_path TO {}; SET synchronous_commit TO on",
            self.schema
        ))
        .map_err(super::postgres::pg)?;
        Ok(c)
    }
}

/// The statements every request uses, prepared once per connection: a query given as text
/// costs a second round trip to prepare it each time.
pub(crate) struct Stmts {
    pub get: Statement,
    pub scan_from: Statement,
    pub scan_after: Statement,
    pub scan_before: Statement,
    pub upsert: Statement,
    pub delete: Statement,
    pub lock: Statement,
    pub claim: Statement,
    pub unclaim: Statement,
}

impl Stmts {
    fn prepare(c: &mut Client) -> Result<Stmts, StoreError> {
        let mut p = |sql: &str| c.prepare(sql).map_err(super::postgres::pg);
        Ok(Stmts {
            get: p("SELECT value FROM kv WHERE tree = $1 AND key = $2")?,
            scan_from: p(
                "SELECT key, value FROM kv WHERE tree = $1 AND key >= $2 ORDER BY key LIMIT $3",
            )?,
            scan_after: p(
                "SELECT key, value FROM kv WHERE tree = $1 AND key > $2 ORDER BY key LIMIT $3",
            )?,
            scan_before: p(
                "SELECT key, value FROM kv WHERE tree = $1 AND key < $2 ORDER BY key DESC LIMIT $3",
            )?,
            upsert: p("INSERT INTO kv (tree, key, value)
                 SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bytea[])
                 ON CONFLICT (tree, key) DO UPDATE SET value = excluded.value")?,
            delete: p(
                "DELETE FROM kv USING unnest($1::smallint[], $2::bytea[]) AS d(tree, key)
                 WHERE kv.tree = d.tree AND kv.key = d.key",
            )?,
            lock: p("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k")?,
            claim: p(super::pg_commit::CLAIM_SQL)?,
            unclaim: p("DELETE FROM timer_claims WHERE instance = ANY ($1)")?,
        })
    }
}

/// One open connection and its prepared statements (made on first use: the tables may not
/// exist before the migrations ran).
pub(crate) struct Conn {
    pub client: Client,
    stmts: Option<Stmts>,
}

impl Conn {
    /// The client and the statements, apart, so a transaction on the one can use the other.
    pub(crate) fn parts(&mut self) -> Result<(&mut Client, &Stmts), StoreError> {
        if self.stmts.is_none() {
            self.stmts = Some(Stmts::prepare(&mut self.client)?);
        }
        match &self.stmts {
            Some(s) => Ok((&mut self.client, s)),
            None => Err(StoreError::Io("statements not prepared".into())),
        }
    }
}

type Job = Box<dyn FnOnce(&mut Slot) + Send>;

/// One worker's connection, opened when first needed and again after it broke.
struct Slot {
    config: Arc<PgConfig>,
    conn: Option<Conn>,
    /// When the connection last answered: one busy a moment ago needs no liveness check.
    used: std::time::Instant,
}

impl Slot {
    /// The connection; with `check` and idle a while, first asked whether it still works
    /// (one round trip), so a write is not sent down a connection the database dropped while
    /// it was idle.
    fn conn(&mut self, check: bool) -> Result<&mut Conn, StoreError> {
        let idle = self.used.elapsed() > IDLE_BEFORE_CHECK;
        if let (true, true, Some(c)) = (check, idle, self.conn.as_mut()) {
            if c.client.is_valid(CHECK_TIMEOUT).is_err() {
                self.conn = None;
            }
        }
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.conn = None;
            self.conn = Some(Conn {
                client: self.config.connect()?,
                stmts: None,
            });
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Io("no PostgreSQL connection".into()))
    }
}

pub(crate) struct Pool {
    jobs: Sender<Job>,
    config: Arc<PgConfig>,
}

impl Pool {
    pub(crate) fn start(config: PgConfig, connections: usize) -> Result<Self, StoreError> {
        let config = Arc::new(config);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..connections {
            let mut slot = Slot {
                config: config.clone(),
                conn: None,
                used: std::time::Instant::now(),
            };
            let queue: Arc<Mutex<Receiver<Job>>> = queue.clone();
            std::thread::Builder::new()
                .name(format!("sopflow-pg-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting; a job runs without it.
                    let job = {
                        let q = queue.lock().unwrap_or_else(|p| p.into_inner());
                        q.recv()
                    };
                    match job {
                        // A job that panics (a row of an unexpected shape) must not take the
                        // worker with it, or the pool would shrink to nothing: its caller
                        // hears an error (the reply is dropped) and the connection, whose
                        // state is unknown, is opened afresh.
                        Ok(job) => {
                            let ran =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    job(&mut slot)
                                }));
                            if ran.is_err() {
                                slot.conn = None;
                            }
                        }
                        Err(_) => return, // the store was dropped
                    }
                })
                .map_err(|e| StoreError::Io(format!("cannot start a connection thread: {e}")))?;
        }
        Ok(Self { jobs, config })
    }

    pub(crate) fn describe(&self) -> String {
        self.config.description.clone()
    }

    pub(crate) fn schema(&self) -> &str {
        &self.config.schema
    }

    /// Something that sends `NOTIFY` on `channel` soon after it is told to, on a connection
    /// of its own thread: told many times within `ANNOUNCE_EVERY`, it notifies once.
    pub(crate) fn announcer(&self, channel: &str) -> Announcer {
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let config = self.config.clone();
        let channel = channel.to_string();
        side_thread("sopflow-pg-announce", move || {
            announce_loop(&config, &channel, &rx)
        });
        Announcer(tx)
    }

    /// Listens on `channel` on a connection of its own thread and wakes the returned
    /// `Notify` at each notification — and after each reconnection, since notifications sent
    /// while it was away are lost. The thread ends soon after the last `Notify` is dropped.
    pub(crate) fn listen(&self, channel: &str) -> Arc<tokio::sync::Notify> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let weak = Arc::downgrade(&wake);
        let config = self.config.clone();
        let channel = channel.to_string();
        side_thread("sopflow-pg-listen", move || {
            listen_loop(&config, &channel, &weak)
        });
        wake
    }

    fn job<T: Send + 'static>(
        check: bool,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
        reply: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Job {
        Box::new(move |slot: &mut Slot| {
            let r = slot.conn(check).and_then(f);
            slot.used = std::time::Instant::now();
            // A connection that met the database going away is not used again.
            if matches!(r, Err(StoreError::Unreachable(_)))
                || slot.conn.as_ref().is_some_and(|c| c.client.is_closed())
            {
                slot.conn = None;
            }
            reply(r);
        })
    }

    fn stopped() -> StoreError {
        StoreError::Io("the PostgreSQL connection threads stopped".into())
    }

    /// Runs `f` on a connection (checked first with `check`) and waits for it, blocking
    /// this thread (a Tokio worker hands its other tasks to another thread first).
    pub(crate) fn run<T: Send + 'static>(
        &self,
        check: bool,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Self::job(check, f, move |r| {
                let _ = tx.send(r);
            }))
            .map_err(|_| Self::stopped())?;
        wait_off_runtime(|| rx.recv()).map_err(|_| Self::stopped())?
    }

    /// Runs a write on a connection checked first; the caller's task waits without
    /// blocking its thread. Not tried again: whether a commit that lost its connection
    /// was applied is not known, and the caller's retry re-decides on fresh state.
    pub(crate) async fn run_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Self::job(true, f, move |r| {
                let _ = tx.send(r);
            }))
            .map_err(|_| Self::stopped())?;
        rx.await.map_err(|_| Self::stopped())?
    }
}

/// Waits in `f`. The `Store` reads are synchronous; called on a worker of a multi-thread
/// Tokio runtime, a round trip to the database would stall every task queued on that
/// worker (two workers on two cores: two reads in flight for the whole server), so the
/// worker first hands its queue to another thread. On a current-thread runtime (tests) or
/// off any runtime it just waits.
fn wait_off_runtime<T>(f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// How long the listener waits for a notification before checking whether it is still
/// wanted, and waits before reconnecting.
const LISTEN_TICK: Duration = Duration::from_secs(2);

fn listen_loop(config: &PgConfig, channel: &str, wake: &std::sync::Weak<tokio::sync::Notify>) {
    use postgres::fallible_iterator::FallibleIterator;
    let mut warned = false;
    while wake.strong_count() > 0 {
        let mut client = match config.connect().and_then(|mut c| {
            c.batch_execute(&format!("LISTEN \"{channel}\""))
                .map_err(super::postgres::pg)?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "listening for timers armed by other nodes failed; trying again");
                    warned = true;
                }
                std::thread::sleep(LISTEN_TICK);
                continue;
            }
        };
        warned = false;
        // Anything may have been armed while no connection was listening.
        let mut news = true;
        loop {
            if news {
                match wake.upgrade() {
                    Some(w) => w.notify_one(),
                    None => return,
                }
            }
            let got = client
                .notifications()
                .timeout_iter(LISTEN_TICK)
                .next()
                .map(|n| n.is_some());
            match got {
                Ok(true) => news = true,
                Ok(false) if !client.is_closed() && wake.strong_count() > 0 => news = false,
                Ok(false) if !client.is_closed() => return,
                _ => break, // the connection is gone: open another
            }
        }
        std::thread::sleep(LISTEN_TICK);
    }
}

/// At most one announcement per this long: other nodes' schedulers only need to look
/// again, not once per commit (a `NOTIFY` takes a database-wide lock at commit).
const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);

/// Tells other nodes that timers were armed (see `Pool::announcer`).
pub(crate) struct Announcer(mpsc::SyncSender<()>);

impl Announcer {
    pub(crate) fn announce(&self) {
        // Full: an announcement is already on its way, and covers this one.
        let _ = self.0.try_send(());
    }
}

fn announce_loop(config: &PgConfig, channel: &str, rx: &Receiver<()>) {
    let mut conn: Option<Client> = None;
    let mut warned = false;
    // Ends when the store (the sender) is dropped.
    while rx.recv().is_ok() {
        std::thread::sleep(ANNOUNCE_EVERY);
        while rx.try_recv().is_ok() {}
        let sent = match conn.take() {
            Some(c) => Ok(c),
            None => config.connect(),
        }
        .and_then(|mut c| {
            c.batch_execute(&format!("NOTIFY \"{channel}\""))
                .map_err(super::postgres::pg)?;
            Ok(c)
        });
        match sent {
            Ok(c) => {
                conn = Some(c);
                warned = false;
            }
            // Lost: the others' schedulers still poll, and the next announcement may pass.
            Err(e) if !warned => {
                tracing::warn!(error = %e, "telling other nodes of armed timers failed");
                warned = true;
            }
            Err(_) => {}
        }
    }
}

/// Starts a thread that only speeds things up (announcing, listening): without it the
/// schedulers still poll, so failing to start one is worth a warning, not an error.
fn side_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        tracing::warn!(error = %e, thread = name, "cannot start a PostgreSQL helper thread; schedulers will rely on polling");
    }
}
