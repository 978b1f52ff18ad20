//! An in-process collector for the integration tests: the real `serve` on 127.0.0.1:0 with its
//! data in a temporary directory, a gRPC channel to it, the HTTP API, and a Subscribe stream the
//! test drives like a filter would.

// Each test binary uses a different part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use warden_collector::config::Config;
use warden_collector::server::{Bound, ServeError, serve};
use warden_proto::pb::audit_service_client::AuditServiceClient;
use warden_proto::pb::deny_list_service_client::DenyListServiceClient;
use warden_proto::pb::{
    Ack, DenyListUpdate, FilterIdentity, FilterMessage, SubscribeRequest, deny_list_update::Update,
    filter_message,
};

/// Sends `authorization: Bearer <token>` on every gRPC call, as a filter with a token does.
#[derive(Clone)]
pub struct Bearer(pub Option<MetadataValue<Ascii>>);

impl Bearer {
    /// A bearer of `token`.
    pub fn of(token: &str) -> Bearer {
        Bearer(Some(format!("Bearer {token}").parse().unwrap()))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// An Export client that authenticates with the collector's local filter token.
pub type Audit = AuditServiceClient<InterceptedService<Channel, Bearer>>;

/// A running collector; `stop` shuts it down gracefully.
pub struct Collector {
    /// Where it listens.
    pub bound: Bound,
    /// Its configuration and data directory.
    pub dir: tempfile::TempDir,
    /// Its data directory.
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    http: reqwest::Client,
    /// The local admin token (every HTTP helper sends it).
    pub admin_token: String,
    /// The local filter token (the gRPC helpers send it).
    pub filter_token: String,
}

impl Collector {
    /// Serves `config` (whose files live in `dir`), writing a ready file into `dir`.
    pub async fn start(config: Config, dir: tempfile::TempDir) -> Collector {
        let data_dir = config.storage.data_dir.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound_tx, bound_rx) = oneshot::channel();
        let task = tokio::spawn(serve(
            config,
            Some(dir.path().join("ready.json")),
            async move {
                let _ = stopped.await;
            },
            move |b| {
                let _ = bound_tx.send(b);
            },
        ));
        let bound = bound_rx.await.expect("server started");
        let token = |file: &str| {
            std::fs::read_to_string(data_dir.join(file))
                .map(|t| t.trim().to_string())
                .unwrap_or_default()
        };
        let admin_token = token("admin.token");
        let filter_token = token("filter.token");
        Collector {
            bound,
            dir,
            data_dir,
            stop: Some(stop),
            task: Some(task),
            http: Self::http_with(Some(&admin_token)),
            admin_token,
            filter_token,
        }
    }

    /// An HTTP client sending `token` (none: no credential).
    pub fn http_with(token: Option<&str>) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .build()
            .unwrap()
    }

    /// An Export client with the local filter token.
    pub async fn audit(&self) -> Audit {
        AuditServiceClient::with_interceptor(self.channel().await, Bearer::of(&self.filter_token))
    }

    /// The ready file's contents.
    pub fn ready_file(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.path().join("ready.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Graceful shutdown, which must finish in time and without error.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("shut down in time")
                .unwrap()
                .unwrap();
        }
    }

    /// Stops this collector and serves `config` again over the same directory (a restart).
    pub async fn restarted(mut self, config: Config) -> Collector {
        self.stop().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Collector::start(config, dir).await
    }

    /// A gRPC channel to the collector.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.bound.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The HTTP API URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.bound.http)
    }

    /// `GET path`: status and JSON body (null when the body is not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// `GET path`, which must succeed: its JSON body.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert!((200..300).contains(&status), "GET {path}: {status} {body}");
        body
    }

    /// `POST path` with a JSON body: status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// `DELETE path`: status and JSON body.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.http.delete(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The filter identity the tests send as.
pub fn identity(worker: u32) -> FilterIdentity {
    FilterIdentity {
        node_id: "envoy-test".into(),
        worker,
        instance_id: "boot-1".into(),
        filter_version: "0.1.0".into(),
    }
}

/// A Subscribe stream driven by the test, as a filter would.
pub struct Stream {
    tx: mpsc::Sender<FilterMessage>,
    rx: tonic::Streaming<DenyListUpdate>,
}

impl Stream {
    /// Subscribes as [`identity`]`(0)` with `known_version`.
    pub async fn open(c: &Collector, known_version: u64) -> Stream {
        let (tx, out) = mpsc::channel(16);
        tx.send(FilterMessage {
            message: Some(filter_message::Message::Subscribe(SubscribeRequest {
                filter: Some(identity(0)),
                known_version,
            })),
        })
        .await
        .unwrap();
        let rx =
            DenyListServiceClient::with_interceptor(c.channel().await, Bearer::of(&c.filter_token))
                .subscribe(ReceiverStream::new(out))
                .await
                .unwrap()
                .into_inner();
        Stream { tx, rx }
    }

    /// The next update, within 10 s.
    pub async fn next(&mut self) -> Update {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("an update in time")
            .unwrap()
            .expect("stream open")
            .update
            .unwrap()
    }

    /// Waits up to `patience` for the stream's end: `None` if it is still open then, otherwise
    /// whether the server ended it cleanly (`Ok(None)`) or with a status (`Err`).
    pub async fn end(
        &mut self,
        patience: Duration,
    ) -> Option<Result<Option<DenyListUpdate>, tonic::Status>> {
        tokio::time::timeout(patience, self.rx.message()).await.ok()
    }

    /// Acknowledges `version`.
    pub async fn ack(&self, version: u64) {
        self.tx
            .send(FilterMessage {
                message: Some(filter_message::Message::Ack(Ack { version })),
            })
            .await
            .unwrap();
    }
}
