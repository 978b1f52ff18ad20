//! Alert delivery: rule decisions announced to generic JSON webhooks and to Alertmanager.
//!
//! Delivery runs in its own task fed by a bounded queue, so a slow or dead receiver never slows
//! ingestion or rule evaluation: when the queue is full the alert is dropped and counted
//! (`warden_alerts_dropped_total`). Each destination is retried with exponential backoff up to
//! `max_attempts`; a delivery that still fails is counted in `warden_alerts_failed_total`.
//!
//! Destinations are checked by [`crate::security::outbound`]: no redirects, only permitted
//! addresses, and logs name a destination by `scheme://host:port` alone.

use crate::config::AlertsConfig;
use crate::metrics::Metrics;
use crate::security::outbound::{self, Destinations};
use crate::time::rfc3339;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use warden_rules::RuleDecision;

/// Deliveries in flight at once (each may be waiting out a backoff).
const MAX_IN_FLIGHT: usize = 16;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One alert: a rule decision, what the collector did with it and, when a ban was made, its
/// expiry.
#[derive(Debug, Clone)]
pub struct Alert {
    /// The engine's decision.
    pub decision: RuleDecision,
    /// `banned`, `alert`, `dry_run`, `allowlisted`, `existing` or `error`.
    pub outcome: &'static str,
    /// Expiry of the ban made (wall clock), ms since the epoch.
    pub ban_expires_at_ms: Option<i64>,
    /// When the collector acted, ms since the epoch.
    pub at_ms: i64,
}

/// One finding of a `change` rule on a Kubernetes policy change, and the change it is about.
#[derive(Debug, Clone)]
pub struct ChangeAlert {
    /// The rule's finding (its reason explains it).
    pub finding: crate::policy_changes::store::Finding,
    /// The change's audit id, stored time and who did what to which object.
    pub change: Value,
    /// `alert`, or `dry_run` for a rule in dry-run.
    pub outcome: &'static str,
    /// When the collector evaluated it, ms since the epoch.
    pub at_ms: i64,
}

/// What the delivery task sends: a rule decision or a change rule's finding.
#[derive(Debug, Clone)]
enum Notice {
    Decision(Alert),
    Change(ChangeAlert),
}

impl Notice {
    fn outcome(&self) -> &'static str {
        match self {
            Notice::Decision(a) => a.outcome,
            Notice::Change(a) => a.outcome,
        }
    }

    fn webhook_body(&self) -> Value {
        match self {
            Notice::Decision(a) => webhook_body(a),
            Notice::Change(a) => change_webhook_body(a),
        }
    }

    fn alertmanager_body(&self) -> Value {
        match self {
            Notice::Decision(a) => alertmanager_body(a),
            Notice::Change(a) => change_alertmanager_body(a),
        }
    }
}

/// Handle that queues alerts; cheap to clone. Without destinations it does nothing.
#[derive(Clone)]
pub struct Alerter {
    tx: Option<mpsc::Sender<Notice>>,
    on: Arc<[String]>,
    metrics: Arc<Metrics>,
}

impl Alerter {
    /// An alerter that never sends (no destinations configured).
    pub fn disabled(metrics: Arc<Metrics>) -> Alerter {
        Alerter {
            tx: None,
            on: Arc::from(Vec::new()),
            metrics,
        }
    }

    /// Starts the delivery task on the current runtime.
    pub fn start(config: &AlertsConfig, metrics: Arc<Metrics>) -> Alerter {
        if config.webhooks.is_empty() && config.alertmanager_url.is_none() {
            return Alerter::disabled(metrics);
        }
        let (tx, rx) = mpsc::channel(config.queue);
        tokio::spawn(deliver_loop(config.clone(), rx, Arc::clone(&metrics)));
        Alerter {
            tx: Some(tx),
            on: Arc::from(config.on.clone()),
            metrics,
        }
    }

