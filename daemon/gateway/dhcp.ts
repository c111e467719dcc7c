/**
 * A DHCPv4 server for one network (RFC 2131, options RFC 2132), authoritative: it is the only
 * server on an isolated segment, so it NAKs requests for addresses it cannot give and ACKs an
 * INIT-REBOOT for a free address it has no record of (rather than staying silent, §4.3.2).
 *
 * Clients are identified by their MAC (chaddr), which must equal the frame's Ethernet source:
 * a VM cannot act for another (the switch already pins each member's source MAC). Client
 * identifiers (option 61) are echoed (RFC 6842) but not used as the key.
 *
 * Pool: the subnet's host addresses minus the gateway, the network and broadcast addresses
 * (for prefixes up to /30), statically reserved addresses (for anyone but their owner) and
 * addresses quarantined after a DECLINE; with a range (`mvnet net create --dhcp-range`), only
 * the addresses inside it, so routers sharing a segment over a link can hand out disjoint
 * ones. Reservations may lie outside the range: static addresses are the administrator's. Expired and released bindings are remembered so that a
 * returning client gets its old address back; they are reused (oldest first) only when no never
 * used address is left.
 *
 * Pure and clock-driven: times are `now` in ms (a wall clock such as Date.now() if leases are
 * persisted, because snapshots hold absolute expiry times); `expire(now)` and `nextDeadline()`
 * drive expiry, which also happens lazily on every `handle`.
 */
import {
  BOOTREQUEST,
  BOOTREPLY,
  DHCPACK,
  DHCPDECLINE,
  DHCPDISCOVER,
  DHCPINFORM,
  DHCPNAK,
  DHCPOFFER,
  DHCPRELEASE,
  DHCPREQUEST,
  DHCPOPT_DOMAIN_NAME,
  DHCPOPT_MTU,
  DHCP_CLIENT_PORT,
  DHCP_SERVER_PORT,
  encodeDhcpv4,
  parseDhcpv4,
  type Dhcpv4Message,
  type Dhcpv4Options,
} from '../wire/dhcpv4.js';
import type { EthernetHeader } from '../wire/ethernet.js';
import type { Ipv4Packet } from '../wire/ipv4.js';
import { formatIpv4, parseIpv4Text } from '../wire/ip-text.js';
import { isUnicastMac, MAC_BROADCAST, macToString, parseMacString, type Mac } from '../wire/mac.js';
import type { UdpDatagram } from '../wire/udp.js';
import { udpFrame } from './frames.js';
import { ip4 } from '../endpoint/addr.js';
import { inSubnet, IPV4_BROADCAST, type GatewayNet } from './types.js';

export type DhcpLeaseState = 'offered' | 'bound' | 'expired';

export interface DhcpLease {
  readonly mac: Mac;
  readonly ip: number;
  /** 'offered': held for the client after an OFFER; 'expired': remembered, not in use. */
  readonly state: DhcpLeaseState;
  /** Absolute time (ms, the caller's clock) when the binding or the offer ends. */
  readonly expiresAt: number;
  /** Option 12 as the client last sent it, for display. */
  readonly hostname?: string | undefined;
}

export type DhcpLeaseEventType = 'bound' | 'renewed' | 'released' | 'expired' | 'declined';

export interface DhcpLeaseEvent {
  readonly type: DhcpLeaseEventType;
  readonly lease: DhcpLease;
}

/** First and last address of a DHCP range, both included. */
export interface DhcpRange {
  readonly first: number;
  readonly last: number;
}

/** "10.1.0.100-10.1.0.149" (dotted quads, first <= last), or undefined when it is not that. */
export function parseDhcpRange(text: string): DhcpRange | undefined {
  const parts = text.split('-');
  if (parts.length !== 2) return undefined;
  const first = parseIpv4Text(parts[0]!);
  const last = parseIpv4Text(parts[1]!);
  if (!first.ok || !last.ok || first.value > last.value) return undefined;
  return { first: first.value, last: last.value };
}

