/**
 * Security review of issue 14, finding 6: guest → TAP cut-through of a frame in more than
 * IOV_MAX descriptors. writev refused it (EINVAL): the frame was lost and the TAP's port was
 * charged with the failure (ioFailRun, lastIoError: "degraded"), so a guest could mark someone
 * else's port degraded. A frame in that many pieces now goes on as one copy.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadNative } from '../../plugins/native/index.js';
import type { NativeDevice } from '../../plugins/native/types.js';
import { cleanupAll, createNetns, uniqueName, waitFor, type Netns } from '../support/netns.js';
import { startBackend, TX, VhostFrontend, DESC_F_NEXT } from '../support/vhost-frontend.js';

const native = loadNative();
const GW_MAC = 0x02_6d_76_00_ff_01;
const MAC_A = 0x52_54_00_00_00_0a;

const Fib = native.Device.Fib;

afterAll(cleanupAll);
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Ethernet + IPv4 + UDP to port 9 (discard), `payload` bytes; checksums left 0 (UDP allows it). */
function udp(dst: number, src: number, ipSrc: string, ipDst: string, payload: number): Buffer {
  const f = Buffer.alloc(14 + 20 + 8 + payload, 0x5a);
  f.writeUIntBE(dst, 0, 6);
  f.writeUIntBE(src, 6, 6);
  f.writeUInt16BE(0x0800, 12);
  f.fill(0, 14, 42);
  f[14] = 0x45;
  f.writeUInt16BE(20 + 8 + payload, 16);
  f[22] = 64;
  f[23] = 17;
  Buffer.from(ipSrc.split('.').map(Number)).copy(f, 26);
  Buffer.from(ipDst.split('.').map(Number)).copy(f, 30);
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += f.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  f.writeUInt16BE(~sum & 0xffff, 24);
  f.writeUInt16BE(40000, 34);
  f.writeUInt16BE(9, 36);
  f.writeUInt16BE(8 + payload, 38);
  return f;
}

describe('vhost review: cut-through of a frame in more than IOV_MAX pieces', () => {
  let ns: Netns | undefined;
  let tap: NativeDevice | undefined;
  afterEach(async () => {
    tap?.close();
    tap = undefined;
    await ns?.delete();
    ns = undefined;
  });

  it('guest → TAP: a frame in 1,400 one-byte descriptors reaches the TAP, which is not charged with a failure', async () => {
    ns = await createNetns('vrc');
    const name = uniqueName('vrc');
    const t = native.openTun({ name, tap: true, vnetHdr: true, netns: ns.path });
    native.configureLink({ name, netns: ns.path, up: true });
    await ns.addAddr(name, '10.83.0.1/24');
    const tapMac = Number.parseInt((await ns.mac(name)).replaceAll(':', ''), 16);
    tap = new native.Device({ fd: t.fd, mode: 'packet', maxFrame: 65560, batch: 32, queueFrames: 64, queueBytes: 1 << 20, onRead: () => {}, onError: () => {} });
    tap.start();
    const a = startBackend({ offloads: false });
    cleanups.push(() => a.close());
    const fa = VhostFrontend.connect(a.path, { num: 2048, bufSize: 2048 });
    cleanups.push(() => fa.close());
    await fa.start();
    const fib = new Fib(GW_MAC, 1514);
    a.dev.bindSwitch(fib, 1, 14, 1514, MAC_A, () => {});
    tap.bindSwitch(fib, 1, 14, 1514, tapMac, () => {});
    expect(fib.set(tapMac, tap, 60_000)).toBe(true);

    // Header and frame one byte per descriptor, from one buffer.
    const f = udp(tapMac, MAC_A, '10.83.0.2', '10.83.0.1', 1400 - 12 - 42);
    const bytes = Buffer.concat([Buffer.alloc(12), f]);
    expect(bytes.length).toBe(1400);
    const r = fa.rings[TX]!;
    const store = r.alloc();
    bytes.copy(r.buf(store));
    const ids = Array.from({ length: bytes.length }, () => r.alloc());
    ids.forEach((id, k) => r.writeDesc(id, { addr: r.bufGpa(store) + BigInt(k), len: 1, flags: k + 1 < ids.length ? DESC_F_NEXT : 0, next: ids[k + 1] ?? 0 }));
    r.availPush(ids[0]!);
    r.kick();
    await waitFor(() => a.dev.stats().rxFrames >= 1, { what: 'the guest\'s frame taken' });
    const s = tap.stats();
    expect(s).toMatchObject({ txFrames: 1, ioFailRun: 0 });
    expect(s.lastIoError).toBeUndefined();
    expect(a.frames).toEqual([]);  // cut through, not handed to JS
    expect(a.dev.stats()).toMatchObject({ state: 'running', violations: 0 });
  });
});
