//! Registers in a command: the `register` value expressions read (the book as it is, with
//! this command's own writes applied), and a step's `writes` turned into `register_written`
//! events — checked against the register's fields first, so a write that does not fit
//! refuses the command instead of recording a bad entry.

use super::*;

impl<'a> Run<'a> {
    /// The registers as CEL sees them in this command.
    pub(super) fn register_value(&self) -> Cel {
        self.register_cel
            .get_or_init(|| {
                if self.writes.is_empty() {
                    return self.registers.to_cel(self.zone());
                }
                let mut book = self.registers.clone();
                for w in &self.writes {
                    book.apply(w);
                }
                book.to_cel(self.zone())
            })
            .clone()
    }

    /// Records the entries step `id` sets, from the instance data as it is now (after the
    /// step's form and computed values).
    pub(super) fn write_registers(&mut self, id: &str) -> Result<(), EngineError> {
        let Some((_, compiled)) = self.proc.step(id) else {
            return Ok(());
        };
        for w in &compiled.writes {
            let Some(def) = self.registers.def(&w.register).cloned() else {
                return Err(EngineError::Guard(format!(
                    "step `{id}` writes the register `{}`, which is not loaded",
                    w.register
                )));
            };
            let data = self.s.data.clone();
            let key = match self.eval(&w.key, &data, None, None, None) {
                Ok(Cel::String(k)) if !k.trim().is_empty() => k.to_string(),
                Ok(other) => {
                    return Err(EngineError::Guard(format!(
                        "the key of the `{}` entry written by `{id}` is {other:?}, not a text",
                        w.register
                    )))
                }
                Err(e) => {
                    return Err(EngineError::Guard(format!(
                        "the key of the `{}` entry written by `{id}`: {e}",
                        w.register
                    )))
                }
            };
            let mut values = Map::new();
            for (field, program) in &w.set {
                let v = self.eval(program, &data, None, None, None).map_err(|e| {
                    EngineError::Guard(format!("`{field}` of `{}`: {e}", w.register))
                })?;
                let json = match def.fields.get(field) {
                    Some(f) => crate::engine::compiled::coerce_to(f, from_cel(&v), self.zone()),
                    None => from_cel(&v),
                };
                values.insert(field.clone(), json);
            }
            if let Some(validator) = FormValidator::for_updates(&def.fields) {
                let problems = validator.check(&values);
                if let Some(p) = problems.first() {
                    return Err(EngineError::Guard(format!(
                        "step `{id}` cannot set `{}` of the `{}` entry `{key}`: {}",
                        p.field, w.register, p.message
                    )));
                }
            }
            self.emit(
                None,
                EventKind::RegisterWritten {
                    register: w.register.clone(),
                    key: key.clone(),
                    values: values.clone(),
                },
            );
            self.register_cel = std::cell::OnceCell::new();
            self.writes.push(EntryWrite {
                register: w.register.clone(),
                key,
                values,
            });
        }
        Ok(())
    }
}
