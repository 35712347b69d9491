//! The procedure file format, as Rust types. serde reads procedure files into them; schemars
//! generates `schemas/procedure.schema.json` from them, so the doc comments here are what a
//! process owner sees in their editor — write them for that reader.
//!
//! The types are deliberately flat (one `Step` with a `kind`, not an enum per kind): a tagged
//! enum becomes a JSON Schema `oneOf`, whose failures read "not valid under any of the given
//! schemas", which nobody can act on. Which keys fit which kind is checked in
//! `semantic/kinds.rs`, with a sentence per mistake. This module holds no logic beyond small
//! accessors.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A procedure: one controlled process (a complaint, an internal evaluation…) written as a
/// graph of steps. Each file under `procedures/` holds one procedure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sopflow procedure")]
pub struct Procedure {
    /// Identifier of the procedure, used by the API and by other procedures that start it as
    /// a child. Lower-case letters, digits and `-`; never change it once instances exist.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]*$"), length(max = 64))]
    pub id: String,

    /// Version of this procedure. Raise it by one whenever you change the file: running
    /// instances keep the version they started on.
    #[schemars(range(min = 1))]
    pub version: u32,

    /// Human title, shown in worklists ("Customer complaint handling").
    #[schemars(length(min = 1))]
    pub title: String,

    /// What the procedure is for, in a sentence or two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// The company document this procedure implements (file and clause), for auditors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,

    /// The step where every instance begins.
    pub start: String,

    /// Calendar used for working-day deadlines when a step does not name one
    /// (a file `calendars/<name>.toml`). Defaults to `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,

    /// The roles this procedure assigns work to, each with a description
    /// (`sales = "Sales department"`). People get roles in the directory file.
    #[serde(default)]
    pub roles: IndexMap<String, String>,

    /// Roles allowed to start an instance. Empty means any role listed in `roles`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_roles: Vec<String>,

    /// Roles allowed to cancel a running instance (with a reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel_roles: Vec<String>,

    /// Roles allowed to repair this procedure's instances besides `admin`: suspend and
    /// resume them, withdraw an open task, move stuck work to another step (each with a
    /// reason, kept in the history).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_roles: Vec<String>,

    /// The first day this version may be started (in the procedure's calendar's time
    /// zone), e.g. the date the revised document takes effect. Before it, new instances
    /// start on the previous version whose dates allow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::definition::calendar::date_schema")]
    pub valid_from: Option<chrono::NaiveDate>,

    /// The last day this version may be started. Running instances are not affected: they
    /// finish on the version they started on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::definition::calendar::date_schema")]
    pub valid_until: Option<chrono::NaiveDate>,

    /// Data an instance is started with (customer, product, audit date…). Forms of the steps
    /// add their own fields; guards and computed values may use all of them.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub data: IndexMap<String, Field>,

    /// Start instances automatically on a schedule (the half-yearly customer rating).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,

    /// Start an instance automatically some time before a date held in each entry of a
    /// register (the warranty notice ten days before each unit's warranty ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_from: Option<DateStart>,

    /// The steps, by id. Step ids are lower-case words joined with `_`.
    pub steps: IndexMap<String, Step>,

    /// Service objectives measured on this procedure's instances, by id
    /// (`[kpis.satisfaction_rate]`): each is a rate in percent, reported for any period,
    /// with an optional target (`at_least = 95`).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub kpis: IndexMap<String, Kpi>,
}

/// A rate measured on the procedure's instances, in percent. Either over the completions of
/// one step (`step` with `when`: the share of completions where the condition held on the
/// submitted form), or over the instances that ended (`ends_at`: the share that ended at
/// one of these end steps; cancelled instances count as not reaching them).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kpi {
    /// Name shown in reports ("Satisfaction rate").
    #[schemars(length(min = 1))]
    pub title: String,

    /// The company document that sets this objective (file and clause), for auditors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,

    /// Count the completions of this task step (every completion counts, including repeated
    /// ones in a loop). Give `step` with `when`, or `ends_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,

    /// With `step`: the completions that count towards the rate are those where this CEL
    /// condition holds on the form submitted, e.g. `customer_satisfied` or `score >= 60.0`.
    /// It may use the fields of that step's form, its computed values and `outcome`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,

    /// Instead of `step`: end steps counted as success. The rate is the share of the
    /// instances that ended in the period (completed or cancelled) that ended at one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ends_at: Vec<String>,

    /// The objective: the rate must be at least this many percent (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,

    /// The objective: the rate must be at most this many percent (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
}

