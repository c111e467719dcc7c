import { describe, it, expect } from 'vitest';
import { checkNetworkSpec, checkRoute, checkTeeSpec, checkVmSpec } from '../../daemon/state/validate.js';
import { UserError } from '../../daemon/errors.js';

const nets = new Map([['a', { name: 'a', subnet: '10.1.0.0/24', gateway: '10.1.0.1', mtu: 1500 }]]);

describe('network validation', () => {
  it('defaults the gateway to the first host', () => {
    expect(checkNetworkSpec({ name: 'a', subnet: '10.1.0.0/24' })).toEqual({ name: 'a', subnet: '10.1.0.0/24', gateway: '10.1.0.1', mtu: 1500 });
  });
  it('refuses host bits and names the network', () => {
    expect(() => checkNetworkSpec({ name: 'a', subnet: '10.1.0.77/24' })).toThrow(/host bits set; the network is 10\.1\.0\.0\/24/);
    expect(() => checkNetworkSpec({ name: 'a', subnet: '10.1.0.0/24', ipv6: 'fd00:1::5/64' })).toThrow(/host bits set; the prefix is fd00:1::\/64/);
  });
  it.each([
    ['127.0.0.0/8', /loopback/],
    ['127.255.0.0/16', /loopback/],
    ['0.0.0.0/8', /this network/],
    ['169.254.1.0/24', /link-local/],
    ['168.0.0.0/8', null],
    ['169.0.0.0/8', /link-local/],
    ['224.0.0.0/24', /multicast/],
    ['239.0.0.0/8', /multicast/],
    ['240.0.0.0/8', /reserved/],
    ['255.255.255.0/24', /reserved/],
    ['223.255.255.0/24', null],
    ['1.0.0.0/8', null],
  ])('subnet %s', (subnet, re) => {
    if (re === null) expect(checkNetworkSpec({ name: 'a', subnet }).subnet).toBe(subnet);
    else expect(() => checkNetworkSpec({ name: 'a', subnet })).toThrow(re);
  });
  it.each([
    ['fd00:1::/64', null],
    ['2001:db8:1:2::/64', null],
    ['fd00:1::/48', /must be a \/64/],
    ['fd00:1::/96', /must be a \/64/],
    ['fd00:1::', /invalid ipv6/],
    ['fe80::/64', /link-local/],
    ['ff00::/64', /multicast/],
    ['::/64', /::\/8/],
    ['0:0:0:1::/64', /::\/8/],
  ])('ipv6 prefix %s', (ipv6, re) => {
    if (re === null) expect(checkNetworkSpec({ name: 'a', subnet: '10.0.0.0/24', ipv6 }).ipv6).toBe(ipv6);
    else expect(() => checkNetworkSpec({ name: 'a', subnet: '10.0.0.0/24', ipv6 })).toThrow(re);
  });
  it('accepts ipv6 and mtu', () => {
    expect(checkNetworkSpec({ name: 'b', subnet: '10.2.0.0/16', gateway: '10.2.3.4', ipv6: 'fd00:1::/64', mtu: 65520 })).toMatchObject({ ipv6: 'fd00:1::/64', mtu: 65520, gateway: '10.2.3.4' });
  });
  it.each([
    [{ name: 'a b', subnet: '10.0.0.0/24' }, /invalid network name/],
    [{ name: 'a', subnet: '10.0.0.0' }, /invalid subnet/],
    [{ name: 'a', subnet: '10.0.0.300/24' }, /invalid subnet/],
    [{ name: 'a', subnet: '10.0.0.0/31' }, /prefix length/],
    [{ name: 'a', subnet: '10.0.0.0/24', gateway: '10.0.1.1' }, /not a host address/],
    [{ name: 'a', subnet: '10.0.0.0/24', gateway: '10.0.0.255' }, /not a host address/],
    [{ name: 'a', subnet: '10.0.0.0/24', mtu: 70000 }, /invalid mtu/],
    [{ name: 'a', subnet: '10.0.0.0/24', mtu: 1000, ipv6: 'fd00::/64' }, /1280/],
    [{ name: 'a', subnet: '10.0.0.0/24', ipv6: 'nope' }, /invalid ipv6/],
    [{ subnet: '10.0.0.0/24' }, /invalid network name/],
    // Names checkName takes but a DNS domain (<name>.mvnet) cannot hold: found by the control fuzzer.
    [{ name: 'A_b.c', subnet: '10.0.0.0/24' }, /invalid network name "A_b.c": it names the DNS domain a_b.c.mvnet/],
    [{ name: 'a-', subnet: '10.0.0.0/24' }, /DNS domain a-\.mvnet/],
    [{ name: 'a..b', subnet: '10.0.0.0/24' }, /DNS domain/],
  ])('rejects %j', (p, re) => {
    expect(() => checkNetworkSpec(p)).toThrow(UserError);
    expect(() => checkNetworkSpec(p)).toThrow(re);
  });
});

