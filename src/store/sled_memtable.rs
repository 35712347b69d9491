//! Writes that are durable (their record of the write-ahead log is synced) but not yet in
//! sled, kept in memory in front of it, and the thread that moves them into sled.
//!
//! Why: a sled insert costs a copy of the B-tree leaf it lands in, ~14 of them per step
//! completion, and it was the writer thread's whole ceiling. With the log making a batch
//! durable, sled only has to hold it by the next checkpoint, so the writer puts a synced
//! batch into the *active layer* here (a few map inserts), readers see it at once, and the
//! batch is answered. When the active layer has grown past `LAYER_BYTES` it is *frozen* and
//! the apply thread writes it into sled on the other core, each key once however often the
//! layer changed it (a task opened and closed within one layer costs sled nothing).
//!
//! Readers look at the layers newest first, then at sled (`Trees` in `sled_store.rs`). A
//! frozen layer is dropped only after sled holds every write in it, so a key is always
//! either in a layer or in sled with its latest value. Scans merge the layers with sled
//! step by step; a scan notices that a layer was dropped since its sled iterator last moved
//! (the `generation`) and moves that iterator again, so it never skips a key that went
//! from a layer into sled behind its back.
//!
//! This module must not decide durability (the writer syncs the log before `insert`) and
//! must never drop a layer that sled does not fully hold; after a failed sled write it
//! stops applying and keeps every layer, so reads stay right and the log's replay at the
//! next open finishes the job.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::layout::{Op, Tree};
use super::StoreError;

/// Bytes of keys and values after which the active layer is frozen and handed to the apply
/// thread. Larger layers coalesce more rewrites of one key; smaller ones bound the memory
/// held and the writer's wait when sled falls behind (it waits for a whole layer): at 4 MiB
/// the engine bench's p99 at 64 callers was 25–35 ms, at 1 MiB ~15 ms, same throughput.
pub(super) const LAYER_BYTES: usize = 1024 * 1024;
/// Frozen layers that may wait for the apply thread before the writer waits for it: the
/// back-pressure that bounds memory when sled cannot keep up.
pub(super) const MAX_FROZEN: usize = 2;
/// What one entry costs in a layer beyond its key and value (map node, vectors), roughly.
const ENTRY_OVERHEAD: usize = 64;

type Map = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// A layered key and its write (`None`: removed).
pub(super) type Entry = (Vec<u8>, Option<Vec<u8>>);

/// One layer: per tree, the latest write to each key (`None`: removed).
#[derive(Default)]
pub(super) struct Layer {
    trees: [Map; Tree::BY_INDEX.len()],
    bytes: usize,
    writes: u64,
}

impl Layer {
    fn get(&self, tree: Tree, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.trees[tree.index()].get(key)
    }

    fn is_empty(&self) -> bool {
        self.writes == 0
    }
}

struct Layers {
    active: Layer,
    /// Oldest first; the apply thread takes the front.
    frozen: VecDeque<Arc<Layer>>,
    /// Layers dropped so far (see the module comment).
    generation: u64,
}

/// What the writer and the apply thread wait on.
#[derive(Default)]
struct Signal {
    /// Layers frozen and applied since the start (a layer's number is its place in the
    /// freezing order, from 1).
    frozen_total: u64,
    applied_total: u64,
    /// sled is to be flushed once every layer up to this number is applied...
    flush_wanted: u64,
    /// ...and has been, up to this one.
    flushed: u64,
    stop: bool,
    failed: Option<String>,
}

impl Signal {
    /// Frozen layers not yet applied.
    fn unapplied(&self) -> u64 {
        self.frozen_total - self.applied_total
    }

    fn flush_due(&self) -> bool {
        self.flush_wanted > self.flushed && self.applied_total >= self.flush_wanted
    }
}

/// Makes what the apply thread wrote into sled durable (sled's flush, and `fdatasync` of
/// its files where the store syncs).
pub(super) type Flusher = Box<dyn FnMut() -> Result<(), StoreError> + Send>;

