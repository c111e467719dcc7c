/**
 * DNS messages (RFC 1035): header, questions and resource records. A, AAAA, CNAME, PTR, NS, SOA
 * and TXT are decoded; everything else (MX, SRV, OPT for EDNS...) is kept as raw RDATA.
 *
 * Names are text without the trailing dot ("" is the root); label bytes outside printable ASCII,
 * '.' and '\' use master-file escapes (`\.`, `\\`, `\DDD`), so any wire name round-trips.
 * Compression pointers are followed on parse only backwards (RFC 1035 §4.1.4: "a prior
 * occurrence"), which rules out loops, with a cap on jumps as well; names longer than 255 bytes
 * are errors. Emitting compresses by default.
 */
import { fail, ok, type Parsed } from './result.js';

export const DNS_HEADER_LEN = 12;
export const DNS_PORT = 53;
export const DNS_MAX_NAME_LEN = 255;
export const DNS_MAX_LABEL_LEN = 63;
const MAX_POINTER_JUMPS = 64;

export const DNS_TYPE_A = 1;
export const DNS_TYPE_NS = 2;
export const DNS_TYPE_CNAME = 5;
export const DNS_TYPE_SOA = 6;
export const DNS_TYPE_PTR = 12;
export const DNS_TYPE_MX = 15;
export const DNS_TYPE_TXT = 16;
export const DNS_TYPE_AAAA = 28;
export const DNS_TYPE_SRV = 33;
export const DNS_TYPE_OPT = 41;
export const DNS_TYPE_ANY = 255;
export const DNS_CLASS_IN = 1;

export const DNS_RCODE_NOERROR = 0;
export const DNS_RCODE_FORMERR = 1;
export const DNS_RCODE_SERVFAIL = 2;
export const DNS_RCODE_NXDOMAIN = 3;
export const DNS_RCODE_NOTIMP = 4;
export const DNS_RCODE_REFUSED = 5;

export interface DnsHeader {
  readonly id: number;
  /** True for a response. */
  readonly qr: boolean;
  readonly opcode: number;
  readonly aa: boolean;
  readonly tc: boolean;
  readonly rd: boolean;
  readonly ra: boolean;
  readonly ad: boolean;
  readonly cd: boolean;
  readonly rcode: number;
}

export interface DnsQuestion {
  readonly name: string;
  readonly type: number;
  readonly class: number;
}

/** RDATA by shape. `B` is Buffer for parsed messages and any Uint8Array for emitting. */
export type DnsRecordData<B extends Uint8Array = Buffer> =
  | { readonly kind: 'a'; readonly address: number }
  | { readonly kind: 'aaaa'; readonly address: B }
  /** CNAME, PTR and NS. */
  | { readonly kind: 'name'; readonly name: string }
  | {
      readonly kind: 'soa';
      readonly mname: string;
      readonly rname: string;
      readonly serial: number;
      readonly refresh: number;
      readonly retry: number;
      readonly expire: number;
      readonly minimum: number;
    }
  | { readonly kind: 'txt'; readonly strings: readonly B[] }
  | { readonly kind: 'raw'; readonly data: B };

export interface DnsRecord<B extends Uint8Array = Buffer> {
  readonly name: string;
  readonly type: number;
  /** For OPT this is the requestor's UDP payload size. */
  readonly class: number;
  /** For OPT this holds the extended RCODE and flags. */
  readonly ttl: number;
  readonly data: DnsRecordData<B>;
}

export interface DnsMessage<B extends Uint8Array = Buffer> extends DnsHeader {
  readonly questions: readonly DnsQuestion[];
  readonly answers: readonly DnsRecord<B>[];
  readonly authorities: readonly DnsRecord<B>[];
  readonly additionals: readonly DnsRecord<B>[];
}

// Names.

function isPlain(c: number): boolean {
  return c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x5c;
}

function labelText(buf: Buffer, start: number, end: number): string {
  let plain = true;
  for (let i = start; i < end; i++) {
    if (!isPlain(buf[i]!)) {
      plain = false;
      break;
    }
  }
  if (plain) return buf.toString('latin1', start, end);
  let s = '';
  for (let i = start; i < end; i++) {
    const c = buf[i]!;
    if (isPlain(c)) s += String.fromCharCode(c);
    else if (c === 0x2e || c === 0x5c) s += '\\' + String.fromCharCode(c);
    else s += '\\' + c.toString().padStart(3, '0');
  }
  return s;
}

type NameResult = { readonly name: string; readonly next: number } | { readonly error: string; readonly reason: 'truncated' | 'bad-value' | 'bad-length' | 'limit' };

