// One WebSocket to an edge speaking `parley.v1.json` (docs/protocol.md): requests with ids and
// their replies, receipts, pings, and the server's events.
import { RtmError } from './types.js';
export const SUBPROTOCOL = 'parley.v1.json';
export class Transport {
    constructor(socket, requestTimeout, handlers) {
        this.socket = socket;
        this.requestTimeout = requestTimeout;
        this.handlers = handlers;
        this.pending = new Map();
        this.nextId = 1;
        this.closed = false;
        socket.onmessage = (message) => this.receive(message.data);
        socket.onclose = (close) => this.shutDown(close.code);
        socket.onerror = () => {
            /* onclose follows */
        };
    }
    /** Opens a socket to `url`; rejects if it cannot be opened. */
    static open(WebSocketImpl, url, requestTimeout, handlers) {
        return new Promise((resolve, reject) => {
            let socket;
            try {
                socket = new WebSocketImpl(url, [SUBPROTOCOL]);
            }
            catch (error) {
                reject(new RtmError('UNAVAILABLE', `cannot open ${url}: ${String(error)}`));
                return;
            }
            socket.onopen = () => resolve(new Transport(socket, requestTimeout, handlers));
            socket.onerror = () => reject(new RtmError('UNAVAILABLE', `cannot connect to ${url}`));
            socket.onclose = () => reject(new RtmError('UNAVAILABLE', `${url} closed the connection`));
        });
    }
    /** Sends `op` with `fields`; resolves with the reply's result, rejects with its error. */
    request(op, fields = {}) {
        if (this.closed) {
            return Promise.reject(new RtmError('NOT_LOGGED_IN', 'the connection is closed'));
        }
        const id = String(this.nextId++);
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new RtmError('TIMEOUT', `no reply to ${op} in time`));
            }, this.requestTimeout);
            this.pending.set(id, { resolve: resolve, reject, timer });
            this.send({ request: { id, [op]: fields } });
        });
    }
    /** Acknowledges a peer message or an invitation (by its id). */
    receipt(messageId) {
        this.send({ receipt: { messageId } });
    }
    /** Pings every `intervalMs`, so the server keeps the session. */
    keepAlive(intervalMs) {
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => {
            this.request('ping').catch(() => {
                /* a lost connection shows up as a close */
            });
        }, intervalMs);
    }
    close() {
        try {
            this.socket.close(1000);
        }
        catch {
            /* already closed */
        }
        this.shutDown(1000);
    }
    send(frame) {
        try {
            this.socket.send(JSON.stringify(frame));
        }
        catch {
            /* the close handler reports it */
        }
    }
    receive(data) {
        if (typeof data !== 'string') {
            return; // JSON framing only: binary frames are not ours.
        }
        let frame;
        try {
            frame = JSON.parse(data);
        }
        catch {
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
            }
            else {
                const kind = Object.keys(result)[0];
                pending.resolve(kind === undefined ? {} : result[kind]);
            }
        }
        else if (frame.event) {
            const kind = Object.keys(frame.event)[0];
            if (kind !== undefined) {
                this.handlers.onEvent({ kind, body: frame.event[kind] ?? {} });
            }
        }
    }
    shutDown(code) {
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
