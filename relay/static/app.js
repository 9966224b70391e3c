// chatrelay browser client: vanilla JS, no build step, on top of the client library
// chatrelay-client (clients/js/index.js, served as /js/chatrelay-client.js): the socket,
// reconnect and backoff, rejoin with since/epoch, resend of unacknowledged sends, ordering
// and de-duplication, presence, typing debounce and history requests are all the library's.
// The page only draws: this module routes the library's events and wires the page; the
// others are in js/ (each served by the relay under /js/, listed in relay/src/routes.rs).
//
// Safety rule for this file and js/*.js: everything that came from the network or from a user (names,
// rooms, message text, error messages) is put into the page with textContent /
// createTextNode only; innerHTML, insertAdjacentHTML and document.write are never used.
//
// Optional URL query parameters (for tests and debugging; a normal visit needs none):
//   ?reconnectBaseMs=100  base of the reconnect backoff in ms (default 500, clamped 10..30000),
//                         used by tests/browser so the reconnect test stays fast.
//   ?room=NAME            pre-fills the room field of the join form.
//   ?token=JWT            for a relay with authentication: sent as a Sec-WebSocket-Protocol
//                         value next to "chatrelay" (browsers cannot set headers).
import { connect, isOpen, reconnectNow, setStatus, updateComposer } from './js/connection.js';
import {
  HISTORY_PAGE, MAX_KNOWN_ROOMS, NEAR_TOP_PX, TYPING_EXPIRE_MS, colorClass, conn, el, h,
  initials, numberFormat, params, state, validName,
} from './js/core.js';
import { forgetRoomLife, onDeleted, onEdited, onMessageAction } from './js/edit.js';
import {
  addSystem, clearMessages, insertOrdered, isMe, isNearBottom, renderMessage,
  replaceMessage, scrollToBottom,
} from './js/messages.js';
import { readJoined, renderSeenBy, scheduleRead } from './js/reads.js';
import { clearReply } from './js/replies.js';
import {
  backgroundJoined, forgetRoom, joinRoom, knownRoom, logEvent, renderRooms, savedRooms,
} from './js/rooms.js';
import { confirmPending, renderPendingOf, sendChat } from './js/send.js';

// ---------------------------------------------------------------- events from the library
// Each arrives once, in the room's seq order (the library's promise): the page only draws.
export function isCurrentRoom(msg) {
  return typeof msg.room !== 'string' || msg.room === state.room;
}

// `message`, `edited`, `deleted`, in any room of the list: logged, and drawn if shown.
export function onLiveEvent(ev) {
  const info = state.rooms.get(ev.room);
  if (!info) return;
  logEvent(ev, info);
  if (ev.room !== state.room) return;
  if (ev.type === 'message') onMessage(ev, true);
  else if (ev.type === 'message_edited') onEdited(ev);
  else onDeleted(ev);
}

export function onJoined(msg) {
  const info = state.rooms.get(msg.room);
  if (!info) return;
  info.joined = true;
  if (typeof msg.clientId === 'string') {
    state.clientId = msg.clientId;
    state.myIds.add(msg.clientId);
  }
  const wasRejoin = info.hasJoinedOnce;
  info.hasJoinedOnce = true;
  // A rejoin that was not `recovered` needs no word of its own here: the library fills what
  // it can from history and says what is lost with a `gap` (onGap).
  if (msg.room !== state.room) {
    readJoined(info, msg, false);
    return backgroundJoined(msg, info);
  }
  state.joined = true;
  renderPresence(msg.room);
  if (wasRejoin) addSystem('Reconnected');
  else addSystem('You joined #' + state.room);
  setStatus('connected', 'Connected');
  readJoined(state, msg, false);
  scrollToBottom();
  scheduleRead();
  return undefined;
}

