//! What a comparison of values that cannot be compared is told: the sentence naming both
//! sides, and the way to write what was most likely meant (`customer_satisfied` for
//! `customer_satisfied == 'yes'`, `timestamp('…')` for a date compared with text). The types
//! come from the parent module; this one only words the finding, and must never panic.

use cel::common::ast::{Expr, IdedExpr, LiteralValue};

use super::super::expr::ExprProblem;
use super::super::model::FieldType;
use super::{can_equal, can_order, Checker, Class, Ty, Typed};

impl Checker<'_> {
    /// Reports the comparison `e` (the CEL function `func` on `a` and `b`) when the two
    /// sides cannot be compared that way.
    pub(super) fn compare(
        &mut self,
        e: &IdedExpr,
        func: &str,
        (a, an): (&Typed, &IdedExpr),
        (b, bn): (&Typed, &IdedExpr),
    ) {
        let op = match func {
            "_==_" => "==",
            "_!=_" => "!=",
            "_<_" => "<",
            "_<=_" => "<=",
            "_>_" => ">",
            "_>=_" => ">=",
            _ => "in",
        };
        let name_a = self.describe(a, an);
        let name_b = self.describe(b, bn);
        let message = match op {
            "==" | "!=" if !can_equal(&a.ty, &b.ty) => format!(
                "{name_a} is compared with {name_b}, which it can never equal: this comparison is always {}",
                if op == "==" { "false" } else { "true" }
            ),
            "<" | "<=" | ">" | ">=" if !can_order(&a.ty, &b.ty) => {
                if a.ty.class() == b.ty.class() {
                    format!(
                        "`{op}` cannot order {name_a} and {name_b}: {} have no order, so the condition fails whenever it is evaluated",
                        if a.ty.class() == Some(Class::List) { "lists" } else { "tables" }
                    )
                } else {
                    format!(
                        "`{op}` cannot order {name_a} against {name_b}, so the condition fails whenever it is evaluated"
                    )
                }
            }
            "in" => match &b.ty {
                Ty::List(elem) if !can_equal(&a.ty, elem) => format!(
                    "{name_a} can never be in {name_b}, which holds {}: this test is always false",
                    plural(elem)
                ),
                // Declared tables have text keys; a map written in the expression may not.
                Ty::Table(Some(_)) if !can_equal(&a.ty, &Ty::Str) => format!(
                    "{name_a} can never be a key of {name_b}, whose keys are text: this test is always false"
                ),
                other if other.class().is_some_and(|c| !matches!(c, Class::List | Class::Table)) => {
                    format!(
                        "`in` needs a list on its right, but {name_b} is {}, so the condition fails whenever it is evaluated",
                        other.words()
                    )
                }
                _ => return,
            },
            _ => return,
        };
        let help = self.hint(op, (a, an), (b, bn));
        self.out.push(ExprProblem {
            code: "cel-type-mismatch",
            message,
            at: self.span(e),
            help: Some(help),
            unknown_name: None,
        });
    }

    /// How to write the comparison the author most likely meant.
    fn hint(&self, op: &str, (a, an): (&Typed, &IdedExpr), (b, bn): (&Typed, &IdedExpr)) -> String {
        const GENERAL: &str = "compare values of the same kind: text with 'quotes', numbers with 3 or 3.0, yes/no fields on their own or with `!`, dates with timestamp('2027-01-01T00:00:00Z') or another date field";
        if op == "in" {
            if let (Ty::List(elem), Some(lit)) = (&b.ty, literal_of(an)) {
                if let Some(fix) = retyped(lit, elem) {
                    return format!("did you mean `{fix} in {}`? {GENERAL}", self.text(bn));
                }
            }
            return GENERAL.to_string();
        }
        for ((x, xn), (y, yn)) in [((a, an), (b, bn)), ((b, bn), (a, an))] {
            let x_text = self.text(xn);
            let lit = literal_of(yn);
            match (&x.ty, lit) {
                (Ty::Bool, lit) => {
                    let no = negated(x_text);
                    return match lit.and_then(truthy) {
                        Some(yes) => format!(
                            "did you mean `{}`? A yes/no value is true or false on its own: write `{x_text}` for yes and `{no}` for no",
                            if yes == (op == "==") { x_text } else { no.as_str() }
                        ),
                        None => format!("a yes/no value is used on its own: `{x_text}` for yes, `{no}` for no"),
                    };
                }
                (Ty::Time, lit) => {
                    let example = match lit {
                        Some(Lit::Str(s)) => as_timestamp(s),
                        _ => None,
                    }
                    .unwrap_or_else(|| "timestamp('2027-01-01T00:00:00Z')".to_string());
                    let others = self.date_fields(x_text);
                    let another = match others.first() {
                        Some(f) => format!(", or another date field such as `{f}`"),
                        None => ", or another date field".to_string(),
                    };
                    let lead = if lit.is_some() {
                        format!("did you mean `{x_text} {op} {example}`? ")
                    } else {
                        String::new()
                    };
                    return format!("{lead}Compare a date with a date: `{example}`{another}");
                }
                (Ty::Int | Ty::Uint | Ty::Double, Some(Lit::Str(s)))
                    if s.trim().parse::<f64>().is_ok() =>
                {
                    return format!(
                        "did you mean `{x_text} {op} {}`? A number is written without quotes",
                        s.trim()
                    );
                }
                (Ty::Str, Some(Lit::Num(n))) => {
                    return format!(
                        "did you mean `{x_text} {op} '{n}'`? Text is written in 'quotes'"
                    );
                }
                (Ty::List(_), _)
                    if y.ty.class().is_some_and(|c| c != Class::List) && op == "==" =>
                {
                    return format!(
                        "did you mean `{} in {x_text}`? `{x_text}` is a list: test whether it holds a value with `in`, or count its items with `size({x_text})`",
                        self.text(yn)
                    );
                }
                _ => {}
            }
        }
        GENERAL.to_string()
    }

    /// Other date fields in scope, to suggest comparing with one of them.
    fn date_fields(&self, except: &str) -> Vec<&str> {
        self.scope
            .fields
            .iter()
            .filter(|(k, f)| {
                k.as_str() != except && matches!(f.ty, FieldType::Date | FieldType::Datetime)
            })
            .map(|(k, _)| k.as_str())
            .collect()
    }

    fn describe(&self, t: &Typed, node: &IdedExpr) -> String {
        match &t.name {
            Some(n) => n.clone(),
            None => format!("`{}`, {}", self.text(node), t.ty.words()),
        }
    }
}