/// What kind of node a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Work for a person: offered to a role (or assigned to a person), completed with a form
    /// and an outcome. The default.
    #[default]
    Task,
    /// Done by the engine at once, without a person: computes values and follows the first
    /// transition whose condition holds.
    Auto,
    /// Starts several branches at the same time (`branches`); they meet again at `join`.
    Parallel,
    /// Waits until every branch of its parallel step has arrived, then continues.
    Join,
    /// Starts one child procedure per item of a list (`procedure`, `for_each`) and continues
    /// when all of them have ended.
    Subprocess,
    /// Ends the instance. Its id is the instance's final outcome (`closed`, `rejected`).
    End,
}

/// One step of the procedure.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What kind of step this is: `task` (default), `auto`, `parallel`, `join`, `subprocess`
    /// or `end`.
    #[serde(default)]
    pub kind: StepKind,

    /// Short title shown in worklists ("Approve the change").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,

    /// Instructions for the person doing the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// The role the step is offered to: everyone holding it sees the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,

    /// Name of a data field holding the user id of the one person this step is assigned to
    /// (for example the audit team leader chosen in an earlier step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,

    /// Name of a data field holding a list of user ids: the step is offered to each of
    /// these people (and only them). With `signatures`, they are the panel that signs:
    /// `"all"` in `decide` means every one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignees: Option<String>,

    /// What the person doing this step must be, checked when they claim, sign or complete
    /// it and when it is delegated to them (like separation of duties): from a department,
    /// holding a role, of a level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_be: Option<PersonRule>,

    /// Messages sent when the step opens (`when = "enter"`) or is completed
    /// (`when = "complete"`), to everyone holding a role or to the person in a field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<StepNotice>,

    /// The answers a person can give when completing the step (`approve`, `reject`,
    /// `rework`). Without it the step has one outcome, `done`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<String>,

    /// The fields the person fills in when completing the step. They are checked before the
    /// step completes and then stored in the instance data under their names.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub form: IndexMap<String, Field>,

    /// Where to go next. The first transition whose `on` matches the outcome and whose
    /// `when` holds is taken; put the one without `when` last as the default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<Transition>,

    /// When the step is due, reminders before that, and what happens when it is late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,

    /// Several people must sign before the step completes (joint identification,
    /// committee approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<Signatures>,

    /// What completing this step means, recorded with the signature for auditors:
    /// `reviewed`, `approved`, `verified`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meaning: Option<String>,

    /// Who must not do this step (separation of duties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separation: Option<Separation>,

    /// Whether and to whom the person holding this task may hand it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Delegation>,

    /// Values computed when the step completes and written into the instance data:
    /// `score = "earned * 100.0 / applicable"` (CEL expressions).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub compute: IndexMap<String, String>,

    /// `parallel` steps: the first step of each branch, all started at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,

    /// `parallel` steps: the `join` step where the branches meet again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,

    /// `subprocess` steps: id of the child procedure to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<String>,

    /// `subprocess` steps: name of a list field; one child is started per item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,

    /// `subprocess` steps: the child's start data, as CEL expressions over this instance's
    /// data and `item` (the list item the child is for): `department = "audited_department"`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub input: IndexMap<String, String>,

    /// `subprocess` steps: a data field receiving the list of the children's final data
    /// (each with its `outcome`), readable by later steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect: Option<String>,

    /// `subprocess` steps whose child procedure starts this procedure again (directly or
    /// through others): the deepest level of nesting allowed, counting the first instance
    /// as level 0. A child that would be deeper is not started and the command that reached
    /// this step is refused. Without it, a procedure that starts itself again is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub max_depth: Option<u32>,

    /// `subprocess` steps: `false` starts the children and goes on at once (fire and
    /// forget); they run on their own, linked both ways in the histories, and are not
    /// cancelled with this instance. Defaults to `true`: wait until every child has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,

    /// `join` steps: continue as soon as this many branches have arrived (`1` = the first),
    /// withdrawing the work still open in the other branches. Without it, wait for every
    /// branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub wait_for: Option<u32>,

    /// `end` steps: reaching this step ends the instance at once, withdrawing every other
    /// open branch (their tasks close, their children are cancelled). Without it an end
    /// step may only be reached when nothing else is open.
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminate: bool,

    /// `task` and `auto` steps: entries of registers this step sets when it completes (a
    /// customer's rating, a unit's warranty end). Each change is recorded in this instance's
    /// history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<RegisterWrite>,
}

/// Sets fields of one entry of a register (the entry is created if it does not exist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterWrite {
    /// The register (a file `registers/<id>.toml`).
    pub register: String,

    /// The entry's key, as a CEL expression over the instance data: `"customer"`.
    pub key: String,

    /// The fields to set, each a CEL expression over the instance data (after this step's
    /// form and computed values): `rating = "rating"`, `rated_on = "today"`.
    pub set: IndexMap<String, String>,
}

