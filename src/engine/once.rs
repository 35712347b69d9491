//! Commands sent with an idempotency key: done at most once per key. The first run stores a
//! record (fingerprint of the request, the instance, its version after the command) in the
//! same commit as its events (`store::idempotency`); a retry with the same key and request
//! gets the instance as that command left it and changes nothing, and one with another
//! request is refused. Two retries racing are decided by the store: the second commit
//! finds the first's record and answers from it.
//!
//! This module must not decide anything about the command itself: it wraps `run`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::decide::Command;
use super::instance::{Actor, Instance};
use super::service::{new_instance_id, Engine, ServiceError};
use crate::store::{IdempotencyRecord, IdempotencyWrite, InstanceId, Store, StoreError};

/// How long a key is remembered: a retry within it is answered from the record; after it,
/// the key may be used for a new command.
pub const WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// A command's idempotency key and what it asked, for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub caller: String,
    pub key: String,
    /// SHA-256 over what the command was asked: the endpoint, its target and its body.
    pub fingerprint: [u8; 32],
}

impl Idempotency {
    pub(super) fn write(
        &self,
        now: DateTime<Utc>,
        instance: InstanceId,
        version: u64,
    ) -> IdempotencyWrite {
        let at_ms = now.timestamp_millis();
        IdempotencyWrite {
            caller: self.caller.clone(),
            key: self.key.clone(),
            record: IdempotencyRecord {
                fingerprint: self.fingerprint,
                at_ms,
                instance,
                version,
            },
            stale_before_ms: at_ms.saturating_sub(WINDOW.num_milliseconds()),
        }
    }
}

/// A command's result, and whether it was answered from an earlier run.
#[derive(Debug, Clone)]
pub struct Done {
    pub instance: Instance,
    pub replayed: bool,
}

impl<S: Store> Engine<S> {
    /// `start`, at most once per key.
    pub async fn start_once(
        &self,
        procedure: &str,
        data: Map<String, Value>,
        actor: Option<&Actor>,
        once: Option<&Idempotency>,
    ) -> Result<Done, ServiceError> {
        if let Some(done) = self.earlier(once)? {
            return Ok(done);
        }
        let now = self.clock().now();
        let id = new_instance_id(now);
        let cmd = Command::Start {
            id,
            data,
            parent: None,
            origin: None,
        };
        let proc = self.startable(procedure, now)?;
        let r = self.run(id, Some(proc), cmd, actor, once).await;
        self.first_or_earlier(r, once)
    }

    /// `execute`, at most once per key.
    pub async fn execute_once(
        &self,
        instance: InstanceId,
        cmd: Command,
        actor: Option<&Actor>,
        once: Option<&Idempotency>,
    ) -> Result<Done, ServiceError> {
        if let Some(done) = self.earlier(once)? {
            return Ok(done);
        }
        let r = self.run(instance, None, cmd, actor, once).await;
        self.first_or_earlier(r, once)
    }

    fn first_or_earlier(
        &self,
        r: Result<Instance, ServiceError>,
        once: Option<&Idempotency>,
    ) -> Result<Done, ServiceError> {
        match r {
            Ok(instance) => Ok(Done {
                instance,
                replayed: false,
            }),
            // A concurrent request with the same key committed first.
            Err(ServiceError::Store(StoreError::KeyUsed)) => self.earlier(once)?.ok_or_else(|| {
                ServiceError::Corrupt("an idempotency key was taken but not stored".into())
            }),
            Err(e) => Err(e),
        }
    }

    /// The answer of an earlier run with this key, if a live one exists.
    fn earlier(&self, once: Option<&Idempotency>) -> Result<Option<Done>, ServiceError> {
        let Some(once) = once else { return Ok(None) };
        let Some(rec) = self.store().idempotency(&once.caller, &once.key)? else {
            return Ok(None);
        };
        let now = self.clock().now().timestamp_millis();
        if rec.at_ms <= now.saturating_sub(WINDOW.num_milliseconds()) {
            return Ok(None);
        }
        if rec.fingerprint != once.fingerprint {
            return Err(ServiceError::KeyReused(format!(
                "the idempotency key `{}` was used for a different request; send a new key \
                 for a new request",
                once.key
            )));
        }
        Ok(Some(Done {
            instance: self.instance_at(rec.instance, rec.version)?,
            replayed: true,
        }))
    }

    /// The instance as it was at `version`: its snapshot when nothing happened since,
    /// otherwise the fold of its history up to there.
    pub fn instance_at(&self, id: InstanceId, version: u64) -> Result<Instance, ServiceError> {
        let current = self
            .instance(id)?
            .ok_or_else(|| ServiceError::Corrupt(format!("instance {id} is recorded but gone")))?;
        if current.seq == version {
            return Ok(current);
        }
        let mut events = Vec::new();
        while (events.len() as u64) < version {
            let from = events.len() as u64 + 1;
            let want = usize::try_from(version - from + 1)
                .unwrap_or(usize::MAX)
                .min(1000);
            let page = self.history_page(id, from, want)?;
            if page.is_empty() {
                break;
            }
            events.extend(page);
        }
        let mut it = events.iter();
        let mut inst = it
            .next()
            .and_then(|e| Instance::from_first(id, e))
            .ok_or_else(|| ServiceError::Corrupt(format!("instance {id} has no start")))?;
        for e in it {
            inst.apply(e);
        }
        Ok(inst)
    }
}
