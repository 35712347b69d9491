//! The outbox end to end: webhooks and mail leave `sopflow serve` after their commit, at
//! least once, in each instance's order, signed per Standard Webhooks (verified here with
//! the `standardwebhooks` crate, an implementation independent of ours), retried after a
//! failing receiver, dead after their tries and retried by hand, never to internal
//! addresses unless allowed, and delivered after a `kill -9` with messages still queued.
//!
//! The receiver and the SMTP sink are written here, not taken from the project. Time moves
//! only through the manual clock; waiting for a delivery polls with a generous deadline
//! (a condition, never a sleep that hopes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use sopflow::http::server::{bind, ClockChoice, OutboxConfig, ServeConfig, ServeError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const SECRET_ENV: &str = "SOPFLOW_TEST_HOOK_SECRET";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(60);

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-02T09:00:00+08:00")
        .expect("an instant")
        .with_timezone(&chrono::Utc)
}

// ------------------------------------------------------------------------------------------
// The receiver
// ------------------------------------------------------------------------------------------

/// One call as the receiver saw it.
#[derive(Debug, Clone)]
struct Call {
    id: String,
    verified: bool,
    body: Value,
}

#[derive(Default)]
struct Inbox {
    /// The secret calls are verified with, when not `SECRET` (one made over the API).
    secret: Mutex<Option<String>>,
    /// Calls still to answer 503.
    fail: AtomicUsize,
    failed: AtomicUsize,
    calls: Mutex<Vec<Call>>,
}

impl Inbox {
    /// Each message once, by `webhook-id`, in the order of first arrival.
    fn unique(&self) -> Vec<Call> {
        let mut seen = HashSet::new();
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| seen.insert(c.id.clone()))
            .cloned()
            .collect()
    }
}

async fn hook(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let secret = inbox.secret.lock().unwrap().clone();
    let wh =
        standardwebhooks::Webhook::new(secret.as_deref().unwrap_or(SECRET)).expect("the secret");
    let verified = wh.verify(&body, &headers).is_ok();
    if inbox
        .fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        inbox.failed.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inbox
        .calls
        .lock()
        .unwrap()
        .push(Call { id, verified, body });
    StatusCode::NO_CONTENT
}

/// A receiver on a free port; its address and what it got.
async fn receiver(fail_first: usize) -> (String, Arc<Inbox>) {
    let inbox = Arc::new(Inbox::default());
    inbox.fail.store(fail_first, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), inbox)
}

// ------------------------------------------------------------------------------------------
// The SMTP sink: just enough of RFC 5321 for one client to hand over letters.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Letter {
    to: Vec<String>,
    data: String,
}

async fn smtp_sink() -> (u16, Arc<Mutex<Vec<Letter>>>) {
    let letters = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("its address").port();
    let keep = letters.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = tokio::io::BufReader::new(r).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let mut to = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250 sink\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        to.push(line[8..].trim().trim_matches(['<', '>']).to_string());
                        b"250 ok\r\n"
                    } else if upper.starts_with("DATA") {
                        let _ = w.write_all(b"354 go on\r\n").await;
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        keep.lock().unwrap().push(Letter {
                            to: std::mem::take(&mut to),
                            data,
                        });
                        b"250 queued\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    (port, letters)
}

// ------------------------------------------------------------------------------------------
// The server
// ------------------------------------------------------------------------------------------

struct Running {
    base: String,
    tokens: HashMap<String, String>,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    _dirs: Vec<tempfile::TempDir>,
}

fn webhooks_file(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("webhooks.toml");
    std::fs::write(
        &path,
        format!(
            "[[subscription]]\nid = \"crm\"\nurl = \"{url}\"\nevents = [\"*\"]\nsecret_env = \"{SECRET_ENV}\"\n{extra}"
        ),
    )
    .expect("webhooks file written");
    path
}

fn config(data: &Path, outbox: OutboxConfig) -> ServeConfig {
    config_with(data, outbox, "org.toml".into())
}

