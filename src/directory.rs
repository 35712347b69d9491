//! The directory: who works here, in which department, holding which roles — the file
//! (`org.toml`) an administrator edits, its JSON Schema, its checks with located diagnostics,
//! and the compiled [`Directory`] the engine and the HTTP layer look people up in.
//!
//! Procedures name roles; the directory says who holds them. A step is offered to every
//! active holder of its role (or to the one person a data field names), a delegate's level is
//! compared with the delegator's, an evaluator's department with the audited one, and an API
//! token is recognised by its SHA-256 hash listed under the user.
//!
//! The file goes through the same layers as a procedure (`definition::source`, `schema`,
//! `diagnostic`): TOML syntax → JSON Schema → typed model → meaning. Every problem is reported
//! with a span; a file with an error yields no `Directory`.
//!
//! This module must not decide who may do a step (that is the engine's assignment rules; the
//! directory only answers who holds what), must not print, and must never hold, log or
//! render an API token: only hashes are read and stored. [`new_token`] is the one place a
//! token exists, and it hands it straight back to the caller.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::definition::diagnostic::{did_you_mean, line_col, Diagnostic, FileReport};
use crate::definition::load::hash_hex;
use crate::definition::model::Procedure;
use crate::definition::schema::{schema_for, validator};
use crate::definition::source::{ptr, SpannedDoc};

// ---------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------

/// The organisation's directory: its departments, the roles procedures assign work to, and
/// the people who hold them. sopflow reads it from `org.toml`. A step of a procedure is
/// offered to every active user holding the step's role.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sopflow directory")]
pub struct DirectoryFile {
    /// Name of the organisation or of this directory ("Example Machinery Co., Ltd.").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,

    /// The departments, by id: `[departments.quality]` with a `name`, and a `parent` for a
    /// department inside another one. Procedures refer to departments by id (the audited
    /// department of an internal evaluation). Ids are lower-case letters, digits, `_`, `-`
    /// and `.`.
    #[serde(default)]
    pub departments: IndexMap<String, Department>,

    /// The roles, by id, each with a description (`quality = "Quality department staff"`).
    /// Every role a procedure assigns work to must be declared here and held by at least one
    /// active user, or its steps can never be done. Ids are lower-case letters, digits, `_`,
    /// `-` and `.`.
    #[serde(default)]
    pub roles: IndexMap<String, String>,

    /// The people, one `[[users]]` table each.
    #[serde(default)]
    pub users: Vec<User>,
}

/// A department (or team, or site) of the organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Department {
    /// Name shown to people ("Quality Department").
    #[schemars(length(min = 1))]
    pub name: String,

    /// Id of the department this one belongs to, if any. A person of a sub-department also
    /// counts as belonging to its parent (an evaluator from the quality lab is not
    /// independent of the quality department).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// A person who can sign in, take tasks and sign steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login id, written in the history of every step the person does, so never reuse or
    /// change it once used. Lower-case letters, digits, `_`, `-` and `.` (`li.wei`).
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_.-]*$"), length(max = 64))]
    pub id: String,

    /// Full name shown to others ("Li Wei").
    #[schemars(length(min = 1))]
    pub name: String,

    /// Id of the person's department, declared under `[departments]`.
    pub department: String,

    /// Ids of the roles the person holds, declared under `[roles]`. The person is offered
    /// every step of those roles.
    #[serde(default)]
    pub roles: Vec<String>,

    /// Rank, for delegation "to personnel at the same level or above": 1 staff,
    /// 2 team leader or specialist, 3 department manager, 4 management representative or
    /// deputy general manager, 5 general manager. Higher numbers are allowed if your
    /// organisation has more ranks; only the order matters.
    #[schemars(range(min = 1))]
    pub level: u8,

    /// E-mail address for notifications and reminders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,

    /// SHA-256 hashes (64 hexadecimal characters) of the person's API tokens, as printed by
    /// `sopflow token issue USER`. Never write a token itself here. Several hashes let a new
    /// token be issued before the old one is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_sha256: Vec<String>,

    /// `false` for someone who left or is away for good: the record stays (the history names
    /// them) but they are offered no tasks, hold no role and cannot sign in. Defaults to true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The JSON Schema of the directory file, as checked in at `schemas/directory.schema.json`.
pub fn directory_schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(schema_for::<DirectoryFile>)
}

/// A compiled validator for [`directory_schema`].
pub fn directory_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    // Generated from our own types: a failure is a bug in this crate, caught by the schema
    // test, never something a file can cause.
    V.get_or_init(|| validator(directory_schema()).expect("directory schema compiles"))
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads and checks a directory file. Returns the compiled directory when the file has no
/// errors (warnings allowed), and the report either way.
pub fn load(path: &Path) -> (Option<Directory>, FileReport) {
    let name = path.display().to_string();
    match std::fs::read(path) {
        Err(e) => (
            None,
            FileReport {
                path: name,
                source: Arc::from(""),
                diagnostics: vec![Diagnostic::error(
                    "unreadable-file",
                    format!("the directory file cannot be read: {e}"),
                )],
            },
        ),
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_text(&name, &text),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let source: Arc<str> = Arc::from(String::from_utf8_lossy(e.as_bytes()).as_ref());
                (
                    None,
                    FileReport {
                        path: name,
                        source,
                        diagnostics: vec![Diagnostic::error(
                            "not-utf8",
                            "the file is not UTF-8 text",
                        )
                        .at(Some(at..at + 1))
                        .help("save the file as UTF-8")],
                    },
                )
            }
        },
    }
}

