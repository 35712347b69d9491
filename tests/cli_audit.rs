//! The auditors' commands of the `sopflow` binary on a real data directory: `export`
//! round-trips the stored events in both formats and stays quiet when piped; `audit`
//! filters; `verify` passes an intact store and names the event someone changed.

mod common;

use common::cli::{first_task, out, run};

use std::process::Output;
use std::sync::Arc;

use sopflow::audit::{ExportLine, CSV_HEADER};
use sopflow::clock::SystemClock;
use sopflow::engine::instance::Event;

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", out(&o));
    o
}

/// Two complaints, one registered; returns the data directory.
fn store_with_history() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for customer in ["Hengxin", "Dalian Port"] {
        let o = ok(run(
            &[
                "start",
                "complaint-handling",
                "--as",
                "xu.na",
                "--data",
                &format!(r#"{{"customer":"{customer}","contact":"Li"}}"#),
            ],
            d,
        ));
        if customer == "Hengxin" {
            let t = first_task(&o);
            ok(run(
                &[
                    "complete",
                    &t,
                    "--as",
                    "xu.na",
                    "--form",
                    r#"{"channel":"hotline","complaint":"Late repair","severity":"general","first_answer":"We will call back today","received_at":"2026-11-02T08:30:00Z"}"#,
                    "--comment",
                    "Called the customer back",
                ],
                d,
            ));
        }
    }
    dir
}

/// Every stored event of every instance, with its hash, read through the library.
fn stored(d: &std::path::Path) -> Vec<(uuid::Uuid, u64, String, Event)> {
    let engine = sopflow::setup::open_existing(d, Arc::new(SystemClock)).unwrap();
    let mut out = Vec::new();
    // The instances and the deployments history: `export` writes every history.
    let mut ids = engine.instances(None, None, None, 100).unwrap().items;
    ids.push(sopflow::engine::deploy::ledger_id());
    for id in ids {
        let hashes = engine.store().history(id, 1, 1000).unwrap();
        for (ev, h) in engine.history(id).unwrap().into_iter().zip(hashes) {
            out.push((id, ev.seq, sopflow::store::chain::hex(&h.hash), ev));
        }
    }
    out.sort_by_key(|(id, seq, _, ev)| (ev.at, *id, *seq));
    out
}

use sopflow::store::Store as _;

#[test]
fn export_round_trips_in_both_formats() {
    let dir = store_with_history();
    let d = dir.path();
    let want = stored(d);
    assert!(want.len() >= 6, "{} events", want.len());

    // JSON Lines to a pipe: only data on stdout, nothing on stderr (no progress display).
    let o = ok(run(&["export", "--format", "jsonl"], d));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<ExportLine> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one event"))
        .collect();
    let got: Vec<_> = lines
        .iter()
        .map(|l| (l.instance, l.seq, l.hash.clone(), l.event.clone()))
        .collect();
    assert_eq!(got, want);

    // CSV to a file: the readable columns, and the last column decodes to the stored event.
    let file = d.join("export.csv");
    let o = ok(run(
        &["export", "--format", "csv", "-o", file.to_str().unwrap()],
        d,
    ));
    assert!(out(&o).contains(&format!("exported {} events", want.len())));
    let mut reader = csv::Reader::from_path(&file).unwrap();
    assert_eq!(
        reader.headers().unwrap(),
        &csv::StringRecord::from(CSV_HEADER.to_vec())
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), want.len());
    for (row, (id, seq, hash, ev)) in rows.iter().zip(&want) {
        assert_eq!(row[0], id.to_string());
        assert_eq!(row[2], seq.to_string());
        assert_eq!(row[4], *ev.kind.name());
        assert_eq!(row[15], *hash);
        let decoded: Event = serde_json::from_str(&row[16]).unwrap();
        assert_eq!(&decoded, ev);
    }
    let completion = rows
        .iter()
        .find(|r| &r[4] == "task_completed")
        .expect("the registration is exported");
    assert_eq!(&completion[5], "xu.na");
    assert_eq!(&completion[10], "register");
    assert_eq!(&completion[14], "Called the customer back");

    // Filters apply to exports too.
    let o = ok(run(
        &["export", "--kind", "task_completed", "--actor", "xu.na"],
        d,
    ));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
}

#[test]
fn audit_lists_filtered_events_and_refuses_bad_filters() {
    let dir = store_with_history();
    let d = dir.path();
    let o = ok(run(&["audit", "--actor", "xu.na", "--json"], d));
    let page: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["started", "task_completed", "started"]);
    assert!(page["next"].is_null());

    // Paging: one at a time, following the printed cursor.
    let o = ok(run(&["audit", "--actor", "xu.na", "--limit", "2"], d));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let cursor = stdout
        .lines()
        .find_map(|l| l.strip_prefix("more: --cursor "))
        .expect("a cursor line")
        .to_string();
    let o = ok(run(&["audit", "--actor", "xu.na", "--cursor", &cursor], d));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);

    // Time window in the future: nothing.
    let o = ok(run(&["audit", "--from", "2999-01-01"], d));
    assert!(out(&o).contains("no events match"));

    for (args, says) in [
        (vec!["audit", "--kind", "completed"], "not an event kind"),
        (vec!["audit", "--from", "March"], "not a time"),
        (
            vec!["audit", "--from", "2026-03-02", "--to", "2026-03-01"],
            "must be before",
        ),
        (vec!["audit", "--cursor", "zz"], "not a cursor"),
    ] {
        let o = run(&args, d);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", out(&o));
        assert!(out(&o).contains(says), "{args:?}: {}", out(&o));
        assert_eq!(out(&o).lines().count(), 1, "one line: {}", out(&o));
    }
}

