/**
 * The `--json` contract and the exit codes (README "The --json contract"; daemon/control/api.ts;
 * cli/exit-codes.ts), against a real daemon with VMs of each kind: every listing names a VM's
 * own identity `name` and a reference `vm`, carries unset fields as null (never absent), a route
 * as the Route object plus `routeText`, a `--fifo` port as kind `fifo` (also after a restart).
 * Errors: one JSON object on stderr under --json, exit 2 usage, 3 unreachable or timed out,
 * 4 not found, 5 conflict. `version`/`-v`, `--quiet`, and in `mvnet status`: a port whose writes
 * fail (its unix datagram peer gone: sendto gets ECONNREFUSED) is degraded with the error and
 * recovers, a hand-set address is shown, a long allow-list is not cut.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runCli, startDaemon, type CliResult, type Daemon } from '../support/daemon.js';
import { cleanupAll, createNetns, makeTempDir, registerCleanup, waitFor, type Netns } from '../support/netns.js';
import { arpRequest, parseArp } from '../support/frames.js';
import { native } from '../../plugins/native/index.js';
import type { NativeDevice } from '../../plugins/native/types.js';
import type { CliErrorJson, ForwardInfo, NetInfo, RouteInfo, StatusInfo, TeeInfo, VmInfo } from '../../daemon/control/api.js';

afterAll(cleanupAll);

const VM_KEYS = ['flows', 'ip', 'mac', 'name', 'net', 'port', 'route', 'routeText'];
const ROUTE_INFO_KEYS = ['attached', 'route', 'routeText', 'vm'];
const NET_KEYS = ['dhcpRange', 'gateway', 'ipv6', 'mtu', 'name', 'router', 'stats', 'subnet', 'vms'];
const FORWARD_KEYS = ['connections', 'failures', 'guestPort', 'host', 'listening', 'port', 'vm'];
const TEE_KEYS = ['counters', 'detail', 'filter', 'from', 'name', 'ring', 'snaplen', 'state', 'to'];
/** The keys of each port kind in answers, beside state, detail, lastError and stats. */
const PORT_KEYS: Record<string, string[]> = {
  tap: ['ifname', 'kind', 'mac', 'multiQueue', 'netns', 'vnetHdr'],
  dgram: ['kind', 'path', 'peer'],
  'unix-listen': ['kind', 'path'],
  fifo: ['kind', 'rx', 'tx'],
};
const ALLOW = Array.from({ length: 12 }, (_, i) => `198.51.100.${i * 8}/29:${8000 + i}`);

const keys = (o: object): string[] => Object.keys(o).sort();

/** A unix datagram socket of this test, standing in for QEMU's end of `-netdev dgram`. */
interface DgramEnd {
  path: string;
  dev: NativeDevice;
  frames: Buffer[];
}

function dgramEnd(path: string): DgramEnd {
  const { fd } = native.openUnixDgram({ path });
  const frames: Buffer[] = [];
  const dev: NativeDevice = new native.Device({
    fd,
    mode: 'dgram',
    maxFrame: 1518,
    batch: 16,
    queueFrames: 64,
    queueBytes: 1 << 20,
    onRead: (count) => {
      for (let i = 0; i < count; i++) frames.push(Buffer.from(dev.buffer.subarray(i * 1518, i * 1518 + dev.lengths[i]!)));
    },
    onError: () => {},
  });
  dev.start();
  registerCleanup(`dgram end ${path}`, async () => dev.close());
  return { path, dev, frames };
}

/** The usage/error line: exit code, nothing on stdout, one line on stderr. */
function failed(r: CliResult, exit: number, reason: RegExp): string {
  expect(r.code, `stdout: ${r.stdout} stderr: ${r.stderr}`).toBe(exit);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(reason);
  return lines[0]!;
}

