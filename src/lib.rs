//! sopflow: a workflow engine for an organisation's control procedures, written as TOML
//! state graphs. The library is everything; `src/cli/` is only the command line over it.
//!
//! Layout, from the outside in:
//! - `definition` — procedure and calendar files: model, loader, the three validation
//!   layers, soundness, graph rendering. Reads files, never writes; never prints.
//! - `directory` — the people: departments, roles, users, API token hashes (`org.toml`).
//! - `engine` — compiled procedures, the pure core (`decide`, `Instance::apply`) and the
//!   `Engine` service that runs commands against a store.
//! - `store` — the `Store` trait, the sled store with group commit, the memory store.
//! - `outbox` — messages events cause (webhooks, mail): routed into the commit of their
//!   event, delivered afterwards by a background sender with retries; decides nothing.
//! - `scheduler` — fires deadline timers and recurring starts through the engine.
//! - `report` — figures computed from histories (service KPIs over a period); reads only.
//! - `clock` — the only place the system time is read.
//! - `setup` — opening directory, procedures, store and engine for a process.
//! - `audit` — the auditor's queries and exports over the hash-chained histories.
//! - `http` — `sopflow serve`: the axum API, authentication, role rules, problem+json
//!   errors, metrics and the OpenAPI document. Maps requests to engine commands only.
//! - `web` — the web app served at `/`: pages over the API's own handlers, sessions, CSRF,
//!   server-drawn pictures and charts. Decides nothing the API does not.
//!
//! Rules live in `engine::decide`; nothing outside it decides what a command does.
pub mod audit;
pub mod clock;
pub mod definition;
pub mod directory;
pub mod engine;
pub mod http;
pub mod outbox;
pub mod reload;
pub mod report;
pub mod scheduler;
pub mod setup;
pub mod store;
pub mod web;
