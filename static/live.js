// syncgate's browser realtime client: one WebSocket speaking the Phoenix
// "postgres_changes" protocol (see protocol.md), plus syncgate's additions.
//
// It keeps the rows it was sent, per table, so pages read from one place:
// - the first join asks for a snapshot (rows + head seq read together);
// - after a dropped connection it reconnects with exponential backoff and
//   resumes from the last seq it applied, so nothing is missed or doubled;
// - on "gap" (the log no longer reaches back that far) it rejoins with a
//   snapshot and reports the rows that differ;
// - when the server refuses a snapshot that large (realtime.snapshot_max_rows)
//   it joins without one and pages the rows through REST instead (`fetchPage`),
//   holding the changes that arrive meanwhile and applying them after, in
//   order, so nothing is missed and no older REST copy wins.
// - a table may be bounded (`bounds`): its binding then carries a filter
//   `column=gt.<instant>` (e.g. meetings ending after a month ago), so the
//   snapshot holds only the rows the pages show live; older rows are read
//   through REST by the page that shows them. The bound is taken afresh at
//   each join (see `join`).
// It never polls. The socket opens with the public anon key as `apikey`; the
// user's token travels only inside the join (`access_token`), as supabase-js
// does, so no URL (and no proxy's access log) ever holds it.

const HEARTBEAT_MS = 25000;
const BACKOFF_FIRST_MS = 500;
// Phoenix's own client caps its reconnect wait at 5 s too.
const BACKOFF_MAX_MS = 5000;
/** After this many failed attempts in a row the state reads "offline". */
const OFFLINE_AFTER = 6;

export class Live {
  /**
   * @param {object} o
   * @param {string} o.url     the socket URL without query, e.g. ws://host/realtime/v1/websocket
   * @param {string} o.apikey  the public anon key (the socket URL's apikey)
   * @param {string} o.token   the user's JWT (sent only as the join's access_token)
   * @param {string[]} o.tables tables to subscribe to
   * @param {(table: string, cursor: string|null) => Promise<{items: object[], next_cursor: string|null}>} o.fetchPage
   *   one REST page of a table, for when a snapshot would be too large
   *   (a bounded table's page is asked with its bound: `fetchPage(table, cursor, bound)`)
   * @param {() => Object<string, {column: string, after: string}>} [o.bounds]
   *   per table, the rows kept live: those whose `column` is after the instant `after`
   */
  constructor({ url, apikey, token, tables, fetchPage, bounds = () => ({}), topic = 'realtime:syncgate-ui' }) {
    this.url = url;
    this.apikey = apikey;
    this.token = token;
    this.fetchPage = fetchPage;
    this.bounds = bounds;
    /** The bounds of the current join: table -> {column, after}. */
    this.bound = {};
    /** Changes held while rows are paged through REST (null otherwise). */
    this.held = null;
    this.tables = tables;
    this.topic = topic;
    /** table -> Map(id -> row) */
    this.data = new Map(tables.map((t) => [t, new Map()]));
    /** The last change applied (null until the first snapshot completed). */
    this.seq = null;
    /** "snapshot" or "resume": how the current channel was joined. */
    this.joinMode = null;
    this.state = 'connecting';
    this.ready = false;
    this.attempts = 0;
    this.listeners = { state: [], change: [], reset: [], denied: [], unbound: [] };
    this.tableListeners = new Map();
    this.ws = null;
    this.ref = 0;
    this.joinRef = null;
    this.joinMsgRef = null;
    this.pendingHeartbeat = null;
    this.heartbeatTimer = null;
    this.retryTimer = null;
    this.retryAt = null;
    this.staging = null;
    this.stopped = false;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.setState(this.state === 'live' ? 'live' : 'offline');
    // Hidden tabs get their timers throttled; catch up as soon as one is looked at.
    this.onVisible = () => {
      if (document.visibilityState === 'visible') this.reconnectNow();
    };
  }

