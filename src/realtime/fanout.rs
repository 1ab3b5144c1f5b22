//! The fanout step: a committed change becomes the frames one socket's
//! channels get. The path of a change is hub → here → session: the hub
//! publishes it into the feeds ([`Published`]: its `data` JSON built once)
//! and wakes their sockets; each woken session, on its own task, calls
//! [`take`] for the frames of what is new after its cursors, then writes
//! them. A frame is encoded once per distinct (protocol version, topic,
//! binding ids) and shared by every socket that needs the same bytes.

use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::channel::Channel;
use super::hub::{Feed, Pull};
use super::protocol::{self as proto, Vsn};
use crate::store::{Change, Table};

/// Who a socket reads as (its user's own rows, every row for an admin, and
/// accounts only for an admin), and the protocol version its frames are in.
#[derive(Debug, Clone, Copy)]
pub struct Viewer {
    pub user_id: i64,
    pub admin: bool,
    pub vsn: Vsn,
}

impl Viewer {
    pub fn may_see(self, change: &Change) -> bool {
        if change.table == Table::Users {
            return self.admin;
        }
        self.admin || self.user_id == change.user_id
    }
}

/// What [`take`] found in a feed after the channels' cursors.
pub enum Taken {
    /// Nothing new.
    Nothing,
    /// Changes up to `last` were offered (the feed may hold more).
    Offered {
        last: i64,
        /// Change frames added to the outbox.
        frames: u64,
        /// The viewer's own account changed at `last`: nothing after it may
        /// go out before the account is checked again.
        own_account_changed: bool,
    },
    /// The feed no longer holds everything after the cursors: read the log.
    Behind,
}

/// Take up to `max` changes after the lowest channel cursor from `feed`,
/// adding their frames to `out`; stops after a change of the viewer's own account.
pub fn take(feed: &Feed, viewer: Viewer, channels: &mut [Channel], max: usize, out: &mut Vec<Utf8Bytes>) -> Taken {
    let Some(from) = channels.iter().map(|c| c.cursor).min() else { return Taken::Nothing };
    let items = match feed.pull(from, max) {
        Pull::Nothing => return Taken::Nothing,
        Pull::Behind => return Taken::Behind,
        Pull::Items(items) => items,
    };
    let (mut last, mut frames) = (from, 0);
    for item in &items {
        frames += offer(item, viewer, channels.iter_mut(), out);
        last = item.seq();
        if item.change.table == Table::Users && item.change.row_id == viewer.user_id {
            return Taken::Offered { last, frames, own_account_changed: true };
        }
    }
    Taken::Offered { last, frames, own_account_changed: false }
}

/// Add one change's frames for every channel that has not had it (each
/// cursor moves past it, matched or not); returns how many frames.
pub fn offer<'c>(item: &Published, viewer: Viewer, channels: impl Iterator<Item = &'c mut Channel>, out: &mut Vec<Utf8Bytes>) -> u64 {
    let seq = item.seq();
    let visible = viewer.may_see(&item.change);
    let mut frames = 0;
    for ch in channels.filter(|c| c.cursor < seq) {
        ch.cursor = seq;
        if let Some(ids) = visible.then(|| Ids::matching(ch, &item.change)).flatten() {
            out.push(item.frame(viewer.vsn, &ch.topic, &ids));
            frames += 1;
        }
    }
    frames
}

/// A committed change with its `data` payload serialized once, and the
/// frames built from it so far.
#[derive(Debug)]
pub struct Published {
    pub change: Arc<Change>,
    pub data: String,
    frames: Mutex<Vec<CachedFrame>>,
}

#[derive(Debug)]
struct CachedFrame {
    vsn: Vsn,
    topic: Arc<str>,
    ids: Ids,
    frame: Utf8Bytes,
}

/// Distinct frames kept per change; more (rare: many different topics or
/// bindings for one user's change) are encoded per socket.
const FRAME_CACHE: usize = 4;

impl Published {
    pub fn new(change: Arc<Change>) -> Published {
        let data = data_json(&change, false);
        Published { change, data, frames: Mutex::new(Vec::new()) }
    }

    pub fn seq(&self) -> i64 {
        self.change.seq
    }

    /// The `postgres_changes` frame of this change for a channel, shared by
    /// every socket that asks for the same version, topic and ids.
    pub fn frame(&self, vsn: Vsn, topic: &Arc<str>, ids: &Ids) -> Utf8Bytes {
        let same = |c: &CachedFrame| c.vsn == vsn && c.ids[..] == ids[..] && (Arc::ptr_eq(&c.topic, topic) || *c.topic == **topic);
        if let Ok(cache) = self.frames.lock() {
            if let Some(c) = cache.iter().find(|c| same(c)) {
                return c.frame.clone();
            }
        }
        let frame = Utf8Bytes::from(proto::encode_change(vsn, topic, ids, &self.data));
        if let Ok(mut cache) = self.frames.lock() {
            if cache.len() < FRAME_CACHE && !cache.iter().any(&same) {
                cache.push(CachedFrame { vsn, topic: topic.clone(), ids: ids.clone(), frame: frame.clone() });
            }
        }
        frame
    }
}

fn columns_json(table: Table) -> &'static Value {
    static CACHE: OnceLock<[Value; 4]> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        let build = |t: Table| Value::Array(t.columns().iter().map(|(n, ty)| serde_json::json!({"name": n, "type": ty.name()})).collect());
        [build(Table::Clients), build(Table::Meetings), build(Table::Pipeline), build(Table::Users)]
    });
    match table {
        Table::Clients => &all[0],
        Table::Meetings => &all[1],
        Table::Pipeline => &all[2],
        Table::Users => &all[3],
    }
}

/// The `data` object of a `postgres_changes` frame (protocol.md).
pub fn data_json(change: &Change, snapshot: bool) -> String {
    let mut data = serde_json::Map::with_capacity(10);
    data.insert("schema".into(), Value::from("public"));
    data.insert("table".into(), Value::from(change.table.name()));
    data.insert("commit_timestamp".into(), Value::from(change.committed_at.as_str()));
    data.insert("type".into(), Value::from(change.op.as_str()));
    data.insert("columns".into(), columns_json(change.table).clone());
    if let Some(r) = &change.record {
        data.insert("record".into(), r.clone());
    }
    if let Some(r) = &change.old_record {
        data.insert("old_record".into(), r.clone());
    }
    data.insert("errors".into(), Value::Null);
    data.insert("seq".into(), Value::from(change.seq));
    if snapshot {
        data.insert("snapshot".into(), Value::Bool(true));
    }
    Value::Object(data).to_string()
}

/// The binding ids a frame names (reads as `&[u32]`). Almost always one, so
/// that case is kept inline: no allocation per frame.
#[derive(Debug, Clone)]
pub enum Ids {
    One(u32),
    Many(Vec<u32>),
}

impl Ids {
    /// Ids of the channel's bindings the change matches; None when none does.
    pub fn matching(ch: &Channel, change: &Change) -> Option<Ids> {
        let mut it = ch.bindings.iter().filter(|b| b.matches(change)).map(|b| b.id);
        let first = it.next()?;
        Some(match it.next() {
            None => Ids::One(first),
            Some(second) => Ids::Many([first, second].into_iter().chain(it).collect()),
        })
    }
}

impl std::ops::Deref for Ids {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(v) => v,
        }
    }
}
