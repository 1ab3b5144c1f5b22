//! Several nodes on one PostgreSQL (#18), with real `syncgate serve`
//! processes (`cluster_nodes`): every change reaches every subscriber on
//! every node once and in order; a killed node loses no acknowledged write
//! and its subscribers and leases move; a paused node catches up; a Google
//! burst and a Calendly double delivery spread over two nodes still act
//! once; a rolling restart loses no webhook and leaves no realtime gap; an
//! Outlook burst over two nodes is few delta passes, and the Microsoft
//! upkeep moves off a killed node and keeps extending the subscription.
//! Intervals are short (poll 200ms, lease_ttl 2s) and every wait is a poll
//! with a generous ceiling, never a timing assert. PostgreSQL only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use syncgate::calendly::signature;

use crate::cluster_nodes::{load_secs, settle, sqlite_pass, Cluster, Delivered, Subscriber};
use crate::fake_google::{self, FakeGoogle};
use crate::fake_graph::{self, FakeGraph};
use crate::helpers;
use crate::helpers::within;

// ---------------------------------------------------------------- people

/// Ordinary users (who see their own rows) and one admin (who sees all).
struct People {
    users: Vec<(i64, String)>,
    admin: (i64, String),
}

fn people(cluster: &Cluster, n: usize) -> People {
    let users = (0..n).map(|i| cluster.add_user(&format!("user{i}@example.com"), "user")).collect();
    People { users, admin: cluster.add_user("root@example.com", "admin") }
}

/// `per_node` subscribers on each node: the admin first, then users round
/// robin; protocol versions alternate. Returns once every one has joined.
async fn subscribe(cluster: &Cluster, people: &People, per_node: usize) -> Vec<Subscriber> {
    let bases = cluster.bases();
    let mut subs = Vec::new();
    for node in 0..cluster.nodes.len() {
        for k in 0..per_node {
            let (user, token, admin) = if k == 0 {
                (people.admin.0, people.admin.1.clone(), true)
            } else {
                let (id, token) = &people.users[(node + k) % people.users.len()];
                (*id, token.clone(), false)
            };
            subs.push(Subscriber::spawn(bases.clone(), node, user, token, admin, k % 2 == 0));
        }
    }
    within(30, "every subscriber to join", || async { subs.iter().all(Subscriber::joined).then_some(()) }).await;
    subs
}

/// Assert every subscriber got exactly what it may see, once, in order.
fn assert_streams(delivered: &[Delivered]) {
    for d in delivered {
        assert!(
            d.check.clean() && d.state.gaps == 0 && d.state.errors.is_empty(),
            "subscriber of user {} (admin: {}) that started on node{}: {:?}, gaps {}, errors {:?}",
            d.user,
            d.admin,
            d.first_node + 1,
            d.check,
            d.state.gaps,
            d.state.errors
        );
    }
}

fn frames(delivered: &[Delivered]) -> usize {
    delivered.iter().map(|d| d.state.seen.len()).sum()
}

// ---------------------------------------------------------------- writers

/// A write that got a 2xx answer: (table, op, row id).
type Acked = (&'static str, &'static str, i64);

#[derive(Default)]
struct WriteLog {
    acked: Vec<Acked>,
    /// Requests without a 2xx answer (connection errors, 5xx, timeouts).
    failed: u64,
}

/// Writers doing POST, PATCH and DELETE on clients and meetings as various
/// users, each on a node of `nodes`; on a connection error or a 5xx a
/// writer moves to the next of them, as behind a load balancer.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<WriteLog>>,
}

impl Writers {
    fn start(cluster: &Cluster, people: &People, n: usize, nodes: &[usize]) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let bases = cluster.bases();
        let tasks = (0..n)
            .map(|w| {
                let stop = stop.clone();
                let bases = bases.clone();
                let nodes = nodes.to_vec();
                let token = people.users[w % people.users.len()].1.clone();
                tokio::spawn(async move { write_loop(w, bases, nodes, token, stop).await })
            })
            .collect();
        Writers { stop, tasks }
    }

    async fn finish(self) -> WriteLog {
        self.stop.store(true, Ordering::Release);
        let mut all = WriteLog::default();
        for t in self.tasks {
            let log = t.await.expect("a writer task");
            all.acked.extend(log.acked);
            all.failed += log.failed;
        }
        all
    }
}

