//! The engine: procedures compiled for running, and the pure core that decides what a
//! command does to an instance.
pub mod changes;
pub mod compiled;
pub mod decide;
pub mod deploy;
pub mod instance;
pub mod migrate;
pub mod once;
mod register_starts;
pub mod registers;
pub mod roster;
pub mod service;
mod timers;