// The library could not give every message: lost ones (`from`..`to`), or a room that
// started anew (`reset`: another epoch, seqs from 1 again).
export function onGap(gap) {
  const info = state.rooms.get(gap.room);
  if (!info) return;
  const current = gap.room === state.room;
  if (gap.reset) {
    // What the log holds is of the room's earlier life: it is not drawn again.
    info.log = [];
    info.older = [];
    info.historyDone = false;
    info.readSent = 0;
    if (!current) return;
    state.generation += 1;
    state.historyDone = false; // the new life has its own beginning
    state.readSent = 0;
    forgetRoomLife();
    // Placed at the start of the new life, above its messages.
    addSystem('Some earlier messages may be missing', 'warn', 0);
  } else if (current) {
    addSystem('Some earlier messages may be missing', 'warn', gap.from - 1);
  }
}

// A history entry (a `history` page, or a room's log drawn again): messages as they are
// now, and the edits and deletes in their places.
export function onStored(entry, older) {
  if (!entry || typeof entry !== 'object') return;
  if (entry.type === 'message_edited') return onEdited(entry);
  if (entry.type === 'message_deleted') return onDeleted(entry);
  return onMessage(entry, false, older);
}

// Cluster mode only: the relay lost or regained Redis (docs/CLUSTER.md). While degraded,
// messages reach only people on the same server; after a restore that may have missed
// messages the library rejoins with since/epoch and fetches what the room still keeps.
export function onCluster(msg) {
  if (!isCurrentRoom(msg)) return;
  if (msg.state === 'degraded') {
    addSystem('Cluster connection lost: messages reach only people on this server for now', 'warn');
  } else if (msg.state === 'restored' && msg.recovered !== false) {
    addSystem('Cluster connection restored');
  }
}

// `live`: a message event as it happens; `older`: from a scroll-back page (placed above,
// without moving the view).
export function onMessage(msg, live, older = false) {
  if (!isCurrentRoom(msg)) return;
  if (typeof msg.id !== 'string' && typeof msg.id !== 'number') return;
  const id = String(msg.id);
  if (!older && msg.userId !== undefined) removeTyper(String(msg.userId));
  // My own send coming back (live, or in joined.history after a reconnect that lost the
  // ack): it takes the place of its "sending..." bubble.
  const entry = typeof msg.ref === 'string' ? state.pending.get(msg.ref) : undefined;
  if (entry && entry.room === msg.room) {
    confirmPending(entry, msg, false);
  } else if (state.seenIds.has(id)) {
    // Shown already; one shown from its ack alone gets the relay's own copy now.
    const shown = state.byId.get(id);
    if (shown && shown.dataset.provisional) replaceMessage(shown, msg);
    return;
  } else {
    state.seenIds.add(id);
    renderMessage(msg, id, older);
  }
  if (live) {
    renderSeenBy();
    scheduleRead();
  }
}

// ---------------------------------------------------------------- scroll-back
// The oldest seq shown from the room's current life, or null when none is shown.
export function oldestShownSeq() {
  let oldest = null;
  for (const node of el.messages.querySelectorAll('.msg')) {
    if (Number(node.dataset.gen) !== state.generation) continue;
    const seq = Number(node.dataset.seq);
    if (Number.isFinite(seq) && (oldest === null || seq < oldest)) oldest = seq;
  }
  return oldest;
}

export function requestOlder() {
  if (!state.joined || state.historyPending || state.historyDone) return;
  const page = { limit: HISTORY_PAGE };
  const oldest = oldestShownSeq();
  if (oldest !== null) {
    // Nothing is older than seq 1: no need to ask.
    if (oldest <= 1) return showBeginning();
    page.before = oldest;
  }
  const room = state.room;
  const generation = state.generation;
  state.historyPending = true;
  conn.chat.history(room, page).then((answer) => onHistory(room, generation, answer), () => {
    // Refused (rate_limited, ...) or the room was left: scrolling up again retries.
    if (room === state.room) state.historyPending = false;
  });
}

export function onHistory(room, generation, msg) {
  const info = state.rooms.get(room);
  // The room was switched away from, or started anew, meanwhile: the page is not wanted.
  if (!info || room !== state.room || generation !== state.generation) {
    if (room === state.room) state.historyPending = false;
    return;
  }
  state.historyPending = false;
  const messages = Array.isArray(msg.messages) ? msg.messages : [];
  info.older.unshift(...messages);
  const m = el.messages;
  // Kept: the distance from the bottom, so what the reader sees stays where it was while
  // older messages go in above it.
  const fromBottom = m.scrollHeight - m.scrollTop;
  for (const entry of messages) onStored(entry, true);
  if (msg.hasMore === false) showBeginning();
  m.scrollTop = m.scrollHeight - fromBottom;
}

