// Type-checked by test/types.test.mjs (`tsc --noEmit -p test/types`), never run: the README's
// example as an application in TypeScript would write it, importing the package by its name.
import { ChatRelay, type Ack, type Joined, type Message, type StateEvent } from 'chatrelay-client';

async function main(token: () => Promise<string>): Promise<void> {
  const chat = new ChatRelay('wss://chat.example.com/ws', { username: 'alice', token, WebSocket });
  const room: Joined = await chat.join('general');
  const since: number = room.seq;
  chat.on('message', (m: Message) => console.log(m.seq, m.username, m.text ?? '(deleted)', m.replyTo));
  chat.on('edited', (e) => console.log(e.target, e.text.toUpperCase()));
  chat.on('deleted', (e) => console.log(e.target));
  chat.on('presence', ({ room, users, count }) => console.log(room, count, [...users.values()].join(', ')));
  chat.on('typing', (e) => console.log(e.username, e.isTyping ? 'is typing' : 'stopped'));
  chat.on('read', (e) => console.log(e.username, 'read up to', e.seq));
  chat.on('gap', (g) => console.log(g.room, g.reset ? 'started anew' : `lost ${g.from}..${g.to}`));
  chat.on('error', (e) => console.warn(e.code, e.message));
  const off = chat.on('state', (s: StateEvent) => {
    if (s.state === 'reconnecting') console.log(`retrying in ${s.delay} ms (attempt ${s.attempt})`);
    if (s.state === 'closed') console.log('closed with', s.code);
  });
  const ack: Ack = await chat.send('general', 'hi', { replyTo: 41 });
  chat.typing('general');
  chat.read('general', ack.seq);
  const edited = await chat.edit('general', ack.seq, 'fixed');
  const deleted = await chat.delete('general', edited.target);
  const older = await chat.history('general', { before: 40, limit: 50 });
  const first: number | undefined = older.messages[0]?.seq;
  const people: ReadonlyMap<string, string> = chat.presence('general');
  console.log(since, deleted.seq, first, older.hasMore, people.size, chat.state);
  await new ChatRelay('ws://localhost:8080/ws', { token: 'a.jwt.here' }).join('r', { since: 41, epoch: 'e' });
  // What the built-in page uses: its own ref prefix, refused sends left to the user, the
  // pending send's ref, presence lists that may be count-only, cluster events, Retry.
  const page = new ChatRelay('ws://localhost:8080/ws', { refPrefix: 'p0123-', retrySends: false });
  const sending = page.send('r', 'hello');
  const pendingRef: string | undefined = sending.ref;
  page.on('presence', (p) => console.log(p.listed ? p.users.size : p.count));
  page.on('cluster', (c) => console.log(c.state === 'degraded', c.recovered));
  page.reconnect();
  console.log(pendingRef, (await sending).seq);
  off();
  chat.close();

  // Misuse the types must catch (an unused @ts-expect-error fails the check).
  // @ts-expect-error: no such event
  chat.on('mesage', () => {});
  // @ts-expect-error: text is a string
  chat.send('general', 42);
  // @ts-expect-error: replyTo is a seq
  chat.send('general', 'hi', { replyTo: '41' });
  // @ts-expect-error: an ack has no text
  console.log(ack.text);
  chat.on('message', (m) => {
    // @ts-expect-error: seq is a number
    const s: string = m.seq;
    console.log(s);
  });
  // @ts-expect-error: presence is read-only
  chat.presence('general').set('x', 'y');
}

void main(async () => 'token');
