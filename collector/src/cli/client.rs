//! The HTTP API's client: where the API is and how to authenticate ([`Connection`]), and one
//! method per endpoint, sending the [`crate::api::model`] request types and parsing the answers
//! into the response types, so a change of shape on the server does not compile here.

use super::CliError;
use super::args::ServerArg;
use crate::api::model::{
    AllowBody, AllowList, ApiAuditEntries, ApiAuditParams, AuditEntries, AuditParams, BanBody,
    BulkBanBody, BulkBanResult, ChangesPage, ChangesParams, DecisionChange, DecisionList,
    ErrorBody, ExplainParams, Explanation, FiltersResponse, RecordsPage, RecordsParams,
    RemovalParams, ReplayBody, ReplayResult, ReportParams, ReportResponse, RulesStatus,
    SummariesPage, SummariesParams,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// Default API address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9090";

/// A client of the HTTP API.
pub struct Client {
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
    /// A client with the settings of `arg` resolved ([`Connection::resolve`]).
    pub fn new(arg: &ServerArg) -> Result<Client, CliError> {
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
            let mut message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
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

    async fn parse<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CliError> {
        let text = self.call(req).await?;
        serde_json::from_str(&text).map_err(|e| CliError::Server {
            status: 200,
            message: format!("unreadable answer: {e}"),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &impl Serialize,
    ) -> Result<T, CliError> {
        self.parse(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CliError> {
        self.parse(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &impl Serialize,
    ) -> Result<T, CliError> {
        self.parse(
            self.http
                .delete(format!("{}{path}", self.base))
                .query(query),
        )
        .await
    }

    /// `GET /api/v1/records`: one page.
    pub async fn records(&self, q: &RecordsParams) -> Result<RecordsPage, CliError> {
        self.get("/api/v1/records", q).await
    }

    /// `GET /api/v1/summaries`.
    pub async fn summaries(&self, q: &SummariesParams) -> Result<SummariesPage, CliError> {
        self.get("/api/v1/summaries", q).await
    }

    /// `GET /api/v1/report/access` (as JSON).
    pub async fn access_report(&self, q: &ReportParams) -> Result<ReportResponse, CliError> {
        self.get("/api/v1/report/access", q).await
    }

    /// `GET /api/v1/decisions`.
    pub async fn decisions(&self) -> Result<DecisionList, CliError> {
        self.get("/api/v1/decisions", &NO_PARAMS).await
    }

    /// `POST /api/v1/decisions`.
    pub async fn ban(&self, body: &BanBody) -> Result<DecisionChange, CliError> {
        self.post("/api/v1/decisions", body).await
    }

    /// `POST /api/v1/decisions/bulk`.
    pub async fn ban_bulk(&self, body: &BulkBanBody) -> Result<BulkBanResult, CliError> {
        self.post("/api/v1/decisions/bulk", body).await
    }

    /// `DELETE /api/v1/decisions`.
    pub async fn unban(&self, q: &RemovalParams) -> Result<DecisionChange, CliError> {
        self.delete("/api/v1/decisions", q).await
    }

    /// `GET /api/v1/allowlist`.
    pub async fn allowlist(&self) -> Result<AllowList, CliError> {
        self.get("/api/v1/allowlist", &NO_PARAMS).await
    }

    /// `POST /api/v1/allowlist`.
    pub async fn allow_add(&self, body: &AllowBody) -> Result<DecisionChange, CliError> {
        self.post("/api/v1/allowlist", body).await
    }

    /// `DELETE /api/v1/allowlist`.
    pub async fn allow_remove(&self, q: &RemovalParams) -> Result<DecisionChange, CliError> {
        self.delete("/api/v1/allowlist", q).await
    }

    /// `GET /api/v1/filters`.
    pub async fn filters(&self) -> Result<FiltersResponse, CliError> {
        self.get("/api/v1/filters", &NO_PARAMS).await
    }

    /// `GET /api/v1/audit`.
    pub async fn audit(&self, q: &AuditParams) -> Result<AuditEntries, CliError> {
        self.get("/api/v1/audit", q).await
    }

    /// `GET /api/v1/changes`.
    pub async fn changes(&self, q: &ChangesParams) -> Result<ChangesPage, CliError> {
        self.get("/api/v1/changes", q).await
    }

    /// `GET /api/v1/audit/api`.
    pub async fn api_audit(&self, q: &ApiAuditParams) -> Result<ApiAuditEntries, CliError> {
        self.get("/api/v1/audit/api", q).await
    }

    /// `GET /api/v1/rules`.
    pub async fn rules(&self) -> Result<RulesStatus, CliError> {
        self.get("/api/v1/rules", &NO_PARAMS).await
    }

    /// `POST /api/v1/rules/reload`: the rules in force after it (null when the server cannot
    /// say).
    pub async fn reload_rules(&self) -> Result<Option<RulesStatus>, CliError> {
        self.post("/api/v1/rules/reload", &serde_json::Map::new())
            .await
    }

    /// `POST /api/v1/rules/replay`.
    pub async fn replay(&self, body: &ReplayBody) -> Result<ReplayResult, CliError> {
        self.post("/api/v1/rules/replay", body).await
    }

    /// `GET /api/v1/explain`.
    pub async fn explain(&self, q: &ExplainParams) -> Result<Explanation, CliError> {
        self.get("/api/v1/explain", q).await
    }
}

/// The query of an endpoint called without parameters.
const NO_PARAMS: [(&str, &str); 0] = [];
