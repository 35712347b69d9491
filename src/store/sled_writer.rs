//! The sled store's writer thread (the `Backend` of `group_commit.rs`): the only code that
//! decides what commits write. For a batch of jobs it resolves each plan against the stored
//! values plus the writes of the jobs before it (a job whose check fails writes nothing),
//! logs the batch's writes as one record of the write-ahead log (`sled_wal.rs`), and at the
//! flush makes that record durable, only then puts the writes into the memtable's active
//! layer (`sled_memtable.rs`, where readers see them and whose apply thread later writes
//! them into sled), and only then lets the pipeline answer. At a checkpoint — when the
//! current log file has grown past `CHECKPOINT_BYTES` — it goes on in the other log file
//! (`Logs`) and asks the apply thread to flush (and `fdatasync`) sled once it holds what the
//! left file logged; it waits only if the previous such flush has not happened by the next
//! switch. At a clean close it waits for sled to hold and flush everything and starts both
//! files over.
//!
//! Readers never see a batch half applied: the memtable takes a batch in under its write
//! lock. They never see a write that is not yet durable either: the log is synced first.
//!
//! This module must not acknowledge anything (the pipeline does, after `flush` returns
//! `Ok`), and after a failed flush it must not checkpoint: sled might lack part of a batch
//! whose record is in the log, and only the log's replay at the next open completes it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use super::group_commit::{Applied, Backend};
use super::layout::{self, Kv, Op, Plan, ProcedureOutcome, Tree};
use super::sled_memtable::{Flusher, MAX_FROZEN};
use super::sled_store::{io, sled_err, Trees};
use super::sled_wal::Logs;
use super::{ProcedureRecord, StoreError};

/// Log bytes after which the writer switches log files (a checkpoint). Bounds the replay
/// after a crash (two files: about 20,000 commits of the shipped procedures) and the logs'
/// size on disk.
pub(super) const CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;

pub(super) enum Job {
    Commit(Plan),
    Procedure {
        key: Vec<u8>,
        record: ProcedureRecord,
        encoded: Vec<u8>,
    },
}

pub(super) struct Writer {
    trees: Trees,
    /// The thread writing frozen layers into sled (`sled_memtable.rs`).
    applier: Option<JoinHandle<()>>,
    logs: Logs,
    /// The last layer holding writes logged in the file the writer left at its last switch:
    /// that file may be started over only once sled durably holds this layer.
    switched_at: Option<u64>,
    /// Writes of the batch applied but not yet flushed.
    pending: Vec<Op>,
    /// Set when a flush failed: the store is poisoned and must not checkpoint.
    failed: bool,
    /// `SledOptions::layer_bytes` and `SledOptions::checkpoint_bytes`.
    layer_bytes: usize,
    checkpoint_bytes: u64,
}

/// What `Writer::open` needs beyond sled's handles.
pub(super) struct WriterOptions<'a> {
    /// `None`: a temporary store, no log, no syncs.
    pub dir: Option<&'a Path>,
    pub fsync: bool,
    pub layer_bytes: usize,
    pub checkpoint_bytes: u64,
}

impl Writer {
    /// The writer for a store, with or without `fdatasync` (`SledOptions::fsync`). Replays
    /// what the logs hold from before a crash and makes it durable in sled, before any new
    /// write; then starts the apply thread.
    pub(super) fn open(
        db: sled::Db,
        trees: Trees,
        options: WriterOptions<'_>,
    ) -> Result<Self, StoreError> {
        let (mut fsync, mut logs, batches) = match options.dir {
            Some(dir) => {
                let (logs, batches) = Logs::open(dir, options.fsync)?;
                let fsync = if options.fsync {
                    Some(Fsync::open(dir)?)
                } else {
                    None
                };
                (fsync, logs, batches)
            }
            None => (None, Logs::none(), Vec::new()),
        };
        if !batches.is_empty() {
            let writes: usize = batches.iter().map(Vec::len).sum();
            for ops in &batches {
                write_to_sled(&trees, ops)?;
            }
            flush_sled(&db, fsync.as_mut())?;
            tracing::info!(
                batches = batches.len(),
                writes,
                "replayed the write-ahead log left by an unclean stop"
            );
        }
        if logs.is_kept() {
            // Both files start over: what they held is in sled and durable now.
            logs.reset_all()?;
        }
        let flusher: Flusher = Box::new(move || flush_sled(&db, fsync.as_mut()));
        let applier = Some(trees.memtable().start_applier(trees.all(), flusher)?);
        Ok(Self {
            trees,
            applier,
            logs,
            switched_at: None,
            pending: Vec::new(),
            failed: false,
            layer_bytes: options.layer_bytes,
            checkpoint_bytes: options.checkpoint_bytes,
        })
    }

