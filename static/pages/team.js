// Team (admins): who has access — role, status, connections, last seen —
// and the account actions: invite (shows a single-use sign-in link), change
// role, disable/enable, sign out everywhere, remove (asks first). The list
// comes from REST and is read again whenever the realtime socket reports a
// `users` change, so another admin's action (or the CLI's) shows at once.

import { h, keyed, fmtDateTime, ago } from '/dom.js';
import { Live } from '/live.js';
import { auth } from '/api.js';

const ROLES = [['user', 'Adviser'], ['admin', 'Admin']];

function lastSeen(iso) {
  return iso ? h('time', { datetime: iso, title: fmtDateTime(iso) }, ago(iso)) : h('span', { class: 'muted' }, 'never');
}

// A calendar connection as the column names it: null when not connected.
function connection(name, connected, needsReconnect) {
  return needsReconnect ? `${name} (needs reconnect)` : connected ? name : null;
}

function connections(u) {
  const parts = [
    connection('Google', u.google_connected, u.google_needs_reconnect),
    connection('Outlook', u.microsoft_connected, u.microsoft_needs_reconnect),
    u.calendly_connected ? 'Calendly' : null,
  ].filter(Boolean);
  return parts.length ? parts.join(', ') : h('span', { class: 'muted' }, 'none');
}

