/**
 * The link protocol's Device end to end in memory: handshake and data, tampering at every
 * offset, replays, unknown keys, the cookie defence under a flood, rekey/reject/keepalive/retry
 * timers on a fake clock, counter exhaustion and roaming.
 */
import { describe, expect, it } from 'vitest';
import { fixedEntropy, fixedKeyPair, handshake, lab, type Lab } from '../support/links-lab.js';
import { Device, type Peer, type Received } from '../../daemon/links/device.js';
import { CookieGenerator } from '../../daemon/links/cookie.js';
import { encodeInitiation, INITIATION_LEN, INITIATION_MAC1, INITIATION_MAC2, RESPONSE_LEN, RESPONSE_MAC2 } from '../../daemon/links/messages.js';
import { setSendCounterForTest, REKEY_AFTER_MESSAGES, REJECT_AFTER_MESSAGES, type Keypair } from '../../daemon/links/transport.js';
import { MAX_HANDSHAKE_ATTEMPTS, REJECT_AFTER_TIME_MS, REKEY_AFTER_TIME_MS, REKEY_TIMEOUT_MS } from '../../daemon/links/timers.js';

const frame = (n: number, len = 100): Buffer => Buffer.alloc(len, n & 0xff);
const flip = (b: Buffer, at: number): Buffer => {
  const c = Buffer.from(b);
  c[at] = c[at]! ^ 0x01;
  return c;
};
const reason = (r: Received): string => (r.kind === 'drop' ? r.reason : r.kind);
const current = (p: Peer): Keypair => p.s.current!;

/** Sends a frame a→b and b→a and checks both arrive (the session keeps working). */
function roundTrip(l: Lab, now: number, n = 7): void {
  const s = l.ab.send(frame(n), now);
  expect(s.kind).toBe('sent');
  const r = l.b.receive(s.packets[0]!, now, 'a-addr');
  expect(r.kind === 'data' && r.payload.equals(frame(n))).toBe(true);
  const s2 = l.ba.send(frame(n + 1), now);
  expect(s2.kind).toBe('sent');
  const r2 = l.a.receive(s2.packets[0]!, now, 'b-addr');
  expect(r2.kind === 'data' && r2.payload.equals(frame(n + 1))).toBe(true);
}

