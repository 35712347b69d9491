//! Customer rating driven through the engine (seed 003 customer rating regulation §2, §3.1,
//! §3.2, §4): the half-yearly round lists "all contracted customers" (§2) and starts one
//! `customer-rating-assessment` child per customer; in each child the three criteria —
//! operational safety by customer service (§3.1.1), original accessories by the marketing
//! office (§3.1.2), integrity by the marketing manager (§3.1.3) — are rated in parallel by
//! three different people (separation between parallel siblings, in both directions); AAA
//! when all three are A and not otherwise, with the AAA benefits (§4); the round waits for
//! every child and collects their results, counting the AAA customers. And the rejections
//! that must leave the store untouched.

mod common;

use common::*;
use serde_json::{json, Value};
use sopflow::engine::decide::{Command, EngineError};
use sopflow::engine::instance::{Actor, Instance, Status};
use sopflow::engine::service::{Engine, ServiceError};
use sopflow::store::memory::MemoryStore;
use sopflow::store::Store;

struct Cast {
    /// Marketing office: runs the round.
    maud: Actor,
    /// Customer service (on-site maintenance): rates safety.
    cole: Actor,
    /// Marketing office: rates original accessories.
    mona: Actor,
    /// Marketing manager: rates integrity and grants the AAA benefits.
    mike: Actor,
    /// Customer service who also works in the marketing office: may rate only one criterion.
    dana: Actor,
}

fn cast() -> Cast {
    Cast {
        maud: person("maud", "marketing", &["marketing_office"], 3),
        cole: person("cole", "after_sales", &["customer_service"], 2),
        mona: person("mona", "marketing", &["marketing_office"], 2),
        mike: person("mike", "marketing", &["marketing_manager"], 4),
        dana: person(
            "dana",
            "marketing",
            &["customer_service", "marketing_office"],
            2,
        ),
    }
}

fn safety(a: bool) -> Value {
    json!({
        "safety_protection_effective": true,
        "safety_management_sound": true,
        "inspection_records_complete": a,
        "equipment_intact": true,
        "safety_notes": "Checked during the October maintenance",
    })
}

fn accessories(uses_original: bool, only_key: bool, months_without: u32) -> Value {
    json!({
        "uses_original_accessories": uses_original,
        "only_key_components": only_key,
        "months_without_original_purchase": months_without,
    })
}

fn integrity(responds: bool, pays: bool, enforced: bool) -> Value {
    json!({ "responds_timely": responds, "pays_as_agreed": pays, "collection_enforced": enforced })
}

fn benefits() -> Value {
    json!({
        "green_channel_enabled": true,
        "priority_accessories": true,
        "thank_you_letter_sent": true,
        "exchange_conference_invited": true,
        "dedicated_team": ["cole", "mona", "mike"],
    })
}

const BRANCHES: [&str; 3] = ["rate_accessories", "rate_integrity", "rate_safety"];

/// A child started by hand (the marketing office may), at its three parallel ratings.
async fn assessment(e: &Engine<MemoryStore>, c: &Cast, customer: &str) -> Instance {
    let inst = e
        .start(
            "customer-rating-assessment",
            obj(json!({ "customer": customer, "contract_number": "HT-2026-001", "period": "2027 first half" })),
            Some(&c.maud),
        )
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), BRANCHES);
    inst
}

fn reload(e: &Engine<MemoryStore>, inst: &Instance) -> Instance {
    e.instance(inst.id).unwrap().expect("instance stored")
}

