//! Webhook subscriptions made over the admin API (`POST /v1/admin/webhooks`), beside those of
//! the webhooks file: for a receiver an admin adds without access to the server's files.
//!
//! They are kept in the store (the outbox tree, `store::outbox::HookWrite`), so every node
//! sharing a database sees them: the node that made the change takes it in at once, the
//! others when they next look (`refresh`, run by the sender every `REFRESH`). The signing
//! secret is made here (24 random bytes as `whsec_…`), shown once in the answer that made
//! the subscription, and kept in the store, since the server must sign every call with it;
//! it is never listed, logged or shown again. The same rules as the file apply (http(s)
//! only, no internal address unless `allow_private`), and an id the file uses is refused.
//!
//! This module must not put a secret into an error, a log line or a listing.

use std::io::Read;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::hooks::{check_url, EVENT_TYPES};
use super::sign::{key_from_secret, SECRET_PREFIX};
use super::{Routes, Subscription};
use crate::engine::service::Engine;
use crate::store::{Commit, HookWrite, Store, StoreError};

/// Subscriptions made over the API at most.
pub const MAX_STORED: usize = 100;
/// Procedures one subscription may name at most.
pub const MAX_PROCEDURES: usize = 100;
/// How often a node reads the stored subscriptions again (changes made on another node).
pub const REFRESH: Duration = Duration::from_secs(10);

/// A subscription as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredHook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub procedures: Vec<String>,
    #[serde(default)]
    pub allow_private: bool,
    #[serde(default)]
    pub paused: bool,
    /// `whsec_` + base64 of the key.
    pub secret: String,
    /// Who made it, and when (Unix milliseconds).
    pub created_by: String,
    pub created_ms: i64,
}

/// What an admin asks for.
#[derive(Debug, Clone)]
pub struct NewHook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub procedures: Vec<String>,
    pub allow_private: bool,
    pub paused: bool,
}

