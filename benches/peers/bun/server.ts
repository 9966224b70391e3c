// Baseline peer for chatrelay benchmarks: the same wire protocol (docs/PROTOCOL.md) on
// Bun.serve, written the way Bun's docs write a chat server: every room is a pub/sub topic
// (`ws.subscribe(room)`), and each outbound event is serialized once with JSON.stringify and
// handed to Bun's native publish, which fans it out without going back into JavaScript.
//
//   PORT=8082 node_modules/@oven/bun-linux-x64/bin/bun server.ts   (127.0.0.1 only; HOST overrides)
//
// Publish semantics (Bun / uWebSockets):
//   server.publish(topic, data)  -> every subscriber of the topic (the sender included)
//   ws.publish(topic, data)      -> every subscriber except `ws` (publishToSelf is left false)
// So `message` goes out with server.publish (the sender sees its own message with its seq),
// while `typing` and `user_joined` go out with ws.publish (never echoed to the typist/joiner).

import type { ServerWebSocket } from "bun";

const PORT = Number(process.env.PORT || 8082);
const HOST = process.env.HOST || "127.0.0.1";

// The protocol's defaults (PROTOCOL.md / `relay --help`).
const HISTORY = 100;
const PRESENCE_LIST_MAX = 100;
const MAX_ROOMS_PER_CONNECTION = 16;
const MAX_TEXT_CHARS = 2000;
const MAX_MESSAGE_BYTES = 64 * 1024;
const MAX_OUTBOUND_BYTES = 1024 * 1024;
// An empty room is kept this long before it is forgotten (a later join then gets a new epoch).
const ROOM_TTL_MS = Number(process.env.ROOM_TTL_MS || 60_000);

type Client = {
  id: string;
  username: string | null;
  rooms: Set<string>; // names, in join order; the last one is the current room
  currentRoom: string | null;
};
type ChatMessage = {
  type: "message";
  id: string;
  seq: number;
  room: string;
  userId: string;
  username: string;
  text: string;
  timestamp: number;
};
type Room = {
  name: string;
  epoch: string;
  seq: number;
  history: ChatMessage[];
  members: Map<string, { id: string; username: string }>;
  expiry: ReturnType<typeof setTimeout> | null;
};
type WS = ServerWebSocket<Client>;

