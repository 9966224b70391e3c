// chatrelay-client against real relay processes (target/debug/relay, or $RELAY_BIN).
//
//     cargo build -p relay && (cd clients/js && npm ci) && node --test clients/js/test/
//
// Every test starts its own relay on a free 127.0.0.1 port and kills it when it ends. Waiting
// is on events (test-support/relay.mjs: next), never on sleeps; the one timed loop is the bounded
// /healthz poll while a relay process starts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Relay, client, next, collect, tracked, hs256, ADMIN_TOKEN } from '../test-support/relay.mjs';

const TIMEOUT = { timeout: 60_000 };

test('two clients chat: acks, replies, presence, typing, scroll-back, leave', TIMEOUT, async (t) => {
  const relay = await Relay.start(t);
  const alice = client(t, relay, { username: 'alice', typingIdleMs: 50 });
  const bob = client(t, relay, { username: 'bob' });
  const aliceStates = collect(alice, 'state');

  const joinedA = await alice.join('general');
  assert.equal(joinedA.room, 'general');
  const people = alice.presence('general');
  assert.deepEqual([...people.values()], ['alice']);
  const bobArrives = next(alice, 'presence', (p) => p.type === 'user_joined');
  const joinedB = await bob.join('general');
  assert.equal(joinedB.count, 2);
  assert.deepEqual([...bob.presence('general').values()].sort(), ['alice', 'bob']);
  const arrival = await bobArrives;
  assert.equal(arrival.username, 'bob');
  assert.equal(arrival.count, 2);
  assert.deepEqual([...arrival.users.values()].sort(), ['alice', 'bob']);
  assert.deepEqual(aliceStates.map((s) => s.state), ['connecting', 'open']);

  const bobSees = next(bob, 'message', (m) => m.text === 'hi');
  const ack = await alice.send('general', 'hi');
  assert.equal(ack.type, 'ack');
  assert.equal(ack.room, 'general');
  const hi = await bobSees;
  assert.equal(hi.seq, ack.seq);
  assert.equal(hi.id, ack.id);
  assert.equal(hi.username, 'alice');

  const reply = next(alice, 'message', (m) => m.text === 'hello alice');
  const ack2 = await bob.send('general', 'hello alice', { replyTo: ack.seq });
  assert.equal((await reply).replyTo, ack.seq);
  assert.equal(ack2.seq, ack.seq + 1);

  // Typing is debounced: three calls send one `true`, and one `false` after the idle time.
  const typing = collect(bob, 'typing');
  const stopped = next(bob, 'typing', (e) => !e.isTyping);
  alice.typing('general');
  alice.typing('general');
  alice.typing('general');
  await stopped;
  assert.deepEqual(typing.map((e) => [e.username, e.isTyping]), [['alice', true], ['alice', false]]);

  // Scroll-back: the page before bob's reply holds alice's message.
  const page = await bob.history('general', { before: ack2.seq, limit: 10 });
  assert.deepEqual(page.messages.map((m) => [m.seq, m.text]), [[ack.seq, 'hi']]);
  assert.equal(page.hasMore, false);

  // A failed command rejects with the relay's code, and the client carries on.
  await assert.rejects(alice.send('general', 'x'.repeat(2001)), { code: 'text_too_long' });
  await assert.rejects(alice.send('elsewhere', 'hi'), { code: 'not_joined' });
  await assert.rejects(alice.join('bad\u202eroom'), { code: 'invalid_room' });

  const bobLeaves = next(alice, 'presence', (p) => p.type === 'user_left');
  bob.leave('general');
  assert.equal((await bobLeaves).username, 'bob');
  assert.deepEqual([...alice.presence('general').values()], ['alice']);
  assert.equal(alice.presence('general'), people, 'presence(room) is one live Map');
});

