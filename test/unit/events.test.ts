/**
 * Events (daemon/events): the bus and its followers on a real control socket (filters, backlog,
 * resume, a slow follower dropped with a final notice while the others go on), what the daemon's
 * watcher makes of changing states and counters (rate-limited limit events, fail closed and
 * recovered), the rate-limited policy log, and the metrics address check.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlServer } from '../../daemon/control/server.js';
import { TakeOver } from '../../daemon/control/rpc.js';
import { EventBus, checkFollowParams } from '../../daemon/events/bus.js';
import { DaemonEvents, LIMIT_EVENT_MS, TOR_STUCK_MS, TOR_WARNED_MS, type WatchSources, type WatchedVm } from '../../daemon/events/daemon-events.js';
import { PolicyLog, INFO_EVERY_MS } from '../../daemon/events/policy-log.js';
import type { MvnetEvent } from '../../daemon/events/types.js';
import { parseMetricsListen } from '../../daemon/metrics/listen.js';
import { loadConfig } from '../../daemon/config.js';
import { UserError } from '../../daemon/errors.js';

const quiet = pino({ level: 'silent' });
const servers: ControlServer[] = [];
const sockets: net.Socket[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await s.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A control server with only events.follow, on the bus given. */
async function serveBus(bus: EventBus): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-ev-'));
  dirs.push(dir);
  const socket = path.join(dir, 'c.sock');
  const s = new ControlServer({
    socket,
    log: quiet,
    methods: { 'events.follow': async (p) => {
      const params = checkFollowParams(p);
      return new TakeOver({ following: params.types }, (sock, ended) => bus.follow(sock, params, ended));
    } },
    readOnly: new Set(['events.follow']),
  });
  await s.listen();
  servers.push(s);
  return socket;
}

/** A follower: its reply, then its events as they come. */
class Follower {
  readonly sock: net.Socket;
  lines: unknown[] = [];
  private buf = '';
  private waiters: (() => void)[] = [];
  readonly closed: Promise<void>;
  constructor(socket: string, params: unknown, opts: { paused?: boolean } = {}) {
    this.sock = net.createConnection({ path: socket });
    sockets.push(this.sock);
    this.sock.setEncoding('utf8');
    this.sock.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'events.follow', params }) + '\n');
    this.closed = new Promise((r) => this.sock.on('close', () => r()));
    if (opts.paused === true) this.sock.pause();
    this.sock.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(JSON.parse(this.buf.slice(0, nl)));
        this.buf = this.buf.slice(nl + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }
  get events(): MvnetEvent[] {
    return this.lines.slice(1) as MvnetEvent[];
  }
  async until(n: number): Promise<void> {
    while (this.lines.length < n) await new Promise<void>((r) => this.waiters.push(r));
  }
}

