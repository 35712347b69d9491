//! The reloader's part in messages: reading the webhooks file again when it changed (a
//! file with an error keeps the subscriptions in force) and giving the engine routes built
//! from the file's subscriptions and the directory's people. The subscriptions made over
//! the API are not the reloader's (`outbox::stored`); it leaves them as they are.

use super::*;

impl<S: Store> Reloader<S> {
    /// Reads the webhooks file again if it changed: a file with an error leaves the
    /// subscriptions in force unchanged (and is shown as refused until fixed).
    pub(super) fn rescan_webhooks(&self, mem: &mut Memory, report: &mut ReloadReport) {
        let Some(path) = &self.sources.webhooks else {
            return;
        };
        let hash = load::hash_hex(&std::fs::read(path).unwrap_or_default());
        if mem.webhooks.as_deref() == Some(hash.as_str()) {
            return;
        }
        mem.webhooks = Some(hash);
        let (hooks, file) = crate::outbox::hooks::load(path, &|v| std::env::var(v).ok());
        match hooks {
            Some(hooks) => {
                mem.webhooks_refused = None;
                mem.hooks = hooks;
                tracing::info!(subscriptions = mem.hooks.len(), "webhooks file read");
            }
            None => {
                let problem = FileProblem {
                    file: path.display().to_string(),
                    problems: file.error_lines(),
                };
                tracing::warn!(file = %problem.file, problems = ?problem.problems, "webhooks file refused; the subscriptions already in force stay");
                report.refused.push(problem.clone());
                mem.webhooks_refused = Some(problem);
            }
        }
    }

    /// Gives the engine routes built from the subscriptions and people in force now.
    pub(super) fn apply_routes(&self, mem: &Memory) {
        let people = self
            .people
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mail = self.routes.mail.then(|| {
            crate::outbox::MailRoutes::from_directory(&people, self.engine.default_zone())
        });
        // The subscriptions made over the API are kept as they are (`outbox::stored`).
        self.engine.update_routes(|r| {
            r.hooks = mem.hooks.clone();
            r.mail = mail;
            r.public_url = self.routes.public_url.clone();
        });
    }
}
