/**
 * TorManager against a real tor (the installed /usr/sbin/tor), never on the network: every tor
 * here runs with `DisableNetwork 1` (it opens no SOCKS/OR connection and fetches nothing; only
 * its control port works) and `__OwningControllerProcess` of this test process, so a crashed
 * test cannot leave one behind.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseBootstrap } from '../../daemon/tor/control.js';
import { untilTorState } from '../support/tor-state.js';
import { checkTorConfig, TorManager, waitForPaths } from '../../daemon/tor/manager.js';
import { pidAlive } from '../support/netns.js';

const logger = pino({ level: process.env.MVNET_TEST_LOG ?? 'silent' });
const TOR = 'tor';

function torVersion(): string {
  const r = spawnSync(TOR, ['--version'], { encoding: 'utf8' });
  const m = /Tor version (\d+\.\d+\.\d+\.\d+)/.exec(r.stdout);
  if (!m) throw new Error(`cannot run ${TOR} --version: ${r.stdout}${r.stderr}`);
  return m[1]!;
}

const alive = pidAlive;

/** Pids of processes whose command line mentions `needle` (e.g. a test's state directory). */
function processesMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'latin1').includes(needle)) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const until = untilTorState;

function tempDir(prefix: string): string {
  // Short, so that unix socket paths stay well under 108 bytes.
  return mkdtempSync(join(tmpdir(), `mvt-${prefix}-`));
}

/** A tor the test runs itself (for external mode), offline and owned by this process. */
class OwnTor {
  child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  constructor(
    readonly dir: string,
    private readonly lines: string[],
  ) {}

  get controlSock(): string {
    return join(this.dir, 'control.sock');
  }

