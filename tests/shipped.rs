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
        v.valid.len() >= 27,
        "expected the 27 shipped procedures, got {}",
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

/// internal-evaluation designates the audit team leader in a form and assigns seven later
/// steps to them. With the field optional every one of those steps could open for nobody:
/// the validator must say so, once, at the first of them.
#[test]
fn internal_evaluation_needs_its_team_leader_for_certain() {
    use sopflow::definition::load::validate_text;
    use std::collections::HashSet;

    let path = "procedures/internal-evaluation.toml";
    let text = std::fs::read_to_string(path).expect("readable");
    let others = validate_paths(&[PathBuf::from("procedures")], &Options::default());
    let others: Vec<_> = others.valid.into_iter().map(|v| v.procedure).collect();
    let calendars = HashSet::from(["default".to_string()]);
    let clean = validate_text(path, &text, &others, &calendars);
    assert_eq!(clean.errors(), 0);

    let optional = text.replace(
        r#"form.team_leader = { type = "user", title = "Audit team leader", required = true }"#,
        r#"form.team_leader = { type = "user", title = "Audit team leader" }"#,
    );
    assert_ne!(
        optional, text,
        "the team leader field is where the test expects it"
    );
    let v = validate_text(path, &optional, &others, &calendars);
    let report = &v.reports[0];
    let codes: Vec<&str> = report.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["field-may-be-empty"], "{}", report.render_text());
    let d = &report.diagnostics[0];
    assert!(
        d.message
            .starts_with("step `notify_department` is for the person named in `team_leader`"),
        "{}",
        d.message
    );
    let help = d.help.as_deref().unwrap_or_default();
    assert!(help.contains("in the form of `designate_team`"), "{help}");
    assert!(help.contains("`confirm_rectification`"), "{help}");
}

/// Every shipped procedure is proved sound — from every reachable state an end can be
/// reached, no join waits forever, no end is reached beside running work — within the
/// explorer's bound, not merely "not found unsound": `soundness-unproven` would be a warning.
#[test]
fn every_shipped_procedure_is_proved_sound() {
    use sopflow::definition::soundness;
    use sopflow::definition::source::SpannedDoc;
    let v = validate_paths(&[PathBuf::from("procedures")], &Options::default());
    assert!(v.valid.len() >= 27, "{} procedures", v.valid.len());
    for p in &v.valid {
        let doc = SpannedDoc::parse(&p.source).expect("parses");
        let found = soundness::check(&p.procedure, &doc);
        assert!(found.is_empty(), "{}: {found:?}", p.path);
    }
}