/** The canonical text of a range, as `parseDhcpRange` reads it. */
export function dhcpRangeText(r: DhcpRange): string {
  return `${formatIpv4(r.first)}-${formatIpv4(r.last)}`;
}

export interface DhcpServerOptions {
  /**
   * Dynamic addresses only from here (clipped to the subnet's host addresses); default the
   * whole subnet. Reservations are not bound by it.
   */
  readonly range?: DhcpRange | undefined;
  /** Static leases: MAC -> IPv4 (from `vm attach --ip`). Replace later with `setReservations`. */
  readonly reservations?: ReadonlyMap<Mac, number> | undefined;
  /**
   * The router option (3) for a client: an address (e.g. another VM's, to route via it), null
   * for no router option, or undefined for the gateway. Called for every OFFER/ACK.
   */
  readonly routerFor?: ((mac: Mac) => number | null | undefined) | undefined;
  /** How long an offered address stays held for the client; default 60 s. */
  readonly offerHoldMs?: number | undefined;
  /** How long a declined address stays out of the pool; default 10 minutes. */
  readonly declineHoldMs?: number | undefined;
  /** Called synchronously on every binding change (to persist, or to update DNS names). */
  readonly onLease?: ((e: DhcpLeaseEvent) => void) | undefined;
}

export interface DhcpStats {
  discovers: number;
  offers: number;
  requests: number;
  acks: number;
  naks: number;
  releases: number;
  declines: number;
  informs: number;
  /** chaddr differs from the Ethernet source MAC: refused (anti-spoofing). */
  refusedChaddr: number;
  /** A DISCOVER that got no offer because no address was free. */
  poolExhausted: number;
  /** Unparseable DHCP payloads. */
  malformed: number;
  /** Well-formed but not for us: other server chosen, relayed, BOOTP, bad addressing... */
  ignored: number;
}

export interface DhcpSnapshotLease {
  readonly mac: string;
  readonly ip: string;
  readonly state: 'bound' | 'expired';
  readonly expiresAt: number;
  readonly hostname?: string;
}

/** Plain JSON for the state file. */
export interface DhcpSnapshot {
  readonly version: 1;
  readonly leases: readonly DhcpSnapshotLease[];
  readonly declined: readonly { readonly ip: string; readonly until: number }[];
}

interface LeaseRecord {
  mac: Mac;
  ip: number;
  state: DhcpLeaseState;
  expiresAt: number;
  hostname?: string | undefined;
}

export const DEFAULT_OFFER_HOLD_MS = 60_000;
export const DEFAULT_DECLINE_HOLD_MS = 600_000;

function view(r: LeaseRecord): DhcpLease {
  return r.hostname === undefined
    ? { mac: r.mac, ip: r.ip, state: r.state, expiresAt: r.expiresAt }
    : { mac: r.mac, ip: r.ip, state: r.state, expiresAt: r.expiresAt, hostname: r.hostname };
}

function cleanHostname(h: string | undefined): string | undefined {
  if (h === undefined) return undefined;
  const s = h.replace(/[^A-Za-z0-9.-]/g, '').slice(0, 63);
  return s.length > 0 ? s : undefined;
}

export class DhcpServer {
  readonly stats: DhcpStats = {
    discovers: 0,
    offers: 0,
    requests: 0,
    acks: 0,
    naks: 0,
    releases: 0,
    declines: 0,
    informs: 0,
    refusedChaddr: 0,
    poolExhausted: 0,
    malformed: 0,
    ignored: 0,
  };
  private readonly byMac = new Map<Mac, LeaseRecord>();
  private readonly byIp = new Map<number, LeaseRecord>();
  private readonly declined = new Map<number, number>();
  private reservations = new Map<Mac, number>();
  private reservedIps = new Map<number, Mac>();
  private rejected: Mac[] = [];
  /** A lower bound of the next expiry, so that `expire` is cheap when nothing is due. */
  private deadline = Infinity;
  private readonly offerHoldMs: number;
  private readonly declineHoldMs: number;
  private readonly routerFor: (mac: Mac) => number | null | undefined;
  private readonly onLease: (e: DhcpLeaseEvent) => void;
  /** First and last assignable host address. */
  private readonly first: number;
  private readonly last: number;
  /** First and last address handed out dynamically (the range, or first..last). */
  private readonly poolFirst: number;
  private readonly poolLast: number;

