/**
 * One isolated L2 segment: a learning switch over its members' ports. Frames never leave the
 * network except through its gateway handler (the router, added by the stack issue). Each member
 * may only send from its own MAC: given at attach, or learned from its first frame and then fixed.
 *
 * A trunk member (attachTrunk: an encrypted link to another router's switch) carries the frames
 * of many remote VMs instead, and follows its own rules (inputTrunk): its source MACs are learned
 * per frame, never a local member's or the gateway's, at most `maxMacs` at a time; its frames
 * never go out on another trunk (split horizon: no loops across links) and never reach this
 * router's gateway, which serves only its own VMs (so never sends to a trunk either).
 */
import type { Port, DropReason } from '../../plugins/types.js';
import { MIN_FRAME, maxFrameFor } from '../../plugins/types.js';
import { MacTable, type MacTableMirror } from './mac-table.js';
import { readMac } from '../wire/mac.js';
import { isGroupMac } from './mac.js';
import { normalizeOffload, tcpOffloadWhole } from '../wire/gso.js';
import { hasVnetHeadroom, markPartialCsum, VNET_HDR_LEN, withVnetHdr } from '../wire/vnet.js';
import { dataPathFault } from '../errors.js';
import { rogueService, type GatewayAddrs, type GuardReason } from './guard.js';
import type { SwitchTap } from '../capture/taps.js';

/** A rogue-service verdict as a capture's drop comment says it. */
const ROGUE_TEXT: Record<GuardReason, string> = {
  ra: 'rogue RA',
  redirect: 'rogue ICMPv6 redirect',
  'nd-fragment': 'neighbour discovery in a fragment',
  'icmp4-router': 'rogue ICMPv4 redirect or router advertisement',
  'dhcp4-server': 'rogue DHCP server',
  'dhcp6-server': 'rogue DHCPv6 server',
  unreadable: 'unreadable header chain',
  'vlan-depth': 'too many VLAN tags',
  'gateway-claim': "claims the gateway's address",
};

export type Clock = () => number;

/** Where frames addressed to the gateway (and broadcasts) go. Frames are valid only during the call. */
export interface GatewayHandler {
  input(frames: readonly Buffer[], from: Member): void;
}

export type DropCounts = Partial<Record<DropReason, number>>;

export interface Member {
  /** The VM's name, or the link's for a trunk. */
  readonly vm: string;
  readonly port: Port;
  /** The only source MAC this member may use; null until learned from its first frame. */
  mac: number | null;
  readonly drops: DropCounts;
  /** Output accumulated during one input batch, flushed as one send. */
  readonly out: Buffer[];
  /** A link's port carrying many remote MACs (attachTrunk); `mac` stays null. */
  readonly trunk: boolean;
}

/** What the switch keeps per trunk. */
interface TrunkState {
  readonly member: Member;
  readonly maxMacs: number;
  /** MACs the MAC table holds for this trunk (aged ones until swept or looked up). */
  macs: number;
  /** When a full trunk last swept aged MACs out of the table. */
  swept: number;
}

export const DEFAULT_TRUNK_MAX_MACS = 1024;
/** A full trunk sweeps the table for aged MACs at most this often (a sweep walks the table). */
const TRUNK_SWEEP_MS = 1000;

/**
 * The native cut-through table of a network (plugins/native DeviceSwitchFib): unicast MAC → the
 * member port frames to it may be forwarded to in native code, for a while.
 */
export interface SwitchFib {
  set(mac: number, port: Port, validMs: number): boolean;
  delete(mac: number): void;
  clear(): void;
}

/**
 * A port that can forward for the switch in native code (DevicePort): frames it reads that the
 * switch would forward unchanged to a member in the table go straight out; the switch is told
 * afterwards (onForwarded) and sees only the rest of each batch.
 */
export interface CutThroughPort extends Port {
  newSwitchFib(gatewayMac: number, maxFrame: number): SwitchFib;
  bindSwitch(fib: SwitchFib, mac: number | null, onForwarded: (frames: number) => void): boolean;
  setSwitchMac(mac: number): void;
  unbindSwitch(): void;
}

function isCutThroughPort(p: Port): p is CutThroughPort {
  return typeof (p as Partial<CutThroughPort>).bindSwitch === 'function';
}

