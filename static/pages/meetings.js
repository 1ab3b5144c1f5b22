// Meetings: upcoming and past, grouped by day in the viewer's time zone.
// Also exports the meeting row used on a client's page.
// Upcoming and recent meetings are live; "Show earlier meetings" reads the
// ones before the live bound (see app.js) through REST, a span of days at a
// time going back, until the oldest meeting there is.

import { h, keyed, dayKey, dayLabel, fmtTime, fmtDateTime, fmtShortDateTime, TZ } from '/dom.js';
import { SOURCES } from '/forms.js';

const PAST_PAGE = 30;
/** How far back one REST read of earlier meetings reaches. */
const OLDER_SPAN_DAYS = 90;
const DAY_MS = 86400000;

const STATUS_LABEL = { canceled: 'Canceled', no_show: 'No-show' };

/** The user's own answer to an invitation (their attendee entry), if any. */
function ownResponse(m) {
  const me = Array.isArray(m.attendees) ? m.attendees.find((a) => a && a.self) : null;
  return me ? me.response_status : null;
}

/** The status badge: a declined invitation says so, one not answered yet too. */
function statusBadge(m) {
  const response = ownResponse(m);
  if (m.status === 'canceled' && response === 'declined') return h('span', { class: 'badge st-declined' }, 'Declined');
  if (STATUS_LABEL[m.status]) return h('span', { class: `badge st-${m.status}` }, STATUS_LABEL[m.status]);
  if (m.status === 'scheduled' && response === 'needsAction') return h('span', { class: 'badge st-unanswered' }, 'Not answered');
  return null;
}

/** "09:30 in America/New_York" when the meeting was set in another zone than the viewer's. */
function ownZone(m) {
  if (m.all_day || !m.timezone || m.timezone === TZ) return null;
  try {
    const t = new Intl.DateTimeFormat(undefined, { timeZone: m.timezone, hour: '2-digit', minute: '2-digit' }).format(new Date(m.starts_at));
    return h('span', { class: 'own-zone' }, `${t} in ${m.timezone.replace(/_/g, ' ')}`);
  } catch (_) {
    return null;
  }
}

function isHttp(u) {
  return typeof u === 'string' && /^https?:\/\//i.test(u.trim());
}

/** A keyed item for one meeting (for `keyed`). `withDate` shows the date too (flat lists). */
export function meetingItem(ctx, m, { withDate = false, showClient = true } = {}) {
  const key = `meetings:${m.id}`;
  const clientName = ctx.clientName(m.client_id);
  return {
    key,
    sig: [m.updated_at, m.status, clientName, withDate, showClient, m.calendar_name].join('|'),
    build: () => {
      const when = m.all_day
        ? h('span', {}, withDate ? `${fmtDateTime(m.starts_at).split(',')[0]} · ` : '', 'All day')
        : h('span', {},
          withDate ? `${new Date(m.starts_at).toLocaleDateString(undefined, { timeZone: TZ, dateStyle: 'medium' })} · ` : '',
          h('time', { datetime: m.starts_at }, fmtTime(m.starts_at)),
          ' – ',
          h('time', { datetime: m.ends_at }, dayKey(m.ends_at) === dayKey(m.starts_at) ? fmtTime(m.ends_at) : fmtShortDateTime(m.ends_at)));
      const join = isHttp(m.meeting_url) ? m.meeting_url : isHttp(m.location) ? m.location : null;
      const meta = [];
      if (showClient && m.client_id != null) {
        meta.push(h('span', {}, 'Client: ', clientName
          ? h('a', { href: `/clients/${m.client_id}`, class: 'client-link' }, clientName)
          : h('span', { class: 'muted' }, 'unknown client')));
      }
      if (join && m.status === 'scheduled') {
        meta.push(h('a', { href: join, class: 'join', target: '_blank', rel: 'noopener noreferrer' }, 'Join', h('span', { class: 'sr-only' }, ` ${m.title}`)));
      }
      if (m.location && m.location !== join) meta.push(h('span', { class: 'location' }, m.location));
      if (m.calendar_name) meta.push(h('span', { class: 'calendar' }, `Calendar: ${m.calendar_name}`));
      const zone = ownZone(m);
      if (zone) meta.push(zone);
      const invitees = Array.isArray(m.invitees) ? m.invitees : [];
      const li = h('li', { class: `meeting status-${m.status}${ctx.flashing('meetings', m) ? ' flash' : ''}`, dataset: { id: String(m.id), source: m.source } },
        h('div', { class: 'when' }, when),
        h('div', { class: 'what' },
          h('p', { class: 'title' },
            h('span', { class: 'title-text' }, m.title), ' ',
            h('span', { class: `badge src-${m.source}`, title: `From ${SOURCES[m.source] || m.source}` }, SOURCES[m.source] || m.source),
            statusBadge(m) ? [' ', statusBadge(m)] : null),
          meta.length ? h('p', { class: 'meta' }, meta.flatMap((x, i) => (i ? [' · ', x] : [x]))) : null,
          m.status === 'canceled' && (m.cancel_reason || m.canceled_by)
            ? h('p', { class: 'meta' }, `Canceled${m.canceled_by ? ` by ${m.canceled_by}` : ''}${m.cancel_reason ? `: ${m.cancel_reason}` : ''}`)
            : null,
          m.previous_starts_at && m.status === 'scheduled'
            ? h('p', { class: 'meta' }, `Moved from ${fmtDateTime(m.previous_starts_at)}`)
            : null,
          invitees.length && !m.client_id
            ? h('p', { class: 'meta' }, 'With ', invitees.map((i) => i.name || i.email).filter(Boolean).join(', '))
            : null,
          m.notes ? h('p', { class: 'notes' }, m.notes) : null),
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'small', onclick: () => ctx.openMeeting(ctx.live.row('meetings', m.id) || m) },
            'Edit', h('span', { class: 'sr-only' }, ` ${m.title}`))));
      return li;
    },
  };
}

