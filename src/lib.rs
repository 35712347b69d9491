//! sopflow
pub mod clock;
pub mod definition;
pub mod directory;
pub mod engine;
pub mod scheduler;
pub mod store;
