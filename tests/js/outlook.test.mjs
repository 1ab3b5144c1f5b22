// Outlook on the Integrations page in a real headless Chromium against the
// real binary and a fake Microsoft (identity platform + Graph): Connect
// Outlook runs the consent round trip (PKCE checked by the fake) and lands
// back connected, with the account and the subscription's expiry shown; the
// Outlook meeting is labelled so on the Meetings page; a revoked grant
// (invalid_grant on refresh) shows "Needs reconnect", Reconnect mends it,
// and Disconnect deletes the subscription at Graph and shows "Not connected".
// An admin's Team page shows the same state in Ann's "Connected" cell:
// "Outlook", "Outlook (needs reconnect)", then none.
// A server without Microsoft says so instead of offering a button.
// Each step waits up to 10 s and prints the delay it saw; none asserts a time.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Syncgate, waitFor } from './syncgate.mjs';
import { FakeMicrosoft } from './fake-microsoft.mjs';
import { launch, chromiumInstalled, UiPage, visible, saw } from './browser.mjs';

const skip = chromiumInstalled() || process.env.CI ? false : 'Chromium is not installed (apt-get install chromium)';
const EMAIL = 'ann@example.com';
const UPN = 'ann.lee@contoso.com';

let sg;
let microsoft;
let browser;

function at(days, hour) {
  const d = new Date();
  d.setUTCDate(d.getUTCDate() + days);
  d.setUTCHours(hour, 0, 0, 0);
  return d.toISOString().replace('.000Z', '.0000000');
}

before(async () => {
  if (skip) return;
  microsoft = await FakeMicrosoft.start();
  microsoft.addAccount(UPN, 'Ann Lee');
  microsoft.createEvent(UPN, {
    subject: 'Review with Carla',
    start: { dateTime: at(1, 9), timeZone: 'UTC' },
    end: { dateTime: at(1, 10), timeZone: 'UTC' },
    attendees: [{ type: 'required', status: { response: 'accepted' }, emailAddress: { name: 'Carla', address: 'carla@client.example' } }],
  });
  // Access tokens that are stale at once: every Graph call refreshes first,
  // so a revoked grant shows on the next sync.
  microsoft.expiresIn = 1;
  sg = await Syncgate.start(microsoft.env());
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await sg?.destroy();
  await microsoft?.close();
});

async function me(token) {
  return (await sg.api('GET', '/api/me', token)).body;
}

/** Click "Connect/Reconnect Outlook", consent at the fake, land back signed in. */
async function consent(A) {
  microsoft.consentAs = UPN;
  await A.page.locator('#outlook-connect').click();
  await A.page.waitForURL((u) => u.origin === sg.base && !u.pathname.startsWith('/api/auth/microsoft'), { timeout: 10000 });
  await A.live();
  await A.nav('Integrations');
}

/** Ann's "Connected" cell on the admin's Team page, freshly loaded. */
async function teamConnected(T) {
  await T.nav('Meetings');
  await T.nav('Team');
  const cell = T.page.locator('#team-rows tr', { hasText: EMAIL }).locator('td').nth(2);
  await cell.waitFor();
  return cell;
}

