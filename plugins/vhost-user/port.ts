/**
 * The vhost-user port: a DevicePort over the addon's VhostDevice (vhost.cc), which serves one
 * QEMU virtio-net device's rings in guest memory it maps. DevicePort does what every port does
 * (runt/oversize checks, counters, capture, cut-through); frames carry a 10-byte virtio_net_hdr
 * both ways ('pass', as a TAP with --vnet-hdr), so guest super-frames cross whole.
 *
 * State: the device's own (listening, connected, running, broken) is kept from its onState
 * calls, so status() — run every second for every VM — asks the addon nothing. It maps onto
 * PortStatus: listening → waiting (for QEMU), connected and running → up (QEMU is there; frames
 * reach the guest once its driver starts the rings), broken → down with the reason, until QEMU
 * connects again.
 *
 * Offloads the guest did not take: a frame for it that is a GSO super-frame or leaves its
 * checksum to the device (from a TAP with --vnet-hdr, another guest, the endpoint) is segmented
 * and checksummed here first, as far as the negotiated features (GUEST_CSUM, GUEST_TSO4/6) say.
 */
import { normalizeOffload } from '../../daemon/wire/gso.js';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VNET_HDR_LEN, prependVnetHdr } from '../../daemon/wire/vnet.js';
import { DevicePort, type DeviceCounters } from '../native/device-port.js';
import { native } from '../native/index.js';
import type { NativeVhostDevice, VhostDeviceStats, VhostState } from '../native/types.js';
import type { Logger } from 'pino';
import type { PortStats, PortStatus } from '../types.js';

const DEFAULT_BATCH = 64;

/** Which offloads the guest takes in frames sent to it (from the negotiated features). */
interface GuestOffloads {
  csum: boolean;
  tso4: boolean;
  tso6: boolean;
}

const NO_OFFLOADS: GuestOffloads = { csum: false, tso4: false, tso6: false };

/** The addon's counters as a port's: its drop counters by DropReason. */
export function vhostCounters(d: VhostDeviceStats): DeviceCounters {
  return {
    txFrames: d.txFrames,
    txBytes: d.txBytes,
    drops: {
      // The guest's RX ring had no room: it does not refill it (fast enough).
      'queue-full': d.dropNoBuffers,
      // No front-end, rings not started, or broken: nobody to deliver to.
      'no-peer': d.dropNotRunning,
      oversize: d.dropOversize,
      'bad-offload': d.dropBadOffload,
    },
    callbackErrors: d.callbackErrors,
  };
}