  constructor(
    private readonly net: GatewayNet,
    opts: DhcpServerOptions = {},
  ) {
    this.offerHoldMs = opts.offerHoldMs ?? DEFAULT_OFFER_HOLD_MS;
    this.declineHoldMs = opts.declineHoldMs ?? DEFAULT_DECLINE_HOLD_MS;
    this.routerFor = opts.routerFor ?? (() => undefined);
    this.onLease = opts.onLease ?? (() => {});
    const small = net.subnet.prefix > 30;
    this.first = small ? net.subnet.network : net.subnet.network + 1;
    this.last = small ? net.broadcast : net.broadcast - 1;
    this.poolFirst = Math.max(this.first, (opts.range?.first ?? this.first) >>> 0);
    this.poolLast = Math.min(this.last, (opts.range?.last ?? this.last) >>> 0);
    if (opts.reservations) this.setReservations(opts.reservations);
  }

  // Administration.

  /**
   * Replaces the static reservations. Entries whose address is not an assignable host address
   * of the subnet, or is already reserved for another MAC, are rejected; their MACs are
   * returned. A client holding a dynamic lease on a newly reserved address keeps it until it
   * ends or the client renews (it then gets a NAK); the owner gets no offer until then.
   */
  setReservations(reservations: ReadonlyMap<Mac, number>): Mac[] {
    const byMac = new Map<Mac, number>();
    const byIp = new Map<number, Mac>();
    const rejected: Mac[] = [];
    for (const [mac, ip] of reservations) {
      if (!isUnicastMac(mac) || !this.assignable(ip) || byIp.has(ip >>> 0)) {
        rejected.push(mac);
        continue;
      }
      byMac.set(mac, ip >>> 0);
      byIp.set(ip >>> 0, mac);
    }
    this.reservations = byMac;
    this.reservedIps = byIp;
    this.rejected = rejected;
    return rejected;
  }

  /** MACs of reservations refused by the last `setReservations`. */
  get rejectedReservations(): readonly Mac[] {
    return this.rejected;
  }

  /** The client's current binding (state 'bound', not expired at `now` when given). */
  leaseFor(mac: Mac, now?: number): DhcpLease | undefined {
    const r = this.byMac.get(mac);
    if (!r || r.state !== 'bound' || (now !== undefined && r.expiresAt <= now)) return undefined;
    return view(r);
  }

  /** All records, including offers and remembered expired bindings. */
  leases(): DhcpLease[] {
    return [...this.byMac.values()].map(view);
  }

  /** Drops everything known about a MAC (a VM removed from the network). */
  forget(mac: Mac): boolean {
    const r = this.byMac.get(mac);
    if (!r) return false;
    this.drop(r);
    return true;
  }

  /** Addresses in quarantine after a DECLINE, with the time they return to the pool. */
  quarantined(): { ip: number; until: number }[] {
    return [...this.declined].map(([ip, until]) => ({ ip, until }));
  }

  // Time.

