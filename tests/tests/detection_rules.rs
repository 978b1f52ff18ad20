//! End to end: detection rules in the collector watch the records the filter ships and block
//! clients in Envoy — brute force, scanners, rate limits — while dry-run rules only record, and
//! repeat offenders are banned for longer.

use serde_json::Value;
use std::time::Instant;
use warden_e2e::{Client, Collector, Envoy, Stack, eventually};

/// `Authorization` for `demo:wrong`: the upstream's /login answers 401 to it.
const WRONG_CREDENTIALS: &str = "Basic ZGVtbzp3cm9uZw==";

const RULES: &str = r#"
[[rules]]
name = "login-brute-force"
kind = "auth_failures"
threshold = 10
window = "1m"
path_prefixes = ["/login"]
action = "deny"
ban_ttl = "1m"

[[rules]]
name = "scanner-404"
kind = "status_flood"
status_class = "4xx"
threshold = 20
window = "1m"
path_prefixes = ["/status/404"]
action = "deny"
ban_ttl = "1m"

[[rules]]
name = "api-rate"
kind = "rate"
limit = 20
period = "10s"
path_prefixes = ["/anything/rated"]
action = "throttle"
ban_ttl = "1m"

[[rules]]
name = "errors-trial"
kind = "status_flood"
status_class = "5xx"
threshold = 5
window = "1m"
action = "deny"
ban_ttl = "1m"
dry_run = true

[[rules]]
name = "escalating"
kind = "auth_failures"
threshold = 3
window = "1m"
path_prefixes = ["/status/401"]
action = "deny"
ban_ttl = "2s"
escalation = { factor = 2.0, max_ttl = "1m", period = "1h" }
"#;

/// Upstream + a collector running [`RULES`] + Envoy.
async fn start() -> Stack {
    Stack::start_with_collector_config(RULES, |_| {}).await
}

/// Sends requests from `client` to `path` one after another until one gets `status`; returns
/// the statuses of the requests before it.
async fn until_status(
    envoy: &Envoy,
    client: &Client,
    path: &str,
    headers: &[(&str, &str)],
    status: u16,
    max: usize,
) -> Vec<u16> {
    let url = envoy.url(path);
    let mut before = Vec::new();
    while before.len() < max {
        let r = client.get_with(&url, headers).await;
        if r.status == status {
            return before;
        }
        before.push(r.status);
    }
    panic!(
        "{} never got {status} from {path} in {max} requests: {before:?}",
        client.source
    );
}

/// Waits until the rule-decision history of `ip` satisfies `done`, and returns it. The history
/// row is written right after the ban is pushed, so it may trail the block a client sees.
async fn wait_rule_decisions(
    collector: &Collector,
    ip: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    eventually(&format!("the rule decisions of {ip}"), || async {
        let all = rule_decisions(collector, ip).await;
        if done(&all) {
            Ok(all)
        } else {
            Err(format!("{all:#?}"))
        }
    })
    .await
}