fn config_with(data: &Path, outbox: OutboxConfig, directory: PathBuf) -> ServeConfig {
    // Every test sets the same value: parallel tests cannot disagree about it.
    std::env::set_var(SECRET_ENV, SECRET);
    ServeConfig {
        data_dir: data.to_path_buf(),
        store_url: None,
        procedures: "procedures".into(),
        directory,
        calendars: None,
        calendar: "default".into(),
        listen: "127.0.0.1:0".parse().expect("address"),
        clock: ClockChoice::Manual(Some(t0())),
        limits: sopflow::http::Limits::default(),
        demo_tokens: true,
        cache_bytes: 16 << 20,
        watch: false,
        outbox,
    }
}

async fn start(outbox: OutboxConfig, dirs: Vec<tempfile::TempDir>) -> Running {
    start_with(outbox, dirs, "org.toml".into()).await
}

async fn start_with(
    outbox: OutboxConfig,
    dirs: Vec<tempfile::TempDir>,
    directory: PathBuf,
) -> Running {
    let data = tempfile::tempdir().expect("a data directory");
    let bound = match bind(&config_with(data.path(), outbox, directory)).await {
        Ok(b) => b,
        Err(e) => panic!("the server does not start: {e}"),
    };
    let base = format!("http://{}", bound.addr);
    let tokens = bound.issued_tokens.iter().cloned().collect();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    let mut dirs = dirs;
    dirs.push(data);
    Running {
        base,
        tokens,
        client: reqwest::Client::new(),
        stop: Some(tx),
        task,
        _dirs: dirs,
    }
}

