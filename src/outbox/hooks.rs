//! The webhook subscriptions file (`webhooks.toml`): who outside hears of what. Read and
//! checked like a procedure — TOML syntax, the JSON Schema (`schemas/webhooks.schema.json`),
//! then meaning (URLs, secrets, duplicate ids) — every finding located for the person who
//! edits it; a file with an error yields no subscriptions and, on a reload, leaves the ones
//! in force unchanged.
//!
//! ```toml
//! #:schema schemas/webhooks.schema.json
//! [[subscription]]
//! id = "crm"
//! url = "https://crm.example.com/hooks/sopflow"
//! events = ["instance.started", "instance.ended", "task.breached"]
//! procedures = ["customer-complaint"]       # optional: only these procedures
//! secret_env = "SOPFLOW_WEBHOOK_CRM_SECRET" # the signing secret is read from here
//! ```
//!
//! A signing secret never appears in the file (it would end up in the repository): the file
//! names the environment variable holding it. This module must not log or render a secret.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::definition::diagnostic::{Diagnostic, FileReport};
use crate::definition::source::{ptr, SpannedDoc};

/// The event types a subscription can name, as they appear in a payload's `type`.
pub const EVENT_TYPES: [&str; 11] = [
    "instance.started",
    "instance.ended",
    "instance.cancelled",
    "task.opened",
    "task.claimed",
    "task.completed",
    "task.reminded",
    "task.breached",
    "notification",
    "deployment",
    "*",
];

/// The subscriptions file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sopflow webhook subscriptions")]
pub struct HooksFile {
    /// One table per receiver (`[[subscription]]`).
    #[serde(default, rename = "subscription")]
    pub subscriptions: Vec<SubscriptionSpec>,
}

/// One receiver and what it hears of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// Identifier, shown in the delivery list (`hook:<id>`): lower-case letters, digits,
    /// `_` and `-`. Keep it once deliveries exist: they are filed under it.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"), length(max = 64))]
    pub id: String,

    /// Where to POST: an `http://` or `https://` address. Addresses on this machine or the
    /// private network are refused unless `allow_private = true`.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,

    /// The event types to send (`instance.started`, `instance.ended`, `instance.cancelled`,
    /// `task.opened`, `task.claimed`, `task.completed`, `task.reminded`, `task.breached`,
    /// `notification`, `deployment`), or `"*"` for all of them.
    #[schemars(length(min = 1))]
    pub events: Vec<EventType>,

    /// Only events of these procedures (ids); every procedure when left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub procedures: Vec<String>,

    /// The environment variable holding the signing secret (`whsec_` followed by base64, as
    /// Standard Webhooks receivers expect, or any text of at least 24 characters).
    #[schemars(regex(pattern = r"^[A-Z_][A-Z0-9_]*$"))]
    pub secret_env: String,

    /// Allow an address on this machine or the private network (loopback, link-local,
    /// private ranges): only for a receiver you run yourself. Off by default so that a
    /// subscription cannot be used to reach internal services.
    #[serde(default)]
    pub allow_private: bool,

    /// Pause deliveries to this receiver: messages are still queued, and sent once it is
    /// enabled again.
    #[serde(default)]
    pub paused: bool,
}

/// An event type a subscription names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "instance.started")]
    InstanceStarted,
    #[serde(rename = "instance.ended")]
    InstanceEnded,
    #[serde(rename = "instance.cancelled")]
    InstanceCancelled,
    #[serde(rename = "task.opened")]
    TaskOpened,
    #[serde(rename = "task.claimed")]
    TaskClaimed,
    #[serde(rename = "task.completed")]
    TaskCompleted,
    #[serde(rename = "task.reminded")]
    TaskReminded,
    #[serde(rename = "task.breached")]
    TaskBreached,
    #[serde(rename = "notification")]
    Notification,
    #[serde(rename = "deployment")]
    Deployment,
    #[serde(rename = "*")]
    All,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::InstanceStarted => EVENT_TYPES[0],
            EventType::InstanceEnded => EVENT_TYPES[1],
            EventType::InstanceCancelled => EVENT_TYPES[2],
            EventType::TaskOpened => EVENT_TYPES[3],
            EventType::TaskClaimed => EVENT_TYPES[4],
            EventType::TaskCompleted => EVENT_TYPES[5],
            EventType::TaskReminded => EVENT_TYPES[6],
            EventType::TaskBreached => EVENT_TYPES[7],
            EventType::Notification => EVENT_TYPES[8],
            EventType::Deployment => EVENT_TYPES[9],
            EventType::All => EVENT_TYPES[10],
        }
    }
}

