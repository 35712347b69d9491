//! The shipped procedures and calendars: all clean (no errors, no warnings), each starting
//! with the `#:schema` line editors use for completion.

use std::path::PathBuf;

use sopflow::definition::load::{validate_paths, Options};

#[test]
fn shipped_procedures_and_calendars_validate_clean() {
    let v = validate_paths(&[PathBuf::from("procedures")], &Options::default());
    let text: String = v.reports.iter().map(|r| r.render_text()).collect();
    assert_eq!(v.errors() + v.warnings(), 0, "{text}");
    assert!(
        v.valid.len() >= 7,
        "expected the seven shipped procedures, got {}",
        v.valid.len()
    );
    assert!(
        v.reports.iter().any(|r| r.path.contains("calendars")),
        "calendars are checked too"
    );
}

#[test]
fn every_shipped_file_starts_with_its_schema_line() {
    for (dir, line) in [
        ("procedures", "#:schema ../schemas/procedure.schema.json"),
        ("calendars", "#:schema ../schemas/calendar.schema.json"),
    ] {
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).expect("readable");
                assert_eq!(text.lines().next(), Some(line), "{}", path.display());
            }
        }
    }
}

#[test]
fn shipped_procedures_cite_their_seed_clauses() {
    for entry in std::fs::read_dir("procedures").expect("dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        assert!(
            text.contains("seed 00"),
            "{} cites no seed document",
            path.display()
        );
    }
}
