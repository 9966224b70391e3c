// Test support (not a test): relay child processes on free loopback ports, clients, and
// event waiters. Each relay is killed by the test that started it (t.after), and as a last
// resort when the runner exits.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import WebSocket from 'ws';
import { ChatRelay } from '../index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const RELAY_BIN = process.env.RELAY_BIN
  ? path.resolve(process.env.RELAY_BIN)
  : path.join(ROOT, 'target', 'debug', 'relay');
export const ADMIN_TOKEN = 'client-tests-admin-token-0123456789';
export const WAIT_MS = 15_000;

// The abuse limits are not under test here (the relay's own tests cover them): 200 sends in a
// burst, and reconnect storms from one address, must not be refused.
const NO_LIMITS = ['--message-rate', '0', '--command-rate', '0', '--ip-message-rate', '0',
  '--ip-command-rate', '0', '--frame-rate', '0', '--rate-limit-strikes', '0',
  '--connection-rate-per-ip', '0', '--connection-rate', '0', '--max-connections-per-ip', '0'];

// A free port outside the kernel's ephemeral range: a relay restarted on the same port must
// find it still free, and while it is down neither another process's bind(0) nor a client's
// own reconnect (whose source port comes from that range: a TCP self-connect) may take it.
const [EPHEMERAL_LO] = (() => {
  try {
    return fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  } catch {
    return [32768];
  }
})();

export async function freePort() {
  const lo = 10_000;
  const hi = EPHEMERAL_LO > lo + 1000 ? EPHEMERAL_LO : 32768;
  for (let i = 0; i < 100; i++) {
    const port = lo + Math.floor(Math.random() * (hi - lo));
    const free = await new Promise((resolve) => {
      const srv = net.createServer();
      srv.unref();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port below the ephemeral range');
}

const live = new Set();
process.on('exit', () => {
  for (const relay of live) {
    try { relay.proc?.kill('SIGKILL'); } catch { /* gone */ }
  }
});

export class Relay {
  // args: extra flags. Without --memory, history is on disk in a temp dir of this relay's own,
  // kept across restart() so that a restarted relay finds its rooms again.
  constructor(port, args = [], env = {}) {
    this.port = port;
    this.args = args;
    this.env = env;
    this.base = `http://127.0.0.1:${port}`;
    this.url = `ws://127.0.0.1:${port}/ws`;
    this.dir = args.includes('--memory') ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'chatrelay-client-'));
    this.log = '';
  }

  static async start(t, args = [], env = {}) {
    const relay = new Relay(await freePort(), args, env);
    t.after(() => relay.stop());
    await relay.restart();
    return relay;
  }

  async restart() {
    assert.ok(fs.existsSync(RELAY_BIN), `relay binary not found at ${RELAY_BIN}: run \`cargo build -p relay\` or set RELAY_BIN`);
    const storage = this.dir ? ['--data-dir', this.dir] : [];
    // A limit the test sets itself replaces the default's "off" (the relay refuses a flag twice).
    const limits = [];
    for (let i = 0; i < NO_LIMITS.length; i += 2) {
      if (!this.args.includes(NO_LIMITS[i])) limits.push(NO_LIMITS[i], NO_LIMITS[i + 1]);
    }
    const proc = spawn(RELAY_BIN, ['--listen', `127.0.0.1:${this.port}`, '--presence-grace', '0',
      ...limits, ...storage, ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', ...this.env },
    });
    this.proc = proc;
    live.add(this);
    const keep = (chunk) => { this.log = (this.log + chunk).slice(-8000); };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    // Bounded poll of /healthz while the process starts (200 x 25 ms = 5 s at most): there is
    // no event to await for "listening".
    for (let i = 0; i < 200; i++) {
      const gone = await Promise.race([this.exited, delay(0).then(() => null)]);
      if (gone) throw new Error(`relay exited early (${JSON.stringify(gone)}):\n${this.log}`);
      try {
        if ((await fetch(`${this.base}/healthz`)).status === 200) return this;
      } catch { /* not listening yet */ }
      await delay(25);
    }
    throw new Error(`relay did not answer /healthz on port ${this.port}:\n${this.log}`);
  }

  async kill(signal = 'SIGKILL') {
    const proc = this.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      await this.exited;
    }
    live.delete(this);
  }

  async stop() {
    await this.kill();
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }

  admin(method, pathname, body) {
    return fetch(`${this.base}/admin${pathname}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }
}

// A client with fast reconnects, closed when the test ends.
export function client(t, relay, options = {}) {
  const chat = new ChatRelay(relay.url, { WebSocket, reconnectBaseMs: 20, reconnectMaxMs: 400, ...options });
  t.after(() => chat.close());
  return chat;
}

// A WebSocket class (the ws package's) that remembers its sockets and the frames sent on
// them, so a test can cut one client's connection (terminate(): the TCP connection just ends,
// close 1006) while the relay and the other clients carry on.
export function tracked() {
  const sockets = [];
  const frames = [];
  class TrackedWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }

    send(data) {
      frames.push(JSON.parse(data));
      super.send(data);
    }
  }
  return { WebSocket: TrackedWebSocket, frames, drop: () => sockets.at(-1).terminate() };
}

// Resolves with the first `type` event matching `pred`; rejects after WAIT_MS with a message
// that names what was awaited (the test's own timeout would say less).
export function next(chat, type, pred = () => true, what = type) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`timed out waiting for ${what}`)); }, WAIT_MS);
    const off = chat.on(type, (ev) => {
      if (!pred(ev)) return;
      clearTimeout(timer);
      off();
      resolve(ev);
    });
  });
}

// Every `type` event from now on, in arrival order.
export function collect(chat, type) {
  const seen = [];
  chat.on(type, (ev) => seen.push(ev));
  return seen;
}

// An HS256 JWT, for relays started with --auth-secret.
export function hs256(claims, secret) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${crypto.createHmac('sha256', secret).update(body).digest('base64url')}`;
}
