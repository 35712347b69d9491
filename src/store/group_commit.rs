//! The group-commit pipeline behind "acknowledged means durable" (invariant 3): callers hand
//! a prepared job to one dedicated OS thread, which takes every job that has queued up,
//! applies them together (the backend decides how: sled resolves the batch and logs it as
//! one write-ahead record), then makes them durable with a single flush, and only then
//! answers them. N concurrent commits therefore share one fsync, and jobs arriving during
//! a flush form the next batch.
//!
//! Why one thread does both the applying and the flushing: each batch's checks must see
//! the writes of the batch before it, and the sled backend makes those visible to readers
//! only after they are durable (`sled_writer.rs`), so the next batch cannot be resolved
//! before the flush anyway. Callers wait on a oneshot, which costs a tokio worker nothing.
//!
//! This module must not acknowledge anything before the flush that follows its application
//! has returned `Ok`, and must never acknowledge after a failed flush: a flush error fails
//! every job of the batch and every later one (the store is poisoned; restart to recover
//! from the log).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::StoreError;

/// What the pipeline thread does with jobs. Owned by that thread.
pub(crate) trait Backend: Send + 'static {
    type Job: Send + 'static;
    /// Applies a batch of jobs (not yet durable), in order, each seeing the writes of the
    /// ones before it. Returns one result per job; an `Err` rejects that job only, and
    /// nothing of it may have been written.
    fn apply(&mut self, jobs: Vec<Self::Job>) -> Vec<Result<Applied, StoreError>>;
    /// Makes everything applied so far durable.
    fn flush(&mut self) -> Result<(), StoreError>;
}

/// Whether an applied job wrote anything that needs a flush before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    Wrote,
    /// Nothing changed (e.g. a procedure registered again); the job is still answered with
    /// its batch, after any flush a job before it in the same batch needs.
    Unchanged,
}

/// Counters for benchmarks and diagnostics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub jobs: AtomicU64,
    pub flushes: AtomicU64,
    /// Time the writer thread spent applying jobs and flushing, in microseconds: tells
    /// whether a slow pipeline is waiting on the disk or on the CPU.
    pub apply_micros: AtomicU64,
    pub flush_micros: AtomicU64,
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

pub(crate) struct GroupCommit<J> {
    tx: Option<mpsc::Sender<(J, Reply)>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// Set once a flush failed; read by callers so they fail fast without queueing.
    poisoned: Arc<Mutex<Option<String>>>,
}

