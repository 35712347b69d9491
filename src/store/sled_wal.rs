//! The write-ahead log in front of sled: the durable record of every acknowledged batch of
//! writes that sled itself may not have made durable yet. The writer thread appends a
//! batch's resolved writes (every key put or removed, with its value) as one record and
//! `fdatasync`s the file before it answers; sled is flushed behind it by the memtable's
//! apply thread (`sled_memtable.rs`). There are two files (`Logs`): when the current one has
//! grown past the checkpoint size the writer goes on in the other, which it starts over
//! once sled durably holds that file's records. Opening a store replays the records left by
//! a crash onto whatever sled recovered, older file first, in order: each write is absolute
//! (this key now holds this value, or nothing), so replaying a record sled already holds
//! changes nothing, and replaying both files gives exactly the acknowledged state.
//!
//! Why a log of our own rather than sled's flush per batch: a sled 0.34 flush (and every
//! sled transaction) seals and writes its IO buffer through its thread pool with a waiting
//! `sync_file_range`, which cost the 2-core machine about a third of its CPU at 64 callers
//! (issue 18's profile); one `write` + `fdatasync` of a few KB is what durability needs.
//!
//! A file is recycled, not truncated: starting it over begins a new *cycle* at offset 0 and
//! the next records overwrite the last cycle's. Overwriting blocks a file already has lets
//! `fdatasync` skip the journal commit an appending write needs for the file's new size
//! (measured here: 2,600–3,100 appending syncs/s against 4,700–6,500 overwriting). Every
//! record carries its cycle's number (the file's epoch in the high 32 bits, which orders the
//! two files; random low bits, so no stale record can share it), and a file's log is the run
//! of valid records from offset 0 that share the first one's cycle; starting a file over
//! writes an empty record of the new cycle at offset 0, so what follows it is stale.
//!
//! Record: `len u32 ++ crc32(cycle ++ payload) u32 ++ cycle u64 ++ payload`; payload:
//! `count u32`, then per write `tree u8 ++ present u8 ++ key_len u32 ++ key [++ value_len
//! u32 ++ value]`, integers big-endian. A record cut short, failing its checksum or of
//! another cycle ends the log: it was being written when the process stopped (so it was
//! never acknowledged: every acknowledgement follows an `fdatasync` covering all bytes
//! before it), or it is a previous cycle's, already in sled.
//!
//! This module must not interpret keys or values, and must never panic on what it reads.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::layout::{Op, Tree};
use super::sled_store::io;
use super::StoreError;

/// The log's file names inside the data directory (beside sled's `db`, `conf`, `blobs/`):
/// the writer alternates between the two (`Logs`).
pub(crate) const FILE_NAME: &str = "sopflow-wal";
pub(crate) const SECOND_FILE_NAME: &str = "sopflow-wal-2";

/// The most bytes one record may claim; a longer length is damage, not a record.
const MAX_RECORD: u32 = 1 << 30;

const HEADER: usize = 16;

/// The open log. `None` inside for a temporary store, which needs no durability.
pub(crate) struct Wal {
    file: Option<(File, PathBuf)>,
    /// `fdatasync` after each write (`SledOptions::fsync`); without it the log survives a
    /// process crash (the page cache keeps it) but not a power loss.
    sync_data: bool,
    /// The current cycle's number.
    cycle: u64,
    /// Encoded records not yet written.
    buf: Vec<u8>,
    /// Where the next record goes: the bytes of this cycle so far.
    len: u64,
}

/// A fresh cycle number: the epoch in the high half (which of the two files is newer), a
/// random low half, so it matches no stale record left in the file.
fn new_cycle(epoch: u32) -> u64 {
    (u64::from(epoch) << 32) | (uuid::Uuid::new_v4().as_u64_pair().0 & 0xffff_ffff)
}

impl Wal {
    /// A log that keeps nothing (temporary stores).
    pub(crate) fn none() -> Self {
        Self {
            file: None,
            sync_data: false,
            cycle: 0,
            buf: Vec::new(),
            len: 0,
        }
    }

