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
  tee?(ring: TeeRing | null, dirs: number): void;
}
