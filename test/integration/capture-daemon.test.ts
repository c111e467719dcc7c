/**
 * Capture, daemon side, end to end: namespaces are the VMs (TAPs the daemon creates), a raw
 * JSON-RPC client runs `capture.start` on the control socket and reads the pcapng stream that
 * follows, and tshark reads what it got. Tees to files under captureDir and to a unix socket (read
 * by a peer framing as QEMU does), kept across a restart; tee paths that must be refused are.
 * Traffic stays inside the namespaces created here.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRpc, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, createNetns, makeTempDir, run, uniqueName, waitFor } from '../support/netns.js';
import { UDHCPC_SCRIPT } from '../support/stack-programs.js';
import { actAsHost, QemuStreamClient, QemuStreamServer } from '../support/qemu-peer.js';
import { randomMac } from '../support/frames.js';
import type { TeeInfo } from '../../daemon/control/api.js';
import { attachTapVm, tcpConnectAttempt, tcpSend, tcpSink, type TapVm } from '../support/vms.js';
import { saveTo, startCapture, tsharkFields } from '../support/capture-client.js';
import { readPcapng } from '../support/pcapng-read.js';

afterAll(cleanupAll);

describe('capture: live stream on the control connection', () => {
  let d: Daemon;
  let vm1: TapVm;
  let vm2: TapVm | undefined;
  const vm2Of = (): TapVm['ns'] => {
    if (vm2 === undefined) throw new Error('vm2 is attached by the cut-through test, which runs first');
    return vm2.ns;
  };
  const dir = makeTempDir('capd');

  beforeAll(async () => {
    d = await startDaemon();
    await d.cliOk(['net', 'create', 'A', '--subnet', '10.78.1.0/24']);
    vm1 = await attachTapVm(d, { vm: 'vm1', net: 'A', cidr: '10.78.1.11/24', prefix: 'cap-vm1' });
  });

  it('lists the points', async () => {
    const r = await rawRpc(d.socket, 'capture.points', {});
    const names = (r.result as { name: string }[]).map((p) => p.name);
    expect(names).toEqual(['vm1', 'net:A', 'exit:direct', 'exit:tor', 'exit:local', 'exit:via', 'drops']);
  });

  it('refuses a bad filter and an unknown VM with an error line and no stream', async () => {
    const bad = await rawRpc(d.socket, 'capture.start', { from: { vm: 'vm1' }, filter: 'host and' });
    expect(bad.error?.message).toMatch(/bad filter/);
    const none = await rawRpc(d.socket, 'capture.start', { from: { vm: 'nope' } });
    expect(none.error?.message).toMatch(/no VM named nope/);
  });

  it('a client that half-closes right after its request gets the reply, an empty capture with its ISB, and the end', async () => {
    const c = await startCapture(d.socket, { from: { vm: 'vm1' } }, 10_000, true);
    expect(c.reply.error).toBeUndefined();
    const r = readPcapng(await c.done);
    expect(r.ifaces.map((i) => i.name)).toEqual(['vm1']);
    expect(r.isbs.length).toBe(1);
  });

  it('streams a ping with interface name and direction; half-close brings the ISBs and the end', async () => {
    const c = await startCapture(d.socket, { from: { vm: 'vm1' }, filter: 'icmp' });
    expect(c.reply.error).toBeUndefined();
    expect((c.reply.result as { points: string[] }).points).toEqual(['vm1']);
    expect(await vm1.ns.ping('10.78.1.1', { count: 1, waitS: 2 })).toBe(true);
    // Status shows the running capture with its counters.
    const st = await d.status();
    expect(st.captures.map((x) => x.points)).toEqual([['vm1']]);
    c.end();
    const stream = await c.done;
    const file = saveTo(join(dir, 'ping.pcapng'), stream);
    const rows = await tsharkFields(file, ['frame.interface_name', 'frame.packet_flags_direction', 'icmp.type']);
    expect(rows).toEqual([
      ['vm1', '0x00000001', '8'],
      ['vm1', '0x00000002', '0'],
    ]);
    // After the half-close: one ISB with the counters, then the daemon ended the connection.
    const isbs = readPcapng(stream).isbs;
    expect(isbs.length).toBe(1);
    expect(isbs[0]).toMatchObject({ iface: 0, filterAccept: 2n, osDrop: 0n });
    expect(isbs[0]!.ifRecv).toBeGreaterThanOrEqual(2n);
    const info = await run(['capinfos', file]);
    expect(info.stdout).toMatch(/Capture application:\s+mvnet \d/);
    expect((await d.status()).captures).toEqual([]);
  });

  it('net:NAME shows each frame once: what VMs sent inbound, what the gateway sent outbound', async () => {
    const c = await startCapture(d.socket, { from: { net: 'A' }, filter: 'icmp' });
    expect((c.reply.result as { points: string[] }).points).toEqual(['net:A']);
    expect(await vm1.ns.ping('10.78.1.1', { count: 1, waitS: 2 })).toBe(true);
    c.end();
    const file = saveTo(join(dir, 'net.pcapng'), await c.done);
    expect(await tsharkFields(file, ['frame.interface_name', 'frame.packet_flags_direction', 'icmp.type'])).toEqual([
      ['net:A', '0x00000001', '8'],
      ['net:A', '0x00000002', '0'],
    ]);
  });

  it('a refused flow shows at its route exit with the decision, and in drops with the reason', async () => {
    const set = await rawRpc(d.socket, 'route.set', { vm: 'vm1', route: { kind: 'direct', allow: [{ cidr: '192.0.2.0/24' }] } });
    expect(set.error).toBeUndefined();
    try {
      await vm1.ns.exec(['ip', 'route', 'replace', 'default', 'via', '10.78.1.1']);
      const c = await startCapture(d.socket, { from: { point: ['exit:direct'] }, drops: true, filter: 'host 198.51.100.1' });
      expect((c.reply.result as { points: string[] }).points).toEqual(['exit:direct', 'drops']);
      // 198.51.100.1 is outside the allow-list: nothing leaves the host. The echo is dropped, the
      // TCP connection refused (the VM gets an RST, which the gateway makes: no exit's reply).
      expect(await vm1.ns.ping('198.51.100.1', { count: 1, waitS: 1 })).toBe(false);
      const tcp = tcpConnectAttempt(vm1.ns, '198.51.100.1', 80);
      await tcp.exited;
      c.end();
      const file = saveTo(join(dir, 'exit.pcapng'), await c.done);
      const rows = await tsharkFields(file, ['frame.interface_name', 'frame.packet_flags_direction', 'frame.comment', 'ip.proto']);
      expect(rows).toEqual([
        ['exit:direct', '0x00000002', 'dropped: not in allow-list', '1'],
        ['drops', '0x00000001', 'dropped: not in allow-list (from vm1 on A)', '1'],
        ['exit:direct', '0x00000002', 'refused: not in allow-list', '6'],
        ['drops', '0x00000001', 'refused: not in allow-list (from vm1 on A)', '6'],
      ]);
    } finally {
      await rawRpc(d.socket, 'route.clear', { vm: 'vm1' });
    }
  });

  it('count ends the capture by itself; status counts it while it runs', async () => {
    const c = await startCapture(d.socket, { from: { vm: 'vm1' }, filter: 'icmp', count: 1 });
    expect(await vm1.ns.ping('10.78.1.1', { count: 1, waitS: 2 })).toBe(true);
    const file = saveTo(join(dir, 'count.pcapng'), await c.done);
    expect(await tsharkFields(file, ['icmp.type'])).toEqual([['8']]);
  });

  it('a capture of a VM that detaches ends cleanly', async () => {
    await attachTapVm(d, { vm: 'vm9', net: 'A', cidr: '10.78.1.19/24', prefix: 'cap-vm9' });
    const c = await startCapture(d.socket, { from: { vm: 'vm9' } });
    await d.cliOk(['vm', 'detach', 'vm9']);
    const stream = await c.done;
    expect(readPcapng(stream).isbs.length).toBe(1);
    const file = saveTo(join(dir, 'detach.pcapng'), stream);
    // A whole pcapng (SHB, IDB, ISB) that tshark reads without complaint.
    expect(await tsharkFields(file, ['frame.number'])).toBeInstanceOf(Array);
    const r = await run(['capinfos', '-T', '-r', file], { check: false });
    expect(r.code, r.stderr).toBe(0);
  });

  it('tees to a file under captureDir and to a unix socket read as QEMU reads; both survive a restart', async () => {
    const sock = join(makeTempDir('capu'), 'tee.sock');
    const add1 = await rawRpc(d.socket, 'tee.add', { name: 'f1', from: { vm: 'vm1' }, to: 'f1.pcapng', filter: 'icmp' });
    expect(add1.error).toBeUndefined();
    expect((add1.result as TeeInfo).state).toBe('active');
    const add2 = await rawRpc(d.socket, 'tee.add', { name: 'u1', from: { vm: 'vm1' }, to: `unix:${sock}`, filter: 'icmp' });
    expect(add2.error).toBeUndefined();
    expect((add2.result as TeeInfo).state).toBe('waiting');
    const peer = await QemuStreamClient.connect(sock);
    const tee = async (name: string): Promise<TeeInfo> => ((await rawRpc(d.socket, 'tee.list', {})).result as TeeInfo[]).find((t) => t.name === name)!;
    await waitFor(async () => (await tee('u1')).state === 'active', { what: 'the unix tee to see its reader' });

    expect(await vm1.ns.ping('10.78.1.1', { count: 1, waitS: 2 })).toBe(true);
    const req = await peer.nextFrame((f) => f.readUInt16BE(12) === 0x0800 && f[23] === 1 && f[34] === 8, 5000);
    expect(req.length).toBeGreaterThanOrEqual(14 + 20 + 8);
    await peer.nextFrame((f) => f.readUInt16BE(12) === 0x0800 && f[23] === 1 && f[34] === 0, 5000);
    await waitFor(async () => (await tee('f1')).counters.captured >= 2, { what: 'the file tee to capture the ping' });
    const st = await d.status();
    expect(st.captures.filter((x) => x.kind === 'tee').map((x) => x.name).sort()).toEqual(['f1', 'u1']);

    // A live capture running when the daemon stops gets its ISBs and the end of its stream.
    const live = await startCapture(d.socket, { from: { vm: 'vm1' } });
    await d.restart();
    expect(readPcapng(await live.done).isbs.length).toBe(1);
    const after = ((await rawRpc(d.socket, 'tee.list', {})).result as TeeInfo[]).map((t) => t.name);
    expect(after).toEqual(['f1', 'u1']);
    await waitFor(async () => (await tee('f1')).state === 'active', { what: 'the file tee to run again after the restart' });
    await peer.reconnect();
    await waitFor(async () => (await tee('u1')).state === 'active', { what: 'the unix tee to see its reader again' });
    expect(await vm1.ns.ping('10.78.1.1', { count: 1, waitS: 2 })).toBe(true);
    await waitFor(async () => (await tee('f1')).counters.captured >= 2, { what: 'the restored file tee to capture' });
    await peer.nextFrame((f) => f.readUInt16BE(12) === 0x0800 && f[23] === 1 && f[34] === 0, 5000);
    await peer.close();
    expect((await rawRpc(d.socket, 'tee.remove', { name: 'f1' })).result).toEqual({ removed: 'f1' });
    expect((await rawRpc(d.socket, 'tee.remove', { name: 'u1' })).result).toEqual({ removed: 'u1' });
    // Two sections (one per run), two pings: tshark reads them in order.
    const file = join(d.stateDir, 'captures', 'f1.pcapng');
    await waitFor(async () => (await tsharkFields(file, ['icmp.type'])).length === 4, { what: 'both runs in the file' });
    // Each run ended with its statistics: the first at the daemon's stop, the second at tee.remove.
    const read = readPcapng(readFileSync(file));
    expect(read.sections).toBe(2);
    expect(read.isbs.length).toBe(2);
    const rows = await tsharkFields(file, ['frame.interface_name', 'frame.packet_flags_direction', 'icmp.type']);
    expect(rows).toEqual([
      ['vm1', '0x00000001', '8'],
      ['vm1', '0x00000002', '0'],
      ['vm1', '0x00000001', '8'],
      ['vm1', '0x00000002', '0'],
    ]);
  });

  it('refuses tee paths outside captureDir, with .., or through a symlink', async () => {
    const cap = join(d.stateDir, 'captures');
    const outside = makeTempDir('capo');
    symlinkSync(join(outside, 'x.pcapng'), join(cap, 'link.pcapng'));
    symlinkSync(outside, join(cap, 'linkdir'));
    mkdirSync(join(cap, 'sub'));
    writeFileSync(join(outside, 'keep'), 'keep');
    const tries: [string, RegExp][] = [
      ['/etc/mvnet-tee-test.pcapng', /outside the capture directory/],
      ['../x.pcapng', /\.\./],
      ['sub/../../x.pcapng', /\.\./],
      ['link.pcapng', /symlink/],
      ['linkdir/x.pcapng', /symlink/],
      [`${outside}/keep`, /outside the capture directory/],
    ];
    for (const [to, why] of tries) {
      const r = await rawRpc(d.socket, 'tee.add', { name: 'bad', from: { vm: 'vm1' }, to });
      expect(r.error?.message, to).toMatch(why);
    }
    expect((await rawRpc(d.socket, 'tee.list', {})).result).toEqual([]);
    // A path under it is fine.
    const ok = await rawRpc(d.socket, 'tee.add', { name: 'sub', from: { vm: 'vm1' }, to: `${cap}/sub/ok.pcapng` });
    expect(ok.error).toBeUndefined();
    expect((ok.result as TeeInfo).to).toBe('sub/ok.pcapng');
    await rawRpc(d.socket, 'tee.remove', { name: 'sub' });
  });

  it('a saved tee whose file became a symlink while the daemon was down stays listed, in error, and writes nothing', async () => {
    const cap = join(d.stateDir, 'captures');
    expect((await rawRpc(d.socket, 'tee.add', { name: 'later', from: { vm: 'vm1' }, to: 'later.pcapng' })).error).toBeUndefined();
    await d.stop();
    const outside = makeTempDir('capl');
    rmSync(join(cap, 'later.pcapng'));
    symlinkSync(join(outside, 'target'), join(cap, 'later.pcapng'));
    await d.start();
    const list = (await rawRpc(d.socket, 'tee.list', {})).result as TeeInfo[];
    expect(list.map((t) => [t.name, t.state])).toEqual([['later', 'error']]);
    expect(list[0]!.detail).toMatch(/symlink/);
    expect(existsSync(join(outside, 'target'))).toBe(false);
    expect((await rawRpc(d.socket, 'tee.remove', { name: 'later' })).result).toEqual({ removed: 'later' });
    await d.restart();
    expect((await rawRpc(d.socket, 'tee.list', {})).result).toEqual([]);
  });

  it('VM-to-VM TCP in the native cut-through path is captured whole and in order', async () => {
    vm2 = await attachTapVm(d, { vm: 'vm2', net: 'A', cidr: '10.78.1.12/24', prefix: 'cap-vm2' });
    const size = 1 << 20;
    const sink = await tcpSink(vm2.ns, vm2.ip, 5003);
    const c = await startCapture(d.socket, { from: { vm: 'vm2' }, filter: 'tcp port 5003' });
    const dropsBefore = await d.portDrops();
    const sent = await tcpSend(vm1.ns, vm2.ip, 5003, size, 30_000);
    expect(sent.ok, sent.error).toBe(true);
    expect((await sink.result()).bytes).toBe(size);
    // A segment the switch could not deliver (a full TAP queue under load) is a real gap, which
    // the capture shows faithfully and tshark flags; without one, no flag at all.
    const fwdDropped = (await d.portDrops()) - dropsBefore;
    c.end();
    const stream = await c.done;
    const isb = readPcapng(stream).isbs[0]!;
    expect(isb.osDrop).toBe(0n);
    const file = saveTo(join(dir, 'tcp.pcapng'), stream);
    const rows = await tsharkFields(file, ['frame.packet_flags_direction', 'tcp.len', 'tcp.analysis.retransmission', 'tcp.analysis.lost_segment', 'tcp.analysis.out_of_order', 'tcp.analysis.ack_lost_segment']);
    // What vm2 was given (outbound at its port): every byte of the stream (a retransmission, which
    // the kernel's TCP may make on a loaded machine, counted once), nothing lost or reordered.
    const toVm2 = rows.filter((r) => r[0] === '0x00000002' && r[2] === '');
    const bytes = toVm2.reduce((n, r) => n + Number(r[1] || 0), 0);
    if (fwdDropped === 0) expect(bytes).toBe(size);
    else expect(size - bytes).toBeLessThanOrEqual(fwdDropped * 65536);
    const flagged = rows.filter((r) => r.slice(3).some((x) => x !== ''));
    if (fwdDropped === 0) expect(flagged).toEqual([]);
    else expect(flagged.length).toBeLessThanOrEqual(3 * fwdDropped);
    const times = (await tsharkFields(file, ['frame.time_epoch'])).map((x) => Number(x[0]));
    expect([...times].sort((a, b) => a - b)).toEqual(times);
  });

  it('a reader that never reads loses capture packets (counted), never forwarding ones', async () => {
    const size = 24 << 20;
    const sink = await tcpSink(vm1.ns, vm1.ip, 5004);
    const c = await startCapture(d.socket, { from: { vm: 'vm1' } });
    c.sock.pause();
    const sent = await tcpSend(vm2Of(), vm1.ip, 5004, size, 60_000);
    expect(sent.ok, sent.error).toBe(true);
    const got = await sink.result();
    expect(got.bytes).toBe(size);
    expect(got.sha256).toBe(sent.sha256);
    const cap = (await d.status()).captures.find((x) => x.id === (c.reply.result as { id: string }).id)!;
    expect(cap.counters.dropped).toBeGreaterThan(0);
    expect(cap.counters.captured).toBeGreaterThan(0);
    c.sock.destroy();
  });

  it('a DHCP exchange on the network point: discover and request inbound, offer and ack outbound', async () => {
    const ns = await createNetns('cap-dhcp');
    const ifname = uniqueName('mvt');
    await d.cliOk(['vm', 'attach', 'vmd', '--net', 'A', '--tap', ifname, '--netns', ns.name]);
    await ns.waitForLink(ifname);
    const script = join(makeTempDir('capdh'), 'udhcpc.sh');
    writeFileSync(script, UDHCPC_SCRIPT, { mode: 0o755 });
    const c = await startCapture(d.socket, { from: { net: 'A' }, filter: 'udp port 67 or udp port 68' });
    const r = await ns.exec(['udhcpc', '-q', '-n', '-f', '-i', ifname, '-s', script, '-t', '5', '-T', '1']);
    expect(r.stdout).toMatch(/"event":"bound"/);
    c.end();
    const file = saveTo(join(dir, 'dhcp.pcapng'), await c.done);
    const rows = await tsharkFields(file, ['frame.packet_flags_direction', 'dhcp.option.dhcp']);
    expect(rows).toEqual([
      ['0x00000001', '1'],
      ['0x00000002', '2'],
      ['0x00000001', '3'],
      ['0x00000002', '5'],
    ]);
    const times = (await tsharkFields(file, ['frame.time_epoch'])).map((x) => Number(x[0]));
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    await d.cliOk(['vm', 'detach', 'vmd']);
  });

  it('a socket VM (teed in JS around its port) is captured both ways', async () => {
    const peer = await QemuStreamServer.listen(join(makeTempDir('capq'), 'q.sock'));
    actAsHost(peer, { mac: randomMac(), ip: '10.78.1.31' });
    await d.cliOk(['vm', 'attach', 'q1', '--net', 'A', '--unix', peer.path]);
    await peer.waitConnected();
    const c = await startCapture(d.socket, { from: { vm: 'q1' }, filter: 'icmp' });
    expect(await vm1.ns.ping('10.78.1.31', { count: 1, waitS: 2 })).toBe(true);
    c.end();
    const file = saveTo(join(dir, 'q1.pcapng'), await c.done);
    expect(await tsharkFields(file, ['frame.interface_name', 'frame.packet_flags_direction', 'icmp.type'])).toEqual([
      ['q1', '0x00000002', '8'],
      ['q1', '0x00000001', '0'],
    ]);
    await d.cliOk(['vm', 'detach', 'q1']);
    await peer.close();
  });
});
