//! Cycles in "starts a child of": a `subprocess` step of procedure `a` starts instances of
//! `b`; if `b` (directly or through others) starts `a` again, one start can create instances
//! without end. Such a cycle is refused unless a step on it declares `max_depth`, which the
//! engine enforces by refusing to start a child nested deeper. A procedure that starts itself
//! is the shortest such cycle (`a → a`).
//!
//! The relation spans files, so this check sees the whole loaded set (sibling files, or the
//! registered procedures when one text is validated) but reports only on the procedure whose
//! file is being reported, at the `procedure = "…"` value of its step. It must not report a
//! child procedure that does not exist (the meaning pass does) and must never panic.

use std::collections::{HashMap, VecDeque};

use super::diagnostic::Diagnostic;
use super::model::{Procedure, StepKind};
use super::source::{ptr, SpannedDoc};

/// One "starts a child of" edge: step `step` of procedure `from` starts `to`.
#[derive(Debug, Clone, Copy)]
struct Start<'a> {
    from: &'a str,
    step: &'a str,
    to: &'a str,
    bounded: bool,
}

/// The subprocess steps of `proc` that start a known procedure.
fn starts<'a>(proc: &'a Procedure) -> impl Iterator<Item = Start<'a>> {
    proc.steps.iter().filter_map(move |(id, s)| {
        let to = s.procedure.as_deref()?;
        (s.kind == StepKind::Subprocess).then_some(Start {
            from: proc.id.as_str(),
            step: id.as_str(),
            to,
            bounded: s.max_depth.is_some(),
        })
    })
}

