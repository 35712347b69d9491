//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and
//! the DTOs' `ToSchema` derives, so it cannot drift from the code; `schemas/openapi.json`
//! is the checked-in copy (a test fails when it is out of date). Nothing here handles
//! requests.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api;
use super::dto;
use super::error::{FieldProblemBody, Problem};

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
        api::audit_events,
        api::audit_verify,
        api::kpi_report,
    ),
    components(schemas(Problem, FieldProblemBody, dto::Diagnostic)),
    modifiers(&Bearer),
    tags(
        (name = "service", description = "Health, metrics, this document, the caller"),
        (name = "procedures", description = "Registered procedures; checking a procedure file"),
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
        let mut s = ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        s.push('\n');
        s
    })
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
            24,
            "paths: {:?}",
            doc["paths"]
                .as_object()
                .map(|m| m.keys().collect::<Vec<_>>())
        );
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
