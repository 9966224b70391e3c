// Acknowledged sends (PROTOCOL.md "Acknowledged sends"): the library sends each message with
// a ref and resends it after a reconnect until acknowledged; the page shows it as
// "sending..." until its ack or its own echo, and a refused one with Retry and Discard.
import { TOKEN_SUB, conn, state } from './core.js';
import { setActions } from './edit.js';
import { afterInsert, buildMessage, insertOrdered, isNearBottom, track } from './messages.js';
import { renderSeenBy, scheduleRead } from './reads.js';
import { clearReply } from './replies.js';

let localKeys = 0; // for a send the library refused at once (it has no ref then)

// Shows the message at once as "sending..."; the bubble becomes the message when its `ack`
// or its own `message` event (whichever comes first) arrives.
export function sendChat(text) {
  const entry = {
    ref: null, room: state.room, text, replyTo: state.replyTo,
    sentAt: Date.now(), li: null, failed: false, code: '', message: '',
  };
  entry.li = renderPending(entry);
  clearReply();
  transmit(entry);
}

export function transmit(entry) {
  const sending = conn.chat.send(entry.room, entry.text, entry.replyTo !== null ? { replyTo: entry.replyTo } : {});
  entry.ref = sending.ref ?? 'local-' + ++localKeys;
  if (entry.li) entry.li.dataset.ref = entry.ref;
  state.pending.set(entry.ref, entry);
  sending.then((ack) => onAck(entry, ack), (err) => failPending(entry, err.code || 'error', err.message || ''));
}

export function renderPending(entry) {
  const msg = { username: state.username, text: entry.text, timestamp: entry.sentAt };
  if (entry.replyTo !== null) msg.replyTo = entry.replyTo;
  const li = buildMessage(msg, true);
  li.dataset.pending = '1';
  if (entry.ref) li.dataset.ref = entry.ref;
  li.classList.add('pending');
  setMsgStatus(li, 'sending...', 'sending');
  // Below every ordered message until the relay gives it a seq.
  insertOrdered(li, Infinity, Infinity);
  setActions(li);
  afterInsert(true, li);
  return li;
}

// The shown room's sends still waiting or refused, drawn again when the room is shown.
export function renderPendingOf(room) {
  for (const entry of state.pending.values()) {
    if (entry.room !== room) continue;
    entry.li = renderPending(entry);
    if (entry.failed) markFailed(entry);
  }
}

// `msg`: the relay's message event, or (`provisional`) one made from the ack, which the
// message event replaces when it comes.
export function confirmPending(entry, msg, provisional) {
  state.pending.delete(entry.ref);
  if (entry.room !== state.room || !entry.li) return; // not shown: its room's log has it
  const id = String(msg.id);
  const nearBottom = isNearBottom();
  entry.li.remove();
  if (state.byId.has(id)) {
    // Already shown (joined.history after a reconnect): the resend's ack names it.
    afterInsert(nearBottom, state.byId.get(id));
    return;
  }
  if (msg.userId !== undefined && msg.userId !== null) state.myIds.add(String(msg.userId));
  state.seenIds.add(id);
  const li = buildMessage(msg, true);
  li.dataset.id = id;
  if (provisional) li.dataset.provisional = '1';
  insertOrdered(li, state.generation, msg.seq);
  track(li, id, msg.seq);
  afterInsert(nearBottom, li);
  renderSeenBy(); // the newest message may have changed
}

// The library's promise resolved. Absent from `pending`: its message event came first.
export function onAck(entry, ack) {
  if (state.pending.get(entry.ref) !== entry) return;
  const made = {
    id: ack.id, seq: ack.seq, room: ack.room, userId: TOKEN_SUB ?? state.clientId,
    username: state.username, text: entry.text, timestamp: entry.sentAt,
  };
  if (entry.replyTo !== null) made.replyTo = entry.replyTo;
  confirmPending(entry, made, true);
  scheduleRead();
}

export function failPending(entry, code, text) {
  if (state.pending.get(entry.ref) !== entry) return;
  if (code === 'left') {
    // Its room left the list: nothing there to show it in.
    state.pending.delete(entry.ref);
    return;
  }
  entry.failed = true;
  entry.code = code;
  entry.message = text;
  if (entry.room === state.room && entry.li) markFailed(entry);
}

function markFailed(entry) {
  entry.li.classList.add('failed');
  setMsgStatus(entry.li, 'not sent: ' + (entry.message || entry.code), 'failed');
  entry.li.querySelector('.msg-status').dataset.code = entry.code;
  setActions(entry.li);
}

// Retry: a new send (the relay never ordered the refused one, so a new ref is right).
export function retryPending(li) {
  const entry = state.pending.get(li.dataset.ref);
  if (!entry) return;
  state.pending.delete(entry.ref);
  entry.failed = false;
  li.classList.remove('failed');
  setMsgStatus(li, 'sending...', 'sending');
  setActions(li);
  transmit(entry);
}

export function discardPending(li) {
  state.pending.delete(li.dataset.ref);
  li.remove();
}

export function setMsgStatus(li, text, kind) {
  const status = li.querySelector('.msg-status');
  if (!status) return;
  status.textContent = text || '';
  status.hidden = !text;
  if (kind) status.dataset.state = kind;
  else delete status.dataset.state;
}
