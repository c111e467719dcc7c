/**
 * What `status` costs per VM: it runs for every VM in `mvnet status` and every second in the
 * events watch, so with 1,000 VMs each native stats() call per VM counts. Real daemon core, real
 * unix datagram sockets; the native Device's stats() is counted on its prototype.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon } from '../../daemon/daemon.js';
import { DEFAULTS, type DaemonConfig } from '../../daemon/config.js';
import { StateStore } from '../../daemon/state/store.js';
import { native } from '../../plugins/native/index.js';

const proto = (native.Device as unknown as { prototype: { stats: (...a: unknown[]) => unknown } }).prototype;
const realStats = proto.stats;
let calls = 0;

let d: Daemon;
let dir: string;
const N = 10;

beforeAll(async () => {
  proto.stats = function (this: unknown, ...a: unknown[]) {
    calls++;
    return realStats.apply(this, a);
  };
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  dir = mkdtempSync(join(base, 'mvnet-status-cost-'));
  const cfg: DaemonConfig = { ...DEFAULTS, stateDir: dir, socket: join(dir, 'mvnet.sock'), tor: { ...DEFAULTS.tor, binary: join(dir, 'no-tor-here') } };
  d = new Daemon(pino({ level: 'silent' }), new StateStore(dir), cfg);
  await d.createNetwork({ name: 'a', subnet: '10.9.0.0/24' });
  await d.attachMany({ vms: Array.from({ length: N }, (_, i) => ({ name: `v${i}`, net: 'a', port: { kind: 'dgram', path: join(dir, `v${i}.sock`) } })) });
});

afterAll(async () => {
  proto.stats = realStats;
  await d?.shutdown();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe('status cost per VM', () => {
  it("a datagram VM's status() reads the native stats twice (state, peer), not three times", () => {
    calls = 0;
    const vms = d.listVms();
    expect(vms.every((v) => v.port.state === 'waiting')).toBe(true);
    // listVms: status() (2) + stats() (1) per VM.
    expect(calls).toBe(3 * N);
  });

  it('daemon.status reads each port once for its VM list and sums the error counts from it', () => {
    calls = 0;
    const st = d.status({ socket: '', stateDir: '', version: '' });
    expect(st.vms).toHaveLength(N);
    expect(st.daemon.errors).toEqual(d.errors());
    calls = 0;
    d.status({ socket: '', stateDir: '', version: '' });
    expect(calls).toBe(3 * N);
  });
});
