// The sign-in view: Sign in with Google, or a single-use link from an
// administrator. Shown with a sentence when a session ends.

import { h } from '/dom.js';

export function mount(main, message) {
  document.title = 'Sign in · syncgate';
  const google = h('a', { class: 'button primary', href: '/api/auth/google', id: 'google-sign-in' }, 'Sign in with Google');
  const googleNote = h('p', { class: 'hint', id: 'google-note' });
  main.append(
    h('section', { class: 'signin', 'aria-labelledby': 'signin-title' },
      h('h1', { id: 'signin-title', tabindex: '-1' }, 'Sign in to syncgate'),
      message ? h('p', { class: 'notice', role: 'alert' }, message) : null,
      h('p', {}, 'Your meetings, clients and pipeline, kept in sync with Google Calendar and Calendly.'),
      h('p', {}, google),
      googleNote,
      h('p', { class: 'hint' }, 'No Google account here? Ask your administrator for a sign-in link (',
        h('code', {}, 'syncgate login-link --user ID'), '); it works once, for 15 minutes.')));
  // Say so up front when this server has no Google sign-in, rather than
  // sending people to an error page.
  fetch('/api/calendar/webhook/test', { headers: { accept: 'application/json' } })
    .then((r) => (r.ok ? r.json() : null))
    .then((s) => {
      if (s && s.google_configured === false) {
        google.removeAttribute('href');
        google.setAttribute('aria-disabled', 'true');
        google.classList.add('disabled');
        googleNote.textContent = 'Google sign-in is not set up on this server; use a sign-in link.';
      }
    })
    .catch(() => {});
}
