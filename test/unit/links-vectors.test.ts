/**
 * The test vectors of docs/links-protocol.md, reproduced byte for byte: fixed static and
 * ephemeral keys, indices and timestamp through the real Device (so the vectors pin down the
 * whole construction, mac1 and padding included). If one of these changes, the protocol changed:
 * update the spec, and make it a new protocol version.
 */
import { describe, expect, it } from 'vitest';
import { keyPairFromPrivate, privateKeyFromRaw, type KeyPair } from '../../daemon/links/keys.js';
import { Device, defaultEntropy } from '../../daemon/links/device.js';
import { CookieChecker } from '../../daemon/links/cookie.js';
import { decodeCookieReply, INITIATION_MAC1 } from '../../daemon/links/messages.js';
import { CookieGenerator } from '../../daemon/links/cookie.js';
import { tai64n } from '../../daemon/links/noise.js';
import type { TransportAead } from '../../daemon/links/transport.js';
import { nativeTransportAead } from '../../plugins/native/index.js';

const seq = (start: number): Buffer => Buffer.from(Array.from({ length: 32 }, (_, i) => start + i));
const kp = (raw: Buffer): KeyPair => keyPairFromPrivate(privateKeyFromRaw(raw));

export const VECTOR_INPUTS = {
  initiatorStatic: seq(0x00),
  responderStatic: seq(0x20),
  initiatorEphemeral: seq(0x40),
  responderEphemeral: seq(0x60),
  initiatorIndex: 0x11223344,
  responderIndex: 0x55667788,
  wallMs: Date.UTC(2026, 0, 1),
  // An Ethernet frame: broadcast, from 02:00:00:00:00:01, EtherType 0x88b5 (local experimental), 22 bytes of text (36 in all).
  frame: Buffer.concat([Buffer.from('ffffffffffff020000000001' + '88b5', 'hex'), Buffer.from('mvnet link test vector')]),
  cookieSource: '198.51.100.7:51820',
  cookieSecret: Buffer.alloc(32, 0xc5),
  cookieNonce: Buffer.from(Array.from({ length: 24 }, (_, i) => 0x80 + i)),
};

/** The vectors, made by two Devices whose transport AEAD is `aead` (default: node:crypto's). */
function run(aead?: TransportAead): Record<string, string> {
  const v = VECTOR_INPUTS;
  const i = new Device({
    aead,
    privateKey: privateKeyFromRaw(v.initiatorStatic),
    wallClock: () => v.wallMs,
    entropy: { ephemeral: () => kp(v.initiatorEphemeral), index: () => v.initiatorIndex, jitter: () => 0 },
  });
  const r = new Device({
    aead,
    privateKey: privateKeyFromRaw(v.responderStatic),
    wallClock: () => v.wallMs,
    entropy: { ephemeral: () => kp(v.responderEphemeral), index: () => v.responderIndex, jitter: () => 0 },
  });
  const ir = i.addPeer({ publicKey: r.publicKey });
  r.addPeer({ publicKey: i.publicKey });
  const init = ir.handshakeInit(0)!;
  const resp = r.receive(init, 0, 'i');
  if (resp.kind !== 'reply') throw new Error(resp.kind);
  const done = i.receive(resp.packets[0]!, 0, 'r');
  if (done.kind !== 'reply') throw new Error(done.kind);
  const sent = ir.send(v.frame, 0);
  const got = r.receive(sent.packets[0]!, 0, 'i');
  if (got.kind !== 'data' || !got.payload.equals(v.frame)) throw new Error('transport did not open');
  // The cookie reply the responder sends (under load) to that initiation, with a fixed secret and nonce.
  const fixed = [v.cookieSecret, v.cookieNonce];
  const checker = new CookieChecker(r.publicKey, () => fixed.shift() ?? defaultEntropy.bytes(32));
  const cookieReply = checker.createReply(init, INITIATION_MAC1, v.initiatorIndex, v.cookieSource, 0);
  return {
    initiatorStaticPublic: i.publicKey.toString('hex'),
    responderStaticPublic: r.publicKey.toString('hex'),
    initiatorEphemeralPublic: kp(v.initiatorEphemeral).publicKey.toString('hex'),
    responderEphemeralPublic: kp(v.responderEphemeral).publicKey.toString('hex'),
    timestamp: tai64n(v.wallMs).toString('hex'),
    initiation: init.toString('hex'),
    response: resp.packets[0]!.toString('hex'),
    keepalive: done.packets[0]!.toString('hex'),
    transport: sent.packets[0]!.toString('hex'),
    cookieReply: cookieReply.toString('hex'),
  };
}

