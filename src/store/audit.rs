//! The audit index: every event is indexed by actor, procedure, kind and time, so an
//! auditor's question ("what did this person do in March", "every breach of the complaint
//! procedure this year") is answered by one range scan over one index, not by reading
//! histories. The index is derived from the events in the same transaction that appends
//! them (invariant 1: it is not a second log that could disagree — the answer is always the
//! stored events themselves, read from the `events` tree).
//!
//! Key layout of the `audit` tree (one tree, three key families, so a commit touches one
//! more tree, not three):
//!
//! | family | key                                                        |
//! |--------|------------------------------------------------------------|
//! | actor  | `a` ++ user ++ 0x00 ++ suffix                              |
//! | proc.  | `p` ++ procedure ++ 0x00 ++ suffix                         |
//! | kind   | `k` ++ kind ++ 0x00 ++ suffix                              |
//!
//! where suffix = (at_ms + 2^63) u64 ++ instance(16) ++ seq u64, so within a family entries
//! sort by time. Every value is the event's summary `kind 0x00 procedure 0x00 user 0x00
//! on_behalf_of` (empty text when absent), so the filters the chosen family does not cover
//! are checked without decoding the event. A delegate's event is indexed under both the
//! delegate and the person they acted for.
//!
//! Every event has exactly one kind, so the kind families together hold every event once:
//! a query by time alone merges them (there are a few dozen kinds, all written by the
//! engine) instead of keeping a fourth, time-only family. Format 4 kept one (`t` ++ suffix);
//! it cost a fifth of the index's writes — a key per event on the store's busiest path —
//! and `sopflow store upgrade` removes it.
//!
//! This module must not decode event bytes: the engine hands over the summary fields.

use std::ops::Bound;

use super::chain::Hash;
use super::layout::{self, Kv, Op, Tree};
use super::{InstanceId, Page, StoreError};

/// Index entries read at most per page, whatever the filters, at the cost of a page that
/// may hold fewer than `limit` events (its `next` cursor then says where to go on). It
/// bounds the work of a page, and so its time when the index is cached (~50 ms for a full
/// budget at 7M events); read cold from disk a full budget took seconds (benches/audit.rs).
pub const SCAN_BUDGET: usize = 50_000;

/// The length of a page cursor: the time, instance and sequence of the last entry read.
pub const CURSOR_LEN: usize = SUFFIX_LEN;
const SUFFIX_LEN: usize = 8 + 16 + 8;

/// What an event contributes to the audit index (the store cannot read event bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventSummary {
    pub at_ms: i64,
    /// The event kind, as the event names it (`task_completed`).
    pub kind: String,
    /// The person who acted; `None` for the engine itself.
    pub user: Option<String>,
    /// For a delegate, the person they acted for.
    pub on_behalf_of: Option<String>,
}

/// Filters of an audit query; all given ones must hold. Time is `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditQuery {
    /// Events by this person, or done by a delegate on their behalf.
    pub actor: Option<String>,
    pub procedure: Option<String>,
    pub kind: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

/// One event found by an audit query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub instance: InstanceId,
    pub seq: u64,
    pub procedure: String,
    /// The event's link in its instance's hash chain.
    pub hash: Hash,
    /// The event's stored bytes.
    pub event: Vec<u8>,
}

/// The cursor that resumes a query after the event `seq` of `instance` at `at_ms` (the
/// live stream's event id).
pub fn cursor_for(at_ms: i64, instance: InstanceId, seq: u64) -> Vec<u8> {
    suffix(at_ms, instance, seq).to_vec()
}

fn suffix(at_ms: i64, instance: InstanceId, seq: u64) -> [u8; SUFFIX_LEN] {
    let mut s = [0u8; SUFFIX_LEN];
    s[..8].copy_from_slice(&layout::ordered_ms(at_ms));
    s[8..24].copy_from_slice(instance.as_bytes());
    s[24..].copy_from_slice(&seq.to_be_bytes());
    s
}

fn family(tag: u8, text: Option<&str>) -> Vec<u8> {
    let mut key = vec![tag];
    if let Some(t) = text {
        key.extend_from_slice(t.as_bytes());
        key.push(0);
    }
    key
}

