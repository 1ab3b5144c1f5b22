//! A PostgreSQL server of one test's own, for tests that stop and restart
//! the database under a running syncgate (the shared throwaway cluster of
//! `scripts/test.sh` serves every other test and must stay up). Started with
//! the same binaries the script finds, on 127.0.0.1 and a free port, as the
//! `postgres` user when the tests run as root (initdb and postgres refuse
//! root); stopped and removed when dropped.
//!
//! Runs only where the PostgreSQL tests run (`SYNCGATE_TEST_DATABASE_URL`
//! set); otherwise it skips like them (or fails where they are required).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pg_database;

pub struct PrivateCluster {
    pub url: String,
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_root: bool,
}

fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("postgres").exists() && p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, p)| p)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

impl PrivateCluster {
    /// A running private cluster, or None (after a skip line) where the
    /// PostgreSQL tests do not run.
    pub async fn start(test: &str) -> Option<PrivateCluster> {
        // Same rule as every PostgreSQL test: skip without a server, fail in CI.
        pg_database::PgDatabase::create(test).await?;
        let bin = bin_dir().expect("a PostgreSQL server under /usr/lib/postgresql/*/bin (scripts/test.sh installs it)");
        let as_root = is_root();
        let dir = tempfile::Builder::new().prefix("syncgate-pg-private.").tempdir_in("/tmp").expect("temp dir").keep();
        let mut cluster = PrivateCluster { url: String::new(), dir, bin, port: 0, as_root };
        if as_root {
            cluster.run("chown", &["postgres:", cluster.dir.to_str().unwrap()], false);
        }
        let data = cluster.data();
        cluster.run("initdb", &["-D", &data, "--username=postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"], true);
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nfull_page_writes = off\n",
            cluster.dir.display()
        );
        let conf_path = Path::new(&data).join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
        cluster.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        cluster.port = port;
        cluster.start_again();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// Run a PostgreSQL program (`pg`: from the server's bin folder) as the cluster's owner.
    fn run(&self, program: &str, args: &[&str], pg: bool) {
        let program = if pg { self.bin.join(program).to_string_lossy().into_owned() } else { program.to_string() };
        let mut cmd = if self.as_root && pg {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).current_dir(&self.dir).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start (or start again after [`PrivateCluster::stop_fast`]) and wait until it accepts connections.
    pub fn start_again(&self) {
        let log = self.dir.join("postgres.log").to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "-t", "30", "start"], true);
    }

    /// Stop at once, as a crash or an operator's restart would: every
    /// connection is cut, open transactions are rolled back.
    pub fn stop_fast(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"], true);
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        pg_database::connect(&self.url).await
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd.args(["-D", &self.data(), "-m", "immediate", "-w", "stop"]).current_dir("/").output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
