// Real-browser tests of the chat page that the relay serves (relay/static/*).
//
// Run from the repository root, after `cargo build -p relay`:
//
//     (cd tests/browser && npm ci)        # installs playwright-core only; no browser download
//     node --test tests/browser/
//
// Needs:
//   - Chromium at /usr/bin/chromium (Debian: `apt-get install -y chromium`), or set CHROMIUM_BIN.
//     Never `npx playwright install`: the tests drive the system Chromium through playwright-core.
//   - The relay binary: $RELAY_BIN (relative to the current directory), or target/debug/relay
//     under the repository root. It embeds relay/static/* at build time, so rebuild after
//     editing the page (the first test fails with "rebuild the relay" on a stale binary).
//
// Each test starts a relay child process on a free 127.0.0.1 port (`relay --listen ADDR`),
// waits for GET /healthz, and kills it afterwards (also when the test fails). The reconnect
// test opens the page with `?reconnectBaseMs=100`, a query parameter the page reads to shorten
// its reconnect backoff base (default 500 ms), so that test stays fast.
// The two-user test writes the screenshot results/chat-two-users.png.
//
// Waiting is done with Playwright's auto-waiting (locator.waitFor, page.waitForFunction);
// the only timed loop is the bounded /healthz poll while a relay starts.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const RELAY_BIN = process.env.RELAY_BIN
  ? path.resolve(process.env.RELAY_BIN)
  : path.join(ROOT, 'target', 'debug', 'relay');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SCREENSHOT = path.join(ROOT, 'results', 'chat-two-users.png');
const WAIT_MS = 10_000; // default for every Playwright wait
const TEST_TIMEOUT_MS = 60_000;

// ------------------------------------------------------------------------------ relay process

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

class Relay {
  constructor(port) {
    this.port = port;
    this.base = `http://127.0.0.1:${port}`;
    this.proc = null;
    this.log = '';
  }

  async start(extraArgs = []) {
    assert.ok(fs.existsSync(RELAY_BIN), `relay binary not found at ${RELAY_BIN}: run \`cargo build -p relay\` or set RELAY_BIN`);
    // History on disk (the default) in a directory of this port's own, so a relay restarted
    // on the same port finds its rooms again and tests running side by side never share one.
    const storage = extraArgs.includes('--memory') || extraArgs.includes('--data-dir')
      ? [] : ['--data-dir', dataDir(this.port)];
    // `--presence-grace 0`: a closed page's `user_left` comes at once, as these tests expect
    // (the grace itself is tested in relay/tests/presence.rs).
    const proc = spawn(RELAY_BIN, ['--listen', `127.0.0.1:${this.port}`, '--presence-grace', '0', ...storage, ...extraArgs], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
    });
    this.proc = proc;
    const keep = (chunk) => { this.log = (this.log + chunk).slice(-8000); };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited = exited;
    // Bounded poll of /healthz (200 tries x 50 ms = 10 s at most).
    for (let i = 0; i < 200; i++) {
      const gone = await Promise.race([exited, delay(0).then(() => null)]);
      if (gone) throw new Error(`relay exited early (${JSON.stringify(gone)}):\n${this.log}`);
      try {
        const res = await fetch(`${this.base}/healthz`);
        if (res.status === 200) return this;
      } catch { /* not listening yet */ }
      await delay(50);
    }
    throw new Error(`relay did not answer /healthz on port ${this.port}:\n${this.log}`);
  }

  async kill(signal = 'SIGKILL') {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill(signal);
    await this.exited;
  }
}

const dataDirs = new Set();
function dataDir(port) {
  const dir = path.join(os.tmpdir(), `chatrelay-browser-${process.pid}-${port}`);
  dataDirs.add(dir);
  return dir;
}

const relays = new Set();
// Last resort if the runner exits without running `after` hooks: no relay outlives the tests.
process.on('exit', () => {
  for (const relay of relays) {
    try { relay.proc?.kill('SIGKILL'); } catch { /* already gone */ }
  }
});
async function startRelay(port, extraArgs = []) {
  const relay = new Relay(port ?? await freePort());
  relays.add(relay);
  return relay.start(extraArgs);
}

// ------------------------------------------------------------------------------ browser

let browser;

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM_BIN), `Chromium not found at ${CHROMIUM_BIN}: apt-get install -y chromium`);
  browser = await chromium.launch({
    executablePath: CHROMIUM_BIN,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
    timeout: 60_000,
  });
}, { timeout: 90_000 });

after(async () => {
  for (const relay of relays) await relay.kill();
  for (const dir of dataDirs) fs.rmSync(dir, { recursive: true, force: true });
  if (browser) await browser.close();
}, { timeout: 30_000 });

/** Opens the chat page in its own browser context and returns {page, ctx, problems}. */
async function openPage(t, relay, { query = '', viewport = { width: 1000, height: 700 }, colorScheme = 'light', instrument = false } = {}) {
  const ctx = await browser.newContext({ viewport, colorScheme });
  t.after(() => ctx.close().catch(() => {}));
  if (instrument) await ctx.addInitScript(instrumentPage);
  const page = await ctx.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const problems = { pageErrors: [], consoleErrors: [], dialogs: [] };
  page.on('pageerror', (err) => problems.pageErrors.push(String(err)));
  page.on('console', (msg) => { if (msg.type() === 'error') problems.consoleErrors.push(msg.text()); });
  page.on('dialog', (dialog) => {
    problems.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  await page.goto(`${relay.base}/${query}`);
  return { page, ctx, problems };
}

/**
 * Runs in the page before its own scripts (addInitScript): records every frame the page sends
 * (window.__sent), every socket it opens (window.__sockets), every value #status's data-state
 * takes (window.__states; some states last only milliseconds with a 100 ms backoff base), every
 * frame it receives (window.__recv), both in one order (window.__wire: ['>' or '<', data]), every close code
 * (window.__closes), and while window.__blockConnect holds a URL (a closed port) opens new sockets there instead, so the
 * page stays away as long as a test needs.
 * For the acknowledged sends: while window.__holdMessages is true a `message` frame is recorded
 * but kept back (window.__held) until window.__releaseHeld() sends it, so the page shows
 * "sending..." as long as a test needs (a held frame whose socket closes never reaches the
 * relay); window.__closeAfterMessage = true closes the socket right after the next `message`
 * frame, in the same task, so the relay gets the message but the page never sees its ack
 * (a browser delivers nothing more once close() is called).
 */
function instrumentPage() {
  const Native = window.WebSocket;
  window.__sent = [];
  window.__sockets = [];
  window.__states = [];
  window.__recv = [];
  window.__closes = [];
  window.__wire = [];
  window.__blockConnect = null;
  window.__holdMessages = false;
  window.__held = [];
  window.__closeAfterMessage = false;
  window.__releaseHeld = () => {
    for (const [socket, data] of window.__held.splice(0)) Native.prototype.send.call(socket, data);
  };
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(window.__blockConnect || url, protocols);
      window.__sockets.push(this);
      this.addEventListener('message', (e) => {
        window.__recv.push(String(e.data));
        window.__wire.push(['<', String(e.data)]);
      });
      this.addEventListener('close', (e) => window.__closes.push(e.code));
    }
    send(data) {
      window.__sent.push(String(data));
      window.__wire.push(['>', String(data)]);
      const isMessage = String(data).includes('"type":"message"');
      if (isMessage && window.__holdMessages) {
        window.__held.push([this, data]);
        return undefined;
      }
      const result = super.send(data);
      if (isMessage && window.__closeAfterMessage) {
        window.__closeAfterMessage = false;
        this.close();
      }
      return result;
    }
  };
  document.addEventListener('DOMContentLoaded', () => {
    const status = document.getElementById('status');
    window.__states.push(status.dataset.state);
    new MutationObserver(() => window.__states.push(status.dataset.state))
      .observe(status, { attributes: true, attributeFilter: ['data-state'] });
  });
}

async function sentFrames(page) {
  return (await page.evaluate(() => window.__sent)).map((s) => JSON.parse(s));
}

async function receivedFrames(page) {
  return (await page.evaluate(() => window.__recv)).map((s) => JSON.parse(s));
}

/** Fills the join form and waits until the page has joined (composer enabled). */
async function join(page, username, room) {
  await page.fill('#username', username);
  await page.fill('#room', room);
  await page.click('#join');
  await page.locator('#status[data-state="connected"]').waitFor();
  await page.locator('#input:enabled').waitFor();
}

