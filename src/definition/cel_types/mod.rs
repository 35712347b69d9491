//! Static types of CEL expressions, to catch comparisons that can never hold. In CEL, `==`
//! between values of different types is simply false, not an error (`customer_satisfied ==
//! 'yes'` on a yes/no field quietly takes the other branch at run time), and `in` over a list
//! of another type is simply false; `<` and friends fail at run time. The dry run in
//! `expr.rs` sees only errors, so this module works out the type of every sub-expression from
//! the declared fields, literals and built-ins, and reports every comparison (`==`, `!=`,
//! `<`, `<=`, `>`, `>=`, `in`) of values that cannot be compared — at the comparison, with
//! the way to write it.
//!
//! Types follow what the engine binds and what the `cel` crate (0.15) does: whole numbers and
//! decimals compare with each other (`score >= 60` works on a decimal field), so they are not
//! reported; `null` (an empty field) compares with anything. Whatever type is not known for
//! certain is left alone: this module must never report a comparison that works, and must
//! never panic on any expression.

use std::collections::BTreeMap;
use std::ops::Range;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::Program;

use super::expr::{char_to_byte, ExprProblem, Scope};

mod advice;
use super::model::{Field, FieldType};

/// The type of a value, as far as it is known.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    Str,
    Time,
    Duration,
    Null,
    List(Box<Ty>),
    /// A table; with its fields (type and the word for their declared type) when known.
    Table(Option<BTreeMap<String, (Ty, &'static str)>>),
    /// Not known here: never reported.
    Dyn,
}

/// Kinds of values that can be compared with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Bool,
    Number,
    Text,
    Date,
    Duration,
    List,
    Table,
}

impl Ty {
    fn class(&self) -> Option<Class> {
        match self {
            Ty::Bool => Some(Class::Bool),
            Ty::Int | Ty::Uint | Ty::Double => Some(Class::Number),
            Ty::Str => Some(Class::Text),
            Ty::Time => Some(Class::Date),
            Ty::Duration => Some(Class::Duration),
            Ty::List(_) => Some(Class::List),
            Ty::Table(_) => Some(Class::Table),
            Ty::Null | Ty::Dyn => None,
        }
    }

    /// "a whole number", "text"…
    fn words(&self) -> &'static str {
        match self {
            Ty::Bool => "a yes/no value",
            Ty::Int | Ty::Uint => "a whole number",
            Ty::Double => "a number",
            Ty::Str => "text",
            Ty::Time => "a date",
            Ty::Duration => "a duration",
            Ty::Null => "null",
            Ty::List(_) => "a list",
            Ty::Table(_) => "a table",
            Ty::Dyn => "a value",
        }
    }
}

/// Whether `==` between the two can ever hold.
fn can_equal(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        (Ty::List(x), Ty::List(y)) => can_equal(x, y),
        _ => match (a.class(), b.class()) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        },
    }
}

/// Whether `<` between the two gives an answer rather than an error.
fn can_order(a: &Ty, b: &Ty) -> bool {
    match (a.class(), b.class()) {
        (Some(x), Some(y)) => x == y && !matches!(x, Class::List | Class::Table),
        _ => true,
    }
}

/// The word for a declared field's type: "the {word} field `x`".
fn field_word(t: FieldType) -> &'static str {
    match t {
        FieldType::String | FieldType::Text => "text",
        FieldType::Integer => "whole-number",
        FieldType::Number => "number",
        FieldType::Boolean => "yes/no",
        FieldType::Date => "date",
        FieldType::Datetime => "date-time",
        FieldType::User => "user",
        FieldType::Department => "department",
        FieldType::List => "list",
        FieldType::Object => "table",
    }
}

/// The type the engine gives a field's value. `loose` is for `item`, which the engine binds
/// without the field types, so its dates stay text: those are left unknown.
fn field_ty(f: &Field, loose: bool) -> Ty {
    match f.ty {
        FieldType::String | FieldType::Text | FieldType::User | FieldType::Department => Ty::Str,
        FieldType::Integer => Ty::Int,
        FieldType::Number => Ty::Double,
        FieldType::Boolean => Ty::Bool,
        FieldType::Date | FieldType::Datetime if loose => Ty::Dyn,
        FieldType::Date | FieldType::Datetime => Ty::Time,
        FieldType::List => Ty::List(Box::new(
            f.items.as_deref().map_or(Ty::Dyn, |i| field_ty(i, loose)),
        )),
        FieldType::Object => Ty::Table(Some(
            f.fields
                .iter()
                .map(|(k, sub)| (k.clone(), (field_ty(sub, loose), field_word(sub.ty))))
                .collect(),
        )),
    }
}

