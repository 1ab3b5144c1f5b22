// Integrations: is Google Calendar connected (and does it need a
// reconnect), which of the user's Google calendars sync (a tick each), is
// Outlook (Microsoft 365) connected and as whom, is Calendly linked, when did each source last deliver a webhook, and for
// admins the server's health report.

import { h, fmtDateTime, ago } from '/dom.js';
import { auth, api } from '/api.js';

const TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)$/;

function label(key) {
  const s = key.replace(/_/g, ' ').replace(/\b24h\b/, '(24 h)').replace(/\b7d\b/, '(7 days)');
  return s[0].toUpperCase() + s.slice(1);
}

function when(iso) {
  return iso ? h('span', {}, h('time', { datetime: iso }, fmtDateTime(iso)), ` (${ago(iso)})`) : 'never';
}

/** Any JSON value as readable HTML: objects as <dl>, lists of objects as tables. */
function show(v) {
  if (v === null || v === undefined) return h('span', { class: 'muted' }, '—');
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'string' && TIMESTAMP.test(v)) return when(v);
  if (typeof v !== 'object') return String(v);
  if (Array.isArray(v)) {
    if (!v.length) return h('span', { class: 'muted' }, 'none');
    if (v.every((x) => x && typeof x === 'object' && !Array.isArray(x))) {
      const cols = [...new Set(v.flatMap((x) => Object.keys(x)))];
      return h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, label(c))))),
        h('tbody', {}, v.map((row) => h('tr', {}, cols.map((c) => h('td', {}, show(row[c]))))))));
    }
    return v.map((x) => (typeof x === 'object' ? JSON.stringify(x) : String(x))).join(', ');
  }
  const keys = Object.keys(v);
  if (!keys.length) return h('span', { class: 'muted' }, 'none');
  return h('dl', { class: 'details' }, keys.flatMap((k) => [h('dt', {}, label(k)), h('dd', {}, show(v[k]))]));
}

/** A future instant: "Nov 30, 2026, 10:00 AM (in 6 days)"; past ones say so. */
function whenAhead(iso) {
  if (!iso) return 'unknown';
  const left = new Date(iso).getTime() - Date.now();
  const days = Math.round(left / 86400000);
  const hours = Math.round(left / 3600000);
  const rel = left <= 0 ? 'expired' : days >= 1 ? `in ${days} day${days === 1 ? '' : 's'}` : `in ${Math.max(hours, 1)} hour${hours === 1 ? '' : 's'}`;
  return h('span', { class: left <= 3600000 ? 'state bad' : '' }, h('time', { datetime: iso }, fmtDateTime(iso)), ` (${rel})`);
}

async function getJson(path, withAuth) {
  const headers = { accept: 'application/json' };
  if (withAuth && auth.token) headers.authorization = `Bearer ${auth.token}`;
  try {
    const r = await fetch(path, { headers });
    const body = await r.json().catch(() => null);
    return { status: r.status, body };
  } catch (_) {
    return { status: 0, body: null };
  }
}

