'use strict';
// A trivial app backend for benches/hooks.py: answers every POST at once with
// {"allow":true} (a publish or join hook that lets everything through; a webhook receiver
// that accepts every batch), over keep-alive HTTP/1.1 on loopback. Node's own `http`, no
// dependencies, no parsing: the point is to measure what asking costs the relay, not what
// a backend does with the question.
//
//   PORT=18400 node benches/peers/hook-backend.js     (127.0.0.1 only; HOST overrides)
//
// GET /stats answers what it saw since it started, as JSON: requests, bytes, events (the
// number of "eventId" keys in the bodies, i.e. webhook events), the connections POSTs came
// on (the relay's pool), and the times (ms since the epoch) of the first and last POST.

const http = require('http');

const PORT = Number(process.env.PORT || 18400);
const HOST = process.env.HOST || '127.0.0.1';
const ANSWER = Buffer.from('{"allow":true}');
const HEADERS = { 'Content-Type': 'application/json', 'Content-Length': ANSWER.length };
const EVENT_KEY = Buffer.from('"eventId"');

// The connections POSTs came on (the relay's pool; the GETs of /stats are not counted).
const seen = new WeakSet();
const stats = { requests: 0, bytes: 0, events: 0, connections: 0, first_ms: null, last_ms: null };

function countEvents(chunk) {
  // Webhook batches only; a chunk boundary inside a key can miss one (rare, and the relay's
  // own relay_hook_* metrics are the figure of record).
  let n = 0;
  for (let i = chunk.indexOf(EVENT_KEY); i !== -1; i = chunk.indexOf(EVENT_KEY, i + EVENT_KEY.length)) n++;
  return n;
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    const body = JSON.stringify(stats);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  if (!seen.has(req.socket)) {
    seen.add(req.socket);
    stats.connections++;
  }
  const webhook = req.url.startsWith('/webhook');
  req.on('data', (chunk) => {
    stats.bytes += chunk.length;
    if (webhook) stats.events += countEvents(chunk);
  });
  req.on('end', () => {
    const now = Date.now();
    stats.requests++;
    if (stats.first_ms === null) stats.first_ms = now;
    stats.last_ms = now;
    res.writeHead(200, HEADERS);
    res.end(ANSWER);
  });
});
// The relay keeps idle pooled connections 30 s: never close one first (Node's default is
// 5 s, which would make the relay race a closing socket now and then).
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.requestTimeout = 0;

server.listen(PORT, HOST, () => {
  console.log(`hook-backend: node ${process.version}, http://${HOST}:${PORT}/ (answers {"allow":true})`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