describe('event bus and followers', () => {
  it('streams one JSON line per event after the reply, filtered by type prefix, with time and seq', async () => {
    const bus = new EventBus();
    const socket = await serveBus(bus);
    const all = new Follower(socket, {});
    const vmOnly = new Follower(socket, { types: ['vm.', 'tor.down'] });
    await all.until(1);
    await vmOnly.until(1);
    expect(all.lines[0]).toMatchObject({ id: 1, result: { following: [] } });
    bus.emit({ type: 'vm.attached', vm: 'a', net: 'lan', port: 'tap0', kind: 'tap' });
    bus.emit({ type: 'tor.up' });
    bus.emit({ type: 'tor.down', reason: 'stopped' });
    bus.emit({ type: 'vm.detached', vm: 'a', net: 'lan' });
    await all.until(5);
    await vmOnly.until(4);
    expect(all.events.map((e) => [e.type, e.seq])).toEqual([['vm.attached', 1], ['tor.up', 2], ['tor.down', 3], ['vm.detached', 4]]);
    expect(vmOnly.events.map((e) => e.type)).toEqual(['vm.attached', 'tor.down', 'vm.detached']);
    for (const e of all.events) expect(new Date(e.time).toISOString()).toBe(e.time);
    expect(bus.followers).toBe(2);
    all.sock.destroy();
    await all.closed;
    await new Promise<void>((r) => setImmediate(r));
    expect(bus.followers).toBe(1);
  });

  it('starts with the last N kept events (backlog) or those after a seq (since)', async () => {
    const bus = new EventBus();
    for (let i = 0; i < 10; i++) bus.emit({ type: 'route.recovered', vm: `v${i}` });
    bus.emit({ type: 'tor.up' });
    const socket = await serveBus(bus);
    const back = new Follower(socket, { types: ['route.'], backlog: 3 });
    const since = new Follower(socket, { since: 8 });
    await back.until(4);
    await since.until(4);
    expect(back.events.map((e) => e.seq)).toEqual([8, 9, 10]);
    expect(since.events.map((e) => [e.seq, e.type])).toEqual([[9, 'route.recovered'], [10, 'route.recovered'], [11, 'tor.up']]);
  });

  it('refuses unknown type prefixes and bad numbers', () => {
    expect(() => checkFollowParams({ types: ['bogus'] })).toThrow(/no event type begins with "bogus"/);
    expect(() => checkFollowParams({ types: 'vm.' })).toThrow(UserError);
    expect(() => checkFollowParams({ backlog: -1 })).toThrow(/backlog must be an integer/);
    expect(() => checkFollowParams({ since: 1.5 })).toThrow(/since must be an integer/);
    expect(checkFollowParams({ types: ['vm'], backlog: 5 })).toEqual({ types: ['vm'], backlog: 5, since: null });
  });

  it('a follower that does not read is dropped with a final notice; emitting never waits and the others get everything', async () => {
    const bus = new EventBus({ queueBytes: 64 * 1024 });
    const socket = await serveBus(bus);
    const slow = new Follower(socket, {}, { paused: true });
    const fast = new Follower(socket, {});
    await fast.until(1);
    // The slow one's reply is in its socket: wait until the server handed it to the bus.
    while (bus.followers < 2) await new Promise<void>((r) => setTimeout(r, 5));
    const reason = 'x'.repeat(1000);
    const N = 3000;
    let slowest = 0;
    // 3 MB in bursts of 20 KB, with time for a reading follower to read between them.
    for (let i = 0; i < N; i += 20) {
      const t0 = performance.now();
      for (let j = i; j < i + 20; j++) bus.emit({ type: 'tor.down', reason });
      slowest = Math.max(slowest, performance.now() - t0);
      await new Promise<void>((r) => setTimeout(r, 1));
    }
    // Emitting never waited for the follower that reads nothing.
    expect(slowest).toBeLessThan(1000);
    expect(bus.overflows).toBe(1);
    expect(bus.followers).toBe(1);
    await fast.until(N + 1);
    expect(fast.events.at(-1)?.seq).toBe(N);
    slow.sock.resume();
    await slow.closed;
    const last = slow.lines.at(-1) as MvnetEvent;
    expect(last.type).toBe('events.overflow');
    // Much less than all of it was queued for it.
    expect(slow.events.length).toBeLessThan(N / 2);
  });
});

class FakeSources implements WatchSources {
  vmList: WatchedVm[] = [];
  linkList: { name: string; kind: 'link' | 'agent'; state: string }[] = [];
  captureList: { id: string; name?: string; dropped: number }[] = [];
  tor: string[] = [];
  vms = (): WatchedVm[] => this.vmList;
  links = (): { name: string; kind: 'link' | 'agent'; state: string }[] => this.linkList;
  captures = (): { id: string; name?: string; dropped: number }[] => this.captureList;
  torVms = (): string[] => this.tor;
}

