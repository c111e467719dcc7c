/**
 * What the hub needs of a tee ring (plugins/common/tee-ring.ts TeeRing has this shape) and of a
 * port that can tee into one (Port.tee). Kept as interfaces so the hub works with the native ring,
 * the JS fallback and test doubles alike.
 */
export interface RingRecord {
  frame: Buffer;
  origLen: number;
  dir: 1 | 2;
  gsoType: number;
  gsoSize: number;
  tsSec: number;
  tsNsec: number;
}

export interface CaptureRing {
  readonly snaplen: number;
  drain(fn: (r: RingRecord) => void): number;
  readonly dropped: number;
  readonly written: number;
}

export type RingFactory = (bytes: number, snaplen: number) => CaptureRing;

export interface TeeablePort {
  readonly layer: 2 | 3;
  readonly vnetHdrLen: number;
  tee?(ring: CaptureRing | null, dirs: number): void;
}
