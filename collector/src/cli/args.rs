//! The command line's shape (clap): the subcommands, their flags and where each setting comes
//! from. Parsing only; what a command does is in [`super`].

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Warden: access auditing and inline blocking for Envoy ingress.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about)]
pub struct Cli {
    /// Log format on stderr (`RUST_LOG` sets the level).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector (gRPC for filters, HTTP API for everyone else).
    Serve(ServeArgs),
    /// List stored access records, newest first.
    Query(QueryArgs),
    /// Requests the filters could not keep as records (their buffer overflowed during an
    /// outage), counted per client, host, status class, decision and minute.
    Summaries(SummariesArgs),
    /// Deny or throttle an address or CIDR (or every line of --file).
    Ban(BanArgs),
    /// Remove the decision on an address or CIDR.
    Unban(UnbanArgs),
    /// List deny and throttle decisions.
    Decisions(ListArgs),
    /// Manage the allowlist (never blocked).
    Allow {
        /// Allowlist operation.
        #[command(subcommand)]
        command: AllowCommand,
    },
    /// List the filters connected for deny-list push.
    Filters(ListArgs),
    /// List ban, unban, expiry and allowlist changes (who, what, when, why).
    Audit(AuditArgs),
    /// Kubernetes ingress-policy changes (from the API server's audit webhook): who changed
    /// which route, policy, certificate or gateway plugin, when, and what the change did.
    Changes(ChangesArgs),
    /// Detection rules: check a file, list the rules in force, replay a file over stored records.
    Rules {
        /// Rules operation.
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Why an address is (or is not) blocked: decisions, allowlist, dry-run rules, history.
    Explain(ExplainArgs),
    /// Reports.
    Report {
        /// Which report.
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Make or hash a bearer token for `[[http.credentials]]` or `[[grpc.credentials]]`.
    Token {
        /// Token operation.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Create a CA, certificates and tokens for a first deployment (nothing is overwritten).
    Init(InitArgs),
    /// Walk the hash chains of the stored records and the decisions audit log, and name the
    /// first block or entry modified, deleted, reordered or truncated (exit 1 if any).
    Verify(VerifyArgs),
    /// Print the OpenAPI document of the HTTP API (JSON), as generated from the code.
    Openapi,
}

/// `warden verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The collector's data directory (read-only; the collector may be running).
    #[arg(long, env = "WARDEN_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Signed checkpoints to check the chains against (a copy kept elsewhere of the
    /// collector's checkpoints.jsonl).
    #[arg(long)]
    pub checkpoints: Option<PathBuf>,
    /// The checkpoints' public key, hex [default: DATA_DIR/checkpoint.pub; pass your own
    /// copy: whoever can edit the data directory can replace that one].
    #[arg(long, requires = "checkpoints")]
    pub public_key: Option<PathBuf>,
}

/// `warden token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token and, on the next line, the SHA-256 to configure.
    New,
    /// Read a token on standard input and print its SHA-256.
    Hash,
}

/// `warden init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the files.
    #[arg(long, default_value = "./data/pki")]
    pub dir: PathBuf,
    /// More names or addresses the collector is reached by (its certificate covers
    /// localhost, 127.0.0.1 and ::1 always).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// The SAN URI of the filters' client certificate.
    #[arg(long, default_value = "spiffe://warden/filter")]
    pub filter_identity: String,
    /// Certificate lifetime in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

/// `warden serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without it every setting takes its default.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// gRPC listen address (overrides grpc.listen).
    #[arg(long)]
    pub grpc_listen: Option<std::net::SocketAddr>,
    /// HTTP listen address (overrides http.listen).
    #[arg(long)]
    pub http_listen: Option<std::net::SocketAddr>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Once both listeners are bound, write {"grpc":"ADDR","http":"ADDR"} here (atomically).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Check the configuration (rules, credentials, TLS files, exposure) and exit without
    /// serving or writing anything: 0 and a summary when it would start.
    #[arg(long)]
    pub check: bool,
}

/// Where the API is and how to authenticate. Each setting comes from its flag, else its
/// environment variable, else the CLI settings file (`--cli-config`, else
/// `DATA_DIR/cli.toml`, which `warden serve` writes), else the default; the token also comes
/// from `WARDEN_TOKEN`, and else from the local admin token `DATA_DIR/admin.token`.
#[derive(Debug, Args, Default)]
pub struct ServerArg {
    /// Base URL of the Warden HTTP API [default: http://127.0.0.1:9090].
    #[arg(long, env = "WARDEN_SERVER")]
    pub server: Option<String>,
    /// A file holding the bearer token to send (the token itself may be in WARDEN_TOKEN).
    #[arg(long, env = "WARDEN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A CA bundle (PEM) to verify the API's certificate with.
    #[arg(long, env = "WARDEN_CA")]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) to present.
    #[arg(long, env = "WARDEN_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "WARDEN_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The CLI settings file [default: DATA_DIR/cli.toml when it exists].
    #[arg(long, env = "WARDEN_CLI_CONFIG")]
    pub cli_config: Option<PathBuf>,
    /// The collector's data directory on this machine, for cli.toml and the local admin token.
    #[arg(long, env = "WARDEN_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// `warden query`
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    /// Only records since: a duration ago (15m, 24h) or an RFC 3339 time.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only records before: a duration ago or an RFC 3339 time.
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Client address or CIDR.
    #[arg(long)]
    pub(crate) ip: Option<String>,
    /// Host (authority), with or without port.
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Path prefix.
    #[arg(long)]
    pub(crate) path_prefix: Option<String>,
    /// Status code (404) or class (4xx).
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Request method.
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// Principal name.
    #[arg(long)]
    pub(crate) principal: Option<String>,
    /// allow or deny.
    #[arg(long)]
    pub(crate) decision: Option<String>,
    /// Maximum number of records (per page with --all).
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Continue after a previous page (its `next_cursor`, also printed on stderr).
    #[arg(long)]
    pub(crate) cursor: Option<String>,
    /// Every matching record, page after page (with --json, written as each page arrives).
    #[arg(long)]
    pub(crate) all: bool,
}

