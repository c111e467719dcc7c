/**
 * The daemon as a service, without systemd: the sd_notify protocol as systemd's Type=notify
 * reads it (a unix datagram socket this test listens on, a path and an abstract name), the
 * capabilities it keeps after start (/proc/PID/status of the real daemon), its logs for people
 * on a terminal (a pty from `script`) and JSON for everything else, and the refusals that used
 * to mislead (`--state-dir` on a file, a --socket or --unix in a directory that does not exist).
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_JS, rawRpc, refused, runCli, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, createNetns, makeTempDir, randomSuffix, run, spawnProcess, type ManagedProcess } from '../support/netns.js';

afterAll(cleanupAll);

/** A unix datagram socket that prints every datagram it gets as one JSON string per line. */
function notifyListener(address: string): ManagedProcess {
  const py = [
    'import socket, sys, json',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
    `a = ${JSON.stringify(address)}`,
    "s.bind('\\0' + a[1:] if a.startswith('@') else a)",
    "print('bound', flush=True)",
    'while True:',
    '    print(json.dumps(s.recv(4096).decode()), flush=True)',
  ].join('\n');
  return spawnProcess(['python3', '-c', py], { label: `notify listener ${address}` });
}

/** Datagrams received so far, as key=value maps. */
function messages(p: ManagedProcess): Record<string, string>[] {
  return p.lines
    .filter((l) => l.startsWith('"'))
    .map((l) => Object.fromEntries((JSON.parse(l) as string).split('\n').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])));
}

/** Resolves with the first datagram holding `key=value`, and the index of it. */
async function waitMessage(p: ManagedProcess, key: string, value: string, from = 0): Promise<{ msg: Record<string, string>; index: number }> {
  await p.waitForLine((l) => l.startsWith('"') && (JSON.parse(l) as string).split('\n').includes(`${key}=${value}`), { timeoutMs: 20_000, fromIndex: from + 1 });
  const all = messages(p);
  const index = all.findIndex((m, i) => i >= from && m[key] === value);
  return { msg: all[index]!, index };
}

describe('sd_notify (Type=notify)', () => {
  for (const kind of ['path', 'abstract'] as const) {
    it(`READY=1 once the control socket accepts, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM (${kind} address)`, async () => {
      const dir = makeTempDir('sdn');
      const address = kind === 'path' ? join(dir, 'notify') : `@mvnet-test-notify-${process.pid}-${randomSuffix()}`;
      const listener = notifyListener(address);
      await listener.waitForLine((l) => l === 'bound');
      let acceptedAtReady: boolean | undefined;
      const stateDir = makeTempDir('sdd');
      const socket = join(stateDir, 'mvnet.sock');
      // The moment READY=1 arrives, the control socket must answer.
      const off = listener.onLine((l) => {
        if (acceptedAtReady === undefined && l.startsWith('"') && (JSON.parse(l) as string).includes('READY=1')) {
          acceptedAtReady = false;
          rawRpc(socket, 'status', {}, 5000).then(
            (r) => (acceptedAtReady = r.result !== undefined || r.error !== undefined),
            () => (acceptedAtReady = false),
          );
        }
      });
      const d = await startDaemon({ stateDir, socket, env: { ...process.env, NOTIFY_SOCKET: address } });
      const ready = await waitMessage(listener, 'READY', '1');
      off();
      await expect.poll(() => acceptedAtReady, { timeout: 5000 }).toBe(true);
      expect(ready.msg.STATUS).toContain('routing');
      expect(ready.msg.MAINPID).toBe(String(d.pid));
      // Progress came before it, nothing said READY earlier.
      const before = messages(listener).slice(0, ready.index);
      expect(before.map((m) => m.STATUS)).toEqual(['starting', 'restoring networks and VMs']);

      d.process.signal('SIGHUP');
      const reloading = await waitMessage(listener, 'RELOADING', '1', ready.index);
      const now = process.hrtime.bigint() / 1000n;
      const mono = BigInt(reloading.msg.MONOTONIC_USEC ?? '0');
      // CLOCK_MONOTONIC in microseconds, taken moments ago (this process reads the same clock).
      expect(mono).toBeLessThanOrEqual(now);
      expect(now - mono).toBeLessThan(10_000_000n);
      const readyAgain = await waitMessage(listener, 'READY', '1', reloading.index);
      expect(readyAgain.index).toBe(reloading.index + 1);

      await d.kill('SIGTERM');
      const stopping = await waitMessage(listener, 'STOPPING', '1', readyAgain.index);
      expect(stopping.msg.STATUS).toBe('stopping (SIGTERM)');
      await listener.stop('SIGTERM', 2000);
    });
  }
});

