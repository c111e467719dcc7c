/**
 * Two mvnet routers joined by an encrypted link (issue 11), each with one VM:
 *
 *   VM A ns ──TAP──> daemon A (router ns rA) ══ veth 10.99.0.1/30 ↔ .2/30 ══ daemon B (rB) <──TAP── VM B ns
 *                    network "lan" 10.98.0.0/24          link (UDP 51820)      network "lan" 10.98.0.0/24
 *
 * Both daemons have the same network (subnet, gateway); the link makes one Ethernet segment of
 * the two, so VM A (10.98.0.11) and VM B (10.98.0.12) are neighbours. Daemon A listens on
 * udp:51820; daemon B dials 10.99.0.1:51820 and listens too. VMs get static addresses (`vm
 * attach --ip`), set inside their namespaces as the kernel's own; each side's DHCP range is its
 * own (DHCP_RANGE_A/B), for tests that add DHCP clients.
 *
 * Used by the link tests (with test/support/daemon.ts startDaemon, whose error-line checks need
 * vitest) and by bench/links.ts (which runs outside vitest): so the caller passes the function
 * that starts a daemon in a namespace, and this module imports only netns.ts.
 *
 * Everything (namespaces, the veth, processes) is registered with the netns.ts registry and is
 * removed by `cleanupAll()` or at exit, also when a step fails half-way. Addresses exist only in
 * these namespaces (the network rule).
 */
import { addVeth, createNetns, uniqueName, waitFor, type Netns, type RunResult } from './netns.js';

/** The router↔router veth. */
export const ROUTER_A_IP = '10.99.0.1';
export const ROUTER_B_IP = '10.99.0.2';
const ROUTER_PREFIX = 30;
/** The shared network and the VMs on it. */
export const LAN_SUBNET = '10.98.0.0/24';
export const LAN_GATEWAY = '10.98.0.1';
export const VM_A_IP = '10.98.0.11';
export const VM_B_IP = '10.98.0.12';
/** Each side's DHCP hands out only its own range (one segment, two DHCP servers); the VMs' static addresses lie outside both. */
export const DHCP_RANGE_A = '10.98.0.100-10.98.0.149';
export const DHCP_RANGE_B = '10.98.0.150-10.98.0.199';
export const LINK_PORT = 51820;

/** What this module needs of a daemon: test/support/daemon.ts Daemon has it, as does the bench's. */
export interface RouterDaemon {
  readonly socket: string;
  readonly pid: number;
  /** Runs the CLI against this daemon; throws unless it exits 0; stdout. */
  cliOk(args: readonly string[]): Promise<string>;
  /** The same with `--json`, parsed. */
  cliJson<T>(args: readonly string[]): Promise<T>;
}

export type Side = 'a' | 'b';

/** Two router namespaces and the veth between them. */
export interface Routers {
  rA: Netns;
  rB: Netns;
  /** The veth's name in rA and in rB. */
  vethA: string;
  vethB: string;
  /** The veth's MTU. */
  mtu: number;
}

/**
 * Creates rA and rB joined by a veth (ROUTER_A_IP ↔ ROUTER_B_IP) of MTU `mtu`. TSO stays on
 * (the default): the encrypted datagrams are UDP, so it changes nothing for them.
 */
export async function createRouters(prefix: string, mtu = 1500): Promise<Routers> {
  const rA = await createNetns(`${prefix}-ra`);
  const rB = await createNetns(`${prefix}-rb`);
  const vethA = uniqueName('lkva');
  const vethB = uniqueName('lkvb');
  await addVeth({ name: vethA, netns: rA, mtu }, { name: vethB, netns: rB, mtu });
  await rA.addAddr(vethA, `${ROUTER_A_IP}/${ROUTER_PREFIX}`);
  await rB.addAddr(vethB, `${ROUTER_B_IP}/${ROUTER_PREFIX}`);
  return { rA, rB, vethA, vethB, mtu };
}

export interface LinkSide<D extends RouterDaemon> {
  side: Side;
  router: Netns;
  daemon: D;
  /** The daemon's link public key (`mvnet link key`). */
  publicKey: string;
  /** Name of the link this side added (`mvnet link add`), or undefined with `link: false`. */
  linkName: string | undefined;
  vm: { name: string; ns: Netns; ifname: string; ip: string };
}

