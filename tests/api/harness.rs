//! The test server and its client: one `sopflow serve` per test, in-process, on a free port,
//! with its own data directory, the shipped procedures and the demo directory, the manual
//! clock at Monday 2026-11-02 09:00 in Shanghai, and a demo token for every active user.
//!
//! Every reply goes through `Server::send`, which checks what must hold for every request:
//! no 5xx, an `x-request-id` header, and for every 4xx an RFC 9457 problem body whose
//! `status` is the HTTP status and whose `request_id` is the header's.

use std::collections::HashMap;
use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sopflow::http::server::{bind, ClockChoice, ServeConfig, ServeError};
use sopflow::http::Limits;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN: &str = "it.admin";
pub const AUDITOR: &str = "jiang.audit";

/// The server's starting instant: Monday 2026-11-02 09:00 in Shanghai.
pub fn t0() -> DateTime<Utc> {
    at("2026-11-02T09:00:00+08:00")
}

pub fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&Utc))
        .expect("a valid RFC 3339 instant")
}

/// Every active user of org.toml (all of them get a demo token).
pub const USERS: [&str; 24] = [
    "zhao.gang",
    "zhou.min",
    "qian.li",
    "chen.jing",
    "wu.fang",
    "it.admin",
    "liu.yang",
    "he.ping",
    "wang.qiang",
    "zheng.hao",
    "lin.tao",
    "feng.yu",
    "guo.jun",
    "ma.lei",
    "deng.wei",
    "luo.bin",
    "xu.na",
    "gao.yan",
    "tang.kai",
    "yao.jie",
    "han.xue",
    "cui.lan",
    "jiang.audit",
    // The inactive user: never issued a token; the harness can plant one (see `start_with`).
    "shi.lan",
];

/// How the request is authenticated.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    None,
    /// `Authorization: Bearer <the user's token>`.
    User(&'a str),
    /// This exact `Authorization` header value.
    Header(&'a str),
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    Empty,
    Json(Value),
    /// Raw bytes with the given content type (`None`: no content type header).
    Raw(Option<&'static str>, Vec<u8>),
}

/// One reply.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The problem `type` after `urn:sopflow:problem:`.
    pub fn problem_kind(&self) -> String {
        let body = self.json();
        body["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:sopflow:problem:"))
            .unwrap_or_else(|| panic!("no problem type in {body}"))
            .to_string()
    }
}

pub struct Server {
    pub addr: SocketAddr,
    tokens: HashMap<String, String>,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
    /// The data directory (removed when the server is dropped).
    dir: Option<TempDir>,
    /// What the handlers reach: the engine and its store, read in-process by `dump`.
    state: std::sync::Arc<sopflow::http::AppState>,
    /// The database made for this server when the suite runs on PostgreSQL (dropped with it).
    pg: Option<PgDatabase>,
}

