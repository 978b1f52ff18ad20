//! `warden serve`: opens the stores, binds both listeners, announces them (log and ready file),
//! runs the gRPC and HTTP servers and the background tasks, and shuts down gracefully: stop
//! accepting, end the Subscribe streams, let in-flight Export calls finish their commits, then
//! stop the writer thread.

use crate::alerts::Alerter;
use crate::api::{AppState, router};
use crate::auth::BearerAuth;
use crate::config::Config;
use crate::db::{MAIN_DB_FILE, ReadPool, open_connection};
use crate::decisions::{Decisions, expiry_task};
use crate::detection::{Detection, RulesSource};
use crate::error::Error;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::push::{Push, Registry};
use crate::store::{Store, compaction_task, retention_task};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use warden_proto::pb::audit_service_server::AuditServiceServer;
use warden_proto::pb::deny_list_service_server::DenyListServiceServer;

/// How long `warden ban` waits for a change to reach every connected filter stream.
const PROPAGATION_WAIT: Duration = Duration::from_secs(2);
/// How long shutdown waits for the servers to drain before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on filter connections, so a vanished Envoy's Subscribe stream is noticed and
/// dropped from `warden filters` even when no deny-list change is pushed to it.
const GRPC_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}")]
    Bind {
        /// `gRPC` or `HTTP`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("{0}")]
    Store(#[from] Error),
    /// The rules are invalid; every problem is listed, one per line.
    #[error("invalid rules, not starting:\n{0}")]
    Rules(#[from] warden_rules::RulesErrors),
    /// The ready file could not be written.
    #[error("cannot write the ready file {path}")]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A server failed.
    #[error("{what} server failed: {message}")]
    Server {
        /// `gRPC` or `HTTP`.
        what: &'static str,
        /// The failure.
        message: String,
    },
}

/// The addresses actually bound.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Bound {
    /// gRPC listener.
    pub grpc: SocketAddr,
    /// HTTP listener.
    pub http: SocketAddr,
}

/// Writes `contents` to `path` atomically (temporary file in the same directory, then rename), so
/// a watcher never reads a partial file.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Runs the collector until `shutdown` resolves. `on_bound` is told the bound addresses (tests
/// use it instead of the ready file).
pub async fn serve(
    config: Config,
    ready_file: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send,
    on_bound: impl FnOnce(Bound) + Send,
) -> Result<(), ServeError> {
    // Rules first: an invalid rules file must stop startup before anything is opened or bound.
    let rules_source = RulesSource::from_config(&config);
    let rules = rules_source.load()?;
    let metrics = Arc::new(Metrics::default());
    let store = Arc::new(Store::open(
        &config.storage.data_dir,
        config.storage.synchronous,
        config.storage.max_group_records,
        Arc::clone(&metrics),
    )?);
    let main_db = config.storage.data_dir.join(MAIN_DB_FILE);
    let decisions = Decisions::open(
        open_connection(&main_db, config.storage.synchronous)?,
        config.decisions.changelog_versions,
        config.decisions.snapshot_chunk_entries,
        Arc::clone(&metrics),
    )?;
    let registry = Arc::new(Registry::default());
    let auth = BearerAuth::new(config.grpc.token.clone());
    let (stop_tx, stop_rx) = watch::channel(false);

    let grpc_listener = TcpListener::bind(config.grpc.listen)
        .await
        .map_err(|source| ServeError::Bind {
            what: "gRPC",
            addr: config.grpc.listen,
            source,
        })?;
    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| ServeError::Bind {
            what: "HTTP",
            addr: config.http.listen,
            source,
        })?;
    let bound = Bound {
        grpc: grpc_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                what: "gRPC",
                addr: config.grpc.listen,
                source,
            })?,
        http: http_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                what: "HTTP",
                addr: config.http.listen,
                source,
            })?,
    };

    let alerter = Alerter::start(&config.alerts, Arc::clone(&metrics));
    let detection = Detection::start(
        rules_source,
        rules,
        &main_db,
        config.storage.synchronous,
        Arc::clone(&decisions),
        Arc::clone(&metrics),
        alerter,
    )?;
    let ingest = Ingest::new(
        Arc::clone(&store),
        config.limits.clone(),
        auth.clone(),
        Arc::clone(&metrics),
    )
    .with_detection(Arc::clone(&detection));
    let push = Push::new(
        Arc::clone(&decisions),
        Arc::clone(&registry),
        auth,
        Arc::clone(&metrics),
        stop_rx.clone(),
    );
    let max = config.grpc.max_message_bytes;
    let grpc = tonic::transport::Server::builder()
        .add_service(AuditServiceServer::new(ingest).max_decoding_message_size(max))
        .add_service(
            DenyListServiceServer::new(push)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: a gRPC response is headers, data and trailers in separate writes;
            // with Nagle the last waits for Envoy's delayed ACK (40 ms), which would add 40 ms
            // to every Export round trip and to the brute-force detection loop.
            TcpIncoming::from(grpc_listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(GRPC_TCP_KEEPALIVE)),
            wait_stop(stop_rx.clone()),
        );
    let app = router(AppState {
        store: Arc::clone(&store),
        main_db: Arc::new(ReadPool::new(main_db)),
        decisions: Arc::clone(&decisions),
        registry,
        metrics,
        max_query_limit: config.limits.max_query_limit,
        propagation_wait: PROPAGATION_WAIT,
        detection: Arc::clone(&detection),
    });
    let http = axum::serve(http_listener, app).with_graceful_shutdown(wait_stop(stop_rx.clone()));
    let grpc_task = tokio::spawn(grpc);
    let http_task = tokio::spawn(async move { http.await });
    tokio::spawn(expiry_task(
        Arc::clone(&decisions),
        config.decisions.expiry_interval.0,
        stop_rx.clone(),
    ));
    tokio::spawn(Arc::clone(&detection).watch(stop_rx.clone()));
    tokio::spawn(retention_task(
        Arc::clone(&store),
        config.storage.retention.0,
        stop_rx.clone(),
    ));
    tokio::spawn(compaction_task(Arc::clone(&store), stop_rx.clone()));

    tracing::info!(grpc = %bound.grpc, http = %bound.http, data_dir = %config.storage.data_dir.display(), version = decisions.version(), "warden collector listening");
    if let Some(path) = &ready_file {
        let text =
            serde_json::json!({ "grpc": bound.grpc.to_string(), "http": bound.http.to_string() })
                .to_string();
        write_atomically(path, &text).map_err(|source| ServeError::ReadyFile {
            path: path.clone(),
            source,
        })?;
    }
    on_bound(bound);

    shutdown.await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let grpc = grpc_task.await;
        let http = http_task.await;
        (grpc, http)
    })
    .await;
    detection.close().await;
    store.close().await;
    let Ok((grpc, http)) = drained else {
        tracing::warn!("servers did not drain within {DRAIN_TIMEOUT:?}; stopped anyway");
        return Ok(());
    };
    match grpc {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(ServeError::Server {
                what: "gRPC",
                message: e.to_string(),
            });
        }
        Err(e) => {
            return Err(ServeError::Server {
                what: "gRPC",
                message: e.to_string(),
            });
        }
    }
    match http {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(ServeError::Server {
                what: "HTTP",
                message: e.to_string(),
            });
        }
        Err(e) => {
            return Err(ServeError::Server {
                what: "HTTP",
                message: e.to_string(),
            });
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
