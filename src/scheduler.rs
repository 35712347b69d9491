//! The deadline scheduler: a task that sleeps until the earliest armed timer — or until a
//! commit arms an earlier one — then fires everything due through the engine's ordinary
//! command path (the shape of mini-redis's `purge_expired_tasks` loop). Firing is exactly
//! once because removing a timer and appending its event are one transaction; timers that
//! fell due while the process was down fire at the first pass, in due order.
//!
//! It holds no timers in memory (a million armed timers cost nothing while idle: it reads
//! only the earliest), and it must not decide anything: the engine does. With a manual
//! clock time only moves when told to, so whoever advances it calls `Engine::fire_due`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::engine::service::Engine;
use crate::store::Store;

/// The longest the scheduler sleeps without looking again, so a clock change (or a timer
/// armed by another process sharing the store whose notification was lost) is noticed
/// within this bound.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How long to wait before looking again at a due timer this process could not fire.
const HELD_ELSEWHERE: Duration = Duration::from_secs(1);

/// How long a wake-up waits for the others of its burst before the earliest timer is
/// read again (a timer armed due at once fires this much later).
const COALESCE: Duration = Duration::from_millis(10);

/// How long until the earliest armed timer is due, at most `MAX_SLEEP`.
fn next_wait<S: Store>(engine: &Engine<S>) -> Duration {
    match engine.store().next_timer() {
        Ok(Some(next)) => {
            let now = engine.clock().now().timestamp_millis();
            let ms = u64::try_from(next.due_ms.saturating_sub(now)).unwrap_or(0);
            Duration::from_millis(ms).min(MAX_SLEEP)
        }
        Ok(None) => MAX_SLEEP,
        Err(e) => {
            tracing::warn!(error = %e, "reading the next timer failed");
            MAX_SLEEP
        }
    }
}

/// A running scheduler.
pub struct Scheduler {
    shutdown: Arc<Notify>,
    join: JoinHandle<()>,
}

impl Scheduler {
    /// Starts the scheduler on the current tokio runtime.
    pub fn spawn<S: Store>(engine: Arc<Engine<S>>) -> Scheduler {
        let shutdown = Arc::new(Notify::new());
        let stop = shutdown.clone();
        let join = tokio::spawn(async move {
            // Timers armed by other processes sharing the store (PostgreSQL's NOTIFY).
            let elsewhere = engine.store().timer_wakeups();
            loop {
                let fired = match engine.fire_due().await {
                    Ok(n) => n,
                    Err(e) => {
                        // The timer stays armed and is tried again on the next pass.
                        tracing::warn!(error = %e, "firing due timers failed; they stay armed and are tried again");
                        0
                    }
                };
                let mut wait = next_wait(&engine);
                // Still due after a pass that fired nothing: another node holds it (or held
                // it and died; its claim runs out). Looking again at once would spin.
                let mut not_before = (fired == 0 && wait.is_zero())
                    .then(|| tokio::time::Instant::now() + HELD_ELSEWHERE);
                // Sleep until the earliest timer is due. A commit arming a timer, here or on
                // another node, only makes it read the earliest again: most arm timers hours
                // away, and a pass per commit would cost the database a query per commit.
                loop {
                    if let Some(t) = not_before {
                        wait = wait.max(t.saturating_duration_since(tokio::time::Instant::now()));
                        if wait.is_zero() {
                            not_before = None;
                        }
                    }
                    if wait.is_zero() {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => break,
                        _ = engine.timers_armed() => {}
                        _ = async {
                            match &elsewhere {
                                Some(n) => n.notified().await,
                                None => std::future::pending().await,
                            }
                        } => {}
                        _ = stop.notified() => return,
                    }
                    // Let a burst of commits' wake-ups arrive as one.
                    tokio::time::sleep(COALESCE).await;
                    wait = next_wait(&engine);
                }
            }
        });
        Scheduler { shutdown, join }
    }

    /// Stops the scheduler after the firing in progress, if any, has finished.
    pub async fn stop(self) {
        self.shutdown.notify_one();
        let _ = self.join.await;
    }
}