/// A database of its own for one test server, when `SOPFLOW_TEST_API_STORE=postgres`: the
/// suite then runs unchanged on PostgreSQL (`SOPFLOW_TEST_POSTGRES` names the server).
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    fn for_this_run() -> Option<PgDatabase> {
        if std::env::var("SOPFLOW_TEST_API_STORE").as_deref() != Ok("postgres") {
            return None;
        }
        let admin = std::env::var("SOPFLOW_TEST_POSTGRES")
            .expect("SOPFLOW_TEST_API_STORE=postgres needs SOPFLOW_TEST_POSTGRES=postgres://…/db");
        let name = format!("sopflow_t_{}", uuid::Uuid::now_v7().simple());
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        let (a, n) = (admin.clone(), name.clone());
        // The blocking client may not run on a Tokio thread.
        std::thread::spawn(move || {
            let mut c =
                postgres::Client::connect(&a, postgres::NoTls).expect("PostgreSQL reachable");
            c.batch_execute(&format!("CREATE DATABASE {n}"))
                .expect("a test database");
        })
        .join()
        .expect("the database is made");
        Some(PgDatabase { admin, name, url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (a, n) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&a, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// The token planted for the inactive user `shi.lan`.
pub const INACTIVE_TOKEN: &str = "sfk_inactive-user-token-planted-by-the-test-harness";

impl Server {
    /// A server on the manual clock at `t0()`.
    pub async fn start() -> Server {
        Server::start_with(ClockChoice::Manual(Some(t0()))).await
    }

    /// A server on the given clock. Before binding, the data directory is given a demo
    /// token hash for the inactive user `shi.lan` (token `INACTIVE_TOKEN`), as if they had
    /// been issued one while still active.
    pub async fn start_with(clock: ClockChoice) -> Server {
        Server::start_full(clock, "procedures".into()).await
    }

    /// A server at `t0()` on the procedures in `procedures` (calendars from `calendars/`).
    pub async fn start_on(procedures: std::path::PathBuf) -> Server {
        Server::start_full(ClockChoice::Manual(Some(t0())), procedures).await
    }

    /// A server at `t0()` on the shipped procedures plus the named files of
    /// `tests/fixtures/runtime/` (procedures made for one test, such as a condition that
    /// fails at run time). The directory is handed back to be kept alive with the server.
    pub async fn start_with_fixtures(names: &[&str]) -> (Server, TempDir) {
        let procs = tempfile::tempdir().expect("a temporary procedures directory");
        let shipped = std::fs::read_dir("procedures").expect("the shipped procedures");
        let fixtures = names
            .iter()
            .map(|n| std::path::PathBuf::from(format!("tests/fixtures/runtime/{n}")));
        for path in shipped
            .map(|f| f.expect("a directory entry").path())
            .chain(fixtures)
        {
            let name = path.file_name().expect("a file name");
            std::fs::copy(&path, procs.path().join(name))
                .unwrap_or_else(|e| panic!("copying {}: {e}", path.display()));
        }
        let srv = Server::start_on(procs.path().to_path_buf()).await;
        (srv, procs)
    }

    /// A server at `t0()` on copies of the shipped procedures and of the directory file,
    /// which a test may edit and then reload (`POST /v1/admin/reload`). The directory holding
    /// the copies (`procedures/`, `org.toml`) is handed back.
    pub async fn start_with_site() -> (Server, TempDir) {
        Server::start_site(false).await
    }

    /// `start_with_site` with the file watcher on, as `sopflow serve` runs by default.
    pub async fn start_watching_site() -> (Server, TempDir) {
        Server::start_site(true).await
    }

    async fn start_site(watch: bool) -> (Server, TempDir) {
        let site = tempfile::tempdir().expect("a temporary site directory");
        let procs = site.path().join("procedures");
        std::fs::create_dir(&procs).expect("procedures directory");
        for f in std::fs::read_dir("procedures").expect("the shipped procedures") {
            let path = f.expect("a directory entry").path();
            std::fs::copy(&path, procs.join(path.file_name().expect("a file name")))
                .expect("a procedure copied");
        }
        std::fs::copy("org.toml", site.path().join("org.toml")).expect("org.toml copied");
        let srv = Server::start_at(
            ClockChoice::Manual(Some(t0())),
            procs,
            site.path().join("org.toml"),
            watch,
        )
        .await;
        (srv, site)
    }

    async fn start_full(clock: ClockChoice, procedures: std::path::PathBuf) -> Server {
        Server::start_at(clock, procedures, "org.toml".into(), false).await
    }

    async fn start_at(
        clock: ClockChoice,
        procedures: std::path::PathBuf,
        directory: std::path::PathBuf,
        watch: bool,
    ) -> Server {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let planted = json!({
            "users": { "shi.lan": sopflow::directory::token_hash(INACTIVE_TOKEN) }
        });
        std::fs::write(
            dir.path().join("demo-token-hashes.json"),
            serde_json::to_vec(&planted).expect("planted hashes as JSON"),
        )
        .expect("planted hashes written");
        let pg = PgDatabase::for_this_run();
        let cfg = ServeConfig {
            data_dir: dir.path().to_path_buf(),
            store_url: pg.as_ref().map(|d| d.url.clone()),
            procedures,
            directory,
            calendars: Some("calendars".into()),
            calendar: "default".into(),
            listen: "127.0.0.1:0".parse().expect("a socket address"),
            clock,
            limits: Limits::default(),
            demo_tokens: true,
            cache_bytes: 16 << 20,
            watch,
            outbox: Default::default(),
        };
        let bound = match bind(&cfg).await {
            Ok(b) => b,
            Err(e) => panic!("the server does not start: {e}"),
        };
        let addr = bound.addr;
        let state = bound.state.clone();
        let mut tokens: HashMap<String, String> = bound.issued_tokens.iter().cloned().collect();
        tokens.insert("shi.lan".into(), INACTIVE_TOKEN.into());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder().build().expect("an HTTP client");
        Server {
            addr,
            tokens,
            client,
            stop: Some(tx),
            task: Some(task),
            dir: Some(dir),
            state,
            pg,
        }
    }

    /// Stops the server gracefully, waits for it, and hands back the data directory.
    pub async fn stop(mut self) -> (Result<(), ServeError>, TempDir) {
        // The database outlives this server, as the data directory does: a restart opens
        // it again (`.ci/run` drops what test runs leave).
        if let Some(pg) = self.pg.take() {
            std::mem::forget(pg);
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let result = match self.task.take() {
            Some(t) => t.await.expect("the server task does not panic"),
            None => Ok(()),
        };
        let dir = self.dir.take().expect("the data directory");
        (result, dir)
    }

    /// Every key and value of the store, tree by tree (the store's id left out): equal
    /// dumps mean the store is byte-for-byte unchanged.
    pub fn dump(&self) -> sopflow::store::Dump {
        use sopflow::store::Store;
        self.state.engine.store().dump().expect("the store dumps")
    }

    /// The engine the server runs, for checks no endpoint offers (fold = snapshot).
    pub fn engine(&self) -> &sopflow::engine::service::Engine<sopflow::store::any::AnyStore> {
        &self.state.engine
    }

    /// The server's data directory (`--data-dir`), where it wrote `demo-tokens.txt`.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.as_ref().expect("the data directory").path()
    }

    /// The PostgreSQL database the server keeps instances in, when the suite runs on one.
    pub fn store_url(&self) -> Option<String> {
        self.pg.as_ref().map(|d| d.url.clone())
    }

    pub fn token(&self, user: &str) -> &str {
        self.tokens
            .get(user)
            .unwrap_or_else(|| panic!("no token for {user}"))
    }

    /// The users the server issued demo tokens to.
    pub fn issued_users(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tokens
            .keys()
            .filter(|u| u.as_str() != "shi.lan")
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request without checking the reply.
    /// POSTs a body larger than the server's limit. The server answers 413 from the
    /// Content-Length alone and closes without reading the rest, so whether the client
    /// finishes writing first is a race: `Some(status)` when the answer was read, `None`
    /// when the connection closed under the upload. Either way the body was refused.
    pub async fn post_oversized(
        &self,
        path: &str,
        user: &str,
        bytes: Vec<u8>,
    ) -> Option<StatusCode> {
        match self
            .client
            .post(self.url(path))
            .bearer_auth(self.token(user))
            .header(CONTENT_TYPE, "application/json")
            .body(bytes)
            .send()
            .await
        {
            Ok(r) => Some(r.status()),
            Err(e) if e.is_request() => None,
            Err(e) => panic!("POST {path}: {e}"),
        }
    }

    pub async fn send_unchecked(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Body,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.client.request(method.clone(), self.url(path));
        match auth {
            Auth::None => {}
            Auth::User(u) => req = req.bearer_auth(self.token(u)),
            Auth::Header(h) => req = req.header(AUTHORIZATION, h),
        }
        match body {
            Body::Empty => {}
            Body::Json(v) => req = req.json(&v),
            Body::Raw(ctype, bytes) => {
                if let Some(c) = ctype {
                    req = req.header(CONTENT_TYPE, c);
                }
                req = req.body(bytes);
            }
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: no reply: {e}"));
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: body unreadable: {e}"))
            .to_vec();
        Reply {
            status,
            headers,
            bytes,
        }
    }

    /// Sends a request and checks what every reply must satisfy.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Body,
        extra: &[(&str, &str)],
    ) -> Reply {
        let r = self
            .send_unchecked(method.clone(), path, auth, body, extra)
            .await;
        assert!(
            !r.status.is_server_error(),
            "{method} {path} answered {}: {}",
            r.status,
            r.text()
        );
        let request_id = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{method} {path}: no x-request-id header"));
        assert!(!request_id.is_empty());
        if r.status.is_client_error() {
            assert_problem(&r, &request_id, &format!("{method} {path}"));
        }
        r
    }

    pub async fn get_reply(&self, user: &str, path: &str) -> Reply {
        self.send(Method::GET, path, Auth::User(user), Body::Empty, &[])
            .await
    }

    pub async fn post_reply(&self, user: &str, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Auth::User(user), Body::Json(body), &[])
            .await
    }

    pub async fn get(&self, user: &str, path: &str) -> (StatusCode, Value) {
        let r = self.get_reply(user, path).await;
        let v = body_value(&r);
        (r.status, v)
    }

    pub async fn post(&self, user: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.post_reply(user, path, body).await;
        let v = body_value(&r);
        (r.status, v)
    }

    /// GET that must succeed; returns the JSON body.
    pub async fn get_ok(&self, user: &str, path: &str) -> Value {
        let (s, v) = self.get(user, path).await;
        assert_eq!(s, StatusCode::OK, "GET {path} as {user}: {v}");
        v
    }

    /// POST that must answer `want`; returns the JSON body.
    pub async fn post_expect(
        &self,
        user: &str,
        path: &str,
        body: Value,
        want: StatusCode,
    ) -> Value {
        let (s, v) = self.post(user, path, body).await;
        assert_eq!(s, want, "POST {path} as {user}: {v}");
        v
    }

    // -----------------------------------------------------------------------------------
    // Domain helpers
    // -----------------------------------------------------------------------------------

    /// Starts an instance; must answer 201 with a Location header naming it.
    pub async fn start_instance(&self, user: &str, procedure: &str, data: Value) -> Value {
        let r = self
            .post_reply(
                user,
                "/v1/instances",
                json!({ "procedure": procedure, "data": data }),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "starting {procedure} as {user}: {}",
            r.text()
        );
        let v = r.json();
        let id = v["id"].as_str().expect("instance id");
        assert_eq!(
            r.header("location").as_deref(),
            Some(format!("/v1/instances/{id}").as_str())
        );
        v
    }

    pub async fn start_complaint(&self, user: &str) -> Value {
        self.start_instance(user, "complaint-handling", complaint_data())
            .await
    }

    /// The instance as the admin sees it.
    pub async fn instance(&self, id: &str) -> Value {
        self.get_ok(ADMIN, &format!("/v1/instances/{id}")).await
    }

    /// The whole history as the admin sees it.
    pub async fn history(&self, id: &str) -> Vec<Value> {
        let v = self
            .get_ok(ADMIN, &format!("/v1/instances/{id}/history"))
            .await;
        v["events"].as_array().expect("events").clone()
    }

    /// What must not change when a request is refused: the instance as read and its history.
    pub async fn snapshot(&self, id: &str) -> (Value, Vec<Value>) {
        (self.instance(id).await, self.history(id).await)
    }

    /// Asserts that the instance is exactly as in `before`.
    pub async fn assert_unchanged(&self, id: &str, before: &(Value, Vec<Value>), what: &str) {
        let now = self.snapshot(id).await;
        assert_eq!(before.0, now.0, "{what}: the instance changed");
        assert_eq!(
            before.1.len(),
            now.1.len(),
            "{what}: the history grew: {:?}",
            now.1.last()
        );
    }

    /// Every instance id the admin can list (all pages).
    pub async fn all_instances(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => "/v1/instances?limit=500".to_string(),
                Some(c) => format!("/v1/instances?limit=500&cursor={c}"),
            };
            let page = self.get_ok(ADMIN, &path).await;
            for item in page["items"].as_array().expect("items") {
                out.push(item["id"].as_str().expect("id").to_string());
            }
            match page["next"].as_str() {
                Some(n) => cursor = Some(n.to_string()),
                None => break,
            }
        }
        out
    }

    /// Completes a task; returns the status and body.
    pub async fn complete(
        &self,
        user: &str,
        task: &str,
        outcome: Option<&str>,
        form: Value,
    ) -> (StatusCode, Value) {
        let mut body = json!({ "form": form });
        if let Some(o) = outcome {
            body["outcome"] = json!(o);
        }
        self.post(user, &format!("/v1/tasks/{task}/complete"), body)
            .await
    }

    /// Completes the one open task at `step` of `instance`; must succeed. Returns the
    /// instance after.
    pub async fn complete_step(
        &self,
        instance: &Value,
        step: &str,
        user: &str,
        outcome: Option<&str>,
        form: Value,
    ) -> Value {
        let task = task_at(instance, step);
        let (s, v) = self.complete(user, &task, outcome, form).await;
        assert_eq!(s, StatusCode::OK, "completing {step} as {user}: {v}");
        v
    }

    /// Completing `task` of `instance` as `user` must be refused with `want`, and change
    /// nothing.
    pub async fn refused_completion(
        &self,
        instance: &str,
        user: &str,
        task: &str,
        outcome: Option<&str>,
        form: Value,
        want: StatusCode,
    ) -> Value {
        let before = self.snapshot(instance).await;
        let (s, v) = self.complete(user, task, outcome, form).await;
        assert_eq!(s, want, "completing {task} as {user}: {v}");
        self.assert_unchanged(instance, &before, &format!("completion by {user}"))
            .await;
        v
    }

    /// A POST that must be refused with `want` and change nothing in `instance`.
    pub async fn refused_post(
        &self,
        instance: &str,
        user: &str,
        path: &str,
        body: Value,
        want: StatusCode,
    ) -> Value {
        let before = self.snapshot(instance).await;
        let (s, v) = self.post(user, path, body).await;
        assert_eq!(s, want, "POST {path} as {user}: {v}");
        self.assert_unchanged(instance, &before, &format!("POST {path} as {user}"))
            .await;
        v
    }

    /// Moves the manual clock; must succeed.
    pub async fn advance(&self, body: Value) -> Value {
        self.post_expect(ADMIN, "/v1/admin/clock/advance", body, StatusCode::OK)
            .await
    }

    /// The caller's worklist (task summaries).
    pub async fn worklist(&self, user: &str, query: &str) -> Vec<Value> {
        let path = if query.is_empty() {
            "/v1/tasks".to_string()
        } else {
            format!("/v1/tasks?{query}")
        };
        let v = self.get_ok(user, &path).await;
        v["items"].as_array().expect("items").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn body_value(r: &Reply) -> Value {
    if r.bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&r.bytes).unwrap_or_else(|_| Value::String(r.text()))
    }
}

/// The checks every 4xx reply must pass.
fn assert_problem(r: &Reply, request_id: &str, what: &str) {
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json"),
        "{what}: a {} without a problem body",
        r.status
    );
    let p: Value = serde_json::from_slice(&r.bytes)
        .unwrap_or_else(|e| panic!("{what}: problem body is not JSON ({e}): {}", r.text()));
    let kind = p["type"].as_str().unwrap_or_default();
    assert!(
        kind.starts_with("urn:sopflow:problem:") && kind.len() > "urn:sopflow:problem:".len(),
        "{what}: problem type {kind:?}"
    );
    assert!(
        p["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: {p}"
    );
    assert!(
        p["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: {p}"
    );
    assert_eq!(
        p["status"].as_u64(),
        Some(u64::from(r.status.as_u16())),
        "{what}: {p}"
    );
    assert_eq!(p["request_id"].as_str(), Some(request_id), "{what}: {p}");
    if r.status == StatusCode::UNAUTHORIZED {
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{what}: a 401 names the Bearer scheme"
        );
    }
}

/// The id of the one open task at `step` in an instance view.
pub fn task_at(instance: &Value, step: &str) -> String {
    let open: Vec<&Value> = instance["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["step"] == step)
        .collect();
    assert_eq!(
        open.len(),
        1,
        "expected one open task at {step}: {}",
        instance["tasks"]
    );
    open[0]["id"].as_str().expect("task id").to_string()
}

/// The steps of the open tasks, sorted.
pub fn open_steps(instance: &Value) -> Vec<String> {
    let mut v: Vec<String> = instance["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["step"].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

pub fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

/// The `kind`s of a history, in order.
pub fn kinds(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// (step, user, on behalf of) of every task completion in a history, in order.
pub fn completions(history: &[Value]) -> Vec<(String, String, Option<String>)> {
    history
        .iter()
        .filter(|e| e["kind"] == "task_completed")
        .map(|e| {
            (
                e["details"]["step"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["by"]["user"].as_str().unwrap_or_default().to_string(),
                e["by"]["on_behalf_of"].as_str().map(str::to_string),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Form values (the same as the engine tests use)
// ---------------------------------------------------------------------------------------

pub fn complaint_data() -> Value {
    json!({ "customer": "Hengxin Lifting", "contact": "Mr Li, 0731-555" })
}

pub fn registration(severity: &str) -> Value {
    json!({
        "channel": "hotline",
        "complaint": "Hoist brake slips under load",
        "severity": severity,
        "first_answer": "An engineer will call today", "received_at": "2026-11-02T08:30:00Z",
    })
}

pub fn resolution() -> Value {
    json!({ "resolution": "Brake pads replaced", "resolved_on": "2026-11-03" })
}

/// The management representative's decision on a major complaint (seed 000 §3: within 24
/// hours of its receipt).
pub fn management_plan() -> Value {
    json!({ "handling_plan": "Replace the hoist under warranty" })
}

/// Carrying out that plan.
pub fn management_handling() -> Value {
    json!({
        "resolution": "Hoist replaced",
        "resolved_on": "2026-11-04",
    })
}
