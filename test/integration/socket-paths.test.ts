/**
 * A caller of the control socket names the paths of `--unix-listen`, `--dgram`, `--dgram-peer`
 * and `--fifo`; the daemon runs as root. These tests attack that the way a hostile caller would:
 * the daemon's own control socket or another service's live socket as PATH, symlinks (to a
 * socket, a file, /etc), world-writable and foreign-owned directories, a socket swapped behind
 * the daemon's back before detach, odd files as a peer or FIFO, and a FIFO nobody writes to.
 * Every refusal is one line and a non-zero exit; whatever was at the path is left as it was.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../plugins/native/index.js';
import { createSocketAt } from '../../plugins/common/socket-path.js';
import { startDaemon, type CliResult, type Daemon } from '../support/daemon.js';
import { cleanupAll, makeTempDir, randomSuffix, registerCleanup, run, waitFor } from '../support/netns.js';
import { QemuStreamClient } from '../support/qemu-peer.js';

/** The CLI failed with exactly one line that matches `re`. */
function refused(r: CliResult, re: RegExp): void {
  expect(r.code, `expected a refusal, got exit 0: ${r.stdout}`).not.toBe(0);
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(re);
}

/** A live stream listener of the test's own (another service). */
async function listenAt(path: string): Promise<net.Server> {
  const s = net.createServer((c) => c.end());
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen({ path }, () => resolve());
  });
  registerCleanup(`server ${path}`, async () => void (await new Promise<void>((r) => s.close(() => r()))), () => s.close());
  return s;
}

/** True when a stream connect to `path` succeeds. */
function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.createConnection({ path });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** A socket file nobody is bound to any more (as a crashed daemon leaves it). */
function staleSocket(path: string): void {
  const { fd } = native.openUnixDgram({ path });
  fs.closeSync(fd);
}

async function mkfifo(p: string): Promise<void> {
  await run(['mkfifo', '-m', '0600', p]);
}

function snapshot(p: string): { ino: number; mode: number; uid: number; gid: number; mtimeMs: number; size: number } {
  const st = fs.lstatSync(p);
  return { ino: st.ino, mode: st.mode, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs, size: st.size };
}

