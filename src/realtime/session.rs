//! One WebSocket session: decodes client frames, joins and leaves channels,
//! swaps tokens, expires them on a timer, and writes the frames the hub
//! queued — feeding every waiting frame and flushing once. Each channel keeps
//! a cursor (the last seq it was given) so resume, snapshot and catch-up from
//! the `changes` log hand over to live frames with no gap and no duplicate.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::channel::{Binding, BindingError, Channel};
use super::hub::{data_json, Delivery, Hub, Published, SocketShared, SocketSubs};
use super::protocol::{self as proto, Inbound, Vsn};
use crate::auth::{unix_now, Claims, Tokens};
use crate::config::RealtimeConfig;
use crate::store::tables::ALL_TABLES;
use crate::store::{changes, rows, Store, Table};

/// Everything a session needs from the server.
#[derive(Clone)]
pub struct SessionCtx {
    pub hub: Arc<Hub>,
    pub store: Store,
    pub tokens: Tokens,
    pub cfg: RealtimeConfig,
    pub shutdown: watch::Receiver<bool>,
}

/// How a session ends, and what the client is told.
enum End {
    ClientClosed,
    Close(u16, &'static str),
    Broken,
}

/// The per-channel state only the session touches.
struct Cursor {
    seq: i64,
}

struct Session<S> {
    ctx: SessionCtx,
    vsn: Vsn,
    apikey_claims: Claims,
    ws: WebSocketStream<S>,
    shared: Arc<SocketShared>,
    rx: mpsc::Receiver<Delivery>,
    cursors: HashMap<u64, Cursor>,
    /// Frames waiting to be fed to the socket before the next flush.
    out: Vec<String>,
    exp: Option<i64>,
    registered: bool,
    /// Set when handling a message decided the session must end (a replay
    /// found the client too slow); the loop ends it next.
    ending: Option<End>,
}

pub async fn run<S>(ws: WebSocketStream<S>, ctx: SessionCtx, vsn: Vsn, apikey_claims: Claims)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::channel(ctx.cfg.queue_size);
    let shared = Arc::new(SocketShared {
        id: ctx.hub.next_id(),
        tx,
        lagging: Default::default(),
        lag_from: Default::default(),
        delivered: Default::default(),
        kill: Default::default(),
        subs: std::sync::Mutex::new(SocketSubs::default()),
    });
    let mut s = Session { ctx, vsn, apikey_claims, ws, shared, rx, cursors: HashMap::new(), out: Vec::new(), exp: None, registered: false, ending: None };
    let end = s.run_loop().await;
    s.finish(end).await;
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn run_loop(&mut self) -> End {
        let idle_timeout = self.ctx.cfg.idle_timeout.0;
        let mut idle_deadline = Instant::now() + idle_timeout;
        let mut shutdown = self.ctx.shutdown.clone();
        loop {
            let expiry = self.exp.map(|e| {
                let secs = (e - unix_now()).max(0) as u64;
                Instant::now() + Duration::from_secs(secs)
            });
            tokio::select! {
                biased;
                _ = shutdown.changed() => return End::Close(1001, "server shutting down"),
                _ = self.shared.kill.notified() => {
                    return self.slow_consumer_close().await;
                }
                msg = self.ws.next() => {
                    idle_deadline = Instant::now() + idle_timeout;
                    match msg {
                        None => return End::ClientClosed,
                        Some(Err(_)) => return End::Broken,
                        Some(Ok(Message::Text(t))) => self.on_text(t.as_str()).await,
                        Some(Ok(Message::Binary(_))) => {
                            let f = proto::reply_error(self.vsn, None, None, "phoenix", "binary frames are not supported; send JSON text frames");
                            self.out.push(f);
                        }
                        Some(Ok(Message::Close(_))) => return End::ClientClosed,
                        Some(Ok(_)) => {}
                    }
                }
                d = self.rx.recv() => {
                    if let Some(d) = d {
                        self.take_delivery(d);
                        while self.out.len() < 1024 {
                            match self.rx.try_recv() {
                                Ok(d) => self.take_delivery(d),
                                Err(_) => break,
                            }
                        }
                    }
                }
                _ = sleep_until(idle_deadline) => return End::Close(1000, "no heartbeat received; closing idle socket"),
                _ = sleep_until(expiry.unwrap_or(idle_deadline + idle_timeout)), if expiry.is_some() => {
                    self.expire_all();
                }
            }
            if let Some(end) = self.ending.take() {
                return end;
            }
            if self.flush().await.is_err() {
                return End::Broken;
            }
            if self.shared.lagging.load(Ordering::Acquire) && self.rx.is_empty() {
                if let Err(end) = self.catch_up().await {
                    return end;
                }
            }
        }
    }

