//! The demo as the README tells a newcomer to run it: `scripts/demo.sh` with its collector
//! guarded by TLS and credentials from `warden init`, Envoy reaching it over mTLS, and the CLI
//! on the same machine finding the API, its CA and the admin token without flags.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use warden_e2e::collector::terminate_group;
use warden_e2e::eventually::{Wait, eventually, patience};
use warden_e2e::{Cli, Client, paths};

/// `scripts/demo.sh` in its own process group, killed with its children on drop.
struct Demo {
    child: Child,
    output: PathBuf,
    data: tempfile::TempDir,
    ports: Ports,
}

/// The ports the test talks to (the demo binds four more).
struct Ports {
    listener: u16,
    http: u16,
}

fn free_ports<const N: usize>() -> [u16; N] {
    // All bound at once so they differ; released just before the demo binds them.
    let listeners: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

impl Demo {
    fn start() -> Demo {
        let [listener, mtls, admin, grpc, http, upstream] = free_ports::<6>();
        let ports = Ports { listener, http };
        let data = tempfile::tempdir().unwrap();
        let output = data.path().join("demo.out");
        let out = std::fs::File::create(&output).unwrap();
        let child = Command::new("bash")
            .arg(paths::workspace_root().join("scripts/demo.sh"))
            .env("DATA_DIR", data.path().join("data"))
            .env("ENVOY_LISTENER_PORT", listener.to_string())
            .env("ENVOY_MTLS_PORT", mtls.to_string())
            .env("ENVOY_ADMIN_PORT", admin.to_string())
            .env("COLLECTOR_GRPC", format!("127.0.0.1:{grpc}"))
            .env("COLLECTOR_HTTP", format!("127.0.0.1:{http}"))
            .env("UPSTREAM", format!("127.0.0.1:{upstream}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        Demo {
            child,
            output,
            data,
            ports,
        }
    }

    fn output(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.output) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// Waits (three times the usual patience: the script starts four processes and makes a
    /// PKI) until the demo says it is running; panics if it exits first.
    async fn wait_running(&mut self) {
        let mut wait = Wait::within("the demo to be running", patience() * 3);
        loop {
            if self.output().contains("Warden demo is running") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the demo exited ({status}) before it was running");
            }
            if let Err(timeout) = wait.retry("not yet").await {
                panic!("{timeout}");
            }
        }
    }

    /// The CLI as a user runs it beside the demo: the data directory is the only hint.
    fn cli(&self) -> Cli {
        Cli::with_data_dir(&self.data_dir())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.listener)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        terminate_group(&mut self.child, Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!(
                "===== demo output =====\n{}\n===== end of demo output =====",
                self.output()
            );
        }
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_demo_runs_guarded_and_the_readme_commands_work_as_printed() {
    let mut demo = Demo::start();
    demo.wait_running().await;
    let data = demo.data_dir();

    // The collector speaks TLS on both listeners; the CLI is told so, and where the CA is.
    let cli_toml = std::fs::read_to_string(data.join("cli.toml")).unwrap();
    assert!(
        cli_toml.contains(&format!("https://127.0.0.1:{}", demo.ports.http)),
        "{cli_toml}"
    );
    for secret in ["pki/ca-key.pem", "pki/filter-key.pem", "admin.token"] {
        assert_eq!(mode(&data.join(secret)), 0o600, "{secret} is owner-only");
    }

    // A request through Envoy, recorded over the filter's mTLS connection and found by the CLI.
    let client = Client::from("127.0.0.41");
    assert_eq!(
        client.get(&demo.url("/anything/demo-check")).await.status,
        200
    );
    eventually("the request in `warden query`", || async {
        let out = demo.cli().run(&[
            "query",
            "--since",
            "5m",
            "--path-prefix",
            "/anything/demo-check",
        ]);
        (out.success() && out.stdout.contains("127.0.0.41"))
            .then_some(())
            .ok_or(format!("{}{}", out.stdout, out.stderr))
    })
    .await;

    // The API by hand, as the demo prints it: the CA and the admin token from the data dir.
    let ca = std::fs::read(data.join("pki/ca.pem")).unwrap();
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let api = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let url = format!(
        "https://localhost:{}/api/v1/records?since=5m",
        demo.ports.http
    );
    let r = api
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = api.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token, no records");
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let plaintext = plain
        .get(format!(
            "http://127.0.0.1:{}/api/v1/records",
            demo.ports.http
        ))
        .send()
        .await;
    assert!(
        !plaintext.is_ok_and(|r| r.status().is_success()),
        "plaintext HTTP is not served"
    );

    // Inline blocking from the CLI.
    demo.cli()
        .ok(&["ban", "127.0.0.41", "--ttl", "5m", "--reason", "demo"]);
    // Envoy enforces the ban, and then the unban.
    client.wait_for_status(&demo.url("/anything"), 403).await;
    demo.cli().ok(&["unban", "127.0.0.41"]);
    client.wait_for_status(&demo.url("/anything"), 200).await;

    // The README's audit command shows those calls, reads included, with the local admin.
    let out = demo.cli().ok(&["audit", "--api", "--since", "10m"]);
    for operation in ["decisions.ban", "decisions.unban", "records.query"] {
        assert!(out.contains(operation), "{operation} missing from:\n{out}");
    }
    assert!(out.contains("local-admin"), "{out}");
}
