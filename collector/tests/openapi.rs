//! The checked-in OpenAPI document (`docs/openapi.json`) is the one the code generates: a change
//! to a handler's description or to a model type must come with the regenerated document.

use std::path::Path;

const REGENERATE: &str = "cargo run -p warden-collector -- openapi > docs/openapi.json";

#[test]
fn the_checked_in_openapi_document_is_current() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let checked_in = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with `{REGENERATE}`", file.display()));
    let generated = warden_collector::cli::openapi().unwrap();
    assert!(
        checked_in == generated,
        "docs/openapi.json differs from what the code generates; regenerate it with `{REGENERATE}` \
         (from the repository root) and review the diff"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_names_every_resource() {
    let doc: serde_json::Value =
        serde_json::from_str(&warden_collector::cli::openapi().unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/records",
        "/api/v1/decisions",
        "/api/v1/explain",
        "/api/v1/rules/replay",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}
