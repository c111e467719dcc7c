/** The tor config section, the embedded torrc, and onion key files. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildTorrc, checkAutomap, checkTorConfig, checkTorrcLines, embeddedPaths } from '../../daemon/tor/config.js';
import { onionKeyFromFile, onionKeyToFile, readOnionKey, writeOnionKey } from '../../daemon/tor/onion-key.js';

const ONION = '2ab7rhua3gtz7u6az75w72qenzn4lyysyc7d6ayn7apeh6agenyoypqd';

describe('checkTorConfig', () => {
  it('defaults to an embedded tor', () => {
    expect(checkTorConfig(undefined)).toEqual({ mode: 'embedded', torrc: [], automap: '10.192.0.0/10', hiddenServiceDirs: [], binary: 'tor', sandbox: true, stopWhenUnused: true, idleStopSec: 60 });
    expect(checkTorConfig({})).toEqual(checkTorConfig(undefined));
  });

  it('takes user, sandbox, stopWhenUnused and idleStopSec, and refuses them wrong or as torrc lines', () => {
    expect(checkTorConfig({ user: 'debian-tor', sandbox: false, stopWhenUnused: false, idleStopSec: 5 })).toMatchObject({ user: 'debian-tor', sandbox: false, stopWhenUnused: false, idleStopSec: 5 });
    expect(() => checkTorConfig({ user: 'a b' })).toThrow(/tor: user "a b" is not a user name/);
    expect(() => checkTorConfig({ sandbox: 'yes' })).toThrow(/tor: sandbox must be true or false/);
    expect(() => checkTorConfig({ idleStopSec: -1 })).toThrow(/idleStopSec must be a number of seconds/);
    expect(() => checkTorConfig({ mode: 'external', socks: '127.0.0.1:9050', control: '127.0.0.1:9051', user: 'x' })).toThrow(/user is only for mode "embedded"/);
    expect(() => checkTorConfig({ torrc: ['User root'] })).toThrow(/sets User, which mvnet manages/);
    expect(() => checkTorConfig({ torrc: ['Sandbox 0'] })).toThrow(/sets Sandbox, which mvnet manages/);
  });

  it('writes User and Sandbox into the torrc when asked', () => {
    const cfg = checkTorConfig({});
    const p = embeddedPaths('/var/lib/mvnet', cfg);
    const t = buildTorrc(cfg, p, 1, { user: 'debian-tor', sandbox: true }).split('\n');
    expect(t).toContain('User debian-tor');
    expect(t).toContain('Sandbox 1');
    expect(buildTorrc(cfg, p, 1)).not.toMatch(/^(User|Sandbox) /m);
  });

  it('accepts an embedded tor with extra lines and a TCP SocksPort', () => {
    const c = checkTorConfig({ torrc: ['DisableNetwork 1', '# comment', '', 'ClientUseIPv6 1'], socks: '127.0.0.1:auto', binary: '/usr/sbin/tor', hiddenServiceDirs: ['/var/lib/mvnet/onions'] });
    expect(c).toMatchObject({ mode: 'embedded', socks: '127.0.0.1:auto', binary: '/usr/sbin/tor', hiddenServiceDirs: ['/var/lib/mvnet/onions'] });
  });

  it('accepts an external tor', () => {
    expect(checkTorConfig({ mode: 'external', socks: '127.0.0.1:9050', control: 'unix:/run/tor/control', cookieFile: '/run/tor/control.authcookie' })).toEqual({
      mode: 'external',
      socks: '127.0.0.1:9050',
      control: 'unix:/run/tor/control',
      cookieFile: '/run/tor/control.authcookie',
      torrc: [],
      automap: '10.192.0.0/10',
      hiddenServiceDirs: [],
      binary: 'tor',
      sandbox: true,
      stopWhenUnused: true,
      idleStopSec: 60,
    });
  });

  it.each([
    [[], /must be an object/],
    [{ mode: 'bundled' }, /mode must be "embedded" or "external"/],
    [{ socksPort: 1 }, /unknown key "socksPort"/],
    [{ torrc: 'DisableNetwork 1' }, /torrc must be an array of strings/],
    [{ torrc: ['DisableNetwork 1\nSocksPort 9050'] }, /torrc line 1 contains a line break/],
    [{ torrc: ['Log notice file /tmp/x \\'] }, /ends with a backslash/],
    [{ torrc: ['ok 1', 'socksport 9050'] }, /torrc line 2 sets socksport, which mvnet manages/],
    [{ torrc: ['+ControlPort 9051'] }, /sets \+ControlPort/],
    [{ torrc: ['  DataDirectory /tmp'] }, /sets DataDirectory/],
    [{ torrc: ['__OwningControllerProcess 1'] }, /manages itself/],
    [{ torrc: ['%include /etc/tor/torrc.d'] }, /%include is not allowed/],
    [{ control: 'unix:/run/tor/control' }, /control is only for mode "external"/],
    [{ socks: '0.0.0.0:9050' }, /loopback/],
    [{ socks: 'unix:/tmp/s' }, /127\.0\.0\.1:PORT or 127\.0\.0\.1:auto/],
    [{ automap: '10.192.0.0/24' }, /at least 16 bits/],
    [{ automap: '10.192.0.1/10' }, /host bits are set \(the network is 10\.192\.0\.0\/10\)/],
    [{ automap: 'ten' }, /not an IPv4 CIDR/],
    [{ hiddenServiceDirs: ['relative/dir'] }, /not an absolute path/],
    [{ mode: 'external', control: 'unix:/run/tor/control' }, /needs socks/],
    [{ mode: 'external', socks: '127.0.0.1:9050' }, /needs control/],
    [{ mode: 'external', socks: '127.0.0.1:9050', control: '9051' }, /control "9051": expected HOST:PORT/],
    [{ mode: 'external', socks: '127.0.0.1:9050', control: '127.0.0.1:9051', torrc: ['DisableNetwork 1'] }, /only apply in mode "embedded"/],
    [{ mode: 'external', socks: '127.0.0.1:9050', control: '127.0.0.1:9051', cookieFile: 'cookie' }, /cookieFile "cookie" is not an absolute path/],
  ])('rejects %j with a one-line message', (raw, msg) => {
    let err: unknown;
    try {
      checkTorConfig(raw);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(msg);
    expect((err as Error).message).toMatch(/^tor: [^\n]+$/);
  });

  it('checks automap CIDRs', () => {
    expect(checkAutomap('127.192.0.0/10')).toBe('127.192.0.0/10');
    expect(checkAutomap('10.0.0.0/16')).toBe('10.0.0.0/16');
    expect(() => checkAutomap('10.0.0.0/17')).toThrow();
  });

  it('lets ordinary options through, including ones whose names merely start like reserved ones', () => {
    expect(() => checkTorrcLines(['SocksPolicy accept 127.0.0.1', 'ControlPortWriteToFile /tmp/x', 'HiddenServiceDir /x', 'HiddenServicePort 80 127.0.0.1:80'])).not.toThrow();
  });
});

describe('the embedded torrc', () => {
  it('has mvnet lines first, then the user lines', () => {
    const cfg = checkTorConfig({ torrc: ['DisableNetwork 1'] });
    const p = embeddedPaths('/var/lib/mvnet', cfg);
    expect(p).toEqual({
      dir: '/var/lib/mvnet/tor',
      runDir: '/var/lib/mvnet/tor/run',
      torrc: '/var/lib/mvnet/tor/torrc',
      defaults: '/var/lib/mvnet/tor/torrc-defaults',
      dataDir: '/var/lib/mvnet/tor/data',
      controlSocket: '/var/lib/mvnet/tor/run/control.sock',
      socksSocket: '/var/lib/mvnet/tor/run/socks.sock',
      cookieFile: '/var/lib/mvnet/tor/run/control.authcookie',
    });
    const lines = buildTorrc(cfg, p, 4242).trimEnd().split('\n');
    expect(lines.slice(1)).toEqual([
      'DataDirectory /var/lib/mvnet/tor/data',
      'SocksPort unix:/var/lib/mvnet/tor/run/socks.sock IsolateSOCKSAuth',
      'ControlPort unix:/var/lib/mvnet/tor/run/control.sock',
      'CookieAuthentication 1',
      'CookieAuthFile /var/lib/mvnet/tor/run/control.authcookie',
      '__OwningControllerProcess 4242',
      'Log notice stdout',
      'AvoidDiskWrites 1',
      'VirtualAddrNetworkIPv4 10.192.0.0/10',
      'AutomapHostsOnResolve 1',
      '# tor.torrc',
      'DisableNetwork 1',
    ]);
  });

  it('uses a TCP SocksPort when tor.socks asks for one', () => {
    const cfg = checkTorConfig({ socks: '127.0.0.1:auto' });
    const p = embeddedPaths('/srv/m', cfg);
    expect(p.socksSocket).toBeUndefined();
    expect(buildTorrc(cfg, p, 1)).toContain('\nSocksPort 127.0.0.1:auto IsolateSOCKSAuth\n');
  });

  it('refuses state directories tor cannot take', () => {
    const cfg = checkTorConfig({});
    expect(() => embeddedPaths('/var/lib/my mvnet', cfg)).toThrow(/whitespace/);
    expect(() => embeddedPaths('relative', cfg)).toThrow(/absolute/);
    expect(() => embeddedPaths(`/${'x'.repeat(100)}`, cfg)).toThrow(/longer than 107 bytes/);
  });
});

describe('onion key files', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('round-trips an ADD_ONION key through tor\'s hs_ed25519_secret_key format', async () => {
    const key = `ED25519-V3:${randomBytes(64).toString('base64')}` as const;
    const file = onionKeyToFile(key);
    expect(file).toHaveLength(96);
    expect(file.subarray(0, 32).toString('latin1')).toBe('== ed25519v1-secret: type0 ==\0\0\0');
    expect(onionKeyFromFile(file)).toBe(key);

    const base = mkdtempSync(join(tmpdir(), 'tor-key-'));
    dirs.push(base);
    const dir = join(base, 'svc');
    expect(await readOnionKey(dir)).toBeUndefined();
    await writeOnionKey(dir, key, ONION);
    expect(await readOnionKey(dir)).toBe(key);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'hs_ed25519_secret_key')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'hostname'), 'utf8')).toBe(`${ONION}.onion\n`);
  });

  it('refuses what is not a key', () => {
    expect(() => onionKeyFromFile(Buffer.alloc(96))).toThrow(/not a tor ed25519 v3 onion secret key/);
    expect(() => onionKeyToFile('ED25519-V3:abc')).toThrow(/64 bytes/);
  });
});
