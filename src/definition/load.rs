//! Loading and validating procedure files from disk: the whole pipeline in order — TOML
//! syntax, JSON Schema, typed model, meaning, graph, soundness — over a set of files, so
//! references between procedures (child procedures) and to calendars can be checked.
//!
//! Every file gets a report; a broken file never stops the others from being checked. This
//! module reads files and nothing else: it must not write, and it must not print.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::calendar::CalendarFile;
use super::diagnostic::{Diagnostic, FileReport};
use super::model::Procedure;
use super::partial::{self, Partial};
use super::register::RegisterFile;
use super::source::{ptr, SpannedDoc};
use super::{cycles, dataflow, graph, schema, semantic, soundness};

/// A procedure that passed every check, with what the registry needs to pin instances to it.
#[derive(Debug, Clone)]
pub struct ValidProcedure {
    pub path: String,
    pub procedure: Procedure,
    /// SHA-256 of the file's bytes, hex: two files with the same id and version but different
    /// hashes are different procedures, which the registry refuses.
    pub hash: String,
    /// The text that was validated and hashed (not re-read from disk, which may have changed).
    pub source: Arc<str>,
}

/// The outcome of validating a set of files.
#[derive(Debug, Default)]
pub struct Validation {
    /// One report per file asked for (and per calendar), in path order.
    pub reports: Vec<FileReport>,
    /// The procedures among them that have no errors.
    pub valid: Vec<ValidProcedure>,
    /// The calendars that have no errors, ready for working-time arithmetic.
    pub calendars: Vec<std::sync::Arc<super::calendar::Calendar>>,
    /// The register files that have no errors, with their seeded entries.
    pub registers: Vec<Arc<RegisterFile>>,
}

impl Validation {
    pub fn errors(&self) -> usize {
        self.reports.iter().map(FileReport::errors).sum()
    }

    pub fn warnings(&self) -> usize {
        self.reports.iter().map(FileReport::warnings).sum()
    }
}

/// Where to look for calendars and sibling procedures.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Directory of calendar files. Defaults to `calendars/` beside the procedures
    /// directory (`procedures/../calendars`), then `calendars/` inside it.
    pub calendars_dir: Option<PathBuf>,
    /// Directory of register files. Defaults to `registers/` beside the procedures
    /// directory, then `registers/` inside it; none is fine (no procedure may use one then).
    pub registers_dir: Option<PathBuf>,
    /// Also check that each calendar lists the holidays of the twelve months from this day
    /// (`sopflow validate` passes today). `None` leaves the date out of validation.
    pub coverage_from: Option<chrono::NaiveDate>,
}

/// One file read from disk (or given as text), parsed as far as it goes.
struct Parsed {
    path: String,
    source: Arc<str>,
    doc: Option<SpannedDoc>,
    procedure: Option<Procedure>,
    diagnostics: Vec<Diagnostic>,
    /// Set when the file had schema errors and `procedure` was read from what was left.
    partial: Option<Partial>,
}

/// Validates procedure files and directories of them.
pub fn validate_paths(paths: &[PathBuf], opts: &Options) -> Validation {
    let mut requested: Vec<PathBuf> = Vec::new();
    let mut missing: Vec<FileReport> = Vec::new();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for p in paths {
        if p.is_dir() {
            requested.extend(toml_files(p));
            dirs.insert(p.clone());
        } else if p.is_file() {
            requested.push(p.clone());
            dirs.insert(p.parent().map(Path::to_path_buf).unwrap_or_default());
        } else {
            missing.push(FileReport {
                path: p.display().to_string(),
                source: Arc::from(""),
                diagnostics: vec![Diagnostic::error(
                    "no-such-file",
                    "there is no file or directory here",
                )],
            });
        }
    }
    requested.sort();
    requested.dedup();
    // Siblings give context (a child procedure in the same directory) but are reported only
    // when asked for.
    let mut context: Vec<PathBuf> = dirs.iter().flat_map(|d| toml_files(d)).collect();
    context.sort();
    context.dedup();
    context.retain(|c| !requested.contains(c));

    let cal_dir = opts
        .calendars_dir
        .clone()
        .or_else(|| default_calendars_dir(&dirs));
    let mut validation = Validation::default();
    let calendars = match &cal_dir {
        Some(d) => load_calendars(
            d,
            opts.coverage_from,
            &mut validation.reports,
            &mut validation.calendars,
        ),
        None => HashSet::new(),
    };
    let reg_dir = opts
        .registers_dir
        .clone()
        .or_else(|| sibling_dir(&dirs, "registers"));
    if let Some(d) = &reg_dir {
        load_registers(d, &mut validation.reports, &mut validation.registers);
    }
    let registers = by_id(&validation.registers);

    let parsed_requested: Vec<Parsed> = requested.iter().map(|p| parse_file(p)).collect();
    let parsed_context: Vec<Parsed> = context.iter().map(|p| parse_file(p)).collect();
    let mut out = check_set(parsed_requested, &parsed_context, &calendars, &registers);
    validation.reports.append(&mut out.reports);
    validation.valid.append(&mut out.valid);
    validation.reports.extend(missing);
    validation
}

