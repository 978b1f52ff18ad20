//! Where the harness finds the artifacts under test. Each can be overridden by an environment
//! variable, so the suite can run against binaries built elsewhere.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn from_env_or(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
}

/// The Envoy binary: `$ENVOY_BIN`, else `.venv/bin/envoy` (installed by `scripts/setup.sh`).
pub fn envoy_bin() -> PathBuf {
    from_env_or("ENVOY_BIN", workspace_root().join(".venv/bin/envoy"))
}

/// The filter: `$WARDEN_WASM`, else where `scripts/build-filter.sh` puts it.
pub fn filter_wasm() -> PathBuf {
    from_env_or(
        "WARDEN_WASM",
        workspace_root().join("target/wasm/wasm32-unknown-unknown/release/warden_filter.wasm"),
    )
}

/// The collector: `$WARDEN_BIN`, else the debug build.
pub fn warden_bin() -> PathBuf {
    from_env_or("WARDEN_BIN", workspace_root().join("target/debug/warden"))
}

/// The Envoy bootstrap template.
pub fn envoy_template() -> PathBuf {
    workspace_root().join("envoy/envoy.yaml.tmpl")
}

/// Fails with a message saying how to build `path` when it does not exist.
pub fn require(path: &std::path::Path, how: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} does not exist: {how} (or run `make test`, which builds everything)",
        path.display()
    );
    path.to_path_buf()
}