describe('attachment validation', () => {
  it('accepts each port kind', () => {
    expect(checkVmSpec({ name: 'v', net: 'a', port: { kind: 'tap', ifname: 'tap0', netns: 'ns1' }, mac: '52:54:00:AA:bb:01' }, nets)).toEqual({
      name: 'v',
      net: 'a',
      port: { kind: 'tap', ifname: 'tap0', netns: 'ns1' },
      mac: '52:54:00:aa:bb:01',
    });
    expect(checkVmSpec({ name: 'v', net: 'a', port: { kind: 'unix', path: '/run/x.sock' } }, nets).port).toEqual({ kind: 'unix', path: '/run/x.sock' });
    expect(checkVmSpec({ name: 'v', net: 'a', port: { kind: 'fd', rx: '/a', tx: '/b' } }, nets).port).toEqual({ kind: 'fd', rx: '/a', tx: '/b' });
    // As answers name a --fifo port: stored as the fd port it always was.
    expect(checkVmSpec({ name: 'v', net: 'a', port: { kind: 'fifo', rx: '/a', tx: '/b' } }, nets).port).toEqual({ kind: 'fd', rx: '/a', tx: '/b' });
    const token = '0123456789abcdef0123456789abcdef';
    expect(checkVmSpec({ name: 'v', net: 'a', port: { kind: 'fd', token } }, nets).port).toEqual({ kind: 'fd', token });
    expect(checkVmSpec({ name: 'v', net: 'a', port: { kind: 'dgram', path: '/a', peer: '/b' } }, nets).port).toEqual({ kind: 'dgram', path: '/a', peer: '/b' });
  });
  it.each<[unknown, RegExp]>([
    [{ name: 'v', net: 'zz', port: { kind: 'tap', ifname: 't' } }, /no network named zz/],
    [{ name: 'v', net: 'a', port: { kind: 'tap', ifname: 'waytoolonginterfacename' } }, /interface name/],
    [{ name: 'v', net: 'a', port: { kind: 'bogus' } }, /unknown port kind/],
    [{ name: 'v', net: 'a', port: { kind: 'unix', path: 'rel.sock' } }, /absolute path/],
    [{ name: 'v', net: 'a', port: { kind: 'unix', path: '/' + 'x'.repeat(120) } }, /longer than/],
    [{ name: 'v', net: 'a', port: { kind: 'tap', ifname: 't' }, mac: '01:00:00:00:00:01' }, /not a unicast/],
    [{ name: 'v', net: 'a', port: { kind: 'tap', ifname: 't' }, mac: 'zz' }, /invalid MAC/],
    [{ name: 'v', net: 'a', port: { kind: 'tap', ifname: 't' }, ip: '10.9.0.5' }, /not a host address/],
    [{ name: 'v', net: 'a', port: { kind: 'tap', ifname: 't' }, ip: '10.1.0.1' }, /gateway address/],
    // A descriptor number would name one of the daemon's own fds: never accepted, whatever the number.
    ...[0, 1, 2, 3, 7, 20, 1023].map((fd) => [{ name: 'v', net: 'a', port: { kind: 'fd', fd } }, /port\.fd is not accepted/] as [unknown, RegExp]),
    [{ name: 'v', net: 'a', port: { kind: 'fd', fd: 5, token: '0123456789abcdef0123456789abcdef' } }, /port\.fd is not accepted/],
    [{ name: 'v', net: 'a', port: { kind: 'fd', token: '0123456789ABCDEF0123456789ABCDEF' } }, /invalid port\.token/],
    [{ name: 'v', net: 'a', port: { kind: 'fd', token: '../../etc/passwd' } }, /invalid port\.token/],
    [{ name: 'v', net: 'a', port: { kind: 'fd', token: 5 } }, /invalid port\.token/],
    [{ name: 'v', net: 'a', port: { kind: 'fd', token: '0123456789abcdef0123456789abcdef', netns: 'n' } }, /--netns applies/],
    // An `ip netns` name is a file name under /run/netns: no path tricks in it.
    ...['../x', 'a/b', '..', '.', '-x', 'x y', ''].map((netns) => [{ name: 'v', net: 'a', port: { kind: 'tap', ifname: 't', netns } }, /netns/] as [unknown, RegExp]),
    [{ name: 'v', net: 'a', port: { kind: 'unix', path: '/x', netns: 'n' } }, /--netns applies/],
    [{ name: 'v', net: 'a', port: { kind: 'tap', ifname: 't' }, ip: '10.1.0.0' }, /network address/],
    [{ name: 'v', net: 'a', port: { kind: 'tap', ifname: 't' }, ip: '10.1.0.255' }, /broadcast address/],
    [{ name: 'v', net: 'a', port: { kind: 'iface', ifname: 'lo' } }, /loopback/],
    [{ name: 'show', net: 'a', port: { kind: 'tap', ifname: 't' } }, /reserved/],
    [{ name: 'HELP', net: 'a', port: { kind: 'tap', ifname: 't' } }, /reserved/],
  ])('rejects %j', (p, re) => {
    expect(() => checkVmSpec(p, nets)).toThrow(re);
  });

  it('puts a bare or omitted --unix-listen/--dgram name in the VM socket directory', () => {
    const at = (port: object): unknown => checkVmSpec({ name: 'vm1', net: 'a', port }, nets, { vmSocketDir: '/run/mvnet/vms' }).port;
    expect(at({ kind: 'unix-listen', path: 'q.sock' })).toEqual({ kind: 'unix-listen', path: '/run/mvnet/vms/q.sock' });
    expect(at({ kind: 'unix-listen' })).toEqual({ kind: 'unix-listen', path: '/run/mvnet/vms/vm1.sock' });
    expect(at({ kind: 'dgram', peer: '/q/peer.sock' })).toEqual({ kind: 'dgram', path: '/run/mvnet/vms/vm1.sock', peer: '/q/peer.sock' });
    expect(at({ kind: 'dgram', path: '/srv/vm/d.sock' })).toEqual({ kind: 'dgram', path: '/srv/vm/d.sock' });
    for (const bad of ['../x.sock', 'a/b.sock', '.x', '..', 'a b']) {
      expect(() => at({ kind: 'unix-listen', path: bad })).toThrow(/plain file name/);
    }
    expect(() => at({ kind: 'unix-listen', path: 'x'.repeat(100) })).toThrow(/longer than/);
    // The connecting mode names QEMU's socket: never made by mvnet, never relative.
    expect(() => at({ kind: 'unix', path: 'q.sock' })).toThrow(/absolute path/);
    // Without a directory (the state file), a bare name is refused.
    expect(() => checkVmSpec({ name: 'v', net: 'a', port: { kind: 'unix-listen', path: 'q.sock' } }, nets)).toThrow(/absolute path/);
  });

  it('--vhost-user: an absolute path, or a bare or omitted name in the VM socket directory (VM.vhost.sock); no netns', () => {
    const at = (port: object): unknown => checkVmSpec({ name: 'vm1', net: 'a', port }, nets, { vmSocketDir: '/run/mvnet/vms' }).port;
    expect(at({ kind: 'vhost-user' })).toEqual({ kind: 'vhost-user', path: '/run/mvnet/vms/vm1.vhost.sock' });
    expect(at({ kind: 'vhost-user', path: 'q.sock' })).toEqual({ kind: 'vhost-user', path: '/run/mvnet/vms/q.sock' });
    expect(at({ kind: 'vhost-user', path: '/srv/vm/v.sock' })).toEqual({ kind: 'vhost-user', path: '/srv/vm/v.sock' });
    for (const bad of ['../x.sock', 'a/b.sock', '.x', 'a b']) expect(() => at({ kind: 'vhost-user', path: bad })).toThrow(/plain file name/);
    expect(() => at({ kind: 'vhost-user', path: `/${'x'.repeat(107)}` })).toThrow(/longer than/);
    expect(() => at({ kind: 'vhost-user', path: 5 })).toThrow(/path/);
    expect(() => at({ kind: 'vhost-user', netns: 'n' })).toThrow(/--netns applies/);
    expect(() => checkVmSpec({ name: 'v', net: 'a', port: { kind: 'vhost-user', path: 'q.sock' } }, nets)).toThrow(/absolute path/);
    // The state file's record is taken as it was saved.
    expect(checkVmSpec({ name: 'v', net: 'a', port: { kind: 'vhost-user', path: '/run/v.sock' } }, nets, { fromState: true }).port).toEqual({ kind: 'vhost-user', path: '/run/v.sock' });
  });
});

