/**
 * Desktop notices through D-Bus, against a private `dbus-daemon --session` this test starts and
 * a small org.freedesktop.Notifications server of its own on that bus. The daemon's Tor is an
 * external one whose control and SOCKS sockets do not exist, so Tor is down from the start: a
 * VM routed --all-tor fails closed, and the server receives a Notify naming the VM.
 * When Tor comes back (the private test network's client tor, reached through a unix-socket relay
 * this test opens only then), the VM recovers: events and a second notice say so.
 * A bus that cannot be reached (DBUS_SESSION_BUS_ADDRESS naming a missing socket) is logged
 * once, while the daemon goes on answering.
 */
import { existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import dbus from 'dbus-next';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refused, runCli, startDaemon, type Daemon } from '../support/daemon.js';
import { CLI_JS } from '../support/daemon.js';
import { cleanupAll, makeTempDir, registerCleanup, spawnProcess, waitFor, type ManagedProcess } from '../support/netns.js';
import { privateTor } from '../tor/context.js';
import type { MvnetEvent } from '../../daemon/control/api.js';

afterAll(cleanupAll);

interface Notice {
  app: string;
  summary: string;
  body: string;
  urgency: number | undefined;
}

/** org.freedesktop.Notifications on `address`: records every Notify. */
async function notificationServer(address: string): Promise<{ notices: Notice[]; bus: dbus.MessageBus }> {
  const bus = dbus.sessionBus({ busAddress: address });
  registerCleanup('test notification server', async () => bus.disconnect());
  const notices: Notice[] = [];
  let id = 0;
  bus.addMethodHandler((msg: dbus.Message): boolean => {
    if (msg.interface !== 'org.freedesktop.Notifications' || msg.path !== '/org/freedesktop/Notifications') return false;
    if (msg.member === 'Notify') {
      const [app, , , summary, body, , hints] = msg.body as [string, number, string, string, string, string[], Record<string, dbus.Variant<number>>, number];
      notices.push({ app, summary, body, urgency: hints.urgency?.value });
      bus.send(dbus.Message.newMethodReturn(msg, 'u', [++id]));
      return true;
    }
    if (msg.member === 'GetCapabilities') {
      bus.send(dbus.Message.newMethodReturn(msg, 'as', [['body']]));
      return true;
    }
    if (msg.member === 'GetServerInformation') {
      bus.send(dbus.Message.newMethodReturn(msg, 'ssss', ['mvnet-test', 'mvnet', '1', '1.2']));
      return true;
    }
    return false;
  });
  const r = await bus.requestName('org.freedesktop.Notifications', dbus.NameFlag.DO_NOT_QUEUE);
  expect(r).toBe(dbus.RequestNameReply.PRIMARY_OWNER);
  return { notices, bus };
}

function torDownConfig(dir: string, extra: object): string {
  const cfg = join(dir, 'mvnet.json');
  // Nothing listens there: Tor is down from the start, and nothing is sent anywhere.
  writeFileSync(cfg, JSON.stringify({ tor: { mode: 'external', control: `unix:${join(dir, 'no-control.sock')}`, socks: `unix:${join(dir, 'no-socks.sock')}` }, ...extra }));
  return cfg;
}

