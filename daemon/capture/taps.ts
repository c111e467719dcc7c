/**
 * The hooks the switch and the router call while a capture needs them. Each holds a
 * `capture: …Tap | null` field the hub sets: when nothing captures there, a hook costs one null check.
 */
import type { ExitName } from './points.js';

export interface SwitchTap {
  /** Frames the gateway sends into the network (Ethernet, no virtio-net header). */
  fromGateway(frames: readonly Buffer[]): void;
  /** A frame from `vm` the switch dropped; `hdrLen`: virtio-net header bytes before the Ethernet header. */
  dropped(frame: Buffer, hdrLen: number, reason: string, vm: string): void;
}

export interface RouterTap {
  /** Whether exit points are captured (then the router works out each packet's decision). */
  readonly exits: boolean;
  /**
   * A bare IP packet handed to a route exit (`out`, from the VM) or handed back from it (`in`, to
   * the VM); `comment`: the flow's decision. exit null: the flow reaches no exit (refused, dropped).
   */
  exit(exit: ExitName | null, packet: Buffer, dir: 'in' | 'out', comment: string): void;
  /** A frame from `vm` the router dropped, `comment` saying why. */
  dropped(frame: Buffer, comment: string, vm: string): void;
}
