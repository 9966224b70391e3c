// Shared by the page's modules: configuration from the URL, the page's elements, its one
// state object and small helpers. Safety rule and query parameters: see /app.js. The
// connection itself (reconnect, resume, resend, ordering) is the client library's:
// /js/chatrelay-client.js, which is clients/js/index.js.

// ---------------------------------------------------------------- configuration
export const params = new URLSearchParams(location.search);
export const RECONNECT_BASE_MS = clampInt(params.get('reconnectBaseMs'), 10, 30000, 500);
export const TYPING_IDLE_MS = 1500; // send isTyping:false after this long without a keystroke
export const TYPING_EXPIRE_MS = 5000; // forget a remote typer not refreshed for this long
export const MAX_ROOM_LOG = 500; // events kept per room to redraw it when it is shown again
export const NEAR_BOTTOM_PX = 120;
export const HISTORY_PAGE = 20; // messages per scroll-back request (the relay allows 1-100)
export const NEAR_TOP_PX = 40; // scrolled this close to the top: ask for older messages
export const WS_URL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
export const TOKEN = params.get('token');
export const QUOTE_CHARS = 80; // how much of a replied-to message its quote shows
export const READ_DEBOUNCE_MS = 400; // at most one `read` per this long (it counts as a command)
export const SEEN_BY_MAX_MEMBERS = 10; // "seen by ..." only in rooms this small
export const MAX_KNOWN_ROOMS = 8; // rooms kept joined in the background (the relay allows 16)
// Every command goes out with a `ref` (PROTOCOL.md, "Acknowledged sends"): this tab's random
// prefix (given to the library) and a counter. A resend after a reconnect reuses the ref, so
// the relay sends the same `ack` and no second message.
export const REF_PREFIX = 'p' + Array.from(crypto.getRandomValues(new Uint8Array(6)),
  (b) => b.toString(16).padStart(2, '0')).join('') + '-';
// With authentication, authorship is the token's `sub` (what `message.userId` carries).
export const TOKEN_SUB = subOf(TOKEN);

// ---------------------------------------------------------------- elements
const $ = (id) => document.getElementById(id);
export const el = {
  app: $('app'),
  joinScreen: $('join-screen'), joinForm: $('join-form'), username: $('username'),
  room: $('room'), join: $('join'), joinError: $('join-error'),
  chatScreen: $('chat-screen'), roomTitle: $('room-title'), me: $('me'),
  status: $('status'), statusText: $('status-text'), retry: $('retry'),
  menu: $('menu'), sidebar: $('sidebar'), scrim: $('scrim'),
  switchForm: $('switch-form'), switchRoom: $('switch-room'), switchBtn: $('switch'),
  users: $('users'), usersNote: $('users-note'), onlineCount: $('online-count'),
  banner: $('banner'), bannerText: $('banner-text'), bannerClose: $('banner-close'),
  messages: $('messages'), jump: $('jump'), typing: $('typing'),
  composer: $('composer'), input: $('input'), send: $('send'),
  replyBar: $('reply-bar'), replyAuthor: $('reply-author'), replyText: $('reply-text'),
  replyCancel: $('reply-cancel'), rooms: $('rooms'),
};

// ---------------------------------------------------------------- state
// What the page shows; what the connection knows (seqs, epochs, refs, presence) is the
// library's. `conn.chat` is the ChatRelay, null before the join form is sent.
export const conn = { chat: null };
export const state = {
  username: '',
  room: '', // the room this page shows
  joined: false, // got `joined` for state.room on the current connection
  clientId: null,
  myIds: new Set(), // every clientId this page has had, so my older messages stay "mine"
  generation: 0, // bumped when the room starts a new life (epoch): orders messages across it
  seenIds: new Set(),
  // Scroll-back: one `history` request at a time; done once the relay says nothing is older.
  historyPending: false,
  historyDone: false,
  countdownTimer: null,
  reconnectAt: 0,
  // Typing (incoming): userId -> {username, timer}
  typers: new Map(),
  // My sends not acknowledged yet (or refused), in every room: ref -> {ref, room, text,
  // replyTo, sentAt, li, failed, code, message}. The library resends them; the page shows them.
  pending: new Map(),
  // Shown messages of the room's current life: seq -> <li>, and id -> <li>.
  bySeq: new Map(),
  byId: new Map(),
  // My edits and deletes on their way: key -> {kind, seq, before}, and seq -> key.
  changes: new Map(),
  changeBySeq: new Map(),
  changeCounter: 0,
  editing: null, // {li, seq, form} while a message is being edited inline
  replyTo: null, // seq of the message the next send answers
  // Read state of the shown room (kept in its room entry while another one is shown).
  readSupported: false, // its `joined` carried `lastRead`
  readSent: 0, // the highest seq reported read (never goes backwards)
  readTimer: null,
  reads: new Map(), // userId -> {userId, username, seq}: the others' read positions
  memberCount: 0,
  // Rooms this tab has shown, all kept joined: name -> {unread, joined, log, older, ...}
  // (rooms.js knownRoom). `log`: the room's events as the library emitted them, to draw the
  // room again when it is shown.
  rooms: new Map(),
};

// ---------------------------------------------------------------- helpers
// The `sub` claim of a JWT, read without checking it (the relay checks it): only used to
// recognise my own messages. Null when there is no token or it does not parse.
export function subOf(token) {
  if (!token) return null;
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part.padEnd(part.length + (4 - part.length % 4) % 4, '=')));
    return typeof claims.sub === 'string' ? claims.sub : null;
  } catch {
    return null;
  }
}

export function clampInt(text, min, max, fallback) {
  const n = Number.parseInt(text ?? '', 10);
  if (!Number.isFinite(n)) return fallback;
  return Math.min(max, Math.max(min, n));
}

export function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// Room and user names: 1-64 characters once in NFC, no control or format characters
// (PROTOCOL.md, "Names"); the relay normalizes the same way.
export function validName(text) {
  const nfc = text.normalize('NFC');
  const chars = Array.from(nfc);
  return chars.length >= 1 && chars.length <= 64 && !/[\p{Cc}\p{Cf}]/u.test(nfc);
}

export const numberFormat = new Intl.NumberFormat('en-US');
export const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
export const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

export function colorClass(key) {
  let hash = 0;
  for (const ch of String(key)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return 'c' + (hash % 8);
}

export function initials(name) {
  const first = Array.from(String(name).trim())[0] || '?';
  return first.toUpperCase();
}
