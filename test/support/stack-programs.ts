/**
 * Small Node programs the stack tests run inside namespaces (`ip netns exec NS node FILE ...`):
 *
 * - UPSTREAM_SERVER_JS plays the internet's servers in the "upstream" namespace: HTTP (random
 *   blobs with their sha256, uploads hashed, a paced endless-ish stream), a half-close server, a
 *   server that resets, a UDP echo. It prints one JSON line per event on stdout
 *   (`{"ev":"ready",...}` first).
 * - VM_CLIENT_JS is the VM side's toolbox (many concurrent connections, half-close, reset, a
 *   connection flood, a UDP flood, DNS through the namespace's resolv.conf, one TCP connect).
 *   Every mode prints exactly one JSON result line (the flood modes print theirs and then stay
 *   alive, holding their sockets, until stdin closes or they are killed).
 *
 * They are plain CommonJS strings: the namespaces run `node` on a file written by
 * `writePrograms()`, no build step involved.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const UPSTREAM_SERVER_JS = String.raw`
'use strict';
const http = require('node:http');
const net = require('node:net');
const dgram = require('node:dgram');
const crypto = require('node:crypto');
const cfg = JSON.parse(process.argv[2]);
const log = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const blobs = new Map();
function blob(n) {
  let b = blobs.get(n);
  if (!b) {
    const data = crypto.randomBytes(n);
    b = { data, sha256: sha(data) };
    blobs.set(n, b);
  }
  return b;
}
const hosts = cfg.hosts;
let pending = 0;
const listening = () => { if (--pending === 0) log({ ev: 'ready', pid: process.pid }); };

function handler(req, res) {
  const u = new URL(req.url, 'http://x');
  const parts = u.pathname.split('/').filter(Boolean);
  if (req.method === 'GET' && parts[0] === 'hello') {
    res.end('hello\n');
    return;
  }
  if (req.method === 'GET' && parts[0] === 'bytes' && /^\d+$/.test(parts[1] || '')) {
    const b = blob(Number(parts[1]));
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': b.data.length, 'x-sha256': b.sha256 });
    res.end(b.data);
    return;
  }
  if (req.method === 'GET' && parts[0] === 'sha' && /^\d+$/.test(parts[1] || '')) {
    res.end(blob(Number(parts[1])).sha256 + '\n');
    return;
  }
  if (req.method === 'GET' && parts[0] === 'slow') {
    // Paced stream: CHUNK bytes every MS ms, TOTAL bytes in all (a long download).
    const total = Number(u.searchParams.get('total') || 1e9);
    const chunk = Number(u.searchParams.get('chunk') || 65536);
    const ms = Number(u.searchParams.get('ms') || 10);
    const id = u.searchParams.get('id') || '';
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
    let sent = 0;
    const piece = crypto.randomBytes(chunk);
    const t = setInterval(() => {
      if (sent >= total) { clearInterval(t); res.end(); return; }
      const n = Math.min(chunk, total - sent);
      sent += n;
      res.write(n === chunk ? piece : piece.subarray(0, n));
    }, ms);
    log({ ev: 'slow-start', id, remote: req.socket.remoteAddress });
    res.on('close', () => { clearInterval(t); log({ ev: 'slow-closed', id, sent, complete: sent >= total }); });
    return;
  }
  if ((req.method === 'POST' || req.method === 'PUT') && parts[0] === 'upload') {
    const h = crypto.createHash('sha256');
    let bytes = 0;
    req.on('data', (d) => { h.update(d); bytes += d.length; });
    req.on('end', () => {
      const r = { bytes, sha256: h.digest('hex') };
      log({ ev: 'upload', ...r });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(r) + '\n');
    });
    return;
  }
  res.writeHead(404);
  res.end('not found\n');
}

// Half-close: reads until the client's FIN, then answers (a JSON line and REPLY bytes) and ends.
function halfHandler(s) {
  const h = crypto.createHash('sha256');
  let received = 0;
  s.on('data', (d) => { h.update(d); received += d.length; });
  s.on('end', () => {
    const payload = blob(cfg.halfReply);
    const head = JSON.stringify({ received, sha256: h.digest('hex'), replyBytes: payload.data.length, replySha256: payload.sha256 }) + '\n';
    log({ ev: 'half-end', received });
    s.write(head);
    s.end(payload.data);
  });
  s.on('error', (e) => log({ ev: 'half-error', error: e.code || e.message }));
}

// Reset: answers the client's first bytes with a RST (SO_LINGER 0 + close).
function rstHandler(s) {
  s.once('data', () => {
    log({ ev: 'rst-sent', remote: s.remoteAddress });
    s.resetAndDestroy();
  });
  s.on('error', () => {});
}

// One server object per address (a net.Server listens once).
for (const h of hosts) {
  const server = http.createServer(handler);
  server.keepAliveTimeout = 1000;
  server.on('connection', (s) => log({ ev: 'http-conn', remote: s.remoteAddress }));
  const half = net.createServer({ allowHalfOpen: true }, halfHandler);
  const rst = net.createServer(rstHandler);
  pending += 3;
  server.listen({ port: cfg.http, host: h, ipv6Only: h.includes(':') }, listening);
  half.listen({ port: cfg.half, host: h, ipv6Only: h.includes(':') }, listening);
  rst.listen({ port: cfg.rst, host: h, ipv6Only: h.includes(':') }, listening);
  pending += 1;
  const u = dgram.createSocket({ type: h.includes(':') ? 'udp6' : 'udp4', ipv6Only: h.includes(':') });
  u.on('message', (m, r) => u.send(m, r.port, r.address));
  u.bind(cfg.udpEcho, h, listening);
}
`;

export const VM_CLIENT_JS = String.raw`
'use strict';
const net = require('node:net');
const dgram = require('node:dgram');
const crypto = require('node:crypto');
const dns = require('node:dns');
const [mode, ...args] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const t0 = Date.now();

function holdUntilStdinCloses() {
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
}

if (mode === 'conns') {
  // N connections open at once (all connected before any request), then HTTP/1.0 GET PATH on each.
  const [host, port, path, nStr, timeoutStr] = args;
  const n = Number(nStr);
  const socks = [];
  let connected = 0, done = 0, ok = 0;
  const errors = {};
  const timer = setTimeout(() => finish('timeout'), Number(timeoutStr || 60000));
  function finish(why) {
    clearTimeout(timer);
    out({ why, n, connected, ok, failed: n - ok, errors, maxConcurrent: connected, ms: Date.now() - t0 });
    process.exit(0);
  }
  function settle(i, good, err) {
    if (socks[i].settled) return;
    socks[i].settled = true;
    done++;
    if (good) ok++; else errors[err] = (errors[err] || 0) + 1;
    if (done === n) finish('done');
  }
  for (let i = 0; i < n; i++) {
    const s = net.connect({ host, port: Number(port) });
    const st = { s, settled: false, body: '' };
    socks.push(st);
    s.setEncoding('utf8');
    s.on('connect', () => {
      connected++;
      if (connected === n) for (const x of socks) x.s.write('GET ' + path + ' HTTP/1.0\r\nHost: x\r\n\r\n');
    });
    s.on('data', (d) => { st.body += d; });
    s.on('end', () => settle(i, /^HTTP\/1\.[01] 200/.test(st.body) && st.body.endsWith('hello\n'), 'bad-response'));
    s.on('error', (e) => settle(i, false, e.code || e.message));
  }
} else if (mode === 'halfclose') {
  const [host, port, sizeStr] = args;
  const data = crypto.randomBytes(Number(sizeStr));
  const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
  const chunks = [];
  let sentEnd = 0;
  s.on('connect', () => s.end(data, () => { sentEnd = Date.now(); }));
  s.on('data', (d) => chunks.push(d));
  s.on('error', (e) => { out({ ok: false, error: e.code || e.message }); process.exit(0); });
  s.on('end', () => {
    const all = Buffer.concat(chunks);
    const nl = all.indexOf(10);
    let head = null;
    try { head = JSON.parse(all.subarray(0, nl).toString()); } catch {}
    const body = all.subarray(nl + 1);
    out({
      ok: true,
      sentBytes: data.length,
      sentSha256: crypto.createHash('sha256').update(data).digest('hex'),
      head,
      bodyBytes: body.length,
      bodySha256: crypto.createHash('sha256').update(body).digest('hex'),
      receivedAfterOwnFin: sentEnd > 0,
    });
    process.exit(0);
  });
} else if (mode === 'rst') {
  const [host, port] = args;
  const s = net.connect({ host, port: Number(port) });
  let got = 0;
  s.on('connect', () => s.write('go'));
  s.on('data', (d) => { got += d.length; });
  s.on('error', (e) => { out({ outcome: 'error', code: e.code || e.message, got, ms: Date.now() - t0 }); process.exit(0); });
  s.on('end', () => { out({ outcome: 'end', got, ms: Date.now() - t0 }); process.exit(0); });
  setTimeout(() => { out({ outcome: 'timeout', got }); process.exit(0); }, 20000);
} else if (mode === 'tcp') {
  // One connect: ok / error code, and how long it took.
  const [host, port, timeoutStr] = args;
  const s = net.connect({ host, port: Number(port) });
  const timer = setTimeout(() => { out({ ok: false, code: 'TIMEOUT', ms: Date.now() - t0 }); process.exit(0); }, Number(timeoutStr || 10000));
  s.on('connect', () => { clearTimeout(timer); out({ ok: true, ms: Date.now() - t0 }); s.destroy(); process.exit(0); });
  s.on('error', (e) => { clearTimeout(timer); out({ ok: false, code: e.code || e.message, ms: Date.now() - t0 }); process.exit(0); });
} else if (mode === 'flood') {
  // N connections to a port nobody answers: the ones the router refuses fail with ECONNREFUSED,
  // the rest stay in SYN-SENT. Prints once REFUSED_TARGET were refused (or at the deadline), then
  // holds the pending ones until stdin closes.
  const [host, port, nStr, target, deadlineStr] = args;
  const n = Number(nStr);
  const counts = { refused: 0, connected: 0, otherErrors: {} };
  let printed = false;
  const print = (why) => {
    if (printed) return;
    printed = true;
    const pending = n - counts.refused - counts.connected - Object.values(counts.otherErrors).reduce((a, b) => a + b, 0);
    out({ why, n, ...counts, pending, ms: Date.now() - t0 });
    holdUntilStdinCloses();
  };
  setTimeout(() => print('deadline'), Number(deadlineStr || 10000));
  const keep = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect({ host, port: Number(port) });
    keep.push(s);
    s.on('connect', () => { counts.connected++; });
    s.on('error', (e) => {
      if (e.code === 'ECONNREFUSED') counts.refused++;
      else counts.otherErrors[e.code || e.message] = (counts.otherErrors[e.code || e.message] || 0) + 1;
      if (counts.refused >= Number(target)) print('target');
    });
  }
} else if (mode === 'udpflood') {
  // N sockets (N source ports, so N flows) each send one datagram to an echo server; counts
  // which got their echo. Prints once EXPECT echoes came and GRACE ms passed without more, or at
  // the deadline. Then holds the sockets (flows stay alive) until stdin closes.
  const [host, port, nStr, expectStr, graceStr, deadlineStr] = args;
  const n = Number(nStr);
  const fam = net.isIPv6(host) ? 'udp6' : 'udp4';
  let replies = 0;
  let printed = false;
  let graceTimer = null;
  const print = (why) => {
    if (printed) return;
    printed = true;
    out({ why, n, replies, ms: Date.now() - t0 });
    holdUntilStdinCloses();
  };
  setTimeout(() => print('deadline'), Number(deadlineStr || 10000));
  for (let i = 0; i < n; i++) {
    const s = dgram.createSocket(fam);
    let got = false;
    s.on('message', () => {
      if (got) return;
      got = true;
      replies++;
      if (replies >= Number(expectStr)) {
        if (graceTimer) clearTimeout(graceTimer);
        graceTimer = setTimeout(() => print('settled'), Number(graceStr || 1000));
      }
    });
    s.send('ping ' + i, Number(port), host);
  }
} else if (mode === 'udp') {
  // One datagram to an echo server; waits for the echo up to TIMEOUT ms.
  const [host, port, timeoutStr] = args;
  const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  const timer = setTimeout(() => { out({ ok: false, code: 'TIMEOUT', ms: Date.now() - t0 }); process.exit(0); }, Number(timeoutStr || 3000));
  s.on('message', (m) => { clearTimeout(timer); out({ ok: true, echo: m.toString(), ms: Date.now() - t0 }); process.exit(0); });
  s.on('error', (e) => { clearTimeout(timer); out({ ok: false, code: e.code || e.message, ms: Date.now() - t0 }); process.exit(0); });
  s.send('hello-udp', Number(port), host);
} else if (mode === 'dns') {
  // The namespace's own resolver configuration (/etc/resolv.conf, i.e. /etc/netns/NS/resolv.conf).
  const [name, type, server, tcp] = args;
  const r = new dns.promises.Resolver({ timeout: 2000, tries: 2 });
  if (server) r.setServers([server]);
  const servers = r.getServers();
  const go = type === 'AAAA' ? r.resolve6(name) : r.resolve4(name);
  void tcp;
  go.then((addresses) => out({ ok: true, addresses, servers }), (e) => out({ ok: false, code: e.code, servers }));
} else {
  out({ error: 'unknown mode ' + mode });
  process.exit(2);
}
`;

export interface ProgramPaths {
  upstreamServer: string;
  vmClient: string;
  udhcpcScript: string;
}

/**
 * udhcpc's event script: applies what the lease says (address, router, MTU) and prints one line
 * `UDHCPC {json}` per event on udhcpc's stdout. DNS is left to the test (it writes the
 * namespace's resolv.conf from the printed `dns`).
 */
