/**
 * The capture hub: knows every capture point (ports, networks, route exits, drops), runs the
 * sessions, and turns producers on only while a session needs them: a port is teed into a ring
 * (one per port, shared by the sessions on it) and the switch's and router's hooks are set. The
 * rings are drained on a timer while any is in use, before every hook packet (so one capture's
 * packets stay in order across its points), and when a session stops.
 *
 * When every session on a port's ring has the same filter (and takes the frames as they are),
 * the port is given that filter as a program too: the native tee runs it before the copy, so
 * what the capture would filter out is never copied, only counted (the ring's `filtered`),
 * and the sessions count it as seen and filtered out. JS filters what arrives all the same.
 */
import { GSO_MAX_FRAME } from '../wire/vnet.js';
import type { Logger } from 'pino';
import { compileFilterProgram } from './filter.js';
import type { Direction } from './pcapng.js';
import { checkFilter, Session, type Counters, type Iface } from './session.js';
import type { Sink } from './sink.js';
import type { CaptureParams, SourceSpec } from './params.js';
import type { CaptureRing, RingFactory, RingRecord, TeeablePort } from './ring.js';
import type { RouterTap, SwitchTap } from './taps.js';
import { withEther, DIR_IN, DIR_OUT, DROPS_POINT, EXIT_PREFIX, EXITS, NET_PREFIX, dropsPoint, exitPoint, netPoint, portPoint, tsoComment, type ExitName, type PointDesc, type PointLink } from './points.js';
import { NotFoundError, ConflictError } from '../errors.js';

export interface HubOptions {
  log: Logger;
  /** shb_userappl: "mvnet VERSION". */
  userappl: string;
  newRing: RingFactory;
  /** Realtime clock in nanoseconds (tests pass a fake one). */
  now?: () => number;
  /** Bytes of each port's tee ring (default: sized by the port's largest frame, 4 to 32 MiB). */
  ringBytes?: number;
  drainMs?: number;
}

export interface SwitchHooks {
  capture: SwitchTap | null;
}
export interface RouterHooks {
  capture: RouterTap | null;
}

interface Consumer {
  session: Session;
  iface: Iface;
  /** DIR_IN | DIR_OUT: the ring directions this consumer takes. */
  mask: number;
  /** The port carries bare IP and the point is Ethernet: add a synthetic header. */
  wrap: boolean;
}

interface PortEntry {
  vm: string;
  net: string;
  port: TeeablePort;
  link: PointLink;
  ring: CaptureRing | null;
  dirs: number;
  /** The filter the port was asked to run before the copy (null: none). */
  prefilter: string | null;
  lastDropped: number;
  lastFiltered: number;
  consumers: Consumer[];
}

interface NetEntry {
  name: string;
  sw: SwitchHooks;
  router: RouterHooks | null;
  swTap: SwitchTap;
  routerTap: RouterTap & { exits: boolean };
}

interface Target {
  session: Session;
  iface: Iface;
}

/** What a prepared capture will read; checked before the control API answers. */
export interface Prepared {
  id: string;
  points: PointDesc[];
  params: CaptureParams;
}

/**
 * A port's ring holds RING_FRAMES of its largest frames (its snaplen's, if smaller) between two
 * drains, within these bounds: at 64 KiB frames and 20 Gbit/s, 5 ms is about 200 frames.
 */
const RING_FRAMES = 256;
const MIN_RING_BYTES = 4 << 20;
const MAX_RING_BYTES = 32 << 20;
/** Bytes of a ring record's header (plugins/common/tee-ring.ts REC_HDR). */
const RING_RECORD_OVERHEAD = 24 + 8;

function ringBytesFor(port: TeeablePort, snaplen: number): number {
  let frame = (port.vnetHdrLen ?? 0) > 0 ? GSO_MAX_FRAME : (port.maxFrame ?? GSO_MAX_FRAME);
  if (snaplen > 0 && snaplen < frame) frame = snaplen;
  return Math.min(MAX_RING_BYTES, Math.max(MIN_RING_BYTES, RING_FRAMES * (frame + RING_RECORD_OVERHEAD)));
}
/**
 * The filter a port may run before the copy: only when every consumer would filter each frame
 * the ring carries the same way (same non-empty filter, every direction of the ring, the port's
 * own link type, no synthetic header), so a frame rejected natively is one each of them rejects.
 */
