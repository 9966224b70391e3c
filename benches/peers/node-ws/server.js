'use strict';
// Baseline peer for chatrelay benchmarks: a chat relay written the way the popular
// Node.js + `ws` tutorials write it (a Map of rooms -> Set of clients, JSON.stringify once
// per broadcast, a history array of the last 100 messages and a seq counter per room).
// It speaks the wire protocol in docs/PROTOCOL.md.
//
//   PORT=8081 node server.js          (listens on 127.0.0.1 only; HOST overrides)

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer, WebSocket } = require('ws');

const PORT = Number(process.env.PORT || 8081);
const HOST = process.env.HOST || '127.0.0.1';

// The protocol's defaults (PROTOCOL.md / `relay --help`).
const HISTORY = 100;
const PRESENCE_LIST_MAX = 100;
const MAX_ROOMS_PER_CONNECTION = 16;
const MAX_TEXT_CHARS = 2000;
const MAX_MESSAGE_BYTES = 64 * 1024;
const MAX_OUTBOUND_BYTES = 1024 * 1024;
const PING_INTERVAL_MS = 30_000;
// An empty room is kept this long before it is forgotten (a later join then gets a new epoch).
const ROOM_TTL_MS = Number(process.env.ROOM_TTL_MS || 60_000);

const instance = crypto.randomBytes(3).toString('hex'); // "3fa9c1"
let nextClient = 0;
let nextMessage = 0;

/** @type {Map<string, {name: string, epoch: string, seq: number, history: object[], clients: Set<WebSocket>, expiry: NodeJS.Timeout | null}>} */
const rooms = new Map();
let shuttingDown = false;

const CONTROL = /\p{Cc}/u;
function charCount(s) {
  // Unicode characters, not UTF-16 units; a string no longer than `max` units is always fine.
  let n = 0;
  for (const _ of s) n++;
  return n;
}
function validName(s) {
  return typeof s === 'string' && s.length > 0 && (s.length <= 64 || charCount(s) <= 64) && !CONTROL.test(s);
}

function send(ws, data) {
  if (ws.readyState !== WebSocket.OPEN) return;
  if (ws.bufferedAmount > MAX_OUTBOUND_BYTES) {
    ws.close(4008, 'slow consumer');
    return;
  }
  ws.send(data);
}
function sendJson(ws, obj) {
  send(ws, JSON.stringify(obj));
}
function sendError(ws, code, message) {
  sendJson(ws, { type: 'error', code, message });
}

function broadcast(room, obj, except) {
  const data = JSON.stringify(obj);
  for (const client of room.clients) {
    if (client !== except) send(client, data);
  }
}

function usersOf(room) {
  const users = [];
  for (const client of room.clients) users.push({ id: client.id, username: client.username });
  return users;
}

function getOrCreateRoom(name) {
  let room = rooms.get(name);
  if (!room) {
    room = {
      name,
      epoch: crypto.randomBytes(8).toString('hex'),
      seq: 0,
      history: [],
      clients: new Set(),
      expiry: null,
    };
    rooms.set(name, room);
  }
  if (room.expiry) {
    clearTimeout(room.expiry);
    room.expiry = null;
  }
  return room;
}

function removeFromRoom(ws, room) {
  room.clients.delete(ws);
  ws.rooms.delete(room.name);
  if (room.clients.size === 0) {
    room.expiry = setTimeout(() => {
      if (room.clients.size === 0) rooms.delete(room.name);
    }, ROOM_TTL_MS);
    room.expiry.unref();
  } else {
    const event = { type: 'user_left', room: room.name, userId: ws.id, username: ws.username, count: room.clients.size };
    if (room.clients.size <= PRESENCE_LIST_MAX) event.users = usersOf(room);
    broadcast(room, event);
  }
}

// The room a message/typing/leave is for: the named one (must be joined) or the current one.
function targetRoom(ws, msg) {
  if (msg.room != null) {
    if (ws.rooms.has(msg.room)) return rooms.get(msg.room);
    sendError(ws, 'not_joined', 'not a member of that room; join it first');
    return null;
  }
  if (ws.currentRoom === null) {
    sendError(ws, 'not_joined', 'join a room first');
    return null;
  }
  return rooms.get(ws.currentRoom);
}

