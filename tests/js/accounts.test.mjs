// Accounts in a real headless Chromium against the real binary: an admin's
// Team page lists the team; disabling an adviser there sends the adviser's
// open window (another browser) back to sign-in with the reason, without a
// reload; the Team page follows changes made elsewhere (the CLI) live; an
// invite shows a sign-in link; "Sign out everywhere" ends the user's other
// sessions. Each step waits up to 10 s and prints the delay it saw.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Syncgate } from './syncgate.mjs';
import { launch, chromiumInstalled, screenshotDir, UiPage, visible, until, saw } from './browser.mjs';

const skip = chromiumInstalled() || process.env.CI ? false : 'Chromium is not installed (apt-get install chromium)';

let sg;
let browser;
let shots;

before(async () => {
  if (skip) return;
  sg = await Syncgate.start();
  browser = await launch();
  shots = screenshotDir();
  console.log(`screenshots: ${shots}`);
});

after(async () => {
  await browser?.close();
  await sg?.destroy();
});

test('an admin disables an adviser; the adviser\'s open window is signed out without a reload', { skip }, async (t) => {
  const boss = sg.addUser('boss@example.com', 'admin');
  const ann = sg.addUser('ann@example.com');
  const bossBrowser = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const annBrowser = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const A = await UiPage.open('admin', bossBrowser);
  const U = await UiPage.open('adviser', annBrowser);
  const annRow = () => A.page.locator('#team-rows tr', { hasText: 'ann@example.com' });

  await t.test('the Team page lists everyone for an admin only', async () => {
    await A.signIn(sg.loginLink(boss.id));
    await U.signIn(sg.loginLink(ann.id));
    assert.equal(await U.page.locator('#nav-team').isHidden(), true, 'advisers have no Team page');
    await A.nav('Team');
    saw('team list shown', await visible(annRow()));
    assert.equal(await annRow().getAttribute('data-status'), 'active');
    assert.match(await annRow().innerText(), /never|now|ago/, "last seen is shown");
    await A.screenshot(shots, 'team.png');
  });

  await t.test('disable: the adviser\'s window shows the signed-out state', async () => {
    await U.page.evaluate(() => { window.notReloaded = true; });
    await annRow().getByRole('button', { name: 'Disable' }).click();
    saw('adviser back at sign-in', await visible(U.page.getByRole('alert').filter({ hasText: 'disabled' })));
    assert.equal(await U.page.evaluate(() => window.notReloaded), true, 'the adviser\'s window was not reloaded');
    assert.equal(await U.page.evaluate(() => localStorage.getItem('syncgate.token')), null, 'the token is gone');
    await until(async () => (await annRow().getAttribute('data-status')) === 'disabled', 'the row to read disabled');
    await U.screenshot(shots, 'adviser-disabled.png');
  });

  await t.test('a change made elsewhere (the CLI, through the server) shows on the Team page live', async () => {
    sg.cli('user', 'enable', String(ann.id));
    saw('enabled row shown', await until(async () => (await annRow().getAttribute('data-status')) === 'active', 'the row to read active again'));
    sg.cli('user', 'add', '--email', 'carl@example.com');
    saw('new member shown', await visible(A.page.locator('#team-rows tr', { hasText: 'carl@example.com' })));
  });

  await t.test('invite shows a single-use sign-in link', async () => {
    await A.page.locator('#invite-email').fill('dora@example.com');
    await A.page.getByRole('button', { name: 'Invite' }).click();
    saw('link shown', await visible(A.page.locator('#invite-link-url')));
    assert.match(await A.page.locator('#invite-link-url').inputValue(), /\/auth\/link\?code=/);
    await visible(A.page.locator('#team-rows tr', { hasText: 'dora@example.com' }));
  });

  await t.test('"Sign out everywhere" ends the user\'s other windows too', async () => {
    await U.signIn(sg.loginLink(ann.id));
    const U2 = await UiPage.open('adviser, second browser', await browser.newContext());
    await U2.signIn(sg.loginLink(ann.id));
    const button = U.page.getByRole('button', { name: 'Sign out everywhere' });
    await button.click();
    await U.page.getByRole('button', { name: 'Really sign out on every device?' }).click();
    saw('this window at sign-in', await visible(U.page.getByRole('alert').filter({ hasText: 'signed out everywhere' })));
    saw('the other browser at sign-in', await visible(U2.page.getByRole('alert').filter({ hasText: 'signed out' })));
    assert.deepEqual(U2.unexpectedErrors().filter((e) => !/401/.test(e.text)), []);
  });

  assert.deepEqual(A.unexpectedErrors(), []);
});