async fn write_loop(w: usize, bases: Arc<Vec<String>>, nodes: Vec<usize>, token: String, stop: Arc<AtomicBool>) -> WriteLog {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_idle_timeout(Duration::from_secs(5)).build().unwrap();
    let mut log = WriteLog::default();
    let mut at = w % nodes.len();
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        i += 1;
        let (table, body): (&'static str, Value) = if i.is_multiple_of(2) {
            ("clients", json!({"name": format!("client w{w} #{i}")}))
        } else {
            (
                "meetings",
                json!({"title": format!("meeting w{w} #{i}"), "starts_at": "2026-12-10T10:00:00Z", "ends_at": "2026-12-10T11:00:00Z"}),
            )
        };
        let base = &bases[nodes[at]];
        let created = http.post(format!("{base}/api/{table}")).bearer_auth(&token).json(&body).send().await;
        let id = match created {
            Ok(r) if r.status().as_u16() == 201 => {
                let row: Value = r.json().await.unwrap_or_default();
                row["id"].as_i64()
            }
            _ => None,
        };
        let Some(id) = id else {
            log.failed += 1;
            at = (at + 1) % nodes.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        log.acked.push((table, "INSERT", id));
        let patch =
            if table == "clients" { json!({"notes": format!("patched {i}")}) } else { json!({"title": format!("renamed w{w} #{i}")}) };
        match http.patch(format!("{base}/api/{table}/{id}")).bearer_auth(&token).json(&patch).send().await {
            Ok(r) if r.status().as_u16() == 200 => log.acked.push((table, "UPDATE", id)),
            _ => log.failed += 1,
        }
        if i.is_multiple_of(3) {
            match http.delete(format!("{base}/api/{table}/{id}")).bearer_auth(&token).send().await {
                Ok(r) if r.status().as_u16() == 204 => log.acked.push((table, "DELETE", id)),
                _ => log.failed += 1,
            }
        }
    }
    log
}

/// Acknowledged writes with no matching change in the log.
fn lost_writes(log: &[helpers::ChangeRow], acked: &[Acked]) -> Vec<Acked> {
    let mut logged: HashMap<(String, String, i64), usize> = HashMap::new();
    for c in log {
        *logged.entry((c.1.clone(), c.2.clone(), c.3)).or_default() += 1;
    }
    acked
        .iter()
        .filter(|(t, op, id)| match logged.get_mut(&(t.to_string(), op.to_string(), *id)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .copied()
        .collect()
}

// ---------------------------------------------------------------- Google

fn google_env(fake: &FakeGoogle, channel_ttl: &str, renew_before: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SYNCGATE_GOOGLE__CLIENT_ID", fake_google::CLIENT_ID.into()),
        ("SYNCGATE_GOOGLE__CLIENT_SECRET", fake_google::CLIENT_SECRET.into()),
        ("SYNCGATE_GOOGLE__API_BASE_URL", format!("{}/calendar/v3", fake.base)),
        ("SYNCGATE_GOOGLE__AUTH_URL", format!("{}/o/oauth2/v2/auth", fake.base)),
        ("SYNCGATE_GOOGLE__TOKEN_URL", format!("{}/token", fake.base)),
        ("SYNCGATE_GOOGLE__USERINFO_URL", format!("{}/v1/userinfo", fake.base)),
        ("SYNCGATE_GOOGLE__SAFETY_NET_INTERVAL", "0s".into()),
        ("SYNCGATE_GOOGLE__CHANNEL_TTL", channel_ttl.into()),
        ("SYNCGATE_GOOGLE__RENEW_BEFORE", renew_before.into()),
    ]
}

/// The user's active channel: (channel id, resource id).
fn active_channel(cluster: &Cluster, user: i64) -> Option<(String, Option<String>)> {
    cluster
        .db()
        .row_opt("SELECT channel_id, resource_id FROM calendar_watch_channels WHERE user_id = ?1 AND state = 'active'", &[json!(user)])
        .map(|r| (r[0].as_str().unwrap_or_default().to_string(), r[1].as_str().map(str::to_string)))
}

/// Sign `email` in with Google through node `node` as an existing user;
/// waits for the first sync and the push channel. Returns the user id.
async fn connect_google(cluster: &Cluster, fake: &FakeGoogle, email: &str, node: usize) -> i64 {
    fake.add_account(email, "Ada Adviser");
    let (id, _) = cluster.add_user(email, "user");
    fake.consent_as(email);
    let r = fake_google::sign_in(&cluster.http, cluster.url(node, "").trim_end_matches('/')).await;
    assert_eq!(r.status().as_u16(), 303, "signed in");
    within(30, "the first full sync and the push channel", || async {
        let synced: Option<String> =
            cluster.db().value("SELECT MAX(sync_token) FROM google_calendars WHERE user_id = ?1 AND selected", &[json!(id)]);
        let registered = active_channel(cluster, id).is_some_and(|c| c.1.is_some());
        (synced.is_some() && registered).then_some(())
    })
    .await;
    id
}

fn now_ms() -> i64 {
    syncgate::auth::unix_now_ms()
}

// ---------------------------------------------------------------- Microsoft

const OUTLOOK_UPN: &str = "ann@contoso.example";

fn microsoft_env(fake: &FakeGraph, subscription_ttl: &str, renew_before: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SYNCGATE_MICROSOFT__CLIENT_ID", fake_graph::CLIENT_ID.into()),
        ("SYNCGATE_MICROSOFT__CLIENT_SECRET", fake_graph::CLIENT_SECRET.into()),
        ("SYNCGATE_MICROSOFT__LOGIN_BASE_URL", fake.base.clone()),
        ("SYNCGATE_MICROSOFT__GRAPH_BASE_URL", fake.graph_url()),
        ("SYNCGATE_MICROSOFT__SAFETY_NET_INTERVAL", "0s".into()),
        ("SYNCGATE_MICROSOFT__SUBSCRIPTION_TTL", subscription_ttl.into()),
        ("SYNCGATE_MICROSOFT__RENEW_BEFORE", renew_before.into()),
    ]
}

