//! The `sopflow` binary as a process owner and CI use it: exit codes, `file:line:column`
//! in the output, JSON output, the schema command, and graphs that Graphviz renders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sopflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args(args)
        .output()
        .expect("sopflow runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn validate_shipped_procedures_exits_zero() {
    // In 2026 (its first day to its last) every holiday is officially known.
    let o = sopflow(&["validate", "procedures/", "--today", "2026-01-01"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("0 errors, 0 warnings"),
        "{}",
        stdout(&o)
    );
}

/// From December 2026 the coming year's holidays are provisional, and past 2028 they are
/// missing: `validate` says so (a warning, so the exit status stays 0).
#[test]
fn validate_warns_about_a_calendar_not_covering_the_coming_year() {
    let o = sopflow(&["validate", "procedures/", "--today", "2026-12-06"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("warning[calendar-provisional]"),
        "{}",
        stdout(&o)
    );
    let o = sopflow(&["validate", "procedures/", "--today", "2028-06-01"]);
    assert!(
        stdout(&o).contains("warning[calendar-not-covering]"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("lists no holidays for 2029"),
        "{}",
        stdout(&o)
    );
    let o = sopflow(&["validate", "procedures/", "--today", "next week"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
}

#[test]
fn validate_defaults_to_the_procedures_directory() {
    let o = sopflow(&["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn each_invalid_fixture_exits_one_naming_file_line_and_column() {
    for path in toml_files("tests/fixtures/invalid") {
        let p = path.to_str().expect("utf-8 path");
        let o = sopflow(&["validate", p]);
        assert_eq!(o.status.code(), Some(1), "{p}: {}", stdout(&o));
        let out = stdout(&o);
        let located = out.lines().any(|l| {
            l.strip_prefix(p)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|rest| {
                    let mut parts = rest.splitn(3, ':');
                    parts.next().is_some_and(|n| n.parse::<u32>().is_ok())
                        && parts.next().is_some_and(|n| n.parse::<u32>().is_ok())
                })
        });
        assert!(located, "{p}: no `file:line:column` line in\n{out}");
    }
}

#[test]
fn warnings_fail_only_when_denied() {
    for path in toml_files("tests/fixtures/warnings") {
        let p = path.to_str().expect("utf-8 path");
        assert_eq!(sopflow(&["validate", p]).status.code(), Some(0), "{p}");
        assert_eq!(
            sopflow(&["validate", "--deny-warnings", p]).status.code(),
            Some(1),
            "{p}"
        );
    }
}

#[test]
fn json_format_gives_the_same_diagnostics_for_tools() {
    let o = sopflow(&[
        "validate",
        "--format",
        "json",
        "tests/fixtures/invalid/unknown-role.toml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let file = v["files"]
        .as_array()
        .and_then(|f| {
            f.iter()
                .find(|f| f["path"] == "tests/fixtures/invalid/unknown-role.toml")
        })
        .expect("the file is reported");
    let d = &file["diagnostics"][0];
    assert_eq!(d["code"], "unknown-role");
    assert!(d["line"].as_u64().is_some_and(|l| l > 1));
    assert!(d["column"].as_u64().is_some());
    assert_eq!(v["errors"].as_u64(), Some(1));
}

#[test]
fn a_missing_path_is_an_error_not_a_crash() {
    let o = sopflow(&["validate", "no/such/dir"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("no/such/dir"));
}

#[test]
fn schema_command_prints_the_checked_in_schemas() {
    let o = sopflow(&["schema"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        std::fs::read_to_string("schemas/procedure.schema.json").expect("schema file")
    );
    let o = sopflow(&["schema", "calendar"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        std::fs::read_to_string("schemas/calendar.schema.json").expect("schema file")
    );
}

#[test]
fn graph_by_id_and_by_file() {
    for path in toml_files("procedures") {
        let id = path.file_stem().and_then(|s| s.to_str()).expect("stem");
        let m = sopflow(&["graph", id, "--format", "mermaid"]);
        assert_eq!(
            m.status.code(),
            Some(0),
            "{id}: {}",
            String::from_utf8_lossy(&m.stderr)
        );
        assert!(stdout(&m).contains("\nstateDiagram-v2\n"), "{id}");
        let d = sopflow(&["graph", path.to_str().expect("utf-8"), "--format", "dot"]);
        assert_eq!(d.status.code(), Some(0), "{id}");
        assert!(stdout(&d).starts_with("digraph"), "{id}");
    }
}

#[test]
fn graph_of_an_invalid_file_shows_its_errors() {
    let o = sopflow(&[
        "graph",
        "tests/fixtures/invalid/unknown-step.toml",
        "--format",
        "dot",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown-step"));
}

#[test]
fn graph_of_an_unknown_procedure_says_so() {
    let o = sopflow(&["graph", "no-such-procedure"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-procedure"));
}

/// DOT output must render with Graphviz. `.ci/run` installs Graphviz, so in CI this always
/// runs; on a machine without `dot` it fails with the install command rather than passing.
#[test]
fn dot_output_renders_with_graphviz() {
    let has_dot = Command::new("dot").arg("-V").output().is_ok();
    assert!(
        has_dot,
        "Graphviz is needed: apt-get install -y graphviz (see README)"
    );
    for path in toml_files("procedures") {
        let d = sopflow(&["graph", path.to_str().expect("utf-8"), "--format", "dot"]);
        let mut child = Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("dot starts");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&d.stdout)
            .expect("write dot");
        let out = child.wait_with_output().expect("dot finishes");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: dot said {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    }
    let _ = Path::new("procedures");
}

/// Found while writing the loader's fuzz target: a file that is not UTF-8 was reported at 1:1
/// with "Failed to read contents … OutOfBounds" where the offending line should be.
#[test]
fn a_file_that_is_not_utf8_is_shown_at_its_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"id = \"x\"\ntitle = \"Beschwerde f\xfcr Kunden\"\n").unwrap();
    let o = sopflow(&["validate", path.to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("latin1.toml:2:22: error[not-utf8]"), "{out}");
    assert!(
        out.contains("title = \"Beschwerde f\u{FFFD}r Kunden\""),
        "{out}"
    );
    assert!(!out.contains("Failed to read"), "{out}");
}

/// A PostgreSQL store that cannot be opened is one line and exit 2: a pool size outside
/// 1–256 (refused, not silently replaced), and a database nobody answers at.
#[test]
fn a_bad_pool_size_or_an_unreachable_database_is_one_line() {
    let run = |pool: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sopflow"));
        c.args(["verify", "--store", "postgres://nobody@127.0.0.1:1/none"]);
        match pool {
            Some(p) => c.env("SOPFLOW_PG_CONNECTIONS", p),
            None => c.env_remove("SOPFLOW_PG_CONNECTIONS"),
        };
        c.env_remove("SOPFLOW_STORE");
        c.output().expect("sopflow runs")
    };
    for (pool, says) in [
        (
            Some("0"),
            "SOPFLOW_PG_CONNECTIONS is `0`: give a number of connections from 1 to 256",
        ),
        (Some("lots"), "SOPFLOW_PG_CONNECTIONS is `lots`"),
        (None, "cannot reach PostgreSQL at nobody@127.0.0.1:1/none"),
    ] {
        let o = run(pool);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{pool:?}: {err}");
        assert!(err.contains(says), "{pool:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
