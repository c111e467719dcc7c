/**
 * Where a link's messages go (Endpoint) and where a carrier waits for them (Listen), read from
 * what a person types (`10.0.0.2:51820`, `tcp:[::1]:443`, `unix:/run/x.sock`, `ADDR.onion:PORT`)
 * or from a multiaddr, and written back in one canonical text and as a multiaddr. Every refusal
 * is a UserError with one line naming the input and what is wrong with it.
 */
import { isAbsolute } from 'node:path';
import { multiaddr } from '@multiformats/multiaddr';
import { UserError } from '../errors.js';
import { formatIpv4, formatIpv6, parseIpv4Text, parseIpv6Text } from '../wire/ip-text.js';
import { onionV3Problem } from './onion-address.js';

export type Endpoint =
  | { kind: 'udp' | 'tcp'; host: string; port: number } // host: IP literal (v6 without brackets) or DNS name
  | { kind: 'unix'; path: string } // absolute path
  | { kind: 'onion'; address: string; port: number }; // address: 56 lowercase base32 chars, no ".onion", v3-checked
export type Listen =
  | { kind: 'udp' | 'tcp'; host: string; port: number } // host '' = any address (dual stack); port 1-65535
  | { kind: 'unix'; path: string }
  | { kind: 'onion'; port: number }; // the onion's virtual port, default 51820

export const DEFAULT_ONION_PORT = 51820;

const ENDPOINT_FORMS = 'expected HOST:PORT, [V6]:PORT, udp:HOST:PORT, tcp:HOST:PORT, unix:/PATH, ADDR.onion:PORT or a multiaddr';
const LISTEN_FORMS = 'expected udp:PORT, udp:HOST:PORT, tcp:PORT, tcp:HOST:PORT, unix:/PATH, onion, onion:PORT or a multiaddr';

/** A problem with one part; the caller prefixes which input it was (and the accepted forms when `shape`). */
class Bad extends Error {
  constructor(
    message: string,
    readonly shape = false,
  ) {
    super(message);
  }
}

function show(text: string): string {
  return JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text);
}

function port(s: string): number {
  const n = /^\d{1,5}$/.test(s) ? Number(s) : NaN;
  if (!(n >= 1 && n <= 65535)) throw new Bad(`port ${show(s)} is not a number from 1 to 65535`);
  return n;
}

const ZONE_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** An IP literal in canonical text (v6 lower case, RFC 5952, zone kept), or null when `h` is none. */
function ipLiteral(h: string): string | null {
  const v4 = parseIpv4Text(h);
  if (v4.ok) return formatIpv4(v4.value);
  const pct = h.indexOf('%');
  const addr = pct < 0 ? h : h.slice(0, pct);
  const v6 = parseIpv6Text(addr);
  if (!v6.ok) return null;
  if (pct < 0) return formatIpv6(v6.value);
  const zone = h.slice(pct + 1);
  if (!ZONE_RE.test(zone)) throw new Bad(`zone ${show(zone)} of ${show(h)} is not an interface name`);
  return `${formatIpv6(v6.value)}%${zone}`;
}

/** A DNS name, lower case, without a trailing dot. */
function dnsName(h: string): string {
  const name = h.toLowerCase().replace(/\.$/, '');
  const labels = name.split('.');
  if (name.length === 0 || name.length > 253 || !labels.every((l) => LABEL_RE.test(l))) {
    throw new Bad(`${show(h)} is neither an IP address nor a DNS name`);
  }
  // "1.2.3.999" is a mistyped address, not a name: no top-level domain is all digits.
  if (/^\d+$/.test(labels[labels.length - 1]!)) throw new Bad(`${show(h)} is not a valid IPv4 address`);
  return name;
}

function onionId(text: string): string {
  const id = text.toLowerCase().replace(/\.onion$/, '');
  const why = onionV3Problem(id);
  if (why !== null) throw new Bad(`${show(text)} is not an onion v3 address: ${why}`);
  return id;
}

/** HOST:PORT or [V6]:PORT, split; the host is returned as written (brackets removed). */
function splitHostPort(text: string): { host: string; bracketed: boolean; port: number } {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') throw new Bad(`${show(text)}: expected [V6]:PORT`, true);
    return { host: text.slice(1, close), bracketed: true, port: port(text.slice(close + 2)) };
  }
  const colon = text.lastIndexOf(':');
  if (colon < 0) throw new Bad(`${show(text)} has no port`, true);
  const host = text.slice(0, colon);
  if (host.includes(':')) throw new Bad(`${show(text)}: write an IPv6 address in brackets, [V6]:PORT`);
  if (host === '') throw new Bad(`${show(text)} has no host`);
  return { host, bracketed: false, port: port(text.slice(colon + 1)) };
}

