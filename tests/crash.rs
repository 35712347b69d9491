//! The crash tests: `sopflow serve` killed with SIGKILL under load loses no acknowledged
//! command, applies none twice, fires no deadline timer twice, and reopens — alone on sled
//! (`kill_9_under_load_…`), and as one of two nodes on one PostgreSQL database, which is
//! also restarted under load (`two_nodes_on_postgresql_…`).
//!
//! # One server on sled
//!
//! Each round runs the real binary (`CARGO_BIN_EXE_sopflow`) on one data directory shared by
//! every round, on the manual clock:
//!
//! 1. start the server, read its address from stdout and the demo tokens from
//!    `DATA/demo-tokens.txt` (issued on the first start only, so kept across rounds);
//! 2. eight clients start complaints (as xu.na, each start with an `Idempotency-Key` and a
//!    customer named after it) and complete register (xu.na),
//!    resolve_general (liu.yang) and follow_up_visit (xu.na) — claiming half the tasks first
//!    — stopping at a random step so
//!    that deadlines stay open; one client also moves the clock by 25h now and then, so the
//!    register deadline's reminder and breaches (and follow_up_visit's) fire under load.
//!    qian.li cancels a third of the complaints left open. Every 2xx answer is recorded: the
//!    instance started, the task claimed or completed, the instance cancelled;
//! 3. after a random delay (seeded) the server gets SIGKILL, in the middle of whatever it
//!    was doing: commits queued for the group-commit writer, a flush, a timer firing;
//! 4. the server restarts on the same directory (its manual clock at the latest instant it
//!    may have reached) and, through the API as it.admin and jiang.audit:
//!    - `GET /v1/audit/verify` is intact, before and after the checks;
//!    - every start the kill left unanswered is sent again with its key and must be
//!      answered (with the first attempt's instance when that one was committed); then no
//!      client-started instance may exist whose start was not acknowledged — each exactly
//!      once — unless its key had expired (24 h of the clock, which a cut-off 25 h clock move
//!      can pass) when it was sent again: then the retry's later start is the acknowledged one;
//!    - every acknowledged start (of this and every earlier round) is listed, and every
//!      acknowledged completion and claim is exactly once in its instance's history (a claim
//!      by its user), and every acknowledged cancellation is its instance's last event;
//!    - no task is completed twice in any history; every history is numbered 1..n;
//!    - the clock is moved by 25h once more, then for every timer a `task_opened` armed:
//!      it fired at most once (`deadline_reminded` / `deadline_breached` carrying its id,
//!      of its kind), never before it was due nor after its task was completed, and
//!      exactly once if it is due and its task is still open — whether the kill came
//!      before, during or after its firing;
//! 5. the server is stopped with SIGTERM (it must exit 0) and the store is opened in-process
//!    (`sopflow::setup::open_existing`): it lists the same instances, and every instance's
//!    snapshot equals the fold of its history.
//!
//! A request that fails because of the kill is not acknowledged: it may or may not have
//! been applied, and the checks accept both — but never twice. Any non-2xx answer during
//! the load is a failure: the clients only do what the procedure allows. (This caught a
//! clock move answered 409 when a completion ended an instance whose timer the move was
//! about to fire; `fire_due` now drops such a timer as moot.)
//!
//! # Two nodes on PostgreSQL
//!
//! Runs when `SOPFLOW_TEST_POSTGRES` names a database (`postgres://postgres@127.0.0.1/db`;
//! `.ci/run` sets it), otherwise says so and passes. It creates a database of its own
//! (`sopflow_t_…`: dropped when the test passes, kept and named when it fails) and starts two
//! `sopflow serve --store URL` on it, nodes a and b, each with its own manual clock and its
//! own data directory — which then holds only the demo tokens: b is given a's token hashes,
//! so one set of tokens works on both. Each round the clients of step 2 run, four starting
//! on each node (one on each moving that node's clock), and then:
//!
//! - rounds 1, 4, 7, … SIGKILL node a, rounds 3, 6, 9, … node b, after a random delay as
//!   above. The killed node's clients get no answer (not acknowledged), move to the other
//!   node and go on there: within 30 s the survivor must acknowledge commands after the
//!   kill, to clients that moved to it too (and the load goes on at least 1 s). The killed
//!   node then starts again on the same database;
//! - rounds 2, 5, 8, … restart the database under load with the shell command in
//!   `SOPFLOW_TEST_PG_RESTART` (`pg_ctlcluster --skip-systemctl-redirect 15 main restart`;
//!   unset, these rounds are skipped, saying so). Meanwhile a request may be answered 503
//!   with `Retry-After` (the client waits as told) or not at all; neither is acknowledged,
//!   and any other non-2xx answer — a 500 above all — is a failure. Once the command is
//!   done each node must acknowledge a start within 30 s without being restarted: it
//!   reconnects by itself.
//!
//! A client whose command was not acknowledged leaves that complaint (it may or may not
//! have moved on) and starts another. After the round both nodes' clocks are moved to one
//! instant, 25h past the latest either may have reached, so that which timers are due is
//! one question, and step 4's checks run on everything acknowledged so far: the list read
//! through node a, the histories through node b, verify on both. One allowance: a node
//! claims due timers before it fires them, and a node killed holding claims keeps the other
//! off those timers until the claims' lease (30 s) runs out — so timers due but unfired
//! (and nothing else wrong) are looked at again, both clocks moved to the same instant
//! before each look, for up to 45 s; the round's line says how many were late and for how
//! long. Firing twice is never allowed. Step 5's folds open the database in-process
//! (`sopflow::setup::open_existing_postgres`) while the nodes idle. After the last round
//! both nodes must stop on SIGTERM with exit 0.
//!
//! # Running them
//!
//! Every failure message names the seed and the round (and, on PostgreSQL, what the round
//! did). The seed drives the kill and restart delays and the clients' choices; thread
//! timing is not reproducible, so a rerun with the same seed replays the same plan, not the
//! same interleaving. A failing run keeps its data directory (the path is printed) with the
//! server's stderr of every start in it. The two tests take turns, so that neither's kills
//! fall on a machine loaded by the other's servers.
//!
//! Default on sled: 6 rounds, a kill 200–1500 ms into the load: 10–20 s in a debug build on
//! a busy two-core machine (the store grows by ~250 instances a round, so later rounds of a
//! soak take longer: 36 rounds took about four minutes). On PostgreSQL: 3 rounds (kill a,
//! restart the database, kill b), about 30 s more (a minute when a kill leaves timers to
//! the lease). The soak:
//!
//! ```sh
//! SOPFLOW_CRASH_ROUNDS=50 cargo test --release --test crash -- --nocapture
//! SOPFLOW_CRASH_SECONDS=600 cargo test --release --test crash -- --nocapture
//! SOPFLOW_CRASH_SEED=12345 cargo test --test crash -- --nocapture   # replay a seed's plan
//! SOPFLOW_TEST_POSTGRES=postgres://postgres@127.0.0.1/postgres \
//!   SOPFLOW_TEST_PG_RESTART="pg_ctlcluster --skip-systemctl-redirect 15 main restart" \
//!   SOPFLOW_CRASH_ROUNDS=30 cargo test --release --test crash two_nodes -- --nocapture
//! ```
//!
//! `SOPFLOW_CRASH_ROUNDS=N` runs N rounds (of each test); `SOPFLOW_CRASH_SECONDS=S` keeps
//! starting rounds until S seconds have passed (with both, whichever ends later).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sopflow::engine::service::Engine;
use sopflow::store::any::AnyStore;
use uuid::Uuid;

