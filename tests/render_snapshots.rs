//! Snapshots of the Mermaid and DOT pictures of every shipped procedure, so a change to the
//! renderer (or to a procedure) shows up as a reviewable diff. After an intended change, run
//! `cargo insta review` (or `INSTA_UPDATE=always cargo test --test render_snapshots`).
//!
//! When Graphviz is installed the DOT text is also fed to `dot`, which must accept it; the
//! Mermaid text is rendered by CI with the Mermaid CLI (see the CI script), too slow here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sopflow::definition::model::Procedure;
use sopflow::definition::render::{dot, mermaid};

fn shipped() -> Vec<(String, Procedure)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("procedures");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("procedures/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no procedures in {}", dir.display());
    paths
        .into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 file name")
                .to_string();
            let text = std::fs::read_to_string(&p).expect("readable procedure");
            let proc: Procedure = toml::from_str(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", p.display()));
            (stem, proc)
        })
        .collect()
}

#[test]
fn mermaid_of_every_shipped_procedure() {
    for (stem, proc) in shipped() {
        insta::assert_snapshot!(format!("{stem}.mmd"), mermaid(&proc));
    }
}

#[test]
fn dot_of_every_shipped_procedure() {
    for (stem, proc) in shipped() {
        insta::assert_snapshot!(format!("{stem}.dot"), dot(&proc));
    }
}

/// Titles, roles, role descriptions, conditions and breach actions holding every character
/// either syntax cares about (and `end note`, which ends a Mermaid note), and step ids that
/// are Mermaid keywords.
const HOSTILE: &str = r#"
id = "hostile"
version = 3
title = "Nasty <b>bold</b> \"q\" {x}: y; #z %% -- --> \\ `tick`"
start = "state"

[roles]
"a:b" = "Role <i>desc</i> \"q\" {x}: y; #z %% -- --> \\ `tick` end note"

[steps.state]
title = """Multi
line "title" with : ; # { } < > & \\ | ` %% --> end"""
role = "a:b"
deadline = { due = "3 days before date; x", on_breach = [{ escalate_to = "b: \"c\" end note" }, { after = "1 day; %% -->", notify = "<n> {x}" }, { take = "ok: fine" }, { after = "end\nnote", take = "bad \"one\"" }] }
outcomes = ["ok: fine", "bad \"one\""]
next = [
  { to = "class", on = "ok: fine", when = "x < 3 && y > 4 || z == \"a;b\" -- %% #1 {2}" },
  { to = "end", on = "bad \"one\"" },
]

[steps.class]
kind = "parallel"
branches = ["direction", "note"]
join = "join"

[steps.direction]
title = "   "
next = [{ to = "join" }]

[steps.note]
kind = "auto"
next = [{ to = "join" }]

[steps.join]
kind = "join"
next = [{ to = "end" }]

[steps.end]
kind = "end"
title = "[*]"
"#;

#[test]
fn hostile_labels_snapshot() {
    let proc: Procedure = toml::from_str(HOSTILE).expect("parses");
    insta::assert_snapshot!("hostile.mmd", mermaid(&proc));
    insta::assert_snapshot!("hostile.dot", dot(&proc));
}

fn graphviz_installed() -> bool {
    let installed = Command::new("dot")
        .arg("-V")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("Graphviz `dot` not installed; skipping");
    }
    installed
}

#[test]
fn graphviz_accepts_every_shipped_procedure_and_hostile_labels_when_installed() {
    if !graphviz_installed() {
        return;
    }
    let hostile: Procedure = toml::from_str(HOSTILE).expect("parses");
    for (stem, proc) in shipped()
        .into_iter()
        .chain([("hostile".to_string(), hostile)])
    {
        let mut child = Command::new("dot")
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dot starts");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(dot(&proc).as_bytes())
                .expect("write to dot");
        }
        let out = child.wait_with_output().expect("dot finishes");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "dot rejected {stem}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
