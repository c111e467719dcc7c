/**
 * One local static key and its peers: the protocol's state machine as the transports will drive
 * it. Pure of I/O and of the clock: every call takes `now` (ms on the caller's monotonic clock)
 * and answers with the bytes to send, which always go back to the peer's endpoint or to the
 * source of the packet received. A source is an opaque string the transport chooses (an
 * address, a multiaddr); this layer uses it only as the cookie's input and reports the
 * authenticated source of every packet (`peer.endpoint`), so the caller follows a roaming peer.
 * The wall clock is read (`wallClock`) only for the initiation's TAI64N timestamp.
 */
import { randomBytes, randomInt, type KeyObject } from 'node:crypto';
import { generateKeyPair, keyPairFromPrivate, keyToBase64, x25519, type KeyPair } from './keys.js';
import { CookieChecker, CookieGenerator } from './cookie.js';
import { SourceRateLimiter } from './ratelimit.js';
import {
  decodeCookieReply,
  decodeInitiation,
  decodeResponse,
  decodeTransport,
  INITIATION_MAC1,
  INITIATION_MAC2,
  messageType,
  MSG_COOKIE_REPLY,
  MSG_INITIATION,
  MSG_RESPONSE,
  MSG_TRANSPORT,
  RESPONSE_MAC1,
  RESPONSE_MAC2,
} from './messages.js';
import { consumeInitiation, consumeResponse, createInitiation, createResponse, initialHash, tai64n, type Dh, type InitiatorState } from './noise.js';
import { Keypair, MAX_PAYLOAD, nodeTransportAead, REKEY_AFTER_MESSAGES, type TransportAead } from './transport.js';
import {
  INITIATION_MIN_INTERVAL_MS,
  PeerTimers,
  REJECT_AFTER_TIME_MS,
  REKEY_AFTER_TIME_MS,
  REKEY_JITTER_MS,
  REKEY_ON_RECEIVE_AGE_MS,
  REKEY_TIMEOUT_MS,
} from './timers.js';

export type DropReason =
  /** Not a message of this protocol: wrong type, length, reserved bytes or padding. */
  | 'malformed'
  /** A MAC or AEAD tag that does not verify (mac1, a handshake field, a transport message, a cookie reply). */
  | 'bad-mac'
  /** A public key that makes an all-zero DH (a low-order point). */
  | 'bad-key'
  /** An initiation from a static key that is not one of our peers. */
  | 'unknown-peer'
  /** A response, cookie reply or transport message for an index we do not hold (old, or never ours). */
  | 'unknown-index'
  /** A transport counter seen before or behind the window, or an initiation timestamp not newer than the last. */
  | 'replay'
  /** A transport message on a session older than REJECT_AFTER_TIME. */
  | 'stale'
  /** An initiation within INITIATION_MIN_INTERVAL_MS of the last one the peer's accepted, or, under load, a source past its handshake rate. */
  | 'rate-limit'
  /** Under load, an initiation or response without a valid mac2: answered with a cookie reply, no DH. */
  | 'cookie'
  /** A payload dropped from the queue waiting for a handshake (full, or the handshake gave up). */
  | 'queue-full'
  | 'gave-up';

export const DROP_REASONS: readonly DropReason[] = ['malformed', 'bad-mac', 'bad-key', 'unknown-peer', 'unknown-index', 'replay', 'stale', 'rate-limit', 'cookie', 'queue-full', 'gave-up'];

function noDrops(): Record<DropReason, number> {
  return { malformed: 0, 'bad-mac': 0, 'bad-key': 0, 'unknown-peer': 0, 'unknown-index': 0, replay: 0, stale: 0, 'rate-limit': 0, cookie: 0, 'queue-full': 0, 'gave-up': 0 };
}

/** Where randomness comes from; tests inject fixed values (the test vectors), the default is node:crypto. */
export interface Entropy {
  ephemeral(): KeyPair;
  /** A 32-bit session index. */
  index(): number;
  /** Retry jitter, 0 to REKEY_JITTER_MS - 1. */
  jitter(): number;
  bytes(n: number): Buffer;
}

export const defaultEntropy: Entropy = {
  ephemeral: generateKeyPair,
  index: () => randomBytes(4).readUInt32LE(0),
  jitter: () => randomInt(REKEY_JITTER_MS),
  bytes: (n) => randomBytes(n),
};

