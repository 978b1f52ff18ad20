//! Holes in the audit trail found by trying it as an attacker would, each replayed end to end
//! against the fix: a strange method that used to blind the trail (its batch refused whole),
//! records dated far in the future that used to move the rules engine's clock, an IPv4-mapped ban
//! that never applied, and stored strings that reached terminals and spreadsheets as escape
//! sequences and formulas.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use warden_e2e::{Cli, Client, Collector, Envoy, EnvoyOptions, eventually};
use warden_proto::pb::audit_service_client::AuditServiceClient;
use warden_proto::pb::{AccessRecord, ExportRequest, FilterIdentity, Principal, PrincipalSource};

fn now_ms() -> i64 {
    warden_e2e::auth::now_secs() * 1000
}

fn export_request(records: Vec<AccessRecord>) -> tonic::Request<ExportRequest> {
    tonic::Request::new(ExportRequest {
        filter: Some(FilterIdentity {
            node_id: "trail-test".into(),
            worker: 0,
            instance_id: "trail-test-1".into(),
            filter_version: "test".into(),
        }),
        records,
        dropped_total: 0,
        ..Default::default()
    })
}

/// Sends `records` as one Export with the collector's local filter token.
async fn export(
    collector: &Collector,
    records: Vec<AccessRecord>,
) -> warden_proto::pb::ExportResponse {
    let channel = collector.grpc_channel().await;
    let mut request = export_request(records);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", collector.filter_token())
            .parse()
            .unwrap(),
    );
    AuditServiceClient::new(channel)
        .export(request)
        .await
        .expect("Export")
        .into_inner()
}

fn record(sequence: u64, client: &str) -> AccessRecord {
    AccessRecord {
        sequence,
        time_ms: now_ms(),
        client_address: client.into(),
        method: "GET".into(),
        authority: "shop.example".into(),
        path: "/".into(),
        status: 200,
        ..AccessRecord::default()
    }
}

#[tokio::test]
async fn a_strange_method_neither_goes_unrecorded_nor_takes_other_clients_records_with_it() {
    let collector = Collector::start().await;
    let upstream = warden_e2e::upstream::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut options = EnvoyOptions::new(&collector, upstream);
    // One batch for everything sent below.
    options.filter_config = serde_json::json!({ "batch": { "flush_interval_ms": 2000 } });
    let envoy = Envoy::start(options).await;
    let attacker: IpAddr = "127.0.0.71".parse().unwrap();
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .local_address(attacker)
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let method = reqwest::Method::from_bytes("A".repeat(40).as_bytes()).unwrap();
    let served = h2
        .request(method, envoy.url("/login"))
        .send()
        .await
        .expect("Envoy serves the request");
    assert!(served.status().as_u16() < 500, "{}", served.status());
    assert_eq!(
        Client::from("127.0.0.72")
            .get(&envoy.url("/other-client"))
            .await
            .status,
        200
    );
    let records = eventually("both clients' records", || async {
        let a = collector.records("ip=127.0.0.71").await?;
        let b = collector.records("ip=127.0.0.72").await?;
        if a.is_empty() || b.is_empty() {
            return Err(format!("{} and {} records", a.len(), b.len()));
        }
        Ok(a)
    })
    .await;
    assert_eq!(records[0]["method"], "A".repeat(32), "{}", records[0]);
    assert_eq!(records[0]["path"], "/login");
}

#[tokio::test]
async fn records_from_the_future_are_refused_one_by_one_and_the_rest_stored() {
    let collector = Collector::start().await;
    let mut future = record(2, "198.51.100.9");
    future.time_ms = 4_102_444_800_000; // 2100-01-01
    let mut garbage = record(3, "198.51.100.9");
    garbage.method = "A".repeat(40);
    let answer = export(
        &collector,
        vec![
            record(1, "198.51.100.9"),
            future,
            garbage,
            record(4, "198.51.100.9"),
        ],
    )
    .await;
    assert_eq!(answer.accepted, 2);
    let refused: Vec<(u64, String)> = answer
        .refused
        .into_iter()
        .map(|r| (r.sequence, r.reason))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0].0, 2);
    assert!(
        refused[0].1.contains("limits.max_clock_skew"),
        "{refused:?}"
    );
    assert_eq!(
        refused[1],
        (3, "records[2].method: is longer than 32 bytes".into())
    );
    let stored = collector.records("ip=198.51.100.9").await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        collector.metric("warden_records_rejected_total").await,
        2,
        "refused records are counted"
    );
}