    /// Write every waiting frame, then flush once.
    async fn flush(&mut self) -> Result<(), ()> {
        if self.out.is_empty() {
            return Ok(());
        }
        for f in self.out.drain(..) {
            if self.ws.feed(Message::text(f)).await.is_err() {
                return Err(());
            }
        }
        let kill = &self.shared.kill;
        tokio::select! {
            r = self.ws.flush() => r.map_err(|_| ()),
            // A client that stopped reading must not pin this task forever.
            _ = kill.notified() => { kill.notify_one(); Ok(()) }
        }
    }

    fn take_delivery(&mut self, d: Delivery) {
        let Some(cur) = self.cursors.get_mut(&d.gen) else { return };
        let seq = d.item.change.seq;
        if seq <= cur.seq {
            return;
        }
        cur.seq = seq;
        self.out.push(proto::encode_change(self.vsn, &d.topic, &d.ids, &d.item.data));
        self.shared.delivered.fetch_max(seq, Ordering::Relaxed);
        self.ctx.hub.stats.frames_delivered.fetch_add(1, Ordering::Relaxed);
    }

    async fn on_text(&mut self, text: &str) {
        let msg = match proto::decode(self.vsn, text) {
            Ok(m) => m,
            Err(e) => {
                let topic = e.topic.as_deref().unwrap_or("phoenix");
                let f = proto::reply_error(self.vsn, e.join_ref.as_deref(), e.reference.as_deref(), topic, &e.message);
                self.out.push(f);
                return;
            }
        };
        match (msg.topic.as_str(), msg.event.as_str()) {
            ("phoenix", "heartbeat") => {
                self.out.push(proto::reply_ok(self.vsn, None, msg.reference.as_deref(), "phoenix", "{}"));
            }
            (_, "phx_join") => self.join(msg).await,
            (_, "phx_leave") => self.leave(&msg),
            (_, "access_token") => self.swap_token(&msg),
            (_, ev) => {
                let reason = if ev == "broadcast" || ev == "presence" {
                    format!("{ev} is not supported; syncgate offers postgres_changes only")
                } else {
                    format!("unknown event \"{}\"", crate::api::input::clip(ev))
                };
                self.out.push(proto::reply_error(self.vsn, msg.join_ref.as_deref(), msg.reference.as_deref(), &msg.topic, &reason));
            }
        }
    }

    fn refuse(&mut self, msg: &Inbound, reason: &str) {
        self.out.push(proto::reply_error(self.vsn, msg.join_ref.as_deref(), msg.reference.as_deref(), &msg.topic, reason));
    }

    fn claims_for(&self, payload: &Value) -> Result<Claims, String> {
        match payload.get("access_token") {
            Some(Value::String(t)) if !t.is_empty() => self.ctx.tokens.verify(t).map_err(|e| e.to_string()),
            Some(Value::Null) | None => Ok(self.apikey_claims.clone()),
            Some(_) => Err("access_token must be a string".into()),
        }
    }

