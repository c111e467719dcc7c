/**
 * `mvnet net create --dhcp-range`: real DHCP clients (busybox udhcpc in VM namespaces) get
 * addresses inside the range only, even when they ask for one outside it; a static address
 * (`--ip`) outside the range is still honoured; once the range is used up, a third client gets
 * nothing. And the CLI: the range in `net create`'s answer and in `net list`, a bad one refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetInfo } from '../../daemon/control/api.js';
import { cleanupAll } from '../support/netns.js';
import { startTopology, type Topology } from '../support/stack-topology.js';

afterAll(cleanupAll);

const RANGE = ['10.216.0.100', '10.216.0.101'];

describe('stack: DHCP range', () => {
  let t: Topology;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'sdr' });
  });

  it('net create takes --dhcp-range, net list shows it, a range outside the subnet is refused', async () => {
    const out = await t.cli(['net', 'create', 'lan', '--subnet', '10.216.0.0/24', '--dhcp-range', `${RANGE[0]}-${RANGE[1]}`]);
    expect(out).toContain(`dhcp ${RANGE[0]}-${RANGE[1]}`);
    const list = await t.daemon.cliJson<NetInfo[]>(['net', 'list']);
    expect(list.find((n) => n.name === 'lan')).toMatchObject({ subnet: '10.216.0.0/24', gateway: '10.216.0.1', dhcpRange: `${RANGE[0]}-${RANGE[1]}` });
    const text = await t.cli(['net', 'list']);
    expect(text).toMatch(/^NAME\s+SUBNET\s+GATEWAY\s+DHCP\s/m);
    expect(text).toMatch(/^lan\s+10\.216\.0\.0\/24\s+10\.216\.0\.1\s+10\.216\.0\.100-10\.216\.0\.101\s/m);

    const bad = await t.daemon.cli(['net', 'create', 'bad', '--subnet', '10.216.1.0/24', '--dhcp-range', '10.216.0.100-10.216.0.101']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('DHCP range 10.216.0.100-10.216.0.101 is not inside the host addresses of 10.216.1.0/24');
    expect((await t.daemon.cliJson<NetInfo[]>(['net', 'list'])).map((n) => n.name)).toEqual(['lan']);
  });

  it('leases inside the range only, also to a client asking for an address outside it', async () => {
    const a = await t.addVm('a', 'lan');
    // -r: the client asks for 10.216.0.7 in its DISCOVER (as one returning from elsewhere would).
    const la = await a.dhcp({ extra: ['-r', '10.216.0.7'] });
    expect(RANGE).toContain(la.ip);
    expect(la.router).toBe('10.216.0.1');
    const addr = await a.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', a.ifname]);
    expect(addr.stdout).toContain(`${la.ip}/24`);
    expect(await a.ns.ping('10.216.0.1', { count: 2 })).toBe(true);

    const b = await t.addVm('b', 'lan');
    const lb = await b.dhcp();
    expect(RANGE).toContain(lb.ip);
    expect(lb.ip).not.toBe(la.ip);
    expect(await b.ns.ping(la.ip, { count: 2 })).toBe(true);
  });

  it('honours a static address outside the range', async () => {
    const s = await t.addVm('s', 'lan', { ip: '10.216.0.50' });
    const ls = await s.dhcp();
    expect(ls.ip).toBe('10.216.0.50');
    expect(await s.ns.ping('10.216.0.1', { count: 2 })).toBe(true);
  });

  it('a client past the end of the range gets no lease', async () => {
    const c = await t.addVm('c', 'lan');
    // -n: udhcpc exits when 3 DISCOVERs a second apart got no offer (the answer is its exit).
    await expect(c.dhcp({ extra: ['-n', '-t', '3', '-T', '1'], timeoutMs: 15_000 })).rejects.toThrow(/exited \(1\) before the expected output line/);
    expect(c.dhcpEvents().map((e) => e.event)).not.toContain('bound');
    const addr = await c.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', c.ifname]);
    expect(addr.stdout).not.toMatch(/inet /);
  });
});
