// Rendering messages in their order: (generation, seq) keys, mine or not, system lines.
import {
  NEAR_BOTTOM_PX, TOKEN, TOKEN_SUB, colorClass, el, fullFormat, h, initials, state,
  timeFormat,
} from './core.js';
import { cancelEdit, markDeleted, markEdited, setActions } from './edit.js';
import { buildQuote, refreshQuotes } from './replies.js';

// ---------------------------------------------------------------- rendering: messages
// Each <li> carries an ordering key (generation, seq). Messages are inserted in key order;
// system lines take the key of the newest message when they are added, so they stay put.
export function keyOf(node) {
  return [Number(node.dataset.gen), Number(node.dataset.seq)];
}

export function insertOrdered(node, gen, seq) {
  node.dataset.gen = String(gen);
  node.dataset.seq = String(seq);
  const nearBottom = isNearBottom();
  let after = el.messages.lastElementChild;
  while (after) {
    const [g, s] = keyOf(after);
    if (g < gen || (g === gen && s <= seq)) break;
    after = after.previousElementSibling;
  }
  if (after) after.after(node);
  else el.messages.prepend(node);
  return nearBottom;
}

export function currentTailKey() {
  // Bubbles still sending sit below everything at (Infinity, Infinity): skip them.
  let last = el.messages.lastElementChild;
  while (last && last.dataset.pending) last = last.previousElementSibling;
  if (!last) return [state.generation, 0];
  const [g, s] = keyOf(last);
  return g === state.generation ? [g, s] : [state.generation, 0];
}

// Mine: written by this page's user, so it can be edited and deleted. With a token that is
// the token's `sub` (message.userId); without one the relay goes by the username given at
// join (PROTOCOL.md, `edit`), so the same name counts as the same person here too.
export function isMine(msg) {
  const uid = msg.userId === undefined || msg.userId === null ? '' : String(msg.userId);
  if (uid && state.myIds.has(uid)) return true;
  if (TOKEN) return TOKEN_SUB !== null && uid === TOKEN_SUB;
  return typeof msg.username === 'string' && state.username !== ''
    && msg.username === state.username.normalize('NFC');
}

// The same test for a presence entry or a `read`/`typing` event's user.
export function isMe(id, name) {
  if (id && (id === state.clientId || (TOKEN_SUB !== null && id === TOKEN_SUB))) return true;
  if (TOKEN) return false;
  return typeof name === 'string' && state.username !== '' && name === state.username.normalize('NFC');
}

export function buildMessage(msg, mine) {
  const li = h('li', 'msg' + (mine ? ' mine' : ''));
  li.dataset.testid = 'message';
  const author = typeof msg.username === 'string' ? msg.username : 'unknown';
  li.dataset.author = author;
  if (msg.userId !== undefined && msg.userId !== null) li.dataset.userId = String(msg.userId);
  if (msg.local === true) li.dataset.local = '1'; // repeats the last seq: not addressable

  if (!mine) {
    const avatar = h('span', 'avatar ' + colorClass(msg.userId ?? author), initials(author));
    avatar.setAttribute('aria-hidden', 'true');
    li.append(avatar);
  }
  const bubble = h('div', 'bubble');
  const meta = h('div', 'meta');
  meta.append(h('span', 'author', mine ? 'You' : author));
  if (Number.isFinite(msg.timestamp)) {
    const date = new Date(msg.timestamp);
    const time = h('time', 'time', timeFormat.format(date));
    time.dateTime = date.toISOString();
    time.title = fullFormat.format(date);
    meta.append(time);
  }
  const status = h('span', 'msg-status');
  status.dataset.testid = 'msg-status';
  status.hidden = true;
  meta.append(status);
  bubble.append(meta);
  if (Number.isFinite(msg.replyTo)) bubble.append(buildQuote(msg.replyTo));
  bubble.append(h('div', 'text', typeof msg.text === 'string' ? msg.text : ''));
  li.append(bubble);
  if (msg.deleted === true) markDeleted(li);
  else if (msg.edited === true) markEdited(li, msg.editedAt);
  return li;
}

export function renderMessage(msg, id, older) {
  const mine = isMine(msg);
  const li = buildMessage(msg, mine);
  li.dataset.id = id;
  const seq = Number.isFinite(msg.seq) ? msg.seq : currentTailKey()[1];
  const nearBottom = insertOrdered(li, state.generation, seq);
  track(li, id, msg.seq);
  if (!older) afterInsert(nearBottom || mine, li);
}

// Registers a shown message under its id and seq, gives it its actions, and fills in the
// quotes that were waiting for it.
export function track(li, id, seq) {
  state.byId.set(id, li);
  if (Number.isFinite(seq) && !li.dataset.local) {
    state.bySeq.set(seq, li);
    refreshQuotes(seq);
  }
  setActions(li);
}

// The relay's copy of a message shown so far from its ack only: same place, its own content.
export function replaceMessage(shown, msg) {
  const li = buildMessage(msg, shown.classList.contains('mine') || isMine(msg));
  li.dataset.id = shown.dataset.id;
  li.dataset.gen = shown.dataset.gen;
  li.dataset.seq = shown.dataset.seq;
  if (state.editing && state.editing.li === shown) cancelEdit();
  shown.replaceWith(li);
  track(li, li.dataset.id, msg.seq);
}

export function addSystem(text, tone, seqOverride) {
  const li = h('li', 'system' + (tone ? ' ' + tone : ''));
  li.dataset.testid = 'system';
  li.append(h('span', 'system-text', text));
  const [gen, seq] = currentTailKey();
  const nearBottom = insertOrdered(li, gen, seqOverride ?? seq);
  afterInsert(nearBottom, li);
}

export function isNearBottom() {
  const m = el.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < NEAR_BOTTOM_PX;
}

export function scrollToBottom() {
  el.messages.scrollTop = el.messages.scrollHeight;
  el.jump.hidden = true;
}

export function afterInsert(stick, node) {
  if (stick) scrollToBottom();
  else if (node === el.messages.lastElementChild) el.jump.hidden = false;
}

export function clearMessages() {
  el.messages.replaceChildren();
  el.jump.hidden = true;
}