describe('sd_notify never blocks the daemon', () => {
  it("a notify socket whose queue is full (systemd busy): the start goes on, each dropped notice is logged", async () => {
    const path = join(makeTempDir('sdq'), 'notify');
    // Bound and never read; filled by the test until the kernel says EAGAIN.
    const py = [
      'import socket, signal',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
      `s.bind(${JSON.stringify(path)})`,
      'f = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
      'f.setblocking(False)',
      'n = 0',
      'while True:',
      '    try:',
      `        f.sendto(b'X=1', ${JSON.stringify(path)})`,
      '        n += 1',
      '    except BlockingIOError:',
      '        break',
      "print('full', n, flush=True)",
      'signal.pause()',
    ].join('\n');
    const full = spawnProcess(['python3', '-c', py], { label: 'full notify socket' });
    await full.waitForLine((l) => l.startsWith('full '));
    // A blocking sendto would hang the start before the control socket listens.
    const d = await startDaemon({ env: { ...process.env, NOTIFY_SOCKET: path } });
    expect((await d.status()).daemon.pid).toBe(d.pid);
    const dropped = d.logs.filter((l) => l.msg === "sd_notify dropped: the service manager's queue is full");
    expect(dropped.length).toBeGreaterThanOrEqual(1);
    expect(dropped[0]!.level).toBe(40);
    await d.stop();
    await full.stop('SIGTERM', 2000);
  });
});

/** Capability sets of every thread of `pid`: [tid, CapEff, CapBnd, blocks all signals]. */
function threadCaps(pid: number): { tid: string; eff: bigint; bnd: bigint; blocksAll: boolean }[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const s = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const hex = (k: string): bigint => BigInt('0x' + new RegExp(`^${k}:\\s*([0-9a-f]+)`, 'm').exec(s)![1]!);
    // SIGRTMIN+4 (the signal the addon uses) blocked: glibc's SIGRTMIN is 34, so bit 37.
    return { tid, eff: hex('CapEff'), bnd: hex('CapBnd'), blocksAll: ((hex('SigBlk') >> 37n) & 1n) === 1n };
  });
}

const CAP = { NET_ADMIN: 12n, SYS_MODULE: 16n, SYS_RAWIO: 17n, SYS_PTRACE: 19n, SYS_ADMIN: 21n };
const has = (mask: bigint, cap: bigint): boolean => ((mask >> cap) & 1n) === 1n;