export function showBeginning() {
  if (state.historyDone) return;
  state.historyDone = true;
  const li = h('li', 'system beginning');
  li.dataset.testid = 'beginning';
  li.append(h('span', 'system-text', 'This is the beginning of #' + state.room));
  // Key (generation, 0): above every message of the room's current life.
  insertOrdered(li, state.generation, 0);
}

// Someone arrived or left, or a (re)join's fresh list: the library keeps the room's map.
export function onPresence(ev) {
  const info = state.rooms.get(ev.room);
  if (info) info.presence = { listed: ev.listed, count: ev.count };
  if (ev.room !== state.room) return;
  renderPresence(ev.room);
  if (!state.joined) return;
  if (ev.type === 'user_joined' && !isMe(String(ev.userId), ev.username)) addSystem(nameOf(ev) + ' joined');
  if (ev.type === 'user_left') {
    removeTyper(String(ev.userId));
    addSystem(nameOf(ev) + ' left');
  }
}

export function nameOf(msg) {
  return typeof msg.username === 'string' && msg.username ? msg.username : 'someone';
}

// A relay error no command of the page's was waiting for (e.g. unknown_type).
export function onError(msg) {
  const code = typeof msg.code === 'string' ? msg.code : 'error';
  showBanner(code, typeof msg.message === 'string' ? msg.message : '');
}

// The relay refused to join a room of the list: the shown one says so in the banner; one in
// the background leaves the list, and the page says why.
export function onJoinRefused(room, code, text) {
  if (room !== state.room) {
    state.rooms.delete(room);
    renderRooms();
    addSystem('#' + room + ' left the room list: ' + (text || code), 'warn');
    return;
  }
  showBanner(code, text);
  if (isOpen()) setStatus('connected', 'Connected (not in a room)');
}

// ---------------------------------------------------------------- rendering: presence
// From the library's map of the room (user id to username), or only the count in a room too
// big for the relay to list.
export function renderPresence(room) {
  const p = state.rooms.get(room)?.presence;
  if (!p) return setPresence([], 0);
  const users = p.listed ? [...conn.chat.presence(room)].map(([id, username]) => ({ id, username })) : null;
  return setPresence(users, p.count);
}

// `users` has one entry per person (several tabs of one person are one entry), so "me" is
// whichever entry is this page's person, not this connection.
export function setPresence(users, count) {
  const n = Number.isFinite(count) ? count : Array.isArray(users) ? users.length : 0;
  state.memberCount = n;
  el.onlineCount.textContent = numberFormat.format(n);
  if (Array.isArray(users)) {
    const items = users.map((u) => {
      const id = String(u && u.id !== undefined ? u.id : '');
      const name = u && typeof u.username === 'string' ? u.username : 'unknown';
      const li = h('li', 'user');
      li.dataset.userId = id;
      li.dataset.username = name;
      const avatar = h('span', 'avatar small ' + colorClass(id || name), initials(name));
      avatar.setAttribute('aria-hidden', 'true');
      li.append(avatar, h('span', 'user-name', name));
      if (isMe(id, name)) {
        li.classList.add('me');
        li.append(h('span', 'you-tag', 'you'));
      }
      return li;
    });
    items.sort((a, b) => (b.classList.contains('me') - a.classList.contains('me'))
      || a.dataset.username.localeCompare(b.dataset.username));
    el.users.replaceChildren(...items);
    el.users.hidden = false;
    el.usersNote.hidden = true;
  } else {
    // Big room: the relay sends only the count.
    el.users.replaceChildren();
    el.users.hidden = true;
    el.usersNote.textContent = numberFormat.format(n) + ' online';
    el.usersNote.hidden = false;
  }
  renderSeenBy();
}

