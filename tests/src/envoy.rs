//! Runs a real Envoy with the built Warden filter, from `envoy/envoy.yaml.tmpl`.
//!
//! The admin and listener ports are ephemeral (port 0): the admin address comes from
//! `--admin-address-path`, the listener's from the admin `/listeners` endpoint. Readiness is
//! Envoy's own admin `/ready`, never a sleep.

use crate::collector::{print_log_if_panicking, terminate};
use crate::eventually::Wait;
use crate::paths;
use serde_json::Value;
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tempfile::TempDir;

/// How to start an Envoy.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// The filter's JSON plugin configuration.
    pub filter_config: Value,
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// The collector's gRPC address (the `warden_collector` cluster).
    pub collector_grpc: SocketAddr,
    /// The upstream's address (the `upstream` cluster).
    pub upstream: SocketAddr,
    /// Envoy's node id.
    pub node_id: String,
    /// The bootstrap template.
    pub template: PathBuf,
    /// More `${NAME}` placeholders (name, value) for templates beyond the standard one, filled
    /// in after the standard ones.
    pub extra: Vec<(String, String)>,
    /// The filter's collector token, handed to the VM as `WARDEN_FILTER_TOKEN` through Envoy's
    /// `vm_config.environment_variables` (as a Secret would be), never written in the
    /// configuration.
    pub filter_token: Option<String>,
    /// mTLS to the collector; `None`: plaintext (the template's collector-tls block is cut).
    pub collector_tls: Option<CollectorTls>,
}

/// The files of the filter's TLS connection to the collector.
#[derive(Clone, Debug)]
pub struct CollectorTls {
    /// The CA the collector's certificate must chain to.
    pub ca: PathBuf,
    /// The filter's client certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The name the collector's certificate must carry (and the SNI sent).
    pub sni: String,
}

impl EnvoyOptions {
    /// Defaults for an Envoy whose filter talks to `collector` with its local filter token:
    /// one worker, a filter configuration that flushes every 100 ms so tests see records
    /// quickly, and the standard template.
    pub fn new(collector: &crate::Collector, upstream: SocketAddr) -> Self {
        EnvoyOptions {
            filter_config: serde_json::json!({ "batch": { "flush_interval_ms": 100 } }),
            concurrency: 1,
            collector_grpc: collector.grpc,
            upstream,
            node_id: next_node_id(),
            template: paths::envoy_template(),
            extra: Vec::new(),
            filter_token: Some(collector.filter_token()).filter(|t| !t.is_empty()),
            collector_tls: None,
        }
    }

    /// The filter configuration Envoy gets: the test's, reading its token from the VM's
    /// environment unless the test set a token itself.
    fn effective_filter_config(&self) -> Value {
        let mut config = self.filter_config.clone();
        if self.filter_token.is_some()
            && let Some(obj) = config.as_object_mut()
        {
            let collector = obj
                .entry("collector")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(c) = collector.as_object_mut()
                && !c.contains_key("token")
                && !c.contains_key("token_env")
            {
                c.insert("token_env".into(), "WARDEN_FILTER_TOKEN".into());
            }
        }
        config
    }
}