/// Validates one procedure given as text (the HTTP `validate` endpoint, editors), against
/// the given other procedures and calendar ids.
pub fn validate_text(
    name: &str,
    text: &str,
    others: &[Procedure],
    calendars: &HashSet<String>,
) -> Validation {
    validate_text_with(name, text, others, calendars, &[])
}

/// [`validate_text`] with the registers the procedure may use.
pub fn validate_text_with(
    name: &str,
    text: &str,
    others: &[Procedure],
    calendars: &HashSet<String>,
    registers: &[Arc<RegisterFile>],
) -> Validation {
    let parsed = parse_text(name.to_string(), Arc::from(text));
    let context: Vec<Parsed> = others
        .iter()
        .map(|p| Parsed {
            path: format!("{}.toml", p.id),
            source: Arc::from(""),
            doc: None,
            procedure: Some(p.clone()),
            diagnostics: vec![],
            partial: None,
        })
        .collect();
    check_set(vec![parsed], &context, calendars, &by_id(registers))
}

fn by_id(registers: &[Arc<RegisterFile>]) -> HashMap<String, Arc<RegisterFile>> {
    registers
        .iter()
        .map(|r| (r.id.clone(), r.clone()))
        .collect()
}

/// Every `.toml` entry of `dir` that is not a directory. A link to nowhere or a file that
/// cannot be opened is kept, so reading it reports the problem at its name: skipping it
/// would silently leave a procedure out of the set the process owner expects to run.
pub fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                // Hidden files are editors' (an Emacs lock `.#x.toml`, a swap file): never
                // a procedure someone means to run.
                .filter(|p| {
                    !p.is_dir()
                        && p.extension().is_some_and(|e| e == "toml")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The calendars directory `validate_paths` uses for a procedures directory by default.
pub fn calendars_dir_for(procedures: &Path) -> Option<PathBuf> {
    default_calendars_dir(&BTreeSet::from([procedures.to_path_buf()]))
}

fn default_calendars_dir(dirs: &BTreeSet<PathBuf>) -> Option<PathBuf> {
    sibling_dir(dirs, "calendars")
}

/// `name/` beside one of the procedure directories, else inside one, else in the working
/// directory.
fn sibling_dir(dirs: &BTreeSet<PathBuf>, name: &str) -> Option<PathBuf> {
    for d in dirs {
        let base = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d.as_path()
        };
        for candidate in [base.join("..").join(name), base.join(name)] {
            if candidate.is_dir() {
                return Some(candidate);
            }
        }
    }
    let here = PathBuf::from(name);
    here.is_dir().then_some(here)
}

/// Reads and checks every `.toml` file of `dir` that is not a procedure (a calendar, a
/// register): text, TOML syntax, `schema`, the typed `T`, then `check` (given the file's
/// stem), which returns the file's own findings. Each file gets a report; a clean one is
/// handed to `accept`. The loop the two kinds share; what differs is in the closures.
fn load_side_files<T: serde::de::DeserializeOwned>(
    dir: &Path,
    what: &str,
    schema_of: (&'static serde_json::Value, &jsonschema::Validator),
    reports: &mut Vec<FileReport>,
    mut check: impl FnMut(&T, &SpannedDoc, &str) -> Vec<Diagnostic>,
    mut accept: impl FnMut(T, &mut Vec<Diagnostic>),
) {
    for path in toml_files(dir) {
        let display = path.display().to_string();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let (source, mut diagnostics) = match read(&path) {
            Ok(s) => (s, vec![]),
            Err(e) => {
                let (shown, d) = *e;
                (shown, vec![d])
            }
        };
        if diagnostics.is_empty() {
            match SpannedDoc::parse(&source) {
                Err(errs) => diagnostics = errs,
                Ok(doc) => {
                    diagnostics = schema::check(&doc, schema_of.0, schema_of.1);
                    if diagnostics.is_empty() {
                        match serde_json::from_value::<T>(doc.value.clone()) {
                            Ok(item) => {
                                diagnostics = check(&item, &doc, &stem);
                                if !diagnostics.iter().any(Diagnostic::is_error) {
                                    accept(item, &mut diagnostics);
                                }
                            }
                            Err(e) => diagnostics.push(Diagnostic::error(
                                "schema",
                                format!("the {what} could not be read: {e}"),
                            )),
                        }
                    }
                }
            }
        }
        let mut report = FileReport {
            path: display,
            source,
            diagnostics,
        };
        report.sort();
        reports.push(report);
    }
}

/// Reads and checks every register file of `dir`; the clean ones go to `valid`.
fn load_registers(dir: &Path, reports: &mut Vec<FileReport>, valid: &mut Vec<Arc<RegisterFile>>) {
    load_side_files(
        dir,
        "register",
        (schema::register_schema(), schema::register_validator()),
        reports,
        super::register::check,
        |reg: RegisterFile, _| valid.push(Arc::new(reg)),
    );
}

fn load_calendars(
    dir: &Path,
    coverage_from: Option<chrono::NaiveDate>,
    reports: &mut Vec<FileReport>,
    compiled: &mut Vec<std::sync::Arc<super::calendar::Calendar>>,
) -> HashSet<String> {
    let mut ids = HashSet::new();
    load_side_files(
        dir,
        "calendar",
        (schema::calendar_schema(), schema::calendar_validator()),
        reports,
        |cal: &CalendarFile, doc, stem| {
            let mut found = super::calendar::check(cal, doc, stem);
            if let Some(today) = coverage_from {
                found.extend(super::calendar::check_coverage(cal, doc, today));
            }
            found
        },
        |cal: CalendarFile, found| match super::calendar::Calendar::from_file(&cal) {
            Ok(c) => {
                ids.insert(cal.id.clone());
                compiled.push(std::sync::Arc::new(c));
            }
            Err(e) => found.push(Diagnostic::error("bad-calendar", e.to_string())),
        },
    );
    ids
}

/// The file's text, or the one diagnostic that stops it being read, with the text to show
/// it against: for a file that is not UTF-8, the text with each bad sequence shown as `�`
/// (the text before the first one is unchanged, so the span points at it on its own line).
fn read(path: &Path) -> Result<Arc<str>, Box<(Arc<str>, Diagnostic)>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Box::new((
            Arc::from(""),
            Diagnostic::error("unreadable-file", format!("the file cannot be read: {e}")),
        ))
    })?;
    String::from_utf8(bytes).map(Arc::from).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let shown: Arc<str> = Arc::from(String::from_utf8_lossy(e.as_bytes()).as_ref());
        let d = Diagnostic::error("not-utf8", "the file is not UTF-8 text")
            .at(Some(at..at + char::REPLACEMENT_CHARACTER.len_utf8()))
            .label("not UTF-8")
            .help("save the file as UTF-8");
        Box::new((shown, d))
    })
}