/// The round of two customers: one AAA, one not; the round waits for both and counts.
#[tokio::test]
async fn the_round_rates_each_listed_customer_and_collects_the_results() {
    let (e, _clock) = engine().await;
    let c = cast();
    let round = e
        .start("customer-rating", obj(json!({})), Some(&c.maud))
        .await
        .unwrap();
    assert_eq!(open_steps(&round), ["list_customers"]);
    let round = complete(
        &e,
        &round,
        "list_customers",
        &c.maud,
        None,
        json!({
            "period": "2027 first half",
            "customers": [
                { "customer": "Hengxin Lifting", "contract_number": "HT-2026-001" },
                { "customer": "Dongfang Port", "contract_number": "HT-2026-002" }
            ],
        }),
    )
    .await
    .unwrap();
    // §2: one rating per contracted customer; the round waits with no task of its own.
    assert!(round.tasks.is_empty(), "{:?}", open_steps(&round));
    assert_eq!(round.status, Status::Running);
    let group = round
        .children
        .get("rate_customers")
        .expect("children started");
    assert_eq!(group.procedure, "customer-rating-assessment");
    assert_eq!(group.pending.len(), 2);
    let mut children: Vec<(usize, Instance)> = group
        .pending
        .iter()
        .map(|(id, index)| (*index, e.instance(*id).unwrap().expect("child stored")))
        .collect();
    children.sort_by_key(|(index, _)| *index);
    for (index, child) in &children {
        assert_eq!(child.procedure, "customer-rating-assessment");
        assert_eq!(
            child.parent.as_ref().map(|p| (p.instance, p.index)),
            Some((round.id, *index))
        );
        assert_eq!(child.data["period"], "2027 first half");
        assert_eq!(open_steps(child), BRANCHES);
    }
    assert_eq!(children[0].1.data["customer"], "Hengxin Lifting");
    assert_eq!(children[1].1.data["contract_number"], "HT-2026-002");
    // Each evaluator sees one task per customer.
    assert_eq!(e.tasks_for(&c.cole).unwrap().len(), 2);
    assert_eq!(e.tasks_for(&c.mike).unwrap().len(), 2);

    // Hengxin: A on all three → AAA, benefits granted.
    let hengxin = children[0].1.clone();
    let hengxin = complete(&e, &hengxin, "rate_safety", &c.cole, None, safety(true))
        .await
        .unwrap();
    assert_eq!(open_steps(&hengxin), ["rate_accessories", "rate_integrity"]);
    let hengxin = complete(
        &e,
        &hengxin,
        "rate_accessories",
        &c.mona,
        None,
        accessories(true, false, 1),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&hengxin), ["rate_integrity"]);
    assert_eq!(hengxin.joins.get("rated"), Some(&2));
    let hengxin = complete(
        &e,
        &hengxin,
        "rate_integrity",
        &c.mike,
        None,
        integrity(true, true, false),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&hengxin), ["grant_benefits"]);
    assert_eq!(hengxin.data["is_aaa"], json!(true));
    assert_eq!(hengxin.data["a_count"], json!(3));
    let hengxin = complete(&e, &hengxin, "grant_benefits", &c.mike, None, benefits())
        .await
        .unwrap();
    assert_eq!(hengxin.status, Status::Completed);
    assert_eq!(hengxin.end_step.as_deref(), Some("aaa"));
    assert_eq!(assert_folds(&e, hengxin.id), hengxin);
    // The round still waits for the other customer.
    let waiting = reload(&e, &round);
    assert!(waiting.tasks.is_empty());
    assert_eq!(waiting.status, Status::Running);
    assert_eq!(waiting.children["rate_customers"].pending.len(), 1);
    assert!(waiting.data.get("ratings").is_none());

    // Dongfang: no original parts bought for seven months → accessories not A → not AAA.
    let dongfang = children[1].1.clone();
    let dongfang = complete(
        &e,
        &dongfang,
        "rate_integrity",
        &c.mike,
        None,
        integrity(true, true, false),
    )
    .await
    .unwrap();
    let dongfang = complete(
        &e,
        &dongfang,
        "rate_accessories",
        &c.mona,
        None,
        accessories(true, false, 7),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&dongfang), ["rate_safety"]);
    let dongfang = complete(&e, &dongfang, "rate_safety", &c.cole, None, safety(true))
        .await
        .unwrap();
    assert_eq!(dongfang.status, Status::Completed);
    assert_eq!(dongfang.end_step.as_deref(), Some("not_aaa"));
    assert_eq!(dongfang.data["is_aaa"], json!(false));
    assert_eq!(dongfang.data["accessories_a"], json!(false));
    assert_eq!(dongfang.data["a_count"], json!(2));
    assert_eq!(assert_folds(&e, dongfang.id), dongfang);

    // The round collected both, in list order, each with its end step as `outcome`.
    let round = assert_folds(&e, round.id);
    assert_eq!(round.status, Status::Completed);
    assert_eq!(round.end_step.as_deref(), Some("completed"));
    assert!(round.tasks.is_empty() && round.children.is_empty());
    let ratings = round.data["ratings"].as_array().expect("ratings collected");
    assert_eq!(ratings.len(), 2);
    assert_eq!(ratings[0]["customer"], "Hengxin Lifting");
    assert_eq!(ratings[0]["outcome"], "aaa");
    assert_eq!(ratings[0]["green_channel_enabled"], json!(true));
    assert_eq!(ratings[1]["customer"], "Dongfang Port");
    assert_eq!(ratings[1]["outcome"], "not_aaa");
    assert_eq!(round.data["aaa_count"], json!(1));
    assert_eq!(round.data["rated_count"], json!(2));
    for who in [&c.maud, &c.cole, &c.mona, &c.mike] {
        assert!(
            e.tasks_for(who).unwrap().is_empty(),
            "{} still has work",
            who.id
        );
    }
}