function prefilterOf(pe: PortEntry, cons: readonly Consumer[], dirs: number): string | null {
  if (cons.length === 0) return null;
  const text = cons[0]!.session.filterText;
  if (text.trim() === '') return null;
  for (const c of cons) {
    if (c.session.filterText !== text || c.wrap || c.mask !== dirs || c.iface.link !== pe.link) return null;
  }
  return text;
}

/** Live captures at once: each may hold SINK_QUEUE_BYTES for a reader that does not read. */
export const MAX_LIVE_CAPTURES = 64;

function realNowNs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1e6);
}

export class CaptureHub {
  private readonly ports = new Map<string, PortEntry>();
  private readonly nets = new Map<string, NetEntry>();
  private readonly sessions = new Set<Session>();
  private netTargets = new Map<string, Target[]>();
  private dropTargets: Target[] = [];
  private exitTargets = new Map<ExitName, Target[]>();
  private timer: NodeJS.Timeout | null = null;
  private draining = false;
  private rebuildQueued = false;
  private nextId = 1;
  readonly now: () => number;
  /** A fixed ring size (tests); else ringBytesFor each port. */
  private readonly ringBytes: number | undefined;
  private readonly drainMs: number;
  /** Told when points come and go (tees wait for theirs). */
  onPointsChanged: (() => void) | null = null;

  constructor(private readonly o: HubOptions) {
    this.now = o.now ?? realNowNs;
    this.ringBytes = o.ringBytes;
    this.drainMs = o.drainMs ?? 5;
  }

  // --- points -----------------------------------------------------------------------------

  points(): PointDesc[] {
    const out: PointDesc[] = [];
    for (const p of [...this.ports.values()].sort((a, b) => a.vm.localeCompare(b.vm))) out.push(portPoint(p.vm, p.net, p.link));
    for (const n of [...this.nets.keys()].sort()) out.push(netPoint(n));
    for (const e of EXITS) out.push(exitPoint(e));
    out.push(dropsPoint());
    return out;
  }

  private point(name: string): PointDesc | undefined {
    if (name === DROPS_POINT) return dropsPoint();
    if (name.startsWith(EXIT_PREFIX)) {
      const e = name.slice(EXIT_PREFIX.length);
      return (EXITS as readonly string[]).includes(e) ? exitPoint(e as ExitName) : undefined;
    }
    if (name.startsWith(NET_PREFIX)) {
      const n = name.slice(NET_PREFIX.length);
      return this.nets.has(n) ? netPoint(n) : undefined;
    }
    const p = this.ports.get(name);
    return p === undefined ? undefined : portPoint(p.vm, p.net, p.link);
  }

  /** The points of a source, or why not (a VM not attached, a network that does not exist). */
  resolve(from: SourceSpec, drops: boolean): PointDesc[] {
    const names = from.vm !== undefined ? [from.vm] : from.net !== undefined ? [NET_PREFIX + from.net] : (from.point ?? []);
    if (drops && !names.includes(DROPS_POINT)) names.push(DROPS_POINT);
    return names.map((n) => {
      const p = this.point(n);
      if (p !== undefined) return p;
      if (from.vm !== undefined) throw new NotFoundError(`no VM named ${n} is attached`);
      if (from.net !== undefined) throw new NotFoundError(`no network named ${from.net}`);
      throw new NotFoundError(`no capture point named ${n} (mvnet capture --list shows them)`);
    });
  }

  /** `live`: a capture.start, refused past MAX_LIVE_CAPTURES running (tees are bounded by the state). */
  prepare(params: CaptureParams, live = false): Prepared {
    if (live && [...this.sessions].filter((s) => s.kind === 'live').length >= MAX_LIVE_CAPTURES) throw new ConflictError(`${MAX_LIVE_CAPTURES} captures are running already; stop one first`);
    checkFilter(params.filter);
    return { id: `c${this.nextId++}`, points: this.resolve(params.from, params.drops), params };
  }

