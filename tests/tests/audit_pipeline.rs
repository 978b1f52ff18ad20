//! End to end: a real Envoy running the filter ships every request's record to the real
//! collector, which stores it and answers queries.

use serde_json::{Value, json};
use warden_e2e::collector::encode_query_value;
use warden_e2e::secrets::{assert_not_in_files, assert_not_in_text};
use warden_e2e::{Client, Collector, Envoy, EnvoyOptions, Stack, eventually};

fn unique_path(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_for_upstream_direct_and_no_route_responses_arrive_with_their_fields() {
    let stack = Stack::start().await;
    let client = Client::from("127.0.0.1");

    let ok = client
        .get(&stack.envoy.url("/anything/ok?user=alice&token=s3cret"))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        client.get(&stack.envoy.url("/status/404")).await.status,
        404
    );
    assert_eq!(
        client.get(&stack.envoy.url("/status/500")).await.status,
        500
    );
    assert_eq!(client.get(&stack.envoy.url("/direct")).await.status, 200);
    let no_route = client
        .get_with(&stack.envoy.url("/nowhere"), &[("host", "no-route.test")])
        .await;
    assert_eq!(no_route.status, 404);
    assert_eq!(
        client.get(&stack.envoy.url("/unreachable")).await.status,
        503
    );

    let records = stack.wait_for_records("since=5m", 6).await;
    let by_path = |path: &str| -> &Value {
        records
            .iter()
            .find(|r| r["path"].as_str().is_some_and(|p| p.starts_with(path)))
            .unwrap_or_else(|| panic!("no record for {path} in {records:#?}"))
    };

    let ok = by_path("/anything/ok");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["client_address"], "127.0.0.1");
    assert!(ok["client_port"].as_u64().unwrap() > 0);
    assert_eq!(ok["authority"], stack.envoy.listener.to_string());
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["route_name"], "app");
    assert_eq!(ok["upstream_cluster"], "upstream");
    assert_eq!(ok["upstream_host"], stack.upstream.to_string());
    assert_eq!(ok["response_code_details"], "via_upstream");
    assert!(ok["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(ok["response_bytes"].as_u64().unwrap() > 0);
    assert!(ok["time_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(ok["duration_us"].as_u64().unwrap() > 0, "{ok}");
    assert_eq!(ok["tls_sni"], "", "plaintext has no SNI");
    assert!(ok["sequence"].as_u64().unwrap() >= 1);
    assert_eq!(ok["filter_node"], stack.envoy.options.node_id);
    let path = ok["path"].as_str().unwrap();
    assert!(
        !path.contains("s3cret"),
        "query value leaked into the path: {path}"
    );

    assert_eq!(by_path("/status/404")["status"], 404);
    assert_eq!(by_path("/status/500")["status"], 500);

    let direct = by_path("/direct");
    assert_eq!(direct["status"], 200);
    assert_eq!(direct["route_name"], "direct");
    assert_eq!(direct["response_code_details"], "direct_response");

    let no_route = by_path("/nowhere");
    assert_eq!(no_route["status"], 404);
    assert_eq!(no_route["response_code_details"], "route_not_found");
    assert!(no_route["response_flags"].as_str().unwrap().contains("NR"));
    assert_eq!(no_route["authority"], "no-route.test");

    let unreachable = by_path("/unreachable");
    assert_eq!(unreachable["status"], 503);
    assert_eq!(unreachable["upstream_cluster"], "unreachable");
    assert!(
        unreachable["response_flags"]
            .as_str()
            .unwrap()
            .contains("UF"),
        "{unreachable}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_address_is_attributed_to_its_own_requests() {
    let stack = Stack::start().await;
    for (source, count) in [("127.0.0.2", 1), ("127.0.0.3", 2), ("127.0.0.4", 3)] {
        let client = Client::from(source);
        for _ in 0..count {
            assert_eq!(
                client.get(&stack.envoy.url("/anything/who")).await.status,
                200
            );
        }
    }
    stack.wait_for_records("since=5m", 6).await;
    for (source, count) in [("127.0.0.2", 1), ("127.0.0.3", 2), ("127.0.0.4", 3)] {
        let records = stack
            .collector
            .records(&format!("ip={source}"))
            .await
            .unwrap();
        assert_eq!(records.len(), count, "records from {source}: {records:#?}");
        assert!(records.iter().all(|r| r["client_address"] == source));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_x_forwarded_for_does_not_change_the_recorded_client_address() {
    let stack = Stack::start().await;
    let client = Client::from("127.0.0.7");
    let response = client
        .get_with(
            &stack.envoy.url("/anything/forged"),
            &[("x-forwarded-for", "6.6.6.6")],
        )
        .await;
    assert_eq!(response.status, 200);

    let records = stack
        .wait_for_records("path_prefix=%2Fanything%2Fforged", 1)
        .await;
    assert_eq!(records[0]["client_address"], "127.0.0.7");
    assert!(
        records[0]["x_forwarded_for"]
            .as_str()
            .unwrap()
            .contains("6.6.6.6"),
        "the raw header is kept as its own field: {}",
        records[0]
    );
    assert!(
        stack
            .collector
            .records("ip=6.6.6.6")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_cookies_are_never_recorded() {
    let stack = Stack::start().await;
    let client = Client::from("127.0.0.8");
    let response = client
        .get_with(
            &stack
                .envoy
                .url("/anything/secret?access_token=tok-in-query-123"),
            &[
                ("authorization", "Bearer tok-in-header-456"),
                ("cookie", "session=cookie-value-789"),
            ],
        )
        .await;
    assert_eq!(response.status, 200);
    let records = stack.wait_for_records("ip=127.0.0.8", 1).await;
    let secrets = ["tok-in-query-123", "tok-in-header-456", "cookie-value-789"];
    assert_not_in_text("the record", &records[0].to_string(), &secrets);
    assert_not_in_files(&stack.collector.data_dir(), &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_query_filter_returns_exactly_the_expected_records() {
    let stack = Stack::start().await;
    let marker = unique_path("/anything/q");
    let a = Client::from("127.0.0.21");
    let b = Client::from("127.0.0.22");
    // a: GET 200 on host alpha, b: GET 404 on host beta, b: POST 200 on host alpha
    a.get_with(
        &stack.envoy.url(&format!("{marker}/one")),
        &[("host", "alpha.test")],
    )
    .await;
    b.get_with(&stack.envoy.url("/status/404"), &[("host", "beta.test")])
        .await;
    let post = b
        .send(
            b.inner()
                .post(stack.envoy.url(&format!("{marker}/two")))
                .header("host", "alpha.test")
                .body("x"),
        )
        .await
        .unwrap();
    assert_eq!(post.status, 200);
    stack.wait_for_records("since=5m", 3).await;

    let count = |query: String| {
        let collector = &stack.collector;
        async move { collector.records(&query).await.unwrap().len() }
    };
    assert_eq!(count("ip=127.0.0.21".into()).await, 1);
    assert_eq!(count("ip=127.0.0.22".into()).await, 2);
    assert_eq!(
        count(format!("ip={}", encode_query_value("127.0.0.16/28"))).await,
        3
    );
    assert_eq!(
        count(format!("ip={}", encode_query_value("127.0.0.16/30"))).await,
        0
    );
    assert_eq!(count("host=alpha.test".into()).await, 2);
    assert_eq!(count("host=beta.test".into()).await, 1);
    assert_eq!(
        count(format!("path_prefix={}", encode_query_value(&marker))).await,
        2
    );
    assert_eq!(count("status=404".into()).await, 1);
    assert_eq!(count("status=4xx".into()).await, 1);
    assert_eq!(count("status=2xx".into()).await, 2);
    assert_eq!(count("method=POST".into()).await, 1);
    assert_eq!(count("method=GET".into()).await, 2);
    assert_eq!(count("since=5m&limit=2".into()).await, 2);
    assert_eq!(count("until=2000-01-01T00:00:00Z".into()).await, 0);
    assert_eq!(
        count("host=alpha.test&method=GET&ip=127.0.0.21".into()).await,
        1
    );

    // The CLI answers the same questions.
    let cli = stack.collector.cli();
    let output = cli.ok(&["query", "--since", "5m", "--host", "alpha.test", "--json"]);
    let lines: Vec<Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|r| r["authority"] == "alpha.test"));

    // Page by page: one record a page says how to go on, and --all follows every page.
    let one = cli.run(&["query", "--limit", "1", "--json"]);
    assert!(one.success());
    assert!(
        one.stderr.contains("more records: --cursor "),
        "{}",
        one.stderr
    );
    let every = cli.run(&["query", "--limit", "1", "--all", "--json"]);
    assert!(every.success());
    let paged: Vec<&str> = every.stdout.lines().collect();
    let whole = cli.run(&["query", "--json"]);
    let whole: Vec<&str> = whole.stdout.lines().collect();
    assert_eq!(paged, whole);
    assert_eq!(whole.len(), 3);

    let table = cli.run(&["query", "--status", "4xx"]);
    assert!(table.success());
    assert!(
        table.stdout.contains("127.0.0.22") && table.stdout.contains("404"),
        "{}",
        table.stdout
    );

    // A bad filter is refused with a message naming it, over HTTP and on the CLI.
    let error = stack.collector.records("status=4yy").await.unwrap_err();
    assert!(error.contains("400") && error.contains("status"), "{error}");
    let bad = cli.run(&["query", "--status", "4yy"]);
    assert!(!bad.success());
    assert!(bad.stderr.contains("status"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_requests_succeed_and_buffered_records_arrive_after_restart() {
    let mut stack = Stack::start().await;
    let client = Client::from("127.0.0.31");
    assert_eq!(
        client
            .get(&stack.envoy.url("/anything/before"))
            .await
            .status,
        200
    );
    stack.wait_for_records("ip=127.0.0.31", 1).await;

    stack.collector.kill();
    for i in 0..20 {
        let response = client
            .get(&stack.envoy.url(&format!("/anything/while-down/{i}")))
            .await;
        assert_eq!(
            response.status, 200,
            "request {i} failed while the collector was down"
        );
    }
    // The filter notices: its failed-batch counter moves while nothing can be delivered.
    eventually("a failed batch to be counted", || async {
        match stack.envoy.stat("warden.batches_failed").await {
            Some(n) if n > 0 => Ok(()),
            other => Err(format!("warden.batches_failed = {other:?}")),
        }
    })
    .await;

    stack.collector.restart().await;
    let records = stack.wait_for_records("ip=127.0.0.31", 21).await;
    for i in 0..20 {
        let path = format!("/anything/while-down/{i}");
        assert_eq!(
            records
                .iter()
                .filter(|r| r["path"] == path.as_str())
                .count(),
            1,
            "{path} must be stored exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_filter_configuration_is_refused_at_load_naming_the_field() {
    let collector = Collector::start().await;
    let upstream = warden_e2e::upstream::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut options = EnvoyOptions::new(&collector, upstream);
    options.filter_config = json!({ "batch": { "max_records": 0 } });
    let failure = match Envoy::try_start(options).await {
        Ok(_) => panic!("Envoy accepted an invalid filter configuration"),
        Err(failure) => failure,
    };
    assert!(
        failure.contains("batch.max_records"),
        "the log must name the field:\n{failure}"
    );

    let mut options = EnvoyOptions::new(&collector, upstream);
    options.filter_config = json!({ "batch": { "max_recrods": 10 } });
    let failure = match Envoy::try_start(options).await {
        Ok(_) => panic!("Envoy accepted an unknown filter configuration field"),
        Err(failure) => failure,
    };
    assert!(
        failure.contains("max_recrods"),
        "the log must name the field:\n{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_metrics_count_sent_records() {
    let stack = Stack::start().await;
    let client = Client::from("127.0.0.41");
    for _ in 0..5 {
        client.get(&stack.envoy.url("/anything/metrics")).await;
    }
    stack.wait_for_records("ip=127.0.0.41", 5).await;
    eventually("warden.records_sent to reach 5", || async {
        match stack.envoy.stat("warden.records_sent").await {
            Some(n) if n >= 5 => Ok(()),
            other => Err(format!("warden.records_sent = {other:?}")),
        }
    })
    .await;
    assert_eq!(stack.envoy.stat("warden.records_dropped").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_are_shipped_without_waiting_for_the_flush_interval() {
    // A flush interval far longer than the test's patience: only urgency can ship the 401.
    let stack = Stack::start_with(|options| {
        options.filter_config = json!({ "batch": { "flush_interval_ms": 600_000 } });
    })
    .await;
    let client = Client::from("127.0.0.42");
    assert_eq!(
        client.get(&stack.envoy.url("/anything/quiet")).await.status,
        200
    );
    let refused = client
        .get_with(
            &stack.envoy.url("/login"),
            &[("authorization", "Basic ZGVtbzp3cm9uZw==")],
        )
        .await;
    assert_eq!(refused.status, 401);

    // The 401 and the 200 queued before it leave together, at once.
    let records = stack.wait_for_records("ip=127.0.0.42", 2).await;
    let login = records
        .iter()
        .find(|r| r["path"] == "/login")
        .expect("the 401 record");
    assert_eq!(login["status"], 401);
    assert_eq!(login["decision"], "deny");
    assert_eq!(login["mechanism"], "upstream");
    assert_eq!(login["deny_kind"], "authentication");
    assert!(
        login["principal"].is_null(),
        "a refused user name is not a principal: {login}"
    );

    // A plain 200 on its own waits for the interval (or a full batch).
    assert_eq!(
        client.get(&stack.envoy.url("/anything/later")).await.status,
        200
    );
    // A fixed pause on purpose: it shows an absence (the 200 is not shipped on its own), which
    // no poll can; 500 ms is far longer than shipping the 401 above took.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        stack
            .collector
            .records("ip=127.0.0.42")
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_value_that_is_not_utf8_is_recorded_and_the_filter_keeps_enforcing() {
    // HTTP allows obs-text (bytes 0x80-0xFF) in header values; Envoy passes them on. A filter
    // that expects UTF-8 would panic here, and with it every later record and block.
    let stack = Stack::start().await;
    let client = Client::from("127.0.0.43");
    let hostile = reqwest::header::HeaderValue::from_bytes(b"bad\xff\xfeagent").unwrap();
    let request = client
        .inner()
        .get(stack.envoy.url("/anything/hostile"))
        .header("user-agent", hostile.clone())
        .header("x-forwarded-for", hostile);
    assert_eq!(client.send(request).await.unwrap().status, 200);

    let records = stack.wait_for_records("ip=127.0.0.43", 1).await;
    let user_agent = records[0]["user_agent"].as_str().unwrap();
    assert!(
        user_agent.starts_with("bad") && user_agent.ends_with("agent"),
        "{user_agent:?}"
    );

    stack.collector.cli().ok(&["ban", "127.0.0.43"]);
    // The ban is enforced after the hostile request.
    client
        .wait_for_status(&stack.envoy.url("/anything/after"), 403)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_follows_the_configuration_and_secrets_never_reach_storage() {
    // Redact mode: only `page` keeps its value; a path pattern hides the reset code; the header
    // allowlist asks for credentials too, which are never captured whatever it says.
    let redacting = Stack::start_with(|options| {
        options.filter_config = json!({
            "batch": { "flush_interval_ms": 100 },
            "record": {
                "query_string": "redact",
                "kept_query_params": ["page"],
                "captured_headers": ["x-tenant", "authorization", "cookie"],
                "path_scrub_patterns": ["/reset/{code}"],
            },
        });
    })
    .await;
    let client = Client::from("127.0.0.44");
    let response = client
        .get_with(
            &redacting
                .envoy
                .url("/reset/rc-31337?page=2&q=term-4242&access_token=tok-999"),
            &[
                ("x-tenant", "acme"),
                ("authorization", "Bearer tok-hdr-888"),
                ("cookie", "session=ck-777"),
            ],
        )
        .await;
    assert_eq!(response.status, 200);
    let record = redacting
        .wait_for_records("ip=127.0.0.44", 1)
        .await
        .remove(0);
    let path = record["path"].as_str().unwrap();
    assert!(path.starts_with("/reset/{code}?page=2&q="), "{path}");
    assert_eq!(
        record["captured_headers"],
        json!({ "x-tenant": "acme" }),
        "{record}"
    );
    assert_not_in_files(
        &redacting.collector.data_dir(),
        &["rc-31337", "term-4242", "tok-999", "tok-hdr-888", "ck-777"],
    );

    // Keep mode keeps ordinary parameters, but never a secret one.
    let keeping = Stack::start_with(|options| {
        options.filter_config = json!({
            "batch": { "flush_interval_ms": 100 },
            "record": { "query_string": "keep" },
        });
    })
    .await;
    let response = client
        .get(&keeping.envoy.url("/search?q=visible-term&password=pw-555"))
        .await;
    assert_eq!(response.status, 200);
    let record = keeping.wait_for_records("ip=127.0.0.44", 1).await.remove(0);
    let path = record["path"].as_str().unwrap();
    assert!(
        path.starts_with("/search?q=visible-term&password="),
        "{path}"
    );
    assert_not_in_files(&keeping.collector.data_dir(), &["pw-555"]);
}
