/**
 * The embedded tor's user (debian-tor) must not be able to turn root's work on tor's files
 * against root. Each test runs a real process as that user (setpriv) that plants links, swaps
 * files or connects, and then checks that root's targets are untouched. The tors here run with
 * `DisableNetwork 1` and `__OwningControllerProcess` of this process: nothing leaves the host.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TorControl } from '../../daemon/tor/control.js';
import { prepareTorSocketDir, shareTorSocket } from '../../daemon/tor/files.js';
import { untilTorState } from '../support/tor-state.js';
import { checkTorConfig, TorManager } from '../../daemon/tor/manager.js';

const logger = pino({ level: process.env.MVNET_TEST_LOG ?? 'silent' });

function ids(user: string): { uid: number; gid: number } {
  const f = spawnSync('getent', ['passwd', user], { encoding: 'utf8' }).stdout.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}
const TOR_USER = ids('debian-tor');
const NOBODY = ids('nobody');

/** Runs `sh -c script` as uid:gid with no supplementary groups; resolves with its exit status and stderr. */
function runAs(who: { uid: number; gid: number }, script: string): { status: number | null; stderr: string } {
  const r = spawnSync('setpriv', ['--reuid', String(who.uid), '--regid', String(who.gid), '--clear-groups', 'sh', '-c', script], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

/** The same as a background loop (the attacker racing root); stop() kills it (by its pid) and waits. */
function loopAs(who: { uid: number; gid: number }, body: string): { stop(): Promise<void> } {
  const child: ChildProcess = spawn('setpriv', ['--reuid', String(who.uid), '--regid', String(who.gid), '--clear-groups', 'sh', '-c', `while :; do ${body}; done`], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    stop: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

const until = untilTorState;

/** Root's targets the tor user aims its links at: a 0600 file of 32 bytes (cookie-sized) and a 0755 directory. */
interface Targets {
  dir: string;
  file: string;
  secret: Buffer;
  subdir: string;
}

function makeTargets(): Targets {
  const dir = mkdtempSync(join(tmpdir(), 'mvt-tgt-'));
  const file = join(dir, 'secret');
  const secret = Buffer.from('0123456789abcdef0123456789ABCDEF');
  writeFileSync(file, secret, { mode: 0o600 });
  const subdir = join(dir, 'keep');
  mkdirSync(subdir, { mode: 0o755 });
  chmodSync(subdir, 0o755);
  return { dir, file, secret, subdir };
}

function expectUntouched(t: Targets): void {
  expect(statSync(t.file)).toMatchObject({ uid: 0, gid: 0, mode: 0o100600 });
  expect(readFileSync(t.file)).toEqual(t.secret);
  expect(statSync(t.subdir)).toMatchObject({ uid: 0, gid: 0, mode: 0o40755 });
}

describe('the embedded tor\'s files against its own user', () => {
  let targets: Targets;
  const dirs: string[] = [];
  beforeAll(() => {
    targets = makeTargets();
  });
  afterAll(() => {
    for (const d of [targets.dir, ...dirs]) rmSync(d, { recursive: true, force: true });
  });

  it('a tor-owned layout full of planted links (torrc, defaults, data, cookie) is replaced without root following any of them', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'mvt-tfa-'));
    dirs.push(stateDir);
    // The layout of the first unprivileged-tor version: <state> 0711, <state>/tor the tor user's.
    chmodSync(stateDir, 0o711);
    mkdirSync(join(stateDir, 'tor'), { mode: 0o700 });
    chownSync(join(stateDir, 'tor'), TOR_USER.uid, TOR_USER.gid);
    const t = join(stateDir, 'tor');
    const plant = runAs(
      TOR_USER,
      `set -e; ln -s ${targets.file} ${t}/torrc; ln -s ${targets.file} ${t}/torrc-defaults; ln -s ${targets.subdir} ${t}/data; ` +
        `mkdir ${t}/run; ln -s ${targets.file} ${t}/run/control.authcookie; ln -s ${targets.file} ${t}/control.authcookie`,
    );
    expect(plant).toEqual({ status: 0, stderr: '' });

    const m = new TorManager({ config: checkTorConfig({ torrc: ['DisableNetwork 1'] }), stateDir, logger });
    try {
      await m.start();
      await until(m, (x) => x.phase === 'bootstrapping', 30_000, 'bootstrapping');
      expect(m.control()!.authMethod).toBe('SAFECOOKIE');
    } finally {
      await m.stop();
    }
    expectUntouched(targets);
    // The new layout: root's directory, tor's two; the state directory lets only tor's group through.
    expect(statSync(stateDir)).toMatchObject({ uid: 0, gid: TOR_USER.gid, mode: 0o40710 });
    expect(statSync(t)).toMatchObject({ uid: 0, gid: TOR_USER.gid, mode: 0o40710 });
    expect(statSync(join(t, 'torrc'))).toMatchObject({ uid: 0, gid: TOR_USER.gid, mode: 0o100640 });
    expect(statSync(join(t, 'data'))).toMatchObject({ uid: TOR_USER.uid, mode: 0o40700 });
    expect(statSync(join(t, 'run'))).toMatchObject({ uid: TOR_USER.uid, mode: 0o40700 });
    // The old directory was moved aside and removed.
    expect(readdirSync(stateDir).filter((f) => f.startsWith('.old-'))).toEqual([]);
  });

  it('while tor starts and restarts, the tor user cannot put a link in place of torrc or data (root\'s directory)', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'mvt-tfb-'));
    dirs.push(stateDir);
    const t = join(stateDir, 'tor');
    const m = new TorManager({ config: checkTorConfig({ torrc: ['DisableNetwork 1'] }), stateDir, logger, backoffInitialMs: 100 });
    // The attack that made root chown a 0600 file of its own: rename a link over torrc between write and chown.
    const attacker = loopAs(
      TOR_USER,
      `ln -sfn ${targets.file} ${t}/x 2>/dev/null; mv -f ${t}/x ${t}/torrc 2>/dev/null; mv -f ${t}/x ${t}/torrc-defaults 2>/dev/null; ` +
        `rm -rf ${t}/data 2>/dev/null; ln -sfn ${targets.subdir} ${t}/data 2>/dev/null`,
    );
    try {
      await m.start();
      const s1 = await until(m, (x) => x.phase === 'bootstrapping', 30_000, 'bootstrapping');
      process.kill(s1.pid!, 'SIGKILL');
      await until(m, (x) => x.phase === 'bootstrapping' && x.restarts >= 1, 30_000, 'bootstrapping after a restart');
      // And from the outside: the tor user gets nowhere in root's directory.
      const r = runAs(TOR_USER, `ln -s ${targets.file} ${t}/torrc.new`);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/Permission denied/);
    } finally {
      await attacker.stop();
      await m.stop();
    }
    expectUntouched(targets);
    expect(statSync(join(t, 'data'))).toMatchObject({ uid: TOR_USER.uid, mode: 0o40700 });
  });
});