test('sends wait in a bounded queue until the room is joined', TIMEOUT, async (t) => {
  const relay = await Relay.start(t);
  const alice = client(t, relay, { username: 'alice', maxQueue: 2 });
  const joined = alice.join('q'); // not awaited: the sends below wait for it
  const first = alice.send('q', 'one');
  const second = alice.send('q', 'two');
  await assert.rejects(alice.send('q', 'three'), { code: 'queue_full' });
  await joined;
  const acks = await Promise.all([first, second]);
  assert.deepEqual(acks.map((a) => a.seq), [1, 2]);
  // Acknowledged sends leave the queue.
  assert.equal((await alice.send('q', 'three')).seq, 3);
});

test('a relay killed and restarted amid 200 sends: each send resolves once, each message is seen once, in order', TIMEOUT, async (t) => {
  const relay = await Relay.start(t); // history on disk: the restarted relay keeps rooms and refs
  const wire = tracked();
  const alice = client(t, relay, { username: 'alice', WebSocket: wire.WebSocket });
  const bob = client(t, relay, { username: 'bob' });
  await alice.join('stream');
  await bob.join('stream');

  const N = 200;
  const seen = collect(bob, 'message');
  const aliceSeen = collect(alice, 'message');
  const aliceStates = collect(alice, 'state');
  const gaps = collect(bob, 'gap');
  const bobStates = collect(bob, 'state');
  const allSeen = new Promise((resolve) => bob.on('message', () => seen.length === N && resolve()));
  // An ack may come before or after the sender's own copy of the message: await both.
  const aliceAll = new Promise((resolve) => alice.on('message', () => aliceSeen.length === N && resolve()));

  const resolutions = new Map(); // text -> acks it resolved with
  const sends = [];
  const send = (i) => {
    const text = `m${i}`;
    sends.push(alice.send('stream', text).then((ack) => {
      resolutions.set(text, [...(resolutions.get(text) || []), ack]);
      return ack;
    }));
  };
  // 20 sends one after the other, then 80 at once, and the relay dies under them: some it
  // never read, some it stored without its ack reaching alice (the resend must not repeat
  // those).
  for (let i = 0; i < 20; i++) {
    send(i);
    await sends[i];
  }
  for (let i = 20; i < 100; i++) send(i);
  await relay.kill('SIGKILL');
  const ackedBeforeKill = resolutions.size;
  await next(alice, 'state', (s) => s.state === 'reconnecting', 'alice reconnecting');
  // 50 sends while the relay is down wait in the queue...
  for (let i = 100; i < 150; i++) send(i);
  await relay.restart();
  // ...and 50 more while the clients reconnect.
  for (let i = 150; i < N; i++) send(i);

  const acks = await Promise.all(sends);
  await allSeen;
  await aliceAll;

  const texts = Array.from({ length: N }, (_, i) => `m${i}`);
  for (const text of texts) assert.equal(resolutions.get(text)?.length, 1, `${text} resolved once`);
  assert.equal(new Set(acks.map((a) => a.seq)).size, N, 'every ack has a seq of its own');
  assert.deepEqual(seen.map((m) => m.text), texts, 'bob saw each message once, in the order sent');
  const first = seen[0].seq;
  assert.deepEqual(seen.map((m) => m.seq), texts.map((_, i) => first + i), 'seqs without holes or repeats');
  assert.deepEqual(acks.map((a) => a.seq), seen.map((m) => m.seq), 'acks match what bob saw');
  assert.deepEqual(aliceSeen.map((m) => m.text), texts, 'alice saw her own messages once each');
  assert.deepEqual(gaps, [], 'the room on disk lived on: nothing missing');
  assert.ok(bobStates.some((s) => s.state === 'reconnecting'), 'bob reconnected too');
  // Full jitter: attempt n waits at most min(max, base * 2^(n-1)) (base 20, max 400 here).
  for (const s of [...bobStates, ...aliceStates].filter((x) => x.state === 'reconnecting')) {
    assert.ok(s.delay >= 0 && s.delay <= Math.min(400, 20 * 2 ** (s.attempt - 1)), `delay ${s.delay} for attempt ${s.attempt}`);
  }
  assert.equal(bob.state, 'open');
  // Resends carry their original ref (the relay's de-duplication depends on it): every ref
  // alice put on the wire belongs to one of the 200 messages, and its text never changed.
  const sent = wire.frames.filter((f) => f.type === 'message');
  const refText = new Map();
  for (const f of sent) {
    assert.equal(refText.get(f.ref) ?? f.text, f.text, `ref ${f.ref} kept its text`);
    refText.set(f.ref, f.text);
  }
  assert.equal(refText.size, N);
  assert.deepEqual(new Set(acks.map((a) => a.ref)), new Set(refText.keys()));
  t.diagnostic(`acknowledged before the kill: ${ackedBeforeKill}; frames sent: ${sent.length} (resends: ${sent.length - N})`);
});

