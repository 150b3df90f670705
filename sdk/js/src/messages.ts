// Messages between the Agora shapes and the protocol's MessageBody (raw bytes as base64).

import { RtmError, type RtmMessage } from './types.js';

export interface WireMessage {
  text?: string;
  raw?: string;
  description?: string;
}

function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

/** Agora's `createMessage`: `{ text }` or `{ rawMessage, description }`, typed. */
export function createMessage(message: {
  text?: string;
  rawMessage?: Uint8Array;
  description?: string;
  messageType?: string;
}): RtmMessage {
  if (message.rawMessage !== undefined || message.messageType === 'RAW') {
    return {
      rawMessage: message.rawMessage ?? new Uint8Array(),
      description: message.description ?? '',
      messageType: 'RAW',
    };
  }
  return { text: message.text ?? '', messageType: 'TEXT' };
}

export function toWire(message: RtmMessage | string): WireMessage {
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

export function fromWire(message: WireMessage | undefined): RtmMessage {
  if (message?.raw !== undefined) {
    return {
      rawMessage: fromBase64(message.raw),
      description: message.description ?? '',
      messageType: 'RAW',
    };
  }
  return { text: message?.text ?? '', messageType: 'TEXT' };
}
