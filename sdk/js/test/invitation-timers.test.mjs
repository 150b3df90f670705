// Invitations that fail, on a server with short invitation timers: the callee stays offline
// (PEER_OFFLINE), or nobody answers (INVITATION_EXPIRE on both sides).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import AgoraRTM from '../dist/index.js';
import { APP_ID, ParleyDev, next } from './server.mjs';

let server;
const clients = [];

before(async () => {
  server = await ParleyDev.start({
    args: ['--invitation-offline-timeout', '500ms', '--invitation-answer-timeout', '1s'],
  });
});

after(async () => {
  for (const client of clients) {
    await client.logout().catch(() => {});
  }
  await server.close();
});

async function login(uid) {
  const client = AgoraRTM.createInstance(APP_ID, server.config());
  clients.push(client);
  await client.login({ uid });
  return client;
}

test('an invitation to a user who stays offline fails with PEER_OFFLINE', async () => {
  const alice = await login('f-alice');
  const call = alice.createLocalInvitation('f-nobody');
  const failed = next(call, 'LocalInvitationFailure');
  await call.send();
  assert.deepEqual(await failed, ['PEER_OFFLINE']);
  assert.equal(call.state, 'FAILURE');
});

test('an invitation nobody answers expires on both sides', async () => {
  const alice = await login('e-alice');
  const bob = await login('e-bob');
  const incoming = next(bob, 'RemoteInvitationReceived');
  const call = alice.createLocalInvitation('e-bob');
  const callerFailed = next(call, 'LocalInvitationFailure');
  await call.send();
  const [remote] = await incoming;
  const calleeFailed = next(remote, 'RemoteInvitationFailure');
  assert.deepEqual(await callerFailed, ['INVITATION_EXPIRE']);
  assert.deepEqual(await calleeFailed, ['INVITATION_EXPIRE']);
  assert.equal(remote.state, 'FAILURE');
});
