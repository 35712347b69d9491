//! Procedures against the directory: the roles procedures assign, sign, delegate, escalate
//! or notify to that the directory does not declare, or that no active user holds — steps
//! nobody could ever take. Warnings for the directory's report; this must not judge the
//! procedures themselves (their own checks do).

use std::collections::HashSet;
use std::ops::Range;

use indexmap::IndexMap;

use crate::definition::diagnostic::{did_you_mean, Diagnostic, FileReport};
use crate::definition::model::Procedure;

use super::check::list;
use super::lookup::Directory;

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
        if !dir.roles().contains_key(role) {
            let description = procs
                .iter()
                .find_map(|p| p.roles.get(role))
                .map_or("…", String::as_str);
            let d = Diagnostic::warning(
                "role-not-in-directory",
                format!("the role `{role}`, used by {ids}, is not declared in the directory"),
            )
            .at(dir.roles_span())
            .label("missing here");
            out.push(match did_you_mean(role, dir.roles().keys().map(String::as_str)) {
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
                .at(dir.role_span(role))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::fixtures::small;

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
