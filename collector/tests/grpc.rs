//! The collector's gRPC services end to end in-process: a real server on 127.0.0.1:0, a tonic
//! client for Export and Subscribe, and the HTTP API to look at what was stored and to make
//! decisions.

// Helpers outside #[test] functions are test code too; a panic is the failure report here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Collector, Stream, identity};
use serde_json::{Value, json};
use std::time::Duration;
use warden_collector::config::{Config, Synchronous};
use warden_e2e::eventually;
use warden_proto::pb::audit_service_client::AuditServiceClient;
use warden_proto::pb::{
    AccessRecord, Action, DropCounts, ExportRequest, Mechanism, RecordSummary, Verdict,
    deny_list_update::Update,
};

/// A collector with test defaults (no fsync, fast expiry), adjusted by `edit`.
async fn start(edit: impl FnOnce(&mut Config)) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.grpc.listen = "127.0.0.1:0".parse().unwrap();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.storage.data_dir = dir.path().join("data");
    config.storage.synchronous = Synchronous::Normal;
    config.decisions.expiry_interval.0 = Duration::from_millis(100);
    edit(&mut config);
    let c = Collector::start(config, dir).await;
    let ready = c.ready_file();
    assert_eq!(ready["grpc"], c.bound.grpc.to_string());
    assert_eq!(ready["http"], c.bound.http.to_string());
    c
}

async fn audit_client(c: &Collector) -> common::Audit {
    c.audit().await
}

