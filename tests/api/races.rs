//! Commands racing for the same task and instance over HTTP: claim against complete against
//! delegate against cancel, many clients released at once by a barrier, round after round.
//!
//! What must hold for every race: each reply is a 200 or a 409 (a lost race is a conflict,
//! never a 403, a 404 or a 5xx); the history holds exactly one event per winner and none
//! for a loser; nothing follows the instance's end; the stored snapshot equals the fold of
//! the stored history; and the hash chain verifies. Where the commands exclude each other
//! (two claims, two completions, a completion and a cancellation of an instance that
//! completion ends…) exactly one wins.
//!
//! The procedure is `tests/fixtures/runtime/race.toml`: one step every member of staff may
//! claim, complete or delegate, and the management representative may cancel.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sopflow::engine::instance::Instance;
use tokio::sync::Barrier;

use crate::harness::*;

/// Delegates: staff who are never racers, so a delegation always names someone else.
const DELEGATES: [&str; 2] = ["han.xue", "cui.lan"];

/// Holders of `management_rep`, the race procedure's cancel role.
const CANCELLERS: [&str; 2] = ["zhou.min", "qian.li"];

/// Members of staff who race on the step: every user with a token (all hold `staff` but
/// the auditor) except the cancellers, the delegates, the admin and the inactive user.
fn staff() -> Vec<&'static str> {
    let racers: Vec<&'static str> = USERS
        .into_iter()
        .filter(|u| {
            ![ADMIN, AUDITOR, "shi.lan"].contains(u)
                && !CANCELLERS.contains(u)
                && !DELEGATES.contains(u)
        })
        .collect();
    assert!(racers.len() >= 8, "{racers:?}");
    racers
}

/// Rounds per race: each a fresh instance, so the interleavings differ.
const ROUNDS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Claim,
    Release,
    Complete,
    Delegate(&'static str),
    Cancel,
}

impl Act {
    /// The event a win of this act appends.
    fn event(self) -> &'static str {
        match self {
            Act::Claim => "task_claimed",
            Act::Release => "task_released",
            Act::Complete => "task_completed",
            Act::Delegate(_) => "task_delegated",
            Act::Cancel => "cancelled",
        }
    }
}

