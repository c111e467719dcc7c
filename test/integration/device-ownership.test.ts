/**
 * Detach removes only what mvnet created. A TAP or TUN the admin made (`ip tuntap add`, which
 * makes it persistent) with its own MTU, MAC and up/down state is used while attached and
 * given back as it was found at detach — also when the daemon restarted (or was killed) in
 * between, and also when a control caller claims in its request that mvnet created it. A TAP
 * mvnet created is deleted at detach, across a restart too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRpc, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, createNetns, uniqueName, type Netns } from '../support/netns.js';

afterAll(cleanupAll);

const ADMIN_MAC = '02:ad:00:00:00:07';
const VM_MAC = '52:54:00:ad:00:01';

describe('devices mvnet did not create are left as they were', () => {
  let d: Daemon;
  let ns: Netns;

  /** An admin's TAP/TUN inside `ns`: persistent, MTU 1400, its own MAC (TAP), down. */
  async function adminDevice(mode: 'tap' | 'tun'): Promise<string> {
    const name = uniqueName('adm');
    await ns.exec(['ip', 'tuntap', 'add', 'dev', name, 'mode', mode]);
    await ns.exec(['ip', 'link', 'set', 'dev', name, 'mtu', '1400', ...(mode === 'tap' ? ['address', ADMIN_MAC] : [])]);
    return name;
  }

  async function expectAsFound(name: string, mac: string | undefined): Promise<void> {
    const l = await ns.link(name);
    expect(l, `${name} must still exist`).toBeDefined();
    expect(l!.mtu).toBe(1400);
    if (mac !== undefined) expect(l!.address).toBe(mac);
    expect(l!.flags).not.toContain('UP');
  }

  beforeAll(async () => {
    d = await startDaemon();
    ns = await createNetns('own');
    await d.cliOk(['net', 'create', 'O', '--subnet', '10.77.30.0/24', '--mtu', '9000']);
  });

  it('an admin TAP: attach changes MTU, MAC, up; detach gives them back and keeps the device', async () => {
    const name = await adminDevice('tap');
    await d.cliOk(['vm', 'attach', 'o1', '--net', 'O', '--tap', name, '--netns', ns.name, '--mac', VM_MAC]);
    const l = await ns.link(name);
    expect(l).toMatchObject({ mtu: 9000, address: VM_MAC });
    expect(l!.flags).toContain('UP');
    await d.cliOk(['vm', 'detach', 'o1']);
    await expectAsFound(name, ADMIN_MAC);
  });

  it('an admin TAP across a kill -9 and a graceful restart between attach and detach', async () => {
    const name = await adminDevice('tap');
    await d.cliOk(['vm', 'attach', 'o2', '--net', 'O', '--tap', name, '--netns', ns.name, '--mac', VM_MAC]);
    await d.kill('SIGKILL');
    await d.start();
    await d.restart();
    expect((await d.vm('o2')).port.state).toBe('up');
    // The device now carries mvnet's settings; only the saved record knows what it was.
    expect((await ns.link(name))?.mtu).toBe(9000);
    await d.cliOk(['vm', 'detach', 'o2']);
    await expectAsFound(name, ADMIN_MAC);
  });

  it('an admin TUN across a restart', async () => {
    const name = await adminDevice('tun');
    await d.cliOk(['vm', 'attach', 'o3', '--net', 'O', '--tun', name, '--netns', ns.name]);
    await d.restart();
    await d.cliOk(['vm', 'detach', 'o3']);
    await expectAsFound(name, undefined);
  });

  it('a caller cannot claim in its request that mvnet created the device', async () => {
    const name = await adminDevice('tap');
    const r = await rawRpc(d.socket, 'vm.attach', { name: 'o4', net: 'O', port: { kind: 'tap', ifname: name, netns: ns.name }, device: { created: true } });
    expect(r.error).toBeUndefined();
    await d.restart();
    await d.cliOk(['vm', 'detach', 'o4']);
    await expectAsFound(name, ADMIN_MAC);
  });

  it('a TAP mvnet created is deleted at detach, also after a restart', async () => {
    const name = uniqueName('own');
    await d.cliOk(['vm', 'attach', 'o5', '--net', 'O', '--tap', name, '--netns', ns.name]);
    await ns.waitForLink(name);
    await d.kill('SIGKILL');
    await d.start();
    expect(await ns.link(name)).toBeDefined();
    await d.cliOk(['vm', 'detach', 'o5']);
    expect(await ns.link(name)).toBeUndefined();
  });

  it('net delete --force treats an admin TAP the same way', async () => {
    await d.cliOk(['net', 'create', 'P', '--subnet', '10.77.31.0/24', '--mtu', '9000']);
    const name = await adminDevice('tap');
    await d.cliOk(['vm', 'attach', 'o6', '--net', 'P', '--tap', name, '--netns', ns.name, '--mac', VM_MAC]);
    await d.cliOk(['net', 'delete', 'P', '--force']);
    await expectAsFound(name, ADMIN_MAC);
  });
});