async function openJoined(t, relay, username, room, opts) {
  const handle = await openPage(t, relay, opts);
  await join(handle.page, username, room);
  return handle;
}

/** Sends a message from the composer and waits until the relay acknowledged it. */
async function sendMessage(page, text) {
  await page.fill('#input', text);
  await page.click('#send');
  await waitForMessage(page, text, { acked: true });
}

/** Waits until a message with exactly this text is in #messages (`acked`: and not sending). */
async function waitForMessage(page, text, { acked = false } = {}) {
  await page.waitForFunction(
    ({ want, acked }) => [...document.querySelectorAll(acked ? '#messages .msg:not(.pending) .text' : '#messages .msg .text')]
      .some((n) => n.textContent === want),
    { want: text, acked },
  );
}

/** The rendered message whose text (or, once deleted, whose data-id) is given. */
function messageByText(page, text) {
  return page.locator('#messages .msg').filter({ has: page.locator('.text', { hasText: new RegExp(`^${escapeRegExp(text)}$`) }) });
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Texts of the rendered chat messages, in DOM order. */
async function messageTexts(page) {
  return page.$$eval('#messages .msg .text', (nodes) => nodes.map((n) => n.textContent));
}

async function userNames(page) {
  return page.$$eval('#users .user-name', (nodes) => nodes.map((n) => n.textContent));
}

async function waitForUsers(page, names) {
  const want = [...names].sort();
  await page.waitForFunction(
    (w) => JSON.stringify([...document.querySelectorAll('#users .user-name')].map((n) => n.textContent).sort()) === JSON.stringify(w),
    want,
  );
}

function assertClean(problems, { console: checkConsole = true } = {}) {
  assert.deepEqual(problems.pageErrors, [], 'uncaught page errors');
  assert.deepEqual(problems.dialogs, [], 'dialogs opened');
  if (checkConsole) assert.deepEqual(problems.consoleErrors, [], 'console errors (CSP violations, failed loads)');
}

// ------------------------------------------------------------------------------ tests

test('page is served with the right types and no external resources', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  // app.js and the ES modules it imports from relay/static/js/, each served under its path.
  const modules = fs.readdirSync(path.join(ROOT, 'relay', 'static', 'js')).filter((f) => f.endsWith('.js')).sort();
  assert.ok(modules.length > 0);
  // And the client library the page is built on, served from clients/js/index.js.
  const scripts = [['/app.js', 'app.js'], ...modules.map((f) => [`/js/${f}`, `js/${f}`]),
    ['/js/chatrelay-client.js', path.join('..', '..', 'clients', 'js', 'index.js')]];
  const expected = { '/': 'text/html', '/style.css': 'text/css', ...Object.fromEntries(scripts.map(([route]) => [route, 'text/javascript'])) };
  for (const [route, type] of Object.entries(expected)) {
    const res = await fetch(relay.base + route);
    assert.equal(res.status, 200, route);
    assert.match(res.headers.get('content-type') ?? '', new RegExp('^' + type.replace('/', '\\/')), route);
  }
  const html = await (await fetch(relay.base + '/')).text();
  assert.match(html, /src="\/app\.js"/);
  assert.match(html, /href="\/style\.css"/);
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, 'no resources from other origins');
  // The relay embeds relay/static/* at build time: a mismatch means a stale binary.
  for (const [route, file] of [['/', 'index.html'], ['/style.css', 'style.css'], ...scripts]) {
    const served = await (await fetch(relay.base + route)).text();
    const onDisk = fs.readFileSync(path.join(ROOT, 'relay', 'static', file), 'utf8');
    assert.ok(served === onDisk, `GET ${route} differs from relay/static/${file}: rebuild the relay (cargo build -p relay; a new module also needs its line in relay/src/routes.rs)`);
  }
  for (const [route] of scripts) {
    const js = await (await fetch(relay.base + route)).text();
    assert.doesNotMatch(js, /\.(inner|outer)HTML\s*=|insertAdjacentHTML\s*\(|document\.write(ln)?\s*\(/, `no HTML sinks in ${route}`);
    // Every module the scripts import is one of the served ones.
    for (const [, target] of js.matchAll(/from '([^']+)'/g)) {
      const resolved = new URL(target, relay.base + route).pathname;
      assert.ok(scripts.some(([r]) => r === resolved), `${route} imports ${target}, which is not served`);
    }
  }
  assert.equal((await fetch(relay.base + '/js/nope.js')).status, 404);
});

test('two users in one room exchange messages both ways', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'lobby');
  const bob = await openJoined(t, relay, 'bob', 'lobby');

  await sendMessage(alice.page, 'hello bob');
  await waitForMessage(bob.page, 'hello bob');
  await sendMessage(bob.page, 'hi alice, how are you?');
  await waitForMessage(alice.page, 'hi alice, how are you?');
  // Enter in the composer sends too.
  await bob.page.fill('#input', 'sent with Enter');
  await bob.page.press('#input', 'Enter');
  await waitForMessage(alice.page, 'sent with Enter');

  for (const { page } of [alice, bob]) {
    assert.deepEqual(await messageTexts(page), ['hello bob', 'hi alice, how are you?', 'sent with Enter']);
  }
  // My own messages are set apart; the other side's carry the sender's name and a time.
  const aliceView = await alice.page.$$eval('#messages .msg', (nodes) => nodes.map((n) => ({
    mine: n.classList.contains('mine'),
    author: n.querySelector('.author').textContent,
    time: n.querySelector('time.time')?.textContent ?? '',
  })));
  assert.deepEqual(aliceView.map((m) => m.mine), [true, false, false]);
  assert.equal(aliceView[1].author, 'bob');
  for (const m of aliceView) assert.match(m.time, /\d{1,2}.\d{2}/);
  // The composer clears after sending.
  assert.equal(await alice.page.inputValue('#input'), '');
  assertClean(alice.problems);
  assertClean(bob.problems);
});

test('presence and typing indicator follow the other user', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'presence');
  await waitForUsers(alice.page, ['alice']);
  assert.equal(await alice.page.textContent('#online-count'), '1');

  const bob = await openJoined(t, relay, 'bob', 'presence');
  // Alice sees bob arrive, both in the list and as a system line; bob sees both of them.
  await waitForUsers(alice.page, ['alice', 'bob']);
  await waitForUsers(bob.page, ['alice', 'bob']);
  await alice.page.locator('#messages .system', { hasText: 'bob joined' }).waitFor();
  assert.equal(await alice.page.textContent('#online-count'), '2');

  // Alice types: bob sees "alice is typing...", which goes away by itself once she stops.
  await alice.page.locator('#input').pressSequentially('hel');
  await bob.page.locator('#typing', { hasText: 'alice is typing' }).waitFor();
  await bob.page.waitForFunction(() => document.querySelector('#typing').textContent === '');
  // Typing again and sending clears it at once.
  await alice.page.locator('#input').pressSequentially('lo there');
  await bob.page.locator('#typing', { hasText: 'alice is typing' }).waitFor();
  await alice.page.click('#send');
  await waitForMessage(bob.page, 'hello there');
  await bob.page.waitForFunction(() => document.querySelector('#typing').textContent === '');
  // Alice never sees her own typing.
  assert.equal(await alice.page.textContent('#typing'), '');

  // Bob leaves (closes his page): alice's list drops him and says so.
  await bob.ctx.close();
  await waitForUsers(alice.page, ['alice']);
  await alice.page.locator('#messages .system', { hasText: 'bob left' }).waitFor();
  assert.equal(await alice.page.textContent('#online-count'), '1');
  assertClean(alice.problems);
});

test('a big room shows only the member count', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // With --presence-list-max 2 the relay stops sending `users` once a third member joins.
  const relay = await startRelay(undefined, ['--presence-list-max', '2']);
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'big');
  const bob = await openJoined(t, relay, 'bob', 'big');
  await waitForUsers(alice.page, ['alice', 'bob']);
  const carol = await openJoined(t, relay, 'carol', 'big');
  for (const { page } of [alice, bob, carol]) {
    await page.locator('#users-note', { hasText: '3 online' }).waitFor();
    assert.equal(await page.locator('#users .user').count(), 0);
    assert.equal(await page.textContent('#online-count'), '3');
  }
  await carol.ctx.close();
  await waitForUsers(alice.page, ['alice', 'bob']);
  assert.ok(await alice.page.locator('#users-note').isHidden());
  assertClean(alice.problems);
});