  /** Starts a prepared capture into `sink`. Points gone since prepare(): it ends at once, cleanly. */
  open(prep: Prepared, sink: Sink, opts: { kind: 'live' | 'tee'; name?: string; counters?: Counters } = { kind: 'live' }): Session {
    const { params } = prep;
    const s = new Session({
      id: opts.kind === 'tee' ? `tee:${opts.name ?? ''}` : prep.id,
      kind: opts.kind,
      ...(opts.name !== undefined ? { name: opts.name } : {}),
      points: prep.points,
      filter: params.filter,
      snaplen: params.snaplen,
      ...(params.count !== undefined ? { count: params.count } : {}),
      ...(params.durationSec !== undefined ? { durationSec: params.durationSec } : {}),
      userappl: this.o.userappl,
      sink,
      now: this.now,
      ...(opts.counters !== undefined ? { counters: opts.counters } : {}),
    });
    s.onEnd = (x, why) => this.ended(x, why);
    this.sessions.add(s);
    this.o.log.info({ capture: s.id, points: prep.points.map((p) => p.name), filter: params.filter }, 'capture started');
    if (prep.points.some((p) => this.point(p.name) === undefined)) s.stop('a capture point is gone');
    else this.rebuild();
    return s;
  }

  list(): Session[] {
    return [...this.sessions];
  }

  private ended(s: Session, why: string): void {
    if (!this.sessions.has(s)) return;
    // Everything its ports hold goes in (or is counted) before its statistics are written.
    if (!this.draining) this.drainAll(true);
    this.sessions.delete(s);
    this.o.log.info({ capture: s.id, why, ...s.counters }, 'capture ended');
    // Not now: a session can end inside a drain callback (count reached).
    if (!this.rebuildQueued) {
      this.rebuildQueued = true;
      queueMicrotask(() => {
        this.rebuildQueued = false;
        this.rebuild();
      });
    }
  }

  // --- producers come and go --------------------------------------------------------------

  portAdded(vm: string, net: string, port: TeeablePort): void {
    this.portRemoved(vm);
    this.ports.set(vm, { vm, net, port, link: port.layer === 3 ? 'raw' : 'ether', ring: null, dirs: 0, prefilter: null, lastDropped: 0, lastFiltered: 0, consumers: [] });
    this.rebuild();
    this.onPointsChanged?.();
  }

  /** The VM's port is going away: its captures end (cleanly), a net capture stops teeing it. */
  portRemoved(vm: string): void {
    const e = this.ports.get(vm);
    if (e === undefined) return;
    this.drainAll(true);
    for (const s of [...this.sessions]) if (s.iface(vm) !== undefined && s.points.some((p) => p.kind === 'port' && p.name === vm)) s.stop(`VM ${vm} detached`);
    this.setRing(e, null, 0, null);
    this.ports.delete(vm);
    this.rebuild();
    this.onPointsChanged?.();
  }

  netAdded(name: string, sw: SwitchHooks, router: RouterHooks | null): void {
    const swTap: SwitchTap = {
      fromGateway: (frames) => this.fromGateway(name, frames),
      dropped: (frame, hdrLen, reason, vm) => this.dropped(hdrLen > 0 ? frame.subarray(hdrLen) : frame, `dropped: ${reason} (from ${vm} on ${name})`),
    };
    const routerTap: RouterTap & { exits: boolean } = {
      exits: false,
      exit: (exit, packet, dir, comment) => this.exit(exit, packet, dir, comment),
      dropped: (frame, comment, vm) => this.dropped(frame, `${comment} (from ${vm} on ${name})`),
    };
    this.nets.set(name, { name, sw, router, swTap, routerTap });
    this.rebuild();
    this.onPointsChanged?.();
  }

  netRemoved(name: string): void {
    const e = this.nets.get(name);
    if (e === undefined) return;
    this.drainAll(true);
    for (const s of [...this.sessions]) if (s.iface(NET_PREFIX + name) !== undefined) s.stop(`network ${name} deleted`);
    e.sw.capture = null;
    if (e.router !== null) e.router.capture = null;
    this.nets.delete(name);
    this.rebuild();
    this.onPointsChanged?.();
  }

