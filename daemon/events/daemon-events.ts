/**
 * Where the daemon's events come from. daemon.ts calls in at the changes it makes (attach,
 * detach, route set, Tor ready/down); what changes by itself (a port's state, a link's session,
 * bounded counters) is watched: sampled once a second from the counters the daemon keeps anyway,
 * so nothing is added to the data path.
 *
 * Fail closed: a VM whose route uses Tor, while Tor is down (it stopped, or could not be
 * started or reached), has its Tor traffic refused: `route.failclosed` once when that begins for
 * it (Tor went down, or the route was set or the VM attached while Tor is down), and
 * `route.recovered` when Tor is ready again. A Tor that was started and is not ready is down
 * too once it has had time: after TOR_STUCK_MS, or TOR_WARNED_MS if Tor gave a warning (it
 * cannot reach a relay, its clock is off): a bootstrap that never ends must not stay silent.
 */
import type { PortState } from '../../plugins/types.js';
import type { RouteView } from '../routes/route.js';
import { EventBus } from './bus.js';
import type { LimitKind } from './types.js';

/** At most one `limit.hit` per VM (or capture) and limit this often. */
export const LIMIT_EVENT_MS = 10_000;
const WATCH_MS = 1000;
/** A Tor started this long ago and still not ready counts as down. */
export const TOR_STUCK_MS = 30_000;
/** The same, sooner, when Tor has said what is wrong. */
export const TOR_WARNED_MS = 5_000;

export interface WatchedVm {
  name: string;
  state: PortState;
  detail: string;
  /** The endpoint's per-VM counters (null: not on a network router). */
  counters: { tcpLimit: number; udpLimit: number; tcpRefused: number; udpDropped: number } | null;
}

export interface WatchSources {
  vms(): WatchedVm[];
  links(): { name: string; kind: 'link' | 'agent'; state: string }[];
  captures(): { id: string; name?: string; dropped: number }[];
  /** Attached VMs whose route uses Tor. */
  torVms(): string[];
}

interface Limit {
  reported: number;
  at: number;
}

const COUNTER_LIMITS: [keyof NonNullable<WatchedVm['counters']>, LimitKind][] = [
  ['tcpLimit', 'tcp-flows'],
  ['udpLimit', 'udp-flows'],
  ['tcpRefused', 'tcp-refused'],
  ['udpDropped', 'udp-dropped'],
];

