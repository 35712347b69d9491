//! Words for the pages: instants in the organisation's time zone, due times relative to now
//! ("due in 3 h", "2 days late"), stored values as text a person reads (never JSON), and
//! each kind of history event as a sentence. Pure functions of their inputs; nothing here
//! reads the store or decides a rule.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::directory::Directory;
use crate::http::dto::HistoryEvent;

/// `Mon 2 Nov 2026, 09:00` in `zone`.
pub fn when(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .format("%a %-d %b %Y, %H:%M")
        .to_string()
}

/// Tomorrow's date in `zone` (`2026-11-03`): the exclusive end of a period through today.
pub fn tomorrow(now: DateTime<Utc>, zone: Tz) -> String {
    (now.with_timezone(&zone).date_naive() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string()
}

/// A span in the largest unit that keeps it readable: `40 min`, `3 h`, `2 days`.
pub fn span(ms: i64) -> String {
    let min = ms.unsigned_abs() / 60_000;
    if min < 1 {
        "less than a minute".into()
    } else if min < 90 {
        format!("{min} min")
    } else if min < 48 * 60 {
        format!("{} h", (min + 30) / 60)
    } else {
        format!("{} days", (min + 12 * 60) / (24 * 60))
    }
}

/// How a due time stands at `now`, in words, with the class that colours it: `late`
/// (past due), `soon` (within 4 hours), `ok`, or `none` (no due time).
pub fn due_text(due: Option<DateTime<Utc>>, now: DateTime<Utc>) -> (String, &'static str) {
    let Some(due) = due else {
        return ("no due time".into(), "none");
    };
    let ms = (due - now).num_milliseconds();
    if ms <= 0 {
        (format!("{} late", span(ms)), "late")
    } else if ms <= 4 * 3_600_000 {
        (format!("due in {}", span(ms)), "soon")
    } else {
        (format!("due in {}", span(ms)), "ok")
    }
}

/// A deadline state in words.
pub fn deadline_word(state: &str) -> &'static str {
    match state {
        "reminded" => "reminded",
        "breached" => "overdue",
        "escalated" => "escalated",
        _ => "on time",
    }
}

/// A stored value as a person reads it: text as is, `yes`/`no`, numbers, lists one item
/// after another, records as `name: value` pairs.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join("; "),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{}: {}", words(k), value_text(v)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// `first_answer` → `First answer`: ids in words, where no title is declared.
pub fn words(id: &str) -> String {
    crate::http::dto::OutcomeChoice::new(id).title
}

/// A person's name from their id (the id itself when the directory no longer lists them).
pub fn name_of(people: &Directory, user: &str) -> String {
    people
        .user(user)
        .map_or_else(|| user.to_string(), |u| u.name.clone())
}

/// How a procedure's ids read to people: step titles, field titles, which fields name a
/// person, and the procedure's own title.
#[derive(Debug, Default)]
pub struct Names {
    pub procedure: String,
    steps: std::collections::HashMap<String, String>,
    fields: std::collections::HashMap<String, String>,
    people_fields: std::collections::HashSet<String>,
}

impl Names {
    pub fn of(def: &crate::definition::model::Procedure) -> Names {
        use crate::definition::model::FieldType;
        let mut n = Names {
            procedure: def.title.clone(),
            ..Names::default()
        };
        for (id, s) in &def.steps {
            n.steps
                .insert(id.clone(), s.title.clone().unwrap_or_else(|| words(id)));
        }
        for (k, f) in def
            .data
            .iter()
            .chain(def.steps.values().flat_map(|s| s.form.iter()))
        {
            if let Some(t) = &f.title {
                n.fields.entry(k.clone()).or_insert_with(|| t.clone());
            }
            if f.ty == FieldType::User {
                n.people_fields.insert(k.clone());
            }
        }
        n
    }

    pub fn step(&self, id: &str) -> String {
        self.steps.get(id).cloned().unwrap_or_else(|| words(id))
    }

    pub fn field(&self, id: &str) -> String {
        self.fields.get(id).cloned().unwrap_or_else(|| words(id))
    }

