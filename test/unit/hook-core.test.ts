/** The pure parts `mvnet hook` and `mvnet-cni` share: names, MACs, SLAAC addresses, routes. */
import { describe, expect, it } from 'vitest';
import { gateway6, HookError, ifnameFor, parseRoute, routeMatches, slaacAddress, stableMac, vmNameFor, wishesFrom } from '../../cli/hook/core.js';

describe('hook core', () => {
  it('keeps a valid VM id as the name, hashes any other, always the same', () => {
    expect(vmNameFor('web-1')).toBe('web-1');
    const long = 'f'.repeat(64);
    expect(vmNameFor(long)).toMatch(/^h-[0-9a-f]{24}$/);
    expect(vmNameFor(long)).toBe(vmNameFor(long));
    expect(vmNameFor('show')).toMatch(/^h-/);
    expect(vmNameFor('a/b')).toMatch(/^h-/);
  });

  it('derives a stable, locally administered unicast MAC and a short interface name', () => {
    const m = stableMac('web-1');
    expect(m).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(stableMac('web-1')).toBe(m);
    expect(stableMac('web-2')).not.toBe(m);
    expect(ifnameFor('mvh', 'web-1')).toMatch(/^mvh[0-9a-f]{12}$/);
  });

  it('computes the EUI-64 SLAAC address and the gateway prefix::1', () => {
    expect(slaacAddress('fd00:1::/64', '52:54:00:12:34:56')).toBe('fd00:1::5054:ff:fe12:3456');
    expect(slaacAddress('2001:db8:0:7::/64', '02:00:00:00:00:01')).toBe('2001:db8:0:7:0:ff:fe00:1');
    expect(gateway6('fd00:231::/64')).toBe('fd00:231::1');
    expect(gateway6('2001:db8:1:2::/64')).toBe('2001:db8:1:2::1');
  });

  it('parses routes and refuses what does not fit', () => {
    expect(parseRoute(undefined, undefined, undefined)).toEqual({ kind: 'none' });
    expect(parseRoute('direct', ['10.0.0.0/8:80'], undefined)).toEqual({ kind: 'direct', allow: ['10.0.0.0/8:80'] });
    expect(parseRoute('none', undefined, '80,443')).toEqual({ kind: 'none', torPorts: [80, 443] });
    expect(parseRoute('all-tor', undefined, undefined)).toEqual({ kind: 'tor' });
    expect(parseRoute('via:fw', undefined, undefined)).toEqual({ kind: 'via', vm: 'fw' });
    expect(() => parseRoute('none', ['10.0.0.0/8'], undefined)).toThrow(HookError);
    expect(() => parseRoute('all-tor', undefined, [80])).toThrow(/torPorts goes with/);
    expect(() => parseRoute('direct', undefined, [0])).toThrow(/list of ports/);
    expect(() => parseRoute(7, undefined, undefined)).toThrow(/route must be/);
    expect(() => wishesFrom({ route: 'direct' }, 'mvnet.')).toThrow(/missing mvnet.network/);
    expect(wishesFrom({ network: 'lan', ip: 'auto' }, '')).toEqual({ network: 'lan', route: { kind: 'none' } });
  });

  it('compares a held route with the wished one', () => {
    expect(routeMatches({ kind: 'direct', allow: [{ cidr: '10.0.0.0/8', ports: [[80, 80]] }] }, { kind: 'direct', allow: ['10.0.0.0/8:80'] } as never)).toBeNull();
    expect(routeMatches({ kind: 'direct' }, { kind: 'none' })).toMatch(/route is direct, not none/);
    expect(routeMatches({ kind: 'none', torPorts: [443, 80] }, { kind: 'none', torPorts: [80, 443] })).toBeNull();
    expect(routeMatches({ kind: 'none' }, { kind: 'none', torPorts: [80] })).toMatch(/Tor ports/);
    expect(routeMatches({ kind: 'via', vm: 'a' }, { kind: 'via', vm: 'b' })).toMatch(/via a, not via b/);
  });
});