/// §3.1: three different evaluators. Dana may rate safety or accessories, but not both —
/// whichever she does first, the sibling is forbidden to her, on claim and on complete.
#[tokio::test]
async fn one_person_cannot_rate_two_criteria_in_either_order() {
    let (e, _clock) = engine().await;
    let c = cast();

    // Safety first, then accessories.
    let inst = assessment(&e, &c, "Hengxin Lifting").await;
    let inst = complete(&e, &inst, "rate_safety", &c.dana, None, safety(true))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["rate_accessories", "rate_integrity"]);
    let err = refused(
        &e,
        &inst,
        "rate_accessories",
        &c.dana,
        None,
        accessories(true, false, 0),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let t = task_at(&inst, "rate_accessories");
    let before = e.store().dump().unwrap();
    let err = e
        .execute(inst.id, Command::Claim { task: t.id }, Some(&c.dana))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    assert_eq!(before, e.store().dump().unwrap());
    let inst = complete(
        &e,
        &inst,
        "rate_accessories",
        &c.mona,
        None,
        accessories(true, false, 0),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "rate_integrity",
        &c.mike,
        None,
        integrity(true, true, false),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["grant_benefits"]);
    let inst = complete(&e, &inst, "grant_benefits", &c.mike, None, benefits())
        .await
        .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("aaa"));
    assert_eq!(assert_folds(&e, inst.id), inst);

    // Accessories first, then safety.
    let inst = assessment(&e, &c, "Dongfang Port").await;
    let inst = complete(
        &e,
        &inst,
        "rate_accessories",
        &c.dana,
        None,
        accessories(true, false, 0),
    )
    .await
    .unwrap();
    let err = refused(&e, &inst, "rate_safety", &c.dana, None, safety(true)).await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let t = task_at(&inst, "rate_safety");
    let err = e
        .execute(inst.id, Command::Claim { task: t.id }, Some(&c.dana))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let inst = complete(&e, &inst, "rate_safety", &c.cole, None, safety(true))
        .await
        .unwrap();
    assert_eq!(open_steps(&inst), ["rate_integrity"]);
    assert_eq!(inst.done_by["rate_safety"], ["cole"]);
    assert_eq!(inst.done_by["rate_accessories"], ["dana"]);
    let inst = complete(
        &e,
        &inst,
        "rate_integrity",
        &c.mike,
        None,
        integrity(true, true, false),
    )
    .await
    .unwrap();
    assert_eq!(open_steps(&inst), ["grant_benefits"]);
    let inst = complete(&e, &inst, "grant_benefits", &c.mike, None, benefits())
        .await
        .unwrap();
    assert_eq!(inst.status, Status::Completed);
    assert_eq!(inst.end_step.as_deref(), Some("aaa"));
    assert_eq!(assert_folds(&e, inst.id), inst);

    // Claiming both before doing either is allowed; completing the second is not.
    let inst = assessment(&e, &c, "Huaxia Steel").await;
    let ts = task_at(&inst, "rate_safety");
    let ta = task_at(&inst, "rate_accessories");
    let inst = e
        .execute(inst.id, Command::Claim { task: ts.id }, Some(&c.dana))
        .await
        .unwrap();
    let inst = e
        .execute(inst.id, Command::Claim { task: ta.id }, Some(&c.dana))
        .await
        .unwrap();
    let inst = complete(&e, &inst, "rate_safety", &c.dana, None, safety(true))
        .await
        .unwrap();
    let err = refused(
        &e,
        &inst,
        "rate_accessories",
        &c.dana,
        None,
        accessories(true, false, 0),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    // She lets it go; a colleague rates it.
    let inst = e
        .execute(inst.id, Command::Release { task: ta.id }, Some(&c.dana))
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "rate_accessories",
        &c.mona,
        None,
        accessories(false, false, 0),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "rate_integrity",
        &c.mike,
        None,
        integrity(true, true, false),
    )
    .await
    .unwrap();
    assert_eq!(inst.end_step.as_deref(), Some("not_aaa"));
    assert_eq!(assert_folds(&e, inst.id), inst);
}