/// Why a subscription cannot be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    /// The request names something that cannot be (an address, an event type, an id).
    #[error("{0}")]
    Invalid(String),
    /// It clashes with what exists (an id in use, the file's subscription, too many).
    #[error("{0}")]
    Conflict(String),
    #[error("no subscription `{0}` was made over the API")]
    NotFound(String),
    #[error("a signing secret cannot be made: {0}")]
    Random(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoredHook {
    /// The subscription it stands for (checked again: a record is never trusted blindly).
    fn subscription(&self) -> Result<Subscription, String> {
        let url = check_url(&self.url)?;
        let key = key_from_secret(&self.secret)?;
        Ok(Subscription {
            id: self.id.clone(),
            url,
            events: self.events.clone(),
            procedures: self.procedures.clone(),
            key: key.into(),
            allow_private: self.allow_private,
            paused: self.paused,
        })
    }
}

/// The subscriptions made over the API, as stored.
pub fn load<S: Store + ?Sized>(store: &S) -> Result<Vec<StoredHook>, StoreError> {
    store
        .stored_hooks()?
        .iter()
        .map(|v| {
            serde_json::from_slice(v)
                .map_err(|e| StoreError::Corrupt(format!("a stored webhook subscription: {e}")))
        })
        .collect()
}

/// Reads the stored subscriptions and puts them in force on `engine`.
pub fn refresh<S: Store>(engine: &Engine<S>) -> Result<(), StoreError> {
    let stored = load(&**engine.store())?;
    let subs: Vec<Subscription> = stored
        .iter()
        .filter_map(|h| match h.subscription() {
            Ok(s) => Some(s),
            Err(why) => {
                tracing::warn!(id = %h.id, error = %why, "a stored webhook subscription is not usable; passed over");
                None
            }
        })
        .collect();
    if engine.routes().api_hooks != subs {
        engine.update_routes(|r| r.api_hooks = subs);
    }
    Ok(())
}

/// Checks `new` against the routes in force; the checked URL's refusal reasons are the
/// file's.
fn check(new: &NewHook, routes: &Routes, stored: &[StoredHook]) -> Result<(), StoredError> {
    let id_ok = !new.id.is_empty()
        && new.id.len() <= 64
        && new.id.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'_' || b == b'-'))
        });
    if !id_ok {
        return Err(StoredError::Invalid(format!(
            "`{}` is not a subscription id: use 1–64 lower-case letters, digits, `_` and `-`, starting with a letter or digit",
            new.id
        )));
    }
    let url = check_url(&new.url).map_err(StoredError::Invalid)?;
    if !new.allow_private {
        if let Some(why) = super::ssrf::literal_refusal(&url) {
            return Err(StoredError::Invalid(format!(
                "{why}; a receiver on this machine or the private network needs `allow_private: true`"
            )));
        }
    }
    if new.events.is_empty() {
        return Err(StoredError::Invalid("name at least one event type".into()));
    }
    if let Some(bad) = new
        .events
        .iter()
        .find(|e| !EVENT_TYPES.contains(&e.as_str()))
    {
        return Err(StoredError::Invalid(format!(
            "`{bad}` is not an event type; use one of {}",
            EVENT_TYPES.join(", ")
        )));
    }
    if new.procedures.len() > MAX_PROCEDURES {
        return Err(StoredError::Invalid(format!(
            "name at most {MAX_PROCEDURES} procedures"
        )));
    }
    if routes.hooks.iter().any(|s| s.id == new.id) {
        return Err(StoredError::Conflict(format!(
            "the webhooks file has a subscription `{}`; change it there, or choose another id",
            new.id
        )));
    }
    if stored.iter().any(|s| s.id == new.id) {
        return Err(StoredError::Conflict(format!(
            "a subscription `{}` exists already; remove it first to change it",
            new.id
        )));
    }
    if stored.len() >= MAX_STORED {
        return Err(StoredError::Conflict(format!(
            "there are {MAX_STORED} subscriptions made over the API already; remove one first"
        )));
    }
    Ok(())
}

/// A new signing secret: `whsec_` and 24 bytes from the system's random source.
fn new_secret() -> Result<String, std::io::Error> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// Serialises changes made on this node, so two admins making one id at once cannot both
/// pass the check (nodes of one database are not serialised: see ARCHITECTURE.md).
fn changes() -> &'static tokio::sync::Mutex<()> {
    static LOCK: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
}

/// Makes a subscription; returns it with its secret (the only time the secret is shown).
pub async fn create<S: Store>(
    engine: &Engine<S>,
    new: NewHook,
    by: &str,
) -> Result<StoredHook, StoredError> {
    let _one_at_a_time = changes().lock().await;
    let stored = load(&**engine.store())?;
    check(&new, &engine.routes(), &stored)?;
    let hook = StoredHook {
        id: new.id,
        url: new.url,
        events: new.events,
        procedures: new.procedures,
        allow_private: new.allow_private,
        paused: new.paused,
        secret: new_secret().map_err(StoredError::Random)?,
        created_by: by.to_string(),
        created_ms: engine.clock().now().timestamp_millis(),
    };
    let value = serde_json::to_vec(&hook).map_err(|e| StoreError::Invalid(e.to_string()))?;
    engine
        .store()
        .commit(Commit {
            hooks: vec![HookWrite {
                id: hook.id.clone(),
                value: Some(value),
            }],
            ..Commit::default()
        })
        .await?;
    tracing::info!(id = %hook.id, url = %hook.url, by, "webhook subscription made over the API");
    refresh(engine)?;
    Ok(hook)
}

