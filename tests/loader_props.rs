//! Property tests: whatever bytes a process owner saves, loading returns diagnostics and
//! never panics. Mutations of the shipped procedures reach deep into every layer (schema,
//! meaning, graph, soundness) in a way purely random text would not.

use std::collections::HashSet;
use std::path::PathBuf;

use proptest::prelude::*;
use sopflow::definition::load::{validate_paths, validate_text, validate_text_with, Options};
use sopflow::definition::model::Procedure;

type Shipped = (
    Vec<(String, String)>,
    Vec<Procedure>,
    HashSet<String>,
    Vec<std::sync::Arc<sopflow::definition::register::RegisterFile>>,
);

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
    (
        texts,
        procs,
        HashSet::from(["default".to_string()]),
        v.registers.clone(),
    )
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
        let (texts, procs, calendars, registers) = shipped();
        let (path, text) = &texts[which % texts.len()];
        let mutated = edits.iter().fold(text.clone(), |t, e| apply(&t, e));
        let v = validate_text_with(path, &mutated, procs, calendars, registers);
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
    let (_, procs, calendars, registers) = shipped();
    for text in [
        "",
        "\n",
        "#:schema ../schemas/procedure.schema.json\n# to do\n",
    ] {
        let v = validate_text_with("empty.toml", text, procs, calendars, registers);
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

/// Codes of the schema layer: what a misspelt key of the format can cause by itself.
const SCHEMA_CODES: &[&str] = &[
    "unknown-key",
    "missing-key",
    "wrong-type",
    "not-a-choice",
    "out-of-range",
    "empty-value",
    "bad-id",
    "schema",
];

/// Every key of the format in the shipped procedures misspelt, and every text value given a
/// number, one at a time: the schema error is reported, and the meaning checks that now run
/// after schema errors do not restate it (the shipped files have no other mistakes, so any
/// other error would be a restatement).
#[test]
fn a_schema_error_in_a_shipped_procedure_is_reported_once() {
    let (texts, procs, calendars, registers) = shipped();
    let mut tried = 0;
    for (path, text) in texts {
        let lines: Vec<&str> = text.lines().collect();
        let mut table = String::new();
        let mut in_string = false;
        for (n, line) in lines.iter().enumerate() {
            if line.matches("\"\"\"").count() % 2 == 1 {
                in_string = !in_string;
                continue;
            }
            if in_string {
                continue;
            }
            if let Some(header) = line.strip_prefix('[') {
                table = header.trim_end_matches(']').to_string();
                continue;
            }
            // Names the author chose (roles, start data fields) are not keys of the format.
            let last = table.rsplit('.').next().unwrap_or_default();
            if matches!(last, "roles" | "data" | "input" | "compute") {
                continue;
            }
            let key_len = line
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(0);
            if key_len < 2 || !line[key_len..].starts_with([' ', '.']) {
                continue;
            }
            // The key misspelt; and a text value replaced by a number.
            let mut edits = vec![("misspelt", format!("{}{}", &line[..1], &line[2..]))];
            if let Some((key, value)) = line.split_once(" = ") {
                let plain_text = value.len() > 1
                    && value.starts_with('"')
                    && value.ends_with('"')
                    && value.matches('"').count() == 2;
                if plain_text {
                    edits.push(("given a number", format!("{key} = 7")));
                }
            }
            for (what, edited) in edits {
                let mut mutated: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                mutated[n] = edited;
                let mutated = mutated.join("\n");
                let v = validate_text_with(path, &mutated, procs, calendars, registers);
                let report = &v.reports[0];
                let codes: Vec<&str> = report
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| d.code)
                    .collect();
                assert!(
                    !codes.is_empty() && codes.iter().all(|c| SCHEMA_CODES.contains(c)),
                    "{path}:{}: `{}` {what} gives {codes:?}\n{}",
                    n + 1,
                    &line[..key_len],
                    report.render_text()
                );
                tried += 1;
            }
        }
    }
    assert!(tried > 500, "only {tried} edits tried");
}