test('Outlook on Integrations: connect, connected with expiry, needs reconnect, reconnect, disconnect', { skip }, async () => {
  const ann = sg.addUser(EMAIL);
  const boss = sg.addUser('boss@example.com', 'admin');
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const A = await UiPage.open('A (integrations)', context);
  await A.signIn(sg.loginLink(ann.id));
  const adminContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const T = await UiPage.open('T (team)', adminContext);
  await T.signIn(sg.loginLink(boss.id));
  assert.equal(await (await teamConnected(T)).innerText(), 'none');
  await A.nav('Integrations');
  const card = A.page.locator('#outlook-status');
  saw('not connected yet', await visible(card.getByText('Not connected.')));
  assert.equal(await A.page.locator('#outlook-connect').innerText(), 'Connect Outlook');

  // The consent round trip, against the fake (which checks the PKCE verifier).
  await consent(A);
  saw('connected, as the Microsoft account', await visible(card.getByText(`Connected as ${UPN}`)));
  assert.deepEqual(microsoft.tokenCalls.slice(0, 1), ['authorization_code']);
  const subscribed = await waitFor(() => microsoft.subscriptions.size === 1, 10000, 'the Graph subscription');
  saw('subscription made at Graph', subscribed);
  // The expiry comes with /api/me once the subscription is stored.
  await waitFor(async () => (await me(ann.token)).microsoft_subscription_expires_at, 10000, 'the expiry in /api/me');
  await A.page.locator('#refresh-status').click();
  saw('subscription expiry shown', await visible(card.locator('dt', { hasText: 'Subscription expires' })));
  assert.match(await card.innerText(), /Subscription expires\s+.*\(in \d+ days?\)/);
  assert.equal(await A.page.locator('#outlook-connect').innerText(), 'Reconnect Outlook');
  saw('Team page: "Outlook"', await visible((await teamConnected(T)).getByText('Outlook', { exact: true })));

  // The Outlook meeting, labelled as such.
  await A.nav('Meetings');
  saw('the Outlook meeting synced', await visible(A.meeting('Review with Carla')));
  assert.equal(await A.meeting('Review with Carla').locator('.badge.src-microsoft').innerText(), 'Outlook');

  // Microsoft revokes the grant; the next sync (a change notification) refreshes and is refused.
  microsoft.refuse = true;
  await microsoft.notify(UPN);
  saw('invalid_grant → needs reconnect', await waitFor(async () => (await me(ann.token)).microsoft.needs_reconnect, 10000, 'needs_reconnect'));
  await A.nav('Integrations');
  saw('"Needs reconnect" shown', await visible(card.getByText(/^Needs reconnect as ann\.lee@contoso\.com/)));
  assert.equal(await A.page.locator('#outlook-connect').innerText(), 'Reconnect Outlook');
  assert.doesNotMatch(await card.innerText(), /Subscription expires/, 'no expiry while nothing arrives');
  saw('Team page: "Outlook (needs reconnect)"', await visible((await teamConnected(T)).getByText('Outlook (needs reconnect)', { exact: true })));

  // Reconnect mends it.
  microsoft.refuse = false;
  await consent(A);
  saw('reconnected', await visible(card.getByText(`Connected as ${UPN}`)));
  assert.equal((await me(ann.token)).microsoft.needs_reconnect, false);

  // Disconnect: the subscription goes at Graph, the card says so.
  const live = [...microsoft.subscriptions.keys()];
  await A.page.locator('#outlook-disconnect').click();
  saw('disconnected', await visible(card.getByText('Not connected.')));
  assert.equal(await A.page.locator('#outlook-connect').innerText(), 'Connect Outlook');
  assert.equal(await A.page.locator('#outlook-disconnect').count(), 0);
  for (const id of live) assert.ok(microsoft.deleted.includes(id), `subscription ${id} deleted at Graph`);
  assert.deepEqual((await me(ann.token)).microsoft, { connected: false, username: null, needs_reconnect: false });
  assert.equal(await (await teamConnected(T)).innerText(), 'none', 'the Team page no longer says Outlook');

  // No Microsoft token reached the page.
  const html = await A.page.content();
  assert.doesNotMatch(html, /fake-access|fake-refresh|fake-code/);
  assert.deepEqual(A.unexpectedErrors(), [], 'no console errors');
  assert.deepEqual(T.unexpectedErrors(), [], 'no console errors on the Team page');
  await context.close();
  await adminContext.close();
});

test('a server without Microsoft says so on the Outlook card', { skip }, async () => {
  const plain = await Syncgate.start();
  try {
    const bob = plain.addUser('bob@example.com');
    const context = await browser.newContext();
    const B = await UiPage.open('B (no microsoft)', context);
    await B.signIn(plain.loginLink(bob.id));
    await B.nav('Integrations');
    saw('"not set up" note shown', await visible(B.page.locator('#outlook-not-configured')));
    assert.match(await B.page.locator('#outlook-status').innerText(), /Outlook is not set up on this server/);
    assert.equal(await B.page.locator('#outlook-connect').count(), 0, 'no connect button');
    assert.deepEqual(B.unexpectedErrors(), [], 'no console errors');
    await context.close();
  } finally {
    await plain.destroy();
  }
});