/// `child-cycle` errors for each subprocess step of `proc` through which its child leads back
/// to `proc` without any `max_depth` on the way, and `max-depth-unused` warnings for each
/// `max_depth` on a step whose child never leads back. `procedures` is every procedure known
/// (including `proc`'s own id, whose entry may be another file with the same id: `proc`
/// itself is what is checked).
pub fn check(
    proc: &Procedure,
    doc: &SpannedDoc,
    procedures: &HashMap<&str, &Procedure>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for start in starts(proc) {
        // An unknown child is the meaning pass's `unknown-procedure`.
        if start.to != proc.id && !procedures.contains_key(start.to) {
            continue;
        }
        let at = ["steps", start.step, "procedure"];
        if start.bounded {
            if way_back(start.to, &proc.id, procedures, false).is_none() {
                out.push(
                    Diagnostic::warning(
                        "max-depth-unused",
                        format!(
                            "`max_depth` has no effect on step `{}`: `{}` never starts `{}` again, so the nesting cannot grow",
                            start.step, start.to, proc.id
                        ),
                    )
                    .at(doc.key_span(&ptr(&["steps", start.step, "max_depth"])))
                    .label("no cycle to limit")
                    .help("remove `max_depth`: it is only needed on a step whose child procedure leads back to this one"),
                );
            }
            continue;
        }
        // Only a cycle with no `max_depth` anywhere on it is unbounded.
        let Some(back) = way_back(start.to, &proc.id, procedures, true) else {
            continue;
        };
        let mut names: Vec<&str> = vec![proc.id.as_str()];
        names.extend(back.iter().map(|s| s.from));
        names.push(proc.id.as_str());
        let chain = names.join(" → ");
        let message = match back.len() {
            0 => format!("procedure `{}` starts itself again ({chain})", proc.id),
            1 => format!(
                "procedure `{}` starts `{}`, which starts `{}` again ({chain})",
                proc.id, start.to, proc.id
            ),
            _ => format!(
                "procedure `{}` starts `{}`, which through {} starts `{}` again ({chain})",
                proc.id,
                start.to,
                back[1..]
                    .iter()
                    .map(|s| format!("`{}`", s.from))
                    .collect::<Vec<_>>()
                    .join(", "),
                proc.id
            ),
        };
        let others = if back.is_empty() {
            String::new()
        } else {
            format!(
                " (or on {})",
                back.iter()
                    .map(|s| format!("step `{}` of `{}`", s.step, s.from))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push(
            Diagnostic::error("child-cycle", message)
                .at(doc.value_span(&ptr(&at)))
                .label("starts the cycle again")
                .help(format!(
                    "every instance would start another one without end, so one start could create thousands of instances. \
                     Break the cycle, or say how deep it may nest with `max_depth = N` (1 to 16) on this step{others}"
                )),
        );
    }
    out
}

/// The shortest chain of starts from procedure `from` back to `home`: the starts made by
/// `from`, then by the procedure it starts, and so on, the last one starting `home`. Empty
/// when `from` is `home`. With `unbounded_only`, starts from steps with `max_depth` are not
/// followed. Each procedure is visited once, so this ends on any set.
fn way_back<'a>(
    from: &'a str,
    home: &str,
    procedures: &HashMap<&'a str, &'a Procedure>,
    unbounded_only: bool,
) -> Option<Vec<Start<'a>>> {
    if from == home {
        return Some(Vec::new());
    }
    let mut came_by: HashMap<&str, Start<'a>> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(p) = queue.pop_front() {
        let Some(proc) = procedures.get(p) else {
            continue;
        };
        for s in starts(proc) {
            if unbounded_only && s.bounded {
                continue;
            }
            if s.to == home {
                let mut chain = vec![s];
                let mut at = p;
                while at != from {
                    let prev = came_by.get(at)?;
                    chain.push(*prev);
                    at = prev.from;
                }
                chain.reverse();
                return Some(chain);
            }
            if s.to != from && !came_by.contains_key(s.to) && procedures.contains_key(s.to) {
                came_by.insert(s.to, s);
                queue.push_back(s.to);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A procedure `id` whose step `go` starts `child` (with `extra` added to that step).
    fn starter(id: &str, child: &str, extra: &str) -> String {
        format!(
            r#"id = "{id}"
version = 1
title = "T"
start = "go"
[steps.go]
kind = "subprocess"
procedure = "{child}"
for_each = "items"
{extra}
next = [{{ to = "done" }}]
[steps.done]
kind = "end"
[data]
items = {{ type = "list", items = {{ type = "string" }} }}
"#
        )
    }

    fn load(src: &str) -> (Procedure, SpannedDoc) {
        (
            toml::from_str(src).expect("parses"),
            SpannedDoc::parse(src).expect("spans"),
        )
    }

    /// Diagnostics (code, message) of the first of `sources`, with all of them known.
    fn run(sources: &[String]) -> Vec<(&'static str, String, String)> {
        let loaded: Vec<(Procedure, SpannedDoc)> = sources.iter().map(|s| load(s)).collect();
        let known: HashMap<&str, &Procedure> =
            loaded.iter().map(|(p, _)| (p.id.as_str(), p)).collect();
        let (p, doc) = &loaded[0];
        check(p, doc, &known)
            .into_iter()
            .map(|d| {
                let at = d
                    .span
                    .clone()
                    .and_then(|s| sources[0].get(s))
                    .unwrap_or_default()
                    .to_string();
                (d.code, d.message, at)
            })
            .collect()
    }

    #[test]
    fn a_procedure_that_starts_itself_is_the_shortest_cycle() {
        let found = run(&[starter("a", "a", "")]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "child-cycle");
        assert!(found[0].1.contains("(a → a)"), "{found:?}");
        assert_eq!(found[0].2, "\"a\"");
        assert!(run(&[starter("a", "a", "max_depth = 3")]).is_empty());
    }

    #[test]
    fn two_procedures_starting_each_other_are_found_from_either_side() {
        let a = starter("a", "b", "");
        let b = starter("b", "a", "");
        for (first, second, chain) in [(&a, &b, "(a → b → a)"), (&b, &a, "(b → a → b)")] {
            let found = run(&[first.clone(), second.clone()]);
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].0, "child-cycle");
            assert!(found[0].1.contains(chain), "{found:?}");
        }
        let found = run(&[a.clone(), b.clone()]);
        assert!(
            found[0]
                .1
                .contains("procedure `a` starts `b`, which starts `a` again"),
            "{found:?}"
        );
    }

    #[test]
    fn longer_cycles_name_every_procedure_on_the_way() {
        let found = run(&[
            starter("a", "b", ""),
            starter("b", "c", ""),
            starter("c", "a", ""),
        ]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].1.contains("(a → b → c → a)"), "{found:?}");
        assert!(found[0].1.contains("through `c`"), "{found:?}");
    }

    #[test]
    fn one_max_depth_anywhere_on_the_cycle_bounds_it() {
        let sources = [
            starter("a", "b", ""),
            starter("b", "c", "max_depth = 4"),
            starter("c", "a", ""),
        ];
        assert!(run(&sources).is_empty());
        // The bounded step itself: on a cycle, so `max_depth` has an effect.
        let rotated = [sources[1].clone(), sources[2].clone(), sources[0].clone()];
        assert!(run(&rotated).is_empty());
    }

    #[test]
    fn max_depth_off_any_cycle_is_a_warning_at_the_key() {
        let found = run(&[starter("a", "b", "max_depth = 2"), starter("b", "c", "")]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "max-depth-unused");
        assert_eq!(found[0].2, "max_depth");
    }

    #[test]
    fn chains_without_a_way_back_and_unknown_children_are_fine() {
        assert!(run(&[starter("a", "b", ""), starter("b", "c", "")]).is_empty());
        assert!(run(&[starter("a", "nowhere", "")]).is_empty());
        // A cycle elsewhere is reported in its own files, not in a procedure leading into it.
        assert!(run(&[
            starter("a", "b", ""),
            starter("b", "c", ""),
            starter("c", "b", "")
        ])
        .is_empty());
    }
}
