// Parley's Web SDK. An Agora RTM Web SDK 1.x app moves over by changing its import:
//
//   import AgoraRTM from 'parley-rtm-sdk';
//   const client = AgoraRTM.createInstance(appId, { serverUrl: 'wss://rtm.example.com/v1/ws' });
//
// Everything else keeps its name and shape (docs/migrating-from-agora.md).
import { RtmClient } from './client.js';
import { ConnectionChangeReason, ConnectionState, LocalInvitationFailureReason, LocalInvitationState, MessageType, PeerOnlineState, RemoteInvitationFailureReason, RemoteInvitationState, } from './types.js';
export const VERSION = '0.1.0';
/** Agora's entry point: a client for `appId`. */
export function createInstance(appId, config = {}) {
    return new RtmClient(appId, config);
}
export { RtmClient } from './client.js';
export { RtmChannel } from './channel.js';
export { LocalInvitation, RemoteInvitation } from './invitation.js';
export * from './types.js';
const AgoraRTM = {
    createInstance,
    VERSION,
    ConnectionState,
    ConnectionChangeReason,
    PeerOnlineState,
    MessageType,
    LocalInvitationState,
    RemoteInvitationState,
    LocalInvitationFailureReason,
    RemoteInvitationFailureReason,
};
export default AgoraRTM;
