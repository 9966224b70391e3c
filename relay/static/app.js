// chatrelay browser client: vanilla JS, no build step. Wire protocol: docs/PROTOCOL.md.
// This module routes the relay's events and wires the page; the others are in js/ (each
// served by the relay under /js/, listed in relay/src/routes.rs).
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
import {
  connect, reconnectNow, send, sendJoin, setStatus, updateComposer,
} from './js/connection.js';
import {
  HISTORY_ERRORS, HISTORY_PAGE, MAX_KNOWN_ROOMS, NEAR_TOP_PX, TYPING_EXPIRE_MS,
  TYPING_IDLE_MS, colorClass, el, h, initials, numberFormat, params, state, validName,
} from './js/core.js';
import { forgetRoomLife, onDeleted, onEdited, onMessageAction, revertChange } from './js/edit.js';
import {
  addSystem, clearMessages, insertOrdered, isMe, isNearBottom, renderMessage,
  replaceMessage, scrollToBottom,
} from './js/messages.js';
import { onRead, readJoined, renderSeenBy, scheduleRead } from './js/reads.js';
import { clearReply } from './js/replies.js';
import { forgetRoom, knownRoom, onBackgroundEvent, renderRooms, savedRooms } from './js/rooms.js';
import { confirmPending, failPending, onAck, sendChat, transmit } from './js/send.js';

// ---------------------------------------------------------------- events from the relay
export function handleEvent(msg) {
  if (typeof msg.room === 'string' && msg.room !== state.room && state.rooms.has(msg.room)) {
    return onBackgroundEvent(msg, state.rooms.get(msg.room));
  }
  switch (msg.type) {
    case 'joined': return onJoined(msg);
    case 'message': return onMessage(msg, true);
    case 'ack': return onAck(msg);
    case 'message_edited': return onEdited(msg, true);
    case 'message_deleted': return onDeleted(msg, true);
    case 'read': return onRead(msg);
    case 'user_joined': return onUserJoined(msg);
    case 'user_left': return onUserLeft(msg);
    case 'typing': return onTyping(msg);
    case 'history': return onHistory(msg);
    case 'left': return undefined;
    case 'pong': return undefined;
    case 'error': return onError(msg);
    case 'cluster': return onCluster(msg);
    default: return undefined;
  }
}

export function isCurrentRoom(msg) {
  return typeof msg.room !== 'string' || msg.room === state.room;
}

export function onJoined(msg) {
  if (msg.room !== state.room) return; // a late answer for a room we already switched away from
  const sentSince = !!state.pendingJoinHadSince;
  state.pendingJoinHadSince = false;
  state.joined = true;
  state.attempt = 0; // the connection works: the next drop starts the backoff again
  state.stopped = false;
  if (typeof msg.clientId === 'string') {
    state.clientId = msg.clientId;
    state.myIds.add(msg.clientId);
  }
  const newEpoch = typeof msg.epoch === 'string' ? msg.epoch : null;
  const epochChanged = state.epoch !== null && newEpoch !== state.epoch;
  if (epochChanged) {
    // The room was created anew (relay restart or expiry): seq restarted at 1.
    state.generation += 1;
    state.historyDone = false; // the new life has its own beginning
    forgetRoomLife();
  }
  state.epoch = newEpoch;
  const wasRejoin = state.hasJoinedOnce;
  state.hasJoinedOnce = true;

  if (sentSince && msg.recovered === false) {
    // Placed before the history that follows: at the start of a new epoch, or right
    // after the last message seen in this one.
    addSystem('Some earlier messages may be missing', 'warn', epochChanged ? 0 : (state.lastSeq ?? 0));
  }
  const history = Array.isArray(msg.history) ? msg.history : [];
  for (const m of history) onStored(m, false);
  // joined.seq is the room's latest seq; history runs up to it, so that is what we have seen.
  state.lastSeq = Number.isFinite(msg.seq) ? msg.seq : latestSeqOf(history);

  setPresence(msg.users, msg.count);
  if (wasRejoin) addSystem('Reconnected');
  else addSystem('You joined #' + state.room);
  setStatus('connected', 'Connected');
  // What was sent but not acknowledged goes out again with its ref: the relay answers a ref
  // it already ordered with the same ack and no second message. Not what went out on this
  // very socket (a second join on it, after a cluster restore): that is still on its way.
  for (const entry of state.pending.values()) {
    if (!entry.failed && entry.sentOn !== state.ws) transmit(entry);
  }
  readJoined(msg, epochChanged);
  scrollToBottom();
  scheduleRead();
}

// A history entry (joined.history, a `history` answer): messages as they are now, and the
// edits and deletes in their places.
export function onStored(entry, older) {
  if (!entry || typeof entry !== 'object') return;
  if (entry.type === 'message_edited') return onEdited(entry, false);
  if (entry.type === 'message_deleted') return onDeleted(entry, false);
  return onMessage(entry, false, older);
}

// Cluster mode only: the relay lost or regained Redis (docs/CLUSTER.md). While degraded,
// messages reach only people on the same server; after a restore that may have missed
// messages, rejoining with since/epoch fetches what the room still keeps.
export function onCluster(msg) {
  if (!isCurrentRoom(msg)) return;
  if (msg.state === 'degraded') {
    addSystem('Cluster connection lost: messages reach only people on this server for now', 'warn');
  } else if (msg.state === 'restored') {
    if (msg.recovered === false) sendJoin();
    else addSystem('Cluster connection restored');
  }
}

export function latestSeqOf(history) {
  let seq = 0;
  for (const m of history) if (Number.isFinite(m.seq) && m.seq > seq) seq = m.seq;
  return seq;
}

