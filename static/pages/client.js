// One client: details, their meetings (upcoming and past) and their deals.
// Their recent meetings are live; the older history (before the live bound,
// see app.js) is read through REST when the page opens and merged in.

import { h, keyed } from '/dom.js';
import { meetingItem } from '/pages/meetings.js';
import { dealItem } from '/pages/pipeline.js';

export function mount(main, ctx, [idText]) {
  const id = Number(idText);
  const title = h('h1', {}, 'Client');
  const details = h('dl', { class: 'details' });
  const upcoming = h('ul', { class: 'rows', id: 'client-upcoming' });
  const past = h('ul', { class: 'rows', id: 'client-past' });
  const deals = h('ul', { class: 'cards', id: 'client-deals' });
  const noUpcoming = h('p', { class: 'empty' }, 'No upcoming meetings.');
  const noPast = h('p', { class: 'empty' }, 'No past meetings.');
  const olderStatus = h('p', { class: 'loading', id: 'client-older-status' }, 'Loading earlier meetings…');
  let olderLoaded = false;
  let gone = false;
  const noDeals = h('p', { class: 'empty' }, 'No deals.');
  const missing = h('p', { class: 'notice', role: 'alert', hidden: true }, 'This client does not exist or was deleted. ',
    h('a', { href: '/clients' }, 'Back to all clients'), '.');
  const loading = h('p', { class: 'loading' }, 'Loading…');
  let armed = null;
  const del = h('button', { type: 'button', class: 'danger', onclick: onDelete }, 'Delete client');
  const body = h('div', { class: 'client-page' },
    h('div', { class: 'toolbar' },
      h('button', { type: 'button', onclick: () => ctx.openClient(ctx.live.row('clients', id)) }, 'Edit client'),
      h('button', { type: 'button', onclick: () => ctx.openMeeting(null, { client_id: id }) }, 'New meeting'),
      h('button', { type: 'button', onclick: () => ctx.openDeal(null, { client_id: id }) }, 'New deal'),
      del),
    details,
    h('section', { class: 'block', 'aria-labelledby': 'cm-h' },
      h('h2', { id: 'cm-h' }, 'Meetings'),
      h('h3', {}, 'Upcoming'), noUpcoming, upcoming,
      h('h3', {}, 'Past'), noPast, past, olderStatus),
    h('section', { class: 'block', 'aria-labelledby': 'cd-h' },
      h('h2', { id: 'cd-h' }, 'Pipeline'), noDeals, deals));
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '/clients' }, '← All clients')), title, loading, missing, body);

  async function onDelete() {
    const c = ctx.live.row('clients', id);
    if (!c) return;
    if (!armed) {
      del.textContent = `Really delete ${c.name}? Their deals are deleted too`;
      armed = setTimeout(() => { armed = null; del.textContent = 'Delete client'; }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    try {
      await ctx.api('DELETE', `/api/clients/${id}`);
      ctx.announce(`Client ${c.name} deleted.`);
      ctx.navigate('/clients');
    } catch (e) {
      del.textContent = 'Delete client';
      ctx.announce(`Could not delete: ${e.message}`);
    }
  }

  function update() {
    const live = ctx.live;
    const c = live.row('clients', id);
    loading.hidden = live.ready || !!c;
    missing.hidden = !live.ready || !!c;
    body.hidden = !c;
    if (!c) {
      title.textContent = live.ready ? 'Client not found' : 'Client';
      document.title = 'Client · syncgate';
      return;
    }
    if (title.textContent !== c.name) title.textContent = c.name;
    document.title = `${c.name} · syncgate`;
    const sig = c.updated_at;
    if (details.dataset.sig !== sig) {
      details.dataset.sig = sig;
      const rows = [
        ['Email', c.email ? h('a', { href: `mailto:${c.email}` }, c.email) : '—'],
        ['Phone', c.phone ? h('a', { href: `tel:${c.phone}` }, c.phone) : '—'],
        ['Notes', c.notes || '—'],
      ];
      details.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
      if (ctx.flashing('clients', c)) {
        details.classList.remove('flash');
        void details.offsetWidth; // restart the animation
        details.classList.add('flash');
      }
    }
    const now = new Date().toISOString();
    const mine = ctx.meetings().filter((m) => m.client_id === id);
    const next = mine.filter((m) => m.ends_at > now).sort((a, b) => a.starts_at.localeCompare(b.starts_at));
    const before = mine.filter((m) => m.ends_at <= now).sort((a, b) => b.starts_at.localeCompare(a.starts_at));
    keyed(upcoming, next.map((m) => meetingItem(ctx, m, { withDate: true, showClient: false })));
    keyed(past, before.map((m) => meetingItem(ctx, m, { withDate: true, showClient: false })));
    noUpcoming.hidden = next.length > 0;
    noPast.hidden = before.length > 0 || !olderLoaded;
    const ds = live.rows('pipeline').filter((d) => d.client_id === id).sort((a, b) => a.id - b.id);
    keyed(deals, ds.map((d) => dealItem(ctx, d, { showClient: false })));
    noDeals.hidden = ds.length > 0;
  }
  // Meetings that ended before the live bound: every page of them, once.
  ctx.loadOlderMeetings({ client_id: String(id), to: ctx.liveSince() }).then(
    () => {
      if (gone) return;
      olderLoaded = true;
      olderStatus.hidden = true;
      update();
    },
    (e) => {
      if (gone || e.status === 401) return;
      olderStatus.textContent = `Earlier meetings could not be loaded: ${e.message}`;
      olderStatus.setAttribute('role', 'alert');
    },
  );
  update();
  return {
    update,
    unmount() {
      gone = true;
      clearTimeout(armed);
    },
  };
}
