//! `warden.toml`: every setting has a default so `warden serve` runs with no file; unknown keys and
//! bad values are errors naming the file and the key. Command-line flags override the file.

use crate::security::credentials::{Pattern, Role, TokenHash};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, bad value).
    #[error("{path}: {message}")]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// The parser's message, which names the key and shows the line.
        message: String,
    },
    /// A value parsed but is out of range.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        /// The configuration file (or `<defaults>`).
        path: PathBuf,
        /// The dotted key, e.g. `limits.max_batch_records`.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The gRPC listener the filters talk to.
    pub grpc: GrpcConfig,
    /// The HTTP API listener.
    pub http: HttpConfig,
    /// Where and how records and decisions are stored.
    pub storage: StorageConfig,
    /// Bounds on what filters and API callers may send.
    pub limits: Limits,
    /// Deny-list push settings.
    pub decisions: DecisionsConfig,
    /// Inline `[[rules]]` (validated by `warden-rules` when the rules are loaded, so errors name
    /// the rule and field).
    pub rules: Option<toml::Value>,
    /// A standalone rules file, relative to this configuration file.
    pub rules_file: Option<PathBuf>,
    /// Where rule decisions are announced.
    pub alerts: AlertsConfig,
    /// The Kubernetes API server's audit webhook (policy-change auditing).
    pub k8s_audit: K8sAuditConfig,
    /// The file this configuration was read from (`None` for the defaults); rules are reloaded
    /// from it.
    #[serde(skip)]
    pub source_path: Option<PathBuf>,
}

/// `[alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Generic JSON webhooks: each gets a POST of the rule decision plus its outcome.
    pub webhooks: Vec<String>,
    /// Alertmanager base URL (`http://host:9093`); alerts go to `/api/v2/alerts`.
    pub alertmanager_url: Option<String>,
    /// Which outcomes notify: any of `banned`, `alert`, `dry_run`, `allowlisted`, `error`.
    pub on: Vec<String>,
    /// Delivery attempts per destination before giving up (exponential backoff between them).
    pub max_attempts: u32,
    /// First retry delay; doubled after each failure.
    pub initial_backoff: HumanDuration,
    /// Alerts waiting for delivery; beyond this new ones are dropped (and counted).
    pub queue: usize,
    /// Per-request timeout.
    pub timeout: HumanDuration,
    /// Host names, addresses and CIDRs alerts may be sent to (empty: any, but loopback,
    /// link-local and metadata addresses need an entry naming them by address).
    pub allowed_destinations: Vec<String>,
}

/// Outcomes an `[alerts] on` list may name.
pub const ALERT_OUTCOMES: [&str; 5] = ["banned", "alert", "dry_run", "allowlisted", "error"];

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhooks: Vec::new(),
            alertmanager_url: None,
            on: vec!["banned".into(), "alert".into()],
            max_attempts: 5,
            initial_backoff: HumanDuration(Duration::from_millis(500)),
            queue: 1000,
            timeout: HumanDuration(Duration::from_secs(5)),
            allowed_destinations: Vec::new(),
        }
    }
}

/// `[grpc.tls]` and `[http.tls]`: TLS on a listener. Paths are relative to the configuration
/// file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// A CA bundle (PEM) client certificates are verified against.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse connections without a client certificate (mTLS).
    #[serde(default)]
    pub require_client_cert: bool,
    /// How often the files are checked for changes (certificate rotation).
    #[serde(default = "default_tls_reload")]
    pub reload_interval: HumanDuration,
}

fn default_tls_reload() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// `[[grpc.credentials]]`: a filter credential, a token or a certificate, and the Envoy node ids
/// it may send records and subscribe as.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterCredentialConfig {
    /// Named in logs, metrics and the audit trail.
    pub name: String,
    /// SHA-256 (hex) of the token the filter sends as `authorization: Bearer <token>`.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// A pattern matched against the client certificate's URI and DNS SANs and common name.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Node id patterns this credential covers (`ingress-*`); required.
    #[serde(default)]
    pub node_ids: Vec<String>,
}

/// `[[http.credentials]]`: an API caller's token or certificate and its role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiCredentialConfig {
    /// The actor name the audit trail records.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: Role,
    /// SHA-256 (hex) of the bearer token.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// A pattern matched against the client certificate's URI and DNS SANs and common name.
    #[serde(default)]
    pub certificate: Option<String>,
}

