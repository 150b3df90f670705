// Call invitations: LocalInvitation (sent) and RemoteInvitation (received), as Agora shapes them.
import { EventEmitter } from './emitter.js';
import { LocalInvitationFailureReason, LocalInvitationState, RemoteInvitationFailureReason, RemoteInvitationState, RtmError, } from './types.js';
export class LocalInvitation extends EventEmitter {
    constructor(calleeId, host) {
        super();
        this.calleeId = calleeId;
        this.host = host;
        this.content = '';
        this.channelId = '';
        /** The callee's answer, once it accepted or refused. */
        this.response = '';
        this.state = LocalInvitationState.IDLE;
        /** Parley: the id the server gave it (a decimal string), once sent. */
        this.invitationId = '';
    }
    async send() {
        if (this.state !== LocalInvitationState.IDLE) {
            throw new RtmError('INVITATION_ALREADY_SENT', 'this invitation was sent already');
        }
        const sent = await this.host.request('sendLocalInvitation', {
            calleeId: this.calleeId,
            content: this.content,
            channelId: this.channelId,
        });
        this.invitationId = String(sent.invitationId);
        this.state = LocalInvitationState.SENT_TO_REMOTE;
        this.host.sent(this, this.invitationId);
    }
    async cancel() {
        await this.host.request('cancelLocalInvitation', { invitationId: this.invitationId });
    }
    /** An event about this invitation, from the client. */
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    handle(kind, body) {
        switch (kind) {
            case 'localInvitationReceivedByPeer':
                this.state = LocalInvitationState.RECEIVED_BY_REMOTE;
                this.emit('LocalInvitationReceivedByPeer');
                break;
            case 'localInvitationAccepted':
                this.state = LocalInvitationState.ACCEPTED_BY_REMOTE;
                this.response = body.response ?? '';
                this.emit('LocalInvitationAccepted', this.response);
                break;
            case 'localInvitationRefused':
                this.state = LocalInvitationState.REFUSED_BY_REMOTE;
                this.response = body.response ?? '';
                this.emit('LocalInvitationRefused', this.response);
                break;
            case 'localInvitationCanceled':
                this.state = LocalInvitationState.CANCELED;
                this.emit('LocalInvitationCanceled');
                break;
            case 'localInvitationFailure':
                this.state = LocalInvitationState.FAILURE;
                this.emit('LocalInvitationFailure', localFailure(body.reason));
                break;
        }
    }
}
function localFailure(reason) {
    switch (reason) {
        case 'PEER_OFFLINE':
        case 'PEER_NO_RESPONSE':
        case 'INVITATION_EXPIRE':
        case 'NOT_LOGGEDIN':
            return reason;
        default:
            return LocalInvitationFailureReason.UNKNOWN;
    }
}
export class RemoteInvitation extends EventEmitter {
    constructor(callerId, content, channelId, 
    /** Parley: the invitation's id (a decimal string). */
    invitationId, host) {
        super();
        this.callerId = callerId;
        this.content = content;
        this.channelId = channelId;
        this.invitationId = invitationId;
        this.host = host;
        /** The answer to send with `accept` or `refuse`. */
        this.response = '';
        this.state = RemoteInvitationState.INVITATION_RECEIVED;
    }
    async accept() {
        await this.host.request('acceptRemoteInvitation', {
            invitationId: this.invitationId,
            response: this.response,
        });
        // The caller's answer may have come before this reply.
        if (this.state === RemoteInvitationState.INVITATION_RECEIVED) {
            this.state = RemoteInvitationState.ACCEPT_SENT_TO_LOCAL;
        }
    }
    async refuse() {
        await this.host.request('refuseRemoteInvitation', {
            invitationId: this.invitationId,
            response: this.response,
        });
    }
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    handle(kind, body) {
        switch (kind) {
            case 'remoteInvitationAccepted':
                this.state = RemoteInvitationState.ACCEPTED;
                this.emit('RemoteInvitationAccepted');
                break;
            case 'remoteInvitationRefused':
                this.state = RemoteInvitationState.REFUSED;
                this.emit('RemoteInvitationRefused');
                break;
            case 'remoteInvitationCanceled':
                this.state = RemoteInvitationState.CANCELED;
                this.emit('RemoteInvitationCanceled');
                break;
            case 'remoteInvitationFailure': {
                this.state = RemoteInvitationState.FAILURE;
                const reason = body.reason;
                this.emit('RemoteInvitationFailure', reason === 'PEER_OFFLINE' || reason === 'ACCEPT_FAILURE' || reason === 'INVITATION_EXPIRE'
                    ? reason
                    : RemoteInvitationFailureReason.UNKNOWN);
                break;
            }
        }
    }
}