// ---------------------------------------------------------------- typing (incoming)
export function onTyping(msg) {
  if (!isCurrentRoom(msg) || !state.joined) return;
  const id = String(msg.userId);
  if (id === state.clientId) return;
  if (msg.isTyping === false) {
    removeTyper(id);
    return;
  }
  const existing = state.typers.get(id);
  if (existing) clearTimeout(existing.timer);
  const timer = setTimeout(() => removeTyper(id), TYPING_EXPIRE_MS);
  state.typers.set(id, { username: nameOf(msg), timer });
  renderTypers();
}

export function removeTyper(id) {
  const t = state.typers.get(id);
  if (!t) return;
  clearTimeout(t.timer);
  state.typers.delete(id);
  renderTypers();
}

export function clearTypers() {
  for (const t of state.typers.values()) clearTimeout(t.timer);
  state.typers.clear();
  renderTypers();
}

export function renderTypers() {
  const names = [...state.typers.values()].map((t) => t.username);
  let text = '';
  if (names.length === 1) text = names[0] + ' is typing...';
  else if (names.length > 1 && names.length <= 3) text = names.join(', ') + ' are typing...';
  else if (names.length > 3) text = names.slice(0, 2).join(', ') + ' and ' + (names.length - 2) + ' others are typing...';
  el.typing.textContent = text;
  el.typing.classList.toggle('active', names.length > 0);
}

// ---------------------------------------------------------------- typing (outgoing)
// The library debounces: one isTyping:true, false after TYPING_IDLE_MS without a keystroke,
// or at once when the text is gone or sent.
export function onInput() {
  autosize();
  updateComposer();
  if (!state.joined) return;
  conn.chat.typing(state.room, el.input.value.trim() !== '');
}

export function stopTypingOut() {
  if (conn.chat && state.room) conn.chat.typing(state.room, false);
}

export function autosize() {
  // Empty: back to the CSS height (a long placeholder must not make the box grow).
  if (el.input.value === '') {
    el.input.style.height = '';
    return;
  }
  el.input.style.height = 'auto';
  const borders = el.input.offsetHeight - el.input.clientHeight;
  el.input.style.height = Math.min(el.input.scrollHeight + borders, 160) + 'px';
}

// ---------------------------------------------------------------- banner
export function showBanner(code, text) {
  el.bannerText.replaceChildren();
  const codeNode = h('code', 'banner-code', code);
  el.bannerText.append(codeNode, document.createTextNode(text ? ' ' + text : ''));
  el.banner.hidden = false;
  el.banner.dataset.code = code;
  addSystem('Error ' + code + (text ? ': ' + text : ''), 'error');
}

export function hideBanner() {
  el.banner.hidden = true;
}

// ---------------------------------------------------------------- rooms
// Empties the view; what a room keeps while not shown is in its room entry.
export function resetRoomState() {
  state.generation = 0;
  state.seenIds = new Set();
  state.joined = false;
  state.historyPending = false;
  state.historyDone = false;
  state.bySeq.clear();
  state.byId.clear();
  state.changes.clear();
  state.changeBySeq.clear();
  state.editing = null;
  clearReply();
  state.reads = new Map();
  state.readSupported = false;
  state.readSent = 0;
  clearTimeout(state.readTimer);
  state.readTimer = null;
  clearTypers();
  clearMessages();
  setPresence([], 0);
}

export function enterRoom(room) {
  state.room = room;
  el.roomTitle.textContent = '#' + room;
  try { localStorage.setItem('chatrelay.room', room); } catch { /* storage off */ }
  const info = knownRoom(room);
  info.unread = 0;
  // Most recently shown last: the first one is the one to drop when there are too many.
  state.rooms.delete(room);
  state.rooms.set(room, info);
  while (state.rooms.size > MAX_KNOWN_ROOMS) forgetRoom(state.rooms.keys().next().value);
  renderRooms();
}

// The shown room's read state goes to its room entry, the new one's comes from its entry.
const ROOM_FIELDS = ['historyDone', 'readSupported', 'readSent', 'reads'];

export function switchRoom(room) {
  if (room === state.room) return;
  stopTypingOut();
  const previous = state.rooms.get(state.room);
  if (previous) {
    for (const f of ROOM_FIELDS) previous[f] = state[f];
    previous.unread = 0;
  }
  for (const entry of state.pending.values()) entry.li = null;
  resetRoomState();
  enterRoom(room);
  hideBanner();
  const info = state.rooms.get(room);
  if (!info.inLib) {
    // New to this page: the library joins it; its history comes as its first events.
    if (isOpen()) setStatus('connecting', 'Joining…');
    joinRoom(room);
  } else {
    for (const f of ROOM_FIELDS) state[f] = info[f];
    showRoom(info);
  }
  updateComposer();
}

