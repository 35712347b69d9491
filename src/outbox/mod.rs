//! Reaching people and systems: which messages an instance's events cause (`route`), what
//! they say (webhook payloads, mail text), and the background sender that delivers them
//! (`sender.rs`) from the store's outbox (`store/outbox.rs`).
//!
//! A message is written in the same commit as the event that causes it (`Engine` calls
//! `route` while building the commit), so it exists exactly when its event does: a command
//! that fails sends nothing, one that commits is delivered at least once, also across a
//! crash. Delivery happens after the commit, off the command's path: a receiver that is
//! down or slow delays only its own messages.
//!
//! Destinations: `hook:<subscription>` (a webhook, `hooks.rs`, signed per Standard
//! Webhooks, `sign.rs`, never to internal addresses, `ssrf.rs`), `mail:<user>` (an
//! email to a person of the directory with an address, `mail.rs`) and `digest:<user>` (the
//! same, gathered into one letter per hour or day, `digest.rs`).
//!
//! This module decides what to send; it must not send anything while a command runs, and
//! must never put a signing secret or SMTP password into a message, a log line or a page.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::directory::model::MailDigest;
use crate::engine::instance::{Event, EventKind};
use crate::store::{Delivery, DeliveryState, InstanceId, OutboxWrite};

pub mod digest;
pub mod hooks;
pub mod live;
pub mod mail;
pub mod sender;
pub mod sign;
pub mod ssrf;
pub mod stored;

pub use hooks::Subscription;

/// The version of the webhook payload's shape, in every payload's `data.schema`.
pub const PAYLOAD_SCHEMA: &str = "sopflow.webhook/1";

/// What the engine routes messages by, swapped whole when the webhooks or directory file
/// is read again.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Subscriptions from the webhooks file.
    pub hooks: Vec<Subscription>,
    /// Subscriptions made over the admin API (`stored.rs`); one whose id the file also uses
    /// is passed over (the file's wins).
    pub api_hooks: Vec<Subscription>,
    /// People who get mail: present only when a mail server is configured.
    pub mail: Option<MailRoutes>,
    /// The web app's address as people reach it (`https://sopflow.example.com`), for links
    /// in messages; links are left out without it.
    pub public_url: Option<String>,
}

/// Who gets mail: each role's active holders with an address, each person's address, and
/// who wants their mail gathered into a digest (at times read in `zone`).
#[derive(Debug, Clone)]
pub struct MailRoutes {
    pub holders: HashMap<String, Vec<String>>,
    pub addresses: HashMap<String, String>,
    pub digests: HashMap<String, MailDigest>,
    pub zone: chrono_tz::Tz,
}

impl Default for MailRoutes {
    fn default() -> Self {
        MailRoutes {
            holders: HashMap::new(),
            addresses: HashMap::new(),
            digests: HashMap::new(),
            zone: chrono_tz::UTC,
        }
    }
}

impl MailRoutes {
    /// The people of a directory who can be mailed; digest times are read in `zone`.
    pub fn from_directory(dir: &crate::directory::Directory, zone: chrono_tz::Tz) -> MailRoutes {
        let mut m = MailRoutes {
            zone,
            ..MailRoutes::default()
        };
        for u in &dir.file().users {
            let Some(addr) = u.email.as_ref().filter(|_| u.active) else {
                continue;
            };
            m.addresses.insert(u.id.clone(), addr.clone());
            if let Some(plan) = u.digest {
                m.digests.insert(u.id.clone(), plan);
            }
            for r in &u.roles {
                m.holders.entry(r.clone()).or_default().push(u.id.clone());
            }
        }
        m
    }
}

impl Routes {
    /// Whether any event could cause a message (the common case without subscriptions or
    /// mail costs nothing per commit).
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty() && self.api_hooks.is_empty() && self.mail.is_none()
    }

    /// Every subscription in force: the file's, then those made over the API.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Subscription> {
        let file = &self.hooks;
        self.hooks.iter().chain(
            self.api_hooks
                .iter()
                .filter(move |a| !file.iter().any(|f| f.id == a.id)),
        )
    }

    /// The subscription in force called `id`.
    pub fn hook(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions().find(|s| s.id == id)
    }

    fn link(&self, path: &str) -> Option<String> {
        self.public_url
            .as_ref()
            .map(|base| format!("{}{path}", base.trim_end_matches('/')))
    }
}

