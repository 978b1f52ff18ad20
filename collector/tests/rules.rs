//! Detection rules in the collector, in-process: rules loaded from `warden.toml` and a rules
//! file, evaluated on the Export stream, turned into pushed decisions, recorded, replayed and
//! alerted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Collector, Stream, identity};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use warden_collector::config::Config;
use warden_collector::server::serve;
use warden_e2e::eventually;
use warden_proto::pb::{AccessRecord, ExportRequest, deny_list_update::Update};

const BRUTE_FORCE: &str = r#"
[[rules]]
name = "login-brute-force"
kind = "auth_failures"
threshold = 5
window = "1m"
path_prefixes = ["/login"]
action = "deny"
ban_ttl = "10m"
"#;

fn config_in(dir: &Path, toml: &str) -> Config {
    let path = dir.join("warden.toml");
    let text = format!(
        "{toml}\n[grpc]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = {:?}\nsynchronous = \"normal\"\n[decisions]\nexpiry_interval = \"100ms\"\n",
        dir.join("data").display().to_string()
    );
    std::fs::write(&path, &text).unwrap();
    Config::parse(&text, &path).unwrap()
}

/// A collector whose warden.toml starts with `toml` (rules, alerts); `files` are written beside
/// it first.
async fn start(toml: &str, files: &[(&str, &str)]) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let config = config_in(dir.path(), toml);
    Collector::start(config, dir).await
}

async fn export(c: &Collector, records: Vec<AccessRecord>) {
    c.audit()
        .await
        .export(ExportRequest {
            filter: Some(identity(0)),
            records,
            dropped_total: 0,
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn metric(c: &Collector, name: &str) -> u64 {
    let text = c.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// Waits until the rules engine has evaluated `evaluated` records and skipped `repeated` as
/// seen before.
async fn counted(c: &Collector, evaluated: u64, repeated: u64) {
    eventually(
        &format!("{evaluated} records evaluated and {repeated} repeated"),
        || async {
            let now = (
                metric(c, "warden_rules_records_evaluated_total").await,
                metric(c, "warden_rules_records_repeated_total").await,
            );
            if now == (evaluated, repeated) {
                Ok(())
            } else {
                Err(format!("evaluated and repeated: {now:?}"))
            }
        },
    )
    .await;
}

/// Waits until `GET /api/v1/rule-decisions` lists `n` entries.
async fn rule_decisions(c: &Collector, n: usize) -> Vec<Value> {
    eventually(&format!("{n} rule decisions"), || async {
        let v = c.get_ok("/api/v1/rule-decisions").await;
        let list = v["rule_decisions"].as_array().unwrap().clone();
        if list.len() == n {
            Ok(list)
        } else {
            Err(format!("{v}"))
        }
    })
    .await
}

#[tokio::test]
async fn a_re_cut_retry_is_evaluated_once_even_across_a_restart() {
    // The filter re-cuts retries (urgent flushes, partial requeues): 1..=3 then 2..=4 must
    // count four failures, not six, or a brute-force rule bans a client early.
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), BRUTE_FORCE);
    let c = Collector::start(config.clone(), dir).await;
    export(&c, failed_logins("203.0.113.50", 1, 3)).await;
    export(&c, failed_logins("203.0.113.50", 2, 3)).await;
    counted(&c, 4, 2).await;
    let (_, decisions) = c.get("/api/v1/decisions").await;
    assert_eq!(
        decisions["total"], 0,
        "four failures are under the threshold of five"
    );

    // After a restart the engine starts from what the store holds: 3 and 4 are not new.
    let c = c.restarted(config).await;
    export(&c, failed_logins("203.0.113.50", 3, 3)).await;
    counted(&c, 1, 2).await;
}

/// `n` failed logins from `client`, one ms apart, starting at sequence `first_seq`.
fn failed_logins(client: &str, first_seq: u64, n: u64) -> Vec<AccessRecord> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..n)
        .map(|i| AccessRecord {
            sequence: first_seq + i,
            time_ms: now + i as i64,
            request_id: format!("req-{client}-{}", first_seq + i),
            client_address: client.into(),
            authority: "shop.example.com".into(),
            method: "POST".into(),
            path: "/login".into(),
            status: 401,
            ..Default::default()
        })
        .collect()
}

#[tokio::test]
async fn an_invalid_rules_file_stops_startup_listing_every_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[rules]]\nname = \"a\"\nkind = \"auth_failures\"\nthreshold = 5\nwindow = \"5x\"\naction = \"deny\"\n\n[[rules]]\nname = \"b\"\nkind = \"rate\"\nlimit = 10\nperiod = \"1s\"\naction = \"explode\"\n",
    )
    .unwrap();
    let config = config_in(dir.path(), "rules_file = \"rules.toml\"");
    let err = serve(config, None, async {}, |_| {}).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("rules.toml: rule \"a\": window"), "{text}");
    assert!(text.contains("rule \"b\": action"), "{text}");
}

