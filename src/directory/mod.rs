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
//!
//! # The file
//!
//! ```toml
//! #:schema schemas/directory.schema.json
//! title = "Example Machinery Co., Ltd."
//!
//! [departments.quality]                  # id → name, and optionally the parent department
//! name = "Quality Department"
//! [departments.quality_lab]
//! name = "Quality Laboratory"
//! parent = "quality"
//!
//! [roles]                                # every role a procedure uses, with a description
//! quality = "Quality department staff"
//!
//! [[users]]                              # one table per person
//! id = "wang.qiang"                      # login id, never reused
//! name = "Wang Qiang"
//! department = "quality"
//! roles = ["quality"]
//! level = 3                              # 1 staff … 5 general manager, for delegation
//! email = "wang.qiang@example.com"       # optional
//! token_sha256 = []                      # SHA-256 hex of API tokens, never a token
//! active = true                          # false: kept for history, offered nothing
//! ```
//!
//! Submodules: [`model`] (the file's types and schema), `check` (the meaning layer and the
//! wording of schema findings), `procedures` (procedures against the directory), `lookup`
//! (the compiled [`Directory`]) and [`token`] (API tokens and their hashes).

use std::path::Path;
use std::sync::Arc;

use crate::definition::diagnostic::{Diagnostic, FileReport};
use crate::definition::source::SpannedDoc;

mod check;
mod lookup;
pub mod model;
mod procedures;
pub mod token;

pub use check::{is_id, ID_PATTERN};
pub use lookup::{Directory, DirectoryError};
pub use model::{directory_schema, directory_validator, Department, DirectoryFile, User};
pub use procedures::{add_procedure_checks, check_procedures};
pub use token::{new_token, token_hash, token_line, TokenError, TOKEN_PREFIX};

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
            .map(|d| check::reword(d, &doc))
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
    let diagnostics = check::check(&file, &doc);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return (None, diagnostics);
    }
    (Some(Directory::compile(file, &doc)), diagnostics)
}

/// A small directory shared by the unit tests of the submodules.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) const SMALL: &str = r#"
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

    pub(crate) fn small() -> (Directory, FileReport) {
        let text = SMALL
            .replace("OLDHASH", &token_hash("old-token"))
            .replace("HASH", &token_hash("li-token"));
        let (dir, report) = load_text("small.toml", &text);
        match dir {
            Some(d) => (d, report),
            None => panic!("{}", report.render_text()),
        }
    }
}