fn parse_file(path: &Path) -> Parsed {
    let display = path.display().to_string();
    match read(path) {
        Ok(source) => parse_text(display, source),
        Err(e) => {
            let (shown, d) = *e;
            Parsed {
                path: display,
                source: shown,
                doc: None,
                procedure: None,
                diagnostics: vec![d],
                partial: None,
            }
        }
    }
}

/// Layers (a) and (b): syntax and schema; then the typed model — after schema errors, of
/// what is left without the refused parts (`partial.rs`), so the meaning checks still run.
fn parse_text(path: String, source: Arc<str>) -> Parsed {
    let mut parsed = Parsed {
        path,
        source: source.clone(),
        doc: None,
        procedure: None,
        diagnostics: Vec::new(),
        partial: None,
    };
    let doc = match SpannedDoc::parse(&source) {
        Ok(doc) => doc,
        Err(errs) => {
            parsed.diagnostics = errs;
            return parsed;
        }
    };
    parsed.diagnostics = schema::check(
        &doc,
        schema::procedure_schema(),
        schema::procedure_validator(),
    );
    if parsed.diagnostics.is_empty() {
        match serde_json::from_value::<Procedure>(doc.value.clone()) {
            Ok(p) => parsed.procedure = Some(p),
            // The schema is generated from the same types, so this means the two disagree:
            // still say so in the file's terms rather than fail.
            Err(e) => parsed.diagnostics.push(Diagnostic::error(
                "schema",
                format!("the procedure could not be read: {e}"),
            )),
        }
    } else if let Some(partial) = partial::prune(
        &doc,
        schema::procedure_schema(),
        schema::procedure_validator(),
    ) {
        // What is left passed the schema; should serde still refuse it, the schema errors
        // already say what is wrong.
        if let Ok(p) = serde_json::from_value::<Procedure>(partial.doc.value.clone()) {
            parsed.procedure = Some(p);
            parsed.doc = Some(partial.doc.clone());
            parsed.partial = Some(partial);
            return parsed;
        }
    }
    parsed.doc = Some(doc);
    parsed
}

