//! The `warden` command line: `serve` runs the collector; every other command but `token`,
//! `init`, `verify`, `rules check` and `openapi` is a client of the HTTP API (`--server`, env
//! `WARDEN_SERVER`). Flags are validated here first, so mistakes are reported with the flag's
//! name before anything is sent.
//!
//! Files: [`args`] (the clap types), [`client`] (the connection settings and one typed call per
//! endpoint, in the [`crate::api::model`] types), [`render`] (tables, JSON lines and text
//! answers); this module runs each command.

pub mod args;
pub mod client;
pub mod render;

pub use args::*;
pub use client::{Client, Connection, DEFAULT_SERVER};

use crate::api::model::{
    AllowBody, ApiAuditParams, AuditParams, BanBody, BulkBanBody, ChangesParams, ExplainParams,
    RecordsParams, RemovalParams, ReplayBody, ReportFormat, ReportParams, SummariesParams, to_csv,
};
use crate::decisions::DecisionAction;
use crate::store::query::{Cursor, DecisionFilter, StatusFilter};
use crate::target::Target;
use crate::time::{TimeBound, Ttl};
use render::json_line;
use std::fmt::Write;

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

/// Parses `value` as `T`, naming `flag` in the error.
fn check<T: std::str::FromStr<Err = E>, E: ToString>(
    flag: &str,
    value: &str,
) -> Result<T, CliError> {
    value.parse().map_err(|e: E| CliError::Invalid {
        flag: flag.to_string(),
        reason: e.to_string(),
    })
}

/// `value` if given, after checking it parses as `T` (named `flag` if not).
fn checked<T: std::str::FromStr<Err = E>, E: ToString>(
    flag: &str,
    value: Option<String>,
) -> Result<Option<String>, CliError> {
    if let Some(v) = &value {
        check::<T, _>(flag, v)?;
    }
    Ok(value)
}

/// `value` if given, refused when empty.
fn non_empty(flag: &str, value: Option<String>) -> Result<Option<String>, CliError> {
    match value {
        Some(v) if v.is_empty() => Err(CliError::Invalid {
            flag: flag.into(),
            reason: "must not be empty".into(),
        }),
        v => Ok(v),
    }
}

fn at_least_one(limit: usize) -> Result<usize, CliError> {
    if limit == 0 {
        return Err(CliError::Invalid {
            flag: "--limit".into(),
            reason: "must be at least 1".into(),
        });
    }
    Ok(limit)
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
            let v = Client::new(&a.server)?
                .unban(&RemovalParams {
                    target: a.target,
                    reason: a.reason,
                })
                .await?;
            if a.json {
                json_line(&v)
            } else {
                render::changed("unbanned", &v, "")
            }
        }
        Command::Decisions(a) => {
            let v = Client::new(&a.server)?.decisions().await?;
            render::decisions_out(&v.decisions, a.json)
        }
        Command::Allow { command } => allow(command).await?,
        Command::Filters(a) => {
            let v = Client::new(&a.server)?.filters().await?;
            render::filters_out(&v, a.json)
        }
        Command::Audit(a) => audit(a).await?,
        Command::Changes(a) => changes(a).await?,
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
                .explain(&ExplainParams { ip: a.ip })
                .await?;
            if a.json {
                json_line(&v)
            } else {
                render::explain_out(&v)
            }
        }
        Command::Openapi => openapi()?,
    };
    print!("{out}");
    Ok(())
}

/// `warden openapi`: the document `docs/openapi.json` holds, generated from the code.
pub fn openapi() -> Result<String, CliError> {
    let mut text = crate::api::openapi()
        .to_pretty_json()
        .map_err(|e| CliError::Invalid {
            flag: "openapi".into(),
            reason: e.to_string(),
        })?;
    text.push('\n');
    Ok(text)
}