#[tokio::test]
async fn a_rule_decision_becomes_a_pushed_decision_and_is_explained() {
    let mut c = start(BRUTE_FORCE, &[]).await;
    let mut stream = Stream::open(&c, 0).await;
    let Update::Snapshot(_) = stream.next().await else {
        panic!("snapshot first")
    };
    export(&c, failed_logins("203.0.113.7", 1, 4)).await;
    export(&c, failed_logins("203.0.113.7", 5, 3)).await;
    let Update::Delta(delta) = stream.next().await else {
        panic!("expected a delta")
    };
    assert_eq!(delta.upserts.len(), 1);
    let entry = &delta.upserts[0];
    assert_eq!(
        (entry.address.clone(), entry.prefix_len),
        (vec![203, 0, 113, 7], 32)
    );
    assert_eq!(entry.origin, "rule:login-brute-force");
    assert!(entry.expires_at_ms > 0);

    let history = rule_decisions(&c, 1).await;
    let d = &history[0];
    assert_eq!(d["outcome"], "banned");
    assert_eq!(d["threshold"], 5);
    assert_eq!(d["observed"], 5);
    assert_eq!(d["window_ms"], 60_000);
    assert_eq!(d["ttl_ms"], 600_000);
    assert_eq!(d["samples"].as_array().unwrap().len(), 5);

    let explained = c.get_ok("/api/v1/explain?ip=203.0.113.7").await;
    assert_eq!(explained["blocked"], true, "{explained}");
    assert_eq!(explained["decisions"][0]["actor"], "rule:login-brute-force");
    assert_eq!(explained["rule_decisions"][0]["rule"], "login-brute-force");
    let other = c.get_ok("/api/v1/explain?ip=203.0.113.8").await;
    assert_eq!(other["blocked"], false);
    c.stop().await;
}

#[tokio::test]
async fn a_dry_run_rule_is_recorded_but_not_pushed() {
    let rules = BRUTE_FORCE.replace("ban_ttl = \"10m\"", "ban_ttl = \"10m\"\ndry_run = true");
    let mut c = start(&rules, &[]).await;
    export(&c, failed_logins("203.0.113.9", 1, 6)).await;
    let history = rule_decisions(&c, 1).await;
    assert_eq!(history[0]["outcome"], "dry_run");
    assert_eq!(history[0]["dry_run"], true);
    let decisions = c.get_ok("/api/v1/decisions").await;
    assert_eq!(decisions["total"], 0, "{decisions}");
    let explained = c.get_ok("/api/v1/explain?ip=203.0.113.9").await;
    assert_eq!(explained["blocked"], false);
    assert_eq!(
        explained["would_block_dry_run"][0]["rule"],
        "login-brute-force"
    );
    c.stop().await;
}

#[tokio::test]
async fn an_allowlisted_target_is_not_banned_and_the_refusal_is_recorded() {
    let mut c = start(BRUTE_FORCE, &[]).await;
    let (status, _) = c
        .post(
            "/api/v1/allowlist",
            json!({"target": "203.0.113.0/24", "reason": "office"}),
        )
        .await;
    assert_eq!(status, 201);
    export(&c, failed_logins("203.0.113.20", 1, 5)).await;
    let history = rule_decisions(&c, 1).await;
    assert_eq!(history[0]["outcome"], "allowlisted");
    assert!(
        history[0]["detail"]
            .as_str()
            .unwrap()
            .contains("203.0.113.0/24"),
        "{}",
        history[0]
    );
    assert_eq!(c.get_ok("/api/v1/decisions").await["total"], 0);
    c.stop().await;
}

