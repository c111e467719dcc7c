/**
 * TorManager's readiness and event plumbing in external mode, against a fake control port that
 * plays a tor which finishes bootstrapping (a real tor cannot, offline: see
 * test/integration/tor-manager.test.ts for the real thing).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CircEvent, HsDescEvent, StreamEvent } from '../../daemon/tor/control.js';
import type { TorManagerLike } from '../../daemon/tor/manager-like.js';
import { checkTorConfig, TorManager, type TorState } from '../../daemon/tor/manager.js';
import { untilTorState } from '../support/tor-state.js';

const logger = pino({ level: 'silent' });
const ONION = '2ab7rhua3gtz7u6az75w72qenzn4lyysyc7d6ayn7apeh6agenyoypqd';

interface FakeTor {
  path: string;
  sockets: Socket[];
  received: string[];
  /** Writes to every connected client. */
  send(bytes: string): void;
  close(): Promise<void>;
}

let dir: string;
let fake: FakeTor | undefined;
let manager: TorManager | undefined;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tor-mgr-'));
});

afterEach(async () => {
  await manager?.stop();
  await fake?.close();
  manager = undefined;
  fake = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/** A NULL-auth control port at `progress` % bootstrap, network-liveness `liveness`. */
async function fakeTor(opts: { progress: number; liveness?: 'up' | 'down'; beforeInfo?: string }): Promise<FakeTor> {
  const sockets: Socket[] = [];
  const received: string[] = [];
  const path = join(dir, 'control.sock');
  const server: Server = createServer((sock) => {
    sockets.push(sock);
    sock.on('error', () => undefined);
    let buf = '';
    sock.on('data', (b: Buffer) => {
      buf += b.toString('latin1');
      let i: number;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        received.push(line);
        if (line === 'PROTOCOLINFO 1') sock.write('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n');
        else if (line === 'GETINFO version status/bootstrap-phase') {
          // Events tor sends before it answers (a tor whose bootstrap moves on meanwhile).
          if (opts.beforeInfo !== undefined) sock.write(opts.beforeInfo);
          sock.write(`250-version=0.4.9.11\r\n250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=${opts.progress} TAG=x SUMMARY="At ${opts.progress}"\r\n250 OK\r\n`);
        } else if (line === 'GETINFO network-liveness') {
          sock.write(opts.liveness ? `250-network-liveness=${opts.liveness}\r\n250 OK\r\n` : '552 Unrecognized key "network-liveness"\r\n');
        } else if (line.startsWith('ADD_ONION ')) sock.write(`250-ServiceID=${ONION}\r\n250 OK\r\n`);
        else sock.write('250 OK\r\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    sockets,
    received,
    send: (bytes) => sockets.forEach((s) => s.write(bytes)),
    close: () =>
      new Promise<void>((r) => {
        sockets.forEach((s) => s.destroy());
        server.close(() => r());
      }),
  };
}

function external(path: string): TorManager {
  manager = new TorManager({
    config: checkTorConfig({ mode: 'external', control: `unix:${path}`, socks: '127.0.0.1:9050' }),
    stateDir: dir,
    logger,
    backoffInitialMs: 50,
  });
  return manager;
}

function until(m: TorManager, pred: (s: TorState) => boolean, what: string): Promise<TorState> {
  return untilTorState(m, pred, 5_000, what);
}

describe('TorManager readiness (external mode, fake control port)', () => {
  it('is ready when bootstrap reached 100% while the control connection was set up (the GETINFO answer is older)', async () => {
    fake = await fakeTor({ progress: 75, liveness: 'up', beforeInfo: '650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"\r\n' });
    const m = external(fake.path);
    await m.start();
    expect(m.state()).toMatchObject({ phase: 'ready', progress: 100, summary: 'Done' });
  });

  it("keeps tor's warnings (bounded, de-duplicated, most recent last) and the bootstrap problem; emits 'warning' once per new text", async () => {
    fake = await fakeTor({ progress: 5, liveness: 'up' });
    const m = external(fake.path);
    const warned: string[] = [];
    m.on('warning', (w) => warned.push(w));
    await m.start();
    const problem = (n: number): string => `650 STATUS_CLIENT WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=${n} RECOMMENDATION=ignore HOSTID="$AAAA" HOSTADDR="203.0.113.${n}:9001"\r\n`;
    fake.send(problem(1) + problem(2));
    fake.send('650 STATUS_GENERAL WARN CLOCK_SKEW SKEW=-3600 SOURCE=CONSENSUS\r\n');
    for (let i = 0; i < 10; i++) fake.send(`650 WARN warning number ${i}\r\n`);
    const s = await until(m, (x) => x.warnings.includes('warning number 9'), 'the last warning');
    expect(s.bootstrapProblem).toEqual({ progress: 5, summary: 'Connecting to a relay', warning: 'Connection refused', reason: 'CONNECTREFUSED', count: 2 });
    expect(s.warnings).toHaveLength(8);
    expect(s.warnings.at(-1)).toBe('warning number 9');
    expect(warned[0]).toBe('bootstrap stuck at 5% (Connecting to a relay): Connection refused [CONNECTREFUSED]');
    expect(warned.filter((w) => w.startsWith('bootstrap stuck'))).toHaveLength(1);
    expect(warned).toContain('CLOCK_SKEW SKEW=-3600 SOURCE=CONSENSUS');
    // Bootstrap moving on clears the problem.
    fake.send('650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"\r\n');
    const r = await until(m, (x) => x.phase === 'ready', 'ready');
    expect(r.bootstrapProblem).toBeNull();
    // The --json contract: every key there, unset ones null.
    expect(Object.keys(r).sort()).toEqual(['bootstrapProblem', 'lastError', 'mode', 'phase', 'pid', 'privileges', 'progress', 'restarts', 'summary', 'version', 'warnings']);
    expect(Object.values(r).every((v) => v !== undefined)).toBe(true);
  });

  it('follows bootstrap events to ready, once, and subscribes to the events it needs', async () => {
    fake = await fakeTor({ progress: 85, liveness: 'up' });
    const m = external(fake.path);
    const emitted: string[] = [];
    const progress: number[] = [];
    m.on('ready', () => emitted.push('ready'));
    m.on('down', () => emitted.push('down'));
    m.on('bootstrap', (p) => progress.push(p));
    await m.start();
    expect(m.state()).toMatchObject({ mode: 'external', phase: 'bootstrapping', progress: 85, summary: 'At 85', version: '0.4.9.11', restarts: 0 });
    expect(fake.received).toContain('SETEVENTS STATUS_CLIENT STATUS_GENERAL CIRC STREAM HS_DESC WARN ERR NETWORK_LIVENESS');
    expect(m.isReady()).toBe(false);

    fake.send('650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=90 TAG=ap_handshake_done SUMMARY="Handshake finished with a relay to build circuits"\r\n');
    fake.send('650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"\r\n');
    await until(m, (s) => s.phase === 'ready', 'ready');
    expect(m.state()).toMatchObject({ progress: 100, summary: 'Done' });
    expect(m.isReady()).toBe(true);
    expect(progress).toEqual([90, 100]);

    // Liveness down takes readiness away without tor being down; up gives it back.
    fake.send('650 NETWORK_LIVENESS DOWN\r\n');
    await until(m, (s) => s.phase === 'bootstrapping', 'not ready');
    fake.send('650 NETWORK_LIVENESS UP\r\n');
    await until(m, (s) => s.phase === 'ready', 'ready again');
    expect(emitted).toEqual(['ready', 'ready']);
  });

  it('a tor that is already bootstrapped is ready at once; without network-liveness, bootstrap alone decides', async () => {
    fake = await fakeTor({ progress: 100 });
    const m = external(fake.path);
    await m.start();
    expect(m.state().phase).toBe('ready');
    // TorService takes the manager through this interface.
    const like: TorManagerLike = m;
    expect(like.socks()).toEqual({ host: '127.0.0.1', port: 9050 });
  });

  it('network-liveness down holds readiness back at 100 %', async () => {
    fake = await fakeTor({ progress: 100, liveness: 'down' });
    const m = external(fake.path);
    await m.start();
    expect(m.state()).toMatchObject({ phase: 'bootstrapping', progress: 100 });
  });

  it('a bootstrap problem becomes lastError', async () => {
    fake = await fakeTor({ progress: 5 });
    const m = external(fake.path);
    await m.start();
    fake.send('650 STATUS_CLIENT WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=3 RECOMMENDATION=ignore\r\n');
    const s = await until(m, (x) => x.lastError !== null, 'lastError');
    expect(s.lastError).toBe('bootstrap problem at 5%: Connection refused (CONNECTREFUSED)');
  });

  it('re-emits CIRC, STREAM and HS_DESC as typed events', async () => {
    fake = await fakeTor({ progress: 100, liveness: 'up' });
    const m = external(fake.path);
    await m.start();
    const circ = new Promise<CircEvent>((r) => m.once('circ', r));
    const stream = new Promise<StreamEvent>((r) => m.once('stream', r));
    const hs = new Promise<HsDescEvent>((r) => m.once('hs_desc', r));
    fake.send(`650 CIRC 5 BUILT $${'A'.repeat(40)}~one PURPOSE=GENERAL SOCKS_USERNAME="vm-a"\r\n`);
    fake.send('650 STREAM 9 SUCCEEDED 5 example.org:80 SOCKS_USERNAME="vm-a"\r\n');
    fake.send(`650 HS_DESC UPLOADED ${ONION} UNKNOWN $${'B'.repeat(40)}~dir\r\n`);
    expect(await circ).toMatchObject({ id: '5', status: 'BUILT', socksUsername: 'vm-a' });
    expect(await stream).toMatchObject({ id: '9', circId: '5', targetHost: 'example.org', targetPort: 80, socksUsername: 'vm-a' });
    expect(await hs).toMatchObject({ action: 'UPLOADED', address: ONION });
  });

  it('a dropped control connection is down, then reconnected with backoff; managed onions are re-added', async () => {
    fake = await fakeTor({ progress: 100, liveness: 'up' });
    const m = external(fake.path);
    await m.start();
    const id = await m.addOnion({ key: `ED25519-V3:${Buffer.alloc(64, 7).toString('base64')}`, ports: [{ virt: 80, target: '127.0.0.1:8080' }] });
    expect(id).toBe(ONION);
    const down = new Promise<string>((r) => m.once('down', r));
    fake.sockets.forEach((s) => s.destroy());
    expect(await down).toMatch(/control connection lost/);
    expect(m.control()).toBeNull();
    expect(m.isReady()).toBe(false);
    const s = await until(m, (x) => x.phase === 'ready' && x.restarts === 1, 'reconnected');
    expect(s.progress).toBe(100);
    expect(fake.received.filter((l) => l.startsWith('ADD_ONION ED25519-V3:'))).toHaveLength(2);
    expect(fake.received.filter((l) => l.startsWith('ADD_ONION')).every((l) => l.includes('Flags=Detach'))).toBe(true);
  });

  it('an unreachable control port is down with the reason, and stop() ends the retries', async () => {
    const m = external(join(dir, 'nothing-here.sock'));
    await m.start();
    expect(m.state().phase).toBe('down');
    expect(m.state().lastError).toMatch(/cannot connect to tor's control port unix:.*ENOENT/);
    await m.stop();
    expect(m.state().phase).toBe('down');
  });
});