    async fn join(&mut self, msg: Inbound) {
        let claims = match self.claims_for(&msg.payload) {
            Ok(c) => c,
            Err(why) => return self.refuse(&msg, &why),
        };
        let Some(user_id) = claims.user_id() else {
            return self.refuse(&msg, "sign in first: the anon key cannot join; send a user token as access_token");
        };
        let admin = claims.is_admin();
        {
            let subs = self.lock();
            if self.registered && subs.user_id != user_id {
                drop(subs);
                return self.refuse(&msg, "this socket is signed in as another user; open a new socket");
            }
        }
        let config = msg.payload.get("config").cloned().unwrap_or(Value::Null);
        let entries: Vec<Value> = match config.get("postgres_changes") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return self.refuse(&msg, "config.postgres_changes must be a list"),
        };
        let cfg = self.ctx.cfg.clone();
        if entries.len() > cfg.max_bindings_per_channel {
            return self.refuse(&msg, &format!("at most {} bindings per channel", cfg.max_bindings_per_channel));
        }
        let mut bindings = Vec::with_capacity(entries.len());
        let mut problems = Vec::new();
        for e in &entries {
            let id = (self.ctx.hub.next_id() % (u32::MAX as u64)) as u32;
            match Binding::parse(e, id) {
                Ok((b, p)) => {
                    bindings.push(b);
                    problems.extend(p);
                }
                Err(BindingError::Refuse(why)) => return self.refuse(&msg, &why),
            }
        }
        // A join on a topic this socket already has replaces it (a rejoin).
        let (same_topic_bindings, other_channels) = {
            let subs = self.lock();
            let same: usize = subs.channels.iter().filter(|c| *c.topic == *msg.topic).map(|c| c.bindings.len()).sum();
            let others = subs.channels.iter().filter(|c| *c.topic != *msg.topic).count();
            (same, others)
        };
        if other_channels + 1 > cfg.max_channels_per_socket {
            return self.refuse(&msg, &format!("at most {} channels per socket", cfg.max_channels_per_socket));
        }
        if !self.registered && self.ctx.hub.user_sockets(user_id) >= cfg.max_sockets_per_user {
            return self.refuse(&msg, &format!("at most {} subscribed sockets per user", cfg.max_sockets_per_user));
        }
        let user_total = self.ctx.hub.user_bindings(user_id).saturating_sub(same_topic_bindings) + bindings.len();
        if user_total > cfg.max_bindings_per_user {
            return self.refuse(&msg, &format!("at most {} bindings per user across sockets", cfg.max_bindings_per_user));
        }

        let resume_since = match config.get("resume") {
            None | Some(Value::Null) => None,
            Some(r) => match r.get("since").and_then(Value::as_i64) {
                Some(n) if n >= 0 => Some(n),
                _ => return self.refuse(&msg, "config.resume.since must be a seq number (0 or more)"),
            },
        };
        let snapshot = matches!(config.get("snapshot"), Some(Value::Bool(true)));
        if snapshot && resume_since.is_some() {
            return self.refuse(&msg, "use either config.snapshot or config.resume, not both");
        }

        // Register first, then read the log: anything committed from here on
        // arrives live, anything before is in the read; the cursor drops the overlap.
        let gen = self.ctx.hub.next_id();
        let topic: Arc<str> = Arc::from(msg.topic.as_str());
        let echo: Vec<Value> = bindings.iter().map(|b| b.echo.clone()).collect();
        let binding_count = bindings.len() as i64;
        let channel = Channel { gen, topic: topic.clone(), join_ref: msg.join_ref.clone(), bindings };
        self.detach_channel(&msg.topic);
        {
            let mut subs = self.lock();
            subs.user_id = user_id;
            subs.admin = admin;
            subs.channels.push(channel);
        }
        self.ctx.hub.stats.channels.fetch_add(1, Ordering::Relaxed);
        self.ctx.hub.stats.bindings.fetch_add(binding_count, Ordering::Relaxed);
        self.ctx.hub.place(&self.shared, user_id, admin);
        self.registered = true;
        self.exp = Some(claims.exp);
        let head = self.ctx.hub.head();
        self.cursors.insert(gen, Cursor { seq: head });
        self.shared.delivered.fetch_max(head, Ordering::Relaxed);

