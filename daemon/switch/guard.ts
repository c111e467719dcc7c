/**
 * The switch's rogue-router and rogue-DHCP guard: a VM may not act as the network's router or
 * DHCP server (only the gateway does that), towards other VMs or the gateway. This is the one
 * implementation of the check. The native cut-through path (plugins/native/src/device.cc
 * IsPlainFrame) does not copy it: it forwards only frames it can classify as plain (TCP, UDP
 * away from the DHCP ports, ICMP echo) and hands everything else to the switch, which runs this; a
 * differential test (test/unit/switch-guard.test.ts) checks that plain ⊆ what this lets pass.
 *
 * Dropped, from a VM:
 *  - ICMPv6 router advertisement (134) and redirect (137), also behind any chain of extension
 *    headers (RFC 7113 RA-Guard evasion), and ICMPv4 redirect (5) and router advertisement (9);
 *  - ND messages (133–137, and SEND's 148/149) in a fragment (RFC 6980: hosts must drop them,
 *    but not every host does);
 *  - a first fragment (or unfragmented packet) whose header chain ends before the upper-layer
 *    header's type or ports can be read (RFC 7112): what the guard cannot see, it does not pass;
 *  - DHCPv4 server traffic: UDP from port 67 or to port 68 (a client sends 68 → 67);
 *  - DHCPv6 server traffic: UDP from port 547 or to port 546 (a client sends 546 → 547);
 *  - ARP with the gateway's IPv4 address as sender, and ND messages from one of the gateway's
 *    IPv6 addresses or advertising one (cache poisoning: the neighbours' traffic for the
 *    gateway would go to the VM);
 *  - all of the above inside up to two VLAN tags, and frames with more tags than that.
 * Non-first fragments pass: the first fragment carries the headers and is judged, and hosts
 * drop overlapping fragments (RFC 5722), so a datagram whose first fragment was dropped is lost.
 */

export type GuardReason =
  | 'ra' // ICMPv6 router advertisement
  | 'redirect' // ICMPv6 redirect
  | 'nd-fragment' // an ND message in a fragment
  | 'icmp4-router' // ICMPv4 redirect or router advertisement
  | 'dhcp4-server'
  | 'dhcp6-server'
  | 'unreadable' // header chain too long, or cut before the upper-layer header could be judged
  | 'vlan-depth' // more VLAN tags than the guard looks through
  | 'gateway-claim'; // ARP or neighbour discovery claiming one of the gateway's addresses

/** The gateway's own addresses, which no VM may claim in ARP or neighbour discovery. */
export interface GatewayAddrs {
  readonly ip4: number | null;
  /** 16 bytes each (link-local and global). */
  readonly ip6: readonly Buffer[];
}

const ETH_IPV4 = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_ARP = 0x0806;
const VLAN_TPIDS = new Set([0x8100, 0x88a8, 0x9100]);
const MAX_VLAN_TAGS = 2;
/** Extension headers walked before the upper layer; a longer chain is not judged but dropped. */
const MAX_EXT_HEADERS = 16;

/** ICMPv6 types that are Neighbor Discovery (RFC 4861) or SEND (RFC 3971) messages. */
function isNd(t: number): boolean {
  return (t >= 133 && t <= 137) || t === 148 || t === 149;
}

/**
 * Why a frame from a VM must not be forwarded (Ethernet header at `h`: after any vnet header),
 * or null when the guard has nothing against it.
 */
export function rogueService(f: Buffer, h: number, gw?: GatewayAddrs): GuardReason | null {
  let off = h + 12;
  if (f.length < off + 2) return null;
  let type = f.readUInt16BE(off);
  for (let tags = 0; VLAN_TPIDS.has(type); tags++) {
    if (tags === MAX_VLAN_TAGS) return 'vlan-depth';
    off += 4;
    if (f.length < off + 2) return null;
    type = f.readUInt16BE(off);
  }
  off += 2;
  if (type === ETH_IPV6) return ipv6(f, off, gw);
  if (type === ETH_IPV4) return ipv4(f, off);
  if (type === ETH_ARP && gw !== undefined && gw.ip4 !== null && f.length >= off + 18) {
    // The sender protocol address: what every receiver's cache learns.
    return f.readUInt32BE(off + 14) === gw.ip4 ? 'gateway-claim' : null;
  }
  return null;
}