// As in the relay, the known fields of every frame must have the right JSON type whatever the
// frame's `type` (null counts as absent); a wrong type is answered with invalid_json.
function fieldTypeError(msg) {
  for (const key of ['type', 'room', 'username', 'epoch', 'text']) {
    if (msg[key] != null && typeof msg[key] !== 'string') return `invalid JSON: ${key} must be a string`;
  }
  if (msg.isTyping != null && typeof msg.isTyping !== 'boolean') return 'invalid JSON: isTyping must be a boolean';
  if (msg.since != null && !(Number.isSafeInteger(msg.since) && msg.since >= 0)) {
    return 'invalid JSON: since must be a non-negative integer';
  }
  return null;
}

function handleJoin(ws, msg) {
  if (msg.room == null) return sendError(ws, 'missing_field', 'missing field: room');
  if (!validName(msg.room)) {
    return sendError(ws, 'invalid_room', 'room must be 1-64 characters without control characters');
  }
  if (msg.username != null && !validName(msg.username)) {
    return sendError(ws, 'invalid_username', 'username must be 1-64 characters without control characters');
  }
  const already = ws.rooms.has(msg.room);
  if (!already && ws.rooms.size >= MAX_ROOMS_PER_CONNECTION) {
    return sendError(ws, 'too_many_rooms', `at most ${MAX_ROOMS_PER_CONNECTION} rooms per connection`);
  }
  if (typeof msg.username === 'string') ws.username = msg.username;
  else if (ws.username === null) ws.username = `anon-${ws.id}`;

  const room = getOrCreateRoom(msg.room);
  // The room joined last is the current room (a Set keeps insertion order).
  ws.rooms.delete(room.name);
  ws.rooms.add(room.name);
  ws.currentRoom = room.name;
  room.clients.add(ws);

  const count = room.clients.size;
  const joined = { type: 'joined', clientId: ws.id, room: room.name, epoch: room.epoch, seq: room.seq, count };
  if (count <= PRESENCE_LIST_MAX) joined.users = usersOf(room);
  if (msg.since != null) {
    const missed = room.seq - msg.since;
    const recovered =
      (msg.epoch == null || msg.epoch === room.epoch) &&
      missed >= 0 &&
      missed <= room.history.length;
    joined.history = recovered ? room.history.slice(room.history.length - missed) : room.history;
    joined.recovered = recovered;
  } else {
    joined.history = room.history;
  }
  sendJson(ws, joined);

  if (!already) {
    const event = { type: 'user_joined', room: room.name, userId: ws.id, username: ws.username, count };
    if (count <= PRESENCE_LIST_MAX) event.users = joined.users;
    broadcast(room, event, ws);
  }
}

function handleMessage(ws, msg) {
  const text = msg.text;
  if (text == null) return sendError(ws, 'missing_field', 'missing field: text');
  const room = targetRoom(ws, msg);
  if (!room) return;
  if (text.length === 0) return sendError(ws, 'empty_text', 'text is empty');
  if (text.length > MAX_TEXT_CHARS && charCount(text) > MAX_TEXT_CHARS) {
    return sendError(ws, 'text_too_long', `text longer than ${MAX_TEXT_CHARS} characters`);
  }

  const message = {
    type: 'message',
    id: `${instance}-m${++nextMessage}`,
    seq: ++room.seq,
    room: room.name,
    userId: ws.id,
    username: ws.username,
    text,
    timestamp: Date.now(),
  };
  room.history.push(message);
  if (room.history.length > HISTORY) room.history.shift();
  broadcast(room, message);
}

function handleTyping(ws, msg) {
  const room = targetRoom(ws, msg);
  if (!room) return;
  const data = JSON.stringify({
    type: 'typing',
    room: room.name,
    userId: ws.id,
    username: ws.username,
    isTyping: msg.isTyping ?? true,
  });
  for (const client of room.clients) {
    // Never echoed; dropped first for members whose outbound queue is past half the limit.
    if (client !== ws && client.bufferedAmount <= MAX_OUTBOUND_BYTES / 2) send(client, data);
  }
}