export interface NetworkOptions {
  name: string;
  mtu: number;
  gatewayMac: number;
  clock: Clock;
  macAgeMs?: number;
  /** Called when a member's MAC is learned so the owner can persist it. */
  onMacLearned?: (m: Member) => void;
  /**
   * A VM's frame dropped by a policy of the switch (for the log): `spoofed-mac`, or the guard's
   * `guard-<reason>` (guard.ts GuardReason). `dst`: the frame's destination MAC.
   */
  onPolicyDrop?: (vm: string, reason: string, dst: number) => void;
}

export interface NetworkStats {
  forwarded: number;
  flooded: number;
  toGateway: number;
  drops: DropCounts;
}

/** Frames as a capture shows them: offload frames segmented and checksummed (copies). */
function plainFrames(frames: readonly Buffer[]): readonly Buffer[] {
  if (!frames.some(hasVnetHeadroom)) return frames;
  const out: Buffer[] = [];
  for (const f of frames) {
    if (hasVnetHeadroom(f)) normalizeOffload(withVnetHdr(f), out);
    else out.push(f);
  }
  return out;
}

function count(d: DropCounts, r: DropReason, n = 1): void {
  d[r] = (d[r] ?? 0) + n;
}

export class Network {
  readonly name: string;
  readonly mtu: number;
  readonly gatewayMac: number;
  private readonly members: Member[] = [];
  private readonly table: MacTable<Member>;
  private readonly clock: Clock;
  private readonly onMacLearned: (m: Member) => void;
  private readonly onPolicyDrop: NetworkOptions['onPolicyDrop'];
  private gateway: GatewayHandler | null = null;
  private gatewayAddrs: GatewayAddrs | undefined;
  private readonly gwOut: Buffer[] = [];
  private readonly dirty: Member[] = [];
  private readonly maxFrame: number;
  private sweepTimer: NodeJS.Timeout;
  /** Cut-through: created with the first member whose port can do it. */
  private fib: SwitchFib | null = null;
  /** Members whose port is bound to `fib`. */
  private readonly cutThrough = new Set<Member>();
  /** Local (non-trunk) members' MACs, fixed or learned: a trunk may never send from one. */
  private readonly localMacs = new Map<number, Member>();
  private readonly trunks = new Map<Member, TrunkState>();
  /** Which trunk each trunk-learned MAC in the table belongs to, for the per-trunk counts. */
  private readonly trunkOf = new Map<number, TrunkState>();
  readonly stats: NetworkStats = { forwarded: 0, flooded: 0, toGateway: 0, drops: {} };
  /** Set by the capture hub while a capture needs this network's frames or drops; else null. */
  capture: SwitchTap | null = null;

  constructor(opts: NetworkOptions) {
    this.name = opts.name;
    this.mtu = opts.mtu;
    this.gatewayMac = opts.gatewayMac;
    this.clock = opts.clock;
    const ageMs = opts.macAgeMs ?? 300_000;
    this.table = new MacTable<Member>(ageMs, this.fibMirror(ageMs));
    this.onMacLearned = opts.onMacLearned ?? (() => {});
    this.onPolicyDrop = opts.onPolicyDrop;
    this.maxFrame = maxFrameFor(opts.mtu);
    this.sweepTimer = setInterval(() => this.table.sweep(this.clock()), 60_000);
    this.sweepTimer.unref();
  }

  /**
   * Keeps the cut-through table a subset of the MAC table: an entry there expires a margin
   * before the MAC table's own (the clock is milliseconds of real time), and goes when the MAC
   * ages out or its member leaves.
   */
  private fibMirror(ageMs: number): MacTableMirror<Member> {
    const validMs = ageMs - Math.min(1000, ageMs / 10);
    return {
      refreshMs: Math.min(1000, ageMs / 10),
      set: (mac, member) => {
        this.countTrunkMac(mac, member);
        if (this.fib === null) return;
        if (this.cutThrough.has(member)) this.fib.set(mac, member.port, validMs);
        else this.fib.delete(mac);
      },
      delete: (mac) => {
        this.countTrunkMac(mac, null);
        this.fib?.delete(mac);
      },
    };
  }

  /** Keeps each trunk's MAC count in step with the table: `mac` is now `member`'s (null: gone). */
  private countTrunkMac(mac: number, member: Member | null): void {
    const was = this.trunkOf.get(mac);
    if (was !== undefined) {
      if (was.member === member) return;
      was.macs--;
      this.trunkOf.delete(mac);
    }
    if (member === null || !member.trunk) return;
    const t = this.trunks.get(member);
    if (t === undefined) return;
    t.macs++;
    this.trunkOf.set(mac, t);
  }