/** Reads a possibly compressed name at `off`; `next` is the offset after it in the original position. */
function readName(buf: Buffer, off: number): NameResult {
  const labels: string[] = [];
  let pos = off;
  let next = -1;
  let bound = off; // pointers must point strictly before this
  let wireLen = 1;
  let jumps = 0;
  for (;;) {
    if (pos >= buf.length) return { reason: 'truncated', error: `name at ${off} runs past the message` };
    const len = buf[pos]!;
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    const tag = len & 0xc0;
    if (tag === 0xc0) {
      if (pos + 1 >= buf.length) return { reason: 'truncated', error: `pointer at ${pos}` };
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (next < 0) next = pos + 2;
      if (target >= bound) return { reason: 'limit', error: `compression pointer at ${pos} to ${target} does not point backwards` };
      if (++jumps > MAX_POINTER_JUMPS) return { reason: 'limit', error: `more than ${MAX_POINTER_JUMPS} compression pointers` };
      bound = target;
      pos = target;
      continue;
    }
    if (tag !== 0) return { reason: 'bad-value', error: `label type 0x${tag.toString(16)} at ${pos}` };
    if (pos + 1 + len > buf.length) return { reason: 'truncated', error: `label at ${pos}` };
    wireLen += 1 + len;
    if (wireLen > DNS_MAX_NAME_LEN) return { reason: 'bad-length', error: `name at ${off} longer than 255 bytes` };
    labels.push(labelText(buf, pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
  return { name: labels.join('.'), next };
}

/** Splits a textual name into label bytes, undoing escapes. Throws RangeError on invalid names. */
export function dnsNameToLabels(name: string): Buffer[] {
  if (name === '' || name === '.') return [];
  const text = name.endsWith('.') && !name.endsWith('\\.') ? name.slice(0, -1) : name;
  const labels: Buffer[] = [];
  let cur: number[] = [];
  let total = 1;
  const endLabel = (): void => {
    if (cur.length === 0) throw new RangeError(`empty label in DNS name "${name}"`);
    if (cur.length > DNS_MAX_LABEL_LEN) throw new RangeError(`label longer than 63 bytes in "${name}"`);
    total += 1 + cur.length;
    labels.push(Buffer.from(cur));
    cur = [];
  };
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x2e) {
      endLabel();
    } else if (ch === 0x5c) {
      const d = /^\d{3}/.exec(text.slice(i + 1, i + 4));
      if (d) {
        const v = Number(d[0]);
        if (v > 255) throw new RangeError(`bad escape in DNS name "${name}"`);
        cur.push(v);
        i += 3;
      } else if (i + 1 < text.length) {
        cur.push(text.charCodeAt(i + 1) & 0xff);
        i += 1;
      } else {
        throw new RangeError(`trailing backslash in DNS name "${name}"`);
      }
    } else {
      if (ch > 0xff) throw new RangeError(`non-latin1 character in DNS name "${name}"`);
      cur.push(ch);
    }
  }
  endLabel();
  if (total > DNS_MAX_NAME_LEN) throw new RangeError(`DNS name "${name}" longer than 255 bytes`);
  return labels;
}

/** Lower-cases ASCII letters and drops a trailing dot, for comparing names. */
export function normalizeDnsName(name: string): string {
  const n = name.endsWith('.') && !name.endsWith('\\.') ? name.slice(0, -1) : name;
  return n.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

// Parsing.

type Cursor = { pos: number };
type SectionResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: NameResultError['reason']; readonly detail: string };
type NameResultError = Extract<NameResult, { error: string }>;

function nameAt(buf: Buffer, c: Cursor, limit: number): SectionResult<string> {
  const r = readName(buf, c.pos);
  if ('error' in r) return { ok: false, reason: r.reason, detail: r.error };
  if (r.next > limit) return { ok: false, reason: 'bad-length', detail: `name at ${c.pos} runs past its record` };
  c.pos = r.next;
  return { ok: true, value: r.name };
}

function readRecord(buf: Buffer, c: Cursor): SectionResult<DnsRecord> {
  const start = c.pos;
  const owner = nameAt(buf, c, buf.length);
  if (!owner.ok) return owner;
  const p = c.pos;
  if (p + 10 > buf.length) return { ok: false, reason: 'truncated', detail: `record at ${start}` };
  const type = buf.readUInt16BE(p);
  const klass = buf.readUInt16BE(p + 2);
  const ttl = buf.readUInt32BE(p + 4);
  const rdlen = buf.readUInt16BE(p + 8);
  const rd = p + 10;
  const end = rd + rdlen;
  if (end > buf.length) return { ok: false, reason: 'truncated', detail: `RDATA of record at ${start}` };
  let data: DnsRecordData;
  const bad = (what: string): SectionResult<DnsRecord> => ({ ok: false, reason: 'bad-length', detail: `${what} record at ${start} with RDATA of ${rdlen} bytes` });
  switch (type) {
    case DNS_TYPE_A:
      if (rdlen !== 4) return bad('A');
      data = { kind: 'a', address: buf.readUInt32BE(rd) };
      break;
    case DNS_TYPE_AAAA:
      if (rdlen !== 16) return bad('AAAA');
      data = { kind: 'aaaa', address: buf.subarray(rd, end) };
      break;
    case DNS_TYPE_CNAME:
    case DNS_TYPE_PTR:
    case DNS_TYPE_NS: {
      const rc = { pos: rd };
      const n = nameAt(buf, rc, end);
      if (!n.ok) return n;
      if (rc.pos !== end) return bad('name');
      data = { kind: 'name', name: n.value };
      break;
    }
    case DNS_TYPE_SOA: {
      const rc = { pos: rd };
      const mname = nameAt(buf, rc, end);
      if (!mname.ok) return mname;
      const rname = nameAt(buf, rc, end);
      if (!rname.ok) return rname;
      if (rc.pos + 20 !== end) return bad('SOA');
      const q = rc.pos;
      data = {
        kind: 'soa',
        mname: mname.value,
        rname: rname.value,
        serial: buf.readUInt32BE(q),
        refresh: buf.readUInt32BE(q + 4),
        retry: buf.readUInt32BE(q + 8),
        expire: buf.readUInt32BE(q + 12),
        minimum: buf.readUInt32BE(q + 16),
      };
      break;
    }
    case DNS_TYPE_TXT: {
      const strings: Buffer[] = [];
      let q = rd;
      while (q < end) {
        const n = buf[q]!;
        if (q + 1 + n > end) return bad('TXT');
        strings.push(buf.subarray(q + 1, q + 1 + n));
        q += 1 + n;
      }
      data = { kind: 'txt', strings };
      break;
    }
    default:
      data = { kind: 'raw', data: buf.subarray(rd, end) };
  }
  c.pos = end;
  return { ok: true, value: { name: owner.value, type, class: klass, ttl, data } };
}

/** Parses a whole message (a UDP payload, or a TCP message without its length prefix). */
export function parseDns(buf: Buffer): Parsed<DnsMessage> {
  if (buf.length < DNS_HEADER_LEN) return fail('dns', 'truncated', `${buf.length} bytes < 12`);
  const f = buf.readUInt16BE(2);
  const counts = [buf.readUInt16BE(4), buf.readUInt16BE(6), buf.readUInt16BE(8), buf.readUInt16BE(10)];
  const c: Cursor = { pos: DNS_HEADER_LEN };
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < counts[0]!; i++) {
    const n = nameAt(buf, c, buf.length);
    if (!n.ok) return fail('dns', n.reason, n.detail);
    if (c.pos + 4 > buf.length) return fail('dns', 'truncated', `question ${i}`);
    questions.push({ name: n.value, type: buf.readUInt16BE(c.pos), class: buf.readUInt16BE(c.pos + 2) });
    c.pos += 4;
  }
  const sections: DnsRecord[][] = [[], [], []];
  for (let s = 0; s < 3; s++) {
    const out = sections[s]!;
    for (let i = 0; i < counts[s + 1]!; i++) {
      const r = readRecord(buf, c);
      if (!r.ok) return fail('dns', r.reason, r.detail);
      out.push(r.value);
    }
  }
  return ok({
    id: buf.readUInt16BE(0),
    qr: (f & 0x8000) !== 0,
    opcode: (f >>> 11) & 0xf,
    aa: (f & 0x0400) !== 0,
    tc: (f & 0x0200) !== 0,
    rd: (f & 0x0100) !== 0,
    ra: (f & 0x0080) !== 0,
    ad: (f & 0x0020) !== 0,
    cd: (f & 0x0010) !== 0,
    rcode: f & 0xf,
    questions,
    answers: sections[0]!,
    authorities: sections[1]!,
    additionals: sections[2]!,
  });
}

