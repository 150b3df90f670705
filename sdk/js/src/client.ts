// RtmClient: login, peer messages, channels, attributes, online status, invitations and history,
// with reconnect (backoff, fallback edges) and channel recovery built in.

import { RtmChannel, attributesFromWire } from './channel.js';
import { EventEmitter } from './emitter.js';
import { LocalInvitation, RemoteInvitation } from './invitation.js';
import { createMessage, fromWire, toWire } from './messages.js';
import { Transport, type WireEvent } from './transport.js';
import {
  ConnectionChangeReason,
  ConnectionState,
  type ChannelAttributeOptions,
  type HistoryMessage,
  type HistoryQuery,
  type PeerMessageSendResult,
  type PeerOnlineState,
  type ReceivedMessageProperties,
  RtmError,
  type RtmChannelAttribute,
  type RtmConfig,
  type RtmMessage,
  type SendMessageOptions,
  type WebSocketConstructor,
} from './types.js';

export type RtmClientEvents = {
  ConnectionStateChanged: (newState: ConnectionState, reason: ConnectionChangeReason) => void;
  MessageFromPeer: (message: RtmMessage, peerId: string, props: ReceivedMessageProperties) => void;
  PeersOnlineStatusChanged: (status: Record<string, PeerOnlineState>) => void;
  RemoteInvitationReceived: (invitation: RemoteInvitation) => void;
  TokenExpired: () => void;
  TokenPrivilegeWillExpire: () => void;
};

/** Reasons the server ends a session, by close code (4000 + the reason's number). */
const SERVER_REASONS: Record<number, { state: ConnectionState; reason: ConnectionChangeReason }> = {
  4004: { state: 'DISCONNECTED', reason: 'LOGIN_TIMEOUT' },
  4007: { state: 'ABORTED', reason: 'BANNED_BY_SERVER' },
  4008: { state: 'ABORTED', reason: 'REMOTE_LOGIN' },
  4009: { state: 'ABORTED', reason: 'TOKEN_EXPIRED' },
  4011: { state: 'ABORTED', reason: 'LOGIN_FAILURE' },
};

const RECONNECT_FIRST_DELAY = 500;
/** Peer message ids remembered to drop repeats after a reconnect. */
const SEEN_PEER_IDS = 1000;

export class RtmClient extends EventEmitter<RtmClientEvents> {
  /** The connection state, as last told with ConnectionStateChanged. */
  connectionState: ConnectionState = ConnectionState.DISCONNECTED;

  private readonly urls: string[];
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly requestTimeout: number;
  private readonly maxReconnectDelay: number;
  private transport: Transport | undefined;
  private uid = '';
  private token = '';
  private loggingOut = false;
  private readonly channels = new Map<string, RtmChannel>();
  private readonly subscriptions = new Set<string>();
  private readonly localInvitations = new Map<string, LocalInvitation>();
  private readonly remoteInvitations = new Map<string, RemoteInvitation>();
  /** Invitation events that came before their invitation's `send` resolved. */
  private readonly early = new Map<string, WireEvent[]>();
  private readonly seenPeerIds = new Set<string>();