test('phone width and dark mode', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const phone = { width: 375, height: 740 };
  const alice = await openJoined(t, relay, 'alice', 'mobile', { viewport: phone, colorScheme: 'dark' });
  const bob = await openJoined(t, relay, 'bob', 'mobile');
  const long = 'A long message that has to wrap on a phone: ' + 'word '.repeat(40) + 'https://example.invalid/' + 'x'.repeat(120);
  await sendMessage(bob.page, long);
  await waitForMessage(alice.page, long);
  // Nothing sticks out sideways; the sidebar is a drawer behind the menu button.
  assert.ok(await alice.page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no horizontal overflow');
  assert.ok(!(await alice.page.locator('#sidebar').isVisible()) || (await alice.page.locator('#sidebar').boundingBox()).x < -100,
    'sidebar off screen');
  await alice.page.click('#menu');
  await alice.page.waitForFunction(() => document.getElementById('sidebar').getBoundingClientRect().x >= 0);
  await alice.page.locator('#users .user-name', { hasText: 'bob' }).waitFor();
  await alice.page.click('#scrim', { position: { x: 360, y: 400 } });
  await alice.page.waitForFunction(() => document.getElementById('sidebar').getBoundingClientRect().right <= 0);
  // Dark mode follows prefers-color-scheme.
  const bg = (page) => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.notEqual(await bg(alice.page), await bg(bob.page));
  const [r, g, b] = (await bg(alice.page)).match(/\d+/g).map(Number);
  assert.ok(r + g + b < 150, `dark background, got ${await bg(alice.page)}`);
  // The composer stays usable.
  await sendMessage(alice.page, 'from my phone');
  await waitForMessage(bob.page, 'from my phone');
  assertClean(alice.problems);
});

test('the message list follows new messages only when the reader is at the bottom', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // 25 messages at once: past the default rate limit (burst 10), which is not under test here.
  const relay = await startRelay(undefined, ['--message-rate', '0']);
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'scroll');
  const bob = await openJoined(t, relay, 'bob', 'scroll');
  const atBottom = () => alice.page.evaluate(() => {
    const m = document.getElementById('messages');
    return m.scrollHeight - m.scrollTop - m.clientHeight < 5;
  });
  for (let i = 1; i <= 25; i++) await sendMessage(bob.page, `filler message ${i}`);
  await waitForMessage(alice.page, 'filler message 25');
  assert.ok(await alice.page.evaluate(() => {
    const m = document.getElementById('messages');
    return m.scrollHeight > m.clientHeight + 200;
  }), 'the list overflows');
  assert.ok(await atBottom(), 'followed the new messages');

  // Scrolled up to read: a new message does not yank the view, a "new messages" button shows.
  await alice.page.evaluate(() => { document.getElementById('messages').scrollTop = 0; });
  await sendMessage(bob.page, 'while alice reads old messages');
  await waitForMessage(alice.page, 'while alice reads old messages');
  assert.equal(await alice.page.evaluate(() => document.getElementById('messages').scrollTop), 0);
  await alice.page.locator('#jump').waitFor();
  await alice.page.click('#jump');
  await alice.page.waitForFunction(() => {
    const m = document.getElementById('messages');
    return m.scrollHeight - m.scrollTop - m.clientHeight < 5;
  });
  assert.ok(await alice.page.locator('#jump').isHidden());
  // Her own message always scrolls into view.
  await alice.page.evaluate(() => { document.getElementById('messages').scrollTop = 0; });
  await sendMessage(alice.page, 'my own message');
  assert.ok(await atBottom());
  assertClean(alice.problems);
});

test('switching rooms shows the new room\'s history and keeps the old room in the room list', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'one');
  const bob = await openJoined(t, relay, 'bob', 'two');
  await sendMessage(bob.page, 'history in two');
  await sendMessage(alice.page, 'only in one');

  await alice.page.fill('#switch-room', 'two');
  await alice.page.click('#switch');
  await waitForMessage(alice.page, 'history in two');
  await alice.page.locator('#input:enabled').waitFor();
  assert.deepEqual(await messageTexts(alice.page), ['history in two']);
  assert.equal(await alice.page.textContent('#room-title'), '#two');
  await waitForUsers(alice.page, ['alice', 'bob']);
  await waitForUsers(bob.page, ['alice', 'bob']);
  await sendMessage(alice.page, 'moved over');
  await waitForMessage(bob.page, 'moved over');
  assertClean(alice.problems);
  assertClean(bob.problems);
});

test('user content is shown as text: no HTML injection', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const payload = '<img src=x onerror=alert(1)>';
  const evilName = '<svg onload=alert(2)>';
  const alice = await openJoined(t, relay, 'alice', 'xss');
  const mallory = await openJoined(t, relay, evilName, 'xss');

  await sendMessage(mallory.page, payload);
  await waitForMessage(alice.page, payload);
  await sendMessage(mallory.page, '<script>alert(3)</script><b>bold?</b>');
  await waitForMessage(alice.page, '<script>alert(3)</script><b>bold?</b>');
  // One more round trip after the payloads, so an onerror handler would have had its chance.
  await sendMessage(alice.page, 'after the payloads');
  await waitForMessage(mallory.page, 'after the payloads');
  await waitForUsers(alice.page, ['alice', evilName]);

  for (const { page, problems } of [alice, mallory]) {
    assert.equal(await page.locator('#messages img').count(), 0, 'no <img> in #messages');
    assert.equal(await page.locator('#app img, #app script:not([src]), #users svg, #messages svg, #messages b').count(), 0);
    assert.deepEqual(problems.dialogs, [], 'no dialog fired');
    const texts = await messageTexts(page);
    assert.ok(texts.includes(payload), 'payload shown as literal text');
    assertClean(problems);
  }
  const authors = await alice.page.$$eval('#messages .msg:not(.mine) .author', (n) => n.map((x) => x.textContent));
  assert.ok(authors.includes(evilName), 'username shown as literal text');
});

for (const [signal, memory] of [['SIGKILL', true], ['SIGTERM', true], ['SIGKILL', false]]) test(`reconnects after a relay restart (${signal}, history ${memory ? 'in memory' : 'on disk'}), rejoins with since/epoch, shows each message once`, { timeout: 90_000 }, async (t) => {
  // SIGKILL: the socket just dies (close 1006). SIGTERM: the relay closes it with 1001 first.
  // In memory the restarted relay starts the room anew; on disk it carries the room on.
  const port = await freePort();
  const args = memory ? ['--memory'] : [];
  let relay = await startRelay(port, args);
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'resume', { query: '?reconnectBaseMs=100', instrument: true });
  // The other client is a plain WebSocket running inside a second page from the same origin.
  const sender = await openPage(t, relay);
  await sendMessage(alice.page, 'before restart');
  await alice.page.evaluate(() => { window.__sent.length = 0; });

  await relay.kill(signal);
  await alice.page.waitForFunction(() => window.__states.includes('reconnecting'));
  const firstClose = await alice.page.evaluate(() => window.__closes[0]);
  assert.equal(firstClose, signal === 'SIGTERM' ? 1001 : 1006, 'close code seen by the page');
  assert.match(await alice.page.textContent('#status'), /Reconnecting in \d+s|Connecting/);
  assert.ok(await alice.page.locator('#input').isDisabled(), 'input disabled while disconnected');
  assert.ok(await alice.page.locator('#send').isDisabled(), 'send disabled while disconnected');

  relay = await startRelay(port, args);
  // Right after the restart (before or while alice rejoins) another client sends messages.
  const burst = ['while away 1', 'while away 2', 'while away 3'];
  await sender.page.evaluate(async ({ texts }) => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    window.__rx = [];
    window.__ws = ws;
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('ws error')); });
    const joined = new Promise((resolve) => {
      ws.onmessage = (e) => {
        const msg = JSON.parse(e.data);
        window.__rx.push(msg);
        if (msg.type === 'joined') resolve();
      };
    });
    ws.send(JSON.stringify({ type: 'join', room: 'resume', username: 'bob' }));
    await joined;
    for (const text of texts) ws.send(JSON.stringify({ type: 'message', text }));
  }, { texts: burst });

  await alice.page.locator('#status[data-state="connected"]').waitFor({ timeout: 30_000 });
  for (const text of burst) await waitForMessage(alice.page, text);
  // Alice can talk again and bob's socket hears it.
  await sendMessage(alice.page, 'back again');
  await sender.page.waitForFunction(() => window.__rx.some((m) => m.type === 'message' && m.text === 'back again'));

  assert.deepEqual(await messageTexts(alice.page), ['before restart', ...burst, 'back again'],
    'each message exactly once, in order');
  // The rejoin carried since/epoch from the room's first life. In memory the restarted relay
  // has a new epoch, so it answers recovered:false and the page says so; on disk the room's
  // life goes on and the rejoin recovers.
  const rejoin = (await sentFrames(alice.page)).find((m) => m.type === 'join');
  assert.ok(rejoin, 'page sent a join after reconnecting');
  assert.equal(rejoin.room, 'resume');
  assert.equal(rejoin.username, 'alice');
  assert.equal(rejoin.since, 1);
  assert.equal(typeof rejoin.epoch, 'string');
  if (memory) {
    await alice.page.locator('#messages .system', { hasText: 'Some earlier messages may be missing' }).waitFor();
  } else {
    const rejoined = (await receivedFrames(alice.page)).filter((m) => m.type === 'joined').at(-1);
    assert.equal(rejoined.epoch, rejoin.epoch, 'the same life of the room');
    assert.equal(rejoined.recovered, true);
    assert.equal(await alice.page.locator('#messages .system', { hasText: 'Some earlier messages may be missing' }).count(), 0);
  }
  assertClean(alice.problems, { console: false }); // refused connection attempts log console errors
});

