//! The registers' current entries, as the engine reads them: each register's seeded entries
//! (from its file) with every `register_written` event applied in order. Commands read it
//! like the roster — a value handed to `decide` — and the service applies a command's writes
//! once its commit is durable.
//!
//! It holds no history: the writes are events of the instances that made them, and the book
//! is rebuilt from them when the engine opens. It must not decide anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use cel::objects::Key;
use cel::Value as Cel;
use serde_json::{Map, Value};

use crate::definition::register::RegisterFile;

/// Every register with its entries.
#[derive(Debug, Clone, Default)]
pub struct RegisterBook {
    registers: BTreeMap<String, Register>,
}

#[derive(Debug, Clone)]
struct Register {
    def: Arc<RegisterFile>,
    entries: BTreeMap<String, Map<String, Value>>,
}

/// One change of one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryWrite {
    pub register: String,
    pub key: String,
    pub values: Map<String, Value>,
}

impl RegisterBook {
    /// The registers as their files seed them.
    pub fn seeded(defs: &[Arc<RegisterFile>]) -> Self {
        let registers = defs
            .iter()
            .map(|d| {
                let entries = d.seeded().into_iter().collect();
                (
                    d.id.clone(),
                    Register {
                        def: d.clone(),
                        entries,
                    },
                )
            })
            .collect();
        RegisterBook { registers }
    }

    /// Sets the given fields of an entry (creating it); a write to a register that is not
    /// loaded (its file was removed) is kept out: nothing reads it.
    pub fn apply(&mut self, w: &EntryWrite) {
        if let Some(r) = self.registers.get_mut(&w.register) {
            let entry = r.entries.entry(w.key.clone()).or_default();
            for (k, v) in &w.values {
                entry.insert(k.clone(), v.clone());
            }
        }
    }

    pub fn def(&self, id: &str) -> Option<&Arc<RegisterFile>> {
        self.registers.get(id).map(|r| &r.def)
    }

    pub fn defs(&self) -> impl Iterator<Item = &Arc<RegisterFile>> {
        self.registers.values().map(|r| &r.def)
    }

    /// The entries of a register, by key.
    pub fn entries(&self, id: &str) -> Option<&BTreeMap<String, Map<String, Value>>> {
        self.registers.get(id).map(|r| &r.entries)
    }

    pub fn entry(&self, id: &str, key: &str) -> Option<&Map<String, Value>> {
        self.registers.get(id)?.entries.get(key)
    }

    /// The book as the CEL value `register`: register id → key → fields, dates read in
    /// `zone` like the instance's own dates.
    pub fn to_cel(&self, zone: chrono_tz::Tz) -> Cel {
        let map: std::collections::HashMap<Key, Cel> = self
            .registers
            .iter()
            .map(|(id, r)| {
                let entries: std::collections::HashMap<Key, Cel> = r
                    .entries
                    .iter()
                    .map(|(k, e)| {
                        let fields: std::collections::HashMap<Key, Cel> = e
                            .iter()
                            .map(|(f, v)| {
                                (
                                    Key::String(Arc::new(f.clone())),
                                    super::compiled::to_cel(v, r.def.fields.get(f), zone),
                                )
                            })
                            .collect();
                        (Key::String(Arc::new(k.clone())), Cel::Map(fields.into()))
                    })
                    .collect();
                (Key::String(Arc::new(id.clone())), Cel::Map(entries.into()))
            })
            .collect();
        Cel::Map(map.into())
    }
}