/** Just the header, for a quick look (e.g. to answer FORMERR to garbage with a readable id). */
export function parseDnsHeader(buf: Buffer): Parsed<DnsHeader & { readonly counts: readonly number[] }> {
  if (buf.length < DNS_HEADER_LEN) return fail('dns', 'truncated', `${buf.length} bytes < 12`);
  const f = buf.readUInt16BE(2);
  return ok({
    id: buf.readUInt16BE(0),
    qr: (f & 0x8000) !== 0,
    opcode: (f >>> 11) & 0xf,
    aa: (f & 0x0400) !== 0,
    tc: (f & 0x0200) !== 0,
    rd: (f & 0x0100) !== 0,
    ra: (f & 0x0080) !== 0,
    ad: (f & 0x0020) !== 0,
    cd: (f & 0x0010) !== 0,
    rcode: f & 0xf,
    counts: [buf.readUInt16BE(4), buf.readUInt16BE(6), buf.readUInt16BE(8), buf.readUInt16BE(10)],
  });
}

// Emitting.

class Writer {
  buf = Buffer.alloc(512);
  len = 0;
  readonly names = new Map<string, number>();

  constructor(readonly compress: boolean) {}

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    if (this.len + n > 0xffff) throw new RangeError('DNS message longer than 65535 bytes');
    const bigger = Buffer.alloc(Math.min(0xffff, Math.max(this.buf.length * 2, this.len + n)));
    this.buf.copy(bigger, 0, 0, this.len);
    this.buf = bigger;
  }

  u8(v: number): void {
    this.room(1);
    this.buf[this.len++] = v & 0xff;
  }

  u16(v: number): void {
    this.room(2);
    this.buf.writeUInt16BE(v & 0xffff, this.len);
    this.len += 2;
  }

  u32(v: number): void {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.len);
    this.len += 4;
  }

  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  name(name: string, compress: boolean): void {
    const labels = dnsNameToLabels(name);
    for (let i = 0; i < labels.length; i++) {
      if (this.compress && compress) {
        // Exact bytes, length-prefixed: compression never changes a name's case or splits a label.
        const key = labels
          .slice(i)
          .map((l) => `${l.length}:${l.toString('latin1')}`)
          .join('');
        const at = this.names.get(key);
        if (at !== undefined) {
          this.u16(0xc000 | at);
          return;
        }
        if (this.len < 0x4000) this.names.set(key, this.len);
      }
      this.u8(labels[i]!.length);
      this.bytes(labels[i]!);
    }
    this.u8(0);
  }
}

