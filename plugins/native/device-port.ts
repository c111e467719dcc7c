/**
 * The Port behind the tap, tun, iface and dgram drivers: one native Device (a non-blocking fd
 * drained in batches into one reused buffer) plus the checks every port makes — runts,
 * oversize frames, counters — and the mapping of the device's drop counters to DropReasons.
 *
 * Hot path: one onRead call per batch builds Buffer views into the device's buffer (the array
 * is reused between batches) and calls the handler once; send() validates sizes and hands the
 * list straight to the device, which writes from the Buffers' own memory.
 *
 * Cut-through: a port attached to a switch is bound to the network's native forwarding table
 * (bindSwitch). The device then forwards, without calling JS, every frame the switch would
 * forward unchanged to a known member, straight from its read buffer; onRead only sees the rest
 * of a batch, and the switch's bookkeeping for the frames cut through (counters, MAC ageing)
 * runs afterwards (see device.cc).
 *
 * Capture (tee): the device itself copies every frame it reads and every frame it accepts for
 * writing into a TeeRing, so frames cut through are captured like the rest, at no cost to JS.
 */
import type { Logger } from 'pino';
import { isMulticastMac, macToBuffer, parseMacString } from '../../daemon/wire/mac.js';
import { GSO_MAX_FRAME, VNET_HDR_LEN } from '../../daemon/wire/vnet.js';
import { Counters } from '../common/counters.js';
import { TEE_IN, TEE_OUT, type TeeRing } from '../common/tee-ring.js';
import type { DropReason, FrameHandler, Port, PortKind, PortStats, PortStatus } from '../types.js';
import { MIN_FRAME } from '../types.js';
import { native } from './index.js';
import type { NativeDevice, NativeFib, NativeSwitchMember } from './types.js';

/**
 * What DevicePort needs of its native device: the fd Device (device.cc) or a vhost-user
 * VhostDevice (vhost.cc), both with the same read buffer, write, tee and cut-through calls.
 */
export interface PortDevice extends NativeSwitchMember {
  readonly buffer: Buffer;
  readonly lengths: Uint32Array;
  write(frames: readonly Buffer[], count: number): number;
  setTee(ring: Buffer | null, ctl?: Uint32Array, dirs?: number, snaplen?: number, rxSkip?: number, txSkip?: number, program?: Uint32Array | null): void;
  close(): void;
}

/** A device's own counters as DevicePort.stats() folds them in. */
export interface DeviceCounters {
  txFrames: number;
  /** Bytes of the frames written, without their virtio-net headers. */
  txBytes: number;
  drops: Partial<Record<DropReason, number>>;
  callbackErrors: number;
}

/** An injected device (VhostPort): made by the caller with DevicePort's read callback. */
export interface InjectedDevice<D extends PortDevice> {
  device: D;
  /** Bytes between the starts of two frames in `device.buffer`. */
  slotSize: number;
  counters(): DeviceCounters;
}

/**
 * A switch's forwarding table for cut-through (the structural SwitchFib of
 * daemon/switch/network.ts): created by a DevicePort, filled with DevicePorts bound to it.
 */
export class DeviceSwitchFib {
  /** @internal */
  readonly native: NativeFib;

  constructor(gatewayMac: number, maxFrame: number) {
    this.native = new native.Device.Fib(gatewayMac, maxFrame);
  }

  /** Frames to `mac` may go straight to `port` for `validMs`; false if the port is not bound here. */
  set(mac: number, port: unknown, validMs: number): boolean {
    if (!(port instanceof DevicePort)) {
      this.native.delete(mac);
      return false;
    }
    return DevicePort.fibSet(this, port, mac, validMs);
  }

  delete(mac: number): void {
    this.native.delete(mac);
  }

  clear(): void {
    this.native.clear();
  }
}

export { GSO_MAX_FRAME };
/** Smallest IPv4 header; anything shorter on an L3 port is a runt. */
export const MIN_PACKET = 20;

const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
const DEFAULT_BATCH = 64;
const DEFAULT_QUEUE_FRAMES = 1024;
const DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024;