describe('paths a control-socket caller gives for VM sockets and FIFOs', () => {
  let d: Daemon;
  /** A private (0700, root) directory: accepted for absolute paths. */
  let dir: string;
  let n = 0;
  const vm = (): string => `v${++n}`;
  const attach = (args: string[]): Promise<CliResult> => d.cli(['vm', 'attach', vm(), '--net', 'P', ...args]);

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('paths');
    await d.cliOk(['net', 'create', 'P', '--subnet', '10.77.9.0/24']);
  });

  afterAll(cleanupAll);

  describe('never a live socket', () => {
    for (const opt of ['--unix-listen', '--dgram']) {
      it(`${opt}: the daemon's own control socket is refused and keeps answering`, async () => {
        const before = snapshot(d.socket);
        refused(await attach([opt, d.socket]), /live socket/);
        expect(snapshot(d.socket)).toEqual(before);
        expect((await d.status()).networks.map((x) => x.name)).toContain('P');
      });

      it(`${opt}: another service's listening socket is refused and still accepts`, async () => {
        const p = join(dir, `svc-${randomSuffix()}.sock`);
        await listenAt(p);
        const before = snapshot(p);
        refused(await attach([opt, p]), /live socket/);
        expect(snapshot(p)).toEqual(before);
        expect(await accepts(p)).toBe(true);
      });
    }

    it("--dgram: another service's bound datagram socket is refused and stays bound", async () => {
      const p = join(dir, `dsvc-${randomSuffix()}.sock`);
      const { fd } = native.openUnixDgram({ path: p });
      registerCleanup(`dgram ${p}`, async () => fs.closeSync(fd), () => fs.closeSync(fd));
      const before = snapshot(p);
      refused(await attach(['--dgram', p]), /live socket/);
      expect(snapshot(p)).toEqual(before);
    });

    for (const opt of ['--unix-listen', '--dgram']) {
      it(`${opt}: a stale socket (nobody bound) is replaced, and detach removes the new one`, async () => {
        const p = join(dir, `stale-${randomSuffix()}.sock`);
        staleSocket(p);
        const name = vm();
        await d.cliOk(['vm', 'attach', name, '--net', 'P', opt, p]);
        const now = fs.lstatSync(p);
        expect(now.isSocket()).toBe(true);
        expect(now.mode & 0o777).toBe(0o660);
        if (opt === '--unix-listen') {
          const peer = await QemuStreamClient.connect(p);
          await waitFor(async () => (await d.vm(name)).port.state === 'up', { what: `${name} up` });
          await peer.close();
        }
        await d.cliOk(['vm', 'detach', name]);
        expect(fs.existsSync(p)).toBe(false);
        // The private directory the socket was made in is gone too.
        expect(fs.readdirSync(dir).filter((f) => f.startsWith('.mvnet-'))).toEqual([]);
      });
    }
  });

  describe('never through a symlink', () => {
    let sock: string;
    let file: string;
    let targets: [string, string][];
    beforeAll(async () => {
      sock = join(dir, 'target.sock');
      await listenAt(sock);
      file = join(dir, 'target.txt');
      fs.writeFileSync(file, 'keep me\n', { mode: 0o600 });
      const stale = join(dir, 'stale-target.sock');
      staleSocket(stale);
      targets = [
        ['a live socket', sock],
        ['a stale socket', stale],
        ['a regular file', file],
        ['/etc/hostname', '/etc/hostname'],
        ['a missing file in /etc', `/etc/mvnet-test-${randomSuffix()}`],
      ];
    });

    for (const opt of ['--unix-listen', '--dgram']) {
      it(`${opt}: a symlink at PATH is refused, whatever it points to, and the target is untouched`, async () => {
        for (const [what, target] of targets) {
          const link = join(dir, `link-${randomSuffix()}.sock`);
          fs.symlinkSync(target, link);
          const before = fs.existsSync(target) ? snapshot(target) : null;
          refused(await attach([opt, link]), /symlink/);
          expect(fs.lstatSync(link).isSymbolicLink(), what).toBe(true);
          expect(fs.readlinkSync(link), what).toBe(target);
          if (before === null) expect(fs.existsSync(target), what).toBe(false);
          else expect(snapshot(target), what).toEqual(before);
        }
        expect(fs.readFileSync(file, 'utf8')).toBe('keep me\n');
        expect(await accepts(sock)).toBe(true);
      });
    }

    it('a symlinked directory is resolved and held to the directory rule: a link to /tmp is refused', async () => {
      const link = join(dir, `dirlink-${randomSuffix()}`);
      fs.symlinkSync(os.tmpdir(), link);
      const name = `x-${randomSuffix()}.sock`;
      refused(await attach(['--unix-listen', join(link, name)]), /writable by everyone/);
      expect(fs.existsSync(join(os.tmpdir(), name))).toBe(false);
    });
  });

  describe('only in directories root and the socket group alone can write', () => {
    it('a path directly in a world-writable directory (/tmp) is refused and nothing is created', async () => {
      for (const opt of ['--unix-listen', '--dgram']) {
        const p = join(os.tmpdir(), `mvnet-h5-${randomSuffix()}.sock`);
        refused(await attach([opt, p]), /writable by everyone/);
        expect(fs.existsSync(p)).toBe(false);
      }
    });

    it('a world-writable directory even inside a private one is refused', async () => {
      const w = join(dir, `ww-${randomSuffix()}`);
      fs.mkdirSync(w);
      fs.chmodSync(w, 0o777);
      refused(await attach(['--unix-listen', join(w, 'a.sock')]), /writable by everyone/);
      expect(fs.readdirSync(w)).toEqual([]);
    });

    it("a directory owned by another user, or writable by another group, is refused", async () => {
      const u = join(dir, `user-${randomSuffix()}`);
      fs.mkdirSync(u, { mode: 0o755 });
      fs.chownSync(u, 65534, 65534);
      refused(await attach(['--unix-listen', join(u, 'a.sock')]), /owned by uid 65534/);
      const g = join(dir, `group-${randomSuffix()}`);
      fs.mkdirSync(g);
      fs.chmodSync(g, 0o770);
      fs.chownSync(g, 0, 4343);
      refused(await attach(['--dgram', join(g, 'a.sock')]), /writable by group 4343/);
      expect(fs.readdirSync(u)).toEqual([]);
      expect(fs.readdirSync(g)).toEqual([]);
    });

    it('a parent directory another user owns is refused (it could swap the directory)', async () => {
      const u = join(dir, `puser-${randomSuffix()}`);
      fs.mkdirSync(join(u, 'sub'), { recursive: true, mode: 0o755 });
      fs.chownSync(u, 65534, 65534);
      refused(await attach(['--unix-listen', join(u, 'sub', 'a.sock')]), /owned by uid 65534/);
    });
  });

  describe('a home for VM sockets', () => {
    const vmDir = (): string => join(d.stateDir, 'vms');

    it('the VM socket directory is next to the control socket, mode 0750, root-owned', () => {
      const st = fs.lstatSync(vmDir());
      expect(st.isDirectory()).toBe(true);
      expect(st.mode & 0o7777).toBe(0o750);
      expect(st.uid).toBe(0);
    });

    for (const opt of ['--unix-listen', '--dgram']) {
      it(`${opt} NAME: a bare name is created there (0660), and a client reaches it`, async () => {
        const name = vm();
        const file = `${name}-x.sock`;
        const r = await d.cliJson<{ port: { path: string } }>(['vm', 'attach', name, '--net', 'P', opt, file]);
        const p = join(vmDir(), file);
        expect(r.port.path).toBe(p);
        const st = fs.lstatSync(p);
        expect(st.isSocket()).toBe(true);
        expect(st.mode & 0o777).toBe(0o660);
        expect(st.uid).toBe(0);
        if (opt === '--unix-listen') {
          const peer = await QemuStreamClient.connect(p);
          await waitFor(async () => (await d.vm(name)).port.state === 'up', { what: `${name} up` });
          await peer.close();
        }
        await d.cliOk(['vm', 'detach', name]);
        expect(fs.existsSync(p)).toBe(false);
      });

      it(`${opt} without a path: named after the VM`, async () => {
        const name = vm();
        const r = await d.cliJson<{ port: { path: string } }>(['vm', 'attach', name, '--net', 'P', opt]);
        expect(r.port.path).toBe(join(vmDir(), `${name}.sock`));
        expect(fs.lstatSync(r.port.path).isSocket()).toBe(true);
        await d.cliOk(['vm', 'detach', name]);
      });
    }

    it('a relative path that is not a plain name is refused', async () => {
      for (const bad of ['../escape.sock', 'sub/a.sock', '.hidden.sock']) {
        refused(await attach(['--unix-listen', bad]), /plain file name/);
      }
      expect(fs.existsSync(join(d.stateDir, 'escape.sock'))).toBe(false);
    });
  });

  describe('detach removes only the socket mvnet made', () => {
    for (const opt of ['--unix-listen', '--dgram']) {
      it(`${opt}: a socket someone put in its place is left alone`, async () => {
        const name = vm();
        const p = join(dir, `swap-${randomSuffix()}.sock`);
        await d.cliOk(['vm', 'attach', name, '--net', 'P', opt, p]);
        fs.rmSync(p);
        await listenAt(p);
        const theirs = snapshot(p);
        await d.cliOk(['vm', 'detach', name]);
        expect(snapshot(p)).toEqual(theirs);
        expect(await accepts(p)).toBe(true);
      });
    }
  });

  describe('--dgram-peer must be a socket', () => {
    it('a regular file, a FIFO or a symlink is refused; a missing one (QEMU not started yet) is fine', async () => {
      const f = join(dir, `peer-${randomSuffix()}.txt`);
      fs.writeFileSync(f, '');
      const fifo = join(dir, `peer-${randomSuffix()}.fifo`);
      await mkfifo(fifo);
      const link = join(dir, `peer-${randomSuffix()}.sock`);
      fs.symlinkSync(join(dir, 'target.sock'), link);
      refused(await attach(['--dgram', join(dir, `d-${randomSuffix()}.sock`), '--dgram-peer', f]), /not a socket/);
      refused(await attach(['--dgram', join(dir, `d-${randomSuffix()}.sock`), '--dgram-peer', fifo]), /not a socket/);
      refused(await attach(['--dgram', join(dir, `d-${randomSuffix()}.sock`), '--dgram-peer', link]), /symlink/);
      const name = vm();
      await d.cliOk(['vm', 'attach', name, '--net', 'P', '--dgram', join(dir, `d-${randomSuffix()}.sock`), '--dgram-peer', join(dir, `later-${randomSuffix()}.sock`)]);
      await d.cliOk(['vm', 'detach', name]);
    });
  });

  describe('--fifo RX:TX', () => {
    it('a regular file, a symlink to a FIFO, or a device is refused', async () => {
      const rx = join(dir, `rx-${randomSuffix()}`);
      const tx = join(dir, `tx-${randomSuffix()}`);
      await mkfifo(rx);
      await mkfifo(tx);
      const f = join(dir, `plain-${randomSuffix()}`);
      fs.writeFileSync(f, 'data');
      const link = join(dir, `fifolink-${randomSuffix()}`);
      fs.symlinkSync(rx, link);
      refused(await attach(['--fifo', `${f}:${tx}`]), /not a FIFO/);
      refused(await attach(['--fifo', `${rx}:${f}`]), /not a FIFO/);
      refused(await attach(['--fifo', `${link}:${tx}`]), /symlink/);
      refused(await attach(['--fifo', `${rx}:${link}`]), /symlink/);
      refused(await attach(['--fifo', `/dev/null:${tx}`]), /not a FIFO/);
      expect(fs.readFileSync(f, 'utf8')).toBe('data');
    });

    it('a FIFO pair nobody has opened does not block the daemon: another request is answered meanwhile', async () => {
      const rx = join(dir, `rx-${randomSuffix()}`);
      const tx = join(dir, `tx-${randomSuffix()}`);
      await mkfifo(rx);
      await mkfifo(tx);
      const name = vm();
      const [a, s] = await Promise.all([d.cli(['vm', 'attach', name, '--net', 'P', '--fifo', `${rx}:${tx}`], { timeoutMs: 10_000 }), d.cli(['status'], { timeoutMs: 10_000 })]);
      expect(a.code, a.stderr).toBe(0);
      expect(s.code, s.stderr).toBe(0);
      expect((await d.vm(name)).port.state).toBe('up');
      await d.cliOk(['vm', 'detach', name]);
      // Detach removes nothing it did not make: the FIFOs are the user's.
      expect(fs.lstatSync(rx).isFIFO()).toBe(true);
      expect(fs.lstatSync(tx).isFIFO()).toBe(true);
    });
  });
});

