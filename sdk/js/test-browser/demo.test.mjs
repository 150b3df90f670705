// The demo page in Chromium (Debian's, driven by playwright-core): two users in two browser
// contexts, one of them phone-sized, against a live `parley dev`. Screenshots go to
// test-browser/screenshots/ — look at them: a page that passes can still look broken.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { ParleyDev } from '../test/server.mjs';

const SHOTS = join(dirname(fileURLToPath(import.meta.url)), 'screenshots');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT = { timeout: 10_000 };

let server;
let browser;
let alice;
let bob;

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Opens the demo in a fresh browser context and logs in as `uid`. */
async function open(uid, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error(`${uid}'s page:`, error));
  await page.goto(`${server.http}/`);
  await page.waitForFunction(() => document.getElementById('app-id').value !== '', null, WAIT);
  await page.getByTestId('uid').fill(uid);
  await page.getByTestId('login').click();
  await page.getByTestId('state').filter({ hasText: 'CONNECTED' }).waitFor(WAIT);
  await page.getByTestId('me').filter({ hasText: uid }).waitFor(WAIT);
  return page;
}

function expectText(page, testId, text) {
  return page.getByTestId(testId).filter({ hasText: text }).waitFor(WAIT);
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  server = await ParleyDev.start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  alice = await open('alice', { width: 1024, height: 900 });
  bob = await open('bob', { width: 390, height: 844 });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

test('peer messages both ways', async () => {
  await alice.getByTestId('peer').fill('bob');
  await alice.getByTestId('peer-text').fill('hi bob');
  await alice.getByTestId('peer-send').click();
  await expectText(bob, 'peer-log', 'alice: hi bob');
  await expectText(alice, 'peer-log', 'me → bob: hi bob ✓');
  // Bob's peer field filled itself with the sender.
  assert.equal(await bob.getByTestId('peer').inputValue(), 'alice');
  await bob.getByTestId('peer-text').fill('hi alice');
  await bob.getByTestId('peer-send').click();
  await expectText(alice, 'peer-log', 'bob: hi alice');
  await shot(bob, 'bob-peer-chat-phone');
});

test('channel chat with the member list updating', async () => {
  await alice.getByTestId('channel').fill('lobby');
  await alice.getByTestId('join').click();
  await expectText(alice, 'members', 'alice');
  await bob.getByTestId('channel').fill('lobby');
  await bob.getByTestId('join').click();
  await expectText(alice, 'members', 'alice, bob');
  await expectText(bob, 'members', 'alice, bob');
  await expectText(alice, 'member-count', '2');
  await alice.getByTestId('channel-text').fill('hello lobby');
  await alice.getByTestId('channel-send').click();
  await expectText(bob, 'channel-log', 'alice: hello lobby');
  await bob.getByTestId('channel-text').fill('hey');
  await bob.getByTestId('channel-send').click();
  await expectText(alice, 'channel-log', 'bob: hey');
  await shot(alice, 'alice-channel');
});

test('user and channel attributes', async () => {
  await alice.getByTestId('user-attr-key').fill('mood');
  await alice.getByTestId('user-attr-value').fill('happy');
  await alice.getByTestId('user-attr-set').click();
  await bob.getByTestId('user-attr-uid').fill('alice');
  await bob.getByTestId('user-attr-get').click();
  await expectText(bob, 'user-attrs', 'alice: mood = happy');
  await alice.getByTestId('channel-attr-key').fill('topic');
  await alice.getByTestId('channel-attr-value').fill('launch');
  await alice.getByTestId('channel-attr-set').click();
  // Bob's page hears of it (AttributesUpdated) without asking.
  await expectText(bob, 'channel-attrs', 'topic = launch (by alice)');
});

test('an invitation accepted and one refused', async () => {
  await alice.getByTestId('callee').fill('bob');
  await alice.getByTestId('call').click();
  await expectText(bob, 'caller', 'alice');
  await shot(bob, 'bob-incoming-call-phone');
  await bob.getByTestId('accept').click();
  await expectText(alice, 'call-state', 'bob accepted');
  await expectText(bob, 'call-state', 'in a call with alice');

  await alice.getByTestId('call').click();
  await expectText(bob, 'caller', 'alice');
  await bob.getByTestId('incoming').waitFor({ state: 'visible', ...WAIT });
  await bob.getByTestId('refuse').click();
  await expectText(alice, 'call-state', 'bob refused');
  await expectText(bob, 'call-state', 'refused alice');

  // A call the caller gives up on.
  await alice.getByTestId('call').click();
  await bob.getByTestId('incoming').waitFor({ state: 'visible', ...WAIT });
  await alice.getByTestId('cancel-call').click();
  await expectText(alice, 'call-state', 'canceled');
  await expectText(bob, 'call-state', 'alice canceled the call');
  await bob.getByTestId('incoming').waitFor({ state: 'hidden', ...WAIT });
});

test('both pages reconnect after the server restarts, and the channel still works', async () => {
  await server.restart();
  for (const page of [alice, bob]) {
    await page.waitForFunction(
      () => document.getElementById('state').textContent === 'CONNECTED',
      null,
      { timeout: 15_000 },
    );
  }
  // The SDK re-joined the channel: a message gets through without the user doing anything.
  for (let attempt = 0; ; attempt++) {
    await alice.getByTestId('channel-text').fill(`after the restart ${attempt}`);
    await alice.getByTestId('channel-send').click();
    try {
      await bob
        .getByTestId('channel-log')
        .filter({ hasText: 'alice: after the restart' })
        .waitFor({ timeout: 1000 });
      break;
    } catch (error) {
      if (attempt >= 5) {
        throw error;
      }
    }
  }
  await shot(alice, 'alice-after-restart');
  await shot(bob, 'bob-after-restart-phone');
  // Bob leaves: Alice's list shows it.
  await bob.getByTestId('leave').click();
  await alice.waitForFunction(
    () => document.getElementById('members').textContent === 'alice',
    null,
    WAIT,
  );
});