        let mut response = serde_json::Map::new();
        response.insert("postgres_changes".into(), Value::Array(echo.clone()));
        response.insert("seq".into(), Value::from(head));
        let jr = msg.join_ref.as_deref();
        self.out.push(proto::reply_ok(self.vsn, jr, msg.reference.as_deref(), &msg.topic, &Value::Object(response).to_string()));
        if !echo.is_empty() {
            self.out.push(proto::system(self.vsn, jr, &msg.topic, "ok", "Subscribed to PostgreSQL", &[]));
        }
        for p in problems {
            self.out.push(proto::system(self.vsn, jr, &msg.topic, "error", &p, &[]));
        }
        if let Some(since) = resume_since {
            self.resume(gen, &topic, jr.map(str::to_string), since).await;
        } else if snapshot {
            self.snapshot(gen, &topic, jr.map(str::to_string)).await;
        }
    }

    /// Replay the log after `since` to one channel, or say `gap`.
    async fn resume(&mut self, gen: u64, topic: &Arc<str>, join_ref: Option<String>, since: i64) {
        // Oldest retained and head from one read snapshot: the live head may
        // already be past an (at read time) empty log without anything lost.
        let (oldest, head) = self
            .ctx
            .store
            .read(|c| {
                let tx = c.unchecked_transaction()?;
                let o = changes::oldest(&tx)?;
                let h = changes::head(&tx)?;
                tx.commit()?;
                Ok((o, h))
            })
            .await
            .unwrap_or((None, 0));
        let lost = match oldest {
            Some(o) => since + 1 < o,
            None => since < head,
        };
        if lost {
            let first = oldest.unwrap_or(head + 1);
            self.out.push(proto::system(
                self.vsn,
                join_ref.as_deref(),
                topic,
                "gap",
                &format!("changes after {since} are no longer kept (oldest is {first}); refetch, for example by rejoining with snapshot"),
                &[("seq", json!(first))],
            ));
            // Live from the head on.
            return;
        }
        if let Some(c) = self.cursors.get_mut(&gen) {
            c.seq = since;
        }
        if let Err(end) = self.replay_from_log(Some(gen), false).await {
            self.ending = Some(end);
        }
    }

    /// Read the log after the lowest cursor of `only` (or of every channel)
    /// up to the head, delivering what each channel matches and may see.
    ///
    /// At most `CONCURRENT_REPLAYS` sessions hold a page at once; a client that
    /// cannot take a page within `REPLAY_FLUSH` is closed as a slow consumer,
    /// so it cannot hold a permit forever.
    async fn replay_from_log(&mut self, only: Option<u64>, enforce_lag: bool) -> Result<(), End> {
        const PAGE: usize = 256;
        const REPLAY_FLUSH: Duration = Duration::from_secs(15);
        let hub = self.ctx.hub.clone();
        loop {
            let _permit = hub.replays.acquire().await.map_err(|_| End::Close(1001, "server shutting down"))?;
            let from = match only {
                Some(g) => self.cursors.get(&g).map(|c| c.seq),
                None => self.cursors.values().map(|c| c.seq).min(),
            };
            let Some(from) = from else { return Ok(()) };
            let head = self.ctx.hub.head();
            if enforce_lag && head - from > self.ctx.cfg.max_lag as i64 {
                return Err(self.slow_consumer_close().await);
            }
            let page = self.ctx.store.read(move |c| Ok(changes::read_after(c, from, PAGE)?)).await.unwrap_or_default();
            let n = page.len();
            for change in page {
                let seq = change.seq;
                let item = Published::new(change);
                let frames = {
                    let subs = self.lock();
                    let visible = subs.admin || subs.user_id == item.change.user_id;
                    let mut frames = Vec::new();
                    for ch in &subs.channels {
                        if only.is_some_and(|g| g != ch.gen) {
                            continue;
                        }
                        let Some(cur) = self.cursors.get(&ch.gen) else { continue };
                        if seq <= cur.seq {
                            continue;
                        }
                        if visible {
                            let ids = ch.matching_ids(&item.change);
                            if !ids.is_empty() {
                                frames.push(proto::encode_change(self.vsn, &ch.topic, &ids, &item.data));
                            }
                        }
                    }
                    frames
                };
                for (g, c) in self.cursors.iter_mut() {
                    if only.is_none_or(|o| o == *g) && c.seq < seq {
                        c.seq = seq;
                    }
                }
                self.ctx.hub.stats.frames_delivered.fetch_add(frames.len() as u64, Ordering::Relaxed);
                self.out.extend(frames);
                self.shared.delivered.fetch_max(seq, Ordering::Relaxed);
                if self.out.len() >= 64 {
                    self.flush_replay(REPLAY_FLUSH).await?;
                }
            }
            self.flush_replay(REPLAY_FLUSH).await?;
            if n < PAGE {
                return Ok(());
            }
        }
    }

    async fn flush_replay(&mut self, limit: Duration) -> Result<(), End> {
        match tokio::time::timeout(limit, self.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(())) => Err(End::Broken),
            Err(_) => Err(self.slow_consumer_close().await),
        }
    }

    /// Frames for the rows the channel's bindings match, read in one read
    /// transaction together with the head seq they are consistent with.
    async fn snapshot(&mut self, gen: u64, topic: &Arc<str>, join_ref: Option<String>) {
        let (user_id, admin, tables) = {
            let subs = self.lock();
            let tables: Vec<Table> = subs
                .channels
                .iter()
                .find(|c| c.gen == gen)
                .map(|c| {
                    let mut t: Vec<Table> = Vec::new();
                    for b in &c.bindings {
                        match b.table {
                            Some(x) if !t.contains(&x) => t.push(x),
                            None => {
                                for x in ALL_TABLES {
                                    if !t.contains(&x) {
                                        t.push(x);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    t
                })
                .unwrap_or_default();
            (subs.user_id, subs.admin, tables)
        };
        let read = self
            .ctx
            .store
            .read(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let head = changes::head(&tx)?;
                let mut out = Vec::new();
                for t in tables {
                    let sql = if admin {
                        format!("{} ORDER BY id", rows::select_sql(t))
                    } else {
                        format!("{} WHERE user_id = ?1 ORDER BY id", rows::select_sql(t))
                    };
                    let mut stmt = tx.prepare(&sql)?;
                    let mapped: Vec<Value> = if admin {
                        stmt.query_map([], |r| rows::row_to_json(t, r))?.collect::<Result<_, _>>()?
                    } else {
                        stmt.query_map([user_id], |r| rows::row_to_json(t, r))?.collect::<Result<_, _>>()?
                    };
                    out.extend(mapped.into_iter().map(|r| (t, r)));
                }
                tx.commit()?;
                Ok((head, out))
            })
            .await;
        let Ok((head, snapshot_rows)) = read else {
            self.out.push(proto::system(self.vsn, join_ref.as_deref(), topic, "error", "the snapshot could not be read; rejoin to retry", &[]));
            return;
        };
        let frames: Vec<String> = {
            let subs = self.lock();
            let Some(ch) = subs.channels.iter().find(|c| c.gen == gen) else { return };
            snapshot_rows
                .into_iter()
                .filter_map(|(t, r)| {
                    let change = crate::store::Change {
                        seq: head,
                        table: t,
                        op: crate::store::Op::Insert,
                        row_id: r.get("id").and_then(Value::as_i64).unwrap_or(0),
                        user_id: rows::owner_of(&r),
                        record: Some(r),
                        old_record: None,
                        committed_at: crate::store::timefmt::format(crate::store::timefmt::now()),
                    };
                    let ids = ch.matching_ids(&change);
                    (!ids.is_empty()).then(|| proto::encode_change(self.vsn, &ch.topic, &ids, &data_json(&change, true)))
                })
                .collect()
        };
        self.out.extend(frames);
        self.out.push(proto::system(self.vsn, join_ref.as_deref(), topic, "ok", "snapshot complete", &[("seq", json!(head))]));
        // The rows reflect every change up to `head`; live frames at or
        // below it are already in them, so the cursor drops those.
        if let Some(c) = self.cursors.get_mut(&gen) {
            c.seq = c.seq.max(head);
        }
    }

    /// The queue overflowed and the hub stopped queuing: everything before
    /// `lag_from` was queued and has been written; fetch the rest from the log.
    async fn catch_up(&mut self) -> Result<(), End> {
        self.ctx.hub.stats.catching_up.fetch_add(1, Ordering::Relaxed);
        let lag_from = self.shared.lag_from.load(Ordering::Acquire);
        for c in self.cursors.values_mut() {
            c.seq = c.seq.max(lag_from - 1);
        }
        let first = self.replay_from_log(None, true).await;
        // Back to live, then one more read for what committed meanwhile.
        self.shared.lagging.store(false, Ordering::Release);
        let second = match first {
            Ok(()) => self.replay_from_log(None, true).await,
            Err(e) => Err(e),
        };
        self.ctx.hub.stats.catching_up.fetch_sub(1, Ordering::Relaxed);
        second
    }

    /// Queue the reason for every channel; `finish` writes it and the 4008
    /// close behind whatever the client has not read yet.
    async fn slow_consumer_close(&mut self) -> End {
        self.ctx.hub.stats.closed_slow.fetch_add(1, Ordering::Relaxed);
        let topics: Vec<(Arc<str>, Option<String>)> = self.lock().channels.iter().map(|c| (c.topic.clone(), c.join_ref.clone())).collect();
        self.out.clear();
        for (t, jr) in topics {
            self.out.push(proto::system(
                self.vsn,
                jr.as_deref(),
                &t,
                "error",
                "this socket fell too far behind and is closed (slow consumer); reconnect and resume",
                &[],
            ));
        }
        End::Close(4008, "slow consumer")
    }

    fn leave(&mut self, msg: &Inbound) {
        let removed = self.remove_channel(&msg.topic);
        self.out.push(proto::reply_ok(self.vsn, msg.join_ref.as_deref(), msg.reference.as_deref(), &msg.topic, "{}"));
        let jr = removed.or_else(|| msg.join_ref.clone());
        self.out.push(proto::encode(self.vsn, jr.as_deref(), jr.as_deref(), &msg.topic, "phx_close", "{}"));
    }

    /// Take a channel out of this socket (stats and cursor too); returns its join_ref.
    fn detach_channel(&mut self, topic: &str) -> Option<Option<String>> {
        let removed = {
            let mut subs = self.lock();
            let pos = subs.channels.iter().position(|c| *c.topic == *topic)?;
            subs.channels.remove(pos)
        };
        self.ctx.hub.stats.channels.fetch_sub(1, Ordering::Relaxed);
        self.ctx.hub.stats.bindings.fetch_sub(removed.bindings.len() as i64, Ordering::Relaxed);
        self.cursors.remove(&removed.gen);
        Some(removed.join_ref)
    }

    /// Drop a channel; returns its join_ref. Unregisters the socket when it was the last.
    fn remove_channel(&mut self, topic: &str) -> Option<String> {
        let removed = self.detach_channel(topic);
        if self.lock().channels.is_empty() && self.registered {
            self.ctx.hub.remove(self.shared.id);
            self.registered = false;
            self.exp = None;
        }
        removed.flatten()
    }

    fn swap_token(&mut self, msg: &Inbound) {
        let token = msg.payload.get("access_token").and_then(Value::as_str).unwrap_or_default().to_string();
        let joined = self.lock().channels.iter().any(|c| *c.topic == *msg.topic);
        if !joined {
            return self.refuse(msg, "join the channel before sending access_token");
        }
        let verdict = self.ctx.tokens.verify(&token).map_err(|e| e.to_string()).and_then(|c| {
            let uid = c.user_id().ok_or_else(|| "the anon key cannot be used as an access_token".to_string())?;
            if uid != self.lock().user_id {
                return Err("the new token belongs to another user".to_string());
            }
            Ok(c)
        });
        match verdict {
            Ok(c) => {
                let admin = c.is_admin();
                let uid = self.lock().user_id;
                self.lock().admin = admin;
                self.ctx.hub.place(&self.shared, uid, admin);
                self.exp = Some(c.exp);
            }
            Err(why) => {
                let jr = self.lock().channels.iter().find(|c| *c.topic == *msg.topic).and_then(|c| c.join_ref.clone());
                self.out.push(proto::system_with_extension(self.vsn, jr.as_deref(), &msg.topic, "system", "error", &format!("Invalid token: {why}"), &[]));
                self.remove_channel(&msg.topic);
                self.out.push(proto::encode(self.vsn, jr.as_deref(), jr.as_deref(), &msg.topic, "phx_close", "{}"));
            }
        }
    }

    /// The token expired: tell every channel and close it.
    fn expire_all(&mut self) {
        let chans: Vec<(Arc<str>, Option<String>)> = self.lock().channels.iter().map(|c| (c.topic.clone(), c.join_ref.clone())).collect();
        for (topic, jr) in chans {
            self.out.push(proto::system_with_extension(
                self.vsn,
                jr.as_deref(),
                &topic,
                "system",
                "error",
                "Token has expired; send a fresh access_token or rejoin",
                &[],
            ));
            self.remove_channel(&topic);
            self.out.push(proto::encode(self.vsn, jr.as_deref(), jr.as_deref(), &topic, "phx_close", "{}"));
        }
        self.exp = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SocketSubs> {
        self.shared.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn finish(&mut self, end: End) {
        let (channels, bindings) = {
            let subs = self.lock();
            (subs.channels.len() as i64, subs.binding_count() as i64)
        };
        self.ctx.hub.stats.channels.fetch_sub(channels, Ordering::Relaxed);
        self.ctx.hub.stats.bindings.fetch_sub(bindings, Ordering::Relaxed);
        self.ctx.hub.remove(self.shared.id);
        match end {
            End::Close(code, reason) => {
                // A slow consumer may still be reading what was sent before:
                // give it time to reach the close frame; this waits in this
                // session's task only.
                let grace = if code == 4008 { Duration::from_secs(30) } else { Duration::from_secs(2) };
                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                let out = std::mem::take(&mut self.out);
                let ws = &mut self.ws;
                let _ = tokio::time::timeout(grace, async move {
                    for f in out {
                        ws.feed(Message::text(f)).await?;
                    }
                    ws.close(Some(frame)).await
                })
                .await;
            }
            End::ClientClosed => {
                let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
            }
            End::Broken => {}
        }
    }
}
