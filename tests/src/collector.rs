//! Runs the real `warden serve` binary as a child process on ephemeral ports.

use crate::eventually::Wait;
use crate::{Cli, eventually, paths};
use serde_json::Value;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A running collector. Its data directory outlives restarts; the process is killed on drop.
pub struct Collector {
    child: Option<Child>,
    /// The gRPC listener (the address Envoy's `warden_collector` cluster points at).
    pub grpc: SocketAddr,
    /// The HTTP API listener.
    pub http: SocketAddr,
    dir: TempDir,
    starts: u32,
}

impl Collector {
    /// Starts a collector with default settings.
    pub async fn start() -> Self {
        Self::start_with_config("").await
    }

    /// Starts a collector with `config` as its `warden.toml`.
    pub async fn start_with_config(config: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("warden-collector-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("warden.toml"), config).expect("write warden.toml");
        let mut collector = Collector {
            child: None,
            grpc: "127.0.0.1:0".parse().expect("addr"),
            http: "127.0.0.1:0".parse().expect("addr"),
            dir,
            starts: 0,
        };
        collector.spawn().await;
        collector
    }

    /// The collector's data directory (the SQLite files live here).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The collector's `warden.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("warden.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("collector.log")
    }

    fn ready_path(&self) -> PathBuf {
        self.dir.path().join("ready.json")
    }

    /// The process id of the running collector (for pinning it to a core in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Base URL of the HTTP API, as `warden serve` announced it in `cli.toml` (https when the
    /// API speaks TLS).
    pub fn base_url(&self) -> String {
        self.cli_setting("server")
            .unwrap_or_else(|| format!("http://{}", self.http))
    }

