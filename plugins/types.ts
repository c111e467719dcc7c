/**
 * The port contract: how a VM's device (TAP, TUN, socket, fd, raw interface) moves frames.
 * A port hands whole batches to its network and takes batches back; everything else is the
 * driver's business. Ports never throw on the data path: bad input and full queues are
 * dropped and counted by reason.
 */
import type { Logger } from 'pino';
import type { TeeRing } from './common/tee-ring.js';

/** Why a frame was dropped. Counted per port (and per network for switch decisions). */
export type DropReason =
  | 'runt' // shorter than an Ethernet header (or an IP header on L3 ports)
  | 'oversize' // longer than MTU plus headers
  | 'framing' // a stream length prefix that cannot be right; the stream is closed
  | 'spoofed' // source MAC other than the port's own
  | 'queue-full' // the device or socket would block and the bounded queue is full
  | 'no-peer' // nobody is connected (socket ports waiting for the VM)
  | 'io-error' // the kernel refused the write
  | 'bad-offload' // a virtio-net header we cannot honour
  | 'not-ip' // an L3 port was handed something that is not IPv4/IPv6
  | 'no-route' // the switch had nowhere to send it
  | 'filtered'; // a policy decided against it

export interface PortStats {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  drops: Partial<Record<DropReason, number>>;
  /**
   * Exceptions caught in the port's callbacks, each a bug: `native`, thrown into the native
   * addon's read/error callbacks (its callbackErrors); `handler`, thrown by the frame handler.
   */
  errors?: { native: number; handler: number };
}

/** degraded: open, but its writes fail (every write lately, see WriteHealth); `lastError` says why. */
export type PortState = 'up' | 'degraded' | 'waiting' | 'down';

export interface PortStatus {
  state: PortState;
  /** Human text: "connected", "waiting for QEMU to connect to /run/x.sock", "reconnecting (ECONNREFUSED)". */
  detail: string;
  /** Why writes fail, while `degraded` (e.g. "ECONNREFUSED (Connection refused)"). */
  lastError?: string;
  /** The device's own state, where it has one beyond `state` (vhost-user: listening, connected, running, broken). */
  device?: string;
}

/**
 * Frames are delivered as views into a buffer the port reuses: both the array and the Buffers
 * are valid only during the handler call. Copy what you keep.
 */
export type FrameHandler = (frames: readonly Buffer[]) => void;

export interface Port {
  readonly kind: PortKind;
  /** Device or socket name for people: "tap0", "/run/vm1.sock". */
  readonly name: string;
  /** 2: Ethernet frames; 3: bare IPv4/IPv6 packets (TUN). */
  readonly layer: 2 | 3;
  /**
   * Bytes of virtio-net header before every frame in both directions (0 when the port has no
   * offloads). Frames that carry one may be TSO super-frames or have partial checksums.
   */
  readonly vnetHdrLen: number;
  /**
   * With a vnet header: whether frames sent now may be TSO super-frames or leave the checksum
   * (a vhost-user guest takes what it negotiated). Absent: always. The port still fixes (segments,
   * checksums) whatever it is sent that it cannot pass on; this only spares that work.
   */
  offloadsOk?(): boolean;
  /** Largest frame (without vnet header) the port accepts or delivers. */
  readonly maxFrame: number;
  onFrames(handler: FrameHandler): void;
  /** Never blocks and never throws; what cannot be sent is dropped and counted. */
  send(frames: readonly Buffer[]): void;
  stats(): PortStats;
  status(): PortStatus;
  /**
   * Stop I/O and release the device. `remove` (detach) deletes devices/sockets the port created
   * and gives a device it did not create back as it found it (see `owned`).
   */
  close(opts?: { remove?: boolean }): Promise<void>;
  /** TAP/TUN: whether mvnet created the device, and what it changed on one it did not. */
  readonly owned?: DeviceRecord;
  /** Capture: copy every frame crossing the port in the directions `dirs` (TEE_IN|TEE_OUT bits)
   *  into `ring`, cut-through frames included; null stops. Never slows forwarding: when the ring
   *  is full the copy is dropped and counted in the ring. `program` (daemon/capture/filter.ts
   *  compileFilterProgram) is a prefilter a port may run before the copy (counting what it
   *  rejects in the ring's `filtered`) or ignore: the capture filters again what it drains. */
  tee?(ring: TeeRing | null, dirs: number, program?: Uint32Array | null): void;
}

/**
 * What mvnet did to a TAP/TUN device at attach. Saved with the attachment, so that a detach
 * after a daemon restart still deletes only a device mvnet created and restores the rest.
 */
export interface DeviceRecord {
  /** mvnet created the device: detach deletes it. */
  created: boolean;
  /**
   * A device that was there before (the admin's `ip tuntap add ... persist on`): the settings
   * attaching changed, as they were before. Detach puts them back and leaves the device.
   */
  was?: { mtu?: number; mac?: string; up?: boolean; persistent?: boolean };
}

/** The built-in kinds of device, each with a strict spec checked by daemon/state/validate.ts. */
export type BuiltinPortSpec =
  | { kind: 'tap'; ifname: string; netns?: string; mac?: string; vnetHdr?: boolean; multiQueue?: boolean }
  | { kind: 'tun'; ifname: string; netns?: string }
  | { kind: 'unix'; path: string }
  | { kind: 'unix-listen'; path: string }
  | { kind: 'dgram'; path: string; peer?: string }
  | { kind: 'fd'; token?: string; rx?: string; tx?: string }
  | { kind: 'iface'; ifname: string; netns?: string }
  /** A vhost-user back-end listening at `path` for QEMU (`-chardev socket,reconnect=1`), see plugins/vhost-user. */
  | { kind: 'vhost-user'; path: string };