const hex = (bytes: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");

const instance = hex(3); // "3fa9c1"
let nextClient = 0;
let nextMessage = 0;
const rooms = new Map<string, Room>();
const sockets = new Set<WS>();
let shuttingDown = false;

const CONTROL = /\p{Cc}/u;
function charCount(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}
function validName(s: unknown): s is string {
  return typeof s === "string" && s.length > 0 && (s.length <= 64 || charCount(s) <= 64) && !CONTROL.test(s);
}

function sendError(ws: WS, code: string, message: string) {
  ws.send(JSON.stringify({ type: "error", code, message }));
}

function usersOf(room: Room) {
  return [...room.members.values()];
}

function getOrCreateRoom(name: string): Room {
  let room = rooms.get(name);
  if (!room) {
    room = { name, epoch: hex(8), seq: 0, history: [], members: new Map(), expiry: null };
    rooms.set(name, room);
  }
  if (room.expiry) {
    clearTimeout(room.expiry);
    room.expiry = null;
  }
  return room;
}

// `connected` is false from the close handler, where the socket can no longer publish.
function removeFromRoom(ws: WS, room: Room, connected: boolean) {
  const c = ws.data;
  room.members.delete(c.id);
  c.rooms.delete(room.name);
  if (connected) ws.unsubscribe(room.name);
  if (room.members.size === 0) {
    const r = room;
    r.expiry = setTimeout(() => {
      if (r.members.size === 0) rooms.delete(r.name);
    }, ROOM_TTL_MS);
    return;
  }
  const event: Record<string, unknown> = {
    type: "user_left",
    room: room.name,
    userId: c.id,
    username: c.username,
    count: room.members.size,
  };
  if (room.members.size <= PRESENCE_LIST_MAX) event.users = usersOf(room);
  // The leaver is already unsubscribed, so everyone left in the topic gets it.
  server.publish(room.name, JSON.stringify(event));
}

// The room a message/typing/leave is for: the named one (must be joined) or the current one.
function targetRoom(ws: WS, msg: any): Room | null {
  const c = ws.data;
  if (msg.room != null) {
    if (c.rooms.has(msg.room)) return rooms.get(msg.room)!;
    sendError(ws, "not_joined", "not a member of that room; join it first");
    return null;
  }
  if (c.currentRoom === null) {
    sendError(ws, "not_joined", "join a room first");
    return null;
  }
  return rooms.get(c.currentRoom)!;
}

// As in the relay, the known fields of every frame must have the right JSON type whatever the
// frame's `type` (null counts as absent); a wrong type is answered with invalid_json.
function fieldTypeError(msg: any): string | null {
  for (const key of ["type", "room", "username", "epoch", "text"]) {
    if (msg[key] != null && typeof msg[key] !== "string") return `invalid JSON: ${key} must be a string`;
  }
  if (msg.isTyping != null && typeof msg.isTyping !== "boolean") return "invalid JSON: isTyping must be a boolean";
  if (msg.since != null && !(Number.isSafeInteger(msg.since) && msg.since >= 0)) {
    return "invalid JSON: since must be a non-negative integer";
  }
  return null;
}

function handleJoin(ws: WS, msg: any) {
  const c = ws.data;
  if (msg.room == null) return sendError(ws, "missing_field", "missing field: room");
  if (!validName(msg.room)) {
    return sendError(ws, "invalid_room", "room must be 1-64 characters without control characters");
  }
  if (msg.username != null && !validName(msg.username)) {
    return sendError(ws, "invalid_username", "username must be 1-64 characters without control characters");
  }
  const already = c.rooms.has(msg.room);
  if (!already && c.rooms.size >= MAX_ROOMS_PER_CONNECTION) {
    return sendError(ws, "too_many_rooms", `at most ${MAX_ROOMS_PER_CONNECTION} rooms per connection`);
  }
  if (typeof msg.username === "string") c.username = msg.username;
  else if (c.username === null) c.username = `anon-${c.id}`;

  const room = getOrCreateRoom(msg.room);
  c.rooms.delete(room.name);
  c.rooms.add(room.name);
  c.currentRoom = room.name;
  room.members.set(c.id, { id: c.id, username: c.username });
  ws.subscribe(room.name);

  const count = room.members.size;
  const joined: Record<string, unknown> = {
    type: "joined",
    clientId: c.id,
    room: room.name,
    epoch: room.epoch,
    seq: room.seq,
    count,
  };
  const users = count <= PRESENCE_LIST_MAX ? usersOf(room) : undefined;
  if (users) joined.users = users;
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
  ws.send(JSON.stringify(joined));

  if (!already) {
    const event: Record<string, unknown> = {
      type: "user_joined",
      room: room.name,
      userId: c.id,
      username: c.username,
      count,
    };
    if (users) event.users = users;
    ws.publish(room.name, JSON.stringify(event)); // everyone but the joiner
  }
}

function handleMessage(ws: WS, msg: any) {
  const text: string | null | undefined = msg.text;
  if (text == null) return sendError(ws, "missing_field", "missing field: text");
  const room = targetRoom(ws, msg);
  if (!room) return;
  if (text.length === 0) return sendError(ws, "empty_text", "text is empty");
  if (text.length > MAX_TEXT_CHARS && charCount(text) > MAX_TEXT_CHARS) {
    return sendError(ws, "text_too_long", `text longer than ${MAX_TEXT_CHARS} characters`);
  }

  const message: ChatMessage = {
    type: "message",
    id: `${instance}-m${++nextMessage}`,
    seq: ++room.seq,
    room: room.name,
    userId: ws.data.id,
    username: ws.data.username!,
    text,
    timestamp: Date.now(),
  };
  room.history.push(message);
  if (room.history.length > HISTORY) room.history.shift();
  server.publish(room.name, JSON.stringify(message)); // everyone, the sender included
}

function handleTyping(ws: WS, msg: any) {
  const room = targetRoom(ws, msg);
  if (!room) return;
  const event = {
    type: "typing",
    room: room.name,
    userId: ws.data.id,
    username: ws.data.username,
    isTyping: msg.isTyping ?? true,
  };
  ws.publish(room.name, JSON.stringify(event)); // never echoed to the typist
}

function handleLeave(ws: WS, msg: any) {
  const room = targetRoom(ws, msg);
  if (!room) return;
  removeFromRoom(ws, room, true);
  const c = ws.data;
  if (c.currentRoom === room.name) {
    let last: string | null = null;
    for (const name of c.rooms) last = name;
    c.currentRoom = last;
  }
  ws.send(JSON.stringify({ type: "left", room: room.name }));
}

const server = Bun.serve<Client, {}>({
  port: PORT,
  hostname: HOST,
  // HTTP requests (and upgrade requests) idle for 10 s are closed, like --handshake-timeout.
  idleTimeout: 10,

  fetch(req, server) {
    const path = new URL(req.url).pathname;
    if (path === "/ws" || path === "/") {
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return new Response("websocket upgrade required", { status: 426 });
      }
      const data: Client = { id: `${instance}-${++nextClient}`, username: null, rooms: new Set(), currentRoom: null };
      if (server.upgrade(req, { data })) return undefined;
      return new Response("bad websocket upgrade", { status: 400 });
    }
    if (req.method === "GET" && path === "/healthz") return new Response("ok");
    if (req.method === "GET" && path === "/readyz") {
      return shuttingDown ? new Response("shutting down", { status: 503 }) : new Response("ready");
    }
    return new Response("not found", { status: 404 });
  },

  websocket: {
    // No compression: the relay does not compress either, and deflate would dominate CPU.
    perMessageDeflate: false,
    // Larger messages close the connection (the relay answers 1009 for the same 64 KiB).
    maxPayloadLength: MAX_MESSAGE_BYTES,
    // Heartbeat. Bun (uWebSockets) sends a WebSocket ping shortly before a connection has been
    // silent for idleTimeout seconds and drops it (no close frame; clients see 1006) when the
    // timeout passes with nothing received, a pong included. Measured with Bun 1.4.5 and 30 s:
    // ping at ~24 s of silence, dropped at ~32 s. The relay pings every 30 s and closes (4001)
    // at the next ping, i.e. 30-60 s; 30 s keeps dead-client detection in that window while a
    // live client (which answers pings) is never closed. Any inbound frame resets the timer.
    idleTimeout: 30,
    sendPings: true,
    // Slow consumers: the relay closes a member with more than 1 MiB queued and unread (4008).
    // Bun's equivalent is a 1 MiB per-socket backpressure limit with closeOnBackpressureLimit;
    // without it Bun would buffer up to 16 MiB per socket (the default) and keep publishing.
    // Bun's native publish cannot drop `typing` selectively at half the limit as the relay does,
    // and the slow consumer is dropped without a close frame (clients see 1006, not 4008).
    backpressureLimit: MAX_OUTBOUND_BYTES,
    closeOnBackpressureLimit: true,
    // ws.publish excludes the publishing socket (the default); server.publish reaches everyone.
    publishToSelf: false,

    open(ws) {
      sockets.add(ws);
    },

    message(ws, data) {
      if (typeof data !== "string") {
        return sendError(ws, "binary_not_supported", "binary messages are not supported; send JSON text");
      }
      let msg: any;
      try {
        msg = JSON.parse(data);
      } catch (err) {
        return sendError(ws, "invalid_json", `invalid JSON: ${(err as Error).message}`);
      }
      if (msg === null || typeof msg !== "object" || Array.isArray(msg)) {
        return sendError(ws, "invalid_json", "invalid JSON: expected an object");
      }
      const typeError = fieldTypeError(msg);
      if (typeError) return sendError(ws, "invalid_json", typeError);
      switch (msg.type) {
        case "join":
          return handleJoin(ws, msg);
        case "message":
        case "chat":
          return handleMessage(ws, msg);
        case "typing":
          return handleTyping(ws, msg);
        case "leave":
          return handleLeave(ws, msg);
        case "ping":
          return void ws.send('{"type":"pong"}');
        case undefined:
        case null:
          return sendError(ws, "missing_field", "missing field: type");
        default:
          return sendError(ws, "unknown_type", `unknown type: ${JSON.stringify(msg.type)}`);
      }
    },

    close(ws) {
      sockets.delete(ws);
      for (const name of [...ws.data.rooms]) removeFromRoom(ws, rooms.get(name)!, false);
    },
  },
});

function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  for (const ws of sockets) ws.close(1001, "server shutting down");
  setTimeout(() => {
    server.stop(true);
    process.exit(0);
  }, 200);
}
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);

console.log(`bun peer (bun ${Bun.version}) listening on ws://${server.hostname}:${server.port}/ws`);
