#!/usr/bin/env node
// Protocol smoke test for chatrelay and its benchmark peers (docs/PROTOCOL.md).
//
//   node benches/peers/smoke.mjs ws://127.0.0.1:8081/ws
//
// Uses the `ws` package from benches/peers/node-ws/node_modules when installed, otherwise the
// global WebSocket (run with `node --experimental-websocket` on Node 20). Every wait is bounded
// (WAIT_MS) and the whole run is bounded (SMOKE_TIMEOUT_MS, default 10 s). Exit status: 0 when
// every check passed, 1 on the first mismatch, 2 on the overall timeout.

import { createRequire } from 'node:module';
import { isDeepStrictEqual } from 'node:util';

const url = process.argv[2] || 'ws://127.0.0.1:8081/ws';
const TOTAL_MS = Number(process.env.SMOKE_TIMEOUT_MS || 10_000);
const WAIT_MS = Number(process.env.SMOKE_WAIT_MS || 3_000);
const started = Date.now();

let WebSocketImpl;
let impl;
try {
  WebSocketImpl = createRequire(new URL('./node-ws/package.json', import.meta.url))('ws');
  impl = `ws ${createRequire(new URL('./node-ws/package.json', import.meta.url))('ws/package.json').version}`;
} catch {
  WebSocketImpl = globalThis.WebSocket;
  impl = 'global WebSocket';
}
if (!WebSocketImpl) {
  console.error('no WebSocket client: run `npm install` in benches/peers/node-ws or use node --experimental-websocket');
  process.exit(1);
}

const overall = setTimeout(() => {
  console.error(`FAIL: overall timeout after ${TOTAL_MS} ms (last step: ${currentStep})`);
  process.exit(2);
}, TOTAL_MS);

let currentStep = 'start';
let checks = 0;
function check(cond, what, detail) {
  checks++;
  if (!cond) {
    const extra = detail === undefined ? '' : `\n  got: ${JSON.stringify(detail)}`.slice(0, 2000);
    throw new Error(`${what}${extra}`);
  }
}
function eq(actual, expected, what) {
  checks++;
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(`${what}\n  expected: ${JSON.stringify(expected)}\n  got:      ${JSON.stringify(actual)}`.slice(0, 3000));
  }
}
function step(name) {
  currentStep = name;
}
function ok(name) {
  console.log(`ok - ${name} (${Date.now() - started} ms)`);
}

class Client {
  constructor(name) {
    this.name = name;
    this.log = []; // everything received, in order
    this.inbox = []; // not yet taken
    this.waiters = [];
    this.closeCode = null;
  }
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocketImpl(url);
      this.ws = ws;
      const timer = setTimeout(() => reject(new Error(`${this.name}: connect timed out`)), WAIT_MS);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve(this);
      };
      ws.onerror = (e) => {
        clearTimeout(timer);
        reject(new Error(`${this.name}: connect/socket error ${e?.message ?? ''}`));
      };
      ws.onmessage = (ev) => {
        let m;
        if (typeof ev.data !== 'string') m = { type: '__binary__' };
        else {
          try {
            m = JSON.parse(ev.data);
          } catch {
            m = { type: '__not_json__', raw: ev.data };
          }
        }
        this.log.push(m);
        this.inbox.push(m);
        this.pump();
      };
      ws.onclose = (ev) => {
        this.closeCode = ev.code;
        this.pump();
      };
    });
  }
  send(obj) {
    this.ws.send(typeof obj === 'string' || obj instanceof Uint8Array ? obj : JSON.stringify(obj));
  }
  pump() {
    for (const w of [...this.waiters]) {
      const i = this.inbox.findIndex(w.pred);
      if (i >= 0) {
        const [m] = this.inbox.splice(i, 1);
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(m);
      } else if (this.closeCode !== null) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.reject(new Error(`${this.name}: closed (${this.closeCode}) while waiting for ${w.label}`));
      }
    }
  }
  // The first not-yet-taken message matching pred (waiting up to WAIT_MS for it).
  take(pred, label) {
    return new Promise((resolve, reject) => {
      const w = { pred, label, resolve, reject };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        const recent = this.inbox.slice(-5);
        reject(new Error(`${this.name}: timed out waiting for ${label}; untaken (last 5): ${JSON.stringify(recent).slice(0, 1500)}`));
      }, WAIT_MS);
      this.waiters.push(w);
      this.pump();
    });
  }
  type(t, label) {
    return this.take((m) => m.type === t, label || t);
  }
  async error(code, label) {
    const m = await this.type('error', `error ${code} (${label})`);
    eq(m.code, code, `${this.name}: error code for ${label}`);
    check(typeof m.message === 'string' && m.message.length > 0, `${this.name}: error.message for ${label}`, m);
    return m;
  }
  // ping -> pong: everything the server queued for this client before now has arrived.
  async barrier() {
    this.send({ type: 'ping' });
    await this.type('pong', 'pong (barrier)');
  }
  async messages(n, room) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(await this.take((m) => m.type === 'message' && m.room === room, `message ${i + 1}/${n} in ${room}`));
    return out;
  }
  close() {
    this.ws.close();
  }
}

