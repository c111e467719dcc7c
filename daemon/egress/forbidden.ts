/**
 * Destinations no route may reach by itself: this host, and addresses that lead back to it or
 * to everything on a link. A VM reaches host services only through an explicit port forward (or
 * the listed `direct.hostLoopbackPorts`).
 *
 * IPv4: this network 0/8 (0.0.0.0 included), loopback 127/8, link-local 169.254/16, multicast
 * 224/4, the limited broadcast 255.255.255.255 and the rest of 240/4; the host's own addresses
 * and the directed broadcasts (and network addresses) of the host's networks.
 *
 * IPv6: :: and ::1, link-local fe80::/10, multicast ff00::/8, the host's own addresses and the
 * subnet-router anycast addresses of its networks (a forwarding host answers there), and the
 * prefixes that carry an IPv4 address inside, each decided by what a relay or the kernel would
 * do with it:
 * - IPv4-mapped ::ffff:0:0/96: the whole class. A dual-stack socket sends it as IPv4 to the
 *   embedded address; nothing legitimate is reached this way that IPv4 itself does not reach.
 * - IPv4-compatible ::/96: the whole class. Deprecated (RFC 4291 §2.5.5.1), never a real
 *   destination, and the kernel's sit0 tunnels it to the embedded IPv4 as it is.
 * - NAT64 well-known 64:ff9b::/96: only when the IPv4 in the last 32 bits is forbidden. The
 *   prefix is how an IPv6-only network reaches IPv4 (DNS64), so the class is legitimate; a
 *   translator on this host would carry it to that IPv4 address.
 * - NAT64 local-use 64:ff9b:1::/48 (RFC 8215): the whole class. Where the IPv4 sits depends on
 *   the prefix length the local operator chose (RFC 6052: /48 to /96), which mvnet cannot know,
 *   so it cannot check what is inside.
 * - 6to4 2002::/16: only when the IPv4 in bits 16..47 is forbidden (a 6to4 tunnel on this host
 *   would send the packet to that IPv4 address).
 * - Teredo 2001::/32: when the server's IPv4 (bits 32..63) or the client's (the last 32 bits,
 *   XOR 0xffffffff) is forbidden: a Teredo client on this host would send to either.
 * - Discard-only 100::/64 (RFC 6666): the whole class (it exists to be dropped).
 *
 * The host's addresses come from the kernel (a netlink address dump: every interface, also one
 * that is down or without carrier, which os.networkInterfaces() leaves out) and are read again
 * when a netlink notification says an address or link changed, never on a timer. Before each
 * decision the notification socket is drained without blocking: the kernel queues the
 * notification before `ip addr add` returns, so an address added a moment ago is refused.
 */
import os from 'node:os';
import { loadNative } from '../../plugins/native/index.js';
import type { KernelAddr, NativeAddrWatch } from '../../plugins/native/types.js';
import type { IpAddr } from '../endpoint/addr.js';
import { parseIpv4Text, parseIpv6Text } from '../wire/ip-text.js';

/** The host's own addresses and the broadcast addresses of its IPv4 networks. */
export interface HostAddresses {
  readonly v4: ReadonlySet<number>;
  /** Directed broadcasts (and network addresses, the old broadcast) of the host's IPv4 networks. */
  readonly bcast4: ReadonlySet<number>;
  /** 16-byte addresses as hex. */
  readonly v6: ReadonlySet<string>;
  /** Subnet-router anycast addresses (prefix::) of the host's IPv6 networks, as hex. */
  readonly anycast6: ReadonlySet<string>;
}

/** Why a destination is refused (for tests and logs); null: it is not. */
export type ForbiddenClass =
  | 'this-network'
  | 'loopback'
  | 'link-local'
  | 'multicast'
  | 'limited-broadcast'
  | 'reserved'
  | 'host-address'
  | 'directed-broadcast'
  | 'subnet-anycast'
  | 'unspecified'
  | 'ipv4-mapped'
  | 'ipv4-compatible'
  | 'nat64'
  | 'nat64-local'
  | '6to4'
  | 'teredo'
  | 'discard';

