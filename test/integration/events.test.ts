/**
 * Events and policy-decision logs against the real daemon: `mvnet events` (JSON lines and the
 * human form) follows attach, VM up/down of a socket port as its peer comes and goes, route
 * changes, detach, and rate-limited limit events; a VM with route none connecting out is logged
 * (info, naming the VM, destination and reason) and a flood of such connections gives a bounded
 * number of info lines while every one is counted.
 */
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, runCli, startDaemon, type Daemon, type LogLine } from '../support/daemon.js';
import { cleanupAll, makeTempDir, spawnProcess, waitFor, type ManagedProcess } from '../support/netns.js';
import { attachTapVm, type TapVm } from '../support/vms.js';
import type { MvnetEvent } from '../../daemon/control/api.js';

afterAll(cleanupAll);

/** Connection attempts from inside the VM, one after another, each refused at once (ICMP prohibited). */
const ATTEMPTS_JS = `
const net = require('node:net');
const [host, port, n] = process.argv.slice(1);
let refused = 0;
(async () => {
  for (let i = 0; i < Number(n); i++) {
    await new Promise((resolve) => {
      const s = net.connect({ host, port: Number(port) });
      const t = setTimeout(() => { s.destroy(); resolve(); }, 3000);
      s.on('error', (e) => { clearTimeout(t); if (e.code === 'EHOSTUNREACH') refused++; resolve(); });
      s.on('connect', () => { clearTimeout(t); s.destroy(); resolve(); });
    });
  }
  console.log(JSON.stringify({ refused }));
})();
`;

describe('link events', () => {
  it('two daemons linked over a unix socket: link.up on both, link.down (removed) when one removes it', async () => {
    const dir = makeTempDir('evlink');
    const a = await startDaemon();
    const b = await startDaemon();
    const fa = spawnProcess(['node', CLI_JS, '--socket', a.socket, '--json', 'events', '--backlog', '1000', '--type', 'link.'], { label: 'events of a' });
    const fb = spawnProcess(['node', CLI_JS, '--socket', b.socket, '--json', 'events', '--backlog', '1000', '--type', 'link.'], { label: 'events of b' });
    for (const d of [a, b]) await d.cliOk(['net', 'create', 'lan', '--subnet', '10.237.0.0/24']);
    const keyA = (await a.cliJson<{ publicKey: string }>(['link', 'key'])).publicKey;
    const keyB = (await b.cliJson<{ publicKey: string }>(['link', 'key'])).publicKey;
    const sock = join(dir, 'link.sock');
    await a.cliOk(['link', 'add', 'to-b', '--net', 'lan', '--peer', keyB, '--listen', `unix:${sock}`]);
    await b.cliOk(['link', 'add', 'to-a', '--net', 'lan', '--peer', keyA, '--unix', sock]);
    const up = (f: ManagedProcess, link: string): Promise<string> => f.waitForLine((l) => l.includes('"link.up"') && l.includes(`"${link}"`), { timeoutMs: 20_000 });
    expect(JSON.parse(await up(fa, 'to-b'))).toMatchObject({ type: 'link.up', link: 'to-b', kind: 'link' });
    expect(JSON.parse(await up(fb, 'to-a'))).toMatchObject({ type: 'link.up', link: 'to-a', kind: 'link' });
    await a.cliOk(['link', 'remove', 'to-b']);
    const down = JSON.parse(await fa.waitForLine((l) => l.includes('"link.down"'), { timeoutMs: 10_000 })) as MvnetEvent;
    expect(down).toMatchObject({ type: 'link.down', link: 'to-b', state: 'removed' });
  });
});

