//! The worklist indexes and the query that reads a page of them. Each open task has one
//! entry per role it is offered to (`tasks_by_role`) and one for its assignee
//! (`tasks_by_assignee`), keyed `owner 0x00 due task` — due time first, tasks without one
//! last — and holding the task row itself. A page is then a merge of the caller's few
//! streams (one per role, one for what they hold), each read in the order the page is
//! shown, so its cost follows the page size and the number of streams, not how many
//! tasks the caller's roles have open.
//!
//! Filters the index cannot answer (procedure, deadline state, held by a colleague) are
//! applied to each entry as it is read, within a fixed budget of entries per page: a page
//! whose budget ran out holds what it found and a cursor to go on from, like the audit
//! pages. This module must not do I/O of its own (it reads through `Kv`) and must never
//! panic on stored bytes.

use std::ops::Bound;
use std::sync::Arc;

use super::layout::{self, Kv, Tree, SEP, UUID_LEN};
use super::{Page, StoreError, TaskRow};

/// Bytes after the owner and separator: a flag (0 has a due time, 1 has none), the due
/// time order-preserving, the task id.
pub const SORT_KEY_LEN: usize = 1 + 8 + UUID_LEN;

/// Index entries one page reads at most, whatever the limit (with `limit × 4` when that is
/// more): the bound on a page's cost when filters leave most entries out.
pub const PAGE_BUDGET: usize = 2_000;

/// What a worklist page selects. `keep` sees every entry the streams yield and decides.
#[derive(Clone)]
pub struct WorklistQuery {
    /// The roles (and personal recipients `@user`) whose offered tasks are read.
    pub roles: Vec<String>,
    /// Whose held tasks are read (the assignee index).
    pub user: String,
    /// Only tasks due strictly before this instant (tasks without a due time never match):
    /// the streams stop at it instead of filtering past it.
    pub due_before_ms: Option<i64>,
    /// Only the tasks `user` holds: the role streams are not read at all.
    pub held_only: bool,
    /// Any further filter, applied to each row read.
    pub keep: Arc<dyn Fn(&TaskRow) -> bool + Send + Sync>,
}

impl WorklistQuery {
    /// Every open task offered to `roles` or held by `user`.
    pub fn everything(roles: &[String], user: &str) -> Self {
        WorklistQuery {
            roles: roles.to_vec(),
            user: user.to_string(),
            due_before_ms: None,
            held_only: false,
            keep: Arc::new(|_| true),
        }
    }
}

impl std::fmt::Debug for WorklistQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorklistQuery")
            .field("roles", &self.roles)
            .field("user", &self.user)
            .field("due_before_ms", &self.due_before_ms)
            .field("held_only", &self.held_only)
            .finish_non_exhaustive()
    }
}

/// The part of an index key after `owner 0x00`: how the worklist is ordered.
pub(crate) fn sort_key(row: &TaskRow) -> [u8; SORT_KEY_LEN] {
    let mut k = [0u8; SORT_KEY_LEN];
    match row.due_ms {
        Some(due) => k[1..9].copy_from_slice(&layout::ordered_ms(due)),
        None => k[0] = 1,
    }
    k[9..].copy_from_slice(row.task.as_bytes());
    k
}

/// The index key of `row` under `owner` (a role, a personal recipient or an assignee).
pub(crate) fn index_key(owner: &str, row: &TaskRow) -> Vec<u8> {
    let mut key = Vec::with_capacity(owner.len() + 1 + SORT_KEY_LEN);
    key.extend_from_slice(owner.as_bytes());
    key.push(SEP);
    key.extend_from_slice(&sort_key(row));
    key
}

fn prefix_of(owner: &str) -> Result<Vec<u8>, StoreError> {
    layout::text("role or user id", owner)?;
    let mut prefix = owner.as_bytes().to_vec();
    prefix.push(SEP);
    Ok(prefix)
}

/// What one stream yielded: entries kept (sort key, row), and where a spent budget cut it.
struct Stream {
    kept: Vec<([u8; SORT_KEY_LEN], TaskRow)>,
    cut: Option<[u8; SORT_KEY_LEN]>,
}

