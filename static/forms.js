// Create/edit forms for meetings, clients and deals, in the one <dialog>.
// A form keeps what the person typed even when the row changes live; the
// server's sentence is shown when it refuses.

import { h, toLocalInput, fromLocalInput, fmtDateTime } from '/dom.js';

export const STAGES = [
  ['lead', 'Lead'],
  ['qualified', 'Qualified'],
  ['proposal', 'Proposal'],
  ['won', 'Won'],
  ['lost', 'Lost'],
];
export const SOURCES = { google: 'Google', microsoft: 'Outlook', calendly: 'Calendly', manual: 'Manual' };

const dialog = () => document.getElementById('dialog');
let fieldSeq = 0;

function field(f) {
  const id = `f-${f.name}-${++fieldSeq}`;
  const common = { id, name: f.name, required: f.required || null, disabled: f.disabled || null, ...(f.attrs || {}) };
  let input;
  if (f.type === 'textarea') {
    input = h('textarea', { ...common, rows: 3 });
    input.value = f.value ?? '';
  } else if (f.type === 'select') {
    input = h('select', common, f.options.map(([v, label]) => h('option', { value: v }, label)));
    input.value = f.value ?? '';
  } else {
    input = h('input', { ...common, type: f.type || 'text' });
    input.value = f.value ?? '';
  }
  const hintId = f.hint ? `${id}-hint` : null;
  if (hintId) input.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' }, h('label', { for: id }, f.label), input, f.hint ? h('p', { class: 'hint', id: hintId }, f.hint) : null);
}

/**
 * Show a form in the dialog. `submit(values)` returns a promise; the dialog
 * closes when it resolves and shows the error's message when it rejects.
 */
function showForm({ title, notice, fields, submitLabel = 'Save', submit, destroy, destroyLabel, after }) {
  const d = dialog();
  const opener = document.activeElement;
  const openerKey = opener && opener.closest ? opener.closest('[data-key]')?.dataset.key : null;
  const error = h('p', { class: 'error', role: 'alert' });
  const save = h('button', { type: 'submit', class: 'primary' }, submitLabel);
  const cancel = h('button', { type: 'button', onclick: () => d.close() }, 'Cancel');
  let del = null;
  if (destroy) {
    let armed = false;
    let disarm = null;
    del = h('button', {
      type: 'button',
      class: 'danger',
      onclick: async () => {
        if (!armed) {
          armed = true;
          del.textContent = `Really ${destroyLabel.toLowerCase()}?`;
          disarm = setTimeout(() => { armed = false; del.textContent = destroyLabel; }, 5000);
          return;
        }
        clearTimeout(disarm);
        await run(() => destroy());
      },
    }, destroyLabel);
  }
  const form = h('form', { class: 'form', novalidate: null },
    h('h2', { id: 'dialog-title' }, title),
    notice ? h('p', { class: 'notice' }, notice) : null,
    fields.map(field),
    error,
    h('div', { class: 'buttons' }, save, cancel, del));
  async function run(fn) {
    error.textContent = '';
    for (const b of form.querySelectorAll('button')) b.disabled = true;
    try {
      await fn();
      d.close();
    } catch (e) {
      error.textContent = e.message || String(e);
    } finally {
      for (const b of form.querySelectorAll('button')) b.disabled = false;
    }
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!form.reportValidity()) return;
    const values = {};
    for (const el of form.elements) if (el.name && !el.disabled) values[el.name] = el.value;
    run(() => submit(values, form));
  });
  d.replaceChildren(form);
  d.onclose = () => {
    // The close event is queued: by the time it runs a new form may already
    // be showing (Escape, then Enter at once); it is not ours to clear.
    if (d.open || !form.isConnected) return;
    d.replaceChildren();
    // The row the form was opened from may have been rebuilt meanwhile: find its successor.
    if (opener && opener.isConnected && opener.focus) opener.focus();
    else if (openerKey) document.querySelector(`[data-key="${CSS.escape(openerKey)}"] button`)?.focus();
  };
  if (after) after(form);
  d.showModal();
  const first = form.querySelector('input:not([disabled]), select:not([disabled]), textarea:not([disabled])');
  if (first) first.focus();
}

