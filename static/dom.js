// Small DOM and formatting helpers shared by the pages: element building,
// keyed list updates that keep untouched elements (and so focus and input
// state), and dates in the viewer's time zone.

/** h('a', {href: '/x', class: 'y'}, 'text', child) → element. Falsy children are skipped. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false || c === '') continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const FOCUSABLE = 'a[href], button, select, input, textarea, [tabindex]';

/**
 * Make `parent`'s children exactly `items` ({key, sig, build, update?}) in
 * order. An existing child with the same key and signature is kept as is;
 * only children out of place are moved. When a rebuilt child held the focus,
 * the same control in its replacement gets it back, so keyboard users do not
 * lose their place when a row changes under them.
 */
export function keyed(parent, items) {
  const existing = new Map();
  for (const child of [...parent.children]) {
    if (child.dataset.key) existing.set(child.dataset.key, child);
    else child.remove();
  }
  const active = document.activeElement;
  let refocus = null;
  const wanted = [];
  for (const it of items) {
    let el = existing.get(it.key);
    if (el && el.dataset.sig === it.sig) {
      existing.delete(it.key);
      if (it.update) it.update(el);
    } else {
      const old = el;
      el = it.build();
      el.dataset.key = it.key;
      el.dataset.sig = it.sig;
      if (it.update) it.update(el);
      if (old && active && old.contains(active)) {
        const index = [...old.querySelectorAll(FOCUSABLE)].indexOf(active);
        refocus = () => (el.querySelectorAll(FOCUSABLE)[index] || el.querySelector(FOCUSABLE))?.focus();
      }
    }
    wanted.push(el);
  }
  for (const el of existing.values()) el.remove();
  let ref = parent.firstElementChild;
  for (const el of wanted) {
    if (el === ref) {
      ref = ref.nextElementSibling;
    } else {
      parent.insertBefore(el, ref);
    }
  }
  if (refocus) refocus();
}

export const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

const dayKeyFmt = new Intl.DateTimeFormat('en-CA', { timeZone: TZ, year: 'numeric', month: '2-digit', day: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { timeZone: TZ, weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
const timeFmt = new Intl.DateTimeFormat(undefined, { timeZone: TZ, hour: '2-digit', minute: '2-digit' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, { timeZone: TZ, dateStyle: 'medium', timeStyle: 'short' });
const shortDateTimeFmt = new Intl.DateTimeFormat(undefined, { timeZone: TZ, month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(undefined, { timeZone: 'UTC', dateStyle: 'medium' });
const numberFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

/** "2026-11-24" for an instant, in the viewer's zone (for grouping by day). */
export function dayKey(iso) {
  return dayKeyFmt.format(new Date(iso));
}

export function dayLabel(iso) {
  const key = dayKey(iso);
  const today = dayKey(new Date().toISOString());
  const tomorrow = dayKey(new Date(Date.now() + 86400000).toISOString());
  const yesterday = dayKey(new Date(Date.now() - 86400000).toISOString());
  const name = dayFmt.format(new Date(iso));
  if (key === today) return `Today, ${name}`;
  if (key === tomorrow) return `Tomorrow, ${name}`;
  if (key === yesterday) return `Yesterday, ${name}`;
  return name;
}

export const fmtTime = (iso) => timeFmt.format(new Date(iso));
export const fmtDateTime = (iso) => (iso ? dateTimeFmt.format(new Date(iso)) : '');
/** "Nov 25, 12:25 AM": for an end time on another day than its start. */
export const fmtShortDateTime = (iso) => shortDateTimeFmt.format(new Date(iso));
/** A calendar date (YYYY-MM-DD) shown as is, without shifting zones. */
export const fmtDate = (d) => (d ? dateFmt.format(new Date(`${d}T00:00:00Z`)) : '');
export const fmtNumber = (n) => numberFmt.format(Number(n) || 0);

/** ISO instant → the value of an <input type="datetime-local"> (viewer's zone = browser zone). */
export function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** <input type="datetime-local"> value → ISO instant (UTC), or null when empty/invalid. */
export function fromLocalInput(v) {
  if (!v) return null;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

/** How long ago, for status lines: "3 minutes ago". */
export function ago(iso) {
  if (!iso) return 'never';
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (!Number.isFinite(s)) return String(iso);
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  const abs = Math.abs(s);
  if (abs < 60) return rtf.format(-s, 'second');
  if (abs < 3600) return rtf.format(-Math.round(s / 60), 'minute');
  if (abs < 86400) return rtf.format(-Math.round(s / 3600), 'hour');
  return rtf.format(-Math.round(s / 86400), 'day');
}
