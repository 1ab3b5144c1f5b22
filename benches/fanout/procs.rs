//! The two servers as child processes (so `/proc/<pid>` accounts for the
//! server alone), their writers, and the `/proc` readings.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use memchr::memmem;

use super::client::{connect_ws, masked_text, Target};
pub use crate::common::cpu_secs;

/// A fixed secret so the bench can mint tokens syncgate accepts.
const SECRET: &str = "fanout-bench-secret-0123456789abcdef-not-for-production";

pub const JOIN_TOPIC: &str = "realtime:bench";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Syncgate,
    Raw,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Syncgate => "syncgate",
            Kind::Raw => "raw ceiling",
        }
    }
}

pub struct ServerProc {
    pub kind: Kind,
    child: Child,
    pub addr: SocketAddr,
    token: String,
    _dir: Option<tempfile::TempDir>,
}

fn syncgate_env(dir: &std::path::Path) -> Vec<(String, String)> {
    let db = dir.join("syncgate.db");
    [
        ("SYNCGATE_SERVER__BIND", "127.0.0.1:0".to_string()),
        ("SYNCGATE_DATABASE__PATH", db.to_string_lossy().into_owned()),
        ("SYNCGATE_AUTH__JWT_SECRET", SECRET.to_string()),
        ("SYNCGATE_REALTIME__MAX_SOCKETS_PER_USER", "20000".to_string()),
        ("SYNCGATE_REALTIME__MAX_BINDINGS_PER_USER", "100000".to_string()),
        // The client sends no heartbeats; nothing should be closed as idle mid-run.
        ("SYNCGATE_REALTIME__IDLE_TIMEOUT", "1h".to_string()),
        // 10,000 sockets connect before any joins (the defaults allow 1,000
        // unjoined, 10,000 connections in all, 30 s to join).
        ("SYNCGATE_REALTIME__MAX_UNJOINED", "20000".to_string()),
        ("SYNCGATE_REALTIME__JOIN_TIMEOUT", "1h".to_string()),
        ("SYNCGATE_SERVER__MAX_CONNECTIONS", "30000".to_string()),
        ("SYNCGATE_LOG__LEVEL", "error".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    // Commits without an fsync (WAL, synchronous = normal) unless the caller
    // chose: this bench measures fanout, not the disk (which other jobs share).
    .chain(
        std::env::var_os("SYNCGATE_DATABASE__SYNCHRONOUS")
            .is_none()
            .then(|| ("SYNCGATE_DATABASE__SYNCHRONOUS".to_string(), "normal".to_string())),
    )
    .collect()
}

fn read_listen_line(child: &mut Child, prefix: &str) -> Result<SocketAddr, String> {
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).map_err(|e| e.to_string())?;
    let addr = line.trim().strip_prefix(prefix).ok_or_else(|| format!("unexpected first line: {line:?}"))?;
    addr.trim_start_matches("http://").parse().map_err(|e| format!("{addr}: {e}"))
}

impl ServerProc {
    /// `target/release/syncgate serve` (or the binary `FANOUT_SYNCGATE_BIN`
    /// names, to compare two builds in one run) in a fresh data folder, with one user.
    pub fn syncgate() -> Result<ServerProc, String> {
        let bin_override = std::env::var("FANOUT_SYNCGATE_BIN").ok();
        let bin = bin_override.as_deref().unwrap_or(env!("CARGO_BIN_EXE_syncgate"));
        // tmpfs by default: the disk is shared with other jobs, and this bench measures fanout, not fsync.
        let base = std::env::var_os("FANOUT_DATA_DIR")
            .map(std::path::PathBuf::from)
            .or_else(|| Some(std::path::PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new().prefix("fanout-bench").tempdir_in(&base).map_err(|e| format!("{}: {e}", base.display()))?;
        let env = syncgate_env(dir.path());
        let out = Command::new(bin)
            .args(["user", "add", "--email", "bench@example.com"])
            .envs(env.iter().cloned())
            .current_dir(dir.path())
            .output()
            .map_err(|e| format!("{bin}: {e}"))?;
        if !out.status.success() {
            return Err(format!("user add failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let id: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("user id: {e}"))?;
        let token = syncgate::auth::Tokens::new(SECRET).user_token(id, "user", 3600);
        let mut child = Command::new(bin)
            .arg("serve")
            .envs(env)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{bin}: {e}"))?;
        let addr = read_listen_line(&mut child, "syncgate listening on ")?;
        Ok(ServerProc { kind: Kind::Syncgate, child, addr, token, _dir: Some(dir) })
    }

    /// This bench binary again, as the raw broadcast server.
    pub fn raw() -> Result<ServerProc, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child =
            Command::new(exe).arg("--raw-server").stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().map_err(|e| e.to_string())?;
        let addr = read_listen_line(&mut child, "raw listening on ")?;
        Ok(ServerProc { kind: Kind::Raw, child, addr, token: String::new(), _dir: None })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn target(&self) -> Target {
        let join = format!(
            r#"["1","1","{JOIN_TOPIC}","phx_join",{{"config":{{"broadcast":{{"ack":false,"self":false}},"presence":{{"key":"","enabled":false}},"postgres_changes":[{{"event":"*","schema":"public","table":"clients"}}],"private":false{}}},"access_token":"{}"}}]"#,
            // `-- --memory` with FANOUT_PRELOAD: every socket first replays the log (a burst per socket).
            if std::env::var_os("FANOUT_PRELOAD").is_some() { r#","resume":{"since":0}"# } else { "" },
            self.token
        );
        let path = match self.kind {
            Kind::Syncgate => format!("/realtime/v1/websocket?apikey={}&vsn=2.0.0", self.token),
            Kind::Raw => "/subscribe".to_string(),
        };
        Target { addr: self.addr, path, join }
    }

    /// A writer: a keep-alive REST connection to syncgate, or a trigger socket
    /// to the raw server that sends copies of `sample` (a syncgate change frame).
    pub fn writer(&self, sample: Option<&[u8]>) -> Result<Writer, String> {
        match self.kind {
            Kind::Syncgate => {
                let s = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                let head = format!(
                    "POST /api/clients HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n",
                    self.addr, self.token
                );
                Ok(Writer::Http { s, head, rbuf: Vec::with_capacity(4096) })
            }
            Kind::Raw => {
                let sample = sample.ok_or("no sample frame from the syncgate run to broadcast")?;
                let i = memmem::find(sample, b"\"name\":\"w").ok_or("sample frame without a marker")? + 9;
                let digits = sample[i..].iter().take_while(|d| d.is_ascii_digit()).count();
                let (s, _) = connect_ws(self.addr, "/trigger").map_err(|e| e.to_string())?;
                Ok(Writer::Trigger { s, prefix: sample[..i].to_vec(), suffix: sample[i + digits..].to_vec() })
            }
        }
    }

    /// utime + stime of the server process, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(&self.pid().to_string())
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid())) else {
            return 0;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // Killing the server first leaves the client's sockets to close passively (no TIME_WAIT ports).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub enum Writer {
    Http { s: TcpStream, head: String, rbuf: Vec<u8> },
    Trigger { s: TcpStream, prefix: Vec<u8>, suffix: Vec<u8> },
}

impl Writer {
    /// Send write `k` (and, for REST, wait for its response).
    pub fn write(&mut self, k: usize) -> Result<(), String> {
        match self {
            Writer::Http { s, head, rbuf } => {
                let body = format!("{{\"name\":\"w{k}\"}}");
                let req = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
                s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                read_response(s, rbuf)
            }
            Writer::Trigger { s, prefix, suffix } => {
                let mut text = Vec::with_capacity(prefix.len() + suffix.len() + 12);
                text.extend_from_slice(prefix);
                text.extend_from_slice(k.to_string().as_bytes());
                text.extend_from_slice(suffix);
                s.write_all(&masked_text(&text)).map_err(|e| e.to_string())
            }
        }
    }
}

fn read_response(s: &mut TcpStream, rbuf: &mut Vec<u8>) -> Result<(), String> {
    rbuf.clear();
    let mut chunk = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    loop {
        if let Some(end) = memmem::find(rbuf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&rbuf[..end]).to_ascii_lowercase();
            let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            while rbuf.len() < end + 4 + len {
                let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed mid-response".into());
                }
                rbuf.extend_from_slice(&chunk[..n]);
            }
            if !head.starts_with("http/1.1 2") {
                return Err(format!("write refused: {}", String::from_utf8_lossy(&rbuf[..rbuf.len().min(300)])));
            }
            return Ok(());
        }
        let n = s.read(&mut chunk).map_err(|e: io::Error| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response".into());
        }
        rbuf.extend_from_slice(&chunk[..n]);
    }
}
