/**
 * Packet formats: pure functions over Buffers. Every `parseX` returns `Parsed<T>` (see
 * result.ts) and never throws; `emitX` writes into a caller's Buffer at an offset and returns
 * the length; `encodeX` allocates. Parsed values reference payloads as views, not copies.
 */
export * from './result.js';
export * from './checksum.js';
export * from './mac.js';
export * from './ethernet.js';
export * from './arp.js';
export * from './ipv4.js';
export * from './ipv4-reassembly.js';
export * from './ipv6.js';
export * from './icmpv4.js';
export * from './icmpv6.js';
export * from './udp.js';
export * from './tcp.js';
export * from './dhcpv4.js';
export * from './dns.js';