/** Day groups for `keyed`: one <section> per day with its meetings. */
export function dayGroups(ctx, meetings) {
  const groups = new Map();
  for (const m of meetings) {
    const k = dayKey(m.starts_at);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(m);
  }
  const today = dayKey(new Date().toISOString());
  return [...groups].map(([day, items]) => ({
    key: `day:${day}`,
    sig: `${day}|${today}`,
    build: () => {
      const id = `day-${day}`;
      return h('section', { class: 'day', 'aria-labelledby': id },
        h('h3', { id }, dayLabel(items[0].starts_at)),
        h('ul', { class: 'rows' }));
    },
    update: (el) => keyed(el.querySelector('ul'), items.map((m) => meetingItem(ctx, m))),
  }));
}

export function mount(main, ctx) {
  document.title = 'Meetings · syncgate';
  let pastLimit = PAST_PAGE;
  const upcoming = h('div', { class: 'days', id: 'upcoming' });
  const past = h('div', { class: 'days', id: 'past' });
  const upcomingEmpty = h('p', { class: 'empty' }, 'No upcoming meetings.');
  const pastEmpty = h('p', { class: 'empty' }, 'No past meetings.');
  const more = h('button', { type: 'button', id: 'more-past', onclick: showMore }, 'Show earlier meetings');
  // Earlier meetings through REST: read back to `olderUntil` so far; the
  // oldest meeting before the live bound starts at `oldestStart` (null: none).
  let olderUntil = ctx.liveSince();
  let oldestStart;
  let loadingOlder = false;
  let gone = false;
  const olderDone = () => oldestStart === null || (oldestStart !== undefined && Date.parse(olderUntil) <= Date.parse(oldestStart));
  // One row tells whether there is anything before the live bound at all (REST lists oldest first).
  ctx.api('GET', `/api/meetings?${new URLSearchParams({ to: olderUntil, limit: '1' })}`).then(
    (page) => {
      oldestStart = page.items && page.items.length ? page.items[0].starts_at : null;
      if (!gone) update();
    },
    () => { oldestStart = undefined; },
  );

  async function showMore() {
    pastLimit += PAST_PAGE;
    update();
    if (loadingOlder) return;
    loadingOlder = true;
    more.disabled = true;
    more.textContent = 'Loading earlier meetings…';
    try {
      // Read back a span at a time until the page has enough rows to show or nothing older exists.
      while (!gone && !olderDone() && pastRows().length <= pastLimit) {
        const from = new Date(Date.parse(olderUntil) - OLDER_SPAN_DAYS * DAY_MS).toISOString();
        await ctx.loadOlderMeetings({ from, to: olderUntil });
        olderUntil = from;
        if (oldestStart === undefined) break; // the first look failed: one span per click
      }
    } catch (e) {
      if (e.status !== 401) ctx.announce(`Earlier meetings could not be loaded: ${e.message}`);
    } finally {
      loadingOlder = false;
      more.disabled = false;
      more.textContent = 'Show earlier meetings';
      if (!gone) update();
    }
  }

  /**
   * Past meetings, newest first: the live ones and the earlier ones read so
   * far, down to where this page has read every meeting (older rows another
   * page read, such as a client's history, would leave unexplained holes).
   */
  function pastRows() {
    const now = new Date().toISOString();
    const floor = olderDone() ? -Infinity : Date.parse(olderUntil);
    return ctx.meetings()
      .filter((m) => m.ends_at <= now && (ctx.live.row('meetings', m.id) || Date.parse(m.ends_at) > floor))
      .sort((a, b) => b.starts_at.localeCompare(a.starts_at) || b.id - a.id);
  }
  const loading = h('p', { class: 'loading' }, 'Loading meetings…');
  main.append(
    h('div', { class: 'page-head' },
      h('h1', {}, 'Meetings'),
      h('button', { type: 'button', class: 'primary', id: 'new-meeting', onclick: () => ctx.openMeeting(null) }, 'New meeting')),
    h('p', { class: 'hint' }, `Times are shown in ${TZ.replace(/_/g, ' ')}.`),
    loading,
    h('section', { 'aria-labelledby': 'upcoming-h', class: 'block' }, h('h2', { id: 'upcoming-h' }, 'Upcoming'), upcomingEmpty, upcoming),
    h('section', { 'aria-labelledby': 'past-h', class: 'block' }, h('h2', { id: 'past-h' }, 'Past'), pastEmpty, past, more));

  function update() {
    const live = ctx.live;
    loading.hidden = live.ready;
    const now = new Date().toISOString();
    const next = live.rows('meetings').filter((m) => m.ends_at > now).sort((a, b) => a.starts_at.localeCompare(b.starts_at) || a.id - b.id);
    const before = pastRows();
    keyed(upcoming, dayGroups(ctx, next));
    keyed(past, dayGroups(ctx, before.slice(0, pastLimit)));
    upcomingEmpty.hidden = !live.ready || next.length > 0;
    pastEmpty.hidden = !live.ready || before.length > 0 || !olderDone();
    more.hidden = before.length <= pastLimit && olderDone();
  }
  update();
  return {
    update,
    unmount() {
      gone = true;
    },
  };
}
