// The names and shapes of the Agora RTM Web SDK 1.x, as Parley's SDK exposes them.
export const ConnectionState = {
    DISCONNECTED: 'DISCONNECTED',
    CONNECTING: 'CONNECTING',
    CONNECTED: 'CONNECTED',
    RECONNECTING: 'RECONNECTING',
    ABORTED: 'ABORTED',
};
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
};
export const PeerOnlineState = {
    ONLINE: 'ONLINE',
    UNREACHABLE: 'UNREACHABLE',
    OFFLINE: 'OFFLINE',
};
export const MessageType = { TEXT: 'TEXT', RAW: 'RAW' };
export const LocalInvitationState = {
    IDLE: 'IDLE',
    SENT_TO_REMOTE: 'SENT_TO_REMOTE',
    RECEIVED_BY_REMOTE: 'RECEIVED_BY_REMOTE',
    ACCEPTED_BY_REMOTE: 'ACCEPTED_BY_REMOTE',
    REFUSED_BY_REMOTE: 'REFUSED_BY_REMOTE',
    CANCELED: 'CANCELED',
    FAILURE: 'FAILURE',
};
export const RemoteInvitationState = {
    INVITATION_RECEIVED: 'INVITATION_RECEIVED',
    ACCEPT_SENT_TO_LOCAL: 'ACCEPT_SENT_TO_LOCAL',
    REFUSED: 'REFUSED',
    ACCEPTED: 'ACCEPTED',
    CANCELED: 'CANCELED',
    FAILURE: 'FAILURE',
};
export const LocalInvitationFailureReason = {
    UNKNOWN: 'UNKNOWN',
    PEER_NO_RESPONSE: 'PEER_NO_RESPONSE',
    INVITATION_EXPIRE: 'INVITATION_EXPIRE',
    PEER_OFFLINE: 'PEER_OFFLINE',
    NOT_LOGGEDIN: 'NOT_LOGGEDIN',
};
export const RemoteInvitationFailureReason = {
    UNKNOWN: 'UNKNOWN',
    PEER_OFFLINE: 'PEER_OFFLINE',
    ACCEPT_FAILURE: 'ACCEPT_FAILURE',
    INVITATION_EXPIRE: 'INVITATION_EXPIRE',
};
/** A refused request: the protocol's error code and a message. */
export class RtmError extends Error {
    constructor(code, message) {
        super(message);
        this.code = code;
        this.name = 'RtmError';
    }
}