describe('links: handshake and data', () => {
  it('completes a handshake and carries frames of every size both ways', () => {
    const l = lab();
    handshake(l, 0);
    expect(l.ab.established(0) && l.ba.established(0)).toBe(true);
    for (const len of [1, 14, 15, 16, 17, 60, 1514, 9000, 65535]) {
      const s = l.ab.send(frame(len, len), 1);
      expect(s.kind).toBe('sent');
      expect(s.packets[0]!.length % 16).toBe(0);
      expect(s.packets[0]!.length).toBe(32 + Math.ceil((len + 1) / 16) * 16);
      const r = l.b.receive(s.packets[0]!, 1, 'a-addr');
      expect(r.kind === 'data' && r.payload.equals(frame(len, len))).toBe(true);
      const back = l.ba.send(frame(len + 1, len), 1);
      const r2 = l.a.receive(back.packets[0]!, 1, 'b-addr');
      expect(r2.kind === 'data' && r2.payload.equals(frame(len + 1, len))).toBe(true);
    }
    expect(l.ab.counters.rxPackets).toBe(9);
    expect(l.ba.counters.rxPackets).toBe(10); // and the keepalive that confirmed the session
    expect(l.ba.counters.keepalivesRx).toBe(1);
  });

  it('queues frames until the handshake completes, on both sides', () => {
    const l = lab();
    const q = l.ab.send(frame(1), 0);
    expect(q.kind).toBe('queued');
    expect(q.packets).toHaveLength(1); // the initiation
    expect(l.ab.send(frame(2), 0)).toEqual({ kind: 'queued', packets: [] }); // one under way already
    const resp = l.b.receive(q.packets[0]!, 0, 'a-addr');
    expect(resp.kind).toBe('reply');
    // The responder cannot send before the initiator's first message proves the session.
    const bq = l.ba.send(frame(9), 0);
    expect(bq.kind).toBe('queued');
    const done = l.a.receive(resp.kind === 'reply' ? resp.packets[0]! : Buffer.alloc(0), 0, 'b-addr');
    expect(done.kind === 'reply' && done.packets.length).toBe(2); // the two queued frames
    const got: Buffer[] = [];
    let released: Buffer[] = [];
    for (const p of done.kind === 'reply' ? done.packets : []) {
      const r = l.b.receive(p, 0, 'a-addr');
      if (r.kind === 'data') {
        got.push(r.payload);
        released.push(...r.packets);
      }
    }
    expect(got.map((g) => g[0])).toEqual([1, 2]);
    // a's first message proved the session: b's queued frame went out on it.
    released = released.filter((p) => p[0] === 4);
    expect(released).toHaveLength(1);
    const r = l.a.receive(released[0]!, 0, 'b-addr');
    expect(r.kind === 'data' && r.payload[0]).toBe(9);
  });

  it('refuses an initiation from a key that is not a peer, and from one that does not know our key', () => {
    const l = lab();
    const stranger = new Device({ privateKey: fixedKeyPair('stranger').privateKey, entropy: fixedEntropy('s') });
    const sp = stranger.addPeer({ publicKey: l.keysB.publicKey });
    expect(reason(l.b.receive(sp.handshakeInit(0)!, 0, 'x'))).toBe('unknown-peer');
    const wrongTarget = stranger.addPeer({ publicKey: fixedKeyPair('someone else').publicKey });
    expect(reason(l.b.receive(wrongTarget.handshakeInit(0)!, 0, 'x'))).toBe('bad-mac');
    expect(l.b.counters.drops['unknown-peer']).toBe(1);
    expect(l.b.counters.drops['bad-mac']).toBe(1);
    handshake(l, 1);
    roundTrip(l, 1);
  });

  it('a pre-shared key: the same on both sides completes; different ones fail at the initiator', () => {
    const pair = (pskA: Buffer, pskB: Buffer): { a: Device; b: Device; ab: Peer } => {
      const a = new Device({ privateKey: fixedKeyPair('psk a').privateKey, entropy: fixedEntropy('pa') });
      const b = new Device({ privateKey: fixedKeyPair('psk b').privateKey, entropy: fixedEntropy('pb') });
      const ab = a.addPeer({ publicKey: b.publicKey, presharedKey: pskA });
      b.addPeer({ publicKey: a.publicKey, presharedKey: pskB });
      return { a, b, ab };
    };
    const same = pair(Buffer.alloc(32, 1), Buffer.alloc(32, 1));
    const r = same.b.receive(same.ab.handshakeInit(0)!, 0, 'a');
    expect(same.a.receive(r.kind === 'reply' ? r.packets[0]! : Buffer.alloc(0), 0, 'b').kind).toBe('reply');
    const diff = pair(Buffer.alloc(32, 1), Buffer.alloc(32, 2));
    const r2 = diff.b.receive(diff.ab.handshakeInit(0)!, 0, 'a');
    expect(r2.kind).toBe('reply'); // the PSK is mixed in after the responder's checks: only the initiator can tell
    expect(reason(diff.a.receive(r2.kind === 'reply' ? r2.packets[0]! : Buffer.alloc(0), 0, 'b'))).toBe('bad-mac');
  });

  it('refuses a low-order ephemeral key without answering', () => {
    const l = lab();
    const msg = encodeInitiation({ sender: 1, ephemeral: Buffer.alloc(32), encryptedStatic: Buffer.alloc(48), encryptedTimestamp: Buffer.alloc(28) });
    new CookieGenerator(l.keysB.publicKey).addMacs(msg, INITIATION_MAC1, 0);
    expect(reason(l.b.receive(msg, 0, 'x'))).toBe('bad-key');
  });

  it('drops a replayed initiation (timestamp not newer) and one too soon after the last', () => {
    const l = lab();
    const init = l.ab.handshakeInit(0)!;
    expect(l.b.receive(init, 0, 'a').kind).toBe('reply');
    expect(reason(l.b.receive(init, 10_000, 'a'))).toBe('replay');
    const again = l.ab.handshakeInit(REKEY_TIMEOUT_MS)!;
    expect(reason(l.b.receive(again, 20, 'a'))).toBe('rate-limit');
    expect(l.b.receive(again, 100, 'a').kind).toBe('reply');
  });
});

