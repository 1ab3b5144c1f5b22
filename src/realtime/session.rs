//! One WebSocket session: decodes client frames, joins and leaves channels,
//! swaps tokens, expires them on a timer, and writes change frames: woken by
//! the hub when its feed has news, it takes that news' frames through the
//! fanout step (`fanout::take`), feeds every waiting frame and flushes once.
//! Each channel keeps a cursor (the last seq it was given) so resume,
//! snapshot, catch-up from the `changes` log (`Store::replay_after`) and live
//! frames hand over with no gap and no duplicate.
//!
//! The session waits on one thing: a hand-written poll of its socket, its
//! feed (woken through `SocketShared::waker`), the hub's signals and one
//! timer, so an idle wakeup costs no timer or notify registration.
//!
//! Who the socket is signed in as is decided by the shared identity check
//! ([`crate::auth::identity`]) at every join and token swap, and again whenever the
//! cached answer it used runs out or the hub says the user's account changed:
//! a user no longer allowed in gets a `system` error and `phx_close` on every
//! channel; a demoted admin continues with only their own rows.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::channel::{Binding, BindingError, Channel};
use super::fanout::{self, data_json, Ids, Published, Taken, Viewer};
use super::hub::{Feed, Hub, Placement, SocketShared, SIGNALS_ENDING, SIGNAL_SHUTDOWN};
use super::protocol::{self as proto, Inbound, Refusal, Vsn};
use crate::auth::identity::{Identities, Refused};
use crate::auth::{unix_now, Claims, Tokens};
use crate::config::RealtimeConfig;
use crate::store::changes::LogBounds;
use crate::store::snapshot::{self, SnapshotReader};
use crate::store::tables::ALL_TABLES;
use crate::store::{Store, Table};

/// Everything a session needs from the server.
#[derive(Clone)]
pub struct SessionCtx {
    pub hub: Arc<Hub>,
    pub store: Store,
    pub tokens: Tokens,
    pub identities: Arc<Identities>,
    pub cfg: RealtimeConfig,
}