describe('the control cookie as root reads it (embedded: SAFECOOKIE only, the cookie must be tor\'s)', () => {
  let targets: Targets;
  let dir: string;
  let server: net.Server;
  /** Every line a client sent to the fake tor (a compromised tor would record them). */
  const received: string[] = [];
  let methods = 'COOKIE,SAFECOOKIE';

  beforeAll(async () => {
    targets = makeTargets();
    dir = mkdtempSync(join(tmpdir(), 'mvt-tfc-'));
    chmodSync(dir, 0o755);
    mkdirSync(join(dir, 'run'), { mode: 0o700 });
    chownSync(join(dir, 'run'), TOR_USER.uid, TOR_USER.gid);
    // A fake tor: offers cookie authentication, names the cookie file, and logs what it is sent.
    server = net.createServer((sock) => {
      let buf = '';
      sock.on('data', (b: Buffer) => {
        buf += b.toString('latin1');
        let i;
        while ((i = buf.indexOf('\r\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 2);
          received.push(line);
          if (line.startsWith('PROTOCOLINFO')) sock.write(`250-PROTOCOLINFO 1\r\n250-AUTH METHODS=${methods} COOKIEFILE="${join(dir, 'run', 'cookie')}"\r\n250-VERSION Tor="0.4.8.0"\r\n250 OK\r\n`);
          else if (line.startsWith('AUTHCHALLENGE')) sock.write(`250 AUTHCHALLENGE SERVERHASH=${'00'.repeat(32)} SERVERNONCE=${'11'.repeat(32)}\r\n`);
          else sock.write('250 OK\r\n');
        }
      });
    });
    await new Promise<void>((r) => server.listen(join(dir, 'ctl.sock'), r));
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
    rmSync(targets.dir, { recursive: true, force: true });
  });

  const connect = (): Promise<TorControl> =>
    TorControl.connect({ address: `unix:${join(dir, 'ctl.sock')}`, cookieFile: join(dir, 'run', 'cookie'), cookieOwners: [TOR_USER.uid], timeoutMs: 5_000 });
  const plant = (script: string): void => {
    expect(runAs(TOR_USER, `cd ${join(dir, 'run')} && rm -f cookie && ${script}`)).toEqual({ status: 0, stderr: '' });
  };

  it('a link to a 32-byte root file is not followed, and nothing of it is sent', async () => {
    plant(`ln -s ${targets.file} cookie`);
    received.length = 0;
    await expect(connect()).rejects.toThrow(/cannot read tor's control cookie .*symbolic link/);
    const hex = targets.secret.toString('hex').toUpperCase();
    expect(received.join('\n')).not.toContain(hex);
    expect(received.filter((l) => l.startsWith('AUTHENTICATE'))).toEqual([]);
  });

  it('a FIFO, /dev/zero (by link) and a file of another size are refused at once, without saying its size', async () => {
    plant('mkfifo cookie');
    const t0 = Date.now();
    await expect(connect()).rejects.toThrow(/is not a 32-byte file of tor's own/);
    expect(Date.now() - t0).toBeLessThan(4_000);
    plant('ln -s /dev/zero cookie');
    await expect(connect()).rejects.toThrow(/symbolic link/);
    plant('head -c 777 /dev/zero > cookie');
    const e = await connect().catch((x: Error) => x);
    expect(e).toBeInstanceOf(Error);
    expect((e as Error).message).not.toMatch(/777/);
  });

  it('a 32-byte cookie of another owner (root) is refused and not sent', async () => {
    rmSync(join(dir, 'run', 'cookie'), { force: true });
    writeFileSync(join(dir, 'run', 'cookie'), targets.secret, { mode: 0o600 });
    received.length = 0;
    await expect(connect()).rejects.toThrow(/is not a 32-byte file of tor's own/);
    expect(received.join('\n')).not.toContain(targets.secret.toString('hex').toUpperCase());
  });

  it('a tor\'s own 32-byte cookie, but no SAFECOOKIE offered: refused before the cookie is read or sent', async () => {
    plant('head -c 32 /dev/urandom > cookie');
    methods = 'COOKIE';
    received.length = 0;
    try {
      await expect(connect()).rejects.toThrow(/no SAFECOOKIE/);
    } finally {
      methods = 'COOKIE,SAFECOOKIE';
    }
    expect(received.filter((l) => l.startsWith('AUTHENTICATE'))).toEqual([]);
    // With SAFECOOKIE, a tor that does not prove it knows the cookie gets no client hash either.
    received.length = 0;
    await expect(connect()).rejects.toThrow(/server hash does not match/);
    expect(received.filter((l) => l.startsWith('AUTHENTICATE'))).toEqual([]);
  });
});

describe('sockets tor connects to (onion service targets)', () => {
  let stateDir: string;
  let server: net.Server;
  let sock: string;
  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'mvt-tfd-'));
    const onions = join(stateDir, 'onions');
    await prepareTorSocketDir(stateDir, onions, { gid: TOR_USER.gid });
    sock = join(onions, 'svc.sock');
    server = net.createServer((c) => c.end('in the VM\n'));
    await new Promise<void>((r) => server.listen(sock, r));
    await shareTorSocket(sock, { gid: TOR_USER.gid });
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(stateDir, { recursive: true, force: true });
  });

  /** A client run as `who` (asynchronously: this process's server must answer it). */
  const connectAs = (who: { uid: number; gid: number }): Promise<{ status: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const js = 'require("net").connect(process.argv[1]).on("data",(d)=>process.stdout.write(d)).on("error",(e)=>{console.error(e.code);process.exit(3)})';
      const c = spawn('setpriv', ['--reuid', String(who.uid), '--regid', String(who.gid), '--clear-groups', process.execPath, '-e', js, sock], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      c.once('close', (status) => resolve({ status, stdout, stderr }));
    });

  it('tor\'s group connects; any other local user does not, and the state directory is not o+x', async () => {
    expect(statSync(sock)).toMatchObject({ uid: 0, gid: TOR_USER.gid });
    expect(statSync(sock).mode & 0o777).toBe(0o660);
    expect(statSync(stateDir).mode & 0o001).toBe(0);
    expect(await connectAs(TOR_USER)).toMatchObject({ status: 0, stdout: 'in the VM\n' });
    const other = await connectAs(NOBODY);
    expect(other.status).toBe(3);
    expect(other.stderr).toMatch(/EACCES/);
    expect(existsSync(sock)).toBe(true);
  });
});
