//! The `sopflow` command: validate procedure files, print their schema, draw their graph.
//! Argument parsing and output only; all the work is in the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

mod repair;
mod trail;
mod work;

/// mimalloc rather than glibc's malloc: under load the store's writer thread and the
/// request handlers allocate from several threads at once, and glibc's arenas showed up as
/// a fifth of the server's CPU profile (see the issue 5 note for the figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};
use sopflow::definition::load::{self, Options};
use sopflow::definition::{render, schema};
use sopflow::engine::decide::Command as EngineCommand;

#[derive(Parser)]
#[command(
    name = "sopflow",
    version,
    about = "Runs an organisation's control procedures, written as TOML state graphs."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check procedure files (or directories of them) and report every problem with its
    /// file, line and column. Exits 0 when clean, 1 on any error.
    Validate {
        /// Files or directories to check.
        #[arg(default_value = "procedures")]
        paths: Vec<PathBuf>,
        /// `text` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Directory of calendar files (default: `calendars/` beside the procedures).
        #[arg(long)]
        calendars: Option<PathBuf>,
        /// The directory file of users and roles to check too (default: `org.toml` beside the
        /// procedures directory, if there is one).
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Check that the calendars cover the twelve months from this date (`2027-03-01`)
        /// instead of from today.
        #[arg(long, value_parser = parse_day)]
        today: Option<chrono::NaiveDate>,
    },
    /// Draw a procedure's graph: steps with role and deadline, transitions labelled with
    /// outcome and condition, parallel split/join, end steps.
    Graph {
        /// A procedure id (looked up in the procedures directory) or a path to a file.
        procedure: String,
        /// `mermaid` (renders with the Mermaid CLI and in Markdown) or `dot` (Graphviz).
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
        /// Where procedure ids are looked up.
        #[arg(long, default_value = "procedures")]
        procedures: PathBuf,
        /// Directory of calendar files (default: `calendars/` beside the procedures).
        #[arg(long)]
        calendars: Option<PathBuf>,
    },
    /// Run the HTTP API (and the deadline scheduler) on the embedded store. On first start,
    /// users with no token hash in the directory get demo tokens, printed once and written
    /// to DATA_DIR/demo-tokens.txt (mode 0600). Stops cleanly on Ctrl-C or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Start an instance of a procedure.
    Start {
        procedure: String,
        /// Who starts it (a user id from the directory).
        #[arg(long = "as")]
        user: String,
        /// Start data, as a JSON object.
        #[arg(long)]
        data: Option<String>,
        #[command(flatten)]
        places: work::Places,
    },
    /// List the open tasks offered to a person's roles or assigned to them.
    Tasks {
        #[arg(long = "as")]
        user: String,
        #[command(flatten)]
        places: work::Places,
    },
    /// List the notifications for a person's roles, newest first.
    Notifications {
        #[arg(long = "as")]
        user: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        places: work::Places,
    },
    /// Take a task so nobody else does it.
    Claim {
        task: uuid::Uuid,
        #[arg(long = "as")]
        user: String,
        #[command(flatten)]
        places: work::Places,
    },
    /// Give a claimed task back to its role.
    Release {
        task: uuid::Uuid,
        #[arg(long = "as")]
        user: String,
        #[command(flatten)]
        places: work::Places,
    },
    /// Complete a task with an outcome and its form.
    Complete {
        task: uuid::Uuid,
        #[arg(long = "as")]
        user: String,
        /// The outcome, when the step has several.
        #[arg(long)]
        outcome: Option<String>,
        /// The form values, as a JSON object.
        #[arg(long)]
        form: Option<String>,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        places: work::Places,
    },
    /// Hand a task on to a colleague (as the step's delegation rule allows).
    Delegate {
        task: uuid::Uuid,
        #[arg(long = "as")]
        user: String,
        /// The colleague's user id.
        #[arg(long)]
        to: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        places: work::Places,
    },
    /// Cancel a running instance.
    Cancel {
        instance: uuid::Uuid,
        #[arg(long = "as")]
        user: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        places: work::Places,
    },
    /// Add a comment to an instance's history.
    Comment {
        instance: uuid::Uuid,
        #[arg(long = "as")]
        user: String,
        text: String,
        #[command(flatten)]
        places: work::Places,
    },
    /// An operator's repairs and migrations (admin or a procedure's operator roles).
    #[command(flatten)]
    Repair(repair::Repair),
    /// Show an instance: status, open tasks, data and history.
    Show {
        instance: uuid::Uuid,
        #[command(flatten)]
        places: work::Places,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Check every instance's hash chain in a stopped store and report the first broken
    /// link (instance, event, expected and found hash). Exits 0 when intact, 1 when broken.
    Verify {
        #[command(flatten)]
        dir: trail::DataDir,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List events across instances by actor, procedure, kind and time, from the audit
    /// index, a page at a time.
    Audit {
        #[command(flatten)]
        dir: trail::DataDir,
        #[command(flatten)]
        filters: trail::FilterArgs,
        /// Events per page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The `more: --cursor …` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Print the page as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export events (all, or filtered like `audit`) as JSON Lines or CSV, streaming.
    Export {
        #[command(flatten)]
        dir: trail::DataDir,
        #[command(flatten)]
        filters: trail::FilterArgs,
        #[arg(long, value_enum, default_value_t = ExportKind::Jsonl)]
        format: ExportKind,
        /// Write to this file instead of standard output (a progress spinner shows on a
        /// terminal).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Service KPIs of a procedure for a period, from the histories in a stopped store: per
    /// step and overall, with the procedure's declared rates against their objectives.
    Report {
        /// The procedure id.
        procedure: String,
        /// Start of the period (inclusive): 2026-03-01 or 2026-03-01T08:00:00Z.
        #[arg(long)]
        from: String,
        /// End of the period (exclusive; default now).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        dir: trail::DataDir,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a store: `sopflow store copy --from data --to postgres://USER@HOST/DB` (or
    /// back), then check that every tree, hash chain and count is identical on both sides.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Print the JSON Schema (Draft-07) of procedure files, or of calendar files.
    Schema {
        /// Which schema to print.
        #[arg(value_enum, default_value_t = SchemaKind::Procedure)]
        kind: SchemaKind,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportKind {
    Jsonl,
    Csv,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy every instance, event, index, schedule and procedure into an empty store, then
    /// verify the copy. Stop the servers using either store first.
    Copy {
        /// The store to copy: a data directory, or postgres://USER@HOST/DATABASE.
        #[arg(long)]
        from: String,
        /// The empty store to fill: a data directory (created if missing) or a database.
        #[arg(long)]
        to: String,
    },
    /// Rewrite a store of the previous format (3) into this version's (4), in place, after
    /// verifying every hash chain: needed once after upgrading sopflow, before `serve`.
    /// Stop every server using the store and back it up first.
    Upgrade {
        /// Data directory of the embedded store.
        #[arg(long = "data-dir", visible_alias = "data", default_value = "data")]
        data_dir: PathBuf,
        /// A PostgreSQL store instead (`postgres://USER@HOST/DATABASE`).
        #[arg(long, env = "SOPFLOW_STORE", hide_env_values = true)]
        store: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new API token for a user: prints the token once, and the line to put in the
    /// user's entry of the directory file (only its SHA-256 is stored).
    Issue {
        user: String,
        #[arg(long, default_value = "org.toml")]
        directory: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Data directory of the embedded store (created if missing); with `--store` it keeps
    /// only the demo tokens file.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Keep instances in PostgreSQL instead of the data directory:
    /// `postgres://USER@HOST/DATABASE` (tables in its schema `sopflow`, created at start).
    #[arg(long, env = "SOPFLOW_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Directory of procedure files; all must validate.
    #[arg(long, default_value = "procedures")]
    procedures: PathBuf,
    /// The directory file of departments, roles and users.
    #[arg(long, default_value = "org.toml")]
    directory: PathBuf,
    /// Directory of calendar files (default: `calendars/` beside the procedures).
    #[arg(long)]
    calendars: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// `system`, or `manual` for simulations and acceptance tests: time then moves only
    /// through `POST /v1/admin/clock/advance`.
    #[arg(long, value_enum, default_value_t = ClockKind::System)]
    clock: ClockKind,
    /// Where the manual clock starts (RFC 3339, e.g. 2026-11-02T09:00:00+08:00); now if
    /// not given.
    #[arg(long)]
    clock_start: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// The calendar working days of a clock advance are counted on.
    #[arg(long, default_value = "default")]
    calendar: String,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    body_limit: usize,
    /// Seconds a request may take before it is answered 503.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Do not give users without a token hash demo tokens (production directories list
    /// every user's hash).
    #[arg(long)]
    no_demo_tokens: bool,
    /// Do not watch the procedure, calendar and directory files: changes then apply only
    /// through `POST /v1/admin/reload` or a restart.
    #[arg(long)]
    no_watch: bool,
    /// The store's page cache in MiB.
    #[arg(long, default_value_t = 256)]
    cache_mib: u64,
    /// Log as JSON lines (one object per line) instead of text.
    #[arg(long)]
    log_json: bool,
    /// The webhook subscriptions file (default: `webhooks.toml` beside the directory file,
    /// when it exists). Read like the procedures: an error stops the start; changes apply
    /// while serving.
    #[arg(long)]
    webhooks: Option<PathBuf>,
    /// The web app's address as people reach it (https://sopflow.example.com), for links
    /// in mails and webhook payloads.
    #[arg(long, env = "SOPFLOW_PUBLIC_URL")]
    public_url: Option<String>,
    /// The SMTP server mail goes through: smtp://USER:PASSWORD@HOST:587?tls=required for
    /// STARTTLS, smtps://… for TLS. Only from the environment, so a password never sits in
    /// a shell history or a process list. No mail is sent without it.
    #[arg(skip = std::env::var("SOPFLOW_SMTP_URL").ok())]
    smtp_url: Option<String>,
    /// The sender of mail (`sopflow <sopflow@example.com>`).
    #[arg(long, env = "SOPFLOW_MAIL_FROM")]
    mail_from: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClockKind {
    System,
    Manual,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaKind {
    Procedure,
    Calendar,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(anyhow::anyhow!("cannot start the runtime: {e}")),
    };
    match result {
        Ok(code) => code,
        // `sopflow validate | head` closing the pipe early is not a failure worth a message.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", each_sentence_once(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes as one text, like anyhow's `{:#}`, but leaving out a cause
/// whose text is already there: many errors quote their source in their own sentence
/// (`cannot register the procedures: {0}`), and the chain would then say it twice.
fn each_sentence_once(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
    }
    text
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate {
            paths,
            format,
            deny_warnings,
            calendars,
            directory,
            today,
        } => {
            let mut v = load::validate_paths(
                &paths,
                &Options {
                    calendars_dir: calendars,
                    registers_dir: None,
                    // The calendars must know the holidays of the coming year: checked against today.
                    coverage_from: Some(today.unwrap_or_else(|| chrono::Utc::now().date_naive())),
                },
            );
            // The directory file is checked with the procedures, so a role nobody holds (a
            // task nobody could take) shows up here rather than in production.
            let org = directory.or_else(|| {
                let beside = paths.first().and_then(|p| {
                    let dir = if p.is_dir() {
                        p.clone()
                    } else {
                        p.parent()?.to_path_buf()
                    };
                    Some(dir.join("..").join("org.toml"))
                })?;
                beside.exists().then_some(beside)
            });
            if let Some(org) = org {
                let (people, mut report) = sopflow::directory::load(&org);
                if let Some(people) = people {
                    let procs: Vec<_> = v.valid.iter().map(|p| p.procedure.clone()).collect();
                    sopflow::directory::add_procedure_checks(&mut report, &people, &procs);
                }
                v.reports.push(report);
            }
            let mut out = std::io::stdout().lock();
            match format {
                Format::Text => {
                    for r in &v.reports {
                        if r.diagnostics.is_empty() {
                            writeln!(out, "{}: ok", r.path)?;
                        } else {
                            write!(out, "{}", r.render_text())?;
                        }
                    }
                    writeln!(
                        out,
                        "checked {} file{}: {} error{}, {} warning{}",
                        v.reports.len(),
                        plural(v.reports.len()),
                        v.errors(),
                        plural(v.errors()),
                        v.warnings(),
                        plural(v.warnings())
                    )?;
                }
                Format::Json => {
                    let files: Vec<serde_json::Value> = v
                        .reports
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "path": r.path,
                                "errors": r.errors(),
                                "warnings": r.warnings(),
                                "diagnostics": r.to_json(),
                            })
                        })
                        .collect();
                    let doc = serde_json::json!({ "files": files, "errors": v.errors(), "warnings": v.warnings() });
                    writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
                }
            }
            let failed = v.errors() > 0 || (deny_warnings && v.warnings() > 0);
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Graph {
            procedure,
            format,
            procedures,
            calendars,
        } => {
            let as_path = PathBuf::from(&procedure);
            let file = if as_path.is_file() {
                as_path
            } else {
                let by_id = procedures.join(format!("{procedure}.toml"));
                if !by_id.is_file() {
                    anyhow::bail!(
                        "there is no procedure `{procedure}`: no file {} and no file {procedure}",
                        by_id.display()
                    );
                }
                by_id
            };
            let v = load::validate_paths(
                std::slice::from_ref(&file),
                &Options {
                    calendars_dir: calendars,
                    registers_dir: None,
                    coverage_from: None,
                },
            );
            let shown = file.display().to_string();
            let Some(valid) = v.valid.iter().find(|p| p.path == shown) else {
                // Draw only what validates: a graph of a broken file would mislead.
                let mut err = std::io::stderr().lock();
                for r in v.reports.iter().filter(|r| r.errors() > 0) {
                    write!(err, "{}", r.render_text())?;
                }
                writeln!(err, "{shown} has errors; fix them to draw its graph")?;
                return Ok(ExitCode::from(1));
            };
            let text = match format {
                GraphFormat::Mermaid => render::mermaid(&valid.procedure),
                GraphFormat::Dot => render::dot(&valid.procedure),
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Start {
            procedure,
            user,
            data,
            places,
        } => {
            let s = work::Session::open(&places).await?;
            let who = s.actor(&user)?;
            let data = work::parse_json_object(data.as_deref(), "--data")?;
            let inst = s
                .engine
                .start(&procedure, data, Some(&who))
                .await
                .map_err(work::explain)?;
            work::print_instance(&inst);
            Ok(ExitCode::SUCCESS)
        }
        Command::Tasks { user, places } => {
            let s = work::Session::open(&places).await?;
            let who = s.actor(&user)?;
            let rows = s.engine.tasks_for(&who)?;
            if rows.is_empty() {
                println!("no open tasks for {user}");
            }
            for r in rows {
                let how = match &r.assignee {
                    Some(a) => format!("with {a}"),
                    None => format!("for {}", r.roles.join(", ")),
                };
                let due = match r.due_ms.and_then(chrono::DateTime::from_timestamp_millis) {
                    Some(d) if d <= s.engine.clock().now() => {
                        format!("LATE, was due {}", d.format("%Y-%m-%d %H:%M UTC"))
                    }
                    Some(d) => format!("due {}", d.format("%Y-%m-%d %H:%M UTC")),
                    None => "no deadline".to_string(),
                };
                println!(
                    "{}  {:<22} {:<28} {how}  {due}  (instance {})",
                    r.task, r.procedure, r.step, r.instance
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Notifications {
            user,
            limit,
            places,
        } => {
            let s = work::Session::open(&places).await?;
            let who = s.actor(&user)?;
            let rows = s.engine.notifications_for(&who, limit)?;
            if rows.is_empty() {
                println!("no notifications for {user}");
            }
            for n in rows {
                let at = chrono::DateTime::from_timestamp_millis(n.at_ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default();
                // `@user` rows are the person's own (a reminder of a task they hold).
                let to = match n.role.strip_prefix('@') {
                    Some(_) => "you".to_string(),
                    None => n.role.clone(),
                };
                println!(
                    "{at}  for {to:<16} {}  (instance {})",
                    n.message, n.instance
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Claim { task, user, places } => {
            let s = work::Session::open(&places).await?;
            let who = s.actor(&user)?;
            let inst = s.instance_of_task(task)?;
            let after = s
                .engine
                .execute(inst.id, EngineCommand::Claim { task }, Some(&who))
                .await
                .map_err(work::explain)?;
            work::print_instance(&after);
            Ok(ExitCode::SUCCESS)
        }
        Command::Release { task, user, places } => {
            let s = work::Session::open(&places).await?;
            let who = s.actor(&user)?;
            let inst = s.instance_of_task(task)?;
            let after = s
                .engine
                .execute(inst.id, EngineCommand::Release { task }, Some(&who))
                .await
                .map_err(work::explain)?;
            work::print_instance(&after);
            Ok(ExitCode::SUCCESS)
        }
        Command::Complete {
            task,
            user,
            outcome,
            form,
            comment,
            places,
        } => {
            let s = work::Session::open(&places).await?;
            let who = s.actor(&user)?;
            let inst = s.instance_of_task(task)?;
            let form = work::parse_json_object(form.as_deref(), "--form")?;
            let after = s
                .engine
                .execute(
                    inst.id,
                    EngineCommand::Complete {
                        task,
                        outcome,
                        form,
                        comment,
                    },
                    Some(&who),
                )
                .await
                .map_err(work::explain)?;
            work::print_instance(&after);
            Ok(ExitCode::SUCCESS)
        }
        Command::Delegate {
            task,
            user,
            to,
            reason,
            places,
        } => {
            let s = work::Session::open(&places).await?;
            let who = s.actor(&user)?;
            let to = s.actor(&to)?;
            let inst = s.instance_of_task(task)?;
            let after = s
                .engine
                .execute(
                    inst.id,
                    EngineCommand::Delegate { task, to, reason },
                    Some(&who),
                )
                .await
                .map_err(work::explain)?;
            work::print_instance(&after);
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel {
            instance,
            user,
            reason,
            places,
        } => {
            let s = work::Session::open(&places).await?;
            let who = s.actor(&user)?;
            let after = s
                .engine
                .execute(instance, EngineCommand::Cancel { reason }, Some(&who))
                .await
                .map_err(work::explain)?;
            work::print_instance(&after);
            Ok(ExitCode::SUCCESS)
        }
        Command::Comment {
            instance,
            user,
            text,
            places,
        } => {
            let s = work::Session::open(&places).await?;
            let who = s.actor(&user)?;
            s.engine
                .execute(instance, EngineCommand::Comment { text }, Some(&who))
                .await
                .map_err(work::explain)?;
            println!("comment added");
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair(r) => repair::run(r).await,
        Command::Show { instance, places } => {
            let s = work::Session::open(&places).await?;
            let inst = s
                .engine
                .instance(instance)?
                .ok_or_else(|| anyhow::anyhow!("there is no instance {instance}"))?;
            work::print_instance(&inst);
            println!("data: {}", serde_json::to_string_pretty(&inst.data)?);
            println!("history:");
            work::print_history(&s.engine, instance)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command: TokenCommand::Issue { user, directory },
        } => {
            let (people, report) = sopflow::directory::load(&directory);
            let people = people.ok_or_else(|| {
                anyhow::anyhow!("{}{} has errors", report.render_text(), directory.display())
            })?;
            if people.user(&user).is_none() {
                anyhow::bail!("there is no user `{user}` in {}", directory.display());
            }
            let token = sopflow::directory::new_token()?;
            let hash = sopflow::directory::token_hash(&token);
            println!("token for {user} (shown once; give it to them and keep no copy):");
            println!("  {token}");
            println!("add its hash to {user}'s entry in {}:", directory.display());
            println!("  {}", sopflow::directory::token_line(&hash));
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve(*args).await,
        Command::Store {
            command: StoreCommand::Copy { from, to },
        } => {
            let src = sopflow::setup::open_store_at(&from, false)?;
            let dst = sopflow::setup::open_store_at(&to, true)?;
            let mut last = String::new();
            let report = sopflow::store::copy::copy(&src, &dst, &mut |tree, rows| {
                if tree != last {
                    eprintln!("copying {tree}");
                    last = tree.to_string();
                }
                let _ = rows;
            })?;
            for (tree, rows) in &report.trees {
                println!("{tree:<24} {rows:>10} rows");
            }
            println!(
                "copied and verified: {} instances, {} events, every tree identical on both sides",
                report.instances, report.events
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Store {
            command: StoreCommand::Upgrade { data_dir, store },
        } => {
            let spec = store.unwrap_or_else(|| data_dir.display().to_string());
            let s = sopflow::setup::open_for_upgrade(&spec)?;
            let mut last = String::new();
            let report = sopflow::store::upgrade::upgrade(&s, &mut |what, n| {
                if what != last {
                    eprintln!("{what}…");
                    last = what.to_string();
                }
                let _ = n;
            })?;
            if report.from == report.to {
                println!(
                    "already format {}: nothing to do ({} instances, {} events verified)",
                    report.to, report.instances, report.events
                );
            } else {
                println!(
                    "upgraded format {} to {}: {} instances and {} events verified, {} open \
                     tasks re-indexed, {} time-only audit entries removed",
                    report.from,
                    report.to,
                    report.instances,
                    report.events,
                    report.open_tasks,
                    report.audit_entries_removed
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { dir, json } => trail::verify(&dir, json),
        Command::Report {
            procedure,
            from,
            to,
            dir,
            json,
        } => trail::report(&dir, &procedure, &from, to.as_deref(), json),
        Command::Audit {
            dir,
            filters,
            limit,
            cursor,
            json,
        } => trail::query(&dir, &filters, limit, cursor.as_deref(), json),
        Command::Export {
            dir,
            filters,
            format,
            output,
        } => trail::export(
            &dir,
            &filters,
            match format {
                ExportKind::Jsonl => sopflow::audit::ExportFormat::Jsonl,
                ExportKind::Csv => sopflow::audit::ExportFormat::Csv,
            },
            output.as_ref(),
        ),
        Command::Schema { kind } => {
            let s = match kind {
                SchemaKind::Procedure => schema::procedure_schema(),
                SchemaKind::Calendar => schema::calendar_schema(),
            };
            print!("{}", schema::to_file_text(s));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Whether log lines are coloured: only for a person at a terminal, and not when they set
/// `NO_COLOR` (to anything but the empty string, as <https://no-color.org> says). Logs
/// piped to a file or a log collector must be plain text, not escape codes.
fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    use sopflow::http::server::{bind, shutdown_signal, ClockChoice, ServeConfig};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(log_colours(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ));
    if a.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let default_webhooks = Some(
        a.directory
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("webhooks.toml"),
    )
    .filter(|p| p.is_file());
    let cfg = ServeConfig {
        data_dir: a.data_dir,
        store_url: a.store,
        procedures: a.procedures,
        directory: a.directory,
        calendars: a.calendars,
        calendar: a.calendar,
        listen: a.listen,
        clock: match a.clock {
            ClockKind::System => ClockChoice::System,
            ClockKind::Manual => {
                ClockChoice::Manual(a.clock_start.map(|d| d.with_timezone(&chrono::Utc)))
            }
        },
        limits: sopflow::http::Limits {
            body_bytes: a.body_limit,
            timeout: std::time::Duration::from_secs(a.request_timeout.max(1)),
        },
        demo_tokens: !a.no_demo_tokens,
        cache_bytes: a.cache_mib.saturating_mul(1 << 20),
        watch: !a.no_watch,
        outbox: sopflow::http::server::OutboxConfig {
            webhooks: a.webhooks.or(default_webhooks),
            public_url: a.public_url,
            smtp_url: a.smtp_url,
            mail_from: a.mail_from,
        },
    };
    let bound = bind(&cfg).await?;
    // Before saying "serving": from then on a SIGTERM must stop the server cleanly.
    let shutdown = shutdown_signal();
    // The server's own lines go to stdout, which may be a pipe whose reader has gone by the
    // time the server stops; that must not turn a clean stop into a panic (println! panics
    // on a closed stdout). The tokens are in the file as well.
    let say = |line: std::fmt::Arguments<'_>| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    if !bound.issued_tokens.is_empty() {
        say(format_args!(
            "Demo API tokens (shown once; also in {}, readable only by you):",
            bound.tokens_file.display()
        ));
        for (user, token) in &bound.issued_tokens {
            say(format_args!("  {user:<16} {token}"));
        }
    }
    say(format_args!(
        "sopflow serving http://{} ({} clock, data in {})",
        bound.addr,
        if matches!(cfg.clock, ClockChoice::System) {
            "system"
        } else {
            "manual"
        },
        bound.store_description
    ));
    bound.serve(shutdown).await?;
    say(format_args!("sopflow stopped"));
    Ok(ExitCode::SUCCESS)
}

fn parse_day(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("`{s}` is not a date; write it like 2027-03-01"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn a_cause_already_quoted_is_not_said_again() {
        #[derive(Debug, thiserror::Error)]
        #[error("the inner sentence")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Quotes(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Hides(#[source] Inner);
        let e = anyhow::Error::new(Quotes(Inner));
        assert_eq!(
            format!("{e:#}"),
            "outer: the inner sentence: the inner sentence"
        );
        assert_eq!(each_sentence_once(&e), "outer: the inner sentence");
        let e = anyhow::Error::new(Hides(Inner));
        assert_eq!(each_sentence_once(&e), "outer: the inner sentence");
    }

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new("1"))));
    }
}