#[tokio::test]
async fn replay_decides_what_live_evaluation_decided() {
    let rules = format!(
        "{BRUTE_FORCE}\n[[rules]]\nname = \"probe\"\nkind = \"distinct_paths\"\nthreshold = 3\nwindow = \"1m\"\naction = \"alert\"\n"
    );
    let mut c = start("rules_file = \"rules.toml\"", &[("rules.toml", &rules)]).await;
    let mut records = failed_logins("198.51.100.1", 1, 7);
    records.extend(failed_logins("198.51.100.2", 8, 5));
    let mut probe = failed_logins("198.51.100.3", 13, 4);
    for (i, r) in probe.iter_mut().enumerate() {
        r.path = format!("/p{i}");
        r.status = 404;
    }
    records.extend(probe);
    records.sort_by_key(|r| r.time_ms);
    for (i, r) in records.iter_mut().enumerate() {
        r.sequence = i as u64 + 1;
    }
    export(&c, records).await;
    let live = rule_decisions(&c, 3).await;
    let (status, replayed) = c
        .post(
            "/api/v1/rules/replay",
            json!({"rules_toml": rules, "since": "1h"}),
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    let key = |d: &Value| {
        (
            d["rule"].clone(),
            d["target"].clone(),
            d["at_ms"].clone(),
            d["observed"].clone(),
            d["samples"].clone(),
            d["ttl_ms"].clone(),
        )
    };
    let mut live: Vec<_> = live.iter().map(key).collect();
    live.reverse(); // newest first → time order
    let replayed: Vec<_> = replayed["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(key)
        .collect();
    assert_eq!(live, replayed);
    // Replay changed nothing.
    assert_eq!(
        c.get_ok("/api/v1/rule-decisions").await["rule_decisions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    c.stop().await;
}

#[tokio::test]
async fn an_invalid_reload_keeps_the_rules_in_force_and_reports_why() {
    let mut c = start(
        "rules_file = \"rules.toml\"",
        &[("rules.toml", BRUTE_FORCE)],
    )
    .await;
    let status = c.get_ok("/api/v1/rules").await;
    assert_eq!(status["rules"][0]["name"], "login-brute-force");
    assert_eq!(status["last_error"], Value::Null);
    // Four failures counted before the reload survive it only if the rule is unchanged; break
    // the file, then check the old rule still bans.
    export(&c, failed_logins("192.0.2.1", 1, 3)).await;
    std::fs::write(
        c.dir.path().join("rules.toml"),
        BRUTE_FORCE.replace("threshold = 5", "threshold = -1"),
    )
    .unwrap();
    let status = eventually("the refused reload to be reported", || async {
        let s = c.get_ok("/api/v1/rules").await;
        if s["last_error"].is_null() {
            Err(format!("{s}"))
        } else {
            Ok(s)
        }
    })
    .await;
    assert!(
        status["last_error"].as_str().unwrap().contains("threshold"),
        "{status}"
    );
    assert_eq!(status["rules"][0]["name"], "login-brute-force");
    assert_eq!(metric(&c, "warden_rules_reload_failures_total").await, 1);
    export(&c, failed_logins("192.0.2.1", 4, 2)).await;
    let history = rule_decisions(&c, 1).await;
    assert_eq!(history[0]["outcome"], "banned");
    assert_eq!(
        history[0]["observed"], 5,
        "counts survived the refused reload"
    );

    // A valid edit is picked up and clears the error.
    std::fs::write(
        c.dir.path().join("rules.toml"),
        BRUTE_FORCE.replace("threshold = 5", "threshold = 7"),
    )
    .unwrap();
    eventually("the edited threshold in force", || async {
        let s = c.get_ok("/api/v1/rules").await;
        let edited = s["rules"][0]["summary"]
            .as_str()
            .is_some_and(|summary| summary.contains(">= 7"));
        if s["last_error"].is_null() && edited {
            Ok(())
        } else {
            Err(format!("{s}"))
        }
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn ip_list_rules_are_reconciled_on_reload() {
    let list =
        "[[rules]]\nname = \"bad\"\nkind = \"ip_list\"\nfiles = [\"bad.txt\"]\naction = \"deny\"\n";
    let mut c = start(
        "rules_file = \"rules.toml\"",
        &[
            ("rules.toml", list),
            ("bad.txt", "192.0.2.0/24\n198.51.100.7 ; known bot\n"),
        ],
    )
    .await;
    let d = c.get_ok("/api/v1/decisions").await;
    assert_eq!(d["total"], 2, "{d}");
    let origin = d["decisions"][0]["origin"].as_str().unwrap();
    assert!(
        origin.starts_with("list:") && origin.ends_with("bad.txt"),
        "{origin}"
    );
    std::fs::write(
        c.dir.path().join("bad.txt"),
        "192.0.2.0/24\n203.0.113.0/24\n",
    )
    .unwrap();
    eventually("the edited list's decisions", || async {
        let d = c.get_ok("/api/v1/decisions").await;
        let targets: Vec<&str> = d["decisions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["target"].as_str())
            .collect();
        if targets == ["192.0.2.0/24", "203.0.113.0/24"] {
            Ok(())
        } else {
            Err(format!("{d}"))
        }
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn alerts_reach_a_webhook_after_a_failed_attempt() {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let app = {
        let (seen, attempts) = (Arc::clone(&seen), Arc::clone(&attempts));
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let (seen, attempts) = (Arc::clone(&seen), Arc::clone(&attempts));
                async move {
                    if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    seen.lock().unwrap().push(body);
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let alerts = format!(
        "{BRUTE_FORCE}\n[alerts]\nwebhooks = [\"http://{addr}/hook\"]\non = [\"banned\"]\ninitial_backoff = \"50ms\"\nallowed_destinations = [\"127.0.0.1\"]\n"
    );
    let mut c = start(&alerts, &[]).await;
    export(&c, failed_logins("203.0.113.30", 1, 5)).await;
    eventually("an alert at the webhook", || async {
        if seen.lock().unwrap().is_empty() {
            Err(format!(
                "{} attempts",
                attempts.load(std::sync::atomic::Ordering::SeqCst)
            ))
        } else {
            Ok(())
        }
    })
    .await;
    let body = seen.lock().unwrap()[0].clone();
    assert_eq!(body["rule"], "login-brute-force");
    assert_eq!(body["target"], "203.0.113.30/32");
    assert_eq!(body["outcome"], "banned");
    assert!(body["ban_expires_at"].is_string(), "{body}");
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(metric(&c, "warden_alerts_sent_total").await, 1);
    assert_eq!(metric(&c, "warden_alerts_failed_total").await, 0);
    c.stop().await;
}
