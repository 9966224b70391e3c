// The socket: connect, reconnect with backoff, join, heartbeat.
import { clearTypers, handleEvent, showBanner, stopTypingOut } from '../app.js';
import {
  HEARTBEAT_GRACE_MS, HEARTBEAT_MS, RECONNECT_BASE_MS, RECONNECT_CAP_MS, TOKEN, WS_URL, el,
  state,
} from './core.js';
import { addSystem } from './messages.js';
import { joinBackground } from './rooms.js';

// ---------------------------------------------------------------- connection status
export function setStatus(kind, text) {
  // Only touch the DOM on a change: #status is a live region, and the countdown ticks often.
  if (el.status.dataset.state !== kind) el.status.dataset.state = kind;
  if (el.statusText.textContent !== text) el.statusText.textContent = text;
  el.retry.hidden = !(kind === 'reconnecting' || kind === 'disconnected') || !state.room;
  updateComposer();
}

export function updateComposer() {
  const usable = state.socketOpen && state.joined;
  el.input.disabled = !usable;
  el.send.disabled = !usable || el.input.value.trim() === '';
  el.switchBtn.disabled = !state.room;
  el.input.placeholder = usable ? 'Message #' + state.room : 'Waiting for connection…';
}

// ---------------------------------------------------------------- socket
export function connect() {
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

export function onSocketGone(code, reason) {
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

export function scheduleReconnect() {
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

export function reconnectNow() {
  if (state.ws || !state.room) return;
  state.stopped = false;
  state.attempt = 0;
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  connect();
}

export function send(obj) {
  if (!state.ws || !state.socketOpen) return false;
  try {
    state.ws.send(JSON.stringify(obj));
    return true;
  } catch {
    return false;
  }
}

export function sendJoin() {
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
export function startHeartbeat() {
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

export function stopHeartbeat() {
  clearInterval(state.heartbeatTimer);
  state.heartbeatTimer = null;
}