/// §3.1 and §4: AAA only when all three criteria are A. Each way of missing one A, and the
/// all-A case, checked separately.
#[tokio::test]
async fn aaa_only_when_all_three_are_a() {
    let (e, _clock) = engine().await;
    let c = cast();
    struct Case {
        name: &'static str,
        safety: Value,
        accessories: Value,
        integrity: Value,
        aaa: bool,
        a_count: i64,
    }
    let cases = [
        Case {
            name: "all A",
            safety: safety(true),
            accessories: accessories(true, false, 5),
            integrity: integrity(true, true, false),
            aaa: true,
            a_count: 3,
        },
        Case {
            name: "incomplete inspection records (§3.1.1.1)",
            safety: safety(false),
            accessories: accessories(true, false, 0),
            integrity: integrity(true, true, false),
            aaa: false,
            a_count: 2,
        },
        Case {
            name: "only key components (§3.1.2.1)",
            safety: safety(true),
            accessories: accessories(true, true, 0),
            integrity: integrity(true, true, false),
            aaa: false,
            a_count: 2,
        },
        Case {
            name: "six months without original parts (§3.1.2.1)",
            safety: safety(true),
            accessories: accessories(true, false, 6),
            integrity: integrity(true, true, false),
            aaa: false,
            a_count: 2,
        },
        Case {
            name: "collected by lawyer's letter (§3.1.3.2)",
            safety: safety(true),
            accessories: accessories(true, false, 0),
            integrity: integrity(true, true, true),
            aaa: false,
            a_count: 2,
        },
        Case {
            name: "not A on anything",
            safety: safety(false),
            accessories: accessories(false, true, 12),
            integrity: integrity(false, false, true),
            aaa: false,
            a_count: 0,
        },
    ];
    for case in cases {
        let inst = assessment(&e, &c, case.name).await;
        let inst = complete(&e, &inst, "rate_safety", &c.cole, None, case.safety)
            .await
            .unwrap();
        let inst = complete(
            &e,
            &inst,
            "rate_accessories",
            &c.mona,
            None,
            case.accessories,
        )
        .await
        .unwrap();
        assert_eq!(open_steps(&inst), ["rate_integrity"], "{}", case.name);
        let inst = complete(&e, &inst, "rate_integrity", &c.mike, None, case.integrity)
            .await
            .unwrap();
        assert_eq!(inst.data["is_aaa"], json!(case.aaa), "{}", case.name);
        assert_eq!(inst.data["a_count"], json!(case.a_count), "{}", case.name);
        let inst = if case.aaa {
            assert_eq!(open_steps(&inst), ["grant_benefits"], "{}", case.name);
            complete(&e, &inst, "grant_benefits", &c.mike, None, benefits())
                .await
                .unwrap()
        } else {
            inst
        };
        assert_eq!(inst.status, Status::Completed, "{}", case.name);
        assert_eq!(
            inst.end_step.as_deref(),
            Some(if case.aaa { "aaa" } else { "not_aaa" }),
            "{}",
            case.name
        );
        assert!(inst.tasks.is_empty());
        assert_eq!(assert_folds(&e, inst.id), inst);
    }
}