/// Connect Outlook as Ann through node `node` ("Connect Outlook" while
/// signed in, the fake's consent, the callback with the state cookie);
/// waits for her subscription and first sync. Returns her user id.
async fn connect_outlook(cluster: &Cluster, fake: &FakeGraph, node: usize) -> i64 {
    use crate::microsoft_connect::{O1, T1};
    fake.add_account(T1, O1, OUTLOOK_UPN, "Ann Adviser");
    // Every node's redirect URI is the shared public URL's (node 1's).
    fake.register_redirect_uri(&format!("{}/api/auth/microsoft/callback", cluster.base(0)));
    let (id, token) = cluster.add_user(OUTLOOK_UPN, "user");
    fake.consent_as(OUTLOOK_UPN);
    let r = cluster.http.post(cluster.url(node, "/api/auth/microsoft/connect")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("syncgate_microsoft_state=").map(|_| c.split(';').next().unwrap_or_default().to_string()))
        .expect("a state cookie");
    let body: Value = r.json().await.unwrap();
    let r = cluster.http.get(body["url"].as_str().expect("a sign-in URL")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302, "the fake's consent");
    let back = r.headers()["location"].to_str().unwrap().to_string();
    let r = cluster.http.get(back).header("cookie", cookie).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "connected");
    within(30, "the subscription and the first sync", || async {
        (fake.active_subscriptions(OUTLOOK_UPN).len() == 1 && fake.delta_passes(OUTLOOK_UPN) >= 1).then_some(())
    })
    .await;
    outlook_quiet(cluster, id).await;
    id
}

