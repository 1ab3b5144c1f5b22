//! Calendly webhook benchmark: signed `invitee.created` deliveries accepted
//! per second end to end (HTTP in, HMAC check, parse, one writer request
//! with the event-log row, a new client and a new meeting, 200 after
//! COMMIT) with 64 concurrent senders, and the latency from sending each
//! POST to the adviser's realtime subscriber receiving that meeting's INSERT
//! frame (p50 / p99 / max).
//!
//! The server runs in-process exactly as `serve` builds it
//! (`Server::build`), on 127.0.0.1:0 with `synchronous=full` on a real file;
//! senders and the subscriber talk to it over real sockets.
//!
//! Run: `cargo bench --bench calendly`. Environment:
//! `SYNCGATE_BENCH_DELIVERIES` (measured deliveries, default 6400),
//! `SYNCGATE_BENCH_DIR` (where the database goes; default the target
//! folder's tmp, i.e. the project's disk).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use syncgate::calendly::signature;
use syncgate::config::Config;
use tokio_tungstenite::tungstenite::Message;

const SENDERS: usize = 64;
const KEY: &str = "bench-calendly-signing-key-0123456789abcdef";
const HOST_URI: &str = "https://api.calendly.com/users/BENCHHOSTAAAAAAA";

fn bench_dir() -> PathBuf {
    match std::env::var("SYNCGATE_BENCH_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("tmp"),
    }
}

/// A documented-shape `invitee.created` for booking `i` (its own event and client).
fn delivery(i: usize) -> Vec<u8> {
    let ev = format!("https://api.calendly.com/scheduled_events/BENCH{i:011}");
    let start = 1_900_000_000 + (i as i64) * 3600;
    let t = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap();
    let se = json!({
        "uri": ev, "name": "Financial review (30 min)", "status": "active",
        "start_time": t(start), "end_time": t(start + 1800),
        "event_type": "https://api.calendly.com/event_types/ETBENCHAAAAAAAAA",
        "location": {"type": "google_conference", "status": "pushed", "join_url": "https://meet.google.com/abc-defg-hij"},
        "invitees_counter": {"total": 1, "active": 1, "limit": 1},
        "created_at": "2026-11-23T17:51:18.327602Z", "updated_at": "2026-11-23T17:51:18.327602Z",
        "event_memberships": [{"user": HOST_URI, "user_email": "bench.adviser@example.com", "user_name": "Bench Adviser"}],
        "event_guests": [],
        "calendar_event": {"kind": "google", "external_id": format!("gcal{i}")}
    });
    serde_json::to_vec(&json!({
        "event": "invitee.created",
        "created_at": "2026-11-23T17:54:22.000000Z",
        "created_by": HOST_URI,
        "payload": {
            "uri": format!("{ev}/invitees/IN{i:013}"),
            "email": format!("client{i}@example.com"),
            "name": format!("Client {i}"),
            "status": "active", "timezone": "Europe/Berlin", "rescheduled": false,
            "old_invitee": null, "new_invitee": null, "event": ev,
            "cancel_url": format!("https://calendly.com/cancellations/IN{i}"),
            "reschedule_url": format!("https://calendly.com/reschedulings/IN{i}"),
            "questions_and_answers": [{"question": "Anything to prepare?", "answer": "My pension papers", "position": 0}],
            "tracking": {"utm_campaign": null, "utm_source": null, "utm_medium": null, "utm_content": null, "utm_term": null},
            "no_show": null, "reconfirmation": null, "payment": null, "cancellation": null,
            "created_at": "2026-11-23T17:51:18.327602Z", "updated_at": "2026-11-23T17:51:18.327602Z",
            "scheduled_event": se
        }
    }))
    .unwrap()
}

