// The SDK under Node against a live `parley dev`: every method and event of the Agora-shaped API.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import AgoraRTM, { RtmError } from '../dist/index.js';
import { APP_ID, ParleyDev, next } from './server.mjs';

let server;
const clients = [];

before(async () => {
  server = await ParleyDev.start();
});

after(async () => {
  for (const client of clients) {
    client.removeAllListeners();
    await client.logout().catch(() => {});
  }
  await server.close();
});

/** A logged-in client for `uid`. */
async function login(uid, extra = {}) {
  const client = AgoraRTM.createInstance(APP_ID, server.config(extra));
  clients.push(client);
  await client.login({ uid });
  return client;
}

test('login and logout report their connection states', async () => {
  const client = AgoraRTM.createInstance(APP_ID, server.config());
  const states = [];
  client.on('ConnectionStateChanged', (state, reason) => states.push([state, reason]));
  await client.login({ uid: 'state-watcher', token: '' });
  assert.equal(client.connectionState, AgoraRTM.ConnectionState.CONNECTED);
  await client.logout();
  assert.deepEqual(states, [
    ['CONNECTING', 'LOGIN'],
    ['CONNECTED', 'LOGIN_SUCCESS'],
    ['DISCONNECTED', 'LOGOUT'],
  ]);
  await assert.rejects(client.sendMessageToPeer({ text: 'x' }, 'nobody'), { code: 'NOT_LOGGED_IN' });
});

test('a login to an unknown app fails with its code', async () => {
  const client = AgoraRTM.createInstance('ffffffffffffffffffffffffffffffff', server.config());
  const states = [];
  client.on('ConnectionStateChanged', (state, reason) => states.push([state, reason]));
  await assert.rejects(client.login({ uid: 'alice' }), (error) => {
    assert.ok(error instanceof RtmError);
    assert.equal(error.code, 'INVALID_APP_ID');
    return true;
  });
  assert.deepEqual(states.at(-1), ['DISCONNECTED', 'LOGIN_FAILURE']);
});

test('peer messages both ways, raw and offline', async () => {
  const alice = await login('p-alice');
  const bob = await login('p-bob');
  const received = next(bob, 'MessageFromPeer');
  const sent = await alice.sendMessageToPeer({ text: 'hi bob' }, 'p-bob');
  assert.equal(sent.hasPeerReceived, true);
  assert.equal(sent.result, 'RECEIVED_BY_PEER');
  const [message, peerId, props] = await received;
  assert.equal(message.text, 'hi bob');
  assert.equal(message.messageType, 'TEXT');
  assert.equal(peerId, 'p-alice');
  assert.equal(props.isOfflineMessage, false);
  assert.equal(props.messageId, sent.messageId);

  const raw = bob.createMessage({ rawMessage: new Uint8Array([0, 1, 255]), description: 'bytes' });
  const back = next(alice, 'MessageFromPeer');
  await bob.sendMessageToPeer(raw, 'p-alice');
  const [rawMessage] = await back;
  assert.equal(rawMessage.messageType, 'RAW');
  assert.deepEqual([...rawMessage.rawMessage], [0, 1, 255]);
  assert.equal(rawMessage.description, 'bytes');

  const offline = await alice.sendMessageToPeer({ text: 'later' }, 'p-carol', {
    enableOfflineMessaging: true,
  });
  assert.equal(offline.hasPeerReceived, false);
  assert.equal(offline.result, 'CACHED_BY_SERVER');
  const carol = AgoraRTM.createInstance(APP_ID, server.config());
  clients.push(carol);
  const cached = next(carol, 'MessageFromPeer');
  await carol.login({ uid: 'p-carol' });
  const [, , cachedProps] = await cached;
  assert.equal(cachedProps.isOfflineMessage, true);
  const unreachable = await alice.sendMessageToPeer({ text: '?' }, 'p-nobody');
  assert.equal(unreachable.result, 'PEER_UNREACHABLE');
  await assert.rejects(alice.sendMessageToPeer({ text: '' }, 'p-bob'), { code: 'INVALID_MESSAGE' });
});