    /// A field's value as people read it: a person's name for a person field.
    pub fn value(&self, field: &str, v: &Value, people: &Directory) -> String {
        match v {
            Value::String(u) if self.people_fields.contains(field) => name_of(people, u),
            other => value_text(other),
        }
    }

    /// Every field of `m`, titled and in words.
    pub fn values(&self, m: &Map<String, Value>, people: &Directory) -> Vec<(String, String)> {
        m.iter()
            .map(|(k, v)| (self.field(k), self.value(k, v, people)))
            .collect()
    }
}

/// What the procedure file says of a step's origin: the comment block right above its
/// `[steps.ID]` table, where shipped procedures cite the company document's clause
/// ("seed 002 Complaint Handling §4.5: …"). Separator lines are left out; `None` without one.
pub fn step_clause(source: &str, step: &str) -> Option<String> {
    let header = format!("[steps.{step}]");
    let lines: Vec<&str> = source.lines().collect();
    let at = lines.iter().position(|l| l.trim() == header)?;
    let mut block = Vec::new();
    for l in lines[..at].iter().rev() {
        let t = l.trim();
        let Some(text) = t.strip_prefix('#') else {
            break;
        };
        let text = text.trim();
        if text.is_empty() || text.chars().all(|c| c == '-' || c == '=') {
            continue;
        }
        block.push(text);
    }
    block.reverse();
    (!block.is_empty()).then(|| block.join(" "))
}

/// A role id in words (`management_rep` → `Management rep`).
pub fn role(id: &str) -> String {
    words(id)
}

/// Role ids in words, joined.
pub fn roles(ids: &[String]) -> String {
    ids.iter().map(|r| role(r)).collect::<Vec<_>>().join(", ")
}

/// One timeline entry.
pub struct Line {
    pub seq: u64,
    pub at: String,
    /// `Xu Na (After-sales Service Department; follow_up) on behalf of …`, or `sopflow`.
    pub who: String,
    pub what: String,
    /// Form values, comment, reason: the details a person reads.
    pub details: Vec<(String, String)>,
    /// `on time`, `3 h late`, or empty.
    pub timing: String,
    pub late: bool,
    /// The meaning of a signature (`approved`), when the event is one.
    pub meaning: Option<String>,
}