function hostEndpoint(kind: 'udp' | 'tcp', text: string, explicitKind: boolean): Endpoint {
  const { host, bracketed, port: p } = splitHostPort(text);
  const ip = ipLiteral(host);
  if (bracketed) {
    if (ip === null || !ip.includes(':')) throw new Bad(`${show(host)} in brackets is not an IPv6 address`);
    return { kind, host: ip, port: p };
  }
  if (ip !== null) return { kind, host: ip, port: p };
  if (/\.onion\.?$/i.test(host)) {
    // An onion service carries streams only; "tcp:X.onion:P" says the same as "X.onion:P".
    if (explicitKind && kind === 'udp') throw new Bad(`${show(text)}: an onion service carries no UDP; use ADDR.onion:PORT`);
    return { kind: 'onion', address: onionId(host.replace(/\.$/, '')), port: p };
  }
  return { kind, host: dnsName(host), port: p };
}

function unixPath(p: string): string {
  if (p.length === 0 || !isAbsolute(p)) throw new Bad(`unix socket path ${show(p)} is not absolute`);
  if (p.includes('\0')) throw new Bad('unix socket path holds a NUL byte');
  return p;
}

interface Part {
  name: string;
  value: string | undefined;
}

/** A multiaddr's components; "/unix/a/b" (the older, unencoded unix form) is read as the path /a/b. */
function multiaddrParts(text: string): Part[] {
  try {
    return multiaddr(text)
      .getComponents()
      .map((c) => ({ name: c.name, value: c.value }));
  } catch (e) {
    if (text.startsWith('/unix/')) return [{ name: 'unix', value: text.slice('/unix'.length) }];
    throw new Bad(`${show(text)} is not a multiaddr we can read (${(e as Error).message})`, true);
  }
}

function ipAndPort(parts: Part[], text: string): { host: string; kind: 'udp' | 'tcp'; port: number } | null {
  let rest = parts;
  let zone: string | undefined;
  if (rest[0]?.name === 'ip6zone') {
    zone = rest[0].value;
    rest = rest.slice(1);
    if (rest[0]?.name !== 'ip6') throw new Bad(`${show(text)}: /ip6zone must be followed by /ip6`);
  }
  const [a, b] = rest;
  if (rest.length !== 2 || a === undefined || b === undefined) return null;
  if (b.name !== 'udp' && b.name !== 'tcp') return null;
  const kind = b.name;
  const p = port(b.value ?? '');
  if (a.name === 'ip4' || a.name === 'ip6') {
    const ip = ipLiteral(zone === undefined ? (a.value ?? '') : `${a.value ?? ''}%${zone}`);
    if (ip === null || ip.includes(':') !== (a.name === 'ip6')) throw new Bad(`${show(text)}: bad /${a.name} address`);
    return { host: ip, kind, port: p };
  }
  if (a.name === 'dns' || a.name === 'dns4' || a.name === 'dns6') {
    // An onion name in DNS would go to the resolver (a leak) and fail there.
    if (/\.onion\.?$/i.test(a.value ?? '')) throw new Bad(`${show(text)}: write an onion service as /onion3/ADDR:PORT`);
    return { host: dnsName(a.value ?? ''), kind, port: p };
  }
  return null;
}

function endpointFromMultiaddr(text: string): Endpoint {
  const parts = multiaddrParts(text);
  const first = parts[0];
  if (parts.length === 1 && first?.name === 'unix') return { kind: 'unix', path: unixPath(first.value ?? '') };
  if (parts.length === 1 && first?.name === 'onion3') {
    const v = first.value ?? '';
    const colon = v.lastIndexOf(':');
    if (colon < 0) throw new Bad(`${show(text)}: /onion3 needs ADDR:PORT`);
    return { kind: 'onion', address: onionId(v.slice(0, colon)), port: port(v.slice(colon + 1)) };
  }
  const hp = ipAndPort(parts, text);
  if (hp === null) throw new Bad(`${show(text)}: expected /ip4|ip6|dns|dns4|dns6/HOST/udp|tcp/PORT, /unix/PATH or /onion3/ADDR:PORT`);
  return { kind: hp.kind, host: hp.host, port: hp.port };
}

/** Throws UserError (daemon/errors.ts) with one line saying what is wrong. `kind` = default for bare HOST:PORT (udp). */
export function parseEndpoint(text: string, kind: 'udp' | 'tcp' = 'udp'): Endpoint {
  try {
    if (text.length === 0) throw new Bad('empty', true);
    if (text.startsWith('/')) return endpointFromMultiaddr(text);
    if (text.startsWith('unix:')) return { kind: 'unix', path: unixPath(text.slice(5)) };
    if (text.startsWith('onion:')) {
      const e = hostEndpoint('tcp', text.slice(6), false);
      if (e.kind !== 'onion') throw new Bad(`${show(text)}: expected onion:ADDR.onion:PORT`);
      return e;
    }
    if (text.startsWith('udp:')) return hostEndpoint('udp', text.slice(4), true);
    if (text.startsWith('tcp:')) return hostEndpoint('tcp', text.slice(4), true);
    return hostEndpoint(kind, text, false);
  } catch (e) {
    if (e instanceof Bad) throw new UserError(`invalid endpoint ${show(text)}: ${e.message}${e.shape ? `; ${ENDPOINT_FORMS}` : ''}`);
    throw e;
  }
}

