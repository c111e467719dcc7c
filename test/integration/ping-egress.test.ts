/**
 * PingEgress over real unprivileged ICMP sockets. Each scenario runs as a child `node` process
 * inside a namespace this file creates (`mvpg-<random>`), importing the built
 * dist/daemon/egress/ping.js, and prints its findings as JSON:
 *
 * - with net.ipv4.ping_group_range "0 2147483647": echoes to 127.0.0.1, ::1 and a veth peer
 *   (IPv4 and IPv6) in a second namespace come back with the data sent (small and large), two
 *   echoes with the same (dst, seq) in flight at once each get their own reply, the in-flight
 *   table stops at maxInFlight (further echoes are refused and counted) and drains by expiry,
 *   and the process exits by itself after close();
 * - with "1 0": openPing throws EACCES, both families are unavailable, echo() returns false.
 *
 * Nothing is sent outside 127.0.0.0/8, ::1 and the namespaces created here.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, makeTempDir, randomSuffix, registerCleanup, run } from '../support/netns.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PING_JS = join(ROOT, 'dist', 'daemon', 'egress', 'ping.js');
const NATIVE_JS = join(ROOT, 'dist', 'plugins', 'native', 'index.js');

// Peer addresses inside the test's own namespaces (TEST-NET-1 and a ULA prefix).
const A4 = '192.0.2.1';
const B4 = '192.0.2.2';
const NOBODY4 = '192.0.2.3'; // on the veth subnet, owned by nobody: echoes to it go unanswered
const A6 = 'fd00:6d76:7067::1';
const B6 = 'fd00:6d76:7067::2';

interface Target {
  name: string;
  v: 4 | 6;
  /** IPv4 as a number, IPv6 as 32 hex digits. */
  addr: number | string;
  dataLen: number;
}

function v4(text: string): number {
  return text.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

/** Expands an IPv6 address with at most one '::' to 32 hex digits. */
function v6hex(text: string): string {
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => g.padStart(4, '0')).join('');
}

const CHILD = `
import { PingEgress } from ${JSON.stringify(pathToFileURL(PING_JS).href)};
import { native } from ${JSON.stringify(pathToFileURL(NATIVE_JS).href)};

const [mode, arg] = process.argv.slice(2);
const out = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const addrOf = (t) => (t.v === 4 ? { v: 4, n: t.addr } : { v: 6, b: Buffer.from(t.addr, 'hex') });
const payload = (tag, len) => {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + tag.length) & 0xff;
  b.write(tag.slice(0, len), 0);
  return b;
};

function echo(eg, t, id, seq, data) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, why: 'no reply' }), 5000);
    let calls = 0;
    const sent = eg.echo(addrOf(t), id, seq, data, (reply) => {
      calls++;
      clearTimeout(timer);
      // The reply is a view into a reused buffer: compare it now.
      resolve({ ok: true, calls, same: reply.equals(data), len: reply.length });
    });
    if (!sent) {
      clearTimeout(timer);
      resolve({ ok: false, why: 'not sent', stats: eg.stats() });
    }
  });
}

if (mode === 'allowed') {
  const { targets, nobody } = JSON.parse(arg);
  // The first echo to the veth peer waits for neighbour discovery (about a second for IPv6).
  const eg = new PingEgress({ timeoutMs: 5000 });
  out.available = { v4: eg.available(4), v6: eg.available(6) };
  out.echoes = {};
  let seq = 1;
  for (const t of targets) {
    out.echoes[t.name] = await echo(eg, t, 0x4d56, seq++, payload(t.name, t.dataLen));
  }
  // The same (dst, seq) twice at once: the second goes out with another sequence number.
  const lo = targets.find((t) => t.name === 'lo4');
  const [a, b] = await Promise.all([
    echo(eg, lo, 1, 77, payload('first', 64)),
    echo(eg, lo, 2, 77, payload('second', 80)),
  ]);
  out.sameSeq = { a, b };
  // A throwing onReply is contained and counted; the next echo still works.
  out.throwing = eg.echo(addrOf(lo), 3, 5, payload('boom', 8), () => {
    throw new Error('boom');
  });
  out.afterThrow = await echo(eg, lo, 3, 6, payload('after', 8));
  out.afterReplies = eg.stats();
  // Unanswered echoes fill a small table to maxInFlight; the next ones are refused. A second
  // egress has sockets (idents) of its own.
  const small = new PingEgress({ timeoutMs: 300, maxInFlight: 4 });
  const quiet = { name: 'nobody', v: 4, addr: nobody, dataLen: 16 };
  const accepted = [];
  for (let i = 0; i < 6; i++) accepted.push(small.echo(addrOf(quiet), 9, 100 + i, payload('q', 16), () => {}));
  out.bounded = { accepted, inFlight: small.inFlight(), stats: small.stats() };
  await sleep(900);
  out.expired = { inFlight: small.inFlight(), stats: small.stats() };
  // Still working afterwards.
  out.again = await echo(small, lo, 0x4d56, 1000, payload('again', 32));
  out.final = eg.stats();
  eg.close();
  small.close();
  out.afterClose = { sent: eg.echo(addrOf(lo), 1, 1, Buffer.alloc(8), () => {}), available: eg.available(4) };
} else {
  const eg = new PingEgress({ timeoutMs: 300 });
  out.available = { v4: eg.available(4), v6: eg.available(6) };
  out.reason = eg.unavailableReason(4);
  out.sent = eg.echo({ v: 4, n: 0x7f000001 }, 1, 1, Buffer.alloc(8), () => {});
  out.sent6 = eg.echo({ v: 6, b: Buffer.from('00000000000000000000000000000001', 'hex') }, 1, 1, Buffer.alloc(8), () => {});
  out.stats = eg.stats();
  try {
    native.openPing({ v6: false });
    out.openPing = 'opened';
  } catch (e) {
    out.openPing = e.code;
  }
  eg.close();
}
// No process.exit(): the process must end by itself once the egress is closed.
process.stdout.write(JSON.stringify(out) + '\\n');
`;

