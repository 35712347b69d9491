//! `sopflow serve` refusing to start, as an operator meets it: a data directory written by
//! another format, a damaged store, a store another process holds, a missing directory
//! file, a procedure file that cannot be read as text or was changed without raising its
//! version, a port in use. Each is a plain reason on stderr, every sentence said once, and
//! exit status 2 — never a panic, never a server on a store it cannot trust. And what it
//! writes while running: logs without colour codes when they go to a pipe, and a clean
//! stop even when nobody reads its output any more.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sopflow::store::sled_store::{SledOptions, SledStore};

fn serve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--no-demo-tokens"])
        .args(args)
        .output()
        .expect("sopflow runs")
}

/// The refusal: status 2, no server started, no panic, and stderr ending in `says`.
fn refused(o: &Output, says: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "stdout: {out}\nstderr: {err}");
    assert!(!out.contains("sopflow serving"), "{out}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(says), "expected {says:?} in:\n{err}");
    err
}

fn one_line(err: &str) {
    assert_eq!(err.trim_end().lines().count(), 1, "one line, got:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
}

#[test]
fn a_store_of_another_format_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("format", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let o = serve(&["--data-dir", dir.path().to_str().unwrap()]);
    let err = refused(&o, "uses store format 99");
    one_line(&err);
    assert!(
        err.contains("open it with the sopflow version that wrote it"),
        "{err}"
    );
}

#[test]
fn a_damaged_store_is_refused_not_replaced_by_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    std::fs::write(dir.path().join("db"), vec![0x5a; 8192]).unwrap();
    let o = serve(&["--data-dir", dir.path().to_str().unwrap()]);
    let err = refused(&o, "damaged or missing");
    one_line(&err);
    assert!(
        !err.contains("another sopflow command"),
        "no misleading hint: {err}"
    );
}

#[test]
fn a_missing_directory_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = serve(&[
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--directory",
        "/nonexistent/org.toml",
    ]);
    refused(&o, "the directory file /nonexistent/org.toml has errors");
}

#[test]
fn a_procedure_file_that_is_not_text_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let procs = dir.path().join("procedures");
    std::fs::create_dir(&procs).unwrap();
    std::fs::write(procs.join("broken.toml"), b"id = \"x\xff\xfe\"\n").unwrap();
    let o = serve(&[
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--procedures",
        procs.to_str().unwrap(),
    ]);
    let err = refused(&o, "the procedures have errors");
    assert!(err.contains("broken.toml:1:"), "located: {err}");
}

#[test]
fn a_port_in_use_is_refused_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args(["serve", "--no-demo-tokens", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = refused(&o, &format!("cannot listen on {addr}"));
    one_line(&err);
    assert_eq!(err.matches("in use").count(), 1, "said once: {err}");
}

#[test]
fn a_store_another_process_holds_is_refused_after_the_lock_wait() {
    let dir = tempfile::tempdir().unwrap();
    let held = SledStore::open(dir.path(), SledOptions::default()).unwrap();
    let o = serve(&["--data-dir", dir.path().to_str().unwrap()]);
    let err = refused(
        &o,
        "is in use by another process (`sopflow serve` or another sopflow command)",
    );
    one_line(&err);
    assert!(
        !err.contains("Os {"),
        "no debug dump of the OS error: {err}"
    );
    drop(held);
}

/// A server still finishing its shutdown holds sled's lock for a moment (seconds, on a
/// big store); the next process waits for it instead of failing the restart.
#[test]
fn a_store_released_during_the_lock_wait_opens() {
    let dir = tempfile::tempdir().unwrap();
    let held = SledStore::open(dir.path(), SledOptions::default()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args(["verify", "--data"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Released well inside the wait, however slow the machine is at starting the child.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(held);
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_data_directory_that_is_a_file_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    let o = serve(&["--data-dir", file.to_str().unwrap()]);
    let err = refused(&o, "is a file; give --data-dir a directory");
    one_line(&err);
}

#[test]
fn a_procedure_file_that_cannot_be_read_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let procs = dir.path().join("procedures");
    std::fs::create_dir(&procs).unwrap();
    for f in std::fs::read_dir("procedures").unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, procs.join(f.file_name().unwrap())).unwrap();
    }
    // A link to nowhere: listed by the directory, unreadable when opened (as root, a
    // mode of 000 would not stop the read).
    std::os::unix::fs::symlink(dir.path().join("gone.toml"), procs.join("gone.toml")).unwrap();
    let o = serve(&[
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--procedures",
        procs.to_str().unwrap(),
        "--calendars",
        "calendars",
    ]);
    let err = refused(&o, "gone.toml");
    assert!(!err.contains("panicked"), "{err}");
}

/// A copy of the shipped procedures and calendars that a test may change.
fn copy_of_the_shipped_files(dir: &Path) {
    for sub in ["procedures", "calendars"] {
        std::fs::create_dir(dir.join(sub)).unwrap();
        for f in std::fs::read_dir(sub).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.join(sub).join(f.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn a_procedure_changed_without_raising_its_version_is_refused_saying_so_once() {
    let dir = tempfile::tempdir().unwrap();
    copy_of_the_shipped_files(dir.path());
    let procs = dir.path().join("procedures");
    let data = dir.path().join("data");
    // Any instance command registers the procedures in the store.
    let o = Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args(["tasks", "--as", "xu.na", "--data-dir"])
        .arg(&data)
        .arg("--procedures")
        .arg(&procs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = procs.join("complaint-handling.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = text.replacen(
        "title = \"Customer complaint handling\"",
        "title = \"Customer complaint handling (changed)\"",
        1,
    );
    assert_ne!(text, changed);
    std::fs::write(&file, changed).unwrap();
    let o = serve(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--procedures",
        procs.to_str().unwrap(),
    ]);
    let sentence = "procedure `complaint-handling` version 2 was changed without raising `version`";
    let err = refused(&o, sentence);
    one_line(&err);
    assert_eq!(err.matches(sentence).count(), 1, "said once: {err}");
    assert!(err.contains("give the changed file `version = 3`"), "{err}");
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-demo-tokens",
            "--data-dir",
        ])
        .arg(dir.path())
        // Whatever the person running the tests has set: colour must be off because
        // stderr is a pipe, not because of NO_COLOR.
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("sopflow serving"));
    assert!(serving, "the server did not start");
    // Keep reading, so the server's last line has somewhere to go.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    // SIGTERM: the server logs its shutdown and exits 0.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(rest.join().unwrap(), vec!["sopflow stopped".to_string()]);
    assert!(
        err.contains("shutting down"),
        "the shutdown is logged: {err}"
    );
    assert!(
        !err.contains("\x1b["),
        "no ANSI escape codes in piped logs: {err:?}"
    );
}

/// `sopflow serve | head -1` (or a supervisor that stops reading): the server's last line
/// has nowhere to go, and the stop must still be clean rather than a panic.
#[test]
fn a_server_whose_stdout_was_closed_still_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-demo-tokens",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let serving = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("sopflow serving"));
    assert!(serving, "the server did not start");
    // The reader is gone now.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