/// A typed sub-expression: its type and how to name it in a sentence.
#[derive(Debug, Clone)]
struct Typed {
    ty: Ty,
    /// "the yes/no field `satisfied`", "the text 'yes'"; `None` to use the source text.
    name: Option<String>,
}

impl Typed {
    fn of(ty: Ty) -> Typed {
        Typed { ty, name: None }
    }
}

/// Every comparison in `program` between values that cannot be compared, each at its place
/// in `src`.
pub fn comparisons(src: &str, program: &Program, scope: &Scope) -> Vec<ExprProblem> {
    let mut c = Checker {
        src,
        program,
        scope,
        locals: Vec::new(),
        out: Vec::new(),
    };
    c.infer(program.expression());
    c.out
}

struct Checker<'a> {
    src: &'a str,
    program: &'a Program,
    scope: &'a Scope,
    /// Names bound by comprehensions (`items.all(i, …)`), innermost last.
    locals: Vec<(String, Typed)>,
    out: Vec<ExprProblem>,
}

impl Checker<'_> {
    fn infer(&mut self, e: &IdedExpr) -> Typed {
        match &e.expr {
            Expr::Literal(l) => self.literal(l),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(s) => {
                let operand = self.infer(&s.operand);
                if s.test {
                    return Typed::of(Ty::Bool);
                }
                match &operand.ty {
                    Ty::Table(Some(fields)) => match fields.get(&s.field) {
                        Some((ty, word)) => Typed {
                            ty: ty.clone(),
                            name: Some(format!("the {word} field `{}`", self.text(e))),
                        },
                        // A field the table does not have is the dry run's to report.
                        None => Typed::of(Ty::Dyn),
                    },
                    _ => Typed::of(Ty::Dyn),
                }
            }
            Expr::List(l) => {
                let elems: Vec<Ty> = l.elements.iter().map(|x| self.infer(x).ty).collect();
                Typed::of(Ty::List(Box::new(common(&elems))))
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(me) => {
                            self.infer(&me.key);
                            self.infer(&me.value);
                        }
                        EntryExpr::StructField(f) => {
                            self.infer(&f.value);
                        }
                    }
                }
                Typed::of(Ty::Table(None))
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.infer(&f.value);
                    }
                }
                Typed::of(Ty::Dyn)
            }
            Expr::Comprehension(c) => {
                let range = self.infer(&c.iter_range).ty;
                let (first, second) = match (&range, c.iter_var2.is_some()) {
                    (Ty::List(elem), false) => ((**elem).clone(), Ty::Dyn),
                    (Ty::List(elem), true) => (Ty::Int, (**elem).clone()),
                    (Ty::Table(_), _) => (Ty::Str, Ty::Dyn),
                    _ => (Ty::Dyn, Ty::Dyn),
                };
                let depth = self.locals.len();
                self.locals.push((c.iter_var.clone(), Typed::of(first)));
                if let Some(v2) = &c.iter_var2 {
                    self.locals.push((v2.clone(), Typed::of(second)));
                }
                let init = self.infer(&c.accu_init).ty;
                self.locals
                    .push((c.accu_var.clone(), Typed::of(init.clone())));
                self.infer(&c.loop_cond);
                let step = self.infer(&c.loop_step).ty;
                // `filter` and `map` start from `[]`: the step says what the list holds.
                let accu = match (&init, &step) {
                    (Ty::List(e), Ty::List(s)) if **e == Ty::Dyn => Ty::List(s.clone()),
                    _ => init,
                };
                if let Some(slot) = self.locals.last_mut() {
                    slot.1 = Typed::of(accu);
                }
                let result = self.infer(&c.result);
                self.locals.truncate(depth);
                Typed::of(result.ty)
            }
            Expr::Call(call) => {
                if let Some(t) = call.target.as_deref() {
                    self.infer(t);
                }
                let args: Vec<Typed> = call.args.iter().map(|a| self.infer(a)).collect();
                self.call(e, &call.func_name, &args, &call.args)
            }
            Expr::Unspecified => Typed::of(Ty::Dyn),
        }
    }

    fn literal(&self, l: &LiteralValue) -> Typed {
        let (ty, name) = match l {
            LiteralValue::Boolean(b) => (Ty::Bool, format!("`{}`", bool::from(*b))),
            LiteralValue::Int(i) => (Ty::Int, format!("the number {}", i64::from(*i))),
            LiteralValue::UInt(u) => (Ty::Uint, format!("the number {}", u64::from(*u))),
            LiteralValue::Double(d) => (Ty::Double, format!("the number {}", f64::from(*d))),
            LiteralValue::String(s) => {
                let s: &str = s.as_ref();
                (Ty::Str, format!("the text '{s}'"))
            }
            LiteralValue::Null => (Ty::Null, "`null`".to_string()),
            LiteralValue::Bytes(_) => return Typed::of(Ty::Dyn),
        };
        Typed {
            ty,
            name: Some(name),
        }
    }

    fn ident(&self, name: &str) -> Typed {
        if let Some((_, t)) = self.locals.iter().rev().find(|(n, _)| n == name) {
            return t.clone();
        }
        if self.scope.untyped.contains(name) {
            return Typed::of(Ty::Dyn);
        }
        if let Some(f) = self.scope.extra.get(name) {
            return Typed::of(field_ty(f, true));
        }
        if let Some(f) = self.scope.fields.get(name) {
            return Typed {
                ty: field_ty(f, false),
                name: Some(format!("the {} field `{name}`", field_word(f.ty))),
            };
        }
        Typed::of(match name {
            "now" => Ty::Time,
            "outcome" => Ty::Str,
            "actor" => Ty::Table(Some(
                [
                    ("id", (Ty::Str, "text")),
                    ("name", (Ty::Str, "text")),
                    ("department", (Ty::Str, "department")),
                    ("roles", (Ty::List(Box::new(Ty::Str)), "list")),
                    ("level", (Ty::Int, "whole-number")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            )),
            "data" => Ty::Table(Some(
                self.scope
                    .fields
                    .iter()
                    .map(|(k, f)| (k.clone(), (field_ty(f, false), field_word(f.ty))))
                    .collect(),
            )),
            _ => Ty::Dyn,
        })
    }

    fn call(&mut self, e: &IdedExpr, func: &str, args: &[Typed], nodes: &[IdedExpr]) -> Typed {
        let arg = |i: usize| args.get(i).map_or(Ty::Dyn, |a| a.ty.clone());
        let ty = match func {
            "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" | "@in" => {
                if let (Some(a), Some(b), Some(an), Some(bn)) =
                    (args.first(), args.get(1), nodes.first(), nodes.get(1))
                {
                    self.compare(e, func, (a, an), (b, bn));
                }
                Ty::Bool
            }
            "_&&_" | "_||_" | "!_" | "@not_strictly_false" => Ty::Bool,
            "_+_" => match (arg(0), arg(1)) {
                (Ty::List(a), Ty::List(b)) => {
                    Ty::List(Box::new(if *a == Ty::Dyn { *b } else { *a }))
                }
                (Ty::Time, Ty::Duration) | (Ty::Duration, Ty::Time) => Ty::Time,
                (a, b)
                    if a == b
                        && matches!(
                            a,
                            Ty::Int | Ty::Uint | Ty::Double | Ty::Str | Ty::Duration
                        ) =>
                {
                    a
                }
                _ => Ty::Dyn,
            },
            "_-_" => match (arg(0), arg(1)) {
                (Ty::Time, Ty::Time) => Ty::Duration,
                (Ty::Time, Ty::Duration) => Ty::Time,
                (a, b) if a == b && matches!(a, Ty::Int | Ty::Uint | Ty::Double | Ty::Duration) => {
                    a
                }
                _ => Ty::Dyn,
            },
            "_*_" | "_/_" | "_%_" => match (arg(0), arg(1)) {
                (a, b) if a == b && matches!(a, Ty::Int | Ty::Uint | Ty::Double) => a,
                _ => Ty::Dyn,
            },
            "-_" => match arg(0) {
                a @ (Ty::Int | Ty::Double) => a,
                _ => Ty::Dyn,
            },
            "_?_:_" => {
                let (a, b) = (arg(1), arg(2));
                match (&a, &b) {
                    _ if a == b => a,
                    (Ty::Null, _) => b,
                    (_, Ty::Null) => a,
                    _ => Ty::Dyn,
                }
            }
            "_[_]" => match (arg(0), nodes.get(1).map(|n| &n.expr)) {
                (Ty::List(elem), _) => *elem,
                (Ty::Table(Some(fields)), Some(Expr::Literal(LiteralValue::String(k)))) => {
                    let k: &str = k.as_ref();
                    fields.get(k).map_or(Ty::Dyn, |(t, _)| t.clone())
                }
                _ => Ty::Dyn,
            },
            "size" | "int" | "getFullYear" | "getMonth" | "getDate" | "getDayOfMonth"
            | "getDayOfWeek" | "getDayOfYear" | "getHours" | "getMinutes" | "getSeconds"
            | "getMilliseconds" => Ty::Int,
            "uint" => Ty::Uint,
            "double" => Ty::Double,
            "string" => Ty::Str,
            "bool" | "contains" | "startsWith" | "endsWith" | "matches" | "exists" | "all"
            | "exists_one" | "has" => Ty::Bool,
            "timestamp" => Ty::Time,
            "duration" => Ty::Duration,
            _ => Ty::Dyn,
        };
        Typed::of(ty)
    }

    /// The source text of a sub-expression (its whole extent, brackets balanced).
    fn text(&self, e: &IdedExpr) -> &str {
        self.span(e)
            .and_then(|r| self.src.get(r))
            .unwrap_or_default()
    }

    /// Byte range of a sub-expression in the source: from the first to the last character
    /// any of its nodes was parsed from, widened to balance brackets the nodes do not cover.
    fn span(&self, e: &IdedExpr) -> Option<Range<usize>> {
        let (start, end) = self.extent(e)?;
        let start = char_to_byte(self.src, start)?;
        let end = char_to_byte(self.src, end).unwrap_or(self.src.len());
        Some(balance(self.src, start..end.max(start)))
    }

    /// First and one past the last character (not byte) of the nodes under `e`.
    fn extent(&self, e: &IdedExpr) -> Option<(usize, usize)> {
        let mut lo: Option<usize> = None;
        let mut hi: Option<usize> = None;
        let mut visit = |start: usize, end: usize| {
            lo = Some(lo.map_or(start, |l| l.min(start)));
            hi = Some(hi.map_or(end, |h| h.max(end)));
        };
        let info = self.program.source_info();
        let mut stack: Vec<&IdedExpr> = vec![e];
        while let Some(n) = stack.pop() {
            if let Some((s, stop)) = info.offset_for(n.id) {
                let (s, stop) = (s as usize, stop as usize);
                match &n.expr {
                    // A select is recorded at its dot; its name follows.
                    Expr::Select(sel) if !sel.test => visit(s, s + 1 + sel.field.chars().count()),
                    _ => visit(s, stop + 1),
                }
            }
            match &n.expr {
                Expr::Call(c) => {
                    stack.extend(c.target.as_deref());
                    stack.extend(c.args.iter());
                }
                Expr::Select(s) => stack.push(&s.operand),
                Expr::List(l) => stack.extend(l.elements.iter()),
                Expr::Comprehension(c) => {
                    stack.push(&c.iter_range);
                    stack.push(&c.loop_step);
                }
                Expr::Map(m) => {
                    for entry in &m.entries {
                        match &entry.expr {
                            EntryExpr::MapEntry(me) => {
                                stack.push(&me.key);
                                stack.push(&me.value);
                            }
                            EntryExpr::StructField(f) => stack.push(&f.value),
                        }
                    }
                }
                _ => {}
            }
        }
        Some((lo?, hi?))
    }
}

/// The type every element shares, or unknown.
fn common(elems: &[Ty]) -> Ty {
    let mut known = elems.iter().filter(|t| **t != Ty::Null);
    let Some(first) = known.next() else {
        return Ty::Dyn;
    };
    let class = first.class();
    if known.all(|t| t.class() == class) {
        first.clone()
    } else {
        Ty::Dyn
    }
}

/// `range` widened until its round and square brackets (outside quotes) pair up.
fn balance(src: &str, mut range: Range<usize>) -> Range<usize> {
    for _ in 0..src.len().min(64) {
        let Some(text) = src.get(range.clone()) else {
            break;
        };
        let (mut open, mut close) = (0i32, 0i32);
        let mut quote: Option<char> = None;
        for c in text.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '(' | '[') => open += 1,
                (None, ')' | ']') => close += 1,
                _ => {}
            }
        }
        if close > open {
            match src[..range.start].rfind(['(', '[']) {
                Some(i) => range.start = i,
                None => break,
            }
        } else if open > close {
            match src[range.end..].find([')', ']']) {
                Some(i) => range.end += i + 1,
                None => break,
            }
        } else {
            break;
        }
    }
    range
}

