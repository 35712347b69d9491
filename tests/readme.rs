//! The README's tutorial for process owners shows a procedure and the diagnostic a typo in it
//! gives. Both are checked here against the real validator, so the README and the validator
//! cannot drift apart.

use std::collections::HashSet;

use sopflow::definition::load::validate_text;

/// The text of the first fenced block of `lang` after `from` in `text`.
fn block_after<'a>(text: &'a str, from: usize, lang: &str) -> (&'a str, usize) {
    let fence = format!("```{lang}\n");
    let start = text[from..]
        .find(&fence)
        .map(|i| from + i + fence.len())
        .unwrap_or_else(|| panic!("no ```{lang} block after byte {from}"));
    let end = text[start..]
        .find("\n```")
        .map(|i| start + i + 1)
        .expect("the block is closed");
    (&text[start..end], end)
}

#[test]
fn the_tutorial_procedure_and_its_typo_diagnostic_are_what_the_validator_says() {
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    let section = readme
        .find("## Writing a procedure")
        .expect("the tutorial section");
    let (procedure, after) = block_after(&readme, section, "toml");
    assert!(procedure.contains("id = \"complaint-lite\""), "{procedure}");
    let calendars = HashSet::from(["default".to_string()]);
    let name = "procedures/complaint-lite.toml";

    // The procedure as shown is clean.
    let v = validate_text(name, procedure, &[], &calendars);
    let clean = &v.reports[0];
    assert_eq!(
        clean.errors() + clean.warnings(),
        0,
        "{}",
        clean.render_text()
    );

    // "If you wrote `role = "sale"`, you get:" — the typo, applied to the one line it fits.
    let said = &readme[after..];
    let typo = said
        .split_once("If you wrote")
        .and_then(|(_, rest)| rest.split_once('`'))
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(t, _)| t)
        .expect("the sentence naming the typo");
    let (key, _) = typo
        .split_once(" = ")
        .expect("the typo is a `key = value` line");
    let candidates: Vec<&str> = procedure
        .lines()
        .filter(|l| l.starts_with(&format!("{key} = ")) && strsim::levenshtein(l, typo) == 1)
        .collect();
    assert_eq!(
        candidates.len(),
        1,
        "one line the typo `{typo}` fits: {candidates:?}"
    );
    let with_typo = procedure.replacen(candidates[0], typo, 1);
    let (expected, _) = block_after(&readme, after, "text");

    let v = validate_text(name, &with_typo, &[], &calendars);
    let got = v.reports[0].render_text();
    assert_eq!(
        got.trim_end(),
        expected.trim_end(),
        "README.md shows a different diagnostic than the validator gives; replace the block with:\n{got}"
    );
}