export interface DeviceOptions {
  privateKey: KeyObject;
  entropy?: Partial<Entropy>;
  /** Wall-clock ms for initiation timestamps (default Date.now); must not go back across restarts. */
  wallClock?: () => number;
  /** Payloads kept per peer while waiting for a handshake (default 256; the oldest is dropped). */
  maxQueue?: number;
  /** The X25519 used (tests wrap it); every call is counted in `counters.dh`. */
  dh?: Dh;
  /** The transport messages' ChaCha20-Poly1305 (default node:crypto's; the daemon passes the native addon's). */
  aead?: TransportAead;
  /**
   * What the handshake rate limit (under load) counts by: a source's address without its port,
   * say. Default: the whole source string.
   */
  rateKey?: (source: string) => string;
}

export interface PeerOptions {
  publicKey: Buffer;
  /** Optional 32-byte pre-shared key mixed into the handshake (Noise psk2). */
  presharedKey?: Buffer;
  /** Send a keepalive after this many ms without sending (0: never). */
  persistentKeepaliveMs?: number;
}

export interface PeerCounters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  keepalivesRx: number;
  keepalivesTx: number;
  handshakes: number;
  drops: Record<DropReason, number>;
}

export type Received =
  /** A frame from `peer`, authenticated; `packets` go to the peer (queued frames a new session released, a rekey). */
  | { kind: 'data'; peer: Peer; payload: Buffer; source: string; packets: Buffer[] }
  | { kind: 'keepalive'; peer: Peer; source: string; packets: Buffer[] }
  /** Handshake traffic: send `packets` back to `source` (a response, a cookie reply, queued frames after our handshake completed). */
  | { kind: 'reply'; peer: Peer | null; source: string; packets: Buffer[] }
  /** A cookie reply, kept: the next initiation to that peer carries mac2. */
  | { kind: 'cookie'; peer: Peer }
  | { kind: 'drop'; reason: DropReason; peer: Peer | null };

export type Sent =
  /** Send these to the peer now. */
  | { kind: 'sent'; packets: Buffer[] }
  /** No session to send on: the payload waits for the handshake; `packets` (an initiation, or nothing if one is under way) go to the peer. */
  | { kind: 'queued'; packets: Buffer[] };

export type TickAction =
  | { kind: 'send'; peer: Peer; packets: Buffer[]; why: 'retransmit' | 'new-handshake' | 'keepalive' | 'persistent-keepalive' }
  /** 90 s of handshake attempts failed: `dropped` queued payloads were dropped. */
  | { kind: 'gave-up'; peer: Peer; dropped: number }
  /** Every session key of the peer was erased (no handshake for 3 × REJECT_AFTER_TIME). */
  | { kind: 'keys-zeroed'; peer: Peer };

interface IndexEntry {
  peer: Peer;
  /** null: an initiation of ours waiting for its response. */
  keypair: Keypair | null;
}

export class Peer {
  readonly publicKey: Buffer;
  /** The last authenticated source (null before the first); a transport may also set it (configured endpoint). */
  endpoint: string | null = null;
  /** When the last handshake completed (caller's clock), null before the first. */
  lastHandshake: number | null = null;
  readonly counters: PeerCounters = { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, keepalivesRx: 0, keepalivesTx: 0, handshakes: 0, drops: noDrops() };
  readonly timers: PeerTimers;

  /** @internal the device's state of this peer: device.ts's (tests read it). */
  readonly s: {
    psk: Buffer | null;
    ss: Buffer | null;
    cookies: CookieGenerator;
    handshake: (InitiatorState & { localIndex: number }) | null;
    lastInitiationSent: number | null;
    lastTimestamp: Buffer | null;
    lastInitiationAccepted: number | null;
    current: Keypair | null;
    previous: Keypair | null;
    next: Keypair | null;
    queue: Buffer[];
    sentLastMinuteHandshake: boolean;
  };

  constructor(
    private readonly device: Device,
    o: PeerOptions,
    ss: Buffer | null,
  ) {
    this.publicKey = Buffer.from(o.publicKey);
    this.timers = new PeerTimers(o.persistentKeepaliveMs ?? 0);
    this.s = {
      psk: o.presharedKey !== undefined ? Buffer.from(o.presharedKey) : null,
      ss,
      cookies: new CookieGenerator(this.publicKey),
      handshake: null,
      lastInitiationSent: null,
      lastTimestamp: null,
      lastInitiationAccepted: null,
      current: null,
      previous: null,
      next: null,
      queue: [],
      sentLastMinuteHandshake: false,
    };
  }

