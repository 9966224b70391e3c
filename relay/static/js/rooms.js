// The room list: rooms shown before stay joined in the background with unread counts.
import { latestSeqOf, setSidebar, switchRoom } from '../app.js';
import { send } from './connection.js';
import { MAX_KNOWN_ROOMS, el, h, numberFormat, state } from './core.js';
import { isMine } from './messages.js';
import { nextRef } from './send.js';

// ---------------------------------------------------------------- room list and unread counts
export function knownRoom(name) {
  let info = state.rooms.get(name);
  if (!info) {
    info = { epoch: null, lastSeq: null, unread: 0, joined: false };
    state.rooms.set(name, info);
  }
  return info;
}

export function savedRooms() {
  try {
    const list = JSON.parse(localStorage.getItem('chatrelay.rooms') || '[]');
    return Array.isArray(list) ? list.filter((x) => typeof x === 'string').slice(-MAX_KNOWN_ROOMS) : [];
  } catch {
    return [];
  }
}

export function joinBackground(name) {
  const info = state.rooms.get(name);
  if (!info) return;
  // With a ref, so that an error it causes (forbidden_room, room_limit, ...) names it.
  const ref = nextRef();
  const join = { type: 'join', room: name, username: state.username, ref };
  if (info.epoch !== null && info.lastSeq !== null) {
    join.since = info.lastSeq;
    join.epoch = info.epoch;
  }
  if (send(join)) state.joinRefs.set(ref, name);
}

export function forgetRoom(name) {
  const info = state.rooms.get(name);
  if (!info || name === state.room) return;
  state.rooms.delete(name);
  if (info.joined) send({ type: 'leave', room: name });
  renderRooms();
}

// Events of a room joined in the background: only what its unread count and its resume
// point need. Its messages are shown (from joined.history) when it is opened.
export function onBackgroundEvent(msg, info) {
  const name = msg.room;
  switch (msg.type) {
    case 'joined': {
      for (const [ref, room] of state.joinRefs) if (room === name) state.joinRefs.delete(ref);
      const fresh = typeof msg.epoch === 'string' && msg.epoch !== info.epoch;
      const history = Array.isArray(msg.history) ? msg.history : [];
      if (Number.isFinite(msg.unread)) {
        info.unread = msg.unread; // the relay's count after this person's read position
      } else if (info.lastSeq !== null) {
        // A relay without read state: count what the others sent since this tab last had
        // the room (all of a new life of the room).
        const after = fresh ? 0 : info.lastSeq;
        info.unread += history.filter((m) => m && m.type === 'message' && !m.deleted && !isMine(m)
          && Number.isFinite(m.seq) && m.seq > after).length;
      }
      info.epoch = typeof msg.epoch === 'string' ? msg.epoch : null;
      info.lastSeq = Number.isFinite(msg.seq) ? msg.seq : latestSeqOf(history);
      info.joined = true;
      break;
    }
    case 'message':
      if (Number.isFinite(msg.seq) && (info.lastSeq === null || msg.seq > info.lastSeq)) info.lastSeq = msg.seq;
      if (!isMine(msg)) info.unread += 1;
      break;
    case 'message_edited':
    case 'message_deleted':
      if (Number.isFinite(msg.seq) && (info.lastSeq === null || msg.seq > info.lastSeq)) info.lastSeq = msg.seq;
      break;
    case 'cluster':
      if (msg.state === 'restored' && msg.recovered === false) joinBackground(name);
      break;
    case 'left':
      info.joined = false;
      break;
    default:
      break;
  }
  renderRooms();
}

export function renderRooms() {
  const items = [...state.rooms.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, info]) => {
    const li = h('li', 'room-item' + (name === state.room ? ' current' : ''));
    li.dataset.testid = 'room-item';
    li.dataset.room = name;
    const open = h('button', 'room-link');
    open.type = 'button';
    open.append(h('span', 'room-name', '#' + name));
    if (name === state.room) open.setAttribute('aria-current', 'true');
    open.addEventListener('click', () => {
      setSidebar(false);
      switchRoom(name);
    });
    li.append(open);
    if (name !== state.room && info.unread > 0) {
      const badge = h('span', 'unread-badge', info.unread > 99 ? '99+' : numberFormat.format(info.unread));
      badge.dataset.testid = 'unread';
      badge.dataset.count = String(info.unread);
      badge.title = info.unread + ' unread';
      open.append(badge);
    }
    if (name !== state.room) {
      const leave = h('button', 'icon-btn room-leave', '×');
      leave.type = 'button';
      leave.setAttribute('aria-label', 'Leave #' + name);
      leave.addEventListener('click', () => forgetRoom(name));
      li.append(leave);
    }
    return li;
  });
  el.rooms.replaceChildren(...items);
  el.rooms.hidden = items.length < 2;
  try { localStorage.setItem('chatrelay.rooms', JSON.stringify([...state.rooms.keys()])); } catch { /* storage off */ }
  let unread = 0;
  for (const [name, info] of state.rooms) if (name !== state.room) unread += info.unread;
  document.title = (unread > 0 ? '(' + unread + ') ' : '') + (state.room ? '#' + state.room + ' · ' : '') + 'chatrelay';
}
