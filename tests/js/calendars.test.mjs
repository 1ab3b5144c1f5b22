// The Integrations page's calendar list in a real headless Chromium against
// the real binary and a fake Google: connect Google, see the calendars with
// a tick each, tick a second calendar, and watch its meetings arrive on the
// Meetings page of another tab without a reload; untick it and they go.
// Declined and unanswered invitations say so, an all-day event keeps its date
// with the server in a far-off zone (TZ=Pacific/Kiritimati, UTC+14), and an
// event set in another zone shows that zone's time too.
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

const offsiteDay = at(5, 0).slice(0, 10);

function dayAfter(date) {
  const d = new Date(`${date}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
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
  const invitees = (mine) => [{ email: 'client@example.com', organizer: true, responseStatus: 'accepted' }, { email: EMAIL, responseStatus: mine }];
  google.createEvent(EMAIL, EMAIL, { ...timed('Invitation I declined', 3, 9), attendees: invitees('declined') });
  google.createEvent(EMAIL, EMAIL, { ...timed('Invitation not answered', 3, 12), attendees: invitees('needsAction') });
  google.createEvent(EMAIL, EMAIL, { summary: 'Offsite', start: { date: offsiteDay }, end: { date: dayAfter(offsiteDay) } });
  google.createEvent(EMAIL, EMAIL, {
    summary: 'Call set in New York',
    start: { dateTime: `${dayAfter(offsiteDay)}T09:30:00-05:00`, timeZone: 'America/New_York' },
    end: { dateTime: `${dayAfter(offsiteDay)}T10:00:00-05:00`, timeZone: 'America/New_York' },
  });
  sg = await Syncgate.start({ ...google.env(), TZ: 'Pacific/Kiritimati' });
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
  assert.match(await A.meeting('Invitation I declined').innerText(), /Declined/);
  assert.match(await A.meeting('Invitation not answered').innerText(), /Not answered/);
  assert.doesNotMatch(await A.meeting('Invitation not answered').innerText(), /Declined|Canceled/);
  assert.match(await A.meeting('Call set in New York').innerText(), /09:30( AM)? in America\/New York/);
  // The server runs at UTC+14; the all-day event keeps its date.
  const rows = await fetch(`${sg.base}/api/meetings?limit=100`, { headers: { authorization: `Bearer ${ann.token}` } }).then((r) => r.json());
  const offsite = rows.items.find((m) => m.title === 'Offsite');
  assert.deepEqual([offsite.all_day, offsite.starts_at, offsite.ends_at], [true, `${offsiteDay}T00:00:00.000Z`, `${dayAfter(offsiteDay)}T00:00:00.000Z`]);

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
