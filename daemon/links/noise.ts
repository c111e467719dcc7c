/**
 * The handshake: Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, built as WireGuard builds it (one round
 * trip, the initiator's static key sent encrypted), with mvnet's own identifier and labels so
 * that it never completes with a WireGuard peer, or any other protocol, by accident. Pure
 * functions: keys, ephemerals, timestamps and indices are arguments, so the test vectors
 * (docs/links-protocol.md) are reproduced byte for byte. Each DH goes through the `Dh` given,
 * so callers can count them.
 */
import type { KeyObject } from 'node:crypto';
import type { KeyPair } from './keys.js';
import { aeadOpen, aeadSeal, hash, kdf1, kdf2, kdf3 } from './primitives.js';
import { encodeInitiation, encodeResponse, type Initiation, type Response } from './messages.js';

export const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
/** Noise's prologue, mixed into h: any other value (WireGuard's included) makes every AEAD fail. */
export const IDENTIFIER = 'mvnet link protocol v1';

/** Noise's initial chaining key and hash for a protocol identifier (the prologue). */
export interface ProtocolStart {
  ck: Buffer;
  h: Buffer;
}

export function protocolStart(identifier: string): ProtocolStart {
  const ck = hash(Buffer.from(CONSTRUCTION));
  return { ck, h: hash(ck, Buffer.from(identifier)) };
}

/**
 * mvnet's. Another start is only for checking this construction against WireGuard itself (same
 * steps, WireGuard's identifier): see docs/links-protocol.md "Checked against WireGuard".
 */
export const MVNET_START = protocolStart(IDENTIFIER);
const EMPTY = Buffer.alloc(0);
const ZERO_PSK = Buffer.alloc(32);

/** X25519, or null for an all-zero result (a low-order point) or a key that does not import. */
export type Dh = (priv: KeyObject, pub: Buffer) => Buffer | null;

export type HandshakeFailure = 'bad-key' | 'bad-mac' | 'unknown-peer';

/** h after mixing in the responder's static key: per local key, computed once. */
export function initialHash(responderStatic: Buffer, start = MVNET_START): Buffer {
  return hash(start.h, responderStatic);
}

/** 12-byte TAI64N of a wall-clock time in ms, rounded down to 2^24 ns (WireGuard's whitening: it tells no fine time). */
export function tai64n(wallMs: number): Buffer {
  const b = Buffer.alloc(12);
  const secs = Math.floor(wallMs / 1000);
  const nanos = Math.floor((wallMs - secs * 1000) * 1e6);
  b.writeBigUInt64BE(0x400000000000000an + BigInt(secs), 0);
  b.writeUInt32BE((nanos & ~0xffffff) >>> 0, 8);
  return b;
}

export interface InitiatorState {
  ck: Buffer;
  h: Buffer;
  ephemeral: KeyPair;
  sender: number;
}

export interface TransportKeys {
  send: Buffer;
  recv: Buffer;
}

/**
 * The initiation (mac1 and mac2 still zero) and the state to complete the handshake with.
 * `ss` is DH(local static, remote static), computed once per peer. Null when a DH fails.
 */
export function createInitiation(a: {
  localPublic: Buffer;
  remoteStatic: Buffer;
  ss: Buffer;
  ephemeral: KeyPair;
  timestamp: Buffer;
  sender: number;
  dh: Dh;
  start?: ProtocolStart;
}): { message: Buffer; state: InitiatorState } | null {
  const start = a.start ?? MVNET_START;
  let h = initialHash(a.remoteStatic, start);
  let ck = kdf1(start.ck, a.ephemeral.publicKey);
  h = hash(h, a.ephemeral.publicKey);
  const es = a.dh(a.ephemeral.privateKey, a.remoteStatic);
  if (es === null) return null;
  let k: Buffer;
  [ck, k] = kdf2(ck, es);
  const encryptedStatic = aeadSeal(k, 0n, a.localPublic, h);
  h = hash(h, encryptedStatic);
  [ck, k] = kdf2(ck, a.ss);
  const encryptedTimestamp = aeadSeal(k, 0n, a.timestamp, h);
  h = hash(h, encryptedTimestamp);
  const message = encodeInitiation({ sender: a.sender, ephemeral: a.ephemeral.publicKey, encryptedStatic, encryptedTimestamp });
  return { message, state: { ck, h, ephemeral: a.ephemeral, sender: a.sender } };
}

