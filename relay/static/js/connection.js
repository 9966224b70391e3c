// The connection, which is the client library's (chatrelay-client, clients/js in the
// repository): it reconnects with backoff, rejoins every room with since/epoch, resends
// unacknowledged sends with their refs and emits each room's events once, in order. This
// module creates it, routes its events to the page and shows the connection's state.
import {
  clearTypers, onCluster, onError, onGap, onJoined, onLiveEvent, onPresence, onTyping,
  showBanner, stopTypingOut,
} from '../app.js';
import { ChatRelay } from './chatrelay-client.js';
import { REF_PREFIX, RECONNECT_BASE_MS, TOKEN, TYPING_IDLE_MS, WS_URL, conn, el, state } from './core.js';
import { addSystem } from './messages.js';
import { onRead } from './reads.js';
import { joinRoom } from './rooms.js';

// ---------------------------------------------------------------- connection status
export function setStatus(kind, text) {
  // Only touch the DOM on a change: #status is a live region, and the countdown ticks often.
  if (el.status.dataset.state !== kind) el.status.dataset.state = kind;
  if (el.statusText.textContent !== text) el.statusText.textContent = text;
  el.retry.hidden = !(kind === 'reconnecting' || kind === 'disconnected') || !state.room;
  updateComposer();
}

export function isOpen() {
  return !!conn.chat && conn.chat.state === 'open';
}

export function updateComposer() {
  const usable = isOpen() && state.joined;
  el.input.disabled = !usable;
  el.send.disabled = !usable || el.input.value.trim() === '';
  el.switchBtn.disabled = !state.room;
  el.input.placeholder = usable ? 'Message #' + state.room : 'Waiting for connection…';
}

// ---------------------------------------------------------------- the client
// Creates the client and joins every room of the list (the shown one last).
export function connect() {
  const chat = new ChatRelay(WS_URL, {
    username: state.username,
    token: TOKEN || undefined,
    reconnectBaseMs: RECONNECT_BASE_MS,
    typingIdleMs: TYPING_IDLE_MS,
    refPrefix: REF_PREFIX,
    // A refused message is marked on its bubble with Retry and Discard, not resent by itself.
    retrySends: false,
  });
  conn.chat = chat;
  chat.on('state', onState);
  chat.on('joined', onJoined);
  chat.on('message', onLiveEvent);
  chat.on('edited', onLiveEvent);
  chat.on('deleted', onLiveEvent);
  chat.on('presence', onPresence);
  chat.on('typing', onTyping);
  chat.on('read', onRead);
  chat.on('gap', onGap);
  chat.on('cluster', onCluster);
  chat.on('error', onError);
  for (const name of state.rooms.keys()) if (name !== state.room) joinRoom(name);
  joinRoom(state.room);
}

function onState(ev) {
  clearInterval(state.countdownTimer);
  if (ev.state !== 'open') {
    state.joined = false;
    for (const info of state.rooms.values()) info.joined = false;
    stopTypingOut();
    clearTypers();
  }
  if (ev.state === 'connecting') setStatus('connecting', 'Connecting…');
  else if (ev.state === 'open') setStatus('connecting', 'Joining…');
  else if (ev.state === 'reconnecting') {
    if (ev.code === 4008) addSystem('Connection dropped because the page fell behind; catching up…');
    if (ev.code === 4029) addSystem('Sending too fast: the relay closed the connection; reconnecting shortly…');
    state.reconnectAt = Date.now() + ev.delay;
    const tick = () => {
      const left = Math.max(0, state.reconnectAt - Date.now());
      setStatus('reconnecting', 'Reconnecting in ' + Math.max(1, Math.ceil(left / 1000)) + 's');
    };
    tick();
    state.countdownTimer = setInterval(tick, 250);
  } else if (ev.state === 'closed') {
    setStatus('disconnected', 'Disconnected');
    if (ev.code === 4401) showBanner('closed_4401', 'Your session expired: reload the page with a new token.');
    else if (ev.code !== 1000) {
      showBanner('closed_' + ev.code, 'The relay closed the connection (code ' + ev.code + (ev.reason ? ': ' + ev.reason : '') + ').');
    }
  }
}

// Retry button, the browser going online: at once, or with a new client after a final close.
export function reconnectNow() {
  const chat = conn.chat;
  if (!chat || !state.room) return;
  if (chat.state !== 'closed') {
    chat.reconnect();
    return;
  }
  for (const info of state.rooms.values()) info.inLib = false;
  connect();
}