describe('links: tampering at every offset', () => {
  it('initiation: every byte but mac2 is covered; the handshake still completes after', () => {
    const l = lab();
    const init = l.ab.handshakeInit(0)!;
    for (let at = 0; at < INITIATION_LEN; at++) {
      const r = l.b.receive(flip(init, at), 0, 'a');
      if (at >= INITIATION_MAC2) expect(r.kind, `offset ${at}`).toBe('reply'); // mac2 is read only under load
      else expect(reason(r), `offset ${at}`).toBe(at < 4 ? 'malformed' : 'bad-mac');
      if (at >= INITIATION_MAC2) break;
    }
    // Under load with a cookie, mac2 is checked too (below, 'cookie flood'). Truncated and extended:
    for (let len = 0; len < INITIATION_LEN; len++) expect(reason(l.b.receive(init.subarray(0, len), 0, 'a')), `length ${len}`).toBe('malformed');
    expect(reason(l.b.receive(Buffer.concat([init, Buffer.alloc(1)]), 0, 'a'))).toBe('malformed');
  });

  it('response: every byte but mac2 is covered', () => {
    const l = lab();
    const init = l.ab.handshakeInit(0)!;
    const resp = l.b.receive(init, 0, 'a');
    const msg = resp.kind === 'reply' ? resp.packets[0]! : Buffer.alloc(0);
    for (let at = 0; at < RESPONSE_MAC2; at++) expect(reason(l.a.receive(flip(msg, at), 0, 'b')), `offset ${at}`).toBe(at < 4 ? 'malformed' : 'bad-mac');
    for (let len = 0; len < RESPONSE_LEN; len++) expect(reason(l.a.receive(msg.subarray(0, len), 0, 'b'))).toBe('malformed');
    expect(l.a.counters.dh).toBe(2); // ss at addPeer, es of the initiation: no tampered response cost a DH
    expect(l.a.receive(msg, 0, 'b').kind).toBe('reply');
    const b2 = l.b.receive(l.ab.send(frame(3), 0).packets[0]!, 0, 'a');
    expect(b2.kind).toBe('data');
    roundTrip(l, 0);
  });

  it('transport: every byte is covered; the session keeps working', () => {
    const l = lab();
    handshake(l, 0);
    for (const len of [0, 100]) {
      const s = l.ab.send(frame(5, len), 0).packets[0]!;
      const sentCounter = s.readBigUInt64LE(8);
      for (let at = 0; at < s.length; at++) {
        // A counter turned into one already received is refused as a replay before decryption.
        const replayed = at >= 8 && at < 16 && flip(s, at).readBigUInt64LE(8) < sentCounter;
        const want = at < 4 ? 'malformed' : at < 8 ? 'unknown-index' : replayed ? 'replay' : 'bad-mac';
        expect(reason(l.b.receive(flip(s, at), 0, 'evil')), `offset ${at}`).toBe(want);
      }
      for (let cut = 1; cut <= 17; cut++) expect(reason(l.b.receive(s.subarray(0, s.length - cut), 0, 'evil'))).toBe(cut === 16 && len > 0 ? 'bad-mac' : 'malformed');
      expect(l.b.receive(s, 0, 'a-addr').kind).toBe(len === 0 ? 'keepalive' : 'data');
    }
    expect(l.ba.endpoint).toBe('a-addr'); // forged packets never moved it
    roundTrip(l, 0);
  });

  it('cookie reply: every byte is covered', () => {
    const l = lab();
    l.b.underLoad = true;
    const init = l.ab.handshakeInit(0)!;
    const c = l.b.receive(init, 0, 'a');
    expect(c.kind === 'reply' && c.peer).toBe(null);
    const reply = c.kind === 'reply' ? c.packets[0]! : Buffer.alloc(0);
    for (let at = 0; at < reply.length; at++) expect(reason(l.a.receive(flip(reply, at), 0, 'b')), `offset ${at}`).toBe(at < 4 ? 'malformed' : at < 8 ? 'unknown-index' : 'bad-mac');
    expect(l.a.receive(reply, 0, 'b').kind).toBe('cookie');
  });
});

