/**
 * `--iface IF`: an existing interface as a VM's port (AF_PACKET). Here one end of a veth pair
 * stays in the root namespace and is attached; the other end is in a namespace whose kernel
 * then talks to a TAP VM through mvnet. A second case attaches a veth end that lives inside a
 * namespace (`--iface IF --netns NS`).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../support/daemon.js';
import { addVeth, cleanupAll, createNetns, run, uniqueName, type Netns } from '../support/netns.js';
import { attachTapVm, tcpSend, tcpSink, type TapVm } from '../support/vms.js';

describe('--iface: a veth end as a VM port', () => {
  let d: Daemon;
  let tap: TapVm;

  beforeAll(async () => {
    d = await startDaemon();
    await d.cliOk(['net', 'create', 'I', '--subnet', '10.77.5.0/24']);
    tap = await attachTapVm(d, { vm: 'tapvm', net: 'I', cidr: '10.77.5.12/24', prefix: 'if-tap' });
  });

  afterAll(cleanupAll);

  describe('root-namespace end', () => {
    let guest: Netns;
    const rootEnd = uniqueName('mvt');

    beforeAll(async () => {
      guest = await createNetns('if-g');
      await addVeth({ name: rootEnd, up: false }, { name: 'eth0', netns: guest });
      // Keep the root namespace's kernel quiet on this link (no IPv6 RS/MLD/DAD).
      await run(['sysctl', '-q', '-w', `net.ipv6.conf.${rootEnd}.disable_ipv6=1`]);
      await run(['ip', 'link', 'set', rootEnd, 'up']);
      await guest.addAddr('eth0', '10.77.5.11/24');
      await d.cliOk(['vm', 'attach', 'ifvm', '--net', 'I', '--iface', rootEnd]);
    });

    it('is up', async () => {
      const v = await d.vm('ifvm');
      expect(v.port.kind).toBe('iface');
      expect(v.port.state, v.port.detail).toBe('up');
    });

    it('pings a TAP VM and back', async () => {
      expect(await guest.ping(tap.ip)).toBe(true);
      expect(await tap.ns.ping('10.77.5.11')).toBe(true);
    });

    it('carries a TCP stream intact', async () => {
      const sink = await tcpSink(tap.ns, tap.ip, 5003);
      const sent = await tcpSend(guest, tap.ip, 5003, 2 * 1024 * 1024);
      expect(sent.ok, sent.error).toBe(true);
      const got = await sink.result();
      expect(got.sha256).toBe(sent.sha256);
    });

    it('leaves the interface in place on detach', async () => {
      await d.cliOk(['vm', 'detach', 'ifvm']);
      const r = await run(['ip', 'link', 'show', 'dev', rootEnd], { check: false });
      expect(r.code).toBe(0);
      expect(await guest.ping(tap.ip, { count: 1, waitS: 1 })).toBe(false);
    });
  });

  describe('end inside a namespace (--netns)', () => {
    let host: Netns;
    let guest: Netns;

    beforeAll(async () => {
      host = await createNetns('if-h');
      guest = await createNetns('if-g2');
      await addVeth({ name: 'vport', netns: host }, { name: 'eth0', netns: guest });
      await guest.addAddr('eth0', '10.77.5.21/24');
      await d.cliOk(['vm', 'attach', 'ifvm2', '--net', 'I', '--iface', 'vport', '--netns', host.name]);
    });

    it('pings a TAP VM', async () => {
      expect(await guest.ping(tap.ip)).toBe(true);
      expect(await tap.ns.ping('10.77.5.21')).toBe(true);
    });
  });
});
