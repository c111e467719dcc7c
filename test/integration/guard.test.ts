/**
 * The rogue-router/DHCP guard end to end: a hostile VM sends a forged router advertisement
 * behind a Destination Options header (RFC 7113's RA-Guard evasion) and other rogue-service
 * frames (DHCP server messages, an ARP reply claiming the gateway's address), by hand-built bytes, to another VM whose namespace kernel takes RAs (accept_ra=1,
 * forwarding=0). Nothing of it may reach the victim: a raw socket in the victim's namespace
 * sees only the marker sent after it, the victim's routes show no rogue prefix, and `mvnet
 * status` counts the drops as 'filtered'. Once from a TAP namespace whose frames unicast to
 * another TAP the native cut-through path would forward, once from a QEMU stream socket (JS path).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drops, startDaemon, type Daemon } from '../support/daemon.js';
import { inetChecksum, macBytes } from '../support/frames.js';
import { cleanupAll, createNetns, makeTempDir, uniqueName, waitFor, type ManagedProcess, type Netns } from '../support/netns.js';
import { QemuStreamServer } from '../support/qemu-peer.js';
import { attachTapVm, type TapVm } from '../support/vms.js';

afterAll(cleanupAll);

// ---------------------------------------------------------------------------------------------
// Frames, byte by byte (RFC 8200, 4861, 4443, 768, 2131)

const ALL_NODES = Buffer.from('ff020000000000000000000000000001', 'hex');
const ALL_NODES_MAC = Buffer.from('333300000001', 'hex');

function ll(mac: Buffer): Buffer {
  // fe80:: with the MAC's EUI-64 interface identifier.
  const a = Buffer.alloc(16);
  a[0] = 0xfe;
  a[1] = 0x80;
  a[8] = mac[0]! ^ 0x02;
  a[9] = mac[1]!;
  a[10] = mac[2]!;
  a[11] = 0xff;
  a[12] = 0xfe;
  a[13] = mac[3]!;
  a[14] = mac[4]!;
  a[15] = mac[5]!;
  return a;
}

/** An IPv6 packet carrying `icmp` (checksum filled in) behind the given extension headers (8 bytes each). */
function icmp6Frame(srcMac: Buffer, dstMac: Buffer, src: Buffer, dst: Buffer, exts: number[], icmp: Buffer): Buffer {
  const sum = Buffer.concat([src, dst, Buffer.from([0, 0, icmp.length >> 8, icmp.length & 0xff, 0, 0, 0, 58]), icmp]);
  icmp.writeUInt16BE(0, 2);
  icmp.writeUInt16BE(inetChecksum(sum), 2);
  const headers = exts.map((_, i) => {
    const b = Buffer.alloc(8);
    b[0] = i + 1 < exts.length ? exts[i + 1]! : 58;
    b[2] = 1; // PadN over the rest
    b[3] = 4;
    return b;
  });
  const payload = Buffer.concat([...headers, icmp]);
  const ip = Buffer.alloc(40);
  ip[0] = 0x60;
  ip.writeUInt16BE(payload.length, 4);
  ip[6] = exts.length > 0 ? exts[0]! : 58;
  ip[7] = 255;
  src.copy(ip, 8);
  dst.copy(ip, 24);
  return Buffer.concat([dstMac, srcMac, Buffer.from([0x86, 0xdd]), ip, payload]);
}

/** A router advertisement: default router for 30 minutes, on-link/autonomous prefix 2001:db8:bad:N::/64. */
function forgedRa(srcMac: Buffer, dstMac: Buffer, exts: number[], n: number): Buffer {
  const icmp = Buffer.alloc(16 + 8 + 32);
  icmp[0] = 134;
  icmp[4] = 64; // cur hop limit
  icmp.writeUInt16BE(1800, 6); // router lifetime
  icmp[16] = 1; // source link-layer address
  icmp[17] = 1;
  srcMac.copy(icmp, 18);
  const pi = 24;
  icmp[pi] = 3; // prefix information
  icmp[pi + 1] = 4;
  icmp[pi + 2] = 64;
  icmp[pi + 3] = 0xc0; // L, A
  icmp.writeUInt32BE(86400, pi + 4);
  icmp.writeUInt32BE(14400, pi + 8);
  Buffer.from(`20010db80bad${n.toString(16).padStart(4, '0')}`, 'hex').copy(icmp, pi + 16);
  return icmp6Frame(srcMac, dstMac, ll(srcMac), ALL_NODES, exts, icmp);
}

/** An echo request behind the same kind of header: must pass (the marker). */
function echo6(srcMac: Buffer, dstMac: Buffer, exts: number[], id: number): Buffer {
  const icmp = Buffer.alloc(8 + 16);
  icmp[0] = 128;
  icmp.writeUInt16BE(id, 4);
  return icmp6Frame(srcMac, dstMac, ll(srcMac), ALL_NODES, exts, icmp);
}

