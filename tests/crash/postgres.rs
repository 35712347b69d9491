//! The crash test on PostgreSQL: two nodes on one database, one killed, the database
//! restarted, under load (see the top of `tests/crash.rs`).

use super::*;

/// How long the nodes have to acknowledge commands again: the survivor of a kill (to the
/// clients that moved to it too), both nodes once the database is back.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// The load goes on at least this long after a kill or the database's restart.
const LOAD_AFTER: Duration = Duration::from_secs(1);

/// How long due timers may stay unfired after the clocks were moved past them: a node
/// killed holding claims on due timers keeps the other off them for the claims' lease
/// (10 s, `CLAIM_SECONDS` in `src/store/pg_commit.rs`).
const LATE_TIMERS: Duration = Duration::from_secs(25);

/// A database of its own on the server `SOPFLOW_TEST_POSTGRES` names: dropped when the test
/// passed, kept (and named) when it failed.
struct TestDatabase {
    admin: String,
    name: String,
    url: String,
}

impl TestDatabase {
    fn create(admin: &str) -> TestDatabase {
        let name = format!("sopflow_t_{}", Uuid::now_v7().simple());
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        let url = format!("{base}/{name}");
        let (a, n) = (admin.to_string(), name.clone());
        // The blocking client may not run on a Tokio thread.
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&a, postgres::NoTls)
                .unwrap_or_else(|e| panic!("PostgreSQL ({a}) is not reachable: {e}"));
            c.batch_execute(&format!("CREATE DATABASE {n}"))
                .unwrap_or_else(|e| panic!("cannot create the database {n}: {e}"));
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
        TestDatabase {
            admin: admin.to_string(),
            name,
            url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "PostgreSQL crash test: the database is kept: {} (drop it with \
                 DROP DATABASE {} WITH (FORCE))",
                self.url, self.name
            );
            return;
        }
        let (a, n) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&a, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// What a round of the PostgreSQL test does under load.
#[derive(Clone, Copy)]
enum PgRound {
    /// SIGKILL of node 0 (a) or 1 (b).
    Kill(usize),
    /// The database restarted (`SOPFLOW_TEST_PG_RESTART`).
    Restart,
}

const NODE_NAMES: [&str; 2] = ["a", "b"];

impl PgRound {
    /// Round 1 kills node a, 2 restarts the database, 3 kills node b, and so on.
    fn of(round: usize) -> PgRound {
        match round % 3 {
            1 => PgRound::Kill(0),
            2 => PgRound::Restart,
            _ => PgRound::Kill(1),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            PgRound::Kill(0) => "kill -9 of node a",
            PgRound::Kill(_) => "kill -9 of node b",
            PgRound::Restart => "PostgreSQL restarted",
        }
    }
}

