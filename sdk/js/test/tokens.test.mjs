// Tokens with an app that has a certificate: a token that is about to expire is renewed; one
// that is not ends the session with TokenExpired and ABORTED / TOKEN_EXPIRED.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import AgoraRTM from '../dist/index.js';
import { APP_ID, ParleyDev, next } from './server.mjs';

let server;

before(async () => {
  server = await ParleyDev.start({ certificate: 'fedcba9876543210fedcba9876543210' });
});

after(async () => {
  await server.close();
});

test('a bad token is refused with INVALID_TOKEN', async () => {
  const client = AgoraRTM.createInstance(APP_ID, server.config());
  await assert.rejects(client.login({ uid: 't-mallory', token: server.token('t-someone-else') }), {
    code: 'INVALID_TOKEN',
  });
});

test('a token about to expire is renewed and the session goes on', async () => {
  const client = AgoraRTM.createInstance(APP_ID, server.config());
  // Under 30 s left: the warning comes at once.
  const warned = next(client, 'TokenPrivilegeWillExpire');
  await client.login({ uid: 't-alice', token: server.token('t-alice', 4) });
  await warned;
  await client.renewToken(server.token('t-alice', 3600));
  await new Promise((resolve) => setTimeout(resolve, 4500));
  assert.equal(client.connectionState, 'CONNECTED');
  assert.deepEqual(await client.queryPeersOnlineStatus(['t-alice']), { 't-alice': true });
  await client.logout();
});

test('a token that expires ends the session', async () => {
  const client = AgoraRTM.createInstance(APP_ID, server.config());
  const expired = next(client, 'TokenExpired');
  const aborted = next(client, 'ConnectionStateChanged', (state) => state === 'ABORTED');
  await client.login({ uid: 't-bob', token: server.token('t-bob', 2) });
  await expired;
  assert.deepEqual(await aborted, ['ABORTED', 'TOKEN_EXPIRED']);
});
