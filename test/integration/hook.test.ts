/**
 * `mvnet hook` as a builder or runtime calls it: the command as argument or MVNET_COMMAND, the
 * VM id in MVNET_VM_ID or the JSON, the config on stdin, one JSON document on stdout (the result,
 * or `{code, msg}` with a non-zero exit). ADD/CHECK/DEL/VERSION with good and bad input, DEL
 * twice, CHECK after the daemon lost the attachment, an OCI runtime state, and ADD failing
 * closed (all-tor without Tor configured, a missing network) leaving nothing behind. A TAP in a
 * namespace made by the test (the container case) is configured and reaches its gateway.
 */
import { existsSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, runCli, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, createNetns, run, spawnProcess, type Netns } from '../support/netns.js';
import type { RouteInfo, StatusInfo, VmInfo } from '../../daemon/control/api.js';

const SUBNET = '10.231.0.0/24';
const GATEWAY = '10.231.0.1';

interface HookOut {
  code: number;
  json: Record<string, unknown>;
}

async function hook(socket: string, args: string[], input: unknown, env: Record<string, string> = {}): Promise<HookOut> {
  const r = await run(['node', CLI_JS, '--socket', socket, 'hook', ...args], {
    check: false,
    input: typeof input === 'string' ? input : JSON.stringify(input),
    env: { ...process.env, MVNET_COMMAND: '', MVNET_VM_ID: '', ...env },
  });
  const lines = r.stdout.trim().split('\n');
  expect(lines, `one JSON line on stdout, got: ${r.stdout} / ${r.stderr}`).toHaveLength(1);
  return { code: r.code, json: JSON.parse(lines[0]!) as Record<string, unknown> };
}

function failedWith(o: HookOut, code: number, msg: RegExp): void {
  expect(o.code, JSON.stringify(o.json)).not.toBe(0);
  expect(o.json.code, JSON.stringify(o.json)).toBe(code);
  expect(o.json.msg).toMatch(msg);
}

