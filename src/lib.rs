//! sopflow
pub mod definition;
