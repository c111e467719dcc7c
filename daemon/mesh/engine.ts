/**
 * The link engine: one static key (a daemon's, or an agent's) driving the protocol's Device over
 * carriers. It owns the I/O the protocol module leaves out: which carrier a packet goes out on,
 * the timers, batching of received frames, and the load signal for the cookie defence. A peer's
 * decrypted frames go to its sink (a switch trunk, a VM port, an agent's local device).
 *
 * A source, as the Device sees it, is `<carrier id> <carrier-local address>`: the device records
 * the latest authenticated one as `peer.endpoint`, so replies and roaming need nothing more.
 */
import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { Device, type Peer, type Received, type TickAction, type DropReason } from '../links/device.js';
import { keyToBase64 } from '../links/keys.js';
import { REKEY_TIMEOUT_MS } from '../links/timers.js';
import { nativeTransportAead } from '../../plugins/native/index.js';
import type { Carrier } from '../carriers/types.js';
import type { Endpoint } from '../carriers/endpoint.js';

/** Handshake messages (initiations and responses) per second above which the device asks for cookies (mac2) before any DH. */
export const LOAD_THRESHOLD_PER_S = 64;
/** How often timers are looked at; the protocol's timers are seconds long. */
const TICK_MS = 100;
/** Frames handed to a sink at once, at most. */
const RX_BATCH = 64;

export interface PeerSink {
  /** Decrypted frames of one peer, in order; the buffers are the sink's to keep. */
  frames(batch: readonly Buffer[]): void;
}

export interface PeerConfig {
  /** For logs and status: "link lan-b", "agent vm9". */
  name: string;
  publicKey: Buffer;
  presharedKey?: Buffer;
  /** Where to dial; absent: wait for the peer to reach us. */
  endpoint?: { carrier: Carrier; to: string; text: Endpoint };
  /**
   * Where the peer was last seen (a roamed address kept across restarts), on the endpoint's
   * carrier: tried first, but handshakes go to the configured endpoint too until one completes,
   * so a stale or planted address never cuts the link off.
   */
  lastSeen?: string;
  persistentKeepaliveMs?: number;
}

export type PeerState = 'established' | 'handshaking' | 'waiting';

export interface EngineOptions {
  privateKey: KeyObject;
  log: Logger;
  clock?: () => number;
  loadThreshold?: number;
}

export class LinkPeer {
  private rx: Buffer[] = [];
  private rxScheduled = false;
  /** Messages no carrier could take (no connection, no endpoint): counted here, per peer. */
  unsent = 0;
  /** The last initiation sent: re-sent when a stream carrier (re)connects while it waits for a response. */
  lastInit: Buffer | null = null;

  constructor(
    private readonly engine: LinkEngine,
    readonly peer: Peer,
    readonly cfg: PeerConfig,
    private sink: PeerSink,
  ) {}

  setSink(s: PeerSink): void {
    this.sink = s;
  }

  /** Seals and sends frames (views valid only during the call: sealing copies them). */
  send(frames: readonly Buffer[]): void {
    this.engine.sendFrames(this, frames);
  }

  /** @internal engine: one decrypted frame. */
  received(payload: Buffer): void {
    this.rx.push(payload);
    if (this.rx.length >= RX_BATCH) this.flushRx();
    else if (!this.rxScheduled) {
      this.rxScheduled = true;
      // Every datagram of one poll round is read before `check`: they reach the switch as one batch.
      setImmediate(() => this.flushRx());
    }
  }

  private flushRx(): void {
    this.rxScheduled = false;
    if (this.rx.length === 0) return;
    const batch = this.rx;
    this.rx = [];
    try {
      this.sink.frames(batch);
    } catch (e) {
      this.engine.log.error({ peer: this.cfg.name, err: (e as Error).message }, 'link sink threw');
    }
  }

  state(now = this.engine.now()): PeerState {
    if (this.peer.established(now)) return 'established';
    if (this.cfg.endpoint === undefined && this.peer.endpoint === null) return 'waiting';
    return 'handshaking';
  }

  /** The endpoint packets go to now: the latest authenticated source, else the configured one. */
  currentEndpoint(): string | null {
    return this.peer.endpoint ?? (this.cfg.endpoint !== undefined ? `${this.cfg.endpoint.carrier.id} ${this.cfg.endpoint.to}` : null);
  }

  remove(): void {
    this.engine.removePeer(this);
  }
}

export class LinkEngine {
  readonly device: Device;
  readonly log: Logger;
  readonly now: () => number;
  private readonly carriers = new Map<string, Carrier>();
  private readonly peers = new Map<Peer, LinkPeer>();
  private readonly timer: NodeJS.Timeout;
  private readonly loadThreshold: number;
  private windowStart = 0;
  private windowInitiations = 0;
  private underLoadUntil = 0;
  /** Drops the device counted with no peer to blame, kept by reason (unknown peers, malformed). */
  private readonly logged = new Map<DropReason, number>();

