//! An outage longer than the filter's buffer, through a real Envoy: the collector is down while
//! clients keep sending, the buffer overflows, and what it sheds is folded into record summaries
//! (per client, host, status class, decision, minute). Once the collector is back, every request
//! served is accounted for: stored as a record or counted in a stored summary, none lost, and
//! each client's count is exact.

use serde_json::{Value, json};
use warden_e2e::{Client, Stack, eventually};

const CLIENTS: u64 = 4;
const REQUESTS_EACH: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_buffer_leaves_summaries_that_count_every_request() {
    let mut stack = Stack::start_with(|o| {
        o.filter_config = json!({
            "batch": {
                "flush_interval_ms": 100,
                "max_records": 10,
                "max_pending_records": 40,
                "retry_initial_ms": 50,
                "retry_max_ms": 200,
            }
        });
    })
    .await;
    stack.collector.kill();
    for c in 0..CLIENTS {
        let client = Client::from(&format!("127.0.0.{}", 120 + c));
        for n in 0..REQUESTS_EACH {
            let url = stack.envoy.url(&format!("/outage/{c}/{n}"));
            assert_eq!(client.get(&url).await.status, 200, "served while down");
        }
    }
    let served = CLIENTS * REQUESTS_EACH;
    stack.collector.restart().await;

    // Every record the buffer kept arrives, and the summaries of the rest.
    let accounting = eventually("the outage accounted for", || async {
        let body = stack.collector.filters().await?;
        let rows: Vec<Value> = body["accounting"].as_array().cloned().unwrap_or_default();
        let sum = |f: &dyn Fn(&Value) -> u64| rows.iter().map(f).sum::<u64>();
        let stored = sum(&|r| r["stored"].as_u64().unwrap_or(0));
        let in_summaries = sum(&|r| r["summaries"]["requests"].as_u64().unwrap_or(0));
        let lost = sum(&|r| r["dropped"]["buffer_full"].as_u64().unwrap_or(0));
        let gaps = sum(&|r| r["gaps"].as_u64().unwrap_or(0));
        if stored + in_summaries + lost == served && gaps == 0 {
            Ok((stored, in_summaries, lost))
        } else {
            Err(format!("{body}"))
        }
    })
    .await;
    let (stored, in_summaries, lost) = accounting;
    eprintln!(
        "outage: {served} served, {stored} stored as records, {in_summaries} counted in summaries, \
         {lost} lost"
    );
    assert_eq!(lost, 0, "the summary table had room for every key");
    assert!(
        in_summaries >= served - 50,
        "the buffer of 40 (and a batch in flight) kept at most 50 of {served}"
    );
    let envoy = &stack.envoy;
    eventually("the filter's summarized count in Envoy's stats", || async {
        match envoy.stat("warden.records_summarized").await {
            Some(n) if n == in_summaries => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Per client: its stored records plus its summaries make exactly the requests it made.
    for c in 0..CLIENTS {
        let ip = format!("127.0.0.{}", 120 + c);
        let records = stack
            .collector
            .all_records(&format!("ip={ip}&path_prefix=/outage/"))
            .await
            .unwrap();
        let summaries = stack
            .collector
            .get_json(&format!(
                "{}/api/v1/summaries?ip={ip}",
                stack.collector.base_url()
            ))
            .await
            .unwrap();
        let rows = summaries["summaries"].as_array().unwrap();
        let counted: u64 = rows.iter().map(|s| s["requests"].as_u64().unwrap()).sum();
        assert_eq!(
            records.len() as u64 + counted,
            REQUESTS_EACH,
            "{ip}: {} records + {counted} summarized: {summaries}",
            records.len()
        );
        for s in rows {
            assert_eq!(
                (&s["status_class"], &s["verdict"]),
                (&json!("2xx"), &json!("allow")),
                "{s}"
            );
            assert!(s["response_bytes"].as_u64().unwrap() > 0, "{s}");
        }
    }

    // The CLI shows them, and says which filter instance summarized how many.
    let cli = stack.collector.cli();
    let text = cli.ok(&["summaries", "--ip", "127.0.0.120", "--since", "10m"]);
    assert!(
        text.contains("127.0.0.120") && text.contains("2xx"),
        "{text}"
    );
    let text = cli.run(&["filters"]).stdout;
    assert!(text.contains("SUMMARIZED"), "{text}");

    // The summaries are in the trail's hash chains like the records.
    let text = cli.ok(&["verify"]);
    assert!(
        text.contains("record summaries: ") && !text.contains("record summaries: 0 verified"),
        "{text}"
    );
}
