//! Fuzzes the procedure loader: whatever bytes a process owner saves, `validate_text`
//! returns exactly one report, never panics, and locates every error in the file.
//!
//! The shipped procedures and calendars are loaded once as context, so references to child
//! procedures and calendars resolve the way they do in production. Seed the corpus with the
//! shipped procedures (see README, "Fuzzing the loader").

#![no_main]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sopflow::definition::load::{validate_paths, validate_text, Options};
use sopflow::definition::model::Procedure;

struct Context {
    procedures: Vec<Procedure>,
    calendars: HashSet<String>,
}

fn context() -> &'static Context {
    static CONTEXT: OnceLock<Context> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("procedures");
        // The calendars come from `procedures/../calendars`, as in production.
        let v = validate_paths(&[dir.clone()], &Options::default());
        assert!(
            !v.valid.is_empty(),
            "no valid shipped procedures found in {}",
            dir.display()
        );
        Context {
            procedures: v.valid.iter().map(|p| p.procedure.clone()).collect(),
            calendars: v.calendars.iter().map(|c| c.id().to_string()).collect(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // The loader accepts bytes only through file paths (`validate_paths`), which would
    // mean a file write per input; its not-UTF-8 check comes before any parsing, so only
    // UTF-8 input reaches the layers worth fuzzing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = context();
    let v = validate_text("fuzz.toml", text, &ctx.procedures, &ctx.calendars);
    assert_eq!(v.reports.len(), 1, "expected exactly one report");
    let report = &v.reports[0];
    for d in report.diagnostics.iter().filter(|d| d.is_error()) {
        let span = d
            .span
            .as_ref()
            .unwrap_or_else(|| panic!("unlocated error {d:?}"));
        assert!(
            span.start <= span.end && span.end <= text.len(),
            "error span {span:?} outside the file ({} bytes): {d:?}",
            text.len()
        );
    }
});