async fn records(c: &Collector, query: &str) -> Vec<Value> {
    let (status, body) = c.get(&format!("/api/v1/records?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["records"].as_array().unwrap().clone()
}

fn record(seq: u64) -> AccessRecord {
    AccessRecord {
        sequence: seq,
        time_ms: chrono::Utc::now().timestamp_millis(),
        request_id: format!("r{seq}"),
        client_address: "198.51.100.9".into(),
        client_port: 5555,
        authority: "shop.example.com".into(),
        method: "GET".into(),
        path: format!("/items/{seq}"),
        protocol: "HTTP/2".into(),
        status: 200,
        ..Default::default()
    }
}

fn batch(records: Vec<AccessRecord>) -> ExportRequest {
    ExportRequest {
        filter: Some(identity(0)),
        records,
        dropped_total: 0,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_valid_batch_is_stored_and_queryable() {
    let mut c = start(|_| {}).await;
    let mut client = audit_client(&c).await;
    let resp = client
        .export(batch(vec![record(1), record(2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.accepted, resp.duplicates), (2, 0));
    let got = records(&c, "host=shop.example.com").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["path"], "/items/2");
    assert_eq!(got[0]["filter_node"], "envoy-test");
    assert_eq!(got[0]["principal"], Value::Null);
    c.stop().await;
}

#[tokio::test]
async fn an_invalid_record_is_refused_alone_and_the_rest_of_its_batch_stored() {
    let mut c = start(|_| {}).await;
    let mut client = audit_client(&c).await;
    let mut bad = record(4);
    bad.client_address = "abc".into();
    let mut future = record(5);
    future.time_ms = 4_102_444_800_000; // 2100: would move the rules engine's clock
    let resp = client
        .export(batch(vec![record(1), record(2), record(3), bad, future]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.accepted, resp.duplicates), (3, 0));
    let refused: Vec<(u64, &str)> = resp
        .refused
        .iter()
        .map(|r| (r.sequence, r.reason.as_str()))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(
        refused[0],
        (4, "records[3].client_address: \"abc\" is not an IP address")
    );
    assert_eq!(refused[1].0, 5);
    assert!(
        refused[1].1.contains("ahead of the collector's clock"),
        "{refused:?}"
    );
    assert_eq!(
        records(&c, "").await.len(),
        3,
        "the valid records are stored"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_batch_without_a_filter_identity_is_refused_whole_with_a_message() {
    let mut c = start(|_| {}).await;
    let mut client = audit_client(&c).await;
    let mut req = batch(vec![record(1)]);
    req.filter.as_mut().unwrap().instance_id.clear();
    let err = client.export(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "filter.instance_id: must not be empty");
    assert!(
        records(&c, "").await.is_empty(),
        "nothing of the batch is stored"
    );
    // Other batches are unaffected.
    client.export(batch(vec![record(1)])).await.unwrap();
    assert_eq!(records(&c, "").await.len(), 1);
    c.stop().await;
}

#[tokio::test]
async fn a_damaged_database_stops_startup_naming_the_file() {
    for file in ["warden.db", "records.db"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join(file), vec![0x5a; 64 * 1024]).unwrap();
        let mut config = Config::default();
        config.grpc.listen = "127.0.0.1:0".parse().unwrap();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.storage.data_dir = data.clone();
        let err = warden_collector::server::serve(config, None, async {}, |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&data.join(file).display().to_string()) && err.contains("not a database"),
            "{file}: {err}"
        );
        assert_eq!(
            std::fs::read(data.join(file)).unwrap(),
            vec![0x5a; 64 * 1024],
            "the damaged file is left as it was"
        );
    }
}

#[tokio::test]
async fn every_record_of_a_filter_is_accounted_for() {
    let mut c = start(|_| {}).await;
    let mut client = audit_client(&c).await;
    let mut bad = record(3);
    bad.client_address = "abc".into();
    client
        .export(batch(vec![record(1), record(2), bad]))
        .await
        .unwrap();
    client
        .export(batch(vec![record(1), record(2)]))
        .await
        .unwrap();
    // 4..=6 never arrive; the filter reports two of them dropped.
    let mut req = batch(vec![record(7)]);
    req.dropped_total = 2;
    client.export(req).await.unwrap();
    let (status, body) = c.get("/api/v1/filters").await;
    assert_eq!(status, 200, "{body}");
    let row = &body["accounting"][0];
    assert_eq!(row["node_id"], "envoy-test", "{body}");
    let got: Vec<u64> = [
        "received",
        "stored",
        "duplicates",
        "refused",
        "reported_dropped",
        "highest_sequence",
        "gaps",
    ]
    .iter()
    .map(|k| row[k].as_u64().unwrap())
    .collect();
    assert_eq!(got, [6, 3, 2, 1, 2, 7, 1], "{row}");
    assert!(
        c.metrics_text()
            .await
            .lines()
            .any(|l| l == "warden_filter_sequence_gaps 1")
    );
    c.stop().await;
}

#[tokio::test]
async fn record_summaries_are_stored_once_refused_one_by_one_and_added_up_per_key() {
    let mut c = start(|_| {}).await;
    let mut client = audit_client(&c).await;
    let now = chrono::Utc::now().timestamp_millis();
    let minute = now - now.rem_euclid(60_000);
    let summary = |sequence: u64, client: &str, requests: u64| RecordSummary {
        sequence,
        minute_ms: minute,
        client_address: client.into(),
        authority: "shop.example.com".into(),
        status_class: 2,
        verdict: Verdict::Allow as i32,
        mechanism: Mechanism::None as i32,
        requests,
        request_bytes: 100 * requests,
        response_bytes: 1000 * requests,
    };
    // 1..=40 numbered: 10 records sent, 30 folded into summaries (two of them for the same
    // client and minute, from different summary batches), none only counted.
    let mut req = batch((31..=40).map(record).collect());
    req.dropped_total = 30;
    req.dropped = Some(DropCounts {
        summarized: 30,
        ..Default::default()
    });
    client.export(req).await.unwrap();
    let summaries = ExportRequest {
        filter: Some(identity(0)),
        summaries: vec![
            summary(1, "::ffff:198.51.100.9", 20),
            summary(2, "198.51.100.10", 4),
            RecordSummary {
                minute_ms: minute + 1,
                ..summary(3, "198.51.100.11", 1)
            },
        ],
        dropped_total: 30,
        ..Default::default()
    };
    let resp = client.export(summaries.clone()).await.unwrap().into_inner();
    assert_eq!((resp.summaries_accepted, resp.summaries_duplicates), (2, 0));
    assert_eq!(resp.refused_summaries.len(), 1, "{resp:?}");
    assert!(
        resp.refused_summaries[0]
            .reason
            .starts_with("summaries[2].minute_ms"),
        "{resp:?}"
    );
    // The retry of the same summary batch stores nothing twice.
    let again = client.export(summaries).await.unwrap().into_inner();
    assert_eq!(
        (again.summaries_accepted, again.summaries_duplicates),
        (0, 2)
    );
    let later = ExportRequest {
        filter: Some(identity(0)),
        summaries: vec![summary(4, "198.51.100.9", 6)],
        ..Default::default()
    };
    client.export(later).await.unwrap();

    let (status, body) = c.get("/api/v1/summaries?ip=198.51.100.9").await;
    assert_eq!(status, 200, "{body}");
    let rows = body["summaries"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{body}");
    let row = &rows[0];
    assert_eq!(row["client_address"], "198.51.100.9", "stored canonically");
    assert_eq!(row["requests"], 26, "two summaries of the same key add up");
    assert_eq!(row["request_bytes"], 2600);
    assert_eq!(
        (&row["status_class"], &row["verdict"], &row["mechanism"]),
        (&json!("2xx"), &json!("allow"), &json!("none"))
    );
    let (_, all) = c.get("/api/v1/summaries?host=shop.example.com").await;
    assert_eq!(all["summaries"].as_array().unwrap().len(), 2, "{all}");
    let (status, body) = c.get("/api/v1/summaries?path_prefix=/x").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("path_prefix"), "{body}");

    let (_, filters) = c.get("/api/v1/filters").await;
    let row = &filters["accounting"][0];
    assert_eq!(row["dropped"]["summarized"], 30, "{row}");
    assert_eq!(row["summaries"]["stored"], 3, "{row}");
    assert_eq!(row["summaries"]["duplicates"], 2, "{row}");
    assert_eq!(row["summaries"]["refused"], 2, "{row}");
    assert_eq!(row["summaries"]["requests"], 30, "{row}");
    assert_eq!(row["gaps"], 0, "1..=30 summarized, 31..=40 stored: {row}");
    let metrics = c.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "warden_filter_dropped_records_by_reason{reason=\"summarized\"} 30"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "warden_record_summaries_stored_total 3")
    );
    c.stop().await;
}

/// A tmpfs mounted for one test, unmounted on drop: a real filesystem that fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill a real filesystem; it needs root (CAP_SYS_ADMIN)"
        );
        SmallDisk { dir }
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_unavailable_never_an_ack_and_ingestion_resumes_when_space_returns() {
    let disk = SmallDisk::mount("6m");
    let data_dir = disk.dir.path().join("data");
    let mut c = start(|config| config.storage.data_dir = data_dir).await;
    let mut client = audit_client(&c).await;
    // Paths that do not compress, so the records fill the disk quickly.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = || {
        (0..64)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!("{:016x}", state)
            })
            .collect::<String>()
    };
    let mut acknowledged = 0u64;
    let mut sequence = 0u64;
    let mut refused = None;
    for _ in 0..200 {
        let records: Vec<AccessRecord> = (0..50)
            .map(|_| {
                sequence += 1;
                AccessRecord {
                    path: format!("/fill/{}", noise()),
                    ..record(sequence)
                }
            })
            .collect();
        match client.export(batch(records.clone())).await {
            Ok(r) => acknowledged += u64::from(r.into_inner().accepted),
            Err(status) => {
                refused = Some((status, records));
                break;
            }
        }
    }
    let (status, failed_batch) = refused.expect("the disk never filled up");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("full"),
        "the error says what is wrong: {status:?}"
    );
    assert!(acknowledged > 0);
    // Space returns: the same batch, retried as a filter would, is stored without a restart,
    // and nothing acknowledged before is missing.
    disk.resize("64m");
    let retried = client
        .export(batch(failed_batch))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.accepted, 50);
    let (status, body) = c
        .get("/api/v1/records?path_prefix=/fill/&limit=10000")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["records"].as_array().unwrap().len() as u64,
        acknowledged + 50
    );
    c.stop().await;
}

