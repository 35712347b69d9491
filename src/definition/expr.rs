//! CEL expressions in procedure files (guards, computed values, child inputs): compiling
//! them, finding the names they use, and a dry run on sample values of the declared field
//! types that catches type mistakes (comparing text with a number) when the file loads
//! rather than when an instance reaches the step.
//!
//! The language is CEL, through the `cel` crate; we write no expression language. This
//! module must not evaluate expressions against real instance data — that is the engine's.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use cel::objects::Key;
use cel::{Context, ExecutionError, Program, Value};
use chrono::{DateTime, FixedOffset};
use indexmap::IndexMap;

use super::model::{Field, FieldType};

/// CEL's standard library, built once. `cel::Context::default()` builds it anew — every
/// overload of every standard function — on each evaluation: over HTTP that cost a tenth of
/// the step completions a server managed (`examples/loadgen.rs`, 64 connections).
static STDLIB: std::sync::LazyLock<Arc<cel::Env>> =
    std::sync::LazyLock::new(|| Arc::new(cel::Env::stdlib()));

/// An empty evaluation context over the shared standard library; use it instead of
/// `cel::Context::default()`.
pub fn context<'p, 'v>() -> Context<'p, 'v> {
    Context::with_env(Arc::clone(&STDLIB))
}

/// A problem in one expression, with a byte range inside the expression text.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprProblem {
    pub code: &'static str,
    pub message: String,
    pub at: Option<std::ops::Range<usize>>,
    pub help: Option<String>,
    /// For unknown names: the name, so the caller can suggest a declared one.
    pub unknown_name: Option<String>,
}

/// What an expression may refer to: declared fields (with their types) and built-ins.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub fields: BTreeMap<String, Field>,
    /// Extra names bound here only (`item` inside a subprocess `input`).
    pub extra: BTreeMap<String, Field>,
    /// Whether the expression must produce true/false (guards) or any value.
    pub boolean: bool,
    /// Fields in `fields` whose type is not known (computed values the loader cannot type):
    /// an expression using one is not judged on types.
    pub untyped: BTreeSet<String>,
}

/// Built-in names every expression may use; see `model::RESERVED_NAMES`.
pub const BUILTINS: &[&str] = &["actor", "data", "form", "outcome", "now", "register"];

/// Compiles `src` and checks it against `scope`. Returns every problem found.
pub fn check(src: &str, scope: &Scope) -> Vec<ExprProblem> {
    let program = match Program::compile(src) {
        Ok(p) => p,
        Err(errors) => {
            return errors
                .errors
                .iter()
                .map(|e| ExprProblem {
                    code: "cel-syntax",
                    message: format!("this condition is not valid CEL: {}", e.msg),
                    at: line_col_to_range(src, e.pos),
                    help: Some(
                        "CEL conditions look like `severity == 'major'`, `score >= 60.0`, `!satisfied`, `size(items) > 0`"
                            .into(),
                    ),
                    unknown_name: None,
                })
                .collect();
        }
    };
    let mut problems = Vec::new();
    let mut free = Vec::new();
    free_idents(program.expression(), &mut Vec::new(), &mut free);
    let mut seen = HashSet::new();
    for (name, id) in &free {
        if !seen.insert(name.clone()) {
            continue;
        }
        if scope.fields.contains_key(name)
            || scope.extra.contains_key(name)
            || BUILTINS.contains(&name.as_str())
        {
            continue;
        }
        let help = if name == "item" {
            Some("`item` exists only in the `input` of a subprocess step".to_string())
        } else {
            None
        };
        problems.push(ExprProblem {
            code: "unknown-name",
            message: format!("`{name}` is not a field of this procedure"),
            at: ident_range(src, &program, *id, name),
            help,
            unknown_name: Some(name.clone()),
        });
    }
    enum_comparisons(src, &program, program.expression(), scope, &mut problems);
    problems.extend(super::cel_types::comparisons(src, &program, scope));
    // Sample values of a type nobody knows would only invent mistakes; register entries are
    // looked up by keys only real data has, so an expression reading them is not dry-run.
    let untyped = free
        .iter()
        .any(|(name, _)| scope.untyped.contains(name) || name == "register");
    if problems.is_empty() && !untyped {
        problems.extend(dry_run(src, &program, scope));
    }
    problems
}

