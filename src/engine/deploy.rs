//! The registry's changes, and their history: registering procedure versions (whatever
//! their source — start-up, the file watcher, the API — they all come through
//! `deploy_all`), refusing texts, retiring procedures whose file was removed, and which
//! version a new instance starts on (`valid_from` / `valid_until`).
//!
//! Every registration, refusal and retirement is an event of one pseudo-instance, the
//! deployments history (`ledger_id()`, procedure `@deployments`): hash-chained, in the
//! audit index and exports like any instance's events, verified with them. It must not
//! read files: callers hand it validated procedures and the refusals they found.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Map;

use super::changes::{Deployment, Refusal};
use super::compiled::{zone_of, CompiledProcedure};
use super::instance::{Actor, Event, EventKind, InstanceId};
use super::service::{Engine, ServiceError};
use crate::definition::load::ValidProcedure;
use crate::store::Store;

/// The procedure name the deployments history is kept under (no procedure id has `@`).
pub const LEDGER_PROCEDURE: &str = "@deployments";

/// The pseudo-instance id of the deployments history.
pub fn ledger_id() -> InstanceId {
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, b"sopflow deployments");
    let digest = sha2::Digest::finalize(h);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// What registering one procedure did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new version, now the one new instances start on (within its dates).
    New { id: String, version: u32 },
    /// A retired procedure whose file came back.
    Restored { id: String, version: u32 },
    /// Already registered with this very text: nothing to do, nothing recorded.
    Unchanged { id: String, version: u32 },
}

/// One version as the API and the web app list it.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub version: u32,
    pub hash: String,
    pub valid_from: Option<chrono::NaiveDate>,
    pub valid_until: Option<chrono::NaiveDate>,
    /// Instances still running on it (counted up to `MAX_COUNTED`).
    pub running: usize,
    /// The version `start` would use today.
    pub current: bool,
}

/// The most running instances counted per procedure for the versions list: past it the
/// count says "at least".
pub const MAX_COUNTED: usize = 20_000;

fn window_text(c: &CompiledProcedure) -> String {
    match (c.def.valid_from, c.def.valid_until) {
        (Some(f), Some(u)) => format!("v{} from {f} to {u}", c.version()),
        (Some(f), None) => format!("v{} from {f}", c.version()),
        (None, Some(u)) => format!("v{} until {u}", c.version()),
        (None, None) => format!("v{} at any date", c.version()),
    }
}

impl<S: Store> Engine<S> {
    /// Whether `c` may be started on `today` (its calendar's date).
    fn in_window(c: &CompiledProcedure, today: chrono::NaiveDate) -> bool {
        c.def.valid_from.is_none_or(|f| today >= f) && c.def.valid_until.is_none_or(|u| today <= u)
    }

    fn today_for(&self, c: &CompiledProcedure, now: DateTime<Utc>) -> chrono::NaiveDate {
        let cals = self
            .calendars
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        now.with_timezone(&zone_of(&c.def, &cals)).date_naive()
    }