    /// Opens (or creates) the log file `name` in `dir` and returns it with the batches it
    /// holds, in order, and their cycle (`None`: no valid record). The caller replays them
    /// and checkpoints (`reset`) before appending.
    fn open(dir: &Path, name: &str, sync_data: bool) -> Result<(Self, Log), StoreError> {
        let path = dir.join(name);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("cannot open", &path, e))?;
        if !existed {
            // The new file's directory entry must be durable before a record in it counts.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot sync", dir, e))?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io("cannot read", &path, e))?;
        let log = decode_all(&bytes)?;
        // What follows the valid records (a torn one, a stale cycle) is overwritten next.
        file.seek(SeekFrom::Start(log.end as u64))
            .map_err(|e| io("cannot seek in", &path, e))?;
        Ok((
            Self {
                file: Some((file, path)),
                sync_data,
                cycle: log.cycle.unwrap_or_else(|| new_cycle(0)),
                buf: Vec::new(),
                len: log.end as u64,
            },
            log,
        ))
    }

    /// Adds one batch's writes as a record (written by the next `sync`).
    pub(crate) fn append(&mut self, ops: &[Op]) {
        if self.file.is_none() || ops.is_empty() {
            return;
        }
        let start = self.begin_record();
        self.buf
            .extend_from_slice(&(ops.len() as u32).to_be_bytes());
        for op in ops {
            self.buf.push(op.tree.index() as u8);
            self.buf.push(u8::from(op.value.is_some()));
            self.buf
                .extend_from_slice(&(op.key.len() as u32).to_be_bytes());
            self.buf.extend_from_slice(&op.key);
            if let Some(v) = &op.value {
                self.buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
                self.buf.extend_from_slice(v);
            }
        }
        self.end_record(start);
    }

    fn begin_record(&mut self) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 8]);
        self.buf.extend_from_slice(&self.cycle.to_be_bytes());
        start
    }

    fn end_record(&mut self, start: usize) {
        let payload_len = (self.buf.len() - start - HEADER) as u32;
        let crc = crc32fast::hash(&self.buf[start + 8..]);
        self.buf[start..start + 4].copy_from_slice(&payload_len.to_be_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    }

    /// Writes the appended records and makes them durable.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        let Some((file, path)) = &mut self.file else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        file.write_all(&self.buf)
            .map_err(|e| io("cannot write", path, e))?;
        if self.sync_data {
            file.sync_data().map_err(|e| io("fdatasync of", path, e))?;
        }
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Whether the log is kept in a file (not for a temporary store).
    pub(crate) fn is_kept(&self) -> bool {
        self.file.is_some()
    }

    /// Bytes of records since the last checkpoint.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Starts a new cycle at offset 0; called once everything the log holds is durable in
    /// sled. Its empty first record makes the rest of the file stale; should it not reach
    /// the disk, the old cycle is replayed once more, which changes nothing.
    pub(crate) fn reset(&mut self, epoch: u32) -> Result<(), StoreError> {
        self.buf.clear();
        self.len = 0;
        self.cycle = new_cycle(epoch);
        let Some((file, path)) = &mut self.file else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io("cannot seek in", path, e))?;
        let start = self.begin_record();
        self.end_record(start);
        self.sync()?;
        // The marker is not a batch: only records written after it count as logged bytes.
        self.len = 0;
        Ok(())
    }
}

/// The two log files. The writer appends to the current one; when it has grown past the
/// checkpoint size, the writer `switch`es to the other, whose records sled must by then
/// hold durably (the apply thread flushed sled after writing them), so a checkpoint never
/// makes a commit wait for sled. The file of the higher epoch is the newer; replay reads
/// the older first. Each open replays both and starts both over.
pub(crate) struct Logs {
    files: [Wal; 2],
    current: usize,
    epoch: u32,
}

impl Logs {
    /// Logs that keep nothing (temporary stores).
    pub(crate) fn none() -> Self {
        Self {
            files: [Wal::none(), Wal::none()],
            current: 0,
            epoch: 0,
        }
    }

    /// Opens both files in `dir` and returns them with every batch they hold, oldest first.
    /// The caller replays the batches, makes sled durable and calls `reset_all` before
    /// appending. A store from before the second file has only the first.
    pub(crate) fn open(dir: &Path, sync_data: bool) -> Result<(Self, Vec<Vec<Op>>), StoreError> {
        let (first, first_log) = Wal::open(dir, FILE_NAME, sync_data)?;
        let (second, second_log) = Wal::open(dir, SECOND_FILE_NAME, sync_data)?;
        let epoch_of = |log: &Log| log.cycle.map(|c| c >> 32);
        let (older, newer) = if epoch_of(&second_log) > epoch_of(&first_log) {
            (first_log, second_log)
        } else {
            (second_log, first_log)
        };
        let mut batches = older.batches;
        batches.extend(newer.batches);
        // Epochs go on from the last run's, so a stale record of an earlier run never shares
        // a new cycle's epoch (a log from before epochs had random high bits: start over).
        let last = [first.cycle, second.cycle]
            .into_iter()
            .map(|c| (c >> 32) as u32)
            .max()
            .unwrap_or(0);
        let epoch = if last < u32::MAX / 2 { last } else { 0 };
        let logs = Self {
            files: [first, second],
            current: 0,
            epoch,
        };
        Ok((logs, batches))
    }