/**
 * Turns one frame that starts with a virtio_net_hdr (maybe a GSO super-frame or a frame with a
 * partial checksum) into plain Ethernet frames appended to `out`; returns how many, or -1 when
 * the header cannot be honoured.
 */
export type OffloadNormalizer = (frameWithVnetHdr: Buffer, out: Buffer[]) => number;

export interface DevicePortConfig<D extends PortDevice = NativeDevice> {
  kind: PortKind;
  /** For people: "tap0", "tap0@/run/netns/vm1", "/run/vm1.sock". */
  name: string;
  layer: 2 | 3;
  /** The fd a native Device is made for (unused with `inject`). */
  fd: number;
  mode: 'packet' | 'dgram';
  /**
   * Makes the port's device instead of a native Device on `fd`: given the read callback (frames
   * [start, count) of the device's buffer), returns the device. Its type D is the port's.
   */
  inject?: (onRead: (count: number, start: number) => void) => InjectedDevice<D>;
  /** Port.maxFrame: the largest frame without vnet header. */
  maxFrame: number;
  /**
   * How reads and writes carry a virtio_net_hdr:
   * - 'none': plain frames both ways;
   * - 'pass': the port's frames carry it (Port.vnetHdrLen = 10) in both directions (TAP with IFF_VNET_HDR);
   * - 'normalize': the device reads carry one and `normalize` turns them into plain frames; writes
   *   get an all-zero one prepended by the device (AF_PACKET with PACKET_VNET_HDR).
   */
  vnet: 'none' | 'pass' | 'normalize';
  normalize?: OffloadNormalizer;
  log: Logger;
  batch?: number;
  queueFrames?: number;
  queueBytes?: number;
}

export abstract class DevicePort<D extends PortDevice = NativeDevice> implements Port {
  readonly kind: PortKind;
  readonly name: string;
  readonly layer: 2 | 3;
  readonly vnetHdrLen: number;
  readonly maxFrame: number;

  protected readonly counters = new Counters();
  protected readonly log: Logger;
  protected readonly device: D;
  protected closed = false;
  /** Set when the device failed (EOF, EIO, interface deleted): the port is down. */
  protected failure: string | undefined;

  private handler: FrameHandler = () => {};
  private readonly slot: number;
  private readonly minLen: number;
  private readonly vnet: 'none' | 'pass' | 'normalize';
  private readonly normalize: OffloadNormalizer | undefined;
  private readonly views: Buffer[] = [];
  private readonly scratch: Buffer[] = [];
  private handlerErrors = 0;
  private switchFib: DeviceSwitchFib | null = null;
  private readonly deviceCounters: () => DeviceCounters;

  protected constructor(cfg: DevicePortConfig<D>) {
    this.kind = cfg.kind;
    this.name = cfg.name;
    this.layer = cfg.layer;
    this.maxFrame = cfg.maxFrame;
    this.vnet = cfg.vnet;
    this.vnetHdrLen = cfg.vnet === 'pass' ? VNET_HDR_LEN : 0;
    this.minLen = cfg.layer === 3 ? MIN_PACKET : MIN_FRAME;
    this.log = cfg.log;
    if (cfg.vnet === 'normalize' && !cfg.normalize) throw new Error('vnet "normalize" needs a normalizer');
    this.normalize = cfg.normalize;
    if (cfg.inject !== undefined) {
      const made = cfg.inject((count, start) => this.onRead(count, start));
      this.device = made.device;
      this.slot = made.slotSize;
      this.deviceCounters = made.counters;
      return;
    }
    // With a vnet header the kernel may hand us GSO super-frames whatever the MTU.
    this.slot = cfg.vnet === 'none' ? cfg.maxFrame : GSO_MAX_FRAME + VNET_HDR_LEN;
    const dev = new native.Device({
      fd: cfg.fd,
      mode: cfg.mode,
      maxFrame: this.slot,
      batch: cfg.batch ?? DEFAULT_BATCH,
      queueFrames: cfg.queueFrames ?? DEFAULT_QUEUE_FRAMES,
      queueBytes: cfg.queueBytes ?? DEFAULT_QUEUE_BYTES,
      txHeaderLen: cfg.vnet === 'normalize' ? VNET_HDR_LEN : 0,
      onRead: (count: number, start?: number) => this.onRead(count, start ?? 0),
      onError: (message) => this.onDeviceError(message),
    });
    dev.start();
    // Without `inject` D is NativeDevice (the default type argument): the fd-backed ports.
    this.device = dev as unknown as D;
    this.deviceCounters = () => {
      const d = dev.stats();
      // The device counts the virtio-net header it writes in 'pass' mode; the port's bytes are the frames'.
      const txBytes = cfg.vnet === 'pass' ? d.txBytes - d.txFrames * VNET_HDR_LEN : d.txBytes;
      return { txFrames: d.txFrames, txBytes, drops: { 'queue-full': d.dropQueueFull, 'io-error': d.dropIoError, 'no-peer': d.dropNoPeer }, callbackErrors: d.callbackErrors };
    };
  }