/** IPv4/UDP with a BOOTREPLY-looking body (checksum 0: none). */
function udp4(srcMac: Buffer, dstMac: Buffer, sport: number, dport: number): Buffer {
  const body = Buffer.alloc(240);
  body[0] = 2; // BOOTREPLY
  body.writeUInt32BE(0x63825363, 236); // magic cookie
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(sport, 0);
  udp.writeUInt16BE(dport, 2);
  udp.writeUInt16BE(8 + body.length, 4);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + body.length, 2);
  ip[8] = 64;
  ip[9] = 17;
  ip.writeUInt32BE(0x0a4d15fe, 12); // 10.77.21.254
  ip.writeUInt32BE(0xffffffff, 16);
  ip.writeUInt16BE(inetChecksum(ip), 10);
  return Buffer.concat([dstMac, srcMac, Buffer.from([0x08, 0x00]), ip, udp, body]);
}

/** DHCPv6 advertise 547 → 546 (checksum 0: the guard must not care). */
function dhcp6Advertise(srcMac: Buffer, dstMac: Buffer): Buffer {
  const udp = Buffer.alloc(8 + 4);
  udp.writeUInt16BE(547, 0);
  udp.writeUInt16BE(546, 2);
  udp.writeUInt16BE(udp.length, 4);
  udp[8] = 2; // ADVERTISE
  const ip = Buffer.alloc(40);
  ip[0] = 0x60;
  ip.writeUInt16BE(udp.length, 4);
  ip[6] = 17;
  ip[7] = 255;
  ll(srcMac).copy(ip, 8);
  ALL_NODES.copy(ip, 24);
  return Buffer.concat([dstMac, srcMac, Buffer.from([0x86, 0xdd]), ip, udp]);
}

/** An ARP reply "10.77.21.1 (the gateway) is at `srcMac`": neighbour cache poisoning. */
function arpClaimGateway(srcMac: Buffer, dstMac: Buffer): Buffer {
  const a = Buffer.alloc(28);
  a.writeUInt16BE(1, 0);
  a.writeUInt16BE(0x0800, 2);
  a[4] = 6;
  a[5] = 4;
  a.writeUInt16BE(2, 6);
  srcMac.copy(a, 8);
  a.writeUInt32BE(0x0a4d1501, 14); // 10.77.21.1
  dstMac.copy(a, 18);
  a.writeUInt32BE(0x0a4d150a, 24); // 10.77.21.10
  return Buffer.concat([dstMac, srcMac, Buffer.from([0x08, 0x06]), a]);
}

const DSTOPT = 60;
const HBH = 0;

// ---------------------------------------------------------------------------------------------
// Raw sockets in the namespaces (python3: no scapy needed, the bytes are built above)

/** Prints "ready", then the hex of every frame the interface receives from one of the given MACs. */
const LISTEN_PY = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
srcs = [bytes.fromhex(m) for m in sys.argv[2].split(',')]
print('ready', flush=True)
while True:
    f = s.recv(65536)
    if f[6:12] in srcs:
        print(f.hex(), flush=True)
`;

const SEND_PY = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for h in sys.argv[2:]:
    s.send(bytes.fromhex(h))
`;

class RawListener {
  readonly seen: string[] = [];
  private constructor(readonly proc: ManagedProcess) {
    proc.onLine((l) => {
      if (l !== 'ready') this.seen.push(l);
    });
  }

  static async start(ns: Netns, ifname: string, macs: Buffer[]): Promise<RawListener> {
    const proc = ns.spawn(['python3', '-c', LISTEN_PY, ifname, macs.map((m) => m.toString('hex')).join(',')], { label: 'raw listener' });
    const l = new RawListener(proc);
    await proc.waitForLine((x) => x === 'ready', { timeoutMs: 10_000 });
    return l;
  }

  /** Waits for `marker`, then returns every frame seen before it since `from`. */
  async until(marker: Buffer, from: number): Promise<string[]> {
    const hex = marker.toString('hex');
    await waitFor(() => this.seen.slice(from).includes(hex), { timeoutMs: 10_000, what: 'the marker frame at the victim' });
    const all = this.seen.slice(from);
    return all.slice(0, all.indexOf(hex));
  }
}

// ---------------------------------------------------------------------------------------------

