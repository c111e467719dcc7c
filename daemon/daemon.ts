/**
 * The daemon's core: networks, attachments and their persistence. Every change is applied,
 * then saved, then acknowledged, so a caller that got an answer knows the change is live and
 * durable. Control handlers call in here; nothing here knows about JSON-RPC.
 */
import { setDefaultCongestion } from './endpoint/tcp/index.js';
import type { Logger } from 'pino';
import type { Port, PortSpec, PortStats, PortStatus } from '../plugins/types.js';
import { Registry } from '../plugins/registry.js';
import { builtinDrivers } from '../plugins/builtin.js';
import { Network, type Member } from './switch/network.js';
import { L3Adapter } from './switch/l3-adapter.js';
import { derivedMac } from './switch/mac.js';
import { macToString, parseMacOrNull } from './wire/mac.js';
import { ipv4TextToNumber, parseIpv4CidrText } from './wire/ip-text.js';
import type { NetworkSpec, StateFile, VmSpec } from './state/model.js';
import { STATE_VERSION } from './state/model.js';
import { StateStore } from './state/store.js';
import { UserError, faults, NotFoundError, ConflictError } from './errors.js';
import { checkNetworkSpec, checkVmSpec, checkName, checkVmName, asObject, checkRoute, checkTeeSpec } from './state/validate.js';
import { describeRoute, DEFAULT_ROUTE, usesTor, type Route } from './routes/route.js';
import { NetRouter, type RouterVm } from './router/net-router.js';
import { UpstreamResolver } from './gateway/dns-upstream.js';
import { DEFAULTS, parseHostPort, socketGroupId, type DaemonConfig } from './config.js';
import { PingEgress } from './egress/ping.js';
import type { Duplex } from 'node:stream';
import { TorManager } from './tor/manager.js';
import { TorService, type TorState, type TorSummary } from './tor/service.js';
import { Forwards, checkForwardSpec } from './forwards/forwards.js';
import { FdInbox } from '../plugins/fd/inbox.js';
import { CaptureHub } from './capture/hub.js';
import { Tees, type TeeStatus } from './capture/tees.js';
import { TeeRing } from '../plugins/common/tee-ring.js';
import { withTee } from '../plugins/common/tee-port.js';
import { packageVersion } from './version.js';
import { Links } from './mesh/links.js';
import { DaemonEvents } from './events/daemon-events.js';
import { PolicyLog } from './events/policy-log.js';
import { DesktopNotifier, notifyAddress } from './events/notify.js';
import { Metrics, type MetricsSnapshot } from './metrics/metrics.js';
import { MetricsServer } from './metrics/server.js';
import { parseMetricsListen } from './metrics/listen.js';
import { netView, portView, routeView, sourceView } from './control/views.js';
export type { AttachManyFailure, AttachManyResult } from './control/api.js';
import type { LinkInfo, LinksInfo, CaptureInfo, TeeInfo, TeeRemoved, DaemonErrors, ForwardInfo, ForwardSpec, NetInfo, RouteInfo, RouteSetInfo, StatusInfo, VmInfo, AttachManyFailure, AttachManyResult } from './control/api.js';

interface NetEntry {
  spec: NetworkSpec;
  sw: Network;
  router: NetRouter;
}

/** Most VMs one vm.attachMany takes (the control socket's 1 MiB line bounds it too). */
export const MAX_ATTACH_MANY = 10_000;

interface VmEntry {
  spec: VmSpec;
  port: Port | null;
  member: Member | null;
  /** Why the port is not open (restore failed); retried in the background. */
  error: string | null;
  retry: NodeJS.Timeout | null;
  retryMs: number;
}

const RESTORE_RETRY_MAX_MS = 30_000;

function mergeDrops(a: PortStats, b: Member | null): PortStats {
  if (b === null) return a;
  const drops = { ...a.drops };
  for (const [k, v] of Object.entries(b.drops)) drops[k as keyof typeof drops] = (drops[k as keyof typeof drops] ?? 0) + (v ?? 0);
  return { ...a, drops };
}

const ZERO_STATS: PortStats = { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {} };

/** Two attachments must never share a device or a socket path (a plugin's: what its driver's key() says). */
function portKey(p: PortSpec, registry: Registry): string | undefined {
  switch (p.kind) {
    case 'plugin': {
      const k = registry.pluginDriver(p.driver)?.key(p.options);
      return k !== undefined ? `plugin:${p.driver}:${k}` : undefined;
    }
    case 'tap':
    case 'tun':
    case 'iface':
      return `dev:${p.netns ?? ''}:${p.ifname}`;
    case 'unix':
    case 'unix-listen':
    case 'dgram':
    case 'vhost-user':
      return `path:${p.path}`;
    case 'fd':
      return p.token !== undefined ? `fd:${p.token}` : `path:${p.rx}`;
    case 'agent':
      return `agent:${p.peer}`;
  }
}

export class Daemon {
  private readonly nets = new Map<string, NetEntry>();
  private readonly vms = new Map<string, VmEntry>();
  private readonly routes = new Map<string, Route>();
  private closing = false;

  private readonly upstreamDns: UpstreamResolver;
  readonly forwards: Forwards;
  private readonly ping = new PingEgress({});
  /** Descriptors passed by callers for `vm attach --fd`; main.ts binds its socket. */
  readonly fdInbox: FdInbox;
  readonly tor: TorService;
  private readonly torManager: TorManager;
  /** Captures and tees: every port, network and router is registered with it. */
  readonly capture: CaptureHub;
  readonly tees: Tees;
  /** Encrypted links to other routers and agents (daemon/mesh). */
  readonly links: Links;
  private torStarted = false;
  private torHooked = false;
  /** A stop of an unused Tor in progress: a start waits for it. */
  private torStopping: Promise<void> | null = null;
  private torIdleTimer: NodeJS.Timeout | null = null;
  /** Since when nothing needs the running Tor (tor.stopWhenUnused). */
  private torIdleSince: number | null = null;
  private savedLeases: Record<string, unknown> = {};
  /** Saved tees that are not valid: kept in the state file as they were. */
  private failedTees: unknown[] = [];
  private saveQueued = false;
  /** Group of the control socket; VM sockets get it too. */
  private readonly socketGid: number | undefined;
  /** Events (`events.follow`, `mvnet events`) and what watches for them. */
  readonly events: DaemonEvents;
  private readonly policyLog: PolicyLog;
  private readonly metrics: Metrics;
  private metricsServer: MetricsServer | null = null;
  private notifier: DesktopNotifier | null = null;
  private offNotifier: () => void = () => {};
  /** The metrics and notices reloads in progress (they are applied one at a time). */
  private reloading: Promise<void> = Promise.resolve();

