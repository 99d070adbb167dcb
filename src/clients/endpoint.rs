//! Which agent a client talks to, and what it may learn from the agent's config: the
//! clients (`run`, `pending`, `approve`, `deny`, `mcp`) often run as another user than
//! the agent, so they read the config as plain JSON when they can and never require
//! it. Nothing here is a security decision: the agent enforces `callers` and
//! `approvers` by the kernel's word; the config only spares a client a useless try.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::http_client::{Client, ClientError, default_url};

/// Most bytes of the config read (the agent's own reader takes far less).
const MAX_CONFIG: u64 = 1 << 20;

/// Where the command line says the agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `--url`.
    pub url: Option<String>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--config`: read for `unix_socket.path` when neither of the above is given.
    pub config: PathBuf,
}

impl Endpoint {
    /// `--socket`, else `--url`, else the config's `unix_socket.path` when that socket
    /// exists, else the default loopback URL.
    pub fn client(&self) -> Result<Client, ClientError> {
        if let Some(path) = &self.socket {
            return Ok(Client::unix(path));
        }
        if let Some(url) = &self.url {
            return Client::new(url);
        }
        let socket = peek_config(&self.config)
            .and_then(|cfg| cfg["unix_socket"]["path"].as_str().map(PathBuf::from))
            .filter(|path| path.exists());
        match socket {
            Some(path) => Ok(Client::unix(&path)),
            None => Client::new(&default_url()),
        }
    }
}

/// The config file as plain JSON; `None` when it cannot be read or parsed.
pub fn peek_config(path: &Path) -> Option<Value> {
    let mut text = Vec::new();
    File::open(path)
        .and_then(|file| file.take(MAX_CONFIG).read_to_end(&mut text))
        .ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether the config limits who may approve (`approvals.approvers` names anyone).
pub fn has_approvers(cfg: &Value) -> bool {
    let who = &cfg["approvals"]["approvers"];
    ["users", "groups"]
        .iter()
        .any(|key| who[key].as_array().is_some_and(|names| !names.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_flag_then_url_then_config_then_default() {
        let dir = std::env::temp_dir().join(format!("sa-endpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.json");
        let sock = dir.join("agent.sock");
        let at = |url: Option<&str>, socket: Option<&Path>| {
            Endpoint {
                url: url.map(String::from),
                socket: socket.map(Path::to_path_buf),
                config: config.clone(),
            }
            .client()
            .unwrap()
            .url()
            .to_string()
        };
        let default = default_url();
        assert_eq!(at(None, None), default, "no config");
        std::fs::write(
            &config,
            format!(
                r#"{{"unix_socket": {{"path": {:?}}}}}"#,
                sock.display().to_string()
            ),
        )
        .unwrap();
        assert_eq!(at(None, None), default, "the socket does not exist");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let unix = format!("unix:{}", sock.display());
        assert_eq!(at(None, None), unix);
        assert_eq!(at(Some("http://127.0.0.1:1"), None), "http://127.0.0.1:1");
        assert_eq!(
            at(Some("http://127.0.0.1:1"), Some(Path::new("/s"))),
            "unix:/s"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn approvers_are_read_loosely() {
        let has = |text: &str| has_approvers(&serde_json::from_str(text).unwrap());
        assert!(has(r#"{"approvals": {"approvers": {"users": ["owner"]}}}"#));
        assert!(has(r#"{"approvals": {"approvers": {"groups": ["hass"]}}}"#));
        assert!(!has(r#"{"approvals": {"approvers": {"users": []}}}"#));
        assert!(!has(r#"{"approvals": {"ttl_s": 60}}"#));
        assert!(!has(r#"{}"#));
        assert_eq!(peek_config(Path::new("/nonexistent/config.json")), None);
    }
}
