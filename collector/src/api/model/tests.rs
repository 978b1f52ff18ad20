//! The wire types answer exactly the JSON the collector's own types serialized to before the
//! model existed: same names, same nulls, same enum spellings.

use super::*;
use serde::Serialize;
use serde_json::{Value, json};

fn same_json(wire: &impl Serialize, inner: &impl Serialize) {
    let (wire, inner) = (
        serde_json::to_value(wire).unwrap(),
        serde_json::to_value(inner).unwrap(),
    );
    assert_eq!(wire, inner);
}

#[test]
fn a_decision_reads_as_its_former_view() {
    let mut d = crate::decisions::Decision {
        id: 3,
        target: "203.0.113.0/24".parse().unwrap(),
        action: crate::decisions::DecisionAction::Throttle,
        expires_at_ms: Some(1_700_000_000_000),
        reason: "scanner".into(),
        origin: "manual".into(),
        actor: "ops".into(),
        created_ms: 1_690_000_000_000,
    };
    // The shape the API answered before the typed model (and the e2e tests read).
    let former = |expires_at: serde_json::Value, expires_at_ms: serde_json::Value| {
        json!({
            "id": 3,
            "target": "203.0.113.0/24",
            "action": "throttle",
            "expires_at": expires_at,
            "expires_at_ms": expires_at_ms,
            "reason": "scanner",
            "origin": "manual",
            "actor": "ops",
            "created_at": crate::time::rfc3339(1_690_000_000_000),
            "created_ms": 1_690_000_000_000_i64,
        })
    };
    assert_eq!(
        serde_json::to_value(Decision::from(&d)).unwrap(),
        former(
            json!(crate::time::rfc3339(1_700_000_000_000)),
            json!(1_700_000_000_000_i64)
        )
    );
    d.expires_at_ms = None;
    assert_eq!(
        serde_json::to_value(Decision::from(&d)).unwrap(),
        former(json!(null), json!(null))
    );
    let change = DecisionChange {
        decision: Decision::from(&d),
        version: 9,
        propagated: true,
    };
    let mut expected = former(json!(null), json!(null));
    expected["version"] = json!(9);
    expected["propagated"] = json!(true);
    assert_eq!(serde_json::to_value(&change).unwrap(), expected);
    assert_eq!(
        serde_json::from_value::<DecisionChange>(expected).unwrap(),
        change
    );
}

fn rule_decision() -> warden_rules::RuleDecision {
    warden_rules::RuleDecision {
        rule: "login-brute-force".into(),
        kind: warden_rules::KindName::AuthFailures,
        origin: "rule:login-brute-force".into(),
        action: warden_rules::Action::Deny,
        key_kind: warden_rules::KeyKind::AddressPathPrefix,
        key: "203.0.113.7 /login".into(),
        target: "203.0.113.7/32".parse().unwrap(),
        threshold: 10,
        window_ms: 60_000,
        observed: 10,
        samples: vec!["r1".into()],
        at_ms: 5,
        ttl_ms: Some(900_000),
        expires_at_ms: Some(900_005),
        suppressed_until_ms: None,
        repeat: 1,
        dry_run: false,
        reason: "why".into(),
    }
}

#[test]
fn rule_decisions_read_as_the_engine_wrote_them() {
    let d = rule_decision();
    same_json(&RuleDecision::from(d.clone()), &d);
    // A history row: the decision as stored, plus the row's columns (nulls included).
    let mut row = serde_json::to_value(&d).unwrap();
    for (k, v) in [
        ("id", json!(4)),
        ("time", json!("t")),
        ("time_ms", json!(6)),
        ("outcome", json!("banned")),
        ("decision_id", Value::Null),
        ("detail", Value::Null),
    ] {
        row[k] = v;
    }
    let entry = RuleDecisionEntry::from_stored(row.clone()).unwrap();
    assert_eq!(entry.outcome, RuleOutcome::Banned);
    assert_eq!(serde_json::to_value(&entry).unwrap(), row);
}

#[test]
fn rules_status_reads_as_before() {
    let status = crate::detection::RulesStatus {
        source: "rules.toml".into(),
        loaded_at: "t".into(),
        rules: vec![crate::detection::RuleSummary {
            name: "r".into(),
            kind: "rate",
            action: "throttle",
            dry_run: true,
            summary: "s".into(),
            description: None,
        }],
        last_error: None,
        last_error_at: None,
    };
    same_json(&RulesStatus::from(status.clone()), &status);
}

#[test]
fn absent_request_fields_are_left_out_as_the_cli_sent_them() {
    let ban = BanBody {
        target: "203.0.113.7".into(),
        action: Some("deny".into()),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&ban).unwrap(),
        json!({"target": "203.0.113.7", "action": "deny"})
    );
}
