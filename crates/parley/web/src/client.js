// RtmClient: login, peer messages, channels, attributes, online status, invitations and history,
// with reconnect (backoff, fallback edges) and channel recovery built in.
import { RtmChannel, attributesFromWire } from './channel.js';
import { EventEmitter } from './emitter.js';
import { LocalInvitation, RemoteInvitation } from './invitation.js';
import { createMessage, fromWire, toWire } from './messages.js';
import { Transport } from './transport.js';
import { ConnectionChangeReason, ConnectionState, RtmError, } from './types.js';
/** Reasons the server ends a session, by close code (4000 + the reason's number). */
const SERVER_REASONS = {
    4004: { state: 'DISCONNECTED', reason: 'LOGIN_TIMEOUT' },
    4007: { state: 'ABORTED', reason: 'BANNED_BY_SERVER' },
    4008: { state: 'ABORTED', reason: 'REMOTE_LOGIN' },
    4009: { state: 'ABORTED', reason: 'TOKEN_EXPIRED' },
    4011: { state: 'ABORTED', reason: 'LOGIN_FAILURE' },
};
const RECONNECT_FIRST_DELAY = 500;
/** Peer message ids remembered to drop repeats after a reconnect. */
const SEEN_PEER_IDS = 1000;
export class RtmClient extends EventEmitter {
    constructor(appId, config = {}) {
        super();
        this.appId = appId;
        /** The connection state, as last told with ConnectionStateChanged. */
        this.connectionState = ConnectionState.DISCONNECTED;
        this.uid = '';
        this.token = '';
        this.loggingOut = false;
        this.channels = new Map();
        this.subscriptions = new Set();
        this.localInvitations = new Map();
        this.remoteInvitations = new Map();
        /** Invitation events that came before their invitation's `send` resolved. */
        this.early = new Map();
        this.seenPeerIds = new Set();
        const serverUrl = config.serverUrl ??
            (typeof location !== 'undefined'
                ? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`
                : 'ws://127.0.0.1:8080/v1/ws');
        this.urls = [serverUrl, ...(config.fallbackUrls ?? [])];
        const ambient = globalThis.WebSocket;
        const WebSocketImpl = config.WebSocket ?? ambient;
        if (!WebSocketImpl) {
            throw new RtmError('INVALID_ARGUMENT', 'no WebSocket here: pass one as config.WebSocket (e.g. from the ws package)');
        }
        this.WebSocketImpl = WebSocketImpl;
        this.requestTimeout = config.requestTimeout ?? 10000;
        this.maxReconnectDelay = config.maxReconnectDelay ?? 8000;
    }
    // ---- sessions ----------------------------------------------------------------------------
    async login(options) {
        if (this.transport) {
            throw new RtmError('ALREADY_LOGGED_IN', 'already logged in');
        }
        this.uid = options.uid;
        this.token = options.token ?? '';
        this.loggingOut = false;
        this.setState(ConnectionState.CONNECTING, ConnectionChangeReason.LOGIN);
        try {
            await this.connect();
        }
        catch (error) {
            this.setState(ConnectionState.DISCONNECTED, ConnectionChangeReason.LOGIN_FAILURE);
            throw error;
        }
        this.setState(ConnectionState.CONNECTED, ConnectionChangeReason.LOGIN_SUCCESS);
    }
    async logout() {
        const transport = this.transport;
        if (!transport) {
            throw new RtmError('NOT_LOGGED_IN', 'not logged in');
        }
        this.loggingOut = true;
        try {
            await transport.request('logout');
        }
        finally {
            this.transport = undefined;
            transport.close();
            this.channels.clear();
            this.subscriptions.clear();
            this.setState(ConnectionState.DISCONNECTED, ConnectionChangeReason.LOGOUT);
        }
    }
    async renewToken(token) {
        await this.request('renewToken', { token });
        this.token = token;
    }
    // ---- messages ----------------------------------------------------------------------------
    createMessage(message) {
        return createMessage(message);
    }
    async sendMessageToPeer(message, peerId, options = {}) {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const sent = await this.request('sendMessageToPeer', {
            peerId,
            message: toWire(message),
            enableOfflineMessaging: options.enableOfflineMessaging ?? false,
            enableHistoricalMessaging: options.enableHistoricalMessaging ?? false,
        });
        return {
            hasPeerReceived: sent.result === 'RECEIVED_BY_PEER',
            result: sent.result,
            messageId: String(sent.messageId),
            serverReceivedTs: Number(sent.serverReceivedTs ?? 0),
        };
    }
    // ---- channels ----------------------------------------------------------------------------
    createChannel(channelId) {
        return new RtmChannel(channelId, {
            request: (op, fields) => this.request(op, fields),
            joined: (channel) => this.channels.set(channel.channelId, channel),
            left: (channel) => {
                if (this.channels.get(channel.channelId) === channel) {
                    this.channels.delete(channel.channelId);
                }
            },
        });
    }
    async getChannelMemberCount(channelIds) {
        const result = await this.request('getChannelMemberCount', { channelIds });
        const counts = {};
        for (const count of result.counts ?? []) {
            counts[count.channelId] = Number(count.memberCount ?? 0);
        }
        return counts;
    }
    // ---- online status -----------------------------------------------------------------------
    async queryPeersOnlineStatus(peerIds) {
        const result = await this.request('queryPeersOnlineStatus', { peerIds });
        const status = {};
        for (const peerId of peerIds) {
            status[peerId] = Boolean(result.status?.[peerId]);
        }
        return status;
    }
    async subscribePeersOnlineStatus(peerIds) {
        await this.request('subscribePeersOnlineStatus', { peerIds });
        for (const peerId of peerIds) {
            this.subscriptions.add(peerId);
        }
    }
    async unsubscribePeersOnlineStatus(peerIds) {
        await this.request('unsubscribePeersOnlineStatus', { peerIds });
        for (const peerId of peerIds) {
            this.subscriptions.delete(peerId);
        }
    }
    /** The peers whose online status this client is subscribed to. */
    async queryPeersBySubscriptionOption() {
        return [...this.subscriptions];
    }
    // ---- user attributes ---------------------------------------------------------------------
    async setLocalUserAttributes(attributes) {
        await this.request('setLocalUserAttributes', { attributes });
    }
    async addOrUpdateLocalUserAttributes(attributes) {
        await this.request('addOrUpdateLocalUserAttributes', { attributes });
    }
    async deleteLocalUserAttributesByKeys(keys) {
        await this.request('deleteLocalUserAttributesByKeys', { keys });
    }
    async clearLocalUserAttributes() {
        await this.request('clearLocalUserAttributes');
    }
    async getUserAttributes(userId) {
        return this.getUserAttributesByKeys(userId, []);
    }
    async getUserAttributesByKeys(userId, keys) {
        const result = await this.request('getUserAttributes', { userId, keys });
        return result.attributes ?? {};
    }
    // ---- channel attributes ------------------------------------------------------------------
    async setChannelAttributes(channelId, attributes, options = {}) {
        await this.request('setChannelAttributes', {
            channelId,
            attributes,
            enableNotificationToChannelMembers: options.enableNotificationToChannelMembers ?? false,
        });
    }
    async addOrUpdateChannelAttributes(channelId, attributes, options = {}) {
        await this.request('addOrUpdateChannelAttributes', {
            channelId,
            attributes,
            enableNotificationToChannelMembers: options.enableNotificationToChannelMembers ?? false,
        });
    }
    async deleteChannelAttributesByKeys(channelId, keys, options = {}) {
        await this.request('deleteChannelAttributesByKeys', {
            channelId,
            keys,
            enableNotificationToChannelMembers: options.enableNotificationToChannelMembers ?? false,
        });
    }
    async clearChannelAttributes(channelId, options = {}) {
        await this.request('clearChannelAttributes', {
            channelId,
            enableNotificationToChannelMembers: options.enableNotificationToChannelMembers ?? false,
        });
    }
    async getChannelAttributes(channelId) {
        return this.getChannelAttributesByKeys(channelId, []);
    }
    async getChannelAttributesByKeys(channelId, keys) {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const result = await this.request('getChannelAttributes', { channelId, keys });
        return attributesFromWire(result.attributes);
    }
    // ---- invitations -------------------------------------------------------------------------
    createLocalInvitation(calleeId) {
        return new LocalInvitation(calleeId, {
            request: (op, fields) => this.request(op, fields),
            sent: (invitation, invitationId) => {
                this.localInvitations.set(invitationId, invitation);
                for (const event of this.early.get(invitationId) ?? []) {
                    invitation.handle(event.kind, event.body);
                }
                this.early.delete(invitationId);
            },
        });
    }
    // ---- history (Parley) --------------------------------------------------------------------
    /** A page of stored messages with a peer or in a joined channel, and the next page's cursor. */
    async queryHistory(query) {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const result = await this.request('queryHistory', {
            ...conversation(query),
            startTime: String(query.startTime ?? 0),
            endTime: String(query.endTime ?? 0),
            limit: query.limit ?? 0,
            order: query.order ?? 'ASC',
            cursor: query.cursor ?? '',
        });
        return {
            // eslint-disable-next-line @typescript-eslint/no-explicit-any
            messages: (result.messages ?? []).map((message) => ({
                messageId: String(message.messageId),
                from: message.from,
                message: fromWire(message.message),
                serverReceivedTs: Number(message.serverReceivedTs ?? 0),
                seq: message.seq === undefined ? undefined : Number(message.seq),
            })),
            next: result.next ?? '',
        };
    }
    async countHistory(query) {
        const result = await this.request('countHistory', {
            ...conversation(query),
            startTime: String(query.startTime ?? 0),
            endTime: String(query.endTime ?? 0),
        });
        return Number(result.count ?? 0);
    }
    // ---- the connection ----------------------------------------------------------------------
    request(op, fields = {}) {
        if (!this.transport || this.connectionState !== ConnectionState.CONNECTED) {
            return Promise.reject(new RtmError('NOT_LOGGED_IN', 'not connected'));
        }
        return this.transport.request(op, fields);
    }
    setState(state, reason) {
        this.connectionState = state;
        this.emit('ConnectionStateChanged', state, reason);
    }
    /** Opens a socket to the first edge that answers and logs in on it. */
    async connect() {
        let lastError;
        for (const url of this.urls) {
            let transport;
            try {
                transport = await Transport.open(this.WebSocketImpl, url, this.requestTimeout, {
                    onEvent: (event) => this.onEvent(event),
                    onClose: (code) => this.onClose(transport, code),
                });
            }
            catch (error) {
                lastError = error;
                continue;
            }
            try {
                const session = await transport.request('login', {
                    appId: this.appId,
                    uid: this.uid,
                    token: this.token,
                });
                transport.keepAlive(Number(session.heartbeatIntervalMs ?? 5000));
                this.transport = transport;
                return;
            }
            catch (error) {
                transport.close();
                throw error;
            }
        }
        throw lastError ?? new RtmError('UNAVAILABLE', 'no server to connect to');
    }
    onClose(transport, code) {
        if (this.transport !== transport || this.loggingOut) {
            return;
        }
        this.transport = undefined;
        const ended = SERVER_REASONS[code];
        if (ended?.state === ConnectionState.ABORTED) {
            if (ended.reason === ConnectionChangeReason.TOKEN_EXPIRED) {
                this.emit('TokenExpired');
            }
            this.setState(ConnectionState.ABORTED, ended.reason);
            return;
        }
        this.setState(ConnectionState.RECONNECTING, ConnectionChangeReason.INTERRUPTED);
        void this.reconnect();
    }
    /** Logs in again with backoff, then joins the channels again and resumes their messages. */
    async reconnect() {
        let delay = RECONNECT_FIRST_DELAY;
        for (;;) {
            await new Promise((resolve) => setTimeout(resolve, delay));
            if (this.loggingOut) {
                return;
            }
            try {
                await this.connect();
                break;
            }
            catch (error) {
                const code = error.code;
                if (code === 'INVALID_TOKEN' || code === 'TOKEN_EXPIRED' || code === 'BANNED') {
                    this.setState(ConnectionState.ABORTED, ConnectionChangeReason.LOGIN_FAILURE);
                    return;
                }
                delay = Math.min(delay * 2, this.maxReconnectDelay);
            }
        }
        this.setState(ConnectionState.CONNECTED, ConnectionChangeReason.LOGIN_SUCCESS);
        for (const channel of [...this.channels.values()]) {
            channel.rejoin().catch((error) => console.warn(`re-join ${channel.channelId}`, error));
        }
        if (this.subscriptions.size > 0) {
            this.request('subscribePeersOnlineStatus', { peerIds: [...this.subscriptions] }).catch((error) => console.warn('re-subscribing to online status', error));
        }
    }
    onEvent(event) {
        const { kind, body } = event;
        if (body.channelId !== undefined && kind !== 'remoteInvitationReceived') {
            this.channels.get(body.channelId)?.handle(kind, body);
            return;
        }
        switch (kind) {
            case 'messageFromPeer': {
                const id = String(body.messageId);
                this.transport?.receipt(id);
                if (this.seenPeerIds.has(id)) {
                    return;
                }
                this.seenPeerIds.add(id);
                if (this.seenPeerIds.size > SEEN_PEER_IDS) {
                    const oldest = this.seenPeerIds.values().next().value;
                    if (oldest !== undefined) {
                        this.seenPeerIds.delete(oldest);
                    }
                }
                this.emit('MessageFromPeer', fromWire(body.message), body.peerId, {
                    serverReceivedTs: Number(body.serverReceivedTs ?? 0),
                    isOfflineMessage: Boolean(body.isOfflineMessage),
                    messageId: id,
                });
                break;
            }
            case 'peersOnlineStatusChanged':
                this.emit('PeersOnlineStatusChanged', body.status ?? {});
                break;
            case 'tokenPrivilegeWillExpire':
                this.emit('TokenPrivilegeWillExpire');
                break;
            case 'remoteInvitationReceived': {
                const id = String(body.invitationId);
                this.transport?.receipt(id);
                if (this.remoteInvitations.has(id)) {
                    return;
                }
                const invitation = new RemoteInvitation(body.callerId, body.content ?? '', body.channelId ?? '', id, { request: (op, fields) => this.request(op, fields), sent: () => { } });
                this.remoteInvitations.set(id, invitation);
                this.emit('RemoteInvitationReceived', invitation);
                break;
            }
            default:
                if (kind.startsWith('localInvitation')) {
                    const id = String(body.invitationId);
                    const invitation = this.localInvitations.get(id);
                    if (invitation) {
                        invitation.handle(kind, body);
                    }
                    else {
                        this.early.set(id, [...(this.early.get(id) ?? []), event]);
                    }
                }
                else if (kind.startsWith('remoteInvitation')) {
                    this.remoteInvitations.get(String(body.invitationId))?.handle(kind, body);
                }
        }
    }
}
function conversation(query) {
    if (query.peerId !== undefined) {
        return { peerId: query.peerId };
    }
    if (query.channelId !== undefined) {
        return { channelId: query.channelId };
    }
    throw new RtmError('INVALID_ARGUMENT', 'a history query names a peerId or a channelId');
}