  constructor(
    private readonly log: Logger,
    private readonly store: StateStore,
    private cfg: DaemonConfig = DEFAULTS,
    /** Port drivers (built-in and the config's plugins); main.ts loads the plugins into it. */
    readonly registry: Registry = new Registry(builtinDrivers),
  ) {
    this.socketGid = socketGroupId(cfg.socketGroup);
    setDefaultCongestion(cfg.tcp.congestion);
    this.policyLog = new PolicyLog(log.child({ component: 'policy' }));
    this.events = new DaemonEvents(
      {
        vms: () =>
          [...this.vms.values()].map((e) => {
            const st = e.port !== null ? e.port.status() : { state: 'down' as const, detail: e.error ?? 'not open' };
            return { name: e.spec.name, state: st.state, detail: st.detail, counters: this.nets.get(e.spec.net)?.router.endpoint.flowCount(e.spec.name) ?? null };
          }),
        links: () => this.links.list().links.map((l) => ({ name: l.name, kind: l.kind, state: l.state })),
        captures: () => this.capture.list().map((c) => ({ id: c.id, ...(c.name !== undefined ? { name: c.name } : {}), dropped: c.counters.dropped })),
        torVms: () => [...this.routes].filter(([vm, r]) => usesTor(r) && this.vms.has(vm)).map(([vm]) => vm),
      },
      { onListenerError: (err) => log.error({ err }, 'an event listener failed (a bug)') },
    );
    this.metrics = new Metrics(() => this.metricsSnapshot());
    this.capture = new CaptureHub({ log, userappl: `mvnet ${packageVersion()}`, newRing: (bytes, snaplen) => new TeeRing(bytes, snaplen) });
    this.tees = new Tees(this.capture, { log, captureDir: cfg.captureDir, socketGid: this.socketGid });
    const up = cfg.dns.upstream !== undefined ? parseHostPort(cfg.dns.upstream, 53) : null;
    this.upstreamDns = new UpstreamResolver(up !== null ? { server: up } : {});
    this.fdInbox = new FdInbox({ log, ttlMs: cfg.limits.fdTokenMs });
    this.forwards = new Forwards(log, (vm, port, sock) => this.openInto(vm, port, sock));
    this.torManager = new TorManager({ config: cfg.tor, stateDir: store.dir, logger: log });
    this.tor = new TorService({
      cfg: cfg.tor,
      log,
      manager: this.torManager,
      stateDir: store.dir,
      openInto: (vm, port, sock) => this.openInto(vm, port, sock),
      torVms: () => [...this.routes].filter(([, r]) => usesTor(r)).map(([vm]) => vm),
      save: () => this.saveSoon(),
      ensure: () => this.ensureTor(),
    });
    this.links = new Links({
      log,
      stateDir: store.dir,
      save: () => this.saveSoon(),
      network: (name) => {
        const n = this.nets.get(name);
        return n !== undefined ? { sw: n.sw, mtu: n.spec.mtu } : undefined;
      },
      capture: { portAdded: (name, net, port) => this.capture.portAdded(name, net, port), portRemoved: (name) => this.capture.portRemoved(name) },
      tor: {
        ensure: () => this.ensureTor(),
        socks: () => this.torManager.socks(),
        reach: () => this.torManager.torReach(),
        connected: () => this.torManager.control() !== null,
        publish: async (unixPath, virtPort, key) => {
          const serviceId = await this.torManager.addOnion({ ports: [{ virt: virtPort, target: `unix:${unixPath}` }], ...(key !== undefined ? { key: key as `ED25519-V3:${string}` } : {}) });
          const k = this.torManager.onionKey(serviceId);
          if (k === undefined) throw new Error('tor kept no key for the onion service');
          return { serviceId, key: k };
        },
        unpublish: (id) => this.torManager.delOnion(id),
        onConnected: (cb) => this.torManager.on('ready', cb),
      },
      ...(this.socketGid !== undefined ? { socketGid: this.socketGid } : {}),
    });
  }

  private openInto(vm: string, port: number, sock: Duplex): void {
    const e = this.vms.get(vm);
    if (e === undefined || e.member === null) throw new Error(`${vm} is not attached`);
    this.nets.get(e.spec.net)!.router.openInto(vm, port, sock);
  }

  /** Starts Tor when the config asks for it, or when something needs it (again). */
  private ensureTor(): void {
    this.torIdleSince = null;
    if (this.torStarted || this.closing) return;
    this.torStarted = true;
    if (!this.torHooked) {
      this.torHooked = true;
      this.torManager.on('ready', () => {
        this.log.info('Tor is ready');
        this.events.torReady();
      });
      this.torManager.on('warning', (message: string) => this.events.torWarning(message));
      this.torManager.on('down', (why: unknown) => {
        // Streams through a dead Tor are reset, never left to look finished.
        let reset = 0;
        for (const n of this.nets.values()) reset += n.router.endpoint.resetTag('tor');
        // Stopped while unused (tor.stopWhenUnused) or with the daemon: no VM fails closed.
        if (this.torStarted && !this.closing) this.log.warn({ why, reset }, 'Tor is down; Tor-routed VMs fail closed');
        // Tor stopping with the daemon is not a route failing closed.
        if (!this.closing) this.events.torDown(typeof why === 'string' ? why : 'unknown');
      });
    }
    const start = (): void => {
      if (!this.torStarted) return;
      this.events.torStarting();
      this.torManager.start().catch((e: Error) => this.log.error({ err: e.message }, 'Tor did not start'));
    };
    if (this.torStopping !== null) void this.torStopping.then(start);
    else start();
    if (this.cfg.tor.stopWhenUnused && this.torIdleTimer === null) {
      // A poll, not hooks in every place that stops using Tor (routes, onions, names, links).
      const tick = Math.max(100, Math.min(5_000, (this.cfg.tor.idleStopSec * 1000) / 4));
      this.torIdleTimer = setInterval(() => this.stopTorIfUnused(), tick);
      this.torIdleTimer.unref();
    }
  }

