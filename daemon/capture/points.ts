/**
 * Capture points: where packets can be captured, by the name users type (`--point`) and the pcapng
 * interface name. Direction semantics, as seen from the point (epb_flags):
 * - `VM` (a port): inbound = what the VM sent (the port read it), outbound = what it was given;
 * - `net:NAME`: each frame once, as it entered the switch: inbound = sent by a member VM,
 *   outbound = sent into the network by the gateway (the router's replies, DHCP, RAs);
 * - `exit:KIND`: bare IP packets at a route exit: outbound = the VM's packet handed to the exit,
 *   inbound = the exit's reply handed back to the VM;
 * - `drops`: frames the switches and routers dropped, inbound (all come from a VM), the reason as comment.
 */
import { LINKTYPE_ETHERNET, LINKTYPE_RAW } from './pcapng.js';

export type PointKind = 'port' | 'net' | 'exit' | 'drops';
export type PointLink = 'ether' | 'raw';

export const EXITS = ['direct', 'tor', 'local', 'via'] as const;
export type ExitName = (typeof EXITS)[number];

export const DROPS_POINT = 'drops';
export const NET_PREFIX = 'net:';
export const EXIT_PREFIX = 'exit:';

export { TEE_IN as DIR_IN, TEE_OUT as DIR_OUT } from '../../plugins/common/tee-ring.js';

export interface PointDesc {
  name: string;
  kind: PointKind;
  link: PointLink;
  description: string;
}

export function linkTypeOf(link: PointLink): number {
  return link === 'raw' ? LINKTYPE_RAW : LINKTYPE_ETHERNET;
}

export function portPoint(vm: string, net: string, link: PointLink): PointDesc {
  return { name: vm, kind: 'port', link, description: `port of VM ${vm} on ${net}: inbound = what the VM sent, outbound = what it was given` };
}

export function netPoint(net: string): PointDesc {
  return { name: NET_PREFIX + net, kind: 'net', link: 'ether', description: `network ${net}, each frame once: inbound = sent by a VM, outbound = sent by the gateway` };
}

const EXIT_TEXT: Record<ExitName, string> = {
  direct: 'the direct route (host sockets)',
  tor: 'Tor',
  local: "the gateway's own services (DNS over TCP, host loopback)",
  via: 'routes via another VM (not carried by the gateway)',
};

export function exitPoint(e: ExitName): PointDesc {
  return { name: EXIT_PREFIX + e, kind: 'exit', link: 'raw', description: `IP packets handed to ${EXIT_TEXT[e]}: outbound = from the VM, inbound = replies to it; comment = the flow's route decision` };
}

export function dropsPoint(): PointDesc {
  return { name: DROPS_POINT, kind: 'drops', link: 'ether', description: 'frames dropped by the switches and routers, each with its reason as comment' };
}

/** The gso_type names of a virtio-net header, for the TSO comment. */
export function gsoName(t: number): string {
  switch (t & 0x7f) {
    case 1:
      return 'tcpv4';
    case 3:
      return 'udp';
    case 4:
      return 'tcpv6';
    default:
      return `type ${t & 0x7f}`;
  }
}

export function tsoComment(gsoType: number, gsoSize: number): string {
  return `TSO super-frame (gso ${gsoName(gsoType)}${gsoType & 0x80 ? ' ecn' : ''}, mss ${gsoSize}) as it crossed the port`;
}

/** A bare IP packet in an Ethernet frame with zero MACs, for Ethernet points and QEMU peers. */
export function withEther(packet: Buffer): Buffer {
  const f = Buffer.allocUnsafe(14 + packet.length);
  f.fill(0, 0, 12);
  f.writeUInt16BE(packet.length > 0 && packet[0]! >> 4 === 6 ? 0x86dd : 0x0800, 12);
  packet.copy(f, 14);
  return f;
}
