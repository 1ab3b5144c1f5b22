// Starts the real syncgate binary on 127.0.0.1:0 with a throwaway data
// folder, and drives its CLI and REST API the way a user would.
import { spawn, execFileSync } from 'node:child_process';
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

  /** (Re)start the process on the same data folder and, if given, port. */
  async boot(port) {
    const env = { ...this.env };
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
