//! What the engine runs with besides its procedures: calendars and time zones, registers,
//! message routes and the live event feed, the roster of people. Each is swapped whole
//! when its file is read again; nothing here decides or writes to the store except the
//! registers' own records.

use super::*;

impl<S: Store> Engine<S> {
    /// Sets the working-day calendars deadlines are computed with (replacing any before).
    /// Calendars are live configuration: a holiday added today moves deadlines computed
    /// from now on, never those already recorded in a history.
    pub fn set_calendars(&self, calendars: &[Arc<crate::definition::calendar::Calendar>]) {
        let map: Calendars = calendars
            .iter()
            .map(|c| (c.id().to_string(), c.clone()))
            .collect();
        *self.calendars.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
    }

    /// The time zone the dates of `def` are read in (its calendar's; UTC if not loaded).
    pub fn zone_of(&self, def: &Procedure) -> chrono_tz::Tz {
        let calendars = self.calendars.read().unwrap_or_else(|p| p.into_inner());
        crate::engine::compiled::zone_of(def, &calendars)
    }

    /// The calendar `def` counts working time on (its own, else `default`), if loaded.
    pub(in crate::engine) fn calendar_of(
        &self,
        def: &Procedure,
    ) -> Option<Arc<crate::definition::calendar::Calendar>> {
        let calendars = self.calendars.read().unwrap_or_else(|p| p.into_inner());
        calendars
            .get(def.calendar.as_deref().unwrap_or("default"))
            .cloned()
    }

    /// The time zone of the `default` calendar (UTC if none is loaded): what a date alone
    /// means where no procedure is named (audit filters).
    pub fn default_zone(&self) -> chrono_tz::Tz {
        let calendars = self.calendars.read().unwrap_or_else(|p| p.into_inner());
        calendars
            .get("default")
            .map_or(chrono_tz::Tz::UTC, |c| c.timezone())
    }

    /// The time zone dates of procedure `id` are read in (its newest version's calendar),
    /// else the default calendar's.
    pub fn zone_of_procedure(&self, id: &str) -> chrono_tz::Tz {
        match self.procedure(id) {
            Some(p) => self.zone_of(&p.def),
            None => self.default_zone(),
        }
    }

    /// Loads the registers: each file's seeded entries, then every write recorded in the
    /// store's histories, in the order they were made. Replaces the book in one step.
    pub fn set_registers(
        &self,
        defs: &[Arc<crate::definition::register::RegisterFile>],
    ) -> Result<(), ServiceError> {
        let mut book = RegisterBook::seeded(defs);
        let query = crate::store::AuditQuery {
            kind: Some("register_written".into()),
            ..Default::default()
        };
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = self.store.audit(&query, cursor.as_deref(), 1000)?;
            for found in &page.items {
                let e = decode_event(found.instance, found.seq, &found.event)?;
                if let EventKind::RegisterWritten {
                    register,
                    key,
                    values,
                } = e.kind
                {
                    book.apply(&EntryWrite {
                        register,
                        key,
                        values,
                    });
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        *self.registers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(book);
        Ok(())
    }

    /// The registers as they are now.
    pub fn registers(&self) -> Arc<RegisterBook> {
        self.registers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a durable commit: its register writes join the book, its deadline events the
    /// metrics.
    pub(in crate::engine) fn settle(&self, tally: Tally) {
        if tally.messages > 0 {
            self.outbox_wake.notify_one();
        }
        for p in &tally.published {
            // No listener left is not an error: the feed keeps nothing.
            let _ = self.feed.send(p.clone());
        }
        if !tally.writes.is_empty() {
            let mut guard = self.registers.write().unwrap_or_else(|p| p.into_inner());
            let book = Arc::make_mut(&mut guard);
            for w in &tally.writes {
                book.apply(w);
            }
        }
        tally.record();
    }

    /// Sets who exists (the directory): every later command checks the people and
    /// departments it names against it. Until it is called nothing is checked, which only
    /// tests and benchmarks with invented people rely on.
    /// Sets which messages events cause from now on (webhook subscriptions, who gets mail).
    pub fn set_routes(&self, routes: crate::outbox::Routes) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
    }

    /// Changes the message routes in force in place (the file's part and the API's part
    /// are changed by different callers; neither may undo the other's change).
    pub fn update_routes(&self, change: impl FnOnce(&mut crate::outbox::Routes)) {
        let mut guard = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let mut routes = (**guard).clone();
        change(&mut routes);
        *guard = Arc::new(routes);
    }

    /// The message routes in force.
    pub fn routes(&self) -> Arc<crate::outbox::Routes> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Committed events from now on, for the live stream (lagging listeners miss some and
    /// are told so by the channel).
    pub fn subscribe_events(
        &self,
    ) -> tokio::sync::broadcast::Receiver<Arc<crate::outbox::live::Published>> {
        self.feed.subscribe()
    }

    /// The live stream's items of one commit, if anyone listens.
    pub(in crate::engine) fn to_publish(
        &self,
        touched: &[(InstanceId, Touched)],
        commit: &Commit,
    ) -> Vec<Arc<crate::outbox::live::Published>> {
        if self.feed.receiver_count() == 0 {
            return Vec::new();
        }
        let events: Vec<(InstanceId, &str, &[Event])> = touched
            .iter()
            .map(|(id, t)| (*id, t.after.procedure.as_str(), t.events.as_slice()))
            .collect();
        crate::outbox::live::published(&events, commit)
    }

    /// Signalled after every commit that queued messages (the outbox sender waits on it).
    pub fn outbox_wake(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_wake.clone()
    }

    pub fn set_roster(&self, roster: Arc<dyn Roster>) {
        *self.roster.write().unwrap_or_else(|p| p.into_inner()) = roster;
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}