/// `[http.oidc]`: bearer JWTs from an OpenID Connect issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// The issuer's keys (JWKS JSON), a file relative to the configuration file...
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// ...or fetched from a URL (and refetched every `jwks_refresh`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The claim that names the caller's roles (a string or a list of strings).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Claim values to roles; when empty the claim values must be role names.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// How often the keys are reloaded.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: HumanDuration,
}

fn default_role_claim() -> String {
    "warden_role".into()
}

fn default_jwks_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

/// A number per role, e.g. `{ viewer = 2, operator = 4, admin = 8 }`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PerRole {
    /// For viewers.
    pub viewer: usize,
    /// For operators.
    pub operator: usize,
    /// For admins.
    pub admin: usize,
}

impl PerRole {
    /// The value for `role`.
    pub fn get(&self, role: Role) -> usize {
        match role {
            Role::Viewer => self.viewer,
            Role::Operator => self.operator,
            Role::Admin => self.admin,
            // Its one endpoint has its own limits (`[k8s_audit]`); no share of these.
            Role::K8sAudit => 0,
        }
    }
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Anyone who reaches the listener (counts only; no records, addresses or names).
    #[default]
    Open,
    /// Any authenticated caller.
    Authenticated,
}

/// `[grpc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// TLS, and client certificates for filters.
    pub tls: Option<TlsConfig>,
    /// Allow a non-loopback listen address without TLS (records and bans in plaintext).
    pub insecure: bool,
    /// Filter credentials.
    pub credentials: Vec<FilterCredentialConfig>,
    /// A shared token every filter may use for any node id (prefer `credentials`).
    pub token: Option<String>,
    /// Create `<data_dir>/filter.token`, a credential for filters on this machine covering
    /// every node id (the demo and a first deployment use it).
    pub local_credential: bool,
    /// Largest accepted gRPC message; must fit a full batch (10,000 records of up to 16 KiB
    /// would be 160 MiB, but real batches are far smaller, so 32 MiB by default).
    pub max_message_bytes: usize,
    /// Export calls in progress at once per credential.
    pub max_calls_per_credential: usize,
    /// Subscribe streams open at once per credential.
    pub max_streams_per_credential: usize,
    /// Distinct filter identities (node id, worker, instance) one credential may send records
    /// as within `storage.dedup_window`: each costs the collector a little state, so a
    /// credential covering `*` cannot invent them without bound.
    pub max_identities_per_credential: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            tls: None,
            insecure: false,
            credentials: Vec::new(),
            token: None,
            local_credential: true,
            max_message_bytes: 32 << 20,
            max_calls_per_credential: 64,
            max_streams_per_credential: 1024,
            max_identities_per_credential: 10_000,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// TLS, and client certificates for API callers.
    pub tls: Option<TlsConfig>,
    /// Allow a non-loopback listen address without TLS.
    pub insecure: bool,
    /// API credentials.
    pub credentials: Vec<ApiCredentialConfig>,
    /// JWTs from an OIDC issuer.
    pub oidc: Option<OidcConfig>,
    /// Create `<data_dir>/admin.token`, an admin credential readable only by the collector's
    /// user, which the CLI on the same machine finds.
    pub local_admin: bool,
    /// Who may read `/metrics`.
    pub metrics: MetricsAccess,
    /// Origins (`https://console.example.com`) allowed to call the API from a browser.
    pub allowed_origins: Vec<String>,
    /// Host names the API answers to, besides the listen address and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// Failed authentications per source address per minute before it is refused for a while.
    pub auth_failures_per_minute: u32,
    /// Largest request body per role.
    pub max_body_bytes: PerRole,
    /// Expensive calls (record queries, reports, bulk bans, replays) in progress per role.
    pub max_expensive_calls: PerRole,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            tls: None,
            insecure: false,
            credentials: Vec::new(),
            oidc: None,
            local_admin: true,
            metrics: MetricsAccess::Open,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            auth_failures_per_minute: 10,
            max_body_bytes: PerRole {
                viewer: 1 << 20,
                operator: 256 << 20,
                admin: 256 << 20,
            },
            max_expensive_calls: PerRole {
                viewer: 2,
                operator: 4,
                admin: 8,
            },
        }
    }
}

/// SQLite's `synchronous` setting for the record store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged batch survives power loss. The default, because an
    /// acknowledgement promises durability.
    #[default]
    Full,
    /// fsync at WAL checkpoints only: survives process crashes, may lose the last commits on
    /// power loss. Faster.
    Normal,
    /// No fsync at all. For benchmarks only.
    Off,
}

