/**
 * The vhost-user back-end (native.VhostDevice) with a real QEMU (tcg) as its front-end, no
 * daemon: the test bridges the device to a TAP (IFF_VNET_HDR, both 'pass' ports) in a namespace
 * where dnsmasq answers DHCP. From inside the VM: a lease, pings, and TCP both ways with
 * checksums. QEMU runs with reconnect=1, as mvnet's users run it; the back-end is then replaced
 * (a new VhostDevice on the same path, as after a daemon restart) and QEMU reconnects without
 * the VM restarting.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNative } from '../../plugins/native/index.js';
import type { NativeDevice, NativeFib, NativeVhostDevice, VhostState } from '../../plugins/native/types.js';
import { cleanupAll, createNetns, makeTempDir, uniqueName, type ManagedProcess, type Netns } from '../support/netns.js';
import { bootVm, buildInitramfs, commandOutput, vmAssets, vmLines } from '../support/qemu-vm.js';

const native = loadNative();
const BOOT_MS = 150_000;
const HOST = '10.231.0.1';
const MAC = '52:54:00:aa:01:02';
const SIZE = 4 << 20;

afterAll(cleanupAll);

const Fib = native.Device.Fib;
// The switch holds its Fib for as long as the network lives; here this list does. (A Fib the
// garbage collector takes while members are bound ends their cut-through: frames go to JS.)
const fibs: NativeFib[] = [];
const newFib = (gatewayMac: number, maxFrame: number): NativeFib => {
  const f = new Fib(gatewayMac, maxFrame);
  fibs.push(f);
  return f;
};
const macNumber = (mac: string): number => Number.parseInt(mac.replaceAll(':', ''), 16);

describe('VhostDevice with a QEMU VM', () => {
  let ns: Netns;
  let dir: string;
  let tap: NativeDevice;
  let vhost: NativeVhostDevice | undefined;
  const states: [VhostState, string][] = [];
  const stateWaiters: (() => void)[] = [];
  /** Resolves once the device has reported `state` (onState is the event). */
  async function reached(state: VhostState, ms: number): Promise<void> {
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no ${state} within ${ms} ms: ${JSON.stringify(states)}`)), ms).unref());
    while (!states.some((x) => x[0] === state)) await Promise.race([new Promise<void>((r) => stateWaiters.push(r)), timeout]);
  }
  let dnsmasq: ManagedProcess;
  let sock: string;
  let tapName: string;

  function listen(): NativeVhostDevice {
    rmSync(sock, { force: true });
    const { fd } = native.openUnixListener({ path: sock });
    const dev: NativeVhostDevice = new native.VhostDevice({
      listenFd: fd,
      maxFrame: 1514,
      batch: 64,
      offloads: true,
      onRead(count, start) {
        const frames: Buffer[] = [];
        for (let i = start; i < count; i++) frames.push(dev.buffer.subarray(i * dev.slotSize, i * dev.slotSize + dev.lengths[i]!));
        tap.write(frames, frames.length);
      },
      onState(state, detail) {
        states.push([state, detail]);
        for (const w of stateWaiters.splice(0)) w();
      },
    });
    dev.start();
    return dev;
  }

  /**
   * A TCP receiver in the namespace, listening once this resolves: it reads exactly SIZE bytes
   * (busybox nc does not half-close), closes, and prints "<md5> <bytes>" as its second line.
   */
  async function receiver(port: number, label: string): Promise<ManagedProcess> {
    const recv = ns.spawn(['python3', '-c', `import socket,hashlib
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('${HOST}',${port})); s.listen(1); print('ready',flush=True)
c,_=s.accept(); h=hashlib.md5(); n=0
while n<${SIZE}:
  b=c.recv(65536)
  if not b: break
  h.update(b); n+=len(b)
