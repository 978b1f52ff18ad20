//! Credentials for this machine, so that authentication is on from the first start without any
//! configuration: `<data_dir>/admin.token` (an admin API token) and `<data_dir>/filter.token` (a
//! filter token covering every node id), created once, readable only by the collector's user;
//! and `<data_dir>/cli.toml`, which tells the CLI on the same machine where the API is, which CA
//! to trust and which token to send.

use crate::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The local admin token's file name.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The local filter token's file name.
pub const FILTER_TOKEN_FILE: &str = "filter.token";
/// The CLI settings file name.
pub const CLI_CONFIG_FILE: &str = "cli.toml";

/// Writes `contents` to `path` readable and writable by the owner only, atomically (a temporary
/// file in the same directory, then a rename).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The token in `path`, created (random, owner-only) when the file does not exist. A file others
/// can read is made owner-only and the fix is logged.
pub fn ensure_token(path: &Path) -> Result<String, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(Error::Storage(format!(
                    "{} is empty: delete it to have a new token made",
                    path.display()
                )));
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(meta) = std::fs::metadata(path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
                    tracing::warn!(file = %path.display(), "a token file was readable by others; made it owner-only");
                }
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = super::credentials::new_token().map_err(Error::Storage)?;
            write_private(path, format!("{token}\n").as_bytes())
                .map_err(|e| Error::Storage(format!("cannot write {}: {e}", path.display())))?;
            tracing::info!(file = %path.display(), "created a local token");
            Ok(token)
        }
        Err(e) => Err(Error::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// What `cli.toml` says.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// The API's base URL.
    #[serde(default)]
    pub server: Option<String>,
    /// A CA bundle (PEM) to verify the API's certificate with.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// A file holding the bearer token to send.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A client certificate (PEM) to present.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// Writes `<data_dir>/cli.toml` for the CLI on this machine.
pub fn write_cli_config(data_dir: &Path, config: &CliConfig) -> Result<(), Error> {
    let text = toml::to_string(config).map_err(|e| Error::Storage(e.to_string()))?;
    let text = format!(
        "# Written by `warden serve` at start: how the CLI on this machine reaches this collector.\n{text}"
    );
    write_private(&data_dir.join(CLI_CONFIG_FILE), text.as_bytes()).map_err(|e| {
        Error::Storage(format!(
            "cannot write {}: {e}",
            data_dir.join(CLI_CONFIG_FILE).display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_and_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        let first = ensure_token(&path).unwrap();
        assert!(first.starts_with("wdn_"));
        assert_eq!(ensure_token(&path).unwrap(), first, "kept across restarts");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            ensure_token(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "tightened");
        }
    }

    #[test]
    fn cli_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let c = CliConfig {
            server: Some("https://127.0.0.1:9090".into()),
            ca: Some("/pki/ca.pem".into()),
            token_file: Some(dir.path().join(ADMIN_TOKEN_FILE)),
            cert: None,
            key: None,
        };
        write_cli_config(dir.path(), &c).unwrap();
        let text = std::fs::read_to_string(dir.path().join(CLI_CONFIG_FILE)).unwrap();
        let back: CliConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }
}