/// Starts a fresh race instance, releases every racer at once, and returns the instance id
/// and each racer's status, in plan order.
async fn race(srv: &Arc<Server>, plan: &[(&'static str, Act)]) -> (String, Vec<StatusCode>) {
    let inst = srv.start_instance("liu.yang", "race", json!({})).await;
    let id = id_of(&inst);
    let task = task_at(&inst, "decide");
    let gate = Arc::new(Barrier::new(plan.len()));
    let mut racers = Vec::new();
    for &(who, act) in plan {
        let (srv, gate, id, task) = (srv.clone(), gate.clone(), id.clone(), task.clone());
        racers.push(tokio::spawn(async move {
            let (path, body) = match act {
                Act::Claim => (format!("/v1/tasks/{task}/claim"), json!({})),
                Act::Release => (format!("/v1/tasks/{task}/release"), json!({})),
                Act::Complete => (
                    format!("/v1/tasks/{task}/complete"),
                    json!({ "outcome": "approve", "form": {} }),
                ),
                Act::Delegate(to) => (
                    format!("/v1/tasks/{task}/delegate"),
                    json!({ "to": to, "reason": "away this week" }),
                ),
                Act::Cancel => (
                    format!("/v1/instances/{id}/cancel"),
                    json!({ "reason": "withdrawn by the customer" }),
                ),
            };
            gate.wait().await;
            let (status, body) = srv.post(who, &path, body).await;
            (status, body)
        }));
    }
    let mut statuses = Vec::new();
    for (r, (who, act)) in racers.into_iter().zip(plan) {
        let (status, body) = r.await.expect("a racer does not panic");
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "{who} {act:?}: a lost race is a 409, got {status}: {body}"
        );
        statuses.push(status);
    }
    (id, statuses)
}

/// What must hold after any race: one event per winner, none per loser, nothing after the
/// end, snapshot = fold of the history, chain intact. Returns the number of winners.
fn check(srv: &Server, id: &str, plan: &[(&'static str, Act)], statuses: &[StatusCode]) -> usize {
    let uuid: uuid::Uuid = id.parse().expect("an instance id");
    let engine = srv.engine();
    let history = engine.history(uuid).expect("the history reads");
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.name()).collect();
    let winners: Vec<(&str, Act)> = plan
        .iter()
        .zip(statuses)
        .filter(|(_, s)| **s == StatusCode::OK)
        .map(|(p, _)| *p)
        .collect();
    for act in [
        Act::Claim,
        Act::Release,
        Act::Complete,
        Act::Delegate(""),
        Act::Cancel,
    ] {
        let won = winners
            .iter()
            .filter(|(_, a)| a.event() == act.event())
            .count();
        let recorded = kinds.iter().filter(|k| **k == act.event()).count();
        assert_eq!(
            won,
            recorded,
            "{id}: {won} {} won but the history records {recorded}: {kinds:?}",
            act.event()
        );
    }
    // Each winner is the person the history names.
    for (who, act) in &winners {
        assert!(
            history
                .iter()
                .any(|e| e.kind.name() == act.event()
                    && e.by.as_ref().is_some_and(|b| b.user == *who)),
            "{id}: {who}'s {act:?} won but is not in the history: {kinds:?}"
        );
    }
    let ends = kinds
        .iter()
        .filter(|k| **k == "ended" || **k == "cancelled")
        .count();
    assert!(ends <= 1, "{id}: ended twice: {kinds:?}");
    if ends == 1 {
        assert!(
            matches!(kinds.last(), Some(&"ended") | Some(&"cancelled")),
            "{id}: events after the end: {kinds:?}"
        );
    }
    let stored = engine
        .instance(uuid)
        .expect("the instance reads")
        .expect("the instance exists");
    let folded = Instance::fold(uuid, &history).expect("the history folds");
    assert_eq!(
        stored, folded,
        "{id}: the snapshot is not the fold of its history"
    );
    let v = engine
        .verify_instance(uuid)
        .expect("verification runs")
        .expect("the instance is known");
    assert!(v.intact(), "{id}: broken chain: {v:?}");
    winners.len()
}

/// Runs `plan` for `ROUNDS` fresh instances; with `exclusive`, exactly one racer wins each.
async fn rounds(srv: &Arc<Server>, plan: &[(&'static str, Act)], exclusive: bool) {
    for round in 0..ROUNDS {
        // A different order each round, so a different racer is spawned (and likely sent) first.
        let mut plan = plan.to_vec();
        let turn = round % plan.len();
        plan.rotate_left(turn);
        let (id, statuses) = race(srv, &plan).await;
        let winners = check(srv, &id, &plan, &statuses);
        if exclusive {
            assert_eq!(
                winners, 1,
                "round {round} of {plan:?}: exactly one winner, got {statuses:?}"
            );
        } else {
            assert!(winners >= 1, "round {round}: somebody wins: {statuses:?}");
        }
    }
}

async fn server() -> (Arc<Server>, tempfile::TempDir) {
    let (srv, procs) = Server::start_with_fixtures(&["race.toml"]).await;
    (Arc::new(srv), procs)
}

fn each(users: &[&'static str], act: Act) -> Vec<(&'static str, Act)> {
    users.iter().map(|u| (*u, act)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_race_one_wins() {
    let (srv, _procs) = server().await;
    let staff = staff();
    rounds(&srv, &each(&staff[..8], Act::Claim), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completions_race_one_wins() {
    let (srv, _procs) = server().await;
    let staff = staff();
    rounds(&srv, &each(&staff[..8], Act::Complete), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_against_complete_one_wins() {
    let (srv, _procs) = server().await;
    let staff = staff();
    let mut plan = each(&staff[..4], Act::Claim);
    plan.extend(each(&staff[4..8], Act::Complete));
    rounds(&srv, &plan, true).await;
}

/// Whoever delegates first hands the task on; the others — delegating, claiming or
/// completing — find it with someone else: 409, not 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delegate_against_claim_and_complete_one_wins() {
    let (srv, _procs) = server().await;
    let staff = staff();
    let mut plan = vec![
        (staff[0], Act::Delegate(DELEGATES[0])),
        (staff[1], Act::Delegate(DELEGATES[1])),
        (staff[2], Act::Delegate(DELEGATES[0])),
    ];
    plan.extend(each(&staff[3..6], Act::Complete));
    plan.extend(each(&staff[6..8], Act::Claim));
    rounds(&srv, &plan, true).await;
}

/// Completing the only step ends the instance, so completion and cancellation exclude each
/// other; so do two cancellations.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn complete_against_cancel_one_wins() {
    let (srv, _procs) = server().await;
    let staff = staff();
    let mut plan = each(&staff[..4], Act::Complete);
    plan.extend(each(&CANCELLERS, Act::Cancel));
    rounds(&srv, &plan, true).await;
}

/// Everything at once, where several may win (a claim and a later cancellation both
/// stand): every loser still gets a 409 and the history says exactly what the winners did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everything_at_once_leaves_a_history_that_matches_the_winners() {
    let (srv, _procs) = server().await;
    let staff = staff();
    let plan = vec![
        (staff[0], Act::Claim),
        (staff[0], Act::Release),
        (staff[1], Act::Claim),
        (staff[2], Act::Complete),
        (staff[3], Act::Complete),
        (staff[4], Act::Delegate(DELEGATES[0])),
        (staff[5], Act::Delegate(DELEGATES[1])),
        (DELEGATES[0], Act::Complete),
        (CANCELLERS[0], Act::Cancel),
        (CANCELLERS[1], Act::Cancel),
    ];
    rounds(&srv, &plan, false).await;
    // And across the whole store: every chain verifies.
    let v = srv.engine().verify(&mut |_| {}).expect("verification runs");
    assert!(v.intact(), "{v:?}");
}

/// After a delegation, the person who could have done the task hears it moved on (409);
/// someone who never could is still refused (403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_delegation_latecomers_conflict_and_outsiders_are_forbidden() {
    let (srv, _procs) = server().await;
    let staff = staff();
    let inst = srv.start_instance("liu.yang", "race", json!({})).await;
    let task = task_at(&inst, "decide");
    srv.post_expect(
        staff[0],
        &format!("/v1/tasks/{task}/delegate"),
        json!({ "to": DELEGATES[0], "reason": "away" }),
        StatusCode::OK,
    )
    .await;
    let done: Value = json!({ "outcome": "approve", "form": {} });
    let (s, v) = srv
        .post(
            staff[1],
            &format!("/v1/tasks/{task}/complete"),
            done.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("delegated to"),
        "{v}"
    );
    let (s, v) = srv
        .post(
            staff[1],
            &format!("/v1/tasks/{task}/delegate"),
            json!({ "to": DELEGATES[1], "reason": "x" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // The auditor acts with no roles at all: forbidden, as before.
    let (s, _) = srv
        .post(
            "jiang.audit",
            &format!("/v1/tasks/{task}/complete"),
            done.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    srv.post_expect(
        DELEGATES[0],
        &format!("/v1/tasks/{task}/complete"),
        done,
        StatusCode::OK,
    )
    .await;
}
