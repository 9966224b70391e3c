// The room list: rooms shown before stay joined (by the library) in the background, with
// unread counts; each keeps its events so that it can be drawn again when shown.
import { onJoinRefused, setSidebar, switchRoom } from '../app.js';
import { MAX_KNOWN_ROOMS, MAX_ROOM_LOG, conn, el, h, numberFormat, state } from './core.js';
import { isMine } from './messages.js';

// ---------------------------------------------------------------- room list and unread counts
export function knownRoom(name) {
  let info = state.rooms.get(name);
  if (!info) {
    info = {
      unread: 0, joined: false, inLib: false, hasJoinedOnce: false, presence: null,
      log: [], // message / message_edited / message_deleted events of the room's current life
      older: [], // scroll-back pages above `log`, oldest first
      historyDone: false, readSupported: false, readSent: 0, reads: new Map(),
    };
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

// The library joins it now and rejoins it after every reconnect (with since/epoch).
export function joinRoom(name) {
  const info = state.rooms.get(name);
  if (!info || info.inLib) return;
  info.inLib = true;
  conn.chat.join(name).catch((err) => {
    info.inLib = false;
    info.joined = false;
    if (err.code !== 'left' && err.code !== 'closed') onJoinRefused(name, err.code || 'error', err.message || '');
  });
}

export function forgetRoom(name) {
  const info = state.rooms.get(name);
  if (!info || name === state.room) return;
  state.rooms.delete(name);
  if (info.inLib) conn.chat.leave(name);
  for (const [ref, entry] of state.pending) if (entry.room === name) state.pending.delete(ref);
  renderRooms();
}

// Every message, edit and delete of a room goes into its log (the shown room's too);
// a room in the background also counts what others wrote as unread.
export function logEvent(ev, info) {
  info.log.push(ev);
  if (info.log.length > MAX_ROOM_LOG) {
    info.log.splice(0, info.log.length - MAX_ROOM_LOG);
    // The scroll-back pages no longer join up with the log: scrolling up fetches again.
    info.older = [];
    info.historyDone = false;
  }
  if (ev.room === state.room) return;
  if (ev.type === 'message') {
    // The sends of mine it shows are done.
    if (typeof ev.ref === 'string' && state.pending.get(ev.ref)?.room === ev.room) state.pending.delete(ev.ref);
    // The history of a first join is not news; a rejoin's is what was missed.
    if (info.hasJoinedOnce && !ev.deleted && !isMine(ev)) {
      info.unread += 1;
      renderRooms();
    }
  }
}

// A background room's `joined`: its unread count is the relay's where it keeps read state.
export function backgroundJoined(msg, info) {
  if (Number.isFinite(msg.unread)) info.unread = msg.unread;
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