/// Checks a directory given as text (`name` is used in the report only).
pub fn load_text(name: &str, text: &str) -> (Option<Directory>, FileReport) {
    let (dir, diagnostics) = parse(text);
    let mut report = FileReport {
        path: name.to_string(),
        source: Arc::from(text),
        diagnostics,
    };
    report.sort();
    (dir, report)
}

fn parse(text: &str) -> (Option<Directory>, Vec<Diagnostic>) {
    let doc = match SpannedDoc::parse(text) {
        Ok(doc) => doc,
        Err(errs) => return (None, errs),
    };
    let diagnostics: Vec<Diagnostic> =
        crate::definition::schema::check(&doc, directory_schema(), directory_validator())
            .into_iter()
            .map(|d| reword(d, &doc))
            .collect();
    if !diagnostics.is_empty() {
        return (None, diagnostics);
    }
    let file = match serde_json::from_value::<DirectoryFile>(doc.value.clone()) {
        Ok(f) => f,
        // The schema comes from the same types, so this means they disagree: still report it
        // against the file rather than fail.
        Err(e) => {
            return (
                None,
                vec![
                    Diagnostic::error("schema", format!("the directory could not be read: {e}"))
                        .at(doc.first_key_span()),
                ],
            )
        }
    };
    let diagnostics = check(&file, &doc);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return (None, diagnostics);
    }
    (Some(Directory::compile(file, &doc)), diagnostics)
}

/// The schema layer words places for procedures ("the procedure", "`users`"); say them in
/// the directory's terms, naming the user or department the problem is in.
fn reword(mut d: Diagnostic, doc: &SpannedDoc) -> Diagnostic {
    let start = d.span.as_ref().map(|s| s.start);
    // An array-of-tables item's own span may be just its `[[users]]` header, so a table's
    // extent is taken over every key and value written in it.
    // The size of the table's extent when the diagnostic lies inside it. A department table
    // extended later in the file (`[departments.x.sub]`) stretches over whatever lies
    // between, so the smallest enclosing table is the one the problem is in.
    let inside = |p: &str, v: &serde_json::Value| {
        let mut extent: Option<Range<usize>> = None;
        spans_under(doc, p, v, &mut extent);
        match (extent, start) {
            (Some(e), Some(s)) if e.start <= s && s < e.end => Some(e.len()),
            _ => None,
        }
    };
    let mut place: Option<(usize, &str, String)> = None;
    let mut consider = |size: Option<usize>, from: &'static str, to: String| {
        if let Some(size) = size {
            if place.as_ref().is_none_or(|(best, _, _)| size < *best) {
                place = Some((size, from, to));
            }
        }
    };
    if let Some(users) = doc.value.get("users").and_then(|u| u.as_array()) {
        for (i, u) in users.iter().enumerate() {
            let who = match u.get("id").and_then(|v| v.as_str()) {
                Some(id) if is_id(id) => format!("user `{id}`"),
                _ => format!("user {}", i + 1),
            };
            consider(
                inside(&ptr(&["users".to_string(), i.to_string()]), u),
                "`users`",
                who,
            );
        }
    }
    if let Some(depts) = doc.value.get("departments").and_then(|d| d.as_object()) {
        for (k, v) in depts {
            consider(
                inside(&ptr(&["departments", k.as_str()]), v),
                "`departments`",
                format!("department `{k}`"),
            );
        }
    }
    d.message = d.message.replacen("the procedure", "the directory", 1);
    if let Some((_, from, to)) = &place {
        d.message = d.message.replacen(from, to, 1);
    }
    if d.code == "bad-id" {
        d.help = Some(ID_HELP.to_string());
    }
    d
}

/// Widens `extent` to cover the key and value spans of `pointer` and everything under it.
fn spans_under(
    doc: &SpannedDoc,
    pointer: &str,
    value: &serde_json::Value,
    extent: &mut Option<Range<usize>>,
) {
    if !doc.contains(pointer) {
        return;
    }
    for span in [doc.key_span(pointer), doc.value_span(pointer)]
        .into_iter()
        .flatten()
    {
        *extent = Some(match extent.take() {
            Some(e) => e.start.min(span.start)..e.end.max(span.end),
            None => span,
        });
    }
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                spans_under(
                    doc,
                    &format!("{pointer}/{}", crate::definition::source::escape(k)),
                    v,
                    extent,
                );
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                spans_under(doc, &format!("{pointer}/{i}"), v, extent);
            }
        }
        _ => {}
    }
}

const ID_HELP: &str =
    "use lower-case letters, digits, `_`, `-` and `.`, starting with a letter or digit, like `li.wei` or `after_sales`";

/// Whether `s` is a valid id for a user, department or role.
pub fn is_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
        && s.len() <= 64
}

