//! The checked-in JSON Schemas must equal what the code generates. To refresh them after
//! changing the model: `SOPFLOW_UPDATE_SCHEMAS=1 cargo test --test schema`.

use serde_json::Value;
use sopflow::definition::schema;

fn check_in_sync(path: &str, generated: &Value) {
    let text = schema::to_file_text(generated);
    if std::env::var_os("SOPFLOW_UPDATE_SCHEMAS").is_some() {
        std::fs::write(path, &text).expect("write schema");
        return;
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == text,
        "{path} is out of date: run `SOPFLOW_UPDATE_SCHEMAS=1 cargo test --test schema` and commit it"
    );
}

#[test]
fn procedure_schema_is_in_sync() {
    check_in_sync("schemas/procedure.schema.json", schema::procedure_schema());
}

#[test]
fn calendar_schema_is_in_sync() {
    check_in_sync("schemas/calendar.schema.json", schema::calendar_schema());
}

#[test]
fn register_schema_is_in_sync() {
    check_in_sync("schemas/register.schema.json", schema::register_schema());
}

#[test]
fn webhooks_schema_is_in_sync() {
    check_in_sync(
        "schemas/webhooks.schema.json",
        sopflow::outbox::hooks::hooks_schema(),
    );
}

#[test]
fn schemas_are_draft_07_for_editors() {
    for s in [
        schema::procedure_schema(),
        schema::calendar_schema(),
        schema::register_schema(),
        sopflow::outbox::hooks::hooks_schema(),
    ] {
        assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
        assert!(!s.to_string().contains("\"null\""), "TOML has no null");
    }
}

/// Every key a person can type has a description their editor shows.
#[test]
fn every_property_is_described() {
    fn walk(v: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                if p.get("description").is_none() {
                    missing.push(format!("{path}/{k}"));
                }
                walk(p, &format!("{path}/{k}"), missing);
            }
        }
        if let Some(defs) = v.get("definitions").and_then(Value::as_object) {
            for (k, d) in defs {
                walk(d, &format!("#/definitions/{k}"), missing);
            }
        }
    }
    for s in [
        schema::procedure_schema(),
        schema::calendar_schema(),
        schema::register_schema(),
        sopflow::outbox::hooks::hooks_schema(),
    ] {
        let mut missing = Vec::new();
        walk(s, "", &mut missing);
        assert!(missing.is_empty(), "undescribed keys: {missing:?}");
    }
}

#[test]
fn the_schema_rejects_unknown_keys_like_the_loader() {
    let v = schema::procedure_validator();
    let doc = serde_json::json!({"id": "x", "version": 1, "title": "t", "start": "a", "steps": {}, "colour": "red"});
    assert!(!v.is_valid(&doc));
}