#[cfg(test)]
mod tests {
    use super::super::expr::check;
    use super::*;
    use indexmap::IndexMap;

    fn field(ty: FieldType) -> Field {
        let mut f = crate::definition::semantic::plain(ty);
        if ty == FieldType::List {
            f.items = Some(Box::new(crate::definition::semantic::plain(
                FieldType::String,
            )));
        }
        f
    }

    fn scope() -> Scope {
        let mut fields = BTreeMap::new();
        for (name, ty) in [
            ("satisfied", FieldType::Boolean),
            ("audit_date", FieldType::Date),
            ("planned_end", FieldType::Date),
            ("score", FieldType::Number),
            ("count", FieldType::Integer),
            ("severity", FieldType::String),
            ("tags", FieldType::List),
        ] {
            fields.insert(name.to_string(), field(ty));
        }
        let mut item = field(FieldType::Object);
        item.fields = IndexMap::from([
            ("corrected".to_string(), field(FieldType::Boolean)),
            ("points".to_string(), field(FieldType::Number)),
            ("due".to_string(), field(FieldType::Date)),
        ]);
        let mut items = field(FieldType::List);
        items.items = Some(Box::new(item.clone()));
        fields.insert("items".into(), items);
        fields.insert("finding".into(), item);
        Scope {
            fields,
            extra: BTreeMap::new(),
            boolean: true,
            untyped: Default::default(),
        }
    }