/// Layer (c): the meaning of a well-formed directory. Every finding, each at its place.
fn check(file: &DirectoryFile, doc: &SpannedDoc) -> Vec<Diagnostic> {
    let mut out = Vec::new();

    if file.users.is_empty() {
        out.push(
            Diagnostic::error("empty-directory", "the directory lists no users, so nobody could do any step")
                .at(doc.first_key_span().or(Some(0..0)))
                .label("no `[[users]]` in this file")
                .help("add a `[[users]]` table for each person, with `id`, `name`, `department`, `roles` and `level`"),
        );
    }

    for key in file.departments.keys() {
        if !is_id(key) {
            out.push(bad_key_id(
                "department",
                key,
                doc.key_span(&ptr(&["departments", key])),
            ));
        }
    }
    for key in file.roles.keys() {
        if !is_id(key) {
            out.push(bad_key_id("role", key, doc.key_span(&ptr(&["roles", key]))));
        }
    }

    check_departments(file, doc, &mut out);
    check_users(file, doc, &mut out);
    out
}

fn bad_key_id(what: &str, key: &str, at: Option<Range<usize>>) -> Diagnostic {
    Diagnostic::error("bad-id", format!("the {what} id \"{key}\" is not allowed"))
        .at(at)
        .help(ID_HELP)
}

fn check_departments(file: &DirectoryFile, doc: &SpannedDoc, out: &mut Vec<Diagnostic>) {
    let names = || file.departments.keys().map(String::as_str);
    for (id, dept) in &file.departments {
        if let Some(parent) = &dept.parent {
            if !file.departments.contains_key(parent) {
                out.push(
                    Diagnostic::error(
                        "unknown-department",
                        format!("the parent of department `{id}` is `{parent}`, which is not a declared department"),
                    )
                    .at(doc.value_span(&ptr(&["departments", id, "parent"])))
                    .label("not under `[departments]`")
                    .suggest(parent, names()),
                );
            }
        }
    }
    // Follow each parent chain; a chain that comes back to a department it has visited is a
    // cycle. Report each cycle once, at the first of its members in file order.
    let mut reported: HashSet<&str> = HashSet::new();
    for start in file.departments.keys() {
        let mut chain: Vec<&str> = vec![start.as_str()];
        let mut at = start.as_str();
        while let Some(parent) = file.departments.get(at).and_then(|d| d.parent.as_deref()) {
            if !file.departments.contains_key(parent) {
                break;
            }
            if let Some(pos) = chain.iter().position(|c| *c == parent) {
                let cycle = &chain[pos..];
                if pos == 0 && !cycle.iter().any(|c| reported.contains(c)) {
                    reported.extend(cycle.iter().copied());
                    let mut path: Vec<String> = cycle.iter().map(|c| format!("`{c}`")).collect();
                    path.push(format!("`{start}`"));
                    out.push(
                        Diagnostic::error(
                            "department-cycle",
                            if cycle.len() == 1 {
                                format!("department `{start}` is its own parent")
                            } else {
                                format!("the departments {} are each other's parents", path.join(" → "))
                            },
                        )
                        .at(doc.value_span(&ptr(&["departments", start, "parent"])))
                        .label("this parent leads back here")
                        .help("a department's parents must end at a department without `parent`; remove or change one of these"),
                    );
                }
                break;
            }
            chain.push(parent);
            at = parent;
        }
    }
}

