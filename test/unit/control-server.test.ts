/**
 * The control server against hostile and slow clients, over a real unix socket: one client
 * cannot stall the others (a queue per client, capped lines, pending requests and output; a
 * half-sent line times out), changes are applied one at a time across clients, and 200 clients
 * at once are all answered.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlServer, type ControlLimits } from '../../daemon/control/server.js';
import { TakeOver, type MethodTable } from '../../daemon/control/rpc.js';

/** The server's log lines, so a test can await what it did to a client that does not read. */
const logged: { msg: string }[] = [];
const logWaiters: { re: RegExp; resolve: () => void }[] = [];
const log = pino(
  { level: 'warn' },
  {
    write(s: string): void {
      const l = JSON.parse(s) as { msg: string };
      logged.push(l);
      for (const w of logWaiters.filter((x) => x.re.test(l.msg))) w.resolve();
    },
  },
);
function logLine(re: RegExp): Promise<void> {
  if (logged.some((l) => re.test(l.msg))) return Promise.resolve();
  return new Promise((resolve) => logWaiters.push({ re, resolve }));
}
const servers: ControlServer[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  logged.length = 0;
  logWaiters.length = 0;
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await s.close();
});

interface Reply {
  id: number | string | null;
  result?: unknown;
  error?: { code: number; message: string };
}

/** A client that reads its answers line by line. */
class Client {
  readonly sock: net.Socket;
  private buf = '';
  private readonly lines: Reply[] = [];
  private waiters: ((r: Reply) => void)[] = [];
  readonly closed: Promise<void>;

