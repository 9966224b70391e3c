// chatrelay browser client: vanilla JS, no build step. Wire protocol: docs/PROTOCOL.md.
//
// Safety rule for this file: everything that came from the network or from a user (names,
// rooms, message text, error messages) is put into the page with textContent /
// createTextNode only; innerHTML, insertAdjacentHTML and document.write are never used.
//
// Optional URL query parameters (for tests and debugging; a normal visit needs none):
//   ?reconnectBaseMs=100  base of the reconnect backoff in ms (default 500, clamped 10..30000),
//                         used by tests/browser so the reconnect test stays fast.
//   ?room=NAME            pre-fills the room field of the join form.
//   ?token=JWT            for a relay with authentication: sent as a Sec-WebSocket-Protocol
//                         value next to "chatrelay" (browsers cannot set headers).
'use strict';

(() => {
  // ---------------------------------------------------------------- configuration
  const params = new URLSearchParams(location.search);
  const RECONNECT_BASE_MS = clampInt(params.get('reconnectBaseMs'), 10, 30000, 500);
  const RECONNECT_CAP_MS = 30000;
  const TYPING_IDLE_MS = 1500; // send isTyping:false after this long without a keystroke
  const TYPING_EXPIRE_MS = 5000; // forget a remote typer not refreshed for this long
  const HEARTBEAT_MS = 25000; // application ping while connected
  const HEARTBEAT_GRACE_MS = 10000; // no traffic at all this long after a ping: reconnect
  const NEAR_BOTTOM_PX = 120;
  const HISTORY_PAGE = 20; // messages per scroll-back request (the relay allows 1-100)
  const NEAR_TOP_PX = 40; // scrolled this close to the top: ask for older messages
  const HISTORY_ERRORS = new Set(['rate_limited', 'server_busy', 'invalid_history', 'not_joined']);
  const WS_URL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  const TOKEN = params.get('token');
  const QUOTE_CHARS = 80; // how much of a replied-to message its quote shows
  const READ_DEBOUNCE_MS = 400; // at most one `read` per this long (it counts as a command)
  const SEEN_BY_MAX_MEMBERS = 10; // "seen by ..." only in rooms this small
  const MAX_KNOWN_ROOMS = 8; // rooms kept joined in the background (the relay allows 16)
  // Every `message` goes out with a `ref` (PROTOCOL.md, "Acknowledged sends"): this tab's random
  // prefix and a counter. A resend after a reconnect reuses the ref, so the relay sends the
  // same `ack` and no second message.
  const REF_PREFIX = 'p' + Array.from(crypto.getRandomValues(new Uint8Array(6)),
    (b) => b.toString(16).padStart(2, '0')).join('') + '-';
  // With authentication, authorship is the token's `sub` (what `message.userId` carries).
  const TOKEN_SUB = subOf(TOKEN);

  // ---------------------------------------------------------------- elements
  const $ = (id) => document.getElementById(id);
  const el = {
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
  const state = {
    username: '',
    room: '', // the room this page shows (and joins / rejoins)
    ws: null,
    socketOpen: false,
    joined: false, // got `joined` for state.room on the current socket
    clientId: null,
    myIds: new Set(), // every clientId this page has had, so my older messages stay "mine"
    // Per-room resume state; reset when switching rooms.
    epoch: null, // epoch from the last `joined`
    lastSeq: null, // last seq seen in this room (in `epoch`); null before the first joined
    generation: 0, // bumped when the epoch changes: orders messages across relay restarts
    seenIds: new Set(),
    hasJoinedOnce: false,
    // Scroll-back: one `history` request at a time; done once the relay says nothing is older.
    historyPending: false,
    historyDone: false,
    // Reconnection.
    attempt: 0,
    reconnectTimer: null,
    countdownTimer: null,
    reconnectAt: 0,
    stopped: false, // true after a close code that says "do not retry blindly"
    // Heartbeat.
    heartbeatTimer: null,
    lastTraffic: 0,
    // Typing (outgoing).
    typingSent: false,
    typingIdleTimer: null,
    // Typing (incoming): userId -> {username, timer}
    typers: new Map(),
    // Sent messages not acknowledged yet (or refused): ref -> {ref, room, text, replyTo, li,
    // failed}. Resent with the same ref after every rejoin until acked or refused.
    pending: new Map(),
    refCounter: 0,
    // Shown messages of the room's current life: seq -> <li>, and id -> <li>.
    bySeq: new Map(),
    byId: new Map(),
    // My edits and deletes on their way: ref -> {kind, seq, before}, and seq -> ref.
    changes: new Map(),
    changeBySeq: new Map(),
    editing: null, // {li, seq, form} while a message is being edited inline
    replyTo: null, // seq of the message the next send answers
    // Read state (only once the relay's `joined` carries `lastRead`).
    readSupported: false,
    readSent: 0, // the highest seq sent in a `read` (never goes backwards)
    readTimer: null,
    reads: new Map(), // userId -> {username, seq}: the others' read positions
    memberCount: 0,
    // Rooms this tab has shown, kept joined while another one is shown so their new messages
    // count as unread: name -> {epoch, lastSeq, unread, joined}. The shown room is one of them
    // (its epoch and lastSeq live in the fields above while it is shown).
    rooms: new Map(),
    joinRefs: new Map(), // ref of a background join -> its room, to tell its error apart
  };

  // ---------------------------------------------------------------- helpers
  // The `sub` claim of a JWT, read without checking it (the relay checks it): only used to
  // recognise my own messages. Null when there is no token or it does not parse.
  function subOf(token) {
    if (!token) return null;
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const claims = JSON.parse(atob(part.padEnd(part.length + (4 - part.length % 4) % 4, '=')));
      return typeof claims.sub === 'string' ? claims.sub : null;
    } catch {
      return null;
    }
  }

  function clampInt(text, min, max, fallback) {
    const n = Number.parseInt(text ?? '', 10);
    if (!Number.isFinite(n)) return fallback;
    return Math.min(max, Math.max(min, n));
  }

  function h(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // Room and user names: 1-64 characters once in NFC, no control or format characters
  // (PROTOCOL.md, "Names"); the relay normalizes the same way.
  function validName(text) {
    const nfc = text.normalize('NFC');
    const chars = Array.from(nfc);
    return chars.length >= 1 && chars.length <= 64 && !/[\p{Cc}\p{Cf}]/u.test(nfc);
  }

  const numberFormat = new Intl.NumberFormat('en-US');
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

  function colorClass(key) {
    let hash = 0;
    for (const ch of String(key)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    return 'c' + (hash % 8);
  }

  function initials(name) {
    const first = Array.from(String(name).trim())[0] || '?';
    return first.toUpperCase();
  }

  // ---------------------------------------------------------------- connection status
  function setStatus(kind, text) {
    // Only touch the DOM on a change: #status is a live region, and the countdown ticks often.
    if (el.status.dataset.state !== kind) el.status.dataset.state = kind;
    if (el.statusText.textContent !== text) el.statusText.textContent = text;
    el.retry.hidden = !(kind === 'reconnecting' || kind === 'disconnected') || !state.room;
    updateComposer();
  }

  function updateComposer() {
    const usable = state.socketOpen && state.joined;
    el.input.disabled = !usable;
    el.send.disabled = !usable || el.input.value.trim() === '';
    el.switchBtn.disabled = !state.room;
    el.input.placeholder = usable ? 'Message #' + state.room : 'Waiting for connection…';
  }

  // ---------------------------------------------------------------- socket
  function connect() {
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    state.reconnectTimer = null;
    if (state.ws) return;
    setStatus('connecting', 'Connecting…');
    let ws;
    try {
      ws = TOKEN ? new WebSocket(WS_URL, ['chatrelay', TOKEN]) : new WebSocket(WS_URL);
    } catch (err) {
      showBanner('connect_failed', String(err && err.message ? err.message : err));
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    ws.onopen = () => {
      if (state.ws !== ws) return;
      state.socketOpen = true;
      state.lastTraffic = Date.now();
      setStatus('connecting', 'Joining…');
      // The rooms in the background first: the room joined last is the relay's current room.
      for (const name of state.rooms.keys()) if (name !== state.room) joinBackground(name);
      sendJoin();
      startHeartbeat();
    };
    ws.onmessage = (event) => {
      if (state.ws !== ws) return;
      state.lastTraffic = Date.now();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg && typeof msg === 'object') handleEvent(msg);
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      onSocketGone(event.code, event.reason);
    };
    // `error` is always followed by `close`; nothing to do here.
    ws.onerror = () => {};
  }

  function onSocketGone(code, reason) {
    const ws = state.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    }
    state.ws = null;
    state.socketOpen = false;
    state.joined = false;
    for (const info of state.rooms.values()) info.joined = false;
    state.joinRefs.clear();
    state.historyPending = false; // its answer died with the socket
    stopHeartbeat();
    stopTypingOut(false);
    clearTypers();
    if (code === 1002 || code === 1007) {
      // The relay says this client broke the protocol: retrying blindly would loop.
      state.stopped = true;
      setStatus('disconnected', 'Disconnected');
      showBanner('closed_' + code, 'The relay closed the connection (code ' + code + (reason ? ': ' + reason : '') + ').');
      return;
    }
    if (code === 4401) {
      // The token expired: reconnecting with the same one would only get HTTP 401.
      state.stopped = true;
      setStatus('disconnected', 'Disconnected');
      showBanner('closed_4401', 'Your session expired: reload the page with a new token.');
      return;
    }
    if (code === 4008) addSystem('Connection dropped because the page fell behind; catching up…');
    if (code === 4029) addSystem('Sending too fast: the relay closed the connection; reconnecting shortly…');
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (state.stopped || state.reconnectTimer) return;
    // Exponential backoff with full jitter: random(0, min(cap, base * 2^attempt)).
    const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** Math.min(state.attempt, 20));
    const delay = Math.random() * ceiling;
    state.attempt += 1;
    state.reconnectAt = Date.now() + delay;
    state.reconnectTimer = setTimeout(() => {
      state.reconnectTimer = null;
      connect();
    }, delay);
    const tick = () => {
      const left = Math.max(0, state.reconnectAt - Date.now());
      setStatus('reconnecting', 'Reconnecting in ' + Math.max(1, Math.ceil(left / 1000)) + 's');
    };
    tick();
    clearInterval(state.countdownTimer);
    state.countdownTimer = setInterval(tick, 250);
  }

  function reconnectNow() {
    if (state.ws || !state.room) return;
    state.stopped = false;
    state.attempt = 0;
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    connect();
  }

  function send(obj) {
    if (!state.ws || !state.socketOpen) return false;
    try {
      state.ws.send(JSON.stringify(obj));
      return true;
    } catch {
      return false;
    }
  }

  function sendJoin() {
    const join = { type: 'join', room: state.room, username: state.username };
    if (state.epoch !== null && state.lastSeq !== null) {
      join.since = state.lastSeq;
      join.epoch = state.epoch;
    }
    state.pendingJoinHadSince = 'since' in join;
    send(join);
  }

  // Application-level heartbeat: catches half-open connections (e.g. a laptop that slept)
  // faster than TCP does. Any received frame counts as proof of life.
  function startHeartbeat() {
    stopHeartbeat();
    state.heartbeatTimer = setInterval(() => {
      if (!state.socketOpen) return;
      if (Date.now() - state.lastTraffic > HEARTBEAT_MS + HEARTBEAT_GRACE_MS) {
        const ws = state.ws;
        onSocketGone(4000, 'heartbeat');
        try { ws && ws.close(); } catch { /* already closing */ }
        return;
      }
      send({ type: 'ping' });
    }, HEARTBEAT_MS);
  }

  function stopHeartbeat() {
    clearInterval(state.heartbeatTimer);
    state.heartbeatTimer = null;
  }

  // ---------------------------------------------------------------- events from the relay
  function handleEvent(msg) {
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

  function isCurrentRoom(msg) {
    return typeof msg.room !== 'string' || msg.room === state.room;
  }

  function onJoined(msg) {
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
  function onStored(entry, older) {
    if (!entry || typeof entry !== 'object') return;
    if (entry.type === 'message_edited') return onEdited(entry, false);
    if (entry.type === 'message_deleted') return onDeleted(entry, false);
    return onMessage(entry, false, older);
  }

  // Cluster mode only: the relay lost or regained Redis (docs/CLUSTER.md). While degraded,
  // messages reach only people on the same server; after a restore that may have missed
  // messages, rejoining with since/epoch fetches what the room still keeps.
  function onCluster(msg) {
    if (!isCurrentRoom(msg)) return;
    if (msg.state === 'degraded') {
      addSystem('Cluster connection lost: messages reach only people on this server for now', 'warn');
    } else if (msg.state === 'restored') {
      if (msg.recovered === false) sendJoin();
      else addSystem('Cluster connection restored');
    }
  }

  function latestSeqOf(history) {
    let seq = 0;
    for (const m of history) if (Number.isFinite(m.seq) && m.seq > seq) seq = m.seq;
    return seq;
  }

  // `live`: a message event as it happens; `older`: from a scroll-back page (placed above,
  // without moving the view).
  function onMessage(msg, live, older = false) {
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

  function advanceSeq(seq) {
    if (Number.isFinite(seq) && (state.lastSeq === null || seq > state.lastSeq)) state.lastSeq = seq;
  }

  // ---------------------------------------------------------------- scroll-back
  // The oldest seq shown from the room's current life, or null when none is shown.
  function oldestShownSeq() {
    let oldest = null;
    for (const node of el.messages.querySelectorAll('.msg')) {
      if (Number(node.dataset.gen) !== state.generation) continue;
      const seq = Number(node.dataset.seq);
      if (Number.isFinite(seq) && (oldest === null || seq < oldest)) oldest = seq;
    }
    return oldest;
  }

  function requestOlder() {
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

  function onHistory(msg) {
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

  function showBeginning() {
    if (state.historyDone) return;
    state.historyDone = true;
    const li = h('li', 'system beginning');
    li.dataset.testid = 'beginning';
    li.append(h('span', 'system-text', 'This is the beginning of #' + state.room));
    // Key (generation, 0): above every message of the room's current life.
    insertOrdered(li, state.generation, 0);
  }

  function onUserJoined(msg) {
    if (!isCurrentRoom(msg) || !state.joined) return;
    setPresence(msg.users, msg.count);
    if (!isMe(String(msg.userId), msg.username)) addSystem(nameOf(msg) + ' joined');
  }

  function onUserLeft(msg) {
    if (!isCurrentRoom(msg) || !state.joined) return;
    removeTyper(String(msg.userId));
    setPresence(msg.users, msg.count);
    addSystem(nameOf(msg) + ' left');
  }

  function nameOf(msg) {
    return typeof msg.username === 'string' && msg.username ? msg.username : 'someone';
  }

  function onError(msg) {
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

  // ---------------------------------------------------------------- rendering: messages
  // Each <li> carries an ordering key (generation, seq). Messages are inserted in key order;
  // system lines take the key of the newest message when they are added, so they stay put.
  function keyOf(node) {
    return [Number(node.dataset.gen), Number(node.dataset.seq)];
  }

  function insertOrdered(node, gen, seq) {
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

  function currentTailKey() {
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
  function isMine(msg) {
    const uid = msg.userId === undefined || msg.userId === null ? '' : String(msg.userId);
    if (uid && state.myIds.has(uid)) return true;
    if (TOKEN) return TOKEN_SUB !== null && uid === TOKEN_SUB;
    return typeof msg.username === 'string' && state.username !== ''
      && msg.username === state.username.normalize('NFC');
  }

  // The same test for a presence entry or a `read`/`typing` event's user.
  function isMe(id, name) {
    if (id && (id === state.clientId || (TOKEN_SUB !== null && id === TOKEN_SUB))) return true;
    if (TOKEN) return false;
    return typeof name === 'string' && state.username !== '' && name === state.username.normalize('NFC');
  }

  function buildMessage(msg, mine) {
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

  function renderMessage(msg, id, older) {
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
  function track(li, id, seq) {
    state.byId.set(id, li);
    if (Number.isFinite(seq) && !li.dataset.local) {
      state.bySeq.set(seq, li);
      refreshQuotes(seq);
    }
    setActions(li);
  }

  // The relay's copy of a message shown so far from its ack only: same place, its own content.
  function replaceMessage(shown, msg) {
    const li = buildMessage(msg, shown.classList.contains('mine') || isMine(msg));
    li.dataset.id = shown.dataset.id;
    li.dataset.gen = shown.dataset.gen;
    li.dataset.seq = shown.dataset.seq;
    if (state.editing && state.editing.li === shown) cancelEdit();
    shown.replaceWith(li);
    track(li, li.dataset.id, msg.seq);
  }

  function addSystem(text, tone, seqOverride) {
    const li = h('li', 'system' + (tone ? ' ' + tone : ''));
    li.dataset.testid = 'system';
    li.append(h('span', 'system-text', text));
    const [gen, seq] = currentTailKey();
    const nearBottom = insertOrdered(li, gen, seqOverride ?? seq);
    afterInsert(nearBottom, li);
  }

  function isNearBottom() {
    const m = el.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() {
    el.messages.scrollTop = el.messages.scrollHeight;
    el.jump.hidden = true;
  }

  function afterInsert(stick, node) {
    if (stick) scrollToBottom();
    else if (node === el.messages.lastElementChild) el.jump.hidden = false;
  }

  function clearMessages() {
    el.messages.replaceChildren();
    el.jump.hidden = true;
  }

  // ---------------------------------------------------------------- sending (acknowledged)
  function nextRef() {
    state.refCounter += 1;
    return REF_PREFIX + state.refCounter;
  }

  // Shows the message at once as "sending..." and sends it with a ref; the bubble becomes the
  // message when its `ack` or its own `message` event (whichever comes first) arrives.
  function sendChat(text) {
    const entry = {
      ref: nextRef(), room: state.room, text, replyTo: state.replyTo,
      sentAt: Date.now(), li: null, failed: false, sentOn: null,
    };
    entry.li = renderPending(entry);
    state.pending.set(entry.ref, entry);
    clearReply();
    transmit(entry);
  }

  function transmit(entry) {
    const frame = { type: 'message', room: entry.room, text: entry.text, ref: entry.ref };
    if (entry.replyTo !== null) frame.replyTo = entry.replyTo;
    // Not joined: it goes out after the next `joined`, with the others waiting.
    if (state.joined && send(frame)) entry.sentOn = state.ws;
  }

  function renderPending(entry) {
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
  function confirmPending(entry, msg, provisional) {
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

  function onAck(msg) {
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

  function failPending(entry, code, text) {
    entry.failed = true;
    entry.li.classList.add('failed');
    setMsgStatus(entry.li, 'not sent: ' + (text || code), 'failed');
    entry.li.querySelector('.msg-status').dataset.code = code;
    setActions(entry.li);
  }

  function retryPending(li) {
    const entry = state.pending.get(li.dataset.ref);
    if (!entry) return;
    entry.failed = false;
    entry.sentOn = null;
    li.classList.remove('failed');
    setMsgStatus(li, 'sending...', 'sending');
    setActions(li);
    transmit(entry);
  }

  function discardPending(li) {
    state.pending.delete(li.dataset.ref);
    li.remove();
  }

  function setMsgStatus(li, text, kind) {
    const status = li.querySelector('.msg-status');
    if (!status) return;
    status.textContent = text || '';
    status.hidden = !text;
    if (kind) status.dataset.state = kind;
    else delete status.dataset.state;
  }

  // ---------------------------------------------------------------- message actions
  // The seq a message can be answered, edited or deleted by: only messages of the room's
  // current life the relay has ordered (not sending, not a degraded cluster's local copy).
  function seqOf(li) {
    if (!li || li.dataset.pending || li.dataset.stale || li.dataset.local) return null;
    const seq = Number(li.dataset.seq);
    return Number.isFinite(seq) && state.bySeq.get(seq) === li ? seq : null;
  }

  function setActions(li, mode) {
    let bar = li.querySelector('.actions');
    if (!bar) {
      bar = h('div', 'actions');
      bar.dataset.testid = 'actions';
      li.append(bar);
    }
    bar.replaceChildren();
    bar.classList.toggle('confirming', mode === 'confirm-delete');
    const add = (action, label, title) => {
      const button = h('button', 'action action-' + action, label);
      button.type = 'button';
      button.dataset.action = action;
      if (title) button.title = title;
      bar.append(button);
    };
    const editing = state.editing && state.editing.li === li;
    if (li.dataset.pending) {
      if (li.classList.contains('failed')) {
        add('retry', 'Retry', 'Send it again');
        add('discard', 'Discard', 'Remove it');
      }
    } else if (mode === 'confirm-delete') {
      bar.append(h('span', 'confirm-text', 'Delete this message?'));
      add('confirm-delete', 'Delete');
      add('cancel-delete', 'Cancel');
    } else if (seqOf(li) !== null && !li.dataset.deleted && !editing) {
      add('reply', 'Reply', 'Reply with a quote');
      if (li.classList.contains('mine') && !li.dataset.changing) {
        add('edit', 'Edit', 'Edit your message');
        add('delete', 'Delete', 'Delete your message');
      }
    }
    bar.hidden = bar.childElementCount === 0;
  }

  const noHover = window.matchMedia('(hover: none)');

  function onMessageAction(event) {
    const button = event.target.closest('[data-action]');
    if (!button || !el.messages.contains(button)) {
      // Touch screens have no hover: a tap on a message shows its actions (and hides the others').
      const tapped = event.target.closest('.msg');
      if (noHover.matches && tapped && !event.target.closest('.edit-form')) {
        const open = !tapped.classList.contains('actions-open');
        for (const li of el.messages.querySelectorAll('.msg.actions-open')) li.classList.remove('actions-open');
        tapped.classList.toggle('actions-open', open);
      }
      return;
    }
    const li = button.closest('.msg');
    if (!li) return;
    switch (button.dataset.action) {
      case 'reply': return startReply(li);
      case 'edit': return startEdit(li);
      case 'delete': return setActions(li, 'confirm-delete');
      case 'confirm-delete': return sendDelete(li);
      case 'cancel-delete': return setActions(li);
      case 'retry': return retryPending(li);
      case 'discard': return discardPending(li);
      case 'jump': return jumpTo(Number(button.dataset.parent));
      default: return undefined;
    }
  }

  // Messages of an earlier life of the room (before an epoch change) keep their place but
  // their seqs now name other messages: they can no longer be answered or changed.
  function forgetRoomLife() {
    for (const li of state.bySeq.values()) {
      li.dataset.stale = '1';
      setActions(li);
    }
    state.bySeq.clear();
    state.changes.clear();
    state.changeBySeq.clear();
    cancelEdit();
    clearReply();
    state.reads.clear();
  }

  // ---------------------------------------------------------------- edit and delete
  function startEdit(li) {
    const seq = seqOf(li);
    const textNode = li.querySelector('.bubble > .text');
    if (seq === null || !textNode || !state.joined) return;
    cancelEdit();
    const form = h('form', 'edit-form');
    const input = h('textarea', 'edit-input');
    input.dataset.testid = 'edit-input';
    input.maxLength = 2000;
    input.rows = Math.min(6, textNode.textContent.split('\n').length);
    input.value = textNode.textContent;
    input.setAttribute('aria-label', 'Edit message');
    const save = h('button', 'edit-save', 'Save');
    save.type = 'submit';
    const cancel = h('button', 'edit-cancel', 'Cancel');
    cancel.type = 'button';
    const buttons = h('div', 'edit-buttons');
    buttons.append(h('span', 'edit-hint', 'Enter to save, Esc to cancel'), cancel, save);
    form.append(input, buttons);
    textNode.hidden = true;
    textNode.after(form);
    state.editing = { li, seq, form };
    setActions(li);
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      } else if (event.key === 'Escape') {
        event.preventDefault();
        event.stopPropagation();
        cancelEdit();
      }
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      saveEdit();
    });
    cancel.addEventListener('click', cancelEdit);
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  function closeEditor() {
    const ed = state.editing;
    if (!ed) return null;
    state.editing = null;
    ed.form.remove();
    const textNode = ed.li.querySelector('.bubble > .text');
    if (textNode) textNode.hidden = false;
    setActions(ed.li);
    return ed;
  }

  function cancelEdit() {
    const ed = closeEditor();
    if (ed && ed.li.isConnected && document.activeElement === document.body) el.input.focus();
  }

  function saveEdit() {
    const ed = state.editing;
    if (!ed) return;
    const textNode = ed.li.querySelector('.bubble > .text');
    const text = ed.form.querySelector('textarea').value;
    if (!textNode || text.trim() === '' || text === textNode.textContent) return cancelEdit();
    const ref = nextRef();
    if (!state.joined || !send({ type: 'edit', room: state.room, seq: ed.seq, text, ref })) {
      showBanner('not_connected', 'Not connected: the edit was not sent.');
      return undefined;
    }
    state.changes.set(ref, { kind: 'edit', seq: ed.seq, before: textNode.textContent });
    state.changeBySeq.set(ed.seq, ref);
    closeEditor();
    // Shown at once; `message_edited` confirms it, an error with this ref puts it back.
    textNode.textContent = text;
    ed.li.dataset.changing = '1';
    setMsgStatus(ed.li, 'saving...', 'sending');
    setActions(ed.li);
    refreshQuotes(ed.seq);
    return undefined;
  }

  function sendDelete(li) {
    const seq = seqOf(li);
    if (seq === null) return;
    const ref = nextRef();
    if (!state.joined || !send({ type: 'delete', room: state.room, seq, ref })) {
      setActions(li);
      showBanner('not_connected', 'Not connected: the message was not deleted.');
      return;
    }
    state.changes.set(ref, { kind: 'delete', seq });
    state.changeBySeq.set(seq, ref);
    li.dataset.changing = '1';
    setMsgStatus(li, 'deleting...', 'sending');
    setActions(li);
  }

  // An error answered one of my edits or deletes: the message shows what the relay has.
  function revertChange(ref) {
    const change = state.changes.get(ref);
    if (!change) return;
    state.changes.delete(ref);
    if (state.changeBySeq.get(change.seq) === ref) state.changeBySeq.delete(change.seq);
    const li = state.bySeq.get(change.seq);
    if (!li) return;
    delete li.dataset.changing;
    setMsgStatus(li, '');
    const textNode = li.querySelector('.bubble > .text');
    if (change.kind === 'edit' && textNode) {
      textNode.textContent = change.before;
      refreshQuotes(change.seq);
    }
    setActions(li);
  }

  // A change of mine the relay carried out (the event is the confirmation).
  function settleChange(seq) {
    const ref = state.changeBySeq.get(seq);
    if (ref === undefined) return;
    state.changeBySeq.delete(seq);
    state.changes.delete(ref);
  }

  function onEdited(msg, live) {
    if (!isCurrentRoom(msg)) return;
    if (live) advanceSeq(msg.seq);
    const li = state.bySeq.get(msg.target);
    // A delete is final: an older edit replayed from history does not bring the text back.
    if (!li || li.dataset.deleted || typeof msg.text !== 'string') return;
    settleChange(msg.target);
    delete li.dataset.changing;
    setMsgStatus(li, '');
    const textNode = li.querySelector('.bubble > .text');
    if (textNode) textNode.textContent = msg.text;
    markEdited(li, msg.editedAt);
    setActions(li);
    refreshQuotes(msg.target);
  }

  function onDeleted(msg, live) {
    if (!isCurrentRoom(msg)) return;
    if (live) advanceSeq(msg.seq);
    const li = state.bySeq.get(msg.target);
    if (!li) return;
    settleChange(msg.target);
    delete li.dataset.changing;
    setMsgStatus(li, '');
    markDeleted(li);
    refreshQuotes(msg.target);
    if (state.replyTo === msg.target) renderReplyBar();
    renderSeenBy();
  }

  function markEdited(li, editedAt) {
    li.dataset.edited = '1';
    const meta = li.querySelector('.meta');
    let mark = meta.querySelector('.edited');
    if (!mark) {
      mark = h('span', 'edited', '(edited)');
      mark.dataset.testid = 'edited';
      meta.insertBefore(mark, meta.querySelector('.msg-status'));
    }
    if (Number.isFinite(editedAt)) mark.title = 'edited ' + fullFormat.format(new Date(editedAt));
  }

  // "message deleted" and nothing of what it said: no text, no quote, no actions.
  function markDeleted(li) {
    if (state.editing && state.editing.li === li) closeEditor();
    li.dataset.deleted = '1';
    li.classList.add('deleted');
    const bubble = li.querySelector('.bubble');
    for (const node of bubble.querySelectorAll(':scope > .text, :scope > .quote, .edited')) node.remove();
    if (!bubble.querySelector('.tombstone')) {
      const note = h('div', 'tombstone', 'message deleted');
      note.dataset.testid = 'tombstone';
      bubble.append(note);
    }
    setActions(li);
  }

  // ---------------------------------------------------------------- replies and quotes
  function snippet(text) {
    const flat = String(text).replace(/\s+/g, ' ').trim();
    const chars = Array.from(flat);
    return chars.length > QUOTE_CHARS ? chars.slice(0, QUOTE_CHARS).join('') + '…' : flat;
  }

  function buildQuote(parentSeq) {
    const quote = h('button', 'quote');
    quote.type = 'button';
    quote.dataset.testid = 'quote';
    quote.dataset.action = 'jump';
    quote.dataset.parent = String(parentSeq);
    fillQuote(quote);
    return quote;
  }

  // The parent's author and the start of its text, or why there is none to show.
  function fillQuote(quote) {
    const parent = state.bySeq.get(Number(quote.dataset.parent));
    quote.replaceChildren();
    quote.classList.toggle('missing', !parent);
    if (!parent) {
      quote.append(h('span', 'quote-text', 'original message not loaded'));
      quote.title = '';
      return;
    }
    const author = parent.classList.contains('mine') ? 'You' : parent.dataset.author;
    quote.append(h('span', 'quote-author', author));
    const textNode = parent.querySelector('.bubble > .text');
    const text = parent.dataset.deleted || !textNode ? 'message deleted' : snippet(textNode.textContent);
    quote.append(h('span', 'quote-text', text));
    quote.title = 'Show the message ' + author + ' wrote';
  }

  function refreshQuotes(seq) {
    for (const quote of el.messages.querySelectorAll('.quote[data-parent="' + seq + '"]')) {
      if (!quote.closest('.msg').dataset.stale) fillQuote(quote);
    }
    if (state.replyTo === seq) renderReplyBar();
  }

  function jumpTo(seq) {
    const li = state.bySeq.get(seq);
    if (!li) return;
    li.scrollIntoView({ block: 'center' });
    li.classList.remove('flash');
    void li.offsetWidth; // restart the animation
    li.classList.add('flash');
  }

  function startReply(li) {
    const seq = seqOf(li);
    if (seq === null || li.dataset.deleted) return;
    state.replyTo = seq;
    renderReplyBar();
    el.input.focus();
  }

  function clearReply() {
    state.replyTo = null;
    renderReplyBar();
  }

  function renderReplyBar() {
    if (state.replyTo === null) {
      el.replyBar.hidden = true;
      return;
    }
    const parent = state.bySeq.get(state.replyTo);
    const textNode = parent && parent.querySelector('.bubble > .text');
    el.replyAuthor.textContent = !parent ? 'a message' : parent.classList.contains('mine') ? 'yourself' : parent.dataset.author;
    el.replyText.textContent = !parent ? '' : parent.dataset.deleted || !textNode ? 'message deleted' : snippet(textNode.textContent);
    el.replyBar.hidden = false;
  }

  // ---------------------------------------------------------------- read state
  // Only with a relay whose `joined` carries `lastRead`: an older one would answer `read`
  // with unknown_type.
  function readJoined(msg, epochChanged) {
    state.readSupported = Number.isFinite(msg.lastRead);
    if (!state.readSupported) return;
    // Never backwards: another tab of mine may have read further, or this one before a
    // reconnect. A new life of the room numbers from 1 again.
    state.readSent = epochChanged ? msg.lastRead : Math.max(state.readSent, msg.lastRead);
  }

  function scheduleRead() {
    if (!state.readSupported || state.readTimer || document.visibilityState !== 'visible') return;
    // At most one `read` per interval, sent at its end with the position then.
    state.readTimer = setTimeout(() => {
      state.readTimer = null;
      flushRead();
    }, READ_DEBOUNCE_MS);
  }

  // The newest message of the room's current life the reader has had on screen: the last
  // one whose top is above the bottom of the list's viewport.
  function shownUpTo() {
    const bottom = el.messages.getBoundingClientRect().bottom;
    for (let li = el.messages.lastElementChild; li; li = li.previousElementSibling) {
      const seq = seqOf(li);
      if (seq === null) continue;
      if (li.getBoundingClientRect().top < bottom) return seq;
    }
    return 0;
  }

  function flushRead() {
    if (!state.readSupported || !state.joined || document.visibilityState !== 'visible') return;
    const seq = shownUpTo();
    if (seq > state.readSent && send({ type: 'read', room: state.room, seq })) state.readSent = seq;
  }

  function onRead(msg) {
    if (!isCurrentRoom(msg) || !Number.isFinite(msg.seq)) return;
    const id = String(msg.userId ?? '');
    if (isMe(id, msg.username)) {
      // Another tab of mine read this far: this one never reports less.
      state.readSent = Math.max(state.readSent, msg.seq);
      return;
    }
    const known = state.reads.get(id);
    state.reads.set(id, { userId: id, username: nameOf(msg), seq: Math.max(known ? known.seq : 0, msg.seq) });
    renderSeenBy();
  }

  // "seen by alice, bob" under the last message, in rooms of at most SEEN_BY_MAX_MEMBERS:
  // whoever has read up to it, except me and its author (the same person as the relay sees
  // it: the token's sub, else the username).
  function renderSeenBy() {
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

  // ---------------------------------------------------------------- rendering: presence
  // `users` has one entry per person (several tabs of one person are one entry), so "me" is
  // whichever entry is this page's person, not this connection.
  function setPresence(users, count) {
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
  function onTyping(msg) {
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

  function removeTyper(id) {
    const t = state.typers.get(id);
    if (!t) return;
    clearTimeout(t.timer);
    state.typers.delete(id);
    renderTypers();
  }

  function clearTypers() {
    for (const t of state.typers.values()) clearTimeout(t.timer);
    state.typers.clear();
    renderTypers();
  }

  function renderTypers() {
    const names = [...state.typers.values()].map((t) => t.username);
    let text = '';
    if (names.length === 1) text = names[0] + ' is typing...';
    else if (names.length > 1 && names.length <= 3) text = names.join(', ') + ' are typing...';
    else if (names.length > 3) text = names.slice(0, 2).join(', ') + ' and ' + (names.length - 2) + ' others are typing...';
    el.typing.textContent = text;
    el.typing.classList.toggle('active', names.length > 0);
  }

  // ---------------------------------------------------------------- typing (outgoing)
  function onInput() {
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

  function stopTypingOut(notify) {
    clearTimeout(state.typingIdleTimer);
    state.typingIdleTimer = null;
    if (state.typingSent && notify) send({ type: 'typing', room: state.room, isTyping: false });
    state.typingSent = false;
  }

  function autosize() {
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
  function showBanner(code, text) {
    el.bannerText.replaceChildren();
    const codeNode = h('code', 'banner-code', code);
    el.bannerText.append(codeNode, document.createTextNode(text ? ' ' + text : ''));
    el.banner.hidden = false;
    el.banner.dataset.code = code;
    addSystem('Error ' + code + (text ? ': ' + text : ''), 'error');
  }

  function hideBanner() {
    el.banner.hidden = true;
  }

  // ---------------------------------------------------------------- rooms
  function resetRoomState() {
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

  function enterRoom(room) {
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

  function switchRoom(room) {
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

  // ---------------------------------------------------------------- room list and unread counts
  function knownRoom(name) {
    let info = state.rooms.get(name);
    if (!info) {
      info = { epoch: null, lastSeq: null, unread: 0, joined: false };
      state.rooms.set(name, info);
    }
    return info;
  }

  function savedRooms() {
    try {
      const list = JSON.parse(localStorage.getItem('chatrelay.rooms') || '[]');
      return Array.isArray(list) ? list.filter((x) => typeof x === 'string').slice(-MAX_KNOWN_ROOMS) : [];
    } catch {
      return [];
    }
  }

  function joinBackground(name) {
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

  function forgetRoom(name) {
    const info = state.rooms.get(name);
    if (!info || name === state.room) return;
    state.rooms.delete(name);
    if (info.joined) send({ type: 'leave', room: name });
    renderRooms();
  }

  // Events of a room joined in the background: only what its unread count and its resume
  // point need. Its messages are shown (from joined.history) when it is opened.
  function onBackgroundEvent(msg, info) {
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

  function renderRooms() {
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

  // ---------------------------------------------------------------- sidebar (narrow screens)
  function setSidebar(open) {
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

  function joinError(text) {
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
})();
