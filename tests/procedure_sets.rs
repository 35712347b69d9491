//! Checks that span several procedures: a file validated against the registered procedures
//! (`validate_text`, what `POST /v1/procedures/validate` does) or beside its sibling files
//! (`validate_paths`) is judged with the others in view.

use std::collections::HashSet;
use std::path::PathBuf;

use sopflow::definition::load::{validate_paths, validate_text, Options};
use sopflow::definition::model::Procedure;

/// A procedure `id` whose step `go` starts one `child` per item (with `extra` on that step).
fn starter(id: &str, child: &str, extra: &str) -> String {
    format!(
        r#"id = "{id}"
version = 1
title = "T"
start = "go"
[roles]
clerk = "Clerk"
[data]
items = {{ type = "list", items = {{ type = "string" }} }}
[steps.go]
kind = "subprocess"
procedure = "{child}"
for_each = "items"
{extra}
next = [{{ to = "done" }}]
[steps.done]
kind = "end"
"#
    )
}

fn parse(text: &str) -> Procedure {
    toml::from_str(text).expect("a well-formed procedure")
}

fn codes(v: &sopflow::definition::load::Validation) -> Vec<(String, &'static str)> {
    v.reports
        .iter()
        .flat_map(|r| r.diagnostics.iter().map(move |d| (r.path.clone(), d.code)))
        .collect()
}

fn calendars() -> HashSet<String> {
    HashSet::from(["default".to_string()])
}

#[test]
fn a_text_that_closes_a_cycle_with_registered_procedures_is_refused() {
    // `b` is registered and starts `a`; the new `a` starts `b`.
    let b = parse(&starter("b", "a", ""));
    let v = validate_text("a.toml", &starter("a", "b", ""), &[b], &calendars());
    assert_eq!(codes(&v), [("a.toml".to_string(), "child-cycle")]);
    let d = &v.reports[0].diagnostics[0];
    assert!(d.message.contains("(a → b → a)"), "{}", d.message);
    let at = &v.reports[0].source[d.span.clone().expect("located")];
    assert_eq!(at, "\"b\"");

    // Through a third registered procedure too.
    let b = parse(&starter("b", "c", ""));
    let c = parse(&starter("c", "a", ""));
    let v = validate_text("a.toml", &starter("a", "b", ""), &[b, c], &calendars());
    assert_eq!(codes(&v), [("a.toml".to_string(), "child-cycle")]);
    assert!(v.reports[0].diagnostics[0]
        .message
        .contains("(a → b → c → a)"));
}

#[test]
fn a_registered_older_version_of_the_same_procedure_does_not_hide_the_new_one() {
    // The registry holds an `a` starting `b`; the new text of `a` starts itself.
    let old = parse(&starter("a", "b", ""));
    let b = parse(&starter("b", "c", ""));
    let v = validate_text("a.toml", &starter("a", "a", ""), &[old, b], &calendars());
    assert_eq!(codes(&v), [("a.toml".to_string(), "child-cycle")]);
}

#[test]
fn a_bounded_cycle_is_accepted() {
    let b = parse(&starter("b", "a", ""));
    let v = validate_text(
        "a.toml",
        &starter("a", "b", "max_depth = 5"),
        &[b],
        &calendars(),
    );
    assert_eq!(codes(&v), []);
    assert_eq!(v.valid.len(), 1);
}

#[test]
fn sibling_files_in_a_cycle_are_each_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (id, child) in [("a", "b"), ("b", "a"), ("c", "a")] {
        std::fs::write(
            dir.path().join(format!("{id}.toml")),
            starter(id, child, ""),
        )
        .expect("written");
    }
    let opts = Options {
        calendars_dir: Some(PathBuf::from("calendars")),
        registers_dir: None,
        coverage_from: None,
    };
    // The whole directory: both files on the cycle, not `c`, which only leads into it.
    let v = validate_paths(&[dir.path().to_path_buf()], &opts);
    let mut found: Vec<(String, &'static str)> = codes(&v)
        .into_iter()
        .map(|(p, c)| {
            let name = PathBuf::from(p)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            (name, c)
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("a.toml".to_string(), "child-cycle"),
            ("b.toml".to_string(), "child-cycle")
        ]
    );
    // One file alone still sees its siblings.
    let v = validate_paths(&[dir.path().join("b.toml")], &opts);
    assert_eq!(v.errors(), 1, "{:?}", codes(&v));
}
