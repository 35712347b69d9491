//! The engine's reads: an instance, its history, the audit index, worklists, notifications
//! and the instance lists, each decoded from the store as it keeps them. Nothing here
//! writes or decides; a read never changes what a later command sees.

use super::*;

impl<S: Store> Engine<S> {
    /// Up to `limit` events of an instance from sequence number `from` on.
    pub fn history_page(
        &self,
        id: InstanceId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Event>, ServiceError> {
        self.store
            .history(id, from, limit)?
            .iter()
            .map(|e| decode_event(id, e.seq, &e.bytes))
            .collect()
    }

    /// A page of events across instances matching `query`, oldest first, from the audit
    /// index; `cursor` is the previous page's `next`.
    pub fn audit(
        &self,
        query: &AuditQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AuditRecord>, ServiceError> {
        let page = self.store.audit(query, cursor, limit)?;
        let items = page
            .items
            .into_iter()
            .map(|a| {
                Ok(AuditRecord {
                    event: decode_event(a.instance, a.seq, &a.event)?,
                    instance: a.instance,
                    procedure: a.procedure,
                    hash: crate::store::chain::hex(&a.hash),
                })
            })
            .collect::<Result<_, ServiceError>>()?;
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// Checks one instance's hash chain; `None` when there is no such instance.
    pub fn verify_instance(&self, id: InstanceId) -> Result<Option<Verification>, ServiceError> {
        Ok(self.store.verify_instance(id)?)
    }

    /// Checks every instance's hash chain (invariant 7); `progress` gets events checked.
    pub fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<Verification, ServiceError> {
        Ok(self.store.verify(progress)?)
    }

    /// The current state of an instance.
    pub fn instance(&self, id: InstanceId) -> Result<Option<Instance>, ServiceError> {
        self.load(id)
    }

    /// The whole history of an instance, oldest first.
    pub fn history(&self, id: InstanceId) -> Result<Vec<Event>, ServiceError> {
        let mut out = Vec::new();
        loop {
            let from = out.last().map_or(1, |e: &Event| e.seq + 1);
            let page = self.history_page(id, from, 1000)?;
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page);
        }
    }

    /// The tasks a person may see: offered to one of their roles or with them.
    pub fn tasks_for(&self, actor: &Actor) -> Result<Vec<TaskRow>, ServiceError> {
        let mut to = actor.roles.clone();
        to.push(personal_recipient(&actor.id));
        Ok(self.store.tasks_for(&to, &actor.id)?)
    }

    /// A page of a worklist (`store::worklist`): the caller builds the query from the
    /// person's roles and the filters asked for.
    pub fn worklist(
        &self,
        query: &crate::store::WorklistQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<TaskRow>, ServiceError> {
        Ok(self.store.worklist(query, cursor, limit)?)
    }

    /// Notifications for the roles a person holds and for them personally, newest first.
    pub fn notifications_for(
        &self,
        actor: &Actor,
        limit: usize,
    ) -> Result<Vec<crate::store::NotificationRow>, ServiceError> {
        let mut to = actor.roles.clone();
        to.push(personal_recipient(&actor.id));
        Ok(self.store.notifications_for(&to, limit)?)
    }

    /// An open task and its instance.
    pub fn task(&self, task: uuid::Uuid) -> Result<Option<(Task, Instance)>, ServiceError> {
        let Some(row) = self.store.task(task)? else {
            return Ok(None);
        };
        let Some(inst) = self.load(row.instance)? else {
            return Ok(None);
        };
        Ok(inst.tasks.get(&task).cloned().map(|t| (t, inst)))
    }

    /// The instance a task belongs to, whether the task is open or closed.
    pub fn task_instance(&self, task: uuid::Uuid) -> Result<Option<InstanceId>, ServiceError> {
        Ok(self.store.task_instance(task)?)
    }

    /// Instances by procedure and status, in creation order, a page at a time.
    pub fn instances(
        &self,
        procedure: Option<&str>,
        status: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<InstanceId>, ServiceError> {
        if procedure.is_some() || status.is_some() || limit == 0 {
            return Ok(self.store.instances(procedure, status, cursor, limit)?);
        }
        // The deployments history is kept as a pseudo-instance, not one anybody runs: it is
        // left out, reading one more so a page is still full (the cursor is the last id).
        let ledger = crate::engine::deploy::ledger_id();
        let mut page = self
            .store
            .instances(None, None, cursor, limit.saturating_add(1))?;
        page.items.retain(|i| *i != ledger);
        if page.items.len() > limit {
            page.items.truncate(limit);
            page.next = page.items.last().map(|i| i.as_bytes().to_vec());
        }
        Ok(page)
    }
}

/// An event found by an audit query.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub instance: InstanceId,
    pub procedure: String,
    /// The event's link in its instance's hash chain, hex.
    pub hash: String,
    pub event: Event,
}

pub(in crate::engine) fn decode_event(
    id: InstanceId,
    seq: u64,
    bytes: &[u8],
) -> Result<Event, ServiceError> {
    serde_json::from_slice(bytes)
        .map_err(|err| ServiceError::Corrupt(format!("event {seq} of {id}: {err}")))
}