/** The --json error object: one JSON line on stderr with the exit code's name. */
function failedJson(r: CliResult, exit: number, code: string, rpcCode: number | null): CliErrorJson['error'] {
  const line = failed(r, exit, /^\{"error":/);
  const e = (JSON.parse(line) as CliErrorJson).error;
  expect(keys(e)).toEqual(['code', 'exitCode', 'message', 'rpcCode']);
  expect(e).toMatchObject({ code, exitCode: exit, rpcCode });
  expect(e.message.length).toBeGreaterThan(0);
  return e;
}

describe('--json contract', () => {
  let d: Daemon;
  let dir: string;
  let ns: Netns;
  let gw: DgramEnd;

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('jc');
    ns = await createNetns('jc');
    await d.cliOk(['net', 'create', 'A', '--subnet', '10.77.60.0/24']);
    await d.cliOk(['net', 'create', 'B', '--subnet', '10.77.61.0/24', '--ipv6', 'fd00:77:61::/64', '--dhcp-range', '10.77.61.100-10.77.61.149']);
    // One VM of each kind: a TAP in a namespace, a datagram socket with a hand-set address, a listening stream socket, two FIFOs.
    await d.cliOk(['vm', 'attach', 'vtap', '--net', 'A', '--tap', 'jctap0', '--netns', ns.name]);
    gw = dgramEnd(join(dir, 'gw-vm.sock'));
    await d.cliOk(['vm', 'attach', 'vdg', '--net', 'B', '--dgram', join(dir, 'vdg.sock'), '--dgram-peer', gw.path, '--ip', '10.77.61.5']);
    await d.cliOk(['vm', 'attach', 'vul', '--net', 'A', '--unix-listen', join(dir, 'vul.sock')]);
    execFileSync('mkfifo', [join(dir, 'rx'), join(dir, 'tx')]);
    await d.cliOk(['vm', 'attach', 'vfifo', '--net', 'A', '--fifo', `${join(dir, 'rx')}:${join(dir, 'tx')}`]);
    await d.cliOk(['route', '--direct', ...ALLOW.flatMap((a) => ['--allow', a]), 'vul']);
    await d.cliOk(['route', '--none', '--tor-ports', '80,443', 'vtap']);
    await d.cliOk(['route', '--direct', '--create', 'later']);
    await d.cliOk(['forward', 'add', 'vdg', '--host', '127.0.0.1:47913', '--guest', '80']);
    await d.cliOk(['tee', 'add', 'tap-tee', '--from', 'vtap', '--to', 'tap.pcapng']);
  });

  it('lists every VM with the same keys, null for unset, the route as object and text, the port kind as given', async () => {
    const vms = await d.cliJson<VmInfo[]>(['vm', 'list']);
    const status = await d.cliJson<StatusInfo>(['status']);
    const routes = await d.cliJson<RouteInfo[]>(['route', 'show']);
    expect(vms.map((v) => v.name).sort()).toEqual(['vdg', 'vfifo', 'vtap', 'vul']);
    for (const v of [...vms, ...status.vms]) {
      expect(keys(v)).toEqual(VM_KEYS);
      expect(keys(v.port)).toEqual([...PORT_KEYS[v.port.kind]!, 'detail', 'device', 'lastError', 'state', 'stats'].sort());
      expect(v.port.device).toBeNull();
      expect(typeof v.routeText).toBe('string');
      expect(typeof v.route).toBe('object');
    }
    // status carries the same VM objects (counters aside).
    const same = (v: VmInfo): unknown => ({ name: v.name, net: v.net, ip: v.ip, route: v.route, routeText: v.routeText, kind: v.port.kind });
    expect(status.vms.map(same)).toEqual(vms.map(same));
    const by = Object.fromEntries(vms.map((v) => [v.name, v]));
    expect(by.vtap!.port).toMatchObject({ kind: 'tap', ifname: 'jctap0', netns: ns.name, mac: null, vnetHdr: null, multiQueue: null, lastError: null });
    expect(by.vfifo!.port).toMatchObject({ kind: 'fifo', rx: join(dir, 'rx'), tx: join(dir, 'tx') });
    expect(by.vul!.port).toMatchObject({ kind: 'unix-listen', path: join(dir, 'vul.sock') });
    expect(by.vdg!.port).toMatchObject({ kind: 'dgram', peer: gw.path });
    expect(by.vdg!.ip).toBe('10.77.61.5');
    expect(by.vtap!.route).toEqual({ kind: 'none', torPorts: [80, 443] });
    expect(by.vfifo!.route).toEqual({ kind: 'none', torPorts: null });
    expect(by.vul!.route).toMatchObject({ kind: 'direct', torPorts: null });
    const allow = (by.vul!.route as { allow: { cidr: string; ports: [number, number][] | null }[] }).allow;
    expect(allow).toHaveLength(ALLOW.length);
    expect(allow[0]).toEqual({ cidr: '198.51.100.0/29', ports: [[8000, 8000]] });

    // route show: the same route object and text for the same VM, under `vm` (a reference).
    for (const r of routes) expect(keys(r)).toEqual(ROUTE_INFO_KEYS);
    for (const v of vms) {
      const r = routes.find((x) => x.vm === v.name)!;
      expect(r).toEqual({ vm: v.name, attached: true, route: v.route, routeText: v.routeText });
    }
    expect(routes.find((r) => r.vm === 'later')).toEqual({ vm: 'later', attached: false, route: { kind: 'direct', allow: null, torPorts: null }, routeText: 'direct' });
    // A route read back is accepted as sent (nulls for unset).
    const back = await d.cliJson<RouteInfo>(['route', '--tor-ports', '8080', 'vul']);
    expect(back.route).toMatchObject({ kind: 'direct', torPorts: [8080] });
    expect((back.route as { allow: unknown[] }).allow).toHaveLength(ALLOW.length);
  });

  it('lists networks, forwards and tees with every key present (null for unset)', async () => {
    const nets = await d.cliJson<NetInfo[]>(['net', 'list']);
    const status = await d.cliJson<StatusInfo>(['status']);
    for (const n of [...nets, ...status.networks]) expect(keys(n)).toEqual(NET_KEYS);
    expect(nets.find((n) => n.name === 'A')).toMatchObject({ ipv6: null, dhcpRange: null });
    expect(nets.find((n) => n.name === 'B')).toMatchObject({ ipv6: 'fd00:77:61::/64', dhcpRange: '10.77.61.100-10.77.61.149' });
    const fwds = await d.cliJson<ForwardInfo[]>(['forward', 'list']);
    expect(fwds).toHaveLength(1);
    expect(keys(fwds[0]!)).toEqual(FORWARD_KEYS);
    expect(fwds[0]).toMatchObject({ vm: 'vdg', host: '127.0.0.1', port: 47913, guestPort: 80 });
    const tees = await d.cliJson<TeeInfo[]>(['tee', 'list']);
    expect(keys(tees[0]!)).toEqual(TEE_KEYS);
    expect(tees[0]).toMatchObject({ name: 'tap-tee', from: { vm: 'vtap', net: null, point: null }, ring: null });
    for (const c of status.captures) expect(c).toHaveProperty('name');
  });

  it('keeps a --fifo port kind fifo, and the forward, across a daemon restart', async () => {
    await d.restart();
    const v = (await d.cliJson<VmInfo[]>(['vm', 'list'])).find((x) => x.name === 'vfifo')!;
    expect(v.port).toMatchObject({ kind: 'fifo', rx: join(dir, 'rx'), tx: join(dir, 'tx'), state: 'up' });
    // The state file keeps a forward's address and port apart; restoring it used to refuse that.
    expect(await d.cliJson<ForwardInfo[]>(['forward', 'list'])).toMatchObject([{ vm: 'vdg', host: '127.0.0.1', port: 47913, guestPort: 80, listening: true }]);
  });

  it('ends with 4 for something missing and 5 for a conflict, as one JSON object on stderr under --json', async () => {
    const json = (args: string[]): Promise<CliResult> => runCli(d.socket, args, { json: true });
    for (const args of [
      ['vm', 'detach', 'nosuch'],
      ['route', 'show', 'nosuch'],
      ['route', '--clear', 'nosuch'],
      ['route', '--direct', 'nosuch'],
      ['net', 'delete', 'nosuch'],
      ['forward', 'remove', 'vdg', '--host', '127.0.0.1:1'],
      ['forward', 'add', 'nosuch', '--host', '127.0.0.1:47914', '--guest', '80'],
      ['tee', 'remove', 'nosuch'],
      ['link', 'remove', 'nosuch'],
      ['vm', 'attach', 'x', '--net', 'nosuch', '--unix-listen', join(dir, 'x.sock')],
    ]) {
      const e = failedJson(await json(args), 4, 'not-found', -32004);
      expect(e.message, args.join(' ')).toMatch(/^no |nosuch/);
    }
    for (const args of [
      ['net', 'create', 'A', '--subnet', '10.77.62.0/24'],
      ['net', 'delete', 'A'],
      ['vm', 'attach', 'vul', '--net', 'A', '--unix-listen', join(dir, 'other.sock')],
      ['vm', 'attach', 'vdg2', '--net', 'B', '--dgram', join(dir, 'vdg2.sock'), '--ip', '10.77.61.5'],
      ['forward', 'add', 'vdg', '--host', '127.0.0.1:47913', '--guest', '81'],
      ['tee', 'add', 'tap-tee', '--from', 'vtap', '--to', 'other.pcapng'],
    ]) {
      failedJson(await json(args), 5, 'conflict', -32001);
    }
    // Without --json: the same exit codes, one plain line.
    failed(await d.cli(['vm', 'detach', 'nosuch']), 4, /^mvnet: no VM named nosuch/);
    failed(await d.cli(['net', 'create', 'A', '--subnet', '10.77.62.0/24']), 5, /^mvnet: network A already exists/);
    // Another refusal of the daemon (bad input it checks) is 1.
    failedJson(await json(['net', 'create', 'L', '--subnet', '127.0.0.0/24']), 1, 'error', -32602);
  });

  it('ends with 2 and one line for every usage error, commander\'s and the argument parsers\' alike', async () => {
    for (const [args, reason] of [
      [['onion', 'expose', 'VM', '0'], /port must be an integer from 1 to 65535/],
      [['onion', 'expose', 'VM', 'abc'], /port must be an integer from 1 to 65535/],
      [['onion', 'expose', 'VM', '70000'], /port must be an integer from 1 to 65535/],
      [['onion', 'expose', 'VM', '80', '--onion-port', 'x'], /--onion-port must be an integer/],
      [['net', 'create', 'X', '--subnet', '10.77.63.0/24', '--mtu', 'abc'], /--mtu must be an integer/],
      [['net', 'create', '--subnet', '10.77.63.0/24'], /missing required argument 'name'/],
      [['forward', 'add', 'vdg', '--host', '127.0.0.1:1', '--guest', '0'], /--guest must be an integer/],
      [['vm', 'list', '--bogus'], /unknown option '--bogus'/],
      [['bogus'], /unknown command 'bogus'/],
      [['vm', 'attach', 'v', '--net', 'A'], /give exactly one of --tap/],
      [['route', '--direct', '--via', 'x', 'v'], /give exactly one of/],
      [['tee', 'add', 't', '--to', 'x.pcapng'], /give what to capture/],
      [['tor', 'newnym'], /give a VM or --all/],
      [['--timeout', 'abc', 'vm', 'list'], /--timeout takes seconds/],
      [['graph', '--serve', '192.0.2.1:80'], /not a loopback address/],
    ] as const) {
      const line = failed(await d.cli(args), 2, reason);
      expect(line, args.join(' ')).toMatch(/^mvnet: /);
    }
    const e = failedJson(await runCli(d.socket, ['onion', 'expose', 'VM', '0'], { json: true }), 2, 'usage', null);
    expect(e.message).toMatch(/port must be an integer/);
    failedJson(await runCli(d.socket, ['net', 'create', 'X', '--subnet', '10.77.63.0/24', '--mtu', 'abc'], { json: true }), 2, 'usage', null);
  });

  it('prints the version: version, -v, --version, and version --json', async () => {
    const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const args of [['version'], ['-v'], ['--version']]) {
      const r = await runCli(undefined, args);
      expect(r).toMatchObject({ code: 0, stdout: `${version}\n`, stderr: '' });
    }
    const r = await runCli(undefined, ['version'], { json: true });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ version });
    // The flags too, with --json before or after them: the same JSON, nothing else.
    for (const args of [['--json', '-v'], ['--json', '--version'], ['-v', '--json'], ['--version', '--json']]) {
      const f = await runCli(undefined, args);
      expect(f, args.join(' ')).toMatchObject({ code: 0, stdout: `${JSON.stringify({ version })}\n`, stderr: '' });
    }
  });

  it('--quiet hushes confirmations, not listings, errors or --json', async () => {
    const q = await d.cli(['--quiet', 'net', 'create', 'Q', '--subnet', '10.77.64.0/24']);
    expect(q).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect((await d.cli(['net', 'create', 'Q2', '--subnet', '10.77.65.0/24'])).stdout).toMatch(/^created network Q2/);
    expect((await d.cli(['-q', 'net', 'list'])).stdout).toMatch(/^NAME +SUBNET/);
    const j = await runCli(d.socket, ['--quiet', 'net', 'delete', 'Q'], { json: true });
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toEqual({ deleted: 'Q', detached: [] });
    failed(await d.cli(['--quiet', 'net', 'delete', 'Q']), 4, /no network named Q/);
    expect((await d.cli(['-q', 'net', 'delete', 'Q2'])).stdout).toBe('');
  });

  it("status: a port whose writes fail is degraded with the error, and recovers; the hand-set IP and the whole allow-list are shown", async () => {
    const portPath = join(dir, 'vdg.sock');
    const mac = '02:77:61:00:00:05';
    const arp = arpRequest({ srcMac: mac, srcIp: '10.77.61.5', targetIp: '10.77.61.1' });
    const vdg = async (): Promise<VmInfo> => (await d.cliJson<VmInfo[]>(['vm', 'list'])).find((v) => v.name === 'vdg')!;
    // The VM's end asks for the gateway: the daemon answers it at the configured peer.
    gw.dev.setPeer(portPath);
    gw.dev.write([arp], 1);
    await waitFor(() => gw.frames.some((f) => parseArp(f)?.op === 2), { what: "the gateway's ARP reply" });
    expect((await vdg()).port).toMatchObject({ state: 'up', lastError: null });

    // The VM goes away (its socket closed; the file stays): what the daemon sends it gets
    // ECONNREFUSED. A connection to the VM's port forward makes the daemon send (a TCP SYN).
    gw.dev.close();
    const conn = net.connect(47913, '127.0.0.1');
    conn.on('error', () => {});
    registerCleanup('forward connection', async () => void conn.destroy());
    await waitFor(async () => (await vdg()).port.state === 'degraded', { what: 'the port to be degraded' });
    const v = await vdg();
    expect(v.port.lastError).toMatch(/^ECONNREFUSED/);
    expect(v.port.stats.drops['io-error']).toBeGreaterThan(0);
    const text = await d.cliOk(['status']);
    const row = text.split('\n').find((l) => l.startsWith('vdg '))!;
    expect(row).toContain('degraded (ECONNREFUSED');
    expect(row).toContain('10.77.61.5');
    const vul = text.split('\n').find((l) => l.startsWith('vul '))!;
    expect(vul).toContain(`direct, allow ${ALLOW.length} rules +tor 8080`);
    const full = text.split('\n').find((l) => l.startsWith('route of vul: '))!;
    for (const a of ALLOW) expect(full).toContain(a);

    // The VM comes back at its path: the next answer goes through and the port is up again.
    conn.destroy();
    rmSync(gw.path);
    const again = dgramEnd(gw.path);
    again.dev.setPeer(portPath);
    again.dev.write([arp], 1);
    await waitFor(() => again.frames.some((f) => parseArp(f)?.op === 2), { what: 'the ARP reply after the VM came back' });
    expect((await vdg()).port).toMatchObject({ state: 'up', lastError: null });
  });
});

describe('exit 3: no daemon, or one that does not answer', () => {
  it('a missing socket', async () => {
    const sock = join(makeTempDir('jc3'), 'none.sock');
    failed(await runCli(sock, ['vm', 'list']), 3, /daemon is not running/);
    failedJson(await runCli(sock, ['vm', 'list'], { json: true }), 3, 'unreachable', null);
  });

  it('a socket that accepts and never answers: --timeout, MVNET_TIMEOUT', async () => {
    const sock = join(makeTempDir('jc3'), 'mute.sock');
    const held: net.Socket[] = [];
    const server = net.createServer((c) => held.push(c));
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    registerCleanup('mute server', async () => {
      for (const c of held) c.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const t0 = Date.now();
    failed(await runCli(sock, ['--timeout', '1', 'vm', 'list']), 3, /did not answer vm\.list within 1 s/);
    expect(Date.now() - t0).toBeLessThan(8000);
    failedJson(await runCli(sock, ['vm', 'list'], { json: true, env: { ...process.env, MVNET_TIMEOUT: '0.5' } }), 3, 'timeout', null);
    expect(held.length).toBeGreaterThanOrEqual(2);
  });
});