const EXPECTED: Record<string, string> = {
  initiatorStaticPublic:
    '8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f',
  responderStaticPublic:
    '358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254',
  initiatorEphemeralPublic:
    '79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a',
  responderEphemeralPublic:
    '675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f',
  timestamp:
    '400000006955b90a00000000',
  initiation:
    '010000004433221179a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51af0225eb421886af8f54fb31289d49dcd82b0f6f3279d40d7cff913fece0c64ad5761a4588a4402b2cbee94c5a5d95a8178a74e93723962828ff4ecc1e2036b8c9aa6d2e8df3441306683534d622032a74e37db81140e0946d586b8a200000000000000000000000000000000',
  response:
    '020000008877665544332211675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52fe9132d0018a3a687a17cb73d9d96e190563ab39eff3883290fb03722f5aa071700000000000000000000000000000000',
  keepalive:
    '04000000887766550000000000000000291241ac6c6d0b472543a7c56d5dbcd0',
  transport:
    '040000008877665501000000000000005746fefaf64631b2da626ecdc799891a568a2d0882720d76b057dfa7bc1df1f296dd73903ed02d777bf52d0180c2be43453bbf2998e732b4c91d566e825a8020',
  cookieReply:
    '0300000044332211808182838485868788898a8b8c8d8e8f9091929394959697e3eecf6e07d257a96153541ae0885e5a8212585d44c1ab70704cb72b87f0da83',
};

describe('links: test vectors (docs/links-protocol.md)', () => {
  it('reproduces every vector byte for byte', () => {
    const got = run();
    if (process.env.LINKS_VECTORS_PRINT === '1') console.log(JSON.stringify(got, null, 2));
    expect(got).toEqual(EXPECTED);
  });

  it('reproduces every vector with the native addon\'s transport AEAD (the one the daemon uses)', () => {
    const aead = nativeTransportAead();
    expect(aead, 'the addon has no aeadSeal (built without the OpenSSL headers?)').not.toBeNull();
    expect(run(aead!)).toEqual(EXPECTED);
  });

  it('the cookie of the vector opens at the initiator and gives mac2', () => {
    const v = VECTOR_INPUTS;
    const got = run();
    const g = new CookieGenerator(Buffer.from(got.responderStaticPublic!, 'hex'));
    const init = Buffer.from(got.initiation!, 'hex');
    g.addMacs(init, INITIATION_MAC1, 0);
    expect(init.toString('hex')).toBe(got.initiation);
    const reply = decodeCookieReply(Buffer.from(got.cookieReply!, 'hex'));
    expect(reply.ok && g.consumeReply(reply.value, 0)).toBe(true);
    const checker = new CookieChecker(Buffer.from(got.responderStaticPublic!, 'hex'), (n) => (n === 32 ? v.cookieSecret : v.cookieNonce));
    checker.createReply(init, INITIATION_MAC1, 1, v.cookieSource, 0);
    g.addMacs(init, INITIATION_MAC1, 0);
    expect(checker.checkMac2(init, INITIATION_MAC1 + 16, v.cookieSource, 0)).toBe(true);
    expect(checker.checkMac2(init, INITIATION_MAC1 + 16, '203.0.113.9:51820', 0)).toBe(false);
  });
});
