/**
 * What the hub needs of a port's tee: the ring (plugins/common/tee-ring.ts) and a port that can
 * tee into one (Port.tee; the daemon wraps every port with withTee, so each has one).
 */
import type { TeeRecord, TeeRing } from '../../plugins/common/tee-ring.js';

export type CaptureRing = TeeRing;
export type RingRecord = TeeRecord;
export type RingFactory = (bytes: number, snaplen: number) => TeeRing;

export interface TeeablePort {
  readonly layer: 2 | 3;
  /** Largest frame without vnet header; with a vnet header (vnetHdrLen > 0) TSO super-frames may be larger. */
  readonly maxFrame?: number;
  readonly vnetHdrLen?: number;
  tee?(ring: TeeRing | null, dirs: number, program?: Uint32Array | null): void;
}
