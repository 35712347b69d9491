//! The procedure registry: every version ever registered, compiled and kept runnable, so an
//! instance always runs on the exact version it started on (invariant 6). Registering
//! stores the source first; lookups never touch the store.

use super::*;

#[derive(Default)]
pub(in crate::engine) struct Registry {
    /// id → version → compiled procedure.
    pub(in crate::engine) by_id: HashMap<String, BTreeMap<u32, Arc<CompiledProcedure>>>,
    /// Procedures whose file was removed: no new starts.
    pub(in crate::engine) retired: std::collections::HashSet<String>,
}

impl Registry {
    pub(super) fn get(&self, id: &str, version: u32) -> Option<Arc<CompiledProcedure>> {
        self.by_id.get(id)?.get(&version).cloned()
    }

    pub(in crate::engine) fn latest(&self, id: &str) -> Option<Arc<CompiledProcedure>> {
        self.by_id.get(id)?.values().next_back().cloned()
    }
}

impl<S: Store> Engine<S> {
    pub(super) fn install(&self, defs: &[(Procedure, String)]) -> Result<(), ServiceError> {
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Procedure> = reg
            .by_id
            .values()
            .flat_map(|v| v.values().map(|c| c.def.clone()))
            .collect();
        all.extend(defs.iter().map(|(p, _)| p.clone()));
        let refs: Vec<&Procedure> = all.iter().collect();
        for (p, hash) in defs {
            let compiled = CompiledProcedure::compile(p.clone(), hash.clone(), &refs)
                .map_err(|e| ServiceError::Corrupt(e.to_string()))?;
            reg.by_id
                .entry(p.id.clone())
                .or_default()
                .insert(p.version, Arc::new(compiled));
        }
        Ok(())
    }

    /// Registers validated procedures (from `definition::load`) and records each new one in
    /// the deployments history. A file whose content changed while its version did not, or
    /// whose version is lower than the one registered, is refused, and nothing of this call
    /// is registered. The one path every registration takes (start-up, the file watcher,
    /// the API): see `deploy.rs`.
    pub async fn register(&self, procedures: &[ValidProcedure]) -> Result<(), ServiceError> {
        self.deploy_all(procedures, None).await.map(|_| ())
    }

    /// Whether `p` may be registered now (not a changed text under a registered version,
    /// not older than the version running), without registering it.
    pub fn check_registration(&self, p: &ValidProcedure) -> Result<(), ServiceError> {
        self.check_registrable(std::slice::from_ref(p))
    }

    /// The ids of the calendars loaded now.
    pub fn calendar_ids(&self) -> std::collections::HashSet<String> {
        self.calendars
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Checks that each procedure may be registered, before anything is.
    pub(in crate::engine) fn check_registrable(
        &self,
        procedures: &[ValidProcedure],
    ) -> Result<(), ServiceError> {
        for p in procedures {
            if let Some(existing) = self.store.procedure(&p.procedure.id, p.procedure.version)? {
                if existing.hash != p.hash {
                    let next = self
                        .latest_version(&p.procedure.id)
                        .unwrap_or(p.procedure.version)
                        + 1;
                    return Err(ServiceError::ProcedureChanged {
                        id: p.procedure.id.clone(),
                        version: p.procedure.version,
                        next,
                    });
                }
            }
            // An older version's text (a file put back) would leave the file saying one
            // version while new instances start on another: the file must say what runs.
            if let Some(running) = self.latest_version(&p.procedure.id) {
                if p.procedure.version < running {
                    return Err(ServiceError::VersionNotRaised {
                        id: p.procedure.id.clone(),
                        version: p.procedure.version,
                        running,
                        next: running + 1,
                    });
                }
            }
        }
        Ok(())
    }

    /// Stores and compiles procedures already checked by `check_registrable`.
    pub(in crate::engine) async fn install_checked(
        &self,
        procedures: &[ValidProcedure],
    ) -> Result<(), ServiceError> {
        for p in procedures {
            self.put_source(p).await?;
        }
        let defs: Vec<(Procedure, String)> = procedures
            .iter()
            .map(|p| (p.procedure.clone(), p.hash.clone()))
            .collect();
        self.install(&defs)?;
        self.arm_schedules().await?;
        Ok(())
    }

    async fn put_source(&self, p: &ValidProcedure) -> Result<(), ServiceError> {
        match self
            .store
            .put_procedure(ProcedureRecord {
                id: p.procedure.id.clone(),
                version: p.procedure.version,
                hash: p.hash.clone(),
                source: p.source.to_string(),
            })
            .await
        {
            Err(StoreError::ProcedureChanged { id, version }) => {
                Err(ServiceError::ProcedureChanged {
                    next: version + 1,
                    id,
                    version,
                })
            }
            other => other.map_err(ServiceError::from),
        }
    }

    pub(in crate::engine) fn latest_version(&self, id: &str) -> Option<u32> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.latest(id).map(|c| c.version())
    }

    /// The newest registered version of a procedure.
    pub fn procedure(&self, id: &str) -> Option<Arc<CompiledProcedure>> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .latest(id)
    }

    /// A specific version.
    pub fn procedure_version(&self, id: &str, version: u32) -> Option<Arc<CompiledProcedure>> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id, version)
    }

    /// Every registered version of `id`, oldest first.
    pub fn versions(&self, id: &str) -> Vec<u32> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.by_id
            .get(id)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Every registered procedure at its newest version, by id.
    pub fn procedures(&self) -> Vec<Arc<CompiledProcedure>> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Arc<CompiledProcedure>> = reg
            .by_id
            .values()
            .filter_map(|m| m.values().next_back().cloned())
            .collect();
        v.sort_by(|a, b| a.id().cmp(b.id()));
        v
    }
}