#[tokio::test]
async fn an_ipv4_mapped_ban_blocks_the_ipv4_client() {
    let collector = Collector::start().await;
    let upstream = warden_e2e::upstream::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let envoy = Envoy::start(EnvoyOptions::new(&collector, upstream)).await;
    let client = Client::from("127.0.0.73");
    assert_eq!(client.get(&envoy.url("/before")).await.status, 200);
    let stdout = collector
        .cli()
        .ok(&["ban", "::ffff:127.0.0.73", "--reason", "mapped"]);
    assert!(stdout.contains("127.0.0.73/32"), "{stdout}");
    // The mapped ban is enforced on the IPv4 client.
    client.wait_for_status(&envoy.url("/after"), 403).await;
}

#[tokio::test]
async fn stored_strings_reach_terminals_and_spreadsheets_as_data() {
    let collector = Collector::start().await;
    let mut r = record(1, "198.51.100.20");
    r.authority = "evil\u{1b}[2J.example".into();
    r.path = "/\u{1b}]0;owned\u{7}".into();
    r.principal = Some(Principal {
        source: PrincipalSource::Jwt as i32,
        name: "=cmd|' /C calc'!A0".into(),
        ..Principal::default()
    });
    let answer = export(&collector, vec![r]).await;
    assert_eq!(answer.accepted, 1, "{answer:?}");

    let cli = collector.cli();
    let text = cli.ok(&["query", "--since", "1h"]);
    assert!(!text.contains('\x1b'), "raw escape in:\n{text}");
    assert!(!text.contains('\x07'), "raw BEL in:\n{text}");
    // (Hosts are stored lower-cased.)
    assert!(text.contains("evil\\x1b[2j.example"), "{text}");

    for format in ["table", "csv"] {
        let text = cli.ok(&["report", "access", "--since", "1h", "--format", format]);
        assert!(!text.contains('\x1b'), "raw escape in:\n{text}");
        if format == "csv" {
            assert!(text.contains("\"'=cmd|' /C calc'!A0\""), "{text}");
            assert!(
                !text.lines().any(|l| l.starts_with('=')),
                "a formula cell in:\n{text}"
            );
        }
    }

    // JSON stays exact (escaped the JSON way, not altered).
    let json = cli.run(&["query", "--since", "1h", "--json"]);
    let line: serde_json::Value =
        serde_json::from_str(json.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["authority"], "evil\u{1b}[2j.example");
}