/// Cancelling the round cancels the ratings still running, and closes their tasks.
#[tokio::test]
async fn cancelling_the_round_cancels_the_running_ratings() {
    let (e, _clock) = engine().await;
    let c = cast();
    let round = e
        .start("customer-rating", obj(json!({})), Some(&c.maud))
        .await
        .unwrap();
    let round = complete(
        &e,
        &round,
        "list_customers",
        &c.maud,
        None,
        json!({ "period": "2027 first half", "customers": [
            { "customer": "Hengxin Lifting", "contract_number": "HT-2026-001" },
            { "customer": "Dongfang Port", "contract_number": "HT-2026-002" }
        ] }),
    )
    .await
    .unwrap();
    let ids: Vec<_> = round.children["rate_customers"]
        .pending
        .keys()
        .copied()
        .collect();
    // One child finishes first.
    let first = e.instance(ids[0]).unwrap().unwrap();
    let first = complete(&e, &first, "rate_safety", &c.cole, None, safety(false))
        .await
        .unwrap();
    let first = complete(
        &e,
        &first,
        "rate_accessories",
        &c.mona,
        None,
        accessories(true, false, 0),
    )
    .await
    .unwrap();
    let first = complete(
        &e,
        &first,
        "rate_integrity",
        &c.mike,
        None,
        integrity(true, true, false),
    )
    .await
    .unwrap();
    assert_eq!(first.end_step.as_deref(), Some("not_aaa"));
    let cancelled = e
        .execute(
            round.id,
            Command::Cancel {
                reason: "Customer list was wrong".into(),
            },
            Some(&c.maud),
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    // The finished child stays completed; the running one is cancelled.
    assert_eq!(
        e.instance(ids[0]).unwrap().unwrap().status,
        Status::Completed
    );
    assert_eq!(
        e.instance(ids[1]).unwrap().unwrap().status,
        Status::Cancelled
    );
    for who in [&c.cole, &c.mona, &c.mike] {
        assert!(
            e.tasks_for(who).unwrap().is_empty(),
            "{} still has work",
            who.id
        );
    }
    for id in [round.id, ids[0], ids[1]] {
        assert_folds(&e, id);
    }
}

/// Every rejection leaves the store byte-for-byte unchanged.
#[tokio::test]
async fn rejections_change_nothing() {
    let (e, _clock) = engine().await;
    let c = cast();
    let before = e.store().dump().unwrap();
    let err = e
        .start("customer-rating", obj(json!({})), Some(&c.cole))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Forbidden(_))),
        "{err:?}"
    );
    let err = e
        .start(
            "customer-rating-assessment",
            obj(json!({ "customer": "Hengxin Lifting" })),
            Some(&c.maud),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::InvalidForm(_))),
        "{err:?}"
    );
    assert_eq!(before, e.store().dump().unwrap());

    let round = e
        .start("customer-rating", obj(json!({})), Some(&c.maud))
        .await
        .unwrap();
    // §2: at least one customer; each with a contract number.
    let err = refused(
        &e,
        &round,
        "list_customers",
        &c.maud,
        None,
        json!({ "period": "2027 first half", "customers": [] }),
    )
    .await;
    assert!(matches!(err, EngineError::InvalidForm(_)), "{err:?}");
    let err = refused(
        &e,
        &round,
        "list_customers",
        &c.maud,
        None,
        json!({ "period": "2027 first half", "customers": [{ "customer": "Hengxin Lifting" }] }),
    )
    .await;
    let EngineError::InvalidForm(problems) = err else {
        panic!("expected an invalid form, got {err:?}")
    };
    assert!(
        problems
            .iter()
            .any(|p| p.field == "customers/0/contract_number"),
        "{problems:?}"
    );
    let err = refused(
        &e,
        &round,
        "list_customers",
        &c.mike,
        None,
        json!({ "period": "2027 first half", "customers": [{ "customer": "Hengxin Lifting", "contract_number": "HT-1" }] }),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");

    let inst = assessment(&e, &c, "Hengxin Lifting").await;
    // Each criterion is rated by its own role.
    let err = refused(
        &e,
        &inst,
        "rate_integrity",
        &c.mona,
        None,
        integrity(true, true, false),
    )
    .await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    let err = refused(&e, &inst, "rate_safety", &c.mike, None, safety(true)).await;
    assert!(matches!(err, EngineError::Forbidden(_)), "{err:?}");
    // A negative month count, a missing answer.
    let err = refused(
        &e,
        &inst,
        "rate_accessories",
        &c.mona,
        None,
        json!({ "uses_original_accessories": true, "months_without_original_purchase": -1 }),
    )
    .await;
    let EngineError::InvalidForm(problems) = err else {
        panic!("expected an invalid form, got {err:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert!(
        fields.contains(&"months_without_original_purchase")
            && fields.contains(&"only_key_components"),
        "{problems:?}"
    );
    // The AAA benefits need a dedicated team.
    let inst = complete(&e, &inst, "rate_safety", &c.cole, None, safety(true))
        .await
        .unwrap();
    let inst = complete(
        &e,
        &inst,
        "rate_accessories",
        &c.mona,
        None,
        accessories(true, false, 0),
    )
    .await
    .unwrap();
    let inst = complete(
        &e,
        &inst,
        "rate_integrity",
        &c.mike,
        None,
        integrity(true, true, false),
    )
    .await
    .unwrap();
    let mut no_team = benefits();
    no_team["dedicated_team"] = json!([]);
    let err = refused(&e, &inst, "grant_benefits", &c.mike, None, no_team).await;
    assert!(matches!(err, EngineError::InvalidForm(_)), "{err:?}");
    // §4: every benefit is granted; a box left unticked is refused, naming it.
    let mut no_letter = benefits();
    no_letter["thank_you_letter_sent"] = json!(false);
    let err = refused(&e, &inst, "grant_benefits", &c.mike, None, no_letter).await;
    assert!(
        matches!(&err, EngineError::InvalidForm(p) if p[0].field == "thank_you_letter_sent"),
        "{err:?}"
    );
    // The completed rating task is gone: completing it again is a conflict.
    let history = e.history(inst.id).unwrap();
    let done = history
        .iter()
        .find_map(|ev| match &ev.kind {
            sopflow::engine::instance::EventKind::TaskCompleted { task, step, .. }
                if step == "rate_safety" =>
            {
                Some(*task)
            }
            _ => None,
        })
        .unwrap();
    let before = e.store().dump().unwrap();
    let err = e
        .execute(
            inst.id,
            Command::Complete {
                task: done,
                outcome: None,
                form: obj(safety(true)),
                comment: None,
            },
            Some(&c.cole),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Engine(EngineError::Conflict(_))),
        "{err:?}"
    );
    assert_eq!(before, e.store().dump().unwrap());
}

