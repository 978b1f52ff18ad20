//! The wire types answer exactly the JSON the collector's own types serialized to before the
//! model existed: same names, same nulls, same enum spellings.

use super::*;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn same_json(wire: &impl Serialize, inner: &impl Serialize) {
    let (wire, inner) = (
        serde_json::to_value(wire).unwrap(),
        serde_json::to_value(inner).unwrap(),
    );
    assert_eq!(wire, inner);
}

#[test]
fn a_record_reads_as_the_stored_record() {
    let stored = crate::store::query::StoredRecord {
        sequence: 7,
        time: "2025-01-02T03:04:05.000Z".into(),
        client_address: "203.0.113.7".into(),
        principal: Some("alice".into()),
        claimed_user: None,
        principal_claims: BTreeMap::from([("team".into(), "ops".into())]),
        decision: Some("deny".into()),
        ..Default::default()
    };
    same_json(&Record::from(stored.clone()), &stored);
}

#[test]
fn a_summary_reads_as_the_stored_summary() {
    let stored = crate::store::summaries::StoredSummary {
        minute: "2025-01-02T03:04:00.000Z".into(),
        minute_ms: 1,
        client_address: "203.0.113.7".into(),
        authority: "a.example".into(),
        status_class: "4xx".into(),
        verdict: "deny".into(),
        mechanism: "rbac".into(),
        requests: 3,
        request_bytes: 4,
        response_bytes: 5,
    };
    same_json(&Summary::from(stored.clone()), &stored);
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

#[test]
fn filters_and_accounting_read_as_before() {
    let info = crate::decisions::push::FilterInfo {
        stream_id: 1,
        node_id: "n".into(),
        worker: 2,
        instance_id: "i".into(),
        filter_version: "0.1.0".into(),
        credential: "filter".into(),
        peer: "127.0.0.1:5".into(),
        connected_since: "t".into(),
        version_sent: 4,
        version_acked: 3,
        last_ack: None,
        snapshots_sent: 1,
    };
    same_json(&ConnectedFilter::from(info.clone()), &info);
    let ledger = crate::ingest::ledger::Ledger::default();
    let f = warden_proto::pb::FilterIdentity {
        node_id: "n".into(),
        worker: 1,
        instance_id: "i".into(),
        filter_version: String::new(),
    };
    ledger.record(
        &f,
        crate::ingest::ledger::BatchCounts {
            received: 3,
            stored: 2,
            refused: 1,
            highest_sequence: 5,
            ..Default::default()
        },
        1,
    );
    let row = ledger.rows().remove(0);
    same_json(&FilterAccounting::from(row.clone()), &row);
}

#[test]
fn audit_entries_read_as_before() {
    let entry = crate::decisions::AuditEntry {
        id: 1,
        time: "t".into(),
        time_ms: 2,
        actor: "ops".into(),
        operation: "ban".into(),
        target: "203.0.113.7/32".into(),
        action: Some("deny".into()),
        expires_at: None,
        reason: "r".into(),
        origin: "manual".into(),
        decision_id: None,
        version: 3,
        count: 1,
    };
    same_json(&AuditEntry::from(entry.clone()), &entry);
    let call = crate::security::audit_log::ApiAuditEntry {
        id: 1,
        time_ms: 2,
        time: "t".into(),
        actor: String::new(),
        actor_kind: "none".into(),
        role: None,
        operation: "decisions.ban".into(),
        method: "POST".into(),
        path: "/api/v1/decisions".into(),
        params: json!({"target": "203.0.113.7"}),
        source: "127.0.0.1".into(),
        status: 401,
        outcome: "expired".into(),
    };
    same_json(&ApiAuditEntry::from(call.clone()), &call);
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