impl Synchronous {
    /// The pragma value.
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory holding `warden.db` and `records.db` (created if missing).
    pub data_dir: PathBuf,
    /// See [`Synchronous`].
    pub synchronous: Synchronous,
    /// Records older than this are deleted; `0` keeps them forever.
    pub retention: HumanDuration,
    /// Upper bound on records per group commit, to bound commit latency.
    pub max_group_records: usize,
    /// How long a filter identity's stored sequence numbers are remembered after it last sent
    /// a batch (retries of an unacknowledged batch come within minutes; a filter restarted gets
    /// a new instance id).
    pub dedup_window: HumanDuration,
    /// How often the heads of the trail's hash chains are signed into `checkpoints.jsonl`
    /// (`"0"`: never).
    pub checkpoint_interval: HumanDuration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            synchronous: Synchronous::Full,
            retention: HumanDuration(Duration::from_secs(30 * 86_400)),
            max_group_records: 100_000,
            dedup_window: HumanDuration(Duration::from_secs(86_400)),
            checkpoint_interval: HumanDuration(Duration::from_secs(300)),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Records per Export batch.
    pub max_batch_records: usize,
    /// Encoded size of one record.
    pub max_record_bytes: usize,
    /// Length of the authority, path, user agent and other free-text fields.
    pub max_field_bytes: usize,
    /// Largest `limit` a query may ask for.
    pub max_query_limit: usize,
    /// Shortest IPv4 prefix a ban or allowlist entry may cover (`0.0.0.0/1` would block or
    /// admit half the Internet).
    pub min_prefix_v4: u8,
    /// Shortest IPv6 prefix a ban or allowlist entry may cover.
    pub min_prefix_v6: u8,
    /// How far in the future a record's time may be (filters' clocks drift a little); a record
    /// further ahead is refused, so one forged time cannot move the rules engine's clock.
    pub max_clock_skew: HumanDuration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_records: 10_000,
            max_record_bytes: 16 * 1024,
            max_field_bytes: 8 * 1024,
            max_query_limit: 10_000,
            min_prefix_v4: 8,
            min_prefix_v6: 32,
            max_clock_skew: HumanDuration(Duration::from_secs(300)),
        }
    }
}

/// `[k8s_audit]`: receiving the Kubernetes API server's audit webhook (`POST /api/v1/k8s-audit`,
/// callers with the `k8s-audit` role only) and keeping the ingress-policy changes in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K8sAuditConfig {
    /// Accept audit events. When false the endpoint answers 403 naming this setting, so that a
    /// misconfigured API server's log says why its events are refused.
    pub enabled: bool,
    /// Largest `EventList` body. The API server's batches are at most 400 events by default,
    /// and one event of a large object can reach a few hundred KiB; a larger body is answered 413.
    pub max_body_bytes: usize,
    /// Events per body at most; more is answered 413.
    pub max_events: usize,
    /// What to keep: `resource.group` as kubectl spells it (`ingresses.networking.k8s.io`, core
    /// resources without a group: `configmaps`), optionally `/name-pattern`
    /// (`configmaps/warden*`), and `secrets:tls` for Secrets of type `kubernetes.io/tls`.
    /// Absent: the default list (ingress, Gateway API, Istio and Envoy Gateway policy kinds, TLS
    /// Secrets, Warden's own ConfigMaps and Secrets).
    pub keep: Option<Vec<String>>,
}

impl Default for K8sAuditConfig {
    fn default() -> Self {
        K8sAuditConfig {
            enabled: false,
            max_body_bytes: 12 << 20,
            max_events: 10_000,
            keep: None,
        }
    }
}

impl K8sAuditConfig {
    /// The keep list, parsed (the default when none is configured).
    pub fn keep_list(&self) -> Result<warden_k8s_audit::KeepList, String> {
        match &self.keep {
            Some(entries) => warden_k8s_audit::KeepList::parse(entries),
            None => Ok(warden_k8s_audit::KeepList::default_list()),
        }
    }
}

/// `[decisions]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionsConfig {
    /// How many versions of deltas to keep in memory for reconnecting filters.
    pub changelog_versions: usize,
    /// Entries per snapshot chunk.
    pub snapshot_chunk_entries: usize,
    /// How often expired decisions are removed (and removal deltas pushed).
    pub expiry_interval: HumanDuration,
}

impl Default for DecisionsConfig {
    fn default() -> Self {
        DecisionsConfig {
            changelog_versions: 10_000,
            snapshot_chunk_entries: 10_000,
            expiry_interval: HumanDuration(Duration::from_secs(1)),
        }
    }
}

