//! The outbox's keys and queries: messages (webhook calls, mails) written in the same commit
//! as the events that cause them, and what became of each delivery. The sender
//! (`crate::outbox::sender`) reads the pending ones and settles each with a commit of its
//! own; nothing here sends anything.
//!
//! Three key families in the `outbox` tree, each key ending in destination ++ 0x00 ++
//! instance (16) ++ seq (8), so one destination's messages are one key range (the sender
//! passes over a destination that is paused or failing with one seek) and, within it, the
//! messages of one instance sort in the order of its history (the sender keeps that order):
//! - `q` ++ suffix → a pending delivery (never tried, or failed and waiting to be tried again);
//! - `x` ++ suffix → a dead one (tried `MAX_ATTEMPTS` times, or refused for good);
//! - `s` ++ sent ms (sign bit flipped) ++ suffix → a sent one, newest last, pruned after
//!   `SENT_KEPT_MS`.
//!
//! The tree is additive: a store written before it existed simply holds no messages, so it
//! needed no new format. This module must not do I/O of its own or interpret event bytes.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::layout::{ms_from_ordered, ordered_ms, text, Kv, Op, Tree, SEP, UUID_LEN};
use super::{InstanceId, Page, StoreError};

const PENDING: u8 = b'q';
const DEAD: u8 = b'x';
const SENT: u8 = b's';
/// `h` ++ subscription id → a webhook subscription made over the admin API (its record is
/// `crate::outbox::stored`'s JSON, opaque here).
const HOOK: u8 = b'h';
/// Subscriptions read at most (the API refuses to make more than a hundred).
const MAX_HOOKS: usize = 1_000;

/// How long a sent delivery stays listed, milliseconds (7 days).
pub const SENT_KEPT_MS: i64 = 7 * 24 * 3_600_000;

/// One message for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `hook:<subscription id>` or `mail:<user id>`.
    pub destination: String,
    pub instance: InstanceId,
    /// The event that caused it.
    pub seq: u64,
    pub procedure: String,
    /// The webhook event type (`task.completed`) or, for a mail, what it tells
    /// (`notification`, `reminder`, `task.offered`).
    pub kind: String,
    /// When the event happened, Unix milliseconds.
    pub at_ms: i64,
    /// A webhook's JSON body, or a mail's plain text.
    pub body: String,
    /// A mail's subject line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Tries so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not to be tried before this instant, Unix milliseconds (0: at once).
    #[serde(default)]
    pub next_ms: i64,
    /// What the last failed try said (a status line or a connection error; never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was sent, or given up on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_ms: Option<i64>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Dead,
    Sent,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Dead => "dead",
            DeliveryState::Sent => "sent",
        }
    }

    fn family(self) -> u8 {
        match self {
            DeliveryState::Pending => PENDING,
            DeliveryState::Dead => DEAD,
            DeliveryState::Sent => SENT,
        }
    }
}

/// One change to the outbox: a delivery written in `state`, or removed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxWrite {
    pub state: DeliveryState,
    pub delivery: Delivery,
    pub remove: bool,
}

impl OutboxWrite {
    pub fn put(state: DeliveryState, delivery: Delivery) -> OutboxWrite {
        OutboxWrite {
            state,
            delivery,
            remove: false,
        }
    }

    pub fn remove(state: DeliveryState, delivery: Delivery) -> OutboxWrite {
        OutboxWrite {
            state,
            delivery,
            remove: true,
        }
    }
}

fn suffix(key: &mut Vec<u8>, d: &Delivery) -> Result<(), StoreError> {
    text("destination", &d.destination)?;
    key.extend_from_slice(d.destination.as_bytes());
    key.push(SEP);
    key.extend_from_slice(d.instance.as_bytes());
    key.extend_from_slice(&d.seq.to_be_bytes());
    Ok(())
}

/// The first key of `destination`'s range in `state` (pending or dead).
fn range_start(state: DeliveryState, destination: &str) -> Result<Vec<u8>, StoreError> {
    text("destination", destination)?;
    let mut key = vec![state.family()];
    key.extend_from_slice(destination.as_bytes());
    key.push(SEP);
    Ok(key)
}

/// The key of `d` in `state`.
pub(crate) fn key(state: DeliveryState, d: &Delivery) -> Result<Vec<u8>, StoreError> {
    let mut key = Vec::with_capacity(1 + 8 + d.destination.len() + 1 + UUID_LEN + 8);
    key.push(state.family());
    if state == DeliveryState::Sent {
        key.extend_from_slice(&ordered_ms(d.done_ms.unwrap_or(d.at_ms)));
    }
    suffix(&mut key, d)?;
    Ok(key)
}

/// The tree write of one outbox change.
pub(crate) fn op(w: &OutboxWrite) -> Result<Op, StoreError> {
    let value = if w.remove {
        None
    } else {
        Some(serde_json::to_vec(&w.delivery).map_err(|e| StoreError::Invalid(e.to_string()))?)
    };
    Ok(Op {
        tree: Tree::Outbox,
        key: key(w.state, &w.delivery)?,
        value,
    })
}

/// A webhook subscription made (`value`) or removed (`None`) over the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookWrite {
    pub id: String,
    pub value: Option<Vec<u8>>,
}

/// The tree write of one subscription change.
pub(crate) fn hook_op(w: &HookWrite) -> Result<Op, StoreError> {
    text("subscription id", &w.id)?;
    let mut key = vec![HOOK];
    key.extend_from_slice(w.id.as_bytes());
    Ok(Op {
        tree: Tree::Outbox,
        key,
        value: w.value.clone(),
    })
}