    /// (code, the text pointed at, help) of each problem of `src`.
    fn problems(src: &str) -> Vec<(&'static str, String, String)> {
        check(src, &scope())
            .into_iter()
            .map(|p| {
                let at = p.at.and_then(|r| src.get(r)).unwrap_or("?").to_string();
                (p.code, at, p.help.unwrap_or_default())
            })
            .collect()
    }

    fn one(src: &str) -> (String, String) {
        let p = problems(src);
        assert_eq!(p.len(), 1, "{src}: {p:?}");
        assert_eq!(p[0].0, "cel-type-mismatch", "{src}: {p:?}");
        (p[0].1.clone(), p[0].2.clone())
    }

    #[test]
    fn comparisons_of_matching_types_pass() {
        for ok in [
            "satisfied == true",
            "!satisfied",
            "score >= 60",
            "score >= 60.0 && count < 6",
            "count == 2.0",
            "size(items) > 0",
            "severity in ['major', 'crisis']",
            "'urgent' in tags",
            "audit_date < now",
            "audit_date > planned_end",
            "now - audit_date > duration('24h')",
            "audit_date == timestamp('2027-01-01T00:00:00Z')",
            "items.all(i, i.corrected)",
            "items.exists(i, i.points > 0 && i.due < now)",
            "size(items.filter(i, i.points > 1.0)) == 2",
            "items.map(i, i.points).exists(p, p > 2.0)",
            "finding.points >= 1",
            "severity == null",
            "audit_date != null",
            "actor.level >= 3 && 'quality' in actor.roles && actor.department != 'office'",
            "outcome == 'approve'",
            "data.severity == 'major'",
            "(satisfied ? 1 : 0) + count > 1",
            "tags == []",
            "'severity' in data",
        ] {
            assert_eq!(problems(ok), vec![], "{ok}");
        }
    }