async fn summaries(a: SummariesArgs) -> Result<String, CliError> {
    let q = SummariesParams {
        limit: Some(at_least_one(a.limit)?),
        since: checked::<TimeBound, _>("--since", a.since)?,
        until: checked::<TimeBound, _>("--until", a.until)?,
        ip: checked::<Target, _>("--ip", a.ip)?,
        host: non_empty("--host", a.host)?,
    };
    let v = Client::new(&a.server)?.summaries(&q).await?;
    Ok(render::summaries_out(&v.summaries, a.json))
}

async fn query(a: QueryArgs) -> Result<String, CliError> {
    // Checked here so a typo is named by its flag before anything is sent.
    let mut q = RecordsParams {
        limit: Some(at_least_one(a.limit)?),
        since: checked::<TimeBound, _>("--since", a.since)?,
        until: checked::<TimeBound, _>("--until", a.until)?,
        ip: checked::<Target, _>("--ip", a.ip)?,
        status: checked::<StatusFilter, _>("--status", a.status)?,
        decision: checked::<DecisionFilter, _>("--decision", a.decision)?,
        host: non_empty("--host", a.host)?,
        path_prefix: non_empty("--path-prefix", a.path_prefix)?,
        method: non_empty("--method", a.method)?,
        principal: non_empty("--principal", a.principal)?,
        cursor: checked::<Cursor, _>("--cursor", a.cursor)?,
    };
    let client = Client::new(&a.server)?;
    let mut rows: Vec<Vec<String>> = Vec::new();
    loop {
        let page = client.records(&q).await?;
        if a.json {
            let lines = render::json_lines(&page.records);
            if !a.all {
                more_hint(page.next_cursor.as_deref());
                return Ok(lines);
            }
            // Streamed: an export of millions of records is never held in memory.
            print!("{lines}");
        } else {
            rows.extend(page.records.iter().map(render::record_row));
        }
        match page.next_cursor {
            Some(n) if a.all => q.cursor = Some(n),
            next => {
                more_hint(next.as_deref());
                break;
            }
        }
    }
    if a.json {
        return Ok(String::new());
    }
    Ok(render::table(&render::RECORD_HEADERS, &rows))
}

/// Tells (on stderr, so JSON output stays clean) how to get the next page, if there is one.
fn more_hint(next: Option<&str>) {
    if let Some(n) = next {
        eprintln!(
            "more records: --cursor {} (or --all for every page)",
            crate::safe_text::terminal(n)
        );
    }
}

async fn ban(a: BanArgs) -> Result<String, CliError> {
    check::<DecisionAction, _>("--action", &a.action)?;
    let ttl = checked::<Ttl, _>("--ttl", a.ttl)?;
    let client = Client::new(&a.server)?;
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
        let v = client
            .ban_bulk(&BulkBanBody {
                targets,
                ttl,
                reason: a.reason,
                action: Some(a.action),
                actor: None,
                origin: Some(format!("list:{base}")),
            })
            .await?;
        if a.json {
            return Ok(json_line(&v));
        }
        return Ok(render::bulk_banned(&name, &v));
    }
    let target = a.target.unwrap_or_default();
    check::<Target, _>("<target>", &target)?;
    let v = client
        .ban(&BanBody {
            target,
            ttl,
            reason: a.reason,
            action: Some(a.action),
            actor: None,
            origin: None,
        })
        .await?;
    if a.json {
        return Ok(json_line(&v));
    }
    Ok(render::banned(&v))
}

async fn allow(command: AllowCommand) -> Result<String, CliError> {
    match command {
        AllowCommand::Add {
            server,
            target,
            reason,
        } => {
            check::<Target, _>("<target>", &target)?;
            let v = Client::new(&server)?
                .allow_add(&AllowBody {
                    target,
                    reason: Some(reason.unwrap_or_default()),
                    actor: None,
                })
                .await?;
            Ok(render::changed("allowed", &v, ""))
        }
        AllowCommand::Remove {
            server,
            target,
            reason,
        } => {
            check::<Target, _>("<target>", &target)?;
            let v = Client::new(&server)?
                .allow_remove(&RemovalParams { target, reason })
                .await?;
            Ok(render::changed("removed", &v, " from the allowlist"))
        }
        AllowCommand::List(a) => {
            let v = Client::new(&a.server)?.allowlist().await?;
            Ok(render::decisions_out(&v.entries, a.json))
        }
    }
}

