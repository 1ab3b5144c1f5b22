// The page shell: sign-in (token from the URL fragment into storage), the
// router, the header with the connection state, and the live data every page
// reads. Pages live in /pages/*.js and get a `ctx` with what they need.

import { Live } from '/live.js';
import { api, auth, claims, isOwnEcho } from '/api.js';
import { h } from '/dom.js';
import { openMeeting, openClient, openDeal } from '/forms.js';
import * as meetingsPage from '/pages/meetings.js';
import * as clientsPage from '/pages/clients.js';
import * as clientPage from '/pages/client.js';
import * as pipelinePage from '/pages/pipeline.js';
import * as integrationsPage from '/pages/integrations.js';
import * as signinPage from '/pages/signin.js';
import * as teamPage from '/pages/team.js';

const TABLES = ['meetings', 'clients', 'pipeline'];
const FLASH_MS = 2500;
/**
 * Meetings that ended at most this many days ago (counted from midnight UTC)
 * are kept live; the realtime join asks only for those, so a busy adviser's
 * or an admin's years of history never make one huge snapshot. Older ones
 * are read through REST by the pages that show them (`loadOlderMeetings`).
 */
const LIVE_MEETING_DAYS = 30;

const main = document.getElementById('main');
const top = document.getElementById('top');
const conn = document.getElementById('conn');
const connText = conn.querySelector('.conn-text');
const reconnectBtn = document.getElementById('reconnect');

const state = {
  me: null,
  live: null,
  /** The realtime path and the public anon key (`GET /api/config`). */
  realtime: null,
  page: null,
  route: null,
  expiryTimer: null,
  flashes: new Map(),
  /** Meetings older than the live bound, read through REST (id -> row). */
  older: new Map(),
  updateQueued: false,
  pendingFocus: null,
  signedOut: false,
  /** "Sign out everywhere" was pressed here: the socket may end before the answer arrives. */
  endingEverywhere: false,
};

const EVERYWHERE = 'You signed out everywhere: every browser and device using your account must sign in again.';

const ROUTES = [
  [/^\/meetings\/?$/, meetingsPage, 'meetings'],
  [/^\/clients\/?$/, clientsPage, 'clients'],
  [/^\/clients\/(\d+)\/?$/, clientPage, 'clients'],
  [/^\/pipeline\/?$/, pipelinePage, 'pipeline'],
  [/^\/integrations\/?$/, integrationsPage, 'integrations'],
  [/^\/team\/?$/, teamPage, 'team'],
];

/** What every page gets. */
const ctx = {
  get me() {
    return state.me;
  },
  get live() {
    return state.live;
  },
  /** `{path, apikey}` from `GET /api/config`: where a page opens a socket of its own. */
  get realtime() {
    return state.realtime;
  },
  api,
  navigate,
  /** Is this version of the row one that changed elsewhere a moment ago? (rows built now get the highlight) */
  flashing(table, row) {
    const f = row ? state.flashes.get(`${table}:${row.id}`) : undefined;
    return !!f && f.until > Date.now() && f.version === row.updated_at;
  },
  /** Where the live meetings begin: meetings ending before this instant are read through REST. */
  liveSince,
  /**
   * Every meeting this page knows: the live ones, plus older ones read
   * through REST that the live cache does not hold (a live row is newer;
   * a REST row inside the live bound but not live was deleted or moved).
   */
  meetings() {
    const live = state.live;
    if (!live) return [];
    const rows = live.rows('meetings');
    for (const [id, row] of state.older) {
      if (!live.row('meetings', id) && !live.inBound('meetings', row)) rows.push(row);
    }
    return rows;
  },
  /**
   * Reads meetings through REST (`GET /api/meetings` with `query`: from, to,
   * client_id…), every page, into the older rows the pages merge in.
   * Resolves with the rows read.
   */
  async loadOlderMeetings(query) {
    const read = [];
    let cursor = null;
    do {
      const q = new URLSearchParams({ ...query, limit: '500' });
      if (cursor) q.set('cursor', cursor);
      const page = await api('GET', `/api/meetings?${q}`);
      if (state.signedOut) return read;
      for (const row of page.items || []) {
        state.older.set(row.id, row);
        read.push(row);
      }
      cursor = page.next_cursor || null;
    } while (cursor);
    queueUpdate();
    return read;
  },
  /**
   * A write made here (row, or null with the id when deleted): the socket
   * carries no change of a meeting outside the live bound (before and
   * after), so the answer itself updates the page's copy.
   */
  wrote(table, row, deletedId = null) {
    if (table !== 'meetings') return;
    if (row && (state.older.has(row.id) || (state.live && !state.live.inBound('meetings', row)))) state.older.set(row.id, row);
    if (deletedId != null) state.older.delete(Number(deletedId));
    queueUpdate();
  },
  clientName(id) {
    const c = id != null && state.live ? state.live.row('clients', id) : null;
    return c ? c.name : null;
  },
  clients() {
    return state.live ? state.live.rows('clients').sort((a, b) => a.name.localeCompare(b.name)) : [];
  },
  /** Focus this selector after the next update (for controls whose row moves). */
  focusAfterUpdate(selector) {
    state.pendingFocus = selector;
  },
  announce,
  /** Re-render the page from the live rows (e.g. to undo a control after a refused change). */
  refresh: () => queueUpdate(),
  openMeeting: (m, defaults) => openMeeting(ctx, m, defaults),
  openClient: (c) => openClient(ctx, c),
  openDeal: (d, defaults) => openDeal(ctx, d, defaults),
  async refreshMe() {
    state.me = await api('GET', '/api/me');
    renderWho();
    return state.me;
  },
};

