// One WebSocket to an edge speaking `parley.v1.json` (docs/protocol.md): requests with ids and
// their replies, receipts, pings, and the server's events.

import { RtmError, type WebSocketConstructor } from './types.js';

/** A server event: its kind (e.g. `messageFromPeer`) and fields. */
export interface WireEvent {
  kind: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

interface Pending {
  resolve: (result: unknown) => void;
  reject: (error: RtmError) => void;
  timer: ReturnType<typeof setTimeout>;
}

export interface TransportHandlers {
  onEvent: (event: WireEvent) => void;
  /** The socket closed; `code` is the WebSocket close code (4000 + reason when the server ended the session). */
  onClose: (code: number) => void;
}

export const SUBPROTOCOL = 'parley.v1.json';

export class Transport {
  private readonly pending = new Map<string, Pending>();
  private nextId = 1;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private closed = false;

  private constructor(
    private readonly socket: WebSocket,
    private readonly requestTimeout: number,
    private readonly handlers: TransportHandlers,
  ) {
    socket.onmessage = (message) => this.receive(message.data);
    socket.onclose = (close) => this.shutDown(close.code);
    socket.onerror = () => {
      /* onclose follows */
    };
  }

  /** Opens a socket to `url`; rejects if it cannot be opened. */
  static open(
    WebSocketImpl: WebSocketConstructor,
    url: string,
    requestTimeout: number,
    handlers: TransportHandlers,
  ): Promise<Transport> {
    return new Promise((resolve, reject) => {
      let socket: WebSocket;
      try {
        socket = new WebSocketImpl(url, [SUBPROTOCOL]);
      } catch (error) {
        reject(new RtmError('UNAVAILABLE', `cannot open ${url}: ${String(error)}`));
        return;
      }
      socket.onopen = () => resolve(new Transport(socket, requestTimeout, handlers));
      socket.onerror = () => reject(new RtmError('UNAVAILABLE', `cannot connect to ${url}`));
      socket.onclose = () => reject(new RtmError('UNAVAILABLE', `${url} closed the connection`));
    });
  }

  /** Sends `op` with `fields`; resolves with the reply's result, rejects with its error. */
  request<T = unknown>(op: string, fields: object = {}): Promise<T> {
    if (this.closed) {
      return Promise.reject(new RtmError('NOT_LOGGED_IN', 'the connection is closed'));
    }
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RtmError('TIMEOUT', `no reply to ${op} in time`));
      }, this.requestTimeout);
      this.pending.set(id, { resolve: resolve as (result: unknown) => void, reject, timer });
      this.send({ request: { id, [op]: fields } });
    });
  }

  /** Acknowledges a peer message or an invitation (by its id). */
  receipt(messageId: string): void {
    this.send({ receipt: { messageId } });
  }

  /** Pings every `intervalMs`, so the server keeps the session. */
  keepAlive(intervalMs: number): void {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      this.request('ping').catch(() => {
        /* a lost connection shows up as a close */
      });
    }, intervalMs);
  }

  close(): void {
    try {
      this.socket.close(1000);
    } catch {
      /* already closed */
    }
    this.shutDown(1000);
  }

  private send(frame: object): void {
    try {
      this.socket.send(JSON.stringify(frame));
    } catch {
      /* the close handler reports it */
    }
  }

  private receive(data: unknown): void {
    if (typeof data !== 'string') {
      return; // JSON framing only: binary frames are not ours.
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.reply) {
      const { id, error, ...result } = frame.reply;
      const pending = this.pending.get(String(id));
      if (!pending) {
        return;
      }
      this.pending.delete(String(id));
      clearTimeout(pending.timer);
      if (error) {
        pending.reject(new RtmError(error.code ?? 'ERROR_CODE_UNSPECIFIED', error.message ?? ''));
      } else {
        const kind = Object.keys(result)[0];
        pending.resolve(kind === undefined ? {} : result[kind]);
      }
    } else if (frame.event) {
      const kind = Object.keys(frame.event)[0];
      if (kind !== undefined) {
        this.handlers.onEvent({ kind, body: frame.event[kind] ?? {} });
      }
    }
  }

  private shutDown(code: number): void {
    if (this.closed) {
      return;
    }
    this.closed = true;
    clearInterval(this.pingTimer);
    for (const [, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(new RtmError('NOT_LOGGED_IN', 'the connection closed'));
    }
    this.pending.clear();
    this.handlers.onClose(code);
  }
}