/// Removes a subscription made over the API. Its pending deliveries are given up when the
/// sender next looks at them (dead, with the reason).
pub async fn remove<S: Store>(engine: &Engine<S>, id: &str, by: &str) -> Result<(), StoredError> {
    let _one_at_a_time = changes().lock().await;
    let stored = load(&**engine.store())?;
    if !stored.iter().any(|s| s.id == id) {
        if engine.routes().hooks.iter().any(|s| s.id == id) {
            return Err(StoredError::Conflict(format!(
                "`{id}` comes from the webhooks file; remove it there"
            )));
        }
        return Err(StoredError::NotFound(id.to_string()));
    }
    engine
        .store()
        .commit(Commit {
            hooks: vec![HookWrite {
                id: id.to_string(),
                value: None,
            }],
            ..Commit::default()
        })
        .await?;
    tracing::info!(id, by, "webhook subscription removed over the API");
    refresh(engine)?;
    Ok(())
}

/// Whether `id` is a subscription made over the API (for listings).
pub fn is_stored(routes: &Routes, id: &str) -> bool {
    !routes.hooks.iter().any(|s| s.id == id) && routes.api_hooks.iter().any(|s| s.id == id)
}

/// The stored records by id, for listings (never with their secrets).
pub fn records<S: Store + ?Sized>(store: &S) -> Vec<StoredHook> {
    load(store).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: &str, url: &str, events: &[&str]) -> NewHook {
        NewHook {
            id: id.into(),
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            procedures: vec![],
            allow_private: false,
            paused: false,
        }
    }

    #[test]
    fn a_request_is_checked_like_the_file() {
        let routes = Routes::default();
        let ok = new("crm", "https://crm.example.com/hook", &["task.breached"]);
        assert!(check(&ok, &routes, &[]).is_ok());
        for (bad, why) in [
            (
                new("Crm", "https://crm.example.com/", &["*"]),
                "not a subscription id",
            ),
            (
                new("-x", "https://crm.example.com/", &["*"]),
                "not a subscription id",
            ),
            (new("crm", "ftp://crm.example.com/", &["*"]), "only http"),
            (
                new("crm", "http://169.254.169.254/", &["*"]),
                "private network",
            ),
            (new("crm", "http://127.0.0.1:9/", &["*"]), "private network"),
            (new("crm", "http://0", &["*"]), "private network"),
            (new("crm", "https://crm.example.com/", &[]), "at least one"),
            (
                new("crm", "https://crm.example.com/", &["task.done"]),
                "not an event type",
            ),
        ] {
            let got = check(&bad, &routes, &[]).unwrap_err().to_string();
            assert!(got.contains(why), "{bad:?}: {got}");
        }
        let mut private = new("crm", "http://127.0.0.1:9/", &["*"]);
        private.allow_private = true;
        assert!(check(&private, &routes, &[]).is_ok());
    }

    #[test]
    fn an_id_in_use_or_one_too_many_is_a_conflict() {
        let ok = new("crm", "https://crm.example.com/hook", &["*"]);
        let hook = |id: &str| StoredHook {
            id: id.into(),
            url: "https://x.example.com/".into(),
            events: vec!["*".into()],
            procedures: vec![],
            allow_private: false,
            paused: false,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            created_by: "it.admin".into(),
            created_ms: 0,
        };
        let taken = check(&ok, &Routes::default(), &[hook("crm")]).unwrap_err();
        assert!(matches!(taken, StoredError::Conflict(_)), "{taken}");
        let many: Vec<_> = (0..MAX_STORED).map(|i| hook(&format!("h{i}"))).collect();
        let full = check(&ok, &Routes::default(), &many).unwrap_err();
        assert!(full.to_string().contains("remove one first"), "{full}");
        let mut routes = Routes::default();
        routes.hooks.push(hook("crm").subscription().unwrap());
        let file = check(&ok, &routes, &[]).unwrap_err();
        assert!(file.to_string().contains("webhooks file"), "{file}");
    }

    #[test]
    fn a_new_secret_is_a_usable_key_and_never_the_same_twice() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(key_from_secret(&a).unwrap().len(), 24);
    }
}
