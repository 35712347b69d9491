//! The background sender: reads pending deliveries from the store's outbox, sends them
//! (webhook POSTs, mails), and records each one's fate in a commit of its own — sent,
//! failed (tried again after a backoff), or dead after `MAX_ATTEMPTS` tries.
//!
//! Order: the messages of one instance for one destination go out one after another, in
//! the order of the instance's history; a failed one holds the later ones back until it is
//! sent or dead. Different instances and destinations go out side by side (at most
//! `MAX_CHAINS` at once). At least once: a message sent but not yet recorded when the
//! process dies is sent again after the restart, with the same `webhook-id` (a mail with
//! the same Message-ID), so a receiver can drop the repeat.
//!
//! Time for backoff comes from the engine's clock (on a manual clock, a retry becomes due
//! when the clock is moved past it); `webhook-timestamp` is always the real time, since
//! receivers compare it with their own clocks.
//!
//! Several nodes on one PostgreSQL database: only the holder of the store's `LEASE` sends;
//! the others ask for it every few seconds and take over when a holder stops (at once after
//! a graceful stop, within `LEASE_SECONDS` after a crash).
//!
//! This module must never run inside a command (it only reads the outbox and writes
//! outbox entries) and must not log a secret or a whole message body.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use super::mail::{MailError, Mailer};
use super::{Routes, Subscription};
use crate::clock::Clock;
use crate::engine::service::Engine;
use crate::store::outbox::SENT_KEPT_MS;
use crate::store::{Commit, Delivery, DeliveryState, OutboxWrite, Store, StoreError};

mod job;

use job::Job;
pub use job::{backoff, message_id};

/// The pause after a pass that sent something, before the next one.
const GATHER: Duration = Duration::from_millis(10);
/// Tries before a delivery is dead: with the backoff below, about 8.5 hours of retrying.
pub const MAX_ATTEMPTS: u32 = 10;
/// The first retry's delay; each later one doubles it, up to `MAX_BACKOFF`.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
pub const MAX_BACKOFF: Duration = Duration::from_secs(4 * 3600);
/// How long one webhook call or mail may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Instance-and-destination chains sent side by side.
const MAX_CHAINS: usize = 128;
/// Of them, at most this many for one destination, so one busy receiver leaves room for
/// the others in every pass.
const MAX_CHAINS_PER_DESTINATION: usize = 64;
/// Messages of one chain sent in one pass (the rest wait for the next pass).
const CHAIN_LEN: usize = 16;
/// Pending entries of one destination read per pass at most (those waiting out a backoff
/// are read too, unless every try to the destination failed: then it rests, unread).
const SCAN: usize = 4_000;
/// A digest queue with nothing due is read again after at most this long, milliseconds.
const DIGEST_REST_MS: i64 = 60_000;
/// Pending entries read per store call.
const SCAN_PAGE: usize = 256;
/// The store lease whose holder sends: on PostgreSQL with several nodes, one node sends the
/// pending messages at a time, so a message is not sent by two side by side (a takeover
/// after a holder died can still repeat one it sent but had not recorded: at least once).
pub const LEASE: &str = "outbox-sender";
/// How long a holder's lease lasts without renewal: the longest a dead holder's messages
/// wait for another node. Longer than a pass takes, with calls limited to `CALL_TIMEOUT`.
const LEASE_SECONDS: f64 = 60.0;
/// The holder renews this often (a third of the lease, so two missed renewals are harmless).
const LEASE_RENEW: Duration = Duration::from_secs(20);
/// A node that does not hold the lease asks for it this often.
const LEASE_POLL: Duration = Duration::from_secs(5);
/// A failed delivery's error text is cut to this many characters.
const ERROR_CHARS: usize = 300;