test('after a dropped connection the page resumes with since: no gaps, no duplicates', { timeout: 60_000 }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'drop', { query: '?reconnectBaseMs=100', instrument: true });
  const bob = await openJoined(t, relay, 'bob', 'drop');
  await sendMessage(alice.page, 'one');
  await sendMessage(bob.page, 'two');
  await waitForMessage(alice.page, 'two');
  const firstJoin = (await sentFrames(alice.page)).find((m) => m.type === 'join');
  assert.equal(firstJoin.since, undefined, 'a first join sends no since');
  const firstJoined = (await receivedFrames(alice.page)).find((m) => m.type === 'joined');
  const deadPort = await freePort();

  // Drop alice's socket and keep her away (new sockets go to a dead port) while bob talks.
  await alice.page.evaluate((port) => {
    window.__sent.length = 0;
    window.__recv.length = 0;
    window.__blockConnect = `ws://127.0.0.1:${port}/ws`;
    window.__sockets.at(-1).close();
  }, deadPort);
  await alice.page.waitForFunction(() => window.__states.includes('reconnecting'));
  await bob.page.locator('#messages .system', { hasText: 'alice left' }).waitFor();
  await sendMessage(bob.page, 'three');
  await sendMessage(bob.page, 'four');
  await alice.page.evaluate(() => { window.__blockConnect = null; });
  await alice.page.locator('#status[data-state="connected"]').waitFor({ timeout: 30_000 });
  await waitForMessage(alice.page, 'four');
  await sendMessage(bob.page, 'five');
  await waitForMessage(alice.page, 'five');

  assert.deepEqual(await messageTexts(alice.page), ['one', 'two', 'three', 'four', 'five']);
  const rejoin = (await sentFrames(alice.page)).find((m) => m.type === 'join');
  assert.equal(rejoin.since, 2, 'rejoin resumes after the last seq seen');
  assert.equal(rejoin.epoch, firstJoined.epoch, 'rejoin sends the epoch from joined');
  const rejoined = (await receivedFrames(alice.page)).find((m) => m.type === 'joined');
  assert.equal(rejoined.recovered, true);
  assert.deepEqual(rejoined.history.map((m) => m.text), ['three', 'four'], 'only the missed messages');
  assert.equal(await alice.page.locator('#messages .system', { hasText: 'may be missing' }).count(), 0,
    'nothing missing within one epoch');
  await waitForUsers(bob.page, ['alice', 'bob']);
  assertClean(alice.problems, { console: false });
});

test('scrolling to the top loads older messages a page at a time, down to the beginning of the room', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // The relay keeps all 30 messages, but `joined` carries only the newest few: the rest are
  // what the page fetches with `history`. (--history would cap what the relay keeps, too.)
  const relay = await startRelay(undefined, ['--message-rate', '0', '--joined-history-bytes', '1500']);
  t.after(() => relay.kill());
  const texts = Array.from({ length: 30 }, (_, i) => `older message ${i + 1}`);
  // Another client, a plain WebSocket in a page of the same origin, publishes them first.
  const sender = await openPage(t, relay);
  await sender.page.evaluate(async (all) => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('ws error')); });
    let echoed = 0;
    const done = new Promise((resolve) => {
      ws.onmessage = (e) => {
        const msg = JSON.parse(e.data);
        if (msg.type === 'joined') for (const text of all) ws.send(JSON.stringify({ type: 'message', text }));
        if (msg.type === 'message' && ++echoed === all.length) resolve();
      };
    });
    ws.send(JSON.stringify({ type: 'join', room: 'scrollback', username: 'bob' }));
    await done;
  }, texts);

  const alice = await openJoined(t, relay, 'alice', 'scrollback', { instrument: true, viewport: { width: 1000, height: 420 } });
  await waitForMessage(alice.page, 'older message 30');
  const initial = await messageTexts(alice.page);
  assert.ok(initial.length >= 3 && initial.length < 20, `joined carried only the newest few, got ${initial.length}`);
  assert.deepEqual(initial, texts.slice(30 - initial.length));
  assert.ok(await alice.page.evaluate(() => {
    const m = document.getElementById('messages');
    return m.scrollHeight > m.clientHeight;
  }), 'the list overflows, so it can be scrolled');

  // One scroll to the top: one page arrives above, and what was on screen stays put.
  const topBefore = await alice.page.evaluate(() => {
    const m = document.getElementById('messages');
    m.scrollTop = 0;
    const first = m.querySelector('.msg');
    return { id: first.dataset.id, top: first.getBoundingClientRect().top };
  });
  await alice.page.waitForFunction((n) => document.querySelectorAll('#messages .msg').length > n, initial.length);
  const moved = await alice.page.evaluate((id) => {
    const m = document.getElementById('messages');
    return { top: m.querySelector(`.msg[data-id="${id}"]`).getBoundingClientRect().top, scrollTop: m.scrollTop };
  }, topBefore.id);
  assert.ok(moved.scrollTop > 0, 'the view did not jump to the new top');
  assert.ok(Math.abs(moved.top - topBefore.top) <= 2, `the message read stays in place (${topBefore.top} -> ${moved.top})`);

  // The reader keeps scrolling up until the page says the room begins here.
  await alice.page.waitForFunction(() => {
    const m = document.getElementById('messages');
    m.scrollTop = 0;
    return document.querySelector('#messages [data-testid="beginning"]') !== null;
  });
  assert.deepEqual(await messageTexts(alice.page), texts, 'every message once, oldest first');
  const order = await alice.page.$$eval('#messages > li', (nodes) => nodes.map((n) => n.dataset.testid));
  assert.equal(order.indexOf('beginning'), order.indexOf('message') - 1, 'the marker sits right above the oldest message');
  assert.match(await alice.page.textContent('[data-testid="beginning"]'), /beginning of #scrollback/);

  // One request at a time, each before the oldest seq shown, paging down to seq 1.
  const wire = (await alice.page.evaluate(() => window.__wire))
    .map(([dir, data]) => [dir, JSON.parse(data)])
    .filter(([, m]) => m.type === 'history');
  assert.ok(wire.length >= 4, `at least two requests and answers, got ${wire.length}`);
  wire.forEach(([dir], i) => assert.equal(dir, i % 2 === 0 ? '>' : '<', 'a request waits for the previous answer'));
  const requests = wire.filter(([dir]) => dir === '>').map(([, m]) => m);
  assert.equal(requests[0].before, 31 - initial.length);
  for (const r of requests) assert.equal(r.room, 'scrollback');
  const answers = wire.filter(([dir]) => dir === '<').map(([, m]) => m);
  answers.forEach((a, i) => {
    assert.equal(a.hasMore, i < answers.length - 1, `hasMore of answer ${i}`);
    if (i > 0) assert.equal(requests[i].before, answers[i - 1].messages[0].seq, 'each request starts below the last page');
  });
  assert.equal(answers.at(-1).messages[0].seq, 1);
  assertClean(alice.problems);
});

test('error events from the relay are shown and can be dismissed', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'errors', { instrument: true });
  await alice.page.evaluate(() => window.__sockets.at(-1).send('{"type":"shout"}'));
  await alice.page.locator('#banner[data-code="unknown_type"]').waitFor();
  assert.match(await alice.page.textContent('#banner'), /unknown_type/);
  await alice.page.locator('#messages .system.error', { hasText: 'unknown_type' }).waitFor();
  await alice.page.click('#banner-close');
  await alice.page.locator('#banner').waitFor({ state: 'hidden' });
  // The connection stays open after an error.
  await sendMessage(alice.page, 'still here');
  assertClean(alice.problems);
});

