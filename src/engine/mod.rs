//! The engine: procedures compiled for running, and the pure core that decides what a
//! command does to an instance.
pub mod compiled;
pub mod decide;
pub mod instance;
mod register_starts;
pub mod registers;
pub mod roster;
pub mod service;
mod timers;
