/**
 * Userland TCP endpoint: one `TcpConnection` per 4-tuple, driven by the owner (segments in,
 * segments out through `emit`, timers through `poll`/`nextDeadline`). See connection.ts.
 */
export { TcpConnection } from './connection.js';
export type { TcpNegotiated, TcpSnapshot, TcpState, TcpStats } from './connection.js';
export { DEFAULT_KEEPALIVE, getDefaultCongestion, scaleFor, setDefaultCongestion } from './options.js';
export { CONGESTION_ALGORITHMS } from './congestion.js';
export type { CongestionAlgorithm } from './congestion.js';
export type { CloseReason, KeepaliveOptions, TcpConnectionOptions, TcpHandler } from './options.js';
export {
  ACK,
  EMPTY_PAYLOAD,
  FIN,
  NO_OPTIONS,
  PSH,
  RST,
  SYN,
  describeSegment,
  resetFor,
  segmentLength,
} from './segment.js';
export type { SackRange, Segment, SegmentOptions } from './segment.js';
export { rfc6528Isn } from './isn.js';
export type { FourTuple, IsnGenerator } from './isn.js';
export { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from './seq.js';