async fn rule_decisions(collector: &Collector, ip: &str) -> Vec<Value> {
    let v = collector
        .get_json(&format!(
            "{}/api/v1/rule-decisions?ip={ip}",
            collector.base_url()
        ))
        .await
        .expect("rule decisions");
    v["rule_decisions"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_brute_force_is_blocked_once_past_the_threshold() {
    let stack = start().await;
    let attacker = Client::from("127.0.0.51");
    let auth = [("authorization", WRONG_CREDENTIALS)];
    let started = Instant::now();
    let through = until_status(&stack.envoy, &attacker, "/login", &auth, 403, 500).await;
    let elapsed = started.elapsed();
    assert!(through.iter().all(|s| *s == 401), "{through:?}");
    let overshoot = through.len().saturating_sub(10);
    println!(
        "brute force: {} failed logins got through before the block (threshold 10, overshoot {overshoot}) in {elapsed:?}",
        through.len()
    );
    assert!(
        through.len() >= 10,
        "blocked before the threshold: {through:?}"
    );
    // The loop is: filter -> collector -> engine -> ban -> push -> filter. The filter ships
    // auth failures at once (not at its flush interval), so with back-to-back requests the
    // overshoot is the loop's latency counted in requests (3-11 measured with debug builds on 2
    // cores; 140-170 before auth failures were shipped at once). That is a speed figure, printed
    // above and measured by `scripts/bench-denylist.sh`, not asserted here: a loaded CI machine
    // once let 242 through in 345 ms. What is asserted is that the block comes (within the 500
    // requests `until_status` allows) and never before the threshold.
    // Others are unaffected.
    let bystander = Client::from("127.0.0.52");
    assert_eq!(
        bystander
            .get_with(&stack.envoy.url("/login"), &auth)
            .await
            .status,
        401
    );
    assert_eq!(
        bystander.get(&stack.envoy.url("/anything")).await.status,
        200
    );
    let explained = stack.collector.cli().ok(&["explain", "127.0.0.51"]);
    assert!(explained.contains("is BLOCKED"), "{explained}");
    assert!(explained.contains("login-brute-force"), "{explained}");
    assert!(explained.contains("threshold 10"), "{explained}");
    // The blocked attempts name nobody: the user name they carry was never verified, and naming
    // it would pin the attack on its victim.
    let url = format!(
        "{}/api/v1/records?ip=127.0.0.51&status=403",
        stack.collector.base_url()
    );
    let blocked = eventually("the records of the blocked attempts", || async {
        let v = stack.collector.get_json(&url).await?;
        match v["records"].as_array() {
            Some(records) if !records.is_empty() => Ok(records.clone()),
            _ => Err(format!("no 403 record yet: {v}")),
        }
    })
    .await;
    for r in &blocked {
        assert_eq!(r["mechanism"], "warden_deny_list", "{r}");
        assert!(r["principal"].is_null(), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_scanner_is_blocked() {
    let stack = start().await;
    let scanner = Client::from("127.0.0.53");
    let through = until_status(&stack.envoy, &scanner, "/status/404", &[], 403, 500).await;
    println!(
        "scanner: {} 404s before the block (threshold 20)",
        through.len()
    );
    assert!(
        through.len() >= 20 && through.iter().all(|s| *s == 404),
        "{through:?}"
    );
    let d = wait_rule_decisions(&stack.collector, "127.0.0.53", |d| {
        d.iter().any(|d| d["rule"] == "scanner-404")
    })
    .await;
    let scanner = d
        .iter()
        .find(|d| d["rule"] == "scanner-404")
        .expect("found");
    assert_eq!(scanner["outcome"], "banned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_rule_throttles_with_429() {
    let stack = start().await;
    let client = Client::from("127.0.0.54");
    let through = until_status(&stack.envoy, &client, "/anything/rated", &[], 429, 1000).await;
    println!(
        "rate: {} requests before 429 (limit 20 per 10s)",
        through.len()
    );
    assert!(through.len() > 20, "{}", through.len());
    let d = wait_rule_decisions(&stack.collector, "127.0.0.54", |d| !d.is_empty()).await;
    assert_eq!(d[0]["rule"], "api-rate");
    assert_eq!(d[0]["action"], "throttle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_rule_records_but_does_not_block() {
    let stack = start().await;
    let client = Client::from("127.0.0.55");
    for _ in 0..15 {
        assert_eq!(
            client.get(&stack.envoy.url("/status/500")).await.status,
            500
        );
    }
    let explained = eventually("the dry-run decision to be explained", || async {
        let out = stack.collector.cli().ok(&["explain", "127.0.0.55"]);
        if out.contains("dry-run") && out.contains("errors-trial") {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    assert!(explained.contains("is not blocked"), "{explained}");
    assert_eq!(
        client.get(&stack.envoy.url("/status/500")).await.status,
        500,
        "still not blocked"
    );
    let d = rule_decisions(&stack.collector, "127.0.0.55").await;
    assert_eq!(d[0]["outcome"], "dry_run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_offender_is_banned_for_longer() {
    let stack = start().await;
    let client = Client::from("127.0.0.56");
    until_status(&stack.envoy, &client, "/status/401", &[], 403, 500).await;
    // The 2 s ban expires; the next offence is the second within the escalation period.
    client
        .wait_for_status(&stack.envoy.url("/status/401"), 401)
        .await;
    until_status(&stack.envoy, &client, "/status/401", &[], 403, 500).await;
    let banned = |d: &Value| d["outcome"] == "banned";
    let bans: Vec<Value> = wait_rule_decisions(&stack.collector, "127.0.0.56", |d| {
        d.iter().filter(|d| banned(d)).count() >= 2
    })
    .await
    .into_iter()
    .filter(banned)
    .collect();
    assert_eq!(bans.len(), 2, "{bans:?}");
    // Newest first.
    assert_eq!(bans[1]["ttl_ms"], 2000);
    assert_eq!(bans[0]["ttl_ms"], 4000);
    assert_eq!(bans[0]["repeat"], 2);
    let explained = stack
        .collector
        .get_json(&format!(
            "{}/api/v1/explain?ip=127.0.0.56",
            stack.collector.base_url()
        ))
        .await
        .expect("explain");
    let decision = &explained["decisions"][0];
    let lifetime = decision["expires_at_ms"].as_i64().expect("expiry")
        - decision["created_ms"].as_i64().expect("created");
    assert_eq!(lifetime, 4000, "{decision}");
}
