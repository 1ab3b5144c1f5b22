// A small fake of Google's OAuth and Calendar endpoints for the browser
// tests (the full fake, with failures and push notifications, is the Rust
// one in tests/api/fake_google.rs). It serves the consent page, the token
// endpoint, userinfo, calendarList.list, events.list per calendar (a full
// listing, or what changed since a sync token; nextSyncToken on the one
// page), events.watch and channels.stop.
import { FakeService } from './fake-service.mjs';
import { randomUUID } from 'node:crypto';

export class FakeGoogle extends FakeService {
  constructor() {
    super();
    this.accounts = new Map(); // email -> { sub, name, calendars: [{ id, summary, color, primary, events: [{ seq, body }] }] }
    this.codes = new Map();
    this.access = new Map();
    this.seq = 0;
    this.consentAs = null;
    this.watches = [];
  }

  static async start() {
    return FakeService.listen(new FakeGoogle());
  }

  errorBody(e) {
    return { error: { code: 500, message: String(e) } };
  }

  /** The `SYNCGATE_GOOGLE__*` settings that point syncgate here. */
  env() {
    return {
      SYNCGATE_GOOGLE__CLIENT_ID: 'fake-client-id.apps.googleusercontent.com',
      SYNCGATE_GOOGLE__CLIENT_SECRET: 'fake-client-secret',
      SYNCGATE_GOOGLE__API_BASE_URL: `${this.base}/calendar/v3`,
      SYNCGATE_GOOGLE__AUTH_URL: `${this.base}/o/oauth2/v2/auth`,
      SYNCGATE_GOOGLE__TOKEN_URL: `${this.base}/token`,
      SYNCGATE_GOOGLE__USERINFO_URL: `${this.base}/v1/userinfo`,
    };
  }

  addAccount(email, name) {
    this.accounts.set(email, {
      sub: String(100000 + this.accounts.size),
      name,
      calendars: [{ id: email, summary: email, color: '#9fe1e7', primary: true, events: [] }],
    });
  }

  addCalendar(email, id, summary, color) {
    this.accounts.get(email).calendars.push({ id, summary, color, primary: false, events: [] });
  }

  createEvent(email, calendarId, event) {
    const cal = this.accounts.get(email).calendars.find((c) => c.id === calendarId);
    const id = event.id || `ev${randomUUID().replace(/-/g, '')}`;
    cal.events.push({ seq: ++this.seq, body: { kind: 'calendar#event', status: 'confirmed', eventType: 'default', ...event, id } });
    return id;
  }

  async handle(req, res) {
    const url = new URL(req.url, this.base);
    const body = await new Promise((r) => { let b = ''; req.on('data', (d) => { b += d; }); req.on('end', () => r(b)); });
    const json = (status, v) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(v)); };
    const who = () => this.access.get((req.headers.authorization || '').replace(/^Bearer /, ''));
    const seg = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    if (req.method === 'GET' && url.pathname === '/o/oauth2/v2/auth') {
      const code = `code-${randomUUID()}`;
      this.codes.set(code, this.consentAs);
      const back = new URL(url.searchParams.get('redirect_uri'));
      back.searchParams.set('code', code);
      back.searchParams.set('state', url.searchParams.get('state'));
      res.writeHead(302, { location: back.toString() });
      return res.end();
    }
    if (req.method === 'POST' && url.pathname === '/token') {
      const form = new URLSearchParams(body);
      const email = form.get('grant_type') === 'authorization_code' ? this.codes.get(form.get('code')) : form.get('refresh_token')?.split('|')[1];
      if (!email) return json(400, { error: 'invalid_grant' });
      const access = `ya29.${randomUUID()}`;
      this.access.set(access, email);
      return json(200, { access_token: access, expires_in: 3599, refresh_token: `1//refresh|${email}`, token_type: 'Bearer' });
    }
    const email = who();
    if (!email) return json(401, { error: { code: 401, errors: [{ reason: 'authError' }] } });
    const account = this.accounts.get(email);
    if (req.method === 'GET' && url.pathname === '/v1/userinfo') {
      return json(200, { sub: account.sub, email, email_verified: true, name: account.name });
    }
    if (req.method === 'GET' && url.pathname === '/calendar/v3/users/me/calendarList') {
      return json(200, {
        items: account.calendars.map((c) => ({ id: c.id, summary: c.summary, backgroundColor: c.color, ...(c.primary ? { primary: true } : {}) })),
      });
    }
    const calOf = (id) => account.calendars.find((c) => c.id === id || (id === 'primary' && c.primary));
    if (req.method === 'GET' && seg[0] === 'calendar' && seg[2] === 'calendars' && seg[4] === 'events' && seg.length === 5) {
      const cal = calOf(seg[3]);
      if (!cal) return json(404, { error: { code: 404, errors: [{ reason: 'notFound' }] } });
      const token = url.searchParams.get('syncToken');
      const since = token ? Number(token.split('|')[1]) : 0;
      // The account's own attendee entry is marked `self`, as Google does.
      const present = (b) => (Array.isArray(b.attendees)
        ? { ...b, attendees: b.attendees.map((a) => (a.email === email ? { ...a, self: true } : a)) }
        : b);
      const items = cal.events.filter((e) => e.seq > since).map((e) => present(e.body));
      return json(200, { kind: 'calendar#events', timeZone: 'Europe/Berlin', items, nextSyncToken: `sync|${this.seq}` });
    }
    if (req.method === 'POST' && seg[0] === 'calendar' && seg[2] === 'calendars' && seg[4] === 'events' && seg[5] === 'watch') {
      const cal = calOf(seg[3]);
      if (!cal) return json(404, { error: { code: 404, errors: [{ reason: 'notFound' }] } });
      const req2 = JSON.parse(body);
      this.watches.push({ calendar: cal.id, id: req2.id });
      return json(200, { kind: 'api#channel', id: req2.id, resourceId: `res-${cal.id}`, expiration: String(Date.now() + 7 * 86400000) });
    }
    if (req.method === 'POST' && url.pathname === '/calendar/v3/channels/stop') {
      res.writeHead(204);
      return res.end();
    }
    return json(404, { error: { code: 404, message: `fake google has no ${req.method} ${url.pathname}` } });
  }
}
