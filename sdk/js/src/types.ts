// The names and shapes of the Agora RTM Web SDK 1.x, as Parley's SDK exposes them.

export const ConnectionState = {
  DISCONNECTED: 'DISCONNECTED',
  CONNECTING: 'CONNECTING',
  CONNECTED: 'CONNECTED',
  RECONNECTING: 'RECONNECTING',
  ABORTED: 'ABORTED',
} as const;
export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState];

export const ConnectionChangeReason = {
  LOGIN: 'LOGIN',
  LOGIN_SUCCESS: 'LOGIN_SUCCESS',
  LOGIN_FAILURE: 'LOGIN_FAILURE',
  LOGIN_TIMEOUT: 'LOGIN_TIMEOUT',
  INTERRUPTED: 'INTERRUPTED',
  LOGOUT: 'LOGOUT',
  BANNED_BY_SERVER: 'BANNED_BY_SERVER',
  REMOTE_LOGIN: 'REMOTE_LOGIN',
  TOKEN_EXPIRED: 'TOKEN_EXPIRED',
} as const;
export type ConnectionChangeReason =
  (typeof ConnectionChangeReason)[keyof typeof ConnectionChangeReason];

export const PeerOnlineState = {
  ONLINE: 'ONLINE',
  UNREACHABLE: 'UNREACHABLE',
  OFFLINE: 'OFFLINE',
} as const;
export type PeerOnlineState = (typeof PeerOnlineState)[keyof typeof PeerOnlineState];

export const MessageType = { TEXT: 'TEXT', RAW: 'RAW' } as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export const LocalInvitationState = {
  IDLE: 'IDLE',
  SENT_TO_REMOTE: 'SENT_TO_REMOTE',
  RECEIVED_BY_REMOTE: 'RECEIVED_BY_REMOTE',
  ACCEPTED_BY_REMOTE: 'ACCEPTED_BY_REMOTE',
  REFUSED_BY_REMOTE: 'REFUSED_BY_REMOTE',
  CANCELED: 'CANCELED',
  FAILURE: 'FAILURE',
} as const;
export type LocalInvitationState = (typeof LocalInvitationState)[keyof typeof LocalInvitationState];

export const RemoteInvitationState = {
  INVITATION_RECEIVED: 'INVITATION_RECEIVED',
  ACCEPT_SENT_TO_LOCAL: 'ACCEPT_SENT_TO_LOCAL',
  REFUSED: 'REFUSED',
  ACCEPTED: 'ACCEPTED',
  CANCELED: 'CANCELED',
  FAILURE: 'FAILURE',
} as const;
export type RemoteInvitationState =
  (typeof RemoteInvitationState)[keyof typeof RemoteInvitationState];

export const LocalInvitationFailureReason = {
  UNKNOWN: 'UNKNOWN',
  PEER_NO_RESPONSE: 'PEER_NO_RESPONSE',
  INVITATION_EXPIRE: 'INVITATION_EXPIRE',
  PEER_OFFLINE: 'PEER_OFFLINE',
  NOT_LOGGEDIN: 'NOT_LOGGEDIN',
} as const;
export type LocalInvitationFailureReason =
  (typeof LocalInvitationFailureReason)[keyof typeof LocalInvitationFailureReason];

export const RemoteInvitationFailureReason = {
  UNKNOWN: 'UNKNOWN',
  PEER_OFFLINE: 'PEER_OFFLINE',
  ACCEPT_FAILURE: 'ACCEPT_FAILURE',
  INVITATION_EXPIRE: 'INVITATION_EXPIRE',
} as const;
export type RemoteInvitationFailureReason =
  (typeof RemoteInvitationFailureReason)[keyof typeof RemoteInvitationFailureReason];

/** A message: text, or raw bytes with an optional description. */
export type RtmMessage = RtmTextMessage | RtmRawMessage;

export interface RtmTextMessage {
  text: string;
  messageType?: 'TEXT';
}

export interface RtmRawMessage {
  rawMessage: Uint8Array;
  description?: string;
  messageType?: 'RAW';
}

export interface SendMessageOptions {
  enableOfflineMessaging?: boolean;
  enableHistoricalMessaging?: boolean;
}

/** What `sendMessageToPeer` resolves to. */
export interface PeerMessageSendResult {
  /** Agora's field: whether a client of the peer acknowledged the message. */
  hasPeerReceived: boolean;
  /** Parley: RECEIVED_BY_PEER, CACHED_BY_SERVER or PEER_UNREACHABLE. */
  result: 'RECEIVED_BY_PEER' | 'CACHED_BY_SERVER' | 'PEER_UNREACHABLE';
  messageId: string;
  serverReceivedTs: number;
}

export interface ReceivedMessageProperties {
  serverReceivedTs: number;
  isOfflineMessage?: boolean;
  /** Parley: the message's id (a decimal string). */
  messageId: string;
  /** Parley, channel messages: the channel sequence number. */
  seq?: number;
}

/** A channel attribute as `getChannelAttributes` gives it. */
export interface RtmChannelAttribute {
  value: string;
  lastUpdateUserId: string;
  lastUpdateTs: number;
}

export interface ChannelAttributeOptions {
  enableNotificationToChannelMembers?: boolean;
}

/** Parley's history query (Agora's 1.x SDK has none). */
export interface HistoryQuery {
  peerId?: string;
  channelId?: string;
  startTime?: number;
  endTime?: number;
  limit?: number;
  order?: 'ASC' | 'DESC';
  cursor?: string;
}

export interface HistoryMessage {
  messageId: string;
  from: string;
  message: RtmMessage;
  serverReceivedTs: number;
  seq?: number;
}

/** A refused request: the protocol's error code and a message. */
export class RtmError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'RtmError';
  }
}

/** A WebSocket constructor: the browser's, or one from a package under Node 20 (e.g. `ws`). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

/** `createInstance`'s config: Agora's fields are accepted and ignored; Parley's are below. */
export interface RtmConfig {
  enableLogUpload?: boolean;
  logFilter?: unknown;
  enableCloudProxy?: boolean;
  /** Parley: the edge's WebSocket URL, e.g. `ws://127.0.0.1:8080/v1/ws`. */
  serverUrl?: string;
  /** Parley: more edges to try, in order, when one cannot be reached. */
  fallbackUrls?: string[];
  /** Parley: the WebSocket implementation (default: the global `WebSocket`). */
  WebSocket?: WebSocketConstructor;
  /** Parley: how long a request may wait for its reply (ms, default 10000). */
  requestTimeout?: number;
  /** Parley: the longest wait between reconnect attempts (ms, default 8000). */
  maxReconnectDelay?: number;
}