    /// Queues `alert` if its outcome is one that notifies; never waits.
    pub fn notify(&self, alert: Alert) {
        self.queue(Notice::Decision(alert));
    }

    /// Queues a change rule's finding if its outcome is one that notifies; never waits.
    pub fn notify_change(&self, alert: ChangeAlert) {
        self.queue(Notice::Change(alert));
    }

    fn queue(&self, notice: Notice) {
        let Some(tx) = &self.tx else { return };
        if !self.on.iter().any(|o| o == notice.outcome()) {
            return;
        }
        if tx.try_send(notice).is_err() {
            self.metrics.alerts_dropped.fetch_add(1, Relaxed);
        }
    }
}

/// The generic webhook body: the rule decision plus `outcome` and the ban's expiry.
pub fn webhook_body(alert: &Alert) -> Value {
    let mut v = serde_json::to_value(&alert.decision).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("outcome".into(), json!(alert.outcome));
        obj.insert(
            "ban_expires_at".into(),
            json!(alert.ban_expires_at_ms.map(rfc3339)),
        );
        obj.insert("time".into(), json!(rfc3339(alert.at_ms)));
    }
    v
}

/// The Alertmanager v2 body: an array with one alert. `endsAt` is the ban's expiry; without one
/// (an `alert` action or a permanent ban) it is left out and Alertmanager's `resolve_timeout`
/// applies.
pub fn alertmanager_body(alert: &Alert) -> Value {
    let d = &alert.decision;
    let severity = match (alert.outcome, d.action) {
        ("banned", warden_rules::Action::Deny) => "critical",
        ("banned", _) => "warning",
        _ => "info",
    };
    let mut a = json!({
        "labels": {
            "alertname": "WardenDecision",
            "rule": d.rule,
            "target": d.target.to_string(),
            "action": d.action.as_str(),
            "outcome": alert.outcome,
            "severity": severity,
        },
        "annotations": {
            "summary": format!("{} {} {} ({})", d.rule, d.action.as_str(), d.target, alert.outcome),
            "reason": d.reason,
        },
        "startsAt": rfc3339(alert.at_ms),
    });
    if let Some(end) = alert.ban_expires_at_ms {
        a["endsAt"] = json!(rfc3339(end));
    }
    json!([a])
}

/// The generic webhook body of a change rule's finding: `"type": "change"`, the rule, the
/// condition that held, its reason, and the change.
pub fn change_webhook_body(alert: &ChangeAlert) -> Value {
    let f = &alert.finding;
    json!({
        "type": "change",
        "rule": f.rule,
        "condition": f.condition,
        "dry_run": f.dry_run,
        "reason": f.reason,
        "outcome": alert.outcome,
        "time": rfc3339(alert.at_ms),
        "change": alert.change,
    })
}

/// The Alertmanager v2 body of a change rule's finding. No `endsAt`: a change is an event, so
/// Alertmanager's `resolve_timeout` ends it.
pub fn change_alertmanager_body(alert: &ChangeAlert) -> Value {
    let f = &alert.finding;
    let c = &alert.change;
    let label = |key: &str| c[key].as_str().unwrap_or_default().to_string();
    json!([{
        "labels": {
            "alertname": "WardenPolicyChange",
            "rule": f.rule,
            "condition": f.condition,
            "resource": label("resource"),
            "namespace": label("namespace"),
            "name": label("name"),
            "user": label("user"),
            "outcome": alert.outcome,
            "severity": if alert.outcome == "alert" { "warning" } else { "info" },
        },
        "annotations": {
            "summary": format!("{} {}: {} {} {}/{}", f.rule, f.condition, label("user"), label("verb"), label("resource"), label("name")),
            "reason": f.reason,
        },
        "startsAt": rfc3339(alert.at_ms),
    }])
}

