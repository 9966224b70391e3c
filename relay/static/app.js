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
  };

  // ---------------------------------------------------------------- helpers
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
    switch (msg.type) {
      case 'joined': return onJoined(msg);
      case 'message': return onMessage(msg, true);
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
    for (const m of history) onMessage(m, false);
    // joined.seq is the room's latest seq; history runs up to it, so that is what we have seen.
    state.lastSeq = Number.isFinite(msg.seq) ? msg.seq : latestSeqOf(history);

    setPresence(msg.users, msg.count);
    if (wasRejoin) addSystem('Reconnected');
    else addSystem('You joined #' + state.room);
    setStatus('connected', 'Connected');
    scrollToBottom();
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
    if (live && Number.isFinite(msg.seq) && (state.lastSeq === null || msg.seq > state.lastSeq)) {
      state.lastSeq = msg.seq;
    }
    if (state.seenIds.has(id)) return;
    state.seenIds.add(id);
    if (!older && msg.userId !== undefined) removeTyper(String(msg.userId));
    renderMessage(msg, id, older);
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
    for (const entry of messages) {
      if (entry && typeof entry === 'object') onMessage(entry, false, true);
    }
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
    if (msg.userId !== state.clientId) addSystem(nameOf(msg) + ' joined');
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
    const last = el.messages.lastElementChild;
    if (!last) return [state.generation, 0];
    const [g, s] = keyOf(last);
    return g === state.generation ? [g, s] : [state.generation, 0];
  }

  function renderMessage(msg, id, older) {
    const mine = state.myIds.has(String(msg.userId));
    const li = h('li', 'msg' + (mine ? ' mine' : ''));
    li.dataset.id = id;
    li.dataset.testid = 'message';
    const author = typeof msg.username === 'string' ? msg.username : 'unknown';
    li.dataset.author = author;

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
    bubble.append(meta, h('div', 'text', typeof msg.text === 'string' ? msg.text : ''));
    li.append(bubble);

    const seq = Number.isFinite(msg.seq) ? msg.seq : currentTailKey()[1];
    const nearBottom = insertOrdered(li, state.generation, seq);
    if (!older) afterInsert(nearBottom || mine, li);
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

  // ---------------------------------------------------------------- rendering: presence
  function setPresence(users, count) {
    const n = Number.isFinite(count) ? count : Array.isArray(users) ? users.length : 0;
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
        if (state.myIds.has(id) && id === state.clientId) {
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
      state.typingSent = send({ type: 'typing', isTyping: true });
    }
    clearTimeout(state.typingIdleTimer);
    state.typingIdleTimer = setTimeout(() => stopTypingOut(true), TYPING_IDLE_MS);
  }

  function stopTypingOut(notify) {
    clearTimeout(state.typingIdleTimer);
    state.typingIdleTimer = null;
    if (state.typingSent && notify) send({ type: 'typing', isTyping: false });
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
    clearTypers();
    clearMessages();
    setPresence([], 0);
  }

  function enterRoom(room) {
    state.room = room;
    el.roomTitle.textContent = '#' + room;
    document.title = '#' + room + ' · chatrelay';
    try { localStorage.setItem('chatrelay.room', room); } catch { /* storage off */ }
  }

  function switchRoom(room) {
    if (room === state.room) return;
    stopTypingOut(true);
    if (state.socketOpen && state.joined) send({ type: 'leave', room: state.room });
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
    if (send({ type: 'message', text, room: state.room })) {
      el.input.value = '';
      autosize();
      updateComposer();
      el.input.focus();
    }
  });

  el.input.addEventListener('input', onInput);
  el.input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      el.composer.requestSubmit();
    }
  });

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
  });
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
