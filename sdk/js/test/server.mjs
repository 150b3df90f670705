// Starts a real `parley dev` on a free loopback port for the SDK tests.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
/** The binary under test: PARLEY_BIN, or the workspace's debug build. */
const BINARY = process.env.PARLEY_BIN ?? join(here, '..', '..', '..', 'target', 'debug', 'parley');

export const APP_ID = '0123456789abcdef0123456789abcdef';
export const CUSTOMER_KEY = 'sdk-tests';
export const CUSTOMER_SECRET = 'sdk-secret';

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export class ParleyDev {
  constructor(port, dataDir, certificate, extraArgs = []) {
    this.certificate = certificate;
    this.extraArgs = extraArgs;
    this.port = port;
    this.dataDir = dataDir;
    this.url = `ws://127.0.0.1:${port}/v1/ws`;
    this.http = `http://127.0.0.1:${port}`;
  }

  /** Starts a server (without a certificate logins need no token; a short member grace). */
  static async start({ certificate, args = [] } = {}) {
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-sdk-'));
    const server = new ParleyDev(await freePort(), dataDir, certificate, args);
    await server.run();
    return server;
  }

  async run() {
    this.child = spawn(
      BINARY,
      [
        'dev',
        '--http-addr', `127.0.0.1:${this.port}`,
        '--data-dir', this.dataDir,
        '--app-id', APP_ID,
        '--customer-key', `${CUSTOMER_KEY}:${CUSTOMER_SECRET}`,
        '--member-grace', '2s',
        ...(this.certificate ? ['--app-certificate', this.certificate] : []),
        ...this.extraArgs,
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const lines = createInterface({ input: this.child.stdout });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('parley dev did not start in time')), 10_000);
      lines.on('line', (line) => {
        if (line.includes('listening on')) {
          clearTimeout(timer);
          resolve();
        }
      });
      this.child.once('exit', (code) => reject(new Error(`parley dev exited with ${code}`)));
    });
  }

  /** Stops the server (SIGTERM, so sessions are told) and waits for it to exit. */
  async stop() {
    if (!this.child || this.child.exitCode !== null) {
      return;
    }
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }

  /** Stops and starts again on the same port and data. */
  async restart() {
    await this.stop();
    await this.run();
  }

  async close() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** Calls the server API as the app's backend. */
  async api(method, path, body) {
    const auth = Buffer.from(`${CUSTOMER_KEY}:${CUSTOMER_SECRET}`).toString('base64');
    const response = await fetch(`${this.http}/v1/apps/${APP_ID}${path}`, {
      method,
      headers: { authorization: `Basic ${auth}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  }

  /** A "007" token for `uid`, valid for `seconds`, made by `parley token`. */
  token(uid, seconds = 3600) {
    return execFileSync(BINARY, [
      'token',
      '--app-id', APP_ID,
      '--app-certificate', this.certificate,
      '--uid', uid,
      '--expire', String(seconds),
    ]).toString().trim();
  }

  config(extra = {}) {
    return { serverUrl: this.url, WebSocket, requestTimeout: 5000, maxReconnectDelay: 500, ...extra };
  }
}

/** Resolves with the arguments of the next `event` of `emitter` (within 5 s). */
export function next(emitter, event, matches = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} in time`)), 5000);
    const listener = (...args) => {
      if (matches(...args)) {
        clearTimeout(timer);
        emitter.off(event, listener);
        resolve(args);
      }
    };
    emitter.on(event, listener);
  });
}