describe('device records', () => {
  const tap = { name: 'v', net: 'a', port: { kind: 'tap', ifname: 't' } };
  const rec = { created: false, was: { mtu: 1400, mac: '02:00:00:00:00:01', up: false, persistent: false } };
  it('are read from the state file only', () => {
    expect(checkVmSpec({ ...tap, device: rec }, nets, { fromState: true }).device).toEqual(rec);
    expect(checkVmSpec({ ...tap, device: { created: true } }, nets).device).toBeUndefined();
    expect(checkVmSpec({ ...tap, port: { kind: 'unix', path: '/x' }, device: rec }, nets, { fromState: true }).device).toBeUndefined();
  });
  it.each([{ created: 'yes' }, { created: false, was: { mtu: 5 } }, { created: false, was: { mac: 'zz' } }, { created: false, was: { up: 1 } }])('rejects %j', (device) => {
    expect(() => checkVmSpec({ ...tap, device }, nets, { fromState: true })).toThrow(UserError);
  });
});

describe('route validation', () => {
  it('takes allow rules as text or as objects, normalised', () => {
    expect(checkRoute({ kind: 'direct', allow: ['10.0.0.0/8:80', { cidr: '192.0.2.1', ports: [[443, 443]] }] })).toEqual({
      kind: 'direct',
      allow: [
        { cidr: '10.0.0.0/8', ports: [[80, 80]] },
        { cidr: '192.0.2.1/32', ports: [[443, 443]] },
      ],
    });
  });

  // Found by the control fuzzer: a rule that is null, or an object without a text cidr, threw a
  // TypeError (an internal error) instead of a UserError.
  it.each([
    [[null], /invalid allow rule|allow rule must be/],
    [[{ __proto__: null }], /invalid allow rule/],
    [[{ cidr: 5 }], /invalid allow rule/],
    [[{ cidr: '10.0.0.0/8', ports: 'x' }], /invalid allow rule/],
    [[{ cidr: '10.0.0.0/8', ports: [[1]] }], /invalid allow rule/],
    [[7], /allow rule must be|invalid allow rule/],
  ])('refuses allow %j with a UserError', (allow, re) => {
    expect(() => checkRoute({ kind: 'direct', allow })).toThrow(UserError);
    expect(() => checkRoute({ kind: 'direct', allow })).toThrow(re);
  });
});