/// Starts an instance before a date held in register entries. For each entry whose `date`
/// is set, an instance starts `before` that date (at midnight in the calendar's zone), with
/// start data from `data`; the entry's `mark` field is then set to that date in the same
/// commit, so each date starts one instance (a renewed warranty with a new end date starts
/// the next notice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DateStart {
    /// The register whose entries are watched.
    pub register: String,

    /// A `date` field of the register: the date to start before.
    pub date: String,

    /// How long before the date: `"10 days"`, `"2 working days"`.
    pub before: String,

    /// A `date` field of the register where the engine records the date an instance was
    /// started for.
    pub mark: String,

    /// The start data, each a CEL expression over `key` (the entry's key) and `entry` (its
    /// fields): `customer = "entry.customer"`, `equipment = "key"`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub data: IndexMap<String, String>,
}

/// Who may do a step, beyond its role: give any of the keys; all given must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonRule {
    /// The person must belong to this department (a department id from the directory) or
    /// one of its sub-departments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,

    /// The person must belong to the department held in this data field (or one of its
    /// sub-departments): "the responsible unit" chosen in an earlier step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_in: Option<String>,

    /// The person must hold this role (in addition to being offered the task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,

    /// The person's level in the directory must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub level_at_least: Option<u8>,
}

/// When a step's message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoticeWhen {
    /// When the step opens (a task is offered, a subprocess starts, an end is reached).
    Enter,
    /// When the step is completed (only task steps are completed by people).
    Complete,
}

/// A message sent when a step opens or is completed. Give `role` or `person` (or both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepNotice {
    /// `enter` or `complete`.
    pub when: NoticeWhen,

    /// Send to everyone holding this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,

    /// Send to the person whose user id is in this data field (or every person in a list
    /// of users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,

    /// What they are told. Defaults to a sentence naming the step and the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A way out of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// The step to go to.
    pub to: String,

    /// Only for this outcome of the step (`approve`). Without it, any outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,

    /// Only when this CEL condition holds, e.g. `severity == 'general'` or `!satisfied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// The type of a form or data field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// One line of text. With `enum`, one of the listed choices.
    String,
    /// Several lines of text (reasons, descriptions).
    Text,
    /// A whole number.
    Integer,
    /// A number, possibly with decimals (scores, amounts).
    Number,
    /// Yes or no.
    Boolean,
    /// A calendar date, `2026-03-31`.
    Date,
    /// A date and time, `2026-03-31T14:00:00Z`.
    Datetime,
    /// A user id from the directory.
    User,
    /// A department id from the directory.
    Department,
    /// A list of values; describe one item under `items`.
    List,
    /// A group of named fields; describe them under `fields`.
    Object,
}

/// A field of a form or of the instance data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// `string`, `text`, `integer`, `number`, `boolean`, `date`, `datetime`, `user`,
    /// `department`, `list` or `object`.
    #[serde(rename = "type")]
    pub ty: FieldType,

    /// Label shown next to the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,

    /// Help text shown with the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// The step cannot be completed without it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,

    /// Required only when the step is completed with one of these outcomes
    /// (`objection_reason` when objecting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_for: Vec<String>,

    /// For yes/no fields: these outcomes can only be chosen with this box ticked ("verified"
    /// cannot be chosen while a check is not done).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must_be_true_for: Vec<String>,

    /// For `string` fields: the only values allowed.
    #[serde(default, rename = "enum", skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,

    /// For numbers: the smallest value allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,

    /// For numbers: the largest value allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,

    /// For text: the fewest characters allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,

    /// For text: the most characters allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,

    /// For lists: the fewest items allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_items: Option<u64>,

    /// For lists: the most items allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,

    /// For lists: what one item is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<Field>>,

    /// For objects: their fields.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub fields: IndexMap<String, Field>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// When a step is due and what happens around that time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deadline {
    /// When the step is due. After the step opens: `"24h"`, `"7 days"`, `"3 working days"`,
    /// `"4 working hours"`. Relative to a date field: `"10 days before warranty_end"`,
    /// `"2 working days after audit_date"`, or just `"audit_date"`. A fixed date:
    /// `"2027-01-31"`. The earlier or later of two: `"earlier of 7 days and 3 days before
    /// audit_date"`.
    pub due: String,

    /// The earliest time the step may be completed, written like `due`: `"10 days before
    /// audit_date"`. Before it, completing (or signing) is refused with the time it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens: Option<String>,

    /// Calendar for working days and hours (a file `calendars/<name>.toml`). Defaults to the
    /// procedure's calendar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,

    /// Reminders before the step is due: `["2h before", "1 working day before"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remind: Vec<String>,

    /// What happens when the step is late, in order; each may wait `after` the due time, so
    /// they form a chain: escalate at once, notify the manager a day later…
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_breach: Vec<BreachAction>,
}