  /** Ends every capture cleanly (daemon stopping). */
  close(why = 'the daemon is stopping'): void {
    for (const s of [...this.sessions]) s.stop(why);
    this.rebuild();
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  // --- wiring -----------------------------------------------------------------------------

  /** Works out who consumes what, and turns producers on and off to match. */
  private rebuild(): void {
    const sessions = [...this.sessions].filter((s) => !s.ended);
    for (const pe of this.ports.values()) {
      const cons: Consumer[] = [];
      for (const s of sessions) {
        const own = s.points.some((p) => p.kind === 'port' && p.name === pe.vm) ? s.iface(pe.vm) : undefined;
        if (own !== undefined) cons.push({ session: s, iface: own, mask: DIR_IN | DIR_OUT, wrap: false });
        const net = s.iface(NET_PREFIX + pe.net);
        if (net !== undefined) cons.push({ session: s, iface: net, mask: DIR_IN, wrap: pe.link === 'raw' });
      }
      const dirs = cons.reduce((m, c) => m | c.mask, 0);
      // One ring per port: as long as the longest snaplen asked for.
      const snap = cons.reduce((m, c) => Math.max(m, c.session.snaplen), 0);
      // What the ring refused or filtered so far is the current consumers' loss, not the next ones'.
      if (pe.ring !== null) this.countLost(pe);
      pe.consumers = cons;
      const pre = prefilterOf(pe, cons, dirs);
      if (cons.length === 0) this.setRing(pe, null, 0, null);
      else if (pe.ring === null || (pe.ring.snaplen !== 0 && pe.ring.snaplen < snap)) this.setRing(pe, this.o.newRing(this.ringBytes ?? ringBytesFor(pe.port, snap), snap), dirs, pre);
      else if (pe.dirs !== dirs || pe.prefilter !== pre) this.setRing(pe, pe.ring, dirs, pre);
    }
    const targets = (name: string): Target[] => {
      const out: Target[] = [];
      for (const s of sessions) {
        const i = s.iface(name);
        if (i !== undefined && s.points.some((p) => p.name === name && p.kind !== 'port')) out.push({ session: s, iface: i });
      }
      return out;
    };
    this.dropTargets = targets(DROPS_POINT);
    this.exitTargets = new Map(EXITS.map((e) => [e, targets(EXIT_PREFIX + e)]));
    const anyExit = [...this.exitTargets.values()].some((t) => t.length > 0);
    const drops = this.dropTargets.length > 0;
    this.netTargets = new Map();
    for (const n of this.nets.values()) {
      const t = targets(NET_PREFIX + n.name);
      this.netTargets.set(n.name, t);
      n.sw.capture = t.length > 0 || drops ? n.swTap : null;
      n.routerTap.exits = anyExit;
      if (n.router !== null) n.router.capture = anyExit || drops ? n.routerTap : null;
    }
    const rings = [...this.ports.values()].some((p) => p.ring !== null);
    if (rings && this.timer === null) {
      this.timer = setInterval(() => this.drainAll(), this.drainMs);
      this.timer.unref();
    } else if (!rings && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private setRing(pe: PortEntry, ring: CaptureRing | null, dirs: number, prefilter: string | null): void {
    if (pe.ring !== null && pe.ring !== ring) this.drainPort(pe);
    const fresh = pe.ring !== ring;
    pe.ring = ring;
    pe.dirs = dirs;
    if (fresh) {
      pe.lastDropped = ring?.dropped ?? 0;
      pe.lastFiltered = ring?.filtered ?? 0;
    }
    const program = prefilter !== null ? compileFilterProgram(prefilter, pe.link) : null;
    pe.prefilter = prefilter; // asked for, even when past the device's limits (no program then)
    try {
      // No program: the two-argument call (a port that has none to drop needs no third).
      if (program !== null) pe.port.tee?.(ring, dirs, program);
      else pe.port.tee?.(ring, dirs);
    } catch (e) {
      this.o.log.warn({ vm: pe.vm, err: (e as Error).message }, 'could not tee the port');
    }
  }

  // --- packets ----------------------------------------------------------------------------

  /**
   * Hands every record waiting in the ports' rings to their sessions. With more than one ring
   * in use the records are merged by timestamp first (copied: a record is valid only inside its
   * ring's drain), so a capture of several ports (a network) is in time order.
   */
  drainAll(force = false): void {
    if (this.draining) return;
    this.draining = true;
    try {
      // A blocked port's ring is left full: the addon refuses its copies meanwhile.
      const ready: PortEntry[] = [];
      for (const pe of this.ports.values()) if (pe.ring !== null && (force || !this.blocked(pe))) ready.push(pe);
      if (ready.length === 1) ready[0]!.ring!.drain((r: RingRecord) => this.dispatch(ready[0]!, r));
      else if (ready.length > 1) this.drainMerged(ready);
      // What every ring refused or filtered since the last look, drained or not.
      for (const pe of this.ports.values()) if (pe.ring !== null) this.countLost(pe);
    } finally {
      this.draining = false;
    }
  }

  /** Every consumer of the port's ring has an output that cannot take packets now. */
  private blocked(pe: PortEntry): boolean {
    const cons = pe.consumers;
    for (let i = 0; i < cons.length; i++) if (!cons[i]!.session.blocked()) return false;
    return cons.length > 0;
  }

  private drainMerged(ready: readonly PortEntry[]): void {
    const all: { ts: number; seq: number; pe: PortEntry; r: RingRecord }[] = [];
    for (const pe of ready) {
      pe.ring!.drain((r) => {
        all.push({ ts: r.tsSec * 1e9 + r.tsNsec, seq: all.length, pe, r: { ...r, frame: Buffer.from(r.frame) } });
      });
    }
    all.sort((a, b) => a.ts - b.ts || a.seq - b.seq);
    for (const x of all) this.dispatch(x.pe, x.r);
  }

  /** One port's ring, before it is replaced or let go. */
  private drainPort(pe: PortEntry): void {
    pe.ring!.drain((r: RingRecord) => this.dispatch(pe, r));
    this.countLost(pe);
  }

  private dispatch(pe: PortEntry, r: RingRecord): void {
    const cons = pe.consumers;
    const ts = r.tsSec * 1e9 + r.tsNsec;
    const comment = r.gsoType !== 0 ? tsoComment(r.gsoType, r.gsoSize) : undefined;
    const dir: Direction = r.dir === DIR_IN ? 'in' : 'out';
    let wrapped: Buffer | null = null;
    for (let i = 0; i < cons.length; i++) {
      const c = cons[i]!;
      if ((c.mask & r.dir) === 0) continue;
      let f = r.frame;
      if (c.wrap) f = wrapped ??= withEther(r.frame);
      c.session.deliver(c.iface, ts, f, r.origLen + (c.wrap ? 14 : 0), dir, comment);
    }
  }

  /**
   * Copies the ring refused since the last look: each consumer's session lost them; and frames
   * the port's prefilter rejected: each consumer saw and filtered them out.
   */
  private countLost(pe: PortEntry): void {
    const ring = pe.ring!;
    const lost = ring.dropped - pe.lastDropped;
    if (lost > 0) {
      pe.lastDropped = ring.dropped;
      for (const c of pe.consumers) c.session.lost(c.iface, lost);
    }
    const filtered = ring.filtered - pe.lastFiltered;
    if (filtered > 0) {
      pe.lastFiltered = ring.filtered;
      for (const c of pe.consumers) c.session.filtered(c.iface, filtered);
    }
  }

  private deliver(targets: readonly Target[] | undefined, frame: Buffer, dir: Direction, comment: string | undefined): void {
    if (targets === undefined || targets.length === 0) return;
    const ts = this.now();
    for (const t of targets) t.session.deliver(t.iface, ts, frame, frame.length, dir, comment);
  }

  private fromGateway(net: string, frames: readonly Buffer[]): void {
    const t = this.netTargets.get(net);
    if (t === undefined || t.length === 0) return;
    this.drainAll();
    for (const f of frames) this.deliver(t, f, 'out', undefined);
  }

  private dropped(frame: Buffer, comment: string): void {
    if (this.dropTargets.length === 0) return;
    this.drainAll();
    this.deliver(this.dropTargets, frame, 'in', comment);
  }

  private exit(exit: ExitName | null, packet: Buffer, dir: 'in' | 'out', comment: string): void {
    if (exit === null) return;
    const t = this.exitTargets.get(exit);
    if (t === undefined || t.length === 0) return;
    this.drainAll();
    this.deliver(t, packet, dir, comment);
  }
}