function handleLeave(ws, msg) {
  const room = targetRoom(ws, msg);
  if (!room) return;
  removeFromRoom(ws, room);
  if (ws.currentRoom === room.name) {
    // The room joined before it becomes current.
    let last = null;
    for (const name of ws.rooms) last = name;
    ws.currentRoom = last;
  }
  sendJson(ws, { type: 'left', room: room.name });
}

function onMessage(ws, data, isBinary) {
  if (isBinary) return sendError(ws, 'binary_not_supported', 'binary messages are not supported; send JSON text');
  let msg;
  try {
    msg = JSON.parse(data.toString());
  } catch (err) {
    return sendError(ws, 'invalid_json', `invalid JSON: ${err.message}`);
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    return sendError(ws, 'invalid_json', 'invalid JSON: expected an object');
  }
  const typeError = fieldTypeError(msg);
  if (typeError) return sendError(ws, 'invalid_json', typeError);
  switch (msg.type) {
    case 'join':
      return handleJoin(ws, msg);
    case 'message':
    case 'chat':
      return handleMessage(ws, msg);
    case 'typing':
      return handleTyping(ws, msg);
    case 'leave':
      return handleLeave(ws, msg);
    case 'ping':
      return sendJson(ws, { type: 'pong' });
    case undefined:
    case null:
      return sendError(ws, 'missing_field', 'missing field: type');
    default:
      return sendError(ws, 'unknown_type', `unknown type: ${JSON.stringify(msg.type)}`);
  }
}

// --- HTTP + upgrade -------------------------------------------------------------------------

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'GET' && path === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    return res.end('ok');
  }
  if (req.method === 'GET' && path === '/readyz') {
    res.writeHead(shuttingDown ? 503 : 200, { 'content-type': 'text/plain' });
    return res.end(shuttingDown ? 'shutting down' : 'ready');
  }
  if (path === '/ws' || path === '/') {
    res.writeHead(426, { 'content-type': 'text/plain' });
    return res.end('websocket upgrade required');
  }
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found');
});
// Requests (and upgrades) that do not complete their headers within 10 s are dropped.
server.headersTimeout = 10_000;
server.requestTimeout = 10_000;

const wss = new WebSocketServer({
  noServer: true,
  maxPayload: MAX_MESSAGE_BYTES, // larger messages close the connection with 1009
  perMessageDeflate: false,
  clientTracking: true,
});

server.on('upgrade', (req, socket, head) => {
  const path = req.url.split('?')[0];
  if (path !== '/ws' && path !== '/') {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  // ws answers 400 itself for a missing/invalid Sec-WebSocket-Key or Version.
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

wss.on('connection', (ws) => {
  ws.id = `${instance}-${++nextClient}`;
  ws.username = null;
  ws.rooms = new Set(); // names, in join order
  ws.currentRoom = null;
  ws.isAlive = true;

  ws.on('pong', () => {
    ws.isAlive = true;
  });
  ws.on('message', (data, isBinary) => onMessage(ws, data, isBinary));
  ws.on('close', () => {
    for (const name of [...ws.rooms]) removeFromRoom(ws, rooms.get(name));
  });
  ws.on('error', () => {});
});

// Heartbeat: ping everyone every 30 s; whoever did not pong since the last ping is closed.
const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) {
      ws.close(4001, 'heartbeat timeout');
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, PING_INTERVAL_MS);

function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  clearInterval(heartbeat);
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  server.close();
  server.closeIdleConnections();
  // Give the close handshakes a moment on loopback, then exit.
  setTimeout(() => process.exit(0), 500);
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

server.listen(PORT, HOST, () => {
  console.log(`node-ws peer (ws ${require('ws/package.json').version}, node ${process.version}) listening on ws://${HOST}:${PORT}/ws`);
});