async function connect(name) {
  return new Client(name).open();
}

function ids(users) {
  return (users || []).map((u) => u.id).sort();
}
function seqs(list) {
  return list.map((m) => m.seq);
}
function range(from, to) {
  const out = [];
  for (let i = from; i <= to; i++) out.push(i);
  return out;
}
function checkMessageShape(m, who) {
  check(m.type === 'message', `${who}: type message`, m);
  check(typeof m.id === 'string' && m.id.length > 0, `${who}: message.id string`, m);
  check(Number.isInteger(m.seq), `${who}: message.seq integer`, m);
  check(typeof m.room === 'string', `${who}: message.room`, m);
  check(typeof m.userId === 'string' && typeof m.username === 'string', `${who}: message.userId/username`, m);
  check(typeof m.text === 'string', `${who}: message.text`, m);
  check(Number.isInteger(m.timestamp) && Math.abs(m.timestamp - Date.now()) < 60_000, `${who}: message.timestamp ms`, m);
}

async function main() {
  const httpBase = url.replace(/^ws/, 'http').replace(/\/ws\/?$|\/$/, '');
  const tag = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const R = `smoke-${tag}`;
  const R2 = `smoke-${tag}-hist`;
  const R3 = `smoke-${tag}-errors`;

  step('http');
  {
    const health = await fetch(`${httpBase}/healthz`);
    eq(health.status, 200, 'GET /healthz status');
    const missing = await fetch(`${httpBase}/no-such-path`);
    eq(missing.status, 404, 'GET /no-such-path status');
    ok('GET /healthz -> 200, unknown path -> 404');
  }

  step('join');
  const A = await connect('A');
  const B = await connect('B');
  let C = await connect('C');
  A.send({ type: 'join', room: R, username: 'alice' });
  const jA = await A.type('joined');
  check(typeof jA.clientId === 'string' && jA.clientId.length > 0, 'joined.clientId', jA);
  check(typeof jA.epoch === 'string' && jA.epoch.length > 0, 'joined.epoch', jA);
  eq(jA.room, R, 'joined.room');
  eq(jA.seq, 0, 'joined.seq of a new room');
  eq(jA.count, 1, 'joined.count');
  eq(jA.users, [{ id: jA.clientId, username: 'alice' }], 'joined.users');
  eq(jA.history, [], 'joined.history of a new room');
  check(!('recovered' in jA), 'joined.recovered absent without since', jA);
  A.id = jA.clientId;

  B.send({ type: 'join', room: R, username: 'bob' });
  const jB = await B.type('joined');
  B.id = jB.clientId;
  eq(jB.count, 2, 'B joined.count');
  eq(jB.epoch, jA.epoch, 'same room, same epoch');
  eq(ids(jB.users), [A.id, B.id].sort(), 'B joined.users ids');
  let uj = await A.type('user_joined');
  eq([uj.room, uj.userId, uj.username, uj.count], [R, B.id, 'bob', 2], 'A sees user_joined(bob)');
  eq(ids(uj.users), [A.id, B.id].sort(), 'user_joined.users ids');

  C.send({ type: 'join', room: R, username: 'carol' });
  const jC = await C.type('joined');
  C.id = jC.clientId;
  eq(jC.count, 3, 'C joined.count');
  eq(new Set([A.id, B.id, C.id]).size, 3, 'clientIds distinct');
  for (const X of [A, B]) {
    uj = await X.take((m) => m.type === 'user_joined' && m.userId === C.id, 'user_joined(carol)');
    eq([uj.count, uj.username], [3, 'carol'], `${X.name} sees user_joined(carol) count 3`);
  }
  ok('join: joined/user_joined with clientId, epoch, seq 0, count, users, empty history');

  step('messages');
  const N = 20;
  for (let i = 0; i < N; i++) {
    A.send({ type: 'message', text: `A-${i}` });
    B.send({ type: 'chat', text: `B-${i}` }); // alias
    C.send({ type: 'message', text: `C-${i}`, room: R }); // explicit room
  }
  const got = {};
  for (const X of [A, B, C]) got[X.name] = await X.messages(3 * N, R);
  const byUser = { [A.id]: 'A', [B.id]: 'B', [C.id]: 'C' };
  const names = { A: 'alice', B: 'bob', C: 'carol' };
  for (const X of [A, B, C]) {
    const list = got[X.name];
    list.forEach((m) => checkMessageShape(m, X.name));
    eq(seqs(list), range(1, 3 * N), `${X.name}: seqs 1..${3 * N}, rising by 1`);
    eq(list.map((m) => m.id), got.A.map((m) => m.id), `${X.name}: same order as A`);
    for (const m of list) {
      const who = byUser[m.userId];
      check(who && m.text.startsWith(`${who}-`) && m.username === names[who], `${X.name}: userId/username match the sender`, m);
    }
    for (const who of ['A', 'B', 'C']) {
      eq(list.filter((m) => byUser[m.userId] === who).map((m) => m.text), range(0, N - 1).map((i) => `${who}-${i}`), `${X.name}: ${who}'s messages in send order (sender included)`);
    }
  }
  eq(new Set(got.A.map((m) => m.id)).size, 3 * N, 'message ids unique');
  ok(`messages: 3 clients x ${N} sent, every client got all ${3 * N} in the same order, seq 1..${3 * N}`);

  step('typing');
  A.send({ type: 'typing', isTyping: true });
  for (const X of [B, C]) {
    const t = await X.take((m) => m.type === 'typing' && m.userId === A.id && m.isTyping === true, 'typing(A,true)');
    eq([t.room, t.username], [R, 'alice'], `${X.name}: typing room/username`);
  }
  B.send({ type: 'typing' }); // isTyping defaults to true
  for (const X of [A, C]) await X.take((m) => m.type === 'typing' && m.userId === B.id && m.isTyping === true, 'typing(B, default true)');
  A.send({ type: 'typing', isTyping: false });
  for (const X of [B, C]) await X.take((m) => m.type === 'typing' && m.userId === A.id && m.isTyping === false, 'typing(A,false)');
  await A.barrier();
  await B.barrier();
  check(!A.log.some((m) => m.type === 'typing' && m.userId === A.id), 'typing not echoed to A', A.log.filter((m) => m.type === 'typing'));
  check(!B.log.some((m) => m.type === 'typing' && m.userId === B.id), 'typing not echoed to B', B.log.filter((m) => m.type === 'typing'));
  ok('typing: delivered to others, isTyping defaults to true, never echoed to the typist');

  step('reconnect');
  const epoch = jC.epoch;
  const lastSeq = got.C[got.C.length - 1].seq;
  C.close();
  for (const X of [A, B]) {
    const ul = await X.take((m) => m.type === 'user_left' && m.userId === C.id, 'user_left(carol)');
    eq([ul.room, ul.username, ul.count, ids(ul.users)], [R, 'carol', 2, [A.id, B.id].sort()], `${X.name}: user_left(carol)`);
  }
  for (let i = 0; i < 5; i++) A.send({ type: 'message', text: `late-${i}` });
  const late = await A.messages(5, R);
  await B.messages(5, R);
  eq(seqs(late), range(lastSeq + 1, lastSeq + 5), 'messages while C was away');
  C = await connect('C2');
  C.send({ type: 'join', room: R, username: 'carol', since: lastSeq, epoch });
  let j = await C.type('joined');
  C.id = j.clientId;
  eq([j.recovered, j.seq, j.count, j.epoch], [true, lastSeq + 5, 3, epoch], 'rejoin with since: recovered, seq, count, epoch');
  eq(j.history, late, 'rejoin with since: history is exactly the missed messages');
  for (const X of [A, B]) await X.take((m) => m.type === 'user_joined' && m.userId === C.id, 'user_joined(carol again)');
  // Same room again: a fresh joined, and nobody sees a second user_joined.
  C.send({ type: 'join', room: R, since: lastSeq + 5, epoch });
  j = await C.type('joined');
  eq([j.recovered, j.history, j.count], [true, [], 3], 'join of an already-joined room, since = latest');
  // A third connection: wrong epoch, since ahead, no since.
  const F = await connect('F');
  F.send({ type: 'join', room: R, username: 'frank', since: lastSeq, epoch: 'ffff0000ffff0000' });
  j = await F.type('joined');
  F.id = j.clientId;
  eq([j.recovered, j.count], [false, 4], 'wrong epoch -> recovered false');
  eq(seqs(j.history), range(1, lastSeq + 5), 'wrong epoch -> full history');
  F.send({ type: 'join', room: R, since: lastSeq + 100, epoch });
  j = await F.type('joined');
  eq([j.recovered, j.history.length], [false, lastSeq + 5], 'since ahead of the room -> recovered false, full history');
  F.send({ type: 'join', room: R });
  j = await F.type('joined');
  check(!('recovered' in j) && j.history.length === lastSeq + 5 && j.count === 4, 'rejoin without since: no recovered, full history', j);
  await C.barrier();
  for (const X of [A, B]) {
    await X.barrier();
    eq(X.log.filter((m) => m.type === 'user_joined' && m.userId === C.id).length, 1, `${X.name}: exactly one user_joined for C2 (rejoin is silent)`);
    eq(X.log.filter((m) => m.type === 'user_joined' && m.userId === F.id).length, 1, `${X.name}: exactly one user_joined for F`);
  }
  F.close();
  for (const X of [A, B, C]) await X.take((m) => m.type === 'user_left' && m.userId === F.id && m.count === 3, 'user_left(frank)');
  ok('reconnect: since+epoch -> recovered true with exactly the missed messages; wrong epoch / since ahead -> recovered false + full history; rejoin silent');

  step('history');
  A.send({ type: 'join', room: R2 }); // username reused; R2 becomes A's current room
  j = await A.type('joined');
  eq([j.room, j.count, j.seq, j.users?.[0]?.username], [R2, 1, 0, 'alice'], 'A joins R2 with its previous username');
  const H = 130;
  for (let i = 1; i <= H; i++) A.send({ type: 'chat', text: `h${i}` }); // current room R2
  const hist = await A.messages(H, R2);
  eq(seqs(hist), range(1, H), `R2 seqs 1..${H}`);
  const D = await connect('D');
  D.send({ type: 'join', room: R2, username: 'dave' });
  j = await D.type('joined');
  D.id = j.clientId;
  eq([j.seq, j.count, j.history.length], [H, 2, 100], 'history keeps the last 100');
  eq(j.history, hist.slice(H - 100), 'history is the last 100 messages, oldest first');
  await A.take((m) => m.type === 'user_joined' && m.userId === D.id, 'user_joined(dave)');
  const sinceCases = [
    [10, false, range(H - 99, H)],
    [H - 101, false, range(H - 99, H)],
    [H - 100, true, range(H - 99, H)],
    [H - 90, true, range(H - 89, H)],
    [H, true, []],
  ];
  for (const [since, rec, want] of sinceCases) {
    D.send({ type: 'join', room: R2, since, epoch: j.epoch });
    const jj = await D.type('joined');
    eq([jj.recovered, seqs(jj.history)], [rec, want], `since ${since}: recovered ${rec}, history seqs ${want.length ? `${want[0]}..${want[want.length - 1]}` : '[]'}`);
  }
  ok(`history: ${H} sent, joined.history = last 100; since inside -> recovered true, since too old -> false`);

  step('rooms');
  // A is in R and R2, current R2; message with an explicit room goes to R.
  A.send({ type: 'message', room: R, text: 'to-R' });
  for (const X of [A, B, C]) {
    const m = await X.take((mm) => mm.type === 'message' && mm.text === 'to-R', 'message to R by name');
    eq([m.room, m.seq], [R, lastSeq + 6], `${X.name}: message sent to R by name`);
  }
  A.send({ type: 'leave' }); // leaves R2, the current room
  const left = await A.type('left');
  eq(left, { type: 'left', room: R2 }, 'left acknowledges the current room');
  const ul = await D.take((m) => m.type === 'user_left' && m.userId === A.id, 'user_left(alice) in R2');
  eq([ul.room, ul.count, ids(ul.users)], [R2, 1, [D.id]], 'user_left in R2');
  A.send({ type: 'message', text: 'back-in-R' }); // R is current again
  for (const X of [A, B, C]) {
    const m = await X.take((mm) => mm.type === 'message' && mm.text === 'back-in-R', 'message after leave');
    eq([m.room, m.seq], [R, lastSeq + 7], `${X.name}: the room joined before becomes current`);
  }
  A.send({ type: 'leave', room: R2 });
  await A.error('not_joined', 'leave of a room not joined');
  A.send({ type: 'message', room: R2, text: 'x' });
  await A.error('not_joined', 'message to a room not joined');
  B.send({ type: 'leave', room: R });
  eq(await B.type('left'), { type: 'left', room: R }, 'B leaves R by name');
  for (const X of [A, C]) {
    const u = await X.take((m) => m.type === 'user_left' && m.userId === B.id, 'user_left(bob)');
    eq(u.count, 2, `${X.name}: user_left(bob) count`);
  }
  B.send({ type: 'message', text: 'x' });
  await B.error('not_joined', 'message after leaving every room');
  B.send({ type: 'typing' });
  await B.error('not_joined', 'typing after leaving every room');
  B.send({ type: 'leave' });
  await B.error('not_joined', 'leave with no room');
  await D.barrier();
  check(!D.log.some((m) => m.room === R), 'D (only in R2) never sees R traffic', D.log.filter((m) => m.room === R));
  ok('rooms: explicit room, leave/left/user_left, previous room becomes current, not_joined');

  step('errors');
  const E = await connect('E');
  E.send({ type: 'ping' });
  eq(await E.type('pong'), { type: 'pong' }, 'pong');
  E.send({ type: 'message', text: 'hi' });
  await E.error('not_joined', 'message before join');
  E.send({ type: 'typing' });
  await E.error('not_joined', 'typing before join');
  E.send('not json');
  await E.error('invalid_json', 'not json');
  E.send('[1,2]');
  await E.error('invalid_json', 'a JSON array');
  E.send('{}');
  await E.error('missing_field', 'type absent');
  E.send({ type: 'shout' });
  await E.error('unknown_type', 'type shout');
  E.send({ type: 'join', username: 'eve' });
  await E.error('missing_field', 'join without room');
  E.send({ type: 'join', room: '' });
  await E.error('invalid_room', 'empty room');
  E.send({ type: 'join', room: 'x'.repeat(65) });
  await E.error('invalid_room', '65-character room');
  E.send({ type: 'join', room: 'a\nb' });
  await E.error('invalid_room', 'room with a control character');
  E.send({ type: 'join', room: R3, username: 'u'.repeat(65) });
  await E.error('invalid_username', '65-character username');
  E.send(new Uint8Array([1, 2, 3]));
  await E.error('binary_not_supported', 'binary frame');
  // Not spelled out in PROTOCOL.md; this is what the relay does and the peers copy: a known
  // field with the wrong JSON type is invalid_json whatever the frame's type, and room
  // membership is checked before the text's content.
  for (const [frame, label] of [
    [{ type: 5 }, 'type not a string'],
    [{ type: 'join', room: 5 }, 'room not a string'],
    [{ type: 'typing', isTyping: 'yes' }, 'isTyping not a boolean'],
    [{ type: 'ping', since: -1 }, 'since negative'],
    [{ type: 'message', text: 5 }, 'text not a string'],
  ]) {
    E.send(frame);
    await E.error('invalid_json', label);
  }
  E.send({ type: 'message', text: '' });
  await E.error('not_joined', 'empty text before any join');
  E.send({ type: 'join', room: R3 }); // no username on the first join
  j = await E.type('joined');
  E.id = j.clientId;
  E.send({ type: 'message', text: 'anon says hi' });
  let m = await E.type('message');
  eq(m.username, `anon-${E.id}`, 'first join without username -> anon-<clientId>');
  E.send({ type: 'message' });
  await E.error('missing_field', 'message without text');
  E.send({ type: 'message', text: '' });
  await E.error('empty_text', 'empty text');
  E.send({ type: 'message', text: 'y'.repeat(2001) });
  await E.error('text_too_long', '2001-character text');
  const astral = '😀'.repeat(2000); // 2000 characters, 4000 UTF-16 units, 8000 bytes
  E.send({ type: 'message', text: astral });
  m = await E.take((mm) => mm.type === 'message' || mm.type === 'error', '2000 astral characters accepted');
  eq([m.type, m.text === astral, m.seq], ['message', true, 2], '2000 characters (astral) accepted: limit counts characters');
  for (let i = 1; i < 16; i++) {
    E.send({ type: 'join', room: `${R3}-${i}` });
    await E.type('joined', `joined room ${i + 1}/16`);
  }
  E.send({ type: 'join', room: `${R3}-16` });
  await E.error('too_many_rooms', '17th room');
  E.send({ type: 'join', room: R3 }); // already in it: fine
  j = await E.type('joined');
  eq(j.room, R3, 'rejoining a joined room at the limit is fine');
  await E.barrier();
  check(E.closeCode === null, 'connection stays open after every error', E.closeCode);
  ok('errors: invalid_json (incl. wrong field types), missing_field, unknown_type, invalid_room, invalid_username, binary_not_supported, not_joined, empty_text, text_too_long, too_many_rooms; anon username; connection stays open');

  step('final');
  for (const X of [A, B, C, D]) {
    const errs = X.log.filter((mm) => mm.type === 'error');
    const expected = X === A ? 2 : X === B ? 3 : 0;
    eq(errs.length, expected, `${X.name}: no unexpected errors`);
    check(!X.log.some((mm) => mm.type === '__binary__' || mm.type === '__not_json__'), `${X.name}: every frame is JSON text`);
  }
  for (const X of [A, B, C, D, E]) X.close();
}

main().then(
  () => {
    clearTimeout(overall);
    console.log(`PASS: ${checks} checks against ${url} in ${Date.now() - started} ms (client: ${impl})`);
    process.exit(0);
  },
  (err) => {
    console.error(`FAIL [${currentStep}] against ${url}: ${err.message}`);
    process.exit(1);
  },
);