    pub(crate) fn is_kept(&self) -> bool {
        self.files[0].is_kept()
    }

    /// Bytes of records in the current file.
    pub(crate) fn len(&self) -> u64 {
        self.files[self.current].len()
    }

    pub(crate) fn append(&mut self, ops: &[Op]) {
        self.files[self.current].append(ops);
    }

    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        self.files[self.current].sync()
    }

    /// Starts the other file over (a new, higher epoch) and appends there from now on. Only
    /// once sled durably holds every record of that file.
    pub(crate) fn switch(&mut self) -> Result<(), StoreError> {
        let other = 1 - self.current;
        self.epoch += 1;
        self.files[other].reset(self.epoch)?;
        self.current = other;
        Ok(())
    }

    /// Starts both files over; only once sled durably holds every record of both.
    pub(crate) fn reset_all(&mut self) -> Result<(), StoreError> {
        let other = 1 - self.current;
        self.epoch += 1;
        self.files[other].reset(self.epoch)?;
        self.epoch += 1;
        self.files[self.current].reset(self.epoch)
    }
}

/// What a log's bytes hold: the batches of the current cycle, in order, the cycle, and where
/// its valid records end.
struct Log {
    batches: Vec<Vec<Op>>,
    cycle: Option<u64>,
    end: usize,
}

fn decode_all(bytes: &[u8]) -> Result<Log, StoreError> {
    let mut log = Log {
        batches: Vec::new(),
        cycle: None,
        end: 0,
    };
    while let Some(header) = bytes.get(log.end..log.end + HEADER) {
        let at = log.end;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let mut cycle = [0u8; 8];
        cycle.copy_from_slice(&header[8..16]);
        let cycle = u64::from_be_bytes(cycle);
        if len > MAX_RECORD || log.cycle.is_some_and(|c| c != cycle) {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len as usize) else {
            break;
        };
        if crc32fast::hash(&bytes[at + 8..at + HEADER + len as usize]) != crc {
            break;
        }
        if !payload.is_empty() {
            log.batches.push(decode(payload)?);
        }
        log.cycle = Some(cycle);
        log.end = at + HEADER + len as usize;
    }
    Ok(log)
}

