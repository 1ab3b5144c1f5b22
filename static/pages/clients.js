// Clients: the list with a search box (kept in the address as ?q=).

import { h, keyed, fmtDateTime } from '/dom.js';

function matches(c, q) {
  if (!q) return true;
  const hay = `${c.name}\n${c.email || ''}\n${c.phone || ''}`.toLowerCase();
  return q.toLowerCase().split(/\s+/).filter(Boolean).every((w) => hay.includes(w));
}

export function mount(main, ctx) {
  document.title = 'Clients · syncgate';
  const params = new URLSearchParams(location.search);
  const search = h('input', { type: 'search', id: 'client-search', name: 'q', autocomplete: 'off', value: params.get('q') || '' });
  const count = h('p', { class: 'hint', id: 'client-count', role: 'status', 'aria-live': 'polite' });
  const list = h('ul', { class: 'cards', id: 'client-list' });
  const empty = h('p', { class: 'empty' });
  const loading = h('p', { class: 'loading' }, 'Loading clients…');
  main.append(
    h('div', { class: 'page-head' },
      h('h1', {}, 'Clients'),
      h('button', { type: 'button', class: 'primary', id: 'new-client', onclick: () => ctx.openClient(null) }, 'New client')),
    h('form', { role: 'search', class: 'search', onsubmit: (e) => e.preventDefault() },
      h('label', { for: 'client-search' }, 'Search clients'), search),
    count, loading, empty, list);

  search.addEventListener('input', () => {
    const q = search.value.trim();
    history.replaceState(null, '', q ? `/clients?q=${encodeURIComponent(q)}` : '/clients');
    update();
  });

  function update() {
    const live = ctx.live;
    loading.hidden = live.ready;
    const q = search.value.trim();
    const all = ctx.clients();
    const shown = all.filter((c) => matches(c, q));
    const now = new Date().toISOString();
    const nextMeeting = new Map();
    for (const m of live.rows('meetings')) {
      if (m.client_id == null || m.status !== 'scheduled' || m.starts_at < now) continue;
      const cur = nextMeeting.get(m.client_id);
      if (!cur || m.starts_at < cur.starts_at) nextMeeting.set(m.client_id, m);
    }
    const openDeals = new Map();
    for (const d of live.rows('pipeline')) {
      if (d.client_id == null || d.stage === 'won' || d.stage === 'lost') continue;
      openDeals.set(d.client_id, (openDeals.get(d.client_id) || 0) + 1);
    }
    keyed(list, shown.map((c) => {
      const key = `clients:${c.id}`;
      const nm = nextMeeting.get(c.id);
      const deals = openDeals.get(c.id) || 0;
      return {
        key,
        sig: [c.updated_at, nm ? `${nm.id}@${nm.starts_at}` : '', deals].join('|'),
        build: () => h('li', { class: `card client${ctx.flashing('clients', c) ? ' flash' : ''}`, dataset: { id: String(c.id) } },
          h('p', { class: 'title' }, h('a', { href: `/clients/${c.id}` }, c.name)),
          c.email || c.phone ? h('p', { class: 'meta' },
            c.email ? h('a', { href: `mailto:${c.email}` }, c.email) : null,
            c.email && c.phone ? ' · ' : null,
            c.phone ? h('a', { href: `tel:${c.phone}` }, c.phone) : null) : null,
          h('p', { class: 'meta' },
            nm ? `Next meeting ${fmtDateTime(nm.starts_at)}` : 'No upcoming meeting',
            deals ? ` · ${deals} open deal${deals === 1 ? '' : 's'}` : '')),
      };
    }));
    count.textContent = live.ready ? (q ? `${shown.length} of ${all.length} clients match “${q}”.` : `${all.length} client${all.length === 1 ? '' : 's'}.`) : '';
    empty.hidden = !live.ready || shown.length > 0;
    empty.textContent = all.length ? 'No client matches that search.' : 'No clients yet. Bookings from Calendly add them, or create one.';
  }
  update();
  return { update };
}
