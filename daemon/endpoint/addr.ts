/** IP addresses as the endpoint keys and emits them: IPv4 as a number, IPv6 as 16 bytes. */
import { formatIpv4, formatIpv6 } from '../wire/ip-text.js';

export type IpAddr = { readonly v: 4; readonly n: number } | { readonly v: 6; readonly b: Buffer };

export function ip4(n: number): IpAddr {
  return { v: 4, n: n >>> 0 };
}

export function ip6(b: Uint8Array): IpAddr {
  return { v: 6, b: Buffer.from(b.subarray(0, 16)) };
}

export function ipString(a: IpAddr): string {
  return a.v === 4 ? formatIpv4(a.n) : formatIpv6(a.b);
}

/** Short map key (no allocation beyond the string itself). */
export function ipKey(a: IpAddr): string {
  return a.v === 4 ? String(a.n) : a.b.toString('hex');
}

export function ipEqual(a: IpAddr, b: IpAddr): boolean {
  return a.v === 4 ? b.v === 4 && a.n === b.n : b.v === 6 && a.b.equals(b.b);
}

/** Both ends of a VM's flow, as the VM sees it. */
export interface FlowAddr {
  readonly vmIp: IpAddr;
  readonly vmPort: number;
  readonly remoteIp: IpAddr;
  readonly remotePort: number;
}

export function flowKey(proto: number, f: FlowAddr): string {
  return `${proto}|${ipKey(f.vmIp)}|${f.vmPort}|${ipKey(f.remoteIp)}|${f.remotePort}`;
}
