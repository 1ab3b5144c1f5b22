//! What several benchmarks share (each bench is a crate of its own and
//! takes this file in with `#[path]`): knobs from the environment, medians,
//! a process's CPU time, and fresh PostgreSQL databases. A bench uses only
//! some of it.
#![allow(dead_code)]

use tokio_postgres::NoTls;

/// A positive whole number from the environment, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

/// The median (0 for no values).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// utime + stime of `/proc/<pid>` (`self` for this process), in seconds.
pub fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// A client of the PostgreSQL server at `url`, its connection driven on a task.
pub async fn connect_pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A fresh database on the server; returns its URL.
pub async fn fresh_database(admin: &tokio_postgres::Client, base: &str, name: &str) -> String {
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.expect("drop database");
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let mut url = url::Url::parse(base).expect("database URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A server built as `serve` builds it, running in this process until `stop`.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub app: syncgate::startup::App,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn start(config: syncgate::config::Config) -> Running {
        let server = syncgate::startup::Server::build(config).await.expect("server builds");
        let (addr, app) = (server.addr(), server.app());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Running { addr, app, stop, task }
    }

    /// The bench adviser, added as an operator would (the admin API): their id.
    pub async fn add_adviser(&self, http: &reqwest::Client) -> i64 {
        let added: serde_json::Value = http
            .post(format!("http://{}/api/admin/users", self.addr))
            .bearer_auth(self.app.tokens.operator_token(60))
            .json(&serde_json::json!({"email": "bench.adviser@example.com", "name": "Bench Adviser", "role": "user", "link": false}))
            .send()
            .await
            .expect("the admin API answers")
            .json()
            .await
            .expect("JSON");
        added["user"]["id"].as_i64().expect("the adviser was added")
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
