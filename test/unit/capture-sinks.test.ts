/**
 * Capture outputs: a tee to a unix socket in QEMU stream framing (read by a test peer framing as
 * QEMU does), and a tee file confined to the capture directory, rotating at the size given.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { checkCaptureParams } from '../../daemon/capture/params.js';
import { FileSink, captureRelPath } from '../../daemon/capture/sink-file.js';
import { MAX_READERS, UnixSink } from '../../daemon/capture/sink-unix.js';
import { Network } from '../../daemon/switch/network.js';
import { encodeEthernet, ETHERTYPE_IPV4 } from '../../daemon/wire/ethernet.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';
import { withTee } from '../../plugins/common/tee-port.js';
import { MemPort } from '../support/mem-port.js';
import { readPcapng } from '../support/pcapng-read.js';
import { GW_MAC, OUT, RouterLab } from '../support/router-lab.js';
import { QemuStreamClient } from '../support/qemu-peer.js';
import { IP1, MAC1, newHub, syn } from '../support/capture-lab.js';

describe('capture sinks', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvcap-'));
  afterEach(() => undefined);

  it('unix: each frame in QEMU stream framing, raw IP with a synthetic Ethernet header; what the peer sends is discarded', async () => {
    const lab = new RouterLab();
    const hub = newHub();
    hub.netAdded('lan', lab.sw, lab.router);
    const sockPath = path.join(dir, 'u.sock');
    const sink = await UnixSink.listen(sockPath, undefined);
    const peer = await QemuStreamClient.connect(sockPath);
    try {
      await vi.waitFor(() => expect(sink.idle).toBe(false));
      peer.send(Buffer.alloc(60, 0x11));
      const vm = lab.attachPort('vm1', { mac: MAC1, ip: '10.1.0.5', route: { kind: 'direct' } });
      const s = hub.open(hub.prepare(checkCaptureParams({ from: { point: ['exit:direct'] } })), sink, { kind: 'tee', name: 'u' });
      const packet = syn(MAC1, IP1, OUT, 80).subarray(14);
      vm.port.inject(syn(MAC1, IP1, OUT, 80));
      const f = await peer.nextFrame(undefined, 5000);
      expect(f.readUInt16BE(12)).toBe(0x0800);
      expect(f.subarray(14)).toEqual(packet);
      expect(s.counters.captured).toBe(1);
    } finally {
      await peer.close();
      await sink.close(true);
      hub.close();
      lab.close();
    }
    expect(fs.existsSync(sockPath)).toBe(false);
  });

  it('unix: at most MAX_READERS readers at once (each may hold a full queue); one more is closed at once', async () => {
    const sockPath = path.join(dir, 'cap.sock');
    const sink = await UnixSink.listen(sockPath, undefined);
    const peers: QemuStreamClient[] = [];
    try {
      for (let i = 0; i < MAX_READERS; i++) peers.push(await QemuStreamClient.connect(sockPath));
      await vi.waitFor(() => expect(sink.state().detail).toContain(`${MAX_READERS} reader(s)`));
      const extra = await QemuStreamClient.connect(sockPath);
      peers.push(extra);
      // The daemon side closes it at once.
      await extra.waitDisconnected(5000);
      expect(sink.state().detail).toContain(`${MAX_READERS} reader(s)`);
      // Once a reader leaves, a new one is taken.
      await peers[0]!.close();
      await vi.waitFor(() => expect(sink.state().detail).toContain(`${MAX_READERS - 1} reader(s)`));
      peers.push(await QemuStreamClient.connect(sockPath));
      await vi.waitFor(() => expect(sink.state().detail).toContain(`${MAX_READERS} reader(s)`));
    } finally {
      for (const p of peers) await p.close();
      await sink.close(true);
    }
  });

  it('file: confined paths; rotation at the size into complete pcapng files', async () => {
    expect(() => captureRelPath('/etc/passwd', dir)).toThrow(/outside/);
    expect(() => captureRelPath('a/../b', dir)).toThrow(/\.\./);
    expect(() => captureRelPath('.hidden', dir)).toThrow(/plain name/);
    expect(captureRelPath(`${dir}/x/y.pcapng`, dir)).toBe('x/y.pcapng');
    fs.symlinkSync('/etc/hostname', path.join(dir, 'ln'));
    expect(() => new FileSink({ captureDir: dir, rel: 'ln' })).toThrow(/symlink/);
    // A FIFO would block an open for writing, or take the capture elsewhere: refused at once.
    execFileSync('mkfifo', [path.join(dir, 'fifo')]);
    expect(() => new FileSink({ captureDir: dir, rel: 'fifo' })).toThrow(/tee file fifo/);
    fs.mkdirSync(path.join(dir, 'd'));
    expect(() => new FileSink({ captureDir: dir, rel: 'd' })).toThrow(/not a regular file|EISDIR/);

    const sink = new FileSink({ captureDir: dir, rel: 'r.pcapng', ring: { files: 3, sizeMb: 1 } });
    const hub = newHub();
    const sw = new Network({ name: 'lan', mtu: 1500, gatewayMac: GW_MAC, clock: () => 0 });
    const p = new MemPort('mem:vm1');
    const t = withTee(p);
    sw.attach('vm1', t, MAC1);
    hub.portAdded('vm1', 'lan', t);
    const s = hub.open(hub.prepare(checkCaptureParams({ from: { vm: 'vm1' } })), sink, { kind: 'tee', name: 'r' });
    const big = encodeEthernet({ dst: MAC_BROADCAST, src: MAC1, etherType: ETHERTYPE_IPV4, payload: Buffer.alloc(1400) });
    // About 4.3 MB of blocks: rotates at 1 MB; three files are kept.
    for (let i = 0; i < 30; i++) {
      p.inject(...Array.from({ length: 100 }, () => big));
      hub.drainAll();
      await sink.drained();
    }
    expect(s.counters.dropped).toBe(0);
    s.stop('test');
    await sink.close();
    const names = fs.readdirSync(dir).filter((n) => n.startsWith('r.pcapng')).sort();
    expect(names).toEqual(['r.pcapng', 'r.pcapng.1', 'r.pcapng.2']);
    for (const n of names) {
      const b = fs.readFileSync(path.join(dir, n));
      expect(b.length).toBeLessThanOrEqual(1024 * 1024);
      const r = readPcapng(b);
      expect(r.sections, n).toBe(1);
      expect(r.ifaces.map((i) => i.name)).toEqual(['vm1']);
      if (n !== 'r.pcapng') expect(b.length).toBeGreaterThan(1024 * 1024 - 2000);
    }
    hub.close();
    sw.close();
  });

  it('file: a restarted rotating tee whose file is already full starts a new file with one section header', async () => {
    const d2 = fs.mkdtempSync(path.join(os.tmpdir(), 'mvcap-full-'));
    fs.writeFileSync(path.join(d2, 'f'), Buffer.alloc(1024 * 1024 + 10));
    const sink = new FileSink({ captureDir: d2, rel: 'f', ring: { files: 2, sizeMb: 1 } });
    const hub = newHub();
    const s = hub.open(hub.prepare(checkCaptureParams({ from: { point: ['drops'] } })), sink, { kind: 'tee', name: 'f' });
    s.stop('test');
    await sink.close();
    expect(fs.readFileSync(path.join(d2, 'f.1')).length).toBe(1024 * 1024 + 10);
    const r = readPcapng(fs.readFileSync(path.join(d2, 'f')));
    expect(r.sections).toBe(1);
    expect(r.isbs.length).toBe(1);
    hub.close();
  });
});