/// Counters for benchmarks: how much the layers saved sled.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Writes of the layers applied so far (one per `Op` the writer put in).
    pub writes: AtomicU64,
    /// Writes the apply thread made to sled (one per distinct key of a layer).
    pub applied: AtomicU64,
    /// Time the apply thread spent writing to sled, in microseconds.
    pub apply_micros: AtomicU64,
    /// The same two, per tree (slots by `Tree::index`): which trees the store's ceiling is
    /// spent on, for the benchmarks that decide the next layout change.
    pub tree_writes: [AtomicU64; Tree::BY_INDEX.len()],
    pub tree_micros: [AtomicU64; Tree::BY_INDEX.len()],
}

pub(super) struct Memtable {
    layers: RwLock<Layers>,
    signal: Mutex<Signal>,
    changed: Condvar,
    pub(super) counters: Counters,
}

/// Which way a scan goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    Forward,
    Back,
}

impl Memtable {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            layers: RwLock::new(Layers {
                active: Layer::default(),
                frozen: VecDeque::new(),
                generation: 0,
            }),
            signal: Mutex::new(Signal::default()),
            changed: Condvar::new(),
            counters: Counters::default(),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Layers> {
        self.layers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Layers> {
        self.layers.write().unwrap_or_else(|p| p.into_inner())
    }

    fn signal(&self) -> MutexGuard<'_, Signal> {
        self.signal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest layered write to `key`: `Some(None)` if a layer removed it, `None` if no
    /// layer holds it (sled has its latest value).
    pub(super) fn get(&self, tree: Tree, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let layers = self.read();
        if let Some(v) = layers.active.get(tree, key) {
            return Some(v.clone());
        }
        layers
            .frozen
            .iter()
            .rev()
            .find_map(|l| l.get(tree, key))
            .cloned()
    }

    /// Makes a synced batch visible to readers, all of it at once. Returns the active
    /// layer's size.
    pub(super) fn insert(&self, ops: Vec<Op>) -> usize {
        let n = ops.len() as u64;
        let mut layers = self.write();
        let active = &mut layers.active;
        for op in ops {
            active.bytes += op.key.len() + op.value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD;
            active.trees[op.tree.index()].insert(op.key, op.value);
        }
        active.writes += n;
        active.bytes
    }

    /// Hands the active layer to the apply thread (if it holds anything). Returns the number
    /// of the last layer frozen: every write made before this call is in it or in one before.
    pub(super) fn freeze(&self) -> u64 {
        let mut layers = self.write();
        if layers.active.is_empty() {
            return self.signal().frozen_total;
        }
        let layer = std::mem::take(&mut layers.active);
        layers.frozen.push_back(Arc::new(layer));
        // Counted while the layer lock is held, so numbers follow the frozen queue's order.
        let mut s = self.signal();
        s.frozen_total += 1;
        let number = s.frozen_total;
        drop(s);
        drop(layers);
        self.changed.notify_all();
        number
    }

    /// Asks the apply thread to flush sled once every layer up to `layer` is in it.
    pub(super) fn request_flush(&self, layer: u64) {
        let mut s = self.signal();
        s.flush_wanted = s.flush_wanted.max(layer);
        drop(s);
        self.changed.notify_all();
    }

    /// Waits until sled durably holds every layer up to `layer` (`request_flush` first).
    pub(super) fn wait_flushed(&self, layer: u64) -> Result<(), StoreError> {
        let mut s = self.signal();
        loop {
            if let Some(reason) = &s.failed {
                return Err(StoreError::Io(reason.clone()));
            }
            if s.flushed >= layer {
                return Ok(());
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits until at most `n` frozen layers are left unapplied. Fails once the apply
    /// thread has failed.
    pub(super) fn wait_frozen_at_most(&self, n: usize) -> Result<(), StoreError> {
        let mut s = self.signal();
        loop {
            if let Some(reason) = &s.failed {
                return Err(StoreError::Io(reason.clone()));
            }
            if s.unapplied() <= n as u64 {
                return Ok(());
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Why the apply thread stopped, if it failed.
    pub(super) fn failure(&self) -> Option<String> {
        self.signal().failed.clone()
    }

    /// The first layered entry past `bound` in direction `dir`, across all layers, the
    /// newest layer winning a key several hold; with the generation it was read at.
    pub(super) fn next(&self, tree: Tree, bound: Bound<&[u8]>, dir: Dir) -> (Option<Entry>, u64) {
        let layers = self.read();
        let mut best: Option<(&Vec<u8>, &Option<Vec<u8>>)> = None;
        // Newest first, replacing only on a strictly better key, so the newest wins ties.
        let all = std::iter::once(&layers.active).chain(layers.frozen.iter().rev().map(|l| &**l));
        for layer in all {
            let map = &layer.trees[tree.index()];
            let found = match dir {
                Dir::Forward => map.range::<[u8], _>((bound, Bound::Unbounded)).next(),
                Dir::Back => map.range::<[u8], _>((Bound::Unbounded, bound)).next_back(),
            };
            if let Some((k, v)) = found {
                let better = match best {
                    None => true,
                    Some((b, _)) => match dir {
                        Dir::Forward => k < b,
                        Dir::Back => k > b,
                    },
                };
                if better {
                    best = Some((k, v));
                }
            }
        }
        (best.map(|(k, v)| (k.clone(), v.clone())), layers.generation)
    }

    /// The number of layers dropped so far.
    pub(super) fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Asks the apply thread to finish the layers it has and stop.
    pub(super) fn stop(&self) {
        self.signal().stop = true;
        self.changed.notify_all();
    }

    /// Starts the thread that writes frozen layers into `trees` (indexed by `Tree::index`)
    /// and flushes sled with `flusher` when asked.
    pub(super) fn start_applier(
        self: &Arc<Self>,
        trees: Vec<sled::Tree>,
        flusher: Flusher,
    ) -> Result<JoinHandle<()>, StoreError> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("sopflow-store-apply".into())
            .spawn(move || me.apply_loop(&trees, flusher))
            .map_err(|e| StoreError::Io(format!("cannot start the store apply thread: {e}")))
    }

    fn fail(&self, reason: String) {
        tracing::error!(error = %reason, "the store stops taking commits");
        self.signal().failed = Some(reason);
        self.changed.notify_all();
    }

    fn apply_loop(&self, trees: &[sled::Tree], mut flusher: Flusher) {
        loop {
            {
                let mut s = self.signal();
                while s.unapplied() == 0 && !s.flush_due() && !s.stop {
                    s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                if s.flush_due() {
                    let through = s.flush_wanted;
                    drop(s);
                    if let Err(e) = flusher() {
                        self.fail(format!(
                            "flushing sled failed ({e}); restart to recover from the write-ahead log"
                        ));
                        return;
                    }
                    self.signal().flushed = through;
                    self.changed.notify_all();
                    continue;
                }
                if s.unapplied() == 0 {
                    return;
                }
            }
            let Some(layer) = self.read().frozen.front().cloned() else {
                return;
            };
            let started = Instant::now();
            if let Err(e) = apply(&layer, trees, &self.counters) {
                self.fail(format!(
                    "writing committed data into sled failed ({e}); restart to recover it from the write-ahead log"
                ));
                return;
            }
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.counters
                .apply_micros
                .fetch_add(micros, Ordering::Relaxed);
            let distinct: usize = layer.trees.iter().map(BTreeMap::len).sum();
            self.counters
                .applied
                .fetch_add(distinct as u64, Ordering::Relaxed);
            self.counters
                .writes
                .fetch_add(layer.writes, Ordering::Relaxed);
            {
                let mut layers = self.write();
                layers.frozen.pop_front();
                layers.generation += 1;
            }
            self.signal().applied_total += 1;
            self.changed.notify_all();
        }
    }
}

fn apply(layer: &Layer, trees: &[sled::Tree], counters: &Counters) -> Result<(), sled::Error> {
    for (i, (map, tree)) in layer.trees.iter().zip(trees).enumerate() {
        if map.is_empty() {
            continue;
        }
        let started = Instant::now();
        for (key, value) in map {
            match value {
                Some(v) => tree.insert(key.as_slice(), v.as_slice()).map(|_| ())?,
                None => tree.remove(key.as_slice()).map(|_| ())?,
            }
        }
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        counters.tree_micros[i].fetch_add(micros, Ordering::Relaxed);
        counters.tree_writes[i].fetch_add(map.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::layout::test_op as op;

    #[test]
    fn the_newest_layer_wins_and_removals_shadow() {
        let m = Memtable::new();
        m.insert(vec![
            op(Tree::Tasks, b"a", Some(b"1")),
            op(Tree::Tasks, b"b", Some(b"1")),
        ]);
        m.freeze();
        m.insert(vec![
            op(Tree::Tasks, b"a", None),
            op(Tree::Tasks, b"c", Some(b"2")),
        ]);
        assert_eq!(m.get(Tree::Tasks, b"a"), Some(None));
        assert_eq!(m.get(Tree::Tasks, b"b"), Some(Some(b"1".to_vec())));
        assert_eq!(m.get(Tree::Tasks, b"z"), None);
        assert_eq!(m.get(Tree::Timers, b"a"), None);
        let (first, _) = m.next(Tree::Tasks, Bound::Unbounded, Dir::Forward);
        assert_eq!(first, Some((b"a".to_vec(), None)));
        let (after_a, _) = m.next(Tree::Tasks, Bound::Excluded(b"a"), Dir::Forward);
        assert_eq!(after_a, Some((b"b".to_vec(), Some(b"1".to_vec()))));
        let (last, _) = m.next(Tree::Tasks, Bound::Unbounded, Dir::Back);
        assert_eq!(last, Some((b"c".to_vec(), Some(b"2".to_vec()))));
        let (before_b, _) = m.next(Tree::Tasks, Bound::Excluded(b"b"), Dir::Back);
        assert_eq!(before_b, Some((b"a".to_vec(), None)));
    }

    #[test]
    fn the_apply_thread_writes_each_key_once_and_then_drops_the_layer() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let trees: Vec<sled::Tree> = Tree::BY_INDEX
            .iter()
            .map(|t| db.open_tree(t.name()).unwrap())
            .collect();
        let m = Memtable::new();
        let flushes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&flushes);
        let flusher: Flusher = Box::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        let handle = m.start_applier(trees.clone(), flusher).unwrap();
        m.insert(vec![
            op(Tree::Tasks, b"t", Some(b"open")),
            op(Tree::TasksByRole, b"r", Some(b"row")),
        ]);
        m.insert(vec![
            op(Tree::Tasks, b"t", Some(b"closed")),
            op(Tree::TasksByRole, b"r", None),
        ]);
        let layer = m.freeze();
        assert_eq!(layer, 1);
        m.request_flush(layer);
        m.wait_flushed(layer).unwrap();
        assert_eq!(
            flushes.load(Ordering::Relaxed),
            1,
            "flushed once the layer was in"
        );
        assert_eq!(m.freeze(), 1, "nothing new to freeze");
        assert_eq!(m.generation(), 1);
        assert_eq!(m.get(Tree::Tasks, b"t"), None, "the layer is gone");
        let tasks = &trees[Tree::Tasks.index()];
        assert_eq!(tasks.get(b"t").unwrap().unwrap().as_ref(), b"closed");
        assert!(trees[Tree::TasksByRole.index()].is_empty());
        assert_eq!(m.counters.writes.load(Ordering::Relaxed), 4);
        assert_eq!(m.counters.applied.load(Ordering::Relaxed), 2);
        let by_tree = |t: Tree| m.counters.tree_writes[t.index()].load(Ordering::Relaxed);
        assert_eq!(by_tree(Tree::Tasks), 1);
        assert_eq!(by_tree(Tree::TasksByRole), 1);
        assert_eq!(by_tree(Tree::Events), 0);
        m.stop();
        handle.join().unwrap();
    }
}
