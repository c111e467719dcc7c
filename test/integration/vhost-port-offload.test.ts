/**
 * The vhost-user port (plugins/vhost-user) on its own, with the fake front-end: a TCP
 * super-frame with a partial checksum (as a TAP with --vnet-hdr or the endpoint sends) reaches a
 * guest that negotiated no offloads as MSS-sized segments with full checksums, and a guest that
 * negotiated GUEST_CSUM/GUEST_TSO4 whole; frames while no front-end is running are counted as
 * no-peer; status follows the device (waiting, up, closed); close({remove}) removes the socket.
 */
import { existsSync, linkSync, lstatSync, renameSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, makeTempDir, registerCleanup, waitFor } from '../support/netns.js';
import { F, VhostFrontend } from '../support/vhost-frontend.js';
import { vhostUserDriver } from '../../plugins/vhost-user/index.js';
import { TEE_IN, TEE_OUT, TeeRing } from '../../plugins/common/tee-ring.js';
import type { Port } from '../../plugins/types.js';

afterAll(cleanupAll);

const log = pino({ level: 'silent' });
const MSS = 1000;
const PAYLOAD = 2500;

function sum16(parts: Buffer[]): number {
  let s = 0;
  for (const p of parts) for (let i = 0; i < p.length; i += 2) s += (p[i]! << 8) + (i + 1 < p.length ? p[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** virtio_net_hdr (10 bytes) + Ethernet + IPv4 + TCP + PAYLOAD bytes, TSO4 with MSS and a partial checksum. */
function superFrame(): Buffer {
  const payload = Buffer.alloc(PAYLOAD, 0x61);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 20 + PAYLOAD, 2);
  ip[8] = 64;
  ip[9] = 6;
  Buffer.from([10, 0, 0, 1]).copy(ip, 12);
  Buffer.from([10, 0, 0, 2]).copy(ip, 16);
  ip.writeUInt16BE(~sum16([ip]) & 0xffff, 10);
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(80, 0);
  tcp.writeUInt16BE(40000, 2);
  tcp.writeUInt32BE(1, 4);
  tcp[12] = 5 << 4;
  tcp[13] = 0x18;
  tcp.writeUInt16BE(65535, 14);
  // Linux's CHECKSUM_PARTIAL: the pseudo-header sum, not complemented.
  const ph = Buffer.concat([ip.subarray(12, 20), Buffer.from([0, 6]), Buffer.from([0, 0])]);
  ph.writeUInt16BE(20 + PAYLOAD, 10);
  tcp.writeUInt16BE(sum16([ph]), 16);
  const eth = Buffer.from('02000000000202000000000108 00'.replace(/ /g, ''), 'hex');
  const hdr = Buffer.from([1, 1, 54, 0, MSS & 0xff, MSS >> 8, 34, 0, 16, 0]);
  return Buffer.concat([hdr, eth, ip, tcp, payload]);
}

function tcpChecksumOk(frame: Buffer): boolean {
  const ip = frame.subarray(14, 34);
  const seg = frame.subarray(34, 14 + ip.readUInt16BE(2));
  const ph = Buffer.concat([ip.subarray(12, 20), Buffer.from([0, 6, seg.length >> 8, seg.length & 0xff])]);
  return sum16([ph, seg]) === 0xffff;
}

describe('vhost-user port: offloads the guest did not take', () => {
  const dir = makeTempDir('vho');

  async function open(name: string): Promise<{ port: Port; path: string }> {
    const path = join(dir, name);
    const port = await vhostUserDriver.open({ kind: 'vhost-user', path }, { log, mtu: 1500, restoring: false });
    registerCleanup(`port ${path}`, () => port.close({ remove: true }));
    return { port, path };
  }

  it('segments and checksums a TSO super-frame for a guest without offloads; passes it whole to one with them', async () => {
    const plain = await open('plain.sock');
    expect(plain.port.status()).toEqual({ state: 'waiting', device: 'listening', detail: `listening on ${plain.path}: waiting for QEMU to connect` });
    plain.port.send([superFrame()]);
    expect(plain.port.stats().drops['no-peer']).toBe(1);

    const fe = VhostFrontend.connect(plain.path);
    registerCleanup('front-end', async () => fe.close());
    await fe.start();
    await waitFor(() => plain.port.status().detail.startsWith('running'), { what: 'running' });
    expect(plain.port.status()).toEqual({ state: 'up', device: 'running', detail: 'running: 1 guest memory region (4 MiB) mapped, offloads to the guest: none' });
    fe.postRx(16);
    plain.port.send([superFrame()]);
    const got = fe.receiveFrames();
    expect(got.map((f) => f.frame.length)).toEqual([14 + 40 + MSS, 14 + 40 + MSS, 14 + 40 + PAYLOAD - 2 * MSS]);
    for (const f of got) {
      expect(f.hdr[0]! & 1, 'no NEEDS_CSUM').toBe(0);
      expect(f.hdr[1], 'no GSO').toBe(0);
      expect(tcpChecksumOk(f.frame)).toBe(true);
    }
    expect(plain.port.stats().txFrames).toBe(3);
    expect(plain.port.stats().txBytes).toBe(got.reduce((n, f) => n + f.frame.length, 0));
    // The endpoint is told not to make super-frames for this guest.
    expect(plain.port.offloadsOk?.()).toBe(false);

    const off = await open('off.sock');
    const fe2 = VhostFrontend.connect(off.path, { want: F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES | F.GUEST_CSUM | F.GUEST_TSO4 | F.GUEST_TSO6 });
    registerCleanup('front-end 2', async () => fe2.close());
    await fe2.start();
    await waitFor(() => off.port.status().detail.startsWith('running'), { what: 'running' });
    fe2.postRx(16);
    off.port.send([superFrame()]);
    const whole = fe2.receiveFrames();
    expect(whole).toHaveLength(1);
    expect(whole[0]!.frame.length).toBe(14 + 40 + PAYLOAD);
    expect(whole[0]!.hdr[1]).toBe(1);
    expect(off.port.status().detail).toMatch(/offloads to the guest: csum, tso4, tso6$/);
    expect(off.port.offloadsOk?.()).toBe(true);

    // QEMU goes away: listening again, for it to come back.
    fe.disconnect();
    await waitFor(() => plain.port.status().state === 'waiting', { what: 'waiting again' });
    expect(plain.port.status().detail).toMatch(/^listening on .*: waiting for QEMU to reconnect \(.+\)$/);
  });

  it('capture: frames from the guest and to it are copied into the tee ring without their header', async () => {
    const p = await open('tee.sock');
    const fe = VhostFrontend.connect(p.path);
    registerCleanup('front-end tee', async () => fe.close());
    await fe.start();
    await waitFor(() => p.port.status().detail.startsWith('running'), { what: 'running' });
    const ring = new TeeRing(1 << 16, 0);
    p.port.tee!(ring, TEE_IN | TEE_OUT);
    const seen: Buffer[] = [];
    p.port.onFrames((frames) => seen.push(...frames.map((f) => Buffer.from(f))));
    const out = Buffer.concat([Buffer.alloc(10), Buffer.from('020000000001020000000002', 'hex'), Buffer.from([0x08, 0x00]), Buffer.alloc(46, 7)]);
    fe.postRx(4);
    p.port.send([out]);
    const fromGuest = Buffer.concat([Buffer.from('02000000000202000000000108 00'.replace(/ /g, ''), 'hex'), Buffer.alloc(46, 9)]);
    fe.sendFrames([fromGuest]);
    await waitFor(() => seen.length > 0, { what: "the guest's frame in JS" });
    const recs: { dir: number; frame: Buffer }[] = [];
    ring.drain((r) => recs.push({ dir: r.dir, frame: Buffer.from(r.frame) }));
    expect(recs).toContainEqual({ dir: TEE_OUT, frame: out.subarray(10) });
    expect(recs).toContainEqual({ dir: TEE_IN, frame: fromGuest });
    p.port.tee!(null, 0);
  });

  it('never makes its socket over a live socket or through a symlink; a stale socket is replaced', async () => {
    const live = join(dir, 'live.sock');
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(live, r));
    registerCleanup('live server', () => new Promise<void>((r) => server.close(() => r())));
    await expect(vhostUserDriver.open({ kind: 'vhost-user', path: live }, { log, mtu: 1500, restoring: false })).rejects.toThrow(/live socket/);
    const link = join(dir, 'link.sock');
    symlinkSync(join(dir, 'elsewhere.sock'), link);
    await expect(vhostUserDriver.open({ kind: 'vhost-user', path: link }, { log, mtu: 1500, restoring: false })).rejects.toThrow(/symlink/);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    // A socket nobody accepts on (a daemon killed with -9 left it): replaced, as at restore.
    const stale = join(dir, 'stale.sock');
    const s2 = net.createServer();
    await new Promise<void>((r) => s2.listen(stale, r));
    const before = lstatSync(stale).ino;
    // Closing a Node server unlinks its path: copy the inode's name first by a hard link, put it back after.
    linkSync(stale, `${stale}.keep`);
    await new Promise<void>((r) => s2.close(() => r()));
    renameSync(`${stale}.keep`, stale);
    expect(lstatSync(stale).ino).toBe(before);
    const p = await open('stale.sock');
    expect(lstatSync(stale).ino).not.toBe(before);
    expect(p.port.status().state).toBe('waiting');
  });

  it('connected before the rings run; close({remove: true}) removes the socket it made; status says closed', async () => {
    const p = await open('gone.sock');
    expect(existsSync(p.path)).toBe(true);
    // QEMU connected, the guest's driver not started yet: up, the rings not running.
    const fe = VhostFrontend.connect(p.path);
    registerCleanup('front-end gone', async () => fe.close());
    await fe.handshake();
    await fe.sync();
    await waitFor(() => p.port.status().detail.startsWith('connected'), { what: 'connected' });
    expect(p.port.status()).toEqual({ state: 'up', device: 'connected', detail: "connected: QEMU is connected; the rings start with the guest's driver" });
    await p.port.close({ remove: true });
    expect(existsSync(p.path)).toBe(false);
    expect(p.port.status()).toEqual({ state: 'down', detail: 'closed' });
  });
});
