//! The synthetic workload of the ingest benchmarks (`collector/tests/bench.rs` and the
//! `bench-ingest` binary), defined once so both measure the same thing.

use warden_proto::pb::{AccessRecord, AuthDecision, ExportRequest, FilterIdentity, Principal};

/// One batch of `n` records as filter VM `worker` would send it, sequences from `first_seq`,
/// times from `now`: 1,000 clients and 1,000 paths per worker, 10% 404s, a JWT principal on a
/// third of the requests.
pub fn batch(worker: u32, first_seq: u64, n: u64, now: i64) -> ExportRequest {
    let records = (0..n)
        .map(|i| AccessRecord {
            sequence: first_seq + i,
            time_ms: now + i64::try_from(i).unwrap_or(0),
            request_id: format!("6f1c{first_seq}-{i}-4a7e-9b1d-3c2e5f8a0b7d"),
            client_address: format!("10.{}.{}.{}", worker, (i / 256) % 256, i % 256),
            client_port: 40_000 + u32::try_from(i % 20_000).unwrap_or(0),
            authority: "shop.example.com".into(),
            method: "GET".into(),
            path: format!("/api/items/{}", i % 1000),
            protocol: "HTTP/1.1".into(),
            status: if i % 10 == 0 { 404 } else { 200 },
            response_code_details: "via_upstream".into(),
            route_name: "shop".into(),
            upstream_cluster: "shop_backend".into(),
            upstream_host: "10.0.0.5:8080".into(),
            duration_us: 1234 + i,
            request_bytes: 312,
            response_bytes: 2048,
            user_agent: "Mozilla/5.0 (X11; Linux x86_64) bench".into(),
            principal: (i % 3 == 0).then(|| Principal {
                source: 1,
                name: format!("user-{}", i % 50),
                issuer: "https://idp.example.com".into(),
                ..Default::default()
            }),
            decision: Some(AuthDecision {
                verdict: 1,
                mechanism: 2,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    ExportRequest {
        filter: Some(FilterIdentity {
            node_id: "bench".into(),
            worker,
            instance_id: "run".into(),
            filter_version: "x".into(),
        }),
        records,
        dropped_total: 0,
        ..Default::default()
    }
}

/// Twenty rules, five of each counting kind, with thresholds this workload rarely crosses, so
/// the measurement is evaluation rather than decision making. `dry_run_paths` makes the
/// `distinct_paths` rules dry-run alerts.
pub fn twenty_rules(dry_run_paths: bool) -> String {
    let dry_run = if dry_run_paths {
        "dry_run = true\n"
    } else {
        ""
    };
    let mut text = String::new();
    for k in 0..5 {
        text.push_str(&format!(
            "[[rules]]\nname = \"auth-{k}\"\nkind = \"auth_failures\"\nthreshold = {}\nwindow = \"1m\"\naction = \"deny\"\n\n\
             [[rules]]\nname = \"flood-{k}\"\nkind = \"status_flood\"\nstatus_class = \"4xx\"\nthreshold = {}\nwindow = \"1m\"\naction = \"deny\"\n\n\
             [[rules]]\nname = \"paths-{k}\"\nkind = \"distinct_paths\"\nthreshold = {}\nwindow = \"1m\"\naction = \"alert\"\n{dry_run}\n\
             [[rules]]\nname = \"rate-{k}\"\nkind = \"rate\"\nlimit = {}\nperiod = \"1m\"\naction = \"throttle\"\n\n",
            50 + k,
            100 + k,
            500 + k,
            1000 + k
        ));
    }
    text
}