test('screenshot of a two-user conversation', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'design-review');
  const bob = await openJoined(t, relay, 'bob', 'design-review');
  await waitForUsers(alice.page, ['alice', 'bob']);
  const script = [
    [bob, 'Morning! Did the relay build go green overnight?'],
    [alice, 'It did: all the protocol tests pass, and the browser tests too.'],
    [bob, 'Nice. Can you share a screenshot of the new chat page?'],
    [alice, 'Here it is: presence on the left, typing indicator under the messages, reconnect status up top.'],
  ];
  for (const [who, text] of script) {
    await sendMessage(who.page, text);
    await waitForMessage(who === alice ? bob.page : alice.page, text);
  }
  // Bob answers with a quote, and alice fixes a word: a reply and an edit in the picture.
  const parent = messageByText(bob.page, script[3][1]);
  await parent.hover();
  await parent.locator('[data-action="reply"]').click();
  await sendMessage(bob.page, 'Looks great. The dark mode is a nice touch too.');
  const own = messageByText(alice.page, script[1][1]);
  await own.hover();
  await own.locator('[data-action="edit"]').click();
  await alice.page.locator('[data-testid="edit-input"]').fill('It did: all the protocol tests pass, and the browser tests as well.');
  await alice.page.press('[data-testid="edit-input"]', 'Enter');
  await bob.page.locator('[data-testid="edited"]').waitFor();
  await sendMessage(alice.page, 'Thanks! Merging it after lunch.');
  await alice.page.locator('[data-testid="seen-by"]', { hasText: 'seen by bob' }).waitFor();
  await alice.page.mouse.move(0, 0);
  // Bob starts typing so the indicator shows in the picture.
  await bob.page.locator('#input').pressSequentially('Ship it');
  await alice.page.locator('#typing', { hasText: 'bob is typing' }).waitFor();
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await alice.page.screenshot({ path: SCREENSHOT });
  assert.ok(fs.statSync(SCREENSHOT).size > 10_000, 'screenshot written');
  assertClean(alice.problems);
  assertClean(bob.problems);
});

/** An HS256 JWT, signed here with node's crypto (what an operator's login service would issue). */
function hs256Token(claims, secret) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  const signature = crypto.createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${signature}`;
}

test('with authentication the page sends its token as a subprotocol and the name comes from it', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const secret = 'browser-test-secret-of-at-least-32-bytes';
  const relay = await startRelay(undefined, ['--auth-secret', secret]);
  t.after(() => relay.kill());
  const exp = Math.floor(Date.now() / 1000) + 600;
  const token = hs256Token({ sub: 'u-42', name: 'Token Name', exp }, secret);
  const alice = await openPage(t, relay, { query: `?token=${token}`, instrument: true });
  // The browser fails the handshake unless the 101 selects one of the offered protocols.
  await join(alice.page, 'typed name', 'auth');
  assert.equal(await alice.page.evaluate(() => window.__sockets[0].protocol), 'chatrelay');
  await waitForUsers(alice.page, ['Token Name']);
  await sendMessage(alice.page, 'signed in');
  const mine = (await receivedFrames(alice.page)).find((f) => f.type === 'message');
  assert.equal(mine.userId, 'u-42');
  assert.equal(mine.username, 'Token Name');
  // Mine by the token's sub (message.userId), not by the connection: editable, listed as me.
  const bubble = messageByText(alice.page, 'signed in');
  assert.ok(await bubble.evaluate((li) => li.classList.contains('mine')));
  await bubble.hover();
  await bubble.locator('[data-action="edit"]').waitFor();
  assert.deepEqual(await alice.page.$$eval('#users .user.me .user-name', (n) => n.map((x) => x.textContent)), ['Token Name']);

  // Without a token the upgrade is refused (401): the page never gets to join.
  const stranger = await openPage(t, relay, { instrument: true });
  await stranger.page.fill('#username', 'stranger');
  await stranger.page.fill('#room', 'auth');
  await stranger.page.click('#join');
  await stranger.page.waitForFunction(() => window.__closes.length > 0);
  assert.equal(await stranger.page.evaluate(() => window.__closes[0]), 1006);
  assertClean(alice.problems);
});

// Cluster mode: a private redis-server on a free port and two relays using it.
async function startRedis(port) {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  // Bounded poll until it accepts connections (200 x 25 ms).
  for (let i = 0; i < 200; i++) {
    const up = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (up) return { proc, kill: async () => { if (proc.exitCode === null && proc.signalCode === null) { proc.kill('SIGKILL'); await exited; } } };
    await delay(25);
  }
  proc.kill('SIGKILL');
  throw new Error(`redis-server did not start on port ${port}`);
}

test('cluster: users on two relays chat, and the page says when Redis is lost and resumes after', { timeout: 60_000 }, async (t) => {
  const redisPort = await freePort();
  let redis = await startRedis(redisPort);
  t.after(() => redis.kill());
  const args = ['--redis-url', `redis://127.0.0.1:${redisPort}`, '--cluster-name', 'browser'];
  const one = await startRelay(undefined, args);
  const two = await startRelay(undefined, args);
  t.after(() => Promise.all([one.kill(), two.kill()]));
  const alice = await openJoined(t, one, 'alice', 'cl', { instrument: true });
  const bob = await openJoined(t, two, 'bob', 'cl');
  await waitForUsers(alice.page, ['alice', 'bob']);
  await sendMessage(alice.page, 'hello from relay one');
  await waitForMessage(bob.page, 'hello from relay one');
  await sendMessage(bob.page, 'hello from relay two');
  await waitForMessage(alice.page, 'hello from relay two');

  await redis.kill();
  await alice.page.locator('#messages .system', { hasText: 'Cluster connection lost' }).waitFor();
  await alice.page.evaluate(() => { window.__sent.length = 0; });
  redis = await startRedis(redisPort);
  // Redis came back empty: the relay says so and the page rejoins with since and epoch.
  await alice.page.locator('#messages .system', { hasText: 'may be missing' }).waitFor({ timeout: 20_000 });
  const rejoin = (await sentFrames(alice.page)).find((m) => m.type === 'join');
  assert.equal(rejoin.since, 2, 'the page resumes after the last seq it saw');
  await sendMessage(bob.page, 'after the outage');
  await waitForMessage(alice.page, 'after the outage');
  assertClean(alice.problems, { console: false });
});

// ------------------------------------------------------------------------------ acknowledged sends, edits, replies

test('a message shows "sending..." until its ack, and its own echo takes the same bubble', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'acks', { instrument: true });
  const bob = await openJoined(t, relay, 'bob', 'acks');

  // The frame is kept back in the page: the bubble is there at once, marked as sending.
  await alice.page.evaluate(() => { window.__holdMessages = true; });
  await alice.page.fill('#input', 'wait for it');
  await alice.page.click('#send');
  const bubble = messageByText(alice.page, 'wait for it');
  await bubble.locator('[data-testid="msg-status"]', { hasText: 'sending...' }).waitFor();
  assert.equal(await bubble.count(), 1);
  assert.ok(await bubble.evaluate((li) => li.classList.contains('pending')));
  assert.equal(await bubble.locator('[data-action]').count(), 0, 'no reply/edit/delete before it has a seq');
  assert.equal(await alice.page.inputValue('#input'), '', 'the composer is free for the next message');
  const [sent] = (await sentFrames(alice.page)).filter((m) => m.type === 'message');
  assert.equal(typeof sent.ref, 'string');
  assert.match(sent.ref, /^p[0-9a-f]{12}-\d+$/, 'a per-tab random prefix and a counter');

  await alice.page.evaluate(() => { window.__holdMessages = false; window.__releaseHeld(); });
  await bubble.locator('[data-testid="msg-status"]').waitFor({ state: 'hidden' });
  await waitForMessage(bob.page, 'wait for it');
  // The ack and the echo (both carrying the ref) both arrived: still one bubble, now ordered.
  await alice.page.waitForFunction((ref) => {
    const frames = window.__recv.map((s) => JSON.parse(s));
    return frames.some((m) => m.type === 'ack' && m.ref === ref) && frames.some((m) => m.type === 'message' && m.ref === ref);
  }, sent.ref);
  const ack = (await receivedFrames(alice.page)).find((m) => m.type === 'ack');
  assert.deepEqual(await messageTexts(alice.page), ['wait for it']);
  assert.deepEqual(await alice.page.$$eval('#messages .msg', (n) => n.map((li) => [li.dataset.seq, li.dataset.id, li.className])),
    [[String(ack.seq), ack.id, 'msg mine']]);
  assert.match(await bubble.locator('time.time').textContent(), /\d{1,2}.\d{2}/);
  await bubble.hover();
  await bubble.locator('[data-action="edit"]').waitFor();
  assertClean(alice.problems);
});

