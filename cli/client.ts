/** Talks JSON-RPC to the daemon's control socket: one request, one answer line. */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export class CliError extends Error {}

let nextId = 1;

/** The next JSON-RPC request id of this process. */
export function requestId(): number {
  return nextId++;
}

/** Why the control socket could not be reached, in one line. */
export function reachError(socket: string, e: NodeJS.ErrnoException): CliError {
  // A socket in a directory that does not exist is a wrong --socket, not a stopped daemon.
  if (e.code === 'ENOENT' && !fs.existsSync(path.dirname(socket))) {
    return new CliError(`no daemon socket at ${socket}: the directory ${path.dirname(socket)} does not exist (is --socket/MVNET_SOCKET right?)`);
  }
  if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
    return new CliError(`the mvnet daemon is not running (no daemon listening on ${socket}); start it with 'mvnet daemon' or set --socket/MVNET_SOCKET`);
  }
  if (e.code === 'EACCES') return new CliError(`permission denied on ${socket}: run as root or as a member of the socket's group`);
  return new CliError(`cannot reach the daemon on ${socket}: ${e.message}`);
}

export async function call<T>(socket: string, method: string, params: unknown = {}): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const c = net.createConnection({ path: socket });
    let buf = '';
    let done = false;
    const finish = (f: () => void): void => {
      if (done) return;
      done = true;
      c.destroy();
      f();
    };
    c.setEncoding('utf8');
    c.once('connect', () => c.write(JSON.stringify({ jsonrpc: '2.0', id: requestId(), method, params }) + '\n'));
    c.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let res: { result?: unknown; error?: { message: string } };
      try {
        res = JSON.parse(buf.slice(0, nl)) as typeof res;
      } catch {
        finish(() => reject(new CliError(`the daemon on ${socket} sent an answer that is not JSON`)));
        return;
      }
      if (res.error !== undefined) finish(() => reject(new CliError(res.error!.message)));
      else finish(() => resolve(res.result as T));
    });
    c.on('error', (e: NodeJS.ErrnoException) => finish(() => reject(reachError(socket, e))));
    c.on('close', () => finish(() => reject(new CliError(`the daemon on ${socket} closed the connection without answering`))));
  });
}