/// The webhook event type of an event, if subscribers can hear of it.
pub fn webhook_type(kind: &EventKind, procedure: &str) -> Option<&'static str> {
    if procedure == crate::engine::deploy::LEDGER_PROCEDURE {
        return match kind {
            EventKind::ProcedureDeployed(..)
            | EventKind::DeploymentRefused(..)
            | EventKind::ProcedureRetired { .. } => Some("deployment"),
            _ => None,
        };
    }
    Some(match kind {
        EventKind::Started { .. } => "instance.started",
        EventKind::Ended { .. } => "instance.ended",
        EventKind::Cancelled { .. } => "instance.cancelled",
        EventKind::TaskOpened { .. } => "task.opened",
        EventKind::TaskClaimed { .. } => "task.claimed",
        EventKind::TaskCompleted { .. } => "task.completed",
        EventKind::DeadlineReminded { .. } => "task.reminded",
        EventKind::DeadlineBreached { .. } => "task.breached",
        EventKind::Notified { .. } => "notification",
        _ => return None,
    })
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The messages `events` of `instance` cause, written pending into `out`.
pub fn route(
    routes: &Routes,
    instance: InstanceId,
    procedure: &str,
    events: &[Event],
    out: &mut Vec<OutboxWrite>,
) {
    if routes.is_empty() {
        return;
    }
    for e in events {
        let at_ms = e.at.timestamp_millis();
        let new = |destination: String, kind: &str, body: String, subject: Option<String>| {
            OutboxWrite::put(
                DeliveryState::Pending,
                Delivery {
                    destination,
                    instance,
                    seq: e.seq,
                    procedure: procedure.to_string(),
                    kind: kind.to_string(),
                    at_ms,
                    body,
                    subject,
                    attempts: 0,
                    next_ms: 0,
                    last_error: None,
                    done_ms: None,
                },
            )
        };
        if let Some(kind) = webhook_type(&e.kind, procedure) {
            // The body is made when the message is sent, from the event in the history
            // (which never changes): the command's commit carries only the pointer.
            for s in routes.subscriptions().filter(|s| s.wants(kind, procedure)) {
                out.push(new(s.destination(), kind, String::new(), None));
            }
        }
        if let Some(mail) = &routes.mail {
            for (user, subject, text) in mail::letters(routes, mail, instance, procedure, e) {
                match mail.digests.get(&user) {
                    // Gathered: waits for the person's next digest time.
                    Some(&plan) => {
                        let mut w = new(digest::destination(&user), "mail", text, Some(subject));
                        w.delivery.next_ms = digest::slot(at_ms, plan, mail.zone);
                        out.push(w);
                    }
                    None => out.push(new(format!("mail:{user}"), "mail", text, Some(subject))),
                }
            }
        }
    }
}

/// A webhook's JSON body: `type`, `timestamp` and `data` as Standard Webhooks suggests;
/// `data.event` is the event exactly as the instance's history holds it.
pub fn payload(
    routes: &Routes,
    kind: &str,
    instance: InstanceId,
    procedure: &str,
    e: &Event,
) -> String {
    let mut data = json!({
        "schema": PAYLOAD_SCHEMA,
        "instance": instance,
        "procedure": procedure,
        "seq": e.seq,
        "event": e,
    });
    if let Some(link) = routes.link(&format!("/instances/{instance}")) {
        data["link"] = json!(link);
    }
    json!({
        "type": kind,
        "timestamp": rfc3339(e.at.timestamp_millis()),
        "data": data,
    })
    .to_string()
}

/// The routes as shared by the engine and the sender.
pub type SharedRoutes = Arc<std::sync::RwLock<Arc<Routes>>>;