// `live`: a message event as it happens; `older`: from a scroll-back page (placed above,
// without moving the view).
export function onMessage(msg, live, older = false) {
  if (!isCurrentRoom(msg)) return;
  if (typeof msg.id !== 'string' && typeof msg.id !== 'number') return;
  const id = String(msg.id);
  if (live) advanceSeq(msg.seq);
  if (!older && msg.userId !== undefined) removeTyper(String(msg.userId));
  // My own send coming back (live, or in joined.history after a reconnect that lost the
  // ack): it takes the place of its "sending..." bubble.
  const entry = typeof msg.ref === 'string' ? state.pending.get(msg.ref) : undefined;
  if (entry) {
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

export function advanceSeq(seq) {
  if (Number.isFinite(seq) && (state.lastSeq === null || seq > state.lastSeq)) state.lastSeq = seq;
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
  const request = { type: 'history', room: state.room, limit: HISTORY_PAGE };
  const oldest = oldestShownSeq();
  if (oldest !== null) {
    // Nothing is older than seq 1: no need to ask.
    if (oldest <= 1) return showBeginning();
    request.before = oldest;
  }
  if (send(request)) state.historyPending = true;
}

export function onHistory(msg) {
  if (msg.room !== state.room) return;
  state.historyPending = false;
  const m = el.messages;
  // Kept: the distance from the bottom, so what the reader sees stays where it was while
  // older messages go in above it.
  const fromBottom = m.scrollHeight - m.scrollTop;
  const messages = Array.isArray(msg.messages) ? msg.messages : [];
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

export function onUserJoined(msg) {
  if (!isCurrentRoom(msg) || !state.joined) return;
  setPresence(msg.users, msg.count);
  if (!isMe(String(msg.userId), msg.username)) addSystem(nameOf(msg) + ' joined');
}

export function onUserLeft(msg) {
  if (!isCurrentRoom(msg) || !state.joined) return;
  removeTyper(String(msg.userId));
  setPresence(msg.users, msg.count);
  addSystem(nameOf(msg) + ' left');
}

export function nameOf(msg) {
  return typeof msg.username === 'string' && msg.username ? msg.username : 'someone';
}

export function onError(msg) {
  const code = typeof msg.code === 'string' ? msg.code : 'error';
  const text = typeof msg.message === 'string' ? msg.message : '';
  // These may answer the pending `history`: scrolling up again retries.
  if (HISTORY_ERRORS.has(code)) state.historyPending = false;
  if (typeof msg.ref === 'string') {
    // A refused send is marked on its own bubble (with Retry), not in the banner.
    const entry = state.pending.get(msg.ref);
    if (entry) return failPending(entry, code, text);
    const room = state.joinRefs.get(msg.ref);
    if (room !== undefined) {
      // A room of the list cannot be rejoined: it leaves the list, and the page says why.
      state.joinRefs.delete(msg.ref);
      state.rooms.delete(room);
      renderRooms();
      addSystem('#' + room + ' left the room list: ' + (text || code), 'warn');
      return undefined;
    }
    revertChange(msg.ref);
  }
  showBanner(code, text);
  // A failed join leaves the page without a room; let the user pick another one.
  if (!state.joined && (code === 'invalid_room' || code === 'invalid_username' || code === 'too_many_rooms')) {
    setStatus('connected', 'Connected (not in a room)');
  }
}

// ---------------------------------------------------------------- rendering: presence
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
export function onInput() {
  autosize();
  updateComposer();
  if (!state.joined) return;
  if (el.input.value.trim() === '') {
    stopTypingOut(true);
    return;
  }
  if (!state.typingSent) {
    state.typingSent = send({ type: 'typing', room: state.room, isTyping: true });
  }
  clearTimeout(state.typingIdleTimer);
  state.typingIdleTimer = setTimeout(() => stopTypingOut(true), TYPING_IDLE_MS);
}

export function stopTypingOut(notify) {
  clearTimeout(state.typingIdleTimer);
  state.typingIdleTimer = null;
  if (state.typingSent && notify) send({ type: 'typing', room: state.room, isTyping: false });
  state.typingSent = false;
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
export function resetRoomState() {
  state.epoch = null;
  state.lastSeq = null;
  state.generation = 0;
  state.seenIds = new Set();
  state.hasJoinedOnce = false;
  state.joined = false;
  state.historyPending = false;
  state.historyDone = false;
  // Unacknowledged sends belong to the room left: the page does not rejoin it to resend.
  state.pending.clear();
  state.bySeq.clear();
  state.byId.clear();
  state.changes.clear();
  state.changeBySeq.clear();
  state.editing = null;
  clearReply();
  state.reads.clear();
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

export function switchRoom(room) {
  if (room === state.room) return;
  stopTypingOut(true);
  // The room shown so far stays joined in the background, resuming from what was shown.
  const previous = state.rooms.get(state.room);
  if (previous) {
    previous.epoch = state.epoch;
    previous.lastSeq = state.lastSeq;
    previous.joined = state.joined;
    previous.unread = 0;
  }
  resetRoomState();
  enterRoom(room);
  hideBanner();
  if (state.socketOpen) {
    setStatus('connecting', 'Joining…');
    sendJoin();
  } else {
    reconnectNow();
  }
  updateComposer();
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
  stopTypingOut(true);
  sendChat(text);
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
window.addEventListener('online', () => {
  if (!state.ws && state.room) reconnectNow();
});

// Pre-fill the join form.
try {
  const savedName = localStorage.getItem('chatrelay.username');
  if (savedName && !el.username.value) el.username.value = savedName;
  const savedRoom = localStorage.getItem('chatrelay.room');
  if (savedRoom) el.room.value = savedRoom;
} catch { /* storage off */ }
if (params.get('room')) el.room.value = params.get('room');
setStatus('disconnected', 'Not connected');