  /** Something needs Tor: a Tor route, a published onion or an onion name, a link over onions. */
  private torNeeded(): boolean {
    if ([...this.routes.values()].some(usesTor) || this.tor.inUse()) return true;
    const l = this.links.list();
    return l.listeners.some((x) => x.text.startsWith('onion')) || l.links.some((x) => /\.onion|\/onion3\//.test(x.endpoint ?? ''));
  }

  /** tor.stopWhenUnused: stops Tor once nothing has needed it for tor.idleStopSec. */
  private stopTorIfUnused(): void {
    if (!this.torStarted || this.closing || this.torStopping !== null) return;
    if (this.torNeeded()) {
      this.torIdleSince = null;
      return;
    }
    const now = Date.now();
    this.torIdleSince ??= now;
    if (now - this.torIdleSince < this.cfg.tor.idleStopSec * 1000) return;
    this.torStarted = false;
    this.torIdleSince = null;
    this.log.info({ idleStopSec: this.cfg.tor.idleStopSec }, 'stopping Tor: nothing needs it (tor.stopWhenUnused)');
    this.torStopping = this.torManager
      .stop(`stopped: nothing needed Tor for ${this.cfg.tor.idleStopSec} s (tor.stopWhenUnused); it starts again when something does`)
      .catch((e: Error) => this.log.error({ err: e.message }, 'stopping the unused Tor failed'))
      .finally(() => {
        this.torStopping = null;
      });
  }

  /** Tor's state for replies; null while Tor was never started. */
  private torSummary(): TorSummary | null {
    return this.torHooked ? this.torManager.state() : null;
  }

  /** Coalesces saves asked for by background changes (leases, onion names) into one per tick. */
  private saveSoon(): void {
    if (this.saveQueued) return;
    this.saveQueued = true;
    queueMicrotask(() => {
      this.saveQueued = false;
      this.save().catch((err: Error) => this.log.error({ err: err.message }, 'saving state failed'));
    });
  }

  async addForward(params: unknown): Promise<ForwardInfo> {
    const spec = checkForwardSpec(params);
    if (!this.vms.has(spec.vm)) throw new NotFoundError(`no VM named ${spec.vm} is attached`);
    const info = await this.forwards.add(spec);
    try {
      await this.save();
    } catch (e) {
      await this.forwards.remove({ host: `${spec.host.includes(':') ? `[${spec.host}]` : spec.host}:${spec.port}` });
      throw e;
    }
    return info;
  }

  async removeForward(params: unknown): Promise<ForwardSpec> {
    const spec = await this.forwards.remove(params);
    await this.save();
    return spec;
  }

  /** Re-creates networks and re-attaches VMs from the saved state. A VM whose device can't be opened yet stays listed as down and is retried. */
  async restore(): Promise<void> {
    // First: a metrics address that cannot be listened on stops the start before any device is touched.
    await this.applyObservability(this.cfg);
    const st = this.store.load();
    for (const [vm, raw] of Object.entries(st.routes)) {
      try {
        this.routes.set(checkName(vm, 'VM'), checkRoute(raw));
      } catch (e) {
        // Fail closed: an unreadable route is no route.
        this.log.error({ err: (e as Error).message, vm }, 'invalid route in the state file; using none');
      }
    }
    for (const raw of st.networks) {
      try {
        const spec = checkNetworkSpec(raw, true);
        try {
          checkNetworkSpec(raw);
        } catch (e) {
          this.log.warn({ network: spec.name, err: (e as Error).message }, 'a saved network would be refused today; kept as it was');
        }
        this.addNetwork(spec);
      } catch (e) {
        this.log.error({ err: (e as Error).message, network: raw }, 'skipping an invalid network in the state file');
      }
    }
    // Links before VMs: agent ports share their listeners, and onion keys must be known first.
    await this.links.restore(st.links);
    const specs = new Map([...this.nets].map(([k, v]) => [k, v.spec]));
    for (const raw of st.vms) {
      let spec: VmSpec;
      try {
        spec = checkVmSpec(raw, specs, { fromState: true, plugins: this.registry });
      } catch (e) {
        this.log.error({ err: (e as Error).message, vm: raw }, 'skipping an invalid attachment in the state file');
        continue;
      }
      const entry: VmEntry = { spec, port: null, member: null, error: null, retry: null, retryMs: 1000 };
      this.vms.set(spec.name, entry);
      await this.open(entry, true);
    }
    for (const raw of st.forwards ?? []) {
      try {
        await this.forwards.add(checkForwardSpec(raw), true);
      } catch (e) {
        this.log.error({ err: (e as Error).message, forward: raw }, 'skipping an invalid forward in the state file');
      }
    }
    for (const raw of st.tees ?? []) {
      try {
        // A tee whose output cannot be opened now (a path that became a symlink) is kept, in the error state.
        await this.tees.add(checkTeeSpec(raw, { captureDir: this.cfg.captureDir, vmSocketDir: this.cfg.vmSocketDir }), true);
      } catch (e) {
        // Not a tee this daemon understands: kept in the state file as it was, and said so.
        this.failedTees.push(raw);
        this.log.error({ err: (e as Error).message, tee: raw }, 'skipping an invalid tee in the state file');
      }
    }
    this.tor.restore(st.tor as Partial<TorState> | undefined);
    if (this.cfg.torConfigured || [...this.routes.values()].some(usesTor)) this.ensureTor();
    this.savedLeases = st.leases ?? {};
    for (const [name, snap] of Object.entries(this.savedLeases)) {
      try {
        this.nets.get(name)?.router.restoreLeases(snap);
      } catch (e) {
        this.log.warn({ network: name, err: (e as Error).message }, 'could not restore DHCP leases');
      }
    }
    this.log.info({ networks: this.nets.size, vms: this.vms.size }, 'state restored');
    this.events.start();
  }

  private addNetwork(spec: NetworkSpec): NetEntry {
    const sw = new Network({
      name: spec.name,
      mtu: spec.mtu,
      gatewayMac: derivedMac(`gateway/${spec.name}`),
      clock: () => performance.now(),
      onMacLearned: (m) => this.macLearned(m),
      onPolicyDrop: (vm, reason, dst) => this.policyLog.record({ vm, proto: 'frame', dst: macToString(dst), reason, action: 'dropped' }),
    });
    const router = new NetRouter({
      spec,
      network: sw,
      log: this.log.child({ network: spec.name }),
      vm: (name) => this.routerVm(name, spec.name),
      vmByMac: (mac) => {
        for (const v of this.vms.values()) if (v.spec.net === spec.name && v.member?.mac === mac) return this.routerVm(v.spec.name, spec.name);
        return undefined;
      },
      routeOf: (vm) => this.routeOf(vm),
      viaClientsOf: (name) => {
        const out: RouterVm[] = [];
        for (const [vm, r] of this.routes) {
          if (r.kind !== 'via' || r.vm !== name) continue;
          const rv = this.routerVm(vm, spec.name);
          if (rv !== undefined) out.push(rv);
        }
        return out;
      },
      upstreamDns: this.upstreamDns,
      direct: { ...this.cfg.direct },
      limits: this.cfg.limits,
      ping: this.ping,
      tor: this.tor.access(),
      onLeases: () => this.saveSoon(),
      onPolicy: (d) => this.policyLog.record(d),
    });
    sw.setGateway(router);
    const e = { spec, sw, router };
    this.nets.set(spec.name, e);
    this.capture.netAdded(spec.name, sw, router);
    return e;
  }

  private routerVm(name: string, net: string): RouterVm | undefined {
    const e = this.vms.get(name);
    if (e === undefined || e.spec.net !== net) return undefined;
    return { name, mac: e.member?.mac ?? null, ip: e.spec.ip !== undefined ? ipv4TextToNumber(e.spec.ip) : null };
  }

  /**
   * Static leases of a network: MAC -> address, for VMs attached with --ip. `opening` is a VM
   * being attached that is not in `this.vms` yet (it is added only once its port is open).
   */
  private reservations(net: string, opening?: VmEntry): Map<number, number> {
    const m = new Map<number, number>();
    const entries = opening !== undefined && !this.vms.has(opening.spec.name) ? [...this.vms.values(), opening] : this.vms.values();
    for (const v of entries) {
      if (v.spec.net === net && v.spec.ip !== undefined && v.member?.mac != null) m.set(v.member.mac, ipv4TextToNumber(v.spec.ip));
    }
    return m;
  }


  private macLearned(m: Member): void {
    const e = this.vms.get(m.vm);
    if (e === undefined || m.mac === null) return;
    e.spec.learnedMac = macToString(m.mac);
    this.nets.get(e.spec.net)?.router.refreshReservations(this.reservations(e.spec.net));
    this.log.info({ vm: m.vm, mac: e.spec.learnedMac }, 'learned the VM MAC; it is fixed from now on');
    this.save().catch((err: Error) => this.log.error({ err: err.message }, 'saving state failed'));
  }

  /** Opens the VM's port and puts it on its network. On restore a failure is kept and retried. */
  private async open(entry: VmEntry, restoring: boolean): Promise<void> {
    const { spec } = entry;
    const net = this.nets.get(spec.net);
    if (net === undefined) throw new NotFoundError(`no network named ${spec.net}`);
    const portSpec: PortSpec = spec.port.kind === 'tap' && spec.mac !== undefined ? { ...spec.port, mac: spec.mac } : spec.port;
    let port: Port;
    try {
      port = portSpec.kind === 'agent' ? await this.links.openAgent(spec.name, portSpec, net.spec.mtu) : await this.registry.openPort(portSpec, {
        log: this.log.child({ vm: spec.name }),
        mtu: net.spec.mtu,
        restoring,
        ...(restoring && spec.device !== undefined ? { owned: spec.device } : {}),
        ...(this.socketGid !== undefined ? { socketGid: this.socketGid } : {}),
        takeFd: (t) => this.fdInbox.take(t),
      });
    } catch (e) {
      const msg = (e as Error).message;
      if (!restoring) throw new UserError(`cannot attach ${spec.name}: ${msg}`);
      entry.error = msg;
      this.log.warn({ vm: spec.name, err: msg }, 're-attach failed; retrying');
      this.scheduleRetry(entry);
      return;
    }
    // Every port can be captured: teed in native code where it can, else around send()/onFrames().
    port = withTee(port);
    const teed = port;
    const owned = port.owned;
    if (port.layer === 3) {
      const subnet = parseIpv4CidrText(net.spec.subnet);
      if (!subnet.ok) throw new UserError(`network ${net.spec.name} has an invalid subnet ${net.spec.subnet}`);
      port = new L3Adapter(port, {
        mac: derivedMac(`tun/${spec.net}/${spec.name}`),
        ip: spec.ip !== undefined ? ipv4TextToNumber(spec.ip) : null,
        subnet: { network: subnet.value.network, prefix: subnet.value.prefix },
        gatewayIp: ipv4TextToNumber(net.spec.gateway),
        gatewayMac: net.sw.gatewayMac,
        clock: () => performance.now(),
      });
    }
    const fixed = spec.mac ?? spec.learnedMac;
    let mac = fixed !== undefined ? parseMacOrNull(fixed) : null;
    if (port instanceof L3Adapter) mac = port.mac;
    try {
      entry.member = net.sw.attach(spec.name, port, mac);
    } catch (e) {
      await port.close({ remove: !restoring });
      throw new UserError(`cannot attach ${spec.name}: ${(e as Error).message}`);
    }
    entry.port = port;
    entry.error = null;
    // Saved with the attachment so a detach after restarts still knows whose device it is.
    if (owned !== undefined && JSON.stringify(owned) !== JSON.stringify(spec.device)) {
      spec.device = owned;
      if (restoring) this.saveSoon();
    }
    this.capture.portAdded(spec.name, spec.net, teed);
    net.router.vmAttached(spec.name, spec.ip !== undefined ? ipv4TextToNumber(spec.ip) : null);
    net.router.refreshReservations(this.reservations(spec.net, entry));
    this.log.info({ vm: spec.name, net: spec.net, port: port.name, kind: port.kind }, restoring ? 'VM re-attached' : 'VM attached');
    this.events.vmAttached(spec.name, spec.net, port.name, port.kind, port.status(), usesTor(this.routeOf(spec.name)));
  }

  private scheduleRetry(entry: VmEntry): void {
    if (this.closing || entry.spec.port.kind === 'fd') return;
    entry.retry = setTimeout(() => {
      entry.retry = null;
      if (this.vms.get(entry.spec.name) !== entry || entry.port !== null) return;
      void this.open(entry, true);
    }, entry.retryMs);
    entry.retry.unref();
    entry.retryMs = Math.min(entry.retryMs * 2, RESTORE_RETRY_MAX_MS);
  }

  private snapshot(): StateFile {
    return {
      version: STATE_VERSION,
      networks: [...this.nets.values()].map((n) => n.spec),
      vms: [...this.vms.values()].map((v) => v.spec),
      routes: Object.fromEntries(this.routes),
      leases: Object.fromEntries([...this.nets].map(([n, e]) => [n, e.router.leases()])),
      forwards: this.forwards.specs(),
      tor: this.tor.snapshot(),
      tees: [...this.tees.specs(), ...this.failedTees],
      links: this.links.snapshot(),
    };
  }

  private save(): Promise<void> {
    return this.store.save(this.snapshot());
  }

  async createNetwork(params: unknown): Promise<NetInfo> {
    const spec = checkNetworkSpec(params);
    if (this.nets.has(spec.name)) throw new ConflictError(`network ${spec.name} already exists`);
    const e = this.addNetwork(spec);
    try {
      await this.save();
    } catch (err) {
      this.nets.delete(spec.name);
      e.sw.close();
      throw err;
    }
    this.log.info({ network: spec }, 'network created');
    return this.netInfo(e);
  }

  async deleteNetwork(name: unknown, force: boolean): Promise<{ deleted: string; detached: string[] }> {
    const n = checkName(name, 'network');
    const e = this.nets.get(n);
    if (e === undefined) throw new NotFoundError(`no network named ${n}`);
    const attached = [...this.vms.values()].filter((v) => v.spec.net === n).map((v) => v.spec.name);
    if (attached.length > 0 && !force) {
      throw new ConflictError(`network ${n} has attached VMs (${attached.join(', ')}); detach them or use --force`);
    }
    const links = this.links.onNetwork(n);
    if (links.length > 0 && !force) throw new ConflictError(`network ${n} has links (${links.join(', ')}); remove them or use --force`);
    for (const vm of attached) await this.detachEntry(vm);
    for (const l of links) await this.links.remove(l);
    this.capture.netRemoved(n);
    this.nets.delete(n);
    e.sw.close();
    e.router.close();
    await this.save();
    this.log.info({ network: n, detached: attached }, 'network deleted');
    return { deleted: n, detached: attached };
  }

  async attach(params: unknown): Promise<VmInfo> {
    try {
      return await this.attachVm(params);
    } catch (e) {
      this.discardFdToken(params);
      throw e;
    }
  }

  /** A refused attach must not leave the caller's passed descriptor open until it expires. */
  private discardFdToken(params: unknown): void {
    const port = (params as { port?: { token?: unknown } } | null)?.port;
    if (typeof port?.token === 'string') this.fdInbox.discard(port.token);
  }

  /**
   * Attaches many VMs in one call with ONE state write (a write per VM makes 1,000 attaches
   * O(n²) in bytes written, each with its fsyncs). Each spec is checked and opened in order as
   * `vm.attach` would; a failure is reported for its VM and the rest go on. Answers once every
   * attached VM is saved: if that write fails, the ones attached here are detached again and the
   * call fails, so an acknowledged attach is always on disk.
   */
  async attachMany(params: unknown): Promise<AttachManyResult> {
    const o = asObject(params, 'params');
    if (!Array.isArray(o.vms)) throw new UserError('params.vms must be a list of vm.attach params');
    if (o.vms.length > MAX_ATTACH_MANY) throw new UserError(`params.vms: at most ${MAX_ATTACH_MANY} VMs per call (got ${o.vms.length})`);
    const attached: VmInfo[] = [];
    const failed: AttachManyFailure[] = [];
    for (let i = 0; i < o.vms.length; i++) {
      const p: unknown = o.vms[i];
      try {
        attached.push(await this.attachVm(p, false));
      } catch (e) {
        this.discardFdToken(p);
        const name = (p as { name?: unknown } | null)?.name;
        failed.push({ index: i, name: typeof name === 'string' ? name : null, error: (e as Error).message, code: e instanceof UserError ? e.code : null });
      }
    }
    if (attached.length > 0) {
      try {
        await this.save();
      } catch (err) {
        for (const v of attached) await this.detachEntry(v.name);
        throw err;
      }
    }
    return { attached, failed };
  }

  private async attachVm(params: unknown, save = true): Promise<VmInfo> {
    const spec = checkVmSpec(params, new Map([...this.nets].map(([k, v]) => [k, v.spec])), {
      ...(this.cfg.vmSocketDir !== undefined ? { vmSocketDir: this.cfg.vmSocketDir } : {}),
      freeIp: (net, first, last) => this.freeIp(net, first, last),
      plugins: this.registry,
    });
    if (this.vms.has(spec.name)) throw new ConflictError(`VM ${spec.name} is already attached (to ${this.vms.get(spec.name)!.spec.net}); detach it first`);
    const key = portKey(spec.port, this.registry);
    for (const v of this.vms.values()) {
      if (key !== undefined && portKey(v.spec.port, this.registry) === key) throw new ConflictError(`that device or socket is already used by VM ${v.spec.name}`);
    }
    if (spec.mac !== undefined) {
      for (const v of this.vms.values()) {
        if (v.spec.net === spec.net && (v.spec.mac ?? v.spec.learnedMac) === spec.mac) throw new ConflictError(`MAC ${spec.mac} is already used by VM ${v.spec.name} on ${spec.net}`);
      }
    }
    if (spec.ip !== undefined) {
      for (const v of this.vms.values()) {
        if (v.spec.net === spec.net && v.spec.ip === spec.ip) throw new ConflictError(`ip ${spec.ip} is already used by VM ${v.spec.name} on ${spec.net}`);
      }
    }
    const entry: VmEntry = { spec, port: null, member: null, error: null, retry: null, retryMs: 1000 };
    await this.open(entry, false);
    this.vms.set(spec.name, entry);
    if (!save) return this.vmInfo(entry);
    try {
      await this.save();
    } catch (err) {
      await this.detachEntry(spec.name);
      throw err;
    }
    return this.vmInfo(entry);
  }

  /** The highest host address of `net` that neither the gateway nor any VM holds (DHCP's pool fills from the bottom). */
  private freeIp(net: NetworkSpec, first: number, last: number): number | undefined {
    const gateway = ipv4TextToNumber(net.gateway);
    const router = this.nets.get(net.name)?.router;
    const statics = new Set([...this.vms.values()].filter((v) => v.spec.net === net.name && v.spec.ip !== undefined).map((v) => ipv4TextToNumber(v.spec.ip!)));
    for (let a = last; a >= first; a--) {
      if (a !== gateway && !statics.has(a) && router?.holds(a) !== true) return a;
    }
    return undefined;
  }

  private async detachEntry(name: string): Promise<void> {
    const e = this.vms.get(name);
    if (e === undefined) return;
    this.vms.delete(name);
    if (e.retry !== null) clearTimeout(e.retry);
    this.capture.portRemoved(name);
    if (e.member !== null) this.nets.get(e.spec.net)?.sw.detach(e.member);
    const router = this.nets.get(e.spec.net)?.router;
    router?.vmDetached(name, e.member?.mac ?? null);
    // The VM is gone from this.vms: its static lease leaves the reservations with it.
    router?.refreshReservations(this.reservations(e.spec.net));
    if (e.port !== null) {
      try {
        await e.port.close({ remove: true });
      } catch (err) {
        this.log.warn({ vm: name, err: (err as Error).message }, 'closing the port failed');
      }
    }
    this.log.info({ vm: name }, 'VM detached');
    this.events.vmDetached(name, e.spec.net);
  }

  async detach(name: unknown): Promise<{ detached: string }> {
    const n = checkName(name, 'VM');
    if (!this.vms.has(n)) throw new NotFoundError(`no VM named ${n} is attached`);
    await this.detachEntry(n);
    await this.save();
    return { detached: n };
  }

  /** Attached, or has a route. */
  knowsVm(vm: string): boolean {
    return this.vms.has(vm) || this.routes.has(vm);
  }

  routeOf(vm: string): Route {
    return this.routes.get(vm) ?? DEFAULT_ROUTE;
  }

  /** Sets a VM's route; returns once it is saved and live. */
  async setRoute(params: unknown): Promise<RouteSetInfo> {
    const o = asObject(params, 'params');
    const vm = checkName(o.vm, 'VM');
    const route = checkRoute(o.route);
    // A route for a name nobody knows is most likely a typo, and would wait for whichever VM
    // later gets that name: only with an explicit create, and never for a reserved name.
    if (!this.knowsVm(vm)) checkVmName(vm);
    if (!this.knowsVm(vm) && o.create !== true) throw new NotFoundError(`no VM named ${vm} is attached or has a route; use --create to set a route for a VM not attached yet`);
    if (route.kind === 'via') {
      if (route.vm === vm) throw new UserError(`${vm} cannot route via itself`);
      const me = this.vms.get(vm);
      const gw = this.vms.get(route.vm);
      if (gw === undefined) throw new NotFoundError(`no VM named ${route.vm} is attached`);
      if (me !== undefined && me.spec.net !== gw.spec.net) throw new UserError(`${route.vm} is on network ${gw.spec.net}, not on ${vm}'s network ${me.spec.net}`);
      if (gw.spec.ip === undefined) throw new UserError(`${route.vm} has no fixed address; attach it with --ip so it can be a gateway`);
      // Follow the chain from the new gateway: reaching `vm` again would be a loop.
      const seen = new Set([vm]);
      for (let hop: string | undefined = route.vm; hop !== undefined; ) {
        if (seen.has(hop)) throw new UserError(`routing ${vm} via ${route.vm} would make a loop (${[...seen, hop].join(' -> ')})`);
        seen.add(hop);
        const r = this.routes.get(hop);
        hop = r?.kind === 'via' ? r.vm : undefined;
      }
    }
    if (usesTor(route)) this.ensureTor();
    const reset = await this.replaceRoute(vm, route);
    this.log.info({ vm, route, reset }, 'route set');
    // The VM fails closed until Tor is ready: the reply says so, and why (tor's own warnings).
    return { ...this.routeInfo(vm), tor: usesTor(route) && !this.torManager.isReady() ? this.torManager.state() : null };
  }

  /** Saves the VM's new route (undefined: none kept) and resets the flows it forbids. */
  private async replaceRoute(vm: string, route: Route | undefined): Promise<number> {
    const before = this.routes.get(vm);
    if (route === undefined) this.routes.delete(vm);
    else this.routes.set(vm, route);
    try {
      await this.save();
    } catch (e) {
      if (before === undefined) this.routes.delete(vm);
      else this.routes.set(vm, before);
      throw e;
    }
    const net = this.vms.get(vm)?.spec.net;
    const now = route ?? DEFAULT_ROUTE;
    this.events.routeChanged(vm, routeView(now), describeRoute(now), usesTor(now), this.vms.has(vm));
    return net !== undefined ? (this.nets.get(net)?.router.routeChanged(vm) ?? 0) : 0;
  }

  /** Forgets the VM's route (back to the default, none); the only way to drop a detached VM's route. */
  async clearRoute(params: unknown): Promise<RouteInfo> {
    const vm = checkName(asObject(params, 'params').vm, 'VM');
    if (!this.knowsVm(vm)) throw new NotFoundError(`no VM named ${vm} is attached or has a route`);
    const reset = await this.replaceRoute(vm, undefined);
    this.log.info({ vm, reset }, 'route cleared');
    return this.routeInfo(vm);
  }

  private routeInfo(vm: string): RouteInfo {
    const route = this.routeOf(vm);
    return { vm, attached: this.vms.has(vm), route: routeView(route), routeText: describeRoute(route) };
  }

  showRoutes(params: unknown): RouteInfo[] {
    const o = asObject(params, 'params');
    if (o.vm !== undefined) {
      const vm = checkName(o.vm, 'VM');
      if (!this.vms.has(vm) && !this.routes.has(vm)) throw new NotFoundError(`no VM named ${vm}`);
      return [this.routeInfo(vm)];
    }
    const names = new Set([...this.vms.keys(), ...this.routes.keys()]);
    return [...names].sort().map((n) => this.routeInfo(n));
  }

  private netInfo(e: NetEntry): NetInfo {
    const vms = [...this.vms.values()].filter((v) => v.spec.net === e.spec.name).map((v) => v.spec.name);
    return { ...netView(e.spec), vms, stats: { ...e.sw.stats, drops: { ...e.sw.stats.drops } }, router: { ...e.router.counters, ...e.router.endpoint.counters } };
  }

  private vmInfo(e: VmEntry): VmInfo {
    const st: PortStatus = e.port !== null ? e.port.status() : { state: 'down', detail: e.error ?? 'not open' };
    const stats = e.port !== null ? mergeDrops(e.port.stats(), e.member) : ZERO_STATS;
    const mac = e.member?.mac != null ? macToString(e.member.mac) : (e.spec.mac ?? e.spec.learnedMac ?? null);
    const rs = this.nets.get(e.spec.net)?.router.vmStatus(e.spec.name);
    const route = this.routeOf(e.spec.name);
    return {
      name: e.spec.name,
      net: e.spec.net,
      mac,
      ip: rs?.ip ?? e.spec.ip ?? null,
      route: routeView(route),
      routeText: describeRoute(route),
      flows: rs?.flows ?? null,
      port: { ...portView(e.spec.port), state: st.state, detail: st.detail, lastError: st.lastError ?? null, device: st.device ?? null, stats },
    };
  }

  listNetworks(): NetInfo[] {
    return [...this.nets.values()].map((e) => this.netInfo(e));
  }

  listVms(): VmInfo[] {
    return [...this.vms.values()].map((e) => this.vmInfo(e));
  }

  /** Caught exceptions (bugs): the process's counts, and the attached ports' and ping sockets'. */
  errors(portStats?: Iterable<PortStats>): DaemonErrors {
    let dataPath = faults.dataPath;
    let native = 0;
    for (const st of portStats ?? this.portStats()) {
      const e = st.errors;
      if (e === undefined) continue;
      native += e.native;
      dataPath += e.handler;
    }
    const p = this.ping.stats();
    native += (p.v4?.callbackErrors ?? 0) + (p.v6?.callbackErrors ?? 0);
    return { dataPath, native, uncaught: faults.uncaught };
  }

  private *portStats(): Iterable<PortStats> {
    for (const v of this.vms.values()) if (v.port !== null) yield v.port.stats();
  }

  status(extra: { socket: string; stateDir: string; version: string }): StatusInfo {
    // The VMs' stats once: the error counts are summed from them (not a second stats() per port).
    const vms = this.listVms();
    return {
      daemon: {
        pid: process.pid,
        version: extra.version,
        socket: extra.socket,
        stateDir: extra.stateDir,
        vmSocketDir: this.cfg.vmSocketDir,
        torConfigured: this.cfg.torConfigured,
        uptimeSec: Math.round(process.uptime()),
        errors: this.errors(vms.map((v) => v.port.stats)),
        plugins: this.registry.plugins(),
      },
      networks: this.listNetworks(),
      vms,
      captures: this.listCaptures(),
      links: this.links.list().links,
      tor: this.torSummary(),
    };
  }

  private teeInfo(t: TeeStatus): TeeInfo {
    const { spec } = t;
    return { name: spec.name, from: sourceView(spec.from), to: spec.to, filter: spec.filter, snaplen: spec.snaplen, ring: spec.ring ?? null, state: t.state, detail: t.detail, counters: t.counters };
  }

  async addTee(params: unknown): Promise<TeeInfo> {
    const spec = checkTeeSpec(params, { captureDir: this.cfg.captureDir, vmSocketDir: this.cfg.vmSocketDir });
    if (this.failedTees.some((r) => (r as { name?: unknown } | null)?.name === spec.name)) throw new ConflictError(`an invalid tee named ${spec.name} is in the state file; remove it first`);
    const st = await this.tees.add(spec);
    try {
      await this.save();
    } catch (e) {
      await this.tees.remove(spec.name);
      throw e;
    }
    this.log.info({ tee: spec.name, from: spec.from, to: spec.to }, 'tee added');
    return this.teeInfo(st);
  }

  async removeTee(params: unknown): Promise<TeeRemoved> {
    const name = checkName(asObject(params, 'params').name, 'tee');
    const failed = this.failedTees.findIndex((r) => (r as { name?: unknown } | null)?.name === name);
    if (failed >= 0) this.failedTees.splice(failed, 1);
    else await this.tees.remove(name);
    await this.save();
    this.log.info({ tee: name }, 'tee removed');
    return { removed: name };
  }

  linkKey(): { publicKey: string; file: string } {
    return { publicKey: this.links.publicKey(), file: this.links.keyFile };
  }

  async addLink(params: unknown): Promise<LinkInfo> {
    const info = await this.links.add(params);
    await this.save();
    return info;
  }

  async removeLink(name: unknown): Promise<{ removed: string }> {
    const r = await this.links.remove(name);
    await this.save();
    return r;
  }

  listLinks(): LinksInfo {
    return this.links.list();
  }

  listTees(): TeeInfo[] {
    return this.tees.list().map((t) => this.teeInfo(t));
  }

  listCaptures(): CaptureInfo[] {
    return this.capture.list().map((s) => ({
      id: s.id,
      kind: s.kind,
      name: s.name ?? null,
      points: s.points.map((p) => p.name),
      filter: s.filterText,
      snaplen: s.snaplen,
      counters: { ...s.counters },
    }));
  }

  /** What the metrics endpoint reads at each scrape. */
  private metricsSnapshot(): MetricsSnapshot {
    const links = this.links.list();
    const tor = this.torStarted ? this.torManager.state() : null;
    return {
      vms: this.listVms(),
      networks: this.listNetworks(),
      routes: this.showRoutes({}),
      links: links.links,
      linkDrops: links.drops,
      captures: this.listCaptures(),
      tor: tor !== null ? { phase: tor.phase, progress: tor.progress, restarts: tor.restarts } : null,
      failing: this.events.failingClosed(),
      errors: this.errors(),
      events: { emitted: this.events.bus.emitted, followers: this.events.bus.followers, overflows: this.events.bus.overflows },
    };
  }

  /**
   * The metrics endpoint and desktop notices as `cfg` says (at start, and again at a reload).
   * A metrics address that cannot be listened on stops the start; at a reload it is logged and
   * the endpoint is off.
   */
  private async applyObservability(cfg: DaemonConfig, prev?: DaemonConfig): Promise<void> {
    const reload = prev !== undefined;
    if (!reload || JSON.stringify(cfg.metrics) !== JSON.stringify(prev.metrics)) {
      await this.metricsServer?.close();
      this.metricsServer = null;
      if (cfg.metrics.listen !== undefined) {
        const server = new MetricsServer(this.metrics, this.log);
        try {
          await server.listen(parseMetricsListen(cfg.metrics.listen), this.socketGid);
          this.metricsServer = server;
        } catch (e) {
          if (!reload) throw e;
          this.log.warn({ err: (e as Error).message }, 'metrics endpoint not started');
        }
      }
    }
    if (!reload || JSON.stringify(cfg.notify) !== JSON.stringify(prev.notify)) {
      this.offNotifier();
      this.notifier?.close();
      this.notifier = null;
      const where = notifyAddress(cfg.notify);
      if ('address' in where) {
        const n = new DesktopNotifier(where.address, this.log.child({ component: 'notify' }));
        this.offNotifier = this.events.bus.on((e) => n.event(e));
        this.notifier = n;
        this.log.info({ bus: where.address }, 'desktop notices on');
      } else {
        this.offNotifier = () => {};
        this.log[cfg.notify.enabled === true || where.warn === true ? 'warn' : 'debug']({ why: where.off }, 'desktop notices off');
      }
    }
  }

  /** Config reload (SIGHUP): new limits for new flows on every network, the DNS upstream of direct routes, metrics and notices. */
  reloadConfig(next: DaemonConfig): void {
    const prev = this.cfg;
    this.cfg = { ...this.cfg, limits: { ...next.limits }, dns: { ...next.dns }, metrics: { ...next.metrics }, notify: { ...next.notify }, tcp: { ...next.tcp } };
    setDefaultCongestion(next.tcp.congestion); // connections opened from now on
    // In the background, one reload after another: a reload never waits for a socket to close.
    this.reloading = this.reloading.then(() => this.applyObservability(next, prev)).catch((e: Error) => this.log.warn({ err: e.message }, 'metrics or notices not reloaded'));
    for (const n of this.nets.values()) n.router.endpoint.setLimits(this.cfg.limits);
    const up = next.dns.upstream !== undefined ? parseHostPort(next.dns.upstream, 53) : null;
    this.upstreamDns.setServer(up ?? undefined);
  }

  /** Graceful stop: ports are closed but devices kept, so a restart re-attaches them. */
  async shutdown(): Promise<void> {
    this.closing = true;
    if (this.torIdleTimer !== null) clearInterval(this.torIdleTimer);
    this.events.close();
    await this.reloading;
    this.offNotifier();
    this.notifier?.close();
    await this.metricsServer?.close();
    this.capture.close();
    await this.tees.close();
    for (const e of this.vms.values()) {
      if (e.retry !== null) clearTimeout(e.retry);
      if (e.member !== null) this.nets.get(e.spec.net)?.sw.detach(e.member);
      try {
        await e.port?.close({ remove: false });
      } catch (err) {
        this.log.warn({ vm: e.spec.name, err: (err as Error).message }, 'closing the port failed');
      }
    }
    await this.links.close();
    for (const n of this.nets.values()) {
      n.sw.close();
      n.router.close();
    }
    this.upstreamDns.close();
    this.ping.close();
    this.fdInbox.close();
    await this.forwards.close();
    await this.tor.close();
  }
}