const orNull = (v) => (v === undefined || v === null || String(v).trim() === '' ? null : String(v).trim());

function clientOptions(ctx) {
  return [['', '— No client —'], ...ctx.clients().map((c) => [String(c.id), c.name])];
}

function nextHour() {
  const d = new Date();
  d.setMinutes(0, 0, 0);
  d.setHours(d.getHours() + 1);
  return d;
}

/** New meeting (m null) or edit one. Synced meetings: only client and notes. */
export function openMeeting(ctx, m, defaults = {}) {
  const synced = m && m.source !== 'manual';
  if (synced) {
    const src = SOURCES[m.source] || m.source;
    showForm({
      title: `Edit meeting: ${m.title}`,
      notice: `Title, time, place and status come from ${src}; change them there. Here you can link a client and keep notes.`,
      fields: [
        { name: 'when', label: 'When', value: `${fmtDateTime(m.starts_at)} – ${fmtDateTime(m.ends_at)}`, disabled: true },
        { name: 'client_id', label: 'Client', type: 'select', options: clientOptions(ctx), value: m.client_id == null ? '' : String(m.client_id) },
        { name: 'notes', label: 'Notes', type: 'textarea', value: m.notes || '' },
      ],
      submit: async (v) => {
        ctx.wrote('meetings', await ctx.api('PATCH', `/api/meetings/${m.id}`, { client_id: v.client_id ? Number(v.client_id) : null, notes: orNull(v.notes) }));
        ctx.announce('Meeting saved.');
      },
    });
    return;
  }
  const start = m ? m.starts_at : nextHour().toISOString();
  const end = m ? m.ends_at : new Date(new Date(start).getTime() + 30 * 60000).toISOString();
  const clientId = m ? m.client_id : defaults.client_id;
  const fields = [
    { name: 'title', label: 'Title', value: m ? m.title : '', required: true, attrs: { maxlength: 500, autocomplete: 'off' } },
    { name: 'starts_at', label: 'Starts', type: 'datetime-local', value: toLocalInput(start), required: true },
    { name: 'ends_at', label: 'Ends', type: 'datetime-local', value: toLocalInput(end), required: true },
    { name: 'client_id', label: 'Client', type: 'select', options: clientOptions(ctx), value: clientId == null ? '' : String(clientId) },
    { name: 'location', label: 'Location', value: m ? m.location || '' : '' },
    { name: 'meeting_url', label: 'Join link', type: 'url', value: m ? m.meeting_url || '' : '', hint: 'A video-call address, such as https://meet.example.com/abc' },
  ];
  if (m) {
    fields.push({ name: 'status', label: 'Status', type: 'select', value: m.status, options: [['scheduled', 'Scheduled'], ['canceled', 'Canceled'], ['no_show', 'No-show']] });
  }
  fields.push({ name: 'notes', label: 'Notes', type: 'textarea', value: m ? m.notes || '' : '' });
  showForm({
    title: m ? `Edit meeting: ${m.title}` : 'New meeting',
    submitLabel: m ? 'Save' : 'Create meeting',
    fields,
    after(form) {
      // Moving the start keeps the meeting's length.
      const s = form.elements.starts_at;
      const e = form.elements.ends_at;
      let prev = fromLocalInput(s.value);
      s.addEventListener('change', () => {
        const now = fromLocalInput(s.value);
        const endAt = fromLocalInput(e.value);
        if (prev && now && endAt) e.value = toLocalInput(new Date(new Date(endAt).getTime() + (new Date(now) - new Date(prev))).toISOString());
        prev = now;
      });
    },
    submit: async (v) => {
      const startsAt = fromLocalInput(v.starts_at);
      const endsAt = fromLocalInput(v.ends_at);
      if (!startsAt || !endsAt) throw new Error('Enter a start and an end time.');
      if (endsAt <= startsAt) throw new Error('The meeting must end after it starts.');
      const body = {
        title: v.title.trim(),
        starts_at: startsAt,
        ends_at: endsAt,
        client_id: v.client_id ? Number(v.client_id) : null,
        location: orNull(v.location),
        meeting_url: orNull(v.meeting_url),
        notes: orNull(v.notes),
      };
      if (m) {
        body.status = v.status;
        ctx.wrote('meetings', await ctx.api('PATCH', `/api/meetings/${m.id}`, body));
        ctx.announce('Meeting saved.');
      } else {
        for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
        ctx.wrote('meetings', await ctx.api('POST', '/api/meetings', body));
        ctx.announce(`Meeting “${body.title}” created.`);
      }
    },
    destroy: m ? async () => {
      await ctx.api('DELETE', `/api/meetings/${m.id}`);
      ctx.wrote('meetings', null, m.id);
      ctx.announce('Meeting deleted.');
    } : null,
    destroyLabel: 'Delete meeting',
  });
}