describe('capabilities after start (as root)', () => {
  let d: Daemon;

  it('the running daemon lacks CAP_SYS_MODULE and CAP_SYS_RAWIO and keeps CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_SYS_PTRACE, in every thread that takes signals', async () => {
    expect(process.geteuid?.()).toBe(0);
    const mine = threadCaps(process.pid)[0]!;
    // The test itself has them, so the daemon had them at start.
    expect(has(mine.eff, CAP.SYS_RAWIO)).toBe(true);
    d = await startDaemon();
    const line = d.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('capabilities dropped'));
    expect(line?.dropped).toEqual(expect.arrayContaining(['CAP_SYS_MODULE', 'CAP_SYS_RAWIO']));
    expect(line?.dropped).not.toContain('CAP_SYS_PTRACE');
    const threads = threadCaps(d.pid);
    const changed = threads.filter((t) => !t.blocksAll);
    expect(changed.length).toBeGreaterThan(1);
    for (const t of changed) {
      for (const mask of [t.eff, t.bnd]) {
        expect(has(mask, CAP.SYS_MODULE), `thread ${t.tid}`).toBe(false);
        expect(has(mask, CAP.SYS_RAWIO), `thread ${t.tid}`).toBe(false);
        expect(has(mask, CAP.NET_ADMIN), `thread ${t.tid}`).toBe(true);
        expect(has(mask, CAP.SYS_ADMIN), `thread ${t.tid}`).toBe(true);
        expect(has(mask, CAP.SYS_PTRACE), `thread ${t.tid}`).toBe(true);
      }
    }
    // What could not be changed is said: at most Node's SIGUSR1 watcher.
    expect(Number(line?.unchanged ?? 0)).toBe(threads.length - changed.length);
    expect(line?.level).toBe(30);
    expect(line?.failed).toBeUndefined();
  });

  it('still creates a TAP inside a namespace afterwards (TUNSETIFF and setns need what it kept)', async () => {
    const ns = await createNetns('cap');
    await d.cliOk(['net', 'create', 'A', '--subnet', '10.77.90.0/24']);
    await d.cliOk(['vm', 'attach', 'c1', '--net', 'A', '--tap', 'captap0', '--netns', ns.name]);
    const r = await run(['ip', '-n', ns.name, 'link', 'show', 'captap0'], { check: false });
    expect(r.code).toBe(0);
    await d.cliOk(['vm', 'detach', 'c1']);
  });

  it("attaches a TAP in the namespace of another user's process (QEMU as libvirt-qemu, a rootless container) by /proc/PID/ns/net", async () => {
    // A process as nobody in a namespace of its own: opening its ns/net is a ptrace-mode access
    // check, which root passes only with CAP_SYS_PTRACE (EACCES without it).
    const holder = spawnProcess(['unshare', '--net', '--', 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--', 'sh', '-c', 'echo ready; exec sleep 600'], {
      label: 'netns holder as nobody',
    });
    await holder.waitForLine((l) => l === 'ready', { timeoutMs: 10_000 });
    const pid = holder.child.pid!;
    expect(readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(/^Uid:\s+65534\s/m);
    await d.cliOk(['vm', 'attach', 'c2', '--net', 'A', '--tap', 'captap1', '--netns', `/proc/${pid}/ns/net`]);
    const r = await run(['nsenter', `--net=/proc/${pid}/ns/net`, 'ip', 'link', 'show', 'captap1'], { check: false });
    expect(r.code).toBe(0);
    await d.cliOk(['vm', 'detach', 'c2']);
    await holder.stop('SIGTERM', 2000);
  });

  it('--keep-caps, or config keepCaps, keeps them', async () => {
    const cfg = join(makeTempDir('kc'), 'mvnet.json');
    writeFileSync(cfg, JSON.stringify({ keepCaps: true }));
    for (const opts of [{ extraArgs: ['--keep-caps'] }, { config: cfg }]) {
      const k = await startDaemon(opts);
      expect(has(threadCaps(k.pid)[0]!.eff, CAP.SYS_RAWIO)).toBe(true);
      expect(k.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('capabilities dropped'))).toBe(false);
      await k.stop();
    }
  });
});

describe('logs', () => {
  const args = (dir: string): string[] => [CLI_JS, 'daemon', '--state-dir', dir, '--socket', join(dir, 'mvnet.sock')];

  async function firstLines(cmd: string[], until: RegExp): Promise<string[]> {
    const p = spawnProcess(cmd, { label: cmd.join(' ') });
    await p.waitForLine((l) => until.test(l), { timeoutMs: 20_000 });
    await p.stop('SIGTERM', 5000);
    return p.lines.map((l) => l.replace(/\r$/, ''));
  }

  it('JSON when stdout is not a terminal (a pipe)', async () => {
    const lines = await firstLines(['node', ...args(makeTempDir('lg'))], /"msg":"ready"/);
    for (const l of lines.slice(0, 3)) expect(() => JSON.parse(l) as unknown).not.toThrow();
  });

  it('one readable line per record on a terminal (a pty from script), with the fields as key=value', async () => {
    const dir = makeTempDir('lg');
    const cmd = ['node', ...args(dir)].map((a) => `'${a}'`).join(' ');
    const lines = await firstLines(['script', '-qfec', cmd, '/dev/null'], /ready/);
    const ready = lines.find((l) => / ready /.test(l))!;
    // 12:34:56.789 INFO ready  socket=… stateDir=…  (the level coloured on a terminal)
    const ESC = String.fromCharCode(27);
    expect(ready.replaceAll(`${ESC}[32m`, '').replaceAll(`${ESC}[0m`, '')).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}ready {2}socket=\S+ stateDir=\S+/);
    expect(ready).toContain(`stateDir=${dir}`);
    expect(() => JSON.parse(ready) as unknown).toThrow();
  });

  it('--log-format json on a terminal, --log-format pretty into a pipe (no colour there)', async () => {
    const dir = makeTempDir('lg');
    const cmd = ['node', ...args(dir), '--log-format', 'json'].map((a) => `'${a}'`).join(' ');
    const onTty = await firstLines(['script', '-qfec', cmd, '/dev/null'], /"msg":"ready"/);
    expect(JSON.parse(onTty.find((l) => l.includes('"ready"'))!)).toMatchObject({ msg: 'ready', level: 30 });
    const piped = await firstLines(['node', ...args(makeTempDir('lg')), '--log-format', 'pretty'], / ready /);
    expect(piped.find((l) => / ready /.test(l))).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}ready /);
    const bad = await runCli(undefined, ['daemon', '--state-dir', makeTempDir('lg'), '--log-format', 'xml']);
    refused(bad, "option '--log-format <format>' argument 'xml' is invalid. Allowed choices are json, pretty.");
    expect(bad.code).toBe(2);
    const level = await runCli(undefined, ['daemon', '--state-dir', makeTempDir('lg'), '--log-level', 'loud']);
    refused(level, "option '--log-level <level>' argument 'loud' is invalid");
    expect(level.code).toBe(2);
  });
});

