/**
 * A real QEMU VM on vhost-user (issue 14), wired as a user would: `mvnet hook ADD` with
 * `device: vhost-user` attaches it and hands out QEMU's arguments (the VM's memory as a shared
 * memfd, the chardev with reconnect=1, vectors=0 under tcg), and QEMU boots with exactly those.
 * One VM boot serves the whole file: the VM's initramfs is interactive (the test types commands
 * on its serial console and waits for their end markers), so each step runs when the test says.
 *
 *   VM qvm (QEMU, root ns) ── vhost-user socket ── daemon (router ns) ─┬─ TAP ── VM tapvm (ns)
 *                                                                     └─ TAP --vnet-hdr ── VM vnetvm (ns)
 *
 * From inside the VM: the DHCP lease mvnet gives, ping to the gateway and to the TAP VM, 20 MB
 * over TCP each way with each TAP VM (busybox nc, sha256 compared with the TAP VM's end): the
 * guest's TSO super-frames are segmented by mvnet for the plain TAP and reach the --vnet-hdr
 * one whole (natively cut through; the TAP VM's kernel counts what it received). Then a
 * second vhost-user port (`mvnet vm attach broken --net lan --vhost-user NAME`) gets a fake
 * front-end (test/support/vhost-frontend.ts) that breaks its ring: that port is `down` (broken,
 * with the reason) while qvm keeps moving frames. Then the daemon is killed with SIGKILL and
 * started again: QEMU reconnects by itself (`reconnect=1`), the VM never restarts (the same
 * QEMU process, no second boot), and traffic resumes. Last, `mvnet hook DEL` leaves nothing.
 *
 * Waiting is on events: serial console lines, the daemon's `vm.` events (`mvnet events`), the
 * transfer program's lines. The network rule holds: every address is inside the test's own
 * namespaces (the VM's traffic goes only to mvnet's gateway and the TAP VM).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS } from '../support/daemon.js';
import { cleanupAll, makeTempDir, run, spawnProcess, type ManagedProcess } from '../support/netns.js';
import { startTopology, type Capture, type CapturedPacket, type StackVm, type Topology } from '../support/stack-topology.js';
import { bootVm, buildInitramfs, VM_MEMORY_MB, vmAssets, vmLines, VmConsole, writeTransferProgram } from '../support/qemu-vm.js';
import { DESC_F_NEXT, TX, VhostFrontend } from '../support/vhost-frontend.js';
import type { StatusInfo, VmInfo } from '../../daemon/control/api.js';

const SUBNET = '10.233.0.0/24';
const GATEWAY = '10.233.0.1';
const BOOT_MS = 150_000;
const MB20 = 20 * 1024 * 1024;
const MB8 = 8 * 1024 * 1024;

interface AddResult {
  vm: string;
  mac: string;
  qemuArgs: string[];
  ipv4: { address: string; gateway: string };
  device: { kind: string; socket: string };
}

interface Peer {
  vm: StackVm;
  ip: string;
}

interface VmEvent {
  type: string;
  vm?: string;
  state?: string;
  detail?: string;
  seq: number;
}

afterAll(cleanupAll);

describe('a QEMU VM on --vhost-user', () => {
  let t: Topology;
  /** A TAP VM on a plain TAP (the guest's super-frames are segmented for it) and one with --vnet-hdr (they cut through whole). */
  let tapvm: Peer;
  let vnetvm: Peer;
  let dir: string;
  let transfer: string;
  let qemu: ManagedProcess;
  let vm: VmConsole;
  let add: AddResult;
  let vmDir: string;

  async function hook(cmd: string, cfg: Record<string, unknown>): Promise<Record<string, unknown>> {
    const r = await run(['node', CLI_JS, '--socket', t.daemon.socket, 'hook', cmd], { input: JSON.stringify(cfg), check: false });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  }

  /** The daemon's `vm.` events from now on (the follower ends with the daemon). */
  function followEvents(): ManagedProcess {
    return spawnProcess(['node', CLI_JS, '--socket', t.daemon.socket, '--json', 'events', '--type', 'vm.', '--backlog', '1000'], { label: 'mvnet events' });
  }

  async function waitEvent(ev: ManagedProcess, pred: (e: VmEvent) => boolean, timeoutMs = 30_000): Promise<VmEvent> {
    const line = await ev.waitForLine((l) => {
      try {
        return pred(JSON.parse(l) as VmEvent);
      } catch {
        return false;
      }
    }, { timeoutMs });
    return JSON.parse(line) as VmEvent;
  }

  async function vmInfo(name: string): Promise<VmInfo> {
    return t.daemon.vm(name);
  }

  /** A transfer end in the TAP VM; resolves once it listens. */
  async function tapEnd(peer: Peer, mode: 'sink' | 'source', port: number, arg: string): Promise<ManagedProcess> {
    const p = peer.vm.ns.spawn(['node', transfer, mode, String(port), arg], { label: `${peer.vm.name} ${mode}` });
    await p.waitForLine((l) => l === 'listening', { timeoutMs: 20_000 });
    return p;
  }

  /** A capture, on the TAP VM's TAP, of the frames longer than 1514 bytes (tcpdump: len >= 1515). */
  async function bigFrames(peer: Peer): Promise<Capture> {
    return t.capture({ ns: peer.vm.ns, ifname: peer.vm.ifname, filter: 'greater 1515' });
  }

  /** The frame's length as tcpdump -e prints it ("..., length N: ..."). */
  function frameLength(p: CapturedPacket): number {
    const m = /length (\d+)/.exec(p.text);
    return m ? Number(m[1]) : 0;
  }

  async function result(p: ManagedProcess): Promise<{ bytes: number; sha256: string }> {
    const line = await p.waitForLine((l) => l.startsWith('{'), { timeoutMs: 60_000 });
    return JSON.parse(line) as { bytes: number; sha256: string };
  }

  /** `size` bytes from the VM to the TAP VM over TCP: both ends' sha256 and the count. */
  async function vmToTap(peer: Peer, port: number, size: number): Promise<void> {
    const sink = await tapEnd(peer, 'sink', port, 'hash');
    const r = await vm.run('send', `head -c ${size} /dev/urandom > /tmp/tx && sha256sum /tmp/tx && nc ${peer.ip} ${port} < /tmp/tx; rc=$?; rm -f /tmp/tx; exit $rc`, 120_000);
    expect(r.rc, r.out).toBe(0);
    const got = await result(sink);
    const [guestSha] = r.out.split('\n')[0]!.split(/\s+/);
    expect(got.bytes).toBe(size);
    expect(got.sha256).toBe(guestSha);
    // nc printed the TAP VM's answer too: what arrived there, as the VM sees it.
    expect(r.out).toContain(`${guestSha} ${size}`);
    await sink.stop();
  }

  /** `size` bytes from the TAP VM to the VM over TCP, compared the same way. */
  async function tapToVm(peer: Peer, port: number, size: number): Promise<void> {
    const source = await tapEnd(peer, 'source', port, String(size));
    const r = await vm.run('recv', `nc ${peer.ip} ${port} < /dev/null > /tmp/rx && sha256sum /tmp/rx && wc -c < /tmp/rx; rc=$?; rm -f /tmp/rx; exit $rc`, 120_000);
    expect(r.rc, r.out).toBe(0);
    const sent = await result(source);
    const [shaLine, countLine] = r.out.split('\n');
    expect(Number(countLine?.trim())).toBe(size);
    expect(shaLine?.split(/\s+/)[0]).toBe(sent.sha256);
    await source.stop();
  }

  beforeAll(async () => {
    const assets = vmAssets();
    t = await startTopology({ prefix: 'vq' });
    await t.cli(['net', 'create', 'lan', '--subnet', SUBNET]);
    const plain = await t.addVm('tapvm', 'lan');
    tapvm = { vm: plain, ip: (await plain.dhcp()).ip };
    const vnet = await t.addVm('vnetvm', 'lan', { vnetHdr: true });
    vnetvm = { vm: vnet, ip: (await vnet.dhcp()).ip };
    dir = makeTempDir('vq-vm');
    transfer = writeTransferProgram(dir);
    vmDir = (JSON.parse(await t.cli(['--json', 'status'])) as StatusInfo).daemon.vmSocketDir;
    add = (await hook('ADD', { vm: 'qvm', network: 'lan', device: 'vhost-user', memory: VM_MEMORY_MB, accel: 'tcg' })) as unknown as AddResult;
    expect(add.device.kind).toBe('vhost-user');
    const initrd = buildInitramfs(dir, assets, [], { interactive: true });
    // QEMU blocks at start until the back-end answers: mvnet listens since ADD.
    qemu = bootVm(assets, initrd, add.qemuArgs, 'qemu vhost-user', undefined, { stdin: true });
    vm = new VmConsole(qemu);
    await vm.ready(BOOT_MS);
  }, BOOT_MS + 60_000);

  it('DHCP lease from mvnet; the port is up (running); pings reach the gateway and the TAP VM', async () => {
    const lines = vmLines(qemu);
    expect(lines.filter((l) => l.startsWith('MVT-INSMOD-FAILED')), lines.join('\n')).toEqual([]);
    expect(lines).toContain(`MVT-MAC ${add.mac}`);
    const lease = lines.find((l) => l.startsWith('MVT-LEASE '));
    // The address the hook announced is the one DHCP gives.
    expect(lease, lines.join('\n')).toContain(`ip=${add.ipv4.address.split('/')[0]} mask=24 router=${GATEWAY} dns=${GATEWAY} domain=lan.mvnet`);
    const info = await vmInfo('qvm');
    expect(info.port.kind).toBe('vhost-user');
    expect(info.port.state).toBe('up');
    expect(info.port.device).toBe('running');
    expect(info.port.detail).toMatch(/^running/);
    const gw = await vm.run('ping-gw', `ping -c 1 -W 10 ${GATEWAY}`);
    expect(gw.rc, gw.out).toBe(0);
    const tap = await vm.run('ping-tap', `ping -c 3 -i 0.2 -W 10 ${tapvm.ip}`);
    expect(tap.rc, tap.out).toBe(0);
    expect(tap.out).toContain('3 packets received');
  });

  it('20 MB over TCP each way with a TAP VM arrive intact (8 MB with a --vnet-hdr one): the guest\'s TSO super-frames segmented for a plain TAP, whole into a --vnet-hdr one', { timeout: 300_000 }, async () => {
    const s0 = (await vmInfo('qvm')).port.stats;
    // The TAP VMs' kernels see every frame they receive: a super-frame is one packet larger
    // than any frame at MTU 1500 can be (1514 bytes).
    const bigPlain = await bigFrames(tapvm);
    await vmToTap(tapvm, 7100, MB20);
    const s1 = (await vmInfo('qvm')).port.stats;
    const plainBig = await bigPlain.stop();
    await tapToVm(tapvm, 7101, MB20);
    const s2 = (await vmInfo('qvm')).port.stats;
    // The frames went through this port (its counters), the data each way.
    expect(s1.rxBytes - s0.rxBytes).toBeGreaterThan(MB20);
    expect(s2.txBytes - s1.txBytes).toBeGreaterThan(MB20);
    // A plain TAP takes no super-frame: mvnet segmented the guest's TSO frames.
    expect(plainBig.map((p) => p.line)).toEqual([]);

    // The TAP VM with virtio-net headers takes them whole (cut through from guest memory): mvnet
    // offered TSO, the guest's virtio-net took it, and its frames crossed unsegmented. How large
    // they are is the guest's business (under TCG on a loaded machine they may be only 2-3
    // segments), so the check is that they exist, each larger than a segment can be.
    const bigVnet = await bigFrames(vnetvm);
    await vmToTap(vnetvm, 7110, MB8);
    const vnetBig = await bigVnet.stop();
    expect(vnetBig.length, `${vnetBig.length} frames over 1514 bytes`).toBeGreaterThan(0);
    for (const p of vnetBig) expect(frameLength(p), p.line).toBeGreaterThan(1514);
    await tapToVm(vnetvm, 7111, MB8);
  });

  it('a guest breaking its ring on another vhost-user port: that port is down (broken, with why); this VM keeps moving frames', { timeout: 120_000 }, async () => {
    // A bare name: the socket is made in the daemon's VM socket directory.
    await t.cli(['vm', 'attach', 'broken', '--net', 'lan', '--vhost-user', 'broken.vhost.sock']);
    const path = join(vmDir, 'broken.vhost.sock');
    expect(existsSync(path)).toBe(true);
    expect((await vmInfo('broken')).port).toMatchObject({ state: 'waiting', device: 'listening' });
    const ev = followEvents();
    // A fake front-end starts the device as QEMU does (memory table, rings, kicks)...
    const fe = VhostFrontend.connect(path, { memSize: 1 << 20, num: 64, bufSize: 2048 });
    try {
      await fe.start();
      await waitEvent(ev, (e) => e.type === 'vm.up' && e.vm === 'broken');
      // ...then its guest puts a descriptor loop on the TX ring and kicks.
      const tx = fe.rings[TX]!;
      tx.writeDesc(0, { addr: tx.bufGpa(0), len: 64, flags: DESC_F_NEXT, next: 1 });
      tx.writeDesc(1, { addr: tx.bufGpa(1), len: 64, flags: DESC_F_NEXT, next: 0 });
      tx.availPush(0);
      tx.kick();
      const down = await waitEvent(ev, (e) => e.type === 'vm.down' && e.vm === 'broken');
      expect(down.state).toBe('down');
      expect(down.detail).toMatch(/broken/);
      const info = await vmInfo('broken');
      expect(info.port).toMatchObject({ state: 'down', device: 'broken' });
      expect(info.port.detail).toMatch(/^broken: guest ring violation: .*(loop|chain)/);
      // The daemon and the other VM are untouched: qvm's traffic goes on, its port still runs.
      const tap = await vm.run('ping-tap-after-break', `ping -c 3 -i 0.2 -W 10 ${tapvm.ip}`);
      expect(tap.rc, tap.out).toBe(0);
      await vmToTap(tapvm, 7104, 2 * 1024 * 1024);
      await tapToVm(tapvm, 7105, 2 * 1024 * 1024);
      expect((await vmInfo('qvm')).port.device).toBe('running');
      expect(t.daemon.running).toBe(true);
    } finally {
      fe.close();
      await ev.stop();
      await t.cli(['vm', 'detach', 'broken']);
    }
    expect(existsSync(path)).toBe(false);
  });

  it('daemon SIGKILL and restart: QEMU reconnects by itself, the VM keeps running and traffic resumes', { timeout: 180_000 }, async () => {
    const qemuPid = qemu.pid;
    const boots = vmLines(qemu).filter((l) => l === 'MVT-INIT').length;
    const exit = await t.daemon.kill('SIGKILL');
    expect(exit.signal).toBe('SIGKILL');
    await t.daemon.start();
    // The port is restored on the same path; QEMU retries every second and comes back.
    const ev = followEvents();
    await waitEvent(ev, (e) => e.type === 'vm.up' && e.vm === 'qvm', 60_000);
    await ev.stop();
    expect((await vmInfo('qvm')).port.state).toBe('up');
    // Up means QEMU connected; the rings run once QEMU has set them up again, so the guest
    // pings until the first answer (-w: a deadline, not a delay).
    const gw = await vm.run('ping-gw-again', `ping -c 1 -w 30 ${GATEWAY}`);
    expect(gw.rc, gw.out).toBe(0);
    expect((await vmInfo('qvm')).port.device).toBe('running');
    await vmToTap(vnetvm, 7102, 2 * 1024 * 1024);
    await tapToVm(vnetvm, 7103, 2 * 1024 * 1024);
    expect(qemu.running).toBe(true);
    expect(qemu.pid).toBe(qemuPid);
    expect(vmLines(qemu).filter((l) => l === 'MVT-INIT').length).toBe(boots);
  });

  it('mvnet hook DEL detaches it and removes the socket mvnet made; QEMU keeps running without a back-end', async () => {
    const del = await hook('DEL', { vm: 'qvm', device: 'vhost-user' });
    expect(del).toMatchObject({ detached: true });
    expect(existsSync(add.device.socket)).toBe(false);
    expect((JSON.parse(await t.cli(['--json', 'vm', 'list'])) as VmInfo[]).map((v) => v.name)).toEqual(['tapvm', 'vnetvm']);
    expect(qemu.running).toBe(true);
  });
});
