// Acknowledged sends (PROTOCOL.md "Acknowledged sends"): every message with a ref, shown as
// "sending..." until its ack or its own echo; resent after a reconnect; refused ones marked.
import { send } from './connection.js';
import { REF_PREFIX, TOKEN_SUB, state } from './core.js';
import { setActions } from './edit.js';
import { afterInsert, buildMessage, insertOrdered, isNearBottom, track } from './messages.js';
import { renderSeenBy, scheduleRead } from './reads.js';
import { clearReply } from './replies.js';

// ---------------------------------------------------------------- sending (acknowledged)
export function nextRef() {
  state.refCounter += 1;
  return REF_PREFIX + state.refCounter;
}

// Shows the message at once as "sending..." and sends it with a ref; the bubble becomes the
// message when its `ack` or its own `message` event (whichever comes first) arrives.
export function sendChat(text) {
  const entry = {
    ref: nextRef(), room: state.room, text, replyTo: state.replyTo,
    sentAt: Date.now(), li: null, failed: false, sentOn: null,
  };
  entry.li = renderPending(entry);
  state.pending.set(entry.ref, entry);
  clearReply();
  transmit(entry);
}

export function transmit(entry) {
  const frame = { type: 'message', room: entry.room, text: entry.text, ref: entry.ref };
  if (entry.replyTo !== null) frame.replyTo = entry.replyTo;
  // Not joined: it goes out after the next `joined`, with the others waiting.
  if (state.joined && send(frame)) entry.sentOn = state.ws;
}

export function renderPending(entry) {
  const msg = { username: state.username, text: entry.text, timestamp: entry.sentAt };
  if (entry.replyTo !== null) msg.replyTo = entry.replyTo;
  const li = buildMessage(msg, true);
  li.dataset.pending = '1';
  li.dataset.ref = entry.ref;
  li.classList.add('pending');
  setMsgStatus(li, 'sending...', 'sending');
  // Below every ordered message until the relay gives it a seq.
  insertOrdered(li, Infinity, Infinity);
  setActions(li);
  afterInsert(true, li);
  return li;
}

// `msg`: the relay's message event, or (`provisional`) one made from the ack, which the
// message event replaces when it comes.
export function confirmPending(entry, msg, provisional) {
  state.pending.delete(entry.ref);
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

export function onAck(msg) {
  if (typeof msg.ref !== 'string') return;
  const entry = state.pending.get(msg.ref);
  // Absent: its message event came first and took the bubble.
  if (!entry || msg.room !== entry.room || !Number.isFinite(msg.seq)) return;
  if (typeof msg.id !== 'string' && typeof msg.id !== 'number') return;
  const made = {
    id: msg.id, seq: msg.seq, room: msg.room, userId: TOKEN_SUB ?? state.clientId,
    username: state.username, text: entry.text, timestamp: entry.sentAt,
  };
  if (entry.replyTo !== null) made.replyTo = entry.replyTo;
  confirmPending(entry, made, true);
  scheduleRead();
}

export function failPending(entry, code, text) {
  entry.failed = true;
  entry.li.classList.add('failed');
  setMsgStatus(entry.li, 'not sent: ' + (text || code), 'failed');
  entry.li.querySelector('.msg-status').dataset.code = code;
  setActions(entry.li);
}

export function retryPending(li) {
  const entry = state.pending.get(li.dataset.ref);
  if (!entry) return;
  entry.failed = false;
  entry.sentOn = null;
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
