// RtmChannel: a channel as Agora's SDK shapes it, with Parley's recovery after a reconnect.
import { EventEmitter } from './emitter.js';
import { fromWire, toWire } from './messages.js';
import { RtmError } from './types.js';
/** Message ids remembered per channel to drop repeats around a reconnect. */
const SEEN_IDS = 1000;
export function attributesFromWire(
// eslint-disable-next-line @typescript-eslint/no-explicit-any
attributes) {
    const result = {};
    for (const attribute of attributes ?? []) {
        result[attribute.key] = {
            value: attribute.value ?? '',
            lastUpdateUserId: attribute.lastUpdateUserId ?? '',
            lastUpdateTs: Number(attribute.lastUpdateTs ?? 0),
        };
    }
    return result;
}
export class RtmChannel extends EventEmitter {
    constructor(channelId, host) {
        super();
        this.channelId = channelId;
        this.host = host;
        /** The last sequence number seen, to resume after on a reconnect. */
        this.lastSeq = 0;
        this.isJoined = false;
        this.seen = new Set();
    }
    get joined() {
        return this.isJoined;
    }
    async join() {
        if (this.isJoined) {
            throw new RtmError('ALREADY_JOINED', 'already joined this channel');
        }
        const result = await this.host.request('join', {
            channelId: this.channelId,
        });
        this.lastSeq = Number(result.lastSeq ?? 0);
        this.isJoined = true;
        this.host.joined(this);
    }
    async leave() {
        this.isJoined = false;
        this.host.left(this);
        await this.host.request('leave', { channelId: this.channelId });
    }
    /** Sends to the channel's other members; resolves with Parley's message id and `seq`. */
    async sendMessage(message, options = {}) {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const sent = await this.host.request('sendMessage', {
            channelId: this.channelId,
            message: toWire(message),
            enableHistoricalMessaging: options.enableHistoricalMessaging ?? false,
        });
        this.seen.add(String(sent.messageId));
        return {
            messageId: String(sent.messageId),
            serverReceivedTs: Number(sent.serverReceivedTs ?? 0),
            seq: Number(sent.seq ?? 0),
        };
    }
    async getMembers() {
        const result = await this.host.request('getMembers', {
            channelId: this.channelId,
        });
        return result.members ?? [];
    }
    /** Joins again after a reconnect, resuming after the last message seen. */
    async rejoin() {
        const result = await this.host.request('join', {
            channelId: this.channelId,
            resumeAfterSeq: String(this.lastSeq),
        });
        this.lastSeq = Math.max(this.lastSeq, Number(result.lastSeq ?? 0));
    }
    /** An event of this channel, from the client. */
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    handle(kind, body) {
        switch (kind) {
            case 'channelMessage': {
                const id = String(body.messageId);
                const seq = Number(body.seq ?? 0);
                this.lastSeq = Math.max(this.lastSeq, seq);
                if (this.seen.has(id)) {
                    return;
                }
                this.seen.add(id);
                if (this.seen.size > SEEN_IDS) {
                    const oldest = this.seen.values().next().value;
                    if (oldest !== undefined) {
                        this.seen.delete(oldest);
                    }
                }
                this.emit('ChannelMessage', fromWire(body.message), body.memberId, {
                    serverReceivedTs: Number(body.serverReceivedTs ?? 0),
                    messageId: id,
                    seq,
                });
                break;
            }
            case 'memberJoined':
                this.emit('MemberJoined', body.memberId);
                break;
            case 'memberLeft':
                this.emit('MemberLeft', body.memberId);
                break;
            case 'memberCountUpdated':
                this.emit('MemberCountUpdated', Number(body.memberCount ?? 0));
                break;
            case 'attributesUpdated':
                this.emit('AttributesUpdated', attributesFromWire(body.attributes));
                break;
            case 'channelRecovered':
                this.emit('ChannelRecovered', {
                    fromSeq: Number(body.fromSeq ?? 0),
                    toSeq: Number(body.toSeq ?? 0),
                    complete: Boolean(body.complete),
                });
                break;
            case 'memberMuted':
                this.emit('MemberMuted', body.memberId, Boolean(body.muted), Number(body.untilTs ?? 0), body.reason ?? '');
                break;
            case 'kickedFromChannel':
                this.isJoined = false;
                this.host.left(this);
                this.emit('Kicked', body.reason ?? '');
                break;
        }
    }
}
