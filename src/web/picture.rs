//! The procedure picture: a procedure's state graph drawn as SVG on the server (layout-rs),
//! with each step marked — where an instance is now, where it has been, how many instances
//! wait at a step and how many were late there (the process owner's heat map).
//! It must draw only presentation attributes (no `style` attributes or `<style>` elements, which
//! the web app's Content-Security-Policy forbids) and escape every label.

use std::collections::HashMap;

use crate::definition::model::Procedure;

/// How one step is marked in the picture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepMark {
    /// An open task of the instance is at this step.
    pub current: bool,
    /// The instance has been here (a task of it completed at this step, or it passed an
    /// automatic step).
    pub visited: bool,
    /// Instances waiting at this step now (heat map); 0 draws no badge.
    pub waiting: u64,
    /// Times this step was late (breaches) in the period shown; 0 draws no badge.
    pub late: u64,
}

/// The SVG picture of `proc`, steps marked by `marks` (steps without a mark are plain).
pub fn procedure_svg(proc: &Procedure, marks: &HashMap<String, StepMark>) -> String {
    let _ = (proc, marks);
    todo!("written by the picture helper")
}