  async start(waitFor: string[]): Promise<void> {
    for (const f of waitFor) rmSync(f, { force: true });
    const torrc = join(this.dir, 'torrc');
    writeFileSync(
      torrc,
      [`DataDirectory ${join(this.dir, 'data')}`, 'DisableNetwork 1', `__OwningControllerProcess ${process.pid}`, 'Log notice stdout', ...this.lines].join('\n') + '\n',
    );
    writeFileSync(join(this.dir, 'defaults'), '');
    const child = spawn(TOR, ['-f', torrc, '--defaults-torrc', join(this.dir, 'defaults')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (b: Buffer) => (log += b.toString()));
    child.stderr.on('data', (b: Buffer) => (log += b.toString()));
    this.child = child;
    this.exited = new Promise<void>((r) => child.once('exit', () => r()));
    const ac = new AbortController();
    const t = setTimeout(() => ac.abort(new Error(`own tor did not come up:\n${log}`)), 20_000);
    child.once('exit', (code) => ac.abort(new Error(`own tor exited with ${code}:\n${log}`)));
    try {
      await waitForPaths(this.dir, waitFor, ac.signal);
    } finally {
      clearTimeout(t);
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) c.kill(signal);
    await this.exited;
    this.child = null;
  }
}

describe('TorManager, embedded tor (DisableNetwork 1)', () => {
  let stateDir: string;
  let m: TorManager;
  const seen: string[] = [];

  beforeAll(async () => {
    stateDir = tempDir('tormgr');
    m = new TorManager({
      config: checkTorConfig({ torrc: ['DisableNetwork 1'], hiddenServiceDirs: [join(stateDir, 'onions')] }),
      stateDir,
      logger,
    });
    m.on('ready', () => seen.push('ready'));
    m.on('down', () => seen.push('down'));
    await m.start();
  });

  afterAll(async () => {
    await m?.stop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('starts tor, connects its control port, reports the version and an unfinished bootstrap', async () => {
    const s = await until(m, (x) => x.phase === 'bootstrapping', 20_000, 'bootstrapping');
    expect(s).toMatchObject({ mode: 'embedded', phase: 'bootstrapping', restarts: 0, version: torVersion() });
    expect(s.progress).toBeLessThan(100);
    expect(s.summary.length).toBeGreaterThan(0);
    expect(m.isReady()).toBe(false);
    expect(seen).not.toContain('ready');

    const ctl = m.control();
    expect(ctl).not.toBeNull();
    expect(ctl!.authMethod).toBe('SAFECOOKIE');
    const info = await ctl!.getInfo(['status/bootstrap-phase', 'version', 'config-file']);
    expect(parseBootstrap(info['status/bootstrap-phase']!)?.progress).toBe(s.progress);
    expect(info['config-file']).toBe(join(stateDir, 'tor', 'torrc'));

    const files = m.files()!;
    // tor runs as debian-tor here: root's directory (torrc) lets its group through only; data/ and run/ are tor's.
    expect(statSync(files.dir)).toMatchObject({ uid: 0, mode: 0o40710 });
    expect(statSync(files.torrc)).toMatchObject({ uid: 0, mode: 0o100640 });
    expect(statSync(files.dataDir).mode & 0o777).toBe(0o700);
    expect(statSync(files.runDir).mode & 0o777).toBe(0o700);
    expect(readFileSync(files.torrc, 'utf8')).toContain(`\n__OwningControllerProcess ${process.pid}\n`);
    expect(readFileSync(files.torrc, 'utf8')).toMatch(/# tor\.torrc\nDisableNetwork 1\n$/);
    expect(m.socks()).toEqual({ path: join(stateDir, 'tor', 'run', 'socks.sock') });
    const conf = await ctl!.command('GETCONF DisableNetwork __OwningControllerProcess');
    expect(conf.lines.map((l) => l.text)).toEqual(['DisableNetwork=1', `__OwningControllerProcess=${process.pid}`]);
  });

  it('ADD_ONION NEW:ED25519-V3 returns a 56-character service id offline; DEL_ONION removes it', async () => {
    const ctl = m.control()!;
    const r = await ctl.addOnion({ key: 'NEW:ED25519-V3', ports: [{ virt: 80, target: `unix:${join(stateDir, 'web.sock')}` }], flags: ['Detach'] });
    expect(r.serviceId).toMatch(/^[a-z2-7]{56}$/);
    expect(r.privateKey).toMatch(/^ED25519-V3:[A-Za-z0-9+/]{86}==$/);
    expect((await ctl.getInfo(['onions/detached']))['onions/detached']!.split('\n')).toContain(r.serviceId);
    await ctl.delOnion(r.serviceId);
    expect((await ctl.getInfo(['onions/detached']))['onions/detached']!.split('\n')).not.toContain(r.serviceId);
    // The same key gives the same address.
    const again = await ctl.addOnion({ key: r.privateKey as `ED25519-V3:${string}`, ports: [{ virt: 80 }], flags: ['DiscardPK'] });
    expect(again).toEqual({ serviceId: r.serviceId });
    await ctl.delOnion(r.serviceId);
  });

  it('a managed onion keeps its address in its key directory', async () => {
    const keyDir = join(stateDir, 'onions', 'web');
    const id = await m.addOnion({ ports: [{ virt: 80, target: '127.0.0.1:8080' }], keyDir });
    expect(readFileSync(join(keyDir, 'hostname'), 'utf8')).toBe(`${id}.onion\n`);
    await m.delOnion(id);
    expect(await m.addOnion({ ports: [{ virt: 80, target: '127.0.0.1:8080' }], keyDir })).toBe(id);
    await expect(m.addOnion({ ports: [{ virt: 80 }], keyDir: join(stateDir, 'elsewhere') })).rejects.toThrow(/not under any of tor.hiddenServiceDirs/);
    expect(m.onionServices()).toEqual([id]);
  });

  it('SIGKILL on tor: down, then an automatic restart, the control port reconnected and the onion re-added', async () => {
    const pid1 = m.pid()!;
    const [id] = m.onionServices();
    const down = new Promise<string>((r) => m.once('down', r));
    const t0 = Date.now();
    process.kill(pid1, 'SIGKILL');
    await down;
    expect(m.state().phase).toBe('down');
    expect(m.control()).toBeNull();
    const s = await until(m, (x) => x.phase === 'bootstrapping' && x.restarts === 1, 30_000, 'restart');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900); // the first backoff step is 1 s
    expect(s.lastError).toMatch(/SIGKILL/);
    const pid2 = m.pid()!;
    expect(pid2).not.toBe(pid1);
    expect(alive(pid1)).toBe(false);
    expect(seen.filter((e) => e === 'down')).toHaveLength(1);
    const ctl = m.control()!;
    expect((await ctl.getInfo(['version'])).version).toBe(torVersion());
    expect((await ctl.getInfo(['onions/detached']))['onions/detached']!.split('\n')).toContain(id);
  });

  it('stop() ends tor and leaves no process behind', async () => {
    const pid = m.pid()!;
    expect(alive(pid)).toBe(true);
    await m.stop();
    expect(alive(pid)).toBe(false);
    expect(processesMentioning(stateDir)).toEqual([]);
    expect(m.state().phase).toBe('down');
    expect(m.control()).toBeNull();
    expect(m.pid()).toBeUndefined();
  });
});

describe('TorManager, embedded tor as an unprivileged user with the sandbox', () => {
  it('runs as debian-tor (uid from /proc), owns its data directory, and Sandbox 1 is on', async () => {
    const stateDir = tempDir('toruser');
    const m = new TorManager({ config: checkTorConfig({ torrc: ['DisableNetwork 1'] }), stateDir, logger });
    try {
      await m.start();
      const s = await until(m, (x) => x.phase === 'bootstrapping', 20_000, 'bootstrapping');
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${s.pid}/status`, 'utf8'))![1]);
      expect(s.privileges).toEqual({ user: 'debian-tor', sandbox: true, note: null });
      expect(uid).not.toBe(0);
      expect(statSync(m.files()!.dataDir).uid).toBe(uid);
      const conf = await m.control()!.command('GETCONF Sandbox');
      expect(conf.lines.map((l) => l.text)).toEqual(['Sandbox=1']);
    } finally {
      await m.stop();
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  it('a tor that cannot start with the sandbox is started again without it, and says so', async () => {
    const stateDir = tempDir('torsbx');
    chmodSync(stateDir, 0o755);
    // Stands in for a kernel without seccomp: refuses to start when the torrc asks for Sandbox 1.
    const wrapper = join(stateDir, 'tor-nosandbox.sh');
    writeFileSync(wrapper, `#!/bin/sh\nif grep -q '^Sandbox 1' "$2"; then echo "[err] mvnet test: Sandbox is not implemented on this platform"; exit 1; fi\nexec ${TOR} "$@"\n`, { mode: 0o755 });
    const m = new TorManager({ config: checkTorConfig({ torrc: ['DisableNetwork 1'], binary: wrapper }), stateDir, logger });
    try {
      await m.start();
      const s = await until(m, (x) => x.phase === 'bootstrapping', 20_000, 'bootstrapping without the sandbox');
      expect(s.privileges?.sandbox).toBe(false);
      expect(s.privileges?.note).toMatch(/the sandbox failed, tor runs without it: .*Sandbox is not implemented/);
      expect(readFileSync(m.files()!.torrc, 'utf8')).not.toMatch(/^Sandbox/m);
    } finally {
      await m.stop();
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});

describe('TorManager, embedded tor that cannot start', () => {
  it('a missing tor binary is reported and retried', async () => {
    const stateDir = tempDir('tornobin');
    const m = new TorManager({ config: checkTorConfig({ binary: join(stateDir, 'no-such-tor') }), stateDir, logger, backoffInitialMs: 100 });
    try {
      await m.start();
      const s = await until(m, (x) => x.restarts >= 1 && x.phase === 'down', 10_000, 'a failed restart');
      expect(s.lastError).toMatch(/cannot run ".*no-such-tor": spawn .* ENOENT/);
    } finally {
      await m.stop();
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  it('reports why and retries with backoff', async () => {
    const stateDir = tempDir('torbad');
    const m = new TorManager({ config: checkTorConfig({ torrc: ['DisableNetwork 1', 'NoSuchTorOption 1'] }), stateDir, logger, backoffInitialMs: 200, backoffMaxMs: 400 });
    try {
      await m.start();
      const s = await until(m, (x) => x.restarts >= 2 && x.phase === 'down', 20_000, 'two failed restarts');
      expect(s.lastError).toMatch(/tor exited with code 1/);
      expect(s.lastError).toMatch(/NoSuchTorOption|Failed to parse|configuration/i);
    } finally {
      await m.stop();
      rmSync(stateDir, { recursive: true, force: true });
    }
    expect(processesMentioning(stateDir)).toEqual([]);
  });
});

describe('TorManager, external tor', () => {
  const dirs: string[] = [];
  const tors: OwnTor[] = [];
  const managers: TorManager[] = [];

  afterAll(async () => {
    await Promise.all(managers.map((m) => m.stop()));
    await Promise.all(tors.map((t) => t.stop()));
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('unix ControlPort with cookie authentication (SAFECOOKIE from PROTOCOLINFO), reconnecting with backoff when tor goes away', async () => {
    const dir = tempDir('torext');
    dirs.push(dir);
    const cookie = join(dir, 'cookie');
    const tor = new OwnTor(dir, [`ControlPort unix:${join(dir, 'control.sock')}`, 'CookieAuthentication 1', `CookieAuthFile ${cookie}`, `SocksPort unix:${join(dir, 'socks.sock')}`]);
    tors.push(tor);
    await tor.start([tor.controlSock, cookie]);

    const m = new TorManager({
      config: checkTorConfig({ mode: 'external', control: `unix:${tor.controlSock}`, socks: `unix:${join(dir, 'socks.sock')}` }),
      stateDir: dir,
      logger,
      backoffInitialMs: 300,
    });
    managers.push(m);
    await m.start();
    const s = await until(m, (x) => x.phase === 'bootstrapping', 10_000, 'bootstrapping');
    expect(s).toMatchObject({ mode: 'external', version: torVersion(), restarts: 0 });
    expect(m.control()!.authMethod).toBe('SAFECOOKIE');
    expect(m.socks()).toEqual({ path: join(dir, 'socks.sock') });
    expect(m.pid()).toBeUndefined();

    const down = new Promise<string>((r) => m.once('down', r));
    await tor.stop('SIGTERM');
    expect(await down).toMatch(/control connection lost/);
    // While tor is away the manager keeps trying (and failing) with backoff.
    await until(m, (x) => /cannot connect/.test(x.lastError ?? ''), 10_000, 'a failed reconnect');
    await tor.start([tor.controlSock, cookie]);
    const back = await until(m, (x) => x.phase === 'bootstrapping' && x.restarts === 1, 20_000, 'reconnect');
    expect(back.version).toBe(torVersion());
    expect((await m.control()!.getInfo(['version'])).version).toBe(torVersion());
  });

  it('TCP ControlPort with HashedControlPassword; a wrong password is reported as such', async () => {
    const dir = tempDir('torpw');
    dirs.push(dir);
    // Quote, backslash and spaces: the password travels as an escaped QuotedString.
    const password = 'correct "horse" \\ battery';
    const hashed = /^16:[0-9A-F]+$/m.exec(spawnSync(TOR, ['--hash-password', password], { encoding: 'utf8' }).stdout)?.[0];
    expect(hashed).toBeDefined();
    const portFile = join(dir, 'control.port');
    const tor = new OwnTor(dir, ['ControlPort 127.0.0.1:auto', `ControlPortWriteToFile ${portFile}`, `HashedControlPassword ${hashed}`, 'SocksPort 127.0.0.1:auto']);
    tors.push(tor);
    await tor.start([portFile]);
    const control = readFileSync(portFile, 'utf8').trim().replace(/^PORT=/, '');
    expect(control).toMatch(/^127\.0\.0\.1:\d+$/);

    const bad = new TorManager({ config: checkTorConfig({ mode: 'external', control, socks: '127.0.0.1:9' , controlPassword: 'wrong' }), stateDir: dir, logger, backoffInitialMs: 5_000 });
    managers.push(bad);
    await bad.start();
    expect(bad.state()).toMatchObject({ phase: 'down' });
    expect(bad.state().lastError).toMatch(/515/);
    expect(bad.state().lastError).not.toContain('wrong');
    await bad.stop();

    const m = new TorManager({ config: checkTorConfig({ mode: 'external', control, socks: '127.0.0.1:9050', controlPassword: password }), stateDir: dir, logger });
    managers.push(m);
    await m.start();
    const s = await until(m, (x) => x.phase === 'bootstrapping', 10_000, 'bootstrapping');
    expect(s.version).toBe(torVersion());
    expect(m.control()!.authMethod).toBe('HASHEDPASSWORD');
    expect(m.socks()).toEqual({ host: '127.0.0.1', port: 9050 });
    await m.stop();
    // Stopping an external manager leaves the external tor alone.
    expect(alive(tor.child!.pid!)).toBe(true);
  });
});