/// A running sender; `stop` ends it after the pass in flight.
pub struct Sender {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Sender {
    /// Starts delivering what `engine`'s outbox holds, with `mailer` for mail (mail stays
    /// queued, and eventually dead, without one).
    pub fn spawn<S: Store>(engine: Arc<Engine<S>>, mailer: Option<Mailer>) -> Sender {
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(run(engine, mailer, stop.clone()));
        Sender { stop, task }
    }

    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

async fn run<S: Store>(
    engine: Arc<Engine<S>>,
    mailer: Option<Mailer>,
    stop: Arc<tokio::sync::Notify>,
) {
    let clients = match Clients::new() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the webhook client cannot be built; nothing will be delivered");
            return;
        }
    };
    let wake = engine.outbox_wake();
    let mut memory = Memory::default();
    loop {
        // Every node reads the subscriptions made over the API now and then (one may have
        // been made on another node), whether it sends or not: its commands route by them.
        if memory
            .refreshed
            .is_none_or(|t| t.elapsed() >= super::stored::REFRESH)
        {
            memory.refreshed = Some(std::time::Instant::now());
            if let Err(e) = super::stored::refresh(&engine) {
                tracing::warn!(error = %e, "the stored webhook subscriptions could not be read");
            }
        }
        if !memory.holds_lease(&**engine.store()) {
            // Another node sends; look again now and then, to take over if it stops.
            tokio::select! {
                _ = stop.notified() => return release(&engine),
                _ = tokio::time::sleep(LEASE_POLL) => {}
            }
            continue;
        }
        let wait = match pass(&engine, &clients, mailer.as_ref(), &mut memory).await {
            Ok(Some(wait)) => wait,
            // Progress was made: look again shortly (more may be queued behind it). The
            // pause lets messages gather, so that under load a pass sends many at once and
            // settles them in one commit, rather than one pass and one commit per message.
            Ok(None) => GATHER,
            Err(e) => {
                tracing::warn!(error = %e, "the outbox could not be read or settled; trying again");
                Duration::from_secs(1)
            }
        };
        if wait == GATHER {
            tokio::select! {
                _ = stop.notified() => return release(&engine),
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        tokio::select! {
            _ = stop.notified() => return release(&engine),
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Lets another node take the sending over at once after a graceful stop.
fn release<S: Store>(engine: &Engine<S>) {
    if let Err(e) = engine.store().release_lease(LEASE) {
        tracing::warn!(error = %e, "the outbox lease could not be given up; another node takes over when it runs out");
    }
}

/// HTTP clients: one that refuses internal addresses, one for `allow_private` receivers.
struct Clients {
    guarded: reqwest::Client,
    open: reqwest::Client,
}

impl Clients {
    fn new() -> Result<Clients, reqwest::Error> {
        let base = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(CALL_TIMEOUT)
                .user_agent(concat!("sopflow-webhooks/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Clients {
            guarded: base()
                .dns_resolver(Arc::new(super::ssrf::GuardedResolver))
                .build()?,
            open: base().build()?,
        })
    }
}

/// What the sender remembers between passes: when it last pruned the sent records, and
/// the destinations whose every try failed in a pass, with when to look at them again. A
/// destination that is down is then passed over with one seek, however many messages wait
/// for it, instead of being read on every wake-up (lost at a restart: it is read once more).
#[derive(Default)]
struct Memory {
    last_prune: Option<i64>,
    /// Also a person's digest queue with nothing due yet, until its digest time.
    resting: HashMap<String, i64>,
    /// When this node's outbox lease was last renewed, while it holds it.
    renewed: Option<std::time::Instant>,
    /// When the stored subscriptions were last read.
    refreshed: Option<std::time::Instant>,
}

impl Memory {
    /// Whether this node is the one that sends (asking the store at most every
    /// `LEASE_RENEW`, not on every pass).
    fn holds_lease<S: Store>(&mut self, store: &S) -> bool {
        if self.renewed.is_some_and(|t| t.elapsed() < LEASE_RENEW) {
            return true;
        }
        let held = match store.hold_lease(LEASE, LEASE_SECONDS) {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "the outbox lease could not be renewed");
                false
            }
        };
        match (held, self.renewed.is_some()) {
            (true, false) => tracing::info!("this node now sends the outbox's messages"),
            (false, true) => tracing::info!("another node now sends the outbox's messages"),
            _ => {}
        }
        self.renewed = held.then(std::time::Instant::now);
        held
    }
}

/// One pass over the outbox. `Ok(None)` when something was settled; otherwise how long to
/// wait before looking again (a new message wakes the sender earlier).
async fn pass<S: Store>(
    engine: &Arc<Engine<S>>,
    clients: &Clients,
    mailer: Option<&Mailer>,
    memory: &mut Memory,
) -> Result<Option<Duration>, StoreError> {
    let store = engine.store().clone();
    let now = engine.clock().now().timestamp_millis();
    let routes = engine.routes();
    let mut writes = Vec::new();
    if memory
        .last_prune
        .is_none_or(|t| now.saturating_sub(t) > 60_000)
    {
        memory.last_prune = Some(now);
        for d in store.sent_before(now - SENT_KEPT_MS, 1_000)? {
            writes.push(OutboxWrite::remove(DeliveryState::Sent, d));
        }
    }
    let mut next_due: Option<i64> = None;
    let mut later = |at: i64| next_due = Some(next_due.map_or(at, |n: i64| n.min(at)));
    // Chains: one per (destination, instance), its messages in history order.
    let mut chains: Vec<Vec<Delivery>> = Vec::new();
    for dest in store.delivery_destinations(DeliveryState::Pending)? {
        if paused(&routes, &dest) {
            continue;
        }
        if let Some(&at) = memory.resting.get(&dest) {
            if at > now {
                later(at);
                continue;
            }
        }
        let room = MAX_CHAINS
            .saturating_sub(chains.len())
            .min(MAX_CHAINS_PER_DESTINATION);
        if room == 0 {
            // Full: the rest waits for the next pass, which comes at once.
            later(now);
            break;
        }
        if dest.starts_with("digest:") {
            // A person's digest: everything due for them, across instances, is one letter.
            let mut earliest: Option<i64> = None;
            let notices = super::digest::due(&*store, &dest, now, &mut |at| {
                earliest = Some(earliest.map_or(at, |e: i64| e.min(at)));
            })?;
            if let Some(at) = earliest {
                later(at);
            }
            if notices.is_empty() {
                // Nothing due before the digest time: the queue is not read again on every
                // pass until then (at most `DIGEST_REST` ahead, so a notice sent again by
                // hand is not held back long).
                if let Some(at) = earliest {
                    memory
                        .resting
                        .insert(dest.clone(), at.min(now.saturating_add(DIGEST_REST_MS)));
                }
            } else {
                chains.push(notices);
            }
            continue;
        }
        chains.extend(chains_of(&*store, &dest, now, room, &mut later)?);
    }
    let mut set = JoinSet::new();
    for chain in chains {
        let job = Job {
            store: store.clone(),
            routes: routes.clone(),
            guarded: clients.guarded.clone(),
            open: clients.open.clone(),
            mailer: mailer.cloned(),
            clock: engine.clock().clone(),
        };
        set.spawn(async move { job.chain(chain).await });
    }
    // Per destination: whether any try succeeded, and the earliest retry of those failing.
    let mut verdicts: HashMap<String, (bool, Option<i64>)> = HashMap::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(w) => {
                for x in &w {
                    let v = verdicts.entry(x.delivery.destination.clone()).or_default();
                    match (x.state, x.remove) {
                        (DeliveryState::Sent, false) => v.0 = true,
                        (DeliveryState::Pending, false) => {
                            v.1 =
                                Some(v.1.map_or(x.delivery.next_ms, |n| n.min(x.delivery.next_ms)))
                        }
                        _ => {}
                    }
                }
                writes.extend(w)
            }
            Err(e) => {
                tracing::error!(error = %e, "a delivery task failed; its messages stay pending")
            }
        }
    }
    for (dest, (any_sent, retry_at)) in verdicts {
        match retry_at {
            Some(at) if !any_sent => {
                memory.resting.insert(dest, at);
            }
            _ => {
                memory.resting.remove(&dest);
            }
        }
    }
    if writes.is_empty() {
        let wait = next_due.map_or(super::stored::REFRESH, |due| {
            Duration::from_millis(u64::try_from(due - now).unwrap_or(0).clamp(50, 1_000))
        });
        return Ok(Some(wait));
    }
    let n = writes.len();
    store
        .commit(Commit {
            outbox: writes,
            ..Commit::default()
        })
        .await?;
    tracing::debug!(settled = n, "outbox deliveries settled");
    Ok(None)
}

/// Up to `room` chains of `dest`'s pending messages that are due, one per instance, read in
/// key order; a chain whose first message waits out a backoff holds its instance back.
fn chains_of<S: Store>(
    store: &S,
    dest: &str,
    now: i64,
    room: usize,
    later: &mut dyn FnMut(i64),
) -> Result<Vec<Vec<Delivery>>, StoreError> {
    let mut chains: Vec<Vec<Delivery>> = Vec::new();
    let mut blocked: Option<crate::store::InstanceId> = None;
    each_pending(store, dest, SCAN, &mut |d| {
        // Keys are grouped by instance: only the current chain can grow.
        if blocked == Some(d.instance) {
            return true;
        }
        if let Some(c) = chains.last_mut().filter(|c| c[0].instance == d.instance) {
            if c.len() < CHAIN_LEN {
                c.push(d);
            }
            return true;
        }
        if d.next_ms > now {
            later(d.next_ms);
            blocked = Some(d.instance);
            return true;
        }
        if chains.len() == room {
            later(now);
            return false;
        }
        chains.push(vec![d]);
        true
    })?;
    Ok(chains)
}

/// Hands `dest`'s pending deliveries to `visit` in key order, a page per store call, until
/// `visit` says stop (false) or `scan` entries were read.
pub(super) fn each_pending<S: Store + ?Sized>(
    store: &S,
    dest: &str,
    scan: usize,
    visit: &mut dyn FnMut(Delivery) -> bool,
) -> Result<(), StoreError> {
    let mut cursor: Option<Vec<u8>> = None;
    let mut scanned = 0usize;
    loop {
        let page = store.deliveries(
            DeliveryState::Pending,
            Some(dest),
            cursor.as_deref(),
            SCAN_PAGE,
        )?;
        for d in page.items {
            scanned += 1;
            if !visit(d) {
                return Ok(());
            }
        }
        match page.next {
            Some(n) if scanned < scan => cursor = Some(n),
            _ => return Ok(()),
        }
    }
}

fn paused(routes: &Routes, destination: &str) -> bool {
    destination
        .strip_prefix("hook:")
        .is_some_and(|id| routes.hook(id).is_some_and(|s| s.paused))
}

/// Puts a dead delivery back in the queue with its tries reset (an administrator's retry,
/// once the receiver is fixed). `Ok(false)` when there is no such dead delivery.
pub async fn retry<S: Store>(
    engine: &Engine<S>,
    instance: crate::store::InstanceId,
    seq: u64,
    destination: &str,
) -> Result<bool, StoreError> {
    let Some(dead) = engine
        .store()
        .delivery(DeliveryState::Dead, instance, seq, destination)?
    else {
        return Ok(false);
    };
    let mut again = dead.clone();
    again.attempts = 0;
    again.next_ms = 0;
    again.done_ms = None;
    engine
        .store()
        .commit(Commit {
            outbox: vec![
                OutboxWrite::remove(DeliveryState::Dead, dead),
                OutboxWrite::put(DeliveryState::Pending, again),
            ],
            ..Commit::default()
        })
        .await?;
    engine.outbox_wake().notify_one();
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_a_fifth_either_way_and_is_capped() {
        let mut d = Delivery {
            destination: "hook:a".into(),
            instance: uuid::Uuid::from_u128(1),
            seq: 1,
            procedure: "p".into(),
            kind: "task.opened".into(),
            at_ms: 0,
            body: String::new(),
            subject: None,
            attempts: 1,
            next_ms: 0,
            last_error: None,
            done_ms: None,
        };
        let mut expected = 30_000i64;
        for attempts in 1..MAX_ATTEMPTS {
            d.attempts = attempts;
            let b = backoff(&d);
            let want = expected.min(4 * 3_600_000);
            assert!(
                b >= want * 4 / 5 && b <= want * 6 / 5,
                "try {attempts}: {b} vs {want}"
            );
            expected *= 2;
        }
    }
}