impl Running {
    async fn call(&self, user: &str, post: Option<Value>, path: &str) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let token = self.tokens.get(user).expect("a demo token");
        let req = match post {
            Some(body) => self.client.post(url).json(&body),
            None => self.client.get(url),
        };
        let r = req.bearer_auth(token).send().await.expect("a reply");
        let status = StatusCode::from_u16(r.status().as_u16()).expect("a status");
        let v = r.json().await.unwrap_or(Value::Null);
        (status, v)
    }

    async fn delete(&self, user: &str, path: &str) -> u16 {
        let token = self.tokens.get(user).expect("a demo token");
        let r = self.client.delete(format!("{}{path}", self.base));
        r.bearer_auth(token)
            .send()
            .await
            .expect("a reply")
            .status()
            .as_u16()
    }

    async fn ok(&self, user: &str, post: Option<Value>, path: &str) -> Value {
        let (s, v) = self.call(user, post, path).await;
        assert!(s.is_success(), "{path} as {user}: {s} {v}");
        v
    }

    async fn start_complaint(&self) -> Value {
        self.ok(
            "xu.na",
            Some(json!({ "procedure": "complaint-handling",
                         "data": { "customer": "Hengxin Lifting", "contact": "Mr Li" } })),
            "/v1/instances",
        )
        .await
    }

    async fn advance(&self, by: &str) {
        self.ok(
            "it.admin",
            Some(json!({ "by": by })),
            "/v1/admin/clock/advance",
        )
        .await;
    }

    async fn deliveries(&self, state: &str) -> Vec<Value> {
        let v = self
            .ok(
                "it.admin",
                None,
                &format!("/v1/admin/deliveries?state={state}&limit=500"),
            )
            .await;
        v["items"].as_array().expect("items").clone()
    }

    /// The sent deliveries to `destination`, once there are `n` of them: a message reaches
    /// its receiver before the sender's commit records it as sent, so this waits for that.
    async fn sent_to(&self, destination: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let sent: Vec<Value> = self
                .deliveries("sent")
                .await
                .into_iter()
                .filter(|d| d["destination"] == destination)
                .collect();
            if sent.len() >= n {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {n} sent to {destination}: {sent:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `webhook-id`s the events of `instance` of a subscribed type must arrive under.
    async fn expected_ids(&self, instance: &str) -> Vec<String> {
        let v = self
            .ok(
                "it.admin",
                None,
                &format!("/v1/instances/{instance}/history"),
            )
            .await;
        let simple = instance.replace('-', "");
        v["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| {
                matches!(
                    e["kind"].as_str(),
                    Some(
                        "started"
                            | "task_opened"
                            | "task_claimed"
                            | "task_completed"
                            | "ended"
                            | "cancelled"
                            | "deadline_reminded"
                            | "deadline_breached"
                            | "notified"
                    )
                )
            })
            .map(|e| format!("msg_{simple}_{}", e["seq"]))
            .collect()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task
            .await
            .expect("the server task does not panic")
            .expect("the server stops cleanly");
    }
}

/// Polls `done` until it holds, moving the manual clock by `step` between looks when
/// given (failed deliveries wait for their backoff on the server's clock).
async fn wait_for<F: Fn() -> bool>(srv: &Running, step: Option<&str>, what: &str, done: F) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        if let Some(by) = step {
            srv.advance(by).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_signed_and_in_order_after_the_receiver_recovers() {
    let (url, inbox) = receiver(3).await;
    let dir = tempfile::tempdir().expect("a directory");
    let file = webhooks_file(dir.path(), &url, "allow_private = true\n");
    let srv = start(
        OutboxConfig {
            webhooks: Some(file),
            public_url: Some("https://flow.example.com".into()),
            ..OutboxConfig::default()
        },
        vec![dir],
    )
    .await;
    let mut expected = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let inst = srv.start_complaint().await;
        let id = inst["id"].as_str().expect("an id").to_string();
        let task = inst["tasks"][0]["id"].as_str().expect("a task").to_string();
        srv.ok("xu.na", Some(json!({})), &format!("/v1/tasks/{task}/claim"))
            .await;
        ids.push(id);
    }
    for id in &ids {
        expected.extend(srv.expected_ids(id).await);
    }
    assert_eq!(
        expected.len(),
        9,
        "started, task opened, claimed per instance"
    );
    let want: HashSet<String> = expected.iter().cloned().collect();
    wait_for(&srv, Some("PT1M"), "every message", || {
        inbox
            .unique()
            .iter()
            .map(|c| &c.id)
            .collect::<HashSet<_>>()
            .len()
            >= want.len()
    })
    .await;
    let got = inbox.unique();
    let got_ids: HashSet<String> = got.iter().map(|c| c.id.clone()).collect();
    assert_eq!(
        got_ids, want,
        "each event once after de-duplication, nothing else"
    );
    assert_eq!(
        inbox.failed.load(Ordering::SeqCst),
        3,
        "the first three calls failed"
    );
    for c in inbox.calls.lock().unwrap().iter() {
        assert!(c.verified, "{} verifies with standardwebhooks", c.id);
    }
    // Per instance, the messages arrived in the order of its history.
    let mut by_instance: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in &got {
        let data = &c.body["data"];
        assert_eq!(data["schema"], "sopflow.webhook/1");
        by_instance
            .entry(data["instance"].as_str().expect("instance").to_string())
            .or_default()
            .push(data["seq"].as_u64().expect("seq"));
        assert!(c.body["type"].is_string() && c.body["timestamp"].is_string());
        assert!(data["link"]
            .as_str()
            .is_some_and(|l| l.starts_with("https://flow.example.com/instances/")));
    }
    for (inst, seqs) in &by_instance {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(
            seqs, &sorted,
            "the messages of {inst} arrived in history order"
        );
    }
    // The administrator sees them sent, and nothing left.
    wait_for(&srv, None, "the last settle", || true).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let sent = srv.deliveries("sent").await;
        let pending = srv.deliveries("pending").await;
        if sent.len() == 9 && pending.is_empty() {
            assert!(sent.iter().all(|d| d["destination"] == "hook:crm"));
            assert!(sent.iter().any(|d| d["attempts"].as_u64() > Some(1)));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sent {} pending {}",
            sent.len(),
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, _) = srv.call("xu.na", None, "/v1/admin/deliveries").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only an admin reads the outbox");
    let subs = srv.ok("it.admin", None, "/v1/admin/webhooks").await;
    assert_eq!(subs[0]["id"], "crm");
    assert!(!subs.to_string().contains("whsec"), "no secret is shown");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_to_an_internal_address_is_refused_when_the_file_loads() {
    let dir = tempfile::tempdir().expect("a directory");
    let data = tempfile::tempdir().expect("a data directory");
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://[::1]/x",
        "file:///etc/passwd",
    ] {
        let file = webhooks_file(dir.path(), url, "");
        let err = match bind(&config(
            data.path(),
            OutboxConfig {
                webhooks: Some(file),
                ..OutboxConfig::default()
            },
        ))
        .await
        {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("webhooks.toml:3:7"), "{url}: located: {err}");
        let words = err.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains("only call public addresses")
                || words.contains("only http:// and https://"),
            "{url}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_delivery_is_kept_and_sent_when_retried_by_hand() {
    let (url, inbox) = receiver(usize::MAX).await;
    let dir = tempfile::tempdir().expect("a directory");
    let file = webhooks_file(
        dir.path(),
        &url,
        "allow_private = true\nprocedures = [\"complaint-handling\"]\n",
    );
    let srv = start(
        OutboxConfig {
            webhooks: Some(file),
            ..OutboxConfig::default()
        },
        vec![dir],
    )
    .await;
    srv.start_complaint().await;
    let deadline = Instant::now() + WAIT;
    let dead = loop {
        let dead = srv.deliveries("dead").await;
        if !dead.is_empty() {
            break dead;
        }
        assert!(Instant::now() < deadline, "nothing died");
        srv.advance("PT1H").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first = &dead[0];
    assert_eq!(first["attempts"], 10, "{first}");
    assert!(first["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("503")));
    // The receiver is fixed; the administrator sends the dead ones again.
    inbox.fail.store(0, Ordering::SeqCst);
    let deadline = Instant::now() + WAIT;
    loop {
        for d in srv.deliveries("dead").await {
            srv.ok(
                "it.admin",
                Some(json!({ "instance": d["instance"], "seq": d["seq"], "destination": d["destination"] })),
                "/v1/admin/deliveries/retry",
            )
            .await;
        }
        if srv.deliveries("pending").await.is_empty() && srv.deliveries("dead").await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retried deliveries did not arrive"
        );
        // Messages queued behind the dead one wait out their own backoff.
        srv.advance("PT1H").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent: HashSet<String> = srv
        .deliveries("sent")
        .await
        .iter()
        .map(|d| d["message_id"].as_str().expect("an id").to_string())
        .collect();
    let got: HashSet<String> = inbox.unique().into_iter().map(|c| c.id).collect();
    assert_eq!(got, sent, "everything sent arrived, and nothing else");
    assert!(got.contains(first["message_id"].as_str().expect("an id")));
    let (s, v) = srv
        .call(
            "it.admin",
            Some(json!({ "instance": first["instance"], "seq": first["seq"], "destination": "hook:crm" })),
            "/v1/admin/deliveries/retry",
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "no longer dead: {v}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breach_notice_reaches_the_mail_sink_dated_at_the_breach() {
    let (port, letters) = smtp_sink().await;
    let srv = start(
        OutboxConfig {
            smtp_url: Some(format!("smtp://127.0.0.1:{port}")),
            mail_from: Some("sopflow <sopflow@example.com>".into()),
            public_url: Some("https://flow.example.com".into()),
            ..OutboxConfig::default()
        },
        Vec::new(),
    )
    .await;
    let inst = srv.start_complaint().await;
    let id = inst["id"].as_str().expect("an id").to_string();
    // Registration is due in 24 h; late, the management representative gets the task, and a
    // working day later the general manager is told (procedures/complaint-handling.toml).
    srv.advance("P3D").await;
    let history = srv
        .ok("it.admin", None, &format!("/v1/instances/{id}/history"))
        .await;
    let notified = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "notified")
        .cloned()
        .expect("the general manager was told");
    wait_for(&srv, None, "the notice to the general managers", || {
        let l = letters.lock().unwrap();
        ["zhao.gang@example.com", "zhou.min@example.com"]
            .iter()
            .all(|a| {
                l.iter()
                    .any(|m| m.to.iter().any(|t| t == a) && m.data.contains("Notice"))
            })
    })
    .await;
    let l = letters.lock().unwrap().clone();
    let notice = l
        .iter()
        .find(|m| m.to.iter().any(|t| t == "zhao.gang@example.com") && m.data.contains("Notice"))
        .expect("a notice");
    assert!(notice.data.contains(&id), "{}", notice.data);
    assert!(
        notice.data.contains("From: sopflow <sopflow@example.com>"),
        "{}",
        notice.data
    );
    // The delivery records the event it answers, at the breach's own instant.
    let sent = srv.sent_to("mail:zhao.gang", 1).await;
    let d = sent
        .iter()
        .find(|d| d["seq"] == notified["seq"])
        .expect("the notice's delivery");
    assert_eq!(d["at"], notified["at"]);
    // The reminder 4 h before the due time went to the follow-up staff with an address.
    assert!(l.iter().any(|m| m.data.contains("Reminder")));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_with_a_daily_digest_gets_the_days_notices_in_one_letter_at_eight() {
    // The shipped directory, with one general manager asking for a daily digest.
    let dir = tempfile::tempdir().expect("a directory");
    let org = std::fs::read_to_string("org.toml").expect("org.toml");
    let org = org.replace(
        "email = \"zhao.gang@example.com\"",
        "email = \"zhao.gang@example.com\"\ndigest = \"daily\"",
    );
    assert!(org.contains("digest = \"daily\""));
    let directory = dir.path().join("org.toml");
    std::fs::write(&directory, org).expect("written");
    let (port, letters) = smtp_sink().await;
    let srv = start_with(
        OutboxConfig {
            smtp_url: Some(format!("smtp://127.0.0.1:{port}")),
            mail_from: Some("sopflow <sopflow@example.com>".into()),
            ..OutboxConfig::default()
        },
        vec![dir],
        directory,
    )
    .await;
    // Two complaints left unregistered (t0 is Monday 2026-11-02 09:00 in Shanghai): late
    // after 24 h, and a working day later the general managers are told (Wednesday 09:00).
    let a = srv.start_complaint().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = srv.start_complaint().await["id"]
        .as_str()
        .unwrap()
        .to_string();
    srv.advance("PT49H").await;
    let to = |who: &str| {
        let l = letters.lock().unwrap();
        l.iter()
            .filter(|m| m.to.iter().any(|t| t == who))
            .cloned()
            .collect::<Vec<_>>()
    };
    // Zhou Min gets each notice at once; the letters to her went out in the same passes that
    // looked at Zhao Gang's digest, which is not due before Thursday 08:00.
    wait_for(&srv, None, "zhou.min's two notices", || {
        to("zhou.min@example.com")
            .iter()
            .filter(|m| m.data.contains("Notice"))
            .count()
            == 2
    })
    .await;
    assert!(
        to("zhao.gang@example.com").is_empty(),
        "held for the digest"
    );
    let pending = srv.deliveries("pending").await;
    let held: Vec<_> = pending
        .iter()
        .filter(|d| d["destination"] == "digest:zhao.gang")
        .collect();
    assert_eq!(held.len(), 2, "{pending:?}");
    for d in &held {
        assert_eq!(
            d["next_attempt"], "2026-11-05T00:00:00Z",
            "Thursday 08:00 in Shanghai: {d}"
        );
    }
    // Thursday 08:00: one letter with both.
    srv.advance("PT22H").await;
    wait_for(&srv, None, "zhao.gang's digest", || {
        !to("zhao.gang@example.com").is_empty()
    })
    .await;
    let got = to("zhao.gang@example.com");
    assert_eq!(got.len(), 1, "one letter: {got:?}");
    let data = &got[0].data;
    assert!(
        data.contains("Subject: [sopflow] Digest: 2 notices"),
        "{data}"
    );
    assert!(data.contains(&a) && data.contains(&b), "{data}");
    assert!(data.contains("Message-ID: <digest."), "{data}");
    // Each notice recorded as sent.
    assert_eq!(srv.sent_to("digest:zhao.gang", 2).await.len(), 2);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_over_the_api_signs_with_the_secret_shown_once_until_removed() {
    let (url, inbox) = receiver(0).await;
    let srv = start(OutboxConfig::default(), Vec::new()).await;
    let new =
        json!({ "id": "erp", "url": url, "events": ["instance.started"], "allow_private": true });
    let (s, v) = srv
        .call("xu.na", Some(new.clone()), "/v1/admin/webhooks")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "staff may not: {v}");
    let (s, made) = srv
        .call("it.admin", Some(new.clone()), "/v1/admin/webhooks")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let secret = made["secret"]
        .as_str()
        .expect("the secret, this once")
        .to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(made["subscription"]["source"], "api");
    assert_eq!(made["subscription"]["created_by"], "it.admin");
    *inbox.secret.lock().unwrap() = Some(secret.clone());
    // Refused, changing nothing: the same id again; an internal address not allowed; an
    // event type that does not exist.
    let (s, v) = srv.call("it.admin", Some(new), "/v1/admin/webhooks").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    for (bad, status) in [
        (
            json!({ "id": "meta", "url": "http://169.254.169.254/latest", "events": ["*"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "id": "typo", "url": "https://erp.example.com/", "events": ["task.done"] }),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, v) = srv.call("it.admin", Some(bad), "/v1/admin/webhooks").await;
        assert_eq!(s, status, "{v}");
    }
    let listed = srv.ok("it.admin", None, "/v1/admin/webhooks").await;
    let ids: Vec<_> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|h| h["id"].clone())
        .collect();
    assert_eq!(ids, [json!("erp")], "{listed}");
    assert!(
        !listed.to_string().contains(&secret[6..]),
        "never listed: {listed}"
    );
    // Events are routed to it and signed with that secret (verified by the other crate).
    let inst = srv.start_complaint().await;
    let id = inst["id"].as_str().unwrap().replace('-', "");
    wait_for(&srv, None, "the call to the new subscription", || {
        !inbox.calls.lock().unwrap().is_empty()
    })
    .await;
    let calls = inbox.unique();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].verified, "signed with the secret shown once");
    assert_eq!(calls[0].id, format!("msg_{id}_1"));
    assert_eq!(calls[0].body["type"], "instance.started");
    // Removed: nothing more is queued for it; removing it again is 404.
    assert_eq!(srv.delete("it.admin", "/v1/admin/webhooks/erp").await, 204);
    assert_eq!(srv.delete("it.admin", "/v1/admin/webhooks/erp").await, 404);
    srv.start_complaint().await;
    let queued = srv.deliveries("pending").await;
    assert!(
        queued.iter().all(|d| d["destination"] != "hook:erp"),
        "{queued:?}"
    );
    let listed = srv.ok("it.admin", None, "/v1/admin/webhooks").await;
    assert_eq!(listed, json!([]));
    srv.stop().await;
}

// ------------------------------------------------------------------------------------------
// kill -9 with messages queued
// ------------------------------------------------------------------------------------------

struct Child {
    child: std::process::Child,
    base: String,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(data: &Path, webhooks: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--clock",
            "manual",
            "--cache-mib",
            "16",
        ])
        .arg("--clock-start")
        .arg(t0().to_rfc3339())
        .arg("--data-dir")
        .arg(data)
        .arg("--webhooks")
        .arg(webhooks)
        .arg("--no-watch")
        .env(SECRET_ENV, SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server runs");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the server says it is serving")
            .expect("a line");
        if let Some(rest) = line.strip_prefix("sopflow serving ") {
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_string();
        }
    };
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Child { child, base }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_at_a_kill_9_are_delivered_after_the_restart() {
    let (url, inbox) = receiver(usize::MAX).await;
    let dir = tempfile::tempdir().expect("a directory");
    let file = webhooks_file(dir.path(), &url, "allow_private = true\n");
    let data = tempfile::tempdir().expect("a data directory");
    let first = spawn_server(data.path(), &file);
    let tokens: HashMap<String, String> =
        std::fs::read_to_string(data.path().join("demo-tokens.txt"))
            .expect("demo tokens")
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.to_string()))
            })
            .collect();
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let v: Value = client
            .post(format!("{}/v1/instances", first.base))
            .bearer_auth(&tokens["xu.na"])
            .json(&json!({ "procedure": "complaint-handling",
                           "data": { "customer": "Hengxin Lifting", "contact": "Mr Li" } }))
            .send()
            .await
            .expect("a reply")
            .json()
            .await
            .expect("JSON");
        ids.push(v["id"].as_str().expect("an id").replace('-', ""));
    }
    // The receiver refuses everything until the kill: every message is still queued.
    drop(first);
    inbox.fail.store(0, Ordering::SeqCst);
    let second = spawn_server(data.path(), &file);
    let want: HashSet<String> = ids
        .iter()
        .flat_map(|id| [format!("msg_{id}_1"), format!("msg_{id}_2")])
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let got: HashSet<String> = inbox.unique().into_iter().map(|c| c.id).collect();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart got {} of {}: {got:?}",
            got.len(),
            want.len()
        );
        // The restarted clock starts at t0 again: the failed ones wait for their backoff.
        let r = client
            .post(format!("{}/v1/admin/clock/advance", second.base))
            .bearer_auth(&tokens["it.admin"])
            .json(&json!({ "by": "PT1M" }))
            .send()
            .await
            .expect("a reply");
        assert!(r.status().is_success(), "{}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------------------------------
// The live event stream
// ------------------------------------------------------------------------------------------

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<String>,
    event: String,
    data: Value,
}