  constructor(socket: string) {
    this.sock = net.createConnection({ path: socket });
    sockets.push(this.sock);
    this.sock.on('error', () => {});
    this.sock.setEncoding('utf8');
    this.sock.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const r = JSON.parse(this.buf.slice(0, nl)) as Reply;
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiters.shift();
        if (w !== undefined) w(r);
        else this.lines.push(r);
      }
    });
    this.closed = new Promise((resolve) => this.sock.once('close', () => resolve()));
  }

  send(method: string, id: number | string = 1, params: unknown = {}): void {
    this.sock.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
  }

  next(): Promise<Reply> {
    const r = this.lines.shift();
    if (r !== undefined) return Promise.resolve(r);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async call(method: string, id: number | string = 1, params: unknown = {}): Promise<Reply> {
    this.send(method, id, params);
    return this.next();
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

async function serve(methods: MethodTable, limits: Partial<ControlLimits> = {}, readOnly: string[] = ['status']): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-ctl-'));
  const socket = path.join(dir, 'c.sock');
  const s = new ControlServer({ socket, log, methods, limits, readOnly: new Set(readOnly) });
  await s.listen();
  servers.push(s);
  return socket;
}

const BIG = 'x'.repeat(64 * 1024);
const basic: MethodTable = {
  status: async () => ({ ok: true }),
  echo: async (p) => p,
  big: async () => BIG,
  // About a millisecond of work: 10k of them in one queue take seconds.
  work: () => new Promise((r) => setTimeout(() => r('done'), 1)),
};

describe('control server', () => {
  it('answers 200 clients at once', async () => {
    const socket = await serve(basic);
    const clients = Array.from({ length: 200 }, () => new Client(socket));
    const replies = await Promise.all(clients.map((c, i) => c.call('status', i)));
    expect(replies.map((r) => r.id)).toEqual(clients.map((_, i) => i));
    expect(replies.every((r) => (r.result as { ok: boolean }).ok)).toBe(true);
  });

  it("answers one client's requests in order, even when the first is slow", async () => {
    const gate = deferred();
    const socket = await serve({ ...basic, slow: async () => (await gate.promise, 'slow') });
    const c = new Client(socket);
    c.send('slow', 1);
    c.send('echo', 2, { x: 1 });
    const first = c.next();
    setTimeout(gate.resolve, 20);
    expect((await first).id).toBe(1);
    expect(await c.next()).toMatchObject({ id: 2, result: { x: 1 } });
  });

  it('applies changes one at a time across clients; reads do not wait for them', async () => {
    const gate = deferred();
    const events: string[] = [];
    const socket = await serve({
      ...basic,
      changeA: async () => {
        events.push('A start');
        await gate.promise;
        events.push('A end');
      },
      changeB: async () => {
        events.push('B start');
        events.push('B end');
      },
    });
    const a = new Client(socket);
    const b = new Client(socket);
    const c = new Client(socket);
    const ra = a.call('changeA');
    await new Promise<void>((r) => {
      const t = setInterval(() => events.length > 0 && (clearInterval(t), r()));
    });
    const rb = b.call('changeB');
    // A read is answered while A's change holds the lock and B's waits for it.
    expect(await c.call('status')).toMatchObject({ result: { ok: true } });
    expect(events).toEqual(['A start']);
    gate.resolve();
    await Promise.all([ra, rb]);
    expect(events).toEqual(['A start', 'A end', 'B start', 'B end']);
  });

  it('cuts off a client that sends more than 1 MiB without a newline; others are answered meanwhile', async () => {
    const socket = await serve(basic);
    const hostile = new Client(socket);
    const other = new Client(socket);
    // Half a megabyte of an unfinished line: the server holds it, and still answers others.
    hostile.sock.write('{"jsonrpc":"2.0","id":1,"method":"echo","params":"' + 'a'.repeat(512 * 1024));
    expect(await other.call('status', 7)).toMatchObject({ id: 7, result: { ok: true } });
    hostile.sock.write('a'.repeat(600 * 1024));
    const r = await hostile.next();
    expect(r.error?.message).toMatch(/too long/);
    await hostile.closed;
    expect(await other.call('status', 8)).toMatchObject({ id: 8, result: { ok: true } });
  });

  it('closes a client that leaves a line unfinished past the timeout, even one that keeps dribbling', async () => {
    const socket = await serve(basic, { lineTimeoutMs: 300 });
    const stalled = new Client(socket);
    stalled.sock.write('{"jsonrpc":"2.0","id":1,');
    const dribbler = new Client(socket);
    let dribbling = true;
    const t = setInterval(() => dribbler.sock.write(' '), 50);
    const stopped = new Promise<void>((r) =>
      setTimeout(() => {
        dribbling = false;
        r();
      }, 5000),
    );
    // Meanwhile, complete lines from others are answered.
    expect(await new Client(socket).call('status')).toMatchObject({ result: { ok: true } });
    await stalled.closed;
    await Promise.race([dribbler.closed, stopped]);
    clearInterval(t);
    expect(dribbling).toBe(true);
    // A line that is finished in time is answered.
    const ok = new Client(socket);
    ok.sock.write('{"jsonrpc":"2.0",');
    setTimeout(() => ok.sock.write('"id":3,"method":"status"}\n'), 100);
    expect(await ok.next()).toMatchObject({ id: 3, result: { ok: true } });
  });

  it("a client that pipelines 10k requests and never reads does not stall another client's request", async () => {
    const socket = await serve(basic);
    const hostile = net.createConnection({ path: socket });
    sockets.push(hostile);
    hostile.on('error', () => {});
    // Never reads: paused, so its receive buffer fills.
    hostile.pause();
    const closed = new Promise<void>((r) => hostile.once('close', () => r()));
    await new Promise<void>((r) => hostile.once('connect', () => r()));
    const lines = Array.from({ length: 10_000 }, (_, i) => JSON.stringify({ jsonrpc: '2.0', id: i, method: 'work' }) + '\n').join('');
    hostile.write(lines);
    const other = new Client(socket);
    const t0 = Date.now();
    expect(await other.call('work', 'mine')).toMatchObject({ id: 'mine', result: 'done' });
    // Behind 10k requests of a millisecond each it would take seconds.
    expect(Date.now() - t0).toBeLessThan(1000);
    await closed;
  });

  it('drops a client that does not read its answers once its output is over the cap', async () => {
    const socket = await serve(basic, { maxOutput: 256 * 1024 });
    const hostile = net.createConnection({ path: socket });
    sockets.push(hostile);
    hostile.on('error', () => {});
    hostile.pause();
    const closed = new Promise<void>((r) => hostile.once('close', () => r()));
    await new Promise<void>((r) => hostile.once('connect', () => r()));
    // Fewer than the pending cap, each answered with 64 KiB: the answers pile up unread.
    for (let i = 0; i < 60; i++) hostile.write(JSON.stringify({ jsonrpc: '2.0', id: i, method: 'big' }) + '\n');
    // A paused socket does not see its end: the server's log says when it dropped the client.
    await logLine(/does not read its answers/);
    expect(await new Client(socket).call('status')).toMatchObject({ result: { ok: true } });
    let got = '';
    hostile.setEncoding('utf8');
    hostile.on('data', (d: string) => (got += d));
    hostile.resume();
    await closed;
    expect(got.split('\n').length - 1).toBeLessThan(60);
  });

  it('refuses more pending requests than the cap with one error, then closes', async () => {
    const gate = deferred();
    const socket = await serve({ ...basic, slow: async () => (await gate.promise, 'slow') }, { maxPending: 4 });
    const c = new Client(socket);
    for (let i = 0; i < 6; i++) c.send('slow', i);
    const r = await c.next();
    expect(r.error?.message).toMatch(/more than 4 requests waiting/);
    await c.closed;
    gate.resolve();
  });

  it('refuses connections over maxClients with one error line, and takes new ones once others leave', async () => {
    const socket = await serve(basic, { maxClients: 2 });
    const a = new Client(socket);
    const b = new Client(socket);
    expect(await a.call('status')).toMatchObject({ result: { ok: true } });
    expect(await b.call('status')).toMatchObject({ result: { ok: true } });
    const c = new Client(socket);
    expect((await c.next()).error?.message).toMatch(/too many control connections/);
    await c.closed;
    a.sock.destroy();
    await a.closed;
    // The server sees a's end after the client does: retry until the slot is free.
    for (;;) {
      const d = new Client(socket);
      d.send('status');
      const r = await d.next();
      if (r.error === undefined) {
        expect(r).toMatchObject({ result: { ok: true } });
        break;
      }
      await d.closed;
    }
  });

  it('answers a client that sends its request and then EOF', async () => {
    const socket = await serve(basic);
    const c = new Client(socket);
    c.sock.end(JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'echo', params: { y: 2 } }));
    expect(await c.next()).toMatchObject({ id: 5, result: { y: 2 } });
    await c.closed;
  });

  it('a method may take its connection over after its reply; pipelined requests are dropped, the lock is free', async () => {
    const taken: net.Socket[] = [];
    const socket = await serve({
      ...basic,
      stream: async () =>
        new TakeOver({ streaming: true }, (sock, ended) => {
          taken.push(sock);
          expect(ended).toBe(false);
          sock.write('STREAM');
          sock.on('data', () => {});
          sock.on('end', () => sock.end('BYE'));
        }),
    });
    const raw = net.createConnection({ path: socket, allowHalfOpen: true });
    sockets.push(raw);
    let got = '';
    raw.setEncoding('utf8');
    raw.on('data', (d: string) => (got += d));
    const ended = new Promise<void>((r) => raw.on('end', () => r()));
    raw.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'stream' }) + '\n' + JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'echo', params: { x: 1 } }) + '\n');
    await new Promise<void>((r) => raw.on('data', () => got.includes('STREAM') && r()));
    // The stream holds no lock: another client's change goes through while it runs.
    const other = new Client(socket);
    expect(await other.call('work', 7)).toMatchObject({ id: 7, result: 'done' });
    raw.write('{"jsonrpc":"2.0","id":3,"method":"echo"}\n');
    raw.end();
    await ended;
    expect(got).toBe(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { streaming: true } }) + '\nSTREAMBYE');
    expect(taken.length).toBe(1);
  });

  it("close() lets a taken connection's owner finish before the server is gone", async () => {
    let owned: net.Socket | null = null;
    const socket = await serve({ ...basic, stream: async () => new TakeOver(null, (sock) => (owned = sock)) }, {}, ['stream']);
    const c = new Client(socket);
    expect((await c.call('stream', 1)).result).toBeNull();
    let got = '';
    c.sock.on('data', (d: string) => (got += d));
    const server = servers.pop()!;
    const closing = server.close();
    // The owner writes its last bytes and ends the connection; close() waited for that.
    owned!.end('LAST');
    await closing;
    await c.closed;
    expect(got).toBe('LAST');
  });
});
