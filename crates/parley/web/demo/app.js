// The demo page `parley dev` serves at `/`: every part of the SDK a chat or call app uses.
import AgoraRTM from '../src/index.js';
const $ = (id) => document.getElementById(id);
let client;
let channel;
let outgoing;
let incoming;
function text(message) {
    return 'text' in message ? message.text : `[${message.rawMessage.length} bytes]`;
}
function log(list, line, kind = '') {
    const item = document.createElement('li');
    item.textContent = line;
    if (kind) {
        item.className = kind;
    }
    const ul = $(list);
    ul.append(item);
    ul.scrollTop = ul.scrollHeight;
}
function showError(error) {
    const message = error instanceof Error ? `${error.code ?? ''} ${error.message}` : String(error);
    $('login-error').textContent = message.trim();
}
/** The page's defaults: the app `parley dev` serves, and a token for a uid when it needs one. */
async function devConfig() {
    try {
        const response = await fetch('/demo/config.json');
        return response.ok ? await response.json() : {};
    }
    catch {
        return {};
    }
}
async function devToken(uid) {
    try {
        const response = await fetch(`/demo/token?uid=${encodeURIComponent(uid)}`);
        return response.ok ? (await response.json()).token ?? '' : '';
    }
    catch {
        return '';
    }
}
async function refreshMembers() {
    if (!channel?.joined || !client) {
        return;
    }
    const members = await channel.getMembers();
    $('members').textContent = members.sort().join(', ');
    const counts = await client.getChannelMemberCount([channel.channelId]);
    $('member-count').textContent = String(counts[channel.channelId] ?? members.length);
}
async function refreshChannelAttributes() {
    if (!client || !channel) {
        return;
    }
    const attributes = await client.getChannelAttributes(channel.channelId);
    $('channel-attrs').textContent = Object.entries(attributes)
        .map(([key, attribute]) => `${key} = ${attribute.value} (by ${attribute.lastUpdateUserId})`)
        .join('\n');
}
function setCallState(state) {
    $('call-state').textContent = state;
}
async function login() {
    $('login-error').textContent = '';
    const appId = $('app-id').value.trim();
    const uid = $('uid').value.trim();
    let token = $('token').value.trim();
    if (!token) {
        token = await devToken(uid);
    }
    const rtm = AgoraRTM.createInstance(appId);
    rtm.on('ConnectionStateChanged', (state, reason) => {
        $('state').textContent = state;
        $('state').className = `state ${state}`;
        $('state').title = reason;
        if (state === 'ABORTED') {
            showError(`the session ended: ${reason}`);
        }
    });
    rtm.on('MessageFromPeer', (message, peerId) => {
        log('peer-log', `${peerId}: ${text(message)}`);
        if (!$('peer').value) {
            $('peer').value = peerId;
        }
    });
    rtm.on('PeersOnlineStatusChanged', (status) => {
        const peer = $('peer').value.trim();
        if (status[peer]) {
            $('peer-status').textContent = status[peer];
        }
    });
    rtm.on('RemoteInvitationReceived', (invitation) => {
        incoming = invitation;
        $('caller').textContent = invitation.callerId;
        $('incoming').hidden = false;
        setCallState(`incoming call from ${invitation.callerId}`);
        invitation.on('RemoteInvitationCanceled', () => {
            $('incoming').hidden = true;
            setCallState(`${invitation.callerId} canceled the call`);
        });
        invitation.on('RemoteInvitationAccepted', () => setCallState(`in a call with ${invitation.callerId}`));
        invitation.on('RemoteInvitationFailure', (reason) => {
            $('incoming').hidden = true;
            setCallState(`the call failed: ${reason}`);
        });
    });
    try {
        await rtm.login({ uid, token });
    }
    catch (error) {
        showError(error);
        return;
    }
    client = rtm;
    localStorage.setItem('parley-demo', JSON.stringify({ appId, uid }));
    $('me').textContent = uid;
    $('login').hidden = true;
    $('app').hidden = false;
}
async function logout() {
    await client?.logout().catch(() => { });
    client = undefined;
    channel = undefined;
    $('app').hidden = true;
    $('login').hidden = false;
}
async function sendPeer() {
    const peer = $('peer').value.trim();
    const input = $('peer-text');
    if (!client || !peer || !input.value) {
        return;
    }
    const message = input.value;
    input.value = '';
    try {
        const sent = await client.sendMessageToPeer({ text: message }, peer, {
            enableOfflineMessaging: true,
        });
        const how = sent.hasPeerReceived ? '✓' : sent.result === 'CACHED_BY_SERVER' ? '(offline, kept)' : '(not delivered)';
        log('peer-log', `me → ${peer}: ${message} ${how}`, 'mine');
    }
    catch (error) {
        log('peer-log', `not sent: ${String(error.message)}`, 'note');
    }
}
async function watchPeer() {
    const peer = $('peer').value.trim();
    if (!client || !peer) {
        return;
    }
    const watched = await client.queryPeersBySubscriptionOption();
    if (watched.length > 0) {
        await client.unsubscribePeersOnlineStatus(watched);
    }
    await client.subscribePeersOnlineStatus([peer]).catch(() => { });
}
async function join() {
    if (!client) {
        return;
    }
    const id = $('channel').value.trim();
    const joining = client.createChannel(id);
    joining.on('ChannelMessage', (message, memberId) => log('channel-log', `${memberId}: ${text(message)}`));
    joining.on('MemberJoined', (memberId) => {
        log('channel-log', `${memberId} joined`, 'note');
        void refreshMembers();
    });
    joining.on('MemberLeft', (memberId) => {
        log('channel-log', `${memberId} left`, 'note');
        void refreshMembers();
    });
    joining.on('MemberCountUpdated', (count) => {
        $('member-count').textContent = String(count);
    });
    joining.on('AttributesUpdated', () => void refreshChannelAttributes());
    joining.on('Kicked', (reason) => {
        log('channel-log', `you were removed from ${id}${reason ? `: ${reason}` : ''}`, 'note');
        $('join').disabled = false;
        $('leave').disabled = true;
    });
    try {
        await joining.join();
    }
    catch (error) {
        log('channel-log', `join failed: ${String(error.message)}`, 'note');
        return;
    }
    channel = joining;
    $('join').disabled = true;
    $('leave').disabled = false;
    log('channel-log', `joined ${id}`, 'note');
    await refreshMembers();
    await refreshChannelAttributes();
}
async function leave() {
    await channel?.leave().catch(() => { });
    channel = undefined;
    $('members').textContent = '';
    $('member-count').textContent = '0';
    $('join').disabled = false;
    $('leave').disabled = true;
}
async function sendChannel() {
    const input = $('channel-text');
    if (!channel?.joined || !input.value) {
        return;
    }
    const message = input.value;
    input.value = '';
    try {
        await channel.sendMessage({ text: message });
        log('channel-log', `me: ${message}`, 'mine');
    }
    catch (error) {
        log('channel-log', `not sent: ${String(error.message)}`, 'note');
    }
}
async function setUserAttribute() {
    const key = $('user-attr-key').value.trim();
    const value = $('user-attr-value').value;
    if (client && key) {
        await client.addOrUpdateLocalUserAttributes({ [key]: value });
        $('user-attr-uid').value = $('me').textContent ?? '';
        await getUserAttributes();
    }
}
async function getUserAttributes() {
    const uid = $('user-attr-uid').value.trim();
    if (client && uid) {
        const attributes = await client.getUserAttributes(uid);
        $('user-attrs').textContent =
            `${uid}: ` + (Object.entries(attributes).map(([key, value]) => `${key} = ${value}`).join(', ') || '(none)');
    }
}
async function setChannelAttribute() {
    const key = $('channel-attr-key').value.trim();
    const value = $('channel-attr-value').value;
    if (client && channel && key) {
        await client.addOrUpdateChannelAttributes(channel.channelId, { [key]: value }, {
            enableNotificationToChannelMembers: true,
        });
        await refreshChannelAttributes();
    }
}
async function call() {
    const callee = $('callee').value.trim();
    if (!client || !callee) {
        return;
    }
    const invitation = client.createLocalInvitation(callee);
    invitation.content = 'call';
    const ended = (state) => {
        setCallState(state);
        $('cancel-call').hidden = true;
        $('call').disabled = false;
    };
    invitation.on('LocalInvitationReceivedByPeer', () => setCallState(`ringing ${callee}…`));
    invitation.on('LocalInvitationAccepted', () => ended(`${callee} accepted`));
    invitation.on('LocalInvitationRefused', () => ended(`${callee} refused`));
    invitation.on('LocalInvitationCanceled', () => ended('canceled'));
    invitation.on('LocalInvitationFailure', (reason) => ended(`failed: ${reason}`));
    try {
        await invitation.send();
    }
    catch (error) {
        ended(`not sent: ${String(error.message)}`);
        return;
    }
    outgoing = invitation;
    setCallState(`calling ${callee}…`);
    $('cancel-call').hidden = false;
    $('call').disabled = true;
}
async function answer(accept) {
    const invitation = incoming;
    if (!invitation) {
        return;
    }
    $('incoming').hidden = true;
    incoming = undefined;
    await (accept ? invitation.accept() : invitation.refuse()).catch(() => { });
    setCallState(accept ? `in a call with ${invitation.callerId}` : `refused ${invitation.callerId}`);
}
function on(id, event, handler) {
    $(id).addEventListener(event, (e) => {
        e.preventDefault();
        handler().catch((error) => console.error(error));
    });
}
async function start() {
    const saved = JSON.parse(localStorage.getItem('parley-demo') ?? '{}');
    const config = await devConfig();
    $('app-id').value = saved.appId ?? config.appId ?? '';
    $('uid').value = saved.uid ?? '';
    on('login-button', 'click', login);
    on('logout', 'click', logout);
    on('peer-form', 'submit', sendPeer);
    on('peer', 'change', watchPeer);
    on('channel-form', 'submit', join);
    on('leave', 'click', leave);
    on('channel-send-form', 'submit', sendChannel);
    on('user-attr-form', 'submit', setUserAttribute);
    on('user-attr-get-form', 'submit', getUserAttributes);
    on('channel-attr-form', 'submit', setChannelAttribute);
    on('call-form', 'submit', call);
    on('cancel-call', 'click', async () => {
        await outgoing?.cancel().catch(() => { });
    });
    on('accept', 'click', () => answer(true));
    on('refuse', 'click', () => answer(false));
}
void start();