/// Starts a complaint on one node until it is acknowledged, for at most `RECOVERY_TIMEOUT`:
/// a 503 with `Retry-After` or no answer is tried again, any other answer is a failure.
/// The instance and its register task, how long it took and how many tries.
async fn start_until_acknowledged(
    api: &Api,
    node: &str,
) -> Result<(Uuid, Uuid, Duration, usize), String> {
    let began = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let data = json!({ "customer": format!("Probe {node}-{tries}"), "contact": "Mr Li" });
        let a = api
            .call(
                "xu.na",
                Some(json!({ "procedure": "complaint-handling", "data": data })),
                "/v1/instances",
            )
            .await;
        let why = match a {
            Answer::Ok(view) => {
                return match (uuid_of(&view["id"]), open_task(&view, "register")) {
                    (Some(i), Ok(r)) => Ok((i, r, began.elapsed(), tries)),
                    _ => Err(format!(
                        "node {node}: a start answer without id or register task: {view}"
                    )),
                }
            }
            Answer::Status(s, body) => {
                return Err(format!(
                "node {node}: starting a complaint once the database was back answered {s}: {body}"
            ))
            }
            Answer::Unavailable { body, .. } => format!("503: {body}"),
            Answer::Lost(e) => format!("no answer: {e}"),
        };
        if began.elapsed() >= RECOVERY_TIMEOUT {
            return Err(format!(
                "node {node} acknowledged no command within {RECOVERY_TIMEOUT:?} after the \
                 database was back ({tries} tries, the last: {why}): it does not reconnect"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_postgresql_survive_kill_9_of_one_and_a_database_restart() {
    let Ok(admin) = std::env::var("SOPFLOW_TEST_POSTGRES") else {
        eprintln!(
            "SOPFLOW_TEST_POSTGRES is not set: the crash test of two nodes on PostgreSQL is skipped"
        );
        return;
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let restart = std::env::var("SOPFLOW_TEST_PG_RESTART")
        .ok()
        .filter(|c| !c.trim().is_empty());
    if restart.is_none() {
        eprintln!(
            "SOPFLOW_TEST_PG_RESTART is not set: the PostgreSQL crash test does not restart the \
             database (its rounds 2, 5, 8, … are skipped)"
        );
    }
    let cfg = config(3);
    let seed = cfg.seed;
    eprintln!(
        "PostgreSQL crash test: seed {seed} (rerun with SOPFLOW_CRASH_SEED={seed}), {} round(s){}",
        cfg.rounds,
        cfg.seconds
            .map(|s| format!(", at least {s} s"))
            .unwrap_or_default()
    );
    let mut rng = Rng(seed);
    let work = Workdir(Some(
        tempfile::Builder::new()
            .prefix("sopflow-crash-pg-")
            .tempdir()
            .expect("a temporary directory"),
    ));
    let db = TestDatabase::create(&admin);
    let url = db.url.clone();
    let logs = work.path().to_path_buf();
    // With `--store`, a node's data directory holds only its demo tokens: node b gets node
    // a's token hashes, so one set of tokens works on both.
    let dirs: Vec<PathBuf> = NODE_NAMES
        .iter()
        .map(|n| work.path().join(format!("node-{n}")))
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d).expect("a node's data directory");
    }
    let began = Instant::now();
    let mut clock: DateTime<Utc> = CLOCK_START.parse().expect("the start instant");
    let setup = Ctx {
        test: "PostgreSQL crash test",
        seed,
        round: 0,
        kind: "starting the nodes",
    };
    let first = Server::start(&dirs[0], Some(&url), &logs, "node-a-start", clock)
        .unwrap_or_else(|e| setup.fail(e));
    let toks = Arc::new(read_tokens(&dirs[0]));
    check_tokens(setup, &toks);
    std::fs::copy(
        dirs[0].join("demo-token-hashes.json"),
        dirs[1].join("demo-token-hashes.json"),
    )
    .unwrap_or_else(|e| setup.fail(format!("copying node a's token hashes to node b: {e}")));
    let second = Server::start(&dirs[1], Some(&url), &logs, "node-b-start", clock)
        .unwrap_or_else(|e| setup.fail(e));
    let mut servers = [first, second];
    let mut acked = Acked::default();
    let mut round = 0usize;
    let mut passed = 0usize;
    loop {
        round += 1;
        let more_rounds = round <= cfg.rounds;
        let more_time = cfg
            .seconds
            .is_some_and(|s| began.elapsed() < Duration::from_secs(s));
        if !more_rounds && !more_time {
            break;
        }
        let kind = PgRound::of(round);
        let ctx = Ctx {
            test: "PostgreSQL crash test",
            seed,
            round,
            kind: kind.describe(),
        };
        if matches!(kind, PgRound::Restart) && restart.is_none() {
            eprintln!("round {round}: skipped (the database is not restarted)");
            continue;
        }
        let round_began = Instant::now();

        // The load, on both nodes; a node's clients move to the other when it is gone.
        let apis: Vec<Api> = servers
            .iter()
            .map(|s| Api::new(s.base(), toks.clone()))
            .collect();
        let load = Load::new(apis.len());
        let mut handles = Vec::new();
        for c in 0..CLIENTS {
            handles.push(tokio::spawn(client(
                apis.clone(),
                c % apis.len(),
                Outage::Survived,
                rng.fork(),
                load.clone(),
                c < apis.len(),
                c,
            )));
        }
        let after = Duration::from_millis(rng.range(KILL_AFTER_MS.0, KILL_AFTER_MS.1));
        tokio::time::sleep(after).await;
        // What happened after the kill or the restart; Err: the round failed (said once the
        // clients stopped, after any unexpected answer they heard).
        let event: Result<String, String> = match kind {
            PgRound::Kill(victim) => {
                let survivor = 1 - victim;
                let before = load.acks(survivor);
                servers[victim].kill9();
                let killed = Instant::now();
                // The survivor keeps serving, the clients that moved to it included.
                loop {
                    let served = load.acks(survivor) - before;
                    let moves = load.moves.load(Ordering::Relaxed);
                    let after_move = load.acks_after_move.load(Ordering::Relaxed);
                    if served > 0
                        && (moves == 0 || after_move > 0)
                        && killed.elapsed() >= LOAD_AFTER
                    {
                        break Ok(format!(
                            "node {} killed {after:?} into the load; node {} acknowledged {served} \
                             command(s) in the {:.1} s after, {after_move} of them to clients that \
                             moved to it ({moves} move(s))",
                            NODE_NAMES[victim],
                            NODE_NAMES[survivor],
                            killed.elapsed().as_secs_f64()
                        ));
                    }
                    if killed.elapsed() >= RECOVERY_TIMEOUT {
                        break Err(format!(
                            "node {} did not keep serving after node {} was killed {after:?} into \
                             the load: in {RECOVERY_TIMEOUT:?} it acknowledged {served} command(s), \
                             {after_move} to the clients that moved to it ({moves} move(s)); its \
                             stderr:\n{}",
                            NODE_NAMES[survivor],
                            NODE_NAMES[victim],
                            servers[survivor].stderr()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            PgRound::Restart => {
                let cmd = restart.clone().unwrap_or_default();
                let t = Instant::now();
                let c = cmd.clone();
                let out = tokio::task::spawn_blocking(move || {
                    Command::new("sh")
                        .arg("-c")
                        .arg(&c)
                        .stdin(Stdio::null())
                        .output()
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                let took = t.elapsed();
                match out {
                    Err(e) => Err(format!("cannot run SOPFLOW_TEST_PG_RESTART ({cmd}): {e}")),
                    Ok(o) if !o.status.success() => Err(format!(
                        "SOPFLOW_TEST_PG_RESTART ({cmd}) failed: {}; stdout: {}; stderr: {}",
                        o.status,
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )),
                    Ok(_) => {
                        // Both nodes acknowledge commands again by themselves.
                        let back = Instant::now();
                        let mut said = vec![format!(
                            "the database restarted {after:?} into the load (the restart took {:.1} s)",
                            took.as_secs_f64()
                        )];
                        let mut failed = None;
                        for (i, api) in apis.iter().enumerate() {
                            match start_until_acknowledged(api, NODE_NAMES[i]).await {
                                Ok((instance, register, waited, tries)) => {
                                    acked.starts.insert(instance, (register, round));
                                    said.push(format!(
                                        "node {} acknowledged a start {:.1} s after ({tries} tries)",
                                        NODE_NAMES[i],
                                        waited.as_secs_f64()
                                    ));
                                }
                                Err(e) => {
                                    failed =
                                        Some(format!("{e}; its stderr:\n{}", servers[i].stderr()));
                                    break;
                                }
                            }
                        }
                        match failed {
                            Some(e) => Err(e),
                            None => {
                                tokio::time::sleep(LOAD_AFTER.saturating_sub(back.elapsed())).await;
                                Ok(said.join("; "))
                            }
                        }
                    }
                }
            }
        };
        load.stop.store(true, Ordering::Relaxed);
        let reports = join_clients(ctx, handles).await;
        let sum = gather(ctx, reports, &mut acked);
        sum.fail_on_unexpected(ctx, "only 2xx, and 503 with Retry-After, are expected");
        let event = event.unwrap_or_else(|e| ctx.fail(e));
        // Every node's clock is at most the latest acknowledged, moved on by every move that
        // was not acknowledged.
        if let Some(t) = sum.clock {
            clock = clock.max(t);
        }
        clock += chrono::Duration::hours(CLOCK_STEP_HOURS * i64::from(sum.unacked_moves));

        // The killed node starts again on the same database.
        if let PgRound::Kill(victim) = kind {
            let label = format!("node-{}-round{round}", NODE_NAMES[victim]);
            servers[victim] = Server::start(&dirs[victim], Some(&url), &logs, &label, clock)
                .unwrap_or_else(|e| {
                    ctx.fail(format!(
                        "node {} does not restart after SIGKILL {after:?} into the load: {e}",
                        NODE_NAMES[victim]
                    ))
                });
        }

        // The checks, through both nodes, their clocks at one instant 25 h past the latest
        // either may have reached: every timer due by then has fired.
        let apis: Vec<Api> = servers
            .iter()
            .map(|s| Api::new(s.base(), toks.clone()))
            .collect();
        for api in &apis {
            verify_intact(api, ctx, &format!("after the round (through {})", api.base)).await;
        }
        // Starts a client gave up on (five tries without an answer) go once more.
        retry_starts(ctx, &apis[0], &sum.unacked_starts, &mut acked).await;
        let target = clock + chrono::Duration::hours(CLOCK_STEP_HOURS);
        for api in &apis {
            move_clock_to(api, ctx, target).await;
        }
        clock = target;
        let (listed, tally, late) = check_through_api(ctx, &apis, &acked, clock, LATE_TIMERS).await;

        // The snapshots against their histories, in-process on the database (no load runs).
        let u = url.clone();
        let l = listed.clone();
        let folded = tokio::task::spawn_blocking(move || {
            // The blocking PostgreSQL client may not run on a Tokio thread.
            std::thread::spawn(move || {
                let engine = sopflow::setup::open_existing_postgres(
                    &u,
                    Arc::new(sopflow::clock::SystemClock),
                )
                .unwrap_or_else(|e| ctx.fail(format!("the store does not open in-process: {e}")));
                check_folds(ctx, &engine, &l)
            })
            .join()
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        .unwrap_or_else(|e| std::panic::resume_unwind(e));

        eprintln!(
            "round {round}: {event}; {}acknowledged {} starts, {} completions, {} claims and {} \
             cancellations ({} requests without an answer, {} answered 503{}); {}; clocks {clock}; \
             {:.1} s",
            match late {
                Some((n, w)) => format!(
                    "{n} due timer(s) had not fired when the clocks were moved past them, and \
                     had {:.1} s later; ",
                    w.as_secs_f64()
                ),
                None => String::new(),
            },
            sum.starts,
            sum.completions,
            sum.claims,
            sum.cancels,
            sum.lost,
            sum.unavailable,
            sum.unacked_note(),
            store_report(&tally, folded, &acked),
            round_began.elapsed().as_secs_f64()
        );
        passed += 1;
    }
    let end = Ctx {
        test: "PostgreSQL crash test",
        seed,
        round: round - 1,
        kind: "stopping the nodes",
    };
    for s in &mut servers {
        s.terminate().unwrap_or_else(|e| end.fail(e));
    }
    drop(servers);
    eprintln!(
        "PostgreSQL crash test: {passed} round(s) passed in {:.1} s (seed {seed})",
        began.elapsed().as_secs_f64()
    );
}