/// Eight customers' last ratings are given at the same moment: every child reports its end
/// to the round, and the round collects all eight exactly once, in list order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_ending_together_are_all_collected_once() {
    let (e, _clock) = engine().await;
    let e = std::sync::Arc::new(e);
    let c = cast();
    let customers: Vec<Value> = (0..8)
        .map(|i| json!({ "customer": format!("Customer {i}"), "contract_number": format!("HT-{i}") }))
        .collect();
    let round = e
        .start("customer-rating", obj(json!({})), Some(&c.maud))
        .await
        .unwrap();
    let round = complete(
        &e,
        &round,
        "list_customers",
        &c.maud,
        None,
        json!({ "period": "2027 first half", "customers": customers }),
    )
    .await
    .unwrap();
    let group = &round.children["rate_customers"];
    assert_eq!(group.pending.len(), 8);
    // Two of three criteria rated in every child; even customers will be AAA.
    let mut ready = Vec::new();
    for (id, index) in &group.pending {
        let child = e.instance(*id).unwrap().unwrap();
        let child = complete(&e, &child, "rate_safety", &c.cole, None, safety(true))
            .await
            .unwrap();
        let child = complete(
            &e,
            &child,
            "rate_accessories",
            &c.mona,
            None,
            accessories(true, false, 0),
        )
        .await
        .unwrap();
        assert_eq!(open_steps(&child), ["rate_integrity"]);
        ready.push((*index, child));
    }
    assert!(e.instance(round.id).unwrap().unwrap().tasks.is_empty());
    let mut handles = Vec::new();
    for (index, child) in ready {
        let (e, who) = (e.clone(), c.mike.clone());
        handles.push(tokio::spawn(async move {
            complete(
                &e,
                &child,
                "rate_integrity",
                &who,
                None,
                integrity(true, index % 2 == 0, false),
            )
            .await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let round = assert_folds(&e, round.id);
    // The AAA children wait for their benefits; the others have ended.
    assert_eq!(round.status, Status::Running);
    assert_eq!(round.children["rate_customers"].pending.len(), 4);
    let pending: Vec<_> = round.children["rate_customers"]
        .pending
        .keys()
        .copied()
        .collect();
    let mut handles = Vec::new();
    for id in pending {
        let child = e.instance(id).unwrap().unwrap();
        assert_eq!(open_steps(&child), ["grant_benefits"]);
        let (e, who) = (e.clone(), c.mike.clone());
        handles.push(tokio::spawn(async move {
            complete(&e, &child, "grant_benefits", &who, None, benefits()).await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let round = assert_folds(&e, round.id);
    assert_eq!(round.status, Status::Completed);
    assert_eq!(round.end_step.as_deref(), Some("completed"));
    let ratings = round.data["ratings"].as_array().unwrap();
    assert_eq!(ratings.len(), 8);
    for (i, r) in ratings.iter().enumerate() {
        assert_eq!(r["customer"], format!("Customer {i}"));
        assert_eq!(r["outcome"], if i % 2 == 0 { "aaa" } else { "not_aaa" });
    }
    assert_eq!(round.data["aaa_count"], json!(4));
    assert_eq!(round.data["rated_count"], json!(8));
    let collected = e
        .history(round.id)
        .unwrap()
        .iter()
        .filter(|ev| {
            matches!(
                ev.kind,
                sopflow::engine::instance::EventKind::ChildrenCollected { .. }
            )
        })
        .count();
    assert_eq!(collected, 1);
}

/// The marketing office may cancel a single customer's rating (a contract ended mid-round).
/// The round must then not wait for it for ever: either the cancel is refused, or the round
/// learns that the child ended. What must never happen is a round waiting on a child that
/// has ended, with no task anywhere that could move it on.
#[tokio::test]
async fn cancelling_one_rating_does_not_leave_the_round_waiting_for_ever() {
    let (e, _clock) = engine().await;
    let c = cast();
    let round = e
        .start("customer-rating", obj(json!({})), Some(&c.maud))
        .await
        .unwrap();
    let round = complete(
        &e,
        &round,
        "list_customers",
        &c.maud,
        None,
        json!({ "period": "2027 first half", "customers": [
            { "customer": "Hengxin Lifting", "contract_number": "HT-2026-001" },
            { "customer": "Dongfang Port", "contract_number": "HT-2026-002" }
        ] }),
    )
    .await
    .unwrap();
    let mut children: Vec<(usize, sopflow::store::InstanceId)> = round.children["rate_customers"]
        .pending
        .iter()
        .map(|(id, index)| (*index, *id))
        .collect();
    children.sort();
    let (dropped, kept) = (children[0].1, children[1].1);
    let cancel = e
        .execute(
            dropped,
            Command::Cancel {
                reason: "Contract terminated".into(),
            },
            Some(&c.maud),
        )
        .await;
    let kept_child = e.instance(kept).unwrap().unwrap();
    let kept_child = complete(&e, &kept_child, "rate_safety", &c.cole, None, safety(true))
        .await
        .unwrap();
    let kept_child = complete(
        &e,
        &kept_child,
        "rate_accessories",
        &c.mona,
        None,
        accessories(true, false, 9),
    )
    .await
    .unwrap();
    let kept_child = complete(
        &e,
        &kept_child,
        "rate_integrity",
        &c.mike,
        None,
        integrity(true, true, false),
    )
    .await
    .unwrap();
    assert_eq!(kept_child.end_step.as_deref(), Some("not_aaa"));
    let round = assert_folds(&e, round.id);
    match cancel {
        // Refused: the rating still runs, and the round still waits for it.
        Err(_) => {
            assert_eq!(
                e.instance(dropped).unwrap().unwrap().status,
                Status::Running
            );
            assert_eq!(round.status, Status::Running);
        }
        // Allowed: the round must not wait on an ended child.
        Ok(cancelled) => {
            assert_eq!(cancelled.status, Status::Cancelled);
            if let Some(group) = round.children.get("rate_customers") {
                for id in group.pending.keys() {
                    let child = e.instance(*id).unwrap().unwrap();
                    assert_eq!(
                        child.status,
                        Status::Running,
                        "the round waits on child {id}, which has ended ({:?}); the round has no open task and can never finish",
                        child.status
                    );
                }
            }
            assert_eq!(
                round.status,
                Status::Completed,
                "the round should have gone on"
            );
        }
    }
}