/// The index writes for one event.
pub(crate) fn entries(
    procedure: &str,
    instance: InstanceId,
    seq: u64,
    e: &EventSummary,
    out: &mut Vec<Op>,
) -> Result<(), StoreError> {
    layout::text("procedure id", procedure)?;
    layout::text("event kind", &e.kind)?;
    let user = e.user.as_deref().unwrap_or("");
    let behalf = e.on_behalf_of.as_deref().unwrap_or("");
    layout::text("user id", user)?;
    layout::text("user id", behalf)?;
    let mut value =
        Vec::with_capacity(e.kind.len() + procedure.len() + user.len() + behalf.len() + 3);
    for (i, part) in [e.kind.as_str(), procedure, user, behalf]
        .iter()
        .enumerate()
    {
        if i > 0 {
            value.push(0);
        }
        value.extend_from_slice(part.as_bytes());
    }
    let sfx = suffix(e.at_ms, instance, seq);
    let mut keys = vec![family(b'p', Some(procedure)), family(b'k', Some(&e.kind))];
    if !user.is_empty() {
        keys.push(family(b'a', Some(user)));
    }
    if !behalf.is_empty() && behalf != user {
        keys.push(family(b'a', Some(behalf)));
    }
    for mut key in keys {
        key.extend_from_slice(&sfx);
        out.push(Op {
            tree: Tree::Audit,
            key,
            value: Some(value.clone()),
        });
    }
    Ok(())
}

struct Summary<'a> {
    kind: &'a [u8],
    procedure: &'a [u8],
    user: &'a [u8],
    behalf: &'a [u8],
}

fn summary(v: &[u8]) -> Result<Summary<'_>, StoreError> {
    let mut parts = v.split(|b| *b == 0);
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(kind), Some(procedure), Some(user), Some(behalf), None) => Ok(Summary {
            kind,
            procedure,
            user,
            behalf,
        }),
        _ => Err(StoreError::Corrupt(format!(
            "audit index value of {} bytes is not a summary",
            v.len()
        ))),
    }
}

fn matches(q: &AuditQuery, s: &Summary<'_>) -> bool {
    let eq = |want: &Option<String>, got: &[u8]| want.as_ref().is_none_or(|w| w.as_bytes() == got);
    eq(&q.procedure, s.procedure)
        && eq(&q.kind, s.kind)
        && q.actor
            .as_ref()
            .is_none_or(|a| a.as_bytes() == s.user || a.as_bytes() == s.behalf)
}

/// One page of events matching `q`, oldest first, after `cursor` (the `next` of the
/// previous page). Picks the most selective family the query names: actor, then procedure,
/// then kind; a query by time alone merges the kind families.
pub(crate) fn query(
    kv: &dyn Kv,
    q: &AuditQuery,
    cursor: Option<&[u8]>,
    limit: usize,
) -> Result<Page<AuditEvent>, StoreError> {
    for (what, v) in [
        ("actor", &q.actor),
        ("procedure id", &q.procedure),
        ("event kind", &q.kind),
    ] {
        if let Some(v) = v {
            layout::text(what, v)?;
        }
    }
    let after = match cursor {
        None | Some([]) => None,
        Some(c) if c.len() == SUFFIX_LEN => Some(c),
        Some(c) => {
            return Err(StoreError::Invalid(format!(
                "audit cursor of {} bytes; pass back the `next` of the previous page",
                c.len()
            )))
        }
    };
    if limit == 0 {
        return Ok(Page {
            items: Vec::new(),
            next: cursor.map(<[u8]>::to_vec),
        });
    }
    let window = Window {
        after,
        from: q.from_ms.map(layout::ordered_ms),
        end: q.to_ms.map(layout::ordered_ms),
    };
    let chosen = if let Some(a) = &q.actor {
        Some(family(b'a', Some(a)))
    } else if let Some(p) = &q.procedure {
        Some(family(b'p', Some(p)))
    } else {
        q.kind.as_ref().map(|k| family(b'k', Some(k)))
    };
    let (hits, next) = match chosen {
        Some(prefix) => {
            let scan = scan_family(kv, &prefix, &window, q, limit, SCAN_BUDGET, None)?;
            (scan.hits, scan.stopped_at)
        }
        None => merge_kinds(kv, &window, q, limit)?,
    };
    let mut items = Vec::with_capacity(hits.len());
    for Hit { sfx, procedure } in hits {
        let instance = layout::uuid_key(&sfx[8..24], "audit key")?;
        let seq = u64::from_be_bytes(
            sfx[24..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("audit key".into()))?,
        );
        let v = kv
            .get(Tree::Events, &layout::event_key(instance, seq))?
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "event {seq} of {instance} is in the audit index but not stored"
                ))
            })?;
        let (hash, bytes) = layout::split_event(&v).ok_or_else(|| {
            StoreError::Corrupt(format!("event {seq} of {instance} is too short"))
        })?;
        items.push(AuditEvent {
            instance,
            seq,
            procedure,
            hash,
            event: bytes.to_vec(),
        });
    }
    Ok(Page { items, next })
}

