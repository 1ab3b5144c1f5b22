// Starts the real syncgate binary on 127.0.0.1:0 with a throwaway data
// folder, and drives its CLI and REST API the way a user would.
import { spawn, execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.SYNCGATE_BIN || path.resolve(here, '../../target/debug/syncgate');

export class Syncgate {
  constructor(dir, env) {
    this.dir = dir;
    this.env = env;
  }

  /** Start a server; resolves once it printed its listening line. */
  static async start(extraEnv = {}) {
    const dir = mkdtempSync(path.join(tmpdir(), 'syncgate-js-'));
    const env = {
      ...process.env,
      SYNCGATE_DATABASE__PATH: path.join(dir, 'syncgate.db'),
      SYNCGATE_AUTH__JWT_SECRET: 'js-test-secret-js-test-secret-js-test-00',
      SYNCGATE_SERVER__BIND: '127.0.0.1:0',
      SYNCGATE_LOG: 'warn',
      ...extraEnv,
    };
    const sg = new Syncgate(dir, env);
    await sg.boot();
    return sg;
  }

  /** (Re)start the process on the same data folder and, if given, port (plus env for this run only). */
  async boot(port, extraEnv = {}) {
    const env = { ...this.env, ...extraEnv };
    if (port) env.SYNCGATE_SERVER__BIND = `127.0.0.1:${port}`;
    this.proc = spawn(BIN, ['serve'], { env, cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.stderr = '';
    this.proc.stderr.on('data', (d) => { this.stderr += d; });
    const line = await new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`syncgate did not start: ${this.stderr}`)), 20000);
      this.proc.stdout.on('data', (d) => {
        out += d;
        const m = out.match(/syncgate listening on (http:\/\/[\d.]+:\d+)/);
        if (m) { clearTimeout(timer); resolve(m[1]); }
      });
      this.proc.on('exit', (code) => reject(new Error(`syncgate exited with ${code}: ${this.stderr}`)));
    });
    this.base = line;
    this.port = Number(new URL(line).port);
    this.wsBase = `ws://127.0.0.1:${this.port}/realtime/v1`;
  }

  /** SIGTERM and wait for a clean exit. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    await exited;
  }

  async destroy() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  cli(...args) {
    return execFileSync(BIN, args, { env: this.env, cwd: this.dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  }

  addUser(email, role = 'user') {
    const id = this.cli('user', 'add', '--email', email, '--role', role);
    return { id: Number(id), token: this.cli('token', '--user', id) };
  }

  /** A single-use sign-in URL for this server (the CLI prints it with the configured host). */
  loginLink(userId) {
    const printed = new URL(this.cli('login-link', '--user', String(userId)));
    return this.base + printed.pathname + printed.search;
  }

  /**
   * POST a Calendly delivery signed the way Calendly signs it:
   * `Calendly-Webhook-Signature: t=<unix>,v1=hex(hmac_sha256(key, t + "." + body))`.
   */
  async calendly(delivery, signingKey) {
    const raw = JSON.stringify(delivery);
    const t = Math.floor(Date.now() / 1000);
    const v1 = createHmac('sha256', signingKey).update(`${t}.${raw}`).digest('hex');
    const res = await fetch(`${this.base}/api/calendly/webhook`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'calendly-webhook-signature': `t=${t},v1=${v1}` },
      body: raw,
    });
    const text = await res.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = text; }
    return { status: res.status, body };
  }

  /**
   * Join one realtime channel over a raw socket (vsn 2.0.0) with `config`,
   * collect frames until `done(frames)` is true or `ms` passed, then close.
   */
  async realtime(token, config, done, ms = 5000) {
    const ws = new WebSocket(`${this.wsBase}/websocket?apikey=${token}&vsn=2.0.0`);
    const frames = [];
    try {
      await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, ms);
        ws.on('message', (m) => {
          frames.push(JSON.parse(String(m)));
          if (done(frames)) { clearTimeout(timer); resolve(); }
        });
        ws.send(JSON.stringify(['1', '1', 'realtime:probe', 'phx_join', { config, access_token: token }]));
      });
    } finally {
      ws.close();
    }
    return frames;
  }

  /** The change log's head seq as a join reply reports it. */
  async headSeq(token) {
    const isReply = (f) => f[3] === 'phx_reply';
    const frames = await this.realtime(token, { postgres_changes: [{ event: '*', schema: 'public', table: 'meetings' }] }, (fs) => fs.some(isReply));
    return frames.find(isReply)?.[4]?.response?.seq;
  }

  /** Does a resume from `since` get a "gap" (the log no longer reaches back that far)? */
  async resumeIsGap(token, since) {
    const isGap = (f) => f[3] === 'system' && f[4]?.status === 'gap';
    const config = { postgres_changes: [{ event: '*', schema: 'public', table: 'meetings' }], resume: { since } };
    // The server says "gap" right after its join reply; a second is plenty, and callers poll.
    const frames = await this.realtime(token, config, (fs) => fs.some(isGap), 1000);
    return frames.some(isGap);
  }

  async api(method, pathname, token, body) {
    const res = await fetch(this.base + pathname, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }
}

/** Resolve when `pred()` is true, polling; reject after `ms`. Returns the time it took. */
export async function waitFor(pred, ms = 10000, what = 'condition') {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (await pred()) return Date.now() - start;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/**
 * A Calendly invitee delivery shaped like Calendly's documented payloads
 * (see shared/calendly.md): `event` is invitee.created or invitee.canceled.
 */
export function calendlyDelivery({ event, adviserEmail, invitee, eventId, inviteeId, name, start, end, joinUrl, cancelReason }) {
  const eventUri = `https://api.calendly.com/scheduled_events/${eventId}`;
  const canceled = event === 'invitee.canceled';
  return {
    event,
    created_at: new Date().toISOString(),
    created_by: 'https://api.calendly.com/users/HOST',
    payload: {
      uri: `${eventUri}/invitees/${inviteeId}`,
      email: invitee.email,
      name: invitee.name,
      status: canceled ? 'canceled' : 'active',
      timezone: 'Europe/Berlin',
      rescheduled: false,
      old_invitee: null,
      new_invitee: null,
      event: eventUri,
      cancel_url: `https://calendly.com/cancellations/${inviteeId}`,
      reschedule_url: `https://calendly.com/reschedulings/${inviteeId}`,
      questions_and_answers: [],
      tracking: { utm_source: null },
      cancellation: canceled
        ? { canceled_by: invitee.name, reason: cancelReason || 'Something came up', canceler_type: 'invitee', created_at: new Date().toISOString() }
        : null,
      scheduled_event: {
        uri: eventUri,
        name,
        status: canceled ? 'canceled' : 'active',
        start_time: start,
        end_time: end,
        event_type: 'https://api.calendly.com/event_types/ET1',
        location: { type: 'google_conference', join_url: joinUrl || 'https://meet.google.com/abc-defg-hij' },
        event_memberships: [{ user: 'https://api.calendly.com/users/HOST', user_email: adviserEmail, user_name: 'Adviser' }],
        calendar_event: null,
      },
    },
  };
}
