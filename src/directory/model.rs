//! The directory file's types. serde reads `org.toml` into them; schemars generates
//! `schemas/directory.schema.json` from them, so the doc comments are what an administrator
//! sees in their editor — written for that reader. No checks and no lookups live here.

use std::sync::OnceLock;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::definition::schema::{schema_for, validator};

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

    /// Gather this person's mail into one letter instead of one per notice: `"hourly"` (at
    /// the start of each hour) or `"daily"` (at 08:00 in the server's time zone, the default
    /// calendar's). For people of busy roles. Leave it out to get each notice at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<MailDigest>,

    /// SHA-256 hashes (64 hexadecimal characters) of the person's API tokens, as printed by
    /// `sopflow token issue USER`. Never write a token itself here. Several hashes let a new
    /// token be issued before the old one is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_sha256: Vec<String>,

    /// `false` for someone who left or is away for good: the record stays (the history names
    /// them) but they are offered no tasks, hold no role and cannot sign in. Defaults to true.
    #[serde(default = "yes")]
    pub active: bool,
}

/// How often a person's mail is gathered into one letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MailDigest {
    /// One letter at the start of each hour with what came in during the hour before.
    Hourly,
    /// One letter a day at 08:00 with what came in since the day before.
    Daily,
}

fn yes() -> bool {
    true
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