// Draws a room joined in the background from what the library emitted for it.
export function showRoom(info) {
  renderPendingOf(state.room);
  for (const entry of info.older) onStored(entry, true);
  for (const entry of info.log) onStored(entry, false);
  const done = state.historyDone;
  state.historyDone = false;
  if (done) showBeginning();
  renderPresence(state.room);
  state.joined = info.joined && isOpen();
  if (state.joined) setStatus('connected', 'Connected');
  scrollToBottom();
  renderSeenBy();
  scheduleRead();
}

// ---------------------------------------------------------------- sidebar (narrow screens)
export function setSidebar(open) {
  el.app.classList.toggle('sidebar-open', open);
  el.scrim.hidden = !open;
  el.menu.setAttribute('aria-expanded', String(open));
}

// ---------------------------------------------------------------- UI wiring
el.joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const username = el.username.value.trim();
  const room = el.room.value.trim().replace(/^#/, '');
  if (!validName(username)) return joinError('Enter a name of 1-64 characters.');
  if (!validName(room)) return joinError('Enter a room name of 1-64 characters.');
  el.joinError.hidden = true;
  try { localStorage.setItem('chatrelay.username', username); } catch { /* storage off */ }
  state.username = username;
  el.me.textContent = username;
  // The rooms of an earlier visit come back to the list, joined in the background, with the
  // relay's unread counts where it keeps read state.
  for (const name of savedRooms()) if (name !== room && validName(name)) knownRoom(name);
  enterRoom(room);
  resetRoomState();
  el.joinScreen.hidden = true;
  el.chatScreen.hidden = false;
  el.menu.hidden = false;
  el.app.dataset.view = 'chat';
  connect();
  el.input.focus();
});

export function joinError(text) {
  el.joinError.textContent = text;
  el.joinError.hidden = false;
}

el.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = el.input.value;
  if (text.trim() === '' || !state.joined) return;
  sendChat(text); // the library's send also ends the typing indicator
  el.input.value = '';
  autosize();
  updateComposer();
  el.input.focus();
});

el.input.addEventListener('input', onInput);
el.input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    el.composer.requestSubmit();
  } else if (event.key === 'Escape' && state.replyTo !== null) {
    event.stopPropagation();
    clearReply();
  }
});
el.replyCancel.addEventListener('click', () => {
  clearReply();
  el.input.focus();
});
el.messages.addEventListener('click', onMessageAction);

el.switchForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const room = el.switchRoom.value.trim().replace(/^#/, '');
  if (!validName(room)) {
    showBanner('invalid_room', 'Room names are 1-64 characters without control or format characters.');
    return;
  }
  el.switchRoom.value = '';
  setSidebar(false);
  switchRoom(room);
});

el.bannerClose.addEventListener('click', hideBanner);
el.retry.addEventListener('click', reconnectNow);
el.jump.addEventListener('click', scrollToBottom);
el.messages.addEventListener('scroll', () => {
  if (isNearBottom()) el.jump.hidden = true;
  if (el.messages.scrollTop <= NEAR_TOP_PX) requestOlder();
  scheduleRead();
});
document.addEventListener('visibilitychange', scheduleRead);
el.menu.addEventListener('click', () => setSidebar(!el.app.classList.contains('sidebar-open')));
el.scrim.addEventListener('click', () => setSidebar(false));
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape') setSidebar(false);
});
window.addEventListener('online', reconnectNow);

// Pre-fill the join form.
try {
  const savedName = localStorage.getItem('chatrelay.username');
  if (savedName && !el.username.value) el.username.value = savedName;
  const savedRoom = localStorage.getItem('chatrelay.room');
  if (savedRoom) el.room.value = savedRoom;
} catch { /* storage off */ }
if (params.get('room')) el.room.value = params.get('room');
setStatus('disconnected', 'Not connected');