    /// The checkpoint: goes on in the other log file, once sled durably holds what that file
    /// logged, and asks the apply thread to flush sled once it holds what this one logged.
    /// The writer waits only if the apply thread has not got that far since the last switch.
    fn switch_logs(&mut self) -> Result<(), StoreError> {
        let memtable = self.trees.memtable();
        if let Some(layer) = self.switched_at {
            memtable.wait_flushed(layer)?;
        }
        self.logs.switch()?;
        let layer = memtable.freeze();
        memtable.request_flush(layer);
        self.switched_at = Some(layer);
        Ok(())
    }

    /// At a clean close: waits until sled durably holds every synced batch, then starts both
    /// log files over, so the next open replays nothing.
    fn close(&mut self) -> Result<(), StoreError> {
        let memtable = self.trees.memtable();
        let layer = memtable.freeze();
        memtable.request_flush(layer);
        memtable.wait_flushed(layer)?;
        if self.logs.is_kept() {
            self.logs.reset_all()?;
        }
        Ok(())
    }

    fn resolve(&self, job: Job, overlay: &Overlay) -> Result<(Vec<Op>, Applied), StoreError> {
        let mut get = |tree: Tree, key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
            if let Some(v) = overlay.get(tree, key) {
                return Ok(v.clone());
            }
            // Through the memtable: the batches before this one may not be in sled yet.
            Kv::get(&self.trees, tree, key)
        };
        match job {
            Job::Commit(plan) => Ok((layout::resolve(plan, &mut get)?, Applied::Wrote)),
            Job::Procedure {
                key,
                record,
                encoded,
            } => {
                let stored = get(Tree::Procedures, &key)?;
                Ok(
                    match layout::procedure_outcome(&record, stored.as_deref())? {
                        ProcedureOutcome::Insert => (
                            vec![Op {
                                tree: Tree::Procedures,
                                key,
                                value: Some(encoded),
                            }],
                            Applied::Wrote,
                        ),
                        ProcedureOutcome::AlreadyThere => (Vec::new(), Applied::Unchanged),
                    },
                )
            }
        }
    }
}

/// The writes of a batch's earlier jobs to the keys later jobs check.
#[derive(Default)]
struct Overlay(BTreeMap<Tree, HashMap<Vec<u8>, Option<Vec<u8>>>>);

impl Overlay {
    fn get(&self, tree: Tree, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.0.get(&tree)?.get(key)
    }

    fn record(&mut self, ops: &[Op]) {
        for op in ops {
            if matches!(
                op.tree,
                Tree::Instances | Tree::Schedules | Tree::Idempotency | Tree::Procedures
            ) {
                self.0
                    .entry(op.tree)
                    .or_default()
                    .insert(op.key.clone(), op.value.clone());
            }
        }
    }
}

impl Backend for Writer {
    type Job = Job;

    /// Resolves the jobs in order, each against the writes of the ones before it, and logs
    /// the batch's writes as one record; nothing reaches sled before `flush`.
    fn apply(&mut self, jobs: Vec<Job>) -> Vec<Result<Applied, StoreError>> {
        let mut overlay = Overlay::default();
        let mut batch = Vec::new();
        let results = jobs
            .into_iter()
            .map(|job| {
                let (ops, applied) = self.resolve(job, &overlay)?;
                overlay.record(&ops);
                batch.extend(ops);
                Ok(applied)
            })
            .collect();
        self.logs.append(&batch);
        self.pending.extend(batch);
        results
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let done = self.flush_inner();
        self.failed |= done.is_err();
        done
    }
}

