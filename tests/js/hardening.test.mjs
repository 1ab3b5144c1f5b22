// Browser hardening, in a real headless Chromium against the real binary:
// the UI runs under its Content-Security-Policy without a single violation;
// its realtime socket carries the public anon key in the URL and the user's
// token only inside the join; a snapshot past realtime.snapshot_max_rows
// falls back to REST paging and the page still fills and stays live; and a
// sign-in link for another account replaces the signed-in one only after
// the page asked. Each step waits up to 10 s and prints the delay it saw.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Syncgate } from './syncgate.mjs';
import { launch, chromiumInstalled, UiPage, visible, until, saw } from './browser.mjs';

const skip = chromiumInstalled() || process.env.CI ? false : 'Chromium is not installed (apt-get install chromium)';

let sg;
let browser;

before(async () => {
  if (skip) return;
  // A tiny snapshot cap, so the UI's snapshot is refused and it pages through REST.
  sg = await Syncgate.start({ SYNCGATE_REALTIME__SNAPSHOT_MAX_ROWS: '3' });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await sg?.destroy();
});

function payload(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
}

test('the UI answers with CSP and nosniff, runs under them, keeps the user token out of URLs, and pages past the snapshot cap', { skip }, async () => {
  const res = await fetch(`${sg.base}/meetings`);
  const csp = res.headers.get('content-security-policy') || '';
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.match(csp, /connect-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');

  const ann = sg.addUser('ann@example.com');
  for (const name of ['Ada', 'Ben', 'Cleo', 'Dan', 'Eve', 'Fay', 'Gus']) {
    const r = await sg.api('POST', '/api/clients', ann.token, { name: `${name} Client` });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }

  const context = await browser.newContext();
  const A = await UiPage.open('A', context);
  const sockets = [];
  A.page.on('websocket', (ws) => sockets.push(ws.url()));
  const requests = [];
  A.page.on('request', (r) => requests.push(r.url()));
  await A.page.goto(`${sg.base}/clients#access_token=${ann.token}`);
  saw('live after a refused snapshot and REST paging', await A.live());
  saw('all 7 clients listed', await visible(A.page.locator('li.client', { hasText: 'Gus Client' })));
  assert.equal(await A.page.locator('li.client').count(), 7);
  assert.ok(requests.some((u) => u.includes('/api/clients?limit=')), 'the rows came page by page through REST');
  assert.ok(
    requests.some((u) => u.includes('/api/meetings?') && new URL(u).searchParams.has('from')),
    'meetings are paged only from the live window on (the same rows as the join\'s filter)',
  );

  // Still live: a change made elsewhere arrives without a reload.
  await sg.api('POST', '/api/clients', ann.token, { name: 'Hal Client' });
  saw('a new client arrives live', await visible(A.page.locator('li.client', { hasText: 'Hal Client' })));

  assert.ok(sockets.length >= 1, 'the page opened its realtime socket');
  for (const url of sockets) {
    const apikey = new URL(url).searchParams.get('apikey');
    assert.equal(payload(apikey).role, 'anon', `the socket URL carries the anon key: ${url}`);
    assert.ok(!url.includes(ann.token), 'the user token is never in a socket URL');
  }
  for (const url of requests) assert.ok(!url.includes(ann.token), `the user token is never in a request URL: ${url}`);

  const violations = A.errors.filter((e) => /Content Security Policy|Refused to/i.test(e.text));
  assert.deepEqual(violations, [], 'no CSP violation');
  assert.deepEqual(A.unexpectedErrors(), []);
  await context.close();
});

test('a sign-in link for another account replaces the signed-in one only after the page asked', { skip }, async () => {
  const dana = sg.addUser('dana@example.com');
  const eric = sg.addUser('eric@example.com');
  const context = await browser.newContext();
  const first = await UiPage.open('first', context);
  await first.page.goto(`${sg.base}/meetings#access_token=${dana.token}`);
  await first.live();
  await until(async () => (await first.page.locator('#who').innerText()).includes('dana@example.com'), 'dana signed in');

  // A link for eric opened in a new tab: declined, dana stays signed in.
  const second = await UiPage.open('second', context);
  const asked = [];
  second.page.once('dialog', (d) => { asked.push(d.message()); d.dismiss(); });
  await second.page.goto(`${sg.base}/meetings#access_token=${eric.token}`);
  await second.live();
  assert.equal(asked.length, 1, 'the page asked before replacing the signed-in account');
  assert.match(asked[0], /another account/);
  assert.match(await second.page.locator('#who').innerText(), /dana@example\.com/);
  assert.equal(await second.page.evaluate(() => location.hash), '', 'the token left the address bar');

  // Accepted: eric replaces dana (and the first tab follows).
  const third = await UiPage.open('third', context);
  third.page.once('dialog', (d) => d.accept());
  await third.page.goto(`${sg.base}/meetings#access_token=${eric.token}`);
  await third.live();
  await until(async () => (await third.page.locator('#who').innerText()).includes('eric@example.com'), 'eric signed in');
  saw('the first tab follows the new account', await until(
    async () => (await first.page.locator('#who').innerText().catch(() => '')).includes('eric@example.com'),
    'the first tab to reload as eric',
  ));

  // The same account again asks nothing.
  const fourth = await UiPage.open('fourth', context);
  let askedAgain = false;
  fourth.page.once('dialog', (d) => { askedAgain = true; d.dismiss(); });
  await fourth.page.goto(`${sg.base}/meetings#access_token=${sg.cli('token', '--user', String(eric.id))}`);
  await fourth.live();
  assert.equal(askedAgain, false);
  await context.close();
});
