//! Core kinds kept: TLS Secrets (their type and certificate, never their data) and Warden's own
//! ConfigMaps (their keys; values are only ever kept as digests in the snapshot).

use super::Described;
use crate::json::{MAX_SCAN, at, str_at};
use crate::record::CertificateSummary;
use serde_json::Value;

pub(super) fn secret(obj: &Value, d: &mut Described) {
    let s = &mut d.summary;
    s.secret_type = str_at(obj, &["type"]).map(str::to_string);
    s.certificate = obj
        .get("certificate")
        .and_then(|c| serde_json::from_value::<CertificateSummary>(c.clone()).ok());
}

pub(super) fn config_map(obj: &Value, d: &mut Described) {
    for field in ["data", "binaryData"] {
        if let Some(m) = at(obj, &[field]).and_then(Value::as_object) {
            let keys: Vec<&str> = m.keys().take(MAX_SCAN).map(String::as_str).collect();
            if !keys.is_empty() {
                d.summary
                    .notes
                    .push(format!("{field} keys: {}", keys.join(", ")));
            }
        }
    }
}