/// The history event as a timeline line, in the words of `names`.
pub fn line(e: &HistoryEvent, people: &Directory, zone: Tz, names: &Names) -> Line {
    let step_title = |id: &str| names.step(id);
    let d = &e.details;
    let s = |k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let step = || step_title(&s("step"));
    let who = match &e.by {
        None => "sopflow".to_string(),
        Some(a) => {
            let dept = people
                .department(&a.department)
                .map_or_else(|| a.department.clone(), |x| x.name.clone());
            let mut w = format!("{} ({}; {})", a.name, dept, roles(&a.roles));
            if let Some(b) = &a.on_behalf_of {
                w.push_str(&format!(" on behalf of {}", name_of(people, b)));
            }
            w
        }
    };
    let mut details = Vec::new();
    let mut timing = String::new();
    let mut late = false;
    let mut meaning = None;
    let what = match e.kind.as_str() {
        "started" => {
            if let Some(Value::Object(data)) = d.get("data") {
                details.extend(names.values(data, people));
            }
            let title = if names.procedure.is_empty() {
                s("procedure")
            } else {
                names.procedure.clone()
            };
            format!(
                "Started {title} (version {})",
                d.get("version").map(value_text).unwrap_or_default()
            )
        }
        "task_opened" => {
            let offered: Vec<String> = d
                .get("roles")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let mut w = match d.get("assignee").and_then(Value::as_str) {
                Some(a) if offered.is_empty() => {
                    format!("“{}” opened for {}", step(), name_of(people, a))
                }
                Some(a) => format!(
                    "“{}” opened for {}, assigned to {}",
                    step(),
                    roles(&offered),
                    name_of(people, a)
                ),
                None => format!("“{}” opened for {}", step(), roles(&offered)),
            };
            if let Some(due) = d.get("due").and_then(Value::as_str).and_then(parse_at) {
                w.push_str(&format!("; due {}", when(due, zone)));
            }
            w
        }
        "deadline_reminded" => {
            if let Some(m) = d.get("message").and_then(Value::as_str) {
                details.push(("Message".into(), m.to_string()));
            }
            format!("Reminder sent for “{}”", step())
        }
        "deadline_breached" => {
            late = true;
            let ms = d.get("late_ms").and_then(Value::as_i64).unwrap_or(0);
            timing = if ms > 0 {
                format!("{} late", span(ms))
            } else {
                "due now".into()
            };
            format!("“{}” passed its due time; action: {}", step(), s("action"))
        }
        "task_escalated" => format!("Escalated: now also offered to {}", role(&s("role"))),
        "task_reassigned" => format!("Reassigned to {}", role(&s("role"))),
        "notified" => {
            details.push(("Message".into(), s("message")));
            let mut to: Vec<String> = Vec::new();
            if !s("role").is_empty() {
                to.push(role(&s("role")));
            }
            if let Some(users) = d.get("to_users").and_then(Value::as_array) {
                to.extend(
                    users
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|u| name_of(people, u)),
                );
            }
            format!("{} notified about “{}”", to.join(", "), step())
        }
        "task_claimed" => "Claimed the task".into(),
        "task_released" => "Released the task back to its roles".into(),
        "task_delegated" => {
            if let Some(r) = d.get("reason").and_then(Value::as_str) {
                details.push(("Reason".into(), r.to_string()));
            }
            format!("Delegated the task to {}", name_of(people, &s("to")))
        }
        "signed" | "task_completed" => {
            if let Some(Value::Object(form)) = d.get("form") {
                details.extend(names.values(form, people));
            }
            if let Some(c) = d.get("comment").and_then(Value::as_str) {
                details.push(("Comment".into(), c.to_string()));
            }
            meaning = d.get("meaning").and_then(Value::as_str).map(str::to_string);
            if let Some(Value::Object(rule)) = d.get("decided") {
                let signers: Vec<String> = rule
                    .get("signers")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(|u| name_of(people, u))
                            .collect()
                    })
                    .unwrap_or_default();
                details.push((
                    "Decided by".into(),
                    format!(
                        "{} ({})",
                        rule.get("rule").and_then(Value::as_str).unwrap_or_default(),
                        signers.join(", ")
                    ),
                ));
            }
            match d.get("on_time").and_then(Value::as_bool) {
                Some(true) => timing = "on time".into(),
                Some(false) => {
                    timing = "late".into();
                    late = true;
                }
                None => {}
            }
            let verb = if e.kind == "signed" {
                "Signed"
            } else {
                "Completed"
            };
            // A step with one outcome has nothing to choose: "done" says nothing.
            match s("outcome").as_str() {
                "done" | "" => format!("{verb} “{}”", step()),
                o => format!("{verb} “{}”: {}", step(), words(o)),
            }
        }
        "auto_passed" => format!("Passed “{}”", step()),
        "branches_started" => format!("Split into parallel branches at “{}”", step()),
        "branch_arrived" => format!("A branch reached “{}”", step_title(&s("join"))),
        "joined" => format!("Branches joined at “{}”", step()),
        "children_started" => format!(
            "Started {} instance(s) of {}",
            d.get("children")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            s("procedure")
        ),
        "child_ended" => format!("A child instance ended: {}", words(&s("outcome"))),
        "children_collected" => format!("Every child of “{}” has ended", step()),
        "commented" => {
            details.push(("Comment".into(), s("text")));
            "Commented".into()
        }
        "cancelled" => {
            details.push(("Reason".into(), s("reason")));
            "Cancelled the instance".into()
        }
        "ended" => format!("Ended at “{}”", step()),
        "withdrawn" => {
            let n = d.get("tasks").and_then(Value::as_array).map_or(0, Vec::len);
            let c = d
                .get("children")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            format!(
                "“{}” withdrew the work still open ({n} task(s), {c} child instance(s))",
                step()
            )
        }
        other => match change_line(other, d, people, names, &mut details) {
            Some(w) => w,
            None => words(other),
        },
    };
    Line {
        seq: e.seq,
        at: when(e.at, zone),
        who,
        what,
        details,
        timing,
        late,
        meaning,
    }
}

