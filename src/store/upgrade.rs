//! `sopflow store upgrade`: rewrites a store of an earlier format into this build's, in
//! place, after verifying every hash chain. Each step changes only derived data:
//! - 3 → 4: the worklist indexes gain the due time in their keys and carry the task row
//!   (`worklist.rs`), and an empty idempotency tree appears — those index trees are
//!   cleared and rebuilt from the task rows;
//! - 4 → 5: the audit index loses its time-only family (`audit.rs`), whose entries are
//!   removed.
//!
//! The changes are made durable, and only then is the new format marker written.
//! Interrupted at any point, the store still says its old format and a second run starts
//! over; histories, snapshots and the rest of the audit index are never touched.
//!
//! It must not run beside a server on the same store (the command refuses a sled
//! directory in use by its lock; on PostgreSQL, stop the nodes first).

use super::any::AnyStore;
use super::copy::{raw, Raw, Row};
use super::layout::{self, Tree, FORMAT_KEY, FORMAT_VERSION, UPGRADABLE_FORMATS, UUID_LEN};
use super::{Store, StoreError};

/// Rows read per page and written per batch.
const PAGE: usize = 2_000;

/// What an upgrade did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeReport {
    pub from: u32,
    pub to: u32,
    /// Instances and events whose chains verified before anything was rewritten.
    pub instances: u64,
    pub events: u64,
    /// Open tasks re-indexed.
    pub open_tasks: u64,
    /// Entries of format 4's time-only audit family removed.
    pub audit_entries_removed: u64,
}

/// Upgrades `store` (opened with the upgrading flag) to `FORMAT_VERSION`; a store already
/// there is left alone and reported as such.
pub fn upgrade(
    store: &AnyStore,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<UpgradeReport, StoreError> {
    let r = raw(store);
    let from = r.format();
    let v = store.verify(&mut |n| progress("events verified", n))?;
    if v.broken > 0 {
        return Err(StoreError::Corrupt(format!(
            "{} of {} instances have a broken hash chain (`sopflow verify` names them); the \
             store was not upgraded",
            v.broken, v.instances
        )));
    }
    let mut report = UpgradeReport {
        from,
        to: FORMAT_VERSION,
        instances: v.instances,
        events: v.events,
        open_tasks: 0,
        audit_entries_removed: 0,
    };
    if from == FORMAT_VERSION {
        return Ok(report);
    }
    if !UPGRADABLE_FORMATS.contains(&from) {
        return Err(StoreError::Corrupt(format!(
            "the store is format {from}; this build upgrades formats {UPGRADABLE_FORMATS:?} only"
        )));
    }
    if from < 4 {
        for t in [Tree::TasksByRole, Tree::TasksByAssignee, Tree::Idempotency] {
            r.clear(t)?;
        }
        report.open_tasks = reindex(r, progress)?;
    }
    // Format 4's time-only audit family; a format-3 store has it too.
    progress("removing the audit index's time-only entries", 0);
    report.audit_entries_removed = r.clear_prefix(Tree::Audit, b"t")?;
    r.sync()?;
    r.put(
        Tree::Meta,
        vec![(FORMAT_KEY.to_vec(), layout::format_value().to_vec())],
    )?;
    r.sync()?;
    Ok(report)
}

/// Writes the worklist index entries of every open task row; returns how many there were.
fn reindex(r: &dyn Raw, progress: &mut dyn FnMut(&str, u64)) -> Result<u64, StoreError> {
    let mut after = None;
    let mut open = 0u64;
    loop {
        let page = r.page(Tree::Tasks, after.take(), PAGE)?;
        let Some(last) = page.last().map(|(k, _)| k.clone()) else {
            return Ok(open);
        };
        let (mut by_role, mut by_assignee): (Vec<Row>, Vec<Row>) = (Vec::new(), Vec::new());
        for (_, v) in &page {
            // A closed task's row is a tombstone naming its instance: nothing to index.
            if v.len() == UUID_LEN {
                continue;
            }
            let row = layout::decode_task(v)?;
            for role in &row.roles {
                by_role.push((super::worklist::index_key(role, &row), v.clone()));
            }
            if let Some(user) = &row.assignee {
                by_assignee.push((super::worklist::index_key(user, &row), v.clone()));
            }
            open += 1;
        }
        r.put(Tree::TasksByRole, by_role)?;
        r.put(Tree::TasksByAssignee, by_assignee)?;
        progress("open tasks re-indexed", open);
        after = Some(last);
    }
}