function writeRecord(w: Writer, r: DnsRecord<Uint8Array>): void {
  w.name(r.name, true);
  w.u16(r.type);
  w.u16(r.class);
  w.u32(r.ttl);
  const lenAt = w.len;
  w.u16(0);
  const d = r.data;
  switch (d.kind) {
    case 'a':
      w.u32(d.address);
      break;
    case 'aaaa':
      w.bytes(d.address.subarray(0, 16));
      break;
    case 'name':
      // RFC 3597 §4: only the RFC 1035 types may be compressed in RDATA.
      w.name(d.name, r.type === DNS_TYPE_CNAME || r.type === DNS_TYPE_PTR || r.type === DNS_TYPE_NS);
      break;
    case 'soa':
      w.name(d.mname, r.type === DNS_TYPE_SOA);
      w.name(d.rname, r.type === DNS_TYPE_SOA);
      w.u32(d.serial);
      w.u32(d.refresh);
      w.u32(d.retry);
      w.u32(d.expire);
      w.u32(d.minimum);
      break;
    case 'txt':
      for (const s of d.strings) {
        if (s.length > 255) throw new RangeError(`TXT string of ${s.length} bytes`);
        w.u8(s.length);
        w.bytes(s);
      }
      break;
    case 'raw':
      w.bytes(d.data);
      break;
  }
  const rdlen = w.len - lenAt - 2;
  w.buf.writeUInt16BE(rdlen, lenAt);
}

export interface DnsEncodeOptions {
  /** Default true: compress owner names and CNAME/PTR/NS/SOA names. */
  readonly compress?: boolean;
}

/**
 * Encodes a message; counts come from the array lengths. Throws RangeError for names or
 * strings that cannot be represented or a message over 65535 bytes.
 */
export function encodeDns(m: DnsMessage<Uint8Array>, opts?: DnsEncodeOptions): Buffer {
  const w = new Writer(opts?.compress !== false);
  w.u16(m.id);
  w.u16(
    (m.qr ? 0x8000 : 0) |
      ((m.opcode & 0xf) << 11) |
      (m.aa ? 0x0400 : 0) |
      (m.tc ? 0x0200 : 0) |
      (m.rd ? 0x0100 : 0) |
      (m.ra ? 0x0080 : 0) |
      (m.ad ? 0x0020 : 0) |
      (m.cd ? 0x0010 : 0) |
      (m.rcode & 0xf),
  );
  w.u16(m.questions.length);
  w.u16(m.answers.length);
  w.u16(m.authorities.length);
  w.u16(m.additionals.length);
  for (const q of m.questions) {
    w.name(q.name, true);
    w.u16(q.type);
    w.u16(q.class);
  }
  for (const r of m.answers) writeRecord(w, r);
  for (const r of m.authorities) writeRecord(w, r);
  for (const r of m.additionals) writeRecord(w, r);
  return Buffer.from(w.buf.subarray(0, w.len));
}
