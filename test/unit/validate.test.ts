import { describe, it, expect } from 'vitest';
import { checkNetworkSpec, checkVmSpec } from '../../daemon/state/validate.js';
import { UserError } from '../../daemon/errors.js';

const nets = new Map([['a', { name: 'a', subnet: '10.1.0.0/24', gateway: '10.1.0.1', mtu: 1500 }]]);

describe('network validation', () => {
  it('normalises the subnet and defaults the gateway to the first host', () => {
    expect(checkNetworkSpec({ name: 'a', subnet: '10.1.0.77/24' })).toEqual({ name: 'a', subnet: '10.1.0.0/24', gateway: '10.1.0.1', mtu: 1500 });
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
  ])('rejects %j', (p, re) => {
    expect(() => checkVmSpec(p, nets)).toThrow(re);
  });
});
