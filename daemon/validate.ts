/**
 * Checks control-API parameters and the state file. Every rejection is a UserError whose message
 * says what is wrong in one line; accepted values come back normalised.
 */
import { Address4, Address6 } from 'ip-address';
import type { NetworkSpec, VmSpec } from './model.js';
import type { PortSpec } from '../plugins/types.js';
import { UserError } from './errors.js';
import { parseMacString, isUnicastMac } from './switch/mac.js';

export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
export const MIN_MTU = 576;
export const MAX_MTU = 65520;

type Obj = Record<string, unknown>;

export function asObject(v: unknown, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UserError(`${what} must be an object`);
  return v as Obj;
}

function str(o: Obj, key: string, required: true): string;
function str(o: Obj, key: string, required: false): string | undefined;
function str(o: Obj, key: string, required: boolean): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (required) throw new UserError(`missing ${key}`);
    return undefined;
  }
  if (typeof v !== 'string' || v.length === 0) throw new UserError(`${key} must be a non-empty string`);
  return v;
}

export function checkName(v: unknown, what: string): string {
  if (typeof v !== 'string' || !NAME_RE.test(v)) {
    throw new UserError(`invalid ${what} name ${JSON.stringify(v)}: use letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)`);
  }
  return v;
}

function checkIfname(v: string, what: string): string {
  if (!IFNAME_RE.test(v)) throw new UserError(`invalid ${what} interface name ${JSON.stringify(v)}: 1-15 letters, digits, '.', '_' or '-'`);
  return v;
}

function checkPath(v: string, what: string): string {
  if (!v.startsWith('/')) throw new UserError(`${what} must be an absolute path, got ${JSON.stringify(v)}`);
  if (Buffer.byteLength(v) > 107) throw new UserError(`${what} is longer than a unix socket path can be (107 bytes)`);
  return v;
}

function checkNetns(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (v.startsWith('/')) return v;
  if (!NAME_RE.test(v)) throw new UserError(`invalid netns ${JSON.stringify(v)}: a name from 'ip netns' or an absolute path`);
  return v;
}

export function parseIpv4Cidr(s: string): Address4 {
  if (!/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(s)) throw new UserError(`invalid subnet ${JSON.stringify(s)}: expected IPv4 CIDR like 10.0.0.0/24`);
  let a: Address4;
  try {
    a = new Address4(s);
  } catch {
    throw new UserError(`invalid subnet ${JSON.stringify(s)}: expected IPv4 CIDR like 10.0.0.0/24`);
  }
  if (a.subnetMask < 8 || a.subnetMask > 30) throw new UserError(`subnet ${s}: prefix length must be between 8 and 30`);
  return a;
}

export function parseIpv4(s: string, what: string): Address4 {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(s)) throw new UserError(`invalid ${what} ${JSON.stringify(s)}: expected an IPv4 address`);
  try {
    return new Address4(s);
  } catch {
    throw new UserError(`invalid ${what} ${JSON.stringify(s)}: expected an IPv4 address`);
  }
}

function hostsOf(net: Address4): { first: bigint; last: bigint } {
  return { first: net.startAddress().bigInt() + 1n, last: net.endAddress().bigInt() - 1n };
}

export function checkNetworkSpec(p: unknown): NetworkSpec {
  const o = asObject(p, 'params');
  const name = checkName(o.name, 'network');
  const subnetStr = str(o, 'subnet', true);
  const net = parseIpv4Cidr(subnetStr);
  const subnet = `${net.startAddress().address}/${net.subnetMask}`;
  const range = hostsOf(net);
  let gateway: string;
  const gw = str(o, 'gateway', false);
  if (gw === undefined) gateway = Address4.fromBigInt(range.first).address;
  else {
    const g = parseIpv4(gw, 'gateway');
    const n = g.bigInt();
    if (n < range.first || n > range.last) throw new UserError(`gateway ${gw} is not a host address of ${subnet}`);
    gateway = g.address;
  }
  let ipv6: string | undefined;
  const v6 = str(o, 'ipv6', false);
  if (v6 !== undefined) {
    let a: Address6;
    try {
      a = new Address6(v6);
    } catch {
      throw new UserError(`invalid ipv6 prefix ${JSON.stringify(v6)}: expected CIDR like fd00:1::/64`);
    }
    if (!v6.includes('/') || a.subnetMask < 8 || a.subnetMask > 64) throw new UserError(`ipv6 prefix ${v6}: prefix length must be between 8 and 64`);
    ipv6 = `${a.startAddress().correctForm()}/${a.subnetMask}`;
  }
  let mtu = 1500;
  if (o.mtu !== undefined) {
    if (typeof o.mtu !== 'number' || !Number.isInteger(o.mtu) || o.mtu < MIN_MTU || o.mtu > MAX_MTU) {
      throw new UserError(`invalid mtu ${JSON.stringify(o.mtu)}: an integer from ${MIN_MTU} to ${MAX_MTU}`);
    }
    mtu = o.mtu;
  }
  if (ipv6 !== undefined && mtu < 1280) throw new UserError(`mtu ${mtu} is below IPv6's minimum of 1280`);
  const spec: NetworkSpec = { name, subnet, gateway, mtu };
  if (ipv6 !== undefined) spec.ipv6 = ipv6;
  return spec;
}