describe('tee specs', () => {
  const opts = { captureDir: '/var/lib/mvnet/captures', vmSocketDir: '/run/mvnet/vms' };
  it('takes a name or a path under captureDir (kept relative), or unix:PATH as VM sockets take it', () => {
    expect(checkTeeSpec({ name: 't', from: { vm: 'vm1' }, to: 'a.pcapng' }, opts)).toEqual({ name: 't', from: { vm: 'vm1' }, to: 'a.pcapng', filter: '', snaplen: 262144 });
    expect(checkTeeSpec({ name: 't', from: { net: 'n' }, to: '/var/lib/mvnet/captures/d/a.pcapng', filter: 'tcp', snaplen: 96, ring: { files: 3, sizeMb: 5 } }, opts)).toEqual({
      name: 't',
      from: { net: 'n' },
      to: 'd/a.pcapng',
      filter: 'tcp',
      snaplen: 96,
      ring: { files: 3, sizeMb: 5 },
    });
    expect(checkTeeSpec({ name: 't', from: { point: ['exit:tor', 'drops'] }, to: 'unix:ids.sock' }, opts).to).toBe('unix:/run/mvnet/vms/ids.sock');
    expect(checkTeeSpec({ name: 't', from: { vm: 'vm1' }, to: 'unix:/tmp/x/ids.sock' }, opts).to).toBe('unix:/tmp/x/ids.sock');
  });
  it('refuses what it must, saying why', () => {
    const bad = (p: Record<string, unknown>, re: RegExp): void => {
      expect(() => checkTeeSpec({ name: 't', from: { vm: 'vm1' }, to: 'a', ...p }, opts)).toThrow(re);
    };
    bad({ to: '/etc/passwd' }, /outside the capture directory/);
    bad({ to: '../a' }, /\.\./);
    bad({ to: 'a/./b' }, /plain name/);
    bad({ to: '' }, /--to/);
    bad({ to: 'unix:' }, /missing path/);
    bad({ to: 'unix:a.sock', ring: { files: 2, sizeMb: 1 } }, /--ring applies to a tee to a file/);
    bad({ ring: { files: 0, sizeMb: 1 } }, /ring file count/);
    bad({ filter: 'host' }, /bad filter/);
    bad({ from: { vm: 'a', net: 'b' } }, /exactly one/);
    bad({ snaplen: -1 }, /snaplen/);
    bad({ extra: 1 }, /unknown tee key extra/);
  });
});