/** A polite announcement for screen readers (moves, saves). */
function announce(text) {
  let region = document.getElementById('announce');
  if (!region) {
    region = h('div', { id: 'announce', class: 'sr-only', role: 'status', 'aria-live': 'polite' });
    document.body.append(region);
  }
  region.textContent = '';
  setTimeout(() => { region.textContent = text; }, 50);
}

function takeFragment() {
  const hash = location.hash.slice(1);
  if (!hash) return null;
  const p = new URLSearchParams(hash);
  const token = p.get('access_token');
  const error = p.get('error_description') || p.get('error');
  if (!token && !error) return null;
  // The token must not stay in the address bar, the history or a bookmark.
  history.replaceState(history.state, '', location.pathname + location.search);
  if (token && !replacesAnotherUser(token)) auth.token = token;
  return error ? `Sign-in did not work: ${error}` : null;
}

/**
 * A link that signs in someone else than the person signed in here (a
 * forwarded or planted link) replaces them only if the page's user says so.
 * Returns true when the new token is to be dropped.
 */
function replacesAnotherUser(token) {
  const current = auth.token;
  if (!current || current === token) return false;
  const was = claims(current);
  const next = claims(token);
  if (!was || typeof was.exp !== 'number' || was.exp * 1000 <= Date.now()) return false;
  if (next && String(next.sub) === String(was.sub)) return false;
  return !window.confirm(
    `This sign-in link is for another account (user ${next ? next.sub : 'unknown'}) than the one signed in here (user ${was.sub}).\n\n`
      + 'Sign out of the current account and continue with the link\'s account?',
  );
}

async function boot() {
  auth.onUnauthorized((why) => signOut(`You were signed out: ${sentence(why)} Please sign in again.`));
  window.addEventListener('storage', onStorage);
  window.addEventListener('popstate', () => route());
  document.addEventListener('click', onLinkClick);
  document.getElementById('sign-out').addEventListener('click', () => signOut('You signed out.', true));
  document.getElementById('sign-out-everywhere').addEventListener('click', signOutEverywhere);
  reconnectBtn.addEventListener('click', () => state.live && state.live.reconnectNow());

  const fragmentError = takeFragment();
  if (fragmentError) return signOut(fragmentError);
  const token = auth.token;
  if (!token) return showSignIn(null);
  const c = claims(token);
  if (!c || typeof c.exp !== 'number') return signOut('Your sign-in could not be read. Please sign in again.');
  if (c.exp * 1000 <= Date.now()) return signOut('Your session has expired. Please sign in again.');

  main.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
  let publicConfig;
  try {
    [state.me, publicConfig] = await Promise.all([api('GET', '/api/me'), api('GET', '/api/config')]);
  } catch (e) {
    if (e.status === 401) return undefined; // already signed out with the reason
    main.replaceChildren(
      h('h1', {}, 'syncgate'),
      h('p', { role: 'alert' }, `${e.message}`),
      h('button', { type: 'button', onclick: () => location.reload() }, 'Try again'),
    );
    return undefined;
  }
  armExpiry();

  top.hidden = false;
  renderWho();
  state.realtime = publicConfig.realtime;
  startLive(token, publicConfig.realtime);
  route();
  // Meetings move from "upcoming" to "past" as time goes by.
  setInterval(() => queueUpdate(), 60000);
  return undefined;
}

