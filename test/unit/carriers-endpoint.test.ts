import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { UserError } from '../../daemon/errors.js';
import { endpointMultiaddr, endpointText, listenMultiaddr, listenText, parseEndpoint, parseListen, type Endpoint, type Listen } from '../../daemon/carriers/endpoint.js';
import { onionV3FromPublicKey, onionV3Problem } from '../../daemon/carriers/onion-address.js';

// Published v3 addresses (DuckDuckGo, the Tor Project): real keys with real checksums.
const DDG = 'duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad';
const TORPROJECT = '2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid';
/** DDG with one character of the key changed: right shape and version, wrong checksum. */
const DDG_TYPO = `${DDG.slice(0, 3)}a${DDG.slice(4)}`;

describe('onion v3 addresses', () => {
  it('accepts published addresses', () => {
    expect(onionV3Problem(DDG)).toBeNull();
    expect(onionV3Problem(TORPROJECT)).toBeNull();
  });

  it('encodes a key to an address it accepts, and refuses every one-character change of it', () => {
    const id = onionV3FromPublicKey(randomBytes(32));
    expect(id).toMatch(/^[a-z2-7]{56}$/);
    expect(onionV3Problem(id)).toBeNull();
    for (let i = 0; i < 56; i++) {
      const other = id[i] === 'a' ? 'b' : 'a';
      const typo = id.slice(0, i) + other + id.slice(i + 1);
      expect(onionV3Problem(typo), `change at ${i}`).not.toBeNull();
    }
  });

  it('says what is wrong', () => {
    expect(DDG_TYPO).toHaveLength(56);
    expect(onionV3Problem(DDG_TYPO)).toMatch(/checksum/);
    expect(onionV3Problem(`${DDG.slice(0, 55)}a`)).toMatch(/version/);
    expect(onionV3Problem(DDG.slice(1))).toMatch(/56 base32/);
    expect(onionV3Problem(DDG.toUpperCase())).toMatch(/56 base32/);
  });
});

