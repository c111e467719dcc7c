/**
 * THE control API contract: the JSON shapes the daemon sends for each JSON-RPC method, as the
 * daemon (daemon.ts, forwards.ts, tor/service.ts), the CLI (cli/) and the tests read them, and
 * as `mvnet … --json` prints them (the CLI prints the method's result as is). Types only. The
 * shapes produced below the daemon's top layer (Tor's) are declared where they are produced and
 * re-exported here, so this stays the one file to import them from. `Methods` below lists every
 * method with its params and result.
 *
 * Conventions (README "The --json contract"):
 * - Names: an object's own identity is `name` (a VM in `vm.list`, a network, a link, a tee);
 *   a reference to another object is named after what it refers to: `vm` (a route's or a
 *   forward's VM, `via` gateways), `net` (a VM's network).
 * - Unset is null: every key of an answer's type is present; one without a value is `null`,
 *   never absent. (Keys that belong to another kind of a union, e.g. a TAP port's `path`, are
 *   not keys of that kind and so are absent.)
 * - A route is always the Route object (`route`: RouteView) and its one-line text (`routeText`).
 * - A port's `kind` is what `vm attach` was given: `fifo` for `--fifo`, `fd` for `--fd`.
 * - Errors: a JSON-RPC error with `code` (RpcErrorCode); the CLI turns it into an exit code
 *   (cli/exit-codes.ts) and, under --json, one JSON object on stderr (CliErrorJson).
 *
 * Params are checked by the daemon (validate.ts, forwards.ts, control/methods.ts), which takes
 * them as `unknown`; the param types here document what each method accepts.
 */
import type { PortSpec, PortStats, PortStatus } from '../../plugins/types.js';
import type { PluginInfo } from '../../plugins/registry.js';
import type { NetworkSpec } from '../state/model.js';
import type { NetworkStats } from '../switch/network.js';
import type {
  OnionAliasInfo,
  OnionAliasRemoved,
  OnionDiscovery,
  OnionEndpoint,
  OnionExposeInfo,
  OnionUnexposeResult,
  TorNewnymResult,
  TorStatus,
  TorSummary,
} from '../tor/service.js';

export type { PluginInfo } from '../../plugins/registry.js';
export type { AllowRule } from '../routes/route.js';
export type {
  OnionAliasInfo,
  OnionAliasRemoved,
  OnionDiscovery,
  OnionEndpoint,
  OnionExposeInfo,
  OnionSource,
  OnionUnexposeResult,
  TorNewnymResult,
  TorStatus,
  TorSummary,
} from '../tor/service.js';
/** `events.follow`: its reply line is `{ following: [prefixes or "*"] }`, then one MvnetEvent per line. */
export type { MvnetEvent, EventType, LimitKind } from '../events/types.js';

/** `T` with every optional key required and `null` when unset (distributes over unions). */
export type Nulled<T> = T extends unknown ? { [K in keyof T]-?: undefined extends T[K] ? Exclude<T[K], undefined> | null : T[K] } : never;

/**
 * JSON-RPC error codes (daemon/errors.ts defines them): -32700 parse error, -32600 invalid
 * request, -32601 unknown method, -32602 invalid params (bad input the daemon refuses), -32603
 * internal error (a bug), -32001 conflict (exists, in use, attached), -32004 not found.
 */
export type RpcErrorCode = -32700 | -32600 | -32601 | -32602 | -32603 | -32001 | -32004;

/** What `mvnet --json` prints on stderr when a command fails (one line, nothing on stdout). */
export interface CliErrorJson {
  error: {
    /** usage, unreachable, timeout, not-found, conflict, invalid, internal, error. */
    code: string;
    /** The process's exit code (cli/exit-codes.ts). */
    exitCode: number;
    message: string;
    /** The daemon's JSON-RPC error code, null when the error did not come from the daemon. */
    rpcCode: number | null;
  };
}

/**
 * `mvnet --json vm attach --batch FILE`: one item per VM of the file, in its order. The process
 * exits non-zero when any failed (then also a CliErrorJson on stderr naming them).
 */
export type VmAttachBatchItem = { vm: string; ok: true; result: VmInfo } | { vm: string; ok: false; error: CliErrorJson['error'] };

