/**
 * `--fd N` passes the caller's own descriptor to the daemon (SCM_RIGHTS on `<control>.fd`,
 * claimed once by token), and `--netns PATH` opens only network namespace files. Tried the way
 * a hostile caller of the control socket would: naming the daemon's own descriptors by number,
 * replaying, guessing or outwaiting tokens, passing descriptors of the wrong kind, and pointing
 * `--netns` at a FIFO nobody writes to while another client waits for an answer.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, rawRpc, startDaemon, type CliResult, type Daemon } from '../support/daemon.js';
import { arpReplyFor, arpRequest, icmpEchoRequestFrame, isEchoReply, randomMac } from '../support/frames.js';
import { cleanupAll, createNetns, makeTempDir, run, uniqueName, withTimeout } from '../support/netns.js';
import { actAsHost, QemuFdPeer, type FramePeer } from '../support/qemu-peer.js';
import { attachTapVm, type TapVm } from '../support/vms.js';
import { loadNative } from '../../plugins/native/index.js';
import { fdSocketPath } from '../../plugins/fd/pass.js';

/** Runs the CLI with extra descriptors: `stdio[3..]` as given (a number is one of ours, shared). */
function cliWithFds(socket: string, args: readonly string[], extra: Array<'pipe' | number>): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn('node', [CLI_JS, '--socket', socket, ...args], { stdio: ['ignore', 'pipe', 'pipe', ...extra] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const done = withTimeout(
    new Promise<CliResult>((resolve) => child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }))),
    30_000,
    `mvnet ${args.join(' ')}`,
  );
  return { child, done };
}

/** The kernel descriptor number behind a Node stream socket or server (Node keeps it on the handle). */
function fdOf(s: net.Socket | net.Server): number {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('no descriptor on this socket');
  return fd;
}

