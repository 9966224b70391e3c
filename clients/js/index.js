// chatrelay-client: a dependency-free client for the chatrelay WebSocket relay
// (docs/PROTOCOL.md). One ES module, no build step; runs in browsers and in Node
// (Node >= 22's global WebSocket, or any constructor passed as { WebSocket }).
//
// What it guarantees, and how:
// - Each room's messages (and edits/deletes, which take seqs of their own) are emitted once,
//   in seq order: events are keyed by seq in a per-room buffer and released only when the
//   next expected seq is there; anything at or below the last emitted seq is a duplicate.
// - A hole (a rejoin whose history does not reach back to `since`, or a live seq that skips)
//   is filled with `history` pages; only what the relay no longer keeps becomes a `gap` event.
// - Every command that needs an answer carries a `ref`, so errors find their promise. Sends
//   keep their ref until acknowledged and are resent after every rejoin: the relay answers a
//   repeated ref with the first ack and no second message. A send whose message (it carries
//   the ref) shows up first, in a rejoin's history or as its echo, is settled by it.

const RETRY = { rate_limited: 1, server_busy: 1 };
const fail = (code, message, extra) => Object.assign(new Error(message), extra, { code });
const jitter = (ms) => ms + Math.random() * ms;

export class ChatRelay {
  #o;
  #WS;
  #ws = null;
  #l = {};
  #rooms = new Map(); // NFC room name -> room state
  #reqs = new Map(); // ref -> a command waiting for its answer, in the order they were made
  #id;
  #n = 0;
  #try = 0;
  #timer = 0;
  #hb = 0;
  #rx = 0;
  #tok;
  #next;
  #done = false;