describe('with a socket group', () => {
  const GID = 4242;
  let d: Daemon;
  let dir: string;

  beforeAll(async () => {
    dir = makeTempDir('pathsg');
    const cfg = join(dir, 'config.json');
    fs.writeFileSync(cfg, JSON.stringify({ socketGroup: String(GID) }));
    d = await startDaemon({ config: cfg });
    await d.cliOk(['net', 'create', 'G', '--subnet', '10.77.10.0/24']);
  });

  afterAll(cleanupAll);

  it('the VM socket directory and the sockets belong to the group; a directory only the group can write is accepted', async () => {
    const vms = fs.lstatSync(join(d.stateDir, 'vms'));
    expect(vms.mode & 0o7777).toBe(0o750);
    expect(vms.gid).toBe(GID);
    const r = await d.cliJson<{ port: { path: string } }>(['vm', 'attach', 'g1', '--net', 'G', '--unix-listen']);
    const st = fs.lstatSync(r.port.path);
    expect(st.gid).toBe(GID);
    expect(st.mode & 0o777).toBe(0o660);

    const ok = join(dir, 'group-dir');
    fs.mkdirSync(ok);
    fs.chmodSync(ok, 0o770);
    fs.chownSync(ok, 0, GID);
    await d.cliOk(['vm', 'attach', 'g2', '--net', 'G', '--dgram', join(ok, 'g2.sock')]);
    expect(fs.lstatSync(join(ok, 'g2.sock')).gid).toBe(GID);

    const other = join(dir, 'other-group-dir');
    fs.mkdirSync(other);
    fs.chmodSync(other, 0o770);
    fs.chownSync(other, 0, GID + 1);
    refused(await d.cli(['vm', 'attach', 'g3', '--net', 'G', '--dgram', join(other, 'g3.sock')]), new RegExp(`writable by group ${GID + 1}`));
  });
});