impl Writer {
    fn flush_inner(&mut self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Io("an earlier flush failed".into()));
        }
        // Checked before the sync: a batch the store cannot take must not reach the log,
        // where the next open would replay a commit its caller was told had failed.
        let memtable = self.trees.memtable();
        if let Some(reason) = memtable.failure() {
            return Err(StoreError::Io(reason));
        }
        self.logs.sync()?;
        let pending = std::mem::take(&mut self.pending);
        if memtable.insert(pending) >= self.layer_bytes {
            memtable.freeze();
            memtable.wait_frozen_at_most(MAX_FROZEN)?;
        }
        if self.logs.len() >= self.checkpoint_bytes {
            self.switch_logs()?;
        }
        Ok(())
    }
}

impl Drop for Writer {
    /// A clean close leaves an empty log, so the next open replays nothing.
    fn drop(&mut self) {
        if !self.failed && self.pending.is_empty() {
            if let Err(e) = self.close() {
                tracing::warn!(error = %e, "the store's last checkpoint failed; the next open replays the write-ahead log");
            }
        }
        self.trees.memtable().stop();
        if let Some(applier) = self.applier.take() {
            let _ = applier.join();
        }
    }
}

/// Replays a logged batch straight into sled (at open, before any reader).
fn write_to_sled(trees: &Trees, ops: &[Op]) -> Result<(), StoreError> {
    for op in ops {
        let tree = trees.get(op.tree);
        match &op.value {
            Some(v) => tree.insert(op.key.as_slice(), v.as_slice()).map(|_| ()),
            None => tree.remove(op.key.as_slice()).map(|_| ()),
        }
        .map_err(sled_err)?;
    }
    Ok(())
}

/// Makes everything written into sled durable: sled's flush, then `fdatasync` of its files.
fn flush_sled(db: &sled::Db, fsync: Option<&mut Fsync>) -> Result<(), StoreError> {
    db.flush().map_err(sled_err)?;
    if let Some(fsync) = fsync {
        fsync.sync()?;
    }
    Ok(())
}

/// What a checkpoint syncs after sled's own flush: the log file, and any blob files (sled
/// writes a page bigger than about 128 KB, e.g. a leaf holding large snapshots, to its own
/// file under `blobs/`, with no sync at all). sled 0.34 makes its writes stable with
/// `sync_file_range`, which survives a process crash but neither flushes the drive's
/// volatile write cache nor syncs file metadata, so it does not survive a power loss.
struct Fsync {
    log: File,
    log_path: PathBuf,
    blobs: PathBuf,
    synced_blobs: HashSet<OsString>,
}