/// Sends raw bytes as one HTTP/1.1 request from `source` and returns the status Envoy answered
/// (0 when it closed the connection without one).
async fn raw_request(envoy: &Envoy, source: &str, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(envoy.listener).await.unwrap();
    // `Connection: close` after the request line, so the answer ends with the connection.
    let line_end = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    stream.write_all(&request[..line_end]).await.unwrap();
    stream.write_all(b"Connection: close\r\n").await.unwrap();
    stream.write_all(&request[line_end..]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn hostile_requests_neither_break_the_filter_nor_escape_the_record_contract() {
    let collector = Collector::start().await;
    let upstream = warden_e2e::upstream::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let envoy = Envoy::start(EnvoyOptions::new(&collector, upstream)).await;
    let huge = "u".repeat(50 * 1024);
    let many: String = (0..100).map(|i| format!("x-h{i}: v{i}\r\n")).collect();
    let long_path = format!("/{}", "p".repeat(7 * 1024));
    let requests: Vec<(&str, Vec<u8>)> = vec![
        (
            "127.0.0.81",
            format!("GET /big HTTP/1.1\r\nHost: a\r\nUser-Agent: {huge}\r\n\r\n").into_bytes(),
        ),
        (
            "127.0.0.82",
            b"GET /bad\xff\xfe\x80utf8 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ),
        (
            "127.0.0.83",
            b"GET /esc HTTP/1.1\r\nHost: a\r\nUser-Agent: a\x1b[2Jb\x07\r\n\r\n".to_vec(),
        ),
        (
            "127.0.0.84",
            format!("GET /many HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(),
        ),
        (
            "127.0.0.85",
            format!("GET {long_path} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes(),
        ),
        (
            "127.0.0.86",
            b"GET /obs HTTP/1.1\r\nHost: a\r\nUser-Agent: caf\xe9 \xff\r\n\r\n".to_vec(),
        ),
    ];
    let mut served = Vec::new();
    for (source, request) in &requests {
        let status = raw_request(&envoy, source, request).await;
        if (200..500).contains(&status) {
            served.push((*source, status));
        }
    }
    // HTTP/2 with a huge header list (Envoy's default limit is 60 KiB).
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .local_address("127.0.0.87".parse::<IpAddr>().unwrap())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut big_list = h2.get(envoy.url("/h2-list"));
    for i in 0..200 {
        big_list = big_list.header(format!("x-list-{i}"), "v".repeat(200));
    }
    if let Ok(r) = big_list.send().await {
        served.push(("127.0.0.87", r.status().as_u16()));
    }
    eprintln!("served (source, status): {served:?}");
    assert!(
        served.len() >= 3,
        "Envoy served too few to test: {served:?}"
    );

    // Envoy keeps serving, the filter kept recording, and the collector refused nothing.
    assert_eq!(
        Client::from("127.0.0.88")
            .get(&envoy.url("/after"))
            .await
            .status,
        200
    );
    eventually("the normal request after the hostile ones", || async {
        let r = collector.records("ip=127.0.0.88").await?;
        if r.is_empty() {
            Err("none".into())
        } else {
            Ok(())
        }
    })
    .await;
    for (source, status) in &served {
        let records = collector.records(&format!("ip={source}")).await.unwrap();
        assert_eq!(records.len(), 1, "{source} ({status}) recorded once");
        let r = &records[0];
        for field in ["user_agent", "path", "authority"] {
            let value = r[field].as_str().unwrap_or_default();
            assert!(
                value.len() <= 1024,
                "{source}: {field} is {} bytes",
                value.len()
            );
        }
    }
    assert_eq!(collector.metric("warden_records_rejected_total").await, 0);
    let (_, stats) = envoy.admin_get("/stats?filter=wasm").await.unwrap();
    for line in stats.lines() {
        let (name, value) = line.split_once(": ").unwrap_or((line, "0"));
        if name.contains("fail") || name.contains("crash") || name.contains("panic") {
            assert_eq!(value.trim(), "0", "{line}");
        }
    }
    // Whatever the bytes, the terminal sees them as data.
    let out = collector
        .cli()
        .ok(&["query", "--since", "5m", "--limit", "100"]);
    assert!(!out.contains(['\x1b', '\x07']));
}

#[tokio::test]
async fn warden_verify_passes_an_untouched_trail_and_names_an_edited_audit_entry() {
    let collector =
        Collector::start_with_config("[storage]\ncheckpoint_interval = \"200ms\"\n").await;
    for target in ["198.51.100.31", "198.51.100.32", "198.51.100.33"] {
        collector
            .cli()
            .ok(&["ban", target, "--reason", "verify test"]);
    }
    let data = collector.data_dir();
    // The collector signs the chains' heads; keep a copy of its checkpoints elsewhere.
    let kept = tempfile::tempdir().unwrap();
    eventually("a checkpoint of the three changes", || async {
        let lines = std::fs::read_to_string(data.join("checkpoints.jsonl")).unwrap_or_default();
        match lines.lines().find(|l| l.contains("\"audit_id\":3")) {
            Some(line) => {
                std::fs::write(kept.path().join("checkpoints.jsonl"), format!("{line}\n")).unwrap();
                std::fs::copy(
                    data.join("checkpoint.pub"),
                    kept.path().join("checkpoint.pub"),
                )
                .unwrap();
                Ok(())
            }
            None => Err(lines),
        }
    })
    .await;
    let path = |path: PathBuf| path.display().to_string();
    let (data_dir, checkpoints, public_key) = (
        path(data.clone()),
        path(kept.path().join("checkpoints.jsonl")),
        path(kept.path().join("checkpoint.pub")),
    );
    let verify = || {
        Cli::new().run(&[
            "verify",
            "--data-dir",
            &data_dir,
            "--checkpoints",
            &checkpoints,
            "--public-key",
            &public_key,
        ])
    };
    let out = verify();
    let text = &out.stdout;
    assert!(out.success(), "{out:?}");
    assert!(
        text.contains("decisions audit: 3 entries verified"),
        "{text}"
    );
    assert!(text.contains("signed checkpoints: 1 verified"), "{text}");
    assert!(text.contains("trail verified"), "{text}");

    // Someone with the files rewrites who made the second change.
    let edit = std::process::Command::new("sqlite3")
        .arg(data.join("warden.db"))
        .arg("UPDATE admin_audit SET actor = 'someone-else' WHERE id = 2")
        .output()
        .expect("sqlite3 (scripts/setup.sh installs it)");
    assert!(edit.status.success(), "{edit:?}");
    let out = verify();
    let text = &out.stdout;
    assert!(!out.success(), "{text}");
    assert!(
        text.contains("TAMPERED: decisions audit entry 2 was modified"),
        "{text}"
    );
    assert!(out.stderr.contains("does not verify"));
}
