// Types for chatrelay-client (hand-written; the module itself is index.js).
// The event shapes are the relay's own (docs/PROTOCOL.md in the chatrelay repository).

/** Anything that constructs a browser-compatible WebSocket: the global one, or the `ws` package. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: { data: any }) => any) | null;
  onclose: ((ev: { code: number; reason: string }) => any) | null;
  onerror: ((ev: any) => any) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ChatRelayOptions {
  /** The name shown to others (ignored by the relay when authentication is on). */
  username?: string;
  /**
   * A JWT, or a function returning one (or a promise of one). A function is called before
   * every connection attempt, and after a 4401 close (token expired): only a token different
   * from the expired one reconnects; otherwise the client closes.
   */
  token?: string | (() => string | null | undefined | Promise<string | null | undefined>);
  /** The WebSocket constructor; defaults to `globalThis.WebSocket` (browsers, Node >= 22). */
  WebSocket?: WebSocketConstructor | (abstract new (...args: any[]) => any);
  /** Backoff base in ms (default 500): attempt n waits uniformly in [0, min(max, base * 2^n)). */
  reconnectBaseMs?: number;
  /** Backoff cap in ms (default 30000). */
  reconnectMaxMs?: number;
  /** Most sends waiting for their ack, connected or not (default 500); more reject with `queue_full`. */
  maxQueue?: number;
  /** `typing(room)` sends `isTyping: false` after this long without another call (default 3000). */
  typingIdleMs?: number;
  /** Application ping when idle this long; no traffic for twice this reconnects (default 25000, 0: off). */
  pingMs?: number;
  /** Give up on a connection attempt after this long (default 10000). */
  connectTimeoutMs?: number;
  /** Prefix of every `ref` (default: `c`, 8 random characters and `-`); a counter follows. */
  refPrefix?: string;
  /**
   * `false`: a send refused with `rate_limited` or `server_busy` rejects with that code
   * instead of being resent after 1-2 s (for a UI that lets the user retry). Default true.
   */
  retrySends?: boolean;
  /**
   * How many times one command refused with `rate_limited` or `server_busy` is resent before
   * it rejects with that code. Default 10.
   */
  maxRetries?: number;
}

export interface User {
  id: string;
  username: string;
}

/** A chat message as the relay sends it (live, in `joined.history`, in `history` pages). */
export interface Message {
  type: 'message';
  id: string;
  seq: number;
  room: string;
  userId: string;
  username: string;
  /** Absent when the message was deleted (in history). */
  text?: string;
  timestamp: number;
  replyTo?: number;
  ref?: string;
  edited?: boolean;
  editedAt?: number;
  deleted?: boolean;
  /** Cluster mode while Redis is unreachable: delivered on one node only, repeats the last seq. */
  local?: boolean;
}

export interface Edited {
  type: 'message_edited';
  room: string;
  /** The edit's own place in the room's order. */
  seq: number;
  /** The seq of the message that was edited. */
  target: number;
  text: string;
  editedAt: number;
}

export interface Deleted {
  type: 'message_deleted';
  room: string;
  seq: number;
  target: number;
}

export type RoomEvent = Message | Edited | Deleted;

export interface Joined {
  type: 'joined';
  clientId: string;
  room: string;
  epoch: string;
  seq: number;
  lastRead: number;
  unread: number;
  count: number;
  users?: User[];
  history: RoomEvent[];
  recovered?: boolean;
  historyTruncated?: boolean;
}

export interface Ack {
  type: 'ack';
  ref: string;
  room: string;
  seq: number;
  id: string;
}

export interface HistoryPage {
  type: 'history';
  room: string;
  messages: RoomEvent[];
  hasMore: boolean;
}

export interface PresenceEvent {
  room: string;
  /** The room's people: user id to username (the same Map as `presence(room)`). */
  users: ReadonlyMap<string, string>;
  count: number;
  /** What changed it: a (re)join's fresh list, or a person joining or leaving. */
  type: 'joined' | 'user_joined' | 'user_left';
  userId?: string;
  username?: string;
  /** False when the relay sent only the count (a room bigger than its presence list limit). */
  listed: boolean;
}

export interface TypingEvent {
  type: 'typing';
  room: string;
  userId: string;
  username: string;
  isTyping: boolean;
}

export interface ReadEvent {
  type: 'read';
  room: string;
  userId: string;
  username: string;
  seq: number;
}

export type StateEvent =
  | { state: 'connecting' }
  | { state: 'open' }
  | { state: 'reconnecting'; delay: number; attempt: number; code?: number }
  | { state: 'closed'; code: number; reason?: string };

export type State = StateEvent['state'];

export interface GapEvent {
  room: string;
  /** First seq that will never be emitted. */
  from: number;
  /** Last seq that will never be emitted; absent with `reset`. */
  to?: number;
  /** The room started anew (another epoch): seqs count from 1 again, drop what you show. */
  reset?: true;
  epoch: string;
}

/** A relay `error` that no promise was waiting for, or a client-side failure. */
export interface ErrorEvent {
  type?: 'error';
  code: string;
  message: string;
  ref?: string;
}

/** Promises reject with an Error carrying the relay's code (or `closed`, `left`, `queue_full`, `not_joined`). */
export interface ChatRelayError extends Error {
  code: string;
  ref?: string;
  room?: string;
  closeCode?: number;
}

/** Cluster mode: the relay lost (`degraded`) or regained (`restored`) Redis. */
export interface ClusterEvent {
  type: 'cluster';
  room: string;
  state: 'degraded' | 'restored';
  epoch?: string;
  seq?: number;
  recovered?: boolean;
}

/** What `send` returns: the ack's promise, and the ref the message carries (absent when refused at once). */
export type Sending = Promise<Ack> & { readonly ref?: string };

export interface ChatRelayEvents {
  message: Message;
  edited: Edited;
  deleted: Deleted;
  presence: PresenceEvent;
  typing: TypingEvent;
  read: ReadEvent;
  state: StateEvent;
  error: ErrorEvent;
  gap: GapEvent;
  joined: Joined;
  cluster: ClusterEvent;
}

export class ChatRelay {
  constructor(url: string, options?: ChatRelayOptions);
  readonly url: string;
  /** The connection's state, as the last `state` event said. */
  readonly state: State;
  /** Subscribe; returns a function that unsubscribes. */
  on<K extends keyof ChatRelayEvents>(type: K, listener: (event: ChatRelayEvents[K]) => void): () => void;
  off<K extends keyof ChatRelayEvents>(type: K, listener: (event: ChatRelayEvents[K]) => void): void;
  /** Joins (and after every reconnect rejoins) a room; resolves with the `joined` event. */
  join(room: string, resume?: { since?: number; epoch?: string }): Promise<Joined>;
  leave(room: string): void;
  /** Resolves with the `ack` once the relay has ordered (and stored) the message. */
  send(room: string, text: string, options?: { replyTo?: number }): Sending;
  /** Resolves with the `message_edited` event. */
  edit(room: string, seq: number, text: string): Promise<Edited>;
  /** Resolves with the `message_deleted` event. */
  delete(room: string, seq: number): Promise<Deleted>;
  /** Debounced: call on every keystroke; `false` stops at once. */
  typing(room: string, isTyping?: boolean): void;
  read(room: string, seq: number): void;
  history(room: string, page?: { before?: number; limit?: number }): Promise<HistoryPage>;
  /** The room's people, user id to username, kept up to date (empty for a room not joined). */
  presence(room: string): ReadonlyMap<string, string>;
  /** While `reconnecting`: connects now instead of after the backoff's delay (otherwise a no-op). */
  reconnect(): void;
  close(): void;
}