/// The stored subscriptions' records, by id.
pub(crate) fn hooks(kv: &dyn Kv) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    kv.scan(Tree::Outbox, Bound::Included(&[HOOK][..]), &mut |k, v| {
        if !k.starts_with(&[HOOK]) || out.len() == MAX_HOOKS {
            return Ok(false);
        }
        out.push(v.to_vec());
        Ok(true)
    })?;
    Ok(out)
}

fn decode(value: &[u8]) -> Result<Delivery, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt(format!("outbox entry: {e}")))
}

/// A page of deliveries in `state`: pending and dead ones in instance order, sent ones
/// newest first. The cursor is the last key read.
pub(crate) fn page(
    kv: &dyn Kv,
    state: DeliveryState,
    destination: Option<&str>,
    cursor: Option<&[u8]>,
    limit: usize,
) -> Result<Page<Delivery>, StoreError> {
    let fam = state.family();
    let prefix = match destination {
        Some(d) if state != DeliveryState::Sent => range_start(state, d)?,
        Some(_) => {
            return Err(StoreError::Invalid(
                "sent deliveries are listed by time, not by destination".into(),
            ))
        }
        None => vec![fam],
    };
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    // A cursor outside this list (another state's, another destination's, or made up) is
    // clamped to the list's range: the page never shows another list's entries.
    let mut end = prefix.clone();
    end.push(0xff);
    let cursor = cursor.map(|c| c.max(&prefix[..]).min(&end[..]));
    let mut visit = |k: &[u8], v: &[u8]| -> Result<bool, StoreError> {
        if !k.starts_with(&prefix) {
            return Ok(false);
        }
        if items.len() == limit {
            more = true;
            return Ok(false);
        }
        items.push(decode(v)?);
        last = Some(k.to_vec());
        Ok(true)
    };
    if state == DeliveryState::Sent {
        let before = cursor.map_or_else(|| vec![fam + 1], <[u8]>::to_vec);
        kv.scan_back(Tree::Outbox, &before, &mut visit)?;
    } else {
        let from = match cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Included(&prefix[..]),
        };
        kv.scan(Tree::Outbox, from, &mut visit)?;
    }
    Ok(Page {
        next: if more { last } else { None },
        items,
    })
}

/// The destinations with deliveries in `state` (pending or dead), one seek each.
pub(crate) fn destinations(kv: &dyn Kv, state: DeliveryState) -> Result<Vec<String>, StoreError> {
    Ok(
        super::layout::distinct_heads(kv, Tree::Outbox, state.family())?
            .iter()
            .map(|h| String::from_utf8_lossy(&h[1..h.len() - 1]).into_owned())
            .collect(),
    )
}

/// The delivery of event `seq` of `instance` for `destination`, if it is in `state`
/// (pending or dead; sent ones are found by listing).
pub(crate) fn get(
    kv: &dyn Kv,
    state: DeliveryState,
    instance: InstanceId,
    seq: u64,
    destination: &str,
) -> Result<Option<Delivery>, StoreError> {
    if state == DeliveryState::Sent {
        return Err(StoreError::Invalid(
            "a sent delivery is found by listing".into(),
        ));
    }
    let probe = Delivery {
        destination: destination.to_string(),
        instance,
        seq,
        procedure: String::new(),
        kind: String::new(),
        at_ms: 0,
        body: String::new(),
        subject: None,
        attempts: 0,
        next_ms: 0,
        last_error: None,
        done_ms: None,
    };
    kv.get(Tree::Outbox, &key(state, &probe)?)?
        .as_deref()
        .map(decode)
        .transpose()
}

/// Sent deliveries recorded before `before_ms`, oldest first, at most `limit`: what a
/// prune removes.
pub(crate) fn sent_before(
    kv: &dyn Kv,
    before_ms: i64,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let mut out = Vec::new();
    let start = [SENT];
    kv.scan(Tree::Outbox, Bound::Included(&start[..]), &mut |k, v| {
        if k.first() != Some(&SENT) || out.len() == limit {
            return Ok(false);
        }
        let at = k
            .get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(ms_from_ordered)
            .ok_or_else(|| StoreError::Corrupt("outbox key too short".into()))?;
        if at >= before_ms {
            return Ok(false);
        }
        out.push(decode(v)?);
        Ok(true)
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(dest: &str, seq: u64) -> Delivery {
        Delivery {
            destination: dest.into(),
            instance: InstanceId::from_u128(7),
            seq,
            procedure: "p".into(),
            kind: "task.opened".into(),
            at_ms: 1_000,
            body: "{}".into(),
            subject: None,
            attempts: 0,
            next_ms: 0,
            last_error: None,
            done_ms: None,
        }
    }

    #[test]
    fn one_instances_messages_for_one_destination_sort_in_history_order() {
        let a = key(DeliveryState::Pending, &d("hook:crm", 2)).unwrap();
        let b = key(DeliveryState::Pending, &d("hook:crm", 10)).unwrap();
        assert!(a < b);
        // A destination's keys are one range, whatever the instance.
        let other = key(DeliveryState::Pending, &d("hook:crm2", 1)).unwrap();
        assert!(
            b < other && b.starts_with(&range_start(DeliveryState::Pending, "hook:crm").unwrap())
        );
        assert!(!other.starts_with(&range_start(DeliveryState::Pending, "hook:crm").unwrap()));
        // Sent keys sort by when they were sent, whatever the event.
        let mut late = d("hook:crm", 1);
        late.done_ms = Some(5_000);
        let mut early = d("hook:crm", 9);
        early.done_ms = Some(4_000);
        assert!(
            key(DeliveryState::Sent, &early).unwrap() < key(DeliveryState::Sent, &late).unwrap()
        );
    }

    #[test]
    fn a_destination_with_the_separator_is_refused() {
        assert!(key(DeliveryState::Pending, &d("hook:a\0b", 1)).is_err());
    }
}
