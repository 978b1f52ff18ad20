//! `warden serve`: opens the stores, binds both listeners, announces them (log and ready file),
//! runs the gRPC and HTTP servers and the background tasks, and shuts down gracefully: stop
//! accepting, end the Subscribe streams, let in-flight Export calls finish their commits, then
//! stop the writer thread.

use crate::api::{AppState, router};
use crate::config::{Config, ConfigError};
use crate::db::{MAIN_DB_FILE, ReadPool, open_connection};
use crate::decisions::push::{Push, Registry};
use crate::decisions::{Decisions, expiry_task};
use crate::detection::alerts::Alerter;
use crate::detection::{Detection, RulesSource};
use crate::error::Error;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::policy_changes::ChangeLog;
use crate::security::api_auth::{ApiAuth, ApiCredential};
use crate::security::audit_log::ApiAudit;
use crate::security::conn::{AcceptOptions, Accepted, ConnInfo, HandshakeCounters};
use crate::security::credentials::{Pattern, Role, TokenHash};
use crate::security::filter_auth::{FilterAuth, FilterCaps, FilterCredential};
use crate::security::guard::{Guard, GuardSettings, guard};
use crate::security::local::{
    ADMIN_TOKEN_FILE, CliConfig, FILTER_TOKEN_FILE, ensure_token, write_cli_config,
};
use crate::security::oidc::Oidc;
use crate::security::tls::{Protocols, ReloadingTls, TlsError};
use crate::store::{Store, compaction_task, retention_task};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warden_proto::pb::audit_service_server::AuditServiceServer;
use warden_proto::pb::deny_list_service_server::DenyListServiceServer;