/// One action taken when a step is late. Give exactly one of `escalate_to`, `reassign_to`,
/// `notify` or `take`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreachAction {
    /// How long after the due time this action happens (`"0h"` = at once, the default;
    /// `"1 working day"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,

    /// Offer the task to this role as well (the original role keeps it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<String>,

    /// Take the task away from its role and offer it to this role instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassign_to: Option<String>,

    /// Send a notification to everyone holding this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,

    /// Complete the step automatically with this outcome (for "no objection within 3 days
    /// means we proceed").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take: Option<String>,

    /// With `take`: also complete the step when a person has claimed it (or it was delegated
    /// to someone) and is working on it. By default (`false`) the clock takes only a task
    /// nobody holds; a held task records the breach and stays with its holder.
    #[serde(default, skip_serializing_if = "is_false")]
    pub even_if_claimed: bool,
}

/// Several distinct people must sign the step before it completes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Signatures {
    /// How many different people must sign.
    #[schemars(range(min = 1))]
    pub required: u32,

    /// Roles whose holders may sign. Defaults to the step's role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,

    /// At least one signature must come from each role in `roles` (joint identification by
    /// technical and quality departments).
    #[serde(default, skip_serializing_if = "is_false")]
    pub one_per_role: bool,

    /// How many signers decide each outcome, by outcome: a number (that many distinct
    /// signers chose it), `"any"` (the first signer who chooses it decides) or `"all"`
    /// (every signer of the panel — `required` people, or everyone in `assignees` — chose
    /// it, and nobody chose otherwise). Required for every outcome when the step has several:
    /// `decide = { approve = 2, reject = "all" }`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub decide: IndexMap<String, SignRule>,
}

/// How many signers decide an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SignRule {
    /// That many distinct signers chose the outcome.
    Count(#[schemars(range(min = 1))] u32),
    /// `"any"` or `"all"`.
    Word(SignWord),
}

/// `any` or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignWord {
    /// One signer choosing it decides.
    Any,
    /// The whole panel chose it, nobody otherwise.
    All,
}

/// Separation of duties: who must not complete this step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Separation {
    /// Steps whose completer may not complete this one (the verifier is not the implementer).
    /// Checked both ways for steps in parallel branches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_same_person_as: Vec<String>,

    /// A data field holding a department id; a person of that department may not complete
    /// this step (an evaluator must not belong to the audited department).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_from_department: Option<String>,
}

/// Who a task may be handed on to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// The delegate must hold one of these roles. Defaults to the step's role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_roles: Vec<String>,

    /// `any`, or `same_or_above`: the delegate's level in the directory must be at least the
    /// delegator's ("personnel at the same level or above").
    #[serde(default)]
    pub level: DelegationLevel,

    /// A reason must be given when delegating. Defaults to true.
    #[serde(default = "yes")]
    pub reason_required: bool,
}

fn yes() -> bool {
    true
}

/// Level rule for delegation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DelegationLevel {
    /// Any holder of the allowed roles.
    #[default]
    Any,
    /// Only people at the delegator's level or above.
    SameOrAbove,
}

/// Start instances automatically. Give `every` or `cron`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// A plain interval: `"6 months"`, `"1 year"`, `"2 weeks"`, `"1 day"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,

    /// A cron expression (minute hour day-of-month month day-of-week): `"0 9 1 1,7 *"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,

    /// First run, for `every` (`"2027-01-15"` or `"2027-01-15T09:00:00"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting: Option<String>,

    /// Time zone of the schedule (`"Asia/Shanghai"`). Defaults to the calendar's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,

    /// Start data of each scheduled instance.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl Step {
    /// Whether a subprocess step waits for its children (`wait`, by default yes).
    pub fn waits(&self) -> bool {
        self.wait.unwrap_or(true)
    }
}

impl SignRule {
    /// The rule as the history and messages say it: `2 signers`, `any signer`, `all signers`.
    pub fn describe(&self) -> String {
        match self {
            SignRule::Count(1) => "1 signer".into(),
            SignRule::Count(n) => format!("{n} signers"),
            SignRule::Word(SignWord::Any) => "any signer".into(),
            SignRule::Word(SignWord::All) => "all signers".into(),
        }
    }
}

impl Procedure {
    /// Outcomes of a step as authored, or the single implicit `done`.
    pub fn outcomes_of(step: &Step) -> Vec<&str> {
        if step.outcomes.is_empty() {
            vec![DEFAULT_OUTCOME]
        } else {
            step.outcomes.iter().map(String::as_str).collect()
        }
    }
}

/// Outcome of a step that declares no `outcomes`.
pub const DEFAULT_OUTCOME: &str = "done";

/// Names the engine puts in scope for CEL expressions; no field may take them.
pub const RESERVED_NAMES: &[&str] = &[
    "actor", "data", "form", "outcome", "item", "children", "now", "step", "instance", "register",
    "entry", "key",
];