export function mount(main, ctx) {
  document.title = 'Team · syncgate';
  const status = h('p', { class: 'hint', role: 'status', 'aria-live': 'polite', id: 'team-status' });
  const error = h('p', { class: 'error', role: 'alert', id: 'team-error' });
  const tbody = h('tbody', { id: 'team-rows' });
  const linkOut = h('div', { id: 'invite-link', hidden: true });
  const email = h('input', { id: 'invite-email', type: 'email', name: 'email', required: true, autocomplete: 'off' });
  const name = h('input', { id: 'invite-name', type: 'text', name: 'name', autocomplete: 'off' });
  const role = h('select', { id: 'invite-role', name: 'role' }, ROLES.map(([v, l]) => h('option', { value: v }, l)));
  const inviteError = h('p', { class: 'error', role: 'alert' });
  const invite = h('form', { class: 'form inline', id: 'invite', novalidate: true, onsubmit: (e) => { e.preventDefault(); sendInvite(); } },
    h('div', { class: 'field' }, h('label', { for: 'invite-email' }, 'Email'), email),
    h('div', { class: 'field' }, h('label', { for: 'invite-name' }, 'Name (optional)'), name),
    h('div', { class: 'field' }, h('label', { for: 'invite-role' }, 'Role'), role),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Invite')),
    inviteError);

  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Team')),
    status,
    error,
    h('section', { class: 'panel', 'aria-labelledby': 'members-h' },
      h('h2', { id: 'members-h' }, 'Members'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'team' },
        h('thead', {}, h('tr', {}, ['Name', 'Role', 'Status', 'Connected', 'Last seen', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
        tbody))),
    h('section', { class: 'panel', 'aria-labelledby': 'invite-h' }, h('h2', { id: 'invite-h' }, 'Invite someone'), invite, linkOut));

  let users = [];
  let loadSeq = 0;
  let gone = false;

  async function load() {
    const mine = ++loadSeq;
    try {
      const list = await ctx.api('GET', '/api/admin/users');
      if (mine !== loadSeq || gone) return;
      users = list.items;
      error.textContent = '';
      render();
    } catch (e) {
      if (!gone && e.status !== 401) error.textContent = e.message;
    }
  }

  async function act(what, fn) {
    error.textContent = '';
    try {
      await fn();
      status.textContent = what;
      ctx.announce(what);
      await load();
    } catch (e) {
      if (e.status !== 401) error.textContent = e.message;
      render();
    }
  }

  function row(u) {
    const self = ctx.me && u.id === ctx.me.id;
    const label = u.name ? `${u.name} <${u.email}>` : u.email;
    const roleSel = h('select', {
      'aria-label': `Role of ${u.email}`,
      onchange: (e) => act(`${u.email} is now ${e.target.value === 'admin' ? 'an admin' : 'an adviser'}.`,
        () => ctx.api('PATCH', `/api/admin/users/${u.id}`, { role: e.target.value })),
    }, ROLES.map(([v, l]) => h('option', { value: v }, l)));
    roleSel.value = u.role;
    const disabled = u.status === 'disabled';
    const toggle = h('button', {
      type: 'button',
      class: disabled ? '' : 'danger',
      onclick: () => act(disabled ? `${u.email} is enabled.` : `${u.email} is disabled.`,
        () => ctx.api('PATCH', `/api/admin/users/${u.id}`, { status: disabled ? 'active' : 'disabled' })),
    }, disabled ? 'Enable' : 'Disable');
    const signout = h('button', {
      type: 'button',
      onclick: () => act(`${u.email} is signed out everywhere.`, () => ctx.api('POST', `/api/admin/users/${u.id}/signout`)),
    }, 'Sign out everywhere');
    let armed = null;
    const remove = h('button', {
      type: 'button',
      class: 'danger',
      onclick: () => {
        if (!armed) {
          remove.textContent = `Really remove ${u.email} and all their data?`;
          armed = setTimeout(() => { armed = null; remove.textContent = 'Remove'; }, 5000);
          return;
        }
        clearTimeout(armed);
        armed = null;
        act(`${u.email} was removed.`, () => ctx.api('DELETE', `/api/admin/users/${u.id}`));
      },
    }, 'Remove');
    return h('tr', { dataset: { user: String(u.id), status: u.status } },
      h('th', { scope: 'row' }, label, self ? h('span', { class: 'badge' }, 'you') : null),
      h('td', {}, roleSel),
      h('td', {}, h('span', { class: `state ${disabled ? 'bad' : 'good'}` }, disabled ? 'Disabled' : 'Active')),
      h('td', {}, connections(u)),
      h('td', {}, lastSeen(u.last_seen)),
      h('td', { class: 'actions' }, toggle, signout, remove));
  }

  function render() {
    keyed(tbody, users.map((u) => ({ key: String(u.id), sig: JSON.stringify(u), build: () => row(u) })));
    status.textContent = `${users.length} member${users.length === 1 ? '' : 's'}`;
  }

  async function sendInvite() {
    inviteError.textContent = '';
    if (!email.value.trim()) {
      inviteError.textContent = 'Enter the email address of the person to invite.';
      email.focus();
      return;
    }
    try {
      const made = await ctx.api('POST', '/api/admin/users', { email: email.value.trim(), name: name.value.trim() || null, role: role.value });
      const link = h('input', { type: 'text', readonly: true, id: 'invite-link-url', value: made.link, 'aria-label': 'Sign-in link' });
      linkOut.replaceChildren(
        h('p', {}, `Send this single-use sign-in link to ${made.user.email}; it works once, within 15 minutes:`),
        link,
        h('button', { type: 'button', onclick: () => navigator.clipboard?.writeText(made.link).then(() => ctx.announce('Link copied.'), () => link.select()) }, 'Copy link'));
      linkOut.hidden = false;
      email.value = '';
      name.value = '';
      await load();
    } catch (e) {
      if (e.status !== 401) inviteError.textContent = e.message;
    }
  }

  // Account changes arrive on a socket of the page's own (admins only).
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const live = new Live({
    url: `${proto}//${location.host}${ctx.realtime.path}`,
    apikey: ctx.realtime.apikey,
    token: auth.token,
    tables: ['users'],
    topic: 'realtime:syncgate-team',
  });
  let queued = false;
  const reload = () => {
    if (queued) return;
    queued = true;
    setTimeout(() => { queued = false; load(); }, 100);
  };
  live.on('change', reload);
  live.on('reset', reload);
  live.start();

  load();
  return {
    unmount() {
      gone = true;
      live.stop();
    },
  };
}