impl<J: Send + 'static> GroupCommit<J> {
    /// Starts the pipeline thread. `max_batch` bounds how many jobs one flush covers, which
    /// bounds the latency a job can suffer from jobs queued ahead of it.
    pub(crate) fn start<B: Backend<Job = J>>(
        name: &str,
        backend: B,
        max_batch: usize,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<(J, Reply)>();
        let counters = Arc::new(Counters::default());
        let poisoned = Arc::new(Mutex::new(None));
        let thread = {
            let counters = Arc::clone(&counters);
            let poisoned = Arc::clone(&poisoned);
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || run(backend, rx, max_batch.max(1), &counters, &poisoned))
                .map_err(|e| StoreError::Io(format!("cannot start the store writer thread: {e}")))?
        };
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            counters,
            poisoned,
        })
    }

    /// Queues `job` and resolves once it is applied and durable, or rejected.
    pub(crate) async fn submit(&self, job: J) -> Result<(), StoreError> {
        if let Some(reason) = self.poison_reason() {
            return Err(StoreError::Io(reason));
        }
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Io("the store writer thread has stopped".to_string());
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send((job, reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    fn poison_reason(&self) -> Option<String> {
        match self.poisoned.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl<J> Drop for GroupCommit<J> {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish the jobs already queued, flush one
        // last time and exit; joining makes the final flush happen before the store is gone.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn add_micros(counter: &AtomicU64, since: Instant) {
    let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
    counter.fetch_add(micros, Ordering::Relaxed);
}

fn run<B: Backend>(
    mut backend: B,
    rx: mpsc::Receiver<(B::Job, Reply)>,
    max_batch: usize,
    counters: &Counters,
    poisoned: &Mutex<Option<String>>,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    let mut replies: Vec<Reply> = Vec::with_capacity(max_batch);
    let mut waiting: Vec<Reply> = Vec::with_capacity(max_batch);
    let mut rejected: Vec<(Reply, StoreError)> = Vec::new();
    let mut failure: Option<String> = None;
    while let Ok((job, reply)) = rx.recv() {
        jobs.push(job);
        replies.push(reply);
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok((job, reply)) => {
                    jobs.push(job);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        if let Some(reason) = &failure {
            jobs.clear();
            for reply in replies.drain(..) {
                let _ = reply.send(Err(StoreError::Io(reason.clone())));
            }
            continue;
        }
        let started = Instant::now();
        let results = backend.apply(std::mem::take(&mut jobs));
        add_micros(&counters.apply_micros, started);
        metrics::histogram!("sopflow_commit_apply_seconds").record(started.elapsed().as_secs_f64());
        let mut dirty = false;
        let mut results = results.into_iter();
        for reply in replies.drain(..) {
            match results.next() {
                Some(Ok(applied)) => {
                    dirty |= applied == Applied::Wrote;
                    waiting.push(reply);
                }
                // A rejected job wrote nothing, but its rejection may come from a job
                // before it in this batch (a version or key it took): answered after that
                // job's flush, so a retry reads what beat it.
                Some(Err(e)) => rejected.push((reply, e)),
                None => {
                    let _ = reply.send(Err(StoreError::Io(
                        "the store writer lost track of a commit; it was not applied".into(),
                    )));
                }
            }
        }
        if waiting.is_empty() {
            for (reply, e) in rejected.drain(..) {
                let _ = reply.send(Err(e));
            }
            continue;
        }
        counters
            .jobs
            .fetch_add(waiting.len() as u64, Ordering::Relaxed);
        metrics::histogram!("sopflow_commit_batch_size").record(waiting.len() as f64);
        // Unchanged jobs rely only on writes of this batch (then `dirty` is set) or of
        // earlier batches, which were flushed before they were answered.
        let flushed = if dirty {
            counters.flushes.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let flushed = backend.flush();
            add_micros(&counters.flush_micros, started);
            metrics::histogram!("sopflow_commit_flush_seconds")
                .record(started.elapsed().as_secs_f64());
            flushed
        } else {
            Ok(())
        };
        match flushed {
            Ok(()) => {
                for reply in waiting.drain(..) {
                    let _ = reply.send(Ok(()));
                }
                for (reply, e) in rejected.drain(..) {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                let reason = format!(
                    "flushing to disk failed ({e}); nothing since the last successful flush \
                     was acknowledged; restart sopflow once the disk problem is fixed"
                );
                match poisoned.lock() {
                    Ok(mut g) => *g = Some(reason.clone()),
                    Err(p) => *p.into_inner() = Some(reason.clone()),
                }
                for reply in waiting.drain(..).chain(rejected.drain(..).map(|(r, _)| r)) {
                    let _ = reply.send(Err(StoreError::Io(reason.clone())));
                }
                failure = Some(reason);
            }
        }
    }
    // Channel closed: the store is being dropped. One last flush covers anything applied
    // by sled's own callers outside the pipeline (none today) and is cheap otherwise.
    if failure.is_none() {
        let _ = backend.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    /// Records flush calls; `gate` makes the first flush wait so a batch can pile up.
    struct Fake {
        applied: Arc<Mutex<Vec<u32>>>,
        flushes: Arc<AtomicU64>,
        fail_flush: Arc<AtomicBool>,
        gate: Gate,
    }

    impl Backend for Fake {
        type Job = u32;
        fn apply(&mut self, jobs: Vec<u32>) -> Vec<Result<Applied, StoreError>> {
            let mut applied = self.applied.lock().unwrap();
            jobs.into_iter()
                .map(|job| {
                    if job == 0 {
                        return Err(StoreError::Invalid("zero".into()));
                    }
                    applied.push(job);
                    Ok(Applied::Wrote)
                })
                .collect()
        }
        fn flush(&mut self) -> Result<(), StoreError> {
            let (lock, cv) = &*self.gate;
            let mut open = lock.lock().map_err(|_| StoreError::Io("lock".into()))?;
            while !*open {
                open = cv.wait(open).map_err(|_| StoreError::Io("lock".into()))?;
            }
            self.flushes.fetch_add(1, Ordering::SeqCst);
            if self.fail_flush.load(Ordering::SeqCst) {
                Err(StoreError::Io("disk on fire".into()))
            } else {
                Ok(())
            }
        }
    }

    type Gate = Arc<(Mutex<bool>, std::sync::Condvar)>;

    fn fake(gate_open: bool) -> (Fake, Arc<AtomicU64>, Arc<AtomicBool>, Gate) {
        let flushes = Arc::new(AtomicU64::new(0));
        let fail = Arc::new(AtomicBool::new(false));
        let gate: Gate = Arc::new((Mutex::new(gate_open), std::sync::Condvar::new()));
        let f = Fake {
            applied: Arc::new(Mutex::new(Vec::new())),
            flushes: Arc::clone(&flushes),
            fail_flush: Arc::clone(&fail),
            gate: Arc::clone(&gate),
        };
        (f, flushes, fail, gate)
    }

    fn open_gate(gate: &(Mutex<bool>, std::sync::Condvar)) {
        let (lock, cv) = gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_queued_during_a_flush_share_the_next_one() {
        let (backend, flushes, _fail, gate) = fake(false);
        let gc = Arc::new(GroupCommit::start("test-gc", backend, 1024).unwrap());
        // The first job's flush blocks on the gate; 50 more pile up behind it.
        let first = tokio::spawn({
            let gc = Arc::clone(&gc);
            async move { gc.submit(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut rest = Vec::new();
        for i in 2..52 {
            let gc = Arc::clone(&gc);
            rest.push(tokio::spawn(async move { gc.submit(i).await }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            flushes.load(Ordering::SeqCst),
            0,
            "nothing acknowledged before the gate"
        );
        open_gate(&gate);
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
        assert_eq!(
            flushes.load(Ordering::SeqCst),
            2,
            "one flush for the first, one for the 50"
        );
        assert_eq!(gc.counters().jobs.load(Ordering::SeqCst), 51);
    }

    #[tokio::test]
    async fn a_rejected_job_is_answered_without_a_flush() {
        let (backend, flushes, _fail, _gate) = fake(true);
        let gc = GroupCommit::start("test-gc", backend, 8).unwrap();
        assert!(matches!(gc.submit(0).await, Err(StoreError::Invalid(_))));
        assert_eq!(flushes.load(Ordering::SeqCst), 0);
        gc.submit(7).await.unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_flush_fails_its_waiters_and_everything_after() {
        let (backend, _flushes, fail, _gate) = fake(true);
        fail.store(true, Ordering::SeqCst);
        let gc = GroupCommit::start("test-gc", backend, 8).unwrap();
        assert!(matches!(gc.submit(1).await, Err(StoreError::Io(_))));
        fail.store(false, Ordering::SeqCst);
        assert!(
            matches!(gc.submit(2).await, Err(StoreError::Io(_))),
            "poisoned"
        );
    }

    #[tokio::test]
    async fn drop_flushes_and_joins() {
        let (backend, flushes, _fail, _gate) = fake(true);
        let gc = GroupCommit::start("test-gc", backend, 8).unwrap();
        gc.submit(1).await.unwrap();
        drop(gc);
        assert_eq!(
            flushes.load(Ordering::SeqCst),
            2,
            "the commit's flush and the final one"
        );
    }
}