fn check_users(file: &DirectoryFile, doc: &SpannedDoc, out: &mut Vec<Diagnostic>) {
    let dept_names = || file.departments.keys().map(String::as_str);
    let role_names = || file.roles.keys().map(String::as_str);
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut token_owner: HashMap<String, &str> = HashMap::new();
    let at = |i: usize, rest: &[&str]| {
        let mut segs = vec!["users".to_string(), i.to_string()];
        segs.extend(rest.iter().map(|s| s.to_string()));
        ptr(&segs)
    };

    for (i, user) in file.users.iter().enumerate() {
        if let Some(&first) = first_seen.get(user.id.as_str()) {
            let line = doc
                .value_span(&at(first, &["id"]))
                .map(|s| line_col(doc.source_text(), s.start).0);
            out.push(
                Diagnostic::error(
                    "duplicate-user",
                    format!("the user id `{}` is used twice", user.id),
                )
                .at(doc.value_span(&at(i, &["id"])))
                .label("already used above")
                .help(match line {
                    Some(l) => {
                        format!("it was first used on line {l}; each person needs their own id")
                    }
                    None => "each person needs their own id".to_string(),
                }),
            );
        } else {
            first_seen.insert(&user.id, i);
        }

        if !file.departments.contains_key(&user.department) {
            let d = Diagnostic::error(
                "unknown-department",
                format!(
                    "user `{}` is in department `{}`, which is not declared",
                    user.id, user.department
                ),
            )
            .at(doc.value_span(&at(i, &["department"])))
            .label("not under `[departments]`");
            out.push(match did_you_mean(&user.department, dept_names()) {
                Some(best) => d.help(format!("did you mean `{best}`?")),
                None => d.help(format!(
                    "declare it as `[departments.{}]` with a `name`, or use one of: {}",
                    user.department,
                    list(dept_names())
                )),
            });
        }

        let mut seen_roles: HashSet<&str> = HashSet::new();
        for (j, role) in user.roles.iter().enumerate() {
            let place = doc.value_span(&at(i, &["roles", &j.to_string()]));
            if !file.roles.contains_key(role) {
                let d = Diagnostic::error(
                    "unknown-role",
                    format!(
                        "user `{}` holds the role `{role}`, which is not declared",
                        user.id
                    ),
                )
                .at(place)
                .label("not under `[roles]`");
                out.push(match did_you_mean(role, role_names()) {
                    Some(best) => d.help(format!("did you mean `{best}`?")),
                    None => d.help(format!(
                        "declare it under `[roles]` as `{role} = \"what the role does\"`"
                    )),
                });
            } else if !seen_roles.insert(role) {
                out.push(
                    Diagnostic::warning(
                        "duplicate-role",
                        format!("user `{}` lists the role `{role}` twice", user.id),
                    )
                    .at(place)
                    .label("listed already")
                    .help("remove one of them"),
                );
            }
        }

        if let Some(email) = &user.email {
            if !plausible_email(email) {
                out.push(
                    Diagnostic::error("bad-email", format!("\"{email}\" is not an e-mail address"))
                        .at(doc.value_span(&at(i, &["email"])))
                        .help("write it as `name@example.com`, or leave `email` out"),
                );
            }
        }

        for (j, hash) in user.token_sha256.iter().enumerate() {
            let place = doc.value_span(&at(i, &["token_sha256", &j.to_string()]));
            if !is_sha256_hex(hash) {
                // Never echo the value: it may be a token pasted by mistake.
                let d = if hash.starts_with(TOKEN_PREFIX) {
                    Diagnostic::error(
                        "bad-token-hash",
                        format!("user `{}` has an API token written in plain text where its hash belongs", user.id),
                    )
                    .label("a secret in plain text")
                    .help("remove it, treat the token as leaked, and issue a new one with `sopflow token issue USER`; store only the hash it prints")
                } else {
                    Diagnostic::error(
                        "bad-token-hash",
                        format!(
                            "a token hash of user `{}` is not a SHA-256 hash: it must be 64 hexadecimal characters, this is {} characters",
                            user.id,
                            hash.chars().count()
                        ),
                    )
                    .label("not 64 hexadecimal characters")
                    .help("copy the line printed by `sopflow token issue USER`; never write a token itself here")
                };
                out.push(d.at(place));
                continue;
            }
            let key = hash.to_ascii_lowercase();
            match token_owner.get(&key) {
                Some(owner) if *owner == user.id => out.push(
                    Diagnostic::warning(
                        "duplicate-token",
                        format!("user `{}` lists the same token hash twice", user.id),
                    )
                    .at(place)
                    .help("remove one of them"),
                ),
                Some(owner) => out.push(
                    Diagnostic::error(
                        "duplicate-token",
                        format!(
                            "user `{}` has the same token hash as user `{owner}`",
                            user.id
                        ),
                    )
                    .at(place)
                    .label("one token would sign in as two people")
                    .help("a token belongs to one person: issue each of them their own"),
                ),
                None => {
                    token_owner.insert(key, &user.id);
                }
            }
        }
    }

    for role in file.roles.keys() {
        let holders: Vec<&User> = file
            .users
            .iter()
            .filter(|u| u.roles.contains(role))
            .collect();
        if holders.iter().any(|u| u.active) {
            continue;
        }
        let message = if holders.is_empty() {
            format!("nobody holds the role `{role}`")
        } else {
            format!(
                "only inactive users hold the role `{role}` ({})",
                list(holders.iter().map(|u| u.id.as_str()))
            )
        };
        out.push(
            Diagnostic::warning("unheld-role", message)
                .at(doc.key_span(&ptr(&["roles", role])))
                .label("no active holder")
                .help("steps offered to this role would wait forever: give it to an active user, or remove it if no procedure uses it"),
        );
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plausible_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------------------------------------
// Procedures against the directory
// ---------------------------------------------------------------------------------------------

/// The roles `procedure` assigns, signs, delegates, escalates or notifies to, in the order
/// they first appear: the declared `[roles]`, then any named elsewhere (the procedure's own
/// checks reject undeclared ones, but this must not depend on that having run).
fn roles_used(procedure: &Procedure) -> Vec<&str> {
    let mut all: Vec<&str> = procedure.roles.keys().map(String::as_str).collect();
    all.extend(
        procedure
            .start_roles
            .iter()
            .chain(&procedure.cancel_roles)
            .map(String::as_str),
    );
    for step in procedure.steps.values() {
        all.extend(step.role.as_deref());
        if let Some(s) = &step.signatures {
            all.extend(s.roles.iter().map(String::as_str));
        }
        if let Some(d) = &step.delegation {
            all.extend(d.to_roles.iter().map(String::as_str));
        }
        if let Some(deadline) = &step.deadline {
            for action in &deadline.on_breach {
                all.extend(
                    [&action.escalate_to, &action.reassign_to, &action.notify]
                        .into_iter()
                        .flatten()
                        .map(String::as_str),
                );
            }
        }
    }
    let mut seen = HashSet::new();
    all.retain(|r| seen.insert(*r));
    all
}

/// Roles the procedures use that the directory does not declare, or that no active user
/// holds — tasks nobody could ever take. Warnings for the directory's report, located at the
/// role (or at `[roles]`) when the directory was loaded from text.
pub fn check_procedures(dir: &Directory, procedures: &[Procedure]) -> Vec<Diagnostic> {
    let mut used: IndexMap<&str, Vec<&Procedure>> = IndexMap::new();
    for p in procedures {
        for r in roles_used(p) {
            used.entry(r).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    for (role, procs) in used {
        let ids = list(procs.iter().map(|p| p.id.as_str()));
        if !dir.inner.file.roles.contains_key(role) {
            let description = procs
                .iter()
                .find_map(|p| p.roles.get(role))
                .map_or("…", String::as_str);
            let d = Diagnostic::warning(
                "role-not-in-directory",
                format!("the role `{role}`, used by {ids}, is not declared in the directory"),
            )
            .at(dir.inner.roles_span.clone())
            .label("missing here");
            out.push(match did_you_mean(role, dir.inner.file.roles.keys().map(String::as_str)) {
                Some(best) => d.help(format!(
                    "did you mean `{best}`? Otherwise add `{role} = \"{description}\"` under `[roles]` and give it to someone"
                )),
                None => d.help(format!("add `{role} = \"{description}\"` under `[roles]` and give it to someone")),
            });
        } else if dir.users_with_role(role).next().is_none() {
            out.push(
                Diagnostic::warning(
                    "role-not-held",
                    format!("no active user holds the role `{role}`, so steps of {ids} offered to it could never be done"),
                )
                .at(dir.inner.role_spans.get(role).cloned())
                .label("no active holder")
                .help(format!("add `{role}` to the `roles` of at least one active user")),
            );
        }
    }
    out
}

/// Adds [`check_procedures`]'s findings to the directory's report, dropping the generic
/// `unheld-role` warning for a role they explain better.
pub fn add_procedure_checks(report: &mut FileReport, dir: &Directory, procedures: &[Procedure]) {
    let found = check_procedures(dir, procedures);
    let explained: Vec<Option<Range<usize>>> = found
        .iter()
        .filter(|d| d.code == "role-not-held")
        .map(|d| d.span.clone())
        .collect();
    report
        .diagnostics
        .retain(|d| !(d.code == "unheld-role" && d.span.is_some() && explained.contains(&d.span)));
    report.diagnostics.extend(found);
    report.sort();
}

// ---------------------------------------------------------------------------------------------
// The compiled directory
// ---------------------------------------------------------------------------------------------

/// A checked directory with its lookups built: cheap to clone (one `Arc`), safe to share
/// between threads.
///
/// Inactive users keep their record, since the history names them, but hold no role and cannot
/// sign in: [`holds`](Self::holds), [`users_with_role`](Self::users_with_role) and
/// [`by_token_hash`](Self::by_token_hash) ignore them, while [`user`](Self::user),
/// [`roles_of`](Self::roles_of), [`department_of`](Self::department_of) and
/// [`level_of`](Self::level_of) describe the record as written.
#[derive(Debug, Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: DirectoryFile,
    by_id: HashMap<String, usize>,
    /// Active holders of each role, in file order.
    by_role: HashMap<String, Vec<usize>>,
    /// Lower-case hex hash → active user.
    by_token: HashMap<String, usize>,
    role_spans: HashMap<String, Range<usize>>,
    roles_span: Option<Range<usize>>,
}

/// Why a directory built in code was refused.
#[derive(Debug, Error)]
#[error("the directory has {} error(s); first: {}", .0.len(), .0.first().map_or("", |d| d.message.as_str()))]
pub struct DirectoryError(pub Vec<Diagnostic>);

impl Directory {
    /// Checks a directory built in code (tests, tools) and compiles it. Diagnostics carry no
    /// spans, as there is no file.
    pub fn from_file(file: DirectoryFile) -> Result<Directory, DirectoryError> {
        let empty = SpannedDoc::parse("").map_err(DirectoryError)?;
        let errors: Vec<Diagnostic> = check(&file, &empty)
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect();
        if errors.is_empty() {
            Ok(Directory::compile(file, &empty))
        } else {
            Err(DirectoryError(errors))
        }
    }

    fn compile(file: DirectoryFile, doc: &SpannedDoc) -> Directory {
        let mut by_id = HashMap::new();
        let mut by_role: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_token = HashMap::new();
        for (i, u) in file.users.iter().enumerate() {
            by_id.entry(u.id.clone()).or_insert(i);
            if !u.active {
                continue;
            }
            for r in &u.roles {
                let holders = by_role.entry(r.clone()).or_default();
                if !holders.contains(&i) {
                    holders.push(i);
                }
            }
            for h in &u.token_sha256 {
                by_token.entry(h.to_ascii_lowercase()).or_insert(i);
            }
        }
        let role_spans = file
            .roles
            .keys()
            .filter_map(|r| doc.key_span(&ptr(&["roles", r])).map(|s| (r.clone(), s)))
            .collect();
        let roles_span = doc.key_span("/roles").or_else(|| doc.first_key_span());
        Directory {
            inner: Arc::new(Inner {
                file,
                by_id,
                by_role,
                by_token,
                role_spans,
                roles_span,
            }),
        }
    }

    /// The file the directory was compiled from.
    pub fn file(&self) -> &DirectoryFile {
        &self.inner.file
    }

    /// Every user, active or not, in file order.
    pub fn users(&self) -> &[User] {
        &self.inner.file.users
    }

    /// The user with this id, active or not.
    pub fn user(&self, id: &str) -> Option<&User> {
        self.inner.by_id.get(id).map(|&i| &self.inner.file.users[i])
    }

    /// The active users holding `role`, in file order: those a step of the role is offered to.
    pub fn users_with_role<'a>(&'a self, role: &str) -> impl Iterator<Item = &'a User> + 'a {
        let idx: &'a [usize] = self.inner.by_role.get(role).map_or(&[], Vec::as_slice);
        idx.iter().map(move |&i| &self.inner.file.users[i])
    }

    /// Whether `user` is active and holds `role`.
    pub fn holds(&self, user: &str, role: &str) -> bool {
        match (self.inner.by_id.get(user), self.inner.by_role.get(role)) {
            (Some(i), Some(holders)) => holders.contains(i),
            _ => false,
        }
    }

    /// The roles written for `user` (empty for an unknown user).
    pub fn roles_of(&self, user: &str) -> &[String] {
        self.user(user).map_or(&[], |u| u.roles.as_slice())
    }

    /// The id of `user`'s department.
    pub fn department_of(&self, user: &str) -> Option<&str> {
        self.user(user).map(|u| u.department.as_str())
    }

    /// `user`'s level (1 staff … 5 general manager).
    pub fn level_of(&self, user: &str) -> Option<u8> {
        self.user(user).map(|u| u.level)
    }

    /// The active user one of whose token hashes is `hash` (hex, either case). Hashes are not
    /// secrets, so no constant-time comparison is needed.
    pub fn by_token_hash(&self, hash: &str) -> Option<&User> {
        self.inner
            .by_token
            .get(&hash.to_ascii_lowercase())
            .map(|&i| &self.inner.file.users[i])
    }

    /// The active user a presented API token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&User> {
        self.by_token_hash(&token_hash(token))
    }

    /// The declared roles with their descriptions.
    pub fn roles(&self) -> &IndexMap<String, String> {
        &self.inner.file.roles
    }

    /// The declared departments.
    pub fn departments(&self) -> &IndexMap<String, Department> {
        &self.inner.file.departments
    }

    /// A declared department.
    pub fn department(&self, id: &str) -> Option<&Department> {
        self.inner.file.departments.get(id)
    }

    /// Whether `ancestor` is a parent, grandparent… of `dept` (not `dept` itself).
    pub fn is_ancestor_department(&self, ancestor: &str, dept: &str) -> bool {
        let departments = &self.inner.file.departments;
        let mut at = dept;
        // Cycles are refused when loading; the bound keeps a bug from looping forever.
        for _ in 0..departments.len() {
            match departments.get(at).and_then(|d| d.parent.as_deref()) {
                Some(p) if p == ancestor => return true,
                Some(p) => at = p,
                None => return false,
            }
        }
        false
    }

    /// Whether `dept` is `within` or one of its sub-departments.
    pub fn is_within_department(&self, dept: &str, within: &str) -> bool {
        dept == within || self.is_ancestor_department(within, dept)
    }

    /// Whether `user` belongs to department `dept` or one of its sub-departments: what
    /// `separation.not_from_department` rules out.
    pub fn user_in_department(&self, user: &str, dept: &str) -> bool {
        self.department_of(user)
            .is_some_and(|d| self.is_within_department(d, dept))
    }
}

// ---------------------------------------------------------------------------------------------
// API tokens
// ---------------------------------------------------------------------------------------------

/// Every token starts with this, so a token pasted into a file or a log is recognisable (and
/// secret scanners can be taught to find it).
pub const TOKEN_PREFIX: &str = "sopflow_";

/// Why no token could be made.
#[derive(Debug, Error)]
pub enum TokenError {
    /// The operating system's random source could not be read. There is deliberately no
    /// weaker fallback: a guessable token is worse than none.
    #[error("cannot read the system's random source /dev/urandom: {0}")]
    Randomness(#[from] std::io::Error),
}

/// A new API token: [`TOKEN_PREFIX`] and 256 random bits as 64 hex characters.
///
/// The bits come from the operating system's CSPRNG (`/dev/urandom`, read with std): the crate
/// has no `rand`, and `uuid` is built without `v4`. Fallible rather than `String` because that
/// read can fail (no `/dev/urandom`, as on Windows), and then there must be no token at all.
pub fn new_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 64);
    token.push_str(TOKEN_PREFIX);
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    Ok(token)
}

