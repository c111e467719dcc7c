/**
 * The native cut-through's table and reports (device.cc Fib, Device::Lookup, the report timer),
 * on real TAPs in namespaces made here, bound to a Fib directly (no switch): a frame goes where
 * the Fib says at the time it is read — a changed or deleted entry is obeyed from the next frame
 * on, even though each device remembers its last lookup — and the frames cut through are
 * reported, all of them, in calls at least 10 loop-clock milliseconds apart, and at once when
 * the port's counters are read.
 */
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { DevicePort, DeviceSwitchFib } from '../../plugins/native/device-port.js';
import { tapDriver } from '../../plugins/tap/index.js';
import { cleanupAll, createNetns, uniqueName, waitFor, type Netns } from '../support/netns.js';

const log = pino({ level: 'silent' });
const GW_MAC = 0x02_6d_76_00_ff_01;
/** The MAC the sender's kernel addresses its frames to (a static neighbour entry): no TAP has it. */
const DST_MAC = '02:6d:76:00:00:99';
const DST_MAC_N = 0x02_6d_76_00_00_99;

afterAll(cleanupAll);

interface Tap {
  ns: Netns;
  ifname: string;
  port: DevicePort;
}

const opened: Tap[] = [];
afterEach(async () => {
  for (const t of opened.splice(0)) {
    await t.port.close({ remove: true });
    await t.ns.delete();
  }
});

async function tap(tag: string): Promise<Tap> {
  const ns = await createNetns(`ct-${tag}`);
  const ifname = uniqueName('mvc');
  const port = (await tapDriver.open({ kind: 'tap', ifname, netns: ns.name, vnetHdr: false }, { log, mtu: 1500, restoring: false })) as DevicePort;
  const t: Tap = { ns, ifname, port };
  opened.push(t);
  await ns.waitForLink(ifname);
  return t;
}

function macNumber(mac: string): number {
  return Number.parseInt(mac.replaceAll(':', ''), 16);
}

/**
 * `n` UDP datagrams from the sender's namespace to 10.78.0.12 (port 9: a plain frame), back to
 * back, or `gapS` seconds apart (so that they arrive in separate loop iterations).
 */
async function send(t: Tap, n: number, gapS = 0): Promise<void> {
  const gap = gapS > 0 ? `; sleep ${gapS}` : '';
  await t.ns.exec(['bash', '-c', `for i in $(seq ${n}); do echo x > /dev/udp/10.78.0.12/9${gap}; done`]);
}