test('channels: join, members, messages, counts, leave', async () => {
  const alice = await login('c-alice');
  const bob = await login('c-bob');
  const aliceRoom = alice.createChannel('c-room');
  const bobRoom = bob.createChannel('c-room');
  await aliceRoom.join();
  const joined = next(aliceRoom, 'MemberJoined');
  // Listening before Bob joins: the count may be sent while the checks below run.
  const counted = next(aliceRoom, 'MemberCountUpdated', (count) => count === 2);
  await bobRoom.join();
  assert.deepEqual(await joined, ['c-bob']);
  assert.equal(aliceRoom.joined, true);
  assert.deepEqual((await aliceRoom.getMembers()).sort(), ['c-alice', 'c-bob']);
  assert.deepEqual(await alice.getChannelMemberCount(['c-room', 'c-empty']), {
    'c-room': 2,
    'c-empty': 0,
  });
  await counted;

  const got = next(bobRoom, 'ChannelMessage');
  const sent = await aliceRoom.sendMessage({ text: 'hello room' }, { enableHistoricalMessaging: true });
  const [message, memberId, props] = await got;
  assert.equal(message.text, 'hello room');
  assert.equal(memberId, 'c-alice');
  assert.equal(props.seq, sent.seq);

  const left = next(aliceRoom, 'MemberLeft');
  await bobRoom.leave();
  assert.deepEqual(await left, ['c-bob']);
  await assert.rejects(bobRoom.sendMessage({ text: 'x' }), { code: 'NOT_JOINED' });
  await assert.rejects(aliceRoom.join(), { code: 'ALREADY_JOINED' });
});

test('user and channel attributes', async () => {
  const alice = await login('a-alice');
  const bob = await login('a-bob');
  await alice.setLocalUserAttributes({ mood: 'calm', city: 'Oslo' });
  await alice.addOrUpdateLocalUserAttributes({ mood: 'busy' });
  await alice.deleteLocalUserAttributesByKeys(['city']);
  assert.deepEqual(await bob.getUserAttributes('a-alice'), { mood: 'busy' });
  assert.deepEqual(await bob.getUserAttributesByKeys('a-alice', ['mood', 'none']), { mood: 'busy' });
  await alice.clearLocalUserAttributes();
  assert.deepEqual(await bob.getUserAttributes('a-alice'), {});

  const bobRoom = bob.createChannel('a-room');
  await bobRoom.join();
  const updated = next(bobRoom, 'AttributesUpdated');
  await alice.setChannelAttributes('a-room', { topic: 'news' }, { enableNotificationToChannelMembers: true });
  const [attributes] = await updated;
  assert.equal(attributes.topic.value, 'news');
  assert.equal(attributes.topic.lastUpdateUserId, 'a-alice');
  await alice.addOrUpdateChannelAttributes('a-room', { lang: 'en' });
  await alice.deleteChannelAttributesByKeys('a-room', ['topic']);
  const read = await bob.getChannelAttributes('a-room');
  assert.deepEqual(Object.keys(read), ['lang']);
  assert.ok(read.lang.lastUpdateTs > 0);
  assert.deepEqual(Object.keys(await bob.getChannelAttributesByKeys('a-room', ['lang'])), ['lang']);
  await alice.clearChannelAttributes('a-room');
  assert.deepEqual(await bob.getChannelAttributes('a-room'), {});
});