  /** A new initiation to send to the peer, or null when one was sent less than REKEY_TIMEOUT ago or the peer's key is unusable. */
  handshakeInit(now: number): Buffer | null {
    return this.device.initiate(this, now);
  }

  /** Seals `payload` (an Ethernet frame) on the current session, or queues it and starts a handshake. */
  send(payload: Buffer, now: number): Sent {
    return this.device.send(this, payload, now);
  }

  tick(now: number): TickAction[] {
    return this.device.tickPeer(this, now);
  }

  /** Whether a session usable for sending exists now. */
  established(now: number): boolean {
    const k = this.s.current;
    return k !== null && now - k.created < REJECT_AFTER_TIME_MS && k.canSend();
  }

  /** Payloads waiting for a handshake. */
  queued(): number {
    return this.s.queue.length;
  }

  toString(): string {
    return `peer ${keyToBase64(this.publicKey)}`;
  }
}

export class Device {
  readonly publicKey: Buffer;
  /** Set by the caller when handshakes cost too much (a flood): initiations then need mac2. */
  underLoad = false;
  readonly counters = { dh: 0, cookieRepliesSent: 0, initiationsSent: 0, handshakesCompleted: 0, drops: noDrops() };

  private readonly local: KeyPair;
  private readonly localHash: Buffer;
  private readonly checker: CookieChecker;
  private readonly entropy: Entropy;
  private readonly wallClock: () => number;
  private readonly maxQueue: number;
  private readonly rawDh: Dh;
  private readonly aead: TransportAead;
  private readonly dh: Dh;
  private readonly peers = new Map<string, Peer>();
  private readonly indices = new Map<number, IndexEntry>();
  private readonly limiter = new SourceRateLimiter();
  private readonly rateKey: (source: string) => string;

  constructor(o: DeviceOptions) {
    this.rateKey = o.rateKey ?? ((s) => s);
    this.local = keyPairFromPrivate(o.privateKey);
    this.publicKey = this.local.publicKey;
    this.localHash = initialHash(this.publicKey);
    this.entropy = { ...defaultEntropy, ...o.entropy };
    this.checker = new CookieChecker(this.publicKey, this.entropy.bytes);
    this.wallClock = o.wallClock ?? Date.now;
    this.maxQueue = o.maxQueue ?? 256;
    this.rawDh = o.dh ?? x25519;
    this.aead = o.aead ?? nodeTransportAead;
    this.dh = (priv, pub) => {
      this.counters.dh++;
      return this.rawDh(priv, pub);
    };
  }

  addPeer(o: PeerOptions): Peer {
    const id = o.publicKey.toString('hex');
    if (o.publicKey.length !== 32) throw new RangeError('a peer public key is 32 bytes');
    if (o.presharedKey !== undefined && o.presharedKey.length !== 32) throw new RangeError('a pre-shared key is 32 bytes');
    if (this.peers.has(id)) throw new Error(`peer ${keyToBase64(o.publicKey)} already added`);
    if (o.publicKey.equals(this.publicKey)) throw new Error('a device cannot be its own peer');
    // ss is fixed per peer: computed once, so an initiation costs the responder one DH before it knows the sender.
    const p = new Peer(this, o, this.dh(this.local.privateKey, o.publicKey));
    this.peers.set(id, p);
    return p;
  }

  peer(publicKey: Buffer): Peer | null {
    return this.peers.get(publicKey.toString('hex')) ?? null;
  }

  removePeer(p: Peer): void {
    for (const [i, e] of this.indices) if (e.peer === p) this.indices.delete(i);
    p.s.current = p.s.previous = p.s.next = null;
    p.s.handshake = null;
    p.s.queue.length = 0;
    p.timers.clearAll();
    this.peers.delete(p.publicKey.toString('hex'));
  }

  /** Every peer's timers; see TickAction. */
  tick(now: number): TickAction[] {
    const out: TickAction[] = [];
    for (const p of this.peers.values()) out.push(...this.tickPeer(p, now));
    return out;
  }

  /** The earliest timer deadline of any peer (null: none): when to tick next. */
  nextTick(): number | null {
    let n: number | null = null;
    for (const p of this.peers.values()) {
      const t = p.timers.next();
      if (t !== null && (n === null || t < n)) n = t;
    }
    return n;
  }

