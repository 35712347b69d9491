//! The instance commands of the `sopflow` binary on a real data directory: start, worklist,
//! refusals that change nothing, complete, delegate, show; and `token issue`.

mod common;

use common::cli::{first_task, out, run};

use std::process::Command;

#[test]
fn a_complaint_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = run(
        &[
            "start",
            "complaint-handling",
            "--as",
            "xu.na",
            "--data",
            r#"{"customer":"Hengxin","contact":"Li"}"#,
        ],
        d,
    );
    assert!(o.status.success(), "{}", out(&o));
    let register = first_task(&o);
    let instance = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .nth(1)
        .expect("instance id")
        .to_string();

    // The follow-up personnel see it; sales do not.
    assert!(out(&run(&["tasks", "--as", "xu.na"], d)).contains(&register));
    assert!(!out(&run(&["tasks", "--as", "liu.yang"], d)).contains(&register));

    // Refused: wrong role, then an invalid form listing every field. Nothing changes.
    let before = out(&run(&["show", &instance], d));
    let o = run(
        &["complete", &register, "--as", "liu.yang", "--form", "{}"],
        d,
    );
    assert!(!o.status.success());
    assert!(out(&o).contains("not allowed"), "{}", out(&o));
    let o = run(
        &[
            "complete",
            &register,
            "--as",
            "xu.na",
            "--form",
            r#"{"severity":"minor"}"#,
        ],
        d,
    );
    assert!(!o.status.success());
    let text = out(&o);
    for field in ["channel", "complaint", "first_answer", "severity"] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
    assert_eq!(before, out(&run(&["show", &instance], d)));

    let form = r#"{"channel":"hotline","complaint":"Brake slips","severity":"general","first_answer":"Engineer calls today","received_at":"2026-11-02T08:30:00Z"}"#;
    let o = run(&["complete", &register, "--as", "xu.na", "--form", form], d);
    assert!(o.status.success(), "{}", out(&o));
    let resolve = first_task(&o);
    assert!(out(&run(&["tasks", "--as", "liu.yang"], d)).contains(&resolve));
    let shown = out(&run(&["show", &instance], d));
    assert!(shown.contains("task_completed"), "{shown}");
    assert!(shown.contains("xu.na"), "{shown}");
}

#[test]
fn a_second_process_cannot_open_a_store_in_use() {
    // Not possible to hold the lock across processes here without a server, so check the
    // message for a directory that is not a store instead.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let o = run(&["tasks", "--as", "xu.na"], &file);
    assert!(!o.status.success());
    assert!(out(&o).contains("not-a-dir"), "{}", out(&o));
}

/// sled lets one process open a store: while `sopflow serve` runs on a data directory, an
/// instance command on it waits for the lock, then says in one line who holds it and what
/// to do instead (README "The command line").
#[test]
fn an_instance_command_while_the_server_runs_says_to_use_the_api_or_stop_it() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-demo-tokens",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("sopflow serving"));
    let o = serving.then(|| run(&["tasks", "--as", "xu.na"], &data));
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    drop(lines);
    let _ = server.wait();
    let o = o.expect("the server started");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for says in [
        "is in use by another process (`sopflow serve` or another sopflow command)",
        "only one process can open it at a time",
        "use the HTTP API instead, or stop the server first",
    ] {
        assert!(err.contains(says), "{says:?} in {err}");
    }
}

#[test]
fn token_issue_prints_a_token_and_only_its_hash_to_store() {
    let o = Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args(["token", "issue", "xu.na"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sopflow_"))
        .expect("a token line")
        .to_string();
    assert!(token.len() >= "sopflow_".len() + 32, "at least 128 bits");
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("token_sha256"))
        .expect("line to store");
    assert!(line.contains(&sopflow::directory::token_hash(&token)));
    assert!(!line.contains(&token));
    let o = Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args(["token", "issue", "nobody"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

/// An ended instance takes no more entries: a comment on a cancelled complaint is refused
/// from the command line as over the API (409), and the history stays as it was.
#[test]
fn a_comment_on_an_ended_instance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = run(
        &[
            "start",
            "complaint-handling",
            "--as",
            "xu.na",
            "--data",
            r#"{"customer":"Hengxin","contact":"Li"}"#,
        ],
        d,
    );
    assert!(o.status.success(), "{}", out(&o));
    let instance = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .nth(1)
        .expect("instance id")
        .to_string();
    let o = run(
        &["comment", &instance, "--as", "xu.na", "Customer called"],
        d,
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = run(
        &[
            "cancel",
            &instance,
            "--as",
            "qian.li",
            "--reason",
            "Duplicate",
        ],
        d,
    );
    assert!(o.status.success(), "{}", out(&o));
    let before = out(&run(&["show", &instance], d));
    let o = run(
        &["comment", &instance, "--as", "xu.na", "One more thing"],
        d,
    );
    assert!(!o.status.success());
    assert!(out(&o).contains("ended"), "{}", out(&o));
    assert_eq!(before, out(&run(&["show", &instance], d)));
}

/// A process owner raises a procedure's version in its file; the operator previews and then
/// applies a migration plan from the command line, and suspends and resumes an instance.
#[test]
fn migrate_and_repair_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let procs = d.join("procedures");
    std::fs::create_dir(&procs).unwrap();
    for f in std::fs::read_dir("procedures").unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, procs.join(p.file_name().unwrap())).unwrap();
    }
    let data = d.join("data");
    let with = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--procedures", procs.to_str().unwrap()]);
        run(&all, &data)
    };
    let o = with(&[
        "start",
        "complaint-handling",
        "--as",
        "xu.na",
        "--data",
        r#"{"customer":"Hengxin","contact":"Li"}"#,
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let instance = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .nth(1)
        .expect("instance id")
        .to_string();
    let file = procs.join("complaint-handling.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("version = 2", "version = 3")).unwrap();
    let plan = d.join("plan.toml");
    std::fs::write(
        &plan,
        "name = \"complaints-v3\"\nprocedure = \"complaint-handling\"\nfrom_version = 2\nto_version = 3\nreason = \"Revised procedure\"\n",
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let o = with(&["migrate", plan, "--as", "xu.na"]);
    assert!(!o.status.success(), "only operators migrate: {}", out(&o));
    let o = with(&["migrate", plan, "--as", "it.admin"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("1 would migrate"), "{}", out(&o));
    let o = with(&["migrate", plan, "--as", "it.admin", "--apply"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains(&format!("{instance}  migrated")),
        "{}",
        out(&o)
    );
    let shown = out(&with(&["show", &instance]));
    assert!(shown.contains("migrated"), "{shown}");
    let o = with(&[
        "suspend",
        &instance,
        "--as",
        "it.admin",
        "--reason",
        "Waiting for the customer",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let o = with(&[
        "resume", &instance, "--as", "it.admin", "--reason", "Answered",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let shown = out(&with(&["show", &instance]));
    assert!(
        shown.contains("suspended") && shown.contains("resumed"),
        "{shown}"
    );
}