impl Fsync {
    fn open(dir: &Path) -> Result<Self, StoreError> {
        let log_path = dir.join("db");
        let log = File::open(&log_path).map_err(|e| io("cannot open", &log_path, e))?;
        // The log's directory entry must be durable too, once.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("cannot sync", dir, e))?;
        Ok(Self {
            log,
            log_path,
            blobs: dir.join("blobs"),
            synced_blobs: HashSet::new(),
        })
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.log
            .sync_data()
            .map_err(|e| io("fdatasync of", &self.log_path, e))?;
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("cannot list", &self.blobs, e)),
        };
        let mut present = HashSet::new();
        let mut added = false;
        for entry in entries {
            let entry = entry.map_err(|e| io("cannot list", &self.blobs, e))?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(entry.path()).and_then(|f| f.sync_data()) {
                    Ok(()) => added = true,
                    // sled removes blobs of rewritten pages; a vanished one needs no sync.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("fdatasync of", &entry.path(), e)),
                }
            }
            present.insert(name);
        }
        if added {
            File::open(&self.blobs)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot sync", &self.blobs, e))?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::sled_store::{SledOptions, SledStore};
    use super::super::sled_wal::FILE_NAME;
    use super::super::{Commit, Store, TimerRow};
    use std::path::Path;

    fn timer(i: u8) -> TimerRow {
        TimerRow {
            due_ms: 1_000 + i64::from(i),
            instance: uuid::Uuid::from_bytes([i; 16]),
            timer: uuid::Uuid::from_bytes([i.wrapping_add(1); 16]),
            payload: vec![i; 40],
        }
    }

    /// A commit arming timer `i` and disarming timer `disarm`, if given.
    fn arm(i: u8, disarm: Option<u8>) -> Commit {
        Commit {
            arm_timers: vec![timer(i)],
            disarm_timers: disarm.map(timer).into_iter().collect(),
            ..Commit::default()
        }
    }

    /// The batches the log in `dir` would replay.
    fn logged(dir: &Path) -> Vec<Vec<super::Op>> {
        super::Logs::open(dir, false).unwrap().1
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// The files of a running store, copied between two commits, are what a `kill -9` (or
    /// a power loss after the last acknowledgement) leaves: sled not flushed since it was
    /// opened, every acknowledged batch only in the log. Opening the copy must replay them
    /// all, and then hold exactly what the running store holds.
    #[tokio::test]
    async fn a_store_stopped_without_a_checkpoint_reopens_with_every_acknowledged_commit() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let crashed = dir.path().join("crashed");
        let store = SledStore::open(&live, SledOptions::default()).unwrap();
        for i in 0..50 {
            store
                .commit(arm(i, (i % 10 == 9).then(|| i - 1)))
                .await
                .unwrap();
        }
        assert!(!logged(&live).is_empty(), "the commits are in the log");
        copy_dir(&live, &crashed);
        let want = store.dump().unwrap();
        drop(store);
        assert!(
            logged(&live).is_empty(),
            "a clean close checkpoints and starts the log over"
        );

        let reopened = SledStore::open(&crashed, SledOptions::default()).unwrap();
        assert_eq!(reopened.dump().unwrap(), want);
        assert_eq!(reopened.next_timer().unwrap(), Some(timer(0)));
        assert_eq!(reopened.due_timers(i64::MAX, 100).unwrap().len(), 45);
        drop(reopened);
        assert!(
            logged(&crashed).is_empty(),
            "the replay ends in a checkpoint"
        );
        let again = SledStore::open(&crashed, SledOptions::default()).unwrap();
        assert_eq!(again.dump().unwrap(), want);
    }

    /// With tiny log files and layers, the writer switches files every few commits while the
    /// apply thread writes layers into sled and flushes it: copies of the files taken at
    /// any moment (what a kill leaves) reopen with exactly what was acknowledged.
    #[tokio::test]
    async fn copies_taken_across_many_log_switches_reopen_with_every_acknowledged_commit() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let options = SledOptions {
            layer_bytes: 1,
            checkpoint_bytes: 600,
            ..SledOptions::default()
        };
        let store = SledStore::open(&live, options.clone()).unwrap();
        let mut copies = Vec::new();
        for i in 0..120u8 {
            store
                .commit(arm(i, (i % 3 == 2).then(|| i - 2)))
                .await
                .unwrap();
            if i % 17 == 5 {
                let copy = dir.path().join(format!("copy-{i}"));
                copy_dir(&live, &copy);
                copies.push((copy, store.dump().unwrap()));
            }
        }
        drop(store);
        for (copy, want) in copies {
            let reopened = SledStore::open(&copy, options.clone()).unwrap();
            assert_eq!(reopened.dump().unwrap(), want, "{}", copy.display());
        }
    }

    /// A batch being written when the process stopped (a torn record at the log's end) was
    /// never acknowledged: the store opens with everything before it.
    #[tokio::test]
    async fn a_torn_last_record_is_dropped_and_the_rest_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let crashed = dir.path().join("crashed");
        let store = SledStore::open(&live, SledOptions::default()).unwrap();
        for i in 0..3 {
            store
                .commit(Commit {
                    arm_timers: vec![timer(i)],
                    ..Commit::default()
                })
                .await
                .unwrap();
        }
        copy_dir(&live, &crashed);
        drop(store);
        let log = crashed.join(FILE_NAME);
        let bytes = std::fs::read(&log).unwrap();
        std::fs::write(&log, &bytes[..bytes.len() - 3]).unwrap();
        let reopened = SledStore::open(&crashed, SledOptions::default()).unwrap();
        let due = reopened.due_timers(i64::MAX, 10).unwrap();
        assert_eq!(due, vec![timer(0), timer(1)]);
    }
}