export interface ConsumedInitiation<P> {
  peer: P;
  remoteStatic: Buffer;
  remoteEphemeral: Buffer;
  timestamp: Buffer;
  sender: number;
  ck: Buffer;
  h: Buffer;
}

/**
 * Opens an initiation addressed to `local`. `lookup` names the peer of a decrypted static key
 * and gives its precomputed `ss` (null: not a peer). Costs one DH (the ss is precomputed).
 */
export function consumeInitiation<P>(a: {
  local: KeyPair;
  localHash: Buffer;
  msg: Initiation;
  dh: Dh;
  lookup: (remoteStatic: Buffer) => { peer: P; ss: Buffer } | null;
}): { ok: true; value: ConsumedInitiation<P> } | { ok: false; reason: HandshakeFailure } {
  const e = a.msg.ephemeral;
  let ck = kdf1(MVNET_START.ck, e);
  let h = hash(a.localHash, e);
  const es = a.dh(a.local.privateKey, e);
  if (es === null) return { ok: false, reason: 'bad-key' };
  let k: Buffer;
  [ck, k] = kdf2(ck, es);
  const remoteStatic = aeadOpen(k, 0n, a.msg.encryptedStatic, h);
  if (remoteStatic === null) return { ok: false, reason: 'bad-mac' };
  h = hash(h, a.msg.encryptedStatic);
  const found = a.lookup(remoteStatic);
  if (found === null) return { ok: false, reason: 'unknown-peer' };
  [ck, k] = kdf2(ck, found.ss);
  const timestamp = aeadOpen(k, 0n, a.msg.encryptedTimestamp, h);
  if (timestamp === null) return { ok: false, reason: 'bad-mac' };
  h = hash(h, a.msg.encryptedTimestamp);
  return { ok: true, value: { peer: found.peer, remoteStatic, remoteEphemeral: Buffer.from(e), timestamp, sender: a.msg.sender, ck, h } };
}

/** The response (macs zero) and the responder's transport keys. Costs two DHs; null when one fails. */
export function createResponse(a: {
  init: { ck: Buffer; h: Buffer; remoteEphemeral: Buffer; remoteStatic: Buffer; sender: number };
  ephemeral: KeyPair;
  sender: number;
  psk: Buffer | null;
  dh: Dh;
}): { message: Buffer; keys: TransportKeys } | null {
  const E = a.ephemeral.publicKey;
  let ck = kdf1(a.init.ck, E);
  let h = hash(a.init.h, E);
  const ee = a.dh(a.ephemeral.privateKey, a.init.remoteEphemeral);
  const se = a.dh(a.ephemeral.privateKey, a.init.remoteStatic);
  if (ee === null || se === null) return null;
  ck = kdf1(ck, ee);
  ck = kdf1(ck, se);
  const [ck2, tau, k] = kdf3(ck, a.psk ?? ZERO_PSK);
  h = hash(h, tau);
  const encryptedNothing = aeadSeal(k, 0n, EMPTY, h);
  const [recv, send] = kdf2(ck2, EMPTY);
  const message = encodeResponse({ sender: a.sender, receiver: a.init.sender, ephemeral: E, encryptedNothing });
  return { message, keys: { send, recv } };
}

/** Completes the initiator's side: its transport keys, or why the response is refused. Costs two DHs. */
export function consumeResponse(a: {
  state: InitiatorState;
  localPrivate: KeyObject;
  msg: Response;
  psk: Buffer | null;
  dh: Dh;
}): { ok: true; keys: TransportKeys } | { ok: false; reason: 'bad-key' | 'bad-mac' } {
  const E = a.msg.ephemeral;
  let ck = kdf1(a.state.ck, E);
  let h = hash(a.state.h, E);
  const ee = a.dh(a.state.ephemeral.privateKey, E);
  const se = a.dh(a.localPrivate, E);
  if (ee === null || se === null) return { ok: false, reason: 'bad-key' };
  ck = kdf1(ck, ee);
  ck = kdf1(ck, se);
  const [ck2, tau, k] = kdf3(ck, a.psk ?? ZERO_PSK);
  h = hash(h, tau);
  if (aeadOpen(k, 0n, a.msg.encryptedNothing, h) === null) return { ok: false, reason: 'bad-mac' };
  const [send, recv] = kdf2(ck2, EMPTY);
  return { ok: true, keys: { send, recv } };
}