function isGatewayIp6(f: Buffer, at: number, gw: GatewayAddrs | undefined): boolean {
  if (gw === undefined || at + 16 > f.length) return false;
  for (const a of gw.ip6) if (f.compare(a, 0, 16, at, at + 16) === 0) return true;
  return false;
}

function ipv4(f: Buffer, off: number): GuardReason | null {
  // A header no host would accept is nobody's router or DHCP server.
  if (f.length < off + 20 || f[off]! >> 4 !== 4) return null;
  const ihl = (f[off]! & 0x0f) * 4;
  const total = f.readUInt16BE(off + 2);
  if (ihl < 20) return null;
  // A total length shorter than the header (no host takes it; BIG TCP's 0): judge the frame.
  const end = total < ihl ? f.length : Math.min(f.length, off + total);
  if (off + ihl > end) return null;
  // A later fragment: its datagram is judged by its first fragment.
  if ((f.readUInt16BE(off + 6) & 0x1fff) !== 0) return null;
  const p = off + ihl;
  const proto = f[off + 9]!;
  if (proto === 17) {
    if (p + 4 > end) return 'unreadable';
    const sport = f.readUInt16BE(p);
    const dport = f.readUInt16BE(p + 2);
    return sport === 67 || dport === 68 ? 'dhcp4-server' : null;
  }
  if (proto === 1) {
    if (p + 1 > end) return 'unreadable';
    const t = f[p]!;
    return t === 5 || t === 9 ? 'icmp4-router' : null;
  }
  return null;
}

function ipv6(f: Buffer, off: number, gw: GatewayAddrs | undefined): GuardReason | null {
  if (f.length < off + 40 || f[off]! >> 4 !== 6) return null;
  const plen = f.readUInt16BE(off + 4);
  // Payload length 0 is a jumbogram (its length is in a hop-by-hop option): judge the frame.
  const end = plen === 0 ? f.length : Math.min(f.length, off + 40 + plen);
  let nh = f[off + 6]!;
  let p = off + 40;
  let fragmented = false;
  for (let i = 0; i <= MAX_EXT_HEADERS; i++) {
    switch (nh) {
      case 0: // hop-by-hop options
      case 43: // routing
      case 60: // destination options
      case 135: // mobility
      case 139: // HIP
      case 140: // shim6
      case 253: // experimental
      case 254:
        if (p + 2 > end) return 'unreadable';
        nh = f[p]!;
        p += (f[p + 1]! + 1) * 8;
        continue;
      case 51: // authentication header: length in 4-byte units, minus 2
        if (p + 2 > end) return 'unreadable';
        nh = f[p]!;
        p += (f[p + 1]! + 2) * 4;
        continue;
      case 44: {
        if (p + 8 > end) return 'unreadable';
        fragmented = true;
        const offset = f.readUInt16BE(p + 2) >> 3;
        nh = f[p]!;
        p += 8;
        if (offset !== 0) return null;
        continue;
      }
      case 58: {
        if (p + 1 > end) return 'unreadable';
        const t = f[p]!;
        if (t === 134) return 'ra';
        if (t === 137) return 'redirect';
        if (!isNd(t)) return null;
        if (fragmented) return 'nd-fragment';
        // From the gateway's address, or a neighbour advertisement for it (target at 8).
        if (isGatewayIp6(f, off + 8, gw) || (t === 136 && p + 24 <= end && isGatewayIp6(f, p + 8, gw))) return 'gateway-claim';
        return null;
      }
      case 17: {
        if (p + 4 > end) return 'unreadable';
        const sport = f.readUInt16BE(p);
        const dport = f.readUInt16BE(p + 2);
        return sport === 547 || dport === 546 ? 'dhcp6-server' : null;
      }
      default:
        // TCP, ESP (opaque), no next header, tunnels…: no router or DHCP message of this link.
        return null;
    }
  }
  return 'unreadable';
}