test('online status: query and subscription', async () => {
  const alice = await login('s-alice');
  assert.deepEqual(await alice.queryPeersOnlineStatus(['s-alice', 's-bob']), {
    's-alice': true,
    's-bob': false,
  });
  const first = next(alice, 'PeersOnlineStatusChanged');
  await alice.subscribePeersOnlineStatus(['s-bob']);
  assert.deepEqual(await first, [{ 's-bob': 'OFFLINE' }]);
  assert.deepEqual(await alice.queryPeersBySubscriptionOption(), ['s-bob']);
  const online = next(alice, 'PeersOnlineStatusChanged', (status) => status['s-bob'] === 'ONLINE');
  const bob = await login('s-bob');
  await online;
  const offline = next(alice, 'PeersOnlineStatusChanged', (status) => status['s-bob'] === 'OFFLINE');
  await bob.logout();
  await offline;
  await alice.unsubscribePeersOnlineStatus(['s-bob']);
  assert.deepEqual(await alice.queryPeersBySubscriptionOption(), []);
});

test('invitations: accepted, refused and canceled', async () => {
  const alice = await login('i-alice');
  const bob = await login('i-bob');

  const incoming = next(bob, 'RemoteInvitationReceived');
  const call = alice.createLocalInvitation('i-bob');
  call.content = 'video?';
  call.channelId = 'i-call';
  const received = next(call, 'LocalInvitationReceivedByPeer');
  await call.send();
  // The callee's receipt may overtake the send's own answer.
  assert.ok(['SENT_TO_REMOTE', 'RECEIVED_BY_REMOTE'].includes(call.state), call.state);
  const [remote] = await incoming;
  await received;
  assert.equal(call.state, 'RECEIVED_BY_REMOTE');
  assert.equal(remote.callerId, 'i-alice');
  assert.equal(remote.content, 'video?');
  assert.equal(remote.channelId, 'i-call');
  assert.equal(remote.state, 'INVITATION_RECEIVED');
  const accepted = next(call, 'LocalInvitationAccepted');
  const calleeAccepted = next(remote, 'RemoteInvitationAccepted');
  remote.response = 'sure';
  await remote.accept();
  assert.deepEqual(await accepted, ['sure']);
  await calleeAccepted;
  assert.equal(call.state, 'ACCEPTED_BY_REMOTE');
  assert.equal(remote.state, 'ACCEPTED');

  const second = next(bob, 'RemoteInvitationReceived');
  const refusedCall = alice.createLocalInvitation('i-bob');
  await refusedCall.send();
  const [remote2] = await second;
  const refused = next(refusedCall, 'LocalInvitationRefused');
  const calleeRefused = next(remote2, 'RemoteInvitationRefused');
  remote2.response = 'busy';
  await remote2.refuse();
  assert.deepEqual(await refused, ['busy']);
  await calleeRefused;
  assert.equal(refusedCall.state, 'REFUSED_BY_REMOTE');
  assert.equal(remote2.state, 'REFUSED');

  const third = next(bob, 'RemoteInvitationReceived');
  const canceledCall = alice.createLocalInvitation('i-bob');
  await canceledCall.send();
  const [remote3] = await third;
  const calleeCanceled = next(remote3, 'RemoteInvitationCanceled');
  const callerCanceled = next(canceledCall, 'LocalInvitationCanceled');
  await canceledCall.cancel();
  await Promise.all([calleeCanceled, callerCanceled]);
  assert.equal(remote3.state, 'CANCELED');
  await assert.rejects(canceledCall.send(), { code: 'INVITATION_ALREADY_SENT' });
});

test('history: pages and counts of peer and channel messages', async () => {
  const alice = await login('h-alice');
  await login('h-bob');
  for (const text of ['one', 'two', 'three']) {
    await alice.sendMessageToPeer({ text }, 'h-bob', { enableHistoricalMessaging: true });
  }
  const page = await alice.queryHistory({ peerId: 'h-bob', limit: 2 });
  assert.deepEqual(page.messages.map((m) => m.message.text), ['one', 'two']);
  const rest = await alice.queryHistory({ peerId: 'h-bob', limit: 2, cursor: page.next });
  assert.deepEqual(rest.messages.map((m) => m.message.text), ['three']);
  const newest = await alice.queryHistory({ peerId: 'h-bob', order: 'DESC', limit: 1 });
  assert.equal(newest.messages[0].message.text, 'three');
  assert.equal(await alice.countHistory({ peerId: 'h-bob' }), 3);
  await assert.rejects(alice.queryHistory({ channelId: 'h-not-joined' }), { code: 'NOT_JOINED' });
});