  /** Ends bindings, offers and quarantines due at `now`; returns the bindings that expired. */
  expire(now: number): DhcpLease[] {
    const out: DhcpLease[] = [];
    if (now < this.deadline) return out;
    let next = Infinity;
    for (const r of this.byMac.values()) {
      if (r.state === 'expired') continue;
      if (r.expiresAt <= now) {
        const wasBound = r.state === 'bound';
        r.state = 'expired';
        if (wasBound) {
          const l = view(r);
          out.push(l);
          this.onLease({ type: 'expired', lease: l });
        }
      } else {
        next = Math.min(next, r.expiresAt);
      }
    }
    for (const [ip, until] of this.declined) {
      if (until <= now) this.declined.delete(ip);
      else next = Math.min(next, until);
    }
    this.deadline = next;
    return out;
  }

  /** When `expire` next has work (a binding, offer or quarantine ends), or undefined. */
  nextDeadline(): number | undefined {
    let next = Infinity;
    for (const r of this.byMac.values()) if (r.state !== 'expired') next = Math.min(next, r.expiresAt);
    for (const until of this.declined.values()) next = Math.min(next, until);
    this.deadline = next;
    return next === Infinity ? undefined : next;
  }

  // Persistence.

  /** Bindings (current and remembered) and quarantines, as plain JSON. Offers are not kept. */
  snapshot(): DhcpSnapshot {
    const leases: DhcpSnapshotLease[] = [];
    for (const r of this.byMac.values()) {
      if (r.state === 'offered') continue;
      const base = { mac: macToString(r.mac), ip: formatIpv4(r.ip), state: r.state, expiresAt: r.expiresAt };
      leases.push(r.hostname === undefined ? base : { ...base, hostname: r.hostname });
    }
    const declined = [...this.declined].map(([ip, until]) => ({ ip: formatIpv4(ip), until }));
    return { version: 1, leases, declined };
  }

  /**
   * Replaces the state with a snapshot. Entries that do not parse, are outside the subnet or
   * collide with an earlier entry are skipped; returns how many leases were restored. Bindings
   * past their expiry at `now` come back as remembered ('expired') ones.
   */
  restore(snap: unknown, now: number): number {
    this.byMac.clear();
    this.byIp.clear();
    this.declined.clear();
    this.deadline = Infinity;
    if (typeof snap !== 'object' || snap === null) return 0;
    const s = snap as { version?: unknown; leases?: unknown; declined?: unknown };
    if (s.version !== 1) return 0;
    let n = 0;
    let next = Infinity;
    for (const e of Array.isArray(s.leases) ? (s.leases as unknown[]) : []) {
      if (typeof e !== 'object' || e === null) continue;
      const l = e as Record<string, unknown>;
      if (typeof l['mac'] !== 'string' || typeof l['ip'] !== 'string' || typeof l['expiresAt'] !== 'number' || !Number.isFinite(l['expiresAt'])) continue;
      const mac = parseMacString(l['mac']);
      const ip = parseIpv4Text(l['ip']);
      if (!mac.ok || !ip.ok || !isUnicastMac(mac.value) || !this.assignable(ip.value)) continue;
      if (this.byMac.has(mac.value) || this.byIp.has(ip.value)) continue;
      const expiresAt = l['expiresAt'];
      const state: DhcpLeaseState = l['state'] === 'bound' && expiresAt > now ? 'bound' : 'expired';
      const hostname = typeof l['hostname'] === 'string' ? cleanHostname(l['hostname']) : undefined;
      const r: LeaseRecord = { mac: mac.value, ip: ip.value, state, expiresAt, hostname };
      this.byMac.set(r.mac, r);
      this.byIp.set(r.ip, r);
      if (state === 'bound') next = Math.min(next, expiresAt);
      n++;
    }
    for (const e of Array.isArray(s.declined) ? (s.declined as unknown[]) : []) {
      if (typeof e !== 'object' || e === null) continue;
      const d = e as Record<string, unknown>;
      if (typeof d['ip'] !== 'string' || typeof d['until'] !== 'number' || d['until'] <= now) continue;
      const ip = parseIpv4Text(d['ip']);
      if (!ip.ok) continue;
      this.declined.set(ip.value, d['until']);
      next = Math.min(next, d['until']);
    }
    this.deadline = next;
    return n;
  }