/** One IPv4 network of the host: its address and prefix length, and the broadcast it names. */
export interface HostNet4 {
  addr: number;
  prefixLen: number;
  broadcast?: number;
}

/** One IPv6 address of the host and its prefix length (unknown: 128). */
export interface HostNet6 {
  addr: Buffer;
  prefixLen: number;
}

/** Builds the set from the host's networks (from the kernel, or os.networkInterfaces()). */
export function hostAddressesFrom(v4nets: readonly HostNet4[], v6nets: readonly HostNet6[]): HostAddresses {
  const a4 = new Set<number>();
  const b4 = new Set<number>();
  for (const n of v4nets) {
    a4.add(n.addr >>> 0);
    if (n.broadcast !== undefined) b4.add(n.broadcast >>> 0);
    // /31 and /32 have no broadcast or network address (RFC 3021).
    if (n.prefixLen <= 30) {
      const mask = n.prefixLen === 0 ? 0 : (0xffffffff << (32 - n.prefixLen)) >>> 0;
      b4.add((n.addr | ~mask) >>> 0);
      b4.add((n.addr & mask) >>> 0);
    }
  }
  const any6 = new Set<string>();
  for (const n of v6nets) {
    // A forwarding host answers on prefix:: itself (RFC 4291 §2.6.1); /127 and /128 have none (RFC 6164).
    if (n.prefixLen >= 127) continue;
    const b = Buffer.from(n.addr);
    for (let bit = n.prefixLen; bit < 128; bit++) b[bit >> 3]! &= ~(0x80 >> (bit & 7));
    any6.add(b.toString('hex'));
  }
  return { v4: a4, bcast4: b4, v6: new Set(v6nets.map((n) => n.addr.toString('hex'))), anycast6: any6 };
}

function prefixOfNetmask(mask: string): number {
  const p = parseIpv4Text(mask);
  if (!p.ok) return 32;
  let n = 0;
  for (let m = p.value; m & 0x80000000; m = (m << 1) >>> 0) n++;
  return n;
}

/** The fallback source: libuv's list (UP and RUNNING interfaces only). */
export function hostAddressesFromInterfaces(ifaces: NodeJS.Dict<os.NetworkInterfaceInfo[]>): HostAddresses {
  const v4: HostNet4[] = [];
  const v6: HostNet6[] = [];
  for (const list of Object.values(ifaces)) {
    for (const a of list ?? []) {
      if (a.family === 'IPv4') {
        const p = parseIpv4Text(a.address);
        if (p.ok) v4.push({ addr: p.value, prefixLen: prefixOfNetmask(a.netmask) });
      } else {
        const p = parseIpv6Text(a.address.split('%')[0]!);
        const m = /\/(\d+)$/.exec(a.cidr ?? '');
        if (p.ok) v6.push({ addr: p.value, prefixLen: m ? Number(m[1]) : 128 });
      }
    }
  }
  return hostAddressesFrom(v4, v6);
}

export function hostAddressesFromKernel(list: readonly KernelAddr[]): HostAddresses {
  const v4: HostNet4[] = [];
  const v6: HostNet6[] = [];
  for (const a of list) {
    if (a.family === 4) v4.push({ addr: a.address.readUInt32BE(0), prefixLen: a.prefixLen, ...(a.broadcast ? { broadcast: a.broadcast.readUInt32BE(0) } : {}) });
    else v6.push({ addr: a.address, prefixLen: a.prefixLen });
  }
  return hostAddressesFrom(v4, v6);
}

function classify4(n: number, host: HostAddresses): ForbiddenClass | null {
  const top = n >>> 24;
  if (top === 0) return 'this-network';
  if (top === 127) return 'loopback';
  if (n >>> 16 === 0xa9fe) return 'link-local';
  if (n >>> 28 === 0xe) return 'multicast';
  if (n === 0xffffffff) return 'limited-broadcast';
  if (n >>> 28 === 0xf) return 'reserved';
  if (host.v4.has(n)) return 'host-address';
  if (host.bcast4.has(n)) return 'directed-broadcast';
  return null;
}

