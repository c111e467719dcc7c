/**
 * The UDP socket's GSO fallback (plugins/native/src/udp.cc): in a private network namespace
 * (`unshare -n`, gone when the child exits) whose loopback MTU is 1300, a run of 1400-byte
 * datagrams cannot be one UDP GSO message (segments larger than the path MTU: EINVAL); the
 * socket sends them plainly (fragmented) and stops trying GSO at that size, while a run of
 * 1000-byte ones still goes as GSO. Every datagram arrives whole.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { findAddon } from '../../plugins/native/index.js';

const CHILD = `
const { execFileSync } = require('node:child_process');
execFileSync('ip', ['link', 'set', 'lo', 'mtu', '1300', 'up']);
const n = require(process.argv[1]);
const lens = [];
const rx = new n.UdpSocket({ host: '127.0.0.1', port: 0, onRead: (c) => { for (let i = 0; i < c; i++) lens.push(rx.lengths[i]); }, onError: () => {} });
rx.start();
const tx = new n.UdpSocket({ host: '127.0.0.1', port: 0, onRead: () => {}, onError: () => {} });
const sa = tx.target('127.0.0.1', rx.port);
const out = [];
for (const [size, count] of [[1400, 10], [1400, 10], [1000, 10]]) {
  tx.send(sa, Array.from({ length: count }, () => Buffer.alloc(size, 7)));
  out.push({ info: Array.from(tx.txInfo), txGso: tx.stats().txGso, gso: tx.stats().gso });
}
setTimeout(() => {
  console.log(JSON.stringify({ out, lens }));
  rx.close();
  tx.close();
}, 300);
`;

describe('native udp socket: GSO fallback', () => {
  it('sends plainly what the path refuses as GSO, and remembers the size', () => {
    const addon = findAddon();
    expect(addon).toBeDefined();
    const r = spawnSync('unshare', ['-n', process.execPath, '-e', CHILD, addon!], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status, r.stderr).toBe(0);
    const { out, lens } = JSON.parse(r.stdout.trim()) as { out: { info: number[]; txGso: number; gso: boolean }[]; lens: number[] };
    expect(out[0]).toEqual({ info: [10, 14000, 0, 0], txGso: 0, gso: true });
    expect(out[1]).toEqual({ info: [10, 14000, 0, 0], txGso: 0, gso: true });
    expect(out[2]).toEqual({ info: [10, 10000, 0, 0], txGso: 1, gso: true });
    expect(lens).toEqual([...Array<number>(20).fill(1400), ...Array<number>(10).fill(1000)]);
  });
});