describe('native cut-through', () => {
  it('obeys every change to the table from the next frame on (the per-device lookup cache is invalidated)', async () => {
    const a = await tap('a');
    const b = await tap('b');
    const c = await tap('c');
    await a.ns.addAddr(a.ifname, '10.78.0.11/24');
    await a.ns.exec(['ip', 'neigh', 'replace', '10.78.0.12', 'lladdr', DST_MAC, 'dev', a.ifname, 'nud', 'permanent']);
    for (const t of [b, c]) await t.ns.exec(['ip', 'link', 'set', t.ifname, 'up']);
    let toJs = 0;
    a.port.onFrames((frames) => {
      for (const f of frames) if (f.readUInt16BE(12) === 0x0800 && f.subarray(0, 6).equals(Buffer.from(DST_MAC.replaceAll(':', ''), 'hex'))) toJs++;
    });
    let reported = 0;
    const fib = a.port.newSwitchFib(GW_MAC, 1514) as DeviceSwitchFib;
    expect(a.port.bindSwitch(fib, macNumber(await a.ns.mac(a.ifname)), (n) => (reported += n))).toBe(true);
    expect(b.port.bindSwitch(fib, null, () => {})).toBe(true);
    expect(c.port.bindSwitch(fib, null, () => {})).toBe(true);
    const tx = (t: Tap): number => t.port.stats().txFrames;

    // To B while the entry says B.
    expect(fib.set(DST_MAC_N, b.port, 60_000)).toBe(true);
    await send(a, 5);
    await waitFor(() => tx(b) >= 5, { what: 'five frames cut through to B' });
    expect([tx(b), tx(c), toJs]).toEqual([5, 0, 0]);

    // Moved to C: the next frames go to C, none to B (a stale cached lookup would send them there).
    expect(fib.set(DST_MAC_N, c.port, 60_000)).toBe(true);
    await send(a, 5);
    await waitFor(() => tx(c) >= 5, { what: 'five frames cut through to C' });
    expect([tx(b), tx(c), toJs]).toEqual([5, 5, 0]);

    // Deleted: they go to JS (the switch), not to C.
    fib.delete(DST_MAC_N);
    await send(a, 3);
    await waitFor(() => toJs >= 3, { what: 'three frames handed to JS' });
    expect([tx(b), tx(c), toJs]).toEqual([5, 5, 3]);

    // Back, then the whole table cleared.
    expect(fib.set(DST_MAC_N, b.port, 60_000)).toBe(true);
    await send(a, 2);
    await waitFor(() => tx(b) >= 7, { what: 'two more frames cut through to B' });
    fib.clear();
    await send(a, 2);
    await waitFor(() => toJs >= 5, { what: 'two more frames handed to JS' });
    expect([tx(b), tx(c), toJs]).toEqual([7, 5, 5]);

    // An entry for a device that left the table's members is gone with it.
    expect(fib.set(DST_MAC_N, c.port, 60_000)).toBe(true);
    await send(a, 1);
    await waitFor(() => tx(c) >= 6, { what: 'a frame cut through to C' });
    c.port.unbindSwitch();
    await send(a, 1);
    await waitFor(() => toJs >= 6, { what: 'a frame handed to JS once C left' });
    expect([tx(b), tx(c), toJs]).toEqual([7, 6, 6]);

    // Everything cut through was reported.
    await waitFor(() => reported === 7 + 6, { what: `13 frames reported (${reported})` });
  });

  it('reports every frame cut through, in calls at least 10 loop milliseconds apart, and at once when the counters are read', async () => {
    const a = await tap('a');
    const b = await tap('b');
    await a.ns.addAddr(a.ifname, '10.78.0.11/24');
    await a.ns.exec(['ip', 'neigh', 'replace', '10.78.0.12', 'lladdr', DST_MAC, 'dev', a.ifname, 'nud', 'permanent']);
    await b.ns.exec(['ip', 'link', 'set', b.ifname, 'up']);
    const calls: { at: number; frames: number }[] = [];
    const fib = a.port.newSwitchFib(GW_MAC, 1514) as DeviceSwitchFib;
    a.port.bindSwitch(fib, macNumber(await a.ns.mac(a.ifname)), (n) => calls.push({ at: performance.now(), frames: n }));
    b.port.bindSwitch(fib, null, () => {});
    fib.set(DST_MAC_N, b.port, 60_000);
    const N = 60;
    await send(a, N, 0.002);
    await waitFor(() => b.port.stats().txFrames >= N, { what: `${N} frames cut through` });
    await waitFor(() => calls.reduce((s, c) => s + c.frames, 0) === N, { what: 'every frame reported' });
    // Report k+1 fires at least 10 loop-clock milliseconds after report k's loop iteration (its
    // timer is armed after it), so k reports span at least 10(k - 1) - 1 ms of real time (the
    // loop clock is truncated to the millisecond). One report per loop iteration (as before)
    // would make about one per frame here.
    const span = calls[calls.length - 1]!.at - calls[0]!.at;
    expect(calls.length, JSON.stringify(calls.map((c) => [Math.round(c.at), c.frames]))).toBeLessThanOrEqual(Math.floor((span + 2) / 10) + 1);

    // Reading the port's counters takes the pending report first: exact at once, no waiting.
    await send(a, 20);
    await waitFor(() => b.port.stats().txFrames >= N + 20, { what: '20 more frames cut through' });
    const rx = a.port.stats().rxFrames;
    expect(calls.reduce((s, c) => s + c.frames, 0)).toBe(N + 20);
    expect(rx).toBeGreaterThanOrEqual(N + 20);
  });
});
