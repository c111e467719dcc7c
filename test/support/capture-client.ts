/**
 * A raw `capture.start` client: sends the request on the control socket, reads the JSON-RPC
 * reply line, then collects the pcapng stream that follows on the same connection until the
 * daemon ends it. `end()` half-closes (as `mvnet capture` does on Ctrl-C).
 */
import { createConnection, type Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { run } from './netns.js';
import { withTimeout } from './netns.js';
import type { RpcReply } from './daemon.js';

export interface LiveCapture {
  reply: RpcReply;
  sock: Socket;
  /** Bytes of the stream so far. */
  bytes(): Buffer;
  /** Resolves with the whole stream once the daemon ended the connection. */
  done: Promise<Buffer>;
  /** Half-close: the capture ends, the daemon sends the ISBs and ends the connection. */
  end(): void;
}

/** `endAtOnce`: half-close right after the request (before the reply). */
export async function startCapture(socket: string, params: unknown, timeoutMs = 10_000, endAtOnce = false): Promise<LiveCapture> {
  const sock = createConnection({ path: socket, allowHalfOpen: true });
  const chunks: Buffer[] = [];
  let head = Buffer.alloc(0);
  let replied = false;
  let resolveReply!: (r: RpcReply) => void;
  let rejectReply!: (e: Error) => void;
  const reply = new Promise<RpcReply>((res, rej) => {
    resolveReply = res;
    rejectReply = rej;
  });
  const done = new Promise<Buffer>((res, rej) => {
    sock.on('end', () => res(Buffer.concat(chunks)));
    sock.on('error', rej);
  });
  done.catch(() => {});
  sock.on('error', (e) => rejectReply(e));
  sock.on('data', (d: Buffer) => {
    if (replied) {
      chunks.push(d);
      return;
    }
    head = Buffer.concat([head, d]);
    const nl = head.indexOf(0x0a);
    if (nl < 0) return;
    replied = true;
    resolveReply(JSON.parse(head.subarray(0, nl).toString('utf8')) as RpcReply);
    if (nl + 1 < head.length) chunks.push(head.subarray(nl + 1));
  });
  sock.on('connect', () => {
    sock.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'capture.start', params }) + '\n');
    if (endAtOnce) sock.end();
  });
  const r = await withTimeout(reply, timeoutMs, 'the capture.start reply');
  return { reply: r, sock, bytes: () => Buffer.concat(chunks), done, end: () => sock.end() };
}

/** `tshark -r FILE -T fields -e F...` rows, one array per packet. */
export async function tsharkFields(file: string, fields: string[], filter?: string): Promise<string[][]> {
  const r = await run(['tshark', '-r', file, '-T', 'fields', '-E', 'separator=|', ...(filter !== undefined ? ['-Y', filter] : []), ...fields.flatMap((f) => ['-e', f])]);
  return r.stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => l.split('|'));
}

export function saveTo(file: string, b: Buffer): string {
  writeFileSync(file, b);
  return file;
}
