//! The meaning layer of a directory file — duplicate users, undeclared departments and roles,
//! department cycles, malformed token hashes, roles nobody holds — and the rewording of the
//! schema layer's findings into the directory's terms. Each finding is a located
//! [`Diagnostic`]; nothing here compiles, prints or stops at the first problem.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::definition::diagnostic::{did_you_mean, line_col, Diagnostic};
use crate::definition::source::{escape, ptr, SpannedDoc};

use super::model::{DirectoryFile, User};
use super::token::TOKEN_PREFIX;

/// The schema layer words places for procedures ("the procedure", "`users`"); say them in
/// the directory's terms, naming the user or department the problem is in.
pub(super) fn reword(mut d: Diagnostic, doc: &SpannedDoc) -> Diagnostic {
    let start = d.span.as_ref().map(|s| s.start);
    // The size of a table's extent when the diagnostic lies inside it. The extent covers
    // every key and value written in the table, because an array-of-tables item's own span
    // may be just its `[[users]]` header. A department table extended later in the file
    // (`[departments.x.sub]`) stretches over whatever lies between, so the smallest
    // enclosing table is the one the problem is in.
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
    // `[users.li]` is the likely slip; the generic hint would suggest an inline list.
    if d.code == "wrong-type" && d.message.starts_with("`users` must be") {
        d.help = Some(
            "write each person as its own `[[users]]` table (double brackets), with `id = \"…\"` inside"
                .to_string(),
        );
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
                spans_under(doc, &format!("{pointer}/{}", escape(k)), v, extent);
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

/// `is_id` as a JSON Schema pattern, for form fields that name a user or department.
pub const ID_PATTERN: &str = "^[a-z0-9][a-z0-9_.-]{0,63}$";

/// Whether `s` is a valid id for a user, department or role.
pub fn is_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
        && s.len() <= 64
}

/// Layer (c): the meaning of a well-formed directory. Every finding, each at its place.
pub(super) fn check(file: &DirectoryFile, doc: &SpannedDoc) -> Vec<Diagnostic> {
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

        if user.digest.is_some() && user.email.is_none() {
            out.push(
                Diagnostic::warning(
                    "digest-without-email",
                    format!(
                        "user `{}` asks for a mail digest but has no `email`",
                        user.id
                    ),
                )
                .at(doc.value_span(&at(i, &["digest"])))
                .label("no letter can be sent")
                .help("add the person's `email`, or leave `digest` out"),
            );
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

pub(super) fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
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

pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{load_text, token_hash};

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
    fn a_digest_without_an_address_is_pointed_at_and_an_unknown_one_refused() {
        let base = "[departments.d]\nname = \"D\"\n[roles]\nr = \"R\"\n[[users]]\nid = \"u\"\nname = \"U\"\ndepartment = \"d\"\nroles = [\"r\"]\nlevel = 1\n";
        assert_eq!(
            codes(&format!("{base}digest = \"daily\"\n")),
            vec![("digest-without-email", "\"daily\"".to_string())]
        );
        assert!(codes(&format!(
            "{base}email = \"u@example.com\"\ndigest = \"hourly\"\n"
        ))
        .is_empty());
        let weekly = codes(&format!(
            "{base}email = \"u@example.com\"\ndigest = \"weekly\"\n"
        ));
        assert_eq!(weekly.len(), 1, "{weekly:?}");
        assert_eq!(weekly[0].1, "\"weekly\"");
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
        let (_, report) = load_text("x.toml", "[users.li]\nname = \"Li\"\n");
        assert!(report.diagnostics[0]
            .help
            .as_deref()
            .is_some_and(|h| h.contains("`[[users]]`")));
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
}