function checkMac(v: string): string {
  const m = parseMacString(v);
  if (m === null) throw new UserError(`invalid MAC ${JSON.stringify(v)}: expected six hex pairs like 52:54:00:12:34:56`);
  if (!isUnicastMac(m) || m === 0) throw new UserError(`MAC ${v} is not a unicast address`);
  return v.toLowerCase();
}

export function checkPortSpec(p: unknown): PortSpec {
  const o = asObject(p, 'port');
  const kind = o.kind;
  const netns = checkNetns(str(o, 'netns', false));
  const withNs = <T extends object>(s: T): T => (netns !== undefined ? { ...s, netns } : s);
  switch (kind) {
    case 'tap': {
      const spec: PortSpec = withNs({ kind: 'tap' as const, ifname: checkIfname(str(o, 'ifname', true), 'tap') });
      if (o.vnetHdr === true) spec.vnetHdr = true;
      if (o.multiQueue === true) spec.multiQueue = true;
      return spec;
    }
    case 'tun':
      return withNs({ kind: 'tun' as const, ifname: checkIfname(str(o, 'ifname', true), 'tun') });
    case 'iface':
      return withNs({ kind: 'iface' as const, ifname: checkIfname(str(o, 'ifname', true), 'iface') });
    case 'unix':
    case 'unix-listen':
      if (netns !== undefined) throw new UserError('--netns applies to --tap, --tun and --iface only');
      return { kind, path: checkPath(str(o, 'path', true), 'socket path') };
    case 'dgram': {
      if (netns !== undefined) throw new UserError('--netns applies to --tap, --tun and --iface only');
      const spec: PortSpec = { kind: 'dgram', path: checkPath(str(o, 'path', true), 'socket path') };
      const peer = str(o, 'peer', false);
      if (peer !== undefined) spec.peer = checkPath(peer, 'dgram peer path');
      return spec;
    }
    case 'fd': {
      if (netns !== undefined) throw new UserError('--netns applies to --tap, --tun and --iface only');
      if (o.fd !== undefined) {
        if (typeof o.fd !== 'number' || !Number.isInteger(o.fd) || o.fd < 3) throw new UserError(`invalid fd ${JSON.stringify(o.fd)}: an open descriptor number of 3 or more`);
        return { kind: 'fd', fd: o.fd };
      }
      return { kind: 'fd', rx: checkPath(str(o, 'rx', true), 'FIFO path'), tx: checkPath(str(o, 'tx', true), 'FIFO path') };
    }
    default:
      throw new UserError(`unknown port kind ${JSON.stringify(kind)}: one of tap, tun, unix, unix-listen, dgram, fd, iface`);
  }
}

export function checkVmSpec(p: unknown, nets: ReadonlyMap<string, NetworkSpec>): VmSpec {
  const o = asObject(p, 'params');
  const name = checkName(o.name, 'VM');
  const netName = checkName(o.net, 'network');
  const net = nets.get(netName);
  if (net === undefined) throw new UserError(`no network named ${netName}`);
  const port = checkPortSpec(o.port);
  const spec: VmSpec = { name, net: netName, port };
  const mac = str(o, 'mac', false);
  if (mac !== undefined) spec.mac = checkMac(mac);
  const ip = str(o, 'ip', false);
  if (ip !== undefined) {
    const a = parseIpv4(ip, 'ip');
    const subnet = new Address4(net.subnet);
    const range = hostsOf(subnet);
    const n = a.bigInt();
    if (n < range.first || n > range.last) throw new UserError(`ip ${ip} is not a host address of ${net.name}'s subnet ${net.subnet}`);
    if (a.address === net.gateway) throw new UserError(`ip ${ip} is the gateway address of ${net.name}`);
    spec.ip = a.address;
  }
  if (port.kind === 'tun' && spec.mac !== undefined) throw new UserError('--mac does not apply to --tun (a TUN carries no Ethernet header)');
  const learned = str(o, 'learnedMac', false);
  if (learned !== undefined) spec.learnedMac = checkMac(learned);
  return spec;
}