/// Layer (c) over a set: meaning, graph and soundness of every requested file, with the
/// context files available for references.
fn check_set(
    requested: Vec<Parsed>,
    context: &[Parsed],
    calendars: &HashSet<String>,
    registers: &HashMap<String, Arc<RegisterFile>>,
) -> Validation {
    let mut validation = Validation::default();
    let mut by_id: HashMap<&str, &Procedure> = HashMap::new();
    let mut first_path: HashMap<&str, &str> = HashMap::new();
    let mut dup: HashMap<usize, String> = HashMap::new();
    for (i, p) in requested.iter().enumerate() {
        // A placeholder id names nothing another file could refer to.
        if p.partial.as_ref().is_some_and(|x| x.id_replaced) {
            continue;
        }
        if let Some(proc) = &p.procedure {
            if let Some(prev) = first_path.get(proc.id.as_str()) {
                dup.insert(i, prev.to_string());
            } else {
                first_path.insert(&proc.id, &p.path);
                by_id.insert(&proc.id, proc);
            }
        }
    }
    for p in context {
        if let Some(proc) = &p.procedure {
            by_id.entry(&proc.id).or_insert(proc);
        }
    }
    for (i, p) in requested.iter().enumerate() {
        let mut diagnostics = p.diagnostics.clone();
        if let (Some(proc), Some(doc)) = (&p.procedure, &p.doc) {
            if let Some(prev) = dup.get(&i) {
                diagnostics.push(
                    Diagnostic::error(
                        "duplicate-procedure",
                        format!(
                            "another file, {prev}, already defines the procedure `{}`",
                            proc.id
                        ),
                    )
                    .at(doc.value_span(&ptr(&["id"])))
                    .help(
                        "each procedure id belongs to exactly one file; give this one its own id",
                    ),
                );
            }
            let stem = Path::new(&p.path)
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string);
            let ctx = semantic::Context {
                procedures: by_id.clone(),
                calendars: calendars.clone(),
                file_stem: stem,
                registers: registers.clone(),
            };
            // With schema errors, findings that only restate a refused part are left out.
            let partial = p.partial.as_ref();
            let keeps = |d: &Diagnostic| partial.is_none_or(|x| x.keeps(d));
            let mut meaning = semantic::check(proc, doc, &ctx);
            meaning.extend(cycles::check(proc, doc, &by_id));
            diagnostics.extend(meaning.into_iter().filter(keeps));
            // A step graph that lost an edge, a step or a kind would only show the loss.
            if !partial.is_some_and(|x| x.reshaped) {
                let shape = without_cascades(&diagnostics, graph::check(proc, doc));
                diagnostics.extend(shape.into_iter().filter(keeps));
                let fields = semantic::declared_fields(proc, &ctx);
                diagnostics.extend(
                    dataflow::check(proc, doc, &fields)
                        .into_iter()
                        .filter(keeps),
                );
            }
            // Soundness explores every interleaving; on a graph with broken references or
            // shape errors its findings would only restate them less clearly.
            if !diagnostics.iter().any(Diagnostic::is_error) {
                diagnostics.extend(soundness::check(proc, doc));
            }
            if !diagnostics.iter().any(Diagnostic::is_error) {
                validation.valid.push(ValidProcedure {
                    path: p.path.clone(),
                    procedure: proc.clone(),
                    hash: hash_hex(p.source.as_bytes()),
                    source: p.source.clone(),
                });
            }
        }
        let mut report = FileReport {
            path: p.path.clone(),
            source: p.source.clone(),
            diagnostics,
        };
        report.sort();
        validation.reports.push(report);
    }
    validation
}

/// Drops graph findings that only restate an earlier error: with a misspelt step reference
/// the target looks unreachable, and without any end step every loop looks endless. Fixing
/// the earlier error fixes these too, so showing them would only bury it.
fn without_cascades(earlier: &[Diagnostic], graph: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let has = |code: &str| earlier.iter().any(|d| d.code == code);
    let broken_refs = has("unknown-step");
    let no_end = has("no-end-step");
    graph
        .into_iter()
        .filter(|d| !(broken_refs && d.code == "unreachable-step"))
        .filter(|d| !(no_end && d.code == "loop-without-exit"))
        .collect()
}

/// Parses procedure text into the model without the meaning checks, for text that was
/// validated when it was registered (the registry's stored sources).
pub fn parse_procedure(text: &str) -> Option<Procedure> {
    let doc = SpannedDoc::parse(text).ok()?;
    serde_json::from_value(doc.value).ok()
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn hash_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