    /// A value of the `cli.toml` the collector wrote (`server`, `ca`, `token_file`).
    fn cli_setting(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.data_dir().join("cli.toml")).ok()?;
        text.lines().find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
    }

    async fn spawn(&mut self) {
        let bin = paths::require(
            &paths::warden_bin(),
            "build the collector with `cargo build -p warden-collector`",
        );
        let _ = std::fs::remove_file(self.ready_path());
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open collector log");
        self.starts += 1;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .arg("--grpc-listen")
            .arg(self.grpc.to_string())
            .arg("--http-listen")
            .arg(self.http.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--ready-file")
            .arg(self.ready_path())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn warden serve");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// The gRPC and HTTP addresses from the ready file, once the collector has written it.
    fn read_ready_file(&self) -> Option<(SocketAddr, SocketAddr)> {
        let text = std::fs::read_to_string(self.ready_path()).ok()?;
        let ready: Value = serde_json::from_str(&text).ok()?;
        let addr = |key: &str| -> Option<SocketAddr> { ready[key].as_str()?.parse().ok() };
        Some((addr("grpc")?, addr("http")?))
    }

    async fn wait_ready(&mut self) {
        let mut wait = Wait::new("warden serve to write its ready file");
        loop {
            if let Some((grpc, http)) = self.read_ready_file() {
                self.grpc = grpc;
                self.http = http;
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "warden serve exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if let Err(timeout) = wait.retry("no ready file yet").await {
                panic!("{timeout}:\n{}", self.log());
            }
        }
    }

    /// Stops the collector with SIGTERM (graceful shutdown), SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }

    /// Kills the collector at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the collector again on the same ports with the same data directory.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Everything the collector has logged so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The local admin token `warden serve` created in its data directory.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    /// The local filter token `warden serve` created in its data directory.
    pub fn filter_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("filter.token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    /// An HTTP client for this collector's API that sends `token` as a bearer token (none: no
    /// credential) and trusts the API's CA when it speaks TLS.
    pub fn client(&self, token: Option<&str>) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = token
            .filter(|t| !t.is_empty())
            .and_then(|t| format!("Bearer {t}").parse().ok())
        {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers);
        if let Some(ca) = self
            .cli_setting("ca")
            .and_then(|ca| std::fs::read(ca).ok())
            .and_then(|pem| reqwest::Certificate::from_pem(&pem).ok())
        {
            builder = builder.add_root_certificate(ca);
        }
        builder.build().expect("HTTP client")
    }

    /// An HTTP client with the local admin token.
    pub fn http(&self) -> reqwest::Client {
        self.client(Some(&self.admin_token()))
    }

    /// The value of one series of `/metrics` (`name` with its labels, e.g.
    /// `warden_grpc_refused_total{reason="permission_denied"}`); 0 when absent.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http()
            .get(format!("{}/metrics", self.base_url()))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `GET /api/v1/records?{query}`, returning the records.
    pub async fn records(&self, query: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/api/v1/records?{query}", self.base_url());
        let body = self.get_json(&url).await?;
        body["records"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no records array in {body}"))
    }

    /// Every record matching `query` (without `limit` or `cursor`), following `next_cursor`
    /// page by page (10,000 records a page, the API's largest).
    pub async fn all_records(&self, query: &str) -> Result<Vec<Value>, String> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_query = match &cursor {
                Some(c) => format!("{query}&limit=10000&cursor={c}"),
                None => format!("{query}&limit=10000"),
            };
            let url = format!("{}/api/v1/records?{page_query}", self.base_url());
            let body = self.get_json(&url).await?;
            let page = body["records"]
                .as_array()
                .ok_or_else(|| format!("no records array in {body}"))?;
            all.extend(page.iter().cloned());
            match body["next_cursor"].as_str() {
                Some(next) if !page.is_empty() => cursor = Some(next.to_string()),
                _ => return Ok(all),
            }
        }
    }

    /// `GET /api/v1/filters`: the connected filters, the deny list's version and the
    /// accounting of what each filter sent.
    pub async fn filters(&self) -> Result<Value, String> {
        self.get_json(&format!("{}/api/v1/filters", self.base_url()))
            .await
    }

    /// A plaintext gRPC channel to the collector (its gRPC listener without TLS).
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .expect("gRPC URL")
            .connect()
            .await
            .expect("connect to the collector's gRPC listener")
    }

    /// GETs `url` as the local admin and parses the JSON body; a non-2xx status is an error
    /// carrying the body.
    pub async fn get_json(&self, url: &str) -> Result<Value, String> {
        let response = self
            .http()
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("GET {url}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}: {text}"))
    }

    /// The `warden` CLI as on this collector's machine: it finds the server, the CA and the local
    /// admin token through the data directory.
    pub fn cli(&self) -> Cli {
        Cli::with_data_dir(&self.data_dir())
    }

    /// Waits until the `/metrics` series `name` (with its labels) reaches at least `at_least`,
    /// and returns its value.
    pub async fn wait_for_metric(&self, name: &str, at_least: u64) -> u64 {
        eventually(&format!("{name} to reach {at_least}"), || async {
            let value = self.metric(name).await;
            if value >= at_least {
                Ok(value)
            } else {
                Err(format!("{name} = {value}"))
            }
        })
        .await
    }
}

/// `value` escaped for a query string of the records API (`path_prefix`, `ip` with a CIDR).
pub fn encode_query_value(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace('/', "%2F")
        .replace(' ', "%20")
        .replace('&', "%26")
}

/// Sends SIGTERM and waits up to `grace`, then SIGKILL.
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    signal("-TERM", &child.id().to_string());
    if !exits_within(child, grace) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// `terminate` for a child that leads its own process group (spawned with
/// `process_group(0)`, like a script that starts other processes): SIGTERM to the whole group,
/// up to `grace` for the leader to exit, then SIGKILL to whatever of the group is left.
pub fn terminate_group(child: &mut Child, grace: Duration) {
    let group = format!("-{}", child.id());
    signal("-TERM", &group);
    exits_within(child, grace);
    signal("-KILL", &group);
    let _ = child.wait();
}

fn signal(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `child` exits within `grace`. A bounded grace period before SIGKILL, not a test's
/// wait: running out of it is no failure, so it does not go through `eventually` (and it runs
/// in `Drop`, outside any runtime).
fn exits_within(child: &mut Child, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Prints a child's log under a heading when the current test is failing, or always when
/// `WARDEN_TEST_SHOW_LOGS` is set (for looking into a passing test).
pub(crate) fn print_log_if_panicking(what: &str, log: &Path) {
    if std::thread::panicking() || std::env::var_os("WARDEN_TEST_SHOW_LOGS").is_some() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        eprintln!(
            "===== {what} log ({}) =====\n{text}\n===== end of {what} log =====",
            log.display()
        );
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
        print_log_if_panicking("collector", &self.log_path());
    }
}
