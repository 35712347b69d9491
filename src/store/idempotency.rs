//! Idempotency records: what a command sent with an `Idempotency-Key` did, stored in the
//! same commit as its events, so a retry after a lost answer finds the first answer instead
//! of doing the work twice. Keyed `caller 0x00 key` (one person's keys never meet
//! another's); the value is the request's fingerprint, when it was recorded and the
//! instance and version the command left.
//!
//! The commit checks, inside its transaction, that no live record holds the key — two
//! requests racing with one key cannot both commit. A record older than the window is
//! dead: a new command may take its key (and overwrites it). This module must not do I/O
//! of its own and must never panic on stored bytes.

use super::layout::{self, Op, Tree, SEP, UUID_LEN};
use super::{InstanceId, StoreError};

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;
const VALUE_LEN: usize = 32 + 8 + UUID_LEN + 8;

/// A record to store with a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyWrite {
    pub caller: String,
    pub key: String,
    pub record: IdempotencyRecord,
    /// Records at or before this instant are dead: the key may be taken again.
    pub stale_before_ms: i64,
}

/// What a keyed command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// SHA-256 over what the command was asked (endpoint, target, body): a retry must match.
    pub fingerprint: [u8; 32],
    pub at_ms: i64,
    pub instance: InstanceId,
    /// The instance's version right after the command.
    pub version: u64,
}

/// The store key of `key` for `caller`; refuses text the key layout cannot hold.
pub(crate) fn store_key(caller: &str, key: &str) -> Result<Vec<u8>, StoreError> {
    layout::text("user id", caller)?;
    layout::text("idempotency key", key)?;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(StoreError::Invalid(format!(
            "an idempotency key must be 1 to {MAX_KEY_LEN} bytes"
        )));
    }
    let mut k = Vec::with_capacity(caller.len() + 1 + key.len());
    k.extend_from_slice(caller.as_bytes());
    k.push(SEP);
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

pub(crate) fn encode(r: &IdempotencyRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_LEN);
    v.extend_from_slice(&r.fingerprint);
    v.extend_from_slice(&r.at_ms.to_be_bytes());
    v.extend_from_slice(r.instance.as_bytes());
    v.extend_from_slice(&r.version.to_be_bytes());
    v
}

pub(crate) fn decode(v: &[u8]) -> Result<IdempotencyRecord, StoreError> {
    let bad = || StoreError::Corrupt(format!("idempotency record of {} bytes", v.len()));
    if v.len() != VALUE_LEN {
        return Err(bad());
    }
    let at = |from: usize| -> Result<[u8; 8], StoreError> {
        v[from..from + 8].try_into().map_err(|_| bad())
    };
    Ok(IdempotencyRecord {
        fingerprint: v[..32].try_into().map_err(|_| bad())?,
        at_ms: i64::from_be_bytes(at(32)?),
        instance: layout::uuid_at(v, 40, "idempotency record")?,
        version: u64::from_be_bytes(at(40 + UUID_LEN)?),
    })
}

/// The record stored under `caller`'s `key`.
pub(crate) fn read(
    kv: &dyn layout::Kv,
    caller: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    kv.get(Tree::Idempotency, &store_key(caller, key)?)?
        .map(|v| decode(&v))
        .transpose()
}

/// The check a commit carrying a record makes on what is stored under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    pub key: Vec<u8>,
    pub stale_before_ms: i64,
}

/// The check and the write of a record, for the commit's plan.
pub(crate) fn plan(w: &IdempotencyWrite) -> Result<(Check, Op), StoreError> {
    let key = store_key(&w.caller, &w.key)?;
    Ok((
        Check {
            key: key.clone(),
            stale_before_ms: w.stale_before_ms,
        },
        Op {
            tree: Tree::Idempotency,
            key,
            value: Some(encode(&w.record)),
        },
    ))
}

/// The verdict on a check: a live record under the key fails the commit with `KeyUsed`.
pub(crate) fn check(c: &Check, stored: Option<&[u8]>) -> Result<(), StoreError> {
    match stored {
        Some(v) if decode(v)?.at_ms > c.stale_before_ms => Err(StoreError::KeyUsed),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_corrupt() {
        let r = IdempotencyRecord {
            fingerprint: [7; 32],
            at_ms: -5,
            instance: uuid::Uuid::now_v7(),
            version: 9,
        };
        assert_eq!(decode(&encode(&r)).unwrap(), r);
        assert!(matches!(decode(&[1, 2]), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_live_record_blocks_and_a_stale_one_does_not() {
        let r = IdempotencyRecord {
            fingerprint: [0; 32],
            at_ms: 100,
            instance: uuid::Uuid::nil(),
            version: 1,
        };
        let c = |stale| Check {
            key: vec![],
            stale_before_ms: stale,
        };
        assert!(matches!(
            check(&c(99), Some(&encode(&r))),
            Err(StoreError::KeyUsed)
        ));
        assert!(check(&c(100), Some(&encode(&r))).is_ok());
        assert!(check(&c(0), None).is_ok());
    }

    #[test]
    fn keys_are_bounded_and_separated() {
        assert!(store_key("ann", "").is_err());
        assert!(store_key("ann", &"k".repeat(256)).is_err());
        assert!(store_key("a\0b", "k").is_err());
        assert_ne!(store_key("ab", "c").unwrap(), store_key("a", "bc").unwrap());
    }
}