describe('links: replay', () => {
  it('drops replays inside and outside the window and counts them', () => {
    const l = lab();
    handshake(l, 0);
    const sent = Array.from({ length: 9000 }, (_, i) => l.ab.send(frame(i), 0).packets[0]!);
    // Delivered out of order within the window: all accepted once.
    const order = sent.slice(0, 200).reverse();
    for (const p of order) expect(l.b.receive(p, 0, 'a').kind).toBe('data');
    for (const p of order.slice(0, 50)) expect(reason(l.b.receive(p, 0, 'a'))).toBe('replay');
    for (const p of sent.slice(200)) expect(l.b.receive(p, 0, 'a').kind).toBe('data');
    // Outside the window (8160 behind the highest): refused before decryption.
    expect(reason(l.b.receive(sent[0]!, 0, 'a'))).toBe('replay');
    expect(reason(l.b.receive(sent[8999]!, 0, 'a'))).toBe('replay');
    expect(l.ba.counters.drops.replay).toBe(52);
    roundTrip(l, 0);
  });
});

describe('links: cookies under a flood', () => {
  it('answers initiations without mac2 with cookie replies and no DH; the initiator retries with mac2 and succeeds', () => {
    const l = lab();
    l.b.underLoad = true;
    const init = l.ab.handshakeInit(0)!;
    const dh0 = l.b.counters.dh;
    // A flood: the same initiation (or any with a valid mac1) from many sources.
    for (let i = 0; i < 1000; i++) {
      const r = l.b.receive(init, 0, `flood-${i}`);
      expect(r.kind === 'reply' && r.peer === null && r.packets[0]![0]).toBe(3);
    }
    // And distinct initiations (new ephemerals, valid mac1) from a stranger who knows b's public key.
    const stranger = new Device({ privateKey: fixedKeyPair('flooder').privateKey, entropy: fixedEntropy('f') });
    const sp = stranger.addPeer({ publicKey: l.keysB.publicKey });
    for (let i = 0; i < 100; i++) expect(l.b.receive(sp.handshakeInit(i * REKEY_TIMEOUT_MS)!, 0, `flood-${i}`).kind).toBe('reply');
    expect(l.b.counters.dh).toBe(dh0);
    expect(l.b.counters.drops.cookie).toBe(1100);
    const c = l.b.receive(init, 0, 'a-addr');
    expect(l.a.receive(c.kind === 'reply' ? c.packets[0]! : Buffer.alloc(0), 0, 'b-addr').kind).toBe('cookie');
    // The retry waits for the retransmit timer, then carries mac2.
    expect(l.ab.tick(1000)).toEqual([]);
    const acts = l.ab.tick(REKEY_TIMEOUT_MS + 400);
    expect(acts.map((a) => a.kind === 'send' && a.why)).toEqual(['retransmit']);
    const retry = acts[0]!.kind === 'send' ? acts[0]!.packets[0]! : Buffer.alloc(0);
    expect(retry.subarray(INITIATION_MAC2).equals(Buffer.alloc(16))).toBe(false);
    // mac2 is bound to the source: from elsewhere it gets another cookie.
    expect(l.b.receive(retry, REKEY_TIMEOUT_MS + 400, 'elsewhere').kind === 'reply' && l.b.counters.drops.cookie).toBe(1102);
    const resp = l.b.receive(retry, REKEY_TIMEOUT_MS + 400, 'a-addr');
    expect(resp.kind === 'reply' && resp.peer).toBe(l.ba);
    expect(l.b.counters.dh - dh0).toBe(3); // es, ee, se: the one accepted initiation
    const done = l.a.receive(resp.kind === 'reply' ? resp.packets[0]! : Buffer.alloc(0), REKEY_TIMEOUT_MS + 400, 'b-addr');
    expect(done.kind).toBe('reply');
    for (const p of done.kind === 'reply' ? done.packets : []) l.b.receive(p, REKEY_TIMEOUT_MS + 400, 'a-addr');
    roundTrip(l, REKEY_TIMEOUT_MS + 400);
  });

  it('under load a response without mac2 gets a cookie reply too, with no DH', () => {
    const l = lab();
    const init = l.ab.handshakeInit(0)!;
    const resp = l.b.receive(init, 0, 'a-addr');
    l.a.underLoad = true;
    const dh0 = l.a.counters.dh;
    const c = l.a.receive(resp.kind === 'reply' ? resp.packets[0]! : Buffer.alloc(0), 0, 'b-addr');
    expect(c.kind === 'reply' && c.peer === null && c.packets[0]![0]).toBe(3);
    expect(l.a.counters.dh).toBe(dh0);
    // b keeps the cookie for its next response to a.
    expect(l.b.receive(c.kind === 'reply' ? c.packets[0]! : Buffer.alloc(0), 0, 'a-addr').kind).toBe('cookie');
  });

  it('under load, handshakes with a valid cookie are rate-limited per source (as WireGuard: 20/s, burst 5)', () => {
    const l = lab();
    l.b.underLoad = true;
    // A stranger who knows b's public key fetches a cookie for its address, then floods
    // initiations carrying a valid mac2: each would cost b a DH before b learns it is no peer.
    const stranger = new Device({ privateKey: fixedKeyPair('flooder').privateKey, entropy: fixedEntropy('f') });
    const sp = stranger.addPeer({ publicKey: l.keysB.publicKey });
    const first = l.b.receive(sp.handshakeInit(0)!, 0, 'src 198.51.100.9:4000');
    expect(stranger.receive(first.kind === 'reply' ? first.packets[0]! : Buffer.alloc(0), 0, 'b').kind).toBe('cookie');
    const dh0 = l.b.counters.dh;
    const verdicts: string[] = [];
    for (let i = 1; i <= 20; i++) verdicts.push(reason(l.b.receive(sp.handshakeInit(i * REKEY_TIMEOUT_MS)!, 10, 'src 198.51.100.9:4000')));
    expect(verdicts.filter((v) => v === 'unknown-peer')).toHaveLength(5);
    expect(verdicts.filter((v) => v === 'rate-limit')).toHaveLength(15);
    expect(l.b.counters.dh - dh0).toBe(5);
    // Tokens come back at 20/s.
    expect(reason(l.b.receive(sp.handshakeInit(21 * REKEY_TIMEOUT_MS)!, 60, 'src 198.51.100.9:4000'))).toBe('unknown-peer');
    // The real peer, from its own source, is not held back by the flood.
    const init = l.ab.handshakeInit(0)!;
    const c = l.b.receive(init, 60, 'a-addr');
    l.a.receive(c.kind === 'reply' ? c.packets[0]! : Buffer.alloc(0), 0, 'b-addr');
    const acts = l.ab.tick(REKEY_TIMEOUT_MS + 400);
    const retry = acts[0]!.kind === 'send' ? acts[0]!.packets[0]! : Buffer.alloc(0);
    expect(l.b.receive(retry, 60, 'a-addr').kind).toBe('reply');
  });

  it('an established session keeps working while the responder is under load', () => {
    const l = lab();
    handshake(l, 0);
    l.b.underLoad = true;
    roundTrip(l, 1);
  });
});