test('edits, deletes and reads reach the other client; a reconnect sends a read made while away', TIMEOUT, async (t) => {
  const relay = await Relay.start(t);
  const alice = client(t, relay, { username: 'alice' });
  const bobWire = tracked();
  const bob = client(t, relay, { username: 'bob', WebSocket: bobWire.WebSocket });
  await alice.join('r');
  await bob.join('r');
  const a1 = await alice.send('r', 'helo');
  const a2 = await alice.send('r', 'oops');

  const bobEdited = next(bob, 'edited');
  const edited = await alice.edit('r', a1.seq, 'hello');
  assert.equal(edited.target, a1.seq);
  assert.equal(edited.text, 'hello');
  assert.deepEqual(await bobEdited, edited);

  const bobDeleted = next(bob, 'deleted');
  const deleted = await alice.delete('r', a2.seq);
  assert.equal(deleted.target, a2.seq);
  assert.deepEqual(await bobDeleted, deleted);

  await assert.rejects(bob.edit('r', a1.seq, 'mine now'), { code: 'not_author' });

  const aliceRead = next(alice, 'read');
  bob.read('r', a2.seq);
  const read = await aliceRead;
  assert.equal(read.username, 'bob');
  assert.equal(read.seq, a2.seq);

  // Scroll-back shows the messages as they are now.
  const page = await bob.history('r', { limit: 10 });
  const byseq = new Map(page.messages.map((m) => [m.seq, m]));
  assert.equal(byseq.get(a1.seq).text, 'hello');
  assert.equal(byseq.get(a1.seq).edited, true);
  assert.equal(byseq.get(a2.seq).deleted, true);

  // A read made while disconnected is sent after the rejoin (alice stays connected: read
  // events are live only, not kept in history).
  const bobGot = next(bob, 'message', (m) => m.text === 'later');
  const a3 = await alice.send('r', 'later');
  await bobGot;
  const bobRejoined = next(bob, 'joined');
  bobWire.drop();
  await next(bob, 'state', (s) => s.state === 'reconnecting');
  const aliceRead2 = next(alice, 'read', (e) => e.seq === a3.seq);
  bob.read('r', a3.seq);
  assert.equal((await bobRejoined).lastRead, a2.seq, 'the relay had the read from before the drop');
  assert.equal((await aliceRead2).username, 'bob');
});

test('resuming with since/epoch fills a hole from history; what the relay no longer keeps is a gap', TIMEOUT, async (t) => {
  for (const memory of [false, true]) {
    // `--history 5`: a joined carries at most 5 messages. On disk, scroll-back reaches further.
    const relay = await Relay.start(t, ['--history', '5', ...(memory ? ['--memory'] : [])]);
    const alice = client(t, relay, { username: 'alice' });
    const joined = await alice.join('h');
    for (let i = 1; i <= 30; i++) await alice.send('h', `h${i}`);

    const bob = client(t, relay, { username: 'bob' });
    const seen = collect(bob, 'message');
    const gaps = collect(bob, 'gap');
    const last = new Promise((resolve) => bob.on('message', (m) => m.text === 'h30' && resolve()));
    const rejoined = await bob.join('h', { since: 3, epoch: joined.epoch });
    assert.equal(rejoined.recovered, false);
    await last;
    if (memory) {
      assert.deepEqual(gaps, [{ room: 'h', from: 4, to: 25, epoch: joined.epoch }]);
      assert.deepEqual(seen.map((m) => m.seq), [26, 27, 28, 29, 30]);
    } else {
      assert.deepEqual(gaps, []);
      assert.deepEqual(seen.map((m) => m.seq), Array.from({ length: 27 }, (_, i) => i + 4));
    }
    await relay.stop();
  }
});