function zeros(b: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

/** Which class forbids `a` given the host's addresses; null when a route may reach it. */
export function forbiddenClass(a: IpAddr, host: HostAddresses): ForbiddenClass | null {
  if (a.v === 4) return classify4(a.n, host);
  const b = a.b;
  const w0 = b.readUInt16BE(0);
  if (zeros(b, 0, 12)) {
    if (zeros(b, 12, 15) && b[15] === 0) return 'unspecified';
    if (zeros(b, 12, 15) && b[15] === 1) return 'loopback';
    return 'ipv4-compatible';
  }
  if (zeros(b, 0, 10) && b[10] === 0xff && b[11] === 0xff) return 'ipv4-mapped';
  if (b[0] === 0xff) return 'multicast';
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return 'link-local';
  if (w0 === 0x0100 && zeros(b, 2, 8)) return 'discard';
  if (w0 === 0x0064 && b.readUInt16BE(2) === 0xff9b) {
    if (zeros(b, 4, 12)) return classify4(b.readUInt32BE(12), host) !== null ? 'nat64' : null;
    if (b.readUInt16BE(4) === 0x0001) return 'nat64-local';
  }
  if (w0 === 0x2002 && classify4(b.readUInt32BE(2), host) !== null) return '6to4';
  if (w0 === 0x2001 && b.readUInt16BE(2) === 0) {
    if (classify4(b.readUInt32BE(4), host) !== null || classify4(~b.readUInt32BE(12) >>> 0, host) !== null) return 'teredo';
  }
  const hex = b.toString('hex');
  if (host.v6.has(hex)) return 'host-address';
  if (host.anycast6.has(hex)) return 'subnet-anycast';
  return null;
}

// --- the live set -----------------------------------------------------------------------------

interface Live {
  /** null: no netlink here (the addon is missing): the addresses are read at every decision. */
  watch: NativeAddrWatch | null;
  read(): HostAddresses;
  current: HostAddresses;
  reads: number;
}

let live: Live | null = null;

function start(): Live {
  let read: () => HostAddresses = () => hostAddressesFromInterfaces(os.networkInterfaces());
  let watch: NativeAddrWatch | null = null;
  try {
    const n = loadNative();
    // The watch opens before the first read, so no change between the two goes unseen.
    watch = new n.AddrWatch({
      onChange: () => {
        if (live !== null) refresh(live);
      },
    });
    const dump = (): HostAddresses => hostAddressesFromKernel(n.dumpAddrs());
    dump();
    read = dump;
  } catch {
    // Without the addon (or netlink) nothing tells of changes: read at every decision instead.
    watch?.close();
    watch = null;
  }
  const l: Live = { watch, read, current: read(), reads: 1 };
  return l;
}

function refresh(l: Live): void {
  l.current = l.read();
  l.reads++;
}

/** Whether a notification came since the last look; true when the watch is gone (read again). */
function changed(l: Live): boolean {
  if (l.watch === null) return true;
  try {
    return l.watch.drain() > 0;
  } catch {
    // The watch gave up: nothing tells of changes any more, so read at every decision.
    l.watch = null;
    return true;
  }
}

/** The host's addresses now. */
export function hostAddresses(): HostAddresses {
  if (live === null) live = start();
  if (changed(live)) refresh(live);
  return live.current;
}

/** How the live set is kept (status and tests): whether netlink watches it, and how often it was read. */
export function hostAddressWatch(): { netlink: boolean; reads: number } {
  if (live === null) live = start();
  return { netlink: live.watch !== null, reads: live.reads };
}

export function isForbiddenDestination(a: IpAddr): boolean {
  return forbiddenClass(a, hostAddresses()) !== null;
}
