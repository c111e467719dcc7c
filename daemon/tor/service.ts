/**
 * Tor as the daemon uses it: the manager (embedded or external Tor), per-VM isolation, the
 * .onion automap, named onion endpoints, onion services mvnet publishes for VMs, and discovery
 * of the onions available. VMs never see the control port: the daemon speaks to Tor for them.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { UserError, NotFoundError } from '../errors.js';
import { Automap } from './automap.js';
import { Isolation } from './isolation.js';
import { TorResolver } from './resolver.js';
import type { SocksEndpoint } from './socks-endpoint.js';
import type { TorConfig } from './config.js';
import type { TorAccess } from './access.js';
import { ONION_ID_RE } from './control.js';
import { prepareTorSocketDir, shareTorSocket } from './files.js';
import type { TorManagerLike } from './manager-like.js';
import type { TorState as TorManagerState } from './manager.js';

const ONION_NAME_RE = /^[a-z2-7]{56}\.onion$/;
const ALIAS_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export interface PublishedOnion {
  vm: string;
  port: number;
  onionPort: number;
  serviceId: string;
  persist: boolean;
  /** ED25519-V3 key (base64) for --persist; kept in the state file (0600), never printed or logged. */
  key?: string;
}

export interface TorState {
  aliases: Record<string, string>;
  published: PublishedOnion[];
}

export type OnionSource = 'tor' | 'hidden-service-dir' | 'alias' | 'published' | 'resolved';

export interface OnionEndpoint {
  address: string;
  source: OnionSource;
  /** Alias name, HiddenServiceDir path, publishing VM, or resolving VM. */
  detail: string;
  at?: string;
}

// Answers of the control API's tor.* and onion.* methods (daemon/control/api.ts re-exports them).

/** Tor's state as `daemon.status` and a Tor route's reply show it (phase, bootstrap, tor's warnings). */
export type TorSummary = TorManagerState;

/** `tor.status`: the manager's state, circuits built, and what mvnet uses Tor for. */
export interface TorStatus extends TorManagerState {
  circuits: number | null;
  vms: string[];
  published: number;
  aliases: number;
}

/** `tor.newnym`: the VMs that get new circuits. */
export interface TorNewnymResult {
  vms: string[];
}

/** `onion.add`. */
export interface OnionAliasInfo {
  name: string;
  address: string;
  resolvesAs: string;
}

/** `onion.remove`. */
export interface OnionAliasRemoved {
  name: string;
}

/** `onion.expose`. */
export interface OnionExposeInfo {
  vm: string;
  port: number;
  onionPort: number;
  address: string;
  persist: boolean;
}

/** `onion.unexpose`: the onion addresses no longer published. */
export interface OnionUnexposeResult {
  removed: string[];
}

/** `onion.discover`: what changed since the last discovery. */
export interface OnionDiscovery {
  added: OnionEndpoint[];
  removed: OnionEndpoint[];
  total: number;
}

export interface TorServiceDeps {
  cfg: TorConfig;
  log: Logger;
  manager: TorManagerLike;
  stateDir: string;
  /** Opens an onion connection into a VM (the TCP endpoint's active open). */
  openInto(vm: string, port: number, sock: Duplex): void;
  /** VMs whose routes use Tor. */
  torVms(): string[];
  /** Starts Tor if it is not running (stopped while unused): exposing or naming an onion needs it. */
  ensure?(): void;
  save(): void;
}

export class TorService {
  readonly isolation = new Isolation();
  readonly automap: Automap;
  readonly resolver: TorResolver;
  private aliases = new Map<string, string>();
  private readonly published = new Map<string, PublishedOnion & { server: net.Server | null; sockPath: string }>();
  private lastDiscovery = new Map<string, OnionEndpoint>();

  constructor(private readonly d: TorServiceDeps) {
    this.automap = new Automap(d.cfg.automap);
    this.resolver = new TorResolver({
      socks: () => this.socks(),
      creds: (vm) => this.isolation.creds(vm),
      automap: this.automap,
      alias: (name) => this.aliases.get(name),
      timeoutMs: 30_000,
    });
    d.manager.on('ready', () => void this.republish());
  }

  /** Tor's SOCKS endpoint while Tor is ready; null otherwise (everything Tor-routed fails closed). */
  socks(): SocksEndpoint | null {
    return this.d.manager.isReady() ? this.d.manager.socks() : null;
  }

  access(): TorAccess {
    return {
      socks: () => this.socks(),
      creds: (vm) => this.isolation.creds(vm),
      automap: this.automap,
      resolver: this.resolver,
      timeoutMs: 60_000,
      alive: () => this.alive(),
    };
  }