/// A reader of `GET /v1/events/stream` (or the web app's `/events`).
struct Stream {
    res: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(srv: &Running, user: &str, last_event_id: Option<&str>) -> Stream {
        let mut req = srv
            .client
            .get(format!("{}/v1/events/stream", srv.base))
            .bearer_auth(&srv.tokens[user]);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.expect("the stream opens");
        assert_eq!(res.status().as_u16(), 200);
        assert!(res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")));
        Stream {
            res,
            buf: String::new(),
        }
    }

    /// The next event that is not a keep-alive comment.
    async fn next(&mut self) -> Sse {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Sse {
                    id,
                    event,
                    data: serde_json::from_str(&data).expect("JSON data"),
                };
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk())
                .await
                .expect("an event within the wait")
                .expect("the stream stays open")
                .expect("more of the stream");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_shows_each_person_what_they_may_see_and_resumes_after_an_id() {
    let srv = start(OutboxConfig::default(), Vec::new()).await;
    let mut admin = Stream::open(&srv, "it.admin", None).await;
    let mut xu = Stream::open(&srv, "xu.na", None).await;
    // The general manager holds no role the complaint's first step is offered to.
    let mut zhao = Stream::open(&srv, "zhao.gang", None).await;
    let inst = srv.start_complaint().await;
    let id = inst["id"].as_str().expect("an id").to_string();
    let task = inst["tasks"][0]["id"].as_str().expect("a task").to_string();

    let started = admin.next().await;
    assert_eq!(started.event, "event");
    assert_eq!(started.data["kind"], "started");
    assert_eq!(started.data["instance"], json!(id));
    assert_eq!(started.data["user"], "xu.na");
    assert!(
        started.data.get("data").is_none(),
        "a summary, never the form data"
    );
    let opened = admin.next().await;
    assert_eq!(opened.data["kind"], "task_opened");
    assert_eq!(opened.data["task"], json!(task));

    // Xu Na sees her own start and the task offered to her role.
    assert_eq!(xu.next().await.data["kind"], "started");
    assert_eq!(xu.next().await.data["task"], json!(task));

    // Zhao Gang sees neither: the first thing he sees is what he does himself.
    let own = srv
        .ok(
            "zhao.gang",
            Some(json!({ "procedure": "copy-reissue", "data": {
                "document_number": "QP-7.2", "document_title": "Complaint handling",
                "distribution_number": "D-12", "holder_department": "general_management",
                "applicant": "zhao.gang" } })),
            "/v1/instances",
        )
        .await;
    let first = zhao.next().await;
    assert_eq!(first.data["kind"], "started", "{first:?}");
    assert_eq!(first.data["instance"], own["id"]);
    assert_eq!(first.data["user"], "zhao.gang");

    // An auditor who lost the connection after the start resumes from its id: the events
    // after it come first, replayed, then the live ones, none twice.
    drop(admin);
    // Resuming replays from a few seconds before that event (an event committed a moment
    // later may carry an earlier time), so repeats are possible and dropped by id.
    let mut again = Stream::open(&srv, "jiang.audit", started.id.as_deref()).await;
    let want: HashSet<String> = [opened.id.clone(), Some(first.id.clone().expect("an id"))]
        .into_iter()
        .flatten()
        .collect();
    let mut got = HashSet::new();
    for _ in 0..200 {
        let e = again.next().await;
        let eid = e.id.clone().expect("an id");
        assert_ne!(
            e.id, started.id,
            "the event resumed after is not sent again"
        );
        got.insert(eid);
        if want.is_subset(&got) {
            break;
        }
    }
    assert!(
        want.is_subset(&got),
        "replayed: the task opened and Zhao Gang's start"
    );
    srv.ok("xu.na", Some(json!({})), &format!("/v1/tasks/{task}/claim"))
        .await;
    let live = loop {
        let e = again.next().await;
        if e.data["kind"] == "task_claimed" {
            break e;
        }
    };
    assert_eq!(live.data["task"], json!(task));

    // Someone who may not replay is told to reload instead.
    let mut back = Stream::open(&srv, "xu.na", started.id.as_deref()).await;
    assert_eq!(back.next().await.event, "reset");
    let (s, _) = srv
        .call("it.admin", None, "/v1/events/stream?after=not-a-cursor")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    srv.stop().await;
}
