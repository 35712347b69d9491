//! The `sopflow` command: validate procedure files, print their schema, draw their graph.
//! Argument parsing and output only; all the work is in the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sopflow::definition::load::{self, Options};
use sopflow::definition::{render, schema};

#[derive(Parser)]
#[command(name = "sopflow", version, about = "Runs an organisation's control procedures, written as TOML state graphs.")]
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
    /// Print the JSON Schema (Draft-07) of procedure files, or of calendar files.
    Schema {
        /// Which schema to print.
        #[arg(value_enum, default_value_t = SchemaKind::Procedure)]
        kind: SchemaKind,
    },
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
    match run(cli) {
        Ok(code) => code,
        // `sopflow validate | head` closing the pipe early is not a failure worth a message.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate {
            paths,
            format,
            deny_warnings,
            calendars,
        } => {
            let v = load::validate_paths(&paths, &Options { calendars_dir: calendars });
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
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
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
            let v = load::validate_paths(std::slice::from_ref(&file), &Options { calendars_dir: calendars });
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
