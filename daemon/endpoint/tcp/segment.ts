/**
 * The segment value the state machine consumes and produces. It is independent of the byte
 * encoding (daemon/wire/tcp.ts): the owner maps wire ↔ Segment. Flag values are those of the
 * TCP header's flags byte, so the mapping is a plain copy.
 *
 * Ownership: a Segment passed to `emit` (and its `payload`, often a view of the connection's
 * send buffer) is valid only during that call; encode or copy it before returning.
 */

export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const PSH = 0x08;
export const ACK = 0x10;

/** A SACK block (RFC 2018): `[start, end)` in sequence space. */
export type SackRange = readonly [start: number, end: number];

export interface SegmentOptions {
  /** Maximum segment size (SYN only). */
  readonly mss?: number;
  /** Window scale shift count as sent (SYN only; the receiver clamps it to 14). */
  readonly wscale?: number;
  /** SACK-permitted (SYN only). */
  readonly sackPermitted?: boolean;
  readonly sack?: readonly SackRange[];
  /** Timestamps (RFC 7323): `[TSval, TSecr]`. */
  readonly ts?: readonly [val: number, ecr: number];
}

export interface Segment {
  readonly seq: number;
  readonly ack: number;
  /** FIN | SYN | RST | PSH | ACK. */
  readonly flags: number;
  /** The 16-bit window field as on the wire (not scaled). */
  readonly window: number;
  readonly options: SegmentOptions;
  readonly payload: Buffer;
}

export const NO_OPTIONS: SegmentOptions = Object.freeze({});
export const EMPTY_PAYLOAD: Buffer = Buffer.alloc(0);

/** Sequence space the segment occupies: payload plus one each for SYN and FIN. */
export function segmentLength(seg: Segment): number {
  return seg.payload.length + (seg.flags & SYN ? 1 : 0) + (seg.flags & FIN ? 1 : 0);
}

/**
 * The reset a closed port answers with (RFC 9293 §3.10.7.1), for a segment that matches no
 * connection; `null` for a RST (never answered).
 */
export function resetFor(seg: Segment): Segment | null {
  if (seg.flags & RST) return null;
  if (seg.flags & ACK) {
    return { seq: seg.ack, ack: 0, flags: RST, window: 0, options: NO_OPTIONS, payload: EMPTY_PAYLOAD };
  }
  return {
    seq: 0,
    ack: (seg.seq + segmentLength(seg)) >>> 0,
    flags: RST | ACK,
    window: 0,
    options: NO_OPTIONS,
    payload: EMPTY_PAYLOAD,
  };
}

/** A one-line description for logs and test failures, e.g. `S.A seq=1 ack=2 win=100 len=0`. */
export function describeSegment(seg: Segment): string {
  const f = seg.flags;
  const flags =
    (f & SYN ? 'S' : '') + (f & FIN ? 'F' : '') + (f & RST ? 'R' : '') + (f & PSH ? 'P' : '') + (f & ACK ? '.' : '');
  const o = seg.options;
  let opts = '';
  if (o.mss !== undefined) opts += ` mss=${o.mss}`;
  if (o.wscale !== undefined) opts += ` ws=${o.wscale}`;
  if (o.sackPermitted) opts += ' sackOK';
  if (o.sack) opts += ` sack=${o.sack.map(([a, b]) => `${a}-${b}`).join(',')}`;
  if (o.ts) opts += ` ts=${o.ts[0]}/${o.ts[1]}`;
  return `${flags || '-'} seq=${seg.seq} ack=${seg.ack} win=${seg.window} len=${seg.payload.length}${opts}`;
}