describe('links: timers', () => {
  it('the initiator rekeys when sending at 120 s, and nothing is accepted or sent on a session of 180 s', () => {
    const l = lab();
    handshake(l, 0);
    expect(l.ab.send(frame(1), REKEY_AFTER_TIME_MS - 1).packets).toHaveLength(1);
    const s = l.ab.send(frame(2), REKEY_AFTER_TIME_MS);
    expect(s.packets.map((p) => p[0])).toEqual([4, 1]); // the frame, then an initiation
    const old = l.ab.send(frame(3), REKEY_AFTER_TIME_MS).packets[0]!;
    // b never answers that initiation; at 180 s the session is dead.
    expect(reason(l.b.receive(old, REJECT_AFTER_TIME_MS, 'a'))).toBe('stale');
    expect(l.ab.established(REJECT_AFTER_TIME_MS)).toBe(false);
    expect(l.ab.send(frame(4), REJECT_AFTER_TIME_MS).kind).toBe('queued');
    // A new handshake brings it back.
    const t = REJECT_AFTER_TIME_MS + REKEY_TIMEOUT_MS;
    handshake(l, t);
    roundTrip(l, t);
  });

  it('a completed rekey replaces the session; the old one still opens packets in flight', () => {
    const l = lab();
    handshake(l, 0);
    const inFlight = l.ab.send(frame(1), 1000).packets[0]!;
    handshake(l, REKEY_AFTER_TIME_MS);
    roundTrip(l, REKEY_AFTER_TIME_MS);
    expect(l.b.receive(inFlight, REKEY_AFTER_TIME_MS, 'a').kind).toBe('data');
    expect(l.ab.counters.handshakes).toBe(2);
  });

  it('counter exhaustion: rekey at 2^60 messages, refuse to send at REJECT_AFTER_MESSAGES', () => {
    const l = lab();
    handshake(l, 0);
    const t = REKEY_TIMEOUT_MS; // past the initiation rate limit of the first handshake
    setSendCounterForTest(current(l.ab), REKEY_AFTER_MESSAGES - 2n);
    expect(l.ab.send(frame(1), t).packets).toHaveLength(1);
    const s = l.ab.send(frame(2), t); // the 2^60th message
    expect(s.packets.map((p) => p[0])).toEqual([4, 1]);
    expect(s.packets[0]!.readBigUInt64LE(8)).toBe(REKEY_AFTER_MESSAGES - 1n);
    expect(l.b.receive(s.packets[0]!, t, 'a').kind).toBe('data');
    setSendCounterForTest(current(l.ab), REJECT_AFTER_MESSAGES - 1n);
    const last = l.ab.send(frame(3), t);
    expect(last.kind).toBe('sent');
    expect(l.b.receive(last.packets[0]!, t, 'a').kind).toBe('data'); // REJECT_AFTER_MESSAGES - 1: the last valid counter
    expect(l.ab.send(frame(4), t).kind).toBe('queued');
  });

  it('keepalive 10 s after receiving data without sending; none when we sent', () => {
    const l = lab();
    handshake(l, 0);
    expect(l.b.receive(l.ab.send(frame(1), 1000).packets[0]!, 1000, 'a').kind).toBe('data');
    expect(l.ba.tick(10_999)).toEqual([]);
    const k = l.ba.tick(11_000);
    expect(k.map((a) => a.kind === 'send' && a.why)).toEqual(['keepalive']);
    expect(l.a.receive(k[0]!.kind === 'send' ? k[0]!.packets[0]! : Buffer.alloc(0), 11_000, 'b').kind).toBe('keepalive');
    expect(l.b.receive(l.ab.send(frame(2), 12_000).packets[0]!, 12_000, 'a').kind).toBe('data');
    expect(l.a.receive(l.ba.send(frame(3), 13_000).packets[0]!, 13_000, 'b').kind).toBe('data');
    expect(l.ba.tick(30_000).filter((a) => a.kind === 'send' && a.why === 'keepalive')).toEqual([]);
  });

  it('a new handshake when data sent gets no answer for 15 s', () => {
    const l = lab();
    handshake(l, 0);
    l.ab.tick(1); // the confirming keepalive's timers
    l.ab.send(frame(1), 10_000);
    expect(l.ab.tick(24_999)).toEqual([]);
    expect(l.ab.tick(25_000).map((a) => a.kind === 'send' && a.why)).toEqual(['new-handshake']);
  });

  it('retries the handshake every 5 s with jitter and gives up after 90 s, dropping the queue', () => {
    const l = lab();
    const first = l.ab.send(frame(1), 0);
    l.ab.send(frame(2), 0);
    const times: number[] = [0];
    let gaveUp = -1;
    let dropped = 0;
    for (let t = 0; t <= 200_000 && gaveUp < 0; t += 50) {
      for (const a of l.ab.tick(t)) {
        if (a.kind === 'send') times.push(t);
        if (a.kind === 'gave-up') {
          gaveUp = t;
          dropped = a.dropped;
        }
      }
    }
    expect(first.packets).toHaveLength(1);
    expect(times).toHaveLength(MAX_HANDSHAKE_ATTEMPTS);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    for (const g of gaps) expect(g >= REKEY_TIMEOUT_MS && g < REKEY_TIMEOUT_MS + 400).toBe(true);
    expect(new Set(gaps).size).toBeGreaterThan(1); // jittered
    expect(gaveUp).toBeGreaterThanOrEqual(90_000);
    expect(gaveUp).toBeLessThan(97_000);
    expect(dropped).toBe(2);
    expect(l.ab.queued()).toBe(0);
    expect(l.a.counters.drops['gave-up']).toBe(2);
    // Nothing more is sent until there is something to send.
    expect(l.ab.tick(300_000).filter((a) => a.kind === 'send')).toEqual([]);
  });

  it('persistent keepalive: one after each interval without sending', () => {
    const keysA = fixedKeyPair('lab a');
    const keysB = fixedKeyPair('lab b');
    const a = new Device({ privateKey: keysA.privateKey, entropy: fixedEntropy('a') });
    const b = new Device({ privateKey: keysB.privateKey, entropy: fixedEntropy('b') });
    const ab = a.addPeer({ publicKey: keysB.publicKey, persistentKeepaliveMs: 25_000 });
    b.addPeer({ publicKey: keysA.publicKey });
    const r = b.receive(ab.handshakeInit(0)!, 0, 'a');
    const done = a.receive(r.kind === 'reply' ? r.packets[0]! : Buffer.alloc(0), 0, 'b');
    expect(done.kind).toBe('reply'); // sent the confirming keepalive at 0
    expect(ab.tick(24_999).filter((x) => x.kind === 'send')).toEqual([]);
    const k = ab.tick(25_000).filter((x) => x.kind === 'send');
    expect(k.map((x) => x.kind === 'send' && x.why)).toEqual(['persistent-keepalive']);
    expect(b.receive(k[0]!.kind === 'send' ? k[0]!.packets[0]! : Buffer.alloc(0), 25_000, 'a').kind).toBe('keepalive');
    // Sending re-arms it: the next is due 25 s after the last thing sent.
    expect(ab.tick(49_999).filter((x) => x.kind === 'send')).toEqual([]);
    expect(ab.tick(50_000).map((x) => x.kind === 'send' && x.why)).toEqual(['persistent-keepalive']);
  });

  it('erases the session keys after 3 × REJECT without a new handshake', () => {
    const l = lab();
    handshake(l, 0);
    const acts = l.ab.tick(3 * REJECT_AFTER_TIME_MS);
    expect(acts.map((a) => a.kind)).toContain('keys-zeroed');
    expect(l.ab.s.current).toBe(null);
  });
});

describe('links: roaming', () => {
  it('reports the authenticated source of each packet and follows it; forged packets do not move it', () => {
    const l = lab();
    handshake(l, 0);
    expect(l.ba.endpoint).toBe('a-addr');
    const p1 = l.ab.send(frame(1), 1).packets[0]!;
    const r = l.b.receive(p1, 1, '/ip4/198.51.100.7/udp/40000');
    expect(r.kind === 'data' && r.source).toBe('/ip4/198.51.100.7/udp/40000');
    expect(l.ba.endpoint).toBe('/ip4/198.51.100.7/udp/40000');
    expect(l.b.receive(p1, 2, 'attacker').kind).toBe('drop'); // a replay from elsewhere
    expect(l.b.receive(flip(l.ab.send(frame(2), 2).packets[0]!, 40), 2, 'attacker').kind).toBe('drop');
    expect(l.ba.endpoint).toBe('/ip4/198.51.100.7/udp/40000');
    // A handshake from a new place moves it too.
    handshake(l, REKEY_AFTER_TIME_MS);
    expect(l.ba.endpoint).toBe('a-addr');
  });
});