/// How long `warden ban` waits for a change to reach every connected filter stream.
const PROPAGATION_WAIT: Duration = Duration::from_secs(2);
/// How long shutdown waits for the servers to drain before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on filter connections, so a vanished Envoy's Subscribe stream is noticed and
/// dropped from `warden filters` even when no deny-list change is pushed to it.
const GRPC_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    #[error(transparent)]
    Store(#[from] Error),
    /// The configuration cannot be served as written (exposure, credentials, OIDC keys).
    #[error("{0}")]
    Config(String),
    /// A listener's TLS files cannot be used.
    #[error("{0}")]
    Tls(#[from] TlsError),
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
    config
        .check_exposure()
        .map_err(|e: ConfigError| ServeError::Config(e.to_string()))?;
    // Rules first: an invalid rules file must stop startup before anything is opened or bound.
    let rules_source = RulesSource::from_config(&config);
    let rules = rules_source.load()?;
    let metrics = Arc::new(Metrics::default());
    // The main database first: its open names the file when it is damaged.
    let main_db = config.storage.data_dir.join(MAIN_DB_FILE);
    std::fs::create_dir_all(&config.storage.data_dir).map_err(|e| {
        ServeError::Config(format!(
            "cannot create the data directory {}: {e}",
            config.storage.data_dir.display()
        ))
    })?;
    let main_conn = open_connection(&main_db, config.storage.synchronous)?;
    let store = Arc::new(Store::open(
        &config.storage.data_dir,
        config.storage.synchronous,
        config.storage.max_group_records,
        Arc::clone(&metrics),
    )?);
    let decisions = Decisions::open(
        main_conn,
        config.decisions.changelog_versions,
        config.decisions.snapshot_chunk_entries,
        Arc::clone(&metrics),
    )?;
    let registry = Arc::new(Registry::default());
    let security = Security::start(&config).await?;
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
    let grpc_incoming = Accepted::start(
        grpc_listener,
        security.grpc_tls.clone(),
        AcceptOptions {
            keepalive: Some(GRPC_TCP_KEEPALIVE),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        },
        Arc::clone(&security.grpc_handshakes),
        stop_rx.clone(),
        "gRPC",
    )
    .map_err(|source| ServeError::Bind {
        what: "gRPC",
        addr: config.grpc.listen,
        source,
    })?;
    let http_incoming = Accepted::start(
        http_listener,
        security.http_tls.clone(),
        AcceptOptions {
            keepalive: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        },
        Arc::clone(&security.http_handshakes),
        stop_rx.clone(),
        "HTTP",
    )
    .map_err(|source| ServeError::Bind {
        what: "HTTP",
        addr: config.http.listen,
        source,
    })?;

    let alerter = Alerter::start(&config.alerts, Arc::clone(&metrics));
    let detection = Detection::start(
        rules_source,
        rules,
        open_connection(&main_db, config.storage.synchronous)?,
        Arc::clone(&decisions),
        Arc::clone(&metrics),
        alerter.clone(),
        // What was stored was evaluated: a batch retried across this restart is not again.
        crate::store::sequences::SequenceLog::load_from(store.path())?,
    )?;
    let ingest = Ingest::new(
        Arc::clone(&store),
        config.limits.clone(),
        Arc::clone(&security.filters),
        Arc::clone(&metrics),
    )
    .with_retention(config.storage.retention.0)
    .with_detection(Arc::clone(&detection));
    let ledger = ingest.ledger();
    let changes = if config.k8s_audit.enabled {
        Some(Arc::new(ChangeLog::open(
            &config.storage.data_dir,
            config.storage.synchronous,
            &config.k8s_audit,
            Arc::clone(&detection),
            Arc::clone(&metrics),
            alerter,
        )?))
    } else {
        None
    };
    let push = Push::new(
        Arc::clone(&decisions),
        Arc::clone(&registry),
        Arc::clone(&security.filters),
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
        .serve_with_incoming_shutdown(grpc_incoming, wait_stop(stop_rx.clone()));
    let insecure = config.insecure_listeners();
    if !insecure.is_empty() {
        tracing::warn!(listeners = ?insecure, "plaintext on a non-loopback address (insecure = true): records, bans and credentials cross the network unencrypted");
    }
    let guard_state = Arc::new(Guard::new(GuardSettings {
        auth: security.api,
        audit: Arc::clone(&security.audit),
        metrics_access: config.http.metrics,
        listen: bound.http,
        allowed_hosts: config.http.allowed_hosts.clone(),
        allowed_origins: config.http.allowed_origins.clone(),
        auth_failures_per_minute: config.http.auth_failures_per_minute,
        max_body_bytes: config.http.max_body_bytes,
        max_expensive_calls: config.http.max_expensive_calls,
        k8s_audit_max_body_bytes: config.k8s_audit.max_body_bytes,
    }));
    metrics.set_security(crate::metrics::SecurityStats {
        filters: Arc::clone(&security.filters),
        guard: Arc::clone(&guard_state),
        grpc_handshakes: Arc::clone(&security.grpc_handshakes),
        http_handshakes: Arc::clone(&security.http_handshakes),
        grpc_tls: security.grpc_tls.clone(),
        http_tls: security.http_tls.clone(),
    });
    let app = router(AppState {
        store: Arc::clone(&store),
        main_db: Arc::new(ReadPool::new(main_db)),
        decisions: Arc::clone(&decisions),
        registry,
        ledger,
        metrics,
        max_query_limit: config.limits.max_query_limit,
        min_prefix_v4: config.limits.min_prefix_v4,
        min_prefix_v6: config.limits.min_prefix_v6,
        propagation_wait: PROPAGATION_WAIT,
        detection: Arc::clone(&detection),
        audit: Arc::clone(&security.audit),
        changes: changes.clone(),
        health: if insecure.is_empty() {
            "ok\n".to_string()
        } else {
            format!(
                "ok; warning: {} plaintext on a non-loopback address (insecure = true)\n",
                insecure.join(" and ")
            )
        },
    })
    .layer(axum::middleware::from_fn_with_state(guard_state, guard));
    let http = axum::serve(
        http_incoming,
        app.into_make_service_with_connect_info::<ConnInfo>(),
    )
    .with_graceful_shutdown(wait_stop(stop_rx.clone()));
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
        config.storage.dedup_window.0,
        stop_rx.clone(),
    ));
    tokio::spawn(compaction_task(Arc::clone(&store), stop_rx.clone()));
    if let Some(changes) = &changes {
        tokio::spawn(crate::policy_changes::retention_task(
            Arc::clone(changes),
            config.storage.retention.0,
            stop_rx.clone(),
        ));
    }
    if !config.storage.checkpoint_interval.0.is_zero() {
        let key = crate::trail::checkpoint_key(&config.storage.data_dir)?;
        tokio::spawn(crate::trail::checkpoint_task(
            config.storage.data_dir.clone(),
            key,
            config.storage.checkpoint_interval.0,
            stop_rx.clone(),
        ));
    }
    for tls in [security.grpc_tls.clone(), security.http_tls.clone()]
        .into_iter()
        .flatten()
    {
        tokio::spawn(tls.watch(stop_rx.clone()));
    }
    if let Some(oidc) = security.oidc.clone() {
        tokio::spawn(oidc.refresh(stop_rx.clone()));
    }
    write_cli_settings(&config, bound, security.admin_token_file.as_deref());

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
    security.audit.close();
    if let Some(changes) = &changes {
        changes.close();
    }
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

/// The security pieces `serve` builds from the configuration.
struct Security {
    filters: Arc<FilterAuth>,
    api: ApiAuth,
    oidc: Option<Arc<Oidc>>,
    audit: Arc<ApiAudit>,
    grpc_tls: Option<Arc<ReloadingTls>>,
    http_tls: Option<Arc<ReloadingTls>>,
    grpc_handshakes: Arc<HandshakeCounters>,
    http_handshakes: Arc<HandshakeCounters>,
    admin_token_file: Option<PathBuf>,
}

impl Security {
    async fn start(config: &Config) -> Result<Security, ServeError> {
        let data = &config.storage.data_dir;
        std::fs::create_dir_all(data).map_err(|e| {
            ServeError::Config(format!(
                "cannot create the data directory {}: {e}",
                data.display()
            ))
        })?;
        let everything = || -> Result<Vec<Pattern>, ServeError> {
            Ok(vec!["*".parse().map_err(ServeError::Config)?])
        };
        let mut filter_extra = Vec::new();
        if config.grpc.local_credential {
            let token = ensure_token(&data.join(FILTER_TOKEN_FILE))?;
            filter_extra.push(FilterCredential::token(
                "local",
                TokenHash::of(&token),
                everything()?,
            ));
        }
        if let Some(token) = &config.grpc.token {
            tracing::warn!(
                "grpc.token is one secret for every filter and every node id; prefer [[grpc.credentials]] with node_ids"
            );
            filter_extra.push(FilterCredential::token(
                "shared-token",
                TokenHash::of(token),
                everything()?,
            ));
        }
        let filters = Arc::new(
            FilterAuth::new(&config.grpc.credentials, filter_extra, filter_caps(config))
                .map_err(ServeError::Config)?,
        );
        if filters.is_empty() {
            tracing::warn!("no filter credential is configured: every filter will be refused");
        }
        let oidc = match &config.http.oidc {
            Some(o) => Some(Oidc::load(o).await.map_err(ServeError::Config)?),
            None => None,
        };
        let mut api_extra = Vec::new();
        let admin_token_file = config.http.local_admin.then(|| data.join(ADMIN_TOKEN_FILE));
        if let Some(file) = &admin_token_file {
            let token = ensure_token(file)?;
            api_extra.push(ApiCredential::token(
                "local-admin",
                Role::Admin,
                TokenHash::of(&token),
            ));
        }
        let api = ApiAuth::new(&config.http.credentials, api_extra, oidc.clone())
            .map_err(ServeError::Config)?;
        let audit = Arc::new(ApiAudit::open(data, config.storage.synchronous)?);
        let grpc_tls = config
            .grpc
            .tls
            .as_ref()
            .map(|t| ReloadingTls::load(t, Protocols::Http2, "gRPC"))
            .transpose()?;
        let http_tls = config
            .http
            .tls
            .as_ref()
            .map(|t| ReloadingTls::load(t, Protocols::Http1, "HTTP"))
            .transpose()?;
        Ok(Security {
            filters,
            api,
            oidc,
            audit,
            grpc_tls,
            http_tls,
            grpc_handshakes: Arc::default(),
            http_handshakes: Arc::default(),
            admin_token_file,
        })
    }
}

fn filter_caps(config: &Config) -> FilterCaps {
    FilterCaps {
        calls: config.grpc.max_calls_per_credential,
        streams: config.grpc.max_streams_per_credential,
        identities: config.grpc.max_identities_per_credential,
        identity_window_ms: i64::try_from(config.storage.dedup_window.0.as_millis())
            .unwrap_or(i64::MAX),
    }
}

/// `warden serve --check`: everything `serve` validates before it opens a store or binds a
/// port (exposure without TLS, rules, credentials, OIDC keys, TLS files), without writing
/// anything, so a configuration can be checked in CI or before a rollout. Returns a summary.
pub async fn check(config: &Config) -> Result<String, ServeError> {
    config
        .check_exposure()
        .map_err(|e: ConfigError| ServeError::Config(e.to_string()))?;
    let rules = RulesSource::from_config(config).load()?;
    let filters = FilterAuth::new(&config.grpc.credentials, Vec::new(), filter_caps(config))
        .map_err(ServeError::Config)?;
    let oidc = match &config.http.oidc {
        Some(o) => Some(Oidc::load(o).await.map_err(ServeError::Config)?),
        None => None,
    };
    ApiAuth::new(&config.http.credentials, Vec::new(), oidc).map_err(ServeError::Config)?;
    for (what, tls, protocols) in [
        ("gRPC", &config.grpc.tls, Protocols::Http2),
        ("HTTP", &config.http.tls, Protocols::Http1),
    ] {
        if let Some(t) = tls {
            ReloadingTls::load(t, protocols, what)?;
        }
    }
    let listener = |tls: &Option<crate::config::TlsConfig>| match tls {
        Some(t) if t.require_client_cert => "TLS, client certificate required",
        Some(_) => "TLS",
        None => "plaintext",
    };
    let filter_credentials = filters.len() + usize::from(config.grpc.local_credential);
    let warning = if filter_credentials == 0 && config.grpc.token.is_none() {
        "\nwarning: no filter credential is configured: every filter will be refused"
    } else {
        ""
    };
    Ok(format!(
        "configuration OK: gRPC {} ({}), {} filter credential(s); HTTP {} ({}), {} API credential(s){}{}; {} rule(s){warning}",
        config.grpc.listen,
        listener(&config.grpc.tls),
        filter_credentials + usize::from(config.grpc.token.is_some()),
        config.http.listen,
        listener(&config.http.tls),
        config.http.credentials.len() + usize::from(config.http.local_admin),
        if config.http.oidc.is_some() {
            " and OIDC"
        } else {
            ""
        },
        if config.http.local_admin {
            " (local admin token)"
        } else {
            ""
        },
        rules.rules().len(),
    ))
}

/// Writes `<data_dir>/cli.toml` so that the CLI on this machine reaches the API with the local
/// admin token (and trusts the API's CA when it speaks TLS). A failure is logged: the collector
/// serves all the same.
fn write_cli_settings(config: &Config, bound: Bound, token_file: Option<&Path>) {
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let host = match bound.http.ip() {
        ip if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_string(),
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    let tls = config.http.tls.as_ref();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let settings = CliConfig {
        server: Some(format!("{scheme}://{host}:{}", bound.http.port())),
        ca: tls.and_then(|t| t.client_ca.as_deref()).map(absolute),
        token_file: token_file.map(absolute),
        cert: None,
        key: None,
    };
    if let Err(e) = write_cli_config(&config.storage.data_dir, &settings) {
        tracing::warn!(error = %e, "cannot write the CLI settings");
    }
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
