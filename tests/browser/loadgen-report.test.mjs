// The loadgen's HTML report (`loadgen --html FILE`) opened in a real browser.
//
// Run from the repository root, after `cargo build -p relay -p loadgen`:
//
//     (cd tests/browser && npm ci)        # installs playwright-core only; no browser download
//     node --test tests/browser/
//
// Needs Chromium at /usr/bin/chromium (or CHROMIUM_BIN), the relay binary ($RELAY_BIN, else
// target/debug/relay) and the loadgen binary ($LOADGEN_BIN, else target/debug/loadgen).
//
// The test starts a relay child process on a free 127.0.0.1 port with its abuse limits off,
// runs a short capacity search against it (2 steps of 1 s, 40 then 80 clients, with
// --metrics-url, --server-pid and --report-interval), and opens the page the loadgen wrote:
// no console or page errors, no request leaves the page (it is self-contained), the answer
// sentence and the SVG charts are there. It writes the screenshot results/loadgen-report.png.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { setTimeout as delay } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = (env, name) => (process.env[env]
  ? path.resolve(process.env[env])
  : path.join(ROOT, 'target', 'debug', name));
const RELAY_BIN = bin('RELAY_BIN', 'relay');
const LOADGEN_BIN = bin('LOADGEN_BIN', 'loadgen');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SCREENSHOT = path.join(ROOT, 'results', 'loadgen-report.png');
const LIMITS_OFF = ['--message-rate', '0', '--command-rate', '0', '--ip-message-rate', '0',
  '--ip-command-rate', '0', '--frame-rate', '0', '--max-connections-per-ip', '0',
  '--connection-rate', '0', '--connection-rate-per-ip', '0'];

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

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
});
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'loadgen-report-'));
let browser;
after(async () => {
  for (const c of children) c.kill('SIGKILL');
  if (browser) await browser.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function startRelay() {
  assert.ok(fs.existsSync(RELAY_BIN), `relay binary not found at ${RELAY_BIN}: cargo build -p relay, or set RELAY_BIN`);
  const port = await freePort();
  const proc = spawn(RELAY_BIN, ['--listen', `127.0.0.1:${port}`, '--memory', ...LIMITS_OFF], {
    cwd: tmp,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  children.add(proc);
  let log = '';
  proc.stderr.on('data', (d) => { log = (log + d).slice(-4000); });
  // Bounded poll of /healthz (200 x 50 ms).
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`relay exited early:\n${log}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200) return { port, proc };
    } catch { /* not listening yet */ }
    await delay(50);
  }
  throw new Error(`relay did not answer /healthz:\n${log}`);
}

test('the loadgen HTML report renders in Chromium', { timeout: 120_000 }, async () => {
  assert.ok(fs.existsSync(LOADGEN_BIN), `loadgen binary not found at ${LOADGEN_BIN}: cargo build -p loadgen, or set LOADGEN_BIN`);
  assert.ok(fs.existsSync(CHROMIUM_BIN), `Chromium not found at ${CHROMIUM_BIN}: apt-get install -y chromium`);
  const { port, proc } = await startRelay();
  const html = path.join(tmp, 'report.html');
  const json = path.join(tmp, 'report.json');
  const { stdout } = await promisify(execFile)(LOADGEN_BIN, [
    '--url', `ws://127.0.0.1:${port}/ws`, '--scenario', 'capacity',
    '--clients', '40', '--rooms', '4', '--rate', '200', '--step-clients', '40',
    '--step-duration', '1s', '--drain', '500ms', '--max-steps', '2', '--slo', 'p99<2s',
    '--metrics-url', `http://127.0.0.1:${port}/metrics`, '--server-pid', String(proc.pid),
    '--report-interval', '250ms', '--threads', '1', '--no-progress', '--html', html, '--json', json,
  ], { timeout: 90_000 });
  assert.match(stdout, /CAPACITY/);
  const report = JSON.parse(fs.readFileSync(json, 'utf8'));
  const sentence = report.capacity.answer.sentence;
  // Both steps normally hold (80 clients); a busy machine may end the search earlier, and the
  // page must show whatever the answer was.
  assert.match(sentence, /^(The relay holds|The relay does not hold|At the base load)/);

  browser = await chromium.launch({
    executablePath: CHROMIUM_BIN,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    timeout: 60_000,
  });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const problems = [];
  const requests = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('request', (r) => { if (!r.url().startsWith('file:')) requests.push(r.url()); });
  await page.goto(pathToFileURL(html).href);
  assert.equal((await page.locator('#answer').textContent()).trim(), sentence);
  assert.ok(await page.locator('svg').count() >= 3, 'percentile plot and step charts');
  assert.ok(await page.locator('svg polyline').count() >= 3);
  const body = await page.locator('body').textContent();
  for (const needle of ['Settings', 'Capacity steps', 'Latency', 'Over time', 'Throughput and loss', 'Server', 'Generator']) {
    assert.ok(body.includes(needle), `page lacks ${needle}`);
  }
  assert.match(body, /relay \d[\d,]* = clients \d/, 'the delivery cross-check is shown');
  assert.equal(await page.locator('script').count(), 0, 'no scripts');
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.deepEqual(problems, []);
  assert.deepEqual(requests, [], 'the page fetches nothing');
});