fn read_stream(
    kv: &dyn Kv,
    tree: Tree,
    owner: &str,
    q: &WorklistQuery,
    after: Option<&[u8; SORT_KEY_LEN]>,
    want: usize,
    budget: usize,
) -> Result<Stream, StoreError> {
    let prefix = prefix_of(owner)?;
    let mut from = prefix.clone();
    if let Some(a) = after {
        from.extend_from_slice(a);
    }
    // Keys due at or after the bound sort from here on: the stream ends there.
    let stop: Option<[u8; 9]> = q.due_before_ms.map(|b| {
        let mut s = [0u8; 9];
        s[1..].copy_from_slice(&layout::ordered_ms(b));
        s
    });
    let mut out = Stream {
        kept: Vec::new(),
        cut: None,
    };
    let mut read = 0usize;
    let bound = match after {
        Some(_) => Bound::Excluded(from.as_slice()),
        None => Bound::Included(from.as_slice()),
    };
    kv.scan(tree, bound, &mut |k, v| {
        let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
            return Ok(false);
        };
        let sk: [u8; SORT_KEY_LEN] = rest.try_into().map_err(|_| {
            StoreError::Corrupt(format!(
                "worklist index key of {} bytes under {owner:?}",
                k.len()
            ))
        })?;
        if stop.is_some_and(|s| sk[..9] >= s[..]) {
            return Ok(false);
        }
        let row = layout::decode_task(v)?;
        if (q.keep)(&row) {
            out.kept.push((sk, row));
        }
        read += 1;
        if out.kept.len() >= want {
            return Ok(false);
        }
        if read >= budget {
            out.cut = Some(sk);
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(out)
}

fn decode_cursor(cursor: Option<&[u8]>) -> Result<Option<[u8; SORT_KEY_LEN]>, StoreError> {
    cursor
        .map(|c| {
            <[u8; SORT_KEY_LEN]>::try_from(c)
                .map_err(|_| StoreError::Invalid("not a worklist cursor".into()))
        })
        .transpose()
}

/// The index streams `q` reads: one per role (unless only held tasks are asked for), and
/// the assignee's.
fn streams(q: &WorklistQuery) -> Vec<(Tree, &str)> {
    let mut streams: Vec<(Tree, &str)> = Vec::with_capacity(q.roles.len() + 1);
    if !q.held_only {
        streams.extend(q.roles.iter().map(|r| (Tree::TasksByRole, r.as_str())));
    }
    streams.push((Tree::TasksByAssignee, q.user.as_str()));
    streams
}

/// A page of the worklist `q` selects, most urgent first, after `cursor`.
pub(crate) fn page(
    kv: &dyn Kv,
    q: &WorklistQuery,
    cursor: Option<&[u8]>,
    limit: usize,
) -> Result<Page<TaskRow>, StoreError> {
    let after = decode_cursor(cursor)?;
    let streams = streams(q);
    if limit == 0 {
        return Ok(Page {
            items: Vec::new(),
            next: None,
        });
    }
    let budget = PAGE_BUDGET.max(limit.saturating_mul(4)) / streams.len();
    let mut all = Vec::new();
    let mut horizon: Option<[u8; SORT_KEY_LEN]> = None;
    for (tree, owner) in streams {
        let s = read_stream(kv, tree, owner, q, after.as_ref(), limit, budget.max(1))?;
        if let Some(c) = s.cut {
            horizon = Some(horizon.map_or(c, |h| h.min(c)));
        }
        all.extend(s.kept);
    }
    // A task offered to two of the caller's roles (or offered and held) is in two streams
    // under the same sort key, which ends with its id: sorted, the copies are neighbours.
    all.sort_by_key(|e| e.0);
    all.dedup_by(|a, b| a.0 == b.0);
    // Past the point where a stream's budget ran out, that stream was not read: entries of
    // the others beyond it could jump ahead of ones it still holds.
    if let Some(h) = horizon {
        all.retain(|(k, _)| *k <= h);
    }
    let next = if all.len() > limit {
        all.truncate(limit);
        all.last().map(|(k, _)| k.to_vec())
    } else if all.len() == limit {
        // Full: more may follow. An empty next page is cheaper than a second read here.
        all.last().map(|(k, _)| k.to_vec())
    } else {
        horizon.map(|h| h.to_vec())
    };
    Ok(Page {
        items: all.into_iter().map(|(_, r)| r).collect(),
        next,
    })
}

/// Every task `roles` are offered or `user` holds, most urgent first (no budget: for the
/// command line and deployments, which want them all).
pub(crate) fn all(kv: &dyn Kv, roles: &[String], user: &str) -> Result<Vec<TaskRow>, StoreError> {
    let q = WorklistQuery::everything(roles, user);
    let mut out = Vec::new();
    for (tree, owner) in streams(&q) {
        let s = read_stream(kv, tree, owner, &q, None, usize::MAX, usize::MAX)?;
        out.extend(s.kept);
    }
    out.sort_by_key(|e| e.0);
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// Counts the role's index entries (one per open task) without decoding any.
pub(crate) fn open_count(kv: &dyn Kv, role: &str) -> Result<usize, StoreError> {
    let prefix = prefix_of(role)?;
    let mut n = 0;
    kv.scan(Tree::TasksByRole, Bound::Included(&prefix), &mut |k, _| {
        if !k.starts_with(&prefix) {
            return Ok(false);
        }
        n += 1;
        Ok(true)
    })?;
    Ok(n)
}