describe('events and policy logs', () => {
  let d: Daemon;
  let dir: string;
  let follower: ManagedProcess;
  let human: ManagedProcess;
  let a: TapVm;
  const events = (): MvnetEvent[] => follower.lines.map((l) => JSON.parse(l) as MvnetEvent);
  const waitEvent = async (pred: (e: MvnetEvent) => boolean, what: string): Promise<MvnetEvent> => {
    const line = await follower.waitForLine((l) => pred(JSON.parse(l) as MvnetEvent), { timeoutMs: 15_000 }).catch((e: Error) => {
      throw new Error(`no event ${what}: ${e.message}`);
    });
    return JSON.parse(line) as MvnetEvent;
  };

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('events');
    // --backlog: whatever happens before a follower is connected is replayed to it, so no event is missed.
    follower = spawnProcess(['node', CLI_JS, '--socket', d.socket, '--json', 'events', '--backlog', '1000'], { label: 'mvnet --json events' });
    human = spawnProcess(['node', CLI_JS, '--socket', d.socket, 'events', '--backlog', '1000', '--type', 'route.', '--type', 'vm.detached'], { label: 'mvnet events --type route.' });
    await d.cliOk(['net', 'create', 'lan', '--subnet', '10.231.0.0/24']);
    // A second network whose gateway is the outside destination below: a host this test made.
    await d.cliOk(['net', 'create', 'far', '--subnet', '10.232.0.0/24']);
  });

  it('attach of a TAP VM: vm.attached and vm.up', async () => {
    a = await attachTapVm(d, { vm: 'ea', net: 'lan', cidr: '10.231.0.11/24', prefix: 'ev-a' });
    const att = await waitEvent((e) => e.type === 'vm.attached' && e.vm === 'ea', 'vm.attached ea');
    expect(att).toMatchObject({ net: 'lan', kind: 'tap', port: expect.stringContaining(a.ifname) });
    expect(typeof att.seq).toBe('number');
    expect(new Date(att.time).toISOString()).toBe(att.time);
    await waitEvent((e) => e.type === 'vm.up' && e.vm === 'ea', 'vm.up ea');
  });

  it('a socket port: vm.up when its peer connects, vm.down (waiting) when it goes', async () => {
    const path = join(dir, 'q.sock');
    await d.cliOk(['vm', 'attach', 'eq', '--net', 'lan', '--unix-listen', path]);
    await waitEvent((e) => e.type === 'vm.attached' && e.vm === 'eq', 'vm.attached eq');
    const peer = net.createConnection({ path });
    await new Promise<void>((r, j) => peer.once('connect', r).once('error', j));
    expect(await waitEvent((e) => e.type === 'vm.up' && e.vm === 'eq', 'vm.up eq')).toMatchObject({ type: 'vm.up' });
    peer.destroy();
    expect(await waitEvent((e) => e.type === 'vm.down' && e.vm === 'eq', 'vm.down eq')).toMatchObject({ state: 'waiting' });
  });

  it('route changes, and detach; the human form prints one line each with time, type, subject, detail', async () => {
    await d.cliOk(['route', '--direct', 'ea']);
    await d.cliOk(['route', '--none', 'ea']);
    await d.cliOk(['vm', 'detach', 'eq']);
    const changed = await waitEvent((e) => e.type === 'route.changed' && e.vm === 'ea' && e.route.kind === 'none', 'route.changed ea none');
    expect(changed).toMatchObject({ routeText: expect.stringMatching(/^none/) });
    await waitEvent((e) => e.type === 'vm.detached' && e.vm === 'eq', 'vm.detached eq');
    const direct = events().findIndex((e) => e.type === 'route.changed' && e.vm === 'ea' && e.route.kind === 'direct');
    const none = events().findIndex((e) => e.type === 'route.changed' && e.vm === 'ea' && e.route.kind === 'none');
    expect(direct).toBeGreaterThanOrEqual(0);
    expect(none).toBeGreaterThan(direct);
    // Seqs increase.
    const seqs = events().map((e) => e.seq);
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
    await human.waitForLine((l) => /vm\.detached\s+eq\s+from lan$/.test(l));
    expect(human.lines.find((l) => l.includes('route.changed'))).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ {2}route\.changed +ea +direct$/);
    // The filter held: no other types.
    expect(human.lines.every((l) => /route\.|vm\.detached/.test(l)), human.lines.join('\n')).toBe(true);
  });

  it('a VM with route none connecting out: one info line naming VM, destination and reason; a flood stays bounded; a limit event', async () => {
    const logsBefore = d.logs.length;
    const policy = (l: LogLine): boolean => String(l.msg).startsWith('flow refused by policy') && l.vm === 'ea';
    await a.ns.exec(['ip', 'route', 'add', 'default', 'via', '10.231.0.1']);
    const first = await a.ns.exec(['node', '-e', ATTEMPTS_JS, '10.232.0.1', '80', '1']);
    expect(JSON.parse(first.stdout)).toEqual({ refused: 1 });
    const line = await d.waitForLog(policy, 10_000);
    expect(line).toMatchObject({ level: 30, vm: 'ea', dst: '10.232.0.1:80', proto: 'tcp', reason: 'route-none', action: 'refused' });
    // A flood: 300 more, refused one after another.
    const flood = await a.ns.exec(['node', '-e', ATTEMPTS_JS, '10.232.0.1', '80', '300'], { timeoutMs: 60_000 });
    expect(JSON.parse(flood.stdout)).toEqual({ refused: 300 });
    const vm = await d.vm('ea');
    expect(vm.flows?.tcpRefused).toBeGreaterThanOrEqual(301);
    const lines = d.logs.slice(logsBefore).filter(policy);
    // At most one line per VM and reason per 10 s (the flood takes a few seconds at most).
    const spanS = (Date.now() - new Date(String(line.time)).getTime()) / 1000;
    expect(lines.length).toBeLessThanOrEqual(1 + Math.ceil(spanS / 10));
    expect(lines.length).toBeLessThan(10);
    const hit = await waitEvent((e) => e.type === 'limit.hit' && e.vm === 'ea' && e.limit === 'tcp-refused', 'limit.hit ea tcp-refused');
    expect(hit.type === 'limit.hit' && hit.count).toBeGreaterThan(0);
    // Rate-limited too: the flood gave at most a few limit events, not hundreds.
    expect(events().filter((e) => e.type === 'limit.hit' && e.vm === 'ea').length).toBeLessThanOrEqual(1 + Math.ceil(spanS / 10));
  });

  it('--backlog replays kept events; a bad --type is one line and a non-zero exit; Ctrl-C ends a follower with 0', async () => {
    const replay = spawnProcess(['node', CLI_JS, '--socket', d.socket, '--json', 'events', '--type', 'route.changed', '--backlog', '2'], { label: 'mvnet events --backlog 2' });
    await waitFor(() => replay.lines.length >= 2, { timeoutMs: 10_000, what: 'two replayed events' });
    // It follows until stopped: Ctrl-C ends it with 0, and nothing but the two JSON lines was printed.
    replay.signal('SIGINT');
    expect((await replay.exited).code).toBe(0);
    expect(replay.lines.map((l) => (JSON.parse(l) as MvnetEvent).type)).toEqual(['route.changed', 'route.changed']);
    const bad = await d.cli(['events', '--type', 'bogus']);
    expect(bad.code).toBe(2);
    expect(bad.stdout).toBe('');
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/no event type begins with "bogus"/);
    human.signal('SIGINT');
    expect((await human.exited).code).toBe(0);
    // No daemon there: one line, exit 3.
    const gone = await runCli(join(dir, 'nobody.sock'), ['events']);
    expect(gone.code).toBe(3);
    expect(gone.stdout).toBe('');
    expect(gone.stderr.trim().split('\n')).toEqual([expect.stringMatching(/daemon is not running/)]);
  });

  it("the switch's policy drops are logged too: a VM sending from another MAC", async () => {
    await a.ns.setMac(a.ifname, '02:00:00:00:77:01');
    await a.ns.exec(['ip', 'neigh', 'flush', 'dev', a.ifname]);
    expect(await a.ns.ping('10.231.0.1', { count: 2, waitS: 1 })).toBe(false);
    const line = await d.waitForLog((l) => l.msg === 'frame dropped by the switch' && l.vm === 'ea', 10_000);
    expect(line).toMatchObject({ level: 30, reason: 'spoofed-mac', proto: 'frame' });
  });

  it('the daemon stopping ends the stream: mvnet events says so, on one line, and exits non-zero', async () => {
    await d.stop();
    const ex = await follower.exited;
    expect(ex.code).toBe(1);
    expect(follower.stderr.trim().split('\n')).toEqual([expect.stringMatching(/ended the event stream \(it stopped\)/)]);
  });
});