  /** Handles one received datagram (or stream frame). Never throws on any bytes. */
  receive(bytes: Buffer, now: number, source: string): Received {
    switch (messageType(bytes)) {
      case MSG_INITIATION:
        return this.receiveInitiation(bytes, now, source);
      case MSG_RESPONSE:
        return this.receiveResponse(bytes, now, source);
      case MSG_COOKIE_REPLY:
        return this.receiveCookie(bytes, now);
      case MSG_TRANSPORT:
        return this.receiveTransport(bytes, now, source);
      default:
        return this.drop('malformed', null);
    }
  }

  private drop(reason: DropReason, peer: Peer | null): Received {
    this.counters.drops[reason]++;
    if (peer !== null) peer.counters.drops[reason]++;
    return { kind: 'drop', reason, peer };
  }

  private newIndex(peer: Peer, keypair: Keypair | null): number {
    for (;;) {
      const i = this.entropy.index() >>> 0;
      if (!this.indices.has(i)) {
        this.indices.set(i, { peer, keypair });
        return i;
      }
    }
  }

  /** @internal Peer.handshakeInit. */
  initiate(p: Peer, now: number): Buffer | null {
    if (p.s.ss === null) return null;
    if (p.s.lastInitiationSent !== null && now - p.s.lastInitiationSent < REKEY_TIMEOUT_MS) return null;
    if (p.s.handshake !== null) this.indices.delete(p.s.handshake.localIndex);
    p.s.handshake = null;
    const localIndex = this.newIndex(p, null);
    const made = createInitiation({
      localPublic: this.publicKey,
      remoteStatic: p.publicKey,
      ss: p.s.ss,
      ephemeral: this.entropy.ephemeral(),
      timestamp: tai64n(this.wallClock()),
      sender: localIndex,
      dh: this.dh,
    });
    if (made === null) {
      this.indices.delete(localIndex);
      return null;
    }
    p.s.handshake = { ...made.state, localIndex };
    p.s.cookies.addMacs(made.message, INITIATION_MAC1, now);
    p.s.lastInitiationSent = now;
    p.timers.handshakeInitiated(now, this.entropy.jitter());
    p.timers.anyAuthenticatedSent(now);
    this.counters.initiationsSent++;
    return made.message;
  }

  /** @internal Peer.send. */
  send(p: Peer, payload: Buffer, now: number): Sent {
    if (payload.length > MAX_PAYLOAD) throw new RangeError(`payload of ${payload.length} bytes > ${MAX_PAYLOAD}`);
    if (!p.established(now)) {
      if (payload.length > 0) {
        if (p.s.queue.length >= this.maxQueue) {
          p.s.queue.shift();
          this.counters.drops['queue-full']++;
          p.counters.drops['queue-full']++;
        }
        p.s.queue.push(Buffer.from(payload));
      }
      const init = this.initiate(p, now);
      return { kind: 'queued', packets: init !== null ? [init] : [] };
    }
    const k = p.s.current!;
    const packets = [this.seal(p, k, payload, now)];
    // The initiator of a session replaces it in time (WireGuard's keep-key-fresh on send).
    if (k.isInitiator && (k.sendCounter >= REKEY_AFTER_MESSAGES || now - k.created >= REKEY_AFTER_TIME_MS)) {
      const init = this.initiate(p, now);
      if (init !== null) packets.push(init);
    }
    return { kind: 'sent', packets };
  }

  private seal(p: Peer, k: Keypair, payload: Buffer, now: number): Buffer {
    const b = k.seal(payload);
    p.counters.txPackets++;
    p.counters.txBytes += payload.length;
    if (payload.length === 0) p.counters.keepalivesTx++;
    else p.timers.dataSent(now);
    p.timers.anyAuthenticatedSent(now);
    return b;
  }

  /** Sends what waited for a session, or a keepalive when `keepalive` (confirms a new session to the responder). */
  private flush(p: Peer, now: number, keepalive: boolean): Buffer[] {
    if (!p.established(now)) return [];
    const out = p.s.queue.map((q) => this.seal(p, p.s.current!, q, now));
    p.s.queue.length = 0;
    if (out.length === 0 && keepalive) out.push(this.seal(p, p.s.current!, Buffer.alloc(0), now));
    return out;
  }

