// Call invitations: LocalInvitation (sent) and RemoteInvitation (received), as Agora shapes them.

import { EventEmitter } from './emitter.js';
import {
  LocalInvitationFailureReason,
  LocalInvitationState,
  RemoteInvitationFailureReason,
  RemoteInvitationState,
  RtmError,
} from './types.js';

/** What an invitation needs of its client. */
export interface InvitationHost {
  request<T = unknown>(op: string, fields?: object): Promise<T>;
  sent(invitation: LocalInvitation, invitationId: string): void;
}

export type LocalInvitationEvents = {
  LocalInvitationReceivedByPeer: () => void;
  LocalInvitationAccepted: (response: string) => void;
  LocalInvitationRefused: (response: string) => void;
  LocalInvitationCanceled: () => void;
  LocalInvitationFailure: (reason: LocalInvitationFailureReason) => void;
};

export class LocalInvitation extends EventEmitter<LocalInvitationEvents> {
  content = '';
  channelId = '';
  /** The callee's answer, once it accepted or refused. */
  response = '';
  state: LocalInvitationState = LocalInvitationState.IDLE;
  /** Parley: the id the server gave it (a decimal string), once sent. */
  invitationId = '';

  constructor(
    readonly calleeId: string,
    private readonly host: InvitationHost,
  ) {
    super();
  }

  async send(): Promise<void> {
    if (this.state !== LocalInvitationState.IDLE) {
      throw new RtmError('INVITATION_ALREADY_SENT', 'this invitation was sent already');
    }
    const sent = await this.host.request<{ invitationId: string }>('sendLocalInvitation', {
      calleeId: this.calleeId,
      content: this.content,
      channelId: this.channelId,
    });
    this.invitationId = String(sent.invitationId);
    this.state = LocalInvitationState.SENT_TO_REMOTE;
    this.host.sent(this, this.invitationId);
  }

  async cancel(): Promise<void> {
    await this.host.request('cancelLocalInvitation', { invitationId: this.invitationId });
  }

  /** An event about this invitation, from the client. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  handle(kind: string, body: any): void {
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

function localFailure(reason: string | undefined): LocalInvitationFailureReason {
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

export type RemoteInvitationEvents = {
  RemoteInvitationAccepted: () => void;
  RemoteInvitationRefused: () => void;
  RemoteInvitationCanceled: () => void;
  RemoteInvitationFailure: (reason: RemoteInvitationFailureReason) => void;
};

export class RemoteInvitation extends EventEmitter<RemoteInvitationEvents> {
  /** The answer to send with `accept` or `refuse`. */
  response = '';
  state: RemoteInvitationState = RemoteInvitationState.INVITATION_RECEIVED;

  constructor(
    readonly callerId: string,
    readonly content: string,
    readonly channelId: string,
    /** Parley: the invitation's id (a decimal string). */
    readonly invitationId: string,
    private readonly host: InvitationHost,
  ) {
    super();
  }

  async accept(): Promise<void> {
    await this.host.request('acceptRemoteInvitation', {
      invitationId: this.invitationId,
      response: this.response,
    });
    // The caller's answer may have come before this reply.
    if (this.state === RemoteInvitationState.INVITATION_RECEIVED) {
      this.state = RemoteInvitationState.ACCEPT_SENT_TO_LOCAL;
    }
  }

  async refuse(): Promise<void> {
    await this.host.request('refuseRemoteInvitation', {
      invitationId: this.invitationId,
      response: this.response,
    });
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  handle(kind: string, body: any): void {
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
        this.emit(
          'RemoteInvitationFailure',
          reason === 'PEER_OFFLINE' || reason === 'ACCEPT_FAILURE' || reason === 'INVITATION_EXPIRE'
            ? reason
            : RemoteInvitationFailureReason.UNKNOWN,
        );
        break;
      }
    }
  }
}
