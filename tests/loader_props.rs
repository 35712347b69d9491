//! Property tests: whatever bytes a process owner saves, loading returns diagnostics and
//! never panics. Mutations of the shipped procedures reach deep into every layer (schema,
//! meaning, graph, soundness) in a way purely random text would not.

use std::collections::HashSet;
use std::path::PathBuf;

use proptest::prelude::*;
use sopflow::definition::load::{validate_paths, validate_text, Options};
use sopflow::definition::model::Procedure;

type Shipped = (Vec<(String, String)>, Vec<Procedure>, HashSet<String>);

fn shipped() -> &'static Shipped {
    static SHIPPED: std::sync::OnceLock<Shipped> = std::sync::OnceLock::new();
    SHIPPED.get_or_init(load_shipped)
}

fn load_shipped() -> Shipped {
    let v = validate_paths(&[PathBuf::from("procedures")], &Options::default());
    let texts = v
        .valid
        .iter()
        .map(|p| {
            (
                p.path.clone(),
                std::fs::read_to_string(&p.path).expect("readable"),
            )
        })
        .collect();
    let procs = v.valid.iter().map(|p| p.procedure.clone()).collect();
    (texts, procs, HashSet::from(["default".to_string()]))
}

/// One edit a person might make by accident.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    DeleteChar(usize),
    InsertChar(usize, char),
    SwapLines(usize, usize),
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let n = lines.len().max(1);
    match edit {
        Edit::DeleteLine(i) => {
            if !lines.is_empty() {
                lines.remove(i % n);
            }
            lines.join("\n")
        }
        Edit::DuplicateLine(i) => {
            if let Some(l) = lines.get(i % n).copied() {
                lines.insert(i % n, l);
            }
            lines.join("\n")
        }
        Edit::SwapLines(a, b) => {
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
            lines.join("\n")
        }
        Edit::DeleteChar(i) => {
            let mut chars: Vec<char> = text.chars().collect();
            if !chars.is_empty() {
                let at = i % chars.len();
                chars.remove(at);
            }
            chars.into_iter().collect()
        }
        Edit::InsertChar(i, c) => {
            let mut chars: Vec<char> = text.chars().collect();
            let at = i % (chars.len() + 1);
            chars.insert(at, *c);
            chars.into_iter().collect()
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        any::<usize>().prop_map(Edit::DeleteChar),
        (
            any::<usize>(),
            prop::sample::select(vec![
                '"', '[', ']', '{', '}', '=', '\n', 'x', '0', '#', '\'', '.', 'é'
            ])
        )
            .prop_map(|(i, c)| Edit::InsertChar(i, c)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let v = validate_text("x.toml", &text, &[], &HashSet::new());
        prop_assert_eq!(v.reports.len(), 1);
    }

    #[test]
    fn mutated_shipped_procedures_never_panic(which in 0usize..64, edits in prop::collection::vec(edit(), 1..4)) {
        let (texts, procs, calendars) = shipped();
        let (path, text) = &texts[which % texts.len()];
        let mutated = edits.iter().fold(text.clone(), |t, e| apply(&t, e));
        let v = validate_text(path, &mutated, procs, calendars);
        let report = &v.reports[0];
        // Every error a mutation causes is located in the file.
        for d in report.diagnostics.iter().filter(|d| d.is_error()) {
            prop_assert!(d.span.is_some(), "unlocated error {:?} in\n{}", d, mutated);
        }
    }
}

/// Found by `cargo fuzz run loader`: a file with no keys (empty, or only comments) reported
/// its missing keys without a location.
#[test]
fn a_file_without_keys_gets_located_errors() {
    let (_, procs, calendars) = shipped();
    for text in [
        "",
        "\n",
        "#:schema ../schemas/procedure.schema.json\n# to do\n",
    ] {
        let v = validate_text("empty.toml", text, procs, calendars);
        assert_eq!(v.reports.len(), 1);
        let report = &v.reports[0];
        assert!(report.errors() > 0, "{text:?}");
        for d in report.diagnostics.iter().filter(|d| d.is_error()) {
            assert!(d.span.is_some(), "unlocated error {d:?} in {text:?}");
        }
        assert!(report.render_text().contains("missing the required key"));
        assert!(!report.to_json().is_empty());
    }
}