/// A literal operand, for suggestions.
#[derive(Debug, Clone, Copy)]
enum Lit<'a> {
    Str(&'a str),
    Num(f64),
    Bool(bool),
}

fn literal_of(e: &IdedExpr) -> Option<Lit<'_>> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(Lit::Str(s.as_ref())),
        Expr::Literal(LiteralValue::Int(i)) => Some(Lit::Num(i64::from(*i) as f64)),
        Expr::Literal(LiteralValue::UInt(u)) => Some(Lit::Num(u64::from(*u) as f64)),
        Expr::Literal(LiteralValue::Double(d)) => Some(Lit::Num(f64::from(*d))),
        Expr::Literal(LiteralValue::Boolean(b)) => Some(Lit::Bool(bool::from(*b))),
        _ => None,
    }
}

/// Whether a literal someone compared a yes/no value with means yes or no.
fn truthy(l: Lit<'_>) -> Option<bool> {
    match l {
        Lit::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "y" | "true" | "1" | "ok" => Some(true),
            "no" | "n" | "false" | "0" => Some(false),
            _ => None,
        },
        Lit::Num(1.0) => Some(true),
        Lit::Num(0.0) => Some(false),
        Lit::Bool(b) => Some(b),
        Lit::Num(_) => None,
    }
}

/// The literal written as a value of type `want`, when that is plain.
fn retyped(l: Lit<'_>, want: &Ty) -> Option<String> {
    match (l, want) {
        (Lit::Str(s), Ty::Int | Ty::Uint | Ty::Double) if s.trim().parse::<f64>().is_ok() => {
            Some(s.trim().to_string())
        }
        (Lit::Num(n), Ty::Str) => Some(format!("'{n}'")),
        (Lit::Str(s), Ty::Time) => as_timestamp(s),
        _ => None,
    }
}

/// `'2027-01-01'` → `timestamp('2027-01-01T00:00:00Z')`, when the text is a date.
fn as_timestamp(s: &str) -> Option<String> {
    let s = s.trim();
    if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() {
        return Some(format!("timestamp('{s}T00:00:00Z')"));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|_| format!("timestamp('{s}')"))
}

fn negated(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
    {
        format!("!{text}")
    } else {
        format!("!({text})")
    }
}

/// "text", "whole numbers"… for what a list holds.
fn plural(t: &Ty) -> &'static str {
    match t {
        Ty::Bool => "yes/no values",
        Ty::Int | Ty::Uint => "whole numbers",
        Ty::Double => "numbers",
        Ty::Str => "text",
        Ty::Time => "dates",
        Ty::Duration => "durations",
        Ty::List(_) => "lists",
        Ty::Table(_) => "tables",
        Ty::Null | Ty::Dyn => "values",
    }
}