/// How a session ends, and what the client is told.
enum End {
    ClientClosed,
    Close(u16, &'static str),
    Broken,
}

/// What woke the session.
enum Wake {
    Signal(u8),
    Inbound(Option<Result<Message, WsError>>),
    /// A client frame read while a replay or snapshot was being written.
    Deferred(Utf8Bytes),
    Feed,
    Timer,
}

/// Most changes taken from the feed before the frames are written.
const PULL: usize = 1024;

struct Session<S> {
    ctx: SessionCtx,
    vsn: Vsn,
    apikey_claims: Claims,
    ws: WebSocketStream<S>,
    shared: Arc<SocketShared>,
    user_id: i64,
    admin: bool,
    channels: Vec<Channel>,
    /// Set once a channel is joined: the feed this session reads.
    placement: Option<Placement>,
    /// Frames waiting to be fed to the socket before the next flush.
    out: Vec<Utf8Bytes>,
    /// Change frames among them (for the delivered counter).
    out_changes: u64,
    exp_at: Option<Instant>,
    /// The claims of the token the channels were joined (or last swapped) with.
    claims: Option<Claims>,
    /// When the identity answer in use runs out and must be checked again.
    recheck_at: Option<Instant>,
    /// The feed carried a change of this user's own account: check it again
    /// before taking anything after it.
    account_changed: bool,
    last_inbound: Instant,
    /// Set when handling a message decided the session must end (a replay
    /// found the client too slow); the loop ends it next.
    ending: Option<End>,
    /// Counted among unjoined sockets while no channel is joined.
    unjoined: super::UnjoinedSlot,
    /// Since when no channel is joined (the `join_timeout` clock).
    unjoined_since: Instant,
    /// Client frames that arrived during a replay or snapshot, handled next.
    deferred: std::collections::VecDeque<Utf8Bytes>,
}

pub async fn run<S>(ws: WebSocketStream<S>, ctx: SessionCtx, vsn: Vsn, apikey_claims: Claims, unjoined: super::UnjoinedSlot)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let shared = Arc::new(SocketShared::new(ctx.hub.next_id()));
    ctx.hub.open_session(&shared);
    let mut s = Session {
        ctx,
        vsn,
        apikey_claims,
        ws,
        shared,
        user_id: 0,
        admin: false,
        channels: Vec::new(),
        placement: None,
        out: Vec::new(),
        out_changes: 0,
        exp_at: None,
        claims: None,
        recheck_at: None,
        account_changed: false,
        last_inbound: Instant::now(),
        ending: None,
        unjoined,
        unjoined_since: Instant::now(),
        deferred: Default::default(),
    };
    let end = s.run_loop().await;
    s.finish(end).await;
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn run_loop(&mut self) -> End {
        let idle_timeout = self.ctx.cfg.idle_timeout.0;
        let join_timeout = self.ctx.cfg.join_timeout.0;
        let timer = tokio::time::sleep_until((self.last_inbound + idle_timeout).min(self.unjoined_since + join_timeout));
        tokio::pin!(timer);
        loop {
            let mut fired = false;
            let wake = match self.deferred.pop_front() {
                Some(text) => Wake::Deferred(text),
                None => self.next_wake(timer.as_mut()).await,
            };
            match wake {
                Wake::Deferred(text) => self.on_text(text.as_str()).await,
                Wake::Signal(sig) if sig & SIGNALS_ENDING != 0 => return self.signalled(sig),
                Wake::Signal(_) => {
                    if self.shared.take_recheck() {
                        self.recheck().await;
                    }
                }
                Wake::Inbound(msg) => {
                    // Text frames count as activity in `on_text` (a join does not).
                    if !matches!(msg, Some(Ok(Message::Text(_)))) {
                        self.last_inbound = Instant::now();
                    }
                    match msg {
                        None => return End::ClientClosed,
                        Some(Err(_)) => return End::Broken,
                        Some(Ok(Message::Text(t))) => self.on_text(t.as_str()).await,
                        Some(Ok(Message::Binary(_))) => {
                            let f = proto::reply_error(
                                self.vsn,
                                None,
                                None,
                                "phoenix",
                                "binary frames are not supported; send JSON text frames",
                            );
                            self.push(f);
                        }
                        Some(Ok(Message::Close(_))) => return End::ClientClosed,
                        Some(Ok(_)) => {}
                    }
                }
                Wake::Feed => {
                    if let Err(end) = self.take_live().await {
                        return end;
                    }
                }
                Wake::Timer => {
                    fired = true;
                    let now = Instant::now();
                    if now >= self.last_inbound + idle_timeout {
                        return End::Close(1000, "no heartbeat received; closing idle socket");
                    }
                    if self.unjoined.held() && now >= self.unjoined_since + join_timeout {
                        return End::Close(1008, "no channel joined in time; closing");
                    }
                    if self.exp_at.is_some_and(|e| now >= e) {
                        self.expire_all();
                    }
                    if self.recheck_at.is_some_and(|r| now >= r) {
                        self.recheck().await;
                    }
                }
            }
            if std::mem::take(&mut self.account_changed) {
                self.recheck().await;
            }
            // One timer for the idle close, the join deadline, the token
            // expiry and the identity recheck, moved only when it fired or
            // must fire sooner (not on every message).
            let mut want = self.last_inbound + idle_timeout;
            for t in [self.exp_at, self.recheck_at].into_iter().flatten() {
                want = want.min(t);
            }
            if self.unjoined.held() {
                want = want.min(self.unjoined_since + join_timeout);
            }
            if fired || want < timer.deadline() {
                timer.as_mut().reset(want);
            }
            if let Some(end) = self.ending.take() {
                return end;
            }
            if let Err(end) = self.flush().await {
                return end;
            }
        }
    }

