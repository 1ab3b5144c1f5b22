// The Integrations page's calendar list in a real headless Chromium against
// the real binary and a fake Google: connect Google, see the calendars with
// a tick each, tick a second calendar, and watch its meetings arrive on the
// Meetings page of another tab without a reload; untick it and they go.
// Each step waits up to 10 s and prints the delay it saw; none asserts a time.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Syncgate } from './syncgate.mjs';
import { FakeGoogle } from './fake-google.mjs';
import { launch, chromiumInstalled, UiPage, visible, until, saw } from './browser.mjs';

const skip = chromiumInstalled() || process.env.CI ? false : 'Chromium is not installed (apt-get install chromium)';
const EMAIL = 'ann@example.com';
const CLIENTS = 'clients-1@group.calendar.google.com';

let sg;
let google;
let browser;

function at(days, hour) {
  const d = new Date();
  d.setUTCDate(d.getUTCDate() + days);
  d.setUTCHours(hour, 0, 0, 0);
  return d.toISOString().replace('.000Z', 'Z');
}

function timed(summary, days, hour) {
  return { summary, start: { dateTime: at(days, hour), timeZone: 'UTC' }, end: { dateTime: at(days, hour + 1), timeZone: 'UTC' } };
}

before(async () => {
  if (skip) return;
  google = await FakeGoogle.start();
  google.addAccount(EMAIL, 'Ann');
  google.addCalendar(EMAIL, CLIENTS, 'Client meetings', '#f83a22');
  google.createEvent(EMAIL, EMAIL, timed('Team lunch', 1, 11));
  google.createEvent(EMAIL, CLIENTS, timed('Review with Carla', 2, 9));
  google.createEvent(EMAIL, EMAIL, { ...timed('Focus time', 1, 14), eventType: 'focusTime' });
  sg = await Syncgate.start(google.env());
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await sg?.destroy();
  await google?.close();
});

test('tick a calendar on Integrations: its meetings arrive on the Meetings page without a reload', { skip }, async () => {
  const ann = sg.addUser(EMAIL);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const A = await UiPage.open('A (integrations)', context);
  await A.signIn(sg.loginLink(ann.id));

  // Connect Google from the Integrations page (the real consent round trip, against the fake).
  await A.nav('Integrations');
  google.consentAs = EMAIL;
  await A.page.locator('#google-connect').click();
  await A.page.waitForURL((u) => u.pathname !== '/auth/google/callback' && !u.href.startsWith(google.base), { timeout: 10000 });
  await A.live();
  await A.nav('Meetings');
  saw('the primary calendar synced', await visible(A.meeting('Team lunch')));
  assert.equal(await A.meeting('Focus time').count(), 0, 'focus time is not a meeting');
  assert.equal(await A.meeting('Review with Carla').count(), 0, 'the second calendar is not ticked yet');

  // Tab B watches the Meetings page; it must never reload.
  const B = await UiPage.open('B (meetings)', context);
  await B.page.goto(`${sg.base}/meetings`);
  await B.live();
  await visible(B.meeting('Team lunch'));
  await B.page.evaluate(() => { window.notReloaded = true; });

  await A.nav('Integrations');
  const list = A.page.locator('#google-calendars');
  saw('calendar list shown', await visible(list.getByRole('checkbox')));
  const mine = list.getByRole('checkbox', { name: /ann@example\.com/ });
  const clients = list.getByRole('checkbox', { name: /Client meetings/ });
  assert.equal(await mine.isChecked(), true, 'the primary calendar is ticked by default');
  assert.equal(await clients.isChecked(), false);
  assert.match(await list.innerText(), /your main calendar/);

  await clients.check();
  saw('selection saved', await visible(A.page.locator('#calendars-saved', { hasText: 'Saved' })));
  saw('tab B: the ticked calendar\'s meeting arrived', await visible(B.meeting('Review with Carla')));
  assert.match(await B.meeting('Review with Carla').innerText(), /Calendar: Client meetings/);
  assert.equal(await B.page.evaluate(() => window.notReloaded), true, 'tab B did not reload');
  assert.equal(google.watches.filter((w) => w.calendar === CLIENTS).length, 1, 'the ticked calendar got its own channel');

  // Untick: its meetings leave the page, live.
  await until(async () => !(await clients.isDisabled()), 'the checkboxes to be usable again');
  await clients.uncheck();
  saw('tab B: the unticked calendar\'s meeting left',
    await until(async () => (await B.meeting('Review with Carla').count()) === 0, 'the meeting to leave tab B'));
  assert.equal(await B.meeting('Team lunch').count(), 1);
  assert.equal(await B.page.evaluate(() => window.notReloaded), true, 'tab B did not reload');

  for (const p of [A, B]) assert.deepEqual(p.unexpectedErrors(), [], `${p.name}: no console errors`);
  await context.close();
});