/** Whether `f` (virtio_net_hdr then frame) needs an offload the guest did not negotiate. */
export function needsOffloadFix(f: Buffer, g: GuestOffloads): boolean {
  if (f.length < VNET_HDR_LEN) return false; // a runt: DevicePort drops it
  const gso = f[1]!;
  if (gso !== VIRTIO_NET_HDR_GSO_NONE) {
    // ECN and UDP fragmentation offloads (GUEST_ECN, GUEST_UFO) are never offered.
    if ((gso & VIRTIO_NET_HDR_GSO_ECN) !== 0) return true;
    if (gso === VIRTIO_NET_HDR_GSO_TCPV4) return !g.tso4 || !g.csum;
    if (gso === VIRTIO_NET_HDR_GSO_TCPV6) return !g.tso6 || !g.csum;
    return true;
  }
  return (f[0]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && !g.csum;
}

export interface VhostPortOptions {
  /** The socket path (for people and the detail). */
  path: string;
  /** A listening unix stream socket at `path`; the device owns it from now on. */
  listenFd: number;
  maxFrame: number;
  log: Logger;
  batch?: number;
  /** Runs after the device is closed (detach: removes the socket file mvnet made). */
  afterClose?: (remove: boolean) => void;
}

export class VhostPort extends DevicePort<NativeVhostDevice> {
  private vstate: VhostState = 'listening';
  private vdetail = '';
  /** What the running rings have, for status(): memory mapped and offloads taken. */
  private runningDetail = '';
  private everConnected = false;
  private offloads: GuestOffloads = NO_OFFLOADS;
  private readonly fixed: Buffer[] = [];
  private readonly segs: Buffer[] = [];
  private fixDrops = 0;
  private readonly path: string;
  private readonly closeHook: ((remove: boolean) => void) | undefined;

  constructor(o: VhostPortOptions) {
    // The device calls onState from the loop once started; it is started below, after this
    // object's fields exist, and reaches them through `sink`.
    const sink = { onState: (_s: VhostState, _d: string): void => {} };
    super({
      kind: 'vhost-user',
      name: o.path,
      layer: 2,
      fd: -1,
      mode: 'packet',
      maxFrame: o.maxFrame,
      vnet: 'pass',
      log: o.log,
      inject: (onRead) => {
        const dev = new native.VhostDevice({
          listenFd: o.listenFd,
          maxFrame: o.maxFrame,
          batch: o.batch ?? DEFAULT_BATCH,
          offloads: true,
          onRead,
          onState: (s, d) => sink.onState(s, d),
        });
        return { device: dev, slotSize: dev.slotSize, counters: () => vhostCounters(dev.stats()) };
      },
    });
    this.path = o.path;
    this.closeHook = o.afterClose;
    sink.onState = (s, d) => this.onVhostState(s, d);
    this.device.start();
  }

  private onVhostState(state: VhostState, detail: string): void {
    const was = this.vstate;
    this.vstate = state;
    this.vdetail = detail;
    if (state !== 'listening') this.everConnected = true;
    if (state === 'running') {
      const d = this.device.stats();
      this.offloads = { csum: d.guestCsum, tso4: d.guestTso4, tso6: d.guestTso6 };
      const taken = [d.guestCsum ? 'csum' : '', d.guestTso4 ? 'tso4' : '', d.guestTso6 ? 'tso6' : ''].filter((x) => x !== '');
      const mib = Math.round(d.memBytes / 2 ** 20);
      this.runningDetail = `${d.regions} guest memory region${d.regions === 1 ? '' : 's'} (${mib} MiB) mapped, offloads to the guest: ${taken.length > 0 ? taken.join(', ') : 'none'}`;
    } else {
      this.offloads = NO_OFFLOADS;
    }
    if (state === 'broken') this.log.warn({ port: this.name, detail }, 'vhost-user device broken; its rings are stopped until QEMU connects again');
    else if (state !== was) this.log.info({ port: this.name, state, detail }, `vhost-user ${state}`);
  }

  /** The endpoint sends super-frames only to a guest that takes checksum and TSO offloads. */
  offloadsOk(): boolean {
    return this.offloads.csum && (this.offloads.tso4 || this.offloads.tso6);
  }

  /** Frames needing an offload the guest did not take are segmented/checksummed first. */
  override send(frames: readonly Buffer[]): void {
    const g = this.offloads;
    // Not running: the device counts them all as no-peer; fixing them would be wasted.
    if (this.vstate !== 'running' || (g.csum && g.tso4 && g.tso6)) {
      super.send(frames);
      return;
    }
    let i = 0;
    while (i < frames.length && !needsOffloadFix(frames[i]!, g)) i++;
    if (i === frames.length) {
      super.send(frames);
      return;
    }
    const out = this.fixed;
    const segs = this.segs;
    out.length = 0;
    for (let k = 0; k < i; k++) out.push(frames[k]!);
    for (let k = i; k < frames.length; k++) {
      const f = frames[k]!;
      if (!needsOffloadFix(f, g)) {
        out.push(f);
        continue;
      }
      segs.length = 0;
      if (normalizeOffload(f, segs) < 0) {
        this.fixDrops++;
        continue;
      }
      for (const s of segs) out.push(prependVnetHdr(s));
    }
    segs.length = 0;
    super.send(out);
    out.length = 0;
  }

  override stats(): PortStats {
    const s = super.stats();
    if (this.fixDrops > 0) s.drops['bad-offload'] = (s.drops['bad-offload'] ?? 0) + this.fixDrops;
    return s;
  }

  protected upDetail(): string {
    return this.vdetail;
  }

  override status(): PortStatus {
    if (this.closed) return { state: 'down', detail: 'closed' };
    const d = this.vdetail;
    const device = this.vstate;
    switch (this.vstate) {
      case 'listening':
        return { state: 'waiting', device, detail: `listening on ${this.path}: ${this.everConnected ? `waiting for QEMU to reconnect (${d})` : 'waiting for QEMU to connect'}` };
      case 'connected':
        return { state: 'up', device, detail: "connected: QEMU is connected; the rings start with the guest's driver" };
      case 'running':
        return { state: 'up', device, detail: `running: ${this.runningDetail}` };
      case 'broken':
        return { state: 'down', device, detail: `broken: ${d !== '' ? d : 'guest violation'}; waiting for QEMU to reconnect` };
    }
  }

  /** Cut-through, when the addon's VhostDevice takes part in it (else the switch forwards in JS). */
  override bindSwitch(fib: unknown, mac: number | null, onForwarded: (frames: number) => void): boolean {
    if (typeof (this.device as Partial<NativeVhostDevice>).bindSwitch !== 'function') return false;
    try {
      return super.bindSwitch(fib, mac, onForwarded);
    } catch (err) {
      this.log.warn({ port: this.name, err: (err as Error).message }, 'vhost-user cut-through refused; forwarding in JS');
      return false;
    }
  }

  protected override afterClose(remove: boolean): void {
    this.closeHook?.(remove);
  }
}