export type BuiltinPortKind = BuiltinPortSpec['kind'];
export const BUILTIN_PORT_KINDS: readonly BuiltinPortKind[] = ['tap', 'tun', 'unix', 'unix-listen', 'dgram', 'fd', 'iface', 'vhost-user'];

/** JSON values: what a plugin port's options may hold (they are saved in the state file). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/**
 * A device of a kind a plugin registered (`PluginPortDriver`): `driver` names the kind and
 * `options` are what the driver's own `validate` returned.
 */
export interface PluginPortSpec {
  kind: 'plugin';
  driver: string;
  options: JsonObject;
}

/**
 * A VM whose device is elsewhere, behind `mvnet agent`: an encrypted link from the agent's key
 * `peer`, listening on `listen` (daemon/mesh). Opened by the daemon itself, not by a driver.
 */
export interface AgentPortSpec {
  kind: 'agent';
  peer: string;
  listen?: string;
  /** 3: the agent carries a TUN's IP packets (else Ethernet frames). */
  layer?: 3;
}

/** `link`: a link between routers as a switch port (daemon/mesh), never a VM's. */
export type PortKind = BuiltinPortKind | 'plugin' | 'agent' | 'link';
export type PortSpec = BuiltinPortSpec | PluginPortSpec | AgentPortSpec;

export interface PortContext {
  log: Logger;
  /** The network's MTU: the largest L3 packet. Frames may be mtu + 14 (+4 for a VLAN tag). */
  mtu: number;
  /** A device created by a previous run of the daemon (state restore): re-open, don't fail. */
  restoring: boolean;
  /** The record saved when the device was first attached (state restore of a TAP/TUN). */
  owned?: DeviceRecord;
  /** The socket group (config `socketGroup`): may own VM sockets and write their directories. */
  socketGid?: number;
  /** The descriptor a caller passed under `token` (see plugins/fd/inbox.ts), now the port's; throws when there is none. */
  takeFd?: (token: string) => number;
}

/** A built-in driver: opens the spec of its own kind (checked before by daemon/state/validate.ts). */
export interface PortDriver<S extends BuiltinPortSpec = BuiltinPortSpec> {
  readonly kind: S['kind'];
  open(spec: S, ctx: PortContext): Promise<Port>;
}

/**
 * A port driver a plugin registers: a new kind of VM device. Attached with
 * `vm.attach {port: {kind: "plugin", driver: KIND, options: {...}}}` (`mvnet vm attach VM --net N
 * --kind KIND [--options JSON]`). The daemon never interprets `options`: `validate` checks them
 * (they come from any control client, and from the state file at restore) and returns what is
 * kept; `open` gets only what `validate` returned.
 */
export interface PluginPortDriver<O extends JsonObject = JsonObject> {
  /** The kind's name: lowercase letters, digits and `-`, 1-32, not a built-in kind nor `plugin`. */
  readonly kind: string;
  /** One line for people (`mvnet status` lists plugins with it). */
  readonly description?: string;
  /** Checks options from a request or the state file; throws an Error with a one-line reason. */
  validate(options: JsonObject): O;
  /**
   * What the device is (a path, an interface name): two attachments with the same key are
   * refused. Without it, any number of this kind may be attached.
   */
  key?(options: O): string;
  /** Opens the device. `ctx.restoring`: the daemon is re-attaching it from its state. */
  open(options: O, ctx: PortContext): Promise<Port>;
}

/**
 * How a builder integration is run: its arguments, environment and stdin, and where its one
 * JSON answer goes. A hook adapter talks to the daemon over the control socket like the rest of
 * the CLI (cli/hook/core.ts has the shared client and `place()`).
 */
export interface HookIo {
  /** Arguments after the adapter's selection (`mvnet hook ADD` gives ["ADD"]). */
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The control socket the CLI was told (`--socket`, MVNET_SOCKET, the default). */
  readonly socket: string;
  readStdin(): Promise<string>;
  /** Writes to stdout. */
  write(text: string): void;
}

/**
 * A builder integration (OCI hooks, CNI, an image builder's own protocol): maps its caller's
 * input onto the control API and answers in the caller's format. Run by `mvnet hook --adapter
 * NAME` (`mvnet hook` is the `mvnet` adapter; the `mvnet-cni` bin runs `cni`).
 */
export interface HookAdapter {
  /** lowercase letters, digits and `-`, 1-32. */
  readonly name: string;
  readonly description: string;
  /** Runs one invocation; resolves to the process exit code. Errors are answered, not thrown. */
  run(io: HookIo): Promise<number>;
}

/** What a plugin's `register` gets: the only way in. */
export interface PluginApi {
  /** 1 for this contract; a plugin that needs more checks it. */
  readonly apiVersion: 1;
  /** The package name (or path) being loaded. */
  readonly source: string;
  portDriver<O extends JsonObject>(driver: PluginPortDriver<O>): void;
  hookAdapter(adapter: HookAdapter): void;
}

/**
 * An npm package's ESM entry point exports `register(api)` (named, or as a property of its
 * default export). It runs once per process at load; a throw refuses the package.
 */
export type RegisterFn = (api: PluginApi) => void | Promise<void>;

/** Frame size limits derived from an MTU. */
export function maxFrameFor(mtu: number): number {
  return mtu + 14 + 4; // Ethernet header and one 802.1Q tag
}
export const MIN_FRAME = 14;