/// A checked subscription, ready for routing and sending.
#[derive(Clone, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub url: reqwest::Url,
    pub events: Vec<String>,
    pub procedures: Vec<String>,
    /// The HMAC key (the bytes after `whsec_`, base64-decoded, or the text itself).
    pub key: Arc<[u8]>,
    pub allow_private: bool,
    pub paused: bool,
}

impl std::fmt::Debug for Subscription {
    // Hand-written so the key can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .field("procedures", &self.procedures)
            .field("allow_private", &self.allow_private)
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Whether an event of `kind` of `procedure` goes to this receiver.
    pub fn wants(&self, kind: &str, procedure: &str) -> bool {
        (self.events.iter().any(|e| e == "*" || e == kind))
            && (self.procedures.is_empty() || self.procedures.iter().any(|p| p == procedure))
    }

    /// The destination deliveries to it are filed under.
    pub fn destination(&self) -> String {
        format!("hook:{}", self.id)
    }
}

/// The file's schema, as checked in at `schemas/webhooks.schema.json`.
pub fn hooks_schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(crate::definition::schema::schema_for::<HooksFile>)
}

fn hooks_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    // Generated from our own types: a schema that does not compile is a bug caught by the
    // schema test, not something a file can cause.
    V.get_or_init(|| {
        crate::definition::schema::validator(hooks_schema()).expect("webhooks schema compiles")
    })
}

/// Reads and checks a subscriptions file; `env` looks up the secrets' variables. The
/// subscriptions come back only when the file has no error.
pub fn load(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<Vec<Subscription>>, FileReport) {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_text(&name, &text, env),
        Err(e) => (
            None,
            FileReport {
                path: name,
                source: Arc::from(""),
                diagnostics: vec![Diagnostic::error(
                    "unreadable-file",
                    format!("the webhooks file cannot be read as UTF-8 text: {e}"),
                )],
            },
        ),
    }
}

/// Checks a subscriptions file given as text (`name` is used in the report only).
pub fn load_text(
    name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<Vec<Subscription>>, FileReport) {
    let (subs, diagnostics) = parse(text, env);
    let mut report = FileReport {
        path: name.to_string(),
        source: Arc::from(text),
        diagnostics,
    };
    report.sort();
    let ok = report.errors() == 0;
    (subs.filter(|_| ok), report)
}

fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<Vec<Subscription>>, Vec<Diagnostic>) {
    let doc = match SpannedDoc::parse(text) {
        Ok(doc) => doc,
        Err(errs) => return (None, errs),
    };
    let found = crate::definition::schema::check(&doc, hooks_schema(), hooks_validator());
    if !found.is_empty() {
        return (None, found);
    }
    let file = match serde_json::from_value::<HooksFile>(doc.value.clone()) {
        Ok(f) => f,
        Err(e) => {
            return (
                None,
                vec![
                    Diagnostic::error("schema", format!("the file could not be read: {e}"))
                        .at(doc.first_key_span()),
                ],
            )
        }
    };
    let mut out = Vec::new();
    let mut subs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, s) in file.subscriptions.iter().enumerate() {
        let at = |key: &str| doc.value_span(&ptr(&["subscription", &i.to_string(), key]));
        if !seen.insert(s.id.as_str()) {
            out.push(
                Diagnostic::error(
                    "duplicate-subscription",
                    format!("two subscriptions are called `{}`", s.id),
                )
                .at(at("id"))
                .help("give each subscription its own id"),
            );
        }
        let url = match check_url(&s.url) {
            Ok(u) => Some(u),
            Err(why) => {
                out.push(
                    Diagnostic::error("bad-webhook-url", why)
                        .at(at("url"))
                        .help("write the receiver's full address, e.g. https://crm.example.com/hooks/sopflow"),
                );
                None
            }
        };
        if let Some(u) = &url {
            if !s.allow_private {
                if let Some(why) = super::ssrf::literal_refusal(u) {
                    out.push(
                        Diagnostic::error("private-webhook-url", why)
                            .at(at("url"))
                            .help("a receiver on this machine or the private network needs `allow_private = true`"),
                    );
                }
            }
        }
        let key = match env(&s.secret_env) {
            None => {
                out.push(
                    Diagnostic::error(
                        "missing-webhook-secret",
                        format!(
                            "the environment variable `{}` holding this subscription's signing \
                             secret is not set",
                            s.secret_env
                        ),
                    )
                    .at(at("secret_env"))
                    .help("set it in the server's environment (e.g. whsec_ followed by base64 of 24 or more random bytes)"),
                );
                None
            }
            Some(secret) => match super::sign::key_from_secret(&secret) {
                Ok(k) => Some(k),
                Err(why) => {
                    out.push(
                        Diagnostic::error(
                            "bad-webhook-secret",
                            format!("the secret in `{}` {why}", s.secret_env),
                        )
                        .at(at("secret_env")),
                    );
                    None
                }
            },
        };
        if let (Some(url), Some(key)) = (url, key) {
            subs.push(Subscription {
                id: s.id.clone(),
                url,
                events: s.events.iter().map(|e| e.as_str().to_string()).collect(),
                procedures: s.procedures.clone(),
                key: key.into(),
                allow_private: s.allow_private,
                paused: s.paused,
            });
        }
    }
    (Some(subs), out)
}

pub(super) fn check_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not an address: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "only http:// and https:// receivers are allowed, not `{}:`",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{text}` names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the address carries a user name or password; sopflow signs each call instead, so leave them out".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOOK_SECRET").then(|| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string())
    }

    fn lines(text: &str) -> Vec<String> {
        let (_, report) = load_text("webhooks.toml", text, &env);
        report.error_lines()
    }

    #[test]
    fn a_good_file_gives_its_subscriptions() {
        let (subs, report) = load_text(
            "webhooks.toml",
            "[[subscription]]\nid = \"crm\"\nurl = \"https://crm.example.com/h\"\nevents = [\"task.completed\"]\nsecret_env = \"HOOK_SECRET\"\n",
            &env,
        );
        assert_eq!(report.errors(), 0, "{:?}", report.error_lines());
        let subs = subs.unwrap();
        assert!(subs[0].wants("task.completed", "any"));
        assert!(!subs[0].wants("task.opened", "any"));
        assert!(
            !format!("{:?}", subs[0]).contains("MfKQ"),
            "the key is never printed"
        );
    }

    #[test]
    fn every_mistake_is_located() {
        let found = lines(
            "[[subscription]]\nid = \"crm\"\nurl = \"ftp://x\"\nevents = [\"*\"]\nsecret_env = \"NOPE\"\n\
             [[subscription]]\nid = \"crm\"\nurl = \"http://127.0.0.1:9/h\"\nevents = [\"*\"]\nsecret_env = \"HOOK_SECRET\"\n",
        );
        let all = found.join("\n");
        assert!(all.contains("only http:// and https://"), "{all}");
        assert!(all.contains("`NOPE`"), "{all}");
        assert!(all.contains("two subscriptions are called `crm`"), "{all}");
        assert!(all.contains("loopback"), "{all}");
    }

    #[test]
    fn an_unknown_event_type_is_a_schema_finding() {
        let all = lines("[[subscription]]\nid = \"a\"\nurl = \"https://x.example\"\nevents = [\"task.done\"]\nsecret_env = \"HOOK_SECRET\"\n").join("\n");
        assert!(all.contains("task.done"), "{all}");
    }
}