/// Wait until every Outlook sync asked for the user, on any node, is served.
async fn outlook_quiet(cluster: &Cluster, user: i64) {
    within(30, "the user's Outlook sync requests served", || async {
        let row =
            cluster.db().row_opt("SELECT passes_wanted, passes_done FROM microsoft_sync_status WHERE user_id = ?1", &[json!(user)])?;
        (row[0].as_i64() <= row[1].as_i64()).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------- Calendly

const CALENDLY_KEY: &str = "calendly-signing-key-cluster-0123456789";
const HOST_URI: &str = "https://api.calendly.com/users/HOSTCLUSTER00000";
const HOST_EMAIL: &str = "host@example.com";

fn calendly_env() -> Vec<(&'static str, String)> {
    vec![("SYNCGATE_CALENDLY__SIGNING_KEYS", CALENDLY_KEY.into())]
}

/// The adviser the deliveries are for.
fn adviser(cluster: &Cluster) -> i64 {
    let (id, _) = cluster.add_user(HOST_EMAIL, "user");
    cluster.db().execute("UPDATE users SET calendly_user_uri = ?1 WHERE id = ?2", &[json!(HOST_URI), json!(id)]);
    id
}

/// An `invitee.created` delivery for booking `n` (its own event and invitee),
/// shaped as Calendly documents it, signed now.
fn booking(n: u64) -> (Vec<u8>, String) {
    let ev = format!("https://api.calendly.com/scheduled_events/EV{n:014}");
    let day = 10 + n % 15;
    let hour = 8 + n % 9;
    let scheduled_event = json!({
        "uri": ev,
        "name": "Financial review (30 min)",
        "meeting_notes_plain": null,
        "status": "active",
        "start_time": format!("2026-12-{day:02}T{hour:02}:00:00.000000Z"),
        "end_time": format!("2026-12-{day:02}T{hour:02}:30:00.000000Z"),
        "event_type": "https://api.calendly.com/event_types/ETAAAAAAAAAAAAAA",
        "location": {"type": "google_conference", "status": "pushed", "join_url": "https://meet.google.com/abc-defg-hij"},
        "invitees_counter": {"total": 1, "active": 1, "limit": 1},
        "created_at": "2026-11-23T17:51:18.327602Z",
        "updated_at": "2026-11-23T17:51:18.327602Z",
        "event_memberships": [{"user": HOST_URI, "user_email": HOST_EMAIL, "user_name": "Host"}],
        "event_guests": [],
        "calendar_event": {"kind": "google", "external_id": format!("gcal-cluster-{n}")}
    });
    let tracking = json!({"utm_campaign": null, "utm_source": null, "utm_medium": null, "utm_content": null, "utm_term": null, "salesforce_uuid": null});
    let invitee = json!({
        "uri": format!("{ev}/invitees/IN{n:014}"),
        "email": format!("invitee{n}@example.com"),
        "first_name": null, "last_name": null,
        "name": format!("Invitee {n}"),
        "status": "active",
        "timezone": "Europe/Berlin",
        "rescheduled": false, "old_invitee": null, "new_invitee": null,
        "event": ev,
        "cancel_url": format!("https://calendly.com/cancellations/IN{n:014}"),
        "reschedule_url": format!("https://calendly.com/reschedulings/IN{n:014}"),
        "questions_and_answers": [],
        "tracking": tracking,
        "text_reminder_number": null, "no_show": null, "reconfirmation": null, "payment": null, "cancellation": null,
        "created_at": "2026-11-23T17:51:18.327602Z",
        "updated_at": "2026-11-23T17:51:18.327602Z",
        "scheduled_event": scheduled_event
    });
    let body = json!({"event": "invitee.created", "created_at": "2026-11-23T17:54:22.000000Z", "created_by": HOST_URI, "payload": invitee});
    let raw = serde_json::to_vec(&body).unwrap();
    let header = signature::sign(CALENDLY_KEY, syncgate::auth::unix_now(), &raw);
    (raw, header)
}

/// POST a signed delivery to `base`: the status (0 for a connection error)
/// and the `outcome` syncgate answered.
async fn post_delivery(http: &reqwest::Client, base: &str, raw: &[u8], header: &str) -> (u16, String) {
    let r = http
        .post(format!("{base}/api/calendly/webhook"))
        .header("content-type", "application/json")
        .header("Calendly-Webhook-Signature", header)
        .body(raw.to_vec())
        .send()
        .await;
    match r {
        Ok(r) => {
            let (status, v) = helpers::decode(r).await;
            (status, v["outcome"].as_str().unwrap_or_default().to_string())
        }
        Err(_) => (0, String::new()),
    }
}

fn retryable(status: u16) -> bool {
    status == 0 || status == 429 || status >= 500
}

/// Meetings of the adviser made from Calendly, per scheduled event URI.
fn calendly_meetings(cluster: &Cluster, user: i64) -> HashMap<String, i64> {
    cluster
        .db()
        .rows_as::<(String, i64)>(
            "SELECT external_id, COUNT(*) FROM meetings WHERE user_id = ?1 AND source = 'calendly' GROUP BY external_id",
            &[json!(user)],
        )
        .into_iter()
        .collect()
}

// ---------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_change_once_in_order() {
    if sqlite_pass("three_nodes_deliver_every_change_once_in_order") {
        return;
    }
    let began = Instant::now();
    let cluster = Cluster::start(3, &[]).await;
    let people = people(&cluster, 6);
    let subs = subscribe(&cluster, &people, 20).await;

    let writers = Writers::start(&cluster, &people, 32, &[0, 1, 2]);
    tokio::time::sleep(Duration::from_secs(load_secs())).await;
    let writes = writers.finish().await;
    let delivered = settle(&cluster, subs, 30).await;

    let log = cluster.db_changes();
    eprintln!(
        "three nodes: {} acknowledged writes ({} failed), {} changes logged, {} frames to {} subscribers, {:.1} s",
        writes.acked.len(),
        writes.failed,
        log.len(),
        frames(&delivered),
        delivered.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(writes.acked.len() > 100, "the load wrote something: {}", writes.acked.len());
    assert_eq!(lost_writes(&log, &writes.acked), vec![], "every acknowledged write is in the log");
    assert_streams(&delivered);

    // Every node says who it is and has published the whole log; each lists all three.
    for i in 0..3 {
        let id = cluster.nodes[i].id.clone();
        let ready = within(20, "every node's tail at the head", || async {
            let (s, r) = cluster.ready(i).await;
            (s == 200 && r["tail"]["lag"] == 0).then_some(r)
        })
        .await;
        assert_eq!(ready["node"], id.as_str(), "{ready}");
        let health = cluster.cluster_health(i, &people.admin.1).await;
        assert_eq!(health["node"], id.as_str(), "{health}");
        let listed: Vec<(String, bool, bool)> = health["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| (n["id"].as_str().unwrap_or_default().to_string(), n["alive"] == true, n["settings_match"] == true))
                    .collect()
            })
            .unwrap_or_default();
        let mut ids: Vec<&str> = listed.iter().map(|n| n.0.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["node1", "node2", "node3"], "{health}");
        assert!(listed.iter().all(|n| n.1 && n.2), "all alive, same settings: {health}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_and_its_leases_move() {
    if sqlite_pass("a_killed_node_loses_nothing_and_its_leases_move") {
        return;
    }
    let began = Instant::now();
    let fake = FakeGoogle::start().await;
    // Renewed 6 s after registration, then every 6 s.
    let mut cluster = Cluster::start(3, &google_env(&fake, "12s", "6s")).await;
    let google_user = connect_google(&cluster, &fake, "ada@example.com", 0).await;
    let people = people(&cluster, 6);
    let (_, admin) = people.admin.clone();
    let subs = subscribe(&cluster, &people, 20).await;

    let writers = Writers::start(&cluster, &people, 32, &[0, 1, 2]);
    let secs = load_secs();
    tokio::time::sleep(Duration::from_millis(secs * 400)).await;
    // The node that runs the Google upkeep, so its renewals must move.
    let leases_before = cluster.leases();
    let victim = cluster.lease_holder("google_upkeep").and_then(|id| cluster.index_of(&id)).unwrap_or(1);
    let victim_id = cluster.nodes[victim].id.clone();
    let held: Vec<String> = match &leases_before {
        // A user's `google_sync:<id>` is held only while a sync runs: nobody takes it over.
        Ok(l) => l
            .iter()
            .filter(|l| l.1.as_deref() == Some(victim_id.as_str()) && !l.0.starts_with("google_sync:"))
            .map(|l| l.0.clone())
            .collect(),
        Err(_) => Vec::new(),
    };
    let killed_at = now_ms();
    cluster.kill(victim).await;
    let killed = Instant::now();
    // While the load goes on: when is every lease it held held by a live node?
    let moved: Result<(f64, Vec<crate::cluster_nodes::Lease>), String> = loop {
        let now = match cluster.leases() {
            Ok(now) => now,
            Err(e) => break Err(e),
        };
        let all_moved =
            !held.is_empty() && held.iter().all(|name| now.iter().any(|l| &l.0 == name && l.1.as_deref().is_some_and(|h| h != victim_id)));
        if all_moved {
            break Ok((killed.elapsed().as_secs_f64(), now));
        }
        if killed.elapsed() > Duration::from_secs(20) {
            break Err(format!("after 20 s (10 x lease_ttl) the leases {held:?} of {victim_id} have not moved: {now:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(secs * 600).saturating_sub(killed.elapsed())).await;
    let writes = writers.finish().await;
    let delivered = settle(&cluster, subs, 30).await;

    let log = cluster.db_changes();
    eprintln!(
        "killed {victim_id} (held {held:?}): {} acknowledged writes ({} failed), {} frames, {} reconnects",
        writes.acked.len(),
        writes.failed,
        frames(&delivered),
        delivered.iter().map(|d| d.state.reconnects).sum::<u32>()
    );
    assert_eq!(lost_writes(&log, &writes.acked), vec![], "no acknowledged write is lost");
    assert_streams(&delivered);
    for d in delivered.iter().filter(|d| d.first_node == victim) {
        assert!(d.state.reconnects >= 1 && d.state.node != victim, "a subscriber of the killed node moved: {:?}", d.state.node);
    }

    // Its leases: held by a live node within 10 x lease_ttl.
    let leases = leases_before.expect("cluster_leases is readable");
    assert!(!held.is_empty(), "the killed node held at least google_upkeep: {leases:?}");
    let (after, moved) = moved.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("its leases held by live nodes {after:.1} s after the kill: {moved:?}");
    let live = (0..3).find(|i| *i != victim).unwrap();
    let health = cluster.cluster_health(live, &admin).await;
    for name in &held {
        let l = health["leases"].as_array().and_then(|a| a.iter().find(|l| l["name"] == name.as_str()).cloned());
        let l = l.unwrap_or_else(|| panic!("/api/admin/health lists lease {name}: {health}"));
        assert_ne!(l["holder"], victim_id.as_str(), "{l}");
        assert_eq!(l["live"], true, "{l}");
    }
    let dead = health["nodes"].as_array().and_then(|a| a.iter().find(|n| n["id"] == victim_id.as_str()).cloned());
    eprintln!("the killed node as /api/admin/health shows it: {dead:?}");

    // The renewals it owned still happen: a channel registered after the kill
    // becomes the user's active one.
    let renewed = within(40, "a channel renewal after the kill", || async {
        let (active, _) = active_channel(&cluster, google_user)?;
        let at_google = fake.channels("ada@example.com").into_iter().find(|c| c.id == active)?;
        (at_google.created_ms > killed_at && !at_google.stopped).then_some(at_google)
    })
    .await;
    let renewals_since = fake.channels("ada@example.com").iter().filter(|c| c.created_ms > killed_at).count();
    eprintln!(
        "{renewals_since} channels registered since the kill, the active one {} ms after it; whole test {:.1} s",
        renewed.created_ms - killed_at,
        began.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_catches_up_in_order() {
    if sqlite_pass("a_paused_node_catches_up_in_order") {
        return;
    }
    let began = Instant::now();
    let cluster = Cluster::start(3, &[]).await;
    let people = people(&cluster, 6);
    let admin = people.admin.1.clone();
    let subs = subscribe(&cluster, &people, 10).await;
    let paused = 2;
    let paused_id = cluster.nodes[paused].id.clone();

    // Writes go to the other two nodes only.
    let writers = Writers::start(&cluster, &people, 16, &[0, 1]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.pause(paused);
    let paused_at = Instant::now();
    // Node 1 sees the paused node's heartbeat go stale and its tail fall behind.
    let mut heartbeats = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let shown = loop {
        let health = cluster.cluster_health(0, &admin).await;
        let node = health["nodes"].as_array().and_then(|a| a.iter().find(|n| n["id"] == paused_id.as_str()).cloned());
        if let Some(node) = &node {
            heartbeats.push(node["heartbeat_at"].clone());
            if node["lag"].as_i64().is_some_and(|l| l > 0) && node["alive"] == false {
                break Ok(node.clone());
            }
        }
        if Instant::now() > deadline {
            let sessions = cluster.stalled_sessions().join("\n  ");
            break Err(format!(
                "node1 never showed {paused_id} behind and not alive: {health}\nPostgreSQL sessions waiting or idle in a transaction meanwhile:\n  {sessions}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{:.1} s into the pause node1 shows {paused_id}: {shown:?}", paused_at.elapsed().as_secs_f64());
    heartbeats.dedup();

    // Asked while paused (on a connection of its own: the kernel accepts it),
    // answered once it runs again.
    let asked = {
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().unwrap();
        let url = cluster.url(paused, "/health/ready");
        tokio::spawn(async move {
            match http.get(url).send().await {
                Ok(r) => helpers::decode(r).await,
                Err(e) => (0, json!(e.to_string())),
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.resume(paused);
    let (status, ready) = asked.await.unwrap();
    eprintln!("/health/ready of {paused_id} asked during the pause: {status} {ready}");
    assert!(ready["tail"].is_object(), "{ready}");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = writers.finish().await;
    let delivered = settle(&cluster, subs, 30).await;
    let log = cluster.db_changes();
    eprintln!(
        "paused {paused_id}: {} acknowledged writes, {} frames ({} to its own subscribers)",
        writes.acked.len(),
        frames(&delivered),
        delivered.iter().filter(|d| d.first_node == paused).map(|d| d.state.seen.len()).sum::<usize>()
    );
    assert_eq!(lost_writes(&log, &writes.acked), vec![]);
    assert_streams(&delivered);
    let caught_up = within(20, "the paused node's tail lag back at 0", || async {
        let (s, r) = cluster.ready(paused).await;
        (s == 200 && r["tail"]["lag"] == 0).then_some(r)
    })
    .await;
    eprintln!("{paused_id} ready again: {caught_up}; whole test {:.1} s", began.elapsed().as_secs_f64());
    // What another node showed during the pause (checked last, so a run
    // without it still says whether the catch-up worked).
    shown.unwrap_or_else(|e| panic!("{e}"));
    assert!(heartbeats.len() <= 2, "the heartbeat stood still during the pause: {heartbeats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_burst_over_two_nodes_coalesces() {
    if sqlite_pass("a_google_burst_over_two_nodes_coalesces") {
        return;
    }
    let fake = FakeGoogle::start().await;
    let cluster = Cluster::start(2, &google_env(&fake, "7d", "1d")).await;
    let email = "ada@example.com";
    let user = connect_google(&cluster, &fake, email, 0).await;
    let passes_before = fake.list_passes(email);
    // Slow lists: two passes at once would overlap and show.
    fake.set_list_delay(Duration::from_millis(300));
    let day = (time::OffsetDateTime::now_utc() + time::Duration::days(2)).date();
    let event = fake.create_event(
        email,
        json!({"summary": "Burst", "start": {"dateTime": format!("{day}T10:00:00Z"), "timeZone": "UTC"}, "end": {"dateTime": format!("{day}T11:00:00Z"), "timeZone": "UTC"}}),
    );
    let channel = fake.active_channels(email).into_iter().next().expect("a live channel");

    let mut answers = Vec::new();
    for k in 0..20u64 {
        let address = cluster.url((k % 2) as usize, "/api/calendar/webhook");
        let number = channel.message_number + 1 + k;
        answers.push(
            fake.send_notification(
                &address,
                &channel.id,
                channel.token.as_deref(),
                &channel.resource_id,
                "exists",
                number,
                channel.expiration_ms,
            )
            .await,
        );
    }
    assert!(answers.iter().all(|s| *s == 200), "every notification accepted: {answers:?}");
    within(30, "the pushed event in the database", || async {
        let title: Option<String> = cluster.db().value_opt(
            "SELECT title FROM meetings WHERE user_id = ?1 AND source = 'google' AND external_id = ?2",
            &[json!(user), json!(event)],
        );
        (title.as_deref() == Some("Burst")).then_some(())
    })
    .await;
    // Let a pass queued at the end of the burst run and finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let passes = fake.list_passes(email) - passes_before;
    let concurrent = fake.max_concurrent_lists(email);
    eprintln!("20 notifications over 2 nodes: {passes} list passes, at most {concurrent} at once");
    assert!((1..=3).contains(&passes), "the burst coalesced into few passes: {passes}");
    assert!(concurrent <= 1, "never two lists for one user at once: {concurrent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_calendly_delivery_posted_to_two_nodes_makes_one_meeting() {
    if sqlite_pass("one_calendly_delivery_posted_to_two_nodes_makes_one_meeting") {
        return;
    }
    let cluster = Cluster::start(2, &calendly_env()).await;
    let host = adviser(&cluster);
    let rounds = 10u64;
    let mut answers = Vec::new();
    for n in 0..rounds {
        let (raw, header) = booking(n);
        let send = |node: usize| {
            let http = cluster.http.clone();
            let base = cluster.base(node).to_string();
            let (raw, header) = (raw.clone(), header.clone());
            async move {
                let mut statuses = vec![post_delivery(&http, &base, &raw, &header).await];
                while retryable(statuses.last().unwrap().0) && statuses.len() < 10 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    statuses.push(post_delivery(&http, &base, &raw, &header).await);
                }
                statuses
            }
        };
        let (a, b) = tokio::join!(send(0), send(1));
        answers.push((a, b));
    }
    eprintln!("answers (node1, node2) per delivery: {answers:?}");
    for (a, b) in &answers {
        let (a, b) = (a.last().unwrap(), b.last().unwrap());
        assert!((200..300).contains(&a.0) && (200..300).contains(&b.0), "both finally 2xx: {a:?} {b:?}");
        let mut outcomes = [a.1.as_str(), b.1.as_str()];
        outcomes.sort();
        assert_eq!(outcomes, ["accepted", "duplicate"], "one applied, the other known as a duplicate");
    }
    let meetings = calendly_meetings(&cluster, host);
    assert_eq!(meetings.len(), rounds as usize, "one meeting per booking: {meetings:?}");
    assert!(meetings.values().all(|n| *n == 1), "never two: {meetings:?}");
    let clients: Vec<(String, i64)> =
        cluster.db().rows_as("SELECT email, COUNT(*) FROM clients WHERE user_id = ?1 GROUP BY email HAVING COUNT(*) > 1", &[json!(host)]);
    assert_eq!(clients, vec![], "one client per invitee");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_no_webhook_and_leaves_no_gap() {
    if sqlite_pass("a_rolling_restart_loses_no_webhook_and_leaves_no_gap") {
        return;
    }
    let began = Instant::now();
    let mut cluster = Cluster::start(3, &calendly_env()).await;
    let host = adviser(&cluster);
    let people = people(&cluster, 6);
    let subs = subscribe(&cluster, &people, 10).await;
    let writers = Writers::start(&cluster, &people, 16, &[0, 1, 2]);

    // Two senders acting like Calendly behind a load balancer: a connection
    // error, 429 or 5xx is retried on the next node.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..2usize)
        .map(|s| {
            let (stop, next, bases, http) = (stop.clone(), next.clone(), cluster.bases(), cluster.http.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed, mut retried) = (Vec::new(), 0u64, Vec::new());
                let mut at = s;
                while !stop.load(Ordering::Acquire) {
                    let n = next.fetch_add(1, Ordering::AcqRel);
                    let (raw, header) = booking(1000 + n);
                    let mut delivered = false;
                    for _ in 0..100 {
                        let (status, _) = post_delivery(&http, &bases[at % bases.len()], &raw, &header).await;
                        if (200..300).contains(&status) {
                            delivered = true;
                            break;
                        }
                        if !retryable(status) {
                            eprintln!("delivery {n}: {status} is not retryable");
                            break;
                        }
                        retried.push(status);
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if delivered {
                        ok.push(1000 + n);
                    } else {
                        failed += 1;
                    }
                    at += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (ok, failed, retried)
            })
        })
        .collect();

    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let t = Instant::now();
        cluster.terminate(i).await;
        let stopped = t.elapsed();
        cluster.restart(i).await;
        eprintln!(
            "restarted {}: stopped in {:.1} s, ready {:.1} s later",
            cluster.nodes[i].id,
            stopped.as_secs_f64(),
            (t.elapsed() - stopped).as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Release);
    let (mut delivered_ok, mut webhook_failures, mut retried) = (Vec::new(), 0, Vec::new());
    for s in senders {
        let (ok, failed, r) = s.await.unwrap();
        delivered_ok.extend(ok);
        webhook_failures += failed;
        retried.extend(r);
    }
    let writes = writers.finish().await;
    let delivered = settle(&cluster, subs, 30).await;
    let log = cluster.db_changes();

    let realtime_gaps: usize = delivered.iter().map(|d| d.check.faults() + d.state.gaps as usize).sum();
    eprintln!(
        "rolling restart: {} deliveries (answers retried on the next node: {retried:?}), {} acknowledged writes, {} frames, {} reconnects, {:.1} s",
        delivered_ok.len(),
        writes.acked.len(),
        frames(&delivered),
        delivered.iter().map(|d| d.state.reconnects).sum::<u32>(),
        began.elapsed().as_secs_f64()
    );
    let mut closes: Vec<u16> = delivered.iter().flat_map(|d| d.state.closes.clone()).collect();
    closes.sort_unstable();
    closes.dedup();
    eprintln!("close codes the subscribers saw: {closes:?}");
    eprintln!("webhook failures: {webhook_failures}, realtime gaps: {realtime_gaps}");
    assert_eq!(webhook_failures, 0, "every delivery finally got a 2xx");
    assert_streams(&delivered);
    assert_eq!(realtime_gaps, 0);
    assert_eq!(lost_writes(&log, &writes.acked), vec![], "no acknowledged write is lost");
    let meetings = calendly_meetings(&cluster, host);
    assert_eq!(meetings.len(), delivered_ok.len(), "one meeting per delivered booking");
    assert!(meetings.values().all(|n| *n == 1), "{meetings:?}");
    for d in &delivered {
        assert!(d.state.reconnects >= 1, "every node restarted, so every subscriber moved at least once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_microsoft_burst_over_two_nodes_coalesces() {
    if sqlite_pass("a_microsoft_burst_over_two_nodes_coalesces") {
        return;
    }
    let fake = FakeGraph::start().await;
    let cluster = Cluster::start(2, &microsoft_env(&fake, "4230m", "1d")).await;
    let user = connect_outlook(&cluster, &fake, 0).await;
    let sub = fake.active_subscriptions(OUTLOOK_UPN).remove(0);
    let passes_before = fake.delta_passes(OUTLOOK_UPN);
    // Slow delta answers: two passes at once would overlap and show.
    fake.set_delta_delay(Duration::from_millis(300));
    let cal = fake.default_calendar(OUTLOOK_UPN);
    let day = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let ids: Vec<String> = (0..20)
        .map(|k| {
            let at = |h: i64| crate::microsoft_e2e::naive(day + time::Duration::minutes(30 * k + h));
            fake.create_event(
                OUTLOOK_UPN,
                &cal,
                json!({"subject": format!("Burst {k}"), "start": {"dateTime": at(0), "timeZone": "UTC"}, "end": {"dateTime": at(20), "timeZone": "UTC"}}),
            )
        })
        .collect();
    // One notification per event, over both nodes at once, as Graph's
    // deliveries behind a load balancer would come.
    let sends = ids.iter().enumerate().map(|(k, id)| {
        let item = fake.notification_item(&sub.id, "created", id);
        let url = cluster.url(k % 2, "/api/microsoft/webhook");
        let fake = fake.clone();
        async move { fake.send_batch(&url, vec![item]).await }
    });
    let answers = futures_util::future::join_all(sends).await;
    assert!(answers.iter().all(|s| *s == 202), "every notification accepted: {answers:?}");
    let count = || {
        cluster.db().rows_as::<(String, i64)>(
            "SELECT microsoft_event_id, COUNT(*) FROM meetings WHERE user_id = ?1 AND source = 'microsoft' GROUP BY microsoft_event_id",
            &[json!(user)],
        )
    };
    within(30, "all twenty meetings", || async { (count().len() == 20).then_some(()) }).await;
    outlook_quiet(&cluster, user).await;
    let passes = fake.delta_passes(OUTLOOK_UPN) - passes_before;
    let concurrent = fake.max_concurrent_deltas(OUTLOOK_UPN);
    eprintln!("20 Outlook notifications over 2 nodes: {passes} delta passes, at most {concurrent} delta calls at once");
    assert!((1..=3).contains(&passes), "the burst coalesced into few passes: {passes}");
    assert!(concurrent <= 1, "never two delta rounds for one user at once: {concurrent}");
    let twice: Vec<(String, i64)> = count().into_iter().filter(|(_, n)| *n != 1).collect();
    assert_eq!(twice, vec![], "every change arrived once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_microsoft_upkeep_moves_off_a_killed_node_and_keeps_extending_the_subscription() {
    if sqlite_pass("the_microsoft_upkeep_moves_off_a_killed_node_and_keeps_extending_the_subscription") {
        return;
    }
    let fake = FakeGraph::start().await;
    // Subscriptions of 12 s, extended 8 s before expiry: every 4 s or so.
    let mut cluster = Cluster::start(2, &microsoft_env(&fake, "12s", "8s")).await;
    let (_, admin) = cluster.add_user("root@contoso.example", "admin");
    connect_outlook(&cluster, &fake, 0).await;
    let first = fake.active_subscriptions(OUTLOOK_UPN).remove(0);
    // One node holds the upkeep, both say so, and it extends in place.
    let holder = within(20, "the microsoft_upkeep lease", || async { cluster.lease_holder("microsoft_upkeep") }).await;
    for node in 0..2 {
        let health = cluster.cluster_health(node, &admin).await;
        let l = health["leases"].as_array().and_then(|a| a.iter().find(|l| l["name"] == "microsoft_upkeep").cloned());
        let l = l.unwrap_or_else(|| panic!("node{} lists microsoft_upkeep: {health}", node + 1));
        assert_eq!(l["holder"], holder.as_str(), "{l}");
    }
    within(20, "an extension before the kill", || async {
        fake.active_subscriptions(OUTLOOK_UPN).into_iter().find(|s| s.id == first.id && s.renewals >= 1).map(|_| ())
    })
    .await;

    let victim = cluster.index_of(&holder).expect("the holder is a node");
    cluster.kill(victim).await;
    let renewals_at_kill = fake.subscriptions(OUTLOOK_UPN).iter().map(|s| s.renewals).max().unwrap_or(0);
    let survivor = cluster.nodes[1 - victim].id.clone();
    within(20, "the upkeep lease on the live node", || async {
        (cluster.lease_holder("microsoft_upkeep").as_deref() == Some(survivor.as_str())).then_some(())
    })
    .await;
    // The live node keeps extending the same subscription in place.
    let extended = within(30, "two extensions after the kill", || async {
        fake.active_subscriptions(OUTLOOK_UPN).into_iter().find(|s| s.id == first.id && s.renewals >= renewals_at_kill + 2)
    })
    .await;
    eprintln!("microsoft_upkeep moved from {holder} to {survivor}; the subscription extended {} times in all", extended.renewals);
    assert_eq!(fake.subscriptions(OUTLOOK_UPN).len(), 1, "never recreated, never a second one");
    assert_eq!(fake.active_subscriptions(OUTLOOK_UPN).len(), 1);
}
