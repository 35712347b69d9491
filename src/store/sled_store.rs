//! The embedded store on sled 0.34.7: every commit is applied all-or-nothing (invariant 2:
//! its writes are one record of a write-ahead log before any reaches sled) and acknowledged
//! only once that record is on disk (invariant 3, see `group_commit.rs`). It must not interpret event or snapshot
//! bytes, must not block a tokio worker on an fsync, and must never panic on what it reads
//! from disk.
//!
//! # Key layout (format 5)
//!
//! All integers are big-endian so that byte order is numeric order. Text (procedure ids,
//! statuses, roles, user ids) is UTF-8 and may not contain 0x00, which separates it from
//! what follows; the store refuses such text with `StoreError::Invalid`. Ids are UUIDs as
//! their 16 raw bytes; UUID v7 sorts by creation time, so "in id order" is "in creation order".
//!
//! | tree                      | key                                                | value                      |
//! |---------------------------|----------------------------------------------------|----------------------------|
//! | `audit`                   | see `audit.rs`: by actor, procedure, kind          | event summary              |
//! | `events`                  | instance(16) ++ seq u64                            | link(32) ++ event bytes    |
//! | `idempotency`             | user ++ 0x00 ++ key                                | fingerprint(32) ++ at ms ++ instance(16) ++ version |
//! | `instances`               | instance(16)                                       | version u64 ++ head(32) ++ snapshot |
//! | `instances_all`           | instance(16)                                       | empty                      |
//! | `instances_by_procedure`  | procedure ++ 0x00 ++ instance(16)                  | empty                      |
//! | `instances_by_status`     | procedure ++ 0x00 ++ status ++ 0x00 ++ instance(16)| empty                      |
//! | `instances_by_status_any` | status ++ 0x00 ++ instance(16)                     | empty                      |
//! | `meta`                    | `"format"`                                         | format version u32 (= 5)   |
//! | `procedures`              | procedure ++ 0x00 ++ version u32                   | `ProcedureRecord` as JSON  |
//! | `tasks`                   | task(16)                                           | `TaskRow` as JSON, or the instance(16) once closed |
//! | `tasks_by_assignee`       | user ++ 0x00 ++ sort key (see `worklist.rs`)       | `TaskRow` as JSON          |
//! | `tasks_by_role`           | role ++ 0x00 ++ sort key: has-due flag, due, task  | `TaskRow` as JSON          |
//! | `timers`                  | (due_ms + 2^63) u64 ++ instance(16) ++ timer(16)   | payload                    |
//!
//! * `instances_all` gets its entry when an instance is created (`expected_version == 0`);
//!   `instances_by_procedure` when a `StatusChange` has `from: None`; the two status trees
//!   follow every `StatusChange` (leave `from`, enter `to`). Together they answer
//!   `instances(procedure, status, …)` for all four filter combinations by one prefix scan.
//!   The page cursor is the last instance id returned (16 bytes).
//! * Timers store `due_ms` shifted by 2^63 (the sign bit flipped), so negative, zero and
//!   positive due times sort correctly; `due_timers` scans from the start up to `now`.
//! * `meta.format` is written when a store is created. Opening a store whose format is not
//!   the one this build writes fails with `StoreError::Corrupt` saying what to do.
//! * A closed task's `tasks` row is replaced by its instance id (16 bytes, where a JSON row
//!   is longer), so a command arriving after the task closed still finds its instance and is
//!   answered "already completed" rather than "no such task". Format 1 deleted the row.
//! * Every event is stored behind its link in the instance's hash chain (`chain.rs`), and
//!   the instance value keeps the head (the last link). The links are computed by the
//!   writer thread from the stored head, so the chain is the store's guarantee, not the
//!   caller's. Format 3 added the chain and the `audit` index.
//! * Format 4 ordered the worklist indexes by due time, with the row in the entry, so a page
//!   is read in the order it is shown (`worklist.rs`), and added `idempotency`. The trees'
//!   slots (`Tree::index`) are stable numbers, not their position in this (name) order.
//! * `meta.store` holds the store's id, which the file `sopflow-store` beside sled's files
//!   names too (see `Marker`); `dump()` leaves it out.
//! * `dump()` lists the trees above, in this (name) order.
//!
//! # Durability
//!
//! `commit()` turns the `Commit` into a plan of tree writes on the caller's task and hands
//! it to the store's writer thread (`sled_writer.rs`). That thread takes every plan queued
//! at that moment, resolves each against the stored values and the plans before it (a plan
//! whose versions differ is skipped, writing nothing), appends the batch's writes to the
//! write-ahead log (`sled_wal.rs`) and `fdatasync`s it, then puts them into the memtable
//! (`sled_memtable.rs`), and only then answers; the memtable's apply thread writes them
//! into sled later, a MiB at a time, each key once. sled itself is flushed (and its
//! files `fdatasync`ed: sled 0.34 only uses `sync_file_range`, which does not survive a
//! power loss) by that thread at a checkpoint, when the writer has filled one of the two
//! log files (32 MiB) and gone on in the other, and when the store closes. Opening a store
//! replays both log files' records onto what sled recovered, so a `kill -9` or a power
//! loss loses no acknowledged commit and leaves none half applied. Stores written before
//! the log (no `sopflow-wal` file) open as they are.
//!
//! Reads (`instance`, `tasks_for`, …) look at the memtable's layers first, then at sled.
//! They see a batch once it is durable, and never half of one (the memtable takes a batch
//! in at once).
//!
//! sled writes a page bigger than about 128 KB (a leaf holding large snapshots) to its own
//! file under `blobs/` without syncing it; the pipeline syncs new blob files too.

