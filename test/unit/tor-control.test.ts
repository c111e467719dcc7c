/**
 * The tor control client against a fake control port that replays byte sequences as tor sends
 * them (control-spec: multi-line replies, data blocks, async 650 events between replies,
 * SAFECOOKIE, 515 on bad authentication, a dropped connection).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  parseBootstrap,
  parseCircEvent,
  parseHsDescEvent,
  parseKeyValues,
  parseStatusEvent,
  parseStreamEvent,
  parseTorAddress,
  quoteString,
  ReplyParser,
  safeCookieHashes,
  TorControl,
  TorControlError,
  TorProtocolError,
  type TorEvent,
} from '../../daemon/tor/control.js';

// Fixed SAFECOOKIE material; the expected hashes were computed independently (Python hmac).
const COOKIE = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const CLIENT_NONCE = Buffer.from(Array.from({ length: 32 }, (_, i) => 0x20 + i));
const SERVER_NONCE_HEX = '404142434445464748494A4B4C4D4E4F505152535455565758595A5B5C5D5E5F';
const SERVER_HASH_HEX = '3C8780AB52365C0D080750447E5F64DABC00428C6C434579C2043E18C1F85389';
const CLIENT_HASH_HEX = 'B47642DF2D5ABB84F69E6D02D41BED6B44AEE33E69562528A82166FC98BC0B1E';
const ONION = '2ab7rhua3gtz7u6az75w72qenzn4lyysyc7d6ayn7apeh6agenyoypqd';
const ONION_KEY = 'ED25519-V3:aIxxXxQPCJ996QlqF0G+95Qlvdsyl6pQN9Cjsr1aoFInoQSxu0zzbKNauQVrcI6C3txn8uimEga4WZSLajstiw==';
const FP1 = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const FP2 = 'BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB';

type Handler = (line: string, sock: Socket, fake: Fake) => void;

interface Fake {
  address: string;
  received: string[];
  sockets: Socket[];
  close(): Promise<void>;
}

let dir: string;
let cookiePath: string;
const fakes: Fake[] = [];
const controls: TorControl[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tor-ctl-'));
  cookiePath = join(dir, 'control_auth_cookie');
  writeFileSync(cookiePath, COOKIE);
});

afterEach(async () => {
  for (const c of controls.splice(0)) c.destroy();
  await Promise.all(fakes.splice(0).map((f) => f.close()));
  rmSync(dir, { recursive: true, force: true });
});

/** A fake control port: calls `handler` for every CRLF-terminated command line it receives. */
async function fakeTor(handler: Handler, tcp = false): Promise<Fake> {
  const sockets: Socket[] = [];
  const received: string[] = [];
  const server: Server = createServer((sock) => {
    sockets.push(sock);
    let buf = '';
    sock.on('data', (b: Buffer) => {
      buf += b.toString('latin1');
      let i: number;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        received.push(line);
        handler(line, sock, fake);
      }
    });
    sock.on('error', () => undefined);
  });
  const path = join(dir, 'control.sock');
  await new Promise<void>((resolve) => (tcp ? server.listen(0, '127.0.0.1', resolve) : server.listen(path, resolve)));
  const address = tcp ? `127.0.0.1:${(server.address() as AddressInfo).port}` : `unix:${path}`;
  const fake: Fake = {
    address,
    received,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  fakes.push(fake);
  return fake;
}

/** PROTOCOLINFO reply as tor 0.4.9 sends it; COOKIEFILE uses an octal escape for its last '/'. */
function protocolInfo(methods: string): string {
  const escaped = `${dir}\\057control_auth_cookie`;
  return `250-PROTOCOLINFO 1\r\n250-AUTH METHODS=${methods} COOKIEFILE="${escaped}"\r\n250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n`;
}

/** Answers authentication with SAFECOOKIE exactly as tor does, then `after` for everything else. */
function safeCookieTor(after: Handler = () => undefined): Handler {
  return (line, sock, fake) => {
    if (line === 'PROTOCOLINFO 1') sock.write(protocolInfo('COOKIE,SAFECOOKIE'));
    else if (line.startsWith('AUTHCHALLENGE ')) sock.write(`250 AUTHCHALLENGE SERVERHASH=${SERVER_HASH_HEX} SERVERNONCE=${SERVER_NONCE_HEX}\r\n`);
    else if (line.startsWith('AUTHENTICATE ')) {
      if (line === `AUTHENTICATE ${CLIENT_HASH_HEX}`) sock.write('250 OK\r\n');
      else {
        sock.write('515 Authentication failed: Safe cookie response did not match expected value.\r\n');
        sock.end();
      }
    } else after(line, sock, fake);
  };
}

