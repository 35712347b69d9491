//! Time. Every instant the engine uses comes from a `Clock` (invariant 4): the system clock
//! in production, a manual clock in tests and simulations, so deadlines fire exactly as
//! they would for real without anyone waiting. This is the only module that may read the
//! system time.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward (a negative duration is ignored: time does not run back).
    pub fn advance(&self, by: Duration) {
        if by > Duration::zero() {
            let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
            *now += by;
        }
    }

    /// Sets the clock, if `to` is not earlier than now.
    pub fn set(&self, to: DateTime<Utc>) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        if to > *now {
            *now = to;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward_and_clones_share_time() {
        let start = DateTime::parse_from_rfc3339("2026-11-02T09:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        let c = ManualClock::new(start);
        let c2 = c.clone();
        c.advance(Duration::hours(2));
        assert_eq!(c2.now(), start + Duration::hours(2));
        c.advance(Duration::hours(-5));
        c.set(start);
        assert_eq!(c.now(), start + Duration::hours(2));
    }
}