  constructor(
    readonly appId: string,
    config: RtmConfig = {},
  ) {
    super();
    const serverUrl =
      config.serverUrl ??
      (typeof location !== 'undefined'
        ? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`
        : 'ws://127.0.0.1:8080/v1/ws');
    this.urls = [serverUrl, ...(config.fallbackUrls ?? [])];
    const ambient = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    const WebSocketImpl = config.WebSocket ?? ambient;
    if (!WebSocketImpl) {
      throw new RtmError(
        'INVALID_ARGUMENT',
        'no WebSocket here: pass one as config.WebSocket (e.g. from the ws package)',
      );
    }
    this.WebSocketImpl = WebSocketImpl;
    this.requestTimeout = config.requestTimeout ?? 10_000;
    this.maxReconnectDelay = config.maxReconnectDelay ?? 8_000;
  }

  // ---- sessions ----------------------------------------------------------------------------

  async login(options: { uid: string; token?: string }): Promise<void> {
    if (this.transport) {
      throw new RtmError('ALREADY_LOGGED_IN', 'already logged in');
    }
    this.uid = options.uid;
    this.token = options.token ?? '';
    this.loggingOut = false;
    this.setState(ConnectionState.CONNECTING, ConnectionChangeReason.LOGIN);
    try {
      await this.connect();
    } catch (error) {
      this.setState(ConnectionState.DISCONNECTED, ConnectionChangeReason.LOGIN_FAILURE);
      throw error;
    }
    this.setState(ConnectionState.CONNECTED, ConnectionChangeReason.LOGIN_SUCCESS);
  }

  async logout(): Promise<void> {
    const transport = this.transport;
    if (!transport) {
      throw new RtmError('NOT_LOGGED_IN', 'not logged in');
    }
    this.loggingOut = true;
    try {
      await transport.request('logout');
    } finally {
      this.transport = undefined;
      transport.close();
      this.channels.clear();
      this.subscriptions.clear();
      this.setState(ConnectionState.DISCONNECTED, ConnectionChangeReason.LOGOUT);
    }
  }

  async renewToken(token: string): Promise<void> {
    await this.request('renewToken', { token });
    this.token = token;
  }

  // ---- messages ----------------------------------------------------------------------------

  createMessage(message: {
    text?: string;
    rawMessage?: Uint8Array;
    description?: string;
    messageType?: string;
  }): RtmMessage {
    return createMessage(message);
  }

  async sendMessageToPeer(
    message: RtmMessage | string,
    peerId: string,
    options: SendMessageOptions = {},
  ): Promise<PeerMessageSendResult> {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const sent = await this.request<any>('sendMessageToPeer', {
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

  createChannel(channelId: string): RtmChannel {
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

  async getChannelMemberCount(channelIds: string[]): Promise<Record<string, number>> {
    const result = await this.request<{ counts?: { channelId: string; memberCount?: number }[] }>(
      'getChannelMemberCount',
      { channelIds },
    );
    const counts: Record<string, number> = {};
    for (const count of result.counts ?? []) {
      counts[count.channelId] = Number(count.memberCount ?? 0);
    }
    return counts;
  }

  // ---- online status -----------------------------------------------------------------------

  async queryPeersOnlineStatus(peerIds: string[]): Promise<Record<string, boolean>> {
    const result = await this.request<{ status?: Record<string, boolean> }>(
      'queryPeersOnlineStatus',
      { peerIds },
    );
    const status: Record<string, boolean> = {};
    for (const peerId of peerIds) {
      status[peerId] = Boolean(result.status?.[peerId]);
    }
    return status;
  }

  async subscribePeersOnlineStatus(peerIds: string[]): Promise<void> {
    await this.request('subscribePeersOnlineStatus', { peerIds });
    for (const peerId of peerIds) {
      this.subscriptions.add(peerId);
    }
  }

  async unsubscribePeersOnlineStatus(peerIds: string[]): Promise<void> {
    await this.request('unsubscribePeersOnlineStatus', { peerIds });
    for (const peerId of peerIds) {
      this.subscriptions.delete(peerId);
    }
  }

  /** The peers whose online status this client is subscribed to. */
  async queryPeersBySubscriptionOption(): Promise<string[]> {
    return [...this.subscriptions];
  }

  // ---- user attributes ---------------------------------------------------------------------

  async setLocalUserAttributes(attributes: Record<string, string>): Promise<void> {
    await this.request('setLocalUserAttributes', { attributes });
  }

  async addOrUpdateLocalUserAttributes(attributes: Record<string, string>): Promise<void> {
    await this.request('addOrUpdateLocalUserAttributes', { attributes });
  }

  async deleteLocalUserAttributesByKeys(keys: string[]): Promise<void> {
    await this.request('deleteLocalUserAttributesByKeys', { keys });
  }

  async clearLocalUserAttributes(): Promise<void> {
    await this.request('clearLocalUserAttributes');
  }

  async getUserAttributes(userId: string): Promise<Record<string, string>> {
    return this.getUserAttributesByKeys(userId, []);
  }

  async getUserAttributesByKeys(userId: string, keys: string[]): Promise<Record<string, string>> {
    const result = await this.request<{ attributes?: Record<string, string> }>(
      'getUserAttributes',
      { userId, keys },
    );
    return result.attributes ?? {};
  }

  // ---- channel attributes ------------------------------------------------------------------

  async setChannelAttributes(
    channelId: string,
    attributes: Record<string, string>,
    options: ChannelAttributeOptions = {},
  ): Promise<void> {
    await this.request('setChannelAttributes', {
      channelId,
      attributes,
      enableNotificationToChannelMembers: options.enableNotificationToChannelMembers ?? false,
    });
  }

  async addOrUpdateChannelAttributes(
    channelId: string,
    attributes: Record<string, string>,
    options: ChannelAttributeOptions = {},
  ): Promise<void> {
    await this.request('addOrUpdateChannelAttributes', {
      channelId,
      attributes,
      enableNotificationToChannelMembers: options.enableNotificationToChannelMembers ?? false,
    });
  }

  async deleteChannelAttributesByKeys(
    channelId: string,
    keys: string[],
    options: ChannelAttributeOptions = {},
  ): Promise<void> {
    await this.request('deleteChannelAttributesByKeys', {
      channelId,
      keys,
      enableNotificationToChannelMembers: options.enableNotificationToChannelMembers ?? false,
    });
  }

  async clearChannelAttributes(
    channelId: string,
    options: ChannelAttributeOptions = {},
  ): Promise<void> {
    await this.request('clearChannelAttributes', {
      channelId,
      enableNotificationToChannelMembers: options.enableNotificationToChannelMembers ?? false,
    });
  }

  async getChannelAttributes(channelId: string): Promise<Record<string, RtmChannelAttribute>> {
    return this.getChannelAttributesByKeys(channelId, []);
  }

  async getChannelAttributesByKeys(
    channelId: string,
    keys: string[],
  ): Promise<Record<string, RtmChannelAttribute>> {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const result = await this.request<any>('getChannelAttributes', { channelId, keys });
    return attributesFromWire(result.attributes);
  }

  // ---- invitations -------------------------------------------------------------------------

  createLocalInvitation(calleeId: string): LocalInvitation {
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
  async queryHistory(query: HistoryQuery): Promise<{ messages: HistoryMessage[]; next: string }> {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const result = await this.request<any>('queryHistory', {
      ...conversation(query),
      startTime: String(query.startTime ?? 0),
      endTime: String(query.endTime ?? 0),
      limit: query.limit ?? 0,
      order: query.order ?? 'ASC',
      cursor: query.cursor ?? '',
    });
    return {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      messages: (result.messages ?? []).map((message: any) => ({
        messageId: String(message.messageId),
        from: message.from,
        message: fromWire(message.message),
        serverReceivedTs: Number(message.serverReceivedTs ?? 0),
        seq: message.seq === undefined ? undefined : Number(message.seq),
      })),
      next: result.next ?? '',
    };
  }

  async countHistory(query: HistoryQuery): Promise<number> {
    const result = await this.request<{ count?: string }>('countHistory', {
      ...conversation(query),
      startTime: String(query.startTime ?? 0),
      endTime: String(query.endTime ?? 0),
    });
    return Number(result.count ?? 0);
  }

  // ---- the connection ----------------------------------------------------------------------

  private request<T = unknown>(op: string, fields: object = {}): Promise<T> {
    if (!this.transport || this.connectionState !== ConnectionState.CONNECTED) {
      return Promise.reject(new RtmError('NOT_LOGGED_IN', 'not connected'));
    }
    return this.transport.request<T>(op, fields);
  }

  private setState(state: ConnectionState, reason: ConnectionChangeReason): void {
    this.connectionState = state;
    this.emit('ConnectionStateChanged', state, reason);
  }

  /** Opens a socket to the first edge that answers and logs in on it. */
  private async connect(): Promise<void> {
    let lastError: RtmError | undefined;
    for (const url of this.urls) {
      let transport: Transport;
      try {
        transport = await Transport.open(this.WebSocketImpl, url, this.requestTimeout, {
          onEvent: (event) => this.onEvent(event),
          onClose: (code) => this.onClose(transport, code),
        });
      } catch (error) {
        lastError = error as RtmError;
        continue;
      }
      try {
        const session = await transport.request<{ heartbeatIntervalMs?: number }>('login', {
          appId: this.appId,
          uid: this.uid,
          token: this.token,
        });
        transport.keepAlive(Number(session.heartbeatIntervalMs ?? 5000));
        this.transport = transport;
        return;
      } catch (error) {
        transport.close();
        throw error;
      }
    }
    throw lastError ?? new RtmError('UNAVAILABLE', 'no server to connect to');
  }

  private onClose(transport: Transport, code: number): void {
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
  private async reconnect(): Promise<void> {
    let delay = RECONNECT_FIRST_DELAY;
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (this.loggingOut) {
        return;
      }
      try {
        await this.connect();
        break;
      } catch (error) {
        const code = (error as RtmError).code;
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
      this.request('subscribePeersOnlineStatus', { peerIds: [...this.subscriptions] }).catch(
        (error) => console.warn('re-subscribing to online status', error),
      );
    }
  }

  private onEvent(event: WireEvent): void {
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
        const invitation = new RemoteInvitation(
          body.callerId,
          body.content ?? '',
          body.channelId ?? '',
          id,
          { request: (op, fields) => this.request(op, fields), sent: () => {} },
        );
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
          } else {
            this.early.set(id, [...(this.early.get(id) ?? []), event]);
          }
        } else if (kind.startsWith('remoteInvitation')) {
          this.remoteInvitations.get(String(body.invitationId))?.handle(kind, body);
        }
    }
  }
}

function conversation(query: HistoryQuery): { peerId: string } | { channelId: string } {
  if (query.peerId !== undefined) {
    return { peerId: query.peerId };
  }
  if (query.channelId !== undefined) {
    return { channelId: query.channelId };
  }
  throw new RtmError('INVALID_ARGUMENT', 'a history query names a peerId or a channelId');
}
