// Read state: `read` while the tab is visible, the others' positions, "seen by ...".
import { nameOf } from '../app.js';
import { READ_DEBOUNCE_MS, SEEN_BY_MAX_MEMBERS, TOKEN, conn, el, h, state } from './core.js';
import { seqOf } from './edit.js';
import { isMe, isNearBottom, scrollToBottom } from './messages.js';

// ---------------------------------------------------------------- read state
// Only with a relay whose `joined` carries `lastRead`: an older one would answer `read`
// with unknown_type. `r`: the room's read fields (`state` for the shown room, else its
// room entry).
export function readJoined(r, msg, epochChanged) {
  r.readSupported = Number.isFinite(msg.lastRead);
  if (!r.readSupported) return;
  // Never backwards: another tab of mine may have read further, or this one before a
  // reconnect. A new life of the room numbers from 1 again.
  r.readSent = epochChanged ? msg.lastRead : Math.max(r.readSent, msg.lastRead);
}

export function scheduleRead() {
  if (!state.readSupported || state.readTimer || document.visibilityState !== 'visible') return;
  // At most one `read` per interval, sent at its end with the position then.
  state.readTimer = setTimeout(() => {
    state.readTimer = null;
    flushRead();
  }, READ_DEBOUNCE_MS);
}

// The newest message of the room's current life the reader has had on screen: the last
// one whose top is above the bottom of the list's viewport.
export function shownUpTo() {
  const bottom = el.messages.getBoundingClientRect().bottom;
  for (let li = el.messages.lastElementChild; li; li = li.previousElementSibling) {
    const seq = seqOf(li);
    if (seq === null) continue;
    if (li.getBoundingClientRect().top < bottom) return seq;
  }
  return 0;
}

export function flushRead() {
  if (!state.readSupported || !state.joined || document.visibilityState !== 'visible') return;
  const seq = shownUpTo();
  // The library sends it now, or after the rejoin when the connection is down.
  if (seq > state.readSent) {
    conn.chat.read(state.room, seq);
    state.readSent = seq;
  }
}

export function onRead(msg) {
  const current = msg.room === state.room;
  const r = current ? state : state.rooms.get(msg.room);
  if (!r || !Number.isFinite(msg.seq)) return;
  const id = String(msg.userId ?? '');
  if (isMe(id, msg.username)) {
    // Another tab of mine read this far: this one never reports less.
    r.readSent = Math.max(r.readSent, msg.seq);
    return;
  }
  const known = r.reads.get(id);
  r.reads.set(id, { userId: id, username: nameOf(msg), seq: Math.max(known ? known.seq : 0, msg.seq) });
  if (current) renderSeenBy();
}

// "seen by alice, bob" under the last message, in rooms of at most SEEN_BY_MAX_MEMBERS:
// whoever has read up to it, except me and its author (the same person as the relay sees
// it: the token's sub, else the username).
export function renderSeenBy() {
  for (const old of el.messages.querySelectorAll('.seen-by')) old.remove();
  if (!state.readSupported || state.reads.size === 0 || state.memberCount > SEEN_BY_MAX_MEMBERS) return;
  let last = el.messages.lastElementChild;
  while (last && seqOf(last) === null) last = last.previousElementSibling;
  if (!last) return;
  const seq = seqOf(last);
  const byAuthor = (r) => (TOKEN ? r.userId === last.dataset.userId : r.username === last.dataset.author);
  const names = [...new Set([...state.reads.values()].filter((r) => r.seq >= seq && !byAuthor(r)).map((r) => r.username))]
    .sort((a, b) => a.localeCompare(b));
  if (names.length === 0) return;
  const li = h('li', 'seen-by' + (last.classList.contains('mine') ? ' mine' : ''), 'seen by ' + names.join(', '));
  li.dataset.testid = 'seen-by';
  li.dataset.gen = last.dataset.gen;
  li.dataset.seq = last.dataset.seq;
  const stick = isNearBottom();
  last.after(li);
  if (stick) scrollToBottom();
}
