//! `warden.toml`: every setting has a default so `warden serve` runs with no file; unknown keys and
//! bad values are errors naming the file and the key. Command-line flags override the file.

use serde::Deserialize;
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
        }
    }
}

/// `[grpc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// When set, filters must send `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Largest accepted gRPC message; must fit a full batch (10,000 records of up to 16 KiB
    /// would be 160 MiB, but real batches are far smaller, so 32 MiB by default).
    pub max_message_bytes: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            token: None,
            max_message_bytes: 32 << 20,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
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
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            synchronous: Synchronous::Full,
            retention: HumanDuration(Duration::from_secs(30 * 86_400)),
            max_group_records: 100_000,
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_records: 10_000,
            max_record_bytes: 16 * 1024,
            max_field_bytes: 8 * 1024,
            max_query_limit: 10_000,
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
        config.validate(path)?;
        Ok(config)
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
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
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
        if self.alerts.max_attempts == 0 || self.alerts.queue == 0 {
            return Err(invalid(
                "alerts.max_attempts",
                "max_attempts and queue must be greater than 0",
            ));
        }
        if self.decisions.expiry_interval.0.is_zero() {
            return Err(invalid(
                "decisions.expiry_interval",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