fn index_of(record: &Value) -> Option<usize> {
    record.get("external_id")?.as_str()?.rsplit("BENCH").next()?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let measured: usize = std::env::var("SYNCGATE_BENCH_DELIVERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(6400);
    let warmup = 256;
    let total = warmup + measured;
    let base_dir = bench_dir();
    std::fs::create_dir_all(&base_dir).unwrap();
    let dir = tempfile::tempdir_in(&base_dir).unwrap();

    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.database.path = dir.path().join("bench.db").to_string_lossy().into_owned();
    config.auth.jwt_secret = "bench-secret-bench-secret-bench-secret-01".into();
    config.calendly.signing_keys = vec![KEY.into()];
    let server = common::Running::start(config.clone()).await;
    let (addr, app) = (server.addr, server.app.clone());

    // The adviser, added as an operator would (the admin API), linked to the
    // Calendly host as `syncgate calendly subscribe` links it.
    let http = reqwest::Client::builder().pool_max_idle_per_host(SENDERS).build().unwrap();
    let uid = server.add_adviser(&http).await;
    app.store.link_calendly_user(uid, HOST_URI.into()).await.unwrap();
    let token = app.tokens.user_token(uid, "user", 3600);

    // The adviser's realtime subscriber.
    let url = format!("ws://{addr}/realtime/v1/websocket?apikey={token}&vsn=2.0.0");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    let join = json!(["1", "1", "realtime:bench", "phx_join",
        {"config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "meetings"}]}, "access_token": token}]);
    ws.send(Message::text(join.to_string())).await.unwrap();
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("socket closed before the join reply") };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v[3] == "phx_reply" {
            assert_eq!(v[4]["status"], "ok", "join refused: {v}");
            break;
        }
    }

    let epoch = Instant::now();
    let nanos = move |t: Instant| t.duration_since(epoch).as_nanos() as u64;
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let frames = Arc::new(AtomicUsize::new(0));
    let subscriber = {
        let (received, frames) = (received.clone(), frames.clone());
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_secs(20));
            let mut r = 100u64;
            loop {
                tokio::select! {
                    msg = ws.next() => {
                        let Some(Ok(msg)) = msg else { break };
                        let Message::Text(t) = msg else { continue };
                        let at = nanos(Instant::now());
                        let v: Value = match serde_json::from_str(t.as_str()) { Ok(v) => v, Err(_) => continue };
                        if v[3] == "postgres_changes" {
                            if let Some(i) = index_of(&v[4]["data"]["record"]) {
                                if let Some(slot) = received.get(i) {
                                    slot.store(at, Ordering::Release);
                                    frames.fetch_add(1, Ordering::AcqRel);
                                }
                            }
                        }
                    }
                    _ = beat.tick() => {
                        r += 1;
                        let hb = json!([null, r.to_string(), "phoenix", "heartbeat", {}]).to_string();
                        if ws.send(Message::text(hb)).await.is_err() { break }
                    }
                }
            }
        })
    };

    let webhook = format!("http://{addr}/api/calendly/webhook");
    let payloads: Arc<Vec<Vec<u8>>> = Arc::new((0..total).map(delivery).collect());

    // Send deliveries [from, to) from 64 concurrent senders; returns the wall time.
    let run = |from: usize, to: usize| {
        let next = Arc::new(AtomicUsize::new(from));
        let started = Instant::now();
        let tasks: Vec<_> = (0..SENDERS)
            .map(|_| {
                let (next, http, webhook, payloads, sent) = (next.clone(), http.clone(), webhook.clone(), payloads.clone(), sent.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::AcqRel);
                        if i >= to {
                            break;
                        }
                        let body = payloads[i].clone();
                        let header = signature::sign(KEY, syncgate::auth::unix_now(), &body);
                        sent[i].store(nanos(Instant::now()), Ordering::Release);
                        let res = http.post(&webhook).header("Calendly-Webhook-Signature", header).body(body).send().await.expect("post");
                        let status = res.status();
                        let v: Value = res.json().await.unwrap_or(Value::Null);
                        assert!(status.is_success() && v["outcome"] == "accepted", "delivery {i}: {status} {v}");
                    }
                })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.unwrap();
            }
            started.elapsed()
        }
    };

    run(0, warmup).await;
    let stats = app.store.writer_stats().clone();
    let (b0, r0) = (stats.batches.load(Ordering::Relaxed), stats.requests.load(Ordering::Relaxed));
    let elapsed = run(warmup, total).await;
    let (b1, r1) = (stats.batches.load(Ordering::Relaxed), stats.requests.load(Ordering::Relaxed));

    let deadline = Instant::now() + Duration::from_secs(60);
    while frames.load(Ordering::Acquire) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat: Vec<Duration> = (warmup..total)
        .filter_map(|i| {
            let (s, r) = (sent[i].load(Ordering::Acquire), received[i].load(Ordering::Acquire));
            (r > 0).then(|| Duration::from_nanos(r.saturating_sub(s)))
        })
        .collect();
    lat.sort();
    let missing = measured - lat.len();

    let per_sec = measured as f64 / elapsed.as_secs_f64();
    let mean_batch = (r1 - r0) as f64 / (b1 - b0).max(1) as f64;
    println!("Calendly webhooks: {measured} signed invitee.created deliveries, {SENDERS} concurrent senders, synchronous=full");
    println!("  accepted end to end: {per_sec:.0} deliveries/s ({:.2} s)", elapsed.as_secs_f64());
    println!(
        "  POST sent -> realtime INSERT frame: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} frames, {missing} missing)",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        lat.len()
    );
    println!("  writer: mean batch {mean_batch:.1} requests per commit");

    subscriber.abort();
    let _ = tokio::time::timeout(Duration::from_secs(30), server.stop()).await;
    assert_eq!(missing, 0, "every accepted delivery reached the subscriber");
}