async fn audit(a: AuditArgs) -> Result<String, CliError> {
    let since = checked::<TimeBound, _>("--since", a.since)?;
    let client = Client::new(&a.server)?;
    if a.api {
        let v = client
            .api_audit(&ApiAuditParams {
                since,
                limit: Some(a.limit),
                actor: a.actor,
                operation: a.operation,
                refused: a.refused.then_some(true),
            })
            .await?;
        Ok(render::api_audit_out(&v.entries, a.json))
    } else {
        let v = client
            .audit(&AuditParams {
                since,
                limit: Some(a.limit),
            })
            .await?;
        Ok(render::audit_out(&v.entries, a.json))
    }
}

async fn changes(a: ChangesArgs) -> Result<String, CliError> {
    check::<TimeBound, _>("--since", &a.since)?;
    let until = checked::<TimeBound, _>("--until", a.until)?;
    if let Some(user) = &a.user {
        check::<crate::security::credentials::Pattern, _>("--user", user)?;
    }
    for (flag, value) in [("--bucket", &a.bucket), ("--lookback", &a.lookback)] {
        crate::time::parse_duration(value).map_err(|reason| CliError::Invalid {
            flag: flag.into(),
            reason,
        })?;
    }
    let client = Client::new(&a.server)?;
    let page = client
        .changes(&ChangesParams {
            since: Some(a.since.clone()),
            until,
            resource: a.resource,
            namespace: a.namespace,
            user: a.user,
            host: a.host.clone(),
            before_spike: a.before_spike.then_some(true),
            bucket: a.before_spike.then(|| a.bucket.clone()),
            lookback: a.before_spike.then(|| a.lookback.clone()),
            findings: a.findings.then_some(true),
            all_stages: a.all_stages.then_some(true),
            limit: Some(a.limit),
        })
        .await?;
    Ok(render::changes_out(
        &page,
        a.before_spike
            .then_some(a.host.as_deref().unwrap_or_default()),
        &a.since,
        a.json,
    ))
}

async fn report(a: ReportArgs) -> Result<String, CliError> {
    check::<TimeBound, _>("--since", &a.since)?;
    let format: ReportFormat = check("--format", &a.format)?;
    let q = ReportParams {
        since: Some(a.since),
        until: checked::<TimeBound, _>("--until", a.until)?,
        principal: a.principal,
        host: a.host,
        // Always JSON: the CSV and the table are drawn here from the rows.
        format: Some("json".into()),
    };
    let v = Client::new(&a.server)?.access_report(&q).await?;
    Ok(match format {
        ReportFormat::Json => json_line(&v),
        ReportFormat::Csv => to_csv(&v.rows),
        ReportFormat::Table => render::report_table(&v.rows),
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
            let v = Client::new(&a.server)?.reload_rules().await?;
            if a.json {
                return Ok(json_line(&v));
            }
            Ok(render::reloaded(v.as_ref()))
        }
        RulesCommand::List(a) => {
            let v = Client::new(&a.server)?.rules().await?;
            if a.json {
                return Ok(json_line(&v));
            }
            Ok(render::rules_out(&v))
        }
        RulesCommand::Replay(a) => {
            check::<TimeBound, _>("--since", &a.since)?;
            let until = checked::<TimeBound, _>("--until", a.until)?;
            load_rules(&a.file)?;
            let text = std::fs::read_to_string(&a.file).map_err(|e| CliError::File {
                path: a.file.display().to_string(),
                reason: e.to_string(),
            })?;
            let v = Client::new(&a.server)?
                .replay(&ReplayBody {
                    rules_toml: text,
                    since: Some(a.since),
                    until,
                })
                .await?;
            if a.json {
                return Ok(json_line(&v));
            }
            Ok(render::replay_out(&v))
        }
    }
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