const namespaces: string[] = [];

async function netns(): Promise<string> {
  const name = `mvpg-${randomSuffix(8)}`;
  await run(['ip', 'netns', 'add', name]);
  namespaces.push(name);
  registerCleanup(
    `netns ${name}`,
    async () => {
      await run(['ip', 'netns', 'del', name], { check: false });
    },
    () => {
      // Synchronous fallback when the test process dies first (also ends the child in it).
      const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8', timeout: 10_000 }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone
        }
      }
      spawnSync('ip', ['netns', 'del', name], { timeout: 10_000 });
    },
  );
  await run(['ip', 'link', 'set', 'lo', 'up'], { netns: name });
  return name;
}

let allowedNs = '';
let deniedNs = '';
let script = '';

beforeAll(async () => {
  if (!existsSync(PING_JS)) await run([join(ROOT, 'node_modules', '.bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, timeoutMs: 120_000 });
  script = join(makeTempDir('mvpg'), 'ping-child.mjs');
  writeFileSync(script, CHILD);

  allowedNs = await netns();
  const peerNs = await netns();
  deniedNs = await netns();
  await run(['sysctl', '-w', 'net.ipv4.ping_group_range=0 2147483647'], { netns: allowedNs });
  await run(['sysctl', '-w', 'net.ipv4.ping_group_range=1 0'], { netns: deniedNs });

  await run(['ip', 'link', 'add', 'mvpga', 'type', 'veth', 'peer', 'name', 'mvpgb', 'netns', peerNs], { netns: allowedNs });
  for (const [ns, dev, a4, a6] of [
    [allowedNs, 'mvpga', A4, A6],
    [peerNs, 'mvpgb', B4, B6],
  ] as const) {
    await run(['ip', 'addr', 'add', `${a4}/24`, 'dev', dev], { netns: ns });
    await run(['ip', 'addr', 'add', `${a6}/64`, 'dev', dev, 'nodad'], { netns: ns });
    await run(['ip', 'link', 'set', dev, 'up'], { netns: ns });
  }
  // An unanswered neighbour lookup gives up quickly.
  await run(['sysctl', '-w', 'net.ipv4.neigh.mvpga.mcast_solicit=1', 'net.ipv4.neigh.mvpga.retrans_time_ms=100'], { netns: allowedNs });
});

afterAll(async () => {
  await cleanupAll();
  // Belt and braces: nothing named mvpg-* from this file survives.
  for (const ns of namespaces) await run(['ip', 'netns', 'del', ns], { check: false });
});

async function child(ns: string, mode: 'allowed' | 'denied', arg: unknown): Promise<Record<string, unknown>> {
  const r = await run([process.execPath, script, mode, JSON.stringify(arg)], { netns: ns, timeoutMs: 30_000, check: false });
  if (r.code !== 0) throw new Error(`ping child (${mode}) exited ${r.code}:\n${r.stderr}${r.stdout}`);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as Record<string, unknown>;
}

describe('ping egress through unprivileged ICMP sockets', () => {
  it('echoes to loopback and a veth peer come back with their data; the table is bounded', async () => {
    const targets: Target[] = [
      { name: 'lo4', v: 4, addr: v4('127.0.0.1'), dataLen: 56 },
      { name: 'lo4-big', v: 4, addr: v4('127.0.0.1'), dataLen: 8000 },
      { name: 'lo6', v: 6, addr: v6hex('::1'), dataLen: 56 },
      { name: 'lo6-big', v: 6, addr: v6hex('::1'), dataLen: 8000 },
      { name: 'peer4', v: 4, addr: v4(B4), dataLen: 1400 },
      { name: 'peer6', v: 6, addr: v6hex(B6), dataLen: 1400 },
      { name: 'empty4', v: 4, addr: v4('127.0.0.1'), dataLen: 0 },
    ];
    const out = (await child(allowedNs, 'allowed', { targets, nobody: v4(NOBODY4) })) as {
      available: { v4: boolean; v6: boolean };
      echoes: Record<string, { ok: boolean; calls?: number; same?: boolean; len?: number; why?: string }>;
      throwing: boolean;
      afterThrow: { ok: boolean; same: boolean };
      sameSeq: { a: { ok: boolean; same: boolean; len: number }; b: { ok: boolean; same: boolean; len: number } };
      afterReplies: { inFlight: number; sent: number; replies: number; v4?: { ident: number }; v6?: { ident: number } };
      bounded: { accepted: boolean[]; inFlight: number; stats: { dropFull: number } };
      expired: { inFlight: number; stats: { expired: number } };
      again: { ok: boolean; same: boolean };
      final: { callbackErrors: number; v4?: { callbackErrors: number }; v6?: { callbackErrors: number } };
      afterClose: { sent: boolean; available: boolean };
    };
    expect(out.available).toEqual({ v4: true, v6: true });
    for (const t of targets) {
      const e = out.echoes[t.name]!;
      expect(e, t.name).toMatchObject({ ok: true, calls: 1, same: true, len: t.dataLen });
    }
    expect(out.sameSeq.a).toMatchObject({ ok: true, same: true, len: 64 });
    expect(out.sameSeq.b).toMatchObject({ ok: true, same: true, len: 80 });
    expect(out.throwing).toBe(true);
    expect(out.afterThrow).toMatchObject({ ok: true, same: true });
    expect(out.afterReplies.inFlight).toBe(0);
    expect(out.afterReplies.sent).toBe(targets.length + 4);
    expect(out.afterReplies.replies).toBe(targets.length + 4);
    expect(out.afterReplies.v4?.ident).toBeGreaterThan(0);
    expect(out.afterReplies.v6?.ident).toBeGreaterThan(0);

    expect(out.bounded.accepted).toEqual([true, true, true, true, false, false]);
    expect(out.bounded.inFlight).toBe(4);
    expect(out.bounded.stats.dropFull).toBe(2);
    expect(out.expired.inFlight).toBe(0);
    expect(out.expired.stats.expired).toBe(4);

    expect(out.again).toMatchObject({ ok: true, same: true });
    expect(out.final.callbackErrors).toBe(1);
    expect(out.final.v4?.callbackErrors).toBe(0);
    expect(out.afterClose).toEqual({ sent: false, available: false });
  });

  it('reports unavailable and refuses echoes where ping_group_range excludes the group', async () => {
    const out = (await child(deniedNs, 'denied', null)) as {
      available: { v4: boolean; v6: boolean };
      reason: string;
      sent: boolean;
      sent6: boolean;
      stats: { dropUnavailable: number; sent: number; inFlight: number };
      openPing: string;
    };
    expect(out.available).toEqual({ v4: false, v6: false });
    expect(out.reason).toMatch(/^EACCES/);
    expect(out.sent).toBe(false);
    expect(out.sent6).toBe(false);
    expect(out.stats).toMatchObject({ dropUnavailable: 2, sent: 0, inFlight: 0 });
    expect(out.openPing).toBe('EACCES');
  });
});