    #[test]
    fn a_yes_no_field_compared_with_text_suggests_the_field_itself() {
        let (at, help) = one("satisfied == 'yes'");
        assert_eq!(at, "satisfied == 'yes'");
        assert!(help.starts_with("did you mean `satisfied`?"), "{help}");
        let (_, help) = one("satisfied == 'no'");
        assert!(help.starts_with("did you mean `!satisfied`?"), "{help}");
        let (_, help) = one("satisfied != 'yes'");
        assert!(help.starts_with("did you mean `!satisfied`?"), "{help}");
        let (_, help) = one("satisfied == 1");
        assert!(help.starts_with("did you mean `satisfied`?"), "{help}");
        let (_, help) = one("'true' == items[0].corrected");
        assert!(
            help.starts_with("did you mean `items[0].corrected`?"),
            "{help}"
        );
    }

    #[test]
    fn a_date_compared_with_text_suggests_a_timestamp() {
        let (at, help) = one("count > 0 && audit_date < '2027-01-01'");
        assert_eq!(at, "audit_date < '2027-01-01'");
        assert!(
            help.starts_with("did you mean `audit_date < timestamp('2027-01-01T00:00:00Z')`?"),
            "{help}"
        );
        assert!(help.contains("`planned_end`"), "{help}");
        let (_, help) = one("audit_date == 'soon'");
        assert!(help.contains("timestamp('2027-01-01T00:00:00Z')"), "{help}");
    }