async fn deliver_loop(config: AlertsConfig, mut rx: mpsc::Receiver<Notice>, metrics: Arc<Metrics>) {
    let destinations = match Destinations::parse(&config.allowed_destinations) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            // The configuration was validated at load; this cannot happen, and sending anyway
            // would ignore the operator's list.
            tracing::error!(error = %e, "alerts.allowed_destinations is invalid; alerts are disabled");
            return;
        }
    };
    let client = match outbound::client(Arc::clone(&destinations), config.timeout.0) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the alert HTTP client; alerts are disabled");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let alertmanager = config
        .alertmanager_url
        .as_deref()
        .map(|u| format!("{}/api/v2/alerts", u.trim_end_matches('/')));
    while let Some(alert) = rx.recv().await {
        let mut targets: Vec<(String, Value)> = config
            .webhooks
            .iter()
            .map(|u| (u.clone(), alert.webhook_body()))
            .collect();
        if let Some(url) = &alertmanager {
            targets.push((url.clone(), alert.alertmanager_body()));
        }
        for (url, body) in targets {
            // Waiting for a permit is the queue's backpressure: the bounded channel fills and
            // later alerts are dropped, ingestion is never touched.
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            if let Err(reason) = outbound::check_literal(&destinations, &url) {
                metrics.alerts_failed.fetch_add(1, Relaxed);
                tracing::warn!(destination = %outbound::display(&url), %reason, "alert destination refused");
                continue;
            }
            let (client, metrics) = (client.clone(), Arc::clone(&metrics));
            let (attempts, backoff) = (config.max_attempts, config.initial_backoff.0);
            tokio::spawn(async move {
                deliver(&client, &url, &body, attempts, backoff, &metrics).await;
                drop(permit);
            });
        }
    }
}

/// The innermost cause of an error (the message a person needs), without any URL.
fn root(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn deliver(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    attempts: u32,
    mut backoff: Duration,
    metrics: &Metrics,
) {
    let destination = outbound::display(url);
    for attempt in 1..=attempts {
        let result = client.post(url).json(body).send().await;
        let error = match result {
            Ok(r) if r.status().is_success() => {
                metrics.alerts_sent.fetch_add(1, Relaxed);
                return;
            }
            // A redirect is not followed (it could point anywhere, this machine included).
            Ok(r) => format!("HTTP {}", r.status()),
            // The error's own text would carry the whole URL: strip it.
            Err(e) => root(&e.without_url()),
        };
        if attempt == attempts {
            metrics.alerts_failed.fetch_add(1, Relaxed);
            tracing::warn!(%destination, attempts, %error, "alert delivery failed; giving up");
            return;
        }
        tracing::debug!(%destination, attempt, %error, "alert delivery failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_changes::store::Finding;

    #[test]
    fn a_change_finding_reaches_alertmanager_labelled_by_rule_condition_and_object() {
        let alert = ChangeAlert {
            finding: Finding {
                rule: "plaintext".into(),
                condition: "listener_without_tls".into(),
                dry_run: false,
                reason: "rule plaintext: alice created gateways edge/public, without TLS".into(),
            },
            change: json!({"user": "alice", "verb": "create", "resource": "gateways",
                "namespace": "edge", "name": "public"}),
            outcome: "alert",
            at_ms: 1_700_000_000_000,
        };
        let am = change_alertmanager_body(&alert);
        let labels = &am[0]["labels"];
        assert_eq!(labels["alertname"], "WardenPolicyChange");
        assert_eq!(labels["condition"], "listener_without_tls");
        assert_eq!(labels["resource"], "gateways");
        assert_eq!(labels["name"], "public");
        assert_eq!(labels["severity"], "warning");
        assert!(am[0].get("endsAt").is_none(), "a change is an event");
        assert_eq!(am[0]["annotations"]["reason"], alert.finding.reason);
        let hook = change_webhook_body(&alert);
        assert_eq!(hook["type"], "change");
        assert_eq!(hook["change"]["namespace"], "edge");
        assert_eq!(hook["time"], "2023-11-14T22:13:20.000Z");
    }
}
