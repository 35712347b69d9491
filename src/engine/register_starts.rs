//! Instances started before dates held in registers (`starts_from`): the warranty notice
//! ten days before each unit's warranty ends. Every pass of the scheduler (and every clock
//! move) looks at each watched entry; one whose date minus `before` has come, and whose
//! `mark` does not yet hold that date, gets an instance — started through the ordinary
//! command path, with the mark written in the same commit, so each date starts exactly one.
//!
//! It must not decide anything the start itself would not, and it reads time only from the
//! engine's clock.

use std::sync::Arc;

use cel::Value as Cel;
use serde_json::{Map, Value};

use super::compiled::{from_cel, to_cel};
use super::decide::{Command, StartOrigin};
use super::service::{new_instance_id, Engine, ServiceError};
use crate::definition::calendar::resolve_in;
use crate::definition::duration::Due;
use crate::definition::model::FieldType;
use crate::store::Store;

impl<S: Store> Engine<S> {
    /// Starts every instance due from a register date; returns how many started. An entry
    /// whose start fails (its data does not fit the procedure) is left as it is and logged;
    /// it is tried again on the next pass, after someone corrects it.
    pub async fn start_from_registers(&self) -> Result<usize, ServiceError> {
        let watching: Vec<_> = self
            .procedures()
            .into_iter()
            .filter(|p| p.def.starts_from.is_some() && !self.is_retired(p.id()))
            .collect();
        if watching.is_empty() {
            return Ok(0);
        }
        let _one_pass = self.register_starts.lock().await;
        let book = self.registers();
        let now = self.clock().now();
        let mut started = 0;
        for proc in watching {
            let Some(sf) = proc.def.starts_from.clone() else {
                continue;
            };
            let (Some(def), Some(entries)) = (book.def(&sf.register), book.entries(&sf.register))
            else {
                continue;
            };
            let Some(cal) = self.calendar_of(&proc.def) else {
                continue;
            };
            let zone = self.zone_of(&proc.def);
            let Ok(due) = format!("{} before {}", sf.before, sf.date).parse::<Due>() else {
                continue;
            };
            let mut entry_field = crate::definition::semantic::plain(FieldType::Object);
            entry_field.fields = def.fields.clone();
            for (key, entry) in entries {
                let Some(date) = entry.get(&sf.date).filter(|d| d.is_string()) else {
                    continue;
                };
                if entry.get(&sf.mark) == Some(date) {
                    continue;
                }
                let Ok(at) = resolve_in(&due, now, entry, &cal, zone) else {
                    continue;
                };
                if now < at {
                    continue;
                }
                let mut ctx = crate::definition::expr::context();
                ctx.add_variable_from_value("key", Cel::String(Arc::new(key.clone())));
                ctx.add_variable_from_value(
                    "entry",
                    to_cel(&Value::Object(entry.clone()), Some(&entry_field), zone),
                );
                ctx.add_variable_from_value("now", Cel::Timestamp(now.fixed_offset()));
                let mut data = Map::new();
                let mut failed = None;
                for (name, program) in &proc.starts_from {
                    match program.execute(&ctx) {
                        Ok(v) => {
                            data.insert(name.clone(), proc.coerce(name, from_cel(&v), zone));
                        }
                        Err(e) => failed = Some(format!("`{name}`: {e}")),
                    }
                }
                if let Some(why) = failed {
                    tracing::warn!(procedure = proc.id(), register = %sf.register, %key, %why, "not started from the register");
                    continue;
                }
                let id = new_instance_id(now);
                let cmd = Command::Start {
                    id,
                    data,
                    parent: None,
                    origin: Some(StartOrigin {
                        register: sf.register.clone(),
                        key: key.clone(),
                        mark: sf.mark.clone(),
                        date: date.clone(),
                    }),
                };
                match self.run(id, Some(proc.clone()), cmd, None, None).await {
                    Ok(_) => started += 1,
                    Err(e) => {
                        tracing::warn!(procedure = proc.id(), register = %sf.register, %key, error = %e, "not started from the register")
                    }
                }
            }
        }
        Ok(started)
    }
}