  /**
   * Subscribe to 'state' (state, info), 'change' (table, change), 'reset' ({initial, changed}), 'denied' (message),
   * 'unbound' (table, rows: cached rows a rejoin's moved bound left out).
   */
  on(event, fn) {
    this.listeners[event].push(fn);
    return this;
  }

  /** Changes of one table only: fn({type, record, old_record, seq}). */
  onTable(table, fn) {
    if (!this.tableListeners.has(table)) this.tableListeners.set(table, []);
    this.tableListeners.get(table).push(fn);
    return this;
  }

  /** The rows of a table as an array (the cached copy, do not mutate). */
  rows(table) {
    return [...(this.data.get(table) || new Map()).values()];
  }

  row(table, id) {
    return (this.data.get(table) || new Map()).get(Number(id));
  }

  /** The bound of a table in the current join ({column, after}), or null when all its rows are live. */
  boundOf(table) {
    return this.bound[table] || null;
  }

  /** Is this row inside the part of its table kept live? (Rows outside come from REST.) */
  inBound(table, row) {
    const b = this.bound[table];
    if (!b) return true;
    const v = row ? Date.parse(row[b.column]) : NaN;
    return Number.isFinite(v) && v > Date.parse(b.after);
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    document.addEventListener('visibilitychange', this.onVisible);
    this.connect();
    return this;
  }