async function connect(fake: Fake, extra: Partial<Parameters<typeof TorControl.connect>[0]> = {}): Promise<TorControl> {
  const c = await TorControl.connect({ address: fake.address, clientNonce: CLIENT_NONCE, timeoutMs: 5_000, ...extra });
  controls.push(c);
  return c;
}

/** Writes `bytes` in pieces of `size` bytes, each in its own socket write and event-loop turn. */
async function trickle(sock: Socket, bytes: string, size: number): Promise<void> {
  for (let i = 0; i < bytes.length; i += size) {
    sock.write(bytes.slice(i, i + size));
    await new Promise((r) => setImmediate(r));
  }
}

describe('reply parsing', () => {
  it('splits mid-reply, data and final lines, dot-unstuffing data blocks, even one byte at a time', () => {
    const p = new ReplyParser();
    const wire = '250-version=0.4.9.11\r\n250+config-text=\r\nLog notice stdout\r\n..hidden\r\n\r\n.\r\n250 OK\r\n650 CIRC 1 LAUNCHED\r\n';
    const out = [...wire].flatMap((ch) => p.push(ch));
    expect(out).toHaveLength(2);
    expect(out[0]).toEqual({
      code: 250,
      message: 'OK',
      lines: [
        { code: 250, sep: '-', text: 'version=0.4.9.11' },
        { code: 250, sep: '+', text: 'config-text=', data: 'Log notice stdout\n.hidden\n' },
        { code: 250, sep: ' ', text: 'OK' },
      ],
    });
    expect(out[1]!.lines[0]).toEqual({ code: 650, sep: ' ', text: 'CIRC 1 LAUNCHED' });
  });

  it('rejects a line that is not CODE SEP TEXT', () => {
    expect(() => new ReplyParser().push('hello\r\n')).toThrow(TorProtocolError);
  });

  it('parses key=value arguments with quoted strings and C escapes', () => {
    const kv = parseKeyValues('NOTICE BOOTSTRAP PROGRESS=14 TAG=handshake SUMMARY="Handshaking with a \\"relay\\" \\\\ ok\\n" X="\\x41\\102\\t" "pos two" K=');
    expect(kv.positional).toEqual(['NOTICE', 'BOOTSTRAP', 'pos two']);
    expect(kv.values).toEqual({ PROGRESS: '14', TAG: 'handshake', SUMMARY: 'Handshaking with a "relay" \\ ok\n', X: 'AB\t', K: '' });
    expect(Object.getPrototypeOf(parseKeyValues('__proto__=x').values)).toBeNull();
  });

  it('quotes strings so that they parse back', () => {
    const s = 'pa"ss\\word\r\nx';
    expect(quoteString(s)).toBe('"pa\\"ss\\\\word\\r\\nx"');
    expect(parseKeyValues(`P=${quoteString(s)}`).values.P).toBe(s);
  });

  it('parses control addresses', () => {
    expect(parseTorAddress('127.0.0.1:9051')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9051 });
    expect(parseTorAddress('[::1]:9051')).toEqual({ kind: 'tcp', host: '::1', port: 9051 });
    expect(parseTorAddress('unix:/run/tor/control')).toEqual({ kind: 'unix', path: '/run/tor/control' });
    expect(() => parseTorAddress('9051')).toThrow(/HOST:PORT/);
    expect(() => parseTorAddress('unix:relative')).toThrow(/absolute/);
    expect(() => parseTorAddress('127.0.0.1:70000')).toThrow();
  });

  it('computes the SAFECOOKIE hashes of the spec', () => {
    const h = safeCookieHashes(COOKIE, CLIENT_NONCE, Buffer.from(SERVER_NONCE_HEX, 'hex'));
    expect(h.serverHash.toString('hex').toUpperCase()).toBe(SERVER_HASH_HEX);
    expect(h.clientHash.toString('hex').toUpperCase()).toBe(CLIENT_HASH_HEX);
  });
});