/// The sentence of a repair, a migration or a deployment (and its reason among the
/// details); `None` for any other kind.
fn change_line(
    kind: &str,
    d: &serde_json::Map<String, Value>,
    people: &Directory,
    names: &Names,
    details: &mut Vec<(String, String)>,
) -> Option<String> {
    let s = |k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if let Some(r) = d.get("reason").and_then(Value::as_str) {
        details.push(("Reason".into(), r.to_string()));
    }
    Some(match kind {
        "task_returned" => format!(
            "A task held by {} went back to its roles",
            name_of(people, &s("user"))
        ),
        "suspended" => "Suspended the instance: its deadlines are paused".into(),
        "resumed" => format!(
            "Resumed the instance; due times moved on by {}",
            span(d.get("paused_ms").and_then(Value::as_i64).unwrap_or(0))
        ),
        "task_withdrawn" => format!(
            "Withdrew “{}” without it being done",
            names.step(&s("step"))
        ),
        "moved" => format!("Moved the work to “{}”", names.step(&s("to"))),
        "migrated" => {
            if let Some(Value::Object(r)) = d.get("renamed") {
                let renamed: Vec<String> = r
                    .iter()
                    .map(|(a, b)| format!("{a} → {}", b.as_str().unwrap_or_default()))
                    .collect();
                if !renamed.is_empty() {
                    details.push(("Steps renamed".into(), renamed.join(", ")));
                }
            }
            format!(
                "Moved from version {} to version {} (plan “{}”)",
                d.get("from_version").map(value_text).unwrap_or_default(),
                d.get("to_version").map(value_text).unwrap_or_default(),
                s("plan")
            )
        }
        "procedure_deployed" => format!(
            "Registered {} version {} from {}",
            s("procedure"),
            d.get("version").map(value_text).unwrap_or_default(),
            s("origin")
        ),
        "deployment_refused" => {
            if let Some(p) = d.get("problems").and_then(Value::as_array) {
                let lines: Vec<&str> = p.iter().filter_map(Value::as_str).collect();
                details.push(("Problems".into(), lines.join("; ")));
            }
            format!("Refused a procedure text from {}", s("origin"))
        }
        "procedure_retired" => format!("Retired {}: {} was removed", s("procedure"), s("origin")),
        _ => return None,
    })
}

fn parse_at(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_read_as_people_say_them() {
        let now = DateTime::parse_from_rfc3339("2026-11-02T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let h = |n: i64| Some(now + chrono::Duration::hours(n));
        assert_eq!(due_text(h(3), now), ("due in 3 h".into(), "soon"));
        assert_eq!(due_text(h(30), now), ("due in 30 h".into(), "ok"));
        assert_eq!(due_text(h(-50), now), ("2 days late".into(), "late"));
        assert_eq!(due_text(Some(now), now).1, "late");
        assert_eq!(due_text(None, now).1, "none");
    }

    #[test]
    fn a_steps_clause_is_the_comment_above_it() {
        let src = "[data]\nx = 1\n\n# ----\n# seed 002 §4.5: \"forward it\";\n# and answer.\n[steps.a]\nrole = \"r\"\n[steps.b]\n";
        assert_eq!(
            step_clause(src, "a").as_deref(),
            Some("seed 002 §4.5: \"forward it\"; and answer.")
        );
        assert_eq!(step_clause(src, "b"), None);
        assert_eq!(step_clause(src, "nope"), None);
    }

    #[test]
    fn values_read_as_text_not_json() {
        let v = serde_json::json!([{"item": "roller", "amount": 2}, {"item": "belt", "amount": 1}]);
        assert_eq!(
            value_text(&v),
            "Item: roller, Amount: 2; Item: belt, Amount: 1"
        );
        assert_eq!(value_text(&serde_json::json!(true)), "yes");
    }
}