  /** Close for good (sign-out): no reconnect. */
  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    document.removeEventListener('visibilitychange', this.onVisible);
    clearTimeout(this.retryTimer);
    this.teardown();
    this.setState('offline');
  }

  /** Skip the rest of the backoff wait. */
  reconnectNow() {
    if (this.stopped || this.state === 'live' || this.ws) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  emit(event, ...args) {
    for (const fn of this.listeners[event]) {
      try {
        fn(...args);
      } catch (e) {
        // A listener's bug must not break the socket; surface it.
        setTimeout(() => { throw e; });
      }
    }
  }

  setState(state, info = {}) {
    this.state = state;
    this.emit('state', state, { attempts: this.attempts, retryAt: this.retryAt, joinMode: this.joinMode, ...info });
  }

  nextRef() {
    this.ref += 1;
    return String(this.ref);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  connect() {
    this.retryTimer = null;
    this.retryAt = null;
    const q = new URLSearchParams({ apikey: this.apikey, vsn: '2.0.0' });
    let ws;
    try {
      ws = new WebSocket(`${this.url}?${q}`);
    } catch (e) {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.join();
    ws.onmessage = (ev) => this.onFrame(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.teardown();
      if (!this.stopped) this.scheduleRetry();
    };
    // onerror is always followed by onclose; nothing to do twice.
    ws.onerror = () => {};
  }

  teardown() {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.pendingHeartbeat = null;
    const ws = this.ws;
    this.ws = null;
    this.joinRef = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch (_) {
        // already closed
      }
    }
  }

  scheduleRetry() {
    this.attempts += 1;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (this.attempts - 1));
    const wait = Math.round(base * (0.8 + Math.random() * 0.4));
    this.retryAt = Date.now() + wait;
    this.retryTimer = setTimeout(() => this.connect(), wait);
    const offline = this.attempts >= OFFLINE_AFTER || navigator.onLine === false;
    this.setState(offline ? 'offline' : 'reconnecting');
  }

  /** A fresher token for the same user: used by the next join, and sent to the joined channel now. */
  setToken(token) {
    this.token = token;
    if (this.joinRef && this.state === 'live') {
      this.send([this.joinRef, this.nextRef(), this.topic, 'access_token', { access_token: token }]);
    }
  }

  /**
   * Join (or rejoin) the one channel: resume when we have a seq, else
   * snapshot; mode 'paged' joins with neither and reads the rows through REST.
   */
  join(forceSnapshot = false, mode = null) {
    const resume = !forceSnapshot && !mode && this.seq !== null;
    this.joinMode = mode || (resume ? 'resume' : 'snapshot');
    // The bounds move forward at every join, not on a timer: they are there
    // to keep the snapshot (read only at a join) small, and between joins
    // the cache grows only by the changes that really happen. Rows that
    // fell out of the new bound are dropped from the cache now, since this
    // join no longer receives their changes; 'unbound' hands them to the
    // page's copy of older rows, the same as a REST read would.
    this.bound = this.bounds() || {};
    for (const [table, rows] of this.data) {
      if (!this.bound[table]) continue;
      const out = [];
      for (const [id, row] of rows) {
        if (this.inBound(table, row)) continue;
        rows.delete(id);
        out.push(row);
      }
      if (out.length) this.emit('unbound', table, out);
    }
    this.staging = resume ? null : new Map(this.tables.map((t) => [t, new Map()]));
    this.held = this.joinMode === 'paged' ? [] : null;
    this.joinRef = this.nextRef();
    this.joinMsgRef = this.joinRef;
    const config = {
      postgres_changes: this.tables.map((table) => {
        const b = this.bound[table];
        return b ? { event: '*', schema: 'public', table, filter: `${b.column}=gt.${b.after}` } : { event: '*', schema: 'public', table };
      }),
    };
    if (resume) config.resume = { since: this.seq };
    else if (this.joinMode === 'snapshot') config.snapshot = true;
    this.send([this.joinRef, this.joinMsgRef, this.topic, 'phx_join', { config, access_token: this.token }]);
    if (!this.heartbeatTimer) {
      this.heartbeatTimer = setInterval(() => this.heartbeat(), HEARTBEAT_MS);
    }
  }

  heartbeat() {
    if (this.pendingHeartbeat) {
      // The last one was never answered: the connection is dead even if the
      // browser has not noticed yet.
      const ws = this.ws;
      this.teardown();
      if (ws && !this.stopped) this.scheduleRetry();
      return;
    }
    this.pendingHeartbeat = this.nextRef();
    this.send([null, this.pendingHeartbeat, 'phoenix', 'heartbeat', {}]);
  }

  onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (_) {
      return;
    }
    if (!Array.isArray(frame) || frame.length < 5) return;
    const [joinRef, ref, topic, event, payload] = frame;
    if (topic === 'phoenix') {
      if (event === 'phx_reply' && ref === this.pendingHeartbeat) this.pendingHeartbeat = null;
      return;
    }
    if (topic !== this.topic) return;
    switch (event) {
      case 'phx_reply':
        if (ref === this.joinMsgRef) this.onJoinReply(payload || {});
        break;
      case 'postgres_changes':
        this.onChange((payload && payload.data) || {});
        break;
      case 'system':
        this.onSystem(payload || {});
        break;
      case 'phx_close':
      case 'phx_error':
        // Closed by the server (token expiry is reported by a system message
        // first); anything else: reconnect and resume.
        if (joinRef === this.joinRef && !this.stopped && this.ws) {
          this.teardown();
          this.scheduleRetry();
        }
        break;
      default:
    }
  }

  onJoinReply(payload) {
    if (payload.status !== 'ok') {
      const reason = (payload.response && payload.response.reason) || 'the server refused to subscribe';
      if (this.joinMode === 'snapshot' && /snapshot_max_rows/.test(reason) && this.fetchPage) {
        // Too many rows for one snapshot: the same rows, page by page, over REST.
        this.join(true, 'paged');
      } else if (/token|sign in|expired|anon|disabled|signed out|does not exist|only admins/i.test(reason)) {
        // Refusals about who is signed in end the session; others are retried.
        this.deny(reason);
      } else {
        this.teardown();
        this.scheduleRetry();
      }
      return;
    }
    this.attempts = 0;
    if (this.joinMode === 'paged') {
      const head = Number(payload.response && payload.response.seq);
      this.setState(this.ready ? 'live' : 'connecting', { loading: true });
      this.loadPages(this.joinRef, Number.isFinite(head) ? head : null);
    } else if (this.joinMode === 'resume') {
      // The replay (if any) follows in order, then live changes.
      this.setState('live');
    } else {
      this.setState(this.ready ? 'live' : 'connecting', { loading: true });
    }
  }

  onSystem(p) {
    if (p.status === 'ok' && p.message === 'snapshot complete') {
      this.finishSnapshot(Number(p.seq));
    } else if (p.status === 'gap') {
      // The log no longer reaches our seq: fetch everything again.
      this.join(true);
    } else if (p.status === 'error' && (p.extension === 'system' || /token/i.test(p.message || ''))) {
      this.deny(p.message || 'the session ended');
    }
  }

  /**
   * Read every row through REST (after a join at `head`), then apply the
   * changes that arrived meanwhile, in order: any REST copy is at least as
   * new as the join, and the last change of a row is its newest state.
   */
  async loadPages(joinRef, head) {
    try {
      for (const table of this.tables) {
        let cursor = null;
        do {
          const page = await this.fetchPage(table, cursor, this.bound[table] || null);
          if (this.joinRef !== joinRef || !this.staging) return; // rejoined or closed meanwhile
          for (const row of page.items || []) this.staging.get(table).set(row.id, row);
          cursor = page.next_cursor || null;
        } while (cursor);
      }
    } catch (e) {
      if (this.joinRef !== joinRef) return;
      // Signed out (401) is handled by the page; anything else: start over.
      if (e && e.status === 401) return;
      const ws = this.ws;
      this.teardown();
      if (ws && !this.stopped) this.scheduleRetry();
      return;
    }
    const held = this.held || [];
    this.held = null;
    let seq = head;
    for (const d of held) {
      this.applyTo(this.staging, d);
      if (typeof d.seq === 'number' && (seq === null || d.seq > seq)) seq = d.seq;
    }
    this.finishSnapshot(seq === null ? NaN : seq);
  }

  applyTo(tables, d) {
    const rows = tables.get(d.table);
    if (!rows) return;
    if (d.type === 'DELETE') {
      if (d.old_record) rows.delete(d.old_record.id);
    } else if (d.record) {
      rows.set(d.record.id, d.record);
    }
  }

  onChange(d) {
    const table = d.table;
    if (!this.data.has(table)) return;
    if (this.held) {
      this.held.push(d);
      return;
    }
    if (d.snapshot && this.staging) {
      if (d.record && d.record.id != null) this.staging.get(table).set(d.record.id, d.record);
      return;
    }
    const rows = this.staging ? this.staging.get(table) : this.data.get(table);
    if (d.type === 'DELETE') {
      if (d.old_record) rows.delete(d.old_record.id);
    } else if (d.record) {
      rows.set(d.record.id, d.record);
    }
    if (this.staging) return; // counted in the snapshot diff
    if (typeof d.seq === 'number' && (this.seq === null || d.seq > this.seq)) this.seq = d.seq;
    const change = { table, type: d.type, record: d.record || null, old_record: d.old_record || null, seq: d.seq };
    this.emit('change', table, change);
    for (const fn of this.tableListeners.get(table) || []) fn(change);
  }

  finishSnapshot(seq) {
    const staging = this.staging;
    if (!staging) return;
    this.staging = null;
    const initial = !this.ready;
    const changed = [];
    if (!initial) {
      for (const [table, fresh] of staging) {
        const old = this.data.get(table);
        for (const [id, rec] of fresh) {
          const before = old.get(id);
          if (!before) changed.push({ table, type: 'INSERT', record: rec, old_record: null });
          else if (JSON.stringify(before) !== JSON.stringify(rec)) changed.push({ table, type: 'UPDATE', record: rec, old_record: before });
        }
        for (const [id, rec] of old) {
          if (!fresh.has(id)) changed.push({ table, type: 'DELETE', record: null, old_record: rec });
        }
      }
    }
    this.data = staging;
    this.seq = Number.isFinite(seq) ? seq : this.seq;
    this.ready = true;
    this.emit('reset', { initial, changed });
    for (const c of changed) {
      for (const fn of this.tableListeners.get(c.table) || []) fn(c);
    }
    this.setState('live');
  }

  deny(message) {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.teardown();
    this.setState('offline');
    this.emit('denied', message);
  }
}
