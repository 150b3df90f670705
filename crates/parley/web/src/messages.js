// Messages between the Agora shapes and the protocol's MessageBody (raw bytes as base64).
import { RtmError } from './types.js';
function toBase64(bytes) {
    let binary = '';
    for (const byte of bytes) {
        binary += String.fromCharCode(byte);
    }
    return btoa(binary);
}
function fromBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) {
        bytes[i] = binary.charCodeAt(i);
    }
    return bytes;
}
/** Agora's `createMessage`: `{ text }` or `{ rawMessage, description }`, typed. */
export function createMessage(message) {
    if (message.rawMessage !== undefined || message.messageType === 'RAW') {
        return {
            rawMessage: message.rawMessage ?? new Uint8Array(),
            description: message.description ?? '',
            messageType: 'RAW',
        };
    }
    return { text: message.text ?? '', messageType: 'TEXT' };
}
export function toWire(message) {
    if (typeof message === 'string') {
        return { text: message };
    }
    if ('rawMessage' in message) {
        return { raw: toBase64(message.rawMessage), description: message.description ?? '' };
    }
    if ('text' in message) {
        return { text: message.text };
    }
    throw new RtmError('INVALID_MESSAGE', 'a message has text or rawMessage');
}
export function fromWire(message) {
    if (message?.raw !== undefined) {
        return {
            rawMessage: fromBase64(message.raw),
            description: message.description ?? '',
            messageType: 'RAW',
        };
    }
    return { text: message?.text ?? '', messageType: 'TEXT' };
}
