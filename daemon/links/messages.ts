/**
 * The four messages of the link protocol: a checked decode for untrusted bytes and an encode
 * for each (layouts in docs/links-protocol.md). Decoders never throw: they answer
 * `{ ok: false, error }` (daemon/wire/result.ts) with the reason, and hand back views into the
 * given buffer, not copies. Integers are little-endian, as in WireGuard.
 */
import { fail, ok, type Parsed } from '../wire/result.js';

export const MSG_INITIATION = 1;
export const MSG_RESPONSE = 2;
export const MSG_COOKIE_REPLY = 3;
export const MSG_TRANSPORT = 4;

export const INITIATION_LEN = 148;
export const RESPONSE_LEN = 92;
export const COOKIE_REPLY_LEN = 64;
/** Header (16) + the tag (16): an empty transport message, which is a keepalive. */
export const TRANSPORT_MIN_LEN = 32;
export const TRANSPORT_HEADER_LEN = 16;
/** Largest transport message: a 65 535-byte frame and its trailer (65 536, no padding left), header and tag. */
export const TRANSPORT_MAX_LEN = TRANSPORT_HEADER_LEN + 65536 + 16;

/** Where mac1 and mac2 sit in the two handshake messages (each MAC covers everything before it). */
export const INITIATION_MAC1 = 116;
export const INITIATION_MAC2 = 132;
export const RESPONSE_MAC1 = 60;
export const RESPONSE_MAC2 = 76;

export interface Initiation {
  sender: number;
  ephemeral: Buffer; // 32
  encryptedStatic: Buffer; // 32 + 16
  encryptedTimestamp: Buffer; // 12 + 16
  mac1: Buffer;
  mac2: Buffer;
}

export interface Response {
  sender: number;
  receiver: number;
  ephemeral: Buffer; // 32
  encryptedNothing: Buffer; // 0 + 16
  mac1: Buffer;
  mac2: Buffer;
}

export interface CookieReply {
  receiver: number;
  nonce: Buffer; // 24
  encryptedCookie: Buffer; // 16 + 16
}

export interface Transport {
  receiver: number;
  counter: bigint;
  /** The padded plaintext's ciphertext and its tag. */
  sealed: Buffer;
}

/** The message type of `b`, or null when it is too short to have one. Says nothing about validity. */
export function messageType(b: Buffer): number | null {
  return b.length >= 4 ? b[0]! : null;
}

function header(b: Buffer, type: number, name: string): Parsed<null> {
  if (b.length < 4) return fail('link', 'truncated', `${name}: ${b.length} bytes`);
  if (b[0] !== type) return fail('link', 'bad-value', `${name}: type ${b[0]}`);
  if (b[1] !== 0 || b[2] !== 0 || b[3] !== 0) return fail('link', 'bad-value', `${name}: reserved bytes not zero`);
  return ok(null);
}

function exactLength(b: Buffer, len: number, name: string): Parsed<null> {
  if (b.length !== len) return fail('link', b.length < len ? 'truncated' : 'bad-length', `${name}: ${b.length} bytes, not ${len}`);
  return ok(null);
}

function writeHeader(b: Buffer, type: number): void {
  b[0] = type;
  b[1] = 0;
  b[2] = 0;
  b[3] = 0;
}

function put(b: Buffer, at: number, field: Buffer, len: number, name: string): void {
  if (field.length !== len) throw new RangeError(`${name} is ${len} bytes, not ${field.length}`);
  field.copy(b, at);
}

export function decodeInitiation(b: Buffer): Parsed<Initiation> {
  const h = header(b, MSG_INITIATION, 'initiation');
  if (!h.ok) return h;
  const l = exactLength(b, INITIATION_LEN, 'initiation');
  if (!l.ok) return l;
  return ok({
    sender: b.readUInt32LE(4),
    ephemeral: b.subarray(8, 40),
    encryptedStatic: b.subarray(40, 88),
    encryptedTimestamp: b.subarray(88, 116),
    mac1: b.subarray(116, 132),
    mac2: b.subarray(132, 148),
  });
}