export interface LinkTopologyOptions<D extends RouterDaemon> {
  /** Namespace name prefix (short: it becomes part of mvt-<prefix>-ra-<random>). */
  prefix: string;
  /** Starts one side's daemon inside `netns`, resolved once it is ready. */
  startDaemon: (o: { side: Side; netns: Netns }) => Promise<D>;
  /** MTU of the network "lan" and of the VMs' TAPs (default 1500). */
  mtu?: number;
  /** MTU of the router↔router veth (default 1500). */
  underlayMtu?: number;
  /** The VMs' TAPs with a virtio-net header (`vm attach --vnet-hdr`): TSO super-frames. */
  vnetHdr?: boolean;
  /** Reuse these routers (e.g. a bench that also runs wireguard-go across them). */
  routers?: Routers;
  /** Add the links (default true); false leaves that to the test. */
  link?: boolean;
  /** `--keepalive` on both links. */
  keepalive?: number;
}

export interface LinkTopology<D extends RouterDaemon> {
  routers: Routers;
  a: LinkSide<D>;
  b: LinkSide<D>;
  /** The `link add` arguments this module uses for `side` (for tests that add links themselves). */
  linkArgs(side: Side): string[];
  /** Resolves once VM `from` gets an echo reply from the other VM (deadline `timeoutMs`). */
  waitConnected(from?: Side, timeoutMs?: number): Promise<void>;
  /** `ping` from one VM to the other; true when a reply came. */
  ping(from: Side, opts?: { count?: number; waitS?: number; intervalS?: number; size?: number }): Promise<RunResult>;
}

async function attachVm<D extends RouterDaemon>(d: D, side: Side, prefix: string, ip: string, mtu: number, vnetHdr: boolean): Promise<LinkSide<D>['vm']> {
  const ns = await createNetns(`${prefix}-v${side}`);
  const ifname = uniqueName('lkt');
  const name = `vm${side}`;
  await d.cliOk(['vm', 'attach', name, '--net', 'lan', '--tap', ifname, '--netns', ns.name, '--ip', ip, ...(vnetHdr ? ['--vnet-hdr'] : [])]);
  await ns.waitForLink(ifname);
  await ns.exec(['ip', 'link', 'set', 'dev', ifname, 'mtu', String(mtu)]);
  await ns.addAddr(ifname, `${ip}/24`);
  return { name, ns, ifname, ip };
}