test('a relay in memory restarted: the room starts anew and the client says so with a reset gap', TIMEOUT, async (t) => {
  const relay = await Relay.start(t, ['--memory']);
  const bob = client(t, relay, { username: 'bob' });
  const before = await bob.join('m');
  await bob.send('m', 'first life');
  await relay.kill('SIGKILL');
  const gap = next(bob, 'gap');
  await relay.restart();
  const g = await gap;
  assert.equal(g.reset, true);
  assert.equal(g.room, 'm');
  assert.notEqual(g.epoch, before.epoch);
  const seen = next(bob, 'message', (m) => m.text === 'second life');
  const ack = await bob.send('m', 'second life');
  assert.equal(ack.seq, 1, 'the new life numbers from 1');
  assert.equal((await seen).seq, 1);
});

// What the built-in page (relay/static) relies on beyond the basics.
test('for a UI: its own ref prefix, the ref on a pending send, refused sends left to the caller, count-only presence', TIMEOUT, async (t) => {
  // One message per 20 s, and names listed only in rooms of at most 2.
  const relay = await Relay.start(t, ['--message-rate', '0.05', '--message-burst', '1', '--presence-list-max', '2']);
  const alice = client(t, relay, { username: 'alice', refPrefix: 'p0a1b2-', retrySends: false });
  await alice.join('ui');
  const first = alice.send('ui', 'goes through');
  assert.match(first.ref, /^p0a1b2-\d+$/);
  const echo = next(alice, 'message', (m) => m.text === 'goes through');
  assert.equal((await first).ref, first.ref);
  assert.equal((await echo).ref, first.ref, 'the echo names the pending send');
  // Refused: rejected with the relay's code at once, not resent 1-2 s later by the client.
  const second = alice.send('ui', 'refused');
  await assert.rejects(second, { code: 'rate_limited', ref: second.ref });

  // Resent, but not for ever: one retry 1-2 s later (refused again), then the caller hears.
  const patient = client(t, relay, { username: 'patty', maxRetries: 1 });
  await patient.join('retry');
  await patient.send('retry', 'the one message of its 20 s');
  const started = Date.now();
  const retried = patient.send('retry', 'refused twice');
  await assert.rejects(retried, { code: 'rate_limited', ref: retried.ref });
  assert.ok(Date.now() - started >= 900, 'rejected only after the retry');
  patient.close();

  const bob = client(t, relay, { username: 'bob' });
  const listed = next(alice, 'presence', (p) => p.type === 'user_joined');
  await bob.join('ui');
  assert.equal((await listed).listed, true);
  const countOnly = next(alice, 'presence', (p) => p.type === 'user_joined');
  const carol = client(t, relay, { username: 'carol' });
  await carol.join('ui');
  const big = await countOnly;
  assert.equal(big.listed, false);
  assert.equal(big.count, 3);
  const back = next(alice, 'presence', (p) => p.type === 'user_left');
  carol.close();
  const small = await back;
  assert.equal(small.listed, true);
  assert.deepEqual([...small.users.values()].sort(), ['alice', 'bob']);
});