export class DaemonEvents {
  readonly bus: EventBus;
  private readonly vmState = new Map<string, PortState>();
  private readonly linkState = new Map<string, string>();
  private readonly limits = new Map<string, Limit>();
  private readonly failing = new Set<string>();
  /** Why Tor is down (null: it is not, or was never started). */
  private torDownReason: string | null = null;
  /** When Tor was (re)started and has not been ready since (null: not starting). */
  private torStartedAt: number | null = null;
  /** Tor's latest warning while it was starting. */
  private torLastWarning: string | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly src: WatchSources,
    opts: { onListenerError?: (err: unknown) => void; clock?: () => number } = {},
  ) {
    this.bus = new EventBus(opts);
    this.clock = opts.clock ?? Date.now;
  }
  private readonly clock: () => number;

  start(): void {
    if (this.timer !== null) return;
    this.poll(true);
    this.timer = setInterval(() => this.poll(false), WATCH_MS);
    this.timer.unref();
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** VMs whose Tor route fails closed now. */
  failingClosed(): ReadonlySet<string> {
    return this.failing;
  }

  vmAttached(vm: string, net: string, port: string, kind: string, status: { state: PortState; detail: string }, usesTor: boolean): void {
    this.bus.emit({ type: 'vm.attached', vm, net, port, kind });
    // Its state from now on is watched; a port that is up at once is said so now.
    this.vmState.set(vm, status.state);
    if (status.state === 'up') this.bus.emit({ type: 'vm.up', vm, detail: status.detail });
    if (usesTor) this.failClosed(vm);
  }

  vmDetached(vm: string, net: string): void {
    this.vmState.delete(vm);
    for (const k of this.limits.keys()) if (k.startsWith(`vm:${vm}|`)) this.limits.delete(k);
    this.failing.delete(vm);
    this.bus.emit({ type: 'vm.detached', vm, net });
  }

  routeChanged(vm: string, route: RouteView, description: string, usesTor: boolean, attached: boolean): void {
    this.bus.emit({ type: 'route.changed', vm, route, routeText: description });
    if (!usesTor) this.failing.delete(vm);
    else if (attached) this.failClosed(vm);
  }

  /** Tor is being started: not down (yet), whatever stopped it before. */
  torStarting(): void {
    if (this.torStartedAt !== null) return;
    this.torStartedAt = this.clock();
    this.torLastWarning = null;
    this.torDownReason = null;
  }

  torReady(): void {
    this.torStartedAt = null;
    this.torLastWarning = null;
    this.torDownReason = null;
    this.bus.emit({ type: 'tor.up' });
    for (const vm of [...this.failing]) {
      this.failing.delete(vm);
      this.bus.emit({ type: 'route.recovered', vm });
    }
  }

  torWarning(message: string): void {
    if (this.torStartedAt !== null) this.torLastWarning = message;
    this.bus.emit({ type: 'tor.warning', message });
  }

  torDown(reason: string): void {
    this.torStartedAt = null;
    this.torDownReason = reason;
    this.bus.emit({ type: 'tor.down', reason });
    for (const vm of this.src.torVms()) this.failClosed(vm);
  }

  /** A Tor that does not become ready is down, with its own warning as the reason when it gave one. */
  private checkTorStuck(now: number): void {
    if (this.torStartedAt === null || this.torDownReason !== null) return;
    const waited = now - this.torStartedAt;
    if (waited < (this.torLastWarning !== null ? TOR_WARNED_MS : TOR_STUCK_MS)) return;
    this.torDownReason = this.torLastWarning ?? `not bootstrapped after ${Math.round(waited / 1000)} s`;
    for (const vm of this.src.torVms()) this.failClosed(vm);
  }

  private failClosed(vm: string): void {
    if (this.torDownReason === null || this.failing.has(vm)) return;
    this.failing.add(vm);
    this.bus.emit({ type: 'route.failclosed', vm, reason: `Tor is down: ${this.torDownReason}` });
  }

  /** One sample of what changes by itself. `first`: only learn the current states. */
  poll(first = false): void {
    const now = this.clock();
    this.checkTorStuck(now);
    const seen = new Set<string>();
    for (const v of this.src.vms()) {
      seen.add(v.name);
      const prev = this.vmState.get(v.name);
      this.vmState.set(v.name, v.state);
      if (!first && prev !== undefined && prev !== v.state) {
        if (v.state === 'up') this.bus.emit({ type: 'vm.up', vm: v.name, detail: v.detail });
        else if (prev === 'up' || v.state === 'down') this.bus.emit({ type: 'vm.down', vm: v.name, state: v.state, detail: v.detail });
      }
      if (v.counters !== null) for (const [k, kind] of COUNTER_LIMITS) this.limit(`vm:${v.name}|${kind}`, v.counters[k], now, first, { limit: kind, vm: v.name });
    }
    for (const k of this.vmState.keys()) if (!seen.has(k)) this.vmState.delete(k);
    const links = new Set<string>();
    for (const l of this.src.links()) {
      const key = `${l.kind}:${l.name}`;
      links.add(key);
      const prev = this.linkState.get(key);
      this.linkState.set(key, l.state);
      if (first || prev === l.state) continue;
      if (l.state === 'established') this.bus.emit({ type: 'link.up', link: l.name, kind: l.kind });
      else if (prev === 'established') this.bus.emit({ type: 'link.down', link: l.name, kind: l.kind, state: l.state });
    }
    for (const [k, state] of this.linkState) {
      if (links.has(k)) continue;
      this.linkState.delete(k);
      // Removed while up: its session ends with it.
      const [kind, ...name] = k.split(':');
      if (state === 'established') this.bus.emit({ type: 'link.down', link: name.join(':'), kind: kind as 'link' | 'agent', state: 'removed' });
    }
    const caps = new Set<string>();
    for (const c of this.src.captures()) {
      const key = `capture:${c.id}`;
      caps.add(key);
      this.limit(key, c.dropped, now, first, { limit: 'capture-dropped', capture: c.name ?? c.id });
    }
    for (const k of this.limits.keys()) if (k.startsWith('capture:') && !caps.has(k)) this.limits.delete(k);
  }

  /** A counter's rise, said at most once per LIMIT_EVENT_MS (the rest is summed into the next). */
  private limit(key: string, total: number, now: number, first: boolean, what: { limit: LimitKind; vm?: string; capture?: string }): void {
    let l = this.limits.get(key);
    if (l === undefined) {
      // A counter seen for the first time: what it had before (a restored capture's) is history, unless it is new.
      l = { reported: first ? total : 0, at: -Infinity };
      this.limits.set(key, l);
    }
    if (total < l.reported) l.reported = total;
    if (total === l.reported || now - l.at < LIMIT_EVENT_MS) return;
    this.bus.emit({ type: 'limit.hit', ...what, count: total - l.reported, total });
    l.reported = total;
    l.at = now;
  }
}