/// The names `src` reads (comprehension variables excluded), each once, with its byte range
/// inside `src` when known. Empty when `src` does not compile: `check` reports that.
pub fn free_names(src: &str) -> Vec<(String, Option<std::ops::Range<usize>>)> {
    let Ok(program) = Program::compile(src) else {
        return Vec::new();
    };
    let mut free = Vec::new();
    free_idents(program.expression(), &mut Vec::new(), &mut free);
    let mut seen = HashSet::new();
    free.into_iter()
        .filter(|(name, _)| seen.insert(name.clone()))
        .map(|(name, id)| {
            let at = ident_range(src, &program, id, &name);
            (name, at)
        })
        .collect()
}

/// The registers an expression reads (`register.customers[…]` → `customers`), each once,
/// with the byte range of the id inside `src` when it can be found.
pub fn register_refs(src: &str) -> Vec<(String, Option<std::ops::Range<usize>>)> {
    let Ok(program) = Program::compile(src) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    fn walk(e: &IdedExpr, out: &mut Vec<String>) {
        match &e.expr {
            Expr::Select(sel) => {
                if matches!(&sel.operand.expr, Expr::Ident(n) if n == "register")
                    && !out.contains(&sel.field)
                {
                    out.push(sel.field.clone());
                }
                walk(&sel.operand, out);
            }
            Expr::Call(call) => {
                if let Some(t) = &call.target {
                    walk(t, out);
                }
                call.args.iter().for_each(|a| walk(a, out));
            }
            Expr::Comprehension(c) => {
                for x in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    walk(x, out);
                }
            }
            Expr::List(l) => l.elements.iter().for_each(|x| walk(x, out)),
            Expr::Map(m) => {
                for entry in &m.entries {
                    match &entry.expr {
                        cel::common::ast::EntryExpr::StructField(f) => walk(&f.value, out),
                        cel::common::ast::EntryExpr::MapEntry(me) => {
                            walk(&me.key, out);
                            walk(&me.value, out);
                        }
                    }
                }
            }
            Expr::Struct(st) => {
                for entry in &st.entries {
                    if let cel::common::ast::EntryExpr::StructField(f) = &entry.expr {
                        walk(&f.value, out);
                    }
                }
            }
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    walk(program.expression(), &mut out);
    out.into_iter()
        .map(|id| {
            let needle = format!("register.{id}");
            let at = src
                .find(&needle)
                .map(|i| i + "register.".len()..i + needle.len());
            (id, at)
        })
        .collect()
}

/// Names an expression reads, excluding comprehension variables (`items.all(i, i.ok)`).
fn free_idents(e: &IdedExpr, bound: &mut Vec<String>, out: &mut Vec<(String, u64)>) {
    match &e.expr {
        Expr::Ident(name) => {
            if !name.starts_with('@') && !bound.iter().any(|b| b == name) {
                out.push((name.clone(), e.id));
            }
        }
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                free_idents(t, bound, out);
            }
            for a in &call.args {
                free_idents(a, bound, out);
            }
        }
        Expr::Comprehension(c) => {
            free_idents(&c.iter_range, bound, out);
            free_idents(&c.accu_init, bound, out);
            let depth = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v2) = &c.iter_var2 {
                bound.push(v2.clone());
            }
            bound.push(c.accu_var.clone());
            free_idents(&c.loop_cond, bound, out);
            free_idents(&c.loop_step, bound, out);
            free_idents(&c.result, bound, out);
            bound.truncate(depth);
        }
        Expr::List(l) => l.elements.iter().for_each(|x| free_idents(x, bound, out)),
        Expr::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    cel::common::ast::EntryExpr::StructField(f) => {
                        free_idents(&f.value, bound, out)
                    }
                    cel::common::ast::EntryExpr::MapEntry(me) => {
                        free_idents(&me.key, bound, out);
                        free_idents(&me.value, bound, out);
                    }
                }
            }
        }
        Expr::Select(s) => free_idents(&s.operand, bound, out),
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let cel::common::ast::EntryExpr::StructField(f) = &entry.expr {
                    free_idents(&f.value, bound, out);
                }
            }
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// `severity == 'minor'` where `severity` can never be `minor`: always false, surely a typo.
fn enum_comparisons(
    src: &str,
    program: &Program,
    e: &IdedExpr,
    scope: &Scope,
    out: &mut Vec<ExprProblem>,
) {
    if let Expr::Call(call) = &e.expr {
        if (call.func_name == "_==_" || call.func_name == "_!=_") && call.args.len() == 2 {
            for (a, b) in [
                (&call.args[0], &call.args[1]),
                (&call.args[1], &call.args[0]),
            ] {
                if let (Expr::Ident(name), Expr::Literal(LiteralValue::String(lit))) =
                    (&a.expr, &b.expr)
                {
                    if let Some(field) = scope.fields.get(name) {
                        let lit: &str = lit.as_ref();
                        if !field.choices.is_empty() && !field.choices.iter().any(|c| c == lit) {
                            let best = super::diagnostic::did_you_mean(
                                lit,
                                field.choices.iter().map(String::as_str),
                            );
                            out.push(ExprProblem {
                                code: "not-a-choice",
                                message: format!(
                                    "`{name}` can never be '{lit}': its choices are {}",
                                    field
                                        .choices
                                        .iter()
                                        .map(|c| format!("'{c}'"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                                at: literal_range(src, program, b.id, lit),
                                help: best.map(|b| format!("did you mean '{b}'?")),
                                unknown_name: None,
                            });
                        }
                    }
                }
            }
        }
        if let Some(t) = &call.target {
            enum_comparisons(src, program, t, scope, out);
        }
        for a in &call.args {
            enum_comparisons(src, program, a, scope, out);
        }
    }
}

/// Runs the expression on sample values of the declared types, twice (booleans all true,
/// then all false, so both sides of `&&`/`||` are reached). Errors that depend only on
/// types — no such operator for these types, a field an object does not have — are reported;
/// errors that depend on values (division by zero) are not, since real data differs.
fn dry_run(src: &str, program: &Program, scope: &Scope) -> Vec<ExprProblem> {
    let mut out = Vec::new();
    for flag in [true, false] {
        let mut ctx = context();
        let mut data = HashMap::new();
        for (name, field) in scope.fields.iter().chain(scope.extra.iter()) {
            let v = sample(field, flag);
            data.insert(Key::String(Arc::new(name.clone())), v.clone());
            ctx.add_variable_from_value(name.clone(), v);
        }
        ctx.add_variable_from_value("data", Value::Map(data.into()));
        ctx.add_variable_from_value("form", Value::Map(HashMap::<Key, Value>::new().into()));
        let actor: HashMap<Key, Value> = [
            ("id", Value::String(Arc::new("someone".into()))),
            ("department", Value::String(Arc::new("office".into()))),
            (
                "roles",
                Value::List(Arc::new(vec![Value::String(Arc::new("role".into()))])),
            ),
            ("level", Value::Int(1)),
        ]
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k.into())), v))
        .collect();
        ctx.add_variable_from_value("actor", Value::Map(actor.into()));
        ctx.add_variable_from_value("outcome", Value::String(Arc::new("done".into())));
        ctx.add_variable_from_value("now", Value::Timestamp(sample_time()));
        // Register entries are looked up by keys only real data has: a missing key is a
        // value error, which the dry run does not judge.
        ctx.add_variable_from_value("register", Value::Map(HashMap::<Key, Value>::new().into()));
        match program.execute(&ctx) {
            Ok(v) => {
                if scope.boolean && !matches!(v, Value::Bool(_)) {
                    out.push(ExprProblem {
                        code: "cel-not-boolean",
                        message: format!(
                            "this condition gives {} instead of true or false",
                            type_name(&v)
                        ),
                        at: None,
                        help: Some(
                            "compare it with something, e.g. `severity == 'major'` or `count > 0`"
                                .into(),
                        ),
                        unknown_name: None,
                    });
                    return out;
                }
            }
            Err(e) => {
                if let Some(msg) = type_error(&e) {
                    out.push(ExprProblem {
                        code: "cel-type",
                        message: msg,
                        at: None,
                        help: Some(
                            "check the types of the fields used: text is compared with 'quotes', whole numbers with 3, numbers with 3.0, dates with timestamp('2027-01-01T00:00:00Z')"
                                .into(),
                        ),
                        unknown_name: None,
                    });
                    return out;
                }
            }
        }
    }
    let _ = src;
    out
}