  constructor(o: EngineOptions) {
    this.log = o.log;
    this.now = o.clock ?? (() => performance.now());
    this.loadThreshold = o.loadThreshold ?? LOAD_THRESHOLD_PER_S;
    this.device = new Device({ privateKey: o.privateKey, rateKey: (source) => this.rateKey(source), aead: nativeTransportAead() ?? undefined });
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  /**
   * What the handshake rate limit counts by (under load): what the carrier says (a UDP or TCP
   * sender's IPv4 address or IPv6 /64, as WireGuard's, whatever its port or connection, so one
   * host cannot multiply its allowance by ports or connections), else the source itself.
   */
  private rateKey(source: string): string {
    const s = this.resolveSource(source);
    const k = s?.carrier.rateKey?.(s.to);
    return k !== undefined ? `${s!.carrier.id} ${k}` : source;
  }

  /** A source string (`carrier address`, as the device records it) as its carrier and address; null when that carrier is gone. */
  resolveSource(source: string): { carrier: Carrier; to: string } | null {
    const sp = source.indexOf(' ');
    const carrier = this.carriers.get(source.slice(0, sp));
    return carrier !== undefined ? { carrier, to: source.slice(sp + 1) } : null;
  }

  get publicKey(): string {
    return keyToBase64(this.device.publicKey);
  }

  addCarrier(c: Carrier): void {
    if (this.carriers.has(c.id)) throw new Error(`carrier ${c.id} exists`);
    this.carriers.set(c.id, c);
    c.onMessage((msg, from) => this.onMessage(c, msg, from));
    c.onConnected?.(() => this.connected(c));
  }

  /**
   * A stream to a peer (re)connected: whatever went before went nowhere, and the far end may have
   * restarted without our session. Handshake now rather than after the retry timers.
   */
  private connected(c: Carrier): void {
    const now = this.now();
    for (const lp of this.peers.values()) {
      if (lp.cfg.endpoint?.carrier !== c) continue;
      const init = lp.peer.handshakeInit(now) ?? (lp.peer.established(now) ? null : lp.lastInit);
      if (init !== null) this.toPeer(lp, [init]);
      else {
        // An initiation went out less than REKEY_TIMEOUT ago (the protocol's rate limit): handshake once that has passed.
        const t = setTimeout(() => {
          if (this.peers.get(lp.peer) !== lp) return;
          const i = lp.peer.handshakeInit(this.now());
          if (i !== null) this.toPeer(lp, [i]);
        }, REKEY_TIMEOUT_MS + 50);
        t.unref();
      }
    }
  }

  async removeCarrier(c: Carrier): Promise<void> {
    if (this.carriers.get(c.id) !== c) return;
    this.carriers.delete(c.id);
    await c.close();
  }

  allCarriers(): Carrier[] {
    return [...this.carriers.values()];
  }

  addPeer(cfg: PeerConfig, sink: PeerSink): LinkPeer {
    const peer = this.device.addPeer({
      publicKey: cfg.publicKey,
      ...(cfg.presharedKey !== undefined ? { presharedKey: cfg.presharedKey } : {}),
      ...(cfg.persistentKeepaliveMs !== undefined ? { persistentKeepaliveMs: cfg.persistentKeepaliveMs } : {}),
    });
    const lp = new LinkPeer(this, peer, cfg, sink);
    this.peers.set(peer, lp);
    if (cfg.lastSeen !== undefined && cfg.endpoint !== undefined) peer.endpoint = `${cfg.endpoint.carrier.id} ${cfg.lastSeen}`;
    // A dialling side starts at once: the link is up before the first frame, and a restarted
    // side re-handshakes by itself.
    if (cfg.endpoint !== undefined) {
      const init = peer.handshakeInit(this.now());
      if (init !== null) this.toPeer(lp, [init]);
    }
    return lp;
  }

  /** @internal LinkPeer.remove */
  removePeer(lp: LinkPeer): void {
    if (this.peers.get(lp.peer) !== lp) return;
    this.peers.delete(lp.peer);
    this.device.removePeer(lp.peer);
  }

  peerByKey(publicKey: Buffer): LinkPeer | undefined {
    const p = this.device.peer(publicKey);
    return p !== null ? this.peers.get(p) : undefined;
  }

  /** @internal LinkPeer.send */
  sendFrames(lp: LinkPeer, frames: readonly Buffer[]): void {
    const now = this.now();
    const out: Buffer[] = [];
    for (let i = 0; i < frames.length; i++) {
      const r = lp.peer.send(frames[i]!, now);
      for (const p of r.packets) out.push(p);
    }
    if (out.length > 0) this.toPeer(lp, out);
  }

  private toPeer(lp: LinkPeer, packets: Buffer[]): void {
    const first = packets[0]!;
    if (first.length === 148 && first[0] === 1) lp.lastInit = first;
    const cfg = lp.cfg.endpoint;
    const configured = cfg !== undefined ? `${cfg.carrier.id} ${cfg.to}` : null;
    let ep = lp.peer.endpoint;
    // A stream connection the peer last used may be gone: fall back to where we were told it is.
    if (ep === null || (configured !== null && !this.reachable(ep))) ep = configured;
    if (ep === null || !this.sendTo(ep, packets)) lp.unsent += packets.length;
    // An initiation while no session is up also goes where we were told the peer is: the address
    // it was last seen at may be stale, or set by a replayed initiation (after our restart).
    if (configured !== null && configured !== ep && first.length === 148 && first[0] === 1 && !lp.peer.established(this.now())) this.sendTo(configured, [first]);
  }

  private reachable(source: string): boolean {
    const s = this.resolveSource(source);
    return s !== null && s.carrier.reachable(s.to);
  }

  private sendTo(source: string, packets: Buffer[]): boolean {
    const s = this.resolveSource(source);
    return s !== null && s.carrier.send(s.to, packets);
  }

  private onMessage(c: Carrier, msg: Buffer, from: string): void {
    const now = this.now();
    // Handshake messages cost DH before they authenticate (an initiation before its sender is
    // known, a response to one of our pending indices, which the path sees): watch their rate.
    if ((msg.length === 148 && msg[0] === 1) || (msg.length === 92 && msg[0] === 2)) this.countHandshake(now);
    let r: Received;
    try {
      r = this.device.receive(msg, now, `${c.id} ${from}`);
    } catch (e) {
      // The device never throws on bytes; a throw is our bug: drop this message, keep going.
      this.log.error({ carrier: c.id, err: (e as Error).message }, 'link device threw on a message');
      return;
    }
    // Authenticated: a listener keeps this connection over strangers'.
    if (r.kind === 'data' || r.kind === 'keepalive' || (r.kind === 'reply' && r.peer !== null)) c.vouch?.(from);
    switch (r.kind) {
      case 'data': {
        const lp = this.peers.get(r.peer);
        if (lp !== undefined) {
          lp.received(r.payload);
          if (r.packets.length > 0) this.toPeer(lp, r.packets);
        }
        return;
      }
      case 'keepalive': {
        const lp = this.peers.get(r.peer);
        if (lp !== undefined && r.packets.length > 0) this.toPeer(lp, r.packets);
        return;
      }
      case 'reply':
        if (r.packets.length > 0) this.sendTo(r.source, r.packets);
        if (r.peer !== null) {
          const lp = this.peers.get(r.peer);
          if (lp !== undefined && lp.peer.counters.handshakes === 1 && r.peer.lastHandshake === now) this.log.info({ peer: lp.cfg.name }, 'link handshake completed');
        }
        return;
      case 'cookie':
        return;
      case 'drop':
        if (r.peer === null) this.noteDrop(r.reason, c, from);
        return;
    }
  }

  /** Unattributable drops (unknown peers, garbage) are logged at most once per reason per 2^k. */
  private noteDrop(reason: DropReason, c: Carrier, from: string): void {
    const n = (this.logged.get(reason) ?? 0) + 1;
    this.logged.set(reason, n);
    if ((n & (n - 1)) === 0) this.log.info({ reason, carrier: c.id, from, count: n }, 'link message dropped');
  }

  private countHandshake(now: number): void {
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.windowInitiations = 0;
    }
    this.windowInitiations++;
    if (this.windowInitiations > this.loadThreshold) {
      if (!this.device.underLoad) this.log.warn({ perSecond: this.windowInitiations }, 'handshake flood: answering initiations with cookies');
      this.device.underLoad = true;
      this.underLoadUntil = now + 1000;
    }
  }

  private tick(): void {
    const now = this.now();
    if (this.device.underLoad && now >= this.underLoadUntil) this.device.underLoad = false;
    const next = this.device.nextTick();
    if (next === null || next > now) return;
    let actions: TickAction[];
    try {
      actions = this.device.tick(now);
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'link timers threw');
      return;
    }
    for (const a of actions) {
      const lp = this.peers.get(a.peer);
      if (lp === undefined) continue;
      if (a.kind === 'send') this.toPeer(lp, a.packets);
      else if (a.kind === 'gave-up') this.log.warn({ peer: lp.cfg.name, dropped: a.dropped }, 'link handshake gave up after 90 s; retrying when there is traffic');
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const lp of [...this.peers.values()]) this.removePeer(lp);
    await Promise.all([...this.carriers.values()].map((c) => c.close().catch(() => undefined)));
    this.carriers.clear();
  }
}