describe('typed events', () => {
  const ev = (line: string): TorEvent => {
    const r = new ReplyParser().push(`${line}\r\n`)[0]!;
    const first = r.lines[0]!.text;
    return { type: first.split(' ', 1)[0]!, body: first.slice(first.indexOf(' ') + 1), lines: r.lines };
  };

  it('STATUS_CLIENT BOOTSTRAP, including a problem report', () => {
    const s = parseStatusEvent(ev('650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=14 TAG=handshake SUMMARY="Handshaking with a relay"'));
    expect(s).toMatchObject({ type: 'STATUS_CLIENT', severity: 'NOTICE', action: 'BOOTSTRAP', bootstrap: { progress: 14, tag: 'handshake', summary: 'Handshaking with a relay' } });
    const w = parseStatusEvent(
      ev('650 STATUS_CLIENT WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" WARNING="Network is unreachable" REASON=NOROUTE COUNT=1 RECOMMENDATION=ignore HOSTID="x" HOSTADDR="1.2.3.4:443"'),
    );
    expect(w?.bootstrap).toEqual({ severity: 'WARN', progress: 5, tag: 'conn', summary: 'Connecting to a relay', warning: 'Network is unreachable', reason: 'NOROUTE', recommendation: 'ignore' });
    expect(parseBootstrap('NOTICE BOOTSTRAP PROGRESS=0 TAG=starting SUMMARY="Starting"')).toEqual({ severity: 'NOTICE', progress: 0, tag: 'starting', summary: 'Starting' });
    expect(parseStatusEvent(ev('650 STATUS_CLIENT NOTICE CIRCUIT_ESTABLISHED'))?.bootstrap).toBeUndefined();
  });

  it('CIRC with path, flags, purpose and SOCKS_USERNAME', () => {
    const c = parseCircEvent(
      ev(`650 CIRC 7 BUILT $${FP1}~guard,$${FP2}=mid BUILD_FLAGS=NEED_CAPACITY,IS_INTERNAL PURPOSE=GENERAL TIME_CREATED=2025-01-01T00:00:00.000000 SOCKS_USERNAME="vm \\"a\\"" SOCKS_PASSWORD="x"`),
    );
    expect(c).toMatchObject({
      id: '7',
      status: 'BUILT',
      path: [
        { fingerprint: FP1, nickname: 'guard' },
        { fingerprint: FP2, nickname: 'mid' },
      ],
      buildFlags: ['NEED_CAPACITY', 'IS_INTERNAL'],
      purpose: 'GENERAL',
      socksUsername: 'vm "a"',
    });
    const launched = parseCircEvent(ev('650 CIRC 8 LAUNCHED BUILD_FLAGS=NEED_CAPACITY PURPOSE=GENERAL'));
    expect(launched).toMatchObject({ id: '8', status: 'LAUNCHED', path: [], purpose: 'GENERAL' });
    const closed = parseCircEvent(ev(`650 CIRC 9 CLOSED $${FP1}~g REASON=FINISHED REMOTE_REASON=DESTROYED`));
    expect(closed).toMatchObject({ reason: 'FINISHED', remoteReason: 'DESTROYED', path: [{ fingerprint: FP1, nickname: 'g' }] });
  });

  it('STREAM with target and SOCKS_USERNAME', () => {
    const s = parseStreamEvent(ev('650 STREAM 42 SUCCEEDED 7 example.com:443 SOURCE_ADDR=127.0.0.1:5555 PURPOSE=USER SOCKS_USERNAME="vm1" CLIENT_PROTOCOL=SOCKS5'));
    expect(s).toMatchObject({ id: '42', status: 'SUCCEEDED', circId: '7', target: 'example.com:443', targetHost: 'example.com', targetPort: 443, sourceAddr: '127.0.0.1:5555', purpose: 'USER', socksUsername: 'vm1' });
    expect(parseStreamEvent(ev('650 STREAM 43 NEW 0 [2001:db8::1]:80 SOURCE_ADDR=127.0.0.1:1 PURPOSE=USER'))).toMatchObject({ circId: '0', targetHost: '2001:db8::1', targetPort: 80 });
    expect(parseStreamEvent(ev('650 STREAM 44 FAILED 7 10.0.0.1:22 REASON=TIMEOUT REMOTE_REASON=TIMEOUT'))).toMatchObject({ reason: 'TIMEOUT', remoteReason: 'TIMEOUT' });
  });

  it('HS_DESC actions', () => {
    expect(parseHsDescEvent(ev(`650 HS_DESC UPLOAD ${ONION} UNKNOWN $${FP1}~hsdir Cy4ncz0GDmBiqJdFPafuMChUZnsJGvn3T1Y+vFFu/+g HSDIR_INDEX=0123`))).toEqual({
      action: 'UPLOAD',
      address: ONION,
      authType: 'UNKNOWN',
      hsDir: { fingerprint: FP1, nickname: 'hsdir' },
      descriptorId: 'Cy4ncz0GDmBiqJdFPafuMChUZnsJGvn3T1Y+vFFu/+g',
      hsDirIndex: '0123',
      args: { HSDIR_INDEX: '0123' },
    });
    expect(parseHsDescEvent(ev(`650 HS_DESC FAILED ${ONION} NO_AUTH $${FP2} REASON=NOT_FOUND`))).toMatchObject({ action: 'FAILED', reason: 'NOT_FOUND', hsDir: { fingerprint: FP2 } });
    expect(parseHsDescEvent(ev('650 HS_DESC REQUESTED UNKNOWN NO_AUTH UNKNOWN'))?.hsDir).toBeUndefined();
  });
});