  // The protocol.

  /**
   * A UDP datagram to port 67 in an IPv4 packet from a member. Returns the reply frame (OFFER,
   * ACK or NAK), or null when the message gets no answer.
   */
  handle(eth: EthernetHeader, ip: Ipv4Packet, udp: UdpDatagram, now: number): Buffer | null {
    this.expire(now);
    const net = this.net;
    if (eth.vlan !== undefined || udp.dstPort !== DHCP_SERVER_PORT) return this.ignore();
    if (ip.dst !== IPV4_BROADCAST && ip.dst !== net.gatewayIp && ip.dst !== net.broadcast) return this.ignore();
    const parsed = parseDhcpv4(udp.payload);
    if (!parsed.ok) {
      this.stats.malformed++;
      return null;
    }
    const m = parsed.value;
    if (m.op !== BOOTREQUEST || m.htype !== 1 || m.hlen !== 6 || m.giaddr !== 0) return this.ignore();
    if (m.clientMac !== eth.src) {
      this.stats.refusedChaddr++;
      return null;
    }
    if (!isUnicastMac(m.clientMac)) return this.ignore();
    switch (m.options.messageType) {
      case DHCPDISCOVER:
        return this.discover(m, now);
      case DHCPREQUEST:
        return this.request(m, now);
      case DHCPDECLINE:
        this.decline(m, now);
        return null;
      case DHCPRELEASE:
        this.release(m, now);
        return null;
      case DHCPINFORM:
        return this.inform(m, ip);
      default:
        return this.ignore();
    }
  }

  private discover(m: Dhcpv4Message, now: number): Buffer | null {
    this.stats.discovers++;
    const ip = this.choose(m.clientMac, m.options.requestedIp, now);
    if (ip === undefined) {
      this.stats.poolExhausted++;
      return null;
    }
    const r = this.claim(m.clientMac, ip);
    if (!(r.state === 'bound' && r.expiresAt > now)) {
      r.state = 'offered';
      r.expiresAt = now + this.offerHoldMs;
      this.deadline = Math.min(this.deadline, r.expiresAt);
    }
    const h = cleanHostname(m.options.hostname);
    if (h !== undefined) r.hostname = h;
    this.stats.offers++;
    return this.reply(m, DHCPOFFER, ip, true);
  }

  private request(m: Dhcpv4Message, now: number): Buffer | null {
    this.stats.requests++;
    const o = m.options;
    const gw = this.net.gatewayIp;
    if (o.serverId !== undefined) {
      // SELECTING.
      if (o.serverId !== gw) {
        // The client took another server's offer: release what we held for it.
        const r = this.byMac.get(m.clientMac);
        if (r && r.state === 'offered') r.state = 'expired';
        return this.ignore();
      }
      const want = o.requestedIp ?? m.ciaddr;
      if (want === 0) return this.ignore();
      return this.commit(m, want, now);
    }
    if (o.requestedIp !== undefined && m.ciaddr === 0) return this.commit(m, o.requestedIp, now); // INIT-REBOOT
    if (m.ciaddr !== 0) return this.commit(m, m.ciaddr, now); // RENEWING (unicast) or REBINDING (broadcast)
    return this.ignore();
  }

  /** ACK `ip` for the client if it may have it, else NAK. */
  private commit(m: Dhcpv4Message, ip: number, now: number): Buffer {
    const mac = m.clientMac;
    const current = this.byMac.get(mac);
    const holdsOther = current !== undefined && current.state !== 'expired' && current.expiresAt > now && current.ip !== ip;
    if (holdsOther || !this.available(ip, mac, now)) {
      this.stats.naks++;
      return this.reply(m, DHCPNAK, 0, false);
    }
    const wasBound = current !== undefined && current.ip === ip && current.state === 'bound' && current.expiresAt > now;
    const r = this.claim(mac, ip);
    r.state = 'bound';
    r.expiresAt = now + this.net.leaseTime * 1000;
    const h = cleanHostname(m.options.hostname);
    if (h !== undefined) r.hostname = h;
    this.deadline = Math.min(this.deadline, r.expiresAt);
    this.stats.acks++;
    this.onLease({ type: wasBound ? 'renewed' : 'bound', lease: view(r) });
    return this.reply(m, DHCPACK, ip, true);
  }

