//! The directory (`org.toml`): its checked-in schema stays in sync with the code, the demo
//! directory is clean and staffs every role of every shipped procedure well enough for their
//! separation-of-duties, sign-off and delegation rules to be satisfiable, and every invalid
//! directory under `tests/fixtures/directory/` is rejected with located errors (snapshots;
//! review changes with `cargo insta review`).
//!
//! To refresh the schema after changing the model:
//! `SOPFLOW_UPDATE_SCHEMAS=1 cargo test --test directory`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sopflow::definition::diagnostic::FileReport;
use sopflow::definition::load::{validate_paths, Options};
use sopflow::definition::model::{DelegationLevel, Procedure};
use sopflow::definition::schema;
use sopflow::directory::{self, Directory, User};

const SCHEMA_PATH: &str = "schemas/directory.schema.json";

fn shipped_procedures() -> Vec<Procedure> {
    let v = validate_paths(&[PathBuf::from("procedures")], &Options::default());
    assert!(v.valid.len() >= 7, "the shipped procedures load");
    v.valid.into_iter().map(|p| p.procedure).collect()
}

fn demo() -> (Directory, FileReport) {
    let (dir, report) = directory::load(Path::new("org.toml"));
    match dir {
        Some(d) => (d, report),
        None => panic!("org.toml does not load:\n{}", report.render_text()),
    }
}

// --- schema ----------------------------------------------------------------------------------

#[test]
fn directory_schema_is_in_sync() {
    let text = schema::to_file_text(directory::directory_schema());
    if std::env::var_os("SOPFLOW_UPDATE_SCHEMAS").is_some() {
        std::fs::write(SCHEMA_PATH, &text).expect("write schema");
        return;
    }
    let on_disk = std::fs::read_to_string(SCHEMA_PATH).unwrap_or_default();
    assert!(
        on_disk == text,
        "{SCHEMA_PATH} is out of date: run `SOPFLOW_UPDATE_SCHEMAS=1 cargo test --test directory` and commit it"
    );
}

#[test]
fn directory_schema_is_draft_07_and_describes_every_key() {
    let s = directory::directory_schema();
    assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
    assert!(!s.to_string().contains("\"null\""), "TOML has no null");
    fn walk(v: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                if p.get("description").is_none() {
                    missing.push(format!("{path}/{k}"));
                }
                walk(p, &format!("{path}/{k}"), missing);
            }
        }
        if let Some(defs) = v.get("definitions").and_then(Value::as_object) {
            for (k, d) in defs {
                walk(d, &format!("#/definitions/{k}"), missing);
            }
        }
    }
    let mut missing = Vec::new();
    walk(s, "", &mut missing);
    assert!(missing.is_empty(), "undescribed keys: {missing:?}");
    let v = directory::directory_validator();
    assert!(!v.is_valid(&serde_json::json!({ "colour": "red" })));
    assert!(v.is_valid(&serde_json::json!({ "users": [] })));
}

// --- the demo directory ----------------------------------------------------------------------

#[test]
fn demo_directory_is_clean_and_has_no_tokens() {
    let (dir, report) = demo();
    assert_eq!(
        report.errors() + report.warnings(),
        0,
        "{}",
        report.render_text()
    );
    let text = std::fs::read_to_string("org.toml").expect("org.toml");
    assert_eq!(
        text.lines().next(),
        Some("#:schema schemas/directory.schema.json")
    );
    assert!(
        dir.users().iter().all(|u| u.token_sha256.is_empty()),
        "no token hashes are committed: the server issues them"
    );
    for api_role in ["auditor", "process_owner", "admin"] {
        assert!(dir.users_with_role(api_role).next().is_some(), "{api_role}");
    }
}

#[test]
fn demo_directory_staffs_every_role_of_every_shipped_procedure() {
    let (dir, mut report) = demo();
    let procedures = shipped_procedures();
    let mut missing = Vec::new();
    for p in &procedures {
        for role in p.roles.keys() {
            if dir.users_with_role(role).next().is_none() {
                missing.push(format!("{}: {role}", p.id));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "roles without an active holder: {missing:?}"
    );
    assert!(directory::check_procedures(&dir, &procedures).is_empty());
    // Every declared role is one a procedure uses, or one of the API's.
    let used: HashSet<&str> = procedures
        .iter()
        .flat_map(|p| p.roles.keys().map(String::as_str))
        .chain(["auditor", "process_owner", "admin"])
        .collect();
    let stray: Vec<&String> = dir
        .roles()
        .keys()
        .filter(|r| !used.contains(r.as_str()))
        .collect();
    assert!(stray.is_empty(), "roles no procedure uses: {stray:?}");
    directory::add_procedure_checks(&mut report, &dir, &procedures);
    assert_eq!(report.diagnostics.len(), 0, "{}", report.render_text());
}

/// Whether distinct people can be picked, one from each list (a system of distinct
/// representatives), by trying them all: the lists here are short.
fn distinct_people(pools: &[Vec<&User>], taken: &mut Vec<String>) -> bool {
    let Some((first, rest)) = pools.split_first() else {
        return true;
    };
    for u in first {
        if !taken.contains(&u.id) {
            taken.push(u.id.clone());
            if distinct_people(rest, taken) {
                return true;
            }
            taken.pop();
        }
    }
    false
}

fn holders<'a>(dir: &'a Directory, role: &str) -> Vec<&'a User> {
    dir.users_with_role(role).collect()
}