describe('the daemon watcher', () => {
  function setup(): { src: FakeSources; ev: DaemonEvents; got: MvnetEvent[]; clock: { now: number } } {
    const src = new FakeSources();
    const clock = { now: 1_000_000 };
    const ev = new DaemonEvents(src, { clock: () => clock.now });
    const got: MvnetEvent[] = [];
    ev.bus.on((e) => got.push(e));
    return { src, ev, got, clock };
  }
  const counters = (tcpRefused: number, tcpLimit = 0) => ({ tcpLimit, udpLimit: 0, tcpRefused, udpDropped: 0 });

  it('port states: up, then waiting (down), then up again; links up and down', () => {
    const { src, ev, got } = setup();
    ev.vmAttached('a', 'lan', '/run/a.sock', 'unix-listen', { state: 'waiting', detail: 'waiting for the VM' }, false);
    src.vmList = [{ name: 'a', state: 'waiting', detail: 'waiting for the VM', counters: counters(0) }];
    src.linkList = [{ name: 'l1', kind: 'link', state: 'handshaking' }];
    ev.poll(true);
    src.vmList[0] = { ...src.vmList[0]!, state: 'up', detail: 'connected' };
    src.linkList[0]!.state = 'established';
    ev.poll();
    src.vmList[0] = { ...src.vmList[0]!, state: 'waiting', detail: 'the VM disconnected' };
    src.linkList[0]!.state = 'handshaking';
    ev.poll();
    ev.poll();
    expect(got.map((e) => e.type)).toEqual(['vm.attached', 'vm.up', 'link.up', 'vm.down', 'link.down']);
    expect(got[3]).toMatchObject({ vm: 'a', state: 'waiting', detail: 'the VM disconnected' });
  });

  it('a rising counter: one limit event per VM and limit per 10 s, the rest summed into the next', () => {
    const { src, ev, got, clock } = setup();
    src.vmList = [{ name: 'a', state: 'up', detail: '', counters: counters(5) }];
    ev.poll(true);
    // What was counted before the first look is history.
    expect(got).toEqual([]);
    for (let i = 1; i <= 30; i++) {
      clock.now += 1000;
      src.vmList[0]!.counters = counters(5 + i * 100, i === 3 ? 1 : 0);
      ev.poll();
    }
    const hits = got.filter((e) => e.type === 'limit.hit');
    // 30 s of a rising counter: at most one event per 10 s per limit.
    const refused = hits.filter((e) => e.type === 'limit.hit' && e.limit === 'tcp-refused');
    expect(refused.length).toBe(3);
    expect(refused[0]).toMatchObject({ vm: 'a', count: 100, total: 105 });
    expect(refused.reduce((n, e) => n + (e.type === 'limit.hit' ? e.count : 0), 0)).toBeLessThanOrEqual(3000);
    expect(hits.filter((e) => e.type === 'limit.hit' && e.limit === 'tcp-flows')).toHaveLength(1);
    expect(LIMIT_EVENT_MS).toBe(10_000);
  });

  it('capture drops are limit events too', () => {
    const { src, ev, got, clock } = setup();
    src.captureList = [{ id: 'c1', dropped: 0 }];
    ev.poll(true);
    src.captureList[0]!.dropped = 17;
    clock.now += 1000;
    ev.poll();
    expect(got).toMatchObject([{ type: 'limit.hit', limit: 'capture-dropped', capture: 'c1', count: 17 }]);
  });

  it('a Tor that never becomes ready fails its VMs closed: after TOR_STUCK_MS, sooner with Tor\'s warning as the reason', () => {
    const { src, ev, got, clock } = setup();
    src.tor = ['t1'];
    ev.torStarting();
    ev.routeChanged('t1', { kind: 'tor' }, 'all-tor', true, true);
    ev.poll(true);
    // Bootstrapping is not failing: nothing yet.
    clock.now += TOR_STUCK_MS - 1000;
    ev.poll();
    expect(got.filter((e) => e.type === 'route.failclosed')).toEqual([]);
    clock.now += 1000;
    ev.poll();
    expect(got.filter((e) => e.type === 'route.failclosed')).toMatchObject([{ vm: 't1', reason: 'Tor is down: not bootstrapped after 30 s' }]);
    ev.torReady();
    expect(got.at(-1)).toMatchObject({ type: 'route.recovered', vm: 't1' });

    // Stopped while unused, then started again: the old reason is not reused, and a warning fails it sooner.
    const b = setup();
    b.ev.torDown('stopped: nothing needed Tor');
    b.src.tor = ['t2'];
    b.ev.torStarting();
    b.ev.routeChanged('t2', { kind: 'tor' }, 'all-tor', true, true);
    expect(b.got.filter((e) => e.type === 'route.failclosed')).toEqual([]);
    b.ev.torWarning('Connection refused (CONNECTREFUSED)');
    b.clock.now += TOR_WARNED_MS;
    b.ev.poll();
    expect(b.got.filter((e) => e.type === 'route.failclosed')).toMatchObject([{ vm: 't2', reason: 'Tor is down: Connection refused (CONNECTREFUSED)' }]);
  });

  it('fail closed: Tor down fails the Tor-routed VMs once, a route set or a VM attached meanwhile too; Tor ready recovers them', () => {
    const { src, ev, got } = setup();
    src.tor = ['t1', 't2'];
    ev.torDown('cannot connect to tor');
    ev.torDown('still down');
    ev.routeChanged('t3', { kind: 'tor' }, 'all-tor', true, true);
    ev.routeChanged('d', { kind: 'direct', allow: null, torPorts: null }, 'direct', false, true);
    ev.vmAttached('t4', 'lan', 'tap4', 'tap', { state: 'up', detail: 'open' }, true);
    // Leaving Tor is not recovering.
    ev.routeChanged('t2', { kind: 'none', torPorts: null }, 'none', false, true);
    expect([...ev.failingClosed()].sort()).toEqual(['t1', 't3', 't4']);
    ev.torReady();
    const types = got.map((e) => `${e.type}${'vm' in e ? ` ${e.vm}` : ''}`);
    expect(types).toEqual([
      'tor.down',
      'route.failclosed t1',
      'route.failclosed t2',
      'tor.down',
      'route.changed t3',
      'route.failclosed t3',
      'route.changed d',
      'vm.attached t4',
      'vm.up t4',
      'route.failclosed t4',
      'route.changed t2',
      'tor.up',
      'route.recovered t1',
      'route.recovered t3',
      'route.recovered t4',
    ]);
    expect(got[1]).toMatchObject({ reason: 'Tor is down: cannot connect to tor' });
    expect(ev.failingClosed().size).toBe(0);
  });
});