fn next_node_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!(
        "e2e-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running Envoy; killed on drop (after asking it to quit).
pub struct Envoy {
    child: Option<Child>,
    /// Admin interface address.
    pub admin: SocketAddr,
    /// The `ingress` listener's address.
    pub listener: SocketAddr,
    /// The options it was started with.
    pub options: EnvoyOptions,
    dir: TempDir,
}

impl Envoy {
    /// Starts Envoy and waits until it is ready; panics with Envoy's log if it is not.
    pub async fn start(options: EnvoyOptions) -> Self {
        match Self::try_start(options).await {
            Ok(envoy) => envoy,
            Err(failure) => panic!("envoy did not start: {failure}"),
        }
    }

    /// Starts Envoy; `Err` carries the reason and Envoy's log when it exits or never gets ready.
    pub async fn try_start(options: EnvoyOptions) -> Result<Self, String> {
        let envoy_bin = paths::require(&paths::envoy_bin(), "run scripts/setup.sh");
        let wasm = paths::require(&paths::filter_wasm(), "run scripts/build-filter.sh");
        let dir = tempfile::Builder::new()
            .prefix("warden-envoy-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let template = std::fs::read_to_string(&options.template)
            .map_err(|e| format!("{}: {e}", options.template.display()))?;
        let template = match &options.collector_tls {
            Some(_) => template,
            None => cut_block(&template, "collector-tls"),
        };
        let mut values = vec![
            ("NODE_ID", options.node_id.clone()),
            ("ADMIN_PORT", "0".into()),
            ("LISTENER_PORT", "0".into()),
            ("UPSTREAM_PORT", options.upstream.port().to_string()),
            (
                "COLLECTOR_GRPC_PORT",
                options.collector_grpc.port().to_string(),
            ),
            ("WASM_PATH", wasm.display().to_string()),
            (
                "FILTER_CONFIG",
                options.effective_filter_config().to_string(),
            ),
        ];
        if let Some(tls) = &options.collector_tls {
            values.extend([
                ("COLLECTOR_SNI", tls.sni.clone()),
                ("COLLECTOR_CA", tls.ca.display().to_string()),
                ("FILTER_CERT", tls.cert.display().to_string()),
                ("FILTER_KEY", tls.key.display().to_string()),
            ]);
        }
        values.extend(
            options
                .extra
                .iter()
                .map(|(name, value)| (name.as_str(), value.clone())),
        );
        let bootstrap = render(&template, &values);
        let config_path = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        std::fs::write(&config_path, bootstrap).map_err(|e| e.to_string())?;
        let log = File::create(&log_path).map_err(|e| e.to_string())?;
        let mut command = Command::new(envoy_bin);
        if let Some(token) = &options.filter_token {
            command.env("WARDEN_FILTER_TOKEN", token);
        }
        let child = command
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--concurrency")
            .arg(options.concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--log-level")
            .arg(std::env::var("ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".into()))
            .arg("--drain-time-s")
            .arg("1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn envoy: {e}"))?;
        let mut envoy = Envoy {
            child: Some(child),
            admin: "127.0.0.1:0".parse().map_err(|_| "addr")?,
            listener: "127.0.0.1:0".parse().map_err(|_| "addr")?,
            options,
            dir,
        };
        match envoy.wait_ready().await {
            Ok(()) => Ok(envoy),
            Err(reason) => {
                let log = envoy.log();
                envoy.kill();
                Err(format!("{reason}\n===== envoy log =====\n{log}"))
            }
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let mut wait = Wait::new("envoy to be ready (admin /ready)");
        let admin_path = self.dir.path().join("admin-address");
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!("envoy exited with {status}"));
            }
            let last = match std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|text| text.trim().parse::<SocketAddr>().ok())
            {
                Some(admin) => {
                    self.admin = admin;
                    match self.admin_get("/ready").await {
                        Ok((200, _)) => {
                            self.listener = self.find_listener().await?;
                            return Ok(());
                        }
                        other => format!("/ready: {other:?}"),
                    }
                }
                None => "no admin address yet".to_string(),
            };
            wait.retry(&last).await?;
        }
    }

    async fn find_listener(&self) -> Result<SocketAddr, String> {
        let (_, body) = self.admin_get("/listeners?format=json").await?;
        let listeners: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let status = listeners["listener_statuses"]
            .as_array()
            .and_then(|all| all.iter().find(|l| l["name"] == "ingress"))
            .ok_or_else(|| format!("no ingress listener in {body}"))?;
        let socket = &status["local_address"]["socket_address"];
        format!(
            "{}:{}",
            socket["address"].as_str().unwrap_or("127.0.0.1"),
            socket["port_value"].as_u64().unwrap_or(0)
        )
        .parse()
        .map_err(|e| format!("listener address in {body}: {e}"))
    }

    /// GETs an admin path, returning the status and body.
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        let url = format!("http://{}{path}", self.admin);
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(|e| e.to_string())?))
    }

    /// The value of a counter or gauge from admin `/stats` whose name ends with `suffix`
    /// (custom Wasm metrics carry an Envoy-chosen prefix).
    pub async fn stat(&self, suffix: &str) -> Option<u64> {
        let (_, body) = self.admin_get("/stats").await.ok()?;
        body.lines().find_map(|line| {
            let (name, value) = line.split_once(": ")?;
            if name.ends_with(suffix) {
                value.trim().parse().ok()
            } else {
                None
            }
        })
    }

    /// Envoy's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The full URL of `path` on the ingress listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listener)
    }

    /// Everything Envoy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks Envoy to quit (admin `/quitquitquit`), killing it if it has not within 5 s.
    pub async fn stop(&mut self) {
        let url = format!("http://{}/quitquitquit", self.admin);
        if let Ok(client) = reqwest::Client::builder().no_proxy().build() {
            let _ = client.post(url).send().await;
        }
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        print_log_if_panicking("envoy", &self.dir.path().join("envoy.log"));
    }
}

/// Removes the lines from `# BEGIN <name>` to `# END <name>`.
pub fn cut_block(template: &str, name: &str) -> String {
    let begin = format!("# BEGIN {name}");
    let end = format!("# END {name}");
    let mut out = String::with_capacity(template.len());
    let mut inside = false;
    for line in template.lines() {
        if line.trim_start().starts_with(&begin) {
            inside = true;
            continue;
        }
        if inside {
            if line.trim_start().starts_with(&end) {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Replaces each `${NAME}` in `template`.
pub fn render(template: &str, values: &[(&str, String)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |text, (name, value)| {
            text.replace(&format!("${{{name}}}"), value)
        })
}