describe('mvnet hook', () => {
  let d: Daemon;
  let ns: Netns;

  async function vms(): Promise<VmInfo[]> {
    return JSON.parse((await runCli(d.socket, ['vm', 'list'], { json: true })).stdout) as VmInfo[];
  }
  async function routes(): Promise<RouteInfo[]> {
    return JSON.parse((await runCli(d.socket, ['route', 'show'], { json: true })).stdout) as RouteInfo[];
  }

  beforeAll(async () => {
    d = await startDaemon();
    ns = await createNetns('hook');
    expect((await runCli(d.socket, ['net', 'create', 'lan', '--subnet', SUBNET, '--ipv6', 'fd00:231::/64'])).code).toBe(0);
  });

  afterAll(cleanupAll);

  it('VERSION by argument and by MVNET_COMMAND, without stdin', async () => {
    for (const o of [await hook(d.socket, ['VERSION'], ''), await hook(d.socket, [], '', { MVNET_COMMAND: 'VERSION' })]) {
      expect(o.code).toBe(0);
      expect(o.json.commands).toEqual(['ADD', 'DEL', 'CHECK', 'VERSION']);
      expect(o.json.devices).toEqual(['qemu-stream', 'qemu-dgram', 'tap', 'vhost-user']);
    }
  });

  it('ADD (qemu-stream): the QEMU arguments, a stable MAC, the address the daemon chose, gateway, DNS, route', async () => {
    const o = await hook(d.socket, ['ADD'], { network: 'lan', route: 'direct' }, { MVNET_VM_ID: 'hk1' });
    expect(o.code, JSON.stringify(o.json)).toBe(0);
    const r = o.json;
    const status = JSON.parse((await runCli(d.socket, ['status'], { json: true })).stdout) as StatusInfo;
    const sock = `${status.daemon.vmSocketDir}/hk1.qemu.sock`;
    expect(r.vm).toBe('hk1');
    expect(r.mac).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(r.device).toEqual({ kind: 'qemu-stream', socket: sock });
    expect(r.qemuArgs).toEqual(['-netdev', `stream,id=net0,server=on,addr.type=unix,addr.path=${sock}`, '-device', `virtio-net-pci,netdev=net0,mac=${String(r.mac)}`]);
    // The highest free host address: a static address (and DHCP reservation) from the start.
    expect(r.ipv4).toEqual({ address: '10.231.0.254/24', gateway: GATEWAY });
    expect((r.ipv6 as { gateway: string }).gateway).toBe('fd00:231::1');
    expect((r.ipv6 as { address: string }).address).toMatch(/^fd00:231::[0-9a-f:]+ff:fe[0-9a-f:]+\/64$/);
    expect(r.dns).toEqual({ nameservers: [GATEWAY, 'fd00:231::1'], domain: 'lan.mvnet', search: ['lan.mvnet'] });
    expect(r.route).toEqual({ kind: 'direct', allow: null, torPorts: null });
    const v = (await vms()).find((x) => x.name === 'hk1')!;
    expect(v.port).toMatchObject({ kind: 'unix', path: sock });
    expect(v.mac).toBe(r.mac);
    expect(v.ip).toBe('10.231.0.254');
    // `vm attach --ip auto` (what the hook asks for) skips addresses VMs hold: the next is .253.
    const auto = await runCli(d.socket, ['vm', 'attach', 'auto1', '--net', 'lan', '--unix', `${status.daemon.vmSocketDir}/auto1.sock`, '--ip', 'auto'], { json: true });
    expect((JSON.parse(auto.stdout) as VmInfo).ip).toBe('10.231.0.253');
    expect((await runCli(d.socket, ['vm', 'detach', 'auto1'])).code).toBe(0);
    const again = await hook(d.socket, ['ADD'], { vm: 'hk1', network: 'lan' });
    failedWith(again, 100, /already attached/);
  });

  it('CHECK passes while all is in place and fails once the route or the attachment is not', async () => {
    const ok = await hook(d.socket, ['CHECK'], { vm: 'hk1', network: 'lan', route: 'direct' });
    expect(ok.code, JSON.stringify(ok.json)).toBe(0);
    expect(ok.json).toMatchObject({ vm: 'hk1', ok: true, state: 'waiting' });
    failedWith(await hook(d.socket, ['CHECK'], { vm: 'hk1', network: 'lan', route: 'none' }), 102, /route is direct, not none/);
    failedWith(await hook(d.socket, ['CHECK'], { vm: 'hk1', network: 'other', route: 'direct' }), 102, /attached to lan, not other/);
    // The daemon loses the attachment (someone detached it): CHECK says so.
    expect((await runCli(d.socket, ['vm', 'detach', 'hk1'])).code).toBe(0);
    failedWith(await hook(d.socket, ['CHECK'], { vm: 'hk1', network: 'lan', route: 'direct' }, { MVNET_COMMAND: 'check' }), 102, /hk1: not attached/);
  });

  it('DEL removes the attachment and the route, and succeeds again when all is gone', async () => {
    const first = await hook(d.socket, ['DEL'], { vm: 'hk1' });
    expect(first.code, JSON.stringify(first.json)).toBe(0);
    expect(first.json).toMatchObject({ vm: 'hk1', detached: false, routeCleared: true });
    const second = await hook(d.socket, ['DEL'], { vm: 'hk1' });
    expect(second.code).toBe(0);
    expect(second.json).toMatchObject({ vm: 'hk1', detached: false, routeCleared: false });
    expect((await routes()).find((x) => x.vm === 'hk1')).toBeUndefined();
    // A full ADD then DEL: detached, and the stale socket a QEMU would leave is removed.
    const add = await hook(d.socket, ['ADD'], { vm: 'hk2', network: 'lan', ip: '10.231.0.77', route: 'direct', allow: ['203.0.113.0/24:80,443'] });
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    expect(add.json.ipv4).toEqual({ address: '10.231.0.77/24', gateway: GATEWAY });
    expect((await hook(d.socket, ['CHECK'], { vm: 'hk2', network: 'lan', route: 'direct', allow: ['203.0.113.0/24:80,443'] })).code).toBe(0);
    // A QEMU killed without cleaning up leaves its server socket: DEL removes it (nobody accepts on it).
    const sock = (add.json.device as { socket: string }).socket;
    await run(['python3', '-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', sock]);
    expect(existsSync(sock)).toBe(true);
    const del = await hook(d.socket, ['DEL'], { vm: 'hk2' });
    expect(del.json).toMatchObject({ detached: true, routeCleared: true, removed: sock });
    expect(existsSync(sock)).toBe(false);
    expect(await vms()).toEqual([]);
    expect(await routes()).toEqual([]);
  });

  it('device vhost-user: mvnet listens, the QEMU arguments carry the shared memory backend; CHECK, DEL removes the socket', async () => {
    expect((await runCli(d.socket, ['net', 'create', 'jumbo', '--subnet', '10.232.0.0/24', '--mtu', '9000'])).code).toBe(0);
    const add = await hook(d.socket, ['ADD'], { vm: 'vh1', network: 'jumbo', route: 'direct', device: 'vhost-user', memory: 256, accel: 'tcg' });
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    const status = JSON.parse((await runCli(d.socket, ['status'], { json: true })).stdout) as StatusInfo;
    const sock = `${status.daemon.vmSocketDir}/vh1.vhost.sock`;
    expect(add.json.device).toEqual({ kind: 'vhost-user', socket: sock });
    expect(add.json.qemuArgs).toEqual([
      '-object', 'memory-backend-memfd,id=mem-net0,size=256M,share=on',
      '-numa', 'node,memdev=mem-net0',
      '-chardev', `socket,id=chr-net0,path=${sock},reconnect=1`,
      '-netdev', 'vhost-user,id=net0,chardev=chr-net0',
      '-device', `virtio-net-pci,netdev=net0,mac=${String(add.json.mac)},host_mtu=9000,vectors=0`,
    ]);
    // The daemon listens there already: QEMU can be started with these arguments.
    expect(existsSync(sock)).toBe(true);
    const v = (await vms()).find((x) => x.name === 'vh1')!;
    expect(v.port).toMatchObject({ kind: 'vhost-user', path: sock, state: 'waiting' });
    const check = await hook(d.socket, ['CHECK'], { vm: 'vh1', network: 'jumbo', route: 'direct', device: 'vhost-user' });
    expect(check.json).toMatchObject({ ok: true, state: 'waiting' });
    // The same VM's second NIC: its memory backend is the first one's, so none in this answer.
    const second = await hook(d.socket, ['ADD'], { vm: 'vh1b', network: 'jumbo', route: 'direct', device: 'vhost-user', memory: 'existing', netdevId: 'net1', accel: 'tcg' });
    expect(second.code, JSON.stringify(second.json)).toBe(0);
    expect(second.json.qemuArgs).toEqual([
      '-chardev', `socket,id=chr-net1,path=${status.daemon.vmSocketDir}/vh1b.vhost.sock,reconnect=1`,
      '-netdev', 'vhost-user,id=net1,chardev=chr-net1',
      '-device', `virtio-net-pci,netdev=net1,mac=${String(second.json.mac)},host_mtu=9000,vectors=0`,
    ]);
    expect((await hook(d.socket, ['DEL'], { vm: 'vh1b', device: 'vhost-user' })).json).toMatchObject({ detached: true });
    const del = await hook(d.socket, ['DEL'], { vm: 'vh1', device: 'vhost-user' });
    expect(del.json).toMatchObject({ detached: true, routeCleared: true });
    expect(existsSync(sock)).toBe(false);
    expect((await runCli(d.socket, ['net', 'delete', 'jumbo'])).code).toBe(0);
  });

  it('refuses bad input with a code and a message, and leaves nothing', async () => {
    failedWith(await hook(d.socket, ['ADD'], '{not json'), 6, /not JSON/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan', colour: 'red' }), 2, /unknown key "colour"/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1' }), 7, /missing network/);
    failedWith(await hook(d.socket, ['ADD'], { network: 'lan' }), 4, /no VM id/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan' }, { MVNET_VM_ID: 'x2' }), 7, /MVNET_VM_ID/);
    failedWith(await hook(d.socket, ['ATTACH'], { vm: 'x1', network: 'lan' }), 4, /unknown command/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan' }, { MVNET_COMMAND: 'DEL' }), 4, /ADD by argument and DEL by MVNET_COMMAND/);
    failedWith(await hook(d.socket, [], { vm: 'x1', network: 'lan' }), 4, /no command/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan', route: 'sideways' }), 7, /unknown route/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan', device: 'floppy' }), 7, /unknown device/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan', device: 'vhost-user' }), 7, /vhost-user" needs memory/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan', device: 'vhost-user', memory: '12 bytes' }), 7, /invalid memory "12 bytes"/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan', device: 'vhost-user', memory: 512, accel: 'hvf' }), 7, /unknown accel "hvf"/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan', device: 'vhost-user', memory: 512, model: 'e1000' }), 7, /needs a virtio-net model/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan', memory: 512 }), 7, /memory and accel go with device "vhost-user"/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan', ip: '10.99.0.5' }), 100, /not a host address/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'x1', network: 'lan', route: 'direct', allow: ['not-a-cidr'] }), 101, /route refused/);
    failedWith(await hook(`${d.stateDir}/nobody.sock`, ['ADD'], { vm: 'x1', network: 'lan' }), 11, /not running/);
    expect(await vms()).toEqual([]);
    expect(await routes()).toEqual([]);
  });

  it('fails closed: all-tor without Tor configured, or a missing network, attaches nothing', async () => {
    failedWith(await hook(d.socket, ['ADD'], { vm: 'tor1', network: 'lan', route: 'all-tor' }), 101, /needs Tor.*no tor section.*nothing was attached/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'tor1', network: 'lan', torPorts: [443] }), 101, /needs Tor/);
    failedWith(await hook(d.socket, ['ADD'], { vm: 'tor1', network: 'nonet', route: 'direct' }), 101, /no mvnet network named nonet/);
    expect(await vms()).toEqual([]);
    expect(await routes()).toEqual([]);
    const st = JSON.parse((await runCli(d.socket, ['status'], { json: true })).stdout) as StatusInfo;
    expect(existsSync(`${st.daemon.vmSocketDir}/tor1.qemu.sock`)).toBe(false);
  });

  it('an OCI runtime state: createRuntime attaches by the annotations, poststop detaches', async () => {
    const id = 'a'.repeat(64);
    const state = { ociVersion: '1.0.2', id, status: 'creating', pid: process.pid, bundle: '/nonexistent/bundle', annotations: { 'mvnet.network': 'lan', 'mvnet.route': 'direct', 'mvnet.device': 'qemu-dgram', 'other.key': 'x' } };
    const add = await hook(d.socket, [], state);
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    const vm = add.json.vm as string;
    expect(vm).toMatch(/^h-[0-9a-f]{24}$/);
    expect(add.json.id).toBe(id);
    const dev = add.json.device as { kind: string; socket: string; mvnetSocket: string };
    expect(dev.kind).toBe('qemu-dgram');
    expect(add.json.qemuArgs).toEqual(['-netdev', `dgram,id=net0,local.type=unix,local.path=${dev.socket},remote.type=unix,remote.path=${dev.mvnetSocket}`, '-device', `virtio-net-pci,netdev=net0,mac=${String(add.json.mac)}`]);
    expect((await vms()).map((v) => [v.name, v.port.kind])).toEqual([[vm, 'dgram']]);
    expect((await hook(d.socket, ['CHECK'], { ...state, status: 'running' })).code).toBe(0);
    failedWith(await hook(d.socket, [], { ...state, annotations: { 'mvnet.colour': 'red' } }), 2, /unknown annotation mvnet.colour/);
    // The container's author may not say where on the host the (root) hook acts.
    for (const [k, v] of [['netns', '/proc/1/ns/net'], ['socket', '/tmp/evil.sock'], ['path', '/etc/x.sock'], ['ifname', 'eth0']]) {
      failedWith(await hook(d.socket, [], { ...state, annotations: { 'mvnet.network': 'lan', 'mvnet.device': 'tap', [`mvnet.${k}`]: v } }), 2, new RegExp(`annotation mvnet.${k} is refused`));
    }
    // A QEMU still bound to its datagram socket: DEL leaves that socket alone (it is live).
    const qemu = spawnProcess(['python3', '-c', 'import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); print("bound", flush=True); sys.stdin.read()', dev.socket], { stdin: true, label: 'fake QEMU dgram' });
    await qemu.waitForLine((l) => l === 'bound');
    const del = await hook(d.socket, [], { ...state, status: 'stopped' });
    expect(del.code, JSON.stringify(del.json)).toBe(0);
    expect(del.json).toMatchObject({ vm, detached: true, routeCleared: true, removed: null });
    expect(existsSync(dev.socket)).toBe(true);
    await qemu.stop();
    rmSync(dev.socket, { force: true });
    expect(existsSync(dev.mvnetSocket)).toBe(false);
    expect(await vms()).toEqual([]);
  });

  it('device tap with a netns: the TAP is made in the namespace, configured, and reaches its gateway', async () => {
    const add = await hook(d.socket, ['ADD'], { vm: 'ct1', network: 'lan', device: 'tap', ifname: 'eth0', netns: ns.name });
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    expect(add.json.qemuArgs).toEqual([]);
    expect(add.json.device).toEqual({ kind: 'tap', ifname: 'eth0', netns: ns.name });
    // The namespace has IPv6 disabled (createNetns): no IPv6 address is claimed.
    expect(add.json.ipv6).toBeNull();
    const addr = (await ns.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout;
    expect(addr).toContain('10.231.0.254/24');
    expect((await ns.exec(['ip', 'route', 'show', 'default'])).stdout).toContain(`default via ${GATEWAY} dev eth0`);
    expect((await ns.exec(['ping', '-c', '1', '-W', '5', GATEWAY], { check: false })).code).toBe(0);
    expect((await hook(d.socket, ['CHECK'], { vm: 'ct1', network: 'lan', device: 'tap', ifname: 'eth0', netns: ns.name })).code).toBe(0);
    const del = await hook(d.socket, ['DEL'], { vm: 'ct1', device: 'tap', ifname: 'eth0', netns: ns.name });
    expect(del.json).toMatchObject({ detached: true });
    expect((await ns.exec(['ip', 'link', 'show', 'eth0'], { check: false })).code).not.toBe(0);
  });
});