/// SHA-256 of the token's bytes, lower-case hex: what `token_sha256` lists.
pub fn token_hash(token: &str) -> String {
    hash_hex(token.as_bytes())
}

/// The line an administrator adds to the user's `[[users]]` table for a new token (or whose
/// list they extend): `token_sha256 = ["…"]`.
pub fn token_line(hash: &str) -> String {
    format!("token_sha256 = [\"{hash}\"]")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
title = "t"
[departments.gm]
name = "General management"
[departments.quality]
name = "Quality"
parent = "gm"
[departments.lab]
name = "Quality lab"
parent = "quality"
[departments.sales]
name = "Sales"

[roles]
quality = "Quality staff"
general_manager = "General manager"
ghost = "Only an inactive user holds it"

[[users]]
id = "wang"
name = "Wang"
department = "gm"
roles = ["general_manager"]
level = 5

[[users]]
id = "li.wei"
name = "Li Wei"
department = "lab"
roles = ["quality"]
level = 2
token_sha256 = ["HASH"]

[[users]]
id = "old"
name = "Old"
department = "sales"
roles = ["ghost", "quality"]
level = 1
active = false
token_sha256 = ["OLDHASH"]
"#;

    fn small() -> (Directory, FileReport) {
        let text = SMALL
            .replace("OLDHASH", &token_hash("old-token"))
            .replace("HASH", &token_hash("li-token"));
        let (dir, report) = load_text("small.toml", &text);
        match dir {
            Some(d) => (d, report),
            None => panic!("{}", report.render_text()),
        }
    }

    #[test]
    fn lookups() {
        let (d, report) = small();
        let codes: Vec<_> = report.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec!["unheld-role"]);
        assert_eq!(d.user("li.wei").map(|u| u.name.as_str()), Some("Li Wei"));
        assert!(d.user("nobody").is_none());
        let q: Vec<_> = d
            .users_with_role("quality")
            .map(|u| u.id.as_str())
            .collect();
        assert_eq!(q, vec!["li.wei"], "inactive users are not offered tasks");
        assert_eq!(d.users_with_role("ghost").count(), 0);
        assert_eq!(d.users_with_role("nonexistent").count(), 0);
        assert!(d.holds("wang", "general_manager"));
        assert!(!d.holds("wang", "quality"));
        assert!(!d.holds("old", "quality"));
        assert!(!d.holds("nobody", "quality"));
        assert_eq!(
            d.roles_of("old"),
            ["ghost".to_string(), "quality".to_string()]
        );
        assert!(d.roles_of("nobody").is_empty());
        assert_eq!(d.department_of("li.wei"), Some("lab"));
        assert_eq!(d.level_of("wang"), Some(5));
        assert_eq!(d.level_of("nobody"), None);
        assert_eq!(
            d.department("quality").map(|x| x.name.as_str()),
            Some("Quality")
        );
        assert_eq!(d.file().title.as_deref(), Some("t"));
        assert_eq!(d.roles().len(), 3);
        assert_eq!(d.departments().len(), 4);
        assert_eq!(d.users().len(), 3);
    }

    #[test]
    fn department_ancestry() {
        let (d, _) = small();
        assert!(d.is_ancestor_department("gm", "lab"));
        assert!(d.is_ancestor_department("quality", "lab"));
        assert!(!d.is_ancestor_department("lab", "lab"));
        assert!(!d.is_ancestor_department("lab", "quality"));
        assert!(!d.is_ancestor_department("sales", "lab"));
        assert!(d.is_within_department("lab", "lab"));
        assert!(d.is_within_department("lab", "gm"));
        assert!(!d.is_within_department("gm", "lab"));
        assert!(d.user_in_department("li.wei", "quality"));
        assert!(!d.user_in_department("li.wei", "sales"));
        assert!(!d.user_in_department("nobody", "sales"));
    }

    #[test]
    fn tokens_find_active_users_only() {
        let (d, _) = small();
        let h = token_hash("li-token");
        assert_eq!(d.by_token_hash(&h).map(|u| u.id.as_str()), Some("li.wei"));
        assert_eq!(
            d.by_token_hash(&h.to_uppercase()).map(|u| u.id.as_str()),
            Some("li.wei")
        );
        assert_eq!(
            d.authenticate("li-token").map(|u| u.id.as_str()),
            Some("li.wei")
        );
        assert!(
            d.authenticate("old-token").is_none(),
            "an inactive user cannot sign in"
        );
        assert!(d.authenticate("guess").is_none());
    }

    #[test]
    fn token_helpers() {
        let a = new_token().unwrap_or_default();
        let b = new_token().unwrap_or_default();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert!(a[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(&token_hash(&a)));
        assert_eq!(token_line("ab"), "token_sha256 = [\"ab\"]");
    }

    #[test]
    fn ids_and_emails() {
        for ok in ["li.wei", "after_sales", "a-1", "9"] {
            assert!(is_id(ok), "{ok}");
        }
        for bad in ["", "Li", "_x", "a b", "a/b", "é"] {
            assert!(!is_id(bad), "{bad}");
        }
        assert!(plausible_email("a@b.cn"));
        for bad in ["a", "@b.cn", "a@b", "a@.b", "a@b.", "a b@c.d", "a@b@c.d"] {
            assert!(!plausible_email(bad), "{bad}");
        }
    }

    fn codes(text: &str) -> Vec<(&'static str, String)> {
        let (_, report) = load_text("x.toml", text);
        report
            .diagnostics
            .iter()
            .map(|d| {
                (
                    d.code,
                    d.span
                        .clone()
                        .and_then(|s| text.get(s))
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn every_meaning_problem_is_reported_where_it_is() {
        let text = r#"
[departments.a]
name = "A"
parent = "b"
[departments.b]
name = "B"
parent = "a"
[departments.c]
name = "C"
parent = "c"
[departments.d]
name = "D"
parent = "zz"
[departments.Bad]
name = "bad"
[roles]
r = "R"
unused = "U"
[[users]]
id = "u"
name = "U"
department = "e"
roles = ["r", "r", "q"]
level = 1
email = "nope"
token_sha256 = ["abc", "sopflow_0123"]
[[users]]
id = "u"
name = "U2"
department = "a"
level = 1
"#;
        assert_eq!(
            codes(text),
            vec![
                ("department-cycle", "\"b\"".to_string()),
                ("department-cycle", "\"c\"".to_string()),
                ("unknown-department", "\"zz\"".to_string()),
                ("bad-id", "Bad".to_string()),
                ("unheld-role", "unused".to_string()),
                ("unknown-department", "\"e\"".to_string()),
                ("duplicate-role", "\"r\"".to_string()),
                ("unknown-role", "\"q\"".to_string()),
                ("bad-email", "\"nope\"".to_string()),
                ("bad-token-hash", "\"abc\"".to_string()),
                ("bad-token-hash", "\"sopflow_0123\"".to_string()),
                ("duplicate-user", "\"u\"".to_string()),
            ]
        );
        let (_, report) = load_text("x.toml", text);
        assert!(
            report
                .diagnostics
                .iter()
                .all(|d| !d.message.contains("0123")),
            "a pasted token is not echoed in a message"
        );
    }

    #[test]
    fn empty_and_schema_problems() {
        assert_eq!(codes(""), vec![("empty-directory", String::new())]);
        assert_eq!(codes("[roles]\nr = \"R\"\n")[0].0, "empty-directory");
        let c = codes(
            "[[users]]\nid = \"Li\"\nname = \"x\"\ndepartment = \"d\"\nlevel = \"2\"\nrole = []\n",
        );
        let got: Vec<_> = c.iter().map(|(c, _)| *c).collect();
        assert_eq!(got, vec!["bad-id", "wrong-type", "unknown-key"]);
        let (_, report) = load_text(
            "x.toml",
            "[[users]]\nid = \"li\"\nname = \"x\"\ndepartment = \"d\"\nlevel = 2\nrole = []\n",
        );
        let unknown = report.diagnostics.iter().find(|d| d.code == "unknown-key");
        assert_eq!(
            unknown.map(|d| d.message.as_str()),
            Some("user `li` has an unknown key `role`")
        );
        assert_eq!(
            unknown.and_then(|d| d.help.as_deref()),
            Some("did you mean `roles`?")
        );
        let (_, report) = load_text("x.toml", "colour = 1\n");
        assert_eq!(
            report.diagnostics[0].message,
            "the directory has an unknown key `colour`"
        );
        assert_eq!(codes("a = ")[0].0, "toml-syntax");
    }

    #[test]
    fn duplicate_tokens_are_refused_across_users() {
        let h = token_hash("t");
        let text = format!(
            "[departments.d]\nname = \"D\"\n[[users]]\nid = \"a\"\nname = \"A\"\ndepartment = \"d\"\nlevel = 1\ntoken_sha256 = [\"{h}\", \"{h}\"]\n[[users]]\nid = \"b\"\nname = \"B\"\ndepartment = \"d\"\nlevel = 1\ntoken_sha256 = [\"{}\"]\n",
            h.to_uppercase()
        );
        let (dir, report) = load_text("x.toml", &text);
        let c: Vec<_> = report
            .diagnostics
            .iter()
            .map(|d| (d.code, d.severity))
            .collect();
        use crate::definition::diagnostic::Severity::*;
        assert_eq!(
            c,
            vec![("duplicate-token", Warning), ("duplicate-token", Error)]
        );
        assert!(dir.is_none());
    }

    #[test]
    fn from_file_checks_too() {
        let mut file = DirectoryFile::default();
        assert!(Directory::from_file(file.clone()).is_err());
        file.departments.insert(
            "d".into(),
            Department {
                name: "D".into(),
                parent: None,
            },
        );
        file.roles.insert("r".into(), "R".into());
        file.users.push(User {
            id: "a".into(),
            name: "A".into(),
            department: "d".into(),
            roles: vec!["r".into()],
            level: 1,
            email: None,
            token_sha256: vec![],
            active: true,
        });
        let d = Directory::from_file(file.clone());
        assert!(d.as_ref().is_ok_and(|d| d.holds("a", "r")));
        file.users[0].department = "x".into();
        let err = Directory::from_file(file)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("department `x`"), "{err}");
    }

    #[test]
    fn procedures_are_checked_against_the_directory() {
        let (d, mut report) = small();
        let proc_text = |roles: &str| {
            format!("id = \"p\"\nversion = 1\ntitle = \"P\"\nstart = \"a\"\n[roles]\n{roles}\n[steps.a]\nrole = \"quality\"\nnext = [{{ to = \"e\" }}]\n[steps.e]\nkind = \"end\"\n")
        };
        let text = proc_text(
            "quality = \"Q\"\nghost = \"G\"\nsales = \"Sales people\"\nqualty = \"typo\"",
        );
        let p: Procedure = match toml::from_str(&text) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let found = check_procedures(&d, std::slice::from_ref(&p));
        let got: Vec<_> = found.iter().map(|x| (x.code, x.message.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("role-not-held", "no active user holds the role `ghost`, so steps of `p` offered to it could never be done"),
                ("role-not-in-directory", "the role `sales`, used by `p`, is not declared in the directory"),
                ("role-not-in-directory", "the role `qualty`, used by `p`, is not declared in the directory"),
            ]
        );
        assert_eq!(
            found[1].help.as_deref(),
            Some("add `sales = \"Sales people\"` under `[roles]` and give it to someone")
        );
        assert!(found[2]
            .help
            .as_deref()
            .is_some_and(|h| h.starts_with("did you mean `quality`?")));
        assert!(found.iter().all(|x| x.span.is_some()));
        add_procedure_checks(&mut report, &d, &[p]);
        let codes: Vec<_> = report.diagnostics.iter().map(|x| x.code).collect();
        assert_eq!(
            codes,
            vec![
                "role-not-in-directory",
                "role-not-in-directory",
                "role-not-held"
            ]
        );
    }
}