/// Exactly one of a token hash and a certificate pattern, each valid.
fn check_secret(token: &Option<String>, certificate: &Option<String>) -> Result<(), String> {
    match (token, certificate) {
        (Some(t), None) => t
            .parse::<TokenHash>()
            .map(|_| ())
            .map_err(|e| format!("token_sha256 {e}")),
        (None, Some(c)) => c
            .parse::<Pattern>()
            .map(|_| ())
            .map_err(|e| format!("certificate: {e}")),
        _ => Err("set exactly one of token_sha256 and certificate".into()),
    }
}

/// A duration written like `30d` or `15m` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "0" {
            return Ok(HumanDuration(Duration::ZERO));
        }
        crate::time::parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Loads `path`, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            let config = Config::default();
            config.validate(Path::new("<defaults>"))?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses `text` as the contents of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.source_path = Some(path.to_path_buf());
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config.validate(path)?;
        Ok(config)
    }

    /// Makes the TLS and JWKS paths absolute, relative to the configuration file's directory.
    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        for tls in [self.grpc.tls.as_mut(), self.http.tls.as_mut()]
            .into_iter()
            .flatten()
        {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
            if let Some(ca) = tls.client_ca.as_mut() {
                resolve(ca);
            }
        }
        if let Some(file) = self.http.oidc.as_mut().and_then(|o| o.jwks_file.as_mut()) {
            resolve(file);
        }
    }

    /// Refuses a listener on a non-loopback address without TLS unless `insecure` says so:
    /// records, bans and credentials would cross the network in plaintext.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        let path = self
            .source_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<defaults>"));
        let listeners = [
            (
                "grpc.listen",
                "grpc",
                self.grpc.listen,
                self.grpc.tls.is_some(),
                self.grpc.insecure,
            ),
            (
                "http.listen",
                "http",
                self.http.listen,
                self.http.tls.is_some(),
                self.http.insecure,
            ),
        ];
        for (key, section, addr, tls, insecure) in listeners {
            if !addr.ip().is_loopback() && !tls && !insecure {
                return Err(ConfigError::Invalid {
                    path,
                    key,
                    reason: format!(
                        "{addr} is not a loopback address and [{section}.tls] is not configured: \
                         configure [{section}.tls] (cert and key; `warden init` creates them) or set \
                         {section}.insecure = true to accept plaintext"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The listeners that accept plaintext on a non-loopback address because `insecure` is set.
    pub fn insecure_listeners(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.grpc.listen.ip().is_loopback() && self.grpc.tls.is_none() {
            out.push("grpc");
        }
        if !self.http.listen.ip().is_loopback() && self.http.tls.is_none() {
            out.push("http");
        }
        out
    }

    /// Range checks that serde cannot express.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            reason: reason.to_string(),
        };
        let positive = [
            ("limits.max_batch_records", self.limits.max_batch_records),
            ("limits.max_record_bytes", self.limits.max_record_bytes),
            ("limits.max_field_bytes", self.limits.max_field_bytes),
            ("limits.max_query_limit", self.limits.max_query_limit),
            ("storage.max_group_records", self.storage.max_group_records),
            (
                "decisions.changelog_versions",
                self.decisions.changelog_versions,
            ),
            (
                "decisions.snapshot_chunk_entries",
                self.decisions.snapshot_chunk_entries,
            ),
            ("grpc.max_message_bytes", self.grpc.max_message_bytes),
            ("k8s_audit.max_body_bytes", self.k8s_audit.max_body_bytes),
            ("k8s_audit.max_events", self.k8s_audit.max_events),
            (
                "grpc.max_identities_per_credential",
                self.grpc.max_identities_per_credential,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        // Filters build records up to the contract's sizes; a collector accepting less would
        // refuse records a filter legitimately built.
        for (key, value, floor) in [
            (
                "limits.max_record_bytes",
                self.limits.max_record_bytes,
                warden_proto::contract::MAX_RECORD_BYTES,
            ),
            (
                "limits.max_field_bytes",
                self.limits.max_field_bytes,
                warden_proto::contract::MAX_FIELD_BYTES,
            ),
        ] {
            if value < floor {
                return Err(invalid(
                    key,
                    &format!("must be at least {floor}: filters build records up to that size"),
                ));
            }
        }
        if self.storage.dedup_window.0.is_zero() {
            return Err(invalid("storage.dedup_window", "must be greater than 0"));
        }
        if self
            .grpc
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(invalid(
                "grpc.token",
                "must not be empty (omit it to disable)",
            ));
        }
        for outcome in &self.alerts.on {
            if !ALERT_OUTCOMES.contains(&outcome.as_str()) {
                return Err(invalid(
                    "alerts.on",
                    &format!(
                        "{outcome:?} is not an outcome ({})",
                        ALERT_OUTCOMES.join(", ")
                    ),
                ));
            }
        }
        for url in self
            .alerts
            .webhooks
            .iter()
            .chain(&self.alerts.alertmanager_url)
        {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(invalid("alerts", &format!("{url:?} is not an http:// URL")));
            }
        }
        if let Err(reason) =
            crate::security::outbound::Destinations::parse(&self.alerts.allowed_destinations)
        {
            return Err(invalid("alerts.allowed_destinations", &reason));
        }
        if self.alerts.max_attempts == 0 || self.alerts.queue == 0 {
            return Err(invalid(
                "alerts.max_attempts",
                "max_attempts and queue must be greater than 0",
            ));
        }
        if let Err(reason) = self.k8s_audit.keep_list() {
            return Err(invalid("k8s_audit.keep", &reason));
        }
        if self.k8s_audit.max_body_bytes > warden_k8s_audit::MAX_BODY_BYTES {
            return Err(invalid(
                "k8s_audit.max_body_bytes",
                &format!("at most {}", warden_k8s_audit::MAX_BODY_BYTES),
            ));
        }
        if self.k8s_audit.max_events > warden_k8s_audit::MAX_EVENTS {
            return Err(invalid(
                "k8s_audit.max_events",
                &format!("at most {}", warden_k8s_audit::MAX_EVENTS),
            ));
        }
        if self.k8s_audit.enabled
            && !self
                .http
                .credentials
                .iter()
                .any(|c| c.role == Role::K8sAudit)
        {
            return Err(invalid(
                "k8s_audit.enabled",
                "no [[http.credentials]] entry has role = \"k8s-audit\": nothing could post audit events (add the API server's certificate or token; see envoy/kubernetes/audit/)",
            ));
        }
        if self.decisions.expiry_interval.0.is_zero() {
            return Err(invalid(
                "decisions.expiry_interval",
                "must be greater than 0",
            ));
        }
        self.validate_security(path)
    }

    /// The TLS, credential and OIDC sections.
    fn validate_security(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            reason,
        };
        for (key, tls) in [("grpc.tls", &self.grpc.tls), ("http.tls", &self.http.tls)] {
            if let Some(t) = tls
                && t.require_client_cert
                && t.client_ca.is_none()
            {
                return Err(invalid(
                    key,
                    "require_client_cert needs client_ca (the CA bundle client certificates are verified against)".into(),
                ));
            }
        }
        let has_client_ca =
            |tls: &Option<TlsConfig>| tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let mut names = std::collections::HashSet::new();
        for c in &self.grpc.credentials {
            let what = |reason: &str| format!("credential {:?}: {reason}", c.name);
            if c.name.trim().is_empty() || !names.insert(c.name.as_str()) {
                return Err(invalid(
                    "grpc.credentials",
                    what("names must be unique and not empty"),
                ));
            }
            check_secret(&c.token_sha256, &c.certificate)
                .map_err(|r| invalid("grpc.credentials", what(&r)))?;
            if c.certificate.is_some() && !has_client_ca(&self.grpc.tls) {
                return Err(invalid(
                    "grpc.credentials",
                    what("a certificate credential needs [grpc.tls] client_ca"),
                ));
            }
            if c.node_ids.is_empty() {
                return Err(invalid(
                    "grpc.credentials",
                    what("node_ids must name the node ids it may use (\"*\" for all)"),
                ));
            }
            for n in &c.node_ids {
                n.parse::<Pattern>()
                    .map_err(|e| invalid("grpc.credentials", what(&format!("node_ids: {e}"))))?;
            }
        }
        let mut names = std::collections::HashSet::new();
        for c in &self.http.credentials {
            let what = |reason: &str| format!("credential {:?}: {reason}", c.name);
            if c.name.trim().is_empty() || !names.insert(c.name.as_str()) {
                return Err(invalid(
                    "http.credentials",
                    what("names must be unique and not empty"),
                ));
            }
            check_secret(&c.token_sha256, &c.certificate)
                .map_err(|r| invalid("http.credentials", what(&r)))?;
            if c.certificate.is_some() && !has_client_ca(&self.http.tls) {
                return Err(invalid(
                    "http.credentials",
                    what("a certificate credential needs [http.tls] client_ca"),
                ));
            }
        }
        if let Some(o) = &self.http.oidc {
            if o.issuer.trim().is_empty() || o.audience.trim().is_empty() {
                return Err(invalid(
                    "http.oidc",
                    "issuer and audience are required".into(),
                ));
            }
            match (&o.jwks_file, &o.jwks_url) {
                (Some(_), None) => {}
                (None, Some(u)) if u.starts_with("https://") || u.starts_with("http://") => {}
                (None, Some(u)) => {
                    return Err(invalid(
                        "http.oidc",
                        format!("jwks_url {u:?} is not an http(s) URL"),
                    ));
                }
                _ => {
                    return Err(invalid(
                        "http.oidc",
                        "exactly one of jwks_file and jwks_url is required".into(),
                    ));
                }
            }
            if o.role_claim.trim().is_empty() {
                return Err(invalid("http.oidc", "role_claim must not be empty".into()));
            }
            if let Some((claim, _)) = o.roles.iter().find(|(_, r)| **r == Role::K8sAudit) {
                return Err(invalid(
                    "http.oidc.roles",
                    format!(
                        "{claim:?} maps to k8s-audit, which only a configured credential of the API server may have (http.credentials)"
                    ),
                ));
            }
        }
        if self.limits.min_prefix_v4 > 32 || self.limits.min_prefix_v6 > 128 {
            return Err(invalid(
                "limits.min_prefix_v4",
                "min_prefix_v4 is at most 32 and min_prefix_v6 at most 128".into(),
            ));
        }
        if self.http.auth_failures_per_minute == 0 {
            return Err(invalid(
                "http.auth_failures_per_minute",
                "must be greater than 0".into(),
            ));
        }
        for (key, v) in [
            ("http.max_body_bytes", self.http.max_body_bytes),
            ("http.max_expensive_calls", self.http.max_expensive_calls),
        ] {
            if v.viewer == 0 || v.operator == 0 || v.admin == 0 {
                return Err(invalid(
                    key,
                    "every role's value must be greater than 0".into(),
                ));
            }
        }
        if self.grpc.max_calls_per_credential == 0 || self.grpc.max_streams_per_credential == 0 {
            return Err(invalid(
                "grpc.max_calls_per_credential",
                "max_calls_per_credential and max_streams_per_credential must be greater than 0"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid_and_shows_the_defaults() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/warden.example.toml"));
        let text = std::fs::read_to_string(path).unwrap();
        let example = Config::parse(&text, path).unwrap();
        let defaults = Config::parse("", path).unwrap();
        assert_eq!(
            format!("{:?}", example.grpc),
            format!("{:?}", defaults.grpc)
        );
        assert_eq!(
            format!("{:?}", example.http),
            format!("{:?}", defaults.http)
        );
        assert_eq!(
            format!("{:?}", example.storage),
            format!("{:?}", defaults.storage)
        );
        assert_eq!(
            format!("{:?}", example.limits),
            format!("{:?}", defaults.limits)
        );
        assert_eq!(
            format!("{:?}", example.alerts),
            format!("{:?}", defaults.alerts)
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", Path::new("warden.toml")).unwrap();
        assert_eq!(c.grpc.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.storage.synchronous, Synchronous::Full);
        assert_eq!(c.limits.max_batch_records, 10_000);
    }

    #[test]
    fn values_are_read() {
        let c = Config::parse(
            "[grpc]\nlisten = \"0.0.0.0:7000\"\ntoken = \"s3cret\"\n[storage]\nretention = \"7d\"\nsynchronous = \"normal\"\n",
            Path::new("w.toml"),
        )
        .unwrap();
        assert_eq!(c.grpc.token.as_deref(), Some("s3cret"));
        assert_eq!(c.storage.retention.0, Duration::from_secs(7 * 86_400));
        assert_eq!(c.storage.synchronous, Synchronous::Normal);
    }

    #[test]
    fn unknown_keys_name_the_file_and_key() {
        let e = Config::parse("[grpc]\nlisten_addr = \"x\"\n", Path::new("w.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("w.toml: "), "{msg}");
        assert!(msg.contains("listen_addr"), "{msg}");
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        let e = Config::parse("[storage]\nretention = \"1x\"\n", Path::new("w.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("w.toml") && msg.contains("retention") && msg.contains("\"1x\""),
            "{msg}"
        );
        let e =
            Config::parse("[limits]\nmax_batch_records = 0\n", Path::new("w.toml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "w.toml: limits.max_batch_records: must be greater than 0"
        );
    }
}