describe('a daemon stop and restart with a socket someone else put at the path', () => {
  afterAll(cleanupAll);

  it('stop leaves it, restart refuses to replace it while it is live, and takes the path back once it is gone', async () => {
    const d = await startDaemon();
    const dir = makeTempDir('pathsr');
    await d.cliOk(['net', 'create', 'R', '--subnet', '10.77.11.0/24']);
    const p = join(dir, 'r.sock');
    await d.cliOk(['vm', 'attach', 'r1', '--net', 'R', '--unix-listen', p]);
    fs.rmSync(p);
    const theirs = await listenAt(p);
    const before = snapshot(p);
    await d.stop();
    expect(snapshot(p)).toEqual(before);
    await d.start();
    const v = await d.vm('r1');
    expect(v.port.state).toBe('down');
    expect(v.port.detail).toMatch(/live socket/);
    expect(snapshot(p)).toEqual(before);
    expect(await accepts(p)).toBe(true);
    // Gone (a server Node bound itself unlinks its path on close): the retry makes the VM's socket again.
    await new Promise<void>((r) => theirs.close(() => r()));
    await waitFor(async () => (await d.vm('r1')).port.state === 'waiting', { what: 'r1 to listen again', timeoutMs: 15_000 });
    const peer = await QemuStreamClient.connect(p);
    await waitFor(async () => (await d.vm('r1')).port.state === 'up', { what: 'r1 up' });
    await peer.close();
  });
});

describe('the race between bind and chmod (injected where the socket is bound)', () => {
  afterAll(cleanupAll);

  it('a symlink swapped in for the fresh socket is never chmod-ed through, and nothing is renamed into place', async () => {
    const dir = makeTempDir('race');
    const victim = join(dir, 'victim.txt');
    fs.writeFileSync(victim, 'secret', { mode: 0o600 });
    const before = snapshot(victim);
    const target = join(dir, 'vm.sock');
    let closed = 0;
    await expect(
      createSocketAt(
        target,
        4242,
        (tmp) => {
          const { fd } = native.openUnixDgram({ path: tmp });
          // What an attacker who could write there would do: replace the socket by a symlink.
          fs.rmSync(tmp);
          fs.symlinkSync(victim, tmp);
          return fd;
        },
        (fd) => {
          closed++;
          fs.closeSync(fd);
        },
      ),
    ).rejects.toThrow();
    expect(snapshot(victim)).toEqual(before);
    expect(closed).toBe(1);
    expect(fs.existsSync(target)).toBe(false);
    expect(fs.readdirSync(dir)).toEqual(['victim.txt']);
  });
});