test('a send whose message the rejoin\'s history shows resolves from it and is not resent; reconnect() skips the backoff', TIMEOUT, async (t) => {
  const relay = await Relay.start(t);
  const frames = [];
  let cut = false;
  // Closes right after a `message` frame and hears nothing more on that socket: the relay
  // stores the message, its ack never arrives.
  class CutAfterMessage extends WebSocket {
    send(data) {
      const frame = JSON.parse(data);
      frames.push(frame);
      super.send(data);
      if (cut && frame.type === 'message') {
        cut = false;
        this.onmessage = null;
        this.close();
      }
    }
  }
  // A backoff of up to 1000 s: only reconnect() brings it back within the test's waits.
  const alice = client(t, relay, { username: 'alice', WebSocket: CutAfterMessage, reconnectBaseMs: 1e6, reconnectMaxMs: 1e6 });
  const bob = client(t, relay, { username: 'bob' });
  await alice.join('h');
  await bob.join('h');
  const bobSees = next(bob, 'message', (m) => m.text === 'ack lost');
  const away = next(alice, 'state', (s) => s.state === 'reconnecting');
  cut = true;
  const sending = alice.send('h', 'ack lost');
  await away;
  const stored = await bobSees;
  const aliceSees = collect(alice, 'message');
  alice.reconnect();
  const ack = await sending;
  assert.equal(ack.seq, stored.seq);
  assert.equal(ack.id, stored.id);
  assert.deepEqual(frames.filter((f) => f.ref === sending.ref).map((f) => f.text), ['ack lost'], 'sent once, never resent');
  assert.deepEqual(aliceSees.map((m) => [m.seq, m.ref]), [[stored.seq, sending.ref]], 'shown once, from the rejoin');
});

test('a 4000 close (admin disconnect) stops reconnecting', TIMEOUT, async (t) => {
  const relay = await Relay.start(t, [], { RELAY_ADMIN_TOKEN: ADMIN_TOKEN });
  const alice = client(t, relay, { username: 'alice' });
  const bob = client(t, relay, { username: 'bob' });
  await alice.join('ops');
  await bob.join('ops');
  const states = collect(alice, 'state');
  const closed = next(alice, 'state', (s) => s.state === 'closed');
  const bobSeesLeave = next(bob, 'presence', (p) => p.type === 'user_left');
  const res = await relay.admin('POST', '/disconnect', { username: 'alice' });
  assert.equal(res.status, 200);
  assert.deepEqual(await closed, { state: 'closed', code: 4000, reason: 'disconnected by admin' });
  // The close handler decides at once: a reconnect would have been scheduled (and said so
  // with a `reconnecting` state) in the same turn as the close.
  assert.deepEqual(states.map((s) => s.state), ['closed']);
  assert.equal(alice.state, 'closed');
  await assert.rejects(alice.send('ops', 'still there?'), { code: 'closed' });
  await assert.rejects(alice.join('ops'), { code: 'closed' });
  // The relay agrees: alice left (bob was told), and only bob is in the room.
  assert.equal((await bobSeesLeave).username, 'alice');
  const room = await (await relay.admin('GET', '/rooms/ops')).json();
  assert.deepEqual(room.members.map((m) => m.username), ['bob']);
});

test('4401: a token callback with a fresh token reconnects; a fixed token that expired closes', TIMEOUT, async (t) => {
  const secret = 'client-tests-secret-0123456789abcdef';
  const relay = await Relay.start(t, ['--auth-secret', secret, '--auth-leeway', '0s']);
  const soon = () => Math.floor(Date.now() / 1000) + 3;
  let calls = 0;
  const alice = client(t, relay, {
    // The first token expires in 2-3 s, the next ones in an hour.
    token: () => hs256({ sub: 'alice', name: 'alice', exp: ++calls === 1 ? soon() : soon() + 3600 }, secret),
  });
  const carol = client(t, relay, { token: hs256({ sub: 'carol', name: 'carol', exp: soon() }, secret) });
  await alice.join('auth');
  await carol.join('auth');
  const aliceStates = collect(alice, 'state');
  const aliceRejoined = next(alice, 'joined');

  const carolClosed = await next(carol, 'state', (s) => s.state === 'closed');
  assert.equal(carolClosed.code, 4401);
  const rejoined = await aliceRejoined;
  assert.equal(rejoined.room, 'auth');
  assert.ok(aliceStates.some((s) => s.state === 'reconnecting' && s.code === 4401), 'alice reconnected after 4401');
  assert.ok(calls >= 2, 'the callback was asked for a fresh token');
  const ack = await alice.send('auth', 'still here');
  assert.equal(ack.room, 'auth');
});