// RouteView, AllowRuleView: declared beside Route (routes/route.ts), so events can carry them too.
export type { AllowRuleView, RouteView } from '../routes/route.js';
import type { RouteView } from '../routes/route.js';

/**
 * A VM's device as answers carry it: its spec with unset fields null, and `--fifo RX:TX` as
 * kind `fifo` (stored as an `fd` port with rx/tx; `fd` is a passed descriptor, `--fd`).
 */
export type PortView =
  | Nulled<Exclude<PortSpec, { kind: 'fd' }>>
  | { kind: 'fd'; token: string }
  | { kind: 'fifo'; rx: string; tx: string };

/** A port's state: up, degraded (its writes fail: lastError says why), waiting (for its peer), down. */
export type PortState = PortStatus['state'];

/** `vm.attach` (one), `vm.list` (all), and each VM in `daemon.status`. */
export interface VmInfo {
  name: string;
  net: string;
  mac: string | null;
  /** Static address (`--ip`), DHCP lease, or the address it was seen using. */
  ip: string | null;
  route: RouteView;
  /** The route in one line, as `mvnet route show` prints it. */
  routeText: string;
  /** Open flows and per-VM limit/refusal counters of the endpoint. */
  flows: { tcp: number; udp: number; tcpLimit: number; udpLimit: number; tcpRefused: number; udpDropped: number } | null;
  port: PortView & {
    state: PortState;
    detail: string;
    /** The last write error while `degraded` (e.g. "ECONNREFUSED: Connection refused"), else null. */
    lastError: string | null;
    /** The device's own state where it has one (vhost-user: listening, connected, running, broken), else null. */
    device: string | null;
    stats: PortStats;
  };
}

/** `vm.detach`. */
export interface VmDetachResult {
  detached: string;
}

/** `route.set` and `route.clear` (one), `route.show` (a list). */
export interface RouteInfo {
  vm: string;
  attached: boolean;
  route: RouteView;
  /** The route in one line. */
  routeText: string;
}

/** `route.set`: the route as `route show` has it, and Tor's state while a route through Tor fails closed. */
export interface RouteSetInfo extends RouteInfo {
  /** A route through Tor while Tor is not ready: Tor's state and why (the VM fails closed until it is); else null. */
  tor: TorSummary | null;
}

/** `net.create` (one), `net.list` (all), and each network in `daemon.status`. */
export type NetInfo = Nulled<NetworkSpec> & NetExtra;
interface NetExtra {
  vms: string[];
  stats: NetworkStats;
  router: Record<string, number>;
}

/** `net.delete`. */
export interface NetDeleteResult {
  deleted: string;
  detached: string[];
}

/** Exceptions caught since the daemon started; every one is a bug (each is logged at error level). */
export interface DaemonErrors {
  /** At data-path boundaries: a port's batch, a router frame, a timer, an upstream callback. */
  dataPath: number;
  /** Thrown into the native addon's callbacks (devices' and ping sockets' callbackErrors). */
  native: number;
  /** That reached the process's uncaughtException handler. */
  uncaught: number;
}

/** `daemon.status`. */
export interface StatusInfo {
  daemon: {
    pid: number;
    version: string;
    socket: string;
    stateDir: string;
    /** Where sockets named by a bare file name go (`vmSocketDir`). */
    vmSocketDir: string;
    /** The config has a `tor` section (else Tor would only be started on demand, unconfigured). */
    torConfigured: boolean;
    uptimeSec: number;
    errors: DaemonErrors;
    /** The packages loaded from the config's `plugins`, and the port kinds and hook adapters each added. */
    plugins: PluginInfo[];
  };
  networks: NetInfo[];
  vms: VmInfo[];
  /** Running captures: live ones (`capture.start`) and active tees. */
  captures: CaptureInfo[];
  /** Encrypted links and agent ports (as `link list`). */
  links: LinkInfo[];
  /** Tor's state (phase, bootstrap, its recent warnings); null while Tor was never started. */
  tor: TorSummary | null;
}

/** Per capture (and per tee, summed over its runs since the daemon started). */
export interface CaptureCounters {
  /** Packets that crossed the capture's points. */
  seen: number;
  /** Of those, not matched by the filter. */
  filteredOut: number;
  /** Written to the capture's output. */
  captured: number;
  /** Lost by the capture (its queue or the port's tee ring was full); never a forwarding drop. */
  dropped: number;
  /** Bytes of pcapng written for captured packets. */
  bytes: number;
}

