//! Property: for every declared field type and every kind of literal, a comparison of values
//! that cannot be compared (`==`/`!=` that can never hold, `<`… that fail, `in` that can never
//! be true) is a located `cel-type-mismatch` error, and a comparison that works is clean —
//! whether the field is read directly, inside a table field, or through a list comprehension.

use std::collections::HashSet;

use proptest::prelude::*;
use sopflow::definition::load::validate_text;

/// Kinds of values that compare with each other, as the `cel` crate does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Bool,
    Number,
    Text,
    Date,
    Duration,
    Table,
    ListOf(Elem),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    Text,
    Number,
}

const FIELD_TYPES: &[(&str, Class)] = &[
    ("string", Class::Text),
    ("text", Class::Text),
    ("user", Class::Text),
    ("department", Class::Text),
    ("integer", Class::Number),
    ("number", Class::Number),
    ("boolean", Class::Bool),
    ("date", Class::Date),
    ("datetime", Class::Date),
    ("list", Class::ListOf(Elem::Text)),
    ("object", Class::Table),
];

/// Literals, with their class; `None` is `null`, which compares with anything for equality.
const LITERALS: &[(&str, Option<Class>)] = &[
    ("'abc'", Some(Class::Text)),
    ("'3'", Some(Class::Text)),
    ("'yes'", Some(Class::Text)),
    ("3", Some(Class::Number)),
    ("3.5", Some(Class::Number)),
    ("3u", Some(Class::Number)),
    ("true", Some(Class::Bool)),
    ("timestamp('2027-01-01T00:00:00Z')", Some(Class::Date)),
    ("duration('1h')", Some(Class::Duration)),
    ("['a', 'b']", Some(Class::ListOf(Elem::Text))),
    ("[1, 2]", Some(Class::ListOf(Elem::Number))),
    ("null", None),
];

const OPS: &[&str] = &["==", "!=", "<", "<=", ">", ">=", "in", "in-field"];

fn elem_class(e: Elem) -> Class {
    match e {
        Elem::Text => Class::Text,
        Elem::Number => Class::Number,
    }
}

fn can_equal(a: Option<Class>, b: Option<Class>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// Whether `left op right` works (an answer that can be true, or for `!=` false).
fn works(op: &str, field: Class, lit: Option<Class>) -> bool {
    match op {
        "==" | "!=" => can_equal(Some(field), lit),
        "<" | "<=" | ">" | ">=" => {
            lit == Some(field) && !matches!(field, Class::Table | Class::ListOf(_))
        }
        // `FIELD in LITERAL`
        "in" => match lit {
            Some(Class::ListOf(e)) => can_equal(Some(field), Some(elem_class(e))),
            _ => false,
        },
        // `LITERAL in FIELD`
        _ => match field {
            Class::ListOf(e) => can_equal(lit, Some(elem_class(e))),
            Class::Table => can_equal(lit, Some(Class::Text)),
            _ => false,
        },
    }
}

/// How the field is reached in the expression.
#[derive(Debug, Clone, Copy)]
enum Access {
    Direct,
    InTable,
    InListItem,
}

fn field_decl(ty: &str) -> String {
    match ty {
        "list" => "{ type = \"list\", items = { type = \"string\" }, required = true }".into(),
        "object" => {
            "{ type = \"object\", fields = { x = { type = \"string\" } }, required = true }".into()
        }
        other => format!("{{ type = \"{other}\", required = true }}"),
    }
}

/// A procedure whose one condition compares the field (of type `ty`) with `lit`.
fn procedure(ty: &str, access: Access, op: &str, lit: &str) -> (String, String) {
    let (data, operand, wrap): (String, &str, fn(String) -> String) = match access {
        Access::Direct => (format!("f = {}", field_decl(ty)), "f", |e| e),
        Access::InTable => (
            format!(
                "holder = {{ type = \"object\", required = true, fields = {{ f = {} }} }}",
                field_decl(ty)
            ),
            "holder.f",
            |e| e,
        ),
        Access::InListItem => (
            format!(
                "rows = {{ type = \"list\", required = true, items = {{ type = \"object\", fields = {{ f = {} }} }} }}",
                field_decl(ty)
            ),
            "r.f",
            |e| format!("rows.exists(r, {e})"),
        ),
    };
    let comparison = match op {
        "in" => format!("{operand} in {lit}"),
        "in-field" => format!("{lit} in {operand}"),
        _ => format!("{operand} {op} {lit}"),
    };
    let expr = wrap(comparison);
    let text = format!(
        r#"id = "t"
version = 1
title = "T"
start = "a"
[roles]
clerk = "Clerk"
[data]
{data}
[steps.a]
title = "A"
role = "clerk"
next = [{{ to = "done", when = "{expr}" }}, {{ to = "done" }}]
[steps.done]
kind = "end"
"#
    );
    (text, expr)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn mismatched_comparisons_are_located_errors_and_matching_ones_are_clean(
        field in 0..FIELD_TYPES.len(),
        lit in 0..LITERALS.len(),
        op in 0..OPS.len(),
        access in prop_oneof![Just(Access::Direct), Just(Access::InTable), Just(Access::InListItem)],
    ) {
        let (ty, field_class) = FIELD_TYPES[field];
        let (lit, lit_class) = LITERALS[lit];
        let op = OPS[op];
        // `null` only compares for equality: ordering it, or looking in it, fails for a
        // reason no type can show (an empty value), which the dry run reports instead.
        prop_assume!(lit_class.is_some() || matches!(op, "==" | "!="));
        let (text, expr) = procedure(ty, access, op, lit);
        let v = validate_text("t.toml", &text, &[], &HashSet::from(["default".to_string()]));
        let report = &v.reports[0];
        let errors: Vec<_> = report.diagnostics.iter().filter(|d| d.is_error()).collect();
        if works(op, field_class, lit_class) {
            prop_assert!(errors.is_empty(), "{expr} ({ty}) should be clean:\n{}", report.render_text());
        } else {
            prop_assert_eq!(
                errors.iter().map(|d| d.code).collect::<Vec<_>>(),
                vec!["cel-type-mismatch"],
                "{} ({}):\n{}", expr, ty, report.render_text()
            );
            let span = errors[0].span.clone().expect("located");
            let at = &text[span.clone()];
            let expr_at = text.find(&expr).expect("the condition is in the file");
            prop_assert!(
                span.start >= expr_at && span.end <= expr_at + expr.len(),
                "{expr}: points at {at:?}, outside the condition"
            );
            let shown = if op == "in-field" { "in" } else { op };
            prop_assert!(at.contains(shown), "{expr}: points at {at:?}");
        }
    }
}