    /// The version a new instance of `id` starts on at `now`: the newest one whose dates
    /// allow it. Refused for a retired procedure, or when no version's dates allow it.
    pub fn startable(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<CompiledProcedure>, ServiceError> {
        let (versions, retired) = {
            let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
            (
                reg.by_id
                    .get(id)
                    .map(|m| m.values().rev().cloned().collect::<Vec<_>>()),
                reg.retired.contains(id),
            )
        };
        let versions = versions.ok_or_else(|| ServiceError::UnknownProcedure(id.to_string()))?;
        if retired {
            return Err(ServiceError::Retired(id.to_string()));
        }
        self.pick(id, &versions, now)
    }

    fn pick(
        &self,
        id: &str,
        newest_first: &[Arc<CompiledProcedure>],
        now: DateTime<Utc>,
    ) -> Result<Arc<CompiledProcedure>, ServiceError> {
        let first = newest_first
            .first()
            .ok_or_else(|| ServiceError::UnknownProcedure(id.to_string()))?;
        let today = self.today_for(first, now);
        if let Some(c) = newest_first.iter().find(|c| Self::in_window(c, today)) {
            return Ok(c.clone());
        }
        Err(ServiceError::NotValidNow {
            id: id.to_string(),
            today: today.to_string(),
            windows: newest_first
                .iter()
                .map(|c| window_text(c))
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    /// The version a subprocess step starts a child on: as `startable`, but a retired
    /// procedure still serves the instances already running that need its children.
    pub(super) fn for_child(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<CompiledProcedure>, ServiceError> {
        let versions = {
            let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
            reg.by_id
                .get(id)
                .map(|m| m.values().rev().cloned().collect::<Vec<_>>())
        };
        let versions = versions.ok_or_else(|| ServiceError::UnknownProcedure(id.to_string()))?;
        self.pick(id, &versions, now)
    }

    /// Whether `id` was retired.
    pub fn is_retired(&self, id: &str) -> bool {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .retired
            .contains(id)
    }

    /// Every registered procedure id (retired ones included), sorted.
    pub fn procedure_ids(&self) -> Vec<String> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<String> = reg.by_id.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Registers `procedures` (all or none: each is checked first) and records every new
    /// version or restored procedure. `by` is the person deploying over the API; `None`
    /// for a file (the origin is then the file's path).
    pub async fn deploy_all(
        &self,
        procedures: &[ValidProcedure],
        by: Option<&Actor>,
    ) -> Result<Vec<Registered>, ServiceError> {
        let _one_at_a_time = self.deploying.lock().await;
        self.check_registrable(procedures)?;
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        for p in procedures {
            let (id, version) = (p.procedure.id.clone(), p.procedure.version);
            let exists = self.procedure_version(&id, version).is_some();
            if exists && !self.is_retired(&id) {
                out.push(Registered::Unchanged { id, version });
            } else if exists {
                out.push(Registered::Restored { id, version });
            } else {
                fresh.push(p.clone());
                out.push(Registered::New { id, version });
            }
        }
        self.install_checked(&fresh).await?;
        for (p, r) in procedures.iter().zip(&out) {
            let restored = match r {
                Registered::Unchanged { .. } => continue,
                Registered::Restored { .. } => true,
                Registered::New { .. } => false,
            };
            self.registry
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retired
                .remove(&p.procedure.id);
            let origin = if by.is_some() {
                "api".to_string()
            } else {
                p.path.clone()
            };
            self.record(
                by,
                EventKind::ProcedureDeployed(Deployment {
                    procedure: p.procedure.id.clone(),
                    version: p.procedure.version,
                    hash: p.hash.clone(),
                    origin,
                    restored,
                }),
            )
            .await?;
        }
        Ok(out)
    }

    /// Records a refused text in the deployments history.
    pub async fn record_refusal(&self, r: Refusal, by: Option<&Actor>) -> Result<(), ServiceError> {
        let _one_at_a_time = self.deploying.lock().await;
        self.record(by, EventKind::DeploymentRefused(r)).await
    }

    /// Retires `id`: no new instances; running ones finish. `false` if it was already
    /// retired or is unknown.
    pub async fn retire(
        &self,
        id: &str,
        origin: &str,
        by: Option<&Actor>,
    ) -> Result<bool, ServiceError> {
        let _one_at_a_time = self.deploying.lock().await;
        {
            let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
            if !reg.by_id.contains_key(id) || !reg.retired.insert(id.to_string()) {
                return Ok(false);
            }
        }
        self.record(
            by,
            EventKind::ProcedureRetired {
                procedure: id.to_string(),
                origin: origin.to_string(),
            },
        )
        .await?;
        Ok(true)
    }

    /// Appends one entry to the deployments history (creating it on first use).
    async fn record(&self, by: Option<&Actor>, kind: EventKind) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let stamp = by.map(Actor::stamp);
        self.append(ledger_id(), |current| {
            let mut events = Vec::new();
            let mut seq = current.map_or(0, |c| c.seq);
            if current.is_none() {
                seq += 1;
                events.push(Event {
                    seq,
                    at: now,
                    by: None,
                    kind: EventKind::Started {
                        procedure: LEDGER_PROCEDURE.to_string(),
                        version: 0,
                        hash: String::new(),
                        data: Map::new(),
                        parent: None,
                    },
                });
            }
            events.push(Event {
                seq: seq + 1,
                at: now,
                by: stamp.clone(),
                kind: kind.clone(),
            });
            Ok(events)
        })
        .await
        .map(|_| ())
    }

    /// The deployments history, newest first, at most `limit` entries (the `started` that
    /// opens it left out).
    pub fn deployments(&self, limit: usize) -> Result<Vec<Event>, ServiceError> {
        let Some(head) = self.load(ledger_id())? else {
            return Ok(Vec::new());
        };
        let from = head.seq.saturating_sub(limit as u64).max(2);
        let mut events = self.history_page(ledger_id(), from, limit)?;
        events.retain(|e| !matches!(e.kind, EventKind::Started { .. }));
        events.reverse();
        Ok(events)
    }

    /// Rebuilds the retired set from the deployments history (at open).
    pub(super) fn restore_retired(&self) -> Result<(), ServiceError> {
        let mut retired = std::collections::HashSet::new();
        let mut from = 1;
        loop {
            let page = self.history_page(ledger_id(), from, 1_000)?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            for e in &page {
                match &e.kind {
                    EventKind::ProcedureRetired { procedure, .. } => {
                        retired.insert(procedure.clone());
                    }
                    EventKind::ProcedureDeployed(d) => {
                        retired.remove(&d.procedure);
                    }
                    _ => {}
                }
            }
        }
        self.registry
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retired = retired;
        Ok(())
    }

    /// Every version of `id`, newest first, with its dates and the instances running on it.
    pub fn version_list(&self, id: &str) -> Result<Vec<VersionInfo>, ServiceError> {
        let versions: Vec<Arc<CompiledProcedure>> = {
            let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
            reg.by_id
                .get(id)
                .map(|m| m.values().rev().cloned().collect())
                .ok_or_else(|| ServiceError::UnknownProcedure(id.to_string()))?
        };
        let mut running: std::collections::HashMap<u32, usize> = Default::default();
        let mut cursor: Option<Vec<u8>> = None;
        let mut counted = 0usize;
        'pages: loop {
            let page = self.instances(Some(id), Some("running"), cursor.as_deref(), 500)?;
            for i in &page.items {
                if counted >= MAX_COUNTED {
                    break 'pages;
                }
                counted += 1;
                if let Some(inst) = self.load(*i)? {
                    *running.entry(inst.version).or_default() += 1;
                }
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        let current = if self.is_retired(id) {
            None
        } else {
            self.pick(id, &versions, self.clock.now())
                .ok()
                .map(|c| c.version())
        };
        Ok(versions
            .iter()
            .map(|c| VersionInfo {
                version: c.version(),
                hash: c.hash.clone(),
                valid_from: c.def.valid_from,
                valid_until: c.def.valid_until,
                running: running.get(&c.version()).copied().unwrap_or(0),
                current: current == Some(c.version()),
            })
            .collect())
    }

    /// Gives back to their roles every task `user` holds (claimed or delegated to them),
    /// each in its own command recorded as `task_returned`: called when the directory no
    /// longer has them active. Returns how many went back. A task a step assigns to them
    /// by name stays: only a person can say who takes it over (delegate or move it).
    pub async fn return_tasks_of(&self, user: &str, reason: &str) -> Result<usize, ServiceError> {
        let rows = self.store.tasks_for(&[], user)?;
        let mut n = 0;
        for row in rows {
            let cmd = super::decide::Command::ReturnTask {
                task: row.task,
                user: user.to_string(),
                reason: reason.to_string(),
            };
            match self.execute(row.instance, cmd, None).await {
                Ok(after) => {
                    let held = after.tasks.get(&row.task).and_then(|t| t.holder()) == Some(user);
                    n += usize::from(!held);
                }
                Err(ServiceError::Engine(e)) => {
                    tracing::warn!(%user, task = %row.task, error = %e, "a held task could not be returned");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}