describe('desktop notices', () => {
  let dir: string;
  let busProc: ManagedProcess;
  let address: string;
  let server: { notices: Notice[]; bus: dbus.MessageBus };

  beforeAll(async () => {
    dir = makeTempDir('notify');
    busProc = spawnProcess(['dbus-daemon', '--session', '--nofork', '--print-address', `--address=unix:path=${join(dir, 'bus')}`], { label: 'dbus-daemon --session' });
    address = (await busProc.waitForLine((l) => l.startsWith('unix:'), { timeoutMs: 10_000 })).trim();
    server = await notificationServer(address);
  });

  it('a VM whose Tor route fails closed: the notification server receives a notice naming it', async () => {
    server.notices.length = 0;
    // The test's own client sees the server as any desktop program would.
    const peer = dbus.sessionBus({ busAddress: address });
    registerCleanup('test D-Bus client', async () => peer.disconnect());
    const info = await peer.call(new dbus.Message({ destination: 'org.freedesktop.Notifications', path: '/org/freedesktop/Notifications', interface: 'org.freedesktop.Notifications', member: 'GetServerInformation' }));
    expect(info?.body[0]).toBe('mvnet-test');

    const d: Daemon = await startDaemon({ config: torDownConfig(dir, { notify: { dbus: address } }) });
    await d.waitForLog((l) => l.msg === 'desktop notices on' && l.bus === address);
    await d.waitForLog((l) => l.msg === 'tor is down');
    await d.cliOk(['net', 'create', 'nlan', '--subnet', '10.234.0.0/24']);
    await d.cliOk(['vm', 'attach', 'nvm1', '--net', 'nlan', '--unix-listen', join(dir, 'nvm1.sock')]);
    expect(server.notices).toEqual([]);
    await d.cliOk(['route', '--all-tor', 'nvm1']);
    await waitFor(() => server.notices.length > 0, { timeoutMs: 10_000, what: 'a Notify call' });
    const n = server.notices[0]!;
    expect(n.app).toBe('mvnet');
    expect(n.summary).toContain('nvm1');
    expect(n.body).toMatch(/Tor is down/);
    expect(n.urgency).toBe(2);
    // Only for failing closed: a route that does not use Tor sends nothing.
    await d.cliOk(['vm', 'attach', 'nvm2', '--net', 'nlan', '--unix-listen', join(dir, 'nvm2.sock')]);
    await d.cliOk(['route', '--direct', 'nvm2']);
    await d.cliOk(['status']);
    expect(server.notices).toHaveLength(1);
    await d.stop();
  });

  it("the notice body is escaped for body markup: Tor's reason with < > & arrives as text", async () => {
    server.notices.length = 0;
    const cfg = join(dir, 'mvnet-markup.json');
    // The reason names the control socket, and this one's name is markup.
    const control = join(dir, 'no-<b>&amp;.sock');
    writeFileSync(cfg, JSON.stringify({ tor: { mode: 'external', control: `unix:${control}`, socks: `unix:${join(dir, 'no-socks.sock')}` }, notify: { dbus: address } }));
    const d: Daemon = await startDaemon({ config: cfg });
    await d.waitForLog((l) => l.msg === 'tor is down');
    await d.cliOk(['net', 'create', 'mlan', '--subnet', '10.237.0.0/24']);
    await d.cliOk(['vm', 'attach', 'mvm1', '--net', 'mlan', '--unix-listen', join(dir, 'mvm1.sock')]);
    await d.cliOk(['route', '--all-tor', 'mvm1']);
    await waitFor(() => server.notices.length > 0, { timeoutMs: 10_000, what: 'a Notify call' });
    const body = server.notices[0]!.body;
    expect(body).toContain('no-&lt;b&gt;&amp;amp;.sock');
    expect(body).not.toMatch(/<|>|&(?!amp;|lt;|gt;)/);
    await d.stop();
  });

  it('notify.dbus other than unix:path= / unix:abstract= is refused at load (unixexec: would run a program as root, tcp: is open to others)', async () => {
    for (const bad of [`unixexec:path=/usr/bin/touch,arg1=${join(dir, 'pwned')}`, 'tcp:host=127.0.0.1,port=1', `unix:path=${join(dir, 'bus')};unixexec:path=/bin/true`, 'unix:path=relative']) {
      const cfg = torDownConfig(dir, { notify: { dbus: bad } });
      refused(await runCli(undefined, ['daemon', '--config', cfg, '--state-dir', makeTempDir('nd'), '--socket', join(makeTempDir('nds'), 'm.sock')]), `notify.dbus: ${JSON.stringify(bad)} is not a unix socket address`);
    }
    expect(existsSync(join(dir, 'pwned'))).toBe(false);
  });

  it('an inherited DBUS_SESSION_BUS_ADDRESS=unixexec:… is skipped with a warning, and the program never runs', async () => {
    const marker = join(dir, 'pwned-env');
    const bad = `unixexec:path=/usr/bin/touch,arg1=${marker}`;
    const d: Daemon = await startDaemon({ config: torDownConfig(dir, {}), env: { ...process.env, DBUS_SESSION_BUS_ADDRESS: bad } });
    const off = await d.waitForLog((l) => l.msg === 'desktop notices off');
    expect(off.level).toBe(40);
    expect(String(off.why)).toContain(`DBUS_SESSION_BUS_ADDRESS ${JSON.stringify(bad)} is not a unix socket address`);
    expect(d.logs.some((l) => l.msg === 'desktop notices on')).toBe(false);
    // A route failing closed is what would send a notice.
    await d.waitForLog((l) => l.msg === 'tor is down');
    await d.cliOk(['net', 'create', 'xlan', '--subnet', '10.238.0.0/24']);
    await d.cliOk(['vm', 'attach', 'xvm1', '--net', 'xlan', '--unix-listen', join(dir, 'xvm1.sock')]);
    await d.cliOk(['route', '--all-tor', 'xvm1']);
    const follower = spawnProcess(['node', CLI_JS, '--socket', d.socket, '--json', 'events', '--backlog', '100', '--type', 'route.failclosed'], { label: 'mvnet events' });
    await follower.waitForLine((l) => (JSON.parse(l) as { vm?: string }).vm === 'xvm1', { timeoutMs: 10_000 });
    follower.signal('SIGINT');
    await follower.exited;
    // No notifier exists to run it; the refusal in the log above is what the fix guarantees.
    expect(existsSync(marker)).toBe(false);
    await d.stop();
  });

  it('Tor coming back: route.recovered and a notice that the VM is routed through Tor again', async () => {
    const tor = privateTor();
    server.notices.length = 0;
    const relayPath = join(dir, 'relay-control.sock');
    const cfg = join(dir, 'mvnet-relay.json');
    // The private network's client tor, but its control port only through the relay, which is not open yet.
    writeFileSync(cfg, JSON.stringify({ tor: { mode: 'external', control: `unix:${relayPath}`, socks: `unix:${tor.client.socksPath}`, cookieFile: tor.client.cookiePath }, notify: { dbus: address } }));
    const d: Daemon = await startDaemon({ config: cfg });
    const follower = spawnProcess(['node', CLI_JS, '--socket', d.socket, '--json', 'events', '--backlog', '1000', '--type', 'route.', '--type', 'tor.'], { label: 'mvnet events' });
    const seen = (type: string): Promise<string> => follower.waitForLine((l) => (JSON.parse(l) as MvnetEvent).type === type, { timeoutMs: 60_000 });
    await seen('tor.down');
    await d.cliOk(['net', 'create', 'rlan', '--subnet', '10.236.0.0/24']);
    await d.cliOk(['vm', 'attach', 'rvm', '--net', 'rlan', '--unix-listen', join(dir, 'rvm.sock')]);
    await d.cliOk(['route', '--all-tor', 'rvm']);
    await seen('route.failclosed');
    await waitFor(() => server.notices.length === 1, { timeoutMs: 10_000, what: 'the fail-closed notice' });
    // Tor comes back: the relay opens, the daemon's next reconnect gets through.
    const relay = net.createServer((c) => {
      const up = net.createConnection({ path: tor.client.controlPath });
      c.pipe(up).pipe(c);
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
      c.on('close', () => up.destroy());
    });
    await new Promise<void>((r) => relay.listen(relayPath, r));
    registerCleanup('control relay', async () => new Promise<void>((r) => relay.close(() => r())));
    const recovered = JSON.parse(await seen('route.recovered')) as MvnetEvent;
    expect(recovered).toMatchObject({ type: 'route.recovered', vm: 'rvm' });
    await seen('tor.up');
    await waitFor(() => server.notices.length === 2, { timeoutMs: 10_000, what: 'the recovered notice' });
    expect(server.notices[1]!.summary).toContain('rvm');
    expect(server.notices[1]!.summary).toMatch(/through Tor again/);
    expect(server.notices[1]!.urgency).toBe(1);
    follower.signal('SIGINT');
    await follower.exited;
    await d.stop();
  }, 120_000);

  it('a bus that cannot be reached (DBUS_SESSION_BUS_ADDRESS): logged once, the daemon goes on', async () => {
    const dead = `unix:path=${join(dir, 'no-bus')}`;
    const d: Daemon = await startDaemon({ config: torDownConfig(dir, {}), env: { ...process.env, DBUS_SESSION_BUS_ADDRESS: dead }, extraArgs: ['--log-level', 'debug'] });
    await d.waitForLog((l) => l.msg === 'desktop notices on' && l.bus === dead);
    await d.waitForLog((l) => l.msg === 'tor is down');
    await d.cliOk(['net', 'create', 'nlan', '--subnet', '10.235.0.0/24']);
    const failed = (): number => d.logs.filter((l) => l.msg === 'desktop notice failed').length;
    for (const [i, vm] of ['nx1', 'nx2', 'nx3'].entries()) {
      await d.cliOk(['vm', 'attach', vm, '--net', 'nlan', '--unix-listen', join(dir, `${vm}.sock`)]);
      await d.cliOk(['route', '--all-tor', vm]);
      // Each one's notice is tried (and fails) before the next.
      await waitFor(() => failed() === i + 1, { timeoutMs: 15_000, what: `notice ${i + 1} to fail` });
    }
    const st = await d.status();
    expect(st.vms.map((v) => v.name).sort()).toEqual(['nx1', 'nx2', 'nx3']);
    expect(d.logs.filter((l) => String(l.msg).startsWith('desktop notice not sent'))).toHaveLength(1);
    // The events were emitted all the same.
    const r = await d.cli(['--json', 'status']);
    expect(r.code).toBe(0);
    await d.stop();
  });
});
