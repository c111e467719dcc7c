/**
 * The daemon's events, as `events.follow` streams them (one JSON object per line) and
 * `mvnet events --json` prints them. A discriminated union on `type`; every event has `time`
 * (ISO 8601) and `seq` (increasing from 1 per daemon run, so a follower sees gaps).
 *
 * Types are dotted: a follower's filter is a prefix (`vm.` takes vm.attached … vm.down).
 */
import type { RouteView } from '../routes/route.js';

/** What bounded counters a `limit.hit` is about. */
export type LimitKind =
  /** The VM's TCP connection table was full: new connections got RST (limits.tcpPerVm). */
  | 'tcp-flows'
  /** The VM's UDP flow table was full: new flows were dropped (limits.udpPerVm). */
  | 'udp-flows'
  /** TCP connections refused by the VM's route. */
  | 'tcp-refused'
  /** UDP flows dropped by the VM's route. */
  | 'udp-dropped'
  /** A capture or tee lost packets (its queue or a port's tee ring was full). */
  | 'capture-dropped';

export type EventBody =
  | { type: 'vm.attached'; vm: string; net: string; port: string; kind: string }
  | { type: 'vm.detached'; vm: string; net: string }
  /** The VM's port became usable (a TAP opened, QEMU connected to a socket). */
  | { type: 'vm.up'; vm: string; detail: string }
  /** The VM's port stopped being usable: `state` waiting (QEMU went away) or down (broken: the detail says why). */
  | { type: 'vm.down'; vm: string; state: 'waiting' | 'down' | 'degraded'; detail: string }
  | { type: 'route.changed'; vm: string; route: RouteView; routeText: string }
  /** A VM whose route uses Tor has no Tor: its Tor traffic is refused (fails closed), never sent elsewhere. */
  | { type: 'route.failclosed'; vm: string; reason: string }
  /** Tor came back for a VM whose route had failed closed. */
  | { type: 'route.recovered'; vm: string }
  | { type: 'tor.up' }
  | { type: 'tor.down'; reason: string }
  /** A warning Tor itself gave (why it cannot bootstrap: refused connections, clock skew, a bad bridge…). */
  | { type: 'tor.warning'; message: string }
  /** A link's (or an agent's) session was established. */
  | { type: 'link.up'; link: string; kind: 'link' | 'agent' }
  /** It is no longer: `state` is handshaking, waiting or failed, or removed (the link was removed while up). */
  | { type: 'link.down'; link: string; kind: 'link' | 'agent'; state: string }
  /**
   * A bounded counter went up. At most one per VM (or capture) and limit every 10 s: `count` is
   * how much it went up since the last event about it.
   */
  | { type: 'limit.hit'; limit: LimitKind; vm?: string; capture?: string; count: number; total: number }
  /** The last line a follower gets when it read too slowly: the daemon stopped queueing for it. */
  | { type: 'events.overflow'; detail: string };

export type MvnetEvent = EventBody & { time: string; seq: number };

export type EventType = EventBody['type'];

/** Every type, for checking filters and for the README. */
export const EVENT_TYPES: readonly EventType[] = [
  'vm.attached',
  'vm.detached',
  'vm.up',
  'vm.down',
  'route.changed',
  'route.failclosed',
  'route.recovered',
  'tor.up',
  'tor.down',
  'tor.warning',
  'link.up',
  'link.down',
  'limit.hit',
  'events.overflow',
];