  /** Bookkeeping for frames a member's port forwarded in native code (Network.input's, for them). */
  private onCutThrough(member: Member, frames: number): void {
    if (!this.cutThrough.has(member)) return;
    this.stats.forwarded += frames;
    if (member.mac !== null) this.table.learn(member.mac, member, this.clock());
  }

  setGateway(handler: GatewayHandler | null): void {
    this.gateway = handler;
  }

  /** The gateway's IP addresses, which the guard keeps VMs from claiming in ARP and ND. */
  setGatewayAddresses(a: GatewayAddrs): void {
    this.gatewayAddrs = a;
  }

  /** Adds a port to the switch. `mac`: fixed source MAC, or null to learn from the first frame. */
  attach(vm: string, port: Port, mac: number | null): Member {
    if (port.layer !== 2) throw new Error(`port ${port.name} is not an Ethernet port`);
    if (mac !== null && this.members.some((m) => m.mac === mac)) throw new Error(`MAC already in use on network ${this.name}`);
    const member: Member = { vm, port, mac, drops: {}, out: [], trunk: false };
    this.members.push(member);
    if (mac !== null) {
      this.localMacs.set(mac, member);
      // A VM's own MAC wins over a remote VM using it now: frames to it go to the VM from here on.
      const now = this.clock();
      if (this.table.lookup(mac, now)?.trunk === true) this.table.learn(mac, member, now);
    }
    this.listen(member, (frames) => this.input(member, frames));
    if (isCutThroughPort(port)) {
      this.fib ??= port.newSwitchFib(this.gatewayMac, this.maxFrame);
      if (port.bindSwitch(this.fib, mac, (n) => this.onCutThrough(member, n))) this.cutThrough.add(member);
    }
    return member;
  }

  /**
   * Adds a link's port (a trunk): it carries the frames of many MACs (remote VMs), learned per
   * frame, at most `maxMacs` at a time. Never a cut-through member: its frames need the trunk
   * rules, which only the switch here applies.
   */
  attachTrunk(name: string, port: Port, opts: { maxMacs?: number } = {}): Member {
    if (port.layer !== 2) throw new Error(`port ${port.name} is not an Ethernet port`);
    const maxMacs = opts.maxMacs ?? DEFAULT_TRUNK_MAX_MACS;
    if (!Number.isInteger(maxMacs) || maxMacs < 1) throw new Error(`maxMacs must be a positive integer, not ${maxMacs}`);
    const member: Member = { vm: name, port, mac: null, drops: {}, out: [], trunk: true };
    const t: TrunkState = { member, maxMacs, macs: 0, swept: -Infinity };
    this.members.push(member);
    this.trunks.set(member, t);
    this.listen(member, (frames) => this.inputTrunk(t, frames));
    return member;
  }

  /**
   * MACs learned on a trunk (0 for any other member). One that aged out counts until the table
   * next sweeps it (within a minute, or at once when the trunk is full).
   */
  trunkMacs(m: Member): number {
    return this.trunks.get(m)?.macs ?? 0;
  }

  private listen(member: Member, input: (frames: readonly Buffer[]) => void): void {
    const port = member.port;
    port.onFrames((frames) => {
      try {
        input(frames);
      } catch (e) {
        // A bug, not the VM's fault: count it, forget the half-built batch, keep switching.
        this.forgetBatch();
        dataPathFault('switch input', e, { network: this.name, vm: member.vm, port: port.name, frames: frames.length });
      }
    });
  }

  detach(member: Member): void {
    if (this.cutThrough.has(member)) {
      // Reports (and books) what the port forwarded natively and had not reported yet.
      (member.port as CutThroughPort).unbindSwitch();
      this.cutThrough.delete(member);
    }
    const i = this.members.indexOf(member);
    if (i >= 0) this.members.splice(i, 1);
    if (member.mac !== null && this.localMacs.get(member.mac) === member) this.localMacs.delete(member.mac);
    this.table.forget(member);
    this.trunks.delete(member);
    member.port.onFrames(() => {});
  }

  get size(): number {
    return this.members.length;
  }