use std::fs::File;
use std::io::ErrorKind;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::group_commit::GroupCommit;
use super::layout::{self, Kv, Tree, Visit};
use super::sled_memtable::{Dir, Memtable};
use super::sled_writer::{Job, Writer, WriterOptions};
use super::{
    AuditEvent, AuditQuery, Commit, Dump, InstanceId, Page, ProcedureRecord, Store, StoreError,
    StoredEvent, StoredInstance, TaskId, TaskRow, TimerRow, Verification,
};

/// Tuning for `SledStore::open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SledOptions {
    /// sled's page cache size. sled's own default is 1 GB.
    pub cache_capacity_bytes: u64,
    /// sled's background flush interval. `None` (the default) leaves flushing to the
    /// writer's checkpoints: every acknowledged write is in the write-ahead log anyway.
    pub flush_every_ms: Option<u64>,
    /// The most commits one flush covers; bounds the wait of a commit queued behind others.
    pub max_batch: usize,
    /// `fdatasync` the write-ahead log before each acknowledgement (and sled's files at each
    /// checkpoint). Without it the log is still written before every acknowledgement, which
    /// survives a process crash (`kill -9`) but not a power loss. On by default: invariant
    /// 3 means the power-loss case too.
    pub fsync: bool,
    /// Also open a store of the format `sopflow store upgrade` rewrites (for that command
    /// only: nothing else may run on a store of an older format).
    pub upgrading: bool,
    /// Bytes of committed writes held in memory before they are handed to the thread that
    /// writes them into sled (`sled_memtable.rs`). Tests set it tiny so that every commit
    /// goes through that thread while readers read.
    pub layer_bytes: usize,
    /// Bytes of write-ahead log after which the writer goes on in its other log file and
    /// sled is flushed behind it (a checkpoint). Tests set it small to switch often.
    pub checkpoint_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 256 * 1024 * 1024,
            flush_every_ms: None,
            max_batch: 1024,
            fsync: true,
            upgrading: false,
            layer_bytes: super::sled_memtable::LAYER_BYTES,
            checkpoint_bytes: super::sled_writer::CHECKPOINT_BYTES,
        }
    }
}

/// How well group commit is coalescing: `commits / flushes` is the mean batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SledStats {
    /// Commits and procedure registrations acknowledged (or failed by a flush).
    pub commits: u64,
    /// Flushes (fsyncs) performed for them.
    pub flushes: u64,
    /// Writer-thread time spent resolving batches and logging them, in microseconds.
    pub apply_micros: u64,
    /// Writer-thread time spent in `flush()` (log `fdatasync`, the memtable, waiting for
    /// the apply thread when it is two layers or a checkpoint behind), in microseconds.
    pub flush_micros: u64,
    /// Writes of the memtable layers applied so far, and the writes the apply thread made to
    /// sled for them (fewer: a key changed several times within a layer is written once).
    pub layered_writes: u64,
    pub sled_writes: u64,
    /// Apply-thread time spent writing into sled, in microseconds.
    pub sled_micros: u64,
}