/** Sign out when the token expires (reading storage again: another window may have renewed it). */
function armExpiry() {
  clearTimeout(state.expiryTimer);
  const c = claims(auth.token || '');
  const exp = c && typeof c.exp === 'number' ? c.exp * 1000 : 0;
  if (exp <= Date.now()) {
    signOut('Your session has expired. Please sign in again.');
    return;
  }
  // setTimeout cannot wait past 2^31 ms: re-check then.
  state.expiryTimer = setTimeout(armExpiry, Math.min(exp - Date.now() + 50, 2 ** 31 - 1));
}

function sentence(s) {
  const t = String(s || '').trim();
  if (!t) return '';
  const cap = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(cap) ? cap : `${cap}.`;
}

function renderWho() {
  const me = state.me;
  if (!me) return;
  const who = document.getElementById('who');
  who.replaceChildren(me.name || me.email, me.role === 'admin' ? h('span', { class: 'badge' }, 'admin') : '');
  who.title = me.email;
  document.getElementById('nav-team').hidden = me.role !== 'admin';
}

/** Ends every session of this account (other browsers, phones, this one); asks first. */
let everywhereArmed = null;
async function signOutEverywhere() {
  const btn = document.getElementById('sign-out-everywhere');
  if (!everywhereArmed) {
    btn.textContent = 'Really sign out on every device?';
    everywhereArmed = setTimeout(() => { everywhereArmed = null; btn.textContent = 'Sign out everywhere'; }, 5000);
    return;
  }
  clearTimeout(everywhereArmed);
  everywhereArmed = null;
  btn.disabled = true;
  state.endingEverywhere = true;
  try {
    await api('POST', '/api/me/signout');
    signOut(EVERYWHERE, true);
  } catch (e) {
    state.endingEverywhere = false;
    btn.disabled = false;
    btn.textContent = 'Sign out everywhere';
    if (e.status !== 401) announce(`Signing out everywhere did not work: ${e.message}`);
  }
}

/** The start of the live meetings: midnight UTC, LIVE_MEETING_DAYS days ago (whole days, so the filter reads plainly in logs). */
function liveSince() {
  const d = new Date();
  d.setUTCHours(0, 0, 0, 0);
  d.setUTCDate(d.getUTCDate() - LIVE_MEETING_DAYS);
  return d.toISOString();
}

function startLive(token, realtime) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const live = new Live({
    url: `${proto}//${location.host}${realtime.path}`,
    apikey: realtime.apikey,
    token,
    tables: TABLES,
    // Clients and deals stay whole: an adviser has few, and pages list them all.
    bounds: () => ({ meetings: { column: 'ends_at', after: liveSince() } }),
    fetchPage: (table, cursor, bound) => {
      const q = new URLSearchParams({ limit: '500' });
      if (cursor) q.set('cursor', cursor);
      // `from` keeps meetings ending after it: the same rows as the filter `ends_at=gt.`.
      if (bound) q.set('from', bound.after);
      return api('GET', `/api/${table}?${q}`);
    },
  });
  state.live = live;
  live.on('state', renderConn);
  live.on('change', (table, change) => {
    const rec = change.record || change.old_record;
    if (table === 'meetings' && rec) {
      // A REST copy is superseded by what the socket says.
      if (change.type === 'DELETE') state.older.delete(rec.id);
      else if (state.older.has(rec.id)) state.older.set(rec.id, change.record);
    }
    if (change.record && !isOwnEcho(table, change.record.id)) {
      state.flashes.set(`${table}:${change.record.id}`, { until: Date.now() + FLASH_MS, version: change.record.updated_at });
    } else if (rec) {
      state.flashes.delete(`${table}:${rec.id}`);
    }
    queueUpdate();
  });
  live.on('unbound', (table, rows) => {
    if (table === 'meetings') for (const row of rows) state.older.set(row.id, row);
  });
  live.on('reset', ({ changed }) => {
    for (const c of changed) {
      if (c.record) state.flashes.set(`${c.table}:${c.record.id}`, { until: Date.now() + FLASH_MS, version: c.record.updated_at });
    }
    queueUpdate();
  });
  live.on('denied', (message) => {
    const c = claims(auth.token || '');
    const expired = /expired/i.test(message) || !c || c.exp * 1000 <= Date.now();
    signOut(expired ? 'Your session has expired. Please sign in again.' : `Your session ended: ${sentence(message)} Please sign in again.`);
  });
  live.start();
  renderConn(live.state, {});
}