  /** The switch proper: one call per batch read from a member's port. */
  private input(src: Member, frames: readonly Buffer[]): void {
    const now = this.clock();
    const h = src.port.vnetHdrLen;
    let learned = false;
    let lastMac = -1;
    let lastDst: Member | undefined;
    for (let i = 0; i < frames.length; i++) {
      const f = frames[i]!;
      const len = f.length - h;
      if (len < MIN_FRAME) {
        count(src.drops, 'runt');
        if (this.capture !== null) this.capture.dropped(f, h, 'runt frame', src.vm);
        continue;
      }
      // A vnet-header frame may be a TSO super-frame; its size was checked by the port.
      if (h === 0 && len > this.maxFrame) {
        count(src.drops, 'oversize');
        if (this.capture !== null) this.capture.dropped(f, h, 'oversize frame', src.vm);
        continue;
      }
      if (isGroupMac(f, h + 6)) {
        count(src.drops, 'spoofed');
        count(this.stats.drops, 'spoofed');
        if (this.capture !== null) this.capture.dropped(f, h, 'group source MAC', src.vm);
        continue;
      }
      const smac = readMac(f, h + 6);
      if (src.mac !== smac) {
        if (src.mac !== null || !this.claimMac(src, smac)) {
          count(src.drops, 'spoofed');
          count(this.stats.drops, 'spoofed');
          if (this.capture !== null) this.capture.dropped(f, h, 'spoofed source MAC', src.vm);
          this.onPolicyDrop?.(src.vm, 'spoofed-mac', readMac(f, h));
          continue;
        }
      }
      // Rogue router / DHCP server (guard.ts): the one check, for the native cut-through path too.
      const rogue = rogueService(f, h, this.gatewayAddrs);
      if (rogue !== null) {
        count(src.drops, 'filtered');
        count(this.stats.drops, 'filtered');
        if (this.capture !== null) this.capture.dropped(f, h, ROGUE_TEXT[rogue], src.vm);
        this.onPolicyDrop?.(src.vm, `guard-${rogue}`, readMac(f, h));
        continue;
      }
      // Every frame of a batch has the member's one MAC: learn once per batch.
      if (!learned) {
        this.table.learn(smac, src, now);
        learned = true;
      }
      if (isGroupMac(f, h)) {
        this.flood(src, f);
        continue;
      }
      const dmac = readMac(f, h);
      if (dmac === this.gatewayMac) {
        this.toGateway(src, f);
        continue;
      }
      // Bursts go to one destination: remember the last lookup within the batch.
      let dst: Member | undefined;
      if (dmac === lastMac) dst = lastDst;
      else {
        dst = this.table.lookup(dmac, now);
        lastMac = dmac;
        lastDst = dst;
      }
      if (dst === undefined) {
        this.flood(src, f);
      } else if (dst === src) {
        count(src.drops, 'no-route');
        if (this.capture !== null) this.capture.dropped(f, h, 'addressed to its own port', src.vm);
      } else {
        this.stats.forwarded++;
        this.enqueue(src, dst, f);
      }
    }
    this.flush(src);
  }

  /**
   * The switch for a batch from a trunk. As `input`, but each frame's source MAC is checked and
   * learned on its own, and frames go only to local members (never another trunk, never the
   * gateway).
   */
  private inputTrunk(t: TrunkState, frames: readonly Buffer[]): void {
    const src = t.member;
    const now = this.clock();
    const h = src.port.vnetHdrLen;
    // The last source MAC that passed (and was learned), and the last destination looked up.
    let lastSmac = -1;
    let lastMac = -1;
    let lastDst: Member | undefined;
    for (let i = 0; i < frames.length; i++) {
      const f = frames[i]!;
      const len = f.length - h;
      if (len < MIN_FRAME) {
        count(src.drops, 'runt');
        if (this.capture !== null) this.capture.dropped(f, h, 'runt frame', src.vm);
        continue;
      }
      if (h === 0 && len > this.maxFrame) {
        count(src.drops, 'oversize');
        if (this.capture !== null) this.capture.dropped(f, h, 'oversize frame', src.vm);
        continue;
      }
      const smac = readMac(f, h + 6);
      if (smac !== lastSmac) {
        const refused = this.trunkSourceRefused(t, f, h, smac, now);
        if (refused !== null) {
          count(src.drops, refused);
          count(this.stats.drops, refused);
          continue;
        }
      }
      const rogue = rogueService(f, h, this.gatewayAddrs);
      if (rogue !== null) {
        count(src.drops, 'filtered');
        count(this.stats.drops, 'filtered');
        if (this.capture !== null) this.capture.dropped(f, h, ROGUE_TEXT[rogue], src.vm);
        this.onPolicyDrop?.(src.vm, `guard-${rogue}`, readMac(f, h));
        continue;
      }
      // Per frame: a trunk carries many sources (a batch of the same one learns it once).
      if (smac !== lastSmac) {
        this.table.learn(smac, src, now);
        lastSmac = smac;
      }
      if (isGroupMac(f, h)) {
        this.floodFromTrunk(src, f);
        continue;
      }
      const dmac = readMac(f, h);
      if (dmac === this.gatewayMac) {
        // This router's gateway serves its own VMs only; the far router's serves the far ones.
        count(src.drops, 'no-route');
        if (this.capture !== null) this.capture.dropped(f, h, 'addressed to the gateway from a link', src.vm);
        continue;
      }
      let dst: Member | undefined;
      if (dmac === lastMac) dst = lastDst;
      else {
        dst = this.table.lookup(dmac, now);
        lastMac = dmac;
        lastDst = dst;
      }
      if (dst === undefined) {
        this.floodFromTrunk(src, f);
      } else if (dst === src) {
        count(src.drops, 'no-route');
        if (this.capture !== null) this.capture.dropped(f, h, 'addressed to its own port', src.vm);
      } else if (dst.trunk) {
        // Split horizon: what came over one link never goes out on another (no loops).
        count(src.drops, 'no-route');
        if (this.capture !== null) this.capture.dropped(f, h, 'from a link to another link', src.vm);
      } else {
        this.stats.forwarded++;
        this.enqueue(src, dst, f);
      }
    }
    this.flush(src);
  }

