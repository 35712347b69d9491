//! Registers through the engine: the customer rating written by the assessment and read by
//! repair dispatch for the AAA 24-hour green channel (seed 003 §4.2), the warranty register
//! starting each renewal notice before the warranty ends (seed 004 rule (12)) exactly once
//! per end date, writes that do not fit refused with nothing written, and the book rebuilt
//! from the histories when the store is opened again.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{json, Value};
use sopflow::definition::load::{validate_paths, validate_text_with, Options};
use sopflow::engine::decide::EngineError;
use sopflow::engine::instance::{Actor, EventKind, Instance, Status};
use sopflow::engine::service::Engine;
use sopflow::store::memory::MemoryStore;
use sopflow::store::sled_store::{SledOptions, SledStore};
use sopflow::store::Store;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .expect("valid time")
}

fn cole() -> Actor {
    person("cole", "after_sales", &["customer_service"], 2)
}
fn mona() -> Actor {
    person("mona", "marketing", &["marketing_office"], 2)
}
fn mike() -> Actor {
    person("mike", "marketing", &["marketing_manager"], 4)
}

/// Rates `customer` with the three criteria as given; returns the ended assessment.
async fn rate<S: Store>(e: &Engine<S>, customer: &str, all_a: bool) -> Instance {
    let inst = e
        .start(
            "customer-rating-assessment",
            obj(json!({ "customer": customer, "contract_number": "HT-1", "period": "2027 H1" })),
            Some(&mona()),
        )
        .await
        .unwrap();
    let inst = complete(
        e,
        &inst,
        "rate_safety",
        &cole(),
        None,
        json!({ "safety_protection_effective": true, "safety_management_sound": true,
                "inspection_records_complete": all_a, "equipment_intact": true, "safety_notes": "ok" }),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "rate_accessories",
        &mona(),
        None,
        json!({ "uses_original_accessories": true, "only_key_components": false, "months_without_original_purchase": 1 }),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "rate_integrity",
        &mike(),
        None,
        json!({ "responds_timely": true, "pays_as_agreed": true, "collection_enforced": false }),
    )
    .await
    .unwrap();
    if all_a {
        complete(
            e,
            &inst,
            "grant_benefits",
            &mike(),
            None,
            json!({ "green_channel_enabled": true, "priority_accessories": true, "thank_you_letter_sent": true,
                    "exchange_conference_invited": true, "dedicated_team": ["cole", "mona", "mike"] }),
        )
        .await
        .unwrap()
    } else {
        inst
    }
}

#[tokio::test]
async fn a_rating_is_written_to_the_register_and_recorded_in_the_history() {
    let (e, _) = engine().await;
    // Seeded from registers/customers.toml: Hengxin is AAA from the last round.
    assert_eq!(
        e.registers()
            .entry("customers", "Hengxin Lifting")
            .map(|v| v["aaa"].clone()),
        Some(json!(true))
    );
    let inst = rate(&e, "Hengxin Lifting", false).await;
    assert_eq!(inst.status, Status::Completed);
    let entry = e
        .registers()
        .entry("customers", "Hengxin Lifting")
        .cloned()
        .unwrap();
    assert_eq!(entry["aaa"], json!(false));
    assert_eq!(entry["a_count"], json!(2));
    assert_eq!(entry["period"], json!("2027 H1"));
    assert_eq!(
        entry["rated_on"],
        json!("2026-11-02"),
        "a date, in the calendar's zone"
    );
    let written = e
        .history(inst.id)
        .unwrap()
        .into_iter()
        .find_map(|ev| match ev.kind {
            EventKind::RegisterWritten { register, key, .. } => Some((register, key)),
            _ => None,
        })
        .expect("the write is an event of the rating's history");
    assert_eq!(written, ("customers".into(), "Hengxin Lifting".into()));
    // A customer not rated before gets an entry.
    rate(&e, "Dongfang Port", true).await;
    assert_eq!(
        e.registers()
            .entry("customers", "Dongfang Port")
            .map(|v| v["aaa"].clone()),
        Some(json!(true))
    );
}