/// `warden summaries`
#[derive(Debug, Args)]
pub struct SummariesArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    /// Only minutes since: a duration ago (15m, 24h) or an RFC 3339 time.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only minutes before: a duration ago or an RFC 3339 time.
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Client address or CIDR.
    #[arg(long)]
    pub(crate) ip: Option<String>,
    /// Host (authority), with or without port.
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Maximum number of rows.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `warden ban`
#[derive(Debug, Args)]
pub struct BanArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    /// Address or CIDR (omit with --file).
    #[arg(required_unless_present = "file")]
    pub(crate) target: Option<String>,
    /// Ban every address or CIDR in this file (one per line, # comments), as one change.
    #[arg(long, conflicts_with = "target")]
    pub(crate) file: Option<PathBuf>,
    /// How long (90s, 15m, 1h, 7d); default forever.
    #[arg(long)]
    pub(crate) ttl: Option<String>,
    /// Why.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// deny (403) or throttle (429).
    #[arg(long, default_value = "deny")]
    pub(crate) action: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `warden unban`
#[derive(Debug, Args)]
pub struct UnbanArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    /// Address or CIDR, exactly as banned (after normalization).
    pub(crate) target: String,
    /// Why.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Listing commands.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `warden allow ...`
#[derive(Debug, Subcommand)]
pub enum AllowCommand {
    /// Add an address or CIDR to the allowlist.
    Add {
        /// Where the API is.
        #[command(flatten)]
        server: ServerArg,
        /// Address or CIDR.
        target: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove an allowlist entry.
    Remove {
        /// Where the API is.
        #[command(flatten)]
        server: ServerArg,
        /// Address or CIDR.
        target: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List the allowlist.
    List(ListArgs),
}

/// `warden audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    /// Every API call (who read or changed what, refused attempts included) instead of the
    /// decision changes.
    #[arg(long)]
    pub(crate) api: bool,
    /// Only this actor (with --api).
    #[arg(long, requires = "api")]
    pub(crate) actor: Option<String>,
    /// Only operations starting with this, e.g. `decisions.` (with --api).
    #[arg(long, requires = "api")]
    pub(crate) operation: Option<String>,
    /// Only refused calls: 401, 403, 429 (with --api).
    #[arg(long, requires = "api")]
    pub(crate) refused: bool,
    /// Only entries since (15m, 24h, RFC 3339).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Maximum entries.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `warden changes`
#[derive(Debug, Args)]
pub struct ChangesArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    /// Only changes since (7d by default; 15m, 24h, RFC 3339).
    #[arg(long, default_value = "7d")]
    pub(crate) since: String,
    /// Only changes before (a duration ago or RFC 3339).
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Only this resource, as kubectl names it: ingress, httproute, gateways.networking.istio.io.
    #[arg(long)]
    pub(crate) resource: Option<String>,
    /// Only this namespace.
    #[arg(long, short = 'n')]
    pub(crate) namespace: Option<String>,
    /// Only changes by this user (`*` wildcards: `system:serviceaccount:argocd:*`).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Only changes that touched this host.
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// The changes to --host before the latest spike of its denials within --since: the
    /// answer to "what changed right before denials on this host tripled?".
    #[arg(long, requires = "host")]
    pub(crate) before_spike: bool,
    /// Bucket width of the spike search (with --before-spike).
    #[arg(long, default_value = "5m", requires = "before_spike")]
    pub(crate) bucket: String,
    /// How far before the spike to look (with --before-spike).
    #[arg(long, default_value = "1h", requires = "before_spike")]
    pub(crate) lookback: String,
    /// Only changes a `change` rule found something in.
    #[arg(long)]
    pub(crate) findings: bool,
    /// Also the RequestReceived rows of changes whose answer was logged too.
    #[arg(long)]
    pub(crate) all_stages: bool,
    /// Maximum changes.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `warden rules ...`
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate a rules file without starting anything (exit 1 and every error when invalid).
    Check {
        /// The rules file.
        file: PathBuf,
    },
    /// The rules in force on the server and the latest reload error.
    List(ListArgs),
    /// Reload the rules on the server now (admin); prints every problem when refused.
    Reload(ListArgs),
    /// What FILE would have decided over the stored records (changes nothing).
    Replay(ReplayArgs),
}

/// `warden rules replay`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    /// The rules file to try.
    pub(crate) file: PathBuf,
    /// Window start: a duration ago (24h) or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub(crate) since: String,
    /// Window end.
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// The server's JSON answer instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `warden explain`
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    /// The client address.
    pub(crate) ip: String,
    /// The JSON answer instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `warden report ...`
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Who accessed what: per principal (or client address) × host × path.
    Access(ReportArgs),
}

/// `warden report access`
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub(crate) server: ServerArg,
    /// Window start: a duration ago (30d) or an RFC 3339 time.
    #[arg(long, default_value = crate::api::model::report::DEFAULT_SINCE)]
    pub(crate) since: String,
    /// Window end.
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Only this principal.
    #[arg(long)]
    pub(crate) principal: Option<String>,
    /// Only this host.
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    pub(crate) format: String,
}