test('an error with the message\'s ref marks its bubble as not sent', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // One message per 20 s: the second one is refused with rate_limited, carrying its ref.
  const relay = await startRelay(undefined, ['--message-rate', '0.05', '--message-burst', '1']);
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'refused', { instrument: true });
  await sendMessage(alice.page, 'first one goes through');
  await alice.page.fill('#input', 'second one is refused');
  await alice.page.click('#send');
  const bubble = messageByText(alice.page, 'second one is refused');
  const status = bubble.locator('[data-testid="msg-status"][data-state="failed"]');
  await status.waitFor();
  const error = (await receivedFrames(alice.page)).find((m) => m.type === 'error');
  const sent = (await sentFrames(alice.page)).filter((m) => m.type === 'message').at(-1);
  assert.equal(error.code, 'rate_limited');
  assert.equal(error.ref, sent.ref);
  assert.equal(await status.textContent(), `not sent: ${error.message}`);
  assert.ok(await alice.page.locator('#banner').isHidden(), 'shown on the bubble, not in the banner');
  // A refused message is not resent by itself; the reader can retry or discard it.
  await bubble.locator('[data-action="retry"]').waitFor();
  await bubble.locator('[data-action="discard"]').click();
  await bubble.waitFor({ state: 'detached' });
  assert.deepEqual(await messageTexts(alice.page), ['first one goes through']);
  assertClean(alice.problems);
});

test('after a reconnect the page resends what was not acknowledged and takes back what history shows: each message once', { timeout: 60_000 }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'resend', { query: '?reconnectBaseMs=100', instrument: true });
  const bob = await openJoined(t, relay, 'bob', 'resend');
  await sendMessage(alice.page, 'before the drop');

  // One message never leaves the page (its socket closes with it held back); the next reaches
  // the relay, but the socket closes right after it, so its ack never comes.
  await alice.page.evaluate(() => { window.__holdMessages = true; });
  await alice.page.fill('#input', 'never reached the relay');
  await alice.page.click('#send');
  await messageByText(alice.page, 'never reached the relay').locator('[data-testid="msg-status"]', { hasText: 'sending...' }).waitFor();
  // She stays away (new sockets go to a dead port) until the page has been looked at.
  const deadPort = await freePort();
  await alice.page.evaluate((port) => {
    window.__holdMessages = false;
    window.__closeAfterMessage = true;
    window.__blockConnect = `ws://127.0.0.1:${port}/ws`;
  }, deadPort);
  await alice.page.fill('#input', 'reached the relay, ack lost');
  await alice.page.click('#send');
  await alice.page.waitForFunction(() => window.__states.includes('reconnecting'));
  const [lost, unacked] = (await sentFrames(alice.page)).filter((m) => m.type === 'message').slice(-2);
  assert.equal(lost.text, 'never reached the relay');
  assert.equal(unacked.text, 'reached the relay, ack lost');
  assert.equal(await alice.page.locator('#messages .msg.pending').count(), 2, 'both still sending');
  await waitForMessage(bob.page, unacked.text);
  await alice.page.evaluate(() => { window.__blockConnect = null; });

  await alice.page.locator('#status[data-state="connected"]').waitFor({ timeout: 30_000 });
  await alice.page.waitForFunction(() => document.querySelectorAll('#messages .msg.pending').length === 0);
  const frames = await receivedFrames(alice.page);
  // The relay had the second one: the rejoin's history holds it with its ref, which takes the
  // bubble; the first goes out again with its ref and is acknowledged.
  const rejoined = frames.filter((m) => m.type === 'joined').at(-1);
  assert.equal(rejoined.history.find((m) => m.text === unacked.text)?.ref, unacked.ref, 'the relay got it before the socket closed');
  const sent = (await sentFrames(alice.page)).filter((m) => m.type === 'message');
  assert.deepEqual(sent.filter((m) => m.ref === lost.ref).map((m) => m.text), [lost.text, lost.text], 'resent with the same ref');
  assert.equal(sent.filter((m) => m.ref === unacked.ref).length, 1, 'what history shows is not resent');
  assert.ok(frames.some((m) => m.type === 'ack' && m.ref === lost.ref));

  // Bob's message after all that: anything duplicated would have arrived before it.
  await sendMessage(bob.page, 'bob after the resend');
  for (const page of [alice.page, bob.page]) {
    await waitForMessage(page, 'bob after the resend');
    assert.deepEqual(await messageTexts(page), ['before the drop', unacked.text, lost.text, 'bob after the resend']);
  }
  assertClean(alice.problems, { console: false });
  assertClean(bob.problems);
});

test('a resend of a message the relay already has gets the same ack and shows once (the relay de-duplicates)', { timeout: 60_000 }, async (t) => {
  // joined carries only the newest few messages: after bob's burst the rejoin's history does
  // not show alice's message, so the page cannot tell it arrived and resends it.
  const relay = await startRelay(undefined, ['--joined-history-bytes', '600']);
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'dedupe', { query: '?reconnectBaseMs=100', instrument: true });
  const bob = await openJoined(t, relay, 'bob', 'dedupe');
  const deadPort = await freePort();
  // Alice's socket closes right after the message, and she stays away while bob talks.
  await alice.page.evaluate((port) => {
    window.__closeAfterMessage = true;
    window.__blockConnect = `ws://127.0.0.1:${port}/ws`;
  }, deadPort);
  await alice.page.fill('#input', 'sent once, resent once');
  await alice.page.click('#send');
  await alice.page.waitForFunction(() => window.__states.includes('reconnecting'));
  await waitForMessage(bob.page, 'sent once, resent once');
  const seq = Number(await messageByText(bob.page, 'sent once, resent once').getAttribute('data-seq'));
  for (let i = 1; i <= 5; i++) await sendMessage(bob.page, `bob while alice is away ${i}`);
  await alice.page.evaluate(() => { window.__blockConnect = null; });
  await alice.page.locator('#status[data-state="connected"]').waitFor({ timeout: 30_000 });
  await messageByText(alice.page, 'sent once, resent once').and(alice.page.locator(':not(.pending)')).waitFor();

  const [first, again] = (await sentFrames(alice.page)).filter((m) => m.type === 'message');
  assert.equal(again.ref, first.ref, 'resent with the same ref');
  const frames = await receivedFrames(alice.page);
  const rejoined = frames.filter((m) => m.type === 'joined').at(-1);
  assert.ok(!rejoined.history.some((m) => m.ref === first.ref), 'history did not show it');
  const ack = frames.find((m) => m.type === 'ack' && m.ref === first.ref);
  assert.equal(ack.seq, seq, 'the same seq as the message bob got: no second message');
  assert.equal(await alice.page.getAttribute(`#messages .msg[data-id="${ack.id}"]`, 'data-seq'), String(seq));

  await sendMessage(bob.page, 'after the resend');
  await waitForMessage(alice.page, 'after the resend');
  for (const page of [alice.page, bob.page]) {
    const texts = await messageTexts(page);
    assert.equal(texts.filter((x) => x === 'sent once, resent once').length, 1);
  }
  assert.deepEqual(await messageTexts(bob.page), ['sent once, resent once',
    ...[1, 2, 3, 4, 5].map((i) => `bob while alice is away ${i}`), 'after the resend']);
  assertClean(alice.problems, { console: false });
});