print(h.hexdigest(), n, flush=True); c.close()`], { label });
    await recv.waitForLine((l) => l === 'ready');
    return recv;
  }

  beforeAll(async () => {
    dir = makeTempDir('vhn');
    sock = join(dir, 'vm.sock');
    ns = await createNetns('vhn');
    const name = uniqueName('vhn');
    tapName = name;
    const t = native.openTun({ name, tap: true, vnetHdr: true, netns: ns.path });
    native.configureLink({ name, netns: ns.path, up: true, mtu: 1500 });
    await ns.addAddr(name, `${HOST}/24`);
    tap = new native.Device({
      fd: t.fd,
      mode: 'packet',
      maxFrame: 65550 + 10,
      batch: 64,
      queueFrames: 256,
      queueBytes: 4 << 20,
      onRead(count: number, start?: number) {
        const frames: Buffer[] = [];
        for (let i = start ?? 0; i < count; i++) frames.push(tap.buffer.subarray(i * 65560, i * 65560 + tap.lengths[i]!));
        vhost?.write(frames, frames.length);
      },
      onError() {},
    });
    tap.start();
    dnsmasq = ns.spawn(['dnsmasq', '--no-daemon', '--conf-file=/dev/null', '--port=0', `--interface=${name}`, '--bind-interfaces',
      '--dhcp-range=10.231.0.50,10.231.0.60,1h', `--dhcp-leasefile=${join(dir, 'leases')}`, '--dhcp-authoritative'], { label: 'dnsmasq' });
    vhost = listen();
  });

  afterAll(() => {
    vhost?.close();
    tap?.close();
  });

  it('lease, pings, 4 MiB each way intact; a back-end restart is survived', { timeout: BOOT_MS + 60_000 }, async () => {
    const assets = vmAssets();
    // The namespace's ends in python: the receiver, and a sender that closes after its data.
    const recv = await receiver(5001, 'recv');
    const send = ns.spawn(['python3', '-c', `import socket,hashlib,os
