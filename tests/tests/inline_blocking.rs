//! End to end: the collector pushes deny decisions to every filter, and Envoy blocks listed
//! clients before the request reaches the upstream.

use serde_json::Value;
use warden_e2e::{Client, Collector, Envoy, EnvoyOptions, Stack, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_address_gets_403_while_others_pass_and_the_block_is_recorded() {
    let stack = Stack::start().await;
    Client::from("127.0.0.5")
        .wait_for_status(&stack.envoy.url("/anything"), 200)
        .await;

    stack
        .collector
        .cli()
        .ok(&["ban", "127.0.0.5", "--reason", "abuse report 42"]);
    Client::from("127.0.0.5")
        .wait_for_status(&stack.envoy.url("/anything/blocked"), 403)
        .await;
    assert_eq!(
        Client::from("127.0.0.6")
            .get(&stack.envoy.url("/anything"))
            .await
            .status,
        200
    );

    let records = stack
        .wait_for_records(
            "ip=127.0.0.5&path_prefix=%2Fanything%2Fblocked&status=403",
            1,
        )
        .await;
    let blocked = &records[0];
    assert_eq!(blocked["decision"], "deny");
    assert_eq!(blocked["mechanism"], "warden_deny_list");
    assert_eq!(blocked["deny_kind"], "blocked");
    assert!(
        blocked["reason"]
            .as_str()
            .unwrap()
            .contains("abuse report 42"),
        "{blocked}"
    );
    assert_eq!(blocked["policy"], "manual");
    // The upstream never saw it.
    assert_eq!(blocked["upstream_host"].as_str().unwrap_or(""), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cidr_ban_blocks_the_range_and_unban_lifts_it() {
    let stack = Stack::start().await;
    stack
        .collector
        .cli()
        .ok(&["ban", "127.0.1.0/24", "--reason", "bad range"]);
    Client::from("127.0.1.9")
        .wait_for_status(&stack.envoy.url("/anything"), 403)
        .await;
    assert_eq!(
        Client::from("127.0.2.9")
            .get(&stack.envoy.url("/anything"))
            .await
            .status,
        200
    );

    stack
        .collector
        .cli()
        .ok(&["unban", "127.0.1.0/24", "--reason", "false positive"]);
    Client::from("127.0.1.9")
        .wait_for_status(&stack.envoy.url("/anything"), 200)
        .await;

    let audit = stack.collector.cli().ok(&["audit", "--json"]);
    assert!(
        audit.contains("127.0.1.0/24") && audit.contains("false positive"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_with_a_ttl_expires() {
    let stack = Stack::start().await;
    stack
        .collector
        .cli()
        .ok(&["ban", "127.0.0.11", "--ttl", "3s"]);
    Client::from("127.0.0.11")
        .wait_for_status(&stack.envoy.url("/anything"), 403)
        .await;
    Client::from("127.0.0.11")
        .wait_for_status(&stack.envoy.url("/anything"), 200)
        .await;
    let decisions = stack.collector.cli().ok(&["decisions", "--json"]);
    assert!(
        !decisions.contains("127.0.0.11"),
        "expired decision still listed: {decisions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_overrides_bans() {
    let stack = Stack::start().await;
    stack
        .collector
        .cli()
        .ok(&["allow", "add", "127.0.3.7", "--reason", "health checker"]);
    stack.collector.cli().ok(&["ban", "127.0.3.0/24"]);
    Client::from("127.0.3.8")
        .wait_for_status(&stack.envoy.url("/anything"), 403)
        .await;
    assert_eq!(
        Client::from("127.0.3.7")
            .get(&stack.envoy.url("/anything"))
            .await
            .status,
        200
    );

    // A ban of an allowlisted address is refused, says why, and changes nothing.
    let refused = stack.collector.cli().run(&["ban", "127.0.3.7"]);
    assert!(!refused.success());
    assert!(refused.stderr.contains("127.0.3.7"), "{}", refused.stderr);
    let decisions = stack.collector.cli().ok(&["decisions", "--json"]);
    assert!(!decisions.contains("\"127.0.3.7"), "{decisions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_answers_429_with_retry_after() {
    let stack = Stack::start().await;
    stack
        .collector
        .cli()
        .ok(&["ban", "127.0.0.12", "--action", "throttle", "--ttl", "10m"]);
    Client::from("127.0.0.12")
        .wait_for_status(&stack.envoy.url("/anything"), 429)
        .await;
    let response = Client::from("127.0.0.12")
        .get(&stack.envoy.url("/anything"))
        .await;
    let retry_after: u64 = response
        .header("retry-after")
        .expect("Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!(
        retry_after > 0 && retry_after <= 600,
        "Retry-After {retry_after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ban_input_is_refused_and_changes_nothing() {
    let collector = Collector::start().await;
    for args in [
        vec!["ban", "999.1.1.1"],
        vec!["ban", "10.0.0.0/33"],
        vec!["ban", "10.0.0.1", "--ttl", "1x"],
        vec!["ban", "10.0.0.1", "--action", "explode"],
    ] {
        let output = collector.cli().run(&args);
        assert!(!output.success(), "warden {args:?} was accepted");
        assert!(!output.stderr.is_empty(), "warden {args:?} said nothing");
    }
    let decisions = collector.cli().ok(&["decisions", "--json"]);
    assert!(
        decisions.trim().is_empty() || decisions.trim() == "[]",
        "{decisions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_survive_a_collector_restart_and_reach_an_envoy_started_later() {
    let mut stack = Stack::start().await;
    stack
        .collector
        .cli()
        .ok(&["ban", "127.0.0.13", "--reason", "persisted"]);
    Client::from("127.0.0.13")
        .wait_for_status(&stack.envoy.url("/anything"), 403)
        .await;

    stack.collector.restart().await;
    let decisions = stack.collector.cli().ok(&["decisions", "--json"]);
    assert!(decisions.contains("127.0.0.13"), "{decisions}");

    // A new Envoy gets the ban in its first snapshot.
    let mut options = EnvoyOptions::new(&stack.collector, stack.upstream);
    options.concurrency = 1;
    let late = Envoy::start(options).await;
    Client::from("127.0.0.13")
        .wait_for_status(&late.url("/anything"), 403)
        .await;
    assert_eq!(
        Client::from("127.0.0.14")
            .get(&late.url("/anything"))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_received_decisions_are_enforced_and_still_expire() {
    let mut stack = Stack::start().await;
    stack.collector.cli().ok(&["ban", "127.0.0.15"]);
    stack
        .collector
        .cli()
        .ok(&["ban", "127.0.0.16", "--ttl", "4s"]);
    Client::from("127.0.0.15")
        .wait_for_status(&stack.envoy.url("/anything"), 403)
        .await;
    Client::from("127.0.0.16")
        .wait_for_status(&stack.envoy.url("/anything"), 403)
        .await;

    stack.collector.kill();
    // The TTL ban lifts on time although nobody can tell the filter.
    Client::from("127.0.0.16")
        .wait_for_status(&stack.envoy.url("/anything"), 200)
        .await;
    let still = Client::from("127.0.0.15")
        .get(&stack.envoy.url("/anything"))
        .await;
    assert_eq!(
        still.status, 403,
        "a received decision must hold while the collector is down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_blocks_and_reports_the_applied_version() {
    let stack = Stack::start_with(|options| options.concurrency = 2).await;
    // Wait until all three VMs (main thread + 2 workers) have subscribed.
    eventually("3 connected filters", || async {
        let filters = filters(&stack.collector).await;
        if filters.len() >= 3 {
            Ok(())
        } else {
            Err(format!("{filters:?}"))
        }
    })
    .await;

    stack.collector.cli().ok(&["ban", "127.0.0.17"]);
    Client::from("127.0.0.17")
        .wait_for_status(&stack.envoy.url("/anything"), 403)
        .await;
    // Every request on a fresh connection: the kernel spreads them over both workers.
    for i in 0..40 {
        let client = Client::from("127.0.0.17");
        let response = client
            .get(&stack.envoy.url(&format!("/anything/{i}")))
            .await;
        assert_eq!(response.status, 403, "request {i} passed");
    }
    // Each VM acknowledged the version that contains the ban.
    eventually("every filter to ack the latest version", || async {
        let filters = filters(&stack.collector).await;
        let acked: Vec<u64> = filters
            .iter()
            .map(|f| f["version_acked"].as_u64().unwrap_or(0))
            .collect();
        let sent: Vec<u64> = filters
            .iter()
            .map(|f| f["version_sent"].as_u64().unwrap_or(0))
            .collect();
        if !acked.is_empty() && acked.iter().all(|a| *a >= 1) && acked == sent {
            Ok(())
        } else {
            Err(format!("{filters:?}"))
        }
    })
    .await;
}

/// The connected filters, from `GET /api/v1/filters`.
async fn filters(collector: &Collector) -> Vec<Value> {
    match collector.filters().await {
        Ok(body) => body["filters"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}