  /** A control-port round trip: a dead Tor fails it at once (its control socket is gone). */
  async alive(): Promise<boolean> {
    const c = this.d.manager.control();
    if (c === null || !this.d.manager.isReady()) return false;
    try {
      await Promise.race([c.getInfo(['version']), new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 2000).unref())]);
      return this.d.manager.isReady();
    } catch {
      return false;
    }
  }

  restore(st: Partial<TorState> | undefined): void {
    this.aliases = new Map(Object.entries(st?.aliases ?? {}).filter(([k, v]) => ALIAS_RE.test(k) && ONION_NAME_RE.test(v)));
    for (const p of st?.published ?? []) {
      if (p.persist && typeof p.key === 'string') this.published.set(p.serviceId, { ...p, server: null, sockPath: this.sockPath(p.serviceId) });
    }
  }

  snapshot(): TorState {
    return {
      aliases: Object.fromEntries(this.aliases),
      // Only --persist services survive a restart, with their key.
      published: [...this.published.values()].filter((p) => p.persist).map(({ server: _s, sockPath: _p, ...rest }) => rest),
    };
  }

  async status(): Promise<TorStatus> {
    const st = this.d.manager.state();
    let circuits: number | null = null;
    const c = this.d.manager.control();
    if (c !== null && this.d.manager.isReady()) {
      try {
        const info = await c.getInfo(['circuit-status']);
        circuits = (info['circuit-status'] ?? '').split('\n').filter((l) => / BUILT /.test(l)).length;
      } catch {
        circuits = null;
      }
    }
    return { ...st, circuits, vms: this.d.torVms(), published: this.published.size, aliases: this.aliases.size };
  }

  newnym(vm: string | null, all: boolean): TorNewnymResult {
    const vms = all ? this.d.torVms() : vm !== null ? [vm] : [];
    for (const v of vms) this.isolation.newnym(v);
    if (all) {
      const c = this.d.manager.control();
      void c?.signal('NEWNYM').catch((e: Error) => this.d.log.warn({ err: e.message }, 'SIGNAL NEWNYM failed'));
    }
    return { vms };
  }

  // --- named endpoints --------------------------------------------------------------------

  addAlias(name: unknown, address: unknown): OnionAliasInfo {
    if (typeof name !== 'string' || !ALIAS_RE.test(name)) throw new UserError(`invalid onion name ${JSON.stringify(name)}: one DNS label (a-z, 0-9, '-')`);
    const a = typeof address === 'string' ? address.toLowerCase() : '';
    if (!ONION_NAME_RE.test(a)) throw new UserError(`invalid onion address ${JSON.stringify(address)}: expected 56 base32 characters followed by .onion`);
    this.aliases.set(name, a);
    this.d.ensure?.();
    this.d.save();
    return { name, address: a, resolvesAs: `${name}.onion.mvnet` };
  }

  removeAlias(name: unknown): OnionAliasRemoved {
    if (typeof name !== 'string' || !this.aliases.delete(name)) throw new NotFoundError(`no onion named ${JSON.stringify(name)}`);
    this.d.save();
    return { name };
  }

  // --- publishing ---------------------------------------------------------------------------

  private sockPath(id: string): string {
    return path.join(this.d.stateDir, 'onions', `${id.slice(0, 16)}.sock`);
  }

  /** A local listener (unix socket) that Tor's onion service targets; each connection is opened into the VM. */
  private async listen(p: PublishedOnion & { server: net.Server | null; sockPath: string }): Promise<void> {
    if (p.server !== null) return;
    // Only root and tor's group get to the socket: it leads straight into the VM's port.
    const reach = this.d.manager.torReach();
    if (reach === 'world') this.d.log.warn('the external tor\'s group is unknown (no unix control socket, no debian-tor): onion sockets are open to every local user');
    await prepareTorSocketDir(this.d.stateDir, path.dirname(p.sockPath), reach);
    fs.rmSync(p.sockPath, { force: true });
    const server = net.createServer({ allowHalfOpen: true }, (sock) => {
      try {
        this.d.openInto(p.vm, p.port, sock);
      } catch (e) {
        this.d.log.warn({ vm: p.vm, onion: p.serviceId, err: (e as Error).message }, 'onion connection could not be opened into the VM');
        sock.destroy();
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: p.sockPath }, () => resolve());
    });
    await shareTorSocket(p.sockPath, reach);
    p.server = server;
  }

  /** Published onion services or named onions exist: Tor must keep running for them. */
  inUse(): boolean {
    return this.published.size > 0 || this.aliases.size > 0;
  }

  async expose(vm: string, port: number, onionPort: number, persist: boolean): Promise<OnionExposeInfo> {
    this.d.ensure?.();
    const c = this.d.manager.control();
    if (c === null || !this.d.manager.isReady()) throw new UserError('Tor is not ready; see mvnet tor status');
    for (const p of this.published.values()) {
      if (p.vm === vm && p.port === port && p.onionPort === onionPort) return { vm, port, onionPort, address: `${p.serviceId}.onion`, persist: p.persist };
    }
    const tmpPath = path.join(this.d.stateDir, 'onions', `pending-${process.pid}-${Date.now()}.sock`);
    const entry = { vm, port, onionPort, serviceId: '', persist, server: null as net.Server | null, sockPath: tmpPath };
    await this.listen(entry);
    let res;
    try {
      res = await c.addOnion({ key: 'NEW:ED25519-V3', ports: [{ virt: onionPort, target: `unix:${tmpPath}` }], flags: persist ? ['Detach'] : ['Detach', 'DiscardPK'] });
    } catch (e) {
      entry.server?.close();
      throw new UserError(`ADD_ONION failed: ${(e as Error).message}`);
    }
    entry.serviceId = res.serviceId;
    if (persist && res.privateKey !== undefined) (entry as PublishedOnion).key = res.privateKey.replace(/^ED25519-V3:/, '');
    this.published.set(res.serviceId, entry);
    this.d.save();
    this.d.log.info({ vm, port, onionPort, onion: `${res.serviceId}.onion`, persist }, 'onion service published');
    return { vm, port, onionPort, address: `${res.serviceId}.onion`, persist };
  }

  async unexpose(vm: string, port: number | undefined): Promise<OnionUnexposeResult> {
    const removed: string[] = [];
    for (const [id, p] of [...this.published]) {
      if (p.vm !== vm || (port !== undefined && p.port !== port)) continue;
      this.published.delete(id);
      p.server?.close();
      fs.rmSync(p.sockPath, { force: true });
      try {
        await this.d.manager.control()?.delOnion(id);
      } catch (e) {
        this.d.log.warn({ onion: id, err: (e as Error).message }, 'DEL_ONION failed');
      }
      removed.push(`${id}.onion`);
    }
    if (removed.length === 0) throw new NotFoundError(`${vm} publishes no onion service${port !== undefined ? ` for port ${port}` : ''}`);
    this.d.save();
    return { removed };
  }

  /** After Tor (re)starts: persisted services are published again with their keys. */
  private async republish(): Promise<void> {
    const c = this.d.manager.control();
    if (c === null) return;
    for (const p of this.published.values()) {
      try {
        await this.listen(p);
        if (p.key === undefined) continue;
        await c.addOnion({ key: `ED25519-V3:${p.key}`, ports: [{ virt: p.onionPort, target: `unix:${p.sockPath}` }], flags: ['Detach'] });
      } catch (e) {
        // 'Onion address collision' means it is still published (Detach survives control connections).
        if (!/collision/i.test((e as Error).message)) this.d.log.warn({ onion: p.serviceId, err: (e as Error).message }, 'could not republish an onion service');
      }
    }
  }

  // --- discovery ----------------------------------------------------------------------------

  private async collect(): Promise<Map<string, OnionEndpoint>> {
    const out = new Map<string, OnionEndpoint>();
    const add = (e: OnionEndpoint): void => {
      out.set(`${e.source}|${e.address}|${e.detail}`, e);
    };
    const c = this.d.manager.control();
    if (c !== null && this.d.manager.isReady()) {
      for (const key of ['onions/current', 'onions/detached']) {
        try {
          const info = await c.getInfo([key]);
          for (const id of (info[key] ?? '').split(/\s+/)) if (ONION_ID_RE.test(id)) add({ address: `${id}.onion`, source: 'tor', detail: key });
        } catch {
          // an older Tor or an empty list
        }
      }
    }
    for (const dir of this.d.cfg.hiddenServiceDirs) {
      for (const f of hostnameFiles(dir)) {
        try {
          const host = fs.readFileSync(f, 'utf8').trim().toLowerCase();
          if (ONION_NAME_RE.test(host)) add({ address: host, source: 'hidden-service-dir', detail: path.dirname(f) });
        } catch {
          // unreadable: skip
        }
      }
    }
    for (const [name, a] of this.aliases) add({ address: a, source: 'alias', detail: `${name}.onion.mvnet` });
    for (const p of this.published.values()) add({ address: `${p.serviceId}.onion`, source: 'published', detail: `${p.vm}:${p.port} as port ${p.onionPort}${p.persist ? ' (persistent)' : ''}` });
    for (const r of this.automap.resolutions()) add({ address: r.onion, source: 'resolved', detail: r.vm, at: new Date(r.at).toISOString() });
    return out;
  }

  async list(): Promise<OnionEndpoint[]> {
    return [...(await this.collect()).values()];
  }

  async discover(): Promise<OnionDiscovery> {
    const now = await this.collect();
    const added = [...now].filter(([k]) => !this.lastDiscovery.has(k)).map(([, v]) => v);
    const removed = [...this.lastDiscovery].filter(([k]) => !now.has(k)).map(([, v]) => v);
    this.lastDiscovery = now;
    return { added, removed, total: now.size };
  }

  async close(): Promise<void> {
    for (const p of this.published.values()) p.server?.close();
    await this.d.manager.stop();
  }
}

/** `<dir>/hostname` and `<dir>/*\/hostname`. */
function hostnameFiles(dir: string): string[] {
  const out: string[] = [];
  try {
    if (fs.existsSync(path.join(dir, 'hostname'))) out.push(path.join(dir, 'hostname'));
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory() && fs.existsSync(path.join(dir, e.name, 'hostname'))) out.push(path.join(dir, e.name, 'hostname'));
    }
  } catch {
    // a missing directory lists nothing
  }
  return out;
}