  /**
   * Why a trunk may not send from `smac` now (the drop reason, the capture told why), or null
   * when it may: then `smac` is already this trunk's or there is room to learn it.
   */
  private trunkSourceRefused(t: TrunkState, f: Buffer, h: number, smac: number, now: number): DropReason | null {
    const src = t.member;
    let why: string | null = null;
    if (isGroupMac(f, h + 6)) why = 'group source MAC';
    else if (smac === this.gatewayMac) why = "the gateway's MAC as source";
    else if (this.localMacs.has(smac)) why = "a local port's MAC as source";
    if (why !== null) {
      if (this.capture !== null) this.capture.dropped(f, h, why, src.vm);
      return 'spoofed';
    }
    if (this.trunkOf.get(smac) === t || t.macs < t.maxMacs) return null;
    // Full: MACs that aged out may still be counted until swept; sweep, but not per frame.
    if (now - t.swept >= TRUNK_SWEEP_MS) {
      t.swept = now;
      this.table.sweep(now);
      if (t.macs < t.maxMacs) return null;
    }
    if (this.capture !== null) this.capture.dropped(f, h, 'too many MACs on the link', src.vm);
    return 'filtered';
  }

  private claimMac(src: Member, smac: number): boolean {
    if (smac === this.gatewayMac) return false;
    for (const m of this.members) if (m !== src && m.mac === smac) return false;
    // A remote VM's MAC (learned on a link, not aged out) is in use on this segment.
    if (this.table.lookup(smac, this.clock())?.trunk === true) return false;
    src.mac = smac;
    this.localMacs.set(smac, src);
    if (this.cutThrough.has(src)) (src.port as CutThroughPort).setSwitchMac(smac);
    this.onMacLearned(src);
    return true;
  }

  /** From a local member: every other member, trunks included, and the gateway. */
  private flood(src: Member, f: Buffer): void {
    this.stats.flooded++;
    for (const m of this.members) if (m !== src) this.enqueue(src, m, f);
    this.toGateway(src, f);
  }

  /** From a trunk: local members only (split horizon; the gateway serves its own VMs only). */
  private floodFromTrunk(src: Member, f: Buffer): void {
    this.stats.flooded++;
    for (const m of this.members) if (!m.trunk) this.enqueue(src, m, f);
  }

  private toGateway(src: Member, f: Buffer): void {
    if (this.gateway === null) {
      // Broadcasts reach the gateway too; only unicast to it counts as a drop.
      if (!isGroupMac(f, src.port.vnetHdrLen)) {
        count(src.drops, 'no-route');
        if (this.capture !== null) this.capture.dropped(f, src.port.vnetHdrLen, 'no gateway', src.vm);
      }
      return;
    }
    this.stats.toGateway++;
    if (src.port.vnetHdrLen === 0) {
      this.gwOut.push(f);
      return;
    }
    // A TCP super-frame (or partial checksum) goes on whole: the endpoint takes one long segment.
    const whole = tcpOffloadWhole(f);
    if (whole !== null) {
      markPartialCsum(whole);
      this.gwOut.push(whole);
    } else if (normalizeOffload(f, this.gwOut) < 0) {
      count(src.drops, 'bad-offload');
      if (this.capture !== null) this.capture.dropped(f, src.port.vnetHdrLen, 'bad offload header', src.vm);
    }
  }

