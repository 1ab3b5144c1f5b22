// A real headless Chromium (Debian's `chromium` package) driven by
// playwright-core, plus what the UI tests need around it: pages signed in
// through the real sign-in link, console-error collection, timed waits that
// report the delay they saw, and screenshots in a temporary folder.
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

// Debian's package; `config.chromium` in package.json (which scripts/test.sh
// also looks for to install it) or CHROMIUM_PATH can point elsewhere.
export const CHROMIUM = process.env.CHROMIUM_PATH || process.env.npm_package_config_chromium || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export function chromiumInstalled() {
  return existsSync(CHROMIUM);
}

export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/** A folder for this run's screenshots (not in the repository). */
export function screenshotDir() {
  return mkdtempSync(path.join(tmpdir(), 'syncgate-ui-screenshots-'));
}

/** Wait up to `ms` for a locator to be visible; returns the delay seen. */
export async function visible(locator, ms = 10000) {
  const t0 = Date.now();
  await locator.first().waitFor({ state: 'visible', timeout: ms });
  return Date.now() - t0;
}

/** Wait up to `ms` for `pred()` (async) to be true; returns the delay seen. */
export async function until(pred, what, ms = 10000) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < ms) {
    try {
      if (await pred()) return Date.now() - t0;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
}

/** Print one step's observed delay (never asserted). */
export function saw(what, ms) {
  console.log(`  ${what}: ${ms} ms`);
}

/**
 * One browser tab of the UI, with every console error and uncaught
 * exception it produced (time-stamped, so planned outages can be told apart).
 */
export class UiPage {
  constructor(name, page) {
    this.name = name;
    this.page = page;
    this.errors = [];
    page.on('console', (msg) => {
      if (msg.type() === 'error') this.errors.push({ at: Date.now(), text: msg.text(), url: msg.location()?.url || '' });
    });
    page.on('pageerror', (err) => this.errors.push({ at: Date.now(), text: `uncaught: ${err.message}`, url: '' }));
  }

  static async open(name, context) {
    return new UiPage(name, await context.newPage());
  }

  /** Follow a sign-in link and wait until the page is live. */
  async signIn(link) {
    // The link opens a page whose button signs in (a GET never uses the code up).
    await this.page.goto(link);
    await this.page.locator('#sign-in').click();
    await this.live();
  }

  /** Wait until the connection indicator reads live; returns the delay. */
  async live(ms = 10000) {
    return visible(this.page.locator('#conn[data-state="live"]'), ms);
  }

  connState() {
    return this.page.locator('#conn').getAttribute('data-state');
  }

  /** Click a main navigation link (no reload) and wait for its heading. */
  async nav(label) {
    await this.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: label }).click();
    await this.page.locator('main h1').first().waitFor();
  }

  /** The open form dialog. */
  dialog() {
    return this.page.locator('dialog[open] form');
  }

  /** Press the form's button and wait for the dialog to close; a refusal fails with the form's sentence. */
  async submitDialog(button) {
    await this.dialog().getByRole('button', { name: button }).click();
    try {
      await this.page.locator('dialog[open]').waitFor({ state: 'detached', timeout: 10000 });
    } catch (e) {
      const said = await this.page.locator('dialog[open] .error').innerText().catch(() => '');
      throw new Error(`the form did not close${said ? `; it says: ${said}` : ''}`);
    }
  }

  meeting(title) {
    return this.page.locator('li.meeting', { hasText: title });
  }

  card(title) {
    return this.page.locator('li.deal', { hasText: title });
  }

  column(stage) {
    return this.page.locator(`section.column[data-stage="${stage}"]`);
  }

  mainText() {
    return this.page.locator('main').innerText();
  }

  async screenshot(dir, file) {
    const p = path.join(dir, file);
    await this.page.screenshot({ path: p, fullPage: true });
    return p;
  }

  /**
   * Console errors, leaving out only the connection failures Chromium
   * itself logs while the server is deliberately down (`outages`: [from, to] ms).
   */
  unexpectedErrors(outages = []) {
    const networkFailure = /ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|WebSocket connection to .* failed/;
    return this.errors.filter((e) => !(networkFailure.test(e.text) && outages.some(([a, b]) => e.at >= a && e.at <= b)));
  }
}