describe('policy decision log', () => {
  function memLog(level: string): { log: pino.Logger; lines: Record<string, unknown>[] } {
    const lines: Record<string, unknown>[] = [];
    return { log: pino({ level }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
  }
  const refused = { vm: 'a', proto: 'tcp' as const, dst: '192.0.2.1:80', reason: 'route-none', action: 'refused' as const };

  it('info: one line per VM and reason per 10 s, then one saying how many were not logged', () => {
    const { log, lines } = memLog('info');
    const clock = { now: 0 };
    const p = new PolicyLog(log, () => clock.now);
    for (let i = 0; i < 1000; i++) p.record(refused);
    p.record({ ...refused, reason: 'not-allowed' });
    p.record({ ...refused, vm: 'b' });
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatchObject({ level: 30, vm: 'a', dst: '192.0.2.1:80', proto: 'tcp', reason: 'route-none', msg: 'flow refused by policy' });
    clock.now += INFO_EVERY_MS;
    p.record(refused);
    expect(lines).toHaveLength(4);
    expect(lines[3]).toMatchObject({ vm: 'a', suppressed: 999 });
    expect(lines[3]!.msg).toMatch(/999 more like it/);
  });

  it('debug: every decision', () => {
    const { log, lines } = memLog('debug');
    const p = new PolicyLog(log, () => 0);
    for (let i = 0; i < 50; i++) p.record(refused);
    expect(lines.filter((l) => l.level === 20)).toHaveLength(50);
    expect(lines.filter((l) => l.level === 30)).toHaveLength(1);
  });
});

describe('metrics.listen', () => {
  it('takes a unix socket and loopback addresses only', () => {
    expect(parseMetricsListen('unix:/run/mvnet/metrics.sock')).toEqual({ kind: 'unix', path: '/run/mvnet/metrics.sock' });
    expect(parseMetricsListen('127.0.0.1:9464')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9464 });
    expect(parseMetricsListen('127.3.4.5:1')).toEqual({ kind: 'tcp', host: '127.3.4.5', port: 1 });
    expect(parseMetricsListen('[::1]:9464')).toEqual({ kind: 'tcp', host: '::1', port: 9464 });
    for (const bad of ['0.0.0.0:9464', '192.168.1.2:9464', '[::]:9464', '[2001:db8::1]:80', 'localhost:9464', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', 'unix:relative.sock']) {
      expect(() => parseMetricsListen(bad), bad).toThrow(UserError);
    }
    expect(() => parseMetricsListen('0.0.0.0:9464')).toThrow(/not a loopback address/);
  });

  it('a config with a non-loopback address is refused with one line naming the key', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-ev-'));
    dirs.push(dir);
    const file = path.join(dir, 'c.json');
    fs.writeFileSync(file, JSON.stringify({ metrics: { listen: '0.0.0.0:9464' } }));
    expect(() => loadConfig(file, {})).toThrow(/^config .*: metrics\.listen: "0\.0\.0\.0:9464" is not a loopback address/);
    fs.writeFileSync(file, JSON.stringify({ notify: { enabled: 'yes' } }));
    expect(() => loadConfig(file, {})).toThrow(/notify\.enabled must be true or false/);
    fs.writeFileSync(file, JSON.stringify({ metrics: { listen: 'unix:/run/m.sock' }, notify: { dbus: 'unix:path=/tmp/x' } }));
    expect(loadConfig(file, {})).toMatchObject({ metrics: { listen: 'unix:/run/m.sock' }, notify: { dbus: 'unix:path=/tmp/x' } });
  });
});