fn type_error(e: &ExecutionError) -> Option<String> {
    match e {
        ExecutionError::NoSuchOverload(o) => Some(format!(
            "`{}` cannot be applied to {}",
            operator_words(o.function()),
            o.argument_types()
                .iter()
                .map(|t| cel_type_words(t))
                .collect::<Vec<_>>()
                .join(" and ")
        )),
        ExecutionError::ValuesNotComparable(a, b) => Some(format!(
            "{} cannot be compared with {}",
            type_name(a),
            type_name(b)
        )),
        ExecutionError::UnsupportedBinaryOperator(op, a, b) => Some(format!(
            "`{}` cannot be applied to {} and {}",
            match *op {
                "add" => "+",
                "sub" => "-",
                "mul" => "*",
                "div" => "/",
                "rem" => "%",
                other => other,
            },
            type_name(a),
            type_name(b)
        )),
        ExecutionError::UnexpectedType { got, want } => {
            Some(format!("expected {want} but got {got}"))
        }
        ExecutionError::NoSuchKey(k) => Some(format!("there is no field `{k}` here")),
        ExecutionError::UndeclaredReference(name) => {
            Some(format!("`{name}` is not a known function or field"))
        }
        ExecutionError::NotSupportedAsMethod { method, target } => Some(format!(
            "`{method}` cannot be used on {}",
            type_name(target)
        )),
        ExecutionError::UnsupportedTargetType { target } => {
            Some(format!("this cannot be applied to {}", type_name(target)))
        }
        _ => None,
    }
}