/// What the apply thread wrote into one sled tree since the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    pub tree: &'static str,
    /// Distinct keys written or removed (a key changed several times in one memtable
    /// layer counts once).
    pub sled_writes: u64,
    /// Apply-thread time spent on them, in microseconds.
    pub sled_micros: u64,
}

/// The sled-backed `Store`.
pub struct SledStore {
    trees: Trees,
    pipeline: GroupCommit<Job>,
    /// The format found at open (`FORMAT_VERSION` unless opened for an upgrade).
    format: u32,
}

/// The store's trees, indexed by `Tree::index()`, and the layers of durable writes not yet
/// in them (`sled_memtable.rs`), which every read (`Kv`) consults first.
#[derive(Clone)]
pub(super) struct Trees {
    trees: Vec<sled::Tree>,
    memtable: Arc<Memtable>,
}

impl Trees {
    pub(super) fn get(&self, tree: Tree) -> &sled::Tree {
        &self.trees[tree.index()]
    }

    pub(super) fn all(&self) -> Vec<sled::Tree> {
        self.trees.clone()
    }

    pub(super) fn memtable(&self) -> &Arc<Memtable> {
        &self.memtable
    }
}

pub(super) fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

pub(super) fn sled_err(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { at, .. } => {
            StoreError::Corrupt(format!("sled detected corruption at {at:?}"))
        }
        sled::Error::Io(io) => StoreError::Io(io.to_string()),
        other => StoreError::Io(other.to_string()),
    }
}

impl SledStore {
    /// Opens (or creates) the store in directory `path`. Fails with `Corrupt` if the
    /// directory holds a store of another format, with `Io` if another process has it open.
    pub fn open(path: impl AsRef<Path>, options: SledOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(options.flush_every_ms);
        Self::from_config(
            config,
            &options,
            Some(path),
            &format!("the data directory {}", path.display()),
        )
    }

    /// A throw-away store (deleted on drop; in `/dev/shm` on Linux), for tests. Still
    /// goes through the group-commit pipeline, but without the extra `fdatasync`.
    pub fn temporary() -> Result<Self, StoreError> {
        Self::temporary_with(SledOptions::default())
    }

    /// A throw-away store with the given tuning (`fsync` is always off).
    pub fn temporary_with(options: SledOptions) -> Result<Self, StoreError> {
        let options = SledOptions {
            fsync: false,
            ..options
        };
        let config = sled::Config::new()
            .temporary(true)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(options.flush_every_ms);
        Self::from_config(config, &options, None, "the temporary store")
    }

    fn from_config(
        config: sled::Config,
        options: &SledOptions,
        dir: Option<&Path>,
        what: &str,
    ) -> Result<Self, StoreError> {
        // Read before sled touches the directory: whether a store was created here before.
        let marker = dir.map(Marker::read).transpose()?.flatten();
        let db = open_db(&config)?;
        let trees = Trees {
            trees: Tree::BY_INDEX
                .iter()
                .map(|t| db.open_tree(t.name()).map_err(sled_err))
                .collect::<Result<_, _>>()?,
            memtable: Memtable::new(),
        };
        let (id, format) =
            check_or_write_format(&db, &trees, marker.as_deref(), what, options.upgrading)?;
        if let (Some(dir), None) = (dir, &marker) {
            Marker::write(dir, &id)?;
        }
        let writer = Writer::open(
            db,
            trees.clone(),
            WriterOptions {
                dir,
                fsync: options.fsync,
                layer_bytes: options.layer_bytes,
                checkpoint_bytes: options.checkpoint_bytes,
            },
        )?;
        let pipeline = GroupCommit::start("sopflow-store-writer", writer, options.max_batch)?;
        Ok(Self {
            trees,
            pipeline,
            format,
        })
    }

    /// The store format found when it was opened.
    pub fn format(&self) -> u32 {
        self.format
    }