test('moderation reaches the channel: a mute and a kick', async () => {
  const alice = await login('m-alice');
  const room = alice.createChannel('m-room');
  await room.join();
  const muted = next(room, 'MemberMuted');
  const mute = await server.api('POST', '/channels/m-room/mutes', {
    uid: 'm-alice',
    durationSeconds: 60,
    reason: 'calm',
  });
  assert.equal(mute.status, 200);
  const [memberId, isMuted, untilTs, reason] = await muted;
  assert.deepEqual([memberId, isMuted, untilTs, reason], ['m-alice', true, mute.body.untilTs, 'calm']);
  await assert.rejects(room.sendMessage({ text: 'x' }), { code: 'MUTED' });
  const kicked = next(room, 'Kicked');
  await server.api('DELETE', '/channels/m-room/members/m-alice?reason=bye');
  assert.deepEqual(await kicked, ['bye']);
  assert.equal(room.joined, false);
  await room.join();
  assert.equal(room.joined, true);

  const aborted = next(alice, 'ConnectionStateChanged', (state) => state === 'ABORTED');
  await server.api('POST', '/bans', { uid: 'm-alice', durationSeconds: 60 });
  assert.deepEqual(await aborted, ['ABORTED', 'BANNED_BY_SERVER']);
  const again = AgoraRTM.createInstance(APP_ID, server.config());
  await assert.rejects(again.login({ uid: 'm-alice' }), { code: 'BANNED' });
});

test('a server restart: the client reconnects and its channels resume', async () => {
  const alice = await login('r-alice');
  const bob = await login('r-bob');
  const aliceRoom = alice.createChannel('r-room');
  const bobRoom = bob.createChannel('r-room');
  await aliceRoom.join();
  await bobRoom.join();
  const recovered = next(aliceRoom, 'ChannelRecovered');
  const reconnecting = next(alice, 'ConnectionStateChanged', (state) => state === 'RECONNECTING');
  const back = next(alice, 'ConnectionStateChanged', (state) => state === 'CONNECTED');
  const bobBack = next(bob, 'ConnectionStateChanged', (state) => state === 'CONNECTED');
  await server.restart();
  assert.deepEqual(await reconnecting, ['RECONNECTING', 'INTERRUPTED']);
  assert.deepEqual(await back, ['CONNECTED', 'LOGIN_SUCCESS']);
  await bobBack;
  const [recovery] = await recovered;
  assert.equal(typeof recovery.complete, 'boolean');
  // The channel was joined again by the SDK: messages flow without the app doing anything.
  const got = next(aliceRoom, 'ChannelMessage');
  for (;;) {
    try {
      await bobRoom.sendMessage({ text: 'after the restart' });
      break;
    } catch (error) {
      // The re-join may still be on its way.
      assert.equal(error.code, 'NOT_JOINED');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  const [message, memberId] = await got;
  assert.equal(message.text, 'after the restart');
  assert.equal(memberId, 'r-bob');
});

test('a second login elsewhere aborts the first with REMOTE_LOGIN, without reconnecting', async () => {
  const first = await login('x-alice');
  const aborted = next(first, 'ConnectionStateChanged', (state) => state === 'ABORTED');
  await login('x-alice');
  assert.deepEqual(await aborted, ['ABORTED', 'REMOTE_LOGIN']);
  await new Promise((resolve) => setTimeout(resolve, 700));
  assert.equal(first.connectionState, 'ABORTED');
});