  private decline(m: Dhcpv4Message, now: number): void {
    this.stats.declines++;
    const o = m.options;
    if (o.serverId !== undefined && o.serverId !== this.net.gatewayIp) return;
    const addr = o.requestedIp ?? m.ciaddr;
    const r = this.byMac.get(m.clientMac);
    // Only the client's own address: a VM cannot quarantine another's.
    if (!r || r.ip !== addr || addr === 0) return;
    const lease = view(r);
    this.drop(r);
    const until = now + this.declineHoldMs;
    this.declined.set(addr, until);
    this.deadline = Math.min(this.deadline, until);
    this.onLease({ type: 'declined', lease });
  }

  private release(m: Dhcpv4Message, now: number): void {
    this.stats.releases++;
    const o = m.options;
    if (o.serverId !== undefined && o.serverId !== this.net.gatewayIp) return;
    const r = this.byMac.get(m.clientMac);
    if (!r || r.ip !== m.ciaddr || r.state !== 'bound') return;
    r.state = 'expired';
    r.expiresAt = now;
    this.onLease({ type: 'released', lease: view(r) });
  }

  private inform(m: Dhcpv4Message, ip: Ipv4Packet): Buffer | null {
    this.stats.informs++;
    const client = m.ciaddr !== 0 ? m.ciaddr : ip.src;
    if (client === 0 || !inSubnet(client, this.net.subnet)) return this.ignore();
    this.stats.acks++;
    return this.reply(m, DHCPACK, 0, false, client);
  }

  // Addresses.

  /** A host address of the subnet that may be handed out at all. */
  private assignable(ip: number): boolean {
    const a = ip >>> 0;
    return Number.isInteger(ip) && inSubnet(a, this.net.subnet) && a >= this.first && a <= this.last && a !== this.net.gatewayIp;
  }

  /** True when `mac` may hold `ip` now. */
  private available(ip: number, mac: Mac, now: number): boolean {
    if (!this.assignable(ip)) return false;
    const reserved = this.reservations.get(mac);
    if (reserved !== undefined) {
      if (reserved !== ip) return false;
    } else if (ip >>> 0 < this.poolFirst || ip >>> 0 > this.poolLast) return false;
    const owner = this.reservedIps.get(ip);
    if (owner !== undefined && owner !== mac) return false;
    const until = this.declined.get(ip);
    if (until !== undefined && until > now) return false;
    const r = this.byIp.get(ip);
    return r === undefined || r.mac === mac || r.state === 'expired' || r.expiresAt <= now;
  }

  /** The address to offer, or undefined when the pool has nothing for this client. */
  private choose(mac: Mac, requested: number | undefined, now: number): number | undefined {
    const reserved = this.reservations.get(mac);
    if (reserved !== undefined) return this.available(reserved, mac, now) ? reserved : undefined;
    const current = this.byMac.get(mac);
    if (current && this.available(current.ip, mac, now)) return current.ip;
    if (requested !== undefined && requested !== 0 && this.available(requested, mac, now)) return requested;
    // A never used address. Every address skipped is the gateway, reserved, quarantined or in
    // the lease table, so the scan ends after at most that many steps past the first free one.
    for (let a = this.poolFirst; a <= this.poolLast; a++) {
      if (a === this.net.gatewayIp || this.byIp.has(a) || this.reservedIps.has(a) || this.declined.has(a)) continue;
      return a;
    }
    // Reuse the longest-expired remembered binding.
    let best: LeaseRecord | undefined;
    for (const r of this.byIp.values()) {
      if (r.mac === mac || !this.available(r.ip, mac, now)) continue;
      if (!best || r.expiresAt < best.expiresAt) best = r;
    }
    return best?.ip;
  }