  onFrames(handler: FrameHandler): void {
    this.handler = handler;
  }

  /** Frames [start, count) of the device's batch; those before `start` were cut through. */
  private onRead(count: number, start: number): void {
    const buf = this.device.buffer;
    const lengths = this.device.lengths;
    const slot = this.slot;
    const max = this.maxFrame;
    const min = this.minLen;
    const out = this.views;
    out.length = 0;
    let bytes = 0;
    if (this.vnet === 'none') {
      const l3 = this.layer === 3;
      for (let i = start; i < count; i++) {
        const len = lengths[i]!;
        if (len < min) {
          this.counters.drop('runt');
        } else if (len > max) {
          this.counters.drop('oversize');
        } else {
          const off = i * slot;
          if (l3) {
            const v = buf[off]! >> 4;
            if (v !== 4 && v !== 6) {
              this.counters.drop('not-ip');
              continue;
            }
          }
          out.push(buf.subarray(off, off + len));
          bytes += len;
        }
      }
    } else if (this.vnet === 'pass') {
      for (let i = start; i < count; i++) {
        const len = lengths[i]!;
        const off = i * slot;
        if (len < VNET_HDR_LEN + min) {
          this.counters.drop('runt');
        } else if (len > slot || (buf[off + 1] === 0 && len - VNET_HDR_LEN > max)) {
          this.counters.drop('oversize');
        } else {
          out.push(buf.subarray(off, off + len));
          bytes += len - VNET_HDR_LEN;
        }
      }
    } else {
      const normalize = this.normalize!;
      for (let i = start; i < count; i++) {
        const len = lengths[i]!;
        const off = i * slot;
        if (len < VNET_HDR_LEN + min) {
          this.counters.drop('runt');
        } else if (len > slot) {
          this.counters.drop('oversize');
        } else if (buf[off + 1] === 0 && (buf[off]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) {
          // No offload: the frame after the header is what it is.
          if (len - VNET_HDR_LEN > max) {
            this.counters.drop('oversize');
          } else {
            out.push(buf.subarray(off + VNET_HDR_LEN, off + len));
            bytes += len - VNET_HDR_LEN;
          }
        } else {
          const first = out.length;
          const n = normalize(buf.subarray(off, off + len), out);
          if (n < 0) {
            out.length = first;
            this.counters.drop('bad-offload');
            continue;
          }
          // Segments wider than our MTU (the sender's MSS was for a bigger one) are dropped.
          let w = first;
          for (let k = first; k < out.length; k++) {
            const f = out[k]!;
            if (f.length > max) {
              this.counters.drop('oversize');
            } else if (f.length < min) {
              this.counters.drop('runt');
            } else {
              out[w++] = f;
              bytes += f.length;
            }
          }
          out.length = w;
        }
      }
    }
    if (out.length === 0) return;
    this.counters.rxFrames += out.length;
    this.counters.rxBytes += bytes;
    try {
      this.handler(out);
    } catch (err) {
      this.handlerErrors++;
      if (this.handlerErrors <= 10 || this.handlerErrors % 1000 === 0) {
        this.log.error({ port: this.name, err, count: this.handlerErrors }, 'frame handler threw');
      }
    }
  }

  private onDeviceError(message: string): void {
    this.failure = message;
    // Warn, not error: the device went away or broke outside the daemon (an interface deleted,
    // its namespace gone); status shows the port down with this reason. Error level is for bugs.
    this.log.warn({ port: this.name, error: message }, 'device failed; port is down');
  }

  /** 0 when the frame may be sent, else counts why not and returns 1. */
  private reject(f: Buffer): number {
    const len = f.length;
    if (this.vnet === 'pass') {
      if (len < VNET_HDR_LEN + this.minLen) {
        this.counters.drop('runt');
        return 1;
      }
      if (len > GSO_MAX_FRAME + VNET_HDR_LEN || (f[1] === 0 && len - VNET_HDR_LEN > this.maxFrame)) {
        this.counters.drop('oversize');
        return 1;
      }
      return 0;
    }
    if (len < this.minLen) {
      this.counters.drop('runt');
      return 1;
    }
    if (len > this.maxFrame) {
      this.counters.drop('oversize');
      return 1;
    }
    if (this.layer === 3) {
      const v = f[0]! >> 4;
      if (v !== 4 && v !== 6) {
        this.counters.drop('not-ip');
        return 1;
      }
    }
    return 0;
  }

  send(frames: readonly Buffer[]): void {
    const count = frames.length;
    if (count === 0) return;
    if (this.closed) {
      this.counters.drop('io-error', count);
      return;
    }
    let list: readonly Buffer[] = frames;
    for (let i = 0; i < count; i++) {
      if (this.reject(frames[i]!) !== 0) {
        // Compact the rest into a reused scratch list (only when something was rejected).
        const s = this.scratch;
        s.length = 0;
        for (let k = 0; k < i; k++) s.push(frames[k]!);
        for (let k = i + 1; k < count; k++) {
          if (this.reject(frames[k]!) === 0) s.push(frames[k]!);
        }
        list = s;
        break;
      }
    }
    if (list.length > 0) this.device.write(list, list.length);
    if (list === this.scratch) this.scratch.length = 0;
  }

  /** A forwarding table for a switch whose members are DevicePorts (see bindSwitch). */
  newSwitchFib(gatewayMac: number, maxFrame: number): DeviceSwitchFib {
    return new DeviceSwitchFib(gatewayMac, maxFrame);
  }

  /**
   * Lets the device forward, in native code, the frames the switch would forward unchanged to a
   * member in `fib` (for a layer-2 port only). `mac`: the member's source MAC (null until
   * known: nothing is cut through meanwhile). `onForwarded(frames)` is the switch's bookkeeping
   * for frames cut through; it runs after them, from the event loop, or during unbindSwitch().
   */
  bindSwitch(fib: unknown, mac: number | null, onForwarded: (frames: number) => void): boolean {
    if (this.closed || this.layer !== 2 || !(fib instanceof DeviceSwitchFib)) return false;
    const mode = this.vnet === 'none' ? 0 : this.vnet === 'pass' ? 1 : 2;
    this.device.bindSwitch(fib.native, mode, this.minLen, this.maxFrame, mac ?? -1, (frames, bytes) => {
      this.counters.rxFrames += frames;
      this.counters.rxBytes += bytes;
      onForwarded(frames);
    });
    this.switchFib = fib;
    return true;
  }

  setSwitchMac(mac: number): void {
    if (this.switchFib !== null) this.device.setSwitchMac(mac);
  }

  /** Ends cut-through; the bookkeeping of frames cut through and not yet reported runs now. */
  unbindSwitch(): void {
    if (this.switchFib === null) return;
    this.switchFib = null;
    this.device.unbindSwitch();
  }

  /**
   * Capture: every frame the device reads (TEE_IN: all of them, cut through or not, also those
   * dropped here as runts) and every frame it accepts for writing (TEE_OUT: from send() and from
   * other devices' cut-through) is copied into `ring` by the device, without its virtio-net
   * header; null stops. Reads carry a header for 'pass' and 'normalize', writes only for 'pass'.
   * `program`: a frame it rejects is not copied, only counted in the ring's `filtered`.
   */
  tee(ring: TeeRing | null, dirs: number, program?: Uint32Array | null): void {
    if (this.closed || ring === null || (dirs & (TEE_IN | TEE_OUT)) === 0) {
      if (!this.closed) this.device.setTee(null);
      return;
    }
    const rxSkip = this.vnet === 'none' ? 0 : VNET_HDR_LEN;
    const txSkip = this.vnet === 'pass' ? VNET_HDR_LEN : 0;
    this.device.setTee(ring.buffer, ring.ctl, dirs & (TEE_IN | TEE_OUT), ring.snaplen, rxSkip, txSkip, program ?? null);
  }

  /** @internal DeviceSwitchFib.set: the port's device, when bound to `fib`. */
  static fibSet(fib: DeviceSwitchFib, port: DevicePort<PortDevice>, mac: number, validMs: number): boolean {
    if (port.switchFib !== fib || port.closed) {
      fib.native.delete(mac);
      return false;
    }
    return fib.native.set(mac, port.device, validMs);
  }

  stats(): PortStats {
    // Frames cut through reach the counters in deferred reports: take the pending one first.
    if (this.switchFib !== null) this.device.flushForwarded();
    const s = this.counters.snapshot();
    const d = this.deviceCounters();
    s.txFrames = d.txFrames;
    s.txBytes = d.txBytes;
    for (const [reason, n] of Object.entries(d.drops) as [DropReason, number][]) {
      if (n > 0) s.drops[reason] = (s.drops[reason] ?? 0) + n;
    }
    s.errors = { native: d.callbackErrors, handler: this.handlerErrors };
    return s;
  }

  /** 'up' detail for status(). */
  protected abstract upDetail(): string;

  status(): PortStatus {
    if (this.closed) return { state: 'down', detail: 'closed' };
    if (this.failure !== undefined) return { state: 'down', detail: this.failure };
    // Open, but the kernel refuses its writes: every write since the last that went through
    // failed, the latest within DEGRADED_WINDOW_MS. A write that goes through ends it.
    // The fd ports' device (status() is the vhost port's own).
    const d = (this.device as unknown as NativeDevice).stats();
    if (d.ioFailRun > 0 && d.lastIoError !== undefined && (d.lastIoErrorAgoMs ?? Infinity) < DEGRADED_WINDOW_MS) {
      return { state: 'degraded', detail: `${d.ioFailRun} write${d.ioFailRun === 1 ? '' : 's'} failed since the last that went through (${this.upDetail()})`, lastError: d.lastIoError };
    }
    return { state: 'up', detail: this.upDetail() };
  }

  async close(opts?: { remove?: boolean }): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const remove = opts?.remove ?? false;
    this.unbindSwitch();
    this.beforeClose(remove);
    this.device.close();
    this.afterClose(remove);
  }

  /** Runs while the fd is still open (e.g. clearing TUNSETPERSIST so closing deletes the device). */
  protected beforeClose(_remove: boolean): void {}
  /** Runs after the fd is closed (e.g. unlinking a socket file). */
  protected afterClose(_remove: boolean): void {}
}

/** MAC text (daemon/wire/mac.ts reads it) → 6 bytes, for a device's own, unicast, address. */
export function deviceMacBytes(mac: string): Buffer {
  const r = parseMacString(mac);
  if (!r.ok) throw new Error(`invalid MAC address ${JSON.stringify(mac)} (want aa:bb:cc:dd:ee:ff)`);
  if (isMulticastMac(r.value)) throw new Error(`MAC address ${mac} is a multicast address; a device needs a unicast one`);
  return macToBuffer(r.value);
}

/** A port whose writes all failed within this long is `degraded` (status()); after it, with no writes since, `up` again. */
export const DEGRADED_WINDOW_MS = 10_000;

/** "name" or "name@netns" for people. */
export function deviceLabel(ifname: string, netns: string | undefined): string {
  return netns ? `${ifname}@${netns}` : ifname;
}