export const UDHCPC_SCRIPT = String.raw`#!/bin/sh
ev="$1"
case "$ev" in
  deconfig)
    ip link set "$interface" up
    ip -4 addr flush dev "$interface"
    ;;
  bound|renew)
    if [ -n "$mtu" ]; then ip link set dev "$interface" mtu "$mtu"; fi
    cur=$(ip -4 -o addr show dev "$interface" | awk '{print $4}')
    if [ "$cur" != "$ip/$mask" ]; then ip -4 addr flush dev "$interface"; fi
    ip addr replace "$ip/$mask" dev "$interface"
    if [ -n "$router" ]; then set -- $router; ip route replace default via "$1" dev "$interface"; fi
    ;;
esac
msg=$(printf '%s' "$message" | tr -d '"\')
printf 'UDHCPC {"event":"%s","interface":"%s","ip":"%s","mask":"%s","router":"%s","dns":"%s","mtu":"%s","domain":"%s","lease":"%s","serverid":"%s","subnet":"%s","message":"%s"}\n' \
  "$ev" "$interface" "$ip" "$mask" "$router" "$dns" "$mtu" "$domain" "$lease" "$serverid" "$subnet" "$msg"
exit 0
`;

/** Writes the programs into `dir` and returns their paths. */
export function writePrograms(dir: string): ProgramPaths {
  const p: ProgramPaths = {
    upstreamServer: join(dir, 'upstream-server.cjs'),
    vmClient: join(dir, 'vm-client.cjs'),
    udhcpcScript: join(dir, 'udhcpc-script.sh'),
  };
  writeFileSync(p.upstreamServer, UPSTREAM_SERVER_JS);
  writeFileSync(p.vmClient, VM_CLIENT_JS);
  writeFileSync(p.udhcpcScript, UDHCPC_SCRIPT, { mode: 0o755 });
  return p;
}