/** `capture.points`: what can be captured. */
export interface CapturePointInfo {
  /** What `--point` takes, and the pcapng interface name. */
  name: string;
  kind: 'port' | 'net' | 'exit' | 'drops';
  /** Ethernet frames, or bare IP packets (a TUN port, the route exits). */
  link: 'ether' | 'raw';
  description: string;
}

/** What a capture or tee reads: exactly one of vm, net, point (params; answers: CaptureSourceView). */
export interface CaptureSource {
  vm?: string;
  net?: string;
  point?: string[];
}

/** A CaptureSource in answers: the two not given are null. */
export type CaptureSourceView = Nulled<CaptureSource>;

/** Each capture in `daemon.status`. */
export interface CaptureInfo {
  id: string;
  kind: 'live' | 'tee';
  /** The tee's name (null for a live capture). */
  name: string | null;
  points: string[];
  filter: string;
  snaplen: number;
  counters: CaptureCounters;
}

/** `capture.start`'s reply line, before the pcapng stream on the same connection. */
export interface CaptureStarted {
  id: string;
  points: string[];
}

/** `tee.add` (one) and `tee.list` (all). */
export interface TeeInfo {
  name: string;
  from: CaptureSourceView;
  /** A path under the capture directory, or `unix:PATH`. */
  to: string;
  filter: string;
  snaplen: number;
  ring: { files: number; sizeMb: number } | null;
  /** waiting: its VM or network is not there (yet); error: its output failed (detail says why). */
  state: 'active' | 'waiting' | 'error';
  detail: string;
  counters: CaptureCounters;
}

/** `tee.remove`. */
export interface TeeRemoved {
  removed: string;
}

/** A port forward as `forward.add` takes it (checked) and `forward.remove` answers it. */
export interface ForwardSpec {
  vm: string;
  host: string;
  port: number;
  guestPort: number;
}

/** `forward.add` (one) and `forward.list` (all). */
export interface ForwardInfo extends ForwardSpec {
  listening: boolean;
  connections: number;
  failures: number;
}

/** One encrypted link (`link list`): a trunk of a network, or a VM port reached through `mvnet agent`. */
export interface LinkInfo {
  /** The link's name; for an agent, the VM's. */
  name: string;
  /** The network a link extends ('' for an agent: see `vm list`). */
  net: string;
  kind: 'link' | 'agent';
  /** The peer's static public key (base64). */
  peer: string;
  /** established: a session is up; handshaking: trying; waiting: for the peer to reach us; failed: kept in the state but not running (`error` says why). */
  state: 'established' | 'handshaking' | 'waiting' | 'failed';
  /** Why a link is `failed` (it could not be restored at start: a port taken, a network gone); else null. */
  error: string | null;
  /** Where packets go now, as a multiaddr: the peer's latest authenticated address, else the configured one. */
  endpoint: string | null;
  /** The endpoint given at `link add` (multiaddr), null when the link only listens. */
  configuredEndpoint: string | null;
  /** Where the peer reaches us (multiaddr; an onion listener as /onion3/ADDR:PORT once published). */
  listen: string | null;
  /** ISO time of the last completed handshake. */
  lastHandshake: string | null;
  handshakes: number;
  rx: { packets: number; bytes: number };
  tx: { packets: number; bytes: number };
  /** By reason: bad-mac, replay, stale, unknown-index, malformed, queue-full, gave-up, unsent (no carrier could take it). */
  drops: Record<string, number>;
  /** Remote MACs learned on the link (links only). */
  macs: number;
}

export interface LinkListenerInfo {
  /** Multiaddr; an onion listener's once published. */
  listen: string | null;
  /** As given: udp:51820, onion:51820. */
  text: string;
  status: string;
  /** ADDR.onion:PORT of an onion listener. */
  onion: string | null;
  error: string | null;
  /** Links and agents using it: link:NAME, agent:VM. */
  users: string[];
}

export interface LinksInfo {
  /** This daemon's link public key (null until the first link or `link key`). */
  publicKey: string | null;
  listeners: LinkListenerInfo[];
  /** Drops no peer can be blamed for (unknown-peer, malformed, bad-mac of handshakes, cookie). */
  drops: Record<string, number>;
  /** Cookie replies sent (a handshake flood makes them). */
  cookieReplies: number;
  underLoad: boolean;
  links: LinkInfo[];
}

