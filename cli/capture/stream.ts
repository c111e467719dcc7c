/**
 * `capture.start` is the one streaming method: the daemon answers one JSON-RPC line, then the
 * same connection carries the pcapng stream until the capture ends and the daemon closes it.
 * The client stops a capture by half-closing (end()) and reading on until the daemon's end.
 */
import net from 'node:net';
import { CliError, reachError, requestId, rpcError } from '../client.js';
import type { CaptureStarted } from '../../daemon/control/api.js';

/** A reply line longer than this is not a reply. */
const MAX_REPLY = 1024 * 1024;

export interface OpenCapture {
  readonly reply: CaptureStarted;
  /** Paused; the caller takes over its 'data' and 'end'. */
  readonly conn: net.Socket;
  /** Stream bytes that came with the reply line. */
  readonly rest: Buffer;
}

/** Sends capture.start; resolves once the daemon accepted it, rejects with its error line otherwise. */
export function openCapture(socket: string, params: unknown): Promise<OpenCapture> {
  return new Promise<OpenCapture>((resolve, reject) => {
    // allowHalfOpen: after the daemon's end, nothing is written back automatically before 'end' is handled.
    const conn = net.createConnection({ path: socket, allowHalfOpen: true });
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    const fail = (e: Error): void => {
      if (done) return;
      done = true;
      conn.destroy();
      reject(e);
    };
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > MAX_REPLY) fail(new CliError(`the daemon on ${socket} sent an answer that is not JSON`));
        return;
      }
      let res: { result?: CaptureStarted; error?: { code?: unknown; message?: unknown } };
      try {
        res = JSON.parse(buf.subarray(0, nl).toString('utf8')) as typeof res;
      } catch {
        fail(new CliError(`the daemon on ${socket} sent an answer that is not JSON`));
        return;
      }
      if (res.error !== undefined) {
        fail(rpcError(res.error));
        return;
      }
      if (res.result === undefined || !Array.isArray(res.result.points)) {
        fail(new CliError(`the daemon on ${socket} sent no capture for capture.start`));
        return;
      }
      done = true;
      conn.pause();
      conn.off('data', onData);
      conn.off('error', onError);
      conn.off('close', onClose);
      resolve({ reply: res.result, conn, rest: buf.subarray(nl + 1) });
    };
    const onError = (e: NodeJS.ErrnoException): void => fail(done ? e : reachError(socket, e));
    const onClose = (): void => fail(new CliError(`the daemon on ${socket} closed the connection without answering`));
    conn.once('connect', () => conn.write(JSON.stringify({ jsonrpc: '2.0', id: requestId(), method: 'capture.start', params }) + '\n'));
    conn.on('data', onData);
    conn.on('error', onError);
    conn.on('close', onClose);
  });
}