let countdown = null;
function renderConn(s, info) {
  conn.dataset.state = s;
  if (info && info.joinMode) conn.dataset.join = info.joinMode;
  const labels = {
    connecting: info && info.loading ? 'Loading…' : 'Connecting…',
    live: 'Live',
    reconnecting: 'Reconnecting…',
    offline: 'Offline',
  };
  const text = labels[s] || s;
  if (connText.textContent !== text) connText.textContent = text;
  reconnectBtn.hidden = !(s === 'reconnecting' || s === 'offline') || !state.live || state.live.stopped;
  clearInterval(countdown);
  conn.title = '';
  if ((s === 'reconnecting' || s === 'offline') && state.live && state.live.retryAt) {
    const tick = () => {
      const secs = Math.max(0, Math.ceil((state.live.retryAt - Date.now()) / 1000));
      conn.title = `Next try in ${secs} s`;
      reconnectBtn.textContent = secs > 0 ? `Retry now (${secs} s)` : 'Retry now';
    };
    tick();
    countdown = setInterval(tick, 1000);
  }
  if (s === 'live') queueUpdate();
}

/** Coalesce bursts of changes into one page update. */
function queueUpdate() {
  if (state.updateQueued) return;
  state.updateQueued = true;
  queueMicrotask(() => {
    state.updateQueued = false;
    if (state.page && state.page.update) state.page.update();
    if (state.pendingFocus) {
      const el = main.querySelector(state.pendingFocus);
      if (el) {
        el.focus();
        state.pendingFocus = null;
      }
    }
    const now = Date.now();
    for (const [k, f] of state.flashes) if (f.until <= now) state.flashes.delete(k);
  });
}

function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  route();
}

function onLinkClick(e) {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest && e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !ROUTES.some(([re]) => re.test(url.pathname))) return;
  if (state.signedOut) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
}

function route() {
  if (state.signedOut || !state.me) return;
  let path = location.pathname;
  if (path === '/' || path === '/index.html') {
    path = '/meetings';
    history.replaceState(null, '', path);
  }
  let found = null;
  for (const [re, page, nav] of ROUTES) {
    const m = path.match(re);
    if (m) {
      found = { page, nav, params: m.slice(1) };
      break;
    }
  }
  if (state.page && state.page.unmount) state.page.unmount();
  state.page = null;
  for (const a of document.querySelectorAll('nav a[data-route]')) {
    if (found && a.dataset.route === found.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!found) {
    document.title = 'Not found · syncgate';
    main.append(h('h1', { tabindex: '-1' }, 'Page not found'), h('p', {}, 'There is nothing here. ', h('a', { href: '/meetings' }, 'Go to your meetings'), '.'));
  } else {
    state.page = found.page.mount(main, ctx, found.params) || null;
  }
  // Move focus to the new page's heading so keyboard and screen-reader users land there.
  if (state.route !== null) {
    const h1 = main.querySelector('h1');
    if (h1) {
      if (!h1.hasAttribute('tabindex')) h1.setAttribute('tabindex', '-1');
      h1.focus();
    }
  }
  state.route = path;
}

function showSignIn(message) {
  top.hidden = true;
  main.replaceChildren();
  signinPage.mount(main, message);
}

/** Back to the sign-in view with a sentence saying why. */
function signOut(message, byUser = false) {
  if (state.signedOut) return;
  if (state.endingEverywhere) {
    // This window's own socket learnt of it first; say what the person did.
    message = EVERYWHERE;
    byUser = true;
  }
  state.signedOut = true;
  clearTimeout(state.expiryTimer);
  if (state.live) state.live.stop();
  state.live = null;
  state.older.clear();
  if (state.page && state.page.unmount) state.page.unmount();
  state.page = null;
  auth.token = null;
  const dialog = document.getElementById('dialog');
  if (dialog.open) dialog.close();
  if (location.pathname !== '/') history.replaceState(null, '', '/');
  showSignIn(message);
  if (byUser) document.querySelector('#main h1')?.focus();
}

function onStorage(e) {
  if (e.key !== auth.key) return;
  if (!e.newValue) {
    if (state.me) signOut('You signed out in another window.');
    return;
  }
  const c = claims(e.newValue);
  if (state.me && c && String(c.sub) === String(state.me.id)) {
    // Same person signed in again elsewhere: keep going with the fresher token.
    if (state.live) state.live.setToken(e.newValue);
    armExpiry();
    return;
  }
  // Someone else signed in in this browser: start over as them.
  location.reload();
}

boot();