#[tokio::test]
async fn a_retried_batch_is_stored_once() {
    let mut c = start(|_| {}).await;
    let mut client = audit_client(&c).await;
    client
        .export(batch(vec![record(1), record(2)]))
        .await
        .unwrap();
    let resp = client
        .export(batch(vec![record(1), record(2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.accepted, resp.duplicates), (0, 2));
    assert_eq!(records(&c, "").await.len(), 2);
    c.stop().await;
}

#[tokio::test]
async fn a_filter_without_a_valid_credential_is_refused() {
    let mut c = start(|cfg| cfg.grpc.token = Some("s3cret".into())).await;
    let mut anonymous = AuditServiceClient::new(c.channel().await);
    let err = anonymous.export(batch(vec![record(1)])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(batch(vec![record(1)]));
    req.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    let err = anonymous.export(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(batch(vec![record(1)]));
    req.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    assert_eq!(
        anonymous.export(req).await.unwrap().into_inner().accepted,
        1
    );
    let metrics = c.metrics_text().await;
    assert!(
        metrics.contains("warden_grpc_refused_total{reason=\"unauthenticated\"} 2"),
        "{metrics}"
    );
    c.stop().await;
}

#[tokio::test]
async fn http_errors_name_the_parameter() {
    let mut c = start(|_| {}).await;
    let (status, body) = c.get("/api/v1/records?status=4yy").await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "status: \"4yy\" is not a status code or class like 4xx"
    );
    let (status, body) = c.get("/api/v1/records?cursor=page2").await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "cursor: \"page2\" is not a cursor (pass the next_cursor of a previous page)"
    );
    let (status, body) = c
        .post(
            "/api/v1/decisions",
            json!({"target": "10.0.0.1", "ttl": "1x"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "ttl: \"1x\" is not a TTL (e.g. 90s, 15m, 1h, 7d, or none)"
    );
    let (status, _) = c.get("/api/v1/decisions").await;
    assert_eq!(status, 200);
    let (status, body) = c.delete("/api/v1/decisions?target=10.9.9.9").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = c.get("/healthz").await;
    assert_eq!(status, 200);
    c.stop().await;
}

#[tokio::test]
async fn a_ban_covered_by_the_allowlist_is_a_conflict() {
    let mut c = start(|_| {}).await;
    let (status, _) = c
        .post(
            "/api/v1/allowlist",
            json!({"target": "10.0.0.0/8", "reason": "office"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = c
        .post("/api/v1/decisions", json!({"target": "10.1.2.3"}))
        .await;
    assert_eq!(status, 409);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("allowlist entry 10.0.0.0/8"),
        "{body}"
    );
    let (_, body) = c.get("/api/v1/decisions").await;
    assert_eq!(body["total"], 0);
    c.stop().await;
}

#[tokio::test]
async fn subscribe_gets_a_snapshot_then_deltas_as_bans_happen() {
    let mut c = start(|_| {}).await;
    c.post(
        "/api/v1/decisions",
        json!({"target": "203.0.113.0/24", "reason": "scan"}),
    )
    .await;
    let mut s = Stream::open(&c, 0).await;
    let Update::Snapshot(snap) = s.next().await else {
        panic!("expected a snapshot")
    };
    assert!(snap.first && snap.last);
    assert_eq!(snap.version, 1);
    assert_eq!(snap.entries.len(), 1);
    assert_eq!(
        (snap.entries[0].address.clone(), snap.entries[0].prefix_len),
        (vec![203, 0, 113, 0], 24)
    );
    s.ack(1).await;

    let (status, body) = c
        .post(
            "/api/v1/decisions",
            json!({"target": "2001:db8::1", "action": "throttle", "ttl": "1h"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        body["propagated"], true,
        "the ban answered only after it was handed to the stream"
    );
    let Update::Delta(d) = s.next().await else {
        panic!("expected a delta")
    };
    assert_eq!((d.from_version, d.version), (1, 2));
    assert_eq!(d.upserts.len(), 1);
    assert_eq!(d.upserts[0].action, Action::Throttle as i32);
    assert_eq!(d.upserts[0].prefix_len, 128);
    assert!(d.upserts[0].expires_at_ms > 0);

    c.delete("/api/v1/decisions?target=203.0.113.0/24&reason=done")
        .await;
    let Update::Delta(d) = s.next().await else {
        panic!("expected a delta")
    };
    assert_eq!((d.from_version, d.version, d.removals.len()), (2, 3, 1));
    s.ack(3).await;

    // The ack shows up in the filters list.
    let body = eventually("the ack of version 3 in the filters list", || async {
        let (_, body) = c.get("/api/v1/filters").await;
        if body["filters"][0]["version_acked"] == 3 {
            Ok(body)
        } else {
            Err(format!("ack not recorded: {body}"))
        }
    })
    .await;
    assert_eq!(body["filters"][0]["node_id"], "envoy-test");
    assert_eq!(body["filters"][0]["version_sent"], 3);
    drop(s);
    c.stop().await;
}

#[tokio::test]
async fn reconnecting_with_a_known_version_gets_only_deltas() {
    let mut c = start(|_| {}).await;
    for t in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        c.post("/api/v1/decisions", json!({"target": t})).await;
    }
    let mut s = Stream::open(&c, 2).await;
    let Update::Delta(d) = s.next().await else {
        panic!("expected a delta")
    };
    assert_eq!((d.from_version, d.version), (2, 3));
    assert_eq!(d.upserts.len(), 1);
    assert_eq!(d.upserts[0].address, vec![192, 0, 2, 3]);

    let mut s = Stream::open(&c, 3).await;
    let Update::Delta(d) = s.next().await else {
        panic!("expected an empty delta")
    };
    assert_eq!((d.from_version, d.version, d.upserts.len()), (3, 3, 0));

    let mut s = Stream::open(&c, 77).await;
    let Update::Snapshot(snap) = s.next().await else {
        panic!("unknown version → snapshot")
    };
    assert_eq!((snap.version, snap.entries.len()), (3, 3));
    c.stop().await;
}

#[tokio::test]
async fn expiry_pushes_a_removal() {
    let mut c = start(|_| {}).await;
    let mut s = Stream::open(&c, 0).await;
    let Update::Snapshot(_) = s.next().await else {
        panic!("snapshot")
    };
    c.post(
        "/api/v1/decisions",
        json!({"target": "192.0.2.77", "ttl": "1s"}),
    )
    .await;
    let Update::Delta(d) = s.next().await else {
        panic!("delta")
    };
    assert_eq!(d.upserts.len(), 1);
    let Update::Delta(d) = s.next().await else {
        panic!("delta")
    };
    assert_eq!((d.version, d.removals.len()), (2, 1));
    let (_, audit) = c.get("/api/v1/audit").await;
    assert_eq!(audit["entries"][0]["operation"], "expire");
    c.stop().await;
}

#[tokio::test]
async fn bulk_loads_arrive_as_a_chunked_snapshot() {
    let mut c = start(|cfg| cfg.decisions.snapshot_chunk_entries = 100).await;
    let mut s = Stream::open(&c, 0).await;
    let Update::Snapshot(_) = s.next().await else {
        panic!("snapshot")
    };
    let targets: Vec<String> = (0..250)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let (status, body) = c
        .post(
            "/api/v1/decisions/bulk",
            json!({"targets": targets, "origin": "list:feed.txt"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["added"], 250);
    let mut total = 0;
    for i in 0..3 {
        let Update::Snapshot(chunk) = s.next().await else {
            panic!("snapshot chunk")
        };
        assert_eq!(chunk.version, 1);
        assert_eq!(chunk.first, i == 0);
        assert_eq!(chunk.last, i == 2);
        total += chunk.entries.len();
    }
    assert_eq!(total, 250);
    c.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_keeps_data() {
    let mut c = start(|_| {}).await;
    let mut client = audit_client(&c).await;
    client.export(batch(vec![record(1)])).await.unwrap();
    let mut s = Stream::open(&c, 0).await;
    let Update::Snapshot(_) = s.next().await else {
        panic!("snapshot")
    };
    c.stop().await;
    let end = s.end(Duration::from_secs(5)).await.expect("stream ended");
    assert!(matches!(end, Ok(None) | Err(_)));
}
