//! `/rest/v1` against `/api` for the same list: requests per second for a
//! page of 100 meetings with two filters and an order, asked the PostgREST
//! way (`?status=eq.scheduled&starts_at=gte.…&order=starts_at&limit=100`)
//! and the `/api` way (`?status=scheduled&from=…&limit=100`, ordered by
//! `starts_at, id`), by 16 concurrent clients over real sockets. Rounds of
//! the two alternate in one run, so the machine's noise falls on both and
//! the ratio is what to read.
//!
//! The server runs in-process as `serve` builds it, on 127.0.0.1:0, with
//! SQLite on a real file, or on PostgreSQL when `SYNCGATE_BENCH_DATABASE_URL`
//! names a server (a fresh database `syncgate_bench_rest` is made on it).
//!
//! Run: `cargo bench --bench rest`. Environment: `SYNCGATE_BENCH_ROUNDS`
//! (rounds of each, default 6), `SYNCGATE_BENCH_ROUND_SECS` (default 3),
//! `SYNCGATE_BENCH_DATABASE_URL`.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use syncgate::config::Config;

const CLIENTS: usize = 16;
const MEETINGS: usize = 2000;

/// Requests answered 200 with 100 rows per second by `CLIENTS` clients for `secs`.
async fn round(http: &reqwest::Client, url: &str, token: &str, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (http, url, token, done, stop) = (http.clone(), url.to_string(), token.to_string(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let r = http.get(&url).bearer_auth(&token).send().await.expect("request");
                    assert_eq!(r.status().as_u16(), 200, "{url}");
                    let body: Value = r.json().await.expect("json");
                    let rows = body.get("items").unwrap_or(&body).as_array().map_or(0, Vec::len);
                    assert_eq!(rows, 100, "{url}");
                    done.fetch_add(1, Ordering::AcqRel);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Release);
    for w in workers {
        w.await.expect("worker");
    }
    done.load(Ordering::Acquire) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds = common::env_usize("SYNCGATE_BENCH_ROUNDS", 6);
    let secs = common::env_usize("SYNCGATE_BENCH_ROUND_SECS", 3) as u64;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.database.path = dir.path().join("bench.db").to_string_lossy().into_owned();
    config.auth.jwt_secret = "bench-secret-bench-secret-bench-secret-01".into();
    let engine = match std::env::var("SYNCGATE_BENCH_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let admin = common::connect_pg(&base).await;
            config.database.url = common::fresh_database(&admin, &base, "syncgate_bench_rest").await.into();
            "PostgreSQL"
        }
        _ => "SQLite",
    };
    let server = common::Running::start(config).await;
    let addr = server.addr;
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let uid = server.add_adviser(&http).await;
    let token = server.app.tokens.user_token(uid, "user", 3600);

    // 2,000 meetings over ~83 days, every third canceled, inserted 500 at a time.
    let start = time::macros::datetime!(2027-01-01 08:00 UTC);
    for chunk in (0..MEETINGS).collect::<Vec<_>>().chunks(500) {
        let rows: Vec<Value> = chunk
            .iter()
            .map(|i| {
                let s = start + time::Duration::hours(*i as i64);
                let fmt = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
                json!({"title": format!("Meeting {i}"), "starts_at": fmt(s), "ends_at": fmt(s + time::Duration::minutes(30)),
                       "status": if i % 3 == 0 { "canceled" } else { "scheduled" }})
            })
            .collect();
        let r = http.post(format!("http://{addr}/rest/v1/meetings")).bearer_auth(&token).json(&rows).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }

    let from = "2027-01-20T00:00:00Z";
    let rest_url = format!("http://{addr}/rest/v1/meetings?status=eq.scheduled&starts_at=gte.{from}&order=starts_at&limit=100");
    let api_url = format!("http://{addr}/api/meetings?status=scheduled&from={from}&limit=100");
    // The two ask for the same rows (a meeting here ends 30 minutes after it starts).
    let a: Value = http.get(&api_url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let r: Value = http.get(&rest_url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(a["items"], r, "the same page both ways");
    round(&http, &rest_url, &token, 1).await;
    round(&http, &api_url, &token, 1).await;

    let (mut rest, mut api, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        // Alternate which goes first, so neither always runs on a warmer cache.
        let (x, y) = if i % 2 == 0 {
            let x = round(&http, &rest_url, &token, secs).await;
            (x, round(&http, &api_url, &token, secs).await)
        } else {
            let y = round(&http, &api_url, &token, secs).await;
            (round(&http, &rest_url, &token, secs).await, y)
        };
        println!("round {i}: /rest/v1 {x:.0}/s, /api {y:.0}/s, ratio {:.2}", x / y);
        rest.push(x);
        api.push(y);
        ratios.push(x / y);
    }
    println!(
        "{engine}, {MEETINGS} meetings, {CLIENTS} clients, pages of 100: /rest/v1 median {:.0}/s, /api median {:.0}/s, ratio (rest/api) median {:.2}",
        common::median(rest),
        common::median(api),
        common::median(ratios)
    );
    server.stop().await;
}
