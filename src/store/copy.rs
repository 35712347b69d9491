//! Moving a store: every tree of one store copied into another that holds nothing yet
//! (sled to PostgreSQL, or back), then checked — each tree's row count and a SHA-256 over
//! its keys and values equal on both sides, and every hash chain verified on the copy with
//! the same instance and event counts as the original. Both stores keep one key layout
//! (`layout.rs`), so a copy is rows, not a translation.
//!
//! It reads the source in pages and writes the destination in batches, so its memory does
//! not grow with the store. It must not be pointed at a destination in use: it refuses one
//! that holds any instance or procedure, and nothing else may write while it runs.

use std::ops::Bound;

use sha2::{Digest, Sha256};

use super::any::AnyStore;
use super::layout::{Kv, Tree};
use super::{Store, StoreError};

/// One row of a tree: key and value.
pub(crate) type Row = (Vec<u8>, Vec<u8>);

/// Rows per page read and per batch written.
const PAGE: usize = 2_000;

/// What was copied, per tree, and what the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// (tree, rows) in tree order.
    pub trees: Vec<(String, u64)>,
    /// Instances and events whose chains verified on the copy.
    pub instances: u64,
    pub events: u64,
}

/// Raw rows of a store, for copying. Only the stores in this crate implement it.
pub(crate) trait Raw {
    /// Up to `limit` rows of `tree` with keys after `after` (from the start when `None`).
    fn page(
        &self,
        tree: Tree,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError>;
    /// Writes rows as they are (no checks: the source's checks made them).
    fn put(&self, tree: Tree, rows: Vec<Row>) -> Result<(), StoreError>;
    /// Makes everything put so far durable.
    fn sync(&self) -> Result<(), StoreError>;
    /// Removes every row of `tree` (for `store upgrade`, which rebuilds index trees).
    fn clear(&self, tree: Tree) -> Result<(), StoreError>;
    /// Removes every row of `tree` whose key starts with `prefix` (for `store upgrade`);
    /// returns how many there were.
    fn clear_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<u64, StoreError>;
    /// The store format found when the store was opened.
    fn format(&self) -> u32;
}

/// A page read through the layout's `Kv` reads.
pub(crate) fn page_of(
    kv: &dyn Kv,
    tree: Tree,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<Row>, StoreError> {
    let mut out = Vec::new();
    let from = after.map_or(Bound::Unbounded, Bound::Excluded);
    kv.scan(tree, from, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

pub(crate) fn raw(s: &AnyStore) -> &dyn Raw {
    match s {
        AnyStore::Sled(s) => s,
        AnyStore::Postgres(s) => s,
        AnyStore::Memory(s) => s,
    }
}

/// The trees copied: all but `meta`, whose format marker and store id each store keeps
/// for itself.
fn copied() -> impl Iterator<Item = Tree> {
    Tree::ALL.into_iter().filter(|t| *t != Tree::Meta)
}

/// Copies `from` into the empty `to` and checks the copy; `progress` hears each tree's
/// name and rows copied so far.
pub fn copy(
    from: &AnyStore,
    to: &AnyStore,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<CopyReport, StoreError> {
    let (src, dst) = (raw(from), raw(to));
    for t in [Tree::Instances, Tree::Procedures] {
        if !dst.page(t, None, 1)?.is_empty() {
            return Err(StoreError::Invalid(format!(
                "the destination already holds {}; copy into an empty store",
                t.name()
            )));
        }
    }
    let mut trees = Vec::new();
    for t in copied() {
        let mut after = None;
        let mut rows = 0u64;
        loop {
            let page = src.page(t, after.take(), PAGE)?;
            let Some(last) = page.last().map(|(k, _)| k.clone()) else {
                break;
            };
            rows += page.len() as u64;
            dst.put(t, page)?;
            progress(t.name(), rows);
            after = Some(last);
        }
        trees.push((t.name().to_string(), rows));
    }
    dst.sync()?;
    // The check: rows and a digest per tree, then every chain on the copy.
    for t in copied() {
        let (a, b) = (digest(src, t)?, digest(dst, t)?);
        if a != b {
            return Err(StoreError::Corrupt(format!(
                "the copy of `{}` differs: {} rows in the source, {} in the copy",
                t.name(),
                a.0,
                b.0
            )));
        }
    }
    let (vs, vd) = (from.verify(&mut |_| {})?, to.verify(&mut |_| {})?);
    if vd.broken > 0 || vs.instances != vd.instances || vs.events != vd.events {
        return Err(StoreError::Corrupt(format!(
            "the copy's hash chains do not match: source {} instances / {} events, copy {} / {} \
             with {} broken",
            vs.instances, vs.events, vd.instances, vd.events, vd.broken
        )));
    }
    Ok(CopyReport {
        trees,
        instances: vd.instances,
        events: vd.events,
    })
}

/// Rows and a SHA-256 over (key length, key, value length, value) of every row, in order.
fn digest(s: &dyn Raw, t: Tree) -> Result<(u64, [u8; 32]), StoreError> {
    let mut h = Sha256::new();
    let mut rows = 0u64;
    let mut after = None;
    loop {
        let page = s.page(t, after.take(), PAGE)?;
        let Some(last) = page.last().map(|(k, _)| k.clone()) else {
            break;
        };
        for (k, v) in &page {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k);
            h.update((v.len() as u64).to_be_bytes());
            h.update(v);
        }
        rows += page.len() as u64;
        after = Some(last);
    }
    Ok((rows, h.finalize().into()))
}