describe('authentication', () => {
  it('SAFECOOKIE: reads COOKIEFILE from PROTOCOLINFO (escapes and all), checks the server hash, sends the client hash', async () => {
    const fake = await fakeTor(safeCookieTor());
    const c = await connect(fake);
    expect(c.authMethod).toBe('SAFECOOKIE');
    expect(c.protocolInfo).toEqual({ protocolVersion: 1, methods: ['COOKIE', 'SAFECOOKIE'], cookieFile: cookiePath, torVersion: '0.4.9.11' });
    expect(fake.received).toEqual(['PROTOCOLINFO 1', `AUTHCHALLENGE SAFECOOKIE ${CLIENT_NONCE.toString('hex').toUpperCase()}`, `AUTHENTICATE ${CLIENT_HASH_HEX}`]);
  });

  it('SAFECOOKIE: a server hash that does not match the cookie is refused before AUTHENTICATE', async () => {
    const fake = await fakeTor((line, sock) => {
      if (line === 'PROTOCOLINFO 1') sock.write(protocolInfo('SAFECOOKIE'));
      else if (line.startsWith('AUTHCHALLENGE ')) sock.write(`250 AUTHCHALLENGE SERVERHASH=${'00'.repeat(32)} SERVERNONCE=${SERVER_NONCE_HEX}\r\n`);
      else sock.write('250 OK\r\n');
    });
    await expect(connect(fake)).rejects.toThrow(/server hash does not match/);
    expect(fake.received.some((l) => l.startsWith('AUTHENTICATE'))).toBe(false);
  });

  it('COOKIE: the cookie in hex, from an explicit cookie file', async () => {
    const other = join(dir, 'other_cookie');
    writeFileSync(other, Buffer.alloc(32, 0xab));
    const fake = await fakeTor((line, sock) => {
      if (line === 'PROTOCOLINFO 1') sock.write('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE COOKIEFILE="/nonexistent"\r\n250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n');
      else if (line === `AUTHENTICATE ${'AB'.repeat(32)}`) sock.write('250 OK\r\n');
      else sock.write('515 Authentication failed: Wrong length on authentication cookie.\r\n');
    });
    const c = await connect(fake, { cookieFile: other });
    expect(c.authMethod).toBe('COOKIE');
  });

  it('HASHEDPASSWORD: the password as a quoted string, over TCP', async () => {
    const fake = await fakeTor((line, sock) => {
      if (line === 'PROTOCOLINFO 1') sock.write('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=HASHEDPASSWORD\r\n250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n');
      else if (line === 'AUTHENTICATE "se\\"cr\\\\et"') sock.write('250 OK\r\n');
      else sock.write('515 Authentication failed: Password did not match HashedControlPassword value from configuration\r\n');
    }, true);
    const c = await connect(fake, { password: 'se"cr\\et' });
    expect(c.authMethod).toBe('HASHEDPASSWORD');
    expect(c.address).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('NULL: a bare AUTHENTICATE', async () => {
    const fake = await fakeTor((line, sock) => {
      if (line === 'PROTOCOLINFO 1') sock.write('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n');
      else if (line === 'AUTHENTICATE') sock.write('250 OK\r\n');
    });
    expect((await connect(fake)).authMethod).toBe('NULL');
  });

  it('a 515 reply rejects with TorControlError(515) and tor closing the connection does not hang', async () => {
    const fake = await fakeTor((line, sock) => {
      if (line === 'PROTOCOLINFO 1') sock.write('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=HASHEDPASSWORD\r\n250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n');
      else {
        sock.write('515 Authentication failed: Password did not match HashedControlPassword value from configuration\r\n');
        sock.end();
      }
    });
    const err = await connect(fake, { password: 'wrong' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TorControlError);
    expect((err as TorControlError).code).toBe(515);
    expect((err as TorControlError).message).not.toContain('wrong');
  });

  it('HASHEDPASSWORD required but no password configured is a clear error', async () => {
    const fake = await fakeTor((line, sock) => {
      if (line === 'PROTOCOLINFO 1') sock.write('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=HASHEDPASSWORD\r\n250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n');
    });
    await expect(connect(fake)).rejects.toThrow(/requires a control password/);
  });

  it('a tor that never answers times out', async () => {
    const fake = await fakeTor(() => undefined);
    await expect(connect(fake, { timeoutMs: 200 })).rejects.toThrow(/timed out/);
  });
});

describe('commands and events', () => {
  it('GETINFO: multi-line and data-block values; events interleaved between replies, delivered byte by byte', async () => {
    let sock!: Socket;
    const fake = await fakeTor(
      safeCookieTor((line, s) => {
        sock = s;
        if (line === 'SETEVENTS STATUS_CLIENT CIRC') s.write('250 OK\r\n');
        else if (line.startsWith('GETINFO ')) {
          void trickle(
            s,
            '650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay"\r\n' +
              '250-version=0.4.9.11\r\n250+config-text=\r\nSocksPort 0\r\n..Dotted\r\n.\r\n250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay"\r\n250 OK\r\n' +
              `650-CIRC 3 EXTENDED $${FP1}~a PURPOSE=GENERAL\r\n650 OK\r\n` +
              '650 CIRC 4 LAUNCHED PURPOSE=GENERAL\r\n',
            7,
          );
        }
      }),
    );
    const c = await connect(fake);
    const events: TorEvent[] = [];
    const circs: string[] = [];
    c.on('event', (e) => events.push(e));
    const off = c.onEvent('CIRC', (e) => circs.push(e.body));
    await c.setEvents(['STATUS_CLIENT', 'CIRC']);
    const info = await c.getInfo(['version', 'config-text', 'status/bootstrap-phase']);
    expect(info).toEqual({
      version: '0.4.9.11',
      'config-text': 'SocksPort 0\n.Dotted',
      'status/bootstrap-phase': 'NOTICE BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay"',
    });
    await new Promise<void>((r) => (events.length >= 3 ? r() : c.on('event', () => events.length >= 3 && r())));
    expect(events.map((e) => e.type)).toEqual(['STATUS_CLIENT', 'CIRC', 'CIRC']);
    expect(events[1]!.lines).toHaveLength(2);
    expect(parseCircEvent(events[1]!)).toMatchObject({ id: '3', status: 'EXTENDED', path: [{ fingerprint: FP1, nickname: 'a' }] });
    expect(circs).toEqual([`3 EXTENDED $${FP1}~a PURPOSE=GENERAL`, '4 LAUNCHED PURPOSE=GENERAL']);
    off();
    expect(sock).toBeDefined();
  });

  it('pipelined commands resolve in order; an error reply rejects only its own command', async () => {
    const fake = await fakeTor(
      safeCookieTor((line, s) => {
        if (line === 'GETINFO version') s.write('250-version=0.4.9.11\r\n250 OK\r\n');
        else if (line === 'GETINFO nope') s.write('552 Unrecognized key "nope"\r\n');
        else if (line === 'SIGNAL NEWNYM') s.write('250 OK\r\n');
        else s.write('510 Unrecognized command\r\n');
      }),
    );
    const c = await connect(fake);
    const [a, b, d] = await Promise.allSettled([c.getInfo(['version']), c.getInfo(['nope']), c.signal('NEWNYM')]);
    expect(a).toEqual({ status: 'fulfilled', value: { version: '0.4.9.11' } });
    expect(b.status).toBe('rejected');
    const err = (b as PromiseRejectedResult).reason as TorControlError;
    expect(err).toBeInstanceOf(TorControlError);
    expect([err.code, err.reply]).toEqual([552, 'Unrecognized key "nope"']);
    expect(d.status).toBe('fulfilled');
    await expect(c.command('FOO\r\nBAR')).rejects.toThrow(/single line/);
  });

  it('ADD_ONION and DEL_ONION: exact command lines and the parsed reply', async () => {
    const fake = await fakeTor(
      safeCookieTor((line, s) => {
        if (line.startsWith('ADD_ONION NEW:')) s.write(`250-ServiceID=${ONION}\r\n250-PrivateKey=${ONION_KEY}\r\n250 OK\r\n`);
        else if (line.startsWith('ADD_ONION ED25519-V3:')) s.write(`250-ServiceID=${ONION}\r\n250 OK\r\n`);
        else if (line === `DEL_ONION ${ONION}`) s.write('250 OK\r\n');
        else s.write('552 Unknown Onion Service id\r\n');
      }),
    );
    const c = await connect(fake);
    const r = await c.addOnion({ key: 'NEW:ED25519-V3', ports: [{ virt: 80, target: 'unix:/run/mvnet/web.sock' }, { virt: 22, target: '127.0.0.1:2222' }, { virt: 443 }], flags: ['Detach'] });
    expect(r).toEqual({ serviceId: ONION, privateKey: ONION_KEY });
    const r2 = await c.addOnion({ key: ONION_KEY, ports: [{ virt: 80, target: '8080' }], flags: ['Detach', 'DiscardPK'], maxStreams: 10 });
    expect(r2).toEqual({ serviceId: ONION });
    await c.delOnion(`${ONION}.onion`);
    await expect(c.delOnion('a'.repeat(56))).rejects.toMatchObject({ code: 552 });
    await expect(c.delOnion('not-an-onion')).rejects.toThrow(/invalid onion/);
    await expect(c.addOnion({ key: 'NEW:ED25519-V3', ports: [{ virt: 80, target: 'unix:/a b' }] })).rejects.toThrow(/whitespace/);
    expect(fake.received.slice(3)).toEqual([
      'ADD_ONION NEW:ED25519-V3 Flags=Detach Port=80,unix:/run/mvnet/web.sock Port=22,127.0.0.1:2222 Port=443',
      `ADD_ONION ${ONION_KEY} Flags=Detach,DiscardPK MaxStreams=10 Port=80,8080`,
      `DEL_ONION ${ONION}`,
      `DEL_ONION ${'a'.repeat(56)}`,
    ]);
  });

  it('a dropped connection rejects every pending command and emits close with an error', async () => {
    const fake = await fakeTor(
      safeCookieTor((line, s) => {
        if (line === 'GETINFO version') {
          s.write('250-version=0.4.9.11\r\n'); // half a reply, then the connection dies
          setImmediate(() => s.destroy());
        }
      }),
    );
    const c = await connect(fake);
    const closed = new Promise<Error | undefined>((r) => c.once('close', r));
    const results = await Promise.allSettled([c.getInfo(['version']), c.signal('NEWNYM'), c.getInfo(['x'])]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(String((results[0] as PromiseRejectedResult).reason)).toMatch(/GETINFO: tor closed the control connection/);
    expect(await closed).toBeInstanceOf(Error);
    expect(c.closed).toBe(true);
    await expect(c.signal('NEWNYM')).rejects.toThrow(/closed/);
  });

  it('close() ends the connection cleanly: close carries no error', async () => {
    const fake = await fakeTor(safeCookieTor());
    const c = await connect(fake);
    const closed = new Promise<Error | undefined>((r) => c.once('close', r));
    await c.close();
    expect(await closed).toBeUndefined();
  });

  it('garbage from the server closes the connection with a protocol error', async () => {
    const fake = await fakeTor(safeCookieTor((_line, s) => s.write('this is not tor\r\n')));
    const c = await connect(fake);
    const closed = new Promise<Error | undefined>((r) => c.once('close', r));
    await expect(c.getInfo(['version'])).rejects.toThrow(/malformed reply line/);
    expect(await closed).toBeInstanceOf(TorProtocolError);
  });
});
