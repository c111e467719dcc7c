/**
 * The CLI against a real daemon: every command in text and `--json` form, and the error paths
 * (one line on stderr, non-zero exit, nothing half-done).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, REPO_ROOT, runCli, startDaemon, type CliResult, type Daemon } from '../support/daemon.js';
import type { NetDeleteResult, NetInfo, VmInfo } from '../../daemon/control/api.js';
import { randomMac } from '../support/frames.js';
import { cleanupAll, createNetns, makeTempDir, run, type Netns } from '../support/netns.js';

/**
 * A failed command: non-zero exit, exactly one line on stderr, and that line says what is
 * wrong (`expected`: a part of it, or a pattern). Returns the line.
 */
function failed(r: CliResult, expected: string | RegExp): string {
  expect(r.code, `expected failure, got stdout: ${r.stdout}`).not.toBe(0);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, `stderr should be one line: ${r.stderr}`).toHaveLength(1);
  if (typeof expected === 'string') expect(lines[0]).toContain(expected);
  else expect(lines[0]).toMatch(expected);
  return lines[0]!;
}

/** Seconds since process `pid` started, from /proc (start time in clock ticks since boot). */
function processAgeSec(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  const uptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  const hz = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  return uptime - startTicks / hz;
}

describe('mvnet CLI', () => {
  let d: Daemon;
  let dir: string;
  let ns: Netns;

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('cli');
    ns = await createNetns('cli');
  });

  afterAll(cleanupAll);

  it('runs as a program on its own, as the README links it into PATH (run bit and shebang)', () => {
    // Not through `node`: exactly what `ln -s dist/cli/main.js /usr/local/bin/mvnet` gives a user.
    const out = execFileSync(CLI_JS, ['--socket', d.socket, '--json', 'net', 'list'], { encoding: 'utf8' });
    expect(Array.isArray(JSON.parse(out))).toBe(true);
  });

  describe('net', () => {
    it('creates a network with defaults (--json)', async () => {
      const n = await d.cliJson<NetInfo>(['net', 'create', 'A', '--subnet', '10.77.6.0/24']);
      expect(n).toMatchObject({ name: 'A', subnet: '10.77.6.0/24', gateway: '10.77.6.1', mtu: 1500 });
      expect(n.ipv6 ?? undefined).toBeUndefined();
    });

    it('creates a network with every option (text)', async () => {
      const out = await d.cliOk(['net', 'create', 'B', '--subnet', '10.77.7.0/24', '--gateway', '10.77.7.254', '--ipv6', 'fd00:77::/64', '--mtu', '9000']);
      expect(out).toContain('B');
      const list = await d.cliJson<NetInfo[]>(['net', 'list']);
      expect(list.find((n) => n.name === 'B')).toMatchObject({
        subnet: '10.77.7.0/24',
        gateway: '10.77.7.254',
        ipv6: 'fd00:77::/64',
        mtu: 9000,
        vms: [],
      });
    });

    it('lists networks (text and --json)', async () => {
      const list = await d.cliJson<NetInfo[]>(['net', 'list']);
      expect(list.map((n) => n.name).sort()).toEqual(['A', 'B']);
      for (const n of list) expect(n.stats).toMatchObject({ forwarded: 0, flooded: 0 });
      const text = await d.cliOk(['net', 'list']);
      expect(text).toMatch(/^NAME/m);
      expect(text).toMatch(/^A\s+10\.77\.6\.0\/24/m);
      expect(text).toMatch(/^B\s+10\.77\.7\.0\/24/m);
    });

    it('normalises a subnet given with host bits, or refuses it', async () => {
      const r = await d.cli(['--json', 'net', 'create', 'H', '--subnet', '10.77.10.5/24']);
      if (r.code === 0) {
        expect((JSON.parse(r.stdout) as NetInfo).subnet).toBe('10.77.10.0/24');
        await d.cliOk(['net', 'delete', 'H']);
      } else {
        failed(r, /host bits|10\.77\.10\.5\/24/);
      }
    });

    for (const [what, args, msg] of [
      ['a prefix length over 32', ['--subnet', '10.77.8.0/33'], 'invalid subnet "10.77.8.0/33"'],
      ['a subnet that is not a CIDR', ['--subnet', 'not-a-cidr'], 'invalid subnet "not-a-cidr"'],
      ['an octet over 255', ['--subnet', '10.77.256.0/24'], 'invalid subnet "10.77.256.0/24"'],
      ['a gateway outside the subnet', ['--subnet', '10.77.8.0/24', '--gateway', '10.77.9.1'], 'gateway 10.77.9.1 is not a host address of 10.77.8.0/24'],
      ['an MTU below 576', ['--subnet', '10.77.8.0/24', '--mtu', '100'], /--mtu .*576 to 65520/],
      ['an MTU above 65520', ['--subnet', '10.77.8.0/24', '--mtu', '70000'], /--mtu .*576 to 65520/],
      ['a bad IPv6 prefix', ['--subnet', '10.77.8.0/24', '--ipv6', 'fd00::zz/64'], 'invalid ipv6 prefix "fd00::zz/64"'],
      ['no --subnet', [], /--subnet/],
    ] as const) {
      it(`refuses ${what}`, async () => {
        failed(await d.cli(['net', 'create', 'X', ...args]), msg);
        const list = await d.cliJson<NetInfo[]>(['net', 'list']);
        expect(list.map((n) => n.name)).not.toContain('X');
      });
    }

    it('refuses a duplicate network name', async () => {
      failed(await d.cli(['net', 'create', 'A', '--subnet', '10.77.11.0/24']), 'network A already exists');
    });

    it('refuses to delete an unknown network', async () => {
      failed(await d.cli(['net', 'delete', 'nosuchnet']), 'no network named nosuchnet');
    });
  });

  describe('vm', () => {
    const mac = randomMac();

    it('attaches a socket VM with --mac and --ip (--json)', async () => {
      const v = await d.cliJson<VmInfo>([
        'vm', 'attach', 'v1', '--net', 'A', '--unix-listen', join(dir, 'v1.sock'), '--mac', mac, '--ip', '10.77.6.5',
      ]);
      expect(v).toMatchObject({ name: 'v1', net: 'A', mac, ip: '10.77.6.5' });
      expect(v.port.kind).toBe('unix-listen');
      expect(v.port.state).toBe('waiting');
    });

    it('attaches a TAP inside a namespace (text)', async () => {
      const out = await d.cliOk(['vm', 'attach', 'v2', '--net', 'A', '--tap', 'tapv2', '--netns', ns.name]);
      expect(out).toContain('v2');
      const r = await ns.exec(['ip', 'link', 'show', 'dev', 'tapv2']);
      expect(r.code).toBe(0);
    });

    it('lists VMs (text and --json)', async () => {
      const vms = await d.cliJson<VmInfo[]>(['vm', 'list']);
      expect(vms.map((v) => v.name).sort()).toEqual(['v1', 'v2']);
      expect(vms.find((v) => v.name === 'v2')?.port.kind).toBe('tap');
      const text = await d.cliOk(['vm', 'list']);
      expect(text).toMatch(/^v1\s+A\s/m);
      expect(text).toMatch(/^v2\s+A\s/m);
    });

    it('refuses a duplicate VM name', async () => {
      failed(await d.cli(['vm', 'attach', 'v1', '--net', 'B', '--unix-listen', join(dir, 'v1b.sock')]), 'VM v1 is already attached (to A)');
    });

    it('refuses an unknown network', async () => {
      failed(await d.cli(['vm', 'attach', 'v9', '--net', 'nosuchnet', '--unix-listen', join(dir, 'v9.sock')]), 'no network named nosuchnet');
    });

    it('refuses zero or two devices, a bad MAC, a MAC already in use', async () => {
      failed(await d.cli(['vm', 'attach', 'v9', '--net', 'A']), 'give exactly one of --tap');
      failed(await d.cli(['vm', 'attach', 'v9', '--net', 'A', '--unix', join(dir, 'a.sock'), '--unix-listen', join(dir, 'b.sock')]), 'give exactly one of --tap');
      failed(await d.cli(['vm', 'attach', 'v9', '--net', 'A', '--unix-listen', join(dir, 'v9.sock'), '--mac', 'zz:00:00:00:00:01']), 'invalid MAC "zz:00:00:00:00:01"');
      failed(await d.cli(['vm', 'attach', 'v9', '--net', 'A', '--unix-listen', join(dir, 'v9.sock'), '--mac', mac]), `MAC ${mac} is already used by VM v1 on A`);
      const vms = await d.cliJson<VmInfo[]>(['vm', 'list']);
      expect(vms.map((v) => v.name)).not.toContain('v9');
    });

    it('refuses to detach an unknown VM', async () => {
      failed(await d.cli(['vm', 'detach', 'nosuchvm']), 'no VM named nosuchvm is attached');
    });
  });

  describe('status', () => {
    it('reports the daemon, networks and VMs (--json)', async () => {
      const s = await d.status();
      expect(s.daemon.pid).toBe(d.pid);
      expect(s.daemon.socket).toBe(d.socket);
      expect(s.daemon.stateDir).toBe(d.stateDir);
      const pkg = JSON.parse((await run(['cat', join(REPO_ROOT, 'package.json')])).stdout) as { version: string };
      expect(s.daemon.version).toBe(pkg.version);
      // The daemon's uptime is the age of its process, as the kernel counts it (rounded to a second).
      expect(Math.abs(s.daemon.uptimeSec - processAgeSec(d.pid)), `uptimeSec ${s.daemon.uptimeSec}`).toBeLessThanOrEqual(1);
      // No caught exceptions (bugs) so far.
      expect(s.daemon.errors).toEqual({ dataPath: 0, native: 0, uncaught: 0 });
      expect(s.networks.find((n) => n.name === 'A')?.vms.sort()).toEqual(['v1', 'v2']);
      const v1 = s.vms.find((v) => v.name === 'v1')!;
      expect(v1.port.stats).toMatchObject({ rxFrames: 0, txFrames: 0 });
      expect(typeof v1.port.detail).toBe('string');
    });

    it('prints text', async () => {
      const out = await d.cliOk(['status']);
      expect(out).toContain('A');
      expect(out).toContain('v1');
    });
  });

  describe('deleting networks with VMs', () => {
    it('refuses without --force and changes nothing', async () => {
      failed(await d.cli(['net', 'delete', 'A']), 'network A has attached VMs (v1, v2); detach them or use --force');
      const s = await d.status();
      expect(s.networks.map((n) => n.name)).toContain('A');
      expect(s.vms.map((v) => v.name).sort()).toEqual(['v1', 'v2']);
    });

    it('detaches and deletes with --force (--json)', async () => {
      const r = await d.cliJson<NetDeleteResult>(['net', 'delete', 'A', '--force']);
      expect(r.deleted).toBe('A');
      expect([...r.detached].sort()).toEqual(['v1', 'v2']);
      const s = await d.status();
      expect(s.networks.map((n) => n.name)).toEqual(['B']);
      expect(s.vms).toEqual([]);
      // The TAP mvnet created for v2 is gone with it.
      expect((await ns.exec(['ip', 'link', 'show', 'dev', 'tapv2'], { check: false })).code).not.toBe(0);
    });

    it('detaches one VM and deletes an empty network (text)', async () => {
      await d.cliOk(['vm', 'attach', 'v3', '--net', 'B', '--unix-listen', join(dir, 'v3.sock')]);
      expect(await d.cliOk(['vm', 'detach', 'v3'])).toContain('v3');
      expect(await d.cliOk(['net', 'delete', 'B'])).toContain('B');
      expect(await d.cliJson<unknown[]>(['net', 'list'])).toEqual([]);
    });
  });

  describe('every device kind', () => {
    it('attaches, lists and detaches tap, tun, unix, unix-listen, dgram, fifo and iface', async () => {
      await d.cliOk(['net', 'create', 'K', '--subnet', '10.77.12.0/24']);
      await run(['mkfifo', join(dir, 'rx.fifo'), join(dir, 'tx.fifo')]);
      await ns.exec(['ip', 'link', 'add', 'kveth0', 'type', 'veth', 'peer', 'name', 'kveth1']);
      const kinds: Array<[string, string, string[]]> = [
        ['ktap', 'tap', ['--tap', 'ktap0', '--netns', ns.name, '--vnet-hdr']],
        ['ktun', 'tun', ['--tun', 'ktun0', '--netns', ns.name]],
        ['kunix', 'unix', ['--unix', join(dir, 'k-unix.sock')]],
        ['klisten', 'unix-listen', ['--unix-listen', join(dir, 'k-listen.sock')]],
        ['kdgram', 'dgram', ['--dgram', join(dir, 'k-dgram.sock'), '--dgram-peer', join(dir, 'k-dgram-peer.sock')]],
        ['kfifo', 'fifo', ['--fifo', `${join(dir, 'rx.fifo')}:${join(dir, 'tx.fifo')}`]],
        ['kiface', 'iface', ['--iface', 'kveth0', '--netns', ns.name]],
      ];
      for (const [vm, kind, args] of kinds) {
        const v = await d.cliJson<VmInfo>(['vm', 'attach', vm, '--net', 'K', ...args]);
        expect(v.port.kind, vm).toBe(kind);
        expect(['up', 'waiting'], `${vm}: ${v.port.state} ${v.port.detail}`).toContain(v.port.state);
      }
      const listed = await d.cliJson<VmInfo[]>(['vm', 'list']);
      expect(listed.map((v) => v.name).sort()).toEqual(kinds.map(([vm]) => vm).sort());
      expect((await d.network('K')).vms.sort()).toEqual(kinds.map(([vm]) => vm).sort());
      // A port that needs a peer says so; a device port is up.
      expect(listed.find((v) => v.name === 'kunix')?.port.state).toBe('waiting');
      expect(listed.find((v) => v.name === 'ktap')?.port.state).toBe('up');
      for (const [vm] of kinds) await d.cliOk(['vm', 'detach', vm]);
      expect(await d.cliJson<unknown[]>(['vm', 'list'])).toEqual([]);
      // Devices mvnet created are gone; the interface it was only given stays.
      expect((await ns.exec(['ip', 'link', 'show', 'dev', 'ktap0'], { check: false })).code).not.toBe(0);
      expect((await ns.exec(['ip', 'link', 'show', 'dev', 'ktun0'], { check: false })).code).not.toBe(0);
      expect((await ns.exec(['ip', 'link', 'show', 'dev', 'kveth0'], { check: false })).code).toBe(0);
      await d.cliOk(['net', 'delete', 'K']);
    });

    it('refuses --vnet-hdr without --tap and --dgram-peer without --dgram', async () => {
      await d.cliOk(['net', 'create', 'K2', '--subnet', '10.77.13.0/24']);
      failed(await d.cli(['vm', 'attach', 'x', '--net', 'K2', '--unix', join(dir, 'x.sock'), '--vnet-hdr']), '--vnet-hdr applies to --tap only');
      failed(await d.cli(['vm', 'attach', 'x', '--net', 'K2', '--unix', join(dir, 'x.sock'), '--dgram-peer', join(dir, 'y.sock')]), '--dgram-peer needs --dgram');
      failed(await d.cli(['vm', 'attach', 'x', '--net', 'K2', '--fifo', 'only-one-path']), '--fifo takes RX_PATH:TX_PATH');
      await d.cliOk(['net', 'delete', 'K2']);
    });
  });

  describe('without a daemon', () => {
    it('names the socket path and exits non-zero', async () => {
      const sock = join(dir, 'nobody-here.sock');
      for (const args of [['net', 'list'], ['status'], ['vm', 'list']]) {
        failed(await runCli(sock, args), `the mvnet daemon is not running (no daemon listening on ${sock})`);
      }
    });

    it('honours MVNET_SOCKET', async () => {
      const env = { ...process.env, MVNET_SOCKET: d.socket };
      const r = await runCli(undefined, ['--json', 'net', 'list'], { env });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual([]);
      const bad = { ...process.env, MVNET_SOCKET: join(dir, 'env-nobody.sock') };
      failed(await runCli(undefined, ['net', 'list'], { env: bad }), `no daemon listening on ${bad.MVNET_SOCKET}`);
    });
  });

  describe('usage', () => {
    it('prints the version', async () => {
      const r = await runCli(undefined, ['--version']);
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    });

    it('rejects an unknown command with one line', async () => {
      failed(await d.cli(['frobnicate']), "unknown command 'frobnicate'");
    });

    it('daemon refuses a config file with an unknown key, in one line', async () => {
      const cfg = join(dir, 'bad.json');
      writeFileSync(cfg, JSON.stringify({ logLevel: 'info', bogus: 'x' }));
      const r = await run(['node', CLI_JS, 'daemon', '--config', cfg, '--state-dir', join(dir, 'st'), '--socket', join(dir, 'd.sock')], {
        check: false,
        timeoutMs: 15_000,
      });
      failed({ code: r.code, stdout: r.stdout, stderr: r.stderr }, `config ${cfg}: unknown key "bogus"`);
    });
  });
});