export function mount(main, ctx) {
  document.title = 'Integrations · syncgate';
  const google = h('div', { class: 'status-body', id: 'google-status' }, 'Checking…');
  const outlook = h('div', { class: 'status-body', id: 'outlook-status' }, 'Checking…');
  const calendly = h('div', { class: 'status-body', id: 'calendly-status' }, 'Checking…');
  const admin = h('section', { class: 'panel', 'aria-labelledby': 'health-h', hidden: true },
    h('h2', { id: 'health-h' }, 'Server health'), h('div', { id: 'admin-health' }));
  const refresh = h('button', { type: 'button', id: 'refresh-status', onclick: () => load() }, 'Refresh');
  const checked = h('p', { class: 'hint', role: 'status', 'aria-live': 'polite' });
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Integrations'), refresh),
    checked,
    h('section', { class: 'panel', 'aria-labelledby': 'google-h' }, h('h2', { id: 'google-h' }, 'Google Calendar'), google),
    h('section', { class: 'panel', 'aria-labelledby': 'outlook-h' }, h('h2', { id: 'outlook-h' }, 'Outlook (Microsoft 365)'), outlook),
    h('section', { class: 'panel', 'aria-labelledby': 'calendly-h' }, h('h2', { id: 'calendly-h' }, 'Calendly'), calendly),
    admin);

  let seq = 0;
  async function load() {
    const mine = ++seq;
    refresh.disabled = true;
    const me = await ctx.refreshMe().catch(() => ctx.me);
    const [gs, ms, cs] = await Promise.all([
      getJson('/api/calendar/webhook/test'), getJson('/api/microsoft/webhook/test'), getJson('/api/calendly/webhook/test')]);
    const report = me && me.role === 'admin' ? await adminReport() : null;
    if (mine !== seq) return;
    refresh.disabled = false;
    renderGoogle(me, gs, report);
    renderOutlook(me, ms);
    renderCalendly(me, cs);
    if (report) {
      admin.hidden = false;
      document.getElementById('admin-health').replaceChildren(renderHealth(report));
    }
    checked.textContent = `Checked ${new Date().toLocaleTimeString()}.`;
  }

  function renderGoogle(me, gs, report) {
    const configured = gs.body ? gs.body.google_configured : undefined;
    let state;
    let action = null;
    // The page asks for the consent URL with its token in a header, so the
    // token never appears in a URL (history, proxy logs).
    const connectHref = '/api/auth/google?connect=1';
    const connect = async (ev) => {
      ev.preventDefault();
      try {
        const { location } = await api('POST', '/api/auth/google/connect');
        window.location.assign(location);
      } catch (e) {
        checked.textContent = `Could not start connecting Google: ${e.message}`;
      }
    };
    if (me && me.google_needs_reconnect) {
      state = h('p', { class: 'state bad' }, 'Needs reconnect: Google no longer accepts the stored permission, so changes in your calendar are not arriving. Reconnect to resume.');
      action = h('a', { class: 'button primary', href: connectHref, id: 'google-connect', onclick: connect }, 'Reconnect Google Calendar');
    } else if (me && me.google_connected) {
      state = h('p', { class: 'state good' }, 'Connected: changes in your Google Calendar arrive here within seconds.');
      action = h('a', { class: 'button', href: connectHref, id: 'google-connect', onclick: connect }, 'Reconnect Google Calendar');
    } else {
      state = h('p', { class: 'state' }, 'Not connected.');
      action = h('a', { class: 'button primary', href: connectHref, id: 'google-connect', onclick: connect }, 'Connect Google Calendar');
    }
    if (configured === false) {
      action = h('p', { class: 'hint' }, 'Google is not set up on this server (an administrator adds the Google client id and secret).');
    }
    const facts = [];
    if (gs.body) {
      facts.push(['Webhook endpoint', gs.body.reachable ? 'reachable' : 'not reachable']);
      facts.push(['Last notification from Google (any user)', when(gs.body.last_notification_at)]);
    } else {
      facts.push(['Webhook endpoint', gs.status ? `status unknown (the server answered ${gs.status})` : 'the server cannot be reached']);
    }
    // Channel expiry: /api/me may carry it; admins also see it in the health report.
    const channels = report && report.google && Array.isArray(report.google.channels) ? report.google.channels : [];
    const mineActive = channels.find((c) => me && c.user_id === me.id && c.state === 'active');
    if (me && me.google_channel_expires_at !== undefined) facts.push(['Push channel expires', whenAhead(me.google_channel_expires_at)]);
    else if (mineActive) facts.push(['Push channel expires', whenAhead(mineActive.expiration)]);
    const calendars = h('div', { id: 'google-calendars' });
    google.replaceChildren(state, h('dl', { class: 'details' }, facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])), calendars, action);
    if (me && me.google_connected && !me.google_needs_reconnect && configured !== false) loadCalendars(calendars);
  }

  /**
   * Outlook's card. Whether the server has Microsoft set up comes from its
   * public webhook status (`configured`), which needs no sign-in and no
   * route of its own; the connection itself from `/api/me`'s `microsoft`.
   */
  function renderOutlook(me, ms) {
    const configured = ms.body ? ms.body.configured : undefined;
    const status = (me && me.microsoft) || {};
    const account = status.username ? ` as ${status.username}` : '';
    // As for Google: the consent URL is asked for with the token in a
    // header, so the token never appears in a URL.
    const connect = async (ev) => {
      const button = ev.currentTarget;
      button.disabled = true;
      try {
        const { url, location } = await api('POST', '/api/auth/microsoft/connect');
        window.location.assign(url || location);
      } catch (e) {
        button.disabled = false;
        checked.textContent = `Could not start connecting Outlook: ${e.message}`;
      }
    };
    const disconnect = async (ev) => {
      const button = ev.currentTarget;
      button.disabled = true;
      try {
        await api('DELETE', '/api/me/microsoft');
        checked.textContent = 'Outlook disconnected.';
        load();
      } catch (e) {
        button.disabled = false;
        checked.textContent = `Could not disconnect Outlook: ${e.message}`;
      }
    };
    const connectButton = (text, primary) =>
      h('button', { type: 'button', class: primary ? 'primary' : '', id: 'outlook-connect', onclick: connect }, text);
    const disconnectButton = () => h('button', { type: 'button', class: 'danger', id: 'outlook-disconnect', onclick: disconnect }, 'Disconnect Outlook');
    let state;
    let actions = [];
    if (configured === false) {
      state = h('p', { class: 'state' }, 'Not available.');
      actions = [h('p', { class: 'hint', id: 'outlook-not-configured' },
        'Outlook is not set up on this server (an administrator registers an app in Microsoft Entra and adds its client id and secret under [microsoft]).')];
    } else if (status.needs_reconnect) {
      state = h('p', { class: 'state bad' }, `Needs reconnect${account}: Microsoft no longer accepts the stored permission, so changes in your Outlook calendar are not arriving. Reconnect to resume.`);
      actions = [connectButton('Reconnect Outlook', true), ' ', disconnectButton()];
    } else if (status.connected) {
      state = h('p', { class: 'state good' }, `Connected${account}: changes in your Outlook calendar arrive here within seconds.`);
      actions = [connectButton('Reconnect Outlook', false), ' ', disconnectButton()];
    } else {
      state = h('p', { class: 'state' }, 'Not connected.');
      actions = [connectButton('Connect Outlook', true)];
    }
    const facts = [];
    if (status.connected && status.username) facts.push(['Account', status.username]);
    if (ms.body) {
      if (configured !== false) {
        facts.push(['Webhook endpoint', ms.body.reachable ? 'reachable' : 'not reachable']);
        facts.push(['Last notification from Microsoft (any user)', when(ms.body.last_notification_at)]);
      }
    } else {
      facts.push(['Webhook endpoint', ms.status ? `status unknown (the server answered ${ms.status})` : 'the server cannot be reached']);
    }
    if (status.connected && !status.needs_reconnect && me.microsoft_subscription_expires_at) {
      facts.push(['Subscription expires', whenAhead(me.microsoft_subscription_expires_at)]);
    }
    const dl = facts.length ? h('dl', { class: 'details' }, facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])) : null;
    outlook.replaceChildren(state, ...(dl ? [dl] : []), h('p', { class: 'actions' }, actions));
  }

  /** The calendar's colour dot (set through the CSSOM: the page's CSP allows no inline style attribute). */
  function swatch(color) {
    const dot = h('span', { class: 'swatch', 'aria-hidden': 'true' });
    if (color) dot.style.backgroundColor = color;
    return dot;
  }

  /** The user's Google calendars with a tick each; a change is saved at once. */
  async function loadCalendars(box) {
    box.replaceChildren(h('p', { class: 'hint' }, 'Loading your calendars…'));
    let list;
    try {
      list = (await api('GET', '/api/me/calendars')).items || [];
    } catch (e) {
      box.replaceChildren(h('p', { class: 'state bad' }, `Your calendars could not be listed: ${e.message}`));
      return;
    }
    const saved = h('p', { class: 'hint', role: 'status', 'aria-live': 'polite', id: 'calendars-saved' });
    const boxes = list.map((c) => h('input', { type: 'checkbox', value: c.id, checked: !!c.selected, onchange: () => save() }));
    async function save() {
      const selected = boxes.filter((b) => b.checked).map((b) => b.value);
      boxes.forEach((b) => { b.disabled = true; });
      saved.textContent = 'Saving…';
      try {
        const after = (await api('PUT', '/api/me/calendars', { selected })).items || [];
        for (const b of boxes) b.checked = !!after.find((c) => c.id === b.value && c.selected);
        saved.textContent = selected.length
          ? `Saved. Meetings from ${selected.length === 1 ? 'this calendar' : `these ${selected.length} calendars`} sync here.`
          : 'Saved. No calendar syncs now.';
      } catch (e) {
        saved.textContent = `Not saved: ${e.message}`;
      } finally {
        boxes.forEach((b) => { b.disabled = false; });
      }
    }
    box.replaceChildren(h('fieldset', { class: 'calendars' },
      h('legend', {}, 'Calendars to sync'),
      list.length ? h('ul', { class: 'calendar-list' }, list.map((c, i) => h('li', {},
        h('label', {}, boxes[i], ' ',
          swatch(c.color),
          ` ${c.name}`, c.primary ? h('span', { class: 'muted' }, ' (your main calendar)') : null))))
        : h('p', { class: 'muted' }, 'Google lists no calendars for this account.'),
      saved));
  }

  function renderCalendly(me, cs) {
    const linked = me && me.calendly_user_uri;
    const state = linked
      ? h('p', { class: 'state good' }, 'Linked: bookings, cancellations and no-shows arrive here as they happen.')
      : h('p', { class: 'state' }, 'Bookings are matched to you by your email address. An administrator links your Calendly account with ',
        h('code', {}, 'syncgate calendly subscribe'), '.');
    const facts = [];
    if (cs.body) {
      facts.push(['Webhook endpoint', cs.body.reachable ? 'reachable' : 'not reachable']);
      facts.push(['Signing key configured', cs.body.configured ? 'yes' : 'no — deliveries cannot be verified and are refused']);
      facts.push(['Last accepted delivery (any user)', when(cs.body.last_accepted_at)]);
    } else {
      facts.push(['Webhook endpoint', cs.status ? `status unknown (the server answered ${cs.status})` : 'the server cannot be reached']);
    }
    calendly.replaceChildren(state, h('dl', { class: 'details' }, facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
  }

  /** The admin report: /api/admin/health, or its per-source parts where that is not there. */
  async function adminReport() {
    const all = await getJson('/api/admin/health', true);
    if (all.status === 200 && all.body) return all.body;
    const [g, c] = await Promise.all([getJson('/api/admin/health/google', true), getJson('/api/admin/health/calendly', true)]);
    const parts = {};
    if (g.status === 200) parts.google = g.body;
    if (c.status === 200) parts.calendly = c.body;
    return Object.keys(parts).length ? parts : null;
  }

  function renderHealth(report) {
    const out = [];
    if (typeof report.status === 'string') {
      out.push(h('p', { class: `state ${report.status === 'ok' ? 'good' : 'bad'}` },
        report.status === 'ok' ? 'All good.' : 'Needs attention: see the alerts below.'));
    }
    const alerts = report.alerts;
    if (Array.isArray(alerts)) {
      out.push(h('h3', {}, 'Alerts'), alerts.length
        ? h('ul', { class: 'alerts' }, alerts.map((a) => (typeof a === 'string'
          ? h('li', { class: 'alert' }, a)
          : h('li', { class: 'alert' },
            h('strong', {}, a.message || a.kind || 'Alert'),
            a.action ? h('span', { class: 'action' }, ` What to do: ${a.action}`) : null,
            a.since ? h('span', { class: 'muted' }, ' · since ', when(a.since)) : null))))
        : h('p', { class: 'state good' }, 'No alerts.'));
    }
    for (const [k, v] of Object.entries(report)) {
      if (k === 'alerts' || k === 'status') continue;
      if (v && typeof v === 'object' && !Array.isArray(v)) out.push(h('h3', {}, label(k)), show(v));
      else out.push(h('dl', { class: 'details' }, h('dt', {}, label(k)), h('dd', {}, show(v))));
    }
    return h('div', {}, out);
  }

  load();
  return {};
}
