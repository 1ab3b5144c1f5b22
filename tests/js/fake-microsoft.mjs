// A small fake of the Microsoft identity platform and Microsoft Graph for
// the browser tests (the full fake, with throttling, lifecycle events and
// delta tokens that expire, is the Rust one in tests/api/fake_graph.rs).
// It follows docs/microsoft-graph.md where the UI test touches it:
// authorize redirects back with code + state; the token endpoint checks
// PKCE (S256 of code_verifier must equal the code_challenge) and answers
// an id_token with tid, oid and preferred_username, with a refresh token
// that rotates; `refuse` makes it answer invalid_grant as Microsoft does
// for a revoked grant. Graph: /me/calendars, one calendar-view delta page
// ending in a deltaLink, and subscriptions (create after the validation
// handshake, renew, delete).
import { FakeService } from './fake-service.mjs';
import { createHash, randomUUID } from 'node:crypto';

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';

function b64url(v) {
  return Buffer.from(JSON.stringify(v)).toString('base64url');
}

export class FakeMicrosoft extends FakeService {
  constructor() {
    super();
    this.accounts = new Map(); // upn -> { oid, name, events: [] }
    this.codes = new Map(); // code -> { upn, challenge, redirect }
    this.access = new Map(); // access token -> upn
    this.refreshTokens = new Map(); // refresh token -> upn (rotated on use)
    this.subscriptions = new Map(); // id -> { upn, clientState, notificationUrl, expirationDateTime }
    this.deleted = [];
    this.consentAs = null;
    /** Answer every token request with invalid_grant (a revoked grant). */
    this.refuse = false;
    /** Access-token lifetime; under syncgate's one-minute margin, every Graph call refreshes first. */
    this.expiresIn = 3599;
    this.tokenCalls = [];
  }

  static async start() {
    return FakeService.listen(new FakeMicrosoft());
  }

  errorBody(e) {
    return { error: { code: 'InternalServerError', message: String(e) } };
  }

  /** The `SYNCGATE_MICROSOFT__*` settings that point syncgate here. */
  env() {
    return {
      SYNCGATE_MICROSOFT__CLIENT_ID: '00000000-0000-0000-0000-00000000c1d0',
      SYNCGATE_MICROSOFT__CLIENT_SECRET: 'fake-microsoft-secret',
      SYNCGATE_MICROSOFT__LOGIN_BASE_URL: this.base,
      SYNCGATE_MICROSOFT__GRAPH_BASE_URL: `${this.base}/v1.0`,
    };
  }

  addAccount(upn, name) {
    this.accounts.set(upn, { oid: randomUUID(), name, events: [] });
  }

  /** An event as calendar-view delta lists it (Graph's usual defaults filled in). */
  createEvent(upn, event) {
    const id = `AAkALg${randomUUID().replace(/-/g, '')}`;
    this.accounts.get(upn).events.push({
      id,
      iCalUId: `040000008200E00074C5B7101A82E008${randomUUID().replace(/-/g, '').toUpperCase()}`,
      type: 'singleInstance',
      showAs: 'busy',
      isAllDay: false,
      isCancelled: false,
      isOrganizer: true,
      responseStatus: { response: 'organizer', time: '0001-01-01T00:00:00Z' },
      organizer: { emailAddress: { name: this.accounts.get(upn).name, address: upn } },
      attendees: [],
      ...event,
    });
    return id;
  }