test('the author edits and deletes a message, the other page shows both, and only the author has those actions', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'edits', { instrument: true });
  const bob = await openJoined(t, relay, 'bob', 'edits');
  await sendMessage(alice.page, 'meet at noon tomorow');
  await sendMessage(alice.page, 'this one goes away');
  await waitForMessage(bob.page, 'this one goes away');
  await sendMessage(bob.page, 'ok, noted');
  await waitForMessage(alice.page, 'ok, noted');

  // Bob may answer alice's message, not change it; his own he may.
  const onBob = messageByText(bob.page, 'meet at noon tomorow');
  await onBob.hover();
  await onBob.locator('[data-action="reply"]').waitFor();
  assert.equal(await onBob.locator('[data-action="edit"], [data-action="delete"]').count(), 0);
  const bobsOwn = messageByText(bob.page, 'ok, noted');
  await bobsOwn.hover();
  await bobsOwn.locator('[data-action="edit"]').waitFor();
  assert.equal(await bobsOwn.locator('[data-action="delete"]').count(), 1);

  // Edit inline; Escape cancels and sends nothing.
  const mine = messageByText(alice.page, 'meet at noon tomorow');
  const id = await mine.getAttribute('data-id');
  const seq = Number(await mine.getAttribute('data-seq'));
  await mine.hover();
  await mine.locator('[data-action="edit"]').click();
  const editor = alice.page.locator('[data-testid="edit-input"]');
  assert.equal(await editor.inputValue(), 'meet at noon tomorow');
  await editor.fill('never mind');
  await editor.press('Escape');
  await editor.waitFor({ state: 'detached' });
  assert.ok((await messageTexts(alice.page)).includes('meet at noon tomorow'));
  assert.equal((await sentFrames(alice.page)).filter((m) => m.type === 'edit').length, 0);
  // Enter saves.
  await mine.hover();
  await mine.locator('[data-action="edit"]').click();
  await editor.fill('meet at noon tomorrow');
  await editor.press('Enter');
  const edit = (await sentFrames(alice.page)).find((m) => m.type === 'edit');
  assert.deepEqual({ ...edit, ref: undefined }, { type: 'edit', room: 'edits', seq, text: 'meet at noon tomorrow', ref: undefined });
  for (const page of [alice.page, bob.page]) {
    const li = page.locator(`#messages .msg[data-id="${id}"]`);
    await li.locator('[data-testid="edited"]', { hasText: '(edited)' }).waitFor();
    assert.equal(await li.locator('.text').textContent(), 'meet at noon tomorrow');
    await li.locator('[data-testid="msg-status"]').waitFor({ state: 'hidden' });
  }

  // Delete asks once, then the message is gone on both pages: no text, a note in its place.
  const doomed = messageByText(alice.page, 'this one goes away');
  const doomedId = await doomed.getAttribute('data-id');
  await doomed.hover();
  await doomed.locator('[data-action="delete"]').click();
  await doomed.locator('[data-action="confirm-delete"]').click();
  for (const page of [alice.page, bob.page]) {
    const li = page.locator(`#messages .msg[data-id="${doomedId}"]`);
    await li.locator('[data-testid="tombstone"]', { hasText: 'message deleted' }).waitFor();
    assert.equal(await li.locator('.text').count(), 0);
    assert.equal(await li.locator('[data-action]').count(), 0, 'nothing more to do with it');
    assert.deepEqual(await messageTexts(page), ['meet at noon tomorrow', 'ok, noted']);
  }

  // Someone joining later gets the messages as they are now from the relay's history.
  const carol = await openJoined(t, relay, 'carol', 'edits', { instrument: true });
  await waitForMessage(carol.page, 'ok, noted');
  const history = (await receivedFrames(carol.page)).find((m) => m.type === 'joined').history;
  assert.ok(history.some((m) => m.edited === true) && history.some((m) => m.deleted === true));
  assert.deepEqual(await messageTexts(carol.page), ['meet at noon tomorrow', 'ok, noted']);
  await carol.page.locator(`#messages .msg[data-id="${id}"] [data-testid="edited"]`).waitFor();
  await carol.page.locator(`#messages .msg[data-id="${doomedId}"] [data-testid="tombstone"]`).waitFor();
  for (const h of [alice, bob, carol]) assertClean(h.problems);
});

test('a reply carries replyTo and shows a quote of the parent, or says the parent is not loaded', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // The relay keeps only the newest 3 messages, so a late joiner never gets the parent.
  const relay = await startRelay(undefined, ['--memory', '--history', '3']);
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'replies');
  const bob = await openJoined(t, relay, 'bob', 'replies', { instrument: true });
  const question = 'Which port does the relay listen on by default? Asking for the deployment checklist we are writing';
  await sendMessage(alice.page, question);
  for (let i = 1; i <= 4; i++) await sendMessage(alice.page, `filler ${i}`);
  await waitForMessage(bob.page, 'filler 4');

  // Reply, change of mind (Escape), reply again.
  const parent = messageByText(bob.page, question);
  const parentSeq = Number(await parent.getAttribute('data-seq'));
  await parent.hover();
  await parent.locator('[data-action="reply"]').click();
  await bob.page.locator('#reply-bar', { hasText: 'Replying to alice' }).waitFor();
  assert.match(await bob.page.textContent('#reply-text'), /^Which port does the relay listen on by default\?/);
  await bob.page.press('#input', 'Escape');
  await bob.page.locator('#reply-bar').waitFor({ state: 'hidden' });
  await parent.hover();
  await parent.locator('[data-action="reply"]').click();
  await bob.page.locator('#reply-bar').waitFor();
  await sendMessage(bob.page, '8080, see the README');
  assert.ok(await bob.page.locator('#reply-bar').isHidden(), 'the reply is done once sent');
  const sent = (await sentFrames(bob.page)).find((m) => m.type === 'message');
  assert.equal(sent.replyTo, parentSeq);

  // On alice's page the answer quotes her message: its author and the start of its text.
  await waitForMessage(alice.page, '8080, see the README');
  const quote = messageByText(alice.page, '8080, see the README').locator('[data-testid="quote"]');
  assert.equal(await quote.locator('.quote-author').textContent(), 'You');
  const quoted = await quote.locator('.quote-text').textContent();
  assert.ok(quoted.endsWith('…') && question.startsWith(quoted.slice(0, -1)) && quoted.length < question.length, `the start of the text: ${quoted}`);
  const onBob = messageByText(bob.page, '8080, see the README').locator('[data-testid="quote"]');
  assert.equal(await onBob.locator('.quote-author').textContent(), 'alice');

  // Carol joins when the relay no longer has the parent: the quote says so.
  const carol = await openJoined(t, relay, 'carol', 'replies', { instrument: true });
  await waitForMessage(carol.page, '8080, see the README');
  const joined = (await receivedFrames(carol.page)).find((m) => m.type === 'joined');
  assert.deepEqual(joined.history.map((m) => m.text), ['filler 3', 'filler 4', '8080, see the README']);
  const carolQuote = messageByText(carol.page, '8080, see the README').locator('[data-testid="quote"]');
  assert.equal(await carolQuote.textContent(), 'original message not loaded');
  for (const h of [alice, bob, carol]) assertClean(h.problems);
});

/** Waits for the one "seen by" line to say `text` right under the message `under`. */
async function waitForSeenBy(page, under, text) {
  await page.waitForFunction(({ under, text }) => {
    const lines = document.querySelectorAll('#messages [data-testid="seen-by"]');
    return lines.length === 1 && lines[0].textContent === text
      && lines[0].previousElementSibling?.querySelector('.text')?.textContent === under;
  }, { under, text });
}

/** The unread counts the room list shows: {room: count}, rooms without a badge left out. */
async function unreadCounts(page) {
  return page.$$eval('#rooms [data-testid="room-item"]', (items) => Object.fromEntries(items
    .filter((li) => li.querySelector('[data-testid="unread"]'))
    .map((li) => [li.dataset.room, Number(li.querySelector('[data-testid="unread"]').dataset.count)])));
}