/// The repair order up to the technician's arrival step.
async fn dispatched<S: Store>(e: &Engine<S>, customer: &str) -> Instance {
    let sam = person("sam", "sales", &["sales"], 2);
    let fiona = person("fiona", "after_sales", &["follow_up"], 2);
    let alan = person("alan", "after_sales", &["after_sales"], 3);
    let tom = person("tom", "after_sales", &["after_sales"], 2);
    let inst = e
        .start(
            "repair-dispatch",
            obj(json!({ "customer": customer, "contact": "Li", "equipment": "QD20" })),
            Some(&fiona),
        )
        .await
        .unwrap();
    let inst = complete(
        e,
        &inst,
        "register_call",
        &fiona,
        None,
        json!({ "call_received_at": "2026-11-02T08:00:00Z", "call_channel": "hotline", "call_summary": "Hoist stops" }),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "record_order",
        &sam,
        None,
        json!({ "fault_cause": "Unknown", "occurred_at": "2026-11-02T07:00:00Z", "fault_nature": "Electrical",
                "fault_category": "electrical", "fault_location": "Hoist", "impact": "reduced_operation",
                "user_measures": "None", "in_warranty": true, "emergency": false }),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "remote_guidance",
        &alan,
        Some("site_visit_needed"),
        json!({ "guidance_given": "Checked the fuses by phone" }),
    )
    .await
    .unwrap();
    let inst = complete(
        e,
        &inst,
        "dispatch",
        &alan,
        None,
        json!({ "technician": "tom", "dispatch_number": "D-1", "fault_type": "Electrical",
                "tools": ["meter"], "spare_parts": [{ "part": "Contactor", "quantity": 1, "vulnerable": false }] }),
    )
    .await
    .unwrap();
    complete(
        e,
        &inst,
        "inform_arrival",
        &tom,
        None,
        json!({ "estimated_arrival": "2026-11-02T15:00:00Z" }),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn an_aaa_customer_gets_a_technician_within_24_hours_of_the_call() {
    let (e, _) = engine().await;
    let inst = dispatched(&e, "Hengxin Lifting").await;
    assert_eq!(inst.data["aaa_customer"], json!(true));
    let t = task_at(&inst, "arrive_aaa");
    assert_eq!(
        t.due,
        Some(at("2026-11-03T08:00:00Z")),
        "24h after the call"
    );
    // Not AAA (rated AA last round), and a customer the register does not know: 7 days.
    for customer in ["Xiangtan Steel Works", "Nobody Known Ltd"] {
        let inst = dispatched(&e, customer).await;
        assert_eq!(inst.data["aaa_customer"], json!(false), "{customer}");
        assert_eq!(open_steps(&inst), ["arrive_normal"], "{customer}");
    }
    // Re-rated without AAA: the green channel ends with the next order.
    rate(&e, "Hengxin Lifting", false).await;
    let inst = dispatched(&e, "Hengxin Lifting").await;
    assert_eq!(open_steps(&inst), ["arrive_normal"]);
}

#[tokio::test]
async fn each_warranty_end_starts_one_renewal_notice_twenty_days_ahead() {
    let (e, clock) = engine().await;
    let started = |e: &Engine<MemoryStore>| -> Vec<Instance> {
        let page = e
            .instances(Some("warranty-renewal"), None, None, 100)
            .unwrap();
        page.items
            .into_iter()
            .map(|id| e.instance(id).unwrap().unwrap())
            .collect()
    };
    // QD20-0711 ends 2027-06-30: nothing before 2027-06-10.
    e.advance_clock(&clock, at("2027-06-09T12:00:00Z"))
        .await
        .unwrap();
    assert!(started(&e).is_empty());
    e.advance_clock(&clock, at("2027-06-10T12:00:00Z"))
        .await
        .unwrap();
    let notices = started(&e);
    assert_eq!(notices.len(), 1);
    let notice = &notices[0];
    assert_eq!(notice.data["serial_number"], json!("QD20-0711"));
    assert_eq!(notice.data["warranty_end"], json!("2027-06-30"));
    assert_eq!(notice.data["customer"], json!("Hengxin Lifting"));
    // The mark is written in the same commit, in the notice's own history.
    let history = e.history(notice.id).unwrap();
    assert!(
        matches!(&history[1].kind, EventKind::RegisterWritten { key, .. } if key == "QD20-0711")
    );
    assert_eq!(
        e.registers().entry("warranties", "QD20-0711").unwrap()["notice_started_for"],
        json!("2027-06-30")
    );
    // More passes start nothing more.
    e.fire_due().await.unwrap();
    e.advance_clock(&clock, at("2027-06-12T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(started(&e).len(), 1);
    // The user renews: the new end goes into the register and starts the next notice.
    let after_sales = person("alan", "after_sales", &["after_sales"], 3);
    let err = refused(
        &e,
        notice,
        "notify_user",
        &after_sales,
        Some("renewed"),
        json!({ "notified_on": "2027-06-12", "notice_channel": "telephone", "user_reply": "Renews" }),
    )
    .await;
    assert!(
        matches!(&err, EngineError::InvalidForm(p) if p[0].field == "new_warranty_end"),
        "{err:?}"
    );
    let done = complete(
        &e,
        notice,
        "notify_user",
        &after_sales,
        Some("renewed"),
        json!({ "notified_on": "2027-06-12", "notice_channel": "telephone", "user_reply": "Renews",
                "new_warranty_end": "2028-06-30" }),
    )
    .await
    .unwrap();
    assert_eq!(done.end_step.as_deref(), Some("renewed"));
    assert_eq!(
        e.registers().entry("warranties", "QD20-0711").unwrap()["warranty_end"],
        json!("2028-06-30")
    );
    e.advance_clock(&clock, at("2028-06-11T12:00:00Z"))
        .await
        .unwrap();
    let renewed: Vec<_> = started(&e)
        .into_iter()
        .filter(|i| i.data["serial_number"] == json!("QD20-0711"))
        .collect();
    assert_eq!(renewed.len(), 2, "one notice per end date");
}

const BAD_WRITE: &str = r#"
id = "bad-write"
version = 1
title = "Writes a text into a number"
start = "record"
[roles]
clerk = "Clerk"
[data]
customer = { type = "string", required = true }
[steps.record]
role = "clerk"
form.count = { type = "string", required = true }
next = [{ to = "save" }]
[steps.save]
kind = "auto"
writes = [{ register = "customers", key = "customer", set = { a_count = "count" } }]
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;

#[tokio::test]
async fn a_write_that_does_not_fit_the_register_is_refused_and_writes_nothing() {
    let (e, _) = engine().await;
    let v = validate_paths(
        &[std::path::PathBuf::from("procedures")],
        &Options::default(),
    );
    // The validator says so when the type is known…
    let checked = validate_text_with(
        "bad-write.toml",
        BAD_WRITE,
        &[],
        &HashSet::from(["default".to_string()]),
        &v.registers,
    );
    let codes: Vec<&str> = checked.reports[0]
        .diagnostics
        .iter()
        .map(|d| d.code)
        .collect();
    assert_eq!(
        codes,
        ["wrong-field-type"],
        "{}",
        checked.reports[0].render_text()
    );
    // …and the engine refuses what slips through (a value only known at run time).
    let untyped = BAD_WRITE.replace(
        "set = { a_count = \"count\" }",
        "set = { a_count = \"data.count\" }",
    );
    let checked = validate_text_with(
        "bad-write.toml",
        &untyped,
        &[],
        &HashSet::from(["default".to_string()]),
        &v.registers,
    );
    assert_eq!(checked.errors(), 0, "{}", checked.reports[0].render_text());
    e.register(&checked.valid).await.unwrap();
    let clerk = person("cy", "office", &["clerk"], 2);
    let inst = e
        .start(
            "bad-write",
            obj(json!({ "customer": "Hengxin Lifting" })),
            Some(&clerk),
        )
        .await
        .unwrap();
    let err = refused(
        &e,
        &inst,
        "record",
        &clerk,
        None,
        json!({ "count": "many" }),
    )
    .await;
    assert!(
        matches!(&err, EngineError::Guard(m) if m.contains("a_count")),
        "{err:?}"
    );
    assert_eq!(
        e.registers().entry("customers", "Hengxin Lifting").unwrap()["a_count"],
        json!(3)
    );
}

#[tokio::test]
async fn the_register_is_rebuilt_from_the_histories_when_the_store_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let written: Value;
    {
        let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
        let (e, _) = engine_on(store).await;
        rate(&e, "Hengxin Lifting", false).await;
        rate(&e, "Dongfang Port", true).await;
        written = json!(e
            .registers()
            .entries("customers")
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), Value::Object(v.clone())))
            .collect::<serde_json::Map<_, _>>());
    }
    let store = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    let (e, _) = engine_on(store).await;
    let again = json!(e
        .registers()
        .entries("customers")
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), Value::Object(v.clone())))
        .collect::<serde_json::Map<_, _>>());
    assert_eq!(again, written);
    assert_eq!(again["Hengxin Lifting"]["aaa"], json!(false));
}

#[test]
fn a_broken_register_file_is_reported_where_it_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("procedures")).unwrap();
    std::fs::create_dir_all(dir.path().join("registers")).unwrap();
    std::fs::write(
        dir.path().join("registers/units.toml"),
        r#"id = "units"
title = "Units"
key = "Serial"
[fields]
warranty_end = { type = "date", required = true }
[[entries]]
key = "A-1"
warranty_end = "next year"
[[entries]]
key = "A-1"
warranty_end = "2027-01-01"
"#,
    )
    .unwrap();
    let v = validate_paths(&[dir.path().join("procedures")], &Options::default());
    let report = v
        .reports
        .iter()
        .find(|r| r.path.ends_with("units.toml"))
        .expect("the register is checked");
    let text = report.render_text();
    let codes: Vec<&str> = report.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["bad-entry", "duplicate-id"], "{text}");
    assert!(
        text.contains("units.toml:8:"),
        "located at the bad value: {text}"
    );
    assert!(v.registers.is_empty());
}
