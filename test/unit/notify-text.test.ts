/**
 * Desktop notices (daemon/events/notify.ts): the bus addresses accepted (a unix socket only:
 * dbus-next would spawn the program of a `unixexec:` address and dial a `tcp:` one), at load
 * (notify.dbus) and from the environment (DBUS_SESSION_BUS_ADDRESS); and the notice body escaped
 * for body markup.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { escapeBodyMarkup, notifyAddress } from '../../daemon/events/notify.js';
import { busAddressProblem } from '../../daemon/events/bus-address.js';
import { loadConfig } from '../../daemon/config.js';
import { UserError } from '../../daemon/errors.js';

const GOOD = ['unix:path=/run/user/1000/bus', 'unix:abstract=/tmp/dbus-AbC', 'unix:path=/tmp/bus,guid=0123456789abcdef0123456789abcdef'];
const BAD = [
  'unixexec:path=/bin/sh,arg1=-c,arg2=id',
  'tcp:host=127.0.0.1,port=4000',
  'nonce-tcp:host=127.0.0.1,port=4000',
  'unix:path=/run/bus;unixexec:path=/bin/sh',
  'unix:path=relative/bus',
  'unix:socket=/run/bus',
  'unix:tmpdir=/tmp',
  'unix:path=/a:b',
  'unix:path=/run/bus,arg1=x',
  'UNIXEXEC:path=/bin/sh',
  'unix:path=/run/bus%3bx',
];

describe('bus addresses', () => {
  it('accepts one unix:path= or unix:abstract= address, refuses the rest', () => {
    for (const a of GOOD) expect(busAddressProblem(a), a).toBeNull();
    for (const a of BAD) expect(busAddressProblem(a), a).toMatch(/is not a unix socket address/);
  });

  it('notify.dbus: refused at load with one clear line', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-notify-'));
    const file = path.join(dir, 'mvnet.json');
    for (const a of BAD) {
      fs.writeFileSync(file, JSON.stringify({ notify: { dbus: a } }));
      expect(() => loadConfig(file, {}), a).toThrow(UserError);
      expect(() => loadConfig(file, {}), a).toThrow(`notify.dbus: ${JSON.stringify(a)} is not a unix socket address`);
    }
    fs.writeFileSync(file, JSON.stringify({ notify: { dbus: GOOD[0] } }));
    expect(loadConfig(file, {}).notify.dbus).toBe(GOOD[0]);
    fs.rmSync(dir, { recursive: true });
  });

  it('DBUS_SESSION_BUS_ADDRESS: a bad one turns notices off with a warning, a good one is used', () => {
    expect(notifyAddress({}, { DBUS_SESSION_BUS_ADDRESS: BAD[0] })).toEqual({ off: expect.stringContaining('DBUS_SESSION_BUS_ADDRESS "unixexec:') as unknown, warn: true });
    expect(notifyAddress({}, { DBUS_SESSION_BUS_ADDRESS: GOOD[0] })).toEqual({ address: GOOD[0] });
    expect(notifyAddress({ enabled: false }, { DBUS_SESSION_BUS_ADDRESS: BAD[0] })).toEqual({ off: 'notify.enabled is false' });
  });
});

describe('notice body', () => {
  it('escapes & < > for body markup, and nothing else', () => {
    expect(escapeBodyMarkup('Tor is down: <b>x</b> & "y" \'z\'')).toBe('Tor is down: &lt;b&gt;x&lt;/b&gt; &amp; "y" \'z\'');
    expect(escapeBodyMarkup('&amp;')).toBe('&amp;amp;');
  });
});
