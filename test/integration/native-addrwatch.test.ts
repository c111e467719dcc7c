/**
 * The native address watch (plugins/native/src/netlink.cc) in a namespace of its own: an address
 * added is queued on the netlink socket before `ip addr add` returns (drain() sees it with no
 * event-loop turn in between), dumpAddrs lists it, and also an address on a link without carrier
 * (which os.networkInterfaces() leaves out); a change made by another process reaches onChange
 * through uv_poll; and the watch never keeps the process alive.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findAddon } from '../../plugins/native/index.js';
import { cleanupAll, createNetns, makeTempDir, withTimeout } from '../support/netns.js';

afterAll(cleanupAll);

const SCRIPT = `
const os = require('node:os');
const { execFileSync } = require('node:child_process');
const a = require(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const has = (ip) => a.dumpAddrs().some((e) => e.family === 4 && [...e.address].join('.') === ip);
const inLibuv = (ip) => JSON.stringify(os.networkInterfaces()).includes(ip);
let changes = 0;
const w = new a.AddrWatch({ onChange: (n) => { changes += n; out({ ev: 'change', n }); clearTimeout(safety); } });
// Without the watch's own handle keeping it alive, only this keeps the process up until a change.
const safety = setTimeout(() => out({ ev: 'timeout' }), 20000);
execFileSync('ip', ['link', 'set', 'lo', 'up']);
w.drain();
// Synchronous: the change is queued before ip returns; drain() reads it before any callback could.
execFileSync('ip', ['addr', 'add', '10.55.0.1/24', 'dev', 'lo']);
const drained = w.drain();
out({ ev: 'sync', drained, dumped: has('10.55.0.1'), changes });
execFileSync('ip', ['link', 'add', 'awnc0', 'type', 'veth', 'peer', 'name', 'awnc1']);
execFileSync('ip', ['addr', 'add', '10.56.0.1/24', 'dev', 'awnc0']);
execFileSync('ip', ['link', 'set', 'awnc0', 'up']);
w.drain();
out({ ev: 'nocarrier', dumped: has('10.56.0.1'), libuv: inLibuv('10.56.0.1') });
out({ ev: 'ready', stats: w.stats() });
`;

describe('native AddrWatch and dumpAddrs', () => {
  it('sees an address change at once, lists every address, calls back, and lets the process exit', async () => {
    const dir = makeTempDir('aw');
    const file = join(dir, 'watch.cjs');
    writeFileSync(file, SCRIPT);
    const ns = await createNetns('aw');
    const addon = findAddon();
    expect(addon).toBeDefined();
    const p = ns.spawn(['node', file, addon!], { label: 'addrwatch' });
    const sync = JSON.parse(await p.waitForLine((l) => l.includes('"ev":"sync"'), { timeoutMs: 15_000 })) as { drained: number; dumped: boolean; changes: number };
    expect(sync.drained).toBeGreaterThan(0);
    expect(sync.dumped).toBe(true);
    expect(sync.changes).toBe(0);
    const nc = JSON.parse(await p.waitForLine((l) => l.includes('"ev":"nocarrier"'))) as { dumped: boolean; libuv: boolean };
    expect(nc).toMatchObject({ dumped: true, libuv: false });
    await p.waitForLine((l) => l.includes('"ev":"ready"'));
    // Another process changes an address: the poll calls back, and then nothing holds the process.
    await ns.exec(['ip', 'addr', 'add', '10.57.0.1/32', 'dev', 'lo'], { check: true });
    const change = JSON.parse(await p.waitForLine((l) => l.includes('"ev":"change"'), { timeoutMs: 10_000 })) as { n: number };
    expect(change.n).toBeGreaterThan(0);
    const exit = await withTimeout(p.exited, 10_000, 'the process to exit once only the watch is left');
    expect(exit.code).toBe(0);
    expect(p.lines.some((l) => l.includes('"ev":"timeout"'))).toBe(false);
  });
});