/** Our descriptor of the UDP socket bound to 127.0.0.1:`port` (found by its inode in /proc). */
function udpFd(port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inode = fs
    .readFileSync('/proc/self/net/udp', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((f) => f[1] === local)?.[9];
  for (const n of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${n}`) === `socket:[${inode}]`) return Number(n);
    } catch {
      // closed meanwhile
    }
  }
  throw new Error(`no descriptor of the UDP socket on port ${port}`);
}

/** What each of the daemon's descriptors refers to (readlink of /proc/PID/fd/N). */
function daemonFds(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const n of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(Number(n), fs.readlinkSync(`/proc/${pid}/fd/${n}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** A connected pair of unix stream sockets in this process. */
async function streamPair(dir: string): Promise<{ a: net.Socket; b: net.Socket; close: () => void }> {
  const path = join(dir, `pair-${randomBytes(4).toString('hex')}.sock`);
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(path, r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const b = net.createConnection({ path });
  await new Promise<void>((r) => b.once('connect', r));
  const a = await accepted;
  server.close();
  return {
    a,
    b,
    close: () => {
      a.destroy();
      b.destroy();
    },
  };
}

function oneLine(r: CliResult): string {
  const lines = r.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

const token = (): string => randomBytes(16).toString('hex');

describe('--fd: the daemon uses only descriptors its caller passed (SCM_RIGHTS)', () => {
  let d: Daemon;
  let dir: string;
  let t1: TapVm;
  const native = loadNative();

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('fdp');
    await d.cliOk(['net', 'create', 'F', '--subnet', '10.77.9.0/24']);
    t1 = await attachTapVm(d, { vm: 't1', net: 'F', cidr: '10.77.9.11/24', prefix: 'fdp-t1' });
  });

  afterAll(cleanupAll);

  it('keeps its fd socket next to the control socket, a socket of mode 0660 owned like it', () => {
    const ctl = fs.lstatSync(d.socket);
    const st = fs.lstatSync(fdSocketPath(d.socket));
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
    expect([st.uid, st.gid]).toEqual([ctl.uid, ctl.gid]);
  });

  it("attaches the CLI's own fd 3 (a socketpair end) and carries QEMU-framed frames through the switch both ways", async () => {
    const { child, done } = cliWithFds(d.socket, ['--json', 'vm', 'attach', 'f1', '--net', 'F', '--fd', '3'], ['pipe']);
    // stdio 'pipe' is a socketpair: the CLI holds one end as its fd 3, we hold the other.
    const ours = child.stdio[3] as net.Socket;
    const r = await done;
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { port: { kind: string; state: string } }).port).toMatchObject({ kind: 'fd', state: 'up' });
    const peer: FramePeer = QemuFdPeer.adopt(ours);
    const me = { mac: randomMac(), ip: '10.77.9.21' };
    actAsHost(peer, me);
    peer.send(arpRequest({ srcMac: me.mac, srcIp: me.ip, targetIp: t1.ip }));
    const reply = await peer.frames.nextFrame((f) => arpReplyFor(f, t1.ip) !== undefined, 5_000);
    expect(arpReplyFor(reply, t1.ip)).toBe(t1.mac);
    peer.send(icmpEchoRequestFrame({ srcMac: me.mac, dstMac: t1.mac, srcIp: me.ip, dstIp: t1.ip, id: 0x4644, seq: 1 }));
    await peer.frames.nextFrame((f) => isEchoReply(f, { id: 0x4644, seq: 1, from: t1.ip }), 5_000);
    expect(await t1.ns.ping(me.ip, { count: 2 })).toBe(true);
  });

  it("refuses vm.attach naming a descriptor number (0..20 and the daemon's control listener): no daemon fd is ever used", async () => {
    const fds = daemonFds(d.pid);
    // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; flags 00010000 = listening.
    const ctlInode = fs
      .readFileSync('/proc/net/unix', 'utf8')
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .find((f) => f[3] === '00010000' && f[7] === d.socket)?.[6];
    const listener = [...fds].find(([, link]) => link === `socket:[${ctlInode}]`)?.[0];
    expect(listener, 'the control listener among the daemon fds').toBeTypeOf('number');
    for (const fd of new Set([...Array.from({ length: 21 }, (_, i) => i), listener!])) {
      const r = await rawRpc(d.socket, 'vm.attach', { name: `raw${fd}`, net: 'F', port: { kind: 'fd', fd } });
      expect(r.error?.message, `fd ${fd}`).toMatch(/^port\.fd is not accepted: pass the descriptor itself/);
    }
    const names = (await d.status()).vms.map((v) => v.name);
    expect(names.filter((n) => n.startsWith('raw'))).toEqual([]);
    // The listener is still the daemon's and still answers.
    expect(daemonFds(d.pid).get(listener!)).toBe(fds.get(listener!));
    expect((await rawRpc(d.socket, 'daemon.status', {})).result).toBeDefined();
  });

  it('refuses a token that was never sent', async () => {
    const r = await rawRpc(d.socket, 'vm.attach', { name: 'guess', net: 'F', port: { kind: 'fd', token: token() } });
    expect(r.error?.message).toMatch(/no descriptor is waiting under that token/);
  });

  it('takes a token once: a replay of a used token is refused', async () => {
    const pair = await streamPair(dir);
    const t = token();
    native.sendFd(fdSocketPath(d.socket), t, fdOf(pair.b));
    const first = await rawRpc(d.socket, 'vm.attach', { name: 'once', net: 'F', port: { kind: 'fd', token: t } });
    expect(first.error, JSON.stringify(first.error)).toBeUndefined();
    // Replayed once the first VM is gone, so nothing else stands in the way.
    await d.cliOk(['vm', 'detach', 'once']);
    const again = await rawRpc(d.socket, 'vm.attach', { name: 'twice', net: 'F', port: { kind: 'fd', token: t } });
    expect(again.error?.message).toMatch(/no descriptor is waiting under that token/);
    expect((await d.status()).vms.map((v) => v.name)).not.toContain('twice');
    pair.close();
  });

  it('closes the descriptor of a refused attach at once (here: the VM name is taken)', async () => {
    const { child, done } = cliWithFds(d.socket, ['vm', 'attach', 'f1', '--net', 'F', '--fd', '3'], ['pipe']);
    const ours = child.stdio[3] as net.Socket;
    const ended = new Promise<void>((r) => ours.once('end', r).resume());
    const r = await done;
    expect(r.code).not.toBe(0);
    expect(oneLine(r)).toMatch(/already attached/);
    // The CLI has exited; only the daemon could still hold the other end. It must not: EOF now,
    // well before the 10 s an unclaimed descriptor is kept.
    await withTimeout(ended, 3_000, 'EOF on our end (the daemon closed the passed end)');
    ours.destroy();
  });

  describe('descriptors of the wrong kind are refused, with one line, and closed', () => {
    /** Refused with one line; afterwards the daemon holds no more descriptors to `link` than before. */
    const refused = async (extra: number, re: RegExp, link: string): Promise<void> => {
      const count = (): number => [...daemonFds(d.pid).values()].filter((l) => l === link).length;
      const before = count();
      const vm = uniqueName('bad', 12);
      const { done } = cliWithFds(d.socket, ['vm', 'attach', vm, '--net', 'F', '--fd', '3'], [extra]);
      const r = await done;
      expect(r.code).not.toBe(0);
      const line = oneLine(r);
      expect(line).toMatch(re);
      expect(line).toMatch(/--fd takes a connected unix stream socket or a FIFO/);
      expect((await d.status()).vms.map((v) => v.name)).not.toContain(vm);
      expect(count()).toBe(before);
    };

    it('a regular file', async () => {
      const path = join(dir, 'regular');
      const fd = fs.openSync(path, 'w+');
      try {
        await refused(fd, /is a regular file/, path);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('a TAP descriptor', async () => {
      const ns = await createNetns('fdp-tap');
      const { fd } = native.openTun({ name: uniqueName('fdt'), tap: true, netns: `/run/netns/${ns.name}` });
      try {
        await refused(fd, /is a character device/, '/dev/net/tun');
      } finally {
        fs.closeSync(fd);
      }
    });

    it('a UDP socket', async () => {
      const s = dgram.createSocket('udp4');
      await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
      const fd = udpFd(s.address().port);
      try {
        await refused(fd, /is a UDP socket/, fs.readlinkSync(`/proc/self/fd/${fd}`));
      } finally {
        s.close();
      }
    });

    it('a listening unix socket', async () => {
      const server = net.createServer();
      await new Promise<void>((r) => server.listen(join(dir, 'listening.sock'), r));
      const fd = fdOf(server);
      try {
        await refused(fd, /is a listening unix socket/, fs.readlinkSync(`/proc/self/fd/${fd}`));
      } finally {
        server.close();
      }
    });
  });

  describe('raw senders (Python, not the CLI)', () => {
    // Each kept end `k` reads EOF once the daemon closed the last copy of its partner `g`.
    const MALFORMED = `
import json, socket, sys
path, two, none = sys.argv[1:4]
def pair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(path)
k1, g1 = pair(); k2, g2 = pair(); k3, g3 = pair()
socket.send_fds(s, [two.encode()], [g1.fileno(), g2.fileno()])
socket.send_fds(s, [b"not a token at all"], [g3.fileno()])
s.send(none.encode())
for g in (g1, g2, g3):
    g.close()
out = {}
for name, k in (("two-a", k1), ("two-b", k2), ("bad-token", k3)):
    k.settimeout(5)
    try:
        out[name] = "eof" if k.recv(1) == b"" else "data"
    except socket.timeout:
        out[name] = "open"
print(json.dumps(out))
`;

    it('closes every descriptor of a message that is not one token with one descriptor, and says why at attach', async () => {
      const two = token();
      const none = token();
      const r = await run(['python3', '-c', MALFORMED, fdSocketPath(d.socket), two, none]);
      expect(JSON.parse(r.stdout)).toEqual({ 'two-a': 'eof', 'two-b': 'eof', 'bad-token': 'eof' });
      const a = await rawRpc(d.socket, 'vm.attach', { name: 'r-two', net: 'F', port: { kind: 'fd', token: two } });
      expect(a.error?.message).toMatch(/more than one descriptor came with the token/);
      const b = await rawRpc(d.socket, 'vm.attach', { name: 'r-none', net: 'F', port: { kind: 'fd', token: none } });
      expect(b.error?.message).toMatch(/no descriptor came with the token/);
    });

    const FLOOD = `
import json, os, socket, sys
path, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(path)
kept = []
for i in range(n):
    k, g = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    socket.send_fds(s, [os.urandom(16).hex().encode()], [g.fileno()])
    g.close()
    kept.append(k)
def state(k, t):
    k.settimeout(t)
    try:
        return "eof" if k.recv(1) == b"" else "data"
    except socket.timeout:
        return "open"
print(json.dumps({"oldest": state(kept[0], 5), "newest": state(kept[-1], 0.5)}))
`;

    it('holds at most 64 unclaimed descriptors: a flood closes the oldest, not the daemon', async () => {
      const r = await run(['python3', '-c', FLOOD, fdSocketPath(d.socket), '80']);
      expect(JSON.parse(r.stdout)).toEqual({ oldest: 'eof', newest: 'open' });
      expect((await rawRpc(d.socket, 'daemon.status', {})).result).toBeDefined();
    });
  });

  it('a passed descriptor does not survive a restart: the VM is listed down, saying so', async () => {
    await d.restart();
    const v = await d.vm('f1');
    expect(v.port.state).toBe('down');
    expect(v.port.detail).toMatch(/does not survive a daemon restart/);
  });
});

describe('--fd: an unclaimed descriptor expires and is closed', () => {
  afterAll(cleanupAll);

  it('closes it after limits.fdTokenMs and refuses its token afterwards', async () => {
    const dir = makeTempDir('fdx');
    const config = join(dir, 'config.json');
    fs.writeFileSync(config, JSON.stringify({ limits: { fdTokenMs: 300 } }));
    const d = await startDaemon({ config });
    await d.cliOk(['net', 'create', 'X', '--subnet', '10.77.10.0/24']);
    const pair = await streamPair(dir);
    const ended = new Promise<void>((r) => pair.a.once('end', r).resume());
    const t = token();
    loadNative().sendFd(fdSocketPath(d.socket), t, fdOf(pair.b));
    // Our copy goes; the daemon's is the last one, so EOF on `a` means the daemon closed it.
    pair.b.destroy();
    await d.waitForLog((l) => l.msg === 'a passed descriptor was not claimed in time; closed it', 10_000);
    await withTimeout(ended, 5_000, 'EOF once the daemon closed the expired descriptor');
    const r = await rawRpc(d.socket, 'vm.attach', { name: 'late', net: 'X', port: { kind: 'fd', token: t } });
    expect(r.error?.message).toMatch(/no descriptor is waiting under that token/);
    pair.close();
  });
});

describe("the fd socket's path: a dead socket is replaced, a live socket or a file never", () => {
  afterAll(cleanupAll);

  const daemonArgs = (dir: string): string[] => ['node', CLI_JS, 'daemon', '--state-dir', join(dir, 'st'), '--socket', join(dir, 'mvnet.sock')];

  it('refuses to start when a live socket is at <control>.fd, and leaves that socket working', async () => {
    const dir = makeTempDir('fdl');
    const path = fdSocketPath(join(dir, 'mvnet.sock'));
    const server = net.createServer((c) => c.end('still here'));
    await new Promise<void>((r) => server.listen(path, r));
    try {
      const r = await run(daemonArgs(dir), { check: false, timeoutMs: 20_000 });
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim()).toBe(`mvnet: ${path} is a live socket (another daemon's?); not replacing it`);
      const c = net.createConnection({ path });
      const got = await withTimeout(new Promise<string>((res) => c.setEncoding('utf8').once('data', res)), 5_000, 'the live socket to answer');
      expect(got).toBe('still here');
      c.destroy();
    } finally {
      server.close();
    }
  });

  it('refuses to start when a file is at <control>.fd, and leaves it', async () => {
    const dir = makeTempDir('fdf');
    const path = fdSocketPath(join(dir, 'mvnet.sock'));
    fs.writeFileSync(path, 'keep me');
    const r = await run(daemonArgs(dir), { check: false, timeoutMs: 20_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim()).toBe(`mvnet: ${path} exists and is not a socket; not replacing it`);
    expect(fs.readFileSync(path, 'utf8')).toBe('keep me');
  });

  it('replaces a dead socket left by a killed daemon', async () => {
    const dir = makeTempDir('fdd');
    const socket = join(dir, 'mvnet.sock');
    const d = await startDaemon({ stateDir: join(dir, 'st'), socket });
    await d.kill('SIGKILL');
    expect(fs.lstatSync(fdSocketPath(socket)).isSocket()).toBe(true);
    // Binding over a file fails, so a start that works and takes a descriptor replaced it.
    await d.start();
    await d.cliOk(['net', 'create', 'D', '--subnet', '10.77.12.0/24']);
    const { child, done } = cliWithFds(socket, ['vm', 'attach', 'd1', '--net', 'D', '--fd', '3'], ['pipe']);
    const r = await done;
    expect(r.code, r.stderr).toBe(0);
    (child.stdio[3] as net.Socket).destroy();
  });
});

describe('--netns: only a network namespace file, opened without ever blocking', () => {
  let d: Daemon;
  let dir: string;

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('nsf');
    await d.cliOk(['net', 'create', 'N', '--subnet', '10.77.11.0/24']);
  });

  afterAll(cleanupAll);

  const cases: [string, () => string, RegExp][] = [
    ['a FIFO nobody writes to', () => {
      const p = join(dir, 'fifo');
      fs.rmSync(p, { force: true });
      execFileSync('mkfifo', [p]);
      return p;
    }, /is not a network namespace \(a FIFO\)/],
    ['a regular file', () => {
      const p = join(dir, 'file');
      fs.writeFileSync(p, 'x');
      return p;
    }, /is not a network namespace \(a regular file\)/],
    ['a directory', () => dir, /is not a network namespace \(a directory\)/],
    ['/dev/null', () => '/dev/null', /is not a network namespace \(a character device\)/],
    ['a mount namespace (nsfs, the wrong type)', () => '/proc/self/ns/mnt', /is a namespace, but not a network namespace/],
  ];

  for (const [what, make, re] of cases) {
    it(`refuses ${what} at once, while another client is answered`, async () => {
      const path = make();
      const ifname = uniqueName('nsf');
      // Both at once: a daemon stuck opening the path would answer neither.
      const [attach, status] = await Promise.all([
        d.cli(['vm', 'attach', uniqueName('v', 12), '--net', 'N', '--tap', ifname, '--netns', path], { timeoutMs: 10_000 }),
        d.cli(['status'], { timeoutMs: 10_000 }),
      ]);
      expect(status.code, status.stderr).toBe(0);
      expect(attach.code).not.toBe(0);
      expect(oneLine(attach)).toMatch(re);
      expect((await run(['ip', 'link', 'show', ifname], { check: false })).code).not.toBe(0);
    });
  }

  it('still attaches in a real network namespace given by path', async () => {
    const ns = await createNetns('nsf-ok');
    const ifname = uniqueName('nsf');
    await d.cliOk(['vm', 'attach', 'ok', '--net', 'N', '--tap', ifname, '--netns', `/run/netns/${ns.name}`]);
    await ns.waitForLink(ifname);
    await d.cliOk(['vm', 'detach', 'ok']);
  });
});
