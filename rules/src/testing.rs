//! Helpers shared by the crate's unit tests: rules files with one field changed, records, and a
//! brute-force rule to feed them to.

use crate::config::RuleSet;
use crate::decision::RuleDecision;
use crate::engine::Engine;
use warden_proto::pb::{AccessRecord, AuthDecision, DenyKind, Mechanism, Principal, Verdict};

/// A valid rule; tests replace, add or drop fields to provoke one error each.
pub(crate) const BASE: &[(&str, &str)] = &[
    ("name", "\"login-brute-force\""),
    ("kind", "\"auth_failures\""),
    ("action", "\"deny\""),
    ("threshold", "10"),
    ("window", "\"1m\""),
];

pub(crate) fn rule_text(set: &[(&str, &str)], drop: &[&str]) -> String {
    let mut fields: Vec<(&str, &str)> = BASE
        .iter()
        .copied()
        .filter(|(k, _)| !drop.contains(k))
        .collect();
    for &(k, v) in set {
        match fields.iter_mut().find(|(fk, _)| *fk == k) {
            Some(f) => f.1 = v,
            None => fields.push((k, v)),
        }
    }
    let mut text = String::from("[[rules]]\n");
    for (k, v) in fields {
        text.push_str(&format!("{k} = {v}\n"));
    }
    text
}

pub(crate) fn errors(text: &str) -> Vec<String> {
    match RuleSet::from_toml_str(text, "rules.toml") {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

pub(crate) fn one_error(set: &[(&str, &str)], drop: &[&str]) -> String {
    let errs = errors(&rule_text(set, drop));
    assert_eq!(errs.len(), 1, "expected exactly one error, got {errs:#?}");
    errs[0].clone()
}

/// One test per message: `rejects!(test_name, set [(field, toml)], drop [field], "message")`.
macro_rules! rejects {
    ($name:ident, set [$(($k:expr, $v:expr)),* $(,)?], drop [$($d:expr),*], $msg:expr) => {
        #[test]
        fn $name() {
            assert_eq!($crate::testing::one_error(&[$(($k, $v)),*], &[$($d),*]), $msg);
        }
    };
}
pub(crate) use rejects;

pub(crate) const T0: i64 = 1_700_000_000_000;

pub(crate) fn rules(text: &str) -> RuleSet {
    RuleSet::from_toml_str(text, "rules.toml").unwrap()
}

pub(crate) fn rec(t: i64, addr: &str, status: u32, path: &str) -> AccessRecord {
    AccessRecord {
        time_ms: t,
        request_id: format!("{addr}@{t}{path}"),
        client_address: addr.to_string(),
        authority: "example.com".to_string(),
        method: "GET".to_string(),
        path: path.to_string(),
        status,
        ..Default::default()
    }
}

pub(crate) fn with_principal(mut r: AccessRecord, name: &str) -> AccessRecord {
    r.principal = Some(Principal {
        name: name.to_string(),
        ..Default::default()
    });
    r
}

pub(crate) fn warden_blocked(mut r: AccessRecord) -> AccessRecord {
    r.decision = Some(AuthDecision {
        verdict: Verdict::Deny as i32,
        mechanism: Mechanism::WardenDenyList as i32,
        deny_kind: DenyKind::Blocked as i32,
        ..Default::default()
    });
    r
}

pub(crate) const BRUTE: &str = r#"
[[rules]]
name = "login-brute-force"
kind = "auth_failures"
threshold = 10
window = "1m"
action = "deny"
ban_ttl = "15m"
escalation = { factor = 2.0, max_ttl = "40m", period = "7d" }
"#;

/// Feeds `n` 401s from `addr`, one every `step_ms` from `start`; returns all decisions.
pub(crate) fn failures(
    engine: &mut Engine,
    addr: &str,
    start: i64,
    step_ms: i64,
    n: i64,
) -> Vec<RuleDecision> {
    (0..n)
        .flat_map(|i| engine.observe(&rec(start + i * step_ms, addr, 401, "/login")))
        .collect()
}
