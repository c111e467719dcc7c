/**
 * A real VM end to end: `mvnet hook ADD` gives the QEMU arguments, QEMU (tcg) boots Debian's
 * cloud kernel with a busybox initramfs built by the test, and from inside the VM: the DHCP
 * lease mvnet gives (the address and MAC the hook announced), a ping to the gateway, and with
 * the direct route an HTTP fetch from the upstream namespace. Then `mvnet hook DEL` leaves no
 * attachment, route or socket behind. Once with a QEMU stream socket (the default), once with a
 * datagram socket and the default route none (the fetch must fail, the gateway still answers).
 *
 * One VM at a time: tcg is CPU-heavy. The daemon runs in the topology's router namespace; QEMU
 * and the hook talk to it through unix sockets only.
 */
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS } from '../support/daemon.js';
import { cleanupAll, makeTempDir, run } from '../support/netns.js';
import { startTopology, UPSTREAM_IP, type Topology } from '../support/stack-topology.js';
import { bootVm, buildInitramfs, commandOutput, vmAssets, vmLines, type VmAssets } from '../support/qemu-vm.js';
import type { RouteInfo, StatusInfo, VmInfo } from '../../daemon/control/api.js';

const SUBNET = '10.232.0.0/24';
const GATEWAY = '10.232.0.1';
const BOOT_MS = 150_000;

interface AddResult {
  vm: string;
  mac: string;
  qemuArgs: string[];
  ipv4: { address: string; gateway: string };
  device: { kind: string; socket: string; mvnetSocket?: string };
  dns: { nameservers: string[]; domain: string };
}

afterAll(cleanupAll);