  private enqueue(src: Member, dst: Member, f: Buffer): void {
    const sh = src.port.vnetHdrLen;
    const dh = dst.port.vnetHdrLen;
    if (dst.out.length === 0) this.dirty.push(dst);
    if (sh === dh) dst.out.push(f);
    else if (sh === VNET_HDR_LEN && dh === 0) {
      // Offloaded frame to a port without offloads (a QEMU socket): segment in software.
      if (normalizeOffload(f, dst.out) < 0) {
        count(src.drops, 'bad-offload');
        if (this.capture !== null) this.capture.dropped(f, sh, 'bad offload header', src.vm);
      }
    } else {
      const g = Buffer.allocUnsafe(dh + f.length);
      g.fill(0, 0, dh);
      f.copy(g, dh);
      dst.out.push(g);
    }
  }

  private flush(src: Member): void {
    const dirty = this.dirty;
    for (let i = 0; i < dirty.length; i++) {
      const m = dirty[i]!;
      if (m.out.length > 0) m.port.send(m.out);
      m.out.length = 0;
    }
    dirty.length = 0;
    if (this.gwOut.length > 0 && this.gateway !== null) {
      this.gateway.input(this.gwOut, src);
    }
    this.gwOut.length = 0;
  }

  /** Drops whatever a batch that threw left queued (views into a buffer the port reuses). */
  private forgetBatch(): void {
    for (const m of this.dirty) m.out.length = 0;
    this.dirty.length = 0;
    this.gwOut.length = 0;
  }

  /**
   * Frames from the gateway into the network (replies from the router). Unicast goes to the
   * member owning the destination MAC; group or unknown destinations flood. Never to a trunk:
   * each router's gateway serves only its own VMs.
   */
  fromGateway(frames: readonly Buffer[]): void {
    if (this.capture !== null) this.capture.fromGateway(plainFrames(frames));
    const now = this.clock();
    for (const f of frames) {
      if (f.length < MIN_FRAME) continue;
      if (isGroupMac(f, 0)) {
        for (const m of this.members) if (!m.trunk) this.enqueueFromGateway(m, f);
        continue;
      }
      const dmac = readMac(f, 0);
      const dst = this.table.lookup(dmac, now) ?? this.localMacs.get(dmac);
      if (dst !== undefined && !dst.trunk) this.enqueueFromGateway(dst, f);
    }
    for (const m of this.dirty) {
      if (m.out.length > 0) m.port.send(m.out);
      m.out.length = 0;
    }
    this.dirty.length = 0;
  }

  private enqueueFromGateway(dst: Member, f: Buffer): void {
    if (dst.out.length === 0) this.dirty.push(dst);
    const dh = dst.port.vnetHdrLen;
    if (hasVnetHeadroom(f)) {
      // The endpoint's offload frame: its header is already in the bytes before it.
      if (dh === VNET_HDR_LEN) dst.out.push(withVnetHdr(f));
      // Not for this port after all (re-attached without offloads): segmented, checksummed.
      else normalizeOffload(withVnetHdr(f), dst.out);
    } else if (dh === 0) dst.out.push(f);
    else {
      const g = Buffer.allocUnsafe(dh + f.length);
      g.fill(0, 0, dh);
      f.copy(g, dh);
      dst.out.push(g);
    }
  }

  /**
   * Whether the gateway may send offload frames (virtio-net header, GSO, partial checksums) to
   * the member with `mac`: a local member whose port has the header and takes them now (a
   * vhost-user guest that negotiated them), while no capture is on.
   */
  offloadsTo(mac: number): boolean {
    if (this.capture !== null) return false;
    const m = this.localMacs.get(mac);
    return m !== undefined && m.port.vnetHdrLen === VNET_HDR_LEN && m.port.offloadsOk?.() !== false;
  }

  close(): void {
    clearInterval(this.sweepTimer);
    for (const m of [...this.members]) this.detach(m);
    this.fib?.clear();
  }
}