describe('parseEndpoint', () => {
  const cases: [string, Endpoint, string, string][] = [
    ['10.0.0.2:51820', { kind: 'udp', host: '10.0.0.2', port: 51820 }, 'udp:10.0.0.2:51820', '/ip4/10.0.0.2/udp/51820'],
    ['udp:10.0.0.2:51820', { kind: 'udp', host: '10.0.0.2', port: 51820 }, 'udp:10.0.0.2:51820', '/ip4/10.0.0.2/udp/51820'],
    ['tcp:10.0.0.2:443', { kind: 'tcp', host: '10.0.0.2', port: 443 }, 'tcp:10.0.0.2:443', '/ip4/10.0.0.2/tcp/443'],
    ['[::1]:443', { kind: 'udp', host: '::1', port: 443 }, 'udp:[::1]:443', '/ip6/::1/udp/443'],
    ['tcp:[0:0:0::1]:443', { kind: 'tcp', host: '::1', port: 443 }, 'tcp:[::1]:443', '/ip6/::1/tcp/443'],
    ['[FE80::1%veth0]:5', { kind: 'udp', host: 'fe80::1%veth0', port: 5 }, 'udp:[fe80::1%veth0]:5', '/ip6zone/veth0/ip6/fe80::1/udp/5'],
    ['Router-B.example.:1', { kind: 'udp', host: 'router-b.example', port: 1 }, 'udp:router-b.example:1', '/dns/router-b.example/udp/1'],
    ['unix:/run/x.sock', { kind: 'unix', path: '/run/x.sock' }, 'unix:/run/x.sock', '/unix/%2Frun%2Fx.sock'],
    [`${DDG}.onion:51820`, { kind: 'onion', address: DDG, port: 51820 }, `onion:${DDG}.onion:51820`, `/onion3/${DDG}:51820`],
    [`onion:${DDG}.onion:80`, { kind: 'onion', address: DDG, port: 80 }, `onion:${DDG}.onion:80`, `/onion3/${DDG}:80`],
    [`tcp:${DDG.toUpperCase()}.ONION:80`, { kind: 'onion', address: DDG, port: 80 }, `onion:${DDG}.onion:80`, `/onion3/${DDG}:80`],
    ['/ip4/10.0.0.2/udp/51820', { kind: 'udp', host: '10.0.0.2', port: 51820 }, 'udp:10.0.0.2:51820', '/ip4/10.0.0.2/udp/51820'],
    ['/ip6/::1/tcp/443', { kind: 'tcp', host: '::1', port: 443 }, 'tcp:[::1]:443', '/ip6/::1/tcp/443'],
    ['/ip6zone/veth0/ip6/fe80::1/udp/5', { kind: 'udp', host: 'fe80::1%veth0', port: 5 }, 'udp:[fe80::1%veth0]:5', '/ip6zone/veth0/ip6/fe80::1/udp/5'],
    ['/dns/host/udp/1', { kind: 'udp', host: 'host', port: 1 }, 'udp:host:1', '/dns/host/udp/1'],
    ['/dns4/a.example/tcp/9', { kind: 'tcp', host: 'a.example', port: 9 }, 'tcp:a.example:9', '/dns/a.example/tcp/9'],
    ['/dns6/a.example/udp/9', { kind: 'udp', host: 'a.example', port: 9 }, 'udp:a.example:9', '/dns/a.example/udp/9'],
    ['/unix/%2Frun%2Fx.sock', { kind: 'unix', path: '/run/x.sock' }, 'unix:/run/x.sock', '/unix/%2Frun%2Fx.sock'],
    ['/unix/run/x.sock', { kind: 'unix', path: '/run/x.sock' }, 'unix:/run/x.sock', '/unix/%2Frun%2Fx.sock'],
    [`/onion3/${TORPROJECT}:443`, { kind: 'onion', address: TORPROJECT, port: 443 }, `onion:${TORPROJECT}.onion:443`, `/onion3/${TORPROJECT}:443`],
  ];
  it.each(cases)('%s', (text, want, canonical, ma) => {
    const e = parseEndpoint(text);
    expect(e).toEqual(want);
    expect(endpointText(e)).toBe(canonical);
    expect(endpointMultiaddr(e)).toBe(ma);
    // Both printed forms read back to the same endpoint.
    expect(parseEndpoint(canonical)).toEqual(want);
    expect(parseEndpoint(ma)).toEqual(want);
  });

  it('takes the default kind for a bare HOST:PORT only', () => {
    expect(parseEndpoint('10.0.0.2:443', 'tcp')).toEqual({ kind: 'tcp', host: '10.0.0.2', port: 443 });
    expect(parseEndpoint('udp:10.0.0.2:443', 'tcp').kind).toBe('udp');
    expect(parseEndpoint('[::1]:443', 'tcp').kind).toBe('tcp');
  });

  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['abc', /no port/],
    ['10.0.0.2:0', /port "0"/],
    ['10.0.0.2:70000', /port "70000"/],
    ['10.0.0.2:-1', /port "-1"/],
    ['10.0.0.2:', /port ""/],
    ['10.0.0.2:80x', /port "80x"/],
    [':80', /no host/],
    ['::1:443', /brackets/],
    ['[10.0.0.2]:5', /not an IPv6/],
    ['[::1]443', /\[V6\]:PORT/],
    ['1.2.3.999:5', /not a valid IPv4/],
    ['bad_name:5', /neither an IP address nor a DNS name/],
    ['[fe80::1%a/b]:5', /zone/],
    [`${DDG_TYPO}.onion:80`, /checksum/],
    ['short.onion:80', /not an onion v3 address/],
    [`udp:${DDG}.onion:80`, /no UDP/],
    [`onion:10.0.0.2:80`, /expected onion:ADDR.onion:PORT/],
    ['unix:run/x.sock', /not absolute/],
    ['unix:', /not absolute/],
    ['/unix/run%2Fx.sock', /not absolute/],
    ['/ip4/10.0.0.2/udp/0', /port "0"/],
    ['/ip4/10.0.0.2/udp/70000', /not a multiaddr we can read/],
    ['/ip4/10.0.0.2', /expected \/ip4/],
    ['/ip4/10.0.0.2/sctp/5', /expected \/ip4/],
    ['/ip4/10.0.0.2/udp/5/quic', /expected \/ip4/],
    ['/nonsense/1', /not a multiaddr/],
    [`/onion3/${DDG_TYPO}:80`, /checksum/],
    [`/dns/${DDG}.onion/tcp/80`, /\/onion3\/ADDR:PORT/],
  ];
  it.each(bad)('refuses %j', (text, why) => {
    let err: unknown;
    try {
      parseEndpoint(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    const msg = (err as Error).message;
    expect(msg).toMatch(why);
    expect(msg).toContain(`invalid endpoint ${JSON.stringify(text)}`);
    expect(msg).not.toContain('\n');
  });
});

describe('parseListen', () => {
  const cases: [string, Listen, string, string][] = [
    ['udp:51820', { kind: 'udp', host: '', port: 51820 }, 'udp:51820', '/ip6/::/udp/51820'],
    ['udp:127.0.0.1:51820', { kind: 'udp', host: '127.0.0.1', port: 51820 }, 'udp:127.0.0.1:51820', '/ip4/127.0.0.1/udp/51820'],
    ['udp:0.0.0.0:51820', { kind: 'udp', host: '0.0.0.0', port: 51820 }, 'udp:0.0.0.0:51820', '/ip4/0.0.0.0/udp/51820'],
    ['udp:[::]:51820', { kind: 'udp', host: '', port: 51820 }, 'udp:51820', '/ip6/::/udp/51820'],
    ['tcp:443', { kind: 'tcp', host: '', port: 443 }, 'tcp:443', '/ip6/::/tcp/443'],
    ['tcp:[::1]:443', { kind: 'tcp', host: '::1', port: 443 }, 'tcp:[::1]:443', '/ip6/::1/tcp/443'],
    ['unix:/run/mvnet/link.sock', { kind: 'unix', path: '/run/mvnet/link.sock' }, 'unix:/run/mvnet/link.sock', '/unix/%2Frun%2Fmvnet%2Flink.sock'],
    ['/ip4/0.0.0.0/udp/5', { kind: 'udp', host: '0.0.0.0', port: 5 }, 'udp:0.0.0.0:5', '/ip4/0.0.0.0/udp/5'],
    ['/ip6/::/tcp/5', { kind: 'tcp', host: '', port: 5 }, 'tcp:5', '/ip6/::/tcp/5'],
    ['/ip6/::1/udp/5', { kind: 'udp', host: '::1', port: 5 }, 'udp:[::1]:5', '/ip6/::1/udp/5'],
    ['/unix/%2Frun%2Fx.sock', { kind: 'unix', path: '/run/x.sock' }, 'unix:/run/x.sock', '/unix/%2Frun%2Fx.sock'],
  ];
  it.each(cases)('%s', (text, want, canonical, ma) => {
    const l = parseListen(text);
    expect(l).toEqual(want);
    expect(listenText(l)).toBe(canonical);
    expect(listenMultiaddr(l)).toBe(ma);
    expect(parseListen(canonical)).toEqual(want);
    expect(parseListen(ma)).toEqual(want);
  });

  it('reads onion listeners, default port 51820', () => {
    expect(parseListen('onion')).toEqual({ kind: 'onion', port: 51820 });
    expect(parseListen('onion:443')).toEqual({ kind: 'onion', port: 443 });
    expect(listenText({ kind: 'onion', port: 443 })).toBe('onion:443');
    expect(() => listenMultiaddr({ kind: 'onion', port: 443 })).toThrow(/published address/);
    expect(listenMultiaddr({ kind: 'onion', port: 443 }, DDG)).toBe(`/onion3/${DDG}:443`);
  });

  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['abc', /no such listen address/],
    ['udp', /no such listen address/],
    ['51820', /no such listen address/],
    ['udp:0', /port "0"/],
    ['udp:70000', /port "70000"/],
    ['tcp:abc', /no port/],
    ['udp:host.example:5', /not an IP address/],
    ['tcp:[10.0.0.1]:5', /not an IP address/],
    ['onion:0', /port "0"/],
    ['onion:x', /port "x"/],
    ['unix:rel.sock', /not absolute/],
    ['/dns/a.example/udp/5', /expected \/ip4\|ip6/],
    [`/onion3/${DDG}:80`, /onion listener/],
    ['/ip4/0.0.0.0/udp/0', /port "0"/],
  ];
  it.each(bad)('refuses %j', (text, why) => {
    expect(() => parseListen(text)).toThrow(UserError);
    expect(() => parseListen(text)).toThrow(why);
    expect(() => parseListen(text)).toThrow(`invalid listen address ${JSON.stringify(text)}`);
  });
});
