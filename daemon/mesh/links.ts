/**
 * The daemon's links: its static key (stateDir/link.key), the listeners (shared by every link
 * and agent that names the same one), the links (a peer as a trunk port of a network) and agent
 * ports (a peer as a VM's port). State is what `link add` was given, the onion keys of onion
 * listeners, and each peer's last authenticated UDP endpoint, so a restarted daemon dials back a
 * peer that had roamed (first; its handshakes go to the configured endpoint too until one completes).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { generateKeyPair, keyFromBase64, keyPairFromPrivate, keyToBase64, readPrivateKeyFile, writePrivateKeyFile } from '../links/keys.js';
import { DROP_REASONS } from '../links/device.js';
import { MAX_PAYLOAD } from '../links/transport.js';
import { UserError, NotFoundError, ConflictError } from '../errors.js';
import { asObject, checkName } from '../state/validate.js';
import { maxFrameFor, type AgentPortSpec as AgentSpec, type Port } from '../../plugins/types.js';
import type { Network, Member } from '../switch/network.js';
import type { SocksEndpoint } from '../tor/socks-endpoint.js';
import { prepareTorSocketDir, shareTorSocket, type TorReach } from '../tor/files.js';
import type { Carrier } from '../carriers/types.js';
import { openUdp } from '../carriers/udp.js';
import { listenStream, dialStream } from '../carriers/stream.js';
import { connectTcp, connectUnix, connectSocks } from '../carriers/connect.js';
import { endpointMultiaddr, endpointText, listenMultiaddr, listenText, parseEndpoint, parseListen, type Endpoint, type Listen } from '../carriers/endpoint.js';
import { LinkEngine, type LinkPeer, type PeerConfig } from './engine.js';
import { LinkPort } from './link-port.js';
import { withTee } from '../../plugins/common/tee-port.js';
import type { LinkInfo, LinksInfo, LinkListenerInfo } from '../control/api.js';

/** The largest frame a UDP link carries: its message (16 + padded frame + trailer + 16) in one IPv4 datagram. */
export const UDP_MAX_FRAME = 65_471;
const DIAL_TIMEOUT_MS = 10_000;
const ONION_DIAL_TIMEOUT_MS = 120_000;
const DEFAULT_KEEPALIVE_S = 25;

export interface LinkSpec {
  name: string;
  net: string;
  /** The peer's static public key, base64. */
  peer: string;
  /** Where to dial (endpointText). */
  endpoint?: string;
  /** Where to wait for the peer (listenText). */
  listen?: string;
  /** Persistent keepalive, seconds (0: none). */
  keepalive?: number;
}


export interface LinksState {
  specs: LinkSpec[];
  /** Onion listeners' keys, by listenText: the address survives restarts. A secret (the state file is 0600). */
  onions: Record<string, { serviceId: string; key: string }>;
  /** Last authenticated UDP endpoint per peer key (endpointText). */
  endpoints: Record<string, string>;
}

export interface LinkTor {
  /** Starts Tor when it is not running (an onion link needs it). */
  ensure(): void;
  socks(): SocksEndpoint | null;
  /** Who may connect to a socket tor must reach (default: only this process's user). */
  reach?(): TorReach;
  connected(): boolean;
  publish(unixPath: string, virtPort: number, key: string | undefined): Promise<{ serviceId: string; key: string }>;
  unpublish(serviceId: string): Promise<void>;
  onConnected(cb: () => void): void;
}

export interface LinksDeps {
  log: Logger;
  stateDir: string;
  tor: LinkTor;
  save(): void;
  network(name: string): { sw: Network; mtu: number } | undefined;
  capture: { portAdded(name: string, net: string, port: Port): void; portRemoved(name: string): void };
  socketGid?: number;
}

interface ListenerEntry {
  listen: Listen;
  text: string;
  carrier: Carrier | null;
  owners: Set<string>;
  onion: string | null;
  error: string | null;
}

interface LinkEntry {
  spec: LinkSpec;
  peer: LinkPeer;
  port: LinkPort;
  member: Member;
  dial: Carrier | null;
}