/** Builds the topology (see the file comment). Everything is registered for cleanup. */
export async function startLinkTopology<D extends RouterDaemon>(o: LinkTopologyOptions<D>): Promise<LinkTopology<D>> {
  const mtu = o.mtu ?? 1500;
  const routers = o.routers ?? (await createRouters(o.prefix, o.underlayMtu ?? 1500));
  const [dA, dB] = await Promise.all([o.startDaemon({ side: 'a', netns: routers.rA }), o.startDaemon({ side: 'b', netns: routers.rB })]);
  for (const [d, range] of [
    [dA, DHCP_RANGE_A],
    [dB, DHCP_RANGE_B],
  ] as const) {
    await d.cliOk(['net', 'create', 'lan', '--subnet', LAN_SUBNET, '--gateway', LAN_GATEWAY, '--mtu', String(mtu), '--dhcp-range', range]);
  }
  const [keyA, keyB] = await Promise.all([dA.cliJson<{ publicKey: string }>(['link', 'key']), dB.cliJson<{ publicKey: string }>(['link', 'key'])]);
  const linkArgs = (side: Side): string[] => {
    const keepalive = o.keepalive !== undefined ? ['--keepalive', String(o.keepalive)] : [];
    return side === 'a'
      ? ['link', 'add', 'to-b', '--net', 'lan', '--peer', keyB.publicKey, '--listen', `udp:${LINK_PORT}`, ...keepalive]
      : ['link', 'add', 'to-a', '--net', 'lan', '--peer', keyA.publicKey, '--endpoint', `${ROUTER_A_IP}:${LINK_PORT}`, '--listen', `udp:${LINK_PORT}`, ...keepalive];
  };
  const withLink = o.link ?? true;
  if (withLink) {
    await dA.cliOk(linkArgs('a'));
    await dB.cliOk(linkArgs('b'));
  }
  const vmA = await attachVm(dA, 'a', o.prefix, VM_A_IP, mtu, o.vnetHdr ?? false);
  const vmB = await attachVm(dB, 'b', o.prefix, VM_B_IP, mtu, o.vnetHdr ?? false);
  const a: LinkSide<D> = { side: 'a', router: routers.rA, daemon: dA, publicKey: keyA.publicKey, linkName: withLink ? 'to-b' : undefined, vm: vmA };
  const b: LinkSide<D> = { side: 'b', router: routers.rB, daemon: dB, publicKey: keyB.publicKey, linkName: withLink ? 'to-a' : undefined, vm: vmB };
  const other = (s: Side): LinkSide<D> => (s === 'a' ? b : a);
  const self = (s: Side): LinkSide<D> => (s === 'a' ? a : b);
  const ping = (from: Side, p: { count?: number; waitS?: number; intervalS?: number; size?: number } = {}): Promise<RunResult> => {
    const count = p.count ?? 3;
    return self(from).vm.ns.exec(
      ['ping', '-n', '-c', String(count), '-W', String(p.waitS ?? 1), '-i', String(p.intervalS ?? 0.2), ...(p.size !== undefined ? ['-s', String(p.size), '-M', 'do'] : []), other(from).vm.ip],
      { check: false, timeoutMs: 10_000 + count * 3_000 },
    );
  };
  return {
    routers,
    a,
    b,
    linkArgs,
    ping,
    async waitConnected(from: Side = 'a', timeoutMs = 20_000) {
      // The first echoes start the handshake (and ARP across the link): poll until one returns.
      await waitFor(async () => (await ping(from, { count: 1, waitS: 1 })).code === 0, {
        timeoutMs,
        intervalMs: 100,
        what: `VM ${from} to reach ${other(from).vm.ip} across the link`,
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// iperf3 between two namespaces

export interface IperfResult {
  /** Received bits/s over the measured seconds (after the `-O` warm-up), in Gbit/s. */
  gbps: number;
  retransmits: number;
  /** Wall time of the client run, seconds. */
  wallS: number;
}

interface IperfJson {
  end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } };
  error?: string;
}

/**
 * One TCP stream from `client` to `serverIp` (iperf3 -s -1 inside `server`) for `seconds`, after
 * `omit` seconds of warm-up that are not counted (`-O`).
 */
export async function iperf3(o: {
  client: Netns;
  server: Netns;
  serverIp: string;
  seconds: number;
  omit?: number;
  port?: number;
}): Promise<IperfResult> {
  const port = o.port ?? 5201;
  const server = o.server.spawn(['iperf3', '-s', '-1', '-B', o.serverIp, '-p', String(port)], { label: `iperf3 server ${o.serverIp}:${port}` });
  try {
    await waitFor(async () => (await o.server.exec(['ss', '-Hltn', `sport = :${port}`])).stdout.trim() !== '', { what: 'iperf3 server to listen' });
    const t0 = performance.now();
    const r = await o.client.exec(['iperf3', '-c', o.serverIp, '-p', String(port), '-t', String(o.seconds), '-O', String(o.omit ?? 1), '-J'], {
      check: false,
      timeoutMs: (o.seconds + (o.omit ?? 1) + 30) * 1000,
    });
    const wallS = (performance.now() - t0) / 1000;
    let j: IperfJson;
    try {
      j = JSON.parse(r.stdout) as IperfJson;
    } catch {
      throw new Error(`iperf3 client: exit ${r.code}: ${r.stderr.trim() || r.stdout.slice(0, 300)}`);
    }
    if (j.error) throw new Error(`iperf3: ${j.error}`);
    const bps = j.end?.sum_received?.bits_per_second;
    if (typeof bps !== 'number') throw new Error('iperf3 JSON has no end.sum_received.bits_per_second');
    return { gbps: bps / 1e9, retransmits: j.end?.sum_sent?.retransmits ?? 0, wallS };
  } finally {
    await server.stop();
  }
}
