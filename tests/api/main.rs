//! The HTTP API (`sopflow serve`) from the outside: each test starts its own server on a
//! free port with its own data directory and talks to it over HTTP only.
//!
//! - `audit`: the audit trail endpoints (queries, verification, who may call them);
//! - `harness`: the server, the client, and the checks every reply must pass (no 5xx,
//!   request ids, problem bodies for every 4xx);
//! - `limits`: one command's work bounded before it is done (procedures that start each
//!   other), refused at once with the store unchanged;
//! - `matrix`: the role × endpoint authorization matrix, cell by cell, with the proof that a
//!   refused write changed nothing;
//! - `deadlines`: overdue from the due instant, reminders that reach people (also every
//!   day until done), `take` sparing a claimed task, no comments on ended instances;
//! - `errors`: every error status the API gives, and malformed input of every kind;
//! - `hostile`: a barrage of hostile requests, each a 4xx that leaves the store
//!   byte-for-byte unchanged;
//! - `people`: users and departments in data checked against the directory, and a person
//!   designated for later steps checked against those steps' separation rules;
//! - `races`: claim, complete, delegate and cancel racing for one task: one winner where
//!   they exclude each other, 409 for every loser, a history that matches the winners;
//! - `readme`: the README's first `curl` commands, read from README.md and sent as written;
//! - `scenarios`: procedures end to end (complaint with a deadline breach, internal
//!   evaluation with its corrective actions, delegation, multi-signature, notifications,
//!   worklist filters);
//! - `web`: the web app as a browser without JavaScript uses it: sign-in and its cookie,
//!   security headers, CSRF, escaping, the API's refusals with nothing changed, refused
//!   forms shown again, the auditor's downloads.

mod audit;
mod changes;
mod deadlines;
mod errors;
mod harness;
mod hostile;
mod limits;
mod matrix;
mod once;
mod people;
mod races;
mod readme;
mod scenarios;
mod web;