describe('a QEMU VM wired by mvnet hook', () => {
  let t: Topology;
  let assets: VmAssets;
  let vmDir: string;

  async function hook(cmd: string, cfg: Record<string, unknown>, netns?: string): Promise<Record<string, unknown>> {
    const r = await run(['node', CLI_JS, '--socket', t.daemon.socket, 'hook', cmd], { input: JSON.stringify(cfg), check: false, ...(netns !== undefined ? { netns } : {}) });
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(r.code, r.stdout).toBe(0);
    return out;
  }

  async function leftovers(vm: string): Promise<{ vms: VmInfo[]; routes: RouteInfo[]; files: string[] }> {
    const vms = JSON.parse(await t.cli(['--json', 'vm', 'list'])) as VmInfo[];
    const routes = JSON.parse(await t.cli(['--json', 'route', 'show'])) as RouteInfo[];
    return { vms, routes, files: readdirSync(vmDir).filter((f) => f.startsWith(vm)) };
  }

  beforeAll(async () => {
    assets = vmAssets();
    t = await startTopology({ prefix: 'hq' });
    await t.cli(['net', 'create', 'lan', '--subnet', SUBNET]);
    vmDir = (JSON.parse(await t.cli(['--json', 'status'])) as StatusInfo).daemon.vmSocketDir;
  });

  it('stream socket, direct route: DHCP lease, ping to the gateway, HTTP from upstream; DEL leaves nothing', { timeout: BOOT_MS + 30_000 }, async () => {
    const add = (await hook('ADD', { vm: 'qvm-stream', network: 'lan', route: 'direct' })) as unknown as AddResult;
    expect(add.qemuArgs[1]).toMatch(/^stream,id=net0,server=on,addr.type=unix,addr.path=/);
    const dir = makeTempDir('hq-vm');
    const initrd = buildInitramfs(dir, assets, [
      { name: 'ping', sh: `ping -c 1 -W 10 ${GATEWAY}` },
      { name: 'http', sh: `timeout 20 wget -q -O - http://${UPSTREAM_IP}/hello` },
    ]);
    const qemu = bootVm(assets, initrd, add.qemuArgs, 'qemu stream');
    await qemu.waitForLine((l) => l.startsWith('MVT-DONE'), { timeoutMs: BOOT_MS });
    expect((await qemu.exited).code, vmLines(qemu).join('\n')).toBe(0);
    const lines = vmLines(qemu);
    expect(lines.filter((l) => l.startsWith('MVT-INSMOD-FAILED')), lines.join('\n')).toEqual([]);
    expect(lines).toContain(`MVT-MAC ${add.mac}`);
    const lease = lines.find((l) => l.startsWith('MVT-LEASE '));
    expect(lease, lines.join('\n')).toBeDefined();
    // The address the hook announced is the one DHCP gives (a reservation from the start).
    expect(lease).toContain(`ip=${add.ipv4.address.split('/')[0]} mask=24 router=${GATEWAY} dns=${GATEWAY} domain=lan.mvnet`);
    expect(commandOutput(qemu, 'ping')?.rc, commandOutput(qemu, 'ping')?.out).toBe(0);
    expect(commandOutput(qemu, 'http')).toEqual({ out: 'hello', rc: 0 });

    const del = await hook('DEL', { vm: 'qvm-stream' });
    expect(del).toMatchObject({ detached: true, routeCleared: true });
    // QEMU 7.2 removes its server socket when it exits; a stale one would be removed by DEL (hook.test.ts).
    expect(await leftovers('qvm-stream')).toEqual({ vms: [], routes: [], files: [] });
  });

  it('datagram socket, default route none: DHCP lease and the gateway, nothing beyond until the route changes live (CHECK while it runs); DEL leaves nothing', { timeout: BOOT_MS + 30_000 }, async () => {
    const add = (await hook('ADD', { vm: 'qvm-dgram', network: 'lan', device: 'qemu-dgram' })) as unknown as AddResult;
    expect(add.qemuArgs[1]).toBe(`dgram,id=net0,local.type=unix,local.path=${add.device.socket},remote.type=unix,remote.path=${add.device.mvnetSocket}`);
    const dir = makeTempDir('hq-vm');
    const initrd = buildInitramfs(dir, assets, [
      { name: 'ping', sh: `ping -c 1 -W 10 ${GATEWAY}` },
      { name: 'http', sh: `timeout 10 wget -q -O - http://${UPSTREAM_IP}/hello` },
      // Waits (inside the VM) until the host has changed the route: then the fetch works.
      { name: 'wait-route', sh: `echo MVT-UP; i=0; until timeout 5 wget -q -O - http://${UPSTREAM_IP}/hello; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.3; done` },
    ]);
    const qemu = bootVm(assets, initrd, add.qemuArgs, 'qemu dgram');
    await qemu.waitForLine((l) => l.startsWith('MVT-UP'), { timeoutMs: BOOT_MS });
    // While the VM runs: CHECK sees its device up, then the route changes live, without touching the VM.
    const check = await hook('CHECK', { vm: 'qvm-dgram', network: 'lan', device: 'qemu-dgram' });
    expect(check).toMatchObject({ ok: true, state: 'up' });
    await t.cli(['route', '--direct', 'qvm-dgram']);
    await qemu.waitForLine((l) => l.startsWith('MVT-DONE'), { timeoutMs: BOOT_MS });
    expect((await qemu.exited).code).toBe(0);
    const lines = vmLines(qemu);
    expect(lines).toContain(`MVT-MAC ${add.mac}`);
    expect(lines.find((l) => l.startsWith('MVT-LEASE ')), lines.join('\n')).toContain(`ip=${add.ipv4.address.split('/')[0]} mask=24 router=${GATEWAY}`);
    expect(commandOutput(qemu, 'ping')?.rc).toBe(0);
    const http = commandOutput(qemu, 'http');
    expect(http?.rc).not.toBe(0);
    expect(http?.out).not.toContain('hello');
    expect(commandOutput(qemu, 'wait-route')?.rc).toBe(0);
    expect(commandOutput(qemu, 'wait-route')?.out).toContain('hello');

    const del = await hook('DEL', { vm: 'qvm-dgram', device: 'qemu-dgram' });
    expect(del).toMatchObject({ detached: true });
    expect(await leftovers('qvm-dgram')).toEqual({ vms: [], routes: [], files: [] });
  });

  it('a TAP for QEMU -netdev tap (made by the hook in the daemon\'s namespace), direct route; DEL deletes the TAP', { timeout: BOOT_MS + 30_000 }, async () => {
    // The hook runs where the daemon runs: it makes the TAP there and mvnet reads its other side.
    const ns = t.router.name;
    const add = (await hook('ADD', { vm: 'qvm-tap', network: 'lan', device: 'tap', route: 'direct' }, ns)) as unknown as AddResult & { device: { ifname: string } };
    const ifname = add.device.ifname;
    expect(add.qemuArgs[1]).toBe(`tap,id=net0,ifname=${ifname},script=no,downscript=no`);
    expect((await t.router.exec(['ip', '-d', 'link', 'show', 'dev', ifname])).stdout).toContain('tun type tap');
    const dir = makeTempDir('hq-vm');
    const initrd = buildInitramfs(dir, assets, [
      { name: 'ping', sh: `ping -c 1 -W 10 ${GATEWAY}` },
      { name: 'http', sh: `timeout 20 wget -q -O - http://${UPSTREAM_IP}/hello` },
    ]);
    const qemu = bootVm(assets, initrd, add.qemuArgs, 'qemu tap', ns);
    await qemu.waitForLine((l) => l.startsWith('MVT-DONE'), { timeoutMs: BOOT_MS });
    expect((await qemu.exited).code).toBe(0);
    const lines = vmLines(qemu);
    expect(lines.find((l) => l.startsWith('MVT-LEASE ')), lines.join('\n')).toContain(`ip=${add.ipv4.address.split('/')[0]} mask=24 router=${GATEWAY}`);
    expect(commandOutput(qemu, 'ping')?.rc).toBe(0);
    expect(commandOutput(qemu, 'http')).toEqual({ out: 'hello', rc: 0 });

    const del = await hook('DEL', { vm: 'qvm-tap', device: 'tap' }, ns);
    expect(del).toMatchObject({ detached: true, routeCleared: true, removed: ifname });
    expect((await t.router.exec(['ip', 'link', 'show', 'dev', ifname], { check: false })).code).not.toBe(0);
    expect(await leftovers('qvm-tap')).toEqual({ vms: [], routes: [], files: [] });
  });
});
