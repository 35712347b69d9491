//! Snapshot tests of the rendered diagnostics: one invalid procedure per mistake a process
//! owner can make (`tests/fixtures/invalid/`), and the warning-only ones
//! (`tests/fixtures/warnings/`). Review changes with `cargo insta review`.

use std::path::{Path, PathBuf};

use sopflow::definition::load::{validate_paths, Options};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixture directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn options() -> Options {
    Options {
        calendars_dir: Some(PathBuf::from("calendars")),
        registers_dir: None,
        coverage_from: None,
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn there_are_at_least_25_invalid_fixtures() {
    assert!(fixtures("tests/fixtures/invalid").len() >= 25);
}

#[test]
fn each_invalid_fixture_is_rejected_with_a_located_error() {
    for path in fixtures("tests/fixtures/invalid") {
        // Validate the file alone: its siblings are other broken fixtures, not context.
        let v = validate_paths(std::slice::from_ref(&path), &options());
        let report = v
            .reports
            .iter()
            .find(|r| Path::new(&r.path) == path)
            .expect("a report for the file");
        assert!(
            report.errors() > 0,
            "{} should have an error",
            path.display()
        );
        assert!(
            report
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .all(|d| d.span.is_some()),
            "{}: every error must point at a place in the file",
            path.display()
        );
        insta::assert_snapshot!(format!("invalid__{}", stem(&path)), report.render_text());
    }
}

#[test]
fn each_warning_fixture_warns_without_failing() {
    for path in fixtures("tests/fixtures/warnings") {
        let v = validate_paths(std::slice::from_ref(&path), &options());
        let report = v
            .reports
            .iter()
            .find(|r| Path::new(&r.path) == path)
            .expect("a report for the file");
        assert_eq!(
            report.errors(),
            0,
            "{}: {}",
            path.display(),
            report.render_text()
        );
        assert!(report.warnings() > 0, "{} should warn", path.display());
        insta::assert_snapshot!(format!("warning__{}", stem(&path)), report.render_text());
    }
}

#[test]
fn json_diagnostics_carry_line_and_column() {
    let path = PathBuf::from("tests/fixtures/invalid/unknown-key.toml");
    let v = validate_paths(std::slice::from_ref(&path), &options());
    let report = v
        .reports
        .iter()
        .find(|r| Path::new(&r.path) == path)
        .expect("report");
    let json = report.to_json();
    insta::assert_json_snapshot!("json__unknown-key", json);
}
