//! The `warden` command line: `serve` runs the collector; every other command is a client of the
//! HTTP API (`--server`, env `WARDEN_SERVER`). Flags are validated here first, so mistakes are
//! reported with the flag's name before anything is sent.

use crate::decisions::DecisionAction;
use crate::store::query::{Cursor, DecisionFilter, StatusFilter};
use crate::report::{ReportFormat, ReportRow, to_csv};
use crate::target::Target;
use crate::time::{TimeBound, Ttl};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::fmt::Write;
use std::path::PathBuf;

/// Default API address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9090";

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
    /// The checkpoints' public key, hex [default: <data dir>/checkpoint.pub; pass your own
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
/// `<data dir>/cli.toml`, which `warden serve` writes), else the default; the token also comes
/// from `WARDEN_TOKEN`, and else from the local admin token `<data dir>/admin.token`.
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
    /// The CLI settings file [default: <data dir>/cli.toml when it exists].
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
    server: ServerArg,
    /// Only records since: a duration ago (15m, 24h) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only records before: a duration ago or an RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Client address or CIDR.
    #[arg(long)]
    ip: Option<String>,
    /// Host (authority), with or without port.
    #[arg(long)]
    host: Option<String>,
    /// Path prefix.
    #[arg(long)]
    path_prefix: Option<String>,
    /// Status code (404) or class (4xx).
    #[arg(long)]
    status: Option<String>,
    /// Request method.
    #[arg(long)]
    method: Option<String>,
    /// Principal name.
    #[arg(long)]
    principal: Option<String>,
    /// allow or deny.
    #[arg(long)]
    decision: Option<String>,
    /// Maximum number of records (per page with --all).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Continue after a previous page (its `next_cursor`, also printed on stderr).
    #[arg(long)]
    cursor: Option<String>,
    /// Every matching record, page after page (with --json, written as each page arrives).
    #[arg(long)]
    all: bool,
}

/// `warden summaries`
#[derive(Debug, Args)]
pub struct SummariesArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Only minutes since: a duration ago (15m, 24h) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only minutes before: a duration ago or an RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Client address or CIDR.
    #[arg(long)]
    ip: Option<String>,
    /// Host (authority), with or without port.
    #[arg(long)]
    host: Option<String>,
    /// Maximum number of rows.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// `warden ban`
#[derive(Debug, Args)]
pub struct BanArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Address or CIDR (omit with --file).
    #[arg(required_unless_present = "file")]
    target: Option<String>,
    /// Ban every address or CIDR in this file (one per line, # comments), as one change.
    #[arg(long, conflicts_with = "target")]
    file: Option<PathBuf>,
    /// How long (90s, 15m, 1h, 7d); default forever.
    #[arg(long)]
    ttl: Option<String>,
    /// Why.
    #[arg(long)]
    reason: Option<String>,
    /// deny (403) or throttle (429).
    #[arg(long, default_value = "deny")]
    action: String,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

/// `warden unban`
#[derive(Debug, Args)]
pub struct UnbanArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Address or CIDR, exactly as banned (after normalization).
    target: String,
    /// Why.
    #[arg(long)]
    reason: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

/// Listing commands.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArg,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
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
    server: ServerArg,
    /// Every API call (who read or changed what, refused attempts included) instead of the
    /// decision changes.
    #[arg(long)]
    api: bool,
    /// Only this actor (with --api).
    #[arg(long, requires = "api")]
    actor: Option<String>,
    /// Only operations starting with this, e.g. `decisions.` (with --api).
    #[arg(long, requires = "api")]
    operation: Option<String>,
    /// Only refused calls: 401, 403, 429 (with --api).
    #[arg(long, requires = "api")]
    refused: bool,
    /// Only entries since (15m, 24h, RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Maximum entries.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
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
    server: ServerArg,
    /// The rules file to try.
    file: PathBuf,
    /// Window start: a duration ago (24h) or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Window end.
    #[arg(long)]
    until: Option<String>,
    /// The server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

/// `warden explain`
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The client address.
    ip: String,
    /// The JSON answer instead of text.
    #[arg(long)]
    json: bool,
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
    server: ServerArg,
    /// Window start: a duration ago (30d) or an RFC 3339 time.
    #[arg(long, default_value = crate::report::DEFAULT_SINCE)]
    since: String,
    /// Window end.
    #[arg(long)]
    until: Option<String>,
    /// Only this principal.
    #[arg(long)]
    principal: Option<String>,
    /// Only this host.
    #[arg(long)]
    host: Option<String>,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    format: String,
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag or argument is invalid.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag, e.g. `--status`.
        flag: String,
        /// What is wrong.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot reach the Warden server at {server}: {reason} (is `warden serve` running?)")]
    Unreachable {
        /// The base URL.
        server: String,
        /// The underlying failure, e.g. `connection refused`.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{message} (HTTP {status})")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's error text.
        message: String,
    },
    /// A rules file is invalid; every error, one per line.
    #[error("{errors}\n{count} error(s) in {file}")]
    RulesInvalid {
        /// The file.
        file: String,
        /// The errors, one per line.
        errors: String,
        /// How many.
        count: usize,
    },
    /// `warden verify` found the trail tampered with (the report says where).
    #[error("the trail does not verify: {0} problem(s)")]
    Tampered(usize),
    /// A local file could not be read.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