/// Where a page's entries lie in every family: after the cursor (else from `from`), before
/// `end` (both as ordered time bytes).
struct Window<'a> {
    after: Option<&'a [u8]>,
    from: Option<[u8; 8]>,
    end: Option<[u8; 8]>,
}

/// An index entry that matched: its suffix (time, instance, seq) and its procedure.
struct Hit {
    sfx: Vec<u8>,
    procedure: String,
}

struct FamilyScan {
    hits: Vec<Hit>,
    /// The suffix of the last entry read when the scan stopped before the family (or the
    /// window) ended: more entries may match after it.
    stopped_at: Option<Vec<u8>>,
}

/// Reads one family in time order within `w`: at most `limit` matches, at most `budget`
/// entries, and none past `below`.
fn scan_family(
    kv: &dyn Kv,
    prefix: &[u8],
    w: &Window<'_>,
    q: &AuditQuery,
    limit: usize,
    budget: usize,
    below: Option<&[u8]>,
) -> Result<FamilyScan, StoreError> {
    let mut start = prefix.to_vec();
    let from = match (w.after, w.from) {
        (Some(c), _) => {
            start.extend_from_slice(c);
            Bound::Excluded(start.as_slice())
        }
        (None, Some(from)) => {
            start.extend_from_slice(&from);
            Bound::Included(start.as_slice())
        }
        (None, None) => Bound::Included(start.as_slice()),
    };
    let mut out = FamilyScan {
        hits: Vec::new(),
        stopped_at: None,
    };
    let mut scanned = 0usize;
    let mut last: Option<Vec<u8>> = None;
    kv.scan(Tree::Audit, from, &mut |k, v| {
        // Texts cannot contain 0x00, so the prefix (text ++ 0x00) ends exactly where the
        // family ends: no other actor's keys start with it.
        if !k.starts_with(prefix) {
            return Ok(false);
        }
        if k.len() != prefix.len() + SUFFIX_LEN {
            return Err(StoreError::Corrupt(format!(
                "audit key of {} bytes",
                k.len()
            )));
        }
        let sfx = &k[prefix.len()..];
        if w.end.is_some_and(|e| sfx[..8] >= e[..]) {
            return Ok(false);
        }
        if out.hits.len() == limit || scanned == budget || below.is_some_and(|b| sfx > b) {
            // Nothing read yet only when `below` stops the first entry: the merge then
            // knows more follows, and the page's cursor comes from what it holds.
            out.stopped_at = Some(last.take().unwrap_or_default());
            return Ok(false);
        }
        scanned += 1;
        last = Some(sfx.to_vec());
        let s = summary(v)?;
        if matches(q, &s) {
            out.hits.push(Hit {
                sfx: sfx.to_vec(),
                procedure: String::from_utf8_lossy(s.procedure).into_owned(),
            });
        }
        Ok(true)
    })?;
    Ok(out)
}

/// A page by time alone: the first `limit` entries of all kind families together, found
/// by reading each family only as far as it can still contribute (at most `limit + 1`
/// entries each). Its cost is bounded by the number of kinds times the limit.
fn merge_kinds(
    kv: &dyn Kv,
    w: &Window<'_>,
    q: &AuditQuery,
    limit: usize,
) -> Result<(Vec<Hit>, Option<Vec<u8>>), StoreError> {
    let mut hits: Vec<Hit> = Vec::new();
    let mut more = false;
    for prefix in kinds(kv)? {
        // Once `limit` entries are held, only an earlier one can still take a place.
        let below = (hits.len() >= limit).then(|| hits[limit - 1].sfx.clone());
        let scan = scan_family(kv, &prefix, w, q, limit, usize::MAX, below.as_deref())?;
        more |= scan.stopped_at.is_some();
        hits.extend(scan.hits);
        hits.sort_unstable_by(|a, b| a.sfx.cmp(&b.sfx));
        if hits.len() > limit {
            hits.truncate(limit);
            more = true;
        }
    }
    let next = if more {
        hits.last().map(|h| h.sfx.clone())
    } else {
        None
    };
    Ok((hits, next))
}

/// The kind families present (`k` ++ kind ++ 0x00), one seek each.
fn kinds(kv: &dyn Kv) -> Result<Vec<Vec<u8>>, StoreError> {
    layout::distinct_heads(kv, Tree::Audit, b'k')
}