d=os.urandom(${SIZE}); print(hashlib.md5(d).hexdigest(),flush=True)
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('${HOST}',5002)); s.listen(1)
c,_=s.accept(); c.sendall(d); c.close()`], { label: 'send' });
    await send.waitForLine((l) => /^[0-9a-f]{32}$/.test(l));
    const initrd = buildInitramfs(dir, assets, [
      { name: 'ping', sh: `ping -c 3 -W 5 ${HOST}` },
      { name: 'up', sh: `head -c ${SIZE} /dev/urandom > /tmp/up; md5sum /tmp/up; nc ${HOST} 5001 < /tmp/up` },
      { name: 'down', sh: `nc ${HOST} 5002 | md5sum` },
      // The test replaces the back-end when it sees this line, then connects here from the
      // namespace (traffic resumed); then the VM pings again.
      { name: 'wait', sh: 'echo MVT-RESTART-NOW; nc -l -p 6000' },
      { name: 'ping2', sh: `i=0; until ping -c 1 -W 1 ${HOST}; do i=$((i+1)); [ $i -gt 30 ] && exit 1; done` },
    ]);
    const qemu = bootVm(assets, initrd, [
      '-object', 'memory-backend-memfd,id=mem,size=256M,share=on',
      '-numa', 'node,memdev=mem',
      '-chardev', `socket,id=c0,path=${sock},reconnect=1`,
      '-netdev', 'vhost-user,id=n0,chardev=c0',
      '-device', `virtio-net-pci,netdev=n0,vectors=0,mac=${MAC}`,
    ], 'qemu vhost');
    await qemu.waitForLine((l) => l.includes('MVT-RESTART-NOW') || l.startsWith('MVT-DONE'), { timeoutMs: BOOT_MS });
    const lines = vmLines(qemu);
    expect(lines.find((l) => l.startsWith('MVT-LEASE ')), lines.join('\n')).toMatch(/ip=10\.231\.0\.5\d mask=24/);
    expect(commandOutput(qemu, 'ping')?.rc, lines.join('\n')).toBe(0);
    const up = commandOutput(qemu, 'up');
    await recv.exited;
    expect(recv.lines[1], vmLines(qemu).join('\n')).toBe(`${up?.out.split(' ')[0]} ${SIZE}`);
    const down = commandOutput(qemu, 'down');
    await send.exited;
    expect(down?.out.split(' ')[0]).toBe(send.lines[0]);
    const s = vhost!.stats();
    expect(s).toMatchObject({ state: 'running', violations: 0, regions: expect.any(Number) as number, guestCsum: true, guestTso4: true });
    expect(s.memBytes).toBe(256 << 20);
    expect(states.map((x) => x[0])).toEqual(['connected', 'running']);

    // A back-end restart (the daemon killed): QEMU reconnects to a new device on the same path.
    vhost!.close();
    states.length = 0;
    vhost = listen();
    const guest = /ip=(\S+)/.exec(lines.find((l) => l.startsWith('MVT-LEASE '))!)![1]!;
    await reached('running', 30_000);  // QEMU reconnected and the guest's rings run again
    for (let i = 0; ; i++) {
      const r = await ns.exec(['sh', '-c', `echo go | busybox nc -w 2 ${guest} 6000`], { check: false });
      if (r.code === 0) break;
      if (i > 20) throw new Error(`no TCP to the guest after the restart: ${r.stderr}`);
    }
    await qemu.waitForLine((l) => l.startsWith('MVT-DONE'), { timeoutMs: 60_000 });
    expect(commandOutput(qemu, 'ping2')?.rc, vmLines(qemu).join('\n')).toBe(0);
    // After MVT-DONE the VM powers off, which stops the device and closes the socket: 'connected'
    // and 'listening' may follow at any moment, so the states seen, not the state now.
    expect(states.map((x) => x[0]).slice(0, 2)).toEqual(['connected', 'running']);
    expect(states.slice(2).every(([x]) => x === 'connected' || x === 'listening'), JSON.stringify(states)).toBe(true);
    expect(vhost.stats()).toMatchObject({ connections: 1, violations: 0 });
    void dnsmasq;
  });

  it('with cut-through (the VM and the TAP bound to a Fib): pings and TCP cross natively, intact; host_mtu reaches the guest', { timeout: BOOT_MS + 60_000 }, async () => {
    vhost?.close();
    vhost = listen();
    const fib = newFib(0x02_6d_76_00_ff_01, 1514);
    const fwd = { vm: 0, tap: 0 };
    vhost.bindSwitch(fib, 1, 14, 1514, macNumber(MAC), (n) => (fwd.vm += n));
    const tapMac = macNumber(await ns.mac(tapName));
    tap.bindSwitch(fib, 1, 14, 1514, tapMac, (n) => (fwd.tap += n));
    expect(fib.set(macNumber(MAC), vhost, 600_000)).toBe(true);
    expect(fib.set(tapMac, tap, 600_000)).toBe(true);
    const assets = vmAssets();
    const recv = await receiver(5003, 'recv cut');
    const initrd = buildInitramfs(dir, assets, [
      { name: 'mtu', sh: 'cat /sys/class/net/eth0/mtu' },
      { name: 'ping', sh: `ping -c 3 -W 5 ${HOST}` },
      { name: 'up', sh: `head -c ${SIZE} /dev/urandom > /tmp/up; md5sum /tmp/up; nc ${HOST} 5003 < /tmp/up` },
    ]);
    const qemu = bootVm(assets, initrd, [
      '-object', 'memory-backend-memfd,id=mem,size=256M,share=on',
      '-numa', 'node,memdev=mem',
      '-chardev', `socket,id=c0,path=${sock},reconnect=1`,
      '-netdev', 'vhost-user,id=n0,chardev=c0',
      // host_mtu reaches the guest only when the back-end offers VIRTIO_NET_F_MTU.
      '-device', `virtio-net-pci,netdev=n0,vectors=0,mac=${MAC},host_mtu=1400`,
    ], 'qemu vhost cut');
    await qemu.waitForLine((l) => l.startsWith('MVT-DONE'), { timeoutMs: BOOT_MS });
    const lines = vmLines(qemu);
    expect(commandOutput(qemu, 'mtu')?.out, lines.join('\n')).toBe('1400');
    expect(commandOutput(qemu, 'ping')?.rc, lines.join('\n')).toBe(0);
    await recv.exited;
    expect(recv.lines[1], lines.join('\n')).toBe(`${commandOutput(qemu, 'up')?.out.split(' ')[0]} ${SIZE}`);
    vhost.flushForwarded();
    tap.flushForwarded();
    // The pings and the transfer went natively both ways (DHCP and ARP through JS).
    expect(fwd.vm, JSON.stringify(vhost.stats())).toBeGreaterThan(100);
    expect(fwd.tap).toBeGreaterThan(50);
    expect(vhost.stats()).toMatchObject({ violations: 0, dropBadOffload: 0 });
  });
});
