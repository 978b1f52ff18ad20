//! The `warden` CLI runner: runs the built binary as a user would, and returns what it printed.
//!
//! None of the CLI's client settings (`WARDEN_SERVER`, `WARDEN_TOKEN`, ...) leaks in from the
//! environment the tests run in: a runner sets only the ones it was given.

use crate::paths;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

/// The environment variables the CLI reads its client settings from.
const CLIENT_ENV: [&str; 8] = [
    "WARDEN_DATA_DIR",
    "WARDEN_SERVER",
    "WARDEN_TOKEN",
    "WARDEN_TOKEN_FILE",
    "WARDEN_CA",
    "WARDEN_CERT",
    "WARDEN_KEY",
    "WARDEN_CLI_CONFIG",
];

/// How to run `warden`: the client settings it gets from its environment.
#[derive(Clone, Debug, Default)]
pub struct Cli {
    env: Vec<(&'static str, OsString)>,
}

/// What one run of `warden` did.
#[derive(Debug)]
pub struct CliOutput {
    /// The arguments, for messages.
    pub args: Vec<String>,
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// Its standard error (invalid UTF-8 replaced).
    pub stderr: String,
}

impl Cli {
    /// `warden` with no client settings: for commands that take everything as arguments
    /// (`init`, `serve --check`, `verify --data-dir`).
    pub fn new() -> Cli {
        Cli::default()
    }

    /// `warden` on the machine of the collector whose data directory is `dir`: it finds the
    /// server, the CA and the local admin token there, as an operator's CLI does.
    pub fn with_data_dir(dir: &Path) -> Cli {
        Cli {
            env: vec![("WARDEN_DATA_DIR", dir.as_os_str().to_owned())],
        }
    }

    /// Sends `token` (`WARDEN_TOKEN`) instead of the local admin's.
    pub fn token(mut self, token: &str) -> Cli {
        self.env.push(("WARDEN_TOKEN", token.into()));
        self
    }

    /// Runs `warden args` to completion.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> CliOutput {
        let bin = paths::require(
            &paths::warden_bin(),
            "build the collector with `cargo build -p warden-collector`",
        );
        let mut command = Command::new(bin);
        for name in CLIENT_ENV {
            command.env_remove(name);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the warden CLI");
        CliOutput {
            args: args
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect(),
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `warden args`, which must succeed (else it panics printing stderr), and returns its
    /// stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        self.run(args).ok().stdout
    }
}

impl CliOutput {
    /// Whether `warden` exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// This output, if `warden` succeeded; otherwise panics printing its stderr and stdout.
    pub fn ok(self) -> CliOutput {
        assert!(
            self.success(),
            "warden {:?} failed ({}):\n{}{}",
            self.args,
            self.status,
            self.stderr,
            self.stdout
        );
        self
    }
}