/// CEL's type names in the words of the procedure format.
fn cel_type_words(t: &str) -> &str {
    match t {
        "string" => "text",
        "int" | "uint" => "a whole number",
        "double" => "a number with decimals",
        "bool" => "true/false",
        "timestamp" => "a date",
        "duration" => "a duration",
        "list" => "a list",
        "map" => "a table",
        "null" => "nothing (null)",
        other => other,
    }
}

fn operator_words(f: &str) -> String {
    match f {
        "_==_" => "==".into(),
        "_!=_" => "!=".into(),
        "_<_" => "<".into(),
        "_<=_" => "<=".into(),
        "_>_" => ">".into(),
        "_>=_" => ">=".into(),
        "_+_" => "+".into(),
        "_-_" => "-".into(),
        "_*_" => "*".into(),
        "_/_" => "/".into(),
        "!_" => "!".into(),
        other => other.into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "a list",
        Value::Map(_) => "a table",
        Value::Int(_) | Value::UInt(_) => "a whole number",
        Value::Float(_) => "a number",
        Value::String(_) => "text",
        Value::Bool(_) => "true/false",
        Value::Timestamp(_) => "a date",
        Value::Duration(_) => "a duration",
        Value::Null => "nothing (null)",
        _ => "a value",
    }
}

fn sample_time() -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339("2026-01-05T09:00:00+00:00").unwrap_or_default()
}

/// A value of the field's declared type, as the engine will bind it at run time.
pub fn sample(field: &Field, flag: bool) -> Value {
    match field.ty {
        FieldType::String => Value::String(Arc::new(
            field
                .choices
                .first()
                .cloned()
                .unwrap_or_else(|| "text".into()),
        )),
        FieldType::Text => Value::String(Arc::new("text".into())),
        FieldType::User => Value::String(Arc::new("user".into())),
        FieldType::Department => Value::String(Arc::new("department".into())),
        FieldType::Integer => Value::Int(1),
        FieldType::Number => Value::Float(1.0),
        FieldType::Boolean => Value::Bool(flag),
        FieldType::Date | FieldType::Datetime => Value::Timestamp(sample_time()),
        FieldType::List => Value::List(Arc::new(
            field
                .items
                .as_deref()
                .map(|i| sample(i, flag))
                .into_iter()
                .collect(),
        )),
        FieldType::Object => Value::Map(object_sample(&field.fields, flag).into()),
    }
}

fn object_sample(fields: &IndexMap<String, Field>, flag: bool) -> HashMap<Key, Value> {
    fields
        .iter()
        .map(|(k, f)| (Key::String(Arc::new(k.clone())), sample(f, flag)))
        .collect()
}

/// CEL reports 1-based line and 1-based column (characters); turn that into a byte range
/// of one character inside `src`.
fn line_col_to_range(src: &str, (line, col): (isize, isize)) -> Option<std::ops::Range<usize>> {
    if line < 1 || col < 1 {
        return None;
    }
    let line_start = if line == 1 {
        0
    } else {
        src.match_indices('\n')
            .nth((line - 2) as usize)
            .map(|(i, _)| i + 1)?
    };
    let rest = &src[line_start..];
    let (off, ch) = rest
        .char_indices()
        .nth((col - 1) as usize)
        .unwrap_or((rest.len(), ' '));
    let start = line_start + off;
    Some(start..(start + ch.len_utf8()).min(src.len()).max(start))
}