#[test]
fn verify_finds_a_changed_byte_and_names_the_event() {
    let dir = store_with_history();
    let d = dir.path();
    let o = ok(run(&["verify"], d));
    assert!(
        out(&o).contains("every hash chain is intact"),
        "{}",
        out(&o)
    );

    // Change one byte of the content of one stored event, as someone with file access could.
    let (instance, seq, hash) = {
        let all = stored(d);
        let (id, seq, hash, _) = all
            .iter()
            .find(|(_, _, _, e)| e.kind.name() == "task_completed")
            .unwrap()
            .clone();
        (id, seq, hash)
    };
    {
        let db = sled::open(d).unwrap();
        let events = db.open_tree("events").unwrap();
        let mut key = instance.as_bytes().to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        let mut value = events.get(&key).unwrap().unwrap().to_vec();
        // Past the 32-byte link: "Late repair" becomes "Late repais".
        let at = value.windows(11).position(|w| w == b"Late repair").unwrap() + 10;
        value[at] = b's';
        events.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let o = run(&["verify"], d);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let said = out(&o);
    // Two instances and the deployments history.
    assert!(said.contains("BROKEN: 1 of 3 instances"), "{said}");
    assert!(said.contains(&format!("instance  {instance}")), "{said}");
    assert!(said.contains(&format!("event     {seq}")), "{said}");
    assert!(said.contains(&format!("found     {hash}")), "{said}");
    assert!(said.contains("changed after it was written"), "{said}");
    let o = run(&["verify", "--json"], d);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["first_break"]["instance"], instance.to_string());
    assert_eq!(v["first_break"]["seq"], seq);
    assert_eq!(v["first_break"]["found"], hash);
    assert_ne!(v["first_break"]["expected"], hash);
}

#[test]
fn auditor_commands_refuse_a_directory_without_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    for cmd in ["verify", "audit", "export"] {
        let o = run(&[cmd], &missing);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", out(&o));
        assert!(out(&o).contains("there is no sopflow store"), "{}", out(&o));
        assert!(!missing.exists(), "{cmd} must not create a store");
    }
}

/// `sopflow store copy`, which takes no `--data-dir`.
fn store_copy(from: &str, to: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args(["store", "copy", "--from", from, "--to", to])
        .output()
        .expect("sopflow runs")
}

fn dump_of(d: &std::path::Path) -> sopflow::store::Dump {
    let engine = sopflow::setup::open_existing(d, Arc::new(SystemClock)).unwrap();
    engine.store().dump().unwrap()
}

#[test]
fn a_store_is_copied_whole_verified_and_never_into_a_full_one() {
    let dir = store_with_history();
    let d = dir.path();
    let to = tempfile::tempdir().unwrap();
    let copy = to.path().join("copy");
    let (from_s, copy_s) = (d.to_str().unwrap(), copy.to_str().unwrap());
    let o = ok(store_copy(from_s, copy_s));
    assert!(out(&o).contains("copied and verified"), "{}", out(&o));
    assert_eq!(dump_of(&copy), dump_of(d), "every tree identical");
    ok(run(&["verify"], &copy));
    // Into a store that holds instances: refused, and it is left as it was.
    let before = dump_of(&copy);
    let o = store_copy(from_s, copy_s);
    assert!(!o.status.success());
    assert!(out(&o).contains("copy into an empty store"), "{}", out(&o));
    assert_eq!(dump_of(&copy), before);
    // From a directory without a store: refused.
    let o = store_copy(to.path().join("nothing").to_str().unwrap(), copy_s);
    assert!(!o.status.success(), "{}", out(&o));

    // To PostgreSQL and back, when a database is at hand.
    let Ok(admin) = std::env::var("SOPFLOW_TEST_POSTGRES") else {
        eprintln!("SOPFLOW_TEST_POSTGRES is not set: the copy to PostgreSQL is not tested");
        return;
    };
    let name = format!("sopflow_t_{}", uuid::Uuid::now_v7().simple());
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    let sql = |q: String| {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.batch_execute(&q).unwrap();
    };
    sql(format!("CREATE DATABASE {name}"));
    let o = store_copy(from_s, &url);
    let back = to.path().join("back");
    let o2 = store_copy(&url, back.to_str().unwrap());
    sql(format!("DROP DATABASE {name} WITH (FORCE)"));
    assert!(o.status.success(), "{}", out(&o));
    assert!(o2.status.success(), "{}", out(&o2));
    assert_eq!(
        dump_of(&back),
        dump_of(d),
        "sled → PostgreSQL → sled changes nothing"
    );
}