    /// Wait for the socket, the feed, a signal or the timer.
    async fn next_wake(&mut self, mut timer: Pin<&mut Sleep>) -> Wake {
        let cursor = self.live_cursor().unwrap_or(i64::MAX);
        let shared = &self.shared;
        let ws = &mut self.ws;
        let feed = self.placement.as_ref().map(|p| &p.feed);
        poll_fn(|cx| {
            shared.waker.register(cx.waker());
            let sig = shared.signal.load(Ordering::Acquire);
            if sig != 0 {
                return Poll::Ready(Wake::Signal(sig));
            }
            if let Poll::Ready(m) = ws.poll_next_unpin(cx) {
                return Poll::Ready(Wake::Inbound(m));
            }
            if feed.is_some_and(|f| f.latest() > cursor) {
                return Poll::Ready(Wake::Feed);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
            Poll::Pending
        })
        .await
    }

    fn signalled(&mut self, sig: u8) -> End {
        if sig & SIGNAL_SHUTDOWN != 0 {
            End::Close(1001, "server shutting down")
        } else {
            self.slow_consumer_close()
        }
    }

    fn push(&mut self, frame: String) {
        self.out.push(Utf8Bytes::from(frame));
    }

    /// Write every waiting frame, then flush once. A signal from the hub
    /// (slow consumer, shutdown) interrupts it: a client that stopped
    /// reading must not pin this task.
    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        let ws = &mut self.ws;
        let out = &mut self.out;
        let mut next = 0;
        let result = poll_fn(|cx| {
            shared.waker.register(cx.waker());
            let sig = shared.signal.load(Ordering::Acquire);
            if sig & SIGNALS_ENDING != 0 {
                return Poll::Ready(Err(Some(sig)));
            }
            while next < out.len() {
                match ws.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(None)),
                    Poll::Pending => return Poll::Pending,
                }
                let frame = std::mem::replace(&mut out[next], Utf8Bytes::from_static(""));
                next += 1;
                if ws.start_send_unpin(Message::Text(frame)).is_err() {
                    return Poll::Ready(Err(None));
                }
            }
            ws.poll_flush_unpin(cx).map(|r| r.map_err(|_| None))
        })
        .await;
        self.out.clear();
        if self.out_changes > 0 {
            self.ctx.hub.stats.frames_delivered.fetch_add(self.out_changes, Ordering::Relaxed);
            self.out_changes = 0;
        }
        match result {
            Ok(()) => Ok(()),
            Err(Some(sig)) => Err(self.signalled(sig)),
            Err(None) => Err(End::Broken),
        }
    }

    /// Take what is new in the feed; from the log when the feed no longer
    /// holds everything after the cursor.
    async fn take_live(&mut self) -> Result<(), End> {
        let Some(feed) = self.placement.as_ref().map(|p| p.feed.clone()) else { return Ok(()) };
        self.take_from(&feed).await.map(|_| ())
    }

    /// One step of reading `feed`: the frames of up to `PULL` changes after
    /// the cursors, or a catch-up from the log when the feed no longer
    /// reaches back that far. `Ok(true)` when the feed may hold more.
    async fn take_from(&mut self, feed: &Feed) -> Result<bool, End> {
        match fanout::take(feed, self.viewer(), &mut self.channels, PULL, &mut self.out) {
            Taken::Nothing => Ok(false),
            Taken::Offered { last, frames, own_account_changed } => {
                self.out_changes += frames;
                self.shared.delivered.fetch_max(last, Ordering::Release);
                // The user's own account changed (disabled, removed, signed
                // out, role): nothing after it goes out before the account
                // is read again, uncached.
                if own_account_changed {
                    self.ctx.identities.forget(self.user_id);
                    self.account_changed = true;
                }
                Ok(true)
            }
            Taken::Behind => self.catch_up().await.map(|_| false),
        }
    }

    /// The lowest channel cursor: where reading the feed starts.
    fn live_cursor(&self) -> Option<i64> {
        self.channels.iter().map(|c| c.cursor).min()
    }

    /// Who this socket reads as, right now.
    fn viewer(&self) -> Viewer {
        Viewer { user_id: self.user_id, admin: self.admin, vsn: self.vsn }
    }

    async fn on_text(&mut self, text: &str) {
        let msg = match proto::decode(self.vsn, text) {
            Ok(m) => m,
            Err(e) => {
                let topic = e.topic.as_deref().unwrap_or("phoenix");
                let f = proto::reply_error(self.vsn, e.join_ref.as_deref(), e.reference.as_deref(), topic, &e.message);
                self.push(f);
                return;
            }
        };
        // Any well-formed frame but a join keeps the socket alive: joining
        // over and over (refused or not) must not hold a socket open.
        if msg.event != "phx_join" {
            self.last_inbound = Instant::now();
        }
        match (msg.topic.as_str(), msg.event.as_str()) {
            ("phoenix", "heartbeat") => {
                let f = proto::reply_ok(self.vsn, None, msg.reference.as_deref(), "phoenix", "{}");
                self.push(f);
            }
            (_, "phx_join") => self.join(msg).await,
            (_, "phx_leave") => self.leave(&msg),
            (_, "access_token") => self.swap_token(&msg).await,
            (_, ev) => {
                let reason = if ev == "broadcast" || ev == "presence" {
                    format!("{ev} is not supported; syncgate offers postgres_changes only")
                } else {
                    format!("unknown event \"{}\"", proto::shorten(ev, 60))
                };
                self.refuse(&msg, &reason);
            }
        }
    }

    fn refuse(&mut self, msg: &Inbound, reason: &str) {
        let f = proto::reply_error(self.vsn, msg.join_ref.as_deref(), msg.reference.as_deref(), &msg.topic, reason);
        self.push(f);
    }

    /// The token a join speaks for: its `access_token`, else the socket's
    /// `apikey` (its claims are checked again, now, by the identity check).
    fn claims_for(&self, payload: &Value) -> Result<Claims, Refusal> {
        match payload.get("access_token") {
            Some(Value::String(t)) if !t.is_empty() => self.ctx.tokens.verify(t).map_err(|e| Refusal(e.to_string())),
            Some(Value::Null) | None => Ok(self.apikey_claims.clone()),
            Some(_) => Err("access_token must be a string".into()),
        }
    }

    async fn join(&mut self, msg: Inbound) {
        let claims = match self.claims_for(&msg.payload) {
            Ok(c) => c,
            Err(why) => return self.refuse(&msg, &why.0),
        };
        if claims.is_anon() {
            return self.refuse(&msg, "sign in first: the anon key cannot join; send a user token as access_token");
        }
        let checked = match self.ctx.identities.check(&claims).await {
            Ok(c) => c,
            Err(why) => return self.refuse(&msg, &why.to_string()),
        };
        let (user_id, admin) = (checked.identity.user_id, checked.identity.admin);
        if self.placement.is_some() && self.user_id != user_id {
            return self.refuse(&msg, "this socket is signed in as another user; open a new socket");
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
        let mut bindings: Vec<Binding> = Vec::with_capacity(entries.len());
        let mut problems = Vec::new();
        for e in &entries {
            let taken: Vec<u32> = bindings.iter().map(|b| b.id).collect();
            match Binding::parse(e, Binding::id_for(e, &taken)) {
                Ok((b, p)) => {
                    bindings.push(b);
                    problems.extend(p);
                }
                Err(BindingError::Refuse(why)) => return self.refuse(&msg, &why),
            }
        }
        if !admin && bindings.iter().any(|b| b.table == Some(Table::Users)) {
            return self.refuse(&msg, "only admins may subscribe to users");
        }
        // A join on a topic this socket already has replaces it (a rejoin).
        let same_topic_bindings: usize = self.channels.iter().filter(|c| *c.topic == *msg.topic).map(|c| c.bindings.len()).sum();
        let other_channels = self.channels.iter().filter(|c| *c.topic != *msg.topic).count();
        if other_channels + 1 > cfg.max_channels_per_socket {
            return self.refuse(&msg, &format!("at most {} channels per socket", cfg.max_channels_per_socket));
        }
        if self.placement.is_none() && self.ctx.hub.user_sockets(user_id) >= cfg.max_sockets_per_user {
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

        // Attach first, then read the head: anything committed after it
        // reaches the feed, anything before is in the log; the cursor drops
        // the overlap.
        self.detach_channel(&msg.topic);
        if self.placement.is_none() {
            self.placement = Some(self.ctx.hub.attach(&self.shared, user_id, admin));
            self.user_id = user_id;
            self.admin = admin;
        } else {
            self.set_admin(admin).await;
        }
        let head = self.ctx.hub.head();
        let gen = self.ctx.hub.next_id();
        let topic: Arc<str> = Arc::from(msg.topic.as_str());
        let echo: Vec<Value> = bindings.iter().map(|b| b.echo.clone()).collect();
        let binding_count = bindings.len();
        self.channels.push(Channel { gen, topic: topic.clone(), join_ref: msg.join_ref.clone(), bindings, cursor: head });
        self.unjoined.set(false);
        self.ctx.hub.add_bindings(user_id, binding_count as isize);
        self.ctx.hub.stats.channels.fetch_add(1, Ordering::Relaxed);
        self.ctx.hub.stats.bindings.fetch_add(binding_count as i64, Ordering::Relaxed);
        self.exp_at = Some(expiry_instant(claims.exp));
        self.claims = Some(claims);
        self.recheck_at = Some(recheck_instant(checked.valid_until));
        self.shared.delivered.fetch_max(head, Ordering::Release);

        // A snapshot is opened before the reply, so a join whose rows pass
        // `snapshot_max_rows` is answered with an error, not half a snapshot.
        let mut snapshot_rows = None;
        if snapshot {
            match self.open_snapshot(gen).await {
                Ok(r) => snapshot_rows = Some(r),
                Err(why) => {
                    self.remove_channel(&msg.topic);
                    return self.refuse(&msg, &why.0);
                }
            }
        }

        let mut response = serde_json::Map::new();
        response.insert("postgres_changes".into(), Value::Array(echo.clone()));
        response.insert("seq".into(), Value::from(head));
        let jr = msg.join_ref.as_deref();
        self.push(proto::reply_ok(self.vsn, jr, msg.reference.as_deref(), &msg.topic, &Value::Object(response).to_string()));
        if !echo.is_empty() {
            self.push(proto::system(self.vsn, jr, &msg.topic, "ok", "Subscribed to PostgreSQL", &[]));
        }
        for p in problems {
            self.push(proto::system(self.vsn, jr, &msg.topic, "error", &p, &[]));
        }
        if let Some(since) = resume_since {
            self.resume(gen, &topic, jr.map(str::to_string), since).await;
        } else if let Some((reader, permit)) = snapshot_rows {
            if let Err(end) = self.send_snapshot(gen, &topic, jr.map(str::to_string), reader).await {
                self.ending = Some(end);
            }
            drop(permit);
        }
    }

    fn channel_mut(&mut self, gen: u64) -> Option<&mut Channel> {
        self.channels.iter_mut().find(|c| c.gen == gen)
    }

    /// Replay the log after `since` to one channel, or say `gap`.
    async fn resume(&mut self, gen: u64, topic: &Arc<str>, join_ref: Option<String>, since: i64) {
        // Oldest retained and head from one read snapshot: the live head may
        // already be past an (at read time) empty log without anything lost.
        let LogBounds { oldest, head } = self.ctx.store.log_bounds().await.unwrap_or(LogBounds { oldest: None, head: 0 });
        let lost = match oldest {
            Some(o) => since.saturating_add(1) < o,
            None => since < head,
        };
        // A seq past the head was never logged here (a database restored from
        // a backup, or another server): the client's rows are not this log's,
        // and skipping live changes up to it would hide them for good.
        let unknown = since > head;
        if lost || unknown {
            let first = oldest.unwrap_or(head + 1);
            let why = if unknown {
                format!("seq {since} is past this server's head ({head}); refetch, for example by rejoining with snapshot")
            } else {
                format!("changes after {since} are no longer kept (oldest is {first}); refetch, for example by rejoining with snapshot")
            };
            self.push(proto::system(self.vsn, join_ref.as_deref(), topic, "gap", &why, &[("seq", json!(first))]));
            // Live from the head on.
            return;
        }
        if let Some(c) = self.channel_mut(gen) {
            c.cursor = since;
        }
        if let Err(end) = self.replay_from_log(Some(gen), false).await {
            self.ending = Some(end);
        }
    }

    /// Read the log after the lowest cursor of `only` (or of every channel)
    /// up to the head, delivering what each channel matches and may see.
    ///
    /// At most `realtime.concurrent_replays` sessions (replays and
    /// snapshots) hold a page at once; a client that cannot take a page
    /// within `realtime.flush_timeout` is closed as a slow consumer, so it
    /// cannot hold a permit forever. A non-admin reads only its user's rows.
    async fn replay_from_log(&mut self, only: Option<u64>, enforce_lag: bool) -> Result<(), End> {
        const PAGE: usize = 256;
        let flush_timeout = self.ctx.cfg.flush_timeout.0;
        let hub = self.ctx.hub.clone();
        // Only this user's changes unless admin (by the (user_id, seq) index).
        let owner = (!self.admin).then_some(self.user_id);
        loop {
            let _permit = hub.replays.acquire().await.map_err(|_| End::Close(1001, "server shutting down"))?;
            let from = self.channels.iter().filter(|c| only.is_none_or(|g| g == c.gen)).map(|c| c.cursor).min();
            let Some(from) = from else { return Ok(()) };
            let head = hub.head();
            if enforce_lag && head - from > self.ctx.cfg.max_lag as i64 {
                return Err(self.slow_consumer_close());
            }
            let page = self.ctx.store.replay_after(owner, from, PAGE).await.unwrap_or_default();
            let (n, read_head) = (page.changes.len(), page.head);
            for change in page.changes {
                let item = Published::new(Arc::new(change));
                let viewer = self.viewer();
                let channels = self.channels.iter_mut().filter(|c| only.is_none_or(|g| g == c.gen));
                self.out_changes += fanout::offer(&item, viewer, channels, &mut self.out);
                self.shared.delivered.fetch_max(item.seq(), Ordering::Release);
                if self.out.len() >= 64 {
                    self.flush_replay(flush_timeout).await?;
                }
            }
            self.flush_replay(flush_timeout).await?;
            if n < PAGE {
                // Everything up to the head this read saw has been read (some
                // of it may have been pruned meanwhile): nothing before it is
                // still owed, so the feed takes over from there.
                for ch in self.channels.iter_mut().filter(|c| only.is_none_or(|g| g == c.gen)) {
                    ch.cursor = ch.cursor.max(read_head);
                }
                self.shared.delivered.fetch_max(read_head, Ordering::Release);
                return Ok(());
            }
        }
    }

    /// Flush one page of a replay or snapshot: within `limit` (else a slow
    /// consumer) and within the idle timeout; then read what the client sent
    /// meanwhile, so a long replay neither starves its heartbeats nor
    /// counts a live client as idle.
    async fn flush_replay(&mut self, limit: Duration) -> Result<(), End> {
        let idle_at = self.last_inbound + self.ctx.cfg.idle_timeout.0;
        let deadline = (Instant::now() + limit).min(idle_at);
        match tokio::time::timeout_at(deadline, self.flush()).await {
            Ok(r) => r?,
            Err(_) if Instant::now() >= idle_at => return Err(End::Close(1000, "no heartbeat received; closing idle socket")),
            Err(_) => return Err(self.slow_consumer_close()),
        }
        self.take_inbound_between_pages()
    }

    /// Frames already received while a replay or snapshot is being written:
    /// heartbeats are answered with the next page, anything else waits in
    /// `deferred` until the replay is done (at most `DEFERRED` of them).
    fn take_inbound_between_pages(&mut self) -> Result<(), End> {
        use futures_util::FutureExt;
        const DEFERRED: usize = 64;
        while self.deferred.len() < DEFERRED {
            let Some(next) = self.ws.next().now_or_never() else { return Ok(()) };
            self.last_inbound = Instant::now();
            match next {
                None | Some(Ok(Message::Close(_))) => return Err(End::ClientClosed),
                Some(Err(_)) => return Err(End::Broken),
                Some(Ok(Message::Text(t))) => match proto::decode(self.vsn, t.as_str()) {
                    Ok(m) if m.topic == "phoenix" && m.event == "heartbeat" => {
                        let f = proto::reply_ok(self.vsn, None, m.reference.as_deref(), "phoenix", "{}");
                        self.push(f);
                    }
                    _ => self.deferred.push_back(t),
                },
                Some(Ok(_)) => {}
            }
        }
        Ok(())
    }

    /// Open the snapshot of a channel's rows: wait for a turn among
    /// `realtime.concurrent_replays`, begin the read transaction, read its
    /// head and check `snapshot_max_rows`. Err is the join's refusal.
    async fn open_snapshot(&mut self, gen: u64) -> Result<(SnapshotReader, tokio::sync::OwnedSemaphorePermit), Refusal> {
        const PAGE: usize = 64;
        let Some(ch) = self.channels.iter().find(|c| c.gen == gen) else { return Err("the channel is gone".into()) };
        let bindings = ch.bindings.clone();
        let mut tables: Vec<Table> = Vec::new();
        for b in bindings.iter().filter(|b| b.active) {
            for t in b.table.map_or(ALL_TABLES.to_vec(), |t| vec![t]) {
                // Accounts are an admin's view only (joins refuse the binding too).
                if t == Table::Users && !self.admin {
                    continue;
                }
                if !tables.contains(&t) {
                    tables.push(t);
                }
            }
        }
        // Waiting for a turn is bounded by the idle timeout: this session
        // reads nothing from its socket meanwhile.
        let idle_at = self.last_inbound + self.ctx.cfg.idle_timeout.0;
        let permit = match tokio::time::timeout_at(idle_at, self.ctx.hub.replays_permit()).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err("the server is shutting down".into()),
            Err(_) => return Err("the server is busy with other snapshots; rejoin to retry".into()),
        };
        let cap = self.ctx.cfg.snapshot_max_rows;
        let owner = (!self.admin).then_some(self.user_id);
        let keep = move |table: Table, row: Value| {
            let mut probe = snapshot_change(table, row, 0, String::new());
            let matched = bindings.iter().any(|b| b.matches(&probe));
            probe.record.take().filter(|_| matched)
        };
        let req = snapshot::Request { tables, owner, cap, page: PAGE, keep };
        match self.ctx.store.snapshot(req).await {
            Ok(snapshot::Opened::Rows(reader)) => Ok((reader, permit)),
            Ok(snapshot::Opened::TooMany(n)) => Err(Refusal(format!(
                "the snapshot would hold more than {cap} rows (realtime.snapshot_max_rows; at least {n} match): \
                 join without snapshot and page through REST (GET /api/<table>?limit=&cursor=), or narrow the bindings with a filter"
            ))),
            Err(e) => {
                tracing::warn!(error = %e, "snapshot could not be opened");
                Err("the snapshot could not be read; rejoin to retry".into())
            }
        }
    }

    /// Write a snapshot's pages as `INSERT` frames with `"snapshot": true`,
    /// then "snapshot complete" with the head they reflect. Each page must be
    /// taken by the client within `realtime.flush_timeout` (else it is a
    /// slow consumer), which also bounds how long the read transaction lives.
    async fn send_snapshot(&mut self, gen: u64, topic: &Arc<str>, join_ref: Option<String>, mut reader: SnapshotReader) -> Result<(), End> {
        let head = reader.head;
        let flush_timeout = self.ctx.cfg.flush_timeout.0;
        let committed_at = crate::store::timefmt::format(crate::store::timefmt::now());
        while let Some(page) = reader.next_page().await {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot page could not be read");
                    self.push(proto::system(
                        self.vsn,
                        join_ref.as_deref(),
                        topic,
                        "error",
                        "the snapshot could not be read; rejoin to retry",
                        &[],
                    ));
                    return Ok(());
                }
            };
            let vsn = self.vsn;
            let Some(ch) = self.channels.iter().find(|c| c.gen == gen) else { return Ok(()) };
            for (table, row) in page {
                let change = snapshot_change(table, row, head, committed_at.clone());
                if let Some(ids) = Ids::matching(ch, &change) {
                    self.out.push(Utf8Bytes::from(proto::encode_change(vsn, &ch.topic, &ids, &data_json(&change, true))));
                }
            }
            self.flush_replay(flush_timeout).await?;
        }
        drop(reader);
        self.push(proto::system(self.vsn, join_ref.as_deref(), topic, "ok", "snapshot complete", &[("seq", json!(head))]));
        // The rows reflect every change up to `head`; live frames at or
        // below it are already in them, so the cursor drops those.
        if let Some(c) = self.channel_mut(gen) {
            c.cursor = c.cursor.max(head);
        }
        Ok(())
    }

    /// The feed no longer holds everything after the cursor (the client read
    /// too slowly, or this session was busy): read the rest from the log,
    /// then go back to the feed. Past `max_lag` the session is closed.
    async fn catch_up(&mut self) -> Result<(), End> {
        let hub = self.ctx.hub.clone();
        hub.stats.lag_events.fetch_add(1, Ordering::Relaxed);
        hub.stats.catching_up.fetch_add(1, Ordering::Relaxed);
        let r = self.replay_from_log(None, true).await;
        hub.stats.catching_up.fetch_sub(1, Ordering::Relaxed);
        r
    }

    /// Queue the reason for every channel; `finish` writes it and the 4008
    /// close behind whatever the client has not read yet.
    fn slow_consumer_close(&mut self) -> End {
        self.ctx.hub.stats.closed_slow.fetch_add(1, Ordering::Relaxed);
        let topics: Vec<(Arc<str>, Option<String>)> = self.channels.iter().map(|c| (c.topic.clone(), c.join_ref.clone())).collect();
        self.out.clear();
        self.out_changes = 0;
        for (t, jr) in topics {
            self.push(proto::system(
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
        self.push(proto::reply_ok(self.vsn, msg.join_ref.as_deref(), msg.reference.as_deref(), &msg.topic, "{}"));
        let jr = removed.or_else(|| msg.join_ref.clone());
        self.push(proto::encode(self.vsn, jr.as_deref(), jr.as_deref(), &msg.topic, "phx_close", "{}"));
    }

    /// Take a channel out of this socket (and its counts); returns its join_ref.
    fn detach_channel(&mut self, topic: &str) -> Option<Option<String>> {
        let pos = self.channels.iter().position(|c| *c.topic == *topic)?;
        let removed = self.channels.remove(pos);
        let n = removed.bindings.len();
        self.ctx.hub.add_bindings(self.user_id, -(n as isize));
        self.ctx.hub.stats.channels.fetch_sub(1, Ordering::Relaxed);
        self.ctx.hub.stats.bindings.fetch_sub(n as i64, Ordering::Relaxed);
        Some(removed.join_ref)
    }

    /// Drop a channel; returns its join_ref. Unregisters the socket when it was the last.
    fn remove_channel(&mut self, topic: &str) -> Option<String> {
        let removed = self.detach_channel(topic);
        if self.channels.is_empty() {
            if let Some(p) = self.placement.take() {
                self.ctx.hub.detach(self.shared.id, &p, 0);
                self.exp_at = None;
                self.recheck_at = None;
            }
            if !self.unjoined.held() {
                self.unjoined.set(true);
                self.unjoined_since = Instant::now();
            }
        }
        removed.flatten()
    }

    async fn swap_token(&mut self, msg: &Inbound) {
        let token = msg.payload.get("access_token").and_then(Value::as_str).unwrap_or_default().to_string();
        if !self.channels.iter().any(|c| *c.topic == *msg.topic) {
            return self.refuse(msg, "join the channel before sending access_token");
        }
        let verdict = self.ctx.tokens.verify(&token).map_err(|e| e.to_string()).and_then(|c| {
            let uid = c.user_id().ok_or_else(|| "the anon key cannot be used as an access_token".to_string())?;
            if uid != self.user_id {
                return Err("the new token belongs to another user".to_string());
            }
            Ok(c)
        });
        let verdict = match verdict {
            Ok(c) => self.ctx.identities.check(&c).await.map(|checked| (c, checked)).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match verdict {
            Ok((c, checked)) => {
                self.set_admin(checked.identity.admin).await;
                self.exp_at = Some(expiry_instant(c.exp));
                self.claims = Some(c);
                self.recheck_at = Some(recheck_instant(checked.valid_until));
            }
            Err(why) => {
                let jr = self.channels.iter().find(|c| *c.topic == *msg.topic).and_then(|c| c.join_ref.clone());
                self.push(proto::system_with_extension(
                    self.vsn,
                    jr.as_deref(),
                    &msg.topic,
                    "system",
                    "error",
                    &format!("Invalid token: {why}"),
                    &[],
                ));
                self.remove_channel(&msg.topic);
                self.push(proto::encode(self.vsn, jr.as_deref(), jr.as_deref(), &msg.topic, "phx_close", "{}"));
            }
        }
    }

    /// The latest token (and the stored role) decides whether this socket
    /// sees every user's changes. A change of role moves the session to the
    /// other feed, from the moment of the swap: first what is still waiting
    /// in the old feed goes out, then the new role's changes from there on.
    /// Narrowing takes effect before that drain: what waits is filtered as
    /// the ordinary user (a demoted admin must not receive other users' rows
    /// committed after the demotion but not yet read).
    async fn set_admin(&mut self, admin: bool) {
        if admin == self.admin {
            return;
        }
        let Some(feed) = self.placement.as_ref().map(|p| p.feed.clone()) else {
            self.admin = admin;
            return;
        };
        if !admin {
            self.admin = false;
        }
        let now = self.ctx.hub.published();
        loop {
            match self.take_from(&feed).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(end) => {
                    self.ending = Some(end);
                    return;
                }
            }
        }
        // Attach to the new feed before leaving the old one, so the user's
        // counts carry over.
        let next = self.ctx.hub.attach(&self.shared, self.user_id, admin);
        if let Some(prev) = self.placement.replace(next) {
            self.ctx.hub.detach(self.shared.id, &prev, 0);
        }
        self.admin = admin;
        for ch in &mut self.channels {
            ch.cursor = ch.cursor.max(now);
        }
        self.shared.delivered.fetch_max(now, Ordering::Release);
    }

    /// The token expired: tell every channel and close it.
    fn expire_all(&mut self) {
        self.close_all_channels("Token has expired; send a fresh access_token or rejoin");
    }

    /// Tell every channel why with a `system` error, and close it.
    fn close_all_channels(&mut self, message: &str) {
        let chans: Vec<(Arc<str>, Option<String>)> = self.channels.iter().map(|c| (c.topic.clone(), c.join_ref.clone())).collect();
        for (topic, jr) in chans {
            self.push(proto::system_with_extension(self.vsn, jr.as_deref(), &topic, "system", "error", message, &[]));
            self.remove_channel(&topic);
            self.push(proto::encode(self.vsn, jr.as_deref(), jr.as_deref(), &topic, "phx_close", "{}"));
        }
        self.exp_at = None;
        self.recheck_at = None;
    }

    /// Check the signed-in user again (their cached answer ran out, or the
    /// hub said their account changed): refused → every channel is closed
    /// with the reason; a changed role → the socket moves to the new role's
    /// feed (a demoted admin keeps only their own rows). No change is
    /// delivered while this runs, so nothing reaches a socket after the
    /// check that refused it.
    async fn recheck(&mut self) {
        let Some(claims) = self.claims.clone().filter(|_| !self.channels.is_empty()) else {
            self.recheck_at = None;
            return;
        };
        match self.ctx.identities.check(&claims).await {
            Ok(checked) if checked.identity.user_id == self.user_id => {
                self.recheck_at = Some(recheck_instant(checked.valid_until));
                self.set_admin(checked.identity.admin).await;
            }
            Ok(_) => self.close_all_channels("Access revoked: the token names another user"),
            Err(Refused::Unavailable) => {
                // The database did not answer: keep the channels, ask again soon.
                self.recheck_at = Some(Instant::now() + Duration::from_secs(1));
            }
            Err(Refused::Token(crate::auth::TokenError::Expired)) => self.expire_all(),
            Err(why) => {
                tracing::info!(user = self.user_id, reason = %why, "realtime access revoked");
                self.close_all_channels(&format!("Access revoked: {why}"));
            }
        }
    }

    async fn finish(&mut self, end: End) {
        let bindings: usize = self.channels.iter().map(|c| c.bindings.len()).sum();
        self.ctx.hub.stats.channels.fetch_sub(self.channels.len() as i64, Ordering::Relaxed);
        self.ctx.hub.stats.bindings.fetch_sub(bindings as i64, Ordering::Relaxed);
        if let Some(p) = self.placement.take() {
            self.ctx.hub.detach(self.shared.id, &p, bindings);
        }
        self.ctx.hub.close_session(self.shared.id);
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
                        ws.feed(Message::Text(f)).await?;
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

/// When to check an identity answer again: after it ran out of the cache,
/// spread over a second so that one socket reads the account afresh and the
/// user's other sockets find that answer cached (no burst of reads).
fn recheck_instant(valid_until: Instant) -> Instant {
    valid_until + Duration::from_millis(rand::Rng::random_range(&mut rand::rng(), 20..=1000))
}

/// A snapshot row as the `INSERT` change its frame is built from.
fn snapshot_change(table: Table, row: Value, head: i64, committed_at: String) -> crate::store::Change {
    crate::store::Change {
        seq: head,
        table,
        op: crate::store::Op::Insert,
        row_id: row.get("id").and_then(Value::as_i64).unwrap_or(0),
        user_id: table.owner_of(&row),
        record: Some(row),
        old_record: None,
        committed_at,
    }
}

/// When a token with this `exp` (unix seconds) stops being valid.
fn expiry_instant(exp: i64) -> Instant {
    Instant::now() + Duration::from_secs((exp - unix_now()).max(0) as u64)
}
