//! The hash chain that makes every instance's history tamper-evident (invariant 7): how one
//! link is computed, and the walk that checks every chain of a store.
//!
//! A link is `SHA-256("sopflow/event/v1" ‖ 0x00 ‖ instance(16) ‖ seq u64 ‖ previous(32) ‖
//! len u64 ‖ event bytes)`, integers big-endian, with 32 zero bytes as the "previous" of
//! event 1. The event bytes are hashed exactly as stored, so checking a chain never
//! re-encodes anything: the canonical encoding of an event *is* its stored bytes, and
//! a verifier in another language needs only SHA-256 and this paragraph. The instance id
//! and sequence number are inside the hash, so an event cannot be moved to another
//! instance or another position without breaking the chain.
//!
//! This module must not write, and must not decode event bytes (the store never does):
//! verification reads through `Kv`, recomputes links and reports.

use std::ops::Bound;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::layout::{self, Kv, Tree};
use super::{InstanceId, StoreError};

/// A link hash.
pub type Hash = [u8; 32];

/// The "previous hash" of an instance's first event.
pub const GENESIS: Hash = [0; 32];

const DOMAIN: &[u8] = b"sopflow/event/v1\0";

/// The hash of event `seq` of `instance`, chained to `previous`.
pub fn link(instance: InstanceId, seq: u64, previous: &Hash, event: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(instance.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(previous);
    h.update((event.len() as u64).to_be_bytes());
    h.update(event);
    h.finalize().into()
}

/// Lower-case hex of a hash (or any bytes), as reports, exports and cursors show it.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The bytes of `len` bytes written by `hex`, or `None` for anything else.
pub fn unhex(text: &str, len: usize) -> Option<Vec<u8>> {
    if text.len() != 2 * len {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// The first place a chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub instance: InstanceId,
    /// The event whose link fails (for a head mismatch: the instance's last event).
    pub seq: u64,
    /// What the link should be, recomputed from the event bytes and the previous link.
    pub expected: String,
    /// What the store holds.
    pub found: String,
    /// What is wrong, in a sentence.
    pub problem: String,
}

/// The outcome of checking every chain of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub instances: u64,
    pub events: u64,
    /// How many instances have a broken chain.
    pub broken: u64,
    /// The first broken link, in instance-id order.
    pub first_break: Option<Break>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Checks one instance: every event's link, the sequence numbers, and that the head and
/// version kept with the snapshot match the last event. Reads the instance row first and
/// then only events up to its version, so a store being written meanwhile is not mistaken
/// for a broken one (events past the version read are newer, not wrong).
pub(crate) fn verify_instance(
    kv: &dyn Kv,
    id: InstanceId,
    events: &mut u64,
) -> Result<Option<Break>, StoreError> {
    let Some(row) = kv.get(Tree::Instances, &layout::instance_key(id))? else {
        return Ok(Some(Break {
            instance: id,
            seq: 0,
            expected: String::new(),
            found: String::new(),
            problem: "the instance is listed but its record is missing".into(),
        }));
    };
    let (version, head) = match layout::version_and_head(&row) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Some(Break {
                instance: id,
                seq: 0,
                expected: String::new(),
                found: String::new(),
                problem: e.to_string(),
            }))
        }
    };
    let mut previous = GENESIS;
    let mut expected_seq = 1u64;
    let mut broken = None;
    let start = layout::event_key(id, 1);
    kv.scan(Tree::Events, Bound::Included(&start), &mut |k, v| {
        if !k.starts_with(id.as_bytes()) {
            return Ok(false);
        }
        let seq = layout::event_seq(k)?;
        if seq > version {
            return Ok(false);
        }
        *events += 1;
        let Some((stored, bytes)) = layout::split_event(v) else {
            broken = Some(Break {
                instance: id,
                seq,
                expected: String::new(),
                found: String::new(),
                problem: format!(
                    "the stored event is {} bytes, too short to hold its hash",
                    v.len()
                ),
            });
            return Ok(false);
        };
        if seq != expected_seq {
            broken = Some(Break {
                instance: id,
                seq: expected_seq,
                expected: String::new(),
                found: String::new(),
                problem: format!(
                    "event {expected_seq} is missing (the next stored event is {seq})"
                ),
            });
            return Ok(false);
        }
        let want = link(id, seq, &previous, bytes);
        if want != stored {
            broken = Some(Break {
                instance: id,
                seq,
                expected: hex(&want),
                found: hex(&stored),
                problem: "the event's hash does not match its content and the previous link: \
                          the event or its hash was changed after it was written"
                    .into(),
            });
            return Ok(false);
        }
        previous = want;
        expected_seq += 1;
        Ok(true)
    })?;
    if broken.is_some() {
        return Ok(broken);
    }
    let last = expected_seq - 1;
    if last != version {
        return Ok(Some(Break {
            instance: id,
            seq: last + 1,
            expected: String::new(),
            found: String::new(),
            problem: format!(
                "the instance is at version {version} but only {last} events are stored"
            ),
        }));
    }
    if previous != head {
        return Ok(Some(Break {
            instance: id,
            seq: last,
            expected: hex(&previous),
            found: hex(&head),
            problem: "the chain head kept with the instance does not match its last event: \
                      events were removed or replaced"
                .into(),
        }));
    }
    Ok(None)
}

