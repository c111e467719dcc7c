/**
 * The control API's answers: the JSON shapes the daemon sends for each JSON-RPC method, as the
 * daemon (daemon.ts, forwards.ts, tor/service.ts), the CLI (cli/) and the tests read them.
 * Types only. The shapes produced below the daemon's top layer (Tor's) are declared where they
 * are produced and re-exported here, so this stays the one file to import them from.
 *
 * Requests are not typed here: every method takes `unknown` params and checks them
 * (validate.ts, forwards.ts, control/methods.ts).
 */
import type { PortSpec, PortStats, PortStatus } from '../../plugins/types.js';
import type { PluginInfo } from '../../plugins/registry.js';
import type { NetworkSpec } from '../state/model.js';
import type { Route } from '../routes/route.js';
import type { NetworkStats } from '../switch/network.js';

export type { PluginInfo } from '../../plugins/registry.js';
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
} from '../tor/service.js';
/** `events.follow`: its reply line is `{ following: [prefixes or "*"] }`, then one MvnetEvent per line. */
export type { MvnetEvent, EventType, LimitKind } from '../events/types.js';

/** `vm.attach` (one), `vm.list` (all), and each VM in `daemon.status`. */
export interface VmInfo {
  name: string;
  net: string;
  mac: string | null;
  /** Static address, DHCP lease, or the address it was seen using. */
  ip: string | null;
  route: string;
  /** Open flows and per-VM limit/refusal counters of the endpoint. */
  flows: { tcp: number; udp: number; tcpLimit: number; udpLimit: number; tcpRefused: number; udpDropped: number } | null;
  port: PortSpec & { state: PortStatus['state']; detail: string; stats: PortStats };
}

/** `vm.detach`. */
export interface VmDetachResult {
  detached: string;
}

/** `route.set` (one) and `route.show` (a list). */
export interface RouteInfo {
  vm: string;
  attached: boolean;
  route: Route;
  description: string;
}

/** `net.create` (one), `net.list` (all), and each network in `daemon.status`. */
export interface NetInfo extends NetworkSpec {
  vms: string[];
  stats: NetworkStats;
  router: Record<string, number>;
}

/** `net.delete`. */
export interface NetDeleteResult {
  deleted: string;
  detached: string[];
}

/** `daemon.status`. */
/** Exceptions caught since the daemon started; every one is a bug (each is logged at error level). */
export interface DaemonErrors {
  /** At data-path boundaries: a port's batch, a router frame, a timer, an upstream callback. */
  dataPath: number;
  /** Thrown into the native addon's callbacks (devices' and ping sockets' callbackErrors). */
  native: number;
  /** That reached the process's uncaughtException handler. */
  uncaught: number;
}

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

/** What a capture or tee reads: exactly one of vm, net, point. */
export interface CaptureSource {
  vm?: string;
  net?: string;
  point?: string[];
}

/** Each capture in `daemon.status`. */
export interface CaptureInfo {
  id: string;
  kind: 'live' | 'tee';
  /** The tee's name. */
  name?: string;
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
  from: CaptureSource;
  /** A path under the capture directory, or `unix:PATH`. */
  to: string;
  filter: string;
  snaplen: number;
  ring?: { files: number; sizeMb: number };
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
  /** Why a link is `failed` (it could not be restored at start: a port taken, a network gone). */
  error?: string;
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