/// One record's writes. Its checksum matched, so a payload that does not parse is damage
/// (or a log from another program), not a torn write.
fn decode(payload: &[u8]) -> Result<Vec<Op>, StoreError> {
    let bad = || {
        StoreError::Corrupt(format!("the write-ahead log `{FILE_NAME}` holds a record that does not parse; restore the data directory from a backup"))
    };
    let mut r = Reader { bytes: payload };
    let count = r.u32().ok_or_else(bad)?;
    let mut ops = Vec::with_capacity((count as usize).min(payload.len() / 6));
    for _ in 0..count {
        let tree = r.take(1).ok_or_else(bad)?[0];
        let tree = *Tree::BY_INDEX.get(tree as usize).ok_or_else(bad)?;
        let present = r.take(1).ok_or_else(bad)?[0];
        let key_len = r.u32().ok_or_else(bad)?;
        let key = r.take(key_len as usize).ok_or_else(bad)?.to_vec();
        let value = match present {
            0 => None,
            1 => {
                let n = r.u32().ok_or_else(bad)?;
                Some(r.take(n as usize).ok_or_else(bad)?.to_vec())
            }
            _ => return Err(bad()),
        };
        ops.push(Op { tree, key, value });
    }
    if !r.bytes.is_empty() {
        return Err(bad());
    }
    Ok(ops)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::layout::test_op as op;

    fn open_first(dir: &Path) -> (Wal, Vec<Vec<Op>>) {
        let (wal, log) = Wal::open(dir, FILE_NAME, true).unwrap();
        (wal, log.batches)
    }

    /// Records written before and after a switch come back in the order they were written,
    /// whichever file holds the older ones; a switch back starts the older file over.
    #[test]
    fn two_files_replay_oldest_first_across_switches() {
        let dir = tempfile::tempdir().unwrap();
        let batch = |i: u8| vec![op(Tree::Timers, &[i], Some(&[i]))];
        let written = {
            let (mut logs, old) = Logs::open(dir.path(), true).unwrap();
            assert!(old.is_empty());
            logs.reset_all().unwrap();
            logs.append(&batch(1));
            logs.sync().unwrap();
            logs.switch().unwrap();
            logs.append(&batch(2));
            logs.sync().unwrap();
            logs.switch().unwrap();
            // The first file again: batch 1 is gone (sled holds it by now), 2 then 3 stay.
            logs.append(&batch(3));
            logs.sync().unwrap();
            vec![batch(2), batch(3)]
        };
        let (mut logs, batches) = Logs::open(dir.path(), true).unwrap();
        assert_eq!(batches, written);
        logs.reset_all().unwrap();
        drop(logs);
        let (_, batches) = Logs::open(dir.path(), true).unwrap();
        assert!(batches.is_empty());
    }

    #[test]
    fn records_round_trip_across_reopen_and_a_reset_leaves_the_old_cycle_stale() {
        let dir = tempfile::tempdir().unwrap();
        let one = vec![
            op(Tree::Instances, b"i1", Some(b"snapshot")),
            op(Tree::TasksByRole, b"r\0x", None),
        ];
        let two = vec![op(Tree::Events, b"e", Some(b""))];
        {
            let (mut wal, old) = open_first(dir.path());
            assert!(old.is_empty());
            wal.append(&one);
            wal.append(&two);
            wal.sync().unwrap();
            assert!(wal.len() > 0);
        }
        let (mut wal, batches) = open_first(dir.path());
        assert_eq!(batches, vec![one.clone(), two.clone()]);
        wal.reset(1).unwrap();
        assert_eq!(wal.len(), 0);
        drop(wal);
        let size = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        let (mut wal, batches) = open_first(dir.path());
        assert!(
            batches.is_empty(),
            "the old cycle's bytes are still there, but stale"
        );
        // A new cycle overwrites the old one's bytes in place; the rest stays stale.
        wal.append(&two);
        wal.sync().unwrap();
        drop(wal);
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(),
            size,
            "the file is reused, not grown"
        );
        let (_, batches) = open_first(dir.path());
        assert_eq!(batches, vec![two]);
    }

    #[test]
    fn records_appended_after_a_torn_tail_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), [0, 0, 0, 200, 1, 2]).unwrap();
        let ops = vec![op(Tree::Meta, b"k", Some(b"v"))];
        {
            let (mut wal, old) = open_first(dir.path());
            assert!(old.is_empty());
            assert_eq!(wal.len(), 0);
            wal.append(&ops);
            wal.sync().unwrap();
        }
        let (_, batches) = open_first(dir.path());
        assert_eq!(batches, vec![ops]);
    }

    #[test]
    fn a_torn_tail_ends_the_log_and_garbage_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let ops = vec![op(Tree::Timers, b"t", Some(b"payload"))];
        {
            let (mut wal, _) = open_first(dir.path());
            wal.append(&ops);
            wal.append(&ops);
            wal.sync().unwrap();
        }
        let path = dir.path().join(FILE_NAME);
        let full = std::fs::read(&path).unwrap();
        for cut in 0..full.len() {
            let log = decode_all(&full[..cut]).unwrap();
            assert_eq!(log.batches.len(), usize::from(cut >= full.len() / 2));
            assert!(log.end <= cut);
        }
        // A flipped byte in the second record: the first stays, the second is dropped.
        let mut flipped = full.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert_eq!(decode_all(&flipped).unwrap().batches.len(), 1);
        // The second record rewritten as another cycle's (checksum and all): dropped too.
        let mut other = full.clone();
        let second = full.len() / 2;
        other[second + 8] ^= 0x01;
        let crc = crc32fast::hash(&other[second + 8..]);
        other[second + 4..second + 8].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(decode_all(&other).unwrap().batches.len(), 1);
        // A record whose checksum matches but whose payload lies is corrupt, not a panic.
        let mut checked = 7u64.to_be_bytes().to_vec();
        checked.extend_from_slice(&[0, 0, 0, 9, 99]);
        let mut forged = ((checked.len() - 8) as u32).to_be_bytes().to_vec();
        forged.extend_from_slice(&crc32fast::hash(&checked).to_be_bytes());
        forged.extend_from_slice(&checked);
        assert!(matches!(decode_all(&forged), Err(StoreError::Corrupt(_))));
    }
}
