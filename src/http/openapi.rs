//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and
//! the DTOs' `ToSchema` derives, so it cannot drift from the code; `schemas/openapi.json`
//! is the checked-in copy (a test fails when it is out of date). Nothing here handles
//! requests.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use serde_json::{json, Value};

use super::api;
use super::dto;
use super::error::{ApiError, FieldProblemBody, Problem, PROBLEM_JSON};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token from `sopflow token issue USER` (or the demo tokens \
                         written to the data directory on first start)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sopflow",
        description = "Runs an organisation's control procedures: start instances, work through \
                       the tasks offered to your roles, read histories. Errors are RFC 9457 \
                       `application/problem+json` with a stable `type` per kind.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        api::healthz,
        api::metrics,
        api::openapi,
        api::me,
        api::list_procedures,
        api::get_procedure,
        api::procedure_graph,
        api::validate_procedure,
        api::deploy_procedure,
        api::procedure_versions,
        api::deployments,
        api::reload,
        api::suspend_instance,
        api::resume_instance,
        api::move_instance,
        api::withdraw_task,
        api::migrate,
        api::list_registers,
        api::register_entries,
        api::start_instance,
        api::list_instances,
        api::get_instance,
        api::instance_history,
        api::cancel_instance,
        api::comment_instance,
        api::list_tasks,
        api::get_task,
        api::claim_task,
        api::release_task,
        api::delegate_task,
        api::complete_task,
        api::notifications,
        api::advance_clock,
        api::list_deliveries,
        api::retry_delivery,
        api::list_webhooks,
        api::create_webhook,
        api::delete_webhook,
        api::audit_events,
        api::event_stream,
        api::audit_verify,
        api::audit_export,
        api::kpi_report,
    ),
    components(schemas(Problem, FieldProblemBody, dto::Diagnostic, dto::ProcedureText, dto::DateOrInstant, dto::GraphFormat,
        dto::InstanceStatus, dto::TaskState, dto::EventKindName)),
    modifiers(&Bearer),
    tags(
        (name = "service", description = "Health, metrics, this document, the caller"),
        (name = "procedures", description = "Registered procedures; checking a procedure file"),
        (name = "registers", description = "Registers procedures keep and read: customer ratings, warranties"),
        (name = "instances", description = "Starting, reading, cancelling and commenting on instances"),
        (name = "tasks", description = "The caller's worklist and acting on tasks"),
        (name = "audit", description = "The hash-chained audit trail: queries across instances, verification, service KPIs"),
        (name = "admin", description = "Simulation and operations"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON with a trailing newline (the checked-in form).
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut s = serde_json::to_value(ApiDoc::openapi())
            .map(|mut doc| {
                finish(&mut doc);
                doc
            })
            .and_then(|doc| serde_json::to_string_pretty(&doc))
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        s.push('\n');
        s
    })
}

/// What the annotations cannot say, or would say a hundred times over, applied to the
/// generated document so it tells the truth about what the server sends:
/// - every error is `application/problem+json` (the annotations name the `Problem` body;
///   utoipa would call it `application/json`), described by the problem types of its status;
/// - every operation may answer 503: the request timeout covers every route;
/// - every response has a description (OpenAPI requires one);
/// - a query parameter is present with a value or absent, never JSON `null`;
/// - `ClockAdvance` takes exactly one of `by` and `to`.
fn finish(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for op in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in op.values_mut().filter_map(Value::as_object_mut) {
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                for p in params.iter_mut().filter(|p| p["in"] == "query") {
                    if let Some(schema) = p.get_mut("schema") {
                        not_null(schema);
                    }
                }
            }
            let Some(responses) = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut()
            else {
                continue;
            };
            // Its problem body is filled in below, with every other error's.
            responses.entry("503").or_insert_with(|| json!({}));
            for (status, res) in responses.iter_mut() {
                let code: u16 = status.parse().unwrap_or(0);
                let Some(res) = res.as_object_mut() else {
                    continue;
                };
                if code >= 400 {
                    res.insert("content".into(), json!({ PROBLEM_JSON: problem_ref() }));
                }
                let empty = res
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty);
                if empty {
                    res.insert("description".into(), json!(describe(code)));
                }
            }
        }
    }
    if let Some(clock) = doc.pointer_mut("/components/schemas/ClockAdvance") {
        if let Some(clock) = clock.as_object_mut() {
            clock.insert(
                "oneOf".into(),
                json!([
                    { "required": ["by"], "properties": { "by": { "type": "string" }, "to": { "type": "null" } } },
                    { "required": ["to"], "properties": { "to": { "type": "string" }, "by": { "type": "null" } } }
                ]),
            );
        }
    }
}

fn problem_ref() -> Value {
    json!({ "schema": { "$ref": "#/components/schemas/Problem" } })
}

