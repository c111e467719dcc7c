/**
 * Internet checksum (RFC 1071) and friends.
 *
 * Vocabulary: a *sum* is the one's-complement sum of 16-bit big-endian words, folded to
 * 16 bits (0..0xffff); sums compose with `addSums`. A *checksum* is the complement of a sum,
 * the value written into a header. A packet whose checksum field is correct sums to 0xffff.
 *
 * Long ranges are summed 32 bits at a time through a native-endian Uint32Array view of the
 * Buffer's memory (the one's-complement sum commutes with byte swapping, RFC 1071 §2(B)),
 * which is several times faster than reading byte pairs.
 */

/** Fold any non-negative integer below 2^53 into 16 bits with end-around carry. */
export function foldSum(sum: number): number {
  while (sum > 0xffffffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  sum = (sum >>> 16) + (sum & 0xffff);
  return (sum >>> 16) + (sum & 0xffff);
}

export function addSums(a: number, b: number): number {
  return foldSum(a + b);
}

/** Complement of a folded sum: the value to store in a checksum field. */
export function finishChecksum(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

const SWAP_THRESHOLD = 64;
let cachedBuffer: ArrayBufferLike | undefined;
let cachedWords: Uint32Array = new Uint32Array(0);

function wordsOf(buffer: ArrayBufferLike): Uint32Array {
  if (buffer !== cachedBuffer) {
    cachedWords = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
    cachedBuffer = buffer;
  }
  return cachedWords;
}

/** Sum of bytes [start, end) paired from `start` (start is a high byte), not folded. */
function sumPairs(buf: Uint8Array, start: number, end: number): number {
  let a = 0;
  let b = 0;
  let i = start;
  const end8 = end - 7;
  for (; i < end8; i += 8) {
    a += ((buf[i]! << 8) | buf[i + 1]!) + ((buf[i + 2]! << 8) | buf[i + 3]!);
    b += ((buf[i + 4]! << 8) | buf[i + 5]!) + ((buf[i + 6]! << 8) | buf[i + 7]!);
  }
  let sum = a + b;
  const end2 = end - 1;
  for (; i < end2; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  return sum;
}

/** The addon's onesSum (plugins/native csum.cc), once the addon is loaded; else null. */
type NativeOnesSum = (buf: Uint8Array, start: number, end: number) => number;
let nativeSum: NativeOnesSum | null = null;
/**
 * Ranges at least this long go to native code: below it the call costs more than it saves
 * (measured: the JS loop and the call break even around a few hundred bytes).
 */
export const NATIVE_SUM_MIN = 512;

/**
 * Sums of long ranges go to `f` from now on (null: JavaScript again). The addon's loader
 * installs it (daemon/wire may not import plugins); tests without the addon keep the JS path.
 */
export function useNativeOnesSum(f: NativeOnesSum | null): void {
  nativeSum = f;
}

/**
 * One's-complement sum of `buf[start, end)` as big-endian 16-bit words (an odd final byte is
 * padded with zero), plus `initial`; folded to 16 bits. Out-of-range bounds are clamped.
 */
export function onesSum(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  if (start < 0) start = 0;
  if (end > buf.length) end = buf.length;
  if (end <= start) return foldSum(initial);
  const len = end - start;
  if (len < SWAP_THRESHOLD) return foldSum(sumPairs(buf, start, end) + initial);
  if (nativeSum !== null && len >= NATIVE_SUM_MIN) return foldSum(nativeSum(buf, start, end) + initial);
  return jsOnesSum(buf, start, end, initial);
}

/** onesSum in JavaScript (ranges of at least SWAP_THRESHOLD bytes, bounds already clamped). */
export function jsOnesSum(buf: Uint8Array, start: number, end: number, initial = 0): number {

  // Head: bytes up to a 4-byte aligned absolute address, paired from `start`.
  const abs = buf.byteOffset + start;
  const head = (4 - (abs & 3)) & 3;
  let sum = sumPairs(buf, start, start + head);
  const alignedStart = start + head;
  const words = (end - alignedStart) >>> 2;
  const u32 = wordsOf(buf.buffer);
  const w0 = (buf.byteOffset + alignedStart) >>> 2;
  const w1 = w0 + words;
  let lo = 0;
  let hi = 0;
  for (let k = w0; k < w1; k++) {
    const w = u32[k]!;
    lo += w & 0xffff;
    hi += w >>> 16;
  }
  // Little-endian words give the byte-swapped sum; if the aligned block starts at an odd
  // distance from `start` the pairing is swapped too and the two swaps cancel.
  let mid = foldSum(lo + hi);
  const littleEndian = LITTLE_ENDIAN;
  if (littleEndian === ((head & 1) === 0)) mid = ((mid & 0xff) << 8) | (mid >>> 8);
  sum += mid;
  // Tail: continues the pairing from `start`.
  let i = alignedStart + words * 4;
  if (i < end && ((i - start) & 1) === 1) {
    sum += buf[i]!;
    i++;
  }
  sum += sumPairs(buf, i, end);
  return foldSum(sum + initial);
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The checksum (complemented sum) of `buf[start, end)` plus `initial` (e.g. a pseudo-header sum). */
export function internetChecksum(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  return finishChecksum(onesSum(buf, start, end, initial));
}

/** True when the range, including its checksum field, sums to 0xffff. */
export function verifyChecksum(buf: Uint8Array, start = 0, end = buf.length, initial = 0): boolean {
  return onesSum(buf, start, end, initial) === 0xffff;
}

/** Sum of a 32-bit value as two 16-bit words. */
export function sum32(value: number): number {
  return foldSum((value >>> 16) + (value & 0xffff));
}

/** IPv4 pseudo-header sum (RFC 793/768): addresses as 32-bit numbers, `length` of the L4 segment. */
export function pseudoHeaderSumV4(src: number, dst: number, protocol: number, length: number): number {
  return foldSum((src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length);
}

/** IPv4 pseudo-header sum reading the addresses from the IPv4 header at `ipOff` in `buf`. */
export function pseudoHeaderSumV4At(buf: Uint8Array, ipOff: number, protocol: number, length: number): number {
  return onesSum(buf, ipOff + 12, ipOff + 20, protocol + length);
}

/** IPv6 pseudo-header sum (RFC 8200 §8.1): addresses as 16-byte buffers. */
export function pseudoHeaderSumV6(src: Uint8Array, dst: Uint8Array, nextHeader: number, length: number): number {
  const lenSum = (Math.floor(length / 0x10000) & 0xffff) + (length & 0xffff);
  return foldSum(onesSum(src, 0, 16) + onesSum(dst, 0, 16) + nextHeader + lenSum);
}

/** IPv6 pseudo-header sum reading both addresses from the IPv6 header at `ipOff` in `buf`. */
export function pseudoHeaderSumV6At(buf: Uint8Array, ipOff: number, nextHeader: number, length: number): number {
  const lenSum = (Math.floor(length / 0x10000) & 0xffff) + (length & 0xffff);
  return onesSum(buf, ipOff + 8, ipOff + 40, nextHeader + lenSum);
}

/** Addresses for an L4 pseudo-header: IPv4 as numbers, IPv6 as 16-byte buffers. */
export type IpPseudo =
  | { readonly version: 4; readonly src: number; readonly dst: number }
  | { readonly version: 6; readonly src: Uint8Array; readonly dst: Uint8Array };

export function pseudoHeaderSum(p: IpPseudo, protocol: number, length: number): number {
  return p.version === 4
    ? pseudoHeaderSumV4(p.src, p.dst, protocol, length)
    : pseudoHeaderSumV6(p.src, p.dst, protocol, length);
}

/**
 * RFC 1624 incremental update: the new checksum after one 16-bit word of the covered data
 * changed from `oldWord` to `newWord` (HC' = ~(~HC + ~m + m')).
 */
export function adjustChecksum(checksum: number, oldWord: number, newWord: number): number {
  return ~foldSum((~checksum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff)) & 0xffff;
}

/** RFC 1624 update for a changed 32-bit field (an IPv4 address in NAT, a sequence number). */
export function adjustChecksum32(checksum: number, oldValue: number, newValue: number): number {
  const c = adjustChecksum(checksum, oldValue >>> 16, newValue >>> 16);
  return adjustChecksum(c, oldValue & 0xffff, newValue & 0xffff);
}
