/**
 * `struct virtio_net_hdr` (virtio spec §5.1.6, linux/virtio_net.h): the 10-byte header that
 * TAP devices with IFF_VNET_HDR and AF_PACKET with PACKET_VNET_HDR put before each frame.
 * Fields are little-endian, as Linux uses them on little-endian hosts (and for virtio 1.0).
 */
import { fail, ok, type Parsed } from './result.js';

export const VNET_HDR_LEN = 10;

/** Largest GSO super-frame (without the vnet header) a TAP or AF_PACKET socket may carry. */
export const GSO_MAX_FRAME = 65550;

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;

export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

export interface VirtioNetHdr {
  /** NEEDS_CSUM | DATA_VALID. */
  readonly flags: number;
  /** One of the GSO_* values, possibly with GSO_ECN. */
  readonly gsoType: number;
  /** Length of the headers to copy into each segment (a hint). */
  readonly hdrLen: number;
  /** Payload bytes per segment. */
  readonly gsoSize: number;
  /** Where checksumming starts, from the start of the frame. */
  readonly csumStart: number;
  /** Where the checksum goes, from csumStart. */
  readonly csumOffset: number;
}

export const VNET_HDR_NONE: VirtioNetHdr = Object.freeze({ flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 });

export function parseVnetHdr(buf: Buffer): Parsed<VirtioNetHdr> {
  if (buf.length < VNET_HDR_LEN) return fail('vnet', 'truncated', `${buf.length} bytes < 10`);
  return ok({
    flags: buf[0]!,
    gsoType: buf[1]!,
    hdrLen: buf[2]! | (buf[3]! << 8),
    gsoSize: buf[4]! | (buf[5]! << 8),
    csumStart: buf[6]! | (buf[7]! << 8),
    csumOffset: buf[8]! | (buf[9]! << 8),
  });
}

/** Writes the header at `off`; returns 10. */
export function emitVnetHdr(h: VirtioNetHdr, buf: Buffer, off = 0): number {
  buf[off] = h.flags & 0xff;
  buf[off + 1] = h.gsoType & 0xff;
  buf.writeUInt16LE(h.hdrLen & 0xffff, off + 2);
  buf.writeUInt16LE(h.gsoSize & 0xffff, off + 4);
  buf.writeUInt16LE(h.csumStart & 0xffff, off + 6);
  buf.writeUInt16LE(h.csumOffset & 0xffff, off + 8);
  return VNET_HDR_LEN;
}

/** A new Buffer: the header (all zero by default: no offload) followed by a copy of `frame`. */
export function prependVnetHdr(frame: Uint8Array, hdr: VirtioNetHdr = VNET_HDR_NONE): Buffer {
  const out = Buffer.allocUnsafe(VNET_HDR_LEN + frame.length);
  emitVnetHdr(hdr, out, 0);
  out.set(frame, VNET_HDR_LEN);
  return out;
}

/**
 * Frames built with a virtio_net_hdr already written in the VNET_HDR_LEN bytes before them (in
 * the same memory): a port with a vnet header sends the header and frame as one view instead
 * of a copy, and a port without one runs them through normalizeOffload. Only the builder that
 * reserved the headroom adds to it.
 */
const withHeadroom = new WeakSet<Buffer>();

export function markVnetHeadroom(frame: Buffer): void {
  withHeadroom.add(frame);
}

export function hasVnetHeadroom(frame: Buffer): boolean {
  return withHeadroom.has(frame);
}

/** The header and frame as one view of the same memory; only for a frame with headroom. */
export function withVnetHdr(frame: Buffer): Buffer {
  return Buffer.from(frame.buffer, frame.byteOffset - VNET_HDR_LEN, frame.length + VNET_HDR_LEN);
}

/**
 * Frames from a local VM whose TCP checksum the VM left to the device (NEEDS_CSUM): its kernel
 * made the data, so, as Linux does for CHECKSUM_PARTIAL, nothing verifies that checksum.
 * Everything else in the frame (IPv4 header checksum included) is still checked.
 */
const partialCsum = new WeakSet<Buffer>();

export function markPartialCsum(frame: Buffer): void {
  partialCsum.add(frame);
}

export function hasPartialCsum(frame: Buffer): boolean {
  return partialCsum.has(frame);
}
