/** What the daemon persists and what the control API takes: plain data, validated in validate.ts. */
import type { DeviceRecord, PortSpec } from '../../plugins/types.js';
import type { Route } from '../routes/route.js';

export interface NetworkSpec {
  name: string;
  /** IPv4 network in CIDR form, normalised (host bits zero). */
  subnet: string;
  /** Gateway IPv4 address inside the subnet (the router's address on this network). */
  gateway: string;
  /** Optional IPv6 prefix in CIDR form. */
  ipv6?: string;
  mtu: number;
  /**
   * "FIRST-LAST": the addresses DHCP hands out dynamically (default: the whole subnet). Routers
   * sharing the segment over a link give theirs disjoint ranges.
   */
  dhcpRange?: string;
}

export interface VmSpec {
  name: string;
  net: string;
  port: PortSpec;
  /** Fixed source MAC given at attach. */
  mac?: string;
  /** MAC learned from the VM's first frame; fixed from then on (and across restarts). */
  learnedMac?: string;
  /** IPv4 address (static lease later; the TUN member's address now). */
  ip?: string;
  /**
   * TAP/TUN: whether mvnet created the device and what it changed on one it did not, recorded
   * at attach; detach (even after restarts) deletes or restores by it. Only from the state file:
   * a control caller cannot claim a device was mvnet's.
   */
  device?: DeviceRecord;
}

export const STATE_VERSION = 1;

export interface StateFile {
  version: number;
  networks: NetworkSpec[];
  vms: VmSpec[];
  /** Per VM name; kept across detach/attach so a re-attached VM keeps its route. Absent = none. */
  routes: Record<string, Route>;
  /** DHCP leases per network (the gateway's snapshot format). */
  leases?: Record<string, unknown>;
  /** Port forwards (host listener → VM port). */
  forwards?: unknown[];
  /** Onion names and published onion services (keys of --persist services: this file is 0600). */
  tor?: unknown;
  /** Tees (capture/tees.ts TeeSpec), checked by validate.ts checkTeeSpec at restore. */
  tees?: unknown[];
  /** Encrypted links (daemon/mesh/links.ts LinksState), checked at restore. */
  links?: unknown;
}