  /** Installs a new session: the initiator uses it at once; the responder keeps it as `next` until the initiator's first message proves it. */
  private install(p: Peer, k: Keypair, now: number): void {
    if (k.isInitiator) {
      if (p.s.next !== null) this.indices.delete(p.s.next.localIndex);
      p.s.next = null;
      this.rotate(p, k);
    } else {
      if (p.s.next !== null) this.indices.delete(p.s.next.localIndex);
      p.s.next = k;
    }
    p.s.sentLastMinuteHandshake = false;
    p.lastHandshake = now;
    p.counters.handshakes++;
    this.counters.handshakesCompleted++;
    p.timers.sessionDerived(now);
  }

  private rotate(p: Peer, k: Keypair): void {
    if (p.s.previous !== null) this.indices.delete(p.s.previous.localIndex);
    p.s.previous = p.s.current;
    p.s.current = k;
  }

  private receiveInitiation(bytes: Buffer, now: number, source: string): Received {
    const m = decodeInitiation(bytes);
    if (!m.ok) return this.drop('malformed', null);
    if (!this.checker.checkMac1(bytes, INITIATION_MAC1)) return this.drop('bad-mac', null);
    if (this.underLoad && !this.checker.checkMac2(bytes, INITIATION_MAC2, source, now)) {
      this.counters.drops.cookie++;
      this.counters.cookieRepliesSent++;
      return { kind: 'reply', peer: null, source, packets: [this.checker.createReply(bytes, INITIATION_MAC1, m.value.sender, source, now)] };
    }
    // mac2 proved the source; it still may not make us do DH faster than the limit.
    if (this.underLoad && !this.limiter.allow(this.rateKey(source), now)) return this.drop('rate-limit', null);
    const c = consumeInitiation({
      local: this.local,
      localHash: this.localHash,
      msg: m.value,
      dh: this.dh,
      lookup: (pub) => {
        const p = this.peers.get(pub.toString('hex'));
        return p !== undefined && p.s.ss !== null ? { peer: p, ss: p.s.ss } : null;
      },
    });
    if (!c.ok) return this.drop(c.reason, null);
    const p = c.value.peer;
    // A replayed initiation (its timestamp not newer) or one too soon after the last: no response, no DH.
    if (p.s.lastTimestamp !== null && Buffer.compare(c.value.timestamp, p.s.lastTimestamp) <= 0) return this.drop('replay', p);
    if (p.s.lastInitiationAccepted !== null && now - p.s.lastInitiationAccepted < INITIATION_MIN_INTERVAL_MS) return this.drop('rate-limit', p);
    const localIndex = this.newIndex(p, null);
    const r = createResponse({ init: c.value, ephemeral: this.entropy.ephemeral(), sender: localIndex, psk: p.s.psk, dh: this.dh });
    if (r === null) {
      this.indices.delete(localIndex);
      return this.drop('bad-key', p);
    }
    p.s.lastTimestamp = c.value.timestamp;
    p.s.lastInitiationAccepted = now;
    const k = new Keypair(r.keys, localIndex, c.value.sender, false, now, this.aead);
    this.indices.set(localIndex, { peer: p, keypair: k });
    this.install(p, k, now);
    p.s.cookies.addMacs(r.message, RESPONSE_MAC1, now);
    p.endpoint = source;
    p.timers.anyAuthenticatedReceived();
    p.timers.anyAuthenticatedSent(now);
    return { kind: 'reply', peer: p, source, packets: [r.message] };
  }

  private receiveResponse(bytes: Buffer, now: number, source: string): Received {
    const m = decodeResponse(bytes);
    if (!m.ok) return this.drop('malformed', null);
    if (!this.checker.checkMac1(bytes, RESPONSE_MAC1)) return this.drop('bad-mac', null);
    if (this.underLoad && !this.checker.checkMac2(bytes, RESPONSE_MAC2, source, now)) {
      this.counters.drops.cookie++;
      this.counters.cookieRepliesSent++;
      return { kind: 'reply', peer: null, source, packets: [this.checker.createReply(bytes, RESPONSE_MAC1, m.value.sender, source, now)] };
    }
    if (this.underLoad && !this.limiter.allow(this.rateKey(source), now)) return this.drop('rate-limit', null);
    const e = this.indices.get(m.value.receiver);
    const p = e?.peer ?? null;
    if (e === undefined || p === null || e.keypair !== null || p.s.handshake === null || p.s.handshake.localIndex !== m.value.receiver) return this.drop('unknown-index', p);
    const c = consumeResponse({ state: p.s.handshake, localPrivate: this.local.privateKey, msg: m.value, psk: p.s.psk, dh: this.dh });
    if (!c.ok) return this.drop(c.reason, p);
    const localIndex = p.s.handshake.localIndex;
    p.s.handshake = null;
    const k = new Keypair(c.keys, localIndex, m.value.sender, true, now, this.aead);
    this.indices.set(localIndex, { peer: p, keypair: k });
    this.install(p, k, now);
    p.timers.handshakeComplete();
    p.timers.anyAuthenticatedReceived();
    p.endpoint = source;
    return { kind: 'reply', peer: p, source, packets: this.flush(p, now, true) };
  }

