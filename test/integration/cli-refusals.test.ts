/**
 * Requests that cannot work are refused with one line saying why, and change nothing: subnets
 * the host routes elsewhere or that are not unicast, IPv6 prefixes SLAAC cannot serve, host
 * bits, an --ip another VM holds or that is not a host address, the loopback interface (by any
 * name), VM names that are CLI words, and routes for VMs nobody attached (unless --create).
 * The daemon refuses the same when a caller talks JSON-RPC to it directly.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRpc, startDaemon, type Daemon, refused } from '../support/daemon.js';
import { cleanupAll, createNetns, makeTempDir, type Netns } from '../support/netns.js';
import type { NetInfo, RouteInfo, VmInfo } from '../../daemon/control/api.js';

afterAll(cleanupAll);


describe('refusals', () => {
  let d: Daemon;
  let dir: string;
  let ns: Netns;
  const sock = (n: string): string => join(dir, `${n}.sock`);

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('ref');
    ns = await createNetns('ref');
    await d.cliOk(['net', 'create', 'A', '--subnet', '10.77.40.0/24']);
    await d.cliOk(['net', 'create', 'B', '--subnet', '10.77.41.0/24']);
  });

  describe('net create', () => {
    for (const [subnet, reason] of [
      ['127.0.0.0/24', 'loopback (127.0.0.0/8)'],
      ['127.0.0.0/8', 'loopback (127.0.0.0/8)'],
      ['224.1.0.0/16', 'multicast (224.0.0.0/4)'],
      ['239.255.0.0/24', 'multicast (224.0.0.0/4)'],
      ['240.0.0.0/8', 'reserved (240.0.0.0/4)'],
      ['255.255.255.0/24', 'reserved (240.0.0.0/4)'],
      ['0.0.0.0/8', '"this network" (0.0.0.0/8)'],
      ['0.1.0.0/16', '"this network" (0.0.0.0/8)'],
      ['169.254.0.0/16', 'link-local (169.254.0.0/16)'],
      ['169.254.7.0/24', 'link-local (169.254.0.0/16)'],
      ['169.0.0.0/8', 'link-local (169.254.0.0/16)'],
      ['10.77.42.5/24', 'host bits set; the network is 10.77.42.0/24'],
      ['10.77.42.128/16', 'host bits set; the network is 10.77.0.0/16'],
    ] as const) {
      it(`refuses --subnet ${subnet}`, async () => {
        refused(await d.cli(['net', 'create', 'X', '--subnet', subnet]), reason);
      });
    }

    for (const [prefix, reason] of [
      ['fd00:42::/48', 'must be a /64'],
      ['fd00:42::/80', 'must be a /64'],
      ['2001:db8::/56', 'must be a /64'],
      ['fe80::/64', 'link-local (fe80::/10)'],
      ['febf:1::/64', 'link-local (fe80::/10)'],
      ['ff02::/64', 'multicast (ff00::/8)'],
      ['::/64', 'in ::/8 (loopback'],
      ['::1/128', 'must be a /64'],
      ['64:ff9b::/64', 'in ::/8 (loopback'],
      ['fd00:42::1/64', 'host bits set; the prefix is fd00:42::/64'],
      ['fd00:42:0:0:8000::/64', 'host bits set; the prefix is fd00:42::/64'],
    ] as const) {
      it(`refuses --ipv6 ${prefix}`, async () => {
        refused(await d.cli(['net', 'create', 'X', '--subnet', '10.77.42.0/24', '--ipv6', prefix]), reason);
      });
    }

    it('created none of them, and still takes a good network', async () => {
      const list = await d.cliJson<NetInfo[]>(['net', 'list']);
      expect(list.map((n) => n.name).sort()).toEqual(['A', 'B']);
      const n = await d.cliJson<NetInfo>(['net', 'create', 'G', '--subnet', '10.77.42.0/24', '--ipv6', 'fd00:42::/64']);
      expect(n).toMatchObject({ subnet: '10.77.42.0/24', ipv6: 'fd00:42::/64' });
      await d.cliOk(['net', 'delete', 'G']);
    });
  });

  describe('vm attach', () => {
    beforeAll(async () => {
      await d.cliOk(['vm', 'attach', 'a1', '--net', 'A', '--unix-listen', sock('a1'), '--ip', '10.77.40.5']);
    });

    it('refuses an --ip another VM on the network holds', async () => {
      refused(await d.cli(['vm', 'attach', 'a2', '--net', 'A', '--unix-listen', sock('a2'), '--ip', '10.77.40.5']), 'ip 10.77.40.5 is already used by VM a1 on A');
    });

    it('takes the same --ip on another network', async () => {
      const v = await d.cliJson<VmInfo>(['vm', 'attach', 'b1', '--net', 'B', '--unix-listen', sock('b1'), '--ip', '10.77.41.5']);
      expect(v.ip).toBe('10.77.41.5');
    });

    for (const [ip, reason] of [
      ['10.77.40.1', 'is the gateway address of A'],
      ['10.77.40.0', 'is the network address of'],
      ['10.77.40.255', 'is the broadcast address of'],
      ['10.77.41.9', 'is not a host address of'],
    ] as const) {
      it(`refuses --ip ${ip}`, async () => {
        refused(await d.cli(['vm', 'attach', 'a2', '--net', 'A', '--unix-listen', sock('a2'), '--ip', ip]), reason);
      });
    }

    it('refuses --iface lo, in the host and in a namespace', async () => {
      refused(await d.cli(['vm', 'attach', 'a2', '--net', 'A', '--iface', 'lo']), 'loopback interface');
      refused(await d.cli(['vm', 'attach', 'a2', '--net', 'A', '--iface', 'lo', '--netns', ns.name]), 'loopback interface');
    });

    it('refuses a loopback interface under another name', async () => {
      const other = await createNetns('reflo');
      await other.exec(['ip', 'link', 'set', 'dev', 'lo', 'name', 'lb0']);
      refused(await d.cli(['vm', 'attach', 'a2', '--net', 'A', '--iface', 'lb0', '--netns', other.name]), 'lb0 is a loopback interface');
    });

    for (const name of ['show', 'help', 'list', 'clear', 'Show', 'drops']) {
      it(`refuses the VM name ${name}`, async () => {
        refused(await d.cli(['vm', 'attach', name, '--net', 'A', '--unix-listen', sock('r')]), `name "${name}" is reserved`);
      });
    }

    it('attached none of them', async () => {
      const vms = await d.cliJson<VmInfo[]>(['vm', 'list']);
      expect(vms.map((v) => v.name).sort()).toEqual(['a1', 'b1']);
    });
  });

  describe('route', () => {
    it('refuses a route for a VM nobody attached, and keeps none', async () => {
      refused(await d.cli(['route', '--direct', 'nosuchvm']), 'use --create');
      refused(await d.cli(['route', '--tor-ports', '80', 'nosuchvm']), 'use --create');
      const routes = await d.cliJson<RouteInfo[]>(['route', 'show']);
      expect(routes.map((r) => r.vm)).not.toContain('nosuchvm');
      refused(await d.cli(['route', 'show', 'nosuchvm']), 'nosuchvm');
    });

    it('does not take command words as VM names', async () => {
      refused(await d.cli(['route', '--direct', 'show']), "'route show' takes no route options (got --direct)");
      refused(await d.cli(['route', '--direct', 'help']), 'is a command word, not a VM name');
      refused(await d.cli(['route', '--none', '--create', 'list']), 'is a command word, not a VM name');
      const routes = await d.cliJson<RouteInfo[]>(['route', 'show']);
      expect(routes.map((r) => r.vm).sort()).toEqual(['a1', 'b1']);
    });

    it('sets a route for a VM not attached yet with --create; the VM gets it at attach', async () => {
      const r = await d.cliJson<RouteInfo>(['route', '--direct', '--create', 'later']);
      expect(r).toMatchObject({ vm: 'later', attached: false, route: { kind: 'direct' } });
      // Known now: a change needs no --create.
      await d.cliOk(['route', '--none', 'later']);
      await d.cliOk(['route', '--direct', 'later']);
      const v = await d.cliJson<VmInfo>(['vm', 'attach', 'later', '--net', 'A', '--unix-listen', sock('later')]);
      expect(v.routeText).toMatch(/^direct/);
    });

    it('route --clear forgets a route: an attached VM goes back to none, a detached one is gone', async () => {
      const cleared = await d.cliJson<RouteInfo>(['route', '--clear', 'later']);
      expect(cleared).toMatchObject({ vm: 'later', attached: true, route: { kind: 'none' } });
      await d.cliOk(['route', '--direct', 'later']);
      await d.cliOk(['vm', 'detach', 'later']);
      // Kept across detach, until cleared.
      expect((await d.cliJson<RouteInfo[]>(['route', 'show', 'later']))[0]).toMatchObject({ attached: false, route: { kind: 'direct' } });
      expect(await d.cliOk(['route', '--clear', 'later'])).toContain('later');
      refused(await d.cli(['route', 'show', 'later']), 'no VM named later');
      // A VM given that name later does not inherit anything.
      const v = await d.cliJson<VmInfo>(['vm', 'attach', 'later', '--net', 'A', '--unix-listen', sock('later2')]);
      expect(v.routeText).toMatch(/^none/);
      await d.cliOk(['vm', 'detach', 'later']);
    });

    it('refuses --clear for an unknown VM and with route options', async () => {
      refused(await d.cli(['route', '--clear', 'nosuchvm']), 'no VM named nosuchvm');
      refused(await d.cli(['route', '--clear', '--direct', 'a1']), '--clear takes no other route option');
    });
  });

  describe('the daemon checks the same without the CLI', () => {
    it('refuses reserved VM names and unknown VMs over JSON-RPC', async () => {
      for (const vm of ['show', 'help']) {
        expect((await rawRpc(d.socket, 'route.set', { vm, route: { kind: 'direct' }, create: true })).error?.message).toMatch(/reserved/);
        expect((await rawRpc(d.socket, 'vm.attach', { name: vm, net: 'A', port: { kind: 'unix-listen', path: sock('rpc') } })).error?.message).toMatch(/reserved/);
      }
      expect((await rawRpc(d.socket, 'route.set', { vm: 'ghost', route: { kind: 'direct' } })).error?.message).toMatch(/--create/);
      expect((await rawRpc(d.socket, 'route.set', { vm: 'a1', route: { kind: 'via', vm: 'show' } })).error?.message).toMatch(/no VM named show/);
      expect((await rawRpc(d.socket, 'route.clear', { vm: 'ghost' })).error?.message).toMatch(/no VM named ghost/);
      expect((await rawRpc(d.socket, 'vm.attach', { name: 'a3', net: 'A', port: { kind: 'iface', ifname: 'lo' } })).error?.message).toMatch(/loopback/);
      expect((await rawRpc(d.socket, 'net.create', { name: 'X', subnet: '127.1.0.0/16' })).error?.message).toMatch(/loopback/);
      const routes = await d.cliJson<RouteInfo[]>(['route', 'show']);
      expect(routes.map((r) => r.vm).sort()).toEqual(['a1', 'b1']);
    });
  });
});

describe('a state saved before these refusals', () => {
  it('keeps its networks and VMs; a VM with a now reserved name can still be detached', async () => {
    const stateDir = makeTempDir('refst');
    const state = {
      version: 1,
      networks: [{ name: 'old', subnet: '10.77.43.0/24', gateway: '10.77.43.1', ipv6: 'fd00:43::/48', mtu: 1500 }],
      vms: [{ name: 'show', net: 'old', port: { kind: 'unix-listen', path: join(stateDir, 'show.sock') } }],
      routes: { show: { kind: 'direct' } },
    };
    writeFileSync(join(stateDir, 'state.json'), JSON.stringify(state));
    const d = await startDaemon({ stateDir });
    const nets = await d.cliJson<NetInfo[]>(['net', 'list']);
    expect(nets).toMatchObject([{ name: 'old', ipv6: 'fd00:43::/48', vms: ['show'] }]);
    expect(d.logs.some((l) => l.msg === 'a saved network would be refused today; kept as it was')).toBe(true);
    expect((await d.cliJson<VmInfo[]>(['vm', 'list'])).map((v) => v.name)).toEqual(['show']);
    expect(await d.cliOk(['vm', 'detach', 'show'])).toContain('show');
    expect(await d.cliJson<VmInfo[]>(['vm', 'list'])).toEqual([]);
  });
});