/// Byte range of the identifier node `id`, checked against the text so a wrong offset
/// never points at something else.
fn ident_range(
    src: &str,
    program: &Program,
    id: u64,
    name: &str,
) -> Option<std::ops::Range<usize>> {
    let (start, _) = program.source_info().offset_for(id)?;
    let start = char_to_byte(src, start as usize)?;
    if src[start..].starts_with(name) {
        Some(start..start + name.len())
    } else {
        src.find(name).map(|i| i..i + name.len())
    }
}

fn literal_range(
    src: &str,
    program: &Program,
    id: u64,
    lit: &str,
) -> Option<std::ops::Range<usize>> {
    let (start, _) = program.source_info().offset_for(id)?;
    let start = char_to_byte(src, start as usize)?;
    let len = lit.len() + 2;
    (start + len <= src.len()).then_some(start..start + len)
}

pub(super) fn char_to_byte(src: &str, chars: usize) -> Option<usize> {
    if chars == src.chars().count() {
        return Some(src.len());
    }
    src.char_indices().nth(chars).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(ty: FieldType) -> Field {
        Field {
            ty,
            title: None,
            description: None,
            required: false,
            required_for: vec![],
            must_be_true_for: vec![],
            choices: vec![],
            min: None,
            max: None,
            min_length: None,
            max_length: None,
            min_items: None,
            max_items: None,
            items: None,
            fields: IndexMap::new(),
        }
    }

    fn scope() -> Scope {
        let mut fields = BTreeMap::new();
        let mut sev = field(FieldType::String);
        sev.choices = vec!["general".into(), "major".into(), "crisis".into()];
        fields.insert("severity".into(), sev);
        fields.insert("satisfied".into(), field(FieldType::Boolean));
        fields.insert("score".into(), field(FieldType::Number));
        fields.insert("count".into(), field(FieldType::Integer));
        let mut item = field(FieldType::Object);
        item.fields
            .insert("points".into(), field(FieldType::Number));
        let mut items = field(FieldType::List);
        items.items = Some(Box::new(item));
        fields.insert("items".into(), items);
        Scope {
            fields,
            extra: BTreeMap::new(),
            boolean: true,
            untyped: BTreeSet::new(),
        }
    }

    #[test]
    fn accepts_ordinary_guards() {
        for ok in [
            "severity == 'general'",
            "!satisfied",
            "score >= 60.0 && count > 0",
            "items.all(i, i.points > 0.0)",
            "size(items) > 0",
            "actor.department != 'quality'",
            "severity in ['major', 'crisis']",
        ] {
            assert_eq!(check(ok, &scope()), vec![], "{ok}");
        }
    }

    #[test]
    fn reports_syntax_errors_with_a_position() {
        let p = check("severity == ", &scope());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].code, "cel-syntax");
        assert!(p[0].at.is_some());
    }

    #[test]
    fn reports_unknown_names_at_the_name() {
        let src = "severty == 'general'";
        let p = check(src, &scope());
        assert_eq!(p[0].code, "unknown-name");
        assert_eq!(&src[p[0].at.clone().unwrap()], "severty");
    }

    #[test]
    fn comprehension_variables_are_not_unknown() {
        assert_eq!(check("items.exists(x, x.points > 1.0)", &scope()), vec![]);
    }

    #[test]
    fn reports_impossible_enum_comparison() {
        let src = "severity == 'minor'";
        let p = check(src, &scope());
        assert_eq!(p[0].code, "not-a-choice");
        assert_eq!(&src[p[0].at.clone().unwrap()], "'minor'");
    }

    #[test]
    fn reports_type_mistakes() {
        // Comparisons are typed statically (cel_types.rs); arithmetic is left to the dry run.
        let p = check("severity > 3", &scope());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].code, "cel-type-mismatch");
        let p = check("score + 1 > 2.0", &scope());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].code, "cel-type");
        let p = check("items.all(i, i.pionts > 0.0)", &scope());
        assert_eq!(p[0].code, "cel-type", "{p:?}");
    }

    #[test]
    fn free_names_are_listed_once_with_their_place() {
        let src = "!satisfied && items.all(i, i.points > 0.0) && satisfied";
        let names = free_names(src);
        let plain: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(plain, ["satisfied", "items"]);
        assert_eq!(&src[names[1].1.clone().unwrap()], "items");
        assert!(free_names("a ==").is_empty());
    }

    #[test]
    fn guards_must_be_boolean() {
        let p = check("severity", &scope());
        assert_eq!(p[0].code, "cel-not-boolean");
        let mut s = scope();
        s.boolean = false;
        assert_eq!(check("score * 2.0", &s), vec![]);
    }
}