    /// Per tree, what the apply thread wrote into sled since the store was opened: the
    /// map of where sled's per-key cost goes (`benches/timers.rs`, `benches/engine.rs`).
    pub fn tree_stats(&self) -> Vec<TreeStats> {
        let m = &self.trees.memtable().counters;
        super::layout::Tree::BY_INDEX
            .iter()
            .map(|t| TreeStats {
                tree: t.name(),
                sled_writes: m.tree_writes[t.index()].load(Ordering::Relaxed),
                sled_micros: m.tree_micros[t.index()].load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Group-commit counters since the store was opened.
    pub fn stats(&self) -> SledStats {
        let c = self.pipeline.counters();
        let m = &self.trees.memtable().counters;
        SledStats {
            commits: c.jobs.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            apply_micros: c.apply_micros.load(Ordering::Relaxed),
            flush_micros: c.flush_micros.load(Ordering::Relaxed),
            layered_writes: m.writes.load(Ordering::Relaxed),
            sled_writes: m.applied.load(Ordering::Relaxed),
            sled_micros: m.apply_micros.load(Ordering::Relaxed),
        }
    }
}

/// How long opening waits for sled's file lock. sled's IO threads answer a flush before
/// they drop their handle on the data file, so a store that was just closed — in this
/// process, or by a server that is still finishing its shutdown — holds the lock a while
/// longer: about 4.5 s on a 21 GB store (issue 6's audit benchmark), which the earlier
/// 500 ms wait turned into a failed restart.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the sled database, waiting up to `LOCK_WAIT` if the directory is still locked; a
/// store still held by another process after that fails with `Io`.
fn open_db(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(sled_err(e)),
        }
    }
}

/// The file beside sled's own naming the store created in a data directory. sled 0.34
/// opens a directory whose `db` file is damaged beyond recovery (or missing) as a *new,
/// empty* store and overwrites what was there; without a record outside sled, sopflow
/// would then serve an empty store as if nothing had happened. The marker holds the id
/// also kept in the store's `meta` tree, so a store that vanished, or was swapped for
/// another, is refused at open.
struct Marker;

const MARKER_FILE: &str = "sopflow-store";

impl Marker {
    /// The store id recorded in `dir`, if a store was created there.
    fn read(dir: &Path) -> Result<Option<String>, StoreError> {
        let path = dir.join(MARKER_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text
                .lines()
                .find_map(|l| l.strip_prefix("store "))
                .map(|id| id.trim().to_string())
                .or(Some(String::new()))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &path, e)),
        }
    }

    /// Records the store id, durably (the file, then the directory entry).
    fn write(dir: &Path, id: &str) -> Result<(), StoreError> {
        let path = dir.join(MARKER_FILE);
        let text = format!(
            "This directory holds a sopflow store. Do not delete this file: it lets sopflow\n\
             tell a damaged store from a new one.\nstore {id}\n"
        );
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&path)?;
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.sync_all()?;
            File::open(dir)?.sync_all()
        };
        write().map_err(|e| io("cannot write", &path, e))
    }
}