const ADMIN: &str = "it.admin";
const AUDITOR: &str = "jiang.audit";
/// Monday 2026-11-02 09:00 in Shanghai (the default calendar's zone).
const CLOCK_START: &str = "2026-11-02T01:00:00Z";
/// How far one clock move goes: past register's 24h deadline and its reminder.
const CLOCK_STEP_HOURS: i64 = 25;
const CLIENTS: usize = 8;
/// The kill comes this long after the load starts (milliseconds, uniform).
const KILL_AFTER_MS: (u64, u64) = (200, 1500);
/// Debug builds on a busy two-core machine start slowly.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent history readers during the checks.
const READERS: usize = 4;

/// The tests take turns: each times its kills against the load of its own servers, which
/// the other's servers (and a database restarting) would slow down unevenly on a machine
/// of two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------
// Configuration, seed, random numbers
// ---------------------------------------------------------------------------------------

struct Config {
    rounds: usize,
    seconds: Option<u64>,
    seed: u64,
}

fn env_num(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
    )
}

/// The knobs, `default_rounds` when neither `SOPFLOW_CRASH_ROUNDS` nor
/// `SOPFLOW_CRASH_SECONDS` says otherwise.
fn config(default_rounds: usize) -> Config {
    let seconds = env_num("SOPFLOW_CRASH_SECONDS");
    let rounds = match (env_num("SOPFLOW_CRASH_ROUNDS"), seconds) {
        (Some(n), _) => n.max(1) as usize,
        (None, Some(_)) => 1,
        (None, None) => default_rounds,
    };
    let seed = env_num("SOPFLOW_CRASH_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    Config {
        rounds,
        seconds,
        seed,
    }
}

/// SplitMix64: small, seedable, good enough to pick delays and branches.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

/// Where a failure happened, for every message.
#[derive(Clone, Copy)]
struct Ctx {
    /// Which test: "crash test", "PostgreSQL crash test".
    test: &'static str,
    seed: u64,
    round: usize,
    /// What the round did, when the test has rounds of several kinds ("" otherwise).
    kind: &'static str,
}

impl Ctx {
    fn fail(&self, msg: impl std::fmt::Display) -> ! {
        let kind = if self.kind.is_empty() {
            String::new()
        } else {
            format!(": {}", self.kind)
        };
        panic!(
            "{} failed (seed {}, round {}{kind}; rerun with SOPFLOW_CRASH_SEED={}): {msg}",
            self.test, self.seed, self.round, self.seed
        )
    }
}

// ---------------------------------------------------------------------------------------
// The data directory and the server process
// ---------------------------------------------------------------------------------------

/// The temporary directory of the run; kept (and its path printed) when the test fails.
struct Workdir(Option<tempfile::TempDir>);

impl Workdir {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("the work directory").path()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = self.0.take() {
                let kept = d.keep();
                eprintln!(
                    "crash test: data and server logs kept in {}",
                    kept.display()
                );
            }
        }
    }
}

/// One `sopflow serve` child. Dropping it kills the process, so a failing test leaves no
/// server behind.
struct Server {
    child: Option<Child>,
    addr: String,
    stdout: mpsc::Receiver<String>,
    stderr_path: PathBuf,
    label: String,
}

fn manifest_path(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn read_text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("(cannot read {}: {e})", p.display()))
}