    #[test]
    fn numbers_written_as_text_and_text_compared_with_numbers() {
        let (_, help) = one("score >= '60'");
        assert!(help.starts_with("did you mean `score >= 60`?"), "{help}");
        let (_, help) = one("count == '3'");
        assert!(help.starts_with("did you mean `count == 3`?"), "{help}");
        let (_, help) = one("severity == 3");
        assert!(
            help.starts_with("did you mean `severity == '3'`?"),
            "{help}"
        );
        one("'3' in [1, 2, 3]");
        one("count in ['1', '2']");
    }

    #[test]
    fn nested_fields_lists_and_built_ins_are_typed() {
        let (at, _) = one("items.exists(i, i.corrected == 'yes')");
        assert_eq!(at, "i.corrected == 'yes'");
        one("finding.due == 'tomorrow'");
        let (_, help) = one("tags == 'urgent'");
        assert!(
            help.starts_with("did you mean `'urgent' in tags`?"),
            "{help}"
        );
        one("size(items) == 'none'");
        one("now == '2027-01-01'");
        one("outcome == true");
        one("actor.level == 'high'");
        one("data.satisfied == 'yes'");
        one("timestamp('2027-01-01T00:00:00Z') > 5");
        one("duration('1h') == 3600");
        one("items.map(i, i.points).exists(p, p == 'x')");
        one("satisfied == audit_date");
        one("count != satisfied");
    }

    #[test]
    fn orders_and_in_that_fail_at_run_time_are_reported_once() {
        // The dry run would also fail on these; the static check says where.
        let (at, _) = one("(severity > 3)");
        assert_eq!(at, "severity > 3");
        one("tags < tags");
        one("satisfied < 3");
        one("'a' in severity");
        one("3 in finding");
    }

    #[test]
    fn unknown_types_are_left_alone() {
        for ok in [
            "form.x == 'yes'",
            "dyn(satisfied) == 'yes'",
            "{'a': 1}['a'] == 'x'",
            "1 in {1: 'a'}",
        ] {
            let p: Vec<_> = problems(ok)
                .into_iter()
                .filter(|p| p.0 == "cel-type-mismatch")
                .collect();
            assert_eq!(p, vec![], "{ok}");
        }
    }

    #[test]
    fn item_dates_are_text_at_run_time_and_not_judged() {
        let mut s = scope();
        let mut item = field(FieldType::Object);
        item.fields = IndexMap::from([("due".to_string(), field(FieldType::Date))]);
        s.extra.insert("item".into(), item);
        s.boolean = false;
        assert_eq!(check("item.due == '2027-01-01'", &s), vec![]);
        // Its other fields are what they are declared.
        item_fields_are_still_typed(s);
    }

    fn item_fields_are_still_typed(mut s: Scope) {
        if let Some(item) = s.extra.get_mut("item") {
            item.fields
                .insert("corrected".into(), field(FieldType::Boolean));
        }
        let p = check("item.corrected == 'yes'", &s);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].code, "cel-type-mismatch");
        assert!(
            p[0].message.contains("the yes/no field `item.corrected`"),
            "{p:?}"
        );
    }

    #[test]
    fn spans_cover_the_comparison_and_stay_inside_the_text() {
        for src in [
            "satisfied == 'yes'",
            "((satisfied)) == 'yes'",
            "size(tags) == 'x'",
            "items[0].points == 'x'",
            "items.exists(x, x.points == 'é')",
        ] {
            let p = check(src, &scope());
            assert_eq!(p.len(), 1, "{src}: {p:?}");
            let r = p[0].at.clone().expect("located");
            let text = src.get(r).expect("inside, on character boundaries");
            assert!(text.contains("=="), "{src}: {text}");
            let opens = text.matches('(').count();
            assert_eq!(opens, text.matches(')').count(), "{src}: {text}");
        }
    }
}