#[test]
fn demo_directory_can_satisfy_every_joint_sign_off() {
    let (dir, _) = demo();
    let mut checked = 0;
    for p in shipped_procedures() {
        for (id, step) in &p.steps {
            let Some(sig) = &step.signatures else {
                continue;
            };
            // A panel of named people (`assignees`) is whoever the earlier step lists.
            if step.assignees.is_some() {
                continue;
            }
            let roles: Vec<String> = if sig.roles.is_empty() {
                step.role.iter().cloned().collect()
            } else {
                sig.roles.clone()
            };
            let mut pools: Vec<Vec<&User>> = roles.iter().map(|r| holders(&dir, r)).collect();
            let everyone: Vec<&User> = roles.iter().flat_map(|r| holders(&dir, r)).collect();
            // Beyond one per role, the remaining signatures come from any holder.
            while pools.len() < sig.required as usize {
                pools.push(everyone.clone());
            }
            assert!(
                distinct_people(&pools, &mut Vec::new()),
                "{}/{id}: {} different people from {roles:?} cannot be found",
                p.id,
                sig.required
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "the recall and repair sign-offs were checked");
}

#[test]
fn demo_directory_can_satisfy_every_separation_of_duties() {
    let (dir, _) = demo();
    let mut checked = 0;
    for p in shipped_procedures() {
        for (id, step) in &p.steps {
            let Some(sep) = &step.separation else {
                continue;
            };
            // Steps that must be done by different people, each by a holder of its role.
            let mut pools: Vec<Vec<&User>> = Vec::new();
            for s in std::iter::once(id).chain(&sep.not_same_person_as) {
                if let Some(role) = p.steps.get(s).and_then(|s| s.role.as_deref()) {
                    pools.push(holders(&dir, role));
                }
            }
            if pools.len() > 1 {
                assert!(distinct_people(&pools, &mut Vec::new()), "{}/{id}", p.id);
                checked += 1;
            }
            // An audit team of a leader and a member from outside any audited department.
            if sep.not_from_department.is_some() {
                let role = step.role.as_deref().unwrap_or("audit_team");
                for dept in dir.departments().keys() {
                    let outside = holders(&dir, role)
                        .into_iter()
                        .filter(|u| !dir.user_in_department(&u.id, dept))
                        .count();
                    assert!(
                        outside >= 2,
                        "{}/{id}: auditing {dept} needs two evaluators from elsewhere",
                        p.id
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 5);
}

#[test]
fn demo_directory_has_a_delegate_for_every_same_or_above_approver() {
    let (dir, _) = demo();
    let mut checked = 0;
    for p in shipped_procedures() {
        for (id, step) in &p.steps {
            let Some(del) = &step.delegation else {
                continue;
            };
            let Some(role) = step.role.as_deref() else {
                continue;
            };
            let to_roles: Vec<&str> = if del.to_roles.is_empty() {
                vec![role]
            } else {
                del.to_roles.iter().map(String::as_str).collect()
            };
            for approver in dir.users_with_role(role) {
                let delegate = to_roles
                    .iter()
                    .flat_map(|r| dir.users_with_role(r))
                    .find(|d| {
                        d.id != approver.id
                            && (del.level == DelegationLevel::Any || d.level >= approver.level)
                    });
                assert!(
                    delegate.is_some(),
                    "{}/{id}: nobody to delegate to for {}",
                    p.id,
                    approver.id
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 2);
}

#[test]
fn demo_directory_lookups() {
    let (dir, _) = demo();
    assert!(dir.holds("zhao.gang", "general_manager"));
    assert_eq!(dir.level_of("zhao.gang"), Some(5));
    assert_eq!(dir.department_of("han.xue"), Some("marketing_office"));
    assert!(dir.user_in_department("han.xue", "marketing"));
    assert!(!dir.user_in_department("yao.jie", "marketing_office"));
    // Someone who left keeps their record but is offered nothing.
    assert!(dir.user("shi.lan").is_some_and(|u| !u.active));
    assert!(!dir.holds("shi.lan", "follow_up"));
    let raters: HashSet<&str> = ["customer_service", "marketing_office", "marketing_manager"]
        .iter()
        .flat_map(|r| dir.users_with_role(r))
        .map(|u| u.id.as_str())
        .collect();
    assert!(raters.len() >= 3);
}

// --- invalid directories ---------------------------------------------------------------------

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/directory")
        .expect("fixture directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn there_are_invalid_directory_fixtures_for_each_kind_of_mistake() {
    let stems: Vec<String> = fixtures()
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    for needed in [
        "unknown-role",
        "unknown-department",
        "duplicate-user",
        "bad-token-hash",
        "parent-cycle",
        "unknown-key",
    ] {
        assert!(
            stems.iter().any(|s| s == needed),
            "missing fixture {needed}"
        );
    }
}

#[test]
fn each_invalid_directory_is_rejected_with_located_errors() {
    for path in fixtures() {
        let (dir, report) = directory::load(&path);
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        assert!(dir.is_none(), "{} should be rejected", path.display());
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
        insta::assert_snapshot!(format!("directory__{stem}"), report.render_text());
    }
}

#[test]
fn a_pasted_token_is_never_repeated_in_a_message() {
    let (_, report) = directory::load(Path::new("tests/fixtures/directory/plaintext-token.toml"));
    assert!(report
        .diagnostics
        .iter()
        .any(|d| d.code == "bad-token-hash"));
    for d in &report.diagnostics {
        let said = format!("{} {:?} {:?}", d.message, d.label, d.help);
        assert!(!said.contains("deadbeef"), "{said}");
    }
}

#[test]
fn a_missing_file_is_reported_not_panicked() {
    let (dir, report) = directory::load(Path::new("tests/fixtures/directory/no-such-file.toml"));
    assert!(dir.is_none());
    assert_eq!(
        report.diagnostics.first().map(|d| d.code),
        Some("unreadable-file")
    );
}

#[test]
fn json_diagnostics_of_a_directory_carry_line_and_column() {
    let (_, report) = directory::load(Path::new("tests/fixtures/directory/unknown-role.toml"));
    let json = report.to_json();
    assert_eq!(
        json.first().map(|d| d["code"].clone()),
        Some(Value::from("unknown-role"))
    );
    assert_eq!(
        json.first().map(|d| d["line"].clone()),
        Some(Value::from(18))
    );
    assert_eq!(
        json.first().map(|d| d["help"].clone()),
        Some(Value::from("did you mean `quality`?"))
    );
}

#[test]
fn a_file_that_is_not_utf8_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("org.toml");
    std::fs::write(&path, b"title = \"\xff\"\n").expect("write");
    let (d, report) = directory::load(&path);
    assert!(d.is_none());
    assert_eq!(report.diagnostics.first().map(|d| d.code), Some("not-utf8"));
    assert!(report.diagnostics[0].span.is_some());
}

mod no_input_panics {
    use proptest::prelude::*;
    use sopflow::directory;

    /// Lines of the demo directory, shuffled, dropped, duplicated and mangled: whatever
    /// comes out, loading reports instead of panicking, and every error is located.
    fn demo_lines() -> Vec<String> {
        std::fs::read_to_string("org.toml")
            .expect("org.toml")
            .lines()
            .map(str::to_string)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn mangled_demo_directories_are_reported(
            picks in proptest::collection::vec((0usize..400, 0u8..6, "[a-z\\[\\]=\" .0-9]{0,12}"), 1..120)
        ) {
            let lines = demo_lines();
            let mut text = String::new();
            for (i, how, noise) in picks {
                let line = &lines[i % lines.len()];
                match how {
                    0 => {}
                    1 => text.push_str(&line.replace('"', "")),
                    2 => text.push_str(&noise),
                    3 => { text.push_str(line); text.push_str(&noise); }
                    _ => text.push_str(line),
                }
                text.push('\n');
            }
            let (dir, report) = directory::load_text("mangled.toml", &text);
            prop_assert_eq!(dir.is_some(), report.errors() == 0);
            prop_assert!(report.diagnostics.iter().filter(|d| d.is_error()).all(|d| d.span.is_some()));
            let _ = report.render_text();
        }

        #[test]
        fn arbitrary_text_is_reported(text in "\\PC{0,300}") {
            let (dir, report) = directory::load_text("any.toml", &text);
            prop_assert_eq!(dir.is_some(), report.errors() == 0);
        }
    }
}
