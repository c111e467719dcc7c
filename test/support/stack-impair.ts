/**
 * A lossy, delaying, reordering link between the daemon's TAP and a VM's kernel — what
 * `tc qdisc ... netem loss 5% delay 5ms reorder 25% 50%` would do on the TAP (both directions),
 * for kernels without sch_netem (this project's machines run a kernel with neither netem nor tc
 * actions nor IFB-able netem, so the impairment lives in userland):
 *
 *   daemon ──TAP (created by the daemon in namespace OUTER)── relay (AF_PACKET on the TAP and
 *   on a veth end, in OUTER) ──veth── the VM's kernel in namespace INNER
 *
 * The relay is a small Node program run inside OUTER with the project's native addon (AF_PACKET
 * sockets and its batched Device). It applies netem's semantics per direction and per frame:
 * LOSS dropped; of the rest, REORDER (with CORRELATION, netem's correlated random) sent at once
 * and the others after DELAY ms — so frames overtake each other. SIGUSR2 makes it print its
 * counters as one JSON line.
 *
 * OUTER's own kernel stays out of the way: no addresses, IPv6 off. Offloads are off on the veth
 * (no GSO super-frames, real checksums) so every frame the relay sees is a plain wire frame; the
 * VM is attached with `--mac` = the INNER veth's MAC, so the daemon pins the VM's real MAC.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findAddon } from '../../plugins/native/index.js';
import { RELAY_JS } from '../../bench/impair-relay.js';
import { createNetns, uniqueName, type ManagedProcess, type Netns } from './netns.js';
import { StackVm, type Topology } from './stack-topology.js';

export interface Impairment {
  /** Probability a frame is dropped (0..1). */
  loss: number;
  /** Delay of the frames that are not reordered, ms. */
  delayMs: number;
  /** Probability a frame skips the delay (0..1). */
  reorder: number;
  /** netem's correlation of successive reorder decisions (0..1). */
  correlation: number;
}

export const NETEM_LIKE: Impairment = { loss: 0.05, delayMs: 5, reorder: 0.25, correlation: 0.5 };

export interface DirectionStats {
  frames: number;
  dropped: number;
  immediate: number;
  delayed: number;
  writeRejected: number;
}

export interface RelayStats {
  toVm: DirectionStats;
  fromVm: DirectionStats;
}


/** A VM behind an impaired link; `ns` is the VM's kernel (INNER). */
export class ImpairedVm extends StackVm {
  constructor(
    topo: Topology,
    name: string,
    net: string,
    ns: Netns,
    ifname: string,
    readonly outer: Netns,
    readonly tapIf: string,
    readonly relay: ManagedProcess,
  ) {
    super(topo, name, net, ns, ifname);
  }

  /** The relay's counters so far. */
  async relayStats(): Promise<RelayStats> {
    const from = this.relay.lines.length;
    this.relay.signal('SIGUSR2');
    const line = await this.relay.waitForLine((l) => l.includes('"ev":"stats"'), { fromIndex: from, timeoutMs: 5_000 });
    return JSON.parse(line) as RelayStats;
  }
}

/** Attaches VM `name` to `net` behind a userland netem-like link (see the file comment). */
export async function addImpairedVm(topo: Topology, name: string, net: string, imp: Impairment = NETEM_LIKE): Promise<ImpairedVm> {
  const addon = findAddon();
  if (addon === undefined) throw new Error('native addon not built (build/Release/mvnet_native.node)');
  const outer = await createNetns(`${topo.opts.prefix}-${name}o`);
  const inner = await createNetns(`${topo.opts.prefix}-${name}i`);
  const vethIn = uniqueName('mvti');
  const vethOut = uniqueName('mvto');
  await inner.exec(['ip', 'link', 'add', vethIn, 'type', 'veth', 'peer', 'name', vethOut, 'netns', outer.name]);
  for (const [ns, ifn] of [
    [inner, vethIn],
    [outer, vethOut],
  ] as const) {
    await ns.exec(['ethtool', '-K', ifn, 'tx', 'off', 'rx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off'], { check: false });
    const k = await ns.exec(['ethtool', '-k', ifn]);
    if (!/^tx-checksumming: off/m.test(k.stdout) || !/^generic-segmentation-offload: off/m.test(k.stdout)) {
      throw new Error(`could not turn offloads off on ${ifn}:\n${k.stdout}`);
    }
  }
  const mac = await inner.mac(vethIn);
  const tapIf = uniqueName('mvtv');
  await topo.cli(['vm', 'attach', name, '--net', net, '--tap', tapIf, '--netns', outer.name, '--mac', mac]);
  await outer.waitForLink(tapIf);
  await outer.exec(['ethtool', '-K', tapIf, 'gso', 'off', 'gro', 'off', 'tso', 'off'], { check: false });
  await outer.exec(['ip', 'link', 'set', tapIf, 'up']);
  await outer.exec(['ip', 'link', 'set', vethOut, 'up']);
  const script = join(topo.dir, `relay-${name}.cjs`);
  writeFileSync(script, RELAY_JS);
  const relay = outer.spawn(['node', script, addon, tapIf, vethOut, JSON.stringify(imp)], { label: `impairment relay ${name}` });
  await relay.waitForLine((l) => l.includes('"ev":"ready"'), { timeoutMs: 10_000 });
  await inner.exec(['ip', 'link', 'set', vethIn, 'up']);
  const vm = new ImpairedVm(topo, name, net, inner, vethIn, outer, tapIf, relay);
  topo.vms.set(name, vm);
  return vm;
}