impl Server {
    /// Starts the server and waits for its "sopflow serving http://ADDR" line: on the store
    /// in `data`, or with `store` (`--store postgres://…`) on that database, `data` then
    /// holding only the demo tokens. An error carries the exit status and everything the
    /// server wrote to stderr.
    fn start(
        data: &Path,
        store: Option<&str>,
        logs: &Path,
        label: &str,
        clock: DateTime<Utc>,
    ) -> Result<Server, String> {
        let stderr_path = logs.join(format!("{label}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| format!("cannot create {}: {e}", stderr_path.display()))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sopflow"));
        cmd.arg("serve").arg("--data-dir").arg(data);
        if let Some(url) = store {
            cmd.arg("--store").arg(url);
        }
        let mut child = cmd
            .arg("--procedures")
            .arg(manifest_path("procedures"))
            .arg("--directory")
            .arg(manifest_path("org.toml"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--clock",
                "manual",
                "--clock-start",
            ])
            .arg(clock.to_rfc3339())
            .args(["--cache-mib", "16"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", env!("CARGO_BIN_EXE_sopflow")))?;
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            stdout: rx,
            stderr_path,
            label: label.to_string(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("sopflow serving http://") {
                        server.addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        return Ok(server);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "the server ({label}) did not say it was serving within {READY_TIMEOUT:?}; \
                         its stderr:\n{}",
                        read_text(&server.stderr_path)
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.wait_exit(STOP_TIMEOUT);
                    return Err(format!(
                        "the server ({label}) exited before serving ({status}); its stderr:\n{}",
                        read_text(&server.stderr_path)
                    ));
                }
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running child").id()
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stderr(&self) -> String {
        read_text(&self.stderr_path)
    }

    /// Waits for the process to exit, describing how it ended.
    fn wait_exit(&mut self, timeout: Duration) -> String {
        let Some(child) = self.child.as_mut() else {
            return "already reaped".into();
        };
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => {
                    self.child = None;
                    return describe(s);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return format!("still running after {timeout:?}"),
                Err(e) => return format!("cannot wait: {e}"),
            }
        }
    }

    /// SIGKILL, then reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; the server must drain and exit 0, saying "sopflow stopped".
    fn terminate(&mut self) -> Result<(), String> {
        let pid = self.pid();
        let st = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !st.success() {
            return Err(format!("kill -TERM {pid} failed: {st}"));
        }
        let how = self.wait_exit(STOP_TIMEOUT);
        if how != "exit 0" {
            return Err(format!(
                "the server ({}) did not stop cleanly on SIGTERM: {how}; its stderr:\n{}",
                self.label,
                self.stderr()
            ));
        }
        let rest: Vec<String> = self.stdout.try_iter().collect();
        if !rest.iter().any(|l| l == "sopflow stopped") {
            return Err(format!(
                "the server ({}) exited 0 without \"sopflow stopped\"; stdout after start: {rest:?}",
                self.label
            ));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn describe(s: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match s.code() {
        Some(c) => format!("exit {c}"),
        None => format!("{s}"),
    }
}

fn read_tokens(data: &Path) -> HashMap<String, String> {
    let path = data.join("demo-tokens.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// The demo tokens every client and check uses.
fn check_tokens(ctx: Ctx, toks: &HashMap<String, String>) {
    for u in ["xu.na", "liu.yang", ADMIN, AUDITOR] {
        if !toks.contains_key(u) {
            ctx.fail(format!("demo-tokens.txt has no token for {u}"));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The HTTP client
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    tokens: Arc<HashMap<String, String>>,
}

#[derive(Debug)]
enum Answer {
    /// A 2xx with its body: acknowledged.
    Ok(Value),
    /// A 503 with `Retry-After` (the database away): not acknowledged, whatever it may have
    /// applied.
    Unavailable { retry_after: Duration, body: String },
    /// Any other status.
    Status(u16, String),
    /// No (complete) answer: the server is gone.
    Lost(String),
}

impl Api {
    fn new(base: String, tokens: Arc<HashMap<String, String>>) -> Api {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .expect("an HTTP client");
        Api { http, base, tokens }
    }

    async fn call(&self, user: &str, post: Option<Value>, path: &str) -> Answer {
        self.call_keyed(user, post, path, None).await
    }

    /// `call` with an `Idempotency-Key`.
    async fn call_keyed(
        &self,
        user: &str,
        post: Option<Value>,
        path: &str,
        key: Option<&str>,
    ) -> Answer {
        let token = self
            .tokens
            .get(user)
            .unwrap_or_else(|| panic!("no demo token for {user}"));
        let url = format!("{}{path}", self.base);
        let mut req = match &post {
            Some(body) => self.http.post(&url).json(body),
            None => self.http.get(&url),
        }
        .bearer_auth(token);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Lost(e.to_string()),
        };
        let status = res.status();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match res.bytes().await {
            Ok(b) => b,
            Err(e) => return Answer::Lost(format!("{status}, body lost: {e}")),
        };
        if status.is_success() {
            match serde_json::from_slice(&bytes) {
                Ok(v) => Answer::Ok(v),
                Err(e) => Answer::Status(
                    status.as_u16(),
                    format!(
                        "a 2xx whose body is not JSON ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    ),
                ),
            }
        } else {
            let body = String::from_utf8_lossy(&bytes).into_owned();
            match retry_after {
                Some(retry_after) if status.as_u16() == 503 => {
                    Answer::Unavailable { retry_after, body }
                }
                _ => Answer::Status(status.as_u16(), body),
            }
        }
    }

    /// A call during the checks: must answer 2xx.
    async fn must(&self, ctx: Ctx, user: &str, post: Option<Value>, path: &str) -> Value {
        let what = format!(
            "{} {path} as {user}",
            if post.is_some() { "POST" } else { "GET" }
        );
        match self.call(user, post, path).await {
            Answer::Ok(v) => v,
            Answer::Status(s, body) => ctx.fail(format!("{what} answered {s}: {body}")),
            Answer::Unavailable { body, .. } => ctx.fail(format!("{what} answered 503: {body}")),
            Answer::Lost(e) => ctx.fail(format!("{what}: no answer: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------

/// An acknowledged command.
#[derive(Debug, Clone)]
enum Ack {
    Started {
        instance: Uuid,
        register: Uuid,
    },
    Completed {
        instance: Uuid,
        task: Uuid,
        step: String,
    },
    Claimed {
        instance: Uuid,
        task: Uuid,
        user: String,
    },
    Cancelled {
        instance: Uuid,
    },
}

#[derive(Default)]
struct ClientReport {
    acks: Vec<Ack>,
    /// Starts sent with an idempotency key and never acknowledged: (key, body).
    unacked_starts: Vec<(String, Value)>,
    /// Non-2xx answers: the clients only do what is allowed, so each is a failure (but a 503
    /// with `Retry-After` where outages are survived: the database away).
    unexpected: Vec<String>,
    /// Requests left without an answer by the kill.
    lost: usize,
    /// 503s with `Retry-After` (where outages are survived).
    unavailable: usize,
    /// The latest clock a move was acknowledged with, and the moves that were not
    /// acknowledged (cut off by the kill, or 503 while the database was away) but may have
    /// moved a clock.
    clock: Option<DateTime<Utc>>,
    unacked_moves: u32,
}

fn uuid_of(v: &Value) -> Option<Uuid> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// The one open task at `step` of an instance view.
fn open_task(view: &Value, step: &str) -> Result<Uuid, String> {
    let found: Vec<Uuid> = view["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["step"] == step)
        .filter_map(|t| uuid_of(&t["id"]))
        .collect();
    match found[..] {
        [id] => Ok(id),
        _ => Err(format!("expected one open {step} task in {view}")),
    }
}

fn register_form(n: u64) -> Value {
    json!({
        "channel": "hotline",
        "complaint": format!("The repair took three weeks (crash test {n})"),
        "severity": "general",
        "first_answer": "We are sorry; sales will call you today", "received_at": "2026-11-02T08:30:00Z",
    })
}

/// What a client does when its server does not answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// One server, killed: a request without an answer ends the client, and any non-2xx
    /// answer is unexpected.
    Ends,
    /// Nodes on one database: a request without an answer sends the client to the next
    /// node, a 503 with `Retry-After` (the database away) makes it wait as told; either way
    /// it leaves the instance it was taking through (the command may or may not have been
    /// applied) and starts another. Any other non-2xx answer is unexpected.
    Survived,
}

/// Longest a client waits on a `Retry-After`.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

/// What the clients of a round share with the test: when to stop, and what was
/// acknowledged where.
struct Load {
    stop: AtomicBool,
    /// Commands acknowledged, per node.
    acks: Vec<AtomicUsize>,
    /// Clients' moves to another node because theirs did not answer.
    moves: AtomicUsize,
    /// Commands acknowledged to clients after such a move.
    acks_after_move: AtomicUsize,
}

impl Load {
    fn new(nodes: usize) -> Arc<Load> {
        Arc::new(Load {
            stop: AtomicBool::new(false),
            acks: (0..nodes).map(|_| AtomicUsize::new(0)).collect(),
            moves: AtomicUsize::new(0),
            acks_after_move: AtomicUsize::new(0),
        })
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn acks(&self, node: usize) -> usize {
        self.acks[node].load(Ordering::Relaxed)
    }
}

/// A command that was not acknowledged: what the client does next.
enum Unacked {
    /// It stops (its server is gone, or the answer was unexpected).
    End,
    /// It leaves the instance and starts another.
    Leave,
}

/// One client's side of the load: the nodes, the one it talks to, what it has heard.
struct Session {
    nodes: Vec<Api>,
    at: usize,
    outage: Outage,
    load: Arc<Load>,
    name: usize,
    moved: bool,
    rep: ClientReport,
}

impl Session {
    /// POSTs `body` to the current node: the answer if acknowledged.
    async fn send(
        &mut self,
        user: &str,
        body: Value,
        path: &str,
        what: &str,
    ) -> Result<Value, Unacked> {
        self.send_keyed(user, body, path, what, None).await
    }

    async fn send_keyed(
        &mut self,
        user: &str,
        body: Value,
        path: &str,
        what: &str,
        key: Option<&str>,
    ) -> Result<Value, Unacked> {
        let name = self.name;
        match self.nodes[self.at]
            .call_keyed(user, Some(body), path, key)
            .await
        {
            Answer::Ok(v) => {
                self.load.acks[self.at].fetch_add(1, Ordering::Relaxed);
                if self.moved {
                    self.load.acks_after_move.fetch_add(1, Ordering::Relaxed);
                }
                Ok(v)
            }
            Answer::Unavailable { retry_after, .. } if self.outage == Outage::Survived => {
                self.rep.unavailable += 1;
                tokio::time::sleep(retry_after.min(MAX_RETRY_WAIT)).await;
                Err(Unacked::Leave)
            }
            Answer::Unavailable { body, .. } => {
                self.rep
                    .unexpected
                    .push(format!("client {name}: {what} answered 503: {body}"));
                Err(Unacked::End)
            }
            Answer::Status(s, body) => {
                self.rep
                    .unexpected
                    .push(format!("client {name}: {what} answered {s}: {body}"));
                Err(Unacked::End)
            }
            Answer::Lost(_) => {
                self.rep.lost += 1;
                match self.outage {
                    Outage::Ends => Err(Unacked::End),
                    Outage::Survived => {
                        self.at = (self.at + 1) % self.nodes.len();
                        self.moved = true;
                        self.load.moves.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(Unacked::Leave)
                    }
                }
            }
        }
    }
}

/// One client: start complaints and take each to a random depth (0: register left open,
/// 1: resolve_general open, 2: follow_up_visit open, 3: closed) until told to stop or, with
/// `Outage::Ends`, until its server is gone. It talks to `nodes[home]` first. The client
/// `advancer` also moves the clock (of the node it talks to) now and then.
async fn client(
    nodes: Vec<Api>,
    home: usize,
    outage: Outage,
    mut rng: Rng,
    load: Arc<Load>,
    advancer: bool,
    name: usize,
) -> ClientReport {
    let mut s = Session {
        nodes,
        at: home,
        outage,
        load,
        name,
        moved: false,
        rep: ClientReport::default(),
    };
    let mut n = 0u64;
    'outer: while !s.load.stopped() {
        n += 1;
        if advancer && rng.range(0, 3) == 0 {
            let moved = s
                .send(
                    ADMIN,
                    json!({ "by": "25h" }),
                    "/v1/admin/clock/advance",
                    "advancing the clock",
                )
                .await;
            match moved {
                Ok(v) => match v["now"]
                    .as_str()
                    .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                {
                    Some(t) => s.rep.clock = s.rep.clock.max(Some(t)),
                    None => {
                        s.rep
                            .unexpected
                            .push(format!("client {name}: a clock move without `now`: {v}"));
                        break;
                    }
                },
                Err(u) => {
                    s.rep.unacked_moves += 1;
                    match u {
                        Unacked::End => break,
                        Unacked::Leave => continue,
                    }
                }
            }
        }
        // Unique across rounds and clients: the key, and the customer it names.
        let key = format!("start-{:016x}", rng.next());
        let data = json!({ "customer": format!("Customer {key}"), "contact": "Mr Li, 0731-555" });
        let body = json!({ "procedure": "complaint-handling", "data": data });
        // Where outages are survived, an unanswered start is sent again with its key (on
        // the node the client moved to) until answered; where the server is gone, the test
        // sends it after the restart.
        let mut tries = 0;
        let view = loop {
            tries += 1;
            let r = s
                .send_keyed(
                    "xu.na",
                    body.clone(),
                    "/v1/instances",
                    "starting a complaint",
                    Some(&key),
                )
                .await;
            match r {
                Ok(v) => break Some(v),
                Err(Unacked::Leave) if tries < 5 && !s.load.stopped() => continue,
                Err(_) => break None,
            }
        };
        let Some(view) = view else {
            s.rep.unacked_starts.push((key, body));
            if s.load.stopped() || s.outage == Outage::Ends {
                break;
            }
            continue;
        };
        let (Some(instance), Ok(register)) = (uuid_of(&view["id"]), open_task(&view, "register"))
        else {
            s.rep.unexpected.push(format!(
                "client {name}: a start answer without id or register task: {view}"
            ));
            break;
        };
        s.rep.acks.push(Ack::Started { instance, register });
        let depth = match rng.range(0, 99) {
            0..=24 => 0,
            25..=39 => 1,
            40..=59 => 2,
            _ => 3,
        };
        let steps: [(&str, &str, Value, Option<&str>); 3] = [
            (
                "register",
                "xu.na",
                register_form(n),
                Some("resolve_general"),
            ),
            (
                "resolve_general",
                "liu.yang",
                json!({ "resolution": "Brake pads replaced", "resolved_on": "2026-11-04" }),
                Some("follow_up_visit"),
            ),
            (
                "follow_up_visit",
                "xu.na",
                json!({ "customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Works now" }),
                None,
            ),
        ];
        let mut task = register;
        for (step, user, form, next) in steps.into_iter().take(depth) {
            if s.load.stopped() {
                break 'outer;
            }
            // Half the tasks are claimed first by the person who then completes them.
            if rng.range(0, 1) == 0 {
                let what = format!("claiming {step} of {instance}");
                match s
                    .send(user, json!({}), &format!("/v1/tasks/{task}/claim"), &what)
                    .await
                {
                    Ok(_) => {}
                    Err(Unacked::End) => break 'outer,
                    Err(Unacked::Leave) => continue 'outer,
                }
                s.rep.acks.push(Ack::Claimed {
                    instance,
                    task,
                    user: user.to_string(),
                });
            }
            let what = format!("completing {step} of {instance}");
            let view = match s
                .send(
                    user,
                    json!({ "form": form }),
                    &format!("/v1/tasks/{task}/complete"),
                    &what,
                )
                .await
            {
                Ok(v) => v,
                Err(Unacked::End) => break 'outer,
                Err(Unacked::Leave) => continue 'outer,
            };
            s.rep.acks.push(Ack::Completed {
                instance,
                task,
                step: step.to_string(),
            });
            match next {
                Some(next) => match open_task(&view, next) {
                    Ok(t) => task = t,
                    Err(e) => {
                        s.rep.unexpected.push(format!("client {name}: {e}"));
                        break 'outer;
                    }
                },
                None => {
                    if view["status"] != "completed" {
                        s.rep.unexpected.push(format!(
                            "client {name}: {instance} not completed after follow_up_visit: {view}"
                        ));
                        break 'outer;
                    }
                }
            }
        }
        // A third of the complaints left open are withdrawn by the management representative.
        if depth < 3 && rng.range(0, 2) == 0 && !s.load.stopped() {
            let what = format!("cancelling {instance}");
            match s
                .send(
                    "qian.li",
                    json!({ "reason": "withdrawn by the customer" }),
                    &format!("/v1/instances/{instance}/cancel"),
                    &what,
                )
                .await
            {
                Ok(_) => {}
                Err(Unacked::End) => break 'outer,
                Err(Unacked::Leave) => continue 'outer,
            }
            s.rep.acks.push(Ack::Cancelled { instance });
        }
    }
    s.rep
}

/// Waits for the clients of a round (they must stop within three minutes of being told).
async fn join_clients(
    ctx: Ctx,
    handles: Vec<tokio::task::JoinHandle<ClientReport>>,
) -> Vec<ClientReport> {
    let mut reports = Vec::new();
    for h in handles {
        match tokio::time::timeout(Duration::from_secs(180), h).await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => ctx.fail("a client did not stop after the kill"),
        }
    }
    reports
}

/// One round's client reports, summed; their acknowledgements go into `acked`.
#[derive(Default)]
struct RoundLoad {
    starts: usize,
    /// Starts never acknowledged, to send again with their key: (key, body).
    unacked_starts: Vec<(String, Value)>,
    completions: usize,
    claims: usize,
    cancels: usize,
    lost: usize,
    unavailable: usize,
    unexpected: Vec<String>,
    /// The latest clock a move was acknowledged with.
    clock: Option<DateTime<Utc>>,
    unacked_moves: u32,
}

impl RoundLoad {
    /// Fails the round if any answer was one the clients do not expect (`why` says when or
    /// what is expected).
    fn fail_on_unexpected(&self, ctx: Ctx, why: &str) {
        if !self.unexpected.is_empty() {
            ctx.fail(format!(
                "{} unexpected answer(s) during the load ({why}):\n  {}",
                self.unexpected.len(),
                self.unexpected[..self.unexpected.len().min(20)].join("\n  ")
            ));
        }
    }

    /// ", N unacknowledged clock move(s)" when there were any.
    fn unacked_note(&self) -> String {
        if self.unacked_moves > 0 {
            format!(", {} unacknowledged clock move(s)", self.unacked_moves)
        } else {
            String::new()
        }
    }
}

/// The part of a round's report line about the store after the checks.
fn store_report(tally: &Tally, folded: usize, acked: &Acked) -> String {
    format!(
        "store: {} instances, {} events, {} completions, {}/{} timers fired ({} reminders, {} \
         breaches), {folded} folds checked; acknowledged so far: {} starts, {} completions",
        tally.instances,
        tally.events,
        tally.completions,
        tally.timers_fired,
        tally.timers_armed,
        tally.reminders,
        tally.breaches,
        acked.starts.len(),
        acked.completions.len(),
    )
}

fn gather(ctx: Ctx, reports: Vec<ClientReport>, acked: &mut Acked) -> RoundLoad {
    let round = ctx.round;
    let mut sum = RoundLoad::default();
    for r in reports {
        sum.unexpected.extend(r.unexpected);
        sum.unacked_starts.extend(r.unacked_starts);
        sum.lost += r.lost;
        sum.unavailable += r.unavailable;
        sum.clock = sum.clock.max(r.clock);
        sum.unacked_moves += r.unacked_moves;
        for a in r.acks {
            match a {
                Ack::Started { instance, register } => {
                    sum.starts += 1;
                    acked.starts.insert(instance, (register, round));
                }
                Ack::Completed {
                    instance,
                    task,
                    step,
                } => {
                    sum.completions += 1;
                    if let Some(prev) = acked.completions.insert(task, (instance, step, round)) {
                        ctx.fail(format!("task {task} was acknowledged twice: {prev:?}"));
                    }
                }
                Ack::Claimed {
                    instance,
                    task,
                    user,
                } => {
                    sum.claims += 1;
                    acked.claims.insert(task, (instance, user, round));
                }
                Ack::Cancelled { instance } => {
                    sum.cancels += 1;
                    acked.cancels.insert(instance, round);
                }
            }
        }
    }
    sum
}

// ---------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------

/// Sends the starts a round left unanswered again, each with its idempotency key, through
/// `api`: each must now be answered — with the instance its first attempt made if that was
/// committed, else a new one — and counts as an acknowledged start. Returns how many were
/// answers from a first attempt (`Idempotent-Replayed`).
async fn retry_starts(
    ctx: Ctx,
    api: &Api,
    starts: &[(String, Value)],
    acked: &mut Acked,
) -> (usize, usize) {
    let mut replayed = 0;
    for (key, body) in starts {
        let view = match api
            .call_keyed("xu.na", Some(body.clone()), "/v1/instances", Some(key))
            .await
        {
            Answer::Ok(v) => v,
            other => ctx.fail(format!(
                "the start with key {key}, sent again, was not answered: {other:?}"
            )),
        };
        let (Some(instance), Ok(register)) = (uuid_of(&view["id"]), open_task(&view, "register"))
        else {
            ctx.fail(format!(
                "a retried start's answer without id or register task: {view}"
            ));
        };
        if view["data"]["customer"] != body["data"]["customer"] {
            ctx.fail(format!(
                "the start with key {key} answered another instance: {view}"
            ));
        }
        // Earlier rounds' acknowledged starts cannot be its answer: their keys differ.
        if acked
            .starts
            .insert(instance, (register, ctx.round))
            .is_some()
        {
            replayed += 1;
        }
    }
    (starts.len(), replayed)
}

/// Everything acknowledged so far, over all rounds.
#[derive(Default)]
struct Acked {
    /// instance → (register task, round)
    starts: BTreeMap<Uuid, (Uuid, usize)>,
    /// task → (instance, step, round)
    completions: BTreeMap<Uuid, (Uuid, String, usize)>,
    /// task → (instance, user, round)
    claims: BTreeMap<Uuid, (Uuid, String, usize)>,
    /// instance → round
    cancels: BTreeMap<Uuid, usize>,
}

async fn verify_intact(api: &Api, ctx: Ctx, when: &str) -> Value {
    let v = api.must(ctx, AUDITOR, None, "/v1/audit/verify").await;
    if v["intact"] != true {
        ctx.fail(format!(
            "GET /v1/audit/verify {when} reports a broken chain: {v}"
        ));
    }
    v
}

async fn list_instances(api: &Api, ctx: Ctx) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/instances?limit=500".to_string(),
            Some(c) => format!("/v1/instances?limit=500&cursor={c}"),
        };
        let page = api.must(ctx, ADMIN, None, &path).await;
        for item in page["items"].as_array().into_iter().flatten() {
            match uuid_of(&item["id"]) {
                Some(id) => out.push(id),
                None => ctx.fail(format!("an instance without an id in {path}: {item}")),
            }
        }
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    out
}

async fn history(api: &Api, ctx: Ctx, id: Uuid) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let from = out.len() + 1;
        let v = api
            .must(
                ctx,
                ADMIN,
                None,
                &format!("/v1/instances/{id}/history?from={from}&limit=1000"),
            )
            .await;
        let events = v["events"].as_array().cloned().unwrap_or_default();
        let n = events.len();
        out.extend(events);
        if n < 1000 {
            return out;
        }
    }
}

async fn all_histories(api: &Api, ctx: Ctx, ids: &[Uuid]) -> HashMap<Uuid, Vec<Value>> {
    let chunks: Vec<Vec<Uuid>> = ids
        .chunks(ids.len().div_ceil(READERS).max(1))
        .map(<[Uuid]>::to_vec)
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for chunk in chunks {
        let api = api.clone();
        set.spawn(async move {
            let mut out = Vec::with_capacity(chunk.len());
            for id in chunk {
                out.push((id, history(&api, ctx, id).await));
            }
            out
        });
    }
    let mut all = HashMap::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(part) => all.extend(part),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    all
}

#[derive(Default, Debug)]
struct Tally {
    instances: usize,
    events: usize,
    completions: usize,
    timers_armed: usize,
    timers_fired: usize,
    reminders: usize,
    breaches: usize,
    /// Of the problems, timers due on an open task that have not fired.
    unfired: usize,
}

fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// A timer's firing event: (seq, at, kind).
type Fire = (u64, DateTime<Utc>, String);

/// The API-side checks of every history against what was acknowledged and against the
/// timers each `task_opened` armed. `now` is the server's clock, every due timer having
/// been fired by the clock move that set it. The problems found, if any.
fn check_histories(
    listed: &[Uuid],
    histories: &HashMap<Uuid, Vec<Value>>,
    acked: &Acked,
    now: DateTime<Utc>,
) -> (Tally, Vec<String>) {
    let mut problems: Vec<String> = Vec::new();
    let mut tally = Tally {
        instances: listed.len(),
        ..Tally::default()
    };
    let listed_set: HashSet<Uuid> = listed.iter().copied().collect();
    if listed_set.len() != listed.len() {
        problems.push(format!(
            "the instance list repeats ids: {} items, {} distinct",
            listed.len(),
            listed_set.len()
        ));
    }

    // Acknowledged starts: listed, with their register task opened.
    let lost_starts: Vec<String> = acked
        .starts
        .iter()
        .filter(|(id, _)| !listed_set.contains(id))
        .map(|(id, (_, round))| format!("{id} (acknowledged in round {round})"))
        .collect();
    if !lost_starts.is_empty() {
        problems.push(format!(
            "{} acknowledged start(s) LOST (not listed after the restart): {}",
            lost_starts.len(),
            lost_starts.join(", ")
        ));
    }

    // customer → when each acknowledged start of it was made (a retried start's answer).
    let started_at = |h: &[Value]| -> Option<(String, DateTime<Utc>)> {
        let first = h.first()?;
        let customer = first["details"]["data"]["customer"].as_str()?.to_string();
        Some((customer, first["at"].as_str()?.parse().ok()?))
    };
    let mut acked_starts_of: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for id in acked.starts.keys() {
        if let Some((customer, at)) = histories.get(id).and_then(|h| started_at(h)) {
            acked_starts_of.entry(customer).or_default().push(at);
        }
    }

    // task → [(instance, seq, step)] of every completion anywhere.
    let mut completed: HashMap<Uuid, Vec<(Uuid, u64, String)>> = HashMap::new();
    for id in listed {
        let Some(h) = histories.get(id) else {
            problems.push(format!("no history read for {id}"));
            continue;
        };
        tally.events += h.len();
        for (i, e) in h.iter().enumerate() {
            if e["seq"].as_u64() != Some(i as u64 + 1) {
                problems.push(format!(
                    "{id}: event {} has seq {} (histories are numbered 1..n)",
                    i + 1,
                    e["seq"]
                ));
                break;
            }
        }
        if h.first().map(|e| &e["kind"]) != Some(&json!("started")) {
            problems.push(format!(
                "{id}: the history does not begin with `started`: {:?}",
                h.first()
            ));
        }
        // Every client start carries an idempotency key and is sent again with it until
        // answered (after the restart, where the server was killed): so every instance a
        // client started was acknowledged to it, exactly once — one the clients were never
        // told about would be a start done twice.
        let customer = h
            .first()
            .and_then(|e| e["details"]["data"]["customer"].as_str())
            .unwrap_or_default();
        // Unless the key had expired when the start was sent again: keys are kept 24 h of
        // the clock, and a clock move (25 h) between the first attempt's commit and the
        // kill puts the restart beyond that — then the retry starts anew, as documented,
        // and its answer is an acknowledged start of the same customer a day or more later.
        let expired = started_at(h).is_some_and(|(_, first)| {
            acked_starts_of.get(customer).is_some_and(|retries| {
                retries
                    .iter()
                    .any(|at| *at - first >= sopflow::engine::once::WINDOW)
            })
        });
        if customer.starts_with("Customer start-") && !acked.starts.contains_key(id) && !expired {
            problems.push(format!(
                "{id} ({customer}) was started but its start was never acknowledged, though \
                 every start was retried with its key until it was: a start done twice"
            ));
        }
        if let Some((register, round)) = acked.starts.get(id) {
            let opened = h.iter().any(|e| {
                e["kind"] == "task_opened"
                    && uuid_of(&e["details"]["task"]) == Some(*register)
                    && e["details"]["step"] == "register"
            });
            if !opened {
                problems.push(format!(
                    "{id} (start acknowledged in round {round}): its register task {register} was never opened"
                ));
            }
        }

        // Tasks: when opened (with the timers armed), when completed, what fired.
        struct TaskLife {
            step: String,
            timers: Vec<(Uuid, DateTime<Utc>, String)>,
            completed: Option<(u64, DateTime<Utc>)>,
        }
        let mut tasks: HashMap<Uuid, TaskLife> = HashMap::new();
        let mut ended = false;
        // task → the users whose claims the history records
        let mut claimed: HashMap<Uuid, Vec<String>> = HashMap::new();
        let cancelled: Vec<u64> = h
            .iter()
            .filter(|e| e["kind"] == "cancelled")
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        if let Some(round) = acked.cancels.get(id) {
            if cancelled.len() != 1 || cancelled[0] != h.len() as u64 {
                problems.push(format!(
                    "{id} (cancel acknowledged in round {round}): the history records cancellations at {cancelled:?} of {} events",
                    h.len()
                ));
            }
        } else if cancelled.len() > 1 {
            problems.push(format!("{id}: cancelled {} times", cancelled.len()));
        }
        // (task, timer) → [(seq, at, kind)]
        let mut fired: HashMap<(Uuid, Uuid), Vec<Fire>> = HashMap::new();
        for e in h {
            let seq = e["seq"].as_u64().unwrap_or(0);
            let at = time_of(&e["at"]);
            let d = &e["details"];
            let kind = e["kind"].as_str().unwrap_or_default();
            match kind {
                "task_opened" => {
                    let Some(task) = uuid_of(&d["task"]) else {
                        problems.push(format!("{id}#{seq}: task_opened without a task id"));
                        continue;
                    };
                    let mut timers = Vec::new();
                    for t in d["timers"].as_array().into_iter().flatten() {
                        match (uuid_of(&t["id"]), time_of(&t["at"]), t["kind"].as_str()) {
                            (Some(tid), Some(tat), Some(k)) => {
                                timers.push((tid, tat, k.to_string()))
                            }
                            _ => problems.push(format!("{id}#{seq}: an unreadable timer {t}")),
                        }
                    }
                    tally.timers_armed += timers.len();
                    let life = TaskLife {
                        step: d["step"].as_str().unwrap_or_default().to_string(),
                        timers,
                        completed: None,
                    };
                    if tasks.insert(task, life).is_some() {
                        problems.push(format!("{id}#{seq}: task {task} opened twice"));
                    }
                }
                "task_completed" => {
                    let Some(task) = uuid_of(&d["task"]) else {
                        problems.push(format!("{id}#{seq}: task_completed without a task id"));
                        continue;
                    };
                    tally.completions += 1;
                    let step = d["step"].as_str().unwrap_or_default().to_string();
                    completed
                        .entry(task)
                        .or_default()
                        .push((*id, seq, step.clone()));
                    match tasks.get_mut(&task) {
                        Some(life) => {
                            if life.step != step {
                                problems.push(format!(
                                    "{id}#{seq}: task {task} opened at {} completed as {step}",
                                    life.step
                                ));
                            }
                            if life.completed.is_none() {
                                life.completed =
                                    Some((seq, at.unwrap_or(DateTime::<Utc>::MIN_UTC)));
                            }
                        }
                        None => problems.push(format!(
                            "{id}#{seq}: task {task} completed but never opened"
                        )),
                    }
                }
                "deadline_reminded" | "deadline_breached" => {
                    match (uuid_of(&d["task"]), uuid_of(&d["timer"]), at) {
                        (Some(task), Some(timer), Some(at)) => {
                            tally.timers_fired += 1;
                            if kind == "deadline_reminded" {
                                tally.reminders += 1;
                            } else {
                                tally.breaches += 1;
                            }
                            fired.entry((task, timer)).or_default().push((
                                seq,
                                at,
                                kind.to_string(),
                            ))
                        }
                        _ => problems.push(format!(
                            "{id}#{seq}: {kind} without task, timer or time: {e}"
                        )),
                    }
                }
                "task_claimed" => match uuid_of(&d["task"]) {
                    Some(task) => claimed
                        .entry(task)
                        .or_default()
                        .push(e["by"]["user"].as_str().unwrap_or_default().to_string()),
                    None => problems.push(format!("{id}#{seq}: task_claimed without a task id")),
                },
                "ended" | "cancelled" => ended = true,
                _ => {}
            }
        }

        // Timers: at most once, of their kind, when due, while the task was open; exactly
        // once when due and the task is still open.
        let mut known: HashSet<(Uuid, Uuid)> = HashSet::new();
        for (task, life) in &tasks {
            for (timer, due, tkind) in &life.timers {
                known.insert((*task, *timer));
                let fires = fired
                    .get(&(*task, *timer))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let want_kind = match tkind.as_str() {
                    "remind" => "deadline_reminded",
                    "breach" => "deadline_breached",
                    other => {
                        problems.push(format!("{id}: timer {timer} of unknown kind {other}"));
                        continue;
                    }
                };
                if fires.len() > 1 {
                    problems.push(format!(
                        "{id}: timer {timer} ({tkind}, task {task} at {}) FIRED {} TIMES: events {:?}",
                        life.step,
                        fires.len(),
                        fires.iter().map(|f| f.0).collect::<Vec<_>>()
                    ));
                }
                for (seq, at, k) in fires {
                    if k != want_kind {
                        problems.push(format!("{id}#{seq}: {tkind} timer {timer} fired as {k}"));
                    }
                    if at < due {
                        problems.push(format!(
                            "{id}#{seq}: timer {timer} due {due} fired early at {at}"
                        ));
                    }
                    if let Some((cseq, _)) = life.completed {
                        if *seq > cseq {
                            problems.push(format!(
                                "{id}#{seq}: timer {timer} fired after its task {task} was completed (#{cseq})"
                            ));
                        }
                    }
                }
                let open = life.completed.is_none() && !ended;
                if open && *due <= now && fires.is_empty() {
                    tally.unfired += 1;
                    problems.push(format!(
                        "{id}: timer {timer} ({tkind} of {} task {task}) was due at {due}, the clock is at {now}, \
                         the task is open, and it NEVER FIRED",
                        life.step
                    ));
                }
            }
        }
        // Every claim the history records happened once (the clients never release), and
        // every acknowledged claim is among them, by its user.
        for (task, users) in &claimed {
            if users.len() > 1 {
                problems.push(format!(
                    "{id}: task {task} CLAIMED {} TIMES: {users:?}",
                    users.len()
                ));
            }
        }
        for (task, (instance, user, round)) in acked.claims.iter().filter(|(_, c)| c.0 == *id) {
            if claimed.get(task).map(Vec::as_slice) != Some(std::slice::from_ref(user)) {
                problems.push(format!(
                    "the acknowledged claim of task {task} of {instance} by {user} (round {round}) is recorded as {:?}",
                    claimed.get(task)
                ));
            }
        }
        for ((task, timer), fires) in &fired {
            if !known.contains(&(*task, *timer)) {
                problems.push(format!(
                    "{id}: events {:?} fired timer {timer} of task {task}, which no task_opened armed",
                    fires.iter().map(|f| f.0).collect::<Vec<_>>()
                ));
            }
        }
    }

    // No task completed twice, anywhere.
    let mut doubles: Vec<String> = completed
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(task, v)| format!("task {task} completed {} times: {v:?}", v.len()))
        .collect();
    doubles.sort();
    if !doubles.is_empty() {
        problems.push(format!("DOUBLE COMPLETIONS: {}", doubles.join("; ")));
    }

    // Every acknowledged completion exactly once, in its instance, at its step.
    let mut lost: Vec<String> = Vec::new();
    for (task, (instance, step, round)) in &acked.completions {
        match completed.get(task).map(Vec::as_slice) {
            Some([(i, _, s)]) if i == instance && s == step => {}
            Some([]) | None => lost.push(format!(
                "{step} task {task} of {instance} (acknowledged in round {round})"
            )),
            Some(other) => problems.push(format!(
                "the acknowledged completion of {step} task {task} of {instance} (round {round}) is recorded as {other:?}"
            )),
        }
    }
    if !lost.is_empty() {
        problems.push(format!(
            "{} acknowledged completion(s) LOST: {}",
            lost.len(),
            lost.join(", ")
        ));
    }

    (tally, problems)
}

fn fail_with(ctx: Ctx, problems: Vec<String>) -> ! {
    let n = problems.len();
    let shown: Vec<String> = problems.into_iter().take(40).collect();
    ctx.fail(format!(
        "{n} problem(s) after the restart:\n  {}{}",
        shown.join("\n  "),
        if n > 40 { "\n  …" } else { "" }
    ))
}

/// The checks through the API once the load is over and every node's clock is at `now`
/// (each due timer fired by the move that set it): list the instances (through the first
/// node), read every history (through the last), check them against what was acknowledged,
/// and verify on every node, which must count the listed instances and the deployments
/// history.
///
/// Due timers that have not fired (and no other problem) are looked at again until a look
/// begun `late` after the first still finds them, every node's clock moved to `now` once
/// more before each look (which fires what is due):
/// on PostgreSQL a node claims due timers before firing them, and one killed holding a
/// claim keeps the others off those timers until the claim's lease runs out. How many
/// were late at first, and how long until they had all fired.
async fn check_through_api(
    ctx: Ctx,
    apis: &[Api],
    acked: &Acked,
    now: DateTime<Utc>,
    late: Duration,
) -> (Vec<Uuid>, Tally, Option<(usize, Duration)>) {
    let began = Instant::now();
    let mut unfired = None;
    let (listed, tally, took) = loop {
        let pass = began.elapsed();
        let listed = list_instances(&apis[0], ctx).await;
        let histories = all_histories(&apis[apis.len() - 1], ctx, &listed).await;
        let (tally, problems) = check_histories(&listed, &histories, acked, now);
        if problems.is_empty() {
            break (listed, tally, began.elapsed());
        }
        if problems.len() > tally.unfired || pass >= late {
            fail_with(ctx, problems);
        }
        unfired = unfired.or(Some(tally.unfired));
        tokio::time::sleep(Duration::from_secs(2)).await;
        for api in apis {
            move_clock_to(api, ctx, now).await;
        }
    };
    for api in apis {
        let via = if apis.len() > 1 {
            format!(" (through {})", api.base)
        } else {
            String::new()
        };
        let verified = verify_intact(api, ctx, &format!("after the checks{via}")).await;
        // The list leaves out the deployments history, which verify checks too.
        if verified["instances"].as_u64() != Some(listed.len() as u64 + 1) {
            ctx.fail(format!(
                "verify saw {} instances{via}, the list has {}",
                verified["instances"],
                listed.len()
            ));
        }
    }
    (listed, tally, unfired.map(|n| (n, took)))
}

/// In-process, on a store no command changes meanwhile (`engine` opened on it): the same
/// instances as `listed`, each snapshot the fold of its history.
fn check_folds(ctx: Ctx, engine: &Engine<AnyStore>, listed: &[Uuid]) -> usize {
    use sopflow::engine::instance::Instance;
    let mut ids: Vec<Uuid> = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = engine
            .instances(None, None, cursor.as_deref(), 500)
            .unwrap_or_else(|e| ctx.fail(format!("listing instances in-process: {e}")));
        ids.extend(page.items);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let mut a = ids.clone();
    a.sort();
    let mut b = listed.to_vec();
    b.sort();
    if a != b {
        let sa: HashSet<Uuid> = a.iter().copied().collect();
        let sb: HashSet<Uuid> = b.iter().copied().collect();
        ctx.fail(format!(
            "the store lists {} instances in-process, the API listed {}: only in-process {:?}, only via the API {:?}",
            a.len(),
            b.len(),
            sa.difference(&sb).collect::<Vec<_>>(),
            sb.difference(&sa).collect::<Vec<_>>()
        ));
    }
    let mut bad: Vec<String> = Vec::new();
    for id in &ids {
        let history = engine
            .history(*id)
            .unwrap_or_else(|e| ctx.fail(format!("{id}: history unreadable in-process: {e}")));
        let stored = engine
            .instance(*id)
            .unwrap_or_else(|e| ctx.fail(format!("{id}: instance unreadable in-process: {e}")));
        let folded = Instance::fold(*id, &history);
        if folded != stored {
            bad.push(format!(
                "{id} ({} events): stored snapshot\n    {stored:?}\n  differs from the fold of its history\n    {folded:?}",
                history.len()
            ));
        }
    }
    if !bad.is_empty() {
        let n = bad.len();
        ctx.fail(format!(
            "{n} instance(s) whose snapshot is not the fold of their history:\n  {}",
            bad.into_iter().take(5).collect::<Vec<_>>().join("\n  ")
        ));
    }
    ids.len()
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_nothing_acknowledged_and_fires_no_timer_twice() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cfg = config(6);
    let seed = cfg.seed;
    eprintln!(
        "crash test: seed {seed} (rerun with SOPFLOW_CRASH_SEED={seed}), {} round(s){}",
        cfg.rounds,
        cfg.seconds
            .map(|s| format!(", at least {s} s"))
            .unwrap_or_default()
    );
    let mut rng = Rng(seed);
    let work = Workdir(Some(
        tempfile::Builder::new()
            .prefix("sopflow-crash-")
            .tempdir()
            .expect("a temporary directory"),
    ));
    let data = work.path().join("store");
    let logs = work.path().to_path_buf();
    let began = Instant::now();
    let mut clock: DateTime<Utc> = CLOCK_START.parse().expect("the start instant");
    let mut tokens: Option<Arc<HashMap<String, String>>> = None;
    let mut acked = Acked::default();
    let mut round = 0usize;
    loop {
        round += 1;
        let more_rounds = round <= cfg.rounds;
        let more_time = cfg
            .seconds
            .is_some_and(|s| began.elapsed() < Duration::from_secs(s));
        if !more_rounds && !more_time {
            break;
        }
        let ctx = Ctx {
            test: "crash test",
            seed,
            round,
            kind: "",
        };
        let round_began = Instant::now();

        // 1. Start.
        let mut srv = Server::start(&data, None, &logs, &format!("round{round}-load"), clock)
            .unwrap_or_else(|e| ctx.fail(e));
        let toks = tokens
            .get_or_insert_with(|| Arc::new(read_tokens(&data)))
            .clone();
        check_tokens(ctx, &toks);

        // 2–3. Load, then SIGKILL at a random moment.
        let load = Load::new(1);
        let mut handles = Vec::new();
        for c in 0..CLIENTS {
            let api = Api::new(srv.base(), toks.clone());
            handles.push(tokio::spawn(client(
                vec![api],
                0,
                Outage::Ends,
                rng.fork(),
                load.clone(),
                c == 0,
                c,
            )));
        }
        let kill_after = Duration::from_millis(rng.range(KILL_AFTER_MS.0, KILL_AFTER_MS.1));
        tokio::time::sleep(kill_after).await;
        srv.kill9();
        load.stop.store(true, Ordering::Relaxed);
        let reports = join_clients(ctx, handles).await;
        let sum = gather(ctx, reports, &mut acked);
        sum.fail_on_unexpected(ctx, &format!("before the kill at {kill_after:?}"));
        if let Some(t) = sum.clock {
            clock = clock.max(t);
        }
        // A clock move the kill cut short may have moved the clock and fired timers:
        // restart where it would have landed, so time never runs back.
        clock += chrono::Duration::hours(CLOCK_STEP_HOURS * i64::from(sum.unacked_moves));

        // 4. Restart on the same directory and check through the API.
        let mut srv = Server::start(&data, None, &logs, &format!("round{round}-restart"), clock)
            .unwrap_or_else(|e| {
                ctx.fail(format!(
                    "the server does not restart after SIGKILL {kill_after:?} into the load: {e}"
                ))
            });
        let api = Api::new(srv.base(), toks.clone());
        verify_intact(&api, ctx, "right after the restart").await;
        let (retried, replayed) = retry_starts(ctx, &api, &sum.unacked_starts, &mut acked).await;
        let moved = api
            .must(
                ctx,
                ADMIN,
                Some(json!({ "by": "25h" })),
                "/v1/admin/clock/advance",
            )
            .await;
        clock = moved["now"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| ctx.fail(format!("a clock move without `now`: {moved}")));
        let (listed, tally, _) = check_through_api(
            ctx,
            std::slice::from_ref(&api),
            &acked,
            clock,
            Duration::ZERO,
        )
        .await;

        // 5. Graceful stop; the snapshots against their histories, in-process.
        srv.terminate().unwrap_or_else(|e| ctx.fail(e));
        drop(srv);
        let d = data.clone();
        let l = listed.clone();
        let folded = tokio::task::spawn_blocking(move || {
            let engine = sopflow::setup::open_existing(&d, Arc::new(sopflow::clock::SystemClock))
                .unwrap_or_else(|e| {
                    ctx.fail(format!("the stopped store does not reopen in-process: {e}"))
                });
            check_folds(ctx, &engine, &l)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

        eprintln!(
            "round {round}: killed {kill_after:?} into the load; acknowledged {} starts, \
             {} completions, {} claims and {} cancellations ({} requests cut off{}; {retried} \
             unanswered start(s) sent again with their key, {replayed} answered from the first \
             attempt); {}; clock {clock}; {:.1} s",
            sum.starts,
            sum.completions,
            sum.claims,
            sum.cancels,
            sum.lost,
            sum.unacked_note(),
            store_report(&tally, folded, &acked),
            round_began.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "crash test: {} round(s) passed in {:.1} s (seed {seed})",
        round - 1,
        began.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// Two nodes on one PostgreSQL database
/// Moves a node's clock to `to` (not back), which fires every timer due by then.
async fn move_clock_to(api: &Api, ctx: Ctx, to: DateTime<Utc>) {
    let moved = api
        .must(
            ctx,
            ADMIN,
            Some(json!({ "to": to.to_rfc3339() })),
            "/v1/admin/clock/advance",
        )
        .await;
    if time_of(&moved["now"]) != Some(to) {
        ctx.fail(format!(
            "{} moved its clock to {to} but says it is {}",
            api.base, moved["now"]
        ));
    }
}

#[path = "crash/postgres.rs"]
mod on_postgres;