describe('refusals that say what is wrong', () => {
  let d: Daemon;
  const tmp = makeTempDir('mis');

  it('the CLI with a --socket in a directory that does not exist', async () => {
    const r = await runCli('/no/such/dir/mvnet.sock', ['vm', 'list']);
    refused(r, 'no daemon socket at /no/such/dir/mvnet.sock: the directory /no/such/dir does not exist');
    // Not reachable, as for a missing socket: a fresh machine has no /run/mvnet until the daemon first starts.
    expect(r.code).toBe(3);
  });

  it('--state-dir on a file, or under one', async () => {
    refused(await runCli(undefined, ['daemon', '--state-dir', '/etc/hostname', '--socket', join(tmp, 'a.sock')]), '--state-dir /etc/hostname is not a directory');
    refused(await runCli(undefined, ['daemon', '--state-dir', '/etc/hostname/x', '--socket', join(tmp, 'b.sock')]), '--state-dir /etc/hostname/x: /etc/hostname is not a directory');
  });

  it('a --socket whose directory has no parent', async () => {
    const r = await runCli(undefined, ['daemon', '--state-dir', join(tmp, 's'), '--socket', `/no-such-${randomSuffix()}/dir/x.sock`]);
    refused(r, /^mvnet: --socket \/no-such-\w+\/dir\/x\.sock: directory \/no-such-\w+ does not exist$/);
  });

  it('vm attach --unix-listen / --unix in a directory that does not exist, --fd of a closed descriptor', async () => {
    d = await startDaemon();
    await d.cliOk(['net', 'create', 'A', '--subnet', '10.77.91.0/24']);
    refused(await d.cli(['vm', 'attach', 'v1', '--net', 'A', '--unix-listen', '/no/such/dir/x.sock']), 'socket directory /no/such/dir does not exist');
    refused(await d.cli(['vm', 'attach', 'v2', '--net', 'A', '--unix', '/no/such/dir/x.sock']), '--unix /no/such/dir/x.sock: directory /no/such/dir does not exist');
    refused(await d.cli(['vm', 'attach', 'v3', '--net', 'A', '--unix', '/etc/hostname/x.sock']), '--unix /etc/hostname/x.sock: /etc/hostname is not a directory');
    const fd = await d.cli(['vm', 'attach', 'v4', '--net', 'A', '--fd', '20']);
    refused(fd, '--fd 20: fd 20 is not open in this process');
    expect(fd.code).toBe(2);
    refused(await d.cli(['vm', 'attach', 'v5', '--net', 'A', '--tap', 'abcdefghijklmnopqrstu']), 'tap interface name "abcdefghijklmnopqrstu" is 21 characters long; Linux allows at most 15');
    // None of them was attached.
    expect(await d.cliJson<unknown[]>(['vm', 'list'])).toEqual([]);
  });
});