/** An initiation with mac1 and mac2 zero (cookie.ts fills them in). */
export function encodeInitiation(m: Omit<Initiation, 'mac1' | 'mac2'>): Buffer {
  const b = Buffer.alloc(INITIATION_LEN);
  writeHeader(b, MSG_INITIATION);
  b.writeUInt32LE(m.sender >>> 0, 4);
  put(b, 8, m.ephemeral, 32, 'ephemeral');
  put(b, 40, m.encryptedStatic, 48, 'encrypted static');
  put(b, 88, m.encryptedTimestamp, 28, 'encrypted timestamp');
  return b;
}

export function decodeResponse(b: Buffer): Parsed<Response> {
  const h = header(b, MSG_RESPONSE, 'response');
  if (!h.ok) return h;
  const l = exactLength(b, RESPONSE_LEN, 'response');
  if (!l.ok) return l;
  return ok({
    sender: b.readUInt32LE(4),
    receiver: b.readUInt32LE(8),
    ephemeral: b.subarray(12, 44),
    encryptedNothing: b.subarray(44, 60),
    mac1: b.subarray(60, 76),
    mac2: b.subarray(76, 92),
  });
}

/** A response with mac1 and mac2 zero (cookie.ts fills them in). */
export function encodeResponse(m: Omit<Response, 'mac1' | 'mac2'>): Buffer {
  const b = Buffer.alloc(RESPONSE_LEN);
  writeHeader(b, MSG_RESPONSE);
  b.writeUInt32LE(m.sender >>> 0, 4);
  b.writeUInt32LE(m.receiver >>> 0, 8);
  put(b, 12, m.ephemeral, 32, 'ephemeral');
  put(b, 44, m.encryptedNothing, 16, 'encrypted nothing');
  return b;
}

export function decodeCookieReply(b: Buffer): Parsed<CookieReply> {
  const h = header(b, MSG_COOKIE_REPLY, 'cookie reply');
  if (!h.ok) return h;
  const l = exactLength(b, COOKIE_REPLY_LEN, 'cookie reply');
  if (!l.ok) return l;
  return ok({ receiver: b.readUInt32LE(4), nonce: b.subarray(8, 32), encryptedCookie: b.subarray(32, 64) });
}

export function encodeCookieReply(m: CookieReply): Buffer {
  const b = Buffer.alloc(COOKIE_REPLY_LEN);
  writeHeader(b, MSG_COOKIE_REPLY);
  b.writeUInt32LE(m.receiver >>> 0, 4);
  put(b, 8, m.nonce, 24, 'nonce');
  put(b, 32, m.encryptedCookie, 32, 'encrypted cookie');
  return b;
}

export function decodeTransport(b: Buffer): Parsed<Transport> {
  const h = header(b, MSG_TRANSPORT, 'transport');
  if (!h.ok) return h;
  if (b.length < TRANSPORT_MIN_LEN) return fail('link', 'truncated', `transport: ${b.length} bytes`);
  if (b.length > TRANSPORT_MAX_LEN) return fail('link', 'bad-length', `transport: ${b.length} bytes > ${TRANSPORT_MAX_LEN}`);
  // The plaintext is padded to 16 bytes: any other length was not made by a sender of this protocol.
  if ((b.length - TRANSPORT_MIN_LEN) % 16 !== 0) return fail('link', 'bad-length', `transport: ${b.length} bytes, plaintext not a multiple of 16`);
  return ok({ receiver: b.readUInt32LE(4), counter: b.readBigUInt64LE(8), sealed: b.subarray(16) });
}

/** The 16-byte transport header; the sealed payload follows it. */
export function encodeTransportHeader(receiver: number, counter: bigint): Buffer {
  const b = Buffer.alloc(TRANSPORT_HEADER_LEN);
  writeHeader(b, MSG_TRANSPORT);
  b.writeUInt32LE(receiver >>> 0, 4);
  b.writeBigUInt64LE(counter, 8);
  return b;
}
