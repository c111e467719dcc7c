/**
 * Port forwards: a host listener (in the daemon's namespace) whose connections are opened into
 * a VM through the userland TCP endpoint, from the gateway address.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { UserError, NotFoundError, ConflictError } from '../errors.js';
import { asObject, checkName } from '../state/validate.js';
import { parseHostPort } from '../config.js';
import type { ForwardInfo, ForwardSpec } from '../control/api.js';

interface Entry {
  spec: ForwardSpec;
  server: net.Server | null;
  connections: number;
  failures: number;
}

export function checkForwardSpec(p: unknown): ForwardSpec {
  const o = asObject(p, 'params');
  const vm = checkName(o.vm, 'VM');
  if (typeof o.host !== 'string') throw new UserError('missing host: --host ADDR:PORT');
  // The state file (like forward.add's answer) keeps the address and the port apart.
  const text = typeof o.port === 'number' ? (o.host.includes(':') ? `[${o.host}]:${o.port}` : `${o.host}:${o.port}`) : o.host;
  const hp = parseHostPort(text, 0);
  if (hp === null || hp.port === 0) throw new UserError(`invalid --host ${JSON.stringify(o.host)}: expected ADDR:PORT such as 127.0.0.1:8080`);
  const gp = o.guestPort;
  if (typeof gp !== 'number' || !Number.isInteger(gp) || gp < 1 || gp > 65535) throw new UserError(`invalid --guest ${JSON.stringify(gp)}: a port from 1 to 65535`);
  return { vm, host: hp.host, port: hp.port, guestPort: gp };
}

function key(host: string, port: number): string {
  return `${host}|${port}`;
}

export class Forwards {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly log: Logger,
    /** Opens the host connection into the VM; throws when it cannot. */
    private readonly connect: (vm: string, guestPort: number, sock: Duplex) => void,
  ) {}

  async add(spec: ForwardSpec, restoring = false): Promise<ForwardInfo> {
    const k = key(spec.host, spec.port);
    if (this.entries.has(k)) throw new ConflictError(`${spec.host}:${spec.port} is already forwarded (to ${this.entries.get(k)!.spec.vm})`);
    const e: Entry = { spec, server: null, connections: 0, failures: 0 };
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (sock) => {
      e.connections++;
      try {
        this.connect(spec.vm, spec.guestPort, sock);
      } catch (err) {
        e.failures++;
        this.log.warn({ forward: spec, err: (err as Error).message }, 'forwarded connection refused');
        sock.destroy();
      }
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: spec.host, port: spec.port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      if (!restoring) {
        const code = (err as NodeJS.ErrnoException).code;
        const msg = `cannot listen on ${spec.host}:${spec.port}: ${code ?? (err as Error).message}`;
        // Another listener holds the address: a conflict with the current state, not bad input.
        throw code === 'EADDRINUSE' ? new ConflictError(msg) : new UserError(msg);
      }
      this.log.error({ forward: spec, err: (err as Error).message }, 'cannot re-listen for a forward');
    }
    server.on('error', (err) => this.log.error({ forward: spec, err: err.message }, 'forward listener failed'));
    e.server = server.listening ? server : null;
    this.entries.set(k, e);
    this.log.info({ forward: spec }, 'forward added');
    return this.info(e);
  }

  async remove(p: unknown): Promise<ForwardSpec> {
    const o = asObject(p, 'params');
    const hp = typeof o.host === 'string' ? parseHostPort(o.host, 0) : null;
    if (hp === null || hp.port === 0) throw new UserError('invalid --host: expected ADDR:PORT');
    const e = this.entries.get(key(hp.host, hp.port));
    if (e === undefined) throw new NotFoundError(`no forward on ${hp.host}:${hp.port}`);
    if (o.vm !== undefined && o.vm !== e.spec.vm) throw new NotFoundError(`${hp.host}:${hp.port} forwards to ${e.spec.vm}, not ${String(o.vm)}`);
    this.entries.delete(key(hp.host, hp.port));
    await this.closeServer(e);
    return e.spec;
  }

  private async closeServer(e: Entry): Promise<void> {
    const s = e.server;
    e.server = null;
    if (s !== null) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private info(e: Entry): ForwardInfo {
    return { ...e.spec, listening: e.server !== null, connections: e.connections, failures: e.failures };
  }

  list(): ForwardInfo[] {
    return [...this.entries.values()].map((e) => this.info(e));
  }

  specs(): ForwardSpec[] {
    return [...this.entries.values()].map((e) => e.spec);
  }

  async close(): Promise<void> {
    for (const e of this.entries.values()) await this.closeServer(e);
  }
}