test('rooms shown before stay in the room list and count the messages that arrive while another is shown', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'kitchen', { instrument: true });
  const bob = await openJoined(t, relay, 'bob', 'kitchen');
  await sendMessage(alice.page, 'anyone for coffee?');
  assert.ok(await alice.page.locator('#rooms').isHidden(), 'no list while there is one room');

  await alice.page.fill('#switch-room', 'garden');
  await alice.page.click('#switch');
  await alice.page.locator('#input:enabled').waitFor();
  await alice.page.locator('#rooms [data-room="kitchen"]').waitFor();
  assert.deepEqual(await alice.page.$$eval('#rooms [data-testid="room-item"]', (n) => n.map((li) => [li.dataset.room, li.classList.contains('current')])),
    [['garden', true], ['kitchen', false]]);
  assert.equal((await sentFrames(alice.page)).filter((m) => m.type === 'leave').length, 0, 'kitchen stays joined');

  // Bob talks in the kitchen: alice's list counts it; her own words in the garden do not.
  await sendMessage(bob.page, 'me!');
  await sendMessage(bob.page, 'milk, no sugar');
  await alice.page.locator('#rooms [data-room="kitchen"] [data-testid="unread"][data-count="2"]').waitFor();
  await sendMessage(alice.page, 'in the garden now');
  assert.deepEqual(await unreadCounts(alice.page), { kitchen: 2 });
  assert.equal(await alice.page.title(), '(2) #garden · chatrelay');
  assert.deepEqual(await messageTexts(alice.page), ['in the garden now']);

  // Opening the kitchen shows what came and clears its count; the garden waits in the list.
  await alice.page.click('#rooms [data-room="kitchen"] .room-link');
  await waitForMessage(alice.page, 'milk, no sugar');
  assert.deepEqual(await messageTexts(alice.page), ['anyone for coffee?', 'me!', 'milk, no sugar']);
  assert.deepEqual(await unreadCounts(alice.page), {});
  assert.equal(await alice.page.textContent('#room-title'), '#kitchen');
  await sendMessage(alice.page, 'coming');
  await waitForMessage(bob.page, 'coming');
  // Leaving a room from the list sends `leave` and drops it.
  await alice.page.locator('#rooms [data-room="garden"]').hover();
  await alice.page.click('#rooms [data-room="garden"] .room-leave');
  await alice.page.locator('#rooms').waitFor({ state: 'hidden' });
  await alice.page.waitForFunction(() => window.__recv.some((s) => JSON.parse(s).type === 'left'));
  assert.deepEqual((await sentFrames(alice.page)).filter((m) => m.type === 'leave').map((m) => m.room), ['garden']);
  assertClean(alice.problems);
  assertClean(bob.problems);
});

test('the page reports what it showed with read, and "seen by" under the last message lists who has read it', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'porch', { instrument: true });
  const bob = await openJoined(t, relay, 'bob', 'porch', { instrument: true });
  const carol = await openJoined(t, relay, 'carol', 'porch', { instrument: true });
  assert.equal(await alice.page.evaluate(() => document.visibilityState), 'visible');

  await sendMessage(bob.page, 'who is here?');
  const seq = Number(await messageByText(bob.page, 'who is here?').getAttribute('data-seq'));
  // Each page showed it (its tab is visible) and said so; the line right under the message
  // lists who read it, never the reader's own page nor the message's author.
  await waitForSeenBy(bob.page, 'who is here?', 'seen by alice, carol');
  for (const { page } of [alice, bob, carol]) {
    await page.waitForFunction((want) => window.__sent.some((s) => s === JSON.stringify(want)), { type: 'read', room: 'porch', seq });
  }
  await waitForSeenBy(alice.page, 'who is here?', 'seen by carol');

  // A newer message: the line moves under it as they read it, one line in all.
  await sendMessage(alice.page, 'me');
  await waitForSeenBy(alice.page, 'me', 'seen by bob, carol');
  await waitForSeenBy(bob.page, 'me', 'seen by carol');
  await waitForSeenBy(carol.page, 'me', 'seen by bob');
  assert.equal(await alice.page.locator('#messages [data-testid="seen-by"]').count(), 1);
  // Never backwards: each page's reads rise.
  for (const { page } of [alice, bob, carol]) {
    const reads = (await sentFrames(page)).filter((m) => m.type === 'read').map((m) => m.seq);
    assert.deepEqual(reads, [...reads].sort((a, b) => a - b));
    assert.equal(new Set(reads).size, reads.length);
  }
  for (const h of [alice, bob, carol]) assertClean(h.problems);
});

test('rooms remembered from an earlier visit show the relay\'s unread counts (joined.unread)', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const alice = await openJoined(t, relay, 'alice', 'lounge', { instrument: true });
  const bob = await openJoined(t, relay, 'bob', 'lounge');
  await sendMessage(bob.page, 'first');
  await waitForMessage(alice.page, 'first');
  const first = Number(await messageByText(alice.page, 'first').getAttribute('data-seq'));
  await alice.page.waitForFunction((seq) => window.__sent.some((s) => { const m = JSON.parse(s); return m.type === 'read' && m.seq === seq; }), first);
  await alice.page.fill('#switch-room', 'porch');
  await alice.page.click('#switch');
  await alice.page.locator('#input:enabled').waitFor();
  await alice.page.close();

  // While alice is gone bob says two more things in the lounge.
  await sendMessage(bob.page, 'second');
  await sendMessage(bob.page, 'third');

  // A new page of alice's (same browser profile) remembers both rooms; the lounge is joined in
  // the background and its count comes from the relay's read state.
  const page = await alice.ctx.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors = [];
  page.on('pageerror', (err) => errors.push(String(err)));
  await page.goto(`${relay.base}/`);
  assert.equal(await page.inputValue('#room'), 'porch');
  await join(page, 'alice', 'porch');
  await page.locator('#rooms [data-room="lounge"] [data-testid="unread"][data-count="2"]').waitFor();
  const joinedLounge = (await receivedFrames(page)).find((m) => m.type === 'joined' && m.room === 'lounge');
  assert.equal(joinedLounge.lastRead, first);
  assert.equal(joinedLounge.unread, 2);
  assert.equal(await page.title(), '(2) #porch · chatrelay');

  await page.click('#rooms [data-room="lounge"] .room-link');
  await waitForMessage(page, 'third');
  assert.deepEqual(await messageTexts(page), ['first', 'second', 'third']);
  assert.deepEqual(await unreadCounts(page), {});
  const third = Number(await messageByText(page, 'third').getAttribute('data-seq'));
  await page.waitForFunction((seq) => window.__sent.some((s) => { const m = JSON.parse(s); return m.type === 'read' && m.room === 'lounge' && m.seq === seq; }), third);
  assert.deepEqual(errors, []);
  assertClean(bob.problems);
});

test('two tabs of one person are one person: listed once, both marked as me, each can change the other\'s messages', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  t.after(() => relay.kill());
  const tab1 = await openJoined(t, relay, 'alice', 'tabs');
  const bob = await openJoined(t, relay, 'bob', 'tabs');
  const tab2 = await openJoined(t, relay, 'alice', 'tabs');
  for (const { page } of [tab1, tab2, bob]) {
    await waitForUsers(page, ['alice', 'bob']);
    assert.equal(await page.textContent('#online-count'), '2');
  }
  for (const { page } of [tab1, tab2]) {
    assert.deepEqual(await page.$$eval('#users .user.me .user-name', (n) => n.map((x) => x.textContent)), ['alice']);
  }
  // Without authentication the relay goes by the name: a message from the other tab is mine.
  await sendMessage(tab2.page, 'from the second tab');
  await waitForMessage(tab1.page, 'from the second tab');
  const there = messageByText(tab1.page, 'from the second tab');
  assert.ok(await there.evaluate((li) => li.classList.contains('mine')));
  await there.hover();
  await there.locator('[data-action="edit"]').click();
  await tab1.page.locator('[data-testid="edit-input"]').fill('edited from the first tab');
  await tab1.page.press('[data-testid="edit-input"]', 'Enter');
  for (const { page } of [tab1, tab2, bob]) await waitForMessage(page, 'edited from the first tab');
  for (const h of [tab1, tab2, bob]) assertClean(h.problems);
});

test('a remembered room the relay refuses (forbidden_room) leaves the room list with a note, not an error banner', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const secret = 'browser-test-secret-of-at-least-32-bytes';
  const relay = await startRelay(undefined, ['--auth-secret', secret]);
  t.after(() => relay.kill());
  const token = hs256Token({ sub: 'u-7', name: 'alice', rooms: ['allowed', 'also-allowed'], exp: Math.floor(Date.now() / 1000) + 600 }, secret);
  const alice = await openPage(t, relay, { query: `?token=${token}`, instrument: true });
  // An earlier visit (another token) left two rooms in the list; this token allows one of them.
  await alice.page.evaluate(() => localStorage.setItem('chatrelay.rooms', JSON.stringify(['also-allowed', 'secret-room'])));
  await join(alice.page, 'alice', 'allowed');
  await alice.page.locator('#messages .system.warn', { hasText: '#secret-room left the room list' }).waitFor();
  const error = (await receivedFrames(alice.page)).find((m) => m.type === 'error');
  assert.equal(error.code, 'forbidden_room');
  const join1 = (await sentFrames(alice.page)).find((m) => m.type === 'join' && m.room === 'secret-room');
  assert.equal(error.ref, join1.ref, 'the error names the join by its ref');
  await alice.page.locator('#rooms [data-room="also-allowed"]').waitFor();
  assert.equal(await alice.page.locator('#rooms [data-room="secret-room"]').count(), 0);
  assert.ok(await alice.page.locator('#banner').isHidden());
  assert.equal(await alice.page.textContent('#status-text'), 'Connected');
  assertClean(alice.problems);
});