/// Checks one instance's chain; `None` when the instance does not exist.
pub(crate) fn verify_one(kv: &dyn Kv, id: InstanceId) -> Result<Option<Verification>, StoreError> {
    if kv
        .get(Tree::Instances, &layout::instance_key(id))?
        .is_none()
    {
        return Ok(None);
    }
    let mut out = Verification {
        instances: 1,
        ..Verification::default()
    };
    out.first_break = verify_instance(kv, id, &mut out.events)?;
    out.broken = u64::from(out.first_break.is_some());
    Ok(Some(out))
}

/// Checks every instance's chain, in instance-id order. `progress` is called after each
/// instance with the events checked so far.
pub(crate) fn verify_all(
    kv: &dyn Kv,
    progress: &mut dyn FnMut(u64),
) -> Result<Verification, StoreError> {
    let mut out = Verification::default();
    let mut ids = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        ids.clear();
        let from = match &after {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        // Ids are read a thousand at a time so no scan is held open while chains are read.
        kv.scan(Tree::InstancesAll, from, &mut |k, _| {
            ids.push(layout::uuid_key(k, "instances_all")?);
            Ok(ids.len() < 1000)
        })?;
        let Some(last) = ids.last() else { break };
        after = Some(last.as_bytes().to_vec());
        for &id in &ids {
            out.instances += 1;
            if let Some(b) = verify_instance(kv, id, &mut out.events)? {
                out.broken += 1;
                out.first_break.get_or_insert(b);
            }
            progress(out.events);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_depends_on_every_input() {
        let id = uuid::Uuid::from_u128(7);
        let base = link(id, 1, &GENESIS, b"{}");
        assert_ne!(base, link(uuid::Uuid::from_u128(8), 1, &GENESIS, b"{}"));
        assert_ne!(base, link(id, 2, &GENESIS, b"{}"));
        assert_ne!(base, link(id, 1, &[1; 32], b"{}"));
        assert_ne!(base, link(id, 1, &GENESIS, b"{ }"));
        assert_eq!(base, link(id, 1, &GENESIS, b"{}"));
        assert_eq!(hex(&GENESIS), "0".repeat(64));
    }

    /// Pins the link definition documented above: a change here breaks every stored chain.
    #[test]
    fn the_link_definition_is_stable() {
        let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let mut h = Sha256::new();
        h.update(b"sopflow/event/v1\0");
        h.update(id.as_bytes());
        h.update(1u64.to_be_bytes());
        h.update([0u8; 32]);
        h.update(9u64.to_be_bytes());
        h.update(b"{\"seq\":1}");
        let manual: Hash = h.finalize().into();
        assert_eq!(link(id, 1, &GENESIS, b"{\"seq\":1}"), manual);
    }
}