  /** POST a change notification for each of the user's subscriptions, as Graph would. */
  async notify(upn) {
    for (const [id, s] of this.subscriptions) {
      if (s.upn !== upn) continue;
      await fetch(s.notificationUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ value: [{ subscriptionId: id, clientState: s.clientState, changeType: 'updated', tenantId: TENANT, resource: 'Users/x/Events/y' }] }),
      });
    }
  }

  tokens(upn) {
    const oid = this.accounts.get(upn).oid;
    const access = `eyJ0eXAi.fake-access.${randomUUID()}`;
    const refresh = `M.C5.fake-refresh.${randomUUID()}`;
    this.access.set(access, upn);
    this.refreshTokens.set(refresh, upn);
    const idToken = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({
      aud: this.env().SYNCGATE_MICROSOFT__CLIENT_ID,
      iss: `https://login.microsoftonline.com/${TENANT}/v2.0`,
      tid: TENANT,
      oid,
      preferred_username: upn,
      name: this.accounts.get(upn).name,
    })}.`;
    return { token_type: 'Bearer', scope: 'Calendars.Read User.Read', expires_in: this.expiresIn, access_token: access, refresh_token: refresh, id_token: idToken };
  }

  /** Graph's validation handshake: the decoded token, as text/plain, within 10 s. */
  async validate(url) {
    const token = `Validation: Testing client application reachability for subscription Request-Id: ${randomUUID()}`;
    const target = new URL(url);
    target.searchParams.set('validationToken', token);
    try {
      const r = await fetch(target, { method: 'POST', headers: { 'content-type': 'text/plain; charset=utf-8' }, signal: AbortSignal.timeout(10000) });
      return r.status === 200 && (r.headers.get('content-type') || '').startsWith('text/plain') && (await r.text()) === token;
    } catch {
      return false;
    }
  }

  async handle(req, res) {
    const url = new URL(req.url, this.base);
    const body = await new Promise((r) => { let b = ''; req.on('data', (d) => { b += d; }); req.on('end', () => r(b)); });
    const json = (status, v) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(v)); };
    const seg = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const tokenError = (error, description) => json(400, {
      error, error_description: description, error_codes: [70008], timestamp: new Date().toISOString(), trace_id: randomUUID(), correlation_id: randomUUID(),
    });

    // {tenant}/oauth2/v2.0/authorize: the user consents as `consentAs`.
    if (req.method === 'GET' && seg[1] === 'oauth2' && seg[2] === 'v2.0' && seg[3] === 'authorize') {
      const q = url.searchParams;
      const back = new URL(q.get('redirect_uri'));
      if (q.get('response_type') !== 'code' || q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge')) {
        back.searchParams.set('error', 'invalid_request');
        back.searchParams.set('error_description', 'AADSTS900144: PKCE with S256 is required');
      } else {
        const code = `0.fake-code.${randomUUID()}`;
        this.codes.set(code, { upn: this.consentAs, challenge: q.get('code_challenge'), redirect: q.get('redirect_uri') });
        back.searchParams.set('code', code);
      }
      back.searchParams.set('state', q.get('state'));
      res.writeHead(302, { location: back.toString() });
      return res.end();
    }
    // {tenant}/oauth2/v2.0/token: redeem a code (with its PKCE verifier) or a refresh token.
    if (req.method === 'POST' && seg[1] === 'oauth2' && seg[2] === 'v2.0' && seg[3] === 'token') {
      const form = new URLSearchParams(body);
      this.tokenCalls.push(form.get('grant_type'));
      if (form.get('client_secret') !== this.env().SYNCGATE_MICROSOFT__CLIENT_SECRET) return json(401, { error: 'invalid_client' });
      if (this.refuse) return tokenError('invalid_grant', 'AADSTS50173: The provided grant has expired due to it being revoked.');
      if (form.get('grant_type') === 'authorization_code') {
        const grant = this.codes.get(form.get('code'));
        this.codes.delete(form.get('code')); // single use
        if (!grant || grant.redirect !== form.get('redirect_uri')) return tokenError('invalid_grant', 'AADSTS70008: The provided authorization code is invalid or expired.');
        const verifier = form.get('code_verifier') || '';
        if (createHash('sha256').update(verifier).digest('base64url') !== grant.challenge) {
          return tokenError('invalid_grant', 'AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request.');
        }
        return json(200, this.tokens(grant.upn));
      }
      if (form.get('grant_type') === 'refresh_token') {
        const upn = this.refreshTokens.get(form.get('refresh_token'));
        if (!upn) return tokenError('invalid_grant', 'AADSTS700082: The refresh token has expired due to inactivity.');
        return json(200, this.tokens(upn));
      }
      return tokenError('unsupported_grant_type', 'AADSTS70003');
    }

    if (seg[0] !== 'v1.0') return json(404, { error: { code: 'NotFound', message: `fake microsoft has no ${req.method} ${url.pathname}` } });
    const upn = this.access.get((req.headers.authorization || '').replace(/^Bearer /, ''));
    if (!upn) return json(401, { error: { code: 'InvalidAuthenticationToken', message: 'Access token is empty or invalid.' } });
    const path = seg.slice(1).join('/');
    if (req.method === 'GET' && path === 'me/calendars') {
      return json(200, { value: [{ id: `AAMkCal-${this.accounts.get(upn).oid}`, name: 'Calendar', color: 'auto', isDefaultCalendar: true }] });
    }
    if (req.method === 'GET' && path === 'me/calendarView/delta') {
      // One page with every event, then an empty round for the deltaLink.
      const done = url.searchParams.has('$deltatoken');
      return json(200, {
        value: done ? [] : this.accounts.get(upn).events,
        '@odata.deltaLink': `${this.base}/v1.0/me/calendarView/delta?$deltatoken=${randomUUID()}`,
      });
    }
    if (req.method === 'POST' && path === 'subscriptions') {
      const sub = JSON.parse(body);
      if (!(await this.validate(sub.notificationUrl)) || !(await this.validate(sub.lifecycleNotificationUrl || sub.notificationUrl))) {
        return json(400, { error: { code: 'ValidationError', message: 'Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.' } });
      }
      const id = randomUUID();
      this.subscriptions.set(id, { upn, clientState: sub.clientState, notificationUrl: sub.notificationUrl, expirationDateTime: sub.expirationDateTime });
      return json(201, { id, resource: sub.resource, changeType: sub.changeType, expirationDateTime: sub.expirationDateTime, clientState: sub.clientState });
    }
    if (seg[1] === 'subscriptions' && seg.length === 3) {
      const sub = this.subscriptions.get(seg[2]);
      if (!sub) return json(404, { error: { code: 'ResourceNotFound', message: 'The object was not found.' } });
      if (req.method === 'PATCH') {
        sub.expirationDateTime = JSON.parse(body).expirationDateTime;
        return json(200, { id: seg[2], expirationDateTime: sub.expirationDateTime });
      }
      if (req.method === 'DELETE') {
        this.subscriptions.delete(seg[2]);
        this.deleted.push(seg[2]);
        res.writeHead(204);
        return res.end();
      }
    }
    return json(404, { error: { code: 'NotFound', message: `fake microsoft has no ${req.method} ${url.pathname}` } });
  }
}