  constructor(url, options = {}) {
    this.url = url;
    this.#o = { reconnectBaseMs: 500, reconnectMaxMs: 30000, maxQueue: 500, typingIdleMs: 3000,
      pingMs: 25000, connectTimeoutMs: 10000, maxRetries: 10, ...options };
    this.#id = options.refPrefix || 'c' + Math.random().toString(36).slice(2, 10) + '-';
    this.#WS = options.WebSocket || globalThis.WebSocket;
    if (!this.#WS) throw new TypeError('no WebSocket here: pass { WebSocket } (e.g. the ws package)');
    this.state = 'connecting';
    // Connect on the next microtask so that listeners attached right after `new` see 'connecting'.
    Promise.resolve().then(() => this.#connect());
  }

  on(type, fn) {
    (this.#l[type] ||= new Set()).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#l[type]?.delete(fn);
  }

  join(room, { since, epoch } = {}) {
    if (this.#done) return this.#missing();
    const name = room.normalize('NFC');
    let r = this.#rooms.get(name);
    if (!r) {
      r = { name, epoch: since != null && epoch ? epoch : null, seq: since != null && epoch ? since : null,
        want: 0, buf: new Map(), users: new Map(), count: 0, lastRead: 0, waits: [], hq: [], hb: null, on: false };
      this.#rooms.set(name, r);
    }
    return new Promise((ok, no) => {
      r.waits.push({ ok, no });
      this.#join(r);
    });
  }

  leave(room) {
    const r = this.#room(room);
    if (!r) return;
    this.#tx({ type: 'leave', room: r.name });
    this.#drop(r, fail('left', 'left the room'));
  }

  send(room, text, { replyTo } = {}) {
    const r = this.#room(room);
    if (!r) return this.#missing();
    let n = 0;
    for (const e of this.#reqs.values()) n += e.k === 's';
    if (n >= this.#o.maxQueue) return Promise.reject(fail('queue_full', 'too many sends waiting'));
    this.typing(room, false);
    const f = { type: 'message', room: r.name, text };
    if (replyTo != null) f.replyTo = replyTo;
    // The ref on the promise: a UI can show the send as pending and find its echo by it.
    const p = this.#out(r, 's', f);
    p.ref = f.ref;
    return p;
  }

  edit(room, seq, text) {
    return this.#change(room, { type: 'edit', seq, text });
  }

  delete(room, seq) {
    return this.#change(room, { type: 'delete', seq });
  }

  typing(room, isTyping = true) {
    const r = this.#room(room);
    if (!r) return;
    clearTimeout(r.tt);
    if (isTyping) r.tt = setTimeout(() => this.typing(room, false), this.#o.typingIdleMs);
    if (!!r.typing !== isTyping && r.on) {
      r.typing = isTyping;
      this.#tx({ type: 'typing', room: r.name, isTyping });
    }
  }

  read(room, seq) {
    const r = this.#room(room);
    if (r && seq > r.lastRead) {
      r.lastRead = seq;
      if (r.on) this.#tx({ type: 'read', room: r.name, seq });
    }
  }

  history(room, { before, limit } = {}) {
    const r = this.#room(room);
    if (!r) return this.#missing();
    return new Promise((ok, no) => {
      r.hq.push({ before, limit, ok, no });
      this.#pump(r);
    });
  }

  presence(room) {
    return this.#room(room)?.users || new Map();
  }

  // Now instead of after the backoff's delay (a Retry button, the browser going online);
  // only while waiting for it.
  reconnect() {
    if (this.state !== 'reconnecting') return;
    clearTimeout(this.#timer);
    this.#try = 0;
    this.#connect();
  }

  close() {
    const ws = this.#ws;
    this.#end(1000, 'closed by the client');
    if (ws) this.#gone(ws);
  }

  // ------------------------------------------------------------------ connection

  async #connect() {
    if (this.#done) return;
    this.#set('connecting');
    let t = this.#next;
    this.#next = undefined;
    try {
      if (t === undefined) t = typeof this.#o.token === 'function' ? await this.#o.token() : this.#o.token;
      if (this.#done) return;
      this.#tok = t;
      const ws = (this.#ws = t ? new this.#WS(this.url, ['chatrelay', t]) : new this.#WS(this.url));
      const timeout = setTimeout(() => this.#gone(ws, 1006, 'connect timeout'), this.#o.connectTimeoutMs);
      ws.onopen = () => {
        clearTimeout(timeout);
        this.#rx = Date.now();
        this.#set('open');
        if (!this.#rooms.size) this.#try = 0;
        for (const r of this.#rooms.values()) this.#join(r);
        const p = this.#o.pingMs;
        // The relay pings us, but a dead network is only noticed by sending: an application
        // ping when idle, and a reconnect when nothing at all came back for two intervals.
        if (p) this.#hb = setInterval(() => {
          const idle = Date.now() - this.#rx;
          if (idle > 2 * p) this.#gone(ws, 4001, 'no answer from the relay');
          else if (idle >= p) this.#tx({ type: 'ping' });
        }, p / 2);
      };
      ws.onmessage = (e) => this.#recv(e.data);
      ws.onclose = (e) => {
        clearTimeout(timeout);
        this.#gone(ws, e.code, e.reason);
      };
      ws.onerror = () => {}; // a close always follows
    } catch (e) {
      this.#emit('error', fail('connect_failed', String(e?.message || e)));
      this.#retry();
    }
  }

  // The socket is gone (closed by either side or given up on): forget it and decide what next.
  #gone(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try { ws.close(1000); } catch { /* already closed */ }
    clearInterval(this.#hb);
    for (const r of this.#rooms.values()) {
      r.on = r.typing = r.filling = false;
      this.#reqs.delete(r.hb);
      r.hb = null;
      r.hq = r.hq.filter((h) => !h.fill);
      clearTimeout(r.tt);
    }
    if (this.#done) return;
    if (code === 4000) return this.#end(code, reason);
    if (code === 4401) {
      // Expired token: only a token callback can help, and only with a token we did not have.
      const f = this.#o.token;
      if (typeof f !== 'function') return this.#end(code, reason);
      Promise.resolve().then(f).then((t) => {
        if (!t || t === this.#tok) return this.#end(code, reason);
        this.#next = t;
        this.#retry(code);
      }, () => this.#end(code, reason));
      return;
    }
    this.#retry(code);
  }

  // Exponential backoff with full jitter: uniform in [0, min(max, base * 2^attempt)); after
  // 4029 (rate limits) never less than 5 s, as PROTOCOL.md asks.
  #retry(code) {
    if (this.#done) return;
    const o = this.#o;
    const delay = Math.round(Math.random() * Math.min(o.reconnectMaxMs, o.reconnectBaseMs * 2 ** this.#try++))
      + (code === 4029 ? 5000 : 0);
    this.#set('reconnecting', { delay, attempt: this.#try, code });
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  #end(code, reason) {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    const e = fail('closed', `connection closed (${code}${reason ? ': ' + reason : ''})`, { closeCode: code });
    for (const r of this.#rooms.values()) this.#drop(r, e);
    this.#set('closed', { code, reason });
  }

  #set(state, extra) {
    this.state = state;
    this.#emit('state', { state, ...extra });
  }

  #emit(type, value) {
    // A copy: listeners added or removed by a listener take effect from the next event.
    for (const fn of [...(this.#l[type] || [])]) {
      // A throwing listener must not break the client's bookkeeping: report it asynchronously.
      try { fn(value); } catch (e) { setTimeout(() => { throw e; }); }
    }
  }

  #tx(frame) {
    if (this.#ws?.readyState !== 1) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  #ref() {
    return this.#id + ++this.#n;
  }

  #room(room) {
    return this.#rooms.get(room.normalize('NFC'));
  }

  #missing() {
    return Promise.reject(this.#done ? fail('closed', 'the client is closed') : fail('not_joined', 'join the room first'));
  }

  // ------------------------------------------------------------------ commands

  #join(r) {
    const f = { type: 'join', room: r.name, ref: this.#ref() };
    if (this.#o.username) f.username = this.#o.username;
    if (r.seq != null) Object.assign(f, { since: r.seq, epoch: r.epoch });
    this.#reqs.delete(r.jr);
    this.#reqs.set((r.jr = f.ref), { k: 'j', r, f });
    this.#tx(f);
  }

  #out(r, k, f, extra) {
    f.ref = this.#ref();
    return new Promise((ok, no) => {
      this.#reqs.set(f.ref, { k, r, f, ok, no, ...extra });
      if (r.on) this.#tx(f);
    });
  }

  #change(room, f) {
    const r = this.#room(room);
    if (!r) return this.#missing();
    f.room = r.name;
    return this.#out(r, f.type[0], f, { target: f.seq });
  }

  // Scroll-back requests go one at a time per room: a `history` answer carries no ref, and
  // with history on disk two pages may be read concurrently.
  #pump(r) {
    const h = r.hq[0];
    if (r.hb || !r.on || !h) return;
    const f = { type: 'history', room: r.name, ref: this.#ref() };
    if (h.before != null) f.before = h.before;
    if (h.limit != null) f.limit = h.limit;
    this.#reqs.set((r.hb = f.ref), { k: 'h', r, f });
    this.#tx(f);
  }

  // Forget a room (left, refused, or the client closed): fail everything waiting on it.
  #drop(r, e) {
    this.#rooms.delete(r.name);
    clearTimeout(r.tt);
    for (const [ref, q] of this.#reqs) if (q.r === r) { this.#reqs.delete(ref); q.no?.(e); }
    for (const w of [...r.waits, ...r.hq]) w.no(e);
    r.waits = r.hq = [];
  }

  // ------------------------------------------------------------------ events

  #recv(data) {
    this.#rx = Date.now();
    let ev;
    try { ev = JSON.parse(data); } catch { return; }
    const r = this.#rooms.get(ev.room);
    const t = ev.type;
    if (t === 'error') return this.#error(ev);
    if (!r) return;
    if (t === 'joined') this.#joined(r, ev);
    else if (t === 'message' || t === 'message_edited' || t === 'message_deleted') {
      if (!r.on) return;
      if (ev.local) this.#deliver(r, ev); // cluster degraded mode: repeats the last seq, never resent
      else if (ev.seq > r.seq) r.buf.set(ev.seq, ev);
      this.#drain(r);
    } else if (t === 'ack') {
      const q = this.#reqs.get(ev.ref);
      if (q?.k === 's') {
        this.#reqs.delete(ev.ref);
        q.ok(ev);
      }
    } else if (t === 'history') {
      const h = r.hq.shift();
      this.#reqs.delete(r.hb);
      r.hb = null;
      h?.ok(ev);
      this.#pump(r);
    } else if (t === 'user_joined' || t === 'user_left') {
      if (ev.users) this.#users(r, ev.users);
      else if (t === 'user_joined') r.users.set(ev.userId, ev.username);
      else if (!r.users.delete(ev.userId)) {
        // Presence is per person: the id that left may be another tab's than the one listed.
        for (const [id, name] of r.users) if (name === ev.username) r.users.delete(id);
      }
      r.count = ev.count;
      this.#presence(r, ev);
    } else if (t === 'typing' || t === 'read') this.#emit(t, ev);
    else if (t === 'cluster') {
      if (ev.state === 'restored' && (!ev.recovered || ev.epoch !== r.epoch)) this.#join(r);
      this.#emit(t, ev);
    }
  }

  #joined(r, ev) {
    this.#reqs.delete(r.jr);
    this.#try = 0;
    r.on = true;
    const h = ev.history || [];
    // A room that started anew (another epoch, or behind what we saw) numbers from 1 again.
    if (r.seq == null || ev.epoch !== r.epoch || ev.seq < r.seq) {
      if (r.seq != null) this.#emit('gap', { room: r.name, from: r.seq + 1, reset: true, epoch: ev.epoch });
      r.buf.clear();
      r.lastRead = 0; // a read position of the earlier life would name another message
      r.seq = (h.length ? h[0].seq : ev.seq + 1) - 1;
    }
    r.epoch = ev.epoch;
    r.want = ev.seq;
    for (const m of h) if (m.seq > r.seq) r.buf.set(m.seq, m);
    this.#drain(r);
    this.#users(r, ev.users);
    r.count = ev.count;
    this.#presence(r, ev);
    if (r.lastRead > ev.lastRead) this.#tx({ type: 'read', room: r.name, seq: r.lastRead });
    else r.lastRead = ev.lastRead;
    // Resend, in their order, whatever is not acknowledged yet: the refs make repeats harmless.
    for (const q of this.#reqs.values()) if (q.r === r && q.ok) this.#tx(q.f);
    this.#pump(r);
    this.#emit('joined', ev);
    for (const w of r.waits.splice(0)) w.ok(ev);
  }

  // In place: the Map that presence(room) handed out stays the live one.
  #users(r, users) {
    if (!users) return;
    r.users.clear();
    for (const u of users) r.users.set(u.id, u.username);
  }

  #presence(r, ev) {
    // `listed`: whether the relay sent the whole list (it sends only the count in a big room).
    this.#emit('presence', { room: r.name, users: r.users, count: r.count, type: ev.type,
      userId: ev.userId, username: ev.username, listed: !!ev.users });
  }

  // Release buffered events while the next seq is there; then fetch what is missing below.
  #drain(r) {
    let m;
    while ((m = r.buf.get(r.seq + 1))) {
      r.buf.delete(++r.seq);
      this.#deliver(r, m);
    }
    if (r.filling) return;
    const top = r.buf.size ? Math.min(...r.buf.keys()) : r.want + 1;
    if (top <= r.seq + 1) return;
    r.filling = true;
    // After the page in flight, if any: answers are matched to requests by their order.
    r.hq.splice(r.hb ? 1 : 0, 0, { fill: true, before: top, limit: Math.min(100, top - r.seq - 1),
      ok: (page) => {
        r.filling = false;
        const ms = page.messages.filter((x) => x.seq > r.seq && x.seq < top);
        for (const x of ms) r.buf.set(x.seq, x);
        const lo = ms.length ? ms[0].seq : top;
        // Nothing older is kept (or the page made no progress): what is missing is lost.
        if (lo > r.seq + 1 && (!page.hasMore || !ms.length)) {
          this.#emit('gap', { room: r.name, from: r.seq + 1, to: lo - 1, epoch: r.epoch });
          r.seq = lo - 1;
        }
        this.#drain(r);
      },
      no: () => { r.filling = false; } });
    this.#pump(r);
  }

  #deliver(r, ev) {
    const t = ev.type;
    if (t === 'message') {
      // A send of ours shown by the relay (a rejoin's history, or its echo before the ack):
      // it is done, and must not be resent.
      const q = !ev.local && this.#reqs.get(ev.ref);
      if (q?.k === 's' && q.r === r) {
        this.#reqs.delete(ev.ref);
        q.ok({ type: 'ack', ref: ev.ref, room: r.name, seq: ev.seq, id: ev.id });
      }
      return this.#emit(t, ev);
    }
    const k = t === 'message_edited' ? 'e' : 'd';
    for (const [ref, q] of this.#reqs) {
      if (q.r === r && q.k === k && q.target === ev.target) {
        this.#reqs.delete(ref);
        q.ok(ev);
        break;
      }
    }
    this.#emit(k === 'e' ? 'edited' : 'deleted', ev);
  }

  #error(ev) {
    const q = ev.ref && this.#reqs.get(ev.ref);
    if (!q) return this.#emit('error', ev);
    const r = q.r;
    // A command refused as rate_limited or server_busy is resent (same ref) a little later,
    // at most maxRetries times: a relay that keeps refusing gets the refusal to the caller.
    const again = (q.tries = (q.tries || 0) + 1) <= this.#o.maxRetries;
    if (RETRY[ev.code] && again && (q.k !== 's' || this.#o.retrySends !== false)) {
      if (q.k === 'h') {
        this.#reqs.delete(ev.ref);
        r.hb = null;
      }
      setTimeout(() => {
        if (q.k === 'h') this.#pump(r);
        else if (this.#reqs.get(ev.ref) !== q) return; // settled or superseded meanwhile
        else if (q.k === 'j') this.#join(r);
        else if (r.on) this.#tx(q.f);
      }, jitter(1000));
      return;
    }
    this.#reqs.delete(ev.ref);
    const e = fail(ev.code, ev.message, { ref: ev.ref, room: r.name });
    if (q.k === 'j') {
      if (!r.waits.length) this.#emit('error', ev);
      this.#drop(r, e);
    } else if (q.k === 'h') {
      r.hb = null;
      r.hq.shift()?.no(e);
      this.#pump(r);
    } else q.no(e);
  }
}