  /** The client's record, moved to `ip` (evicting another client's remembered binding there). */
  private claim(mac: Mac, ip: number): LeaseRecord {
    const there = this.byIp.get(ip);
    if (there && there.mac !== mac) this.drop(there);
    let r = this.byMac.get(mac);
    if (r && r.ip !== ip) {
      this.byIp.delete(r.ip);
      r.ip = ip;
    }
    if (!r) {
      r = { mac, ip, state: 'offered', expiresAt: 0 };
      this.byMac.set(mac, r);
    }
    this.byIp.set(ip, r);
    return r;
  }

  private drop(r: LeaseRecord): void {
    this.byMac.delete(r.mac);
    if (this.byIp.get(r.ip) === r) this.byIp.delete(r.ip);
  }

  private ignore(): null {
    this.stats.ignored++;
    return null;
  }

  // Replies.

  /**
   * Builds the reply frame. `lease`: include lease time, T1 and T2. `informDst`: the unicast
   * destination of an ACK to DHCPINFORM.
   */
  private reply(m: Dhcpv4Message, type: number, yiaddr: number, lease: boolean, informDst?: number): Buffer {
    const net = this.net;
    let options: Dhcpv4Options;
    if (type === DHCPNAK) {
      options = { messageType: DHCPNAK, serverId: net.gatewayIp, clientId: m.options.clientId };
    } else {
      const prl = m.options.parameterRequestList;
      const wants = (code: number): boolean => prl === undefined || prl.includes(code);
      const router = this.routerFor(m.clientMac);
      const t = net.leaseTime;
      options = {
        messageType: type,
        serverId: net.gatewayIp,
        clientId: m.options.clientId,
        leaseTime: lease ? t : undefined,
        renewalTime: lease ? Math.floor(t / 2) : undefined,
        rebindingTime: lease ? Math.floor((t * 7) / 8) : undefined,
        subnetMask: net.mask,
        routers: router === null ? undefined : [router ?? net.gatewayIp],
        dnsServers: [net.gatewayIp],
        domainName: wants(DHCPOPT_DOMAIN_NAME) ? net.domain : undefined,
        interfaceMtu: wants(DHCPOPT_MTU) ? net.mtu : undefined,
      };
    }
    const payload = encodeDhcpv4({
      op: BOOTREPLY,
      xid: m.xid,
      clientMac: m.clientMac,
      chaddr: m.chaddr,
      broadcast: m.broadcast,
      ciaddr: type === DHCPACK ? m.ciaddr : 0,
      yiaddr,
      options,
    });
    // RFC 2131 §4.1 (giaddr is 0): NAKs are broadcast; with ciaddr set, unicast to ciaddr;
    // with the broadcast bit, broadcast; otherwise unicast to yiaddr at chaddr.
    let dstIp: number;
    let dstMac: Mac;
    if (type === DHCPNAK) {
      dstIp = IPV4_BROADCAST;
      dstMac = MAC_BROADCAST;
    } else if (informDst !== undefined) {
      dstIp = informDst;
      dstMac = m.clientMac;
    } else if (m.ciaddr !== 0) {
      dstIp = m.ciaddr;
      dstMac = m.clientMac;
    } else if (m.broadcast) {
      dstIp = IPV4_BROADCAST;
      dstMac = MAC_BROADCAST;
    } else {
      dstIp = yiaddr;
      dstMac = m.clientMac;
    }
    return udpFrame({ gwMac: net.gatewayMac, vmMac: dstMac }, ip4(net.gatewayIp), DHCP_SERVER_PORT, ip4(dstIp), DHCP_CLIENT_PORT, payload);
  }
}
