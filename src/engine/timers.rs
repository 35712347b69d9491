//! Time in the engine: firing due deadline timers and starting scheduled runs, and moving
//! a manual clock through everything that falls due on the way. Each firing goes through
//! the ordinary command path (`prepare`, one commit), so a timer decides nothing the core
//! would not. It must not read the system time except through the engine's `Clock`, and
//! must not skip a due timer or a scheduled run: the manual clock simulates exactly what
//! would have happened.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use super::decide::{Command, EngineError};
use super::instance::{derive_id, InstanceId};
use super::service::{new_instance_id, Engine, ServiceError, Tally};
use crate::clock::ManualClock;
use crate::definition::calendar::{parse_timezone, Calendar};
use crate::definition::duration::{cron_parser, parse_every, FixedTime};
use crate::definition::model::Procedure;
use crate::store::{Commit, ScheduleWrite, Store, StoreError, TimerRow};

impl<S: Store> Engine<S> {
    /// Arms the first run of every registered procedure that declares a `schedule` and has
    /// none armed yet. Idempotent; called by `register`.
    pub async fn arm_schedules(&self) -> Result<usize, ServiceError> {
        let now = self.clock.now();
        let mut armed = 0;
        for p in self.procedures() {
            if p.def.schedule.is_none() || self.store.schedule(p.id())?.is_some() {
                continue;
            }
            let Some(next) = self.next_run(&p.def, now, None)? else {
                continue;
            };
            let sid = schedule_id(p.id());
            let commit = Commit {
                schedules: vec![ScheduleWrite {
                    procedure: p.id().to_string(),
                    expected_runs: 0,
                    runs: 0,
                    next_ms: next.timestamp_millis(),
                }],
                arm_timers: vec![TimerRow {
                    due_ms: next.timestamp_millis(),
                    instance: sid,
                    timer: derive_id(sid, 0, 0),
                    payload: p.id().as_bytes().to_vec(),
                }],
                ..Commit::default()
            };
            match self.store.commit(commit).await {
                Ok(()) => armed += 1,
                Err(StoreError::ScheduleMoved { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if armed > 0 {
            self.timers_armed.notify_one();
        }
        Ok(armed)
    }

    /// When a procedure's schedule runs next after `after`. `prev` is the run that just fell
    /// due; `fire_schedule` passes its due time as `after` too, so every run missed while the
    /// process was down (or skipped over by a clock move) is caught up, one by one, in order.
    fn next_run(
        &self,
        def: &Procedure,
        after: chrono::DateTime<chrono::Utc>,
        prev: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ServiceError> {
        let Some(s) = &def.schedule else {
            return Ok(None);
        };
        let bad = |e: String| ServiceError::Corrupt(format!("the schedule of {}: {e}", def.id));
        let calendars = self
            .calendars
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let base = calendars
            .get(def.calendar.as_deref().unwrap_or("default"))
            .map(|c| (**c).clone())
            .unwrap_or_else(Calendar::utc);
        let tz = match &s.timezone {
            Some(t) => parse_timezone(t).map_err(|e| bad(e.to_string()))?,
            None => base.timezone(),
        };
        let cal = base.in_zone(tz);
        if let Some(expr) = &s.cron {
            let cron = cron_parser().parse(expr).map_err(|e| bad(e.to_string()))?;
            let local = after.with_timezone(&tz);
            // No occurrence within the search limit means the schedule has ended, not that
            // stored data is damaged.
            return Ok(cron
                .find_next_occurrence(&local, false)
                .ok()
                .map(|next| next.with_timezone(&chrono::Utc)));
        }
        let Some(every) = &s.every else {
            return Ok(None);
        };
        let amount = parse_every(every).map_err(|e| bad(e.to_string()))?;
        let mut t = match (prev, &s.starting) {
            (Some(p), _) => p,
            (None, Some(start)) => {
                let fixed: FixedTime = start
                    .parse()
                    .map_err(|e: crate::definition::duration::ParseError| bad(e.to_string()))?;
                cal.at(&fixed).map_err(|e| bad(e.to_string()))?
            }
            (None, None) => cal.add(after, &amount).map_err(|e| bad(e.to_string()))?,
        };
        // Bounded: even a daily schedule missed for a century is ~36,500 steps.
        for _ in 0..1_000_000 {
            if t > after {
                return Ok(Some(t));
            }
            t = cal.add(t, &amount).map_err(|e| bad(e.to_string()))?;
        }
        Err(bad("no next run could be found".into()))
    }

    /// Starts the scheduled run `row` stands for and arms the next, in one commit with a
    /// compare-and-swap on the schedule's run count: a run starts exactly once even if two
    /// firings race or the process restarts between them.
    async fn fire_schedule(&self, row: &TimerRow, procedure: &str) -> Result<bool, ServiceError> {
        let disarm = Commit {
            disarm_timers: vec![row.clone()],
            ..Commit::default()
        };
        let sched = self.store.schedule(procedure)?;
        // A retired procedure's schedule stops with it.
        let proc = self
            .procedure(procedure)
            .filter(|_| !self.is_retired(procedure));
        let (Some(sched), Some(proc)) = (sched, proc) else {
            self.store.commit(disarm).await?;
            return Ok(false);
        };
        if sched.next_ms != row.due_ms || proc.def.schedule.is_none() {
            // A stale row, or the procedure's new version dropped its schedule.
            self.store.commit(disarm).await?;
            return Ok(false);
        }
        let now = self.clock.now();
        let due = chrono::DateTime::from_timestamp_millis(row.due_ms).unwrap_or(now);
        let data = proc
            .def
            .schedule
            .as_ref()
            .map(|s| s.data.clone())
            .unwrap_or_default();
        let id = new_instance_id(now);
        let start = Command::Start {
            id,
            data,
            parent: None,
            origin: None,
        };
        let mut tally = Tally::default();
        let (mut commit, started) = match self.prepare(id, Some(proc.clone()), &start, None) {
            Ok((c, _, t)) => {
                tally = t;
                (c, true)
            }
            Err(e) => {
                // The run cannot start (its start data no longer fits the procedure); the
                // schedule still moves on so it does not fire again and again.
                tracing::warn!(%procedure, error = %e, "the scheduled run could not start");
                (Commit::default(), false)
            }
        };
        let sid = schedule_id(procedure);
        // After the run that fell due, not after now: a run is never dropped because the
        // process was down or the clock moved past several at once.
        let next = self.next_run(&proc.def, due, Some(due))?;
        let runs = sched.runs + 1;
        commit.schedules.push(ScheduleWrite {
            procedure: procedure.to_string(),
            expected_runs: sched.runs,
            runs,
            next_ms: next.map_or(i64::MAX, |n| n.timestamp_millis()),
        });
        commit.disarm_timers.push(row.clone());
        if let Some(next) = next {
            commit.arm_timers.push(TimerRow {
                due_ms: next.timestamp_millis(),
                instance: sid,
                timer: derive_id(sid, runs, 0),
                payload: procedure.as_bytes().to_vec(),
            });
        }
        match self.store.commit(commit).await {
            Ok(()) => {
                self.settle(tally);
                self.timers_armed.notify_one();
                Ok(started)
            }
            Err(StoreError::ScheduleMoved { .. }) | Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Fires every timer due by now, oldest first, each through the ordinary command path
    /// (one command, one commit). Returns how many fired. A timer another process or call
    /// fired first is skipped: its removal and its event were one transaction.
    pub async fn fire_due(&self) -> Result<usize, ServiceError> {
        // Instances due from register dates start first (they are starts, not firings, and
        // are not counted): their own deadlines are then armed and fire in this same pass if
        // already due.
        self.start_from_registers().await?;
        let mut fired = 0;
        let mut one_by_one = false;
        // The round whose commit the store is writing while the next round is decided: the
        // deciding (on this task) and the writing (on the store's writer) overlap instead
        // of taking turns. A round never takes a timer or an instance of the one in flight.
        let mut in_flight: Option<InFlight<'_>> = None;
        loop {
            let now_ms = self.clock.now().timestamp_millis();
            let busy = in_flight.as_ref().map_or(0, |f| f.timers.len());
            let due: Vec<TimerRow> = self
                .store
                .claim_due_timers(now_ms, FIRE_BATCH + busy)?
                .into_iter()
                .filter(|r| {
                    !in_flight
                        .as_ref()
                        .is_some_and(|f| f.timers.contains(&r.timer))
                })
                .collect();
            if due.is_empty() {
                match in_flight.take() {
                    Some(f) => {
                        fired += self.land(f, &mut one_by_one).await?;
                        continue;
                    }
                    None => return Ok(fired),
                }
            }
            if one_by_one {
                // Re-deciding one at a time must see the round in flight written first.
                if let Some(f) = in_flight.take() {
                    fired += self.land(f, &mut one_by_one).await?;
                }
            }
            let mut progressed = false;
            // Firings of different instances go to the store as one commit (one transaction,
            // one flush), which is what lets a burst of timers due at the same instant fire
            // quickly. Each is still decided on its own; a firing whose commit touches an
            // instance already in the batch (or in flight) waits for a later round.
            let mut batch = Commit::default();
            let mut round = InFlight::default();
            let mut orphans: Vec<TimerRow> = Vec::new();
            for row in due {
                if let Some(procedure) = schedule_of(&row) {
                    // Whether this call or a racing one won, the row is gone afterwards.
                    if self.fire_schedule(&row, &procedure).await? {
                        fired += 1;
                    }
                    progressed = true;
                    continue;
                }
                let cmd = Command::FireTimer { timer: row.timer };
                if one_by_one {
                    match self.execute(row.instance, cmd, None).await {
                        Ok(_) => {
                            fired += 1;
                            progressed = true;
                        }
                        Err(e) if moot_timer(&e) => orphans.push(row),
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                if taken(&round, &in_flight, &row.instance) {
                    continue;
                }
                match self.prepare(row.instance, None, &cmd, None) {
                    Ok((commit, _, t)) => {
                        if commit
                            .instances
                            .iter()
                            .any(|w| taken(&round, &in_flight, &w.id))
                        {
                            continue;
                        }
                        round
                            .instances
                            .extend(commit.instances.iter().map(|w| w.id));
                        round.timers.insert(row.timer);
                        merge_into(&mut batch, commit);
                        round.tally.add(&t);
                        round.members += 1;
                    }
                    Err(e) if moot_timer(&e) => orphans.push(row),
                    Err(e) => return Err(e),
                }
            }
            one_by_one = false;
            // A row no instance knows (its instance or timer is gone) can never fire; left in
            // place it would stay the earliest timer and keep the scheduler awake forever.
            // It is in no history, so removing it rewrites nothing.
            if !orphans.is_empty() {
                self.store
                    .commit(Commit {
                        disarm_timers: std::mem::take(&mut orphans),
                        ..Commit::default()
                    })
                    .await?;
                progressed = true;
            }
            if let Some(f) = in_flight.take() {
                fired += self.land(f, &mut one_by_one).await?;
                progressed = true;
            }
            if round.members > 0 {
                round.armed = !batch.arm_timers.is_empty();
                let mut commit: Landing<'_> = Box::pin(self.store.commit(batch));
                // Polled once here, so the store has the commit before this task goes on
                // to decide the next round.
                match std::future::poll_fn(|cx| Poll::Ready(commit.as_mut().poll(cx))).await {
                    Poll::Ready(result) => {
                        fired += self.landed(round, result, &mut one_by_one)?;
                    }
                    Poll::Pending => {
                        round.commit = Some(commit);
                        in_flight = Some(round);
                    }
                }
                progressed = true;
            }
            if !progressed {
                return Ok(fired);
            }
        }
    }

    /// Waits for a round's commit and settles it; returns how many timers it fired.
    async fn land(
        &self,
        mut round: InFlight<'_>,
        one_by_one: &mut bool,
    ) -> Result<usize, ServiceError> {
        let result = match round.commit.take() {
            Some(commit) => commit.await,
            None => Ok(()),
        };
        self.landed(round, result, one_by_one)
    }

    fn landed(
        &self,
        round: InFlight<'_>,
        result: Result<(), StoreError>,
        one_by_one: &mut bool,
    ) -> Result<usize, ServiceError> {
        match result {
            Ok(()) => {
                self.settle(round.tally);
                if round.armed {
                    self.timers_armed.notify_one();
                }
                Ok(round.members)
            }
            // Someone changed one of these instances meanwhile: nothing of the batch was
            // written; the next round takes its timers one command at a time, re-decided.
            Err(StoreError::Conflict { .. }) | Err(StoreError::ScheduleMoved { .. }) => {
                *one_by_one = true;
                Ok(0)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Moves `clock` to `target` the way time would have passed: it stops at each armed
    /// timer due on the way, in due order, and fires what is due there, so every firing and
    /// every scheduled run is recorded at its own due time (`late_ms` 0), and a timer armed
    /// by one of those firings fires in turn if it falls due before `target`. Returns how
    /// many timers fired. Callers serialise clock moves; the clock never runs back.
    pub async fn advance_clock(
        &self,
        clock: &ManualClock,
        target: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, ServiceError> {
        let target_ms = target.timestamp_millis();
        let mut fired = 0;
        let mut last: Option<(i64, uuid::Uuid)> = None;
        while let Some(row) = self.store.next_timer()? {
            if row.due_ms > target_ms {
                break;
            }
            // A row that stays the earliest after a round at its due time could not be fired
            // (fire_due removes the rows it cannot fire): going on would loop forever.
            if last == Some((row.due_ms, row.timer)) {
                break;
            }
            last = Some((row.due_ms, row.timer));
            if let Some(due) = chrono::DateTime::from_timestamp_millis(row.due_ms) {
                clock.set(due);
            }
            fired += self.fire_due().await?;
        }
        clock.set(target);
        fired += self.fire_due().await?;
        Ok(fired)
    }

    /// Completes when a commit arms a timer (for the scheduler).
    pub async fn timers_armed(&self) {
        self.timers_armed.notified().await
    }
}

/// Whether firing a due timer row failed because there is nothing left to fire: its
/// instance or timer is gone, or the instance ended after the due timers were read (a
/// completion raced the firing, and its timers went with it).
fn moot_timer(e: &ServiceError) -> bool {
    matches!(
        e,
        ServiceError::Engine(EngineError::NotFound(_) | EngineError::Ended(_))
    )
}

/// A round's commit, written by the store while the next round is decided.
type Landing<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// A round of firings committed together: what it takes (so the round after it, decided
/// while this one is written, leaves those alone) and what to do once it is written.
#[derive(Default)]
struct InFlight<'a> {
    commit: Option<Landing<'a>>,
    timers: HashSet<uuid::Uuid>,
    instances: HashSet<InstanceId>,
    tally: Tally,
    members: usize,
    armed: bool,
}

/// Whether a firing's instance belongs to the round being built or to the one in flight.
fn taken(round: &InFlight<'_>, in_flight: &Option<InFlight<'_>>, id: &InstanceId) -> bool {
    round.instances.contains(id) || in_flight.as_ref().is_some_and(|f| f.instances.contains(id))
}

/// How many due timers one round of `fire_due` takes (and at most commits together).
const FIRE_BATCH: usize = 512;

/// Appends everything `c` writes to `into`; the caller keeps the instances distinct.
fn merge_into(into: &mut Commit, c: Commit) {
    into.instances.extend(c.instances);
    into.open_tasks.extend(c.open_tasks);
    into.closed_tasks.extend(c.closed_tasks);
    into.statuses.extend(c.statuses);
    into.arm_timers.extend(c.arm_timers);
    into.disarm_timers.extend(c.disarm_timers);
    into.notifications.extend(c.notifications);
    into.outbox.extend(c.outbox);
    into.schedules.extend(c.schedules);
}

/// The pseudo-instance id under which a procedure's schedule timers are kept.
pub fn schedule_id(procedure: &str) -> InstanceId {
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, b"sopflow schedule ");
    sha2::Digest::update(&mut h, procedure.as_bytes());
    let digest = sha2::Digest::finalize(h);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The procedure a timer row starts runs of, if it is a schedule's timer.
fn schedule_of(row: &TimerRow) -> Option<String> {
    let p = std::str::from_utf8(&row.payload).ok()?;
    (!p.is_empty() && row.instance == schedule_id(p)).then(|| p.to_string())
}