  private receiveCookie(bytes: Buffer, now: number): Received {
    const m = decodeCookieReply(bytes);
    if (!m.ok) return this.drop('malformed', null);
    const e = this.indices.get(m.value.receiver);
    if (e === undefined) return this.drop('unknown-index', null);
    if (!e.peer.s.cookies.consumeReply(m.value, now)) return this.drop('bad-mac', e.peer);
    // The retry with mac2 waits for the retransmit timer (as WireGuard's): cookie replies cannot make us send faster.
    return { kind: 'cookie', peer: e.peer };
  }

  private receiveTransport(bytes: Buffer, now: number, source: string): Received {
    const m = decodeTransport(bytes);
    if (!m.ok) return this.drop('malformed', null);
    const e = this.indices.get(m.value.receiver);
    if (e === undefined || e.keypair === null) return this.drop('unknown-index', e?.peer ?? null);
    const { peer: p, keypair: k } = e;
    if (now - k.created >= REJECT_AFTER_TIME_MS) return this.drop('stale', p);
    const o = k.open(m.value);
    if (!o.ok) return this.drop(o.reason, p);
    const packets: Buffer[] = [];
    if (p.s.next === k) {
      // The initiator's first message on the new session: it is proven, use it.
      p.s.next = null;
      this.rotate(p, k);
      packets.push(...this.flush(p, now, false));
    }
    p.endpoint = source;
    p.timers.anyAuthenticatedReceived();
    p.counters.rxPackets++;
    p.counters.rxBytes += o.payload.length;
    // An initiator whose session nears REJECT starts the next handshake once, while still receiving.
    if (p.s.current === k && k.isInitiator && now - k.created >= REKEY_ON_RECEIVE_AGE_MS && !p.s.sentLastMinuteHandshake) {
      const init = this.initiate(p, now);
      if (init !== null) {
        p.s.sentLastMinuteHandshake = true;
        packets.push(init);
      }
    }
    if (o.payload.length === 0) {
      p.counters.keepalivesRx++;
      return { kind: 'keepalive', peer: p, source, packets };
    }
    p.timers.dataReceived(now);
    return { kind: 'data', peer: p, payload: o.payload, source, packets };
  }

  /** @internal Peer.tick. */
  tickPeer(p: Peer, now: number): TickAction[] {
    const out: TickAction[] = [];
    for (const a of p.timers.due(now)) {
      switch (a) {
        case 'retransmit':
        case 'new-handshake': {
          const init = this.initiate(p, now);
          if (init !== null) out.push({ kind: 'send', peer: p, packets: [init], why: a });
          break;
        }
        case 'give-up': {
          const dropped = p.s.queue.length;
          p.s.queue.length = 0;
          this.counters.drops['gave-up'] += dropped;
          p.counters.drops['gave-up'] += dropped;
          if (p.s.handshake !== null) this.indices.delete(p.s.handshake.localIndex);
          p.s.handshake = null;
          p.s.lastInitiationSent = null;
          p.timers.stopHandshake();
          if (p.timers.zeroKeysAt === null) p.timers.sessionDerived(now);
          out.push({ kind: 'gave-up', peer: p, dropped });
          break;
        }
        case 'keepalive':
        case 'persistent-keepalive':
          if (p.established(now)) out.push({ kind: 'send', peer: p, packets: [this.seal(p, p.s.current!, Buffer.alloc(0), now)], why: a });
          break;
        case 'zero-keys':
          for (const k of [p.s.current, p.s.previous, p.s.next]) if (k !== null) this.indices.delete(k.localIndex);
          if (p.s.handshake !== null) this.indices.delete(p.s.handshake.localIndex);
          p.s.current = p.s.previous = p.s.next = null;
          p.s.handshake = null;
          out.push({ kind: 'keys-zeroed', peer: p });
          break;
      }
    }
    return out;
  }
}
