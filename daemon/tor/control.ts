/**
 * A client for Tor's control protocol (torspec control-spec): one authenticated connection over
 * TCP ("HOST:PORT") or a unix socket ("unix:PATH"), a FIFO of commands whose replies come back in
 * order, and asynchronous `650` events dispatched by type.
 *
 * Wire format, as tor sends it: every line is `CODE SEP TEXT CRLF` where SEP is '-' (a mid-reply
 * line), '+' (the line is followed by a data block: lines up to a lone ".", dot-stuffed) or ' '
 * (the last line of the reply). A reply whose code is 650 is an event, not the answer to a
 * command; events only ever arrive between replies.
 *
 * Secrets (the cookie, the password, onion private keys) are never logged and never put in an
 * error message: only command verbs are.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { constants as FS } from 'node:fs';
import { open } from 'node:fs/promises';
import net from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import type { Logger } from 'pino';

// ---------------------------------------------------------------------------------------------
// Errors

/** A non-2xx reply from tor: `code` is its status (e.g. 515 bad authentication, 552 unrecognized). */
export class TorControlError extends Error {
  override readonly name = 'TorControlError';
  constructor(
    readonly code: number,
    /** The text tor replied with (its last reply line). */
    readonly reply: string,
  ) {
    super(`tor control error ${code}: ${reply}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Addresses

export type ControlAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/** "unix:PATH", "HOST:PORT" or "[IPV6]:PORT"; throws an Error with a one-line message otherwise. */
export function parseTorAddress(s: string, what = 'tor address'): ControlAddress {
  if (s.startsWith('unix:')) {
    const path = s.slice(5);
    if (!path.startsWith('/')) throw new Error(`${what} ${JSON.stringify(s)}: unix: needs an absolute path`);
    if (Buffer.byteLength(path) > 107) throw new Error(`${what} ${JSON.stringify(s)}: the socket path is longer than 107 bytes`);
    if (/[\s"\\]/.test(path)) throw new Error(`${what} ${JSON.stringify(s)}: the socket path must not contain whitespace, quotes or backslashes`);
    return { kind: 'unix', path };
  }
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:\s[\]]+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535) throw new Error(`${what} ${JSON.stringify(s)}: expected HOST:PORT, [IPV6]:PORT or unix:PATH`);
  return { kind: 'tcp', host: m[1]!, port };
}

export function formatTorAddress(a: ControlAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return net.isIPv6(a.host) ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

// ---------------------------------------------------------------------------------------------
// Replies

export interface ReplyLine {
  /** Status code of this line (250, 650, 552, …). */
  code: number;
  /** '-' mid-reply line, '+' line followed by a data block, ' ' final line. */
  sep: '-' | '+' | ' ';
  text: string;
  /** For '+' lines: the data block, dot-unstuffed, its lines joined by "\n" (no trailing newline). */
  data?: string;
}

export interface TorReply {
  /** Status code of the final line. */
  code: number;
  lines: ReplyLine[];
  /** Text of the final line ("OK" for most successes). */
  message: string;
}

/** An asynchronous event: `type` is the first word of the first line, `body` the rest of it. */
export interface TorEvent {
  type: string;
  body: string;
  lines: ReplyLine[];
}

export class TorProtocolError extends Error {
  override readonly name = 'TorProtocolError';
}

const LINE_RE = /^(\d{3})([ +-])(.*)$/s;
const MAX_REPLY_LINES = 100_000;
const MAX_LINE_BYTES = 1 << 20;

/**
 * Splits the byte stream into complete replies. Feed it decoded text with `push`; it returns the
 * replies (and events) completed by that chunk, in order. Throws TorProtocolError on a line that
 * is not `CODE SEP TEXT` (the connection is then unusable).
 */
export class ReplyParser {
  private buf = '';
  private lines: ReplyLine[] = [];
  private dataLines: string[] | null = null;

  push(chunk: string): TorReply[] {
    this.buf += chunk;
    const out: TorReply[] = [];
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const raw = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      const done = this.line(line);
      if (done) out.push(done);
    }
    if (this.buf.length > MAX_LINE_BYTES) throw new TorProtocolError(`tor sent a line longer than ${MAX_LINE_BYTES} bytes`);
    return out;
  }

  private line(line: string): TorReply | null {
    if (this.dataLines !== null) {
      if (line === '.') {
        this.lines[this.lines.length - 1]!.data = this.dataLines.join('\n');
        this.dataLines = null;
      } else {
        this.dataLines.push(line.startsWith('.') ? line.slice(1) : line);
        if (this.dataLines.length > MAX_REPLY_LINES) throw new TorProtocolError('tor sent a data block that is too long');
      }
      return null;
    }
    const m = LINE_RE.exec(line);
    if (!m) throw new TorProtocolError(`malformed reply line from tor: ${JSON.stringify(line.slice(0, 80))}`);
    const rl: ReplyLine = { code: Number(m[1]), sep: m[2] as ReplyLine['sep'], text: m[3]! };
    this.lines.push(rl);
    if (this.lines.length > MAX_REPLY_LINES) throw new TorProtocolError('tor sent a reply with too many lines');
    if (rl.sep === '+') {
      this.dataLines = [];
      return null;
    }
    if (rl.sep === '-') return null;
    const reply: TorReply = { code: rl.code, lines: this.lines, message: rl.text };
    this.lines = [];
    return reply;
  }
}

function isEvent(r: TorReply): boolean {
  return r.lines[0]!.code === 650;
}

function toEvent(r: TorReply): TorEvent {
  const first = r.lines[0]!.text;
  const sp = first.indexOf(' ');
  return { type: sp < 0 ? first : first.slice(0, sp), body: sp < 0 ? '' : first.slice(sp + 1), lines: r.lines };
}

// ---------------------------------------------------------------------------------------------
// Key=value parsing and quoting

export interface KeyValues {
  /** Arguments that are not KEY=VALUE, in order (quoted ones unquoted). */
  positional: string[];
  /** KEY=VALUE arguments (quoted values unescaped); a prototype-less object. */
  values: Record<string, string>;
}

const KEY_RE = /^[A-Za-z0-9_]+=/;

/**
 * Reads a C-style quoted string starting at `s[i] === '"'`: \\ \" \' \n \r \t, \xHH and octal
 * \NNN escapes (as tor's unescape_string). Returns the value and the index after the closing quote
 * (an unterminated string runs to the end).
 */
export function readQuoted(s: string, i: number): { value: string; end: number } {
  const bytes: number[] = [];
  const lit = (c: string): void => {
    for (const b of Buffer.from(c, 'utf8')) bytes.push(b);
  };
  let j = i + 1;
  while (j < s.length) {
    const c = s[j]!;
    if (c === '"') return { value: Buffer.from(bytes).toString('utf8'), end: j + 1 };
    if (c !== '\\' || j + 1 >= s.length) {
      lit(c);
      j++;
      continue;
    }
    const e = s[j + 1]!;
    j += 2;
    switch (e) {
      case 'n':
        bytes.push(10);
        break;
      case 'r':
        bytes.push(13);
        break;
      case 't':
        bytes.push(9);
        break;
      case 'x': {
        const hex = /^[0-9A-Fa-f]{2}/.exec(s.slice(j, j + 2));
        if (hex) {
          bytes.push(parseInt(hex[0], 16));
          j += 2;
        } else lit('x');
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          const oct = /^[0-7]{1,3}/.exec(s.slice(j - 1, j + 2))![0];
          bytes.push(parseInt(oct, 8) & 0xff);
          j += oct.length - 1;
        } else lit(e); // \\ \" \' and anything else: the character itself
    }
  }
  return { value: Buffer.from(bytes).toString('utf8'), end: s.length };
}

/** Splits `A B KEY=VALUE KEY2="quoted \"value\""` into positional arguments and key/values. */
export function parseKeyValues(text: string): KeyValues {
  const positional: string[] = [];
  const values = Object.create(null) as Record<string, string>;
  let i = 0;
  const bare = (from: number): { value: string; end: number } => {
    let j = from;
    while (j < text.length && text[j] !== ' ') j++;
    return { value: text.slice(from, j), end: j };
  };
  while (i < text.length) {
    if (text[i] === ' ') {
      i++;
      continue;
    }
    if (text[i] === '"') {
      const q = readQuoted(text, i);
      positional.push(q.value);
      i = q.end;
      continue;
    }
    const key = KEY_RE.exec(text.slice(i, i + 256));
    if (key) {
      const k = key[0].slice(0, -1);
      const start = i + key[0].length;
      const v = text[start] === '"' ? readQuoted(text, start) : bare(start);
      values[k] = v.value;
      i = v.end;
      continue;
    }
    const b = bare(i);
    positional.push(b.value);
    i = b.end;
  }
  return { positional, values };
}

/** A QuotedString for a command argument: backslash, quote, CR and LF escaped. */
export function quoteString(s: string): string {
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\r/g, '\\r').replace(/\n/g, '\\n')}"`;
}

// ---------------------------------------------------------------------------------------------
// Typed events

export interface BootstrapStatus {
  /** NOTICE, WARN or ERR. */
  severity: string;
  progress: number;
  tag: string;
  summary: string;
  /** Set on a bootstrap problem (severity WARN). */
  warning?: string;
  reason?: string;
  recommendation?: string;
}

/** Parses "NOTICE BOOTSTRAP PROGRESS=50 TAG=… SUMMARY=…" (GETINFO status/bootstrap-phase, or a STATUS_CLIENT event body). */
export function parseBootstrap(text: string): BootstrapStatus | null {
  const kv = parseKeyValues(text);
  if (kv.positional[1] !== 'BOOTSTRAP') return null;
  const progress = Number(kv.values.PROGRESS);
  if (!Number.isInteger(progress) || progress < 0 || progress > 100) return null;
  const out: BootstrapStatus = { severity: kv.positional[0] ?? 'NOTICE', progress, tag: kv.values.TAG ?? '', summary: kv.values.SUMMARY ?? '' };
  if (kv.values.WARNING !== undefined) out.warning = kv.values.WARNING;
  if (kv.values.REASON !== undefined) out.reason = kv.values.REASON;
  if (kv.values.RECOMMENDATION !== undefined) out.recommendation = kv.values.RECOMMENDATION;
  return out;
}

export interface StatusEvent {
  type: 'STATUS_CLIENT' | 'STATUS_GENERAL' | 'STATUS_SERVER';
  severity: string;
  action: string;
  args: Record<string, string>;
  /** For action BOOTSTRAP. */
  bootstrap?: BootstrapStatus;
}

export function parseStatusEvent(ev: TorEvent): StatusEvent | null {
  if (ev.type !== 'STATUS_CLIENT' && ev.type !== 'STATUS_GENERAL' && ev.type !== 'STATUS_SERVER') return null;
  const kv = parseKeyValues(ev.body);
  const [severity, action] = kv.positional;
  if (severity === undefined || action === undefined) return null;
  const out: StatusEvent = { type: ev.type, severity, action, args: kv.values };
  if (action === 'BOOTSTRAP') {
    const b = parseBootstrap(ev.body);
    if (b) out.bootstrap = b;
  }
  return out;
}

export interface RelayRef {
  /** 40 hex digits, without the '$'. */
  fingerprint?: string;
  nickname?: string;
}

/** "$FP~nick", "$FP=nick", "$FP" or "nick". */
export function parseLongName(s: string): RelayRef {
  const m = /^\$([0-9A-Fa-f]{40})(?:[~=](\S+))?$/.exec(s);
  if (!m) return { nickname: s };
  return m[2] !== undefined ? { fingerprint: m[1]!.toUpperCase(), nickname: m[2] } : { fingerprint: m[1]!.toUpperCase() };
}

export interface CircEvent {
  id: string;
  /** LAUNCHED, BUILT, GUARD_WAIT, EXTENDED, FAILED, CLOSED. */
  status: string;
  path: RelayRef[];
  buildFlags: string[];
  purpose?: string;
  hsState?: string;
  reason?: string;
  remoteReason?: string;
  socksUsername?: string;
  /** Every KEY=VALUE argument, as sent. */
  args: Record<string, string>;
}

export function parseCircEvent(ev: TorEvent): CircEvent | null {
  if (ev.type !== 'CIRC') return null;
  const kv = parseKeyValues(ev.body);
  const [id, status, path] = kv.positional;
  if (id === undefined || status === undefined) return null;
  const v = kv.values;
  const out: CircEvent = {
    id,
    status,
    path: path !== undefined && path.length > 0 ? path.split(',').map(parseLongName) : [],
    buildFlags: v.BUILD_FLAGS !== undefined && v.BUILD_FLAGS.length > 0 ? v.BUILD_FLAGS.split(',') : [],
    args: v,
  };
  if (v.PURPOSE !== undefined) out.purpose = v.PURPOSE;
  if (v.HS_STATE !== undefined) out.hsState = v.HS_STATE;
  if (v.REASON !== undefined) out.reason = v.REASON;
  if (v.REMOTE_REASON !== undefined) out.remoteReason = v.REMOTE_REASON;
  if (v.SOCKS_USERNAME !== undefined) out.socksUsername = v.SOCKS_USERNAME;
  return out;
}

export interface StreamEvent {
  id: string;
  /** NEW, NEWRESOLVE, REMAP, SENTCONNECT, SENTRESOLVE, SUCCEEDED, FAILED, CLOSED, DETACHED, … */
  status: string;
  /** "0" while the stream is not attached to a circuit. */
  circId: string;
  /** As sent: "host:port". */
  target: string;
  targetHost: string;
  targetPort: number;
  reason?: string;
  remoteReason?: string;
  source?: string;
  sourceAddr?: string;
  purpose?: string;
  socksUsername?: string;
  args: Record<string, string>;
}

export function parseStreamEvent(ev: TorEvent): StreamEvent | null {
  if (ev.type !== 'STREAM') return null;
  const kv = parseKeyValues(ev.body);
  const [id, status, circId, target] = kv.positional;
  if (id === undefined || status === undefined || circId === undefined || target === undefined) return null;
  const colon = target.lastIndexOf(':');
  let host = colon >= 0 ? target.slice(0, colon) : target;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  const port = colon >= 0 ? Number(target.slice(colon + 1)) : 0;
  const v = kv.values;
  const out: StreamEvent = { id, status, circId, target, targetHost: host, targetPort: Number.isInteger(port) ? port : 0, args: v };
  if (v.REASON !== undefined) out.reason = v.REASON;
  if (v.REMOTE_REASON !== undefined) out.remoteReason = v.REMOTE_REASON;
  if (v.SOURCE !== undefined) out.source = v.SOURCE;
  if (v.SOURCE_ADDR !== undefined) out.sourceAddr = v.SOURCE_ADDR;
  if (v.PURPOSE !== undefined) out.purpose = v.PURPOSE;
  if (v.SOCKS_USERNAME !== undefined) out.socksUsername = v.SOCKS_USERNAME;
  return out;
}

export interface HsDescEvent {
  /** REQUESTED, UPLOAD, RECEIVED, UPLOADED, IGNORE, FAILED, CREATED. */
  action: string;
  /** The onion address without ".onion", or "UNKNOWN". */
  address: string;
  authType: string;
  /** The HSDir as a relay reference, or undefined when tor said "UNKNOWN". */
  hsDir?: RelayRef;
  descriptorId?: string;
  reason?: string;
  replica?: string;
  hsDirIndex?: string;
  args: Record<string, string>;
}

export function parseHsDescEvent(ev: TorEvent): HsDescEvent | null {
  if (ev.type !== 'HS_DESC') return null;
  const kv = parseKeyValues(ev.body);
  const [action, address, authType, hsDir, descriptorId] = kv.positional;
  if (action === undefined || address === undefined || authType === undefined) return null;
  const v = kv.values;
  const out: HsDescEvent = { action, address, authType, args: v };
  if (hsDir !== undefined && hsDir !== 'UNKNOWN') out.hsDir = parseLongName(hsDir);
  if (descriptorId !== undefined) out.descriptorId = descriptorId;
  if (v.REASON !== undefined) out.reason = v.REASON;
  if (v.REPLICA !== undefined) out.replica = v.REPLICA;
  if (v.HSDIR_INDEX !== undefined) out.hsDirIndex = v.HSDIR_INDEX;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Authentication

export type AuthMethod = 'NULL' | 'HASHEDPASSWORD' | 'COOKIE' | 'SAFECOOKIE';

export interface ProtocolInfo {
  protocolVersion: number;
  methods: string[];
  cookieFile?: string;
  torVersion?: string;
}

export function parseProtocolInfo(r: TorReply): ProtocolInfo {
  const out: ProtocolInfo = { protocolVersion: 1, methods: [] };
  for (const l of r.lines) {
    if (l.text.startsWith('PROTOCOLINFO ')) out.protocolVersion = Number(l.text.slice(13)) || 1;
    else if (l.text.startsWith('AUTH ')) {
      const kv = parseKeyValues(l.text.slice(5));
      out.methods = (kv.values.METHODS ?? '').split(',').filter((m) => m.length > 0);
      if (kv.values.COOKIEFILE !== undefined) out.cookieFile = kv.values.COOKIEFILE;
    } else if (l.text.startsWith('VERSION ')) {
      const kv = parseKeyValues(l.text.slice(8));
      if (kv.values.Tor !== undefined) out.torVersion = kv.values.Tor;
    }
  }
  return out;
}

const SERVER_TO_CONTROLLER = 'Tor safe cookie authentication server-to-controller hash';
const CONTROLLER_TO_SERVER = 'Tor safe cookie authentication controller-to-server hash';

/** The SAFECOOKIE hashes: HMAC-SHA256(key, cookie | clientNonce | serverNonce) with the spec's two keys. */
export function safeCookieHashes(cookie: Buffer, clientNonce: Buffer, serverNonce: Buffer): { serverHash: Buffer; clientHash: Buffer } {
  const msg = Buffer.concat([cookie, clientNonce, serverNonce]);
  return {
    serverHash: createHmac('sha256', SERVER_TO_CONTROLLER).update(msg).digest(),
    clientHash: createHmac('sha256', CONTROLLER_TO_SERVER).update(msg).digest(),
  };
}

// ---------------------------------------------------------------------------------------------
// The connection

export interface TorControlOptions {
  /** "HOST:PORT", "[IPV6]:PORT" or "unix:PATH". */
  address: string;
  /** For HASHEDPASSWORD. Used first when given and tor offers it. */
  password?: string;
  /** Cookie file for COOKIE/SAFECOOKIE; default: the COOKIEFILE PROTOCOLINFO names. */
  cookieFile?: string;
  /**
   * The cookie file must belong to one of these uids (the embedded tor's user). With it, only
   * SAFECOOKIE is used: the cookie never leaves this process, so a file a compromised tor links
   * in its place is never disclosed, and a tor that does not know the cookie is refused.
   */
  cookieOwners?: number[];
  /** Deadline for connecting and authenticating (default 10 s). */
  timeoutMs?: number;
  /** A command whose reply takes longer than this closes the connection (default 60 s). */
  commandTimeoutMs?: number;
  logger?: Logger;
  /** Test hook: the 32-byte SAFECOOKIE client nonce (random by default). */
  clientNonce?: Buffer;
}

export type OnionKey = 'NEW:ED25519-V3' | 'NEW:BEST' | `ED25519-V3:${string}`;
export type OnionFlag = 'Detach' | 'DiscardPK' | 'MaxStreamsCloseCircuit' | 'NonAnonymous';

export interface OnionPort {
  /** The port the service listens on. */
  virt: number;
  /** 'unix:PATH', 'HOST:PORT' or a bare port on 127.0.0.1; default: the same port on 127.0.0.1. */
  target?: string;
}

export interface AddOnionOptions {
  key: OnionKey;
  ports: OnionPort[];
  flags?: OnionFlag[];
  maxStreams?: number;
}

export interface AddOnionResult {
  /** 56 base32 characters, without ".onion". */
  serviceId: string;
  /** "ED25519-V3:<base64>" for a NEW key without DiscardPK. A secret: never log it. */
  privateKey?: string;
}

export const ONION_ID_RE = /^[a-z2-7]{56}$/;

interface Pending {
  verb: string;
  resolve: (r: TorReply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

type ControlEvents = {
  /** Every asynchronous event. */
  event: [TorEvent];
  /** The connection is gone: `error` is undefined after close(). Pending commands were rejected. */
  close: [Error | undefined];
};

function sanitizeLine(line: string): void {
  if (/[\r\n\0]/.test(line)) throw new Error('a tor control command must be a single line');
}

async function openSocket(addr: ControlAddress, signal: AbortSignal): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const sock = addr.kind === 'unix' ? net.connect({ path: addr.path }) : net.connect({ host: addr.host, port: addr.port });
    const onAbort = (): void => {
      cleanup();
      sock.destroy();
      reject(new Error(`connecting to tor's control port ${formatTorAddress(addr)} timed out`));
    };
    const onError = (e: Error): void => {
      cleanup();
      sock.destroy();
      reject(e);
    };
    const onConnect = (): void => {
      cleanup();
      resolve(sock);
    };
    const cleanup = (): void => {
      signal.removeEventListener('abort', onAbort);
      sock.removeListener('error', onError);
      sock.removeListener('connect', onConnect);
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    sock.once('error', onError);
    sock.once('connect', onConnect);
  });
}

/**
 * Reads a control cookie without trusting its directory's owner: no link followed (O_NOFOLLOW),
 * no wait on a FIFO (O_NONBLOCK), only a regular file with one link, of exactly 32 bytes (and of
 * an owner in `owners`). A refusal does not say how big the file is (it may not be tor's).
 */
export async function readCookie(file: string, owners?: number[]): Promise<Buffer> {
  let fh;
  try {
    fh = await open(file, FS.O_RDONLY | FS.O_NOFOLLOW | FS.O_NONBLOCK | FS.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`cannot read tor's control cookie ${file}: ${code === 'ELOOP' ? 'it is a symbolic link' : (code ?? String(e))}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.nlink !== 1 || st.size !== 32 || (owners !== undefined && !owners.includes(st.uid))) {
      throw new Error(`tor's control cookie ${file} is not a 32-byte file of tor's own`);
    }
    const buf = Buffer.alloc(33);
    const { bytesRead } = await fh.read(buf, 0, 33, 0);
    if (bytesRead !== 32) throw new Error(`tor's control cookie ${file} is not a 32-byte file of tor's own`);
    return buf.subarray(0, 32);
  } finally {
    await fh.close();
  }
}

export class TorControl extends EventEmitter<ControlEvents> {
  private readonly parser = new ReplyParser();
  private readonly decoder = new StringDecoder('utf8');
  private readonly pending: Pending[] = [];
  private closeError: Error | undefined;
  private isClosed = false;
  private closing = false;
  /** Set by connect(): what tor told us in PROTOCOLINFO. */
  protocolInfo: ProtocolInfo = { protocolVersion: 1, methods: [] };
  /** Set by connect(): the method that authenticated us. */
  authMethod: AuthMethod = 'NULL';

  private constructor(
    private readonly sock: net.Socket,
    readonly address: string,
    private readonly commandTimeoutMs: number,
    private readonly log: Logger | undefined,
  ) {
    super();
    sock.setNoDelay(true);
    sock.on('data', (b: Buffer) => this.onData(b));
    sock.on('error', (e) => {
      this.closeError ??= e;
    });
    sock.on('close', () => this.onClose());
  }

  /** Connects, reads PROTOCOLINFO and authenticates; rejects (TorControlError 515 for bad credentials) and closes on failure. */
  static async connect(opts: TorControlOptions): Promise<TorControl> {
    const addr = parseTorAddress(opts.address, 'tor control address');
    const ac = new AbortController();
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const timer = setTimeout(() => ac.abort(), timeoutMs);
    let ctl: TorControl | undefined;
    try {
      const sock = await openSocket(addr, ac.signal);
      ctl = new TorControl(sock, formatTorAddress(addr), opts.commandTimeoutMs ?? 60_000, opts.logger);
      const c = ctl;
      const abort = (): void => c.destroy(new Error(`authenticating to tor's control port ${c.address} timed out after ${timeoutMs} ms`));
      ac.signal.addEventListener('abort', abort, { once: true });
      try {
        await c.authenticate(opts);
      } finally {
        ac.signal.removeEventListener('abort', abort);
      }
      opts.logger?.debug({ address: c.address, method: c.authMethod, tor: c.protocolInfo.torVersion }, 'tor control connected');
      return c;
    } catch (e) {
      ctl?.destroy(e instanceof Error ? e : new Error(String(e)));
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private async authenticate(opts: TorControlOptions): Promise<void> {
    this.protocolInfo = parseProtocolInfo(await this.command('PROTOCOLINFO 1'));
    const methods = new Set(this.protocolInfo.methods);
    if (opts.password !== undefined && methods.has('HASHEDPASSWORD')) {
      this.authMethod = 'HASHEDPASSWORD';
      await this.command(`AUTHENTICATE ${quoteString(opts.password)}`, 'AUTHENTICATE');
      return;
    }
    if (methods.has('NULL')) {
      this.authMethod = 'NULL';
      await this.command('AUTHENTICATE', 'AUTHENTICATE');
      return;
    }
    if (methods.has('SAFECOOKIE') || methods.has('COOKIE')) {
      const file = opts.cookieFile ?? this.protocolInfo.cookieFile;
      if (file === undefined) throw new Error('tor offers cookie authentication but names no cookie file');
      if (opts.cookieOwners !== undefined && !methods.has('SAFECOOKIE')) throw new Error(`tor offers no SAFECOOKIE authentication (${this.protocolInfo.methods.join(',')})`);
      const cookie = await readCookie(file, opts.cookieOwners);
      if (methods.has('SAFECOOKIE')) {
        this.authMethod = 'SAFECOOKIE';
        const clientNonce = opts.clientNonce ?? randomBytes(32);
        const r = await this.command(`AUTHCHALLENGE SAFECOOKIE ${clientNonce.toString('hex').toUpperCase()}`, 'AUTHCHALLENGE');
        const kv = parseKeyValues(r.message.replace(/^AUTHCHALLENGE /, ''));
        const serverHashHex = kv.values.SERVERHASH ?? '';
        const serverNonceHex = kv.values.SERVERNONCE ?? '';
        if (!/^[0-9A-Fa-f]{64}$/.test(serverHashHex) || !/^([0-9A-Fa-f]{2})+$/.test(serverNonceHex)) {
          throw new TorProtocolError('malformed AUTHCHALLENGE reply from tor');
        }
        const { serverHash, clientHash } = safeCookieHashes(cookie, clientNonce, Buffer.from(serverNonceHex, 'hex'));
        if (!timingSafeEqual(serverHash, Buffer.from(serverHashHex, 'hex'))) {
          throw new Error("tor's SAFECOOKIE server hash does not match the cookie: this is not the tor that wrote the cookie file");
        }
        await this.command(`AUTHENTICATE ${clientHash.toString('hex').toUpperCase()}`, 'AUTHENTICATE');
      } else {
        this.authMethod = 'COOKIE';
        await this.command(`AUTHENTICATE ${cookie.toString('hex').toUpperCase()}`, 'AUTHENTICATE');
      }
      return;
    }
    if (methods.has('HASHEDPASSWORD')) throw new Error('tor requires a control password (HASHEDPASSWORD) and none is configured');
    throw new Error(`tor offers no authentication method this client supports (${this.protocolInfo.methods.join(',') || 'none'})`);
  }

  get closed(): boolean {
    return this.isClosed || this.closing;
  }

  /**
   * Sends one command line and resolves with its reply; a non-2xx reply rejects with a
   * TorControlError. `verb` is what may be logged of it (default: its first word).
   */
  command(line: string, verb?: string): Promise<TorReply> {
    try {
      sanitizeLine(line);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    if (this.closed) return Promise.reject(new Error('tor control connection is closed'));
    const v = verb ?? line.split(' ', 1)[0]!;
    return new Promise<TorReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.destroy(new Error(`tor did not answer ${v} within ${this.commandTimeoutMs} ms`));
      }, this.commandTimeoutMs);
      timer.unref();
      this.pending.push({
        verb: v,
        timer,
        resolve: (r) => (r.code >= 200 && r.code < 300 ? resolve(r) : reject(new TorControlError(r.code, r.message))),
        reject,
      });
      this.sock.write(`${line}\r\n`);
    });
  }

  /** Listens to one event type (the one SETEVENTS names); returns the function that stops it. */
  onEvent(type: string, listener: (ev: TorEvent) => void): () => void {
    const f = (ev: TorEvent): void => {
      if (ev.type === type) listener(ev);
    };
    this.on('event', f);
    return () => this.off('event', f);
  }

  /** SETEVENTS: replaces the subscribed set (an empty list unsubscribes from all). */
  async setEvents(types: string[]): Promise<void> {
    for (const t of types) if (!/^[A-Z_]+$/.test(t)) throw new Error(`invalid tor event name ${JSON.stringify(t)}`);
    await this.command(types.length > 0 ? `SETEVENTS ${types.join(' ')}` : 'SETEVENTS');
  }

  /** GETINFO: every key's value (multi-line values as data blocks joined by "\n"). */
  async getInfo(keys: string[]): Promise<Record<string, string>> {
    if (keys.length === 0) return {};
    for (const k of keys) if (!/^[\x21-\x7e]+$/.test(k)) throw new Error(`invalid GETINFO key ${JSON.stringify(k)}`);
    const r = await this.command(`GETINFO ${keys.join(' ')}`);
    const out = Object.create(null) as Record<string, string>;
    for (const l of r.lines) {
      const eq = l.text.indexOf('=');
      if (eq <= 0) continue;
      out[l.text.slice(0, eq)] = l.sep === '+' ? (l.data ?? '') : l.text.slice(eq + 1);
    }
    return out;
  }

  /** SIGNAL NEWNYM, RELOAD, HEARTBEAT, CLEARDNSCACHE, DORMANT, ACTIVE, … */
  async signal(name: string): Promise<void> {
    if (!/^[A-Z]+$/.test(name)) throw new Error(`invalid tor signal ${JSON.stringify(name)}`);
    await this.command(`SIGNAL ${name}`);
  }

  /** ADD_ONION: creates an onion service (Detach keeps it after this connection closes). */
  async addOnion(o: AddOnionOptions): Promise<AddOnionResult> {
    if (o.key !== 'NEW:ED25519-V3' && o.key !== 'NEW:BEST' && !/^ED25519-V3:[A-Za-z0-9+/]{86}==$/.test(o.key)) {
      throw new Error('onion key must be NEW:ED25519-V3, NEW:BEST or ED25519-V3:<base64 of the 64-byte expanded secret key>');
    }
    if (o.ports.length === 0) throw new Error('an onion service needs at least one port');
    const args: string[] = [o.key];
    const flags = [...new Set(o.flags ?? [])];
    for (const f of flags) if (!['Detach', 'DiscardPK', 'MaxStreamsCloseCircuit', 'NonAnonymous'].includes(f)) throw new Error(`unknown ADD_ONION flag ${JSON.stringify(f)}`);
    if (flags.length > 0) args.push(`Flags=${flags.join(',')}`);
    if (o.maxStreams !== undefined) {
      if (!Number.isInteger(o.maxStreams) || o.maxStreams < 0 || o.maxStreams > 65535) throw new Error('onion maxStreams must be 0-65535');
      args.push(`MaxStreams=${o.maxStreams}`);
    }
    for (const p of o.ports) {
      if (!Number.isInteger(p.virt) || p.virt < 1 || p.virt > 65535) throw new Error(`onion virtual port ${p.virt} is not 1-65535`);
      if (p.target === undefined) {
        args.push(`Port=${p.virt}`);
        continue;
      }
      if (/^\d+$/.test(p.target)) {
        const n = Number(p.target);
        if (n < 1 || n > 65535) throw new Error(`onion target port ${p.target} is not 1-65535`);
      } else parseTorAddress(p.target, 'onion port target');
      args.push(`Port=${p.virt},${p.target}`);
    }
    const r = await this.command(`ADD_ONION ${args.join(' ')}`, 'ADD_ONION');
    let serviceId: string | undefined;
    let privateKey: string | undefined;
    for (const l of r.lines) {
      if (l.text.startsWith('ServiceID=')) serviceId = l.text.slice(10);
      else if (l.text.startsWith('PrivateKey=')) privateKey = l.text.slice(11);
    }
    if (serviceId === undefined || !ONION_ID_RE.test(serviceId)) throw new TorProtocolError('ADD_ONION reply carries no valid ServiceID');
    return privateKey !== undefined ? { serviceId, privateKey } : { serviceId };
  }

  /** DEL_ONION: removes an onion service this connection created, or a detached one. */
  async delOnion(serviceId: string): Promise<void> {
    const id = serviceId.replace(/\.onion$/, '');
    if (!ONION_ID_RE.test(id)) throw new Error(`invalid onion service id ${JSON.stringify(serviceId)}`);
    await this.command(`DEL_ONION ${id}`);
  }

  /** Closes the connection (QUIT, then the socket); pending commands are rejected. */
  async close(): Promise<void> {
    if (this.isClosed) return;
    const closed = new Promise<void>((resolve) => this.sock.once('close', () => resolve()));
    if (!this.closing) {
      this.closing = true;
      this.sock.end();
      const t = setTimeout(() => this.sock.destroy(), 1000);
      t.unref();
    }
    await closed;
  }

  /** Drops the connection at once with `err` (emitted with 'close'). */
  destroy(err?: Error): void {
    if (this.isClosed) return;
    if (err) this.closeError ??= err;
    this.sock.destroy();
  }

  private onData(b: Buffer): void {
    let replies: TorReply[];
    try {
      replies = this.parser.push(this.decoder.write(b));
    } catch (e) {
      this.destroy(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    for (const r of replies) {
      if (isEvent(r)) {
        const ev = toEvent(r);
        try {
          this.emit('event', ev);
        } catch (e) {
          this.log?.error({ err: e, event: ev.type }, 'tor event listener threw');
        }
        continue;
      }
      const p = this.pending.shift();
      if (!p) {
        this.log?.warn({ code: r.code }, 'unexpected reply from tor with no command waiting');
        continue;
      }
      clearTimeout(p.timer);
      p.resolve(r);
    }
  }

  private onClose(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    const err = this.closing && this.closeError === undefined ? undefined : (this.closeError ?? new Error('tor closed the control connection'));
    const reason = err ?? new Error('tor control connection closed');
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(new Error(`${p.verb}: ${reason.message}`));
    }
    this.emit('close', err);
  }
}