fn check<T: std::str::FromStr<Err = E>, E: ToString>(
    flag: &str,
    value: &str,
) -> Result<T, CliError> {
    value.parse().map_err(|e: E| CliError::Invalid {
        flag: flag.to_string(),
        reason: e.to_string(),
    })
}

/// Adds query parameter `key` if given, after checking it parses as `T` (named `--key` if not).
fn push_checked<T: std::str::FromStr<Err = E>, E: ToString>(
    q: &mut Vec<(&'static str, String)>,
    key: &'static str,
    value: Option<String>,
) -> Result<(), CliError> {
    if let Some(v) = value {
        check::<T, _>(&format!("--{key}"), &v)?;
        q.push((key, v));
    }
    Ok(())
}

/// A client of the HTTP API.
struct Client {
    base: String,
    http: reqwest::Client,
    /// Where the token came from, for the message when the server refuses it.
    token_source: Option<String>,
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    // io::Error text carries "(os error 111)"; the plain description is what a user needs.
    match text.find(" (os error") {
        Some(i) => text[..i].to_lowercase(),
        None => text,
    }
}

fn read_file(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::File {
        path: format!("{flag} {}", path.display()),
        reason: e.to_string(),
    })
}

/// The settings a client command uses, merged from flags, environment, the settings file and
/// the local admin token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// Base URL.
    pub server: String,
    /// The bearer token, and where it came from.
    pub token: Option<(String, String)>,
    /// CA bundle.
    pub ca: Option<PathBuf>,
    /// Client certificate and key.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Connection {
    /// Resolves the settings of `arg`.
    pub fn resolve(arg: &ServerArg) -> Result<Connection, CliError> {
        let settings_file = arg
            .cli_config
            .clone()
            .or_else(|| Some(arg.data_dir.join(crate::security::local::CLI_CONFIG_FILE)))
            .filter(|p| arg.cli_config.is_some() || p.exists());
        let file: crate::security::local::CliConfig = match &settings_file {
            Some(p) => {
                let text = String::from_utf8(read_file("--cli-config", p)?).map_err(|e| {
                    CliError::File {
                        path: p.display().to_string(),
                        reason: e.to_string(),
                    }
                })?;
                toml::from_str(&text).map_err(|e| CliError::File {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            None => Default::default(),
        };
        let server = arg
            .server
            .clone()
            .or(file.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
            .trim_end_matches('/')
            .to_string();
        let token_from =
            |path: &std::path::Path, what: &str| -> Result<Option<(String, String)>, CliError> {
                let text = String::from_utf8_lossy(&read_file(what, path)?)
                    .trim()
                    .to_string();
                Ok((!text.is_empty()).then(|| (text, format!("{what} {}", path.display()))))
            };
        let env_token = std::env::var("WARDEN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| (t.trim().to_string(), "WARDEN_TOKEN".to_string()));
        let token = match (env_token, &arg.token_file, &file.token_file) {
            (Some(t), _, _) => Some(t),
            (None, Some(p), _) => token_from(p, "--token-file")?,
            (None, None, Some(p)) => token_from(p, "the token file of cli.toml")?,
            (None, None, None) => {
                let local = arg.data_dir.join(crate::security::local::ADMIN_TOKEN_FILE);
                if local.exists() {
                    token_from(&local, "the local admin token")?
                } else {
                    None
                }
            }
        };
        let identity = match (arg.cert.clone().or(file.cert), arg.key.clone().or(file.key)) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        };
        Ok(Connection {
            server,
            token,
            ca: arg.ca.clone().or(file.ca),
            identity,
        })
    }
}

impl Client {
    fn new(arg: &ServerArg) -> Result<Client, CliError> {
        let c = Connection::resolve(arg)?;
        let base = c.server.clone();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(CliError::Invalid {
                flag: "--server".into(),
                reason: format!("{base:?} is not an http:// or https:// URL"),
            });
        }
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(ca) = &c.ca {
            let pem = read_file("--ca", ca)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| CliError::File {
                path: ca.display().to_string(),
                reason: format!("not a PEM CA bundle: {e}"),
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &c.identity {
            let mut pem = read_file("--cert", cert)?;
            pem.extend(read_file("--key", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| CliError::File {
                path: cert.display().to_string(),
                reason: format!("not a PEM certificate and key: {e}"),
            })?;
            builder = builder.identity(identity);
        }
        if let Some((token, _)) = &c.token {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut value: reqwest::header::HeaderValue = format!("Bearer {token}")
                .parse()
                .map_err(|_| CliError::Invalid {
                    flag: "token".into(),
                    reason: "the token holds characters a header cannot carry".into(),
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        let http = builder.build().map_err(|e| CliError::Unreachable {
            server: base.clone(),
            reason: root_cause(&e),
        })?;
        Ok(Client {
            base,
            http,
            token_source: c.token.map(|(_, source)| source),
        })
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<String, CliError> {
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            server: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| CliError::Unreachable {
            server: self.base.clone(),
            reason: root_cause(&e),
        })?;
        if !status.is_success() {
            let mut message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            if status == reqwest::StatusCode::UNAUTHORIZED {
                message = match &self.token_source {
                    Some(source) => format!("{message} (the token came from {source})"),
                    None => format!(
                        "{message} (no token found: pass --token-file, set WARDEN_TOKEN, or run on the collector's machine where <data dir>/admin.token is)"
                    ),
                };
            }
            return Err(CliError::Server {
                status: status.as_u16(),
                message,
            });
        }
        Ok(text)
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let text = self.call(req).await?;
        serde_json::from_str(&text).map_err(|e| CliError::Server {
            status: 200,
            message: format!("unreadable answer: {e}"),
        })
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        self.json(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.json(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        self.json(
            self.http
                .delete(format!("{}{path}", self.base))
                .query(query),
        )
        .await
    }
}

/// Runs a client command, printing to stdout.
pub async fn run(command: Command) -> Result<(), CliError> {
    let out = match command {
        Command::Serve(_) => return Ok(()),
        Command::Query(a) => query(a).await?,
        Command::Summaries(a) => summaries(a).await?,
        Command::Ban(a) => ban(a).await?,
        Command::Unban(a) => {
            check::<Target, _>("<target>", &a.target)?;
            let client = Client::new(&a.server)?;
            let mut q = vec![("target", a.target)];
            if let Some(r) = a.reason {
                q.push(("reason", r));
            }
            let v = client.delete("/api/v1/decisions", &q).await?;
            if a.json {
                format!("{v}\n")
            } else {
                format!(
                    "unbanned {} (version {})\n",
                    str_of(&v["target"]),
                    v["version"]
                )
            }
        }
        Command::Decisions(a) => {
            let v = Client::new(&a.server)?
                .get("/api/v1/decisions", &[])
                .await?;
            decisions_out(&v["decisions"], a.json)
        }
        Command::Allow { command } => allow(command).await?,
        Command::Filters(a) => {
            let v = Client::new(&a.server)?.get("/api/v1/filters", &[]).await?;
            filters_out(&v, a.json)
        }
        Command::Audit(a) => {
            let mut q = vec![("limit", a.limit.to_string())];
            if let Some(s) = a.since {
                check::<TimeBound, _>("--since", &s)?;
                q.push(("since", s));
            }
            if a.api {
                if let Some(actor) = a.actor {
                    q.push(("actor", actor));
                }
                if let Some(op) = a.operation {
                    q.push(("operation", op));
                }
                if a.refused {
                    q.push(("refused", "true".into()));
                }
                let v = Client::new(&a.server)?.get("/api/v1/audit/api", &q).await?;
                api_audit_out(&v["entries"], a.json)
            } else {
                let v = Client::new(&a.server)?.get("/api/v1/audit", &q).await?;
                audit_out(&v["entries"], a.json)
            }
        }
        Command::Token { command } => token(command)?,
        Command::Verify(a) => {
            let mut report = crate::trail::verify(&a.data_dir).map_err(|e| CliError::File {
                path: a.data_dir.display().to_string(),
                reason: e.to_string(),
            })?;
            if let Some(file) = &a.checkpoints {
                let read = |p: &std::path::Path| {
                    std::fs::read_to_string(p).map_err(|e| CliError::File {
                        path: p.display().to_string(),
                        reason: e.to_string(),
                    })
                };
                let key_file = a
                    .public_key
                    .clone()
                    .unwrap_or_else(|| a.data_dir.join(crate::trail::CHECKPOINT_PUBLIC_FILE));
                crate::trail::verify_checkpoints(
                    &a.data_dir,
                    &read(file)?,
                    &read(&key_file)?,
                    &mut report,
                )
                .map_err(|e| CliError::File {
                    path: a.data_dir.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
            print!("{}", report.render());
            if !report.problems.is_empty() {
                return Err(CliError::Tampered(report.problems.len()));
            }
            String::new()
        }
        Command::Init(a) => crate::security::init::run(&a).map_err(|reason| CliError::File {
            path: a.dir.display().to_string(),
            reason,
        })?,
        Command::Report {
            command: ReportCommand::Access(a),
        } => report(a).await?,
        Command::Rules { command } => rules(command).await?,
        Command::Explain(a) => {
            check::<std::net::IpAddr, _>("<ip>", &a.ip)?;
            let v = Client::new(&a.server)?
                .get("/api/v1/explain", &[("ip", a.ip)])
                .await?;
            if a.json {
                format!("{v}\n")
            } else {
                explain_out(&v)
            }
        }
    };
    print!("{out}");
    Ok(())
}

async fn summaries(a: SummariesArgs) -> Result<String, CliError> {
    if a.limit == 0 {
        return Err(CliError::Invalid {
            flag: "--limit".into(),
            reason: "must be at least 1".into(),
        });
    }
    let mut q: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
    push_checked::<TimeBound, _>(&mut q, "since", a.since)?;
    push_checked::<TimeBound, _>(&mut q, "until", a.until)?;
    push_checked::<Target, _>(&mut q, "ip", a.ip)?;
    if let Some(host) = a.host {
        if host.is_empty() {
            return Err(CliError::Invalid {
                flag: "--host".into(),
                reason: "must not be empty".into(),
            });
        }
        q.push(("host", host));
    }
    let v = Client::new(&a.server)?.get("/api/v1/summaries", &q).await?;
    Ok(list_out(
        &v["summaries"],
        a.json,
        &[
            "MINUTE",
            "CLIENT",
            "HOST",
            "STATUS",
            "VERDICT",
            "MECHANISM",
            "REQUESTS",
            "BYTES IN",
            "BYTES OUT",
        ],
        |s| {
            vec![
                str_of(&s["minute"]),
                str_of(&s["client_address"]),
                str_of(&s["authority"]),
                str_of(&s["status_class"]),
                str_of(&s["verdict"]),
                str_of(&s["mechanism"]),
                s["requests"].to_string(),
                s["request_bytes"].to_string(),
                s["response_bytes"].to_string(),
            ]
        },
    ))
}

async fn query(a: QueryArgs) -> Result<String, CliError> {
    let mut q: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
    if a.limit == 0 {
        return Err(CliError::Invalid {
            flag: "--limit".into(),
            reason: "must be at least 1".into(),
        });
    }
    // Checked here so a typo is named by its flag before anything is sent.
    push_checked::<TimeBound, _>(&mut q, "since", a.since)?;
    push_checked::<TimeBound, _>(&mut q, "until", a.until)?;
    push_checked::<Target, _>(&mut q, "ip", a.ip)?;
    push_checked::<StatusFilter, _>(&mut q, "status", a.status)?;
    push_checked::<DecisionFilter, _>(&mut q, "decision", a.decision)?;
    for (flag, key, value) in [
        ("--host", "host", a.host),
        ("--path-prefix", "path_prefix", a.path_prefix),
        ("--method", "method", a.method),
        ("--principal", "principal", a.principal),
    ] {
        if let Some(v) = value {
            if v.is_empty() {
                return Err(CliError::Invalid {
                    flag: flag.into(),
                    reason: "must not be empty".into(),
                });
            }
            q.push((key, v));
        }
    }
    if let Some(c) = &a.cursor {
        check::<Cursor, _>("--cursor", c)?;
    }
    let client = Client::new(&a.server)?;
    let mut cursor = a.cursor;
    let mut rows: Vec<Vec<String>> = Vec::new();
    loop {
        let mut page_query = q.clone();
        if let Some(c) = &cursor {
            page_query.push(("cursor", c.clone()));
        }
        let v = client.get("/api/v1/records", &page_query).await?;
        let records = v["records"].as_array().cloned().unwrap_or_default();
        let next = v["next_cursor"].as_str().map(str::to_string);
        if a.json {
            let lines = json_lines(&records);
            if !a.all {
                more_hint(next.as_deref());
                return Ok(lines);
            }
            // Streamed: an export of millions of records is never held in memory.
            print!("{lines}");
        } else {
            rows.extend(records.iter().map(record_row));
        }
        match next {
            Some(n) if a.all => cursor = Some(n),
            next => {
                more_hint(next.as_deref());
                break;
            }
        }
    }
    if a.json {
        return Ok(String::new());
    }
    Ok(table(
        &[
            "TIME",
            "CLIENT",
            "METHOD",
            "HOST",
            "PATH",
            "STATUS",
            "DURATION",
            "PRINCIPAL",
            "DECISION",
        ],
        &rows,
    ))
}

/// Tells (on stderr, so JSON output stays clean) how to get the next page, if there is one.
fn more_hint(next: Option<&str>) {
    if let Some(n) = next {
        eprintln!("more records: --cursor {n} (or --all for every page)");
    }
}

/// One record as a table row.
fn record_row(r: &Value) -> Vec<String> {
    vec![
        str_of(&r["time"]),
        str_of(&r["client_address"]),
        str_of(&r["method"]),
        str_of(&r["authority"]),
        str_of(&r["path"]),
        r["status"].to_string(),
        duration(r["duration_us"].as_u64().unwrap_or(0)),
        principal_cell(r),
        opt_of(&r["decision"]),
    ]
}

/// The PRINCIPAL cell: the verified principal, else what the client only claimed, marked so
/// that it never reads as an identity.
fn principal_cell(r: &Value) -> String {
    match (&r["principal"], &r["claimed_user"]) {
        (Value::String(_), _) | (_, Value::Null) => opt_of(&r["principal"]),
        (_, claimed) => format!("(claimed) {}", str_of(claimed)),
    }
}

async fn ban(a: BanArgs) -> Result<String, CliError> {
    check::<DecisionAction, _>("--action", &a.action)?;
    if let Some(t) = &a.ttl {
        check::<Ttl, _>("--ttl", t)?;
    }
    let client = Client::new(&a.server)?;
    let mut body = json!({ "action": a.action });
    if let Some(t) = a.ttl {
        body["ttl"] = json!(t);
    }
    if let Some(r) = a.reason {
        body["reason"] = json!(r);
    }
    if let Some(file) = a.file {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| CliError::File {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        let mut targets = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let t: Target = check(&format!("{name}:{}", i + 1), line)?;
            targets.push(t.to_string());
        }
        let base = file
            .file_name()
            .map_or(name.clone(), |f| f.to_string_lossy().into_owned());
        body["targets"] = json!(targets);
        body["origin"] = json!(format!("list:{base}"));
        let v = client.post("/api/v1/decisions/bulk", &body).await?;
        if a.json {
            return Ok(format!("{v}\n"));
        }
        let mut out = format!(
            "banned {} targets from {name} (version {})\n",
            v["added"], v["version"]
        );
        for s in v["skipped"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "skipped {}: covered by allowlist entry {}",
                str_of(&s["target"]),
                str_of(&s["allow"])
            );
        }
        return Ok(out);
    }
    let target = a.target.unwrap_or_default();
    check::<Target, _>("<target>", &target)?;
    body["target"] = json!(target);
    let v = client.post("/api/v1/decisions", &body).await?;
    if a.json {
        return Ok(format!("{v}\n"));
    }
    let expires = v["expires_at"]
        .as_str()
        .map_or("never".to_string(), str::to_string);
    Ok(format!(
        "banned {} ({}, expires {expires}, id {}, version {})\n",
        str_of(&v["target"]),
        str_of(&v["action"]),
        v["id"],
        v["version"]
    ))
}

async fn allow(command: AllowCommand) -> Result<String, CliError> {
    match command {
        AllowCommand::Add {
            server,
            target,
            reason,
        } => {
            check::<Target, _>("<target>", &target)?;
            let body = json!({ "target": target, "reason": reason.unwrap_or_default() });
            let v = Client::new(&server)?
                .post("/api/v1/allowlist", &body)
                .await?;
            Ok(format!(
                "allowed {} (version {})\n",
                str_of(&v["target"]),
                v["version"]
            ))
        }
        AllowCommand::Remove {
            server,
            target,
            reason,
        } => {
            check::<Target, _>("<target>", &target)?;
            let mut q = vec![("target", target)];
            if let Some(r) = reason {
                q.push(("reason", r));
            }
            let v = Client::new(&server)?
                .delete("/api/v1/allowlist", &q)
                .await?;
            Ok(format!(
                "removed {} from the allowlist (version {})\n",
                str_of(&v["target"]),
                v["version"]
            ))
        }
        AllowCommand::List(a) => {
            let v = Client::new(&a.server)?
                .get("/api/v1/allowlist", &[])
                .await?;
            Ok(decisions_out(&v["entries"], a.json))
        }
    }
}

async fn report(a: ReportArgs) -> Result<String, CliError> {
    check::<TimeBound, _>("--since", &a.since)?;
    let format: ReportFormat = check("--format", &a.format)?;
    let mut q = vec![("since", a.since), ("format", "json".to_string())];
    if let Some(u) = a.until {
        check::<TimeBound, _>("--until", &u)?;
        q.push(("until", u));
    }
    if let Some(p) = a.principal {
        q.push(("principal", p));
    }
    if let Some(h) = a.host {
        q.push(("host", h));
    }
    let v = Client::new(&a.server)?
        .get("/api/v1/report/access", &q)
        .await?;
    let rows: Vec<ReportRow> =
        serde_json::from_value(v["rows"].clone()).map_err(|e| CliError::Server {
            status: 200,
            message: format!("unreadable report: {e}"),
        })?;
    Ok(match format {
        ReportFormat::Json => format!("{v}\n"),
        ReportFormat::Csv => to_csv(&rows),
        ReportFormat::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.subject.clone(),
                        r.host.clone(),
                        r.path.clone(),
                        r.requests.to_string(),
                        r.denied.to_string(),
                        r.first_seen.clone(),
                        r.last_seen.clone(),
                    ]
                })
                .collect();
            table(
                &[
                    "SUBJECT",
                    "HOST",
                    "PATH",
                    "REQUESTS",
                    "DENIED",
                    "FIRST SEEN",
                    "LAST SEEN",
                ],
                &cells,
            )
        }
    })
}

fn load_rules(file: &std::path::Path) -> Result<warden_rules::RuleSet, CliError> {
    warden_rules::RuleSet::load(file).map_err(|e| CliError::RulesInvalid {
        file: file.display().to_string(),
        count: e.0.len(),
        errors: e.to_string(),
    })
}

async fn rules(command: RulesCommand) -> Result<String, CliError> {
    match command {
        RulesCommand::Check { file } => {
            let set = load_rules(&file)?;
            let mut out = String::new();
            for rule in set.rules() {
                let _ = writeln!(out, "{}: {}", rule.name, crate::detection::summarize(rule));
            }
            let _ = writeln!(
                out,
                "{}: {} rule(s), valid",
                file.display(),
                set.rules().len()
            );
            Ok(out)
        }
        RulesCommand::Reload(a) => {
            let v = Client::new(&a.server)?
                .post("/api/v1/rules/reload", &json!({}))
                .await?;
            if a.json {
                return Ok(format!("{v}\n"));
            }
            Ok(format!(
                "rules reloaded from {} ({} rules)\n",
                str_of(&v["source"]),
                v["rules"].as_array().map_or(0, Vec::len)
            ))
        }
        RulesCommand::List(a) => {
            let v = Client::new(&a.server)?.get("/api/v1/rules", &[]).await?;
            if a.json {
                return Ok(format!("{v}\n"));
            }
            let mut out = format!(
                "source: {}\nloaded: {}\n",
                str_of(&v["source"]),
                str_of(&v["loaded_at"])
            );
            let rows: Vec<Vec<String>> = v["rules"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    vec![
                        str_of(&r["name"]),
                        str_of(&r["kind"]),
                        str_of(&r["summary"]),
                    ]
                })
                .collect();
            out.push_str(&table(&["NAME", "KIND", "RULE"], &rows));
            if !v["last_error"].is_null() {
                let _ = writeln!(
                    out,
                    "last reload refused at {} (rules above still in force):\n{}",
                    str_of(&v["last_error_at"]),
                    str_of(&v["last_error"])
                );
            }
            Ok(out)
        }
        RulesCommand::Replay(a) => {
            check::<TimeBound, _>("--since", &a.since)?;
            if let Some(u) = &a.until {
                check::<TimeBound, _>("--until", u)?;
            }
            load_rules(&a.file)?;
            let text = std::fs::read_to_string(&a.file).map_err(|e| CliError::File {
                path: a.file.display().to_string(),
                reason: e.to_string(),
            })?;
            let body = json!({ "rules_toml": text, "since": a.since, "until": a.until });
            let v = Client::new(&a.server)?
                .post("/api/v1/rules/replay", &body)
                .await?;
            if a.json {
                return Ok(format!("{v}\n"));
            }
            Ok(replay_out(&v))
        }
    }
}

fn ttl_text(ms: &Value) -> String {
    ms.as_u64().map_or_else(
        || "-".into(),
        |ms| warden_rules::config::fmt_duration(std::time::Duration::from_millis(ms)),
    )
}

fn replay_out(v: &Value) -> String {
    let items = v["decisions"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|d| {
            vec![
                d["at_ms"]
                    .as_i64()
                    .map(crate::time::rfc3339)
                    .unwrap_or_default(),
                str_of(&d["rule"]),
                str_of(&d["target"]),
                format!(
                    "{}{}",
                    str_of(&d["action"]),
                    if d["dry_run"] == true {
                        " (dry run)"
                    } else {
                        ""
                    }
                ),
                ttl_text(&d["ttl_ms"]),
                format!("{}/{}", d["observed"], d["threshold"]),
                str_of(&d["reason"]),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "TIME",
            "RULE",
            "TARGET",
            "ACTION",
            "TTL",
            "OBSERVED/THRESHOLD",
            "REASON",
        ],
        &rows,
    );
    let _ = writeln!(
        out,
        "{} decision(s) over {} record(s) from {} to {}{}",
        items.len(),
        v["records"],
        str_of(&v["since"]),
        str_of(&v["until"]),
        if v["truncated"] == true {
            " (truncated)"
        } else {
            ""
        }
    );
    out
}

fn explain_out(v: &Value) -> String {
    let mut out = String::new();
    let ip = str_of(&v["ip"]);
    let empty = Vec::new();
    let arr = |k: &str| v[k].as_array().unwrap_or(&empty).clone();
    let allow = arr("allowlist");
    let deny = arr("decisions");
    if !allow.is_empty() {
        let _ = writeln!(out, "{ip} is ALLOWLISTED (never blocked):");
        for a in &allow {
            let _ = writeln!(
                out,
                "  {} (id {}): {}",
                str_of(&a["target"]),
                a["id"],
                str_of(&a["reason"])
            );
        }
    }
    if deny.is_empty() {
        let _ = writeln!(out, "{ip} is not blocked now.");
    } else {
        let verb = if allow.is_empty() {
            "is BLOCKED"
        } else {
            "has decisions (overridden by the allowlist)"
        };
        let _ = writeln!(out, "{ip} {verb} by:");
        for d in &deny {
            let until = if d["expires_at"].is_null() {
                "forever".to_string()
            } else {
                str_of(&d["expires_at"])
            };
            let _ = writeln!(
                out,
                "  {} {} (id {}, origin {}, by {}, until {}): {}",
                str_of(&d["action"]),
                str_of(&d["target"]),
                d["id"],
                str_of(&d["origin"]),
                str_of(&d["actor"]),
                until,
                str_of(&d["reason"])
            );
        }
    }
    let dry = arr("would_block_dry_run");
    if !dry.is_empty() {
        let _ = writeln!(out, "Would be blocked by dry-run rule(s):");
        for d in &dry {
            let _ = writeln!(out, "  {}: {}", str_of(&d["rule"]), str_of(&d["reason"]));
        }
    }
    let history = arr("rule_decisions");
    if !history.is_empty() {
        let _ = writeln!(out, "Rule decisions (newest first):");
        for h in &history {
            let samples: Vec<String> = h["samples"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(str_of)
                .collect();
            let _ = writeln!(
                out,
                "  {} {} -> {} [{}]: observed {} / threshold {} in {}, repeat {}, ttl {}\n    {}\n    samples: {}",
                str_of(&h["time"]),
                str_of(&h["rule"]),
                str_of(&h["target"]),
                str_of(&h["outcome"]),
                h["observed"],
                h["threshold"],
                ttl_text(&h["window_ms"]),
                h["repeat"],
                ttl_text(&h["ttl_ms"]),
                str_of(&h["reason"]),
                if samples.is_empty() {
                    "-".into()
                } else {
                    samples.join(", ")
                }
            );
        }
    }
    let audit = arr("audit");
    if !audit.is_empty() {
        let _ = writeln!(out, "Admin changes (newest first):");
        for e in &audit {
            let _ = writeln!(
                out,
                "  {} {} {} {} by {} ({}): {}",
                str_of(&e["time"]),
                str_of(&e["operation"]),
                str_of(&e["target"]),
                opt_of(&e["action"]),
                str_of(&e["actor"]),
                str_of(&e["origin"]),
                str_of(&e["reason"])
            );
        }
    }
    out
}

/// A JSON value as terminal text: strings from clients are shown, never interpreted (see
/// [`crate::safe_text`]).
fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => crate::safe_text::terminal(s).into_owned(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn opt_of(v: &Value) -> String {
    if v.is_null() { "-".into() } else { str_of(v) }
}

/// Formats microseconds for the table: 850µs, 12.3ms, 1.20s.
pub fn duration(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Renders an aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    // Every cell is shown as data, whoever built it: an escape sequence or a line break in a
    // stored value must not repaint the terminal or forge a row.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| crate::safe_text::terminal(c).into_owned())
                .collect()
        })
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// API objects as JSON lines.
fn json_lines(items: &[Value]) -> String {
    items.iter().map(|v| format!("{v}\n")).collect()
}

/// A list of API objects as JSON lines, or as a table with one `row` per object.
fn list_out(
    items: &Value,
    as_json: bool,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> String {
    let items = items.as_array().map(Vec::as_slice).unwrap_or_default();
    if as_json {
        return json_lines(items);
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    table(headers, &rows)
}

fn decisions_out(list: &Value, as_json: bool) -> String {
    list_out(
        list,
        as_json,
        &[
            "ID", "TARGET", "ACTION", "EXPIRES", "REASON", "ORIGIN", "ACTOR", "CREATED",
        ],
        |d| {
            vec![
                d["id"].to_string(),
                str_of(&d["target"]),
                str_of(&d["action"]),
                d["expires_at"].as_str().unwrap_or("never").to_string(),
                str_of(&d["reason"]),
                str_of(&d["origin"]),
                str_of(&d["actor"]),
                str_of(&d["created_at"]),
            ]
        },
    )
}

fn filters_out(v: &Value, as_json: bool) -> String {
    let list = list_out(
        &v["filters"],
        as_json,
        &[
            "NODE",
            "WORKER",
            "INSTANCE",
            "CREDENTIAL",
            "PEER",
            "CONNECTED SINCE",
            "SENT",
            "ACKED",
            "LAST ACK",
        ],
        |f| {
            vec![
                str_of(&f["node_id"]),
                f["worker"].to_string(),
                str_of(&f["instance_id"]),
                str_of(&f["credential"]),
                str_of(&f["peer"]),
                str_of(&f["connected_since"]),
                f["version_sent"].to_string(),
                f["version_acked"].to_string(),
                opt_of(&f["last_ack"]),
            ]
        },
    );
    if as_json {
        return list;
    }
    let accounting = list_out(
        &v["accounting"],
        false,
        &[
            "NODE",
            "WORKER",
            "INSTANCE",
            "RECEIVED",
            "STORED",
            "REPEATED",
            "REFUSED",
            "SUMMARIZED",
            "DROPPED",
            "SUMMARIES",
            "GAPS",
            "LAST SEEN",
        ],
        |a| {
            vec![
                str_of(&a["node_id"]),
                a["worker"].to_string(),
                str_of(&a["instance_id"]),
                a["received"].to_string(),
                a["stored"].to_string(),
                a["duplicates"].to_string(),
                a["refused"].to_string(),
                a["dropped"]["summarized"].to_string(),
                (a["dropped"]["buffer_full"].as_u64().unwrap_or(0)
                    + a["dropped"]["batch_refused"].as_u64().unwrap_or(0))
                .to_string(),
                format!(
                    "{} ({} requests)",
                    a["summaries"]["stored"], a["summaries"]["requests"]
                ),
                a["gaps"].to_string(),
                str_of(&a["last_seen"]),
            ]
        },
    );
    format!(
        "deny-list version {}\n{list}\nrecords by filter instance since the collector started (SUMMARIZED: buffer full, counted in record summaries (`warden summaries`); DROPPED: only counted (buffer and summary table full, or a batch refused); GAPS: sequence numbers not accounted for yet)\n{accounting}",
        v["version"]
    )
}

fn audit_out(list: &Value, as_json: bool) -> String {
    list_out(
        list,
        as_json,
        &[
            "TIME",
            "ACTOR",
            "OPERATION",
            "TARGET",
            "ACTION",
            "EXPIRES",
            "REASON",
            "VERSION",
        ],
        |e| {
            vec![
                str_of(&e["time"]),
                str_of(&e["actor"]),
                str_of(&e["operation"]),
                str_of(&e["target"]),
                opt_of(&e["action"]),
                e["expires_at"].as_str().unwrap_or("-").to_string(),
                str_of(&e["reason"]),
                e["version"].to_string(),
            ]
        },
    )
}

fn api_audit_out(list: &Value, as_json: bool) -> String {
    list_out(
        list,
        as_json,
        &[
            "TIME",
            "ACTOR",
            "KIND",
            "ROLE",
            "OPERATION",
            "SOURCE",
            "STATUS",
            "OUTCOME",
        ],
        |e| {
            vec![
                str_of(&e["time"]),
                e["actor"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                    .unwrap_or("-")
                    .to_string(),
                str_of(&e["actor_kind"]),
                opt_of(&e["role"]),
                str_of(&e["operation"]),
                str_of(&e["source"]),
                e["status"].to_string(),
                str_of(&e["outcome"]),
            ]
        },
    )
}

/// `warden token new|hash`.
fn token(command: TokenCommand) -> Result<String, CliError> {
    use crate::security::credentials::{TokenHash, new_token};
    match command {
        TokenCommand::New => {
            let token = new_token().map_err(|reason| CliError::Invalid {
                flag: "token".into(),
                reason,
            })?;
            Ok(format!("{token}\n{}\n", TokenHash::of(&token).to_hex()))
        }
        TokenCommand::Hash => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                CliError::File {
                    path: "<stdin>".into(),
                    reason: e.to_string(),
                }
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(CliError::Invalid {
                    flag: "<stdin>".into(),
                    reason: "no token on standard input".into(),
                });
            }
            Ok(format!("{}\n", TokenHash::of(token).to_hex()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], &[vec!["xxxx".into(), "y".into()]]);
        assert_eq!(t, "A     LONGER\nxxxx  y\n");
    }

    #[test]
    fn durations_are_readable() {
        assert_eq!(duration(850), "850µs");
        assert_eq!(duration(12_300), "12.3ms");
        assert_eq!(duration(1_200_000), "1.20s");
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let e = check::<StatusFilter, _>("--status", "4yy").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--status: \"4yy\" is not a status code or class like 4xx"
        );
    }

    #[test]
    fn unreachable_server_message() {
        let e = CliError::Unreachable {
            server: DEFAULT_SERVER.into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach the Warden server at http://127.0.0.1:9090: connection refused (is `warden serve` running?)"
        );
    }
}