/// Checks (or, for a new store, writes) the format marker and the store id; returns the
/// id. `expected` is the id the directory's marker file names, if it has one.
fn check_or_write_format(
    db: &sled::Db,
    trees: &Trees,
    expected: Option<&str>,
    what: &str,
    upgrading: bool,
) -> Result<(String, u32), StoreError> {
    let meta = trees.get(Tree::Meta);
    if let Some(stored) = meta.get(layout::FORMAT_KEY).map_err(sled_err)? {
        let format = layout::check_format(&stored, what, upgrading)?;
        let id = match meta.get(layout::STORE_ID_KEY).map_err(sled_err)? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                // A store from before the id was kept: give it one now.
                let id = uuid::Uuid::now_v7().to_string();
                meta.insert(layout::STORE_ID_KEY, id.as_bytes())
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
                id
            }
        };
        if let Some(want) = expected {
            if want != id {
                return Err(StoreError::Corrupt(format!(
                    "{what} holds store {id}, but its `{MARKER_FILE}` file names store                      {want}: the store files were replaced; put the right ones back or                      restore the data directory from a backup"
                )));
            }
        }
        return Ok((id, format));
    }
    if expected.is_some() {
        return Err(StoreError::Corrupt(format!(
            "{what} held a sopflow store (see its `{MARKER_FILE}` file), but sled found no              data in it: the store files are damaged or missing. sopflow will not start an              empty store in its place; restore the data directory from a backup"
        )));
    }
    for tree in Tree::ALL {
        if !trees.get(tree).is_empty() {
            return Err(StoreError::Corrupt(format!(
                "{what} holds data in `{}` but no format marker; it was not written by \
                 sopflow or is damaged: restore the data directory from a backup",
                tree.name()
            )));
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    meta.insert(layout::FORMAT_KEY, &layout::format_value())
        .map_err(sled_err)?;
    meta.insert(layout::STORE_ID_KEY, id.as_bytes())
        .map_err(sled_err)?;
    db.flush().map_err(sled_err)?;
    Ok((id, layout::FORMAT_VERSION))
}

impl Trees {
    /// Visits `tree` from `start` in direction `dir`, merging the memtable's layers with
    /// sled one entry at a time (see `sled_memtable.rs` for why a dropped layer makes the
    /// sled iterator move again from the last key visited).
    fn merged(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        dir: Dir,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let sled_tree = self.get(tree);
        let open = |bound: Bound<&[u8]>| match dir {
            Dir::Forward => sled_tree.range::<&[u8], _>((bound, Bound::Unbounded)),
            Dir::Back => sled_tree.range::<&[u8], _>((Bound::Unbounded, bound)),
        };
        let advance = |iter: &mut sled::Iter| {
            match dir {
                Dir::Forward => iter.next(),
                Dir::Back => iter.next_back(),
            }
            .transpose()
            .map_err(sled_err)
        };
        let first = |a: &[u8], b: &[u8]| match dir {
            Dir::Forward => a < b,
            Dir::Back => a > b,
        };
        let mut generation = self.memtable.generation();
        let mut entries = open(start);
        let mut head = advance(&mut entries)?;
        let mut last: Option<Vec<u8>> = None;
        loop {
            let bound = last.as_deref().map_or(start, Bound::Excluded);
            let (layered, seen) = self.memtable.next(tree, bound, dir);
            if seen != generation {
                generation = seen;
                entries = open(bound);
                head = advance(&mut entries)?;
                continue;
            }
            let take_layered = match (&layered, &head) {
                (None, None) => return Ok(()),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((lk, _)), Some((sk, _))) => {
                    if lk.as_slice() == sk.as_ref() {
                        head = advance(&mut entries)?;
                        true
                    } else {
                        first(lk, sk)
                    }
                }
            };
            let go_on = if take_layered {
                let Some((key, value)) = layered else {
                    return Ok(());
                };
                let go_on = match &value {
                    Some(v) => visit(&key, v)?,
                    None => true,
                };
                last = Some(key);
                go_on
            } else {
                let Some((key, value)) = head.take() else {
                    return Ok(());
                };
                head = advance(&mut entries)?;
                let go_on = visit(&key, &value)?;
                last = Some(key.to_vec());
                go_on
            };
            if !go_on {
                return Ok(());
            }
        }
    }
}

impl Kv for Trees {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(layered) = self.memtable.get(tree, key) {
            return Ok(layered);
        }
        Ok(self
            .get(tree)
            .get(key)
            .map_err(sled_err)?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        tree: Tree,
        from: Bound<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        self.merged(tree, from, Dir::Forward, visit)
    }

    fn scan_back(
        &self,
        tree: Tree,
        before: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        self.merged(tree, Bound::Excluded(before), Dir::Back, visit)
    }
}

/// For `sopflow store copy`: rows read and written as they are, past the pipeline (the
/// copy is the only writer of a store it fills).
impl super::copy::Raw for SledStore {
    fn page(
        &self,
        tree: Tree,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<super::copy::Row>, StoreError> {
        super::copy::page_of(&self.trees, tree, after.as_deref(), limit)
    }

    fn put(&self, tree: Tree, rows: Vec<super::copy::Row>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in rows {
            batch.insert(k, v);
        }
        self.trees.get(tree).apply_batch(batch).map_err(sled_err)
    }

    fn clear(&self, tree: Tree) -> Result<(), StoreError> {
        self.trees.get(tree).clear().map_err(sled_err)
    }

    fn clear_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<u64, StoreError> {
        let t = self.trees.get(tree);
        let mut batch = sled::Batch::default();
        let mut n = 0u64;
        for key in t.scan_prefix(prefix).keys() {
            batch.remove(key.map_err(sled_err)?);
            n += 1;
            // Batches of bounded size: the family can hold millions of entries.
            if n.is_multiple_of(10_000) {
                t.apply_batch(std::mem::take(&mut batch))
                    .map_err(sled_err)?;
            }
        }
        t.apply_batch(batch).map_err(sled_err)?;
        Ok(n)
    }

    fn format(&self) -> u32 {
        self.format
    }

    fn sync(&self) -> Result<(), StoreError> {
        // sled's flush covers every tree of the database.
        self.trees
            .get(Tree::Meta)
            .flush()
            .map(|_| ())
            .map_err(sled_err)
    }
}

impl Store for SledStore {
    /// Once the commit is queued, dropping the future does not withdraw it: it is applied
    /// and flushed like the others, only nobody is told.
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let plan = layout::plan_commit(commit)?;
        self.pipeline.submit(Job::Commit(plan)).await
    }