/** `link.key`, `mvnet key generate/show`. */
export interface LinkKeyInfo {
  publicKey: string;
  file: string;
}

/** `link.remove`. */
export interface LinkRemoved {
  removed: string;
}

/** `mvnet version --json` (no daemon involved). */
export interface VersionInfo {
  version: string;
}

/**
 * Every control method: its params (what the daemon accepts; checked there) and its result.
 * `{}` params: none. The CLI command that calls each is in README's CLI reference.
 */
export interface AttachManyFailure {
  /** Position in params.vms. */
  index: number;
  name: string | null;
  error: string;
  /** The JSON-RPC error code vm.attach would have answered with (null: an internal error). */
  code: number | null;
}

/** vm.attachMany's answer: the VMs attached (in order) and the ones refused, each with its reason. */
export interface AttachManyResult {
  attached: VmInfo[];
  failed: AttachManyFailure[];
}

export interface Methods {
  'daemon.status': { params: Record<string, never>; result: StatusInfo };
  'net.create': { params: { name: string; subnet: string; gateway?: string; ipv6?: string; mtu?: number; dhcpRange?: string }; result: NetInfo };
  'net.list': { params: Record<string, never>; result: NetInfo[] };
  'net.delete': { params: { name: string; force?: boolean }; result: NetDeleteResult };
  'vm.attach': { params: { name: string; net: string; port: PortSpec; mac?: string; ip?: string }; result: VmInfo };
  /** Many vm.attach params in one call (at most 10,000), with one state write; refusals per VM. */
  'vm.attachMany': { params: { vms: Methods['vm.attach']['params'][] }; result: AttachManyResult };
  'vm.detach': { params: { name: string }; result: VmDetachResult };
  'vm.list': { params: Record<string, never>; result: VmInfo[] };
  /** `route`: a Route (routes/route.ts; null for an unset allow/torPorts is accepted). */
  'route.set': { params: { vm: string; route: RouteView | { kind: string }; create?: boolean }; result: RouteSetInfo };
  'route.show': { params: { vm?: string }; result: RouteInfo[] };
  'route.clear': { params: { vm: string }; result: RouteInfo };
  'forward.add': { params: { vm: string; host: string; guestPort: number }; result: ForwardInfo };
  'forward.list': { params: Record<string, never>; result: ForwardInfo[] };
  'forward.remove': { params: { vm?: string; host: string }; result: ForwardSpec };
  'tee.add': { params: { name: string; from: CaptureSource; to: string; filter?: string; snaplen?: number; ring?: { files: number; sizeMb: number } }; result: TeeInfo };
  'tee.list': { params: Record<string, never>; result: TeeInfo[] };
  'tee.remove': { params: { name: string }; result: TeeRemoved };
  'capture.points': { params: Record<string, never>; result: CapturePointInfo[] };
  /** The reply line, then the connection carries pcapng (see rpc.ts TakeOver). */
  'capture.start': { params: { from: CaptureSource; filter?: string; snaplen?: number; count?: number; durationSec?: number; drops?: boolean }; result: CaptureStarted };
  'link.key': { params: Record<string, never>; result: LinkKeyInfo };
  'link.add': { params: { name: string; net: string; peer: string; endpoint?: string; listen?: string; keepalive?: number }; result: LinkInfo };
  'link.list': { params: Record<string, never>; result: LinksInfo };
  'link.remove': { params: { name: string }; result: LinkRemoved };
  'tor.status': { params: Record<string, never>; result: TorStatus };
  'tor.newnym': { params: { vm: string } | { all: true }; result: TorNewnymResult };
  'onion.list': { params: Record<string, never>; result: OnionEndpoint[] };
  'onion.discover': { params: Record<string, never>; result: OnionDiscovery };
  'onion.add': { params: { name: string; address: string }; result: OnionAliasInfo };
  'onion.remove': { params: { name: string }; result: OnionAliasRemoved };
  'onion.expose': { params: { vm: string; port: number; onionPort?: number; persist?: boolean }; result: OnionExposeInfo };
  'onion.unexpose': { params: { vm: string; port?: number }; result: OnionUnexposeResult };
}

export type MethodName = keyof Methods;