/// Drops `null` from a schema's types (`["string", "null"]` becomes `"string"`).
fn not_null(schema: &mut Value) {
    if let Some(types) = schema.get("type").and_then(Value::as_array) {
        let left: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        schema["type"] = match left.as_slice() {
            [one] => one.clone(),
            _ => Value::Array(left),
        };
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(list) = schema.get_mut(key).and_then(Value::as_array_mut) {
            list.retain(|s| s.get("type") != Some(&json!("null")));
        }
    }
}

/// A response's description: for an error, the problem types it carries.
fn describe(status: u16) -> String {
    match status {
        200 => return "OK".into(),
        201 => return "Created".into(),
        s if s < 400 => return String::new(),
        _ => {}
    }
    let kinds: Vec<String> = ApiError::one_of_each()
        .iter()
        .filter(|e| e.status().as_u16() == status)
        .map(|e| {
            let (slug, title) = e.kind();
            format!("{title} (`{slug}`)")
        })
        .collect();
    if kinds.is_empty() {
        format!("Status {status}")
    } else {
        kinds.join("; ")
    }
}

#[cfg(test)]
mod tests {
    /// The checked-in `schemas/openapi.json` is what the code generates. Regenerate with
    /// `SOPFLOW_UPDATE_SCHEMAS=1 cargo test --lib openapi`.
    #[test]
    fn checked_in_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/openapi.json");
        let now = super::document_json();
        if std::env::var_os("SOPFLOW_UPDATE_SCHEMAS").is_some() {
            if let Err(e) = std::fs::write(path, now) {
                panic!("cannot write {path}: {e}");
            }
        }
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == now,
            "schemas/openapi.json is out of date; run SOPFLOW_UPDATE_SCHEMAS=1 cargo test --lib openapi"
        );
    }

    #[test]
    fn every_route_is_documented() {
        let doc: serde_json::Value =
            serde_json::from_str(super::document_json()).unwrap_or_default();
        let paths = doc["paths"].as_object().map(|m| m.len()).unwrap_or(0);
        assert_eq!(
            paths,
            41,
            "paths: {:?}",
            doc["paths"]
                .as_object()
                .map(|m| m.keys().collect::<Vec<_>>())
        );
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    fn operations() -> Vec<(String, serde_json::Value)> {
        let doc: serde_json::Value =
            serde_json::from_str(super::document_json()).unwrap_or_default();
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                ops.push((format!("{} {path}", method.to_uppercase()), op.clone()));
            }
        }
        assert!(ops.len() >= 25, "{} operations", ops.len());
        ops
    }

    /// Schemathesis found query parameters documented as path parameters (`IntoParams`
    /// without `parameter_in = Query`), every one of them required.
    #[test]
    fn path_parameters_are_in_the_path_and_the_rest_are_query() {
        for (op, body) in operations() {
            let path = op.split_once(' ').map(|(_, p)| p).unwrap_or_default();
            for p in body["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default();
                let templated = path.contains(&format!("{{{name}}}"));
                match p["in"].as_str() {
                    Some("path") => assert!(templated, "{op}: `{name}` is not in the path"),
                    Some("query") => {
                        assert!(!templated, "{op}: `{name}` is in the path");
                        assert!(
                            !p["schema"].to_string().contains("\"null\""),
                            "{op}: query parameter `{name}` cannot be null"
                        );
                    }
                    // The one header a request may add: its idempotency key.
                    Some("header") => assert_eq!(name, "Idempotency-Key", "{op}"),
                    other => panic!("{op}: `{name}` is in {other:?}"),
                }
            }
        }
    }

    /// What every operation can answer, whatever its handler does: 401 without a token, 503
    /// on the request timeout; with a JSON body, 400, 413 and 415 from reading it. Every
    /// error is a problem, and every response has a description.
    #[test]
    fn responses_say_what_the_server_sends() {
        for (op, body) in operations() {
            let responses = body["responses"].as_object().cloned().unwrap_or_default();
            let has = |s: &str| responses.contains_key(s);
            assert!(has("503"), "{op}: 503");
            if body.get("security").is_some() {
                assert!(has("401"), "{op}: 401");
            }
            if body["requestBody"]["content"]
                .get("application/json")
                .is_some()
            {
                for s in ["400", "413"] {
                    assert!(has(s), "{op}: {s}");
                }
                let raw_too = body["requestBody"]["content"]
                    .as_object()
                    .is_some_and(|c| c.len() > 1);
                assert!(raw_too || has("415"), "{op}: 415");
            }
            for (status, res) in &responses {
                let description = res["description"].as_str().unwrap_or_default();
                assert!(!description.is_empty(), "{op} {status}: no description");
                if status.as_str() >= "400" {
                    let content = res["content"].as_object().cloned().unwrap_or_default();
                    assert_eq!(
                        content.keys().collect::<Vec<_>>(),
                        vec![super::PROBLEM_JSON],
                        "{op} {status}"
                    );
                }
            }
        }
    }
}
