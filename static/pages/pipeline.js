// Pipeline: one column per stage with value totals. A card moves by drag and
// drop, or with its "Stage" select (keyboard and screen readers).

import { h, keyed, fmtNumber, fmtDate } from '/dom.js';
import { STAGES } from '/forms.js';

const STAGE_LABEL = Object.fromEntries(STAGES);

export async function moveDeal(ctx, id, stage) {
  const d = ctx.live.row('pipeline', id);
  if (!d || d.stage === stage) return;
  try {
    await ctx.api('PATCH', `/api/pipeline/${id}`, { stage });
    ctx.announce(`Moved “${d.title}” to ${STAGE_LABEL[stage]}.`);
  } catch (e) {
    ctx.announce(`Could not move “${d.title}”: ${e.message}`);
    // Put the select back to where the deal really is.
    ctx.refresh();
  }
}

/** A keyed card for one deal. */
export function dealItem(ctx, d, { showClient = true } = {}) {
  const key = `pipeline:${d.id}`;
  const clientName = ctx.clientName(d.client_id);
  return {
    key,
    sig: [d.updated_at, d.stage, clientName, showClient].join('|'),
    build: () => {
      const selId = `deal-stage-${d.id}`;
      const select = h('select', { id: selId, class: 'stage-select' }, STAGES.map(([v, l]) => h('option', { value: v }, l)));
      select.value = d.stage;
      select.addEventListener('change', () => {
        ctx.focusAfterUpdate(`#${selId}`);
        moveDeal(ctx, d.id, select.value);
      });
      const li = h('li', { class: `card deal stage-${d.stage}${ctx.flashing('pipeline', d) ? ' flash' : ''}`, draggable: 'true', dataset: { id: String(d.id), stage: d.stage } },
        h('p', { class: 'title' }, d.title),
        showClient && d.client_id != null
          ? h('p', { class: 'meta' }, clientName ? h('a', { href: `/clients/${d.client_id}` }, clientName) : 'unknown client')
          : null,
        h('p', { class: 'meta' },
          h('span', { class: 'value' }, fmtNumber(d.value)),
          d.expected_close ? ` · closes ${fmtDate(d.expected_close)}` : ''),
        h('div', { class: 'card-actions' },
          h('label', { for: selId, class: 'inline' }, 'Stage', h('span', { class: 'sr-only' }, ` of ${d.title}`)),
          select,
          h('button', { type: 'button', class: 'small', onclick: () => ctx.openDeal(ctx.live.row('pipeline', d.id) || d) },
            'Edit', h('span', { class: 'sr-only' }, ` ${d.title}`))));
      li.addEventListener('dragstart', (e) => {
        e.dataTransfer.setData('text/plain', String(d.id));
        e.dataTransfer.effectAllowed = 'move';
        li.classList.add('dragging');
      });
      li.addEventListener('dragend', () => li.classList.remove('dragging'));
      return li;
    },
    update: (el) => {
      const select = el.querySelector('select.stage-select');
      if (select && select.value !== d.stage) select.value = d.stage;
    },
  };
}

export function mount(main, ctx) {
  document.title = 'Pipeline · syncgate';
  const summary = h('p', { class: 'hint', id: 'pipeline-summary' });
  const loading = h('p', { class: 'loading' }, 'Loading pipeline…');
  const columns = STAGES.map(([stage, label]) => {
    const list = h('ul', { class: 'cards' });
    const total = h('p', { class: 'total' });
    const col = h('section', { class: `column stage-${stage}`, 'aria-labelledby': `col-${stage}`, dataset: { stage } },
      h('h2', { id: `col-${stage}` }, label), total, list);
    col.addEventListener('dragover', (e) => {
      if (!e.dataTransfer.types.includes('text/plain')) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'move';
      col.classList.add('drop-target');
    });
    col.addEventListener('dragleave', (e) => {
      if (!col.contains(e.relatedTarget)) col.classList.remove('drop-target');
    });
    col.addEventListener('drop', (e) => {
      e.preventDefault();
      col.classList.remove('drop-target');
      const id = Number(e.dataTransfer.getData('text/plain'));
      if (id) moveDeal(ctx, id, stage);
    });
    return { stage, list, total, col };
  });
  main.append(
    h('div', { class: 'page-head' },
      h('h1', {}, 'Pipeline'),
      h('button', { type: 'button', class: 'primary', id: 'new-deal', onclick: () => ctx.openDeal(null) }, 'New deal')),
    summary,
    h('p', { class: 'hint' }, 'Drag a card to another column, or change its Stage.'),
    loading,
    h('div', { class: 'board' }, columns.map((c) => c.col)));

  function update() {
    const live = ctx.live;
    loading.hidden = live.ready;
    const deals = live.rows('pipeline');
    let open = 0;
    let openCount = 0;
    for (const c of columns) {
      const here = deals.filter((d) => d.stage === c.stage).sort((a, b) => (a.expected_close || '9999').localeCompare(b.expected_close || '9999') || a.id - b.id);
      const sum = here.reduce((s, d) => s + (Number(d.value) || 0), 0);
      if (c.stage !== 'won' && c.stage !== 'lost') {
        open += sum;
        openCount += here.length;
      }
      c.total.textContent = `${here.length} deal${here.length === 1 ? '' : 's'} · total ${fmtNumber(sum)}`;
      keyed(c.list, here.map((d) => dealItem(ctx, d)));
    }
    summary.textContent = live.ready ? `Open: ${openCount} deal${openCount === 1 ? '' : 's'} worth ${fmtNumber(open)}.` : '';
  }
  update();
  return { update };
}
