/**
 * Configures an interface inside a network namespace (a container's, a namespace standing in
 * for a VM) with `ip` run through `nsenter --net=PATH`: the address mvnet assigned, the MTU,
 * up, and a default route through the gateway. Used by `mvnet-cni` and `mvnet hook` (device
 * `tap` with a `netns`).
 */
import { HookError, CODES, runProgram } from './core.js';

/** `ip netns` names live in /run/netns; anything else is taken as a path. */
export function netnsPath(ns: string): string {
  return ns.startsWith('/') ? ns : `/run/netns/${ns}`;
}

export function ipIn(ns: string, args: readonly string[]): Promise<string> {
  return runProgram('nsenter', [`--net=${netnsPath(ns)}`, '--', 'ip', ...args]);
}

export interface IfaceConfig {
  ifname: string;
  /** CIDR, e.g. 10.1.0.5/24. */
  address4: string;
  gateway4: string;
  address6?: string;
  mtu: number;
}

/** Returns whether the IPv6 address was configured (not where the namespace has IPv6 disabled). */
export async function configureIface(ns: string, c: IfaceConfig): Promise<boolean> {
  try {
    await ipIn(ns, ['link', 'set', 'dev', c.ifname, 'mtu', String(c.mtu), 'up']);
    await ipIn(ns, ['addr', 'replace', c.address4, 'dev', c.ifname]);
    await ipIn(ns, ['route', 'replace', 'default', 'via', c.gateway4, 'dev', c.ifname]);
    if (c.address6 === undefined) return false;
    try {
      await ipIn(ns, ['-6', 'addr', 'replace', c.address6, 'dev', c.ifname, 'nodad']);
      return true;
    } catch (e) {
      if (/IPv6 is disabled/.test((e as Error).message)) return false;
      throw e;
    }
  } catch (e) {
    throw new HookError(CODES.interfaceSetup, `configuring ${c.ifname} in ${ns}: ${(e as Error).message}`);
  }
}

/** The IPv4 addresses (CIDR) on `ifname` in `ns`, or null when the interface is not there. */
export async function addressesIn(ns: string, ifname: string): Promise<string[] | null> {
  let out: string;
  try {
    out = await ipIn(ns, ['-j', 'addr', 'show', 'dev', ifname]);
  } catch {
    return null;
  }
  const parsed = JSON.parse(out) as { addr_info?: { family: string; local: string; prefixlen: number }[] }[];
  return (parsed[0]?.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
}