    fn instance(&self, id: InstanceId) -> Result<Option<StoredInstance>, StoreError> {
        layout::instance(&self.trees, id)
    }

    fn history(
        &self,
        id: InstanceId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        layout::history(&self.trees, id, from_seq, limit)
    }

    fn audit(
        &self,
        query: &AuditQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError> {
        super::audit::query(&self.trees, query, cursor, limit)
    }

    fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<Verification, StoreError> {
        super::chain::verify_all(&self.trees, progress)
    }

    fn verify_instance(&self, id: InstanceId) -> Result<Option<Verification>, StoreError> {
        super::chain::verify_one(&self.trees, id)
    }

    fn task(&self, id: TaskId) -> Result<Option<TaskRow>, StoreError> {
        layout::task(&self.trees, id)
    }

    fn task_instance(&self, id: TaskId) -> Result<Option<InstanceId>, StoreError> {
        layout::task_instance(&self.trees, id)
    }

    fn tasks_for(&self, roles: &[String], user: &str) -> Result<Vec<TaskRow>, StoreError> {
        super::worklist::all(&self.trees, roles, user)
    }

    fn worklist(
        &self,
        query: &super::WorklistQuery,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<TaskRow>, StoreError> {
        super::worklist::page(&self.trees, query, cursor, limit)
    }

    fn idempotency(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<super::IdempotencyRecord>, StoreError> {
        super::idempotency::read(&self.trees, caller, key)
    }

    fn open_task_count(&self, role: &str) -> Result<usize, StoreError> {
        super::worklist::open_count(&self.trees, role)
    }

    fn instances(
        &self,
        procedure: Option<&str>,
        status: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<InstanceId>, StoreError> {
        layout::instances(&self.trees, procedure, status, cursor, limit)
    }

    fn due_timers(&self, now_ms: i64, limit: usize) -> Result<Vec<TimerRow>, StoreError> {
        layout::due_timers(&self.trees, now_ms, limit)
    }

    fn next_timer(&self) -> Result<Option<TimerRow>, StoreError> {
        layout::next_timer(&self.trees)
    }

    async fn put_procedure(&self, record: ProcedureRecord) -> Result<(), StoreError> {
        let key = layout::procedure_key(&record.id, record.version)?;
        let encoded = layout::encode_procedure(&record)?;
        self.pipeline
            .submit(Job::Procedure {
                key,
                record,
                encoded,
            })
            .await
    }

    fn procedure(&self, id: &str, version: u32) -> Result<Option<ProcedureRecord>, StoreError> {
        layout::procedure(&self.trees, id, version)
    }

    fn procedures(&self) -> Result<Vec<ProcedureRecord>, StoreError> {
        layout::procedures(&self.trees)
    }

    fn notifications_for(
        &self,
        roles: &[String],
        limit: usize,
    ) -> Result<Vec<super::NotificationRow>, StoreError> {
        layout::notifications_for(&self.trees, roles, limit)
    }

    fn schedule(&self, procedure: &str) -> Result<Option<super::ScheduleRow>, StoreError> {
        layout::schedule(&self.trees, procedure)
    }

    fn deliveries(
        &self,
        state: super::DeliveryState,
        destination: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<super::Page<super::Delivery>, StoreError> {
        super::outbox::page(&self.trees, state, destination, cursor, limit)
    }

    fn stored_hooks(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        super::outbox::hooks(&self.trees)
    }

    fn delivery_destinations(
        &self,
        state: super::DeliveryState,
    ) -> Result<Vec<String>, StoreError> {
        super::outbox::destinations(&self.trees, state)
    }

    fn delivery(
        &self,
        state: super::DeliveryState,
        instance: super::InstanceId,
        seq: u64,
        destination: &str,
    ) -> Result<Option<super::Delivery>, StoreError> {
        super::outbox::get(&self.trees, state, instance, seq, destination)
    }

    fn sent_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, StoreError> {
        super::outbox::sent_before(&self.trees, before_ms, limit)
    }

    fn dump(&self) -> Result<Dump, StoreError> {
        layout::dump(&self.trees)
    }
}
