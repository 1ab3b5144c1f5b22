// The UI asks only for the meetings its pages show live: in a real headless
// Chromium against the real binary, an adviser with meetings long past and
// meetings in the live window gets a realtime join whose meetings binding
// carries a filter on ends_at, and a snapshot holding only the window's
// meetings; the Meetings page shows the upcoming ones live; a client's page
// and "Show earlier meetings" read the old ones through REST, merged with the
// live rows without duplicates; an old meeting edited or created there is
// shown as saved, and one moved out of the window elsewhere shows its new
// state once. Each step waits up to 10 s and prints the delay it saw.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Syncgate } from './syncgate.mjs';
import { launch, chromiumInstalled, UiPage, visible, until, saw } from './browser.mjs';

const skip = chromiumInstalled() || process.env.CI ? false : 'Chromium is not installed (apt-get install chromium)';

let sg;
let browser;

before(async () => {
  if (skip) return;
  sg = await Syncgate.start();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await sg?.destroy();
});

/** "YYYY-MM-DDTHH:mm" for a datetime-local input, `days` from now at `hour` (browser = this process's zone). */
function localInput(days, hour) {
  const d = new Date();
  d.setDate(d.getDate() + days);
  d.setHours(hour, 0, 0, 0);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** An instant `days` from now (negative: ago) at `hour` UTC. */
function isoIn(days, hour) {
  const d = new Date();
  d.setUTCDate(d.getUTCDate() + days);
  d.setUTCHours(hour, 0, 0, 0);
  return d.toISOString();
}

test('the realtime join asks only for the live window of meetings; older ones come through REST where a page shows them', { skip }, async () => {
  const ann = sg.addUser('ann@example.com');
  const post = async (path, body) => {
    const r = await sg.api('POST', path, ann.token, body);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body;
  };
  const carla = await post('/api/clients', { name: 'Carla Client' });
  const old = await post('/api/meetings', { title: 'Review a year ago', starts_at: isoIn(-365, 9), ends_at: isoIn(-365, 10), client_id: carla.id });
  await post('/api/meetings', { title: 'Kickoff two years ago', starts_at: isoIn(-730, 9), ends_at: isoIn(-730, 10), client_id: carla.id });
  await post('/api/meetings', { title: 'Unlinked long ago', starts_at: isoIn(-200, 9), ends_at: isoIn(-200, 10) });
  await post('/api/meetings', { title: 'Check-in last week', starts_at: isoIn(-7, 9), ends_at: isoIn(-7, 10), client_id: carla.id });
  await post('/api/meetings', { title: 'Plan next week', starts_at: isoIn(7, 9), ends_at: isoIn(7, 10), client_id: carla.id });

  const context = await browser.newContext();
  const A = await UiPage.open('A', context);
  const joins = [];
  const snapshotTitles = [];
  A.page.on('websocket', (ws) => {
    ws.on('framesent', ({ payload }) => {
      try {
        const f = JSON.parse(String(payload));
        if (Array.isArray(f) && f[3] === 'phx_join') joins.push(f[4].config);
      } catch (_) { /* not JSON */ }
    });
    ws.on('framereceived', ({ payload }) => {
      try {
        const f = JSON.parse(String(payload));
        const data = Array.isArray(f) && f[3] === 'postgres_changes' ? f[4].data : null;
        if (data && data.snapshot && data.table === 'meetings') snapshotTitles.push(data.record.title);
      } catch (_) { /* not JSON */ }
    });
  });
  const requests = [];
  A.page.on('request', (r) => requests.push(r.url()));

  await A.page.goto(`${sg.base}/meetings#access_token=${ann.token}`);
  saw('live', await A.live());
  saw('the upcoming meeting shown', await visible(A.page.locator('#upcoming li.meeting', { hasText: 'Plan next week' })));
  await visible(A.page.locator('#past li.meeting', { hasText: 'Check-in last week' }));

  // The join's meetings binding is bounded; clients and deals are whole.
  assert.equal(joins.length, 1, 'one join');
  const bindings = Object.fromEntries(joins[0].postgres_changes.map((b) => [b.table, b.filter]));
  assert.match(bindings.meetings || '', /^ends_at=gt\.\d{4}-\d\d-\d\dT00:00:00\.000Z$/, 'the meetings binding carries an ends_at filter');
  const since = Date.parse(bindings.meetings.slice('ends_at=gt.'.length));
  assert.ok(since < Date.parse(isoIn(-7, 10)) && since > Date.parse(isoIn(-200, 10)), `the window starts between the two: ${bindings.meetings}`);
  assert.equal(bindings.clients, undefined);
  assert.equal(bindings.pipeline, undefined);
  assert.deepEqual(snapshotTitles.sort(), ['Check-in last week', 'Plan next week'], 'the snapshot holds only the window\'s meetings');
  assert.equal(await A.meeting('Review a year ago').count(), 0, 'old meetings are not on the page before they are asked for');

  // A meeting booked elsewhere arrives live.
  await post('/api/meetings', { title: 'Booked elsewhere', starts_at: isoIn(2, 11), ends_at: isoIn(2, 12) });
  saw('a new meeting arrives live', await visible(A.page.locator('#upcoming li.meeting', { hasText: 'Booked elsewhere' })));

  // "Show earlier meetings" reads back through REST until the oldest.
  await A.page.locator('#more-past').click();
  saw('earlier meetings read through REST', await visible(A.page.locator('#past li.meeting', { hasText: 'Kickoff two years ago' })));
  await visible(A.page.locator('#past li.meeting', { hasText: 'Unlinked long ago' }));
  await until(async () => A.page.locator('#more-past').isHidden(), 'the button to go once nothing older exists');
  assert.equal(await A.meeting('Check-in last week').count(), 1, 'a live meeting is listed once');

  // A client's page: the live ones and the old history, each once.
  await A.page.goto(`${sg.base}/clients/${carla.id}`);
  saw('live on the client page', await A.live());
  saw('an old meeting on the client page', await visible(A.page.locator('#client-past li.meeting', { hasText: 'Review a year ago' })));
  await visible(A.page.locator('#client-past li.meeting', { hasText: 'Kickoff two years ago' }));
  await visible(A.page.locator('#client-past li.meeting', { hasText: 'Check-in last week' }));
  await visible(A.page.locator('#client-upcoming li.meeting', { hasText: 'Plan next week' }));
  assert.equal(await A.page.locator('#client-past li.meeting').count(), 3, 'each past meeting once');
  assert.equal(await A.meeting('Unlinked long ago').count(), 0);
  assert.ok(requests.some((u) => u.includes('/api/meetings?') && u.includes(`client_id=${carla.id}`)), 'the history came through REST');

  // Editing an old meeting (whose changes the bounded socket does not carry) shows the saved version.
  await A.page.locator('#client-past li.meeting', { hasText: 'Review a year ago' }).getByRole('button', { name: /Edit/ }).click();
  await A.dialog().locator('[name="title"]').fill('Annual review a year ago');
  await A.submitDialog('Save');
  saw('the edited old meeting shown as saved', await visible(A.page.locator('#client-past li.meeting', { hasText: 'Annual review a year ago' })));
  const stored = await sg.api('GET', `/api/meetings/${old.id}`, ann.token);
  assert.equal(stored.body.title, 'Annual review a year ago');

  // A past meeting logged here, outside the window (the socket carries no change of it), is shown at once.
  await A.page.getByRole('button', { name: 'New meeting' }).click();
  const form = A.dialog();
  await form.getByLabel('Title').fill('Logged from last year');
  await form.getByLabel('Starts').fill(localInput(-300, 10));
  await form.getByLabel('Ends').fill(localInput(-300, 11));
  await A.submitDialog('Create meeting');
  saw('an old meeting created here is listed', await visible(A.page.locator('#client-past li.meeting', { hasText: 'Logged from last year' })));

  // A meeting moved out of the window by someone else leaves the live rows and is still listed once (its newest state).
  const lastWeek = (await sg.api('GET', `/api/meetings?${new URLSearchParams({ client_id: String(carla.id), from: isoIn(-8, 0), to: isoIn(-6, 0) })}`, ann.token)).body.items[0];
  await sg.api('PATCH', `/api/meetings/${lastWeek.id}`, ann.token, { title: 'Check-in moved back', starts_at: isoIn(-100, 9), ends_at: isoIn(-100, 10) });
  saw('a meeting moved out of the window shows its new state', await visible(A.page.locator('#client-past li.meeting', { hasText: 'Check-in moved back' })));
  assert.equal(await A.page.locator('#client-past li.meeting').count(), 4, 'each past meeting once');

  assert.deepEqual(A.unexpectedErrors(), []);
  await context.close();
});