describe('rogue router/DHCP guard, end to end', () => {
  let d: Daemon;
  let victimNs: Netns;
  let victimIf: string;
  let victimMac: Buffer;
  let tapAttacker: TapVm;
  let tapMac: Buffer;
  let qemu: QemuStreamServer;
  const qemuMac = macBytes('02:00:5e:bb:00:01');
  let listener: RawListener;

  beforeAll(async () => {
    d = await startDaemon();
    await d.cliOk(['net', 'create', 'G', '--subnet', '10.77.21.0/24']);
    // The victim: a namespace kernel that takes router advertisements as a host does.
    victimNs = await createNetns('gd-v', { ipv6: true });
    await victimNs.exec(['sysctl', '-q', '-w', 'net.ipv6.conf.default.forwarding=0', 'net.ipv6.conf.default.accept_ra=1', 'net.ipv6.conf.default.autoconf=1']);
    victimIf = uniqueName('mvtg');
    await d.cliOk(['vm', 'attach', 'victim', '--net', 'G', '--tap', victimIf, '--netns', victimNs.name]);
    await victimNs.waitForLink(victimIf);
    await victimNs.addAddr(victimIf, '10.77.21.10/24');
    victimMac = macBytes(await victimNs.mac(victimIf));

    tapAttacker = await attachTapVm(d, { vm: 'tap-attacker', net: 'G', cidr: '10.77.21.11/24', prefix: 'gd-a' });
    tapMac = macBytes(tapAttacker.mac);
    // Both TAP MACs learned (the cut-through table holds the victim), both ways.
    expect(await tapAttacker.ns.ping('10.77.21.10')).toBe(true);

    const dir = makeTempDir('guard');
    qemu = await QemuStreamServer.listen(join(dir, 'q.sock'));
    await d.cliOk(['vm', 'attach', 'qemu-attacker', '--net', 'G', '--unix', qemu.path, '--mac', '02:00:5e:bb:00:01']);
    await qemu.waitConnected();

    listener = await RawListener.start(victimNs, victimIf, [tapMac, qemuMac]);
  });

  /** The hostile frames from `mac`; prefixes 2001:db8:bad:<base+i>::/64. */
  function hostile(mac: Buffer, base: number): Buffer[] {
    // Unicast to the victim first: from a TAP, frames that native code may forward are cut
    // through only until the first one it leaves to the switch (a multicast one, say).
    return [
      forgedRa(mac, victimMac, [DSTOPT], base),
      forgedRa(mac, victimMac, [HBH, DSTOPT, DSTOPT], base + 1),
      udp4(mac, victimMac, 4000, 68), // a DHCP "server" that does not use port 67
      dhcp6Advertise(mac, victimMac),
      arpClaimGateway(mac, victimMac),
      forgedRa(mac, victimMac, [], base + 2),
      udp4(mac, victimMac, 67, 68),
      forgedRa(mac, ALL_NODES_MAC, [DSTOPT], base + 3),
    ];
  }

  async function expectStopped(vm: string, mac: Buffer, base: number, send: (frames: Buffer[]) => Promise<void>): Promise<void> {
    const bad = hostile(mac, base);
    const marker = echo6(mac, victimMac, [DSTOPT], base);
    const vm0 = drops((await d.vm(vm)).port.stats.drops, 'filtered');
    const net0 = drops((await d.network('G')).stats.drops, 'filtered');
    const from = listener.seen.length;
    await send([...bad, marker]);
    // The marker (the same header chain, an echo request) went through; nothing before it did.
    const before = await listener.until(marker, from);
    const badHex = new Set(bad.map((f) => f.toString('hex')));
    expect(before.filter((h) => badHex.has(h))).toEqual([]);
    // The victim's kernel configured nothing from a rogue RA (its prefix route would be there at once).
    const routes = await victimNs.exec(['ip', '-6', 'route', 'show']);
    const neigh = await victimNs.exec(['ip', '-4', 'neigh', 'show', '10.77.21.1']);
    expect(neigh.stdout).not.toContain([...mac].map((b) => b.toString(16).padStart(2, '0')).join(':'));
    for (let i = 0; i < 4; i++) expect(routes.stdout).not.toContain(`2001:db8:bad:${(base + i).toString(16)}::`);
    // Counted where `mvnet status` shows drops.
    await waitFor(async () => drops((await d.vm(vm)).port.stats.drops, 'filtered') - vm0 === bad.length, { what: `${vm} filtered +${bad.length}` });
    expect(drops((await d.network('G')).stats.drops, 'filtered') - net0).toBe(bad.length);
  }

  it('from a TAP namespace (native cut-through port): a forged RA behind Destination Options and DHCP server frames never reach the other VM', async () => {
    await expectStopped('tap-attacker', tapMac, 0x10, async (frames) => {
      await tapAttacker.ns.exec(['python3', '-c', SEND_PY, tapAttacker.ifname, ...frames.map((f) => f.toString('hex'))]);
    });
  });

  it('from a QEMU stream socket (JS path): the same frames never reach the other VM', async () => {
    await expectStopped('qemu-attacker', qemuMac, 0x20, async (frames) => {
      for (const f of frames) qemu.send(f);
    });
  });

  it('plain traffic between the TAPs still flows', async () => {
    expect(await tapAttacker.ns.ping('10.77.21.10', { count: 2 })).toBe(true);
  });
});