/** '' for any address ("::" is the same: the dual-stack any address); otherwise an IP literal. */
function listenHost(h: string, bracketed: boolean): string {
  const ip = ipLiteral(h);
  if (ip === null || (bracketed && !ip.includes(':'))) throw new Bad(`listen address ${show(h)} is not an IP address`);
  return ip === '::' ? '' : ip;
}

function hostListen(kind: 'udp' | 'tcp', rest: string): Listen {
  if (/^\d+$/.test(rest)) return { kind, host: '', port: port(rest) };
  const { host, bracketed, port: p } = splitHostPort(rest);
  return { kind, host: listenHost(host, bracketed), port: p };
}

function listenFromMultiaddr(text: string): Listen {
  const parts = multiaddrParts(text);
  const first = parts[0];
  if (parts.length === 1 && first?.name === 'unix') return { kind: 'unix', path: unixPath(first.value ?? '') };
  const hp = ipAndPort(parts, text);
  if (hp === null || !/^ip[46]/.test(first?.name ?? '')) {
    throw new Bad(`${show(text)}: expected /ip4|ip6/ADDR/udp|tcp/PORT or /unix/PATH (an onion listener is "onion" or "onion:PORT")`);
  }
  return { kind: hp.kind, host: hp.host === '::' ? '' : hp.host, port: hp.port };
}

export function parseListen(text: string): Listen {
  try {
    if (text.length === 0) throw new Bad('empty', true);
    if (text.startsWith('/')) return listenFromMultiaddr(text);
    if (text === 'onion') return { kind: 'onion', port: DEFAULT_ONION_PORT };
    if (text.startsWith('onion:')) return { kind: 'onion', port: port(text.slice(6)) };
    if (text.startsWith('unix:')) return { kind: 'unix', path: unixPath(text.slice(5)) };
    if (text.startsWith('udp:')) return hostListen('udp', text.slice(4));
    if (text.startsWith('tcp:')) return hostListen('tcp', text.slice(4));
    throw new Bad('no such listen address', true);
  } catch (e) {
    if (e instanceof Bad) throw new UserError(`invalid listen address ${show(text)}: ${e.message}${e.shape ? `; ${LISTEN_FORMS}` : ''}`);
    throw e;
  }
}

function hostText(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

function hostMultiaddr(host: string): string {
  if (!host.includes(':')) return parseIpv4Text(host).ok ? `/ip4/${host}` : `/dns/${host}`;
  const pct = host.indexOf('%');
  return pct < 0 ? `/ip6/${host}` : `/ip6zone/${host.slice(pct + 1)}/ip6/${host.slice(0, pct)}`;
}

function unixMultiaddr(path: string): string {
  return multiaddr(`/unix/${encodeURIComponent(path)}`).toString();
}

/** Canonical: "udp:10.0.0.2:51820", "tcp:[::1]:443", "unix:/run/x.sock", "onion:<56>.onion:51820". */
export function endpointText(e: Endpoint): string {
  switch (e.kind) {
    case 'udp':
    case 'tcp':
      return `${e.kind}:${hostText(e.host)}:${e.port}`;
    case 'unix':
      return `unix:${e.path}`;
    case 'onion':
      return `onion:${e.address}.onion:${e.port}`;
  }
}

/** "/ip4/10.0.0.2/udp/51820", "/ip6/::1/tcp/443", "/dns/host/udp/1", "/unix/%2Frun%2Fx.sock", "/onion3/<56>:51820". */
export function endpointMultiaddr(e: Endpoint): string {
  switch (e.kind) {
    case 'udp':
    case 'tcp':
      return `${hostMultiaddr(e.host)}/${e.kind}/${e.port}`;
    case 'unix':
      return unixMultiaddr(e.path);
    case 'onion':
      return `/onion3/${e.address}:${e.port}`;
  }
}

/** "udp:51820", "udp:127.0.0.1:51820", "tcp:[::1]:443", "unix:/p", "onion:51820". */
export function listenText(l: Listen): string {
  switch (l.kind) {
    case 'udp':
    case 'tcp':
      return l.host === '' ? `${l.kind}:${l.port}` : `${l.kind}:${hostText(l.host)}:${l.port}`;
    case 'unix':
      return `unix:${l.path}`;
    case 'onion':
      return `onion:${l.port}`;
  }
}

/**
 * "/ip6/::/udp/51820" for any address. An onion listener's multiaddr needs the address Tor
 * published, which only its owner knows: pass it as `onionAddress` (56 characters); without it
 * this throws.
 */
export function listenMultiaddr(l: Listen, onionAddress?: string): string {
  switch (l.kind) {
    case 'udp':
    case 'tcp':
      return `${l.host === '' ? '/ip6/::' : hostMultiaddr(l.host)}/${l.kind}/${l.port}`;
    case 'unix':
      return unixMultiaddr(l.path);
    case 'onion':
      if (onionAddress === undefined) throw new Error("an onion listener's multiaddr needs its published address");
      return `/onion3/${onionAddress}:${l.port}`;
  }
}
