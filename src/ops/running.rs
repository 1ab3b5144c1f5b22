//! How the command line finds a running server. `serve` writes
//! `server.json` (its pid and a loopback URL) into the data folder once it
//! serves and removes it when it stops. The CLI believes the file only when
//! the server answers there; a file whose process is gone (a crash) is stale;
//! a live process that does not answer is an error, never a reason to write
//! behind its back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;

pub const FILE_NAME: &str = "server.json";

#[derive(Debug, Serialize, Deserialize)]
struct ServerFile {
    pid: u32,
    url: String,
}

/// The announcement of a serving server; removed when it stops.
pub struct Announced {
    path: PathBuf,
    pid: u32,
}

impl Announced {
    /// Remove the file, if it is still this process's.
    pub fn remove(self) {
        let ours =
            std::fs::read(&self.path).ok().and_then(|b| serde_json::from_slice::<ServerFile>(&b).ok()).is_some_and(|f| f.pid == self.pid);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A URL on loopback that reaches a server bound to `addr`.
fn loopback_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Write `server.json` (atomically) for a server now serving on `addr`.
pub fn announce(config: &Config, addr: SocketAddr) -> Option<Announced> {
    let path = config.data_dir().join(FILE_NAME);
    let pid = std::process::id();
    let body = serde_json::to_vec(&ServerFile { pid, url: loopback_url(addr) }).ok()?;
    let tmp = path.with_extension(format!("json.{pid}.tmp"));
    let written = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &path));
    match written {
        Ok(()) => Some(Announced { path, pid }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(file = %path.display(), error = %e, "cannot write the server file; CLI account commands will not find this server");
            None
        }
    }
}

fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = i32::try_from(pid) else { return false };
        // Signal 0 checks existence; EPERM means it exists but is not ours.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

async fn answers(url: &str) -> bool {
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(3)).build() else { return false };
    match client.get(format!("{url}/health")).send().await {
        Ok(r) if r.status().is_success() => {
            r.json::<serde_json::Value>().await.ok().is_some_and(|v| v.get("status").and_then(|s| s.as_str()) == Some("ok"))
        }
        _ => false,
    }
}

/// Why the running server could not be found.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("{} is unreadable ({error}); delete it if no server runs", path.display())]
    Unreadable { path: std::path::PathBuf, error: serde_json::Error },
    #[error(
        "a syncgate server (pid {pid}) runs on this data folder but does not answer at {url}; try again when it does (changes are made through it)"
    )]
    NotAnswering { pid: u32, url: String },
    #[error("cannot read {}: {error}", path.display())]
    Read { path: std::path::PathBuf, error: std::io::Error },
}

/// The URL of the running server, None when no server runs on this data
/// folder, or an error when one runs but does not answer.
pub async fn locate(config: &Config) -> Result<Option<String>, LocateError> {
    let path = config.data_dir().join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let file: ServerFile = serde_json::from_slice(&bytes).map_err(|e| LocateError::Unreadable { path: path.clone(), error: e })?;
            if answers(&file.url).await {
                return Ok(Some(file.url));
            }
            if process_alive(file.pid) {
                return Err(LocateError::NotAnswering { pid: file.pid, url: file.url });
            }
            // Left behind by a server that did not stop cleanly.
            let _ = std::fs::remove_file(&path);
            Ok(None)
        }
        // No server announced itself for this data folder. (The configured
        // address is not tried: a server there may serve another folder.)
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LocateError::Read { path, error: e }),
    }
}