interface AgentEntry {
  vm: string;
  spec: AgentSpec;
  peer: LinkPeer;
  dial: Carrier | null;
}

function checkPeerKey(v: unknown): string {
  if (typeof v !== 'string' || keyFromBase64(v) === null) throw new UserError(`invalid peer key ${JSON.stringify(v)}: a base64 X25519 public key (44 characters, as \`mvnet key show\` or \`mvnet link key\` print)`);
  return keyToBase64(keyFromBase64(v)!);
}

function checkKeepalive(v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 3600) throw new UserError(`invalid keepalive ${JSON.stringify(v)}: seconds from 0 (none) to 3600`);
  return v;
}

/** A link's spec from the control API or the state file; the network is checked by the caller. */
export function checkLinkSpec(p: unknown): LinkSpec {
  const o = asObject(p, 'params');
  for (const k of Object.keys(o)) if (!['name', 'net', 'peer', 'endpoint', 'listen', 'keepalive'].includes(k)) throw new UserError(`unknown link field ${JSON.stringify(k)}`);
  const spec: LinkSpec = { name: checkName(o.name, 'link'), net: checkName(o.net, 'network'), peer: checkPeerKey(o.peer) };
  if (o.endpoint !== undefined) {
    if (typeof o.endpoint !== 'string') throw new UserError('endpoint must be a string');
    spec.endpoint = endpointText(parseEndpoint(o.endpoint));
  }
  if (o.listen !== undefined) {
    if (typeof o.listen !== 'string') throw new UserError('listen must be a string');
    spec.listen = listenText(parseListen(o.listen));
  }
  if (spec.endpoint === undefined && spec.listen === undefined) throw new UserError('a link needs --endpoint (where to reach the peer), --listen (where the peer reaches us), or both');
  if (o.keepalive !== undefined) spec.keepalive = checkKeepalive(o.keepalive);
  return spec;
}