export function openClient(ctx, c) {
  showForm({
    title: c ? `Edit client: ${c.name}` : 'New client',
    submitLabel: c ? 'Save' : 'Create client',
    fields: [
      { name: 'name', label: 'Name', value: c ? c.name : '', required: true, attrs: { maxlength: 200, autocomplete: 'off' } },
      { name: 'email', label: 'Email', type: 'email', value: c ? c.email || '' : '', attrs: { autocomplete: 'off' } },
      { name: 'phone', label: 'Phone', type: 'tel', value: c ? c.phone || '' : '', attrs: { maxlength: 50, autocomplete: 'off' } },
      { name: 'notes', label: 'Notes', type: 'textarea', value: c ? c.notes || '' : '' },
    ],
    submit: async (v) => {
      const body = { name: v.name.trim(), email: orNull(v.email), phone: orNull(v.phone), notes: orNull(v.notes) };
      if (c) {
        await ctx.api('PATCH', `/api/clients/${c.id}`, body);
        ctx.announce('Client saved.');
      } else {
        for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
        const row = await ctx.api('POST', '/api/clients', body);
        ctx.announce(`Client “${row.name}” created.`);
      }
    },
  });
}

export function openDeal(ctx, d, defaults = {}) {
  const clientId = d ? d.client_id : defaults.client_id;
  showForm({
    title: d ? `Edit deal: ${d.title}` : 'New deal',
    submitLabel: d ? 'Save' : 'Create deal',
    fields: [
      { name: 'title', label: 'Title', value: d ? d.title : '', required: true, attrs: { maxlength: 500, autocomplete: 'off' } },
      { name: 'client_id', label: 'Client', type: 'select', options: clientOptions(ctx), value: clientId == null ? '' : String(clientId) },
      { name: 'stage', label: 'Stage', type: 'select', options: STAGES, value: d ? d.stage : defaults.stage || 'lead' },
      { name: 'value', label: 'Value', type: 'number', value: d ? String(d.value) : '0', attrs: { min: 0, step: 'any', inputmode: 'decimal' } },
      { name: 'expected_close', label: 'Expected close', type: 'date', value: d ? d.expected_close || '' : '' },
      { name: 'notes', label: 'Notes', type: 'textarea', value: d ? d.notes || '' : '' },
    ],
    submit: async (v) => {
      const value = v.value.trim() === '' ? 0 : Number(v.value);
      if (!Number.isFinite(value) || value < 0) throw new Error('The value must be a number of zero or more.');
      const body = {
        title: v.title.trim(),
        client_id: v.client_id ? Number(v.client_id) : null,
        stage: v.stage,
        value,
        expected_close: orNull(v.expected_close),
        notes: orNull(v.notes),
      };
      if (d) {
        await ctx.api('PATCH', `/api/pipeline/${d.id}`, body);
        ctx.announce('Deal saved.');
      } else {
        for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
        await ctx.api('POST', '/api/pipeline', body);
        ctx.announce(`Deal “${body.title}” created.`);
      }
    },
    destroy: d ? async () => {
      await ctx.api('DELETE', `/api/pipeline/${d.id}`);
      ctx.announce('Deal deleted.');
    } : null,
    destroyLabel: 'Delete deal',
  });
}