function errCode(e: unknown): string | undefined {
  return e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

export class Links {
  private engine: LinkEngine | null = null;
  private readonly listeners = new Map<string, ListenerEntry>();
  private udpOut: Promise<Carrier> | null = null;
  /** Links and agents that dial from the shared udp-out socket: it is closed when the last goes. */
  private readonly udpOutUsers = new Set<string>();
  private readonly links = new Map<string, LinkEntry>();
  private readonly agents = new Map<string, AgentEntry>();
  private onionKeys: LinksState['onions'] = {};
  private endpoints: LinksState['endpoints'] = {};
  /** Links of the state file that could not be restored: kept (saved, listed as failed) until removed. */
  private failed: { raw: unknown; name: string | null; error: string }[] = [];
  /** Failed links are tried again (a port that was taken at boot, a network made later), 5 s doubling to 60 s. */
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs = 5000;
  private closed = false;
  private torHooked = false;

  constructor(private readonly d: LinksDeps) {}

  get keyFile(): string {
    return path.join(this.d.stateDir, 'link.key');
  }

  /** The engine, with the daemon's key (made on first need, mode 0600, never logged). */
  private ensureEngine(): LinkEngine {
    if (this.engine !== null) return this.engine;
    let key;
    try {
      key = readPrivateKeyFile(this.keyFile);
    } catch (e) {
      if (errCode(e) !== 'ENOENT') throw new UserError(`the link key ${this.keyFile}: ${(e as Error).message}`);
      key = generateKeyPair().privateKey;
      writePrivateKeyFile(this.keyFile, key);
      this.d.log.info({ file: this.keyFile, publicKey: keyToBase64(keyPairFromPrivate(key).publicKey) }, 'made the link key');
    }
    this.engine = new LinkEngine({ privateKey: key, log: this.d.log.child({ part: 'links' }) });
    return this.engine;
  }

  publicKey(): string {
    return this.ensureEngine().publicKey;
  }

  /** For tests and `link list`: device-wide drops (unknown peers, garbage). */
  get device(): LinkEngine['device'] | null {
    return this.engine?.device ?? null;
  }

  // --- listeners ---------------------------------------------------------------------------

  private async listen(text: string, owner: string): Promise<ListenerEntry> {
    const e0 = this.listeners.get(text);
    if (e0 !== undefined) {
      e0.owners.add(owner);
      return e0;
    }
    const engine = this.ensureEngine();
    const l = parseListen(text);
    const e: ListenerEntry = { listen: l, text, carrier: null, owners: new Set([owner]), onion: null, error: null };
    const id = `listen:${text}`;
    try {
      switch (l.kind) {
        case 'udp':
          e.carrier = await openUdp({ id, host: l.host, port: l.port, log: engine.log });
          break;
        case 'tcp':
          e.carrier = await listenStream({ id, listen: { kind: 'tcp', host: l.host, port: l.port }, log: engine.log });
          break;
        case 'unix':
          e.carrier = await listenStream({ id, listen: { kind: 'unix', path: l.path, ...(this.d.socketGid !== undefined ? { gid: this.d.socketGid } : {}) }, log: engine.log });
          break;
        case 'onion': {
          const dir = path.join(this.d.stateDir, 'links');
          // Tor (another user, maybe) connects to it; nobody else may (0660 root:tor's group in 0710).
          const reach = this.d.tor.reach?.() ?? 'self';
          await prepareTorSocketDir(this.d.stateDir, dir, reach);
          const sock = path.join(dir, `onion-${l.port}.sock`);
          e.carrier = await listenStream({ id, listen: { kind: 'unix', path: sock }, log: engine.log });
          await shareTorSocket(sock, reach);
          this.hookTor();
          this.d.tor.ensure();
          if (this.d.tor.connected()) await this.publishOnion(e, sock);
          break;
        }
      }
    } catch (err) {
      const m = (err as Error).message;
      if (e.carrier !== null) await e.carrier.close().catch(() => undefined);
      throw err instanceof UserError ? err : new UserError(`cannot listen on ${text}: ${m}`);
    }
    engine.addCarrier(e.carrier);
    this.listeners.set(text, e);
    return e;
  }

  private async publishOnion(e: ListenerEntry, sock: string): Promise<void> {
    if (e.listen.kind !== 'onion') return;
    const saved = this.onionKeys[e.text];
    try {
      const r = await this.d.tor.publish(sock, e.listen.port, saved?.key);
      e.onion = r.serviceId;
      e.error = null;
      if (saved?.serviceId !== r.serviceId || saved.key !== r.key) {
        this.onionKeys[e.text] = { serviceId: r.serviceId, key: r.key };
        this.d.save();
      }
      this.d.log.info({ listen: e.text, onion: `${r.serviceId}.onion:${e.listen.port}` }, 'link onion service published');
    } catch (err) {
      e.error = `onion service not published: ${(err as Error).message}`;
      if (!/collision/i.test((err as Error).message)) this.d.log.warn({ listen: e.text, err: (err as Error).message }, 'could not publish the link onion service');
      else {
        e.onion = saved?.serviceId ?? null;
        e.error = null;
      }
    }
  }

  private hookTor(): void {
    if (this.torHooked) return;
    this.torHooked = true;
    this.d.tor.onConnected(() => {
      for (const e of this.listeners.values()) {
        if (e.listen.kind === 'onion' && e.onion === null) void this.publishOnion(e, path.join(this.d.stateDir, 'links', `onion-${e.listen.port}.sock`));
      }
    });
  }

  /** `keep`: the daemon is stopping: an onion listener keeps its service key for the restart. */
  private async unlisten(text: string | undefined, owner: string, keep = false): Promise<void> {
    if (text === undefined) return;
    const e = this.listeners.get(text);
    if (e === undefined) return;
    e.owners.delete(owner);
    if (e.owners.size > 0) return;
    this.listeners.delete(text);
    if (!keep) {
      if (e.onion !== null) await this.d.tor.unpublish(e.onion).catch(() => undefined);
      delete this.onionKeys[text];
    }
    if (e.carrier !== null) await this.engine?.removeCarrier(e.carrier);
  }

  // --- dialling ------------------------------------------------------------------------------

  private async dialer(owner: string, ep: Endpoint, listen: ListenerEntry | null): Promise<{ carrier: Carrier; to: string; own: boolean }> {
    const engine = this.ensureEngine();
    const id = `dial:${owner}`;
    switch (ep.kind) {
      case 'udp': {
        // From the link's own UDP listener when it has one: the peer sees one address for us.
        if (listen !== null && listen.listen.kind === 'udp' && listen.carrier !== null) return { carrier: listen.carrier, to: await listen.carrier.resolve(ep), own: false };
        this.udpOutUsers.add(owner);
        const opening = (this.udpOut ??= openUdp({ id: 'udp-out', host: '', port: 0, log: engine.log }).then((c) => {
          engine.addCarrier(c);
          return c;
        }));
        // A failure is not kept: the next link tries again.
        const c = await opening.catch((e: unknown) => {
          if (this.udpOut === opening) this.udpOut = null;
          throw e;
        });
        return { carrier: c, to: await c.resolve(ep), own: false };
      }
      case 'tcp': {
        const c = dialStream({ id, kind: 'tcp', connect: () => connectTcp(ep.host, ep.port, DIAL_TIMEOUT_MS), describe: endpointText(ep), log: engine.log });
        engine.addCarrier(c);
        return { carrier: c, to: await c.resolve(ep), own: true };
      }
      case 'unix': {
        const c = dialStream({ id, kind: 'unix', connect: () => connectUnix(ep.path, DIAL_TIMEOUT_MS), describe: endpointText(ep), log: engine.log });
        engine.addCarrier(c);
        return { carrier: c, to: await c.resolve(ep), own: true };
      }
      case 'onion': {
        this.d.tor.ensure();
        const c = dialStream({
          id,
          kind: 'onion',
          connect: () => {
            const s = this.d.tor.socks();
            if (s === null) return Promise.reject(new Error('Tor is not running'));
            // A circuit of the link's own: SOCKS credentials are Tor's isolation key.
            return connectSocks(s, `${ep.address}.onion`, ep.port, { username: 'mvnet-link', password: owner }, ONION_DIAL_TIMEOUT_MS);
          },
          describe: endpointText(ep),
          log: engine.log,
        });
        engine.addCarrier(c);
        return { carrier: c, to: await c.resolve(ep), own: true };
      }
    }
  }

  private carrierMaxFrame(spec: { endpoint?: string; listen?: string }): number {
    const udp = (spec.endpoint !== undefined && parseEndpoint(spec.endpoint).kind === 'udp') || (spec.listen !== undefined && parseListen(spec.listen).kind === 'udp');
    return udp ? UDP_MAX_FRAME : MAX_PAYLOAD;
  }

  private checkPeerFree(peer: string, owner: string): void {
    if (this.engine !== null && peer === this.engine.publicKey) throw new ConflictError('the peer key is this daemon’s own link key');
    for (const l of this.links.values()) if (l.spec.peer === peer && `link:${l.spec.name}` !== owner) throw new ConflictError(`peer ${peer} is already the peer of link ${l.spec.name}`);
    for (const a of this.agents.values()) if (a.spec.peer === peer && `agent:${a.vm}` !== owner) throw new ConflictError(`peer ${peer} is already the agent of VM ${a.vm}`);
    for (const f of this.failed) {
      const p = (f.raw as { peer?: unknown } | null)?.peer;
      const k = typeof p === 'string' ? keyFromBase64(p) : null;
      if (k !== null && keyToBase64(k) === peer && `link:${f.name}` !== owner) throw new ConflictError(`peer ${peer} is already the peer of link ${f.name} (which could not be restored; remove it first)`);
    }
  }

  /** Opens the carriers and the peer of one owner; undoes what it did when something fails. */
  private async openPeer(owner: string, spec: { peer: string; endpoint?: string; listen?: string; keepalive?: number }): Promise<{ peer: LinkPeer; dial: Carrier | null }> {
    const engine = this.ensureEngine();
    this.checkPeerFree(spec.peer, owner);
    let listener: ListenerEntry | null = null;
    let dial: { carrier: Carrier; to: string; own: boolean } | null = null;
    let lastSeen: string | undefined;
    try {
      if (spec.listen !== undefined) listener = await this.listen(spec.listen, owner);
      if (spec.endpoint !== undefined) dial = await this.dialer(owner, parseEndpoint(spec.endpoint), listener);
      // Where the peer was last seen (it roamed) is tried first; the configured endpoint too, until a handshake completes.
      const remembered = this.endpoints[spec.peer];
      if (dial !== null && remembered !== undefined && dial.carrier.kind === 'udp') {
        try {
          lastSeen = await dial.carrier.resolve(parseEndpoint(remembered, 'udp'));
        } catch {
          lastSeen = undefined;
        }
      }
    } catch (e) {
      if (dial?.own === true) await engine.removeCarrier(dial.carrier);
      await this.releaseUdpOut(owner);
      await this.unlisten(spec.listen, owner);
      throw e instanceof UserError ? e : new UserError((e as Error).message);
    }
    const keepalive = spec.keepalive ?? (spec.endpoint !== undefined ? DEFAULT_KEEPALIVE_S : 0);
    const cfg: PeerConfig = {
      name: owner,
      publicKey: keyFromBase64(spec.peer)!,
      ...(keepalive > 0 ? { persistentKeepaliveMs: keepalive * 1000 } : {}),
      ...(dial !== null && spec.endpoint !== undefined ? { endpoint: { carrier: dial.carrier, to: dial.to, text: parseEndpoint(spec.endpoint) } } : {}),
      ...(lastSeen !== undefined && lastSeen !== dial?.to ? { lastSeen } : {}),
    };
    const peer = engine.addPeer(cfg, { frames: () => {} });
    return { peer, dial: dial?.own === true ? dial.carrier : null };
  }

  /** The owner no longer dials from udp-out; the socket is closed when nobody does. */
  private async releaseUdpOut(owner: string): Promise<void> {
    if (!this.udpOutUsers.delete(owner) || this.udpOutUsers.size > 0 || this.udpOut === null) return;
    const opening = this.udpOut;
    this.udpOut = null;
    const c = await opening.catch(() => null);
    if (c !== null) await this.engine?.removeCarrier(c);
  }

  private async closePeer(owner: string, peer: LinkPeer, dial: Carrier | null, listen: string | undefined, keep = false): Promise<void> {
    this.rememberEndpoint(peer);
    peer.remove();
    if (dial !== null) await this.engine?.removeCarrier(dial);
    await this.releaseUdpOut(owner);
    await this.unlisten(listen, owner, keep);
  }

  /** The UDP address a source string names (null: not a UDP carrier's, or not an address worth keeping, e.g. link-local with a zone). */
  private udpEndpoint(source: string | null): Endpoint | null {
    const s = source !== null ? (this.engine?.resolveSource(source) ?? null) : null;
    if (s?.carrier.kind !== 'udp') return null;
    try {
      return parseEndpoint(s.to, 'udp');
    } catch {
      return null;
    }
  }

  /** Keeps a roamed UDP endpoint of a peer for the next start; `save`: write the state now if it changed. */
  private rememberEndpoint(peer: LinkPeer, save = true): void {
    const ep = this.udpEndpoint(peer.peer.endpoint);
    if (ep === null) return;
    const key = keyToBase64(peer.peer.publicKey);
    const text = endpointText(ep);
    if (this.endpoints[key] === text) return;
    this.endpoints[key] = text;
    if (save) this.d.save();
  }

  // --- links ---------------------------------------------------------------------------------

  async add(params: unknown, restoring = false, retry = false): Promise<LinkInfo> {
    const spec = checkLinkSpec(params);
    if (this.links.has(spec.name)) throw new ConflictError(`link ${spec.name} already exists`);
    const failed = this.failed.find((f) => f.name === spec.name);
    if (failed !== undefined && !retry) throw new ConflictError(`link ${spec.name} is in the state file but could not be restored (${failed.error}); remove it first`);
    const net = this.d.network(spec.net);
    if (net === undefined) throw new NotFoundError(`no network named ${spec.net}`);
    const netMax = maxFrameFor(net.mtu);
    const carrierMax = this.carrierMaxFrame(spec);
    if (netMax > carrierMax) throw new UserError(`network ${spec.net} has MTU ${net.mtu}, whose frames (${netMax} bytes) a UDP link cannot carry in one datagram: use an MTU of at most ${carrierMax - 18}, or a tcp or unix link`);
    const owner = `link:${spec.name}`;
    const { peer, dial } = await this.openPeer(owner, spec);
    const port = new LinkPort(peer, {
      kind: 'link',
      name: owner,
      layer: 2,
      maxFrame: netMax,
      waitingText: () => `waiting for the peer on ${spec.listen ?? '?'}`,
      onClose: async () => {},
    });
    // Captures see the link's plaintext side, as any port's.
    const teed = withTee(port);
    let member: Member;
    try {
      member = net.sw.attachTrunk(owner, teed);
    } catch (e) {
      await this.closePeer(owner, peer, dial, spec.listen);
      throw new UserError(`cannot add link ${spec.name}: ${(e as Error).message}`);
    }
    this.links.set(spec.name, { spec, peer, port, member, dial });
    this.d.capture.portAdded(owner, spec.net, teed);
    if (!restoring) this.d.save();
    this.d.log.info({ link: spec.name, net: spec.net, peer: spec.peer, endpoint: spec.endpoint, listen: spec.listen }, restoring ? 'link restored' : 'link added');
    return this.info(this.links.get(spec.name)!);
  }

  async remove(name: unknown): Promise<{ removed: string }> {
    const n = checkName(name, 'link');
    const e = this.links.get(n);
    if (e === undefined) {
      const f = this.failed.findIndex((x) => x.name === n);
      if (f < 0) throw new NotFoundError(`no link named ${n}`);
      this.failed.splice(f, 1);
      this.d.save();
      this.d.log.info({ link: n }, 'link removed (it had failed to restore)');
      return { removed: n };
    }
    this.links.delete(n);
    const owner = `link:${n}`;
    this.d.capture.portRemoved(owner);
    this.d.network(e.spec.net)?.sw.detach(e.member);
    await e.port.close();
    await this.closePeer(owner, e.peer, e.dial, e.spec.listen);
    // Where a removed peer was last seen is nothing to keep (nor to dial if it is added again).
    delete this.endpoints[e.spec.peer];
    this.d.save();
    this.d.log.info({ link: n }, 'link removed');
    return { removed: n };
  }

  /** Links on a network (a network with links is not deleted without --force). */
  onNetwork(net: string): string[] {
    return [...this.links.values()].filter((l) => l.spec.net === net).map((l) => l.spec.name);
  }

  // --- agents (VM ports) ---------------------------------------------------------------------

  async openAgent(vm: string, spec: AgentSpec, mtu: number): Promise<Port> {
    if (spec.listen === undefined) throw new UserError('an agent port needs --listen (where the agent connects), e.g. udp:51820');
    const owner = `agent:${vm}`;
    const netMax = maxFrameFor(mtu);
    const carrierMax = this.carrierMaxFrame(spec);
    if (netMax > carrierMax) throw new UserError(`the network's MTU ${mtu} is too large for a UDP agent link: at most ${carrierMax - 18}`);
    const { peer, dial } = await this.openPeer(owner, spec);
    const entry: AgentEntry = { vm, spec, peer, dial };
    this.agents.set(vm, entry);
    return new LinkPort(peer, {
      kind: 'agent',
      name: `agent ${spec.peer.slice(0, 8)}… on ${spec.listen}`,
      layer: spec.layer ?? 2,
      maxFrame: spec.layer === 3 ? mtu : netMax,
      waitingText: () => `waiting for mvnet agent ${spec.peer.slice(0, 8)}… on ${spec.listen}`,
      onClose: async (remove) => {
        if (this.agents.get(vm) !== entry) return;
        this.agents.delete(vm);
        await this.closePeer(owner, peer, dial, spec.listen, !remove);
      },
    });
  }

  // --- state and status ------------------------------------------------------------------------

  async restore(raw: unknown): Promise<void> {
    if (raw === undefined || raw === null) return;
    if (typeof raw !== 'object') {
      this.d.log.error('the links section of the state file is not an object; ignored');
      return;
    }
    const st = raw as Partial<Record<keyof LinksState, unknown>>;
    if (st.onions !== null && typeof st.onions === 'object') {
      for (const [k, v] of Object.entries(st.onions as Record<string, unknown>)) {
        if (v !== null && typeof v === 'object' && typeof (v as { serviceId?: unknown }).serviceId === 'string' && typeof (v as { key?: unknown }).key === 'string') {
          this.onionKeys[k] = { serviceId: (v as { serviceId: string }).serviceId, key: (v as { key: string }).key };
        }
      }
    }
    if (st.endpoints !== null && typeof st.endpoints === 'object') {
      for (const [k, v] of Object.entries(st.endpoints as Record<string, unknown>)) {
        try {
          if (typeof v === 'string') this.endpoints[checkPeerKey(k)] = endpointText(parseEndpoint(v));
        } catch {
          // Not an endpoint: forget it.
        }
      }
    }
    for (const s of Array.isArray(st.specs) ? st.specs : []) {
      try {
        await this.add(s, true);
      } catch (e) {
        // Kept as it was in the state file, listed as failed, and said: the admin fixes the cause (a port taken, a network gone) and removes it.
        const name = s !== null && typeof s === 'object' && typeof (s as { name?: unknown }).name === 'string' ? (s as { name: string }).name : null;
        this.failed.push({ raw: s, name, error: (e as Error).message });
        this.d.log.error({ err: (e as Error).message, link: s }, 'could not restore a link');
      }
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== null || this.closed || !this.failed.some((f) => f.name !== null)) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.retryFailed();
    }, this.retryMs);
    this.retryTimer.unref();
    this.retryMs = Math.min(this.retryMs * 2, 60_000);
  }

  private async retryFailed(): Promise<void> {
    for (const f of [...this.failed]) {
      if (this.closed) return;
      if (f.name === null || !this.failed.includes(f)) continue;
      try {
        await this.add(f.raw, true, true);
        const i = this.failed.indexOf(f);
        if (i >= 0) this.failed.splice(i, 1);
        this.d.log.info({ link: f.name }, 'a link that could not be restored is up now');
        this.d.save();
      } catch (e) {
        f.error = (e as Error).message;
      }
    }
    this.scheduleRetry();
  }

  snapshot(): LinksState {
    for (const l of this.links.values()) this.rememberEndpoint(l.peer, false);
    for (const a of this.agents.values()) this.rememberEndpoint(a.peer, false);
    // A failed link being retried may be up already: listed once.
    const failed = this.failed.filter((f) => f.name === null || !this.links.has(f.name));
    return { specs: [...[...this.links.values()].map((l) => l.spec), ...(failed.map((f) => f.raw) as LinkSpec[])], onions: this.onionKeys, endpoints: this.endpoints };
  }

  private endpointMultiaddr(peer: LinkPeer): string | null {
    const ep = peer.currentEndpoint();
    if (ep === null) return null;
    if (this.engine?.resolveSource(ep)?.carrier.kind === 'udp') {
      const u = this.udpEndpoint(ep);
      return u !== null ? endpointMultiaddr(u) : null;
    }
    const cfg = peer.cfg.endpoint;
    return cfg !== undefined ? endpointMultiaddr(cfg.text) : null;
  }

  private peerInfo(peer: LinkPeer): Omit<LinkInfo, 'name' | 'net' | 'kind' | 'listen' | 'macs'> {
    const engine = this.engine!;
    const now = engine.now();
    const c = peer.peer.counters;
    const drops: Record<string, number> = {};
    for (const r of DROP_REASONS) if (c.drops[r] > 0) drops[r] = c.drops[r];
    if (peer.unsent > 0) drops.unsent = peer.unsent;
    const lh = peer.peer.lastHandshake;
    return {
      peer: keyToBase64(peer.peer.publicKey),
      state: peer.state(now),
      error: null,
      endpoint: this.endpointMultiaddr(peer),
      configuredEndpoint: peer.cfg.endpoint !== undefined ? endpointMultiaddr(peer.cfg.endpoint.text) : null,
      lastHandshake: lh !== null ? new Date(Date.now() - (now - lh)).toISOString() : null,
      handshakes: c.handshakes,
      rx: { packets: c.rxPackets, bytes: c.rxBytes },
      tx: { packets: c.txPackets, bytes: c.txBytes },
      drops,
    };
  }

  private listenInfo(text: string | undefined): string | null {
    if (text === undefined) return null;
    const e = this.listeners.get(text);
    if (e?.listen.kind === 'onion') return e.onion !== null ? `/onion3/${e.onion}:${e.listen.port}` : null;
    return listenMultiaddr(parseListen(text));
  }

  private info(l: LinkEntry): LinkInfo {
    return {
      name: l.spec.name,
      net: l.spec.net,
      kind: 'link',
      ...this.peerInfo(l.peer),
      listen: this.listenInfo(l.spec.listen),
      macs: this.d.network(l.spec.net)?.sw.trunkMacs(l.member) ?? 0,
    };
  }

  /** A link that could not be restored, as far as its saved spec says. */
  private failedInfo(f: Links['failed'][number]): LinkInfo {
    const o = (f.raw !== null && typeof f.raw === 'object' ? f.raw : {}) as Record<string, unknown>;
    const text = (v: unknown): string | null => (typeof v === 'string' ? v : null);
    let configuredEndpoint: string | null = null;
    let listen: string | null = null;
    try {
      if (typeof o.endpoint === 'string') configuredEndpoint = endpointMultiaddr(parseEndpoint(o.endpoint));
    } catch {
      configuredEndpoint = null;
    }
    try {
      if (typeof o.listen === 'string') listen = listenMultiaddr(parseListen(o.listen));
    } catch {
      listen = null;
    }
    return {
      name: f.name ?? '?',
      net: text(o.net) ?? '',
      kind: 'link',
      peer: text(o.peer) ?? '',
      state: 'failed',
      error: f.error,
      endpoint: null,
      configuredEndpoint,
      listen,
      lastHandshake: null,
      handshakes: 0,
      rx: { packets: 0, bytes: 0 },
      tx: { packets: 0, bytes: 0 },
      drops: {},
      macs: 0,
    };
  }

  list(): LinksInfo {
    const engine = this.engine;
    const links: LinkInfo[] = [...this.links.values()].map((l) => this.info(l));
    for (const a of this.agents.values()) links.push({ name: a.vm, net: '', kind: 'agent', ...this.peerInfo(a.peer), listen: this.listenInfo(a.spec.listen), macs: 0 });
    for (const f of this.failed) if (f.name === null || !this.links.has(f.name)) links.push(this.failedInfo(f));
    const listeners: LinkListenerInfo[] = [...this.listeners.values()].map((e) => ({
      listen: this.listenInfo(e.text),
      text: e.text,
      status: e.carrier?.status() ?? 'closed',
      onion: e.onion !== null && e.listen.kind === 'onion' ? `${e.onion}.onion:${e.listen.port}` : null,
      error: e.error,
      users: [...e.owners],
    }));
    const drops: Record<string, number> = {};
    if (engine !== null) for (const r of DROP_REASONS) if (engine.device.counters.drops[r] > 0) drops[r] = engine.device.counters.drops[r];
    return {
      publicKey: fs.existsSync(this.keyFile) || engine !== null ? this.publicKey() : null,
      listeners,
      drops,
      cookieReplies: engine?.device.counters.cookieRepliesSent ?? 0,
      underLoad: engine?.device.underLoad ?? false,
      links,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    for (const l of this.links.values()) {
      this.rememberEndpoint(l.peer, false);
      await l.port.close();
    }
    await this.engine?.close();
  }
}
